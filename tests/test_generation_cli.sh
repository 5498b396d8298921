#!/bin/sh
# test_generation_cli.sh - `collabllm generate-ids` end to end: a seed reproduces its output
# across two processes, sample s does not depend on --n, greedy samples agree, one line per
# sample in the documented format, bf16 sampling weights run and change the log-probs, and bad input fails with a
# message and a non-zero status.
. "$(dirname "$0")/check.sh"
model=tests/data/golden/qwen3_qknorm
gen() { "$tool" generate-ids --model $model --prompt-ids 3,1,4,1,5 --max-new-tokens 12 --ignore-eos "$@"; }

gen --n 3 --temperature 0.9 --top-k 30 --top-p 0.9 --seed 5 > "$tmp/a" 2>"$tmp/err"
gen --n 3 --temperature 0.9 --top-k 30 --top-p 0.9 --seed 5 > "$tmp/b" 2>>"$tmp/err"
gen --n 3 --temperature 0.9 --top-k 30 --top-p 0.9 --seed 6 > "$tmp/c" 2>>"$tmp/err"
gen --n 1 --temperature 0.9 --top-k 30 --top-p 0.9 --seed 5 > "$tmp/one" 2>>"$tmp/err"
gen --n 2 --temperature 0 > "$tmp/greedy" 2>>"$tmp/err"
check "runs without errors" test ! -s "$tmp/err"
check "same seed in two processes: identical output" cmp -s "$tmp/a" "$tmp/b"
check "another seed: different output" sh -c "! cmp -s '$tmp/a' '$tmp/c'"
check "one line per sample" test "$(wc -l < "$tmp/a")" -eq 3
check "lines carry sample, ids, logprobs, finish in order" \
    sh -c "grep -c '^{\"sample\":[0-2],\"ids\":\[[0-9,]*\],\"logprobs\":\[[-0-9.e,]*\],\"finish\":\"length\"}$' '$tmp/a' | grep -qx 3"
check "--n 1 gives the first sample of --n 3" sh -c "head -1 '$tmp/a' | cmp -s - '$tmp/one'"
check "greedy: both samples have the same ids" \
    sh -c "sed 's/\"sample\":[0-9]*,//' '$tmp/greedy' | uniq | wc -l | grep -qx 1"
"$tool" generate-ids --model $model --prompt-ids 3,x > /dev/null 2>"$tmp/err1"; rc=$?
check "a malformed --prompt-ids exits 2 with a message" sh -c "test $rc -eq 2 && grep -q 'prompt-ids' '$tmp/err1'"
"$tool" generate-ids --model $model --prompt-ids 3,100000 > /dev/null 2>"$tmp/err2"; rc=$?
check "an id outside the vocabulary exits 1 naming it" sh -c "test $rc -eq 1 && grep -q 'outside the vocabulary' '$tmp/err2'"
"$tool" generate-ids --model $model --prompt-ids 3 --top-p 1.5 > /dev/null 2>"$tmp/err3"; rc=$?
check "--top-p 1.5 exits 2" test $rc -eq 2
# --sample-weights bf16: the same format, other log-probs (the weights are rounded), and a word it does not know is refused
gen --n 2 --temperature 0 --sample-weights bf16 > "$tmp/bf16" 2>"$tmp/err4"
check "--sample-weights bf16 runs, one line per sample" sh -c "test ! -s '$tmp/err4' && test \$(wc -l < '$tmp/bf16') -eq 2"
check "--sample-weights bf16: log-probs differ from fp32's" sh -c "! cmp -s '$tmp/greedy' '$tmp/bf16'"
gen --sample-weights fp16 > /dev/null 2>"$tmp/err5"; rc=$?
check "--sample-weights fp16 exits 2 naming the choices" sh -c "test $rc -eq 2 && grep -q 'fp32 or bf16' '$tmp/err5'"
check_summary test_generation_cli
