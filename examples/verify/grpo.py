"""grpo.py - GRPO advantages and loss, collabllm ref against TRL v0.19's GRPOTrainer (verl and OpenRLHF differ only
in eps and aggregation, data_fmt/ref.md).

collabllm side:  build/collabllm ref grpo | ref grpo-loss
Python side:     advantages (r - group mean) / (group std, unbiased, + 1e-4) over groups of G samples; the loss
                 per token -min(r A, clamp(r, 1 - eps, 1 + eps) A) + beta k3, summed over the completion tokens of
                 the batch and divided by their number (TRL's "bnpo" default in v0.19).
Tolerance:       1e-12 relative (both sides in float64).
Run from the repository root: /usr/bin/python3 examples/verify/grpo.py  (data_fmt/verify.md)."""
import torch

from hf_ref import Checker, arguments, ref

args = arguments(__doc__, ["sign", "mean"])
g = torch.Generator().manual_seed(19)
G, groups, T, beta, eps = 4, 2, 5, 0.04, 0.2
B = G * groups
rewards = torch.randint(0, 3, (B,), generator=g).double() / 2          # MR-like scores with ties
mask = (torch.arange(T)[None, :] < torch.randint(1, T + 1, (B,), generator=g)[:, None]).double()
old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2
logprobs = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
ref_logprobs = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2

grouped = rewards.view(groups, G)
adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(B)
if args.inject == "sign":
    adv = -adv
ratio = torch.exp(logprobs - old)
A = adv[:, None]
per_token = -torch.min(ratio * A, torch.clamp(ratio, 1 - eps, 1 + eps) * A)
x = ref_logprobs - logprobs
per_token = per_token + beta * (torch.exp(x) - x - 1)
if args.inject == "mean":           # a mean over each sequence, then over sequences ("grpo"), for TRL's token sum
    loss = ((per_token * mask).sum(1) / mask.sum(1)).mean()
else:
    loss = (per_token * mask).sum() / mask.sum()

ours_a = ref("grpo", {"rewards": rewards.tolist(), "group_size": G, "scale_rewards": True, "eps": 1e-4})
ours_l = ref("grpo-loss", {"logprobs": logprobs.tolist(), "old_logprobs": old.tolist(),
                           "ref_logprobs": ref_logprobs.tolist(), "advantages": ours_a["advantages"],
                           "mask": mask.tolist(), "beta": beta, "epsilon": eps, "loss_type": "bnpo"})
check = Checker("grpo")
check.same("advantages", ours_a["advantages"], adv, 1e-12, 1e-15)
check.same("loss", ours_l["loss"], loss, 1e-12, 1e-15)
check.done()
