#!/usr/bin/python3
"""Reference values for collabllm.h's trainers (independent PyTorch oracle, float64).

Run from the repository root with Debian's python (torch 1.13):

    /usr/bin/python3 tests/gen_train.py

It (re)writes tests/data/train/:

dpo_pairs.jsonl        3 preference pairs as token ids for the tiny checkpoint
                       tests/data/golden/qwen2_bias (biases, untied head):
                       {"chosen_ids", "rejected_ids", "n_prompt", "ref_chosen_logps",
                        "ref_rejected_logps"}; both sequences start with the same n_prompt
                       prompt tokens, every later token is a completion token (a target).
dpo_expected.safetensors  (all F32)
    logps [6]                 summed completion log-probs of the policy, chosen rows then
                              rejected rows (TRL: sum over completion tokens of
                              log_softmax(logits[t-1])[ids[t]])
    <case>.loss []            the DPO loss (mean over the 3 pairs)
    <case>.rewards_chosen [3], <case>.rewards_rejected [3]
    <case>.grad.<tensor> ...  d loss / d tensor for every checkpoint tensor
  cases: "sigmoid"  loss_type sigmoid, beta 0.1, label_smoothing 0.1 (cDPO)
         "ipo"      loss_type ipo, beta 0.5: logps divided by the completion length (TRL
                    v0.19 concatenated_forward does this for the policy and the reference)
tiny_qwen2/            a random qwen2 checkpoint (vocab 1461 = tests/data/tokenizers/qwen2_style)
                       for training runs on chat-template data (the CLI test and the resume
                       tests); the weights are N(0, 0.02) / ones, as HF initialises them.

The model forward is gen_golden.forward (HF Llama/Qwen2 semantics, float64). The DPO math
follows TRL v0.19.1 dpo_trainer.dpo_loss, written here from the formulas (not copied):
  z = (pc - pr) - (rc - rr)
  sigmoid: -(1-e) logsigmoid(beta z) - e logsigmoid(-beta z);  ipo: (z - 1/(2 beta))^2
  rewards_chosen = beta (pc - rc), rewards_rejected = beta (pr - rr).
Deterministic: re-running gives byte-identical files.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as gg  # noqa: E402  (forward, safetensors reader/writer)

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
OUT = os.path.join("tests", "data", "train")
GOLDEN = os.path.join("tests", "data", "golden", "qwen2_bias")


def load_golden():
    cfg = json.load(open(os.path.join(GOLDEN, "config.json")))
    st, _ = gg.st_read(os.path.join(GOLDEN, "model.safetensors"))
    names = sorted(st)
    P = {n: torch.from_numpy(st[n][0].astype(np.float64)).requires_grad_(True) for n in names}
    return cfg, P, names


def make_pairs(cfg, gen):
    V = cfg["vocab_size"]
    shapes = [(5, 4, 5), (3, 6, 2), (6, 2, 4)]       # prompt, chosen, rejected lengths
    pairs = []
    for p, c, r in shapes:
        prompt = torch.randint(1, V, (p,), generator=gen).tolist()
        pairs.append({"n_prompt": p,
                      "chosen_ids": prompt + torch.randint(1, V, (c,), generator=gen).tolist(),
                      "rejected_ids": prompt + torch.randint(1, V, (r,), generator=gen).tolist()})
    return pairs


def completion_logps(cfg, P, rows):
    """rows: list of (ids, n_prompt), or of (ids, targets) with a 0/1 per id. Right-padded
    batch; per-row summed completion logps and the number of completion tokens."""
    B, T = len(rows), max(len(ids) for ids, _ in rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    am = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T)
    for b, (x, p) in enumerate(rows):
        ids[b, :len(x)] = torch.tensor(x)
        am[b, :len(x)] = 1
        if isinstance(p, list):
            mask[b, :len(x)] = torch.tensor(p, dtype=torch.float64)
        else:
            mask[b, p:len(x)] = 1.0
    logits = gg.forward(cfg, P, ids, am)
    lsm = torch.log_softmax(logits[:, :-1], dim=-1)
    tok = lsm.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
    return tok.sum(-1), mask[:, 1:].sum(-1)


def dpo(kind, beta, eps, pc, pr, rc, rr):
    z = (pc - pr) - (rc - rr)
    if kind == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * z) - eps * F.logsigmoid(-beta * z)
    else:
        losses = (z - 1 / (2 * beta)) ** 2
    return losses.mean(), beta * (pc - rc).detach(), beta * (pr - rr).detach()


def f32(t):
    return np.asarray(t.detach().numpy(), dtype=np.float32)


def tiny_model():
    d = os.path.join(OUT, "tiny_qwen2")
    os.makedirs(d, exist_ok=True)
    cfg = gg.base_config("qwen2", hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=1461,
                         max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
                         rope_scaling=None, tie_word_embeddings=True, use_sliding_window=False,
                         sliding_window=512, max_window_layers=2, bos_token_id=None,
                         eos_token_id=1458, torch_dtype="float32")
    gen = torch.Generator().manual_seed(2024)
    tensors = {}
    for name, shape in gg.param_shapes(cfg).items():
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            t = torch.ones(shape, dtype=torch.float32)
        elif name.endswith(".bias"):
            t = torch.zeros(shape, dtype=torch.float32)
        else:
            t = 0.02 * torch.randn(shape, generator=gen, dtype=torch.float32)
        tensors[name] = (t.numpy(), "F32")
    gg.st_write(os.path.join(d, "model.safetensors"), tensors)
    with open(os.path.join(d, "config.json"), "w", newline="\n") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    cfg, P, names = load_golden()
    gen = torch.Generator().manual_seed(77)
    pairs = make_pairs(cfg, gen)
    rows = [(p["chosen_ids"], p["n_prompt"]) for p in pairs] + [(p["rejected_ids"], p["n_prompt"]) for p in pairs]
    with torch.no_grad():
        base, _ = completion_logps(cfg, P, rows)
    # reference logps away from the policy's, so that z != 0 and every branch has a gradient
    noise = torch.randn(6, generator=gen, dtype=torch.float64)
    ref = (base + 2.0 * noise).tolist()
    for i, p in enumerate(pairs):
        p["ref_chosen_logps"] = float(np.float32(ref[i]))
        p["ref_rejected_logps"] = float(np.float32(ref[3 + i]))
    with open(os.path.join(OUT, "dpo_pairs.jsonl"), "w", newline="\n") as f:
        for p in pairs:
            f.write(json.dumps(p, separators=(", ", ": ")) + "\n")

    exp = {}
    for case, kind, beta, eps in (("sigmoid", "sigmoid", 0.1, 0.1), ("ipo", "ipo", 0.5, 0.0)):
        logps, n = completion_logps(cfg, P, rows)
        rc = torch.tensor([p["ref_chosen_logps"] for p in pairs])
        rr = torch.tensor([p["ref_rejected_logps"] for p in pairs])
        if kind == "ipo":
            pol, refc, refr = logps / n, rc / n[:3], rr / n[3:]
        else:
            pol, refc, refr = logps, rc, rr
        loss, cr, rj = dpo(kind, beta, eps, pol[:3], pol[3:], refc, refr)
        grads = torch.autograd.grad(loss, [P[k] for k in names])
        exp["logps"] = (f32(logps), "F32")
        exp[case + ".loss"] = (f32(loss).reshape(()), "F32")
        exp[case + ".rewards_chosen"] = (f32(cr), "F32")
        exp[case + ".rewards_rejected"] = (f32(rj), "F32")
        for k, g in zip(names, grads):
            exp[case + ".grad." + k] = (f32(g), "F32")
        print("%-8s loss %.6f  rewards chosen %s rejected %s  max|grad| %.3e" % (
            case, loss.item(), ["%.4f" % v for v in cr.tolist()], ["%.4f" % v for v in rj.tolist()],
            max(g.abs().max().item() for g in grads)))
    gg.st_write(os.path.join(OUT, "dpo_expected.safetensors"), exp)
    tiny_model()
    for root, _, files in sorted(os.walk(OUT)):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            print("%8d  %s" % (os.path.getsize(p), p))


if __name__ == "__main__":
    main()
