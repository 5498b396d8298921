#!/usr/bin/python3
"""render_jinja2.py - renders chat templates with Python's jinja2, configured as Hugging Face
transformers configures it for apply_chat_template (sandboxed, trim_blocks, lstrip_blocks,
loop controls, a tojson filter and raise_exception). It is the second, independent reference
for `make crosscheck` next to @huggingface/jinja.

stdin: JSON lines {"template": str, "context": {...}}; stdout: JSON lines {"text": str} or
{"error": str}.
"""
import json
import sys

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise ValueError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    cache = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            t = cache.get(job["template"])
            if t is None:
                t = cache[job["template"]] = env.from_string(job["template"])
            out = {"text": t.render(**job["context"])}
        except Exception as e:  # reported per job; the caller counts it as a mismatch
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
