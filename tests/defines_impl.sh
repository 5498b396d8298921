#!/bin/sh
# defines_impl.sh FILE... - print the FILEs that compile collabllm.h's implementation themselves:
# those that #define COLLABLLM_IMPLEMENTATION, directly or in a file they #include "..." (followed
# recursively, relative to the including file). The Makefile builds every other program by
# linking the implementation object of its configuration, so the header is compiled once per
# configuration instead of once per program. A program keeps the define when it calls private
# cllm__ functions or needs COLLABLLM_DOUBLE or COLLABLLM_STATIC.
re='^[[:space:]]*#[[:space:]]*define[[:space:]]+COLLABLLM_IMPLEMENTATION([[:space:]]|$)'
defines() {   # file, files already seen (include cycles)
    case " $2 " in *" $1 "*) return 1 ;; esac
    [ -r "$1" ] || return 1
    grep -Eq "$re" "$1" && return 0
    dir=$(dirname "$1")
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$1"); do
        case $inc in */collabllm.h | collabllm.h) continue ;; esac
        defines "$dir/$inc" "$2 $1" && return 0
    done
    return 1
}
direct=" $(grep -lE "$re" "$@" 2>/dev/null | tr '\n' ' ') "
for f in "$@"; do
    case $direct in *" $f "*) echo "$f"; continue ;; esac
    if defines "$f" ""; then echo "$f"; fi
done
