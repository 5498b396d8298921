#!/bin/sh
# run.sh BUILD_DIR [PREFIX] - run every test program (BUILD_DIR/test_*) and every tests/test_*.sh
# from the repository root, print each one's output and the seconds it took, then a summary; exit
# non-zero on any failure. PREFIX (e.g. "valgrind -q --error-exitcode=9") is put in front of each
# compiled test. With ONCE_DONE=1 (the Makefile's second pass, with the fast paths on) two kinds of
# tests are skipped, having run in the first pass: the shell tests marked "# build-independent"
# (they compile what they test themselves), and the tests marked "no-fast-path:" (C or shell; they
# run no code the fast paths change, so a second run would repeat the first).
build=$1; prefix=$2
pass=0; fail=0; failed=""; start_all=$(date +%s)
result() {   # name, exit status, start time
    if [ "$2" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); failed="$failed $1"; fi
    echo "-- $1: $( [ "$2" = 0 ] && echo ok || echo FAILED) in $(( $(date +%s) - $3 )) s"
}
once() {     # once FILE: does the second pass skip this test?
    [ "$ONCE_DONE" = 1 ] && grep -qE '^(# build-independent|/\* no-fast-path:|# no-fast-path:)' "$1"
}
for t in "$build"/test_*; do
    [ -x "$t" ] || continue
    if once "tests/${t##*/}.c"; then echo "== $t: no-fast-path, ran in the first pass"; continue; fi
    echo "== $t"
    start=$(date +%s)
    BUILD="$build" $prefix "$t"
    result "$t" $? "$start"
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    if once "$t"; then echo "== $t: ran in the first pass"; continue; fi
    echo "== $t"
    start=$(date +%s)
    BUILD="$build" sh "$t"
    result "$t" $? "$start"
done
echo "== $pass test programs passed, $fail failed$failed ($(( $(date +%s) - start_all )) s)"
[ "$fail" = 0 ]
