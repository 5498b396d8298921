#!/usr/bin/python3
"""gen_lenient_json.py - expected results for cllm_json_parse_lenient, computed by Python.

The reference reads model output the way CollabLLM's extract_json does, with Python's own parsers
as the oracle: take the whole text, then the first ```fenced``` block holding a '{'; from each '{'
try json (strict=False: raw control characters allowed, text after the object ignored); if no
region parses, evaluate the object as a Python literal (single and triple quotes, True/False/None,
trailing commas) with JSON's true/false/null bound too. A few inputs that neither Python parser
accepts but the C repair is designed for (quotes inside strings) carry hand-written expectations
marked "source": "hand".

Run:  /usr/bin/python3 tests/gen_lenient_json.py   (writes tests/data/lenient_json/cases.jsonl)
"""
import json
import os
import re
import warnings

CASES = [
    ("plain", '{"current_answer": "x", "thought": "y", "response": "z"}'),
    ("fenced", '```json\n{"a": 1}\n```'),
    ("fence without language", '```\n{"a": 1}\n```'),
    ("text around", 'Sure! Here is my answer:\n{"a": "b"}\nHope that helps.'),
    ("single quotes", "{'a': 'b', 'n': 2}"),
    ("python literals", "{'ok': True, 'bad': False, 'none': None}"),
    ("raw newline in a string", '{"a": "line1\nline2"}'),
    ("raw tab and CRLF in a string", '{"a": "x\ty\r\nz"}'),
    ("trailing commas", '{"a": 1, "b": [1, 2,],}'),
    ("triple quotes", '{"a": """multi\nline "quoted" text"""}'),
    ("apostrophe in a double-quoted string", '{"a": "don\'t"}'),
    ("escaped apostrophe in a single-quoted string", "{'a': 'it\\'s'}"),
    ("double quotes in a single-quoted string", "{'a': 'say \"hi\"'}"),
    ("a fence inside a valid JSON string", '{"code": "```python\\nprint({})\\n```"}'),
    ("second fence holds the JSON", '```python\nx = 1\n```\nand\n```json\n{"a": 2}\n```'),
    ("braces in prose before the object", 'Use {curly} style. {"a": 1}'),
    ("braces in prose after the object", '{"a": 1} and then {b}'),
    ("numeric string kept as a string", '{"interactivity": "0.8"}'),
    ("nested values", '{"a": {"score": 1}, "b": [true, null, -2.5e3]}'),
    ("unicode escapes and surrogate pairs", '{"a": "caf\\u00e9 \\ud83d\\ude00"}'),
    ("escaped backslash (LaTeX)", '{"a": "\\\\frac{1}{2}"}'),
    ("invalid escape kept literally", "{'a': '\\(x\\)'}"),
    ("object inside an array", '[{"a": 1}]'),
    ("nested single-quoted", "{'outer': {'inner': [1, 2, 'x']}}"),
    ("simulator reply, fenced, mixed quotes",
     "```json\n{\n  'current_answer': 'none yet',\n  'thought': \"I'll ask for a shorter version\",\n  'response': 'Can you make it shorter?'\n}\n```"),
    ("no object at all", "I think the answer is 42."),
    ("unterminated object", '{not json at all'),
    ("empty text", ""),
]

HAND = [
    ("unescaped quotes inside a string", '{"response": "He said "hi" to me"}', {"response": 'He said "hi" to me'}),
    ("apostrophe inside a single-quoted string", "{'response': 'I don't know'}", {"response": "I don't know"}),
]


def regions(text):
    out = [text]
    pos = 0
    while True:
        i = text.find("```", pos)
        if i < 0:
            break
        body = i + 3
        while body < len(text) and text[body] not in "\n{":
            body += 1
        j = text.find("```", body)
        end = len(text) if j < 0 else j
        if "{" in text[body:end]:
            out.append(text[body:end])
            break
        if j < 0:
            break
        pos = j + 3
    return out


def starts(s):
    return [i for i, ch in enumerate(s) if ch == "{"][:16]


def try_json(s):
    dec = json.JSONDecoder(strict=False)
    for b in starts(s):
        try:
            obj, _ = dec.raw_decode(s, b)
            if isinstance(obj, dict):
                return obj
        except ValueError:
            pass
    return None


def try_python(s):
    names = {"__builtins__": {}}
    local = {"true": True, "false": False, "null": None}
    for b in starts(s):
        for e in [i for i, ch in enumerate(s) if ch == "}" and i > b]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    obj = eval(s[b:e + 1], names, local)
                if isinstance(obj, dict):
                    return obj
            except Exception:
                pass
    return None


def reference(text):
    for parse in (try_json, try_python):
        for r in regions(text):
            obj = parse(r)
            if obj is not None:
                return obj
    return None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "data", "lenient_json", "cases.jsonl")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        for name, text in CASES:
            f.write(json.dumps({"name": name, "input": text, "expect": reference(text), "source": "python"}) + "\n")
        for name, text, expect in HAND:
            assert reference(text) is None, name      # these are only for the C repair
            f.write(json.dumps({"name": name, "input": text, "expect": expect, "source": "hand"}) + "\n")
    print("wrote", out, len(CASES) + len(HAND), "cases")


if __name__ == "__main__":
    main()
