#!/usr/bin/python3
"""Reference cases for the online trainers of collabllm.h, in PyTorch float64, written here from the formulas in
TRL v0.19.1 (not copied).

1. The GRPO token-level loss of GRPOTrainer.compute_loss (trl/trainer/grpo_trainer.py), with gradients from
   autograd:

    r = exp(logp - old),  l = -min(r A, clamp(r, 1 - eps_low, 1 + eps_high) A) + beta k3,
    k3 = exp(ref - logp) - (ref - logp) - 1,
    grpo:    mean over sequences of (sum_t l m / max(sum_t m, 1))
    bnpo:    sum l m / max(sum m, 1)
    dr_grpo: sum l m / (B * max_completion_length)

2. PPOTrainer.train's statistics of a padded rollout (trl/trainer/ppo_trainer.py, trl/trainer/utils.py forward) on
   the tiny checkpoint tests/data/golden/qwen2_bias, with its forward from gen_golden.py: queries left-padded and
   responses right-padded with pad_token_id to the longest in the rollout; the training forward masks every pad
   (attention_mask = ids != pad), gives it id 0 and position ids cumsum(mask) - mask; then
     policy/entropy_avg  = mean over every row and response slot, pads included, of the entropy of
                           logits[:, context - 1 : -1] / T   (TRL divides by T + 1e-7; collabllm.h and this file by T)
     val/num_eos_tokens  = (responses == eos_token_id).sum()
   and collabllm.h's own policy/entropy_response_avg, the mean over the trained slots t <= sequence end. Two
   cases: pad != eos, and pad == eos (CollabLLM's setting: the eos is masked like a pad).

Run from the repository root with Debian's python (torch 1.13):

    /usr/bin/python3 tests/gen_online.py

It (re)writes tests/data/objectives/grpo_loss.json and ppo_stats.json ({"generator", "cases"}); output is
deterministic (fixed seeds). tests/test_online.c reads them.
"""
import json
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as gg  # noqa: E402  (the model forward and the safetensors reader)

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


GOLDEN = os.path.join("tests", "data", "golden", "qwen2_bias")


def ppo_stats_case(cfg, P, pad_id, eos_id, temperature, gen):
    """One rollout of 4 rows: responses that end with eos at different lengths, one that fills the width without
    an eos, and (pad != eos) one whose eos is its last slot; every prompt and response token avoids pad and eos."""
    V = cfg["vocab_size"]
    normal = [i for i in range(V) if i not in (pad_id, eos_id)]

    def ids(n):
        return [normal[int(i)] for i in torch.randint(0, len(normal), (n,), generator=gen)]

    L = 7
    prompts = [ids(n) for n in (5, 3, 4, 6)]
    responses = [ids(3) + [eos_id], ids(L), ids(1) + [eos_id], ids(L - 1) + [eos_id]]
    ctx = max(len(p) for p in prompts)
    rows = [[pad_id] * (ctx - len(p)) + p + r + [pad_id] * (L - len(r)) for p, r in zip(prompts, responses)]
    qr = torch.tensor(rows)
    mask = qr != pad_id
    position_ids = mask.long().cumsum(1) - mask.long()
    logits = gg.forward(cfg, P, qr.masked_fill(~mask, 0), mask.long(), position_ids)[:, ctx - 1:-1] / temperature
    entropy = torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)      # (B, L)
    resp = qr[:, ctx:]
    # TRL's sequence end: truncate after the first eos (stop_token "eos"), then the index before the first pad
    seq_end = []
    for r in resp.tolist():
        cut = r[:r.index(eos_id) + 1] + [pad_id] * (L - r.index(eos_id) - 1) if eos_id in r else r
        seq_end.append((cut.index(pad_id) if pad_id in cut else L) - 1)
    trained = torch.tensor([[1.0 if t <= e else 0.0 for t in range(L)] for e in seq_end])
    return {"pad_id": pad_id, "eos_id": eos_id, "temperature": temperature, "L": L, "prompts": prompts,
            "responses": responses, "seq_end": seq_end, "entropy": lst(entropy),
            "entropy_avg": float(entropy.mean()),
            "entropy_response_avg": float((entropy * trained).sum() / trained.sum()),
            "num_eos_tokens": int((resp == eos_id).sum())}


def write(name, cases):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump({"generator": "tests/gen_online.py (torch %s, float64)" % torch.__version__, "cases": cases}, f)
        f.write("\n")
    print("wrote %s: %d cases" % (path, len(cases)))


def main():
    rng = random.Random(20250702)
    write("grpo_loss.json", [grpo_loss_case(rng, lt, beta) for lt in ("bnpo", "grpo", "dr_grpo")
                             for beta in (0.0, 0.04) for _ in range(10)])
    cfg = json.load(open(os.path.join(GOLDEN, "config.json")))
    st, _ = gg.st_read(os.path.join(GOLDEN, "model.safetensors"))
    P = {n: torch.from_numpy(st[n][0].astype(np.float64)) for n in st}
    gen = torch.Generator().manual_seed(16)
    write("ppo_stats.json", [ppo_stats_case(cfg, P, 3, cfg["eos_token_id"], 0.7, gen),
                             ppo_stats_case(cfg, P, cfg["eos_token_id"], cfg["eos_token_id"], 1.0, gen)])


if __name__ == "__main__":
    main()
