#!/bin/sh
# header_map.sh [collabllm.h] - print the header's map: its zones (manual, declarations, the
# implementation's preliminaries, the four parts, the license), each section and subsection with
# its line range and size, then the number of lines over 120 columns (which must be 0).
#   zone:        the manual is the opening comment; declarations run to the IMPLEMENTATION banner
#   part:        /* ####...#### */ + /* PART I. TITLE */ + /* ####...#### */
#   section:     a rule of dashes or equals signs, one or two title lines, the same rule again
#   subsection:  /* ---- title ------...--- */ on one line (or opening a longer comment)
# tests/test_header_map.sh checks the map (parts in order, no wide lines).
f=${1:-collabllm.h}
[ -r "$f" ] || { echo "header_map.sh: cannot read $f" >&2; exit 2; }
awk '
function clean(s) {
    sub(/^\/\* */, "", s); sub(/ *\*\/$/, "", s); sub(/^-+ */, "", s); sub(/ *-+$/, "", s)
    return s
}
function emit(level, title, start) { n++; lvl[n] = level; ttl[n] = title; beg[n] = start }
{ line[NR] = $0; if (length($0) > 120) wide++ }
END {
    total = NR
    rule = "^/\\* [-=]+ \\*/$"
    hashes = "^/\\* #+ \\*/$"
    emit(0, "MANUAL", 1)
    for (i = 1; i <= total; i++) {
        s = line[i]
        if (!decl && s ~ /^#ifndef COLLABLLM_H/) { emit(0, "PUBLIC DECLARATIONS", i); decl = 1; continue }
        if (s ~ hashes && length(s) >= 40) {
            if (line[i + 1] ~ /^\/\* PART /) { emit(0, clean(line[i + 1]), i); i += 2; continue }
            for (j = i + 1; j <= i + 3 && j <= total; j++) if (line[j] ~ /IMPLEMENTATION/) break
            if (j <= i + 3) {
                emit(0, "IMPLEMENTATION: PRELIMINARIES", i)
                for (i = j + 1; i <= total && line[i] !~ hashes; i++) ;
                continue
            }
        }
        if (s ~ /^#endif \/\* COLLABLLM_IMPLEMENTATION_DONE/) { emit(0, "END OF THE IMPLEMENTATION, LICENSE", i); continue }
        if (s ~ rule && length(s) >= 40) {
            # a banner: rule, one or two title lines, the same rule
            for (j = i + 2; j <= i + 3 && j <= total; j++) if (line[j] == s) break
            if (j <= i + 3 && line[i + 1] !~ rule && line[i + 1] ~ /^\/\* [^ ]/) {
                emit(1, clean(line[i + 1]), i)
                i = j
            }
            continue
        }
        if (s ~ /^\/\* ---- [^-]/) emit(2, clean(s), i)
    }
    for (i = 1; i <= n; i++) {
        end = total
        for (j = i + 1; j <= n; j++) if (lvl[j] <= lvl[i]) { end = beg[j] - 1; break }
        pad = lvl[i] == 0 ? "" : lvl[i] == 1 ? "  " : "      "
        printf "%6d-%-6d %6d  %s%s\n", beg[i], end, end - beg[i] + 1, pad, substr(ttl[i], 1, 90)
    }
    printf "%d lines in all; %d lines over 120 columns\n", total, wide + 0
}' "$f"
