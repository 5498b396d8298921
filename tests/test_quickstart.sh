#!/bin/sh
# test_quickstart.sh - the QUICK START at the top of collabllm.h is real code: its block is cut out
# of the header as it stands, wrapped in main() with the path of a tiny test model, compiled as
# C99 and as C++ with every warning an error, and run. The run must save a model whose weights
# differ from the ones it loaded (the AdamW step happened).
build=${BUILD:-build}
out=$build/quickstart
model=tests/data/train/tiny_qwen2
rm -rf "$out"; mkdir -p "$out"
fail=0
check() { if [ "$2" = 0 ]; then echo "  OK   $1"; else echo "  FAIL $1"; fail=1; fi; }

# the code: the lines indented by 6 spaces between the "1. QUICK START" and "2. API BY TASK" rules
awk '/^   1\. QUICK START/ { on = 1; next } on && /^   2\. API BY TASK/ { exit } on' collabllm.h |
    sed -n 's/^      //p' > "$out/block.c"
[ "$(grep -c 'cllm_' "$out/block.c")" -ge 8 ]; check "the QUICK START block is found ($(wc -l < "$out/block.c") lines)" $?
{
    grep '^#' "$out/block.c"
    echo 'int main(void) {'
    grep -v '^#' "$out/block.c" | sed "s|path/to/hf-model-dir|$model|; s|\"out-dir\"|\"$out/saved\"|"
    echo '    return 0;'
    echo '}'
} > "$out/quickstart.c"

W="-Wall -Wextra -Wpedantic -Werror"
LIBS="-lcjson -lcurl -lstb -lm"
cc -std=c99 $W -I. -o "$out/quickstart" "$out/quickstart.c" $LIBS 2>"$out/cc.txt"; rc=$?
check "it compiles as C99 with $W" $rc
[ $rc = 0 ] || sed 's/^/       /' "$out/cc.txt" | head -20
if command -v g++ >/dev/null 2>&1; then
    g++ -x c++ -std=c++11 $W -I. -o "$out/quickstart_cpp" "$out/quickstart.c" $LIBS 2>"$out/cxx.txt"; rc=$?
    check "it compiles as C++11" $rc
    [ $rc = 0 ] || sed 's/^/       /' "$out/cxx.txt" | head -20
fi
"$out/quickstart" > "$out/run.txt" 2>&1; check "it runs and exits 0" $?
grep -q '^loss [0-9][0-9.]*$' "$out/run.txt"; check "it prints a finite loss ($(head -1 "$out/run.txt"))" $?
[ -f "$out/saved/config.json" ] && [ -f "$out/saved/model.safetensors" ]; check "it saved config.json and model.safetensors" $?
! cmp -s "$model/model.safetensors" "$out/saved/model.safetensors"; check "the saved weights moved (one AdamW step)" $?
echo "test_quickstart: $( [ $fail = 0 ] && echo 'all OK' || echo FAIL)"
exit $fail
