#!/bin/sh
# run.sh SECONDS [TARGET...] - build each libFuzzer target in tests/fuzz/ with clang
# (-fsanitize=fuzzer,address,undefined) and run it for SECONDS on a copy of its seed corpus.
# Crashes are written to build/fuzz/crash-*; turn each into a regression test.
set -e
secs=${1:-60}; shift || true
targets=${*:-$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')}
mkdir -p build/fuzz
status=0
for t in $targets; do
    name=${t#fuzz_}
    clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I. \
        -o build/fuzz/$t tests/fuzz/$t.c -lcjson -lcurl -lstb -lm
    rm -rf build/fuzz/corpus_$name && mkdir -p build/fuzz/corpus_$name
    cp tests/fuzz/corpus/$name/* build/fuzz/corpus_$name/ 2>/dev/null || true
    echo "== fuzzing $t for ${secs}s"
    if ! build/fuzz/$t -max_total_time=$secs -print_final_stats=1 -artifact_prefix=build/fuzz/crash-$name- \
            -max_len=65536 build/fuzz/corpus_$name 2>build/fuzz/$t.log; then
        status=1; echo "   CRASH: see build/fuzz/$t.log"; tail -30 build/fuzz/$t.log
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" build/fuzz/$t.log | sed 's/^/   /'
done
exit $status
