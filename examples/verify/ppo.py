"""ppo.py - one PPO rollout batch: per-token KL rewards, GAE, whitening and the clipped losses, collabllm ref against
TRL v0.19's PPOTrainer (the same formulas as verl's and OpenRLHF's, with the differences in data_fmt/ref.md).

collabllm side:  build/collabllm ref ppo-rewards | ref gae | ref ppo-loss   (JSON in, JSON out; data_fmt/ref.md)
Python side:     TRL's code path on a seeded batch of 4 responses of 6 tokens: rewards = -kl_coef (logp - ref), the
                 score after the last token; GAE backwards with V_T = 0; masked_whiten with the unbiased variance;
                 the clipped policy loss (masked mean), the clipped value loss, approxkl over every entry (unmasked).
Tolerance:       1e-12 relative (both sides in float64).
Run from the repository root: /usr/bin/python3 examples/verify/ppo.py  (data_fmt/verify.md)."""
import torch

from hf_ref import Checker, arguments, ref

args = arguments(__doc__, ["sign", "mean", "biased-whitening", "masked-approxkl"])
g = torch.Generator().manual_seed(19)
B, T, kl_coef, gamma, lam, clip, clip_v, vf_coef = 4, 6, 0.05, 1.0, 0.95, 0.2, 0.2, 0.1
ends = torch.tensor([5, 2, 3, 0])                                  # last response token of each row
t = torch.arange(T)[None, :]
mask = (t <= ends[:, None]).double()                               # TRL: ~padding_mask
mask_p1 = (t <= ends[:, None] + 1).double()                        # TRL: ~padding_mask_p1 (the critic's)
logprobs = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
ref_logprobs = logprobs + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
scores = torch.randn(B, generator=g, dtype=torch.float64)
values = torch.randn(B, T, generator=g, dtype=torch.float64) * mask_p1

# trl/trainer/ppo_trainer.py: the per-token rewards
kl = (logprobs - ref_logprobs) * mask
rewards = -kl_coef * kl
score_at = torch.where(ends + 1 < T, ends + 1, ends)
rewards[torch.arange(B), score_at] += scores
objective_kl = kl.mean(1).mean() if args.inject == "mean" else kl.sum(1).mean()

# GAE, then whitening over the policy mask
advantages = torch.zeros(B, T, dtype=torch.float64)
last = torch.zeros(B, dtype=torch.float64)
for k in reversed(range(T)):
    next_value = values[:, k + 1] if k < T - 1 else 0.0
    delta = rewards[:, k] + gamma * next_value - values[:, k]
    last = delta + gamma * lam * last
    advantages[:, k] = last
returns = advantages + values
mean = (advantages * mask).sum() / mask.sum()
var = ((advantages - mean) ** 2 * mask).sum() / mask.sum()
if args.inject != "biased-whitening":
    var = var * mask.sum() / (mask.sum() - 1)                        # TRL's masked_var(unbiased=True)
whitened = ((advantages - mean) * torch.rsqrt(var + 1e-8)) * mask

# one PPO micro-batch after an update: new log-probs and values
new_logprobs = (logprobs + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2) * mask + (1 - mask)
old_logprobs = logprobs * mask + (1 - mask)                         # TRL writes 1.0 into the pads of both
new_values = values + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
ratio = torch.exp(new_logprobs - old_logprobs)
sign = -1.0 if args.inject == "sign" else 1.0
pg = torch.max(-whitened * ratio * sign, -whitened * sign * torch.clamp(ratio, 1 - clip, 1 + clip))
pg_loss = (pg * mask).sum() / mask.sum()
v_clipped = torch.clamp(new_values, values - clip_v, values + clip_v)
vf = torch.max((new_values - returns) ** 2, (v_clipped - returns) ** 2)
vf_loss = 0.5 * (vf * mask_p1).sum() / mask_p1.sum()
sq = (new_logprobs - old_logprobs) ** 2
approxkl = 0.5 * ((sq * mask).sum() / mask.sum() if args.inject == "masked-approxkl" else sq.mean())

ours_r = ref("ppo-rewards", {"logprobs": logprobs.tolist(), "ref_logprobs": ref_logprobs.tolist(),
                             "scores": scores.tolist(), "sequence_ends": ends.tolist(), "kl_coef": kl_coef})
ours_g = ref("gae", {"rewards": rewards.tolist(), "values": values.tolist(), "mask": mask.tolist(),
                     "gamma": gamma, "lam": lam, "whiten": True})
ours_l = ref("ppo-loss", {"logprobs": new_logprobs.tolist(), "old_logprobs": old_logprobs.tolist(),
                          "advantages": whitened.tolist(), "values": new_values.tolist(),
                          "old_values": values.tolist(), "returns": returns.tolist(), "mask": mask.tolist(),
                          "value_mask": mask_p1.tolist(), "cliprange": clip, "cliprange_value": clip_v,
                          "vf_coef": vf_coef})
check = Checker("ppo")
check.same("rewards", ours_r["rewards"], rewards, 1e-12, 1e-15)
check.same("objective/kl", torch.tensor(ours_r["kl"], dtype=torch.float64).sum(1).mean(), objective_kl, 1e-12, 1e-15)
check.same("returns", ours_g["returns"], returns, 1e-12, 1e-15)
check.same("advantages (whitened)", ours_g["advantages"], whitened, 1e-12, 1e-15)
check.same("loss/policy_avg", ours_l["pg_loss"], pg_loss, 1e-12, 1e-15)
check.same("loss/value_avg", ours_l["vf_loss"], vf_loss, 1e-12, 1e-15)
check.same("loss", ours_l["loss"], pg_loss + vf_coef * vf_loss, 1e-12, 1e-15)
check.same("policy/approxkl_avg", ours_l["approxkl"], approxkl, 1e-12, 1e-15)
check.done()
