#!/usr/bin/python3
"""Reference cases for the online trainers of collabllm.h: the GRPO token-level loss of TRL
v0.19.1's GRPOTrainer.compute_loss, in PyTorch float64, written here from the formulas in
trl/trainer/grpo_trainer.py (not copied), with gradients from autograd:

    r = exp(logp - old),  l = -min(r A, clamp(r, 1 - eps_low, 1 + eps_high) A) + beta k3,
    k3 = exp(ref - logp) - (ref - logp) - 1,
    grpo:    mean over sequences of (sum_t l m / max(sum_t m, 1))
    bnpo:    sum l m / max(sum m, 1)
    dr_grpo: sum l m / (B * max_completion_length)

Run from the repository root with Debian's python (torch 1.13):

    /usr/bin/python3 tests/gen_online.py

It (re)writes tests/data/objectives/grpo_loss.json ({"generator", "cases"}); output is
deterministic (fixed seeds). tests/test_online.c reads it.
"""
import json
import os
import random

import torch

torch.set_default_dtype(torch.float64)
OUT = os.path.join("tests", "data", "objectives")


def lst(x):
    return [float(v) for v in x.detach().reshape(-1).tolist()] if x.dim() == 1 else [lst(r) for r in x]


def grpo_loss_case(rng, loss_type, beta):
    B, T = rng.randint(1, 4), rng.randint(1, 6)
    logp = torch.tensor([[rng.uniform(-4, -0.05) for _ in range(T)] for _ in range(B)], requires_grad=True)
    # old log-probs within +-0.5 of the new ones: some ratios fall outside [1 - 0.2, 1 + 0.28]
    old = logp.detach() + torch.tensor([[rng.uniform(-0.5, 0.5) for _ in range(T)] for _ in range(B)])
    ref = logp.detach() + torch.tensor([[rng.uniform(-1, 1) for _ in range(T)] for _ in range(B)])
    adv = torch.tensor([rng.uniform(-2, 2) for _ in range(B)])
    lens = [rng.randint(0 if b else 1, T) for b in range(B)]           # trailing padding; a row may be empty
    mask = torch.tensor([[1.0 if t < lens[b] else 0.0 for t in range(T)] for b in range(B)])
    eps_low, eps_high, max_len = 0.2, 0.28, T + 2
    r = torch.exp(logp - old)
    l1, l2 = r * adv[:, None], torch.clamp(r, 1 - eps_low, 1 + eps_high) * adv[:, None]
    per_token = -torch.min(l1, l2)
    x = ref - logp
    k3 = torch.exp(x) - x - 1
    if beta != 0:
        per_token = per_token + beta * k3
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        loss = (per_token * mask).sum() / (B * max_len)
    loss.backward()
    region = ((r < 1 - eps_low) & (adv[:, None] < 0)) | ((r > 1 + eps_high) & (adv[:, None] > 0))
    msum = mask.sum().clamp(min=1.0)
    return {
        "loss_type": loss_type, "beta": beta, "eps_low": eps_low, "eps_high": eps_high, "max_completion_length": max_len,
        "logprobs": lst(logp), "old_logprobs": lst(old), "ref_logprobs": lst(ref), "advantages": lst(adv), "mask": lst(mask),
        "loss": float(loss), "d_logprobs": lst(logp.grad),
        "kl": float((k3 * mask).sum() / msum), "clip_ratio": float((region.double() * mask).sum() / msum),
    }


def main():
    rng = random.Random(20250702)
    cases = [grpo_loss_case(rng, lt, beta) for lt in ("bnpo", "grpo", "dr_grpo") for beta in (0.0, 0.04) for _ in range(10)]
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "grpo_loss.json")
    with open(path, "w") as f:
        json.dump({"generator": "tests/gen_online.py (torch %s, float64)" % torch.__version__, "cases": cases}, f)
        f.write("\n")
    print("wrote %s: %d cases" % (path, len(cases)))


if __name__ == "__main__":
    main()
