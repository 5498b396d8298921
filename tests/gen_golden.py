#!/usr/bin/python3
"""Golden reference generator for collabllm.h (independent PyTorch oracle).

Run from the repository root with Debian's python (it has torch 1.13):

    /usr/bin/python3 tests/gen_golden.py

It (re)writes tests/data/golden/<case>/ for six tiny synthetic models and then
re-reads every file it wrote to check that it round-trips.  Output is
deterministic: per-case torch seeds, single-threaded torch, fixed JSON
formatting -> re-running gives byte-identical files.

Only torch, numpy and the standard library are used.  The model, the loss, the
safetensors writer/reader are written by hand in this file (no transformers,
no safetensors package).

Files per case directory
------------------------
config.json            HF-style config (architectures, model_type, sizes,
                       rope_theta, rope_scaling, tie_word_embeddings, ...).
model.safetensors      checkpoint with HF tensor names (or the two shards
                       model-0000{1,2}-of-00002.safetensors plus
                       model.safetensors.index.json for llama_f16_sharded).
                       lm_head.weight is present only when untied.
batch.jsonl            3 lines {"input_ids": [...], "labels": [...]}; labels
                       may be absent (=> labels = input_ids).
expected.safetensors   all F32:
                         logits [B,T,V]  every position, pad rows included
                         loss   []       0-rank scalar
                         logps  [B]
                         grad.<name>     d loss / d tensor, for every tensor
                                         stored in the checkpoint (tied: the
                                         embedding grad sums both uses)
train.safetensors      (llama_gqa_tied only) 6 AdamW steps, all F32:
                         losses [6]      loss before each step
                         grad_norms [6]  total L2 grad norm before clipping
                         final.<name>    parameters after the 6 steps

Exact semantics (HF LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM)
---------------------------------------------------------------------------
* All math in float64.  Weights are the stored values (F32, or BF16/F16
  decoded exactly) upcast to float64.  Outputs are rounded to F32 (RNE) only
  when written.
* Batch: the 3 jsonl lines are right-padded with token id 0 to T = max
  length; attention_mask = 1 on real tokens, 0 on pads; labels = -100 on
  pads.  A line without "labels" uses labels = input_ids.  position_ids =
  0..T-1 for every row (also for padded rows).  Real tokens may be id 0
  (llama_gqa_tied has one on purpose): padding is decided by length only.
* x = embed_tokens[input_ids]            (no scaling)
* per layer:
    n1 = RMSNorm_in(x)
    q = n1 Wq^T (+bq), k = n1 Wk^T (+bk), v = n1 Wv^T (+bv)   biases: qwen2 only
    view q as [B,T,H,hd], k,v as [B,T,KV,hd]
    qwen3 only: q = RMSNorm_qnorm(q), k = RMSNorm_knorm(k) over the last axis
                (per head, weight shape [hd]) -- after the projection/reshape,
                BEFORE RoPE (v is not normed)
    RoPE on q and k (split-half / rotate_half):
        y[i]      = x[i] cos(p w_i) - x[i+hd/2] sin(p w_i)
        y[i+hd/2] = x[i+hd/2] cos(p w_i) + x[i] sin(p w_i),   i < hd/2
        w_i = 1 / theta^(2i/hd), then llama3 scaling if configured (below)
    GQA: query head h uses kv head h // (H/KV)
    scores = q.k * hd^-0.5; allowed(b,tq,tk) = tk <= tq AND mask[b,tk];
    softmax over allowed keys only (pad query rows still attend to the real
    keys <= tq, as HF eager attention does); out = sum p v
    x = x + concat_heads(out) Wo^T            (no o_proj bias)
    n2 = RMSNorm_post(x)
    x = x + (silu(n2 Wg^T) * (n2 Wu^T)) Wd^T   (silu(z) = z*sigmoid(z))
* h = RMSNorm_final(x); logits = h W_lm^T, W_lm = embed_tokens if tied.
* RMSNorm(x) = w * (x / sqrt(mean(x^2) + eps)), eps = rms_norm_eps.
* head_dim = config.head_dim if present else hidden_size / H.
* llama3 rope_scaling (HF _compute_llama3_parameters): with
  low_wl = orig/low_freq_factor, high_wl = orig/high_freq_factor,
  wavelen_i = 2*pi / w_i:
      wavelen <  high_wl            -> keep w_i
      wavelen >  low_wl             -> w_i / factor
      otherwise (both ends incl.)   -> s = (orig/wavelen - low)/(high - low),
                                       w_i = (1-s) w_i/factor + s w_i
  attention scaling factor stays 1.  (HF computes inv_freq/angles in fp32;
  here they are float64 -- differences are ~1e-7 at these tiny positions.)
* loss (HF ForCausalLMLoss): logits[:, :-1] vs labels[:, 1:], targets equal
  to -100 ignored, mean of -log_softmax(logits)[target] over all counted
  targets of the whole batch.
* logps[b] = sum over counted targets t of row b of
  log_softmax(logits[b,t])[labels[b,t+1]].
* grads: autograd of `loss` (not logps) w.r.t. each stored tensor.
* train: for 6 steps: forward -> loss -> backward ->
  torch.nn.utils.clip_grad_norm_(params, 1.0) (pre-clip norm recorded) ->
  torch.optim.AdamW(lr=1e-2, betas=(0.9,0.999), eps=1e-8) with
  weight_decay 0.01 for 2-D tensors and 0.0 for 1-D tensors -> step.
  All in float64.

safetensors layout written here
-------------------------------
u64 little-endian N, then N bytes of JSON header (space padded so that
8+N is a multiple of 8), then the data.  Header:
{"__metadata__":{"format":"pt"}, name: {"dtype","shape","data_offsets"}}.
Tensors are laid out contiguously in sorted-name order, offsets relative to
the start of the data, row-major little-endian.  BF16 = upper 16 bits of
the float32 after round-to-nearest-even.  0-rank tensors have shape [].
"""

import hashlib
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "data", "golden")

# --------------------------------------------------------------------------
# dtype helpers
# --------------------------------------------------------------------------


def f32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    assert np.all(np.isfinite(a))
    lsb = (u >> np.uint64(16)) & np.uint64(1)
    r = (u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)
    return r.astype(np.uint16)


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def encode(arr, dtype):
    """numpy float array -> raw little-endian bytes in `dtype`."""
    if dtype == "F32":
        return np.ascontiguousarray(arr, dtype="<f4").tobytes()
    if dtype == "F16":
        return np.ascontiguousarray(arr, dtype="<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(np.asarray(arr, dtype=np.float32)).astype("<u2").tobytes()
    raise ValueError(dtype)


def decode(raw, dtype, shape):
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype == "BF16":
        a = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    else:
        raise ValueError(dtype)
    return a.reshape(shape)


def quantize(t32, dtype):
    """float32 tensor -> the exact values representable in `dtype` (as float32)."""
    a = t32.detach().numpy().astype(np.float32)
    if dtype == "F32":
        return a
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return bf16_bits_to_f32(f32_to_bf16_bits(a))
    raise ValueError(dtype)


# --------------------------------------------------------------------------
# safetensors writer / reader
# --------------------------------------------------------------------------


def st_write(path, tensors):
    """tensors: dict name -> (numpy array, dtype str). Returns bytes written."""
    names = sorted(tensors)
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for n in names:
        arr, dt = tensors[n]
        b = encode(arr, dt)
        assert len(b) == int(np.prod(arr.shape, dtype=np.int64)) * DTYPE_SIZE[dt]
        header[n] = {"dtype": dt, "shape": [int(s) for s in arr.shape],
                     "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-(8 + len(hj))) % 8)
    data = struct.pack("<Q", len(hj)) + hj + b"".join(blobs)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def st_read(path):
    """Returns (dict name -> (float32 numpy array, dtype), metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert (8 + n) % 8 == 0
    hdr = json.loads(data[8:8 + n].decode("utf-8"))
    meta = hdr.pop("__metadata__", None)
    base = 8 + n
    out = {}
    spans = []
    for name, info in hdr.items():
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        assert e - b == int(np.prod(shape, dtype=np.int64)) * DTYPE_SIZE[info["dtype"]]
        out[name] = (decode(data[base + b:base + e], info["dtype"], shape), info["dtype"])
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:  # contiguous, no holes, ends at EOF
        assert b == pos, (path, b, pos)
        pos = e
    assert base + pos == len(data), path
    return out, meta


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------


def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_inv_freq(cfg, verbose=False):
    d = head_dim_of(cfg)
    theta = float(cfg.get("rope_theta", 10000.0))
    i = torch.arange(0, d // 2, dtype=torch.float64)
    inv = 1.0 / theta ** (2.0 * i / d)
    rs = cfg.get("rope_scaling")
    bands = None
    if rs:
        rtype = rs.get("rope_type", rs.get("type"))
        assert rtype == "llama3", rtype
        factor = float(rs["factor"])
        low = float(rs["low_freq_factor"])
        high = float(rs["high_freq_factor"])
        orig = float(rs["original_max_position_embeddings"])
        low_wl = orig / low
        high_wl = orig / high
        new = inv.clone()
        bands = []
        for j in range(d // 2):
            w = inv[j].item()
            wl = 2.0 * math.pi / w
            if wl < high_wl:
                bands.append("keep")
            elif wl > low_wl:
                new[j] = w / factor
                bands.append("divide")
            else:
                s = (orig / wl - low) / (high - low)
                new[j] = (1.0 - s) * w / factor + s * w
                bands.append("smooth(s=%.4f)" % s)
        if verbose:
            print("  llama3 rope: high_freq_wavelen=%g low_freq_wavelen=%g" % (high_wl, low_wl))
            for j in range(d // 2):
                print("    pair %d (dims %d,%d): inv_freq %.6e wavelen %9.3f -> %-16s -> %.6e"
                      % (j, j, j + d // 2, inv[j].item(), 2 * math.pi / inv[j].item(),
                         bands[j], new[j].item()))
        inv = new
    return inv, bands


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, P, ids, amask, positions=None):
    """P: dict HF name -> float64 tensor. ids,amask: [B,T] int64; positions: [B,T] position ids (default 0..T-1, what
    transformers uses when none are given). Returns logits [B,T,V]."""
    B, T = ids.shape
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = head_dim_of(cfg)
    eps = float(cfg["rms_norm_eps"])
    mt = cfg["model_type"]
    qkv_bias = mt == "qwen2" or bool(cfg.get("attention_bias", False))
    qk_norm = mt == "qwen3"
    n_rep = H // KV

    inv, _ = rope_inv_freq(cfg)
    pos = torch.arange(T, dtype=torch.float64)[None, :] if positions is None else positions.double()
    ang = pos[:, :, None] * inv[None, None, :]
    emb = torch.cat((ang, ang), dim=-1)[:, None]   # [B or 1, 1, T, hd]
    cos, sin = emb.cos(), emb.sin()

    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    allowed = causal[None, :, :] & amask.bool()[:, None, :]   # [B,Tq,Tk]

    x = P["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        n1 = rmsnorm(x, P[p + "input_layernorm.weight"], eps)
        q = n1 @ P[p + "self_attn.q_proj.weight"].t()
        k = n1 @ P[p + "self_attn.k_proj.weight"].t()
        v = n1 @ P[p + "self_attn.v_proj.weight"].t()
        if qkv_bias:
            q = q + P[p + "self_attn.q_proj.bias"]
            k = k + P[p + "self_attn.k_proj.bias"]
            v = v + P[p + "self_attn.v_proj.bias"]
        q = q.view(B, T, H, hd)
        k = k.view(B, T, KV, hd)
        v = v.view(B, T, KV, hd)
        if qk_norm:
            q = rmsnorm(q, P[p + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, P[p + "self_attn.k_norm.weight"], eps)
        q = q.transpose(1, 2)   # [B,H,T,hd]
        k = k.transpose(1, 2)   # [B,KV,T,hd]
        v = v.transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        kv_idx = torch.arange(H) // n_rep
        k = k[:, kv_idx]
        v = v[:, kv_idx]
        s = (q @ k.transpose(-1, -2)) * (hd ** -0.5)
        s = s.masked_fill(~allowed[:, None], torch.finfo(s.dtype).min)   # as HF: a fully masked row stays finite
        a = torch.softmax(s, dim=-1) @ v            # [B,H,T,hd]
        a = a.transpose(1, 2).reshape(B, T, H * hd)
        x = x + a @ P[p + "self_attn.o_proj.weight"].t()
        n2 = rmsnorm(x, P[p + "post_attention_layernorm.weight"], eps)
        g = n2 @ P[p + "mlp.gate_proj.weight"].t()
        u = n2 @ P[p + "mlp.up_proj.weight"].t()
        x = x + (g * torch.sigmoid(g) * u) @ P[p + "mlp.down_proj.weight"].t()
    h = rmsnorm(x, P["model.norm.weight"], eps)
    W = P["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else P["lm_head.weight"]
    return h @ W.t()


def loss_and_logps(logits, labels):
    """HF ForCausalLMLoss + per-sequence summed target log-probs."""
    lg = logits[:, :-1]
    tg = labels[:, 1:]
    valid = tg != -100
    lsm = torch.log_softmax(lg, dim=-1)
    tok = lsm.gather(-1, tg.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    tok = torch.where(valid, tok, torch.zeros_like(tok))
    n = int(valid.sum())
    assert n > 0
    loss = -tok.sum() / n
    logps = tok.sum(dim=1)
    return loss, logps


# --------------------------------------------------------------------------
# case construction
# --------------------------------------------------------------------------


def param_shapes(cfg):
    C = cfg["hidden_size"]
    I = cfg["intermediate_size"]
    V = cfg["vocab_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = head_dim_of(cfg)
    mt = cfg["model_type"]
    sh = {"model.embed_tokens.weight": (V, C)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        sh[p + "input_layernorm.weight"] = (C,)
        sh[p + "self_attn.q_proj.weight"] = (H * hd, C)
        sh[p + "self_attn.k_proj.weight"] = (KV * hd, C)
        sh[p + "self_attn.v_proj.weight"] = (KV * hd, C)
        sh[p + "self_attn.o_proj.weight"] = (C, H * hd)
        if mt == "qwen2" or cfg.get("attention_bias"):
            sh[p + "self_attn.q_proj.bias"] = (H * hd,)
            sh[p + "self_attn.k_proj.bias"] = (KV * hd,)
            sh[p + "self_attn.v_proj.bias"] = (KV * hd,)
        if mt == "qwen3":
            sh[p + "self_attn.q_norm.weight"] = (hd,)
            sh[p + "self_attn.k_norm.weight"] = (hd,)
        sh[p + "post_attention_layernorm.weight"] = (C,)
        sh[p + "mlp.gate_proj.weight"] = (I, C)
        sh[p + "mlp.up_proj.weight"] = (I, C)
        sh[p + "mlp.down_proj.weight"] = (C, I)
    sh["model.norm.weight"] = (C,)
    if not cfg["tie_word_embeddings"]:
        sh["lm_head.weight"] = (V, C)
    return sh


def init_params(cfg, gen):
    """Random float32 weights in a fixed order (order of param_shapes)."""
    out = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float32)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=gen, dtype=torch.float32)
        elif name == "model.embed_tokens.weight":
            t = 0.3 * torch.randn(shape, generator=gen, dtype=torch.float32)
        else:  # Linear [out, in]
            t = torch.randn(shape, generator=gen, dtype=torch.float32) / math.sqrt(shape[1])
        out[name] = t
    return out


def make_batch(cfg, gen, lengths, zero_token_at=None):
    """3 jsonl records. Line 0: labels with masked 3-token prompt; line 1: no
    labels; line 2: labels with masked 2-token prompt."""
    V = cfg["vocab_size"]
    recs = []
    for i, L in enumerate(lengths):
        ids = torch.randint(1, V, (L,), generator=gen).tolist()
        if zero_token_at is not None and zero_token_at[0] == i:
            ids[zero_token_at[1]] = 0   # a REAL token with id 0 (not padding)
        r = {"input_ids": ids}
        if i == 0:
            r["labels"] = [-100] * 3 + ids[3:]
        elif i == 2:
            r["labels"] = [-100] * 2 + ids[2:]
        recs.append(r)
    return recs


def pad_batch(recs):
    B = len(recs)
    T = max(len(r["input_ids"]) for r in recs)
    ids = torch.zeros(B, T, dtype=torch.long)
    am = torch.zeros(B, T, dtype=torch.long)
    lab = torch.full((B, T), -100, dtype=torch.long)
    for b, r in enumerate(recs):
        L = len(r["input_ids"])
        ids[b, :L] = torch.tensor(r["input_ids"])
        am[b, :L] = 1
        labels = r.get("labels", r["input_ids"])
        assert len(labels) == L
        lab[b, :L] = torch.tensor(labels)
    return ids, am, lab


def base_config(model_type, **kw):
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM"}[model_type]
    c = {"architectures": [arch], "model_type": model_type, "attention_dropout": 0.0,
         "hidden_act": "silu", "initializer_range": 0.02, "use_cache": True,
         "transformers_version": "4.51.0"}
    c.update(kw)
    return c


CASES = [
    dict(name="llama_gqa_tied", seed=1001, dtype="F32", lengths=[7, 12, 4],
         zero_token_at=(1, 5), train=True,
         cfg=base_config("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                         max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                         rope_scaling=None, tie_word_embeddings=True, attention_bias=False,
                         mlp_bias=False, pretraining_tp=1, bos_token_id=1, eos_token_id=2,
                         torch_dtype="float32")),
    dict(name="qwen2_bias", seed=1002, dtype="F32", lengths=[12, 7, 4],
         cfg=base_config("qwen2", hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=80,
                         max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         rope_scaling=None, tie_word_embeddings=False, use_sliding_window=False,
                         sliding_window=256, max_window_layers=2, bos_token_id=77,
                         eos_token_id=79, torch_dtype="float32")),
    dict(name="qwen3_qknorm", seed=1003, dtype="F32", lengths=[4, 7, 12],
         cfg=base_config("qwen3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         vocab_size=72, max_position_embeddings=256, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, rope_scaling=None, tie_word_embeddings=True,
                         attention_bias=False, use_sliding_window=False, sliding_window=None,
                         max_window_layers=2, bos_token_id=69, eos_token_id=70,
                         torch_dtype="float32")),
    dict(name="llama3_rope", seed=1004, dtype="F32", lengths=[23, 40, 9],
         cfg=base_config("llama", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=3, num_key_value_heads=1, head_dim=16,
                         vocab_size=64, max_position_embeddings=512, rms_norm_eps=1e-5,
                         rope_theta=500000.0,
                         rope_scaling={"factor": 8.0, "high_freq_factor": 4.0,
                                       "low_freq_factor": 1.0,
                                       "original_max_position_embeddings": 64,
                                       "rope_type": "llama3"},
                         tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
                         pretraining_tp=1, bos_token_id=60, eos_token_id=[61, 62, 63],
                         torch_dtype="float32")),
    dict(name="llama_bf16", seed=1005, dtype="BF16", lengths=[7, 4, 12],
         cfg=base_config("llama", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, vocab_size=97,
                         max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=100000.0,
                         rope_scaling=None, tie_word_embeddings=False, attention_bias=False,
                         mlp_bias=False, pretraining_tp=1, bos_token_id=1, eos_token_id=2,
                         torch_dtype="bfloat16")),
    dict(name="llama_f16_sharded", seed=1006, dtype="F16", lengths=[7, 12, 4], shards=2,
         cfg=base_config("llama", hidden_size=40, intermediate_size=72, num_hidden_layers=2,
                         num_attention_heads=5, num_key_value_heads=5, vocab_size=90,
                         max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                         rope_scaling=None, tie_word_embeddings=False, attention_bias=False,
                         mlp_bias=False, pretraining_tp=1, bos_token_id=1, eos_token_id=2,
                         torch_dtype="float16")),
]

# every file written: path -> dict name -> (float32 array, dtype) expected on re-read
WRITTEN = {}


def write_st(path, tensors):
    st_write(path, tensors)
    WRITTEN[path] = {n: (np.asarray(a, dtype=np.float32) if dt == "F32" else quantize(torch.from_numpy(np.asarray(a, dtype=np.float32)), dt), dt)
                     for n, (a, dt) in tensors.items()}


def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def f32(t):
    return t.detach().to(torch.float32).numpy()


def run_case(case):
    name, cfg, dt = case["name"], case["cfg"], case["dtype"]
    print("== %s (%s, %s)" % (name, cfg["model_type"], dt))
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(case["seed"])
    gen = torch.Generator().manual_seed(case["seed"])

    raw = init_params(cfg, gen)
    stored = {n: quantize(t, dt) for n, t in raw.items()}     # exact stored values
    if dt == "BF16":  # cross-check hand-written RNE against torch's conversion
        for n, t in raw.items():
            ref = t.to(torch.bfloat16).to(torch.float32).numpy()
            assert np.array_equal(ref, stored[n]), n
    recs = make_batch(cfg, gen, case["lengths"], case.get("zero_token_at"))

    # ---- config + batch
    write_text(os.path.join(d, "config.json"), json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    write_text(os.path.join(d, "batch.jsonl"),
               "".join(json.dumps(r, separators=(", ", ": ")) + "\n" for r in recs))

    # ---- checkpoint
    names = list(stored)
    if case.get("shards", 1) == 1:
        write_st(os.path.join(d, "model.safetensors"), {n: (stored[n], dt) for n in names})
    else:
        # shard 1: embeddings + layer 0; shard 2: the rest
        first = [n for n in names if n == "model.embed_tokens.weight" or n.startswith("model.layers.0.")]
        groups = [first, [n for n in names if n not in first]]
        wmap = {}
        total = 0
        for si, grp in enumerate(groups):
            fn = "model-%05d-of-%05d.safetensors" % (si + 1, len(groups))
            write_st(os.path.join(d, fn), {n: (stored[n], dt) for n in grp})
            for n in grp:
                wmap[n] = fn
                total += stored[n].size * DTYPE_SIZE[dt]
        idx = {"metadata": {"total_size": total},
               "weight_map": {n: wmap[n] for n in sorted(wmap)}}
        write_text(os.path.join(d, "model.safetensors.index.json"), json.dumps(idx, indent=2) + "\n")

    # ---- reference forward/backward (float64)
    P = {n: torch.from_numpy(stored[n]).to(torch.float64).requires_grad_(True) for n in names}
    ids, am, lab = pad_batch(recs)
    if cfg.get("rope_scaling"):
        rope_inv_freq(cfg, verbose=True)
    logits = forward(cfg, P, ids, am)
    loss, logps = loss_and_logps(logits, lab)
    grads = torch.autograd.grad(loss, [P[n] for n in names])
    G = dict(zip(names, grads))

    # self-check: each row alone, unpadded, must give the same logits on its real positions
    with torch.no_grad():
        for b, r in enumerate(recs):
            L = len(r["input_ids"])
            one = forward(cfg, P, ids[b:b + 1, :L], am[b:b + 1, :L])
            err = (one[0] - logits[b, :L]).abs().max().item()
            assert err < 1e-10, (name, b, err)

    exp = {"logits": (f32(logits), "F32"), "loss": (f32(loss).reshape(()), "F32"),
           "logps": (f32(logps), "F32")}
    for n in names:
        exp["grad." + n] = (f32(G[n]), "F32")
    write_st(os.path.join(d, "expected.safetensors"), exp)

    nparams = sum(stored[n].size for n in names)
    maxg = max(G[n].abs().max().item() for n in names)
    ntgt = int((lab[:, 1:] != -100).sum())
    print("  B=%d T=%d targets=%d loss=%.6f logps=%s" % (ids.shape[0], ids.shape[1], ntgt,
          loss.item(), ["%.4f" % v for v in logps.tolist()]))
    row = dict(case=name, params=nparams, loss=loss.item(), maxgrad=maxg)

    if case.get("train"):
        row["train_losses"] = train(cfg, stored, names, ids, am, lab, d)
        assert abs(row["train_losses"][0] - loss.item()) < 1e-12
    return row


def train(cfg, stored, names, ids, am, lab, d, steps=6):
    P = {n: torch.from_numpy(stored[n]).to(torch.float64).requires_grad_(True) for n in names}
    decay = [P[n] for n in names if P[n].dim() >= 2]
    nodecay = [P[n] for n in names if P[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logits = forward(cfg, P, ids, am)
        loss, _ = loss_and_logps(logits, lab)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_([P[n] for n in names], 1.0)
        opt.step()
        losses.append(loss.item())
        norms.append(float(gn))
    print("  train losses:     %s" % ["%.6f" % v for v in losses])
    print("  train grad norms: %s" % ["%.6f" % v for v in norms])
    out = {"losses": (np.array(losses, dtype=np.float32), "F32"),
           "grad_norms": (np.array(norms, dtype=np.float32), "F32")}
    for n in names:
        out["final." + n] = (f32(P[n]), "F32")
    write_st(os.path.join(d, "train.safetensors"), out)
    return losses


def selfcheck():
    """Re-read every safetensors file written and compare with what was meant."""
    for path, want in WRITTEN.items():
        got, meta = st_read(path)
        assert meta == {"format": "pt"}, path
        assert set(got) == set(want), (path, set(got) ^ set(want))
        for n, (a, dt) in want.items():
            g, gdt = got[n]
            assert gdt == dt and g.shape == a.shape, (path, n, gdt, dt, g.shape, a.shape)
            assert np.array_equal(g, a), (path, n)
    # sharded index consistency
    for case in CASES:
        d = os.path.join(OUT, case["name"])
        ip = os.path.join(d, "model.safetensors.index.json")
        if os.path.exists(ip):
            idx = json.load(open(ip))
            total = 0
            for n, fn in idx["weight_map"].items():
                t = WRITTEN[os.path.join(d, fn)][n]
                total += t[0].size * DTYPE_SIZE[t[1]]
            assert total == idx["metadata"]["total_size"]
            assert set(idx["weight_map"]) == set(param_shapes(case["cfg"]))
    print("self-check: %d safetensors files round-trip OK" % len(WRITTEN))


def main():
    rows = [run_case(c) for c in CASES]
    selfcheck()
    readme = os.path.join(OUT, "README.md")
    assert os.path.exists(readme), "tests/data/golden/README.md missing"
    print()
    print("%-20s %8s %12s %12s" % ("case", "params", "loss", "max|grad|"))
    for r in rows:
        print("%-20s %8d %12.6f %12.6f" % (r["case"], r["params"], r["loss"], r["maxgrad"]))
    print()
    for root, _, files in sorted(os.walk(OUT)):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            h = hashlib.sha256(open(p, "rb").read()).hexdigest()[:16]
            print("%8d  %s  %s" % (os.path.getsize(p), h, os.path.relpath(p, os.path.dirname(ROOT))))
            assert os.path.getsize(p) < 600 * 1024, p


if __name__ == "__main__":
    main()
