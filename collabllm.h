/* collabllm.h - v0.1 - MIT license - a single-header C reference implementation of CollabLLM
                                     (arXiv 2502.00640): multiturn-aware rewards for collaborative LLMs.

   Do this:
      #define COLLABLLM_IMPLEMENTATION
   before you include this file in *one* C or C++ file to create the implementation.
   Every other file includes it without the define and sees only the declarations.

   Link with:   -lcjson -lcurl -lstb -lm     (Debian: libcjson-dev libcurl4-openssl-dev libstb-dev)
   Compile as:  C99 or later, or C++. Nothing else is needed.

   TABLE OF CONTENTS
      1. Quick start
      2. API by task
      3. Compile-time options
      4. Conventions (shapes, labels, errors, memory)
      5. File formats
      6. Limits and trust
      License: see the end of the file.

   ---------------------------------------------------------------------------------------------
   1. QUICK START
   ---------------------------------------------------------------------------------------------
      #define COLLABLLM_IMPLEMENTATION
      #include "collabllm.h"

      cllm_err err;
      cllm_model model;
      if (cllm_model_load(&model, "path/to/hf-model-dir", &err) != CLLM_OK) {
          fprintf(stderr, "%s\n", err.msg); return 1;
      }
      int ids[] = { 1, 2, 3, 4 };
      cllm_batch batch = { 0 };
      batch.B = 1; batch.T = 4; batch.input_ids = ids;          // labels default to input_ids
      cllm_forward(&model, &batch, NULL, &err);                   // model.loss, model.seq_logp[b]
      cllm_zero_grad(&model);
      cllm_backward(&model, NULL, NULL, &err);                    // d(loss)/d(params) in model.grads
      cllm_adamw_config opt = { 0 };                              // zero = torch defaults, lr 1e-5
      cllm_clip_grad_norm(&model, 1.0);
      cllm_adamw_update(&model, &opt, 1e-5f, &err);
      cllm_model_save(&model, "out-dir", CLLM_DT_F32, &err);      // config.json + model.safetensors
      cllm_model_free(&model);

   ---------------------------------------------------------------------------------------------
   2. API BY TASK            (every function returning cllm_result fills an optional cllm_err)
   ---------------------------------------------------------------------------------------------
   Errors
      cllm_result_string()     -- short text for a result code
   Models (Llama, Qwen2, Qwen3 as Hugging Face defines them)
      cllm_config_parse()      -- read a config.json text into a cllm_config
      cllm_model_load()        -- config.json + model.safetensors (or sharded, via the index) from a directory
      cllm_model_init()        -- a fresh model from a cllm_config with seeded random weights
      cllm_model_save()        -- write config.json + model.safetensors (F32 or BF16), atomically
      cllm_model_free()        -- release everything the model owns (safe on a zeroed model)
      cllm_param_name()        -- HF name of parameter tensor i of layer l ("model.layers.3.mlp.up_proj.weight")
   Forward and backward (fp32; right-padded batches with attention masks)
      cllm_batch_read_jsonl()  -- {"input_ids", "labels"} lines into a padded batch; cllm_batch_free()
      cllm_forward()           -- logits (optional), HF causal-LM loss, per-token and per-sequence log-probs
      cllm_zero_grad()         -- clear the gradient buffer (allocated lazily by the first backward)
      cllm_backward()          -- backprop d(objective)/d(log p of each target token) into model.grads
   Optimisation (torch semantics)
      cllm_adamw_step()        -- one torch.optim.AdamW step on a flat array (the pure function)
      cllm_adamw_update()      -- AdamW over the model (decays 2-D tensors only, as the HF Trainer does)
      cllm_clip_grad_norm()    -- torch.nn.utils.clip_grad_norm_ over all gradients; returns the pre-clip norm
      cllm_lr_at()             -- transformers' warmup + constant / linear / cosine schedules
   Tokenizers (tokenizer.json)
      (section: tokenizer)
   Chat templates and assistant masks
      (section: chat templates)
   Generation (KV cache, sampling)
      (section: generation)
   Chat-completions client, user simulators and judges
      (section: endpoint client, simulators and judges)
   Preference and RL objectives (DPO, PPO, GRPO) and metrics (BLEU)
      (section: objectives and metrics)
   Checkpoint files
      cllm_st_open()           -- open and strictly validate a .safetensors file
      cllm_st_find()           -- look up a tensor by name
      cllm_st_read()           -- read a tensor into cllm_float, converting F32 / F16 / BF16 / F64
      cllm_st_close()
      cllm_st_save()           -- write tensors to a .safetensors file, atomically
   Utilities
      cllm_read_file()         -- read a whole file (NUL-terminated)
      cllm_write_file_atomic() -- write a file through a temporary and a rename
      cllm_rng_seed(), cllm_rng_u32(), cllm_rng_uniform(), cllm_rng_normal()  -- a seeded, portable RNG

   ---------------------------------------------------------------------------------------------
   3. COMPILE-TIME OPTIONS   (define before including the implementation)
   ---------------------------------------------------------------------------------------------
      COLLABLLM_IMPLEMENTATION    create the implementation in this translation unit
      COLLABLLM_STATIC            make every function static (private to the implementing file)
      COLLABLLM_DOUBLE            compute in double instead of float (the tests use this for
                                  finite-difference gradient checks; cllm_float becomes double)
      CLLM_MALLOC(sz) CLLM_REALLOC(p,sz) CLLM_FREE(p)
                                  replace the C allocator; define all three or none
      CLLM_ASSERT(x)              replace assert() (used for internal invariants only, never input)

      Fast paths. The default build runs the readable scalar kernels; these switches add fast
      paths beside them (the scalar kernels stay, as the reference the tests compare against):
      -fopenmp (_OPENMP)          parallel loops: matmul rows or tiles, attention over (batch,
                                  head) pairs, RMSNorm, SwiGLU, RoPE, residual adds and the lm-head
                                  rows. Threads: OMP_NUM_THREADS. Results are bit-identical to
                                  the serial build. CLLM_NO_OPENMP keeps the library serial in a
                                  program that is itself compiled with -fopenmp.
      CLLM_BLOCKED                cache-blocked matmul, forward (3x4 blocks of dot products) and
                                  backward (6x16 blocks of outer products over copied panels);
                                  with one or two rows (decoding) a single pass over the weights.
                                  Same summation order as the reference: identical results.
      CLLM_SIMD                   implies CLLM_BLOCKED, and adds AVX2+FMA microkernels (x86, when
                                  compiled with -mavx2 -mfma or -march=native) or NEON ones (AArch64);
                                  without them, or with COLLABLLM_DOUBLE, the scalar microkernel.
                                  Fused multiply-adds and vector partial sums change the rounding
                                  (~1e-6 relative per matmul or dot product).
      CLLM_NO_HUGEPAGES           with a fast path on Linux, allocations of 8 MB or more ask for
                                  transparent huge pages (madvise); this turns that off.
      Recommended for speed:  -O3 -march=native -fopenmp -DCLLM_SIMD  (see `make bench`).
      COLLABLLM_STB_DS_IMPLEMENTATION
                                  instantiate stb_ds in this file instead of linking Debian's -lstb

      stb_ds. collabllm.h uses stb_ds for growable arrays and hash maps, only under its prefixed
      names (stbds_arrput, ...). stb_ds has no static mode, so the library never instantiates it by
      default: link Debian's libstb (-lstb, which contains the implementation), or define
      COLLABLLM_STB_DS_IMPLEMENTATION in the implementing file if you have no libstb. A host program
      that instantiates stb_ds itself must not do either. collabllm.h includes <stb_ds.h> only in the
      implementing file and defines STBDS_NO_SHORT_NAMES there unless stb_ds.h was already included:
      if that file also wants stb_ds's short names (arrput, hmget, ...), include <stb_ds.h> first.
      stb_ds calls realloc/free directly, not CLLM_REALLOC/CLLM_FREE.

   ---------------------------------------------------------------------------------------------
   4. CONVENTIONS
   ---------------------------------------------------------------------------------------------
   Shapes. B = batch size, T = padded sequence length, C = hidden size, V = vocabulary size,
      L = layers, H = query heads, KV = key/value heads, hd = head dim, I = MLP width.
      Weights keep Hugging Face's nn.Linear layout (out, in): y = x W^T + b.
   Batches are right-padded: input_ids (B,T), attn_mask (B,T) with 1 for real tokens, then 0s.
      A row must start with at least one real token. Labels are HF labels: same shape as input_ids,
      *not* shifted, -100 = ignored; NULL means "input_ids where attn_mask is 1".
   Targets. The logits at position t predict labels[t+1] (HF shifts the labels left by one).
      After cllm_forward: model.loss = mean over counted targets of -log p (HF ForCausalLMLoss),
      model.logp[b*T+t] = log p(labels[b][t+1] | tokens <= t) (0 where not counted),
      model.seq_logp[b] = sum over t of model.logp[b*T+t] (what DPO and PPO call "logps").
   Gradients. cllm_backward takes dlogp (B*T): d(objective)/d(model.logp). NULL means the mean
      cross-entropy loss (dlogp = -1/n_targets on counted targets). DPO, PPO and GRPO build their
      own dlogp; a value head adds dhidden (B*T, C), the gradient at the final normed hidden state.
      Backward accumulates (+=) into model.grads; call cllm_zero_grad between steps.
   Errors. Functions return cllm_result (CLLM_OK = 0) and, when err is not NULL, write a one-line
      message naming what to fix. Bad input never aborts or exits; CLLM_ASSERT guards only
      internal invariants.
   Memory. Parameters, gradients and the two Adam moments are each one contiguous allocation with
      named views (model.params.wq, ...), as in llm.c. Whoever calls *_load / *_init / *_open
      owns the object and releases it with the matching *_free / *_close, which are safe on a
      zeroed object.

   ---------------------------------------------------------------------------------------------
   5. FILE FORMATS
   ---------------------------------------------------------------------------------------------
   Model directory (Hugging Face layout):
      config.json                    model_type "llama" | "qwen2" | "qwen3", sizes, rope settings
      model.safetensors              or model.safetensors.index.json + the shards it lists
   safetensors: u64 little-endian header length N, N bytes of JSON, then the raw tensor bytes.
      Header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
      "__metadata__": {string: string}}. Offsets are relative to the byte buffer after the header.
      The reader checks: N <= 100 MB and inside the file; UTF-8 JSON object; known dtype; shape
      and byte size agree; tensors tile the buffer with no gaps or overlaps and end exactly at EOF;
      no duplicate names. Any failure names the tensor and the problem.
   Tensor names are Hugging Face's (see cllm_param_name). A tied model has no lm_head.weight.

   ---------------------------------------------------------------------------------------------
   6. LIMITS AND TRUST
   ---------------------------------------------------------------------------------------------
      Compute is fp32 (or double with COLLABLLM_DOUBLE). Weights load from F32, F16, BF16, F64.
      Supported model_type: llama (no attention/mlp bias), qwen2 (q/k/v bias, no sliding window),
      qwen3 (q/k RMSNorm, no bias). rope_scaling: none, "default", "llama3", "linear".
      A header size over 100 MB, a tensor over 2^40 elements or more than 8 dims is rejected
      before anything is allocated.
*/

#ifndef COLLABLLM_H
#define COLLABLLM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef CLLMDEF
#ifdef COLLABLLM_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define CLLMDEF static __attribute__((unused))   /* a program need not call every function */
#else
#define CLLMDEF static
#endif
#else
#define CLLMDEF extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifdef COLLABLLM_DOUBLE
typedef double cllm_float;
#else
typedef float cllm_float;
#endif

/* ============================================================================================ */
/* Results and errors                                                                           */
/* ============================================================================================ */

/* One list gives both the enum and the text (sokol style). */
#define CLLM_RESULT_LIST(X)                                                        \
    X(CLLM_OK,              "ok")                                                  \
    X(CLLM_ERR_ARG,         "invalid argument")                                    \
    X(CLLM_ERR_NOMEM,       "out of memory")                                       \
    X(CLLM_ERR_IO,          "file or i/o error")                                   \
    X(CLLM_ERR_FORMAT,      "malformed input")                                     \
    X(CLLM_ERR_UNSUPPORTED, "unsupported feature")                                 \
    X(CLLM_ERR_NUMERIC,     "non-finite value")                                    \
    X(CLLM_ERR_HTTP,        "http or endpoint error")                              \
    X(CLLM_ERR_LIMIT,       "limit exceeded")

typedef enum cllm_result {
#define CLLM__ENUM(name, text) name,
    CLLM_RESULT_LIST(CLLM__ENUM)
#undef CLLM__ENUM
    CLLM_RESULT_COUNT
} cllm_result;

#define CLLM_ERRMSG_SIZE 512
typedef struct cllm_err {
    cllm_result code;            /* same value the function returned */
    char msg[CLLM_ERRMSG_SIZE];  /* one line naming what to fix, e.g. "config.json: missing hidden_size" */
} cllm_err;

CLLMDEF const char *cllm_result_string(cllm_result r);

/* ============================================================================================ */
/* Random numbers: xoshiro128** seeded by splitmix64, identical on every platform               */
/* ============================================================================================ */

typedef struct cllm_rng { uint32_t s[4]; } cllm_rng;
CLLMDEF void     cllm_rng_seed(cllm_rng *r, uint64_t seed);
CLLMDEF uint32_t cllm_rng_u32(cllm_rng *r);
CLLMDEF double   cllm_rng_uniform(cllm_rng *r);   /* [0, 1), 53 random bits */
CLLMDEF double   cllm_rng_normal(cllm_rng *r);    /* N(0, 1), Box-Muller */

/* ============================================================================================ */
/* Files                                                                                        */
/* ============================================================================================ */

/* Reads a whole file into a new buffer with a NUL appended. Free it with cllm_free_buffer. */
CLLMDEF cllm_result cllm_read_file(const char *path, char **out, size_t *len, cllm_err *err);
/* Writes path.tmp.<pid>, flushes it to disk, then renames it over path: readers see the old file
   or the new one, never half of one. */
CLLMDEF cllm_result cllm_write_file_atomic(const char *path, const void *data, size_t len, cllm_err *err);
CLLMDEF void        cllm_free_buffer(void *p);

/* ============================================================================================ */
/* safetensors                                                                                  */
/* ============================================================================================ */

typedef enum cllm_dtype {
    CLLM_DT_F32 = 0, CLLM_DT_F16, CLLM_DT_BF16, CLLM_DT_F64,
    CLLM_DT_I64, CLLM_DT_I32, CLLM_DT_I16, CLLM_DT_I8, CLLM_DT_U8, CLLM_DT_BOOL,
    CLLM_DT_COUNT
} cllm_dtype;

#define CLLM_ST_MAX_DIMS 8
typedef struct cllm_st_tensor {
    char    *name;
    int      dtype;                    /* cllm_dtype */
    int      ndim;                     /* 0 for a scalar */
    int64_t  shape[CLLM_ST_MAX_DIMS];
    uint64_t begin, end;               /* byte offsets relative to the data buffer */
    int64_t  numel;
} cllm_st_tensor;

typedef struct cllm_safetensors {
    char           *path;
    FILE           *file;
    uint64_t        data_start;        /* 8 + header length */
    cllm_st_tensor *tensors;           /* array of n */
    int             n;
} cllm_safetensors;

CLLMDEF cllm_result cllm_st_open(cllm_safetensors *st, const char *path, cllm_err *err);
CLLMDEF const cllm_st_tensor *cllm_st_find(const cllm_safetensors *st, const char *name);
/* Converts to cllm_float; out holds t->numel values. Integer dtypes are rejected. */
CLLMDEF cllm_result cllm_st_read(const cllm_safetensors *st, const cllm_st_tensor *t, cllm_float *out, cllm_err *err);
CLLMDEF void        cllm_st_close(cllm_safetensors *st);

#define CLLM_NAME_MAX 256
typedef struct cllm_st_entry {         /* one tensor to write */
    char              name[CLLM_NAME_MAX];
    int               dtype;           /* CLLM_DT_F32, CLLM_DT_BF16 (round to nearest even) or CLLM_DT_F16 */
    int               ndim;
    int64_t           shape[CLLM_ST_MAX_DIMS];
    const cllm_float *data;            /* numel values */
} cllm_st_entry;
/* Writes the tensors in the order given, with {"format":"pt"} metadata, atomically. */
CLLMDEF cllm_result cllm_st_save(const char *path, const cllm_st_entry *entries, int n, cllm_err *err);

/* ============================================================================================ */
/* Model configuration and parameters                                                          */
/* ============================================================================================ */

typedef enum cllm_arch { CLLM_ARCH_LLAMA = 1, CLLM_ARCH_QWEN2, CLLM_ARCH_QWEN3 } cllm_arch;
typedef enum cllm_rope_type { CLLM_ROPE_DEFAULT = 0, CLLM_ROPE_LLAMA3, CLLM_ROPE_LINEAR } cllm_rope_type;

#define CLLM_MAX_EOS 8
typedef struct cllm_config {
    int   arch;                 /* cllm_arch, from model_type                                   */
    int   vocab_size;           /* V, e.g. 49152                                                 */
    int   hidden_size;          /* C, e.g. 576                                                   */
    int   intermediate_size;    /* I, e.g. 1536                                                  */
    int   n_layers;             /* L, e.g. 30                                                    */
    int   n_heads;              /* H, e.g. 9                                                     */
    int   n_kv_heads;           /* KV, e.g. 3 (num_key_value_heads; default H)                   */
    int   head_dim;             /* hd, e.g. 64 (head_dim; default C / H)                         */
    int   max_position_embeddings; /* e.g. 8192 (informational; longer inputs are allowed)      */
    float rms_norm_eps;         /* e.g. 1e-5                                                     */
    float rope_theta;           /* e.g. 100000 (default 10000)                                   */
    int   rope_type;            /* cllm_rope_type                                                */
    float rope_factor;          /* llama3 / linear: e.g. 32                                      */
    float rope_low_freq_factor; /* llama3: e.g. 1                                                */
    float rope_high_freq_factor;/* llama3: e.g. 4                                                */
    int   rope_original_max_pos;/* llama3: e.g. 8192                                             */
    int   tie_word_embeddings;  /* 1: lm_head shares embed_tokens                               */
    int   attention_bias;       /* 1: q/k/v projections have biases (qwen2)                     */
    int   qk_norm;              /* 1: per-head RMSNorm on q and k before RoPE (qwen3)           */
    int   bos_token_id;         /* -1 if none                                                    */
    int   eos_token_ids[CLLM_MAX_EOS]; /* eos_token_id, an int or a list                        */
    int   n_eos;
} cllm_config;

/* Parameter tensors, in checkpoint order. Per-layer tensors are stacked with a leading L. */
#define CLLM_NUM_PARAM_TENSORS 17
typedef struct cllm_params {
    cllm_float *embed;       /* (V, C)         model.embed_tokens.weight                          */
    cllm_float *attn_norm;   /* (L, C)         model.layers.N.input_layernorm.weight              */
    cllm_float *wq;          /* (L, H*hd, C)   model.layers.N.self_attn.q_proj.weight             */
    cllm_float *bq;          /* (L, H*hd)      ...q_proj.bias             (attention_bias only)   */
    cllm_float *wk;          /* (L, KV*hd, C)  ...k_proj.weight                                   */
    cllm_float *bk;          /* (L, KV*hd)     ...k_proj.bias             (attention_bias only)   */
    cllm_float *wv;          /* (L, KV*hd, C)  ...v_proj.weight                                   */
    cllm_float *bv;          /* (L, KV*hd)     ...v_proj.bias             (attention_bias only)   */
    cllm_float *q_norm;      /* (L, hd)        ...self_attn.q_norm.weight (qk_norm only)          */
    cllm_float *k_norm;      /* (L, hd)        ...self_attn.k_norm.weight (qk_norm only)          */
    cllm_float *wo;          /* (L, C, H*hd)   ...o_proj.weight                                   */
    cllm_float *mlp_norm;    /* (L, C)         model.layers.N.post_attention_layernorm.weight     */
    cllm_float *w_gate;      /* (L, I, C)      model.layers.N.mlp.gate_proj.weight                */
    cllm_float *w_up;        /* (L, I, C)      ...mlp.up_proj.weight                              */
    cllm_float *w_down;      /* (L, C, I)      ...mlp.down_proj.weight                            */
    cllm_float *final_norm;  /* (C)            model.norm.weight                                  */
    cllm_float *lm_head;     /* (V, C)         lm_head.weight (untied); == embed when tied        */
} cllm_params;

/* Activations saved by the forward pass for the backward pass (B*T rows each). ln1, ln2 and
   act are cheap functions of x, h, gate and up, so they hold one layer only (the last one
   after cllm_forward); the backward pass recomputes them for each layer, bit for bit.        */
typedef struct cllm_acts {
    cllm_float *x;           /* (L+1, BT, C)   residual stream entering layer l; x[L] enters the final norm */
    cllm_float *ln1;         /* (BT, C)        input_layernorm output (of one layer)                */
    cllm_float *ln1_rstd;    /* (L, BT)        1/sqrt(mean(x^2)+eps)                               */
    cllm_float *q_pre;       /* (L, BT, H*hd)  q before the q/k norm (qk_norm only)                */
    cllm_float *k_pre;       /* (L, BT, KV*hd)                                                     */
    cllm_float *q_rstd;      /* (L, BT, H)     (qk_norm only)                                      */
    cllm_float *k_rstd;      /* (L, BT, KV)                                                        */
    cllm_float *q;           /* (L, BT, H*hd)  queries after RoPE                                  */
    cllm_float *k;           /* (L, BT, KV*hd) keys after RoPE                                     */
    cllm_float *v;           /* (L, BT, KV*hd) values                                              */
    cllm_float *att_lse;     /* (L, B, H, T)   log-sum-exp of each attention row; the backward pass
                                               recomputes the probabilities from it               */
    cllm_float *atty;        /* (L, BT, H*hd)  attention output before o_proj                      */
    cllm_float *h;           /* (L, BT, C)     residual stream after attention                     */
    cllm_float *ln2;         /* (BT, C)        post_attention_layernorm output (of one layer)       */
    cllm_float *ln2_rstd;    /* (L, BT)                                                            */
    cllm_float *gate;        /* (L, BT, I)     gate_proj output                                    */
    cllm_float *up;          /* (L, BT, I)     up_proj output                                      */
    cllm_float *act;         /* (BT, I)        silu(gate) * up (of one layer)                       */
    cllm_float *lnf;         /* (BT, C)        final norm output = the "last hidden state"         */
    cllm_float *lnf_rstd;    /* (BT)                                                               */
    cllm_float *lse;         /* (BT)           logsumexp of each (temperature-scaled) logits row   */
    cllm_float *logp;        /* (BT)           log p(target) at each position, 0 where ignored     */
    cllm_float *entropy;     /* (BT)           entropy of the next-token distribution               */
} cllm_acts;
#define CLLM_NUM_ACT_TENSORS 23

typedef struct cllm_model {
    cllm_config  config;
    /* parameters: one allocation, named views */
    cllm_params  params;
    size_t       param_sizes[CLLM_NUM_PARAM_TENSORS]; /* elements; 0 = tensor absent */
    size_t       num_params;
    cllm_float  *params_memory;
    /* gradients: same layout, allocated by the first cllm_backward */
    cllm_params  grads;
    cllm_float  *grads_memory;
    /* AdamW first and second moments, allocated by the first cllm_adamw_update */
    cllm_float  *m_memory, *v_memory;
    int          adam_t;                 /* number of AdamW steps taken */
    /* activations of the last forward, sized for up to acts_cap rows of B*T */
    cllm_acts    acts;
    size_t       acts_cap;
    cllm_float  *acts_memory;
    cllm_float  *scratch;                /* backward and lm-head work space */
    /* the last forward's batch and results */
    int          B, T;
    int         *input_ids;              /* (B*T) */
    int         *targets;                /* (B*T) shifted labels, -100 = ignored */
    int         *mask;                   /* (B*T) attention mask */
    float        inv_temperature;
    cllm_float  *seq_logp;               /* (B) */
    cllm_float   loss;                   /* mean -log p over counted targets (0 if none) */
    int          n_targets;
    cllm_float  *rope_cos, *rope_sin;    /* (T, hd/2) tables for the current length */
    int          rope_len;
    struct cJSON *hf_config;             /* the original config.json, written back on save */
} cllm_model;

/* Name of parameter tensor i (0..CLLM_NUM_PARAM_TENSORS-1) for layer `layer`, as in the checkpoint. */
CLLMDEF void        cllm_param_name(int i, int layer, char *buf, size_t bufsize);
CLLMDEF cllm_result cllm_config_parse(cllm_config *c, const char *json_text, size_t len, cllm_err *err);
CLLMDEF cllm_result cllm_model_load(cllm_model *m, const char *dir, cllm_err *err);
CLLMDEF cllm_result cllm_model_init(cllm_model *m, const cllm_config *c, uint64_t seed, cllm_err *err);
CLLMDEF cllm_result cllm_model_save(const cllm_model *m, const char *dir, cllm_dtype dtype, cllm_err *err);
CLLMDEF void        cllm_model_free(cllm_model *m);
/* The model's tensors as checkpoint entries, one per HF tensor (per-layer stacks are split):
   names get `prefix` (e.g. "grad."), data points into `memory`, which is params_memory,
   grads_memory or any buffer with the same layout. Returns the count; `entries` must hold
   cllm_model_tensor_count(m). */
CLLMDEF int         cllm_model_tensor_count(const cllm_model *m);
CLLMDEF int         cllm_model_entries(const cllm_model *m, const cllm_float *memory, const char *prefix,
                                       cllm_dtype dtype, cllm_st_entry *entries);

/* ============================================================================================ */
/* Forward and backward                                                                         */
/* ============================================================================================ */

typedef struct cllm_batch {
    int        B, T;          /* batch size, padded length                                        */
    const int *input_ids;     /* (B, T)                                                           */
    const int *labels;        /* (B, T) HF labels, unshifted, -100 = ignored (default: input_ids
                                 where attn_mask is 1)                                            */
    const int *attn_mask;     /* (B, T) 1 = token, 0 = right padding (default: all 1)            */
    float      temperature;   /* log-probs use softmax(logits / temperature) (default 1; PPO
                                 scores rollouts at the sampling temperature)                     */
} cllm_batch;

/* Reads JSONL lines {"input_ids": [..], "labels": [..]} (labels optional, default input_ids;
   -100 = ignored) into a right-padded batch that it allocates: pad id 0, attn_mask 0 and label
   -100 on pads. Release it with cllm_batch_free (only batches made here). */
CLLMDEF cllm_result cllm_batch_read_jsonl(cllm_batch *batch, const char *path, cllm_err *err);
CLLMDEF void        cllm_batch_free(cllm_batch *batch);

/* logits_out: optional (B, T, V) buffer that receives the raw logits (before temperature). */
CLLMDEF cllm_result cllm_forward(cllm_model *m, const cllm_batch *batch, cllm_float *logits_out, cllm_err *err);
CLLMDEF cllm_result cllm_zero_grad(cllm_model *m, cllm_err *err);
/* dlogp: (B*T) gradient of the objective w.r.t. model.acts.logp, or NULL for the mean CE loss.
   dhidden: optional (B*T, C) gradient w.r.t. model.acts.lnf (e.g. from a value head). */
CLLMDEF cllm_result cllm_backward(cllm_model *m, const cllm_float *dlogp, const cllm_float *dhidden, cllm_err *err);

/* ============================================================================================ */
/* Optimisation                                                                                 */
/* ============================================================================================ */

typedef struct cllm_adamw_config {
    float beta1;         /* default 0.9                                                           */
    float beta2;         /* default 0.999                                                         */
    float eps;           /* default 1e-8                                                          */
    float weight_decay;  /* default 0 (HF TrainingArguments); applied to 2-D tensors only         */
} cllm_adamw_config;

/* torch.optim.AdamW on n values, step t (1-based):
     p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
     p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)                                         */
CLLMDEF void   cllm_adamw_step(cllm_float *p, const cllm_float *g, cllm_float *m, cllm_float *v, size_t n,
                               int t, double lr, double beta1, double beta2, double eps, double wd);
CLLMDEF cllm_result cllm_adamw_update(cllm_model *model, const cllm_adamw_config *cfg, double lr, cllm_err *err);
/* Global L2 norm of all gradients; if above max_norm, scales them by max_norm/(norm+1e-6). */
CLLMDEF double cllm_clip_grad_norm(cllm_model *m, double max_norm);
CLLMDEF double cllm_clip_grad_norm_arrays(cllm_float **grads, const size_t *sizes, int n, double max_norm);

typedef enum cllm_schedule { CLLM_SCHED_CONSTANT = 0, CLLM_SCHED_LINEAR, CLLM_SCHED_COSINE } cllm_schedule;
/* transformers' schedules, step = number of optimiser steps already taken (the first update uses
   step 0): warmup s/W for s < W, then constant, linear (T-s)/(T-W), or cosine 0.5(1+cos(pi p)). */
CLLMDEF double cllm_lr_at(cllm_schedule kind, double base_lr, long step, long warmup, long total);

/* ============================================================================================ */
/* Tokenizer: Hugging Face tokenizer.json, byte-level BPE                                       */
/* ============================================================================================ */

/* (declarations: tokenizer) */

/* ============================================================================================ */
/* Chat templates and assistant masks                                                           */
/* ============================================================================================ */

/* (declarations: chat templates) */

/* ============================================================================================ */
/* Generation: KV cache and sampling                                                            */
/* ============================================================================================ */

/* (declarations: generation) */

/* ============================================================================================ */
/* Chat-completions client (libcurl), user simulators and judges                                */
/* ============================================================================================ */

/* (declarations: endpoint client, simulators and judges) */

/* ============================================================================================ */
/* Objectives (DPO, PPO, GRPO) and metrics (BLEU)                                               */
/* ============================================================================================ */

/* (declarations: objectives and metrics) */

#ifdef __cplusplus
}
#endif
#endif /* COLLABLLM_H */

/* ############################################################################################ */
/*                                                                                              */
/*                                       IMPLEMENTATION                                         */
/*                                                                                              */
/* ############################################################################################ */

#ifdef COLLABLLM_IMPLEMENTATION
#ifndef COLLABLLM_IMPLEMENTATION_DONE
#define COLLABLLM_IMPLEMENTATION_DONE

#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <math.h>
#include <errno.h>
#include <limits.h>
#include <float.h>
#include <cjson/cJSON.h>

#ifndef INCLUDE_STB_DS_H
#define STBDS_NO_SHORT_NAMES
#endif
#ifdef COLLABLLM_STB_DS_IMPLEMENTATION
#define STB_DS_IMPLEMENTATION
#endif
#include <stb/stb_ds.h>

#if defined(_WIN32)
#include <io.h>
#include <process.h>
#define cllm__getpid _getpid
#else
#include <unistd.h>
#include <sys/stat.h>
#define cllm__getpid getpid
extern int fileno(FILE *);   /* POSIX; declared here because strict -std=c99 hides it in <stdio.h> */
#endif

#if defined(CLLM_MALLOC) && defined(CLLM_REALLOC) && defined(CLLM_FREE)
/* ok: all three given */
#elif !defined(CLLM_MALLOC) && !defined(CLLM_REALLOC) && !defined(CLLM_FREE)
#define CLLM_MALLOC(sz)    malloc(sz)
#define CLLM_REALLOC(p,sz) realloc(p,sz)
#define CLLM_FREE(p)       free(p)
#else
#error "Define all or none of CLLM_MALLOC, CLLM_REALLOC and CLLM_FREE."
#endif

#ifndef CLLM_ASSERT
#include <assert.h>
#define CLLM_ASSERT(x) assert(x)
#endif

#ifdef COLLABLLM_DOUBLE
#define cllm__exp  exp
#define cllm__log  log
#define cllm__sqrt sqrt
#define cllm__cos  cos
#define cllm__sin  sin
#define cllm__pow  pow
#else
#define cllm__exp  expf
#define cllm__log  logf
#define cllm__sqrt sqrtf
#define cllm__cos  cosf
#define cllm__sin  sinf
#define cllm__pow  powf
#endif

/* "zero means default", applied in one place per config struct (sokol's _def) */
#define cllm__def(val, def) (((val) == 0) ? (def) : (val))

/* -------------------------------------------------------------------------------------------- */
/* Errors                                                                                       */
/* -------------------------------------------------------------------------------------------- */

CLLMDEF const char *cllm_result_string(cllm_result r) {
    static const char *texts[] = {
#define CLLM__TEXT(name, text) text,
        CLLM_RESULT_LIST(CLLM__TEXT)
#undef CLLM__TEXT
    };
    if ((int)r < 0 || (int)r >= CLLM_RESULT_COUNT) return "unknown result";
    return texts[r];
}

/* Records an error and returns its code, so that failures read `return cllm__fail(err, ...);`. */
static cllm_result cllm__fail(cllm_err *err, cllm_result code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void cllm__ok(cllm_err *err) {
    if (err) { err->code = CLLM_OK; err->msg[0] = 0; }
}

/* With a fast path on, Linux backs allocations of 8 MB or more (weights, gradients, moments,
   activations) with 2 MB pages where it can (transparent huge pages, "madvise" mode): matmuls
   walk rows far apart, and with 4 KB pages nearly every row costs a TLB miss. Advice only:
   nothing changes if the kernel declines. CLLM_NO_HUGEPAGES turns it off. */
#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__)) && !defined(CLLM_NO_HUGEPAGES) && \
    (defined(_OPENMP) || defined(CLLM_BLOCKED) || defined(CLLM_SIMD))
extern int madvise(void *, size_t, int);   /* <sys/mman.h> hides it in strict C99 */
static void cllm__advise_huge(void *p, size_t bytes) {
    uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, e = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
    if (bytes >= ((size_t)8 << 20) && e > a) madvise((void *)a, (size_t)(e - a), 14 /* MADV_HUGEPAGE */);
}
#else
#define cllm__advise_huge(p, bytes) ((void)0)
#endif

/* Allocation with overflow-checked sizes; returns NULL on overflow or failure. */
static void *cllm__calloc(size_t n, size_t size) {
    void *p;
    size_t bytes;
    if (size && n > SIZE_MAX / size) return NULL;
    bytes = n * size;
    p = CLLM_MALLOC(bytes > 0 ? bytes : 1);
    if (p) { cllm__advise_huge(p, bytes); memset(p, 0, bytes); }
    return p;
}

static char *cllm__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)CLLM_MALLOC(n);
    if (d) memcpy(d, s, n);
    return d;
}

CLLMDEF void cllm_free_buffer(void *p) { CLLM_FREE(p); }

/* -------------------------------------------------------------------------------------------- */
/* Random numbers                                                                               */
/* -------------------------------------------------------------------------------------------- */

static uint64_t cllm__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

CLLMDEF void cllm_rng_seed(cllm_rng *r, uint64_t seed) {
    uint64_t a = cllm__splitmix64(&seed), b = cllm__splitmix64(&seed);
    r->s[0] = (uint32_t)a; r->s[1] = (uint32_t)(a >> 32);
    r->s[2] = (uint32_t)b; r->s[3] = (uint32_t)(b >> 32);
}

static uint32_t cllm__rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

CLLMDEF uint32_t cllm_rng_u32(cllm_rng *r) {
    uint32_t *s = r->s;
    uint32_t result = cllm__rotl(s[1] * 5, 7) * 9;
    uint32_t t = s[1] << 9;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = cllm__rotl(s[3], 11);
    return result;
}

CLLMDEF double cllm_rng_uniform(cllm_rng *r) {
    uint64_t hi = cllm_rng_u32(r) >> 5, lo = cllm_rng_u32(r) >> 6;   /* 27 + 26 = 53 bits */
    return (double)(hi * 67108864.0 + lo) / 9007199254740992.0;
}

CLLMDEF double cllm_rng_normal(cllm_rng *r) {
    double u1 = cllm_rng_uniform(r), u2 = cllm_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* -------------------------------------------------------------------------------------------- */
/* Files                                                                                        */
/* -------------------------------------------------------------------------------------------- */

CLLMDEF cllm_result cllm_read_file(const char *path, char **out, size_t *len, cllm_err *err) {
    FILE *f;
    long size;
    char *buf;
    *out = NULL;
    if (len) *len = 0;
    f = fopen(path, "rb");
    if (!f) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return cllm__fail(err, CLLM_ERR_IO, "%s: cannot determine the file size", path);
    }
    buf = (char *)CLLM_MALLOC((size_t)size + 1);
    if (!buf) { fclose(f); return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory reading %ld bytes", path, size); }
    if (size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f); CLLM_FREE(buf);
        return cllm__fail(err, CLLM_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    buf[size] = 0;
    *out = buf;
    if (len) *len = (size_t)size;
    cllm__ok(err);
    return CLLM_OK;
}

/* The temporary file is path.tmp.<pid> in the same directory, so rename() stays on one file
   system and is atomic on POSIX. fsync makes the data durable before the name moves. */
static FILE *cllm__open_temp(const char *path, char *tmp, size_t tmpsize, cllm_err *err) {
    FILE *f;
    snprintf(tmp, tmpsize, "%s.tmp.%ld", path, (long)cllm__getpid());
    f = fopen(tmp, "wb");
    if (!f) cllm__fail(err, CLLM_ERR_IO, "%s: cannot create (%s)", tmp, strerror(errno));
    return f;
}

static cllm_result cllm__commit_temp(FILE *f, const char *tmp, const char *path, cllm_err *err) {
    int bad = ferror(f) != 0;
    bad |= fflush(f) != 0;
#if !defined(_WIN32)
    bad |= fsync(fileno(f)) != 0;
#endif
    bad |= fclose(f) != 0;
    if (bad) {
        remove(tmp);
        return cllm__fail(err, CLLM_ERR_IO, "%s: write failed (%s); the previous file is untouched", path, strerror(errno));
    }
#if defined(_WIN32)
    remove(path);
#endif
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return cllm__fail(err, CLLM_ERR_IO, "%s: cannot rename the temporary file into place (%s)", path, strerror(errno));
    }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_write_file_atomic(const char *path, const void *data, size_t len, cllm_err *err) {
    char tmp[4096];
    FILE *f = cllm__open_temp(path, tmp, sizeof tmp, err);
    if (!f) return CLLM_ERR_IO;
    if (len && fwrite(data, 1, len, f) != len) {
        fclose(f); remove(tmp);
        return cllm__fail(err, CLLM_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
    }
    return cllm__commit_temp(f, tmp, path, err);
}

static int cllm__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* -------------------------------------------------------------------------------------------- */
/* safetensors: strict reader and atomic writer                                                 */
/* -------------------------------------------------------------------------------------------- */
/* Layout: u64 LE header length N | N bytes JSON | byte buffer. Each tensor entry gives dtype,
   shape and [begin, end) offsets into the buffer. We reject anything the reference Rust reader
   rejects (header bound, gaps, overlaps, trailing bytes, size mismatch, duplicates), because a
   file that only we accept would not be loadable by transformers or vLLM. */

#define CLLM_ST_MAX_HEADER   100000000ull          /* the Rust reader's MAX_HEADER_SIZE */
#define CLLM_ST_MAX_NUMEL    (1ll << 40)

static const char *cllm__dtype_names[CLLM_DT_COUNT] = {
    "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL" };
static const int cllm__dtype_sizes[CLLM_DT_COUNT] = { 4, 2, 2, 8, 8, 4, 2, 1, 1, 1 };

static int cllm__dtype_from_name(const char *s) {
    int i;
    for (i = 0; i < CLLM_DT_COUNT; i++) if (strcmp(s, cllm__dtype_names[i]) == 0) return i;
    return -1;
}

/* IEEE half -> float, including subnormals, infinities and NaN. */
static float cllm__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    float f;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else {                                   /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            mant &= 0x3FF;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) bits = sign | 0x7F800000u | (mant << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> half, round to nearest even, overflow to infinity, NaN kept quiet. */
static uint16_t cllm__f32_to_f16(float f) {
    uint32_t x, sign, mant; int exp;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000; exp = (int)((x >> 23) & 0xFF) - 127 + 15; mant = x & 0x7FFFFF;
    if (((x >> 23) & 0xFF) == 0xFF) return (uint16_t)(sign | 0x7C00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7C00);
    if (exp <= 0) {                              /* subnormal or zero */
        uint32_t m, half, r; int shift;
        if (exp < -10) return (uint16_t)sign;
        m = mant | 0x800000; shift = 14 - exp;
        half = 1u << (shift - 1); r = m >> shift;
        if ((m & ((1u << shift) - 1)) > half || ((m & ((1u << shift) - 1)) == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    {
        uint32_t r = ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1FFF;
        if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;   /* may carry into the exponent: correct */
        return (uint16_t)(sign | r);
    }
}

static float cllm__bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16; float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t cllm__f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7F800000u) == 0x7F800000u && (x & 0x7FFFFF)) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7FFF + ((x >> 16) & 1);                /* round to nearest even */
    return (uint16_t)(x >> 16);
}

static int cllm__st_cmp_name(const void *a, const void *b) {
    return strcmp(((const cllm_st_tensor *)a)->name, ((const cllm_st_tensor *)b)->name);
}

static int cllm__st_cmp_offset(const void *a, const void *b) {
    const cllm_st_tensor *x = *(const cllm_st_tensor *const *)a, *y = *(const cllm_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A JSON number that is a non-negative integer below 2^53. */
static int cllm__json_u53(const cJSON *j, uint64_t *out) {
    double d;
    if (!cJSON_IsNumber(j)) return 0;
    d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

CLLMDEF void cllm_st_close(cllm_safetensors *st) {
    int i;
    if (!st) return;
    if (st->file) fclose(st->file);
    for (i = 0; i < st->n; i++) CLLM_FREE(st->tensors[i].name);
    CLLM_FREE(st->tensors);
    CLLM_FREE(st->path);
    memset(st, 0, sizeof *st);
}

/* Parses one tensor entry of the header into t, naming the problem in err. */
static cllm_result cllm__st_parse_entry(const char *path, const cJSON *item, cllm_st_tensor *t, cllm_err *err) {
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    const cJSON *d;
    const char *name = item->string;
    uint64_t begin, end, dim;
    int64_t numel = 1;
    if (!cJSON_IsObject(item))
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", path, name);
    if (!cJSON_IsString(dt))
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': missing \"dtype\"", path, name);
    t->dtype = cllm__dtype_from_name(dt->valuestring);
    if (t->dtype < 0)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: tensor '%s': unknown or unsupported dtype '%s' (supported: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)", path, name, dt->valuestring);
    if (!cJSON_IsArray(shape))
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': missing \"shape\" array", path, name);
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > CLLM_ST_MAX_DIMS)
        return cllm__fail(err, CLLM_ERR_LIMIT, "%s: tensor '%s': %d dimensions (at most %d)", path, name, t->ndim, CLLM_ST_MAX_DIMS);
    t->ndim = 0;
    cJSON_ArrayForEach(d, shape) {
        if (!cllm__json_u53(d, &dim) || dim > (uint64_t)CLLM_ST_MAX_NUMEL)
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': shape entries must be integers in [0, 2^40]", path, name);
        t->shape[t->ndim++] = (int64_t)dim;
        if (dim && numel > CLLM_ST_MAX_NUMEL / (int64_t)dim)
            return cllm__fail(err, CLLM_ERR_LIMIT, "%s: tensor '%s': more than 2^40 elements", path, name);
        numel *= (int64_t)dim;
    }
    t->numel = numel;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !cllm__json_u53(cJSON_GetArrayItem(offs, 0), &begin) || !cllm__json_u53(cJSON_GetArrayItem(offs, 1), &end))
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be two non-negative integers", path, name);
    if (end < begin)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': data_offsets end %llu is before begin %llu", path, name, (unsigned long long)end, (unsigned long long)begin);
    if (end - begin != (uint64_t)numel * (uint64_t)cllm__dtype_sizes[t->dtype])
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': %llu bytes in data_offsets but shape x %s needs %llu", path, name,
                          (unsigned long long)(end - begin), dt->valuestring, (unsigned long long)numel * (unsigned long long)cllm__dtype_sizes[t->dtype]);
    t->begin = begin; t->end = end;
    t->name = cllm__strdup(name);
    if (!t->name) return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_st_open(cllm_safetensors *st, const char *path, cllm_err *err) {
    unsigned char lenbuf[8];
    uint64_t hlen = 0, fsize, bufsize, expect;
    long sz;
    char *header = NULL;
    const char *parse_end = NULL;
    cJSON *root = NULL, *item;
    cllm_st_tensor **order = NULL;
    cllm_result rc = CLLM_OK;
    int i, count = 0;

    memset(st, 0, sizeof *st);
    st->path = cllm__strdup(path);
    st->file = fopen(path, "rb");
    if (!st->path || !st->file) { rc = cllm__fail(err, CLLM_ERR_IO, "%s: cannot open (%s)", path, strerror(errno)); goto done; }
    if (fseek(st->file, 0, SEEK_END) != 0 || (sz = ftell(st->file)) < 0) { rc = cllm__fail(err, CLLM_ERR_IO, "%s: cannot size the file", path); goto done; }
    fsize = (uint64_t)sz;
    rewind(st->file);
    if (fsize < 8 || fread(lenbuf, 1, 8, st->file) != 8) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: truncated: shorter than the 8-byte header length", path); goto done; }
    for (i = 7; i >= 0; i--) hlen = (hlen << 8) | lenbuf[i];
    if (hlen > CLLM_ST_MAX_HEADER) { rc = cllm__fail(err, CLLM_ERR_LIMIT, "%s: header length %llu exceeds the 100 MB limit (corrupt or not a safetensors file?)", path, (unsigned long long)hlen); goto done; }
    if (hlen > fsize - 8) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: header length %llu is larger than the file (%llu bytes): truncated or corrupt", path, (unsigned long long)hlen, (unsigned long long)fsize); goto done; }
    if (hlen < 2) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: header too short to hold a JSON object", path); goto done; }
    header = (char *)CLLM_MALLOC((size_t)hlen + 1);
    if (!header) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory for the header", path); goto done; }
    if (fread(header, 1, (size_t)hlen, st->file) != hlen) { rc = cllm__fail(err, CLLM_ERR_IO, "%s: short read in the header", path); goto done; }
    header[hlen] = 0;
    if (header[0] != '{') { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: header does not start with '{'", path); goto done; }
    root = cJSON_ParseWithLengthOpts(header, (size_t)hlen, &parse_end, 0);
    if (!root || !cJSON_IsObject(root)) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: header is not valid JSON (near byte %ld)", path, parse_end ? (long)(parse_end - header) : 0L); goto done; }
    for (; parse_end && parse_end < header + hlen; parse_end++)
        if (*parse_end != ' ') { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: unexpected bytes after the header JSON (only space padding is allowed)", path); goto done; }

    st->data_start = 8 + hlen;
    bufsize = fsize - st->data_start;
    cJSON_ArrayForEach(item, root) count++;
    st->tensors = (cllm_st_tensor *)cllm__calloc((size_t)count + 1, sizeof(cllm_st_tensor));
    if (!st->tensors) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path); goto done; }
    cJSON_ArrayForEach(item, root) {
        if (item->string && strcmp(item->string, "__metadata__") == 0) {
            const cJSON *kv;
            if (!cJSON_IsObject(item)) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: __metadata__ must be an object of strings", path); goto done; }
            cJSON_ArrayForEach(kv, item) if (!cJSON_IsString(kv)) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string", path, kv->string); goto done; }
            continue;
        }
        rc = cllm__st_parse_entry(path, item, &st->tensors[st->n], err);
        if (rc != CLLM_OK) goto done;
        st->n++;
    }

    /* names: sorted for binary search, and duplicates rejected */
    qsort(st->tensors, (size_t)st->n, sizeof(cllm_st_tensor), cllm__st_cmp_name);
    for (i = 1; i < st->n; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", path, st->tensors[i].name); goto done; }

    /* offsets: sorted, the tensors must tile [0, bufsize) exactly */
    order = (cllm_st_tensor **)cllm__calloc((size_t)st->n + 1, sizeof(*order));
    if (!order) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path); goto done; }
    for (i = 0; i < st->n; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n, sizeof(*order), cllm__st_cmp_offset);
    expect = 0;
    for (i = 0; i < st->n; i++) {
        if (order[i]->begin > bufsize || order[i]->end > bufsize) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu) run past the end of the file's %llu data bytes (truncated?)", path, order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end, (unsigned long long)bufsize); goto done; }
        if (order[i]->begin < expect) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': data_offsets overlap the previous tensor (begin %llu < %llu)", path, order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)expect); goto done; }
        if (order[i]->begin > expect) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': gap before its data (begin %llu, previous end %llu); tensors must be contiguous", path, order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)expect); goto done; }
        expect = order[i]->end;
    }
    if (expect != bufsize) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor", path, (unsigned long long)(bufsize - expect)); goto done; }

done:
    CLLM_FREE(order);
    CLLM_FREE(header);
    cJSON_Delete(root);
    if (rc != CLLM_OK) cllm_st_close(st);
    else cllm__ok(err);
    return rc;
}

CLLMDEF const cllm_st_tensor *cllm_st_find(const cllm_safetensors *st, const char *name) {
    cllm_st_tensor key;
    key.name = (char *)name;
    if (!st || st->n == 0) return NULL;
    return (const cllm_st_tensor *)bsearch(&key, st->tensors, (size_t)st->n, sizeof(cllm_st_tensor), cllm__st_cmp_name);
}

CLLMDEF cllm_result cllm_st_read(const cllm_safetensors *st, const cllm_st_tensor *t, cllm_float *out, cllm_err *err) {
    #define CLLM__ST_CHUNK 8192
    unsigned char buf[CLLM__ST_CHUNK * 8];
    int esize;
    int64_t done = 0;
    if (t->dtype != CLLM_DT_F32 && t->dtype != CLLM_DT_F16 && t->dtype != CLLM_DT_BF16 && t->dtype != CLLM_DT_F64)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s cannot be read as floating point", st->path, t->name, cllm__dtype_names[t->dtype]);
    esize = cllm__dtype_sizes[t->dtype];
    if (fseek(st->file, (long)(st->data_start + t->begin), SEEK_SET) != 0)
        return cllm__fail(err, CLLM_ERR_IO, "%s: tensor '%s': seek failed", st->path, t->name);
    while (done < t->numel) {
        int64_t i, n = t->numel - done < CLLM__ST_CHUNK ? t->numel - done : CLLM__ST_CHUNK;
        if (fread(buf, (size_t)esize, (size_t)n, st->file) != (size_t)n)
            return cllm__fail(err, CLLM_ERR_IO, "%s: tensor '%s': short read (file changed or truncated?)", st->path, t->name);
        for (i = 0; i < n; i++) {
            const unsigned char *b = buf + i * esize;
            cllm_float *o = out + done + i;
            switch (t->dtype) {
            case CLLM_DT_F32: { uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24; float f; memcpy(&f, &u, 4); *o = (cllm_float)f; break; }
            case CLLM_DT_F16:  *o = (cllm_float)cllm__f16_to_f32((uint16_t)(b[0] | b[1] << 8)); break;
            case CLLM_DT_BF16: *o = (cllm_float)cllm__bf16_to_f32((uint16_t)(b[0] | b[1] << 8)); break;
            default: { uint64_t u = 0; double d; int k; for (k = 7; k >= 0; k--) u = (u << 8) | b[k]; memcpy(&d, &u, 8); *o = (cllm_float)d; break; }
            }
        }
        done += n;
    }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_st_save(const char *path, const cllm_st_entry *entries, int n, cllm_err *err) {
    cJSON *root = cJSON_CreateObject(), *meta;
    char *json = NULL, tmp[4096];
    FILE *f = NULL;
    uint64_t offset = 0, hlen;
    size_t jlen;
    unsigned char lenbuf[8];
    int i, k;
    cllm_result rc = CLLM_OK;

    if (!root) return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path);
    meta = cJSON_AddObjectToObject(root, "__metadata__");
    if (meta) cJSON_AddStringToObject(meta, "format", "pt");
    for (i = 0; i < n; i++) {
        const cllm_st_entry *e = &entries[i];
        cJSON *t, *shape, *offs;
        int64_t numel = 1;
        if (e->dtype != CLLM_DT_F32 && e->dtype != CLLM_DT_BF16 && e->dtype != CLLM_DT_F16) { rc = cllm__fail(err, CLLM_ERR_ARG, "%s: tensor '%s': can only write F32, BF16 or F16", path, e->name); goto done; }
        if (e->ndim < 0 || e->ndim > CLLM_ST_MAX_DIMS) { rc = cllm__fail(err, CLLM_ERR_ARG, "%s: tensor '%s': bad ndim %d", path, e->name, e->ndim); goto done; }
        t = cJSON_AddObjectToObject(root, e->name);
        shape = cJSON_CreateArray(); offs = cJSON_CreateArray();
        if (!t || !shape || !offs) { cJSON_Delete(shape); cJSON_Delete(offs); rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path); goto done; }
        cJSON_AddStringToObject(t, "dtype", cllm__dtype_names[e->dtype]);
        for (k = 0; k < e->ndim; k++) { cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[k])); numel *= e->shape[k]; }
        cJSON_AddItemToObject(t, "shape", shape);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        offset += (uint64_t)numel * (uint64_t)cllm__dtype_sizes[e->dtype];
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToObject(t, "data_offsets", offs);
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path); goto done; }
    jlen = strlen(json);
    hlen = (uint64_t)jlen;
    while ((8 + hlen) % 8) hlen++;                     /* pad with spaces so the data is aligned */
    for (k = 0; k < 8; k++) lenbuf[k] = (unsigned char)(hlen >> (8 * k));
    f = cllm__open_temp(path, tmp, sizeof tmp, err);
    if (!f) { rc = CLLM_ERR_IO; goto done; }
    fwrite(lenbuf, 1, 8, f);
    fwrite(json, 1, jlen, f);
    for (k = 0; k < (int)(hlen - jlen); k++) fputc(' ', f);
    for (i = 0; i < n; i++) {
        const cllm_st_entry *e = &entries[i];
        int64_t j, numel = 1;
        for (k = 0; k < e->ndim; k++) numel *= e->shape[k];
        for (j = 0; j < numel; j++) {
            unsigned char b[4];
            float x = (float)e->data[j];
            if (e->dtype == CLLM_DT_F32) {
                uint32_t u; memcpy(&u, &x, 4);
                b[0] = (unsigned char)u; b[1] = (unsigned char)(u >> 8); b[2] = (unsigned char)(u >> 16); b[3] = (unsigned char)(u >> 24);
                fwrite(b, 1, 4, f);
            } else {
                uint16_t u = e->dtype == CLLM_DT_BF16 ? cllm__f32_to_bf16(x) : cllm__f32_to_f16(x);
                b[0] = (unsigned char)u; b[1] = (unsigned char)(u >> 8);
                fwrite(b, 1, 2, f);
            }
        }
    }
    rc = cllm__commit_temp(f, tmp, path, err);
done:
    cJSON_free(json);
    cJSON_Delete(root);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* config.json                                                                                  */
/* -------------------------------------------------------------------------------------------- */

static int cllm__json_int(const cJSON *o, const char *key, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) { *out = def; return 1; }
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || fabs(j->valuedouble) > 2147483647.0) return 0;
    *out = (int)j->valuedouble;
    return 1;
}

static int cllm__json_float(const cJSON *o, const char *key, float def, float *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) { *out = def; return 1; }
    if (!cJSON_IsNumber(j)) return 0;
    *out = (float)j->valuedouble;
    return 1;
}

static int cllm__json_bool(const cJSON *o, const char *key, int def) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(j)) return cJSON_IsTrue(j);
    return def;
}

static const char *cllm__json_str(const cJSON *o, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static cllm_result cllm__config_from_json(cllm_config *c, const cJSON *root, cllm_err *err) {
    const char *mt = cllm__json_str(root, "model_type"), *act;
    const cJSON *scaling, *eos;
    int ok = 1;
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root)) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: not a JSON object");
    if (!mt) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: missing \"model_type\" (expected llama, qwen2 or qwen3)");
    if (strcmp(mt, "llama") == 0) c->arch = CLLM_ARCH_LLAMA;
    else if (strcmp(mt, "qwen2") == 0) c->arch = CLLM_ARCH_QWEN2;
    else if (strcmp(mt, "qwen3") == 0) c->arch = CLLM_ARCH_QWEN3;
    else return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: model_type '%s' is not supported (supported: llama, qwen2, qwen3)", mt);

    ok &= cllm__json_int(root, "vocab_size", 0, &c->vocab_size);
    ok &= cllm__json_int(root, "hidden_size", 0, &c->hidden_size);
    ok &= cllm__json_int(root, "intermediate_size", 0, &c->intermediate_size);
    ok &= cllm__json_int(root, "num_hidden_layers", 0, &c->n_layers);
    ok &= cllm__json_int(root, "num_attention_heads", 0, &c->n_heads);
    ok &= cllm__json_int(root, "num_key_value_heads", c->n_heads, &c->n_kv_heads);
    ok &= cllm__json_int(root, "head_dim", 0, &c->head_dim);
    ok &= cllm__json_int(root, "max_position_embeddings", 2048, &c->max_position_embeddings);
    ok &= cllm__json_float(root, "rms_norm_eps", 1e-6f, &c->rms_norm_eps);
    ok &= cllm__json_float(root, "rope_theta", 10000.0f, &c->rope_theta);
    ok &= cllm__json_int(root, "bos_token_id", -1, &c->bos_token_id);
    if (!ok) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: a size field is not an integer (check vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim)");
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0)
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: vocab_size, hidden_size, intermediate_size, num_hidden_layers and num_attention_heads must all be given and positive");
    if (c->head_dim == 0) {
        if (c->hidden_size % c->n_heads) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: hidden_size %d is not divisible by num_attention_heads %d; give head_dim", c->hidden_size, c->n_heads);
        c->head_dim = c->hidden_size / c->n_heads;
    }
    if (c->head_dim <= 0 || c->head_dim % 2) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: head_dim %d must be positive and even (RoPE rotates pairs)", c->head_dim);
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: num_attention_heads %d must be a multiple of num_key_value_heads %d", c->n_heads, c->n_kv_heads);
    if ((double)c->vocab_size * c->hidden_size > 1e11 || (double)c->n_layers * c->intermediate_size * c->hidden_size > 1e12)
        return cllm__fail(err, CLLM_ERR_LIMIT, "config.json: model sizes are implausibly large (corrupt config?)");
    if (!(c->rms_norm_eps > 0)) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: rms_norm_eps must be positive");
    if (!(c->rope_theta > 0)) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: rope_theta must be positive");

    act = cllm__json_str(root, "hidden_act");
    if (act && strcmp(act, "silu") != 0) return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: hidden_act '%s' is not supported (only silu)", act);
    if (cllm__json_bool(root, "mlp_bias", 0)) return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: mlp_bias true is not supported");
    {
        int tp = 1;
        if (!cllm__json_int(root, "pretraining_tp", 1, &tp) || tp != 1) return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: pretraining_tp must be 1");
    }
    /* Qwen2 always has q/k/v biases (its config has no switch); Llama and Qwen3 put a bias on
       o_proj too when attention_bias is set, which we do not support. */
    if (c->arch == CLLM_ARCH_QWEN2) c->attention_bias = 1;
    else if (cllm__json_bool(root, "attention_bias", 0)) return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: attention_bias true is not supported for model_type '%s'", mt);
    if (c->arch == CLLM_ARCH_QWEN3) c->qk_norm = 1;
    if (c->arch == CLLM_ARCH_QWEN2 && cllm__json_bool(root, "use_sliding_window", 0))
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: use_sliding_window true is not supported");
    c->tie_word_embeddings = cllm__json_bool(root, "tie_word_embeddings", c->arch == CLLM_ARCH_LLAMA ? 0 : 1);

    scaling = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    c->rope_type = CLLM_ROPE_DEFAULT;
    if (scaling && !cJSON_IsNull(scaling)) {
        const char *type = cllm__json_str(scaling, "rope_type");
        if (!type) type = cllm__json_str(scaling, "type");      /* older configs */
        if (!cJSON_IsObject(scaling) || !type) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: rope_scaling must be null or an object with \"rope_type\"");
        if (strcmp(type, "default") == 0) c->rope_type = CLLM_ROPE_DEFAULT;
        else if (strcmp(type, "llama3") == 0 || strcmp(type, "linear") == 0) {
            c->rope_type = strcmp(type, "llama3") == 0 ? CLLM_ROPE_LLAMA3 : CLLM_ROPE_LINEAR;
            ok &= cllm__json_float(scaling, "factor", 0, &c->rope_factor);
            ok &= cllm__json_float(scaling, "low_freq_factor", 1, &c->rope_low_freq_factor);
            ok &= cllm__json_float(scaling, "high_freq_factor", 4, &c->rope_high_freq_factor);
            ok &= cllm__json_int(scaling, "original_max_position_embeddings", 8192, &c->rope_original_max_pos);
            if (!ok || !(c->rope_factor > 0)) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: rope_scaling '%s' needs a positive \"factor\"", type);
            if (c->rope_type == CLLM_ROPE_LLAMA3 && !(c->rope_high_freq_factor > c->rope_low_freq_factor && c->rope_original_max_pos > 0))
                return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: llama3 rope_scaling needs high_freq_factor > low_freq_factor and original_max_position_embeddings > 0");
        } else return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: rope_scaling type '%s' is not supported (supported: default, llama3, linear)", type);
    }

    eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsNumber(eos)) c->eos_token_ids[c->n_eos++] = (int)eos->valuedouble;
    else if (cJSON_IsArray(eos)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, eos) if (cJSON_IsNumber(e) && c->n_eos < CLLM_MAX_EOS) c->eos_token_ids[c->n_eos++] = (int)e->valuedouble;
    }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_config_parse(cllm_config *c, const char *json_text, size_t len, cllm_err *err) {
    cJSON *root = cJSON_ParseWithLength(json_text, len);
    cllm_result rc;
    if (!root) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: not valid JSON");
    rc = cllm__config_from_json(c, root, err);
    cJSON_Delete(root);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* Parameter layout: one allocation, named views (llm.c's fill_in_parameter_sizes)              */
/* -------------------------------------------------------------------------------------------- */

/* HF name of each tensor; "%d" marks a per-layer tensor. Order = cllm_params field order. */
static const char *cllm__param_fmt[CLLM_NUM_PARAM_TENSORS] = {
    "model.embed_tokens.weight",
    "model.layers.%d.input_layernorm.weight",
    "model.layers.%d.self_attn.q_proj.weight",
    "model.layers.%d.self_attn.q_proj.bias",
    "model.layers.%d.self_attn.k_proj.weight",
    "model.layers.%d.self_attn.k_proj.bias",
    "model.layers.%d.self_attn.v_proj.weight",
    "model.layers.%d.self_attn.v_proj.bias",
    "model.layers.%d.self_attn.q_norm.weight",
    "model.layers.%d.self_attn.k_norm.weight",
    "model.layers.%d.self_attn.o_proj.weight",
    "model.layers.%d.post_attention_layernorm.weight",
    "model.layers.%d.mlp.gate_proj.weight",
    "model.layers.%d.mlp.up_proj.weight",
    "model.layers.%d.mlp.down_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
};
enum { CLLM__P_EMBED, CLLM__P_ATTN_NORM, CLLM__P_WQ, CLLM__P_BQ, CLLM__P_WK, CLLM__P_BK, CLLM__P_WV, CLLM__P_BV,
       CLLM__P_QNORM, CLLM__P_KNORM, CLLM__P_WO, CLLM__P_MLP_NORM, CLLM__P_GATE, CLLM__P_UP, CLLM__P_DOWN,
       CLLM__P_FINAL_NORM, CLLM__P_LM_HEAD };

static int cllm__param_per_layer(int i) { return strstr(cllm__param_fmt[i], "%d") != NULL; }

CLLMDEF void cllm_param_name(int i, int layer, char *buf, size_t bufsize) {
    if (i < 0 || i >= CLLM_NUM_PARAM_TENSORS) { snprintf(buf, bufsize, "?"); return; }
    if (cllm__param_per_layer(i)) snprintf(buf, bufsize, cllm__param_fmt[i], layer);
    else snprintf(buf, bufsize, "%s", cllm__param_fmt[i]);
}

/* Shape of one tensor (of one layer, for per-layer tensors): rows x cols, cols = 0 for 1-D.
   A tensor the architecture does not have gets rows = 0. */
static void cllm__param_shape(const cllm_config *c, int i, int *rows, int *cols) {
    int V = c->vocab_size, C = c->hidden_size, I = c->intermediate_size;
    int Q = c->n_heads * c->head_dim, K = c->n_kv_heads * c->head_dim;
    int b = c->attention_bias, qk = c->qk_norm;
    *cols = 0;
    switch (i) {
    case CLLM__P_EMBED:      *rows = V; *cols = C; break;
    case CLLM__P_ATTN_NORM:  *rows = C; break;
    case CLLM__P_WQ:         *rows = Q; *cols = C; break;
    case CLLM__P_BQ:         *rows = b ? Q : 0; break;
    case CLLM__P_WK:         *rows = K; *cols = C; break;
    case CLLM__P_BK:         *rows = b ? K : 0; break;
    case CLLM__P_WV:         *rows = K; *cols = C; break;
    case CLLM__P_BV:         *rows = b ? K : 0; break;
    case CLLM__P_QNORM:      *rows = qk ? c->head_dim : 0; break;
    case CLLM__P_KNORM:      *rows = qk ? c->head_dim : 0; break;
    case CLLM__P_WO:         *rows = C; *cols = Q; break;
    case CLLM__P_MLP_NORM:   *rows = C; break;
    case CLLM__P_GATE:       *rows = I; *cols = C; break;
    case CLLM__P_UP:         *rows = I; *cols = C; break;
    case CLLM__P_DOWN:       *rows = C; *cols = I; break;
    case CLLM__P_FINAL_NORM: *rows = C; break;
    default:                 *rows = c->tie_word_embeddings ? 0 : V; *cols = C; break;   /* lm_head */
    }
}

static void cllm__fill_in_param_sizes(size_t *sizes, const cllm_config *c) {
    int i, rows, cols;
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        cllm__param_shape(c, i, &rows, &cols);
        sizes[i] = (size_t)rows * (size_t)(cols ? cols : 1) * (size_t)(cllm__param_per_layer(i) ? c->n_layers : 1);
    }
}

/* The fields of cllm_params as an array, in tensor order. */
static void cllm__param_ptrs(cllm_params *p, cllm_float **ptrs[CLLM_NUM_PARAM_TENSORS]) {
    cllm_float **list[CLLM_NUM_PARAM_TENSORS];
    list[0] = &p->embed; list[1] = &p->attn_norm; list[2] = &p->wq; list[3] = &p->bq; list[4] = &p->wk;
    list[5] = &p->bk; list[6] = &p->wv; list[7] = &p->bv; list[8] = &p->q_norm; list[9] = &p->k_norm;
    list[10] = &p->wo; list[11] = &p->mlp_norm; list[12] = &p->w_gate; list[13] = &p->w_up;
    list[14] = &p->w_down; list[15] = &p->final_norm; list[16] = &p->lm_head;
    memcpy(ptrs, list, sizeof list);
}

/* Points every field of p into memory, in order; absent tensors get NULL; a tied lm_head
   aliases the embedding, so the head's gradient lands in the embedding's. */
static void cllm__point_params(cllm_params *p, cllm_float *memory, const size_t *sizes) {
    cllm_float **ptrs[CLLM_NUM_PARAM_TENSORS];
    int i;
    cllm__param_ptrs(p, ptrs);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        *ptrs[i] = sizes[i] ? memory : NULL;
        memory += sizes[i];
    }
    if (!sizes[CLLM__P_LM_HEAD]) p->lm_head = p->embed;
}

static cllm_float *cllm__alloc_params(cllm_params *p, const size_t *sizes, size_t total) {
    cllm_float *mem = (cllm_float *)cllm__calloc(total ? total : 1, sizeof(cllm_float));
    if (mem) cllm__point_params(p, mem, sizes);
    return mem;
}

static cllm_result cllm__model_setup(cllm_model *m, const cllm_config *c, cllm_err *err) {
    int i;
    memset(m, 0, sizeof *m);
    m->config = *c;
    cllm__fill_in_param_sizes(m->param_sizes, c);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) m->num_params += m->param_sizes[i];
    m->params_memory = cllm__alloc_params(&m->params, m->param_sizes, m->num_params);
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for %zu parameters (%.1f GB)", m->num_params, m->num_params * sizeof(cllm_float) / 1e9);
    return CLLM_OK;
}

CLLMDEF void cllm_model_free(cllm_model *m) {
    if (!m) return;
    CLLM_FREE(m->params_memory); CLLM_FREE(m->grads_memory);
    CLLM_FREE(m->m_memory); CLLM_FREE(m->v_memory);
    CLLM_FREE(m->acts_memory); CLLM_FREE(m->scratch);
    CLLM_FREE(m->input_ids); CLLM_FREE(m->targets); CLLM_FREE(m->mask); CLLM_FREE(m->seq_logp);
    CLLM_FREE(m->rope_cos); CLLM_FREE(m->rope_sin);
    cJSON_Delete(m->hf_config);
    memset(m, 0, sizeof *m);
}

/* Fresh weights as HF initialises them: N(0, 0.02) matrices, unit norms, zero biases. */
CLLMDEF cllm_result cllm_model_init(cllm_model *m, const cllm_config *c, uint64_t seed, cllm_err *err) {
    cllm_rng rng;
    size_t k;
    int i, rows, cols;
    cllm_float **ptrs[CLLM_NUM_PARAM_TENSORS];
    cllm_result rc = cllm__model_setup(m, c, err);
    if (rc != CLLM_OK) { cllm_model_free(m); return rc; }
    cllm_rng_seed(&rng, seed);
    cllm__param_ptrs(&m->params, ptrs);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        if (!m->param_sizes[i]) continue;
        cllm__param_shape(c, i, &rows, &cols);
        for (k = 0; k < m->param_sizes[i]; k++) {
            if (cols) (*ptrs[i])[k] = (cllm_float)(0.02 * cllm_rng_normal(&rng));
            else (*ptrs[i])[k] = (cllm_float)(strstr(cllm__param_fmt[i], "norm") ? 1.0 : 0.0);
        }
    }
    cllm__ok(err);
    return CLLM_OK;
}

/* -------------------------------------------------------------------------------------------- */
/* Checkpoints: Hugging Face directories                                                       */
/* -------------------------------------------------------------------------------------------- */

/* Tensors that may appear in a checkpoint without being parameters (skipped, not an error). */
static int cllm__ignorable_tensor(const char *name) {
    size_t n = strlen(name);
    return n > 19 && strcmp(name + n - 19, "rotary_emb.inv_freq") == 0;
}

/* Loads every parameter tensor found in one shard; marks each in `seen` (indexed by tensor and
   layer) so that missing ones are reported after all shards. */
static cllm_result cllm__load_shard(cllm_model *m, const char *path, unsigned char *seen, cllm_err *err) {
    const cllm_config *c = &m->config;
    cllm_safetensors st;
    cllm_float **ptrs[CLLM_NUM_PARAM_TENSORS];
    cllm_result rc = cllm_st_open(&st, path, err);
    int t;
    if (rc != CLLM_OK) return rc;
    cllm__param_ptrs(&m->params, ptrs);
    for (t = 0; t < st.n && rc == CLLM_OK; t++) {
        const cllm_st_tensor *ten = &st.tensors[t];
        char name[256];
        int i, l = -1, found = -1, rows, cols;
        for (i = 0; i < CLLM_NUM_PARAM_TENSORS && found < 0; i++) {
            if (!m->param_sizes[i] && i != CLLM__P_LM_HEAD) continue;
            if (cllm__param_per_layer(i)) {
                for (l = 0; l < c->n_layers; l++) { cllm_param_name(i, l, name, sizeof name); if (strcmp(name, ten->name) == 0) { found = i; break; } }
            } else if (strcmp(cllm__param_fmt[i], ten->name) == 0) { found = i; l = 0; }
        }
        if (found < 0) {
            if (cllm__ignorable_tensor(ten->name)) continue;
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: unexpected tensor '%s' (not a parameter of this %s config: wrong model_type, layer count or bias settings?)",
                            path, ten->name, c->arch == CLLM_ARCH_QWEN2 ? "qwen2" : c->arch == CLLM_ARCH_QWEN3 ? "qwen3" : "llama");
            break;
        }
        cllm__param_shape(c, found, &rows, &cols);
        if (found == CLLM__P_LM_HEAD && c->tie_word_embeddings) { rows = c->vocab_size; cols = c->hidden_size; }
        if (!(cols ? (ten->ndim == 2 && ten->shape[0] == rows && ten->shape[1] == cols) : (ten->ndim == 1 && ten->shape[0] == rows))) {
            char got[96]; int k, n = 0;
            for (k = 0; k < ten->ndim && n < 80; k++) n += snprintf(got + n, sizeof got - (size_t)n, k ? ",%lld" : "%lld", (long long)ten->shape[k]);
            if (!ten->ndim) got[0] = 0;
            if (cols) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%d,%d] from config.json", path, ten->name, got, rows, cols);
            else rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%d] from config.json", path, ten->name, got, rows);
            break;
        }
        if (found == CLLM__P_LM_HEAD && c->tie_word_embeddings) continue;  /* HF re-ties it to the embedding */
        if (seen[found * c->n_layers + l]) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' appears in more than one shard", path, ten->name); break; }
        seen[found * c->n_layers + l] = 1;
        {
            size_t per = (size_t)rows * (size_t)(cols ? cols : 1);
            rc = cllm_st_read(&st, ten, *ptrs[found] + (size_t)l * per, err);
        }
    }
    cllm_st_close(&st);
    return rc;
}

CLLMDEF cllm_result cllm_model_load(cllm_model *m, const char *dir, cllm_err *err) {
    char path[4096];
    char *text = NULL;
    size_t len;
    cJSON *root = NULL, *index = NULL;
    cllm_config cfg;
    unsigned char *seen = NULL;
    cllm_result rc;
    int i, l;

    memset(m, 0, sizeof *m);
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = cllm_read_file(path, &text, &len, err);
    if (rc != CLLM_OK) return rc;
    root = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text); text = NULL;
    if (!root) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: not valid JSON", path);
    rc = cllm__config_from_json(&cfg, root, err);
    if (rc != CLLM_OK) { cJSON_Delete(root); return rc; }
    rc = cllm__model_setup(m, &cfg, err);
    if (rc != CLLM_OK) { cJSON_Delete(root); cllm_model_free(m); return rc; }
    m->hf_config = root;
    seen = (unsigned char *)cllm__calloc((size_t)CLLM_NUM_PARAM_TENSORS * (size_t)cfg.n_layers, 1);
    if (!seen) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }

    /* HF's order: model.safetensors first, else the sharded index. */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (cllm__file_exists(path)) rc = cllm__load_shard(m, path, seen, err);
    else {
        const cJSON *wm, *e;
        char **files = NULL;
        int nf = 0, k;
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        if (!cllm__file_exists(path)) { rc = cllm__fail(err, CLLM_ERR_IO, "%s: no model.safetensors and no model.safetensors.index.json", dir); goto done; }
        rc = cllm_read_file(path, &text, &len, err);
        if (rc != CLLM_OK) goto done;
        index = cJSON_ParseWithLength(text, len);
        wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
        if (!cJSON_IsObject(wm)) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing \"weight_map\" object", path); goto done; }
        cJSON_ArrayForEach(e, wm) {             /* the distinct shard files, in order of appearance */
            int dup = 0;
            if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || strstr(e->valuestring, "..")) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: weight_map entry '%s' must be a plain file name", path, e->string); break; }
            for (k = 0; k < nf; k++) if (strcmp(files[k], e->valuestring) == 0) dup = 1;
            if (!dup) { stbds_arrput(files, e->valuestring); nf++; }
        }
        for (k = 0; k < nf && rc == CLLM_OK; k++) {
            snprintf(path, sizeof path, "%s/%s", dir, files[k]);
            rc = cllm__load_shard(m, path, seen, err);
        }
        stbds_arrfree(files);
    }
    if (rc != CLLM_OK) goto done;

    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        if (!m->param_sizes[i]) continue;
        for (l = 0; l < (cllm__param_per_layer(i) ? cfg.n_layers : 1); l++)
            if (!seen[i * cfg.n_layers + l]) {
                cllm_param_name(i, l, path, sizeof path);
                rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing tensor '%s'", dir, path);
                goto done;
            }
    }
done:
    CLLM_FREE(text);
    CLLM_FREE(seen);
    cJSON_Delete(index);
    if (rc != CLLM_OK) cllm_model_free(m);
    else cllm__ok(err);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* Layers: each a forward/backward pair. Arguments: outputs, caches, inputs, weights, sizes.    */
/* Backward passes accumulate (+=) into their gradient outputs.                                 */
/* -------------------------------------------------------------------------------------------- */
/* The kernels in this section are the readable references. Optional fast paths (OpenMP, the
   cache-blocked matmul, SIMD microkernels) follow in "Layers: fast paths"; the forward and
   backward drivers call them through small dispatchers at its end. OpenMP pragmas appear in
   the reference kernels only on loops whose iterations are independent, so those kernels give
   bit-identical results with and without -fopenmp. */

#if defined(_OPENMP) && !defined(CLLM_NO_OPENMP)
#include <omp.h>
#define CLLM__OMP 1
#define CLLM__PRAGMA(x) _Pragma(#x)
/* A parallel loop over independent iterations. `work` (about one unit per scalar operation)
   keeps small loops, such as the tests' toy models, on one thread. */
#define CLLM__PARALLEL_FOR(work) CLLM__PRAGMA(omp parallel for schedule(static) if((work) >= 32768))
#define cllm__max_threads() omp_get_max_threads()
#define cllm__thread_num() omp_get_thread_num()
#else
#define CLLM__PARALLEL_FOR(work)
#define cllm__max_threads() 1
#define cllm__thread_num() 0
#endif
/* A reference kernel that a fast path replaces is still compiled, for the tests to call. */
#if defined(__GNUC__) || defined(__clang__)
#define CLLM__REFERENCE static __attribute__((unused))
#else
#define CLLM__REFERENCE static
#endif

/* Linear layer, nn.Linear layout.  inp (N, C), W (OC, C), bias (OC) or NULL -> out (N, OC)
   out[n][o] = bias[o] + sum_c inp[n][c] * W[o][c]                                              */
CLLM__REFERENCE void cllm__matmul_forward_naive(cllm_float *out, const cllm_float *inp, const cllm_float *W,
                                                const cllm_float *bias, int N, int C, int OC) {
    int n;
    CLLM__PARALLEL_FOR((size_t)N * C * OC)
    for (n = 0; n < N; n++) {
        const cllm_float *x = inp + (size_t)n * C;
        int o, c;
        for (o = 0; o < OC; o++) {
            const cllm_float *w = W + (size_t)o * C;
            cllm_float acc = bias ? bias[o] : 0;
            for (c = 0; c < C; c++) acc += x[c] * w[c];
            out[(size_t)n * OC + o] = acc;
        }
    }
}

/* dinp[n][c] += sum_o dout[n][o] W[o][c];  dW[o][c] += sum_n dout[n][o] inp[n][c];
   dbias[o] += sum_n dout[n][o].  Any of dinp, dW, dbias may be NULL (not needed).            */
CLLM__REFERENCE void cllm__matmul_backward_naive(cllm_float *dinp, cllm_float *dW, cllm_float *dbias,
                                                 const cllm_float *dout, const cllm_float *inp, const cllm_float *W,
                                                 int N, int C, int OC) {
    int n, o;
    if (dinp) {
        CLLM__PARALLEL_FOR((size_t)N * C * OC)
        for (n = 0; n < N; n++) {
            cllm_float *dx = dinp + (size_t)n * C;
            const cllm_float *dy = dout + (size_t)n * OC;
            int o2, c;
            for (o2 = 0; o2 < OC; o2++) {
                const cllm_float *w = W + (size_t)o2 * C;
                cllm_float d = dy[o2];
                for (c = 0; c < C; c++) dx[c] += d * w[c];
            }
        }
    }
    if (dW || dbias) {
        CLLM__PARALLEL_FOR((size_t)N * C * OC)
        for (o = 0; o < OC; o++) {
            cllm_float *dw = dW ? dW + (size_t)o * C : NULL;
            cllm_float db = 0;
            int n2, c;
            for (n2 = 0; n2 < N; n2++) {
                const cllm_float *x = inp + (size_t)n2 * C;
                cllm_float d = dout[(size_t)n2 * OC + o];
                db += d;
                if (dw) for (c = 0; c < C; c++) dw[c] += d * x[c];
            }
            if (dbias) dbias[o] += db;
        }
    }
}

/* RMSNorm (LlamaRMSNorm), over rows of C:  r = 1/sqrt(mean(x^2) + eps),  y = w * (x * r)
   reference: transformers/models/llama/modeling_llama.py LlamaRMSNorm                          */
static void cllm__rmsnorm_forward(cllm_float *out, cllm_float *rstd, const cllm_float *inp,
                                  const cllm_float *w, int N, int C, float eps) {
    int n;
    CLLM__PARALLEL_FOR((size_t)N * C)
    for (n = 0; n < N; n++) {
        const cllm_float *x = inp + (size_t)n * C;
        cllm_float *y = out + (size_t)n * C, ss = 0, r;
        int c;
        for (c = 0; c < C; c++) ss += x[c] * x[c];
        r = 1 / cllm__sqrt(ss / C + (cllm_float)eps);
        for (c = 0; c < C; c++) y[c] = w[c] * (x[c] * r);
        rstd[n] = r;
    }
}

/* With xh = x*r:  dw += sum_n dy * xh
                   dx += r * (dy*w - xh * mean(dy*w*xh))          (r depends on every x[c])      */
CLLM__REFERENCE void cllm__rmsnorm_backward_naive(cllm_float *dinp, cllm_float *dw, const cllm_float *dout,
                                                  const cllm_float *inp, const cllm_float *w, const cllm_float *rstd,
                                                  int N, int C) {
    int n, c;
    for (n = 0; n < N; n++) {
        const cllm_float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        cllm_float *dx = dinp + (size_t)n * C, r = rstd[n], dot = 0;
        for (c = 0; c < C; c++) dot += dy[c] * w[c] * x[c] * r;
        dot /= C;
        for (c = 0; c < C; c++) {
            cllm_float xh = x[c] * r;
            if (dw) dw[c] += dy[c] * xh;
            dx[c] += r * (dy[c] * w[c] - xh * dot);
        }
    }
}

/* RoPE tables for positions 0..T-1. HF computes inv_freq[i] = 1/theta^(2i/hd) (i < hd/2) in
   float32, optionally rescales it (llama3, linear), then angle = pos * inv_freq.
   llama3 (transformers _compute_llama3_parameters): wavelen = 2 pi / inv_freq;
     wavelen < orig/high -> keep;  wavelen > orig/low -> inv/factor;
     else s = (orig/wavelen - low)/(high - low), inv = (1-s) inv/factor + s inv.                */
static void cllm__rope_tables(cllm_float *cosv, cllm_float *sinv, const cllm_config *c, int T) {
    int half = c->head_dim / 2, i, t;
    for (i = 0; i < half; i++) {
        cllm_float inv = 1 / cllm__pow((cllm_float)c->rope_theta, (cllm_float)(2 * i) / (cllm_float)c->head_dim);
        if (c->rope_type == CLLM_ROPE_LINEAR) inv /= (cllm_float)c->rope_factor;
        if (c->rope_type == CLLM_ROPE_LLAMA3) {
            cllm_float factor = (cllm_float)c->rope_factor, lo = (cllm_float)c->rope_low_freq_factor;
            cllm_float hi = (cllm_float)c->rope_high_freq_factor, orig = (cllm_float)c->rope_original_max_pos;
            cllm_float wavelen = (cllm_float)(2 * 3.14159265358979323846) / inv;
            if (wavelen > orig / lo) inv = inv / factor;
            else if (wavelen >= orig / hi) {
                cllm_float s = (orig / wavelen - lo) / (hi - lo);
                inv = (1 - s) * inv / factor + s * inv;
            }
        }
        for (t = 0; t < T; t++) {
            cllm_float angle = (cllm_float)t * inv;
            cosv[(size_t)t * half + i] = cllm__cos(angle);
            sinv[(size_t)t * half + i] = cllm__sin(angle);
        }
    }
}

/* RoPE in HF's split-half order (rotate_half), in place on (B*T, n_heads*hd) rows, position = t:
   y[i] = x[i] cos - x[i+hd/2] sin,   y[i+hd/2] = x[i+hd/2] cos + x[i] sin.
   It is a rotation, so the backward pass is the same rotation by -angle (sign = -1).           */
static void cllm__rope(cllm_float *x, const cllm_float *cosv, const cllm_float *sinv,
                       int B, int T, int n_heads, int hd, int sign) {
    int row, half = hd / 2;
    CLLM__PARALLEL_FOR((size_t)B * T * n_heads * hd)
    for (row = 0; row < B * T; row++) {                     /* row = b*T + t */
        int t = row % T, h, i;
        const cllm_float *cs = cosv + (size_t)t * half, *sn = sinv + (size_t)t * half;
        for (h = 0; h < n_heads; h++) {
            cllm_float *v = x + ((size_t)row * n_heads + h) * hd;
            for (i = 0; i < half; i++) {
                cllm_float x1 = v[i], x2 = v[i + half], s = sign * sn[i];
                v[i] = x1 * cs[i] - x2 * s;
                v[i + half] = x2 * cs[i] + x1 * s;
            }
        }
    }
}
static void cllm__rope_forward(cllm_float *x, const cllm_float *cosv, const cllm_float *sinv, int B, int T, int nh, int hd) { cllm__rope(x, cosv, sinv, B, T, nh, hd, +1); }
static void cllm__rope_backward(cllm_float *dx, const cllm_float *cosv, const cllm_float *sinv, int B, int T, int nh, int hd) { cllm__rope(dx, cosv, sinv, B, T, nh, hd, -1); }

/* Causal grouped-query attention with a right-padding mask. q (B*T, H*hd), k, v (B*T, KV*hd).
   Query head h reads kv head h / (H/KV) (HF repeat_kv). Key j is visible from query t when
   j <= t and mask[b][j] = 1 (HF's causal + padding mask; pad queries still see the real keys).
     s_j = q_t . k_j / sqrt(hd),   p = softmax(s),   y_t = sum_j p_j v_j
   Only lse = log sum_j exp(s_j) is kept: the backward pass recomputes p_j = exp(s_j - lse), so
   memory is O(B H T) instead of O(B H T^2).  s is a scratch row of T values.                  */
CLLM__REFERENCE void cllm__attention_forward_naive(cllm_float *out, cllm_float *lse, const cllm_float *q,
                                                   const cllm_float *k, const cllm_float *v, const int *mask,
                                                   int B, int T, int H, int KV, int hd, cllm_float *s) {
    int b, t, h, j, i, rep = H / KV;
    cllm_float scale = 1 / cllm__sqrt((cllm_float)hd);
    for (b = 0; b < B; b++) for (h = 0; h < H; h++) for (t = 0; t < T; t++) {
        const cllm_float *qt = q + ((size_t)(b * T + t) * H + h) * hd;
        cllm_float *yt = out + ((size_t)(b * T + t) * H + h) * hd;
        cllm_float mx = -INFINITY, sum = 0;
        for (j = 0; j <= t; j++) {
            const cllm_float *kj = k + ((size_t)(b * T + j) * KV + h / rep) * hd;
            cllm_float dot = 0;
            if (mask && !mask[b * T + j]) { s[j] = -INFINITY; continue; }
            for (i = 0; i < hd; i++) dot += qt[i] * kj[i];
            s[j] = dot * scale;
            if (s[j] > mx) mx = s[j];
        }
        for (j = 0; j <= t; j++) sum += cllm__exp(s[j] - mx);   /* max subtracted for stability only */
        lse[((size_t)b * H + h) * T + t] = mx + cllm__log(sum);
        for (i = 0; i < hd; i++) yt[i] = 0;
        for (j = 0; j <= t; j++) {
            const cllm_float *vj = v + ((size_t)(b * T + j) * KV + h / rep) * hd;
            cllm_float p = cllm__exp(s[j] - mx) / sum;
            if (p == 0) continue;
            for (i = 0; i < hd; i++) yt[i] += p * vj[i];
        }
    }
}

/* Backward. With dy_t given and p_j recomputed:
     dv_j += p_j dy_t                       (y_t = sum_j p_j v_j)
     dp_j  = dy_t . v_j
     ds_j  = p_j (dp_j - sum_i p_i dp_i) = p_j (dp_j - dy_t . y_t)     (softmax backward)
     dq_t += scale sum_j ds_j k_j,   dk_j += scale ds_j q_t
   GQA: the dk/dv of a kv head sum over the H/KV query heads that read it.                     */
CLLM__REFERENCE void cllm__attention_backward_naive(cllm_float *dq, cllm_float *dk, cllm_float *dv, const cllm_float *dout,
                                                    const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                                    const cllm_float *out, const cllm_float *lse, const int *mask,
                                                    int B, int T, int H, int KV, int hd) {
    int b, t, h, j, i, rep = H / KV;
    cllm_float scale = 1 / cllm__sqrt((cllm_float)hd);
    for (b = 0; b < B; b++) for (h = 0; h < H; h++) for (t = 0; t < T; t++) {
        size_t qo = ((size_t)(b * T + t) * H + h) * hd;
        const cllm_float *qt = q + qo, *dyt = dout + qo, *yt = out + qo;
        cllm_float *dqt = dq + qo, row_lse = lse[((size_t)b * H + h) * T + t], dyy = 0;
        for (i = 0; i < hd; i++) dyy += dyt[i] * yt[i];
        for (j = 0; j <= t; j++) {
            size_t ko = ((size_t)(b * T + j) * KV + h / rep) * hd;
            const cllm_float *kj = k + ko, *vj = v + ko;
            cllm_float dot = 0, p, dp = 0, ds;
            if (mask && !mask[b * T + j]) continue;
            for (i = 0; i < hd; i++) dot += qt[i] * kj[i];
            p = cllm__exp(dot * scale - row_lse);
            for (i = 0; i < hd; i++) { dp += dyt[i] * vj[i]; dv[ko + i] += p * dyt[i]; }
            ds = p * (dp - dyy) * scale;
            for (i = 0; i < hd; i++) { dqt[i] += ds * kj[i]; dk[ko + i] += ds * qt[i]; }
        }
    }
}

/* SwiGLU: act = silu(g) * u, silu(g) = g * sigmoid(g).
   dg += dact * u * sigmoid(g) * (1 + g (1 - sigmoid(g))),   du += dact * silu(g)               */
static void cllm__swiglu_forward(cllm_float *act, const cllm_float *g, const cllm_float *u, size_t n) {
    size_t i;
    CLLM__PARALLEL_FOR(n * 16)
    for (i = 0; i < n; i++) act[i] = g[i] / (1 + cllm__exp(-g[i])) * u[i];
}

static void cllm__swiglu_backward(cllm_float *dg, cllm_float *du, const cllm_float *dact,
                                  const cllm_float *g, const cllm_float *u, size_t n) {
    size_t i;
    CLLM__PARALLEL_FOR(n * 16)
    for (i = 0; i < n; i++) {
        cllm_float sig = 1 / (1 + cllm__exp(-g[i]));
        dg[i] += dact[i] * u[i] * sig * (1 + g[i] * (1 - sig));
        du[i] += dact[i] * g[i] * sig;
    }
}

/* Embedding lookup: x[n] = E[id[n]];  backward: dE[id[n]] += dx[n]                            */
static void cllm__embedding_forward(cllm_float *out, const int *ids, const cllm_float *E, int N, int C) {
    int n;
    CLLM__PARALLEL_FOR((size_t)N * C)
    for (n = 0; n < N; n++) memcpy(out + (size_t)n * C, E + (size_t)ids[n] * C, sizeof(cllm_float) * (size_t)C);
}

static void cllm__embedding_backward(cllm_float *dE, const cllm_float *dout, const int *ids, int N, int C) {
    int n, c;
    for (n = 0; n < N; n++) {
        cllm_float *de = dE + (size_t)ids[n] * C;
        const cllm_float *dx = dout + (size_t)n * C;
        for (c = 0; c < C; c++) de[c] += dx[c];
    }
}

/* Log-softmax of one logits row z (V) scaled by 1/temperature, for target y (or -1):
     lse = log sum_v exp(z_v / tau),   logp = z_y / tau - lse,   H = lse - sum_v p_v z_v / tau     */
static void cllm__logsoftmax_row(cllm_float *lse, cllm_float *logp, cllm_float *entropy,
                                 const cllm_float *z, int y, cllm_float inv_tau, int V) {
    int v;
    cllm_float mx = -INFINITY, sum = 0, pz = 0;
    for (v = 0; v < V; v++) if (z[v] * inv_tau > mx) mx = z[v] * inv_tau;
    for (v = 0; v < V; v++) { cllm_float e = cllm__exp(z[v] * inv_tau - mx); sum += e; pz += e * z[v] * inv_tau; }
    *lse = mx + cllm__log(sum);
    *logp = y >= 0 ? z[y] * inv_tau - *lse : 0;
    *entropy = *lse - pz / sum;
}

/* d logp / d z_v = (1[v = y] - p_v) / tau, times the incoming dlogp; written over z.           */
static void cllm__logsoftmax_row_backward(cllm_float *z, cllm_float lse, int y, cllm_float dlogp, cllm_float inv_tau, int V) {
    int v;
    for (v = 0; v < V; v++) z[v] = -dlogp * inv_tau * cllm__exp(z[v] * inv_tau - lse);
    z[y] += dlogp * inv_tau;
}

/* -------------------------------------------------------------------------------------------- */
/* Layers: fast paths (optional; see COMPILE-TIME OPTIONS) and the dispatchers                  */
/* -------------------------------------------------------------------------------------------- */
/* Each fast path computes the same formula as its reference above; tests/test_fastpath.c
   compares them on odd sizes. Summation order:
   - OpenMP alone: unchanged, results are bit-identical to the references.
   - CLLM_BLOCKED: the matmul still adds the products of each output element in ascending
     order, starting from the bias or the value being accumulated into, so without SIMD it too
     is bit-identical; the tiles only decide which thread computes which outputs.
   - CLLM_SIMD: fused multiply-adds (one rounding instead of two); dot products (the forward
     matmul, attention scores) keep 8 (AVX2) or 4 (NEON) lane partial sums per K block of the
     matmul (cllm__dot: 4 such vectors) and add them at the end. Differences are a few float
     ulps per operation, ~1e-7..1e-6 relative (tests/test_fastpath.c prints them).          */

#if defined(CLLM_SIMD) && !defined(CLLM_BLOCKED)
#define CLLM_BLOCKED
#endif
#if defined(CLLM_SIMD) && !defined(COLLABLLM_DOUBLE)
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CLLM__AVX2 1
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define CLLM__NEON 1
#endif
#endif
#if defined(CLLM__OMP) || defined(CLLM_BLOCKED)
#define CLLM__FAST 1          /* some fast path is on: the dispatchers below use it */
#endif

#ifdef CLLM__FAST

#ifdef CLLM__AVX2
static float cllm__hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* init + sum_i a[i] b[i]: left to right without SIMD (as the reference loops), else in
   4 vector partial sums, combined at the end, then the scalar tail. */
static cllm_float cllm__dot(cllm_float init, const cllm_float *a, const cllm_float *b, int n) {
    int i = 0;
    cllm_float s = init;
#if defined(CLLM__AVX2)
    if (n >= 32) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (; i + 32 <= n; i += 32) {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
        }
        for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s += cllm__hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    }
#elif defined(CLLM__NEON)
    if (n >= 16) {
        float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
        for (; i + 16 <= n; i += 16) {
            s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
            s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
            s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
            s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
        }
        for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s += vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    }
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y += alpha x (fused multiply-add with SIMD). */
static void cllm__axpy(cllm_float *y, cllm_float alpha, const cllm_float *x, int n) {
    int i = 0;
#if defined(CLLM__AVX2)
    __m256 va = _mm256_set1_ps(alpha);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#elif defined(CLLM__NEON)
    float32x4_t va = vdupq_n_f32(alpha);
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
#endif
    for (; i < n; i++) y[i] += alpha * x[i];
}

/* ---- matmul: cache blocking ------------------------------------------------------------------
   The forward product out = inp W^T pairs rows of inp with rows of W, both contiguous along C,
   so it is a grid of dot products: the "dot" kernel takes 3 rows of inp and 4 rows of W and
   keeps their 12 dot products in registers (12 of the 16 AVX2 registers).
   The backward products are sums of outer products, with the rows of B contiguous:
     dinp (N,C)  += dout (N,OC)   . W   (OC,C)      A(n,o) = dout[n][o],  B(o,c) = W[o][c]
     dW   (OC,C) += dout^T (OC,N) . inp (N,C)       A(o,n) = dout[n][o],  B(n,c) = inp[n][c]
   The "outer" kernel holds a 6 x 16 block of the output in registers and adds, for each k, the
   6 values A(i,k) times the 16 values B(k,j); B's rows are first copied into a contiguous panel.
   Both walk K in blocks that fit their operands in L1/L2. The output is cut into tiles, one
   thread per tile, and inside a tile K is walked in ascending order: the thread count never
   changes a result.                                                                            */
#ifdef CLLM_BLOCKED
#define CLLM__DR 3      /* dot kernel: 3 rows of inp x 4 rows of W                                  */
#define CLLM__DC 4
#define CLLM__DKC 512   /* its K block: 7 rows of 2 KB stay in L1                                   */
#define CLLM__DMC 96    /* its tiles: 96 rows of inp (192 KB per K block, reread from L2) ...       */
#define CLLM__DNC 128   /* ... by 128 rows of W, each group of 4 read once into L1                  */
#define CLLM__MR 6      /* outer kernel: a 6 x 16 block of the output                               */
#define CLLM__NR 16
#define CLLM__KC 256    /* its K block: a 16 KB panel of B stays in L1                             */
#define CLLM__MC 192    /* its tiles: 192 rows of A, read in place (192 KB per K block: L2) ...     */
#define CLLM__NC 256    /* ... by 256 columns                                                       */

#ifdef CLLM__AVX2
/* [sum a, sum b, sum c, sum d] of four 8-lane vectors */
static __m128 cllm__hsum4x8(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}
#endif

/* out[i][j] += sum_{k<kc} x_i[k] w_j[k] for i < mr <= 3, j < nr <= 4 (x rows ldx apart, w rows
   ldw apart, out rows ldo apart). Missing rows reuse row 0 and are not written. */
static void cllm__kernel_dot(int kc, const cllm_float *x, size_t ldx, const cllm_float *w, size_t ldw,
                             cllm_float *out, size_t ldo, int mr, int nr) {
    const cllm_float *xr[CLLM__DR], *wr[CLLM__DC];
    int i, j, k = 0;
    for (i = 0; i < CLLM__DR; i++) xr[i] = x + (i < mr ? (size_t)i * ldx : 0);
    for (j = 0; j < CLLM__DC; j++) wr[j] = w + (j < nr ? (size_t)j * ldw : 0);
#if defined(CLLM__AVX2)
    {
        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00;
        __m256 s12 = s00, s13 = s00, s20 = s00, s21 = s00, s22 = s00, s23 = s00;
        cllm_float r[CLLM__DR][4];
        __m128 r0, r1, r2;
        for (; k + 8 <= kc; k += 8) {
            __m256 x0 = _mm256_loadu_ps(xr[0] + k), x1 = _mm256_loadu_ps(xr[1] + k), x2 = _mm256_loadu_ps(xr[2] + k), wv;
#define CLLM__COL(j) wv = _mm256_loadu_ps(wr[j] + k); s0##j = _mm256_fmadd_ps(x0, wv, s0##j); \
            s1##j = _mm256_fmadd_ps(x1, wv, s1##j); s2##j = _mm256_fmadd_ps(x2, wv, s2##j);
            CLLM__COL(0) CLLM__COL(1) CLLM__COL(2) CLLM__COL(3)
#undef CLLM__COL
        }
        r0 = cllm__hsum4x8(s00, s01, s02, s03);
        r1 = cllm__hsum4x8(s10, s11, s12, s13);
        r2 = cllm__hsum4x8(s20, s21, s22, s23);
        if (k == kc && mr == CLLM__DR && nr == CLLM__DC) {        /* the common case: no tails */
            _mm_storeu_ps(out, _mm_add_ps(_mm_loadu_ps(out), r0));
            _mm_storeu_ps(out + ldo, _mm_add_ps(_mm_loadu_ps(out + ldo), r1));
            _mm_storeu_ps(out + 2 * ldo, _mm_add_ps(_mm_loadu_ps(out + 2 * ldo), r2));
            return;
        }
        _mm_storeu_ps(r[0], r0); _mm_storeu_ps(r[1], r1); _mm_storeu_ps(r[2], r2);
        for (i = 0; i < mr; i++) for (j = 0; j < nr; j++) {
            cllm_float acc = r[i][j];
            int kk;
            for (kk = k; kk < kc; kk++) acc += xr[i][kk] * wr[j][kk];
            out[(size_t)i * ldo + j] += acc;
        }
    }
#elif defined(CLLM__NEON)
    {
        float32x4_t s[CLLM__DR][CLLM__DC];
        for (i = 0; i < CLLM__DR; i++) for (j = 0; j < CLLM__DC; j++) s[i][j] = vdupq_n_f32(0);
        for (; k + 4 <= kc; k += 4) {
            float32x4_t xv[CLLM__DR];
            for (i = 0; i < CLLM__DR; i++) xv[i] = vld1q_f32(xr[i] + k);
            for (j = 0; j < CLLM__DC; j++) {
                float32x4_t wv = vld1q_f32(wr[j] + k);
                for (i = 0; i < CLLM__DR; i++) s[i][j] = vfmaq_f32(s[i][j], xv[i], wv);
            }
        }
        for (i = 0; i < mr; i++) for (j = 0; j < nr; j++) {
            cllm_float acc = vaddvq_f32(s[i][j]);
            int kk;
            for (kk = k; kk < kc; kk++) acc += xr[i][kk] * wr[j][kk];
            out[(size_t)i * ldo + j] += acc;
        }
    }
#else
    for (i = 0; i < mr; i++) for (j = 0; j < nr; j++) {     /* the reference's order exactly */
        cllm_float acc = out[(size_t)i * ldo + j];
        for (k = 0; k < kc; k++) acc += xr[i][k] * wr[j][k];
        out[(size_t)i * ldo + j] = acc;
    }
#endif
}

/* c[r][j] += sum_{k<kc} a_r[k*acs] b[k*NR + j] for a full 6 x 16 block (c rows ldc apart): a_r
   are the 6 rows of A, b one packed panel of B. Each output adds its products in ascending k. */
#if defined(CLLM__AVX2)
static void cllm__kernel_outer(int kc, const float *const *a, size_t acs, const float *b, float *c, size_t ldc) {
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    __m256 c00 = _mm256_loadu_ps(c), c01 = _mm256_loadu_ps(c + 8);
    __m256 c10 = _mm256_loadu_ps(c + ldc), c11 = _mm256_loadu_ps(c + ldc + 8);
    __m256 c20 = _mm256_loadu_ps(c + 2 * ldc), c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
    __m256 c30 = _mm256_loadu_ps(c + 3 * ldc), c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
    __m256 c40 = _mm256_loadu_ps(c + 4 * ldc), c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
    __m256 c50 = _mm256_loadu_ps(c + 5 * ldc), c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
    size_t k, ka = 0;
    for (k = 0; k < (size_t)kc; k++, ka += acs, b += CLLM__NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), av;
#define CLLM__ROW(r) av = _mm256_broadcast_ss(a##r + ka); \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0); c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);
        CLLM__ROW(0) CLLM__ROW(1) CLLM__ROW(2) CLLM__ROW(3) CLLM__ROW(4) CLLM__ROW(5)
#undef CLLM__ROW
    }
    _mm256_storeu_ps(c, c00);           _mm256_storeu_ps(c + 8, c01);
    _mm256_storeu_ps(c + ldc, c10);     _mm256_storeu_ps(c + ldc + 8, c11);
    _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21);
    _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31);
    _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41);
    _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}
#elif defined(CLLM__NEON)
static void cllm__kernel_outer(int kc, const float *const *a, size_t acs, const float *b, float *c, size_t ldc) {
    float32x4_t acc[CLLM__MR][4];
    size_t k, ka = 0;
    int r, j;
    for (r = 0; r < CLLM__MR; r++) for (j = 0; j < 4; j++) acc[r][j] = vld1q_f32(c + r * ldc + 4 * j);
    for (k = 0; k < (size_t)kc; k++, ka += acs, b += CLLM__NR) {
        float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8), b3 = vld1q_f32(b + 12);
        for (r = 0; r < CLLM__MR; r++) {
            float32x4_t av = vdupq_n_f32(a[r][ka]);
            acc[r][0] = vfmaq_f32(acc[r][0], av, b0); acc[r][1] = vfmaq_f32(acc[r][1], av, b1);
            acc[r][2] = vfmaq_f32(acc[r][2], av, b2); acc[r][3] = vfmaq_f32(acc[r][3], av, b3);
        }
    }
    for (r = 0; r < CLLM__MR; r++) for (j = 0; j < 4; j++) vst1q_f32(c + r * ldc + 4 * j, acc[r][j]);
}
#else
static void cllm__kernel_outer(int kc, const cllm_float *const *a, size_t acs, const cllm_float *b, cllm_float *c, size_t ldc) {
    cllm_float acc[CLLM__MR][CLLM__NR];
    size_t k, ka = 0;
    int r, j;
    for (r = 0; r < CLLM__MR; r++) for (j = 0; j < CLLM__NR; j++) acc[r][j] = c[r * ldc + j];
    for (k = 0; k < (size_t)kc; k++, ka += acs, b += CLLM__NR)
        for (r = 0; r < CLLM__MR; r++) for (j = 0; j < CLLM__NR; j++) acc[r][j] += a[r][ka] * b[j];
    for (r = 0; r < CLLM__MR; r++) for (j = 0; j < CLLM__NR; j++) c[r * ldc + j] = acc[r][j];
}
#endif

/* Output tiles of mc x nc (multiples of the kernel's block), made smaller while there would be
   fewer than two per thread (e.g. the 128-wide k_proj of Qwen2.5). Returns the column count. */
static int cllm__tiles(int M, int N, int *mc, int *nc, int mr, int nr) {
    size_t want = (size_t)2 * cllm__max_threads();
#define CLLM__NTILES ((size_t)((M + *mc - 1) / *mc) * (size_t)((N + *nc - 1) / *nc))
    while (*mc > mr && CLLM__NTILES < want) *mc = (*mc / 2 + mr - 1) / mr * mr;
    while (*nc > nr && CLLM__NTILES < want) *nc = (*nc / 2 + nr - 1) / nr * nr;
#undef CLLM__NTILES
    return (N + *nc - 1) / *nc;
}

/* out (M x N, rows ldo apart) += X (M x K) W (N x K)^T, X and W rows ldx and ldw apart. */
static void cllm__gemm_nt(cllm_float *out, size_t ldo, const cllm_float *X, size_t ldx,
                          const cllm_float *W, size_t ldw, int M, int N, int K) {
    int mc = CLLM__DMC, nc = CLLM__DNC, tn, ntiles, t, nkb, kc;
    if (M <= 0 || N <= 0 || K <= 0) return;
    tn = cllm__tiles(M, N, &mc, &nc, CLLM__DR, CLLM__DC);
    ntiles = (M + mc - 1) / mc * tn;
    nkb = (K + CLLM__DKC - 1) / CLLM__DKC;                       /* equal K blocks, multiples of 8 */
    kc = ((K + nkb - 1) / nkb + 7) / 8 * 8;
#ifdef CLLM__OMP
#pragma omp parallel for schedule(dynamic) if(ntiles > 1 && (double)M * N * K >= 1e5)
#endif
    for (t = 0; t < ntiles; t++) {
        int i0 = t / tn * mc, j0 = t % tn * nc, i, j, k0;
        int i1 = M - i0 < mc ? M : i0 + mc, j1 = N - j0 < nc ? N : j0 + nc;
        for (k0 = 0; k0 < K; k0 += kc) {
            int kb = K - k0 < kc ? K - k0 : kc;
            for (j = j0; j < j1; j += CLLM__DC) for (i = i0; i < i1; i += CLLM__DR)
                cllm__kernel_dot(kb, X + (size_t)i * ldx + k0, ldx, W + (size_t)j * ldw + k0, ldw, out + (size_t)i * ldo + j, ldo,
                                 i1 - i < CLLM__DR ? i1 - i : CLLM__DR, j1 - j < CLLM__DC ? j1 - j : CLLM__DC);
        }
    }
}

/* Copies rows [k0, k0+kc) and columns [j, j+nr) of B into one contiguous NR-column panel,
   zero-padded past nr <= NR: bp[k*NR + jj] = B[(k0+k)*ldb + j + jj]. */
static void cllm__pack_panel(cllm_float *bp, const cllm_float *B, size_t ldb, int j, int nr, int k0, int kc) {
    int k;
    for (k = 0; k < kc; k++) {
        const cllm_float *src = B + (size_t)(k0 + k) * ldb + (size_t)j;
        cllm_float *dst = bp + (size_t)k * CLLM__NR;
#if defined(__GNUC__) || defined(__clang__)
        if (k + 16 < kc) __builtin_prefetch(src + 16 * ldb);    /* rows far apart: no hardware prefetch */
#endif
        if (nr == CLLM__NR) memcpy(dst, src, sizeof(cllm_float) * CLLM__NR);    /* two vector moves */
        else {
            memcpy(dst, src, sizeof(cllm_float) * (size_t)nr);
            memset(dst + nr, 0, sizeof(cllm_float) * (size_t)(CLLM__NR - nr));
        }
    }
}

/* Cm (M x N, rows ldc apart) += A (M x K) B (K x N), with A(i,k) = A[i*ars + k*acs] read in place
   and B(k,j) = B[k*ldb + j]. Each thread copies one B panel (KC x NR, 16 KB, on its stack) at
   a time and runs it against every 6-row block of A in its tile. */
static void cllm__gemm_nn(cllm_float *Cm, size_t ldc, const cllm_float *A, size_t ars, size_t acs,
                          const cllm_float *B, size_t ldb, int M, int N, int K) {
    int mc = CLLM__MC, nc = CLLM__NC, tn, ntiles, t;
    if (M <= 0 || N <= 0 || K <= 0) return;
    tn = cllm__tiles(M, N, &mc, &nc, CLLM__MR, CLLM__NR);
    ntiles = (M + mc - 1) / mc * tn;
#ifdef CLLM__OMP
#pragma omp parallel for schedule(dynamic) if(ntiles > 1 && (double)M * N * K >= 1e5)
#endif
    for (t = 0; t < ntiles; t++) {
        cllm_float panel[CLLM__KC * CLLM__NR + 16], *bp = panel;
        int i0 = t / tn * mc, j0 = t % tn * nc, k0, p, q;
        int mt = M - i0 < mc ? M - i0 : mc, nt = N - j0 < nc ? N - j0 : nc;
        while ((uintptr_t)bp % 64) bp++;                         /* aligned vector loads of B */
        for (k0 = 0; k0 < K; k0 += CLLM__KC) {
            int kc = K - k0 < CLLM__KC ? K - k0 : CLLM__KC;
            for (q = 0; q < nt; q += CLLM__NR) {
                int nr = nt - q < CLLM__NR ? nt - q : CLLM__NR;
                cllm__pack_panel(bp, B, ldb, j0 + q, nr, k0, kc);
                for (p = 0; p < mt; p += CLLM__MR) {
                    int mr = mt - p < CLLM__MR ? mt - p : CLLM__MR, r, j;
                    const cllm_float *a[CLLM__MR];
                    cllm_float *c = Cm + (size_t)(i0 + p) * ldc + (size_t)(j0 + q), tile[CLLM__MR * CLLM__NR];
                    for (r = 0; r < CLLM__MR; r++) a[r] = A + (size_t)(i0 + p + (r < mr ? r : 0)) * ars + (size_t)k0 * acs;
#if defined(__GNUC__) || defined(__clang__)
                    /* the next output block: with a short K (dW sums over the tokens) the output is
                       streamed from memory, and its load would otherwise stall the kernel */
                    if (p + 2 * CLLM__MR <= mt) for (r = CLLM__MR; r < 2 * CLLM__MR; r++) {
                        __builtin_prefetch(c + r * ldc, 1);
                        __builtin_prefetch(c + r * ldc + CLLM__NR - 1, 1);
                    }
#endif
                    if (mr == CLLM__MR && nr == CLLM__NR) { cllm__kernel_outer(kc, a, acs, bp, c, ldc); continue; }
                    /* an edge block goes through a full-size copy; the extra entries are discarded */
                    for (r = 0; r < CLLM__MR; r++) for (j = 0; j < CLLM__NR; j++) tile[r * CLLM__NR + j] = r < mr && j < nr ? c[r * ldc + j] : 0;
                    cllm__kernel_outer(kc, a, acs, bp, tile, CLLM__NR);
                    for (r = 0; r < mr; r++) for (j = 0; j < nr; j++) c[r * ldc + j] = tile[r * CLLM__NR + j];
                }
            }
        }
    }
}

/* out = bias (or 0), then out += inp W^T. */
static void cllm__matmul_forward_blocked(cllm_float *out, const cllm_float *inp, const cllm_float *W,
                                         const cllm_float *bias, int N, int C, int OC) {
    int n;
    CLLM__PARALLEL_FOR((size_t)N * OC)
    for (n = 0; n < N; n++) {
        if (bias) memcpy(out + (size_t)n * OC, bias, sizeof(cllm_float) * (size_t)OC);
        else memset(out + (size_t)n * OC, 0, sizeof(cllm_float) * (size_t)OC);
    }
    cllm__gemm_nt(out, (size_t)OC, inp, (size_t)C, W, (size_t)C, N, OC, C);
}

/* The three products of the reference backward. */
static void cllm__matmul_backward_blocked(cllm_float *dinp, cllm_float *dW, cllm_float *dbias,
                                          const cllm_float *dout, const cllm_float *inp, const cllm_float *W,
                                          int N, int C, int OC) {
    int o;
    if (dinp) cllm__gemm_nn(dinp, (size_t)C, dout, (size_t)OC, 1, W, (size_t)C, N, C, OC);
    if (dW) cllm__gemm_nn(dW, (size_t)C, dout, 1, (size_t)OC, inp, (size_t)C, OC, C, N);
    if (dbias) {
        CLLM__PARALLEL_FOR((size_t)N * OC)
        for (o = 0; o < OC; o++) {
            cllm_float db = 0;
            int n;
            for (n = 0; n < N; n++) db += dout[(size_t)n * OC + o];
            dbias[o] += db;
        }
    }
}
#endif /* CLLM_BLOCKED */

/* A few rows (generation decodes one token at a time): packing W would cost more than the
   product, so each row of W is read once and dotted with every input row while in L1. */
static void cllm__matmul_forward_rows(cllm_float *out, const cllm_float *inp, const cllm_float *W,
                                      const cllm_float *bias, int N, int C, int OC) {
    int o;
    CLLM__PARALLEL_FOR((size_t)N * C * OC)
    for (o = 0; o < OC; o++) {
        int n;
        for (n = 0; n < N; n++)
            out[(size_t)n * OC + o] = cllm__dot(bias ? bias[o] : 0, inp + (size_t)n * C, W + (size_t)o * C, C);
    }
}

/* ---- rmsnorm backward: rows in parallel, then dw by column blocks ---------------------------
   dw[c] sums over the rows, so the reference's row loop would race on it; here each thread
   owns a block of columns and adds its rows in the reference's order. */
static void cllm__rmsnorm_backward_parallel(cllm_float *dinp, cllm_float *dw, const cllm_float *dout,
                                            const cllm_float *inp, const cllm_float *w, const cllm_float *rstd,
                                            int N, int C) {
    int n, c0;
    CLLM__PARALLEL_FOR((size_t)N * C)
    for (n = 0; n < N; n++) {
        const cllm_float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        cllm_float *dx = dinp + (size_t)n * C, r = rstd[n], dot = 0;
        int c;
        for (c = 0; c < C; c++) dot += dy[c] * w[c] * x[c] * r;
        dot /= C;
        for (c = 0; c < C; c++) dx[c] += r * (dy[c] * w[c] - x[c] * r * dot);
    }
    if (dw) {
        CLLM__PARALLEL_FOR((size_t)N * C)
        for (c0 = 0; c0 < C; c0 += 64) {
            int c1 = C - c0 < 64 ? C : c0 + 64, n2, c;
            for (n2 = 0; n2 < N; n2++) {
                const cllm_float *x = inp + (size_t)n2 * C, *dy = dout + (size_t)n2 * C;
                cllm_float r = rstd[n2];
                for (c = c0; c < c1; c++) dw[c] += dy[c] * (x[c] * r);
            }
        }
    }
}

/* ---- attention: (batch, head) pairs in parallel ----------------------------------------------
   Forward: each (b, h) is independent; each thread gets its own score row. Backward: dk and
   dv of a kv head collect from the H/KV query heads that share it, so the unit of work is a
   (b, kv head) pair, whose query heads run in the reference's order. */
static void cllm__attention_forward_fast(cllm_float *out, cllm_float *lse, const cllm_float *q,
                                         const cllm_float *k, const cllm_float *v, const int *mask,
                                         int B, int T, int H, int KV, int hd, cllm_float *s) {
    int bh, rep = H / KV;
    cllm_float scale = 1 / cllm__sqrt((cllm_float)hd);
    cllm_float *rows = cllm__max_threads() > 1 ? (cllm_float *)CLLM_MALLOC(sizeof(cllm_float) * (size_t)cllm__max_threads() * T) : s;
    if (!rows) { cllm__attention_forward_naive(out, lse, q, k, v, mask, B, T, H, KV, hd, s); return; }
    CLLM__PARALLEL_FOR((size_t)B * H * T * T * hd)
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, t, j;
        cllm_float *sr = rows + (size_t)cllm__thread_num() * T;
        for (t = 0; t < T; t++) {
            const cllm_float *qt = q + ((size_t)(b * T + t) * H + h) * hd;
            cllm_float *yt = out + ((size_t)(b * T + t) * H + h) * hd;
            cllm_float mx = -INFINITY, sum = 0;
            for (j = 0; j <= t; j++) {
                if (mask && !mask[b * T + j]) { sr[j] = -INFINITY; continue; }
                sr[j] = cllm__dot(0, qt, k + ((size_t)(b * T + j) * KV + h / rep) * hd, hd) * scale;
                if (sr[j] > mx) mx = sr[j];
            }
            for (j = 0; j <= t; j++) { sr[j] = cllm__exp(sr[j] - mx); sum += sr[j]; }   /* sr now holds exp(s - max) */
            lse[((size_t)b * H + h) * T + t] = mx + cllm__log(sum);
            memset(yt, 0, sizeof(cllm_float) * (size_t)hd);
            for (j = 0; j <= t; j++) {
                cllm_float p = sr[j] / sum;
                if (p != 0) cllm__axpy(yt, p, v + ((size_t)(b * T + j) * KV + h / rep) * hd, hd);
            }
        }
    }
    if (rows != s) CLLM_FREE(rows);
}

static void cllm__attention_backward_fast(cllm_float *dq, cllm_float *dk, cllm_float *dv, const cllm_float *dout,
                                          const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                          const cllm_float *out, const cllm_float *lse, const int *mask,
                                          int B, int T, int H, int KV, int hd) {
    int bg, rep = H / KV;
    cllm_float scale = 1 / cllm__sqrt((cllm_float)hd);
    CLLM__PARALLEL_FOR((size_t)B * H * T * T * hd)
    for (bg = 0; bg < B * KV; bg++) {
        int b = bg / KV, g = bg % KV, h, t, j;
        for (h = g * rep; h < (g + 1) * rep; h++) for (t = 0; t < T; t++) {
            size_t qo = ((size_t)(b * T + t) * H + h) * hd;
            const cllm_float *qt = q + qo, *dyt = dout + qo;
            cllm_float row_lse = lse[((size_t)b * H + h) * T + t], dyy = cllm__dot(0, dyt, out + qo, hd);
            for (j = 0; j <= t; j++) {
                size_t ko = ((size_t)(b * T + j) * KV + g) * hd;
                cllm_float p, dp, ds;
                if (mask && !mask[b * T + j]) continue;
                p = cllm__exp(cllm__dot(0, qt, k + ko, hd) * scale - row_lse);
                dp = cllm__dot(0, dyt, v + ko, hd);
                cllm__axpy(dv + ko, p, dyt, hd);
                ds = p * (dp - dyy) * scale;
                cllm__axpy(dq + qo, ds, k + ko, hd);
                cllm__axpy(dk + ko, ds, qt, hd);
            }
        }
    }
}

#endif /* CLLM__FAST */

/* ---- dispatchers: the names the forward and backward drivers call ---------------------------- */

static void cllm__matmul_forward(cllm_float *out, const cllm_float *inp, const cllm_float *W,
                                 const cllm_float *bias, int N, int C, int OC) {
#ifdef CLLM_BLOCKED
    if (N < CLLM__DR) cllm__matmul_forward_rows(out, inp, W, bias, N, C, OC);
    else cllm__matmul_forward_blocked(out, inp, W, bias, N, C, OC);
#else
#ifdef CLLM__OMP
    if (N < 4) { cllm__matmul_forward_rows(out, inp, W, bias, N, C, OC); return; }  /* parallel over OC */
#endif
    cllm__matmul_forward_naive(out, inp, W, bias, N, C, OC);
#endif
}

static void cllm__matmul_backward(cllm_float *dinp, cllm_float *dW, cllm_float *dbias,
                                  const cllm_float *dout, const cllm_float *inp, const cllm_float *W,
                                  int N, int C, int OC) {
#ifdef CLLM_BLOCKED
    cllm__matmul_backward_blocked(dinp, dW, dbias, dout, inp, W, N, C, OC);
#else
    cllm__matmul_backward_naive(dinp, dW, dbias, dout, inp, W, N, C, OC);
#endif
}

static void cllm__rmsnorm_backward(cllm_float *dinp, cllm_float *dw, const cllm_float *dout,
                                   const cllm_float *inp, const cllm_float *w, const cllm_float *rstd,
                                   int N, int C) {
#ifdef CLLM__FAST
    cllm__rmsnorm_backward_parallel(dinp, dw, dout, inp, w, rstd, N, C);
#else
    cllm__rmsnorm_backward_naive(dinp, dw, dout, inp, w, rstd, N, C);
#endif
}

/* s: scratch of T values (the fast path allocates one row per thread itself). */
static void cllm__attention_forward(cllm_float *out, cllm_float *lse, const cllm_float *q,
                                    const cllm_float *k, const cllm_float *v, const int *mask,
                                    int B, int T, int H, int KV, int hd, cllm_float *s) {
#ifdef CLLM__FAST
    cllm__attention_forward_fast(out, lse, q, k, v, mask, B, T, H, KV, hd, s);
#else
    cllm__attention_forward_naive(out, lse, q, k, v, mask, B, T, H, KV, hd, s);
#endif
}

static void cllm__attention_backward(cllm_float *dq, cllm_float *dk, cllm_float *dv, const cllm_float *dout,
                                     const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                     const cllm_float *out, const cllm_float *lse, const int *mask,
                                     int B, int T, int H, int KV, int hd) {
#ifdef CLLM__FAST
    cllm__attention_backward_fast(dq, dk, dv, dout, q, k, v, out, lse, mask, B, T, H, KV, hd);
#else
    cllm__attention_backward_naive(dq, dk, dv, dout, q, k, v, out, lse, mask, B, T, H, KV, hd);
#endif
}

/* -------------------------------------------------------------------------------------------- */
/* The model: forward pass                                                                      */
/* -------------------------------------------------------------------------------------------- */

#define CLLM__LMHEAD_CHUNK 64   /* rows of logits materialised at once: memory is CHUNK x V, not B x T x V */

static void cllm__fill_in_act_sizes(size_t *s, const cllm_config *c, size_t BT) {
    size_t L = (size_t)c->n_layers, C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t H = (size_t)c->n_heads, KV = (size_t)c->n_kv_heads, hd = (size_t)c->head_dim;
    int qk = c->qk_norm;
    s[0]  = (L + 1) * BT * C;          /* x        */
    s[1]  = BT * C;                    /* ln1      (one layer: recomputed by the backward pass) */
    s[2]  = L * BT;                    /* ln1_rstd */
    s[3]  = qk ? L * BT * H * hd : 0;  /* q_pre    */
    s[4]  = qk ? L * BT * KV * hd : 0; /* k_pre    */
    s[5]  = qk ? L * BT * H : 0;       /* q_rstd   */
    s[6]  = qk ? L * BT * KV : 0;      /* k_rstd   */
    s[7]  = L * BT * H * hd;           /* q        */
    s[8]  = L * BT * KV * hd;          /* k        */
    s[9]  = L * BT * KV * hd;          /* v        */
    s[10] = L * BT * H;                /* att_lse  */
    s[11] = L * BT * H * hd;           /* atty     */
    s[12] = L * BT * C;                /* h        */
    s[13] = BT * C;                    /* ln2      (one layer) */
    s[14] = L * BT;                    /* ln2_rstd */
    s[15] = L * BT * I;                /* gate     */
    s[16] = L * BT * I;                /* up       */
    s[17] = BT * I;                    /* act      (one layer) */
    s[18] = BT * C;                    /* lnf      */
    s[19] = BT;                        /* lnf_rstd */
    s[20] = BT;                        /* lse      */
    s[21] = BT;                        /* logp     */
    s[22] = BT;                        /* entropy  */
}

/* Backward work space: running residual gradients and per-layer activation gradients, reused
   for every layer (only the parameter gradients need to persist), plus the lm-head chunk.
   The gradients before the q/k norms exist only with qk_norm (else they are dq and dk).      */
static size_t cllm__scratch_size(const cllm_config *c, size_t BT, size_t T) {
    size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    size_t Q = (size_t)c->n_heads * c->head_dim, K = (size_t)c->n_kv_heads * c->head_dim;
    size_t CH = CLLM__LMHEAD_CHUNK, pre = c->qk_norm ? 1 : 0;
    return BT * (3 * C + 3 * I + (2 + pre) * Q + (2 + pre) * K) + CH * (V + 2 * C) + T;
}

static cllm_result cllm__ensure_acts(cllm_model *m, int B, int T, cllm_err *err) {
    size_t BT = (size_t)B * (size_t)T, sizes[CLLM_NUM_ACT_TENSORS], total = 0;
    int i;
    if (BT > m->acts_cap) {
        cllm_float **ptrs[CLLM_NUM_ACT_TENSORS], *mem;
        cllm_acts *a = &m->acts;
        cllm_float **list[CLLM_NUM_ACT_TENSORS];
        list[0] = &a->x; list[1] = &a->ln1; list[2] = &a->ln1_rstd; list[3] = &a->q_pre; list[4] = &a->k_pre;
        list[5] = &a->q_rstd; list[6] = &a->k_rstd; list[7] = &a->q; list[8] = &a->k; list[9] = &a->v;
        list[10] = &a->att_lse; list[11] = &a->atty; list[12] = &a->h; list[13] = &a->ln2; list[14] = &a->ln2_rstd;
        list[15] = &a->gate; list[16] = &a->up; list[17] = &a->act; list[18] = &a->lnf; list[19] = &a->lnf_rstd;
        list[20] = &a->lse; list[21] = &a->logp; list[22] = &a->entropy;
        memcpy(ptrs, list, sizeof list);
        CLLM_FREE(m->acts_memory); CLLM_FREE(m->scratch); CLLM_FREE(m->input_ids); CLLM_FREE(m->targets); CLLM_FREE(m->mask); CLLM_FREE(m->seq_logp);
        m->acts_memory = m->scratch = NULL; m->input_ids = m->targets = m->mask = NULL; m->seq_logp = NULL; m->acts_cap = 0;
        cllm__fill_in_act_sizes(sizes, &m->config, BT);
        for (i = 0; i < CLLM_NUM_ACT_TENSORS; i++) total += sizes[i];
        m->acts_memory = mem = (cllm_float *)cllm__calloc(total, sizeof(cllm_float));
        m->scratch = (cllm_float *)cllm__calloc(cllm__scratch_size(&m->config, BT, BT), sizeof(cllm_float));
        m->input_ids = (int *)cllm__calloc(BT, sizeof(int));
        m->targets = (int *)cllm__calloc(BT, sizeof(int));
        m->mask = (int *)cllm__calloc(BT, sizeof(int));
        m->seq_logp = (cllm_float *)cllm__calloc(BT, sizeof(cllm_float));
        if (!mem || !m->scratch || !m->input_ids || !m->targets || !m->mask || !m->seq_logp)
            return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for activations of a %dx%d batch (%.2f GB); use a smaller batch or shorter sequences", B, T, total * sizeof(cllm_float) / 1e9);
        for (i = 0; i < CLLM_NUM_ACT_TENSORS; i++) { *ptrs[i] = sizes[i] ? mem : NULL; mem += sizes[i]; }
        m->acts_cap = BT;
    }
    if (T > m->rope_len) {
        int half = m->config.head_dim / 2;
        CLLM_FREE(m->rope_cos); CLLM_FREE(m->rope_sin);
        m->rope_cos = (cllm_float *)cllm__calloc((size_t)T * half, sizeof(cllm_float));
        m->rope_sin = (cllm_float *)cllm__calloc((size_t)T * half, sizeof(cllm_float));
        m->rope_len = 0;
        if (!m->rope_cos || !m->rope_sin) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for RoPE tables");
        cllm__rope_tables(m->rope_cos, m->rope_sin, &m->config, T);
        m->rope_len = T;
    }
    return CLLM_OK;
}

/* Checks ids, labels and the right-padding mask, and builds the shifted targets. */
static cllm_result cllm__prepare_batch(cllm_model *m, const cllm_batch *bt, cllm_err *err) {
    int B = bt->B, T = bt->T, V = m->config.vocab_size, b, t;
    for (b = 0; b < B; b++) {
        int seen_pad = 0;
        for (t = 0; t < T; t++) {
            int i = b * T + t, id = bt->input_ids[i], mk = bt->attn_mask ? bt->attn_mask[i] : 1;
            if (id < 0 || id >= V) return cllm__fail(err, CLLM_ERR_ARG, "batch row %d position %d: token id %d is outside the vocabulary [0, %d)", b, t, id, V);
            if (mk != 0 && mk != 1) return cllm__fail(err, CLLM_ERR_ARG, "batch row %d position %d: attn_mask must be 0 or 1", b, t);
            if (mk && seen_pad) return cllm__fail(err, CLLM_ERR_ARG, "batch row %d: attn_mask has a 1 after a 0; batches must be right-padded", b);
            if (!mk) { if (t == 0) return cllm__fail(err, CLLM_ERR_ARG, "batch row %d is empty (attn_mask[0] = 0)", b); seen_pad = 1; }
            if (bt->labels && bt->labels[i] != -100 && (bt->labels[i] < 0 || bt->labels[i] >= V))
                return cllm__fail(err, CLLM_ERR_ARG, "batch row %d position %d: label %d is neither -100 nor a token id", b, t, bt->labels[i]);
            m->mask[i] = mk;
            m->input_ids[i] = id;
        }
    }
    /* targets[t] = labels[t+1]: the logits at t predict the next token (HF shifts labels left) */
    for (b = 0; b < B; b++) for (t = 0; t < T; t++) {
        int i = b * T + t, y = -100;
        if (t + 1 < T) y = bt->labels ? bt->labels[i + 1] : (m->mask[i + 1] ? bt->input_ids[i + 1] : -100);
        m->targets[i] = y;
    }
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_forward(cllm_model *m, const cllm_batch *batch, cllm_float *logits_out, cllm_err *err) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    cllm_acts *a = &m->acts;
    int B = batch ? batch->B : 0, T = batch ? batch->T : 0, l, r;
    int C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    int Q = H * hd, K = KV * hd, BT = B * T;
    cllm_float inv_tau;
    cllm_result rc;

    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "cllm_forward: the model is not loaded");
    if (!batch || B <= 0 || T <= 0 || !batch->input_ids) return cllm__fail(err, CLLM_ERR_ARG, "cllm_forward: batch needs B > 0, T > 0 and input_ids");
    if ((double)B * T > 1e8) return cllm__fail(err, CLLM_ERR_LIMIT, "cllm_forward: batch %d x %d is too large", B, T);
    if (batch->temperature < 0 || batch->temperature != batch->temperature) return cllm__fail(err, CLLM_ERR_ARG, "cllm_forward: temperature must be positive (0 = default 1)");
    m->B = 0;                                     /* invalid until this forward completes */
    if ((rc = cllm__ensure_acts(m, B, T, err)) != CLLM_OK) return rc;
    if ((rc = cllm__prepare_batch(m, batch, err)) != CLLM_OK) return rc;
    inv_tau = (cllm_float)(1.0 / cllm__def(batch->temperature, 1.0f));
    m->inv_temperature = (float)inv_tau;

    cllm__embedding_forward(a->x, batch->input_ids, p->embed, BT, C);
    for (l = 0; l < c->n_layers; l++) {
        /* per-layer views of weights (l_) and activations */
        const cllm_float *x = a->x + (size_t)l * BT * C;
        cllm_float *ln1 = a->ln1, *ln1_rstd = a->ln1_rstd + (size_t)l * BT;
        cllm_float *q = a->q + (size_t)l * BT * Q, *k = a->k + (size_t)l * BT * K, *v = a->v + (size_t)l * BT * K;
        cllm_float *atty = a->atty + (size_t)l * BT * Q, *hres = a->h + (size_t)l * BT * C;
        cllm_float *ln2 = a->ln2, *ln2_rstd = a->ln2_rstd + (size_t)l * BT;
        cllm_float *gate = a->gate + (size_t)l * BT * I, *up = a->up + (size_t)l * BT * I, *act = a->act;
        cllm_float *xout = a->x + (size_t)(l + 1) * BT * C;
        const cllm_float *l_wq = p->wq + (size_t)l * Q * C, *l_wk = p->wk + (size_t)l * K * C, *l_wv = p->wv + (size_t)l * K * C;
        const cllm_float *l_bq = p->bq ? p->bq + (size_t)l * Q : NULL, *l_bk = p->bk ? p->bk + (size_t)l * K : NULL;
        const cllm_float *l_bv = p->bv ? p->bv + (size_t)l * K : NULL;
        int i;

        /* attention block: h = x + o_proj(attention(rope(q), rope(k), v)), q,k,v from rmsnorm(x) */
        cllm__rmsnorm_forward(ln1, ln1_rstd, x, p->attn_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        if (c->qk_norm) {                         /* Qwen3: RMSNorm over each head's hd values, before RoPE */
            cllm_float *q_pre = a->q_pre + (size_t)l * BT * Q, *k_pre = a->k_pre + (size_t)l * BT * K;
            cllm__matmul_forward(q_pre, ln1, l_wq, l_bq, BT, C, Q);
            cllm__matmul_forward(k_pre, ln1, l_wk, l_bk, BT, C, K);
            cllm__rmsnorm_forward(q, a->q_rstd + (size_t)l * BT * H, q_pre, p->q_norm + (size_t)l * hd, BT * H, hd, c->rms_norm_eps);
            cllm__rmsnorm_forward(k, a->k_rstd + (size_t)l * BT * KV, k_pre, p->k_norm + (size_t)l * hd, BT * KV, hd, c->rms_norm_eps);
        } else {
            cllm__matmul_forward(q, ln1, l_wq, l_bq, BT, C, Q);
            cllm__matmul_forward(k, ln1, l_wk, l_bk, BT, C, K);
        }
        cllm__matmul_forward(v, ln1, l_wv, l_bv, BT, C, K);
        cllm__rope_forward(q, m->rope_cos, m->rope_sin, B, T, H, hd);
        cllm__rope_forward(k, m->rope_cos, m->rope_sin, B, T, KV, hd);
        cllm__attention_forward(atty, a->att_lse + (size_t)l * BT * H, q, k, v, m->mask, B, T, H, KV, hd, m->scratch);
        cllm__matmul_forward(hres, atty, p->wo + (size_t)l * C * Q, NULL, BT, Q, C);
        CLLM__PARALLEL_FOR((size_t)BT * C)
        for (i = 0; i < BT * C; i++) hres[i] += x[i];

        /* MLP block: x' = h + down_proj(silu(gate_proj(n)) * up_proj(n)), n = rmsnorm(h) */
        cllm__rmsnorm_forward(ln2, ln2_rstd, hres, p->mlp_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        cllm__matmul_forward(gate, ln2, p->w_gate + (size_t)l * I * C, NULL, BT, C, I);
        cllm__matmul_forward(up, ln2, p->w_up + (size_t)l * I * C, NULL, BT, C, I);
        cllm__swiglu_forward(act, gate, up, (size_t)BT * I);
        cllm__matmul_forward(xout, act, p->w_down + (size_t)l * C * I, NULL, BT, I, C);
        CLLM__PARALLEL_FOR((size_t)BT * C)
        for (i = 0; i < BT * C; i++) xout[i] += hres[i];
    }
    cllm__rmsnorm_forward(a->lnf, a->lnf_rstd, a->x + (size_t)c->n_layers * BT * C, p->final_norm, BT, C, c->rms_norm_eps);

    /* lm head + log-softmax, CHUNK rows at a time: logits never exist for the whole batch */
    m->loss = 0; m->n_targets = 0;
    for (r = 0; r < BT; r += CLLM__LMHEAD_CHUNK) {
        int n = BT - r < CLLM__LMHEAD_CHUNK ? BT - r : CLLM__LMHEAD_CHUNK, i;
        cllm_float *z = m->scratch;
        cllm__matmul_forward(z, a->lnf + (size_t)r * C, p->lm_head, NULL, n, C, V);
        CLLM__PARALLEL_FOR((size_t)n * V * 8)
        for (i = 0; i < n; i++) {
            int y = m->targets[r + i];
            cllm__logsoftmax_row(&a->lse[r + i], &a->logp[r + i], &a->entropy[r + i], z + (size_t)i * V, y >= 0 ? y : -1, inv_tau, V);
            if (logits_out) memcpy(logits_out + (size_t)(r + i) * V, z + (size_t)i * V, sizeof(cllm_float) * (size_t)V);
        }
    }
    {   /* per-sequence sums and the HF loss: mean of -log p over counted targets */
        int b, t;
        double total = 0;
        for (b = 0; b < B; b++) {
            double s = 0;
            for (t = 0; t < T; t++) if (m->targets[b * T + t] >= 0) { s += a->logp[b * T + t]; m->n_targets++; }
            m->seq_logp[b] = (cllm_float)s;
            total += s;
        }
        m->loss = m->n_targets ? (cllm_float)(-total / m->n_targets) : 0;
    }
    m->B = B; m->T = T;
    cllm__ok(err);
    return CLLM_OK;
}

/* -------------------------------------------------------------------------------------------- */
/* The model: backward pass (layers in exact reverse order)                                     */
/* -------------------------------------------------------------------------------------------- */

CLLMDEF cllm_result cllm_zero_grad(cllm_model *m, cllm_err *err) {
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "cllm_zero_grad: the model is not loaded");
    if (!m->grads_memory) {
        m->grads_memory = cllm__alloc_params(&m->grads, m->param_sizes, m->num_params);
        if (!m->grads_memory) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for %zu gradients", m->num_params);
    } else memset(m->grads_memory, 0, m->num_params * sizeof(cllm_float));
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_backward(cllm_model *m, const cllm_float *dlogp, const cllm_float *dhidden, cllm_err *err) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    const cllm_acts *a = &m->acts;
    cllm_params *g = &m->grads;
    int B = m->B, T = m->T, BT = B * T, l, r, i;
    int C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    int Q = H * hd, K = KV * hd;
    cllm_float *dx, *dh, *dln, *dact, *dgate, *dup, *datty, *dq, *dk, *dv, *dq_pre, *dk_pre, *packed, *dpacked, *z;

    if (B <= 0) return cllm__fail(err, CLLM_ERR_ARG, "cllm_backward: run cllm_forward first");
    if (!m->grads_memory) { cllm_result rc = cllm_zero_grad(m, err); if (rc != CLLM_OK) return rc; }

    /* carve the scratch space */
    dx = m->scratch;           dh = dx + (size_t)BT * C;     dln = dh + (size_t)BT * C;
    dact = dln + (size_t)BT * C;  dgate = dact + (size_t)BT * I;  dup = dgate + (size_t)BT * I;
    datty = dup + (size_t)BT * I; dq = datty + (size_t)BT * Q;    dk = dq + (size_t)BT * Q;
    dv = dk + (size_t)BT * K;     packed = dv + (size_t)BT * K;
    dq_pre = dq; dk_pre = dk;                     /* the q/k norms' inputs, distinct only with qk_norm */
    if (c->qk_norm) { dq_pre = packed; dk_pre = dq_pre + (size_t)BT * Q; packed = dk_pre + (size_t)BT * K; }
    dpacked = packed + (size_t)CLLM__LMHEAD_CHUNK * C; z = dpacked + (size_t)CLLM__LMHEAD_CHUNK * C;

    /* lm head: recompute each chunk's logits, turn them into dlogits, backprop through the head.
       Only rows whose target is counted and whose dlogp is non-zero are processed. */
    memset(dln, 0, sizeof(cllm_float) * (size_t)BT * C);
    {
        int idx[CLLM__LMHEAD_CHUNK], n = 0;
        for (r = 0; r <= BT; r++) {
            int take = r < BT && m->targets[r] >= 0 && (dlogp ? dlogp[r] != 0 : m->n_targets > 0);
            if (take) { idx[n] = r; memcpy(packed + (size_t)n * C, a->lnf + (size_t)r * C, sizeof(cllm_float) * (size_t)C); n++; }
            if (n == CLLM__LMHEAD_CHUNK || (r == BT && n > 0)) {
                cllm__matmul_forward(z, packed, p->lm_head, NULL, n, C, V);
                CLLM__PARALLEL_FOR((size_t)n * V * 8)
                for (i = 0; i < n; i++) {
                    cllm_float d = dlogp ? dlogp[idx[i]] : (cllm_float)(-1.0 / m->n_targets);   /* loss = -mean logp */
                    cllm__logsoftmax_row_backward(z + (size_t)i * V, a->lse[idx[i]], m->targets[idx[i]], d, (cllm_float)m->inv_temperature, V);
                }
                memset(dpacked, 0, sizeof(cllm_float) * (size_t)n * C);
                cllm__matmul_backward(dpacked, g->lm_head, NULL, z, packed, p->lm_head, n, C, V);
                CLLM__PARALLEL_FOR((size_t)n * C)
                for (i = 0; i < n; i++) {                    /* rows idx[i] are distinct */
                    int k;
                    for (k = 0; k < C; k++) dln[(size_t)idx[i] * C + k] += dpacked[(size_t)i * C + k];
                }
                n = 0;
            }
        }
    }
    if (dhidden) for (i = 0; i < BT * C; i++) dln[i] += dhidden[i];
    memset(dx, 0, sizeof(cllm_float) * (size_t)BT * C);
    cllm__rmsnorm_backward(dx, g->final_norm, dln, a->x + (size_t)c->n_layers * BT * C, p->final_norm, a->lnf_rstd, BT, C);

    for (l = c->n_layers - 1; l >= 0; l--) {
        const cllm_float *x = a->x + (size_t)l * BT * C;
        cllm_float *ln1 = a->ln1, *ln1_rstd = a->ln1_rstd + (size_t)l * BT;
        const cllm_float *q = a->q + (size_t)l * BT * Q, *k = a->k + (size_t)l * BT * K, *v = a->v + (size_t)l * BT * K;
        const cllm_float *atty = a->atty + (size_t)l * BT * Q, *hres = a->h + (size_t)l * BT * C;
        cllm_float *ln2 = a->ln2, *ln2_rstd = a->ln2_rstd + (size_t)l * BT;
        const cllm_float *gate = a->gate + (size_t)l * BT * I, *up = a->up + (size_t)l * BT * I;
        cllm_float *act = a->act;
        cllm_float *dbq = g->bq ? g->bq + (size_t)l * Q : NULL, *dbk = g->bk ? g->bk + (size_t)l * K : NULL, *dbv = g->bv ? g->bv + (size_t)l * K : NULL;

        /* The forward pass kept ln1, ln2 and act for one layer only: recompute this layer's, with
           the same kernels on the same inputs, so they are bit-identical (rstd is rewritten as is). */
        cllm__rmsnorm_forward(ln1, ln1_rstd, x, p->attn_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        cllm__rmsnorm_forward(ln2, ln2_rstd, hres, p->mlp_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        cllm__swiglu_forward(act, gate, up, (size_t)BT * I);

        /* MLP block. Forward was x' = h + act W_down^T, so dh starts as dx' (the residual path). */
        memcpy(dh, dx, sizeof(cllm_float) * (size_t)BT * C);
        memset(dact, 0, sizeof(cllm_float) * (size_t)BT * I * 3);     /* dact, dgate, dup */
        cllm__matmul_backward(dact, g->w_down + (size_t)l * C * I, NULL, dx, act, p->w_down + (size_t)l * C * I, BT, I, C);
        cllm__swiglu_backward(dgate, dup, dact, gate, up, (size_t)BT * I);
        memset(dln, 0, sizeof(cllm_float) * (size_t)BT * C);
        cllm__matmul_backward(dln, g->w_gate + (size_t)l * I * C, NULL, dgate, ln2, p->w_gate + (size_t)l * I * C, BT, C, I);
        cllm__matmul_backward(dln, g->w_up + (size_t)l * I * C, NULL, dup, ln2, p->w_up + (size_t)l * I * C, BT, C, I);
        cllm__rmsnorm_backward(dh, g->mlp_norm + (size_t)l * C, dln, hres, p->mlp_norm + (size_t)l * C, ln2_rstd, BT, C);

        /* Attention block. Forward was h = x + atty W_o^T, so dx starts as dh. */
        memcpy(dx, dh, sizeof(cllm_float) * (size_t)BT * C);
        memset(datty, 0, sizeof(cllm_float) * (size_t)BT * (2 * Q + 2 * K));   /* datty dq dk dv */
        cllm__matmul_backward(datty, g->wo + (size_t)l * C * Q, NULL, dh, atty, p->wo + (size_t)l * C * Q, BT, Q, C);
        cllm__attention_backward(dq, dk, dv, datty, q, k, v, atty, a->att_lse + (size_t)l * BT * H, m->mask, B, T, H, KV, hd);
        cllm__rope_backward(dq, m->rope_cos, m->rope_sin, B, T, H, hd);
        cllm__rope_backward(dk, m->rope_cos, m->rope_sin, B, T, KV, hd);
        if (c->qk_norm) {
            memset(dq_pre, 0, sizeof(cllm_float) * (size_t)BT * (Q + K));        /* dq_pre dk_pre */
            cllm__rmsnorm_backward(dq_pre, g->q_norm + (size_t)l * hd, dq, a->q_pre + (size_t)l * BT * Q, p->q_norm + (size_t)l * hd, a->q_rstd + (size_t)l * BT * H, BT * H, hd);
            cllm__rmsnorm_backward(dk_pre, g->k_norm + (size_t)l * hd, dk, a->k_pre + (size_t)l * BT * K, p->k_norm + (size_t)l * hd, a->k_rstd + (size_t)l * BT * KV, BT * KV, hd);
        }
        memset(dln, 0, sizeof(cllm_float) * (size_t)BT * C);
        cllm__matmul_backward(dln, g->wq + (size_t)l * Q * C, dbq, dq_pre, ln1, p->wq + (size_t)l * Q * C, BT, C, Q);
        cllm__matmul_backward(dln, g->wk + (size_t)l * K * C, dbk, dk_pre, ln1, p->wk + (size_t)l * K * C, BT, C, K);
        cllm__matmul_backward(dln, g->wv + (size_t)l * K * C, dbv, dv, ln1, p->wv + (size_t)l * K * C, BT, C, K);
        cllm__rmsnorm_backward(dx, g->attn_norm + (size_t)l * C, dln, x, p->attn_norm + (size_t)l * C, ln1_rstd, BT, C);
    }
    cllm__embedding_backward(g->embed, dx, m->input_ids, BT, C);
    cllm__ok(err);
    return CLLM_OK;
}

/* -------------------------------------------------------------------------------------------- */
/* Token batches from JSONL                                                                     */
/* -------------------------------------------------------------------------------------------- */

/* Reads one line of any length into *buf (grown as needed, NUL-terminated, newline removed).
   Returns the length, or -1 at end of file. */
static long cllm__read_line(FILE *f, char **buf, size_t *cap) {
    size_t n = 0;
    int ch;
    if (!*buf) { *cap = 256; *buf = (char *)CLLM_MALLOC(*cap); if (!*buf) return -1; }
    while ((ch = fgetc(f)) != EOF && ch != '\n') {
        if (n + 1 >= *cap) {
            char *nb = (char *)CLLM_REALLOC(*buf, *cap * 2);
            if (!nb) return -1;
            *buf = nb; *cap *= 2;
        }
        (*buf)[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) return -1;
    if (n && (*buf)[n - 1] == '\r') n--;
    (*buf)[n] = 0;
    return (long)n;
}

/* Reads a JSON array of integers into a new int array; returns its length or -1. */
static int cllm__json_int_array(const cJSON *arr, int **out) {
    const cJSON *e;
    int n = 0;
    *out = NULL;
    if (!cJSON_IsArray(arr)) return -1;
    *out = (int *)cllm__calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(int));
    if (!*out) return -1;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || fabs(e->valuedouble) > 2147483647.0) { CLLM_FREE(*out); *out = NULL; return -1; }
        (*out)[n++] = (int)e->valuedouble;
    }
    return n;
}

CLLMDEF void cllm_batch_free(cllm_batch *batch) {
    if (!batch) return;
    CLLM_FREE((void *)batch->input_ids); CLLM_FREE((void *)batch->labels); CLLM_FREE((void *)batch->attn_mask);
    memset(batch, 0, sizeof *batch);
}

CLLMDEF cllm_result cllm_batch_read_jsonl(cllm_batch *batch, const char *path, cllm_err *err) {
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    int **ids = NULL, **labels = NULL, *lens = NULL, B = 0, T = 0, lineno = 0, b, t;
    int *in = NULL, *lab = NULL, *mask = NULL;
    long len;
    cllm_result rc = CLLM_OK;
    memset(batch, 0, sizeof *batch);
    if (!f) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *row, *jl;
        int *x = NULL, *y = NULL, n, ny;
        lineno++;
        if (len == 0) continue;
        row = cJSON_ParseWithLength(line, (size_t)len);
        if (!row) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: not valid JSON", path, lineno); break; }
        n = cllm__json_int_array(cJSON_GetObjectItemCaseSensitive(row, "input_ids"), &x);
        jl = cJSON_GetObjectItemCaseSensitive(row, "labels");
        ny = jl && !cJSON_IsNull(jl) ? cllm__json_int_array(jl, &y) : -2;
        cJSON_Delete(row);
        if (n <= 0) { CLLM_FREE(x); CLLM_FREE(y); rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: \"input_ids\" must be a non-empty array of integers", path, lineno); break; }
        if (ny != -2 && ny != n) { CLLM_FREE(x); CLLM_FREE(y); rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: \"labels\" must be an integer array as long as input_ids (%d)", path, lineno, n); break; }
        stbds_arrput(ids, x); stbds_arrput(labels, y); stbds_arrput(lens, n);
        if (n > T) T = n;
        B++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && B == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no rows", path);
    if (rc == CLLM_OK) {
        in = (int *)cllm__calloc((size_t)B * T, sizeof(int));
        lab = (int *)cllm__calloc((size_t)B * T, sizeof(int));
        mask = (int *)cllm__calloc((size_t)B * T, sizeof(int));
        if (!in || !lab || !mask) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    if (rc == CLLM_OK) {
        for (b = 0; b < B; b++) for (t = 0; t < T; t++) {
            int i = b * T + t, real = t < lens[b];
            in[i] = real ? ids[b][t] : 0;
            lab[i] = real ? (labels[b] ? labels[b][t] : ids[b][t]) : -100;
            mask[i] = real;
        }
        batch->B = B; batch->T = T; batch->input_ids = in; batch->labels = lab; batch->attn_mask = mask;
        in = lab = mask = NULL;
    }
    for (b = 0; b < (int)stbds_arrlen(ids); b++) { CLLM_FREE(ids[b]); CLLM_FREE(labels[b]); }
    stbds_arrfree(ids); stbds_arrfree(labels); stbds_arrfree(lens);
    CLLM_FREE(in); CLLM_FREE(lab); CLLM_FREE(mask);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* Optimisation: AdamW, gradient clipping, learning-rate schedules (torch / transformers)      */
/* -------------------------------------------------------------------------------------------- */

CLLMDEF void cllm_adamw_step(cllm_float *p, const cllm_float *g, cllm_float *m, cllm_float *v, size_t n,
                             int t, double lr, double beta1, double beta2, double eps, double wd) {
    double bc1 = 1 - pow(beta1, t), bc2 = 1 - pow(beta2, t), step = lr / bc1, bc2_sqrt = sqrt(bc2);
    size_t i;
    CLLM__PARALLEL_FOR(n * 16)                                          /* elements are independent */
    for (i = 0; i < n; i++) {
        double pi = p[i] * (1 - lr * wd);                               /* decoupled weight decay, first */
        double mi = beta1 * m[i] + (1 - beta1) * g[i];
        double vi = beta2 * v[i] + (1 - beta2) * (double)g[i] * g[i];
        pi -= step * mi / (sqrt(vi) / bc2_sqrt + eps);                  /* eps after bias-correcting v */
        p[i] = (cllm_float)pi; m[i] = (cllm_float)mi; v[i] = (cllm_float)vi;
    }
}

CLLMDEF cllm_result cllm_adamw_update(cllm_model *model, const cllm_adamw_config *cfg, double lr, cllm_err *err) {
    cllm_adamw_config def;
    cllm_float **pp[CLLM_NUM_PARAM_TENSORS], **gp[CLLM_NUM_PARAM_TENSORS];
    size_t off = 0;
    int i, rows, cols;
    if (!model->grads_memory) return cllm__fail(err, CLLM_ERR_ARG, "cllm_adamw_update: no gradients yet (run cllm_backward first)");
    memset(&def, 0, sizeof def);
    if (cfg) def = *cfg;
    def.beta1 = cllm__def(def.beta1, 0.9f);
    def.beta2 = cllm__def(def.beta2, 0.999f);
    def.eps = cllm__def(def.eps, 1e-8f);
    if (!model->m_memory) {
        model->m_memory = (cllm_float *)cllm__calloc(model->num_params, sizeof(cllm_float));
        model->v_memory = (cllm_float *)cllm__calloc(model->num_params, sizeof(cllm_float));
        if (!model->m_memory || !model->v_memory) {
            CLLM_FREE(model->m_memory); CLLM_FREE(model->v_memory); model->m_memory = model->v_memory = NULL;
            return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the AdamW moments (2 x %zu floats)", model->num_params);
        }
    }
    model->adam_t++;
    cllm__param_ptrs(&model->params, pp);
    cllm__param_ptrs(&model->grads, gp);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        size_t n = model->param_sizes[i];
        if (!n) continue;
        cllm__param_shape(&model->config, i, &rows, &cols);
        /* HF Trainer decays every weight matrix, not biases or norm weights: exactly the 2-D tensors */
        cllm_adamw_step(*pp[i], *gp[i], model->m_memory + off, model->v_memory + off, n, model->adam_t,
                        lr, def.beta1, def.beta2, def.eps, cols ? def.weight_decay : 0.0);
        off += n;
    }
    cllm__ok(err);
    return CLLM_OK;
}

/* torch.nn.utils.clip_grad_norm_: N = ||(||g_i||)_i||, coef = min(1, max/(N + 1e-6)), g *= coef */
CLLMDEF double cllm_clip_grad_norm_arrays(cllm_float **grads, const size_t *sizes, int n, double max_norm) {
    double sq = 0, norm, coef;
    size_t k;
    int i;
    for (i = 0; i < n; i++) for (k = 0; k < sizes[i]; k++) sq += (double)grads[i][k] * grads[i][k];
    norm = sqrt(sq);
    coef = max_norm / (norm + 1e-6);
    if (max_norm > 0 && coef < 1)
        for (i = 0; i < n; i++) for (k = 0; k < sizes[i]; k++) grads[i][k] = (cllm_float)(grads[i][k] * coef);
    return norm;
}

CLLMDEF double cllm_clip_grad_norm(cllm_model *m, double max_norm) {
    size_t n = m->num_params;
    if (!m->grads_memory) return 0;
    return cllm_clip_grad_norm_arrays(&m->grads_memory, &n, 1, max_norm);
}

CLLMDEF double cllm_lr_at(cllm_schedule kind, double base_lr, long step, long warmup, long total) {
    double progress;
    if (step < warmup) return base_lr * (double)step / (double)(warmup > 1 ? warmup : 1);
    if (kind == CLLM_SCHED_CONSTANT) return base_lr;
    if (kind == CLLM_SCHED_LINEAR) {
        double f = (double)(total - step) / (double)(total - warmup > 1 ? total - warmup : 1);
        return base_lr * (f > 0 ? f : 0);
    }
    progress = (double)(step - warmup) / (double)(total - warmup > 1 ? total - warmup : 1);
    {
        double f = 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
        return base_lr * (f > 0 ? f : 0);
    }
}

/* -------------------------------------------------------------------------------------------- */
/* Checkpoints: writing                                                                         */
/* -------------------------------------------------------------------------------------------- */

static cllm_result cllm__mkdir(const char *dir, cllm_err *err) {
#if defined(_WIN32)
    (void)dir; (void)err;
    return CLLM_OK;
#else
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot create directory (%s)", dir, strerror(errno));
    return CLLM_OK;
#endif
}

/* config.json for a model that has none (made by cllm_model_init). */
static cJSON *cllm__config_to_json(const cllm_config *c) {
    static const char *types[] = { "llama", "qwen2", "qwen3" };
    static const char *archs[] = { "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM" };
    cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "architectures");
    int i, t = c->arch - 1;
    if (t < 0 || t > 2) t = 0;
    cJSON_AddItemToArray(a, cJSON_CreateString(archs[t]));
    cJSON_AddStringToObject(o, "model_type", types[t]);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(o, "intermediate_size", c->intermediate_size);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_position_embeddings ? c->max_position_embeddings : 2048);
    cJSON_AddNumberToObject(o, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    if (c->rope_type == CLLM_ROPE_DEFAULT) cJSON_AddNullToObject(o, "rope_scaling");
    else {
        cJSON *s = cJSON_AddObjectToObject(o, "rope_scaling");
        cJSON_AddStringToObject(s, "rope_type", c->rope_type == CLLM_ROPE_LLAMA3 ? "llama3" : "linear");
        cJSON_AddNumberToObject(s, "factor", c->rope_factor);
        if (c->rope_type == CLLM_ROPE_LLAMA3) {
            cJSON_AddNumberToObject(s, "low_freq_factor", c->rope_low_freq_factor);
            cJSON_AddNumberToObject(s, "high_freq_factor", c->rope_high_freq_factor);
            cJSON_AddNumberToObject(s, "original_max_position_embeddings", c->rope_original_max_pos);
        }
    }
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddBoolToObject(o, "attention_bias", c->arch == CLLM_ARCH_QWEN2 ? 1 : 0);
    cJSON_AddBoolToObject(o, "mlp_bias", 0);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    if (c->bos_token_id >= 0) cJSON_AddNumberToObject(o, "bos_token_id", c->bos_token_id);
    if (c->n_eos == 1) cJSON_AddNumberToObject(o, "eos_token_id", c->eos_token_ids[0]);
    else if (c->n_eos > 1) {
        cJSON *e = cJSON_AddArrayToObject(o, "eos_token_id");
        for (i = 0; i < c->n_eos; i++) cJSON_AddItemToArray(e, cJSON_CreateNumber(c->eos_token_ids[i]));
    }
    if (c->arch == CLLM_ARCH_QWEN2) cJSON_AddBoolToObject(o, "use_sliding_window", 0);
    return o;
}

CLLMDEF int cllm_model_tensor_count(const cllm_model *m) {
    int i, n = 0;
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++)
        if (m->param_sizes[i]) n += cllm__param_per_layer(i) ? m->config.n_layers : 1;
    return n;
}

CLLMDEF int cllm_model_entries(const cllm_model *m, const cllm_float *memory, const char *prefix,
                               cllm_dtype dtype, cllm_st_entry *entries) {
    const cllm_config *c = &m->config;
    int i, l, n = 0, rows, cols;
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        if (!m->param_sizes[i]) continue;
        cllm__param_shape(c, i, &rows, &cols);
        for (l = 0; l < (cllm__param_per_layer(i) ? c->n_layers : 1); l++) {
            cllm_st_entry *e = &entries[n++];
            char name[CLLM_NAME_MAX];
            cllm_param_name(i, l, name, sizeof name);
            snprintf(e->name, sizeof e->name, "%s%s", prefix ? prefix : "", name);
            e->dtype = dtype;
            e->ndim = cols ? 2 : 1;
            e->shape[0] = rows; e->shape[1] = cols;
            e->data = memory + (size_t)l * rows * (cols ? cols : 1);
        }
        memory += m->param_sizes[i];
    }
    return n;
}

CLLMDEF cllm_result cllm_model_save(const cllm_model *m, const char *dir, cllm_dtype dtype, cllm_err *err) {
    cllm_st_entry *entries = NULL;
    char path[4096], *json = NULL;
    cJSON *cfg = NULL;
    cllm_result rc;
    int n;

    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "cllm_model_save: the model is not loaded");
    if (dtype != CLLM_DT_F32 && dtype != CLLM_DT_BF16 && dtype != CLLM_DT_F16) return cllm__fail(err, CLLM_ERR_ARG, "cllm_model_save: dtype must be F32, BF16 or F16");
    if ((rc = cllm__mkdir(dir, err)) != CLLM_OK) return rc;
    entries = (cllm_st_entry *)cllm__calloc((size_t)cllm_model_tensor_count(m) + 1, sizeof *entries);
    if (!entries) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    n = cllm_model_entries(m, m->params_memory, NULL, dtype, entries);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((rc = cllm_st_save(path, entries, n, err)) != CLLM_OK) goto done;

    cfg = m->hf_config ? cJSON_Duplicate(m->hf_config, 1) : cllm__config_to_json(&m->config);
    if (!cfg) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "torch_dtype");
    cJSON_AddStringToObject(cfg, "torch_dtype", dtype == CLLM_DT_BF16 ? "bfloat16" : dtype == CLLM_DT_F16 ? "float16" : "float32");
    json = cJSON_Print(cfg);
    if (!json) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = cllm_write_file_atomic(path, json, strlen(json), err);
done:
    cJSON_free(json);
    cJSON_Delete(cfg);
    CLLM_FREE(entries);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* Tokenizer: byte-level BPE                                                                    */
/* -------------------------------------------------------------------------------------------- */

/* (implementation: tokenizer) */

/* -------------------------------------------------------------------------------------------- */
/* Chat templates and assistant masks                                                           */
/* -------------------------------------------------------------------------------------------- */

/* (implementation: chat templates) */

/* -------------------------------------------------------------------------------------------- */
/* Generation: KV cache and sampling                                                            */
/* -------------------------------------------------------------------------------------------- */

/* (implementation: generation) */

/* -------------------------------------------------------------------------------------------- */
/* Chat-completions client, user simulators and judges                                          */
/* -------------------------------------------------------------------------------------------- */

/* (implementation: endpoint client, simulators and judges) */

/* -------------------------------------------------------------------------------------------- */
/* Objectives (DPO, PPO, GRPO) and metrics (BLEU)                                               */
/* -------------------------------------------------------------------------------------------- */

/* (implementation: objectives and metrics) */

#endif /* COLLABLLM_IMPLEMENTATION_DONE */
#endif /* COLLABLLM_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
MIT License

Copyright (c) 2026 the collabllm.h authors

Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
*/
