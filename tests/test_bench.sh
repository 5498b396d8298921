#!/bin/sh
# test_bench.sh - examples/bench.c end to end on a tiny config, and its JSON against the format
# document: every field data_fmt/bench.md lists must appear in a fresh output and in
# data_fmt/bench.example.json. The bench is built only with the fast paths (build/fast/bench);
# elsewhere the test says so and passes. Times are not checked (tests are never timed).
bin="$BUILD/bench"
if [ ! -x "$bin" ]; then echo "  skip: $bin is built by the fast-path build only"; exit 0; fi
out="$BUILD/test_bench.json"
rm -f "$out"
if ! "$bin" --config tests/data/golden/llama_gqa_tied --B 2 --T 8 --matmul 48 --json "$out" > "$BUILD/test_bench.log" 2>&1; then
    echo "  FAIL bench exited with an error:"; cat "$BUILD/test_bench.log"; exit 1
fi
fields=$(sed -n 's/^| `\([a-z_0-9]*\)` |.*/\1/p' data_fmt/bench.md)
count=$(echo "$fields" | wc -w)
if [ "$count" -lt 20 ]; then echo "  FAIL only $count fields found in data_fmt/bench.md"; exit 1; fi
fail=0
for f in $fields; do
    for file in "$out" data_fmt/bench.example.json; do
        grep -q "\"$f\":" "$file" || { echo "  FAIL field $f is missing from $file"; fail=1; }
    done
done
# the model from --config ran with the batch asked for
grep -q '"B":	2' "$out" && grep -q '"T":	8' "$out" || { echo "  FAIL --B 2 --T 8 not in $out"; fail=1; }
[ "$fail" = 0 ] && echo "  OK   bench ran; all $count documented fields present in the output and the example"
echo "test_bench: $( [ $fail = 0 ] && echo 'all OK' || echo FAIL)"
exit $fail
