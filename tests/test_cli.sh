#!/bin/sh
# test_cli.sh - the command lines of build/collabllm (all 17 commands), cllm_demo, bench and chat,
# table-driven. Each case runs one command line and asserts its exit status, a fragment of what
# it prints (stdout for status 0, stderr otherwise) and that every input file is byte-identical
# afterwards (cksum of the whole input tree, against the one taken before the first case).
#   - explicit cases: --help and -h of every command, the examples of issue 14 (flags ignored or
#     misread, inputs destroyed), same-file inputs and outputs, resuming a foreign file or run,
#     a directory for a file, empty files, text that is not UTF-8, errors at file:line + field;
#   - generated cases: for every command, an unknown flag, a flag without its value (at the end
#     and before another flag), a repeated flag; and for every numeric flag that its --help lists,
#     a value below its range, above it (if bounded), a non-number and trailing junk. The range
#     each error names must be the one the usage shows.
# no-fast-path: flags, errors and files of the command lines, no model kernel (make test runs it in its first
# pass only)
build=${BUILD:-build}
tool="$build/collabllm"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
in="$tmp/in"; out="$tmp/out"
mkdir -p "$in" "$out"
model=tests/data/train/tiny_qwen2
tokdir=tests/data/tokenizers/qwen2_style
n=0; fails=0
commands="dump generate-ids ref simulate tokenize detokenize render mr generate-data build-pairs export-records eval generate sft dpo
          online-dpo ppo grpo"

# ---- the inputs: copies of the documented examples, and fixtures that must survive every case --
cp data_fmt/task.example.jsonl "$in/tasks.jsonl"
cp data_fmt/records.example.jsonl "$in/records.jsonl"
cp data_fmt/train_sft.example.jsonl "$in/sft.jsonl"
cp data_fmt/train_dpo.example.jsonl "$in/pairs.jsonl"
cp data_fmt/chat_example.json "$in/convs.json"
cp data_fmt/mr.example.jsonl "$in/mr.jsonl"
cp tests/data/golden/qwen3_qknorm/batch.jsonl "$in/rows.jsonl"
ln "$in/records.jsonl" "$in/records_link.jsonl"               # the same inode under another name
: > "$in/empty.jsonl"
mkdir -p "$in/adir" "$in/foreign_dir"
echo "my notes" > "$in/foreign_dir/notes.txt"
printf '[{"role": "user", "content": "caf\351"}]\n' > "$in/latin1.json"                # not UTF-8
printf '{"single_turn_prompt": "caf\351"}\n' > "$in/tasks_latin1.jsonl"
printf '[{"role": "user", "content": "hi"}]\n[{"role": "robot", "content": "hi"}]\n' > "$in/bad_role.jsonl"
printf '{"single_turn_prompt": "order a coffee", "candidates": ["what size ?"]}\n' > "$in/mr_no_history.jsonl"
printf '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "caf\351"}]}\n' \
    > "$in/sft_latin1.jsonl"
# a finished sft run, and a generate-data output whose sidecar has other settings
"$tool" sft --model $model --tokenizer $tokdir --data "$in/sft.jsonl" --out "$in/sft_run" --max-steps 1 \
    --batch-size 2 --quiet 2>"$tmp/setup.err" || { echo "  FAIL setup: sft run"; cat "$tmp/setup.err"; exit 1; }
cp "$in/records.jsonl" "$in/gen.jsonl"
cat > "$in/gen.jsonl.meta.json" <<EOF
{"command": "collabllm generate-data", "inputs": {}, "settings": {"--candidates": 3}, "fingerprint": "0", "logs": {}}
EOF
# a chat model (weights + tokenizer), outside the checked inputs
chat_model="$tmp/chat_model"
mkdir -p "$chat_model"
cp $model/config.json $model/model.safetensors $tokdir/tokenizer.json $tokdir/tokenizer_config.json "$chat_model"

# The inputs are checked after every case: no file under $in was written since the stamp, the
# names under $in (three levels deep) are the same (nothing created or removed), and the cksum of
# every file equals the one taken now. (The first two use shell builtins only; the checksum runs
# after each explicit case and after each command's generated cases: they are many.)
files=$(find "$in" -type f | LC_ALL=C sort)
sums() { cksum $files; }
names() { echo "$in"/* "$in"/*/* "$in"/*/*/*; }
untouched() {
    [ "$(names)" = "$baseline_names" ] || return 1
    for f in $files; do [ "$f" -nt "$tmp/stamp" ] && return 1; done
    [ "$checksum" = 0 ] || [ "$(sums)" = "$baseline" ]
}
baseline=$(sums)
baseline_names=$(names)
touch "$tmp/stamp"
checksum=1

# ---- the case runner ----------------------------------------------------------------------------
# has FILE FRAGMENT: whether a line of FILE contains FRAGMENT (shell builtins only: cases are many).
has() {
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in *"$2"*) return 0 ;; esac
    done < "$1"
    return 1
}
# t EXIT FRAGMENT COMMAND ARGS...: runs the command; exit status, fragment, inputs unchanged.
t() {
    want=$1; frag=$2; shift 2
    n=$((n+1))
    "$@" > "$tmp/stdout" 2> "$tmp/stderr" < /dev/null; rc=$?
    where="$tmp/stderr"; [ "$want" = 0 ] && where="$tmp/stdout"
    problem=""
    [ "$rc" = "$want" ] || problem="exit $rc, expected $want"
    has "$where" "$frag" || problem="$problem; no \"$frag\" in its output"
    [ "$want" = 0 ] && [ -s "$tmp/stderr" ] && problem="$problem; it also wrote to stderr"
    if ! untouched; then
        problem="$problem; AN INPUT CHANGED"
        baseline=$(sums); baseline_names=$(names); touch "$tmp/stamp"
    fi
    if [ -n "$problem" ]; then
        fails=$((fails+1))
        echo "  FAIL $*"
        echo "       $problem"
        sed 's/^/       | /' "$where" | head -5
    fi
}
# absent PATH LABEL: a refused or failed run left nothing behind
absent() {
    n=$((n+1))
    if [ -e "$1" ]; then fails=$((fails+1)); echo "  FAIL $2: $1 was left behind"; fi
}

# ---- help, and the commands ------------------------------------------------------------------------
t 0 "commands:" "$tool" --help
t 0 "commands:" "$tool" -h
t 0 "commands:" "$tool" help
t 2 "commands:" "$tool"
t 2 "unknown command 'nope'" "$tool" nope
t 2 "generate-data" "$tool" nope
for c in $commands; do
    t 0 "usage: collabllm $c" "$tool" $c --help
    t 0 "usage: collabllm $c" "$tool" $c -h
    t 0 "Exit status" "$tool" $c --help --no-such-flag          # help wins over anything else
    t 2 "unknown flag --no-such-flag" "$tool" $c --no-such-flag
done
t 0 "data_fmt/ref.md" "$tool" ref --help
t 2 "missing NAME" "$tool" ref
t 2 "unexpected argument 'extra'" "$tool" ref dpo extra
t 1 "unknown name 'nope'" "$tool" ref nope

# Every command's usage names the data_fmt page of each file it reads or writes.
for c in $commands; do
    "$tool" $c --help > "$tmp/help.txt"
    n=$((n+1))
    if ! grep -q "data_fmt/[a-z_-]*\.md" "$tmp/help.txt"; then
        fails=$((fails+1)); echo "  FAIL $c --help names no data_fmt page"
    fi
done
for c in mr:mr.md generate-data:records.md generate-data:meta.md simulate:conversation.md build-pairs:sft.md \
         build-pairs:dpo.md build-pairs:published.md export-records:published.md eval:eval.md dump:dump.md \
         sft:train.md dpo:dpo.md ppo:train_online.md ppo:train_prompts.md \
         render:chat.md tokenize:chat.md generate:generate.md generate-ids:generate-ids.md; do
    t 0 "data_fmt/${c#*:}" "$tool" "${c%%:*}" --help
done

# ---- generated: value-less, repeated, and every numeric flag out of range or malformed -------------
# The usage's flag lines, continuation lines joined: "  --name VALUE   help; an integer in [1, 64] (...)".
flag_lines() {
    awk '/^  --/ { if (line) print line; line = $0; next }
         /^                                / { if (line) { sub(/^ +/, " "); line = line $0 }; next }
         { if (line) print line; line = "" }
         END { if (line) print line }' "$1"
}
for c in $commands; do
    "$tool" $c --help > "$tmp/help.txt"
    flag_lines "$tmp/help.txt" > "$tmp/flags.txt"
    checksum=0
    # the first flag that takes a value: missing at the end, missing before another flag; the first
    # text or path flag given twice
    first=$(awk '/^  --[a-zA-Z0-9-]+ [^ ]/ { print $1; exit }' "$tmp/flags.txt")
    if [ -n "$first" ]; then
        t 2 "$first needs a value" "$tool" $c $first
        t 2 "followed by the flag --quiet" "$tool" $c $first --quiet
    fi
    text=$(awk '/^  --[a-zA-Z0-9-]+ [^ ]/ && !/; (an integer|a number)/ && !/[a-z0-9_-]\|[a-z]/ { print $1; exit }' \
           "$tmp/flags.txt")
    [ -n "$text" ] && t 2 "$text is given twice" "$tool" $c $text "$in/adir" $text "$in/adir"
    switch=$(awk '/^  --[a-zA-Z0-9-]+   / { print $1; exit }' "$tmp/flags.txt")
    [ -n "$switch" ] && t 2 "$switch is given twice" "$tool" $c $switch $switch
    # numbers: "an integer in [lo, hi]", "a number in (lo, hi]", "a number >= lo", "a number > lo"
    sed -n 's/^  \(--[a-zA-Z0-9-]*\) .*; \(an integer\|a number\) \(in [[(][^]]*\]\|>=* [-0-9.e+]*\).*/\1|\2|\3/p' \
        "$tmp/flags.txt" > "$tmp/numeric.txt"
    while IFS='|' read -r name kind range; do
        accepts="$kind $range"
        lo=$(echo "$range" | sed 's/^in [[(]\([^,]*\),.*/\1/; s/^>=* //')
        hi=$(echo "$range" | sed -n 's/^in [[(][^,]*, \([^]]*\)\]/\1/p')
        case "$range" in "in ("*|"> "*) below=$lo ;; *) below=$(awk "BEGIN { print $lo - 1 }") ;; esac
        t 2 "$name: '$below' is not $accepts" "$tool" $c $name "$below"
        t 2 "$name: 'abc' is not $accepts" "$tool" $c $name abc
        t 2 "$name: '7x' is not $accepts" "$tool" $c $name 7x
        if [ -n "$hi" ] && [ "$c" = grpo ]; then     # above the range: once per flag of the largest command
            above=$(awk "BEGIN { printf \"%.17g\", $hi * 2 + 1 }")
            t 2 "$name: '$above' is not $accepts" "$tool" $c $name "$above"
        fi
    done < "$tmp/numeric.txt"
    checksum=1
    n=$((n+1))
    [ "$(sums)" = "$baseline" ] || { fails=$((fails+1)); echo "  FAIL $c: an input changed (checksum)"; }
done
n_numeric=$(for c in $commands; do "$tool" $c --help | grep -c '; \(an integer\|a number\)'; done |
            awk '{ s += $1 } END { print s }')

# ---- the examples of issue 14 -------------------------------------------------------------------------
t 2 "unknown flag --grad (did you mean --grads?)" \
    "$tool" dump --model $model --input "$in/rows.jsonl" --out "$out/d" --grad
t 2 "--out needs a value (OUT.safetensors) but is followed by the flag --input" \
    "$tool" dump --model $model --out --input "$in/rows.jsonl"
absent "$out/--input" "dump --out --input"
t 2 "unknown flag --learning-rate" "$tool" sft --model $model --data "$in/sft.jsonl" --out "$out/s" --learning-rate 5
t 2 "--lr is given twice ('1e-3' and '5e-4')" "$tool" sft --lr 1e-3 --model $model --lr 5e-4
t 2 "--samples: 'abc' is not an integer in [1, 1000]" "$tool" generate-data --samples abc
t 2 "--samples: '1e12' is not an integer in [1, 1000]" "$tool" generate-data --samples 1e12
t 2 "--candidates: '-1' is not an integer in [1, 64]" "$tool" generate-data --candidates -1
t 2 "--candidates: '0' is not an integer in [1, 64]" "$tool" generate-data --candidates 0
t 2 "--max-turns: '0' is not an integer in [1, 10000]" "$tool" eval --max-turns 0
t 2 "--batch-size: '0' is not an integer in [1, 1000000]" "$tool" sft --batch-size 0
t 2 "--max-steps: '0' is not an integer in [1, 1000000000000]" "$tool" dpo --max-steps 0
t 2 "--max-messages: '-3' is not an integer in [1, 100000]" "$tool" simulate --max-messages -3
t 2 "--limit: '-3' is not an integer in [1, 1000000000]" "$tool" eval --limit -3
t 2 "--limit: '0' is not an integer in [1, 1000000000]" "$tool" eval --limit 0
t 2 "--lambda: '-3' is not a number in [0, 1000000]" "$tool" mr --lambda -3
t 2 "--metrics: the weight of token_amount, 'abc', is not a number" \
    "$tool" mr --input "$in/mr.jsonl" --user-model u --assistant-model a --metrics token_amount:abc
t 2 "--metrics: unknown metric 'speed'" \
    "$tool" mr --input "$in/mr.jsonl" --user-model u --assistant-model a --metrics speed:1
t 2 "needs an LLM judge: give --judge-model" "$tool" mr --input "$in/mr.jsonl" --user-model u --assistant-model a
t 2 "--min-gap: 'abc' is not a number >= 0" \
    "$tool" build-pairs --records "$in/records.jsonl" --sft "$out/s.jsonl" --min-gap abc
t 2 "--n: '1.5' is not an integer in [1, 65536]" "$tool" generate-ids --model $model --prompt-ids 1,2 --n 1.5
t 2 "--prompt-ids: '1,x' is not a comma-separated list" "$tool" generate-ids --model $model --prompt-ids 1,x
t 2 "--shard: '4/4' is not I/N" "$tool" generate-data --tasks "$in/tasks.jsonl" --out "$out/r.jsonl" --user-model u \
    --assistant-model a --metrics token_amount --shard 4/4
t 2 "--loss: 'foo' is not sigmoid, robust, hinge or ipo" "$tool" dpo --loss foo
t 2 "--preset: 'maths' is not math, code or document" "$tool" mr --preset maths
t 2 "--kl-estimator: 'k2' is not k1 or k3" "$tool" ppo --kl-estimator k2
t 2 "--temperature: 'abc' is not a number in [0, 1000000]" "$build/chat" $model --temperature abc
t 0 "usage: chat MODEL_DIR" "$build/chat" --help
t 2 "missing MODEL_DIR" "$build/chat"
t 2 "give one of --user-model and --user-model-dir" "$tool" simulate --tasks "$in/tasks.jsonl" --out "$out/c.jsonl"
t 2 "--user-base-url applies to an API user simulator" "$tool" simulate --tasks "$in/tasks.jsonl" --out "$out/c.jsonl" \
    --user-model-dir $model --assistant-model-dir $model --user-base-url http://x
t 2 "--concurrency applies to API models" "$tool" simulate --tasks "$in/tasks.jsonl" --out "$out/c.jsonl" \
    --user-model-dir $model --assistant-model-dir $model --concurrency 4
t 2 "--numeric apply to the exact_match metric" "$tool" mr --input "$in/mr.jsonl" --user-model u --assistant-model a \
    --metrics token_amount --numeric
# --collabllm v1|v2 takes CollabLLM's settings; both count tokens with cl100k_base, so they need that file
t 2 "--collabllm: 'v3' is not v1 or v2" "$tool" mr --input "$in/mr.jsonl" --user-model u --assistant-model a \
    --collabllm v3
t 2 "give --preset math, code or document" "$tool" mr --input "$in/mr.jsonl" --user-model u \
    --assistant-model a --judge-model j --collabllm v1
t 2 "give --token-counter PATH/cl100k_base.tiktoken" "$tool" mr --input "$in/mr.jsonl" --user-model u \
    --assistant-model a --judge-model j --collabllm v1 --preset math
t 2 "give --token-counter PATH/cl100k_base.tiktoken" "$tool" generate-data --tasks "$in/tasks.jsonl" \
    --out "$out/r.jsonl" --user-model u --assistant-model a --judge-model j --collabllm v2 --preset code \
    --token-counter words
# bleu and pass_rate are never scored on an unextracted artifact unless asked (CollabLLM always extracts)
t 2 "give --judge-model, or --no-extract to score the last assistant message as it is" "$tool" mr \
    --input "$in/mr.jsonl" --user-model u --assistant-model a --metrics bleu:1
t 2 "give --judge-model, or --no-extract" "$tool" eval --tasks "$in/tasks.jsonl" --details "$out/d.jsonl" \
    --user-model u --assistant-model a --metrics pass_rate:1
t 2 "--no-extract applies to the bleu and pass_rate metrics" "$tool" mr --input "$in/mr.jsonl" --user-model u \
    --assistant-model a --metrics token_amount --no-extract
t 2 "--pass-rule apply to the pass_rate metric" "$tool" mr --input "$in/mr.jsonl" --user-model u \
    --assistant-model a --metrics token_amount --pass-rule fraction
t 2 "--pass-rule: 'some' is not all or fraction" "$tool" mr --input "$in/mr.jsonl" --user-model u \
    --assistant-model a --metrics pass_rate --no-extract --pass-rule some
t 2 "--ref and --precompute-ref exclude each other" "$tool" dpo --model $model --data "$in/pairs.jsonl" --out "$out/p" \
    --ref $model --precompute-ref
t 2 "--label-smoothing applies to the sigmoid and robust losses" "$tool" dpo --model $model --data "$in/pairs.jsonl" \
    --out "$out/p" --loss ipo --label-smoothing 0.1
t 2 "--kl-horizon applies to the adaptive KL controller" "$tool" ppo --model $model --out "$out/p" \
    --prompts "$in/records.jsonl" --user-model u --metrics token_amount --kl-horizon 10
t 2 "--logprob-tol applies to ppo and grpo" "$tool" online-dpo --model $model --out "$out/p" \
    --prompts "$in/records.jsonl" --user-model u --metrics token_amount --logprob-tol 0.1
t 2 "give one of --prompts and --tasks" "$tool" grpo --model $model --out "$out/p" --user-model u
absent "$out/p" "refused online and dpo runs"

# ---- outputs never replace inputs ---------------------------------------------------------------------
t 2 "--sft $in/records.jsonl is the same file as the input --records" \
    "$tool" build-pairs --records "$in/records.jsonl" --sft "$in/records.jsonl"
t 2 "is the same file as the input --records" \
    "$tool" build-pairs --records "$in/records.jsonl" --dpo "$in/records_link.jsonl" --overwrite
t 2 "--sft and --dpo name the same file" \
    "$tool" build-pairs --records "$in/records.jsonl" --sft "$out/x.jsonl" --dpo "$out/x.jsonl"
t 2 "--sft $in/sft.jsonl exists: choose another --sft, or pass --overwrite" \
    "$tool" build-pairs --records "$in/records.jsonl" --sft "$in/sft.jsonl"
t 2 "give --sft and/or --dpo" "$tool" build-pairs --records "$in/records.jsonl"
t 2 "give --min-gap or --gap-preset, not both" \
    "$tool" build-pairs --records "$in/records.jsonl" --sft "$out/g.jsonl" --min-gap 0.1 --gap-preset v1
t 2 "give --system or --system-prompt, not both" \
    "$tool" build-pairs --records "$in/records.jsonl" --sft "$out/g.jsonl" --system hi --system-prompt collabllm
t 2 "--out $in/records.jsonl is the same file as the input --records" \
    "$tool" export-records --records "$in/records.jsonl" --out "$in/records.jsonl"
t 2 "--out $in/tasks.jsonl is the same file as the input --tasks" "$tool" generate-data --tasks "$in/tasks.jsonl" \
    --out "$in/tasks.jsonl" --user-model u --assistant-model a --metrics token_amount
t 2 "--out $in/tasks.jsonl is the same file as the input --tasks" "$tool" simulate --tasks "$in/tasks.jsonl" \
    --out "$in/tasks.jsonl" --user-model u --assistant-model a --overwrite
t 2 "--details $in/tasks.jsonl is the same file as the input --tasks" "$tool" eval --tasks "$in/tasks.jsonl" \
    --details "$in/tasks.jsonl" --user-model u --assistant-model a --metrics token_amount --overwrite
t 2 "--out $in/rows.jsonl is the same file as the input --input" "$tool" dump --model $model --input "$in/rows.jsonl" \
    --out "$in/rows.jsonl" --overwrite
t 2 "--data $in/sft_run/metrics.jsonl is inside --out $in/sft_run" "$tool" sft --model $model --tokenizer $tokdir \
    --data "$in/sft_run/metrics.jsonl" --out "$in/sft_run" --overwrite
t 2 "--model $in/sft_run/final is inside --out $in/sft_run" "$tool" dpo --model "$in/sft_run/final" \
    --data "$in/pairs.jsonl" --out "$in/sft_run" --resume
t 2 "the directory it would go in does not exist" "$tool" dump --model $model --input "$in/rows.jsonl" --out "$out/no/x"
t 2 "is a directory; expected a file to write" "$tool" dump --model $model --input "$in/rows.jsonl" --out "$in/adir"
t 2 "is a file; expected a directory" "$tool" sft --model $model --data "$in/sft.jsonl" --out "$in/sft.jsonl"

# ---- resuming only what this command wrote ------------------------------------------------------------
common_sft="--model $model --tokenizer $tokdir --data $in/sft.jsonl --max-steps 1 --batch-size 2 --quiet"
t 2 "--out $in/sft_run already holds a run of \`collabllm sft\`: pass --resume" \
    "$tool" sft $common_sft --out "$in/sft_run"
t 2 "holds the output of \`collabllm sft\`, not of \`collabllm dpo\`" "$tool" dpo --model $model --tokenizer $tokdir \
    --data "$in/pairs.jsonl" --out "$in/sft_run" --resume
t 2 "it was started with --max-steps 1, and this run has --max-steps 2" "$tool" sft --model $model --tokenizer $tokdir \
    --data "$in/sft.jsonl" --max-steps 2 --batch-size 2 --quiet --out "$in/sft_run" --resume
t 2 "the contents of --data $in/pairs.jsonl differ" "$tool" sft --model $model --tokenizer $tokdir \
    --data "$in/pairs.jsonl" --max-steps 1 --batch-size 2 --quiet --out "$in/sft_run" --resume
t 2 "was not written by \`collabllm sft\`" "$tool" sft $common_sft --out "$in/foreign_dir" --resume
t 2 "holds no collabllm run" "$tool" sft $common_sft --out "$in/foreign_dir" --overwrite
t 2 "--out $in/foreign_dir exists: choose another --out" "$tool" sft $common_sft --out "$in/foreign_dir"
t 2 "--resume and --overwrite exclude each other" "$tool" sft $common_sft --out "$in/sft_run" --resume --overwrite
common_gen="--tasks $in/tasks.jsonl --user-model u --assistant-model a --metrics token_amount
            --base-url http://127.0.0.1:9/v1"
t 2 "--out $in/sft.jsonl exists: choose another --out, or pass --overwrite" \
    "$tool" generate-data $common_gen --out "$in/sft.jsonl"
t 2 "was not written by \`collabllm generate-data\` (it has no $in/sft.jsonl.meta.json)" \
    "$tool" generate-data $common_gen --out "$in/sft.jsonl" --resume
t 2 "already holds a run of \`collabllm generate-data\`" "$tool" generate-data $common_gen --out "$in/gen.jsonl"
t 2 "it was started with --candidates 3, and this run has --candidates 2" "$tool" generate-data $common_gen \
    --out "$in/gen.jsonl" --resume
t 0 "--resume" "$tool" sft --help

# a run that fails leaves no empty directory or sidecar behind
t 1 "$in/empty.jsonl: no rows" \
    "$tool" sft --model $model --tokenizer $tokdir --data "$in/empty.jsonl" --out "$out/failed_run"
absent "$out/failed_run" "a failed sft run"
t 1 "Couldn't connect" "$tool" generate-data $common_gen --out "$out/failed.jsonl" --retries 0 --max-turns 1
absent "$out/failed.jsonl.meta.json" "a failed generate-data run"
t 1 "no tasks" "$tool" ppo --model "$chat_model" --out "$out/failed_ppo" --tasks "$in/empty.jsonl" --user-model u \
    --metrics token_amount --quiet
absent "$out/failed_ppo" "a failed ppo run"

# ---- messages: directories, empty files, UTF-8, file:line and the field ----------------------------------
t 2 "--records: $in/adir is a directory; expected a JSONL file" \
    "$tool" build-pairs --records "$in/adir" --sft "$out/a.jsonl"
t 2 "--tasks: $in/adir is a directory; expected a JSONL file" "$tool" simulate --tasks "$in/adir" --out "$out/a.jsonl" \
    --user-model u --assistant-model a
t 2 "--data: $in/adir is a directory; expected a JSONL file" "$tool" sft --model $model --data "$in/adir" --out "$out/a"
t 2 "--messages: $in/adir is a directory; expected a JSON file" "$tool" render --tokenizer $tokdir --messages "$in/adir"
t 2 "--input: $in/adir is a directory; expected a JSONL file" \
    "$tool" dump --model $model --input "$in/adir" --out "$out/a"
t 2 "--model: $in/sft.jsonl is not a directory" "$tool" generate --model "$in/sft.jsonl" --messages "$in/convs.json"
t 2 "--prompts: $in/nothing.jsonl: No such file or directory" "$tool" grpo --model $model --out "$out/a" \
    --prompts "$in/nothing.jsonl" --user-model u --metrics token_amount
t 1 "$in/empty.jsonl: no records" "$tool" build-pairs --records "$in/empty.jsonl" --sft "$out/e.jsonl"
absent "$out/e.jsonl" "build-pairs on an empty file"
t 1 "$in/empty.jsonl: no tasks" \
    "$tool" simulate --tasks "$in/empty.jsonl" --out "$out/e.jsonl" --user-model u --assistant-model a
t 1 "$in/empty.jsonl is empty; expected JSON" "$tool" render --tokenizer $tokdir --messages "$in/empty.jsonl"
t 1 "$in/empty.jsonl: no rows" "$tool" dump --model $model --input "$in/empty.jsonl" --out "$out/e.safetensors"
t 1 "$in/latin1.json:1: not valid UTF-8 at byte 34 of the line" \
    "$tool" render --tokenizer $tokdir --messages "$in/latin1.json"
t 1 "$in/tasks_latin1.jsonl:1: not valid UTF-8 at byte 28 of the line" \
    "$tool" simulate --tasks "$in/tasks_latin1.jsonl" \
    --out "$out/e.jsonl" --user-model u --assistant-model a
t 1 "$in/sft_latin1.jsonl:1: not valid UTF-8 at byte 87 of the line" "$tool" sft --model $model --tokenizer $tokdir \
    --data "$in/sft_latin1.jsonl" --out "$out/e"
t 1 "$in/bad_role.jsonl:2: messages[0]: \"role\" must be" \
    "$tool" render --tokenizer $tokdir --messages "$in/bad_role.jsonl"
t 1 "$in/mr_no_history.jsonl:1: \"history\" must be a list" \
    "$tool" mr --input "$in/mr_no_history.jsonl" --user-model u \
    --assistant-model a --metrics token_amount
printf '{"text": "caf\351"}\n' > "$tmp/latin1_text.jsonl"
t 1 "stdin line 1: not valid UTF-8 at byte 14 of the line" \
    sh -c "'$tool' tokenize --tokenizer $tokdir < '$tmp/latin1_text.jsonl'"
n=$((n+1))                                              # no message starts with a function name
if grep -n '"cllm_[a-z_0-9]*: ' collabllm.h; then fails=$((fails+1)); echo "  FAIL messages that name a function"; fi

# ---- the demo and the bench answer --help without running ---------------------------------------------
t 0 "usage: cllm_demo" "$build/cllm_demo" --help --out "$out/demo_help"
absent "$out/demo_help" "cllm_demo --help"
t 2 "--limit applies to the real mode" "$build/cllm_demo" --limit 3 --out "$out/demo_bad"
absent "$out/demo_bad" "a refused demo"
t 2 "--seed is given twice" "$build/cllm_demo" --seed 1 --seed 2 --out "$out/demo_bad"
t 2 "--out $in/foreign_dir exists" "$build/cllm_demo" --out "$in/foreign_dir"
if [ -x "$build/bench" ]; then
    t 0 "usage: bench" "$build/bench" --help
    n=$((n+1))
    if grep -q "collabllm.h bench:" "$tmp/stdout"; then
        fails=$((fails+1)); echo "  FAIL bench --help ran the benchmark"
    fi
    t 0 "usage: bench" "$build/bench" -h --matmul 0
    t 2 "--no-mr is given twice" "$build/bench" --matmul 0 --no-mr --no-mr
    t 2 "--preset: no preset 'nope'" "$build/bench" --preset nope --no-mr
    t 2 "--B: '0' is not an integer in [1, 65536]" "$build/bench" --B 0
    t 2 "--json $in/sft.jsonl exists" "$build/bench" --json "$in/sft.jsonl"
else
    echo "  skip: $build/bench is built by the fast-path build only"
fi

verdict=FAIL; [ $fails = 0 ] && verdict="all OK"
echo "test_cli: $n cases ($n_numeric numeric flags over 17 commands), $fails failed -> $verdict"
[ $fails = 0 ]
