#!/bin/sh
# reading_guide.sh [collabllm.h] - check the manual's READING GUIDE against the code: every function
# a row of the guide names must be defined in the header's implementation, and each definition
# must lie in the part the row gives (I, II, III, IV) and, for a row that gives a section (I.4),
# inside that section. Sections are the numbered banners of the implementation:
#     /* ----...---- */
#     /* I.4 The multiturn-aware reward (...) */
#     /* ----...---- */
# A header whose implementation has no numbered banner yet is checked part by part only (it says
# so). Prints one line per problem and a summary; exits 1 when something is wrong.
#
# A row of the guide is a line that ends with a place (I, I.4, II.10, III, IV) and names one or
# more functions (cllm_... or cllm__...); a line that names a function but gives no place is an
# error, so a row cannot silently stop being checked.
f=${1:-collabllm.h}
[ -r "$f" ] || { echo "reading_guide.sh: cannot read $f" >&2; exit 2; }
awk '
function place_ok(want, part, sect) {
    if (want ~ /\./) return numbered ? sect == want : part == substr(want, 1, index(want, ".") - 1)
    return part == want
}
{ line[NR] = $0 }
END {
    total = NR
    # 1. the guide: from its heading to the next numbered heading or the end of the manual
    for (i = 1; i <= total && line[i] != "*/"; i++) {
        if (line[i] ~ /^   [0-9]+\. READING GUIDE/) { on = 1; gstart = i; continue }
        if (on && line[i] ~ /^   [0-9]+\. [A-Z]/) break
        if (!on || line[i] !~ /cllm_/) continue
        n_fields = split(line[i], w, /[ \t]+/)
        where = w[n_fields]
        if (where !~ /^(I|II|III|IV)(\.[0-9]+)?$/) {
            printf "FAIL guide line %d names a function but ends without a place (I.4, II, ...): %s\n", i, line[i]
            bad++
            continue
        }
        rows++
        s = line[i]
        while (match(s, /cllm_[A-Za-z0-9_]+/)) {
            name = substr(s, RSTART, RLENGTH)
            s = substr(s, RSTART + RLENGTH)
            nf++; fname[nf] = name; fwhere[nf] = where; fline[nf] = i
            want[name] = 1
        }
    }
    if (!gstart) { print "FAIL no READING GUIDE section in the manual"; exit 1 }
    if (!rows) { print "FAIL the READING GUIDE has no rows"; exit 1 }
    # 2. the implementation: parts, numbered sections, and where each named function is defined
    rule = "^/\\* -+ \\*/$"
    for (i = 1; i <= total; i++) if (line[i] ~ /^#ifdef COLLABLLM_IMPLEMENTATION/) break
    for (; i <= total; i++) {
        s = line[i]
        if (s ~ /^\/\* #+ \*\/$/ && line[i + 1] ~ /^\/\* PART [IV]+\. /) {
            part = line[i + 1]; sub(/^\/\* PART /, "", part); sub(/\..*/, "", part)
            sect = ""
            i += 2
            continue
        }
        if (s ~ rule && line[i + 1] !~ rule && (line[i + 2] ~ rule || line[i + 3] ~ rule)) {
            t = line[i + 1]
            if (t ~ /^\/\* (I|II|III|IV)\.[0-9]+ /) {
                sect = t; sub(/^\/\* /, "", sect); sub(/ .*/, "", sect)
                numbered = 1
            } else sect = ""
            i += line[i + 2] ~ rule ? 2 : 3
            continue
        }
        # a definition: [qualifiers and a type] name( ... ) {   at column 0
        if (s !~ /^[A-Za-z_][A-Za-z0-9_ \t*]*[ \t*]cllm_[A-Za-z0-9_]+[ \t]*\(/) continue
        if (s ~ /^(typedef|return|extern)[ \t]/) continue
        match(s, /cllm_[A-Za-z0-9_]+[ \t]*\(/)
        name = substr(s, RSTART, RLENGTH); sub(/[ \t]*\($/, "", name)
        if (!(name in want)) continue
        kind = ""
        for (j = i; j <= total && j < i + 12; j++) {
            t = line[j]; sub(/\/\*.*/, "", t); sub(/\/\/.*/, "", t)
            if (t ~ /\{/) { kind = "def"; break }
            if (t ~ /;/) { kind = "decl"; break }
        }
        if (kind != "def") continue
        ndef[name]++
        dpart[name, ndef[name]] = part; dsect[name, ndef[name]] = sect; dline[name, ndef[name]] = i
    }
    # 3. each named function against its row
    for (k = 1; k <= nf; k++) {
        name = fname[k]; where = fwhere[k]
        if (!ndef[name]) {
            printf "FAIL guide line %d: %s is not defined in the implementation\n", fline[k], name
            bad++
            continue
        }
        for (d = 1; d <= ndef[name]; d++) {
            if (place_ok(where, dpart[name, d], dsect[name, d])) continue
            at = dpart[name, d] == "" ? "before Part I" : "in Part " dpart[name, d]
            if (numbered && dsect[name, d] != "") at = at ", section " dsect[name, d]
            else if (numbered) at = at ", outside any numbered section"
            printf "FAIL guide line %d: %s is defined at line %d, %s, not in %s\n", fline[k], name, dline[name, d], at, where
            bad++
        }
        checked++
    }
    printf "reading guide: %d rows, %d functions checked, %s, %d problems\n", rows, checked,
           numbered ? "by part and section" : "by part only (the implementation has no numbered section banners yet)",
           bad + 0
    exit bad ? 1 : 0
}' "$f"
