#!/usr/bin/python3
"""Reference vectors for collabllm.h's sampler (tests/test_generation_sampler.c).

Run from the repository root with Debian's python (torch 1.13):

    /usr/bin/python3 tests/gen_sampling.py

Writes tests/data/sampling/cases.json (deterministic: same bytes on every run).

For each case: float32 logits, a sampler setting (temperature, top_k, top_p; the float32 values
the C struct holds), and
  keep   which tokens survive Hugging Face's logits warpers, computed here in torch, float64,
         following transformers' TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper:
           z = logits / T
           top-k: remove z < (k-th largest z)                      (ties with the k-th stay)
           top-p: sort ascending, cumsum of softmax, remove where cumsum <= 1 - top_p,
                  never the last (= most likely) one
         HF leaves the order of exactly tied scores to torch.sort, which is not stable; here the
         ascending sort is made deterministic by putting, among equal scores, higher ids first
         (so among tied tokens the lowest id is the most likely to be kept), which is the rule
         collabllm.h documents. Cases without ties at the cut do not depend on it.
  probs  softmax(z) over the kept tokens (0 elsewhere): the exact distribution to sample from.
  draws  the first tokens drawn with cllm_rng seeded by `seed`, by an independent Python copy of
         the RNG (splitmix64 -> xoshiro128**, 53-bit uniforms) and of the documented draw: walk
         the kept ids in increasing order until the running sum of exp(z - max z) exceeds
         u * total. This pins the sampler's output on every platform.
The script checks that no token sits within 1e-9 of the top-p cut, so float64 rounding in C and
here cannot disagree on the mask.
"""
import json, math, os
import numpy as np
import torch

OUT = "tests/data/sampling/cases.json"
N_DRAWS = 64
M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


# ---- cllm_rng in Python ------------------------------------------------------------------------
class Rng:
    def __init__(self, seed):
        x = seed & M64
        def splitmix():
            nonlocal x
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            return z ^ (z >> 31)
        a, b = splitmix(), splitmix()
        self.s = [a & M32, a >> 32, b & M32, b >> 32]

    def u32(self):
        s = self.s
        rotl = lambda v, k: ((v << k) | (v >> (32 - k))) & M32
        result = (rotl((s[1] * 5) & M32, 7) * 9) & M32
        t = (s[1] << 9) & M32
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 11)
        return result

    def uniform(self):
        hi = self.u32() >> 5
        lo = self.u32() >> 6
        return (hi * 67108864.0 + lo) / 9007199254740992.0


# ---- HF warpers in torch (float64) --------------------------------------------------------------
def warp(logits32, T, top_k, top_p):
    z = torch.tensor(logits32.astype(np.float64)) / float(T)
    V = z.numel()
    remove = torch.zeros(V, dtype=torch.bool)
    if top_k > 0:
        k = min(top_k, V)
        kth = torch.topk(z, k).values[-1]
        remove |= z < kth
    zk = z.masked_fill(remove, -math.inf)
    margin = math.inf
    if top_p < 1.0:
        ids = np.arange(V)
        order = torch.tensor(np.lexsort((-ids, zk.numpy())))      # ascending z, ties: higher id first
        sorted_z = zk[order]
        cum = torch.softmax(sorted_z, dim=-1).cumsum(dim=-1)
        sorted_remove = cum <= (1 - top_p)
        sorted_remove[-1] = False                                  # min_tokens_to_keep = 1
        finite = torch.isfinite(sorted_z)
        if finite.any():
            margin = float((cum[finite] - (1 - top_p)).abs().min())
        remove |= torch.zeros(V, dtype=torch.bool).scatter(0, order, sorted_remove)
    keep = ~remove & torch.isfinite(z)
    zf = z.masked_fill(~keep, -math.inf)
    probs = torch.softmax(zf, dim=-1)
    return keep.numpy().astype(int), probs.numpy(), z.numpy(), margin


def draws(z, keep, seed, n):
    """The documented inverse-CDF walk, on the float64 scores of the kept tokens."""
    rng = Rng(seed)
    kept = [i for i in range(len(z)) if keep[i]]
    mx = max(z[i] for i in kept)
    total = 0.0
    for i in kept:
        total += math.exp(z[i] - mx)
    out = []
    for _ in range(n):
        r = rng.uniform() * total
        acc, pick = 0.0, kept[-1]
        for i in kept:
            acc += math.exp(z[i] - mx)
            if r < acc:
                pick = i
                break
        out.append(pick)
    return out


def case(name, logits, T=1.0, top_k=0, top_p=1.0, seed=1, stat_draws=100000):
    logits = np.asarray(logits, dtype=np.float32)
    T32, p32 = float(np.float32(T)), float(np.float32(top_p))
    keep, probs, z, margin = warp(logits, T32, top_k, p32)
    assert margin > 1e-9, f"{name}: a token sits {margin:g} from the top-p cut; pick other logits"
    return {
        "name": name, "V": int(len(logits)),
        "logits": [None if not np.isfinite(v) else float(v) for v in logits],
        "temperature": T32, "top_k": top_k, "top_p": p32, "seed": seed,
        "stat_draws": stat_draws, "n_kept": int(keep.sum()),
        "keep": [int(k) for k in keep],
        "probs": [float(p) for p in probs],
        "draws": draws([float(v) for v in z], keep, seed, N_DRAWS),
    }


def main():
    g = torch.Generator().manual_seed(1234)
    randn = lambda n, s=1.0: (torch.randn(n, generator=g, dtype=torch.float64) * s).numpy()
    ties = np.round(randn(16, 2.0) * 2) / 2                      # many exactly equal logits
    ties[np.argsort(-ties)[3:6]] = np.sort(ties)[-4]              # the 4th..6th largest are tied
    masked = randn(20, 2.0)
    masked[[1, 5, 6, 13]] = -np.inf
    cases = [
        case("plain softmax", randn(10, 1.5), seed=11),
        case("temperature 0.7", randn(20, 2.0), T=0.7, seed=12),
        case("temperature 1.5, top-k 5", randn(30, 2.0), T=1.5, top_k=5, seed=13),
        case("top-k 4 with ties at the k-th score", ties, top_k=4, seed=14),
        case("top-p 0.9", randn(40, 2.0), top_p=0.9, seed=15),
        case("temperature 0.8, top-p 0.5", randn(50, 1.0), T=0.8, top_p=0.5, seed=16),
        case("temperature 0.9, top-k 20, top-p 0.8", randn(64, 2.0), T=0.9, top_k=20, top_p=0.8, seed=17),
        case("top-p 0.05 keeps only the argmax", randn(30, 2.0), top_p=0.05, seed=18),
        case("-inf masked logits, top-p 0.95", masked, top_p=0.95, seed=19),
        case("all logits equal, top-p 0.6 (tie rule: lower ids kept)", np.zeros(8), top_p=0.6, seed=20),
        case("top-k larger than the vocabulary", randn(12, 1.0), top_k=50, seed=21),
        case("vocab 5000, temperature 0.7, top-k 50, top-p 0.9", randn(5000, 2.5), T=0.7, top_k=50, top_p=0.9, seed=22, stat_draws=20000),
        case("vocab 3000, top-p 0.95", randn(3000, 3.0), top_p=0.95, seed=23, stat_draws=5000),
    ]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"generator": "tests/gen_sampling.py", "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    for c in cases:
        print(f"{c['name']}: V={c['V']} kept={c['n_kept']}")


if __name__ == "__main__":
    main()
