"""adamw.py - AdamW steps with gradient clipping, collabllm ref adamw against torch.optim.AdamW after
torch.nn.utils.clip_grad_norm_ (the HF Trainer's order: clip, then step).

collabllm side:  build/collabllm ref adamw   ("max_grad_norm" clips each step's gradient; data_fmt/ref.md)
Python side:     torch itself: clip_grad_norm_(params, max_grad_norm), then AdamW.step(), three steps, float32.
Tolerance:       1e-6 relative (the library keeps parameters and moments in float32, as torch does here).
Run from the repository root: /usr/bin/python3 examples/verify/adamw.py  (data_fmt/verify.md)."""
import torch

from hf_ref import Checker, arguments, ref

args = arguments(__doc__, ["sign"])
g = torch.Generator().manual_seed(19)
n, steps, lr, wd, max_norm = 16, 3, 1e-2, 0.01, 1.0
start = torch.randn(n, generator=g)
grads = torch.randn(steps, n, generator=g) * torch.tensor([3.0, 0.1, 2.0])[:, None]   # clipped, not, clipped
p = torch.nn.Parameter(start.clone())
opt = torch.optim.AdamW([p], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
params, norms = [], []
for s in range(steps):
    p.grad = grads[s].clone() * (-1 if args.inject == "sign" else 1)
    norms.append(float(torch.nn.utils.clip_grad_norm_([p], max_norm)))
    opt.step()
    params.append(p.detach().clone())

ours = ref("adamw", {"params": start.tolist(), "grads": grads.tolist(), "lr": lr, "weight_decay": wd,
                     "betas": [0.9, 0.999], "eps": 1e-8, "max_grad_norm": max_norm})
check = Checker("adamw")
check.same("grad_norm (before clipping)", ours["grad_norm"], norms, 1e-6, 1e-7)
check.same("params after each step", ours["params"], torch.stack(params), 1e-6, 1e-7)
check.done()
