"""hf_ref.py - what the verify recipes share: Hugging Face semantics in plain torch, and the comparison.

Demonstrates computing, without transformers or TRL, what they compute: a Llama / Qwen2 / Qwen3 causal LM's
forward pass from its config.json and safetensors (eager attention, float64), HF's shifted token log-probs, and a
comparison that names the first value that differs. Only torch and the Python standard library are used, so the
recipes run with Debian's python3-torch. See data_fmt/verify.md.

To check against the real library instead, replace load_model() in a recipe with
    transformers.AutoModelForCausalLM.from_pretrained(DIR, torch_dtype=torch.float64, attn_implementation="eager")
(its forward(input_ids, attention_mask).logits is what forward() below returns)."""
import argparse
import json
import math
import os
import struct
import subprocess
import sys

import torch

# ---- reading checkpoints (the safetensors layout: 8-byte header size, JSON header, raw little-endian data) ----

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32}


def read_safetensors(path):
    """name -> tensor (its stored dtype) of one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(data[8 + size + begin:8 + size + end])
        t = torch.frombuffer(raw, dtype=_DTYPES[info["dtype"]]) if raw else torch.zeros(0, dtype=_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


def load_model(model_dir):
    """(config, name -> float64 tensor) of a Hugging Face directory (model.safetensors or a sharded index)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    files = ["model.safetensors"]
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    params = {}
    for name in files:
        params.update({k: v.to(torch.float64) for k, v in read_safetensors(os.path.join(model_dir, name)).items()})
    return cfg, params


# ---- the forward pass (transformers' LlamaForCausalLM / Qwen2 / Qwen3, eager attention) ---------------------

def _inv_freq(cfg, head_dim):
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    scaling = cfg.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) != "llama3":
        return inv
    factor, low, high = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv / factor + smooth * inv
    return torch.where(wavelen < old_len / high, inv, torch.where(wavelen > old_len / low, inv / factor, blended))


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def forward(model, input_ids, attention_mask):
    """Logits [B, T, V] in float64; a padded key is never attended to (HF's padding mask)."""
    cfg, P = model
    B, T = input_ids.shape
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = float(cfg["rms_norm_eps"])
    bias = cfg["model_type"] == "qwen2" or bool(cfg.get("attention_bias", False))
    angles = torch.arange(T, dtype=torch.float64)[:, None] * _inv_freq(cfg, hd)[None, :]
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None] & attention_mask.bool()[:, None, :]
    x = P["model.embed_tokens.weight"][input_ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        h = _rms(x, P[p + "input_layernorm.weight"], eps)
        q, k, v = (h @ P[p + "self_attn.%s_proj.weight" % n].T + (P[p + "self_attn.%s_proj.bias" % n] if bias else 0)
                   for n in "qkv")
        q, k, v = q.view(B, T, H, hd), k.view(B, T, KV, hd), v.view(B, T, KV, hd)
        if cfg["model_type"] == "qwen3":
            q, k = _rms(q, P[p + "self_attn.q_norm.weight"], eps), _rms(k, P[p + "self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        attn = torch.softmax(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1) @ v
        x = x + attn.transpose(1, 2).reshape(B, T, H * hd) @ P[p + "self_attn.o_proj.weight"].T
        h = _rms(x, P[p + "post_attention_layernorm.weight"], eps)
        gate = h @ P[p + "mlp.gate_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * (h @ P[p + "mlp.up_proj.weight"].T)) @ P[p + "mlp.down_proj.weight"].T
    head = P["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else P["lm_head.weight"]
    return _rms(x, P["model.norm.weight"], eps) @ head.T


def pad_right(rows, key="input_ids", labels_key="labels"):
    """DataCollatorWithPadding with padding_side="right": ids padded with 0, mask 0, labels -100."""
    T = max(len(r[key]) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r[key])
        ids[b, :n] = torch.tensor(r[key])
        mask[b, :n] = 1
        labels[b, :n] = torch.tensor(r.get(labels_key) or r[key])
    return ids, mask, labels


def token_logps(logits, labels, fault=None):
    """HF's shift: position t is scored by the logits at t - 1. [B, T], 0 where labels[t] is -100 (and at t = 0).
    fault "shift" scores position t by the logits at t instead (the label shift forgotten)."""
    out = torch.zeros(labels.shape, dtype=torch.float64)
    lsm = torch.log_softmax(logits, dim=-1)
    if fault == "shift":
        scored, targets, at = lsm[:, 1:], labels[:, 1:], slice(1, None)
    else:
        scored, targets, at = lsm[:, :-1], labels[:, 1:], slice(1, None)
    valid = targets != -100
    picked = scored.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    out[:, at] = torch.where(valid, picked, torch.zeros_like(picked))
    return out


def sequence_logps(tok, labels, fault=None):
    """TRL's summed completion log-prob per row; fault "mean" averages over the scored tokens instead."""
    counted = (labels[:, 1:] != -100).sum(-1).clamp(min=1)
    total = tok.sum(-1)
    return total / counted if fault == "mean" else total


# ---- running collabllm and comparing ----------------------------------------------------------------------

def collabllm(*args, stdin=None):
    """Runs build/collabllm (or $COLLABLLM) and returns its stdout; stops the recipe when it fails."""
    tool = os.environ.get("COLLABLLM", "build/collabllm")
    done = subprocess.run([tool] + [str(a) for a in args], input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit("collabllm %s failed (exit %d):\n%s" % (" ".join(map(str, args)), done.returncode, done.stderr))
    return done.stdout


def ref(name, inputs):
    """`collabllm ref NAME` on a dict, its output as a dict (data_fmt/ref.md)."""
    return json.loads(collabllm("ref", name, stdin=json.dumps(inputs)))


def arguments(doc, faults, **paths):
    """The recipe's command line: --NAME PATH for each default path given, and --inject FAULT (a deliberate
    mistake on the Python side, to see the recipe catch it)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    for name, default in paths.items():
        parser.add_argument("--" + name.replace("_", "-"), default=default, help="default: %(default)s")
    parser.add_argument("--inject", choices=faults, help="make this mistake on the Python side (the test of the test)")
    return parser.parse_args()


class Checker:
    """Compares named values; reports the first mismatch of each and exits 1 at the end if any."""

    def __init__(self, recipe):
        self.recipe, self.failed, self.checked = recipe, [], 0

    def same(self, name, ours, theirs, rtol, atol):
        """ours: collabllm's numbers; theirs: this script's. Close when |a - b| <= atol + rtol |b| everywhere."""
        a = torch.as_tensor(ours, dtype=torch.float64).flatten()
        b = torch.as_tensor(theirs, dtype=torch.float64).flatten()
        self.checked += 1
        if a.shape != b.shape:
            self.failed.append(name)
            print("MISMATCH %s: collabllm has %d values, python %d" % (name, a.numel(), b.numel()))
            return
        bad = ((a - b).abs() > atol + rtol * b.abs()) | (a.isnan() != b.isnan())
        if bad.any():
            i = int(bad.nonzero()[0])
            shape = tuple(torch.as_tensor(theirs).shape)
            where = list(divmod(i, shape[-1])) if len(shape) == 2 else [i]
            self.failed.append(name)
            print("MISMATCH %s at index %s: collabllm %.17g, python %.17g (%d of %d values differ)"
                  % (name, where, float(a[i]), float(b[i]), int(bad.sum()), a.numel()))
        else:
            diff = float((a - b).abs().max()) if a.numel() else 0.0
            print("ok %-26s %5d values, max |diff| %.1e (tolerance %.0e + %.0e |x|)" % (name, a.numel(), diff, atol, rtol))

    def done(self):
        if self.failed:
            print("%s: FAIL, %d of %d checks differ: %s" % (self.recipe, len(self.failed), self.checked,
                                                           ", ".join(self.failed)))
            sys.exit(1)
        print("%s: all %d checks agree" % (self.recipe, self.checked))
