#!/bin/sh
# run.sh SECONDS [TARGET...] - build each libFuzzer target in tests/fuzz/ with clang
# (-fsanitize=fuzzer,address,undefined; LeakSanitizer on) and run it for SECONDS on a copy of its
# seed corpus tests/fuzz/corpus/NAME. Targets build and run FUZZ_JOBS at a time (default: the
# number of cores; each run keeps one core for its whole SECONDS). A crash, leak, UB report,
# failed invariant or input slower than 10 s fails the run; the input is saved as
# build/fuzz/crash-NAME-* (or leak-/timeout-): turn each into a regression test in tests/.
# Executions per target are summed up in build/fuzz/summary.txt.
set -e
if [ "$1" = "--one" ]; then                      # internal: build or run one target
    what=$2; t=$3; secs=$4; name=${t#fuzz_}
    if [ "$what" = build ]; then
        if [ build/fuzz/$t -nt tests/fuzz/$t.c ] && [ build/fuzz/$t -nt collabllm.h ] && [ build/fuzz/$t -nt tests/fuzz/fuzz_util.h ] && [ build/fuzz/$t -nt examples/ref_json.h ]; then exit 0; fi
        clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I. \
            -o build/fuzz/$t tests/fuzz/$t.c -lcjson -lcurl -lstb -lm
        exit
    fi
    rm -rf build/fuzz/corpus_$name && mkdir -p build/fuzz/corpus_$name
    cp tests/fuzz/corpus/$name/* build/fuzz/corpus_$name/ 2>/dev/null || true
    if build/fuzz/$t -max_total_time=$secs -print_final_stats=1 -timeout=10 -max_len=65536 \
            -artifact_prefix=build/fuzz/crash-$name- build/fuzz/corpus_$name >build/fuzz/$t.log 2>&1; then
        status=ok
    else
        status=FAILED
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' build/fuzz/$t.log)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' build/fuzz/$t.log)
    echo "$t $status executions=${execs:-?} peak_rss_mb=${rss:-?} seconds=$secs" | tee -a build/fuzz/summary.txt
    if [ $status != ok ]; then tail -40 build/fuzz/$t.log; exit 1; fi
    exit 0
fi

secs=${1:-60}; shift || true
targets=${*:-$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
mkdir -p build/fuzz
: > build/fuzz/summary.txt
echo "== building $(echo $targets | wc -w) fuzz targets ($jobs at a time)"
echo $targets | tr ' ' '\n' | xargs -P "$jobs" -I{} sh "$0" --one build {} || exit 1
echo "== fuzzing each target for ${secs}s ($jobs at a time)"
status=0
echo $targets | tr ' ' '\n' | xargs -P "$jobs" -I{} sh "$0" --one run {} "$secs" || status=1
echo "== summary"
sort build/fuzz/summary.txt
exit $status
