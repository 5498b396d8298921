#!/bin/sh
# run.sh BUILD_DIR [PREFIX] - run every test program (BUILD_DIR/test_*) and every tests/test_*.sh
# from the repository root, print each one's output and a summary, exit non-zero on any failure.
# PREFIX (e.g. "valgrind -q --error-exitcode=9") is put in front of each compiled test.
build=$1; prefix=$2
pass=0; fail=0; failed=""
for t in "$build"/test_*; do
    [ -x "$t" ] || continue
    echo "== $t"
    if BUILD="$build" $prefix "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed="$failed $t"; fi
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    echo "== $t"
    if BUILD="$build" sh "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed="$failed $t"; fi
done
echo "== $pass test programs passed, $fail failed$failed"
[ "$fail" = 0 ]
