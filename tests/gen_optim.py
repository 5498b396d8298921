#!/usr/bin/python3
"""Reference runs of torch's optimiser for collabllm.h: several parameter tensors trained for 10 steps by
torch.optim.AdamW (foreach=False: the single-tensor path torch takes for parameters off the GPU), with the
Hugging Face Trainer's two parameter groups (weight decay on the matrices only), a transformers-style
learning-rate schedule through torch.optim.lr_scheduler.LambdaLR, and torch.nn.utils.clip_grad_norm_ before
each step. The schedules' factors are written here from transformers' formulas (optimization.py,
get_{constant,linear,cosine}_schedule_with_warmup), not copied.

Run from the repository root with Debian's python (torch 1.13):

    /usr/bin/python3 tests/gen_optim.py

It (re)writes tests/data/optim/adamw.json: {"generator", "cases": [...]}, each case
    {"name", "seed", "dtype" ("float32" | "float64"), "lr" (the base rate), "schedule", "warmup", "total",
     "betas", "eps", "max_grad_norm" (0 = no clipping),
     "tensors": [{"shape", "weight_decay", "init"}],
     "steps": [{"lr" (the rate this step used), "grad_norm" (clip_grad_norm_'s return, before clipping),
                "grads": [per tensor, before clipping], "params": [per tensor, after the step]}]}
Every number is the exact value of the float32 / float64 tensor element (repr of the double). Output is
deterministic (fixed seeds). tests/test_optim.c replays the float64 cases in double, tests/test_optim_f32.c
the float32 ones in the default build.
"""
import json
import math
import os

import torch

OUT = os.path.join("tests", "data", "optim")
SHAPES = [(5, 4), (7,), (2, 3, 2), (9,)]     # not multiples of the SIMD width: torch's vector loops and tails


def schedule_factor(kind, step, warmup, total):
    """transformers' lr_lambda: a factor of the base rate at optimiser step `step` (the first update uses 0)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if kind == "constant":
        return 1.0
    progress = float(step - warmup) / float(max(1, total - warmup))
    if kind == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def values(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def run_case(name, dtype, seed, lr, kind, warmup, betas, eps, weight_decay, max_grad_norm, scales):
    gen = torch.Generator().manual_seed(seed)
    steps = len(scales)
    init = [(torch.randn(s, generator=gen, dtype=torch.float64) * 0.05).to(dtype) for s in SHAPES]
    grads = []
    for k in range(steps):
        row = []
        for s in SHAPES:
            g = torch.randn(s, generator=gen, dtype=torch.float64) * scales[k]
            if k == 3:
                g.view(-1)[::3] = 0           # some zero gradients: the moments only decay there
            row.append(g.to(dtype))
        grads.append(row)
    params = [p.clone().requires_grad_(True) for p in init]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule_factor(kind, s, warmup, steps))
    case = {"name": name, "dtype": "float32" if dtype == torch.float32 else "float64", "lr": lr, "schedule": kind,
            "warmup": warmup, "total": steps, "betas": list(betas), "eps": eps, "max_grad_norm": max_grad_norm,
            "tensors": [{"shape": list(s), "weight_decay": weight_decay if len(s) >= 2 else 0.0, "init": values(p)}
                        for s, p in zip(SHAPES, init)],
            "steps": []}
    clipped = 0
    for k in range(steps):
        for p, g in zip(params, grads[k]):
            p.grad = g.clone()
        norm = 0.0
        if max_grad_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
            exact = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads[k]))
            if max_grad_norm / (norm + 1e-6) < 1:
                clipped += 1
                if dtype == torch.float32 and float(torch.tensor(exact, dtype=dtype)) != norm:
                    return None
        used_lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        case["steps"].append({"lr": used_lr, "grad_norm": norm, "grads": [values(g) for g in grads[k]],
                              "params": [values(p) for p in params]})
    assert max_grad_norm == 0 or 0 < clipped < steps, "%s: clipping should be active on some steps only" % name
    return case


def first_case(name, dtype, seed, *args):
    """The case from the first seed >= seed whose clipped steps, in float32, have torch's norm equal to the exact
    norm rounded to float32. torch reduces the squares in float32 and can land an ulp off the exact norm, which
    collabllm.h computes (it sums them in double). An ulp in the norm is an ulp in the clip coefficient and then in
    every later value, so the float32 cases avoid it and isolate the optimiser's arithmetic. In float64 both sum in
    double, in different orders: the norms may differ in the last bit (~1e-16), which the test tolerates."""
    while True:
        case = run_case(name, dtype, seed, *args)
        if case is not None:
            case["seed"] = seed
            return case
        seed += 1


def main():
    torch.set_num_threads(1)
    scales = [0.02, 0.3, 2.0, 0.05, 1.0, 0.01, 3.0, 0.2, 0.5, 0.03]   # norms around 0.1 to 20: clipped or not
    cases = [
        first_case("float32, cosine with 2 warmup steps, weight decay 0.1, clip 1", torch.float32, 1, 1e-2, "cosine",
                 2, (0.9, 0.999), 1e-8, 0.1, 1.0, scales),
        first_case("float32, linear, betas (0.8, 0.99), eps 1e-6, no clipping", torch.float32, 2, 3e-3, "linear", 0,
                 (0.8, 0.99), 1e-6, 0.01, 0.0, scales[::-1]),
        first_case("float64, cosine with 2 warmup steps, weight decay 0.1, clip 1", torch.float64, 3, 1e-2, "cosine",
                 2, (0.9, 0.999), 1e-8, 0.1, 1.0, scales),
        first_case("float64, constant after 3 warmup steps, betas (0.9, 0.95), clip 0.5", torch.float64, 4, 5e-3,
                 "constant", 3, (0.9, 0.95), 1e-8, 0.05, 0.5, scales[::-1]),
    ]
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "adamw.json")
    with open(path, "w") as f:
        json.dump({"generator": "tests/gen_optim.py (torch %s, AdamW foreach=False)" % torch.__version__,
                   "cases": cases}, f)
        f.write("\n")
    print("wrote %s: %d cases" % (path, len(cases)))


if __name__ == "__main__":
    main()
