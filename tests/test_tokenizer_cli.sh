#!/bin/sh
# test_tokenizer_cli.sh - the tokenize / detokenize / render commands end to end on the small
# SmolLM2-style tokenizer, including the documented example data_fmt/chat_example.json.
. "$(dirname "$0")/check.sh"
tok=tests/data/tokenizers/smollm2

out=$(printf '%s\n' '{"text":"Hello world 123"}' '{"text":"<|im_start|>user\nhé<|im_end|>"}' | $tool tokenize --tokenizer $tok --offsets)
printf "%s\n" "$out" | head -1 | grep -q '"ids":\[' ; check_rc "tokenize prints ids" $?
printf "%s\n" "$out" | head -1 | grep -q '"offsets":\[0,' ; check_rc "tokenize --offsets prints byte offsets" $?
back=$(printf '%s\n' '{"text":"Hello world 123"}' '{"text":"<|im_start|>user\nhé<|im_end|>"}' | $tool tokenize --tokenizer $tok | $tool detokenize --tokenizer $tok)
[ "$(printf "%s\n" "$back" | head -1)" = '{"text":"Hello world 123"}' ]; check_rc "detokenize(tokenize(x)) == x" $?
[ "$(printf "%s\n" "$back" | tail -1)" = '{"text":"<|im_start|>user\nhé<|im_end|>"}' ]; check_rc "special tokens and UTF-8 survive the round trip" $?
skip=$(echo '{"ids":[1,2]}' | $tool detokenize --tokenizer $tok --skip-special-tokens)
[ "$skip" = '{"text":""}' ]; check_rc "--skip-special-tokens drops special tokens" $?

r=$($tool render --tokenizer $tok --messages data_fmt/chat_example.json)
check_rc "render data_fmt/chat_example.json exits 0" $?
printf "%s\n" "$r" | grep -q '"text":"<|im_start|>system\\nYou are a careful assistant' ; check_rc "render: text starts with the system turn" $?
printf "%s\n" "$r" | grep -q '"mask":\[0,' ; check_rc "render: mask starts with untrainable tokens" $?
printf "%s\n" "$r" | grep -q ',1,' ; check_rc "render: some tokens are trainable" $?
g=$($tool render --tokenizer $tok --messages data_fmt/chat_example.json --add-generation-prompt)
[ "$g" = "$r" ]; check_rc "the file's add_generation_prompt overrides the flag" $?
$tool render --tokenizer tests/data/tokenizers/gpt2 --messages data_fmt/chat_example.json 2>/dev/null
[ $? != 0 ]; check_rc "render without a chat template fails" $?
check_summary test_tokenizer_cli
