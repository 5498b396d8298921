#!/bin/sh
# ensure-deps.sh PKG... - make sure Debian packages are installed.
# As root it installs what is missing with apt-get; otherwise it prints the exact command and
# fails, so `make` stops with an instruction instead of a compiler error.
missing=""
for p in "$@"; do
    if command -v dpkg-query >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing missing packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq $missing >/dev/null && exit 0
    echo "apt-get failed; run it yourself: apt-get install -y$missing" >&2
    exit 1
fi
echo "missing packages:$missing" >&2
echo "install them with:  sudo apt-get install -y$missing" >&2
exit 1
