#!/bin/sh
# test_doc_blocks.sh - every code block of the manual (the comment at the top of collabllm.h) and
# of README.md is real code, cut out of the documents as they stand:
#   C blocks     compiled as C99 with every warning an error, and also as C++ when they hold
#                statements; linked and run. A block with main() is a whole program; a block of
#                statements is wrapped in main() (its #include / #define lines stay on top); a block
#                of preprocessor lines only gets an empty main(). Placeholders are replaced by test
#                files (path/to/hf-model-dir -> a tiny model, "out-dir" -> a directory under build/).
#   sh blocks    parsed by sh -n; each `make TARGET` line must name targets that exist (make -n),
#                and each build/PROGRAM a program the Makefile builds. The README's pipeline block
#                (build/collabllm ...) is run end to end by tests/test_doc_pipeline.c.
#   text blocks  output, not code: skipped. A README block without one of these languages fails.
# And the manual's FILE FORMATS lists exactly the pages of data_fmt/.
# In the manual a code block is a run of lines indented by 6 spaces whose first line starts with
# '#'. The QUICK START must also print a finite loss and save weights that moved (one AdamW step).
# build-independent: it uses no program of $BUILD, so `make test` runs it in its first pass only.
. "$(dirname "$0")/check.sh"
out=$build/doc_blocks
model=tests/data/train/tiny_qwen2
rm -rf "$out"; mkdir -p "$out"
W="-Wall -Wextra -Wpedantic -Werror"
LIBS="-lcjson -lcurl -lstb -lm"
MAKE_CLEAN="env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory"

# ---- cut the blocks out: one file per block, named after its document and first line ------------
manual_end=$(grep -n '^\*/$' collabllm.h | head -1 | cut -d: -f1)
awk -v end="$manual_end" -v out="$out" '
    NR > end { exit }
    on && /^[[:space:]]*$/ { blank = blank "\n"; next }
    on && /^      / { printf "%s", blank > f; blank = ""; print substr($0, 7) > f; next }
    on { close(f); on = 0; blank = "" }
    /^      #/ { f = out "/manual_" NR ".c"; print substr($0, 7) > f; on = 1 }' collabllm.h
awk -v out="$out" '
    on && /^```$/ { close(f); on = 0; next }
    on { print > f; next }
    /^```/ { lang = substr($0, 4); if (lang == "") lang = "none"; f = out "/readme_" NR "." lang; printf "" > f; on = 1 }' README.md
n_manual=$(ls "$out"/manual_*.c 2>/dev/null | wc -l)
n_readme=$(ls "$out"/readme_* 2>/dev/null | wc -l)
[ "$n_manual" -ge 2 ] && [ "$n_readme" -ge 3 ]
check_rc "found $n_manual code blocks in the manual and $n_readme fenced blocks in README.md" $?

where() {   # block file -> "collabllm.h:LINE" or "README.md:LINE"
    b=$(basename "$1"); l=${b#*_}; l=${l%%.*}
    case $b in manual_*) echo "collabllm.h:$((l))" ;; *) echo "README.md:$l" ;; esac
}

# ---- C blocks ------------------------------------------------------------------------------------
for blk in "$out"/manual_*.c "$out"/readme_*.c; do
    [ -f "$blk" ] || continue
    at=$(where "$blk"); dir=${blk%.c}; mkdir -p "$dir"
    src=$dir/prog.c
    body=$(grep -v '^[[:space:]]*#' "$blk" | grep -v '^[[:space:]]*\(/[*/].*\)\?$' | head -1)
    if grep -q '\bmain[[:space:]]*(' "$blk"; then kind="a program"; cp "$blk" "$src"
    elif [ -n "$body" ]; then
        kind="statements, wrapped in main()"
        { grep '^#' "$blk"; echo 'int main(void) {'; grep -v '^#' "$blk"; echo '    return 0;'; echo '}'; } > "$src"
    else
        kind="declarations, with an empty main()"
        { cat "$blk"; echo 'int main(void) { return 0; }'; } > "$src"
    fi
    sed -i "s|path/to/hf-model-dir|$model|g; s|\"out-dir\"|\"$dir/saved\"|g" "$src"
    cc -std=c99 $W -I. -o "$dir/prog" "$src" $LIBS 2>"$dir/cc.txt"; rc=$?
    check_rc "$at ($kind) compiles as C99" $rc
    [ $rc = 0 ] || sed 's/^/       /' "$dir/cc.txt" | head -20
    if [ -n "$body" ] && command -v g++ >/dev/null 2>&1; then
        g++ -x c++ -std=c++11 $W -I. -o "$dir/prog_cpp" "$src" $LIBS 2>"$dir/cxx.txt"; rc=$?
        check_rc "$at compiles as C++11" $rc
        [ $rc = 0 ] || sed 's/^/       /' "$dir/cxx.txt" | head -20
    fi
    if [ -x "$dir/prog" ]; then
        "$dir/prog" > "$dir/run.txt" 2>&1; rc=$?
        check_rc "$at runs and exits 0" $rc
        [ $rc = 0 ] || sed 's/^/       /' "$dir/run.txt" | head -10
    fi
done

# the QUICK START: the block of section 1, on a tiny model
qs_line=$(awk '/^   1\. QUICK START/ { on = 1; next } on && /^      #/ { print NR; exit }' collabllm.h)
qs=$out/manual_$qs_line
[ -n "$qs_line" ] && [ -f "$qs.c" ] && [ "$(grep -c 'cllm_' "$qs.c")" -ge 8 ]
check_rc "the QUICK START is one of them (collabllm.h:$qs_line, $(wc -l < "$qs.c" 2>/dev/null) lines)" $?
grep -q '^loss [0-9][0-9.]*$' "$qs/run.txt" 2>/dev/null; check_rc "  it prints a finite loss ($(head -1 "$qs/run.txt" 2>/dev/null))" $?
[ -f "$qs/saved/config.json" ] && [ -f "$qs/saved/model.safetensors" ]; check_rc "  it saved config.json and model.safetensors" $?
[ -f "$qs/saved/model.safetensors" ] && ! cmp -s "$model/model.safetensors" "$qs/saved/model.safetensors"
check_rc "  the saved weights moved (one AdamW step)" $?

# ---- shell blocks --------------------------------------------------------------------------------
for blk in "$out"/readme_*.sh; do
    [ -f "$blk" ] || continue
    at=$(where "$blk")
    sh -n "$blk" 2>"$out/sh.err"; rc=$?
    check_rc "$at (sh) parses" $rc
    [ $rc = 0 ] || sed 's/^/       /' "$out/sh.err"
    targets=$(sed -n 's/^make \([^#]*\).*/\1/p' "$blk" | xargs)
    if [ -n "$targets" ]; then
        bad=""
        for t in $targets; do $MAKE_CLEAN -n "$t" >/dev/null 2>&1 || bad="$bad $t"; done
        [ -z "$bad" ]; check_rc "$at: make targets exist ($targets)" $?
        [ -z "$bad" ] || echo "       unknown:$bad"
    fi
    progs=$(grep -o 'build/[a-z_]*' "$blk" | sort -u | xargs)
    if [ -n "$progs" ]; then
        bad=""
        for p in $progs; do $MAKE_CLEAN -n "$p" >/dev/null 2>&1 || bad="$bad $p"; done
        [ -z "$bad" ]; check_rc "$at: the Makefile builds $progs" $?
        [ -z "$bad" ] || echo "       not built:$bad"
        if grep -q 'build/collabllm ' "$blk"; then
            echo "  --   $at is run end to end by tests/test_doc_pipeline.c"
        fi
    fi
done

# ---- every README block says what it is ------------------------------------------------------------
for blk in "$out"/readme_*; do
    [ -f "$blk" ] || continue
    case $blk in *.c | *.sh | *.text) ;; *) check_rc "$(where "$blk") is tagged c, sh or text (\`\`\`${blk##*.})" 1 ;; esac
done

# ---- the manual's FILE FORMATS lists every page of data_fmt/, and only pages that exist -----------
listed=$(awk '/^   5\. FILE FORMATS/ { on = 1; next } on && /^   [0-9]+\. / { exit } on' collabllm.h |
         grep -o '[A-Za-z0-9_-]*\.md' | sort -u | xargs)
pages=$(cd data_fmt && ls *.md | sort | xargs)
[ -n "$pages" ] && [ "$listed" = "$pages" ]; check_rc "FILE FORMATS (manual section 5) lists the $(echo "$pages" | wc -w) pages of data_fmt/" $?
[ "$listed" = "$pages" ] || { echo "       listed: $listed"; echo "       in data_fmt/: $pages"; }

check_summary test_doc_blocks
