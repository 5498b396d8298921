#!/bin/sh
# test_header_map.sh - the header keeps its layout: the manual, the declarations, the
# implementation's preliminaries, Parts I to IV in order, then the license (tests/header_map.sh
# prints the map), and no line is wider than 120 columns. The width rule holds for the whole
# header once its implementation has numbered sections (issue 15); before that, for the manual,
# and the rest is counted.
# build-independent: it uses no program of $BUILD, so `make test` runs it in its first pass only.
. "$(dirname "$0")/check.sh"
out=${BUILD:-build}/header_map
mkdir -p "$out"

tests/header_map.sh collabllm.h > "$out/map.txt"; check_rc "tests/header_map.sh runs" $?
awk 'substr($0, 23, 6) != "      "' "$out/map.txt" | sed 's/^/       /'   # parts and sections

zones=$(awk '/^ *[0-9]+-[0-9]+ / && substr($0, 23, 1) != " " { t = substr($0, 23); sub(/\. .*/, "", t); print t }' "$out/map.txt" | tr '\n' '|')
want="MANUAL|PUBLIC DECLARATIONS|IMPLEMENTATION: PRELIMINARIES|PART I|PART II|PART III|PART IV|END OF THE IMPLEMENTATION, LICENSE|"
[ "$zones" = "$want" ]; check_rc "the zones are in order: $(echo "$want" | sed 's/|$//; s/|/, /g')" $?
[ "$zones" = "$want" ] || echo "       found: $zones"

manual_end=$(grep -n '^\*/$' collabllm.h | head -1 | cut -d: -f1)
wide_manual=$(awk -v end="$manual_end" 'NR <= end && length($0) > 120' collabllm.h | wc -l)
[ "$wide_manual" = 0 ]; check_rc "no line of the manual is over 120 columns ($wide_manual)" $?
wide=$(awk 'length($0) > 120' collabllm.h | wc -l)
if grep -q '^/\* I\.[0-9][0-9]* ' collabllm.h; then
    [ "$wide" = 0 ]; check_rc "no line of the header is over 120 columns ($wide)" $?
    [ "$wide" = 0 ] || awk 'length($0) > 120 { print "       line " NR ": " length($0) " columns"; if (++n == 10) exit }' collabllm.h
else
    echo "  --   $wide lines over 120 columns outside the manual (checked once the sections are numbered)"
fi
check_summary test_header_map
