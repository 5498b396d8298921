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
      7. Reading guide: the layout of the implementation, and each step of the paper -> its code
      License: see the end of the file.

   ---------------------------------------------------------------------------------------------
   1. QUICK START
   ---------------------------------------------------------------------------------------------
      #define COLLABLLM_IMPLEMENTATION
      #include "collabllm.h"
      #include <string.h>

      cllm_err err;
      cllm_model model;
      if (cllm_model_load(&model, "path/to/hf-model-dir", &err) != CLLM_OK) {
          fprintf(stderr, "%s\n", err.msg); return 1;
      }
      int ids[] = { 1, 2, 3, 4 };
      cllm_batch batch;
      memset(&batch, 0, sizeof batch);                            // zero fields = defaults
      batch.B = 1; batch.T = 4; batch.input_ids = ids;          // labels default to input_ids
      cllm_forward(&model, &batch, NULL, &err);                   // model.loss, model.seq_logp[b]
      printf("loss %.4f\n", (double)model.loss);
      cllm_zero_grad(&model, &err);                               // every call returns CLLM_OK or fills err
      cllm_backward(&model, NULL, NULL, &err);                    // d(loss)/d(params) in model.grads
      cllm_adamw_config opt;
      memset(&opt, 0, sizeof opt);       // zero fields = defaults: betas 0.9 and 0.999, eps 1e-8, weight decay 0
      cllm_clip_grad_norm(&model, 1.0);                           // clip the gradient norm to 1
      cllm_adamw_update(&model, &opt, 1e-5, &err);                // one AdamW step, learning rate 1e-5
      cllm_model_save(&model, "out-dir", CLLM_DT_F32, &err);      // config.json + model.safetensors
      cllm_model_free(&model);
      // (tests/test_doc_blocks.sh compiles and runs this block on a tiny model)

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
   Tokenizers (tokenizer.json, byte-level BPE; ids identical to Hugging Face tokenizers)
      cllm_tokenizer_load()    -- tokenizer.json (+ tokenizer_config.json: bos/eos/pad, chat_template) from a
                                  directory or a file
      cllm_tokenizer_load_json() -- the same from memory; cllm_tokenizer_free()
      cllm_tokenizer_encode()  -- text -> ids (+ byte offsets), optionally with the post-processor's special tokens
      cllm_tokenizer_decode()  -- ids -> text (lossy UTF-8 as HF); cllm_tokenizer_token_id(), cllm_tokenizer_id_bytes()
      cllm_decode_stream_init(), _push(), _flush(), _free() -- incremental decoding for generation
   Chat templates and assistant masks
      cllm_chat_render()       -- messages -> rendered text, ids and the trainable (assistant) mask
      cllm_chat_family_name()  -- "chatml", "qwen3", "llama3", "llama3.1"
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
                                  a per-request deadline, retries, concurrency, memory bounds; cllm_client_free()
      cllm_client_chat_batch() -- n chat completions in flight at once, each retried on 408/429/5xx/timeouts
                                  with jittered backoff and Retry-After; per-request status and usage
      cllm_client_chat()       -- one completion; cllm_chat_result_free()
      cllm_conv_push(), cllm_conv_copy(), cllm_conv_free()  -- conversations that own their strings
      cllm_conv_push_meta(), cllm_msg_incomplete() -- with each message's finish_reason and U+FFFD count
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
   Local models as assistants and simulators (a collabllm.h model wherever an API model goes)
      cllm_local_lm_load()     -- model + tokenizer + chat template from one HF directory; cllm_local_lm_free()
      cllm_local_chat()        -- n conversations x n_samples: text, response ids, logprobs, prompt ids,
                                  finish; stops on end-of-turn / EOS ids and stop strings; seeds from a
                                  base seed + a per-lm call counter (reproducible runs)
      cllm_local_outputs_free()
      cllm_local_assistant_init() -- the policy behind cllm_assistant (MR's future assistant), system prompt
      cllm_local_user_sim_init()  -- (b) the user simulator as a local model: cllm_user_sim_prompt through
                                  the chat template, cllm_user_sim_parse, re-sampled when unusable
   The multiturn-aware reward (paper Eq. 1-4)
      cllm_mr_config_init()    -- the paper's settings (w = 2, S = 3, lambda by task kind); w = 0 = immediate
      cllm_mr_score()          -- MR of candidate responses: S simulated futures of up to w exchanges each,
                                  all simulated together; R* per future; mean, std and every sample
      cllm_mr_reward()         -- R* from metric values: paper (- min(lambda tokens, 1)) or weighted sum
      cllm_metric_builtin()    -- named metrics: token_amount, interactivity, accuracy, exact_match, bleu,
                                  pass_rate; any C function with the cllm_metric_fn shape plugs in too
      cllm_answer_matches()    -- exact / numeric matching of a final answer
      cllm_count_tokens()      -- the policy tokenizer's count, or whitespace words
   Data generation, training files, evaluation
      cllm_datagen_run()       -- paper B.1: k candidates per turn scored by MR, best one continues; all
                                  recorded as flat CollabLLM records; resumable, shardable
      cllm_build_pairs()       -- records -> SFT rows {"messages"} and DPO pairs {"prompt", "chosen",
                                  "rejected", "score_chosen", "score_rejected"} (TRL conversational)
      cllm_eval_run()          -- paper section 4: one conversation per task, metrics, tokens, turns
   Training: SFT, DPO, LoRA, checkpoints (data_fmt/train.md)
      cllm_sft_data_load()     -- {"messages"} rows -> token sequences whose targets are the assistant mask
      cllm_dpo_data_load()     -- preference pairs -> chosen / rejected sequences (completion tokens found
                                  by byte offsets), optional precomputed reference logps
      cllm_sft_seq(), cllm_completion_seq(), cllm_train_seq_truncate() -- those tokenization and
                                  truncation rules for one example
      cllm_seq_logps()         -- summed target log-probs of sequences (e.g. a DPO reference)
      cllm_dpo_precompute_ref() -- TRL's precompute_ref_log_probs, written back into the pairs file
      cllm_sft_micro_step(), cllm_dpo_micro_step() -- one micro-batch: loss, TRL's metrics, backward
      cllm_train_sft(), cllm_train_dpo() -- whole runs: shuffled epochs, gradient accumulation,
                                  schedule, clipping, AdamW, metrics JSONL, progress lines, atomic
                                  resumable checkpoints (bit-identical resume), the final model
      cllm_trainer_init(), _resume(), _run(), _zero_grad(), _apply(), _update(), _save(), _save_final(),
                               _free() -- the loop itself, reused by other trainers through a
                                  cllm_train_task (micro-batches, or a whole step of its own as PPO's)
      cllm_lora_init(), cllm_lora_load(), cllm_lora_save(), cllm_lora_merge(), cllm_lora_free()
                               -- LoRA adapters (PEFT's format and init), frozen base, merge and save
   Online training: online DPO, PPO, GRPO driven by MR (data_fmt/train_online.md)
      cllm_online_prompts_from_tasks() -- prompts from a task file: the simulator's opening turns
                                  (made once, cached in a file)
      cllm_online_prompts_read() -- prompts from MR records or a prompts file (data_fmt/train_prompts.md);
                                  cllm_online_prompts_write(), cllm_online_prompts_free()
      cllm_train_online_dpo()  -- two responses per prompt, the higher MR chosen, a DPO update
                                  (TRL's OnlineDPOTrainer, CollabLLM's online stage)
      cllm_train_ppo()         -- PPO as TRL v0.19: KL-penalised MR at the end of each response, a value
                                  head on the trunk, GAE, whitening, clipped policy and value losses,
                                  epochs x mini-batches per rollout; legacy TRL's score scaling and
                                  adaptive KL (CollabLLM's PPO script) as options
      cllm_train_grpo()        -- G responses per prompt, group-normalised advantages (TRL v0.19 GRPO)
      cllm_value_head_init(), _forward(), _backward(), _free() -- PPO's critic, Linear(C, 1) on lnf
      cllm_ppo_rollout_alloc(), cllm_ppo_prepare(), cllm_ppo_rollout_loss(), cllm_ppo_rollout_free()
                               -- PPO's rollout arithmetic on plain arrays (what the trainer runs)
      cllm_grpo_loss()         -- GRPO's token-level clipped loss + beta k3 (bnpo / grpo / dr_grpo)
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
      cllm_running_moments_update(), cllm_adaptive_kl_update()
                               -- legacy TRL's running score moments and adaptive KL controller
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
      CLLM_MAX_LINE_BYTES         longest JSONL line the readers accept (default 64 MB)

      Fast paths. The default build runs the readable scalar kernels of Part I; these switches add
      the fast paths of Part III beside them (the scalar kernels stay, as the reference the tests
      compare against):
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
   Each file the library and the command-line tool read or write has a page in data_fmt/:
      model.md          model directories: config.json, safetensors (what the strict reader checks),
                        tokenizer.json (the features the encoder implements), tokenizer_config.json
      task.md           CollabLLM single-turn tasks           conversation.md  simulated conversations
      records.md        MR-scored turns (appendix B.1)        mr.md            MR of given candidates
      sft.md, dpo.md    SFT rows, DPO pairs (TRL's format)    eval.md          evaluation results
      train.md          training runs, checkpoints, metrics   train_online.md  online DPO, PPO, GRPO
      train_prompts.md  prompts of online training            meta.md          run sidecars (--resume)
      chat.md           conversations, rendered text, masks   generate.md      sampled responses
      generate-ids.md   sampling from token ids               endpoints.md     endpoints and API keys
      dump.md, ref.md   outputs, gradients and objectives     bench.md         the benchmark's figures
                        for checking other code against this one

   ---------------------------------------------------------------------------------------------
   6. LIMITS AND TRUST
   ---------------------------------------------------------------------------------------------
      Compute is fp32 (or double with COLLABLLM_DOUBLE). Weights load from F32, F16, BF16, F64.
      Supported model_type: llama (no attention/mlp bias), qwen2 (q/k/v bias, no sliding window),
      qwen3 (q/k RMSNorm, no bias). rope_scaling: none, "default", "llama3", "linear".
      A header size over 100 MB, a tensor over 2^40 elements or more than 8 dims is rejected
      before anything is allocated.
      Tokenizer: verified id-for-id against Hugging Face tokenizers 0.22 (`make crosscheck`) on
      the Llama-3, Llama-3.1 and Qwen3 files and on small GPT-2 / SmolLM2 / Qwen2 / Llama-3-style
      files. Unicode tables are Unicode 15.0; characters whose properties changed in other
      Unicode versions may split differently from a library built on other tables. Text must
      be valid UTF-8 and shorter than 1 GB; token ids must be below 16 million.
      Chat templates: rendered for system / user / assistant messages; tool calls and tool
      roles are refused. Where Python jinja2 and @huggingface/jinja disagree (trim of U+0085,
      rstrip('\n')) we follow jinja2, which transformers uses.

      Untrusted input. Every parser of outside input (safetensors headers, config.json,
      tokenizer.json, tokenizer_config.json, the JSONL files, chat-completions responses, the
      simulator's and judges' JSON) is fuzzed (`make fuzz`, tests/fuzz/), and its findings are
      replayed by tests/test_fuzz_regressions.c. Sizes are checked before allocation: a JSONL
      line over CLLM_MAX_LINE_BYTES (64 MB) is refused; tokenizer.json ids must be nearly dense
      (below 2 x the tokens + 256); cllm_model_load refuses a config.json that describes more
      parameters than the weight files could hold (2 bytes each) before allocating them; a
      token-batch file is refused beyond 1e8 padded tokens (tests/test_limits.c).
      Security. The API key is read from the environment, sent only in the Authorization
      header, scrubbed from every error message and from the text endpoints send (also when an
      endpoint echoes it back, whole, cut or \u-escaped: any 8 bytes in a row of it become
      "[redacted]") and never logged or written to a file. Redirects are not followed. A
      hostile endpoint cannot make the client hold more than max_inflight_bytes of responses,
      wait past deadline_ms, or write invalid UTF-8 or an unreadable line (section II.6 of the
      implementation; tests/test_hostile.c). TLS certificates are verified unless
      cllm_client_config.insecure (`--insecure`) is set. The pass_rate metric runs model-written
      code: python is started with execvp (no shell) in its own process group, with an
      address-space and a CPU limit and a wall-clock timeout (cllm_code_config). That is not a
      sandbox: the code can read and write files and use the network as your user; run
      pass_rate only inside a container or VM you are willing to lose (tests/test_security.c).

   ---------------------------------------------------------------------------------------------
   7. READING GUIDE
   ---------------------------------------------------------------------------------------------
   After this manual come the public declarations (one line of explanation each), then the
   implementation: its preliminaries (includes, the allocator, errors, and the private names that
   are used before their definition), then four parts. Part I is CollabLLM's algorithm in the
   paper's order, written as plain scalar C: read it top to bottom. Each function that computes
   an equation or a step names its source (paper, PyTorch, TRL, PEFT) and carries the math.
      Part I    The algorithm, in the paper's order
         I.1    The model: parameters, layers (each a forward/backward pair), the linear layer with
                LoRA, the forward and backward drivers
         I.2    Optimisation: AdamW, gradient clipping, learning-rate schedules
         I.3    Objectives: DPO and its variants; PPO's per-token KL, rewards, GAE, whitening and
                clipped losses; GRPO
         I.4    The multiturn-aware reward: R*, MR, simulating futures in lockstep, the user
                simulator, the judges
         I.5    Data generation (paper appendix B.1): candidates scored by MR, SFT rows, DPO pairs
         I.6    Updates: the SFT and DPO steps, online DPO, PPO (rollout, value head, step), GRPO
      Part II   Infrastructure: II.1 basics (random numbers, files, UTF-8), II.2 checkpoints
                (safetensors, config.json, Hugging Face directories, token batches), II.3 the tokenizer,
                II.4 chat templates and assistant masks, II.5 generation (KV cache, sampling), II.6 the
                chat-completions client, II.7 chat backends (API and local models), II.8 metrics
                (pass_rate, BLEU), II.9 evaluation (paper section 4), II.10 training infrastructure
                (examples, batches, LoRA storage, checkpoints, the trainer loop, online prompts)
      Part III  Fast paths: OpenMP, cache blocking, AVX2 and NEON microkernels, and the
                dispatchers Part I calls; each computes the formula of its reference in Part I
      Part IV   Generated tables (Unicode)
   tests/header_map.sh prints every part and section with its line range and size.

   From the paper to the code. Each row: a step, the functions that compute it, and where they are
   defined (part.section). tests/reading_guide.sh fails when a function here is renamed or moves.
      The model: a decoder-only transformer as Hugging Face's modeling_llama.py (Llama, Qwen2, Qwen3)
         parameters: one allocation, named views  cllm__fill_in_param_sizes cllm__point_params                 I.1
         seeded random initialisation             cllm_model_init                                              I.1
         token embedding                          cllm__embedding_forward cllm__embedding_backward             I.1
         RMSNorm (LlamaRMSNorm)                   cllm__rmsnorm_forward cllm__rmsnorm_backward_naive           I.1
         linear layer y = x W^T + b               cllm__matmul_forward_naive cllm__matmul_backward_naive       I.1
         LoRA: + s B A dropout(x) (PEFT)          cllm__lora_forward cllm__lora_backward                       I.1
         RoPE (rotate_half; llama3 scaling)       cllm__rope_tables cllm__rope_forward cllm__rope_backward     I.1
         causal attention with GQA (eager)        cllm__attention_forward_naive cllm__attention_backward_naive  I.1
         SwiGLU MLP (LlamaMLP)                    cllm__swiglu_forward cllm__swiglu_backward                   I.1
         one block: attention, MLP, residuals     cllm__qkv_forward cllm__mlp_forward                          I.1
         log-softmax, loss, log p of each target  cllm__logsoftmax_row cllm__logsoftmax_row_backward           I.1
         the forward pass (ForCausalLMLoss)       cllm_forward                                                 I.1
         the backward pass, layers in reverse     cllm_backward                                                I.1
      Optimisation (torch, transformers)
         AdamW (torch.optim.AdamW)                cllm_adamw_step cllm_adamw_update                            I.2
         gradient clipping (clip_grad_norm_)      cllm_clip_grad_norm                                          I.2
         warmup; constant, linear, cosine decay   cllm_lr_at                                                   I.2
      Objectives (Rafailov et al. 2023; Schulman et al. 2016, 2017; TRL v0.19)
         DPO loss, variants (DPOTrainer.dpo_loss) cllm_dpo_loss                                                I.3
         per-token KL estimators k1, k2, k3       cllm_kl_estimate                                             I.3
         PPO rewards: -beta KL, score at the end  cllm_ppo_sequence_end cllm_ppo_rewards                       I.3
         whitening over a mask                    cllm_masked_whiten                                           I.3
         GAE advantages and returns               cllm_gae                                                     I.3
         clipped policy and value losses          cllm_ppo_loss                                                I.3
         GRPO / RLOO advantages, GRPO loss        cllm_grpo_advantages cllm_grpo_loss                          I.3
      The multiturn-aware reward (CollabLLM, paper section 3)
         Eq. 3-4: R* = metrics - token cost       cllm_mr_reward cllm_count_tokens                             I.4
         Eq. 1-2: MR = mean R* over S futures     cllm_mr_score                                                I.4
         futures simulated in lockstep            cllm_simulate                                                I.4
         the user simulator (appendix D.1)        cllm_user_sim_prompt cllm_user_sim_parse cllm_llm_sim_init   I.4
         judges: interactivity (D.4), accuracy    cllm_judge_interactivity cllm_judge_accuracy cllm_judge_extract  I.4
      Data generation (paper appendix B.1)
         k candidates per turn scored by MR       cllm_datagen_run                                             I.5
         SFT rows and DPO pairs (TRL's format)    cllm_build_pairs                                             I.5
      Updates (paper section 3 and Table 6; TRL v0.19 trainers)
         the SFT and DPO steps                    cllm_sft_micro_step cllm_dpo_micro_step                      I.6
         online DPO (OnlineDPOTrainer)            cllm_train_online_dpo                                        I.6
         PPO rollout: logps, values, advantages   cllm_ppo_prepare cllm_ppo_rollout_loss                       I.6
         PPO value head, Linear(C, 1)             cllm_value_head_forward cllm_value_head_backward             I.6
         legacy TRL: score scaling, adaptive KL   cllm_running_moments_update cllm_adaptive_kl_update          I.6
         the PPO step (PPOTrainer)                cllm_train_ppo                                               I.6
         GRPO (GRPOTrainer)                       cllm_train_grpo                                              I.6
      Infrastructure and fast paths that the steps above call
         KV cache and sampling                    cllm_kv_step cllm_sample cllm_generate                       II.5
         metrics: built-in, NLTK BLEU, pass_rate  cllm_metric_builtin cllm_bleu cllm_metric_pass_rate          II.8
         evaluation (paper section 4)             cllm_eval_run                                                II.9
         the trainer loop, LoRA files (PEFT)      cllm_trainer_run cllm_lora_save                              II.10
         fast kernels and their dispatchers       cllm__matmul_forward_blocked cllm__matmul_forward            III
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
/* The longest JSONL line the readers accept (a compile-time option, manual section 3). */
#ifndef CLLM_MAX_LINE_BYTES
#define CLLM_MAX_LINE_BYTES (64L << 20)
#endif

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
    struct cllm_lora *lora;              /* attached LoRA adapters (cllm_lora_init), or NULL */
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
   dhidden: optional (B*T, C) gradient w.r.t. model.acts.lnf (e.g. from a value head).
   With LoRA adapters attached (cllm_lora_init) the base model is frozen: only the adapters'
   gradients are accumulated (into lora->grads) and model.grads is never allocated. */
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

/* A loaded tokenizer.json (+ tokenizer_config.json). Fields above `priv` are public and
   read-only; everything else lives behind `priv`. Load with cllm_tokenizer_load, release with
   cllm_tokenizer_free (safe on a zeroed struct). Encoding and decoding never modify it, so one
   tokenizer can serve several threads. */
typedef struct cllm_tokenizer {
    int   n_ids;            /* 1 + the largest id of the vocabulary and the added tokens        */
    int   bos_id;           /* tokenizer_config.json bos_token as an id, -1 if none             */
    int   eos_id;           /* eos_token, -1 if none                                            */
    int   pad_id;           /* pad_token, -1 if none                                            */
    int   add_bos_token;    /* tokenizer_config.json add_bos_token (informational: whether BOS is
                               added is decided by tokenizer.json's post_processor, as in HF's
                               fast tokenizers), -1 if absent                                    */
    int   chat_family;      /* cllm_chat_family detected from chat_template, 0 if there is none  */
    char *chat_template;    /* the chat_template text, NULL if none                             */
    char *bos_token, *eos_token, *pad_token;   /* the token strings, NULL if none               */
    struct cllm__tok *priv;
} cllm_tokenizer;

/* path_or_dir: a tokenizer.json file, or a directory holding tokenizer.json. A
   tokenizer_config.json next to it is read when present (bos/eos/pad, add_bos_token,
   chat_template). Anything the encoder does not implement fails with CLLM_ERR_UNSUPPORTED
   naming the feature (e.g. a pre-tokenizer regex other than the GPT-2, Llama-3 and Qwen2 ones). */
CLLMDEF cllm_result cllm_tokenizer_load(cllm_tokenizer *tok, const char *path_or_dir, cllm_err *err);
/* The same from memory: tokenizer_json is the tokenizer.json text, config_json the
   tokenizer_config.json text or NULL. */
CLLMDEF cllm_result cllm_tokenizer_load_json(cllm_tokenizer *tok, const char *tokenizer_json, size_t len,
                                             const char *config_json, size_t config_len, cllm_err *err);
CLLMDEF void        cllm_tokenizer_free(cllm_tokenizer *tok);

/* Encodes len bytes of UTF-8 text (invalid UTF-8 is rejected, as HF accepts only strings).
   add_special_tokens: apply the post_processor (e.g. Llama-3.1's <|begin_of_text|>).
   *ids (n values) is allocated here; offsets, if not NULL, receives an allocated array of 2*n
   byte offsets: token i covers text[offsets[2i], offsets[2i+1]) (tokens added by the
   post_processor get [0,0); after NFC a token maps to the original bytes it came from). Special
   and added tokens written in the text are matched as tokens (HF's default). Free the arrays
   with cllm_free_buffer. */
CLLMDEF cllm_result cllm_tokenizer_encode(const cllm_tokenizer *tok, const char *text, size_t len, int add_special_tokens,
                                          int **ids, int *n, int **offsets, cllm_err *err);
/* Decodes n ids to UTF-8 (allocated, NUL-terminated; *len may be NULL). Bytes that do not form
   valid UTF-8 become U+FFFD, one per maximal invalid subsequence (Rust's from_utf8_lossy).
   skip_special: leave out added tokens marked special. Unknown ids are skipped, as in HF. */
CLLMDEF cllm_result cllm_tokenizer_decode(const cllm_tokenizer *tok, const int *ids, int n, int skip_special,
                                          char **text, size_t *len, cllm_err *err);
/* The id of a token given as it is written in tokenizer.json ("<|im_end|>", "Ġthe"), or -1. */
CLLMDEF int         cllm_tokenizer_token_id(const cllm_tokenizer *tok, const char *token);
/* The bytes id decodes to on its own (not NUL-terminated, may be part of a UTF-8 character);
   NULL for an unknown id. */
CLLMDEF const char *cllm_tokenizer_id_bytes(const cllm_tokenizer *tok, int id, size_t *len);

/* Streaming decoder for generation: push ids one at a time and get the text that is complete so
   far. A UTF-8 character split across tokens is held back until its last byte arrives, so the
   concatenated output equals cllm_tokenizer_decode of all the ids. */
typedef struct cllm_decode_stream {
    const cllm_tokenizer *tok;
    int            skip_special;   /* as in cllm_tokenizer_decode                               */
    unsigned char  pending[4];     /* bytes of an unfinished UTF-8 character                    */
    int            n_pending;
    char          *buf;            /* output of the last push or flush (owned; freed by _free)  */
    size_t         cap;
} cllm_decode_stream;
CLLMDEF void        cllm_decode_stream_init(cllm_decode_stream *s, const cllm_tokenizer *tok, int skip_special);
/* *out / *out_len: the newly completed text (possibly empty), valid until the next call. */
CLLMDEF cllm_result cllm_decode_stream_push(cllm_decode_stream *s, int id, const char **out, size_t *out_len, cllm_err *err);
/* Ends the stream: an unfinished character becomes U+FFFD. */
CLLMDEF cllm_result cllm_decode_stream_flush(cllm_decode_stream *s, const char **out, size_t *out_len, cllm_err *err);
CLLMDEF void        cllm_decode_stream_free(cllm_decode_stream *s);

/* ============================================================================================ */
/* Chat templates and assistant masks                                                           */
/* ============================================================================================ */

/* Chat-template families rendered natively (no Jinja engine): the tokenizer_config.json
   chat_template is recognised by its distinctive text and rendered exactly as the Jinja would
   for conversations of system / user / assistant messages without tools. */
typedef enum cllm_chat_family {
    CLLM_CHAT_NONE = 0,
    CLLM_CHAT_CHATML,       /* <|im_start|>role\ncontent<|im_end|>\n; SmolLM2 and Qwen2.5 add their
                               default system prompt when the first message is not a system one */
    CLLM_CHAT_QWEN3,        /* Qwen3: ChatML + <think> blocks; thinking off by default            */
    CLLM_CHAT_LLAMA3,       /* Llama-3: bos, <|start_header_id|>role<|end_header_id|>\n\ncontent|trim<|eot_id|> */
    CLLM_CHAT_LLAMA31       /* Llama-3.1 / 3.2 / 3.3: Llama-3 plus a system block with the date    */
} cllm_chat_family;

typedef struct cllm_message {
    const char *role;       /* "system", "user" or "assistant" (ChatML and Llama-3 accept any role) */
    const char *content;    /* UTF-8 text                                                          */
} cllm_message;

typedef struct cllm_render_opts {
    int         add_generation_prompt; /* append the assistant header (default 0)                */
    int         enable_thinking;       /* Qwen3: 0 (default) = the template's enable_thinking=false
                                          output (empty <think></think> after the generation
                                          prompt); 1 = thinking on (nothing appended)             */
    const char *date_string;           /* Llama-3.1+: "Today Date" (default "26 Jul 2024", the
                                          templates' own fallback; pinned for reproducible data) */
} cllm_render_opts;

/* Human-readable name of a family ("chatml", "qwen3", "llama3", "llama3.1"). */
CLLMDEF const char *cllm_chat_family_name(int family);
/* Renders msgs with tok's chat template, then tokenizes the text once (no post_processor: the
   templates write bos themselves) and marks each token trainable (mask 1) when its first byte
   lies inside an assistant message's content or that message's end-of-turn token
   (<|im_end|>, <|eot_id|>); headers, system and user turns and the generation prompt are 0.
   Outputs (allocated, free with cllm_free_buffer; any of them may be NULL):
     text  the rendered conversation, NUL-terminated
     ids   n_ids token ids;  mask  n_ids bytes of 0/1.
   opts may be NULL (all defaults). Fails naming the template if it is not a supported family. */
CLLMDEF cllm_result cllm_chat_render(const cllm_tokenizer *tok, const cllm_message *msgs, int n, const cllm_render_opts *opts,
                                     char **text, int **ids, unsigned char **mask, int *n_ids, cllm_err *err);

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
        honoured, in seconds or as an HTTP-date, up to backoff_max_ms); a 3xx redirect is not
        followed (the key would go along): a failure naming the Location; any other status: a
        failure carrying the endpoint's error message.
     content may also be a list of parts ([{"type": "text", "text": ...}], joined); null content,
     tool_calls without text, a refusal and a non-text part are failures that say which.

   Ownership: every function that fills a result (cllm_chat_result, cllm_reply, cllm_judgement,
   cllm_conv) allocates its strings; release them with the matching *_free, which is safe on a
   zeroed struct. Request structs and configs only borrow their strings. A client, and anything
   built on it, is used by one thread at a time; batches give concurrency without threads.
   cllm_client_init calls curl_global_init, and it and cllm_client_free register and unregister the
   key with the scrubber: call them while no other thread uses the library.

   Limits and trust (tests/test_hostile.c runs each against a hostile loopback server):
   - Memory. A response is read up to max_response_bytes (64 MiB; a larger Content-Length is
     refused before any byte is read, a gzip bomb stops there too), and the responses of all
     transfers in flight together up to max_inflight_bytes (256 MiB): a transfer that would pass
     it stops and is retried once others are done. A body is released as soon as it is read.
   - Time. deadline_ms (10 minutes) bounds one request from its first attempt to its end, every
     attempt and wait included; each attempt's timeout_ms is cut to what is left of it. A wait
     over 5 s before a retry is told to cllm_client_config.on_wait in one line (who, why, how
     long); the command line prints it on stderr.
   - Text. What an endpoint sends is kept as valid UTF-8: invalid sequences become U+FFFD as
     Python's decode(errors="replace") and Hugging Face's lossy decode do, and a \u escape of a
     surrogate without its other half (which the JSON parser would refuse outright) becomes
     U+FFFD too, as JavaScript's TextEncoder does; both are counted (cllm_chat_result.replaced,
     "replaced" on the message). A \u0000 in the content fails the call (text is kept as C
     strings, and is never cut there silently); in a model's JSON answer it makes the answer
     unusable (asked again). A reply whose content would take more than CLLM_MAX_LINE_BYTES
     less 1 MiB as JSON (a control character takes 6 bytes) is refused, so every line we write
     can be read back; a conversation stops before a message that would make its line too long.
   - Incomplete replies. finish_reason is kept with each message (cllm_msg_meta); "length" and
     "content_filter" are flagged in the files ("incomplete_messages"), or with
     reject_incomplete are failed calls.
   - Secrets. The API key is read from the environment at init, sent only in the bearer header
     and wiped on free; libcurl's verbose output is never enabled. While a client lives its key
     is registered with the one scrubber that every error message passes through, whatever path
     formats it, and so does the text an endpoint sends (its content, and the fields read from a
     model's JSON answer, where a \u escape could spell the key): any 8 bytes in a row of the key
     become "[redacted]". Received text is scrubbed only of keys that look like secrets (16
     bytes or more, with a letter and a digit), since placeholders such as "EMPTY" or
     "sk-no-key-required" are made of words. TLS certificates are verified unless
     cllm_client_config.insecure is set.
   Files: data_fmt/task.md (tasks in), data_fmt/conversation.md (conversations out), and
   data_fmt/endpoints.md (OpenAI, vLLM, llama.cpp server, Ollama). */

/* ---- conversations ------------------------------------------------------------------------- */

/* cllm_message is declared with the chat templates above. */

/* A conversation. Built with cllm_conv_push it owns its strings (release with cllm_conv_free); a
   view filled by hand over borrowed strings is fine to pass anywhere but must not be freed. */
typedef struct cllm_msg_meta {      /* how a generated message ended (zero: not known)           */
    char finish_reason[32];         /* as the endpoint reported it ("stop", "length",
                                       "content_filter", ...); a local model's "eos" and stop
                                       strings give "stop", max_new_tokens "length"               */
    int  replaced;                  /* invalid UTF-8 sequences and unpaired surrogate escapes
                                       that became U+FFFD                                         */
} cllm_msg_meta;

typedef struct cllm_conv {
    cllm_message  *msgs;
    int            n, cap;
    cllm_msg_meta *meta;            /* cap entries beside msgs, or NULL (a view: all unknown)    */
} cllm_conv;

CLLMDEF cllm_result cllm_conv_push(cllm_conv *c, const char *role, const char *content, cllm_err *err); /* copies both */
/* The same with how the message ended (meta may be NULL). */
CLLMDEF cllm_result cllm_conv_push_meta(cllm_conv *c, const char *role, const char *content, const cllm_msg_meta *meta,
                                        cllm_err *err);
/* A reply that a length limit cut off or a content filter blocked ("length", "content_filter"). */
CLLMDEF int         cllm_msg_incomplete(const cllm_msg_meta *meta);
CLLMDEF cllm_result cllm_conv_copy(cllm_conv *dst, const cllm_conv *src, cllm_err *err);  /* deep copy into a zeroed dst */
CLLMDEF void        cllm_conv_free(cllm_conv *c);
/* [{"role": ..., "content": ...}, ...] <-> conversation; roles must be system, user or assistant.
   A message's meta adds "finish_reason" (when known) and "replaced" (when not 0); from_json
   reads them back. from_json fills c from scratch (free a conversation it held before). */
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
    long        deadline_ms;        /* one request from its first attempt to its end, every attempt
                                       and wait included; default 600000 (10 minutes)            */
    int         max_retries;        /* retries after the first attempt; default 5; negative: none */
    long        backoff_ms;         /* first retry wait, doubled per retry, jittered; default 500 */
    long        backoff_max_ms;     /* cap on any one wait, Retry-After included; default 60000  */
    int         max_concurrency;    /* requests in flight at once; default 16                    */
    long        max_response_bytes; /* larger responses fail with CLLM_ERR_LIMIT; default 64 MiB  */
    long long   max_inflight_bytes; /* response bytes held by all transfers in flight together; one
                                       that would pass it stops and is retried; default 256 MiB  */
    int         reject_incomplete;  /* 1: a reply whose finish_reason is "length" or
                                       "content_filter" is a failed call (default 0: kept, with
                                       its finish_reason recorded)                               */
    int         insecure;           /* 1: skip TLS certificate checks (default 0: verify)        */
    uint64_t    seed;               /* seeds the backoff jitter (default: time and address)      */
    /* Told, in one line, of every wait over 5 s before a retry: the endpoint, model and request
       (who), the failure (why) and the seconds (how long). Default NULL: nothing is printed. */
    void      (*on_wait)(void *ctx, const char *line);
    void       *on_wait_ctx;
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
    int         replaced;           /* invalid UTF-8 sequences and unpaired surrogate escapes of
                                       the reply that became U+FFFD                               */
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
    cllm_msg_meta meta;             /* finish_reason and replacements of the call behind it       */
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
/* Local models as assistants and simulators                                                    */
/* ============================================================================================ */

/* A collabllm.h model with its tokenizer and chat template, usable wherever an API model is:
   cllm_local_chat renders conversations with the template, generates with cllm_generate and
   returns the text together with what training needs (prompt ids, response ids, the "old"
   logprobs of PPO / online DPO); cllm_local_assistant and cllm_local_user_sim put it behind the
   cllm_assistant and cllm_user_sim interfaces (the policy as the future assistant of MR; the
   simulator kind (b)).

   Stopping. A sample ends at the chat template's end-of-turn token (<|im_end|> for ChatML and
   Qwen3; <|eot_id|>, <|eom_id|> for Llama-3/3.1), the tokenizer's eos_token, the config's
   eos_token_id, a stop string, or max_new_tokens.
   Seeds. Every conversation generated through an lm takes the next value of lm->calls; its
   samples are seeded from (sampler.seed, that counter), so a run that makes the same calls in
   the same order gives the same text on every platform, a batch of n conversations equals n
   single calls in that order, and setting lm->calls back replays a call.
   Threads: one lm serves one thread at a time (the counter); the model itself is only read.  */

typedef struct cllm_local_lm {
    cllm_model     model;
    cllm_tokenizer tok;
    int            stop_ids[CLLM_MAX_EOS + 4]; /* end-of-turn ids of the template, eos_token and the
                                                  config's eos_token_id, without repeats            */
    int            n_stop_ids;
    uint64_t       calls;       /* conversations generated so far: the seed counter (see above)   */
} cllm_local_lm;

/* dir: a Hugging Face model directory with config.json, model.safetensors (or shards),
   tokenizer.json and tokenizer_config.json (its chat_template is needed for chat). Fails if the
   tokenizer has ids beyond the model's vocab_size. Release with cllm_local_lm_free (safe on a
   zeroed lm). */
CLLMDEF cllm_result cllm_local_lm_load(cllm_local_lm *lm, const char *dir, cllm_err *err);
CLLMDEF void        cllm_local_lm_free(cllm_local_lm *lm);

typedef struct cllm_local_gen_config {
    cllm_sampler       sampler;        /* greedy / temperature (default 1.0) / top_k / top_p;
                                          sampler.seed is the base seed of the counter scheme     */
    int                max_new_tokens; /* default 256                                            */
    const char *const *stop;           /* n_stop stop strings (borrowed), checked on the decoded
                                          text after every token (default none)                   */
    int                n_stop;
    int                keep_special;   /* 1: special tokens stay in text (default 0: dropped, as
                                          HF decode(skip_special_tokens=True) and vLLM do)        */
    cllm_render_opts   render;         /* enable_thinking, date_string; add_generation_prompt is
                                          always set                                              */
    /* Optional, e.g. to stream: called after every new token that does not end the sample with
       the sample's ids so far (as cllm_gen_config.stop); nonzero stops the sample ("stop"). */
    int              (*on_token)(void *ctx, const int *ids, int n);
    void              *on_token_ctx;
} cllm_local_gen_config;

/* One generated response. All arrays are owned; free with cllm_local_outputs_free. */
typedef struct cllm_local_output {
    char       *text;        /* the response: ids decoded without the final end-of-turn/EOS token
                                (finish "eos"), special tokens dropped unless keep_special, and
                                for finish "stop" by a stop string cut where that string begins  */
    int        *ids;         /* (n) generated ids, as cllm_completion: the end-of-turn/EOS token
                                that ended the sample is the last one                             */
    cllm_float *logprobs;    /* (n) log-prob of each id under the distribution it was drawn from:
                                with top_k / top_p off, cllm_forward's logp at batch.temperature =
                                the sampling temperature (PPO's old logprobs)                     */
    int         n;
    int        *prompt_ids;  /* (n_prompt) the rendered conversation + generation prompt         */
    int         n_prompt;
    int         finish;      /* cllm_finish_reason                                                */
    uint64_t    call;        /* the lm->calls value this conversation was seeded with             */
} cllm_local_output;

/* Generates n_samples responses to each of n conversations: out[i * n_samples + s] (the caller
   provides n * n_samples entries; they are zeroed here). cfg may be NULL (defaults). On failure
   nothing is left allocated in out. */
CLLMDEF cllm_result cllm_local_chat(cllm_local_lm *lm, const cllm_conv *histories, int n, int n_samples,
                                    const cllm_local_gen_config *cfg, cllm_local_output *out, cllm_err *err);
CLLMDEF void        cllm_local_outputs_free(cllm_local_output *out, int n);

/* The policy as an assistant: respond / respond_batch over cllm_local_chat, one sample each. */
typedef struct cllm_local_assistant_config {
    cllm_local_gen_config gen;       /* temperature default 0.8 and max_new_tokens default 1024,
                                        as the API assistant's                                    */
    const char           *system_prompt; /* put first in every prompt, never stored (default none) */
} cllm_local_assistant_config;

typedef struct cllm_local_assistant {
    cllm_assistant              assistant;   /* the interface: pass &local.assistant               */
    cllm_local_lm              *lm;
    cllm_local_assistant_config cfg;         /* with defaults applied; strings borrowed             */
} cllm_local_assistant;

CLLMDEF void cllm_local_assistant_init(cllm_local_assistant *a, cllm_local_lm *lm, const cllm_local_assistant_config *cfg);

/* (b) The user simulator as a local model: the prompt of cllm_user_sim_prompt as one user
   message through the model's chat template, the answer parsed by cllm_user_sim_parse, and an
   unusable answer asked again (a new sample) up to max_parse_retries times. */
typedef struct cllm_local_user_sim_config {
    cllm_local_gen_config gen;       /* temperature default 1.0, max_new_tokens default 1024, as
                                        the API simulator's                                       */
    const char *termination;         /* default CLLM_TERMINATION_SIGNAL                           */
    const char *prompt;              /* template (default: the built-in one; placeholders as in
                                        cllm_llm_sim_config)                                      */
    int         max_parse_retries;   /* default 3; negative: none                                 */
} cllm_local_user_sim_config;

typedef struct cllm_local_user_sim {
    cllm_user_sim              sim;          /* the interface: pass &local.sim                      */
    cllm_local_lm             *lm;
    cllm_local_user_sim_config cfg;          /* with defaults applied; strings borrowed             */
    long                       generations;  /* samples drawn so far, re-asks included            */
} cllm_local_user_sim;

CLLMDEF void cllm_local_user_sim_init(cllm_local_user_sim *s, cllm_local_lm *lm, const cllm_local_user_sim_config *cfg);

/* ============================================================================================ */
/* The multiturn-aware reward (MR): paper Eq. 1-4                                               */
/* ============================================================================================ */

/* MR(m_j | t_j^h, g) = E over simulated futures t_j^f of R*(t_j^h + m_j + t_j^f | g), estimated
   with S forward samples, each a future of up to w exchanges (the user speaks, then the
   assistant) after the candidate response m_j. A user termination ends a sample early.
   R* is a weighted sum of named metrics on the whole session, plus, in the paper's variant,
   the token penalty:
       paper (default):  R* = sum_m w_m metric_m  -  min(lambda * TokenCount(m_j + t_j^f), 1)
       weighted sum:     R* = sum_m w_m metric_m   (CollabLLM's current code: the token cost is a
                         "token_amount" metric, assistant tokens / 1000, with a negative weight)
   w = 0 is the paper's immediate-reward ablation: the candidate is scored as it stands.          */

/* A session as metrics see it: history, the candidate at index n_history, then the future. */
typedef struct cllm_session {
    const cllm_goal *goal;
    const cllm_task *task;           /* reference answer, tests, metadata; may be NULL            */
    const cllm_conv *conv;
    int              n_history;      /* messages before the candidate                             */
} cllm_session;

/* A metric scores n sessions at once (so LLM judges run concurrently). It writes scores[i], or
   NAN for a session it could not score (a failed judgement is never a 0); it returns an error
   only when it could score nothing at all, with the reason in err. When it returns CLLM_OK but
   left some NAN, err->msg may say why (err->code stays CLLM_OK): the built-in metrics give the
   first reason, e.g. a judge's endpoint, HTTP status and message. */
typedef cllm_result (*cllm_metric_fn)(void *ctx, const cllm_session *sessions, int n, double *scores, cllm_err *err);
typedef struct cllm_metric {
    const char    *name;             /* reported name, e.g. "accuracy", "interactivity"           */
    double         weight;           /* w_m in R*                                                 */
    cllm_metric_fn fn;
    void          *ctx;
} cllm_metric;

/* Token counting for the penalty and the token_amount metric: the policy's tokenizer, or
   (count == NULL) whitespace-separated words, as verl's CollabLLM recipe counts them. */
typedef struct cllm_token_counter {
    int  (*count)(void *ctx, const char *text);
    void  *ctx;
} cllm_token_counter;
CLLMDEF int cllm_count_tokens(const cllm_token_counter *tc, const char *text);
/* A count function for cllm_token_counter over a tokenizer: ctx is a const cllm_tokenizer *
   (e.g. &local_lm.tokenizer); counts the tokens of text, special tokens not added. */
CLLMDEF int cllm_tokenizer_count(void *tokenizer, const char *text);

/* Built-in metrics (ctx in brackets). Look them up by name with cllm_metric_builtin.
   token_amount   [cllm_token_counter* or NULL] tokens of every assistant message / 1000 (v2)
   interactivity  [cllm_judge*]  the LLM judge's score in [0, 1] on the whole session
   accuracy       [cllm_judge*]  the judge's 0/1 verdict on the session vs the task's completion
   exact_match    [cllm_match_config* or NULL] 0/1: the final answer equals the task's completion
   bleu           [cllm_judge* or NULL] NLTK sentence BLEU, character level, of the final
                  document (judge-extracted, or the last assistant message) vs the completion
   pass_rate      [cllm_code_config*] fraction of the task's unit tests the final code passes;
                  runs that code under limits but NOT in a sandbox (section 6 of the manual)  */
CLLMDEF cllm_result cllm_metric_token_amount(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_interactivity(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_accuracy(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_exact_match(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_bleu(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_pass_rate(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
/* Fills m->name and m->fn for a built-in name (weight and ctx are left to the caller). */
CLLMDEF cllm_result cllm_metric_builtin(const char *name, cllm_metric *m, cllm_err *err);

/* The final answer of a session: its last assistant message, or the text after the last
   occurrence of answer_prefix in it when one is set. Matching ignores case, surrounding
   whitespace and repeated spaces; numeric compares numbers with a tolerance when both sides are
   numbers. */
typedef struct cllm_match_config {
    const char *answer_prefix;       /* e.g. "Answer:" (default: none, the whole message)         */
    int         numeric;             /* 1: compare as numbers when both parse (default 0)        */
    double      tolerance;           /* relative, for numeric (default 1e-6)                      */
} cllm_match_config;
CLLMDEF int cllm_answer_matches(const cllm_match_config *cfg, const char *answer, const char *reference);

/* Runs the final code of a session against the task's tests in a subprocess:
   `python -c` never, a shell never: the code and the tests are written to a temporary file that
   the interpreter runs directly, with a CPU-time, address-space and wall-clock limit.
   THIS IS NOT A SANDBOX: the code runs with your user's rights. Use a container for untrusted
   tasks. Tests come from the task's metadata ("test": Python unittest source, as BigCodeBench). */
typedef struct cllm_code_config {
    const char  *python;             /* interpreter (default "python3", looked up on PATH)        */
    double       timeout_s;          /* wall clock per run (default 10)                           */
    long         memory_mb;          /* address-space limit (default 2048)                        */
    cllm_judge  *extractor;          /* extracts the code from the session (default: the last
                                        ```python block of the last assistant message)          */
} cllm_code_config;

typedef enum cllm_mr_variant { CLLM_MR_PAPER = 0, CLLM_MR_WEIGHTED_SUM = 1 } cllm_mr_variant;
typedef enum cllm_mr_preset {
    CLLM_MR_PRESET_MATH = 0,         /* paper Table 6: w=2, S=3, lambda 5e-4                      */
    CLLM_MR_PRESET_CODE,             /* w=2, S=3, lambda 5e-4                                     */
    CLLM_MR_PRESET_DOCUMENT          /* w=2, S=3, lambda 1e-4                                     */
} cllm_mr_preset;

typedef struct cllm_mr_config {
    int                window;       /* w: simulated exchanges after the candidate (0 = immediate) */
    int                samples;      /* S: forward samples averaged (>= 1)                        */
    int                variant;      /* cllm_mr_variant                                           */
    double             lambda;       /* paper variant: token cost; penalty = min(lambda * tokens, 1),
                                        tokens = candidate + simulated future, both roles (v1)   */
    const cllm_metric *metrics;      /* the weighted terms of R* (borrowed)                       */
    int                n_metrics;
    cllm_token_counter tokens;       /* how the penalty counts tokens (default: words)            */
} cllm_mr_config;
/* The paper's settings for a task kind (metrics are left empty for the caller to choose). w = 0
   is a legal setting, so this struct is set up by a function rather than by zero defaults. */
CLLMDEF void cllm_mr_config_init(cllm_mr_config *cfg, cllm_mr_preset preset);

/* What is scored: the candidate response to a conversation whose last message is the user's. */
typedef struct cllm_mr_item {
    const cllm_goal *goal;           /* what the simulated user wants                             */
    const cllm_task *task;           /* passed to the metrics; may be NULL                        */
    const cllm_conv *history;        /* t_j^h                                                     */
    const char      *candidate;      /* m_j                                                       */
} cllm_mr_item;

typedef struct cllm_mr_sample {      /* one simulated future and its scores                       */
    cllm_conv   session;             /* history + candidate + future (owned)                      */
    int         n_history;           /* the candidate's index in session                          */
    int         terminated;          /* the simulated user ended the conversation                 */
    int         tokens;              /* the penalty's token count (paper variant)                 */
    double     *metrics;             /* n_metrics values, as the config lists them; NAN = failed  */
    double      reward;              /* R* of this sample; NAN when the sample failed             */
    cllm_result code;                /* CLLM_OK, or why the sample failed (simulation or metric)  */
    cllm_err    err;
} cllm_mr_sample;

typedef struct cllm_mr_result {
    double          mr;              /* mean R* over the samples that succeeded                   */
    double          std;             /* their standard deviation (population)                     */
    int             n_ok;            /* samples that succeeded                                     */
    cllm_mr_sample *samples;         /* cfg.samples of them (owned)                               */
    int             n_samples;
    cllm_result     code;            /* CLLM_OK when at least one sample succeeded                 */
    cllm_err        err;
} cllm_mr_result;

/* Scores n items. All n*S futures are simulated together (each round of simulator calls is one
   concurrent batch), then each metric scores all sessions in one batch. future_assistant plays
   the assistant in the futures: the policy itself (online training) or an API model (offline
   data generation, as in the paper). out: n results (zeroed here; free with cllm_mr_result_free).
   Returns CLLM_OK when every item has at least one good sample. */
CLLMDEF cllm_result cllm_mr_score(const cllm_mr_config *cfg, const cllm_user_sim *user, const cllm_assistant *future_assistant,
                                  const cllm_mr_item *items, int n, cllm_mr_result *out, cllm_err *err);
CLLMDEF void        cllm_mr_result_free(cllm_mr_result *r);
/* R* of one sample from its metric values and token count (the pure aggregation). */
CLLMDEF double      cllm_mr_reward(const cllm_mr_config *cfg, const double *metric_values, int tokens);

/* ============================================================================================ */
/* Data generation (paper B.1), SFT rows and DPO pairs, and evaluation (paper section 4)         */
/* ============================================================================================ */

/* For each task: the simulator opens the conversation; at every turn the candidate model
   samples k responses, each is scored by MR, all k are recorded, and the best one continues the
   conversation. The next user message is taken from the best candidate's longest simulated
   future (CollabLLM v2), or asked of the simulator when there is none. A conversation ends when
   the user terminates or after max_turns user turns.
   Output: one JSON line per (turn, candidate) in CollabLLM's flat schema (data_fmt/records.md),
   appended per task and flushed to disk, so that a crash loses at most the task in flight. A
   restarted run keeps the finished tasks, drops a half-written one, and continues. */
typedef struct cllm_datagen_config {
    cllm_mr_config mr;               /* how candidates are scored (set up with cllm_mr_config_init) */
    int            n_candidates;     /* k responses per turn (default 2, CollabLLM's CLI)          */
    int            max_turns;        /* user turns per conversation (default 7 = 14 messages)      */
    const char    *task_desc;        /* cllm_goal.task_desc for every task (default "a task")     */
    int            show_reference;   /* 1: the simulator also sees single_turn_completion         */
    int            shard, n_shards;  /* process tasks with index % n_shards == shard (default 0/1) */
    int            verbose;          /* 1: a progress line per task on stderr                       */
} cllm_datagen_config;

/* candidates: samples the k responses (its respond_batch receives k copies of the history, so a
   sampling model must give different replies to equal inputs). future_assistant: plays the
   assistant inside MR's futures (the paper: the same API model offline; the policy online). */
CLLMDEF cllm_result cllm_datagen_run(const cllm_datagen_config *cfg, const cllm_user_sim *user,
                                     const cllm_assistant *candidates, const cllm_assistant *future_assistant,
                                     const cllm_task *tasks, int n_tasks, const char *out_path, cllm_err *err);

/* From records (data_fmt/records.md) to training files, both in formats TRL reads unchanged:
   SFT rows {"messages": [...]} (data_fmt/sft.md): per conversation the best response at its last
   turn, with its prompt; DPO pairs {"prompt", "chosen", "rejected", "score_chosen",
   "score_rejected"} in TRL's conversational form (data_fmt/dpo.md): per (conversation, turn) the
   highest against the lowest score, kept when the gap is at least min_gap (default 0.02).
   Either output path may be NULL. Counts are returned through n_sft / n_pairs (optional). */
typedef struct cllm_pairs_config {
    double      min_gap;             /* default 0.02 (CollabLLM offline DPO)                       */
    const char *system_prompt;       /* prepended as a system message to prompts (default none)   */
} cllm_pairs_config;
CLLMDEF cllm_result cllm_build_pairs(const char *records_path, const cllm_pairs_config *cfg, const char *sft_path,
                                     const char *dpo_path, int *n_sft, int *n_pairs, cllm_err *err);

/* Evaluation as in the paper: one conversation per task between the model and the simulator,
   up to max_turns user turns, then the metrics on the whole conversation. Per task it writes a
   JSON line (data_fmt/eval.md) with the conversation, every metric (null when unscored), the
   assistant's tokens and, on failure, why (a judge's failure names its endpoint, HTTP status and
   message); the aggregate is the mean of each metric over the conversations it scored, with
   that count. Returns an error when any conversation failed (the details are still written). */
typedef struct cllm_eval_config {
    int                max_turns;    /* user turns per conversation (default 7)                    */
    const char        *task_desc;    /* default "a task"                                           */
    int                show_reference;
    const cllm_metric *metrics;      /* reported metrics (weights ignored)                         */
    int                n_metrics;
    cllm_token_counter tokens;       /* counts the assistant's tokens (default: words)             */
    int                verbose;
} cllm_eval_config;
typedef struct cllm_eval_summary {
    int     n_tasks, n_failed;       /* conversations, and those with any failure (a simulation
                                        call, or a metric that could not score them)               */
    double *metric_means;            /* n_metrics means, each over the conversations that metric
                                        scored; NAN when it scored none (never a 0) (owned)         */
    int    *metric_counts;           /* n_metrics: how many conversations each metric scored (owned) */
    double  tokens_k;                /* mean assistant tokens per simulated conversation, thousands */
    double  turns;                   /* mean user turns per simulated conversation                  */
} cllm_eval_summary;
CLLMDEF cllm_result cllm_eval_run(const cllm_eval_config *cfg, const cllm_user_sim *user, const cllm_assistant *model,
                                  const cllm_task *tasks, int n_tasks, const char *details_path,
                                  cllm_eval_summary *summary, cllm_err *err);
CLLMDEF void        cllm_eval_summary_free(cllm_eval_summary *s);

/* ============================================================================================ */
/* Training: SFT, DPO, LoRA, checkpoints                                                        */
/* ============================================================================================ */

/* The paper's training stages (SFT, then offline DPO) on one loop that online DPO, PPO and GRPO
   reuse. Where the Hugging Face Trainer / TRL v0.19 define a behaviour we follow it and say so.

   One optimizer step (cllm_trainer_run):
     1. examples: epoch e visits the data set in the order of a Fisher-Yates shuffle driven by
        cllm_rng_seed(seed * 0x9E3779B97F4A7C15 + e); micro-batches of batch_size examples, the
        last one of an epoch shorter (HF's drop_last=False); grad_accum micro-batches per step,
        the last step of an epoch takes the micro-batches that remain. The position in the data
        is a function of the step number alone, which is what makes resuming exact.
     2. each micro-batch: forward, loss, backward, accumulating into the gradients. The step's
        objective is (sum of the losses of its units) / (units in the whole step), units = target
        tokens (SFT) or pairs (DPO): accumulating k micro-batches equals one batch k times larger.
        (HF divides each micro-batch's mean by grad_accum instead; the two agree when every
        micro-batch holds the same number of units.)
     3. a loss or gradient norm that is NaN or infinite stops the run with CLLM_ERR_NUMERIC before
        anything is updated; the last checkpoint written stays `latest`.
     4. torch's clip_grad_norm_(max_grad_norm), lr = cllm_lr_at(schedule, lr, step, warmup,
        total) (the first update uses step 0), AdamW (cllm_adamw_step; weight decay on matrices).
     5. a progress line on stderr (step/total, loss, DPO reward margin and accuracy, lr, gradient
        norm, tokens/s, ETA), a JSON line in the metrics file (data_fmt/train.md), and a
        checkpoint every save_every steps and at the end.

   Checkpoints (data_fmt/train.md): OUT/ckpt-N/ holds the trained weights as a Hugging Face
   directory (config.json + model.safetensors + the tokenizer files), or with LoRA the PEFT
   adapter (adapter_config.json + adapter_model.safetensors); optimizer.safetensors (AdamW's m
   and v); trainer_state.json (step, epoch, data position and seed, RNG state, schedule, adam_t,
   the settings that must not change). It is written into OUT/ckpt-N.tmp/, every file flushed to
   disk, then renamed to OUT/ckpt-N/, and only then does OUT/latest (one line "ckpt-N", itself
   written through a temporary and a rename) point at it: a crash at any moment leaves the
   previous checkpoint intact. A resumed run (cfg.resume) continues with bit-identical losses.

   Memory: full fine-tuning holds the parameters, their gradients and two AdamW moments (16
   bytes per parameter in fp32) plus activations; with LoRA the base model has no gradient buffer
   and no moments. Measured (examples/lora_memory.c, `make lora-memory`): the Qwen2.5-0.5B shape
   with r = 32 adapters on all seven projections peaks at 3.1 GiB resident for one 512-token
   row and 4.1 GiB for a DPO pair of two 512-token rows (weights 2.0 GB of it).                */

/* ---- LoRA adapters (PEFT) ---------------------------------------------------------------- */

/* A LoRA adapter on a linear layer y = x W^T (+ b) adds  (alpha / r) * B A dropout(x):
   A (r, in) and B (out, r) are trained, W is frozen (Hu et al. 2021; PEFT's LoraLayer).
   Init as PEFT's init_lora_weights="gaussian" (CollabLLM's setting): A ~ normal with standard
   deviation 1/r (PEFT's nn.init.normal_(std=1/r)), B = 0, so training starts at the base model.
   Dropout acts on the adapter's input only, in training forwards only (never when generating
   or computing a reference), with masks drawn from the trainer's seeded RNG. */
typedef enum cllm_lora_target {
    CLLM_LORA_Q = 1, CLLM_LORA_K = 2, CLLM_LORA_V = 4, CLLM_LORA_O = 8,
    CLLM_LORA_GATE = 16, CLLM_LORA_UP = 32, CLLM_LORA_DOWN = 64,
    CLLM_LORA_ALL = 127      /* q_proj k_proj v_proj o_proj gate_proj up_proj down_proj (CollabLLM) */
} cllm_lora_target;
#define CLLM_LORA_NUM_TARGETS 7
#define CLLM_LORA_MAX_R 1024

typedef struct cllm_lora_config {
    int      r;              /* rank (default 32, paper Table 6; at most CLLM_LORA_MAX_R)          */
    double   alpha;          /* the update is scaled by alpha / r (default 16, paper Table 6)      */
    double   dropout;        /* on the adapter input in training (default 0.1, paper Table 6;
                                negative = none)                                                 */
    unsigned targets;        /* cllm_lora_target bits (default CLLM_LORA_ALL)                     */
    uint64_t seed;           /* initialisation of A (default 42)                                  */
} cllm_lora_config;

typedef struct cllm_lora {
    cllm_lora_config cfg;    /* with the defaults applied                                          */
    double      scale;       /* alpha / r                                                          */
    int         n_layers;
    int         in[CLLM_LORA_NUM_TARGETS], out[CLLM_LORA_NUM_TARGETS]; /* features per target   */
    /* per target, NULL when not targeted: A (L, r, in) and B (L, out, r), stacked over layers */
    cllm_float *A[CLLM_LORA_NUM_TARGETS], *B[CLLM_LORA_NUM_TARGETS];
    cllm_float *dA[CLLM_LORA_NUM_TARGETS], *dB[CLLM_LORA_NUM_TARGETS];    /* views into grads    */
    size_t      num_params;
    cllm_float *params;      /* every A and B, one allocation                                      */
    cllm_float *grads;       /* same layout, allocated by the first backward                       */
    cllm_float *m, *v;       /* AdamW moments, allocated by the first update                       */
    int         adam_t;
    int         enabled;     /* 1 after init; 0 = the model computes as its base (DPO's reference
                                under PEFT: TRL's null_ref_context)                               */
    int         training;    /* 1 = dropout on in cllm_forward (set by the trainer around the
                                policy's training forward; generation never uses dropout)        */
    uint64_t    dropout_seed;/* the masks of the current training forward (from the trainer RNG) */
    cllm_model *model;       /* the model it is attached to (model->lora == this)                  */
    /* private: what the last cllm_forward saved for cllm_backward */
    cllm_float *u;           /* per targeted (target, layer): (u_rows, r) rows of A dropout(x)     */
    size_t      u_cap;       /* floats allocated in u                                              */
    size_t      u_rows;      /* B*T of the last forward, 0 if it ran without the adapters          */
    cllm_float *xd;          /* one dropped-out input row (max in-features)                        */
    int         recording;   /* inside cllm_forward                                                */
} cllm_lora;

/* Fresh adapters for model m, attached to it (m->lora = lo): from now on cllm_forward,
   cllm_backward and generation compute with them, and cllm_backward computes the adapters'
   gradients only (the base model is frozen and gets no gradient buffer). cfg NULL = defaults. */
CLLMDEF cllm_result cllm_lora_init(cllm_lora *lo, cllm_model *m, const cllm_lora_config *cfg, cllm_err *err);
/* Adapters saved in PEFT's format (adapter_config.json + adapter_model.safetensors), attached
   to m. Accepts the targets, r, lora_alpha and lora_dropout it finds there. */
CLLMDEF cllm_result cllm_lora_load(cllm_lora *lo, cllm_model *m, const char *dir, cllm_err *err);
/* Writes dir/adapter_config.json and dir/adapter_model.safetensors with PEFT's tensor names
   (base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight, ...). base_model: the value
   of base_model_name_or_path (may be NULL). */
CLLMDEF cllm_result cllm_lora_save(const cllm_lora *lo, const char *dir, const char *base_model, cllm_err *err);
/* PEFT's merge_and_unload: W += (alpha / r) B A for every adapter, then detaches lo from its
   model (cllm_model_save then writes a plain Hugging Face checkpoint). lo keeps its weights. */
CLLMDEF cllm_result cllm_lora_merge(cllm_lora *lo, cllm_err *err);
/* Detaches lo from its model (if attached) and releases it; safe on a zeroed struct. */
CLLMDEF void        cllm_lora_free(cllm_lora *lo);
/* PEFT name of target t (0..6, in cllm_lora_target bit order): "q_proj", ..., "down_proj". */
CLLMDEF const char *cllm_lora_target_name(int t);
/* "q,k,v,o,gate,up,down" (or the *_proj names) -> cllm_lora_target bits; "all" = every one. */
CLLMDEF cllm_result cllm_lora_parse_targets(const char *list, unsigned *targets, cllm_err *err);

/* ---- tokenized training examples --------------------------------------------------------- */

/* One sequence: token ids and, per token, whether its log-probability counts (a target). The
   first token is never a target: nothing predicts it. n_prompt tokens come before the
   completion (SFT: before the last run of targets, i.e. the final assistant message; DPO: the
   rendered prompt with its generation prompt). */
typedef struct cllm_train_seq {
    int           *ids;      /* (n) owned                                                          */
    unsigned char *target;   /* (n) 1 = a target                                                   */
    int            n;
    int            n_prompt;
} cllm_train_seq;
CLLMDEF void cllm_train_seq_free(cllm_train_seq *s);
/* Number of targets (tokens at positions >= 1 marked as targets). */
CLLMDEF int  cllm_train_seq_targets(const cllm_train_seq *s);
/* Truncation keeping the end of the prompt and the start of the completion: the prompt keeps
   its last keep_prompt tokens (at least 1, so that the first completion token is still
   predicted), then the completion keeps what fits in max_length and loses its end.
   keep_prompt < 0: computed from this sequence, max_length - (completion length) when it is
   longer than max_length (else nothing is cut). The DPO loader passes the value computed from
   the longer completion of a pair to both, so chosen and rejected keep the same prompt tokens.
   Returns 1 if anything was cut. */
CLLMDEF int  cllm_train_seq_truncate(cllm_train_seq *s, int max_length, int keep_prompt);

/* SFT: the conversation through the chat template; targets = the template's assistant mask
   (every assistant message's content and end-of-turn token; cllm_chat_render). */
CLLMDEF cllm_result cllm_sft_seq(const cllm_tokenizer *tok, const cllm_message *msgs, int n,
                                 cllm_train_seq *seq, cllm_err *err);
/* A completion after a prompt, for DPO: prompt + completion messages rendered in one pass and
   tokenized once; with P = the byte length of the prompt rendered with its generation prompt,
   the targets are the tokens that start at byte >= P and are in the assistant mask (the
   assistant's content and its end-of-turn token, e.g. <|im_end|>). Tokens after the last target
   (the newline after <|im_end|>) are dropped. The sum of the targets' log-probs is TRL's
   summed completion logp up to two differences, documented in data_fmt/train.md: TRL tokenizes
   prompt and completion separately and appends eos_token_id to a completion that already ends
   with the template's end-of-turn (and the newline after it), so its completions end with one
   or two extra tokens. The prompt's last message must be a user (or system) message, and the
   full rendering must start with the prompt's (as TRL checks). */
CLLMDEF cllm_result cllm_completion_seq(const cllm_tokenizer *tok, const cllm_message *prompt, int n_prompt,
                                        const cllm_message *completion, int n_completion,
                                        cllm_train_seq *seq, cllm_err *err);

/* SFT rows (data_fmt/train.md): JSONL lines {"messages": [{"role", "content"}, ...]} (other
   fields are ignored), each rendered by cllm_sft_seq and truncated to max_length (0 = 1024, TRL's
   max_length). A row without an assistant target is an error naming its line. */
typedef struct cllm_sft_data {
    cllm_train_seq *rows;
    int             n;
    int             n_truncated;
} cllm_sft_data;
CLLMDEF cllm_result cllm_sft_data_load(cllm_sft_data *d, const cllm_tokenizer *tok, const char *path, int max_length, cllm_err *err);
CLLMDEF void        cllm_sft_data_free(cllm_sft_data *d);

/* DPO pairs (data_fmt/train.md): {"prompt": [messages], "chosen": [messages] or "text",
   "rejected": ..., optional "ref_chosen_logps", "ref_rejected_logps"} (TRL's conversational
   preference format; cllm_build_pairs writes it). A string completion is one assistant message. */
typedef struct cllm_dpo_pair {
    cllm_train_seq chosen, rejected;
    double         ref_chosen, ref_rejected;   /* summed reference logps; NAN when not given  */
    int            line;                       /* 1-based line in the pairs file              */
} cllm_dpo_pair;
typedef struct cllm_dpo_data {
    cllm_dpo_pair *pairs;
    int            n;
    int            n_truncated;
    int            has_ref;                     /* every pair carries both reference logps     */
} cllm_dpo_data;
CLLMDEF cllm_result cllm_dpo_data_load(cllm_dpo_data *d, const cllm_tokenizer *tok, const char *path, int max_length, cllm_err *err);
CLLMDEF void        cllm_dpo_data_free(cllm_dpo_data *d);

/* Summed target log-probs of n sequences under m, batched batch_size at a time (0 = 8), no
   gradients, adapters as they are set (no dropout). */
CLLMDEF cllm_result cllm_seq_logps(cllm_model *m, const cllm_train_seq *const *seqs, int n, int batch_size,
                                   double *logps, cllm_err *err);
/* TRL's precompute_ref_log_probs: one pass of ref (no shuffling) over the pairs; stores the
   results in d and, if out_path is set, writes in_path's lines to out_path with
   "ref_chosen_logps" and "ref_rejected_logps" added (atomically). */
CLLMDEF cllm_result cllm_dpo_precompute_ref(cllm_model *ref, cllm_dpo_data *d, int batch_size,
                                            const char *in_path, const char *out_path, cllm_err *err);

/* ---- the training loop ---------------------------------------------------------------------- */

/* Statistics of one step: named sums and counts; the logged value is sum / count. Names are
   static strings ("loss", "rewards/margins", ...). */
#define CLLM_TRAIN_MAX_STATS 24
typedef struct cllm_train_stats {
    int         n;
    const char *name[CLLM_TRAIN_MAX_STATS];
    double      sum[CLLM_TRAIN_MAX_STATS], count[CLLM_TRAIN_MAX_STATS];
    double      tokens;      /* tokens through the policy's forward passes                         */
} cllm_train_stats;
CLLMDEF void   cllm_train_stats_add(cllm_train_stats *s, const char *name, double sum, double count);
CLLMDEF double cllm_train_stats_mean(const cllm_train_stats *s, const char *name);   /* NAN if absent */

struct cllm_trainer;
struct cllm_dpo_config;

/* What is trained: a data set of n_examples and a micro-step over some of them. */
typedef struct cllm_train_task {
    const char *name;        /* "sft", "dpo", ...: recorded in checkpoints and checked on resume */
    int         n_examples;  /* the unit of shuffling: rows, pairs, prompts                        */
    double      default_lr;  /* used when cfg.lr is 0                                             */
    /* Units of examples idx[0..n) that the step's loss is averaged over (targets, pairs). */
    double    (*units)(void *ctx, const int *idx, int n);
    /* Forward + loss + backward of (sum of the unit losses of idx[0..n)) / norm into the trained
       gradients; adds its statistics ("loss" as sum and units) to st. */
    cllm_result (*micro_step)(void *ctx, struct cllm_trainer *tr, const int *idx, int n, double norm,
                              cllm_train_stats *st, cllm_err *err);
    void       *ctx;
    /* Optional, instead of units and micro_step: a step that makes its own updates over the
       step's examples idx[0..n) (PPO: epochs x mini-batches of AdamW updates on one rollout,
       through cllm_trainer_update); the trainer then logs st and checkpoints as for any step. */
    cllm_result (*step)(void *ctx, struct cllm_trainer *tr, const int *idx, int n, cllm_train_stats *st, cllm_err *err);
    /* Optional state trained beside the model (PPO's value head): save writes it into the
       checkpoint directory being built, load reads it back from a checkpoint on resume. */
    cllm_result (*save_extra)(void *ctx, const char *ckpt_dir, cllm_err *err);
    cllm_result (*load_extra)(void *ctx, const char *ckpt_dir, cllm_err *err);
} cllm_train_task;

typedef struct cllm_train_config {
    double      lr;            /* peak learning rate (default: the task's, SFT 1e-5 and DPO 5e-6 as
                                  in the paper's Table 6)                                         */
    const char *lr_schedule;   /* "constant", "linear" or "cosine" (default "cosine", CollabLLM)   */
    long        warmup_steps;  /* linear warmup from 0 over this many steps (default 0)           */
    double      warmup_ratio;  /* if warmup_steps is 0: ceil(ratio * total steps) (default 0)     */
    int         epochs;        /* passes over the data (default 1; the paper: SFT 3, DPO 8)       */
    long        max_steps;     /* > 0: exactly this many optimizer steps, epochs cycling as needed
                                  (overrides epochs; default 0)                                   */
    int         batch_size;    /* examples per micro-batch (default 8, HF per_device_train_batch_size) */
    int         grad_accum;    /* micro-batches per optimizer step (default 1)                    */
    double      max_grad_norm; /* clip_grad_norm_ threshold (default 1.0; negative = no clipping) */
    cllm_adamw_config adam;    /* betas, eps, weight decay (defaults 0.9, 0.999, 1e-8, 0)         */
    uint64_t    seed;          /* data order and dropout (default 42, HF's seed)                  */
    const char *out_dir;       /* checkpoints, metrics and the final model (NULL: nothing written) */
    long        save_every;    /* a checkpoint every N steps (default 0: only at the end)         */
    int         keep_last;     /* keep only the N newest checkpoints (default 0: keep all)        */
    const char *metrics_path;  /* one JSON line per step (default OUT/metrics.jsonl; "" = none)   */
    long        log_every;     /* a progress line every N steps (default 1)                       */
    int         quiet;         /* 1: no progress lines                                            */
    int         resume;        /* 1: continue from OUT/latest when there is one (default 0)        */
    long        stop_after;    /* end this call after N steps, writing a checkpoint (default 0:
                                  run to the end); a later call with resume = 1 continues         */
    const char *model_dir;     /* where the starting model came from: recorded in checkpoints and
                                  in adapter_config.json (default none)                          */
    const char *tokenizer_dir; /* its tokenizer files are copied into checkpoints (default model_dir) */
    /* called after each step; returning nonzero ends the run after that step (no checkpoint) */
    int       (*on_step)(void *ctx, const struct cllm_trainer *tr);
    void       *on_step_ctx;
} cllm_train_config;

typedef struct cllm_trainer {
    cllm_train_config cfg;      /* defaults applied                                                */
    cllm_model       *model;    /* the policy                                                      */
    cllm_lora        *lora;     /* the adapters being trained (base frozen), or NULL: the whole model */
    cllm_train_task   task;
    long              step;             /* optimizer steps done                                   */
    long              total_steps;
    long              steps_per_epoch;
    long              warmup_steps;
    double            lr, grad_norm;    /* of the last step                                       */
    cllm_train_stats  last;             /* the last step's statistics                             */
    cllm_rng          rng;              /* dropout masks; saved in checkpoints                    */
    double            elapsed, tokens;  /* training seconds and tokens, summed over resumed runs  */
    /* private */
    int              *order;            /* this epoch's permutation                               */
    long              order_epoch;
    long              run_step0;        /* step at the start of this call                         */
    long              saved_step;       /* step of the last checkpoint written or loaded          */
    int               started;          /* metrics open and clocks set for this call              */
    double            run_t0, run_tokens0;
    FILE             *metrics;
} cllm_trainer;

/* Sets up a run of task on m (and lora, whose adapters must be attached to m). Nothing is read
   or written yet. */
CLLMDEF cllm_result cllm_trainer_init(cllm_trainer *tr, cllm_model *m, cllm_lora *lora, const cllm_train_task *task,
                                      const cllm_train_config *cfg, cllm_err *err);
/* With cfg.resume and OUT/latest present: loads that checkpoint's weights (or adapters),
   optimizer and trainer state and checks that the settings match; *resumed (optional) = 1.
   Without one it leaves the trainer at step 0. */
CLLMDEF cllm_result cllm_trainer_resume(cllm_trainer *tr, int *resumed, cllm_err *err);
/* Runs steps until total_steps (or stop_after / on_step), then writes a checkpoint. */
CLLMDEF cllm_result cllm_trainer_run(cllm_trainer *tr, cllm_err *err);
/* The pieces of a step, for loops that are not "one micro-step per batch" (PPO's epochs over a
   rollout): zero the trained gradients; then after backward passes, check, clip, update, log
   and checkpoint as one step (stats: the step's statistics, with "loss"). */
CLLMDEF cllm_result cllm_trainer_zero_grad(cllm_trainer *tr, cllm_err *err);
CLLMDEF cllm_result cllm_trainer_apply(cllm_trainer *tr, const cllm_train_stats *stats, cllm_err *err);
/* For a task's own step function: one AdamW update of the trained parameters at this step's
   learning rate, after the caller has checked and clipped the gradients (no logging, the step
   does not advance). *lr (optional) receives the rate used. */
CLLMDEF cllm_result cllm_trainer_update(cllm_trainer *tr, double *lr, cllm_err *err);
/* A checkpoint of the current step (OUT/ckpt-N, then OUT/latest), pruning old ones. */
CLLMDEF cllm_result cllm_trainer_save(cllm_trainer *tr, cllm_err *err);
/* The trained model as a plain Hugging Face directory with the tokenizer files; with LoRA the
   adapters are merged into the saved weights (the model in memory keeps them separate) and,
   if adapter_dir is set, also saved there as PEFT files. State trained beside the model
   (task.save_extra: PPO's value head) is written into dir too. */
CLLMDEF cllm_result cllm_trainer_save_final(cllm_trainer *tr, const char *dir, const char *adapter_dir, cllm_err *err);
CLLMDEF void        cllm_trainer_free(cllm_trainer *tr);

/* ---- SFT and offline DPO ------------------------------------------------------------------ */

/* One SFT micro-batch of n rows: HF's causal-LM loss terms (-log p of every target), backward of
   their sum / norm into the trained gradients (backward = 0: forward only). Adds "loss". */
CLLMDEF cllm_result cllm_sft_micro_step(cllm_model *m, const cllm_train_seq *const *rows, int n, double norm,
                                        int backward, cllm_train_stats *st, cllm_err *err);

/* One DPO micro-batch of n pairs: chosen and rejected rows in one batch, summed completion
   logps (averaged per token for IPO, as TRL's DPOTrainer, unless cfg->ipo_sum), the reference
   logps from the pairs (when all have them), else from ref, else from m with its adapters
   disabled (LoRA; TRL's PEFT reference), else 0 with reference_free; cllm_dpo_loss; backward
   of (sum of pair losses) / norm through dlogp = d loss / d logp(sequence) on every completion
   token. Adds TRL's metrics:
   loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
   logps/rejected. */
CLLMDEF cllm_result cllm_dpo_micro_step(cllm_model *m, cllm_model *ref, const cllm_dpo_pair *const *pairs, int n,
                                        const struct cllm_dpo_config *cfg, double norm, cllm_train_stats *st, cllm_err *err);

/* Whole runs: init, resume (cfg.resume), run, and the final model in OUT/final (+ OUT/adapter
   with LoRA). lora may be NULL; ref may be NULL (see cllm_dpo_micro_step). */
CLLMDEF cllm_result cllm_train_sft(cllm_model *m, cllm_lora *lora, const cllm_sft_data *d, const cllm_train_config *cfg, cllm_err *err);
CLLMDEF cllm_result cllm_train_dpo(cllm_model *m, cllm_lora *lora, cllm_model *ref, const cllm_dpo_data *d,
                                   const struct cllm_dpo_config *dpo, const cllm_train_config *cfg, cllm_err *err);

/* ============================================================================================ */
/* Online training: online DPO, PPO, GRPO with the multiturn-aware reward                       */
/* ============================================================================================ */

/* The paper's online stages. At every step the policy answers the step's prompts, the
   multiturn-aware reward scores the answers (cllm_mr_score, with the policy itself as the
   future assistant of the simulated futures), and the policy is updated:
     online DPO  2 responses per prompt; the one with the higher MR is chosen (a tie: the first,
                 as CollabLLM's judge takes the argmax), then a DPO update  (TRL OnlineDPOTrainer)
     PPO         1 response per prompt; its MR is the reward at the end of a per-token KL
                 penalty; a value head on the policy trunk, GAE, whitened advantages, clipped
                 policy and value losses, epochs x mini-batches per rollout  (TRL v0.19 PPOTrainer)
     GRPO        G responses per prompt; advantages normalised within each group, a token-level
                 clipped loss (+ beta k3 against the reference)            (TRL v0.19 GRPOTrainer)
   All three run on cllm_trainer (resumable checkpoints, metrics JSONL, progress lines), take
   the training response's token ids as generated (no re-tokenization), and keep LoRA dropout off
   in every forward and backward (TRL's PPO and online DPO disable dropout; we do the same for
   GRPO so that the sampler's and the trainer's log-probs agree).
   Seeds. Before sampling the answers to prompt i at step s the trainer sets the policy's seed
   counter (cllm_local_lm.calls) to a hash of (s, i, 0); before MR scores a micro-batch whose
   first prompt is i, it sets it (and a local simulator's, rollout.user_lm) to a hash of (s, i, 1).
   A resumed run therefore samples the same responses and futures as an uninterrupted one, as
   long as the simulator and the metrics are deterministic (callbacks, local models; not an API).
   Failures. A response whose MR failed (no simulated future could be scored) leaves its pair
   (online DPO), row (PPO) or group (GRPO) out of the step (counted in "mr/failed"); a step
   with nothing left to train on is an error.                                                 */

struct cllm_ppo_loss_out;   /* declared with the objectives below */

/* ---- prompts: CollabLLM's inputs form ------------------------------------------------------ */

/* One training prompt: a conversation ending with the user's turn, and its task. */
typedef struct cllm_online_prompt {
    cllm_conv  history;      /* the messages so far, the last one the user's (owned)              */
    cllm_task  task;         /* single_turn_prompt / _completion and the line's other fields (owned) */
    cllm_goal  goal;         /* the simulated user's goal: prompt = single_turn_prompt, reference =
                                single_turn_completion with show_reference, task_desc from the
                                config (borrowed)                                                  */
    long       conv_id;      /* records: conv_id; tasks: the task's index in its file             */
    int        turn_id;      /* history.n, CollabLLM's len(prompt)                                */
} cllm_online_prompt;

typedef struct cllm_online_prompts {
    cllm_online_prompt *items;   /* n prompts (owned)                                             */
    int                 n;
} cllm_online_prompts;

typedef struct cllm_prompts_config {
    const char *task_desc;       /* cllm_goal.task_desc of every prompt (default "a task"); must
                                    outlive the prompts                                           */
    int         show_reference;  /* 1: the simulator also sees single_turn_completion             */
} cllm_prompts_config;

/* From a task file: the prompt of task i is the simulated user's opening message (one batch of
   user turns on empty histories). cache_path (optional) makes the openings once per task: when
   the file exists it is read instead (it must hold one prompt per task, with the same
   single_turn_prompt, in order); otherwise the new prompts are written there (JSONL, the form
   cllm_online_prompts_write writes). Appends to p (zeroed, or holding prompts). */
CLLMDEF cllm_result cllm_online_prompts_from_tasks(cllm_online_prompts *p, const cllm_task *tasks, int n_tasks,
                                                   const cllm_user_sim *user, const cllm_prompts_config *cfg,
                                                   const char *cache_path, cllm_err *err);
/* From MR records (data_fmt/records.md), as CollabLLM's to_inputs_dataset: one prompt per
   (conv_id, turn_id), in the order first seen, with that record's "prompt" messages and task
   fields (single_turn_*; the heavy fields completion, score, rewards and sessions are dropped).
   Reads the prompt files written below too. Appends to p. */
CLLMDEF cllm_result cllm_online_prompts_read(cllm_online_prompts *p, const char *path, const cllm_prompts_config *cfg, cllm_err *err);
/* One JSON line per prompt: the task's fields, "conv_id", "turn_id" and "prompt" (the history),
   written atomically (data_fmt/train_prompts.md). */
CLLMDEF cllm_result cllm_online_prompts_write(const cllm_online_prompts *p, const char *path, cllm_err *err);
CLLMDEF void        cllm_online_prompts_free(cllm_online_prompts *p);

/* ---- what the three methods share ----------------------------------------------------------- */

typedef struct cllm_rollout_config {
    cllm_local_gen_config gen;   /* how the trained responses are sampled; zero fields take the
                                    method's defaults (TRL's): online DPO T 0.9, top_k 50 (negative
                                    = off), 64 tokens; PPO T 0.7, 53 tokens; GRPO T 1, 256 tokens;
                                    sampler.seed 0 = the trainer's seed                           */
    const char           *system_prompt; /* first in every prompt the policy answers here, never
                                    stored (default none; CollabLLM prepends its SYSTEM_PROMPT)    */
    const cllm_mr_config *mr;    /* the reward (required)                                         */
    const cllm_user_sim  *user;  /* MR's simulated user (required when mr->window > 0)            */
    const cllm_assistant *future;/* MR's future assistant (required when mr->window > 0): the policy
                                    itself, e.g. a cllm_local_assistant over the trained lm        */
    cllm_local_lm        *user_lm; /* a local simulator's model: its seed counter is set with the
                                    policy's (optional; see "Seeds")                              */
    double                logprob_tol; /* PPO and GRPO: the sampler's log-probs must equal a forward
                                    pass's at the sampling temperature within this, or the step
                                    fails (TRL pitfall: ratio != 1 at the first update). Default
                                    1e-4; negative = no check; skipped with top_k or top_p on    */
} cllm_rollout_config;

/* ---- online DPO ------------------------------------------------------------------------------ */

typedef struct cllm_online_dpo_config {
    cllm_rollout_config rollout;
    int    loss_type;            /* CLLM_DPO_SIGMOID (default) or CLLM_DPO_IPO on summed log-probs
                                    (TRL's OnlineDPOTrainer; its DPOTrainer averages per token)   */
    double beta;                 /* default 0.1                                                   */
    int    max_length;           /* prompt + response tokens; a longer pair loses the start of its
                                    prompt (default 512, TRL's max_length)                         */
    double rpo_alpha;            /* + alpha x the chosen responses' NLL per token (RPO, as
                                    cllm_dpo_config.rpo_alpha; not in TRL's OnlineDPOTrainer).
                                    Default 0 = off                                                */
} cllm_online_dpo_config;

/* Online DPO on prompts. policy: the model trained (policy->model; lora, if given, is attached
   to it); ref: a frozen reference, or NULL with LoRA (the base model under the adapters).
   Units of the step's loss: pairs. Statistics, as TRL logs them: loss, rewards/chosen,
   rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, logps/rejected,
   objective/kl, objective/non_score_reward, objective/entropy, val/contain_eos_token, beta;
   and reward (mean MR of all responses), mr/chosen, mr/rejected, mr/failed (nll_loss with
   rpo_alpha). */
CLLMDEF cllm_result cllm_train_online_dpo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref,
                                          const cllm_online_prompts *prompts, const cllm_online_dpo_config *cfg,
                                          const cllm_train_config *train, cllm_err *err);

/* ---- PPO ------------------------------------------------------------------------------------- */

/* The critic of legacy TRL's AutoModelForCausalLMWithValueHead: Linear(C, 1) on the policy
   trunk's final normed hidden state (cllm_model.acts.lnf), trained with the policy. Init as
   torch's nn.Linear: weight and bias uniform in +-1/sqrt(C). */
typedef struct cllm_value_head {
    int         C;               /* hidden size                                                   */
    cllm_float *w;               /* (C + 1): v_head.summary.weight (1, C), then v_head.summary.bias */
    cllm_float *grad, *m, *v;    /* (C + 1) each: gradient and AdamW moments                     */
} cllm_value_head;
CLLMDEF cllm_result cllm_value_head_init(cllm_value_head *vh, int C, uint64_t seed, cllm_err *err);
CLLMDEF void        cllm_value_head_free(cllm_value_head *vh);
/* values[i] = w . h[i] + b for n rows h (n, C). */
CLLMDEF void        cllm_value_head_forward(const cllm_value_head *vh, const cllm_float *h, int n, double *values);
/* Accumulates grad += sum_i dvalues[i] (h[i], 1) and, if dh is not NULL, dh[i] += dvalues[i] w. */
CLLMDEF void        cllm_value_head_backward(cllm_value_head *vh, const cllm_float *h, int n, const double *dvalues, cllm_float *dh);

typedef struct cllm_ppo_config {
    cllm_rollout_config rollout;
    int    ppo_epochs;           /* passes over each rollout (default 4, TRL's num_ppo_epochs)    */
    int    mini_batches;         /* AdamW updates per pass (default 1, TRL's num_mini_batches). A
                                    rollout is batch_size x grad_accum x mini_batches prompts; a
                                    mini-batch accumulates grad_accum micro-batches of batch_size */
    double kl_coef;              /* default 0.05; negative = 0                                    */
    int    kl_estimator;         /* CLLM_KL_K1 (default) or CLLM_KL_K3                             */
    double cliprange;            /* default 0.2                                                   */
    double cliprange_value;      /* default 0.2                                                   */
    double vf_coef;              /* default 0.1                                                   */
    double gamma;                /* default 1; negative = 0                                       */
    double lam;                  /* default 0.95; negative = 0                                    */
    int    whiten_rewards;       /* 1: whiten the per-token rewards first (TRL's option; default 0) */
    int    reward_placement;     /* CLLM_REWARD_AFTER_EOS (default, TRL v0.19: the slot after the
                                    end, seen only by the critic) or CLLM_REWARD_LAST_TOKEN (legacy
                                    TRL, OpenRLHF, verl)                                           */
    int    pad_is_eos;           /* 1: the token that ended a response counts as padding, as with
                                    CollabLLM's pad_token = eos_token: it is never trained and the
                                    score lands on its slot (default 0: pad != eos)                */
    int    biased_whiten;        /* 1: whiten advantages with the biased variance (OpenRLHF);
                                    default 0: unbiased (TRL, verl)                                */
    double missing_eos_penalty;  /* subtracted from the score of a response that did not end with
                                    an end-of-turn / EOS token (default 0 = none, as TRL)         */
    /* Legacy TRL's PPOTrainer (<= 0.11), which CollabLLM's PPO script uses: */
    int    score_scaling;        /* CLLM_SCORE_SCALE: scores / (running std + eps), its
                                    use_score_scaling (CollabLLM sets it); CLLM_SCORE_NORM: also
                                    minus the running mean (use_score_norm); default 0 = raw.
                                    The running mean and std are over every score so far
                                    (cllm_running_moments), kept in the checkpoints            */
    double kl_target;            /* > 0: its adaptive KL controller, kl_coef being the initial
                                    value (legacy: 0.2, target 6, horizon 10000): after each step
                                    kl_coef *= 1 + clip(KL / kl_target - 1, -0.2, 0.2) * n /
                                    kl_horizon, KL = the rollout's mean summed KL, n its prompts.
                                    Default 0 = a fixed kl_coef (TRL v0.19)                     */
    double kl_horizon;           /* default 10000                                                 */
} cllm_ppo_config;
enum { CLLM_SCORE_RAW = 0, CLLM_SCORE_SCALE = 1, CLLM_SCORE_NORM = 2 };

/* Legacy TRL's RunningMoments: the mean and (population) variance of every value seen so far,
   merged one batch at a time (Chan et al.), starting from mean 0, var 1, count 1e-24; std is
   the unbiased one. cllm_running_moments_update returns the batch's mean and unbiased std. */
typedef struct cllm_running_moments { double mean, var, std, count; } cllm_running_moments;
CLLMDEF void cllm_running_moments_init(cllm_running_moments *rm);
CLLMDEF void cllm_running_moments_update(cllm_running_moments *rm, const double *x, int n, double *batch_mean, double *batch_std);
/* Legacy TRL's AdaptiveKLController: coef * (1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon). */
CLLMDEF double cllm_adaptive_kl_update(double coef, double kl, double target, double horizon, double n_steps);

/* One rollout in TRL v0.19's layout: B responses of width L (the longest), row-major (B, L). */
typedef struct cllm_ppo_rollout {
    int     B, L;
    int     pad_id;              /* the id that marks padding in response                         */
    int    *response;            /* (B*L) response ids, pad_id after each response's end          */
    double *logprobs;            /* (B*L) the rollout policy's log-probs at the sampling temperature */
    double *ref_logprobs;        /* (B*L) the reference's, at the same temperature                */
    double *values;              /* (B*L) the value before each response token: V at the position
                                    that predicts it (TRL's val[b, t] = V(qr)[b, P-1+t])           */
    double *scores;              /* (B) the reward of each response (MR)                          */
    /* computed by cllm_ppo_prepare (allocated by cllm_ppo_rollout_alloc like the inputs) */
    int    *seq_end;             /* (B) cllm_ppo_sequence_end                                     */
    double *mask, *value_mask;   /* (B*L) policy mask t <= end; critic mask t <= end + 1           */
    double *kl, *rewards, *advantages, *returns;   /* (B*L)                                      */
} cllm_ppo_rollout;
/* Allocates every array of a B x L rollout (zeroed); free with cllm_ppo_rollout_free. */
CLLMDEF cllm_result cllm_ppo_rollout_alloc(cllm_ppo_rollout *r, int B, int L, cllm_err *err);
CLLMDEF void        cllm_ppo_rollout_free(cllm_ppo_rollout *r);
/* TRL's rollout arithmetic, in place: sequence ends; log-probs after the end become
   INVALID_LOGPROB 1.0 and values after end + 1 become 0; per-token rewards (cllm_ppo_rewards);
   with whiten_rewards, rewards whitened over the critic mask keeping their mean, then zeroed
   after end + 1; GAE over all L positions (CLLM_GAE_TRL); returns = advantages + values; the
   advantages whitened over the policy mask (unbiased, or biased_whiten) and zeroed after the
   end. cfg NULL = TRL's defaults. */
CLLMDEF cllm_result cllm_ppo_prepare(const cllm_ppo_config *cfg, cllm_ppo_rollout *r, cllm_err *err);
/* The loss of a micro-batch of rollout rows rows[0..n) given the current policy's log-probs and
   values there (n*L each, in the order of rows; overwritten as TRL does: INVALID 1.0 after the
   end, 0 after end + 1): cllm_ppo_loss with the rollout's log-probs, values, advantages, returns
   and masks. out->d_logprobs / d_values (n*L, optional) receive the gradients. */
CLLMDEF cllm_result cllm_ppo_rollout_loss(const cllm_ppo_config *cfg, const cllm_ppo_rollout *r, const int *rows, int n,
                                          double *logprobs, double *values, struct cllm_ppo_loss_out *out, cllm_err *err);

/* PPO on prompts (see cllm_ppo_config for the shape of a step: one rollout, then ppo_epochs x
   mini_batches AdamW updates of the policy and the value head, all at the step's learning
   rate). The rollout's old log-probs come from a forward pass at the sampling temperature and
   are checked against the sampler's (rollout.logprob_tol). vh: the value head to train (NULL: a
   fresh one seeded with the trainer's seed); it is saved in every checkpoint and in
   final/ (value_head.safetensors) and restored on resume. Gradient clipping is off unless
   train->max_grad_norm is set (TRL's PPO loop does not clip); it then clips policy and value
   head together. Statistics as TRL: objective/kl, objective/entropy,
   objective/non_score_reward, objective/rlhf_reward, objective/scores, policy/approxkl_avg,
   policy/clipfrac_avg, loss/policy_avg, loss/value_avg, val/clipfrac_avg, policy/entropy_avg,
   val/ratio, val/num_eos_tokens; and loss, reward (mean MR), mr/failed, rollout/logprob_diff. */
CLLMDEF cllm_result cllm_train_ppo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref, cllm_value_head *vh,
                                   const cllm_online_prompts *prompts, const cllm_ppo_config *cfg,
                                   const cllm_train_config *train, cllm_err *err);

/* ---- GRPO ------------------------------------------------------------------------------------ */

typedef enum cllm_grpo_loss_type {
    CLLM_GRPO_BNPO = 0,          /* sum of the token losses / tokens in the micro-batch (TRL v0.19) */
    CLLM_GRPO_GRPO,              /* mean over sequences of (sum of its token losses / its length)  */
    CLLM_GRPO_DR_GRPO            /* sum / (sequences x max_completion_length)   (Dr. GRPO)         */
} cllm_grpo_loss_type;

typedef struct cllm_grpo_loss_out {
    double  loss;
    double  kl;                  /* mean k3 over the masked tokens (0 without reference log-probs) */
    double  clip_ratio;          /* fraction of masked tokens where the clipped term is the active one */
    double *d_logprobs;          /* optional (B*T): d loss / d logprobs                           */
} cllm_grpo_loss_out;

/* TRL v0.19 GRPOTrainer's loss on B sequences of T tokens: per token, with r = exp(logp - old),
     l = -min(r A_b, clamp(r, 1 - eps_low, 1 + eps_high) A_b) + beta k3,
     k3 = exp(ref - logp) - (ref - logp) - 1,
   aggregated over the mask by loss_type (max_completion_length is Dr. GRPO's constant).
   ref_logprobs may be NULL when beta is 0. */
CLLMDEF cllm_result cllm_grpo_loss(int B, int T, const double *logprobs, const double *old_logprobs, const double *ref_logprobs,
                                   const double *advantages, const double *mask, double beta, double eps_low, double eps_high,
                                   int loss_type, int max_completion_length, cllm_grpo_loss_out *out, cllm_err *err);

typedef struct cllm_grpo_config {
    cllm_rollout_config rollout;
    int    num_generations;      /* G responses per prompt (default 8)                            */
    double beta;                 /* weight of the k3 term (default 0: no reference needed)        */
    double epsilon;              /* clipping below (default 0.2)                                  */
    double epsilon_high;         /* clipping above (default = epsilon)                            */
    int    scale_rewards;        /* default 1: divide by the group's unbiased std + 1e-4 (TRL);
                                    negative = no (Dr. GRPO)                                     */
    int    loss_type;            /* cllm_grpo_loss_type (default CLLM_GRPO_BNPO)                   */
} cllm_grpo_config;

/* GRPO on prompts: batch_size counts prompts (each with G responses); num_iterations is 1, so
   the old log-probs are the current ones (r = 1, as TRL). ref: needed only when beta > 0 (NULL
   with LoRA: the base model). Units of the step's loss: prompts (each micro-batch's aggregated
   loss is weighted by its number of prompts). Statistics as TRL: loss, reward, reward_std,
   frac_reward_zero_std, completions/mean_length, completions/clipped_ratio, kl, clip_ratio;
   and mr/failed, rollout/logprob_diff. */
CLLMDEF cllm_result cllm_train_grpo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref,
                                    const cllm_online_prompts *prompts, const cllm_grpo_config *cfg,
                                    const cllm_train_config *train, cllm_err *err);

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
    int    ipo_sum;          /* cllm_dpo_micro_step with IPO: 1 = summed logps (TRL OnlineDPOTrainer,
                                OpenRLHF); default 0 = per-token averages (TRL DPOTrainer)          */
    double rpo_alpha;        /* RPO (TRL's rpo_alpha, Pang et al. 2024): the trainer adds alpha times
                                the NLL of the chosen completions, per token, to the loss; default 0
                                (off). cllm_dpo_loss itself does not use it: it needs token counts */
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
#include <ctype.h>
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
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <signal.h>
#include <poll.h>
#include <fcntl.h>
/* POSIX functions that strict -std=c99 hides in the system headers */
extern int fileno(FILE *);
extern int kill(pid_t, int);
extern int mkstemp(char *);
extern int setpgid(pid_t, pid_t);
extern FILE *fdopen(int, const char *);
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

/* The longest JSONL line the readers accept (manual section 3) */
#ifndef CLLM_MAX_LINE_BYTES
#define CLLM_MAX_LINE_BYTES (64L << 20)
#endif

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
/* Private types, macros and functions used before their definition (Part I calls II and III) */
/* -------------------------------------------------------------------------------------------- */

typedef struct cllm__sb { char *p; size_t n, cap; int oom; } cllm__sb;
typedef struct cllm__seq_batch { cllm_batch batch; int *ids, *labels, *mask; } cllm__seq_batch;
typedef int (*cllm__take_fn)(void *ctx, int i, const cllm_chat_result *res, int last);

static uint64_t cllm__splitmix64(uint64_t *x);
static FILE *cllm__open_read(const char *path, const char *kind, cllm_err *err);
static int cllm__file_exists(const char *path);
static int cllm__json_int(const cJSON *o, const char *key, int def, int *out);
static const char *cllm__json_str(const cJSON *o, const char *key);
static long cllm__read_line(FILE *f, char **buf, size_t *cap);
static cJSON *cllm__jsonl_parse(const char *line, size_t len, const char *path, int lineno, cllm_err *err);
static cllm_result cllm__line_fail(cllm_err *err, const char *path, int lineno, long len);
static void cllm__clean_line(char *out, size_t cap, const char *s, size_t n);
static double cllm__now(void);
static void cllm__sb_putn(cllm__sb *b, const char *s, size_t len);
static void cllm__sb_puts(cllm__sb *b, const char *s);
static void cllm__sb_putc(cllm__sb *b, char c);
static char *cllm__sb_take(cllm__sb *b);
static void cllm__sb_free(cllm__sb *b);
static char *cllm__strdup_trim(const char *s);
static char *cllm__fill(const char *tmpl, const char *const *names, const char *const *values, int n);
static cllm_result cllm__batch_result(const cllm_result *code0, const cllm_err *err0, size_t stride, int n,
                                      const char *what, cllm_err *err);
static int cllm__conv_incomplete(const cllm_conv *c);
static char *cllm__conv_text(const cllm_conv *c, int bold);
static size_t cllm__json_escaped_len(const char *s, size_t n);
static size_t cllm__conv_json_bytes(const cllm_conv *c);
static int cllm__json_number(const cJSON *v, double *out);
static char *cllm__json_text(const cJSON *o, const char *key, cllm_err *err);
static cllm_result cllm__ask_all(cllm_client *c, char *const *prompts, int n, const cllm_llm_params *params,
                                 int json_mode, int retries, cllm__take_fn take, void *ctx);
static cllm_llm_params cllm__params_def(cllm_llm_params p, double temperature, int max_tokens);
static int cllm__retries_def(int r);
static cllm_result cllm__seq_from(cllm_train_seq *seq, const int *ids, const unsigned char *target, int n, int n_prompt,
                                  cllm_err *err);
static void cllm__seq_batch_free(cllm__seq_batch *sb);
static cllm_result cllm__seq_batch_make(cllm__seq_batch *sb, const cllm_train_seq *const *seqs, int n, cllm_err *err);
static void cllm__row_logps(const cllm_model *m, double *out);
static long cllm__batch_tokens(const cllm__seq_batch *sb);
static cllm_result cllm__st_read_entries(const char *path, const cllm_st_entry *entries, int n, cllm_err *err);
static cllm_result cllm__numeric_fail(const cllm_trainer *tr, const char *what, double value, cllm_err *err);
static cllm_result cllm__train_run(cllm_model *m, cllm_lora *lora, const cllm_train_task *task,
                                   const cllm_train_config *cfg, cllm_err *err);
static cllm_result cllm__train_task(cllm_model *m, cllm_lora *lora, const char *name, int n_examples, double default_lr,
                                    double (*units)(void *, const int *, int), cllm_result (*micro)(void *,
                                    cllm_trainer *, const int *, int, double, cllm_train_stats *, cllm_err *),
                                    void *ctx, const cllm_train_config *cfg, cllm_err *err);
static void cllm__matmul_forward(cllm_float *out, const cllm_float *inp, const cllm_float *W, const cllm_float *bias,
                                 int N, int C, int OC);
static void cllm__matmul_backward(cllm_float *dinp, cllm_float *dW, cllm_float *dbias, const cllm_float *dout,
                                  const cllm_float *inp, const cllm_float *W, int N, int C, int OC);
static void cllm__rmsnorm_backward(cllm_float *dinp, cllm_float *dw, const cllm_float *dout, const cllm_float *inp,
                                   const cllm_float *w, const cllm_float *rstd, int N, int C);
static void cllm__attention_forward(cllm_float *out, cllm_float *lse, const cllm_float *q, const cllm_float *k,
                                    const cllm_float *v, const int *mask, int B, int T, int H, int KV, int hd,
                                    cllm_float *s);
static void cllm__attention_backward(cllm_float *dq, cllm_float *dk, cllm_float *dv, const cllm_float *dout,
                                     const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                     const cllm_float *out, const cllm_float *lse, const int *mask, int B, int T, int H,
                                     int KV, int hd);
static unsigned cllm__uni_class(uint32_t cp);
static unsigned cllm__uni_ccc(uint32_t cp);
static const uint32_t *cllm__uni_decomp_entries(size_t *n);
#define CLLM__BATCH_RESULT(items, n, what, err) \
    cllm__batch_result(&(items)[0].code, &(items)[0].err, sizeof (items)[0], (n), (what), (err))
#define CLLM__MAX_TEXT_JSON ((size_t)CLLM_MAX_LINE_BYTES - ((size_t)1 << 20))


/* ---- errors ------------------------------------------------------------------------------------- */

/* Records an error and returns its code, so that failures read `return cllm__fail(err, ...);`.
   The message passes through cllm__clean_line: one line of valid UTF-8 that holds no API key. */
static cllm_result cllm__fail(cllm_err *err, cllm_result code, const char *fmt, ...) {
    if (err) {
        char buf[4 * CLLM_ERRMSG_SIZE];
        va_list ap;
        int n;
        va_start(ap, fmt);
        n = vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        if (n < 0) n = 0;
        if ((size_t)n >= sizeof buf) n = (int)sizeof buf - 1;
        err->code = code;
        cllm__clean_line(err->msg, sizeof err->msg, buf, (size_t)n);
    }
    return code;
}

static void cllm__ok(cllm_err *err) {
    if (err) { err->code = CLLM_OK; err->msg[0] = 0; }
}



/* ############################################################################################ */
/* PART I. THE ALGORITHM, IN THE PAPER'S ORDER                                                  */
/* ############################################################################################ */

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
    if (m->lora && m->lora->model == m) m->lora->model = NULL;   /* the adapters outlive it detached */
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

/* One query row of attention over n key/value rows (row j at k + j*stride, v + j*stride), skipping
   the j with mask[j] = 0 (mask may be NULL):
     s_j = q . k_j * scale,   p = softmax(s),   y = sum_j p_j v_j,   returns lse = log sum_j exp(s_j)
   The full forward and the KV-cache forward both call this, so they compute the same numbers.
   s is a scratch row of n values.                                                              */
static cllm_float cllm__dot(cllm_float init, const cllm_float *a, const cllm_float *b, int n);
static void cllm__axpy(cllm_float *y, cllm_float alpha, const cllm_float *x, int n);
static cllm_float cllm__attend_row(cllm_float *y, const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                   size_t stride, int n, const int *mask, int hd, cllm_float scale, cllm_float *s) {
    int j, i;
    cllm_float mx = -INFINITY, sum = 0;
    for (j = 0; j < n; j++) {
        if (mask && !mask[j]) { s[j] = -INFINITY; continue; }
        s[j] = cllm__dot(0, q, k + (size_t)j * stride, hd) * scale;   /* q . k_j, left to right */
        if (s[j] > mx) mx = s[j];
    }
    for (j = 0; j < n; j++) { s[j] = cllm__exp(s[j] - mx); sum += s[j]; }   /* s_j <- exp(s_j - max) */
    for (i = 0; i < hd; i++) y[i] = 0;
    for (j = 0; j < n; j++) {
        cllm_float p = s[j] / sum;
        if (p != 0) cllm__axpy(y, p, v + (size_t)j * stride, hd);      /* y += p_j v_j */
    }
    return mx + cllm__log(sum);
}

/* Causal grouped-query attention with a right-padding mask. q (B*T, H*hd), k, v (B*T, KV*hd).
   Query head h reads kv head h / (H/KV) (HF repeat_kv). Key j is visible from query t when
   j <= t and mask[b][j] = 1 (HF's causal + padding mask; pad queries still see the real keys).
     s_j = q_t . k_j / sqrt(hd),   p = softmax(s),   y_t = sum_j p_j v_j
   Only lse = log sum_j exp(s_j) is kept: the backward pass recomputes p_j = exp(s_j - lse), so
   memory is O(B H T) instead of O(B H T^2).  s is a scratch row of T values.                  */
CLLM__REFERENCE void cllm__attention_forward_naive(cllm_float *out, cllm_float *lse, const cllm_float *q,
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


/* LoRA adapters inside the forward and backward passes                                         */
/* -------------------------------------------------------------------------------------------- */
/* y = x W^T (+ b) + s B A d(x), s = alpha / r, d = dropout (PEFT's lora_dropout, inverted:
   d(x)_c = x_c keep_c / (1 - p)). The keep mask of element c of row n is a hash of
   (dropout_seed, target, layer, n, c), so the backward pass recomputes the very same mask
   instead of storing it, and a seed reproduces a run. Per adapted projection the forward keeps
   u = A d(x) (rows x r) for the backward; the inputs x are activations the base model saves
   anyway (ln1, atty, ln2, act).                                                                */

enum { CLLM__LT_Q, CLLM__LT_K, CLLM__LT_V, CLLM__LT_O, CLLM__LT_GATE, CLLM__LT_UP, CLLM__LT_DOWN };

/* Is element i of the input of (target t, layer l) kept by dropout p? */
static int cllm__lora_keep(uint64_t seed, int t, int l, size_t i, double p) {
    uint64_t z = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(t * 4096 + l + 1)), k = z ^ ((uint64_t)i * 0xBF58476D1CE4E5B9ull);
    return (double)(cllm__splitmix64(&k) >> 11) * (1.0 / 9007199254740992.0) >= p;
}

/* The dropout probability of the current forward/backward: only a recording training pass. */
static double cllm__lora_p(const cllm_lora *lo) { return lo->recording && lo->training ? lo->cfg.dropout : 0; }

/* Start of the saved u rows of (target t, layer l). */
static cllm_float *cllm__lora_u(const cllm_lora *lo, int t, int l) {
    size_t slot = 0;
    int k;
    for (k = 0; k < t; k++) slot += (lo->cfg.targets >> k) & 1u;
    return lo->u + (slot * (size_t)lo->n_layers + (size_t)l) * lo->u_rows * (size_t)lo->cfg.r;
}

/* Room to record rows rows in the next forward. */
static cllm_result cllm__lora_ensure(cllm_lora *lo, size_t rows, cllm_err *err) {
    size_t need = 0, max_in = 0;
    int t;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        if (lo->A[t]) need += (size_t)lo->n_layers * rows * (size_t)lo->cfg.r;
        if ((size_t)lo->in[t] > max_in) max_in = (size_t)lo->in[t];
    }
    if (need > lo->u_cap) {
        CLLM_FREE(lo->u);
        lo->u = (cllm_float *)cllm__calloc(need, sizeof(cllm_float));
        lo->u_cap = lo->u ? need : 0;
        if (!lo->u) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the LoRA activations (%zu floats)", need);
    }
    if (!lo->xd) {
        lo->xd = (cllm_float *)cllm__calloc(max_in, sizeof(cllm_float));
        if (!lo->xd) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    return CLLM_OK;
}

/* d(x) of row n into lo->xd (or x itself when there is no dropout). */
static const cllm_float *cllm__lora_dropped(const cllm_lora *lo, int t, int l, const cllm_float *x, size_t n, double p) {
    int c, in = lo->in[t];
    cllm_float scale = (cllm_float)(1.0 / (1.0 - p));
    if (p <= 0) return x;
    for (c = 0; c < in; c++)
        lo->xd[c] = cllm__lora_keep(lo->dropout_seed, t, l, n * (size_t)in + (size_t)c, p) ? x[c] * scale : 0;
    return lo->xd;
}

/* y (N, out) += s B A d(x) for N rows x (N, in); records u when inside cllm_forward. */
static void cllm__lora_forward(const cllm_model *m, int t, int l, cllm_float *y, const cllm_float *x, int N) {
    const cllm_lora *lo = m->lora;
    const cllm_float *A, *B;
    cllm_float row_u[CLLM_LORA_MAX_R];
    int n, j, o, c, r, in, out;
    double p;
    if (!lo || !lo->enabled || !lo->A[t]) return;
    r = lo->cfg.r; in = lo->in[t]; out = lo->out[t];
    A = lo->A[t] + (size_t)l * r * in;
    B = lo->B[t] + (size_t)l * out * r;
    p = cllm__lora_p(lo);
    for (n = 0; n < N; n++) {
        const cllm_float *xn = cllm__lora_dropped(lo, t, l, x + (size_t)n * in, (size_t)n, p);
        cllm_float *u = lo->recording ? cllm__lora_u(lo, t, l) + (size_t)n * r : row_u;
        cllm_float *yn = y + (size_t)n * out;
        for (j = 0; j < r; j++) {                       /* u = A d(x) */
            cllm_float acc = 0;
            for (c = 0; c < in; c++) acc += A[(size_t)j * in + c] * xn[c];
            u[j] = acc;
        }
        for (o = 0; o < out; o++) {                     /* y += s B u */
            cllm_float acc = 0;
            for (j = 0; j < r; j++) acc += B[(size_t)o * r + j] * u[j];
            yn[o] += (cllm_float)lo->scale * acc;
        }
    }
}

/* Backward of the adapter given dy (N, out) and the forward's input x (N, in):
     dB += s dy^T u,   du = s dy B,   dA += du^T d(x),   dx += d'(du A)  (the same keep mask)      */
static void cllm__lora_backward(const cllm_model *m, int t, int l, cllm_float *dx, const cllm_float *dy, const cllm_float *x, int N) {
    cllm_lora *lo = m->lora;
    const cllm_float *A, *B, *U;
    cllm_float *dA, *dB, du[CLLM_LORA_MAX_R];
    int n, j, o, c, r, in, out;
    double p;
    if (!lo || !lo->A[t] || lo->u_rows != (size_t)N) return;
    r = lo->cfg.r; in = lo->in[t]; out = lo->out[t];
    A = lo->A[t] + (size_t)l * r * in;  dA = lo->dA[t] + (size_t)l * r * in;
    B = lo->B[t] + (size_t)l * out * r; dB = lo->dB[t] + (size_t)l * out * r;
    U = cllm__lora_u(lo, t, l);
    p = lo->training ? lo->cfg.dropout : 0;
    for (n = 0; n < N; n++) {
        const cllm_float *dyn = dy + (size_t)n * out, *un = U + (size_t)n * r, *xn;
        cllm_float *dxn = dx + (size_t)n * in, scale = (cllm_float)(1.0 / (1.0 - p));
        for (j = 0; j < r; j++) du[j] = 0;
        for (o = 0; o < out; o++) {
            cllm_float g = (cllm_float)lo->scale * dyn[o];
            if (g == 0) continue;
            for (j = 0; j < r; j++) { dB[(size_t)o * r + j] += g * un[j]; du[j] += g * B[(size_t)o * r + j]; }
        }
        xn = cllm__lora_dropped(lo, t, l, x + (size_t)n * in, (size_t)n, p);
        for (j = 0; j < r; j++) for (c = 0; c < in; c++) dA[(size_t)j * in + c] += du[j] * xn[c];
        for (c = 0; c < in; c++) {
            cllm_float acc = 0;
            if (p > 0 && !cllm__lora_keep(lo->dropout_seed, t, l, (size_t)n * in + (size_t)c, p)) continue;
            for (j = 0; j < r; j++) acc += du[j] * A[(size_t)j * in + c];
            dxn[c] += p > 0 ? acc * scale : acc;
        }
    }
}

/* Points the A/B (or dA/dB) views into memory: per target, A (L, r, in) then B (L, out, r). */
static void cllm__lora_point(cllm_lora *lo, cllm_float *memory, cllm_float **A, cllm_float **B) {
    int t;
    size_t L = (size_t)lo->n_layers, r = (size_t)lo->cfg.r;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        A[t] = B[t] = NULL;
        if (!(lo->cfg.targets & (1u << t))) continue;
        A[t] = memory; memory += L * r * (size_t)lo->in[t];
        B[t] = memory; memory += L * (size_t)lo->out[t] * r;
    }
}

/* A gradient view at offset off, or NULL when that gradient is not kept (frozen base). */
static cllm_float *cllm__grad_at(cllm_float *g, size_t off) { return g ? g + off : NULL; }

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
    cllm__lora_forward(m, CLLM__LT_Q, l, c->qk_norm ? q_pre : q, ln1, N);     /* adapters, if any */
    cllm__lora_forward(m, CLLM__LT_K, l, c->qk_norm ? k_pre : k, ln1, N);
    cllm__lora_forward(m, CLLM__LT_V, l, v, ln1, N);
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
    cllm__lora_forward(m, CLLM__LT_GATE, l, gate, ln2, N);
    cllm__lora_forward(m, CLLM__LT_UP, l, up, ln2, N);
    cllm__swiglu_forward(act, gate, up, (size_t)N * I);
    cllm__matmul_forward(out, act, p->w_down + (size_t)l * C * I, NULL, N, I, C);
    cllm__lora_forward(m, CLLM__LT_DOWN, l, out, act, N);
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

    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "forward pass: the model is not loaded");
    if (!batch || B <= 0 || T <= 0 || !batch->input_ids) return cllm__fail(err, CLLM_ERR_ARG, "forward pass: batch needs B > 0, T > 0 and input_ids");
    if ((double)B * T > 1e8) return cllm__fail(err, CLLM_ERR_LIMIT, "forward pass: batch %d x %d is too large", B, T);
    if (batch->temperature < 0 || batch->temperature != batch->temperature) return cllm__fail(err, CLLM_ERR_ARG, "forward pass: temperature must be positive (0 = default 1)");
    m->B = 0;                                     /* invalid until this forward completes */
    if ((rc = cllm__ensure_acts(m, B, T, err)) != CLLM_OK) return rc;
    if ((rc = cllm__prepare_batch(m, batch, err)) != CLLM_OK) return rc;
    inv_tau = (cllm_float)(1.0 / cllm__def(batch->temperature, 1.0f));
    m->inv_temperature = (float)inv_tau;
    if (m->lora) {                                /* adapters record what their backward needs */
        m->lora->u_rows = 0;
        if (m->lora->enabled) {
            if ((rc = cllm__lora_ensure(m->lora, (size_t)BT, err)) != CLLM_OK) return rc;
            m->lora->u_rows = (size_t)BT;
            m->lora->recording = 1;
        }
    }

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
        cllm__lora_forward(m, CLLM__LT_O, l, hres, atty, BT);
        CLLM__PARALLEL_FOR((size_t)BT * C)
        for (i = 0; i < BT * C; i++) hres[i] += x[i];

        cllm__mlp_forward(m, l, xout, ln2, ln2_rstd, gate, up, act, hres, BT);
    }
    if (m->lora) m->lora->recording = 0;
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
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "gradients: the model is not loaded");
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
    cllm_params frozen, *g = &m->grads;
    int B = m->B, T = m->T, BT = B * T, l, r, i;
    int C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    int Q = H * hd, K = KV * hd;
    cllm_float *dx, *dh, *dln, *dact, *dgate, *dup, *datty, *dq, *dk, *dv, *dq_pre, *dk_pre, *packed, *dpacked, *z;

    if (B <= 0) return cllm__fail(err, CLLM_ERR_ARG, "backward pass: there is no forward pass to go back through (run the forward pass first)");
    if (m->lora) {              /* adapters attached: the base model is frozen, only they get gradients */
        cllm_lora *lo = m->lora;
        memset(&frozen, 0, sizeof frozen);
        g = &frozen;
        if (!lo->grads) {
            lo->grads = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
            if (!lo->grads) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the LoRA gradients");
            cllm__lora_point(lo, lo->grads, lo->dA, lo->dB);
        }
    } else if (!m->grads_memory) { cllm_result rc = cllm_zero_grad(m, err); if (rc != CLLM_OK) return rc; }

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
        cllm_float *dbq = cllm__grad_at(g->bq, (size_t)l * Q), *dbk = cllm__grad_at(g->bk, (size_t)l * K), *dbv = cllm__grad_at(g->bv, (size_t)l * K);

        /* The forward pass kept ln1, ln2 and act for one layer only: recompute this layer's, with
           the same kernels on the same inputs, so they are bit-identical (rstd is rewritten as is). */
        cllm__rmsnorm_forward(ln1, ln1_rstd, x, p->attn_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        cllm__rmsnorm_forward(ln2, ln2_rstd, hres, p->mlp_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        cllm__swiglu_forward(act, gate, up, (size_t)BT * I);

        /* MLP block. Forward was x' = h + act W_down^T, so dh starts as dx' (the residual path). */
        memcpy(dh, dx, sizeof(cllm_float) * (size_t)BT * C);
        memset(dact, 0, sizeof(cllm_float) * (size_t)BT * I * 3);     /* dact, dgate, dup */
        cllm__matmul_backward(dact, cllm__grad_at(g->w_down, (size_t)l * C * I), NULL, dx, act, p->w_down + (size_t)l * C * I, BT, I, C);
        cllm__lora_backward(m, CLLM__LT_DOWN, l, dact, dx, act, BT);
        cllm__swiglu_backward(dgate, dup, dact, gate, up, (size_t)BT * I);
        memset(dln, 0, sizeof(cllm_float) * (size_t)BT * C);
        cllm__matmul_backward(dln, cllm__grad_at(g->w_gate, (size_t)l * I * C), NULL, dgate, ln2, p->w_gate + (size_t)l * I * C, BT, C, I);
        cllm__matmul_backward(dln, cllm__grad_at(g->w_up, (size_t)l * I * C), NULL, dup, ln2, p->w_up + (size_t)l * I * C, BT, C, I);
        cllm__lora_backward(m, CLLM__LT_GATE, l, dln, dgate, ln2, BT);
        cllm__lora_backward(m, CLLM__LT_UP, l, dln, dup, ln2, BT);
        cllm__rmsnorm_backward(dh, cllm__grad_at(g->mlp_norm, (size_t)l * C), dln, hres, p->mlp_norm + (size_t)l * C, ln2_rstd, BT, C);

        /* Attention block. Forward was h = x + atty W_o^T, so dx starts as dh. */
        memcpy(dx, dh, sizeof(cllm_float) * (size_t)BT * C);
        memset(datty, 0, sizeof(cllm_float) * (size_t)BT * (2 * Q + 2 * K));   /* datty dq dk dv */
        cllm__matmul_backward(datty, cllm__grad_at(g->wo, (size_t)l * C * Q), NULL, dh, atty, p->wo + (size_t)l * C * Q, BT, Q, C);
        cllm__lora_backward(m, CLLM__LT_O, l, datty, dh, atty, BT);
        cllm__attention_backward(dq, dk, dv, datty, q, k, v, atty, a->att_lse + (size_t)l * BT * H, m->mask, B, T, H, KV, hd);
        cllm__rope_backward(dq, m->rope_cos, m->rope_sin, B, T, H, hd);
        cllm__rope_backward(dk, m->rope_cos, m->rope_sin, B, T, KV, hd);
        if (c->qk_norm) {
            memset(dq_pre, 0, sizeof(cllm_float) * (size_t)BT * (Q + K));        /* dq_pre dk_pre */
            cllm__rmsnorm_backward(dq_pre, cllm__grad_at(g->q_norm, (size_t)l * hd), dq, a->q_pre + (size_t)l * BT * Q, p->q_norm + (size_t)l * hd, a->q_rstd + (size_t)l * BT * H, BT * H, hd);
            cllm__rmsnorm_backward(dk_pre, cllm__grad_at(g->k_norm, (size_t)l * hd), dk, a->k_pre + (size_t)l * BT * K, p->k_norm + (size_t)l * hd, a->k_rstd + (size_t)l * BT * KV, BT * KV, hd);
        }
        memset(dln, 0, sizeof(cllm_float) * (size_t)BT * C);
        cllm__matmul_backward(dln, cllm__grad_at(g->wq, (size_t)l * Q * C), dbq, dq_pre, ln1, p->wq + (size_t)l * Q * C, BT, C, Q);
        cllm__matmul_backward(dln, cllm__grad_at(g->wk, (size_t)l * K * C), dbk, dk_pre, ln1, p->wk + (size_t)l * K * C, BT, C, K);
        cllm__matmul_backward(dln, cllm__grad_at(g->wv, (size_t)l * K * C), dbv, dv, ln1, p->wv + (size_t)l * K * C, BT, C, K);
        cllm__lora_backward(m, CLLM__LT_Q, l, dln, dq_pre, ln1, BT);
        cllm__lora_backward(m, CLLM__LT_K, l, dln, dk_pre, ln1, BT);
        cllm__lora_backward(m, CLLM__LT_V, l, dln, dv, ln1, BT);
        cllm__rmsnorm_backward(dx, cllm__grad_at(g->attn_norm, (size_t)l * C), dln, x, p->attn_norm + (size_t)l * C, ln1_rstd, BT, C);
    }
    if (g->embed) cllm__embedding_backward(g->embed, dx, m->input_ids, BT, C);
    cllm__ok(err);
    return CLLM_OK;
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
    if (!model->grads_memory) return cllm__fail(err, CLLM_ERR_ARG, "AdamW update: no gradients yet (run a backward pass first)");
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
    if (n < 1 || !pc || !pr || !out) return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: need n >= 1 pairs, the two policy logp arrays and an output");
    if (!c.reference_free && (!rc || !rr)) return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: the reference logps are required unless reference_free is set");
    if (c.loss_type < CLLM_DPO_SIGMOID || c.loss_type > CLLM_DPO_IPO) return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: unknown loss_type %d (sigmoid, robust, hinge or ipo)", c.loss_type);
    if (!(c.beta > 0)) return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: beta must be > 0 (got %g)", c.beta);
    if (c.loss_type == CLLM_DPO_SIGMOID && !(c.label_smoothing >= 0 && c.label_smoothing <= 1))
        return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: label_smoothing must be in [0, 1] (got %g)", c.label_smoothing);
    if (c.loss_type == CLLM_DPO_ROBUST && !(c.label_smoothing >= 0 && c.label_smoothing < 0.5))
        return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: robust needs label_smoothing in [0, 0.5) (got %g)", c.label_smoothing);
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
    *n = 0;
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
    if ((rc = cllm__check_bt("PPO rewards", B, T, &n, err)) != CLLM_OK) return rc;
    if (!logprobs || !ref_logprobs || !scores || !seq_end || !rewards) return cllm__fail(err, CLLM_ERR_ARG, "PPO rewards: logprobs, ref_logprobs, scores, seq_end and rewards are required");
    if (kl_estimator < CLLM_KL_K1 || kl_estimator > CLLM_KL_K3) return cllm__fail(err, CLLM_ERR_ARG, "PPO rewards: unknown kl_estimator %d (k1, k2 or k3)", kl_estimator);
    if (placement != CLLM_REWARD_AFTER_EOS && placement != CLLM_REWARD_LAST_TOKEN) return cllm__fail(err, CLLM_ERR_ARG, "PPO rewards: unknown placement %d", placement);
    for (b = 0; b < B; b++) {
        int end = seq_end[b], e;
        if (end < -1 || end >= T) return cllm__fail(err, CLLM_ERR_ARG, "PPO rewards: seq_end[%d] = %d is outside [-1, %d]", b, end, T - 1);
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
        return cllm__fail(err, CLLM_ERR_ARG, "whitening: the mask selects %g values; whitening needs %s", s, biased ? "at least one" : "at least 2 (Bessel's correction s/(s-1))");
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
    if ((rc = cllm__check_bt("GAE", B, T, &n, err)) != CLLM_OK) return rc;
    if (!rewards || !values || !advantages || !returns) return cllm__fail(err, CLLM_ERR_ARG, "GAE: rewards, values, advantages and returns are required");
    if (mode != CLLM_GAE_TRL && mode != CLLM_GAE_SKIP) return cllm__fail(err, CLLM_ERR_ARG, "GAE: unknown mode %d (TRL or skip)", mode);
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
    if ((rc = cllm__check_bt("PPO loss", B, T, &n, err)) != CLLM_OK) return rc;
    if (!logprobs || !old_logprobs || !advantages || !values || !old_values || !returns || !mask || !out)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO loss: logprobs, old_logprobs, advantages, values, old_values, returns, mask and out are required");
    if (!(cliprange >= 0) || !(cliprange_value >= 0)) return cllm__fail(err, CLLM_ERR_ARG, "PPO loss: cliprange and cliprange_value must be >= 0");
    if (!value_mask) value_mask = mask;
    for (i = 0; i < n; i++) { msum += mask[i]; vsum += value_mask[i]; }
    if (!(msum > 0) || !(vsum > 0)) return cllm__fail(err, CLLM_ERR_ARG, "PPO loss: the mask (or value_mask) selects no token");
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
    if (n < 1 || G < 1 || n % G) return cllm__fail(err, CLLM_ERR_ARG, "GRPO advantages: %d rewards do not split into groups of %d", n, G);
    if (!rewards || !advantages) return cllm__fail(err, CLLM_ERR_ARG, "GRPO advantages: rewards and advantages are required");
    if (estimator != CLLM_GROUP_GRPO && estimator != CLLM_GROUP_RLOO) return cllm__fail(err, CLLM_ERR_ARG, "GRPO advantages: unknown estimator %d (grpo or rloo)", estimator);
    if (G < 2 && (estimator == CLLM_GROUP_RLOO || scale))
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO advantages: %s needs group_size >= 2", estimator == CLLM_GROUP_RLOO ? "RLOO" : "scaling by the unbiased std");
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

/* -------------------------------------------------------------------------------------------- */
/* The multiturn-aware reward                                                                    */
/* -------------------------------------------------------------------------------------------- */

CLLMDEF int cllm_count_tokens(const cllm_token_counter *tc, const char *text) {
    int n = 0, in_word = 0;
    if (!text) return 0;
    if (tc && tc->count) return tc->count(tc->ctx, text);
    for (; *text; text++) {                       /* Python's str.split(): runs of ASCII whitespace */
        int space = *text == ' ' || (*text >= '\t' && *text <= '\r');
        if (!space && !in_word) n++;
        in_word = !space;
    }
    return n;
}

CLLMDEF int cllm_tokenizer_count(void *tokenizer, const char *text) {
    int *ids = NULL, n = 0;
    if (cllm_tokenizer_encode((const cllm_tokenizer *)tokenizer, text, strlen(text), 0, &ids, &n, NULL, NULL) != CLLM_OK) n = 0;
    CLLM_FREE(ids);
    return n;
}

CLLMDEF void cllm_mr_config_init(cllm_mr_config *cfg, cllm_mr_preset preset) {
    memset(cfg, 0, sizeof *cfg);
    cfg->window = 2;                              /* paper Table 6: w = 2 and S = 3 for every task */
    cfg->samples = 3;
    cfg->variant = CLLM_MR_PAPER;
    cfg->lambda = preset == CLLM_MR_PRESET_DOCUMENT ? 1e-4 : 5e-4;
}

/* R* = sum_m w_m metric_m  [- min(lambda * tokens, 1) in the paper's variant]                  */
CLLMDEF double cllm_mr_reward(const cllm_mr_config *cfg, const double *metric_values, int tokens) {
    double r = 0, penalty;
    int m;
    for (m = 0; m < cfg->n_metrics; m++) {
        if (metric_values[m] != metric_values[m]) return NAN;    /* a failed metric fails the sample */
        r += cfg->metrics[m].weight * metric_values[m];
    }
    if (cfg->variant == CLLM_MR_PAPER) {
        penalty = cfg->lambda * tokens;
        r -= penalty < 1 ? penalty : 1;
    }
    return r;
}

CLLMDEF void cllm_mr_result_free(cllm_mr_result *r) {
    int s;
    if (!r) return;
    for (s = 0; r->samples && s < r->n_samples; s++) {
        cllm_conv_free(&r->samples[s].session);
        CLLM_FREE(r->samples[s].metrics);
    }
    CLLM_FREE(r->samples);
    memset(r, 0, sizeof *r);
}

CLLMDEF cllm_result cllm_mr_score(const cllm_mr_config *cfg, const cllm_user_sim *user, const cllm_assistant *future_assistant,
                                  const cllm_mr_item *items, int n, cllm_mr_result *out, cllm_err *err) {
    int S = cfg && cfg->samples > 0 ? cfg->samples : 1, N = n * S, i, s, k, m, n_ok;
    cllm_conv *convs = NULL;
    cllm_goal *goals = NULL;
    cllm_sim_status *status = NULL;
    cllm_session *sessions = NULL;
    int *ok_idx = NULL;
    double *scores = NULL;
    cllm_result rc = CLLM_OK;

    if (!cfg || n < 0 || (n > 0 && (!items || !out))) return cllm__fail(err, CLLM_ERR_ARG, "MR: needs a config, items and outputs");
    if (cfg->window < 0) return cllm__fail(err, CLLM_ERR_ARG, "MR: window must be >= 0 (0 = immediate reward)");
    if (cfg->window > 0 && (!user || !future_assistant)) return cllm__fail(err, CLLM_ERR_ARG, "MR: window %d needs a user simulator and a future assistant", cfg->window);
    for (i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        if (!items[i].goal || !items[i].history || !items[i].candidate) return cllm__fail(err, CLLM_ERR_ARG, "MR: item %d needs a goal, a history and a candidate", i);
    }
    if (N == 0) { cllm__ok(err); return CLLM_OK; }
    convs = (cllm_conv *)cllm__calloc((size_t)N, sizeof *convs);
    goals = (cllm_goal *)cllm__calloc((size_t)N, sizeof *goals);
    status = (cllm_sim_status *)cllm__calloc((size_t)N, sizeof *status);
    sessions = (cllm_session *)cllm__calloc((size_t)N, sizeof *sessions);
    ok_idx = (int *)cllm__calloc((size_t)N, sizeof *ok_idx);
    scores = (double *)cllm__calloc((size_t)N, sizeof *scores);
    if (!convs || !goals || !status || !sessions || !ok_idx || !scores) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }

    /* every future starts as history + candidate: sample s of item i is index i*S + s */
    for (i = 0; i < n && rc == CLLM_OK; i++) for (s = 0; s < S; s++) {
        k = i * S + s;
        goals[k] = *items[i].goal;
        if ((rc = cllm_conv_copy(&convs[k], items[i].history, err)) != CLLM_OK) break;
        if ((rc = cllm_conv_push(&convs[k], "assistant", items[i].candidate, err)) != CLLM_OK) break;
    }
    if (rc != CLLM_OK) goto done;

    /* t_j^f: up to w exchanges, user first; all N futures advance together */
    if (cfg->window > 0) cllm_simulate(user, future_assistant, goals, convs, N, 2 * cfg->window, status, NULL);

    /* metrics on the sessions whose simulation succeeded, one batch per metric */
    for (i = 0, n_ok = 0; i < n; i++) {
        out[i].n_samples = S;
        out[i].samples = (cllm_mr_sample *)cllm__calloc((size_t)S, sizeof(cllm_mr_sample));
        if (!out[i].samples) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
        for (s = 0; s < S; s++) {
            cllm_mr_sample *smp = &out[i].samples[s];
            k = i * S + s;
            smp->session = convs[k];              /* ownership moves to the result */
            memset(&convs[k], 0, sizeof convs[k]);
            smp->n_history = items[i].history->n;
            smp->terminated = status[k].terminated;
            smp->code = status[k].code;
            smp->err = status[k].err;
            smp->metrics = (double *)cllm__calloc((size_t)cfg->n_metrics + 1, sizeof(double));
            if (!smp->metrics) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
            for (m = 0; m < cfg->n_metrics; m++) smp->metrics[m] = NAN;
            if (smp->code == CLLM_OK) {
                sessions[n_ok].goal = items[i].goal; sessions[n_ok].task = items[i].task;
                sessions[n_ok].conv = &smp->session; sessions[n_ok].n_history = smp->n_history;
                ok_idx[n_ok++] = k;
            }
        }
    }
    for (m = 0; m < cfg->n_metrics; m++) {
        const cllm_metric *met = &cfg->metrics[m];
        cllm_err merr;
        for (k = 0; k < n_ok; k++) scores[k] = NAN;
        cllm_result mrc = CLLM_OK;
        merr.code = CLLM_OK; merr.msg[0] = 0;
        if (n_ok > 0) mrc = met->fn(met->ctx, sessions, n_ok, scores, &merr);
        for (k = 0; k < n_ok; k++) {              /* a failed metric (mrc) fails every sample */
            cllm_mr_sample *smp = &out[ok_idx[k] / S].samples[ok_idx[k] % S];
            if (mrc != CLLM_OK) scores[k] = NAN;
            smp->metrics[m] = scores[k];
            if (scores[k] == scores[k] || smp->code != CLLM_OK) continue;
            smp->code = cllm__fail(&smp->err, mrc != CLLM_OK ? mrc : CLLM_ERR_FORMAT,
                                   "metric '%s' could not score this session: %s",
                                   met->name ? met->name : "?", merr.msg[0] ? merr.msg : "it gave no reason");
        }
    }

    /* R* per sample, then MR = the mean over the samples that succeeded */
    for (i = 0; i < n; i++) {
        double sum = 0, sq = 0;
        out[i].n_ok = 0;
        for (s = 0; s < S; s++) {
            cllm_mr_sample *smp = &out[i].samples[s];
            int t;
            smp->tokens = 0;
            for (t = smp->n_history; t < smp->session.n; t++) smp->tokens += cllm_count_tokens(&cfg->tokens, smp->session.msgs[t].content);
            smp->reward = smp->code == CLLM_OK ? cllm_mr_reward(cfg, smp->metrics, smp->tokens) : NAN;
            if (smp->reward == smp->reward) { out[i].n_ok++; sum += smp->reward; sq += smp->reward * smp->reward; }
        }
        if (out[i].n_ok > 0) {
            double var;
            out[i].mr = sum / out[i].n_ok;
            var = sq / out[i].n_ok - out[i].mr * out[i].mr;
            out[i].std = var > 0 ? sqrt(var) : 0;
            out[i].code = CLLM_OK;
        } else {
            out[i].mr = NAN;
            for (s = 0; s < S && out[i].samples[s].code == CLLM_OK; s++) {}
            out[i].err = out[i].samples[s < S ? s : 0].err;
            out[i].code = out[i].err.code ? out[i].err.code : CLLM_ERR_FORMAT;
            if (rc == CLLM_OK) rc = cllm__fail(err, out[i].code, "MR item %d: every sample failed: %s", i, out[i].err.msg);
        }
    }
done:
    for (k = 0; convs && k < N; k++) cllm_conv_free(&convs[k]);
    CLLM_FREE(convs); CLLM_FREE(goals); CLLM_FREE(status); CLLM_FREE(sessions); CLLM_FREE(ok_idx); CLLM_FREE(scores);
    if (rc != CLLM_OK) { for (i = 0; i < n; i++) if (out[i].code == CLLM_OK && !out[i].samples) out[i].code = rc; }
    else cllm__ok(err);
    return rc;
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
    if (!user || !assistant || n < 0 || (n > 0 && (!goals || !convs))) rc = cllm__fail(err, CLLM_ERR_ARG, "simulation: needs a user simulator, an assistant, goals and conversations");
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
                size_t bytes;
                i = idx[k];
                bytes = 0;
                if (rep[k].code == CLLM_OK)           /* keep every conversation one readable line */
                    bytes = cllm__conv_json_bytes(&convs[i]) + cllm__json_escaped_len(rep[k].text, strlen(rep[k].text));
                if (bytes > CLLM__MAX_TEXT_JSON)
                    st[i].code = cllm__fail(&st[i].err, CLLM_ERR_LIMIT,
                                            "conversation %d: with this %s message it would take about %zu "
                                            "bytes as JSON, more than a line of ours may hold (CLLM_MAX_LINE_BYTES); "
                                            "stopped before it",
                                            i, users ? "user" : "assistant", bytes);
                else if (rep[k].code != CLLM_OK) { st[i].code = rep[k].code; st[i].err = rep[k].err; }
                else if (cllm_conv_push_meta(&convs[i], users ? "user" : "assistant", rep[k].text, &rep[k].meta,
                                             &st[i].err) != CLLM_OK)
                    st[i].code = st[i].err.code;
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
    if (!text) return out->code = cllm__fail(&out->err, CLLM_ERR_ARG, "reply: no text");
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
        return cllm__fail(err, CLLM_ERR_ARG, "user simulator: needs a simulator with turn or turn_batch, goals, histories and out");
    if (n == 0) { cllm__ok(err); return CLLM_OK; }
    for (i = 0; i < n; i++) memset(&out[i], 0, sizeof out[i]);
    if (sim->turn_batch) sim->turn_batch(sim->ctx, goals, histories, n, out);
    else for (i = 0; i < n; i++) out[i].code = sim->turn(sim->ctx, &goals[i], &histories[i], &out[i]);
    return cllm__replies_check(out, n, "the user simulator", err);
}

CLLMDEF cllm_result cllm_assistant_replies(const cllm_assistant *a, const cllm_conv *histories, int n, cllm_reply *out, cllm_err *err) {
    int i;
    if (!a || (!a->respond && !a->respond_batch) || n < 0 || (n > 0 && (!histories || !out)))
        return cllm__fail(err, CLLM_ERR_ARG, "assistant: needs an assistant with respond or respond_batch, histories and out");
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
    if (!model_output) return out->code = cllm__fail(&out->err, CLLM_ERR_ARG, "user simulator reply: no text");
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
    if (resp && (out->text = cllm__json_text(o, "response", &out->err)) != NULL) {
        char *trimmed = cllm__strdup_trim(out->text);
        CLLM_FREE(out->text);
        out->text = trimmed;
    }
    if (!resp || (out->text && !*out->text)) {
        cllm_reply_free(out);
        cllm__fail(&out->err, CLLM_ERR_FORMAT, "the simulator's JSON has no non-empty string \"response\"");
    } else if (!out->text) {
        if (out->err.code == CLLM_OK) cllm__fail(&out->err, CLLM_ERR_NOMEM, "out of memory");
    } else {
        out->terminated = strstr(out->text, termination) != NULL;
        out->thought = cllm__json_text(o, "thought", NULL);
        out->current_answer = cllm__json_text(o, "current_answer", NULL);
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
    snprintf(r->meta.finish_reason, sizeof r->meta.finish_reason, "%s", res->finish_reason);
    r->meta.replaced = res->replaced;
    if (r->code != CLLM_OK && last) {              /* say who gave up, and after how many answers */
        char why[CLLM_ERRMSG_SIZE];
        const cllm_llm_sim_config *c = &job->sim->cfg;
        snprintf(why, sizeof why, "%s", r->err.msg);
        cllm__fail(&r->err, r->code, "user simulator%s%s: no usable answer in %d tries; the last: %s", c->params.model ? " " : "",
                   c->params.model ? c->params.model : "", 1 + (c->max_parse_retries > 0 ? c->max_parse_retries : 0), why);
    }
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
    /* final_answer: CollabLLM v1's key */
    const char *key = cllm__json_str(o, "final_completion") ? "final_completion" : "final_answer";
    const char *t = cllm__json_str(o, key);
    if (!t || !*t) return cllm__fail(&j->err, CLLM_ERR_FORMAT, "the judge's JSON has no non-empty string \"final_completion\"");
    if (!(j->text = cllm__json_text(o, key, &j->err))) return j->err.code;
    return CLLM_OK;
}

typedef struct cllm__judge_job { cllm__verdict_fn verdict; cllm_judgement *out; const char *model; } cllm__judge_job;

static int cllm__judge_take(void *ctx, int i, const cllm_chat_result *res, int last) {
    cllm__judge_job *job = (cllm__judge_job *)ctx;
    cllm_judgement *j = &job->out[i];
    cJSON *o;
    cllm_judgement_free(j);
    if (res->code != CLLM_OK) {                   /* the client's message names the endpoint, status and reason */
        j->code = cllm__fail(&j->err, res->code, "judge %s: %s", job->model ? job->model : "(client model)",
                             res->err.msg);
        return 1;
    }
    o = cllm_json_parse_lenient(res->content, &j->err);
    j->code = o ? job->verdict(o, j) : j->err.code;
    if (j->code == CLLM_OK) { j->thought = cllm__json_text(o, "thought", NULL); cllm__ok(&j->err); }
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
    job.model = jg->cfg.params.model ? jg->cfg.params.model : jg->client->model;
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

/* -------------------------------------------------------------------------------------------- */
/* Data generation, pairs, evaluation                                                            */
/* -------------------------------------------------------------------------------------------- */

/* Appends o to b as one JSONL line, or fails when that line would be longer than our readers
   accept (CLLM_MAX_LINE_BYTES): nothing is written that could not be read back. */
static cllm_result cllm__jsonl_put(cllm__sb *b, const cJSON *o, const char *what, cllm_err *err) {
    char *text = cJSON_PrintUnformatted(o);
    size_t n;
    if (!text) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory writing %s", what);
    n = strlen(text);
    if (n >= (size_t)CLLM_MAX_LINE_BYTES) {
        cJSON_free(text);
        return cllm__fail(err, CLLM_ERR_LIMIT,
                          "%s would be a %zu-byte line, longer than our readers accept (CLLM_MAX_LINE_BYTES, "
                          "%ld); not written", what, n, (long)CLLM_MAX_LINE_BYTES);
    }
    cllm__sb_putn(b, text, n);
    cllm__sb_putc(b, '\n');
    cJSON_free(text);
    return b->oom ? cllm__fail(err, CLLM_ERR_NOMEM, "out of memory writing %s", what) : CLLM_OK;
}

/* Adds single_turn_prompt/completion/metadata of the task (completion keeps its JSON type). */
static void cllm__add_task_fields(cJSON *o, const cllm_task *t) {
    static const char *keys[] = { "single_turn_prompt", "single_turn_completion", "single_turn_metadata" };
    int i;
    for (i = 0; i < 3; i++) {
        const cJSON *v = t->json ? cJSON_GetObjectItemCaseSensitive(t->json, keys[i]) : NULL;
        if (v) cJSON_AddItemToObject(o, keys[i], cJSON_Duplicate(v, 1));
        else if (i == 0) cJSON_AddStringToObject(o, keys[i], t->prompt ? t->prompt : "");
    }
}

static cJSON *cllm__double_array(const double *x, int n) {
    cJSON *a = cJSON_CreateArray();
    int i;
    for (i = 0; a && i < n; i++) cJSON_AddItemToArray(a, x[i] == x[i] ? cJSON_CreateNumber(x[i]) : cJSON_CreateNull());
    return a;
}

/* One flat record (data_fmt/records.md) for one scored candidate. */
static cJSON *cllm__record_json(const cllm_mr_config *mr, const cllm_task *task, int conv_id, const cllm_conv *history,
                                const char *candidate, const cllm_msg_meta *meta, const cllm_mr_result *r) {
    cJSON *o = cJSON_CreateObject(), *rewards, *sessions;
    double *vals = (double *)cllm__calloc((size_t)r->n_samples + 1, sizeof(double));
    int s, m, incomplete = cllm__conv_incomplete(history) + cllm_msg_incomplete(meta);
    if (!o || !vals) { cJSON_Delete(o); CLLM_FREE(vals); return NULL; }
    cJSON_AddItemToObject(o, "prompt", cllm_conv_to_json(history));
    cJSON_AddStringToObject(o, "completion", candidate);
    if (meta->finish_reason[0]) cJSON_AddStringToObject(o, "completion_finish_reason", meta->finish_reason);
    if (meta->replaced > 0) cJSON_AddNumberToObject(o, "completion_replaced", meta->replaced);
    if (incomplete) cJSON_AddNumberToObject(o, "incomplete_messages", incomplete);
    cJSON_AddNumberToObject(o, "conv_id", conv_id);
    cJSON_AddNumberToObject(o, "turn_id", history->n);
    if (r->code == CLLM_OK) cJSON_AddNumberToObject(o, "score", r->mr); else cJSON_AddNullToObject(o, "score");
    rewards = cJSON_AddObjectToObject(o, "rewards");
    for (s = 0; s < r->n_samples; s++) vals[s] = r->samples[s].reward;
    cJSON_AddItemToObject(rewards, "MR", cllm__double_array(vals, r->n_samples));
    for (m = 0; m < mr->n_metrics; m++) {
        for (s = 0; s < r->n_samples; s++) vals[s] = r->samples[s].metrics[m];
        cJSON_AddItemToObject(rewards, mr->metrics[m].name ? mr->metrics[m].name : "metric", cllm__double_array(vals, r->n_samples));
    }
    if (mr->variant == CLLM_MR_PAPER) {
        for (s = 0; s < r->n_samples; s++) vals[s] = r->samples[s].tokens;
        cJSON_AddItemToObject(rewards, "forward_tokens", cllm__double_array(vals, r->n_samples));
    }
    sessions = cJSON_AddArrayToObject(o, "sessions");
    for (s = 0; s < r->n_samples; s++) cJSON_AddItemToArray(sessions, cllm_conv_to_json(&r->samples[s].session));
    cllm__add_task_fields(o, task);
    CLLM_FREE(vals);
    return o;
}

/* Reads an existing records file: which conversations are complete (all their task_rows rows
   present), and whether anything else (a half-written task, a torn last line) must be dropped.
   done[conv_id] = 1 for complete ones (conv ids index the task list). */
/* Is o a row of conversation *id (< n_tasks) that says its conversation has *rows rows? The
   scan counts exactly these rows and the rewrite keeps exactly these. */
static int cllm__datagen_row(const cJSON *o, int n_tasks, int *id, int *rows) {
    *id = -1; *rows = 0;
    return o && cllm__json_int(o, "conv_id", -1, id) && cllm__json_int(o, "task_rows", 0, rows) && *id >= 0 && *id < n_tasks && *rows > 0;
}

static cllm_result cllm__datagen_scan(const char *path, int n_tasks, unsigned char *done, int *dirty, cllm_err *err) {
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    int *count = (int *)cllm__calloc((size_t)n_tasks + 1, sizeof(int)), *want = (int *)cllm__calloc((size_t)n_tasks + 1, sizeof(int)), i, lineno = 0;
    long len = -1;
    cllm_result rc = CLLM_OK;
    *dirty = 0;
    if (!count || !want) { CLLM_FREE(count); CLLM_FREE(want); if (f) fclose(f); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    if (f) {
        while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
            cJSON *o = len ? cJSON_ParseWithLength(line, (size_t)len) : NULL;
            int id, rows;
            lineno++;
            if (cllm__datagen_row(o, n_tasks, &id, &rows)) {
                count[id]++; want[id] = rows;
            } else if (len) *dirty = 1;
            cJSON_Delete(o);
        }
        fclose(f);
    }
    /* a line we cannot read is not a torn one: stop rather than let the rewrite drop the rest */
    if (len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    for (i = 0; i < n_tasks; i++) {
        done[i] = count[i] > 0 && count[i] == want[i];
        if (count[i] && !done[i]) *dirty = 1;
    }
    CLLM_FREE(line); CLLM_FREE(count); CLLM_FREE(want);
    return rc;
}

/* Rewrites the records file keeping only the rows of complete conversations (atomic). */
static cllm_result cllm__datagen_compact(const char *path, int n_tasks, const unsigned char *done, cllm_err *err) {
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    cllm__sb keep = { NULL, 0, 0, 0 };
    long len;
    cllm_result rc;
    if (!f) return CLLM_OK;
    while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *o = len ? cJSON_ParseWithLength(line, (size_t)len) : NULL;
        int id, rows;
        if (cllm__datagen_row(o, n_tasks, &id, &rows) && done[id]) { cllm__sb_putn(&keep, line, (size_t)len); cllm__sb_putc(&keep, '\n'); }
        cJSON_Delete(o);
    }
    fclose(f);
    CLLM_FREE(line);
    if (keep.oom || len < -1) { cllm__sb_free(&keep); return len < -1 ? cllm__line_fail(err, path, 0, len) : cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    rc = cllm_write_file_atomic(path, keep.p ? keep.p : "", keep.n, err);
    cllm__sb_free(&keep);
    return rc;
}

/* Appends text to path and flushes it to disk. */
static cllm_result cllm__append_durable(const char *path, const char *text, size_t n, cllm_err *err) {
    FILE *f = fopen(path, "ab");
    int bad;
    if (!f) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot open for appending (%s)", path, strerror(errno));
    bad = fwrite(text, 1, n, f) != n;
    bad |= fflush(f) != 0;
#if !defined(_WIN32)
    bad |= fsync(fileno(f)) != 0;
#endif
    bad |= fclose(f) != 0;
    return bad ? cllm__fail(err, CLLM_ERR_IO, "%s: write failed (%s)", path, strerror(errno)) : CLLM_OK;
}

/* One conversation of data generation; its records (without task_rows yet) go to rows. */
static cllm_result cllm__datagen_task(const cllm_datagen_config *cfg, const cllm_user_sim *user, const cllm_assistant *cand,
                                      const cllm_assistant *future, const cllm_task *task, int conv_id, cJSON *rows, cllm_err *err) {
    int k = cllm__def(cfg->n_candidates, 2), max_turns = cllm__def(cfg->max_turns, 7), turn, i, best;
    cllm_goal goal;
    cllm_conv history, *views = (cllm_conv *)cllm__calloc((size_t)k, sizeof(cllm_conv));
    cllm_reply *replies = (cllm_reply *)cllm__calloc((size_t)k, sizeof(cllm_reply)), ureply;
    cllm_mr_item *items = (cllm_mr_item *)cllm__calloc((size_t)k, sizeof(cllm_mr_item));
    cllm_mr_result *res = (cllm_mr_result *)cllm__calloc((size_t)k, sizeof(cllm_mr_result));
    cllm_result rc = CLLM_OK;
    memset(&ureply, 0, sizeof ureply);
    memset(&history, 0, sizeof history);
    goal.task_desc = cfg->task_desc ? cfg->task_desc : "a task";
    goal.prompt = task->prompt;
    goal.reference = cfg->show_reference ? task->completion : NULL;
    if (!views || !replies || !items || !res) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }

    /* the simulated user opens the conversation */
    if ((rc = cllm_user_sim_turns(user, &goal, &history, 1, &ureply, err)) != CLLM_OK) goto done;
    if ((rc = cllm_conv_push_meta(&history, "user", ureply.text, &ureply.meta, err)) != CLLM_OK) goto done;
    for (turn = 0; turn < max_turns && !ureply.terminated; turn++) {
        int longest = -1, s;
        for (i = 0; i < k; i++) views[i] = history;
        if ((rc = cllm_assistant_replies(cand, views, k, replies, err)) != CLLM_OK) goto done;
        for (i = 0; i < k; i++) { items[i].goal = &goal; items[i].task = task; items[i].history = &history; items[i].candidate = replies[i].text; }
        cllm_mr_score(&cfg->mr, user, future, items, k, res, err);   /* per-candidate failures are in res */
        for (i = 0, best = -1; i < k; i++) {
            cJSON *row;
            size_t bytes = cllm__conv_json_bytes(&history);
            bytes += cllm__json_escaped_len(replies[i].text, strlen(replies[i].text));
            for (s = 0; s < res[i].n_samples; s++) bytes += cllm__conv_json_bytes(&res[i].samples[s].session);
            if (bytes >= (size_t)CLLM_MAX_LINE_BYTES) {   /* refuse before building it */
                rc = cllm__fail(err, CLLM_ERR_LIMIT,
                                "turn %d, candidate %d: its record (history, candidate and %d simulated sessions) "
                                "would take about %zu bytes as one line, more than our readers accept "
                                "(CLLM_MAX_LINE_BYTES)",
                                turn, i, res[i].n_samples, bytes);
                goto done;
            }
            row = cllm__record_json(&cfg->mr, task, conv_id, &history, replies[i].text, &replies[i].meta, &res[i]);
            if (!row) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
            cJSON_AddItemToArray(rows, row);
            if (res[i].code == CLLM_OK && (best < 0 || res[i].mr > res[best].mr)) best = i;   /* ties: the first */
        }
        if (best < 0) { rc = cllm__fail(err, res[0].code ? res[0].code : CLLM_ERR_FORMAT, "turn %d: no candidate could be scored: %s", turn, res[0].err.msg); goto done; }
        rc = cllm_conv_push_meta(&history, "assistant", replies[best].text, &replies[best].meta, err);
        if (rc != CLLM_OK) goto done;
        /* the next user message: from the best candidate's longest simulated future */
        for (s = 0; s < res[best].n_samples; s++)
            if (res[best].samples[s].code == CLLM_OK && (longest < 0 || res[best].samples[s].session.n > res[best].samples[longest].session.n)) longest = s;
        cllm_reply_free(&ureply);
        if (longest >= 0 && res[best].samples[longest].session.n > history.n) {
            const cllm_mr_sample *smp = &res[best].samples[longest];
            cllm_reply_set(&ureply, smp->session.msgs[history.n].content, smp->terminated && smp->session.n == history.n + 1);
            if (smp->session.meta) ureply.meta = smp->session.meta[history.n];
        } else if ((rc = cllm_user_sim_turns(user, &goal, &history, 1, &ureply, err)) != CLLM_OK) goto done;
        for (i = 0; i < k; i++) { cllm_mr_result_free(&res[i]); cllm_reply_free(&replies[i]); }
        if (!ureply.terminated) rc = cllm_conv_push_meta(&history, "user", ureply.text, &ureply.meta, err);
        if (rc != CLLM_OK) goto done;
    }
done:
    for (i = 0; i < k && res; i++) cllm_mr_result_free(&res[i]);
    for (i = 0; i < k && replies; i++) cllm_reply_free(&replies[i]);
    cllm_reply_free(&ureply);
    cllm_conv_free(&history);
    CLLM_FREE(views); CLLM_FREE(replies); CLLM_FREE(items); CLLM_FREE(res);
    return rc;
}

CLLMDEF cllm_result cllm_datagen_run(const cllm_datagen_config *cfg, const cllm_user_sim *user,
                                     const cllm_assistant *candidates, const cllm_assistant *future_assistant,
                                     const cllm_task *tasks, int n_tasks, const char *out_path, cllm_err *err) {
    unsigned char *done = NULL;
    int dirty = 0, t, n_shards, shard, n_done = 0, n_failed = 0, n_todo = 0;
    double t0 = cllm__now();
    cllm_result rc;
    cllm_err terr, first;
    if (!cfg || !user || !candidates || !out_path || n_tasks < 0 || (n_tasks && !tasks)) return cllm__fail(err, CLLM_ERR_ARG, "data generation: needs a config, a user simulator, a candidate model, tasks and an output path");
    n_shards = cllm__def(cfg->n_shards, 1); shard = cfg->shard;
    if (shard < 0 || shard >= n_shards) return cllm__fail(err, CLLM_ERR_ARG, "data generation: shard %d is not in [0, %d)", shard, n_shards);
    done = (unsigned char *)cllm__calloc((size_t)n_tasks + 1, 1);
    if (!done) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm__datagen_scan(out_path, n_tasks, done, &dirty, err)) != CLLM_OK) { CLLM_FREE(done); return rc; }
    if (dirty && (rc = cllm__datagen_compact(out_path, n_tasks, done, err)) != CLLM_OK) { CLLM_FREE(done); return rc; }
    for (t = shard; t < n_tasks; t += n_shards) n_todo += !done[t];
    if (cfg->verbose) fprintf(stderr, "generate-data: %d tasks in shard %d/%d, %d already done, %d to go%s\n",
                              (n_tasks - shard + n_shards - 1) / n_shards, shard, n_shards, (n_tasks - shard + n_shards - 1) / n_shards - n_todo, n_todo,
                              dirty ? " (dropped a half-written task)" : "");
    first.code = CLLM_OK; first.msg[0] = 0;
    for (t = shard; t < n_tasks; t += n_shards) {
        cJSON *rows, *row;
        cllm__sb buf = { NULL, 0, 0, 0 };
        int n_rows;
        if (done[t]) continue;
        rows = cJSON_CreateArray();
        rc = rows ? cllm__datagen_task(cfg, user, candidates, future_assistant ? future_assistant : candidates, &tasks[t], t, rows, &terr)
                  : cllm__fail(&terr, CLLM_ERR_NOMEM, "out of memory");
        n_rows = rows ? cJSON_GetArraySize(rows) : 0;
        if (rc == CLLM_OK && n_rows > 0) {
            cJSON_ArrayForEach(row, rows) {
                cJSON_AddNumberToObject(row, "task_rows", n_rows);
                if ((rc = cllm__jsonl_put(&buf, row, "a record", &terr)) != CLLM_OK) break;
            }
            if (rc == CLLM_OK) rc = cllm__append_durable(out_path, buf.p, buf.n, &terr);
        }
        cllm__sb_free(&buf);
        cJSON_Delete(rows);
        if (rc == CLLM_OK) n_done++;
        else {
            n_failed++;
            if (first.code == CLLM_OK) first = terr;
            if (cfg->verbose) fprintf(stderr, "generate-data: task %d failed: %s\n", t, terr.msg);
            if (rc == CLLM_ERR_IO || rc == CLLM_ERR_NOMEM) break;   /* the output itself is broken: stop */
        }
        if (cfg->verbose) {
            double el = cllm__now() - t0;
            int finished = n_done + n_failed;
            fprintf(stderr, "generate-data: [%d/%d] task %d: %d rows, %.1fs elapsed, ETA %.0fs\n", finished, n_todo, t, n_rows, el,
                    finished ? el / finished * (n_todo - finished) : 0.0);
        }
    }
    CLLM_FREE(done);
    if (n_failed) return cllm__fail(err, first.code, "%d of %d tasks failed (rerun to retry them; finished tasks are kept). First: %s", n_failed, n_todo, first.msg);
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- SFT rows and DPO pairs ----------------------------------------------------------------- */

typedef struct cllm__rec { int conv_id, turn_id; double score; cJSON *row; } cllm__rec;

static int cllm__rec_cmp(const void *a, const void *b) {
    const cllm__rec *x = (const cllm__rec *)a, *y = (const cllm__rec *)b;
    if (x->conv_id != y->conv_id) return x->conv_id < y->conv_id ? -1 : 1;
    if (x->turn_id != y->turn_id) return x->turn_id < y->turn_id ? -1 : 1;
    return 0;
}

/* prompt messages (+ optional system prompt first) as a new JSON array */
static cJSON *cllm__prompt_json(const cJSON *row, const char *system_prompt) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(row, "prompt");
    cJSON *out = cJSON_CreateArray(), *m;
    if (system_prompt) {
        m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system"); cJSON_AddStringToObject(m, "content", system_prompt);
        cJSON_AddItemToArray(out, m);
    }
    cJSON_ArrayForEach(m, p) cJSON_AddItemToArray(out, cJSON_Duplicate(m, 1));
    return out;
}

static cJSON *cllm__assistant_msg(const char *text) {
    cJSON *arr = cJSON_CreateArray(), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant"); cJSON_AddStringToObject(m, "content", text);
    cJSON_AddItemToArray(arr, m);
    return arr;
}

static cllm_result cllm__write_jsonl(const char *path, cJSON *rows, cllm_err *err) {
    cllm__sb b = { NULL, 0, 0, 0 };
    cJSON *r;
    cllm_result rc = CLLM_OK;
    int i = 0;
    cJSON_ArrayForEach(r, rows) {
        char what[64];
        snprintf(what, sizeof what, "line %d", ++i);
        if ((rc = cllm__jsonl_put(&b, r, what, err)) != CLLM_OK) break;
    }
    if (rc == CLLM_OK) rc = cllm_write_file_atomic(path, b.p ? b.p : "", b.n, err);
    else cllm__fail(err, rc, "%s: %s", path, err ? err->msg : "");
    cllm__sb_free(&b);
    return rc;
}

CLLMDEF cllm_result cllm_build_pairs(const char *records_path, const cllm_pairs_config *cfg, const char *sft_path,
                                     const char *dpo_path, int *n_sft, int *n_pairs, cllm_err *err) {
    FILE *f = cllm__open_read(records_path, "a JSONL file", err);
    char *line = NULL;
    size_t cap = 0;
    long len;
    int lineno = 0, i, j, n = 0, any_line = 0;
    cllm__rec *recs = NULL;
    cJSON *sft = cJSON_CreateArray(), *dpo = cJSON_CreateArray();
    double min_gap = cfg ? cllm__def(cfg->min_gap, 0.02) : 0.02;
    const char *sys = cfg ? cfg->system_prompt : NULL;
    cllm_result rc = CLLM_OK;
    if (n_sft) *n_sft = 0;
    if (n_pairs) *n_pairs = 0;
    if (!f) { cJSON_Delete(sft); cJSON_Delete(dpo); return CLLM_ERR_IO; }
    while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
        cllm__rec r;
        const cJSON *sc;
        lineno++;
        if (len == 0) continue;
        any_line = 1;
        if (!(r.row = cllm__jsonl_parse(line, (size_t)len, records_path, lineno, err))) { rc = CLLM_ERR_FORMAT; break; }
        sc = cJSON_GetObjectItemCaseSensitive(r.row, "score");
        if (!cllm__json_int(r.row, "conv_id", -1, &r.conv_id) || !cllm__json_int(r.row, "turn_id", -1, &r.turn_id) ||
            !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(r.row, "prompt")) || !cllm__json_str(r.row, "completion")) {
            cJSON_Delete(r.row);
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: not a record (needs prompt, completion, conv_id, turn_id, score; see data_fmt/records.md)", records_path, lineno);
            break;
        }
        if (!cJSON_IsNumber(sc)) { cJSON_Delete(r.row); continue; }   /* an unscored candidate takes no part */
        r.score = sc->valuedouble;
        stbds_arrput(recs, r);
        n++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, records_path, lineno + 1, len);
    if (rc == CLLM_OK && !any_line) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no records (the file is empty; data_fmt/records.md)", records_path);
    if (rc == CLLM_OK) {
        if (n) qsort(recs, (size_t)n, sizeof *recs, cllm__rec_cmp);   /* recs is NULL when n == 0 */
        for (i = 0; i < n; i = j) {
            int best = i, worst = i;
            for (j = i; j < n && recs[j].conv_id == recs[i].conv_id && recs[j].turn_id == recs[i].turn_id; j++) {
                if (recs[j].score > recs[best].score) best = j;
                if (recs[j].score < recs[worst].score) worst = j;
            }
            /* DPO: best vs worst of this (conversation, turn) */
            if (j - i >= 2 && recs[best].score - recs[worst].score >= min_gap) {
                cJSON *p = cJSON_CreateObject();
                cJSON_AddItemToObject(p, "prompt", cllm__prompt_json(recs[best].row, sys));
                cJSON_AddItemToObject(p, "chosen", cllm__assistant_msg(cllm__json_str(recs[best].row, "completion")));
                cJSON_AddItemToObject(p, "rejected", cllm__assistant_msg(cllm__json_str(recs[worst].row, "completion")));
                cJSON_AddNumberToObject(p, "score_chosen", recs[best].score);
                cJSON_AddNumberToObject(p, "score_rejected", recs[worst].score);
                cJSON_AddNumberToObject(p, "conv_id", recs[i].conv_id);
                cJSON_AddNumberToObject(p, "turn_id", recs[i].turn_id);
                cJSON_AddItemToArray(dpo, p);
            }
            /* SFT: the best response at the conversation's last turn */
            if (j == n || recs[j].conv_id != recs[i].conv_id) {
                cJSON *row = cJSON_CreateObject(), *msgs = cllm__prompt_json(recs[best].row, sys), *a = cllm__assistant_msg(cllm__json_str(recs[best].row, "completion"));
                cJSON_AddItemToArray(msgs, cJSON_DetachItemFromArray(a, 0));
                cJSON_Delete(a);
                cJSON_AddItemToObject(row, "messages", msgs);
                cJSON_AddNumberToObject(row, "conv_id", recs[i].conv_id);
                cJSON_AddNumberToObject(row, "score", recs[best].score);
                cJSON_AddItemToArray(sft, row);
            }
        }
        if (sft_path) rc = cllm__write_jsonl(sft_path, sft, err);
        if (rc == CLLM_OK && dpo_path) rc = cllm__write_jsonl(dpo_path, dpo, err);
        if (n_sft) *n_sft = cJSON_GetArraySize(sft);
        if (n_pairs) *n_pairs = cJSON_GetArraySize(dpo);
    }
    for (i = 0; i < n; i++) cJSON_Delete(recs[i].row);
    stbds_arrfree(recs);
    cJSON_Delete(sft); cJSON_Delete(dpo);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* ---- one micro-batch of SFT and of DPO ----------------------------------------------------- */

CLLMDEF void cllm_train_stats_add(cllm_train_stats *s, const char *name, double sum, double count) {
    int i;
    for (i = 0; i < s->n; i++) if (strcmp(s->name[i], name) == 0) break;
    if (i == s->n) {
        if (s->n == CLLM_TRAIN_MAX_STATS) return;
        s->name[i] = name; s->sum[i] = 0; s->count[i] = 0;
        s->n++;
    }
    s->sum[i] += sum;
    s->count[i] += count;
}

CLLMDEF double cllm_train_stats_mean(const cllm_train_stats *s, const char *name) {
    int i;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->name[i], name) == 0) return s->count[i] > 0 ? s->sum[i] / s->count[i] : NAN;
    return NAN;
}

/* Backward of the objective sum_b d[b] * logp(row b), i.e. dlogp = d[b] on every target of row b. */
static cllm_result cllm__backward_rows(cllm_model *m, const double *d, cllm_err *err) {
    size_t BT = (size_t)m->B * (size_t)m->T, i;
    cllm_float *dlogp = (cllm_float *)cllm__calloc(BT, sizeof(cllm_float));
    cllm_result rc;
    if (!dlogp) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < BT; i++) dlogp[i] = m->targets[i] >= 0 ? (cllm_float)d[i / (size_t)m->T] : 0;
    rc = cllm_backward(m, dlogp, NULL, err);
    CLLM_FREE(dlogp);
    return rc;
}

/* HF ForCausalLMLoss summed: loss_sum = -sum of target logps; d(loss_sum / norm)/d logp = -1/norm. */
CLLMDEF cllm_result cllm_sft_micro_step(cllm_model *m, const cllm_train_seq *const *rows, int n, double norm,
                                        int backward, cllm_train_stats *st, cllm_err *err) {
    cllm__seq_batch sb;
    double *lp = (double *)cllm__calloc((size_t)n + 1, sizeof(double)), sum = 0;
    int b, targets = 0;
    cllm_result rc;
    if (!lp) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (n < 1 || !(norm > 0)) { CLLM_FREE(lp); return cllm__fail(err, CLLM_ERR_ARG, "SFT step: need n >= 1 rows and norm > 0"); }
    rc = cllm__seq_batch_make(&sb, rows, n, err);
    if (rc == CLLM_OK) rc = cllm_forward(m, &sb.batch, NULL, err);
    if (rc == CLLM_OK) {
        cllm__row_logps(m, lp);
        for (b = 0; b < n; b++) { sum += lp[b]; lp[b] = -1.0 / norm; }
        targets = m->n_targets;
        if (backward) rc = cllm__backward_rows(m, lp, err);
    }
    if (rc == CLLM_OK && st) {
        cllm_train_stats_add(st, "loss", -sum, targets);
        st->tokens += (double)cllm__batch_tokens(&sb);
    }
    cllm__seq_batch_free(&sb);
    CLLM_FREE(lp);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* The reference logps of a DPO micro-batch (2n rows: chosen then rejected), see the header. */
static cllm_result cllm__dpo_ref_logps(cllm_model *m, cllm_model *ref, const cllm_dpo_pair *const *pairs, int n,
                                       const cllm__seq_batch *sb, int reference_free, double *out, cllm_err *err) {
    int i, have = 1;
    cllm_result rc = CLLM_OK;
    for (i = 0; i < n; i++) have &= !isnan(pairs[i]->ref_chosen) && !isnan(pairs[i]->ref_rejected);
    if (have) {
        for (i = 0; i < n; i++) { out[i] = pairs[i]->ref_chosen; out[n + i] = pairs[i]->ref_rejected; }
        return CLLM_OK;
    }
    if (ref) {
        rc = cllm_forward(ref, &sb->batch, NULL, err);
        if (rc == CLLM_OK) cllm__row_logps(ref, out);
        return rc;
    }
    if (m->lora && m->lora->enabled) {             /* the base model under the adapters */
        int training = m->lora->training;
        m->lora->enabled = 0; m->lora->training = 0;
        rc = cllm_forward(m, &sb->batch, NULL, err);
        m->lora->enabled = 1; m->lora->training = training;
        if (rc == CLLM_OK) cllm__row_logps(m, out);
        return rc;
    }
    if (reference_free) { for (i = 0; i < 2 * n; i++) out[i] = 0; return CLLM_OK; }
    return cllm__fail(err, CLLM_ERR_ARG, "DPO needs a reference: a reference model, precomputed ref_*_logps in the pairs, LoRA adapters (the base model is the reference), or reference_free");
}

CLLMDEF cllm_result cllm_dpo_micro_step(cllm_model *m, cllm_model *ref, const cllm_dpo_pair *const *pairs, int n,
                                        const struct cllm_dpo_config *cfg, double norm, cllm_train_stats *st, cllm_err *err) {
    cllm_dpo_config c;
    cllm_dpo_out out;
    cllm__seq_batch sb;
    const cllm_train_seq **rows = (const cllm_train_seq **)cllm__calloc(2 * (size_t)n + 1, sizeof *rows);
    double *pol = (double *)cllm__calloc(2 * (size_t)n + 1, sizeof(double)), *refl = (double *)cllm__calloc(2 * (size_t)n + 1, sizeof(double));
    double *len = (double *)cllm__calloc(2 * (size_t)n + 1, sizeof(double)), *d = (double *)cllm__calloc(2 * (size_t)n + 1, sizeof(double));
    double *losses = (double *)cllm__calloc((size_t)n + 1, sizeof(double)), *cr = (double *)cllm__calloc((size_t)n + 1, sizeof(double));
    double *rj = (double *)cllm__calloc((size_t)n + 1, sizeof(double));
    double s_cr = 0, s_rj = 0, s_acc = 0, s_pc = 0, s_pr = 0, s_loss = 0;
    cllm_result rc = CLLM_OK;
    int i;
    memset(&sb, 0, sizeof sb);
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    if (!rows || !pol || !refl || !len || !d || !losses || !cr || !rj) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    if (n < 1 || !(norm > 0)) { rc = cllm__fail(err, CLLM_ERR_ARG, "DPO step: need n >= 1 pairs and norm > 0"); goto done; }
    for (i = 0; i < n; i++) {
        rows[i] = &pairs[i]->chosen; rows[n + i] = &pairs[i]->rejected;
        len[i] = cllm_train_seq_targets(rows[i]); len[n + i] = cllm_train_seq_targets(rows[n + i]);
        if (len[i] < 1 || len[n + i] < 1) { rc = cllm__fail(err, CLLM_ERR_ARG, "pair %d: a completion has no target tokens", i); goto done; }
    }
    if ((rc = cllm__seq_batch_make(&sb, rows, 2 * n, err)) != CLLM_OK) goto done;
    /* reference first: the policy's forward must be the last one, its activations feed backward */
    if ((rc = cllm__dpo_ref_logps(m, ref, pairs, n, &sb, c.reference_free, refl, err)) != CLLM_OK) goto done;
    if ((rc = cllm_forward(m, &sb.batch, NULL, err)) != CLLM_OK) goto done;
    cllm__row_logps(m, pol);
    if (c.loss_type == CLLM_DPO_IPO && !c.ipo_sum)   /* TRL's DPOTrainer: IPO compares per-token averages */
        for (i = 0; i < 2 * n; i++) { pol[i] /= len[i]; refl[i] /= len[i]; }
    memset(&out, 0, sizeof out);
    out.losses = losses; out.chosen_rewards = cr; out.rejected_rewards = rj;
    out.d_chosen = d; out.d_rejected = d + n;
    if ((rc = cllm_dpo_loss(&c, n, pol, pol + n, refl, refl + n, &out, err)) != CLLM_OK) goto done;
    /* cllm_dpo_loss differentiates the mean over these n pairs; the step wants sum / norm */
    for (i = 0; i < 2 * n; i++) d[i] *= (double)n / norm / (c.loss_type == CLLM_DPO_IPO && !c.ipo_sum ? len[i] : 1.0);
    if (c.rpo_alpha > 0) {
        /* RPO: + alpha * NLL(chosen), NLL = -(sum of the chosen tokens' logps) / (chosen tokens), as
           TRL's rpo term (a mean over this micro-batch's chosen tokens), weighted like the pairs */
        double tok_c = 0, nll = 0;
        for (i = 0; i < n; i++) { tok_c += len[i]; nll -= pol[i] * (c.loss_type == CLLM_DPO_IPO && !c.ipo_sum ? len[i] : 1.0); }
        for (i = 0; i < n; i++) d[i] -= c.rpo_alpha * (double)n / norm / tok_c;
        for (i = 0; i < n; i++) losses[i] += c.rpo_alpha * nll / tok_c;
        if (st) cllm_train_stats_add(st, "nll_loss", nll / tok_c * n, n);
    }
    if ((rc = cllm__backward_rows(m, d, err)) != CLLM_OK) goto done;
    for (i = 0; i < n; i++) {
        s_loss += losses[i]; s_cr += cr[i]; s_rj += rj[i]; s_acc += cr[i] > rj[i];
        s_pc += pol[i]; s_pr += pol[n + i];
    }
    if (st) {
        cllm_train_stats_add(st, "loss", s_loss, n);
        cllm_train_stats_add(st, "rewards/chosen", s_cr, n);
        cllm_train_stats_add(st, "rewards/rejected", s_rj, n);
        cllm_train_stats_add(st, "rewards/accuracies", s_acc, n);
        cllm_train_stats_add(st, "rewards/margins", s_cr - s_rj, n);
        cllm_train_stats_add(st, "logps/chosen", s_pc, n);
        cllm_train_stats_add(st, "logps/rejected", s_pr, n);
        st->tokens += (double)cllm__batch_tokens(&sb);
    }
done:
    cllm__seq_batch_free(&sb);
    CLLM_FREE(rows); CLLM_FREE(pol); CLLM_FREE(refl); CLLM_FREE(len); CLLM_FREE(d);
    CLLM_FREE(losses); CLLM_FREE(cr); CLLM_FREE(rj);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* ---- rollouts: sampling, scoring, sequences ------------------------------------------------ */

/* The seed counter of (step, prompt, phase): phase 0 samples the trained responses, 1 simulates
   MR's futures, 2 is a local simulator's, 3 + e orders PPO's pass e. One splitmix64 step over
   the three mixed by odd constants, so every combination gets its own streams and a resumed run
   replays exactly those of an uninterrupted one. */
static uint64_t cllm__online_call(long step, int prompt, int phase) {
    uint64_t x = (uint64_t)step * 0x9E3779B97F4A7C15ull ^ (uint64_t)(unsigned)prompt * 0xBF58476D1CE4E5B9ull ^ (uint64_t)(unsigned)phase * 0x94D049BB133111EBull;
    return cllm__splitmix64(&x);
}

/* The rollout settings with a method's defaults. */
static cllm_rollout_config cllm__rollout_def(const cllm_rollout_config *in, float temperature, int top_k, int max_new_tokens, uint64_t seed) {
    cllm_rollout_config c = *in;
    c.gen.sampler.temperature = cllm__def(c.gen.sampler.temperature, temperature);
    c.gen.sampler.top_k = c.gen.sampler.top_k < 0 ? 0 : cllm__def(c.gen.sampler.top_k, top_k);
    c.gen.sampler.top_p = cllm__def(c.gen.sampler.top_p, 1.0f);
    c.gen.sampler.seed = cllm__def(c.gen.sampler.seed, seed);
    c.gen.max_new_tokens = cllm__def(c.gen.max_new_tokens, max_new_tokens);
    c.logprob_tol = cllm__def(c.logprob_tol, 1e-4);
    return c;
}

static cllm_result cllm__rollout_check_config(const cllm_rollout_config *c, const cllm_local_lm *policy, const cllm_online_prompts *p, cllm_err *err) {
    if (!policy || !policy->model.params_memory || !policy->tok.priv) return cllm__fail(err, CLLM_ERR_ARG, "online training needs the policy as a loaded local model");
    if (!p || p->n < 1) return cllm__fail(err, CLLM_ERR_ARG, "online training needs prompts");
    if (!c->mr) return cllm__fail(err, CLLM_ERR_ARG, "online training needs the reward: rollout.mr");
    if (c->mr->window > 0 && (!c->user || !c->future))
        return cllm__fail(err, CLLM_ERR_ARG, "MR with window %d needs rollout.user (the simulator) and rollout.future (the policy as future assistant)", c->mr->window);
    if (c->gen.sampler.greedy) return cllm__fail(err, CLLM_ERR_ARG, "online training samples its responses: greedy decoding gives every sample the same answer");
    return CLLM_OK;
}

/* n_samples responses to each prompt idx[0..n) into out[i * n_samples + s], the policy's seed
   counter set per prompt (phase 0). The system prompt goes first, never into the history. */
static cllm_result cllm__rollout_sample(cllm_local_lm *lm, const cllm_rollout_config *c, const cllm_online_prompts *p, const int *idx, int n,
                                        int n_samples, long step, cllm_local_output *out, cllm_err *err) {
    int i, j, sys = c->system_prompt != NULL;
    cllm_result rc = CLLM_OK;
    memset(out, 0, (size_t)n * (size_t)n_samples * sizeof *out);
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        const cllm_conv *h = &p->items[idx[i]].history;
        cllm_conv view;
        memset(&view, 0, sizeof view);
        view.msgs = (cllm_message *)cllm__calloc((size_t)h->n + 1, sizeof *view.msgs);
        if (!view.msgs) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); break; }
        if (sys) { view.msgs[0].role = "system"; view.msgs[0].content = c->system_prompt; }
        for (j = 0; j < h->n; j++) view.msgs[sys + j] = h->msgs[j];
        view.n = view.cap = sys + h->n;
        lm->calls = cllm__online_call(step, idx[i], 0);
        rc = cllm_local_chat(lm, &view, 1, n_samples, &c->gen, out + (size_t)i * n_samples, err);
        CLLM_FREE(view.msgs);
    }
    if (rc != CLLM_OK) cllm_local_outputs_free(out, n * n_samples);
    return rc;
}

/* MR of every response out[k] (k < n * n_samples, prompt idx[k / n_samples]) in one batch:
   scores[k], NAN where it failed; *failed counts those. The policy plays the future assistant
   with its seed counter set from (step, first prompt, 1) (a local simulator's from phase 2). */
static cllm_result cllm__rollout_score(const cllm_rollout_config *c, cllm_local_lm *policy, const cllm_online_prompts *p, const int *idx,
                                       int n, int n_samples, long step, const cllm_local_output *out, double *scores, int *failed, cllm_err *err) {
    int N = n * n_samples, k;
    cllm_mr_item *items = (cllm_mr_item *)cllm__calloc((size_t)N, sizeof *items);
    cllm_mr_result *res = (cllm_mr_result *)cllm__calloc((size_t)N, sizeof *res);
    cllm_result rc = CLLM_OK;
    cllm_err e;
    *failed = 0;
    if (!items || !res) { CLLM_FREE(items); CLLM_FREE(res); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    for (k = 0; k < N; k++) {
        const cllm_online_prompt *it = &p->items[idx[k / n_samples]];
        items[k].goal = &it->goal; items[k].task = &it->task; items[k].history = &it->history; items[k].candidate = out[k].text;
    }
    policy->calls = cllm__online_call(step, idx[0], 1);
    if (c->user_lm) c->user_lm->calls = cllm__online_call(step, idx[0], 2);
    e.code = CLLM_OK; e.msg[0] = 0;
    if (cllm_mr_score(c->mr, c->user, c->future, items, N, res, &e) != CLLM_OK && res[0].n_samples == 0)
        rc = cllm__fail(err, e.code, "MR: %s", e.msg);                  /* it never ran: a setup error */
    for (k = 0; k < N; k++) {
        scores[k] = rc == CLLM_OK && res[k].code == CLLM_OK ? res[k].mr : NAN;
        *failed += rc == CLLM_OK && isnan(scores[k]);
        cllm_mr_result_free(&res[k]);
    }
    CLLM_FREE(items); CLLM_FREE(res);
    return rc;
}

/* The training sequence of one response: its prompt ids, then its ids as targets. */
static cllm_result cllm__rollout_seq(const cllm_local_output *o, cllm_train_seq *seq, cllm_err *err) {
    int n = o->n_prompt + o->n, t;
    int *ids = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    unsigned char *target = (unsigned char *)cllm__calloc((size_t)n + 1, 1);
    cllm_result rc;
    memset(seq, 0, sizeof *seq);
    if (!ids || !target) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else if (o->n_prompt < 1 || o->n < 1) rc = cllm__fail(err, CLLM_ERR_ARG, "a response needs a prompt and at least one token");
    else {
        for (t = 0; t < n; t++) { ids[t] = t < o->n_prompt ? o->prompt_ids[t] : o->ids[t - o->n_prompt]; target[t] = t >= o->n_prompt; }
        rc = cllm__seq_from(seq, ids, target, n, o->n_prompt, err);
    }
    CLLM_FREE(ids); CLLM_FREE(target);
    return rc;
}

/* A forward of sequences under m at temperature tau, dropout off (see the section header). */
static cllm_result cllm__rollout_forward(cllm_model *m, const cllm_train_seq *const *seqs, int n, float tau, cllm__seq_batch *sb, cllm_err *err) {
    int training = m->lora ? m->lora->training : 0;
    cllm_result rc = cllm__seq_batch_make(sb, seqs, n, err);
    if (rc != CLLM_OK) return rc;
    sb->batch.temperature = tau;
    if (m->lora) m->lora->training = 0;
    rc = cllm_forward(m, &sb->batch, NULL, err);
    if (m->lora) m->lora->training = training;
    return rc;
}

/* After a forward of seqs: response token t of row r is predicted at position P - 1 + t. */
static size_t cllm__resp_pos(const cllm_model *m, const cllm_train_seq *s, int r, int t) {
    return (size_t)r * (size_t)m->T + (size_t)(s->n_prompt - 1 + t);
}

/* The response log-probs of the last forward as (n, L): fill after each response. */
static void cllm__gather_logps(const cllm_model *m, const cllm_train_seq *const *seqs, int n, int L, double fill, double *out) {
    int r, t;
    for (r = 0; r < n; r++) for (t = 0; t < L; t++)
        out[(size_t)r * L + t] = t < seqs[r]->n - seqs[r]->n_prompt ? (double)m->acts.logp[cllm__resp_pos(m, seqs[r], r, t)] : fill;
}

/* The values of the last forward as (n, L): V at the position before token t, for t up to the
   response length (the slot after the last token reads the last token's state), else 0. */
static void cllm__gather_values(const cllm_model *m, const cllm_value_head *vh, const cllm_train_seq *const *seqs, int n, int L, double *out) {
    int r, t, C = m->config.hidden_size;
    for (r = 0; r < n; r++) for (t = 0; t < L; t++) {
        double *v = &out[(size_t)r * L + t];
        *v = 0;
        if (t <= seqs[r]->n - seqs[r]->n_prompt) cllm_value_head_forward(vh, m->acts.lnf + cllm__resp_pos(m, seqs[r], r, t) * C, 1, v);
    }
}

/* The reference's response log-probs: ref, else m with its adapters off (PEFT), at tau. */
static cllm_result cllm__rollout_ref(cllm_model *m, cllm_model *ref, const cllm_train_seq *const *seqs, int n, float tau, int L, double *out, cllm_err *err) {
    cllm__seq_batch sb;
    cllm_model *which = ref ? ref : m;
    int enabled = m->lora ? m->lora->enabled : 0;
    cllm_result rc;
    if (!ref && !(m->lora && m->lora->enabled)) return cllm__fail(err, CLLM_ERR_ARG, "this objective needs a reference: a frozen reference model, or LoRA adapters (the base model is the reference)");
    if (!ref) m->lora->enabled = 0;
    rc = cllm__rollout_forward(which, seqs, n, tau, &sb, err);
    if (!ref) m->lora->enabled = enabled;
    if (rc == CLLM_OK) cllm__gather_logps(which, seqs, n, L, 1.0, out);
    cllm__seq_batch_free(&sb);
    return rc;
}

/* Backward of sum over rows and response tokens of scale * (dlp * logp + dv * value), after the
   policy's forward of seqs (the last forward of m, cllm__rollout_forward: dropout off, so off
   here too, whatever the trainer's micro-step set). dv and vh may be NULL. */
static cllm_result cllm__rollout_backward(cllm_model *m, cllm_value_head *vh, const cllm_train_seq *const *seqs, int n, int L,
                                          const double *dlp, const double *dv, double scale, cllm_err *err) {
    size_t BT = (size_t)m->B * (size_t)m->T, C = (size_t)m->config.hidden_size;
    cllm_float *dlogp = (cllm_float *)cllm__calloc(BT, sizeof(cllm_float));
    cllm_float *dh = dv ? (cllm_float *)cllm__calloc(BT * C, sizeof(cllm_float)) : NULL;
    cllm_result rc;
    int r, t, training = 0;
    if (!dlogp || (dv && !dh)) { CLLM_FREE(dlogp); CLLM_FREE(dh); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    for (r = 0; r < n; r++) {
        int len = seqs[r]->n - seqs[r]->n_prompt;
        for (t = 0; t < L && t < len; t++) dlogp[cllm__resp_pos(m, seqs[r], r, t)] = (cllm_float)(scale * dlp[(size_t)r * L + t]);
        for (t = 0; dv && t < L && t <= len; t++) {
            size_t pos = cllm__resp_pos(m, seqs[r], r, t);
            double d = scale * dv[(size_t)r * L + t];
            if (d != 0) cllm_value_head_backward(vh, m->acts.lnf + pos * C, 1, &d, dh + pos * C);
        }
    }
    if (m->lora) { training = m->lora->training; m->lora->training = 0; }
    rc = cllm_backward(m, dlogp, dh, err);
    if (m->lora) m->lora->training = training;
    CLLM_FREE(dlogp); CLLM_FREE(dh);
    return rc;
}

/* The largest |sampler logprob - forward logprob| over the responses (the forward at the
   sampling temperature is the last one of m over seqs); a failure above tol. */
static cllm_result cllm__rollout_check(const cllm_rollout_config *c, const cllm_model *m, const cllm_local_output *const *outs,
                                       const cllm_train_seq *const *seqs, int n, double *max_diff, cllm_err *err) {
    int r, t;
    *max_diff = 0;
    if (c->logprob_tol < 0 || c->gen.sampler.top_k > 0 || c->gen.sampler.top_p < 1) return CLLM_OK;
    for (r = 0; r < n; r++) for (t = 0; t < outs[r]->n; t++) {
        double d = fabs((double)outs[r]->logprobs[t] - (double)m->acts.logp[cllm__resp_pos(m, seqs[r], r, t)]);
        if (!(d <= *max_diff)) *max_diff = d;
    }
    if (!(*max_diff <= c->logprob_tol))
        return cllm__fail(err, CLLM_ERR_NUMERIC, "the sampler's log-probs differ from a forward pass at the sampling temperature by %.3g (> logprob_tol %g): "
                          "the old log-probs would be wrong (set logprob_tol higher, or negative to skip the check)", *max_diff, c->logprob_tol);
    return CLLM_OK;
}

/* The rows of a rollout: a sequence and a pointer per kept response, freed together. */
typedef struct cllm__rows { cllm_train_seq *seqs; const cllm_train_seq **ptr; const cllm_local_output **out; int n; } cllm__rows;

static void cllm__rows_free(cllm__rows *r) {
    int i;
    for (i = 0; i < r->n; i++) cllm_train_seq_free(&r->seqs[i]);
    CLLM_FREE(r->seqs); CLLM_FREE(r->ptr); CLLM_FREE(r->out);
    memset(r, 0, sizeof *r);
}

/* rows = out[keep[i]] for i < n. */
static cllm_result cllm__rows_make(cllm__rows *rows, const cllm_local_output *out, const int *keep, int n, cllm_err *err) {
    cllm_result rc = CLLM_OK;
    int i;
    memset(rows, 0, sizeof *rows);
    rows->seqs = (cllm_train_seq *)cllm__calloc((size_t)n + 1, sizeof *rows->seqs);
    rows->ptr = (const cllm_train_seq **)cllm__calloc((size_t)n + 1, sizeof *rows->ptr);
    rows->out = (const cllm_local_output **)cllm__calloc((size_t)n + 1, sizeof *rows->out);
    if (!rows->seqs || !rows->ptr || !rows->out) { cllm__rows_free(rows); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        rc = cllm__rollout_seq(&out[keep[i]], &rows->seqs[i], err);
        rows->ptr[i] = &rows->seqs[i];
        rows->out[i] = &out[keep[i]];
        rows->n = i + 1;
    }
    if (rc != CLLM_OK) cllm__rows_free(rows);
    return rc;
}

/* ---- online DPO ---------------------------------------------------------------------------- */

typedef struct cllm__odpo_ctx {
    cllm_local_lm         *lm;
    cllm_model            *ref;
    const cllm_online_prompts *p;
    cllm_online_dpo_config cfg;      /* defaults applied */
    cllm_dpo_config        dpo;
} cllm__odpo_ctx;

static double cllm__online_units(void *ctx, const int *idx, int n) { (void)ctx; (void)idx; return n; }

/* A pair from two responses to one prompt, cut to max_length by the start of the prompt (the
   same cut for both, from the longer response). */
static cllm_result cllm__odpo_pair(cllm_dpo_pair *pair, const cllm_local_output *chosen, const cllm_local_output *rejected, int max_length, cllm_err *err) {
    cllm_result rc;
    int longer = chosen->n > rejected->n ? chosen->n : rejected->n, keep = -1;
    memset(pair, 0, sizeof *pair);
    pair->ref_chosen = pair->ref_rejected = NAN;
    if ((rc = cllm__rollout_seq(chosen, &pair->chosen, err)) != CLLM_OK) return rc;
    if ((rc = cllm__rollout_seq(rejected, &pair->rejected, err)) != CLLM_OK) { cllm_train_seq_free(&pair->chosen); return rc; }
    if (pair->chosen.n > max_length || pair->rejected.n > max_length) keep = max_length - longer < 1 ? 1 : max_length - longer;
    cllm_train_seq_truncate(&pair->chosen, max_length, keep);
    cllm_train_seq_truncate(&pair->rejected, max_length, keep);
    return CLLM_OK;
}

static cllm_result cllm__odpo_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm, cllm_train_stats *st, cllm_err *err) {
    cllm__odpo_ctx *c = (cllm__odpo_ctx *)ctx;
    cllm_local_output *out = (cllm_local_output *)cllm__calloc(2 * (size_t)n, sizeof *out);
    double *mr = (double *)cllm__calloc(2 * (size_t)n, sizeof(double));
    cllm_dpo_pair *pairs = (cllm_dpo_pair *)cllm__calloc((size_t)n, sizeof *pairs);
    const cllm_dpo_pair **pp = (const cllm_dpo_pair **)cllm__calloc((size_t)n, sizeof *pp);
    cllm_train_stats dst;
    double s_mr = 0, s_ch = 0, s_rj = 0, eos = 0;
    int failed = 0, k = 0, i, training = tr->lora ? tr->lora->training : 0;
    cllm_result rc;
    memset(&dst, 0, sizeof dst);
    if (!out || !mr || !pairs || !pp) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    /* two responses per prompt, both scored by MR */
    if ((rc = cllm__rollout_sample(c->lm, &c->cfg.rollout, c->p, idx, n, 2, tr->step, out, err)) != CLLM_OK) goto done;
    if ((rc = cllm__rollout_score(&c->cfg.rollout, c->lm, c->p, idx, n, 2, tr->step, out, mr, &failed, err)) != CLLM_OK) goto done;
    /* chosen = the higher MR; a tie: the first (CollabLLM's judge takes the argmax) */
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        int first = mr[2 * i] >= mr[2 * i + 1];
        eos += (out[2 * i].finish == CLLM_FINISH_EOS) + (out[2 * i + 1].finish == CLLM_FINISH_EOS);
        if (isnan(mr[2 * i]) || isnan(mr[2 * i + 1])) continue;
        rc = cllm__odpo_pair(&pairs[k], &out[2 * i + !first], &out[2 * i + first], c->cfg.max_length, err);
        if (rc != CLLM_OK) break;
        pp[k] = &pairs[k];
        k++;
        s_mr += mr[2 * i] + mr[2 * i + 1];
        s_ch += mr[2 * i + !first]; s_rj += mr[2 * i + first];
    }
    if (rc != CLLM_OK) goto done;
    if (k == 0) { rc = cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: MR failed for every response of a micro-batch (%d failures); nothing to train on", tr->step + 1, failed); goto done; }
    /* the DPO update, dropout off (TRL's disable_dropout) */
    if (tr->lora) tr->lora->training = 0;
    rc = cllm_dpo_micro_step(tr->model, c->ref, pp, k, &c->dpo, norm, &dst, err);
    if (tr->lora) tr->lora->training = training;
    if (rc != CLLM_OK) goto done;
    for (i = 0; i < dst.n; i++) cllm_train_stats_add(st, dst.name[i], dst.sum[i], dst.count[i]);
    st->tokens += dst.tokens;
    {   /* TRL's objective/ metrics from the sums of the pairs: kl = mean over responses of
           sum_t (logp - ref) = (rewards/chosen + rewards/rejected) / (2 beta) */
        double s_cr = cllm_train_stats_mean(&dst, "rewards/chosen") * k, s_rr = cllm_train_stats_mean(&dst, "rewards/rejected") * k;
        double s_pc = cllm_train_stats_mean(&dst, "logps/chosen") * k, s_pr = cllm_train_stats_mean(&dst, "logps/rejected") * k;
        cllm_train_stats_add(st, "objective/kl", (s_cr + s_rr) / (2 * c->dpo.beta), k);
        cllm_train_stats_add(st, "objective/non_score_reward", -(s_cr + s_rr) / 2, k);
        cllm_train_stats_add(st, "objective/entropy", -(s_pc + s_pr) / 2, k);
    }
    cllm_train_stats_add(st, "val/contain_eos_token", eos, 2 * n);
    cllm_train_stats_add(st, "beta", c->dpo.beta * k, k);
    cllm_train_stats_add(st, "reward", s_mr, 2 * k);
    cllm_train_stats_add(st, "mr/chosen", s_ch, k);
    cllm_train_stats_add(st, "mr/rejected", s_rj, k);
    cllm_train_stats_add(st, "mr/failed", failed, 1);
done:
    for (i = 0; pairs && i < k; i++) { cllm_train_seq_free(&pairs[i].chosen); cllm_train_seq_free(&pairs[i].rejected); }
    if (out) cllm_local_outputs_free(out, 2 * n);
    CLLM_FREE(out); CLLM_FREE(mr); CLLM_FREE(pairs); CLLM_FREE(pp);
    return rc;
}

CLLMDEF cllm_result cllm_train_online_dpo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref,
                                          const cllm_online_prompts *prompts, const cllm_online_dpo_config *cfg,
                                          const cllm_train_config *train, cllm_err *err) {
    cllm__odpo_ctx ctx;
    cllm_result rc;
    if (!cfg || !train) return cllm__fail(err, CLLM_ERR_ARG, "online DPO: needs a config and a training config");
    memset(&ctx, 0, sizeof ctx);
    ctx.lm = policy; ctx.ref = ref; ctx.p = prompts; ctx.cfg = *cfg;
    ctx.cfg.rollout = cllm__rollout_def(&cfg->rollout, 0.9f, 50, 64, cllm__def(train->seed, 42));   /* TRL's generation */
    ctx.cfg.beta = cllm__def(cfg->beta, 0.1);
    ctx.cfg.max_length = cllm__def(cfg->max_length, 512);
    if ((rc = cllm__rollout_check_config(&ctx.cfg.rollout, policy, prompts, err)) != CLLM_OK) return rc;
    if (ctx.cfg.loss_type != CLLM_DPO_SIGMOID && ctx.cfg.loss_type != CLLM_DPO_IPO) return cllm__fail(err, CLLM_ERR_ARG, "online DPO: loss_type must be sigmoid or IPO (as TRL's OnlineDPOTrainer)");
    if (ctx.cfg.max_length < 2) return cllm__fail(err, CLLM_ERR_ARG, "online DPO: max_length must be at least 2");
    if (!ref && !lora) return cllm__fail(err, CLLM_ERR_ARG, "online DPO needs a reference: a frozen copy of the initial policy, or LoRA adapters (the base model is the reference)");
    if (!(ctx.cfg.rpo_alpha >= 0)) return cllm__fail(err, CLLM_ERR_ARG, "online DPO: rpo_alpha must be >= 0");
    ctx.dpo.loss_type = ctx.cfg.loss_type; ctx.dpo.beta = ctx.cfg.beta; ctx.dpo.ipo_sum = 1; ctx.dpo.rpo_alpha = ctx.cfg.rpo_alpha;
    return cllm__train_task(&policy->model, lora, "online-dpo", prompts->n, 5e-6 /* paper Table 6 */, cllm__online_units, cllm__odpo_micro, &ctx, train, err);
}

/* ---- the value head ------------------------------------------------------------------------ */

CLLMDEF void cllm_value_head_free(cllm_value_head *vh) {
    if (!vh) return;
    CLLM_FREE(vh->w); CLLM_FREE(vh->grad); CLLM_FREE(vh->m); CLLM_FREE(vh->v);
    memset(vh, 0, sizeof *vh);
}

CLLMDEF cllm_result cllm_value_head_init(cllm_value_head *vh, int C, uint64_t seed, cllm_err *err) {
    cllm_rng rng;
    double bound;
    int i;
    memset(vh, 0, sizeof *vh);
    if (C < 1) return cllm__fail(err, CLLM_ERR_ARG, "value head: hidden size must be positive");
    vh->C = C;
    vh->w = (cllm_float *)cllm__calloc((size_t)C + 1, sizeof(cllm_float));
    vh->grad = (cllm_float *)cllm__calloc((size_t)C + 1, sizeof(cllm_float));
    vh->m = (cllm_float *)cllm__calloc((size_t)C + 1, sizeof(cllm_float));
    vh->v = (cllm_float *)cllm__calloc((size_t)C + 1, sizeof(cllm_float));
    if (!vh->w || !vh->grad || !vh->m || !vh->v) { cllm_value_head_free(vh); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    /* nn.Linear(C, 1): kaiming_uniform(a = sqrt 5) for the weight and the bias rule both give U(-1/sqrt C, 1/sqrt C) */
    cllm_rng_seed(&rng, seed ^ 0x56484541444ull);
    bound = 1.0 / sqrt((double)C);
    for (i = 0; i <= C; i++) vh->w[i] = (cllm_float)((2 * cllm_rng_uniform(&rng) - 1) * bound);
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF void cllm_value_head_forward(const cllm_value_head *vh, const cllm_float *h, int n, double *values) {
    int i, c;
    for (i = 0; i < n; i++) {
        double s = vh->w[vh->C];
        for (c = 0; c < vh->C; c++) s += (double)vh->w[c] * h[(size_t)i * vh->C + c];
        values[i] = s;
    }
}

CLLMDEF void cllm_value_head_backward(cllm_value_head *vh, const cllm_float *h, int n, const double *dvalues, cllm_float *dh) {
    int i, c;
    for (i = 0; i < n; i++) {
        for (c = 0; c < vh->C; c++) {
            vh->grad[c] += (cllm_float)(dvalues[i] * h[(size_t)i * vh->C + c]);
            if (dh) dh[(size_t)i * vh->C + c] += (cllm_float)(dvalues[i] * vh->w[c]);
        }
        vh->grad[vh->C] += (cllm_float)dvalues[i];
    }
}

/* Checkpoint entries: the head (TRL's names) and its AdamW moments ("m." / "v."). */
static int cllm__value_head_entries(cllm_value_head *vh, cllm_st_entry *e) {
    cllm_float *mem[3];
    const char *prefix[3] = { "", "m.", "v." };
    int k, n = 0;
    mem[0] = vh->w; mem[1] = vh->m; mem[2] = vh->v;
    memset(e, 0, 6 * sizeof *e);
    for (k = 0; k < 3; k++) {
        snprintf(e[n].name, sizeof e[n].name, "%sv_head.summary.weight", prefix[k]);
        e[n].dtype = CLLM_DT_F32; e[n].ndim = 2; e[n].shape[0] = 1; e[n].shape[1] = vh->C; e[n].data = mem[k];
        n++;
        snprintf(e[n].name, sizeof e[n].name, "%sv_head.summary.bias", prefix[k]);
        e[n].dtype = CLLM_DT_F32; e[n].ndim = 1; e[n].shape[0] = 1; e[n].data = mem[k] + vh->C;
        n++;
    }
    return n;
}

/* ---- PPO: the rollout arithmetic ------------------------------------------------------------- */

CLLMDEF void cllm_ppo_rollout_free(cllm_ppo_rollout *r) {
    if (!r) return;
    CLLM_FREE(r->response); CLLM_FREE(r->logprobs); CLLM_FREE(r->ref_logprobs); CLLM_FREE(r->values); CLLM_FREE(r->scores);
    CLLM_FREE(r->seq_end); CLLM_FREE(r->mask); CLLM_FREE(r->value_mask); CLLM_FREE(r->kl); CLLM_FREE(r->rewards);
    CLLM_FREE(r->advantages); CLLM_FREE(r->returns);
    memset(r, 0, sizeof *r);
}

CLLMDEF cllm_result cllm_ppo_rollout_alloc(cllm_ppo_rollout *r, int B, int L, cllm_err *err) {
    size_t n;
    memset(r, 0, sizeof *r);
    if (B < 1 || L < 1 || (size_t)B > SIZE_MAX / sizeof(double) / (size_t)L) return cllm__fail(err, CLLM_ERR_ARG, "PPO rollout: bad size %d x %d", B, L);
    n = (size_t)B * (size_t)L;
    r->B = B; r->L = L;
    r->response = (int *)cllm__calloc(n, sizeof(int));
    r->seq_end = (int *)cllm__calloc((size_t)B, sizeof(int));
    r->scores = (double *)cllm__calloc((size_t)B, sizeof(double));
    r->logprobs = (double *)cllm__calloc(n, sizeof(double)); r->ref_logprobs = (double *)cllm__calloc(n, sizeof(double));
    r->values = (double *)cllm__calloc(n, sizeof(double)); r->mask = (double *)cllm__calloc(n, sizeof(double));
    r->value_mask = (double *)cllm__calloc(n, sizeof(double)); r->kl = (double *)cllm__calloc(n, sizeof(double));
    r->rewards = (double *)cllm__calloc(n, sizeof(double)); r->advantages = (double *)cllm__calloc(n, sizeof(double));
    r->returns = (double *)cllm__calloc(n, sizeof(double));
    if (!r->response || !r->seq_end || !r->scores || !r->logprobs || !r->ref_logprobs || !r->values || !r->mask ||
        !r->value_mask || !r->kl || !r->rewards || !r->advantages || !r->returns) {
        cllm_ppo_rollout_free(r);
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for a %d x %d rollout", B, L);
    }
    return CLLM_OK;
}

/* Zero fields take TRL v0.19's defaults; negative ones mean 0 where the field says so. */
static cllm_ppo_config cllm__ppo_def(const cllm_ppo_config *in) {
    cllm_ppo_config c;
    if (in) c = *in; else memset(&c, 0, sizeof c);
    c.ppo_epochs = cllm__def(c.ppo_epochs, 4);
    c.mini_batches = cllm__def(c.mini_batches, 1);
    c.kl_coef = c.kl_coef < 0 ? 0 : cllm__def(c.kl_coef, 0.05);
    c.cliprange = cllm__def(c.cliprange, 0.2);
    c.cliprange_value = cllm__def(c.cliprange_value, 0.2);
    c.vf_coef = cllm__def(c.vf_coef, 0.1);
    c.gamma = c.gamma < 0 ? 0 : cllm__def(c.gamma, 1.0);
    c.lam = c.lam < 0 ? 0 : cllm__def(c.lam, 0.95);
    c.kl_horizon = cllm__def(c.kl_horizon, 10000.0);
    return c;
}

CLLMDEF void cllm_running_moments_init(cllm_running_moments *rm) { rm->mean = 0; rm->var = 1; rm->std = 1; rm->count = 1e-24; }

/* Merging a batch (mean m_b, population variance v_b, n values) into (mean, var, count):
     d = m_b - mean, N = count + n,
     var  = (var count + d^2 count n / N + v_b n) / N,   mean += d n / N,   std = sqrt(var N / (N - 1)). */
CLLMDEF void cllm_running_moments_update(cllm_running_moments *rm, const double *x, int n, double *batch_mean, double *batch_std) {
    double m = 0, v = 0, d, N;
    int i;
    if (n < 1) return;
    for (i = 0; i < n; i++) m += x[i];
    m /= n;
    for (i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    if (batch_mean) *batch_mean = m;
    if (batch_std) *batch_std = n > 1 ? sqrt(v / (n - 1)) : 0;
    v /= n;
    d = m - rm->mean;
    N = rm->count + n;
    rm->var = (rm->var * rm->count + d * d * rm->count * n / N + v * n) / N;
    rm->mean += d * n / N;
    rm->std = sqrt(rm->var * N / (N - 1));
    rm->count = N;
}

CLLMDEF double cllm_adaptive_kl_update(double coef, double kl, double target, double horizon, double n_steps) {
    double e = kl / target - 1;
    e = e < -0.2 ? -0.2 : e > 0.2 ? 0.2 : e;
    return coef * (1 + e * n_steps / horizon);
}

CLLMDEF cllm_result cllm_ppo_prepare(const cllm_ppo_config *cfg, cllm_ppo_rollout *r, cllm_err *err) {
    cllm_ppo_config c = cllm__ppo_def(cfg);
    size_t n = (size_t)r->B * (size_t)r->L, i;
    cllm_result rc;
    int b, t;
    /* sequence ends and TRL's masks: pm = t > end (policy), pm1 = t > end + 1 (critic) */
    for (b = 0; b < r->B; b++) {
        r->seq_end[b] = cllm_ppo_sequence_end(r->response + (size_t)b * r->L, r->L, r->pad_id, -1);
        for (t = 0; t < r->L; t++) {
            i = (size_t)b * r->L + t;
            r->mask[i] = t <= r->seq_end[b];
            r->value_mask[i] = t <= r->seq_end[b] + 1;
            if (!r->mask[i]) r->logprobs[i] = r->ref_logprobs[i] = 1.0;    /* INVALID_LOGPROB */
            if (!r->value_mask[i]) r->values[i] = 0;
        }
    }
    if ((rc = cllm_ppo_rewards(r->B, r->L, r->logprobs, r->ref_logprobs, r->scores, r->seq_end, c.kl_coef, c.kl_estimator,
                               c.reward_placement, r->rewards, r->kl, err)) != CLLM_OK) return rc;
    if (c.whiten_rewards) {
        if ((rc = cllm_masked_whiten(r->rewards, r->value_mask, n, 1, 0, err)) != CLLM_OK) return rc;
        for (i = 0; i < n; i++) if (!r->value_mask[i]) r->rewards[i] = 0;
    }
    if ((rc = cllm_gae(r->B, r->L, r->rewards, r->values, r->mask, c.gamma, c.lam, CLLM_GAE_TRL, 0, r->advantages, r->returns, err)) != CLLM_OK) return rc;
    if ((rc = cllm_masked_whiten(r->advantages, r->mask, n, 0, c.biased_whiten, err)) != CLLM_OK) return rc;
    for (i = 0; i < n; i++) if (!r->mask[i]) r->advantages[i] = 0;
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_ppo_rollout_loss(const cllm_ppo_config *cfg, const cllm_ppo_rollout *r, const int *rows, int n,
                                          double *logprobs, double *values, struct cllm_ppo_loss_out *out, cllm_err *err) {
    cllm_ppo_config c = cllm__ppo_def(cfg);
    size_t N = (size_t)n * (size_t)r->L, i;
    double *buf = (double *)cllm__calloc(N * 6 + 1, sizeof(double));
    double *old_lp, *old_v, *adv, *ret, *mask, *vmask;
    cllm_result rc;
    int k, t;
    if (!buf) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    old_lp = buf; old_v = buf + N; adv = buf + 2 * N; ret = buf + 3 * N; mask = buf + 4 * N; vmask = buf + 5 * N;
    for (k = 0; k < n; k++) {
        if (rows[k] < 0 || rows[k] >= r->B) { CLLM_FREE(buf); return cllm__fail(err, CLLM_ERR_ARG, "PPO rollout: row %d is not in the rollout", rows[k]); }
        for (t = 0; t < r->L; t++) {
            size_t src = (size_t)rows[k] * r->L + t;
            i = (size_t)k * r->L + t;
            old_lp[i] = r->logprobs[src]; old_v[i] = r->values[src]; adv[i] = r->advantages[src]; ret[i] = r->returns[src];
            mask[i] = r->mask[src]; vmask[i] = r->value_mask[src];
            if (!mask[i]) logprobs[i] = 1.0;            /* TRL: new_logprobs[pm] = INVALID_LOGPROB */
            if (!vmask[i]) values[i] = 0;               /*      vpred[pm1] = 0 */
        }
    }
    rc = cllm_ppo_loss(n, r->L, logprobs, old_lp, adv, values, old_v, ret, mask, vmask, c.cliprange, c.cliprange_value, c.vf_coef, out, err);
    CLLM_FREE(buf);
    return rc;
}

/* ---- PPO: the trainer's step ----------------------------------------------------------------- */

typedef struct cllm__ppo_ctx {
    cllm_local_lm             *lm;
    cllm_model                *ref;
    const cllm_online_prompts *p;
    cllm_ppo_config            cfg;         /* defaults applied */
    cllm_value_head           *vh;
    int                        batch_size, grad_accum;   /* TRL's per-device batch and accumulation */
    double                     kl_coef;     /* the current one (adaptive with kl_target)          */
    cllm_running_moments       scores;      /* of every score so far (score_scaling)              */
} cllm__ppo_ctx;

/* PPO's own state in a checkpoint: the value head with its AdamW moments, and ppo_state.json
   (the current KL coefficient and the running moments of the scores, %.17g: exact doubles). */
static cllm_result cllm__value_head_save(void *ctx, const char *dir, cllm_err *err) {
    cllm__ppo_ctx *c = (cllm__ppo_ctx *)ctx;
    cllm_st_entry e[6];
    char path[4200], json[512];
    cllm_result rc;
    snprintf(path, sizeof path, "%s/value_head.safetensors", dir);
    if ((rc = cllm_st_save(path, e, cllm__value_head_entries(c->vh, e), err)) != CLLM_OK) return rc;
    snprintf(path, sizeof path, "%s/ppo_state.json", dir);
    snprintf(json, sizeof json, "{\"kl_coef\": %.17g, \"score_mean\": %.17g, \"score_var\": %.17g, \"score_std\": %.17g, \"score_count\": %.17g}\n",
             c->kl_coef, c->scores.mean, c->scores.var, c->scores.std, c->scores.count);
    return cllm_write_file_atomic(path, json, strlen(json), err);
}

static cllm_result cllm__value_head_load(void *ctx, const char *dir, cllm_err *err) {
    cllm__ppo_ctx *c = (cllm__ppo_ctx *)ctx;
    cllm_st_entry e[6];
    char path[4200], *text = NULL;
    size_t len;
    cJSON *o;
    double *dst[5];
    const char *keys[5] = { "kl_coef", "score_mean", "score_var", "score_std", "score_count" };
    cllm_result rc;
    int k;
    snprintf(path, sizeof path, "%s/value_head.safetensors", dir);
    if ((rc = cllm__st_read_entries(path, e, cllm__value_head_entries(c->vh, e), err)) != CLLM_OK) return rc;
    snprintf(path, sizeof path, "%s/ppo_state.json", dir);
    if (!cllm__file_exists(path)) {         /* a checkpoint from before the state was saved */
        if (c->cfg.kl_target > 0 || c->cfg.score_scaling) return cllm__fail(err, CLLM_ERR_FORMAT, "%s is missing: this checkpoint cannot resume adaptive KL or score scaling", path);
        return CLLM_OK;
    }
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    o = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    dst[0] = &c->kl_coef; dst[1] = &c->scores.mean; dst[2] = &c->scores.var; dst[3] = &c->scores.std; dst[4] = &c->scores.count;
    for (k = 0; k < 5; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        if (!cJSON_IsNumber(x)) { cJSON_Delete(o); return cllm__fail(err, CLLM_ERR_FORMAT, "%s: \"%s\" must be a number", path, keys[k]); }
        *dst[k] = x->valuedouble;
    }
    cJSON_Delete(o);
    return CLLM_OK;
}

/* The response rows of a rollout in TRL's layout; with pad_is_eos every token that can end a
   response is padding too (CollabLLM sets pad_token = eos_token). */
static void cllm__ppo_fill_response(cllm_ppo_rollout *r, const cllm__rows *rows, const cllm_local_lm *lm, int pad_is_eos) {
    int b, t, s;
    r->pad_id = -1;                                  /* not a token id: padding is only padding */
    for (b = 0; b < r->B; b++) for (t = 0; t < r->L; t++) {
        int id = t < rows->out[b]->n ? rows->out[b]->ids[t] : -1;
        for (s = 0; pad_is_eos && id >= 0 && s < lm->n_stop_ids; s++) if (id == lm->stop_ids[s]) id = -1;
        r->response[(size_t)b * r->L + t] = id;
    }
}

/* TRL's rollout statistics (see cllm_train_ppo). */
static void cllm__ppo_rollout_stats(const cllm__ppo_ctx *c, const cllm_ppo_rollout *r, const cllm__rows *rows, const double *mr, cllm_train_stats *st) {
    double kl = 0, ent = 0, sc = 0, raw = 0, eos = 0;
    int b, t;
    for (b = 0; b < r->B; b++) {
        for (t = 0; t < r->L; t++) { kl += r->kl[(size_t)b * r->L + t]; ent -= r->logprobs[(size_t)b * r->L + t]; }
        sc += r->scores[b]; raw += mr[b];
        eos += rows->out[b]->finish == CLLM_FINISH_EOS;
    }
    cllm_train_stats_add(st, "objective/kl", kl, r->B);
    cllm_train_stats_add(st, "objective/entropy", ent, r->B);      /* TRL: pads count as -1.0 each */
    cllm_train_stats_add(st, "objective/non_score_reward", -c->kl_coef * kl, r->B);
    cllm_train_stats_add(st, "objective/rlhf_reward", sc - c->kl_coef * kl, r->B);
    cllm_train_stats_add(st, "objective/kl_coef", c->kl_coef, 1);
    cllm_train_stats_add(st, "objective/scores", sc, r->B);
    cllm_train_stats_add(st, "val/num_eos_tokens", eos, 1);
    cllm_train_stats_add(st, "reward", raw, r->B);
}

/* The rollout of one step: sample, score, then the old log-probs, values and reference
   log-probs from forward passes, and cllm_ppo_prepare. rows/r/mr are filled for the caller. */
static cllm_result cllm__ppo_rollout(cllm__ppo_ctx *c, cllm_trainer *tr, const int *idx, int n, cllm_local_output *out, cllm__rows *rows,
                                     cllm_ppo_rollout *r, double **mr_out, cllm_train_stats *st, cllm_err *err) {
    const cllm_rollout_config *rc_ = &c->cfg.rollout;
    double *mr = (double *)cllm__calloc((size_t)n, sizeof(double)), diff = 0;
    int *keep = (int *)cllm__calloc((size_t)n, sizeof(int)), B = 0, L = 1, failed = 0, b;
    float tau = rc_->gen.sampler.temperature;
    cllm__seq_batch sb;
    cllm_result rc;
    memset(&sb, 0, sizeof sb);
    *mr_out = mr;
    if (!mr || !keep) { CLLM_FREE(keep); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    if ((rc = cllm__rollout_sample(c->lm, rc_, c->p, idx, n, 1, tr->step, out, err)) != CLLM_OK) goto done;
    if ((rc = cllm__rollout_score(rc_, c->lm, c->p, idx, n, 1, tr->step, out, mr, &failed, err)) != CLLM_OK) goto done;
    for (b = 0; b < n; b++) if (!isnan(mr[b])) { mr[B] = mr[b]; keep[B++] = b; if (out[b].n > L) L = out[b].n; }
    cllm_train_stats_add(st, "mr/failed", failed, 1);
    if (B == 0) { rc = cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: MR failed for every response of the rollout; nothing to train on", tr->step + 1); goto done; }
    if ((rc = cllm__rows_make(rows, out, keep, B, err)) != CLLM_OK) goto done;
    if ((rc = cllm_ppo_rollout_alloc(r, B, L, err)) != CLLM_OK) goto done;
    cllm__ppo_fill_response(r, rows, c->lm, c->cfg.pad_is_eos);
    for (b = 0; b < B; b++)
        r->scores[b] = mr[b] - (c->cfg.missing_eos_penalty && rows->out[b]->finish != CLLM_FINISH_EOS ? c->cfg.missing_eos_penalty : 0);
    if (c->cfg.score_scaling) {              /* legacy TRL: by the running std of all scores so far */
        double scale, shift;
        cllm_running_moments_update(&c->scores, r->scores, B, NULL, NULL);
        scale = c->scores.std + FLT_EPSILON;      /* torch.finfo(float32).eps, as TRL adds it */
        shift = c->cfg.score_scaling == CLLM_SCORE_NORM ? c->scores.mean : 0;
        for (b = 0; b < B; b++) r->scores[b] = (r->scores[b] - shift) / scale;
        cllm_train_stats_add(st, "objective/score_running_mean", c->scores.mean, 1);
        cllm_train_stats_add(st, "objective/score_running_std", c->scores.std, 1);
    }
    /* old log-probs and values: one forward of the policy at the sampling temperature; the
       sampler's own log-probs must agree with it */
    if ((rc = cllm__rollout_forward(tr->model, rows->ptr, B, tau, &sb, err)) != CLLM_OK) goto done;
    st->tokens += (double)cllm__batch_tokens(&sb);
    if ((rc = cllm__rollout_check(rc_, tr->model, rows->out, rows->ptr, B, &diff, err)) != CLLM_OK) goto done;
    cllm_train_stats_add(st, "rollout/logprob_diff", diff, 1);
    cllm__gather_logps(tr->model, rows->ptr, B, L, 1.0, r->logprobs);
    cllm__gather_values(tr->model, c->vh, rows->ptr, B, L, r->values);
    if ((rc = cllm__rollout_ref(tr->model, c->ref, rows->ptr, B, tau, L, r->ref_logprobs, err)) != CLLM_OK) goto done;
    {
        cllm_ppo_config now = c->cfg;
        now.kl_coef = c->kl_coef > 0 ? c->kl_coef : -1;      /* the config's "negative = 0" */
        if ((rc = cllm_ppo_prepare(&now, r, err)) != CLLM_OK) goto done;
        cllm__ppo_rollout_stats(c, r, rows, mr, st);
        if (c->cfg.kl_target > 0)                            /* legacy TRL: from the step's objective/kl */
            c->kl_coef = cllm_adaptive_kl_update(c->kl_coef, cllm_train_stats_mean(st, "objective/kl"), c->cfg.kl_target, c->cfg.kl_horizon, n);
    }
done:
    cllm__seq_batch_free(&sb);
    CLLM_FREE(keep);
    return rc;
}

/* One micro-batch of the optimisation: forward the rows at the sampling temperature, the PPO
   loss on them, backward of loss / n_micro (accelerate's division by the accumulation steps). */
static cllm_result cllm__ppo_micro(cllm__ppo_ctx *c, cllm_trainer *tr, const cllm__rows *rows, const cllm_ppo_rollout *r,
                                   const int *sel, int n, int n_micro, cllm_train_stats *st, cllm_err *err) {
    size_t N = (size_t)n * (size_t)r->L;
    const cllm_train_seq **seqs = (const cllm_train_seq **)cllm__calloc((size_t)n, sizeof *seqs);
    double *buf = (double *)cllm__calloc(4 * N + 1, sizeof(double)), ratio = 0, ent = 0, ent_n = 0;
    double *lp, *val, *dlp, *dv;
    cllm_ppo_loss_out lo;
    cllm__seq_batch sb;
    cllm_result rc;
    size_t i;
    int k, t;
    memset(&sb, 0, sizeof sb);
    if (!seqs || !buf) { CLLM_FREE(seqs); CLLM_FREE(buf); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    lp = buf; val = buf + N; dlp = buf + 2 * N; dv = buf + 3 * N;
    for (k = 0; k < n; k++) seqs[k] = rows->ptr[sel[k]];
    if ((rc = cllm__rollout_forward(tr->model, seqs, n, c->cfg.rollout.gen.sampler.temperature, &sb, err)) != CLLM_OK) goto done;
    cllm__gather_logps(tr->model, seqs, n, r->L, 1.0, lp);
    cllm__gather_values(tr->model, c->vh, seqs, n, r->L, val);
    for (k = 0; k < n; k++)                          /* the entropy of the policy at each trained token */
        for (t = 0; t <= r->seq_end[sel[k]]; t++) { ent += tr->model->acts.entropy[cllm__resp_pos(tr->model, seqs[k], k, t)]; ent_n++; }
    memset(&lo, 0, sizeof lo);
    lo.d_logprobs = dlp; lo.d_values = dv;
    if ((rc = cllm_ppo_rollout_loss(&c->cfg, r, sel, n, lp, val, &lo, err)) != CLLM_OK) goto done;
    for (k = 0; k < n; k++) for (t = 0; t < r->L; t++) {
        i = (size_t)k * r->L + t;
        ratio += exp(lp[i] - r->logprobs[(size_t)sel[k] * r->L + t]);
    }
    if ((rc = cllm__rollout_backward(tr->model, c->vh, seqs, n, r->L, dlp, dv, 1.0 / n_micro, err)) != CLLM_OK) goto done;
    cllm_train_stats_add(st, "loss", lo.loss, 1);
    cllm_train_stats_add(st, "loss/policy_avg", lo.pg_loss, 1);
    cllm_train_stats_add(st, "loss/value_avg", lo.vf_loss, 1);
    cllm_train_stats_add(st, "policy/approxkl_avg", lo.approxkl, 1);
    cllm_train_stats_add(st, "policy/clipfrac_avg", lo.clipfrac, 1);
    cllm_train_stats_add(st, "val/clipfrac_avg", lo.vf_clipfrac, 1);
    cllm_train_stats_add(st, "policy/entropy_avg", ent_n > 0 ? ent / ent_n : 0, 1);
    cllm_train_stats_add(st, "val/ratio", ratio / (double)N, 1);
    st->tokens += (double)cllm__batch_tokens(&sb);
done:
    cllm__seq_batch_free(&sb);
    CLLM_FREE(seqs); CLLM_FREE(buf);
    return rc;
}

/* One AdamW update of the policy and the value head from the accumulated gradients, clipped
   together when max_grad_norm is set. */
static cllm_result cllm__ppo_update(cllm__ppo_ctx *c, cllm_trainer *tr, double loss, cllm_err *err) {
    cllm_float *g[2];
    size_t sz[2];
    const cllm_adamw_config *a = &tr->cfg.adam;
    double lr;
    int t, C = c->vh->C, n = 0;
    cllm_result rc;
    if (!isfinite(loss)) return cllm__numeric_fail(tr, "loss", loss, err);
    if (tr->lora) { g[n] = tr->lora->grads; sz[n++] = tr->lora->num_params; }
    else if (tr->model->grads_memory) { g[n] = tr->model->grads_memory; sz[n++] = tr->model->num_params; }
    g[n] = c->vh->grad; sz[n++] = (size_t)C + 1;
    tr->grad_norm = cllm_clip_grad_norm_arrays(g, sz, n, tr->cfg.max_grad_norm > 0 ? tr->cfg.max_grad_norm : 0);
    if (!isfinite(tr->grad_norm)) return cllm__numeric_fail(tr, "gradient norm", tr->grad_norm, err);
    if ((rc = cllm_trainer_update(tr, &lr, err)) != CLLM_OK) return rc;
    t = tr->lora ? tr->lora->adam_t : tr->model->adam_t;     /* one optimizer over both: the same step count */
    cllm_adamw_step(c->vh->w, c->vh->grad, c->vh->m, c->vh->v, (size_t)C, t, lr, a->beta1, a->beta2, a->eps, a->weight_decay);
    cllm_adamw_step(c->vh->w + C, c->vh->grad + C, c->vh->m + C, c->vh->v + C, 1, t, lr, a->beta1, a->beta2, a->eps, 0.0);
    return CLLM_OK;
}

/* A step: the rollout, then ppo_epochs passes over it in mini_batches AdamW updates, each over
   grad_accum micro-batches of batch_size rows; the order of each pass is a permutation drawn
   from (seed, step, pass). */
static cllm_result cllm__ppo_step(void *ctx, cllm_trainer *tr, const int *idx, int n, cllm_train_stats *st, cllm_err *err) {
    cllm__ppo_ctx *c = (cllm__ppo_ctx *)ctx;
    cllm_local_output *out = (cllm_local_output *)cllm__calloc((size_t)n, sizeof *out);
    int *perm = NULL, e, mb, i;
    double *mr = NULL;
    cllm__rows rows;
    cllm_ppo_rollout r;
    cllm_result rc;
    memset(&rows, 0, sizeof rows); memset(&r, 0, sizeof r);
    if (!out) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm__ppo_rollout(c, tr, idx, n, out, &rows, &r, &mr, st, err)) != CLLM_OK) goto done;
    if (!(perm = (int *)cllm__calloc((size_t)r.B, sizeof(int)))) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    for (e = 0; e < c->cfg.ppo_epochs && rc == CLLM_OK; e++) {
        cllm_rng rng;
        cllm_rng_seed(&rng, cllm__online_call(tr->step, 0, 3 + e) ^ tr->cfg.seed);
        for (i = 0; i < r.B; i++) perm[i] = i;
        for (i = r.B - 1; i > 0; i--) { int j = (int)(cllm_rng_uniform(&rng) * (i + 1)), t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
        for (mb = 0; mb < c->cfg.mini_batches && rc == CLLM_OK; mb++) {
            /* mini-batch mb: rows [b0, b1) of the permutation (near-equal parts when B is short) */
            int b0 = (int)((long)r.B * mb / c->cfg.mini_batches), b1 = (int)((long)r.B * (mb + 1) / c->cfg.mini_batches), m0, n_micro;
            cllm_train_stats mst;
            if (b1 <= b0) continue;
            n_micro = (b1 - b0 + c->batch_size - 1) / c->batch_size;
            memset(&mst, 0, sizeof mst);
            if ((rc = cllm_trainer_zero_grad(tr, err)) != CLLM_OK) break;
            memset(c->vh->grad, 0, ((size_t)c->vh->C + 1) * sizeof(cllm_float));
            for (m0 = b0; m0 < b1 && rc == CLLM_OK; m0 += c->batch_size)
                rc = cllm__ppo_micro(c, tr, &rows, &r, perm + m0, b1 - m0 < c->batch_size ? b1 - m0 : c->batch_size, n_micro, &mst, err);
            if (rc == CLLM_OK) rc = cllm__ppo_update(c, tr, cllm_train_stats_mean(&mst, "loss"), err);
            for (i = 0; rc == CLLM_OK && i < mst.n; i++) cllm_train_stats_add(st, mst.name[i], mst.sum[i], mst.count[i]);
            st->tokens += mst.tokens;
        }
    }
done:
    cllm__rows_free(&rows);
    cllm_ppo_rollout_free(&r);
    cllm_local_outputs_free(out, n);
    CLLM_FREE(out); CLLM_FREE(perm); CLLM_FREE(mr);
    return rc;
}

CLLMDEF cllm_result cllm_train_ppo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref, cllm_value_head *vh,
                                   const cllm_online_prompts *prompts, const cllm_ppo_config *cfg,
                                   const cllm_train_config *train, cllm_err *err) {
    cllm__ppo_ctx ctx;
    cllm_train_task task;
    cllm_train_config tc;
    cllm_value_head own;
    cllm_result rc;
    if (!cfg || !train) return cllm__fail(err, CLLM_ERR_ARG, "PPO: needs a config and a training config");
    memset(&ctx, 0, sizeof ctx); memset(&own, 0, sizeof own);
    ctx.lm = policy; ctx.ref = ref; ctx.p = prompts;
    ctx.cfg = cllm__ppo_def(cfg);
    ctx.cfg.rollout = cllm__rollout_def(&cfg->rollout, 0.7f, 0, 53, cllm__def(train->seed, 42));    /* TRL's response_length 53 */
    if ((rc = cllm__rollout_check_config(&ctx.cfg.rollout, policy, prompts, err)) != CLLM_OK) return rc;
    if (ctx.cfg.ppo_epochs < 1 || ctx.cfg.mini_batches < 1) return cllm__fail(err, CLLM_ERR_ARG, "PPO: ppo_epochs and mini_batches must be positive");
    if (ctx.cfg.kl_estimator != CLLM_KL_K1 && ctx.cfg.kl_estimator != CLLM_KL_K3) return cllm__fail(err, CLLM_ERR_ARG, "PPO: kl_estimator must be k1 or k3 (TRL's choices)");
    if (ctx.cfg.score_scaling < CLLM_SCORE_RAW || ctx.cfg.score_scaling > CLLM_SCORE_NORM) return cllm__fail(err, CLLM_ERR_ARG, "PPO: score_scaling must be CLLM_SCORE_RAW, _SCALE or _NORM");
    if (ctx.cfg.kl_target < 0 || ctx.cfg.kl_horizon <= 0) return cllm__fail(err, CLLM_ERR_ARG, "PPO: kl_target must be >= 0 and kl_horizon > 0");
    if (!ref && !lora) return cllm__fail(err, CLLM_ERR_ARG, "PPO needs a reference for its KL penalty: a frozen copy of the initial policy, or LoRA adapters (the base model)");
    if (!vh) {
        if ((rc = cllm_value_head_init(&own, policy->model.config.hidden_size, cllm__def(train->seed, 42), err)) != CLLM_OK) return rc;
        vh = &own;
    } else if (vh->C != policy->model.config.hidden_size || !vh->w || !vh->grad || !vh->m || !vh->v) {
        return cllm__fail(err, CLLM_ERR_ARG, "PPO: the value head does not match this model (its hidden size differs)");
    }
    ctx.vh = vh;
    ctx.kl_coef = ctx.cfg.kl_coef;
    cllm_running_moments_init(&ctx.scores);
    /* a step is one rollout of batch_size x grad_accum x mini_batches prompts; TRL does not clip */
    tc = *train;
    ctx.batch_size = cllm__def(tc.batch_size, 8);
    ctx.grad_accum = cllm__def(tc.grad_accum, 1);
    tc.batch_size = ctx.batch_size;
    tc.grad_accum = ctx.grad_accum * ctx.cfg.mini_batches;
    if (tc.max_grad_norm == 0) tc.max_grad_norm = -1;
    memset(&task, 0, sizeof task);
    task.name = "ppo"; task.n_examples = prompts->n; task.default_lr = 2e-6;           /* paper Table 6 */
    task.step = cllm__ppo_step; task.save_extra = cllm__value_head_save; task.load_extra = cllm__value_head_load; task.ctx = &ctx;
    rc = cllm__train_run(&policy->model, lora, &task, &tc, err);
    cllm_value_head_free(&own);
    return rc;
}

/* ---- GRPO ------------------------------------------------------------------------------------ */

CLLMDEF cllm_result cllm_grpo_loss(int B, int T, const double *logprobs, const double *old_logprobs, const double *ref_logprobs,
                                   const double *advantages, const double *mask, double beta, double eps_low, double eps_high,
                                   int loss_type, int max_completion_length, cllm_grpo_loss_out *out, cllm_err *err) {
    double total = 0, msum = 0, kl = 0, clipped = 0;
    int b, t;
    if (B < 1 || T < 1 || !logprobs || !old_logprobs || !advantages || !mask || !out) return cllm__fail(err, CLLM_ERR_ARG, "GRPO loss: needs B, T >= 1, logprobs, old_logprobs, advantages, mask and out");
    if (beta != 0 && !ref_logprobs) return cllm__fail(err, CLLM_ERR_ARG, "GRPO loss: beta %g needs the reference log-probs", beta);
    if (loss_type < CLLM_GRPO_BNPO || loss_type > CLLM_GRPO_DR_GRPO) return cllm__fail(err, CLLM_ERR_ARG, "GRPO loss: unknown loss_type %d", loss_type);
    if (loss_type == CLLM_GRPO_DR_GRPO && max_completion_length < 1) return cllm__fail(err, CLLM_ERR_ARG, "GRPO loss: dr_grpo needs max_completion_length");
    for (b = 0; b < B; b++) for (t = 0; t < T; t++) msum += mask[(size_t)b * T + t];
    for (b = 0; b < B; b++) {
        double len = 0, A = advantages[b];
        for (t = 0; t < T; t++) len += mask[(size_t)b * T + t];
        for (t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            double r = exp(logprobs[i] - old_logprobs[i]), rc = r < 1 - eps_low ? 1 - eps_low : r > 1 + eps_high ? 1 + eps_high : r;
            double l1 = -r * A, l2 = -rc * A, l, d, w;     /* -min(rA, rc A) = max(l1, l2) */
            double dl1 = -r * A, dl2 = r >= 1 - eps_low && r <= 1 + eps_high ? -r * A : 0;
            double k3 = 0, dk3 = 0;
            l = l1 > l2 ? l1 : l2;
            d = l1 > l2 ? dl1 : l2 > l1 ? dl2 : 0.5 * (dl1 + dl2);   /* a tie splits, as torch.minimum */
            if (ref_logprobs) {
                double x = ref_logprobs[i] - logprobs[i];
                k3 = exp(x) - x - 1;
                dk3 = 1 - exp(x);                         /* d k3 / d logp */
                if (beta != 0) { l += beta * k3; d += beta * dk3; }
            }
            /* the loss's weight on this token, by aggregation */
            w = loss_type == CLLM_GRPO_BNPO ? 1 / (msum > 1 ? msum : 1)
              : loss_type == CLLM_GRPO_GRPO ? 1 / ((len > 1 ? len : 1) * B)
              : 1.0 / ((double)B * max_completion_length);
            total += l * mask[i] * w;
            if (out->d_logprobs) out->d_logprobs[i] = mask[i] != 0 ? d * mask[i] * w : 0;
            kl += k3 * mask[i];
            clipped += (l2 > l1) * mask[i];
        }
    }
    out->loss = total;
    out->kl = msum > 0 ? kl / msum : 0;
    out->clip_ratio = msum > 0 ? clipped / msum : 0;
    cllm__ok(err);
    return CLLM_OK;
}

typedef struct cllm__grpo_ctx {
    cllm_local_lm             *lm;
    cllm_model                *ref;
    const cllm_online_prompts *p;
    cllm_grpo_config           cfg;         /* defaults applied */
} cllm__grpo_ctx;

static cllm_result cllm__grpo_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm, cllm_train_stats *st, cllm_err *err) {
    cllm__grpo_ctx *c = (cllm__grpo_ctx *)ctx;
    const cllm_rollout_config *rcfg = &c->cfg.rollout;
    int G = c->cfg.num_generations, N = n * G, B = 0, L = 1, failed = 0, i, s;
    cllm_local_output *out = (cllm_local_output *)cllm__calloc((size_t)N, sizeof *out);
    double *mr = (double *)cllm__calloc((size_t)N, sizeof(double)), *adv = (double *)cllm__calloc((size_t)N, sizeof(double));
    int *keep = (int *)cllm__calloc((size_t)N, sizeof(int));
    double *buf = NULL, *lp, *old, *ref = NULL, *mask, *dlp, diff = 0, len_sum = 0, clipped = 0, std_sum = 0, zero_std = 0, kept_groups = 0;
    float tau = rcfg->gen.sampler.temperature;
    cllm_grpo_loss_out lo;
    cllm__seq_batch sb;
    cllm__rows rows;
    cllm_result rc;
    memset(&sb, 0, sizeof sb); memset(&rows, 0, sizeof rows);
    if (!out || !mr || !adv || !keep) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    if ((rc = cllm__rollout_sample(c->lm, rcfg, c->p, idx, n, G, tr->step, out, err)) != CLLM_OK) goto done;
    if ((rc = cllm__rollout_score(rcfg, c->lm, c->p, idx, n, G, tr->step, out, mr, &failed, err)) != CLLM_OK) goto done;
    /* group-normalised advantages; a group with a failed score is left out */
    for (i = 0; i < n; i++) {
        double mean = 0, var = 0;
        int ok = 1;
        for (s = 0; s < G; s++) {
            const cllm_local_output *o = &out[i * G + s];
            len_sum += o->n; clipped += o->finish != CLLM_FINISH_EOS;
            ok &= !isnan(mr[i * G + s]);
        }
        if (!ok) continue;
        if ((rc = cllm_grpo_advantages(G, mr + i * G, G, CLLM_GROUP_GRPO, c->cfg.scale_rewards > 0, 1e-4, adv + B, err)) != CLLM_OK) goto done;
        for (s = 0; s < G; s++) mean += mr[i * G + s] / G;
        for (s = 0; s < G; s++) var += (mr[i * G + s] - mean) * (mr[i * G + s] - mean) / (G > 1 ? G - 1 : 1);
        std_sum += sqrt(var); zero_std += sqrt(var) < 1e-8; kept_groups++;
        for (s = 0; s < G; s++) { keep[B++] = i * G + s; if (out[i * G + s].n > L) L = out[i * G + s].n; }
    }
    cllm_train_stats_add(st, "mr/failed", failed, 1);
    cllm_train_stats_add(st, "completions/mean_length", len_sum, N);
    cllm_train_stats_add(st, "completions/clipped_ratio", clipped, N);
    if (B == 0) { rc = cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: MR failed in every group of a micro-batch; nothing to train on", tr->step + 1); goto done; }
    if ((rc = cllm__rows_make(&rows, out, keep, B, err)) != CLLM_OK) goto done;
    if (!(buf = (double *)cllm__calloc((size_t)B * L * 5 + 1, sizeof(double)))) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    lp = buf; old = lp + (size_t)B * L; mask = old + (size_t)B * L; dlp = mask + (size_t)B * L;
    if (c->cfg.beta != 0) {
        ref = dlp + (size_t)B * L;
        if ((rc = cllm__rollout_ref(tr->model, c->ref, rows.ptr, B, tau, L, ref, err)) != CLLM_OK) goto done;
    }
    /* the policy's forward at the sampling temperature (the last one: it feeds backward) */
    if ((rc = cllm__rollout_forward(tr->model, rows.ptr, B, tau, &sb, err)) != CLLM_OK) goto done;
    if ((rc = cllm__rollout_check(rcfg, tr->model, rows.out, rows.ptr, B, &diff, err)) != CLLM_OK) goto done;
    cllm__gather_logps(tr->model, rows.ptr, B, L, 0.0, lp);
    for (i = 0; i < B; i++) for (s = 0; s < L; s++) {
        size_t k = (size_t)i * L + s;
        mask[k] = s < rows.out[i]->n;
        old[k] = lp[k];                               /* num_iterations = 1: old = current, detached */
    }
    memset(&lo, 0, sizeof lo);
    lo.d_logprobs = dlp;
    if ((rc = cllm_grpo_loss(B, L, lp, old, ref, adv, mask, c->cfg.beta, c->cfg.epsilon, c->cfg.epsilon_high, c->cfg.loss_type,
                             rcfg->gen.max_new_tokens, &lo, err)) != CLLM_OK) goto done;
    /* the micro-batch's aggregated loss, weighted by its prompts in the step */
    if ((rc = cllm__rollout_backward(tr->model, NULL, rows.ptr, B, L, dlp, NULL, (double)n / norm, err)) != CLLM_OK) goto done;
    cllm_train_stats_add(st, "loss", lo.loss * n, n);
    for (i = 0; i < B; i++) cllm_train_stats_add(st, "reward", mr[keep[i]], 1);
    cllm_train_stats_add(st, "reward_std", std_sum, kept_groups);
    cllm_train_stats_add(st, "frac_reward_zero_std", zero_std, kept_groups);
    if (c->cfg.beta != 0) cllm_train_stats_add(st, "kl", lo.kl, 1);
    cllm_train_stats_add(st, "clip_ratio", lo.clip_ratio, 1);
    cllm_train_stats_add(st, "rollout/logprob_diff", diff, 1);
    st->tokens += (double)cllm__batch_tokens(&sb);
done:
    cllm__seq_batch_free(&sb);
    cllm__rows_free(&rows);
    if (out) cllm_local_outputs_free(out, N);
    CLLM_FREE(out); CLLM_FREE(mr); CLLM_FREE(adv); CLLM_FREE(keep); CLLM_FREE(buf);
    return rc;
}

CLLMDEF cllm_result cllm_train_grpo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref,
                                    const cllm_online_prompts *prompts, const cllm_grpo_config *cfg,
                                    const cllm_train_config *train, cllm_err *err) {
    cllm__grpo_ctx ctx;
    cllm_result rc;
    if (!cfg || !train) return cllm__fail(err, CLLM_ERR_ARG, "GRPO: needs a config and a training config");
    memset(&ctx, 0, sizeof ctx);
    ctx.lm = policy; ctx.ref = ref; ctx.p = prompts; ctx.cfg = *cfg;
    ctx.cfg.rollout = cllm__rollout_def(&cfg->rollout, 1.0f, 0, 256, cllm__def(train->seed, 42));  /* TRL's max_completion_length 256 */
    ctx.cfg.num_generations = cllm__def(cfg->num_generations, 8);
    ctx.cfg.epsilon = cllm__def(cfg->epsilon, 0.2);
    ctx.cfg.epsilon_high = cllm__def(cfg->epsilon_high, ctx.cfg.epsilon);
    ctx.cfg.scale_rewards = cfg->scale_rewards < 0 ? 0 : 1;
    if ((rc = cllm__rollout_check_config(&ctx.cfg.rollout, policy, prompts, err)) != CLLM_OK) return rc;
    if (ctx.cfg.num_generations < 2 || ctx.cfg.num_generations > 65536) return cllm__fail(err, CLLM_ERR_ARG, "GRPO: num_generations must be in [2, 65536] (a group of one has no baseline)");
    if (ctx.cfg.loss_type < CLLM_GRPO_BNPO || ctx.cfg.loss_type > CLLM_GRPO_DR_GRPO) return cllm__fail(err, CLLM_ERR_ARG, "GRPO: unknown loss_type %d", ctx.cfg.loss_type);
    if (ctx.cfg.beta < 0) return cllm__fail(err, CLLM_ERR_ARG, "GRPO: beta must be >= 0");
    if (ctx.cfg.beta != 0 && !ref && !lora) return cllm__fail(err, CLLM_ERR_ARG, "GRPO with beta > 0 needs a reference: a frozen copy of the initial policy, or LoRA adapters (the base model)");
    return cllm__train_task(&policy->model, lora, "grpo", prompts->n, 1e-6 /* TRL's GRPOConfig */, cllm__online_units, cllm__grpo_micro, &ctx, train, err);
}


/* ############################################################################################ */
/* PART II. INFRASTRUCTURE                                                                      */
/* ############################################################################################ */

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

/* Opens a file for reading; NULL after a message naming it. A directory is refused by name (on
   POSIX fopen accepts one, and its "size" is nonsense). kind: what was expected, "a JSONL file". */
static FILE *cllm__open_read(const char *path, const char *kind, cllm_err *err) {
    FILE *f;
#if !defined(_WIN32)
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        cllm__fail(err, CLLM_ERR_IO, "%s is a directory; expected %s", path, kind);
        return NULL;
    }
#endif
    f = fopen(path, "rb");
    if (!f) cllm__fail(err, CLLM_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    return f;
}

CLLMDEF cllm_result cllm_read_file(const char *path, char **out, size_t *len, cllm_err *err) {
    FILE *f;
    long size;
    char *buf;
    *out = NULL;
    if (len) *len = 0;
    f = cllm__open_read(path, "a file", err);
    if (!f) return CLLM_ERR_IO;
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
    st->file = cllm__open_read(path, "a .safetensors file", err);
    if (!st->file) { rc = CLLM_ERR_IO; goto done; }
    if (!st->path) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
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

/* The size of a file in bytes, or -1 if it cannot be opened. */
static long long cllm__file_bytes(const char *path) {
    FILE *f = fopen(path, "rb");
    long n = -1;
    if (!f) return -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    fclose(f);
    return n;
}

/* The weight files of a checkpoint directory (paths owned, stb_ds array): model.safetensors,
   else the distinct shards of model.safetensors.index.json in order of appearance. */
static cllm_result cllm__weight_files(const char *dir, char ***files, cllm_err *err) {
    char path[4096];
    char *text = NULL;
    size_t len;
    cJSON *index;
    const cJSON *wm, *e;
    cllm_result rc = CLLM_OK;
    *files = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);   /* HF's order: the single file first */
    if (cllm__file_exists(path)) {
        char *copy = cllm__strdup(path);
        if (!copy) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        stbds_arrput(*files, copy);
        return CLLM_OK;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!cllm__file_exists(path)) return cllm__fail(err, CLLM_ERR_IO, "%s: no model.safetensors and no model.safetensors.index.json", dir);
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    index = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
    if (!cJSON_IsObject(wm)) { cJSON_Delete(index); return cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing \"weight_map\" object", path); }
    cJSON_ArrayForEach(e, wm) {
        char shard[4096];
        int dup = 0, k;
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || strstr(e->valuestring, "..")) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: weight_map entry '%s' must be a plain file name", path, e->string); break; }
        snprintf(shard, sizeof shard, "%s/%s", dir, e->valuestring);
        for (k = 0; k < (int)stbds_arrlen(*files); k++) if (strcmp((*files)[k], shard) == 0) dup = 1;
        if (!dup) {
            char *copy = cllm__strdup(shard);
            if (!copy) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); break; }
            stbds_arrput(*files, copy);
        }
    }
    cJSON_Delete(index);
    return rc;
}

static void cllm__weight_files_free(char **files) {
    int k;
    for (k = 0; k < (int)stbds_arrlen(files); k++) CLLM_FREE(files[k]);
    stbds_arrfree(files);
}

CLLMDEF cllm_result cllm_model_load(cllm_model *m, const char *dir, cllm_err *err) {
    char path[4096];
    char *text = NULL, **files = NULL;
    size_t len, sizes[CLLM_NUM_PARAM_TENSORS], n_params = 0;
    long long bytes = 0, b;
    cJSON *root = NULL;
    cllm_config cfg;
    unsigned char *seen = NULL;
    cllm_result rc;
    int i, l, k;

    memset(m, 0, sizeof *m);
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = cllm_read_file(path, &text, &len, err);
    if (rc != CLLM_OK) return rc;
    root = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text); text = NULL;
    if (!root) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: not valid JSON", path);
    rc = cllm__config_from_json(&cfg, root, err);
    if (rc == CLLM_OK) rc = cllm__weight_files(dir, &files, err);
    if (rc != CLLM_OK) { cJSON_Delete(root); cllm__weight_files_free(files); return rc; }
    /* Untrusted sizes: the weights must hold at least 2 bytes (F16/BF16) per parameter that
       config.json describes, checked before the parameters are allocated. */
    cllm__fill_in_param_sizes(sizes, &cfg);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) n_params += sizes[i];
    for (k = 0; k < (int)stbds_arrlen(files); k++) bytes += (b = cllm__file_bytes(files[k])) > 0 ? b : 0;
    if ((double)bytes < 2.0 * (double)n_params) {
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: config.json describes %zu parameters (%.3g GB as F32) but the weight files hold only %lld bytes: config and weights do not match",
                        dir, n_params, n_params * 4.0 / 1e9, bytes);
        cJSON_Delete(root); cllm__weight_files_free(files);
        return rc;
    }
    rc = cllm__model_setup(m, &cfg, err);
    if (rc != CLLM_OK) { cJSON_Delete(root); cllm__weight_files_free(files); cllm_model_free(m); return rc; }
    m->hf_config = root;
    seen = (unsigned char *)cllm__calloc((size_t)CLLM_NUM_PARAM_TENSORS * (size_t)cfg.n_layers, 1);
    if (!seen) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    for (k = 0; k < (int)stbds_arrlen(files) && rc == CLLM_OK; k++) rc = cllm__load_shard(m, files[k], seen, err);
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
    CLLM_FREE(seen);
    cllm__weight_files_free(files);
    if (rc != CLLM_OK) cllm_model_free(m);
    else cllm__ok(err);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* Token batches from JSONL                                                                     */
/* -------------------------------------------------------------------------------------------- */

/* Reads one line into *buf (grown as needed, NUL-terminated, newline removed). Returns the
   length, -1 at end of file, CLLM__LINE_TOO_LONG for a line of CLLM_MAX_LINE_BYTES or more (the
   buffer never grows past that, whatever the file holds) or CLLM__LINE_NOMEM. A reader that
   sees len < -1 reports it with cllm__line_fail. */
#define CLLM__LINE_TOO_LONG (-2)
#define CLLM__LINE_NOMEM    (-3)
static long cllm__read_line(FILE *f, char **buf, size_t *cap) {
    size_t n = 0;
    int ch;
    if (!*buf) { *cap = 256; *buf = (char *)CLLM_MALLOC(*cap); if (!*buf) return CLLM__LINE_NOMEM; }
    while ((ch = fgetc(f)) != EOF && ch != '\n') {
        if (n + 1 >= *cap) {
            char *nb;
            if (*cap >= (size_t)CLLM_MAX_LINE_BYTES) return CLLM__LINE_TOO_LONG;
            nb = (char *)CLLM_REALLOC(*buf, *cap * 2);
            if (!nb) return CLLM__LINE_NOMEM;
            *buf = nb; *cap *= 2;
        }
        (*buf)[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) return -1;
    if (n && (*buf)[n - 1] == '\r') n--;
    (*buf)[n] = 0;
    return (long)n;
}

static size_t cllm__utf8_check(const char *s, size_t n);

/* One line of a JSONL file parsed; NULL after a message at path:lineno: text that is not UTF-8
   (with the byte of the line where it stops being UTF-8), or not JSON. */
static cJSON *cllm__jsonl_parse(const char *line, size_t len, const char *path, int lineno, cllm_err *err) {
    size_t bad = cllm__utf8_check(line, len);
    cJSON *value;
    if (bad < len) {
        cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: not valid UTF-8 at byte %zu of the line", path, lineno, bad + 1);
        return NULL;
    }
    value = cJSON_ParseWithLength(line, len);
    if (!value) cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: not valid JSON", path, lineno);
    return value;
}

/* The error for a cllm__read_line result below -1 at path:lineno. */
static cllm_result cllm__line_fail(cllm_err *err, const char *path, int lineno, long len) {
    char at[32] = "";
    if (lineno > 0) snprintf(at, sizeof at, ":%d", lineno);
    if (len == CLLM__LINE_NOMEM) return cllm__fail(err, CLLM_ERR_NOMEM, "%s%s: out of memory reading a line", path, at);
    return cllm__fail(err, CLLM_ERR_LIMIT, "%s%s: a line longer than %ld MB (corrupt file? the limit is CLLM_MAX_LINE_BYTES)", path, at, (long)(CLLM_MAX_LINE_BYTES >> 20));
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
    FILE *f = cllm__open_read(path, "a JSONL file", err);
    char *line = NULL;
    size_t cap = 0;
    int **ids = NULL, **labels = NULL, *lens = NULL, B = 0, T = 0, lineno = 0, b, t;
    int *in = NULL, *lab = NULL, *mask = NULL;
    long len;
    cllm_result rc = CLLM_OK;
    memset(batch, 0, sizeof *batch);
    if (!f) return CLLM_ERR_IO;
    while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *row, *jl;
        int *x = NULL, *y = NULL, n, ny;
        lineno++;
        if (len == 0) continue;
        if (!(row = cllm__jsonl_parse(line, (size_t)len, path, lineno, err))) { rc = CLLM_ERR_FORMAT; break; }
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
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && B == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no rows", path);
    if (rc == CLLM_OK && (double)B * T > 1e8) rc = cllm__fail(err, CLLM_ERR_LIMIT, "%s: %d rows padded to %d tokens is too large for one batch (at most 1e8 tokens)", path, B, T);
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

    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "saving the model: the model is not loaded");
    if (dtype != CLLM_DT_F32 && dtype != CLLM_DT_BF16 && dtype != CLLM_DT_F16) return cllm__fail(err, CLLM_ERR_ARG, "saving the model: dtype must be F32, BF16 or F16");
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

/* The pipeline follows Hugging Face tokenizers (tokenizer/mod.rs, added_vocabulary.rs):
     1. added tokens written in the text are cut out first (leftmost-longest; tokens with
        normalized:false match the raw text, the others match the normalized text);
     2. the normalizer (NFC or none) runs on the remaining pieces;
     3. the pre-tokenizer splits them (Split with the Llama-3 / Qwen2 regex, Digits, ByteLevel with
        the GPT-2 regex; the regexes are hand-written scanners, no regex engine);
     4. byte-level BPE turns each piece into ids (rank-ordered merges);
     5. the post_processor adds special tokens (TemplateProcessing) when asked.
   Decoding maps ids back to bytes (ByteLevel decoder) and decodes UTF-8 lossily. */

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* A growable byte buffer; `oom` records a failed allocation so callers check once at the end. */
typedef struct cllm__buf { char *p; size_t n, cap; int oom; } cllm__buf;

static int cllm__buf_reserve(cllm__buf *b, size_t extra) {
    size_t want;
    char *q;
    if (b->oom) return 0;
    if (extra > SIZE_MAX / 2 - b->n) { b->oom = 1; return 0; }
    want = b->n + extra + 1;
    if (want <= b->cap) return 1;
    if (want < 2 * b->cap) want = 2 * b->cap;
    q = (char *)CLLM_REALLOC(b->p, want);
    if (!q) { b->oom = 1; return 0; }
    b->p = q; b->cap = want;
    b->p[b->n] = 0;                              /* always NUL-terminated once allocated */
    return 1;
}

static void cllm__buf_add(cllm__buf *b, const void *src, size_t n) {
    if (!cllm__buf_reserve(b, n)) return;
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void cllm__buf_str(cllm__buf *b, const char *s) { cllm__buf_add(b, s, strlen(s)); }

/* Decodes the character at s[0..n): returns its byte length (1-4) and sets *cp, or returns 0
   when the bytes are not valid UTF-8 (overlong forms, surrogates and values above U+10FFFF are
   invalid, as in Rust's str). */
static int cllm__utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    uint32_t v, min;
    int len, i;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1Fu; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0Fu; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07u; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

static int cllm__utf8_put(uint32_t cp, unsigned char *o) {
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12)); o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18)); o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Offset of the first invalid UTF-8 byte in s[0..n), or n if it is all valid. */
static size_t cllm__utf8_check(const char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        int l = cllm__utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (!l) return i;
        i += (size_t)l;
    }
    return n;
}

/* Appends b[0..n) to out, replacing each maximal invalid subsequence by U+FFFD (the Unicode
   "substitution of maximal subparts" that Rust's String::from_utf8_lossy uses): a lead byte
   followed by fewer valid continuation bytes than it announces becomes one U+FFFD, and the byte
   that broke the sequence is examined again on its own. With final = 0 an unfinished but so far
   valid character at the end is left unconsumed. Returns the number of bytes consumed; adds the
   number of U+FFFD it wrote for invalid input to *replaced (when not NULL). Python's
   bytes.decode("utf-8", "replace") makes the same replacements. */
static size_t cllm__utf8_lossy(const unsigned char *b, size_t n, int final, cllm__buf *out, size_t *replaced) {
    static const char fffd[3] = { (char)0xEF, (char)0xBF, (char)0xBD };
    size_t i = 0, k;
    while (i < n) {
        unsigned char c = b[i], lo = 0x80, hi = 0xBF;
        size_t need;
        if (c < 0x80) { cllm__buf_add(out, b + i, 1); i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else {
            cllm__buf_add(out, fffd, 3);
            if (replaced) (*replaced)++;
            i++;
            continue;
        }
        for (k = 1; k <= need; k++) {          /* the second byte has a narrower range for E0 ED F0 F4 */
            unsigned char x;
            if (i + k >= n) {                   /* truncated at the end of the input */
                if (!final) return i;
                cllm__buf_add(out, fffd, 3);
                if (replaced) (*replaced)++;
                return n;
            }
            x = b[i + k];
            if (x < (k == 1 ? lo : 0x80) || x > (k == 1 ? hi : 0xBF)) break;
        }
        if (k <= need) {
            cllm__buf_add(out, fffd, 3);
            if (replaced) (*replaced)++;
            i += k;
            continue;
        }
        cllm__buf_add(out, b + i, need + 1);
        i += need + 1;
    }
    return i;
}

/* The longest prefix of the valid UTF-8 text s[0..n) that has at most max bytes and ends on a
   character boundary: every cut of text goes through here, so no cut splits a character. */
static size_t cllm__utf8_prefix(const char *s, size_t n, size_t max) {
    if (n <= max) return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    return max;
}
/* The arguments of a "%.*s" that prints at most max bytes of s, cut on a character boundary. */
#define CLLM__CUT(s, max) (int)cllm__utf8_prefix((s), strlen(s), (max)), (s)

/* Unicode classes, as cllm__uni_class() returns them (tables in Part IV) */
#define CLLM__U_LETTER 1   /* \p{L}: General_Category Lu Ll Lt Lm Lo          */
#define CLLM__U_NUMBER 2   /* \p{N}: Nd Nl No (also Rust's char::is_numeric) */
#define CLLM__U_SPACE  4   /* \s: White_Space (Oniguruma's \s for UTF-8)      */

/* ---- NFC normalization (UAX #15: canonical decomposition, canonical ordering, composition) -- */

/* One code point being normalized, with the original byte range it came from. */
/* A character during NFC: code point, combining class, position in the decomposition, and its
   alignment change as Hugging Face counts it (0: takes the place of one original character; +1:
   inserted by a decomposition; -N: also stands for N characters after). Original byte ranges
   are kept per original character (cllm__nfc) and assigned from the changes at the end. */
typedef struct cllm__nchar { uint32_t cp; unsigned ccc; size_t seq; long change; } cllm__nchar;

#define CLLM__HANGUL_S 0xAC00
#define CLLM__HANGUL_L 0x1100
#define CLLM__HANGUL_V 0x1161
#define CLLM__HANGUL_T 0x11A7
#define CLLM__HANGUL_NV 21
#define CLLM__HANGUL_NT 28
#define CLLM__HANGUL_NS 11172

static const uint32_t *cllm__decomp_find(uint32_t cp) {
    size_t lo = 0, hi;
    const uint32_t *table = cllm__uni_decomp_entries(&hi);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t c = table[3 * mid] & 0x7FFFFFFFu;
        if (c == cp) return &table[3 * mid];
        if (c < cp) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

/* Appends the full canonical decomposition of cp (recursive mappings, Hangul by arithmetic). */
static void cllm__nfd_push(uint32_t cp, cllm__nchar **out) {
    const uint32_t *d;
    if (cp >= CLLM__HANGUL_S && cp < CLLM__HANGUL_S + CLLM__HANGUL_NS) {
        uint32_t s = cp - CLLM__HANGUL_S, t = s % CLLM__HANGUL_NT;
        cllm__nfd_push(CLLM__HANGUL_L + s / (CLLM__HANGUL_NV * CLLM__HANGUL_NT), out);
        cllm__nfd_push(CLLM__HANGUL_V + (s % (CLLM__HANGUL_NV * CLLM__HANGUL_NT)) / CLLM__HANGUL_NT, out);
        if (t) cllm__nfd_push(CLLM__HANGUL_T + t, out);
        return;
    }
    d = cp >= 0xC0 ? cllm__decomp_find(cp) : NULL;
    if (d) {
        cllm__nfd_push(d[1], out);
        if (d[2]) cllm__nfd_push(d[2], out);
        return;
    }
    {
        cllm__nchar c;
        c.cp = cp; c.ccc = cllm__uni_ccc(cp); c.seq = (size_t)stbds_arrlen(*out); c.change = 1;
        stbds_arrput(*out, c);
    }
}

/* Canonical ordering sorts each run of non-starters by combining class, keeping equal classes in
   their order: sorting by (class, position) with qsort stays O(n log n) on long runs. */
static int cllm__nchar_cmp(const void *a, const void *b) {
    const cllm__nchar *x = (const cllm__nchar *)a, *y = (const cllm__nchar *)b;
    if (x->ccc != y->ccc) return x->ccc < y->ccc ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The primary composite of (a, b), or 0. comp is the sorted (a << 21 | b, composite) table built
   at load time from the decompositions that are not excluded from composition. */
static uint32_t cllm__compose(const uint64_t *comp, size_t n, uint32_t a, uint32_t b) {
    uint64_t key = (uint64_t)a << 21 | b;
    size_t lo = 0, hi = n;
    if (a >= CLLM__HANGUL_L && a < CLLM__HANGUL_L + 19 && b >= CLLM__HANGUL_V && b < CLLM__HANGUL_V + CLLM__HANGUL_NV)
        return CLLM__HANGUL_S + ((a - CLLM__HANGUL_L) * CLLM__HANGUL_NV + (b - CLLM__HANGUL_V)) * CLLM__HANGUL_NT;
    if (a >= CLLM__HANGUL_S && a < CLLM__HANGUL_S + CLLM__HANGUL_NS && (a - CLLM__HANGUL_S) % CLLM__HANGUL_NT == 0 &&
        b > CLLM__HANGUL_T && b < CLLM__HANGUL_T + CLLM__HANGUL_NT)
        return a + (b - CLLM__HANGUL_T);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint64_t k = comp[mid] >> 21;
        if (k == key) return (uint32_t)(comp[mid] & 0x1FFFFF);
        if (k < key) lo = mid + 1; else hi = mid;
    }
    return 0;
}

/* Normalized text with, for each of its bytes, the original byte range it came from. */
typedef struct cllm__ntext { cllm__buf b; size_t *os, *oe; /* stb_ds arrays, one per byte of b */ } cllm__ntext;

static void cllm__ntext_add(cllm__ntext *t, const void *bytes, size_t n, size_t os, size_t oe) {
    size_t i;
    cllm__buf_add(&t->b, bytes, n);
    for (i = 0; i < n; i++) { stbds_arrput(t->os, os); stbds_arrput(t->oe, oe); }
}

/* Appends NFC(s[0..n)) to t; base is the offset of s in the caller's original text. */
static void cllm__nfc(const uint64_t *comp, size_t ncomp, const char *s, size_t n, size_t base, cllm__ntext *t) {
    cllm__nchar *d = NULL;
    size_t *cs = NULL;                           /* original characters: start, end, start, end, ... */
    size_t i = 0, j, k, m;
    for (i = 0; i < n && (unsigned char)s[i] < 0x80; i++) {}
    if (i == n) {                                    /* ASCII is already NFC */
        for (i = 0; i < n; i++) cllm__ntext_add(t, s + i, 1, base + i, base + i + 1);
        return;
    }
    /* 1. full canonical decomposition */
    for (i = 0; i < n;) {
        uint32_t cp;
        int l = cllm__utf8_next((const unsigned char *)s + i, n - i, &cp);
        size_t first = (size_t)stbds_arrlen(d);
        cllm__nfd_push(cp, &d);
        d[first].change = 0;                     /* the first piece replaces the character */
        stbds_arrput(cs, base + i); stbds_arrput(cs, base + i + (size_t)l);
        i += (size_t)l;
    }
    m = (size_t)stbds_arrlen(d);
    /* 2. canonical ordering of each run of non-starters */
    for (i = 0; i < m; i = j) {
        for (j = i; j < m && d[j].ccc; j++) {}
        if (j - i > 1) qsort(d + i, j - i, sizeof *d, cllm__nchar_cmp);
        if (j == i) j++;
    }
    /* 3. canonical composition: a character combines with the last starter unless a character
       between them blocks it (one of class 0, or of a class >= its own). last = class of the
       previous kept character; it is 0 exactly when that character is the starter itself. */
    k = 0;
    if (m) {
        long st = d[0].ccc ? -1 : 0;                 /* index of the last starter, -1 if none yet */
        unsigned last = d[0].ccc;
        for (i = 1, k = 1; i < m; i++) {
            unsigned c = d[i].ccc;
            if (st >= 0 && (last < c || last == 0)) {
                uint32_t comp_cp = cllm__compose(comp, ncomp, d[st].cp, d[i].cp);
                if (comp_cp) { d[st].cp = comp_cp; d[st].change += d[i].change - 1; continue; }
            }
            if (c == 0) st = (long)k;
            last = c;
            d[k++] = d[i];
        }
    }
    /* 4. offsets, aligned as Hugging Face's tokenizers align them (the changes above, applied in
       output order): a character with change <= 0 takes the range of the next original
       character and skips -change more; an inserted one (+1) shares the range of the last
       original character passed. Offsets thus never run backwards, even where marks were
       reordered (a composite keeps only its first character's range, as in HF). */
    for (i = 0, j = 0; i < k; i++) {
        unsigned char o[4];
        int l = cllm__utf8_put(d[i].cp, o);
        size_t os, oe;
        if (d[i].change > 0) { os = j ? cs[2 * j - 2] : base; oe = j ? cs[2 * j - 1] : base; }
        else { os = cs[2 * j]; oe = cs[2 * j + 1]; j += (size_t)(1 - d[i].change); }
        cllm__ntext_add(t, o, (size_t)l, os, oe);
    }
    stbds_arrfree(d); stbds_arrfree(cs);
}

/* ---- Hash maps: byte strings -> id, and (id, id) pairs -> merge ----------------------------- */

/* Open addressing over entries stored elsewhere: slot holds entry index + 1 (0 = empty). */
typedef struct cllm__smap { uint32_t *slot; size_t nslot; } cllm__smap;

static uint64_t cllm__hash_bytes(const char *s, size_t n) {     /* FNV-1a, 64 bit */
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

/* Byte strings live in one pool; an id's string is pool[off .. off+len). */
typedef struct cllm__str { uint32_t off, len; } cllm__str;
#define CLLM__NO_STR 0xFFFFFFFFu

static int cllm__smap_init(cllm__smap *m, size_t n) {
    m->nslot = 16;
    while (m->nslot < 2 * n + 16) m->nslot *= 2;
    m->slot = (uint32_t *)cllm__calloc(m->nslot, sizeof(uint32_t));
    return m->slot != NULL;
}

/* Looks up key; entries[i] are (pool offset, length) pairs of entry i. Returns the entry index or -1. */
static long cllm__smap_get(const cllm__smap *m, const char *pool, const cllm__str *entries, const char *key, size_t n) {
    size_t mask = m->nslot - 1, i;
    if (!m->slot) return -1;
    for (i = (size_t)cllm__hash_bytes(key, n) & mask; m->slot[i]; i = (i + 1) & mask) {
        const cllm__str *e = &entries[m->slot[i] - 1];
        if (e->len == n && memcmp(pool + e->off, key, n) == 0) return (long)m->slot[i] - 1;
    }
    return -1;
}

static void cllm__smap_put(cllm__smap *m, const char *pool, const cllm__str *entries, uint32_t index) {
    size_t mask = m->nslot - 1, i;
    const cllm__str *e = &entries[index];
    for (i = (size_t)cllm__hash_bytes(pool + e->off, e->len) & mask; m->slot[i]; i = (i + 1) & mask) {}
    m->slot[i] = index + 1;
}

/* Merge table: key = left id << 32 | right id; rank = position in the merges list. */
typedef struct cllm__merge { uint64_t key; int rank, id; } cllm__merge;
#define CLLM__NO_KEY 0xFFFFFFFFFFFFFFFFull

static uint64_t cllm__hash_u64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

static const cllm__merge *cllm__merge_get(const cllm__merge *t, size_t nslot, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = nslot - 1, i;
    if (!t) return NULL;
    for (i = (size_t)cllm__hash_u64(key) & mask; t[i].key != CLLM__NO_KEY; i = (i + 1) & mask)
        if (t[i].key == key) return &t[i];
    return NULL;
}

/* ---- The tokenizer's private state ----------------------------------------------------------- */

enum { CLLM__PT_SPLIT_LLAMA3 = 1, CLLM__PT_SPLIT_QWEN2, CLLM__PT_DIGITS, CLLM__PT_BYTELEVEL };
typedef struct cllm__pretok { int kind, individual_digits, add_prefix_space, use_regex; } cllm__pretok;
#define CLLM__MAX_PRETOK 16

typedef struct cllm__added {
    int id;
    cllm__str content;            /* as matched: the normalized content for normalized tokens */
    unsigned char special, normalized, lstrip, rstrip, first;
} cllm__added;

struct cllm__tok {
    cllm__buf     pool;           /* every string below points into pool.p                      */
    int           n_ids;
    cllm__str    *tok_str;        /* (n_ids) the token as written in tokenizer.json             */
    cllm__str    *tok_bytes;      /* (n_ids) the bytes it decodes to                            */
    unsigned char *special;       /* (n_ids) 1 for added tokens marked special                  */
    cllm__smap    by_str;         /* token string -> id (vocab and added tokens; entries tok_str) */
    cllm__smap    by_bytes;       /* raw bytes -> id for vocab tokens made of byte-level chars   */
    int           byte_id[256];   /* id of the single-byte token of each byte, -1 if none        */
    cllm__merge  *merges;         /* open-addressing table of nmerge_slots                      */
    size_t        nmerge_slots;
    int           ignore_merges, unk_id, fuse_unk;
    cllm__added  *added;          /* stb_ds array, bucketed by first byte, longest first         */
    int           bucket[257];    /* added tokens starting with byte c: added[bucket[c]..bucket[c+1]) */
    int           any_normalized_added;
    int           nfc;            /* normalizer: NFC (else none)                                 */
    uint64_t     *comp;           /* NFC composition table (a << 21 | b) << 21 | composite, sorted */
    size_t        ncomp;
    cllm__pretok  pretok[CLLM__MAX_PRETOK];
    int           npretok;
    int          *post_before, *post_after;   /* stb_ds arrays: ids TemplateProcessing puts around A */
    int           has_template;
    const char   *chat_default_system;   /* ChatML: system prompt used when the first message is not one */
    int           chat_gen_always;       /* Llama-3 variant that always appends the assistant header */
};

/* ---- The byte-level alphabet (GPT-2's bytes_to_unicode) -------------------------------------- */
/* Printable bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF stand for themselves; the other 68 bytes map, in
   ascending order, to U+0100, U+0101, ... (space -> U+0120 'Ġ', newline -> U+010A 'Ċ'). */

/* Inverse: the byte a byte-level character stands for, or -1 if cp is not in the alphabet. */
static int cllm__bl_byte(uint32_t cp) {
    int b, n = 0;
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp < 0x100 || cp >= 0x100 + 68) return -1;
    for (b = 0; b < 256; b++)
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
            if (0x100u + (uint32_t)n == cp) return b;
            n++;
        }
    return -1;
}

/* The bytes a token string stands for: each character through the inverse alphabet; if any
   character is outside it, the token's own UTF-8 (what the ByteLevel decoder does). Appends to
   pool and returns where; *clean says whether every character was in the alphabet. */
static cllm__str cllm__token_bytes(cllm__buf *pool, const char *s, size_t n, int *clean) {
    cllm__str r;
    size_t i;
    r.off = (uint32_t)pool->n;
    *clean = 1;
    for (i = 0; i < n;) {
        uint32_t cp;
        int l = cllm__utf8_next((const unsigned char *)s + i, n - i, &cp), b;
        if (!l || (b = cllm__bl_byte(cp)) < 0) { *clean = 0; break; }
        { unsigned char c = (unsigned char)b; cllm__buf_add(pool, &c, 1); }
        i += (size_t)l;
    }
    if (!*clean) { pool->n = r.off; cllm__buf_add(pool, s, n); }
    r.len = (uint32_t)(pool->n - r.off);
    return r;
}

/* ---- Loading tokenizer.json ------------------------------------------------------------------ */

#define CLLM__MAX_IDS 16000000          /* ids above this are rejected as corrupt */

CLLMDEF void cllm_tokenizer_free(cllm_tokenizer *tok) {
    struct cllm__tok *p;
    if (!tok) return;
    p = tok->priv;
    if (p) {
        CLLM_FREE(p->pool.p); CLLM_FREE(p->tok_str); CLLM_FREE(p->tok_bytes); CLLM_FREE(p->special);
        CLLM_FREE(p->by_str.slot); CLLM_FREE(p->by_bytes.slot); CLLM_FREE(p->merges); CLLM_FREE(p->comp);
        stbds_arrfree(p->added); stbds_arrfree(p->post_before); stbds_arrfree(p->post_after);
        CLLM_FREE(p);
    }
    CLLM_FREE(tok->chat_template); CLLM_FREE(tok->bos_token); CLLM_FREE(tok->eos_token); CLLM_FREE(tok->pad_token);
    memset(tok, 0, sizeof *tok);
}

static int cllm__json_id(const cJSON *j, int *id) {
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble < 0 || j->valuedouble >= CLLM__MAX_IDS) return 0;
    *id = (int)j->valuedouble;
    return 1;
}

static int cllm__json_flag(const cJSON *o, const char *key) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key)); }

static cllm__str cllm__pool_add(cllm__buf *pool, const char *s, size_t n) {
    cllm__str r;
    r.off = (uint32_t)pool->n;
    cllm__buf_add(pool, s, n);
    r.len = (uint32_t)n;
    return r;
}

/* Sets token `id` to string s (as written in the file) and derives the bytes it decodes to. */
static cllm_result cllm__set_token(struct cllm__tok *p, int id, const char *s, cllm_err *err) {
    size_t n = strlen(s);
    int clean;
    if (p->tok_str[id].off != CLLM__NO_STR)
        return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: id %d is given to both '%.*s' and '%.*s'", id,
                              CLLM__CUT(p->pool.p + p->tok_str[id].off, 40), CLLM__CUT(s, 40));
    p->tok_str[id] = cllm__pool_add(&p->pool, s, n);
    p->tok_bytes[id] = cllm__token_bytes(&p->pool, s, n, &clean);
    if (p->pool.oom || p->pool.n >= 0xFFFFFFF0u) return cllm__fail(err, CLLM_ERR_NOMEM, "tokenizer.json: out of memory for the token strings");
    return clean ? CLLM_OK : CLLM_ERR_ARG;   /* CLLM_ERR_ARG here only means "not byte-level" */
}

static int cllm__find_token(const struct cllm__tok *p, const char *s, size_t n) {
    return (int)cllm__smap_get(&p->by_str, p->pool.p, p->tok_str, s, n);
}

/* model: {"type": "BPE", "vocab": {...}, "merges": [...], ...}. max_added_id and n_added: the
   largest id and the number of the added tokens. */
static cllm_result cllm__load_bpe(struct cllm__tok *p, const cJSON *model, int max_added_id, int n_added, cllm_err *err) {
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *it, *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    const char *unk = cllm__json_str(model, "unk_token"), *pre = cllm__json_str(model, "continuing_subword_prefix");
    const char *suf = cllm__json_str(model, "end_of_word_suffix");
    cllm__buf tmp;
    int max_id = max_added_id, id = 0, rank = 0, nvocab = 0, i;
    size_t nmerges;
    cllm_result rc = CLLM_OK;

    memset(&tmp, 0, sizeof tmp);
    if (!cJSON_IsObject(model)) return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: missing \"model\" object");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") != 0)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: model type '%s' is not supported (only BPE)", type->valuestring);
    if (!cJSON_IsObject(vocab)) return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: model.vocab must be an object of token -> id");
    if (!cJSON_IsArray(merges)) return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: model.merges must be an array");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: BPE dropout %g is not supported (encoding must be deterministic)", dropout->valuedouble);
    if (cllm__json_flag(model, "byte_fallback")) return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: BPE byte_fallback is not supported");
    if ((pre && *pre) || (suf && *suf))
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: BPE continuing_subword_prefix / end_of_word_suffix are not supported");
    p->ignore_merges = cllm__json_flag(model, "ignore_merges");
    p->fuse_unk = cllm__json_flag(model, "fuse_unk");

    cJSON_ArrayForEach(it, vocab) {
        if (!cllm__json_id(it, &id))
            return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: vocab entry '%.*s' has no valid id (integer in "
                              "[0, %d))", CLLM__CUT(it->string, 60), CLLM__MAX_IDS);
        if (id > max_id) max_id = id;
        nvocab++;
    }
    /* Tables are indexed by id: ids must be about as many as the tokens (real files number
       them densely), or a short file could claim id 15999999 and cost half a gigabyte. */
    if ((double)max_id >= 2.0 * ((double)nvocab + n_added) + 256)
        return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: ids run up to %d but there are only %d tokens (ids must be nearly dense; corrupt file?)", max_id, nvocab + n_added);
    p->n_ids = max_id + 1;
    p->tok_str = (cllm__str *)cllm__calloc((size_t)p->n_ids, sizeof(cllm__str));
    p->tok_bytes = (cllm__str *)cllm__calloc((size_t)p->n_ids, sizeof(cllm__str));
    p->special = (unsigned char *)cllm__calloc((size_t)p->n_ids, 1);
    if (!p->tok_str || !p->tok_bytes || !p->special || !cllm__smap_init(&p->by_str, (size_t)p->n_ids) || !cllm__smap_init(&p->by_bytes, (size_t)nvocab))
        return cllm__fail(err, CLLM_ERR_NOMEM, "tokenizer.json: out of memory for %d ids", p->n_ids);
    for (i = 0; i < p->n_ids; i++) p->tok_str[i].off = p->tok_bytes[i].off = CLLM__NO_STR;
    for (i = 0; i < 256; i++) p->byte_id[i] = -1;
    cJSON_ArrayForEach(it, vocab) {
        cllm__json_id(it, &id);
        rc = cllm__set_token(p, id, it->string, err);
        if (rc == CLLM_ERR_ARG) { rc = CLLM_OK; cllm__smap_put(&p->by_str, p->pool.p, p->tok_str, (uint32_t)id); continue; }
        if (rc != CLLM_OK) return rc;
        if (cllm__smap_get(&p->by_str, p->pool.p, p->tok_str, it->string, strlen(it->string)) >= 0)
            return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: vocab token '%.*s' appears twice",
                              CLLM__CUT(it->string, 60));
        cllm__smap_put(&p->by_str, p->pool.p, p->tok_str, (uint32_t)id);
        cllm__smap_put(&p->by_bytes, p->pool.p, p->tok_bytes, (uint32_t)id);
        if (p->tok_bytes[id].len == 1) p->byte_id[(unsigned char)p->pool.p[p->tok_bytes[id].off]] = id;
    }
    p->unk_id = unk ? cllm__find_token(p, unk, strlen(unk)) : -1;
    if (unk && p->unk_id < 0)
        return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: unk_token '%.*s' is not in the vocab",
                          CLLM__CUT(unk, 60));

    /* merges: "a b" (legacy) or ["a", "b"]; rank = position; merged id = vocab[a + b] */
    nmerges = (size_t)cJSON_GetArraySize(merges);
    p->nmerge_slots = 16;
    while (p->nmerge_slots < 2 * nmerges + 16) p->nmerge_slots *= 2;
    p->merges = (cllm__merge *)CLLM_MALLOC(p->nmerge_slots * sizeof(cllm__merge));
    if (!p->merges) return cllm__fail(err, CLLM_ERR_NOMEM, "tokenizer.json: out of memory for %zu merges", nmerges);
    for (i = 0; i < (int)p->nmerge_slots; i++) p->merges[i].key = CLLM__NO_KEY;
    cJSON_ArrayForEach(it, merges) {
        const char *a = NULL, *b = NULL, *sp;
        size_t la = 0, lb = 0, slot, mask = p->nmerge_slots - 1;
        int ia, ib, iab;
        uint64_t key;
        if (cJSON_IsString(it)) {
            if (rank == 0 && strncmp(it->valuestring, "#version", 8) == 0) continue;
            sp = strchr(it->valuestring, ' ');
            if (sp && !strchr(sp + 1, ' ')) { a = it->valuestring; la = (size_t)(sp - a); b = sp + 1; lb = strlen(b); }
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) && cJSON_IsString(it->child->next)) {
            a = it->child->valuestring; la = strlen(a); b = it->child->next->valuestring; lb = strlen(b);
        }
        if (!a) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: merge %d must be \"a b\" or [\"a\", \"b\"]", rank); break; }
        tmp.n = 0;
        cllm__buf_add(&tmp, a, la); cllm__buf_add(&tmp, b, lb);
        if (tmp.oom) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); break; }
        ia = cllm__find_token(p, a, la); ib = cllm__find_token(p, b, lb); iab = cllm__find_token(p, tmp.p, tmp.n);
        if (ia < 0 || ib < 0 || iab < 0) {
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: merge %d ('%.*s' + '%.*s') uses a token that is not in the vocab", rank, (int)la, a, (int)lb, b);
            break;
        }
        key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        for (slot = (size_t)cllm__hash_u64(key) & mask; p->merges[slot].key != CLLM__NO_KEY && p->merges[slot].key != key; slot = (slot + 1) & mask) {}
        if (p->merges[slot].key == CLLM__NO_KEY) {        /* a repeated pair keeps its first rank */
            p->merges[slot].key = key; p->merges[slot].rank = rank; p->merges[slot].id = iab;
        }
        rank++;
    }
    CLLM_FREE(tmp.p);
    return rc;
}

/* added_tokens: [{"id", "content", "special", "normalized", "lstrip", "rstrip", "single_word"}] */
static cllm_result cllm__load_added(struct cllm__tok *p, const cJSON *list, cllm_err *err) {
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const char *content = cllm__json_str(it, "content");
        cllm__added a;
        int vid;
        memset(&a, 0, sizeof a);
        if (!content || !cllm__json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &a.id))
            return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: added_tokens entries need \"content\" and an integer \"id\"");
        if (cllm__json_flag(it, "single_word"))
            return cllm__fail(err, CLLM_ERR_UNSUPPORTED,
                              "tokenizer.json: added token '%.*s' sets single_word, which is not supported",
                              CLLM__CUT(content, 60));
        if (!*content) continue;                                   /* HF ignores empty tokens */
        a.special = (unsigned char)cllm__json_flag(it, "special");
        a.normalized = (unsigned char)cllm__json_bool(it, "normalized", !a.special);
        a.lstrip = (unsigned char)cllm__json_flag(it, "lstrip");
        a.rstrip = (unsigned char)cllm__json_flag(it, "rstrip");
        /* a token that is already in the vocabulary keeps its vocabulary id (HF add_tokens) */
        vid = cllm__find_token(p, content, strlen(content));
        if (vid >= 0) a.id = vid;
        else {
            cllm_result rc = cllm__set_token(p, a.id, content, err);
            if (rc != CLLM_OK && rc != CLLM_ERR_ARG) return rc;
            cllm__smap_put(&p->by_str, p->pool.p, p->tok_str, (uint32_t)a.id);
        }
        if (a.special) p->special[a.id] = 1;
        if (cllm__utf8_check(content, strlen(content)) != strlen(content))
            return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: added token %d is not valid UTF-8", a.id);
        if (a.normalized && p->nfc) {            /* normalized tokens match the normalized text */
            cllm__ntext t;
            memset(&t, 0, sizeof t);
            cllm__nfc(p->comp, p->ncomp, content, strlen(content), 0, &t);
            a.content = cllm__pool_add(&p->pool, t.b.p ? t.b.p : "", t.b.n);
            CLLM_FREE(t.b.p); stbds_arrfree(t.os); stbds_arrfree(t.oe);
        } else a.content = cllm__pool_add(&p->pool, content, strlen(content));
        if (a.normalized) p->any_normalized_added = 1;
        stbds_arrput(p->added, a);
    }
    if (p->pool.oom) return cllm__fail(err, CLLM_ERR_NOMEM, "tokenizer.json: out of memory for the added tokens");
    return CLLM_OK;
}

/* Added tokens are matched leftmost-longest: bucket them by first byte, longest first, so the
   first token that matches at a position is the longest one there. */
static int cllm__added_cmp(const void *x, const void *y) {
    const cllm__added *a = (const cllm__added *)x, *b = (const cllm__added *)y;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->content.len != b->content.len) return a->content.len > b->content.len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static void cllm__index_added(struct cllm__tok *p) {
    int i, n = (int)stbds_arrlen(p->added), c = 0;
    for (i = 0; i < n; i++) p->added[i].first = (unsigned char)p->pool.p[p->added[i].content.off];
    if (n) qsort(p->added, (size_t)n, sizeof *p->added, cllm__added_cmp);
    for (i = 0; i <= 256; i++) {
        while (c < n && p->added[c].first < i) c++;
        p->bucket[i] = c;
    }
}

/* The exact regex strings we implement by hand (as they appear in tokenizer.json, unescaped). */
static const char *cllm__re_llama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *cllm__re_qwen2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* normalizer: null | {"type":"NFC"} | {"type":"Sequence","normalizers":[...]} */
static cllm_result cllm__load_normalizer(struct cllm__tok *p, const cJSON *n, cllm_err *err) {
    const char *type;
    if (!n || cJSON_IsNull(n)) return CLLM_OK;
    type = cllm__json_str(n, "type");
    if (type && strcmp(type, "NFC") == 0) { p->nfc = 1; return CLLM_OK; }
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers")) {
            cllm_result rc = cllm__load_normalizer(p, it, err);
            if (rc != CLLM_OK) return rc;
        }
        return CLLM_OK;
    }
    return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: normalizer '%s' is not supported (supported: none, NFC, Sequence of those)", type ? type : "?");
}

/* pre_tokenizer: Split (Llama-3 or Qwen2 regex, Isolated), Digits, ByteLevel, Sequence. */
static cllm_result cllm__load_pretok(struct cllm__tok *p, const cJSON *t, cllm_err *err) {
    const char *type = cllm__json_str(t, "type");
    cllm__pretok s;
    memset(&s, 0, sizeof s);
    if (!type) return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: pre_tokenizer without \"type\"");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(t, "pretokenizers")) {
            cllm_result rc = cllm__load_pretok(p, it, err);
            if (rc != CLLM_OK) return rc;
        }
        return CLLM_OK;
    }
    if (strcmp(type, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(t, "pattern");
        const char *re = cllm__json_str(pat, "Regex"), *behavior = cllm__json_str(t, "behavior");
        if (!re) return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: Split with a String pattern is not supported (only the Llama-3 and Qwen2 regexes)");
        if (strcmp(re, cllm__re_llama3) == 0) s.kind = CLLM__PT_SPLIT_LLAMA3;
        else if (strcmp(re, cllm__re_qwen2) == 0) s.kind = CLLM__PT_SPLIT_QWEN2;
        else return cllm__fail(err, CLLM_ERR_UNSUPPORTED,
                               "tokenizer.json: Split regex '%.*s' is not supported (only the Llama-3 and Qwen2 "
                               "patterns)", CLLM__CUT(re, 200));
        if (!behavior || strcmp(behavior, "Isolated") != 0 || cllm__json_flag(t, "invert"))
            return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: Split behavior '%s'%s is not supported (only Isolated, invert false)", behavior ? behavior : "?", cllm__json_flag(t, "invert") ? " with invert" : "");
    } else if (strcmp(type, "Digits") == 0) {
        s.kind = CLLM__PT_DIGITS;
        s.individual_digits = cllm__json_flag(t, "individual_digits");
    } else if (strcmp(type, "ByteLevel") == 0) {
        s.kind = CLLM__PT_BYTELEVEL;
        s.add_prefix_space = cllm__json_bool(t, "add_prefix_space", 1);
        s.use_regex = cllm__json_bool(t, "use_regex", 1);
    } else return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: pre_tokenizer '%s' is not supported (supported: Split, Digits, ByteLevel, Sequence)", type);
    if (p->npretok == CLLM__MAX_PRETOK) return cllm__fail(err, CLLM_ERR_LIMIT, "tokenizer.json: more than %d pre-tokenizer steps", CLLM__MAX_PRETOK);
    p->pretok[p->npretok++] = s;
    return CLLM_OK;
}

/* post_processor: null | ByteLevel (offsets only) | TemplateProcessing | Sequence of those. Only
   the "single" template matters for one sequence: ids before and after $A. */
static cllm_result cllm__load_post(struct cllm__tok *p, const cJSON *t, cllm_err *err) {
    const char *type;
    const cJSON *it, *specials;
    int seen_a = 0;
    if (!t || cJSON_IsNull(t)) return CLLM_OK;
    type = cllm__json_str(t, "type");
    if (type && strcmp(type, "ByteLevel") == 0) return CLLM_OK;
    if (type && strcmp(type, "Sequence") == 0) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(t, "processors")) {
            cllm_result rc = cllm__load_post(p, it, err);
            if (rc != CLLM_OK) return rc;
        }
        return CLLM_OK;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: post_processor '%s' is not supported (supported: ByteLevel, TemplateProcessing, Sequence)", type ? type : "?");
    if (p->has_template) return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: more than one TemplateProcessing post_processor");
    p->has_template = 1;
    specials = cJSON_GetObjectItemCaseSensitive(t, "special_tokens");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(t, "single")) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken"), *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        if (seq) {
            const char *sid = cllm__json_str(seq, "id");
            if (!sid || strcmp(sid, "A") != 0 || seen_a) return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: TemplateProcessing single template must contain $A once");
            seen_a = 1;
        } else if (sp) {
            const char *name = cllm__json_str(sp, "id");
            const cJSON *entry = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL, *idv;
            if (!entry) return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: TemplateProcessing special token '%s' is not in special_tokens", name ? name : "?");
            cJSON_ArrayForEach(idv, cJSON_GetObjectItemCaseSensitive(entry, "ids")) {
                int id;
                if (!cllm__json_id(idv, &id)) return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: TemplateProcessing token '%s' has a bad id", name);
                if (seen_a) stbds_arrput(p->post_after, id); else stbds_arrput(p->post_before, id);
            }
        } else return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: TemplateProcessing items must be SpecialToken or Sequence");
    }
    if (!seen_a) return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: TemplateProcessing single template has no $A");
    return CLLM_OK;
}

/* Builds the NFC composition table: every two-character canonical decomposition that is not
   excluded from composition, as (first << 21 | second) << 21 | composite, sorted. */
static int cllm__u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cllm__build_compose(struct cllm__tok *p) {
    size_t i, n;
    const uint32_t *table = cllm__uni_decomp_entries(&n);
    p->comp = (uint64_t *)cllm__calloc(n, sizeof(uint64_t));
    if (!p->comp) return 0;
    for (i = 0; i < n; i++) {
        const uint32_t *d = &table[3 * i];
        if (!(d[0] & 0x80000000u) && d[2])
            p->comp[p->ncomp++] = (((uint64_t)d[1] << 21 | d[2]) << 21) | (d[0] & 0x1FFFFF);
    }
    qsort(p->comp, p->ncomp, sizeof(uint64_t), cllm__u64_cmp);
    return 1;
}

/* A token in tokenizer_config.json: "text", {"content": "text", ...} or null. */
static cllm_result cllm__config_token(const cllm_tokenizer *tok, const cJSON *cfg, const char *key, char **str, int *id, cllm_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(j) ? j->valuestring : cllm__json_str(j, "content");
    *id = -1;
    if (!s) return CLLM_OK;
    *id = cllm__find_token(tok->priv, s, strlen(s));
    if (*id < 0)
        return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer_config.json: %s '%.*s' is not a token of tokenizer.json",
                          key, CLLM__CUT(s, 60));
    *str = cllm__strdup(s);
    return *str ? CLLM_OK : cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
}

static int cllm__detect_chat_family(struct cllm__tok *p, const char *tmpl);

static cllm_result cllm__load_config(cllm_tokenizer *tok, const char *text, size_t len, cllm_err *err) {
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    const cJSON *ct, *abt;
    cllm_result rc;
    if (!cfg || !cJSON_IsObject(cfg)) { cJSON_Delete(cfg); return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer_config.json: not a JSON object"); }
    rc = cllm__config_token(tok, cfg, "bos_token", &tok->bos_token, &tok->bos_id, err);
    if (rc == CLLM_OK) rc = cllm__config_token(tok, cfg, "eos_token", &tok->eos_token, &tok->eos_id, err);
    if (rc == CLLM_OK) rc = cllm__config_token(tok, cfg, "pad_token", &tok->pad_token, &tok->pad_id, err);
    abt = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    tok->add_bos_token = cJSON_IsBool(abt) ? cJSON_IsTrue(abt) : -1;
    /* chat_template: a string, or a list of {"name", "template"} of which "default" is used */
    ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsArray(ct)) {
        const cJSON *it, *pick = NULL;
        cJSON_ArrayForEach(it, ct) {
            const char *name = cllm__json_str(it, "name");
            if (name && strcmp(name, "default") == 0) pick = cJSON_GetObjectItemCaseSensitive(it, "template");
        }
        ct = pick;
    }
    if (rc == CLLM_OK && cJSON_IsString(ct)) {
        tok->chat_template = cllm__strdup(ct->valuestring);
        if (!tok->chat_template) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        else tok->chat_family = cllm__detect_chat_family(tok->priv, tok->chat_template);
    }
    cJSON_Delete(cfg);
    return rc;
}

CLLMDEF cllm_result cllm_tokenizer_load_json(cllm_tokenizer *tok, const char *json, size_t len, const char *config_json, size_t config_len, cllm_err *err) {
    cJSON *root;
    const cJSON *added, *dec, *it;
    struct cllm__tok *p;
    cllm_result rc = CLLM_OK;
    int max_added = -1, id, i;
    memset(tok, 0, sizeof *tok);
    tok->bos_id = tok->eos_id = tok->pad_id = tok->add_bos_token = -1;
    root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) { cJSON_Delete(root); return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer.json: not valid JSON"); }
    p = tok->priv = (struct cllm__tok *)cllm__calloc(1, sizeof(struct cllm__tok));
    if (!p) { cJSON_Delete(root); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }

    rc = cllm__load_normalizer(p, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), err);
    if (rc == CLLM_OK && p->nfc && !cllm__build_compose(p)) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (rc == CLLM_OK) {
        it = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
        if (!it || cJSON_IsNull(it)) rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: no pre_tokenizer; only byte-level BPE (a ByteLevel pre-tokenizer) is supported");
        else rc = cllm__load_pretok(p, it, err);
    }
    if (rc == CLLM_OK) {
        for (i = 0; i < p->npretok - 1; i++)
            if (p->pretok[i].kind == CLLM__PT_BYTELEVEL) break;
        if (p->npretok == 0 || p->pretok[p->npretok - 1].kind != CLLM__PT_BYTELEVEL || i < p->npretok - 1)
            rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: the pre_tokenizer must end with one ByteLevel step (byte-level BPE)");
    }
    if (rc == CLLM_OK) rc = cllm__load_post(p, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), err);
    if (rc == CLLM_OK) {
        dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
        if (!cllm__json_str(dec, "type") || strcmp(cllm__json_str(dec, "type"), "ByteLevel") != 0)
            rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: decoder '%s' is not supported (only ByteLevel)", cllm__json_str(dec, "type") ? cllm__json_str(dec, "type") : "null");
    }
    if (rc == CLLM_OK && cJSON_GetObjectItemCaseSensitive(root, "truncation") && !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "truncation")))
        rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: truncation is not supported (set it to null)");
    if (rc == CLLM_OK && cJSON_GetObjectItemCaseSensitive(root, "padding") && !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "padding")))
        rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "tokenizer.json: padding is not supported (set it to null)");
    added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    cJSON_ArrayForEach(it, added)
        if (cllm__json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id) && id > max_added) max_added = id;
    if (rc == CLLM_OK) rc = cllm__load_bpe(p, cJSON_GetObjectItemCaseSensitive(root, "model"), max_added, cJSON_GetArraySize(added), err);
    if (rc == CLLM_OK) rc = cllm__load_added(p, added, err);
    if (rc == CLLM_OK) {
        for (i = 0; i < (int)stbds_arrlen(p->post_before); i++) if (p->post_before[i] >= p->n_ids) rc = CLLM_ERR_FORMAT;
        for (i = 0; i < (int)stbds_arrlen(p->post_after); i++) if (p->post_after[i] >= p->n_ids) rc = CLLM_ERR_FORMAT;
        if (rc != CLLM_OK) cllm__fail(err, rc, "tokenizer.json: TemplateProcessing uses an id outside the vocabulary");
    }
    if (rc == CLLM_OK) { cllm__index_added(p); tok->n_ids = p->n_ids; }
    if (rc == CLLM_OK && config_json) rc = cllm__load_config(tok, config_json, config_len, err);
    cJSON_Delete(root);
    if (rc != CLLM_OK) { cllm_tokenizer_free(tok); tok->bos_id = tok->eos_id = tok->pad_id = -1; return rc; }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_tokenizer_load(cllm_tokenizer *tok, const char *path_or_dir, cllm_err *err) {
    char path[4096], cpath[4096];
    char *json = NULL, *cfg = NULL;
    size_t len = 0, clen = 0, n = strlen(path_or_dir);
    const char *slash;
    cllm_result rc;
    memset(tok, 0, sizeof *tok);
    if (n + 32 > sizeof path) return cllm__fail(err, CLLM_ERR_ARG, "tokenizer path too long");
    /* a directory, or a file path ending in .json */
    if (n > 5 && strcmp(path_or_dir + n - 5, ".json") == 0) {
        snprintf(path, sizeof path, "%s", path_or_dir);
        slash = strrchr(path_or_dir, '/');
        if (slash) snprintf(cpath, sizeof cpath, "%.*s/tokenizer_config.json", (int)(slash - path_or_dir), path_or_dir);
        else snprintf(cpath, sizeof cpath, "tokenizer_config.json");
    } else {
        snprintf(path, sizeof path, "%s/tokenizer.json", path_or_dir);
        snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", path_or_dir);
    }
    rc = cllm_read_file(path, &json, &len, err);
    if (rc != CLLM_OK) return rc;
    if (cllm__file_exists(cpath) && (rc = cllm_read_file(cpath, &cfg, &clen, err)) != CLLM_OK) { CLLM_FREE(json); return rc; }
    rc = cllm_tokenizer_load_json(tok, json, len, cfg, clen, err);
    if (rc != CLLM_OK && err) {                         /* name the file in the message */
        char msg[CLLM_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "%.*s: %.*s", CLLM__CUT(path_or_dir, 150), CLLM__CUT(err->msg, 350));
        memcpy(err->msg, msg, sizeof msg);
    }
    CLLM_FREE(json); CLLM_FREE(cfg);
    return rc;
}

CLLMDEF int cllm_tokenizer_token_id(const cllm_tokenizer *tok, const char *token) {
    if (!tok || !tok->priv || !token) return -1;
    return cllm__find_token(tok->priv, token, strlen(token));
}

CLLMDEF const char *cllm_tokenizer_id_bytes(const cllm_tokenizer *tok, int id, size_t *len) {
    const struct cllm__tok *p = tok ? tok->priv : NULL;
    if (!p || id < 0 || id >= p->n_ids || p->tok_bytes[id].off == CLLM__NO_STR) { if (len) *len = 0; return NULL; }
    if (len) *len = p->tok_bytes[id].len;
    return p->pool.p + p->tok_bytes[id].off;
}

/* ---- Encoding: added tokens ------------------------------------------------------------------ */

typedef struct cllm__seg { size_t s, e; int id; } cllm__seg;   /* id -1: ordinary text */

static int cllm__space_before(const char *s, size_t i, size_t *start) {   /* is s[..i) ending in White_Space? */
    size_t j = i;
    uint32_t cp;
    if (i == 0) return 0;
    while (j > 0 && ((unsigned char)s[j - 1] & 0xC0) == 0x80) j--;
    if (j > 0) j--;
    cllm__utf8_next((const unsigned char *)s + j, i - j, &cp);
    if (!(cllm__uni_class(cp) & CLLM__U_SPACE)) return 0;
    *start = j;
    return 1;
}

/* Cuts the added tokens whose `normalized` flag equals `normalized` out of s[from, to):
   leftmost-longest matches, then lstrip / rstrip widen a match over White_Space on its left /
   right exactly as HF's AddedVocabulary::find_matches does. */
static void cllm__split_added(const struct cllm__tok *p, const char *s, size_t from, size_t to, int normalized, cllm__seg **out) {
    size_t i = from, start_offset = from;
    while (i < to) {
        unsigned char c = (unsigned char)s[i];
        const cllm__added *hit = NULL;
        size_t ms, me, stop;
        int k;
        for (k = p->bucket[c]; k < p->bucket[c + 1]; k++) {
            const cllm__added *a = &p->added[k];
            if (a->normalized == normalized && a->content.len <= to - i && memcmp(s + i, p->pool.p + a->content.off, a->content.len) == 0) { hit = a; break; }
        }
        if (!hit) { i++; continue; }
        ms = i; me = stop = i + hit->content.len;
        if (hit->lstrip) {
            size_t j = ms, ns;
            while (cllm__space_before(s, j, &ns) && ns >= from) j = ns;
            ms = j > start_offset ? j : start_offset;
        }
        if (hit->rstrip)
            while (stop < to) {
                uint32_t cp;
                int l = cllm__utf8_next((const unsigned char *)s + stop, to - stop, &cp);
                if (!l || !(cllm__uni_class(cp) & CLLM__U_SPACE)) break;
                stop += (size_t)l;
            }
        if (start_offset < ms) { cllm__seg t; t.s = start_offset; t.e = ms; t.id = -1; stbds_arrput(*out, t); }
        { cllm__seg t; t.s = ms; t.e = stop; t.id = hit->id; stbds_arrput(*out, t); }
        start_offset = stop;
        i = me;                                 /* the search goes on after the literal match */
    }
    if (start_offset < to) { cllm__seg t; t.s = start_offset; t.e = to; t.id = -1; stbds_arrput(*out, t); }
}

/* ---- Encoding: pre-tokenizer regexes as scanners ---------------------------------------------- */
/* Each alternation is tried in order at position i, with the backtracking the regex engine would
   do written out; the result is the end of the match. Every alternation of the three patterns
   matches at least one character at any position, so the matches tile the piece. */

enum { CLLM__C_LETTER, CLLM__C_NUMBER, CLLM__C_SPACE, CLLM__C_OTHER, CLLM__C_CRLF };

/* Is the character at s[i] (i < n, valid UTF-8) of kind `what`? OTHER = not \s, \p{L}, \p{N}. */
static int cllm__is(const unsigned char *s, size_t n, size_t i, int what) {
    uint32_t cp;
    unsigned k;
    if (i >= n) return 0;
    cllm__utf8_next(s + i, n - i, &cp);
    if (what == CLLM__C_CRLF) return cp == '\r' || cp == '\n';
    k = cllm__uni_class(cp);
    if (what == CLLM__C_LETTER) return (k & CLLM__U_LETTER) != 0;
    if (what == CLLM__C_NUMBER) return (k & CLLM__U_NUMBER) != 0;
    if (what == CLLM__C_SPACE) return (k & CLLM__U_SPACE) != 0;
    return k == 0;
}

static size_t cllm__next_char(const unsigned char *s, size_t n, size_t i) {
    uint32_t cp;
    return i + (size_t)cllm__utf8_next(s + i, n - i, &cp);
}

/* End of the run of `what` characters from i, at most max characters (0: unlimited). */
static size_t cllm__run(const unsigned char *s, size_t n, size_t i, int what, int max) {
    int count = 0;
    while (i < n && (max == 0 || count < max) && cllm__is(s, n, i, what)) { i = cllm__next_char(s, n, i); count++; }
    return i;
}

/* 's 't 're 've 'm 'll 'd after the apostrophe at s[i-1]: returns the suffix length or 0. With
   ci (Oniguruma's (?i)) letters match either case, and 's' also matches U+017F LONG S, whose
   case fold is 's'. */
static size_t cllm__contraction(const unsigned char *s, size_t n, size_t i, int ci) {
    static const char *suffix[7] = { "s", "t", "re", "ve", "m", "ll", "d" };
    int k;
    for (k = 0; k < 7; k++) {
        const char *q = suffix[k];
        size_t j = i;
        for (; *q; q++) {
            if (j < n && (s[j] == (unsigned char)*q || (ci && s[j] == (unsigned char)(*q - 32)))) { j++; continue; }
            if (ci && *q == 's' && j + 1 < n && s[j] == 0xC5 && s[j + 1] == 0xBF) { j += 2; continue; }
            break;
        }
        if (!*q) return j - i;
    }
    return 0;
}

/* The whitespace alternatives shared by all three patterns, at a whitespace character i:
   (llama) \s*[\r\n]+ = the run up to and including its last CR/LF;
   \s+(?!\S) = the whole run if it ends the piece, else the run minus its last character (which
   then starts the next match) if that leaves something; \s+ = the whole run. */
static size_t cllm__match_space(const unsigned char *s, size_t n, size_t i, int newline_alt) {
    size_t w = cllm__run(s, n, i, CLLM__C_SPACE, 0), j, last;
    if (newline_alt)
        for (j = w; j > i; j--)
            if (s[j - 1] == '\r' || s[j - 1] == '\n') return j;
    if (w == n) return w;
    last = w - 1;
    while (((s[last] & 0xC0) == 0x80)) last--;          /* start of the run's last character */
    return last > i ? last : w;
}

/* Llama-3 (max_digits 3) and Qwen2 (max_digits 1):
   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t cllm__match_llama3(const unsigned char *s, size_t n, size_t i, int max_digits) {
    size_t j, nx = cllm__next_char(s, n, i);
    if (s[i] == '\'' && (j = cllm__contraction(s, n, i + 1, 1)) > 0) return i + 1 + j;
    if (!cllm__is(s, n, i, CLLM__C_LETTER) && !cllm__is(s, n, i, CLLM__C_NUMBER) && !cllm__is(s, n, i, CLLM__C_CRLF) && cllm__is(s, n, nx, CLLM__C_LETTER))
        return cllm__run(s, n, nx, CLLM__C_LETTER, 0);
    if (cllm__is(s, n, i, CLLM__C_LETTER)) return cllm__run(s, n, i, CLLM__C_LETTER, 0);
    if (cllm__is(s, n, i, CLLM__C_NUMBER)) return cllm__run(s, n, i, CLLM__C_NUMBER, max_digits);
    j = (s[i] == ' ' && cllm__is(s, n, nx, CLLM__C_OTHER)) ? nx : i;
    if (cllm__is(s, n, j, CLLM__C_OTHER)) return cllm__run(s, n, cllm__run(s, n, j, CLLM__C_OTHER, 0), CLLM__C_CRLF, 0);
    if (cllm__is(s, n, i, CLLM__C_SPACE)) return cllm__match_space(s, n, i, 1);
    return nx;                                           /* unreachable: every character has a class */
}

/* GPT-2 (ByteLevel use_regex): 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t cllm__match_gpt2(const unsigned char *s, size_t n, size_t i) {
    static const int kinds[3] = { CLLM__C_LETTER, CLLM__C_NUMBER, CLLM__C_OTHER };
    size_t j, nx = cllm__next_char(s, n, i);
    int k;
    if (s[i] == '\'' && (j = cllm__contraction(s, n, i + 1, 0)) > 0) return i + 1 + j;
    for (k = 0; k < 3; k++) {
        if (s[i] == ' ' && cllm__is(s, n, nx, kinds[k])) return cllm__run(s, n, nx, kinds[k], 0);
        if (cllm__is(s, n, i, kinds[k])) return cllm__run(s, n, i, kinds[k], 0);
    }
    if (cllm__is(s, n, i, CLLM__C_SPACE)) return cllm__match_space(s, n, i, 0);
    return nx;
}

/* ---- Encoding: pre-tokenizer steps ------------------------------------------------------------ */

/* A piece of the normalized text [s, e). prefix: ByteLevel's add_prefix_space put a space in front;
   anchor: where the piece started before splitting (the prefix space maps to that character). */
typedef struct cllm__piece { size_t s, e, anchor; int prefix; } cllm__piece;

static void cllm__piece_put(cllm__piece **out, size_t s, size_t e, size_t anchor, int prefix) {
    cllm__piece q;
    if (s == e && !prefix) return;
    q.s = s; q.e = e; q.anchor = anchor; q.prefix = prefix;
    stbds_arrput(*out, q);
}

/* Digits: every numeric character alone (individual_digits) or runs of them (Contiguous), and
   the text between them, become pieces. */
static void cllm__pretok_digits(const unsigned char *t, cllm__piece in, int individual, cllm__piece **out) {
    size_t i = in.s, start = in.s;
    while (i < in.e) {
        size_t j;
        if (!cllm__is(t, in.e, i, CLLM__C_NUMBER)) { i = cllm__next_char(t, in.e, i); continue; }
        j = individual ? cllm__next_char(t, in.e, i) : cllm__run(t, in.e, i, CLLM__C_NUMBER, 0);
        cllm__piece_put(out, start, i, in.anchor, 0);
        cllm__piece_put(out, i, j, in.anchor, 0);
        start = i = j;
    }
    cllm__piece_put(out, start, in.e, in.anchor, 0);
}

/* Split (Isolated) or ByteLevel: every regex match becomes a piece. ByteLevel's
   add_prefix_space first puts a space in front of a piece that does not start with one; the
   regex then sees that space (it may end up alone, or join the first word). */
static void cllm__pretok_regex(const cllm__pretok *st, const unsigned char *t, cllm__piece in, cllm__buf *tmp, cllm__piece **out) {
    const unsigned char *s = t + in.s;
    size_t n = in.e - in.s, i, j;
    int pre = in.prefix;
    if (st->kind == CLLM__PT_BYTELEVEL && st->add_prefix_space && !pre && !(n > 0 && s[0] == ' ')) pre = 1;
    if (st->kind == CLLM__PT_BYTELEVEL && !st->use_regex) { cllm__piece_put(out, in.s, in.e, in.anchor, pre); return; }
    if (pre) {
        tmp->n = 0;
        cllm__buf_add(tmp, " ", 1);
        cllm__buf_add(tmp, s, n);
        if (tmp->oom) return;
        s = (const unsigned char *)tmp->p; n++;
    }
    for (i = 0; i < n; i = j) {
        if (st->kind == CLLM__PT_BYTELEVEL) j = cllm__match_gpt2(s, n, i);
        else j = cllm__match_llama3(s, n, i, st->kind == CLLM__PT_SPLIT_LLAMA3 ? 3 : 1);
        if (pre) cllm__piece_put(out, in.s + (i ? i - 1 : 0), in.s + j - 1, in.anchor, i == 0);
        else cllm__piece_put(out, in.s + i, in.s + j, in.anchor, 0);
    }
}

/* ---- Encoding: byte-level BPE ----------------------------------------------------------------- */

/* A queued merge: join the symbol at pos with its right neighbour into id, with priority rank.
   The heap pops the lowest rank, then the leftmost position (HF's word.rs merge_all). */
typedef struct cllm__mq { int rank, pos, id; } cllm__mq;

static int cllm__mq_before(const cllm__mq *a, const cllm__mq *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void cllm__heap_push(cllm__mq **h, cllm__mq m) {
    size_t i;
    stbds_arrput(*h, m);
    for (i = (size_t)stbds_arrlen(*h) - 1; i > 0 && cllm__mq_before(&(*h)[i], &(*h)[(i - 1) / 2]); i = (i - 1) / 2) {
        cllm__mq t = (*h)[i]; (*h)[i] = (*h)[(i - 1) / 2]; (*h)[(i - 1) / 2] = t;
    }
}

static cllm__mq cllm__heap_pop(cllm__mq *h) {
    cllm__mq top = h[0];
    size_t n = (size_t)stbds_arrlen(h) - 1, i = 0;
    h[0] = h[n];
    stbds_arrsetlen(h, n);
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cllm__mq_before(&h[l], &h[m])) m = l;
        if (r < n && cllm__mq_before(&h[r], &h[m])) m = r;
        if (m == i) break;
        { cllm__mq t = h[i]; h[i] = h[m]; h[m] = t; }
        i = m;
    }
    return top;
}

/* Work arrays reused across pieces (stb_ds arrays). */
typedef struct cllm__bpe_work { int *sym, *prev, *next; size_t *start, *len; cllm__mq *heap; } cllm__bpe_work;

static void cllm__push_merge(const struct cllm__tok *p, cllm__bpe_work *w, int pos) {
    const cllm__merge *m = cllm__merge_get(p->merges, p->nmerge_slots, w->sym[pos], w->sym[w->next[pos]]);
    if (m) { cllm__mq q; q.rank = m->rank; q.pos = pos; q.id = m->id; cllm__heap_push(&w->heap, q); }
}

/* BPE of the bytes b[0..n): one symbol per byte, then repeatedly apply the queued merge of
   lowest rank (leftmost on ties), skipping queue entries that went stale. Appends each token's
   id and the index of its first byte in b. */
static void cllm__bpe(const struct cllm__tok *p, const unsigned char *b, size_t n, cllm__bpe_work *w, int **ids, size_t **starts) {
    int ns = 0, i;
    if (n == 0) return;
    if (p->ignore_merges) {                        /* a piece that is itself a token is kept whole */
        long id = cllm__smap_get(&p->by_bytes, p->pool.p, p->tok_bytes, (const char *)b, n);
        if (id >= 0) { stbds_arrput(*ids, (int)id); stbds_arrput(*starts, 0); return; }
    }
    stbds_arrsetlen(w->sym, 0); stbds_arrsetlen(w->start, 0); stbds_arrsetlen(w->len, 0);
    stbds_arrsetlen(w->prev, 0); stbds_arrsetlen(w->next, 0); stbds_arrsetlen(w->heap, 0);
    for (i = 0; i < (int)n; i++) {
        int id = p->byte_id[b[i]];
        if (id < 0) {                              /* not in the vocabulary: unk, or dropped */
            if (p->unk_id < 0) continue;
            if (p->fuse_unk && ns > 0 && w->sym[ns - 1] == p->unk_id && w->start[ns - 1] + w->len[ns - 1] == (size_t)i) { w->len[ns - 1]++; continue; }
            id = p->unk_id;
        }
        stbds_arrput(w->sym, id); stbds_arrput(w->start, (size_t)i); stbds_arrput(w->len, 1);
        stbds_arrput(w->prev, ns - 1); stbds_arrput(w->next, ns + 1);
        ns++;
    }
    if (ns == 0) return;
    w->next[ns - 1] = -1;
    for (i = 0; i + 1 < ns; i++) cllm__push_merge(p, w, i);
    while (stbds_arrlen(w->heap) > 0) {
        cllm__mq top = cllm__heap_pop(w->heap);
        int right;
        const cllm__merge *m;
        if (w->len[top.pos] == 0 || w->next[top.pos] < 0) continue;
        right = w->next[top.pos];
        m = cllm__merge_get(p->merges, p->nmerge_slots, w->sym[top.pos], w->sym[right]);
        if (!m || m->id != top.id) continue;             /* stale: the pair changed since queued */
        w->sym[top.pos] = top.id;
        w->len[top.pos] += w->len[right];
        w->len[right] = 0;
        w->next[top.pos] = w->next[right];
        if (w->next[right] >= 0) w->prev[w->next[right]] = top.pos;
        if (w->prev[top.pos] >= 0) cllm__push_merge(p, w, w->prev[top.pos]);
        if (w->next[top.pos] >= 0) cllm__push_merge(p, w, top.pos);
    }
    for (i = 0; i >= 0; i = w->next[i]) { stbds_arrput(*ids, w->sym[i]); stbds_arrput(*starts, w->start[i]); }
}

/* ---- Encoding: the whole pipeline ------------------------------------------------------------ */

typedef struct cllm__enc {
    cllm__ntext     nt;          /* normalized text, with the original range of each byte */
    cllm__seg      *raw, *norm;  /* added-token splits                                    */
    cllm__piece    *pa, *pb;     /* pre-tokenizer pieces (ping-pong)                      */
    cllm__buf       tmp, bytes;
    cllm__bpe_work  w;
    int            *ids, *offs;  /* output                                                */
    int            *pids;        /* per-piece BPE output                                  */
    size_t         *pstarts;
} cllm__enc;

static void cllm__enc_free(cllm__enc *e) {
    CLLM_FREE(e->nt.b.p); stbds_arrfree(e->nt.os); stbds_arrfree(e->nt.oe);
    stbds_arrfree(e->raw); stbds_arrfree(e->norm); stbds_arrfree(e->pa); stbds_arrfree(e->pb);
    CLLM_FREE(e->tmp.p); CLLM_FREE(e->bytes.p);
    stbds_arrfree(e->w.sym); stbds_arrfree(e->w.prev); stbds_arrfree(e->w.next); stbds_arrfree(e->w.start);
    stbds_arrfree(e->w.len); stbds_arrfree(e->w.heap);
    stbds_arrfree(e->ids); stbds_arrfree(e->offs); stbds_arrfree(e->pids); stbds_arrfree(e->pstarts);
}

static void cllm__emit(cllm__enc *e, int id, size_t s, size_t t) {
    stbds_arrput(e->ids, id); stbds_arrput(e->offs, (int)s); stbds_arrput(e->offs, (int)t);
}

/* Pre-tokenizes and BPE-encodes the normalized text nt[s, e), emitting tokens with the original
   offsets of their first and last byte. */
static void cllm__encode_text(const struct cllm__tok *p, cllm__enc *e, size_t s, size_t t) {
    const unsigned char *nb = (const unsigned char *)e->nt.b.p;
    cllm__piece first;
    int k;
    size_t i, j;
    first.s = s; first.e = t; first.anchor = s; first.prefix = 0;
    stbds_arrsetlen(e->pa, 0);
    stbds_arrput(e->pa, first);
    for (k = 0; k < p->npretok; k++) {
        cllm__piece *swap;
        stbds_arrsetlen(e->pb, 0);
        for (i = 0; i < (size_t)stbds_arrlen(e->pa); i++) {
            if (p->pretok[k].kind == CLLM__PT_DIGITS) cllm__pretok_digits(nb, e->pa[i], p->pretok[k].individual_digits, &e->pb);
            else cllm__pretok_regex(&p->pretok[k], nb, e->pa[i], &e->tmp, &e->pb);
        }
        swap = e->pa; e->pa = e->pb; e->pb = swap;
    }
    for (i = 0; i < (size_t)stbds_arrlen(e->pa); i++) {
        cllm__piece q = e->pa[i];
        e->bytes.n = 0;
        if (q.prefix) cllm__buf_add(&e->bytes, " ", 1);
        cllm__buf_add(&e->bytes, nb + q.s, q.e - q.s);
        stbds_arrsetlen(e->pids, 0); stbds_arrsetlen(e->pstarts, 0);
        cllm__bpe(p, (const unsigned char *)e->bytes.p, e->bytes.n, &e->w, &e->pids, &e->pstarts);
        for (j = 0; j < (size_t)stbds_arrlen(e->pids); j++) {
            size_t b0 = e->pstarts[j], b1 = (j + 1 < (size_t)stbds_arrlen(e->pids) ? e->pstarts[j + 1] : e->bytes.n) - 1;
            /* byte index in the piece -> index in nt (the prefix space maps to the anchor) */
            size_t n0 = q.prefix ? (b0 == 0 ? q.anchor : q.s + b0 - 1) : q.s + b0;
            size_t n1 = q.prefix ? (b1 == 0 ? q.anchor : q.s + b1 - 1) : q.s + b1;
            cllm__emit(e, e->pids[j], e->nt.os[n0], e->nt.oe[n1]);
        }
    }
}

CLLMDEF cllm_result cllm_tokenizer_encode(const cllm_tokenizer *tok, const char *text, size_t len, int add_special_tokens,
                                          int **ids, int *n, int **offsets, cllm_err *err) {
    const struct cllm__tok *p = tok ? tok->priv : NULL;
    cllm__enc e;
    size_t bad, a, b;
    int i;
    *ids = NULL; *n = 0;
    if (offsets) *offsets = NULL;
    if (!p) return cllm__fail(err, CLLM_ERR_ARG, "tokenizer: tokenizer not loaded");
    if (len > (size_t)INT_MAX / 2) return cllm__fail(err, CLLM_ERR_LIMIT, "tokenizer: text of %zu bytes is too long (limit %d)", len, INT_MAX / 2);
    if ((bad = cllm__utf8_check(text, len)) != len)
        return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer: the text is not valid UTF-8 at byte %zu", bad + 1);
    memset(&e, 0, sizeof e);
    if (add_special_tokens) for (i = 0; i < (int)stbds_arrlen(p->post_before); i++) cllm__emit(&e, p->post_before[i], 0, 0);
    /* 1. added tokens on the raw text */
    cllm__split_added(p, text, 0, len, 0, &e.raw);
    for (a = 0; a < (size_t)stbds_arrlen(e.raw); a++) {
        cllm__seg sg = e.raw[a];
        size_t ns;
        if (sg.id >= 0) { cllm__emit(&e, sg.id, sg.s, sg.e); continue; }
        /* 2. normalize this piece (offsets stay those of the original text) */
        ns = e.nt.b.n;
        if (p->nfc) cllm__nfc(p->comp, p->ncomp, text + sg.s, sg.e - sg.s, sg.s, &e.nt);
        else for (b = sg.s; b < sg.e; b++) cllm__ntext_add(&e.nt, text + b, 1, b, b + 1);
        /* 3. added tokens with normalized: true, on the normalized text */
        stbds_arrsetlen(e.norm, 0);
        if (p->any_normalized_added) cllm__split_added(p, e.nt.b.p, ns, e.nt.b.n, 1, &e.norm);
        else { cllm__seg t; t.s = ns; t.e = e.nt.b.n; t.id = -1; stbds_arrput(e.norm, t); }
        for (b = 0; b < (size_t)stbds_arrlen(e.norm); b++) {
            cllm__seg q = e.norm[b];
            if (q.id >= 0) cllm__emit(&e, q.id, e.nt.os[q.s], e.nt.oe[q.e - 1]);
            else if (q.e > q.s) cllm__encode_text(p, &e, q.s, q.e);     /* 4-5. pre-tokenize, BPE */
        }
    }
    if (add_special_tokens) for (i = 0; i < (int)stbds_arrlen(p->post_after); i++) cllm__emit(&e, p->post_after[i], 0, 0);
    if (e.nt.b.oom || e.tmp.oom || e.bytes.oom) { cllm__enc_free(&e); return cllm__fail(err, CLLM_ERR_NOMEM, "tokenizer: out of memory"); }
    /* hand the results over as plain CLLM_MALLOC buffers */
    *n = (int)stbds_arrlen(e.ids);
    *ids = (int *)cllm__calloc((size_t)*n + 1, sizeof(int));
    if (offsets) *offsets = (int *)cllm__calloc(2 * (size_t)*n + 1, sizeof(int));
    if (!*ids || (offsets && !*offsets)) {
        CLLM_FREE(*ids); *ids = NULL; *n = 0;
        if (offsets) { CLLM_FREE(*offsets); *offsets = NULL; }
        cllm__enc_free(&e);
        return cllm__fail(err, CLLM_ERR_NOMEM, "tokenizer: out of memory");
    }
    if (*n) memcpy(*ids, e.ids, (size_t)*n * sizeof(int));
    if (offsets && *n) memcpy(*offsets, e.offs, 2 * (size_t)*n * sizeof(int));
    cllm__enc_free(&e);
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- Decoding -------------------------------------------------------------------------------- */

/* Appends the bytes of ids (skipping unknown ids and, if asked, special tokens). */
static void cllm__decode_bytes(const struct cllm__tok *p, const int *ids, int n, int skip_special, cllm__buf *out) {
    int i;
    for (i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= p->n_ids || p->tok_bytes[id].off == CLLM__NO_STR) continue;
        if (skip_special && p->special[id]) continue;
        cllm__buf_add(out, p->pool.p + p->tok_bytes[id].off, p->tok_bytes[id].len);
    }
}

CLLMDEF cllm_result cllm_tokenizer_decode(const cllm_tokenizer *tok, const int *ids, int n, int skip_special,
                                          char **text, size_t *len, cllm_err *err) {
    cllm__buf raw, out;
    *text = NULL;
    if (len) *len = 0;
    memset(&raw, 0, sizeof raw); memset(&out, 0, sizeof out);
    if (!tok || !tok->priv) return cllm__fail(err, CLLM_ERR_ARG, "tokenizer: tokenizer not loaded");
    cllm__decode_bytes(tok->priv, ids, n, skip_special, &raw);
    cllm__buf_reserve(&out, raw.n);
    cllm__utf8_lossy((const unsigned char *)raw.p, raw.n, 1, &out, NULL);
    CLLM_FREE(raw.p);
    if (raw.oom || out.oom) { CLLM_FREE(out.p); return cllm__fail(err, CLLM_ERR_NOMEM, "tokenizer: out of memory"); }
    *text = out.p;
    if (len) *len = out.n;
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF void cllm_decode_stream_init(cllm_decode_stream *s, const cllm_tokenizer *tok, int skip_special) {
    memset(s, 0, sizeof *s);
    s->tok = tok;
    s->skip_special = skip_special;
}

/* Decodes pending bytes + the new token's bytes; an unfinished character stays pending. */
static cllm_result cllm__stream_step(cllm_decode_stream *s, const int *ids, int n, int final, const char **out, size_t *out_len, cllm_err *err) {
    cllm__buf raw, o;
    size_t used;
    memset(&raw, 0, sizeof raw); memset(&o, 0, sizeof o);
    if (!s->tok || !s->tok->priv) return cllm__fail(err, CLLM_ERR_ARG, "decode stream: tokenizer not loaded");
    cllm__buf_add(&raw, s->pending, (size_t)s->n_pending);
    cllm__decode_bytes(s->tok->priv, ids, n, s->skip_special, &raw);
    o.p = s->buf; o.cap = s->cap;
    cllm__buf_reserve(&o, raw.n);
    used = cllm__utf8_lossy((const unsigned char *)raw.p, raw.n, final, &o, NULL);
    s->n_pending = (int)(raw.n - used);                  /* at most 3 bytes of one character */
    if (s->n_pending) memcpy(s->pending, raw.p + used, (size_t)s->n_pending);
    CLLM_FREE(raw.p);
    s->buf = o.p; s->cap = o.cap;
    if (raw.oom || o.oom) return cllm__fail(err, CLLM_ERR_NOMEM, "decode stream: out of memory");
    *out = o.p ? o.p : "";
    *out_len = o.n;
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_decode_stream_push(cllm_decode_stream *s, int id, const char **out, size_t *out_len, cllm_err *err) {
    return cllm__stream_step(s, &id, 1, 0, out, out_len, err);
}

CLLMDEF cllm_result cllm_decode_stream_flush(cllm_decode_stream *s, const char **out, size_t *out_len, cllm_err *err) {
    return cllm__stream_step(s, NULL, 0, 1, out, out_len, err);
}

CLLMDEF void cllm_decode_stream_free(cllm_decode_stream *s) {
    CLLM_FREE(s->buf);
    memset(s, 0, sizeof *s);
}

/* -------------------------------------------------------------------------------------------- */
/* Chat templates and assistant masks                                                           */
/* -------------------------------------------------------------------------------------------- */

/* Each supported template is written out in C below, line for line with its Jinja source, for
   conversations of system / user / assistant messages (tool calls and tool roles are refused).
   While rendering we record the byte spans a model should learn to produce; the text is then
   tokenized once and a token is trainable when its first byte lies in such a span. Tokenizing
   pieces separately would be wrong: BPE pre-tokens can straddle a header and the content. */

static const char *cllm__smollm2_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
static const char *cllm__qwen25_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
static const char *cllm__plain_chatml =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Recognises a template by text that only that family has. A template we do not recognise is
   not guessed at: rendering then fails and names it. */
static int cllm__detect_chat_family(struct cllm__tok *p, const char *t) {
    const char *s = t;
    size_t n;
    if (strstr(t, "<|start_header_id|>") && strstr(t, "<|end_header_id|>")) {
        if (strstr(t, "Cutting Knowledge Date: December 2023") && strstr(t, "Today Date: ") && strstr(t, "date_string"))
            return CLLM_CHAT_LLAMA31;
        if (strstr(t, "bos_token + content") && strstr(t, "message['content'] | trim") && !strstr(t, "tool")) {
            /* the first Llama-3 release appends the assistant header unconditionally */
            p->chat_gen_always = !strstr(t, "{% if add_generation_prompt %}");
            return CLLM_CHAT_LLAMA3;
        }
        return CLLM_CHAT_NONE;
    }
    if (!strstr(t, "<|im_start|>")) return CLLM_CHAT_NONE;
    if (strstr(t, "enable_thinking") && strstr(t, "reasoning_content") && strstr(t, "last_query_index")) return CLLM_CHAT_QWEN3;
    if (strstr(t, cllm__qwen25_system) && !strstr(t, "<think>")) {     /* with or without its tools part */
        p->chat_default_system = cllm__qwen25_system;
        return CLLM_CHAT_CHATML;
    }
    if (strstr(t, cllm__smollm2_system) && strstr(t, "loop.first and messages[0]['role'] != 'system'")) {
        p->chat_default_system = cllm__smollm2_system;
        return CLLM_CHAT_CHATML;
    }
    while (*s == ' ' || *s == '\n') s++;                 /* the classic ChatML template, exactly */
    n = strlen(cllm__plain_chatml);
    if (strncmp(s, cllm__plain_chatml, n) == 0) {
        for (s += n; *s == ' ' || *s == '\n'; s++) {}
        if (!*s) return CLLM_CHAT_CHATML;
    }
    return CLLM_CHAT_NONE;
}

CLLMDEF const char *cllm_chat_family_name(int family) {
    switch (family) {
    case CLLM_CHAT_CHATML:  return "chatml";
    case CLLM_CHAT_QWEN3:   return "qwen3";
    case CLLM_CHAT_LLAMA3:  return "llama3";
    case CLLM_CHAT_LLAMA31: return "llama3.1";
    default:                return "none";
    }
}

/* The rendered text and its trainable spans [s, e) (stb_ds array of pairs, in order). */
typedef struct cllm__render { cllm__buf text; size_t *spans; } cllm__render;

static void cllm__span_begin(cllm__render *r) { stbds_arrput(r->spans, r->text.n); }
static void cllm__span_end(cllm__render *r) { stbds_arrput(r->spans, r->text.n); }

/* Python's str.isspace(), which Jinja's trim and Python's strip() use: White_Space plus the
   information separators U+001C..U+001F. */
static int cllm__py_space(uint32_t cp) { return (cllm__uni_class(cp) & CLLM__U_SPACE) || (cp >= 0x1C && cp <= 0x1F); }

/* s[*b, *e) with Python-whitespace (or, if only_nl, '\n') removed on the chosen sides. */
static void cllm__strip(const char *s, size_t *b, size_t *e, int left, int right, int only_nl) {
    uint32_t cp;
    if (left)
        while (*b < *e) {
            int l = cllm__utf8_next((const unsigned char *)s + *b, *e - *b, &cp);
            if (!l || !(only_nl ? cp == '\n' : cllm__py_space(cp))) break;
            *b += (size_t)l;
        }
    if (right)
        while (*e > *b) {
            size_t j = *e - 1;
            while (j > *b && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
            if (!cllm__utf8_next((const unsigned char *)s + j, *e - j, &cp) || !(only_nl ? cp == '\n' : cllm__py_space(cp))) break;
            *e = j;
        }
}

/* Python's str.find / rfind of needle in s[b, e); returns the index or (size_t)-1. */
static size_t cllm__find(const char *s, size_t b, size_t e, const char *needle, int last) {
    size_t n = strlen(needle), i, found = (size_t)-1;
    for (i = b; i + n <= e; i++)
        if (memcmp(s + i, needle, n) == 0) { found = i; if (!last) break; }
    return found;
}

static int cllm__role_is(const cllm_message *m, const char *role) { return strcmp(m->role, role) == 0; }

/* ChatML: SmolLM2 (default system prompt when messages[0] is not a system message, inside the
   loop), Qwen2.5 (the same, before the loop, with its own prompt) and the classic template. */
static cllm_result cllm__render_chatml(const struct cllm__tok *p, const cllm_message *m, int n, const cllm_render_opts *o, cllm__render *r, cllm_err *err) {
    int i;
    if (p->chat_default_system && (n == 0 || !cllm__role_is(&m[0], "system")) && (n > 0 || p->chat_default_system == cllm__qwen25_system)) {
        cllm__buf_str(&r->text, "<|im_start|>system\n");
        cllm__buf_str(&r->text, p->chat_default_system);
        cllm__buf_str(&r->text, "<|im_end|>\n");
    }
    for (i = 0; i < n; i++) {
        int asst = cllm__role_is(&m[i], "assistant");
        if (p->chat_default_system == cllm__qwen25_system && !asst && !cllm__role_is(&m[i], "user") && !cllm__role_is(&m[i], "system"))
            return cllm__fail(err, CLLM_ERR_UNSUPPORTED,
                              "chat template (Qwen2.5): role '%.*s' is not supported (system, user, assistant)",
                              CLLM__CUT(m[i].role, 40));
        cllm__buf_str(&r->text, "<|im_start|>");
        cllm__buf_str(&r->text, m[i].role);
        cllm__buf_str(&r->text, "\n");
        if (asst) cllm__span_begin(r);
        cllm__buf_str(&r->text, m[i].content);
        cllm__buf_str(&r->text, "<|im_end|>");
        if (asst) cllm__span_end(r);
        cllm__buf_str(&r->text, "\n");
    }
    if (o->add_generation_prompt) cllm__buf_str(&r->text, "<|im_start|>assistant\n");
    return CLLM_OK;
}

/* Qwen3 without tools. An assistant message after the last user query gets a <think> block
   (empty unless its content carries <think>...</think>); earlier ones lose their reasoning. */
static cllm_result cllm__render_qwen3(const cllm_message *m, int n, const cllm_render_opts *o, cllm__render *r, cllm_err *err) {
    int i, last_query = n - 1;
    for (i = n - 1; i >= 0; i--) {                        /* ns.last_query_index */
        const char *c = m[i].content;
        size_t len = strlen(c);
        int tool_resp = strncmp(c, "<tool_response>", 15) == 0 && len >= 16 && strcmp(c + len - 16, "</tool_response>") == 0;
        if (cllm__role_is(&m[i], "user") && !tool_resp) { last_query = i; break; }
    }
    if (n > 0 && cllm__role_is(&m[0], "system")) {
        cllm__buf_str(&r->text, "<|im_start|>system\n");
        cllm__buf_str(&r->text, m[0].content);
        cllm__buf_str(&r->text, "<|im_end|>\n");
    }
    for (i = 0; i < n; i++) {
        const char *c = m[i].content;
        size_t len = strlen(c), cb = 0, ce = len, rb = 0, re = 0, k;
        if (cllm__role_is(&m[i], "user") || (cllm__role_is(&m[i], "system") && i > 0)) {
            cllm__buf_str(&r->text, "<|im_start|>");
            cllm__buf_str(&r->text, m[i].role);
            cllm__buf_str(&r->text, "\n");
            cllm__buf_str(&r->text, c);
            cllm__buf_str(&r->text, "<|im_end|>\n");
            continue;
        }
        if (cllm__role_is(&m[i], "system")) continue;
        if (!cllm__role_is(&m[i], "assistant"))
            return cllm__fail(err, CLLM_ERR_UNSUPPORTED,
                              "chat template (Qwen3): role '%.*s' is not supported (system, user, assistant)",
                              CLLM__CUT(m[i].role, 40));
        if (cllm__find(c, 0, len, "</think>", 0) != (size_t)-1) {
            /* content = c.split('</think>')[-1].lstrip('\n');
               reasoning = c.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
            cb = cllm__find(c, 0, len, "</think>", 1) + 8;
            cllm__strip(c, &cb, &ce, 1, 0, 1);
            re = cllm__find(c, 0, len, "</think>", 0);
            cllm__strip(c, &rb, &re, 0, 1, 1);
            k = cllm__find(c, rb, re, "<think>", 1);
            if (k != (size_t)-1) rb = k + 7;
            cllm__strip(c, &rb, &re, 1, 0, 1);
        }
        cllm__buf_str(&r->text, "<|im_start|>assistant\n");
        if (i > last_query && (i == n - 1 || re > rb)) {
            size_t sb = rb, se = re;
            cllm__strip(c, &sb, &se, 1, 1, 1);           /* reasoning_content.strip('\n') */
            if (se > sb) cllm__span_begin(r);            /* the model writes a non-empty think block */
            cllm__buf_str(&r->text, "<think>\n");
            cllm__buf_add(&r->text, c + sb, se - sb);
            cllm__buf_str(&r->text, "\n</think>\n\n");
            if (se == sb) cllm__span_begin(r);
            cllm__strip(c, &cb, &ce, 1, 0, 1);           /* content.lstrip('\n') */
        } else cllm__span_begin(r);
        cllm__buf_add(&r->text, c + cb, ce - cb);
        cllm__buf_str(&r->text, "<|im_end|>");
        cllm__span_end(r);
        cllm__buf_str(&r->text, "\n");
    }
    if (o->add_generation_prompt) {
        cllm__buf_str(&r->text, "<|im_start|>assistant\n");
        if (!o->enable_thinking) cllm__buf_str(&r->text, "<think>\n\n</think>\n\n");
    }
    return CLLM_OK;
}

/* One Llama-3 turn: <|start_header_id|>role<|end_header_id|>\n\n content|trim <|eot_id|> */
static void cllm__llama_turn(const cllm_message *m, cllm__render *r) {
    size_t b = 0, e = strlen(m->content);
    int asst = cllm__role_is(m, "assistant");
    cllm__strip(m->content, &b, &e, 1, 1, 0);
    cllm__buf_str(&r->text, "<|start_header_id|>");
    cllm__buf_str(&r->text, m->role);
    cllm__buf_str(&r->text, "<|end_header_id|>\n\n");
    if (asst) cllm__span_begin(r);
    cllm__buf_add(&r->text, m->content + b, e - b);
    cllm__buf_str(&r->text, "<|eot_id|>");
    if (asst) cllm__span_end(r);
}

static cllm_result cllm__render_llama(const cllm_tokenizer *tok, int family, const cllm_message *m, int n, const cllm_render_opts *o, cllm__render *r, cllm_err *err) {
    int i, first = 0;
    if (family == CLLM_CHAT_LLAMA31) {
        size_t b = 0, e = 0;
        if (tok->bos_token) cllm__buf_str(&r->text, tok->bos_token);
        if (n > 0 && cllm__role_is(&m[0], "system")) { e = strlen(m[0].content); cllm__strip(m[0].content, &b, &e, 1, 1, 0); first = 1; }
        cllm__buf_str(&r->text, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ");
        cllm__buf_str(&r->text, o->date_string);
        cllm__buf_str(&r->text, "\n\n");
        if (first) cllm__buf_add(&r->text, m[0].content + b, e - b);
        cllm__buf_str(&r->text, "<|eot_id|>");
    }
    for (i = first; i < n; i++) {
        if (family == CLLM_CHAT_LLAMA31 && (cllm__role_is(&m[i], "ipython") || cllm__role_is(&m[i], "tool")))
            return cllm__fail(err, CLLM_ERR_UNSUPPORTED,
                              "chat template (Llama-3.1): role '%.*s' is not supported (tool calls are not rendered)",
                              CLLM__CUT(m[i].role, 40));
        if (family == CLLM_CHAT_LLAMA3 && i == 0 && tok->bos_token) cllm__buf_str(&r->text, tok->bos_token);
        cllm__llama_turn(&m[i], r);
    }
    if (o->add_generation_prompt || (family == CLLM_CHAT_LLAMA3 && tok->priv->chat_gen_always))
        cllm__buf_str(&r->text, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_chat_render(const cllm_tokenizer *tok, const cllm_message *msgs, int n, const cllm_render_opts *opts,
                                     char **text, int **ids, unsigned char **mask, int *n_ids, cllm_err *err) {
    cllm_render_opts o;
    cllm__render r;
    cllm_result rc;
    int i, nt = 0, *tid = NULL, *offs = NULL;
    size_t sp = 0;
    if (text) *text = NULL;
    if (ids) *ids = NULL;
    if (mask) *mask = NULL;
    if (n_ids) *n_ids = 0;
    if (!tok || !tok->priv) return cllm__fail(err, CLLM_ERR_ARG, "chat template: tokenizer not loaded");
    if (n < 0 || (n > 0 && !msgs)) return cllm__fail(err, CLLM_ERR_ARG, "chat template: bad message list");
    for (i = 0; i < n; i++) {
        size_t len;
        size_t bad;
        if (!msgs[i].role || !msgs[i].content) return cllm__fail(err, CLLM_ERR_ARG, "chat template: message %d has no role or content", i);
        len = strlen(msgs[i].content);
        if ((bad = cllm__utf8_check(msgs[i].content, len)) < len)     /* where the user can find it, not in the render */
            return cllm__fail(err, CLLM_ERR_FORMAT, "message %d (%s): \"content\" is not valid UTF-8 at byte %zu", i,
                              msgs[i].role, bad + 1);
    }
    if (!tok->chat_template) return cllm__fail(err, CLLM_ERR_FORMAT, "the tokenizer has no chat_template (tokenizer_config.json)");
    if (!tok->chat_family)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED,
                          "chat template not supported (ChatML/SmolLM2/Qwen2.5, Qwen3, Llama-3, Llama-3.1+ are): "
                          "\"%.*s...\"",
                          CLLM__CUT(tok->chat_template, 60));
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    o.date_string = cllm__def(o.date_string, "26 Jul 2024");
    memset(&r, 0, sizeof r);
    if (tok->chat_family == CLLM_CHAT_CHATML) rc = cllm__render_chatml(tok->priv, msgs, n, &o, &r, err);
    else if (tok->chat_family == CLLM_CHAT_QWEN3) rc = cllm__render_qwen3(msgs, n, &o, &r, err);
    else rc = cllm__render_llama(tok, tok->chat_family, msgs, n, &o, &r, err);
    if (rc == CLLM_OK && r.text.oom) rc = cllm__fail(err, CLLM_ERR_NOMEM, "chat template: out of memory");
    if (rc == CLLM_OK && !r.text.p) cllm__buf_add(&r.text, "", 0);
    if (rc == CLLM_OK && (ids || mask || n_ids))
        rc = cllm_tokenizer_encode(tok, r.text.p, r.text.n, 0, &tid, &nt, &offs, err);
    if (rc == CLLM_OK && mask) {
        *mask = (unsigned char *)cllm__calloc((size_t)nt + 1, 1);
        if (!*mask) rc = cllm__fail(err, CLLM_ERR_NOMEM, "chat template: out of memory");
        for (i = 0; rc == CLLM_OK && i < nt; i++) {        /* spans and tokens are both in order */
            size_t start = (size_t)offs[2 * i];
            while (sp < (size_t)stbds_arrlen(r.spans) && r.spans[sp + 1] <= start) sp += 2;
            (*mask)[i] = sp < (size_t)stbds_arrlen(r.spans) && r.spans[sp] <= start;
        }
    }
    CLLM_FREE(offs);
    stbds_arrfree(r.spans);
    if (rc != CLLM_OK) { CLLM_FREE(r.text.p); CLLM_FREE(tid); if (mask) { CLLM_FREE(*mask); *mask = NULL; } return rc; }
    if (text) *text = r.text.p; else CLLM_FREE(r.text.p);
    if (ids) *ids = tid; else CLLM_FREE(tid);
    if (n_ids) *n_ids = nt;
    cllm__ok(err);
    return CLLM_OK;
}

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
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "KV cache: the model is not loaded");
    if (n_seq < 1 || max_len < 1) return cllm__fail(err, CLLM_ERR_ARG, "KV cache: n_seq (%d) and max_len (%d) must be at least 1", n_seq, max_len);
    gb = 2.0 * c->n_layers * (double)n_seq * max_len * c->n_kv_heads * c->head_dim * sizeof(cllm_float) / 1e9;
    if (gb > 1024 || (double)n_seq * max_len > 1e10)
        return cllm__fail(err, CLLM_ERR_LIMIT, "KV cache: %d sequences x %d positions need %.0f GB; use fewer or shorter sequences", n_seq, max_len, gb);
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
        return cllm__fail(err, CLLM_ERR_NOMEM, "KV cache: out of memory for %d sequences x %d positions (%.2f GB)", n_seq, max_len, gb);
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
        return cllm__fail(err, CLLM_ERR_ARG, "KV cache copy: sequences %d -> %d, the cache has %d", src, dst, kv->n_seq);
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
        return cllm__fail(err, CLLM_ERR_ARG, "%s: the KV cache was not made for this model", fn);
    return CLLM_OK;
}

/* Attention of each row r and head h over its sequence's cached positions 0..row_pos[r]:
   att[r, h] = sum_j softmax_j(q[r, h] . k[j] / sqrt(hd)) v[j], with the k, v of head h's group.
   The fast path (OpenMP) gives every thread its own score row and splits the (row, head) pairs;
   each pair is computed exactly as the serial loop computes it. */
static void cllm__kv_attend(const cllm_kv_cache *kv, int l, cllm__kv_work *w, int N, int H, int KV, int hd, cllm_float scale) {
    int Q = H * hd, K = KV * hd, rep = H / KV, rh;
    cllm_float *scores = w->s;               /* one row of max_len scores (serial) */
#ifdef CLLM__OMP
    int threads = cllm__max_threads();
    double work = (double)N * H * hd * (kv->row_pos[N - 1] + 1);
    if (threads > 1 && work >= 32768) scores = (cllm_float *)CLLM_MALLOC(sizeof(cllm_float) * (size_t)threads * (size_t)kv->max_len);
    if (!scores) scores = w->s;
#pragma omp parallel for schedule(static) if(scores != w->s)
#endif
    for (rh = 0; rh < N * H; rh++) {
        int r = rh / H, h = rh % H;
        size_t kv0 = cllm__kv_offset(kv, l, kv->row_seq[r]) + (size_t)(h / rep) * hd;
        size_t qo = (size_t)r * Q + (size_t)h * hd;
        cllm_float *s = scores == w->s ? w->s : scores + (size_t)cllm__thread_num() * (size_t)kv->max_len;
        cllm__attend_row(w->att + qo, w->q + qo, kv->k + kv0, kv->v + kv0, (size_t)K, kv->row_pos[r] + 1, NULL, hd, scale, s);
    }
    if (scores != w->s) CLLM_FREE(scores);
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
    int Q = H * hd, K = KV * hd, l, r, i;
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
        cllm__kv_attend(kv, l, w, N, H, KV, hd, scale);
        cllm__matmul_forward(w->h, w->att, p->wo + (size_t)l * C * Q, NULL, N, Q, C);
        cllm__lora_forward(m, CLLM__LT_O, l, w->h, w->att, N);
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
    cllm_result rc = cllm__kv_check(m, kv, "KV cache prefill", err);
    if (rc != CLLM_OK) return rc;
    if (seq < 0 || seq >= kv->n_seq) return cllm__fail(err, CLLM_ERR_ARG, "KV cache prefill: sequence %d, the cache has %d", seq, kv->n_seq);
    if (n < 0 || (n > 0 && !ids)) return cllm__fail(err, CLLM_ERR_ARG, "KV cache prefill: need n >= 0 token ids");
    if (n > kv->max_len - kv->len[seq])
        return cllm__fail(err, CLLM_ERR_LIMIT, "KV cache prefill: sequence %d holds %d of %d positions, %d more do not fit (make the cache longer)", seq, kv->len[seq], kv->max_len, n);
    for (r = 0; r < n; r++) if ((rc = cllm__kv_check_id(m, ids[r], "KV cache prefill", seq, err)) != CLLM_OK) return rc;
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
    cllm_result rc = cllm__kv_check(m, kv, "KV cache step", err);
    if (rc != CLLM_OK) return rc;
    if (!ids) return cllm__fail(err, CLLM_ERR_ARG, "KV cache step: ids is NULL");
    for (s = 0; s < kv->n_seq; s++) {
        if (ids[s] < 0) continue;
        if ((rc = cllm__kv_check_id(m, ids[s], "KV cache step", s, err)) != CLLM_OK) return rc;
        if (kv->len[s] >= kv->max_len)
            return cllm__fail(err, CLLM_ERR_LIMIT, "KV cache step: sequence %d already fills all %d positions of the cache", s, kv->max_len);
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
    if (!s || !scores) return cllm__fail(err, CLLM_ERR_ARG, "sampler: sampler and scores are required");
    if ((rc = cllm__sampler_check(s, err)) != CLLM_OK || (rc = cllm__logits_check(logits, V, err)) != CLLM_OK) return rc;
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand);
    if (!cand) return cllm__fail(err, CLLM_ERR_NOMEM, "sampler: out of memory");
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
    if (!s || !rng || !token) return cllm__fail(err, CLLM_ERR_ARG, "sampler: sampler, rng and token are required");
    if ((rc = cllm__sampler_check(s, err)) != CLLM_OK || (rc = cllm__logits_check(logits, V, err)) != CLLM_OK) return rc;
    scores = (double *)cllm__calloc((size_t)V, sizeof *scores);
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand);
    if (!scores || !cand) { CLLM_FREE(scores); CLLM_FREE(cand); return cllm__fail(err, CLLM_ERR_NOMEM, "sampler: out of memory"); }
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
    if (!out || n_samples < 1 || n_samples > 65536) return cllm__fail(err, CLLM_ERR_ARG, "generation: n_samples must be in [1, 65536] with an output array");
    memset(out, 0, (size_t)n_samples * sizeof *out);
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "generation: the model is not loaded");
    if (!prompt || n_prompt < 1) return cllm__fail(err, CLLM_ERR_ARG, "generation: the prompt needs at least one token (e.g. BOS)");
    if (g.max_new_tokens < 1 || g.max_new_tokens > INT_MAX / 2 - n_prompt) return cllm__fail(err, CLLM_ERR_ARG, "generation: max_new_tokens must be positive and fit an int with the prompt");
    if (g.eos_ids && g.n_eos < 0) return cllm__fail(err, CLLM_ERR_ARG, "generation: n_eos must be >= 0");
    if ((rc = cllm__sampler_check(&g.sampler, err)) != CLLM_OK) return rc;
    for (s = 0; s < n_prompt; s++)
        if (prompt[s] < 0 || prompt[s] >= V) return cllm__fail(err, CLLM_ERR_ARG, "generation: prompt token %d is id %d, outside the vocabulary [0, %d)", s, prompt[s], V);

    rc = cllm_kv_cache_init(&kv, m, n_samples, n_prompt + g.max_new_tokens - 1, err);
    if (rc != CLLM_OK) return rc;
    logits = (cllm_float *)cllm__calloc((size_t)n_samples * (size_t)V, sizeof *logits);
    scores = (double *)cllm__calloc((size_t)V, sizeof *scores);
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand);
    rngs = (cllm_rng *)cllm__calloc((size_t)n_samples, sizeof *rngs);
    cur = (int *)cllm__calloc((size_t)n_samples, sizeof *cur);
    if (!logits || !scores || !cand || !rngs || !cur) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "generation: out of memory"); goto done; }
    for (s = 0; s < n_samples; s++) {
        out[s].ids = (int *)cllm__calloc((size_t)g.max_new_tokens, sizeof(int));
        out[s].logprobs = (cllm_float *)cllm__calloc((size_t)g.max_new_tokens, sizeof(cllm_float));
        if (!out[s].ids || !out[s].logprobs) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "generation: out of memory for %d x %d tokens", n_samples, g.max_new_tokens); goto done; }
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

/* ---- secrets: the one redaction point ----------------------------------------------------------
   Every live client registers its API key here (cllm_client_init; cllm_client_free takes it out).
   Two kinds of text pass through cllm__scrub: every error message (cllm__fail does it, whatever
   path formatted the message), and the text an endpoint sends (a reply's content, the fields read
   from a model's JSON answer). A run of 8 or more bytes of a key, starting anywhere in the key
   (the whole key when it is shorter), becomes "[redacted]": an endpoint may echo a key whole or
   cut. Received text is scrubbed only of keys that look like secrets (16 bytes or more, with a
   letter and a digit): a placeholder such as "sk-no-key-required" is made of words that text
   may hold. The registry follows curl_global_init's rule: change it (init or free a client) only
   while no other thread uses the library. */
#define CLLM__KEY_FRAGMENT 8
static const char **cllm__secrets;            /* the registered keys (borrowed from the clients) */
static int cllm__n_secrets, cllm__cap_secrets;
static unsigned char cllm__secret_pairs[65536 / 8]; /* byte pairs a key run can start with      */

static void cllm__secret_pairs_rebuild(void) {
    int k;
    memset(cllm__secret_pairs, 0, sizeof cllm__secret_pairs);
    for (k = 0; k < cllm__n_secrets; k++) {
        const unsigned char *key = (const unsigned char *)cllm__secrets[k];
        size_t i, klen = strlen(cllm__secrets[k]);
        unsigned x;
        for (i = 0; i + 1 < klen; i++) {
            unsigned pair = (unsigned)key[i] << 8 | key[i + 1];
            cllm__secret_pairs[pair >> 3] |= (unsigned char)(1u << (pair & 7));
        }
        for (x = 0; klen == 1 && x < 256; x++) {  /* a one-byte key: any pair starting with it */
            unsigned pair = (unsigned)key[0] << 8 | x;
            cllm__secret_pairs[pair >> 3] |= (unsigned char)(1u << (pair & 7));
        }
    }
}

/* Registers a key (borrowed: it must live until cllm__secret_forget). 0 when out of memory. */
static int cllm__secret_register(const char *key) {
    if (!key || !*key) return 1;
    if (cllm__n_secrets == cllm__cap_secrets) {
        int cap = cllm__cap_secrets ? 2 * cllm__cap_secrets : 4;
        const char **grown = (const char **)CLLM_REALLOC((void *)cllm__secrets, (size_t)cap * sizeof *grown);
        if (!grown) return 0;
        cllm__secrets = grown;
        cllm__cap_secrets = cap;
    }
    cllm__secrets[cllm__n_secrets++] = key;
    cllm__secret_pairs_rebuild();
    return 1;
}

static void cllm__secret_forget(const char *key) {
    int k;
    for (k = 0; key && k < cllm__n_secrets; k++) {
        if (cllm__secrets[k] != key) continue;
        cllm__secrets[k] = cllm__secrets[--cllm__n_secrets];
        break;
    }
    if (cllm__n_secrets == 0) {
        CLLM_FREE((void *)cllm__secrets);
        cllm__secrets = NULL;
        cllm__cap_secrets = 0;
    }
    cllm__secret_pairs_rebuild();
}

/* Does the key look like a secret rather than a placeholder (see above)? */
static int cllm__key_is_secret(const char *key, size_t klen) {
    int letter = 0, digit = 0;
    size_t i;
    for (i = 0; i < klen; i++) {
        letter |= isalpha((unsigned char)key[i]) != 0;
        digit |= isdigit((unsigned char)key[i]) != 0;
    }
    return klen >= 16 && letter && digit;
}

/* The length of the longest prefix of s[0..len) found anywhere in key[0..klen). */
static size_t cllm__key_run(const char *key, size_t klen, const char *s, size_t len) {
    size_t best = 0, o, l;
    for (o = 0; o < klen; o++) {
        for (l = 0; l < len && o + l < klen && s[l] == key[o + l]; l++) {}
        if (l > best) best = l;
    }
    return best;
}

/* The offset of the first key run in s[0..n) (n if none) and its length in *run. in_text: 1 for
   received text (keys that look like secrets only), 0 for messages (every key). */
static size_t cllm__secret_find(const char *s, size_t n, int in_text, size_t *run) {
    size_t i;
    *run = 0;
    if (cllm__n_secrets == 0) return n;
    for (i = 0; i < n; i++) {
        int k;
        if (i + 1 < n) {
            unsigned pair = (unsigned)(unsigned char)s[i] << 8 | (unsigned char)s[i + 1];
            if (!(cllm__secret_pairs[pair >> 3] & (1u << (pair & 7)))) continue;
        }
        for (k = 0; k < cllm__n_secrets; k++) {
            const char *key = cllm__secrets[k];
            size_t klen = strlen(key), r;
            if (in_text && !cllm__key_is_secret(key, klen)) continue;
            r = cllm__key_run(key, klen, s + i, n - i);
            if ((r >= CLLM__KEY_FRAGMENT || r == klen) && r > *run) *run = r;
        }
        if (*run) return i;
    }
    return n;
}

/* Appends s[0..n) to out with every key run replaced by "[redacted]"; returns how many. */
static size_t cllm__scrub(cllm__buf *out, const char *s, size_t n, int in_text) {
    size_t count = 0, run, at;
    while ((at = cllm__secret_find(s, n, in_text, &run)) < n) {
        cllm__buf_add(out, s, at);
        cllm__buf_str(out, "[redacted]");
        s += at + run;
        n -= at + run;
        count++;
    }
    cllm__buf_add(out, s, n);
    return count;
}

/* s[0..n) as one line of valid UTF-8 without any key, into out[0..cap): invalid sequences become
   U+FFFD, key runs "[redacted]", control characters spaces; what does not fit is cut on a
   character boundary and ends in "...". */
static void cllm__clean_line(char *out, size_t cap, const char *s, size_t n) {
    cllm__buf valid, clean;
    size_t i, keep;
    if (cap == 0) return;
    memset(&valid, 0, sizeof valid);
    memset(&clean, 0, sizeof clean);
    cllm__buf_reserve(&valid, n);
    cllm__utf8_lossy((const unsigned char *)s, n, 1, &valid, NULL);
    cllm__buf_reserve(&clean, valid.n);
    cllm__scrub(&clean, valid.p ? valid.p : "", valid.n, 0);
    if (valid.oom || clean.oom) {
        snprintf(out, cap, "%s", "(out of memory while formatting this message)");
    } else {
        for (i = 0; i < clean.n; i++) if ((unsigned char)clean.p[i] < 0x20 || clean.p[i] == 0x7F) clean.p[i] = ' ';
        keep = cllm__utf8_prefix(clean.p ? clean.p : "", clean.n, cap - 1);
        if (keep < clean.n && cap > 4) keep = cllm__utf8_prefix(clean.p, clean.n, cap - 4);
        memcpy(out, clean.p ? clean.p : "", keep);
        if (keep < clean.n && cap > 4) {
            memcpy(out + keep, "...", 3);
            keep += 3;
        }
        out[keep] = 0;
    }
    CLLM_FREE(valid.p);
    CLLM_FREE(clean.p);
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

/* ---- conversations ------------------------------------------------------------------------- */

static int cllm__valid_role(const char *r) {
    return r && (strcmp(r, "system") == 0 || strcmp(r, "user") == 0 || strcmp(r, "assistant") == 0);
}

CLLMDEF int cllm_msg_incomplete(const cllm_msg_meta *meta) {
    return meta && (strcmp(meta->finish_reason, "length") == 0 || strcmp(meta->finish_reason, "content_filter") == 0);
}

CLLMDEF cllm_result cllm_conv_push_meta(cllm_conv *c, const char *role, const char *content, const cllm_msg_meta *meta,
                                        cllm_err *err) {
    char *r, *t;
    if (!c || !role || !content) return cllm__fail(err, CLLM_ERR_ARG, "conversation: conversation, role and content are required");
    if (c->n == c->cap || !c->meta) {
        int cap = c->n == c->cap ? (c->cap ? 2 * c->cap : 8) : c->cap;
        cllm_message *m;
        cllm_msg_meta *mm;
        if (c->cap > INT_MAX / 2) return cllm__fail(err, CLLM_ERR_LIMIT, "conversation: conversation too long");
        m = (cllm_message *)CLLM_REALLOC(c->msgs, (size_t)cap * sizeof *m);
        if (!m) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        c->msgs = m;
        mm = (cllm_msg_meta *)CLLM_REALLOC(c->meta, (size_t)cap * sizeof *mm);
        if (!mm) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        if (!c->meta) memset(mm, 0, (size_t)cap * sizeof *mm);      /* messages pushed before had none */
        c->meta = mm;
        c->cap = cap;
    }
    r = cllm__strdup(role); t = cllm__strdup(content);
    if (!r || !t) { CLLM_FREE(r); CLLM_FREE(t); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    c->msgs[c->n].role = r;
    c->msgs[c->n].content = t;
    if (meta) c->meta[c->n] = *meta;
    else memset(&c->meta[c->n], 0, sizeof c->meta[c->n]);
    c->n++;
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_conv_push(cllm_conv *c, const char *role, const char *content, cllm_err *err) {
    return cllm_conv_push_meta(c, role, content, NULL, err);
}

CLLMDEF void cllm_conv_free(cllm_conv *c) {
    int i;
    if (!c) return;
    for (i = 0; i < c->n; i++) { CLLM_FREE((void *)c->msgs[i].role); CLLM_FREE((void *)c->msgs[i].content); }
    CLLM_FREE(c->msgs);
    CLLM_FREE(c->meta);
    memset(c, 0, sizeof *c);
}

/* Message i's meta, or NULL when the conversation has none. */
static const cllm_msg_meta *cllm__conv_meta(const cllm_conv *c, int i) {
    return c->meta ? &c->meta[i] : NULL;
}

CLLMDEF cllm_result cllm_conv_copy(cllm_conv *dst, const cllm_conv *src, cllm_err *err) {
    int i;
    cllm_result rc;
    memset(dst, 0, sizeof *dst);
    for (i = 0; i < src->n; i++) {
        rc = cllm_conv_push_meta(dst, src->msgs[i].role, src->msgs[i].content, cllm__conv_meta(src, i), err);
        if (rc != CLLM_OK) { cllm_conv_free(dst); return rc; }
    }
    return CLLM_OK;
}

/* The number of messages a length limit cut off or a content filter blocked. */
static int cllm__conv_incomplete(const cllm_conv *c) {
    int i, k = 0;
    for (i = 0; i < c->n; i++) k += cllm_msg_incomplete(cllm__conv_meta(c, i));
    return k;
}

/* One message as {"role", "content"} (+ "finish_reason", "replaced" when known). */
static cJSON *cllm__message_json(const char *role, const char *content, const cllm_msg_meta *meta) {
    cJSON *m = cJSON_CreateObject();
    int ok = m && cJSON_AddStringToObject(m, "role", role) && cJSON_AddStringToObject(m, "content", content);
    if (ok && meta && meta->finish_reason[0])
        ok = cJSON_AddStringToObject(m, "finish_reason", meta->finish_reason) != NULL;
    if (ok && meta && meta->replaced > 0) ok = cJSON_AddNumberToObject(m, "replaced", meta->replaced) != NULL;
    if (!ok) { cJSON_Delete(m); return NULL; }
    return m;
}

CLLMDEF cJSON *cllm_conv_to_json(const cllm_conv *c) {
    cJSON *arr = cJSON_CreateArray();
    int i;
    if (!arr) return NULL;
    for (i = 0; i < c->n; i++) {
        cJSON *m = cllm__message_json(c->msgs[i].role, c->msgs[i].content, cllm__conv_meta(c, i));
        if (!m) goto oom;
        if (!cJSON_AddItemToArray(arr, m)) { cJSON_Delete(m); goto oom; }
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
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(m, "finish_reason");
        cllm_msg_meta meta;
        memset(&meta, 0, sizeof meta);
        if (!cllm__valid_role(role)) { cllm_conv_free(c); return cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"role\" must be \"system\", \"user\" or \"assistant\"", i); }
        if (!content) { cllm_conv_free(c); return cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"content\" must be a string", i); }
        if (fr && !cJSON_IsNull(fr) && !(cJSON_IsString(fr) && strlen(fr->valuestring) < sizeof meta.finish_reason)) {
            cllm_conv_free(c);
            return cllm__fail(err, CLLM_ERR_FORMAT,
                              "messages[%d]: \"finish_reason\" must be a string of at most %d bytes", i,
                              (int)sizeof meta.finish_reason - 1);
        }
        if (cJSON_IsString(fr)) strcpy(meta.finish_reason, fr->valuestring);
        if (!cllm__json_int(m, "replaced", 0, &meta.replaced) || meta.replaced < 0) {
            cllm_conv_free(c);
            return cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"replaced\" must be a count (an integer >= 0)", i);
        }
        if ((rc = cllm_conv_push_meta(c, role, content, &meta, err)) != CLLM_OK) { cllm_conv_free(c); return rc; }
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

/* ---- text received from endpoints: JSON escapes, UTF-8, API keys, size ----------------------- */

static int cllm__hex4(const char *s, unsigned *v) {
    int k;
    *v = 0;
    for (k = 0; k < 4; k++) {
        int ch = tolower((unsigned char)s[k]);
        int d = isdigit(ch) ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 : -1;
        if (d < 0) return 0;
        *v = *v << 4 | (unsigned)d;
    }
    return 1;
}

/* The \u escapes cJSON cannot take as they are, in the strings of the JSON text s[0..n):
     a UTF-16 surrogate without its other half: cJSON refuses the whole document for one, while
       Python's json reads it and JavaScript's TextEncoder and Rust's from_utf16_lossy turn it into
       U+FFFD; we do the same: the copy returned has \ufffd in its place (the same 6 bytes);
     \u0000: cJSON ends the string there, so whatever follows would be lost without a word.
   Counts both; returns the repaired copy, or NULL when there was no lone surrogate (or no memory:
   then *lone is left nonzero and the caller parses the original, which fails clearly). */
static char *cllm__json_escapes(const char *s, size_t n, size_t *lone, size_t *nul) {
    char *copy = NULL;
    size_t i;
    int in_str = 0;
    *lone = 0;
    *nul = 0;
    for (i = 0; i < n; i++) {
        unsigned v, w;
        if (!in_str) { in_str = s[i] == '"'; continue; }
        if (s[i] == '"') { in_str = 0; continue; }
        if (s[i] != '\\' || i + 1 >= n) continue;
        if (s[i + 1] != 'u' || i + 6 > n || !cllm__hex4(s + i + 2, &v)) { i++; continue; }
        if (v == 0) (*nul)++;
        if (v >= 0xD800 && v <= 0xDBFF && i + 12 <= n && s[i + 6] == '\\' && s[i + 7] == 'u' &&
            cllm__hex4(s + i + 8, &w) && w >= 0xDC00 && w <= 0xDFFF) {
            i += 11;                                  /* a pair: cJSON decodes it */
            continue;
        }
        if (v >= 0xD800 && v <= 0xDFFF) {
            (*lone)++;
            if (!copy && (copy = (char *)CLLM_MALLOC(n + 1)) != NULL) {
                memcpy(copy, s, n);
                copy[n] = 0;
            }
            if (copy) memcpy(copy + i, "\\ufffd", 6);
        }
        i += 5;
    }
    return copy;
}

/* A copy of the JSON text s[0..n) with every \u0000 escape inside a string written as \u0020. */
static char *cllm__json_nul_to_space(const char *s, size_t n) {
    char *copy = (char *)CLLM_MALLOC(n + 1);
    size_t i;
    int in_str = 0;
    if (!copy) return NULL;
    memcpy(copy, s, n);
    copy[n] = 0;
    for (i = 0; i < n; i++) {
        if (!in_str) { in_str = s[i] == '"'; continue; }
        if (s[i] == '"') { in_str = 0; continue; }
        if (s[i] != '\\' || i + 1 >= n) continue;
        if (i + 6 <= n && memcmp(s + i, "\\u0000", 6) == 0) memcpy(copy + i, "\\u0020", 6);
        i++;
    }
    return copy;
}

/* The bytes s[0..n) take inside a JSON string as cJSON writes them: 2 for " \ \b \f \n \r \t,
   6 for any other control character (\u00XX), 1 otherwise. */
static size_t cllm__json_escaped_len(const char *s, size_t n) {
    size_t i, total = 0;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\' || ch == '\b' || ch == '\f' || ch == '\n' || ch == '\r' || ch == '\t') total += 2;
        else if (ch < 0x20) total += 6;
        else total += 1;
    }
    return total;
}

/* About how many bytes a conversation takes as JSON: an upper bound, so a line that would be too
   long is caught before it is built. */
static size_t cllm__conv_json_bytes(const cllm_conv *c) {
    size_t total = 2;
    int i;
    for (i = 0; i < c->n; i++) total += cllm__json_escaped_len(c->msgs[i].content, strlen(c->msgs[i].content)) + 128;
    return total;
}

/* Text received from an endpoint as we keep it: valid UTF-8 (each invalid sequence becomes
   U+FFFD, counted in *replaced; cllm__utf8_lossy, the tokenizer's decoder too), without any API
   key (cllm__scrub), and small enough that a JSONL line holding it stays readable: written as
   JSON it must fit in CLLM__MAX_TEXT_JSON bytes. *text (owned, NUL-terminated) is replaced by
   the kept text; on failure it is freed and set to NULL. */
static cllm_result cllm__received_text(char **text, size_t *replaced, cllm_err *err) {
    size_t n = strlen(*text), run, escaped;
    cllm__buf out;
    memset(&out, 0, sizeof out);
    if (cllm__utf8_check(*text, n) != n) {
        cllm__buf_reserve(&out, n);
        cllm__utf8_lossy((const unsigned char *)*text, n, 1, &out, replaced);
        if (!out.oom) {
            CLLM_FREE(*text);
            *text = out.p;
            n = out.n;
            memset(&out, 0, sizeof out);
        }
    }
    if (!out.oom && cllm__secret_find(*text, n, 1, &run) < n) {
        cllm__buf_reserve(&out, n);
        cllm__scrub(&out, *text, n, 1);
        if (!out.oom) {
            CLLM_FREE(*text);
            *text = out.p;
            n = out.n;
            memset(&out, 0, sizeof out);
        }
    }
    if (out.oom) {
        CLLM_FREE(out.p);
        CLLM_FREE(*text);
        *text = NULL;
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    escaped = cllm__json_escaped_len(*text, n);
    if (escaped > CLLM__MAX_TEXT_JSON) {
        CLLM_FREE(*text);
        *text = NULL;
        return cllm__fail(err, CLLM_ERR_LIMIT, "the text is %zu bytes, %zu as JSON (a control character takes 6), "
                          "more than the %zu a line of ours may hold (CLLM_MAX_LINE_BYTES): refused rather than "
                          "written where no reader could take it", n, escaped, CLLM__MAX_TEXT_JSON);
    }
    return CLLM_OK;
}

/* ---- lenient JSON -------------------------------------------------------------------------- */

/* Is a quote whose text ends at s[after] the end of a string? In valid JSON a closing quote is
   followed (after white space) by , : } ] or the end, so valid JSON is never changed by this
   test; a quote followed by anything else is taken as a quote inside the text. */
static int cllm__quote_closes(const char *s, size_t len, size_t after) {
    while (after < len && s[after] && (unsigned char)s[after] <= 0x20) after++;   /* cJSON's white space: any control byte or space */
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
/* An unpaired surrogate escape reads as U+FFFD, as in a reply (cllm__json_escapes); an object
   whose strings hold \u0000 is refused and *nul set (its text would end there unseen). */
static cJSON *cllm__json_object_at(const char *s, size_t len, int *nul) {
    size_t lone, nuls;
    char *fixed = cllm__json_escapes(s, len, &lone, &nuls);
    const char *base = fixed ? fixed : s, *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(base, len, &end, 0);
    if (o && !cJSON_IsObject(o)) { cJSON_Delete(o); o = NULL; }
    if (o && nuls && end) {                       /* a \u0000 inside this object, not in prose after it? */
        CLLM_FREE(cllm__json_escapes(base, (size_t)(end - base), &lone, &nuls));
        if (nuls) { cJSON_Delete(o); o = NULL; *nul = 1; }
    }
    CLLM_FREE(fixed);
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
    int nreg = 1, mode, r, nul = 0;
    if (!text) { cllm__fail(err, CLLM_ERR_ARG, "model reply: no text"); return NULL; }
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
                if (mode == 0) o = cllm__json_object_at(b, (size_t)(region[r][1] - b), &nul);
                else {
                    char *fixed = cllm__json_repair(b, (size_t)(region[r][1] - b));
                    if (!fixed) { cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); return NULL; }
                    o = cllm__json_object_at(fixed, strlen(fixed), &nul);
                    CLLM_FREE(fixed);
                }
                if (o) { cllm__ok(err); return o; }
            }
        }
    }
    if (nul) {
        cllm__fail(err, CLLM_ERR_FORMAT,
                   "the model's JSON holds a NUL character (\\u0000), which collabllm.h text cannot carry; "
                   "refused rather than cut there");
    } else {                                      /* the start of the reply: cut on a character boundary */
        size_t n = strlen(text);
        cllm__fail(err, CLLM_ERR_FORMAT, "no JSON object found in the model's reply (%zu chars, starting \"%.*s\")", n,
                   (int)cllm__utf8_prefix(text, n, 60), text);
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

/* A string field of a model's JSON answer as received text (cllm__received_text: valid UTF-8,
   no API key: an escape such as \u0041 can spell a key the reply itself did not show), or NULL
   (absent, or refused with the reason in err). */
static char *cllm__json_text(const cJSON *o, const char *key, cllm_err *err) {
    const char *s = cllm__json_str(o, key);
    char *text = s ? cllm__strdup(s) : NULL;
    if (s && !text) cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (text) cllm__received_text(&text, NULL, err);
    return text;
}

/* ---- the client: configuration, messages --------------------------------------------------- */

/* The endpoint's own explanation from an error body, for the message: error.message (OpenAI,
   vLLM), error as a string (Ollama), detail (FastAPI), message, else the start of the raw body.
   Scrubbed, one line, at most `cap` bytes. The scrub comes before the cut, so a key that the cut
   would shorten below 8 bytes is already gone. */
static void cllm__endpoint_message(const char *body, size_t len, char *out, size_t cap) {
    cJSON *root = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *e = root ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
    const char *text = NULL;
    size_t n, longest = 0;
    int k;
    if (cJSON_IsObject(e)) text = cllm__json_str(e, "message");
    else if (cJSON_IsString(e)) text = e->valuestring;
    if (!text && root) text = cllm__json_str(root, "detail");
    if (!text && root) text = cllm__json_str(root, "message");
    n = text ? strlen(text) : body ? len : 0;
    for (k = 0; k < cllm__n_secrets; k++) if (strlen(cllm__secrets[k]) > longest) longest = strlen(cllm__secrets[k]);
    if (n > cap + longest) n = cap + longest;        /* scrubbing never shortens text below the cut */
    if (n == 0 && !text) snprintf(out, cap, "%s", "(empty body)");
    else cllm__clean_line(out, cap, text ? text : body, n);
    cJSON_Delete(root);
}

CLLMDEF cllm_result cllm_client_init(cllm_client *c, const cllm_client_config *cfg, cllm_err *err) {
    cllm_client_config d;
    const char *key, *env_base = getenv("OPENAI_BASE_URL");
    struct curl_slist *h = NULL, *h2;
    cllm__sb url = { NULL, 0, 0, 0 };
    size_t blen;
    int registered;
    memset(c, 0, sizeof *c);
    if (cfg) d = *cfg; else memset(&d, 0, sizeof d);
    if (!d.base_url || !*d.base_url) d.base_url = env_base && *env_base ? env_base : "https://api.openai.com/v1";
    if (!d.api_key_env || !*d.api_key_env) d.api_key_env = "OPENAI_API_KEY";
    d.connect_timeout_ms = cllm__def(d.connect_timeout_ms, 10000);
    d.timeout_ms         = cllm__def(d.timeout_ms, 300000);
    d.deadline_ms        = cllm__def(d.deadline_ms, 600000);
    d.max_retries        = d.max_retries < 0 ? 0 : cllm__def(d.max_retries, 5);
    d.backoff_ms         = cllm__def(d.backoff_ms, 500);
    d.backoff_max_ms     = cllm__def(d.backoff_max_ms, 60000);
    d.max_concurrency    = cllm__def(d.max_concurrency, 16);
    d.max_response_bytes = cllm__def(d.max_response_bytes, 64L << 20);
    d.max_inflight_bytes = cllm__def(d.max_inflight_bytes, 256LL << 20);
    if (d.connect_timeout_ms < 0 || d.timeout_ms < 0 || d.deadline_ms < 0 || d.backoff_ms < 0 || d.backoff_max_ms < 0 ||
        d.max_concurrency < 0 || d.max_response_bytes < 0 || d.max_inflight_bytes < 0)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "client settings: timeouts, deadline, backoff, max_concurrency and the byte limits "
                          "must not be negative");
    if (d.max_inflight_bytes < d.max_response_bytes)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "client settings: max_inflight_bytes (%lld) must be at least max_response_bytes (%ld), "
                          "or no response could reach its own limit", d.max_inflight_bytes, d.max_response_bytes);
    if (strncmp(d.base_url, "http://", 7) != 0 && strncmp(d.base_url, "https://", 8) != 0)
        return cllm__fail(err, CLLM_ERR_ARG, "the base URL must start with http:// or https:// "
                          "(got \"%.*s\")", CLLM__CUT(d.base_url, 200));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return cllm__fail(err, CLLM_ERR_HTTP, "libcurl failed to initialise");

    blen = strlen(d.base_url);
    while (blen > 0 && d.base_url[blen - 1] == '/') blen--;
    cllm__sb_putn(&url, d.base_url, blen);
    cllm__sb_puts(&url, "/chat/completions");
    c->url = cllm__sb_take(&url);
    c->model = d.model ? cllm__strdup(d.model) : NULL;
    key = getenv(d.api_key_env);
    if (key && *key) c->key = cllm__strdup(key);
    registered = cllm__secret_register(c->key);      /* from here on no message or received text holds it */
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
    if (!c->url || (d.model && !c->model) || (key && *key && !c->key) || !registered || !c->headers || !c->multi) {
        int global_released = c->url || c->multi;          /* cllm_client_free releases curl then */
        if (!registered) {                                  /* never registered: free must not look for it */
            memset(c->key, 0, strlen(c->key));
            CLLM_FREE(c->key);
            c->key = NULL;
        }
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
    if (c->key) {
        cllm__secret_forget(c->key);
        memset(c->key, 0, strlen(c->key));
    }
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
    if (!model) { cllm__fail(err, CLLM_ERR_ARG, "no model named for the endpoint: give one (the client's model or the request's)"); return NULL; }
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

/* ---- the client: reading a reply ------------------------------------------------------------- */

/* Does s[0..len) stop inside an unclosed string, object or array (a truncated document)?
   *max_depth receives the deepest nesting seen. */
static int cllm__json_cut_short(const char *s, size_t len, int *max_depth) {
    size_t i;
    int depth = 0, in_str = 0;
    *max_depth = 0;
    for (i = 0; i < len; i++) {
        char ch = s[i];
        if (in_str) { if (ch == '\\') i++; else if (ch == '"') in_str = 0; }
        else if (ch == '"') in_str = 1;
        else if (ch == '{' || ch == '[') { depth++; if (depth > *max_depth) *max_depth = depth; }
        else if (ch == '}' || ch == ']') depth--;
    }
    return in_str || depth > 0;
}

/* choices[0].message's text: content as a string, or as a list of parts ([{"type": "text",
   "text": ...}], joined). NULL with *why set when there is no text to take. */
static char *cllm__message_text(const cJSON *msg, char *why, size_t why_size) {
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content"), *part;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    const char *refusal = cllm__json_str(msg, "refusal");
    cllm__sb b = { NULL, 0, 0, 0 };
    int k = 0;
    if (cJSON_IsString(content)) {
        char *copy = cllm__strdup(content->valuestring);
        if (!copy) snprintf(why, why_size, "out of memory");
        return copy;
    }
    if (!content || cJSON_IsNull(content)) {
        if (cJSON_GetArraySize(tools) > 0)
            snprintf(why, why_size,
                     "choices[0].message has tool_calls and no text content (collabllm.h calls no tools; ask for a "
                     "text answer)");
        else if (refusal) snprintf(why, why_size, "the model refused (choices[0].message.refusal): %.*s",
                                   CLLM__CUT(refusal, 300));
        else snprintf(why, why_size, "choices[0].message.content is %s", content ? "null" : "missing");
        return NULL;
    }
    if (!cJSON_IsArray(content)) {
        snprintf(why, why_size, "choices[0].message.content is of the wrong type (not a string or a list of parts)");
        return NULL;
    }
    cJSON_ArrayForEach(part, content) {
        const char *type = cllm__json_str(part, "type"), *text = cllm__json_str(part, "text");
        if (cJSON_IsString(part)) text = part->valuestring;
        else if (!text || (type && strcmp(type, "text") != 0)) {
            cllm__sb_free(&b);
            snprintf(why, why_size,
                     "choices[0].message.content[%d] is a part of type \"%.*s\" with no text; collabllm.h keeps "
                     "text only", k, CLLM__CUT(type ? type : "?", 40));
            return NULL;
        }
        cllm__sb_puts(&b, text);
        k++;
    }
    if (k == 0) { snprintf(why, why_size, "choices[0].message.content is an empty list of parts"); return NULL; }
    if (b.oom) snprintf(why, why_size, "out of memory");
    return cllm__sb_take(&b);
}

/* Reads a 2xx body into r: choices[0].message's text (see cllm__received_text), finish_reason,
   usage. */
static cllm_result cllm__parse_completion(cllm_client *c, const char *body, size_t len, cllm_chat_result *r) {
    size_t lone = 0, nul = 0, replaced = 0;
    char *fixed = body && len ? cllm__json_escapes(body, len, &lone, &nul) : NULL, *text = NULL;
    const char *json = fixed ? fixed : body;
    cJSON *root = body && len ? cJSON_ParseWithLength(json, len) : NULL;
    const cJSON *choice, *msg, *usage, *e;
    const char *fr;
    char snippet[200], why[CLLM_ERRMSG_SIZE];
    cllm_err terr;
    cllm_result rc = CLLM_OK;
    int depth;
    if (!root) {
        CLLM_FREE(fixed);
        if (len == 0) return cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: empty response body", c->url);
        cllm__endpoint_message(body, len, snippet, 80);
        if (cllm__json_cut_short(body, len, &depth))
            return cllm__fail(&r->err, CLLM_ERR_FORMAT,
                              "%s: response JSON is truncated (%zu bytes end inside an unclosed object or string; "
                              "starts \"%s\")", c->url, len, snippet);
        if (depth > CJSON_NESTING_LIMIT)
            return cllm__fail(&r->err, CLLM_ERR_FORMAT,
                              "%s: response JSON nests %d levels deep, more than the parser accepts "
                              "(CJSON_NESTING_LIMIT %d); starts \"%s\"", c->url, depth, CJSON_NESTING_LIMIT, snippet);
        return cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: response is not valid JSON (%zu bytes, starts \"%s\")", c->url,
                          len, snippet);
    }
    e = cJSON_GetObjectItemCaseSensitive(root, "error");
    choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0);
    msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    fr = cllm__json_str(choice, "finish_reason");
    if (fr) {                                      /* remote text too: valid UTF-8, no key, cut to fit */
        cllm__clean_line(r->finish_reason, sizeof r->finish_reason, fr, strlen(fr));
    }
    why[0] = 0;
    if (e && !cJSON_IsNull(e)) {
        cllm__endpoint_message(json, len, snippet, sizeof snippet);
        rc = cllm__fail(&r->err, CLLM_ERR_HTTP, "%s: the endpoint returned an error: %s", c->url, snippet);
    } else if (!cJSON_IsObject(choice))
        rc = cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: response has no \"choices\"[0] object (not an OpenAI chat completion?)", c->url);
    else if (!cJSON_IsObject(msg))
        rc = cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: response has no choices[0].message object", c->url);
    else if (!(text = cllm__message_text(msg, why, sizeof why)))
    {
        const char *open = r->finish_reason[0] ? " (finish_reason \"" : "", *close = r->finish_reason[0] ? "\")" : "";
        cllm_result code = strcmp(why, "out of memory") ? CLLM_ERR_FORMAT : CLLM_ERR_NOMEM;
        rc = cllm__fail(&r->err, code, "%s: %s%s%s%s", c->url, why, open, r->finish_reason, close);
    }
    if (rc == CLLM_OK && nul) {                    /* where did cJSON stop? compare with the NULs read as spaces */
        char *spaced = cllm__json_nul_to_space(json, len);
        cJSON *again = spaced ? cJSON_ParseWithLength(spaced, len) : NULL;
        const cJSON *c2 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(again, "choices"), 0);
        const cJSON *m2 = cJSON_GetObjectItemCaseSensitive(c2, "message");
        char *full = m2 ? cllm__message_text(m2, why, sizeof why) : NULL;
        if (!full) rc = cllm__fail(&r->err, CLLM_ERR_NOMEM, "%s: out of memory checking the reply for NUL characters",
                                   c->url);
        else if (strlen(full) != strlen(text))
            rc = cllm__fail(&r->err, CLLM_ERR_FORMAT,
                            "%s: the reply's content holds a NUL character (\\u0000) at byte %zu of %zu; "
                            "collabllm.h keeps text as C strings and refuses the reply rather than cut it there",
                            c->url, strlen(text), strlen(full));
        CLLM_FREE(full);
        CLLM_FREE(spaced);
        cJSON_Delete(again);
    }
    if (rc == CLLM_OK) {
        if ((rc = cllm__received_text(&text, &replaced, &terr)) != CLLM_OK)
            cllm__fail(&r->err, rc, "%s: the reply's content: %s", c->url, terr.msg);
        r->content = text;
        text = NULL;
        r->replaced = (int)(replaced + lone < INT_MAX ? replaced + lone : INT_MAX);
    }
    if (rc == CLLM_OK && c->cfg.reject_incomplete && strcmp(r->finish_reason, "length") == 0)
        rc = cllm__fail(&r->err, CLLM_ERR_LIMIT,
                        "%s: the reply was cut off at its token limit (finish_reason \"length\"; raise "
                        "max_tokens) and reject_incomplete (--reject-incomplete) makes that a failure", c->url);
    if (rc == CLLM_OK && c->cfg.reject_incomplete && strcmp(r->finish_reason, "content_filter") == 0)
        rc = cllm__fail(&r->err, CLLM_ERR_HTTP,
                        "%s: the endpoint's content filter cut or blocked the reply (finish_reason "
                        "\"content_filter\") and reject_incomplete (--reject-incomplete) makes that a failure", c->url);
    if (rc != CLLM_OK) {
        CLLM_FREE(r->content);
        r->content = NULL;
    } else {
        usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
        /* a count that is not a whole number >= 0 is taken as not reported */
        if (!cllm__json_int(usage, "prompt_tokens", -1, &r->prompt_tokens) || r->prompt_tokens < 0) r->prompt_tokens = -1;
        if (!cllm__json_int(usage, "completion_tokens", -1, &r->completion_tokens) || r->completion_tokens < 0) r->completion_tokens = -1;
        if (!cllm__json_int(usage, "total_tokens", -1, &r->total_tokens) || r->total_tokens < 0) r->total_tokens = -1;
        if (r->prompt_tokens > 0) c->usage.prompt_tokens += r->prompt_tokens;
        if (r->completion_tokens > 0) c->usage.completion_tokens += r->completion_tokens;
        if (r->total_tokens > 0) c->usage.total_tokens += r->total_tokens;
    }
    CLLM_FREE(text);
    CLLM_FREE(fixed);
    cJSON_Delete(root);
    return rc;
}

/* ---- the client: transfers, retries, concurrency ------------------------------------------- */
/* Each request is a small state machine driven by one curl multi handle:
     WAITING --(due and a slot is free)--> RUNNING --(done)--> DONE
                 ^                                   |
                 +----(retryable failure, wait)------+
   The loop starts what may start, lets curl move bytes, collects finished transfers, then
   sleeps until a socket is ready, a curl timer fires or the next retry is due.
   Bounds: a response body may grow to max_response_bytes, and the bodies of all transfers in
   flight together to max_inflight_bytes (a transfer that would pass it stops and is retried
   later); a body is released as soon as its attempt is read. deadline_ms bounds a request from
   its first attempt to its end, waits included: each attempt's timeout is cut to what is left,
   and a retry that would start after it is not made. Redirects are not followed. */

enum { CLLM__WAITING = 0, CLLM__RUNNING, CLLM__DONE };

typedef struct cllm__xfer {
    cllm_chat_result *res;
    char             *body;           /* request JSON, built once, sent on every attempt      */
    const char       *model;          /* for messages                                         */
    int               index, n;       /* request index in its batch, and the batch size       */
    CURL             *easy;           /* the running attempt                                  */
    cllm__sb          resp;           /* response body of the running attempt                 */
    long              limit;          /* max_response_bytes                                   */
    long long        *held;           /* bytes held by the bodies of the whole batch          */
    long long         budget;         /* max_inflight_bytes                                   */
    int               too_big, over_budget, deadline_cut;
    int               state;
    double            not_before;     /* when the next attempt may start (cllm__now seconds)  */
    double            t_first;        /* start of the first attempt                           */
    double            deadline;       /* t_first + deadline_ms                                */
    char              errbuf[CURL_ERROR_SIZE];
} cllm__xfer;

/* Takes the next piece of a response body, within the transfer's limit and the batch's budget. */
static size_t cllm__on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
    cllm__xfer *x = (cllm__xfer *)userdata;
    size_t len = size * nmemb, need = x->resp.n + len + 1;
    if (x->resp.n + len > (size_t)x->limit) { x->too_big = 1; return 0; }   /* curl aborts the transfer */
    if (need > x->resp.cap) {                      /* grow by doubling, never past the limit */
        size_t cap = x->resp.cap ? x->resp.cap : 256;
        char *grown;
        while (cap < need) cap *= 2;
        if (cap > (size_t)x->limit + 1) cap = (size_t)x->limit + 1;
        if (*x->held + (long long)(cap - x->resp.cap) > x->budget) { x->over_budget = 1; return 0; }
        grown = (char *)CLLM_REALLOC(x->resp.p, cap);
        if (!grown) { x->resp.oom = 1; return 0; }
        *x->held += (long long)(cap - x->resp.cap);
        x->resp.p = grown;
        x->resp.cap = cap;
    }
    memcpy(x->resp.p + x->resp.n, ptr, len);
    x->resp.n += len;
    x->resp.p[x->resp.n] = 0;
    return len;
}

/* Gives the body's memory back to the batch's budget. */
static void cllm__xfer_release(cllm__xfer *x) {
    *x->held -= (long long)x->resp.cap;
    cllm__sb_free(&x->resp);
}

static cllm_result cllm__xfer_start(cllm_client *c, cllm__xfer *x) {
    CURL *e = curl_easy_init();
    long left_ms = (long)((x->deadline - cllm__now()) * 1000.0) + 1;
    long timeout_ms = c->cfg.timeout_ms < left_ms ? c->cfg.timeout_ms : left_ms;
    if (!e) return cllm__fail(&x->res->err, CLLM_ERR_NOMEM, "libcurl could not create a transfer");
    x->too_big = 0;
    x->over_budget = 0;
    x->deadline_cut = timeout_ms < c->cfg.timeout_ms;
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
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     c->cfg.connect_timeout_ms < timeout_ms ? c->cfg.connect_timeout_ms : timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->limit);   /* a larger Content-Length: refused */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);                         /* the key never follows a redirect */
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

/* Why a transfer failed, from its curl code; *code and *retryable are set too. */
static void cllm__xfer_why(cllm_client *c, cllm__xfer *x, CURLcode cc, char *why, size_t size, cllm_result *code,
                           int *retryable) {
    curl_off_t announced = -1;
    *retryable = 0;
    *code = CLLM_ERR_HTTP;
    if (x->too_big) {
        *code = CLLM_ERR_LIMIT;
        snprintf(why, size, "response larger than max_response_bytes (%ld)", x->limit);
    } else if (x->over_budget) {
        *code = CLLM_ERR_LIMIT;
        *retryable = 1;                            /* the others' bodies will be released */
        snprintf(why, size,
                 "the responses in flight together reached max_inflight_bytes (%lld) while this one held %zu bytes",
                 x->budget, x->resp.n);
    } else if (x->resp.oom) {
        *code = CLLM_ERR_NOMEM;
        snprintf(why, size, "out of memory receiving the response");
    } else if (cc == CURLE_FILESIZE_EXCEEDED) {
        *code = CLLM_ERR_LIMIT;
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
        if (announced > 0)
            snprintf(why, size, "response larger than max_response_bytes (%ld): its Content-Length says %lld bytes",
                     x->limit, (long long)announced);
        else snprintf(why, size, "response larger than max_response_bytes (%ld), as its Content-Length says", x->limit);
    } else if (cc == CURLE_BAD_CONTENT_ENCODING) {
        snprintf(why, size, "the response's content encoding is broken (%s)", x->errbuf[0] ? x->errbuf : "undecodable");
    } else if (cc == CURLE_OPERATION_TIMEDOUT && x->deadline_cut) {
        snprintf(why, size,
                 "the request's deadline ran out (deadline_ms %ld covers every attempt and wait; %zu bytes of this "
                 "attempt's response had arrived)", c->cfg.deadline_ms, x->resp.n);
    } else {
        *retryable = cllm__curl_retryable(cc);
        if (cc == CURLE_PARTIAL_FILE)
            snprintf(why, size, "the connection closed before the whole response arrived (truncated body, %zu bytes)",
                     x->resp.n);
        else if (cc == CURLE_OPERATION_TIMEDOUT)
            snprintf(why, size, "timed out (%s; limits: connect_timeout_ms %ld, timeout_ms %ld)",
                     x->errbuf[0] ? x->errbuf : "no answer",
                     c->cfg.connect_timeout_ms, c->cfg.timeout_ms);
        else
            snprintf(why, size, "%s (%s)", curl_easy_strerror(cc), x->errbuf);
    }
}

/* Tells the caller's on_wait, in one line, that a request waits more than 5 s before a retry. */
static void cllm__tell_wait(cllm_client *c, const cllm__xfer *x, const char *why, double wait_s) {
    char text[2 * CLLM_ERRMSG_SIZE], line[CLLM_ERRMSG_SIZE];
    if (!c->cfg.on_wait || wait_s <= 5.0) return;
    snprintf(text, sizeof text, "%s (model %s, request %d of %d): waiting %.1f s before attempt %d of %d: %s", c->url,
             x->model ? x->model : "?", x->index + 1, x->n, wait_s, x->res->attempts + 1, c->cfg.max_retries + 1, why);
    cllm__clean_line(line, sizeof line, text, strlen(text));
    c->cfg.on_wait(c->cfg.on_wait_ctx, line);
}

/* An attempt ended with curl code cc: classify it, then retry, or finish the request. */
static void cllm__xfer_finish(cllm_client *c, cllm__xfer *x, CURLcode cc) {
    long status = 0;
    curl_off_t retry_after = 0;
    char why[CLLM_ERRMSG_SIZE], said[300];
    const char *gave_up = "";
    cllm_result code = CLLM_OK;
    int retryable = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &retry_after);   /* seconds, or an HTTP-date made relative */
    x->res->http_status = status;
    why[0] = 0;
    if (cc != CURLE_OK) cllm__xfer_why(c, x, cc, why, sizeof why, &code, &retryable);
    else if (status >= 200 && status < 300) {
        code = cllm__parse_completion(c, x->resp.p, x->resp.n, x->res);
        if (code == CLLM_OK) c->usage.requests++;
    } else if (status >= 300 && status < 400) {
        char *location = NULL;
        const char *to;
        curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_URL, &location);
        code = CLLM_ERR_HTTP;
        to = location ? location : "(no Location header)";
        snprintf(why, sizeof why, "HTTP %ld: the endpoint redirects to %.*s; redirects are not followed (the API key "
                 "would go along): set base_url to the address that answers", status, CLLM__CUT(to, 200));
    } else {
        code = CLLM_ERR_HTTP;
        retryable = status == 408 || status == 429 || status >= 500;
        cllm__endpoint_message(x->resp.p, x->resp.n, said, sizeof said);
        snprintf(why, sizeof why, "HTTP %ld: %s%s", status, said, cllm__status_hint(c, status));
        if (retry_after > 0) {
            size_t used = strlen(why);
            snprintf(why + used, sizeof why - used, " (Retry-After %lld s)", (long long)retry_after);
        }
    }
    curl_multi_remove_handle((CURLM *)c->multi, x->easy);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
    cllm__xfer_release(x);
    if (retryable && x->res->attempts <= c->cfg.max_retries) {
        double now = cllm__now(), wait = cllm__retry_wait(c, x->res->attempts, (double)retry_after);
        if (now + wait < x->deadline) {
            x->state = CLLM__WAITING;
            x->not_before = now + wait;
            cllm__tell_wait(c, x, why, wait);
            return;
        }
        gave_up = "; the next attempt would start after the request's deadline (deadline_ms)";
    }
    x->state = CLLM__DONE;
    x->res->seconds = cllm__now() - x->t_first;
    if (why[0]) {
        if (x->res->attempts > 1 || gave_up[0])
            cllm__fail(&x->res->err, code, "%s: %s (gave up after %d attempts%s)", c->url, why, x->res->attempts,
                       gave_up);
        else cllm__fail(&x->res->err, code, "%s: %s", c->url, why);
    }
    x->res->code = code;
    if (code != CLLM_OK) c->usage.failures++;
}

CLLMDEF cllm_result cllm_client_chat_batch(cllm_client *c, const cllm_chat_request *requests, int n,
                                           cllm_chat_result *results, cllm_err *err) {
    cllm__xfer *xs;
    long long held = 0;
    int i, running = 0, remaining = 0, limit;
    if (!c || !c->multi || n < 0 || (n > 0 && (!requests || !results)))
        return cllm__fail(err, CLLM_ERR_ARG, "chat completions: needs an initialised client and n >= 0 requests and results");
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
        x->held = &held;
        x->budget = c->cfg.max_inflight_bytes;
        x->model = requests[i].params.model ? requests[i].params.model : c->model;
        x->index = i;
        x->n = n;
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
            if (x->res->attempts == 0) {
                x->t_first = now;
                x->deadline = now + (double)c->cfg.deadline_ms / 1000.0;
            }
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
        else {
            out[i].text = res[i].content;
            res[i].content = NULL;
            out[i].code = CLLM_OK;
            snprintf(out[i].meta.finish_reason, sizeof out[i].meta.finish_reason, "%s", res[i].finish_reason);
            out[i].meta.replaced = res[i].replaced;
        }
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
    if (!(t->json = cllm__jsonl_parse(line, len, path, lineno, err))) return CLLM_ERR_FORMAT;
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
    FILE *f = cllm__open_read(path, "a JSONL file", err);
    char *line = NULL;
    size_t cap = 0;
    cllm_task *ts = NULL;
    int count = 0, tcap = 0, lineno = 0;
    long len;
    cllm_result rc = CLLM_OK;
    *tasks = NULL;
    *n = 0;
    if (!f) return CLLM_ERR_IO;
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
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && count == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no tasks", path);
    if (rc != CLLM_OK) { cllm_tasks_free(ts, count); return rc; }
    *tasks = ts;
    *n = count;
    cllm__ok(err);
    return CLLM_OK;
}

/* -------------------------------------------------------------------------------------------- */
/* Local models as assistants and simulators                                                    */
/* -------------------------------------------------------------------------------------------- */

/* ---- loading: model + tokenizer + the ids that end a turn ----------------------------------- */

static void cllm__local_add_stop_id(cllm_local_lm *lm, int id) {
    int i;
    if (id < 0 || lm->n_stop_ids == (int)(sizeof lm->stop_ids / sizeof lm->stop_ids[0])) return;
    for (i = 0; i < lm->n_stop_ids; i++) if (lm->stop_ids[i] == id) return;
    lm->stop_ids[lm->n_stop_ids++] = id;
}

CLLMDEF void cllm_local_lm_free(cllm_local_lm *lm) {
    if (!lm) return;
    cllm_model_free(&lm->model);
    cllm_tokenizer_free(&lm->tok);
    memset(lm, 0, sizeof *lm);
}

CLLMDEF cllm_result cllm_local_lm_load(cllm_local_lm *lm, const char *dir, cllm_err *err) {
    /* what each family's template closes a message with (Llama-3.1 also ends tool turns with
       <|eom_id|>); a token missing from the vocabulary is skipped */
    static const char *const chatml_end[] = { "<|im_end|>", NULL };
    static const char *const llama_end[] = { "<|eot_id|>", "<|eom_id|>", NULL };
    const char *const *end;
    cllm_result rc;
    int i;
    if (!lm || !dir) return cllm__fail(err, CLLM_ERR_ARG, "local model: needs an lm and a model directory");
    memset(lm, 0, sizeof *lm);
    if ((rc = cllm_model_load(&lm->model, dir, err)) != CLLM_OK) return rc;
    if ((rc = cllm_tokenizer_load(&lm->tok, dir, err)) != CLLM_OK) { cllm_local_lm_free(lm); return rc; }
    if (lm->tok.n_ids > lm->model.config.vocab_size) {
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tokenizer.json has ids up to %d but config.json's vocab_size is %d: they are not from the same model",
                        dir, lm->tok.n_ids - 1, lm->model.config.vocab_size);
        cllm_local_lm_free(lm);
        return rc;
    }
    end = lm->tok.chat_family == CLLM_CHAT_LLAMA3 || lm->tok.chat_family == CLLM_CHAT_LLAMA31 ? llama_end
        : lm->tok.chat_family ? chatml_end : NULL;
    for (i = 0; end && end[i]; i++) cllm__local_add_stop_id(lm, cllm_tokenizer_token_id(&lm->tok, end[i]));
    cllm__local_add_stop_id(lm, lm->tok.eos_id);
    for (i = 0; i < lm->model.config.n_eos; i++) cllm__local_add_stop_id(lm, lm->model.config.eos_token_ids[i]);
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- one conversation: render, generate, decode ---------------------------------------------- */

CLLMDEF void cllm_local_outputs_free(cllm_local_output *out, int n) {
    int i;
    if (!out) return;
    for (i = 0; i < n; i++) {
        CLLM_FREE(out[i].text); CLLM_FREE(out[i].ids); CLLM_FREE(out[i].logprobs); CLLM_FREE(out[i].prompt_ids);
        memset(&out[i], 0, sizeof out[i]);
    }
}

/* The seed of the conversation generated as call number `call`: one splitmix64 step over
   base * golden + call, so neighbouring calls (and neighbouring base seeds) get unrelated RNG
   streams, and cllm_generate then derives each sample's stream from it. */
static uint64_t cllm__local_seed(uint64_t base, uint64_t call) {
    uint64_t x = base * 0x9E3779B97F4A7C15ull + call;
    return cllm__splitmix64(&x);
}

/* Where the earliest stop string starts in text, or NULL. */
static const char *cllm__local_find_stop(const char *text, const cllm_local_gen_config *cfg) {
    const char *first = NULL, *p;
    int i;
    for (i = 0; i < cfg->n_stop; i++)
        if ((p = strstr(text, cfg->stop[i])) != NULL && (!first || p < first)) first = p;
    return first;
}

typedef struct cllm__local_stop_ctx { const cllm_tokenizer *tok; const cllm_local_gen_config *cfg; } cllm__local_stop_ctx;

/* cllm_generate's stop test: the caller's on_token, then the stop strings on the text decoded so
   far. Decoding everything at each token costs O(n^2) byte copies per sample, which is small
   next to a forward step; it keeps the test exactly the text that is returned. */
static int cllm__local_stop(void *ctx, const int *ids, int n) {
    const cllm__local_stop_ctx *sc = (const cllm__local_stop_ctx *)ctx;
    char *text = NULL;
    int hit;
    if (sc->cfg->on_token && sc->cfg->on_token(sc->cfg->on_token_ctx, ids, n)) return 1;
    if (sc->cfg->n_stop <= 0 || cllm_tokenizer_decode(sc->tok, ids, n, !sc->cfg->keep_special, &text, NULL, NULL) != CLLM_OK) return 0;
    hit = text && cllm__local_find_stop(text, sc->cfg) != NULL;
    CLLM_FREE(text);
    return hit;
}

/* o->text from o->ids: the token that ended the turn is left out, a stop string cuts the text. */
static cllm_result cllm__local_text(const cllm_tokenizer *tok, const cllm_local_gen_config *cfg, cllm_local_output *o, cllm_err *err) {
    int n = o->n - (o->finish == CLLM_FINISH_EOS);
    cllm_result rc = cllm_tokenizer_decode(tok, o->ids, n, !cfg->keep_special, &o->text, NULL, err);
    if (rc == CLLM_OK && !o->text && !(o->text = cllm__strdup(""))) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (rc == CLLM_OK && o->finish == CLLM_FINISH_STOP) {
        const char *cut = cllm__local_find_stop(o->text, cfg);
        if (cut) o->text[cut - o->text] = 0;
    }
    return rc;
}

/* Generates n_samples responses to msgs into out[0..n_samples) (zeroed here). cfg has its
   defaults applied. Takes the next value of lm->calls. */
static cllm_result cllm__local_chat_one(cllm_local_lm *lm, const cllm_message *msgs, int n_msgs, int n_samples,
                                        const cllm_local_gen_config *cfg, cllm_local_output *out, cllm_err *err) {
    cllm_render_opts ro = cfg->render;
    cllm_gen_config g;
    cllm__local_stop_ctx sc;
    cllm_completion *comp;
    int *prompt = NULL, n_prompt = 0, s;
    uint64_t call;
    cllm_result rc;
    memset(out, 0, (size_t)n_samples * sizeof *out);
    if (cfg->n_stop < 0 || (cfg->n_stop > 0 && !cfg->stop)) return cllm__fail(err, CLLM_ERR_ARG, "local generation: n_stop must be >= 0, with that many stop strings");
    for (s = 0; s < cfg->n_stop; s++)
        if (!cfg->stop[s] || !cfg->stop[s][0]) return cllm__fail(err, CLLM_ERR_ARG, "local generation: stop string %d is empty", s);
    ro.add_generation_prompt = 1;
    if ((rc = cllm_chat_render(&lm->tok, msgs, n_msgs, &ro, NULL, &prompt, NULL, &n_prompt, err)) != CLLM_OK) return rc;
    call = lm->calls++;
    memset(&g, 0, sizeof g);
    g.sampler = cfg->sampler;
    g.sampler.seed = cllm__local_seed(cfg->sampler.seed, call);
    g.max_new_tokens = cfg->max_new_tokens;
    g.eos_ids = lm->stop_ids;
    g.n_eos = lm->n_stop_ids;
    sc.tok = &lm->tok;
    sc.cfg = cfg;
    if (cfg->n_stop > 0 || cfg->on_token) { g.stop = cllm__local_stop; g.stop_ctx = &sc; }
    comp = (cllm_completion *)cllm__calloc((size_t)n_samples, sizeof *comp);
    if (!comp) { CLLM_FREE(prompt); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    rc = cllm_generate(&lm->model, prompt, n_prompt, n_samples, &g, comp, err);
    for (s = 0; rc == CLLM_OK && s < n_samples; s++) {
        cllm_local_output *o = &out[s];
        o->ids = comp[s].ids; o->logprobs = comp[s].logprobs; o->n = comp[s].n; o->finish = comp[s].finish;
        comp[s].ids = NULL; comp[s].logprobs = NULL;
        o->call = call;
        o->n_prompt = n_prompt;
        if (!(o->prompt_ids = (int *)cllm__calloc((size_t)n_prompt, sizeof(int)))) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        else memcpy(o->prompt_ids, prompt, (size_t)n_prompt * sizeof(int));
        if (rc == CLLM_OK) rc = cllm__local_text(&lm->tok, cfg, o, err);
    }
    cllm_completions_free(comp, n_samples);
    CLLM_FREE(comp);
    CLLM_FREE(prompt);
    if (rc != CLLM_OK) cllm_local_outputs_free(out, n_samples);
    return rc;
}

/* Zero fields take the role's defaults. */
static cllm_local_gen_config cllm__local_gen_def(const cllm_local_gen_config *cfg, float temperature, int max_new_tokens) {
    cllm_local_gen_config c;
    if (cfg) c = *cfg; else memset(&c, 0, sizeof c);
    c.sampler.temperature = cllm__def(c.sampler.temperature, temperature);
    c.max_new_tokens = cllm__def(c.max_new_tokens, max_new_tokens);
    return c;
}

CLLMDEF cllm_result cllm_local_chat(cllm_local_lm *lm, const cllm_conv *histories, int n, int n_samples,
                                    const cllm_local_gen_config *cfg, cllm_local_output *out, cllm_err *err) {
    cllm_local_gen_config c = cllm__local_gen_def(cfg, 1.0f, 256);
    cllm_result rc;
    int i;
    if (!lm || !lm->model.params_memory || !lm->tok.priv) return cllm__fail(err, CLLM_ERR_ARG, "local model: not loaded");
    if (n < 0 || n_samples < 1 || n_samples > 65536 || (n > 0 && (!histories || !out)) || n > INT_MAX / n_samples)
        return cllm__fail(err, CLLM_ERR_ARG, "local chat: needs n >= 0 conversations, n_samples in [1, 65536] and n * n_samples outputs");
    memset(out, 0, (size_t)n * (size_t)n_samples * sizeof *out);
    for (i = 0; i < n; i++)
        if ((rc = cllm__local_chat_one(lm, histories[i].msgs, histories[i].n, n_samples, &c, out + (size_t)i * n_samples, err)) != CLLM_OK) {
            cllm_local_outputs_free(out, i * n_samples);
            return rc;
        }
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- the policy as an assistant -------------------------------------------------------------- */

/* How a local sample ended, in the endpoints' words: an end-of-turn/EOS token or a stop string is
   "stop" (as vLLM reports both), max_new_tokens "length". */
static void cllm__local_finish_meta(const cllm_local_output *o, cllm_msg_meta *meta) {
    memset(meta, 0, sizeof *meta);
    snprintf(meta->finish_reason, sizeof meta->finish_reason, "%s",
             o->finish == CLLM_FINISH_LENGTH ? "length" : "stop");
}

static cllm_result cllm__local_assistant_batch(void *ctx, const cllm_conv *histories, int n, cllm_reply *out) {
    cllm_local_assistant *a = (cllm_local_assistant *)ctx;
    int i, j, sys = a->cfg.system_prompt != NULL;
    for (i = 0; i < n; i++) {
        /* the system prompt goes first in the prompt only; the conversation never stores it */
        cllm_message *msgs = (cllm_message *)cllm__calloc((size_t)histories[i].n + 1, sizeof *msgs);
        cllm_local_output o;
        if (!msgs) { out[i].code = cllm__fail(&out[i].err, CLLM_ERR_NOMEM, "out of memory before the local assistant ran"); continue; }
        if (sys) { msgs[0].role = "system"; msgs[0].content = a->cfg.system_prompt; }
        for (j = 0; j < histories[i].n; j++) msgs[sys + j] = histories[i].msgs[j];
        out[i].code = cllm__local_chat_one(a->lm, msgs, sys + histories[i].n, 1, &a->cfg.gen, &o, &out[i].err);
        if (out[i].code == CLLM_OK) {
            out[i].text = o.text;
            o.text = NULL;
            cllm__local_finish_meta(&o, &out[i].meta);
        }
        cllm_local_outputs_free(&o, 1);
        CLLM_FREE(msgs);
    }
    return CLLM_OK;
}

static cllm_result cllm__local_assistant_respond(void *ctx, const cllm_conv *history, cllm_reply *out) {
    cllm__local_assistant_batch(ctx, history, 1, out);
    return out->code;
}

CLLMDEF void cllm_local_assistant_init(cllm_local_assistant *a, cllm_local_lm *lm, const cllm_local_assistant_config *cfg) {
    memset(a, 0, sizeof *a);
    if (cfg) a->cfg = *cfg;
    a->cfg.gen = cllm__local_gen_def(&a->cfg.gen, 0.8f, 1024);
    a->lm = lm;
    a->assistant.respond = cllm__local_assistant_respond;
    a->assistant.respond_batch = cllm__local_assistant_batch;
    a->assistant.ctx = a;
}

/* ---- (b) the user simulator as a local model ------------------------------------------------- */

/* One conversation: the simulator prompt as a single user message, sampled until
   cllm_user_sim_parse accepts the answer or the retries run out. A failed generation is final. */
static void cllm__local_sim_one(cllm_local_user_sim *s, const cllm_goal *goal, const cllm_conv *history, cllm_reply *out) {
    cllm_llm_sim_config pc;
    cllm_message msg;
    char *prompt = NULL;
    int attempt;
    memset(&pc, 0, sizeof pc);
    pc.termination = s->cfg.termination;
    pc.prompt = s->cfg.prompt;
    if ((out->code = cllm_user_sim_prompt(&pc, goal, history, &prompt, &out->err)) != CLLM_OK) return;
    msg.role = "user";
    msg.content = prompt;
    for (attempt = 0; ; attempt++) {
        cllm_local_output o;
        cllm_err gerr;
        s->generations++;
        if (cllm__local_chat_one(s->lm, &msg, 1, 1, &s->cfg.gen, &o, &gerr) != CLLM_OK) {
            cllm_reply_free(out);
            out->err = gerr;
            out->code = gerr.code;
            break;
        }
        cllm_user_sim_parse(o.text, s->cfg.termination, out);
        cllm__local_finish_meta(&o, &out->meta);
        cllm_local_outputs_free(&o, 1);
        if (out->code == CLLM_OK) break;
        if (attempt >= s->cfg.max_parse_retries) {
            char last[CLLM_ERRMSG_SIZE];
            snprintf(last, sizeof last, "%s", out->err.msg);
            cllm__fail(&out->err, out->code, "the local simulator gave no usable answer in %d samples; last: %s", attempt + 1, last);
            break;
        }
    }
    CLLM_FREE(prompt);
}

static cllm_result cllm__local_sim_batch(void *ctx, const cllm_goal *goals, const cllm_conv *histories, int n, cllm_reply *out) {
    int i;
    for (i = 0; i < n; i++) cllm__local_sim_one((cllm_local_user_sim *)ctx, &goals[i], &histories[i], &out[i]);
    return CLLM_OK;
}

static cllm_result cllm__local_sim_turn(void *ctx, const cllm_goal *goal, const cllm_conv *history, cllm_reply *out) {
    cllm__local_sim_one((cllm_local_user_sim *)ctx, goal, history, out);
    return out->code;
}

CLLMDEF void cllm_local_user_sim_init(cllm_local_user_sim *s, cllm_local_lm *lm, const cllm_local_user_sim_config *cfg) {
    memset(s, 0, sizeof *s);
    if (cfg) s->cfg = *cfg;
    s->cfg.gen = cllm__local_gen_def(&s->cfg.gen, 1.0f, 1024);
    s->cfg.termination = cllm__def(s->cfg.termination, CLLM_TERMINATION_SIGNAL);
    s->cfg.max_parse_retries = cllm__retries_def(s->cfg.max_parse_retries);
    s->lm = lm;
    s->sim.turn = cllm__local_sim_turn;
    s->sim.turn_batch = cllm__local_sim_batch;
    s->sim.ctx = s;
}

/* ---- built-in metrics ------------------------------------------------------------------------ */

static const char *cllm__last_assistant(const cllm_conv *c) {
    int i;
    for (i = c->n - 1; i >= 0; i--) if (strcmp(c->msgs[i].role, "assistant") == 0) return c->msgs[i].content;
    return NULL;
}

CLLMDEF cllm_result cllm_metric_token_amount(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i, t;
    for (i = 0; i < n; i++) {
        long tokens = 0;
        for (t = 0; t < s[i].conv->n; t++)
            if (strcmp(s[i].conv->msgs[t].role, "assistant") == 0) tokens += cllm_count_tokens((const cllm_token_counter *)ctx, s[i].conv->msgs[t].content);
        scores[i] = tokens / 1000.0;
    }
    cllm__ok(err);
    return CLLM_OK;
}

/* The end of a metric's batch, by its contract (cllm_metric_fn): an error when it scored none of
   n sessions, else CLLM_OK, with why (the first reason a session went unscored) kept in err->msg
   when some did. */
static cllm_result cllm__metric_done(const double *scores, int n, const char *metric, const cllm_err *why,
                                     cllm_err *err) {
    int i, unscored = 0;
    for (i = 0; i < n; i++) unscored += scores[i] != scores[i];
    if (n > 0 && unscored == n)
        return cllm__fail(err, why->code != CLLM_OK ? why->code : CLLM_ERR_FORMAT, "%s scored none of %d sessions: %s",
                          metric, n, why->msg[0] ? why->msg : "it gave no reason");
    cllm__ok(err);
    if (unscored && err) {
        cllm__fail(err, CLLM_ERR_FORMAT, "%s left %d of %d sessions unscored: %s", metric, unscored, n,
                   why->msg[0] ? why->msg : "no reason given");
        err->code = CLLM_OK;
    }
    return CLLM_OK;
}

/* Records the first reason a session went unscored. */
static void cllm__metric_why(cllm_err *why, cllm_result code, const char *reason) {
    if (why->code == CLLM_OK && code != CLLM_OK) cllm__fail(why, code, "%s", reason);
}

/* Copies judgements into scores (NAN for a failed one; the judge's message says why) and frees them. */
static cllm_result cllm__judged(cllm_judgement *j, int n, double *scores, const char *metric, cllm_err *err) {
    cllm_err why;
    int i;
    why.code = CLLM_OK;
    why.msg[0] = 0;
    for (i = 0; i < n; i++) {
        scores[i] = j[i].code == CLLM_OK ? j[i].score : NAN;
        cllm__metric_why(&why, j[i].code, j[i].err.msg);
        cllm_judgement_free(&j[i]);
    }
    CLLM_FREE(j);
    return cllm__metric_done(scores, n, metric, &why, err);
}

CLLMDEF cllm_result cllm_metric_interactivity(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    cllm_judgement *j = (cllm_judgement *)cllm__calloc((size_t)n + 1, sizeof *j);
    cllm_conv *convs = (cllm_conv *)cllm__calloc((size_t)n + 1, sizeof *convs);
    int i;
    if (!ctx) { CLLM_FREE(j); CLLM_FREE(convs); return cllm__fail(err, CLLM_ERR_ARG, "interactivity metric: needs an LLM judge"); }
    if (!j || !convs) { CLLM_FREE(j); CLLM_FREE(convs); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    for (i = 0; i < n; i++) convs[i] = *s[i].conv;
    cllm_judge_interactivity((cllm_judge *)ctx, convs, n, j, NULL);
    CLLM_FREE(convs);
    return cllm__judged(j, n, scores, "interactivity", err);
}

CLLMDEF cllm_result cllm_metric_accuracy(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    cllm_judgement *j = (cllm_judgement *)cllm__calloc((size_t)n + 1, sizeof *j);
    cllm_accuracy_item *it = (cllm_accuracy_item *)cllm__calloc((size_t)n + 1, sizeof *it);
    int i;
    if (!ctx) { CLLM_FREE(j); CLLM_FREE(it); return cllm__fail(err, CLLM_ERR_ARG, "accuracy metric: needs an LLM judge"); }
    if (!j || !it) { CLLM_FREE(j); CLLM_FREE(it); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    for (i = 0; i < n; i++) {
        it[i].question = s[i].task ? s[i].task->prompt : s[i].goal->prompt;
        it[i].ground_truth = s[i].task ? s[i].task->completion : s[i].goal->reference;
        it[i].conv = s[i].conv;
    }
    cllm_judge_accuracy((cllm_judge *)ctx, it, n, j, NULL);
    CLLM_FREE(it);
    return cllm__judged(j, n, scores, "accuracy", err);
}

/* Lower-cases, trims and collapses whitespace runs to one space, into a new string. */
static char *cllm__normalize_answer(const char *s) {
    size_t n = strlen(s), k = 0;
    char *o = (char *)CLLM_MALLOC(n + 1);
    int space = 1;
    if (!o) return NULL;
    for (; *s; s++) {
        int c = (unsigned char)*s, ws = c == ' ' || (c >= '\t' && c <= '\r');
        if (ws) { if (!space) o[k++] = ' '; space = 1; continue; }
        o[k++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        space = 0;
    }
    while (k > 0 && o[k - 1] == ' ') k--;
    o[k] = 0;
    return o;
}

CLLMDEF int cllm_answer_matches(const cllm_match_config *cfg, const char *answer, const char *reference) {
    const char *prefix = cfg ? cfg->answer_prefix : NULL, *p;
    char *a, *b;
    int same;
    if (!answer || !reference) return 0;
    if (prefix && *prefix) {                      /* the text after the last occurrence of the prefix */
        const char *last = NULL;
        for (p = strstr(answer, prefix); p; p = strstr(p + 1, prefix)) last = p;
        if (!last) return 0;
        answer = last + strlen(prefix);
    }
    a = cllm__normalize_answer(answer); b = cllm__normalize_answer(reference);
    same = a && b && strcmp(a, b) == 0;
    if (!same && a && b && cfg && cfg->numeric) {
        char *ea, *eb;
        double x = strtod(a, &ea), y = strtod(b, &eb), tol = cllm__def(cfg->tolerance, 1e-6);
        if (ea != a && *ea == 0 && eb != b && *eb == 0) same = fabs(x - y) <= tol * (fabs(y) > 1 ? fabs(y) : 1);
    }
    CLLM_FREE(a); CLLM_FREE(b);
    return same;
}

CLLMDEF cllm_result cllm_metric_exact_match(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    for (i = 0; i < n; i++) {
        const char *ref = s[i].task ? s[i].task->completion : s[i].goal->reference;
        scores[i] = cllm_answer_matches((const cllm_match_config *)ctx, cllm__last_assistant(s[i].conv), ref) ? 1.0 : 0.0;
    }
    cllm__ok(err);
    return CLLM_OK;
}

/* The final artifact of each session: judge-extracted when a judge is given, else the last
   assistant message. texts[i] is owned (NULL = extraction failed; the first reason goes to why). */
static void cllm__extract_final(cllm_judge *judge, const char *kind, const cllm_session *s, int n, char **texts,
                                cllm_err *why) {
    cllm_extract_item *it;
    cllm_judgement *j;
    int i;
    if (!judge) {
        for (i = 0; i < n; i++) {
            const char *t = cllm__last_assistant(s[i].conv);
            texts[i] = cllm__strdup(t ? t : "");
            if (!texts[i]) cllm__metric_why(why, CLLM_ERR_NOMEM, "out of memory");
        }
        return;
    }
    it = (cllm_extract_item *)cllm__calloc((size_t)n + 1, sizeof *it);
    j = (cllm_judgement *)cllm__calloc((size_t)n + 1, sizeof *j);
    if (!it || !j) {
        CLLM_FREE(it);
        CLLM_FREE(j);
        cllm__metric_why(why, CLLM_ERR_NOMEM, "out of memory");
        return;
    }
    for (i = 0; i < n; i++) {
        const cJSON *task = s[i].task ? s[i].task->json : NULL;
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(task, "single_turn_metadata");
        it[i].conv = s[i].conv; it[i].kind = kind;
        it[i].requirement = cllm__json_str(meta, "extraction_requirement");
    }
    cllm_judge_extract(judge, it, n, j, NULL);
    for (i = 0; i < n; i++) {
        texts[i] = NULL;
        if (j[i].code == CLLM_OK && j[i].text) {
            texts[i] = j[i].text;
            j[i].text = NULL;
        }
        cllm__metric_why(why, j[i].code, j[i].err.msg);
        cllm_judgement_free(&j[i]);
    }
    CLLM_FREE(it);
    CLLM_FREE(j);
}

CLLMDEF cllm_result cllm_metric_bleu(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    char **docs = (char **)cllm__calloc((size_t)n + 1, sizeof(char *));
    cllm_err why;
    int i;
    if (!docs) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    why.code = CLLM_OK;
    why.msg[0] = 0;
    cllm__extract_final((cllm_judge *)ctx, "document", s, n, docs, &why);
    for (i = 0; i < n; i++) {
        const char *ref = s[i].task ? s[i].task->completion : s[i].goal->reference;
        double b = NAN;
        cllm_err berr;
        if (!ref)
            cllm__metric_why(&why, CLLM_ERR_ARG, "the task has no reference (single_turn_completion) to compare with");
        else if (docs[i] && cllm_bleu(1, &ref, docs[i], CLLM_BLEU_CHAR, 0, &b, &berr) != CLLM_OK) {
            b = NAN;
            cllm__metric_why(&why, berr.code, berr.msg);
        }
        scores[i] = b;
        CLLM_FREE(docs[i]);
    }
    CLLM_FREE(docs);
    return cllm__metric_done(scores, n, "bleu", &why, err);
}

/* ---- pass_rate: run the task's unit tests on the final code --------------------------------- */

/* The code to test: the last ```python (or ```) block of the text, else the whole text. */
static char *cllm__code_block(const char *text) {
    const char *p = text, *best = NULL, *best_end = NULL;
    while ((p = strstr(p, "```")) != NULL) {
        const char *body = strchr(p + 3, '\n'), *end;
        if (!body) break;
        end = strstr(body + 1, "```");
        if (!end) break;
        best = body + 1; best_end = end;
        p = end + 3;
    }
    if (!best) return cllm__strdup(text);
    {
        size_t n = (size_t)(best_end - best);
        char *o = (char *)CLLM_MALLOC(n + 1);
        if (o) { memcpy(o, best, n); o[n] = 0; }
        return o;
    }
}

/* The task's tests: single_turn_metadata.test, or the "test" field of a JSON completion
   (BigCodeBench stores {"test": ..., "entry_point": ...} there). Returned string is owned. */
static char *cllm__task_tests(const cllm_task *t) {
    const cJSON *meta = t && t->json ? cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_metadata") : NULL;
    const char *test = cllm__json_str(meta, "test");
    if (test) return cllm__strdup(test);
    if (t && t->completion && t->completion[0] == '{') {
        cJSON *c = cJSON_Parse(t->completion);
        char *r = NULL;
        if (cllm__json_str(c, "test")) r = cllm__strdup(cllm__json_str(c, "test"));
        cJSON_Delete(c);
        return r;
    }
    return NULL;
}

#if !defined(_WIN32)
/* Runs `python file` with limits; stdout (up to 64 KB) into out. Returns the exit status, or -1
   if it could not start, -2 on timeout. The child gets its own process group so that a timeout
   kills anything it spawned. */
static int cllm__run_python(const cllm_code_config *cfg, const char *file, char *out, size_t outsize) {
    int fds[2], errfds[2], status = 0, timed_out = 0, exec_errno = 0;
    size_t got = 0;
    double deadline;
    pid_t pid;
    const char *python = cfg && cfg->python ? cfg->python : "python3";
    double timeout = cfg ? cllm__def(cfg->timeout_s, 10.0) : 10.0;
    long mem_mb = cfg ? cllm__def(cfg->memory_mb, 2048L) : 2048L;
    out[0] = 0;
    if (pipe(fds) != 0) return -1;
    /* errfds: close-on-exec, so it reads EOF once python runs, or the child's errno if exec failed */
    if (pipe(errfds) != 0) { close(fds[0]); close(fds[1]); return -1; }
    fcntl(errfds[1], F_SETFD, FD_CLOEXEC);
    pid = fork();
    if (pid < 0) { close(fds[0]); close(fds[1]); close(errfds[0]); close(errfds[1]); return -1; }
    if (pid == 0) {                               /* child: limits, stdout to the pipe, no shell */
        struct rlimit cpu, as;
        int devnull = open("/dev/null", O_WRONLY);
        char *argv[3];
        close(errfds[0]);
        setpgid(0, 0);
        cpu.rlim_cur = cpu.rlim_max = (rlim_t)(timeout + 1);
        as.rlim_cur = as.rlim_max = (rlim_t)mem_mb * 1024 * 1024;
        setrlimit(RLIMIT_CPU, &cpu);
        setrlimit(RLIMIT_AS, &as);
        dup2(fds[1], 1);
        if (devnull >= 0) { dup2(devnull, 2); dup2(devnull, 0); }
        close(fds[0]); close(fds[1]);
        argv[0] = (char *)python; argv[1] = (char *)file; argv[2] = NULL;
        execvp(python, argv);
        exec_errno = errno;
        if (write(errfds[1], &exec_errno, sizeof exec_errno) < 0) {}
        _exit(127);
    }
    close(fds[1]);
    close(errfds[1]);
    while (read(errfds[0], &exec_errno, sizeof exec_errno) < 0 && errno == EINTR) {}
    close(errfds[0]);
    if (exec_errno) {                             /* the interpreter did not start */
        close(fds[0]);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -1;
    }
    deadline = cllm__now() + timeout;
    for (;;) {
        struct pollfd pfd;
        double left = deadline - cllm__now();
        ssize_t r;
        char sink[4096];
        if (left <= 0) { timed_out = 1; break; }
        pfd.fd = fds[0]; pfd.events = POLLIN; pfd.revents = 0;
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0) continue;
        r = read(fds[0], got + 1 < outsize ? out + got : sink, got + 1 < outsize ? outsize - 1 - got : sizeof sink);
        if (r <= 0) break;                        /* EOF: the child closed its stdout */
        if (got + 1 < outsize) got += (size_t)r;
    }
    out[got] = 0;
    close(fds[0]);
    if (timed_out) { kill(-pid, SIGKILL); kill(pid, SIGKILL); }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (timed_out) return -2;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
#endif

/* Test runner appended to code + tests: runs every unittest.TestCase in the module and prints
   one marker line with the counts, which the parent reads. */
static const char cllm__unittest_runner[] =
    "\n\nimport unittest as _cllm_ut, sys as _cllm_sys, io as _cllm_io\n"
    "_cllm_suite = _cllm_ut.defaultTestLoader.loadTestsFromModule(_cllm_sys.modules[__name__])\n"
    "_cllm_res = _cllm_ut.TextTestRunner(stream=_cllm_io.StringIO(), verbosity=0).run(_cllm_suite)\n"
    "print('CLLM_TESTS %d %d' % (_cllm_res.testsRun, len(_cllm_res.failures) + len(_cllm_res.errors)))\n";

CLLMDEF cllm_result cllm_metric_pass_rate(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
#if defined(_WIN32)
    (void)ctx; (void)s; (void)n; (void)scores;
    return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "pass_rate: running code is only implemented on POSIX systems");
#else
    const cllm_code_config *cfg = (const cllm_code_config *)ctx;
    char **texts = (char **)cllm__calloc((size_t)n + 1, sizeof(char *));
    cllm_err why;
    int i;
    if (!texts) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    why.code = CLLM_OK;
    why.msg[0] = 0;
    cllm__extract_final(cfg ? cfg->extractor : NULL, "code", s, n, texts, &why);
    for (i = 0; i < n; i++) {
        char path[64], out[65536], *code = texts[i] ? cllm__code_block(texts[i]) : NULL, *tests = cllm__task_tests(s[i].task), *line;
        int fd, status, run = 0, failed = 0;
        FILE *f;
        scores[i] = NAN;
        if (!tests) cllm__metric_why(&why, CLLM_ERR_ARG, "the task has no unit tests (single_turn_metadata.test)");
        if (!code || !tests) { CLLM_FREE(code); CLLM_FREE(tests); CLLM_FREE(texts[i]); continue; }   /* nothing to run: unscored */
        snprintf(path, sizeof path, "/tmp/cllm_pass_rate_XXXXXX");
        fd = mkstemp(path);
        f = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (f) {
            fputs(code, f); fputs("\n\n", f); fputs(tests, f); fputs(cllm__unittest_runner, f);
            fclose(f);
            status = cllm__run_python(cfg, path, out, sizeof out);
            line = strstr(out, "CLLM_TESTS ");
            /* code that crashes, times out or never reaches the report passes nothing: score 0 */
            if (status >= 0 && line && sscanf(line, "CLLM_TESTS %d %d", &run, &failed) == 2 && run > 0) scores[i] = (double)(run - failed) / run;
            else if (status == -1 && !line) {                                  /* the interpreter did not start */
                scores[i] = NAN;
                cllm__metric_why(&why, CLLM_ERR_IO, "the Python interpreter (cllm_code_config.python) did not start");
            } else scores[i] = 0;
            remove(path);
        } else {
            if (fd >= 0) close(fd);
            cllm__metric_why(&why, CLLM_ERR_IO, "cannot write a temporary file in /tmp");
        }
        CLLM_FREE(code); CLLM_FREE(tests); CLLM_FREE(texts[i]);
    }
    CLLM_FREE(texts);
    return cllm__metric_done(scores, n, "pass_rate", &why, err);
#endif
}

CLLMDEF cllm_result cllm_metric_builtin(const char *name, cllm_metric *m, cllm_err *err) {
    static const struct { const char *name; cllm_metric_fn fn; } table[] = {
        { "token_amount", cllm_metric_token_amount }, { "interactivity", cllm_metric_interactivity },
        { "accuracy", cllm_metric_accuracy }, { "exact_match", cllm_metric_exact_match },
        { "bleu", cllm_metric_bleu }, { "pass_rate", cllm_metric_pass_rate } };
    size_t i;
    for (i = 0; i < sizeof table / sizeof table[0]; i++)
        if (name && strcmp(name, table[i].name) == 0) { m->name = table[i].name; m->fn = table[i].fn; cllm__ok(err); return CLLM_OK; }
    return cllm__fail(err, CLLM_ERR_ARG, "unknown metric '%s' (built-in: token_amount, interactivity, accuracy, exact_match, bleu, pass_rate)", name ? name : "(null)");
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
        return cllm__fail(err, CLLM_ERR_ARG, "BLEU: need at least one reference and a hypothesis");
    if (smoothing < CLLM_BLEU_NO_SMOOTHING || smoothing > CLLM_BLEU_METHOD2) return cllm__fail(err, CLLM_ERR_ARG, "BLEU: unknown smoothing %d", smoothing);
    for (i = 0; i < n_refs; i++) {
        int d = abs(ref_lens[i] - hyp_len), dc = abs(closest - hyp_len);
        if (ref_lens[i] < 0 || (ref_lens[i] && !refs[i])) return cllm__fail(err, CLLM_ERR_ARG, "BLEU: reference %d is invalid", i);
        if (closest < 0 || d < dc || (d == dc && ref_lens[i] < closest)) closest = ref_lens[i];
        if (ref_lens[i] > max_ref) max_ref = ref_lens[i];
    }
    H = (cllm__ngram *)cllm__calloc((size_t)hyp_len + 1, sizeof *H);
    R = (cllm__ngram *)cllm__calloc((size_t)max_ref + 1, sizeof *R);
    count = (int *)cllm__calloc((size_t)hyp_len + 1, sizeof *count);
    best = (int *)cllm__calloc((size_t)hyp_len + 1, sizeof *best);
    if (!H || !R || !count || !best) {
        CLLM_FREE(H); CLLM_FREE(R); CLLM_FREE(count); CLLM_FREE(best);
        return cllm__fail(err, CLLM_ERR_NOMEM, "BLEU: out of memory");
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

typedef struct { const int *p; int len; int *id; } cllm__bleu_tok;

static int cllm__tok_cmp(const void *a, const void *b) {
    const cllm__bleu_tok *x = (const cllm__bleu_tok *)a, *y = (const cllm__bleu_tok *)b;
    int k, m = x->len < y->len ? x->len : y->len;
    for (k = 0; k < m; k++) if (x->p[k] != y->p[k]) return x->p[k] < y->p[k] ? -1 : 1;
    return x->len - y->len;
}

/* Token level: each string's code points are split at Python whitespace and every distinct
   token gets an integer id (by sorting all tokens); seqs[i] is replaced by its id sequence. */
static cllm_result cllm__bleu_tokenize(int **seqs, int *lens, int n, cllm_err *err) {
    cllm__bleu_tok *toks;
    int **ids;
    size_t total = 0, k = 0, j;
    int i, t, id = 0;
    for (i = 0; i < n; i++) total += (size_t)lens[i];   /* no more tokens than symbols */
    toks = (cllm__bleu_tok *)cllm__calloc(total + 1, sizeof *toks);
    ids = (int **)cllm__calloc((size_t)n, sizeof *ids);
    for (i = 0; toks && ids && i < n; i++) if (!(ids[i] = (int *)cllm__calloc((size_t)lens[i] + 1, sizeof(int)))) break;
    if (!toks || !ids || i < n) {
        for (i = 0; ids && i < n; i++) CLLM_FREE(ids[i]);
        CLLM_FREE(ids); CLLM_FREE(toks);
        return cllm__fail(err, CLLM_ERR_NOMEM, "BLEU: out of memory");
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
    if (n_refs < 1 || !references || !hypothesis) return cllm__fail(err, CLLM_ERR_ARG, "BLEU: need at least one reference and a hypothesis");
    if (level != CLLM_BLEU_CHAR && level != CLLM_BLEU_TOKEN) return cllm__fail(err, CLLM_ERR_ARG, "BLEU: unknown level %d (char or token)", level);
    sym = (int **)cllm__calloc((size_t)n, sizeof *sym);
    len = (int *)cllm__calloc((size_t)n, sizeof *len);
    if (!sym || !len) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "BLEU: out of memory"); goto done; }
    for (i = 0; i < n; i++) {
        const char *s = i ? references[i - 1] : hypothesis;
        size_t bytes;
        if (!s) { rc = cllm__fail(err, CLLM_ERR_ARG, "BLEU: reference %d is NULL", i - 1); goto done; }
        bytes = strlen(s);
        if (bytes > INT_MAX / 2) { rc = cllm__fail(err, CLLM_ERR_LIMIT, "BLEU: a string of %zu bytes is too long", bytes); goto done; }
        if (!(sym[i] = (int *)cllm__calloc(bytes + 1, sizeof(int)))) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "BLEU: out of memory"); goto done; }
        len[i] = cllm__utf8_symbols(s, sym[i]);
    }
    if (level == CLLM_BLEU_TOKEN && (rc = cllm__bleu_tokenize(sym, len, n, err)) != CLLM_OK) goto done;
    rc = cllm_bleu_ids(n_refs, (const int *const *)(sym + 1), len + 1, sym[0], len[0], smoothing, bleu, err);
done:
    for (i = 0; sym && i < n; i++) CLLM_FREE(sym[i]);
    CLLM_FREE(sym); CLLM_FREE(len);
    return rc;
}

/* ---- evaluation ---------------------------------------------------------------------------------- */

CLLMDEF void cllm_eval_summary_free(cllm_eval_summary *s) {
    if (!s) return;
    CLLM_FREE(s->metric_means);
    CLLM_FREE(s->metric_counts);
    memset(s, 0, sizeof *s);
}

CLLMDEF cllm_result cllm_eval_run(const cllm_eval_config *cfg, const cllm_user_sim *user, const cllm_assistant *model,
                                  const cllm_task *tasks, int n_tasks, const char *details_path,
                                  cllm_eval_summary *summary, cllm_err *err) {
    int nm = cfg ? cfg->n_metrics : 0, i, m, t, k, n_sim = 0, n_ok = 0;
    cllm_goal *goals = (cllm_goal *)cllm__calloc((size_t)n_tasks + 1, sizeof *goals);
    cllm_conv *convs = (cllm_conv *)cllm__calloc((size_t)n_tasks + 1, sizeof *convs);
    cllm_sim_status *st = (cllm_sim_status *)cllm__calloc((size_t)n_tasks + 1, sizeof *st);
    cllm_session *ses = (cllm_session *)cllm__calloc((size_t)n_tasks + 1, sizeof *ses);
    cllm_err *why = (cllm_err *)cllm__calloc((size_t)n_tasks + 1, sizeof *why);      /* a metric's failure, per task */
    int *ok_idx = (int *)cllm__calloc((size_t)n_tasks + 1, sizeof(int));
    double *scores = (double *)cllm__calloc((size_t)n_tasks * (nm + 1) + 1, sizeof(double));
    double *col = (double *)cllm__calloc((size_t)n_tasks + 1, sizeof(double));
    cJSON *details = cJSON_CreateArray();
    cllm_result rc = CLLM_OK;
    memset(summary, 0, sizeof *summary);
    if (!cfg || !user || !model || n_tasks < 0 || (n_tasks && !tasks)) { rc = cllm__fail(err, CLLM_ERR_ARG, "evaluation: needs a config, a simulator, a model and tasks"); goto done; }
    summary->metric_means = (double *)cllm__calloc((size_t)nm + 1, sizeof(double));
    summary->metric_counts = (int *)cllm__calloc((size_t)nm + 1, sizeof(int));
    if (!goals || !convs || !st || !ses || !why || !ok_idx || !scores || !col || !details || !summary->metric_means ||
        !summary->metric_counts) { rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); goto done; }
    for (t = 0; t < n_tasks; t++) {
        goals[t].task_desc = cfg->task_desc ? cfg->task_desc : "a task";
        goals[t].prompt = tasks[t].prompt;
        goals[t].reference = cfg->show_reference ? tasks[t].completion : NULL;
    }
    /* every conversation runs in lockstep: one batch of simulator calls per round */
    cllm_simulate(user, model, goals, convs, n_tasks, 2 * cllm__def(cfg->max_turns, 7), st, NULL);
    for (t = 0; t < n_tasks; t++) {
        for (m = 0; m < nm; m++) scores[(size_t)t * nm + m] = NAN;
        if (st[t].code != CLLM_OK) continue;                        /* a failed conversation is not scored */
        ses[n_sim].goal = &goals[t]; ses[n_sim].task = &tasks[t]; ses[n_sim].conv = &convs[t];
        ses[n_sim].n_history = convs[t].n > 0 ? 1 : 0;
        ok_idx[n_sim++] = t;
    }
    for (m = 0; m < nm; m++) {                                     /* each metric on every simulated conversation */
        cllm_err merr;
        cllm_result mrc = CLLM_OK;
        merr.code = CLLM_OK;
        merr.msg[0] = 0;
        for (k = 0; k < n_sim; k++) col[k] = NAN;
        if (n_sim) mrc = cfg->metrics[m].fn(cfg->metrics[m].ctx, ses, n_sim, col, &merr);
        for (k = 0; k < n_sim; k++) {
            t = ok_idx[k];
            scores[(size_t)t * nm + m] = mrc == CLLM_OK ? col[k] : NAN;
            if (scores[(size_t)t * nm + m] == scores[(size_t)t * nm + m] || why[t].code != CLLM_OK) continue;
            cllm__fail(&why[t], mrc != CLLM_OK ? mrc : CLLM_ERR_FORMAT,
                       "metric '%s' could not score this conversation: %s",
                       cfg->metrics[m].name, merr.msg[0] ? merr.msg : "it gave no reason");
        }
    }
    summary->n_tasks = n_tasks;
    for (t = 0; t < n_tasks; t++) {
        cJSON *o = cJSON_CreateObject(), *mo;
        long tokens = 0;
        int turns = 0, incomplete = cllm__conv_incomplete(&convs[t]);
        for (i = 0; i < convs[t].n; i++) {
            if (strcmp(convs[t].msgs[i].role, "assistant") == 0) tokens += cllm_count_tokens(&cfg->tokens, convs[t].msgs[i].content);
            else turns++;
        }
        cJSON_AddNumberToObject(o, "conv_id", t);
        cJSON_AddItemToObject(o, "messages", cllm_conv_to_json(&convs[t]));
        cJSON_AddBoolToObject(o, "terminated", st[t].terminated);
        if (incomplete) cJSON_AddNumberToObject(o, "incomplete_messages", incomplete);
        mo = cJSON_AddObjectToObject(o, "metrics");
        for (m = 0; m < nm; m++) {
            double v = scores[(size_t)t * nm + m];
            if (v == v) cJSON_AddNumberToObject(mo, cfg->metrics[m].name, v); else cJSON_AddNullToObject(mo, cfg->metrics[m].name);
            if (v != v) continue;
            summary->metric_means[m] += v;
            summary->metric_counts[m]++;
        }
        cJSON_AddNumberToObject(o, "assistant_tokens", (double)tokens);
        cJSON_AddNumberToObject(o, "user_turns", turns);
        if (st[t].code != CLLM_OK) cJSON_AddStringToObject(o, "error", st[t].err.msg);
        else if (why[t].code != CLLM_OK) cJSON_AddStringToObject(o, "error", why[t].msg);
        cllm__add_task_fields(o, &tasks[t]);
        cJSON_AddItemToArray(details, o);
        if (st[t].code != CLLM_OK || why[t].code != CLLM_OK) summary->n_failed++;
        if (st[t].code != CLLM_OK) continue;
        n_ok++;
        summary->tokens_k += tokens / 1000.0;
        summary->turns += turns;
    }
    for (m = 0; m < nm; m++) {                                     /* nothing scored: NAN, never a 0 */
        int count = summary->metric_counts[m];
        summary->metric_means[m] = count ? summary->metric_means[m] / count : NAN;
    }
    summary->tokens_k = n_ok ? summary->tokens_k / n_ok : NAN;
    summary->turns = n_ok ? summary->turns / n_ok : NAN;
    if (details_path) rc = cllm__write_jsonl(details_path, details, err);
    if (rc == CLLM_OK && summary->n_failed) {
        for (t = 0; t < n_tasks && st[t].code == CLLM_OK && why[t].code == CLLM_OK; t++) {}
        const cllm_err *first = st[t].code != CLLM_OK ? &st[t].err : &why[t];
        rc = cllm__fail(err, first->code, "%d of %d conversations failed; they are left out of the averages they lack "
                        "(see the \"error\" field of the details). First (#%d): %s", summary->n_failed, n_tasks, t,
                        first->msg);
    }
done:
    for (t = 0; convs && t < n_tasks; t++) cllm_conv_free(&convs[t]);
    CLLM_FREE(goals); CLLM_FREE(convs); CLLM_FREE(st); CLLM_FREE(ses); CLLM_FREE(why); CLLM_FREE(ok_idx);
    CLLM_FREE(scores); CLLM_FREE(col);
    cJSON_Delete(details);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* Training: SFT, DPO, LoRA, checkpoints                                                        */
/* -------------------------------------------------------------------------------------------- */

#if !defined(_WIN32)
#include <dirent.h>
#endif

/* ---- tokenized examples ------------------------------------------------------------------- */

CLLMDEF void cllm_train_seq_free(cllm_train_seq *s) {
    if (!s) return;
    CLLM_FREE(s->ids); CLLM_FREE(s->target);
    memset(s, 0, sizeof *s);
}

CLLMDEF int cllm_train_seq_targets(const cllm_train_seq *s) {
    int i, n = 0;
    for (i = 1; i < s->n; i++) n += s->target[i] != 0;
    return n;
}

/* prompt | completion  ->  (last keep_prompt tokens of the prompt) | (first tokens of the completion) */
CLLMDEF int cllm_train_seq_truncate(cllm_train_seq *s, int max_length, int keep_prompt) {
    int P = s->n_prompt, C = s->n - s->n_prompt, drop, keep_c;
    if (max_length <= 0) return 0;
    if (keep_prompt < 0) keep_prompt = s->n <= max_length ? P : max_length - C;
    if (keep_prompt < 1) keep_prompt = 1;          /* one token to predict the completion from */
    if (keep_prompt > P) keep_prompt = P;
    drop = P - keep_prompt;
    keep_c = max_length - keep_prompt < C ? max_length - keep_prompt : C;
    if (keep_c < 0) keep_c = 0;
    if (drop == 0 && keep_c == C) return 0;
    memmove(s->ids, s->ids + drop, sizeof(int) * (size_t)(keep_prompt + keep_c));
    memmove(s->target, s->target + drop, (size_t)(keep_prompt + keep_c));
    s->n = keep_prompt + keep_c;
    s->n_prompt = keep_prompt;
    if (s->n) s->target[0] = 0;                    /* the first token predicts nothing */
    return 1;
}

/* Takes ownership of ids/target (n tokens) into seq. */
static cllm_result cllm__seq_from(cllm_train_seq *seq, const int *ids, const unsigned char *target, int n, int n_prompt, cllm_err *err) {
    memset(seq, 0, sizeof *seq);
    seq->ids = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    seq->target = (unsigned char *)cllm__calloc((size_t)n + 1, 1);
    if (!seq->ids || !seq->target) { cllm_train_seq_free(seq); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    memcpy(seq->ids, ids, sizeof(int) * (size_t)n);
    memcpy(seq->target, target, (size_t)n);
    seq->target[0] = 0;
    seq->n = n;
    seq->n_prompt = n_prompt;
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_sft_seq(const cllm_tokenizer *tok, const cllm_message *msgs, int n, cllm_train_seq *seq, cllm_err *err) {
    int *ids = NULL, n_ids = 0, start, i;
    unsigned char *mask = NULL;
    cllm_result rc;
    memset(seq, 0, sizeof *seq);
    rc = cllm_chat_render(tok, msgs, n, NULL, NULL, &ids, &mask, &n_ids, err);
    if (rc != CLLM_OK) return rc;
    /* the completion side is the last run of targets: the final assistant message */
    for (start = n_ids - 1; start >= 1 && !mask[start]; start--) {}
    while (start >= 1 && mask[start - 1]) start--;
    if (start < 1) { CLLM_FREE(ids); CLLM_FREE(mask); return cllm__fail(err, CLLM_ERR_FORMAT, "the conversation has no assistant message to train on"); }
    for (i = 0; i < n_ids; i++) mask[i] = mask[i] != 0;
    rc = cllm__seq_from(seq, ids, mask, n_ids, start, err);
    CLLM_FREE(ids); CLLM_FREE(mask);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

CLLMDEF cllm_result cllm_completion_seq(const cllm_tokenizer *tok, const cllm_message *prompt, int n_prompt,
                                        const cllm_message *completion, int n_completion, cllm_train_seq *seq, cllm_err *err) {
    cllm_render_opts gen;
    cllm_message *all = NULL;
    char *ptext = NULL, *text = NULL;
    int *ids = NULL, *ids2 = NULL, *offs = NULL, n_ids = 0, n2 = 0, first = -1, last = -1, i;
    unsigned char *mask = NULL;
    size_t P;
    cllm_result rc;
    memset(seq, 0, sizeof *seq);
    if (n_prompt < 1 || n_completion < 1 || !prompt || !completion)
        return cllm__fail(err, CLLM_ERR_ARG, "a pair needs at least one prompt message and one completion message");
    if (prompt[n_prompt - 1].role && strcmp(prompt[n_prompt - 1].role, "assistant") == 0)
        return cllm__fail(err, CLLM_ERR_FORMAT, "the prompt ends with an assistant message; it must end with the user's turn");
    for (i = 0; i < n_completion && !(completion[i].role && strcmp(completion[i].role, "assistant") == 0); i++) {}
    if (i == n_completion) return cllm__fail(err, CLLM_ERR_FORMAT, "the completion holds no assistant message");
    memset(&gen, 0, sizeof gen);
    gen.add_generation_prompt = 1;
    all = (cllm_message *)cllm__calloc((size_t)n_prompt + (size_t)n_completion, sizeof *all);
    if (!all) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    memcpy(all, prompt, sizeof *all * (size_t)n_prompt);
    memcpy(all + n_prompt, completion, sizeof *all * (size_t)n_completion);
    if ((rc = cllm_chat_render(tok, prompt, n_prompt, &gen, &ptext, NULL, NULL, NULL, err)) != CLLM_OK) goto done;
    if ((rc = cllm_chat_render(tok, all, n_prompt + n_completion, NULL, &text, &ids, &mask, &n_ids, err)) != CLLM_OK) goto done;
    P = strlen(ptext);
    if (strncmp(text, ptext, P) != 0) {
        rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "the chat template renders the prompt differently inside the whole conversation, so the completion cannot be located");
        goto done;
    }
    /* the same ids again, with byte offsets: a target starts at or after the prompt's end */
    if ((rc = cllm_tokenizer_encode(tok, text, strlen(text), 0, &ids2, &n2, &offs, err)) != CLLM_OK) goto done;
    CLLM_ASSERT(n2 == n_ids);
    for (i = 0; i < n_ids; i++) {
        mask[i] = mask[i] && (size_t)offs[2 * i] >= P && i > 0;
        if (mask[i]) { if (first < 0) first = i; last = i; }
    }
    if (first < 0) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "the completion has no assistant tokens (it must hold an assistant message)"); goto done; }
    rc = cllm__seq_from(seq, ids, mask, last + 1, first, err);
done:
    CLLM_FREE(all); CLLM_FREE(ptext); CLLM_FREE(text); CLLM_FREE(ids); CLLM_FREE(ids2); CLLM_FREE(offs); CLLM_FREE(mask);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* ---- SFT rows and DPO pairs from JSONL ---------------------------------------------------- */

/* Puts where it happened in front of the message a callee left in err; returns rc. */
static cllm_result cllm__fail_where(cllm_err *err, cllm_result rc, const char *path, int line, const char *what) {
    char msg[CLLM_ERRMSG_SIZE];
    snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
    if (line > 0) return cllm__fail(err, rc, "%s:%d: %s%s", path, line, what, msg);
    return cllm__fail(err, rc, "%s%s", what, msg);
}

static cllm_result cllm__check_max_length(int *max_length, cllm_err *err) {
    *max_length = cllm__def(*max_length, 1024);
    if (*max_length < 2) return cllm__fail(err, CLLM_ERR_ARG, "max_length must be at least 2 (got %d)", *max_length);
    return CLLM_OK;
}

CLLMDEF void cllm_sft_data_free(cllm_sft_data *d) {
    int i;
    if (!d) return;
    for (i = 0; i < d->n; i++) cllm_train_seq_free(&d->rows[i]);
    stbds_arrfree(d->rows);
    memset(d, 0, sizeof *d);
}

CLLMDEF cllm_result cllm_sft_data_load(cllm_sft_data *d, const cllm_tokenizer *tok, const char *path, int max_length, cllm_err *err) {
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    long len;
    int lineno = 0;
    cllm_result rc;
    memset(d, 0, sizeof *d);
    if ((rc = cllm__check_max_length(&max_length, err)) != CLLM_OK) return rc;
    if (!(f = cllm__open_read(path, "a JSONL file", err))) return CLLM_ERR_IO;
    while ((len = cllm__read_line(f, &line, &cap)) >= 0 && rc == CLLM_OK) {
        cJSON *row;
        cllm_conv conv;
        cllm_train_seq seq;
        lineno++;
        if (len == 0) continue;
        if (!(row = cllm__jsonl_parse(line, (size_t)len, path, lineno, err))) { rc = CLLM_ERR_FORMAT; break; }
        rc = cllm_conv_from_json(&conv, cJSON_GetObjectItemCaseSensitive(row, "messages"), err);
        if (rc == CLLM_OK) {
            rc = cllm_sft_seq(tok, conv.msgs, conv.n, &seq, err);
            cllm_conv_free(&conv);
        }
        cJSON_Delete(row);
        if (rc != CLLM_OK) { rc = cllm__fail_where(err, rc, path, lineno, "\"messages\": "); break; }
        d->n_truncated += cllm_train_seq_truncate(&seq, max_length, -1);
        stbds_arrput(d->rows, seq);
        d->n++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && d->n == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no rows", path);
    if (rc != CLLM_OK) { cllm_sft_data_free(d); return rc; }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF void cllm_dpo_data_free(cllm_dpo_data *d) {
    int i;
    if (!d) return;
    for (i = 0; d->pairs && i < d->n; i++) { cllm_train_seq_free(&d->pairs[i].chosen); cllm_train_seq_free(&d->pairs[i].rejected); }
    stbds_arrfree(d->pairs);
    memset(d, 0, sizeof *d);
}

/* A completion: a list of messages, or a string meaning one assistant message. */
static cllm_result cllm__completion_json(cllm_conv *c, const cJSON *j, cllm_err *err) {
    memset(c, 0, sizeof *c);
    if (cJSON_IsString(j)) return cllm_conv_push(c, "assistant", j->valuestring, err);
    return cllm_conv_from_json(c, j, err);
}

/* One pair line into p (tokenized, truncated together). */
static cllm_result cllm__dpo_pair_parse(cllm_dpo_pair *p, const cllm_tokenizer *tok, const cJSON *row, int max_length, int *truncated, cllm_err *err) {
    cllm_conv prompt, chosen, rejected;
    const cJSON *rc_j = cJSON_GetObjectItemCaseSensitive(row, "ref_chosen_logps"), *rr_j = cJSON_GetObjectItemCaseSensitive(row, "ref_rejected_logps");
    const char *what = "\"prompt\": ";
    cllm_result rc;
    int keep;
    memset(p, 0, sizeof *p);
    memset(&chosen, 0, sizeof chosen); memset(&rejected, 0, sizeof rejected);
    rc = cllm_conv_from_json(&prompt, cJSON_GetObjectItemCaseSensitive(row, "prompt"), err);
    if (rc == CLLM_OK) { what = "\"chosen\": "; rc = cllm__completion_json(&chosen, cJSON_GetObjectItemCaseSensitive(row, "chosen"), err); }
    if (rc == CLLM_OK) { what = "\"rejected\": "; rc = cllm__completion_json(&rejected, cJSON_GetObjectItemCaseSensitive(row, "rejected"), err); }
    if (rc == CLLM_OK) { what = "\"chosen\": "; rc = cllm_completion_seq(tok, prompt.msgs, prompt.n, chosen.msgs, chosen.n, &p->chosen, err); }
    if (rc == CLLM_OK) { what = "\"rejected\": "; rc = cllm_completion_seq(tok, prompt.msgs, prompt.n, rejected.msgs, rejected.n, &p->rejected, err); }
    cllm_conv_free(&prompt); cllm_conv_free(&chosen); cllm_conv_free(&rejected);
    if (rc != CLLM_OK) {
        cllm_train_seq_free(&p->chosen); cllm_train_seq_free(&p->rejected);
        return cllm__fail_where(err, rc, NULL, 0, what);
    }
    p->ref_chosen = p->ref_rejected = NAN;
    if ((rc_j && !cJSON_IsNumber(rc_j)) || (rr_j && !cJSON_IsNumber(rr_j)) || (!rc_j) != (!rr_j)) {
        cllm_train_seq_free(&p->chosen); cllm_train_seq_free(&p->rejected);
        return cllm__fail(err, CLLM_ERR_FORMAT, "\"ref_chosen_logps\" and \"ref_rejected_logps\" must both be numbers, or both be absent");
    }
    if (rc_j) { p->ref_chosen = rc_j->valuedouble; p->ref_rejected = rr_j->valuedouble; }
    /* one prompt cut for both, from the longer completion, so they keep the same prompt */
    keep = max_length - (p->chosen.n - p->chosen.n_prompt > p->rejected.n - p->rejected.n_prompt ?
                         p->chosen.n - p->chosen.n_prompt : p->rejected.n - p->rejected.n_prompt);
    if (p->chosen.n <= max_length && p->rejected.n <= max_length) keep = -1;   /* nothing to cut */
    else if (keep < 1) keep = 1;
    *truncated = cllm_train_seq_truncate(&p->chosen, max_length, keep) | cllm_train_seq_truncate(&p->rejected, max_length, keep);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_dpo_data_load(cllm_dpo_data *d, const cllm_tokenizer *tok, const char *path, int max_length, cllm_err *err) {
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    long len;
    int lineno = 0, with_ref = 0;
    cllm_result rc;
    memset(d, 0, sizeof *d);
    if ((rc = cllm__check_max_length(&max_length, err)) != CLLM_OK) return rc;
    if (!(f = cllm__open_read(path, "a JSONL file", err))) return CLLM_ERR_IO;
    while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *row;
        cllm_dpo_pair p;
        int cut = 0;
        lineno++;
        if (len == 0) continue;
        if (!(row = cllm__jsonl_parse(line, (size_t)len, path, lineno, err))) { rc = CLLM_ERR_FORMAT; break; }
        rc = cllm__dpo_pair_parse(&p, tok, row, max_length, &cut, err);
        cJSON_Delete(row);
        if (rc != CLLM_OK) { rc = cllm__fail_where(err, rc, path, lineno, ""); break; }
        p.line = lineno;
        d->n_truncated += cut;
        with_ref += !isnan(p.ref_chosen);
        stbds_arrput(d->pairs, p);
        d->n++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && d->n == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no pairs", path);
    if (rc == CLLM_OK && with_ref && with_ref != d->n)
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: %d of %d pairs carry ref_chosen_logps/ref_rejected_logps; give them for all pairs or none", path, with_ref, d->n);
    if (rc != CLLM_OK) { cllm_dpo_data_free(d); return rc; }
    d->has_ref = with_ref == d->n;
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- sequences as right-padded batches ----------------------------------------------------- */

/* A (B, T) batch of n sequences: pad id 0 (never attended to), labels = the id at targets and
   -100 elsewhere, so that cllm_forward's per-row sum is the sum of the targets' log-probs. */

static void cllm__seq_batch_free(cllm__seq_batch *sb) {
    CLLM_FREE(sb->ids); CLLM_FREE(sb->labels); CLLM_FREE(sb->mask);
    memset(sb, 0, sizeof *sb);
}

static cllm_result cllm__seq_batch_make(cllm__seq_batch *sb, const cllm_train_seq *const *seqs, int n, cllm_err *err) {
    int T = 0, b, t;
    size_t BT;
    memset(sb, 0, sizeof *sb);
    for (b = 0; b < n; b++) {
        if (seqs[b]->n < 1) return cllm__fail(err, CLLM_ERR_ARG, "an empty training sequence");
        if (seqs[b]->n > T) T = seqs[b]->n;
    }
    BT = (size_t)n * (size_t)T;
    sb->ids = (int *)cllm__calloc(BT, sizeof(int));
    sb->labels = (int *)cllm__calloc(BT, sizeof(int));
    sb->mask = (int *)cllm__calloc(BT, sizeof(int));
    if (!sb->ids || !sb->labels || !sb->mask) { cllm__seq_batch_free(sb); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for a %d x %d batch", n, T); }
    for (b = 0; b < n; b++) for (t = 0; t < T; t++) {
        size_t i = (size_t)b * T + t;
        int real = t < seqs[b]->n;
        sb->ids[i] = real ? seqs[b]->ids[t] : 0;
        sb->mask[i] = real;
        sb->labels[i] = real && seqs[b]->target[t] ? seqs[b]->ids[t] : -100;
    }
    sb->batch.B = n; sb->batch.T = T;
    sb->batch.input_ids = sb->ids; sb->batch.labels = sb->labels; sb->batch.attn_mask = sb->mask;
    return CLLM_OK;
}

/* Per-row sums of the target log-probs of the last forward, in double. */
static void cllm__row_logps(const cllm_model *m, double *out) {
    int b, t;
    for (b = 0; b < m->B; b++) {
        double s = 0;
        for (t = 0; t < m->T; t++) if (m->targets[b * m->T + t] >= 0) s += m->acts.logp[b * m->T + t];
        out[b] = s;
    }
}

static long cllm__batch_tokens(const cllm__seq_batch *sb) {
    size_t i, BT = (size_t)sb->batch.B * (size_t)sb->batch.T;
    long n = 0;
    for (i = 0; i < BT; i++) n += sb->mask[i];
    return n;
}

CLLMDEF cllm_result cllm_seq_logps(cllm_model *m, const cllm_train_seq *const *seqs, int n, int batch_size, double *logps, cllm_err *err) {
    int done;
    batch_size = cllm__def(batch_size, 8);
    if (batch_size < 1 || n < 0) return cllm__fail(err, CLLM_ERR_ARG, "sequence log-probs: batch_size must be positive");
    for (done = 0; done < n; done += batch_size) {
        int k = n - done < batch_size ? n - done : batch_size;
        cllm__seq_batch sb;
        cllm_result rc = cllm__seq_batch_make(&sb, seqs + done, k, err);
        if (rc == CLLM_OK) rc = cllm_forward(m, &sb.batch, NULL, err);
        if (rc == CLLM_OK) cllm__row_logps(m, logps + done);
        cllm__seq_batch_free(&sb);
        if (rc != CLLM_OK) return rc;
    }
    cllm__ok(err);
    return CLLM_OK;
}

/* Writes in_path's non-empty lines to out_path with the two reference fields set. */
static cllm_result cllm__write_ref_pairs(const cllm_dpo_data *d, const char *in_path, const char *out_path, cllm_err *err) {
    FILE *f = cllm__open_read(in_path, "a JSONL file", err);
    char *line = NULL;
    size_t cap = 0;
    long len;
    int lineno = 0, k = 0;
    cllm__sb out = { NULL, 0, 0, 0 };
    cllm_result rc = CLLM_OK;
    if (!f) return CLLM_ERR_IO;
    while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *row;
        char *text;
        lineno++;
        if (len == 0) continue;
        if (k >= d->n || d->pairs[k].line != lineno) { rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s changed since it was loaded (line %d)", in_path, lineno); break; }
        if (!(row = cllm__jsonl_parse(line, (size_t)len, in_path, lineno, err))) { rc = CLLM_ERR_FORMAT; break; }
        cJSON_DeleteItemFromObjectCaseSensitive(row, "ref_chosen_logps");
        cJSON_DeleteItemFromObjectCaseSensitive(row, "ref_rejected_logps");
        cJSON_AddNumberToObject(row, "ref_chosen_logps", d->pairs[k].ref_chosen);
        cJSON_AddNumberToObject(row, "ref_rejected_logps", d->pairs[k].ref_rejected);
        text = cJSON_PrintUnformatted(row);
        cJSON_Delete(row);
        if (!text) { out.oom = 1; break; }
        cllm__sb_puts(&out, text); cllm__sb_putc(&out, '\n');
        cJSON_free(text);
        k++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, in_path, lineno + 1, len);
    if (rc == CLLM_OK && out.oom) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (rc == CLLM_OK) rc = cllm_write_file_atomic(out_path, out.p ? out.p : "", out.n, err);
    cllm__sb_free(&out);
    return rc;
}

CLLMDEF cllm_result cllm_dpo_precompute_ref(cllm_model *ref, cllm_dpo_data *d, int batch_size, const char *in_path, const char *out_path, cllm_err *err) {
    const cllm_train_seq **seqs = (const cllm_train_seq **)cllm__calloc((size_t)d->n * 2 + 1, sizeof *seqs);
    double *lp = (double *)cllm__calloc((size_t)d->n * 2 + 1, sizeof(double));
    cllm_result rc;
    int i;
    if (!seqs || !lp) { CLLM_FREE(seqs); CLLM_FREE(lp); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    for (i = 0; i < d->n; i++) { seqs[2 * i] = &d->pairs[i].chosen; seqs[2 * i + 1] = &d->pairs[i].rejected; }
    rc = cllm_seq_logps(ref, seqs, 2 * d->n, batch_size, lp, err);
    if (rc == CLLM_OK) {
        for (i = 0; i < d->n; i++) { d->pairs[i].ref_chosen = lp[2 * i]; d->pairs[i].ref_rejected = lp[2 * i + 1]; }
        d->has_ref = 1;
        if (out_path) rc = cllm__write_ref_pairs(d, in_path, out_path, err);
    }
    CLLM_FREE(seqs); CLLM_FREE(lp);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* ---- LoRA adapters: storage, PEFT files, merging ------------------------------------------- */

static const char *cllm__lora_names[CLLM_LORA_NUM_TARGETS] = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };
static const char *cllm__lora_short[CLLM_LORA_NUM_TARGETS] = { "q", "k", "v", "o", "gate", "up", "down" };
/* the base weight each target adapts, as a cllm_params tensor index */
static const int cllm__lora_param[CLLM_LORA_NUM_TARGETS] = { CLLM__P_WQ, CLLM__P_WK, CLLM__P_WV, CLLM__P_WO, CLLM__P_GATE, CLLM__P_UP, CLLM__P_DOWN };

CLLMDEF const char *cllm_lora_target_name(int t) { return t >= 0 && t < CLLM_LORA_NUM_TARGETS ? cllm__lora_names[t] : "?"; }

CLLMDEF cllm_result cllm_lora_parse_targets(const char *list, unsigned *targets, cllm_err *err) {
    const char *p = list;
    *targets = 0;
    if (!list) return cllm__fail(err, CLLM_ERR_ARG, "no LoRA targets given");
    if (strcmp(list, "all") == 0) { *targets = CLLM_LORA_ALL; return CLLM_OK; }
    while (*p) {
        size_t n = strcspn(p, ",");
        int t, found = -1;
        for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++)
            if ((strlen(cllm__lora_short[t]) == n && strncmp(p, cllm__lora_short[t], n) == 0) ||
                (strlen(cllm__lora_names[t]) == n && strncmp(p, cllm__lora_names[t], n) == 0)) found = t;
        if (found < 0) return cllm__fail(err, CLLM_ERR_ARG, "LoRA target '%.*s' is not one of q, k, v, o, gate, up, down", (int)n, p);
        *targets |= 1u << found;
        p += n;
        if (*p == ',') p++;
    }
    if (!*targets) return cllm__fail(err, CLLM_ERR_ARG, "no LoRA targets given");
    return CLLM_OK;
}

/* Weight of target t in layer l of the base model: (out, in). */
static cllm_float *cllm__lora_base(const cllm_model *m, int t, int l) {
    cllm_float **ptrs[CLLM_NUM_PARAM_TENSORS];
    cllm_params p = m->params;
    cllm__param_ptrs(&p, ptrs);
    return *ptrs[cllm__lora_param[t]] + (size_t)l * m->param_sizes[cllm__lora_param[t]] / (size_t)m->config.n_layers;
}

/* Storage for the adapters of cfg on m (all zero), attached to m. */
static cllm_result cllm__lora_setup(cllm_lora *lo, cllm_model *m, const cllm_lora_config *cfg, cllm_err *err) {
    const cllm_config *c = &m->config;
    int Q = c->n_heads * c->head_dim, K = c->n_kv_heads * c->head_dim, t;
    int ins[CLLM_LORA_NUM_TARGETS], outs[CLLM_LORA_NUM_TARGETS];
    memset(lo, 0, sizeof *lo);
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "LoRA: the model is not loaded");
    if (m->lora) return cllm__fail(err, CLLM_ERR_ARG, "LoRA: the model already has adapters attached");
    if (cfg) lo->cfg = *cfg;
    lo->cfg.r = cllm__def(lo->cfg.r, 32);
    lo->cfg.alpha = cllm__def(lo->cfg.alpha, 16.0);
    lo->cfg.dropout = cllm__def(lo->cfg.dropout, 0.1);
    if (lo->cfg.dropout < 0) lo->cfg.dropout = 0;
    lo->cfg.targets = cllm__def(lo->cfg.targets, (unsigned)CLLM_LORA_ALL);
    lo->cfg.seed = cllm__def(lo->cfg.seed, 42);
    if (lo->cfg.r < 1 || lo->cfg.r > CLLM_LORA_MAX_R) return cllm__fail(err, CLLM_ERR_ARG, "LoRA: r must be in [1, %d] (got %d)", CLLM_LORA_MAX_R, lo->cfg.r);
    if (!(lo->cfg.alpha > 0)) return cllm__fail(err, CLLM_ERR_ARG, "LoRA: alpha must be positive (got %g)", lo->cfg.alpha);
    if (!(lo->cfg.dropout < 1)) return cllm__fail(err, CLLM_ERR_ARG, "LoRA: dropout must be below 1 (got %g)", lo->cfg.dropout);
    if (lo->cfg.targets & ~(unsigned)CLLM_LORA_ALL) return cllm__fail(err, CLLM_ERR_ARG, "LoRA: unknown target bits 0x%x", lo->cfg.targets);
    ins[0] = ins[1] = ins[2] = c->hidden_size; outs[0] = Q; outs[1] = outs[2] = K;
    ins[3] = Q; outs[3] = c->hidden_size;
    ins[4] = ins[5] = c->hidden_size; outs[4] = outs[5] = c->intermediate_size;
    ins[6] = c->intermediate_size; outs[6] = c->hidden_size;
    lo->n_layers = c->n_layers;
    lo->scale = lo->cfg.alpha / lo->cfg.r;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        lo->in[t] = ins[t]; lo->out[t] = outs[t];
        if (lo->cfg.targets & (1u << t)) lo->num_params += (size_t)lo->n_layers * (size_t)lo->cfg.r * (size_t)(ins[t] + outs[t]);
    }
    lo->params = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
    if (!lo->params) return cllm__fail(err, CLLM_ERR_NOMEM, "LoRA: out of memory for %zu adapter parameters", lo->num_params);
    cllm__lora_point(lo, lo->params, lo->A, lo->B);
    lo->enabled = 1;
    lo->model = m;
    m->lora = lo;
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_lora_init(cllm_lora *lo, cllm_model *m, const cllm_lora_config *cfg, cllm_err *err) {
    cllm_rng rng;
    size_t k, n;
    int t;
    cllm_result rc = cllm__lora_setup(lo, m, cfg, err);
    if (rc != CLLM_OK) { cllm_lora_free(lo); return rc; }
    /* PEFT "gaussian": A ~ N(0, std 1/r), drawn target by target, layer by layer, row-major; B = 0 */
    cllm_rng_seed(&rng, lo->cfg.seed);
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        if (!lo->A[t]) continue;
        n = (size_t)lo->n_layers * (size_t)lo->cfg.r * (size_t)lo->in[t];
        for (k = 0; k < n; k++) lo->A[t][k] = (cllm_float)(cllm_rng_normal(&rng) / lo->cfg.r);
    }
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF void cllm_lora_free(cllm_lora *lo) {
    if (!lo) return;
    if (lo->model && lo->model->lora == lo) lo->model->lora = NULL;
    CLLM_FREE(lo->params); CLLM_FREE(lo->grads); CLLM_FREE(lo->m); CLLM_FREE(lo->v); CLLM_FREE(lo->u); CLLM_FREE(lo->xd);
    memset(lo, 0, sizeof *lo);
}

/* The adapters (memory = params, grads, m or v) as checkpoint entries with PEFT's names. */
static int cllm__lora_entries(const cllm_lora *lo, const cllm_float *memory, const char *prefix, cllm_st_entry *entries) {
    int t, l, ab, n = 0;
    size_t r = (size_t)lo->cfg.r;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        if (!(lo->cfg.targets & (1u << t))) continue;
        for (ab = 0; ab < 2; ab++) for (l = 0; l < lo->n_layers; l++) {
            cllm_st_entry *e = &entries[n++];
            size_t rows = ab ? (size_t)lo->out[t] : r, cols = ab ? r : (size_t)lo->in[t];
            snprintf(e->name, sizeof e->name, "%sbase_model.model.model.layers.%d.%s.%s.lora_%c.weight", prefix ? prefix : "", l,
                     t < 4 ? "self_attn" : "mlp", cllm__lora_names[t], ab ? 'B' : 'A');
            e->dtype = CLLM_DT_F32;
            e->ndim = 2;
            e->shape[0] = (int64_t)rows; e->shape[1] = (int64_t)cols;
            e->data = memory + (ab ? (size_t)lo->n_layers * r * (size_t)lo->in[t] : 0) + (size_t)l * rows * cols;   /* B after all of A */
        }
        memory += (size_t)lo->n_layers * r * (size_t)(lo->in[t] + lo->out[t]);
    }
    return n;
}

static int cllm__lora_tensor_count(const cllm_lora *lo) {
    int t, n = 0;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) if (lo->cfg.targets & (1u << t)) n += 2 * lo->n_layers;
    return n;
}

CLLMDEF cllm_result cllm_lora_save(const cllm_lora *lo, const char *dir, const char *base_model, cllm_err *err) {
    cllm_st_entry *entries;
    cJSON *cfg, *tm;
    char path[4096], *json;
    cllm_result rc;
    int t, n;
    if (!lo->params) return cllm__fail(err, CLLM_ERR_ARG, "LoRA: no adapters to save");
    if ((rc = cllm__mkdir(dir, err)) != CLLM_OK) return rc;
    entries = (cllm_st_entry *)cllm__calloc((size_t)cllm__lora_tensor_count(lo) + 1, sizeof *entries);
    if (!entries) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    n = cllm__lora_entries(lo, lo->params, NULL, entries);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    rc = cllm_st_save(path, entries, n, err);
    CLLM_FREE(entries);
    if (rc != CLLM_OK) return rc;
    /* PEFT's LoraConfig, as save_pretrained writes it */
    cfg = cJSON_CreateObject();
    if (!cfg) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    cJSON_AddItemToObject(cfg, "alpha_pattern", cJSON_CreateObject());
    if (base_model) cJSON_AddStringToObject(cfg, "base_model_name_or_path", base_model); else cJSON_AddNullToObject(cfg, "base_model_name_or_path");
    cJSON_AddStringToObject(cfg, "bias", "none");
    cJSON_AddBoolToObject(cfg, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(cfg, "inference_mode", 1);
    cJSON_AddStringToObject(cfg, "init_lora_weights", "gaussian");
    cJSON_AddNullToObject(cfg, "layers_pattern");
    cJSON_AddNullToObject(cfg, "layers_to_transform");
    cJSON_AddNumberToObject(cfg, "lora_alpha", lo->cfg.alpha);
    cJSON_AddNumberToObject(cfg, "lora_dropout", lo->cfg.dropout);
    cJSON_AddNullToObject(cfg, "modules_to_save");
    cJSON_AddStringToObject(cfg, "peft_type", "LORA");
    cJSON_AddNumberToObject(cfg, "r", lo->cfg.r);
    cJSON_AddItemToObject(cfg, "rank_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(cfg, "revision");
    tm = cJSON_AddArrayToObject(cfg, "target_modules");
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) if (lo->cfg.targets & (1u << t)) cJSON_AddItemToArray(tm, cJSON_CreateString(cllm__lora_names[t]));
    cJSON_AddStringToObject(cfg, "task_type", "CAUSAL_LM");
    cJSON_AddBoolToObject(cfg, "use_dora", 0);
    cJSON_AddBoolToObject(cfg, "use_rslora", 0);
    json = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    if (!json) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    rc = cllm_write_file_atomic(path, json, strlen(json), err);
    cJSON_free(json);
    return rc;
}

/* Reads tensors named like `entries` from a safetensors file into the entries' data. */
static cllm_result cllm__st_read_entries(const char *path, const cllm_st_entry *entries, int n, cllm_err *err) {
    cllm_safetensors st;
    cllm_result rc = cllm_st_open(&st, path, err);
    int i, k;
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        const cllm_st_tensor *t = cllm_st_find(&st, entries[i].name);
        int same = t && t->ndim == entries[i].ndim;
        for (k = 0; same && k < t->ndim; k++) same = t->shape[k] == entries[i].shape[k];
        if (!t) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing tensor '%s'", path, entries[i].name);
        else if (!same) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' does not have the expected shape", path, entries[i].name);
        else rc = cllm_st_read(&st, t, (cllm_float *)entries[i].data, err);
    }
    if (rc == CLLM_OK && st.n != n) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: %d tensors, expected %d", path, st.n, n);
    cllm_st_close(&st);
    return rc;
}

CLLMDEF cllm_result cllm_lora_load(cllm_lora *lo, cllm_model *m, const char *dir, cllm_err *err) {
    char path[4096], *text = NULL;
    size_t len;
    cJSON *root;
    const cJSON *tm, *it;
    cllm_lora_config cfg;
    cllm_st_entry *entries = NULL;
    cllm_result rc;
    const char *bias;
    double r = 0, alpha = 0, dropout = 0;
    memset(lo, 0, sizeof *lo);
    memset(&cfg, 0, sizeof cfg);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    root = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    if (!root) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: not valid JSON", path);
    it = cJSON_GetObjectItemCaseSensitive(root, "r"); if (cJSON_IsNumber(it)) r = it->valuedouble;
    it = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha"); if (cJSON_IsNumber(it)) alpha = it->valuedouble;
    it = cJSON_GetObjectItemCaseSensitive(root, "lora_dropout"); if (cJSON_IsNumber(it)) dropout = it->valuedouble;
    bias = cllm__json_str(root, "bias");
    tm = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    if (!(r >= 1 && r <= CLLM_LORA_MAX_R && r == floor(r)) || !(alpha > 0)) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: needs an integer \"r\" in [1, %d] and a positive \"lora_alpha\"", path, CLLM_LORA_MAX_R);
    else if (cllm__json_bool(root, "use_rslora", 0) || cllm__json_bool(root, "use_dora", 0) || cllm__json_bool(root, "fan_in_fan_out", 0) || (bias && strcmp(bias, "none") != 0))
        rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: use_rslora, use_dora, fan_in_fan_out and bias other than \"none\" are not supported", path);
    else if (!cJSON_IsArray(tm)) rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: \"target_modules\" must be a list of module names", path);
    else cJSON_ArrayForEach(it, tm) {
        unsigned bits;
        if (!cJSON_IsString(it) || cllm_lora_parse_targets(it->valuestring, &bits, err) != CLLM_OK || bits == CLLM_LORA_ALL) {
            rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: target module %s is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj", path, cJSON_IsString(it) ? it->valuestring : "?");
            break;
        }
        cfg.targets |= bits;
    }
    cJSON_Delete(root);
    if (rc != CLLM_OK) return rc;
    cfg.r = (int)r; cfg.alpha = alpha; cfg.dropout = dropout > 0 ? dropout : -1;
    if ((rc = cllm__lora_setup(lo, m, &cfg, err)) != CLLM_OK) { cllm_lora_free(lo); return rc; }
    entries = (cllm_st_entry *)cllm__calloc((size_t)cllm__lora_tensor_count(lo) + 1, sizeof *entries);
    if (!entries) { cllm_lora_free(lo); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    rc = cllm__st_read_entries(path, entries, cllm__lora_entries(lo, lo->params, NULL, entries), err);
    CLLM_FREE(entries);
    if (rc != CLLM_OK) { cllm_lora_free(lo); return rc; }
    cllm__ok(err);
    return CLLM_OK;
}

/* W += sign * (alpha/r) B A for every adapted weight. */
static void cllm__lora_merge_into(const cllm_lora *lo, cllm_model *m, double sign) {
    int t, l, o, c, j;
    size_t r = (size_t)lo->cfg.r;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        if (!lo->A[t]) continue;
        for (l = 0; l < lo->n_layers; l++) {
            const cllm_float *A = lo->A[t] + (size_t)l * r * lo->in[t], *B = lo->B[t] + (size_t)l * lo->out[t] * r;
            cllm_float *W = cllm__lora_base(m, t, l);
            for (o = 0; o < lo->out[t]; o++) for (c = 0; c < lo->in[t]; c++) {
                double acc = 0;
                for (j = 0; j < (int)r; j++) acc += (double)B[(size_t)o * r + j] * A[(size_t)j * lo->in[t] + c];
                W[(size_t)o * lo->in[t] + c] += (cllm_float)(sign * lo->scale * acc);
            }
        }
    }
}

CLLMDEF cllm_result cllm_lora_merge(cllm_lora *lo, cllm_err *err) {
    cllm_model *m = lo ? lo->model : NULL;
    if (!m || m->lora != lo) return cllm__fail(err, CLLM_ERR_ARG, "LoRA merge: the adapters are not attached to a model");
    cllm__lora_merge_into(lo, m, 1.0);
    m->lora = NULL;
    lo->model = NULL;
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- checkpoint directories --------------------------------------------------------------- */

/* Removes a directory and the files in it (checkpoint directories hold no subdirectories). */
static cllm_result cllm__remove_dir(const char *dir, cllm_err *err) {
#if !defined(_WIN32)
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    if (!d) return errno == ENOENT ? CLLM_OK : cllm__fail(err, CLLM_ERR_IO, "%s: cannot open directory (%s)", dir, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (remove(path) != 0) { closedir(d); return cllm__fail(err, CLLM_ERR_IO, "%s: cannot remove (%s)", path, strerror(errno)); }
    }
    closedir(d);
    if (rmdir(dir) != 0) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot remove directory (%s)", dir, strerror(errno));
#else
    (void)dir; (void)err;
#endif
    return CLLM_OK;
}

/* Makes a rename inside dir durable (POSIX: fsync the directory). */
static void cllm__sync_dir(const char *dir) {
#if !defined(_WIN32)
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) { fsync(fd); close(fd); }
#else
    (void)dir;
#endif
}

static cllm_result cllm__copy_file(const char *src, const char *dst, cllm_err *err) {
    char *data = NULL;
    size_t len = 0;
    cllm_result rc = cllm_read_file(src, &data, &len, err);
    if (rc == CLLM_OK) rc = cllm_write_file_atomic(dst, data, len, err);
    CLLM_FREE(data);
    return rc;
}

/* The tokenizer files a Hugging Face model directory carries, copied when they exist. */
static cllm_result cllm__copy_tokenizer_files(const char *from, const char *to, cllm_err *err) {
    static const char *files[] = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json" };
    char src[4200], dst[4200];
    size_t i;
    cllm_result rc = CLLM_OK;
    for (i = 0; from && rc == CLLM_OK && i < sizeof files / sizeof files[0]; i++) {
        snprintf(src, sizeof src, "%s/%s", from, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, files[i]);
        if (cllm__file_exists(src)) rc = cllm__copy_file(src, dst, err);
    }
    return rc;
}

/* "ckpt-<digits>" -> the step, else -1 (so "ckpt-3.tmp" and other names are not checkpoints). */
static long cllm__ckpt_step(const char *name) {
    const char *p = name + 5;
    long step = 0;
    if (strncmp(name, "ckpt-", 5) != 0 || !*p) return -1;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || step > LONG_MAX / 10 - 10) return -1;
        step = step * 10 + (*p - '0');
    }
    return step;
}

/* The step OUT/latest points at, or -1 when there is no usable pointer. */
static long cllm__latest_step(const char *out_dir) {
    char path[4096], *text = NULL;
    size_t len = 0;
    long step;
    snprintf(path, sizeof path, "%s/latest", out_dir);
    if (cllm_read_file(path, &text, &len, NULL) != CLLM_OK) return -1;
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ')) text[--len] = 0;
    step = cllm__ckpt_step(text);
    CLLM_FREE(text);
    return step;
}

static int cllm__cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

/* Removes leftover ckpt-*.tmp directories and all but the keep newest checkpoints (never the
   latest one). keep = 0 keeps every checkpoint. */
static cllm_result cllm__prune_checkpoints(const char *out_dir, int keep, long latest, cllm_err *err) {
#if !defined(_WIN32)
    DIR *d = opendir(out_dir);
    struct dirent *e;
    long *steps = NULL;
    char path[4096];
    int i, n;
    cllm_result rc = CLLM_OK;
    if (!d) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot open directory (%s)", out_dir, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        long s = cllm__ckpt_step(e->d_name);
        if (s >= 0) stbds_arrput(steps, s);
        else if (strncmp(e->d_name, "ckpt-", 5) == 0 && len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0) {
            snprintf(path, sizeof path, "%s/%s", out_dir, e->d_name);
            if (rc == CLLM_OK) rc = cllm__remove_dir(path, err);
        }
    }
    closedir(d);
    n = (int)stbds_arrlen(steps);
    if (n) qsort(steps, (size_t)n, sizeof *steps, cllm__cmp_long);
    for (i = 0; keep > 0 && rc == CLLM_OK && i < n - keep; i++) {
        if (steps[i] == latest) continue;
        snprintf(path, sizeof path, "%s/ckpt-%ld", out_dir, steps[i]);
        rc = cllm__remove_dir(path, err);
    }
    stbds_arrfree(steps);
    return rc;
#else
    (void)out_dir; (void)keep; (void)latest; (void)err;
    return CLLM_OK;
#endif
}

/* ---- the training loop --------------------------------------------------------------------- */

static int cllm__schedule_kind(const char *name) {
    if (strcmp(name, "constant") == 0) return CLLM_SCHED_CONSTANT;
    if (strcmp(name, "linear") == 0) return CLLM_SCHED_LINEAR;
    if (strcmp(name, "cosine") == 0) return CLLM_SCHED_COSINE;
    return -1;
}

CLLMDEF void cllm_trainer_free(cllm_trainer *tr) {
    if (!tr) return;
    if (tr->metrics) fclose(tr->metrics);
    CLLM_FREE(tr->order);
    memset(tr, 0, sizeof *tr);
}

CLLMDEF cllm_result cllm_trainer_init(cllm_trainer *tr, cllm_model *m, cllm_lora *lora, const cllm_train_task *task,
                                      const cllm_train_config *cfg, cllm_err *err) {
    cllm_train_config *c = &tr->cfg;
    long micro;
    memset(tr, 0, sizeof *tr);
    if (!m || !m->params_memory || !task || (!task->step && (!task->micro_step || !task->units)))
        return cllm__fail(err, CLLM_ERR_ARG, "trainer: needs a loaded model and a task with units and micro_step (or step)");
    if (lora && (lora->model != m || m->lora != lora)) return cllm__fail(err, CLLM_ERR_ARG, "trainer: the LoRA adapters are not attached to this model");
    if (task->n_examples < 1) return cllm__fail(err, CLLM_ERR_ARG, "trainer: the data set is empty");
    if (cfg) *c = *cfg;
    c->lr = cllm__def(c->lr, task->default_lr);
    c->lr_schedule = cllm__def(c->lr_schedule, "cosine");
    c->epochs = cllm__def(c->epochs, 1);
    c->batch_size = cllm__def(c->batch_size, 8);
    c->grad_accum = cllm__def(c->grad_accum, 1);
    c->max_grad_norm = cllm__def(c->max_grad_norm, 1.0);
    c->adam.beta1 = cllm__def(c->adam.beta1, 0.9f);
    c->adam.beta2 = cllm__def(c->adam.beta2, 0.999f);
    c->adam.eps = cllm__def(c->adam.eps, 1e-8f);
    c->seed = cllm__def(c->seed, 42);
    c->log_every = cllm__def(c->log_every, 1);
    c->tokenizer_dir = cllm__def(c->tokenizer_dir, c->model_dir);
    if (!(c->lr > 0)) return cllm__fail(err, CLLM_ERR_ARG, "learning rate must be positive (got %g)", c->lr);
    if (cllm__schedule_kind(c->lr_schedule) < 0) return cllm__fail(err, CLLM_ERR_ARG, "lr schedule '%s' is not constant, linear or cosine", c->lr_schedule);
    if (c->epochs < 1 || c->batch_size < 1 || c->grad_accum < 1 || c->max_steps < 0 || c->warmup_steps < 0 || c->save_every < 0 || c->keep_last < 0 || c->stop_after < 0 || c->log_every < 1)
        return cllm__fail(err, CLLM_ERR_ARG, "epochs, batch_size, grad_accum and log_every must be positive; max_steps, warmup_steps, save_every, keep_last and stop_after non-negative");
    if (!(c->warmup_ratio >= 0 && c->warmup_ratio <= 1)) return cllm__fail(err, CLLM_ERR_ARG, "warmup_ratio must be in [0, 1] (got %g)", c->warmup_ratio);
    tr->model = m;
    tr->lora = lora;
    tr->task = *task;
    micro = (task->n_examples + c->batch_size - 1) / c->batch_size;
    tr->steps_per_epoch = (micro + c->grad_accum - 1) / c->grad_accum;
    tr->total_steps = c->max_steps > 0 ? c->max_steps : (long)c->epochs * tr->steps_per_epoch;
    tr->warmup_steps = c->warmup_steps > 0 ? c->warmup_steps : (long)ceil(c->warmup_ratio * (double)tr->total_steps);
    tr->order_epoch = -1;
    tr->saved_step = -1;
    cllm_rng_seed(&tr->rng, c->seed ^ 0xD1B54A32D192ED03ull);   /* a stream apart from the data order */
    if ((m->lora != NULL) != (lora != NULL)) return cllm__fail(err, CLLM_ERR_ARG, "trainer: adapters are attached to the model but not given to the trainer");
    if (c->out_dir && cllm__mkdir(c->out_dir, err) != CLLM_OK) return CLLM_ERR_IO;
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- trained parameters: the whole model or the adapters ---- */

CLLMDEF cllm_result cllm_trainer_zero_grad(cllm_trainer *tr, cllm_err *err) {
    cllm_lora *lo = tr->lora;
    if (!lo) return cllm_zero_grad(tr->model, err);
    if (!lo->grads) {
        lo->grads = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
        if (!lo->grads) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the LoRA gradients");
        cllm__lora_point(lo, lo->grads, lo->dA, lo->dB);
    } else memset(lo->grads, 0, lo->num_params * sizeof(cllm_float));
    cllm__ok(err);
    return CLLM_OK;
}

static double cllm__trainer_clip(cllm_trainer *tr) {
    double max_norm = tr->cfg.max_grad_norm > 0 ? tr->cfg.max_grad_norm : 0;   /* 0: measure only */
    if (!tr->lora) return cllm_clip_grad_norm(tr->model, max_norm);
    return cllm_clip_grad_norm_arrays(&tr->lora->grads, &tr->lora->num_params, 1, max_norm);
}

static cllm_result cllm__trainer_update(cllm_trainer *tr, double lr, cllm_err *err) {
    cllm_lora *lo = tr->lora;
    const cllm_adamw_config *a = &tr->cfg.adam;
    if (!lo) return cllm_adamw_update(tr->model, a, lr, err);
    if (!lo->m) {
        lo->m = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
        lo->v = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
        if (!lo->m || !lo->v) { CLLM_FREE(lo->m); CLLM_FREE(lo->v); lo->m = lo->v = NULL; return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the AdamW moments"); }
    }
    /* every adapter tensor is a matrix, so weight decay applies to all of them (as the HF Trainer does) */
    cllm_adamw_step(lo->params, lo->grads, lo->m, lo->v, lo->num_params, ++lo->adam_t, lr, a->beta1, a->beta2, a->eps, a->weight_decay);
    cllm__ok(err);
    return CLLM_OK;
}

/* Parameters / Adam moments as checkpoint entries (count returned; entries NULL = count only). */
static int cllm__trainer_entries(const cllm_trainer *tr, const cllm_float *memory, const char *prefix, cllm_st_entry *entries) {
    if (tr->lora) return entries ? cllm__lora_entries(tr->lora, memory, prefix, entries) : cllm__lora_tensor_count(tr->lora);
    return entries ? cllm_model_entries(tr->model, memory, prefix, CLLM_DT_F32, entries) : cllm_model_tensor_count(tr->model);
}

/* ---- trainer state ---- */

/* A float setting as the shortest decimal that names it (0.9f -> 0.9, not 0.899999976). */
static double cllm__float_json(float f) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", (double)f);
    return strtod(buf, NULL);
}

static cJSON *cllm__trainer_state_json(const cllm_trainer *tr) {
    const cllm_train_config *c = &tr->cfg;
    cJSON *o = cJSON_CreateObject(), *rng, *cf;
    char seed[32];
    int i;
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "format", "collabllm-trainer-state");
    cJSON_AddNumberToObject(o, "version", 1);
    cJSON_AddStringToObject(o, "task", tr->task.name ? tr->task.name : "");
    cJSON_AddNumberToObject(o, "step", (double)tr->step);
    cJSON_AddNumberToObject(o, "total_steps", (double)tr->total_steps);
    cJSON_AddNumberToObject(o, "steps_per_epoch", (double)tr->steps_per_epoch);
    cJSON_AddNumberToObject(o, "epoch", (double)(tr->step / tr->steps_per_epoch));
    cJSON_AddNumberToObject(o, "step_in_epoch", (double)(tr->step % tr->steps_per_epoch));
    cJSON_AddNumberToObject(o, "n_examples", tr->task.n_examples);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed);
    cJSON_AddStringToObject(o, "data_seed", seed);
    rng = cJSON_AddArrayToObject(o, "rng_state");
    for (i = 0; i < 4; i++) cJSON_AddItemToArray(rng, cJSON_CreateNumber(tr->rng.s[i]));
    cJSON_AddNumberToObject(o, "adam_t", tr->lora ? tr->lora->adam_t : tr->model->adam_t);
    cJSON_AddNumberToObject(o, "lr", tr->lr);
    cJSON_AddNumberToObject(o, "warmup_steps", (double)tr->warmup_steps);
    cJSON_AddNumberToObject(o, "elapsed_s", tr->elapsed);
    cJSON_AddNumberToObject(o, "tokens", tr->tokens);
    if (tr->lora) {
        cJSON *l = cJSON_AddObjectToObject(o, "lora"), *t;
        cJSON_AddNumberToObject(l, "r", tr->lora->cfg.r);
        cJSON_AddNumberToObject(l, "alpha", tr->lora->cfg.alpha);
        cJSON_AddNumberToObject(l, "dropout", tr->lora->cfg.dropout);
        t = cJSON_AddArrayToObject(l, "targets");
        for (i = 0; i < CLLM_LORA_NUM_TARGETS; i++) if (tr->lora->cfg.targets & (1u << i)) cJSON_AddItemToArray(t, cJSON_CreateString(cllm__lora_names[i]));
    } else cJSON_AddNullToObject(o, "lora");
    if (c->model_dir) cJSON_AddStringToObject(o, "model_dir", c->model_dir);
    cf = cJSON_AddObjectToObject(o, "config");
    cJSON_AddNumberToObject(cf, "lr", c->lr);
    cJSON_AddStringToObject(cf, "lr_schedule", c->lr_schedule);
    cJSON_AddNumberToObject(cf, "warmup_steps", (double)c->warmup_steps);
    cJSON_AddNumberToObject(cf, "warmup_ratio", c->warmup_ratio);
    cJSON_AddNumberToObject(cf, "epochs", c->epochs);
    cJSON_AddNumberToObject(cf, "max_steps", (double)c->max_steps);
    cJSON_AddNumberToObject(cf, "batch_size", c->batch_size);
    cJSON_AddNumberToObject(cf, "grad_accum", c->grad_accum);
    cJSON_AddNumberToObject(cf, "max_grad_norm", c->max_grad_norm);
    cJSON_AddNumberToObject(cf, "adam_beta1", cllm__float_json(c->adam.beta1));
    cJSON_AddNumberToObject(cf, "adam_beta2", cllm__float_json(c->adam.beta2));
    cJSON_AddNumberToObject(cf, "adam_eps", cllm__float_json(c->adam.eps));
    cJSON_AddNumberToObject(cf, "weight_decay", cllm__float_json(c->adam.weight_decay));
    cJSON_AddNumberToObject(cf, "save_every", (double)c->save_every);
    cJSON_AddNumberToObject(cf, "keep_last", c->keep_last);
    return o;
}

/* A number of the saved state must equal this run's (settings that change the data order or
   the schedule cannot change in the middle of a run). */
static cllm_result cllm__state_expect(const cJSON *o, const char *key, double want, const char *path, cllm_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(j)) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing \"%s\"", path, key);
    if (j->valuedouble != want)
        return cllm__fail(err, CLLM_ERR_ARG, "%s: the checkpoint has %s = %.17g but this run has %.17g; resume with the settings it was started with", path, key, j->valuedouble, want);
    return CLLM_OK;
}

static cllm_result cllm__trainer_load_state(cllm_trainer *tr, const char *ckpt, cllm_err *err) {
    char path[4200], *text = NULL, seed[32];
    size_t len;
    cJSON *o, *cf;
    const cJSON *j;
    cllm_result rc;
    int i;
    snprintf(path, sizeof path, "%s/trainer_state.json", ckpt);
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    o = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    if (!o || !cllm__json_str(o, "format") || strcmp(cllm__json_str(o, "format"), "collabllm-trainer-state") != 0) {
        cJSON_Delete(o);
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: not a collabllm trainer state", path);
    }
    cf = cJSON_GetObjectItemCaseSensitive(o, "config");
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)tr->cfg.seed);
    if (!cllm__json_str(o, "task") || strcmp(cllm__json_str(o, "task"), tr->task.name ? tr->task.name : "") != 0)
        rc = cllm__fail(err, CLLM_ERR_ARG, "%s: the checkpoint is of a '%s' run, not '%s'", path, cllm__json_str(o, "task") ? cllm__json_str(o, "task") : "?", tr->task.name ? tr->task.name : "");
    else if (!cllm__json_str(o, "data_seed") || strcmp(cllm__json_str(o, "data_seed"), seed) != 0)
        rc = cllm__fail(err, CLLM_ERR_ARG, "%s: the checkpoint was written with seed %s, this run has %s", path, cllm__json_str(o, "data_seed") ? cllm__json_str(o, "data_seed") : "?", seed);
    else if ((cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "lora")) || !cJSON_GetObjectItemCaseSensitive(o, "lora")) != (tr->lora == NULL))
        rc = cllm__fail(err, CLLM_ERR_ARG, "%s: the checkpoint was written %s LoRA, this run %s", path, tr->lora ? "without" : "with", tr->lora ? "uses it" : "does not");
    if (rc == CLLM_OK) rc = cllm__state_expect(o, "n_examples", tr->task.n_examples, path, err);
    if (rc == CLLM_OK) rc = cllm__state_expect(o, "total_steps", (double)tr->total_steps, path, err);
    if (rc == CLLM_OK) rc = cllm__state_expect(o, "warmup_steps", (double)tr->warmup_steps, path, err);
    if (rc == CLLM_OK) rc = cllm__state_expect(cf, "batch_size", tr->cfg.batch_size, path, err);
    if (rc == CLLM_OK) rc = cllm__state_expect(cf, "grad_accum", tr->cfg.grad_accum, path, err);
    if (rc == CLLM_OK && tr->lora) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, "lora");
        rc = cllm__state_expect(l, "r", tr->lora->cfg.r, path, err);
        if (rc == CLLM_OK) rc = cllm__state_expect(l, "alpha", tr->lora->cfg.alpha, path, err);
        if (rc == CLLM_OK) rc = cllm__state_expect(l, "dropout", tr->lora->cfg.dropout, path, err);
    }
    if (rc == CLLM_OK) {
        double step = -1, adam_t = -1;
        j = cJSON_GetObjectItemCaseSensitive(o, "step"); if (cJSON_IsNumber(j)) step = j->valuedouble;
        j = cJSON_GetObjectItemCaseSensitive(o, "adam_t"); if (cJSON_IsNumber(j)) adam_t = j->valuedouble;
        j = cJSON_GetObjectItemCaseSensitive(o, "rng_state");
        if (!(step >= 0 && step <= (double)tr->total_steps) || !(adam_t >= 0 && adam_t < 2147483647.0) || !cJSON_IsArray(j) || cJSON_GetArraySize(j) != 4)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: bad step, adam_t or rng_state", path);
        else {
            tr->step = (long)step;
            if (tr->lora) tr->lora->adam_t = (int)adam_t; else tr->model->adam_t = (int)adam_t;
            for (i = 0; i < 4; i++) tr->rng.s[i] = (uint32_t)cJSON_GetArrayItem(j, i)->valuedouble;
            j = cJSON_GetObjectItemCaseSensitive(o, "elapsed_s"); tr->elapsed = cJSON_IsNumber(j) ? j->valuedouble : 0;
            j = cJSON_GetObjectItemCaseSensitive(o, "tokens"); tr->tokens = cJSON_IsNumber(j) ? j->valuedouble : 0;
            j = cJSON_GetObjectItemCaseSensitive(o, "lr"); tr->lr = cJSON_IsNumber(j) ? j->valuedouble : 0;
        }
    }
    cJSON_Delete(o);
    return rc;
}

/* Loads ckpt/model.safetensors over the model's parameters (every tensor must be there). */
static cllm_result cllm__load_params(cllm_model *m, const char *ckpt, cllm_err *err) {
    cllm_st_entry *entries = (cllm_st_entry *)cllm__calloc((size_t)cllm_model_tensor_count(m) + 1, sizeof *entries);
    char path[4200];
    cllm_result rc;
    if (!entries) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/model.safetensors", ckpt);
    rc = cllm__st_read_entries(path, entries, cllm_model_entries(m, m->params_memory, NULL, CLLM_DT_F32, entries), err);
    CLLM_FREE(entries);
    return rc;
}

/* AdamW's moments (optimizer.safetensors: "m.<name>", "v.<name>"), allocated here if needed. */
static cllm_result cllm__trainer_load_optimizer(cllm_trainer *tr, const char *ckpt, cllm_err *err) {
    cllm_float **mm = tr->lora ? &tr->lora->m : &tr->model->m_memory, **vv = tr->lora ? &tr->lora->v : &tr->model->v_memory;
    size_t n = tr->lora ? tr->lora->num_params : tr->model->num_params;
    int count = cllm__trainer_entries(tr, NULL, NULL, NULL), k;
    cllm_st_entry *entries;
    char path[4200];
    cllm_result rc;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt);
    if (!cllm__file_exists(path)) {
        if ((tr->lora ? tr->lora->adam_t : tr->model->adam_t) == 0) return CLLM_OK;   /* saved before any update */
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing", path);
    }
    if (!*mm) *mm = (cllm_float *)cllm__calloc(n, sizeof(cllm_float));
    if (!*vv) *vv = (cllm_float *)cllm__calloc(n, sizeof(cllm_float));
    entries = (cllm_st_entry *)cllm__calloc(2 * (size_t)count + 1, sizeof *entries);
    if (!*mm || !*vv || !entries) { CLLM_FREE(entries); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the AdamW moments"); }
    k = cllm__trainer_entries(tr, *mm, "m.", entries);
    k += cllm__trainer_entries(tr, *vv, "v.", entries + k);
    rc = cllm__st_read_entries(path, entries, k, err);
    CLLM_FREE(entries);
    return rc;
}

/* Keeps the metrics lines of steps <= step (a killed run may have logged steps after its last
   checkpoint) and opens the file for appending. */
static cllm_result cllm__trainer_open_metrics(cllm_trainer *tr, cllm_err *err) {
    const char *path = tr->cfg.metrics_path;
    char def[4096];
    if (tr->metrics) return CLLM_OK;
    if (!path) {
        if (!tr->cfg.out_dir) return CLLM_OK;
        snprintf(def, sizeof def, "%s/metrics.jsonl", tr->cfg.out_dir);
        path = def;
    }
    if (!*path) return CLLM_OK;
    {
        FILE *f = fopen(path, "rb");
        cllm__sb keep = { NULL, 0, 0, 0 };
        char *line = NULL;
        size_t cap = 0;
        long len;
        cllm_result rc;
        if (f) {
            while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
                cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
                const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "step");
                if (cJSON_IsNumber(s) && s->valuedouble <= (double)tr->step) { cllm__sb_putn(&keep, line, (size_t)len); cllm__sb_putc(&keep, '\n'); }
                cJSON_Delete(o);
            }
            if (len < -1) { fclose(f); CLLM_FREE(line); cllm__sb_free(&keep); return cllm__line_fail(err, path, 0, len); }
            fclose(f);
        }
        CLLM_FREE(line);
        rc = keep.oom ? cllm__fail(err, CLLM_ERR_NOMEM, "out of memory") : cllm_write_file_atomic(path, keep.p ? keep.p : "", keep.n, err);
        cllm__sb_free(&keep);
        if (rc != CLLM_OK) return rc;
    }
    tr->metrics = fopen(path, "ab");
    if (!tr->metrics) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot open for appending (%s)", path, strerror(errno));
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_trainer_resume(cllm_trainer *tr, int *resumed, cllm_err *err) {
    char ckpt[4000];
    long step;
    cllm_result rc;
    if (resumed) *resumed = 0;
    if (!tr->cfg.resume || !tr->cfg.out_dir || (step = cllm__latest_step(tr->cfg.out_dir)) < 0) { cllm__ok(err); return CLLM_OK; }
    snprintf(ckpt, sizeof ckpt, "%s/ckpt-%ld", tr->cfg.out_dir, step);
    if ((rc = cllm__trainer_load_state(tr, ckpt, err)) != CLLM_OK) return rc;
    if (tr->step != step) return cllm__fail(err, CLLM_ERR_FORMAT, "%s/trainer_state.json: step %ld does not match the directory name", ckpt, tr->step);
    if (tr->lora) {
        cllm_st_entry *entries = (cllm_st_entry *)cllm__calloc((size_t)cllm__lora_tensor_count(tr->lora) + 1, sizeof *entries);
        char path[4200];
        if (!entries) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", ckpt);
        rc = cllm__st_read_entries(path, entries, cllm__lora_entries(tr->lora, tr->lora->params, NULL, entries), err);
        CLLM_FREE(entries);
    } else rc = cllm__load_params(tr->model, ckpt, err);
    if (rc == CLLM_OK) rc = cllm__trainer_load_optimizer(tr, ckpt, err);
    if (rc == CLLM_OK && tr->task.load_extra) rc = tr->task.load_extra(tr->task.ctx, ckpt, err);
    if (rc != CLLM_OK) return rc;
    if (!tr->cfg.quiet) fprintf(stderr, "[%s] resumed from %s (step %ld of %ld)\n", tr->task.name, ckpt, tr->step, tr->total_steps);
    tr->saved_step = tr->step;
    if (resumed) *resumed = 1;
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_trainer_save(cllm_trainer *tr, cllm_err *err) {
    const cllm_train_config *c = &tr->cfg;
    char dir[4096], tmp[4200], path[4400], latest[64];
    cllm_float *mm = tr->lora ? tr->lora->m : tr->model->m_memory, *vv = tr->lora ? tr->lora->v : tr->model->v_memory;
    cJSON *state = NULL;
    char *json = NULL;
    cllm_result rc;
    if (!c->out_dir) return cllm__fail(err, CLLM_ERR_ARG, "trainer: no output directory to save the checkpoint in");
    snprintf(dir, sizeof dir, "%s/ckpt-%ld", c->out_dir, tr->step);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    if ((rc = cllm__remove_dir(tmp, err)) != CLLM_OK || (rc = cllm__mkdir(tmp, err)) != CLLM_OK) return rc;
    /* 1. everything into ckpt-N.tmp/, each file flushed to disk */
    if (tr->lora) rc = cllm_lora_save(tr->lora, tmp, c->model_dir, err);
    else rc = cllm_model_save(tr->model, tmp, CLLM_DT_F32, err);
    if (rc == CLLM_OK) rc = cllm__copy_tokenizer_files(c->tokenizer_dir, tmp, err);
    if (rc == CLLM_OK && mm) {
        int count = cllm__trainer_entries(tr, NULL, NULL, NULL), k;
        cllm_st_entry *entries = (cllm_st_entry *)cllm__calloc(2 * (size_t)count + 1, sizeof *entries);
        if (!entries) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        else {
            k = cllm__trainer_entries(tr, mm, "m.", entries);
            k += cllm__trainer_entries(tr, vv, "v.", entries + k);
            snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
            rc = cllm_st_save(path, entries, k, err);
            CLLM_FREE(entries);
        }
    }
    if (rc == CLLM_OK && tr->task.save_extra) rc = tr->task.save_extra(tr->task.ctx, tmp, err);
    if (rc == CLLM_OK) {
        state = cllm__trainer_state_json(tr);
        json = state ? cJSON_Print(state) : NULL;
        if (!json) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        snprintf(path, sizeof path, "%s/trainer_state.json", tmp);
        if (rc == CLLM_OK) rc = cllm_write_file_atomic(path, json, strlen(json), err);
    }
    cJSON_free(json);
    cJSON_Delete(state);
    if (rc != CLLM_OK) return rc;
    cllm__sync_dir(tmp);
    /* 2. the directory takes its name in one rename */
    if ((rc = cllm__remove_dir(dir, err)) != CLLM_OK) return rc;
    if (rename(tmp, dir) != 0) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot rename into place (%s)", dir, strerror(errno));
    cllm__sync_dir(c->out_dir);
    /* 3. only now does `latest` point at it */
    snprintf(path, sizeof path, "%s/latest", c->out_dir);
    snprintf(latest, sizeof latest, "ckpt-%ld\n", tr->step);
    if ((rc = cllm_write_file_atomic(path, latest, strlen(latest), err)) != CLLM_OK) return rc;
    cllm__sync_dir(c->out_dir);
    tr->saved_step = tr->step;
    return cllm__prune_checkpoints(c->out_dir, c->keep_last, tr->step, err);
}

CLLMDEF cllm_result cllm_trainer_save_final(cllm_trainer *tr, const char *dir, const char *adapter_dir, cllm_err *err) {
    cllm_model *m = tr->model;
    cllm_float *keep = NULL;
    cllm_result rc;
    if (tr->lora) {                                 /* merge into the weights, save, put them back */
        keep = (cllm_float *)cllm__calloc(m->num_params, sizeof(cllm_float));
        if (!keep) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for a merged copy of the weights");
        memcpy(keep, m->params_memory, m->num_params * sizeof(cllm_float));
        cllm__lora_merge_into(tr->lora, m, 1.0);
    }
    rc = cllm_model_save(m, dir, CLLM_DT_F32, err);
    if (keep) { memcpy(m->params_memory, keep, m->num_params * sizeof(cllm_float)); CLLM_FREE(keep); }
    if (rc == CLLM_OK) rc = cllm__copy_tokenizer_files(tr->cfg.tokenizer_dir, dir, err);
    if (rc == CLLM_OK && tr->lora && adapter_dir) rc = cllm_lora_save(tr->lora, adapter_dir, tr->cfg.model_dir, err);
    if (rc == CLLM_OK && tr->task.save_extra) rc = tr->task.save_extra(tr->task.ctx, dir, err);   /* PPO's value head */
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* ---- steps ---- */

/* tr->order = epoch's permutation of the examples (kept until the epoch changes). */
static cllm_result cllm__trainer_order(cllm_trainer *tr, long epoch, cllm_err *err) {
    int N = tr->task.n_examples, i;
    cllm_rng rng;
    if (tr->order_epoch == epoch) return CLLM_OK;
    if (!tr->order) {
        tr->order = (int *)cllm__calloc((size_t)N, sizeof(int));
        if (!tr->order) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    /* Fisher-Yates from a seed that depends on the epoch alone */
    cllm_rng_seed(&rng, tr->cfg.seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch);
    for (i = 0; i < N; i++) tr->order[i] = i;
    for (i = N - 1; i > 0; i--) {
        int j = (int)(cllm_rng_uniform(&rng) * (i + 1)), t = tr->order[i];
        tr->order[i] = tr->order[j]; tr->order[j] = t;
    }
    tr->order_epoch = epoch;
    return CLLM_OK;
}

/* "1:02:03" or "2:03" */
static void cllm__fmt_duration(char *buf, size_t n, double s) {
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void cllm__trainer_log(cllm_trainer *tr, const cllm_train_stats *st, double step_tokens) {
    double run_s = cllm__now() - tr->run_t0, done = (double)(tr->step - tr->run_step0);
    double tps = run_s > 0 ? (tr->tokens - tr->run_tokens0) / run_s : 0;
    double epoch = (double)tr->step / (double)tr->steps_per_epoch;
    int i;
    if (tr->metrics) {
        cJSON *o = cJSON_CreateObject();
        char *line;
        cJSON_AddNumberToObject(o, "step", (double)tr->step);
        cJSON_AddNumberToObject(o, "epoch", epoch);
        for (i = 0; i < st->n; i++) cJSON_AddNumberToObject(o, st->name[i], st->count[i] > 0 ? st->sum[i] / st->count[i] : NAN);
        cJSON_AddNumberToObject(o, "lr", tr->lr);
        cJSON_AddNumberToObject(o, "grad_norm", tr->grad_norm);
        cJSON_AddNumberToObject(o, "tokens", step_tokens);
        cJSON_AddNumberToObject(o, "tokens_per_s", tps);
        cJSON_AddNumberToObject(o, "elapsed_s", tr->elapsed);
        line = cJSON_PrintUnformatted(o);
        if (line) { fputs(line, tr->metrics); fputc('\n', tr->metrics); fflush(tr->metrics); }
        cJSON_free(line);
        cJSON_Delete(o);
    }
    if (!tr->cfg.quiet && (tr->step % tr->cfg.log_every == 0 || tr->step == tr->total_steps)) {
        char el[32], eta[32];
        double margin = cllm_train_stats_mean(st, "rewards/margins"), reward = cllm_train_stats_mean(st, "reward");
        cllm__fmt_duration(el, sizeof el, tr->elapsed);
        cllm__fmt_duration(eta, sizeof eta, done > 0 ? run_s / done * (double)(tr->total_steps - tr->step) : 0);
        fprintf(stderr, "[%s] step %ld/%ld  epoch %.2f  loss %.4f", tr->task.name, tr->step, tr->total_steps, epoch, cllm_train_stats_mean(st, "loss"));
        if (!isnan(reward)) fprintf(stderr, "  reward %.4f", reward);
        if (!isnan(margin)) fprintf(stderr, "  margin %.4f  acc %.2f", margin, cllm_train_stats_mean(st, "rewards/accuracies"));
        fprintf(stderr, "  lr %.2e  gnorm %.3f  %.0f tok/s  elapsed %s  eta %s\n", tr->lr, tr->grad_norm, tps, el, eta);
    }
}

/* A non-finite loss or gradient: nothing is updated, the run stops, the last checkpoint stays. */
static cllm_result cllm__numeric_fail(const cllm_trainer *tr, const char *what, double value, cllm_err *err) {
    long latest = tr->cfg.out_dir ? cllm__latest_step(tr->cfg.out_dir) : -1;
    if (latest >= 0)
        return cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: the %s is %g; nothing was updated and the last good checkpoint is %s/ckpt-%ld (lower the learning rate?)",
                          tr->step + 1, what, value, tr->cfg.out_dir, latest);
    return cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: the %s is %g; nothing was updated and no checkpoint was written (lower the learning rate?)", tr->step + 1, what, value);
}

/* The start of a call's steps: the metrics file (cut back to the current step) and the clocks
   of the throughput and ETA. cllm_trainer_run calls it, and so does a custom loop's first apply. */
static cllm_result cllm__trainer_start(cllm_trainer *tr, cllm_err *err) {
    cllm_result rc;
    if (tr->started) return CLLM_OK;
    if ((rc = cllm__trainer_open_metrics(tr, err)) != CLLM_OK) return rc;
    tr->run_step0 = tr->step;
    tr->run_t0 = cllm__now();
    tr->run_tokens0 = tr->tokens;
    tr->started = 1;
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_trainer_update(cllm_trainer *tr, double *lr, cllm_err *err) {
    double rate = cllm_lr_at((cllm_schedule)cllm__schedule_kind(tr->cfg.lr_schedule), tr->cfg.lr, tr->step, tr->warmup_steps, tr->total_steps);
    cllm_result rc = cllm__trainer_update(tr, rate, err);
    if (rc == CLLM_OK) tr->lr = rate;
    if (lr) *lr = rate;
    return rc;
}

/* The end of every step: count it, log it, and checkpoint when it is time. */
static cllm_result cllm__trainer_end_step(cllm_trainer *tr, const cllm_train_stats *st, cllm_err *err) {
    tr->step++;
    tr->tokens += st->tokens;
    tr->last = *st;
    cllm__trainer_log(tr, st, st->tokens);
    if (tr->cfg.out_dir && tr->cfg.save_every > 0 && tr->step % tr->cfg.save_every == 0)
        return cllm_trainer_save(tr, err);
    cllm__ok(err);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_trainer_apply(cllm_trainer *tr, const cllm_train_stats *st, cllm_err *err) {
    double loss = cllm_train_stats_mean(st, "loss"), t0 = cllm__now();
    cllm_result rc;
    if ((rc = cllm__trainer_start(tr, err)) != CLLM_OK) return rc;
    if (!isfinite(loss)) return cllm__numeric_fail(tr, "loss", loss, err);
    tr->grad_norm = cllm__trainer_clip(tr);
    if (!isfinite(tr->grad_norm)) return cllm__numeric_fail(tr, "gradient norm", tr->grad_norm, err);
    if ((rc = cllm_trainer_update(tr, NULL, err)) != CLLM_OK) return rc;
    tr->elapsed += cllm__now() - t0;
    return cllm__trainer_end_step(tr, st, err);
}

/* One optimizer step of the task: its micro-batches, then cllm_trainer_apply. */
static cllm_result cllm__trainer_step(cllm_trainer *tr, cllm_err *err) {
    const cllm_train_config *c = &tr->cfg;
    long epoch = tr->step / tr->steps_per_epoch, k = tr->step % tr->steps_per_epoch, j;
    long micro = (tr->task.n_examples + c->batch_size - 1) / c->batch_size;
    long j0 = k * c->grad_accum, j1 = j0 + c->grad_accum < micro ? j0 + c->grad_accum : micro;
    double norm = 0, t0 = cllm__now();
    cllm_train_stats st;
    cllm_result rc;
    memset(&st, 0, sizeof st);
    if ((rc = cllm__trainer_order(tr, epoch, err)) != CLLM_OK) return rc;
    if (tr->task.step) {                          /* the task makes its own updates */
        long b0 = j0 * c->batch_size, b1 = j1 * c->batch_size < tr->task.n_examples ? j1 * c->batch_size : tr->task.n_examples;
        if ((rc = tr->task.step(tr->task.ctx, tr, tr->order + b0, (int)(b1 - b0), &st, err)) != CLLM_OK) return rc;
        tr->elapsed += cllm__now() - t0;
        return cllm__trainer_end_step(tr, &st, err);
    }
    if ((rc = cllm_trainer_zero_grad(tr, err)) != CLLM_OK) return rc;
    for (j = j0; j < j1; j++) {
        long b0 = j * c->batch_size, n = b0 + c->batch_size <= tr->task.n_examples ? c->batch_size : tr->task.n_examples - b0;
        norm += tr->task.units(tr->task.ctx, tr->order + b0, (int)n);
    }
    if (!(norm > 0)) return cllm__fail(err, CLLM_ERR_ARG, "step %ld: its examples have nothing to train on", tr->step + 1);
    for (j = j0; j < j1 && rc == CLLM_OK; j++) {
        long b0 = j * c->batch_size, n = b0 + c->batch_size <= tr->task.n_examples ? c->batch_size : tr->task.n_examples - b0;
        if (tr->lora) {                            /* dropout on, with this micro-batch's masks */
            uint64_t hi = cllm_rng_u32(&tr->rng), lo = cllm_rng_u32(&tr->rng);   /* in this order */
            tr->lora->training = 1;
            tr->lora->dropout_seed = hi << 32 | lo;
        }
        rc = tr->task.micro_step(tr->task.ctx, tr, tr->order + b0, (int)n, norm, &st, err);
        if (tr->lora) tr->lora->training = 0;
    }
    if (rc != CLLM_OK) return rc;
    tr->elapsed += cllm__now() - t0;
    return cllm_trainer_apply(tr, &st, err);
}

CLLMDEF cllm_result cllm_trainer_run(cllm_trainer *tr, cllm_err *err) {
    cllm_result rc;
    int stop = 0;
    tr->started = 0;                              /* each call measures its own throughput */
    if ((rc = cllm__trainer_start(tr, err)) != CLLM_OK) return rc;
    if (!tr->cfg.quiet && tr->step == 0)
        fprintf(stderr, "[%s] %d examples, %ld steps (%ld per epoch, batch %d x %d accumulated), lr %g %s, warmup %ld\n", tr->task.name,
                tr->task.n_examples, tr->total_steps, tr->steps_per_epoch, tr->cfg.batch_size, tr->cfg.grad_accum, tr->cfg.lr, tr->cfg.lr_schedule, tr->warmup_steps);
    while (tr->step < tr->total_steps && !stop) {
        if ((rc = cllm__trainer_step(tr, err)) != CLLM_OK) return rc;
        if (tr->cfg.on_step && tr->cfg.on_step(tr->cfg.on_step_ctx, tr)) { cllm__ok(err); return CLLM_OK; }
        stop = tr->cfg.stop_after > 0 && tr->step - tr->run_step0 >= tr->cfg.stop_after;
    }
    if (tr->cfg.out_dir && tr->saved_step != tr->step && (rc = cllm_trainer_save(tr, err)) != CLLM_OK) return rc;
    cllm__ok(err);
    return CLLM_OK;
}

/* ---- SFT and DPO runs ---- */

typedef struct cllm__sft_ctx { const cllm_sft_data *d; } cllm__sft_ctx;

static double cllm__sft_units(void *ctx, const int *idx, int n) {
    const cllm__sft_ctx *c = (const cllm__sft_ctx *)ctx;
    double u = 0;
    int i;
    for (i = 0; i < n; i++) u += cllm_train_seq_targets(&c->d->rows[idx[i]]);
    return u;
}

static cllm_result cllm__sft_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm, cllm_train_stats *st, cllm_err *err) {
    const cllm__sft_ctx *c = (const cllm__sft_ctx *)ctx;
    const cllm_train_seq **rows = (const cllm_train_seq **)cllm__calloc((size_t)n + 1, sizeof *rows);
    cllm_result rc;
    int i;
    if (!rows) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < n; i++) rows[i] = &c->d->rows[idx[i]];
    rc = cllm_sft_micro_step(tr->model, rows, n, norm, 1, st, err);
    CLLM_FREE(rows);
    return rc;
}

typedef struct cllm__dpo_ctx { const cllm_dpo_data *d; cllm_model *ref; cllm_dpo_config cfg; } cllm__dpo_ctx;

static double cllm__dpo_units(void *ctx, const int *idx, int n) { (void)ctx; (void)idx; return n; }

static cllm_result cllm__dpo_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm, cllm_train_stats *st, cllm_err *err) {
    cllm__dpo_ctx *c = (cllm__dpo_ctx *)ctx;
    const cllm_dpo_pair **pairs = (const cllm_dpo_pair **)cllm__calloc((size_t)n + 1, sizeof *pairs);
    cllm_result rc;
    int i;
    if (!pairs) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < n; i++) pairs[i] = &c->d->pairs[idx[i]];
    rc = cllm_dpo_micro_step(tr->model, c->ref, pairs, n, &c->cfg, norm, st, err);
    CLLM_FREE(pairs);
    return rc;
}

/* Init, resume, run, and the final model of a task. */
static cllm_result cllm__train_run(cllm_model *m, cllm_lora *lora, const cllm_train_task *task, const cllm_train_config *cfg, cllm_err *err) {
    cllm_trainer tr;
    cllm_result rc = cllm_trainer_init(&tr, m, lora, task, cfg, err);
    if (rc == CLLM_OK) rc = cllm_trainer_resume(&tr, NULL, err);
    if (rc == CLLM_OK) rc = cllm_trainer_run(&tr, err);
    if (rc == CLLM_OK && tr.cfg.out_dir && tr.step == tr.total_steps) {
        char dir[4096], adir[4096];
        snprintf(dir, sizeof dir, "%s/final", tr.cfg.out_dir);
        snprintf(adir, sizeof adir, "%s/adapter", tr.cfg.out_dir);
        rc = cllm_trainer_save_final(&tr, dir, lora ? adir : NULL, err);
        if (rc == CLLM_OK && !tr.cfg.quiet) fprintf(stderr, "[%s] done: %s%s%s\n", task->name, dir, lora ? " (merged) and " : "", lora ? adir : "");
    }
    cllm_trainer_free(&tr);
    return rc;
}

/* A task from its parts, then cllm__train_run. */
static cllm_result cllm__train_task(cllm_model *m, cllm_lora *lora, const char *name, int n_examples, double default_lr,
                                    double (*units)(void *, const int *, int),
                                    cllm_result (*micro)(void *, cllm_trainer *, const int *, int, double, cllm_train_stats *, cllm_err *),
                                    void *ctx, const cllm_train_config *cfg, cllm_err *err) {
    cllm_train_task task;
    memset(&task, 0, sizeof task);
    task.name = name; task.n_examples = n_examples; task.default_lr = default_lr;
    task.units = units; task.micro_step = micro; task.ctx = ctx;
    return cllm__train_run(m, lora, &task, cfg, err);
}

CLLMDEF cllm_result cllm_train_sft(cllm_model *m, cllm_lora *lora, const cllm_sft_data *d, const cllm_train_config *cfg, cllm_err *err) {
    cllm__sft_ctx ctx;
    ctx.d = d;
    return cllm__train_task(m, lora, "sft", d->n, 1e-5 /* paper Table 6 */, cllm__sft_units, cllm__sft_micro, &ctx, cfg, err);
}

CLLMDEF cllm_result cllm_train_dpo(cllm_model *m, cllm_lora *lora, cllm_model *ref, const cllm_dpo_data *d,
                                   const struct cllm_dpo_config *dpo, const cllm_train_config *cfg, cllm_err *err) {
    cllm__dpo_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.d = d; ctx.ref = ref;
    if (dpo) ctx.cfg = *dpo;
    if (!d->has_ref && !ref && !lora && !ctx.cfg.reference_free)
        return cllm__fail(err, CLLM_ERR_ARG, "DPO needs a reference: a reference model, ref_chosen_logps/ref_rejected_logps in the pairs (precompute them), LoRA adapters (the base model is the reference), or reference_free");
    return cllm__train_task(m, lora, "dpo", d->n, 5e-6 /* paper Table 6 */, cllm__dpo_units, cllm__dpo_micro, &ctx, cfg, err);
}

/* -------------------------------------------------------------------------------------------- */
/* Online training: online DPO, PPO, GRPO with the multiturn-aware reward                       */
/* -------------------------------------------------------------------------------------------- */

/* ---- prompts ------------------------------------------------------------------------------- */

static void cllm__task_free(cllm_task *t) {
    CLLM_FREE(t->prompt); CLLM_FREE(t->completion); cJSON_Delete(t->json);
    memset(t, 0, sizeof *t);
}

CLLMDEF void cllm_online_prompts_free(cllm_online_prompts *p) {
    int i;
    if (!p) return;
    for (i = 0; i < p->n; i++) { cllm_conv_free(&p->items[i].history); cllm__task_free(&p->items[i].task); }
    stbds_arrfree(p->items);
    memset(p, 0, sizeof *p);
}

/* Appends a prompt, taking over history and task (both zeroed here, also on failure). */
static cllm_result cllm__prompt_add(cllm_online_prompts *p, cllm_conv *history, cllm_task *task, long conv_id,
                                    const cllm_prompts_config *cfg, cllm_err *err) {
    cllm_online_prompt it;
    memset(&it, 0, sizeof it);
    it.history = *history; it.task = *task;
    memset(history, 0, sizeof *history); memset(task, 0, sizeof *task);
    if (it.history.n < 1 || strcmp(it.history.msgs[it.history.n - 1].role, "assistant") == 0) {
        cllm_conv_free(&it.history); cllm__task_free(&it.task);
        return cllm__fail(err, CLLM_ERR_FORMAT, "a prompt must be a non-empty conversation that ends with the user's turn");
    }
    it.goal.task_desc = cfg && cfg->task_desc ? cfg->task_desc : "a task";
    it.goal.prompt = it.task.prompt;
    it.goal.reference = cfg && cfg->show_reference && it.task.completion[0] ? it.task.completion : NULL;
    it.conv_id = conv_id;
    it.turn_id = it.history.n;
    stbds_arrput(p->items, it);
    p->n++;
    return CLLM_OK;
}

/* A set of nonzero 64-bit keys (open addressing, grown at half full): inserts key, returns 1
   if it was already there, -1 when out of memory. */
typedef struct cllm__keyset { uint64_t *slot; size_t cap, n; } cllm__keyset;

static int cllm__keyset_add(cllm__keyset *s, uint64_t key) {
    size_t i;
    if (2 * (s->n + 1) > s->cap) {                 /* rehash into twice the slots */
        cllm__keyset g;
        g.cap = s->cap ? 2 * s->cap : 64; g.n = 0;
        if (!(g.slot = (uint64_t *)cllm__calloc(g.cap, sizeof(uint64_t)))) return -1;
        for (i = 0; i < s->cap; i++) if (s->slot[i]) cllm__keyset_add(&g, s->slot[i]);
        CLLM_FREE(s->slot);
        *s = g;
    }
    for (i = (size_t)(key * 0x9E3779B97F4A7C15ull >> 20) % s->cap; s->slot[i]; i = (i + 1) % s->cap)
        if (s->slot[i] == key) return 1;
    s->slot[i] = key;
    s->n++;
    return 0;
}

CLLMDEF cllm_result cllm_online_prompts_read(cllm_online_prompts *p, const char *path, const cllm_prompts_config *cfg, cllm_err *err) {
    static const char *heavy[] = { "completion", "score", "rewards", "sessions", "task_rows" };
    cllm__keyset seen = { NULL, 0, 0 };            /* (conv_id, turn_id) already taken */
    FILE *f = cllm__open_read(path, "a JSONL file", err);
    char *line = NULL;
    size_t cap = 0, h;
    long len;
    int lineno = 0, added = 0, dup;
    cllm_result rc = CLLM_OK;
    if (!f) return CLLM_ERR_IO;
    while (rc == CLLM_OK && (len = cllm__read_line(f, &line, &cap)) >= 0) {
        cllm_task task;
        cllm_conv history;
        const cJSON *cid, *tid;
        uint64_t key;
        lineno++;
        if (len == 0) continue;
        memset(&history, 0, sizeof history);
        if ((rc = cllm__task_parse(&task, line, (size_t)len, path, lineno, err)) != CLLM_OK) { cllm__task_free(&task); break; }
        cid = cJSON_GetObjectItemCaseSensitive(task.json, "conv_id");
        tid = cJSON_GetObjectItemCaseSensitive(task.json, "turn_id");
        if (!cJSON_IsNumber(cid) || !(cid->valuedouble >= 0 && cid->valuedouble < 1e11) || (tid && !(cJSON_IsNumber(tid) && tid->valuedouble >= 0 && tid->valuedouble < 1e6)))
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: \"conv_id\" (and \"turn_id\" when present) must be non-negative integers", path, lineno);
        else if ((rc = cllm_conv_from_json(&history, cJSON_GetObjectItemCaseSensitive(task.json, "prompt"), err)) != CLLM_OK)
            rc = cllm__fail_where(err, rc, path, lineno, "\"prompt\": ");
        if (rc != CLLM_OK) { cllm__task_free(&task); cllm_conv_free(&history); break; }
        key = ((uint64_t)cid->valuedouble << 20 | (uint64_t)(tid ? tid->valuedouble : history.n)) + 1;
        if ((dup = cllm__keyset_add(&seen, key)) != 0) {
            cllm__task_free(&task); cllm_conv_free(&history);
            if (dup < 0) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
            continue;
        }
        for (h = 0; h < sizeof heavy / sizeof heavy[0]; h++) cJSON_DeleteItemFromObjectCaseSensitive(task.json, heavy[h]);
        if ((rc = cllm__prompt_add(p, &history, &task, (long)cid->valuedouble, cfg, err)) != CLLM_OK)
            rc = cllm__fail_where(err, rc, path, lineno, "");
        added++;
    }
    fclose(f);
    CLLM_FREE(line);
    CLLM_FREE(seen.slot);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && added == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no prompts", path);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

CLLMDEF cllm_result cllm_online_prompts_write(const cllm_online_prompts *p, const char *path, cllm_err *err) {
    cllm__sb out = { NULL, 0, 0, 0 };
    cllm_result rc;
    int i;
    for (i = 0; i < p->n && !out.oom; i++) {
        const cllm_online_prompt *it = &p->items[i];
        cJSON *o = cJSON_Duplicate(it->task.json, 1);
        char *text;
        if (!o) { out.oom = 1; break; }
        cJSON_DeleteItemFromObjectCaseSensitive(o, "conv_id");
        cJSON_DeleteItemFromObjectCaseSensitive(o, "turn_id");
        cJSON_DeleteItemFromObjectCaseSensitive(o, "prompt");
        cJSON_AddNumberToObject(o, "conv_id", (double)it->conv_id);
        cJSON_AddNumberToObject(o, "turn_id", it->turn_id);
        cJSON_AddItemToObject(o, "prompt", cllm_conv_to_json(&it->history));
        text = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!text) { out.oom = 1; break; }
        cllm__sb_puts(&out, text); cllm__sb_putc(&out, '\n');
        cJSON_free(text);
    }
    rc = out.oom ? cllm__fail(err, CLLM_ERR_NOMEM, "out of memory") : cllm_write_file_atomic(path, out.p ? out.p : "", out.n, err);
    cllm__sb_free(&out);
    return rc;
}

/* A deep copy of a task. */
static cllm_result cllm__task_copy(cllm_task *dst, const cllm_task *src, cllm_err *err) {
    dst->prompt = cllm__strdup(src->prompt);
    dst->completion = cllm__strdup(src->completion ? src->completion : "");
    dst->json = cJSON_Duplicate(src->json, 1);
    if (!dst->prompt || !dst->completion || !dst->json) { cllm__task_free(dst); return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory"); }
    return CLLM_OK;
}

/* The prompts a cache file holds, checked against the tasks they were made from. */
static cllm_result cllm__prompts_from_cache(cllm_online_prompts *p, const cllm_task *tasks, int n_tasks, const cllm_prompts_config *cfg,
                                            const char *cache_path, cllm_err *err) {
    cllm_online_prompts c;
    cllm_result rc;
    int i;
    memset(&c, 0, sizeof c);
    if ((rc = cllm_online_prompts_read(&c, cache_path, cfg, err)) != CLLM_OK) return rc;
    if (c.n != n_tasks) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s holds %d prompts for %d tasks: it was made from other tasks (delete it to simulate the openings again)", cache_path, c.n, n_tasks);
    for (i = 0; rc == CLLM_OK && i < c.n; i++)
        if (strcmp(c.items[i].task.prompt, tasks[i].prompt) != 0)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: prompt %d is for another task than line %d of the tasks (delete it to simulate the openings again)", cache_path, i + 1, i + 1);
    for (i = 0; rc == CLLM_OK && i < c.n; i++)
        rc = cllm__prompt_add(p, &c.items[i].history, &c.items[i].task, c.items[i].conv_id, cfg, err);
    cllm_online_prompts_free(&c);
    return rc;
}

CLLMDEF cllm_result cllm_online_prompts_from_tasks(cllm_online_prompts *p, const cllm_task *tasks, int n_tasks,
                                                   const cllm_user_sim *user, const cllm_prompts_config *cfg,
                                                   const char *cache_path, cllm_err *err) {
    cllm_online_prompts made;
    cllm_goal *goals;
    cllm_conv *empty;
    cllm_reply *replies;
    cllm_result rc = CLLM_OK;
    int i;
    if (n_tasks < 1 || !tasks) return cllm__fail(err, CLLM_ERR_ARG, "prompts from tasks: no tasks");
    if (cache_path && cllm__file_exists(cache_path)) return cllm__prompts_from_cache(p, tasks, n_tasks, cfg, cache_path, err);
    if (!user) return cllm__fail(err, CLLM_ERR_ARG, "prompts from tasks: the opening messages need a user simulator");
    memset(&made, 0, sizeof made);
    goals = (cllm_goal *)cllm__calloc((size_t)n_tasks, sizeof *goals);
    empty = (cllm_conv *)cllm__calloc((size_t)n_tasks, sizeof *empty);
    replies = (cllm_reply *)cllm__calloc((size_t)n_tasks, sizeof *replies);
    if (!goals || !empty || !replies) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; rc == CLLM_OK && i < n_tasks; i++) {
        goals[i].task_desc = cfg && cfg->task_desc ? cfg->task_desc : "a task";
        goals[i].prompt = tasks[i].prompt;
        goals[i].reference = cfg && cfg->show_reference && tasks[i].completion[0] ? tasks[i].completion : NULL;
    }
    /* the openings: one batch of user turns on empty histories */
    if (rc == CLLM_OK) cllm_user_sim_turns(user, goals, empty, n_tasks, replies, NULL);
    for (i = 0; rc == CLLM_OK && i < n_tasks; i++) {
        cllm_conv h;
        cllm_task t;
        memset(&h, 0, sizeof h); memset(&t, 0, sizeof t);
        if (replies[i].code != CLLM_OK || !replies[i].text) {
            rc = cllm__fail(err, replies[i].code != CLLM_OK ? replies[i].code : CLLM_ERR_FORMAT, "task %d: the user simulator gave no opening message (%s)", i + 1, replies[i].err.msg);
            break;
        }
        if ((rc = cllm_conv_push(&h, "user", replies[i].text, err)) == CLLM_OK && (rc = cllm__task_copy(&t, &tasks[i], err)) == CLLM_OK)
            rc = cllm__prompt_add(&made, &h, &t, i, cfg, err);
        cllm_conv_free(&h);
    }
    if (rc == CLLM_OK && cache_path) rc = cllm_online_prompts_write(&made, cache_path, err);
    for (i = 0; rc == CLLM_OK && i < made.n; i++)
        rc = cllm__prompt_add(p, &made.items[i].history, &made.items[i].task, made.items[i].conv_id, cfg, err);
    for (i = 0; replies && i < n_tasks; i++) cllm_reply_free(&replies[i]);
    cllm_online_prompts_free(&made);
    CLLM_FREE(goals); CLLM_FREE(empty); CLLM_FREE(replies);
    if (rc == CLLM_OK) cllm__ok(err);
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
    *out = def;                                   /* written on every path, errors included */
    if (!j || cJSON_IsNull(j)) return CLLM_OK;
    if (cJSON_IsBool(j)) { *out = cJSON_IsTrue(j) ? 1 : 0; return CLLM_OK; }
    if (!cJSON_IsNumber(j)) return cllm__fail(err, CLLM_ERR_FORMAT, "\"%s\" must be a number", key);
    *out = j->valuedouble;
    return CLLM_OK;
}

static cllm_result cllm__ref_int(const cJSON *in, const char *key, int def, int *out, cllm_err *err) {
    double d;
    cllm_result rc;
    *out = def;
    rc = cllm__ref_num(in, key, def, &d, err);
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
            for (t = 0; t < T; t++) {
                double id = resp[(size_t)b * T + t];
                if (id != floor(id) || fabs(id) > 2147483647.0) return cllm__fail(err, CLLM_ERR_FORMAT, "\"responses\"[%d][%d] must be a token id (an integer)", b, t);
                row[t] = (int)id;
            }
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
    double *p0, *g, *betas = NULL, lr = 0, eps = 0, wd = 0;
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
        if (err) {
            char msg[CLLM_ERRMSG_SIZE];
            memcpy(msg, err->msg, sizeof msg);
            snprintf(err->msg, sizeof err->msg, "ref %s: %.*s", name, CLLM__CUT(msg, 400));
        }
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


/* ############################################################################################ */
/* PART III. FAST PATHS                                                                         */
/* ############################################################################################ */

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

/* The vector helpers below are used by the reference kernels too (attention): without SIMD
   they are the plain left-to-right loops. */
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

#ifdef CLLM__FAST

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
    if (mr == 1) {                  /* one row (decoding): the same arithmetic per output, 1/3 of the work */
        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00;
        cllm_float r[4];
        for (; k + 8 <= kc; k += 8) {
            __m256 x0 = _mm256_loadu_ps(xr[0] + k);
            s00 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(wr[0] + k), s00);
            s01 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(wr[1] + k), s01);
            s02 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(wr[2] + k), s02);
            s03 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(wr[3] + k), s03);
        }
        _mm_storeu_ps(r, cllm__hsum4x8(s00, s01, s02, s03));
        for (j = 0; j < nr; j++) {
            cllm_float acc = r[j];
            int kk;
            for (kk = k; kk < kc; kk++) acc += xr[0][kk] * wr[j][kk];
            out[j] += acc;
        }
        return;
    }
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

#ifdef CLLM__AVX2
/* out[j] += sum_k x[k] w_j[k] for the 8 rows w_0..w_7 (ldw apart): cllm__kernel_dot's one-row
   arithmetic for each output (its 8-lane chain, reduction and tail), over twice as many
   weight rows at once, which keeps more of them streaming from memory. */
static void cllm__kernel_dot_row8(int kc, const cllm_float *x, const cllm_float *w, size_t ldw, cllm_float *out) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    cllm_float r[8];
    int j, k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 x0 = _mm256_loadu_ps(x + k);
        s0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + k), s0);
        s1 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + ldw + k), s1);
        s2 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + 2 * ldw + k), s2);
        s3 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + 3 * ldw + k), s3);
        s4 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + 4 * ldw + k), s4);
        s5 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + 5 * ldw + k), s5);
        s6 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + 6 * ldw + k), s6);
        s7 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + 7 * ldw + k), s7);
    }
    _mm_storeu_ps(r, cllm__hsum4x8(s0, s1, s2, s3));
    _mm_storeu_ps(r + 4, cllm__hsum4x8(s4, s5, s6, s7));
    for (j = 0; j < 8; j++) {
        cllm_float acc = r[j];
        int kk;
        for (kk = k; kk < kc; kk++) acc += x[kk] * w[(size_t)j * ldw + kk];
        out[j] += acc;
    }
}

/* out (1 x N) += x (1 x K) W (N x K)^T: one row, as in decoding, where the time is the time to
   read W. Each thread takes one contiguous run of W's rows, 8 at a time (the last < 8 rows by
   cllm__kernel_dot); every output is computed exactly as cllm__gemm_nt's tiles compute it. */
static void cllm__gemv_nt(cllm_float *out, const cllm_float *x, const cllm_float *W, size_t ldw, int N, int K) {
    int groups = N / 8, g, j;
#ifdef CLLM__OMP
#pragma omp parallel for schedule(static) if(groups > 1 && (double)N * K >= 2e4)
#endif
    for (g = 0; g < groups; g++) cllm__kernel_dot_row8(K, x, W + (size_t)g * 8 * ldw, ldw, out + (size_t)g * 8);
    for (j = groups * 8; j < N; j += CLLM__DC)
        cllm__kernel_dot(K, x, 0, W + (size_t)j * ldw, ldw, out + j, 0, 1, N - j < CLLM__DC ? N - j : CLLM__DC);
}
#endif

/* out (M x N, rows ldo apart) += X (M x K) W (N x K)^T, X and W rows ldx and ldw apart. */
static void cllm__gemm_nt(cllm_float *out, size_t ldo, const cllm_float *X, size_t ldx,
                          const cllm_float *W, size_t ldw, int M, int N, int K) {
    int mc = CLLM__DMC, nc = CLLM__DNC, tn, ntiles, t;
    if (M <= 0 || N <= 0 || K <= 0) return;
#ifdef CLLM__AVX2
    if (M == 1) { cllm__gemv_nt(out, X, W, ldw, N, K); return; }
#endif
    tn = cllm__tiles(M, N, &mc, &nc, CLLM__DR, CLLM__DC);
    ntiles = (M + mc - 1) / mc * tn;
    /* K is not blocked: each output is one chain of fused multiply-adds and one reduction, the
       same whatever M is and however the tiles fall, so a row's result never depends on how many
       rows are computed with it (a token sampled while decoding 1 sequence or 8 is the same). */
#ifdef CLLM__OMP
#pragma omp parallel for schedule(dynamic) if(ntiles > 1 && (double)M * N * K >= 1e5)
#endif
    for (t = 0; t < ntiles; t++) {
        int i0 = t / tn * mc, j0 = t % tn * nc, i, j;
        int i1 = M - i0 < mc ? M : i0 + mc, j1 = N - j0 < nc ? N : j0 + nc;
        for (j = j0; j < j1; j += CLLM__DC) for (i = i0; i < i1; i += CLLM__DR)
            cllm__kernel_dot(K, X + (size_t)i * ldx, ldx, W + (size_t)j * ldw, ldw, out + (size_t)i * ldo + j, ldo,
                             i1 - i < CLLM__DR ? i1 - i : CLLM__DR, j1 - j < CLLM__DC ? j1 - j : CLLM__DC);
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

#if defined(CLLM__OMP) && !defined(CLLM_BLOCKED)
/* OpenMP without CLLM_BLOCKED, a few rows (generation decodes one token at a time): parallel
   over the outputs, each row of W read once and dotted with every input row while in L1, in
   the reference's order (cllm__dot without SIMD), so results equal the reference's. */
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
#endif

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
    cllm__matmul_forward_blocked(out, inp, W, bias, N, C, OC);   /* any N: see cllm__gemm_nt */
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

/* ############################################################################################ */
/* PART IV. GENERATED TABLES                                                                    */
/* ############################################################################################ */

/* ---- Unicode tables, generated from Debian's unicode-data by tests/gen_unicode_tables.py ---- */

/* BEGIN GENERATED UNICODE TABLES (tests/gen_unicode_tables.py, Unicode 15.0.0; `make unicode-tables`) */
#define CLLM__UNICODE_VERSION "15.0.0"
/* start << 8 | bits (1 letter L*, 2 number N*, 4 White_Space), valid until the next start */
static const uint32_t cllm__uni_class_table[1562] = {
    0x0,0x904,0xe00,0x2004,0x2100,0x3002,0x3a00,0x4101,0x5b00,0x6101,
    0x7b00,0x8504,0x8600,0xa004,0xa100,0xaa01,0xab00,0xb202,0xb400,0xb501,
    0xb600,0xb902,0xba01,0xbb00,0xbc02,0xbf00,0xc001,0xd700,0xd801,0xf700,
    0xf801,0x2c200,0x2c601,0x2d200,0x2e001,0x2e500,0x2ec01,0x2ed00,0x2ee01,0x2ef00,
    0x37001,0x37500,0x37601,0x37800,0x37a01,0x37e00,0x37f01,0x38000,0x38601,0x38700,
    0x38801,0x38b00,0x38c01,0x38d00,0x38e01,0x3a200,0x3a301,0x3f600,0x3f701,0x48200,
    0x48a01,0x53000,0x53101,0x55700,0x55901,0x55a00,0x56001,0x58900,0x5d001,0x5eb00,
    0x5ef01,0x5f300,0x62001,0x64b00,0x66002,0x66a00,0x66e01,0x67000,0x67101,0x6d400,
    0x6d501,0x6d600,0x6e501,0x6e700,0x6ee01,0x6f002,0x6fa01,0x6fd00,0x6ff01,0x70000,
    0x71001,0x71100,0x71201,0x73000,0x74d01,0x7a600,0x7b101,0x7b200,0x7c002,0x7ca01,
    0x7eb00,0x7f401,0x7f600,0x7fa01,0x7fb00,0x80001,0x81600,0x81a01,0x81b00,0x82401,
    0x82500,0x82801,0x82900,0x84001,0x85900,0x86001,0x86b00,0x87001,0x88800,0x88901,
    0x88f00,0x8a001,0x8ca00,0x90401,0x93a00,0x93d01,0x93e00,0x95001,0x95100,0x95801,
    0x96200,0x96602,0x97000,0x97101,0x98100,0x98501,0x98d00,0x98f01,0x99100,0x99301,
    0x9a900,0x9aa01,0x9b100,0x9b201,0x9b300,0x9b601,0x9ba00,0x9bd01,0x9be00,0x9ce01,
    0x9cf00,0x9dc01,0x9de00,0x9df01,0x9e200,0x9e602,0x9f001,0x9f200,0x9f402,0x9fa00,
    0x9fc01,0x9fd00,0xa0501,0xa0b00,0xa0f01,0xa1100,0xa1301,0xa2900,0xa2a01,0xa3100,
    0xa3201,0xa3400,0xa3501,0xa3700,0xa3801,0xa3a00,0xa5901,0xa5d00,0xa5e01,0xa5f00,
    0xa6602,0xa7000,0xa7201,0xa7500,0xa8501,0xa8e00,0xa8f01,0xa9200,0xa9301,0xaa900,
    0xaaa01,0xab100,0xab201,0xab400,0xab501,0xaba00,0xabd01,0xabe00,0xad001,0xad100,
    0xae001,0xae200,0xae602,0xaf000,0xaf901,0xafa00,0xb0501,0xb0d00,0xb0f01,0xb1100,
    0xb1301,0xb2900,0xb2a01,0xb3100,0xb3201,0xb3400,0xb3501,0xb3a00,0xb3d01,0xb3e00,
    0xb5c01,0xb5e00,0xb5f01,0xb6200,0xb6602,0xb7000,0xb7101,0xb7202,0xb7800,0xb8301,
    0xb8400,0xb8501,0xb8b00,0xb8e01,0xb9100,0xb9201,0xb9600,0xb9901,0xb9b00,0xb9c01,
    0xb9d00,0xb9e01,0xba000,0xba301,0xba500,0xba801,0xbab00,0xbae01,0xbba00,0xbd001,
    0xbd100,0xbe602,0xbf300,0xc0501,0xc0d00,0xc0e01,0xc1100,0xc1201,0xc2900,0xc2a01,
    0xc3a00,0xc3d01,0xc3e00,0xc5801,0xc5b00,0xc5d01,0xc5e00,0xc6001,0xc6200,0xc6602,
    0xc7000,0xc7802,0xc7f00,0xc8001,0xc8100,0xc8501,0xc8d00,0xc8e01,0xc9100,0xc9201,
    0xca900,0xcaa01,0xcb400,0xcb501,0xcba00,0xcbd01,0xcbe00,0xcdd01,0xcdf00,0xce001,
    0xce200,0xce602,0xcf000,0xcf101,0xcf300,0xd0401,0xd0d00,0xd0e01,0xd1100,0xd1201,
    0xd3b00,0xd3d01,0xd3e00,0xd4e01,0xd4f00,0xd5401,0xd5700,0xd5802,0xd5f01,0xd6200,
    0xd6602,0xd7900,0xd7a01,0xd8000,0xd8501,0xd9700,0xd9a01,0xdb200,0xdb301,0xdbc00,
    0xdbd01,0xdbe00,0xdc001,0xdc700,0xde602,0xdf000,0xe0101,0xe3100,0xe3201,0xe3400,
    0xe4001,0xe4700,0xe5002,0xe5a00,0xe8101,0xe8300,0xe8401,0xe8500,0xe8601,0xe8b00,
    0xe8c01,0xea400,0xea501,0xea600,0xea701,0xeb100,0xeb201,0xeb400,0xebd01,0xebe00,
    0xec001,0xec500,0xec601,0xec700,0xed002,0xeda00,0xedc01,0xee000,0xf0001,0xf0100,
    0xf2002,0xf3400,0xf4001,0xf4800,0xf4901,0xf6d00,0xf8801,0xf8d00,0x100001,0x102b00,
    0x103f01,0x104002,0x104a00,0x105001,0x105600,0x105a01,0x105e00,0x106101,0x106200,0x106501,
    0x106700,0x106e01,0x107100,0x107501,0x108200,0x108e01,0x108f00,0x109002,0x109a00,0x10a001,
    0x10c600,0x10c701,0x10c800,0x10cd01,0x10ce00,0x10d001,0x10fb00,0x10fc01,0x124900,0x124a01,
    0x124e00,0x125001,0x125700,0x125801,0x125900,0x125a01,0x125e00,0x126001,0x128900,0x128a01,
    0x128e00,0x129001,0x12b100,0x12b201,0x12b600,0x12b801,0x12bf00,0x12c001,0x12c100,0x12c201,
    0x12c600,0x12c801,0x12d700,0x12d801,0x131100,0x131201,0x131600,0x131801,0x135b00,0x136902,
    0x137d00,0x138001,0x139000,0x13a001,0x13f600,0x13f801,0x13fe00,0x140101,0x166d00,0x166f01,
    0x168004,0x168101,0x169b00,0x16a001,0x16eb00,0x16ee02,0x16f101,0x16f900,0x170001,0x171200,
    0x171f01,0x173200,0x174001,0x175200,0x176001,0x176d00,0x176e01,0x177100,0x178001,0x17b400,
    0x17d701,0x17d800,0x17dc01,0x17dd00,0x17e002,0x17ea00,0x17f002,0x17fa00,0x181002,0x181a00,
    0x182001,0x187900,0x188001,0x188500,0x188701,0x18a900,0x18aa01,0x18ab00,0x18b001,0x18f600,
    0x190001,0x191f00,0x194602,0x195001,0x196e00,0x197001,0x197500,0x198001,0x19ac00,0x19b001,
    0x19ca00,0x19d002,0x19db00,0x1a0001,0x1a1700,0x1a2001,0x1a5500,0x1a8002,0x1a8a00,0x1a9002,
    0x1a9a00,0x1aa701,0x1aa800,0x1b0501,0x1b3400,0x1b4501,0x1b4d00,0x1b5002,0x1b5a00,0x1b8301,
    0x1ba100,0x1bae01,0x1bb002,0x1bba01,0x1be600,0x1c0001,0x1c2400,0x1c4002,0x1c4a00,0x1c4d01,
    0x1c5002,0x1c5a01,0x1c7e00,0x1c8001,0x1c8900,0x1c9001,0x1cbb00,0x1cbd01,0x1cc000,0x1ce901,
    0x1ced00,0x1cee01,0x1cf400,0x1cf501,0x1cf700,0x1cfa01,0x1cfb00,0x1d0001,0x1dc000,0x1e0001,
    0x1f1600,0x1f1801,0x1f1e00,0x1f2001,0x1f4600,0x1f4801,0x1f4e00,0x1f5001,0x1f5800,0x1f5901,
    0x1f5a00,0x1f5b01,0x1f5c00,0x1f5d01,0x1f5e00,0x1f5f01,0x1f7e00,0x1f8001,0x1fb500,0x1fb601,
    0x1fbd00,0x1fbe01,0x1fbf00,0x1fc201,0x1fc500,0x1fc601,0x1fcd00,0x1fd001,0x1fd400,0x1fd601,
    0x1fdc00,0x1fe001,0x1fed00,0x1ff201,0x1ff500,0x1ff601,0x1ffd00,0x200004,0x200b00,0x202804,
    0x202a00,0x202f04,0x203000,0x205f04,0x206000,0x207002,0x207101,0x207200,0x207402,0x207a00,
    0x207f01,0x208002,0x208a00,0x209001,0x209d00,0x210201,0x210300,0x210701,0x210800,0x210a01,
    0x211400,0x211501,0x211600,0x211901,0x211e00,0x212401,0x212500,0x212601,0x212700,0x212801,
    0x212900,0x212a01,0x212e00,0x212f01,0x213a00,0x213c01,0x214000,0x214501,0x214a00,0x214e01,
    0x214f00,0x215002,0x218301,0x218502,0x218a00,0x246002,0x249c00,0x24ea02,0x250000,0x277602,
    0x279400,0x2c0001,0x2ce500,0x2ceb01,0x2cef00,0x2cf201,0x2cf400,0x2cfd02,0x2cfe00,0x2d0001,
    0x2d2600,0x2d2701,0x2d2800,0x2d2d01,0x2d2e00,0x2d3001,0x2d6800,0x2d6f01,0x2d7000,0x2d8001,
    0x2d9700,0x2da001,0x2da700,0x2da801,0x2daf00,0x2db001,0x2db700,0x2db801,0x2dbf00,0x2dc001,
    0x2dc700,0x2dc801,0x2dcf00,0x2dd001,0x2dd700,0x2dd801,0x2ddf00,0x2e2f01,0x2e3000,0x300004,
    0x300100,0x300501,0x300702,0x300800,0x302102,0x302a00,0x303101,0x303600,0x303802,0x303b01,
    0x303d00,0x304101,0x309700,0x309d01,0x30a000,0x30a101,0x30fb00,0x30fc01,0x310000,0x310501,
    0x313000,0x313101,0x318f00,0x319202,0x319600,0x31a001,0x31c000,0x31f001,0x320000,0x322002,
    0x322a00,0x324802,0x325000,0x325102,0x326000,0x328002,0x328a00,0x32b102,0x32c000,0x340001,
    0x4dc000,0x4e0001,0xa48d00,0xa4d001,0xa4fe00,0xa50001,0xa60d00,0xa61001,0xa62002,0xa62a01,
    0xa62c00,0xa64001,0xa66f00,0xa67f01,0xa69e00,0xa6a001,0xa6e602,0xa6f000,0xa71701,0xa72000,
    0xa72201,0xa78900,0xa78b01,0xa7cb00,0xa7d001,0xa7d200,0xa7d301,0xa7d400,0xa7d501,0xa7da00,
    0xa7f201,0xa80200,0xa80301,0xa80600,0xa80701,0xa80b00,0xa80c01,0xa82300,0xa83002,0xa83600,
    0xa84001,0xa87400,0xa88201,0xa8b400,0xa8d002,0xa8da00,0xa8f201,0xa8f800,0xa8fb01,0xa8fc00,
    0xa8fd01,0xa8ff00,0xa90002,0xa90a01,0xa92600,0xa93001,0xa94700,0xa96001,0xa97d00,0xa98401,
    0xa9b300,0xa9cf01,0xa9d002,0xa9da00,0xa9e001,0xa9e500,0xa9e601,0xa9f002,0xa9fa01,0xa9ff00,
    0xaa0001,0xaa2900,0xaa4001,0xaa4300,0xaa4401,0xaa4c00,0xaa5002,0xaa5a00,0xaa6001,0xaa7700,
    0xaa7a01,0xaa7b00,0xaa7e01,0xaab000,0xaab101,0xaab200,0xaab501,0xaab700,0xaab901,0xaabe00,
    0xaac001,0xaac100,0xaac201,0xaac300,0xaadb01,0xaade00,0xaae001,0xaaeb00,0xaaf201,0xaaf500,
    0xab0101,0xab0700,0xab0901,0xab0f00,0xab1101,0xab1700,0xab2001,0xab2700,0xab2801,0xab2f00,
    0xab3001,0xab5b00,0xab5c01,0xab6a00,0xab7001,0xabe300,0xabf002,0xabfa00,0xac0001,0xd7a400,
    0xd7b001,0xd7c700,0xd7cb01,0xd7fc00,0xf90001,0xfa6e00,0xfa7001,0xfada00,0xfb0001,0xfb0700,
    0xfb1301,0xfb1800,0xfb1d01,0xfb1e00,0xfb1f01,0xfb2900,0xfb2a01,0xfb3700,0xfb3801,0xfb3d00,
    0xfb3e01,0xfb3f00,0xfb4001,0xfb4200,0xfb4301,0xfb4500,0xfb4601,0xfbb200,0xfbd301,0xfd3e00,
    0xfd5001,0xfd9000,0xfd9201,0xfdc800,0xfdf001,0xfdfc00,0xfe7001,0xfe7500,0xfe7601,0xfefd00,
    0xff1002,0xff1a00,0xff2101,0xff3b00,0xff4101,0xff5b00,0xff6601,0xffbf00,0xffc201,0xffc800,
    0xffca01,0xffd000,0xffd201,0xffd800,0xffda01,0xffdd00,0x1000001,0x1000c00,0x1000d01,0x1002700,
    0x1002801,0x1003b00,0x1003c01,0x1003e00,0x1003f01,0x1004e00,0x1005001,0x1005e00,0x1008001,0x100fb00,
    0x1010702,0x1013400,0x1014002,0x1017900,0x1018a02,0x1018c00,0x1028001,0x1029d00,0x102a001,0x102d100,
    0x102e102,0x102fc00,0x1030001,0x1032002,0x1032400,0x1032d01,0x1034102,0x1034201,0x1034a02,0x1034b00,
    0x1035001,0x1037600,0x1038001,0x1039e00,0x103a001,0x103c400,0x103c801,0x103d000,0x103d102,0x103d600,
    0x1040001,0x1049e00,0x104a002,0x104aa00,0x104b001,0x104d400,0x104d801,0x104fc00,0x1050001,0x1052800,
    0x1053001,0x1056400,0x1057001,0x1057b00,0x1057c01,0x1058b00,0x1058c01,0x1059300,0x1059401,0x1059600,
    0x1059701,0x105a200,0x105a301,0x105b200,0x105b301,0x105ba00,0x105bb01,0x105bd00,0x1060001,0x1073700,
    0x1074001,0x1075600,0x1076001,0x1076800,0x1078001,0x1078600,0x1078701,0x107b100,0x107b201,0x107bb00,
    0x1080001,0x1080600,0x1080801,0x1080900,0x1080a01,0x1083600,0x1083701,0x1083900,0x1083c01,0x1083d00,
    0x1083f01,0x1085600,0x1085802,0x1086001,0x1087700,0x1087902,0x1088001,0x1089f00,0x108a702,0x108b000,
    0x108e001,0x108f300,0x108f401,0x108f600,0x108fb02,0x1090001,0x1091602,0x1091c00,0x1092001,0x1093a00,
    0x1098001,0x109b800,0x109bc02,0x109be01,0x109c002,0x109d000,0x109d202,0x10a0001,0x10a0100,0x10a1001,
    0x10a1400,0x10a1501,0x10a1800,0x10a1901,0x10a3600,0x10a4002,0x10a4900,0x10a6001,0x10a7d02,0x10a7f00,
    0x10a8001,0x10a9d02,0x10aa000,0x10ac001,0x10ac800,0x10ac901,0x10ae500,0x10aeb02,0x10af000,0x10b0001,
    0x10b3600,0x10b4001,0x10b5600,0x10b5802,0x10b6001,0x10b7300,0x10b7802,0x10b8001,0x10b9200,0x10ba902,
    0x10bb000,0x10c0001,0x10c4900,0x10c8001,0x10cb300,0x10cc001,0x10cf300,0x10cfa02,0x10d0001,0x10d2400,
    0x10d3002,0x10d3a00,0x10e6002,0x10e7f00,0x10e8001,0x10eaa00,0x10eb001,0x10eb200,0x10f0001,0x10f1d02,
    0x10f2701,0x10f2800,0x10f3001,0x10f4600,0x10f5102,0x10f5500,0x10f7001,0x10f8200,0x10fb001,0x10fc502,
    0x10fcc00,0x10fe001,0x10ff700,0x1100301,0x1103800,0x1105202,0x1107000,0x1107101,0x1107300,0x1107501,
    0x1107600,0x1108301,0x110b000,0x110d001,0x110e900,0x110f002,0x110fa00,0x1110301,0x1112700,0x1113602,
    0x1114000,0x1114401,0x1114500,0x1114701,0x1114800,0x1115001,0x1117300,0x1117601,0x1117700,0x1118301,
    0x111b300,0x111c101,0x111c500,0x111d002,0x111da01,0x111db00,0x111dc01,0x111dd00,0x111e102,0x111f500,
    0x1120001,0x1121200,0x1121301,0x1122c00,0x1123f01,0x1124100,0x1128001,0x1128700,0x1128801,0x1128900,
    0x1128a01,0x1128e00,0x1128f01,0x1129e00,0x1129f01,0x112a900,0x112b001,0x112df00,0x112f002,0x112fa00,
    0x1130501,0x1130d00,0x1130f01,0x1131100,0x1131301,0x1132900,0x1132a01,0x1133100,0x1133201,0x1133400,
    0x1133501,0x1133a00,0x1133d01,0x1133e00,0x1135001,0x1135100,0x1135d01,0x1136200,0x1140001,0x1143500,
    0x1144701,0x1144b00,0x1145002,0x1145a00,0x1145f01,0x1146200,0x1148001,0x114b000,0x114c401,0x114c600,
    0x114c701,0x114c800,0x114d002,0x114da00,0x1158001,0x115af00,0x115d801,0x115dc00,0x1160001,0x1163000,
    0x1164401,0x1164500,0x1165002,0x1165a00,0x1168001,0x116ab00,0x116b801,0x116b900,0x116c002,0x116ca00,
    0x1170001,0x1171b00,0x1173002,0x1173c00,0x1174001,0x1174700,0x1180001,0x1182c00,0x118a001,0x118e002,
    0x118f300,0x118ff01,0x1190700,0x1190901,0x1190a00,0x1190c01,0x1191400,0x1191501,0x1191700,0x1191801,
    0x1193000,0x1193f01,0x1194000,0x1194101,0x1194200,0x1195002,0x1195a00,0x119a001,0x119a800,0x119aa01,
    0x119d100,0x119e101,0x119e200,0x119e301,0x119e400,0x11a0001,0x11a0100,0x11a0b01,0x11a3300,0x11a3a01,
    0x11a3b00,0x11a5001,0x11a5100,0x11a5c01,0x11a8a00,0x11a9d01,0x11a9e00,0x11ab001,0x11af900,0x11c0001,
    0x11c0900,0x11c0a01,0x11c2f00,0x11c4001,0x11c4100,0x11c5002,0x11c6d00,0x11c7201,0x11c9000,0x11d0001,
    0x11d0700,0x11d0801,0x11d0a00,0x11d0b01,0x11d3100,0x11d4601,0x11d4700,0x11d5002,0x11d5a00,0x11d6001,
    0x11d6600,0x11d6701,0x11d6900,0x11d6a01,0x11d8a00,0x11d9801,0x11d9900,0x11da002,0x11daa00,0x11ee001,
    0x11ef300,0x11f0201,0x11f0300,0x11f0401,0x11f1100,0x11f1201,0x11f3400,0x11f5002,0x11f5a00,0x11fb001,
    0x11fb100,0x11fc002,0x11fd500,0x1200001,0x1239a00,0x1240002,0x1246f00,0x1248001,0x1254400,0x12f9001,
    0x12ff100,0x1300001,0x1343000,0x1344101,0x1344700,0x1440001,0x1464700,0x1680001,0x16a3900,0x16a4001,
    0x16a5f00,0x16a6002,0x16a6a00,0x16a7001,0x16abf00,0x16ac002,0x16aca00,0x16ad001,0x16aee00,0x16b0001,
    0x16b3000,0x16b4001,0x16b4400,0x16b5002,0x16b5a00,0x16b5b02,0x16b6200,0x16b6301,0x16b7800,0x16b7d01,
    0x16b9000,0x16e4001,0x16e8002,0x16e9700,0x16f0001,0x16f4b00,0x16f5001,0x16f5100,0x16f9301,0x16fa000,
    0x16fe001,0x16fe200,0x16fe301,0x16fe400,0x1700001,0x187f800,0x1880001,0x18cd600,0x18d0001,0x18d0900,
    0x1aff001,0x1aff400,0x1aff501,0x1affc00,0x1affd01,0x1afff00,0x1b00001,0x1b12300,0x1b13201,0x1b13300,
    0x1b15001,0x1b15300,0x1b15501,0x1b15600,0x1b16401,0x1b16800,0x1b17001,0x1b2fc00,0x1bc0001,0x1bc6b00,
    0x1bc7001,0x1bc7d00,0x1bc8001,0x1bc8900,0x1bc9001,0x1bc9a00,0x1d2c002,0x1d2d400,0x1d2e002,0x1d2f400,
    0x1d36002,0x1d37900,0x1d40001,0x1d45500,0x1d45601,0x1d49d00,0x1d49e01,0x1d4a000,0x1d4a201,0x1d4a300,
    0x1d4a501,0x1d4a700,0x1d4a901,0x1d4ad00,0x1d4ae01,0x1d4ba00,0x1d4bb01,0x1d4bc00,0x1d4bd01,0x1d4c400,
    0x1d4c501,0x1d50600,0x1d50701,0x1d50b00,0x1d50d01,0x1d51500,0x1d51601,0x1d51d00,0x1d51e01,0x1d53a00,
    0x1d53b01,0x1d53f00,0x1d54001,0x1d54500,0x1d54601,0x1d54700,0x1d54a01,0x1d55100,0x1d55201,0x1d6a600,
    0x1d6a801,0x1d6c100,0x1d6c201,0x1d6db00,0x1d6dc01,0x1d6fb00,0x1d6fc01,0x1d71500,0x1d71601,0x1d73500,
    0x1d73601,0x1d74f00,0x1d75001,0x1d76f00,0x1d77001,0x1d78900,0x1d78a01,0x1d7a900,0x1d7aa01,0x1d7c300,
    0x1d7c401,0x1d7cc00,0x1d7ce02,0x1d80000,0x1df0001,0x1df1f00,0x1df2501,0x1df2b00,0x1e03001,0x1e06e00,
    0x1e10001,0x1e12d00,0x1e13701,0x1e13e00,0x1e14002,0x1e14a00,0x1e14e01,0x1e14f00,0x1e29001,0x1e2ae00,
    0x1e2c001,0x1e2ec00,0x1e2f002,0x1e2fa00,0x1e4d001,0x1e4ec00,0x1e4f002,0x1e4fa00,0x1e7e001,0x1e7e700,
    0x1e7e801,0x1e7ec00,0x1e7ed01,0x1e7ef00,0x1e7f001,0x1e7ff00,0x1e80001,0x1e8c500,0x1e8c702,0x1e8d000,
    0x1e90001,0x1e94400,0x1e94b01,0x1e94c00,0x1e95002,0x1e95a00,0x1ec7102,0x1ecac00,0x1ecad02,0x1ecb000,
    0x1ecb102,0x1ecb500,0x1ed0102,0x1ed2e00,0x1ed2f02,0x1ed3e00,0x1ee0001,0x1ee0400,0x1ee0501,0x1ee2000,
    0x1ee2101,0x1ee2300,0x1ee2401,0x1ee2500,0x1ee2701,0x1ee2800,0x1ee2901,0x1ee3300,0x1ee3401,0x1ee3800,
    0x1ee3901,0x1ee3a00,0x1ee3b01,0x1ee3c00,0x1ee4201,0x1ee4300,0x1ee4701,0x1ee4800,0x1ee4901,0x1ee4a00,
    0x1ee4b01,0x1ee4c00,0x1ee4d01,0x1ee5000,0x1ee5101,0x1ee5300,0x1ee5401,0x1ee5500,0x1ee5701,0x1ee5800,
    0x1ee5901,0x1ee5a00,0x1ee5b01,0x1ee5c00,0x1ee5d01,0x1ee5e00,0x1ee5f01,0x1ee6000,0x1ee6101,0x1ee6300,
    0x1ee6401,0x1ee6500,0x1ee6701,0x1ee6b00,0x1ee6c01,0x1ee7300,0x1ee7401,0x1ee7800,0x1ee7901,0x1ee7d00,
    0x1ee7e01,0x1ee7f00,0x1ee8001,0x1ee8a00,0x1ee8b01,0x1ee9c00,0x1eea101,0x1eea400,0x1eea501,0x1eeaa00,
    0x1eeab01,0x1eebc00,0x1f10002,0x1f10d00,0x1fbf002,0x1fbfa00,0x2000001,0x2a6e000,0x2a70001,0x2b73a00,
    0x2b74001,0x2b81e00,0x2b82001,0x2cea200,0x2ceb001,0x2ebe100,0x2f80001,0x2fa1e00,0x3000001,0x3134b00,
    0x3135001,0x323b000,
};
/* start << 8 | canonical combining class, valid until the next start */
static const uint32_t cllm__uni_ccc_table[581] = {
    0x0,0x300e6,0x315e8,0x316dc,0x31ae8,0x31bd8,0x31cdc,0x321ca,0x323dc,0x327ca,
    0x329dc,0x33401,0x339dc,0x33de6,0x345f0,0x346e6,0x347dc,0x34ae6,0x34ddc,0x34f00,
    0x350e6,0x353dc,0x357e6,0x358e8,0x359dc,0x35be6,0x35ce9,0x35dea,0x35fe9,0x360ea,
    0x362e9,0x363e6,0x37000,0x483e6,0x48800,0x591dc,0x592e6,0x596dc,0x597e6,0x59ade,
    0x59bdc,0x59ce6,0x5a2dc,0x5a8e6,0x5aadc,0x5abe6,0x5adde,0x5aee4,0x5afe6,0x5b00a,
    0x5b10b,0x5b20c,0x5b30d,0x5b40e,0x5b50f,0x5b610,0x5b711,0x5b812,0x5b913,0x5bb14,
    0x5bc15,0x5bd16,0x5be00,0x5bf17,0x5c000,0x5c118,0x5c219,0x5c300,0x5c4e6,0x5c5dc,
    0x5c600,0x5c712,0x5c800,0x610e6,0x6181e,0x6191f,0x61a20,0x61b00,0x64b1b,0x64c1c,
    0x64d1d,0x64e1e,0x64f1f,0x65020,0x65121,0x65222,0x653e6,0x655dc,0x657e6,0x65cdc,
    0x65de6,0x65fdc,0x66000,0x67023,0x67100,0x6d6e6,0x6dd00,0x6dfe6,0x6e3dc,0x6e4e6,
    0x6e500,0x6e7e6,0x6e900,0x6eadc,0x6ebe6,0x6eddc,0x6ee00,0x71124,0x71200,0x730e6,
    0x731dc,0x732e6,0x734dc,0x735e6,0x737dc,0x73ae6,0x73bdc,0x73de6,0x73edc,0x73fe6,
    0x742dc,0x743e6,0x744dc,0x745e6,0x746dc,0x747e6,0x748dc,0x749e6,0x74b00,0x7ebe6,
    0x7f2dc,0x7f3e6,0x7f400,0x7fddc,0x7fe00,0x816e6,0x81a00,0x81be6,0x82400,0x825e6,
    0x82800,0x829e6,0x82e00,0x859dc,0x85c00,0x898e6,0x899dc,0x89ce6,0x8a000,0x8cae6,
    0x8cfdc,0x8d4e6,0x8e200,0x8e3dc,0x8e4e6,0x8e6dc,0x8e7e6,0x8e9dc,0x8eae6,0x8eddc,
    0x8f01b,0x8f11c,0x8f21d,0x8f3e6,0x8f6dc,0x8f7e6,0x8f9dc,0x8fbe6,0x90000,0x93c07,
    0x93d00,0x94d09,0x94e00,0x951e6,0x952dc,0x953e6,0x95500,0x9bc07,0x9bd00,0x9cd09,
    0x9ce00,0x9fee6,0x9ff00,0xa3c07,0xa3d00,0xa4d09,0xa4e00,0xabc07,0xabd00,0xacd09,
    0xace00,0xb3c07,0xb3d00,0xb4d09,0xb4e00,0xbcd09,0xbce00,0xc3c07,0xc3d00,0xc4d09,
    0xc4e00,0xc5554,0xc565b,0xc5700,0xcbc07,0xcbd00,0xccd09,0xcce00,0xd3b09,0xd3d00,
    0xd4d09,0xd4e00,0xdca09,0xdcb00,0xe3867,0xe3a09,0xe3b00,0xe486b,0xe4c00,0xeb876,
    0xeba09,0xebb00,0xec87a,0xecc00,0xf18dc,0xf1a00,0xf35dc,0xf3600,0xf37dc,0xf3800,
    0xf39d8,0xf3a00,0xf7181,0xf7282,0xf7300,0xf7484,0xf7500,0xf7a82,0xf7e00,0xf8082,
    0xf8100,0xf82e6,0xf8409,0xf8500,0xf86e6,0xf8800,0xfc6dc,0xfc700,0x103707,0x103800,
    0x103909,0x103b00,0x108ddc,0x108e00,0x135de6,0x136000,0x171409,0x171600,0x173409,0x173500,
    0x17d209,0x17d300,0x17dde6,0x17de00,0x18a9e4,0x18aa00,0x1939de,0x193ae6,0x193bdc,0x193c00,
    0x1a17e6,0x1a18dc,0x1a1900,0x1a6009,0x1a6100,0x1a75e6,0x1a7d00,0x1a7fdc,0x1a8000,0x1ab0e6,
    0x1ab5dc,0x1abbe6,0x1abddc,0x1abe00,0x1abfdc,0x1ac1e6,0x1ac3dc,0x1ac5e6,0x1acadc,0x1acbe6,
    0x1acf00,0x1b3407,0x1b3500,0x1b4409,0x1b4500,0x1b6be6,0x1b6cdc,0x1b6de6,0x1b7400,0x1baa09,
    0x1bac00,0x1be607,0x1be700,0x1bf209,0x1bf400,0x1c3707,0x1c3800,0x1cd0e6,0x1cd300,0x1cd401,
    0x1cd5dc,0x1cdae6,0x1cdcdc,0x1ce0e6,0x1ce100,0x1ce201,0x1ce900,0x1ceddc,0x1cee00,0x1cf4e6,
    0x1cf500,0x1cf8e6,0x1cfa00,0x1dc0e6,0x1dc2dc,0x1dc3e6,0x1dcadc,0x1dcbe6,0x1dcdea,0x1dced6,
    0x1dcfdc,0x1dd0ca,0x1dd1e6,0x1df6e8,0x1df7e4,0x1df9dc,0x1dfada,0x1dfbe6,0x1dfce9,0x1dfddc,
    0x1dfee6,0x1dffdc,0x1e0000,0x20d0e6,0x20d201,0x20d4e6,0x20d801,0x20dbe6,0x20dd00,0x20e1e6,
    0x20e200,0x20e501,0x20e7e6,0x20e8dc,0x20e9e6,0x20ea01,0x20ecdc,0x20f0e6,0x20f100,0x2cefe6,
    0x2cf200,0x2d7f09,0x2d8000,0x2de0e6,0x2e0000,0x302ada,0x302be4,0x302ce8,0x302dde,0x302ee0,
    0x303000,0x309908,0x309b00,0xa66fe6,0xa67000,0xa674e6,0xa67e00,0xa69ee6,0xa6a000,0xa6f0e6,
    0xa6f200,0xa80609,0xa80700,0xa82c09,0xa82d00,0xa8c409,0xa8c500,0xa8e0e6,0xa8f200,0xa92bdc,
    0xa92e00,0xa95309,0xa95400,0xa9b307,0xa9b400,0xa9c009,0xa9c100,0xaab0e6,0xaab100,0xaab2e6,
    0xaab4dc,0xaab500,0xaab7e6,0xaab900,0xaabee6,0xaac000,0xaac1e6,0xaac200,0xaaf609,0xaaf700,
    0xabed09,0xabee00,0xfb1e1a,0xfb1f00,0xfe20e6,0xfe27dc,0xfe2ee6,0xfe3000,0x101fddc,0x101fe00,
    0x102e0dc,0x102e100,0x10376e6,0x1037b00,0x10a0ddc,0x10a0e00,0x10a0fe6,0x10a1000,0x10a38e6,0x10a3901,
    0x10a3adc,0x10a3b00,0x10a3f09,0x10a4000,0x10ae5e6,0x10ae6dc,0x10ae700,0x10d24e6,0x10d2800,0x10eabe6,
    0x10ead00,0x10efddc,0x10f0000,0x10f46dc,0x10f48e6,0x10f4bdc,0x10f4ce6,0x10f4ddc,0x10f5100,0x10f82e6,
    0x10f83dc,0x10f84e6,0x10f85dc,0x10f8600,0x1104609,0x1104700,0x1107009,0x1107100,0x1107f09,0x1108000,
    0x110b909,0x110ba07,0x110bb00,0x11100e6,0x1110300,0x1113309,0x1113500,0x1117307,0x1117400,0x111c009,
    0x111c100,0x111ca07,0x111cb00,0x1123509,0x1123607,0x1123700,0x112e907,0x112ea09,0x112eb00,0x1133b07,
    0x1133d00,0x1134d09,0x1134e00,0x11366e6,0x1136d00,0x11370e6,0x1137500,0x1144209,0x1144300,0x1144607,
    0x1144700,0x1145ee6,0x1145f00,0x114c209,0x114c307,0x114c400,0x115bf09,0x115c007,0x115c100,0x1163f09,
    0x1164000,0x116b609,0x116b707,0x116b800,0x1172b09,0x1172c00,0x1183909,0x1183a07,0x1183b00,0x1193d09,
    0x1193f00,0x1194307,0x1194400,0x119e009,0x119e100,0x11a3409,0x11a3500,0x11a4709,0x11a4800,0x11a9909,
    0x11a9a00,0x11c3f09,0x11c4000,0x11d4207,0x11d4300,0x11d4409,0x11d4600,0x11d9709,0x11d9800,0x11f4109,
    0x11f4300,0x16af001,0x16af500,0x16b30e6,0x16b3700,0x16ff006,0x16ff200,0x1bc9e01,0x1bc9f00,0x1d165d8,
    0x1d16701,0x1d16a00,0x1d16de2,0x1d16ed8,0x1d17300,0x1d17bdc,0x1d18300,0x1d185e6,0x1d18adc,0x1d18c00,
    0x1d1aae6,0x1d1ae00,0x1d242e6,0x1d24500,0x1e000e6,0x1e00700,0x1e008e6,0x1e01900,0x1e01be6,0x1e02200,
    0x1e023e6,0x1e02500,0x1e026e6,0x1e02b00,0x1e08fe6,0x1e09000,0x1e130e6,0x1e13700,0x1e2aee6,0x1e2af00,
    0x1e2ece6,0x1e2f000,0x1e4ece8,0x1e4eedc,0x1e4efe6,0x1e4f000,0x1e8d0dc,0x1e8d700,0x1e944e6,0x1e94a07,
    0x1e94b00,
};
/* {cp | 0x80000000 if excluded from composition, first, second (0 = singleton)}, sorted by cp */
static const uint32_t cllm__uni_decomp[6183] = {
    0xc0,0x41,0x300,0xc1,0x41,0x301,0xc2,0x41,0x302,0xc3,0x41,0x303,0xc4,0x41,0x308,
    0xc5,0x41,0x30a,0xc7,0x43,0x327,0xc8,0x45,0x300,0xc9,0x45,0x301,0xca,0x45,0x302,
    0xcb,0x45,0x308,0xcc,0x49,0x300,0xcd,0x49,0x301,0xce,0x49,0x302,0xcf,0x49,0x308,
    0xd1,0x4e,0x303,0xd2,0x4f,0x300,0xd3,0x4f,0x301,0xd4,0x4f,0x302,0xd5,0x4f,0x303,
    0xd6,0x4f,0x308,0xd9,0x55,0x300,0xda,0x55,0x301,0xdb,0x55,0x302,0xdc,0x55,0x308,
    0xdd,0x59,0x301,0xe0,0x61,0x300,0xe1,0x61,0x301,0xe2,0x61,0x302,0xe3,0x61,0x303,
    0xe4,0x61,0x308,0xe5,0x61,0x30a,0xe7,0x63,0x327,0xe8,0x65,0x300,0xe9,0x65,0x301,
    0xea,0x65,0x302,0xeb,0x65,0x308,0xec,0x69,0x300,0xed,0x69,0x301,0xee,0x69,0x302,
    0xef,0x69,0x308,0xf1,0x6e,0x303,0xf2,0x6f,0x300,0xf3,0x6f,0x301,0xf4,0x6f,0x302,
    0xf5,0x6f,0x303,0xf6,0x6f,0x308,0xf9,0x75,0x300,0xfa,0x75,0x301,0xfb,0x75,0x302,
    0xfc,0x75,0x308,0xfd,0x79,0x301,0xff,0x79,0x308,0x100,0x41,0x304,0x101,0x61,0x304,
    0x102,0x41,0x306,0x103,0x61,0x306,0x104,0x41,0x328,0x105,0x61,0x328,0x106,0x43,0x301,
    0x107,0x63,0x301,0x108,0x43,0x302,0x109,0x63,0x302,0x10a,0x43,0x307,0x10b,0x63,0x307,
    0x10c,0x43,0x30c,0x10d,0x63,0x30c,0x10e,0x44,0x30c,0x10f,0x64,0x30c,0x112,0x45,0x304,
    0x113,0x65,0x304,0x114,0x45,0x306,0x115,0x65,0x306,0x116,0x45,0x307,0x117,0x65,0x307,
    0x118,0x45,0x328,0x119,0x65,0x328,0x11a,0x45,0x30c,0x11b,0x65,0x30c,0x11c,0x47,0x302,
    0x11d,0x67,0x302,0x11e,0x47,0x306,0x11f,0x67,0x306,0x120,0x47,0x307,0x121,0x67,0x307,
    0x122,0x47,0x327,0x123,0x67,0x327,0x124,0x48,0x302,0x125,0x68,0x302,0x128,0x49,0x303,
    0x129,0x69,0x303,0x12a,0x49,0x304,0x12b,0x69,0x304,0x12c,0x49,0x306,0x12d,0x69,0x306,
    0x12e,0x49,0x328,0x12f,0x69,0x328,0x130,0x49,0x307,0x134,0x4a,0x302,0x135,0x6a,0x302,
    0x136,0x4b,0x327,0x137,0x6b,0x327,0x139,0x4c,0x301,0x13a,0x6c,0x301,0x13b,0x4c,0x327,
    0x13c,0x6c,0x327,0x13d,0x4c,0x30c,0x13e,0x6c,0x30c,0x143,0x4e,0x301,0x144,0x6e,0x301,
    0x145,0x4e,0x327,0x146,0x6e,0x327,0x147,0x4e,0x30c,0x148,0x6e,0x30c,0x14c,0x4f,0x304,
    0x14d,0x6f,0x304,0x14e,0x4f,0x306,0x14f,0x6f,0x306,0x150,0x4f,0x30b,0x151,0x6f,0x30b,
    0x154,0x52,0x301,0x155,0x72,0x301,0x156,0x52,0x327,0x157,0x72,0x327,0x158,0x52,0x30c,
    0x159,0x72,0x30c,0x15a,0x53,0x301,0x15b,0x73,0x301,0x15c,0x53,0x302,0x15d,0x73,0x302,
    0x15e,0x53,0x327,0x15f,0x73,0x327,0x160,0x53,0x30c,0x161,0x73,0x30c,0x162,0x54,0x327,
    0x163,0x74,0x327,0x164,0x54,0x30c,0x165,0x74,0x30c,0x168,0x55,0x303,0x169,0x75,0x303,
    0x16a,0x55,0x304,0x16b,0x75,0x304,0x16c,0x55,0x306,0x16d,0x75,0x306,0x16e,0x55,0x30a,
    0x16f,0x75,0x30a,0x170,0x55,0x30b,0x171,0x75,0x30b,0x172,0x55,0x328,0x173,0x75,0x328,
    0x174,0x57,0x302,0x175,0x77,0x302,0x176,0x59,0x302,0x177,0x79,0x302,0x178,0x59,0x308,
    0x179,0x5a,0x301,0x17a,0x7a,0x301,0x17b,0x5a,0x307,0x17c,0x7a,0x307,0x17d,0x5a,0x30c,
    0x17e,0x7a,0x30c,0x1a0,0x4f,0x31b,0x1a1,0x6f,0x31b,0x1af,0x55,0x31b,0x1b0,0x75,0x31b,
    0x1cd,0x41,0x30c,0x1ce,0x61,0x30c,0x1cf,0x49,0x30c,0x1d0,0x69,0x30c,0x1d1,0x4f,0x30c,
    0x1d2,0x6f,0x30c,0x1d3,0x55,0x30c,0x1d4,0x75,0x30c,0x1d5,0xdc,0x304,0x1d6,0xfc,0x304,
    0x1d7,0xdc,0x301,0x1d8,0xfc,0x301,0x1d9,0xdc,0x30c,0x1da,0xfc,0x30c,0x1db,0xdc,0x300,
    0x1dc,0xfc,0x300,0x1de,0xc4,0x304,0x1df,0xe4,0x304,0x1e0,0x226,0x304,0x1e1,0x227,0x304,
    0x1e2,0xc6,0x304,0x1e3,0xe6,0x304,0x1e6,0x47,0x30c,0x1e7,0x67,0x30c,0x1e8,0x4b,0x30c,
    0x1e9,0x6b,0x30c,0x1ea,0x4f,0x328,0x1eb,0x6f,0x328,0x1ec,0x1ea,0x304,0x1ed,0x1eb,0x304,
    0x1ee,0x1b7,0x30c,0x1ef,0x292,0x30c,0x1f0,0x6a,0x30c,0x1f4,0x47,0x301,0x1f5,0x67,0x301,
    0x1f8,0x4e,0x300,0x1f9,0x6e,0x300,0x1fa,0xc5,0x301,0x1fb,0xe5,0x301,0x1fc,0xc6,0x301,
    0x1fd,0xe6,0x301,0x1fe,0xd8,0x301,0x1ff,0xf8,0x301,0x200,0x41,0x30f,0x201,0x61,0x30f,
    0x202,0x41,0x311,0x203,0x61,0x311,0x204,0x45,0x30f,0x205,0x65,0x30f,0x206,0x45,0x311,
    0x207,0x65,0x311,0x208,0x49,0x30f,0x209,0x69,0x30f,0x20a,0x49,0x311,0x20b,0x69,0x311,
    0x20c,0x4f,0x30f,0x20d,0x6f,0x30f,0x20e,0x4f,0x311,0x20f,0x6f,0x311,0x210,0x52,0x30f,
    0x211,0x72,0x30f,0x212,0x52,0x311,0x213,0x72,0x311,0x214,0x55,0x30f,0x215,0x75,0x30f,
    0x216,0x55,0x311,0x217,0x75,0x311,0x218,0x53,0x326,0x219,0x73,0x326,0x21a,0x54,0x326,
    0x21b,0x74,0x326,0x21e,0x48,0x30c,0x21f,0x68,0x30c,0x226,0x41,0x307,0x227,0x61,0x307,
    0x228,0x45,0x327,0x229,0x65,0x327,0x22a,0xd6,0x304,0x22b,0xf6,0x304,0x22c,0xd5,0x304,
    0x22d,0xf5,0x304,0x22e,0x4f,0x307,0x22f,0x6f,0x307,0x230,0x22e,0x304,0x231,0x22f,0x304,
    0x232,0x59,0x304,0x233,0x79,0x304,0x80000340,0x300,0x0,0x80000341,0x301,0x0,0x80000343,0x313,0x0,
    0x80000344,0x308,0x301,0x80000374,0x2b9,0x0,0x8000037e,0x3b,0x0,0x385,0xa8,0x301,0x386,0x391,0x301,
    0x80000387,0xb7,0x0,0x388,0x395,0x301,0x389,0x397,0x301,0x38a,0x399,0x301,0x38c,0x39f,0x301,
    0x38e,0x3a5,0x301,0x38f,0x3a9,0x301,0x390,0x3ca,0x301,0x3aa,0x399,0x308,0x3ab,0x3a5,0x308,
    0x3ac,0x3b1,0x301,0x3ad,0x3b5,0x301,0x3ae,0x3b7,0x301,0x3af,0x3b9,0x301,0x3b0,0x3cb,0x301,
    0x3ca,0x3b9,0x308,0x3cb,0x3c5,0x308,0x3cc,0x3bf,0x301,0x3cd,0x3c5,0x301,0x3ce,0x3c9,0x301,
    0x3d3,0x3d2,0x301,0x3d4,0x3d2,0x308,0x400,0x415,0x300,0x401,0x415,0x308,0x403,0x413,0x301,
    0x407,0x406,0x308,0x40c,0x41a,0x301,0x40d,0x418,0x300,0x40e,0x423,0x306,0x419,0x418,0x306,
    0x439,0x438,0x306,0x450,0x435,0x300,0x451,0x435,0x308,0x453,0x433,0x301,0x457,0x456,0x308,
    0x45c,0x43a,0x301,0x45d,0x438,0x300,0x45e,0x443,0x306,0x476,0x474,0x30f,0x477,0x475,0x30f,
    0x4c1,0x416,0x306,0x4c2,0x436,0x306,0x4d0,0x410,0x306,0x4d1,0x430,0x306,0x4d2,0x410,0x308,
    0x4d3,0x430,0x308,0x4d6,0x415,0x306,0x4d7,0x435,0x306,0x4da,0x4d8,0x308,0x4db,0x4d9,0x308,
    0x4dc,0x416,0x308,0x4dd,0x436,0x308,0x4de,0x417,0x308,0x4df,0x437,0x308,0x4e2,0x418,0x304,
    0x4e3,0x438,0x304,0x4e4,0x418,0x308,0x4e5,0x438,0x308,0x4e6,0x41e,0x308,0x4e7,0x43e,0x308,
    0x4ea,0x4e8,0x308,0x4eb,0x4e9,0x308,0x4ec,0x42d,0x308,0x4ed,0x44d,0x308,0x4ee,0x423,0x304,
    0x4ef,0x443,0x304,0x4f0,0x423,0x308,0x4f1,0x443,0x308,0x4f2,0x423,0x30b,0x4f3,0x443,0x30b,
    0x4f4,0x427,0x308,0x4f5,0x447,0x308,0x4f8,0x42b,0x308,0x4f9,0x44b,0x308,0x622,0x627,0x653,
    0x623,0x627,0x654,0x624,0x648,0x654,0x625,0x627,0x655,0x626,0x64a,0x654,0x6c0,0x6d5,0x654,
    0x6c2,0x6c1,0x654,0x6d3,0x6d2,0x654,0x929,0x928,0x93c,0x931,0x930,0x93c,0x934,0x933,0x93c,
    0x80000958,0x915,0x93c,0x80000959,0x916,0x93c,0x8000095a,0x917,0x93c,0x8000095b,0x91c,0x93c,0x8000095c,0x921,0x93c,
    0x8000095d,0x922,0x93c,0x8000095e,0x92b,0x93c,0x8000095f,0x92f,0x93c,0x9cb,0x9c7,0x9be,0x9cc,0x9c7,0x9d7,
    0x800009dc,0x9a1,0x9bc,0x800009dd,0x9a2,0x9bc,0x800009df,0x9af,0x9bc,0x80000a33,0xa32,0xa3c,0x80000a36,0xa38,0xa3c,
    0x80000a59,0xa16,0xa3c,0x80000a5a,0xa17,0xa3c,0x80000a5b,0xa1c,0xa3c,0x80000a5e,0xa2b,0xa3c,0xb48,0xb47,0xb56,
    0xb4b,0xb47,0xb3e,0xb4c,0xb47,0xb57,0x80000b5c,0xb21,0xb3c,0x80000b5d,0xb22,0xb3c,0xb94,0xb92,0xbd7,
    0xbca,0xbc6,0xbbe,0xbcb,0xbc7,0xbbe,0xbcc,0xbc6,0xbd7,0xc48,0xc46,0xc56,0xcc0,0xcbf,0xcd5,
    0xcc7,0xcc6,0xcd5,0xcc8,0xcc6,0xcd6,0xcca,0xcc6,0xcc2,0xccb,0xcca,0xcd5,0xd4a,0xd46,0xd3e,
    0xd4b,0xd47,0xd3e,0xd4c,0xd46,0xd57,0xdda,0xdd9,0xdca,0xddc,0xdd9,0xdcf,0xddd,0xddc,0xdca,
    0xdde,0xdd9,0xddf,0x80000f43,0xf42,0xfb7,0x80000f4d,0xf4c,0xfb7,0x80000f52,0xf51,0xfb7,0x80000f57,0xf56,0xfb7,
    0x80000f5c,0xf5b,0xfb7,0x80000f69,0xf40,0xfb5,0x80000f73,0xf71,0xf72,0x80000f75,0xf71,0xf74,0x80000f76,0xfb2,0xf80,
    0x80000f78,0xfb3,0xf80,0x80000f81,0xf71,0xf80,0x80000f93,0xf92,0xfb7,0x80000f9d,0xf9c,0xfb7,0x80000fa2,0xfa1,0xfb7,
    0x80000fa7,0xfa6,0xfb7,0x80000fac,0xfab,0xfb7,0x80000fb9,0xf90,0xfb5,0x1026,0x1025,0x102e,0x1b06,0x1b05,0x1b35,
    0x1b08,0x1b07,0x1b35,0x1b0a,0x1b09,0x1b35,0x1b0c,0x1b0b,0x1b35,0x1b0e,0x1b0d,0x1b35,0x1b12,0x1b11,0x1b35,
    0x1b3b,0x1b3a,0x1b35,0x1b3d,0x1b3c,0x1b35,0x1b40,0x1b3e,0x1b35,0x1b41,0x1b3f,0x1b35,0x1b43,0x1b42,0x1b35,
    0x1e00,0x41,0x325,0x1e01,0x61,0x325,0x1e02,0x42,0x307,0x1e03,0x62,0x307,0x1e04,0x42,0x323,
    0x1e05,0x62,0x323,0x1e06,0x42,0x331,0x1e07,0x62,0x331,0x1e08,0xc7,0x301,0x1e09,0xe7,0x301,
    0x1e0a,0x44,0x307,0x1e0b,0x64,0x307,0x1e0c,0x44,0x323,0x1e0d,0x64,0x323,0x1e0e,0x44,0x331,
    0x1e0f,0x64,0x331,0x1e10,0x44,0x327,0x1e11,0x64,0x327,0x1e12,0x44,0x32d,0x1e13,0x64,0x32d,
    0x1e14,0x112,0x300,0x1e15,0x113,0x300,0x1e16,0x112,0x301,0x1e17,0x113,0x301,0x1e18,0x45,0x32d,
    0x1e19,0x65,0x32d,0x1e1a,0x45,0x330,0x1e1b,0x65,0x330,0x1e1c,0x228,0x306,0x1e1d,0x229,0x306,
    0x1e1e,0x46,0x307,0x1e1f,0x66,0x307,0x1e20,0x47,0x304,0x1e21,0x67,0x304,0x1e22,0x48,0x307,
    0x1e23,0x68,0x307,0x1e24,0x48,0x323,0x1e25,0x68,0x323,0x1e26,0x48,0x308,0x1e27,0x68,0x308,
    0x1e28,0x48,0x327,0x1e29,0x68,0x327,0x1e2a,0x48,0x32e,0x1e2b,0x68,0x32e,0x1e2c,0x49,0x330,
    0x1e2d,0x69,0x330,0x1e2e,0xcf,0x301,0x1e2f,0xef,0x301,0x1e30,0x4b,0x301,0x1e31,0x6b,0x301,
    0x1e32,0x4b,0x323,0x1e33,0x6b,0x323,0x1e34,0x4b,0x331,0x1e35,0x6b,0x331,0x1e36,0x4c,0x323,
    0x1e37,0x6c,0x323,0x1e38,0x1e36,0x304,0x1e39,0x1e37,0x304,0x1e3a,0x4c,0x331,0x1e3b,0x6c,0x331,
    0x1e3c,0x4c,0x32d,0x1e3d,0x6c,0x32d,0x1e3e,0x4d,0x301,0x1e3f,0x6d,0x301,0x1e40,0x4d,0x307,
    0x1e41,0x6d,0x307,0x1e42,0x4d,0x323,0x1e43,0x6d,0x323,0x1e44,0x4e,0x307,0x1e45,0x6e,0x307,
    0x1e46,0x4e,0x323,0x1e47,0x6e,0x323,0x1e48,0x4e,0x331,0x1e49,0x6e,0x331,0x1e4a,0x4e,0x32d,
    0x1e4b,0x6e,0x32d,0x1e4c,0xd5,0x301,0x1e4d,0xf5,0x301,0x1e4e,0xd5,0x308,0x1e4f,0xf5,0x308,
    0x1e50,0x14c,0x300,0x1e51,0x14d,0x300,0x1e52,0x14c,0x301,0x1e53,0x14d,0x301,0x1e54,0x50,0x301,
    0x1e55,0x70,0x301,0x1e56,0x50,0x307,0x1e57,0x70,0x307,0x1e58,0x52,0x307,0x1e59,0x72,0x307,
    0x1e5a,0x52,0x323,0x1e5b,0x72,0x323,0x1e5c,0x1e5a,0x304,0x1e5d,0x1e5b,0x304,0x1e5e,0x52,0x331,
    0x1e5f,0x72,0x331,0x1e60,0x53,0x307,0x1e61,0x73,0x307,0x1e62,0x53,0x323,0x1e63,0x73,0x323,
    0x1e64,0x15a,0x307,0x1e65,0x15b,0x307,0x1e66,0x160,0x307,0x1e67,0x161,0x307,0x1e68,0x1e62,0x307,
    0x1e69,0x1e63,0x307,0x1e6a,0x54,0x307,0x1e6b,0x74,0x307,0x1e6c,0x54,0x323,0x1e6d,0x74,0x323,
    0x1e6e,0x54,0x331,0x1e6f,0x74,0x331,0x1e70,0x54,0x32d,0x1e71,0x74,0x32d,0x1e72,0x55,0x324,
    0x1e73,0x75,0x324,0x1e74,0x55,0x330,0x1e75,0x75,0x330,0x1e76,0x55,0x32d,0x1e77,0x75,0x32d,
    0x1e78,0x168,0x301,0x1e79,0x169,0x301,0x1e7a,0x16a,0x308,0x1e7b,0x16b,0x308,0x1e7c,0x56,0x303,
    0x1e7d,0x76,0x303,0x1e7e,0x56,0x323,0x1e7f,0x76,0x323,0x1e80,0x57,0x300,0x1e81,0x77,0x300,
    0x1e82,0x57,0x301,0x1e83,0x77,0x301,0x1e84,0x57,0x308,0x1e85,0x77,0x308,0x1e86,0x57,0x307,
    0x1e87,0x77,0x307,0x1e88,0x57,0x323,0x1e89,0x77,0x323,0x1e8a,0x58,0x307,0x1e8b,0x78,0x307,
    0x1e8c,0x58,0x308,0x1e8d,0x78,0x308,0x1e8e,0x59,0x307,0x1e8f,0x79,0x307,0x1e90,0x5a,0x302,
    0x1e91,0x7a,0x302,0x1e92,0x5a,0x323,0x1e93,0x7a,0x323,0x1e94,0x5a,0x331,0x1e95,0x7a,0x331,
    0x1e96,0x68,0x331,0x1e97,0x74,0x308,0x1e98,0x77,0x30a,0x1e99,0x79,0x30a,0x1e9b,0x17f,0x307,
    0x1ea0,0x41,0x323,0x1ea1,0x61,0x323,0x1ea2,0x41,0x309,0x1ea3,0x61,0x309,0x1ea4,0xc2,0x301,
    0x1ea5,0xe2,0x301,0x1ea6,0xc2,0x300,0x1ea7,0xe2,0x300,0x1ea8,0xc2,0x309,0x1ea9,0xe2,0x309,
    0x1eaa,0xc2,0x303,0x1eab,0xe2,0x303,0x1eac,0x1ea0,0x302,0x1ead,0x1ea1,0x302,0x1eae,0x102,0x301,
    0x1eaf,0x103,0x301,0x1eb0,0x102,0x300,0x1eb1,0x103,0x300,0x1eb2,0x102,0x309,0x1eb3,0x103,0x309,
    0x1eb4,0x102,0x303,0x1eb5,0x103,0x303,0x1eb6,0x1ea0,0x306,0x1eb7,0x1ea1,0x306,0x1eb8,0x45,0x323,
    0x1eb9,0x65,0x323,0x1eba,0x45,0x309,0x1ebb,0x65,0x309,0x1ebc,0x45,0x303,0x1ebd,0x65,0x303,
    0x1ebe,0xca,0x301,0x1ebf,0xea,0x301,0x1ec0,0xca,0x300,0x1ec1,0xea,0x300,0x1ec2,0xca,0x309,
    0x1ec3,0xea,0x309,0x1ec4,0xca,0x303,0x1ec5,0xea,0x303,0x1ec6,0x1eb8,0x302,0x1ec7,0x1eb9,0x302,
    0x1ec8,0x49,0x309,0x1ec9,0x69,0x309,0x1eca,0x49,0x323,0x1ecb,0x69,0x323,0x1ecc,0x4f,0x323,
    0x1ecd,0x6f,0x323,0x1ece,0x4f,0x309,0x1ecf,0x6f,0x309,0x1ed0,0xd4,0x301,0x1ed1,0xf4,0x301,
    0x1ed2,0xd4,0x300,0x1ed3,0xf4,0x300,0x1ed4,0xd4,0x309,0x1ed5,0xf4,0x309,0x1ed6,0xd4,0x303,
    0x1ed7,0xf4,0x303,0x1ed8,0x1ecc,0x302,0x1ed9,0x1ecd,0x302,0x1eda,0x1a0,0x301,0x1edb,0x1a1,0x301,
    0x1edc,0x1a0,0x300,0x1edd,0x1a1,0x300,0x1ede,0x1a0,0x309,0x1edf,0x1a1,0x309,0x1ee0,0x1a0,0x303,
    0x1ee1,0x1a1,0x303,0x1ee2,0x1a0,0x323,0x1ee3,0x1a1,0x323,0x1ee4,0x55,0x323,0x1ee5,0x75,0x323,
    0x1ee6,0x55,0x309,0x1ee7,0x75,0x309,0x1ee8,0x1af,0x301,0x1ee9,0x1b0,0x301,0x1eea,0x1af,0x300,
    0x1eeb,0x1b0,0x300,0x1eec,0x1af,0x309,0x1eed,0x1b0,0x309,0x1eee,0x1af,0x303,0x1eef,0x1b0,0x303,
    0x1ef0,0x1af,0x323,0x1ef1,0x1b0,0x323,0x1ef2,0x59,0x300,0x1ef3,0x79,0x300,0x1ef4,0x59,0x323,
    0x1ef5,0x79,0x323,0x1ef6,0x59,0x309,0x1ef7,0x79,0x309,0x1ef8,0x59,0x303,0x1ef9,0x79,0x303,
    0x1f00,0x3b1,0x313,0x1f01,0x3b1,0x314,0x1f02,0x1f00,0x300,0x1f03,0x1f01,0x300,0x1f04,0x1f00,0x301,
    0x1f05,0x1f01,0x301,0x1f06,0x1f00,0x342,0x1f07,0x1f01,0x342,0x1f08,0x391,0x313,0x1f09,0x391,0x314,
    0x1f0a,0x1f08,0x300,0x1f0b,0x1f09,0x300,0x1f0c,0x1f08,0x301,0x1f0d,0x1f09,0x301,0x1f0e,0x1f08,0x342,
    0x1f0f,0x1f09,0x342,0x1f10,0x3b5,0x313,0x1f11,0x3b5,0x314,0x1f12,0x1f10,0x300,0x1f13,0x1f11,0x300,
    0x1f14,0x1f10,0x301,0x1f15,0x1f11,0x301,0x1f18,0x395,0x313,0x1f19,0x395,0x314,0x1f1a,0x1f18,0x300,
    0x1f1b,0x1f19,0x300,0x1f1c,0x1f18,0x301,0x1f1d,0x1f19,0x301,0x1f20,0x3b7,0x313,0x1f21,0x3b7,0x314,
    0x1f22,0x1f20,0x300,0x1f23,0x1f21,0x300,0x1f24,0x1f20,0x301,0x1f25,0x1f21,0x301,0x1f26,0x1f20,0x342,
    0x1f27,0x1f21,0x342,0x1f28,0x397,0x313,0x1f29,0x397,0x314,0x1f2a,0x1f28,0x300,0x1f2b,0x1f29,0x300,
    0x1f2c,0x1f28,0x301,0x1f2d,0x1f29,0x301,0x1f2e,0x1f28,0x342,0x1f2f,0x1f29,0x342,0x1f30,0x3b9,0x313,
    0x1f31,0x3b9,0x314,0x1f32,0x1f30,0x300,0x1f33,0x1f31,0x300,0x1f34,0x1f30,0x301,0x1f35,0x1f31,0x301,
    0x1f36,0x1f30,0x342,0x1f37,0x1f31,0x342,0x1f38,0x399,0x313,0x1f39,0x399,0x314,0x1f3a,0x1f38,0x300,
    0x1f3b,0x1f39,0x300,0x1f3c,0x1f38,0x301,0x1f3d,0x1f39,0x301,0x1f3e,0x1f38,0x342,0x1f3f,0x1f39,0x342,
    0x1f40,0x3bf,0x313,0x1f41,0x3bf,0x314,0x1f42,0x1f40,0x300,0x1f43,0x1f41,0x300,0x1f44,0x1f40,0x301,
    0x1f45,0x1f41,0x301,0x1f48,0x39f,0x313,0x1f49,0x39f,0x314,0x1f4a,0x1f48,0x300,0x1f4b,0x1f49,0x300,
    0x1f4c,0x1f48,0x301,0x1f4d,0x1f49,0x301,0x1f50,0x3c5,0x313,0x1f51,0x3c5,0x314,0x1f52,0x1f50,0x300,
    0x1f53,0x1f51,0x300,0x1f54,0x1f50,0x301,0x1f55,0x1f51,0x301,0x1f56,0x1f50,0x342,0x1f57,0x1f51,0x342,
    0x1f59,0x3a5,0x314,0x1f5b,0x1f59,0x300,0x1f5d,0x1f59,0x301,0x1f5f,0x1f59,0x342,0x1f60,0x3c9,0x313,
    0x1f61,0x3c9,0x314,0x1f62,0x1f60,0x300,0x1f63,0x1f61,0x300,0x1f64,0x1f60,0x301,0x1f65,0x1f61,0x301,
    0x1f66,0x1f60,0x342,0x1f67,0x1f61,0x342,0x1f68,0x3a9,0x313,0x1f69,0x3a9,0x314,0x1f6a,0x1f68,0x300,
    0x1f6b,0x1f69,0x300,0x1f6c,0x1f68,0x301,0x1f6d,0x1f69,0x301,0x1f6e,0x1f68,0x342,0x1f6f,0x1f69,0x342,
    0x1f70,0x3b1,0x300,0x80001f71,0x3ac,0x0,0x1f72,0x3b5,0x300,0x80001f73,0x3ad,0x0,0x1f74,0x3b7,0x300,
    0x80001f75,0x3ae,0x0,0x1f76,0x3b9,0x300,0x80001f77,0x3af,0x0,0x1f78,0x3bf,0x300,0x80001f79,0x3cc,0x0,
    0x1f7a,0x3c5,0x300,0x80001f7b,0x3cd,0x0,0x1f7c,0x3c9,0x300,0x80001f7d,0x3ce,0x0,0x1f80,0x1f00,0x345,
    0x1f81,0x1f01,0x345,0x1f82,0x1f02,0x345,0x1f83,0x1f03,0x345,0x1f84,0x1f04,0x345,0x1f85,0x1f05,0x345,
    0x1f86,0x1f06,0x345,0x1f87,0x1f07,0x345,0x1f88,0x1f08,0x345,0x1f89,0x1f09,0x345,0x1f8a,0x1f0a,0x345,
    0x1f8b,0x1f0b,0x345,0x1f8c,0x1f0c,0x345,0x1f8d,0x1f0d,0x345,0x1f8e,0x1f0e,0x345,0x1f8f,0x1f0f,0x345,
    0x1f90,0x1f20,0x345,0x1f91,0x1f21,0x345,0x1f92,0x1f22,0x345,0x1f93,0x1f23,0x345,0x1f94,0x1f24,0x345,
    0x1f95,0x1f25,0x345,0x1f96,0x1f26,0x345,0x1f97,0x1f27,0x345,0x1f98,0x1f28,0x345,0x1f99,0x1f29,0x345,
    0x1f9a,0x1f2a,0x345,0x1f9b,0x1f2b,0x345,0x1f9c,0x1f2c,0x345,0x1f9d,0x1f2d,0x345,0x1f9e,0x1f2e,0x345,
    0x1f9f,0x1f2f,0x345,0x1fa0,0x1f60,0x345,0x1fa1,0x1f61,0x345,0x1fa2,0x1f62,0x345,0x1fa3,0x1f63,0x345,
    0x1fa4,0x1f64,0x345,0x1fa5,0x1f65,0x345,0x1fa6,0x1f66,0x345,0x1fa7,0x1f67,0x345,0x1fa8,0x1f68,0x345,
    0x1fa9,0x1f69,0x345,0x1faa,0x1f6a,0x345,0x1fab,0x1f6b,0x345,0x1fac,0x1f6c,0x345,0x1fad,0x1f6d,0x345,
    0x1fae,0x1f6e,0x345,0x1faf,0x1f6f,0x345,0x1fb0,0x3b1,0x306,0x1fb1,0x3b1,0x304,0x1fb2,0x1f70,0x345,
    0x1fb3,0x3b1,0x345,0x1fb4,0x3ac,0x345,0x1fb6,0x3b1,0x342,0x1fb7,0x1fb6,0x345,0x1fb8,0x391,0x306,
    0x1fb9,0x391,0x304,0x1fba,0x391,0x300,0x80001fbb,0x386,0x0,0x1fbc,0x391,0x345,0x80001fbe,0x3b9,0x0,
    0x1fc1,0xa8,0x342,0x1fc2,0x1f74,0x345,0x1fc3,0x3b7,0x345,0x1fc4,0x3ae,0x345,0x1fc6,0x3b7,0x342,
    0x1fc7,0x1fc6,0x345,0x1fc8,0x395,0x300,0x80001fc9,0x388,0x0,0x1fca,0x397,0x300,0x80001fcb,0x389,0x0,
    0x1fcc,0x397,0x345,0x1fcd,0x1fbf,0x300,0x1fce,0x1fbf,0x301,0x1fcf,0x1fbf,0x342,0x1fd0,0x3b9,0x306,
    0x1fd1,0x3b9,0x304,0x1fd2,0x3ca,0x300,0x80001fd3,0x390,0x0,0x1fd6,0x3b9,0x342,0x1fd7,0x3ca,0x342,
    0x1fd8,0x399,0x306,0x1fd9,0x399,0x304,0x1fda,0x399,0x300,0x80001fdb,0x38a,0x0,0x1fdd,0x1ffe,0x300,
    0x1fde,0x1ffe,0x301,0x1fdf,0x1ffe,0x342,0x1fe0,0x3c5,0x306,0x1fe1,0x3c5,0x304,0x1fe2,0x3cb,0x300,
    0x80001fe3,0x3b0,0x0,0x1fe4,0x3c1,0x313,0x1fe5,0x3c1,0x314,0x1fe6,0x3c5,0x342,0x1fe7,0x3cb,0x342,
    0x1fe8,0x3a5,0x306,0x1fe9,0x3a5,0x304,0x1fea,0x3a5,0x300,0x80001feb,0x38e,0x0,0x1fec,0x3a1,0x314,
    0x1fed,0xa8,0x300,0x80001fee,0x385,0x0,0x80001fef,0x60,0x0,0x1ff2,0x1f7c,0x345,0x1ff3,0x3c9,0x345,
    0x1ff4,0x3ce,0x345,0x1ff6,0x3c9,0x342,0x1ff7,0x1ff6,0x345,0x1ff8,0x39f,0x300,0x80001ff9,0x38c,0x0,
    0x1ffa,0x3a9,0x300,0x80001ffb,0x38f,0x0,0x1ffc,0x3a9,0x345,0x80001ffd,0xb4,0x0,0x80002000,0x2002,0x0,
    0x80002001,0x2003,0x0,0x80002126,0x3a9,0x0,0x8000212a,0x4b,0x0,0x8000212b,0xc5,0x0,0x219a,0x2190,0x338,
    0x219b,0x2192,0x338,0x21ae,0x2194,0x338,0x21cd,0x21d0,0x338,0x21ce,0x21d4,0x338,0x21cf,0x21d2,0x338,
    0x2204,0x2203,0x338,0x2209,0x2208,0x338,0x220c,0x220b,0x338,0x2224,0x2223,0x338,0x2226,0x2225,0x338,
    0x2241,0x223c,0x338,0x2244,0x2243,0x338,0x2247,0x2245,0x338,0x2249,0x2248,0x338,0x2260,0x3d,0x338,
    0x2262,0x2261,0x338,0x226d,0x224d,0x338,0x226e,0x3c,0x338,0x226f,0x3e,0x338,0x2270,0x2264,0x338,
    0x2271,0x2265,0x338,0x2274,0x2272,0x338,0x2275,0x2273,0x338,0x2278,0x2276,0x338,0x2279,0x2277,0x338,
    0x2280,0x227a,0x338,0x2281,0x227b,0x338,0x2284,0x2282,0x338,0x2285,0x2283,0x338,0x2288,0x2286,0x338,
    0x2289,0x2287,0x338,0x22ac,0x22a2,0x338,0x22ad,0x22a8,0x338,0x22ae,0x22a9,0x338,0x22af,0x22ab,0x338,
    0x22e0,0x227c,0x338,0x22e1,0x227d,0x338,0x22e2,0x2291,0x338,0x22e3,0x2292,0x338,0x22ea,0x22b2,0x338,
    0x22eb,0x22b3,0x338,0x22ec,0x22b4,0x338,0x22ed,0x22b5,0x338,0x80002329,0x3008,0x0,0x8000232a,0x3009,0x0,
    0x80002adc,0x2add,0x338,0x304c,0x304b,0x3099,0x304e,0x304d,0x3099,0x3050,0x304f,0x3099,0x3052,0x3051,0x3099,
    0x3054,0x3053,0x3099,0x3056,0x3055,0x3099,0x3058,0x3057,0x3099,0x305a,0x3059,0x3099,0x305c,0x305b,0x3099,
    0x305e,0x305d,0x3099,0x3060,0x305f,0x3099,0x3062,0x3061,0x3099,0x3065,0x3064,0x3099,0x3067,0x3066,0x3099,
    0x3069,0x3068,0x3099,0x3070,0x306f,0x3099,0x3071,0x306f,0x309a,0x3073,0x3072,0x3099,0x3074,0x3072,0x309a,
    0x3076,0x3075,0x3099,0x3077,0x3075,0x309a,0x3079,0x3078,0x3099,0x307a,0x3078,0x309a,0x307c,0x307b,0x3099,
    0x307d,0x307b,0x309a,0x3094,0x3046,0x3099,0x309e,0x309d,0x3099,0x30ac,0x30ab,0x3099,0x30ae,0x30ad,0x3099,
    0x30b0,0x30af,0x3099,0x30b2,0x30b1,0x3099,0x30b4,0x30b3,0x3099,0x30b6,0x30b5,0x3099,0x30b8,0x30b7,0x3099,
    0x30ba,0x30b9,0x3099,0x30bc,0x30bb,0x3099,0x30be,0x30bd,0x3099,0x30c0,0x30bf,0x3099,0x30c2,0x30c1,0x3099,
    0x30c5,0x30c4,0x3099,0x30c7,0x30c6,0x3099,0x30c9,0x30c8,0x3099,0x30d0,0x30cf,0x3099,0x30d1,0x30cf,0x309a,
    0x30d3,0x30d2,0x3099,0x30d4,0x30d2,0x309a,0x30d6,0x30d5,0x3099,0x30d7,0x30d5,0x309a,0x30d9,0x30d8,0x3099,
    0x30da,0x30d8,0x309a,0x30dc,0x30db,0x3099,0x30dd,0x30db,0x309a,0x30f4,0x30a6,0x3099,0x30f7,0x30ef,0x3099,
    0x30f8,0x30f0,0x3099,0x30f9,0x30f1,0x3099,0x30fa,0x30f2,0x3099,0x30fe,0x30fd,0x3099,0x8000f900,0x8c48,0x0,
    0x8000f901,0x66f4,0x0,0x8000f902,0x8eca,0x0,0x8000f903,0x8cc8,0x0,0x8000f904,0x6ed1,0x0,0x8000f905,0x4e32,0x0,
    0x8000f906,0x53e5,0x0,0x8000f907,0x9f9c,0x0,0x8000f908,0x9f9c,0x0,0x8000f909,0x5951,0x0,0x8000f90a,0x91d1,0x0,
    0x8000f90b,0x5587,0x0,0x8000f90c,0x5948,0x0,0x8000f90d,0x61f6,0x0,0x8000f90e,0x7669,0x0,0x8000f90f,0x7f85,0x0,
    0x8000f910,0x863f,0x0,0x8000f911,0x87ba,0x0,0x8000f912,0x88f8,0x0,0x8000f913,0x908f,0x0,0x8000f914,0x6a02,0x0,
    0x8000f915,0x6d1b,0x0,0x8000f916,0x70d9,0x0,0x8000f917,0x73de,0x0,0x8000f918,0x843d,0x0,0x8000f919,0x916a,0x0,
    0x8000f91a,0x99f1,0x0,0x8000f91b,0x4e82,0x0,0x8000f91c,0x5375,0x0,0x8000f91d,0x6b04,0x0,0x8000f91e,0x721b,0x0,
    0x8000f91f,0x862d,0x0,0x8000f920,0x9e1e,0x0,0x8000f921,0x5d50,0x0,0x8000f922,0x6feb,0x0,0x8000f923,0x85cd,0x0,
    0x8000f924,0x8964,0x0,0x8000f925,0x62c9,0x0,0x8000f926,0x81d8,0x0,0x8000f927,0x881f,0x0,0x8000f928,0x5eca,0x0,
    0x8000f929,0x6717,0x0,0x8000f92a,0x6d6a,0x0,0x8000f92b,0x72fc,0x0,0x8000f92c,0x90ce,0x0,0x8000f92d,0x4f86,0x0,
    0x8000f92e,0x51b7,0x0,0x8000f92f,0x52de,0x0,0x8000f930,0x64c4,0x0,0x8000f931,0x6ad3,0x0,0x8000f932,0x7210,0x0,
    0x8000f933,0x76e7,0x0,0x8000f934,0x8001,0x0,0x8000f935,0x8606,0x0,0x8000f936,0x865c,0x0,0x8000f937,0x8def,0x0,
    0x8000f938,0x9732,0x0,0x8000f939,0x9b6f,0x0,0x8000f93a,0x9dfa,0x0,0x8000f93b,0x788c,0x0,0x8000f93c,0x797f,0x0,
    0x8000f93d,0x7da0,0x0,0x8000f93e,0x83c9,0x0,0x8000f93f,0x9304,0x0,0x8000f940,0x9e7f,0x0,0x8000f941,0x8ad6,0x0,
    0x8000f942,0x58df,0x0,0x8000f943,0x5f04,0x0,0x8000f944,0x7c60,0x0,0x8000f945,0x807e,0x0,0x8000f946,0x7262,0x0,
    0x8000f947,0x78ca,0x0,0x8000f948,0x8cc2,0x0,0x8000f949,0x96f7,0x0,0x8000f94a,0x58d8,0x0,0x8000f94b,0x5c62,0x0,
    0x8000f94c,0x6a13,0x0,0x8000f94d,0x6dda,0x0,0x8000f94e,0x6f0f,0x0,0x8000f94f,0x7d2f,0x0,0x8000f950,0x7e37,0x0,
    0x8000f951,0x964b,0x0,0x8000f952,0x52d2,0x0,0x8000f953,0x808b,0x0,0x8000f954,0x51dc,0x0,0x8000f955,0x51cc,0x0,
    0x8000f956,0x7a1c,0x0,0x8000f957,0x7dbe,0x0,0x8000f958,0x83f1,0x0,0x8000f959,0x9675,0x0,0x8000f95a,0x8b80,0x0,
    0x8000f95b,0x62cf,0x0,0x8000f95c,0x6a02,0x0,0x8000f95d,0x8afe,0x0,0x8000f95e,0x4e39,0x0,0x8000f95f,0x5be7,0x0,
    0x8000f960,0x6012,0x0,0x8000f961,0x7387,0x0,0x8000f962,0x7570,0x0,0x8000f963,0x5317,0x0,0x8000f964,0x78fb,0x0,
    0x8000f965,0x4fbf,0x0,0x8000f966,0x5fa9,0x0,0x8000f967,0x4e0d,0x0,0x8000f968,0x6ccc,0x0,0x8000f969,0x6578,0x0,
    0x8000f96a,0x7d22,0x0,0x8000f96b,0x53c3,0x0,0x8000f96c,0x585e,0x0,0x8000f96d,0x7701,0x0,0x8000f96e,0x8449,0x0,
    0x8000f96f,0x8aaa,0x0,0x8000f970,0x6bba,0x0,0x8000f971,0x8fb0,0x0,0x8000f972,0x6c88,0x0,0x8000f973,0x62fe,0x0,
    0x8000f974,0x82e5,0x0,0x8000f975,0x63a0,0x0,0x8000f976,0x7565,0x0,0x8000f977,0x4eae,0x0,0x8000f978,0x5169,0x0,
    0x8000f979,0x51c9,0x0,0x8000f97a,0x6881,0x0,0x8000f97b,0x7ce7,0x0,0x8000f97c,0x826f,0x0,0x8000f97d,0x8ad2,0x0,
    0x8000f97e,0x91cf,0x0,0x8000f97f,0x52f5,0x0,0x8000f980,0x5442,0x0,0x8000f981,0x5973,0x0,0x8000f982,0x5eec,0x0,
    0x8000f983,0x65c5,0x0,0x8000f984,0x6ffe,0x0,0x8000f985,0x792a,0x0,0x8000f986,0x95ad,0x0,0x8000f987,0x9a6a,0x0,
    0x8000f988,0x9e97,0x0,0x8000f989,0x9ece,0x0,0x8000f98a,0x529b,0x0,0x8000f98b,0x66c6,0x0,0x8000f98c,0x6b77,0x0,
    0x8000f98d,0x8f62,0x0,0x8000f98e,0x5e74,0x0,0x8000f98f,0x6190,0x0,0x8000f990,0x6200,0x0,0x8000f991,0x649a,0x0,
    0x8000f992,0x6f23,0x0,0x8000f993,0x7149,0x0,0x8000f994,0x7489,0x0,0x8000f995,0x79ca,0x0,0x8000f996,0x7df4,0x0,
    0x8000f997,0x806f,0x0,0x8000f998,0x8f26,0x0,0x8000f999,0x84ee,0x0,0x8000f99a,0x9023,0x0,0x8000f99b,0x934a,0x0,
    0x8000f99c,0x5217,0x0,0x8000f99d,0x52a3,0x0,0x8000f99e,0x54bd,0x0,0x8000f99f,0x70c8,0x0,0x8000f9a0,0x88c2,0x0,
    0x8000f9a1,0x8aaa,0x0,0x8000f9a2,0x5ec9,0x0,0x8000f9a3,0x5ff5,0x0,0x8000f9a4,0x637b,0x0,0x8000f9a5,0x6bae,0x0,
    0x8000f9a6,0x7c3e,0x0,0x8000f9a7,0x7375,0x0,0x8000f9a8,0x4ee4,0x0,0x8000f9a9,0x56f9,0x0,0x8000f9aa,0x5be7,0x0,
    0x8000f9ab,0x5dba,0x0,0x8000f9ac,0x601c,0x0,0x8000f9ad,0x73b2,0x0,0x8000f9ae,0x7469,0x0,0x8000f9af,0x7f9a,0x0,
    0x8000f9b0,0x8046,0x0,0x8000f9b1,0x9234,0x0,0x8000f9b2,0x96f6,0x0,0x8000f9b3,0x9748,0x0,0x8000f9b4,0x9818,0x0,
    0x8000f9b5,0x4f8b,0x0,0x8000f9b6,0x79ae,0x0,0x8000f9b7,0x91b4,0x0,0x8000f9b8,0x96b8,0x0,0x8000f9b9,0x60e1,0x0,
    0x8000f9ba,0x4e86,0x0,0x8000f9bb,0x50da,0x0,0x8000f9bc,0x5bee,0x0,0x8000f9bd,0x5c3f,0x0,0x8000f9be,0x6599,0x0,
    0x8000f9bf,0x6a02,0x0,0x8000f9c0,0x71ce,0x0,0x8000f9c1,0x7642,0x0,0x8000f9c2,0x84fc,0x0,0x8000f9c3,0x907c,0x0,
    0x8000f9c4,0x9f8d,0x0,0x8000f9c5,0x6688,0x0,0x8000f9c6,0x962e,0x0,0x8000f9c7,0x5289,0x0,0x8000f9c8,0x677b,0x0,
    0x8000f9c9,0x67f3,0x0,0x8000f9ca,0x6d41,0x0,0x8000f9cb,0x6e9c,0x0,0x8000f9cc,0x7409,0x0,0x8000f9cd,0x7559,0x0,
    0x8000f9ce,0x786b,0x0,0x8000f9cf,0x7d10,0x0,0x8000f9d0,0x985e,0x0,0x8000f9d1,0x516d,0x0,0x8000f9d2,0x622e,0x0,
    0x8000f9d3,0x9678,0x0,0x8000f9d4,0x502b,0x0,0x8000f9d5,0x5d19,0x0,0x8000f9d6,0x6dea,0x0,0x8000f9d7,0x8f2a,0x0,
    0x8000f9d8,0x5f8b,0x0,0x8000f9d9,0x6144,0x0,0x8000f9da,0x6817,0x0,0x8000f9db,0x7387,0x0,0x8000f9dc,0x9686,0x0,
    0x8000f9dd,0x5229,0x0,0x8000f9de,0x540f,0x0,0x8000f9df,0x5c65,0x0,0x8000f9e0,0x6613,0x0,0x8000f9e1,0x674e,0x0,
    0x8000f9e2,0x68a8,0x0,0x8000f9e3,0x6ce5,0x0,0x8000f9e4,0x7406,0x0,0x8000f9e5,0x75e2,0x0,0x8000f9e6,0x7f79,0x0,
    0x8000f9e7,0x88cf,0x0,0x8000f9e8,0x88e1,0x0,0x8000f9e9,0x91cc,0x0,0x8000f9ea,0x96e2,0x0,0x8000f9eb,0x533f,0x0,
    0x8000f9ec,0x6eba,0x0,0x8000f9ed,0x541d,0x0,0x8000f9ee,0x71d0,0x0,0x8000f9ef,0x7498,0x0,0x8000f9f0,0x85fa,0x0,
    0x8000f9f1,0x96a3,0x0,0x8000f9f2,0x9c57,0x0,0x8000f9f3,0x9e9f,0x0,0x8000f9f4,0x6797,0x0,0x8000f9f5,0x6dcb,0x0,
    0x8000f9f6,0x81e8,0x0,0x8000f9f7,0x7acb,0x0,0x8000f9f8,0x7b20,0x0,0x8000f9f9,0x7c92,0x0,0x8000f9fa,0x72c0,0x0,
    0x8000f9fb,0x7099,0x0,0x8000f9fc,0x8b58,0x0,0x8000f9fd,0x4ec0,0x0,0x8000f9fe,0x8336,0x0,0x8000f9ff,0x523a,0x0,
    0x8000fa00,0x5207,0x0,0x8000fa01,0x5ea6,0x0,0x8000fa02,0x62d3,0x0,0x8000fa03,0x7cd6,0x0,0x8000fa04,0x5b85,0x0,
    0x8000fa05,0x6d1e,0x0,0x8000fa06,0x66b4,0x0,0x8000fa07,0x8f3b,0x0,0x8000fa08,0x884c,0x0,0x8000fa09,0x964d,0x0,
    0x8000fa0a,0x898b,0x0,0x8000fa0b,0x5ed3,0x0,0x8000fa0c,0x5140,0x0,0x8000fa0d,0x55c0,0x0,0x8000fa10,0x585a,0x0,
    0x8000fa12,0x6674,0x0,0x8000fa15,0x51de,0x0,0x8000fa16,0x732a,0x0,0x8000fa17,0x76ca,0x0,0x8000fa18,0x793c,0x0,
    0x8000fa19,0x795e,0x0,0x8000fa1a,0x7965,0x0,0x8000fa1b,0x798f,0x0,0x8000fa1c,0x9756,0x0,0x8000fa1d,0x7cbe,0x0,
    0x8000fa1e,0x7fbd,0x0,0x8000fa20,0x8612,0x0,0x8000fa22,0x8af8,0x0,0x8000fa25,0x9038,0x0,0x8000fa26,0x90fd,0x0,
    0x8000fa2a,0x98ef,0x0,0x8000fa2b,0x98fc,0x0,0x8000fa2c,0x9928,0x0,0x8000fa2d,0x9db4,0x0,0x8000fa2e,0x90de,0x0,
    0x8000fa2f,0x96b7,0x0,0x8000fa30,0x4fae,0x0,0x8000fa31,0x50e7,0x0,0x8000fa32,0x514d,0x0,0x8000fa33,0x52c9,0x0,
    0x8000fa34,0x52e4,0x0,0x8000fa35,0x5351,0x0,0x8000fa36,0x559d,0x0,0x8000fa37,0x5606,0x0,0x8000fa38,0x5668,0x0,
    0x8000fa39,0x5840,0x0,0x8000fa3a,0x58a8,0x0,0x8000fa3b,0x5c64,0x0,0x8000fa3c,0x5c6e,0x0,0x8000fa3d,0x6094,0x0,
    0x8000fa3e,0x6168,0x0,0x8000fa3f,0x618e,0x0,0x8000fa40,0x61f2,0x0,0x8000fa41,0x654f,0x0,0x8000fa42,0x65e2,0x0,
    0x8000fa43,0x6691,0x0,0x8000fa44,0x6885,0x0,0x8000fa45,0x6d77,0x0,0x8000fa46,0x6e1a,0x0,0x8000fa47,0x6f22,0x0,
    0x8000fa48,0x716e,0x0,0x8000fa49,0x722b,0x0,0x8000fa4a,0x7422,0x0,0x8000fa4b,0x7891,0x0,0x8000fa4c,0x793e,0x0,
    0x8000fa4d,0x7949,0x0,0x8000fa4e,0x7948,0x0,0x8000fa4f,0x7950,0x0,0x8000fa50,0x7956,0x0,0x8000fa51,0x795d,0x0,
    0x8000fa52,0x798d,0x0,0x8000fa53,0x798e,0x0,0x8000fa54,0x7a40,0x0,0x8000fa55,0x7a81,0x0,0x8000fa56,0x7bc0,0x0,
    0x8000fa57,0x7df4,0x0,0x8000fa58,0x7e09,0x0,0x8000fa59,0x7e41,0x0,0x8000fa5a,0x7f72,0x0,0x8000fa5b,0x8005,0x0,
    0x8000fa5c,0x81ed,0x0,0x8000fa5d,0x8279,0x0,0x8000fa5e,0x8279,0x0,0x8000fa5f,0x8457,0x0,0x8000fa60,0x8910,0x0,
    0x8000fa61,0x8996,0x0,0x8000fa62,0x8b01,0x0,0x8000fa63,0x8b39,0x0,0x8000fa64,0x8cd3,0x0,0x8000fa65,0x8d08,0x0,
    0x8000fa66,0x8fb6,0x0,0x8000fa67,0x9038,0x0,0x8000fa68,0x96e3,0x0,0x8000fa69,0x97ff,0x0,0x8000fa6a,0x983b,0x0,
    0x8000fa6b,0x6075,0x0,0x8000fa6c,0x242ee,0x0,0x8000fa6d,0x8218,0x0,0x8000fa70,0x4e26,0x0,0x8000fa71,0x51b5,0x0,
    0x8000fa72,0x5168,0x0,0x8000fa73,0x4f80,0x0,0x8000fa74,0x5145,0x0,0x8000fa75,0x5180,0x0,0x8000fa76,0x52c7,0x0,
    0x8000fa77,0x52fa,0x0,0x8000fa78,0x559d,0x0,0x8000fa79,0x5555,0x0,0x8000fa7a,0x5599,0x0,0x8000fa7b,0x55e2,0x0,
    0x8000fa7c,0x585a,0x0,0x8000fa7d,0x58b3,0x0,0x8000fa7e,0x5944,0x0,0x8000fa7f,0x5954,0x0,0x8000fa80,0x5a62,0x0,
    0x8000fa81,0x5b28,0x0,0x8000fa82,0x5ed2,0x0,0x8000fa83,0x5ed9,0x0,0x8000fa84,0x5f69,0x0,0x8000fa85,0x5fad,0x0,
    0x8000fa86,0x60d8,0x0,0x8000fa87,0x614e,0x0,0x8000fa88,0x6108,0x0,0x8000fa89,0x618e,0x0,0x8000fa8a,0x6160,0x0,
    0x8000fa8b,0x61f2,0x0,0x8000fa8c,0x6234,0x0,0x8000fa8d,0x63c4,0x0,0x8000fa8e,0x641c,0x0,0x8000fa8f,0x6452,0x0,
    0x8000fa90,0x6556,0x0,0x8000fa91,0x6674,0x0,0x8000fa92,0x6717,0x0,0x8000fa93,0x671b,0x0,0x8000fa94,0x6756,0x0,
    0x8000fa95,0x6b79,0x0,0x8000fa96,0x6bba,0x0,0x8000fa97,0x6d41,0x0,0x8000fa98,0x6edb,0x0,0x8000fa99,0x6ecb,0x0,
    0x8000fa9a,0x6f22,0x0,0x8000fa9b,0x701e,0x0,0x8000fa9c,0x716e,0x0,0x8000fa9d,0x77a7,0x0,0x8000fa9e,0x7235,0x0,
    0x8000fa9f,0x72af,0x0,0x8000faa0,0x732a,0x0,0x8000faa1,0x7471,0x0,0x8000faa2,0x7506,0x0,0x8000faa3,0x753b,0x0,
    0x8000faa4,0x761d,0x0,0x8000faa5,0x761f,0x0,0x8000faa6,0x76ca,0x0,0x8000faa7,0x76db,0x0,0x8000faa8,0x76f4,0x0,
    0x8000faa9,0x774a,0x0,0x8000faaa,0x7740,0x0,0x8000faab,0x78cc,0x0,0x8000faac,0x7ab1,0x0,0x8000faad,0x7bc0,0x0,
    0x8000faae,0x7c7b,0x0,0x8000faaf,0x7d5b,0x0,0x8000fab0,0x7df4,0x0,0x8000fab1,0x7f3e,0x0,0x8000fab2,0x8005,0x0,
    0x8000fab3,0x8352,0x0,0x8000fab4,0x83ef,0x0,0x8000fab5,0x8779,0x0,0x8000fab6,0x8941,0x0,0x8000fab7,0x8986,0x0,
    0x8000fab8,0x8996,0x0,0x8000fab9,0x8abf,0x0,0x8000faba,0x8af8,0x0,0x8000fabb,0x8acb,0x0,0x8000fabc,0x8b01,0x0,
    0x8000fabd,0x8afe,0x0,0x8000fabe,0x8aed,0x0,0x8000fabf,0x8b39,0x0,0x8000fac0,0x8b8a,0x0,0x8000fac1,0x8d08,0x0,
    0x8000fac2,0x8f38,0x0,0x8000fac3,0x9072,0x0,0x8000fac4,0x9199,0x0,0x8000fac5,0x9276,0x0,0x8000fac6,0x967c,0x0,
    0x8000fac7,0x96e3,0x0,0x8000fac8,0x9756,0x0,0x8000fac9,0x97db,0x0,0x8000faca,0x97ff,0x0,0x8000facb,0x980b,0x0,
    0x8000facc,0x983b,0x0,0x8000facd,0x9b12,0x0,0x8000face,0x9f9c,0x0,0x8000facf,0x2284a,0x0,0x8000fad0,0x22844,0x0,
    0x8000fad1,0x233d5,0x0,0x8000fad2,0x3b9d,0x0,0x8000fad3,0x4018,0x0,0x8000fad4,0x4039,0x0,0x8000fad5,0x25249,0x0,
    0x8000fad6,0x25cd0,0x0,0x8000fad7,0x27ed3,0x0,0x8000fad8,0x9f43,0x0,0x8000fad9,0x9f8e,0x0,0x8000fb1d,0x5d9,0x5b4,
    0x8000fb1f,0x5f2,0x5b7,0x8000fb2a,0x5e9,0x5c1,0x8000fb2b,0x5e9,0x5c2,0x8000fb2c,0xfb49,0x5c1,0x8000fb2d,0xfb49,0x5c2,
    0x8000fb2e,0x5d0,0x5b7,0x8000fb2f,0x5d0,0x5b8,0x8000fb30,0x5d0,0x5bc,0x8000fb31,0x5d1,0x5bc,0x8000fb32,0x5d2,0x5bc,
    0x8000fb33,0x5d3,0x5bc,0x8000fb34,0x5d4,0x5bc,0x8000fb35,0x5d5,0x5bc,0x8000fb36,0x5d6,0x5bc,0x8000fb38,0x5d8,0x5bc,
    0x8000fb39,0x5d9,0x5bc,0x8000fb3a,0x5da,0x5bc,0x8000fb3b,0x5db,0x5bc,0x8000fb3c,0x5dc,0x5bc,0x8000fb3e,0x5de,0x5bc,
    0x8000fb40,0x5e0,0x5bc,0x8000fb41,0x5e1,0x5bc,0x8000fb43,0x5e3,0x5bc,0x8000fb44,0x5e4,0x5bc,0x8000fb46,0x5e6,0x5bc,
    0x8000fb47,0x5e7,0x5bc,0x8000fb48,0x5e8,0x5bc,0x8000fb49,0x5e9,0x5bc,0x8000fb4a,0x5ea,0x5bc,0x8000fb4b,0x5d5,0x5b9,
    0x8000fb4c,0x5d1,0x5bf,0x8000fb4d,0x5db,0x5bf,0x8000fb4e,0x5e4,0x5bf,0x1109a,0x11099,0x110ba,0x1109c,0x1109b,0x110ba,
    0x110ab,0x110a5,0x110ba,0x1112e,0x11131,0x11127,0x1112f,0x11132,0x11127,0x1134b,0x11347,0x1133e,0x1134c,0x11347,0x11357,
    0x114bb,0x114b9,0x114ba,0x114bc,0x114b9,0x114b0,0x114be,0x114b9,0x114bd,0x115ba,0x115b8,0x115af,0x115bb,0x115b9,0x115af,
    0x11938,0x11935,0x11930,0x8001d15e,0x1d157,0x1d165,0x8001d15f,0x1d158,0x1d165,0x8001d160,0x1d15f,0x1d16e,0x8001d161,0x1d15f,0x1d16f,
    0x8001d162,0x1d15f,0x1d170,0x8001d163,0x1d15f,0x1d171,0x8001d164,0x1d15f,0x1d172,0x8001d1bb,0x1d1b9,0x1d165,0x8001d1bc,0x1d1ba,0x1d165,
    0x8001d1bd,0x1d1bb,0x1d16e,0x8001d1be,0x1d1bc,0x1d16e,0x8001d1bf,0x1d1bb,0x1d16f,0x8001d1c0,0x1d1bc,0x1d16f,0x8002f800,0x4e3d,0x0,
    0x8002f801,0x4e38,0x0,0x8002f802,0x4e41,0x0,0x8002f803,0x20122,0x0,0x8002f804,0x4f60,0x0,0x8002f805,0x4fae,0x0,
    0x8002f806,0x4fbb,0x0,0x8002f807,0x5002,0x0,0x8002f808,0x507a,0x0,0x8002f809,0x5099,0x0,0x8002f80a,0x50e7,0x0,
    0x8002f80b,0x50cf,0x0,0x8002f80c,0x349e,0x0,0x8002f80d,0x2063a,0x0,0x8002f80e,0x514d,0x0,0x8002f80f,0x5154,0x0,
    0x8002f810,0x5164,0x0,0x8002f811,0x5177,0x0,0x8002f812,0x2051c,0x0,0x8002f813,0x34b9,0x0,0x8002f814,0x5167,0x0,
    0x8002f815,0x518d,0x0,0x8002f816,0x2054b,0x0,0x8002f817,0x5197,0x0,0x8002f818,0x51a4,0x0,0x8002f819,0x4ecc,0x0,
    0x8002f81a,0x51ac,0x0,0x8002f81b,0x51b5,0x0,0x8002f81c,0x291df,0x0,0x8002f81d,0x51f5,0x0,0x8002f81e,0x5203,0x0,
    0x8002f81f,0x34df,0x0,0x8002f820,0x523b,0x0,0x8002f821,0x5246,0x0,0x8002f822,0x5272,0x0,0x8002f823,0x5277,0x0,
    0x8002f824,0x3515,0x0,0x8002f825,0x52c7,0x0,0x8002f826,0x52c9,0x0,0x8002f827,0x52e4,0x0,0x8002f828,0x52fa,0x0,
    0x8002f829,0x5305,0x0,0x8002f82a,0x5306,0x0,0x8002f82b,0x5317,0x0,0x8002f82c,0x5349,0x0,0x8002f82d,0x5351,0x0,
    0x8002f82e,0x535a,0x0,0x8002f82f,0x5373,0x0,0x8002f830,0x537d,0x0,0x8002f831,0x537f,0x0,0x8002f832,0x537f,0x0,
    0x8002f833,0x537f,0x0,0x8002f834,0x20a2c,0x0,0x8002f835,0x7070,0x0,0x8002f836,0x53ca,0x0,0x8002f837,0x53df,0x0,
    0x8002f838,0x20b63,0x0,0x8002f839,0x53eb,0x0,0x8002f83a,0x53f1,0x0,0x8002f83b,0x5406,0x0,0x8002f83c,0x549e,0x0,
    0x8002f83d,0x5438,0x0,0x8002f83e,0x5448,0x0,0x8002f83f,0x5468,0x0,0x8002f840,0x54a2,0x0,0x8002f841,0x54f6,0x0,
    0x8002f842,0x5510,0x0,0x8002f843,0x5553,0x0,0x8002f844,0x5563,0x0,0x8002f845,0x5584,0x0,0x8002f846,0x5584,0x0,
    0x8002f847,0x5599,0x0,0x8002f848,0x55ab,0x0,0x8002f849,0x55b3,0x0,0x8002f84a,0x55c2,0x0,0x8002f84b,0x5716,0x0,
    0x8002f84c,0x5606,0x0,0x8002f84d,0x5717,0x0,0x8002f84e,0x5651,0x0,0x8002f84f,0x5674,0x0,0x8002f850,0x5207,0x0,
    0x8002f851,0x58ee,0x0,0x8002f852,0x57ce,0x0,0x8002f853,0x57f4,0x0,0x8002f854,0x580d,0x0,0x8002f855,0x578b,0x0,
    0x8002f856,0x5832,0x0,0x8002f857,0x5831,0x0,0x8002f858,0x58ac,0x0,0x8002f859,0x214e4,0x0,0x8002f85a,0x58f2,0x0,
    0x8002f85b,0x58f7,0x0,0x8002f85c,0x5906,0x0,0x8002f85d,0x591a,0x0,0x8002f85e,0x5922,0x0,0x8002f85f,0x5962,0x0,
    0x8002f860,0x216a8,0x0,0x8002f861,0x216ea,0x0,0x8002f862,0x59ec,0x0,0x8002f863,0x5a1b,0x0,0x8002f864,0x5a27,0x0,
    0x8002f865,0x59d8,0x0,0x8002f866,0x5a66,0x0,0x8002f867,0x36ee,0x0,0x8002f868,0x36fc,0x0,0x8002f869,0x5b08,0x0,
    0x8002f86a,0x5b3e,0x0,0x8002f86b,0x5b3e,0x0,0x8002f86c,0x219c8,0x0,0x8002f86d,0x5bc3,0x0,0x8002f86e,0x5bd8,0x0,
    0x8002f86f,0x5be7,0x0,0x8002f870,0x5bf3,0x0,0x8002f871,0x21b18,0x0,0x8002f872,0x5bff,0x0,0x8002f873,0x5c06,0x0,
    0x8002f874,0x5f53,0x0,0x8002f875,0x5c22,0x0,0x8002f876,0x3781,0x0,0x8002f877,0x5c60,0x0,0x8002f878,0x5c6e,0x0,
    0x8002f879,0x5cc0,0x0,0x8002f87a,0x5c8d,0x0,0x8002f87b,0x21de4,0x0,0x8002f87c,0x5d43,0x0,0x8002f87d,0x21de6,0x0,
    0x8002f87e,0x5d6e,0x0,0x8002f87f,0x5d6b,0x0,0x8002f880,0x5d7c,0x0,0x8002f881,0x5de1,0x0,0x8002f882,0x5de2,0x0,
    0x8002f883,0x382f,0x0,0x8002f884,0x5dfd,0x0,0x8002f885,0x5e28,0x0,0x8002f886,0x5e3d,0x0,0x8002f887,0x5e69,0x0,
    0x8002f888,0x3862,0x0,0x8002f889,0x22183,0x0,0x8002f88a,0x387c,0x0,0x8002f88b,0x5eb0,0x0,0x8002f88c,0x5eb3,0x0,
    0x8002f88d,0x5eb6,0x0,0x8002f88e,0x5eca,0x0,0x8002f88f,0x2a392,0x0,0x8002f890,0x5efe,0x0,0x8002f891,0x22331,0x0,
    0x8002f892,0x22331,0x0,0x8002f893,0x8201,0x0,0x8002f894,0x5f22,0x0,0x8002f895,0x5f22,0x0,0x8002f896,0x38c7,0x0,
    0x8002f897,0x232b8,0x0,0x8002f898,0x261da,0x0,0x8002f899,0x5f62,0x0,0x8002f89a,0x5f6b,0x0,0x8002f89b,0x38e3,0x0,
    0x8002f89c,0x5f9a,0x0,0x8002f89d,0x5fcd,0x0,0x8002f89e,0x5fd7,0x0,0x8002f89f,0x5ff9,0x0,0x8002f8a0,0x6081,0x0,
    0x8002f8a1,0x393a,0x0,0x8002f8a2,0x391c,0x0,0x8002f8a3,0x6094,0x0,0x8002f8a4,0x226d4,0x0,0x8002f8a5,0x60c7,0x0,
    0x8002f8a6,0x6148,0x0,0x8002f8a7,0x614c,0x0,0x8002f8a8,0x614e,0x0,0x8002f8a9,0x614c,0x0,0x8002f8aa,0x617a,0x0,
    0x8002f8ab,0x618e,0x0,0x8002f8ac,0x61b2,0x0,0x8002f8ad,0x61a4,0x0,0x8002f8ae,0x61af,0x0,0x8002f8af,0x61de,0x0,
    0x8002f8b0,0x61f2,0x0,0x8002f8b1,0x61f6,0x0,0x8002f8b2,0x6210,0x0,0x8002f8b3,0x621b,0x0,0x8002f8b4,0x625d,0x0,
    0x8002f8b5,0x62b1,0x0,0x8002f8b6,0x62d4,0x0,0x8002f8b7,0x6350,0x0,0x8002f8b8,0x22b0c,0x0,0x8002f8b9,0x633d,0x0,
    0x8002f8ba,0x62fc,0x0,0x8002f8bb,0x6368,0x0,0x8002f8bc,0x6383,0x0,0x8002f8bd,0x63e4,0x0,0x8002f8be,0x22bf1,0x0,
    0x8002f8bf,0x6422,0x0,0x8002f8c0,0x63c5,0x0,0x8002f8c1,0x63a9,0x0,0x8002f8c2,0x3a2e,0x0,0x8002f8c3,0x6469,0x0,
    0x8002f8c4,0x647e,0x0,0x8002f8c5,0x649d,0x0,0x8002f8c6,0x6477,0x0,0x8002f8c7,0x3a6c,0x0,0x8002f8c8,0x654f,0x0,
    0x8002f8c9,0x656c,0x0,0x8002f8ca,0x2300a,0x0,0x8002f8cb,0x65e3,0x0,0x8002f8cc,0x66f8,0x0,0x8002f8cd,0x6649,0x0,
    0x8002f8ce,0x3b19,0x0,0x8002f8cf,0x6691,0x0,0x8002f8d0,0x3b08,0x0,0x8002f8d1,0x3ae4,0x0,0x8002f8d2,0x5192,0x0,
    0x8002f8d3,0x5195,0x0,0x8002f8d4,0x6700,0x0,0x8002f8d5,0x669c,0x0,0x8002f8d6,0x80ad,0x0,0x8002f8d7,0x43d9,0x0,
    0x8002f8d8,0x6717,0x0,0x8002f8d9,0x671b,0x0,0x8002f8da,0x6721,0x0,0x8002f8db,0x675e,0x0,0x8002f8dc,0x6753,0x0,
    0x8002f8dd,0x233c3,0x0,0x8002f8de,0x3b49,0x0,0x8002f8df,0x67fa,0x0,0x8002f8e0,0x6785,0x0,0x8002f8e1,0x6852,0x0,
    0x8002f8e2,0x6885,0x0,0x8002f8e3,0x2346d,0x0,0x8002f8e4,0x688e,0x0,0x8002f8e5,0x681f,0x0,0x8002f8e6,0x6914,0x0,
    0x8002f8e7,0x3b9d,0x0,0x8002f8e8,0x6942,0x0,0x8002f8e9,0x69a3,0x0,0x8002f8ea,0x69ea,0x0,0x8002f8eb,0x6aa8,0x0,
    0x8002f8ec,0x236a3,0x0,0x8002f8ed,0x6adb,0x0,0x8002f8ee,0x3c18,0x0,0x8002f8ef,0x6b21,0x0,0x8002f8f0,0x238a7,0x0,
    0x8002f8f1,0x6b54,0x0,0x8002f8f2,0x3c4e,0x0,0x8002f8f3,0x6b72,0x0,0x8002f8f4,0x6b9f,0x0,0x8002f8f5,0x6bba,0x0,
    0x8002f8f6,0x6bbb,0x0,0x8002f8f7,0x23a8d,0x0,0x8002f8f8,0x21d0b,0x0,0x8002f8f9,0x23afa,0x0,0x8002f8fa,0x6c4e,0x0,
    0x8002f8fb,0x23cbc,0x0,0x8002f8fc,0x6cbf,0x0,0x8002f8fd,0x6ccd,0x0,0x8002f8fe,0x6c67,0x0,0x8002f8ff,0x6d16,0x0,
    0x8002f900,0x6d3e,0x0,0x8002f901,0x6d77,0x0,0x8002f902,0x6d41,0x0,0x8002f903,0x6d69,0x0,0x8002f904,0x6d78,0x0,
    0x8002f905,0x6d85,0x0,0x8002f906,0x23d1e,0x0,0x8002f907,0x6d34,0x0,0x8002f908,0x6e2f,0x0,0x8002f909,0x6e6e,0x0,
    0x8002f90a,0x3d33,0x0,0x8002f90b,0x6ecb,0x0,0x8002f90c,0x6ec7,0x0,0x8002f90d,0x23ed1,0x0,0x8002f90e,0x6df9,0x0,
    0x8002f90f,0x6f6e,0x0,0x8002f910,0x23f5e,0x0,0x8002f911,0x23f8e,0x0,0x8002f912,0x6fc6,0x0,0x8002f913,0x7039,0x0,
    0x8002f914,0x701e,0x0,0x8002f915,0x701b,0x0,0x8002f916,0x3d96,0x0,0x8002f917,0x704a,0x0,0x8002f918,0x707d,0x0,
    0x8002f919,0x7077,0x0,0x8002f91a,0x70ad,0x0,0x8002f91b,0x20525,0x0,0x8002f91c,0x7145,0x0,0x8002f91d,0x24263,0x0,
    0x8002f91e,0x719c,0x0,0x8002f91f,0x243ab,0x0,0x8002f920,0x7228,0x0,0x8002f921,0x7235,0x0,0x8002f922,0x7250,0x0,
    0x8002f923,0x24608,0x0,0x8002f924,0x7280,0x0,0x8002f925,0x7295,0x0,0x8002f926,0x24735,0x0,0x8002f927,0x24814,0x0,
    0x8002f928,0x737a,0x0,0x8002f929,0x738b,0x0,0x8002f92a,0x3eac,0x0,0x8002f92b,0x73a5,0x0,0x8002f92c,0x3eb8,0x0,
    0x8002f92d,0x3eb8,0x0,0x8002f92e,0x7447,0x0,0x8002f92f,0x745c,0x0,0x8002f930,0x7471,0x0,0x8002f931,0x7485,0x0,
    0x8002f932,0x74ca,0x0,0x8002f933,0x3f1b,0x0,0x8002f934,0x7524,0x0,0x8002f935,0x24c36,0x0,0x8002f936,0x753e,0x0,
    0x8002f937,0x24c92,0x0,0x8002f938,0x7570,0x0,0x8002f939,0x2219f,0x0,0x8002f93a,0x7610,0x0,0x8002f93b,0x24fa1,0x0,
    0x8002f93c,0x24fb8,0x0,0x8002f93d,0x25044,0x0,0x8002f93e,0x3ffc,0x0,0x8002f93f,0x4008,0x0,0x8002f940,0x76f4,0x0,
    0x8002f941,0x250f3,0x0,0x8002f942,0x250f2,0x0,0x8002f943,0x25119,0x0,0x8002f944,0x25133,0x0,0x8002f945,0x771e,0x0,
    0x8002f946,0x771f,0x0,0x8002f947,0x771f,0x0,0x8002f948,0x774a,0x0,0x8002f949,0x4039,0x0,0x8002f94a,0x778b,0x0,
    0x8002f94b,0x4046,0x0,0x8002f94c,0x4096,0x0,0x8002f94d,0x2541d,0x0,0x8002f94e,0x784e,0x0,0x8002f94f,0x788c,0x0,
    0x8002f950,0x78cc,0x0,0x8002f951,0x40e3,0x0,0x8002f952,0x25626,0x0,0x8002f953,0x7956,0x0,0x8002f954,0x2569a,0x0,
    0x8002f955,0x256c5,0x0,0x8002f956,0x798f,0x0,0x8002f957,0x79eb,0x0,0x8002f958,0x412f,0x0,0x8002f959,0x7a40,0x0,
    0x8002f95a,0x7a4a,0x0,0x8002f95b,0x7a4f,0x0,0x8002f95c,0x2597c,0x0,0x8002f95d,0x25aa7,0x0,0x8002f95e,0x25aa7,0x0,
    0x8002f95f,0x7aee,0x0,0x8002f960,0x4202,0x0,0x8002f961,0x25bab,0x0,0x8002f962,0x7bc6,0x0,0x8002f963,0x7bc9,0x0,
    0x8002f964,0x4227,0x0,0x8002f965,0x25c80,0x0,0x8002f966,0x7cd2,0x0,0x8002f967,0x42a0,0x0,0x8002f968,0x7ce8,0x0,
    0x8002f969,0x7ce3,0x0,0x8002f96a,0x7d00,0x0,0x8002f96b,0x25f86,0x0,0x8002f96c,0x7d63,0x0,0x8002f96d,0x4301,0x0,
    0x8002f96e,0x7dc7,0x0,0x8002f96f,0x7e02,0x0,0x8002f970,0x7e45,0x0,0x8002f971,0x4334,0x0,0x8002f972,0x26228,0x0,
    0x8002f973,0x26247,0x0,0x8002f974,0x4359,0x0,0x8002f975,0x262d9,0x0,0x8002f976,0x7f7a,0x0,0x8002f977,0x2633e,0x0,
    0x8002f978,0x7f95,0x0,0x8002f979,0x7ffa,0x0,0x8002f97a,0x8005,0x0,0x8002f97b,0x264da,0x0,0x8002f97c,0x26523,0x0,
    0x8002f97d,0x8060,0x0,0x8002f97e,0x265a8,0x0,0x8002f97f,0x8070,0x0,0x8002f980,0x2335f,0x0,0x8002f981,0x43d5,0x0,
    0x8002f982,0x80b2,0x0,0x8002f983,0x8103,0x0,0x8002f984,0x440b,0x0,0x8002f985,0x813e,0x0,0x8002f986,0x5ab5,0x0,
    0x8002f987,0x267a7,0x0,0x8002f988,0x267b5,0x0,0x8002f989,0x23393,0x0,0x8002f98a,0x2339c,0x0,0x8002f98b,0x8201,0x0,
    0x8002f98c,0x8204,0x0,0x8002f98d,0x8f9e,0x0,0x8002f98e,0x446b,0x0,0x8002f98f,0x8291,0x0,0x8002f990,0x828b,0x0,
    0x8002f991,0x829d,0x0,0x8002f992,0x52b3,0x0,0x8002f993,0x82b1,0x0,0x8002f994,0x82b3,0x0,0x8002f995,0x82bd,0x0,
    0x8002f996,0x82e6,0x0,0x8002f997,0x26b3c,0x0,0x8002f998,0x82e5,0x0,0x8002f999,0x831d,0x0,0x8002f99a,0x8363,0x0,
    0x8002f99b,0x83ad,0x0,0x8002f99c,0x8323,0x0,0x8002f99d,0x83bd,0x0,0x8002f99e,0x83e7,0x0,0x8002f99f,0x8457,0x0,
    0x8002f9a0,0x8353,0x0,0x8002f9a1,0x83ca,0x0,0x8002f9a2,0x83cc,0x0,0x8002f9a3,0x83dc,0x0,0x8002f9a4,0x26c36,0x0,
    0x8002f9a5,0x26d6b,0x0,0x8002f9a6,0x26cd5,0x0,0x8002f9a7,0x452b,0x0,0x8002f9a8,0x84f1,0x0,0x8002f9a9,0x84f3,0x0,
    0x8002f9aa,0x8516,0x0,0x8002f9ab,0x273ca,0x0,0x8002f9ac,0x8564,0x0,0x8002f9ad,0x26f2c,0x0,0x8002f9ae,0x455d,0x0,
    0x8002f9af,0x4561,0x0,0x8002f9b0,0x26fb1,0x0,0x8002f9b1,0x270d2,0x0,0x8002f9b2,0x456b,0x0,0x8002f9b3,0x8650,0x0,
    0x8002f9b4,0x865c,0x0,0x8002f9b5,0x8667,0x0,0x8002f9b6,0x8669,0x0,0x8002f9b7,0x86a9,0x0,0x8002f9b8,0x8688,0x0,
    0x8002f9b9,0x870e,0x0,0x8002f9ba,0x86e2,0x0,0x8002f9bb,0x8779,0x0,0x8002f9bc,0x8728,0x0,0x8002f9bd,0x876b,0x0,
    0x8002f9be,0x8786,0x0,0x8002f9bf,0x45d7,0x0,0x8002f9c0,0x87e1,0x0,0x8002f9c1,0x8801,0x0,0x8002f9c2,0x45f9,0x0,
    0x8002f9c3,0x8860,0x0,0x8002f9c4,0x8863,0x0,0x8002f9c5,0x27667,0x0,0x8002f9c6,0x88d7,0x0,0x8002f9c7,0x88de,0x0,
    0x8002f9c8,0x4635,0x0,0x8002f9c9,0x88fa,0x0,0x8002f9ca,0x34bb,0x0,0x8002f9cb,0x278ae,0x0,0x8002f9cc,0x27966,0x0,
    0x8002f9cd,0x46be,0x0,0x8002f9ce,0x46c7,0x0,0x8002f9cf,0x8aa0,0x0,0x8002f9d0,0x8aed,0x0,0x8002f9d1,0x8b8a,0x0,
    0x8002f9d2,0x8c55,0x0,0x8002f9d3,0x27ca8,0x0,0x8002f9d4,0x8cab,0x0,0x8002f9d5,0x8cc1,0x0,0x8002f9d6,0x8d1b,0x0,
    0x8002f9d7,0x8d77,0x0,0x8002f9d8,0x27f2f,0x0,0x8002f9d9,0x20804,0x0,0x8002f9da,0x8dcb,0x0,0x8002f9db,0x8dbc,0x0,
    0x8002f9dc,0x8df0,0x0,0x8002f9dd,0x208de,0x0,0x8002f9de,0x8ed4,0x0,0x8002f9df,0x8f38,0x0,0x8002f9e0,0x285d2,0x0,
    0x8002f9e1,0x285ed,0x0,0x8002f9e2,0x9094,0x0,0x8002f9e3,0x90f1,0x0,0x8002f9e4,0x9111,0x0,0x8002f9e5,0x2872e,0x0,
    0x8002f9e6,0x911b,0x0,0x8002f9e7,0x9238,0x0,0x8002f9e8,0x92d7,0x0,0x8002f9e9,0x92d8,0x0,0x8002f9ea,0x927c,0x0,
    0x8002f9eb,0x93f9,0x0,0x8002f9ec,0x9415,0x0,0x8002f9ed,0x28bfa,0x0,0x8002f9ee,0x958b,0x0,0x8002f9ef,0x4995,0x0,
    0x8002f9f0,0x95b7,0x0,0x8002f9f1,0x28d77,0x0,0x8002f9f2,0x49e6,0x0,0x8002f9f3,0x96c3,0x0,0x8002f9f4,0x5db2,0x0,
    0x8002f9f5,0x9723,0x0,0x8002f9f6,0x29145,0x0,0x8002f9f7,0x2921a,0x0,0x8002f9f8,0x4a6e,0x0,0x8002f9f9,0x4a76,0x0,
    0x8002f9fa,0x97e0,0x0,0x8002f9fb,0x2940a,0x0,0x8002f9fc,0x4ab2,0x0,0x8002f9fd,0x29496,0x0,0x8002f9fe,0x980b,0x0,
    0x8002f9ff,0x980b,0x0,0x8002fa00,0x9829,0x0,0x8002fa01,0x295b6,0x0,0x8002fa02,0x98e2,0x0,0x8002fa03,0x4b33,0x0,
    0x8002fa04,0x9929,0x0,0x8002fa05,0x99a7,0x0,0x8002fa06,0x99c2,0x0,0x8002fa07,0x99fe,0x0,0x8002fa08,0x4bce,0x0,
    0x8002fa09,0x29b30,0x0,0x8002fa0a,0x9b12,0x0,0x8002fa0b,0x9c40,0x0,0x8002fa0c,0x9cfd,0x0,0x8002fa0d,0x4cce,0x0,
    0x8002fa0e,0x4ced,0x0,0x8002fa0f,0x9d67,0x0,0x8002fa10,0x2a0ce,0x0,0x8002fa11,0x4cf8,0x0,0x8002fa12,0x2a105,0x0,
    0x8002fa13,0x2a20e,0x0,0x8002fa14,0x2a291,0x0,0x8002fa15,0x9ebb,0x0,0x8002fa16,0x4d56,0x0,0x8002fa17,0x9ef9,0x0,
    0x8002fa18,0x9efe,0x0,0x8002fa19,0x9f05,0x0,0x8002fa1a,0x9f0f,0x0,0x8002fa1b,0x9f16,0x0,0x8002fa1c,0x9f3b,0x0,
    0x8002fa1d,0x2a600,0x0,
};
/* END GENERATED UNICODE TABLES */


/* Value of a breakpoint table (start << 8 | value) at cp: the entry with the largest start <= cp. */
static unsigned cllm__uni_lookup(const uint32_t *t, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;                       /* t[0] starts at 0, so t[lo].start <= cp holds */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if ((t[mid] >> 8) <= cp) lo = mid; else hi = mid;
    }
    return t[lo] & 0xFF;
}

static unsigned cllm__uni_class(uint32_t cp) {
    return cllm__uni_lookup(cllm__uni_class_table, sizeof cllm__uni_class_table / sizeof cllm__uni_class_table[0], cp);
}

static unsigned cllm__uni_ccc(uint32_t cp) {
    return cllm__uni_lookup(cllm__uni_ccc_table, sizeof cllm__uni_ccc_table / sizeof cllm__uni_ccc_table[0], cp);
}

/* The decomposition table: *n entries of 3 values (see above). */
static const uint32_t *cllm__uni_decomp_entries(size_t *n) {
    *n = sizeof cllm__uni_decomp / sizeof cllm__uni_decomp[0] / 3;
    return cllm__uni_decomp;
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
