#!/bin/sh
# test_tiktoken_cli.sh - tokenize / detokenize with a tiktoken rank file named cl100k_base.tiktoken
# (the committed small ranks, tests/data/tiktoken/small.tiktoken): the ids tiktoken gave for the
# first strings of tests/data/tiktoken/small_expected.jsonl, the round trip, and the refusals
# (data_fmt/tiktoken.md).
. "$(dirname "$0")/check.sh"
cp tests/data/tiktoken/small.tiktoken "$tmp/cl100k_base.tiktoken"
head -12 tests/data/tiktoken/small_expected.jsonl > "$tmp/rows.jsonl"

# the rows carry "text" (read) and each encoding's ids (ignored by tokenize)
sed 's/.*"cl100k_base":\(\[[^]]*\]\).*/{"ids":\1}/' "$tmp/rows.jsonl" > "$tmp/want.jsonl"
$tool tokenize --tokenizer "$tmp/cl100k_base.tiktoken" < "$tmp/rows.jsonl" > "$tmp/got.jsonl"
check_rc "tokenize --tokenizer .../cl100k_base.tiktoken exits 0" $?
cmp -s "$tmp/want.jsonl" "$tmp/got.jsonl"; check_rc "ids == tiktoken's encode_ordinary on 12 strings" $?
sed 's/,"cl100k_base".*$/}/' "$tmp/rows.jsonl" > "$tmp/texts.jsonl"
$tool detokenize --tokenizer "$tmp/cl100k_base.tiktoken" < "$tmp/got.jsonl" > "$tmp/back.jsonl"
cmp -s "$tmp/texts.jsonl" "$tmp/back.jsonl"; check_rc "detokenize(tokenize(x)) == x" $?
off=$(echo '{"text":"ab cd"}' | $tool tokenize --tokenizer "$tmp/cl100k_base.tiktoken" --offsets)
echo "$off" | grep -q '"offsets":\[0,' ; check_rc "--offsets prints byte offsets" $?
sp=$(echo '{"ids":[100257,100276]}' | $tool detokenize --tokenizer "$tmp/cl100k_base.tiktoken")
[ "$sp" = '{"text":"<|endoftext|><|endofprompt|>"}' ]; check_rc "special ids decode to their text" $?
sp=$(echo '{"ids":[100257,100276]}' | $tool detokenize --tokenizer "$tmp/cl100k_base.tiktoken" --skip-special-tokens)
[ "$sp" = '{"text":""}' ]; check_rc "--skip-special-tokens leaves them out" $?

msg=$(echo '{"ids":[100256]}' | $tool detokenize --tokenizer "$tmp/cl100k_base.tiktoken" 2>&1 >/dev/null)
[ $? = 0 ] || echo "$msg" | grep -q "id 100256 (position 0) is not a token of cl100k_base"
check_rc "an id that is no token: refused, named ($msg)" $?
echo '{"text":"x"}' | $tool tokenize --tokenizer "$tmp/cl100k_base.tiktoken" --add-special-tokens 2>/dev/null
[ $? = 2 ]; check_rc "--add-special-tokens with a .tiktoken file: refused (exit 2)" $?
cp tests/data/tiktoken/small.tiktoken "$tmp/o200k_base.tiktoken"
msg=$(echo '{"text":"x"}' | $tool tokenize --tokenizer "$tmp/o200k_base.tiktoken" 2>&1 >/dev/null)
echo "$msg" | grep -q "encoding 'o200k_base' is not supported"; check_rc "o200k_base: refused, saying so" $?
msg=$($tool mr --input data_fmt/mr.example.jsonl --user-model u --assistant-model a --metrics exact_match:1 \
    --token-counter "$tmp/o200k_base.tiktoken" 2>&1)
echo "$msg" | grep -q "encoding 'o200k_base' is not supported"
check_rc "mr --token-counter: a bad file is refused before any call" $?
check_summary test_tiktoken_cli
