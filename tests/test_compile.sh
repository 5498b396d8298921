#!/bin/sh
# test_compile.sh - the header compiles warning-free (-Wall -Wextra -Wpedantic -Werror) as C99,
# C11 and C++ (g++ and clang when present), in COLLABLLM_STATIC and COLLABLLM_DOUBLE modes, with
# the allocator overridden, and as a two-file program (declarations in one translation unit,
# the implementation in another) that links and runs.
# build-independent: it uses no program of $BUILD, so `make test` runs it in its first pass only.
set -u
out=${BUILD:-build}/compile
mkdir -p "$out"
fail=0; n=0
W="-Wall -Wextra -Wpedantic -Werror"
impl="$out/impl.c"
cat > "$impl" <<'C'
#define COLLABLLM_IMPLEMENTATION
#include "collabllm.h"
int main(void) { cllm_err e; cllm_config c; return cllm_config_parse(&c, "{}", 2, &e) == CLLM_OK; }
C
try() {  # label, compiler and flags...
    label=$1; shift
    n=$((n+1))
    if "$@" -I. -c -o "$out/obj.o" 2>"$out/err.txt"; then echo "  OK   $label"
    else echo "  FAIL $label"; sed 's/^/       /' "$out/err.txt" | head -20; fail=$((fail+1)); fi
}
try "gcc -std=c99"                 gcc -std=c99 $W "$impl"
try "gcc -std=c11"                 gcc -std=c11 $W "$impl"
try "gcc -std=c99 COLLABLLM_STATIC" gcc -std=c99 $W -DCOLLABLLM_STATIC "$impl"
try "gcc -std=c99 COLLABLLM_DOUBLE" gcc -std=c99 $W -DCOLLABLLM_DOUBLE "$impl"
try "gcc custom CLLM_MALLOC/REALLOC/FREE" gcc -std=c99 $W "-DCLLM_MALLOC(s)=malloc(s)" "-DCLLM_REALLOC(p,s)=realloc(p,s)" "-DCLLM_FREE(p)=free(p)" -include stdlib.h "$impl"
try "g++ -std=c++11"               g++ -x c++ -std=c++11 $W "$impl"
try "g++ -std=c++17 COLLABLLM_STATIC" g++ -x c++ -std=c++17 $W -DCOLLABLLM_STATIC "$impl"
if command -v clang >/dev/null 2>&1; then
    try "clang -std=c99"           clang -std=c99 $W "$impl"
    try "clang++ -std=c++14"       clang++ -x c++ -std=c++14 $W "$impl"
fi
# two translation units: one sees only the declarations
cat > "$out/user.c" <<'C'
#include "collabllm.h"
int use_it(void) { cllm_rng r; cllm_rng_seed(&r, 1); return (int)(cllm_rng_u32(&r) & 1) + (cllm_result_string(CLLM_OK)[0] == 'o'); }
C
cat > "$out/lib.c" <<'C'
#define COLLABLLM_IMPLEMENTATION
#include "collabllm.h"
int use_it(void);
int main(void) { return use_it() >= 1 ? 0 : 1; }
C
n=$((n+1))
if gcc -std=c99 $W -I. "$out/user.c" "$out/lib.c" -o "$out/two_tu" -lcjson -lcurl -lstb -lm 2>"$out/err.txt" && "$out/two_tu"; then
    echo "  OK   two translation units link and run"
else echo "  FAIL two translation units"; head -20 "$out/err.txt"; fail=$((fail+1)); fi
echo "test_compile: $n configurations, $fail failed"
[ "$fail" = 0 ]
