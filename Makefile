# collabllm.h - build, test and demo.
#   make          build the command-line tool, the chat example and every test program into build/
#   make test     build and run the test suite (installs missing Debian packages first)
#   make asan     the test suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz     run every libFuzzer target in tests/fuzz for FUZZ_SECONDS each (needs clang)
#   make golden   regenerate the PyTorch / NLTK reference files in tests/data (needs python3-torch, python3-nltk)
#   make crosscheck  tokenizer + chat templates vs Hugging Face tokenizers and jinja (npm registry;
#                 packages cached in ~/.cache/collabllm-npm); FIXTURES=1 also rewrites the
#                 committed expectations in tests/data/tokenizer_expected
#   make unicode-tables  regenerate the Unicode tables in collabllm.h from Debian's unicode-data
#   make lora-memory  peak memory of one LoRA step on the Qwen2.5-0.5B shape at T=512 (random
#                 weights; minutes of CPU)
#   make clean    remove build/
# Tests are discovered: every tests/test_*.c becomes build/test_* and tests/test_*.sh is run too.

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
WARN    = -std=c99 -Wall -Wextra -Wpedantic -Werror
CFLAGS  ?=
CFLAGS  += $(WARN) $(OPT) -g $(EXTRA)
LDLIBS  = -lcjson -lcurl -lstb -lm
DEPS    = pkg-config libcjson-dev libcurl4-openssl-dev libstb-dev

TEST_BINS = $(patsubst tests/%.c,$(BUILD)/%,$(wildcard tests/test_*.c))
TOOLS     = $(BUILD)/collabllm $(BUILD)/chat

.PHONY: all test asan fuzz deps golden clean crosscheck unicode-tables lora-memory
all: deps $(TOOLS) $(TEST_BINS)

# Checks (and as root installs) the Debian packages the library links against.
deps:
	@tests/ensure-deps.sh $(DEPS)

$(BUILD):
	@mkdir -p $(BUILD)

$(BUILD)/collabllm: examples/collabllm.c collabllm.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(BUILD)/chat: examples/chat.c collabllm.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c collabllm.h tests/check.h $(wildcard examples/*.h) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# The test programs run from the repository root (they read tests/data/...).
test: all
	@tests/run.sh $(BUILD)

# Sanitizers trade speed for catching memory and UB errors; -O1 keeps them usable.
asan:
	$(MAKE) BUILD=build/asan OPT=-O1 EXTRA="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

# Coverage-guided fuzzing of every parser of outside input, bounded in time.
FUZZ_SECONDS ?= 60
fuzz: deps
	@tests/ensure-deps.sh clang libclang-rt-14-dev
	tests/fuzz/run.sh $(FUZZ_SECONDS)

golden:
	/usr/bin/python3 tests/gen_golden.py
	/usr/bin/python3 tests/gen_objectives.py
	/usr/bin/python3 tests/gen_train.py

crosscheck: all
	@tests/crosscheck.sh $(BUILD) $(if $(FIXTURES),--write-fixtures)

unicode-tables:
	@tests/ensure-deps.sh unicode-data
	/usr/bin/python3 tests/gen_unicode_tables.py collabllm.h

lora-memory: deps | $(BUILD)
	$(CC) $(CFLAGS) -o $(BUILD)/lora_memory examples/lora_memory.c $(LDLIBS)
	$(BUILD)/lora_memory 512 1
	$(BUILD)/lora_memory 512 2

clean:
	rm -rf build
