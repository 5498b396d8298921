# collabllm.h - build, test and demo.
#   make          build the command-line tool, the chat example and every test program into build/
#   make test     build and run the test suite (installs missing Debian packages first), then
#                 again with the fast paths on (OpenMP, CLLM_SIMD, -march=native), except the
#                 tests marked no-fast-path: (they run no model kernel)
#   make asan     the test suite under AddressSanitizer + UndefinedBehaviorSanitizer (scalar)
#   make valgrind a subset of the tests (VALGRIND_TESTS) under valgrind memcheck, leaks included
#   make demo     the main job: CollabLLM's result on the bundled task, offline (SEED=n picks another seed)
#   make bench    speed and memory of the model and kernels (examples/bench.c) -> build/bench.json
#   make fuzz     run every libFuzzer target in tests/fuzz for FUZZ_SECONDS each (needs clang)
#   make golden   regenerate the PyTorch / NLTK reference files in tests/data (needs python3-torch, python3-nltk)
#   make crosscheck  tokenizer + chat templates vs Hugging Face tokenizers and jinja, tiktoken
#                 encodings vs npm tiktoken (npm registry; packages cached in ~/.cache/collabllm-npm);
#                 FIXTURES=1 also rewrites the committed expectations in tests/data/tokenizer_expected
#                 and tests/data/tiktoken
#   make neon     the NEON fast paths: tests/test_fastpath.c cross-compiled for AArch64 and run under qemu-user
#                 (installs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user as root)
#   make unicode-tables  regenerate the Unicode tables in collabllm.h from Debian's unicode-data
#   make lora-memory  peak memory of one LoRA step on the Qwen2.5-0.5B shape at T=512 (random
#                 weights; minutes of CPU)
#   make clean    remove build/
# Tests are discovered: every tests/test_*.c becomes build/test_* and tests/test_*.sh is run too.
#
# The header is compiled once per configuration. The implementation of collabllm.h is built into
# one object for each set of flags (build/lib/{test,tools,fast,demo,bench}.o) and every program
# that does not #define COLLABLLM_IMPLEMENTATION itself links it. A program that needs private cllm__
# functions, COLLABLLM_DOUBLE or COLLABLLM_STATIC keeps its define and compiles the header alone;
# tests/defines_impl.sh finds those, so a test moves between the two by adding or removing its
# define.

CC      ?= cc
# Programs build in parallel, one job per core; the tests run one after another. `make -j1 ...`
# overrides.
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 1)
BUILD   ?= build
OPT     ?= -O2
# The scalar test programs build at -O0: the header compiles in about 1.4 s instead of 7.6 s, and
# the programs that compile it themselves are most of the build. -O2 is still tested: the tools,
# the demo and the fast suite build at -O2 with -Werror, and the sanitizer builds at -O1.
TEST_OPT ?= -O0
WARN    = -std=c99 -Wall -Wextra -Wpedantic -Werror
CFLAGS  ?=
CFLAGS  += $(WARN) $(OPT) -g $(EXTRA)
LDLIBS  = -lcjson -lcurl -lstb -lm
DEPS    = pkg-config libcjson-dev libcurl4-openssl-dev libstb-dev

TEST_BINS = $(patsubst tests/%.c,$(BUILD)/%,$(wildcard tests/test_*.c))
TOOLS     = $(BUILD)/collabllm $(BUILD)/chat $(BUILD)/cllm_demo

# The implementation objects. The feature macro is the one the tools define before including the
# header (the tests that include the mock server define _POSIX_C_SOURCE, which shows the same
# clock); it only decides which clock times retries and durations.
SELF_IMPL := $(shell tests/defines_impl.sh tests/test_*.c examples/*.c)
LINK_TESTS = $(filter-out $(patsubst tests/%.c,%,$(SELF_IMPL)),$(patsubst tests/%.c,%,$(wildcard tests/test_*.c)))
IMPL_CC    = -DCOLLABLLM_IMPLEMENTATION -D_XOPEN_SOURCE=700 -c -x c collabllm.h
# $(call impl,SOURCE,OBJECT): OBJECT, unless SOURCE compiles the implementation itself
impl       = $(if $(filter $(1),$(SELF_IMPL)),,$(2))
# the scalar tools' object; when the tests build at the tools' level (asan, valgrind) they share it
TOOLS_OBJ  = $(if $(filter $(OPT),$(TEST_OPT)),$(BUILD)/lib/test.o,$(BUILD)/lib/tools.o)

# The fast paths (see COMPILE-TIME OPTIONS in collabllm.h): OpenMP and the SIMD microkernels.
# -march=native suits CI, which runs on the same kind of machine; a flag the compiler rejects
# is left out. FAST=0 skips the second run of the suite.
cc_accepts = $(shell echo 'int main(void){return 0;}' | $(CC) $(1) -x c - -o /dev/null 2>/dev/null && echo $(1))
FAST_FLAGS := $(call cc_accepts,-march=native) $(call cc_accepts,-fopenmp) -DCLLM_SIMD
FAST      ?= 1
# A test marked "no-fast-path:" runs no code the fast paths change (the client, the parsers, the
# objectives on given numbers...): the second pass neither builds nor runs it (tests/run.sh).
NO_FAST_TESTS := $(shell grep -l '^/\* no-fast-path:' tests/test_*.c)
FAST_TESTS = $(filter-out $(NO_FAST_TESTS),$(wildcard tests/test_*.c))
FAST_BINS = $(patsubst tests/%.c,$(BUILD)/fast/%,$(FAST_TESTS)) $(BUILD)/fast/collabllm $(BUILD)/fast/chat \
            $(BUILD)/fast/bench $(BUILD)/fast/cllm_demo
# Where the fast flags select AVX-512, the fast suite also runs test_fastpath built without it (AVX2): both
# widths must give the scalar fmaf() chains' bits, hence the same bits.
FAST_AVX512 := $(shell echo | $(CC) $(FAST_FLAGS) -dM -E -x c - 2>/dev/null | grep -c __AVX512F__)
ifneq ($(FAST_AVX512),0)
FAST_BINS += $(BUILD)/fast/test_fastpath_avx2
endif

.PHONY: all test asan valgrind fuzz deps golden clean crosscheck neon unicode-tables bench lora-memory demo
all: deps $(TOOLS) $(TEST_BINS)

# Checks (and as root installs) the Debian packages the library links against.
deps:
	@tests/ensure-deps.sh $(DEPS)

# The packages are checked before anything compiles (deps is phony; an order-only prerequisite).
$(BUILD): deps
	@mkdir -p $(BUILD)

# The implementation objects, one rule: build/lib/NAME.o is compiled with LIB_CFLAGS_NAME.
FAST_CFLAGS  = $(WARN) -O2 -g $(FAST_FLAGS) $(EXTRA)
DEMO_CFLAGS  = $(WARN) -O2 -g $(DEMO_FLAGS) $(EXTRA)
BENCH_CFLAGS = $(WARN) -O3 -g $(FAST_FLAGS)
LIB_CFLAGS_test  = $(CFLAGS) $(TEST_OPT)
LIB_CFLAGS_tools = $(CFLAGS)
LIB_CFLAGS_fast  = $(FAST_CFLAGS)
LIB_CFLAGS_demo  = $(DEMO_CFLAGS)
LIB_CFLAGS_bench = $(BENCH_CFLAGS)
$(BUILD)/lib: | $(BUILD)
	@mkdir -p $@
$(BUILD)/lib/%.o: collabllm.h | $(BUILD)/lib
	$(CC) $(LIB_CFLAGS_$*) -o $@ $(IMPL_CC)

# A program links the object among its prerequisites, if it has one ($(filter %.o,$^)).
$(BUILD)/collabllm: examples/collabllm.c collabllm.h $(wildcard examples/*.h) \
                    $(call impl,examples/collabllm.c,$(TOOLS_OBJ)) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

$(BUILD)/chat: examples/chat.c collabllm.h $(wildcard examples/*.h) $(call impl,examples/chat.c,$(TOOLS_OBJ)) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c collabllm.h tests/check.h $(wildcard examples/*.h) | $(BUILD)
	$(CC) $(CFLAGS) $(TEST_OPT) -o $@ $< $(filter %.o,$^) $(LDLIBS)
$(patsubst %,$(BUILD)/%,$(LINK_TESTS)): $(BUILD)/lib/test.o

# Tests that talk to the loopback mock server include it (and the hostile one its faults).
MOCK_TESTS := $(patsubst tests/%.c,%,$(shell grep -l 'include "mock_openai.c"' tests/test_*.c))
$(patsubst %,$(BUILD)/%,$(MOCK_TESTS)) $(patsubst %,$(BUILD)/fast/%,$(MOCK_TESTS)): tests/mock_openai.c tests/hostile_server.c

# test_optim_f32 is test_optim.c built in float32.
$(BUILD)/test_optim_f32 $(BUILD)/fast/test_optim_f32: tests/test_optim.c

# The fuzz regression test compiles the libFuzzer harnesses in (tests/fuzz/*.c).
$(BUILD)/test_fuzz_regressions $(BUILD)/fast/test_fuzz_regressions: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

$(BUILD)/fast: | $(BUILD)
	@mkdir -p $(BUILD)/fast

$(BUILD)/fast/%: examples/%.c collabllm.h $(wildcard examples/*.h) | $(BUILD)/fast
	$(CC) $(FAST_CFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)
$(BUILD)/fast/collabllm: $(call impl,examples/collabllm.c,$(BUILD)/lib/fast.o)
$(BUILD)/fast/chat: $(call impl,examples/chat.c,$(BUILD)/lib/fast.o)
$(BUILD)/fast/bench: $(call impl,examples/bench.c,$(BUILD)/lib/fast.o)
$(BUILD)/fast/bench: LDLIBS += $(BENCH_BLAS)

$(BUILD)/fast/test_%: tests/test_%.c collabllm.h tests/check.h $(wildcard examples/*.h) | $(BUILD)/fast
	$(CC) $(FAST_CFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)
$(patsubst %,$(BUILD)/fast/%,$(LINK_TESTS)): $(BUILD)/lib/fast.o
$(BUILD)/fast/test_fastpath_avx2: tests/test_fastpath.c collabllm.h tests/check.h | $(BUILD)/fast
	$(CC) $(FAST_CFLAGS) -mno-avx512f -o $@ $< $(LDLIBS)

# The test programs run from the repository root (they read tests/data/...).
test: all $(if $(filter 1,$(FAST)),$(FAST_BINS))
	@tests/run.sh $(BUILD)
ifeq ($(FAST),1)
	@echo "== the same suite with the fast paths on: $(FAST_FLAGS)"
	@ONCE_DONE=1 tests/run.sh $(BUILD)/fast
endif

# Sanitizers trade speed for catching memory and UB errors; -O1 keeps them usable.
asan:
	$(MAKE) BUILD=build/asan OPT=-O1 TEST_OPT=-O1 FAST=0 EXTRA="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

# A subset of the tests (the fast ones; the parsers, model, checkpoints, data and training code)
# under valgrind's memcheck, in a -O1 build without sanitizers: uninitialised reads and leaks
# that ASan does not see. Each program must run without a valgrind error or a leak.
VALGRIND_TESTS ?= tokenizer model client_json data_fmt checkpoint datagen mr fuzz_regressions objectives optim rpo lora train generation
VALGRIND_BINS = $(patsubst %,build/valgrind/test_%,$(VALGRIND_TESTS))
valgrind: deps
	@tests/ensure-deps.sh valgrind
	@$(MAKE) --no-print-directory BUILD=build/valgrind OPT=-O1 TEST_OPT=-O1 FAST=0 $(VALGRIND_BINS)
	@fail=""; for t in $(VALGRIND_BINS); do \
	    start=$$(date +%s); \
	    if BUILD=build/valgrind valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible $$t >$$t.log 2>&1; \
	    then echo "ok   $$t ($$(tail -1 $$t.log | cut -c1-70)) $$(( $$(date +%s) - start ))s"; \
	    else echo "FAIL $$t (log: $$t.log)"; tail -30 $$t.log; fail="$$fail $$t"; fi; \
	done; [ -z "$$fail" ] || { echo "valgrind failed:$$fail"; exit 1; }

# Figures are medians of repeated runs; run it on an otherwise idle machine. The bench programs (and nothing
# else: never the library) link OpenBLAS where it is installed (Debian libopenblas-dev), to time its sgemm as the
# matmul's yardstick in the same run; without it they say so and leave those figures null.
BENCH_BLAS := $(shell printf '\043include <cblas.h>\nint main(void){openblas_set_num_threads(1);return 0;}\n' | \
                $(CC) -x c - -lopenblas -o /dev/null 2>/dev/null && echo -DBENCH_OPENBLAS -lopenblas)
$(BUILD)/bench: examples/bench.c collabllm.h examples/flags.h examples/run_files.h \
                $(call impl,examples/bench.c,$(BUILD)/lib/bench.o) | $(BUILD)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS) $(BENCH_BLAS)

bench: deps $(BUILD)/bench
	$(BUILD)/bench --json $(BUILD)/bench.json --overwrite

# Coverage-guided fuzzing of every parser of outside input, bounded in time.
FUZZ_SECONDS ?= 60
fuzz: deps
	@tests/ensure-deps.sh clang libclang-rt-14-dev
	tests/fuzz/run.sh $(FUZZ_SECONDS)

# The demo's model is tiny (0.2M parameters): threads cost more than they give, so it is built
# with the SIMD kernels but without OpenMP. Output in build/demo/.
SEED ?= 1
DEMO_FLAGS := $(call cc_accepts,-march=native) -DCLLM_SIMD
DEMO_SOURCES = examples/demo.c examples/demo_task.h examples/demo_bpe.h examples/flags.h examples/run_files.h collabllm.h
$(BUILD)/cllm_demo: $(DEMO_SOURCES) $(call impl,examples/demo.c,$(BUILD)/lib/demo.o) | $(BUILD)
	$(CC) $(DEMO_CFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

$(BUILD)/fast/cllm_demo: $(DEMO_SOURCES) $(call impl,examples/demo.c,$(BUILD)/lib/fast.o) | $(BUILD)/fast
	$(CC) $(FAST_CFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

demo: deps $(BUILD)/cllm_demo
	$(BUILD)/cllm_demo --seed $(SEED) --out $(BUILD)/demo --overwrite

# Seeds 1-5, each a whole demo in build/demo-seeds/seed-N, then every table and the mean ± std
# over the seeds (build/demo-seeds/seeds.txt, seeds.json): five times `make demo`.
.PHONY: demo-seeds
demo-seeds: deps $(BUILD)/cllm_demo
	$(BUILD)/cllm_demo --seed 1 --seeds 5 --out $(BUILD)/demo-seeds --overwrite

golden:
	/usr/bin/python3 tests/gen_golden.py
	/usr/bin/python3 tests/gen_objectives.py
	/usr/bin/python3 tests/gen_train.py
	/usr/bin/python3 tests/gen_trl_logps.py
	/usr/bin/python3 tests/gen_online.py
	/usr/bin/python3 tests/gen_pairs.py
	/usr/bin/python3 tests/gen_optim.py

# The NEON microkernels run on an emulated AArch64 (tests/neon.sh): no ARM machine is needed.
neon: | $(BUILD)
	@tests/ensure-deps.sh gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
	@tests/neon.sh $(BUILD)

crosscheck: all
	@tests/crosscheck.sh $(BUILD) $(if $(FIXTURES),--write-fixtures)
	@NODE_PATH=$${COLLABLLM_NPM_CACHE:-$$HOME/.cache/collabllm-npm}/node_modules \
	    node tests/gen_trl_tokens.js $(if $(FIXTURES),--write-fixtures)

unicode-tables:
	@tests/ensure-deps.sh unicode-data
	/usr/bin/python3 tests/gen_unicode_tables.py collabllm.h

lora-memory: deps | $(BUILD)
	$(CC) $(CFLAGS) -o $(BUILD)/lora_memory examples/lora_memory.c $(LDLIBS)
	$(BUILD)/lora_memory 512 1
	$(BUILD)/lora_memory 512 2

clean:
	rm -rf build
