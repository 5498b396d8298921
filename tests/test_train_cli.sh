#!/bin/sh
# test_train_cli.sh - `collabllm sft` and `collabllm dpo` end to end on the tiny chat model with
# the example files of data_fmt/train.md: outputs and their layout, --precompute-ref, a
# --stop-after run resumed with --resume logging the same losses as one uninterrupted run,
# LoRA adapters saved as PEFT files next to the merged model, and bad flags refused.
. "$(dirname "$0")/check.sh"
model=tests/data/train/tiny_qwen2
tokdir=tests/data/tokenizers/qwen2_style
losses() { sed 's/.*"loss":\([^,]*\),.*/\1/' "$1"; }
common="--model $model --tokenizer $tokdir --quiet --batch-size 2 --lr 1e-3"

"$tool" sft $common --data data_fmt/train_sft.example.jsonl --out "$tmp/sft" --epochs 2 --save-every 2 --keep-last 2 2>"$tmp/err"
check "sft exits 0" test $? -eq 0
check "sft: final model, tokenizer, metrics, latest" test -f "$tmp/sft/final/model.safetensors" -a -f "$tmp/sft/final/config.json" \
    -a -f "$tmp/sft/final/tokenizer.json" -a -f "$tmp/sft/metrics.jsonl" -a "$(cat "$tmp/sft/latest")" = "ckpt-6"
check "sft: one metrics line per step (6)" test "$(wc -l < "$tmp/sft/metrics.jsonl")" -eq 6
check "sft: keep-last 2 leaves ckpt-4 and ckpt-6" sh -c "ls '$tmp/sft' | grep ckpt | tr '\n' ' ' | grep -qx 'ckpt-4 ckpt-6 '"

"$tool" sft $common --data data_fmt/train_sft.example.jsonl --out "$tmp/sft2" --epochs 2 --stop-after 4 2>>"$tmp/err"
check "--stop-after 4 stops at ckpt-4 without a final model" test "$(cat "$tmp/sft2/latest")" = "ckpt-4" -a ! -d "$tmp/sft2/final"
"$tool" sft $common --data data_fmt/train_sft.example.jsonl --out "$tmp/sft2" --epochs 2 --resume 2>>"$tmp/err"
check "--resume finishes; every loss equals the uninterrupted run's" sh -c "losses() { sed 's/.*\"loss\":\([^,]*\),.*/\1/' \"\$1\"; }; \
    losses '$tmp/sft/metrics.jsonl' > '$tmp/a'; losses '$tmp/sft2/metrics.jsonl' > '$tmp/b'; cmp -s '$tmp/a' '$tmp/b'"
check "  and the final weights are identical" cmp -s "$tmp/sft/final/model.safetensors" "$tmp/sft2/final/model.safetensors"

"$tool" dpo $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/dpo" --precompute-ref --max-steps 3 2>>"$tmp/err"
check "dpo --precompute-ref exits 0" test $? -eq 0
check "  pairs_ref.jsonl carries ref_chosen_logps and ref_rejected_logps on all 4 pairs" \
    test "$(grep -c '"ref_chosen_logps":-[0-9.e+-]*,"ref_rejected_logps":-[0-9.e+-]*}$' "$tmp/dpo/pairs_ref.jsonl")" -eq 4
check "  TRL metrics logged" grep -q '"rewards/chosen":.*"rewards/rejected":.*"rewards/accuracies":.*"rewards/margins":.*"logps/chosen":.*"logps/rejected":' "$tmp/dpo/metrics.jsonl"
"$tool" dpo $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/trl" --precompute-ref --completion-tokens trl \
    --max-steps 1 2>>"$tmp/err"
check "dpo --completion-tokens trl exits 0" test $? -eq 0
# ChatML: TRL's tokens are the turn's plus "\n" and <|im_end|>, so every reference sum is lower
refs() { sed 's/.*"ref_chosen_logps":\([^,]*\),"ref_rejected_logps":\([^}]*\)}$/\1 \2/' "$1"; }
refs "$tmp/dpo/pairs_ref.jsonl" > "$tmp/r1"; refs "$tmp/trl/pairs_ref.jsonl" > "$tmp/r2"
check "  each pair's reference logps lower than the turn's (two more tokens scored)" sh -c "paste -d ' ' '$tmp/r1' '$tmp/r2' | \
    awk 'NF != 4 || \$3 >= \$1 || \$4 >= \$2 { bad = 1 } END { exit bad || NR != 4 }'"
"$tool" dpo $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/dpo2" --max-steps 3 2>>"$tmp/err"
check "a frozen reference copy gives the same losses as precomputed reference logps" sh -c "losses() { sed 's/.*\"loss\":\([^,]*\),.*/\1/' \"\$1\"; }; \
    losses '$tmp/dpo/metrics.jsonl' > '$tmp/c'; losses '$tmp/dpo2/metrics.jsonl' > '$tmp/d'; cmp -s '$tmp/c' '$tmp/d'"
"$tool" dpo $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/ipo" --ref $model --loss ipo --beta 0.5 --max-steps 2 2>>"$tmp/err"
check "dpo --ref DIR --loss ipo exits 0" test $? -eq 0 -a -f "$tmp/ipo/final/model.safetensors"

"$tool" dpo $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/lora" --lora-r 4 --lora-alpha 8 --lora-targets q,v,down --max-steps 2 2>>"$tmp/err"
check "dpo with LoRA (the base model is the reference) exits 0" test $? -eq 0
check "  PEFT adapter files and the merged model" test -f "$tmp/lora/adapter/adapter_config.json" -a -f "$tmp/lora/adapter/adapter_model.safetensors" \
    -a -f "$tmp/lora/final/model.safetensors" -a -f "$tmp/lora/ckpt-2/adapter_model.safetensors" -a ! -f "$tmp/lora/ckpt-2/model.safetensors"
check "  adapter_config.json names r, alpha and the targets" sh -c "grep -q '\"r\":	4' '$tmp/lora/adapter/adapter_config.json' && \
    grep -q '\"lora_alpha\":	8' '$tmp/lora/adapter/adapter_config.json' && grep -q 'down_proj' '$tmp/lora/adapter/adapter_config.json'"
check "runs wrote nothing unexpected to stderr" test ! -s "$tmp/err"
[ -s "$tmp/err" ] && cat "$tmp/err"

"$tool" dpo $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/x" --loss foo 2>"$tmp/e1"; rc=$?
check "--loss foo exits 2 naming the choices" sh -c "test $rc -eq 2 && grep -q 'sigmoid, robust, hinge or ipo' '$tmp/e1'"
"$tool" sft $common --data data_fmt/train_sft.example.jsonl --out "$tmp/x" --lora-targets q,z 2>"$tmp/e2"; rc=$?
check "--lora-targets q,z exits 2 naming the bad target" sh -c "test $rc -eq 2 && grep -q \"'z'\" '$tmp/e2'"
"$tool" sft $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/x" 2>"$tmp/e3"; rc=$?
check "pairs given to sft exit 1 naming the line" sh -c "test $rc -eq 1 && grep -q 'train_dpo.example.jsonl:1:' '$tmp/e3'"
"$tool" dpo $common --data data_fmt/train_dpo.example.jsonl --out "$tmp/x" --ref $model --precompute-ref 2>"$tmp/e4"; rc=$?
check "--ref with --precompute-ref exits 2" test $rc -eq 2
check_summary test_train_cli
