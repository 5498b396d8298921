#!/bin/sh
# test_verify_cli.sh - the commands data_fmt/verify.md relies on, without Python: dpo-eval (its per-pair lines
# agree with its summary and with the pairs' own reference logps, outputs are never overwritten, bad flags are
# refused) and mr --given (R* and MR by hand, token_amount counted, a failed future left out, errors naming the
# line and the field, no simulator or judge flags).
. "$(dirname "$0")/check.sh"
field() { sed "s/.*\"$1\":\([^,}]*\).*/\1/" "$2"; }    # field NAME FILE: the value on each line
model=tests/data/train/tiny_qwen2
common="--model $model --tokenizer tests/data/tokenizers/qwen2_style"

# ---- dpo-eval ----
"$tool" dpo-eval $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/e.jsonl" --beta 0.5 > "$tmp/sum" 2>"$tmp/err"
check "dpo-eval exits 0, one line per pair (4)" test $? -eq 0 -a "$(wc -l < "$tmp/e.jsonl")" -eq 4
check "  TRL's names on every line" test "$(grep -c '"chosen_logps":.*"rejected_logps":.*"ref_chosen_logps":.*"ref_rejected_logps":.*"chosen_rewards":.*"rejected_rewards":.*"margins":.*"losses":' "$tmp/e.jsonl")" -eq 4
check "  no reference: the policy is its own, so every loss is log 2 and eval_loss too" sh -c "
    grep -c '\"losses\":0.69314718055994529' '$tmp/e.jsonl' | grep -qx 4 && grep -q '\"eval_loss\":0.69314718055994529' '$tmp/sum'"
# pairs that carry their reference logps: rewards = beta (logp - ref), eval_* = the means of the lines
awk '{ sub(/}$/, ",\"ref_chosen_logps\":-100,\"ref_rejected_logps\":-50}"); print }' data_fmt/train_dpo.example.jsonl > "$tmp/ref_pairs.jsonl"
"$tool" dpo-eval $common --data "$tmp/ref_pairs.jsonl" --out "$tmp/r.jsonl" --beta 0.5 > "$tmp/rsum" 2>>"$tmp/err"
check "dpo-eval with ref_*_logps in the pairs exits 0 and uses them" sh -c "field() { sed \"s/.*\\\"\$1\\\":\([^,}]*\).*/\1/\" \"\$2\"; }; \
    field ref_chosen_logps '$tmp/r.jsonl' | grep -cx -- -100 | grep -qx 4"
field chosen_logps "$tmp/r.jsonl" > "$tmp/pc"; field chosen_rewards "$tmp/r.jsonl" > "$tmp/cr"
field losses "$tmp/r.jsonl" > "$tmp/l"
check "  chosen_rewards = 0.5 (chosen_logps + 100) on every pair" sh -c "paste -d ' ' '$tmp/pc' '$tmp/cr' | \
    awk '{ d = 0.5 * (\$1 + 100) - \$2; if (d < -1e-9 || d > 1e-9) bad = 1 } END { exit bad || NR != 4 }'"
check "  eval_loss is the mean of the per-pair losses" sh -c "awk -v want=\"\$(sed 's/.*\"eval_loss\":\([^,]*\),.*/\1/' '$tmp/rsum')\" \
    '{ s += \$1 } END { d = s / NR - want; exit !(d > -1e-12 && d < 1e-12) }' '$tmp/l'"
"$tool" dpo-eval $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/e.jsonl" > /dev/null 2>"$tmp/e1"; rc=$?
check "an existing --out is refused (exit 2) and kept" sh -c "test $rc -eq 2 && grep -q -- '--overwrite' '$tmp/e1' && test \$(wc -l < '$tmp/e.jsonl') -eq 4"
"$tool" dpo-eval $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/x.jsonl" --ref $model --reference-free > /dev/null 2>&1
check "--ref with --reference-free exits 2" test $? -eq 2
"$tool" dpo-eval $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/x.jsonl" --loss hinge --label-smoothing 0.1 > /dev/null 2>&1
check "--label-smoothing with hinge exits 2" test $? -eq 2
check "  and wrote nothing" test ! -e "$tmp/x.jsonl"
"$tool" dpo-eval $common --data data_fmt/train_sft.example.jsonl --out "$tmp/x.jsonl" > /dev/null 2>"$tmp/e2"
check "SFT rows as pairs: exit 1 naming the file and line, nothing written" sh -c "grep -q 'train_sft.example.jsonl:1' '$tmp/e2' && test ! -e '$tmp/x.jsonl'"

# ---- mr --given ----
cat > "$tmp/g.jsonl" <<'JSON'
{"history": [{"role": "user", "content": "i want a coffee"}], "candidates": [{"completion": "what size ?", "sessions": [[{"role": "user", "content": "i want a coffee"}, {"role": "assistant", "content": "what size ?"}, {"role": "user", "content": "large please"}, {"role": "assistant", "content": "one large coffee"}], [{"role": "user", "content": "i want a coffee"}, {"role": "assistant", "content": "what size ?"}, {"role": "user", "content": "small"}], [{"role": "user", "content": "i want a coffee"}, {"role": "assistant", "content": "what size ?"}]], "rewards": {"accuracy": [1, 0, null], "interactivity": [1, 0.5, 1]}}]}
JSON
"$tool" mr --given --input "$tmp/g.jsonl" --metrics accuracy:1,interactivity:0.5 > "$tmp/m1" 2>"$tmp/err1"; rc=$?
# v1 by hand: 1 + 0.5 - 5e-4 * 8 = 1.496 and 0 + 0.25 - 5e-4 * 4 = 0.248; the third future failed (null)
check "mr --given (paper): R* per future, MR their mean, the failed future left out" sh -c "test $rc -eq 0 && \
    grep -q '\"MR\":\[1.496,0.248,null\]' '$tmp/m1' && grep -q '\"score\":0.872,' '$tmp/m1' && grep -q '\"tokens\":\[8,4,3\]' '$tmp/m1'"
"$tool" mr --given --input "$tmp/g.jsonl" --variant weighted --metrics accuracy:1,interactivity:0.5,token_amount:-0.5 > "$tmp/m2" 2>>"$tmp/err1"
check "mr --given (weighted): token_amount counted from the assistant messages (6 and 3 words / 1000)" sh -c "\
    grep -q '\"MR\":\[1.497,0.2485,null\]' '$tmp/m2' && grep -q '\"token_amount\":\[0.006,0.003,0.003\]' '$tmp/m2'"
"$tool" mr --given --input "$tmp/g.jsonl" --metrics accuracy:1,interactivity:0.5 --judge-model j > /dev/null 2>"$tmp/e3"
check "mr --given with --judge-model exits 2" test $? -eq 2
sed 's/"rewards": {"accuracy": \[1, 0, null\]/"rewards": {"accuracy": [1, "x", null]/' "$tmp/g.jsonl" > "$tmp/bad1.jsonl"
"$tool" mr --given --input "$tmp/bad1.jsonl" --metrics accuracy:1,interactivity:0.5 > /dev/null 2>"$tmp/e4"
check "a non-number metric value: an error naming line, candidate, metric and future" \
    grep -q 'bad1.jsonl:1: "candidates"\[0\]."rewards"."accuracy"\[1\]' "$tmp/e4"
sed 's/"content": "small"}\]/"content": "small"}], [{"role": "user", "content": "other"}]/' "$tmp/g.jsonl" > "$tmp/bad2.jsonl"
"$tool" mr --given --input "$tmp/bad2.jsonl" --metrics accuracy:1,interactivity:0.5 > /dev/null 2>"$tmp/e5"
check "a session that does not start with the history: exit 1 naming it" grep -q 'bad2.jsonl:1: "candidates"\[0\]."sessions"\[2\]\[0\]' "$tmp/e5"
"$tool" mr --given --input "$tmp/g.jsonl" --metrics accuracy:1,exact_match:1 > /dev/null 2>"$tmp/e6"
check "a metric with no values: exit 1 naming it" grep -q '"rewards"."exact_match"\[0\]' "$tmp/e6"
check_summary test_verify_cli
