#!/bin/sh
# test_demo_seeds.sh - seeds never mix in the demo's output, on its --quick size
# (every stage on a few tasks, a few seconds):
#   - two seeds in a row into one --out: the second is refused without --overwrite, and with it
#     starts clean (nothing of the first run is left, its sidecar names the new seed);
#   - a run is deterministic: the first seed again gives the same table and tasks byte for byte;
#   - --seeds 3 runs seeds 1, 2, 3 (consecutive), each in its own directory, with the same tables as
#     the single runs, and writes every table and the mean ± std (seeds.txt, seeds.json).
. "$(dirname "$0")/check.sh"
demo="$build/cllm_demo"
run() {     # run LOG ARGS...: the demo, its output to LOG.out / LOG.err, 1 if it failed
    log=$1; shift
    "$demo" --quick "$@" > "$tmp/$log.out" 2> "$tmp/$log.err" || {
        echo "  (exit $?; $tmp/$log.err:)"
        tail -5 "$tmp/$log.err"
        return 1
    }
}

check "seed 1 runs" run s1 --seed 1 --out "$tmp/demo"
cp "$tmp/demo/table.txt" "$tmp/table1.txt"
cp "$tmp/demo/tasks_train.jsonl" "$tmp/tasks1.jsonl"
echo "left by hand" > "$tmp/demo/stale.txt"
check "seed 2 into the same --out is refused without --overwrite" sh -c \
    "! '$demo' --quick --seed 2 --out '$tmp/demo' > /dev/null 2> '$tmp/refused.err' && \
     grep -q 'pass --resume to continue it, --overwrite to replace it\|--overwrite' '$tmp/refused.err'"
check "the refusal changed nothing" cmp -s "$tmp/demo/table.txt" "$tmp/table1.txt"
check "seed 2 with --overwrite runs" run s2 --seed 2 --out "$tmp/demo" --overwrite
check "seed 2 started clean: nothing of seed 1's run is left" test ! -e "$tmp/demo/stale.txt"
check "seed 2's sidecar and summary name seed 2" sh -c \
    "grep -q '\"--seed\":[[:space:]]*2,' '$tmp/demo/meta.json' && \
     grep -q '\"seed\":[[:space:]]*2,' '$tmp/demo/summary.json'"
check "seed 2 made its own tasks" sh -c "! cmp -s '$tmp/demo/tasks_train.jsonl' '$tmp/tasks1.jsonl'"
cp "$tmp/demo/table.txt" "$tmp/table2.txt"
check "seed 1 again, after seed 2, runs" run s1b --seed 1 --out "$tmp/demo" --overwrite
check "seed 1 again gives the same table (deterministic, nothing of seed 2 reused)" \
    cmp "$tmp/demo/table.txt" "$tmp/table1.txt"
check "and the same tasks" cmp "$tmp/demo/tasks_train.jsonl" "$tmp/tasks1.jsonl"

check "--seeds 3 runs seeds 1, 2 and 3" run sweep --seed 1 --seeds 3 --out "$tmp/sweep"
check "each seed in its own directory, with its single run's table" sh -c \
    "cmp -s '$tmp/sweep/seed-1/table.txt' '$tmp/table1.txt' && \
     cmp -s '$tmp/sweep/seed-2/table.txt' '$tmp/table2.txt'"
check "seeds.txt has the three tables and the mean ± std" sh -c \
    "grep -q '^seed 1 ' '$tmp/sweep/seeds.txt' && grep -q '^seed 2 ' '$tmp/sweep/seeds.txt' && \
     grep -q '^seed 3 ' '$tmp/sweep/seeds.txt' && grep -q 'mean ± std over seeds 1-3' '$tmp/sweep/seeds.txt' && \
     grep -q '±' '$tmp/sweep.out'"
check "seeds.json lists the seeds, the mean and the std" sh -c \
    "grep -q '\"seeds\"' '$tmp/sweep/seeds.json' && grep -q '\"mean\"' '$tmp/sweep/seeds.json' && \
     grep -q '\"std\"' '$tmp/sweep/seeds.json'"
check "every seed's summary.json and curves.svg are there" sh -c \
    "test -s '$tmp/sweep/seed-1/summary.json' && test -s '$tmp/sweep/seed-2/summary.json' && \
     test -s '$tmp/sweep/seed-2/curves.svg' && test -d '$tmp/sweep/seed-3' && test ! -e '$tmp/sweep/seed-4'"
check_summary test_demo_seeds
