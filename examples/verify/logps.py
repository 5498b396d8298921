"""logps.py - per-token and summed log-probs of a checkpoint, collabllm dump against HF semantics.

collabllm side:  build/collabllm dump --model DIR --input ROWS.jsonl --out OUT.safetensors
Python side:     HF's causal LM with right padding, log_softmax(logits[t-1])[labels[t]], summed per row (TRL),
                 and ForCausalLMLoss (the mean over every counted token of the batch).
Tolerance:       1e-5 relative (collabllm computes in float32; this script in float64).
Run from the repository root: /usr/bin/python3 examples/verify/logps.py  (data_fmt/verify.md)."""
import json
import os
import tempfile

import torch

from hf_ref import Checker, arguments, collabllm, forward, load_model, pad_right, read_safetensors, sequence_logps, \
    token_logps

args = arguments(__doc__, ["sign", "mean", "shift"], model="tests/data/golden/llama_gqa_tied",
                 rows="tests/data/golden/llama_gqa_tied/batch.jsonl")
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "out.safetensors")
    collabllm("dump", "--model", args.model, "--input", args.rows, "--out", out)
    ours = read_safetensors(out)

with open(args.rows) as f:
    rows = [json.loads(line) for line in f if line.strip()]
ids, mask, labels = pad_right(rows)
model = load_model(args.model)          # transformers: AutoModelForCausalLM.from_pretrained(..., torch.float64)
with torch.no_grad():
    logits = forward(model, ids, mask)
tok = token_logps(logits, labels, args.inject)
seq = sequence_logps(tok, labels, args.inject)
loss = -tok.sum() / (labels[:, 1:] != -100).sum()
if args.inject == "sign":
    tok, seq, loss = -tok, -seq, -loss

check = Checker("logps")
check.same("logits", ours["logits"], logits, 1e-5, 1e-5)
check.same("token_logps", ours["token_logps"], tok, 1e-5, 1e-5)
check.same("logps (summed per row)", ours["logps"], seq, 1e-5, 1e-5)
check.same("loss (ForCausalLMLoss)", ours["loss"], loss, 1e-5, 1e-5)
check.done()
