#!/bin/sh
# test_verify.sh - every recipe of data_fmt/verify.md (examples/verify/*.py) against this build's collabllm,
# with Debian's python3-torch: each must agree on a clean run, and must report (non-zero exit, the first
# mismatch printed) each mistake injected on its Python side: a wrong sign, a mean in place of a sum, a shifted
# label, and for PPO the biased whitening and the masked approxkl that data_fmt/verify.md warns of. The second
# pass of make test (ONCE_DONE=1, the fast paths on) runs only the recipes whose collabllm side runs the model
# (logps, dpo). Without /usr/bin/python3 and torch it skips, unless VERIFY_REQUIRE_TORCH=1 (CI installs
# python3-torch and sets it).
build=${BUILD:-build}
py=/usr/bin/python3
if ! "$py" -c "import torch" 2>/dev/null; then
    if [ "$VERIFY_REQUIRE_TORCH" = 1 ]; then echo "test_verify: FAIL, $py cannot import torch"; exit 1; fi
    echo "test_verify: skipped ($py with torch not found; Debian: apt-get install python3-torch)"
    exit 0
fi
export COLLABLLM="$build/collabllm"
export PYTHONDONTWRITEBYTECODE=1      # leave no __pycache__ in examples/verify
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0; checks=0
# recipe and its faults
recipes='logps:sign mean shift
dpo:sign mean shift
ppo:sign mean biased-whitening masked-approxkl
grpo:sign mean
adamw:sign
mr:sign mean'
[ "$ONCE_DONE" = 1 ] && recipes=$(echo "$recipes" | grep -E '^(logps|dpo):')
echo "$recipes" > "$tmp/list"
# every recipe in examples/verify is run here and has its section in data_fmt/verify.md
for f in examples/verify/*.py; do
    name=$(basename "$f" .py)
    [ "$name" = hf_ref ] && continue
    checks=$((checks+1))
    if grep -q "^$name:" "$tmp/list" || [ "$ONCE_DONE" = 1 ]; then :; else
        echo "  FAIL $f is not run by this test"; fails=$((fails+1))
    fi
    grep -q "\`$name.py\`" data_fmt/verify.md || { echo "  FAIL data_fmt/verify.md does not name $name.py"; fails=$((fails+1)); }
done
while read -r entry; do
    recipe=${entry%%:*}
    checks=$((checks+1))
    if "$py" "examples/verify/$recipe.py" >"$tmp/out" 2>&1 && grep -q "^$recipe: all [0-9]* checks agree" "$tmp/out"; then
        echo "  OK   $recipe: $(tail -1 "$tmp/out")"
    else
        echo "  FAIL $recipe on a clean run:"; cat "$tmp/out"; fails=$((fails+1))
    fi
    for fault in ${entry#*:}; do
        checks=$((checks+1))
        "$py" "examples/verify/$recipe.py" --inject "$fault" >"$tmp/out" 2>&1; rc=$?
        if [ $rc -ne 0 ] && grep -q "^MISMATCH .* at index .*: collabllm .*, python " "$tmp/out" &&
           grep -q "^$recipe: FAIL" "$tmp/out"; then
            echo "  OK   $recipe --inject $fault reported: $(grep -m1 '^MISMATCH' "$tmp/out" | cut -c1-100)"
        else
            echo "  FAIL $recipe --inject $fault was not reported (exit $rc):"; cat "$tmp/out"; fails=$((fails+1))
        fi
    done
done < "$tmp/list"
echo "test_verify: $checks checks, $fails failed -> $( [ $fails = 0 ] && echo all OK || echo FAIL )"
[ $fails = 0 ]
