#!/usr/bin/python3
"""DPO on chat-template pairs in both completion-token modes, as PyTorch computes it (float64).

Run from the repository root with Debian's python (torch 1.13), after tests/gen_trl_tokens.js:

    /usr/bin/python3 tests/gen_trl_logps.py

It reads the qwen2_style lines of tests/data/train/trl_tokens.jsonl (token ids built by TRL
v0.19.1's procedure with Hugging Face's tokenizer, and by collabllm.h's default "turn" rule) and
the tiny checkpoint tests/data/train/tiny_qwen2 (vocab 1461 = the qwen2_style tokenizer), and
writes tests/data/train/trl_tokens_expected.safetensors (all F32):

    <mode>.logps [2n]          summed log-probs of the scored tokens, chosen rows then rejected
                               rows: sum over targets t of log_softmax(logits[t-1])[ids[t]]
    <mode>.grad.<tensor>       d loss / d tensor at TRL's first step: sigmoid DPO, beta 0.1, the
                               reference = the policy (z = 0), mean over the n pairs
    mode: "turn" (collabllm.h's default), "trl" (TRL >= 0.19: + the template's newline + EOS)

and prints how far the two modes are apart (logps/chosen, and the gradients' relative L2), the
numbers data_fmt/train.md quotes. Deterministic: re-running gives a byte-identical file.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as gg  # noqa: E402  (safetensors reader/writer)
import gen_train  # noqa: E402  (completion_logps: the forward and the summed scored logps)

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
DATA = os.path.join("tests", "data", "train")
BETA = 0.1


def main():
    d = os.path.join(DATA, "tiny_qwen2")
    cfg = json.load(open(os.path.join(d, "config.json")))
    st, _ = gg.st_read(os.path.join(d, "model.safetensors"))
    names = sorted(st)
    P = {k: torch.from_numpy(st[k][0].astype(np.float64)).requires_grad_(True) for k in names}
    lines = [json.loads(x) for x in open(os.path.join(DATA, "trl_tokens.jsonl"))]
    lines = [x for x in lines if x["tokenizer"] == "qwen2_style"]
    n = len(lines)
    out, grads, logps = {}, {}, {}
    for mode in ("turn", "trl"):
        rows = [(x[mode + "_" + side]["ids"], x[mode + "_" + side]["targets"])
                for side in ("chosen", "rejected") for x in lines]
        lp, _ = gen_train.completion_logps(cfg, P, rows)
        ref = lp.detach()
        z = (lp[:n] - lp[n:]) - (ref[:n] - ref[n:])
        loss = -F.logsigmoid(BETA * z).mean()
        grads[mode] = torch.autograd.grad(loss, [P[k] for k in names])
        logps[mode] = lp.detach()
        out[mode + ".logps"] = (np.asarray(lp.detach().numpy(), dtype=np.float32), "F32")
        for k, g in zip(names, grads[mode]):
            out[mode + ".grad." + k] = (np.asarray(g.numpy(), dtype=np.float32), "F32")
    gg.st_write(os.path.join(DATA, "trl_tokens_expected.safetensors"), out)
    diff = sum(((a - b) ** 2).sum() for a, b in zip(grads["trl"], grads["turn"])).sqrt()
    norm = sum((b ** 2).sum() for b in grads["turn"]).sqrt()
    print("logps/chosen  turn %.4f  trl %.4f  (x %.2f)" % (
        logps["turn"][:n].mean(), logps["trl"][:n].mean(), logps["trl"][:n].mean() / logps["turn"][:n].mean()))
    print("logps/rejected turn %.4f  trl %.4f" % (logps["turn"][n:].mean(), logps["trl"][n:].mean()))
    print("step-1 gradient: |g_trl - g_turn| / |g_turn| = %.3f" % (diff / norm))


if __name__ == "__main__":
    main()
