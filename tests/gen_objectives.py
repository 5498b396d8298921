#!/usr/bin/python3
"""Reference cases for the objectives and metrics of collabllm.h (DPO, PPO rewards, GAE, PPO loss,
GRPO/RLOO, BLEU), from independent implementations:

  * PyTorch float64 versions of the formulas TRL v0.19.1 uses (written here from the formulas in
    trl/trainer/*_trainer.py, not copied), with gradients from autograd;
  * NLTK's own nltk.translate.bleu_score.sentence_bleu.

Run from the repository root with Debian's python (torch 1.13, nltk 3.8):

    /usr/bin/python3 tests/gen_objectives.py

It (re)writes tests/data/objectives/{dpo,ppo_rewards,gae,ppo_loss,grpo,bleu}.json; each file is
{"generator": ..., "cases": [...]}, every case holding its inputs and the expected outputs.
Output is deterministic (fixed seeds), so re-running gives identical files.
tests/test_objectives.c reads them.
"""
import json
import math
import os
import random
import sys
import warnings

import torch
import torch.nn.functional as F
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

torch.set_default_dtype(torch.float64)
OUT = os.path.join("tests", "data", "objectives")
F64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=F64)


def lst(x):
    return [float(v) for v in x.detach().reshape(-1).tolist()] if x.dim() == 1 else [lst(r) for r in x]


def masked_mean(x, m):
    return (x * m).sum() / m.sum()


def masked_whiten(x, m, shift_mean=True):
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    s = m.sum()
    var = var * s / (s - 1)                       # Bessel's correction, as TRL / verl
    w = (x - mean) * torch.rsqrt(var + 1e-8)
    return w if shift_mean else w + mean


# ---------------------------------------------------------------------------------------------
# DPO
# ---------------------------------------------------------------------------------------------
def dpo_case(loss_type, beta, eps, ref_free, pc, pr, rc, rr):
    pc_t = t(pc).requires_grad_(True)
    pr_t = t(pr).requires_grad_(True)
    rc_t, rr_t = t(rc), t(rr)
    z = (pc_t - pr_t) - (torch.zeros(1) if ref_free else (rc_t - rr_t))
    bz = beta * z
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(bz) * (1 - eps) - F.logsigmoid(-bz) * eps
    elif loss_type == "robust":
        losses = (-F.logsigmoid(bz) * (1 - eps) + F.logsigmoid(-bz) * eps) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - bz)
    else:
        losses = (z - 1 / (2 * beta)) ** 2
    loss = losses.mean()
    loss.backward()
    cr = (beta * (pc_t - rc_t)).detach()
    rj = (beta * (pr_t - rr_t)).detach()
    return {
        "loss_type": loss_type, "beta": beta, "label_smoothing": eps, "reference_free": ref_free,
        "policy_chosen_logps": pc, "policy_rejected_logps": pr, "ref_chosen_logps": rc, "ref_rejected_logps": rr,
        "losses": lst(losses), "loss": float(loss), "chosen_rewards": lst(cr), "rejected_rewards": lst(rj),
        "reward_accuracies": float((cr > rj).double().mean()), "reward_margins": float((cr - rj).mean()),
        "d_policy_chosen_logps": lst(pc_t.grad), "d_policy_rejected_logps": lst(pr_t.grad),
    }


def gen_dpo(rng):
    cases = []
    for loss_type in ["sigmoid", "robust", "hinge", "ipo"]:
        for k in range(12):
            n = rng.randint(1, 8)
            beta = [0.1, 0.5, round(rng.uniform(0.01, 2.0), 6)][k % 3]
            eps = 0.0 if k % 4 == 0 or loss_type in ("hinge", "ipo") else round(rng.uniform(0.01, 0.45), 6)
            ref_free = k % 5 == 4
            scale = 300 if k % 6 == 5 else 40        # large margins: log-sigmoid must not overflow
            pc = [-rng.uniform(1, scale) for _ in range(n)]
            pr = [-rng.uniform(1, scale) for _ in range(n)]
            rc = [-rng.uniform(1, scale) for _ in range(n)]
            rr = [-rng.uniform(1, scale) for _ in range(n)]
            cases.append(dpo_case(loss_type, beta, eps, ref_free, pc, pr, rc, rr))
    # the hinge's kink (beta z = 1 exactly: relu'(0) = 0) and an equal pair (accuracy tie -> 0)
    cases.append(dpo_case("hinge", 0.5, 0.0, False, [-10.0, -5.0], [-12.0, -5.0], [-10.0, -5.0], [-10.0, -5.0]))
    return cases


# ---------------------------------------------------------------------------------------------
# PPO rollout rewards (TRL v0.19 PPOTrainer), GAE, the PPO loss
# ---------------------------------------------------------------------------------------------
def first_true(b):
    """Index of the first True per row, or the row length if none (TRL's first_true_indices)."""
    L = b.shape[1]
    idx = torch.where(b, torch.arange(L).expand_as(b), torch.full_like(b, L, dtype=torch.long))
    return idx.min(dim=1).values


def ppo_rewards_case(rng, B, L):
    pad = 0
    eos = rng.choice([2, 0])                         # 0: pad == eos (CollabLLM's tokenizer setting)
    stop = rng.choice([None, eos])
    resp = []
    for _ in range(B):
        n = rng.randint(0, L)
        row = [rng.randint(3, 9) for _ in range(n)]
        if n < L and rng.random() < 0.8:
            row.append(eos)
        if stop is not None and rng.random() < 0.3 and len(row) < L - 1:
            row.append(rng.randint(3, 9))            # tokens after a stop token get truncated
        row += [pad] * (L - len(row))
        resp.append(row[:L])
    logp = [[-rng.uniform(0.05, 4) for _ in range(L)] for _ in range(B)]
    ref = [[-rng.uniform(0.05, 4) for _ in range(L)] for _ in range(B)]
    scores = [rng.uniform(-2, 2) for _ in range(B)]
    kl_coef = rng.choice([0.05, 0.2, 0.0])
    est = rng.choice(["k1", "k2", "k3"])
    placement = rng.choice(["after_eos", "last_token"])

    r = torch.tensor(resp)
    post = r
    if stop is not None:
        trunc = first_true(r == stop)
        post = r.masked_fill(torch.arange(L)[None, :] > trunc[:, None], pad)
    seq = first_true(post == pad) - 1
    pm = torch.arange(L)[None, :] > seq[:, None]
    lp = t(logp).masked_fill(pm, 1.0)               # INVALID_LOGPROB on both
    rf = t(ref).masked_fill(pm, 1.0)
    logr = rf - lp
    kl = {"k1": -logr, "k2": 0.5 * logr ** 2, "k3": (logr.exp() - 1) - logr}[est]
    rew = -kl_coef * kl
    if placement == "after_eos":
        end = torch.where(seq + 1 < L, seq + 1, seq)
    else:
        end = seq.clamp(min=0)
    rew[torch.arange(B), end] += t(scores)
    return {
        "responses": resp, "pad_token_id": pad, "stop_token_id": -1 if stop is None else stop,
        "logprobs": logp, "ref_logprobs": ref, "scores": scores, "kl_coef": kl_coef,
        "kl_estimator": est, "placement": placement,
        "sequence_ends": [int(v) for v in seq.tolist()], "kl": lst(kl), "rewards": lst(rew),
    }


def gae_torch(rew, val, mask, gamma, lam, mode, whiten):
    B, T = rew.shape
    adv = torch.zeros(B, T)
    nextv = torch.zeros(B)
    last = torch.zeros(B)
    for k in reversed(range(T)):
        delta = rew[:, k] + gamma * nextv - val[:, k]
        a = delta + gamma * lam * last
        if mode == "trl":
            nextv, last = val[:, k], a
        else:                                         # verl: masked positions pass values through
            m = mask[:, k]
            nextv = val[:, k] * m + (1 - m) * nextv
            last = a * m + (1 - m) * last
        adv[:, k] = last
    ret = adv + val
    if whiten:
        adv = masked_whiten(adv, mask)
        if mode == "trl":
            adv = adv.masked_fill(mask == 0, 0.0)
    return adv, ret


def gae_case(rng):
    B, T = rng.randint(1, 4), rng.randint(1, 12)
    mode = rng.choice(["trl", "verl"])
    whiten = rng.random() < 0.6
    gamma = rng.choice([1.0, 0.99, round(rng.uniform(0, 1), 6)])
    lam = rng.choice([0.95, 1.0, round(rng.uniform(0, 1), 6)])
    while True:
        if mode == "trl":                             # right padding: ones, then zeros
            mask = []
            for _ in range(B):
                n = rng.randint(0, T)
                mask.append([1.0] * n + [0.0] * (T - n))
        else:                                         # verl also skips holes (observation tokens)
            mask = [[float(rng.random() < 0.7) for _ in range(T)] for _ in range(B)]
        if not whiten or sum(map(sum, mask)) >= 2:
            break
    rew = [[rng.uniform(-1, 1) if rng.random() < 0.7 else 0.0 for _ in range(T)] for _ in range(B)]
    val = [[rng.uniform(-1, 1) for _ in range(T)] for _ in range(B)]
    adv, ret = gae_torch(t(rew), t(val), t(mask), gamma, lam, mode, whiten)
    return {"rewards": rew, "values": val, "mask": mask, "gamma": gamma, "lam": lam, "mode": mode,
            "whiten": whiten, "advantages": lst(adv), "returns": lst(ret)}


def ppo_loss_torch(c):
    lp = t(c["logprobs"]).requires_grad_(True)
    v = t(c["values"]).requires_grad_(True)
    olp, A, ov, R = t(c["old_logprobs"]), t(c["advantages"]), t(c["old_values"]), t(c["returns"])
    m, vm = t(c["mask"]), t(c["value_mask"])
    cr, cv = c["cliprange"], c["cliprange_value"]
    vc = torch.clamp(v, ov - cv, ov + cv)
    vf1, vf2 = (v - R) ** 2, (vc - R) ** 2
    vf = 0.5 * masked_mean(torch.max(vf1, vf2), vm)
    diff = lp - olp
    ratio = torch.exp(diff)
    pg1 = -A * ratio
    pg2 = -A * torch.clamp(ratio, 1.0 - cr, 1.0 + cr)
    pg = masked_mean(torch.max(pg1, pg2), m)
    loss = pg + c["vf_coef"] * vf
    loss.backward()
    return {"pg_loss": float(pg), "vf_loss": float(vf), "loss": float(loss),
            "clipfrac": float(masked_mean((pg2 > pg1).double(), m)),
            "vf_clipfrac": float(masked_mean((vf2 > vf1).double(), vm)),
            "approxkl": float(0.5 * (diff ** 2).mean()),
            "d_logprobs": lst(lp.grad), "d_values": lst(v.grad)}


def ppo_loss_tie_case():
    """torch.max ties where only one side has a gradient: the clipped value reflects the
    unclipped one about the return (v - R = -(vc - R)), so torch sends half the gradient."""
    c = {"logprobs": [[-1.0, -2.0]], "old_logprobs": [[-1.0, -2.5]], "advantages": [[0.0, 1.0]],
         "values": [[0.25, 0.5]], "old_values": [[-0.5, 0.5]], "returns": [[0.0, 0.0]],
         "mask": [[1.0, 1.0]], "value_mask": [[1.0, 1.0]],
         "cliprange": 0.2, "cliprange_value": 0.25, "vf_coef": 0.5}
    c.update(ppo_loss_torch(c))
    return c


def ppo_loss_case(rng):
    B, T = rng.randint(1, 4), rng.randint(1, 10)
    ends = [rng.randint(0, T - 1) for _ in range(B)]
    mask = [[1.0 if k <= e else 0.0 for k in range(T)] for e in ends]
    vmask = [[1.0 if k <= e + 1 else 0.0 for k in range(T)] for e in ends]
    old = [[-rng.uniform(0.05, 4) for _ in range(T)] for _ in range(B)]
    # some ratios exactly 1 (torch.max ties), most near 1, some far outside the clip range
    new = [[o if rng.random() < 0.15 else o + rng.gauss(0, 0.3) for o in row] for row in old]
    oldv = [[rng.uniform(-1, 1) for _ in range(T)] for _ in range(B)]
    v = [[o if rng.random() < 0.15 else o + rng.gauss(0, 0.3) for o in row] for row in oldv]
    c = {"logprobs": new, "old_logprobs": old,
         "advantages": [[rng.gauss(0, 1) for _ in range(T)] for _ in range(B)],
         "values": v, "old_values": oldv,
         "returns": [[rng.uniform(-1.5, 1.5) for _ in range(T)] for _ in range(B)],
         "mask": mask, "value_mask": vmask,
         "cliprange": rng.choice([0.2, round(rng.uniform(0.05, 0.4), 6)]),
         "cliprange_value": rng.choice([0.2, round(rng.uniform(0.05, 0.5), 6)]),
         "vf_coef": rng.choice([0.1, 0.5, 0.0])}
    c.update(ppo_loss_torch(c))
    return c


# ---------------------------------------------------------------------------------------------
# GRPO / RLOO
# ---------------------------------------------------------------------------------------------
def grpo_case(rng):
    G = rng.randint(2, 8)
    n = G * rng.randint(1, 5)
    r = [rng.choice([0.0, 1.0]) if rng.random() < 0.3 else round(rng.uniform(-2, 2), 6) for _ in range(n)]
    if rng.random() < 0.2:
        r[:G] = [0.5] * G                             # a zero-std group: advantages 0
    est = rng.choice(["grpo", "grpo", "rloo"])
    scale = est == "grpo" and rng.random() < 0.7
    eps = rng.choice([1e-4, 1e-6, 1e-9])
    x = t(r)
    g = x.view(-1, G)
    if est == "rloo":
        adv = (g - (g.sum(dim=1, keepdim=True) - g) / (G - 1)).reshape(-1)
    else:
        adv = x - g.mean(dim=1).repeat_interleave(G)
        if scale:
            adv = adv / (g.std(dim=1).repeat_interleave(G) + eps)
    return {"rewards": r, "group_size": G, "estimator": est, "scale_rewards": scale, "eps": eps,
            "advantages": lst(adv)}


# ---------------------------------------------------------------------------------------------
# BLEU (NLTK sentence_bleu)
# ---------------------------------------------------------------------------------------------
CHARS = "abcde  fgh.,é中😀"                         # few symbols so n-grams match; non-ASCII too
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "é", "中文", "😀", "x"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x1c", "\x85", "\u00a0", "\u3000", "\u2009", "\u2028"]


def rand_chars(rng, n):
    return "".join(rng.choice(CHARS) for _ in range(n))


def rand_words(rng, n):
    s = "".join(rng.choice(WORDS) + rng.choice(SPACES) for _ in range(n))
    return (rng.choice(["", " ", "\t"]) + s).rstrip() if rng.random() < 0.7 else s


def mutate(rng, s, rate):
    return "".join(c if rng.random() > rate else rng.choice(CHARS) for c in s)


def bleu_case(refs, hyp, level, smoothing):
    sm = {"method0": None, "method1": SmoothingFunction().method1,
          "method2": SmoothingFunction().method2}[smoothing]
    if level == "token":
        score = sentence_bleu([r.split() for r in refs], hyp.split(), smoothing_function=sm)
    else:
        score = sentence_bleu(list(refs), hyp, smoothing_function=sm)
    return {"references": refs, "hypothesis": hyp, "level": level, "smoothing": smoothing,
            "bleu": float(score)}


def gen_bleu(rng):
    cases = []
    fixed = [  # edge cases named in the task
        (["abcd"], ""), (["abcd"], "ab"), (["abc"], "xyz"), ([""], "abc"), (["ab cd"], "ab c"),
        (["aaaa", "aa"], "aaa"), (["abcdef", "ab"], "abcd"), (["abcdx", "abc"], "abcd"),
        (["the cat sat on the mat"], "the cat sat on a mat"),
        (["Optimism improves health."], "Optimism improves your health."),
    ]
    for refs, hyp in fixed:
        for level in ("char", "token"):
            for smoothing in ("method0", "method1", "method2"):
                cases.append(bleu_case(refs, hyp, level, smoothing))
    for k in range(300):
        level = "char" if k % 2 == 0 else "token"
        smoothing = "method0" if k % 5 < 3 else ("method1" if k % 5 == 3 else "method2")
        gen = rand_chars if level == "char" else rand_words
        n = rng.choice([0, 1, 2, 3, 5, 8, 12, 20, 40]) if level == "char" else rng.randint(0, 12)
        hyp = gen(rng, n)
        refs = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            if level == "char" and rng.random() < 0.6:
                base = mutate(rng, hyp, rng.choice([0.0, 0.1, 0.3]))
                cut = rng.randint(-3, 3)              # lengths around the hypothesis: ties happen
                refs.append(base[:len(base) + cut] if cut < 0 else base + rand_chars(rng, cut))
            else:
                refs.append(gen(rng, max(0, n + rng.randint(-3, 3))))
        cases.append(bleu_case(refs, hyp, level, smoothing))
    # two document-sized strings (CollabLLM scores whole documents, character level)
    doc = rand_words(rng, 150)
    cases.append(bleu_case([doc], mutate(rng, doc, 0.05), "char", "method0"))
    cases.append(bleu_case([doc, rand_words(rng, 140)], mutate(rng, doc, 0.2)[:600], "char", "method0"))
    return cases


def write(name, cases):
    path = os.path.join(OUT, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/gen_objectives.py (torch %s, nltk, python %s)"
                   % (torch.__version__, sys.version.split()[0]), "cases": cases},
                  f, ensure_ascii=False, indent=0)
        f.write("\n")
    print("%-40s %d cases" % (path, len(cases)))


def main():
    warnings.simplefilter("ignore")                   # NLTK warns on zero-count orders
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20250601)
    write("dpo", gen_dpo(rng))
    write("ppo_rewards", [ppo_rewards_case(rng, rng.randint(1, 4), rng.randint(1, 8)) for _ in range(60)])
    write("gae", [gae_case(rng) for _ in range(80)])
    write("ppo_loss", [ppo_loss_case(rng) for _ in range(80)] + [ppo_loss_tie_case()])
    write("grpo", [grpo_case(rng) for _ in range(60)])
    write("bleu", gen_bleu(rng))


if __name__ == "__main__":
    main()
