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
      cllm_generate()          -- n samples of one prompt (token ids): ids, per-token logprobs, finish reason;
                                  stops on EOS ids, a stop callback (e.g. stop strings) or max_new_tokens
      cllm_completions_free()  -- release what cllm_generate allocated in its outputs
      cllm_sample()            -- one token from logits: greedy, or temperature -> top-k -> top-p (HF order)
      cllm_sampler_scores()    -- the processed scores HF's warpers give (-inf = filtered out)
      cllm_kv_cache_init()     -- per-layer K/V for n parallel sequences; cllm_kv_cache_free()
      cllm_kv_prefill()        -- append prompt tokens to one sequence (logits optional, = cllm_forward's)
      cllm_kv_step()           -- one new token for each live sequence, batched; logits (n_seq, V)
      cllm_kv_cache_copy_seq() -- share a prefilled prompt between samples
      cllm_finish_reason_string() -- "eos", "stop", "length"
   Chat-completions client, user simulators and judges (OpenAI-compatible endpoints, libcurl)
      cllm_client_init()       -- base URL ($OPENAI_BASE_URL), key from an env var ($OPENAI_API_KEY), timeouts,
                                  retries, concurrency; cllm_client_free()
      cllm_client_chat_batch() -- n chat completions in flight at once, each retried on 408/429/5xx/timeouts
                                  with jittered backoff and Retry-After; per-request status and usage
      cllm_client_chat()       -- one completion; cllm_chat_result_free()
      cllm_conv_push(), cllm_conv_copy(), cllm_conv_free()  -- conversations that own their strings
      cllm_conv_to_json(), cllm_conv_from_json()            -- [{"role", "content"}, ...]
      cllm_json_parse_lenient() -- the JSON object in a model's reply (fences, prose, quotes repaired)
      cllm_user_sim / cllm_assistant -- interfaces: a function pointer (+ optional batch form) and a context
      cllm_user_sim_turns(), cllm_assistant_replies() -- n next messages at once
      cllm_llm_sim_init()      -- (a) the user simulator as an API model: hidden goal, {current_answer,
                                  thought, response}, "[[TERMINATE CHAT]]"; re-asks unusable replies
      cllm_user_sim_prompt(), cllm_user_sim_parse() -- its prompt and parser, for simulators that
                                  generate text themselves (a local model); (c) any C callback works too
      cllm_api_assistant_init() -- an assistant (policy) served by an API model, optional system prompt
      cllm_simulate()          -- run n conversations forward in lockstep until termination or a budget
      cllm_judge_init(), cllm_judge_interactivity(), cllm_judge_accuracy(), cllm_judge_extract()
                               -- LLM judges, batched; a failed judgement is an error, never a 0
      cllm_tasks_read_jsonl()  -- CollabLLM single-turn task files (data_fmt/task.md); cllm_tasks_free()
   Preference and RL objectives (DPO, PPO, GRPO) and metrics (BLEU)
      cllm_dpo_loss()          -- DPO losses (sigmoid/cDPO, robust, hinge, IPO, reference-free), TRL's
                                  reward metrics, and d loss / d policy logps
      cllm_kl_estimate()       -- per-token KL estimators k1, k2, k3
      cllm_ppo_sequence_end()  -- TRL's sequence end of a response (stop-token truncation, pad == eos)
      cllm_ppo_rewards()       -- per-token rewards: -kl_coef * KL plus the score after EOS / at the end
      cllm_masked_whiten()     -- TRL/verl (unbiased) or OpenRLHF (biased) whitening over a mask
      cllm_gae()               -- GAE advantages and returns (TRL or verl masking), optional whitening
      cllm_ppo_loss()          -- clipped policy and value losses, clipfrac, approxkl, and gradients
      cllm_grpo_advantages()   -- group-normalised (GRPO) or leave-one-out (RLOO) advantages
      cllm_bleu()              -- NLTK sentence_bleu on strings, character or token level
      cllm_bleu_ids()          -- the same on integer sequences (e.g. token ids)
      cllm_ref_json()          -- the above as JSON in / JSON out (`collabllm ref NAME`, data_fmt/ref.md)
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

/* Activations saved by the forward pass for the backward pass (B*T rows each). */
typedef struct cllm_acts {
    cllm_float *x;           /* (L+1, BT, C)   residual stream entering layer l; x[L] enters the final norm */
    cllm_float *ln1;         /* (L, BT, C)     input_layernorm output                              */
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
    cllm_float *ln2;         /* (L, BT, C)     post_attention_layernorm output                     */
    cllm_float *ln2_rstd;    /* (L, BT)                                                            */
    cllm_float *gate;        /* (L, BT, I)     gate_proj output                                    */
    cllm_float *up;          /* (L, BT, I)     up_proj output                                      */
    cllm_float *act;         /* (L, BT, I)     silu(gate) * up                                     */
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

/* KV cache. The incremental forward keeps each layer's keys (after RoPE and Qwen3's k-norm) and
   values for n_seq independent sequences, so each new token costs one row of compute plus
   attention over the cached rows. Sequences may have different lengths (len[s]); a new token of
   sequence s goes to position len[s]. Setting len[s] lower forgets the tail (e.g. to retry from a
   prefix). Memory: 2 * L * n_seq * max_len * KV*hd floats (SmolLM2-135M, 4 x 2048: 377 MB).  */
typedef struct cllm_kv_cache {
    int         n_seq;         /* parallel sequences                                              */
    int         max_len;       /* positions per sequence                                          */
    int        *len;           /* (n_seq) positions filled = position of the next token           */
    cllm_float *k, *v;         /* (L, n_seq, max_len, KV*hd)                                      */
    /* private: the model shape it was made for, RoPE tables and work space for one step */
    int         n_layers, kv_dim, head_dim, rows;
    size_t      work_size;             /* floats in work: depends on every size of the model      */
    cllm_float *rope_cos, *rope_sin;   /* (max_len, hd/2)                                         */
    cllm_float *work;
    int        *row_seq, *row_pos, *row_id;   /* (rows) sequence, position and token of each row  */
} cllm_kv_cache;

/* Allocates an empty cache for model m (all len[s] = 0). Free it with cllm_kv_cache_free. It
   serves m or a model with the same config.json (the RoPE tables come from m's config). */
CLLMDEF cllm_result cllm_kv_cache_init(cllm_kv_cache *kv, const cllm_model *m, int n_seq, int max_len, cllm_err *err);
CLLMDEF void        cllm_kv_cache_free(cllm_kv_cache *kv);   /* safe on a zeroed cache */
/* Makes sequence dst a copy of sequence src (its len[src] cached positions): n samples of one
   prompt prefill the prompt once and copy it. */
CLLMDEF cllm_result cllm_kv_cache_copy_seq(cllm_kv_cache *kv, int src, int dst, cllm_err *err);

/* Prefill: appends n tokens to sequence seq at positions len[seq] .. len[seq]+n-1, in blocks of
   up to 32 rows (each block's rows attend causally to the cache and to each other).
   logits_out: optional (n, V) raw logits at each of the n positions (identical to cllm_forward's
   logits for the same tokens). */
CLLMDEF cllm_result cllm_kv_prefill(const cllm_model *m, cllm_kv_cache *kv, int seq, const int *ids, int n,
                                    cllm_float *logits_out, cllm_err *err);
/* Decode step: one new token per sequence, ids (n_seq); ids[s] < 0 leaves sequence s out of
   this step (e.g. it has finished). logits_out: optional (n_seq, V), row s written for each
   sequence that took part. The sequences are computed as one batch of rows. */
CLLMDEF cllm_result cllm_kv_step(const cllm_model *m, cllm_kv_cache *kv, const int *ids, cllm_float *logits_out, cllm_err *err);

/* Sampling, with Hugging Face's logits warpers in their order (generate(do_sample=True)):
     z = logits / temperature                                           (TemperatureLogitsWarper)
     top_k: drop z below the k-th largest z (ties with it stay)         (TopKLogitsWarper)
     top_p: with p = softmax(z) over the survivors, sorted by z descending (ties: lower id first),
            keep a token while the mass of the tokens before it is < top_p: the smallest set with
            mass >= top_p, never empty                                  (TopPLogitsWarper)
     draw from softmax(z) over the kept tokens.
   Scores and probabilities are computed in double. The draw takes one cllm_rng_uniform u and
   walks the kept ids in increasing order until the running sum of exp(z - max z) exceeds
   u * total, so a seed gives the same tokens on every platform. */
typedef struct cllm_sampler {
    int      greedy;       /* 1: the most likely token (lowest id on ties), no randomness; the rest
                              of the fields are ignored (default 0: sample)                      */
    float    temperature;  /* default 1.0                                                         */
    int      top_k;        /* default 0 = off                                                     */
    float    top_p;        /* in (0, 1]; default 1.0 = off                                        */
    uint64_t seed;         /* cllm_generate's RNG seed (default 0)                                */
} cllm_sampler;

/* The processed scores HF samples from: z = logits/temperature, -INFINITY where top-k / top-p
   removed a token (greedy is ignored). logits (V) may hold -INFINITY but not NaN or +inf;
   scores: (V) output. Returns the number of kept tokens in *n_kept (optional). */
CLLMDEF cllm_result cllm_sampler_scores(const cllm_sampler *s, const cllm_float *logits, int V, double *scores,
                                        int *n_kept, cllm_err *err);
/* Draws one token. *logprob (optional) = its log-probability under the distribution it was drawn
   from: log softmax(scores)[token]; for greedy, log softmax(logits)[token] (the model's own
   probability at temperature 1, as HF reports for greedy search). Allocates O(V) work space per
   call; cllm_generate keeps its own. */
CLLMDEF cllm_result cllm_sample(const cllm_sampler *s, const cllm_float *logits, int V, cllm_rng *rng,
                                int *token, double *logprob, cllm_err *err);

/* Generation: n samples continuing one prompt, batched through one KV cache. */
typedef enum cllm_finish_reason {
    CLLM_FINISH_LENGTH = 0,    /* reached max_new_tokens                                          */
    CLLM_FINISH_EOS,           /* produced an EOS id (it is the last token of the sample)         */
    CLLM_FINISH_STOP           /* the stop callback returned nonzero after the last token         */
} cllm_finish_reason;
CLLMDEF const char *cllm_finish_reason_string(int reason);   /* "length", "eos", "stop" */

typedef struct cllm_gen_config {
    cllm_sampler sampler;          /* greedy / temperature / top_k / top_p / seed; sample s draws
                                      from cllm_rng_seed(seed * 0x9E3779B97F4A7C15 + s), so it does
                                      not depend on n_samples or on the other samples              */
    int          max_new_tokens;   /* at most this many tokens per sample (default 256)           */
    const int   *eos_ids;          /* stop after any of these n_eos ids (default: the model's
                                      config eos_token_ids)                                        */
    int          n_eos;
    int          ignore_eos;       /* 1: never stop on EOS (default 0)                            */
    /* Optional stop test, called after every new token that is not an EOS with the sample's
       generated ids so far (prompt excluded); nonzero ends the sample with CLLM_FINISH_STOP and
       the token is kept. A stop string is checked by decoding ids in ctx's tokenizer. */
    int        (*stop)(void *ctx, const int *ids, int n);
    void        *stop_ctx;
} cllm_gen_config;

typedef struct cllm_completion {
    int        *ids;        /* (n) generated ids, prompt excluded; ends with the EOS or stop token
                               that ended it, if one did                                          */
    cllm_float *logprobs;   /* (n) log-probability of each id under the distribution it was drawn
                               from (see cllm_sample): the "old logprobs" of PPO. With top_k and
                               top_p off it equals cllm_forward's logp with batch.temperature =
                               the sampling temperature                                           */
    int         n;
    int         finish;     /* cllm_finish_reason                                                 */
} cllm_completion;

/* Generates n_samples completions of prompt (n_prompt >= 1 ids) into out[0..n_samples-1], which
   the caller provides; the ids and logprobs arrays in it are allocated here and released with
   cllm_completions_free(out, n_samples) (also after an error; safe on zeroed entries). */
CLLMDEF cllm_result cllm_generate(const cllm_model *m, const int *prompt, int n_prompt, int n_samples,
                                  const cllm_gen_config *cfg, cllm_completion *out, cllm_err *err);
CLLMDEF void        cllm_completions_free(cllm_completion *c, int n);

/* ============================================================================================ */
/* Chat-completions client (libcurl), user simulators and judges                                */
/* ============================================================================================ */

/* Everything here talks to an OpenAI-compatible POST {base_url}/chat/completions endpoint (OpenAI,
   vLLM, llama.cpp's server, Ollama, ...) through libcurl, or to C callbacks with the same shape.

   The exchange, one request:
     -> POST /v1/chat/completions   Authorization: Bearer <key from the env var>   (if set)
        {"model": "...", "messages": [{"role": "user", "content": "..."}, ...],
         "temperature": t, "top_p": p, "max_tokens": n, "seed": s, "response_format": {...}}
                                    (only the fields the request sets are sent)
     <- 200 {"choices": [{"message": {"role": "assistant", "content": "..."}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": a, "completion_tokens": b, "total_tokens": a+b}}
     <- 408, 429, 5xx, a timeout or a dropped connection: retried (backoff with jitter, Retry-After
        honoured); any other status: a failure carrying the endpoint's error message.

   Ownership: every function that fills a result (cllm_chat_result, cllm_reply, cllm_judgement,
   cllm_conv) allocates its strings; release them with the matching *_free, which is safe on a
   zeroed struct. Request structs and configs only borrow their strings. A client, and anything
   built on it, is used by one thread at a time; batches give concurrency without threads.
   cllm_client_init calls curl_global_init: call it from one thread at a time.

   Limits and trust: responses are read up to max_response_bytes (64 MiB). The API key is read
   from the environment at init, sent only in the bearer header, scrubbed from every error
   message (also when an endpoint echoes it back) and wiped on free; libcurl's verbose output is
   never enabled. TLS certificates are verified unless cllm_client_config.insecure is set.
   Files: data_fmt/task.md (tasks in), data_fmt/conversation.md (conversations out), and
   data_fmt/endpoints.md (OpenAI, vLLM, llama.cpp server, Ollama). */

/* ---- conversations ------------------------------------------------------------------------- */

typedef struct cllm_message {
    const char *role;            /* "system" | "user" | "assistant"                                */
    const char *content;
} cllm_message;

/* A conversation. Built with cllm_conv_push it owns its strings (release with cllm_conv_free); a
   view filled by hand over borrowed strings is fine to pass anywhere but must not be freed. */
typedef struct cllm_conv {
    cllm_message *msgs;
    int           n, cap;
} cllm_conv;

CLLMDEF cllm_result cllm_conv_push(cllm_conv *c, const char *role, const char *content, cllm_err *err); /* copies both */
CLLMDEF cllm_result cllm_conv_copy(cllm_conv *dst, const cllm_conv *src, cllm_err *err);  /* deep copy into a zeroed dst */
CLLMDEF void        cllm_conv_free(cllm_conv *c);
/* [{"role": ..., "content": ...}, ...] <-> conversation; roles must be system, user or assistant.
   from_json fills c from scratch (free a conversation it held before). */
CLLMDEF struct cJSON *cllm_conv_to_json(const cllm_conv *c);            /* NULL when out of memory */
CLLMDEF cllm_result cllm_conv_from_json(cllm_conv *c, const struct cJSON *messages, cllm_err *err);

/* Lenient JSON for model output: the first JSON object in the text (prose before and after it
   ignored), looked for in the whole text and in the first ```fenced``` block holding a '{',
   as written first, then repaired for what models commonly get wrong: 'single' or """triple"""
   quotes, True/False/None, raw newlines in strings, unescaped inner quotes, trailing commas.
   Returns an object to free with cJSON_Delete, or NULL (CLLM_ERR_FORMAT in err). */
CLLMDEF struct cJSON *cllm_json_parse_lenient(const char *text, cllm_err *err);

/* ---- the client ---------------------------------------------------------------------------- */

typedef struct cllm_client_config {
    const char *base_url;           /* default $OPENAI_BASE_URL, else "https://api.openai.com/v1";
                                       "/chat/completions" is appended                           */
    const char *model;              /* model for requests that name none (default none)          */
    const char *api_key_env;        /* NAME of the environment variable holding the API key (default
                                       "OPENAI_API_KEY"); unset or empty: no Authorization header.
                                       The key is never printed, logged or written anywhere.     */
    long        connect_timeout_ms; /* default 10000                                             */
    long        timeout_ms;         /* whole-request limit per attempt; default 300000           */
    int         max_retries;        /* retries after the first attempt; default 5; negative: none */
    long        backoff_ms;         /* first retry wait, doubled per retry, jittered; default 500 */
    long        backoff_max_ms;     /* cap on any one wait, Retry-After included; default 60000  */
    int         max_concurrency;    /* requests in flight at once; default 16                    */
    long        max_response_bytes; /* larger responses fail with CLLM_ERR_LIMIT; default 64 MiB  */
    int         insecure;           /* 1: skip TLS certificate checks (default 0: verify)        */
    uint64_t    seed;               /* seeds the backoff jitter (default: time and address)      */
} cllm_client_config;

typedef struct cllm_usage {         /* totals over a client's life, as the endpoint reported them */
    long long prompt_tokens, completion_tokens, total_tokens;
    long      requests;             /* calls that returned a completion                          */
    long      failures;             /* calls that failed after their retries                     */
    long      attempts;             /* HTTP attempts, retries included                           */
} cllm_usage;

typedef struct cllm_client {
    cllm_client_config cfg;         /* the configuration with defaults applied                   */
    char      *url;                 /* {base_url}/chat/completions                               */
    char      *model;               /* owned copy of cfg.model (or NULL)                         */
    char      *key;                 /* the API key (redacted from every message; wiped on free)  */
    void      *headers;             /* struct curl_slist *: JSON content type and the bearer key */
    void      *multi;               /* CURLM *: one transfer engine, reused across batches       */
    cllm_rng   rng;                 /* backoff jitter                                            */
    cllm_usage usage;
} cllm_client;

/* Sampling parameters. Zero means "the default": for a raw request that is "not sent" (the
   endpoint's own default); simulators, assistants and judges document their own defaults.
   A negative temperature sends 0 (greedy). A seed of 0 cannot be sent; use any other value. */
typedef struct cllm_llm_params {
    const char *model;              /* default: the client's model                                */
    double      temperature;
    double      top_p;
    int         max_tokens;
    long long   seed;
} cllm_llm_params;

typedef struct cllm_chat_request {
    const cllm_message *messages;   /* n_messages, borrowed                                      */
    int                 n_messages;
    cllm_llm_params     params;     /* zero fields are not sent                                  */
    const char         *response_format; /* NULL: not sent; "json_object" or "text": {"type": ..};
                                       text starting with '{' is sent as that object (json_schema) */
} cllm_chat_request;

typedef struct cllm_chat_result {
    cllm_result code;               /* CLLM_OK, or why this call failed                           */
    char       *content;            /* choices[0].message.content (owned; NULL on failure)       */
    char        finish_reason[32];  /* "stop", "length", ... ("" if not reported)                */
    long        http_status;        /* status of the last attempt; 0: no HTTP response           */
    int         attempts;           /* 1 + retries made                                          */
    int         prompt_tokens, completion_tokens, total_tokens; /* usage; -1 if not reported     */
    double      seconds;            /* first attempt to completion, waits included               */
    cllm_err    err;
} cllm_chat_result;

CLLMDEF cllm_result cllm_client_init(cllm_client *c, const cllm_client_config *cfg, cllm_err *err);
CLLMDEF void        cllm_client_free(cllm_client *c);
/* Runs n requests with up to cfg.max_concurrency in flight (curl multi interface), retrying each
   on its own; a batch takes about as long as its slowest call. results[i] (n of them, filled
   here) carries each call's own status. Returns CLLM_OK when every call succeeded, else the first
   failure's code with a message counting the failures. */
CLLMDEF cllm_result cllm_client_chat_batch(cllm_client *c, const cllm_chat_request *requests, int n,
                                           cllm_chat_result *results, cllm_err *err);
CLLMDEF cllm_result cllm_client_chat(cllm_client *c, const cllm_chat_request *request,
                                     cllm_chat_result *result, cllm_err *err);  /* a batch of one */
CLLMDEF void        cllm_chat_result_free(cllm_chat_result *r);

/* ---- user simulators and assistants: function pointer + context ------------------------------- */

/* What the simulated user wants; hidden from the assistant. */
typedef struct cllm_goal {
    const char *task_desc;          /* dataset-level phrase: "question answering", "document editing",
                                       "code generation" (default "a task")                       */
    const char *prompt;             /* the complete single-turn request (single_turn_prompt)       */
    const char *reference;          /* optional reference answer or document (single_turn_completion);
                                       NULL: not shown to the simulator                           */
} cllm_goal;

/* One next message, from a user simulator or an assistant. */
typedef struct cllm_reply {
    cllm_result code;               /* CLLM_OK, or why there is no message                        */
    char       *text;               /* the message (owned)                                        */
    int         terminated;         /* user simulators: 1 when this message ends the conversation */
    char       *thought;            /* LLM simulator: its private reasoning (owned, may be NULL)  */
    char       *current_answer;     /* LLM simulator: its summary of the assistant's solution     */
    cllm_err    err;
} cllm_reply;
/* For callbacks: sets out->text to a copy of text, out->terminated and out->code. */
CLLMDEF cllm_result cllm_reply_set(cllm_reply *out, const char *text, int terminated);
CLLMDEF void        cllm_reply_free(cllm_reply *r);

/* A user simulator: turn() writes the user's next message for one conversation into a zeroed
   *out (with cllm_reply_set) and returns out->code. An empty history asks for the opening
   request. turn_batch (optional) does n at once; the LLM simulator issues them concurrently.
   Implementations: cllm_llm_sim (an API model), any C callback, and a local collabllm.h model
   (generation from cllm_user_sim_prompt, parsed by cllm_user_sim_parse). */
typedef cllm_result (*cllm_user_sim_fn)(void *ctx, const cllm_goal *goal, const cllm_conv *history, cllm_reply *out);
typedef cllm_result (*cllm_user_sim_batch_fn)(void *ctx, const cllm_goal *goals, const cllm_conv *histories,
                                              int n, cllm_reply *out);
typedef struct cllm_user_sim {
    cllm_user_sim_fn       turn;
    cllm_user_sim_batch_fn turn_batch;  /* NULL: turn() is called n times                        */
    void                  *ctx;
} cllm_user_sim;

/* An assistant (the policy): respond() writes the next assistant message for a history. */
typedef cllm_result (*cllm_assistant_fn)(void *ctx, const cllm_conv *history, cllm_reply *out);
typedef cllm_result (*cllm_assistant_batch_fn)(void *ctx, const cllm_conv *histories, int n, cllm_reply *out);
typedef struct cllm_assistant {
    cllm_assistant_fn       respond;
    cllm_assistant_batch_fn respond_batch; /* NULL: respond() is called n times                  */
    void                   *ctx;
} cllm_assistant;

/* n next user messages (out: n zeroed or freed replies, filled here); return as for batches. */
CLLMDEF cllm_result cllm_user_sim_turns(const cllm_user_sim *sim, const cllm_goal *goals, const cllm_conv *histories,
                                        int n, cllm_reply *out, cllm_err *err);
CLLMDEF cllm_result cllm_assistant_replies(const cllm_assistant *a, const cllm_conv *histories, int n,
                                           cllm_reply *out, cllm_err *err);

/* (a) The LLM user simulator. */
#define CLLM_TERMINATION_SIGNAL "[[TERMINATE CHAT]]"
typedef struct cllm_llm_sim_config {
    cllm_llm_params params;         /* temperature default 1.0, max_tokens default 1024           */
    const char *termination;        /* the message that ends a conversation (default
                                       CLLM_TERMINATION_SIGNAL); a reply containing it terminates */
    const char *prompt;             /* template (default: the built-in one); placeholders
                                       {{task_desc}} {{goal}} {{history}} {{termination}}        */
    int         max_parse_retries;  /* new samples for unusable replies; default 3; negative: none */
    int         json_mode;          /* 1: ask for response_format json_object (default 0)         */
} cllm_llm_sim_config;

typedef struct cllm_llm_sim {
    cllm_user_sim       sim;        /* the interface: pass &llm_sim.sim                           */
    cllm_client        *client;
    cllm_llm_sim_config cfg;        /* with defaults applied; strings borrowed                    */
} cllm_llm_sim;

CLLMDEF void        cllm_llm_sim_init(cllm_llm_sim *s, cllm_client *client, const cllm_llm_sim_config *cfg);
/* The simulator's prompt for one conversation (owned by the caller, free with cllm_free_buffer),
   and the parser of its answer {current_answer, thought, response}: any simulator that generates
   text (an API model, or a local model) shares them. cfg may be NULL (defaults). */
CLLMDEF cllm_result cllm_user_sim_prompt(const cllm_llm_sim_config *cfg, const cllm_goal *goal,
                                         const cllm_conv *history, char **out, cllm_err *err);
CLLMDEF cllm_result cllm_user_sim_parse(const char *model_output, const char *termination, cllm_reply *out);

/* An assistant served by an API model. */
typedef struct cllm_api_assistant_config {
    cllm_llm_params params;         /* temperature default 0.8, max_tokens default 2048           */
    const char *system_prompt;      /* sent first in every request, never stored (default none)  */
} cllm_api_assistant_config;

typedef struct cllm_api_assistant {
    cllm_assistant            assistant;  /* the interface: pass &api.assistant                   */
    cllm_client              *client;
    cllm_api_assistant_config cfg;
} cllm_api_assistant;

CLLMDEF void cllm_api_assistant_init(cllm_api_assistant *a, cllm_client *client, const cllm_api_assistant_config *cfg);

/* Runs conversations forward, all n in lockstep (one batched user turn, then one batched
   assistant turn, ...). convs[i] is the starting history (possibly empty) and receives the new
   messages; the user speaks next unless the history ends with a user message. Conversation i
   stops when the user terminates, a call fails, or max_new_messages were added (counting both
   roles, as CollabLLM's max_new_turns does). status (n, optional) says how each one ended. */
typedef struct cllm_sim_status {
    cllm_result code;               /* CLLM_OK, or the failure that stopped this conversation     */
    int         terminated;         /* the user sent the termination signal                       */
    int         n_new;              /* messages added                                             */
    cllm_err    err;
} cllm_sim_status;
CLLMDEF cllm_result cllm_simulate(const cllm_user_sim *user, const cllm_assistant *assistant, const cllm_goal *goals,
                                  cllm_conv *convs, int n, int max_new_messages, cllm_sim_status *status, cllm_err *err);

/* ---- LLM judges ---------------------------------------------------------------------------- */

typedef struct cllm_judge_config {
    cllm_llm_params params;         /* temperature default 0 (sent as 0), max_tokens default 2048 */
    int         max_parse_retries;  /* new samples for unusable verdicts; default 3; negative: none */
    int         json_mode;          /* 1: ask for response_format json_object (default 0)         */
    const char *interactivity_prompt; /* templates (default: built-in); placeholders below       */
    const char *accuracy_prompt;
    const char *extract_prompt;
} cllm_judge_config;

typedef struct cllm_judge {
    cllm_client      *client;
    cllm_judge_config cfg;
} cllm_judge;

/* A verdict. A judge that gives no usable answer (after its retries) is a failure with a code,
   never a score of 0. */
typedef struct cllm_judgement {
    cllm_result code;
    double      score;              /* interactivity in [0, 1]; accuracy 0 or 1                   */
    char       *text;               /* extraction: the final artifact (owned)                     */
    char       *thought;            /* the judge's reasoning (owned, may be NULL)                 */
    cllm_err    err;
} cllm_judgement;
CLLMDEF void cllm_judgement_free(cllm_judgement *j);

typedef struct cllm_accuracy_item {
    const char      *question;      /* {{question}}: the single-turn prompt                       */
    const char      *ground_truth;  /* {{ground_truth}}                                           */
    const char      *answer;        /* {{answer}}: the final answer, or NULL to grade ...         */
    const cllm_conv *conv;          /* ... the whole conversation                                 */
} cllm_accuracy_item;

typedef struct cllm_extract_item {
    const cllm_conv *conv;          /* {{conversation}}                                           */
    const char      *kind;          /* {{kind}}: "document", "code", "answer" (default "document") */
    const char      *requirement;   /* {{requirement}}: extra instructions (default none)         */
} cllm_extract_item;

CLLMDEF void        cllm_judge_init(cllm_judge *j, cllm_client *client, const cllm_judge_config *cfg);
/* All three judge n items concurrently; out has n entries (filled here); return as for batches.
   interactivity: {{conversation}} -> score in [0, 1]                (JSON key "interactivity")
   accuracy:      question, ground truth, answer -> 0 or 1           (JSON key "accuracy")
   extract:       conversation -> the final document/code as text   (JSON key "final_completion") */
CLLMDEF cllm_result cllm_judge_interactivity(cllm_judge *j, const cllm_conv *convs, int n, cllm_judgement *out, cllm_err *err);
CLLMDEF cllm_result cllm_judge_accuracy(cllm_judge *j, const cllm_accuracy_item *items, int n, cllm_judgement *out, cllm_err *err);
CLLMDEF cllm_result cllm_judge_extract(cllm_judge *j, const cllm_extract_item *items, int n, cllm_judgement *out, cllm_err *err);

/* ---- task files ---------------------------------------------------------------------------- */

/* One line of a CollabLLM single-turn JSONL file (data_fmt/task.md). */
typedef struct cllm_task {
    char         *prompt;           /* single_turn_prompt                                         */
    char         *completion;       /* single_turn_completion (a non-string value as JSON text; "" if absent) */
    struct cJSON *json;             /* the whole line, every field kept                           */
} cllm_task;
CLLMDEF cllm_result cllm_tasks_read_jsonl(const char *path, cllm_task **tasks, int *n, cllm_err *err);
CLLMDEF void        cllm_tasks_free(cllm_task *tasks, int n);

/* ============================================================================================ */
/* Objectives (DPO, PPO, GRPO) and metrics (BLEU)                                               */
/* ============================================================================================ */

/* The pure, model-independent math of preference and RL training, with the semantics of the
   library each piece follows written next to it (and where libraries differ, a switch). Inputs
   and outputs are plain double arrays, so that results match PyTorch float64 / NLTK to ~1e-15;
   a trainer converts its cllm_float values (n pairs, or B*T tokens) on the way in and out.
   Token arrays are row-major (B, T). A "mask" is a weight per token as torch uses it:
   masked_mean(x, m) = sum(x*m) / sum(m); 1 = counted, 0 = ignored. */

/* ---- DPO (Rafailov et al. 2023), as TRL v0.19.1 DPOTrainer.dpo_loss ---- */

typedef enum cllm_dpo_loss_type {
    CLLM_DPO_SIGMOID = 0,   /* -(1-e) log s(bz) - e log s(-bz): the paper's loss; e > 0 is cDPO     */
    CLLM_DPO_ROBUST,        /* (-(1-e) log s(bz) + e log s(-bz)) / (1-2e)  (robust DPO, e < 0.5)   */
    CLLM_DPO_HINGE,         /* relu(1 - bz)                                (SLiC)                  */
    CLLM_DPO_IPO            /* (z - 1/(2b))^2                              (IPO; see below)        */
} cllm_dpo_loss_type;

typedef struct cllm_dpo_config {
    int    loss_type;        /* cllm_dpo_loss_type; default CLLM_DPO_SIGMOID                        */
    double beta;             /* b; default 0.1                                                      */
    double label_smoothing;  /* e; default 0. Used by sigmoid (0 <= e <= 1) and robust (e < 0.5)    */
    int    reference_free;   /* 1: z ignores the reference (rewards still use it, as TRL); default 0 */
} cllm_dpo_config;

typedef struct cllm_dpo_out {
    /* per pair: point each at n doubles, or leave NULL to skip */
    double *losses;          /* l_i                                                                 */
    double *chosen_rewards;  /* b (pc_i - rc_i)                                                     */
    double *rejected_rewards;/* b (pr_i - rr_i)                                                     */
    double *d_chosen;        /* d loss / d policy_chosen_logps[i]   (loss = the mean over pairs)    */
    double *d_rejected;      /* d loss / d policy_rejected_logps[i]                                 */
    /* batch values (TRL's logged metrics are these means) */
    double loss;             /* mean_i l_i                                                          */
    double chosen_reward;    /* rewards/chosen:     mean b (pc - rc)                                */
    double rejected_reward;  /* rewards/rejected:   mean b (pr - rr)                                */
    double reward_accuracy;  /* rewards/accuracies: mean [chosen_reward_i > rejected_reward_i]      */
    double reward_margin;    /* rewards/margins:    mean (chosen_reward_i - rejected_reward_i)      */
} cllm_dpo_out;

/* n preference pairs of summed completion log-probs (policy and reference; the reference arrays
   may be NULL only when reference_free, and then count as 0). For IPO TRL first divides each
   logp by its completion length; pass the averaged values. cfg NULL = all defaults. */
CLLMDEF cllm_result cllm_dpo_loss(const cllm_dpo_config *cfg, int n,
                                  const double *policy_chosen_logps, const double *policy_rejected_logps,
                                  const double *ref_chosen_logps, const double *ref_rejected_logps,
                                  cllm_dpo_out *out, cllm_err *err);

/* ---- PPO pieces: per-token KL penalty and rewards, GAE, whitening, the clipped losses ---- */

typedef enum cllm_kl_estimator {
    CLLM_KL_K1 = 0,  /* logp - ref                               (TRL default; can be negative)    */
    CLLM_KL_K2,      /* (logp - ref)^2 / 2                       (OpenRLHF / verl "k2", "mse")     */
    CLLM_KL_K3       /* exp(ref - logp) - (ref - logp) - 1 >= 0  (TRL "k3", verl "low_var_kl")     */
} cllm_kl_estimator;
/* One token's estimate of KL(policy || reference) from the two log-probs of the sampled token. */
CLLMDEF double cllm_kl_estimate(double logp, double ref_logp, int estimator);

/* TRL's sequence end of one response row of L tokens: if stop_id >= 0, every position after the
   first stop_id becomes pad (truncate_response); then end = (first pad position) - 1, or L-1 if
   there is none; -1 for a response that starts with pad. With pad != eos this is the EOS
   position (the EOS is trained); with pad == eos (CollabLLM's tokenizer setting) it is the token
   before the EOS, so the EOS log-prob is never trained. */
CLLMDEF int cllm_ppo_sequence_end(const int *response, int L, int pad_id, int stop_id);

typedef enum cllm_reward_placement {
    CLLM_REWARD_AFTER_EOS = 0,  /* TRL v0.19 PPOTrainer: at end+1 (the first pad slot, seen only by
                                   the critic) if end+1 < T, else at end                            */
    CLLM_REWARD_LAST_TOKEN      /* legacy TRL, OpenRLHF, verl: at end (the last response token)     */
} cllm_reward_placement;

/* Per-token rewards of B rows of T response tokens (B*T each):
     kl[b,t] = cllm_kl_estimate(logp, ref) for t <= seq_end[b], else 0   (TRL sets both log-probs
               to INVALID_LOGPROB = 1.0 after the end, which gives 0)
     rewards = -kl_coef * kl;   rewards[b, e_b] += scores[b]   (e_b from `placement`)
   seq_end[b] in [-1, T-1]; kl may be NULL. TRL's whiten_rewards option is
   cllm_masked_whiten(rewards, ~pm1, shift_mean 0) afterwards, then zero the pm1 positions. */
CLLMDEF cllm_result cllm_ppo_rewards(int B, int T, const double *logprobs, const double *ref_logprobs,
                                     const double *scores, const int *seq_end, double kl_coef,
                                     int kl_estimator, int placement, double *rewards, double *kl, cllm_err *err);

/* In place: x = (x - mean) * rstd (+ mean again if keep_mean), statistics over the n values with
   weights mask (NULL = all 1):
     biased 0 (TRL, verl masked_whiten): var = masked mean of (x-mean)^2 * s/(s-1), s = sum(mask),
                                         rstd = 1/sqrt(var + 1e-8); needs s > 1
     biased 1 (OpenRLHF advantages):     var without Bessel's correction, rstd = 1/sqrt(max(var, 1e-8))
   keep_mean 1 is TRL's shift_mean=False (used to whiten rewards). */
CLLMDEF cllm_result cllm_masked_whiten(double *x, const double *mask, size_t n, int keep_mean, int biased, cllm_err *err);

typedef enum cllm_gae_mode {
    CLLM_GAE_TRL = 0, /* recursion over all T positions; the mask only selects the whitening
                         statistics and (when whitening) zeroes masked advantages (TRL v0.19).
                         Legacy TRL and OpenRLHF are this after values*=mask, rewards*=mask.     */
    CLLM_GAE_SKIP     /* verl: a position with mask 0 passes the next value and the running
                         advantage through unchanged; whitened values stay at masked positions   */
} cllm_gae_mode;

/* Generalised advantage estimation (Schulman et al. 2016) over B rows of T tokens, backwards:
     delta_t = r_t + gamma V_{t+1} - V_t   (V_T = 0);   A_t = delta_t + gamma lam A_{t+1}
     returns = A + V (before whitening);   whiten: cllm_masked_whiten(A, mask, unbiased) over the
   whole batch. TRL has already set values after end+1 to 0 and rewards after the score to 0.
   mask may be NULL (all 1). advantages and returns receive B*T values. */
CLLMDEF cllm_result cllm_gae(int B, int T, const double *rewards, const double *values, const double *mask,
                             double gamma, double lam, int mode, int whiten,
                             double *advantages, double *returns, cllm_err *err);

typedef struct cllm_ppo_loss_out {
    double  pg_loss;      /* masked_mean(max(-A r, -A clamp(r, 1-c, 1+c)), mask),  r = exp(logp - old) */
    double  vf_loss;      /* 0.5 masked_mean(max((v-R)^2, (clamp(v, old_v-cv, old_v+cv)-R)^2), value_mask) */
    double  loss;         /* pg_loss + vf_coef * vf_loss                                         */
    double  clipfrac;     /* policy/clipfrac_avg: masked_mean([clipped pg term > unclipped])     */
    double  vf_clipfrac;  /* val/clipfrac_avg: masked_mean([clipped vf term > unclipped], value_mask) */
    double  approxkl;     /* 0.5 mean over all B*T of (logp - old)^2 (TRL: unmasked; its pads have
                             logp = old = 1.0, so they add 0 but count in the mean)              */
    double *d_logprobs;   /* optional (B*T): d loss / d logprobs                                 */
    double *d_values;     /* optional (B*T): d loss / d values                                   */
} cllm_ppo_loss_out;

/* TRL v0.19 PPOTrainer's loss on one micro-batch (B*T each). mask is the policy mask (~pm: t <=
   end); value_mask the critic's (~pm1: t <= end+1), NULL = mask. Gradients follow torch's
   subgradients: max() splits a tie evenly, clamp() passes the gradient on its closed interval. */
CLLMDEF cllm_result cllm_ppo_loss(int B, int T, const double *logprobs, const double *old_logprobs,
                                  const double *advantages, const double *values, const double *old_values,
                                  const double *returns, const double *mask, const double *value_mask,
                                  double cliprange, double cliprange_value, double vf_coef,
                                  cllm_ppo_loss_out *out, cllm_err *err);

/* ---- GRPO / RLOO: advantages from the rewards of G samples per prompt ---- */

typedef enum cllm_group_estimator {
    CLLM_GROUP_GRPO = 0,  /* A_i = r_i - mean(group), / (std(group) + eps) if scale            */
    CLLM_GROUP_RLOO       /* A_i = r_i - (sum(group) - r_i) / (G-1)  (leave-one-out baseline)  */
} cllm_group_estimator;

/* n rewards in consecutive groups of group_size (n a multiple of it). std is torch's unbiased
   std. TRL v0.19 GRPO: scale 1, eps 1e-4 (scale_rewards=False: scale 0, as Dr. GRPO); verl
   uses eps 1e-6, OpenRLHF group_norm 1e-9. Scaling needs group_size >= 2 (verl instead uses
   mean 0, std 1 for a single sample); RLOO needs group_size >= 2 and ignores scale and eps. */
CLLMDEF cllm_result cllm_grpo_advantages(int n, const double *rewards, int group_size, int estimator,
                                         int scale, double eps, double *advantages, cllm_err *err);

/* ---- BLEU, exactly as NLTK's sentence_bleu (nltk 3.8, weights 0.25 x 4) ---- */

typedef enum cllm_bleu_level {
    CLLM_BLEU_CHAR = 0,  /* a plain string is a sequence of characters (CollabLLM passes strings):
                            Unicode code points of the UTF-8 text, spaces included; an invalid
                            UTF-8 byte counts as one symbol of its own                           */
    CLLM_BLEU_TOKEN      /* tokens = Python str.split(): runs separated by Unicode whitespace      */
} cllm_bleu_level;

typedef enum cllm_bleu_smoothing {
    CLLM_BLEU_NO_SMOOTHING = 0, /* NLTK method0 (the default): a zero-match order's precision
                                   becomes DBL_MIN, so its log is -708.4 and BLEU ~1e-78, not 0 */
    CLLM_BLEU_METHOD1,          /* zero-match order: (0 + 0.1) / denominator                     */
    CLLM_BLEU_METHOD2           /* orders 2..4: (matches + 1) / (total + 1)   (Lin & Och 2004)   */
} cllm_bleu_smoothing;

/* BLEU of one hypothesis against n_refs >= 1 references (UTF-8 strings), in [0, 1]. */
CLLMDEF cllm_result cllm_bleu(int n_refs, const char *const *references, const char *hypothesis,
                              int level, int smoothing, double *bleu, cllm_err *err);
/* The same on integer symbol sequences (e.g. token ids): refs[i] has ref_lens[i] symbols. */
CLLMDEF cllm_result cllm_bleu_ids(int n_refs, const int *const *refs, const int *ref_lens,
                                  const int *hyp, int hyp_len, int smoothing, double *bleu, cllm_err *err);

/* ---- `collabllm ref NAME`: the functions above as JSON in, JSON out (data_fmt/ref.md) ---- */

/* name: dpo, gae, ppo-loss, ppo-rewards, grpo, adamw or bleu. Reads one JSON object (len bytes),
   writes the result object to *output (NUL-terminated; free with cllm_free_buffer). */
CLLMDEF cllm_result cllm_ref_json(const char *name, const char *input, size_t len, char **output, cllm_err *err);

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

/* Allocation with overflow-checked sizes; returns NULL on overflow or failure. */
static void *cllm__calloc(size_t n, size_t size) {
    void *p;
    size_t bytes;
    if (size && n > SIZE_MAX / size) return NULL;
    bytes = n * size;
    p = CLLM_MALLOC(bytes > 0 ? bytes : 1);
    if (p) memset(p, 0, bytes);
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

/* Validates the header JSON (hlen bytes, not NUL-terminated) of a file of fsize bytes and fills
   st->tensors. Separate from the file reading so that the fuzzer can drive it from memory. */
static cllm_result cllm__st_parse_header(cllm_safetensors *st, const char *path, const char *header, uint64_t hlen, uint64_t fsize, cllm_err *err) {
    uint64_t bufsize, expect;
    const char *parse_end = NULL;
    cJSON *root = NULL, *item;
    cllm_st_tensor **order = NULL;
    cllm_result rc = CLLM_OK;
    int i, count = 0;

    if (hlen < 2) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: header too short to hold a JSON object", path);
    if (header[0] != '{') return cllm__fail(err, CLLM_ERR_FORMAT, "%s: header does not start with '{'", path);
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
    if (expect != bufsize) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor", path, (unsigned long long)(bufsize - expect));
done:
    CLLM_FREE(order);
    cJSON_Delete(root);
    return rc;
}

CLLMDEF cllm_result cllm_st_open(cllm_safetensors *st, const char *path, cllm_err *err) {
    unsigned char lenbuf[8];
    uint64_t hlen = 0, fsize;
    long sz;
    char *header = NULL;
    cllm_result rc = CLLM_OK;
    int i;

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
    header = (char *)CLLM_MALLOC((size_t)hlen + 1);
    if (!header) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory for the header", path); goto done; }
    if (fread(header, 1, (size_t)hlen, st->file) != hlen) { rc = cllm__fail(err, CLLM_ERR_IO, "%s: short read in the header", path); goto done; }
    rc = cllm__st_parse_header(st, path, header, hlen, fsize, err);
done:
    CLLM_FREE(header);
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
    if (eos && !cJSON_IsNull(eos)) {
        const cJSON *e = cJSON_IsArray(eos) ? eos->child : eos;
        for (; e; e = cJSON_IsArray(eos) ? e->next : NULL) {
            uint64_t id;
            if (!cllm__json_u53(e, &id) || id >= (uint64_t)c->vocab_size)
                return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: eos_token_id must be a token id in [0, vocab_size) or a list of them");
            if (c->n_eos < CLLM_MAX_EOS) c->eos_token_ids[c->n_eos++] = (int)id;
        }
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

/* Linear layer, nn.Linear layout.  inp (N, C), W (OC, C), bias (OC) or NULL -> out (N, OC)
   out[n][o] = bias[o] + sum_c inp[n][c] * W[o][c]                                              */
static void cllm__matmul_forward(cllm_float *out, const cllm_float *inp, const cllm_float *W,
                                 const cllm_float *bias, int N, int C, int OC) {
    int n, o, c;
    for (n = 0; n < N; n++) {
        const cllm_float *x = inp + (size_t)n * C;
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
static void cllm__matmul_backward(cllm_float *dinp, cllm_float *dW, cllm_float *dbias,
                                  const cllm_float *dout, const cllm_float *inp, const cllm_float *W,
                                  int N, int C, int OC) {
    int n, o, c;
    if (dinp) for (n = 0; n < N; n++) {
        cllm_float *dx = dinp + (size_t)n * C;
        const cllm_float *dy = dout + (size_t)n * OC;
        for (o = 0; o < OC; o++) {
            const cllm_float *w = W + (size_t)o * C;
            cllm_float d = dy[o];
            for (c = 0; c < C; c++) dx[c] += d * w[c];
        }
    }
    if (dW || dbias) for (o = 0; o < OC; o++) {
        cllm_float *dw = dW ? dW + (size_t)o * C : NULL;
        cllm_float db = 0;
        for (n = 0; n < N; n++) {
            const cllm_float *x = inp + (size_t)n * C;
            cllm_float d = dout[(size_t)n * OC + o];
            db += d;
            if (dw) for (c = 0; c < C; c++) dw[c] += d * x[c];
        }
        if (dbias) dbias[o] += db;
    }
}

/* RMSNorm (LlamaRMSNorm), over rows of C:  r = 1/sqrt(mean(x^2) + eps),  y = w * (x * r)
   reference: transformers/models/llama/modeling_llama.py LlamaRMSNorm                          */
static void cllm__rmsnorm_forward(cllm_float *out, cllm_float *rstd, const cllm_float *inp,
                                  const cllm_float *w, int N, int C, float eps) {
    int n, c;
    for (n = 0; n < N; n++) {
        const cllm_float *x = inp + (size_t)n * C;
        cllm_float *y = out + (size_t)n * C, ss = 0, r;
        for (c = 0; c < C; c++) ss += x[c] * x[c];
        r = 1 / cllm__sqrt(ss / C + (cllm_float)eps);
        for (c = 0; c < C; c++) y[c] = w[c] * (x[c] * r);
        rstd[n] = r;
    }
}

/* With xh = x*r:  dw += sum_n dy * xh
                   dx += r * (dy*w - xh * mean(dy*w*xh))          (r depends on every x[c])      */
static void cllm__rmsnorm_backward(cllm_float *dinp, cllm_float *dw, const cllm_float *dout,
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
    int b, t, h, i, half = hd / 2;
    for (b = 0; b < B; b++) for (t = 0; t < T; t++) {
        const cllm_float *cs = cosv + (size_t)t * half, *sn = sinv + (size_t)t * half;
        for (h = 0; h < n_heads; h++) {
            cllm_float *v = x + ((size_t)(b * T + t) * n_heads + h) * hd;
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

/* One query row of attention over n key/value rows (row j at k + j*stride, v + j*stride), skipping
   the j with mask[j] = 0 (mask may be NULL):
     s_j = q . k_j * scale,   p = softmax(s),   y = sum_j p_j v_j,   returns lse = log sum_j exp(s_j)
   The full forward and the KV-cache forward both call this, so they compute the same numbers.
   s is a scratch row of n values.                                                              */
static cllm_float cllm__attend_row(cllm_float *y, const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                   size_t stride, int n, const int *mask, int hd, cllm_float scale, cllm_float *s) {
    int j, i;
    cllm_float mx = -INFINITY, sum = 0;
    for (j = 0; j < n; j++) {
        const cllm_float *kj = k + (size_t)j * stride;
        cllm_float dot = 0;
        if (mask && !mask[j]) { s[j] = -INFINITY; continue; }
        for (i = 0; i < hd; i++) dot += q[i] * kj[i];
        s[j] = dot * scale;
        if (s[j] > mx) mx = s[j];
    }
    for (j = 0; j < n; j++) sum += cllm__exp(s[j] - mx);   /* max subtracted for stability only */
    for (i = 0; i < hd; i++) y[i] = 0;
    for (j = 0; j < n; j++) {
        const cllm_float *vj = v + (size_t)j * stride;
        cllm_float p = cllm__exp(s[j] - mx) / sum;
        if (p == 0) continue;
        for (i = 0; i < hd; i++) y[i] += p * vj[i];
    }
    return mx + cllm__log(sum);
}

/* Causal grouped-query attention with a right-padding mask. q (B*T, H*hd), k, v (B*T, KV*hd).
   Query head h reads kv head h / (H/KV) (HF repeat_kv). Key j is visible from query t when
   j <= t and mask[b][j] = 1 (HF's causal + padding mask; pad queries still see the real keys).
     s_j = q_t . k_j / sqrt(hd),   p = softmax(s),   y_t = sum_j p_j v_j
   Only lse = log sum_j exp(s_j) is kept: the backward pass recomputes p_j = exp(s_j - lse), so
   memory is O(B H T) instead of O(B H T^2).  s is a scratch row of T values.                  */
static void cllm__attention_forward(cllm_float *out, cllm_float *lse, const cllm_float *q,
                                    const cllm_float *k, const cllm_float *v, const int *mask,
                                    int B, int T, int H, int KV, int hd, cllm_float *s) {
    int b, t, h, rep = H / KV;
    cllm_float scale = 1 / cllm__sqrt((cllm_float)hd);
    for (b = 0; b < B; b++) for (h = 0; h < H; h++) for (t = 0; t < T; t++) {
        size_t row = (size_t)(b * T + t) * H + h, kv0 = ((size_t)b * T * KV + h / rep) * hd;  /* key 0 of row b */
        lse[((size_t)b * H + h) * T + t] = cllm__attend_row(out + row * hd, q + row * hd, k + kv0, v + kv0, (size_t)KV * hd,
                                                            t + 1, mask ? mask + b * T : NULL, hd, scale, s);
    }
}

/* Backward. With dy_t given and p_j recomputed:
     dv_j += p_j dy_t                       (y_t = sum_j p_j v_j)
     dp_j  = dy_t . v_j
     ds_j  = p_j (dp_j - sum_i p_i dp_i) = p_j (dp_j - dy_t . y_t)     (softmax backward)
     dq_t += scale sum_j ds_j k_j,   dk_j += scale ds_j q_t
   GQA: the dk/dv of a kv head sum over the H/KV query heads that read it.                     */
static void cllm__attention_backward(cllm_float *dq, cllm_float *dk, cllm_float *dv, const cllm_float *dout,
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
    for (i = 0; i < n; i++) act[i] = g[i] / (1 + cllm__exp(-g[i])) * u[i];
}

static void cllm__swiglu_backward(cllm_float *dg, cllm_float *du, const cllm_float *dact,
                                  const cllm_float *g, const cllm_float *u, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        cllm_float sig = 1 / (1 + cllm__exp(-g[i]));
        dg[i] += dact[i] * u[i] * sig * (1 + g[i] * (1 - sig));
        du[i] += dact[i] * g[i] * sig;
    }
}

/* Embedding lookup: x[n] = E[id[n]];  backward: dE[id[n]] += dx[n]                            */
static void cllm__embedding_forward(cllm_float *out, const int *ids, const cllm_float *E, int N, int C) {
    int n;
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
/* The model: forward pass                                                                      */
/* -------------------------------------------------------------------------------------------- */

#define CLLM__LMHEAD_CHUNK 64   /* rows of logits materialised at once: memory is CHUNK x V, not B x T x V */

static void cllm__fill_in_act_sizes(size_t *s, const cllm_config *c, size_t BT) {
    size_t L = (size_t)c->n_layers, C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t H = (size_t)c->n_heads, KV = (size_t)c->n_kv_heads, hd = (size_t)c->head_dim;
    int qk = c->qk_norm;
    s[0]  = (L + 1) * BT * C;          /* x        */
    s[1]  = L * BT * C;                /* ln1      */
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
    s[13] = L * BT * C;                /* ln2      */
    s[14] = L * BT;                    /* ln2_rstd */
    s[15] = L * BT * I;                /* gate     */
    s[16] = L * BT * I;                /* up       */
    s[17] = L * BT * I;                /* act      */
    s[18] = BT * C;                    /* lnf      */
    s[19] = BT;                        /* lnf_rstd */
    s[20] = BT;                        /* lse      */
    s[21] = BT;                        /* logp     */
    s[22] = BT;                        /* entropy  */
}

/* Backward work space: running residual gradients and per-layer activation gradients, reused
   for every layer (only the parameter gradients need to persist), plus the lm-head chunk.     */
static size_t cllm__scratch_size(const cllm_config *c, size_t BT, size_t T) {
    size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    size_t Q = (size_t)c->n_heads * c->head_dim, K = (size_t)c->n_kv_heads * c->head_dim;
    size_t CH = CLLM__LMHEAD_CHUNK;
    return BT * (3 * C + 3 * I + 3 * Q + 3 * K) + CH * (V + 2 * C) + T;
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

/* q, k, v projections of layer l for N rows of the normed input ln1, with Qwen3's RMSNorm over
   each head's hd values before RoPE: then the raw projections go to q_pre/k_pre and the norms'
   rstd to q_rstd (N*H) / k_rstd (N*KV), which are NULL for other architectures.               */
static void cllm__qkv_forward(const cllm_model *m, int l, cllm_float *q, cllm_float *k, cllm_float *v,
                              cllm_float *q_pre, cllm_float *k_pre, cllm_float *q_rstd, cllm_float *k_rstd,
                              const cllm_float *ln1, int N) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    int C = c->hidden_size, hd = c->head_dim, Q = c->n_heads * hd, K = c->n_kv_heads * hd;
    const cllm_float *bq = p->bq ? p->bq + (size_t)l * Q : NULL, *bk = p->bk ? p->bk + (size_t)l * K : NULL;
    const cllm_float *bv = p->bv ? p->bv + (size_t)l * K : NULL;
    cllm__matmul_forward(c->qk_norm ? q_pre : q, ln1, p->wq + (size_t)l * Q * C, bq, N, C, Q);
    cllm__matmul_forward(c->qk_norm ? k_pre : k, ln1, p->wk + (size_t)l * K * C, bk, N, C, K);
    cllm__matmul_forward(v, ln1, p->wv + (size_t)l * K * C, bv, N, C, K);
    if (c->qk_norm) {
        cllm__rmsnorm_forward(q, q_rstd, q_pre, p->q_norm + (size_t)l * hd, N * c->n_heads, hd, c->rms_norm_eps);
        cllm__rmsnorm_forward(k, k_rstd, k_pre, p->k_norm + (size_t)l * hd, N * c->n_kv_heads, hd, c->rms_norm_eps);
    }
}

/* MLP block of layer l for N rows: out = h + down_proj(silu(gate_proj(n)) * up_proj(n)),
   n = rmsnorm(h) goes to ln2 (rstd to ln2_rstd). act may alias gate.                          */
static void cllm__mlp_forward(const cllm_model *m, int l, cllm_float *out, cllm_float *ln2, cllm_float *ln2_rstd,
                              cllm_float *gate, cllm_float *up, cllm_float *act, const cllm_float *h, int N) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    int C = c->hidden_size, I = c->intermediate_size, i;
    cllm__rmsnorm_forward(ln2, ln2_rstd, h, p->mlp_norm + (size_t)l * C, N, C, c->rms_norm_eps);
    cllm__matmul_forward(gate, ln2, p->w_gate + (size_t)l * I * C, NULL, N, C, I);
    cllm__matmul_forward(up, ln2, p->w_up + (size_t)l * I * C, NULL, N, C, I);
    cllm__swiglu_forward(act, gate, up, (size_t)N * I);
    cllm__matmul_forward(out, act, p->w_down + (size_t)l * C * I, NULL, N, I, C);
    for (i = 0; i < N * C; i++) out[i] += h[i];
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
        cllm_float *ln1 = a->ln1 + (size_t)l * BT * C, *ln1_rstd = a->ln1_rstd + (size_t)l * BT;
        cllm_float *q = a->q + (size_t)l * BT * Q, *k = a->k + (size_t)l * BT * K, *v = a->v + (size_t)l * BT * K;
        cllm_float *atty = a->atty + (size_t)l * BT * Q, *hres = a->h + (size_t)l * BT * C;
        cllm_float *ln2 = a->ln2 + (size_t)l * BT * C, *ln2_rstd = a->ln2_rstd + (size_t)l * BT;
        cllm_float *gate = a->gate + (size_t)l * BT * I, *up = a->up + (size_t)l * BT * I, *act = a->act + (size_t)l * BT * I;
        cllm_float *xout = a->x + (size_t)(l + 1) * BT * C;
        int i;

        /* attention block: h = x + o_proj(attention(rope(q), rope(k), v)), q,k,v from rmsnorm(x) */
        cllm__rmsnorm_forward(ln1, ln1_rstd, x, p->attn_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        if (c->qk_norm) cllm__qkv_forward(m, l, q, k, v, a->q_pre + (size_t)l * BT * Q, a->k_pre + (size_t)l * BT * K,
                                          a->q_rstd + (size_t)l * BT * H, a->k_rstd + (size_t)l * BT * KV, ln1, BT);
        else cllm__qkv_forward(m, l, q, k, v, NULL, NULL, NULL, NULL, ln1, BT);
        cllm__rope_forward(q, m->rope_cos, m->rope_sin, B, T, H, hd);
        cllm__rope_forward(k, m->rope_cos, m->rope_sin, B, T, KV, hd);
        cllm__attention_forward(atty, a->att_lse + (size_t)l * BT * H, q, k, v, m->mask, B, T, H, KV, hd, m->scratch);
        cllm__matmul_forward(hres, atty, p->wo + (size_t)l * C * Q, NULL, BT, Q, C);
        for (i = 0; i < BT * C; i++) hres[i] += x[i];

        cllm__mlp_forward(m, l, xout, ln2, ln2_rstd, gate, up, act, hres, BT);
    }
    cllm__rmsnorm_forward(a->lnf, a->lnf_rstd, a->x + (size_t)c->n_layers * BT * C, p->final_norm, BT, C, c->rms_norm_eps);

    /* lm head + log-softmax, CHUNK rows at a time: logits never exist for the whole batch */
    m->loss = 0; m->n_targets = 0;
    for (r = 0; r < BT; r += CLLM__LMHEAD_CHUNK) {
        int n = BT - r < CLLM__LMHEAD_CHUNK ? BT - r : CLLM__LMHEAD_CHUNK, i;
        cllm_float *z = m->scratch;
        cllm__matmul_forward(z, a->lnf + (size_t)r * C, p->lm_head, NULL, n, C, V);
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
    datty = dup + (size_t)BT * I; dq = datty + (size_t)BT * Q;    dq_pre = dq + (size_t)BT * Q;
    dk = dq_pre + (size_t)BT * Q; dk_pre = dk + (size_t)BT * K;   dv = dk_pre + (size_t)BT * K;
    packed = dv + (size_t)BT * K;
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
                for (i = 0; i < n; i++) {
                    cllm_float d = dlogp ? dlogp[idx[i]] : (cllm_float)(-1.0 / m->n_targets);   /* loss = -mean logp */
                    cllm__logsoftmax_row_backward(z + (size_t)i * V, a->lse[idx[i]], m->targets[idx[i]], d, (cllm_float)m->inv_temperature, V);
                }
                memset(dpacked, 0, sizeof(cllm_float) * (size_t)n * C);
                cllm__matmul_backward(dpacked, g->lm_head, NULL, z, packed, p->lm_head, n, C, V);
                for (i = 0; i < n; i++) {
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
        const cllm_float *ln1 = a->ln1 + (size_t)l * BT * C, *ln1_rstd = a->ln1_rstd + (size_t)l * BT;
        const cllm_float *q = a->q + (size_t)l * BT * Q, *k = a->k + (size_t)l * BT * K, *v = a->v + (size_t)l * BT * K;
        const cllm_float *atty = a->atty + (size_t)l * BT * Q, *hres = a->h + (size_t)l * BT * C;
        const cllm_float *ln2 = a->ln2 + (size_t)l * BT * C, *ln2_rstd = a->ln2_rstd + (size_t)l * BT;
        const cllm_float *gate = a->gate + (size_t)l * BT * I, *up = a->up + (size_t)l * BT * I, *act = a->act + (size_t)l * BT * I;
        cllm_float *dbq = g->bq ? g->bq + (size_t)l * Q : NULL, *dbk = g->bk ? g->bk + (size_t)l * K : NULL, *dbv = g->bv ? g->bv + (size_t)l * K : NULL;

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
        memset(datty, 0, sizeof(cllm_float) * (size_t)BT * (3 * Q + 3 * K));   /* datty dq dq_pre dk dk_pre dv */
        cllm__matmul_backward(datty, g->wo + (size_t)l * C * Q, NULL, dh, atty, p->wo + (size_t)l * C * Q, BT, Q, C);
        cllm__attention_backward(dq, dk, dv, datty, q, k, v, atty, a->att_lse + (size_t)l * BT * H, m->mask, B, T, H, KV, hd);
        cllm__rope_backward(dq, m->rope_cos, m->rope_sin, B, T, H, hd);
        cllm__rope_backward(dk, m->rope_cos, m->rope_sin, B, T, KV, hd);
        if (c->qk_norm) {
            cllm__rmsnorm_backward(dq_pre, g->q_norm + (size_t)l * hd, dq, a->q_pre + (size_t)l * BT * Q, p->q_norm + (size_t)l * hd, a->q_rstd + (size_t)l * BT * H, BT * H, hd);
            cllm__rmsnorm_backward(dk_pre, g->k_norm + (size_t)l * hd, dk, a->k_pre + (size_t)l * BT * K, p->k_norm + (size_t)l * hd, a->k_rstd + (size_t)l * BT * KV, BT * KV, hd);
        } else {
            memcpy(dq_pre, dq, sizeof(cllm_float) * (size_t)BT * Q);
            memcpy(dk_pre, dk, sizeof(cllm_float) * (size_t)BT * K);
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

/* ---- KV cache ------------------------------------------------------------------------------ */

#define CLLM__KV_BLOCK 32    /* prefill rows computed together: bounds the work space, not the math */

/* Work space for `rows` rows of one incremental step, carved from kv->work in this order. */
typedef struct cllm__kv_work {
    cllm_float *x, *ln, *h;              /* (rows, C) residual, normed input, residual after attention */
    cllm_float *q, *att, *q_pre;         /* (rows, H*hd) queries, attention output, pre-norm q         */
    cllm_float *k, *v, *k_pre;           /* (rows, KV*hd)                                              */
    cllm_float *rstd, *q_rstd, *k_rstd;  /* (rows), (rows*H), (rows*KV)                                */
    cllm_float *gate, *up;               /* (rows, I)                                                  */
    cllm_float *s;                       /* (max_len) attention scores of one query                    */
} cllm__kv_work;

/* Points w's views into mem (when mem is not NULL) and returns the floats needed. */
static size_t cllm__kv_work_views(cllm__kv_work *w, cllm_float *mem, const cllm_config *c, size_t rows, size_t max_len) {
    size_t C = (size_t)c->hidden_size, Q = (size_t)c->n_heads * c->head_dim, K = (size_t)c->n_kv_heads * c->head_dim;
    size_t I = (size_t)c->intermediate_size, used = 0;
    cllm_float **views[14];
    size_t sizes[14];
    int i;
    views[0] = &w->x;    sizes[0] = rows * C;     views[1] = &w->ln;     sizes[1] = rows * C;
    views[2] = &w->h;    sizes[2] = rows * C;     views[3] = &w->q;      sizes[3] = rows * Q;
    views[4] = &w->att;  sizes[4] = rows * Q;     views[5] = &w->q_pre;  sizes[5] = rows * Q;
    views[6] = &w->k;    sizes[6] = rows * K;     views[7] = &w->v;      sizes[7] = rows * K;
    views[8] = &w->k_pre; sizes[8] = rows * K;    views[9] = &w->rstd;   sizes[9] = rows;
    views[10] = &w->q_rstd; sizes[10] = rows * (size_t)c->n_heads;       views[11] = &w->k_rstd; sizes[11] = rows * (size_t)c->n_kv_heads;
    views[12] = &w->gate; sizes[12] = rows * I;   views[13] = &w->up;    sizes[13] = rows * I;
    for (i = 0; i < 14; i++) { if (mem) *views[i] = mem + used; used += sizes[i]; }
    if (mem) w->s = mem + used;
    return used + max_len;
}

CLLMDEF void cllm_kv_cache_free(cllm_kv_cache *kv) {
    if (!kv) return;
    CLLM_FREE(kv->len); CLLM_FREE(kv->k); CLLM_FREE(kv->v);
    CLLM_FREE(kv->rope_cos); CLLM_FREE(kv->rope_sin); CLLM_FREE(kv->work);
    CLLM_FREE(kv->row_seq); CLLM_FREE(kv->row_pos); CLLM_FREE(kv->row_id);
    memset(kv, 0, sizeof *kv);
}

CLLMDEF cllm_result cllm_kv_cache_init(cllm_kv_cache *kv, const cllm_model *m, int n_seq, int max_len, cllm_err *err) {
    const cllm_config *c = &m->config;
    cllm__kv_work sizing;
    size_t per, rows;
    double gb;
    memset(kv, 0, sizeof *kv);
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "cllm_kv_cache_init: the model is not loaded");
    if (n_seq < 1 || max_len < 1) return cllm__fail(err, CLLM_ERR_ARG, "cllm_kv_cache_init: n_seq (%d) and max_len (%d) must be at least 1", n_seq, max_len);
    gb = 2.0 * c->n_layers * (double)n_seq * max_len * c->n_kv_heads * c->head_dim * sizeof(cllm_float) / 1e9;
    if (gb > 1024 || (double)n_seq * max_len > 1e10)
        return cllm__fail(err, CLLM_ERR_LIMIT, "cllm_kv_cache_init: %d sequences x %d positions need %.0f GB; use fewer or shorter sequences", n_seq, max_len, gb);
    kv->n_seq = n_seq; kv->max_len = max_len;
    kv->n_layers = c->n_layers; kv->kv_dim = c->n_kv_heads * c->head_dim; kv->head_dim = c->head_dim;
    kv->rows = n_seq > CLLM__KV_BLOCK ? n_seq : CLLM__KV_BLOCK;
    rows = (size_t)kv->rows;
    per = (size_t)c->n_layers * (size_t)n_seq * (size_t)max_len * (size_t)kv->kv_dim;
    kv->len = (int *)cllm__calloc((size_t)n_seq, sizeof(int));
    kv->k = (cllm_float *)cllm__calloc(per, sizeof(cllm_float));
    kv->v = (cllm_float *)cllm__calloc(per, sizeof(cllm_float));
    kv->rope_cos = (cllm_float *)cllm__calloc((size_t)max_len * (size_t)(c->head_dim / 2), sizeof(cllm_float));
    kv->rope_sin = (cllm_float *)cllm__calloc((size_t)max_len * (size_t)(c->head_dim / 2), sizeof(cllm_float));
    kv->work_size = cllm__kv_work_views(&sizing, NULL, c, rows, (size_t)max_len);
    kv->work = (cllm_float *)cllm__calloc(kv->work_size, sizeof(cllm_float));
    kv->row_seq = (int *)cllm__calloc(rows, sizeof(int));
    kv->row_pos = (int *)cllm__calloc(rows, sizeof(int));
    kv->row_id = (int *)cllm__calloc(rows, sizeof(int));
    if (!kv->len || !kv->k || !kv->v || !kv->rope_cos || !kv->rope_sin || !kv->work || !kv->row_seq || !kv->row_pos || !kv->row_id) {
        cllm_kv_cache_free(kv);
        return cllm__fail(err, CLLM_ERR_NOMEM, "cllm_kv_cache_init: out of memory for %d sequences x %d positions (%.2f GB)", n_seq, max_len, gb);
    }
    cllm__rope_tables(kv->rope_cos, kv->rope_sin, c, max_len);   /* the same tables cllm_forward uses */
    cllm__ok(err);
    return CLLM_OK;
}

/* Start of the cached rows of (layer l, sequence s) in kv->k or kv->v. */
static size_t cllm__kv_offset(const cllm_kv_cache *kv, int l, int s) {
    return ((size_t)l * kv->n_seq + (size_t)s) * (size_t)kv->max_len * (size_t)kv->kv_dim;
}

CLLMDEF cllm_result cllm_kv_cache_copy_seq(cllm_kv_cache *kv, int src, int dst, cllm_err *err) {
    int l;
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq)
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_kv_cache_copy_seq: sequences %d -> %d, the cache has %d", src, dst, kv->n_seq);
    if (src != dst) for (l = 0; l < kv->n_layers; l++) {
        size_t bytes = (size_t)kv->len[src] * (size_t)kv->kv_dim * sizeof(cllm_float);
        memcpy(kv->k + cllm__kv_offset(kv, l, dst), kv->k + cllm__kv_offset(kv, l, src), bytes);
        memcpy(kv->v + cllm__kv_offset(kv, l, dst), kv->v + cllm__kv_offset(kv, l, src), bytes);
    }
    kv->len[dst] = kv->len[src];
    cllm__ok(err);
    return CLLM_OK;
}

static cllm_result cllm__kv_check(const cllm_model *m, const cllm_kv_cache *kv, const char *fn, cllm_err *err) {
    const cllm_config *c = &m->config;
    cllm__kv_work sizing;
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "%s: the model is not loaded", fn);
    if (!kv->work || kv->n_layers != c->n_layers || kv->kv_dim != c->n_kv_heads * c->head_dim || kv->head_dim != c->head_dim ||
        kv->work_size != cllm__kv_work_views(&sizing, NULL, c, (size_t)kv->rows, (size_t)kv->max_len))
        return cllm__fail(err, CLLM_ERR_ARG, "%s: the KV cache is not initialised for this model (cllm_kv_cache_init)", fn);
    return CLLM_OK;
}

/* The incremental forward for N rows: row r is token ids[r] of sequence kv->row_seq[r] at
   position kv->row_pos[r]. Rows of one sequence must continue its cached positions without gaps.
   Per layer, every row's k and v go into the cache first; then row r attends to positions
   0..row_pos[r] of its sequence: the cached past plus earlier rows of this step (causal).
   Leaves the final-normed hidden states in the work rows w->ln (N, C).                          */
static void cllm__kv_forward_rows(const cllm_model *m, cllm_kv_cache *kv, const int *ids, int N, cllm__kv_work *w) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    int C = c->hidden_size, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, half = hd / 2;
    int Q = H * hd, K = KV * hd, rep = H / KV, l, r, h, i;
    cllm_float scale = 1 / cllm__sqrt((cllm_float)hd);

    cllm__embedding_forward(w->x, ids, p->embed, N, C);
    for (l = 0; l < c->n_layers; l++) {
        cllm__rmsnorm_forward(w->ln, w->rstd, w->x, p->attn_norm + (size_t)l * C, N, C, c->rms_norm_eps);
        cllm__qkv_forward(m, l, w->q, w->k, w->v, w->q_pre, w->k_pre, w->q_rstd, w->k_rstd, w->ln, N);
        for (r = 0; r < N; r++) {                /* RoPE at each row's own position, then cache k, v */
            size_t pos = (size_t)kv->row_pos[r], at = cllm__kv_offset(kv, l, kv->row_seq[r]) + pos * K;
            cllm__rope_forward(w->q + (size_t)r * Q, kv->rope_cos + pos * half, kv->rope_sin + pos * half, 1, 1, H, hd);
            cllm__rope_forward(w->k + (size_t)r * K, kv->rope_cos + pos * half, kv->rope_sin + pos * half, 1, 1, KV, hd);
            memcpy(kv->k + at, w->k + (size_t)r * K, sizeof(cllm_float) * (size_t)K);
            memcpy(kv->v + at, w->v + (size_t)r * K, sizeof(cllm_float) * (size_t)K);
        }
        for (r = 0; r < N; r++) for (h = 0; h < H; h++) {
            size_t kv0 = cllm__kv_offset(kv, l, kv->row_seq[r]) + (size_t)(h / rep) * hd;
            size_t qo = (size_t)r * Q + (size_t)h * hd;
            cllm__attend_row(w->att + qo, w->q + qo, kv->k + kv0, kv->v + kv0, (size_t)K, kv->row_pos[r] + 1, NULL, hd, scale, w->s);
        }
        cllm__matmul_forward(w->h, w->att, p->wo + (size_t)l * C * Q, NULL, N, Q, C);
        for (i = 0; i < N * C; i++) w->h[i] += w->x[i];
        cllm__mlp_forward(m, l, w->x, w->ln, w->rstd, w->gate, w->up, w->gate, w->h, N);
    }
    cllm__rmsnorm_forward(w->ln, w->rstd, w->x, p->final_norm, N, C, c->rms_norm_eps);
}

static cllm_result cllm__kv_check_id(const cllm_model *m, int id, const char *fn, int seq, cllm_err *err) {
    if (id < 0 || id >= m->config.vocab_size)
        return cllm__fail(err, CLLM_ERR_ARG, "%s: sequence %d: token id %d is outside the vocabulary [0, %d)", fn, seq, id, m->config.vocab_size);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_kv_prefill(const cllm_model *m, cllm_kv_cache *kv, int seq, const int *ids, int n,
                                    cllm_float *logits_out, cllm_err *err) {
    int C = m->config.hidden_size, V = m->config.vocab_size, done, r;
    cllm__kv_work w;
    cllm_result rc = cllm__kv_check(m, kv, "cllm_kv_prefill", err);
    if (rc != CLLM_OK) return rc;
    if (seq < 0 || seq >= kv->n_seq) return cllm__fail(err, CLLM_ERR_ARG, "cllm_kv_prefill: sequence %d, the cache has %d", seq, kv->n_seq);
    if (n < 0 || (n > 0 && !ids)) return cllm__fail(err, CLLM_ERR_ARG, "cllm_kv_prefill: need n >= 0 token ids");
    if (n > kv->max_len - kv->len[seq])
        return cllm__fail(err, CLLM_ERR_LIMIT, "cllm_kv_prefill: sequence %d holds %d of %d positions, %d more do not fit (make the cache longer)", seq, kv->len[seq], kv->max_len, n);
    for (r = 0; r < n; r++) if ((rc = cllm__kv_check_id(m, ids[r], "cllm_kv_prefill", seq, err)) != CLLM_OK) return rc;
    cllm__kv_work_views(&w, kv->work, &m->config, (size_t)kv->rows, (size_t)kv->max_len);
    for (done = 0; done < n; done += CLLM__KV_BLOCK) {
        int N = n - done < CLLM__KV_BLOCK ? n - done : CLLM__KV_BLOCK;
        for (r = 0; r < N; r++) { kv->row_seq[r] = seq; kv->row_pos[r] = kv->len[seq] + r; }
        cllm__kv_forward_rows(m, kv, ids + done, N, &w);
        kv->len[seq] += N;
        if (logits_out) cllm__matmul_forward(logits_out + (size_t)done * V, w.ln, m->params.lm_head, NULL, N, C, V);
    }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_kv_step(const cllm_model *m, cllm_kv_cache *kv, const int *ids, cllm_float *logits_out, cllm_err *err) {
    int C = m->config.hidden_size, V = m->config.vocab_size, N = 0, s, r;
    cllm__kv_work w;
    cllm_result rc = cllm__kv_check(m, kv, "cllm_kv_step", err);
    if (rc != CLLM_OK) return rc;
    if (!ids) return cllm__fail(err, CLLM_ERR_ARG, "cllm_kv_step: ids is NULL");
    for (s = 0; s < kv->n_seq; s++) {
        if (ids[s] < 0) continue;
        if ((rc = cllm__kv_check_id(m, ids[s], "cllm_kv_step", s, err)) != CLLM_OK) return rc;
        if (kv->len[s] >= kv->max_len)
            return cllm__fail(err, CLLM_ERR_LIMIT, "cllm_kv_step: sequence %d already fills all %d positions of the cache", s, kv->max_len);
    }
    for (s = 0; s < kv->n_seq; s++)
        if (ids[s] >= 0) { kv->row_seq[N] = s; kv->row_pos[N] = kv->len[s]; kv->row_id[N++] = ids[s]; }
    cllm__kv_work_views(&w, kv->work, &m->config, (size_t)kv->rows, (size_t)kv->max_len);
    if (N > 0) cllm__kv_forward_rows(m, kv, kv->row_id, N, &w);
    for (r = 0; r < N; r++) {
        s = kv->row_seq[r];
        kv->len[s]++;
        if (logits_out) cllm__matmul_forward(logits_out + (size_t)s * V, w.ln + (size_t)r * C, m->params.lm_head, NULL, 1, C, V);
    }
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- Sampling -------------------------------------------------------------------------------- */

typedef struct cllm__cand { double z; int id; } cllm__cand;   /* a token and its score */

/* The ranking every filter uses: higher score first, then lower id. A total order, so sorting
   and selection give one answer on every platform. */
static int cllm__cand_before(const cllm__cand *a, const cllm__cand *b) {
    return a->z > b->z || (a->z == b->z && a->id < b->id);
}

static int cllm__cand_cmp(const void *a, const void *b) {
    const cllm__cand *x = (const cllm__cand *)a, *y = (const cllm__cand *)b;
    return cllm__cand_before(x, y) ? -1 : cllm__cand_before(y, x) ? 1 : 0;
}

/* Selection (Hoare's FIND): rearranges c[0..n) so that c[k] is the (k+1)-th in rank order, with
   every earlier-ranked candidate before it and every later one after it. O(n) on average, so
   top-k does not sort the whole vocabulary. */
static void cllm__select(cllm__cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        cllm__cand pivot = c[k], t;
        int i = lo, j = hi;
        do {
            while (cllm__cand_before(&c[i], &pivot)) i++;
            while (cllm__cand_before(&pivot, &c[j])) j--;
            if (i <= j) { t = c[i]; c[i] = c[j]; c[j] = t; i++; j--; }
        } while (i <= j);
        if (j < k) lo = i;
        if (k < i) hi = j;
    }
}

static cllm_result cllm__sampler_check(const cllm_sampler *s, cllm_err *err) {
    if (!(s->temperature == 0 || (s->temperature >= 1e-6f && s->temperature <= 1e6f)))
        return cllm__fail(err, CLLM_ERR_ARG, "sampler: temperature %g must be in [1e-6, 1e6] (0 = default 1.0; set greedy = 1 for argmax)", (double)s->temperature);
    if (s->top_k < 0) return cllm__fail(err, CLLM_ERR_ARG, "sampler: top_k must be >= 0 (0 = off)");
    if (!(s->top_p >= 0 && s->top_p <= 1)) return cllm__fail(err, CLLM_ERR_ARG, "sampler: top_p must be in (0, 1] (0 = default 1.0 = off)");
    return CLLM_OK;
}

/* Logits may mask tokens with -inf, but need one finite value and no NaN or +inf. */
static cllm_result cllm__logits_check(const cllm_float *logits, int V, cllm_err *err) {
    int i, finite = 0;
    if (!logits || V < 1) return cllm__fail(err, CLLM_ERR_ARG, "sampler: need V >= 1 logits");
    for (i = 0; i < V; i++) {
        if (logits[i] != logits[i] || logits[i] == INFINITY) return cllm__fail(err, CLLM_ERR_NUMERIC, "sampler: logit %d is %s", i, logits[i] != logits[i] ? "NaN" : "+inf");
        if (logits[i] > -INFINITY) finite = 1;
    }
    if (!finite) return cllm__fail(err, CLLM_ERR_NUMERIC, "sampler: every logit is -inf");
    return CLLM_OK;
}

/* HF's warpers (see cllm_sampler): scores[i] = logits[i]/T, or -INFINITY where removed.
   cand: work space of V. Returns the number of kept tokens.                                     */
static int cllm__warp(const cllm_sampler *s, const cllm_float *logits, int V, double *scores, cllm__cand *cand) {
    double T = (double)cllm__def(s->temperature, 1.0f), p = (double)cllm__def(s->top_p, 1.0f);
    int n = 0, i, k = s->top_k;
    for (i = 0; i < V; i++) {
        scores[i] = logits[i] > -INFINITY ? (double)logits[i] / T : -INFINITY;
        if (scores[i] > -INFINITY) { cand[n].z = scores[i]; cand[n].id = i; n++; }   /* -inf has no mass */
    }
    if (k > 0 && k < n) {                        /* top-k: keep z >= the k-th largest z */
        double thr;
        int kept = k;
        cllm__select(cand, n, k - 1);
        thr = cand[k - 1].z;
        for (i = k; i < n; i++) if (cand[i].z == thr) { cllm__cand t = cand[kept]; cand[kept++] = cand[i]; cand[i] = t; }
        n = kept;
    }
    if (p < 1 && n > 1) {                        /* top-p over softmax of the survivors */
        double mx = -INFINITY, Z = 0, mass = 0, small;
        int m = 0, kept = 0;
        for (i = 0; i < n; i++) if (cand[i].z > mx) mx = cand[i].z;
        for (i = 0; i < n; i++) Z += exp(cand[i].z - mx);
        /* Tokens with p_i < (1-top_p)/(n-1) can never be kept (together they hold less than 1-top_p
           and rank last), so only the others need sorting (llama2.c's trick). */
        small = (1 - p) / (n - 1) * Z;
        for (i = 0; i < n; i++) if (exp(cand[i].z - mx) >= small) { cllm__cand t = cand[m]; cand[m++] = cand[i]; cand[i] = t; }
        if (m == 0) m = n;
        qsort(cand, (size_t)m, sizeof *cand, cllm__cand_cmp);
        while (kept < m && mass < p) { mass += exp(cand[kept].z - mx) / Z; kept++; }
        n = kept;
    }
    if (n < V) {                                 /* write back: only the kept candidates keep a score */
        for (i = 0; i < V; i++) scores[i] = -INFINITY;
        for (i = 0; i < n; i++) scores[cand[i].id] = cand[i].z;
    }
    return n;
}

/* One draw from softmax(z) with u in [0, 1): the first id (in id order) whose running sum of
   exp(z - max) exceeds u * total. *logprob = z[id] - max - log(total).                          */
static int cllm__draw(const double *z, int V, double u, double *logprob) {
    double mx = -INFINITY, total = 0, acc = 0, r;
    int i, pick = -1;
    for (i = 0; i < V; i++) if (z[i] > mx) mx = z[i];
    for (i = 0; i < V; i++) if (z[i] > -INFINITY) total += exp(z[i] - mx);
    r = u * total;
    for (i = 0; i < V; i++) {
        if (!(z[i] > -INFINITY)) continue;
        acc += exp(z[i] - mx);
        pick = i;                                /* the last kept id, should rounding leave r >= acc */
        if (r < acc) break;
    }
    *logprob = z[pick] - mx - log(total);
    return pick;
}

/* Greedy: argmax (lowest id on ties); *logprob = log softmax(logits)[argmax]. */
static int cllm__argmax(const cllm_float *logits, int V, double *logprob) {
    double mx = logits[0], sum = 0;
    int i, best = 0;
    for (i = 1; i < V; i++) if (logits[i] > mx) { mx = logits[i]; best = i; }
    for (i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    *logprob = -log(sum);
    return best;
}

static int cllm__sample_with(const cllm_sampler *s, const cllm_float *logits, int V, cllm_rng *rng,
                             double *scores, cllm__cand *cand, double *logprob) {
    if (s->greedy) return cllm__argmax(logits, V, logprob);
    cllm__warp(s, logits, V, scores, cand);
    return cllm__draw(scores, V, cllm_rng_uniform(rng), logprob);
}

CLLMDEF cllm_result cllm_sampler_scores(const cllm_sampler *s, const cllm_float *logits, int V, double *scores,
                                        int *n_kept, cllm_err *err) {
    cllm__cand *cand;
    cllm_result rc;
    int n;
    if (!s || !scores) return cllm__fail(err, CLLM_ERR_ARG, "cllm_sampler_scores: sampler and scores are required");
    if ((rc = cllm__sampler_check(s, err)) != CLLM_OK || (rc = cllm__logits_check(logits, V, err)) != CLLM_OK) return rc;
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand);
    if (!cand) return cllm__fail(err, CLLM_ERR_NOMEM, "cllm_sampler_scores: out of memory");
    n = cllm__warp(s, logits, V, scores, cand);
    if (n_kept) *n_kept = n;
    CLLM_FREE(cand);
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_sample(const cllm_sampler *s, const cllm_float *logits, int V, cllm_rng *rng,
                                int *token, double *logprob, cllm_err *err) {
    double *scores, lp;
    cllm__cand *cand;
    cllm_result rc;
    if (!s || !rng || !token) return cllm__fail(err, CLLM_ERR_ARG, "cllm_sample: sampler, rng and token are required");
    if ((rc = cllm__sampler_check(s, err)) != CLLM_OK || (rc = cllm__logits_check(logits, V, err)) != CLLM_OK) return rc;
    scores = (double *)cllm__calloc((size_t)V, sizeof *scores);
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand);
    if (!scores || !cand) { CLLM_FREE(scores); CLLM_FREE(cand); return cllm__fail(err, CLLM_ERR_NOMEM, "cllm_sample: out of memory"); }
    *token = cllm__sample_with(s, logits, V, rng, scores, cand, &lp);
    if (logprob) *logprob = lp;
    CLLM_FREE(scores); CLLM_FREE(cand);
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- Generation loop ------------------------------------------------------------------------ */

CLLMDEF const char *cllm_finish_reason_string(int reason) {
    switch (reason) {
    case CLLM_FINISH_LENGTH: return "length";
    case CLLM_FINISH_EOS:    return "eos";
    case CLLM_FINISH_STOP:   return "stop";
    default:                 return "unknown";
    }
}

CLLMDEF void cllm_completions_free(cllm_completion *c, int n) {
    int i;
    if (!c) return;
    for (i = 0; i < n; i++) { CLLM_FREE(c[i].ids); CLLM_FREE(c[i].logprobs); memset(&c[i], 0, sizeof c[i]); }
}

static int cllm__is_eos(const cllm_gen_config *g, const cllm_config *c, int id) {
    const int *list = g->eos_ids ? g->eos_ids : c->eos_token_ids;
    int n = g->eos_ids ? g->n_eos : c->n_eos, i;
    if (g->ignore_eos) return 0;
    for (i = 0; i < n; i++) if (list[i] == id) return 1;
    return 0;
}

/* The loop: prefill the prompt (all but its last token) into sequence 0 and copy it to the other
   samples; then every step feeds each unfinished sample's newest token (at first the prompt's
   last one) through cllm_kv_step as one batch, samples the next token from its logits row, and
   checks EOS, the stop callback and the length limit. The last sampled token is never fed.   */
CLLMDEF cllm_result cllm_generate(const cllm_model *m, const int *prompt, int n_prompt, int n_samples,
                                  const cllm_gen_config *cfg, cllm_completion *out, cllm_err *err) {
    cllm_gen_config g;
    cllm_kv_cache kv;
    cllm_float *logits = NULL;
    double *scores = NULL;
    cllm__cand *cand = NULL;
    cllm_rng *rngs = NULL;
    int *cur = NULL, V = m->config.vocab_size, active, s;
    cllm_result rc;

    memset(&kv, 0, sizeof kv);
    if (cfg) g = *cfg; else memset(&g, 0, sizeof g);
    g.max_new_tokens = cllm__def(g.max_new_tokens, 256);
    if (!out || n_samples < 1 || n_samples > 65536) return cllm__fail(err, CLLM_ERR_ARG, "cllm_generate: n_samples must be in [1, 65536] with an output array");
    memset(out, 0, (size_t)n_samples * sizeof *out);
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "cllm_generate: the model is not loaded");
    if (!prompt || n_prompt < 1) return cllm__fail(err, CLLM_ERR_ARG, "cllm_generate: the prompt needs at least one token (e.g. BOS)");
    if (g.max_new_tokens < 1 || g.max_new_tokens > INT_MAX / 2 - n_prompt) return cllm__fail(err, CLLM_ERR_ARG, "cllm_generate: max_new_tokens must be positive and fit an int with the prompt");
    if (g.eos_ids && g.n_eos < 0) return cllm__fail(err, CLLM_ERR_ARG, "cllm_generate: n_eos must be >= 0");
    if ((rc = cllm__sampler_check(&g.sampler, err)) != CLLM_OK) return rc;
    for (s = 0; s < n_prompt; s++)
        if (prompt[s] < 0 || prompt[s] >= V) return cllm__fail(err, CLLM_ERR_ARG, "cllm_generate: prompt token %d is id %d, outside the vocabulary [0, %d)", s, prompt[s], V);

    rc = cllm_kv_cache_init(&kv, m, n_samples, n_prompt + g.max_new_tokens - 1, err);
    if (rc != CLLM_OK) return rc;
    logits = (cllm_float *)cllm__calloc((size_t)n_samples * (size_t)V, sizeof *logits);
    scores = (double *)cllm__calloc((size_t)V, sizeof *scores);
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand);
    rngs = (cllm_rng *)cllm__calloc((size_t)n_samples, sizeof *rngs);
    cur = (int *)cllm__calloc((size_t)n_samples, sizeof *cur);
    if (!logits || !scores || !cand || !rngs || !cur) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "cllm_generate: out of memory"); goto done; }
    for (s = 0; s < n_samples; s++) {
        out[s].ids = (int *)cllm__calloc((size_t)g.max_new_tokens, sizeof(int));
        out[s].logprobs = (cllm_float *)cllm__calloc((size_t)g.max_new_tokens, sizeof(cllm_float));
        if (!out[s].ids || !out[s].logprobs) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "cllm_generate: out of memory for %d x %d tokens", n_samples, g.max_new_tokens); goto done; }
        cllm_rng_seed(&rngs[s], g.sampler.seed * 0x9E3779B97F4A7C15ull + (uint64_t)s);
        cur[s] = prompt[n_prompt - 1];
    }
    if ((rc = cllm_kv_prefill(m, &kv, 0, prompt, n_prompt - 1, NULL, err)) != CLLM_OK) goto done;
    for (s = 1; s < n_samples; s++) cllm_kv_cache_copy_seq(&kv, 0, s, NULL);

    for (active = n_samples; active > 0;) {
        if ((rc = cllm_kv_step(m, &kv, cur, logits, err)) != CLLM_OK) goto done;
        for (s = 0; s < n_samples; s++) {
            cllm_completion *o = &out[s];
            const cllm_float *row = logits + (size_t)s * V;
            double lp;
            int tok;
            if (cur[s] < 0) continue;
            if ((rc = cllm__logits_check(row, V, err)) != CLLM_OK) goto done;
            tok = cllm__sample_with(&g.sampler, row, V, &rngs[s], scores, cand, &lp);
            o->ids[o->n] = tok;
            o->logprobs[o->n++] = (cllm_float)lp;
            o->finish = -1;
            if (cllm__is_eos(&g, &m->config, tok)) o->finish = CLLM_FINISH_EOS;
            else if (g.stop && g.stop(g.stop_ctx, o->ids, o->n)) o->finish = CLLM_FINISH_STOP;
            else if (o->n == g.max_new_tokens) o->finish = CLLM_FINISH_LENGTH;
            if (o->finish >= 0) { cur[s] = -1; active--; }
            else cur[s] = tok;
        }
    }
    cllm__ok(err);
done:
    if (rc != CLLM_OK) cllm_completions_free(out, n_samples);
    cllm_kv_cache_free(&kv);
    CLLM_FREE(logits); CLLM_FREE(scores); CLLM_FREE(cand); CLLM_FREE(rngs); CLLM_FREE(cur);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* Chat-completions client, user simulators and judges                                          */
/* -------------------------------------------------------------------------------------------- */

/* Protocol and retry policy: see the declarations. The pieces, top to bottom: a string builder,
   conversations, lenient JSON, the libcurl transfer engine (one curl multi handle; each request a
   small state machine WAITING -> RUNNING -> WAITING (retry) | DONE), then the simulators,
   assistants and judges, which all go through one "ask n prompts, parse, re-ask the unusable"
   routine, and finally task files. */

#include <curl/curl.h>
#include <ctype.h>
#include <time.h>
#if !defined(_WIN32)
#include <sys/time.h>
#endif

/* ---- small helpers ------------------------------------------------------------------------- */

/* Seconds on a monotonic clock when the host program exposes one (POSIX CLOCK_MONOTONIC),
   else gettimeofday; only differences are used (backoff waits, call durations). */
static double cllm__now(void) {
#if defined(CLOCK_MONOTONIC) && !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#elif !defined(_WIN32)
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
#else
    return (double)time(NULL);
#endif
}

/* A growable NUL-terminated string; `oom` is sticky so callers check once at the end. */
typedef struct cllm__sb { char *p; size_t n, cap; int oom; } cllm__sb;

static void cllm__sb_putn(cllm__sb *b, const char *s, size_t len) {
    if (b->oom) return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->n + len + 1) {
            if (cap > SIZE_MAX / 2) { b->oom = 1; return; }
            cap *= 2;
        }
        np = (char *)CLLM_REALLOC(b->p, cap);
        if (!np) { b->oom = 1; return; }
        b->p = np; b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}
static void cllm__sb_puts(cllm__sb *b, const char *s) { cllm__sb_putn(b, s, strlen(s)); }
static void cllm__sb_putc(cllm__sb *b, char c) { cllm__sb_putn(b, &c, 1); }

/* Hands the string over (an empty one if nothing was written; NULL after an allocation failure). */
static char *cllm__sb_take(cllm__sb *b) {
    char *p = b->p;
    if (b->oom) { CLLM_FREE(p); p = NULL; }
    else if (!p) p = cllm__strdup("");
    memset(b, 0, sizeof *b);
    return p;
}

static void cllm__sb_free(cllm__sb *b) { CLLM_FREE(b->p); memset(b, 0, sizeof *b); }

/* A copy of s[0..len) without leading and trailing white space. */
static char *cllm__strdup_trim(const char *s) {
    size_t len = strlen(s);
    cllm__sb b = { NULL, 0, 0, 0 };
    while (len && isspace((unsigned char)s[len - 1])) len--;
    while (len && isspace((unsigned char)*s)) { s++; len--; }
    cllm__sb_putn(&b, s, len);
    return cllm__sb_take(&b);
}

/* Fills {{name}} placeholders of a template; unknown names are left as they are. */
static char *cllm__fill(const char *tmpl, const char *const *names, const char *const *values, int n) {
    cllm__sb b = { NULL, 0, 0, 0 };
    const char *p = tmpl, *open;
    while ((open = strstr(p, "{{")) != NULL) {
        int i, hit = -1;
        cllm__sb_putn(&b, p, (size_t)(open - p));
        for (i = 0; i < n && hit < 0; i++) {
            size_t k = strlen(names[i]);
            if (strncmp(open + 2, names[i], k) == 0 && strncmp(open + 2 + k, "}}", 2) == 0) hit = i;
        }
        if (hit < 0) { cllm__sb_putn(&b, open, 2); p = open + 2; continue; }
        cllm__sb_puts(&b, values[hit] ? values[hit] : "");
        p = open + 4 + strlen(names[hit]);
    }
    cllm__sb_puts(&b, p);
    return cllm__sb_take(&b);
}

/* The return value of every batch call: CLLM_OK when all n items succeeded, else the first
   failure's code and a message counting the failures. Items are structs with `code` and `err`
   fields; code0/err0 point at item 0's and stride is the struct size. */
static cllm_result cllm__batch_result(const cllm_result *code0, const cllm_err *err0, size_t stride, int n,
                                      const char *what, cllm_err *err) {
    int i, failed = 0, first = -1;
    for (i = 0; i < n; i++) {
        cllm_result c = *(const cllm_result *)(const void *)((const char *)code0 + (size_t)i * stride);
        if (c != CLLM_OK) { failed++; if (first < 0) first = i; }
    }
    if (!failed) { cllm__ok(err); return CLLM_OK; }
    {
        const cllm_err *e = (const cllm_err *)(const void *)((const char *)err0 + (size_t)first * stride);
        cllm_result c = *(const cllm_result *)(const void *)((const char *)code0 + (size_t)first * stride);
        if (n == 1) return cllm__fail(err, c, "%s", e->msg);
        return cllm__fail(err, c, "%d of %d %s failed; first (#%d): %s", failed, n, what, first, e->msg);
    }
}
#define CLLM__BATCH_RESULT(items, n, what, err) \
    cllm__batch_result(&(items)[0].code, &(items)[0].err, sizeof (items)[0], (n), (what), (err))

/* ---- conversations ------------------------------------------------------------------------- */

static int cllm__valid_role(const char *r) {
    return r && (strcmp(r, "system") == 0 || strcmp(r, "user") == 0 || strcmp(r, "assistant") == 0);
}

CLLMDEF cllm_result cllm_conv_push(cllm_conv *c, const char *role, const char *content, cllm_err *err) {
    char *r, *t;
    if (!c || !role || !content) return cllm__fail(err, CLLM_ERR_ARG, "cllm_conv_push: conversation, role and content are required");
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        cllm_message *m;
        if (c->cap > INT_MAX / 2) return cllm__fail(err, CLLM_ERR_LIMIT, "cllm_conv_push: conversation too long");
        m = (cllm_message *)CLLM_REALLOC(c->msgs, (size_t)cap * sizeof *m);
        if (!m) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        c->msgs = m; c->cap = cap;
    }
    r = cllm__strdup(role); t = cllm__strdup(content);
    if (!r || !t) { CLLM_FREE(r); CLLM_FREE(t); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    c->msgs[c->n].role = r;
    c->msgs[c->n].content = t;
    c->n++;
    return CLLM_OK;
}

CLLMDEF void cllm_conv_free(cllm_conv *c) {
    int i;
    if (!c) return;
    for (i = 0; i < c->n; i++) { CLLM_FREE((void *)c->msgs[i].role); CLLM_FREE((void *)c->msgs[i].content); }
    CLLM_FREE(c->msgs);
    memset(c, 0, sizeof *c);
}

CLLMDEF cllm_result cllm_conv_copy(cllm_conv *dst, const cllm_conv *src, cllm_err *err) {
    int i;
    cllm_result rc;
    memset(dst, 0, sizeof *dst);
    for (i = 0; i < src->n; i++)
        if ((rc = cllm_conv_push(dst, src->msgs[i].role, src->msgs[i].content, err)) != CLLM_OK) { cllm_conv_free(dst); return rc; }
    return CLLM_OK;
}

CLLMDEF cJSON *cllm_conv_to_json(const cllm_conv *c) {
    cJSON *arr = cJSON_CreateArray();
    int i;
    if (!arr) return NULL;
    for (i = 0; i < c->n; i++) {
        cJSON *m = cJSON_CreateObject();
        if (!m) goto oom;
        if (!cJSON_AddItemToArray(arr, m)) { cJSON_Delete(m); goto oom; }
        if (!cJSON_AddStringToObject(m, "role", c->msgs[i].role) || !cJSON_AddStringToObject(m, "content", c->msgs[i].content)) goto oom;
    }
    return arr;
oom:
    cJSON_Delete(arr);
    return NULL;
}

CLLMDEF cllm_result cllm_conv_from_json(cllm_conv *c, const cJSON *messages, cllm_err *err) {
    const cJSON *m;
    int i = 0;
    cllm_result rc;
    memset(c, 0, sizeof *c);
    if (!cJSON_IsArray(messages)) return cllm__fail(err, CLLM_ERR_FORMAT, "\"messages\" must be an array of {\"role\", \"content\"} objects");
    cJSON_ArrayForEach(m, messages) {
        const char *role = cllm__json_str(m, "role"), *content = cllm__json_str(m, "content");
        if (!cllm__valid_role(role)) { cllm_conv_free(c); return cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"role\" must be \"system\", \"user\" or \"assistant\"", i); }
        if (!content) { cllm_conv_free(c); return cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"content\" must be a string", i); }
        if ((rc = cllm_conv_push(c, role, content, err)) != CLLM_OK) { cllm_conv_free(c); return rc; }
        i++;
    }
    return CLLM_OK;
}

/* Renders a conversation for a prompt, one block per message, system messages left out:
   "**User**: ..." (bold = 1, the simulator's view) or "User: ..." (the judges' view). */
static void cllm__render_conv(cllm__sb *b, const cllm_conv *c, int bold) {
    int i, any = 0;
    for (i = 0; c && i < c->n; i++) {
        const char *r = c->msgs[i].role;
        if (strcmp(r, "system") == 0) continue;
        if (any) cllm__sb_puts(b, "\n\n");
        if (bold) cllm__sb_puts(b, "**");
        cllm__sb_puts(b, strcmp(r, "user") == 0 ? "User" : "Assistant");
        if (bold) cllm__sb_puts(b, "**");
        cllm__sb_puts(b, ": ");
        cllm__sb_puts(b, c->msgs[i].content);
        any = 1;
    }
    if (!any) cllm__sb_puts(b, "(no messages yet)");
}

static char *cllm__conv_text(const cllm_conv *c, int bold) {
    cllm__sb b = { NULL, 0, 0, 0 };
    cllm__render_conv(&b, c, bold);
    return cllm__sb_take(&b);
}

/* ---- lenient JSON -------------------------------------------------------------------------- */

/* Is a quote whose text ends at s[after] the end of a string? In valid JSON a closing quote is
   followed (after white space) by , : } ] or the end, so valid JSON is never changed by this
   test; a quote followed by anything else is taken as a quote inside the text. */
static int cllm__quote_closes(const char *s, size_t len, size_t after) {
    while (after < len && isspace((unsigned char)s[after])) after++;
    return after >= len || strchr(",:}]", s[after]) != NULL;
}

/* Rewrites s[0..len) into strict JSON where models stray from it:
     'single' and """triple""" quoted strings -> "double" (inner " escaped, \' unescaped)
     raw control characters inside strings    -> \n \r \t \u00XX
     a quote inside a string that cannot close it (see cllm__quote_closes) -> \"
     a backslash that starts no JSON escape   -> \\ (kept as a literal backslash)
     True / False / None outside strings      -> true / false / null
     a comma right before } or ]              -> dropped
   Anything else is copied, so strict JSON comes out unchanged. */
static char *cllm__json_repair(const char *s, size_t len) {
    cllm__sb b = { NULL, 0, 0, 0 };
    size_t i = 0;
    while (i < len) {
        char c = s[i];
        if (c == '"' || c == '\'') {
            size_t q = (i + 2 < len && s[i + 1] == c && s[i + 2] == c) ? 3 : 1;   /* """ or ''' */
            i += q;
            cllm__sb_putc(&b, '"');
            while (i < len) {
                char d = s[i];
                if (d == '\\' && i + 1 < len) {
                    char e = s[i + 1];
                    if (e == '\'') { cllm__sb_putc(&b, '\''); i += 2; }
                    else if (strchr("\"\\/bfnrtu", e)) { cllm__sb_putn(&b, s + i, 2); i += 2; }
                    else { cllm__sb_puts(&b, "\\\\"); i += 1; }
                } else if (d == c && (q == 1 ? cllm__quote_closes(s, len, i + 1)
                                             : (i + 2 < len && s[i + 1] == c && s[i + 2] == c))) {
                    i += q;
                    break;
                } else if (d == '"') { cllm__sb_puts(&b, "\\\""); i++; }
                else if ((unsigned char)d < 0x20) {
                    char esc[8];
                    if (d == '\n') strcpy(esc, "\\n");
                    else if (d == '\r') strcpy(esc, "\\r");
                    else if (d == '\t') strcpy(esc, "\\t");
                    else snprintf(esc, sizeof esc, "\\u%04x", (unsigned)(unsigned char)d);
                    cllm__sb_puts(&b, esc);
                    i++;
                } else { cllm__sb_putc(&b, d); i++; }
            }
            cllm__sb_putc(&b, '"');
        } else if (isalpha((unsigned char)c) || c == '_') {
            size_t k = i;
            while (k < len && (isalnum((unsigned char)s[k]) || s[k] == '_')) k++;
            if (k - i == 4 && strncmp(s + i, "True", 4) == 0) cllm__sb_puts(&b, "true");
            else if (k - i == 5 && strncmp(s + i, "False", 5) == 0) cllm__sb_puts(&b, "false");
            else if (k - i == 4 && strncmp(s + i, "None", 4) == 0) cllm__sb_puts(&b, "null");
            else cllm__sb_putn(&b, s + i, k - i);
            i = k;
        } else if (c == ',') {
            size_t k = i + 1;
            while (k < len && isspace((unsigned char)s[k])) k++;
            if (!(k < len && (s[k] == '}' || s[k] == ']'))) cllm__sb_putc(&b, ',');
            i++;
        } else { cllm__sb_putc(&b, c); i++; }
    }
    return cllm__sb_take(&b);
}

/* Parses the first JSON value in s[0..len) (text after it is ignored); NULL unless an object. */
static cJSON *cllm__json_object_at(const char *s, size_t len) {
    cJSON *o = cJSON_ParseWithLengthOpts(s, len, NULL, 0);
    if (o && !cJSON_IsObject(o)) { cJSON_Delete(o); o = NULL; }
    return o;
}

/* The body of the first ```fenced``` block that holds a '{' (language tag skipped); 0 if none. */
static int cllm__json_fence(const char *text, const char **b, const char **e) {
    const char *p = text, *end = text + strlen(text);
    while ((p = strstr(p, "```")) != NULL) {
        const char *body = p + 3, *close;
        while (*body && *body != '\n' && *body != '{') body++;
        close = strstr(body, "```");
        if (!close) close = end;
        if (memchr(body, '{', (size_t)(close - body))) { *b = body; *e = close; return 1; }
        if (close == end) return 0;
        p = close + 3;
    }
    return 0;
}

CLLMDEF cJSON *cllm_json_parse_lenient(const char *text, cllm_err *err) {
    const char *region[2][2];
    int nreg = 1, mode, r;
    if (!text) { cllm__fail(err, CLLM_ERR_ARG, "cllm_json_parse_lenient: no text"); return NULL; }
    region[0][0] = text; region[0][1] = text + strlen(text);
    if (cllm__json_fence(text, &region[1][0], &region[1][1])) nreg = 2;
    /* Strict first (so valid JSON, even with a ``` inside a string, is read as written), then
       repaired; in each mode the whole text, then the fenced block; the object starts at the
       first '{' (or a later one, when prose before it holds braces). cJSON stops at the end of
       the object, so text after it does not matter. */
    for (mode = 0; mode < 2; mode++) {
        for (r = 0; r < nreg; r++) {
            const char *b = region[r][0];
            int tries;
            for (tries = 0; tries < 16; tries++, b++) {
                cJSON *o;
                b = (const char *)memchr(b, '{', (size_t)(region[r][1] - b));
                if (!b) break;
                if (mode == 0) o = cllm__json_object_at(b, (size_t)(region[r][1] - b));
                else {
                    char *fixed = cllm__json_repair(b, (size_t)(region[r][1] - b));
                    if (!fixed) { cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); return NULL; }
                    o = cllm__json_object_at(fixed, strlen(fixed));
                    CLLM_FREE(fixed);
                }
                if (o) { cllm__ok(err); return o; }
            }
        }
    }
    {
        char start[64];
        size_t k, n = strlen(text) < 60 ? strlen(text) : 60;
        for (k = 0; k < n; k++) start[k] = (unsigned char)text[k] < 0x20 ? ' ' : text[k];
        start[n] = 0;
        cllm__fail(err, CLLM_ERR_FORMAT, "no JSON object found in the model's reply (%zu chars, starting \"%s\")", strlen(text), start);
    }
    return NULL;
}

/* A JSON number, a numeric string ("0.8"), a boolean (1/0) or an object {"score": x} as a double. */
static int cllm__json_number(const cJSON *v, double *out) {
    if (cJSON_IsNumber(v)) { *out = v->valuedouble; return 1; }
    if (cJSON_IsBool(v)) { *out = cJSON_IsTrue(v) ? 1.0 : 0.0; return 1; }
    if (cJSON_IsString(v)) {
        char *end;
        double d = strtod(v->valuestring, &end);
        if (end == v->valuestring) return 0;
        while (isspace((unsigned char)*end)) end++;
        if (*end) return 0;
        *out = d;
        return 1;
    }
    if (cJSON_IsObject(v)) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(v, "score");
        return s && !cJSON_IsObject(s) && cllm__json_number(s, out);
    }
    return 0;
}

/* A copy of a string field, or NULL (also when absent). */
static char *cllm__json_strdup(const cJSON *o, const char *key) {
    const char *s = cllm__json_str(o, key);
    return s ? cllm__strdup(s) : NULL;
}

/* ---- the client: configuration, secrets, messages ------------------------------------------ */

/* A copy of s[0..len) with every occurrence of the API key replaced by "[redacted]" and control
   characters turned into spaces: the only way endpoint text reaches an error message. */
static char *cllm__redact(const cllm_client *c, const char *s, size_t len) {
    cllm__sb b = { NULL, 0, 0, 0 };
    size_t i = 0, klen = c->key ? strlen(c->key) : 0;
    while (i < len) {
        if (klen && i + klen <= len && memcmp(s + i, c->key, klen) == 0) { cllm__sb_puts(&b, "[redacted]"); i += klen; continue; }
        cllm__sb_putc(&b, (unsigned char)s[i] < 0x20 ? ' ' : s[i]);
        i++;
    }
    return cllm__sb_take(&b);
}

/* Records a failure in err like cllm__fail, with the key scrubbed from the finished message. */
static cllm_result cllm__fail_redacted(const cllm_client *c, cllm_err *err, cllm_result code, const char *fmt, ...) {
    char buf[2 * CLLM_ERRMSG_SIZE], *clean;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    clean = cllm__redact(c, buf, strlen(buf));
    cllm__fail(err, code, "%s", clean ? clean : "(out of memory while formatting an error)");
    CLLM_FREE(clean);
    return code;
}

/* The endpoint's own explanation from an error body, for the message: error.message (OpenAI,
   vLLM), error as a string (Ollama), detail (FastAPI), message, else the start of the raw body.
   Redacted, single line, at most `cap` bytes. */
static void cllm__endpoint_message(const cllm_client *c, const char *body, size_t len, char *out, size_t cap) {
    cJSON *root = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *e = root ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
    const char *text = NULL;
    char *clean;
    if (cJSON_IsObject(e)) text = cllm__json_str(e, "message");
    else if (cJSON_IsString(e)) text = e->valuestring;
    if (!text && root) text = cllm__json_str(root, "detail");
    if (!text && root) text = cllm__json_str(root, "message");
    clean = text ? cllm__redact(c, text, strlen(text)) : cllm__redact(c, body ? body : "", body ? len : 0);
    if (!text && clean && !*clean) { CLLM_FREE(clean); clean = cllm__strdup("(empty body)"); }
    snprintf(out, cap, "%s", clean ? clean : "");
    if (clean && strlen(clean) >= cap && cap > 4) strcpy(out + cap - 4, "...");
    CLLM_FREE(clean);
    cJSON_Delete(root);
}

CLLMDEF cllm_result cllm_client_init(cllm_client *c, const cllm_client_config *cfg, cllm_err *err) {
    cllm_client_config d;
    const char *key, *env_base = getenv("OPENAI_BASE_URL");
    struct curl_slist *h = NULL, *h2;
    cllm__sb url = { NULL, 0, 0, 0 };
    size_t blen;
    memset(c, 0, sizeof *c);
    if (cfg) d = *cfg; else memset(&d, 0, sizeof d);
    if (!d.base_url || !*d.base_url) d.base_url = env_base && *env_base ? env_base : "https://api.openai.com/v1";
    if (!d.api_key_env || !*d.api_key_env) d.api_key_env = "OPENAI_API_KEY";
    d.connect_timeout_ms = cllm__def(d.connect_timeout_ms, 10000);
    d.timeout_ms         = cllm__def(d.timeout_ms, 300000);
    d.max_retries        = d.max_retries < 0 ? 0 : cllm__def(d.max_retries, 5);
    d.backoff_ms         = cllm__def(d.backoff_ms, 500);
    d.backoff_max_ms     = cllm__def(d.backoff_max_ms, 60000);
    d.max_concurrency    = cllm__def(d.max_concurrency, 16);
    d.max_response_bytes = cllm__def(d.max_response_bytes, 64L << 20);
    if (d.connect_timeout_ms < 0 || d.timeout_ms < 0 || d.backoff_ms < 0 || d.backoff_max_ms < 0 || d.max_concurrency < 0 || d.max_response_bytes < 0)
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_client_config: timeouts, backoff, max_concurrency and max_response_bytes must not be negative");
    if (strncmp(d.base_url, "http://", 7) != 0 && strncmp(d.base_url, "https://", 8) != 0)
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_client_config.base_url must start with http:// or https:// (got \"%.200s\")", d.base_url);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return cllm__fail(err, CLLM_ERR_HTTP, "libcurl failed to initialise");

    blen = strlen(d.base_url);
    while (blen > 0 && d.base_url[blen - 1] == '/') blen--;
    cllm__sb_putn(&url, d.base_url, blen);
    cllm__sb_puts(&url, "/chat/completions");
    c->url = cllm__sb_take(&url);
    c->model = d.model ? cllm__strdup(d.model) : NULL;
    key = getenv(d.api_key_env);
    if (key && *key) c->key = cllm__strdup(key);
    h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h && (h2 = curl_slist_append(h, "Accept: application/json")) != NULL) h = h2; else { curl_slist_free_all(h); h = NULL; }
    if (h && (h2 = curl_slist_append(h, "Expect:")) != NULL) h = h2; else { curl_slist_free_all(h); h = NULL; }  /* no 100-continue round trip */
    if (h && c->key) {
        cllm__sb auth = { NULL, 0, 0, 0 };
        cllm__sb_puts(&auth, "Authorization: Bearer ");
        cllm__sb_puts(&auth, c->key);
        h2 = auth.oom ? NULL : curl_slist_append(h, auth.p);
        if (auth.p) memset(auth.p, 0, auth.n);              /* the key lives only in c->key and the header list */
        cllm__sb_free(&auth);
        if (h2) h = h2; else { curl_slist_free_all(h); h = NULL; }
    }
    c->headers = h;
    c->multi = curl_multi_init();
    d.base_url = NULL;                                      /* borrowed strings are not kept */
    d.model = c->model;
    d.api_key_env = NULL;
    c->cfg = d;
    cllm_rng_seed(&c->rng, d.seed ? d.seed : (uint64_t)time(NULL) ^ (uint64_t)(size_t)c);
    if (!c->url || (d.model && !c->model) || (key && *key && !c->key) || !c->headers || !c->multi) {
        int global_released = c->url || c->multi;          /* cllm_client_free releases curl then */
        cllm_client_free(c);
        if (!global_released) curl_global_cleanup();
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory creating the client");
    }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF void cllm_client_free(cllm_client *c) {
    if (!c) return;
    if (c->multi) curl_multi_cleanup((CURLM *)c->multi);
    if (c->headers) curl_slist_free_all((struct curl_slist *)c->headers);
    if (c->key) memset(c->key, 0, strlen(c->key));
    CLLM_FREE(c->key);
    CLLM_FREE(c->url);
    CLLM_FREE(c->model);
    if (c->url || c->multi) curl_global_cleanup();
    memset(c, 0, sizeof *c);
}

CLLMDEF void cllm_chat_result_free(cllm_chat_result *r) {
    if (!r) return;
    CLLM_FREE(r->content);
    memset(r, 0, sizeof *r);
}

/* The request body: model, messages, and the sampling fields the request sets. */
static char *cllm__request_json(const cllm_client *c, const cllm_chat_request *r, cllm_err *err) {
    const char *model = r->params.model ? r->params.model : c->model;
    cJSON *root, *msgs;
    char *out;
    int i;
    if (!model) { cllm__fail(err, CLLM_ERR_ARG, "no model: set cllm_client_config.model or the request's params.model"); return NULL; }
    if (!r->messages || r->n_messages <= 0) { cllm__fail(err, CLLM_ERR_ARG, "the request has no messages"); return NULL; }
    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", model);
    msgs = cJSON_AddArrayToObject(root, "messages");
    for (i = 0; i < r->n_messages; i++) {
        cJSON *m = cJSON_CreateObject();
        if (!r->messages[i].role || !r->messages[i].content) {
            cJSON_Delete(m); cJSON_Delete(root);
            cllm__fail(err, CLLM_ERR_ARG, "request message %d has no role or content", i);
            return NULL;
        }
        cJSON_AddStringToObject(m, "role", r->messages[i].role);
        cJSON_AddStringToObject(m, "content", r->messages[i].content);
        cJSON_AddItemToArray(msgs, m);
    }
    if (r->params.temperature != 0) cJSON_AddNumberToObject(root, "temperature", r->params.temperature < 0 ? 0.0 : r->params.temperature);
    if (r->params.top_p != 0) cJSON_AddNumberToObject(root, "top_p", r->params.top_p);
    if (r->params.max_tokens > 0) cJSON_AddNumberToObject(root, "max_tokens", r->params.max_tokens);
    if (r->params.seed != 0) cJSON_AddNumberToObject(root, "seed", (double)r->params.seed);
    if (r->response_format) {
        cJSON *rf;
        if (r->response_format[0] == '{') rf = cJSON_Parse(r->response_format);
        else { rf = cJSON_CreateObject(); cJSON_AddStringToObject(rf, "type", r->response_format); }
        if (!cJSON_IsObject(rf)) {
            cJSON_Delete(rf); cJSON_Delete(root);
            cllm__fail(err, CLLM_ERR_ARG, "response_format must be a type name or a JSON object");
            return NULL;
        }
        cJSON_AddItemToObject(root, "response_format", rf);
    }
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!out) cllm__fail(err, CLLM_ERR_NOMEM, "out of memory building the request");
    return out;
}

/* Does s[0..len) stop inside an unclosed string, object or array (a truncated document)? */
static int cllm__json_cut_short(const char *s, size_t len) {
    size_t i;
    int depth = 0, in_str = 0;
    for (i = 0; i < len; i++) {
        char ch = s[i];
        if (in_str) { if (ch == '\\') i++; else if (ch == '"') in_str = 0; }
        else if (ch == '"') in_str = 1;
        else if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') depth--;
    }
    return in_str || depth > 0;
}

/* Reads a 2xx body into r: choices[0].message.content, finish_reason, usage. */
static cllm_result cllm__parse_completion(cllm_client *c, const char *body, size_t len, cllm_chat_result *r) {
    cJSON *root = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *choice, *msg, *content, *usage, *e;
    const char *fr;
    char snippet[200];
    cllm_result rc = CLLM_OK;
    if (!root) {
        cllm__endpoint_message(c, body, len, snippet, 80);
        if (len == 0) return cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: empty response body", c->url);
        if (cllm__json_cut_short(body, len))
            return cllm__fail_redacted(c, &r->err, CLLM_ERR_FORMAT, "%s: response JSON is truncated (%zu bytes end inside an unclosed object or string; starts \"%s\")", c->url, len, snippet);
        return cllm__fail_redacted(c, &r->err, CLLM_ERR_FORMAT, "%s: response is not valid JSON (%zu bytes, starts \"%s\")", c->url, len, snippet);
    }
    e = cJSON_GetObjectItemCaseSensitive(root, "error");
    choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0);
    msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (e && !cJSON_IsNull(e)) {
        cllm__endpoint_message(c, body, len, snippet, sizeof snippet);
        rc = cllm__fail_redacted(c, &r->err, CLLM_ERR_HTTP, "%s: the endpoint returned an error: %s", c->url, snippet);
    } else if (!cJSON_IsObject(choice))
        rc = cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: response has no \"choices\"[0] object (not an OpenAI chat completion?)", c->url);
    else if (!cJSON_IsObject(msg))
        rc = cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: response has no choices[0].message object", c->url);
    else if (!cJSON_IsString(content))
        rc = cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: choices[0].message.content is %s, not a string", c->url, content ? "of the wrong type" : "missing");
    else if (!(r->content = cllm__strdup(content->valuestring)))
        rc = cllm__fail(&r->err, CLLM_ERR_NOMEM, "out of memory");
    if (rc == CLLM_OK) {
        if ((fr = cllm__json_str(choice, "finish_reason")) != NULL) snprintf(r->finish_reason, sizeof r->finish_reason, "%s", fr);
        usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
        if (!cllm__json_int(usage, "prompt_tokens", -1, &r->prompt_tokens)) r->prompt_tokens = -1;
        if (!cllm__json_int(usage, "completion_tokens", -1, &r->completion_tokens)) r->completion_tokens = -1;
        if (!cllm__json_int(usage, "total_tokens", -1, &r->total_tokens)) r->total_tokens = -1;
        if (r->prompt_tokens > 0) c->usage.prompt_tokens += r->prompt_tokens;
        if (r->completion_tokens > 0) c->usage.completion_tokens += r->completion_tokens;
        if (r->total_tokens > 0) c->usage.total_tokens += r->total_tokens;
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- the client: transfers, retries, concurrency ------------------------------------------- */
/* Each request is a small state machine driven by one curl multi handle:
     WAITING --(due and a slot is free)--> RUNNING --(done)--> DONE
                 ^                                   |
                 +----(retryable failure, wait)------+
   The loop starts what may start, lets curl move bytes, collects finished transfers, then
   sleeps until a socket is ready, a curl timer fires or the next retry is due. */

enum { CLLM__WAITING = 0, CLLM__RUNNING, CLLM__DONE };

typedef struct cllm__xfer {
    cllm_chat_result *res;
    char             *body;           /* request JSON, built once, sent on every attempt      */
    CURL             *easy;           /* the running attempt                                  */
    cllm__sb          resp;           /* response body of the running attempt                 */
    long              limit;          /* max_response_bytes                                   */
    int               too_big;
    int               state;
    double            not_before;     /* when the next attempt may start (cllm__now seconds)  */
    double            t_first;        /* start of the first attempt                           */
    char              errbuf[CURL_ERROR_SIZE];
} cllm__xfer;

static size_t cllm__on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
    cllm__xfer *x = (cllm__xfer *)userdata;
    size_t len = size * nmemb;
    if (x->resp.n + len > (size_t)x->limit) { x->too_big = 1; return 0; }   /* curl aborts the transfer */
    cllm__sb_putn(&x->resp, ptr, len);
    return x->resp.oom ? 0 : len;
}

static cllm_result cllm__xfer_start(cllm_client *c, cllm__xfer *x) {
    CURL *e = curl_easy_init();
    if (!e) return cllm__fail(&x->res->err, CLLM_ERR_NOMEM, "libcurl could not create a transfer");
    x->resp.n = 0;
    if (x->resp.p) x->resp.p[0] = 0;
    x->too_big = 0;
    x->errbuf[0] = 0;
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(x->body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, (struct curl_slist *)c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, cllm__on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->cfg.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c->cfg.insecure ? 0L : 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->cfg.insecure ? 0L : 2L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "collabllm.h");
    if (curl_multi_add_handle((CURLM *)c->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        return cllm__fail(&x->res->err, CLLM_ERR_HTTP, "libcurl could not start a transfer");
    }
    x->easy = e;
    x->res->attempts++;
    c->usage.attempts++;
    return CLLM_OK;
}

/* Transport failures worth another attempt: the endpoint or the network may recover. */
static int cllm__curl_retryable(CURLcode cc) {
    return cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_COULDNT_CONNECT || cc == CURLE_PARTIAL_FILE ||
           cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR || cc == CURLE_GOT_NOTHING ||
           cc == CURLE_HTTP2 || cc == CURLE_HTTP2_STREAM;
}

/* The wait before retry number `retry` (1-based): d = min(backoff_max, backoff * 2^(retry-1)),
   drawn from [d/2, d] ("equal jitter": spreads clients apart, never near zero). Retry-After asks
   for at least its value. No wait exceeds backoff_max_ms. */
static double cllm__retry_wait(cllm_client *c, int retry, double retry_after_s) {
    double cap = (double)c->cfg.backoff_max_ms / 1000.0;
    double d = (double)c->cfg.backoff_ms / 1000.0 * pow(2.0, (double)(retry - 1));
    if (d > cap) d = cap;
    d = 0.5 * d + 0.5 * d * cllm_rng_uniform(&c->rng);
    if (retry_after_s > d) d = retry_after_s;
    return d > cap ? cap : d;
}

static const char *cllm__status_hint(const cllm_client *c, long status) {
    if (status == 401 || status == 403) return c->key ? " (check the API key and the endpoint)" : " (no API key was sent: its environment variable is unset or empty)";
    if (status == 404) return " (check base_url, which usually ends in /v1, and the model name)";
    return "";
}

/* An attempt ended with curl code cc: classify it, then retry, or finish the request. */
static void cllm__xfer_finish(cllm_client *c, cllm__xfer *x, CURLcode cc) {
    long status = 0;
    curl_off_t retry_after = 0;
    char why[CLLM_ERRMSG_SIZE];
    cllm_result code = CLLM_ERR_HTTP;
    int retryable = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &retry_after);
    curl_multi_remove_handle((CURLM *)c->multi, x->easy);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
    x->res->http_status = status;
    why[0] = 0;
    if (cc != CURLE_OK) {
        if (x->too_big) {
            code = CLLM_ERR_LIMIT;
            snprintf(why, sizeof why, "response larger than max_response_bytes (%ld)", x->limit);
        } else if (x->resp.oom) {
            code = CLLM_ERR_NOMEM;
            snprintf(why, sizeof why, "out of memory receiving the response");
        } else {
            retryable = cllm__curl_retryable(cc);
            if (cc == CURLE_PARTIAL_FILE)
                snprintf(why, sizeof why, "the connection closed before the whole response arrived (truncated body, %zu bytes)", x->resp.n);
            else if (cc == CURLE_OPERATION_TIMEDOUT)
                snprintf(why, sizeof why, "timed out (%s; limits: connect_timeout_ms %ld, timeout_ms %ld)", x->errbuf[0] ? x->errbuf : "no answer", c->cfg.connect_timeout_ms, c->cfg.timeout_ms);
            else
                snprintf(why, sizeof why, "%s (%s)", curl_easy_strerror(cc), x->errbuf);
        }
    } else if (status >= 200 && status < 300) {
        code = cllm__parse_completion(c, x->resp.p, x->resp.n, x->res);
        if (code == CLLM_OK) c->usage.requests++;
    } else {
        char said[300];
        retryable = status == 408 || status == 429 || status >= 500;
        cllm__endpoint_message(c, x->resp.p, x->resp.n, said, sizeof said);
        snprintf(why, sizeof why, "HTTP %ld: %s%s", status, said, cllm__status_hint(c, status));
    }
    if (retryable && x->res->attempts <= c->cfg.max_retries) {
        x->state = CLLM__WAITING;
        x->not_before = cllm__now() + cllm__retry_wait(c, x->res->attempts, (double)retry_after);
        return;
    }
    x->state = CLLM__DONE;
    x->res->seconds = cllm__now() - x->t_first;
    if (why[0]) {
        if (x->res->attempts > 1) cllm__fail_redacted(c, &x->res->err, code, "%s: %s (gave up after %d attempts)", c->url, why, x->res->attempts);
        else cllm__fail_redacted(c, &x->res->err, code, "%s: %s", c->url, why);
    }
    x->res->code = code;
    if (code != CLLM_OK) c->usage.failures++;
}

CLLMDEF cllm_result cllm_client_chat_batch(cllm_client *c, const cllm_chat_request *requests, int n,
                                           cllm_chat_result *results, cllm_err *err) {
    cllm__xfer *xs;
    int i, running = 0, remaining = 0, limit;
    if (!c || !c->multi || n < 0 || (n > 0 && (!requests || !results)))
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_client_chat_batch: needs an initialised client and n >= 0 requests and results");
    if (n == 0) { cllm__ok(err); return CLLM_OK; }
    xs = (cllm__xfer *)cllm__calloc((size_t)n, sizeof *xs);
    if (!xs) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    limit = c->cfg.max_concurrency;
    for (i = 0; i < n; i++) {
        cllm__xfer *x = &xs[i];
        memset(&results[i], 0, sizeof results[i]);
        results[i].prompt_tokens = results[i].completion_tokens = results[i].total_tokens = -1;
        x->res = &results[i];
        x->limit = c->cfg.max_response_bytes;
        x->body = cllm__request_json(c, &requests[i], &results[i].err);
        if (!x->body) { x->state = CLLM__DONE; results[i].code = results[i].err.code; continue; }
        x->state = CLLM__WAITING;
        remaining++;
    }
    while (remaining > 0) {
        double now = cllm__now(), wait_s = 1.0;
        CURLMsg *msg;
        int still, queued;
        /* start every request that is due, while slots are free */
        for (i = 0; i < n && running < limit; i++) {
            cllm__xfer *x = &xs[i];
            if (x->state != CLLM__WAITING || x->not_before > now) continue;
            if (x->res->attempts == 0) x->t_first = now;
            if (cllm__xfer_start(c, x) == CLLM_OK) { x->state = CLLM__RUNNING; running++; }
            else { x->state = CLLM__DONE; x->res->code = x->res->err.code; c->usage.failures++; remaining--; }
        }
        curl_multi_perform((CURLM *)c->multi, &still);
        while ((msg = curl_multi_info_read((CURLM *)c->multi, &queued)) != NULL) {
            char *priv = NULL;
            CURLcode cc;
            if (msg->msg != CURLMSG_DONE) continue;
            cc = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            running--;
            cllm__xfer_finish(c, (cllm__xfer *)(void *)priv, cc);      /* msg is invalid after this */
            if (((cllm__xfer *)(void *)priv)->state == CLLM__DONE) remaining--;
        }
        if (remaining == 0) break;
        /* sleep until a socket is ready or curl's timer fires (curl shortens wait_s itself),
           or the next retry is due when a slot is free for it */
        if (running < limit)
            for (i = 0; i < n; i++)
                if (xs[i].state == CLLM__WAITING && xs[i].not_before - now < wait_s) wait_s = xs[i].not_before - now;
        if (wait_s > 0) curl_multi_poll((CURLM *)c->multi, NULL, 0, (int)(wait_s * 1000.0) + 1, NULL);
    }
    for (i = 0; i < n; i++) { cJSON_free(xs[i].body); cllm__sb_free(&xs[i].resp); }
    CLLM_FREE(xs);
    return CLLM__BATCH_RESULT(results, n, "requests", err);
}

CLLMDEF cllm_result cllm_client_chat(cllm_client *c, const cllm_chat_request *request, cllm_chat_result *result, cllm_err *err) {
    return cllm_client_chat_batch(c, request, 1, result, err);
}

/* ---- asking many prompts at once, re-asking unusable answers ------------------------------- */

/* take(ctx, i, res, last) records the answer to prompt i (res may be a failed call) in the
   caller's own result and returns 1, or returns 0 to draw a new sample (never when `last`). */
typedef int (*cllm__take_fn)(void *ctx, int i, const cllm_chat_result *res, int last);

/* Sends prompts[i] (one user message each; NULL entries are skipped) through the client, all
   concurrently, and hands each answer to take(). The ones it refuses are asked again together,
   for up to `retries` more rounds. Failed calls are final: the client already retried them. */
static cllm_result cllm__ask_all(cllm_client *c, char *const *prompts, int n, const cllm_llm_params *params,
                                 int json_mode, int retries, cllm__take_fn take, void *ctx) {
    int *pending = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    cllm_message *msgs = (cllm_message *)cllm__calloc((size_t)n + 1, sizeof *msgs);
    cllm_chat_request *reqs = (cllm_chat_request *)cllm__calloc((size_t)n + 1, sizeof *reqs);
    cllm_chat_result *res = (cllm_chat_result *)cllm__calloc((size_t)n + 1, sizeof *res);
    int i, k, np = 0, round;
    cllm_result rc = CLLM_OK;
    if (!pending || !msgs || !reqs || !res) rc = CLLM_ERR_NOMEM;
    for (i = 0; rc == CLLM_OK && i < n; i++) if (prompts[i]) pending[np++] = i;
    for (round = 0; rc == CLLM_OK && np > 0 && round <= retries; round++) {
        int keep = 0;
        for (k = 0; k < np; k++) {
            msgs[k].role = "user";
            msgs[k].content = prompts[pending[k]];
            memset(&reqs[k], 0, sizeof reqs[k]);
            reqs[k].messages = &msgs[k];
            reqs[k].n_messages = 1;
            reqs[k].params = *params;
            reqs[k].response_format = json_mode ? "json_object" : NULL;
        }
        cllm_client_chat_batch(c, reqs, np, res, NULL);
        for (k = 0; k < np; k++) {
            if (!take(ctx, pending[k], &res[k], round == retries)) pending[keep++] = pending[k];
            cllm_chat_result_free(&res[k]);
        }
        np = keep;
    }
    CLLM_FREE(pending); CLLM_FREE(msgs); CLLM_FREE(reqs); CLLM_FREE(res);
    return rc;
}

/* Fills a sampling-parameter default: zero fields take the role's defaults. */
static cllm_llm_params cllm__params_def(cllm_llm_params p, double temperature, int max_tokens) {
    p.temperature = cllm__def(p.temperature, temperature);
    p.max_tokens = cllm__def(p.max_tokens, max_tokens);
    return p;
}

/* A retry budget: zero means the default 3, negative none. */
static int cllm__retries_def(int r) { return r < 0 ? 0 : cllm__def(r, 3); }

/* ---- replies, and calling simulators and assistants ---------------------------------------- */

CLLMDEF void cllm_reply_free(cllm_reply *r) {
    if (!r) return;
    CLLM_FREE(r->text); CLLM_FREE(r->thought); CLLM_FREE(r->current_answer);
    memset(r, 0, sizeof *r);
}

CLLMDEF cllm_result cllm_reply_set(cllm_reply *out, const char *text, int terminated) {
    CLLM_FREE(out->text);
    out->text = text ? cllm__strdup(text) : NULL;
    out->terminated = terminated;
    if (!text) return out->code = cllm__fail(&out->err, CLLM_ERR_ARG, "cllm_reply_set: no text");
    if (!out->text) return out->code = cllm__fail(&out->err, CLLM_ERR_NOMEM, "out of memory");
    cllm__ok(&out->err);
    return out->code = CLLM_OK;
}

/* After a simulator or assistant ran: a success must carry text, a failure a message. */
static cllm_result cllm__replies_check(cllm_reply *out, int n, const char *who, cllm_err *err) {
    int i;
    for (i = 0; i < n; i++) {
        if (out[i].code == CLLM_OK && !out[i].text) cllm__fail(&out[i].err, out[i].code = CLLM_ERR_FORMAT, "%s returned no text", who);
        if (out[i].code != CLLM_OK && !out[i].err.msg[0]) cllm__fail(&out[i].err, out[i].code, "%s failed (%s)", who, cllm_result_string(out[i].code));
    }
    return CLLM__BATCH_RESULT(out, n, "replies", err);
}

CLLMDEF cllm_result cllm_user_sim_turns(const cllm_user_sim *sim, const cllm_goal *goals, const cllm_conv *histories,
                                        int n, cllm_reply *out, cllm_err *err) {
    int i;
    if (!sim || (!sim->turn && !sim->turn_batch) || n < 0 || (n > 0 && (!goals || !histories || !out)))
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_user_sim_turns: needs a simulator with turn or turn_batch, goals, histories and out");
    if (n == 0) { cllm__ok(err); return CLLM_OK; }
    for (i = 0; i < n; i++) memset(&out[i], 0, sizeof out[i]);
    if (sim->turn_batch) sim->turn_batch(sim->ctx, goals, histories, n, out);
    else for (i = 0; i < n; i++) out[i].code = sim->turn(sim->ctx, &goals[i], &histories[i], &out[i]);
    return cllm__replies_check(out, n, "the user simulator", err);
}

CLLMDEF cllm_result cllm_assistant_replies(const cllm_assistant *a, const cllm_conv *histories, int n, cllm_reply *out, cllm_err *err) {
    int i;
    if (!a || (!a->respond && !a->respond_batch) || n < 0 || (n > 0 && (!histories || !out)))
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_assistant_replies: needs an assistant with respond or respond_batch, histories and out");
    if (n == 0) { cllm__ok(err); return CLLM_OK; }
    for (i = 0; i < n; i++) memset(&out[i], 0, sizeof out[i]);
    if (a->respond_batch) a->respond_batch(a->ctx, histories, n, out);
    else for (i = 0; i < n; i++) out[i].code = a->respond(a->ctx, &histories[i], &out[i]);
    return cllm__replies_check(out, n, "the assistant", err);
}

/* ---- (a) the LLM user simulator ------------------------------------------------------------ */

/* The project's own wording of CollabLLM's simulator instructions (paper App. D.1): role-play a
   user who knows a hidden goal, spend little effort, let the assistant ask, end with a signal. */
static const char cllm__prompt_user_sim[] =
    "You are role-playing a human user who is working with an AI assistant to get something done. "
    "Everything between the START and END markers below is private to you: the assistant has never seen it.\n"
    "\n"
    "=== TASK TYPE START (private) ===\n{{task_desc}}\n=== TASK TYPE END ===\n"
    "\n"
    "=== YOUR GOAL START (private) ===\n{{goal}}\n=== YOUR GOAL END ===\n"
    "\n"
    "=== CONVERSATION SO FAR START (private) ===\n{{history}}\n=== CONVERSATION SO FAR END ===\n"
    "\n"
    "How to play the user:\n"
    "- Stay in character. You are the person who needs help: do not solve the task yourself and do not act like an assistant.\n"
    "- Put in as little effort as a busy person would. Early on, ask loosely and leave details out; let the assistant find out what it needs by asking you.\n"
    "- Know only what such a user would plausibly know about the subject, and now and then be imprecise or slightly wrong.\n"
    "- Have tastes and say them when they matter, for instance that you want a short answer or a particular style.\n"
    "- Keep working toward your goal and do not drift to other topics.\n"
    "- Reply to what the assistant said last, in the light of the conversation so far. If there are no messages yet, write your opening request.\n"
    "- Reveal your goal bit by bit and in your own words; never paste it.\n"
    "- When you are satisfied, or when it is clear the assistant cannot help any further, your response must be exactly {{termination}}\n"
    "\n"
    "Reply with one JSON object and nothing else:\n"
    "{\n"
    "  \"current_answer\": \"one or two sentences on the assistant's current solution, or 'none yet'\",\n"
    "  \"thought\": \"your private reasoning about what to say next\",\n"
    "  \"response\": \"the message you send to the assistant, or {{termination}}\"\n"
    "}\n";

CLLMDEF cllm_result cllm_user_sim_prompt(const cllm_llm_sim_config *cfg, const cllm_goal *goal, const cllm_conv *history,
                                         char **out, cllm_err *err) {
    static const char *names[] = { "task_desc", "goal", "history", "termination" };
    const char *values[4];
    cllm__sb g = { NULL, 0, 0, 0 };
    char *hist, *goal_text;
    *out = NULL;
    if (!goal || !goal->prompt) return cllm__fail(err, CLLM_ERR_ARG, "the simulator needs a goal with a prompt (single_turn_prompt)");
    cllm__sb_puts(&g, goal->prompt);
    if (goal->reference) {
        cllm__sb_puts(&g, "\n\nA reference result that would satisfy you (also private):\n");
        cllm__sb_puts(&g, goal->reference);
    }
    goal_text = cllm__sb_take(&g);
    hist = cllm__conv_text(history, 1);
    values[0] = goal->task_desc ? goal->task_desc : "a task";
    values[1] = goal_text;
    values[2] = hist;
    values[3] = cfg && cfg->termination ? cfg->termination : CLLM_TERMINATION_SIGNAL;
    if (goal_text && hist) *out = cllm__fill(cfg && cfg->prompt ? cfg->prompt : cllm__prompt_user_sim, names, values, 4);
    CLLM_FREE(goal_text); CLLM_FREE(hist);
    if (!*out) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory building the simulator prompt");
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_user_sim_parse(const char *model_output, const char *termination, cllm_reply *out) {
    cJSON *o;
    const char *resp;
    cllm_reply_free(out);
    if (!termination) termination = CLLM_TERMINATION_SIGNAL;
    if (!model_output) return out->code = cllm__fail(&out->err, CLLM_ERR_ARG, "cllm_user_sim_parse: no text");
    o = cllm_json_parse_lenient(model_output, &out->err);
    if (!o) {
        /* a bare termination signal is an unambiguous answer even without the JSON around it */
        char *t = cllm__strdup_trim(model_output);
        int bare = t && strcmp(t, termination) == 0;
        CLLM_FREE(t);
        if (bare) return cllm_reply_set(out, termination, 1);
        return out->code = out->err.code;
    }
    resp = cllm__json_str(o, "response");
    if (resp) out->text = cllm__strdup_trim(resp);
    if (!resp || (out->text && !*out->text)) {
        cllm_reply_free(out);
        cllm__fail(&out->err, CLLM_ERR_FORMAT, "the simulator's JSON has no non-empty string \"response\"");
    } else if (!out->text) cllm__fail(&out->err, CLLM_ERR_NOMEM, "out of memory");
    else {
        out->terminated = strstr(out->text, termination) != NULL;
        out->thought = cllm__json_strdup(o, "thought");
        out->current_answer = cllm__json_strdup(o, "current_answer");
        cllm__ok(&out->err);
    }
    cJSON_Delete(o);
    return out->code = out->err.code;
}

typedef struct cllm__sim_job { cllm_llm_sim *sim; cllm_reply *out; } cllm__sim_job;

static int cllm__sim_take(void *ctx, int i, const cllm_chat_result *res, int last) {
    cllm__sim_job *job = (cllm__sim_job *)ctx;
    cllm_reply *r = &job->out[i];
    if (res->code != CLLM_OK) { cllm_reply_free(r); r->code = res->code; r->err = res->err; return 1; }
    cllm_user_sim_parse(res->content, job->sim->cfg.termination, r);
    return r->code == CLLM_OK || last;
}

static cllm_result cllm__llm_sim_batch(void *ctx, const cllm_goal *goals, const cllm_conv *histories, int n, cllm_reply *out) {
    cllm_llm_sim *s = (cllm_llm_sim *)ctx;
    char **prompts = (char **)cllm__calloc((size_t)n + 1, sizeof(char *));
    cllm__sim_job job;
    int i;
    for (i = 0; i < n; i++) cllm__fail(&out[i].err, out[i].code = CLLM_ERR_NOMEM, "out of memory before the simulator was asked");
    if (!prompts) return CLLM_ERR_NOMEM;
    for (i = 0; i < n; i++)
        if (cllm_user_sim_prompt(&s->cfg, &goals[i], &histories[i], &prompts[i], &out[i].err) != CLLM_OK) out[i].code = out[i].err.code;
    job.sim = s;
    job.out = out;
    cllm__ask_all(s->client, prompts, n, &s->cfg.params, s->cfg.json_mode, s->cfg.max_parse_retries, cllm__sim_take, &job);
    for (i = 0; i < n; i++) CLLM_FREE(prompts[i]);
    CLLM_FREE(prompts);
    return CLLM_OK;
}

static cllm_result cllm__llm_sim_turn(void *ctx, const cllm_goal *goal, const cllm_conv *history, cllm_reply *out) {
    cllm__llm_sim_batch(ctx, goal, history, 1, out);
    return out->code;
}

CLLMDEF void cllm_llm_sim_init(cllm_llm_sim *s, cllm_client *client, const cllm_llm_sim_config *cfg) {
    memset(s, 0, sizeof *s);
    if (cfg) s->cfg = *cfg;
    s->cfg.params = cllm__params_def(s->cfg.params, 1.0, 1024);
    s->cfg.termination = cllm__def(s->cfg.termination, CLLM_TERMINATION_SIGNAL);
    s->cfg.max_parse_retries = cllm__retries_def(s->cfg.max_parse_retries);
    s->client = client;
    s->sim.turn = cllm__llm_sim_turn;
    s->sim.turn_batch = cllm__llm_sim_batch;
    s->sim.ctx = s;
}

/* ---- an assistant behind the client -------------------------------------------------------- */

static cllm_result cllm__api_assistant_batch(void *ctx, const cllm_conv *histories, int n, cllm_reply *out) {
    cllm_api_assistant *a = (cllm_api_assistant *)ctx;
    cllm_chat_request *reqs = (cllm_chat_request *)cllm__calloc((size_t)n + 1, sizeof *reqs);
    cllm_chat_result *res = (cllm_chat_result *)cllm__calloc((size_t)n + 1, sizeof *res);
    cllm_message **msgs = (cllm_message **)cllm__calloc((size_t)n + 1, sizeof *msgs);
    int i, j, sys = a->cfg.system_prompt != NULL, ok = reqs && res && msgs;
    for (i = 0; ok && i < n; i++) {
        /* the system prompt goes first in the request only; the conversation never stores it */
        if (!(msgs[i] = (cllm_message *)cllm__calloc((size_t)histories[i].n + 1, sizeof(cllm_message)))) { ok = 0; break; }
        if (sys) { msgs[i][0].role = "system"; msgs[i][0].content = a->cfg.system_prompt; }
        for (j = 0; j < histories[i].n; j++) msgs[i][sys + j] = histories[i].msgs[j];
        reqs[i].messages = msgs[i];
        reqs[i].n_messages = sys + histories[i].n;
        reqs[i].params = a->cfg.params;
    }
    if (ok) cllm_client_chat_batch(a->client, reqs, n, res, NULL);
    for (i = 0; i < n; i++) {
        if (!ok) cllm__fail(&out[i].err, out[i].code = CLLM_ERR_NOMEM, "out of memory before the assistant was asked");
        else if (res[i].code != CLLM_OK) { out[i].code = res[i].code; out[i].err = res[i].err; }
        else { out[i].text = res[i].content; res[i].content = NULL; out[i].code = CLLM_OK; }
        if (res) cllm_chat_result_free(&res[i]);
        if (msgs) CLLM_FREE(msgs[i]);
    }
    CLLM_FREE(reqs); CLLM_FREE(res); CLLM_FREE(msgs);
    return CLLM_OK;
}

static cllm_result cllm__api_assistant_respond(void *ctx, const cllm_conv *history, cllm_reply *out) {
    cllm__api_assistant_batch(ctx, history, 1, out);
    return out->code;
}

CLLMDEF void cllm_api_assistant_init(cllm_api_assistant *a, cllm_client *client, const cllm_api_assistant_config *cfg) {
    memset(a, 0, sizeof *a);
    if (cfg) a->cfg = *cfg;
    a->cfg.params = cllm__params_def(a->cfg.params, 0.8, 2048);
    a->client = client;
    a->assistant.respond = cllm__api_assistant_respond;
    a->assistant.respond_batch = cllm__api_assistant_batch;
    a->assistant.ctx = a;
}

/* ---- conversations in lockstep ------------------------------------------------------------- */

/* The user speaks next unless the last message is the user's. */
static int cllm__user_next(const cllm_conv *c) {
    return c->n == 0 || strcmp(c->msgs[c->n - 1].role, "user") != 0;
}

CLLMDEF cllm_result cllm_simulate(const cllm_user_sim *user, const cllm_assistant *assistant, const cllm_goal *goals,
                                  cllm_conv *convs, int n, int max_new_messages, cllm_sim_status *status, cllm_err *err) {
    cllm_sim_status *st = status ? status : (cllm_sim_status *)cllm__calloc((size_t)n + 1, sizeof *st);
    int *idx = (int *)cllm__calloc((size_t)n + 1, sizeof(int)), *active = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    cllm_conv *view = (cllm_conv *)cllm__calloc((size_t)n + 1, sizeof *view);
    cllm_goal *g = (cllm_goal *)cllm__calloc((size_t)n + 1, sizeof *g);
    cllm_reply *rep = (cllm_reply *)cllm__calloc((size_t)n + 1, sizeof *rep);
    cllm_result rc = CLLM_OK;
    int i, k, m, users, left;
    if (!user || !assistant || n < 0 || (n > 0 && (!goals || !convs))) rc = cllm__fail(err, CLLM_ERR_ARG, "cllm_simulate: needs a user simulator, an assistant, goals and conversations");
    else if (!st || !idx || !active || !view || !g || !rep) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; rc == CLLM_OK && i < n; i++) { memset(&st[i], 0, sizeof st[i]); active[i] = max_new_messages > 0; }
    left = rc == CLLM_OK && max_new_messages > 0 ? n : 0;
    while (left > 0) {
        /* one round: every conversation waiting for its user speaks, then every one waiting
           for its assistant (including those whose user just spoke) */
        for (users = 1; users >= 0; users--) {
            for (i = 0, m = 0; i < n; i++)
                if (active[i] && cllm__user_next(&convs[i]) == users) { idx[m] = i; view[m] = convs[i]; g[m] = goals[i]; m++; }
            if (m == 0) continue;
            if (users) cllm_user_sim_turns(user, g, view, m, rep, NULL);
            else cllm_assistant_replies(assistant, view, m, rep, NULL);
            for (k = 0; k < m; k++) {
                i = idx[k];
                if (rep[k].code != CLLM_OK) { st[i].code = rep[k].code; st[i].err = rep[k].err; }
                else if (cllm_conv_push(&convs[i], users ? "user" : "assistant", rep[k].text, &st[i].err) != CLLM_OK) st[i].code = st[i].err.code;
                else {
                    st[i].n_new++;
                    if (users && rep[k].terminated) st[i].terminated = 1;
                }
                if (st[i].code != CLLM_OK || st[i].terminated || st[i].n_new >= max_new_messages) { active[i] = 0; left--; }
                cllm_reply_free(&rep[k]);
            }
        }
    }
    if (rc == CLLM_OK) rc = CLLM__BATCH_RESULT(st, n, "conversations", err);
    if (st != status) CLLM_FREE(st);
    CLLM_FREE(idx); CLLM_FREE(active); CLLM_FREE(view); CLLM_FREE(g); CLLM_FREE(rep);
    return rc;
}

/* ---- LLM judges ---------------------------------------------------------------------------- */

/* The project's own wording of CollabLLM's judges (paper App. D.4; v2 metrics): interactivity on
   [0, 1] with three illustrated anchors, accuracy as 0/1 against a ground truth, and extraction
   of the final artifact with all revisions applied. */
static const char cllm__prompt_interactivity[] =
    "You are reviewing a conversation between a user and an AI assistant. Judge how interactive the assistant was: "
    "did it engage with the user, keep its replies clear, work to understand what the user actually needed, and ask "
    "relevant questions when the request was unclear or left important choices open?\n"
    "\n"
    "=== CONVERSATION START ===\n{{conversation}}\n=== CONVERSATION END ===\n"
    "\n"
    "Score it from 0 to 1:\n"
    "- 1, highly interactive: the assistant checks its understanding and asks pointed questions at the right moments. "
    "Example: before drafting a cover letter it asks which job and which strengths to stress, then builds on the answers.\n"
    "- 0.5, moderately interactive: the assistant engages but misses chances. "
    "Example: it asks one generic question, or makes an assumption it should have checked, and otherwise just delivers.\n"
    "- 0, not interactive: the assistant answers mechanically. "
    "Example: it writes a long answer to a vague request without asking anything or acknowledging what was unclear.\n"
    "Scores between the anchors are allowed.\n"
    "\n"
    "Reply with one JSON object and nothing else:\n"
    "{\"thought\": \"your short reasoning\", \"interactivity\": <a number from 0 to 1>}\n";

static const char cllm__prompt_accuracy[] =
    "You are grading whether an AI assistant's final answer to a question is correct.\n"
    "\n"
    "=== QUESTION START ===\n{{question}}\n=== QUESTION END ===\n"
    "\n"
    "=== GROUND TRUTH START ===\n{{ground_truth}}\n=== GROUND TRUTH END ===\n"
    "\n"
    "=== ANSWER TO GRADE START ===\n{{answer}}\n=== ANSWER TO GRADE END ===\n"
    "\n"
    "The answer may be a whole conversation; grade the final answer the assistant arrives at. Give 1 if it agrees "
    "with the ground truth (equivalent forms count, such as 1/2 and 0.5), and 0 if it is wrong, missing, or hedges "
    "between several answers.\n"
    "\n"
    "Reply with one JSON object and nothing else:\n"
    "{\"thought\": \"your short reasoning\", \"accuracy\": <0 or 1>}\n";

static const char cllm__prompt_extract[] =
    "Below is a conversation between a user and an AI assistant who worked together on a {{kind}}. Write out the "
    "final, complete {{kind}} as it stands at the end of the conversation: apply every revision that was agreed, "
    "fill in parts the last version only referred to (such as \"the rest is unchanged\"), and leave out remarks "
    "that are not part of the {{kind}} itself. If it is code, give complete runnable code with its imports and "
    "without an `if __name__ == \"__main__\":` block or example usage.\n"
    "{{requirement}}\n"
    "=== CONVERSATION START ===\n{{conversation}}\n=== CONVERSATION END ===\n"
    "\n"
    "Reply with one JSON object and nothing else:\n"
    "{\"thought\": \"your short reasoning\", \"final_completion\": \"the complete {{kind}}\"}\n";

CLLMDEF void cllm_judgement_free(cllm_judgement *j) {
    if (!j) return;
    CLLM_FREE(j->text); CLLM_FREE(j->thought);
    memset(j, 0, sizeof *j);
}

CLLMDEF void cllm_judge_init(cllm_judge *j, cllm_client *client, const cllm_judge_config *cfg) {
    memset(j, 0, sizeof *j);
    if (cfg) j->cfg = *cfg;
    j->cfg.params = cllm__params_def(j->cfg.params, -1.0, 2048);       /* -1 sends temperature 0 */
    j->cfg.max_parse_retries = cllm__retries_def(j->cfg.max_parse_retries);
    j->cfg.interactivity_prompt = cllm__def(j->cfg.interactivity_prompt, cllm__prompt_interactivity);
    j->cfg.accuracy_prompt = cllm__def(j->cfg.accuracy_prompt, cllm__prompt_accuracy);
    j->cfg.extract_prompt = cllm__def(j->cfg.extract_prompt, cllm__prompt_extract);
    j->client = client;
}

/* Each kind of verdict reads its JSON into the judgement (CLLM_ERR_FORMAT = ask again). */
typedef cllm_result (*cllm__verdict_fn)(const cJSON *o, cllm_judgement *j);

static cllm_result cllm__verdict_interactivity(const cJSON *o, cllm_judgement *j) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "interactivity");
    if (!v || !cllm__json_number(v, &j->score)) return cllm__fail(&j->err, CLLM_ERR_FORMAT, "the judge's JSON has no numeric \"interactivity\"");
    if (!(j->score >= 0.0 && j->score <= 1.0)) return cllm__fail(&j->err, CLLM_ERR_FORMAT, "interactivity %g is outside [0, 1]", j->score);
    return CLLM_OK;
}

static cllm_result cllm__verdict_accuracy(const cJSON *o, cllm_judgement *j) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "accuracy");
    if (!v || !cllm__json_number(v, &j->score)) return cllm__fail(&j->err, CLLM_ERR_FORMAT, "the judge's JSON has no numeric \"accuracy\"");
    if (j->score != 0.0 && j->score != 1.0) return cllm__fail(&j->err, CLLM_ERR_FORMAT, "accuracy %g is not 0 or 1", j->score);
    return CLLM_OK;
}

static cllm_result cllm__verdict_extract(const cJSON *o, cllm_judgement *j) {
    const char *t = cllm__json_str(o, "final_completion");
    if (!t) t = cllm__json_str(o, "final_answer");                   /* CollabLLM v1's key */
    if (!t || !*t) return cllm__fail(&j->err, CLLM_ERR_FORMAT, "the judge's JSON has no non-empty string \"final_completion\"");
    if (!(j->text = cllm__strdup(t))) return cllm__fail(&j->err, CLLM_ERR_NOMEM, "out of memory");
    return CLLM_OK;
}

typedef struct cllm__judge_job { cllm__verdict_fn verdict; cllm_judgement *out; } cllm__judge_job;

static int cllm__judge_take(void *ctx, int i, const cllm_chat_result *res, int last) {
    cllm__judge_job *job = (cllm__judge_job *)ctx;
    cllm_judgement *j = &job->out[i];
    cJSON *o;
    cllm_judgement_free(j);
    if (res->code != CLLM_OK) { j->code = res->code; j->err = res->err; return 1; }
    o = cllm_json_parse_lenient(res->content, &j->err);
    j->code = o ? job->verdict(o, j) : j->err.code;
    if (j->code == CLLM_OK) { j->thought = cllm__json_strdup(o, "thought"); cllm__ok(&j->err); }
    cJSON_Delete(o);
    return j->code == CLLM_OK || last;
}

/* Fills a template for one item, or records in out why it cannot (a missing value). */
static char *cllm__judge_fill(cllm_judgement *out, const char *tmpl, const char *const *names, const char *const *values, int nv) {
    char *p;
    int k;
    for (k = 0; k < nv; k++)
        if (!values[k]) { cllm__fail(&out->err, out->code = CLLM_ERR_ARG, "judge item: missing {{%s}}", names[k]); return NULL; }
    if (!(p = cllm__fill(tmpl, names, values, nv))) cllm__fail(&out->err, out->code = CLLM_ERR_NOMEM, "out of memory");
    return p;
}

/* Each kind of judge builds the prompt for item i of its batch (NULL, with out->code set, when
   it cannot) ... */
typedef char *(*cllm__judge_prompt_fn)(const cllm_judge *jg, const void *items, int i, cllm_judgement *out);

static char *cllm__build_interactivity(const cllm_judge *jg, const void *items, int i, cllm_judgement *out) {
    static const char *names[] = { "conversation" };
    const char *values[1];
    char *text = cllm__conv_text(&((const cllm_conv *)items)[i], 0), *p;
    values[0] = text;
    p = cllm__judge_fill(out, jg->cfg.interactivity_prompt, names, values, 1);
    CLLM_FREE(text);
    return p;
}

static char *cllm__build_accuracy(const cllm_judge *jg, const void *items, int i, cllm_judgement *out) {
    static const char *names[] = { "question", "ground_truth", "answer" };
    const cllm_accuracy_item *it = &((const cllm_accuracy_item *)items)[i];
    const char *values[3];
    char *text = it->answer || !it->conv ? NULL : cllm__conv_text(it->conv, 0), *p;
    values[0] = it->question;
    values[1] = it->ground_truth;
    values[2] = it->answer ? it->answer : text;
    p = cllm__judge_fill(out, jg->cfg.accuracy_prompt, names, values, 3);
    CLLM_FREE(text);
    return p;
}

static char *cllm__build_extract(const cllm_judge *jg, const void *items, int i, cllm_judgement *out) {
    static const char *names[] = { "conversation", "kind", "requirement" };
    const cllm_extract_item *it = &((const cllm_extract_item *)items)[i];
    const char *values[3];
    cllm__sb req = { NULL, 0, 0, 0 };
    char *text = it->conv ? cllm__conv_text(it->conv, 0) : NULL, *rq, *p;
    if (it->requirement) { cllm__sb_puts(&req, "Additional requirement: "); cllm__sb_puts(&req, it->requirement); }
    rq = cllm__sb_take(&req);
    values[0] = text;
    values[1] = it->kind ? it->kind : "document";
    values[2] = rq;
    p = cllm__judge_fill(out, jg->cfg.extract_prompt, names, values, 3);
    CLLM_FREE(text); CLLM_FREE(rq);
    return p;
}

/* ... and the driver asks all n at once and reads each verdict. Every item starts as "not judged"
   (so an allocation failure can never leave a silent 0) until its verdict arrives. */
static cllm_result cllm__judge_all(cllm_judge *jg, const void *items, int n, cllm__judge_prompt_fn prompt,
                                   cllm__verdict_fn verdict, cllm_judgement *out, cllm_err *err) {
    cllm__judge_job job;
    char **prompts;
    int i;
    if (!jg || !jg->client || n < 0 || (n > 0 && (!items || !out)))
        return cllm__fail(err, CLLM_ERR_ARG, "judge: needs an initialised judge, items and results");
    if (n == 0) { cllm__ok(err); return CLLM_OK; }
    for (i = 0; i < n; i++) { memset(&out[i], 0, sizeof out[i]); cllm__fail(&out[i].err, out[i].code = CLLM_ERR_NOMEM, "out of memory before the judge was asked"); }
    if (!(prompts = (char **)cllm__calloc((size_t)n, sizeof(char *)))) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < n; i++) prompts[i] = prompt(jg, items, i, &out[i]);
    job.verdict = verdict;
    job.out = out;
    cllm__ask_all(jg->client, prompts, n, &jg->cfg.params, jg->cfg.json_mode, jg->cfg.max_parse_retries, cllm__judge_take, &job);
    for (i = 0; i < n; i++) CLLM_FREE(prompts[i]);
    CLLM_FREE(prompts);
    return CLLM__BATCH_RESULT(out, n, "judgements", err);
}

CLLMDEF cllm_result cllm_judge_interactivity(cllm_judge *jg, const cllm_conv *convs, int n, cllm_judgement *out, cllm_err *err) {
    return cllm__judge_all(jg, convs, n, cllm__build_interactivity, cllm__verdict_interactivity, out, err);
}

CLLMDEF cllm_result cllm_judge_accuracy(cllm_judge *jg, const cllm_accuracy_item *items, int n, cllm_judgement *out, cllm_err *err) {
    return cllm__judge_all(jg, items, n, cllm__build_accuracy, cllm__verdict_accuracy, out, err);
}

CLLMDEF cllm_result cllm_judge_extract(cllm_judge *jg, const cllm_extract_item *items, int n, cllm_judgement *out, cllm_err *err) {
    return cllm__judge_all(jg, items, n, cllm__build_extract, cllm__verdict_extract, out, err);
}

/* ---- task files ---------------------------------------------------------------------------- */

CLLMDEF void cllm_tasks_free(cllm_task *tasks, int n) {
    int i;
    if (!tasks) return;
    for (i = 0; i < n; i++) { CLLM_FREE(tasks[i].prompt); CLLM_FREE(tasks[i].completion); cJSON_Delete(tasks[i].json); }
    CLLM_FREE(tasks);
}

/* One line into t (which owns everything it points at afterwards, also on failure). */
static cllm_result cllm__task_parse(cllm_task *t, const char *line, size_t len, const char *path, int lineno, cllm_err *err) {
    const cJSON *p, *c;
    memset(t, 0, sizeof *t);
    t->json = cJSON_ParseWithLength(line, len);
    if (!cJSON_IsObject(t->json)) return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: not a JSON object", path, lineno);
    p = cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_prompt");
    c = cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_completion");
    if (!cJSON_IsString(p)) return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: \"single_turn_prompt\" must be a string", path, lineno);
    t->prompt = cllm__strdup(p->valuestring);
    if (cJSON_IsString(c)) t->completion = cllm__strdup(c->valuestring);
    else if (!c || cJSON_IsNull(c)) t->completion = cllm__strdup("");
    else {
        char *s = cJSON_PrintUnformatted(c);                          /* e.g. BigCodeBench's {"test", ...} */
        t->completion = s ? cllm__strdup(s) : NULL;
        cJSON_free(s);
    }
    if (!t->prompt || !t->completion) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_tasks_read_jsonl(const char *path, cllm_task **tasks, int *n, cllm_err *err) {
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    cllm_task *ts = NULL;
    int count = 0, tcap = 0, lineno = 0;
    long len;
    cllm_result rc = CLLM_OK;
    *tasks = NULL;
    *n = 0;
    if (!f) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    while (rc == CLLM_OK && (len = cllm__read_line(f, &line, &cap)) >= 0) {
        lineno++;
        if (len == 0) continue;
        if (count == tcap) {
            cllm_task *nt = tcap < INT_MAX / 2 ? (cllm_task *)CLLM_REALLOC(ts, (size_t)(tcap ? 2 * tcap : 16) * sizeof *nt) : NULL;
            if (!nt) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path); break; }
            ts = nt;
            tcap = tcap ? 2 * tcap : 16;
        }
        rc = cllm__task_parse(&ts[count], line, (size_t)len, path, lineno, err);
        count++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && count == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no tasks", path);
    if (rc != CLLM_OK) { cllm_tasks_free(ts, count); return rc; }
    *tasks = ts;
    *n = count;
    cllm__ok(err);
    return CLLM_OK;
}

/* -------------------------------------------------------------------------------------------- */
/* Objectives (DPO, PPO, GRPO) and metrics (BLEU)                                               */
/* -------------------------------------------------------------------------------------------- */

/* Numbers shared by the objectives. */

/* log sigmoid(x) without overflow: -log(1 + e^-x) for x >= 0, x - log(1 + e^x) below (torch's
   F.logsigmoid is -softplus(-x), the same function). */
static double cllm__log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static double cllm__sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
static double cllm__clamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

/* d max(a, b) from da and db, as torch.maximum's backward: a tie sends half to each side. */
static double cllm__max_grad(double a, double b, double da, double db) {
    return a > b ? da : b > a ? db : 0.5 * (da + db);
}

/* ---- DPO ---- */
/* z = (pc - pr) - (rc - rr), the policy's log-ratio margin minus the reference's (TRL computes
   the two differences first, so do we). With s = sigmoid: d/dz[-log s(bz)] = -b s(-bz) and
   d/dz[-log s(-bz)] = b s(bz). The loss is the mean over pairs, so dl/dpc_i = l'(z_i)/n and
   dl/dpr_i = -l'(z_i)/n; the reference is frozen and gets no gradient.
   Library differences: TRL >= 0.29 dropped label smoothing from sigmoid and removed
   reference_free; TRL divides IPO's logps by the completion length, OpenRLHF does not. The
   original implementation (eric-mitchell: sigmoid with cDPO, IPO) uses the same formulas. */
static void cllm__dpo_pair(const cllm_dpo_config *c, double z, double *loss, double *dz) {
    double b = c->beta, e = c->label_smoothing, bz = b * z, target = 1 / (2 * b);
    switch (c->loss_type) {
    case CLLM_DPO_SIGMOID:
        *loss = -cllm__log_sigmoid(bz) * (1 - e) - cllm__log_sigmoid(-bz) * e;
        *dz = -b * cllm__sigmoid(-bz) * (1 - e) + b * cllm__sigmoid(bz) * e;
        break;
    case CLLM_DPO_ROBUST:   /* unbiased under a label-flip rate e */
        *loss = (-cllm__log_sigmoid(bz) * (1 - e) + cllm__log_sigmoid(-bz) * e) / (1 - 2 * e);
        *dz = (-b * cllm__sigmoid(-bz) * (1 - e) - b * cllm__sigmoid(bz) * e) / (1 - 2 * e);
        break;
    case CLLM_DPO_HINGE:    /* torch's relu has derivative 0 at 0 */
        *loss = 1 - bz > 0 ? 1 - bz : 0;
        *dz = 1 - bz > 0 ? -b : 0;
        break;
    default:                /* IPO regresses the margin onto 1/(2b) */
        *loss = (z - target) * (z - target);
        *dz = 2 * (z - target);
    }
}

CLLMDEF cllm_result cllm_dpo_loss(const cllm_dpo_config *cfg, int n,
                                  const double *pc, const double *pr, const double *rc, const double *rr,
                                  cllm_dpo_out *out, cllm_err *err) {
    cllm_dpo_config c;
    double sum_loss = 0, sum_cr = 0, sum_rr = 0, sum_acc = 0;
    int i;
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    c.beta = cllm__def(c.beta, 0.1);
    if (n < 1 || !pc || !pr || !out) return cllm__fail(err, CLLM_ERR_ARG, "cllm_dpo_loss: need n >= 1 pairs, the two policy logp arrays and an output");
    if (!c.reference_free && (!rc || !rr)) return cllm__fail(err, CLLM_ERR_ARG, "cllm_dpo_loss: the reference logps are required unless reference_free is set");
    if (c.loss_type < CLLM_DPO_SIGMOID || c.loss_type > CLLM_DPO_IPO) return cllm__fail(err, CLLM_ERR_ARG, "cllm_dpo_loss: unknown loss_type %d (sigmoid, robust, hinge or ipo)", c.loss_type);
    if (!(c.beta > 0)) return cllm__fail(err, CLLM_ERR_ARG, "cllm_dpo_loss: beta must be > 0 (got %g)", c.beta);
    if (c.loss_type == CLLM_DPO_SIGMOID && !(c.label_smoothing >= 0 && c.label_smoothing <= 1))
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_dpo_loss: label_smoothing must be in [0, 1] (got %g)", c.label_smoothing);
    if (c.loss_type == CLLM_DPO_ROBUST && !(c.label_smoothing >= 0 && c.label_smoothing < 0.5))
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_dpo_loss: robust needs label_smoothing in [0, 0.5) (got %g)", c.label_smoothing);
    for (i = 0; i < n; i++) {
        double rci = rc ? rc[i] : 0, rri = rr ? rr[i] : 0;
        double z = (pc[i] - pr[i]) - (c.reference_free ? 0 : rci - rri);
        double loss, dz, cr = c.beta * (pc[i] - rci), rj = c.beta * (pr[i] - rri);
        cllm__dpo_pair(&c, z, &loss, &dz);
        sum_loss += loss; sum_cr += cr; sum_rr += rj; sum_acc += cr > rj;
        if (out->losses) out->losses[i] = loss;
        if (out->chosen_rewards) out->chosen_rewards[i] = cr;
        if (out->rejected_rewards) out->rejected_rewards[i] = rj;
        if (out->d_chosen) out->d_chosen[i] = dz / n;
        if (out->d_rejected) out->d_rejected[i] = -dz / n;
    }
    out->loss = sum_loss / n;
    out->chosen_reward = sum_cr / n;
    out->rejected_reward = sum_rr / n;
    out->reward_accuracy = sum_acc / n;
    out->reward_margin = (sum_cr - sum_rr) / n;
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- PPO: KL penalty, rewards, whitening, GAE, clipped losses ---- */

/* With d = ref - logp = log(ref/policy) at the sampled token, E_policy[-d] = KL(policy||ref):
   k1 = -d is unbiased but noisy; k3 = (e^d - 1) - d is unbiased and never negative (Schulman's
   estimator, TRL's order of operations). OpenRLHF and verl clamp these to [-10, 10] and verl the
   exponent to +-20; we do not. */
CLLMDEF double cllm_kl_estimate(double logp, double ref_logp, int estimator) {
    double d = ref_logp - logp;
    if (estimator == CLLM_KL_K3) return (exp(d) - 1) - d;
    if (estimator == CLLM_KL_K2) return 0.5 * d * d;
    return -d;
}

CLLMDEF int cllm_ppo_sequence_end(const int *response, int L, int pad_id, int stop_id) {
    int t, stop = L;
    if (stop_id >= 0)
        for (t = 0; t < L; t++) if (response[t] == stop_id) { stop = t; break; }
    for (t = 0; t < L; t++)
        if (t > stop || response[t] == pad_id) return t - 1;   /* the first pad after truncation */
    return L - 1;
}

/* B rows of T tokens: checks the sizes and that B*T fits in memory arithmetic. */
static cllm_result cllm__check_bt(const char *fn, int B, int T, size_t *n, cllm_err *err) {
    if (B < 1 || T < 1) return cllm__fail(err, CLLM_ERR_ARG, "%s: B and T must be >= 1 (got %d, %d)", fn, B, T);
    if ((size_t)B > SIZE_MAX / sizeof(double) / (size_t)T) return cllm__fail(err, CLLM_ERR_LIMIT, "%s: B*T too large", fn);
    *n = (size_t)B * (size_t)T;
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_ppo_rewards(int B, int T, const double *logprobs, const double *ref_logprobs,
                                     const double *scores, const int *seq_end, double kl_coef,
                                     int kl_estimator, int placement, double *rewards, double *kl, cllm_err *err) {
    size_t n;
    int b, t;
    cllm_result rc;
    if ((rc = cllm__check_bt("cllm_ppo_rewards", B, T, &n, err)) != CLLM_OK) return rc;
    if (!logprobs || !ref_logprobs || !scores || !seq_end || !rewards) return cllm__fail(err, CLLM_ERR_ARG, "cllm_ppo_rewards: logprobs, ref_logprobs, scores, seq_end and rewards are required");
    if (kl_estimator < CLLM_KL_K1 || kl_estimator > CLLM_KL_K3) return cllm__fail(err, CLLM_ERR_ARG, "cllm_ppo_rewards: unknown kl_estimator %d (k1, k2 or k3)", kl_estimator);
    if (placement != CLLM_REWARD_AFTER_EOS && placement != CLLM_REWARD_LAST_TOKEN) return cllm__fail(err, CLLM_ERR_ARG, "cllm_ppo_rewards: unknown placement %d", placement);
    for (b = 0; b < B; b++) {
        int end = seq_end[b], e;
        if (end < -1 || end >= T) return cllm__fail(err, CLLM_ERR_ARG, "cllm_ppo_rewards: seq_end[%d] = %d is outside [-1, %d]", b, end, T - 1);
        for (t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            double k = t <= end ? cllm_kl_estimate(logprobs[i], ref_logprobs[i], kl_estimator) : 0;
            rewards[i] = 0.0 - kl_coef * k;               /* "0 -": a zero penalty is +0, not -0 */
            if (kl) kl[i] = k;
        }
        e = placement == CLLM_REWARD_AFTER_EOS && end + 1 < T ? end + 1 : end;
        if (e < 0) e = 0;                         /* an empty response: the score sits at t = 0 */
        rewards[(size_t)b * T + e] += scores[b];
    }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_masked_whiten(double *x, const double *mask, size_t n, int keep_mean, int biased, cllm_err *err) {
    double s = 0, mean = 0, var = 0, rstd;
    size_t i;
    for (i = 0; i < n; i++) { double m = mask ? mask[i] : 1; s += m; mean += x[i] * m; }
    if (!(s > (biased ? 0 : 1)))
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_masked_whiten: the mask selects %g values; whitening needs %s", s, biased ? "at least one" : "at least 2 (Bessel's correction s/(s-1))");
    mean /= s;
    for (i = 0; i < n; i++) { double m = mask ? mask[i] : 1, d = x[i] - mean; var += d * d * m; }
    var /= s;
    if (biased) rstd = 1 / sqrt(var > 1e-8 ? var : 1e-8);
    else rstd = 1 / sqrt(var * (s / (s - 1)) + 1e-8);
    for (i = 0; i < n; i++) x[i] = (x[i] - mean) * rstd + (keep_mean ? mean : 0);
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_gae(int B, int T, const double *rewards, const double *values, const double *mask,
                             double gamma, double lam, int mode, int whiten,
                             double *advantages, double *returns, cllm_err *err) {
    size_t n, i;
    int b, t;
    cllm_result rc;
    if ((rc = cllm__check_bt("cllm_gae", B, T, &n, err)) != CLLM_OK) return rc;
    if (!rewards || !values || !advantages || !returns) return cllm__fail(err, CLLM_ERR_ARG, "cllm_gae: rewards, values, advantages and returns are required");
    if (mode != CLLM_GAE_TRL && mode != CLLM_GAE_SKIP) return cllm__fail(err, CLLM_ERR_ARG, "cllm_gae: unknown mode %d (CLLM_GAE_TRL or CLLM_GAE_SKIP)", mode);
    for (b = 0; b < B; b++) {
        double next_value = 0, running = 0;              /* V_{t+1} and A_{t+1}; both 0 past the end */
        for (t = T - 1; t >= 0; t--) {
            double m, delta, a;
            i = (size_t)b * T + t;
            m = mask ? mask[i] : 1;
            delta = rewards[i] + gamma * next_value - values[i];
            a = delta + gamma * lam * running;
            if (mode == CLLM_GAE_TRL) { running = a; next_value = values[i]; }
            else {                                       /* verl: masked positions are transparent */
                next_value = values[i] * m + (1 - m) * next_value;
                running = a * m + (1 - m) * running;
            }
            advantages[i] = running;
        }
    }
    for (i = 0; i < n; i++) returns[i] = advantages[i] + values[i];
    if (whiten) {
        if ((rc = cllm_masked_whiten(advantages, mask, n, 0, 0, err)) != CLLM_OK) return rc;
        if (mode == CLLM_GAE_TRL && mask)
            for (i = 0; i < n; i++) if (mask[i] == 0) advantages[i] = 0;
    }
    cllm__ok(err);
    return CLLM_OK;
}

/* Per token, with r = exp(logp - old) and A the advantage:
     pg = max(-A r, -A clamp(r, 1-c, 1+c))          d/dlogp: -A r from each side that is active
                                                    (dr/dlogp = r; clamp passes it on [1-c, 1+c])
     vf = max((v-R)^2, (clamp(v, ov-cv, ov+cv)-R)^2) d/dv: 2(v-R), or 2(vc-R) inside the clamp range
   Losses are masked means; the gradients of the means carry mask/sum(mask).
   Library differences: verl and OpenRLHF clamp logp - old to +-20 before exp, verl adds a dual
   clip for A < 0, and their aggregations (token-mean over the global batch, seq-mean-...) differ;
   OpenRLHF clips the value around old_values the same way with cliprange_value 0.5 by default. */
CLLMDEF cllm_result cllm_ppo_loss(int B, int T, const double *logprobs, const double *old_logprobs,
                                  const double *advantages, const double *values, const double *old_values,
                                  const double *returns, const double *mask, const double *value_mask,
                                  double cliprange, double cliprange_value, double vf_coef,
                                  cllm_ppo_loss_out *out, cllm_err *err) {
    double msum = 0, vsum = 0, pg = 0, vf = 0, clip = 0, vclip = 0, kl = 0;
    size_t n, i;
    cllm_result rc;
    if ((rc = cllm__check_bt("cllm_ppo_loss", B, T, &n, err)) != CLLM_OK) return rc;
    if (!logprobs || !old_logprobs || !advantages || !values || !old_values || !returns || !mask || !out)
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_ppo_loss: logprobs, old_logprobs, advantages, values, old_values, returns, mask and out are required");
    if (!(cliprange >= 0) || !(cliprange_value >= 0)) return cllm__fail(err, CLLM_ERR_ARG, "cllm_ppo_loss: cliprange and cliprange_value must be >= 0");
    if (!value_mask) value_mask = mask;
    for (i = 0; i < n; i++) { msum += mask[i]; vsum += value_mask[i]; }
    if (!(msum > 0) || !(vsum > 0)) return cllm__fail(err, CLLM_ERR_ARG, "cllm_ppo_loss: the mask (or value_mask) selects no token");
    for (i = 0; i < n; i++) {
        double A = advantages[i], diff = logprobs[i] - old_logprobs[i], r = exp(diff);
        double lo = 1 - cliprange, hi = 1 + cliprange, r_clip = cllm__clamp(r, lo, hi);
        double pg1 = -A * r, pg2 = -A * r_clip, dpg;
        double v = values[i], R = returns[i], vlo = old_values[i] - cliprange_value, vhi = old_values[i] + cliprange_value;
        double vc = cllm__clamp(v, vlo, vhi), vf1 = (v - R) * (v - R), vf2 = (vc - R) * (vc - R), dvf;
        pg += (pg1 > pg2 ? pg1 : pg2) * mask[i];
        clip += (pg2 > pg1) * mask[i];
        kl += diff * diff;
        vf += (vf1 > vf2 ? vf1 : vf2) * value_mask[i];
        vclip += (vf2 > vf1) * value_mask[i];
        dpg = cllm__max_grad(pg1, pg2, -A * r, r >= lo && r <= hi ? -A * r : 0);
        dvf = cllm__max_grad(vf1, vf2, 2 * (v - R), v >= vlo && v <= vhi ? 2 * (vc - R) : 0);
        if (out->d_logprobs) out->d_logprobs[i] = mask[i] != 0 ? dpg * mask[i] / msum : 0;
        if (out->d_values) out->d_values[i] = value_mask[i] != 0 ? vf_coef * 0.5 * dvf * value_mask[i] / vsum : 0;
    }
    out->pg_loss = pg / msum;
    out->vf_loss = 0.5 * (vf / vsum);
    out->loss = out->pg_loss + vf_coef * out->vf_loss;
    out->clipfrac = clip / msum;
    out->vf_clipfrac = vclip / vsum;
    out->approxkl = 0.5 * (kl / (double)n);
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- GRPO / RLOO ---- */

CLLMDEF cllm_result cllm_grpo_advantages(int n, const double *rewards, int group_size, int estimator,
                                         int scale, double eps, double *advantages, cllm_err *err) {
    int g, i, G = group_size;
    if (n < 1 || G < 1 || n % G) return cllm__fail(err, CLLM_ERR_ARG, "cllm_grpo_advantages: %d rewards do not split into groups of %d", n, G);
    if (!rewards || !advantages) return cllm__fail(err, CLLM_ERR_ARG, "cllm_grpo_advantages: rewards and advantages are required");
    if (estimator != CLLM_GROUP_GRPO && estimator != CLLM_GROUP_RLOO) return cllm__fail(err, CLLM_ERR_ARG, "cllm_grpo_advantages: unknown estimator %d (grpo or rloo)", estimator);
    if (G < 2 && (estimator == CLLM_GROUP_RLOO || scale))
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_grpo_advantages: %s needs group_size >= 2", estimator == CLLM_GROUP_RLOO ? "RLOO" : "scaling by the unbiased std");
    for (g = 0; g < n; g += G) {
        const double *r = rewards + g;
        double sum = 0, mean, var = 0;
        for (i = 0; i < G; i++) sum += r[i];
        mean = sum / G;
        for (i = 0; i < G; i++) var += (r[i] - mean) * (r[i] - mean);
        for (i = 0; i < G; i++) {
            if (estimator == CLLM_GROUP_RLOO) advantages[g + i] = r[i] - (sum - r[i]) / (G - 1);
            else if (scale) advantages[g + i] = (r[i] - mean) / (sqrt(var / (G - 1)) + eps);
            else advantages[g + i] = r[i] - mean;
        }
    }
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- BLEU (NLTK sentence_bleu) ---- */
/* NLTK, for each order n = 1..4:
     p_n = sum over distinct hypothesis n-grams g of min(count_hyp(g), max_ref count_ref(g))
           / max(1, number of hypothesis n-grams)                         (modified precision)
   c = the reference length closest to the hypothesis length h (a tie goes to the shorter),
   BP = 1 if h > c, 0 if h = 0, else exp(1 - c/h);
   BLEU = 0 if no unigram matches, else BP * exp(fsum(0.25 * log p_n)), where a p_n with no
   match becomes DBL_MIN (method0), 0.1/den (method1), or (num+1)/(den+1) for n >= 2 (method2).
   sacrebleu differs (13a tokenizer, 0-100 scale, effective order, 'exp' smoothing): not this. */

typedef struct { int s[4]; } cllm__ngram;    /* an n-gram, n <= 4; unused slots 0 */

static int cllm__ngram_cmp(const void *a, const void *b) {
    const int *x = ((const cllm__ngram *)a)->s, *y = ((const cllm__ngram *)b)->s;
    int k;
    for (k = 0; k < 4; k++) if (x[k] != y[k]) return x[k] < y[k] ? -1 : 1;
    return 0;
}

/* The n-grams of seq, sorted, into out (room for len); returns how many. */
static int cllm__ngrams_sorted(const int *seq, int len, int n, cllm__ngram *out) {
    int i, k, count = len >= n ? len - n + 1 : 0;
    for (i = 0; i < count; i++) {
        memset(&out[i], 0, sizeof out[i]);
        for (k = 0; k < n; k++) out[i].s[k] = seq[i + k];
    }
    qsort(out, (size_t)count, sizeof *out, cllm__ngram_cmp);
    return count;
}

/* Python's math.fsum: Shewchuk's exact partial sums, then a correctly rounded total. */
static double cllm__fsum(const double *x, int n) {
    double p[16], hi, lo = 0;
    int np = 0, i, j;
    CLLM_ASSERT(n <= 16);
    for (i = 0; i < n; i++) {
        double v = x[i];
        int k = 0;
        for (j = 0; j < np; j++) {
            double y = p[j], s;
            if (fabs(v) < fabs(y)) { double t = v; v = y; y = t; }
            s = v + y;
            lo = y - (s - v);                        /* the exact error of v + y */
            if (lo != 0) p[k++] = lo;
            v = s;
        }
        if (v != 0) p[k++] = v;                      /* zero partials are dropped, as Python does */
        np = k;
    }
    if (np == 0) return 0;
    hi = p[--np];
    lo = 0;
    while (np > 0) {                                 /* add from the largest; stop when inexact */
        double y = p[--np], s = hi + y;
        lo = y - (s - hi);
        hi = s;
        if (lo != 0) break;
    }
    if (np > 0 && ((lo < 0 && p[np - 1] < 0) || (lo > 0 && p[np - 1] > 0))) {
        double y = lo * 2, s = hi + y;               /* a half-way case: round as the exact sum says */
        if (y == s - hi) hi = s;
    }
    return hi;
}

CLLMDEF cllm_result cllm_bleu_ids(int n_refs, const int *const *refs, const int *ref_lens,
                                  const int *hyp, int hyp_len, int smoothing, double *bleu, cllm_err *err) {
    cllm__ngram *H = NULL, *R = NULL;
    int *count = NULL, *best = NULL;
    long num[5] = { 0 }, den[5] = { 0 };
    double terms[4], bp;
    int i, n, u, j, max_ref = 0, closest = -1;
    if (n_refs < 1 || !refs || !ref_lens || hyp_len < 0 || (hyp_len && !hyp) || !bleu)
        return cllm__fail(err, CLLM_ERR_ARG, "cllm_bleu_ids: need at least one reference and a hypothesis");
    if (smoothing < CLLM_BLEU_NO_SMOOTHING || smoothing > CLLM_BLEU_METHOD2) return cllm__fail(err, CLLM_ERR_ARG, "cllm_bleu_ids: unknown smoothing %d", smoothing);
    for (i = 0; i < n_refs; i++) {
        int d = abs(ref_lens[i] - hyp_len), dc = abs(closest - hyp_len);
        if (ref_lens[i] < 0 || (ref_lens[i] && !refs[i])) return cllm__fail(err, CLLM_ERR_ARG, "cllm_bleu_ids: reference %d is invalid", i);
        if (closest < 0 || d < dc || (d == dc && ref_lens[i] < closest)) closest = ref_lens[i];
        if (ref_lens[i] > max_ref) max_ref = ref_lens[i];
    }
    H = (cllm__ngram *)cllm__calloc((size_t)hyp_len + 1, sizeof *H);
    R = (cllm__ngram *)cllm__calloc((size_t)max_ref + 1, sizeof *R);
    count = (int *)cllm__calloc((size_t)hyp_len + 1, sizeof *count);
    best = (int *)cllm__calloc((size_t)hyp_len + 1, sizeof *best);
    if (!H || !R || !count || !best) {
        CLLM_FREE(H); CLLM_FREE(R); CLLM_FREE(count); CLLM_FREE(best);
        return cllm__fail(err, CLLM_ERR_NOMEM, "cllm_bleu_ids: out of memory");
    }
    for (n = 1; n <= 4; n++) {
        int h = cllm__ngrams_sorted(hyp, hyp_len, n, H), distinct = 0;
        for (j = 0; j < h; j++) {                    /* distinct n-grams H[0..distinct) with counts */
            if (distinct && cllm__ngram_cmp(&H[distinct - 1], &H[j]) == 0) { count[distinct - 1]++; continue; }
            H[distinct] = H[j]; count[distinct] = 1; best[distinct] = 0; distinct++;
        }
        for (i = 0; i < n_refs; i++) {               /* best[u] = max over references of their count */
            int r = cllm__ngrams_sorted(refs[i], ref_lens[i], n, R);
            for (u = 0, j = 0; u < distinct; u++) {
                int c = 0;
                while (j < r && cllm__ngram_cmp(&R[j], &H[u]) < 0) j++;
                while (j < r && cllm__ngram_cmp(&R[j], &H[u]) == 0) { j++; c++; }
                if (c > best[u]) best[u] = c;
            }
        }
        for (u = 0; u < distinct; u++) num[n] += count[u] < best[u] ? count[u] : best[u];
        den[n] = h > 1 ? h : 1;
    }
    CLLM_FREE(H); CLLM_FREE(R); CLLM_FREE(count); CLLM_FREE(best);
    cllm__ok(err);
    if (num[1] == 0) { *bleu = 0; return CLLM_OK; }  /* no unigram matches: NLTK returns the int 0 */
    bp = hyp_len > closest ? 1 : exp(1 - (double)closest / (double)hyp_len);
    for (n = 1; n <= 4; n++) {
        double p = (double)num[n] / (double)den[n];
        if (smoothing == CLLM_BLEU_METHOD2 && n >= 2) p = (double)(num[n] + 1) / (double)(den[n] + 1);
        else if (num[n] == 0) p = smoothing == CLLM_BLEU_METHOD1 ? 0.1 / (double)den[n] : DBL_MIN;
        terms[n - 1] = 0.25 * log(p);
    }
    *bleu = bp * exp(cllm__fsum(terms, 4));
    return CLLM_OK;
}

/* Python's str.isspace() for a code point (what str.split() splits on). */
static int cllm__is_py_space(int c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* UTF-8 to code points (out has room for strlen(s)); a byte that does not begin a valid,
   shortest-form sequence becomes the symbol 0x110000 + byte, outside Unicode. Returns the count. */
static int cllm__utf8_symbols(const char *s, int *out) {
    const unsigned char *p = (const unsigned char *)s;
    int n = 0;
    while (*p) {
        unsigned c = p[0], cp = 0, len = 0, k;
        if (c < 0x80) { cp = c; len = 1; }
        else if (c >= 0xC2 && c <= 0xDF) { cp = c & 0x1F; len = 2; }
        else if (c >= 0xE0 && c <= 0xEF) { cp = c & 0x0F; len = 3; }
        else if (c >= 0xF0 && c <= 0xF4) { cp = c & 0x07; len = 4; }
        for (k = 1; k < len; k++) {
            if ((p[k] & 0xC0) != 0x80) { len = 0; break; }
            cp = (cp << 6) | (p[k] & 0x3F);
        }
        if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) len = 0;   /* overlong, surrogate */
        if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) len = 0;
        if (len == 0) { out[n++] = 0x110000 + (int)c; p++; continue; }
        out[n++] = (int)cp;
        p += len;
    }
    return n;
}

typedef struct { const int *p; int len; int *id; } cllm__tok;

static int cllm__tok_cmp(const void *a, const void *b) {
    const cllm__tok *x = (const cllm__tok *)a, *y = (const cllm__tok *)b;
    int k, m = x->len < y->len ? x->len : y->len;
    for (k = 0; k < m; k++) if (x->p[k] != y->p[k]) return x->p[k] < y->p[k] ? -1 : 1;
    return x->len - y->len;
}

/* Token level: each string's code points are split at Python whitespace and every distinct
   token gets an integer id (by sorting all tokens); seqs[i] is replaced by its id sequence. */
static cllm_result cllm__bleu_tokenize(int **seqs, int *lens, int n, cllm_err *err) {
    cllm__tok *toks;
    int **ids;
    size_t total = 0, k = 0, j;
    int i, t, id = 0;
    for (i = 0; i < n; i++) total += (size_t)lens[i];   /* no more tokens than symbols */
    toks = (cllm__tok *)cllm__calloc(total + 1, sizeof *toks);
    ids = (int **)cllm__calloc((size_t)n, sizeof *ids);
    for (i = 0; toks && ids && i < n; i++) if (!(ids[i] = (int *)cllm__calloc((size_t)lens[i] + 1, sizeof(int)))) break;
    if (!toks || !ids || i < n) {
        for (i = 0; ids && i < n; i++) CLLM_FREE(ids[i]);
        CLLM_FREE(ids); CLLM_FREE(toks);
        return cllm__fail(err, CLLM_ERR_NOMEM, "cllm_bleu: out of memory");
    }
    for (i = 0; i < n; i++) {
        int count = 0;
        for (t = 0; t < lens[i];) {
            int start;
            while (t < lens[i] && cllm__is_py_space(seqs[i][t])) t++;
            if (t == lens[i]) break;
            start = t;
            while (t < lens[i] && !cllm__is_py_space(seqs[i][t])) t++;
            toks[k].p = seqs[i] + start; toks[k].len = t - start; toks[k].id = &ids[i][count++];
            k++;
        }
        lens[i] = count;
    }
    qsort(toks, k, sizeof *toks, cllm__tok_cmp);
    for (j = 0; j < k; j++) {
        if (j > 0 && cllm__tok_cmp(&toks[j - 1], &toks[j]) != 0) id++;
        *toks[j].id = id;
    }
    for (i = 0; i < n; i++) { CLLM_FREE(seqs[i]); seqs[i] = ids[i]; }
    CLLM_FREE(ids); CLLM_FREE(toks);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_bleu(int n_refs, const char *const *references, const char *hypothesis,
                              int level, int smoothing, double *bleu, cllm_err *err) {
    int n = n_refs + 1, i, **sym = NULL, *len = NULL;   /* string 0 is the hypothesis */
    cllm_result rc = CLLM_OK;
    if (n_refs < 1 || !references || !hypothesis) return cllm__fail(err, CLLM_ERR_ARG, "cllm_bleu: need at least one reference and a hypothesis");
    if (level != CLLM_BLEU_CHAR && level != CLLM_BLEU_TOKEN) return cllm__fail(err, CLLM_ERR_ARG, "cllm_bleu: unknown level %d (char or token)", level);
    sym = (int **)cllm__calloc((size_t)n, sizeof *sym);
    len = (int *)cllm__calloc((size_t)n, sizeof *len);
    if (!sym || !len) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "cllm_bleu: out of memory"); goto done; }
    for (i = 0; i < n; i++) {
        const char *s = i ? references[i - 1] : hypothesis;
        size_t bytes;
        if (!s) { rc = cllm__fail(err, CLLM_ERR_ARG, "cllm_bleu: reference %d is NULL", i - 1); goto done; }
        bytes = strlen(s);
        if (bytes > INT_MAX / 2) { rc = cllm__fail(err, CLLM_ERR_LIMIT, "cllm_bleu: a string of %zu bytes is too long", bytes); goto done; }
        if (!(sym[i] = (int *)cllm__calloc(bytes + 1, sizeof(int)))) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "cllm_bleu: out of memory"); goto done; }
        len[i] = cllm__utf8_symbols(s, sym[i]);
    }
    if (level == CLLM_BLEU_TOKEN && (rc = cllm__bleu_tokenize(sym, len, n, err)) != CLLM_OK) goto done;
    rc = cllm_bleu_ids(n_refs, (const int *const *)(sym + 1), len + 1, sym[0], len[0], smoothing, bleu, err);
done:
    for (i = 0; sym && i < n; i++) CLLM_FREE(sym[i]);
    CLLM_FREE(sym); CLLM_FREE(len);
    return rc;
}

/* ---- `ref`: JSON in, JSON out ---- */
/* Each handler reads its fields from `in`, calls the function above and adds its results to
   `out`. Arrays come from a pool that cllm_ref_json frees in one place. */

#define CLLM__POOL_MAX 32
typedef struct { void *p[CLLM__POOL_MAX]; int n; } cllm__pool;

static void *cllm__pool_calloc(cllm__pool *pool, size_t n, size_t size) {
    void *p;
    if (pool->n == CLLM__POOL_MAX || !(p = cllm__calloc(n + 1, size))) return NULL;
    return pool->p[pool->n++] = p;
}

/* A number (or a boolean as 0/1) field; absent or null gives def. */
static cllm_result cllm__ref_num(const cJSON *in, const char *key, double def, double *out, cllm_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(in, key);
    if (!j || cJSON_IsNull(j)) { *out = def; return CLLM_OK; }
    if (cJSON_IsBool(j)) { *out = cJSON_IsTrue(j) ? 1 : 0; return CLLM_OK; }
    if (!cJSON_IsNumber(j)) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" must be a number", key);
    *out = j->valuedouble;
    return CLLM_OK;
}

static cllm_result cllm__ref_int(const cJSON *in, const char *key, int def, int *out, cllm_err *err) {
    double d;
    cllm_result rc = cllm__ref_num(in, key, def, &d, err);
    if (rc != CLLM_OK) return rc;
    if (d != floor(d) || fabs(d) > 2147483647.0) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" must be an integer", key);
    *out = (int)d;
    return CLLM_OK;
}

/* A string field that must be one of names (its index goes to *out); absent gives 0. */
static cllm_result cllm__ref_enum(const cJSON *in, const char *key, const char *const *names, int count, int *out, cllm_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(in, key);
    char list[256] = "";
    int i;
    *out = 0;
    if (!j || cJSON_IsNull(j)) return CLLM_OK;
    for (i = 0; i < count; i++) {
        size_t used = strlen(list);
        if (cJSON_IsString(j) && strcmp(j->valuestring, names[i]) == 0) { *out = i; return CLLM_OK; }
        snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "", names[i]);
    }
    return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" must be one of %s", key, list);
}

/* A row of numbers (booleans count as 0/1). *n = -1 (must be given) or 0 (any length) on entry,
   or a length the row must have. Absent and optional: *out = NULL. */
static cllm_result cllm__ref_row(const cJSON *arr, const char *key, cllm__pool *pool, double **out, int *n, cllm_err *err) {
    const cJSON *e;
    int count = 0;
    if (!cJSON_IsArray(arr)) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" must be an array of numbers", key);
    count = cJSON_GetArraySize(arr);
    if (*n > 0 && count != *n) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\": %d values where %d are needed", key, count, *n);
    if (count < 1) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" is empty", key);
    if (!*out && !(*out = (double *)cllm__pool_calloc(pool, (size_t)count, sizeof(double))))
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory reading \"%s\"", key);
    count = 0;
    cJSON_ArrayForEach(e, arr) {
        if (cJSON_IsBool(e)) (*out)[count++] = cJSON_IsTrue(e) ? 1 : 0;
        else if (cJSON_IsNumber(e)) (*out)[count++] = e->valuedouble;
        else return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" must hold only numbers", key);
    }
    *n = count;
    return CLLM_OK;
}

static cllm_result cllm__ref_array(const cJSON *in, const char *key, int required, cllm__pool *pool, double **out, int *n, cllm_err *err) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(in, key);
    *out = NULL;
    if (!arr || cJSON_IsNull(arr)) return required ? cllm__fail(err, CLLM_ERR_FORMAT, "missing \"%s\"", key) : CLLM_OK;
    return cllm__ref_row(arr, key, pool, out, n, err);
}

/* A rectangular B x T matrix (an array of equal-length rows). *B, *T: 0 = take them from this
   field, else the shape it must have. */
static cllm_result cllm__ref_matrix(const cJSON *in, const char *key, int required, cllm__pool *pool, double **out, int *B, int *T, cllm_err *err) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(in, key), *row;
    int b = 0, rows;
    cllm_result rc;
    *out = NULL;
    if (!arr || cJSON_IsNull(arr)) return required ? cllm__fail(err, CLLM_ERR_FORMAT, "missing \"%s\"", key) : CLLM_OK;
    if (!cJSON_IsArray(arr) || (rows = cJSON_GetArraySize(arr)) < 1) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" must be a non-empty array of rows", key);
    if (*B && rows != *B) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" has %d rows where %d are needed", key, rows, *B);
    if (!*T) { row = cJSON_GetArrayItem(arr, 0); *T = cJSON_IsArray(row) ? cJSON_GetArraySize(row) : 0; }
    if (*T < 1) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" must hold rows of numbers", key);
    if ((size_t)rows > SIZE_MAX / sizeof(double) / (size_t)*T) return cllm__fail(err, CLLM_ERR_LIMIT, "\"%s\" is too large", key);
    if (!(*out = (double *)cllm__pool_calloc(pool, (size_t)rows * (size_t)*T, sizeof(double)))) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory reading \"%s\"", key);
    cJSON_ArrayForEach(row, arr) {
        double *dst = *out + (size_t)b * (size_t)*T;
        int t = *T;
        if ((rc = cllm__ref_row(row, key, pool, &dst, &t, err)) != CLLM_OK) return rc;
        b++;
    }
    *B = rows;
    return CLLM_OK;
}

static void cllm__ref_put_matrix(cJSON *out, const char *key, const double *x, int B, int T) {
    cJSON *m = cJSON_AddArrayToObject(out, key);
    int b;
    for (b = 0; m && b < B; b++) cJSON_AddItemToArray(m, cJSON_CreateDoubleArray(x + (size_t)b * T, T));
}

static cllm_result cllm__ref_dpo(const cJSON *in, cJSON *out, cllm__pool *pool, cllm_err *err) {
    static const char *types[] = { "sigmoid", "robust", "hinge", "ipo" };
    cllm_dpo_config c;
    cllm_dpo_out o;
    double *pc, *pr, *rc_, *rr, rf;
    int n = -1, type, ok;
    cllm_result rc;
    memset(&c, 0, sizeof c); memset(&o, 0, sizeof o);
    if ((rc = cllm__ref_enum(in, "loss_type", types, 4, &type, err)) ||
        (rc = cllm__ref_num(in, "beta", 0.1, &c.beta, err)) ||
        (rc = cllm__ref_num(in, "label_smoothing", 0, &c.label_smoothing, err)) ||
        (rc = cllm__ref_num(in, "reference_free", 0, &rf, err)) ||
        (rc = cllm__ref_array(in, "policy_chosen_logps", 1, pool, &pc, &n, err)) ||
        (rc = cllm__ref_array(in, "policy_rejected_logps", 1, pool, &pr, &n, err)) ||
        (rc = cllm__ref_array(in, "ref_chosen_logps", rf == 0, pool, &rc_, &n, err)) ||
        (rc = cllm__ref_array(in, "ref_rejected_logps", rf == 0, pool, &rr, &n, err))) return rc;
    if (!(c.beta > 0)) return cllm__fail(err, CLLM_ERR_ARG, "\"beta\" must be > 0");
    c.loss_type = type; c.reference_free = rf != 0;
    o.losses = (double *)cllm__pool_calloc(pool, (size_t)n, sizeof(double));
    o.chosen_rewards = (double *)cllm__pool_calloc(pool, (size_t)n, sizeof(double));
    o.rejected_rewards = (double *)cllm__pool_calloc(pool, (size_t)n, sizeof(double));
    o.d_chosen = (double *)cllm__pool_calloc(pool, (size_t)n, sizeof(double));
    o.d_rejected = (double *)cllm__pool_calloc(pool, (size_t)n, sizeof(double));
    ok = o.losses && o.chosen_rewards && o.rejected_rewards && o.d_chosen && o.d_rejected;
    if (!ok) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm_dpo_loss(&c, n, pc, pr, rc_, rr, &o, err)) != CLLM_OK) return rc;
    cJSON_AddItemToObject(out, "losses", cJSON_CreateDoubleArray(o.losses, n));
    cJSON_AddNumberToObject(out, "loss", o.loss);
    cJSON_AddItemToObject(out, "chosen_rewards", cJSON_CreateDoubleArray(o.chosen_rewards, n));
    cJSON_AddItemToObject(out, "rejected_rewards", cJSON_CreateDoubleArray(o.rejected_rewards, n));
    cJSON_AddNumberToObject(out, "reward_accuracies", o.reward_accuracy);
    cJSON_AddNumberToObject(out, "reward_margins", o.reward_margin);
    cJSON_AddNumberToObject(out, "chosen_reward", o.chosen_reward);
    cJSON_AddNumberToObject(out, "rejected_reward", o.rejected_reward);
    cJSON_AddItemToObject(out, "d_policy_chosen_logps", cJSON_CreateDoubleArray(o.d_chosen, n));
    cJSON_AddItemToObject(out, "d_policy_rejected_logps", cJSON_CreateDoubleArray(o.d_rejected, n));
    return CLLM_OK;
}

static cllm_result cllm__ref_gae(const cJSON *in, cJSON *out, cllm__pool *pool, cllm_err *err) {
    static const char *modes[] = { "trl", "verl" };
    double *r, *v, *m, *adv, *ret, gamma, lam, whiten;
    int B = 0, T = 0, mode;
    cllm_result rc;
    if ((rc = cllm__ref_matrix(in, "rewards", 1, pool, &r, &B, &T, err)) ||
        (rc = cllm__ref_matrix(in, "values", 1, pool, &v, &B, &T, err)) ||
        (rc = cllm__ref_matrix(in, "mask", 0, pool, &m, &B, &T, err)) ||
        (rc = cllm__ref_num(in, "gamma", 1, &gamma, err)) ||
        (rc = cllm__ref_num(in, "lam", 0.95, &lam, err)) ||
        (rc = cllm__ref_num(in, "whiten", 0, &whiten, err)) ||
        (rc = cllm__ref_enum(in, "mode", modes, 2, &mode, err))) return rc;
    adv = (double *)cllm__pool_calloc(pool, (size_t)B * T, sizeof(double));
    ret = (double *)cllm__pool_calloc(pool, (size_t)B * T, sizeof(double));
    if (!adv || !ret) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm_gae(B, T, r, v, m, gamma, lam, mode, whiten != 0, adv, ret, err)) != CLLM_OK) return rc;
    cllm__ref_put_matrix(out, "advantages", adv, B, T);
    cllm__ref_put_matrix(out, "returns", ret, B, T);
    return CLLM_OK;
}

static cllm_result cllm__ref_ppo_loss(const cJSON *in, cJSON *out, cllm__pool *pool, cllm_err *err) {
    static const char *keys[] = { "logprobs", "old_logprobs", "advantages", "values", "old_values", "returns", "mask" };
    double *x[8], c, cv, vf_coef;
    int B = 0, T = 0, i;
    cllm_ppo_loss_out o;
    cllm_result rc;
    for (i = 0; i < 7; i++) if ((rc = cllm__ref_matrix(in, keys[i], 1, pool, &x[i], &B, &T, err)) != CLLM_OK) return rc;
    if ((rc = cllm__ref_matrix(in, "value_mask", 0, pool, &x[7], &B, &T, err)) ||
        (rc = cllm__ref_num(in, "cliprange", 0.2, &c, err)) ||
        (rc = cllm__ref_num(in, "cliprange_value", 0.2, &cv, err)) ||
        (rc = cllm__ref_num(in, "vf_coef", 0.1, &vf_coef, err))) return rc;
    memset(&o, 0, sizeof o);
    o.d_logprobs = (double *)cllm__pool_calloc(pool, (size_t)B * T, sizeof(double));
    o.d_values = (double *)cllm__pool_calloc(pool, (size_t)B * T, sizeof(double));
    if (!o.d_logprobs || !o.d_values) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm_ppo_loss(B, T, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], c, cv, vf_coef, &o, err)) != CLLM_OK) return rc;
    cJSON_AddNumberToObject(out, "pg_loss", o.pg_loss);
    cJSON_AddNumberToObject(out, "vf_loss", o.vf_loss);
    cJSON_AddNumberToObject(out, "loss", o.loss);
    cJSON_AddNumberToObject(out, "clipfrac", o.clipfrac);
    cJSON_AddNumberToObject(out, "vf_clipfrac", o.vf_clipfrac);
    cJSON_AddNumberToObject(out, "approxkl", o.approxkl);
    cllm__ref_put_matrix(out, "d_logprobs", o.d_logprobs, B, T);
    cllm__ref_put_matrix(out, "d_values", o.d_values, B, T);
    return CLLM_OK;
}

static cllm_result cllm__ref_ppo_rewards(const cJSON *in, cJSON *out, cllm__pool *pool, cllm_err *err) {
    static const char *estimators[] = { "k1", "k2", "k3" }, *placements[] = { "after_eos", "last_token" };
    double *lp, *ref, *scores, *ends = NULL, *resp = NULL, kl_coef, *rew, *kl;
    int B = 0, T = 0, n_scores, n_ends, est, place, pad, stop, b, *seq, *row;
    cllm_result rc;
    if ((rc = cllm__ref_matrix(in, "logprobs", 1, pool, &lp, &B, &T, err)) ||
        (rc = cllm__ref_matrix(in, "ref_logprobs", 1, pool, &ref, &B, &T, err))) return rc;
    n_scores = n_ends = B;
    if ((rc = cllm__ref_array(in, "scores", 1, pool, &scores, &n_scores, err)) ||
        (rc = cllm__ref_array(in, "sequence_ends", 0, pool, &ends, &n_ends, err)) ||
        (rc = cllm__ref_matrix(in, "responses", 0, pool, &resp, &B, &T, err)) ||
        (rc = cllm__ref_int(in, "pad_token_id", 0, &pad, err)) ||
        (rc = cllm__ref_int(in, "stop_token_id", -1, &stop, err)) ||
        (rc = cllm__ref_num(in, "kl_coef", 0.05, &kl_coef, err)) ||
        (rc = cllm__ref_enum(in, "kl_estimator", estimators, 3, &est, err)) ||
        (rc = cllm__ref_enum(in, "placement", placements, 2, &place, err))) return rc;
    if (!ends == !resp) return cllm__fail(err, CLLM_ERR_FORMAT, "give exactly one of \"sequence_ends\" and \"responses\" (+ \"pad_token_id\")");
    seq = (int *)cllm__pool_calloc(pool, (size_t)B, sizeof(int));
    row = (int *)cllm__pool_calloc(pool, (size_t)T, sizeof(int));
    rew = (double *)cllm__pool_calloc(pool, (size_t)B * T, sizeof(double));
    kl = (double *)cllm__pool_calloc(pool, (size_t)B * T, sizeof(double));
    if (!seq || !row || !rew || !kl) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (b = 0; b < B; b++) {
        if (ends) {
            if (ends[b] != floor(ends[b]) || ends[b] < -1 || ends[b] >= T) return cllm__fail(err, CLLM_ERR_FORMAT, "\"sequence_ends\"[%d] must be an integer in [-1, %d]", b, T - 1);
            seq[b] = (int)ends[b];
        } else {
            int t;
            for (t = 0; t < T; t++) row[t] = (int)resp[(size_t)b * T + t];
            seq[b] = cllm_ppo_sequence_end(row, T, pad, stop);
        }
    }
    if ((rc = cllm_ppo_rewards(B, T, lp, ref, scores, seq, kl_coef, est, place, rew, kl, err)) != CLLM_OK) return rc;
    cllm__ref_put_matrix(out, "rewards", rew, B, T);
    cllm__ref_put_matrix(out, "kl", kl, B, T);
    cJSON_AddItemToObject(out, "sequence_ends", cJSON_CreateIntArray(seq, B));
    return CLLM_OK;
}

static cllm_result cllm__ref_grpo(const cJSON *in, cJSON *out, cllm__pool *pool, cllm_err *err) {
    static const char *estimators[] = { "grpo", "rloo" };
    double *r, *adv, scale, eps;
    int n = -1, G, est;
    cllm_result rc;
    if ((rc = cllm__ref_array(in, "rewards", 1, pool, &r, &n, err)) ||
        (rc = cllm__ref_int(in, "group_size", 0, &G, err)) ||
        (rc = cllm__ref_num(in, "scale_rewards", 1, &scale, err)) ||
        (rc = cllm__ref_num(in, "eps", 1e-4, &eps, err)) ||
        (rc = cllm__ref_enum(in, "estimator", estimators, 2, &est, err))) return rc;
    if (!(adv = (double *)cllm__pool_calloc(pool, (size_t)n, sizeof(double)))) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm_grpo_advantages(n, r, G, est, est == CLLM_GROUP_GRPO && scale != 0, eps, adv, err)) != CLLM_OK) return rc;
    cJSON_AddItemToObject(out, "advantages", cJSON_CreateDoubleArray(adv, n));
    return CLLM_OK;
}

/* AdamW is the library's cllm_adamw_step (torch semantics): parameters and moments are
   cllm_float, so in a float build the results carry float rounding. */
static cllm_result cllm__ref_adamw(const cJSON *in, cJSON *out, cllm__pool *pool, cllm_err *err) {
    double *p0, *g, *betas = NULL, lr, eps, wd;
    cllm_float *p, *gf, *m, *v;
    int n = -1, steps = 0, nb = 2, s, i;
    cJSON *list;
    cllm_result rc;
    if ((rc = cllm__ref_array(in, "params", 1, pool, &p0, &n, err)) ||
        (rc = cllm__ref_matrix(in, "grads", 1, pool, &g, &steps, &n, err)) ||
        (rc = cllm__ref_array(in, "betas", 0, pool, &betas, &nb, err)) ||
        (rc = cllm__ref_num(in, "lr", 1e-3, &lr, err)) ||
        (rc = cllm__ref_num(in, "eps", 1e-8, &eps, err)) ||
        (rc = cllm__ref_num(in, "weight_decay", 1e-2, &wd, err))) return rc;
    p = (cllm_float *)cllm__pool_calloc(pool, (size_t)n, sizeof *p);
    gf = (cllm_float *)cllm__pool_calloc(pool, (size_t)n, sizeof *gf);
    m = (cllm_float *)cllm__pool_calloc(pool, (size_t)n, sizeof *m);
    v = (cllm_float *)cllm__pool_calloc(pool, (size_t)n, sizeof *v);
    if (!p || !gf || !m || !v) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < n; i++) p[i] = (cllm_float)p0[i];
    list = cJSON_AddArrayToObject(out, "params");
    for (s = 0; s < steps; s++) {
        cJSON *row = cJSON_CreateArray();
        for (i = 0; i < n; i++) gf[i] = (cllm_float)g[(size_t)s * n + i];
        cllm_adamw_step(p, gf, m, v, (size_t)n, s + 1, lr, betas ? betas[0] : 0.9, betas ? betas[1] : 0.999, eps, wd);
        for (i = 0; i < n; i++) cJSON_AddItemToArray(row, cJSON_CreateNumber((double)p[i]));
        cJSON_AddItemToArray(list, row);
    }
    return CLLM_OK;
}

static cllm_result cllm__ref_bleu(const cJSON *in, cJSON *out, cllm__pool *pool, cllm_err *err) {
    static const char *levels[] = { "char", "token" }, *smooth[] = { "method0", "method1", "method2" };
    const cJSON *refs = cJSON_GetObjectItemCaseSensitive(in, "references"), *e;
    const char *hyp = cllm__json_str(in, "hypothesis"), **list;
    int level, smoothing, n = 0;
    double bleu;
    cllm_result rc;
    if ((rc = cllm__ref_enum(in, "level", levels, 2, &level, err)) ||
        (rc = cllm__ref_enum(in, "smoothing", smooth, 3, &smoothing, err))) return rc;
    if (!hyp) return cllm__fail(err, CLLM_ERR_FORMAT, "\"hypothesis\" must be a string");
    if (!cJSON_IsArray(refs) || cJSON_GetArraySize(refs) < 1) return cllm__fail(err, CLLM_ERR_FORMAT, "\"references\" must be a non-empty array of strings");
    if (!(list = (const char **)cllm__pool_calloc(pool, (size_t)cJSON_GetArraySize(refs), sizeof *list))) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    cJSON_ArrayForEach(e, refs) {
        if (!cJSON_IsString(e)) return cllm__fail(err, CLLM_ERR_FORMAT, "\"references\" must hold only strings");
        list[n++] = e->valuestring;
    }
    if ((rc = cllm_bleu(n, list, hyp, level, smoothing, &bleu, err)) != CLLM_OK) return rc;
    cJSON_AddNumberToObject(out, "bleu", bleu);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_ref_json(const char *name, const char *input, size_t len, char **output, cllm_err *err) {
    static const struct { const char *name; cllm_result (*fn)(const cJSON *, cJSON *, cllm__pool *, cllm_err *); } table[] = {
        { "dpo", cllm__ref_dpo }, { "gae", cllm__ref_gae }, { "ppo-loss", cllm__ref_ppo_loss },
        { "ppo-rewards", cllm__ref_ppo_rewards }, { "grpo", cllm__ref_grpo }, { "adamw", cllm__ref_adamw },
        { "bleu", cllm__ref_bleu },
    };
    cllm__pool pool;
    cJSON *in = NULL, *out = NULL;
    const char *end = NULL;
    char *text = NULL;
    cllm_result rc = CLLM_OK;
    size_t i, k = sizeof table / sizeof table[0];
    *output = NULL;
    memset(&pool, 0, sizeof pool);
    for (i = 0; i < k; i++) if (name && strcmp(name, table[i].name) == 0) break;
    if (i == k) return cllm__fail(err, CLLM_ERR_ARG, "ref: unknown name '%s' (dpo, gae, ppo-loss, ppo-rewards, grpo, adamw, bleu)", name ? name : "");
    in = cJSON_ParseWithLengthOpts(input, len, &end, 0);
    if (!in || !cJSON_IsObject(in)) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "ref %s: the input is not one JSON object", name); goto done; }
    for (; end && end < input + len; end++)
        if (!strchr(" \t\r\n", *end)) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "ref %s: unexpected text after the JSON object", name); goto done; }
    if (!(out = cJSON_CreateObject())) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    if ((rc = table[i].fn(in, out, &pool, err)) != CLLM_OK) {
        if (err) { char msg[CLLM_ERRMSG_SIZE]; memcpy(msg, err->msg, sizeof msg); snprintf(err->msg, sizeof err->msg, "ref %s: %.400s", name, msg); }
        goto done;
    }
    if (!(text = cJSON_PrintUnformatted(out)) || !(*output = cllm__strdup(text))) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    cllm__ok(err);
done:
    for (k = 0; k < (size_t)pool.n; k++) CLLM_FREE(pool.p[k]);
    if (text) cJSON_free(text);
    cJSON_Delete(in);
    cJSON_Delete(out);
    return rc;
}

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
