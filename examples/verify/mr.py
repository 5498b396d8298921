"""mr.py - the multiturn-aware reward of given futures, collabllm mr --given against CollabLLM's formulas.

collabllm side:  build/collabllm mr --given --input FUTURES.jsonl --variant paper|weighted --metrics ... --lambda L
                 (each candidate brings its simulated sessions and metric values; no endpoint is called)
Python side:     v1 (the paper, microsoft/CollabLLM c41bc29): per future R* = sum_m w_m metric_m - min(lambda N, 1),
                 N the tokens of the candidate and the future, both roles, joined by "\\n";
                 v2 (09e5b25): R* = sum_m w_m metric_m with token_amount = tokens of the session's assistant
                 messages joined by " ", / 1000. MR = the mean of R* over the futures, std the population std.
                 Tokens are whitespace words here (collabllm's --token-counter words); CollabLLM counts with
                 tiktoken's cl100k_base: change count_tokens below and pass --token-counter cl100k_base.tiktoken.
Tolerance:       1e-12 relative (both in float64; CollabLLM v1 stores MR as float32, 6e-8 relative).
Run from the repository root: /usr/bin/python3 examples/verify/mr.py  (data_fmt/verify.md)."""
import json
import os
import statistics
import tempfile

from hf_ref import Checker, arguments, collabllm

args = arguments(__doc__, ["sign", "mean"])


def count_tokens(text):
    return len(text.split())      # CollabLLM: len(tiktoken.get_encoding("cl100k_base").encode(text, disallowed_special=()))


history = [{"role": "user", "content": "Solve x + 2 = 5."}]
user, asst = "user", "assistant"
candidates = [
    ("Do you want the steps or only the answer?",
     [[(user, "Only the answer please."), (asst, "x = 3")],
      [(user, "Steps please."), (asst, "Subtract 2 from both sides: x = 5 - 2 = 3."), (user, "Thanks!")],
      [(user, "[[TERMINATE CHAT]]")]],
     {"accuracy": [1, 1, 0], "interactivity_v1": [1, 2 / 3, 1 / 3], "interactivity": [1, 0.8, 0.2]}),
    ("x = 3. " + "This follows by subtracting two from each side of the equation. " * 40,
     [[(user, "ok"), (asst, "Anything else?")], [(user, "[[TERMINATE CHAT]]")], [(user, "why?"), (asst, "Because.")]],
     {"accuracy": [1, 1, 1], "interactivity_v1": [1 / 3, 1 / 3, 2 / 3], "interactivity": [0.1, 0.0, 0.4]}),
]
modes = {   # collabllm flags, weights (the fidelity table's values for math; data_fmt/fidelity.md)
    "v1": (["--variant", "paper", "--lambda", "5e-4", "--metrics", "accuracy:1,interactivity_v1:1"],
           {"accuracy": 1, "interactivity_v1": 1}),
    "v2": (["--variant", "weighted", "--metrics", "accuracy:1,interactivity:0.5,token_amount:-0.5"],
           {"accuracy": 1, "interactivity": 0.5, "token_amount": -0.5}),
}
items = {"history": history, "candidates": []}
for completion, futures, metrics in candidates:
    sessions = [history + [{"role": asst, "content": completion}] + [{"role": r, "content": c} for r, c in f]
                for f in futures]
    items["candidates"].append({"completion": completion, "sessions": sessions, "rewards": metrics})

check = Checker("mr")
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "futures.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps(items) + "\n")
    for mode, (flags, weights) in modes.items():
        ours = json.loads(collabllm("mr", "--given", "--input", path, "--token-counter", "words", *flags))
        for i, cand in enumerate(items["candidates"]):
            rewards = []
            for s, session in enumerate(cand["sessions"]):
                values = dict((m, v[s]) for m, v in cand["rewards"].items())
                assistant_text = " ".join(m["content"] for m in session if m["role"] == asst)
                values["token_amount"] = count_tokens(assistant_text) / 1000
                terms = [w * values[m] for m, w in weights.items()]
                r = statistics.fmean(terms) if args.inject == "mean" else sum(terms)
                if mode == "v1":
                    tokens = count_tokens("\n".join(m["content"] for m in session[len(history):]))
                    r += (1 if args.inject == "sign" else -1) * min(5e-4 * tokens, 1)
                rewards.append(r)
            got = ours["candidates"][i]
            check.same("%s candidate %d R* per future" % (mode, i), got["rewards"]["MR"], rewards, 1e-12, 1e-15)
            check.same("%s candidate %d MR" % (mode, i), got["score"], statistics.fmean(rewards), 1e-12, 1e-15)
            check.same("%s candidate %d std" % (mode, i), got["std"], statistics.pstdev(rewards), 1e-9, 1e-12)
check.done()
