#!/bin/sh
# neon.sh BUILD - the NEON fast paths run, not only compiled, on a machine without NEON (make neon; CI):
# tests/test_fastpath.c cross-compiled for AArch64 with -DCLLM_SIMD (NEON microkernels, OpenMP) and run under
# qemu-user, so every NEON kernel is compared with its reference, and with a scalar fmaf() chain bit for bit, as the
# x86 builds are. Needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (make neon installs
# them as root).
# test_fastpath calls no HTTP, JSON or stb_ds code, so it is linked without AArch64 builds of libcurl, cJSON and
# libstb: their symbols are left unresolved, and a call to one would crash the test, not pass it. Their headers are
# the host's (/usr/include; curl's sit in the multiarch directory and hold no architecture's types).
build=${1:-build}
out=$build/neon
cc=aarch64-linux-gnu-gcc
mkdir -p "$out"
for tool in $cc qemu-aarch64; do
    command -v $tool >/dev/null 2>&1 || { echo "neon: $tool not found (make neon installs it)"; exit 1; }
done
$cc -std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -fopenmp -DCLLM_SIMD -I. \
    -idirafter /usr/include -idirafter /usr/include/x86_64-linux-gnu -static -o "$out/test_fastpath" \
    tests/test_fastpath.c -lm -Wl,--unresolved-symbols=ignore-all 2> "$out/cc.txt" ||
    { sed 's/^/  /' "$out/cc.txt" | head -30; echo "neon: tests/test_fastpath.c does not compile for AArch64"; exit 1; }
OMP_NUM_THREADS=2 qemu-aarch64 "$out/test_fastpath" > "$out/run.txt" 2>&1
rc=$?
head -1 "$out/run.txt"
grep -E 'FAIL|checks' "$out/run.txt"
grep -q '^fast paths: .*NEON microkernels' "$out/run.txt" ||
    { echo "neon: the AArch64 build did not select the NEON microkernels"; exit 1; }
exit $rc
