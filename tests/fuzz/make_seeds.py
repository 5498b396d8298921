#!/usr/bin/python3
"""make_seeds.py [TARGET...] - writes the seed corpora of the fuzz targets added for issue 9 and of
the tiktoken targets into tests/fuzz/corpus/<name>/ from files already committed (test tokenizers,
data_fmt examples, tests/data cases), plus a few hand-written edge cases. Name the targets to
write only those: a corpus that fuzzing has grown (tokenizer_encode) is otherwise replaced. Run
from the repository root; the output is committed, so `make fuzz` needs no Python. Targets whose
byte 0 selects a setup get one seed per setup."""
import json, os, re, sys

ROOT = os.getcwd()
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
TOK = os.path.join(ROOT, "tests", "data", "tokenizers")


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


ONLY = set(sys.argv[1:])


def write(name, seeds):
    if ONLY and name not in ONLY:
        return
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    for i, s in enumerate(seeds):
        with open(os.path.join(d, "seed%02d" % i), "wb") as f:
            f.write(s if isinstance(s, bytes) else s.encode("utf-8"))


def jsonl_lines(path):
    return [l for l in read(path).split(b"\n") if l.strip()]


def trimmed_tokenizer(name, keep):
    """The tokenizer with only ids < keep (and the added tokens) and the merges among them:
    small inputs the fuzzer can mutate quickly."""
    t = json.loads(read("tests/data/tokenizers/%s/tokenizer.json" % name))
    vocab = {k: v for k, v in t["model"]["vocab"].items() if v < keep}
    merges = []
    for m in t["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    t["model"]["vocab"] = vocab
    t["model"]["merges"] = merges
    top = max(vocab.values()) + 1
    for i, a in enumerate(t["added_tokens"]):
        a["id"] = top + i
    if t.get("post_processor") and "processors" in t["post_processor"]:
        for p in t["post_processor"]["processors"]:
            for s in p.get("special_tokens", {}).values():
                s["ids"] = [top]
    return json.dumps(t, ensure_ascii=False, separators=(",", ":"))


NAMES = ["gpt2", "gpt2_prefix", "llama3_style", "qwen2_style", "smollm2"]

# tokenizer.json
seeds = [read("tests/data/tokenizers/%s/tokenizer.json" % n) for n in NAMES]
seeds += [trimmed_tokenizer(n, 300) for n in NAMES]
seeds += [trimmed_tokenizer("qwen2_style", 270), trimmed_tokenizer("llama3_style", 258)]
write("tokenizer_json", seeds)

# tokenizer_config.json: byte 0 = base (0 llama3_style, 1 qwen2_style, 2 smollm2)
configs = {0: read("tests/data/tokenizers/llama3_style/tokenizer_config.json"),
           1: read("tests/data/tokenizers/qwen2_style/tokenizer_config.json"),
           2: read("tests/data/tokenizers/smollm2/tokenizer_config.json")}
seeds = [bytes([b]) + c for b, c in configs.items()]
plain = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
seeds.append(bytes([1]) + json.dumps({"eos_token": {"content": "<|im_end|>", "special": True}, "chat_template": plain}).encode())
seeds.append(bytes([1]) + json.dumps({"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": plain}]}).encode())
seeds.append(bytes([1]) + json.dumps({"bos_token": None, "chat_template": "<|im_start|> enable_thinking reasoning_content last_query_index"}).encode())
seeds.append(bytes([0]) + json.dumps({"bos_token": "<|begin_of_text|>", "chat_template":
    "<|start_header_id|><|end_header_id|> bos_token + content message['content'] | trim {% if add_generation_prompt %}"}).encode())
seeds.append(bytes([0]) + json.dumps({"chat_template": "<|start_header_id|><|end_header_id|> bos_token + content message['content'] | trim"}).encode())
seeds.append(bytes([2]) + json.dumps({"add_bos_token": True, "pad_token": "<|endoftext|>", "chat_template": 7}).encode())
write("tokenizer_config", seeds)

# encode / decode: byte 0 = tokenizer (0..4) + 5 * add_special + 10 * skip_special
texts = ["Hello world", "  leading and trailing  \n\n", "caf\u00e9 cafe\u0301 \u212b \u1e9b\u0323 \uac00\u11a8",
         "1234567 digits 3.14159", "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>", "a <mask> b <mask>c",
         "<|begin_of_text|><|start_header_id|>x<|end_header_id|>\n\ny<|eot_id|>", "<think>\nreasoning\n</think>\n\nok",
         "\u4e2d\u6587\u6587\u672c \U0001F600\U0001F44D\U0001F3FD", "don't I'LL we've 's", "\t\r\n \u00a0\u2003\u3000x",
         "\u0915\u094d\u0937 \u0627\u0644\u0639\u0631\u0628\u064a\u0629"]
seeds = []
for i, t in enumerate(texts):
    seeds.append(bytes([i % 5 + 5 * (i // 5 % 4)]) + t.encode("utf-8"))
seeds.append(bytes([3]) + b"\xff\xfe invalid \xc3")
write("tokenizer_encode", seeds)

# chat rendering: byte 0 = setup (0..4) + 5 * add_generation_prompt + 10 * enable_thinking + 20 * date
convs = [json.loads(l)["messages"] for l in jsonl_lines("data_fmt/sft.example.jsonl")]
convs += [json.loads(l)["messages"] for l in jsonl_lines("data_fmt/train_sft.example.jsonl")[:2]]
convs.append([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
              {"role": "user", "content": "<tool_response>x</tool_response>"}, {"role": "assistant", "content": "\n\nok\n"}])
convs.append([{"role": "system", "content": "  sys  "}, {"role": "tool", "content": "t"}, {"role": "ipython", "content": "p"}])
convs.append([])
seeds = [bytes([i % 5 + 5 * (i % 2) + 10 * (i // 2 % 2) + 20 * (i // 4 % 2)]) + json.dumps(c).encode() for i, c in enumerate(convs * 2)]
write("chat_render", seeds)

# chat-completions response bodies (the fuzz target's fake key is sk-FUZZ0secret1KEY2zq7)
ok = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"},
      "finish_reason": "stop"}], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
seeds = [json.dumps(ok), json.dumps(ok)[:40], "",
         json.dumps({"error": {"message": "Incorrect API key provided: sk-FUZZ0secret1KEY2zq7", "type": "invalid_request_error"}}),
         json.dumps({"error": "model not found"}), json.dumps({"detail": "Not Found"}),
         json.dumps({"choices": [{"message": {"content": None}}]}), json.dumps({"choices": []}),
         json.dumps({"choices": [{"message": {"content": "x"}, "finish_reason": "length" * 10}], "usage": {"prompt_tokens": -3, "total_tokens": 1e12}}),
         "<html>502 Bad Gateway sk-FUZZ0secret1KEY2zq7</html>", "data: {\"choices\": []}\n\ndata: [DONE]"]
# issue 13: the key in content (plain and \\u-escaped), invalid UTF-8, lone surrogates, \\u0000,
# content as parts, tool_calls only, finish_reason length and content_filter, deep nesting
def reply(content, finish="stop"):
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]}
seeds += [json.dumps(reply("your key: sk-FUZZ0secret1KEY2zq7, again sk-FUZZ0sec")),
          json.dumps(reply("sk-FUZZ0secret1KEY2zq7")).replace("FUZZ0", "\\u0046UZZ0").replace("KEY2", "K\\u0045Y2"),
          b'{"choices": [{"message": {"content": "caf\xc3 \xff\xfe \xe2\x82 end"}, "finish_reason": "stop"}]}',
          '{"choices": [{"message": {"content": "a\\ud800b\\udc00c\\ud83d\\ude00"}}]}',
          '{"choices": [{"message": {"content": "kept\\u0000lost"}}], "id": "x\\u0000y"}',
          json.dumps(reply([{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}])),
          json.dumps(reply([{"type": "image_url", "image_url": {"url": "x"}}])),
          json.dumps({"choices": [{"message": {"content": None, "tool_calls": [{"id": "c"}]},
                                   "finish_reason": "tool_calls"}]}),
          json.dumps(reply("cut off", "length")), json.dumps(reply("", "content_filter")),
          json.dumps({"choices": [{"message": {"content": None, "refusal": "no: sk-FUZZ0secret1KEY2zq7"}}]}),
          "[" * 2000 + "]" * 2000]
write("client_response", seeds)

# model replies: lenient JSON cases, simulator answers, verdicts
seeds = [json.loads(l)["input"] for l in jsonl_lines("tests/data/lenient_json/cases.jsonl")]
seeds += ['{"current_answer": "none yet", "thought": "t", "response": "  [[TERMINATE CHAT]]  "}', "[[TERMINATE CHAT]]",
          '{"thought": "ok", "interactivity": 0.75}', '{"thought": "ok", "accuracy": "1"}', '{"interactivity": {"score": 1.5}}',
          '```json\n{"final_completion": "def f():\\n    return 1"}\n```', '{"final_answer": ""}', "{'accuracy': True}"]
# issue 13: the key in the reply (plain, cut, \\u-escaped), \\u0000, lone surrogates
seeds += ["sk-FUZZ0secret1KEY2zq7 is not JSON", "x" * 52 + "sk-FUZZ0secret1KEY2zq7",
          '{"thought": "sk-FUZZ0secret1KEY2zq7", "response": "\\u0073k-FUZ\\u005a0sec\\u0072et1K\\u0045Y2zq7"}',
          '{"final_completion": "s\\u006b-FUZZ\\u0030secr\\u0065t1KE\\u0059"}', '{"response": "a\\u0000b"}',
          '{"response": "a\\ud800b", "interactivity": 0.5}']
write("lenient_json", seeds)

# JSONL files
write("tasks_jsonl", [read("data_fmt/task.example.jsonl"), jsonl_lines("data_fmt/task.example.jsonl")[0],
                      b'{"single_turn_prompt": "p", "single_turn_completion": {"test": "t"}}\n\n{"single_turn_prompt": "q"}\r\n',
                      b'{"single_turn_prompt": 5}\n'])
recs = [json.loads(l) for l in jsonl_lines("data_fmt/records.example.jsonl")]
seeds = [read("data_fmt/records.example.jsonl")]
torn = "\n".join(json.dumps(r) for r in recs) + "\n" + json.dumps(recs[0])[:50]
seeds.append(torn.encode())
small = [{"prompt": [{"role": "user", "content": "u"}], "completion": c, "conv_id": i // 2, "turn_id": 1, "score": s, "task_rows": 2}
         for i, (c, s) in enumerate([("a", 0.9), ("b", 0.1), ("c", None), ("d", 0.5), ("e", 0.5), ("f", 0.52)])]
seeds.append("\n".join(json.dumps(r) for r in small).encode())
write("records_jsonl", seeds)

sft = [read("data_fmt/sft.example.jsonl"), read("data_fmt/train_sft.example.jsonl")]
write("sft_jsonl", [bytes([b]) + s for b in (0, 1, 2, 61, 190) for s in sft])
dpo = [read("data_fmt/dpo.example.jsonl"), read("data_fmt/train_dpo.example.jsonl"), read("tests/data/train/dpo_pairs.jsonl")]
write("dpo_jsonl", [bytes([b]) + s for b in (0, 1, 2, 4, 191) for s in dpo])

# `collabllm ref`: every ref-input block of data_fmt/ref.md
names = ["dpo", "gae", "ppo-loss", "ppo-rewards", "grpo", "adamw", "bleu"]
doc = read("data_fmt/ref.md").decode("utf-8")
seeds = [bytes([names.index(m.group(1))]) + m.group(2).encode() for m in re.finditer(r"```json ref-input (\S+)[^\n]*\n(.*?)\n```", doc, re.S)]
write("ref_json", seeds)
# tiktoken rank files (byte 0: the encoding) and texts for the small rank file (byte 0: the
# pattern and skip_special)
small = read("tests/data/tiktoken/small.tiktoken")
lines = small.split(b"\n")
head = b"\n".join(lines[:256]) + b"\n"                    # the 256 single bytes
seeds = [bytes([b]) + small for b in range(4)]
seeds += [
    b"\x00" + head,
    b"\x00" + head.replace(b"\n", b"\r\n") + b"\n\n",       # CR LF, empty lines
    b"\x01" + head + b"YWI= 256\nYWI= 257\n",                 # a token twice
    b"\x01" + head + b"YWI= 256\nYWM= 256\n",                 # a rank twice
    b"\x01" + head + b"YWI= 258\n",                           # a gap
    b"\x01" + head + b"YWJ= 256\n",                           # non-canonical base64
    b"\x01" + b"\n".join(lines[:255]) + b"\n",                # a byte missing
    b"\x02" + head + b"YWI= 99999999\n",                      # a huge rank
    b"\x03" + head + b"YWI= 50281\n",                         # a special id (p50k_edit)
]
write("tiktoken_file", seeds)
rows = [json.loads(l) for l in jsonl_lines("tests/data/tiktoken/small_expected.jsonl")]
texts = [r["text"].encode("utf-8") for r in rows[::8] if len(r["text"]) < 500]
seeds = [bytes([k % 4]) + t for k, t in enumerate(texts)]
seeds += [b"\x00ab\xffcd", b"\x01\xe6\x97", b"\x02<|endoftext|>\x01\x02", b"\x03" + b"a" * 300]
write("tiktoken_encode", seeds)
print("seed corpora written to", OUT)
