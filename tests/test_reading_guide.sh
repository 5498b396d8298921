#!/bin/sh
# test_reading_guide.sh - the manual's READING GUIDE (section 7) is true of the header: every
# function it names is defined where it says (tests/reading_guide.sh). Then the checker is shown
# to fail on broken copies of the header: a function renamed, a function moved to another part,
# a function moved to another section, and a row that names a function without saying where.
# build-independent: it uses no program of $BUILD, so `make test` runs it in its first pass only.
. "$(dirname "$0")/check.sh"
out=${BUILD:-build}/reading_guide
rm -rf "$out"; mkdir -p "$out"

tests/reading_guide.sh collabllm.h > "$out/real.txt" 2>&1; rc=$?
sed 's/^/       /' "$out/real.txt"
check_rc "every function in the guide is defined in the part (and section) it names" $rc

# The first row placed in Part I, its first function, and where the implementation defines it.
row=$(awk '/^   7\. READING GUIDE/ { on = 1 } on && /cllm_/ && / I\.[0-9]+$/ { print; exit }' collabllm.h)
name=$(echo "$row" | grep -o 'cllm_[A-Za-z0-9_]*' | head -1)
place=$(echo "$row" | awk '{ print $NF }')
impl=$(grep -n '^#ifdef COLLABLLM_IMPLEMENTATION' collabllm.h | head -1 | cut -d: -f1)
def=$(awk -v from="$impl" -v name="$name" 'NR > from && $0 ~ "^[A-Za-z_][A-Za-z0-9_ \t*]*[ \t*]" name "[ \t]*\\(" && $0 !~ /;[ \t]*$/ { print NR; exit }' collabllm.h)
[ -n "$name" ] && [ -n "$def" ]; check_rc "the broken copies move $name ($place, defined at line $def)" $?

expect_failure() {   # label, copy, text the checker must print
    tests/reading_guide.sh "$2" > "$2.txt" 2>&1; rc=$?
    if [ $rc = 1 ] && grep -qF "$3" "$2.txt"; then check_rc "$1" 0
    else check_rc "$1" 1; sed 's/^/       /' "$2.txt" | head -5; fi
}
if [ -n "$def" ]; then
    awk -v from="$impl" -v name="$name" 'NR > from { gsub(name "\\(", name "_renamed(") } { print }' \
        collabllm.h > "$out/renamed.h"
    expect_failure "a renamed function is reported" "$out/renamed.h" "$name is not defined"

    part=${place%%.*}
    other=$( [ "$part" = I ] && echo II || echo I )
    banner_before_def() {   # rule, title: the header with that banner just before the definition
        awk -v at="$def" -v rule="$1" -v title="$2" 'NR == at { print rule; print title; print rule } { print }' collabllm.h
    }
    banner_before_def "/* ######################################## */" "/* PART $other. ELSEWHERE */" > "$out/moved_part.h"
    expect_failure "a function moved to another part is reported" "$out/moved_part.h" \
        "$name is defined at line $((def + 3)), in Part $other"
    banner_before_def "/* ---------------------------------------- */" "/* $part.99 Somewhere else */" > "$out/moved_section.h"
    expect_failure "a function moved to another section is reported" "$out/moved_section.h" "section $part.99, not in $place"
fi

awk '/^   7\. READING GUIDE/ { on = 1 } on && /^\*\/$/ && !done { print "         a row without its place              cllm_forward"; done = 1 } { print }' \
    collabllm.h > "$out/no_place.h"
expect_failure "a row that names a function without a place is refused" "$out/no_place.h" "ends without a place"

check_summary test_reading_guide
