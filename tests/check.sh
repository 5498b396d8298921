# check.sh - what the shell tests share, as tests/check.h is for the C ones. A test sources it,
#     . "$(dirname "$0")/check.sh"
# calls, once per check,
#     check LABEL COMMAND...     passes when COMMAND succeeds
#     check_rc LABEL STATUS      passes when STATUS (usually $?) is 0
# and ends with
#     check_summary NAME         prints "NAME: N checks, F failed -> all OK|FAIL"; non-zero if any failed
# It sets build ($BUILD, default build), tool ($build/collabllm) and tmp, a new directory removed on exit.
build=${BUILD:-build}
tool="$build/collabllm"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
checks=0
fails=0
check() {
    check_label=$1
    shift
    checks=$((checks + 1))
    if "$@"; then
        echo "  OK   $check_label"
    else
        echo "  FAIL $check_label"
        fails=$((fails + 1))
    fi
}
check_rc() { check "$1" test "$2" = 0; }
check_summary() {
    echo "$1: $checks checks, $fails failed -> $( [ "$fails" = 0 ] && echo all OK || echo FAIL )"
    [ "$fails" = 0 ]
}
