#!/usr/bin/python3
"""gen_unicode_tables.py - writes the Unicode tables the tokenizer needs into collabllm.h.

Usage (from the repository root; `make unicode-tables` does exactly this):
    /usr/bin/python3 tests/gen_unicode_tables.py collabllm.h [UNICODE_DIR]

UNICODE_DIR defaults to /usr/share/unicode (Debian package `unicode-data`). The script replaces
everything between the lines "BEGIN GENERATED UNICODE TABLES" and "END GENERATED UNICODE TABLES"
in the header and leaves the rest untouched, so running it twice gives the same file.

Tables (all sorted, looked up by binary search in collabllm.h, Part IV), uint32_t arrays written in decimal
on lines of at most 118 columns:
  cllm__uni_class_table  breakpoints start << 3 | bits: from `start` until the next entry every code point has
                   `bits` = 1 letter (General_Category L*), 2 number (N*: Nd Nl No), 4 White_Space
                   (PropList.txt): the regex classes \\p{L}, \\p{N}, \\s.
  cllm__uni_ccc_table    breakpoints start << 8 | canonical combining class.
  cllm__uni_decomp triples {cp + 2^31 if a pair excluded from composition, first, second}: the canonical
                   decomposition mapping of cp (second = 0 for a singleton), Hangul syllables excluded (they
                   are algorithmic). "Excluded" = Full_Composition_Exclusion. Singletons never compose, so
                   they go unflagged: the 2^31 would only lengthen the table.
"""
import os
import re
import sys

BEGIN = "BEGIN GENERATED UNICODE TABLES"
END = "END GENERATED UNICODE TABLES"


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                yield line


def parse_range(field):
    if ".." in field:
        a, b = field.split("..")
        return int(a, 16), int(b, 16)
    return int(field, 16), int(field, 16)


def unicode_data(udir):
    """Yields (cp, category, ccc, decomposition field) for every assigned code point."""
    first = None
    for line in read_lines(os.path.join(udir, "UnicodeData.txt")):
        f = line.split(";")
        cp, name, cat, ccc, decomp = int(f[0], 16), f[1], f[2], int(f[3]), f[5]
        if name.endswith(", First>"):
            first = cp
            continue
        if name.endswith(", Last>"):
            for c in range(first, cp + 1):
                yield c, cat, ccc, ""
            continue
        yield cp, cat, ccc, decomp


def breakpoints(values):
    """values: dict cp -> small int (missing = 0). Returns [(start, value)] covering 0..0x10FFFF."""
    out = []
    prev = None
    for cp in range(0x110000):
        v = values.get(cp, 0)
        if v != prev:
            out.append((cp, v))
            prev = v
    return out


WIDTH = 118


def emit_numbers(name, ctype, values, comment):
    """A C array of decimal numbers, lines filled to WIDTH columns."""
    lines = ["/* %s */" % comment, "static const %s %s[%d] = {" % (ctype, name, len(values))]
    cur = "    "
    for v in values:
        item = "%d," % v
        if len(cur) + len(item) > WIDTH:
            lines.append(cur)
            cur = "    "
        cur += item
    lines.append(cur)
    lines.append("};")
    return lines


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: gen_unicode_tables.py collabllm.h [UNICODE_DIR]")
    header = sys.argv[1]
    udir = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/unicode"
    with open(os.path.join(udir, "PropList.txt"), encoding="utf-8") as f:
        version = re.search(r"PropList-([0-9.]+)\.txt", f.readline()).group(1)

    cls, ccc, decomp = {}, {}, []
    for cp, cat, c, d in unicode_data(udir):
        if cat.startswith("L"):
            cls[cp] = 1
        elif cat in ("Nd", "Nl", "No"):
            cls[cp] = 2
        if c:
            ccc[cp] = c
        if d and not d.startswith("<") and not (0xAC00 <= cp <= 0xD7A3):
            parts = [int(x, 16) for x in d.split()]
            assert len(parts) in (1, 2), (hex(cp), d)
            decomp.append([cp, parts[0], parts[1] if len(parts) == 2 else 0])
    for line in read_lines(os.path.join(udir, "PropList.txt")):
        rng, prop = [x.strip() for x in line.split(";")]
        if prop == "White_Space":
            a, b = parse_range(rng)
            for cp in range(a, b + 1):
                cls[cp] = cls.get(cp, 0) | 4
    excluded = set()
    for line in read_lines(os.path.join(udir, "DerivedNormalizationProps.txt")):
        f = [x.strip() for x in line.split(";")]
        if f[1] == "Full_Composition_Exclusion":
            a, b = parse_range(f[0])
            excluded.update(range(a, b + 1))

    out = ["/* " + BEGIN + " (tests/gen_unicode_tables.py, Unicode %s; `make unicode-tables`) */" % version]
    out += ["#define CLLM__UNICODE_VERSION \"%s\"" % version]
    out += emit_numbers("cllm__uni_class_table", "uint32_t", [s << 3 | v for s, v in breakpoints(cls)],
                        "\\p{L} \\p{N} \\s: start << 3 | bits (1 letter L*, 2 number N*, 4 White_Space) until the next")
    out += emit_numbers("cllm__uni_ccc_table", "uint32_t", [s << 8 | v for s, v in breakpoints(ccc)],
                        "canonical combining class: start << 8 | ccc until the next start")
    flat = []
    for cp, a, b in decomp:
        flat += [cp | (0x80000000 if cp in excluded and b else 0), a, b]
    out += emit_numbers("cllm__uni_decomp", "uint32_t", flat,
                        "{cp + 2^31 if a pair excluded from composition, first, second (0 = singleton)}, sorted by cp")
    out.append("/* " + END + " */")

    with open(header, encoding="utf-8") as f:
        text = f.read()
    pat = re.compile(r"^/\* " + BEGIN + r".*?^/\* " + END + r" \*/$", re.S | re.M)
    if not pat.search(text):
        sys.exit("%s: no '%s' ... '%s' block to replace" % (header, BEGIN, END))
    text = pat.sub(lambda m: "\n".join(out), text, count=1)
    with open(header + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(header + ".tmp", header)
    print("%s: Unicode %s tables: %d class breakpoints, %d ccc breakpoints, %d decompositions" %
          (header, version, len(breakpoints(cls)), len(breakpoints(ccc)), len(decomp)))


if __name__ == "__main__":
    main()
