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
      cllm_matmul_forward(), cllm_matmul_backward() -- the linear layer's product and its backward with this
                                  build's fastest kernel (what `make bench` times); cllm_num_threads()
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
      cllm_tiktoken_load(), _load_text(), _free() -- OpenAI's tiktoken rank files (cl100k_base, r50k_base,
                                  p50k_base, p50k_edit), what CollabLLM counts tokens with (data_fmt/tiktoken.md)
      cllm_tiktoken_encode(), _decode(), _id_bytes() -- ids identical to tiktoken's encode_ordinary
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
      cllm_chat_backend        -- the model behind the built-in simulators, assistants and judges (API or local)
      cllm_llm_sim_init()      -- (a) the user simulator as an API model: hidden goal, {current_answer,
                                  thought, response}, "[[TERMINATE CHAT]]"; re-asks unusable replies
      cllm_user_sim_prompt(), cllm_user_sim_parse() -- its prompt and parser, for simulators that
                                  generate text themselves (a local model); (c) any C callback works too
      cllm_api_assistant_init() -- an assistant (policy) served by an API model, optional system prompt
      cllm_simulate()          -- run n conversations forward in lockstep until termination or a budget
      cllm_judge_init(), cllm_judge_interactivity(), cllm_judge_interactivity_v1(), cllm_judge_accuracy(),
      cllm_judge_extract()     -- LLM judges, batched; a failed judgement is an error, never a 0
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
      cllm_mr_from_samples()   -- MR of futures simulated and scored elsewhere: sessions and metric values in
      cllm_metric_builtin()    -- named metrics: token_amount, interactivity, accuracy, exact_match, bleu,
                                  bleu_last, pass_rate; any C function with the cllm_metric_fn shape plugs in
      cllm_answer_matches()    -- exact / numeric matching of a final answer
      cllm_count_tokens()      -- the policy tokenizer's count (cllm_tokenizer_count), a tiktoken encoding's
                                  (cllm_tiktoken_count: CollabLLM's cl100k_base), or whitespace words
   Data generation, training files, evaluation
      cllm_datagen_run()       -- paper B.1: k candidates per turn scored by MR, best one continues; all
                                  recorded as flat CollabLLM records; resumable, shardable
      cllm_build_pairs()       -- records -> SFT rows {"messages"} and DPO pairs {"prompt", "chosen",
                                  "rejected", "score_chosen", "score_rejected"} (TRL conversational),
                                  by CollabLLM v2's rules or v1's; also reads published and v1 rows
      cllm_records_to_collabllm() -- records -> the published collabllm-multiturn rows (data_fmt/published.md)
      cllm_system_prompt_collabllm(), cllm_task_desc_of_dataset(), cllm_metric_name_collabllm() -- CollabLLM's
                                  system prompt (our words), task descriptions and metric names
      cllm_eval_run()          -- paper section 4: one conversation per task, metrics, tokens, turns
   Training: SFT, DPO, LoRA, checkpoints (data_fmt/train.md)
      cllm_sft_data_load()     -- {"messages"} rows -> token sequences whose targets are the assistant mask
      cllm_dpo_data_load()     -- preference pairs -> chosen / rejected sequences (completion tokens found
                                  by byte offsets, or TRL's: cllm_completion_tokens), optional reference logps
      cllm_sft_seq(), cllm_completion_seq(), cllm_train_seq_truncate() -- those tokenization and
                                  truncation rules for one example
      cllm_seq_logps()         -- summed target log-probs of sequences (e.g. a DPO reference)
      cllm_dpo_precompute_ref() -- TRL's precompute_ref_log_probs, written back into the pairs file
      cllm_dpo_eval()          -- a DPO evaluation pass: per pair logps, reference logps, rewards, loss
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
      `collabllm ref NAME`     -- the above as JSON in / JSON out (examples/ref_json.h, data_fmt/ref.md)
   Checkpoint files
      cllm_st_open()           -- open and strictly validate a .safetensors file
      cllm_st_find()           -- look up a tensor by name
      cllm_st_read()           -- read a tensor into cllm_float, converting F32 / F16 / BF16 / F64
      cllm_st_close()
      cllm_st_save()           -- write tensors to a .safetensors file, atomically
   Utilities
      cllm_read_file()         -- read a whole file (NUL-terminated)
      cllm_read_line()         -- one line of a text file, at most CLLM_MAX_LINE_BYTES (as the JSONL readers read)
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
      tiktoken.md       tiktoken rank files (cl100k_base) and --token-counter: counting tokens as CollabLLM does
      fidelity.md       every point where collabllm.h and CollabLLM's code (v1, the paper; v2) differ, and
                        the flags that reproduce each
      published.md      CollabLLM's own rows (published multiturn rows, v1 DPO rows, task rows of its
                        four datasets) and its pair-building rules, v1 and v2
      verify.md         one recipe per objective for checking a Python run (HF, TRL, verl, CollabLLM) against
                        this one: commands, Python lines, tolerances, what a mismatch means (examples/verify/)

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
      tiktoken: ids identical to npm tiktoken 1.0.22 (OpenAI's Rust core) on cl100k_base, r50k_base,
      p50k_base and p50k_edit over the same corpus (`make crosscheck`); the same Unicode 15.0 caveat.
      Chat templates: rendered for system / user / assistant messages; tool calls and tool
      roles are refused. Where Python jinja2 and @huggingface/jinja disagree (trim of U+0085,
      rstrip('\n')) we follow jinja2, which transformers uses.

      Untrusted input. Every parser of outside input (safetensors headers, config.json,
      tokenizer.json, tokenizer_config.json, tiktoken rank files, the JSONL files, chat-completions
      responses, the simulator's and judges' JSON) is fuzzed (`make fuzz`, tests/fuzz/), and its
      findings are replayed by tests/test_fuzz_regressions.c. Sizes are checked before allocation: a
      JSONL line over CLLM_MAX_LINE_BYTES (64 MB) is refused; tokenizer.json ids must be nearly dense
      (below 2 x the tokens + 256); a rank file is refused over 64 MB, with a gap in its ranks or a
      token over 1024 bytes; cllm_model_load refuses a config.json that describes more
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
         legacy TRL: score scaling, adaptive KL   cllm_running_moments_update cllm_adaptive_kl_update          I.3
      The multiturn-aware reward (CollabLLM, paper section 3)
         Eq. 3-4: R* = metrics - token cost       cllm_mr_reward cllm_count_tokens                             I.4
         Eq. 1-2: MR = mean R* over S futures     cllm_mr_score                                                I.4
         futures simulated in lockstep            cllm_simulate                                                I.4
         the user simulator (appendix D.1)        cllm_user_sim_prompt cllm_user_sim_parse                     I.4
         judges: interactivity (D.4), accuracy    cllm_judge_interactivity cllm_judge_accuracy cllm_judge_extract  I.4
         the paper's 1-3 judge (v1), R_LLM = x/3  cllm_judge_interactivity_v1                                  I.4
      Data generation (paper appendix B.1)
         k candidates per turn scored by MR       cllm_datagen_run                                             I.5
         SFT rows, DPO pairs (v1's, v2's rules)   cllm_build_pairs cllm_pairs_min_gap                          I.5
      Updates (paper section 3 and Table 6; TRL v0.19 trainers)
         the SFT and DPO steps                    cllm_sft_micro_step cllm_dpo_micro_step                      I.6
         online DPO (OnlineDPOTrainer)            cllm_train_online_dpo                                        I.6
         PPO rollout: logps, values, advantages   cllm_ppo_prepare cllm_ppo_rollout_loss                       I.6
         PPO value head, Linear(C, 1)             cllm_value_head_forward cllm_value_head_backward             I.6
         the PPO step (PPOTrainer)                cllm_train_ppo                                               I.6
         GRPO (GRPOTrainer)                       cllm_train_grpo                                              I.6
      Infrastructure and fast paths that the steps above call
         KV cache and sampling                    cllm_kv_step cllm_sample cllm_generate                       II.5
         simulators, assistants on a chat backend cllm_llm_sim_init cllm_local_user_sim_init cllm_judge_init   II.7
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
/* One line of f, without "\n" or "\r\n", into *line (grown up to CLLM_MAX_LINE_BYTES): its length or a status. */
typedef enum cllm_line_status { CLLM_LINE_EOF = -1, CLLM_LINE_TOO_LONG = -2, CLLM_LINE_NOMEM = -3 } cllm_line_status;
CLLMDEF long        cllm_read_line(FILE *f, char **line, size_t *cap);
/* Writes path.tmp.<pid>, flushes it to disk, then renames it over path: readers see the old file or the new one. */
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
    char      *name;
    cllm_dtype dtype;
    int        ndim;                   /* 0 for a scalar */
    int64_t    shape[CLLM_ST_MAX_DIMS];
    uint64_t   begin, end;             /* byte offsets relative to the data buffer */
    int64_t    numel;
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
    cllm_dtype        dtype;           /* CLLM_DT_F32, CLLM_DT_BF16 (round to nearest even) or CLLM_DT_F16 */
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
    cllm_arch arch;             /* from model_type                                              */
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
    cllm_rope_type rope_type;   /* rope_scaling's type                                          */
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
/* The model's tensors as checkpoint entries, one per HF tensor (per-layer stacks are split): names get `prefix` (e.g.
   "grad."), data points into `memory`, which is params_memory, grads_memory or any buffer with the same layout.
   Returns the count; `entries` must hold cllm_model_tensor_count(m). */
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

/* A token-batch JSONL file (data_fmt/dump.md) as a right-padded batch it allocates; free it with cllm_batch_free. */
CLLMDEF cllm_result cllm_batch_read_jsonl(cllm_batch *batch, const char *path, cllm_err *err);
CLLMDEF void        cllm_batch_free(cllm_batch *batch);

/* logits_out: optional (B, T, V) buffer that receives the raw logits (before temperature). */
CLLMDEF cllm_result cllm_forward(cllm_model *m, const cllm_batch *batch, cllm_float *logits_out, cllm_err *err);
CLLMDEF cllm_result cllm_zero_grad(cllm_model *m, cllm_err *err);
/* dlogp: (B*T) gradient w.r.t. model.acts.logp, or NULL for the mean CE loss; dhidden: optional (B*T, C) gradient
   w.r.t. model.acts.lnf (a value head). With LoRA attached only lora->grads accumulate (model.grads stays NULL). */
CLLMDEF cllm_result cllm_backward(cllm_model *m, const cllm_float *dlogp, const cllm_float *dhidden, cllm_err *err);
/* The linear layer's product out (N, OC) = inp (N, C) W^T + bias (W (OC, C), bias NULL = none), and its backward
   (adds into those of dinp, dW, dbias that are not NULL), with the fastest kernel this build has. */
CLLMDEF void        cllm_matmul_forward(cllm_float *out, const cllm_float *inp, const cllm_float *W,
                                        const cllm_float *bias, int N, int C, int OC);
CLLMDEF void        cllm_matmul_backward(cllm_float *dinp, cllm_float *dW, cllm_float *dbias, const cllm_float *dout,
                                         const cllm_float *inp, const cllm_float *W, int N, int C, int OC);
/* Threads the fast paths use: OpenMP's (OMP_NUM_THREADS), 1 without OpenMP. */
CLLMDEF int         cllm_num_threads(void);

/* ============================================================================================ */
/* Optimisation                                                                                 */
/* ============================================================================================ */

/* AdamW's hyperparameters, in double as torch holds them (Python floats): a float 0.9 would be 0.89999998. */
typedef struct cllm_adamw_config {
    double beta1;         /* default 0.9                                                          */
    double beta2;         /* default 0.999                                                        */
    double eps;           /* default 1e-8                                                         */
    double weight_decay;  /* default 0 (HF TrainingArguments); cllm_adamw_update: 2-D tensors only */
} cllm_adamw_config;

/* torch.optim.AdamW on n values p with gradients g and moments m, v, at step t (1-based); cfg NULL = defaults. */
CLLMDEF void   cllm_adamw_step(cllm_float *p, const cllm_float *g, cllm_float *m, cllm_float *v, size_t n, int t,
                               double lr, const cllm_adamw_config *cfg);
CLLMDEF cllm_result cllm_adamw_update(cllm_model *model, const cllm_adamw_config *cfg, double lr, cllm_err *err);
/* torch.nn.utils.clip_grad_norm_ over all the model's gradients (or n arrays); returns the norm before clipping. */
CLLMDEF double cllm_clip_grad_norm(cllm_model *m, double max_norm);
CLLMDEF double cllm_clip_grad_norm_arrays(cllm_float **grads, const size_t *sizes, int n, double max_norm);

typedef enum cllm_schedule { CLLM_SCHED_CONSTANT = 0, CLLM_SCHED_LINEAR, CLLM_SCHED_COSINE } cllm_schedule;
/* transformers' warmup + constant / linear / cosine schedule at step = optimiser steps already taken. */
CLLMDEF double cllm_lr_at(cllm_schedule kind, double base_lr, long step, long warmup, long total);

/* ============================================================================================ */
/* Tokenizer: Hugging Face tokenizer.json (byte-level BPE), tiktoken rank files                 */
/* ============================================================================================ */

/* The chat-template families cllm_chat_render writes natively (no Jinja engine), recognised by the
   distinctive text of tokenizer_config.json's chat_template. */
typedef enum cllm_chat_family {
    CLLM_CHAT_NONE = 0,
    CLLM_CHAT_CHATML,    /* <|im_start|>role\ncontent<|im_end|>\n; SmolLM2 and Qwen2.5 add their default
                            system prompt when the first message is not a system one */
    CLLM_CHAT_QWEN3,     /* Qwen3: ChatML + <think> blocks; thinking off by default */
    CLLM_CHAT_LLAMA3,    /* Llama-3: bos, <|start_header_id|>role<|end_header_id|>\n\ncontent|trim<|eot_id|> */
    CLLM_CHAT_LLAMA31    /* Llama-3.1 / 3.2 / 3.3: Llama-3 plus a system block with the date */
} cllm_chat_family;

/* A loaded tokenizer.json (+ tokenizer_config.json). Fields above `priv` are public and read-only.
   Encoding and decoding never modify it, so one tokenizer can serve several threads. */
typedef struct cllm_tokenizer {
    int   n_ids;            /* 1 + the largest id of the vocabulary and the added tokens        */
    int   bos_id;           /* tokenizer_config.json bos_token as an id, -1 if none             */
    int   eos_id;           /* eos_token, -1 if none                                            */
    int   pad_id;           /* pad_token, -1 if none                                            */
    int   add_bos_token;    /* tokenizer_config.json add_bos_token, -1 if absent (informational:
                               the post_processor decides, as in HF's fast tokenizers)          */
    cllm_chat_family chat_family;   /* detected from chat_template, CLLM_CHAT_NONE if unknown   */
    char *chat_template;    /* the chat_template text, NULL if none                             */
    char *bos_token, *eos_token, *pad_token;   /* the token strings, NULL if none               */
    struct cllm__tok *priv;
} cllm_tokenizer;

/* Loads tokenizer.json (a file, or a directory holding it) and tokenizer_config.json beside it. */
CLLMDEF cllm_result cllm_tokenizer_load(cllm_tokenizer *tok, const char *path_or_dir, cllm_err *err);
/* The same from memory: tokenizer.json's text, and tokenizer_config.json's or NULL. */
CLLMDEF cllm_result cllm_tokenizer_load_json(cllm_tokenizer *tok, const char *tokenizer_json, size_t len,
                                             const char *config_json, size_t config_len, cllm_err *err);
CLLMDEF void        cllm_tokenizer_free(cllm_tokenizer *tok);   /* safe on a zeroed struct */
/* UTF-8 text -> *ids (n); offsets (optional): token i covers text[offsets[2i], offsets[2i+1]).
   add_special_tokens: apply the post_processor. Both arrays allocated; free with cllm_free_buffer. */
CLLMDEF cllm_result cllm_tokenizer_encode(const cllm_tokenizer *tok, const char *text, size_t len,
                                          int add_special_tokens, int **ids, int *n, int **offsets, cllm_err *err);
/* ids -> UTF-8 text (allocated, NUL-terminated; *len may be NULL), invalid bytes as U+FFFD.
   skip_special: leave out added tokens marked special. */
CLLMDEF cllm_result cllm_tokenizer_decode(const cllm_tokenizer *tok, const int *ids, int n, int skip_special,
                                          char **text, size_t *len, cllm_err *err);
/* The id of a token as tokenizer.json writes it ("<|im_end|>", "Ġthe"), or -1. */
CLLMDEF int         cllm_tokenizer_token_id(const cllm_tokenizer *tok, const char *token);
/* The bytes id decodes to on its own (not NUL-terminated); NULL for an unknown id. */
CLLMDEF const char *cllm_tokenizer_id_bytes(const cllm_tokenizer *tok, int id, size_t *len);

/* Streaming decoder for generation: push ids one at a time, get the text completed so far. The
   pieces concatenate to cllm_tokenizer_decode of all the ids. */
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
CLLMDEF cllm_result cllm_decode_stream_push(cllm_decode_stream *s, int id, const char **out, size_t *out_len,
                                            cllm_err *err);
/* Ends the stream: an unfinished character becomes U+FFFD. */
CLLMDEF cllm_result cllm_decode_stream_flush(cllm_decode_stream *s, const char **out, size_t *out_len, cllm_err *err);
CLLMDEF void        cllm_decode_stream_free(cllm_decode_stream *s);

/* A tiktoken encoding from OpenAI's rank file NAME.tiktoken: cl100k_base (what CollabLLM counts tokens with),
   r50k_base, p50k_base, p50k_edit (data_fmt/tiktoken.md). Read-only once loaded: it can serve several threads. */
typedef struct cllm_tiktoken {
    const char            *encoding;   /* "cl100k_base", ... (static)                                   */
    const char            *pattern;    /* its split pattern, as tiktoken's pat_str (static)             */
    int                    n_ranks;    /* mergeable tokens: the lines of the rank file                  */
    int                    n_ids;      /* 1 + the largest id, special tokens included (cl100k: 100277)  */
    struct cllm__tiktoken *priv;
} cllm_tiktoken;
/* Reads a rank file (at most 64 MB; errors name path:line). encoding: NULL to take NAME from the file's name. */
CLLMDEF cllm_result cllm_tiktoken_load(cllm_tiktoken *tk, const char *path, const char *encoding, cllm_err *err);
/* The same from memory; source names the text in messages (and the encoding, when that is NULL). */
CLLMDEF cllm_result cllm_tiktoken_load_text(cllm_tiktoken *tk, const char *text, size_t len, const char *source,
                                            const char *encoding, cllm_err *err);
CLLMDEF void        cllm_tiktoken_free(cllm_tiktoken *tk);   /* safe on a zeroed struct */
/* tiktoken's encode_ordinary (special-token text is ordinary text); ids and offsets as cllm_tokenizer_encode's. */
CLLMDEF cllm_result cllm_tiktoken_encode(const cllm_tiktoken *tk, const char *text, size_t len, int **ids, int *n,
                                         int **offsets, cllm_err *err);
/* ids -> UTF-8 text as cllm_tokenizer_decode; an id that is no token is an error, as in tiktoken. */
CLLMDEF cllm_result cllm_tiktoken_decode(const cllm_tiktoken *tk, const int *ids, int n, int skip_special,
                                         char **text, size_t *len, cllm_err *err);
/* The bytes of one id (not NUL-terminated); NULL if it is no token. */
CLLMDEF const char *cllm_tiktoken_id_bytes(const cllm_tiktoken *tk, int id, size_t *len);

/* ============================================================================================ */
/* Chat templates and assistant masks                                                           */
/* ============================================================================================ */

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
CLLMDEF const char *cllm_chat_family_name(cllm_chat_family family);
/* Renders msgs with tok's chat template into text, its n_ids token ids, and mask: 1 for the tokens of
   the assistant messages (their content and end-of-turn token). Outputs may be NULL; they are
   allocated (free with cllm_free_buffer). opts may be NULL. Unknown templates fail, named. */
CLLMDEF cllm_result cllm_chat_render(const cllm_tokenizer *tok, const cllm_message *msgs, int n,
                                     const cllm_render_opts *opts, char **text, int **ids, unsigned char **mask,
                                     int *n_ids, cllm_err *err);

/* ============================================================================================ */
/* Generation: KV cache and sampling                                                            */
/* ============================================================================================ */

/* KV cache: each layer's keys and values for n_seq independent sequences. Sequence s holds len[s]
   positions; its next token goes to position len[s]; setting len[s] lower forgets the tail. */
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

/* An empty cache for model m, or any model with the same config.json (all len[s] = 0). */
CLLMDEF cllm_result cllm_kv_cache_init(cllm_kv_cache *kv, const cllm_model *m, int n_seq, int max_len, cllm_err *err);
CLLMDEF void        cllm_kv_cache_free(cllm_kv_cache *kv);   /* safe on a zeroed cache */
/* Makes sequence dst a copy of sequence src: n samples of one prompt prefill it once. */
CLLMDEF cllm_result cllm_kv_cache_copy_seq(cllm_kv_cache *kv, int src, int dst, cllm_err *err);
/* Appends n tokens to sequence seq; logits_out: optional (n, V), = cllm_forward's logits. */
CLLMDEF cllm_result cllm_kv_prefill(const cllm_model *m, cllm_kv_cache *kv, int seq, const int *ids, int n,
                                    cllm_float *logits_out, cllm_err *err);
/* One new token per sequence, ids (n_seq), ids[s] < 0 leaves s out; logits_out: optional (n_seq, V). */
CLLMDEF cllm_result cllm_kv_step(const cllm_model *m, cllm_kv_cache *kv, const int *ids, cllm_float *logits_out,
                                 cllm_err *err);

/* Sampling: Hugging Face's generate(do_sample=True), temperature -> top-k -> top-p (see cllm__warp),
   then a draw that gives the same tokens for a seed on every platform. */
typedef struct cllm_sampler {
    int      greedy;       /* 1: the most likely token (lowest id on ties), no randomness; the rest
                              of the fields are ignored (default 0: sample)                      */
    float    temperature;  /* default 1.0                                                         */
    int      top_k;        /* default 0 = off                                                     */
    float    top_p;        /* in (0, 1]; default 1.0 = off                                        */
    uint64_t seed;         /* cllm_generate's RNG seed (default 0)                                */
} cllm_sampler;

/* scores (V): the processed scores HF samples from, -INFINITY where top-k / top-p removed a token. */
CLLMDEF cllm_result cllm_sampler_scores(const cllm_sampler *s, const cllm_float *logits, int V, double *scores,
                                        int *n_kept, cllm_err *err);
/* Draws one token; *logprob (optional): its log-probability under the distribution drawn from. */
CLLMDEF cllm_result cllm_sample(const cllm_sampler *s, const cllm_float *logits, int V, cllm_rng *rng,
                                int *token, double *logprob, cllm_err *err);

/* Generation: n samples continuing one prompt, batched through one KV cache. */
typedef enum cllm_finish_reason {
    CLLM_FINISH_LENGTH = 0,    /* reached max_new_tokens                                          */
    CLLM_FINISH_EOS,           /* produced an EOS id (it is the last token of the sample)         */
    CLLM_FINISH_STOP           /* the stop callback returned nonzero after the last token         */
} cllm_finish_reason;
CLLMDEF const char *cllm_finish_reason_string(cllm_finish_reason reason);   /* "length", "eos", "stop" */

typedef struct cllm_gen_config {
    cllm_sampler sampler;          /* greedy / temperature / top_k / top_p / seed; sample s does not
                                      depend on n_samples or on the other samples                  */
    int          max_new_tokens;   /* at most this many tokens per sample (default 256)           */
    const int   *eos_ids;          /* stop after any of these n_eos ids (default: the model's config eos_token_ids) */
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
                               from (see cllm_sample): PPO's "old logprobs"                        */
    int         n;
    cllm_finish_reason finish;
} cllm_completion;

/* n_samples completions of prompt (n_prompt >= 1 ids) into the caller's out[0..n_samples); their
   arrays are allocated here: release them with cllm_completions_free (also after an error). */
CLLMDEF cllm_result cllm_generate(const cllm_model *m, const int *prompt, int n_prompt, int n_samples,
                                  const cllm_gen_config *cfg, cllm_completion *out, cllm_err *err);
CLLMDEF void        cllm_completions_free(cllm_completion *c, int n);   /* safe on zeroed entries */

/* ============================================================================================ */
/* Chat-completions client (libcurl), user simulators and judges                                */
/* ============================================================================================ */

/* Everything here talks to an OpenAI-compatible POST {base_url}/chat/completions endpoint (OpenAI, vLLM, llama.cpp's
   server, Ollama, ...) through libcurl, or to C callbacks with the same shape. The exchange (what is sent, retried
   and refused), the limits a hostile endpoint meets (tests/test_hostile.c) and each server's setup:
   data_fmt/endpoints.md; the API key: manual section 6 and "secrets" in section II.6. Tasks in: data_fmt/task.md;
   conversations out: data_fmt/conversation.md.

   Ownership: every function that fills a result (cllm_chat_result, cllm_reply, cllm_judgement, cllm_conv) allocates
   its strings; release them with the matching *_free, which is safe on a zeroed struct. Request structs and configs
   only borrow their strings. A client, and anything built on it, is used by one thread at a time; batches give
   concurrency without threads. cllm_client_init and cllm_client_free change process-wide state (curl_global_init,
   the key registry of the scrubber): call them while no other thread uses the library. */

/* ---- conversations --------------------------------------------------------------------------- */

/* cllm_message is declared with the chat templates above. */

/* A conversation. Built with cllm_conv_push it owns its strings (release with cllm_conv_free); a
   view filled by hand over borrowed strings is fine to pass anywhere but must not be freed. */
typedef struct cllm_msg_meta {      /* how a generated message ended (zero: not known)           */
    char finish_reason[32];         /* as the endpoint reported it ("stop", "length", "content_filter", ...); a local
                                       model's "eos" and stop strings give "stop", max_new_tokens "length" */
    int  replaced;                  /* invalid UTF-8 sequences and unpaired surrogate escapes that became U+FFFD */
} cllm_msg_meta;

typedef struct cllm_conv {
    cllm_message  *msgs;
    int            n, cap;
    cllm_msg_meta *meta;            /* cap entries beside msgs, or NULL (a view: all unknown)    */
} cllm_conv;

CLLMDEF cllm_result cllm_conv_push(cllm_conv *c, const char *role, const char *content,
                                   cllm_err *err); /* copies both */
/* The same with how the message ended (meta may be NULL). */
CLLMDEF cllm_result cllm_conv_push_meta(cllm_conv *c, const char *role, const char *content, const cllm_msg_meta *meta,
                                        cllm_err *err);
/* A reply that a length limit cut off or a content filter blocked ("length", "content_filter"). */
CLLMDEF int         cllm_msg_incomplete(const cllm_msg_meta *meta);
CLLMDEF cllm_result cllm_conv_copy(cllm_conv *dst, const cllm_conv *src,
                                   cllm_err *err); /* deep copy into a zeroed dst */
CLLMDEF void        cllm_conv_free(cllm_conv *c);
/* [{"role": ..., "content": ...}, ...] <-> conversation; roles must be system, user or assistant.
   A message's meta adds "finish_reason" (when known) and "replaced" (when not 0); from_json
   reads them back. from_json fills c from scratch (free a conversation it held before). */
CLLMDEF struct cJSON *cllm_conv_to_json(const cllm_conv *c);            /* NULL when out of memory */
CLLMDEF cllm_result cllm_conv_from_json(cllm_conv *c, const struct cJSON *messages, cllm_err *err);

/* Lenient JSON for model output: the first JSON object in the text (prose before and after it ignored), looked for in
   the whole text and in the first ```fenced``` block holding a '{', as written first, then repaired for what models
   commonly get wrong: 'single' or """triple""" quotes, True/False/None, raw newlines in strings, unescaped inner
   quotes, trailing commas. Returns an object to free with cJSON_Delete, or NULL (CLLM_ERR_FORMAT in err). */
CLLMDEF struct cJSON *cllm_json_parse_lenient(const char *text, cllm_err *err);

/* ---- the client ------------------------------------------------------------------------------ */

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
    int         reject_incomplete;  /* 1: a reply whose finish_reason is "length" or "content_filter" is a failed call
                                       (default 0: kept, with its finish_reason recorded)        */
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
/* Runs n requests with up to cfg.max_concurrency in flight (curl multi interface), retrying each on its own; a batch
   takes about as long as its slowest call. results[i] (n of them, filled here) carries each call's own status.
   Returns CLLM_OK when every call succeeded, else the first failure's code with a message counting the failures. */
CLLMDEF cllm_result cllm_client_chat_batch(cllm_client *c, const cllm_chat_request *requests, int n,
                                           cllm_chat_result *results, cllm_err *err);
CLLMDEF cllm_result cllm_client_chat(cllm_client *c, const cllm_chat_request *request,
                                     cllm_chat_result *result, cllm_err *err);  /* a batch of one */
CLLMDEF void        cllm_chat_result_free(cllm_chat_result *r);

/* ---- user simulators, assistants and the chat backends behind them --------------------------- */

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
   *out (with cllm_reply_set) and returns out->code; an empty history asks for the opening request.
   turn_batch (optional) does n at once. Implementations: any C callback, cllm_llm_sim (an API
   model) and cllm_local_user_sim (a local model), both the prompt and parser below on a backend. */
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

/* A chat backend: the model behind the built-in simulators, assistants and judges. complete()
   answers n conversations, one reply each (out: n zeroed replies: text and meta, or code and err),
   with the backend's own sampling settings; json asks for a JSON object where the backend can. */
typedef void (*cllm_chat_complete_fn)(void *ctx, const cllm_conv *convs, int n, int json, cllm_reply *out);
typedef struct cllm_chat_backend {
    cllm_chat_complete_fn complete;
    void                 *ctx;
    int                   one_at_a_time; /* 1: re-asks of a conversation come before the next one
                                            (a local model's seed counter); 0: all together     */
    const char           *name;          /* the model, named in messages (may be NULL)          */
} cllm_chat_backend;

typedef struct cllm_api_backend {   /* an API model: the client with sampling parameters         */
    cllm_chat_backend      backend;
    cllm_client           *client;
    const cllm_llm_params *params;   /* borrowed from the role's config                           */
} cllm_api_backend;

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
    cllm_llm_sim_config cfg;        /* with defaults applied; strings borrowed                    */
    cllm_api_backend    api;        /* the client with cfg.params                                 */
} cllm_llm_sim;

CLLMDEF void        cllm_llm_sim_init(cllm_llm_sim *s, cllm_client *client, const cllm_llm_sim_config *cfg);
/* The simulator's prompt for one conversation (free with cllm_free_buffer; cfg may be NULL) and
   the parser of its answer {current_answer, thought, response}, shared by every simulator. */
CLLMDEF cllm_result cllm_user_sim_prompt(const cllm_llm_sim_config *cfg, const cllm_goal *goal,
                                         const cllm_conv *history, char **out, cllm_err *err);
CLLMDEF cllm_result cllm_user_sim_parse(const char *model_output, const char *termination, cllm_reply *out);

/* An assistant served by an API model. */
typedef struct cllm_api_assistant_config {
    cllm_llm_params params;         /* temperature default 0.8, max_tokens default 2048           */
    const char *system_prompt;      /* sent first in every request, never stored (default none)  */
    int         proactive;          /* 1: CollabLLM's proactive candidates: the history goes into one instruction
                                       to collaborate, and the JSON reply's "response" is the message (the
                                       system prompt is not used); default 0: the plain chat   */
    const char *proactive_prompt;   /* its template, {{history}} {{max_tokens}} (default: built-in) */
} cllm_api_assistant_config;

typedef struct cllm_api_assistant {
    cllm_assistant            assistant;  /* the interface: pass &api.assistant                   */
    cllm_api_assistant_config cfg;
    cllm_api_backend          api;        /* the client with cfg.params                           */
} cllm_api_assistant;

CLLMDEF void cllm_api_assistant_init(cllm_api_assistant *a, cllm_client *client,
                                     const cllm_api_assistant_config *cfg);

/* Runs n conversations forward in lockstep, each from its history in convs[i] (possibly empty),
   until its user terminates, a call fails, or max_new_messages were added (both roles count).
   status (n, optional) says how each one ended. */
typedef struct cllm_sim_status {
    cllm_result code;               /* CLLM_OK, or the failure that stopped this conversation     */
    int         terminated;         /* the user sent the termination signal                       */
    int         n_new;              /* messages added                                             */
    cllm_err    err;
} cllm_sim_status;
CLLMDEF cllm_result cllm_simulate(const cllm_user_sim *user, const cllm_assistant *assistant, const cllm_goal *goals,
                                  cllm_conv *convs, int n, int max_new_messages, cllm_sim_status *status,
                                  cllm_err *err);

/* ---- LLM judges ------------------------------------------------------------------------------ */

typedef struct cllm_judge_config {
    cllm_llm_params params;         /* temperature default 0 (sent as 0), max_tokens default 2048 */
    int         max_parse_retries;  /* new samples for unusable verdicts; default 3; negative: none */
    int         json_mode;          /* 1: ask for response_format json_object (default 0)         */
    const char *interactivity_prompt; /* templates (default: built-in); placeholders below       */
    const char *accuracy_prompt;
    const char *extract_prompt;
    const char *interactivity_v1_prompt;
} cllm_judge_config;

typedef struct cllm_judge {
    cllm_judge_config cfg;
    cllm_api_backend  api;           /* the client with cfg.params                                 */
} cllm_judge;

/* A verdict. A judge that gives no usable answer (after its retries) is a failure with a code, never a score of 0. */
typedef struct cllm_judgement {
    cllm_result code;
    double      score;              /* interactivity in [0, 1] (v1: 1 to 3); accuracy 0 or 1      */
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

typedef struct cllm_followup_item {
    const cllm_conv *conv;          /* {{history}}: messages [0, n_history), for context only;   */
    int              n_history;     /* {{followup}}: messages [n_history, n), the part judged    */
} cllm_followup_item;

typedef struct cllm_extract_item {
    const cllm_conv *conv;          /* {{conversation}}                                           */
    const char      *kind;          /* {{kind}}: "document", "code", "answer" (default "document") */
    const char      *requirement;   /* {{requirement}}: extra instructions (default none)         */
} cllm_extract_item;

CLLMDEF void        cllm_judge_init(cllm_judge *j, cllm_client *client, const cllm_judge_config *cfg);
/* Each judges n items concurrently; out has n entries (filled here); return as for batches.
   interactivity:    {{conversation}} -> score in [0, 1] (CollabLLM v2)          (JSON key "interactivity")
   interactivity_v1: {{history}}, {{followup}} -> 1, 2 or 3 on the follow-up only (CollabLLM v1, the paper;
                     JSON key "interactivity", a number or {"score": number})
   accuracy:         question, ground truth, answer -> 0 or 1                    (JSON key "accuracy")
   extract:          conversation -> the final document/code as text             (JSON key "final_completion") */
CLLMDEF cllm_result cllm_judge_interactivity(cllm_judge *j, const cllm_conv *convs, int n, cllm_judgement *out,
                                             cllm_err *err);
CLLMDEF cllm_result cllm_judge_interactivity_v1(cllm_judge *j, const cllm_followup_item *items, int n,
                                                cllm_judgement *out, cllm_err *err);
CLLMDEF cllm_result cllm_judge_accuracy(cllm_judge *j, const cllm_accuracy_item *items, int n, cllm_judgement *out,
                                        cllm_err *err);
CLLMDEF cllm_result cllm_judge_extract(cllm_judge *j, const cllm_extract_item *items, int n, cllm_judgement *out,
                                       cllm_err *err);

/* ---- task files ------------------------------------------------------------------------------ */

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

/* A collabllm.h model with its tokenizer and chat template, usable wherever an API model is: cllm_local_chat renders
   conversations with the template, generates with cllm_generate and returns the text together with what training
   needs (prompt ids, response ids, the "old" logprobs of PPO / online DPO); cllm_local_assistant and
   cllm_local_user_sim put it behind the cllm_assistant and cllm_user_sim interfaces as a chat backend (the policy as
   the future assistant of MR; the simulator kind (b)). A sample stops at one of stop_ids (the template's end-of-turn
   token: <|im_end|>, or Llama-3's <|eot_id|> and <|eom_id|>; eos_token; the config's eos_token_id), a stop string or
   max_new_tokens.
   Seeds. Every conversation generated through an lm takes the next value of lm->calls; its samples are seeded from
   (sampler.seed, that counter), so a run that makes the same calls in the same order gives the same text on every
   platform, a batch of n conversations equals n single calls in that order, and setting lm->calls back replays a
   call. Threads: one lm serves one thread at a time (the counter); the model itself is only read. */

typedef struct cllm_local_lm {
    cllm_model     model;
    cllm_tokenizer tok;
    int            stop_ids[CLLM_MAX_EOS + 4]; /* the ids that end a sample (see above), without repeats */
    int            n_stop_ids;
    uint64_t       calls;       /* conversations generated so far: the seed counter (see above)   */
} cllm_local_lm;

/* dir: a Hugging Face model directory with config.json, model.safetensors (or shards), tokenizer.json and
   tokenizer_config.json (its chat_template is needed for chat). Fails if the tokenizer has ids beyond the model's
   vocab_size. Release with cllm_local_lm_free (safe on a zeroed lm). */
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
    cllm_render_opts   render;         /* enable_thinking, date_string; add_generation_prompt is always set */
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
    cllm_finish_reason finish; /* how the sample ended                                          */
    uint64_t    call;        /* the lm->calls value this conversation was seeded with             */
} cllm_local_output;

/* Generates n_samples responses to each of n conversations: out[i * n_samples + s] (the caller provides n * n_samples
   entries; they are zeroed here). cfg may be NULL (defaults). On failure nothing is left allocated in out. */
CLLMDEF cllm_result cllm_local_chat(cllm_local_lm *lm, const cllm_conv *histories, int n, int n_samples,
                                    const cllm_local_gen_config *cfg, cllm_local_output *out, cllm_err *err);
CLLMDEF void        cllm_local_outputs_free(cllm_local_output *out, int n);

typedef struct cllm_local_backend {  /* a local model: the lm with generation settings          */
    cllm_chat_backend            backend;
    cllm_local_lm               *lm;
    const cllm_local_gen_config *gen;        /* borrowed from the role's config                  */
    long                         generations; /* samples drawn so far, re-asks included          */
} cllm_local_backend;

/* The policy as an assistant: respond / respond_batch over cllm_local_chat, one sample each. */
typedef struct cllm_local_assistant_config {
    cllm_local_gen_config gen;       /* temperature default 0.8 and max_new_tokens default 1024,
                                        as the API assistant's                                    */
    const char           *system_prompt; /* put first in every prompt, never stored (default none) */
    int                   proactive;     /* 1: proactive candidates, as cllm_api_assistant_config's (default 0) */
    const char           *proactive_prompt; /* its template (default: built-in)                  */
} cllm_local_assistant_config;

typedef struct cllm_local_assistant {
    cllm_assistant              assistant;   /* the interface: pass &local.assistant               */
    cllm_local_assistant_config cfg;         /* with defaults applied; strings borrowed             */
    cllm_local_backend          local;       /* the lm with cfg.gen                                */
} cllm_local_assistant;

CLLMDEF void cllm_local_assistant_init(cllm_local_assistant *a, cllm_local_lm *lm,
                                       const cllm_local_assistant_config *cfg);

/* (b) The user simulator as a local model: cllm_user_sim_prompt as one user message through the
   chat template, cllm_user_sim_parse on the answer, an unusable answer sampled again. */
typedef struct cllm_local_user_sim_config {
    cllm_local_gen_config gen;       /* temperature default 1.0, max_new_tokens default 1024, as the API simulator's */
    const char *termination;         /* default CLLM_TERMINATION_SIGNAL                           */
    const char *prompt;              /* template (default: the built-in one; placeholders as in cllm_llm_sim_config) */
    int         max_parse_retries;   /* default 3; negative: none                                 */
} cllm_local_user_sim_config;

typedef struct cllm_local_user_sim {
    cllm_user_sim              sim;          /* the interface: pass &local.sim                      */
    cllm_local_user_sim_config cfg;          /* with defaults applied; strings borrowed             */
    cllm_local_backend         local;        /* the lm with cfg.gen; local.generations counts samples */
} cllm_local_user_sim;

CLLMDEF void cllm_local_user_sim_init(cllm_local_user_sim *s, cllm_local_lm *lm,
                                      const cllm_local_user_sim_config *cfg);

/* ============================================================================================ */
/* The multiturn-aware reward (MR): paper Eq. 1-4                                               */
/* ============================================================================================ */

/* MR(m_j | t_j^h, g) = E over simulated futures t_j^f of R*(t_j^h + m_j + t_j^f | g), estimated with S
   futures of up to w exchanges; R* a weighted sum of metrics (less a token penalty). Derivation: I.4. */

/* A session as metrics see it: history, the candidate at index n_history, then the future. */
typedef struct cllm_session {
    const cllm_goal *goal;
    const cllm_task *task;           /* reference answer, tests, metadata; may be NULL            */
    const cllm_conv *conv;
    int              n_history;      /* messages before the candidate                             */
} cllm_session;

/* A metric scores n sessions at once (so LLM judges run concurrently). It writes scores[i], or NAN for a session it
   could not score (a failed judgement is never a 0); it returns an error only when it could score nothing at all,
   with the reason in err. When it returns CLLM_OK but left some NAN, err->msg may say why (err->code stays CLLM_OK):
   the built-in metrics give the first reason, e.g. a judge's endpoint, HTTP status and message. */
typedef cllm_result (*cllm_metric_fn)(void *ctx, const cllm_session *sessions, int n, double *scores, cllm_err *err);
typedef struct cllm_metric {
    const char    *name;             /* reported name, e.g. "accuracy", "interactivity"           */
    double         weight;           /* w_m in R*                                                 */
    cllm_metric_fn fn;
    void          *ctx;
} cllm_metric;

/* Token counting for the penalty and the token_amount metric: the policy's tokenizer, a tiktoken
   encoding (CollabLLM counts with cl100k_base), or (count == NULL) whitespace-separated words. */
typedef struct cllm_token_counter {
    int  (*count)(void *ctx, const char *text);
    void  *ctx;
} cllm_token_counter;
CLLMDEF int cllm_count_tokens(const cllm_token_counter *tc, const char *text);
/* A count function for cllm_token_counter over a tokenizer: ctx is a const cllm_tokenizer *
   (e.g. &local_lm.tokenizer); counts the tokens of text, special tokens not added. */
CLLMDEF int cllm_tokenizer_count(void *tokenizer, const char *text);
/* The same over a tiktoken encoding: ctx is a const cllm_tiktoken *; invalid UTF-8 counts 0. */
CLLMDEF int cllm_tiktoken_count(void *tiktoken, const char *text);

/* Built-in metrics (ctx in brackets). Look them up by name with cllm_metric_builtin.
   token_amount   [cllm_token_counter* or NULL] tokens of the session's assistant messages joined by " ", / 1000 (v2)
   interactivity  [cllm_judge*]  the LLM judge's score in [0, 1] on the whole session (CollabLLM v2)
   interactivity_v1 [cllm_judge*] x/3 for the judge's x in 1..3 on the follow-up (the candidate and what
                  came after), the history shown as context: CollabLLM v1's reward term (paper Table 1's
                  ITR is 2(x - 2.5) = 6 m - 5 of this value m, in evaluation)
   accuracy       [cllm_judge*]  the judge's 0/1 verdict on the session vs the task's completion
   exact_match    [cllm_match_config* or NULL] 0/1: the final answer equals the task's completion
   bleu           [cllm_judge*]  NLTK sentence BLEU, character level, of the final document vs the
                  completion; the judge extracts the document (as CollabLLM always does)
   bleu_last      [unused] the same BLEU of the last assistant message, with no extraction
   pass_rate      [cllm_code_config*] 1 when the final code passes every unit test of the task, else 0
                  (BigCodeBench's untrusted_check, as CollabLLM); or the fraction passed. Runs that code
                  under limits but NOT in a sandbox (section 6 of the manual)
   Extraction is never silently skipped: bleu and pass_rate fail with an error when no extractor is
   given, unless the caller asks for no extraction (bleu_last; cllm_code_config.no_extract). */
CLLMDEF cllm_result cllm_metric_token_amount(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_interactivity(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_interactivity_v1(void *ctx, const cllm_session *s, int n, double *scores,
                                                 cllm_err *err);
CLLMDEF cllm_result cllm_metric_accuracy(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_exact_match(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_bleu(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_bleu_last(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
CLLMDEF cllm_result cllm_metric_pass_rate(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err);
/* Fills m->name and m->fn for a built-in name (weight and ctx are left to the caller). */
CLLMDEF cllm_result cllm_metric_builtin(const char *name, cllm_metric *m, cllm_err *err);

/* The final answer of a session: its last assistant message, or the text after the last occurrence of answer_prefix
   in it when one is set. Matching ignores case, surrounding whitespace and repeated spaces; numeric compares numbers
   with a tolerance when both sides are numbers. */
typedef struct cllm_match_config {
    const char *answer_prefix;       /* e.g. "Answer:" (default: none, the whole message)         */
    int         numeric;             /* 1: compare as numbers when both parse (default 0)        */
    double      tolerance;           /* relative, for numeric (default 1e-6)                      */
} cllm_match_config;
CLLMDEF int cllm_answer_matches(const cllm_match_config *cfg, const char *answer, const char *reference);

/* What pass_rate scores. CollabLLM (v1 and v2) scores BigCodeBench's verdict: pass only when every test passes. */
typedef enum cllm_pass_rule {
    CLLM_PASS_ALL = 0,               /* 1 when every test passes, else 0 (the default)            */
    CLLM_PASS_FRACTION               /* the fraction of the tests that pass                       */
} cllm_pass_rule;

/* Runs a session's final code against the task's tests ("test": unittest source, as BigCodeBench) in a subprocess
   under limits, with no shell. THIS IS NOT A SANDBOX (manual section 6): use a container for untrusted tasks.
   BigCodeBench's own limits, which CollabLLM keeps, are 241 s and 30 GB (v1) or 300 GB (v2). */
typedef struct cllm_code_config {
    const char    *python;           /* interpreter (default "python3", looked up on PATH)        */
    double         timeout_s;        /* wall clock per run (default 10)                           */
    long           memory_mb;        /* address-space limit (default 2048)                        */
    cllm_pass_rule pass_rule;        /* all-or-nothing or the fraction (default CLLM_PASS_ALL)    */
    cllm_judge    *extractor;        /* the LLM that extracts the final code from the session
                                        (required unless no_extract)                             */
    int            no_extract;       /* 1: test the last ```python block of the last assistant
                                        message as it is (default 0: extract with extractor)     */
} cllm_code_config;

typedef enum cllm_mr_variant {
    CLLM_MR_PAPER = 0,               /* R* = sum_m w_m metric_m - min(lambda * tokens, 1)          */
    CLLM_MR_WEIGHTED_SUM = 1         /* R* = sum_m w_m metric_m (CollabLLM's code)                 */
} cllm_mr_variant;
typedef enum cllm_mr_preset {
    CLLM_MR_PRESET_MATH = 0,         /* paper Table 6: w=2, S=3, lambda 5e-4                      */
    CLLM_MR_PRESET_CODE,             /* w=2, S=3, lambda 5e-4                                     */
    CLLM_MR_PRESET_DOCUMENT          /* w=2, S=3, lambda 1e-4                                     */
} cllm_mr_preset;

typedef struct cllm_mr_config {
    int                window;       /* w: simulated exchanges after the candidate (0 = immediate) */
    int                samples;      /* S: forward samples averaged (>= 1)                        */
    cllm_mr_variant    variant;      /* default CLLM_MR_PAPER                                     */
    double             lambda;       /* paper variant: token cost; penalty = min(lambda * tokens, 1),
                                        tokens = candidate + simulated future, both roles, joined
                                        by "\n" and counted as one text (v1)                     */
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

/* MR of n candidates (paper Eq. 1-2). future_assistant plays the assistant in the futures: the
   policy itself (online training) or an API model (offline data generation, as in the paper).
   out: n results (free with cllm_mr_result_free). CLLM_OK when every item has a good sample. */
CLLMDEF cllm_result cllm_mr_score(const cllm_mr_config *cfg, const cllm_user_sim *user,
                                  const cllm_assistant *future_assistant, const cllm_mr_item *items, int n,
                                  cllm_mr_result *out, cllm_err *err);
CLLMDEF void        cllm_mr_result_free(cllm_mr_result *r);
/* R* of one sample from its metric values and token count (the pure aggregation). */
CLLMDEF double      cllm_mr_reward(const cllm_mr_config *cfg, const double *metric_values, int tokens);
/* MR of one candidate from futures simulated and scored already (e.g. CollabLLM's logged sessions and rewards):
   fill r->samples[s] (session, n_history, metrics, code; n_samples), get tokens, R* per sample, mr, std, n_ok. */
CLLMDEF cllm_result cllm_mr_from_samples(const cllm_mr_config *cfg, cllm_mr_result *r);

/* ============================================================================================ */
/* Data generation (paper B.1), SFT rows and DPO pairs, and evaluation (paper section 4)         */
/* ============================================================================================ */

/* Offline data generation (paper appendix B.1; the steps: section I.5): per task a conversation in
   which k candidates per turn are scored by MR and the best continues. Output: one JSON line per
   (turn, candidate) (data_fmt/records.md), kept across a crash; a rerun continues where it stopped. */
typedef struct cllm_datagen_config {
    cllm_mr_config mr;               /* how candidates are scored (set up with cllm_mr_config_init) */
    int            n_candidates;     /* k responses per turn (default 2, CollabLLM's CLI)          */
    const cllm_assistant *proactive; /* samples the first floor(k * proactive_ratio) candidates of each turn: the
                                        same model with proactive = 1, as CollabLLM mixes them (NULL: none) */
    double         proactive_ratio;  /* default 0.5 (CollabLLM v2's proact_prompt_ratio; v1: 1 of 2) */
    int            max_turns;        /* user turns per conversation (default 7 = 14 messages)      */
    const char    *task_desc;        /* cllm_goal.task_desc for every task (default "a task")     */
    int            show_reference;   /* 1: the simulator also sees single_turn_completion         */
    int            shard, n_shards;  /* process tasks with index % n_shards == shard (default 0/1) */
    int            verbose;          /* 1: a progress line per task on stderr                       */
} cllm_datagen_config;

/* candidates samples the k responses (k copies of the history: it must sample); future_assistant
   plays the assistant in MR's futures (NULL: candidates, as in the paper). */
CLLMDEF cllm_result cllm_datagen_run(const cllm_datagen_config *cfg, const cllm_user_sim *user,
                                     const cllm_assistant *candidates, const cllm_assistant *future_assistant,
                                     const cllm_task *tasks, int n_tasks, const char *out_path, cllm_err *err);

/* Records to SFT rows (data_fmt/sft.md) and DPO pairs (data_fmt/dpo.md); either path may be NULL; the counts go
   to n_sft / n_pairs (optional). The input is recognised by its fields (data_fmt/published.md): flat multiturn rows
   (our records, or the published collabllm/collabllm-multiturn-* rows) or CollabLLM v1's DPO rows. */
typedef enum cllm_gap_preset {       /* the least MR gap of a pair, as CollabLLM's scripts set it */
    CLLM_GAP_DEFAULT = 0,            /* 0.02                                                      */
    CLLM_GAP_V1_MATH,                /* 0.05: v1's offline DPO on MATH (scripts/config.sh)        */
    CLLM_GAP_V1,                     /* 0.02: v1 on Medium and BigCodeBench                       */
    CLLM_GAP_V2,                     /* 0.02: v2's scripts/train/offline_dpo.py                   */
    CLLM_GAP_NONE                    /* 0: all-tie turns give pairs too (v2's to_dpo_dataset default) */
} cllm_gap_preset;
typedef enum cllm_pair_rules {       /* which candidates of a turn become chosen and rejected      */
    CLLM_PAIRS_RULES_V2 = 0,         /* v2: the first of the highest score, the last of the lowest */
    CLLM_PAIRS_RULES_V1              /* v1: the first highest and first lowest; a full tie by reward_std */
} cllm_pair_rules;
typedef enum cllm_pairs_format {     /* the rows written                                          */
    CLLM_PAIRS_TRL = 0,              /* TRL's conversational form, with conv_id, turn_id (default) */
    CLLM_PAIRS_COLLABLLM_V2,         /* v2's rows exactly: DPO chosen/rejected as strings         */
    CLLM_PAIRS_COLLABLLM_V1          /* DPO pairs as v1's rows (idx, chosen_eval, ...)            */
} cllm_pairs_format;
typedef struct cllm_pairs_config {
    double            min_gap;       /* keep a pair when chosen - rejected >= min_gap (default: the
                                        preset's; negative = 0)                                  */
    const char       *system_prompt; /* a system message first in every row (default none; v1 DPO
                                        rows never hold one); cllm_system_prompt_collabllm()     */
    cllm_gap_preset   gap_preset;    /* used when min_gap is 0 (default 0.02)                     */
    cllm_pair_rules   rules;         /* for flat rows (default v2); v1 rows are already chosen    */
    cllm_pairs_format format;        /* default CLLM_PAIRS_TRL                                    */
} cllm_pairs_config;
CLLMDEF cllm_result cllm_build_pairs(const char *records_path, const cllm_pairs_config *cfg, const char *sft_path,
                                     const char *dpo_path, int *n_sft, int *n_pairs, cllm_err *err);
CLLMDEF double      cllm_pairs_min_gap(const cllm_pairs_config *cfg);   /* the gap cfg asks for */
/* CollabLLM's system prompt for training rows, in our own words (v2 adds its own to SFT and DPO rows). */
CLLMDEF const char *cllm_system_prompt_collabllm(void);
/* The task description CollabLLM v2 gives each dataset ("math-hard", "medium", "bigcodebench", "abg-coqa"), or
   NULL for another name (data_fmt/task.md). */
CLLMDEF const char *cllm_task_desc_of_dataset(const char *dataset);
/* Flat multiturn rows (our records or published ones) rewritten in the published schema of the
   collabllm/collabllm-multiturn-* datasets (data_fmt/published.md): our fields dropped, metrics named as CollabLLM
   names them ("document->bleu", ...). Rows without a score are left out; their count goes to n_skipped. */
CLLMDEF cllm_result cllm_records_to_collabllm(const char *records_path, const char *out_path, int *n_rows,
                                              int *n_skipped, cllm_err *err);
/* The name CollabLLM v2 gives one of our metrics ("bleu" -> "document->bleu"); other names come back unchanged. */
CLLMDEF const char *cllm_metric_name_collabllm(const char *name);

/* Evaluation (paper section 4): one simulated conversation per task, then the metrics; a JSON line
   per task (data_fmt/eval.md) and the means. An error when any conversation failed. */
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
/* Objectives: DPO, PPO, GRPO (defined with their math in Part I, section I.3)                  */
/* ============================================================================================ */

/* The model-independent math of preference and RL training, on plain double arrays, so that results match PyTorch
   float64 to ~1e-15. Token arrays are row-major (B, T). A mask is a weight per token as torch uses it: masked_mean(x,
   m) = sum(x m) / sum(m). In the input structs every number is used as given (0 is 0; the comment names the library's
   value), an enum field's zero is the default, and an optional array may be NULL. */

/* ---- DPO (Rafailov et al. 2023), as TRL v0.19.1 DPOTrainer.dpo_loss -------------------------- */

typedef enum cllm_dpo_loss_type {
    CLLM_DPO_SIGMOID = 0,   /* the paper's loss; label_smoothing > 0 makes it cDPO                  */
    CLLM_DPO_ROBUST,        /* robust DPO, unbiased under a label-flip rate label_smoothing < 0.5   */
    CLLM_DPO_HINGE,         /* SLiC's hinge on the margin                                           */
    CLLM_DPO_IPO            /* IPO: the margin regressed onto 1/(2 beta)                            */
} cllm_dpo_loss_type;

typedef struct cllm_dpo_config {
    cllm_dpo_loss_type loss_type; /* default CLLM_DPO_SIGMOID                                       */
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

/* The DPO loss of n pairs of summed completion log-probs (IPO: per-token averages), its metrics
   and gradients; the reference arrays may be NULL with reference_free. cfg NULL = defaults. */
CLLMDEF cllm_result cllm_dpo_loss(const cllm_dpo_config *cfg, int n,
                                  const double *policy_chosen_logps, const double *policy_rejected_logps,
                                  const double *ref_chosen_logps, const double *ref_rejected_logps,
                                  cllm_dpo_out *out, cllm_err *err);

/* ---- PPO pieces: per-token KL penalty and rewards, GAE, whitening, the clipped losses -------- */

typedef enum cllm_kl_estimator {
    CLLM_KL_K1 = 0,  /* logp - ref                               (TRL default; can be negative)    */
    CLLM_KL_K2,      /* (logp - ref)^2 / 2                       (OpenRLHF / verl "k2", "mse")     */
    CLLM_KL_K3       /* exp(ref - logp) - (ref - logp) - 1 >= 0  (TRL "k3", verl "low_var_kl")     */
} cllm_kl_estimator;
/* One token's estimate of KL(policy || reference) from the two log-probs of the sampled token. */
CLLMDEF double cllm_kl_estimate(double logp, double ref_logp, cllm_kl_estimator estimator);
/* TRL's last position of a response row of L tokens (stop_id truncation; -1 when empty). */
CLLMDEF int cllm_ppo_sequence_end(const int *response, int L, int pad_id, int stop_id);

typedef enum cllm_reward_placement {
    CLLM_REWARD_AFTER_EOS = 0,  /* TRL v0.19 PPOTrainer: the slot after the end, seen by the critic  */
    CLLM_REWARD_LAST_TOKEN      /* legacy TRL, OpenRLHF, verl: the last response token               */
} cllm_reward_placement;

typedef struct cllm_ppo_rewards_input {
    int                   B, T;         /* responses and response tokens (each >= 1)                */
    const double         *logprobs;     /* (B*T) the policy's log-prob of each sampled token        */
    const double         *ref_logprobs; /* (B*T) the reference's                                    */
    const double         *scores;       /* (B) the reward of each response                          */
    const int            *seq_end;      /* (B) last positions in [-1, T-1] (cllm_ppo_sequence_end)  */
    double                kl_coef;      /* weight of the KL penalty (TRL: 0.05)                     */
    cllm_kl_estimator     kl_estimator; /* default CLLM_KL_K1                                       */
    cllm_reward_placement placement;    /* where the score lands; default CLLM_REWARD_AFTER_EOS     */
} cllm_ppo_rewards_input;
/* Per-token rewards -kl_coef KL, plus each score at its placement: rewards and kl (may be NULL) receive B*T values. */
CLLMDEF cllm_result cllm_ppo_rewards(const cllm_ppo_rewards_input *in, double *rewards, double *kl, cllm_err *err);

/* In place x = (x - mean) / std weighted by mask (NULL = all 1); keep_mean: TRL's shift_mean=False; biased: OpenRLHF */
CLLMDEF cllm_result cllm_masked_whiten(double *x, const double *mask, size_t n, int keep_mean, int biased,
                                       cllm_err *err);

typedef enum cllm_gae_mode {
    CLLM_GAE_TRL = 0, /* every position takes part; the mask selects whitening statistics (TRL v0.19) */
    CLLM_GAE_SKIP     /* a masked position passes V and A through (verl)                          */
} cllm_gae_mode;

typedef struct cllm_gae_input {
    int           B, T;      /* rows and tokens (each >= 1)                                         */
    const double *rewards;   /* (B*T) per-token rewards r_t                                         */
    const double *values;    /* (B*T) the critic's values V_t                                       */
    const double *mask;      /* (B*T) 1 = a response token; NULL = all 1                            */
    double        gamma;     /* discount (TRL: 1)                                                   */
    double        lam;       /* GAE's lambda (TRL: 0.95)                                            */
    cllm_gae_mode mode;      /* how masked positions count; default CLLM_GAE_TRL                    */
    int           whiten;    /* 1: whiten the advantages over the mask (default 0)                  */
} cllm_gae_input;
/* Generalised advantage estimation: advantages and returns receive B*T values. */
CLLMDEF cllm_result cllm_gae(const cllm_gae_input *in, double *advantages, double *returns, cllm_err *err);

typedef struct cllm_ppo_loss_input {
    int           B, T;            /* rows and tokens (each >= 1)                                   */
    const double *logprobs;        /* (B*T) the current policy's log-probs                          */
    const double *old_logprobs;    /* (B*T) the rollout policy's                                    */
    const double *advantages;      /* (B*T)                                                         */
    const double *values;          /* (B*T) the current critic's values                             */
    const double *old_values;      /* (B*T) the rollout critic's                                    */
    const double *returns;         /* (B*T)                                                         */
    const double *mask;            /* (B*T) the policy mask (TRL's ~pm: t <= end)                   */
    const double *value_mask;      /* (B*T) the critic's (~pm1: t <= end + 1); NULL = mask          */
    double        cliprange;       /* of the ratio (TRL: 0.2)                                       */
    double        cliprange_value; /* of the value around old_values (TRL: 0.2)                     */
    double        vf_coef;         /* weight of the value loss (TRL: 0.1)                           */
} cllm_ppo_loss_input;

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
/* TRL v0.19 PPOTrainer's clipped policy and value losses on one micro-batch, and their gradients. */
CLLMDEF cllm_result cllm_ppo_loss(const cllm_ppo_loss_input *in, cllm_ppo_loss_out *out, cllm_err *err);

/* Legacy TRL (<= 0.11, CollabLLM's PPO script): scores scaled by the running moments of every
   score so far, and the adaptive KL controller. */
typedef enum cllm_score_scaling {
    CLLM_SCORE_RAW = 0,      /* the scores as they are                                              */
    CLLM_SCORE_SCALE,        /* scores / (running std + eps)            (use_score_scaling)         */
    CLLM_SCORE_NORM          /* (scores - running mean) / (std + eps)   (use_score_norm)            */
} cllm_score_scaling;
typedef struct cllm_running_moments {
    double mean, var, std, count;
} cllm_running_moments;
CLLMDEF void cllm_running_moments_init(cllm_running_moments *rm);
/* Merges x[0..n) into rm; *batch_mean and *batch_std (optional) receive the batch's own. */
CLLMDEF void cllm_running_moments_update(cllm_running_moments *rm, const double *x, int n, double *batch_mean,
                                         double *batch_std);
/* coef * (1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon). */
CLLMDEF double cllm_adaptive_kl_update(double coef, double kl, double target, double horizon, double n_steps);

/* ---- GRPO / RLOO: advantages from the rewards of G samples per prompt, and the loss ---------- */

typedef enum cllm_group_estimator {
    CLLM_GROUP_GRPO = 0,  /* A_i = r_i - mean(group), / (std(group) + eps) if scale            */
    CLLM_GROUP_RLOO       /* A_i = r_i - (sum(group) - r_i) / (G-1)  (leave-one-out baseline)  */
} cllm_group_estimator;
/* n rewards in consecutive groups of group_size (n a multiple of it) -> n advantages. */
CLLMDEF cllm_result cllm_grpo_advantages(int n, const double *rewards, int group_size, cllm_group_estimator estimator,
                                         int scale, double eps, double *advantages, cllm_err *err);

typedef enum cllm_grpo_loss_type {
    CLLM_GRPO_BNPO = 0,          /* sum of the token losses / tokens in the micro-batch (TRL v0.19) */
    CLLM_GRPO_GRPO,              /* mean over sequences of (sum of its token losses / its length)  */
    CLLM_GRPO_DR_GRPO            /* sum / (sequences x max_completion_length)   (Dr. GRPO)         */
} cllm_grpo_loss_type;

typedef struct cllm_grpo_loss_input {
    int                 B, T;            /* sequences and tokens (each >= 1)                        */
    const double       *logprobs;        /* (B*T) the current policy's log-probs                    */
    const double       *old_logprobs;    /* (B*T) the sampling policy's                             */
    const double       *ref_logprobs;    /* (B*T) the reference's; may be NULL when beta is 0       */
    const double       *advantages;      /* (B) one per sequence                                    */
    const double       *mask;            /* (B*T) 1 = a completion token                            */
    double              beta;            /* weight of the k3 KL term (TRL: 0)                       */
    double              eps_low;         /* clipping below (TRL: 0.2)                               */
    double              eps_high;        /* clipping above (TRL: = eps_low)                         */
    cllm_grpo_loss_type loss_type;       /* aggregation; default CLLM_GRPO_BNPO                     */
    int                 max_completion_length; /* Dr. GRPO's constant (dr_grpo only)                */
} cllm_grpo_loss_input;

typedef struct cllm_grpo_loss_out {
    double  loss;
    double  kl;                  /* mean k3 over the masked tokens (0 without reference log-probs) */
    double  clip_ratio;          /* fraction of masked tokens where the clipped term is the active one */
    double *d_logprobs;          /* optional (B*T): d loss / d logprobs                           */
} cllm_grpo_loss_out;
/* TRL v0.19 GRPOTrainer's token-level clipped loss + beta k3, and its gradient. */
CLLMDEF cllm_result cllm_grpo_loss(const cllm_grpo_loss_input *in, cllm_grpo_loss_out *out, cllm_err *err);

/* ============================================================================================ */
/* Training: SFT, DPO, LoRA, checkpoints                                                        */
/* ============================================================================================ */

/* The paper's training stages (SFT, then offline DPO) on one loop that online DPO, PPO and GRPO reuse: shuffled
   epochs, gradient accumulation, clipping, a learning-rate schedule, AdamW, metrics, and atomic checkpoints that
   resume bit-identically (data_fmt/train.md). Where the Hugging Face Trainer / TRL v0.19 define a behaviour we follow
   it and say so at the definition (the steps: section I.6; the loop, its files and memory: section II.10). */

/* ---- LoRA adapters (PEFT) -------------------------------------------------------------------- */

/* A LoRA adapter on a linear layer y = x W^T (+ b) adds (alpha / r) * B A dropout(x): A (r, in) and B (out, r) are
   trained, W is frozen (Hu et al. 2021; PEFT's LoraLayer). Initialisation: section II.10; dropout: section I.1. */
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
    double   dropout;        /* on the adapter input in training (default 0.1, paper Table 6; negative = none) */
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
/* Adapters saved in PEFT's format (adapter_config.json + adapter_model.safetensors), attached to m. */
CLLMDEF cllm_result cllm_lora_load(cllm_lora *lo, cllm_model *m, const char *dir, cllm_err *err);
/* The adapters in PEFT's format; base_model: adapter_config.json's base_model_name_or_path (or NULL). */
CLLMDEF cllm_result cllm_lora_save(const cllm_lora *lo, const char *dir, const char *base_model, cllm_err *err);
/* PEFT's merge_and_unload: W += (alpha / r) B A, then lo is detached (it keeps its weights). */
CLLMDEF cllm_result cllm_lora_merge(cllm_lora *lo, cllm_err *err);
/* Detaches lo from its model (if attached) and releases it; safe on a zeroed struct. */
CLLMDEF void        cllm_lora_free(cllm_lora *lo);
/* PEFT name of target t (0..6, in cllm_lora_target bit order): "q_proj", ..., "down_proj". */
CLLMDEF const char *cllm_lora_target_name(int t);
/* "q,k,v,o,gate,up,down" (or the *_proj names) -> cllm_lora_target bits; "all" = every one. */
CLLMDEF cllm_result cllm_lora_parse_targets(const char *list, unsigned *targets, cllm_err *err);

/* ---- tokenized training examples ------------------------------------------------------------- */

/* One sequence: token ids and, per token, whether its log-probability counts (a target; never
   the first token, which nothing predicts). n_prompt tokens come before the completion. */
typedef struct cllm_train_seq {
    int           *ids;      /* (n) owned                                                          */
    unsigned char *target;   /* (n) 1 = a target                                                   */
    int            n;
    int            n_prompt;
} cllm_train_seq;
CLLMDEF void cllm_train_seq_free(cllm_train_seq *s);
/* Number of targets (tokens at positions >= 1 marked as targets). */
CLLMDEF int  cllm_train_seq_targets(const cllm_train_seq *s);
/* Cuts s to max_length, keeping the prompt's last keep_prompt tokens (< 0: as many as fit) and the
   completion's first tokens; returns 1 if anything was cut. */
CLLMDEF int  cllm_train_seq_truncate(cllm_train_seq *s, int max_length, int keep_prompt);

/* SFT: the conversation through the chat template; targets = the template's assistant mask. */
CLLMDEF cllm_result cllm_sft_seq(const cllm_tokenizer *tok, const cllm_message *msgs, int n,
                                 cllm_train_seq *seq, cllm_err *err);
/* Which tokens of a DPO completion are scored (data_fmt/train.md, "Inputs and tokenization"). */
typedef enum cllm_completion_tokens {
    CLLM_COMPLETION_TOKENS_TURN = 0,  /* default: the turn as the model emits it, content and end-of-turn token
                                         (ChatML content <|im_end|>); TRL 0.10.1, CollabLLM v1                  */
    CLLM_COMPLETION_TOKENS_TRL        /* TRL >= 0.19 DPOTrainer: the rendered text after the prompt, tokenized
                                         apart, then eos_token_id (content <|im_end|> \n <|im_end|>); CollabLLM v2 */
} cllm_completion_tokens;
/* DPO: a completion after a prompt through the chat template; targets = its tokens as `tokens` says. */
CLLMDEF cllm_result cllm_completion_seq(const cllm_tokenizer *tok, const cllm_message *prompt, int n_prompt,
                                        const cllm_message *completion, int n_completion,
                                        cllm_completion_tokens tokens, cllm_train_seq *seq, cllm_err *err);

/* SFT rows (data_fmt/train.md): JSONL lines {"messages": [...]}, each through cllm_sft_seq and cut to
   max_length (0 = 1024, TRL's). */
typedef struct cllm_sft_data {
    cllm_train_seq *rows;
    int             n;
    int             n_truncated;
} cllm_sft_data;
CLLMDEF cllm_result cllm_sft_data_load(cllm_sft_data *d, const cllm_tokenizer *tok, const char *path, int max_length,
                                      cllm_err *err);
CLLMDEF void        cllm_sft_data_free(cllm_sft_data *d);

/* DPO pairs (data_fmt/train.md): TRL's conversational preference format, as cllm_build_pairs writes it. */
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
typedef struct cllm_dpo_data_config {
    int                    max_length;          /* tokens per sequence after truncation (default 1024, TRL's) */
    cllm_completion_tokens completion_tokens;   /* default CLLM_COMPLETION_TOKENS_TURN                       */
} cllm_dpo_data_config;
/* cfg NULL = every default. */
CLLMDEF cllm_result cllm_dpo_data_load(cllm_dpo_data *d, const cllm_tokenizer *tok, const char *path,
                                      const cllm_dpo_data_config *cfg, cllm_err *err);
CLLMDEF void        cllm_dpo_data_free(cllm_dpo_data *d);

/* Summed target log-probs of n sequences under m, batch_size at a time (0 = 8), no gradients, no dropout. */
CLLMDEF cllm_result cllm_seq_logps(cllm_model *m, const cllm_train_seq *const *seqs, int n, int batch_size,
                                   double *logps, cllm_err *err);
/* TRL's precompute_ref_log_probs: the pairs' reference logps, into d and (if set) out_path. */
CLLMDEF cllm_result cllm_dpo_precompute_ref(cllm_model *ref, cllm_dpo_data *d, int batch_size,
                                            const char *in_path, const char *out_path, cllm_err *err);

/* ---- the training loop ----------------------------------------------------------------------- */

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
    cllm_result (*step)(void *ctx, struct cllm_trainer *tr, const int *idx, int n, cllm_train_stats *st,
                        cllm_err *err);
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

/* Sets up a run of task on m (and lora, attached to m); nothing is read or written yet. */
CLLMDEF cllm_result cllm_trainer_init(cllm_trainer *tr, cllm_model *m, cllm_lora *lora, const cllm_train_task *task,
                                      const cllm_train_config *cfg, cllm_err *err);
/* With cfg.resume, continues from OUT/latest if there is one (*resumed, optional, = 1). */
CLLMDEF cllm_result cllm_trainer_resume(cllm_trainer *tr, int *resumed, cllm_err *err);
/* Runs steps until total_steps (or stop_after / on_step), then writes a checkpoint. */
CLLMDEF cllm_result cllm_trainer_run(cllm_trainer *tr, cllm_err *err);
/* The pieces of a step, for loops that are not "one micro-step per batch": zero the trained
   gradients; after backward passes, check, clip, update, log and checkpoint as one step. */
CLLMDEF cllm_result cllm_trainer_zero_grad(cllm_trainer *tr, cllm_err *err);
CLLMDEF cllm_result cllm_trainer_apply(cllm_trainer *tr, const cllm_train_stats *stats, cllm_err *err);
/* One AdamW update at this step's learning rate (*lr, optional), for a task's own step function. */
CLLMDEF cllm_result cllm_trainer_update(cllm_trainer *tr, double *lr, cllm_err *err);
/* A checkpoint of the current step (OUT/ckpt-N, then OUT/latest), pruning old ones. */
CLLMDEF cllm_result cllm_trainer_save(cllm_trainer *tr, cllm_err *err);
/* The trained model as a Hugging Face directory (LoRA merged; the PEFT files into adapter_dir if set). */
CLLMDEF cllm_result cllm_trainer_save_final(cllm_trainer *tr, const char *dir, const char *adapter_dir, cllm_err *err);
CLLMDEF void        cllm_trainer_free(cllm_trainer *tr);

/* ---- SFT and offline DPO --------------------------------------------------------------------- */

/* One SFT micro-batch: the causal-LM loss, backward of its sum / norm (backward 0: forward only). */
CLLMDEF cllm_result cllm_sft_micro_step(cllm_model *m, const cllm_train_seq *const *rows, int n, double norm,
                                        int backward, cllm_train_stats *st, cllm_err *err);

/* One DPO micro-batch of n pairs: cllm_dpo_loss, TRL's metrics, backward of its sum / norm. */
CLLMDEF cllm_result cllm_dpo_micro_step(cllm_model *m, cllm_model *ref, const cllm_dpo_pair *const *pairs, int n,
                                        const cllm_dpo_config *cfg, double norm, cllm_train_stats *st, cllm_err *err);
/* A DPO evaluation pass, no update: logps (4n) gets the summed completion logps of the policy's chosen, rejected,
   then the reference's chosen, rejected (pairs' values, else ref, else m); out (its arrays optional) the per-pair
   losses and rewards of cllm_dpo_loss. TRL's DPOTrainer.evaluate, per pair. batch_size 0 = 8. */
CLLMDEF cllm_result cllm_dpo_eval(cllm_model *m, cllm_model *ref, const cllm_dpo_data *d, const cllm_dpo_config *cfg,
                                  int batch_size, double *logps, cllm_dpo_out *out, cllm_err *err);

/* Whole runs: init, resume (cfg.resume), run, and the final model in OUT/final (+ OUT/adapter
   with LoRA). lora may be NULL; ref may be NULL (see cllm_dpo_micro_step). */
CLLMDEF cllm_result cllm_train_sft(cllm_model *m, cllm_lora *lora, const cllm_sft_data *d, const cllm_train_config *cfg,
                                   cllm_err *err);
CLLMDEF cllm_result cllm_train_dpo(cllm_model *m, cllm_lora *lora, cllm_model *ref, const cllm_dpo_data *d,
                                   const cllm_dpo_config *dpo, const cllm_train_config *cfg, cllm_err *err);

/* ============================================================================================ */
/* Online training: online DPO, PPO, GRPO with the multiturn-aware reward                       */
/* ============================================================================================ */

/* The paper's online stages: at every step the policy answers the step's prompts, MR scores the answers (cllm_mr_score,
   the policy itself as the future assistant of the simulated futures) and the policy is updated by online DPO, PPO or
   GRPO (TRL v0.19's OnlineDPOTrainer, PPOTrainer, GRPOTrainer; compared in data_fmt/train_online.md). All three run
   on cllm_trainer, train on the response's token ids as generated, and replay the same samples when resumed (I.6). */

/* ---- prompts: CollabLLM's inputs form -------------------------------------------------------- */

/* One training prompt: a conversation ending with the user's turn, and its task. */
typedef struct cllm_online_prompt {
    cllm_conv  history;      /* the messages so far, the last one the user's (owned)              */
    cllm_task  task;         /* single_turn_prompt / _completion and the line's other fields (owned) */
    cllm_goal  goal;         /* the simulated user's goal: prompt = single_turn_prompt, reference =
                                single_turn_completion with show_reference, task_desc from the config (borrowed) */
    long       conv_id;      /* records: conv_id; tasks: the task's index in its file             */
    int        turn_id;      /* history.n, CollabLLM's len(prompt)                                */
} cllm_online_prompt;

typedef struct cllm_online_prompts {
    cllm_online_prompt *items;   /* n prompts (owned)                                             */
    int                 n;
} cllm_online_prompts;

typedef struct cllm_prompts_config {
    const char *task_desc;       /* cllm_goal.task_desc of every prompt (default "a task"); must outlive the prompts */
    int         show_reference;  /* 1: the simulator also sees single_turn_completion             */
} cllm_prompts_config;

/* From a task file: each task's simulated opening message, cached in cache_path if set. Appends to p. */
CLLMDEF cllm_result cllm_online_prompts_from_tasks(cllm_online_prompts *p, const cllm_task *tasks, int n_tasks,
                                                   const cllm_user_sim *user, const cllm_prompts_config *cfg,
                                                   const char *cache_path, cllm_err *err);
/* From MR records (data_fmt/records.md) or a prompts file: one prompt per (conv_id, turn_id). Appends to p. */
CLLMDEF cllm_result cllm_online_prompts_read(cllm_online_prompts *p, const char *path, const cllm_prompts_config *cfg,
                                             cllm_err *err);
/* One JSON line per prompt, written atomically (data_fmt/train_prompts.md). */
CLLMDEF cllm_result cllm_online_prompts_write(const cllm_online_prompts *p, const char *path, cllm_err *err);
CLLMDEF void        cllm_online_prompts_free(cllm_online_prompts *p);

/* ---- what the three methods share ------------------------------------------------------------ */

typedef struct cllm_rollout_config {
    cllm_local_gen_config gen;   /* how the trained responses are sampled; zero fields take the method's defaults
                                    (TRL's): online DPO T 0.9, top_k 50 (negative = off), 64 tokens; PPO T 0.7, 53
                                    tokens; GRPO T 1, 256 tokens; sampler.seed 0 = the trainer's seed */
    const char           *system_prompt; /* first in every prompt the policy answers here, never
                                    stored (default none; CollabLLM prepends its SYSTEM_PROMPT)    */
    const cllm_mr_config *mr;    /* the reward (required)                                         */
    const cllm_user_sim  *user;  /* MR's simulated user (required when mr->window > 0)            */
    const cllm_assistant *future;/* MR's future assistant (required when mr->window > 0): the policy
                                    itself, e.g. a cllm_local_assistant over the trained lm        */
    cllm_local_lm        *user_lm; /* a local simulator's model: its seed counter is set with the
                                    policy's (optional; see "Seeds" in section I.6)               */
    double                logprob_tol; /* PPO and GRPO: the sampler's log-probs must equal a forward
                                    pass's at the sampling temperature within this, or the step
                                    fails (TRL pitfall: ratio != 1 at the first update). Default
                                    1e-4; negative = no check; skipped with top_k or top_p on    */
} cllm_rollout_config;

/* ---- online DPO ------------------------------------------------------------------------------ */

typedef struct cllm_online_dpo_config {
    cllm_rollout_config rollout;
    cllm_dpo_loss_type loss_type; /* CLLM_DPO_SIGMOID (default) or CLLM_DPO_IPO on summed log-probs
                                    (TRL's OnlineDPOTrainer; its DPOTrainer averages per token)   */
    double beta;                 /* default 0.1                                                   */
    int    max_length;           /* prompt + response tokens; a longer pair loses the start of its
                                    prompt (default 512, TRL's max_length)                         */
    double rpo_alpha;            /* + alpha x the chosen responses' NLL per token (RPO, as cllm_dpo_config.rpo_alpha;
                                    not in TRL's OnlineDPOTrainer). Default 0 = off                */
} cllm_online_dpo_config;

/* Online DPO on prompts (TRL's OnlineDPOTrainer with MR as the judge). policy: the model trained
   (lora, if given, attached to it); ref: a frozen reference, or NULL with LoRA (the base model). */
CLLMDEF cllm_result cllm_train_online_dpo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref,
                                          const cllm_online_prompts *prompts, const cllm_online_dpo_config *cfg,
                                          const cllm_train_config *train, cllm_err *err);

/* ---- PPO ------------------------------------------------------------------------------------- */

/* The critic of legacy TRL's AutoModelForCausalLMWithValueHead: Linear(C, 1) on the policy
   trunk's final normed hidden state (cllm_model.acts.lnf), trained with the policy. */
typedef struct cllm_value_head {
    int         C;               /* hidden size                                                   */
    cllm_float *w;               /* (C + 1): v_head.summary.weight (1, C), then v_head.summary.bias */
    cllm_float *grad, *m, *v;    /* (C + 1) each, in w's allocation: gradient and AdamW moments  */
} cllm_value_head;
/* A fresh head initialised as torch's nn.Linear. */
CLLMDEF cllm_result cllm_value_head_init(cllm_value_head *vh, int C, uint64_t seed, cllm_err *err);
CLLMDEF void        cllm_value_head_free(cllm_value_head *vh);
/* values[i] = w . h[i] + b for n rows h (n, C). */
CLLMDEF void        cllm_value_head_forward(const cllm_value_head *vh, const cllm_float *h, int n, double *values);
/* Accumulates grad += sum_i dvalues[i] (h[i], 1) and, if dh is not NULL, dh[i] += dvalues[i] w. */
CLLMDEF void        cllm_value_head_backward(cllm_value_head *vh, const cllm_float *h, int n, const double *dvalues,
                                             cllm_float *dh);

typedef struct cllm_ppo_config {
    cllm_rollout_config rollout;
    int    ppo_epochs;           /* passes over each rollout (default 4, TRL's num_ppo_epochs)    */
    int    mini_batches;         /* AdamW updates per pass (default 1, TRL's num_mini_batches). A
                                    rollout is batch_size x grad_accum x mini_batches prompts; a
                                    mini-batch accumulates grad_accum micro-batches of batch_size */
    double kl_coef;              /* default 0.05; negative = 0                                    */
    cllm_kl_estimator kl_estimator; /* CLLM_KL_K1 (default) or CLLM_KL_K3                         */
    double cliprange;            /* default 0.2                                                   */
    double cliprange_value;      /* default 0.2                                                   */
    double vf_coef;              /* default 0.1                                                   */
    double gamma;                /* default 1; negative = 0                                       */
    double lam;                  /* default 0.95; negative = 0                                    */
    int    whiten_rewards;       /* 1: whiten the per-token rewards first (TRL's option; default 0) */
    cllm_reward_placement reward_placement; /* default CLLM_REWARD_AFTER_EOS (TRL v0.19: the slot
                                    after the end, seen only by the critic); CLLM_REWARD_LAST_TOKEN
                                    as legacy TRL, OpenRLHF, verl                                 */
    int    pad_is_eos;           /* 1: the token that ended a response counts as padding, as with
                                    CollabLLM's pad_token = eos_token: it is never trained and the
                                    score lands on its slot (default 0: pad != eos)                */
    int    biased_whiten;        /* 1: whiten advantages with the biased variance (OpenRLHF);
                                    default 0: unbiased (TRL, verl)                                */
    double missing_eos_penalty;  /* subtracted from the score of a response that did not end with
                                    an end-of-turn / EOS token (default 0 = none, as TRL)         */
    /* Legacy TRL's PPOTrainer (<= 0.11), which CollabLLM's PPO script uses: */
    cllm_score_scaling score_scaling; /* default CLLM_SCORE_RAW; CollabLLM sets CLLM_SCORE_SCALE.
                                    The running moments of every score so far are checkpointed */
    double kl_target;            /* > 0: its adaptive KL controller (cllm_adaptive_kl_update after
                                    each step, KL = the rollout's mean summed KL, n its prompts),
                                    kl_coef being the initial value (legacy: 0.2, target 6).
                                    Default 0 = a fixed kl_coef (TRL v0.19)                     */
    double kl_horizon;           /* default 10000                                                 */
} cllm_ppo_config;

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
/* TRL's rollout arithmetic, in place: masks, per-token rewards, GAE, whitened advantages. cfg NULL = TRL's defaults. */
CLLMDEF cllm_result cllm_ppo_prepare(const cllm_ppo_config *cfg, cllm_ppo_rollout *r, cllm_err *err);
/* cllm_ppo_loss on rollout rows rows[0..n) given the current log-probs and values there (n*L). */
CLLMDEF cllm_result cllm_ppo_rollout_loss(const cllm_ppo_config *cfg, const cllm_ppo_rollout *r, const int *rows, int n,
                                          double *logprobs, double *values, cllm_ppo_loss_out *out, cllm_err *err);

/* PPO on prompts (TRL v0.19's PPOTrainer, MR as the reward); vh: the value head (NULL: a fresh one). */
CLLMDEF cllm_result cllm_train_ppo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref, cllm_value_head *vh,
                                   const cllm_online_prompts *prompts, const cllm_ppo_config *cfg,
                                   const cllm_train_config *train, cllm_err *err);

/* ---- GRPO ------------------------------------------------------------------------------------ */

typedef struct cllm_grpo_config {
    cllm_rollout_config rollout;
    int    num_generations;      /* G responses per prompt (default 8)                            */
    double beta;                 /* weight of the k3 term (default 0: no reference needed)        */
    double epsilon;              /* clipping below (default 0.2)                                  */
    double epsilon_high;         /* clipping above (default = epsilon)                            */
    int    scale_rewards;        /* default 1: divide by the group's unbiased std + 1e-4 (TRL);
                                    negative = no (Dr. GRPO)                                     */
    cllm_grpo_loss_type loss_type; /* default CLLM_GRPO_BNPO                                      */
} cllm_grpo_config;

/* GRPO on prompts (TRL v0.19's GRPOTrainer with MR as the reward): batch_size counts prompts,
   each with G responses; ref is needed only when beta > 0 (NULL with LoRA: the base model). */
CLLMDEF cllm_result cllm_train_grpo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref,
                                    const cllm_online_prompts *prompts, const cllm_grpo_config *cfg,
                                    const cllm_train_config *train, cllm_err *err);

/* ============================================================================================ */
/* Metrics: BLEU                                                                                */
/* ============================================================================================ */

/* ---- BLEU, exactly as NLTK's sentence_bleu (nltk 3.8, weights 0.25 x 4) ---- */

typedef enum cllm_bleu_level {
    CLLM_BLEU_CHAR = 0,  /* a plain string is a sequence of characters (CollabLLM passes strings): Unicode code points
                            of the UTF-8 text, spaces included; an invalid UTF-8 byte counts as one symbol of its own */
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
#define cllm__fma  fma
#else
#define cllm__exp  expf
#define cllm__log  logf
#define cllm__sqrt sqrtf
#define cllm__cos  cosf
#define cllm__sin  sinf
#define cllm__pow  powf
#define cllm__fma  fmaf
#endif

/* "zero means default", applied in one place per config struct (sokol's _def) */
#define cllm__def(val, def) (((val) == 0) ? (def) : (val))

/* The longest JSONL line the readers accept (manual section 3) */
#ifndef CLLM_MAX_LINE_BYTES
#define CLLM_MAX_LINE_BYTES (64L << 20)
#endif

/* -------------------------------------------------------------------------------------------- */
/* Private types, macros and functions used before their definition                             */
/* -------------------------------------------------------------------------------------------- */
/* The algorithm (Part I) comes first and calls infrastructure (Part II), fast paths (Part III) and tables (Part IV)
   defined after it: their declarations, grouped by the part that defines them. */

/* Part II: infrastructure */
typedef struct cllm__sb { char *p; size_t n, cap; int oom; } cllm__sb;
typedef struct cllm__seq_batch { cllm_batch batch; int *ids, *labels, *mask; } cllm__seq_batch;
typedef int (*cllm__take_fn)(void *ctx, int i, const cllm_reply *answer, int last);
#define CLLM__BATCH_RESULT(items, n, what, err) \
    cllm__batch_result(&(items)[0].code, &(items)[0].err, sizeof (items)[0], (n), (what), (err))
#define CLLM__MAX_TEXT_JSON ((size_t)CLLM_MAX_LINE_BYTES - ((size_t)1 << 20))
#define cllm__read_line cllm_read_line   /* the public line reader (II.1), under its old name */
static uint64_t cllm__splitmix64(uint64_t *x);
static FILE *cllm__open_read(const char *path, const char *kind, cllm_err *err);
static int cllm__file_exists(const char *path);
static int cllm__json_int(const cJSON *o, const char *key, int def, int *out);
static const char *cllm__json_str(const cJSON *o, const char *key);
static cJSON *cllm__jsonl_parse(const char *line, size_t len, const char *path, int lineno, cllm_err *err);
static size_t cllm__utf8_check(const char *s, size_t n);
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
static void cllm__ask_all(const cllm_chat_backend *backend, char *const *prompts, int n, int json, int retries,
                          cllm__take_fn take, void *ctx);
static cllm_result cllm__seq_from(cllm_train_seq *seq, const int *ids, const unsigned char *target, int n, int n_prompt,
                                  cllm_err *err);
static void cllm__seq_batch_free(cllm__seq_batch *sb);
static cllm_result cllm__seq_batch_make(cllm__seq_batch *sb, const cllm_train_seq *const *seqs, int n, int pad_cols,
                                        cllm_err *err);
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
static cllm_result cllm__ppo_state_save(void *ctx, const char *dir, cllm_err *err);
static cllm_result cllm__ppo_state_load(void *ctx, const char *dir, cllm_err *err);
/* records and CollabLLM's rows, read in II.6 for the pairs of I.5 */
typedef enum cllm__rows_kind { CLLM__ROWS_FLAT, CLLM__ROWS_V1_DPO } cllm__rows_kind;
typedef struct cllm__rec {
    int         conv_id, turn_id;    /* v1 rows: idx and the prompt's length                          */
    double      score, mr_std;       /* v1 rows: the eval's reward; mr_std: np.std of rewards.MR (or 0) */
    const char *text;                /* the completion (v1 rows: chosen, or rejected)                   */
    const cJSON *prompt, *row, *eval; /* borrowed from the line; eval: v1's chosen_eval / rejected_eval */
} cllm__rec;
typedef struct cllm__rowset { cllm__rec *recs; cJSON **lines; int n; cllm__rows_kind kind; } cllm__rowset;
static cllm_result cllm__rowset_read(cllm__rowset *rows, const char *path, cllm_err *err);
static void cllm__rowset_free(cllm__rowset *rows);

/* Part III: the build's fast-path switches (manual section 3), and the dispatchers */
#if defined(_OPENMP) && !defined(CLLM_NO_OPENMP)
#include <omp.h>
#define CLLM__OMP 1
#define CLLM__PRAGMA(x) _Pragma(#x)
/* A parallel loop over independent iterations. `work` (about one unit per scalar operation) keeps small loops, such
   as the tests' toy models, on one thread. */
#define CLLM__PARALLEL_FOR(work) CLLM__PRAGMA(omp parallel for schedule(static) if((work) >= 32768))
#define cllm__max_threads() omp_get_max_threads()
#define cllm__thread_num() omp_get_thread_num()
#else
#define CLLM__PARALLEL_FOR(work)
#define cllm__max_threads() 1
#define cllm__thread_num() 0
#endif
#if defined(CLLM_SIMD) && !defined(CLLM_BLOCKED)
#define CLLM_BLOCKED
#endif
#if defined(CLLM_SIMD) && !defined(COLLABLLM_DOUBLE) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CLLM__AVX2 1
#elif defined(CLLM_SIMD) && !defined(COLLABLLM_DOUBLE) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define CLLM__NEON 1
#endif
#if defined(CLLM__OMP) || defined(CLLM_BLOCKED)
#define CLLM__FAST 1          /* some fast path is on: the dispatchers use it */
#endif
/* A reference kernel that a fast path replaces is still compiled, for the tests to call. */
#if defined(__GNUC__) || defined(__clang__)
#define CLLM__REFERENCE static __attribute__((unused))
#else
#define CLLM__REFERENCE static
#endif
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
                                     const cllm_float *out, const cllm_float *lse, const int *mask, int B, int T,
                                     int H, int KV, int hd);
static cllm_float cllm__attend_row(cllm_float *y, const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                   size_t stride, int n, const int *mask, int hd, cllm_float scale, cllm_float *s);

/* Part IV: the Unicode tables */
static unsigned cllm__uni_class(uint32_t cp);
static unsigned cllm__uni_ccc(uint32_t cp);
static const uint32_t *cllm__uni_decomp_entries(size_t *n);

/* -------------------------------------------------------------------------------------------- */
/* Errors and allocation                                                                        */
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
    if (!err) return;
    err->code = CLLM_OK;
    err->msg[0] = 0;
}

/* The counterpart of cllm__fail: clears err and returns CLLM_OK. */
static cllm_result cllm__succeed(cllm_err *err) {
    cllm__ok(err);
    return CLLM_OK;
}

/* With a fast path on, Linux backs allocations of 8 MB or more (weights, gradients, moments,
   activations) with 2 MB pages where it can (transparent huge pages, "madvise" mode): matmuls
   walk rows far apart, and with 4 KB pages nearly every row costs a TLB miss. Advice only:
   nothing changes if the kernel declines. CLLM_NO_HUGEPAGES turns it off. */
#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__)) && !defined(CLLM_NO_HUGEPAGES) && \
    (defined(_OPENMP) || defined(CLLM_BLOCKED) || defined(CLLM_SIMD))
extern int madvise(void *, size_t, int);   /* <sys/mman.h> hides it in strict C99 */
static void cllm__advise_huge(void *p, size_t bytes) {
    uintptr_t first = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, end = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
    if (bytes >= ((size_t)8 << 20) && end > first) madvise((void *)first, (size_t)(end - first), 14);   /* HUGEPAGE */
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
    if (!p) return NULL;
    cllm__advise_huge(p, bytes);
    memset(p, 0, bytes);
    return p;
}

static char *cllm__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)CLLM_MALLOC(n);
    if (d) memcpy(d, s, n);
    return d;
}

CLLMDEF void cllm_free_buffer(void *p) { CLLM_FREE(p); }


/* ############################################################################################ */
/* PART I. THE ALGORITHM, IN THE PAPER'S ORDER                                                  */
/* ############################################################################################ */

/* The initializer of an all-zero struct: { 0 } in C, {} in C++ (where 0 cannot initialise an enum member). */
#ifdef __cplusplus
#define CLLM__ZERO {}
#else
#define CLLM__ZERO { 0 }
#endif

/* -------------------------------------------------------------------------------------------- */
/* I.1 The model: parameters, layers, the linear layer with LoRA, forward and backward drivers  */
/* -------------------------------------------------------------------------------------------- */
/* The decoder as transformers' LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM compute it, in fp32:
     x_0 = embed[ids]
     each layer:  h = x + o_proj(attention(rope(q), rope(k), v)),   q, k, v = q/k/v_proj(rmsnorm(x))
                  x' = h + down_proj(silu(gate_proj(n)) * up_proj(n)),   n = rmsnorm(h)
     logits = rmsnorm(x_L) lm_head^T,   log p(y) = log_softmax(logits / temperature)[y]
   Every layer is a forward/backward pair with its math beside it (arguments: outputs, saved values, inputs,
   weights, sizes; a backward pass adds (+=) into its gradient outputs). They are plain scalar C, the references the
   tests check against PyTorch and finite differences. The drivers reach the heavy ones (matmul, attention, RMSNorm
   backward) through the dispatchers of Part III, which run these references unless a fast path is compiled in.
   CLLM__PARALLEL_FOR marks a loop whose iterations are independent: empty unless OpenMP is on, it never changes a
   result. */

/* ---- parameters: one allocation, named views (llm.c's fill_in_parameter_sizes) --------------- */

/* HF name of each tensor; "%d" marks a per-layer tensor. Order = cllm_params field order. */
static const char *cllm__param_fmt[CLLM_NUM_PARAM_TENSORS] = {
    "model.embed_tokens.weight",                  "model.layers.%d.input_layernorm.weight",
    "model.layers.%d.self_attn.q_proj.weight",    "model.layers.%d.self_attn.q_proj.bias",
    "model.layers.%d.self_attn.k_proj.weight",    "model.layers.%d.self_attn.k_proj.bias",
    "model.layers.%d.self_attn.v_proj.weight",    "model.layers.%d.self_attn.v_proj.bias",
    "model.layers.%d.self_attn.q_norm.weight",    "model.layers.%d.self_attn.k_norm.weight",
    "model.layers.%d.self_attn.o_proj.weight",    "model.layers.%d.post_attention_layernorm.weight",
    "model.layers.%d.mlp.gate_proj.weight",       "model.layers.%d.mlp.up_proj.weight",
    "model.layers.%d.mlp.down_proj.weight",       "model.norm.weight",
    "lm_head.weight",
};
enum { CLLM__P_EMBED, CLLM__P_ATTN_NORM, CLLM__P_WQ, CLLM__P_BQ, CLLM__P_WK, CLLM__P_BK, CLLM__P_WV, CLLM__P_BV,
       CLLM__P_QNORM, CLLM__P_KNORM, CLLM__P_WO, CLLM__P_MLP_NORM, CLLM__P_GATE, CLLM__P_UP, CLLM__P_DOWN,
       CLLM__P_FINAL_NORM, CLLM__P_LM_HEAD };

static int cllm__param_per_layer(int i) { return strstr(cllm__param_fmt[i], "%d") != NULL; }

CLLMDEF void cllm_param_name(int i, int layer, char *buf, size_t bufsize) {
    if (i < 0 || i >= CLLM_NUM_PARAM_TENSORS) snprintf(buf, bufsize, "?");
    else if (cllm__param_per_layer(i)) snprintf(buf, bufsize, cllm__param_fmt[i], layer);
    else snprintf(buf, bufsize, "%s", cllm__param_fmt[i]);
}

/* Shape of tensor i (of one layer, for per-layer tensors): rows x cols, cols = 0 for 1-D. A tensor the architecture
   does not have gets rows = 0. */
static void cllm__param_shape(const cllm_config *c, int i, int *rows, int *cols) {
    int V = c->vocab_size, C = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    int Q = c->n_heads * hd, K = c->n_kv_heads * hd, bias = c->attention_bias, qk = c->qk_norm;
    const int shape[CLLM_NUM_PARAM_TENSORS][2] = {
        { V, C },                                  /* embed       */
        { C, 0 },                                  /* attn_norm   */
        { Q, C }, { bias ? Q : 0, 0 },             /* wq, bq      */
        { K, C }, { bias ? K : 0, 0 },             /* wk, bk      */
        { K, C }, { bias ? K : 0, 0 },             /* wv, bv      */
        { qk ? hd : 0, 0 }, { qk ? hd : 0, 0 },    /* q_norm, k_norm */
        { C, Q },                                  /* wo          */
        { C, 0 },                                  /* mlp_norm    */
        { I, C }, { I, C }, { C, I },              /* gate, up, down */
        { C, 0 },                                  /* final_norm  */
        { c->tie_word_embeddings ? 0 : V, C },     /* lm_head     */
    };
    *rows = shape[i][0];
    *cols = shape[i][1];
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
    cllm_float **fields[CLLM_NUM_PARAM_TENSORS] = {
        &p->embed, &p->attn_norm, &p->wq, &p->bq, &p->wk, &p->bk, &p->wv, &p->bv, &p->q_norm, &p->k_norm,
        &p->wo, &p->mlp_norm, &p->w_gate, &p->w_up, &p->w_down, &p->final_norm, &p->lm_head,
    };
    memcpy(ptrs, fields, sizeof fields);
}

/* Points every field of p into memory, in order; absent tensors get NULL; a tied lm_head aliases the embedding, so
   the head's gradient lands in the embedding's. */
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

/* A zeroed model with config c and its (zeroed) parameters; on failure m is left zeroed. */
static cllm_result cllm__model_setup(cllm_model *m, const cllm_config *c, cllm_err *err) {
    size_t n;
    int i;
    memset(m, 0, sizeof *m);
    m->config = *c;
    cllm__fill_in_param_sizes(m->param_sizes, c);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) m->num_params += m->param_sizes[i];
    m->params_memory = cllm__alloc_params(&m->params, m->param_sizes, m->num_params);
    if (m->params_memory) return CLLM_OK;
    n = m->num_params;
    memset(m, 0, sizeof *m);
    return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for %zu parameters (%.1f GB)", n,
                      n * sizeof(cllm_float) / 1e9);
}

CLLMDEF void cllm_model_free(cllm_model *m) {
    size_t i;
    if (!m) return;
    {
        void *owned[] = { m->params_memory, m->grads_memory, m->m_memory, m->v_memory, m->acts_memory, m->scratch,
                          m->input_ids, m->targets, m->mask, m->seq_logp, m->rope_cos, m->rope_sin };
        for (i = 0; i < sizeof owned / sizeof owned[0]; i++) CLLM_FREE(owned[i]);
    }
    cJSON_Delete(m->hf_config);
    if (m->lora && m->lora->model == m) m->lora->model = NULL;   /* the adapters outlive it detached */
    memset(m, 0, sizeof *m);
}

/* Fresh weights as transformers' _init_weights makes them (initializer_range 0.02): N(0, 0.02) matrices, unit norms,
   zero biases, drawn tensor by tensor from a seeded cllm_rng. */
CLLMDEF cllm_result cllm_model_init(cllm_model *m, const cllm_config *c, uint64_t seed, cllm_err *err) {
    cllm_rng rng;
    size_t k;
    int i, rows, cols;
    cllm_float **ptrs[CLLM_NUM_PARAM_TENSORS];
    cllm_result rc = cllm__model_setup(m, c, err);
    if (rc != CLLM_OK) return rc;
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
    return cllm__succeed(err);
}

/* ---- embedding (nn.Embedding) ---------------------------------------------------------------- */

/* x[n] = E[id[n]] */
static void cllm__embedding_forward(cllm_float *out, const int *ids, const cllm_float *E, int N, int C) {
    int n;
    CLLM__PARALLEL_FOR((size_t)N * C)
    for (n = 0; n < N; n++) memcpy(out + (size_t)n * C, E + (size_t)ids[n] * C, sizeof(cllm_float) * (size_t)C);
}

/* dE[id[n]] += dx[n] */
static void cllm__embedding_backward(cllm_float *dE, const cllm_float *dout, const int *ids, int N, int C) {
    int n, c;
    for (n = 0; n < N; n++) {
        cllm_float *de = dE + (size_t)ids[n] * C;
        const cllm_float *dx = dout + (size_t)n * C;
        for (c = 0; c < C; c++) de[c] += dx[c];
    }
}

/* ---- RMSNorm (transformers LlamaRMSNorm) ----------------------------------------------------- */

/* Over rows of C:  r = 1/sqrt(mean(x^2) + eps),  y = w * (x * r);  rstd keeps r for the backward pass. */
static void cllm__rmsnorm_forward(cllm_float *out, cllm_float *rstd, const cllm_float *inp, const cllm_float *w, int N,
                                  int C, float eps) {
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

/* With xh = x r:  dw += sum_n dy * xh,   dx += r (dy w - xh mean(dy w xh))   (r depends on every x[c]) */
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

/* ---- RoPE (transformers apply_rotary_pos_emb, rotate_half) ----------------------------------- */

/* Tables for positions 0..T-1. HF computes inv_freq[i] = 1/theta^(2i/hd) (i < hd/2) in float32, optionally rescales
   it (llama3, linear), then angle = pos * inv_freq. llama3 (transformers _compute_llama3_parameters):
   wavelen = 2 pi / inv_freq;  wavelen < orig/high: keep;  wavelen > orig/low: inv/factor;
   else s = (orig/wavelen - low)/(high - low), inv = (1-s) inv/factor + s inv. */
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

/* In place on (B*T, n_heads*hd) rows at position t, in HF's split-half order:
     y[i] = x[i] cos - x[i+hd/2] sin,   y[i+hd/2] = x[i+hd/2] cos + x[i] sin.
   A rotation: the backward pass is the same rotation by -angle (sign = -1). */
static void cllm__rope(cllm_float *x, const cllm_float *cosv, const cllm_float *sinv, int B, int T, int n_heads,
                       int hd, int sign) {
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

static void cllm__rope_forward(cllm_float *x, const cllm_float *cosv, const cllm_float *sinv, int B, int T, int nh,
                               int hd) {
    cllm__rope(x, cosv, sinv, B, T, nh, hd, +1);
}

static void cllm__rope_backward(cllm_float *dx, const cllm_float *cosv, const cllm_float *sinv, int B, int T, int nh,
                                int hd) {
    cllm__rope(dx, cosv, sinv, B, T, nh, hd, -1);
}

/* ---- causal grouped-query attention (transformers eager_attention_forward, repeat_kv) -------- */

/* One query row over n key/value rows (row j at k + j*stride, v + j*stride), skipping the j with mask[j] = 0 (mask
   may be NULL):  s_j = q . k_j * scale,  p = softmax(s),  y = sum_j p_j v_j;  returns lse = log sum_j exp(s_j).
   s is a scratch row of n values. (cllm__attend_row, Part III, is this or its SIMD twin; the KV cache calls it.) */
CLLM__REFERENCE cllm_float cllm__attend_row_naive(cllm_float *y, const cllm_float *q, const cllm_float *k,
                                                  const cllm_float *v, size_t stride, int n, const int *mask, int hd,
                                                  cllm_float scale, cllm_float *s) {
    int j, i;
    cllm_float mx = -INFINITY, sum = 0;
    for (j = 0; j < n; j++) {
        const cllm_float *kj = k + (size_t)j * stride;
        cllm_float dot = 0;
        if (mask && !mask[j]) {
            s[j] = -INFINITY;
            continue;
        }
        for (i = 0; i < hd; i++) dot += q[i] * kj[i];
        s[j] = dot * scale;
        if (s[j] > mx) mx = s[j];
    }
    for (j = 0; j < n; j++) {
        s[j] = cllm__exp(s[j] - mx);                /* s_j <- exp(s_j - max) */
        sum += s[j];
    }
    for (i = 0; i < hd; i++) y[i] = 0;
    for (j = 0; j < n; j++) {
        const cllm_float *vj = v + (size_t)j * stride;
        cllm_float p = s[j] / sum;
        if (p != 0) for (i = 0; i < hd; i++) y[i] += p * vj[i];
    }
    return mx + cllm__log(sum);
}

/* q (B*T, H*hd), k, v (B*T, KV*hd). Query head h reads kv head h / (H/KV) (repeat_kv). Key j is visible from query t
   when j <= t and mask[b][j] = 1 (HF's causal + padding mask; pad queries still see the real keys):
     s_j = q_t . k_j / sqrt(hd),   p = softmax(s),   y_t = sum_j p_j v_j.
   Only lse = log sum_j exp(s_j) is kept: the backward pass recomputes p_j = exp(s_j - lse), so memory is O(B H T),
   not O(B H T^2). s is a scratch row of T values. */
CLLM__REFERENCE void cllm__attention_forward_naive(cllm_float *out, cllm_float *lse, const cllm_float *q,
                                                   const cllm_float *k, const cllm_float *v, const int *mask, int B,
                                                   int T, int H, int KV, int hd, cllm_float *s) {
    int b, t, h, rep = H / KV;
    cllm_float scale = 1 / cllm__sqrt((cllm_float)hd);
    for (b = 0; b < B; b++) for (h = 0; h < H; h++) for (t = 0; t < T; t++) {
        size_t row = (size_t)(b * T + t) * H + h, kv0 = ((size_t)b * T * KV + h / rep) * hd;  /* key 0 of row b */
        const int *mask_b = mask ? mask + b * T : NULL;
        lse[((size_t)b * H + h) * T + t] = cllm__attend_row_naive(out + row * hd, q + row * hd, k + kv0, v + kv0,
                                                                  (size_t)KV * hd, t + 1, mask_b, hd, scale, s);
    }
}

/* With dy_t given and p_j recomputed:
     dv_j += p_j dy_t                    (y_t = sum_j p_j v_j)
     dp_j  = dy_t . v_j
     ds_j  = p_j (dp_j - sum_i p_i dp_i) = p_j (dp_j - dy_t . y_t)     (softmax backward)
     dq_t += scale sum_j ds_j k_j,   dk_j += scale ds_j q_t
   GQA: the dk/dv of a kv head sum over the H/KV query heads that read it. */
CLLM__REFERENCE void cllm__attention_backward_naive(cllm_float *dq, cllm_float *dk, cllm_float *dv,
                                                    const cllm_float *dout, const cllm_float *q, const cllm_float *k,
                                                    const cllm_float *v, const cllm_float *out, const cllm_float *lse,
                                                    const int *mask, int B, int T, int H, int KV, int hd) {
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
            for (i = 0; i < hd; i++) dp += dyt[i] * vj[i];
            for (i = 0; i < hd; i++) dv[ko + i] += p * dyt[i];
            ds = p * (dp - dyy) * scale;
            for (i = 0; i < hd; i++) dqt[i] += ds * kj[i];
            for (i = 0; i < hd; i++) dk[ko + i] += ds * qt[i];
        }
    }
}

/* ---- SwiGLU (transformers LlamaMLP: act_fn(gate_proj(x)) * up_proj(x), act_fn = silu) -------- */

/* act = silu(g) * u,  silu(g) = g sigmoid(g) */
static void cllm__swiglu_forward(cllm_float *act, const cllm_float *g, const cllm_float *u, size_t n) {
    size_t i;
    CLLM__PARALLEL_FOR(n * 16)
    for (i = 0; i < n; i++) act[i] = g[i] / (1 + cllm__exp(-g[i])) * u[i];
}

/* dg += dact u sigmoid(g) (1 + g (1 - sigmoid(g))),   du += dact silu(g) */
static void cllm__swiglu_backward(cllm_float *dg, cllm_float *du, const cllm_float *dact, const cllm_float *g,
                                  const cllm_float *u, size_t n) {
    size_t i;
    CLLM__PARALLEL_FOR(n * 16)
    for (i = 0; i < n; i++) {
        cllm_float sig = 1 / (1 + cllm__exp(-g[i]));
        dg[i] += dact[i] * u[i] * sig * (1 + g[i] * (1 - sig));
        du[i] += dact[i] * g[i] * sig;
    }
}

/* ---- log-softmax of the logits (HF ForCausalLMLoss; logits / temperature as TRL scores) ------ */

/* One logits row z (V) scaled by 1/temperature, for target y (or -1):
     lse = log sum_v exp(z_v / tau),   logp = z_y / tau - lse,   entropy = lse - sum_v p_v z_v / tau */
static void cllm__logsoftmax_row(cllm_float *lse, cllm_float *logp, cllm_float *entropy, const cllm_float *z, int y,
                                 cllm_float inv_tau, int V) {
    int v;
    cllm_float mx = -INFINITY, sum = 0, pz = 0;
    for (v = 0; v < V; v++) if (z[v] * inv_tau > mx) mx = z[v] * inv_tau;
    for (v = 0; v < V; v++) {
        cllm_float e = cllm__exp(z[v] * inv_tau - mx);
        sum += e;
        pz += e * z[v] * inv_tau;
    }
    *lse = mx + cllm__log(sum);
    *logp = y >= 0 ? z[y] * inv_tau - *lse : 0;
    *entropy = *lse - pz / sum;
}

/* d logp / d z_v = (1[v = y] - p_v) / tau, times the incoming dlogp; written over z. */
static void cllm__logsoftmax_row_backward(cllm_float *z, cllm_float lse, int y, cllm_float dlogp, cllm_float inv_tau,
                                          int V) {
    int v;
    for (v = 0; v < V; v++) z[v] = -dlogp * inv_tau * cllm__exp(z[v] * inv_tau - lse);
    z[y] += dlogp * inv_tau;
}

/* ---- the linear layer with its LoRA adapter (nn.Linear + PEFT LoRA): x W^T + b + s B A d(x) -- */

/* The base product, nn.Linear's layout: inp (N, C), W (OC, C), bias (OC) or NULL -> out (N, OC),
     out[n][o] = bias[o] + sum_c inp[n][c] W[o][c]                                                            */
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

/* dinp[n][c] += sum_o dout[n][o] W[o][c],   dW[o][c] += sum_n dout[n][o] inp[n][c],   dbias[o] += sum_n dout[n][o].
   Any of dinp, dW, dbias may be NULL (not needed). */
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
    if (!dW && !dbias) return;
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

/* The adapter (Hu et al. 2021, PEFT's LoraLayer): A (r, in) and B (out, r) per adapted projection and layer,
   s = alpha / r, d = PEFT's lora_dropout, inverted: d(x)_c = x_c keep_c / (1 - p), in training forwards only. The
   keep mask of input element i of (projection t, layer l) is a hash of (dropout_seed, t, l, i): the backward pass
   recomputes the mask the forward drew instead of storing it, and a seed reproduces a run. The forward records
   u = A d(x) (rows x r) per adapted projection and layer; the backward reads it with the input x, an activation the
   base model saves anyway (ln1, atty, ln2, act). */

/* A decoder layer's projections in cllm_lora_target bit order: the index t of a LoRA target. */
typedef enum cllm__lt {
    CLLM__LT_Q, CLLM__LT_K, CLLM__LT_V, CLLM__LT_O, CLLM__LT_GATE, CLLM__LT_UP, CLLM__LT_DOWN
} cllm__lt;

/* Is input element i of (projection t, layer l) kept by dropout p? */
static int cllm__lora_keep(uint64_t seed, cllm__lt t, int l, size_t i, double p) {
    uint64_t z = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)((int)t * 4096 + l + 1));
    uint64_t k = z ^ ((uint64_t)i * 0xBF58476D1CE4E5B9ull);
    return (double)(cllm__splitmix64(&k) >> 11) * (1.0 / 9007199254740992.0) >= p;
}

/* The dropout probability of the current forward: only a recording training pass drops. */
static double cllm__lora_p(const cllm_lora *lo) { return lo->recording && lo->training ? lo->cfg.dropout : 0; }

/* Start of the saved u rows of (projection t, layer l). */
static cllm_float *cllm__lora_u(const cllm_lora *lo, cllm__lt t, int l) {
    size_t slot = 0;
    int k;
    for (k = 0; k < (int)t; k++) slot += (lo->cfg.targets >> k) & 1u;
    return lo->u + (slot * (size_t)lo->n_layers + (size_t)l) * lo->u_rows * (size_t)lo->cfg.r;
}

/* Room to record `rows` rows in the next forward. */
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
    if (!lo->xd) lo->xd = (cllm_float *)cllm__calloc(max_in, sizeof(cllm_float));
    return lo->xd ? CLLM_OK : cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
}

/* d(x) of row n into lo->xd (or x itself when nothing drops). */
static const cllm_float *cllm__lora_dropped(const cllm_lora *lo, cllm__lt t, int l, const cllm_float *x, size_t n,
                                            double p) {
    int c, in = lo->in[t];
    cllm_float scale = (cllm_float)(1.0 / (1.0 - p));
    if (p <= 0) return x;
    for (c = 0; c < in; c++)
        lo->xd[c] = cllm__lora_keep(lo->dropout_seed, t, l, n * (size_t)in + (size_t)c, p) ? x[c] * scale : 0;
    return lo->xd;
}

/* y (N, out) += s B A d(x) for x (N, in), when projection t of layer l has an enabled adapter; records u = A d(x)
   when inside cllm_forward. */
static void cllm__lora_forward(const cllm_model *m, cllm__lt t, int l, cllm_float *y, const cllm_float *x, int N) {
    const cllm_lora *lo = m->lora;
    const cllm_float *A, *B;
    cllm_float row_u[CLLM_LORA_MAX_R];
    int n, j, o, c, r, in, out;
    double p;
    if (!lo || !lo->enabled || !lo->A[t]) return;
    r = lo->cfg.r;
    in = lo->in[t];
    out = lo->out[t];
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

/* Given dy (N, out) and the forward's input x (N, in), with the same keep mask d':
     dB += s dy^T u,   du = s dy B,   dA += du^T d(x),   dx += d'(du A)                                            */
static void cllm__lora_backward(const cllm_model *m, cllm__lt t, int l, cllm_float *dx, const cllm_float *dy,
                                const cllm_float *x, int N) {
    cllm_lora *lo = m->lora;
    const cllm_float *A, *B, *U;
    cllm_float *dA, *dB, du[CLLM_LORA_MAX_R], scale;
    int n, j, o, c, r, in, out;
    double p;
    if (!lo || !lo->A[t] || lo->u_rows != (size_t)N) return;
    r = lo->cfg.r;
    in = lo->in[t];
    out = lo->out[t];
    A = lo->A[t] + (size_t)l * r * in;
    dA = lo->dA[t] + (size_t)l * r * in;
    B = lo->B[t] + (size_t)l * out * r;
    dB = lo->dB[t] + (size_t)l * out * r;
    U = cllm__lora_u(lo, t, l);
    p = lo->training ? lo->cfg.dropout : 0;
    scale = (cllm_float)(1.0 / (1.0 - p));
    for (n = 0; n < N; n++) {
        const cllm_float *dyn = dy + (size_t)n * out, *un = U + (size_t)n * r, *xn;
        cllm_float *dxn = dx + (size_t)n * in;
        for (j = 0; j < r; j++) du[j] = 0;
        for (o = 0; o < out; o++) {
            cllm_float g = (cllm_float)lo->scale * dyn[o];
            if (g == 0) continue;
            for (j = 0; j < r; j++) dB[(size_t)o * r + j] += g * un[j];
            for (j = 0; j < r; j++) du[j] += g * B[(size_t)o * r + j];
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
        A[t] = memory;
        memory += L * r * (size_t)lo->in[t];
        B[t] = memory;
        memory += L * (size_t)lo->out[t] * r;
    }
}

/* base + offset, or NULL for an absent tensor (no bias; no gradients for a frozen base). */
static cllm_float *cllm__view_at(cllm_float *base, size_t offset) { return base ? base + offset : NULL; }

/* Projection t of layer l in p, the parameters or the gradients (same layout): W (out, in), bias or NULL. */
typedef struct cllm__linear { cllm_float *W, *b; int in, out; } cllm__linear;
static cllm__linear cllm__linear_at(const cllm_config *c, const cllm_params *p, cllm__lt t, int l) {
    static const int tensor[CLLM_LORA_NUM_TARGETS] = { CLLM__P_WQ, CLLM__P_WK, CLLM__P_WV, CLLM__P_WO, CLLM__P_GATE,
                                                       CLLM__P_UP, CLLM__P_DOWN };
    cllm_float *const weights[CLLM_LORA_NUM_TARGETS] = { p->wq, p->wk, p->wv, p->wo, p->w_gate, p->w_up, p->w_down };
    cllm_float *const biases[CLLM_LORA_NUM_TARGETS] = { p->bq, p->bk, p->bv, NULL, NULL, NULL, NULL };
    cllm__linear lin;
    cllm__param_shape(c, tensor[t], &lin.out, &lin.in);
    lin.W = cllm__view_at(weights[t], (size_t)l * lin.out * lin.in);
    lin.b = cllm__view_at(biases[t], (size_t)l * lin.out);
    return lin;
}

/* y (N, out) = x (N, in) W^T + b + s B A d(x): projection t of layer l, with its adapter when one is attached. */
static void cllm__linear_forward(const cllm_model *m, cllm__lt t, int l, cllm_float *y, const cllm_float *x, int N) {
    cllm__linear w = cllm__linear_at(&m->config, &m->params, t, l);
    cllm__matmul_forward(y, x, w.W, w.b, N, w.in, w.out);
    cllm__lora_forward(m, t, l, y, x, N);
}

/* dx += dy W + d'(s dy B A);  dW += dy^T x and db += sum_n dy into the gradients g (where g has them: a frozen base
   has none);  the adapter's dA, dB into lora->grads. */
static void cllm__linear_backward(const cllm_model *m, const cllm_params *g, cllm__lt t, int l, cllm_float *dx,
                                  const cllm_float *dy, const cllm_float *x, int N) {
    cllm__linear w = cllm__linear_at(&m->config, &m->params, t, l);
    cllm__linear dw = cllm__linear_at(&m->config, g, t, l);
    cllm__matmul_backward(dx, dw.W, dw.b, dy, x, w.W, N, w.in, w.out);
    cllm__lora_backward(m, t, l, dx, dy, x, N);
}

/* ---- activations, work space and batches ----------------------------------------------------- */

#define CLLM__LMHEAD_CHUNK 64   /* rows of logits materialised at once: memory is CHUNK x V, not B x T x V */

/* The fields of cllm_acts as an array, in field order. */
static void cllm__act_ptrs(cllm_acts *a, cllm_float **ptrs[CLLM_NUM_ACT_TENSORS]) {
    cllm_float **fields[CLLM_NUM_ACT_TENSORS] = {
        &a->x, &a->ln1, &a->ln1_rstd, &a->q_pre, &a->k_pre, &a->q_rstd, &a->k_rstd, &a->q, &a->k, &a->v,
        &a->att_lse, &a->atty, &a->h, &a->ln2, &a->ln2_rstd, &a->gate, &a->up, &a->act, &a->lnf, &a->lnf_rstd,
        &a->lse, &a->logp, &a->entropy,
    };
    memcpy(ptrs, fields, sizeof fields);
}

/* Elements of each cllm_acts tensor for BT rows, per layer, and its layers (1: not per layer). ln1, ln2 and act hold
   one layer, the backward pass recomputes them; the q/k norms' tensors exist with qk_norm only. */
static void cllm__act_shapes(const cllm_config *c, size_t BT, size_t *per_layer, size_t *layers) {
    size_t L = (size_t)c->n_layers, C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t H = (size_t)c->n_heads, KV = (size_t)c->n_kv_heads, hd = (size_t)c->head_dim, qk = c->qk_norm ? 1 : 0;
    const size_t shapes[CLLM_NUM_ACT_TENSORS][2] = {
        { BT * C, L + 1 },                                              /* x: x[L] enters the final norm */
        { BT * C, 1 }, { BT, L },                                       /* ln1, ln1_rstd */
        { qk * BT * H * hd, L }, { qk * BT * KV * hd, L },              /* q_pre, k_pre */
        { qk * BT * H, L }, { qk * BT * KV, L },                        /* q_rstd, k_rstd */
        { BT * H * hd, L }, { BT * KV * hd, L }, { BT * KV * hd, L },   /* q, k, v */
        { BT * H, L }, { BT * H * hd, L }, { BT * C, L },               /* att_lse, atty, h */
        { BT * C, 1 }, { BT, L },                                       /* ln2, ln2_rstd */
        { BT * I, L }, { BT * I, L }, { BT * I, 1 },                    /* gate, up, act */
        { BT * C, 1 }, { BT, 1 }, { BT, 1 }, { BT, 1 }, { BT, 1 },      /* lnf, lnf_rstd, lse, logp, entropy */
    };
    int i;
    for (i = 0; i < CLLM_NUM_ACT_TENSORS; i++) {
        per_layer[i] = shapes[i][0];
        layers[i] = shapes[i][1];
    }
}

/* m->acts with every per-layer tensor moved to layer l (BT rows); x of the next layer is x + BT*C. */
static cllm_acts cllm__layer_acts(const cllm_model *m, int l, size_t BT) {
    cllm_acts v = m->acts;
    cllm_float **ptrs[CLLM_NUM_ACT_TENSORS];
    size_t per_layer[CLLM_NUM_ACT_TENSORS], layers[CLLM_NUM_ACT_TENSORS];
    int i;
    cllm__act_shapes(&m->config, BT, per_layer, layers);
    cllm__act_ptrs(&v, ptrs);
    for (i = 0; i < CLLM_NUM_ACT_TENSORS; i++) if (*ptrs[i] && layers[i] > 1) *ptrs[i] += (size_t)l * per_layer[i];
    return v;
}

/* The backward pass's work space in m->scratch: running gradients of the residual stream (dx, dh) and of a normed
   input (dln), one layer's activation gradients (reused for every layer: only the parameter gradients persist),
   and the lm head's chunk (packed rows, their gradients, their logits z). The gradients before the q/k norms are
   dq, dk themselves unless qk_norm. Runs cleared together: dact dgate dup, datty dq dk dv, dq_pre dk_pre. */
typedef struct cllm__grad_work {
    cllm_float *dx, *dh, *dln, *dact, *dgate, *dup, *datty, *dq, *dk, *dv, *dq_pre, *dk_pre, *packed, *dpacked, *z;
} cllm__grad_work;

/* Points w's views into mem (when w is given) for BT rows; returns the floats they take. */
static size_t cllm__grad_work_at(const cllm_config *c, size_t BT, cllm_float *mem, cllm__grad_work *w) {
    size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    size_t Q = (size_t)c->n_heads * c->head_dim, K = (size_t)c->n_kv_heads * c->head_dim, total = BT;
    size_t CH = CLLM__LMHEAD_CHUNK, pre = c->qk_norm ? 1 : 0;
    const size_t sizes[15] = { BT * C, BT * C, BT * C, BT * I, BT * I, BT * I, BT * Q, BT * Q, BT * K, BT * K,
                               pre * BT * Q, pre * BT * K, CH * C, CH * C, CH * V };
    int i;
    for (i = 0; i < 15; i++) total += sizes[i];
    if (w) {                                    /* (total has BT to spare: the attention's score row) */
        cllm_float **views[15] = { &w->dx, &w->dh, &w->dln, &w->dact, &w->dgate, &w->dup, &w->datty, &w->dq, &w->dk,
                                   &w->dv, &w->dq_pre, &w->dk_pre, &w->packed, &w->dpacked, &w->z };
        for (i = 0; i < 15; i++) {
            *views[i] = mem;
            mem += sizes[i];
        }
        if (!c->qk_norm) w->dq_pre = w->dq;
        if (!c->qk_norm) w->dk_pre = w->dk;
    }
    return total;
}

/* Activations, work space and the batch's copies for B x T rows (kept while large enough); RoPE tables for T. */
static cllm_result cllm__ensure_acts(cllm_model *m, int B, int T, cllm_err *err) {
    size_t BT = (size_t)B * (size_t)T, per_layer[CLLM_NUM_ACT_TENSORS], layers[CLLM_NUM_ACT_TENSORS], total = 0, i;
    cllm_float **ptrs[CLLM_NUM_ACT_TENSORS], *mem;
    int half = m->config.head_dim / 2;
    if (BT > m->acts_cap) {
        void *old[] = { m->acts_memory, m->scratch, m->input_ids, m->targets, m->mask, m->seq_logp };
        for (i = 0; i < sizeof old / sizeof old[0]; i++) CLLM_FREE(old[i]);
        m->acts_cap = 0;
        cllm__act_shapes(&m->config, BT, per_layer, layers);
        for (i = 0; i < CLLM_NUM_ACT_TENSORS; i++) total += per_layer[i] * layers[i];
        m->acts_memory = mem = (cllm_float *)cllm__calloc(total, sizeof(cllm_float));
        m->scratch = (cllm_float *)cllm__calloc(cllm__grad_work_at(&m->config, BT, NULL, NULL), sizeof(cllm_float));
        m->input_ids = (int *)cllm__calloc(BT, sizeof(int));
        m->targets = (int *)cllm__calloc(BT, sizeof(int));
        m->mask = (int *)cllm__calloc(BT, sizeof(int));
        m->seq_logp = (cllm_float *)cllm__calloc(BT, sizeof(cllm_float));
        if (!mem || !m->scratch || !m->input_ids || !m->targets || !m->mask || !m->seq_logp)
            return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for activations of a %dx%d batch (%.2f GB); use a "
                              "smaller batch or shorter sequences", B, T, total * sizeof(cllm_float) / 1e9);
        cllm__act_ptrs(&m->acts, ptrs);
        for (i = 0; i < CLLM_NUM_ACT_TENSORS; i++) {
            *ptrs[i] = per_layer[i] ? mem : NULL;
            mem += per_layer[i] * layers[i];
        }
        m->acts_cap = BT;
    }
    if (T <= m->rope_len) return CLLM_OK;
    CLLM_FREE(m->rope_cos);
    CLLM_FREE(m->rope_sin);
    m->rope_cos = (cllm_float *)cllm__calloc((size_t)T * half, sizeof(cllm_float));
    m->rope_sin = (cllm_float *)cllm__calloc((size_t)T * half, sizeof(cllm_float));
    m->rope_len = 0;
    if (!m->rope_cos || !m->rope_sin) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for RoPE tables");
    cllm__rope_tables(m->rope_cos, m->rope_sin, &m->config, T);
    m->rope_len = T;
    return CLLM_OK;
}

/* Checks ids, labels and the right-padding mask, and builds the shifted targets: targets[t] = labels[t+1], since
   the logits at t predict the next token (HF shifts the labels left). */
static cllm_result cllm__prepare_batch(cllm_model *m, const cllm_batch *bt, cllm_err *err) {
    int B = bt->B, T = bt->T, V = m->config.vocab_size, b, t;
    for (b = 0; b < B; b++) {
        int seen_pad = 0;
        for (t = 0; t < T; t++) {
            int i = b * T + t, id = bt->input_ids[i], mk = bt->attn_mask ? bt->attn_mask[i] : 1;
            int label = bt->labels ? bt->labels[i] : -100;
            if (id < 0 || id >= V)
                return cllm__fail(err, CLLM_ERR_ARG, "batch row %d position %d: token id %d is outside the vocabulary "
                                  "[0, %d)", b, t, id, V);
            if (mk != 0 && mk != 1)
                return cllm__fail(err, CLLM_ERR_ARG, "batch row %d position %d: attn_mask must be 0 or 1", b, t);
            if (mk && seen_pad)
                return cllm__fail(err, CLLM_ERR_ARG, "batch row %d: attn_mask has a 1 after a 0; batches must be "
                                  "right-padded", b);
            if (!mk && t == 0) return cllm__fail(err, CLLM_ERR_ARG, "batch row %d is empty (attn_mask[0] = 0)", b);
            if (label != -100 && (label < 0 || label >= V))
                return cllm__fail(err, CLLM_ERR_ARG, "batch row %d position %d: label %d is neither -100 nor a token "
                                  "id", b, t, label);
            seen_pad |= !mk;
            m->mask[i] = mk;
            m->input_ids[i] = id;
        }
    }
    for (b = 0; b < B; b++) for (t = 0; t < T; t++) {
        int i = b * T + t, y = -100;
        if (t + 1 < T) y = bt->labels ? bt->labels[i + 1] : (m->mask[i + 1] ? bt->input_ids[i + 1] : -100);
        m->targets[i] = y;
    }
    return CLLM_OK;
}

/* ---- the decoder layer's blocks (shared with the KV cache of II.5) --------------------------- */

/* q, k, v projections of layer l for N rows of ln1 = rmsnorm(x). Qwen3 (qk_norm) applies an RMSNorm over each head's
   hd values before RoPE (Qwen3Attention's q_norm, k_norm): then the projections go to q_pre/k_pre and the norms'
   rstd to q_rstd (N*H) / k_rstd (N*KV), which are NULL for the other architectures. */
static void cllm__qkv_forward(const cllm_model *m, int l, cllm_float *q, cllm_float *k, cllm_float *v,
                              cllm_float *q_pre, cllm_float *k_pre, cllm_float *q_rstd, cllm_float *k_rstd,
                              const cllm_float *ln1, int N) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    int hd = c->head_dim;
    cllm__linear_forward(m, CLLM__LT_Q, l, c->qk_norm ? q_pre : q, ln1, N);
    cllm__linear_forward(m, CLLM__LT_K, l, c->qk_norm ? k_pre : k, ln1, N);
    cllm__linear_forward(m, CLLM__LT_V, l, v, ln1, N);
    if (!c->qk_norm) return;
    cllm__rmsnorm_forward(q, q_rstd, q_pre, p->q_norm + (size_t)l * hd, N * c->n_heads, hd, c->rms_norm_eps);
    cllm__rmsnorm_forward(k, k_rstd, k_pre, p->k_norm + (size_t)l * hd, N * c->n_kv_heads, hd, c->rms_norm_eps);
}

/* MLP block of layer l for N rows: out = h + down_proj(silu(gate_proj(n)) * up_proj(n)), n = rmsnorm(h) goes to ln2
   (rstd to ln2_rstd). act may alias gate. */
static void cllm__mlp_forward(const cllm_model *m, int l, cllm_float *out, cllm_float *ln2, cllm_float *ln2_rstd,
                              cllm_float *gate, cllm_float *up, cllm_float *act, const cllm_float *h, int N) {
    const cllm_config *c = &m->config;
    int C = c->hidden_size, I = c->intermediate_size, i;
    cllm__rmsnorm_forward(ln2, ln2_rstd, h, m->params.mlp_norm + (size_t)l * C, N, C, c->rms_norm_eps);
    cllm__linear_forward(m, CLLM__LT_GATE, l, gate, ln2, N);
    cllm__linear_forward(m, CLLM__LT_UP, l, up, ln2, N);
    cllm__swiglu_forward(act, gate, up, (size_t)N * I);
    cllm__linear_forward(m, CLLM__LT_DOWN, l, out, act, N);
    for (i = 0; i < N * C; i++) out[i] += h[i];
}

/* Backward of cllm__qkv_forward: from dq, dk (RoPE already undone) and dv to w->dln = d ln1. */
static void cllm__qkv_backward(const cllm_model *m, const cllm_params *g, int l, const cllm_acts *v,
                               cllm__grad_work *w, int N) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    int hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads;
    if (c->qk_norm) {
        memset(w->dq_pre, 0, sizeof(cllm_float) * (size_t)N * (size_t)(H + KV) * (size_t)hd);   /* dq_pre dk_pre */
        cllm__rmsnorm_backward(w->dq_pre, cllm__view_at(g->q_norm, (size_t)l * hd), w->dq, v->q_pre,
                               p->q_norm + (size_t)l * hd, v->q_rstd, N * H, hd);
        cllm__rmsnorm_backward(w->dk_pre, cllm__view_at(g->k_norm, (size_t)l * hd), w->dk, v->k_pre,
                               p->k_norm + (size_t)l * hd, v->k_rstd, N * KV, hd);
    }
    memset(w->dln, 0, sizeof(cllm_float) * (size_t)N * (size_t)c->hidden_size);
    cllm__linear_backward(m, g, CLLM__LT_Q, l, w->dln, w->dq_pre, v->ln1, N);
    cllm__linear_backward(m, g, CLLM__LT_K, l, w->dln, w->dk_pre, v->ln1, N);
    cllm__linear_backward(m, g, CLLM__LT_V, l, w->dln, w->dv, v->ln1, N);
}

/* Backward of cllm__mlp_forward's branch: from w->dx, the gradient at the layer's output, into w->dh (+=; the
   residual's share is the caller's). */
static void cllm__mlp_backward(const cllm_model *m, const cllm_params *g, int l, const cllm_acts *v,
                               cllm__grad_work *w, int N) {
    const cllm_config *c = &m->config;
    int C = c->hidden_size, I = c->intermediate_size;
    memset(w->dact, 0, sizeof(cllm_float) * (size_t)N * I * 3);                   /* dact dgate dup */
    cllm__linear_backward(m, g, CLLM__LT_DOWN, l, w->dact, w->dx, v->act, N);
    cllm__swiglu_backward(w->dgate, w->dup, w->dact, v->gate, v->up, (size_t)N * I);
    memset(w->dln, 0, sizeof(cllm_float) * (size_t)N * C);
    cllm__linear_backward(m, g, CLLM__LT_GATE, l, w->dln, w->dgate, v->ln2, N);
    cllm__linear_backward(m, g, CLLM__LT_UP, l, w->dln, w->dup, v->ln2, N);
    cllm__rmsnorm_backward(w->dh, cllm__view_at(g->mlp_norm, (size_t)l * C), w->dln, v->h,
                           m->params.mlp_norm + (size_t)l * C, v->ln2_rstd, N, C);
}

/* ---- the lm head: logits = lnf lm_head^T, log p = log_softmax(logits / tau), by chunks ------- */

/* lse, logp and entropy of every row (the logits never exist for the whole batch); the raw logits to logits_out
   when it is given. */
static void cllm__lm_head_forward(cllm_model *m, cllm_float *logits_out, cllm_float inv_tau, int BT) {
    cllm_acts *a = &m->acts;
    int C = m->config.hidden_size, V = m->config.vocab_size, r;
    for (r = 0; r < BT; r += CLLM__LMHEAD_CHUNK) {
        int n = BT - r < CLLM__LMHEAD_CHUNK ? BT - r : CLLM__LMHEAD_CHUNK, i;
        cllm__matmul_forward(m->scratch, a->lnf + (size_t)r * C, m->params.lm_head, NULL, n, C, V);
        CLLM__PARALLEL_FOR((size_t)n * V * 8)
        for (i = 0; i < n; i++) {
            int y = m->targets[r + i];
            const cllm_float *z = m->scratch + (size_t)i * V;
            cllm__logsoftmax_row(&a->lse[r + i], &a->logp[r + i], &a->entropy[r + i], z, y >= 0 ? y : -1, inv_tau, V);
            if (logits_out) memcpy(logits_out + (size_t)(r + i) * V, z, sizeof(cllm_float) * (size_t)V);
        }
    }
}

/* The n rows idx[] (packed in w->packed): recompute their logits, turn them into d logits, then
   w->dln[idx] += d logits W_head and the head's gradient g->lm_head += d logits^T lnf. */
static void cllm__lm_head_chunk_backward(const cllm_model *m, const cllm_params *g, const cllm_float *dlogp,
                                         const int *idx, int n, cllm__grad_work *w) {
    int C = m->config.hidden_size, V = m->config.vocab_size, i;
    cllm__matmul_forward(w->z, w->packed, m->params.lm_head, NULL, n, C, V);
    CLLM__PARALLEL_FOR((size_t)n * V * 8)
    for (i = 0; i < n; i++) {
        cllm_float d = dlogp ? dlogp[idx[i]] : (cllm_float)(-1.0 / m->n_targets);      /* loss = -mean logp */
        cllm__logsoftmax_row_backward(w->z + (size_t)i * V, m->acts.lse[idx[i]], m->targets[idx[i]], d,
                                      (cllm_float)m->inv_temperature, V);
    }
    memset(w->dpacked, 0, sizeof(cllm_float) * (size_t)n * C);
    cllm__matmul_backward(w->dpacked, g->lm_head, NULL, w->z, w->packed, m->params.lm_head, n, C, V);
    CLLM__PARALLEL_FOR((size_t)n * C)
    for (i = 0; i < n; i++) {                                                 /* rows idx[i] are distinct */
        int k;
        for (k = 0; k < C; k++) w->dln[(size_t)idx[i] * C + k] += w->dpacked[(size_t)i * C + k];
    }
}

/* d lnf into w->dln, for the rows whose target counts and whose dlogp is not 0 (dlogp NULL: the mean loss). */
static void cllm__lm_head_backward(const cllm_model *m, const cllm_params *g, const cllm_float *dlogp,
                                   cllm__grad_work *w) {
    int BT = m->B * m->T, C = m->config.hidden_size, idx[CLLM__LMHEAD_CHUNK], n = 0, r;
    memset(w->dln, 0, sizeof(cllm_float) * (size_t)BT * C);
    for (r = 0; r < BT; r++) {
        if (m->targets[r] < 0 || (dlogp ? dlogp[r] == 0 : m->n_targets == 0)) continue;
        idx[n] = r;
        memcpy(w->packed + (size_t)n * C, m->acts.lnf + (size_t)r * C, sizeof(cllm_float) * (size_t)C);
        if (++n < CLLM__LMHEAD_CHUNK) continue;
        cllm__lm_head_chunk_backward(m, g, dlogp, idx, n, w);
        n = 0;
    }
    if (n > 0) cllm__lm_head_chunk_backward(m, g, dlogp, idx, n, w);
}

/* ---- the forward driver ---------------------------------------------------------------------- */

CLLMDEF cllm_result cllm_forward(cllm_model *m, const cllm_batch *batch, cllm_float *logits_out, cllm_err *err) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    cllm_acts *a = &m->acts;
    int B = batch ? batch->B : 0, T = batch ? batch->T : 0, BT = B * T, b, t, l, i;
    int C = c->hidden_size, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    double total = 0;
    cllm_float inv_tau;
    cllm_result rc;

    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "forward pass: the model is not loaded");
    if (!batch || B <= 0 || T <= 0 || !batch->input_ids)
        return cllm__fail(err, CLLM_ERR_ARG, "forward pass: batch needs B > 0, T > 0 and input_ids");
    if ((double)B * T > 1e8) return cllm__fail(err, CLLM_ERR_LIMIT, "forward pass: batch %d x %d is too large", B, T);
    if (batch->temperature < 0 || batch->temperature != batch->temperature)
        return cllm__fail(err, CLLM_ERR_ARG, "forward pass: temperature must be positive (0 = default 1)");
    m->B = 0;                                     /* invalid until this forward completes */
    if ((rc = cllm__ensure_acts(m, B, T, err)) != CLLM_OK) return rc;
    if ((rc = cllm__prepare_batch(m, batch, err)) != CLLM_OK) return rc;
    inv_tau = (cllm_float)(1.0 / cllm__def(batch->temperature, 1.0f));
    m->inv_temperature = (float)inv_tau;
    if (m->lora) m->lora->u_rows = 0;             /* adapters record what their backward needs */
    if (m->lora && m->lora->enabled) {
        if ((rc = cllm__lora_ensure(m->lora, (size_t)BT, err)) != CLLM_OK) return rc;
        m->lora->u_rows = (size_t)BT;
        m->lora->recording = 1;
    }

    cllm__embedding_forward(a->x, batch->input_ids, p->embed, BT, C);
    for (l = 0; l < c->n_layers; l++) {
        cllm_acts v = cllm__layer_acts(m, l, (size_t)BT);
        /* attention block: h = x + o_proj(attention(rope(q), rope(k), v)), q, k, v from ln1 = rmsnorm(x) */
        cllm__rmsnorm_forward(v.ln1, v.ln1_rstd, v.x, p->attn_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        cllm__qkv_forward(m, l, v.q, v.k, v.v, v.q_pre, v.k_pre, v.q_rstd, v.k_rstd, v.ln1, BT);
        cllm__rope_forward(v.q, m->rope_cos, m->rope_sin, B, T, H, hd);
        cllm__rope_forward(v.k, m->rope_cos, m->rope_sin, B, T, KV, hd);
        cllm__attention_forward(v.atty, v.att_lse, v.q, v.k, v.v, m->mask, B, T, H, KV, hd, m->scratch);
        cllm__linear_forward(m, CLLM__LT_O, l, v.h, v.atty, BT);
        CLLM__PARALLEL_FOR((size_t)BT * C)
        for (i = 0; i < BT * C; i++) v.h[i] += v.x[i];
        /* MLP block: x' = h + down_proj(silu(gate_proj(ln2)) * up_proj(ln2)), ln2 = rmsnorm(h) */
        cllm__mlp_forward(m, l, v.x + (size_t)BT * C, v.ln2, v.ln2_rstd, v.gate, v.up, v.act, v.h, BT);
    }
    if (m->lora) m->lora->recording = 0;
    cllm__rmsnorm_forward(a->lnf, a->lnf_rstd, a->x + (size_t)c->n_layers * BT * C, p->final_norm, BT, C,
                          c->rms_norm_eps);
    cllm__lm_head_forward(m, logits_out, inv_tau, BT);

    m->n_targets = 0;                             /* per-sequence sums and HF's loss: mean -log p over targets */
    for (b = 0; b < B; b++) {
        double s = 0;
        for (t = 0; t < T; t++) {
            if (m->targets[b * T + t] < 0) continue;
            s += a->logp[b * T + t];
            m->n_targets++;
        }
        m->seq_logp[b] = (cllm_float)s;
        total += s;
    }
    m->loss = m->n_targets ? (cllm_float)(-total / m->n_targets) : 0;
    m->B = B;
    m->T = T;
    return cllm__succeed(err);
}

/* ---- the backward driver: the layers in exact reverse order ---------------------------------- */

CLLMDEF cllm_result cllm_zero_grad(cllm_model *m, cllm_err *err) {
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "gradients: the model is not loaded");
    if (m->grads_memory) memset(m->grads_memory, 0, m->num_params * sizeof(cllm_float));
    else m->grads_memory = cllm__alloc_params(&m->grads, m->param_sizes, m->num_params);
    if (!m->grads_memory) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for %zu gradients", m->num_params);
    return cllm__succeed(err);
}

/* The adapters' gradients, allocated (zeroed) by the first backward. */
static cllm_result cllm__lora_ensure_grads(cllm_lora *lo, cllm_err *err) {
    if (lo->grads) return CLLM_OK;
    lo->grads = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
    if (!lo->grads) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the LoRA gradients");
    cllm__lora_point(lo, lo->grads, lo->dA, lo->dB);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_backward(cllm_model *m, const cllm_float *dlogp, const cllm_float *dhidden, cllm_err *err) {
    const cllm_config *c = &m->config;
    const cllm_params *p = &m->params;
    cllm_params frozen = CLLM__ZERO, *g = &m->grads;
    int B = m->B, T = m->T, BT = B * T, l, i;
    int C = c->hidden_size, I = c->intermediate_size, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    int Q = H * hd, K = KV * hd;
    cllm__grad_work w;
    cllm_result rc = CLLM_OK;

    if (B <= 0)
        return cllm__fail(err, CLLM_ERR_ARG, "backward pass: there is no forward pass to go back through (run the "
                          "forward pass first)");
    if (m->lora) g = &frozen;                     /* adapters attached: the base is frozen, only they get gradients */
    if (m->lora) rc = cllm__lora_ensure_grads(m->lora, err);
    else if (!m->grads_memory) rc = cllm_zero_grad(m, err);
    if (rc != CLLM_OK) return rc;
    cllm__grad_work_at(c, (size_t)BT, m->scratch, &w);

    cllm__lm_head_backward(m, g, dlogp, &w);
    if (dhidden) for (i = 0; i < BT * C; i++) w.dln[i] += dhidden[i];
    memset(w.dx, 0, sizeof(cllm_float) * (size_t)BT * C);
    cllm__rmsnorm_backward(w.dx, g->final_norm, w.dln, m->acts.x + (size_t)c->n_layers * BT * C, p->final_norm,
                           m->acts.lnf_rstd, BT, C);
    for (l = c->n_layers - 1; l >= 0; l--) {
        cllm_acts v = cllm__layer_acts(m, l, (size_t)BT);
        /* The forward kept ln1, ln2 and act for one layer only: recompute this layer's with the same kernels on the
           same inputs, so they are bit-identical (rstd is rewritten as it was). */
        cllm__rmsnorm_forward(v.ln1, v.ln1_rstd, v.x, p->attn_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        cllm__rmsnorm_forward(v.ln2, v.ln2_rstd, v.h, p->mlp_norm + (size_t)l * C, BT, C, c->rms_norm_eps);
        cllm__swiglu_forward(v.act, v.gate, v.up, (size_t)BT * I);
        /* MLP block, x' = h + mlp(h): dh = dx' (the residual) + d mlp / dh */
        memcpy(w.dh, w.dx, sizeof(cllm_float) * (size_t)BT * C);
        cllm__mlp_backward(m, g, l, &v, &w, BT);
        /* attention block, h = x + o_proj(attention(...)): dx = dh (the residual) + d attention / dx */
        memcpy(w.dx, w.dh, sizeof(cllm_float) * (size_t)BT * C);
        memset(w.datty, 0, sizeof(cllm_float) * (size_t)BT * (size_t)(2 * Q + 2 * K));       /* datty dq dk dv */
        cllm__linear_backward(m, g, CLLM__LT_O, l, w.datty, w.dh, v.atty, BT);
        cllm__attention_backward(w.dq, w.dk, w.dv, w.datty, v.q, v.k, v.v, v.atty, v.att_lse, m->mask, B, T, H, KV,
                                 hd);
        cllm__rope_backward(w.dq, m->rope_cos, m->rope_sin, B, T, H, hd);
        cllm__rope_backward(w.dk, m->rope_cos, m->rope_sin, B, T, KV, hd);
        cllm__qkv_backward(m, g, l, &v, &w, BT);
        cllm__rmsnorm_backward(w.dx, cllm__view_at(g->attn_norm, (size_t)l * C), w.dln, v.x,
                               p->attn_norm + (size_t)l * C, v.ln1_rstd, BT, C);
    }
    if (g->embed) cllm__embedding_backward(g->embed, w.dx, m->input_ids, BT, C);
    return cllm__succeed(err);
}

/* -------------------------------------------------------------------------------------------- */
/* I.2 Optimisation: AdamW, gradient clipping, learning-rate schedules                          */
/* -------------------------------------------------------------------------------------------- */

/* cfg (or all zeros) with its zero fields set to the defaults. */
static cllm_adamw_config cllm__adamw_defaults(const cllm_adamw_config *cfg) {
    cllm_adamw_config c = CLLM__ZERO;
    if (cfg) c = *cfg;
    c.beta1 = cllm__def(c.beta1, 0.9);
    c.beta2 = cllm__def(c.beta2, 0.999);
    c.eps = cllm__def(c.eps, 1e-8);
    return c;
}

/* torch.optim.AdamW (Loshchilov & Hutter 2019, decoupled weight decay) on n values at step t (1-based):
     p = p (1 - lr wd);   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;
     p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)          (eps after bias-correcting v)
   computed as torch's default path for parameters off the GPU (_single_tensor_adamw, torch 1.13) computes it: the
   scalars in double as Python floats (1 - b^t with pow, lr / bc1, sqrt(bc2)), then one tensor operation per line
   below in cllm_float, each rounded where torch rounds it, with a fused multiply-add where torch's AVX2 kernels fuse
   one (add_ with alpha, addcmul_). In float32 this is bit for bit torch 1.13's CPU AdamW, and in double torch's
   float64 one (tests/test_optim.c, 10 steps with a schedule, clipping and weight decay). Remaining differences are
   in the last bit: torch 2.x computes m with lerp_ (m + (1 - b1)(g - m)), and GPU kernels (foreach, fused) round
   their own way. Holding b1 = 0.9 as a float instead (0.89999998) makes every step from the second ~6.7e-6 smaller. */
CLLMDEF void cllm_adamw_step(cllm_float *p, const cllm_float *g, cllm_float *m, cllm_float *v, size_t n, int t,
                             double lr, const cllm_adamw_config *cfg) {
    cllm_adamw_config c = cllm__adamw_defaults(cfg);
    double bc1 = 1 - pow(c.beta1, (double)t), bc2 = 1 - pow(c.beta2, (double)t);
    const cllm_float decay = (cllm_float)(1 - lr * c.weight_decay), neg_step = (cllm_float)(-(lr / bc1));
    const cllm_float b1 = (cllm_float)c.beta1, one_minus_b1 = (cllm_float)(1 - c.beta1);
    const cllm_float b2 = (cllm_float)c.beta2, one_minus_b2 = (cllm_float)(1 - c.beta2);
    const cllm_float bc2_sqrt = (cllm_float)sqrt(bc2), eps = (cllm_float)c.eps;
    size_t i;
    CLLM__PARALLEL_FOR(n * 16)
    for (i = 0; i < n; i++) {
        cllm_float pi = p[i] * decay;                                     /* param.mul_(1 - lr wd)           */
        cllm_float mi = cllm__fma(g[i], one_minus_b1, m[i] * b1);         /* m.mul_(b1).add_(g, alpha=1-b1)  */
        cllm_float vi = cllm__fma(one_minus_b2 * g[i], g[i], v[i] * b2);  /* v.mul_(b2).addcmul_(g, g, 1-b2) */
        cllm_float denom = cllm__sqrt(vi) / bc2_sqrt + eps;               /* v.sqrt() / sqrt(bc2) + eps      */
        p[i] = pi + neg_step * mi / denom;                                /* param.addcdiv_(m, denom, -step) */
        m[i] = mi;
        v[i] = vi;
    }
}

/* AdamW over the model as the HF Trainer sets it up: weight decay on the weight matrices (the 2-D tensors) only, not
   on biases or norm weights; the moments are allocated by the first update. */
CLLMDEF cllm_result cllm_adamw_update(cllm_model *model, const cllm_adamw_config *cfg, double lr, cllm_err *err) {
    cllm_adamw_config matrices = cllm__adamw_defaults(cfg), vectors = matrices;
    cllm_float **pp[CLLM_NUM_PARAM_TENSORS], **gp[CLLM_NUM_PARAM_TENSORS];
    size_t off = 0;
    int i, rows, cols;
    if (!model->grads_memory)
        return cllm__fail(err, CLLM_ERR_ARG, "AdamW update: no gradients yet (run a backward pass first)");
    vectors.weight_decay = 0;
    if (!model->m_memory) model->m_memory = (cllm_float *)cllm__calloc(model->num_params, sizeof(cllm_float));
    if (!model->v_memory) model->v_memory = (cllm_float *)cllm__calloc(model->num_params, sizeof(cllm_float));
    if (!model->m_memory || !model->v_memory)
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the AdamW moments (2 x %zu floats)",
                          model->num_params);
    model->adam_t++;
    cllm__param_ptrs(&model->params, pp);
    cllm__param_ptrs(&model->grads, gp);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        size_t n = model->param_sizes[i];
        if (!n) continue;
        cllm__param_shape(&model->config, i, &rows, &cols);
        cllm_adamw_step(*pp[i], *gp[i], model->m_memory + off, model->v_memory + off, n, model->adam_t, lr,
                        cols ? &matrices : &vectors);
        off += n;
    }
    return cllm__succeed(err);
}

/* torch.nn.utils.clip_grad_norm_ (2-norm over all the tensors together):
     N = ||(||g_i||)_i||,   coef = max_norm / (N + 1e-6),   g *= min(coef, 1);   returns N, before clipping.
   N is summed in double (exact to ~1e-16; torch reduces in the gradients' dtype, within an ulp or so of it); from N on,
   the coefficient and the products are computed in cllm_float as torch computes them. */
CLLMDEF double cllm_clip_grad_norm_arrays(cllm_float **grads, const size_t *sizes, int n, double max_norm) {
    double sq = 0, norm;
    cllm_float shifted, coef;
    size_t k;
    int i;
    for (i = 0; i < n; i++) for (k = 0; k < sizes[i]; k++) sq += (double)grads[i][k] * grads[i][k];
    norm = sqrt(sq);
    if (!(max_norm > 0)) return norm;
    shifted = (cllm_float)norm + (cllm_float)1e-6;     /* total_norm + 1e-6, a tensor of the gradients' dtype */
    coef = (1 / shifted) * (cllm_float)max_norm;      /* max_norm / tensor is Tensor.__rdiv__: reciprocal() * x */
    if (!(coef < 1)) return norm;                     /* clamp(max=1): multiplying by 1 changes nothing      */
    for (i = 0; i < n; i++) for (k = 0; k < sizes[i]; k++) grads[i][k] *= coef;
    return norm;
}

CLLMDEF double cllm_clip_grad_norm(cllm_model *m, double max_norm) {
    size_t n = m->num_params;
    if (!m->grads_memory) return 0;
    return cllm_clip_grad_norm_arrays(&m->grads_memory, &n, 1, max_norm);
}

/* transformers' get_constant_schedule_with_warmup, get_linear_schedule_with_warmup and
   get_cosine_schedule_with_warmup (num_cycles 0.5) at optimiser step `step` (the first update uses step 0):
     s < W: base s / max(1, W);   then constant: base;   linear: base max(0, (T - s) / max(1, T - W));
     cosine: base max(0, 0.5 (1 + cos(pi p))),  p = (s - W) / max(1, T - W).
   The factor is computed first and then multiplied by base, as LambdaLR does: the rate is transformers' to the bit. */
CLLMDEF double cllm_lr_at(cllm_schedule kind, double base_lr, long step, long warmup, long total) {
    double after = (double)(total - warmup > 1 ? total - warmup : 1), f;
    if (step < warmup) return base_lr * ((double)step / (double)(warmup > 1 ? warmup : 1));   /* LambdaLR: lr x f */
    if (kind == CLLM_SCHED_CONSTANT) return base_lr;
    if (kind == CLLM_SCHED_LINEAR) f = (double)(total - step) / after;
    else f = 0.5 * (1.0 + cos(3.14159265358979323846 * ((double)(step - warmup) / after)));
    return base_lr * (f > 0 ? f : 0);
}

/* -------------------------------------------------------------------------------------------- */
/* I.3 Objectives: DPO and its variants, PPO's per-token pieces and losses, GRPO                */
/* -------------------------------------------------------------------------------------------- */

/* The model-independent math of preference and RL training. Each function follows one library's semantics, named at
   its definition; where libraries differ, a switch selects. Everything is in double: a trainer converts its
   cllm_float values on the way in and out, and the tests compare with PyTorch float64 to ~1e-15. */

/* log sigmoid(x) without overflow: -log(1 + e^-x) for x >= 0, x - log(1 + e^x) below (torch's
   F.logsigmoid is -softplus(-x), the same function). */
static double cllm__log_sigmoid(double x) {
    return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

static double cllm__sigmoid(double x) {
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

static double cllm__clamp(double x, double lo, double hi) {
    return x < lo ? lo : x > hi ? hi : x;
}

/* d max(a, b) from da and db, as torch.maximum's backward: a tie sends half to each side. */
static double cllm__max_grad(double a, double b, double da, double db) {
    return a > b ? da : b > a ? db : 0.5 * (da + db);
}

/* ---- DPO and its variants (Rafailov et al. 2023, Eq. 7; TRL v0.19.1 DPOTrainer.dpo_loss) ----- */

/* The loss of one pair from z = (pc - pr) - (rc - rr): pc, pr are the policy's summed log-probs
   of the chosen and rejected completions, rc, rr the reference's (TRL subtracts in this order;
   reference_free drops the second difference). With b = beta, e = label_smoothing, s = sigmoid:
     sigmoid   l = -(1-e) log s(bz) - e log s(-bz)          the paper's loss; e > 0 is cDPO
     robust    l = (-(1-e) log s(bz) + e log s(-bz)) / (1-2e)   unbiased under a flip rate e
                                                            (Chowdhury et al. 2024)
     hinge     l = relu(1 - bz)                             SLiC (Zhao et al. 2023)
     IPO       l = (z - 1/(2b))^2                           Azar et al. 2023; TRL feeds it
                                                            per-token averaged log-probs
   and dl/dz, from d/dz[-log s(bz)] = -b s(-bz) and d/dz[-log s(-bz)] = b s(bz) (torch's relu
   has derivative 0 at 0). */
static void cllm__dpo_pair(const cllm_dpo_config *c, double z, double *loss, double *dz) {
    double b = c->beta, e = c->label_smoothing, bz = b * z;
    double target = 1 / (2 * b);
    switch (c->loss_type) {
        case CLLM_DPO_SIGMOID:
            *loss = -cllm__log_sigmoid(bz) * (1 - e) - cllm__log_sigmoid(-bz) * e;
            *dz = -b * cllm__sigmoid(-bz) * (1 - e) + b * cllm__sigmoid(bz) * e;
            break;
        case CLLM_DPO_ROBUST:
            *loss = (-cllm__log_sigmoid(bz) * (1 - e) + cllm__log_sigmoid(-bz) * e) / (1 - 2 * e);
            *dz = (-b * cllm__sigmoid(-bz) * (1 - e) - b * cllm__sigmoid(bz) * e) / (1 - 2 * e);
            break;
        case CLLM_DPO_HINGE:
            *loss = 1 - bz > 0 ? 1 - bz : 0;
            *dz = 1 - bz > 0 ? -b : 0;
            break;
        default:
            *loss = (z - target) * (z - target);
            *dz = 2 * (z - target);
    }
}

/* The mean of cllm__dpo_pair over n pairs, so dl/dpc_i = l'(z_i)/n and dl/dpr_i = -l'(z_i)/n (the reference is
   frozen), and TRL's metrics: rewards b (pc - rc) and b (pr - rr) (from the reference even when reference_free),
   their accuracy (strictly greater) and margin. Library differences: TRL >= 0.29 dropped label smoothing from sigmoid
   and removed reference_free; OpenRLHF feeds IPO summed log-probs. The original implementation
   (eric-mitchell/direct-preference-optimization: sigmoid with cDPO, IPO) uses the same formulas. */
CLLMDEF cllm_result cllm_dpo_loss(const cllm_dpo_config *cfg, int n, const double *policy_chosen,
                                  const double *policy_rejected, const double *ref_chosen, const double *ref_rejected,
                                  cllm_dpo_out *out, cllm_err *err) {
    cllm_dpo_config c = CLLM__ZERO;
    double sum_loss = 0, sum_cr = 0, sum_rr = 0, sum_acc = 0;
    int i;
    if (cfg) c = *cfg;
    c.beta = cllm__def(c.beta, 0.1);
    if (n < 1 || !policy_chosen || !policy_rejected || !out)
        return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: need n >= 1 pairs, the two policy logp arrays and an output");
    if (!c.reference_free && (!ref_chosen || !ref_rejected))
        return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: the reference logps are required unless reference_free is set");
    if (c.loss_type < CLLM_DPO_SIGMOID || c.loss_type > CLLM_DPO_IPO)
        return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: unknown loss_type %d (sigmoid, robust, hinge or ipo)",
                          (int)c.loss_type);
    if (!(c.beta > 0)) return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: beta must be > 0 (got %g)", c.beta);
    if (c.loss_type == CLLM_DPO_SIGMOID && !(c.label_smoothing >= 0 && c.label_smoothing <= 1))
        return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: label_smoothing must be in [0, 1] (got %g)",
                          c.label_smoothing);
    if (c.loss_type == CLLM_DPO_ROBUST && !(c.label_smoothing >= 0 && c.label_smoothing < 0.5))
        return cllm__fail(err, CLLM_ERR_ARG, "DPO loss: robust needs label_smoothing in [0, 0.5) (got %g)",
                          c.label_smoothing);
    for (i = 0; i < n; i++) {
        double ref_c = ref_chosen ? ref_chosen[i] : 0, ref_r = ref_rejected ? ref_rejected[i] : 0;
        double z = (policy_chosen[i] - policy_rejected[i]) - (c.reference_free ? 0 : ref_c - ref_r);
        double cr = c.beta * (policy_chosen[i] - ref_c);
        double rj = c.beta * (policy_rejected[i] - ref_r);
        double loss, dz;
        cllm__dpo_pair(&c, z, &loss, &dz);
        sum_loss += loss;
        sum_cr += cr;
        sum_rr += rj;
        sum_acc += cr > rj;
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
    return cllm__succeed(err);
}

/* ---- PPO: per-token KL and rewards, GAE, whitening, clipped losses (TRL v0.19 PPOTrainer) ---- */

/* With d = ref - logp = log(ref/policy) at the sampled token, E_policy[-d] = KL(policy||ref): k1 = -d is unbiased but
   noisy; k2 = d^2/2 is biased, low-variance; k3 = (e^d - 1) - d is unbiased and never negative (Schulman's estimator,
   TRL's order of operations). OpenRLHF and verl clamp these to [-10, 10] and verl the exponent to +-20; we do not. */
CLLMDEF double cllm_kl_estimate(double logp, double ref_logp, cllm_kl_estimator estimator) {
    double d = ref_logp - logp;
    if (estimator == CLLM_KL_K3) return (exp(d) - 1) - d;
    if (estimator == CLLM_KL_K2) return 0.5 * d * d;
    return -d;
}

/* TRL's sequence end: if stop_id >= 0, every position after the first stop_id becomes pad (truncate_response); then
   end = (first pad position) - 1, or L-1 if there is none; -1 for a response that starts with pad. With pad != eos
   this is the EOS position (the EOS is trained); with pad == eos (CollabLLM's tokenizer setting) it is the token
   before the EOS, so the EOS log-prob is never trained. */
CLLMDEF int cllm_ppo_sequence_end(const int *response, int L, int pad_id, int stop_id) {
    int stop = L, t;
    for (t = 0; stop_id >= 0 && t < L && stop == L; t++)
        if (response[t] == stop_id) stop = t;
    for (t = 0; t < L; t++)
        if (t > stop || response[t] == pad_id) return t - 1;   /* the first pad after truncation */
    return L - 1;
}

/* B rows of T tokens: checks the sizes and that B*T fits in memory arithmetic. */
static cllm_result cllm__check_bt(const char *fn, int B, int T, size_t *n, cllm_err *err) {
    *n = 0;
    if (B < 1 || T < 1) return cllm__fail(err, CLLM_ERR_ARG, "%s: B and T must be >= 1 (got %d, %d)", fn, B, T);
    if ((size_t)B > SIZE_MAX / sizeof(double) / (size_t)T)
        return cllm__fail(err, CLLM_ERR_LIMIT, "%s: B*T too large", fn);
    *n = (size_t)B * (size_t)T;
    return CLLM_OK;
}

/* TRL v0.19 PPOTrainer's per-token rewards of B responses of T tokens:
     kl[b,t] = cllm_kl_estimate(logp, ref) for t <= seq_end[b], else 0   (TRL sets both log-probs
               to INVALID_LOGPROB = 1.0 after the end, which gives 0)
     rewards = -kl_coef * kl;   rewards[b, e_b] += scores[b]
   with e_b = seq_end[b] + 1 (if < T) for CLLM_REWARD_AFTER_EOS, seq_end[b] for _LAST_TOKEN, and
   0 for an empty response. TRL's whiten_rewards option is cllm_masked_whiten(rewards, ~pm1,
   keep_mean 1) afterwards, then zero the pm1 positions (cllm_ppo_prepare does). */
CLLMDEF cllm_result cllm_ppo_rewards(const cllm_ppo_rewards_input *in, double *rewards, double *kl, cllm_err *err) {
    size_t n;
    int b, t;
    cllm_result rc = cllm__check_bt("PPO rewards", in->B, in->T, &n, err);
    if (rc != CLLM_OK) return rc;
    if (!in->logprobs || !in->ref_logprobs || !in->scores || !in->seq_end || !rewards)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "PPO rewards: logprobs, ref_logprobs, scores, seq_end and rewards are required");
    if (in->kl_estimator < CLLM_KL_K1 || in->kl_estimator > CLLM_KL_K3)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO rewards: unknown kl_estimator %d (k1, k2 or k3)",
                          (int)in->kl_estimator);
    if (in->placement != CLLM_REWARD_AFTER_EOS && in->placement != CLLM_REWARD_LAST_TOKEN)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO rewards: unknown placement %d", (int)in->placement);
    for (b = 0; b < in->B; b++) {
        int end = in->seq_end[b], e;
        if (end < -1 || end >= in->T)
            return cllm__fail(err, CLLM_ERR_ARG, "PPO rewards: seq_end[%d] = %d is outside [-1, %d]", b, end,
                              in->T - 1);
        for (t = 0; t < in->T; t++) {
            size_t i = (size_t)b * in->T + t;
            double k = t <= end ? cllm_kl_estimate(in->logprobs[i], in->ref_logprobs[i], in->kl_estimator) : 0;
            rewards[i] = 0.0 - in->kl_coef * k;       /* "0 -": a zero penalty is +0, not -0 */
            if (kl) kl[i] = k;
        }
        e = in->placement == CLLM_REWARD_AFTER_EOS && end + 1 < in->T ? end + 1 : end;
        if (e < 0) e = 0;                         /* an empty response: the score sits at t = 0 */
        rewards[(size_t)b * in->T + e] += in->scores[b];
    }
    return cllm__succeed(err);
}

/* Whitening, in place: x = (x - mean) * rstd (+ mean again if keep_mean: TRL's shift_mean=False, used on rewards),
   with the statistics over the n values weighted by mask (NULL = all 1), s = sum(mask):
     biased 0 (TRL, verl masked_whiten): var = masked mean of (x-mean)^2 * s/(s-1),
                                         rstd = 1/sqrt(var + 1e-8); needs s > 1
     biased 1 (OpenRLHF advantages):     var without Bessel's correction, rstd = 1/sqrt(max(var, 1e-8)) */
CLLMDEF cllm_result cllm_masked_whiten(double *x, const double *mask, size_t n, int keep_mean, int biased,
                                       cllm_err *err) {
    double s = 0, mean = 0, var = 0, rstd;
    size_t i;
    for (i = 0; i < n; i++) {
        double m = mask ? mask[i] : 1;
        s += m;
        mean += x[i] * m;
    }
    if (!(s > (biased ? 0 : 1)))
        return cllm__fail(err, CLLM_ERR_ARG, "whitening: the mask selects %g values; whitening needs %s", s,
                          biased ? "at least one" : "at least 2 (Bessel's correction s/(s-1))");
    mean /= s;
    for (i = 0; i < n; i++) {
        double m = mask ? mask[i] : 1, d = x[i] - mean;
        var += d * d * m;
    }
    var /= s;
    if (biased) rstd = 1 / sqrt(var > 1e-8 ? var : 1e-8);
    else rstd = 1 / sqrt(var * (s / (s - 1)) + 1e-8);
    for (i = 0; i < n; i++) x[i] = (x[i] - mean) * rstd + (keep_mean ? mean : 0);
    return cllm__succeed(err);
}

/* Generalised advantage estimation (Schulman et al. 2016, Eq. 16), over each row backwards:
     delta_t = r_t + gamma V_{t+1} - V_t   (V_T = 0);   A_t = delta_t + gamma lam A_{t+1}
     returns = A + V (before whitening);   whiten: cllm_masked_whiten(A, mask, unbiased) over the
   whole batch. TRL has already set values after end+1 to 0 and rewards after the score to 0. CLLM_GAE_TRL (TRL v0.19)
   runs the recursion over all T positions; the mask only selects the whitening statistics and (when whitening) zeroes
   masked advantages. Legacy TRL and OpenRLHF are this after values *= mask, rewards *= mask. CLLM_GAE_SKIP is verl's
   compute_gae_advantage_return: a position with mask 0 passes V_{t+1} and A_{t+1} through unchanged, and keeps its
   whitened value. */
CLLMDEF cllm_result cllm_gae(const cllm_gae_input *in, double *advantages, double *returns, cllm_err *err) {
    const double *mask = in->mask;
    size_t n, i;
    int b, t;
    cllm_result rc = cllm__check_bt("GAE", in->B, in->T, &n, err);
    if (rc != CLLM_OK) return rc;
    if (!in->rewards || !in->values || !advantages || !returns)
        return cllm__fail(err, CLLM_ERR_ARG, "GAE: rewards, values, advantages and returns are required");
    if (in->mode != CLLM_GAE_TRL && in->mode != CLLM_GAE_SKIP)
        return cllm__fail(err, CLLM_ERR_ARG, "GAE: unknown mode %d (TRL or skip)", (int)in->mode);
    for (b = 0; b < in->B; b++) {
        double next_value = 0;              /* V_{t+1} and A_{t+1}: both 0 past the end */
        double running = 0;
        for (t = in->T - 1; t >= 0; t--) {
            double m, delta, a;
            i = (size_t)b * in->T + t;
            m = mask ? mask[i] : 1;
            delta = in->rewards[i] + in->gamma * next_value - in->values[i];
            a = delta + in->gamma * in->lam * running;
            if (in->mode == CLLM_GAE_TRL) {
                running = a;
                next_value = in->values[i];
            } else {                        /* verl: masked positions are transparent */
                next_value = in->values[i] * m + (1 - m) * next_value;
                running = a * m + (1 - m) * running;
            }
            advantages[i] = running;
        }
    }
    for (i = 0; i < n; i++) returns[i] = advantages[i] + in->values[i];
    if (in->whiten) {
        if ((rc = cllm_masked_whiten(advantages, mask, n, 0, 0, err)) != CLLM_OK) return rc;
        for (i = 0; in->mode == CLLM_GAE_TRL && mask && i < n; i++)
            if (mask[i] == 0) advantages[i] = 0;
    }
    return cllm__succeed(err);
}

/* TRL v0.19 PPOTrainer's loss (Schulman et al. 2017, Eq. 7 with TRL's clipped value loss), per token with
   r = exp(logp - old) and A the advantage:
     pg = max(-A r, -A clamp(r, 1-c, 1+c))           d/dlogp: -A r from each side that is active
                                                     (dr/dlogp = r; clamp passes it on [1-c, 1+c])
     vf = max((v-R)^2, (clamp(v, ov-cv, ov+cv)-R)^2) d/dv: 2(v-R), or 2(vc-R) inside the clamp range
   loss = masked_mean(pg, mask) + vf_coef 0.5 masked_mean(vf, value_mask); the gradients of the means carry
   mask/sum(mask). torch's subgradients: max() splits a tie evenly, clamp() passes the gradient on its closed interval.
   Library differences: verl and OpenRLHF clamp logp - old to +-20 before exp, verl adds a dual clip for A < 0, and
   their aggregations (token-mean over the global batch, seq-mean-...) differ; OpenRLHF clips the value around
   old_values the same way with cliprange_value 0.5 by default. */
CLLMDEF cllm_result cllm_ppo_loss(const cllm_ppo_loss_input *in, cllm_ppo_loss_out *out, cllm_err *err) {
    const double *mask = in->mask;
    const double *vmask = in->value_mask ? in->value_mask : in->mask;
    double msum = 0, vsum = 0, pg = 0, vf = 0, clip = 0, vclip = 0, kl = 0;
    size_t n, i;
    cllm_result rc = cllm__check_bt("PPO loss", in->B, in->T, &n, err);
    if (rc != CLLM_OK) return rc;
    if (!in->logprobs || !in->old_logprobs || !in->advantages || !in->values || !in->old_values || !in->returns ||
        !mask || !out)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO loss: logprobs, old_logprobs, advantages, values, old_values, "
                                             "returns, mask and out are required");
    if (!(in->cliprange >= 0) || !(in->cliprange_value >= 0))
        return cllm__fail(err, CLLM_ERR_ARG, "PPO loss: cliprange and cliprange_value must be >= 0");
    for (i = 0; i < n; i++) {
        msum += mask[i];
        vsum += vmask[i];
    }
    if (!(msum > 0) || !(vsum > 0))
        return cllm__fail(err, CLLM_ERR_ARG, "PPO loss: the mask (or value_mask) selects no token");
    for (i = 0; i < n; i++) {
        double A = in->advantages[i], diff = in->logprobs[i] - in->old_logprobs[i];
        double r = exp(diff);
        double lo = 1 - in->cliprange, hi = 1 + in->cliprange, pg1 = -A * r;
        double pg2 = -A * cllm__clamp(r, lo, hi);
        double v = in->values[i], R = in->returns[i], vlo = in->old_values[i] - in->cliprange_value;
        double vhi = in->old_values[i] + in->cliprange_value;
        double vc = cllm__clamp(v, vlo, vhi);
        double vf1 = (v - R) * (v - R);
        double vf2 = (vc - R) * (vc - R);
        double dpg = cllm__max_grad(pg1, pg2, -A * r, r >= lo && r <= hi ? -A * r : 0);
        double dvf = cllm__max_grad(vf1, vf2, 2 * (v - R), v >= vlo && v <= vhi ? 2 * (vc - R) : 0);
        pg += (pg1 > pg2 ? pg1 : pg2) * mask[i];
        clip += (pg2 > pg1) * mask[i];
        kl += diff * diff;
        vf += (vf1 > vf2 ? vf1 : vf2) * vmask[i];
        vclip += (vf2 > vf1) * vmask[i];
        if (out->d_logprobs) out->d_logprobs[i] = mask[i] != 0 ? dpg * mask[i] / msum : 0;
        if (out->d_values) out->d_values[i] = vmask[i] != 0 ? in->vf_coef * 0.5 * dvf * vmask[i] / vsum : 0;
    }
    out->pg_loss = pg / msum;
    out->vf_loss = 0.5 * (vf / vsum);
    out->loss = out->pg_loss + in->vf_coef * out->vf_loss;
    out->clipfrac = clip / msum;
    out->vf_clipfrac = vclip / vsum;
    out->approxkl = 0.5 * (kl / (double)n);
    return cllm__succeed(err);
}

/* Legacy TRL's RunningMoments (<= 0.11, use_score_scaling): the mean and population variance of
   every value so far, starting from mean 0, var 1, count 1e-24, merged one batch (mean m_b,
   population variance v_b, n values) at a time (Chan et al. 1979):
     d = m_b - mean, N = count + n,
     var = (var count + d^2 count n / N + v_b n) / N,   mean += d n / N,   std = sqrt(var N / (N - 1)).
   The batch's own mean and unbiased std go to *batch_mean and *batch_std. */
CLLMDEF void cllm_running_moments_init(cllm_running_moments *rm) {
    rm->mean = 0;
    rm->var = 1;
    rm->std = 1;
    rm->count = 1e-24;
}

CLLMDEF void cllm_running_moments_update(cllm_running_moments *rm, const double *x, int n, double *batch_mean,
                                         double *batch_std) {
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

/* Legacy TRL's AdaptiveKLController (Ziegler et al. 2019): the KL coefficient follows a target,
   coef * (1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon). */
CLLMDEF double cllm_adaptive_kl_update(double coef, double kl, double target, double horizon, double n_steps) {
    double e = cllm__clamp(kl / target - 1, -0.2, 0.2);
    return coef * (1 + e * n_steps / horizon);
}

/* ---- GRPO and RLOO: group advantages and the token-level loss (TRL v0.19 GRPOTrainer) -------- */

/* n rewards in consecutive groups of G = group_size, each reward's advantage against its group:
     GRPO (Shao et al. 2024)   A_i = r_i - mean(group), divided by (std(group) + eps) if scale
     RLOO (Ahmadian et al.)    A_i = r_i - (sum(group) - r_i) / (G-1)   (leave-one-out baseline)
   std is torch's unbiased std. TRL v0.19 GRPO: scale 1, eps 1e-4 (scale_rewards=False: scale 0,
   as Dr. GRPO); verl uses eps 1e-6, OpenRLHF group_norm 1e-9. Scaling needs G >= 2 (verl instead
   uses mean 0, std 1 for a single sample); RLOO needs G >= 2 and ignores scale and eps. */
CLLMDEF cllm_result cllm_grpo_advantages(int n, const double *rewards, int group_size, cllm_group_estimator estimator,
                                         int scale, double eps, double *advantages, cllm_err *err) {
    int G = group_size, g, i;
    if (n < 1 || G < 1 || n % G)
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO advantages: %d rewards do not split into groups of %d", n, G);
    if (!rewards || !advantages)
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO advantages: rewards and advantages are required");
    if (estimator != CLLM_GROUP_GRPO && estimator != CLLM_GROUP_RLOO)
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO advantages: unknown estimator %d (grpo or rloo)", (int)estimator);
    if (G < 2 && (estimator == CLLM_GROUP_RLOO || scale))
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO advantages: %s needs group_size >= 2",
                          estimator == CLLM_GROUP_RLOO ? "RLOO" : "scaling by the unbiased std");
    for (g = 0; g < n; g += G) {
        const double *r = rewards + g;
        double sum = 0, var = 0, mean;
        for (i = 0; i < G; i++) sum += r[i];
        mean = sum / G;
        for (i = 0; i < G; i++) var += (r[i] - mean) * (r[i] - mean);
        for (i = 0; i < G; i++) {
            if (estimator == CLLM_GROUP_RLOO) advantages[g + i] = r[i] - (sum - r[i]) / (G - 1);
            else if (scale) advantages[g + i] = (r[i] - mean) / (sqrt(var / (G - 1)) + eps);
            else advantages[g + i] = r[i] - mean;
        }
    }
    return cllm__succeed(err);
}

/* TRL v0.19 GRPOTrainer's loss on B sequences of T tokens: per token, with r = exp(logp - old)
   and A_b the sequence's advantage,
     l = -min(r A_b, clamp(r, 1 - eps_low, 1 + eps_high) A_b) + beta k3,
     k3 = exp(ref - logp) - (ref - logp) - 1,    d k3 / d logp = 1 - exp(ref - logp),
   aggregated over the mask by loss_type: bnpo divides the sum by the micro-batch's tokens, grpo
   averages each sequence's mean, dr_grpo divides by B x max_completion_length (Liu et al. 2025).
   The min's gradient splits a tie evenly, as torch.minimum. */
CLLMDEF cllm_result cllm_grpo_loss(const cllm_grpo_loss_input *in, cllm_grpo_loss_out *out, cllm_err *err) {
    const double *mask = in->mask;
    double total = 0, msum = 0, kl = 0, clipped = 0;
    int B = in->B, T = in->T, b, t;
    if (B < 1 || T < 1 || !in->logprobs || !in->old_logprobs || !in->advantages || !mask || !out)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "GRPO loss: needs B, T >= 1, logprobs, old_logprobs, advantages, mask and out");
    if (in->beta != 0 && !in->ref_logprobs)
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO loss: beta %g needs the reference log-probs", in->beta);
    if (in->loss_type < CLLM_GRPO_BNPO || in->loss_type > CLLM_GRPO_DR_GRPO)
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO loss: unknown loss_type %d", (int)in->loss_type);
    if (in->loss_type == CLLM_GRPO_DR_GRPO && in->max_completion_length < 1)
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO loss: dr_grpo needs max_completion_length");
    for (b = 0; b < B; b++)
        for (t = 0; t < T; t++) msum += mask[(size_t)b * T + t];
    for (b = 0; b < B; b++) {
        double len = 0, A = in->advantages[b];
        for (t = 0; t < T; t++) len += mask[(size_t)b * T + t];
        for (t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            double r = exp(in->logprobs[i] - in->old_logprobs[i]);
            int inside = r >= 1 - in->eps_low && r <= 1 + in->eps_high;
            double l1 = -r * A;                                   /* -min(rA, rc A) = max(l1, l2) */
            double l2 = -cllm__clamp(r, 1 - in->eps_low, 1 + in->eps_high) * A;
            double l = l1 > l2 ? l1 : l2;
            double d = cllm__max_grad(l1, l2, -r * A, inside ? -r * A : 0);
            double k3 = 0, w;
            if (in->ref_logprobs) {
                double x = in->ref_logprobs[i] - in->logprobs[i];
                k3 = exp(x) - x - 1;
                if (in->beta != 0) {
                    l += in->beta * k3;
                    d += in->beta * (1 - exp(x));
                }
            }
            /* the loss's weight on this token, by aggregation */
            if (in->loss_type == CLLM_GRPO_BNPO) w = 1 / (msum > 1 ? msum : 1);
            else if (in->loss_type == CLLM_GRPO_GRPO) w = 1 / ((len > 1 ? len : 1) * B);
            else w = 1.0 / ((double)B * in->max_completion_length);
            total += l * mask[i] * w;
            if (out->d_logprobs) out->d_logprobs[i] = mask[i] != 0 ? d * mask[i] * w : 0;
            kl += k3 * mask[i];
            clipped += (l2 > l1) * mask[i];
        }
    }
    out->loss = total;
    out->kl = msum > 0 ? kl / msum : 0;
    out->clip_ratio = msum > 0 ? clipped / msum : 0;
    return cllm__succeed(err);
}

/* -------------------------------------------------------------------------------------------- */
/* I.4 The multiturn-aware reward (paper section 3.1, Eq. 1-4)                                  */
/* -------------------------------------------------------------------------------------------- */

/* The paper scores a response m_j to the history t_j^h (turns 1..j-1 and the user's u_j) by the
   conversation it leads to, not by the response alone:
       MR(m_j | t_j^h, g) = E over futures t_j^f ~ P(. | t_j^h + m_j) of R*(t_j^h + m_j + t_j^f | g)   (Eq. 1-2)
   estimated with S sampled futures, each of up to w exchanges (the simulated user speaks, then the
   assistant) after m_j; a user termination ends a future early. R* (Eq. 3-4) rates the whole
   session against the user's goal g. Reading order: R*, then MR, then the simulation that samples
   the futures, the user simulator that speaks in them (appendix D.1) and the judges (appendix D.4). */

/* ---- R*: the reward of a whole session (paper Eq. 3-4) --------------------------------------- */

/* TokenCount of the penalty and the token_amount metric: the counter's function, or (none given)
   Python's str.split() words, runs of ASCII white space apart, as verl's CollabLLM recipe counts. */
CLLMDEF int cllm_count_tokens(const cllm_token_counter *tc, const char *text) {
    int n = 0, in_word = 0;
    if (!text) return 0;
    if (tc && tc->count) return tc->count(tc->ctx, text);
    for (; *text; text++) {
        int space = *text == ' ' || (*text >= '\t' && *text <= '\r');
        if (!space && !in_word) n++;
        in_word = !space;
    }
    return n;
}

/* The token count of some messages of c joined into one text, as CollabLLM counts them: from message `from` on,
   only those of `role` (NULL: every role), their contents joined by sep. v1's penalty counts the candidate and the
   future joined by "\n" (core/multiturn_reward.py); v2's token_amount the assistant messages of the whole session
   joined by " " (examples/metrics/efficiency.py). With BPE the join matters: "a\nb" is three tokens where "a"
   and "b" are two. -1 when out of memory. */
static int cllm__count_joined(const cllm_token_counter *tc, const cllm_conv *c, int from, const char *role,
                              const char *sep) {
    cllm__sb text = { NULL, 0, 0, 0 };
    char *joined;
    int t, any = 0, n;
    for (t = from; t < c->n; t++) {
        if (role && strcmp(c->msgs[t].role, role) != 0) continue;
        if (any) cllm__sb_puts(&text, sep);
        cllm__sb_puts(&text, c->msgs[t].content);
        any = 1;
    }
    joined = cllm__sb_take(&text);
    n = joined ? cllm_count_tokens(tc, joined) : -1;
    CLLM_FREE(joined);
    return n;
}

CLLMDEF int cllm_tokenizer_count(void *tokenizer, const char *text) {
    int *ids = NULL, n = 0;
    const cllm_tokenizer *tok = (const cllm_tokenizer *)tokenizer;
    if (cllm_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, NULL, NULL) != CLLM_OK) n = 0;
    CLLM_FREE(ids);
    return n;
}

/* CollabLLM's TokenCount: len(cl100k_base.encode(text, disallowed_special=())), i.e. tiktoken's encode_ordinary. */
CLLMDEF int cllm_tiktoken_count(void *tiktoken, const char *text) {
    int *ids = NULL, n = 0;
    cllm_result rc = cllm_tiktoken_encode((const cllm_tiktoken *)tiktoken, text, strlen(text), &ids, &n, NULL, NULL);
    CLLM_FREE(ids);
    return rc == CLLM_OK ? n : 0;
}

/* Paper Table 6: w = 2 and S = 3 for every task; lambda = 1e-4 for document editing (MediumDocEdit),
   5e-4 for code (BigCodeBench) and math (MATH). */
CLLMDEF void cllm_mr_config_init(cllm_mr_config *cfg, cllm_mr_preset preset) {
    memset(cfg, 0, sizeof *cfg);
    cfg->window = 2;
    cfg->samples = 3;
    cfg->variant = CLLM_MR_PAPER;
    cfg->lambda = preset == CLLM_MR_PRESET_DOCUMENT ? 1e-4 : 5e-4;
}

/* R* of one session from its metric values. The paper (Eq. 3-4):
       R*(t | g) = R_ext(t, g) + R_int(t),  R_ext = the task metric of the extracted result,
       R_int = -min(lambda * TokenCount(t), 1) + R_LLM(t)  (the judge's interactivity)
   which collabllm.h writes as a weighted sum of named metrics plus the capped token penalty:
       paper (CLLM_MR_PAPER):           R* = sum_m w_m metric_m - min(lambda * tokens, 1)
       weighted sum (CollabLLM's code): R* = sum_m w_m metric_m
   tokens counts the candidate and the simulated future, both roles (CollabLLM v1); the weighted sum
   instead charges tokens through a "token_amount" metric (assistant tokens / 1000) with a negative
   weight and no cap (CollabLLM v2). A metric that failed (NAN) fails the session. */
CLLMDEF double cllm_mr_reward(const cllm_mr_config *cfg, const double *metric_values, int tokens) {
    double r = 0, penalty;
    int m;
    for (m = 0; m < cfg->n_metrics; m++) {
        if (metric_values[m] != metric_values[m]) return NAN;
        r += cfg->metrics[m].weight * metric_values[m];
    }
    if (cfg->variant == CLLM_MR_PAPER) {
        penalty = cfg->lambda * tokens;
        r -= penalty < 1 ? penalty : 1;
    }
    return r;
}

/* ---- MR: the mean R* over S simulated futures (paper Eq. 1-2) -------------------------------- */

/* One metric on n sessions, by cllm_metric_fn's contract: scores[k], NAN for a session it could not
   score, and every one NAN when the metric failed as a whole (its result code); why says why. */
static cllm_result cllm__metric_run(const cllm_metric *met, const cllm_session *sessions, int n, double *scores,
                                    cllm_err *why) {
    cllm_result rc = CLLM_OK;
    int k;
    cllm__ok(why);
    for (k = 0; k < n; k++) scores[k] = NAN;
    if (n > 0) rc = met->fn(met->ctx, sessions, n, scores, why);
    for (k = 0; rc != CLLM_OK && k < n; k++) scores[k] = NAN;
    return rc;
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

/* Step 4 of MR for one candidate whose S futures are simulated and scored (paper Eq. 1-2):
       R*_s = cllm_mr_reward(metrics_s, tokens_s),  MR = mean of R*_s over the samples that succeeded,
       std = their population standard deviation (CollabLLM logs reward_std),
   tokens_s counting the candidate and the future, both roles, joined by "\n" (v1's penalty). cllm_mr_score ends with
   it; futures simulated elsewhere (CollabLLM's logged sessions and rewards) are scored by filling r->samples[s]'s
   session, n_history, metrics (NAN = failed) and code, then calling it. CLLM_OK when a sample succeeded, else
   r->code and r->err say why the first one failed. */
CLLMDEF cllm_result cllm_mr_from_samples(const cllm_mr_config *cfg, cllm_mr_result *r) {
    double sum = 0;
    double sq = 0;
    double var;
    int s;
    r->n_ok = 0;
    for (s = 0; s < r->n_samples; s++) {
        cllm_mr_sample *smp = &r->samples[s];
        smp->tokens = cllm__count_joined(&cfg->tokens, &smp->session, smp->n_history, NULL, "\n");
        if (smp->tokens < 0 && smp->code == CLLM_OK)
            smp->code = cllm__fail(&smp->err, CLLM_ERR_NOMEM, "out of memory counting tokens");
        smp->reward = smp->code == CLLM_OK ? cllm_mr_reward(cfg, smp->metrics, smp->tokens) : NAN;
        if (smp->reward != smp->reward) continue;
        r->n_ok++;
        sum += smp->reward;
        sq += smp->reward * smp->reward;
    }
    if (r->n_ok > 0) {
        r->mr = sum / r->n_ok;
        var = sq / r->n_ok - r->mr * r->mr;
        r->std = var > 0 ? sqrt(var) : 0;
        r->code = CLLM_OK;
        return CLLM_OK;
    }
    r->mr = NAN;
    for (s = 0; s < r->n_samples && r->samples[s].code == CLLM_OK; s++) {}
    if (s < r->n_samples) r->err = r->samples[s].err;
    else cllm__fail(&r->err, CLLM_ERR_FORMAT, "no sample to score");
    if (!r->err.code) r->err.code = CLLM_ERR_FORMAT;
    r->code = r->err.code;
    return r->code;
}

/* MR of n candidates, Monte Carlo over S futures each (paper Eq. 1-2):
     1. every future starts as t_j^h + m_j: sample s of item i is conversation i*S + s;
     2. t_j^f: all n*S conversations advance together by up to w exchanges, user first (cllm_simulate:
        each round of simulator and assistant calls is one concurrent batch); w = 0 is the paper's
        immediate-reward ablation, the candidate scored as it stands;
     3. each metric scores every session whose simulation succeeded, in one batch per metric;
     4. R* per sample (cllm_mr_reward), MR = the mean over the samples that succeeded, with their
        standard deviation (CollabLLM logs reward_std). A failed sample is left out, never a 0. */
CLLMDEF cllm_result cllm_mr_score(const cllm_mr_config *cfg, const cllm_user_sim *user,
                                  const cllm_assistant *future_assistant, const cllm_mr_item *items, int n,
                                  cllm_mr_result *out, cllm_err *err) {
    int S = cfg && cfg->samples > 0 ? cfg->samples : 1, N = n * S, i, s, k, m, n_ok;
    cllm_conv *convs = NULL;
    cllm_goal *goals = NULL;
    cllm_sim_status *status = NULL;
    cllm_session *sessions = NULL;
    int *ok_idx = NULL;
    double *scores = NULL;
    cllm_result rc = CLLM_OK;

    if (!cfg || n < 0 || (n > 0 && (!items || !out)))
        return cllm__fail(err, CLLM_ERR_ARG, "MR: needs a config, items and outputs");
    if (cfg->window < 0) return cllm__fail(err, CLLM_ERR_ARG, "MR: window must be >= 0 (0 = immediate reward)");
    if (cfg->window > 0 && (!user || !future_assistant))
        return cllm__fail(err, CLLM_ERR_ARG, "MR: window %d needs a user simulator and a future assistant",
                          cfg->window);
    for (i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        if (!items[i].goal || !items[i].history || !items[i].candidate)
            return cllm__fail(err, CLLM_ERR_ARG, "MR: item %d needs a goal, a history and a candidate", i);
    }
    if (N == 0) return cllm__succeed(err);
    convs = (cllm_conv *)cllm__calloc((size_t)N, sizeof *convs);
    goals = (cllm_goal *)cllm__calloc((size_t)N, sizeof *goals);
    status = (cllm_sim_status *)cllm__calloc((size_t)N, sizeof *status);
    sessions = (cllm_session *)cllm__calloc((size_t)N, sizeof *sessions);
    ok_idx = (int *)cllm__calloc((size_t)N, sizeof *ok_idx);
    scores = (double *)cllm__calloc((size_t)N, sizeof *scores);
    if (!convs || !goals || !status || !sessions || !ok_idx || !scores)
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");

    /* 1. t_j^h + m_j */
    for (k = 0; k < N && rc == CLLM_OK; k++) {
        i = k / S;
        goals[k] = *items[i].goal;
        rc = cllm_conv_copy(&convs[k], items[i].history, err);
        if (rc == CLLM_OK) rc = cllm_conv_push(&convs[k], "assistant", items[i].candidate, err);
    }
    if (rc != CLLM_OK) goto done;

    /* 2. t_j^f: w exchanges are 2w messages, as CollabLLM's max_new_turns counts them */
    if (cfg->window > 0) cllm_simulate(user, future_assistant, goals, convs, N, 2 * cfg->window, status, NULL);

    /* 3. the metrics, on the sessions whose simulation succeeded */
    for (i = 0, n_ok = 0; i < n; i++) {
        out[i].n_samples = S;
        out[i].samples = (cllm_mr_sample *)cllm__calloc((size_t)S, sizeof(cllm_mr_sample));
        if (!out[i].samples) {
            rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (s = 0; s < S; s++) {
            cllm_mr_sample *smp = &out[i].samples[s];
            k = i * S + s;
            smp->session = convs[k];                  /* ownership moves to the result */
            memset(&convs[k], 0, sizeof convs[k]);
            smp->n_history = items[i].history->n;
            smp->terminated = status[k].terminated;
            smp->code = status[k].code;
            smp->err = status[k].err;
            smp->metrics = (double *)cllm__calloc((size_t)cfg->n_metrics + 1, sizeof(double));
            if (!smp->metrics) {
                rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
                goto done;
            }
            for (m = 0; m < cfg->n_metrics; m++) smp->metrics[m] = NAN;
            if (smp->code != CLLM_OK) continue;
            sessions[n_ok].goal = items[i].goal;
            sessions[n_ok].task = items[i].task;
            sessions[n_ok].conv = &smp->session;
            sessions[n_ok].n_history = smp->n_history;
            ok_idx[n_ok++] = k;
        }
    }
    for (m = 0; m < cfg->n_metrics; m++) {
        const cllm_metric *met = &cfg->metrics[m];
        cllm_err metric_err;
        cllm_result metric_rc = cllm__metric_run(met, sessions, n_ok, scores, &metric_err);
        for (k = 0; k < n_ok; k++) {
            cllm_mr_sample *smp = &out[ok_idx[k] / S].samples[ok_idx[k] % S];
            smp->metrics[m] = scores[k];
            if (scores[k] == scores[k] || smp->code != CLLM_OK) continue;
            smp->code = cllm__fail(&smp->err, metric_rc != CLLM_OK ? metric_rc : CLLM_ERR_FORMAT,
                                   "metric '%s' could not score this session: %s", met->name ? met->name : "?",
                                   metric_err.msg[0] ? metric_err.msg : "it gave no reason");
        }
    }

    /* 4. R* per sample, then MR = their mean */
    for (i = 0; i < n; i++) {
        if (cllm_mr_from_samples(cfg, &out[i]) != CLLM_OK && rc == CLLM_OK)
            rc = cllm__fail(err, out[i].code, "MR item %d: every sample failed: %s", i, out[i].err.msg);
    }
done:
    for (k = 0; convs && k < N; k++) cllm_conv_free(&convs[k]);
    CLLM_FREE(convs);
    CLLM_FREE(goals);
    CLLM_FREE(status);
    CLLM_FREE(sessions);
    CLLM_FREE(ok_idx);
    CLLM_FREE(scores);
    if (rc == CLLM_OK) cllm__ok(err);
    for (i = 0; rc != CLLM_OK && i < n; i++)
        if (out[i].code == CLLM_OK && !out[i].samples) out[i].code = rc;
    return rc;
}

/* ---- simulating futures in lockstep ---------------------------------------------------------- */

/* The user speaks next unless the last message is the user's. */
static int cllm__user_next(const cllm_conv *c) {
    return c->n == 0 || strcmp(c->msgs[c->n - 1].role, "user") != 0;
}

/* Runs n conversations forward together: each round, every conversation waiting for its user gets
   the user's message (one batch), then every one waiting for its assistant, including those whose
   user just spoke (a second batch). Conversation i stops when its user terminates (the message is
   kept, as CollabLLM does), a call fails, a message would make its JSON line unreadable, or
   max_new_messages were added (both roles count, as CollabLLM's max_new_turns). */
CLLMDEF cllm_result cllm_simulate(const cllm_user_sim *user, const cllm_assistant *assistant, const cllm_goal *goals,
                                  cllm_conv *convs, int n, int max_new_messages, cllm_sim_status *status,
                                  cllm_err *err) {
    cllm_sim_status *st = status ? status : (cllm_sim_status *)cllm__calloc((size_t)n + 1, sizeof *st);
    int *idx = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    int *active = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    cllm_conv *view = (cllm_conv *)cllm__calloc((size_t)n + 1, sizeof *view);
    cllm_goal *g = (cllm_goal *)cllm__calloc((size_t)n + 1, sizeof *g);
    cllm_reply *rep = (cllm_reply *)cllm__calloc((size_t)n + 1, sizeof *rep);
    cllm_result rc = CLLM_OK;
    int i, k, m, users, left;
    if (!user || !assistant || n < 0 || (n > 0 && (!goals || !convs)))
        rc = cllm__fail(err, CLLM_ERR_ARG, "simulation: needs a user simulator, an assistant, goals and conversations");
    else if (!st || !idx || !active || !view || !g || !rep)
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; rc == CLLM_OK && i < n; i++) {
        memset(&st[i], 0, sizeof st[i]);
        active[i] = max_new_messages > 0;
    }
    left = rc == CLLM_OK && max_new_messages > 0 ? n : 0;
    while (left > 0) {
        for (users = 1; users >= 0; users--) {
            const char *role = users ? "user" : "assistant";
            for (i = 0, m = 0; i < n; i++) {
                if (!active[i] || cllm__user_next(&convs[i]) != users) continue;
                idx[m] = i;
                view[m] = convs[i];
                g[m] = goals[i];
                m++;
            }
            if (m == 0) continue;
            if (users) cllm_user_sim_turns(user, g, view, m, rep, NULL);
            else cllm_assistant_replies(assistant, view, m, rep, NULL);
            for (k = 0; k < m; k++) {
                size_t bytes = 0;
                i = idx[k];
                if (rep[k].code == CLLM_OK)               /* keep every conversation one readable line */
                    bytes = cllm__conv_json_bytes(&convs[i]) + cllm__json_escaped_len(rep[k].text, strlen(rep[k].text));
                if (bytes > CLLM__MAX_TEXT_JSON) {
                    st[i].code = cllm__fail(&st[i].err, CLLM_ERR_LIMIT,
                                            "conversation %d: with this %s message it would take about %zu bytes as "
                                            "JSON, more than a line of ours may hold (CLLM_MAX_LINE_BYTES); stopped "
                                            "before it", i, role, bytes);
                } else if (rep[k].code != CLLM_OK) {
                    st[i].code = rep[k].code;
                    st[i].err = rep[k].err;
                } else if (cllm_conv_push_meta(&convs[i], role, rep[k].text, &rep[k].meta, &st[i].err) != CLLM_OK) {
                    st[i].code = st[i].err.code;
                } else {
                    st[i].n_new++;
                    if (users && rep[k].terminated) st[i].terminated = 1;
                }
                if (st[i].code != CLLM_OK || st[i].terminated || st[i].n_new >= max_new_messages) {
                    active[i] = 0;
                    left--;
                }
                cllm_reply_free(&rep[k]);
            }
        }
    }
    if (rc == CLLM_OK) rc = CLLM__BATCH_RESULT(st, n, "conversations", err);
    if (st != status) CLLM_FREE(st);
    CLLM_FREE(idx);
    CLLM_FREE(active);
    CLLM_FREE(view);
    CLLM_FREE(g);
    CLLM_FREE(rep);
    return rc;
}

CLLMDEF void cllm_reply_free(cllm_reply *r) {
    if (!r) return;
    CLLM_FREE(r->text);
    CLLM_FREE(r->thought);
    CLLM_FREE(r->current_answer);
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
        if (out[i].code == CLLM_OK && !out[i].text)
            cllm__fail(&out[i].err, out[i].code = CLLM_ERR_FORMAT, "%s returned no text", who);
        if (out[i].code != CLLM_OK && !out[i].err.msg[0])
            cllm__fail(&out[i].err, out[i].code, "%s failed (%s)", who, cllm_result_string(out[i].code));
    }
    return CLLM__BATCH_RESULT(out, n, "replies", err);
}

CLLMDEF cllm_result cllm_user_sim_turns(const cllm_user_sim *sim, const cllm_goal *goals, const cllm_conv *histories,
                                        int n, cllm_reply *out, cllm_err *err) {
    int i;
    if (!sim || (!sim->turn && !sim->turn_batch) || n < 0 || (n > 0 && (!goals || !histories || !out)))
        return cllm__fail(err, CLLM_ERR_ARG,
                          "user simulator: needs a simulator with turn or turn_batch, goals, histories and out");
    if (n == 0) return cllm__succeed(err);
    memset(out, 0, (size_t)n * sizeof *out);
    if (sim->turn_batch) sim->turn_batch(sim->ctx, goals, histories, n, out);
    for (i = 0; !sim->turn_batch && i < n; i++) out[i].code = sim->turn(sim->ctx, &goals[i], &histories[i], &out[i]);
    return cllm__replies_check(out, n, "the user simulator", err);
}

CLLMDEF cllm_result cllm_assistant_replies(const cllm_assistant *a, const cllm_conv *histories, int n,
                                           cllm_reply *out, cllm_err *err) {
    int i;
    if (!a || (!a->respond && !a->respond_batch) || n < 0 || (n > 0 && (!histories || !out)))
        return cllm__fail(err, CLLM_ERR_ARG,
                          "assistant: needs an assistant with respond or respond_batch, histories and out");
    if (n == 0) return cllm__succeed(err);
    memset(out, 0, (size_t)n * sizeof *out);
    if (a->respond_batch) a->respond_batch(a->ctx, histories, n, out);
    for (i = 0; !a->respond_batch && i < n; i++) out[i].code = a->respond(a->ctx, &histories[i], &out[i]);
    return cllm__replies_check(out, n, "the assistant", err);
}

/* ---- the user simulator (paper appendix D.1) ------------------------------------------------- */

/* The project's own wording of CollabLLM's simulator instructions (paper appendix D.1): role-play a
   user who knows a hidden goal, spend little effort, let the assistant ask, end with a signal. The
   history is rendered "**User**: ..." / "**Assistant**: ..." without system messages, as CollabLLM's. */
static const char cllm__prompt_user_sim[] =
    "You are role-playing a human user who is working with an AI assistant to get something done. "
    "Everything between the START and END markers below is private to you: the assistant has never seen it.\n\n"
    "=== TASK TYPE START (private) ===\n{{task_desc}}\n=== TASK TYPE END ===\n\n"
    "=== YOUR GOAL START (private) ===\n{{goal}}\n=== YOUR GOAL END ===\n\n"
    "=== CONVERSATION SO FAR START (private) ===\n{{history}}\n=== CONVERSATION SO FAR END ===\n\n"
    "How to play the user:\n"
    "- Stay in character. You are the person who needs help: do not solve the task yourself and do not act like an "
    "assistant.\n"
    "- Put in as little effort as a busy person would. Early on, ask loosely and leave details out; let the assistant "
    "find out what it needs by asking you.\n"
    "- Know only what such a user would plausibly know about the subject, and now and then be imprecise or slightly "
    "wrong.\n"
    "- Have tastes and say them when they matter, for instance that you want a short answer or a particular style.\n"
    "- Keep working toward your goal and do not drift to other topics.\n"
    "- Reply to what the assistant said last, in the light of the conversation so far. If there are no messages yet, "
    "write your opening request.\n"
    "- Reveal your goal bit by bit and in your own words; never paste it.\n"
    "- When you are satisfied, or when it is clear the assistant cannot help any further, your response must be "
    "exactly {{termination}}\n\n"
    "Reply with one JSON object and nothing else:\n"
    "{\n"
    "  \"current_answer\": \"one or two sentences on the assistant's current solution, or 'none yet'\",\n"
    "  \"thought\": \"your private reasoning about what to say next\",\n"
    "  \"response\": \"the message you send to the assistant, or {{termination}}\"\n"
    "}\n";

/* The simulator's prompt for one conversation: the template with {{task_desc}}, {{goal}} (the single-turn request,
   and the reference result when the goal carries one), {{history}} and {{termination}} filled in. */
CLLMDEF cllm_result cllm_user_sim_prompt(const cllm_llm_sim_config *cfg, const cllm_goal *goal,
                                         const cllm_conv *history, char **out, cllm_err *err) {
    static const char *names[] = { "task_desc", "goal", "history", "termination" };
    const char *values[4], *tmpl = cfg && cfg->prompt ? cfg->prompt : cllm__prompt_user_sim;
    cllm__sb g = { NULL, 0, 0, 0 };
    char *hist, *goal_text;
    *out = NULL;
    if (!goal || !goal->prompt)
        return cllm__fail(err, CLLM_ERR_ARG, "the simulator needs a goal with a prompt (single_turn_prompt)");
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
    if (goal_text && hist) *out = cllm__fill(tmpl, names, values, 4);
    CLLM_FREE(goal_text);
    CLLM_FREE(hist);
    if (!*out) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory building the simulator prompt");
    return CLLM_OK;
}

/* The simulator's answer {current_answer, thought, response} read leniently (cllm_json_parse_lenient):
   the message is "response", trimmed as CollabLLM's .strip(); it ends the conversation when it
   holds the termination signal. A bare signal without the JSON is accepted too. */
CLLMDEF cllm_result cllm_user_sim_parse(const char *model_output, const char *termination, cllm_reply *out) {
    cJSON *o;
    const char *resp;
    char *trimmed;
    cllm_reply_free(out);
    if (!termination) termination = CLLM_TERMINATION_SIGNAL;
    if (!model_output) return out->code = cllm__fail(&out->err, CLLM_ERR_ARG, "user simulator reply: no text");
    o = cllm_json_parse_lenient(model_output, &out->err);
    if (!o) {
        int bare;
        trimmed = cllm__strdup_trim(model_output);
        bare = trimmed && strcmp(trimmed, termination) == 0;
        CLLM_FREE(trimmed);
        if (bare) return cllm_reply_set(out, termination, 1);
        return out->code = out->err.code;
    }
    resp = cllm__json_str(o, "response");
    if (resp && (out->text = cllm__json_text(o, "response", &out->err)) != NULL) {
        trimmed = cllm__strdup_trim(out->text);
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

typedef struct cllm__sim_job {
    const cllm_llm_sim_config *cfg;
    const char                *model;
    cllm_reply                *out;
} cllm__sim_job;

/* Takes the backend's answer for conversation i: a failed call is final (the backend already
   retried it); an answer the parser refuses is asked again unless this was the last try. */
static int cllm__sim_take(void *ctx, int i, const cllm_reply *answer, int last) {
    cllm__sim_job *job = (cllm__sim_job *)ctx;
    cllm_reply *r = &job->out[i];
    char why[CLLM_ERRMSG_SIZE];
    if (answer->code != CLLM_OK) {
        cllm_reply_free(r);
        r->code = answer->code;
        r->err = answer->err;
        return 1;
    }
    cllm_user_sim_parse(answer->text, job->cfg->termination, r);
    r->meta = answer->meta;
    if (r->code == CLLM_OK || !last) return r->code == CLLM_OK;
    snprintf(why, sizeof why, "%s", r->err.msg);            /* say who gave up, and after how many answers */
    cllm__fail(&r->err, r->code, "user simulator%s%s: no usable answer in %d tries; the last: %s",
               job->model ? " " : "", job->model ? job->model : "", 1 + job->cfg->max_parse_retries, why);
    return 1;
}

/* The simulator on a chat backend (section II.7): one prompt per conversation as a single user
   message, all sent together; an answer that the parser refuses is asked again (a new sample), up to
   cfg->max_parse_retries times. out: n zeroed replies. */
static void cllm__user_sim_ask(const cllm_chat_backend *backend, const cllm_llm_sim_config *cfg,
                               const cllm_goal *goals, const cllm_conv *histories, int n, cllm_reply *out) {
    char **prompts = (char **)cllm__calloc((size_t)n + 1, sizeof(char *));
    cllm__sim_job job = { cfg, backend->name, out };
    int i;
    for (i = 0; i < n; i++)
        cllm__fail(&out[i].err, out[i].code = CLLM_ERR_NOMEM, "out of memory before the simulator was asked");
    if (!prompts) return;
    for (i = 0; i < n; i++)
        if (cllm_user_sim_prompt(cfg, &goals[i], &histories[i], &prompts[i], &out[i].err) != CLLM_OK)
            out[i].code = out[i].err.code;
    cllm__ask_all(backend, prompts, n, cfg->json_mode, cfg->max_parse_retries, cllm__sim_take, &job);
    for (i = 0; i < n; i++) CLLM_FREE(prompts[i]);
    CLLM_FREE(prompts);
}

/* ---- the judges (paper appendix D.4) --------------------------------------------------------- */

/* The project's own wording of CollabLLM's judges (paper appendix D.4; CollabLLM v2's metrics): the
   interactivity of R_LLM on [0, 1] with three illustrated anchors, the accuracy of R_ext as 0/1
   against a ground truth, and Extract(t), the final artifact with every revision applied. A judge
   reads the conversation as "User: ..." / "Assistant: ..." lines. */
static const char cllm__prompt_interactivity[] =
    "You are reviewing a conversation between a user and an AI assistant. Judge how interactive the assistant was: "
    "did it engage with the user, keep its replies clear, work to understand what the user actually needed, and ask "
    "relevant questions when the request was unclear or left important choices open?\n\n"
    "=== CONVERSATION START ===\n{{conversation}}\n=== CONVERSATION END ===\n\n"
    "Score it from 0 to 1:\n"
    "- 1, highly interactive: the assistant checks its understanding and asks pointed questions at the right moments. "
    "Example: before drafting a cover letter it asks which job and which strengths to stress, then builds on the "
    "answers.\n"
    "- 0.5, moderately interactive: the assistant engages but misses chances. "
    "Example: it asks one generic question, or makes an assumption it should have checked, and otherwise just "
    "delivers.\n"
    "- 0, not interactive: the assistant answers mechanically. "
    "Example: it writes a long answer to a vague request without asking anything or acknowledging what was unclear.\n"
    "Scores between the anchors are allowed.\n\n"
    "Reply with one JSON object and nothing else:\n"
    "{\"thought\": \"your short reasoning\", \"interactivity\": <a number from 0 to 1>}\n";

/* CollabLLM v1's interactivity judge (the paper's reward and Table 1), in the project's words: a score of 3, 2 or 1
   for the follow-up (the candidate and the simulated turns after it), the earlier conversation shown only as
   context. The reward uses x/3, evaluation 2(x - 2.5). */
static const char cllm__prompt_interactivity_v1[] =
    "You are reviewing part of a conversation between a user and an AI assistant. You get the earlier messages, "
    "only to understand the context, and then the follow-up messages, which are what you judge. Judge how "
    "interactive the assistant is in the follow-up: does it engage with what the user needs, ask the questions "
    "that matter when something is unclear or open, and use the answers it gets?\n\n"
    "=== EARLIER MESSAGES (context; may be empty) START ===\n{{history}}\n=== EARLIER MESSAGES END ===\n\n"
    "=== FOLLOW-UP TO JUDGE START ===\n{{followup}}\n=== FOLLOW-UP TO JUDGE END ===\n\n"
    "Score the follow-up 3, 2 or 1:\n"
    "- 3, highly interactive: the assistant asks what it needs to know, at the right moments, and its work "
    "reflects the user's answers. Example: asked for a product description, it asks about the audience and the "
    "length, then writes one that fits both.\n"
    "- 2, moderately interactive: the assistant engages but leaves gaps. Example: it delivers a reasonable draft "
    "but guesses at an important detail it could have asked about, and only offers to revise.\n"
    "- 1, low interactivity: the assistant barely engages. Example: it answers a vague request with generic "
    "content, asking nothing and checking nothing.\n\n"
    "Reply with one JSON object and nothing else:\n"
    "{\"thought\": \"your short reasoning\", \"interactivity\": <3, 2 or 1>}\n";

static const char cllm__prompt_accuracy[] =
    "You are grading whether an AI assistant's final answer to a question is correct.\n\n"
    "=== QUESTION START ===\n{{question}}\n=== QUESTION END ===\n\n"
    "=== GROUND TRUTH START ===\n{{ground_truth}}\n=== GROUND TRUTH END ===\n\n"
    "=== ANSWER TO GRADE START ===\n{{answer}}\n=== ANSWER TO GRADE END ===\n\n"
    "The answer may be a whole conversation; grade the final answer the assistant arrives at. Give 1 if it agrees "
    "with the ground truth (equivalent forms count, such as 1/2 and 0.5), and 0 if it is wrong, missing, or hedges "
    "between several answers.\n\n"
    "Reply with one JSON object and nothing else:\n"
    "{\"thought\": \"your short reasoning\", \"accuracy\": <0 or 1>}\n";

static const char cllm__prompt_extract[] =
    "Below is a conversation between a user and an AI assistant who worked together on a {{kind}}. Write out the "
    "final, complete {{kind}} as it stands at the end of the conversation: apply every revision that was agreed, "
    "fill in parts the last version only referred to (such as \"the rest is unchanged\"), and leave out remarks "
    "that are not part of the {{kind}} itself. If it is code, give complete runnable code with its imports and "
    "without an `if __name__ == \"__main__\":` block or example usage.\n"
    "{{requirement}}\n"
    "=== CONVERSATION START ===\n{{conversation}}\n=== CONVERSATION END ===\n\n"
    "Reply with one JSON object and nothing else:\n"
    "{\"thought\": \"your short reasoning\", \"final_completion\": \"the complete {{kind}}\"}\n";

CLLMDEF void cllm_judgement_free(cllm_judgement *j) {
    if (!j) return;
    CLLM_FREE(j->text);
    CLLM_FREE(j->thought);
    memset(j, 0, sizeof *j);
}

/* Each kind of verdict reads its JSON into the judgement (CLLM_ERR_FORMAT = ask again). */
typedef cllm_result (*cllm__verdict_fn)(const cJSON *o, cllm_judgement *j);

static cllm_result cllm__verdict_interactivity(const cJSON *o, cllm_judgement *j) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "interactivity");
    if (!v || !cllm__json_number(v, &j->score))
        return cllm__fail(&j->err, CLLM_ERR_FORMAT, "the judge's JSON has no numeric \"interactivity\"");
    if (!(j->score >= 0.0 && j->score <= 1.0))
        return cllm__fail(&j->err, CLLM_ERR_FORMAT, "interactivity %g is outside [0, 1]", j->score);
    return CLLM_OK;
}

/* v1's judge answers {"interactivity": {"thought", "score"}}; ours asks for a flat number. Both are read. */
static cllm_result cllm__verdict_interactivity_v1(const cJSON *o, cllm_judgement *j) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "interactivity");
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "score");
    if (!v || !cllm__json_number(v, &j->score))
        return cllm__fail(&j->err, CLLM_ERR_FORMAT, "the judge's JSON has no numeric \"interactivity\"");
    if (!(j->score >= 1.0 && j->score <= 3.0))
        return cllm__fail(&j->err, CLLM_ERR_FORMAT, "interactivity %g is outside [1, 3]", j->score);
    return CLLM_OK;
}

static cllm_result cllm__verdict_accuracy(const cJSON *o, cllm_judgement *j) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "accuracy");
    if (!v || !cllm__json_number(v, &j->score))
        return cllm__fail(&j->err, CLLM_ERR_FORMAT, "the judge's JSON has no numeric \"accuracy\"");
    if (j->score != 0.0 && j->score != 1.0)
        return cllm__fail(&j->err, CLLM_ERR_FORMAT, "accuracy %g is not 0 or 1", j->score);
    return CLLM_OK;
}

static cllm_result cllm__verdict_extract(const cJSON *o, cllm_judgement *j) {
    /* final_answer: CollabLLM v1's key */
    const char *key = cllm__json_str(o, "final_completion") ? "final_completion" : "final_answer";
    const char *t = cllm__json_str(o, key);
    if (!t || !*t)
        return cllm__fail(&j->err, CLLM_ERR_FORMAT, "the judge's JSON has no non-empty string \"final_completion\"");
    if (!(j->text = cllm__json_text(o, key, &j->err))) return j->err.code;
    return CLLM_OK;
}

typedef struct cllm__judge_job {
    cllm__verdict_fn verdict;
    cllm_judgement  *out;
    const char      *model;
} cllm__judge_job;

static int cllm__judge_take(void *ctx, int i, const cllm_reply *answer, int last) {
    cllm__judge_job *job = (cllm__judge_job *)ctx;
    cllm_judgement *j = &job->out[i];
    cJSON *o;
    cllm_judgement_free(j);
    if (answer->code != CLLM_OK) {                /* the client's message names the endpoint, status and reason */
        j->code = cllm__fail(&j->err, answer->code, "judge %s: %s", job->model ? job->model : "(client model)",
                             answer->err.msg);
        return 1;
    }
    o = cllm_json_parse_lenient(answer->text, &j->err);
    j->code = o ? job->verdict(o, j) : j->err.code;
    if (j->code == CLLM_OK) {
        j->thought = cllm__json_text(o, "thought", NULL);
        cllm__ok(&j->err);
    }
    cJSON_Delete(o);
    return j->code == CLLM_OK || last;
}

/* Fills a template for one item, or records in out why it cannot (a missing value). */
static char *cllm__judge_fill(cllm_judgement *out, const char *tmpl, const char *const *names,
                              const char *const *values, int nv) {
    char *p;
    int k;
    for (k = 0; k < nv; k++) {
        if (values[k]) continue;
        cllm__fail(&out->err, out->code = CLLM_ERR_ARG, "judge item: missing {{%s}}", names[k]);
        return NULL;
    }
    p = cllm__fill(tmpl, names, values, nv);
    if (!p) cllm__fail(&out->err, out->code = CLLM_ERR_NOMEM, "out of memory");
    return p;
}

/* Each kind of judge builds the prompt for item i of its batch (NULL, with out->code set, when it cannot) ... */
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

static char *cllm__build_interactivity_v1(const cllm_judge *jg, const void *items, int i, cllm_judgement *out) {
    static const char *names[] = { "history", "followup" };
    const cllm_followup_item *it = &((const cllm_followup_item *)items)[i];
    int k = it->conv && it->n_history > 0 ? (it->n_history < it->conv->n ? it->n_history : it->conv->n) : 0;
    cllm_conv before = CLLM__ZERO, after = CLLM__ZERO;
    const char *values[2];
    char *history, *followup, *p;
    if (!it->conv) {
        cllm__fail(&out->err, out->code = CLLM_ERR_ARG, "judge item: no conversation");
        return NULL;
    }
    before.msgs = it->conv->msgs;                  /* read-only views of the two parts */
    before.n = k;
    after.msgs = it->conv->msgs + k;
    after.n = it->conv->n - k;
    values[0] = history = cllm__conv_text(&before, 0);
    values[1] = followup = cllm__conv_text(&after, 0);
    p = cllm__judge_fill(out, jg->cfg.interactivity_v1_prompt, names, values, 2);
    CLLM_FREE(history);
    CLLM_FREE(followup);
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
    if (it->requirement) {
        cllm__sb_puts(&req, "Additional requirement: ");
        cllm__sb_puts(&req, it->requirement);
    }
    rq = cllm__sb_take(&req);
    values[0] = text;
    values[1] = it->kind ? it->kind : "document";
    values[2] = rq;
    p = cllm__judge_fill(out, jg->cfg.extract_prompt, names, values, 3);
    CLLM_FREE(text);
    CLLM_FREE(rq);
    return p;
}

/* ... and the driver asks all n at once and reads each verdict. Every item starts as "not judged"
   (so an allocation failure can never leave a silent 0) until its verdict arrives. */
static cllm_result cllm__judge_all(cllm_judge *jg, const void *items, int n, cllm__judge_prompt_fn prompt,
                                   cllm__verdict_fn verdict, cllm_judgement *out, cllm_err *err) {
    cllm__judge_job job;
    char **prompts;
    int i;
    if (!jg || !jg->api.client || n < 0 || (n > 0 && (!items || !out)))
        return cllm__fail(err, CLLM_ERR_ARG, "judge: needs an initialised judge, items and results");
    if (n == 0) return cllm__succeed(err);
    for (i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        cllm__fail(&out[i].err, out[i].code = CLLM_ERR_NOMEM, "out of memory before the judge was asked");
    }
    prompts = (char **)cllm__calloc((size_t)n, sizeof(char *));
    if (!prompts) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < n; i++) prompts[i] = prompt(jg, items, i, &out[i]);
    job.verdict = verdict;
    job.out = out;
    job.model = jg->api.backend.name;
    cllm__ask_all(&jg->api.backend, prompts, n, jg->cfg.json_mode, jg->cfg.max_parse_retries, cllm__judge_take, &job);
    for (i = 0; i < n; i++) CLLM_FREE(prompts[i]);
    CLLM_FREE(prompts);
    return CLLM__BATCH_RESULT(out, n, "judgements", err);
}

CLLMDEF cllm_result cllm_judge_interactivity(cllm_judge *jg, const cllm_conv *convs, int n, cllm_judgement *out,
                                             cllm_err *err) {
    return cllm__judge_all(jg, convs, n, cllm__build_interactivity, cllm__verdict_interactivity, out, err);
}

CLLMDEF cllm_result cllm_judge_interactivity_v1(cllm_judge *jg, const cllm_followup_item *items, int n,
                                                cllm_judgement *out, cllm_err *err) {
    return cllm__judge_all(jg, items, n, cllm__build_interactivity_v1, cllm__verdict_interactivity_v1, out, err);
}

CLLMDEF cllm_result cllm_judge_accuracy(cllm_judge *jg, const cllm_accuracy_item *items, int n, cllm_judgement *out,
                                        cllm_err *err) {
    return cllm__judge_all(jg, items, n, cllm__build_accuracy, cllm__verdict_accuracy, out, err);
}

CLLMDEF cllm_result cllm_judge_extract(cllm_judge *jg, const cllm_extract_item *items, int n, cllm_judgement *out,
                                       cllm_err *err) {
    return cllm__judge_all(jg, items, n, cllm__build_extract, cllm__verdict_extract, out, err);
}

/* -------------------------------------------------------------------------------------------- */
/* I.5 Data generation (paper appendix B.1): candidates scored by MR, SFT rows and DPO pairs    */
/* -------------------------------------------------------------------------------------------- */

/* Offline data generation, paper appendix B.1 (figure 8), one conversation per task:
     1. the simulated user opens the conversation from the task's single-turn prompt;
     2. at every turn the candidate model samples k responses (CollabLLM's command line: k = 2), the first
        floor(k/2) of them from a proactive instruction (CollabLLM's mixing; cllm_datagen_config.proactive);
     3. each candidate is scored by MR (cllm_mr_score, I.4) and recorded with its score;
     4. the best candidate continues the conversation (ties: the first);
     5. the next user message is taken from the best candidate's longest simulated future (CollabLLM v2),
        or asked of the simulator when the future holds none;
     6. the conversation ends when the user terminates or after max_turns user turns.
   The records (data_fmt/records.md) then give SFT rows and DPO pairs (cllm_build_pairs). */

/* ---- records: one JSON line per scored candidate --------------------------------------------- */

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
    if (!o || !vals) {
        cJSON_Delete(o);
        CLLM_FREE(vals);
        return NULL;
    }
    cJSON_AddItemToObject(o, "prompt", cllm_conv_to_json(history));
    cJSON_AddStringToObject(o, "completion", candidate);
    if (meta->finish_reason[0]) cJSON_AddStringToObject(o, "completion_finish_reason", meta->finish_reason);
    if (meta->replaced > 0) cJSON_AddNumberToObject(o, "completion_replaced", meta->replaced);
    if (incomplete) cJSON_AddNumberToObject(o, "incomplete_messages", incomplete);
    cJSON_AddNumberToObject(o, "conv_id", conv_id);
    cJSON_AddNumberToObject(o, "turn_id", history->n);
    cJSON_AddItemToObject(o, "score", r->code == CLLM_OK ? cJSON_CreateNumber(r->mr) : cJSON_CreateNull());
    rewards = cJSON_AddObjectToObject(o, "rewards");
    for (s = 0; s < r->n_samples; s++) vals[s] = r->samples[s].reward;
    cJSON_AddItemToObject(rewards, "MR", cllm__double_array(vals, r->n_samples));
    for (m = 0; m < mr->n_metrics; m++) {
        for (s = 0; s < r->n_samples; s++) vals[s] = r->samples[s].metrics[m];
        cJSON_AddItemToObject(rewards, mr->metrics[m].name ? mr->metrics[m].name : "metric",
                              cllm__double_array(vals, r->n_samples));
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

/* ---- proactive candidates (CollabLLM's mixing of step 2) -------------------------------------- */

/* Step 2 mixes two kinds of candidates, as CollabLLM does: v2 samples the first floor(k * 0.5) of the k candidates
   with a proactive instruction (LLMCollaborator "proact") and the rest as plain chat; v1 one of each. The
   instruction, in the project's words: the conversation goes into one prompt asking for a collaborative next
   message, and the JSON reply's "response" is the candidate. MR's futures are always plain. */
static const char cllm__prompt_proactive[] =
    "You are an AI assistant working with a user on a task such as writing, analysis, answering a question, math "
    "or coding. Write your next message in the conversation below. Be helpful and collaborative, and look ahead: a "
    "good message moves the user toward what they are ultimately trying to achieve, not only past their last "
    "message.\n\n"
    "=== CONVERSATION START ===\n{{history}}\n=== CONVERSATION END ===\n\n"
    "How to collaborate:\n"
    "- When the request is ambiguous or lacks a detail that would change your answer (a length, a format, an "
    "audience, a function's signature), ask about it instead of guessing. Ask specific questions, not \"anything "
    "else?\".\n"
    "- When the request is clear, answer it. You may suggest a specific next step or ask for feedback on a specific "
    "point.\n"
    "- Make it easy for the user: be concise, offer choices they can pick from, and do not repeat what was "
    "already said.\n"
    "- Be honest about what you do not know.\n\n"
    "Reply with one JSON object and nothing else:\n"
    "{\"current_problem\": \"what the user is trying to do and what is still unclear\", \"thought\": \"how you "
    "decide what to say next\", \"response\": \"your message to the user, within {{max_tokens}} tokens\"}\n";

typedef struct cllm__proactive_job {
    cllm_reply *out;
    const char *model;
    int         retries;
} cllm__proactive_job;

static int cllm__proactive_take(void *ctx, int i, const cllm_reply *answer, int last) {
    cllm__proactive_job *job = (cllm__proactive_job *)ctx;
    cllm_reply *r = &job->out[i];
    char why[CLLM_ERRMSG_SIZE];
    cJSON *o;
    cllm_reply_free(r);
    if (answer->code != CLLM_OK) {
        r->code = answer->code;
        r->err = answer->err;
        return 1;
    }
    o = cllm_json_parse_lenient(answer->text, &r->err);
    if (o && !(r->text = cllm__json_text(o, "response", &r->err)) && r->err.code == CLLM_OK)
        cllm__fail(&r->err, CLLM_ERR_FORMAT, "its JSON has no string \"response\"");
    if (o && r->text && !r->text[0]) {
        CLLM_FREE(r->text);
        cllm__fail(&r->err, CLLM_ERR_FORMAT, "its \"response\" is empty");
    }
    cJSON_Delete(o);
    r->code = r->text ? CLLM_OK : r->err.code;
    r->meta = answer->meta;
    if (r->code == CLLM_OK || !last) return r->code == CLLM_OK;
    snprintf(why, sizeof why, "%s", r->err.msg);            /* who gave up, after how many answers, and why */
    cllm__fail(&r->err, r->code, "proactive assistant%s%s: no usable answer in %d tries; the last: %s",
               job->model ? " " : "", job->model ? job->model : "", 1 + job->retries, why);
    return 1;
}

/* The proactive candidates of n histories on a chat backend (section II.7): one prompt each, asked together; an
   answer without a usable "response" is asked again, up to 3 times. out: n zeroed replies. */
static void cllm__proactive_ask(const cllm_chat_backend *backend, const char *tmpl, int max_tokens,
                                const cllm_conv *histories, int n, cllm_reply *out) {
    static const char *names[] = { "history", "max_tokens" };
    char **prompts = (char **)cllm__calloc((size_t)n + 1, sizeof(char *));
    cllm__proactive_job job;
    char budget[32];
    int i;
    job.out = out;
    job.model = backend->name;
    job.retries = 3;
    snprintf(budget, sizeof budget, "%d", max_tokens);
    for (i = 0; i < n; i++)
        cllm__fail(&out[i].err, out[i].code = CLLM_ERR_NOMEM, "out of memory before the assistant was asked");
    for (i = 0; prompts && i < n; i++) {
        char *history = cllm__conv_text(&histories[i], 0);
        const char *values[2];
        values[0] = history;
        values[1] = budget;
        prompts[i] = history ? cllm__fill(tmpl ? tmpl : cllm__prompt_proactive, names, values, 2) : NULL;
        CLLM_FREE(history);
    }
    if (prompts) cllm__ask_all(backend, prompts, n, 0, job.retries, cllm__proactive_take, &job);
    for (i = 0; prompts && i < n; i++) CLLM_FREE(prompts[i]);
    CLLM_FREE(prompts);
}

/* ---- one conversation (steps 1-6) ------------------------------------------------------------ */

/* One conversation of data generation (steps 1-6 above); its records (without task_rows yet) go to rows. */
static cllm_result cllm__datagen_task(const cllm_datagen_config *cfg, const cllm_user_sim *user,
                                      const cllm_assistant *cand, const cllm_assistant *future, const cllm_task *task,
                                      int conv_id, cJSON *rows, cllm_err *err) {
    int k = cllm__def(cfg->n_candidates, 2), max_turns = cllm__def(cfg->max_turns, 7), turn, i, best;
    int n_proactive = cfg->proactive ? (int)floor(k * cllm__def(cfg->proactive_ratio, 0.5)) : 0;
    cllm_goal goal;
    cllm_conv history = CLLM__ZERO;
    cllm_reply ureply = CLLM__ZERO;
    cllm_conv *views = (cllm_conv *)cllm__calloc((size_t)k, sizeof(cllm_conv));
    cllm_reply *replies = (cllm_reply *)cllm__calloc((size_t)k, sizeof(cllm_reply));
    cllm_mr_item *items = (cllm_mr_item *)cllm__calloc((size_t)k, sizeof(cllm_mr_item));
    cllm_mr_result *res = (cllm_mr_result *)cllm__calloc((size_t)k, sizeof(cllm_mr_result));
    cllm_result rc = CLLM_OK;
    goal.task_desc = cfg->task_desc ? cfg->task_desc : "a task";
    goal.prompt = task->prompt;
    goal.reference = cfg->show_reference ? task->completion : NULL;
    if (!views || !replies || !items || !res) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");

    /* 1. the simulated user opens the conversation */
    if (rc == CLLM_OK) rc = cllm_user_sim_turns(user, &goal, &history, 1, &ureply, err);
    if (rc == CLLM_OK) rc = cllm_conv_push_meta(&history, "user", ureply.text, &ureply.meta, err);
    if (rc != CLLM_OK) goto done;
    for (turn = 0; turn < max_turns && !ureply.terminated; turn++) {
        int longest = -1, s;
        for (i = 0; i < k; i++) views[i] = history;
        /* 2. the first n_proactive candidates from the proactive instruction, the rest plain */
        if (n_proactive > 0) rc = cllm_assistant_replies(cfg->proactive, views, n_proactive, replies, err);
        if (rc == CLLM_OK && k > n_proactive)
            rc = cllm_assistant_replies(cand, views, k - n_proactive, replies + n_proactive, err);
        if (rc != CLLM_OK) goto done;
        for (i = 0; i < k; i++) {
            items[i].goal = &goal;
            items[i].task = task;
            items[i].history = &history;
            items[i].candidate = replies[i].text;
        }
        cllm_mr_score(&cfg->mr, user, future, items, k, res, err);   /* 3. per-candidate failures are in res */
        for (i = 0, best = -1; i < k; i++) {
            cJSON *row = NULL;
            size_t bytes = cllm__conv_json_bytes(&history);
            bytes += cllm__json_escaped_len(replies[i].text, strlen(replies[i].text));
            for (s = 0; s < res[i].n_samples; s++) bytes += cllm__conv_json_bytes(&res[i].samples[s].session);
            if (bytes >= (size_t)CLLM_MAX_LINE_BYTES)   /* refuse before building it */
                rc = cllm__fail(err, CLLM_ERR_LIMIT,
                                "turn %d, candidate %d: its record (history, candidate and %d simulated sessions) "
                                "would take about %zu bytes as one line, more than our readers accept "
                                "(CLLM_MAX_LINE_BYTES)", turn, i, res[i].n_samples, bytes);
            else if (!(row = cllm__record_json(&cfg->mr, task, conv_id, &history, replies[i].text, &replies[i].meta,
                                                &res[i])))
                rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
            if (rc != CLLM_OK) goto done;
            if (n_proactive > 0) cJSON_AddBoolToObject(row, "proactive", i < n_proactive);
            cJSON_AddItemToArray(rows, row);
            if (res[i].code == CLLM_OK && (best < 0 || res[i].mr > res[best].mr)) best = i;   /* 4. ties: the first */
        }
        if (best < 0) {
            rc = cllm__fail(err, res[0].code ? res[0].code : CLLM_ERR_FORMAT,
                            "turn %d: no candidate could be scored: %s", turn, res[0].err.msg);
            goto done;
        }
        rc = cllm_conv_push_meta(&history, "assistant", replies[best].text, &replies[best].meta, err);
        if (rc != CLLM_OK) goto done;
        /* 5. the next user message: from the best candidate's longest simulated future */
        for (s = 0; s < res[best].n_samples; s++)
            if (res[best].samples[s].code == CLLM_OK &&
                (longest < 0 || res[best].samples[s].session.n > res[best].samples[longest].session.n))
                longest = s;
        cllm_reply_free(&ureply);
        if (longest >= 0 && res[best].samples[longest].session.n > history.n) {
            const cllm_mr_sample *smp = &res[best].samples[longest];
            cllm_reply_set(&ureply, smp->session.msgs[history.n].content,
                           smp->terminated && smp->session.n == history.n + 1);
            if (smp->session.meta) ureply.meta = smp->session.meta[history.n];
        } else if ((rc = cllm_user_sim_turns(user, &goal, &history, 1, &ureply, err)) != CLLM_OK) goto done;
        for (i = 0; i < k; i++) {
            cllm_mr_result_free(&res[i]);
            cllm_reply_free(&replies[i]);
        }
        if (!ureply.terminated) rc = cllm_conv_push_meta(&history, "user", ureply.text, &ureply.meta, err);
        if (rc != CLLM_OK) goto done;
    }
done:
    for (i = 0; i < k && res; i++) cllm_mr_result_free(&res[i]);
    for (i = 0; i < k && replies; i++) cllm_reply_free(&replies[i]);
    cllm_reply_free(&ureply);
    cllm_conv_free(&history);
    CLLM_FREE(views);
    CLLM_FREE(replies);
    CLLM_FREE(items);
    CLLM_FREE(res);
    return rc;
}

/* ---- the run: shards, a records file that survives a crash, progress ------------------------- */

/* Each task's rows are appended together and flushed to disk, each row saying how many rows its task
   has (task_rows): a crash loses at most the task in flight, and a restarted run keeps the finished
   tasks, drops a half-written one, and continues. */
/* Is o a row of conversation *id (< n_tasks) that says its conversation has *rows rows? The
   scan counts exactly these rows and the rewrite keeps exactly these. */
static int cllm__datagen_row(const cJSON *o, int n_tasks, int *id, int *rows) {
    *id = -1;
    *rows = 0;
    if (!o || !cllm__json_int(o, "conv_id", -1, id) || !cllm__json_int(o, "task_rows", 0, rows)) return 0;
    return *id >= 0 && *id < n_tasks && *rows > 0;
}

/* Reads an existing records file: which conversations are complete (all their task_rows rows
   present), and whether anything else (a half-written task, a torn last line) must be dropped.
   done[conv_id] = 1 for complete ones (conv ids index the task list). */
static cllm_result cllm__datagen_scan(const char *path, int n_tasks, unsigned char *done, int *dirty, cllm_err *err) {
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    int *count = (int *)cllm__calloc((size_t)n_tasks + 1, sizeof(int));
    int *want = (int *)cllm__calloc((size_t)n_tasks + 1, sizeof(int));
    int i, lineno = 0;
    long len = -1;
    cllm_result rc = CLLM_OK;
    *dirty = 0;
    if (!count || !want) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    while (rc == CLLM_OK && f && (len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *o = len ? cJSON_ParseWithLength(line, (size_t)len) : NULL;
        int id, rows;
        lineno++;
        if (cllm__datagen_row(o, n_tasks, &id, &rows)) {
            count[id]++;
            want[id] = rows;
        } else if (len) *dirty = 1;
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    /* a line we cannot read is not a torn one: stop rather than let the rewrite drop the rest */
    if (len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    for (i = 0; rc == CLLM_OK && i < n_tasks; i++) {
        done[i] = count[i] > 0 && count[i] == want[i];
        if (count[i] && !done[i]) *dirty = 1;
    }
    CLLM_FREE(line);
    CLLM_FREE(count);
    CLLM_FREE(want);
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
        if (cllm__datagen_row(o, n_tasks, &id, &rows) && done[id]) {
            cllm__sb_putn(&keep, line, (size_t)len);
            cllm__sb_putc(&keep, '\n');
        }
        cJSON_Delete(o);
    }
    fclose(f);
    CLLM_FREE(line);
    if (len < -1) rc = cllm__line_fail(err, path, 0, len);
    else if (keep.oom) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else rc = cllm_write_file_atomic(path, keep.p ? keep.p : "", keep.n, err);
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

CLLMDEF cllm_result cllm_datagen_run(const cllm_datagen_config *cfg, const cllm_user_sim *user,
                                     const cllm_assistant *candidates, const cllm_assistant *future_assistant,
                                     const cllm_task *tasks, int n_tasks, const char *out_path, cllm_err *err) {
    unsigned char *done = NULL;
    int dirty = 0, t, n_shards, shard, n_done = 0, n_failed = 0, n_todo = 0;
    double t0 = cllm__now();
    cllm_result rc;
    cllm_err terr, first;
    if (!cfg || !user || !candidates || !out_path || n_tasks < 0 || (n_tasks && !tasks))
        return cllm__fail(err, CLLM_ERR_ARG, "data generation: needs a config, a user simulator, a candidate model, "
                          "tasks and an output path");
    n_shards = cllm__def(cfg->n_shards, 1);
    shard = cfg->shard;
    if (shard < 0 || shard >= n_shards)
        return cllm__fail(err, CLLM_ERR_ARG, "data generation: shard %d is not in [0, %d)", shard, n_shards);
    done = (unsigned char *)cllm__calloc((size_t)n_tasks + 1, 1);
    if (!done) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    rc = cllm__datagen_scan(out_path, n_tasks, done, &dirty, err);
    if (rc == CLLM_OK && dirty) rc = cllm__datagen_compact(out_path, n_tasks, done, err);
    if (rc != CLLM_OK) {
        CLLM_FREE(done);
        return rc;
    }
    for (t = shard; t < n_tasks; t += n_shards) n_todo += !done[t];
    if (cfg->verbose)
        fprintf(stderr, "generate-data: %d tasks in shard %d/%d, %d already done, %d to go%s\n",
                (n_tasks - shard + n_shards - 1) / n_shards, shard, n_shards,
                (n_tasks - shard + n_shards - 1) / n_shards - n_todo, n_todo,
                dirty ? " (dropped a half-written task)" : "");
    cllm__ok(&first);
    for (t = shard; t < n_tasks; t += n_shards) {
        cJSON *rows, *row;
        cllm__sb buf = { NULL, 0, 0, 0 };
        int n_rows;
        if (done[t]) continue;
        rows = cJSON_CreateArray();
        rc = rows ? cllm__datagen_task(cfg, user, candidates, future_assistant ? future_assistant : candidates,
                                       &tasks[t], t, rows, &terr)
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
        n_done += rc == CLLM_OK;
        if (rc != CLLM_OK) {
            n_failed++;
            if (first.code == CLLM_OK) first = terr;
            if (cfg->verbose) fprintf(stderr, "generate-data: task %d failed: %s\n", t, terr.msg);
            if (rc == CLLM_ERR_IO || rc == CLLM_ERR_NOMEM) break;   /* the output itself is broken: stop */
        }
        if (cfg->verbose) {
            double el = cllm__now() - t0;
            int finished = n_done + n_failed;
            fprintf(stderr, "generate-data: [%d/%d] task %d: %d rows, %.1fs elapsed, ETA %.0fs\n", finished, n_todo, t,
                    n_rows, el, finished ? el / finished * (n_todo - finished) : 0.0);
        }
    }
    CLLM_FREE(done);
    if (n_failed)
        return cllm__fail(err, first.code, "%d of %d tasks failed (rerun to retry them; finished tasks are kept). "
                          "First: %s", n_failed, n_todo, first.msg);
    return cllm__succeed(err);
}

/* ---- SFT rows and DPO pairs ------------------------------------------------------------------ */

/* CollabLLM's system prompt for training rows (its v1 and v2 add one to every SFT and DPO row), in our words. */
CLLMDEF const char *cllm_system_prompt_collabllm(void) {
    return "You are a helpful assistant that works with the user over several turns. Work out what the user "
           "actually wants, and keep in mind everything said so far. When a request is vague or leaves out something "
           "you need, ask about it instead of guessing. Ask precise follow-up questions and suggest concrete next "
           "steps, above all in writing, analysis, coding and question answering. Keep your replies short and easy to "
           "answer: no needless repetition, and when you need a choice from the user, offer a few options. Match the "
           "user's tone. When you do not know something, say so and suggest where to find it. Be accurate, clear and "
           "correct, and keep asking for feedback so that the result fits what the user needs.";
}

CLLMDEF double cllm_pairs_min_gap(const cllm_pairs_config *cfg) {
    static const double preset_gap[] = { 0.02, 0.05, 0.02, 0.02, 0.0 };     /* in cllm_gap_preset's order */
    if (cfg && cfg->min_gap < 0) return 0.0;
    if (cfg && cfg->min_gap > 0) return cfg->min_gap;
    if (!cfg || (unsigned)cfg->gap_preset > CLLM_GAP_NONE) return 0.02;
    return preset_gap[cfg->gap_preset];
}

/* One pair: the rows that give its chosen and rejected texts, and those whose scores v1 logs as chosen_eval and
   rejected_eval (different from the first two only in v1's full tie). kept: the gap is large enough. */
typedef struct cllm__pick { int chosen, rejected, chosen_eval, rejected_eval, kept; } cllm__pick;

/* Grouping as Python's insertion-ordered dict groups: keys sorted by (conv_id, turn_id, at) make one run per group,
   its members (.at) in file order; the runs come in the order their groups first appear (by_first_seen), else by
   conversation id (v1's np.unique). */
typedef struct cllm__key { int conv_id, turn_id, at; } cllm__key;
typedef struct cllm__group_run { int start, len, first; } cllm__group_run;

static int cllm__key_cmp(const void *a, const void *b) {
    const cllm__key *x = (const cllm__key *)a, *y = (const cllm__key *)b;
    if (x->conv_id != y->conv_id) return x->conv_id < y->conv_id ? -1 : 1;
    if (x->turn_id != y->turn_id) return x->turn_id < y->turn_id ? -1 : 1;
    return (x->at > y->at) - (x->at < y->at);
}

static int cllm__group_cmp(const void *a, const void *b) {
    const cllm__group_run *x = (const cllm__group_run *)a, *y = (const cllm__group_run *)b;
    return (x->first > y->first) - (x->first < y->first);
}

/* Sorts keys[0..n) and returns the runs (stb_ds array). */
static cllm__group_run *cllm__group(cllm__key *keys, int n, int by_first_seen) {
    cllm__group_run *runs = NULL;
    int i, j;
    if (n) qsort(keys, (size_t)n, sizeof *keys, cllm__key_cmp);
    for (i = 0; i < n; i = j) {
        cllm__group_run r;
        for (j = i; j < n && keys[j].conv_id == keys[i].conv_id && keys[j].turn_id == keys[i].turn_id; j++) continue;
        r.start = i;
        r.len = j - i;
        r.first = keys[i].at;
        stbds_arrput(runs, r);
    }
    if (by_first_seen && runs) qsort(runs, (size_t)stbds_arrlen(runs), sizeof *runs, cllm__group_cmp);
    return runs;
}

/* Keys of the rows (or of the picks' chosen rows), turn_id left 0 unless by_turn; NULL when out of memory. */
static cllm__key *cllm__keys(const cllm__rowset *rows, int by_turn, const cllm__pick *picks, int n) {
    cllm__key *keys = (cllm__key *)cllm__calloc((size_t)n + 1, sizeof *keys);
    int i;
    for (i = 0; keys && i < n; i++) {
        const cllm__rec *r = &rows->recs[picks ? picks[i].chosen : i];
        keys[i].conv_id = r->conv_id;
        keys[i].turn_id = by_turn ? r->turn_id : 0;
        keys[i].at = i;
    }
    return keys;
}

/* The pairs of flat rows, one per (conversation, turn) with two or more scored rows, kept when
   score(chosen_eval) - score(rejected_eval) >= gap (in double: 0.55 - 0.50 passes a gap of 0.05).
     v2 (datasets/multiturn.py to_dpo_dataset): a stable sort by score, descending; chosen = its first row (the first
        row of the highest score), rejected = its last (the last row of the lowest score).
     v1 (scripts/generate_conv_dpo.py, per turn): chosen = the first highest, rejected = the first lowest; when all
        tie, chosen = the first of smallest reward_std, rejected = the first of largest; chosen_eval and
        rejected_eval stay the first highest and first lowest. (v1 had two candidates per turn.) */
static cllm__pick *cllm__flat_picks(const cllm__rowset *rows, cllm_pair_rules rules, double gap, int *n_picks) {
    cllm__key *keys = cllm__keys(rows, 1, NULL, rows->n);
    cllm__group_run *runs = keys ? cllm__group(keys, rows->n, 1) : NULL;
    cllm__pick *picks = NULL;
    const cllm__rec *r = rows->recs;
    int g, i;
    for (g = 0; g < stbds_arrlen(runs); g++) {
        const cllm__key *m = keys + runs[g].start;
        int hi = m[0].at, lo = m[0].at, last_lo = m[0].at, least_std = m[0].at, most_std = m[0].at;
        cllm__pick p;
        if (runs[g].len < 2) continue;
        for (i = 1; i < runs[g].len; i++) {
            const cllm__rec *x = &r[m[i].at];
            if (x->score > r[hi].score) hi = m[i].at;
            if (x->score < r[lo].score) lo = m[i].at;
            if (x->score <= r[last_lo].score) last_lo = m[i].at;
            if (x->mr_std < r[least_std].mr_std) least_std = m[i].at;
            if (x->mr_std > r[most_std].mr_std) most_std = m[i].at;
        }
        p.chosen_eval = hi;
        p.rejected_eval = rules == CLLM_PAIRS_RULES_V1 ? lo : last_lo;
        p.chosen = rules == CLLM_PAIRS_RULES_V1 && hi == lo ? least_std : hi;
        p.rejected = rules == CLLM_PAIRS_RULES_V1 ? (hi == lo ? most_std : lo) : last_lo;
        p.kept = !(r[p.chosen_eval].score - r[p.rejected_eval].score < gap);
        stbds_arrput(picks, p);
    }
    *n_picks = keys ? (int)stbds_arrlen(picks) : -1;      /* -1: out of memory */
    CLLM_FREE(keys);
    stbds_arrfree(runs);
    return picks;
}

/* v1's DPO rows are pairs already (recs 2i and 2i+1); v1's filter_dpo keeps chosen_eval.reward -
   rejected_eval.reward >= gap. */
static cllm__pick *cllm__v1_row_picks(const cllm__rowset *rows, double gap, int *n_picks) {
    cllm__pick *picks = NULL;
    int i;
    for (i = 0; i + 1 < rows->n; i += 2) {
        cllm__pick p;
        p.chosen = p.chosen_eval = i;
        p.rejected = p.rejected_eval = i + 1;
        p.kept = !(rows->recs[i].score - rows->recs[i + 1].score < gap);
        stbds_arrput(picks, p);
    }
    *n_picks = (int)stbds_arrlen(picks);
    return picks;
}

/* The row that ends each conversation's SFT row (its index in rows->recs), in output order.
     v2 (to_sft_dataset): in file order, a row replaces the conversation's kept one when its turn_id is higher, or
        equal with a strictly higher score; conversations in the order they first appear.
     v1 (load_dpo_dataset, to_sft_dataset): among the conversation's pairs (before the gap), the one with the longest
        prompt (the first of equal length), ending with its chosen text; conversations by ascending id. */
static int *cllm__sft_ends(const cllm__rowset *rows, const cllm__pick *picks, int n_picks, int v1, int *n_ends) {
    int n = v1 ? n_picks : rows->n, g, i;
    cllm__key *keys = cllm__keys(rows, 0, v1 ? picks : NULL, n);
    cllm__group_run *runs = keys ? cllm__group(keys, n, !v1) : NULL;
    int *ends = NULL;
    for (g = 0; g < stbds_arrlen(runs); g++) {
        const cllm__key *m = keys + runs[g].start;
        int best = v1 ? picks[m[0].at].chosen : m[0].at;
        for (i = 1; i < runs[g].len; i++) {
            const cllm__rec *x = &rows->recs[v1 ? picks[m[i].at].chosen : m[i].at], *b = &rows->recs[best];
            int longer = cJSON_GetArraySize(x->prompt) > cJSON_GetArraySize(b->prompt);
            int later = x->turn_id > b->turn_id || (x->turn_id == b->turn_id && x->score > b->score);
            if (v1 ? longer : later) best = (int)(x - rows->recs);
        }
        stbds_arrput(ends, best);
    }
    *n_ends = keys ? (int)stbds_arrlen(ends) : -1;         /* -1: out of memory */
    CLLM_FREE(keys);
    stbds_arrfree(runs);
    return ends;
}

/* prompt messages (+ optional system prompt first) as a new JSON array */
static cJSON *cllm__prompt_json(const cJSON *prompt, const char *system_prompt) {
    cJSON *out = cJSON_CreateArray(), *m;
    if (system_prompt) {
        m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system_prompt);
        cJSON_AddItemToArray(out, m);
    }
    cJSON_ArrayForEach(m, prompt) cJSON_AddItemToArray(out, cJSON_Duplicate(m, 1));
    return out;
}

static cJSON *cllm__assistant_msg(const char *text) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "content", text);
    return m;
}

/* v1's chosen_eval / rejected_eval: the logged one of a v1 row, else the two fields a record gives (reward,
   reward_std). */
static cJSON *cllm__v1_eval(const cllm__rec *r) {
    cJSON *e;
    if (r->eval) return cJSON_Duplicate(r->eval, 1);
    e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "reward", r->score);
    cJSON_AddNumberToObject(e, "reward_std", r->mr_std);
    return e;
}

/* One DPO pair in c->format (data_fmt/dpo.md, data_fmt/published.md). */
static cJSON *cllm__pair_json(const cllm__rowset *rows, const cllm__pick *p, const cllm_pairs_config *c) {
    const cllm__rec *ch = &rows->recs[p->chosen], *rj = &rows->recs[p->rejected];
    cJSON *o, *a;
    if (c->format == CLLM_PAIRS_COLLABLLM_V1 && rows->kind == CLLM__ROWS_V1_DPO) return cJSON_Duplicate(ch->row, 1);
    o = cJSON_CreateObject();
    if (c->format == CLLM_PAIRS_COLLABLLM_V1) {     /* as v1 stored them: no system prompt, v1 adds it on loading */
        cJSON_AddNumberToObject(o, "idx", ch->conv_id);
        cJSON_AddItemToObject(o, "prompt", cllm__prompt_json(ch->prompt, NULL));
        cJSON_AddStringToObject(o, "chosen", ch->text);
        cJSON_AddStringToObject(o, "rejected", rj->text);
        cJSON_AddItemToObject(o, "chosen_eval", cllm__v1_eval(&rows->recs[p->chosen_eval]));
        cJSON_AddItemToObject(o, "rejected_eval", cllm__v1_eval(&rows->recs[p->rejected_eval]));
        return o;
    }
    cJSON_AddItemToObject(o, "prompt", cllm__prompt_json(ch->prompt, c->system_prompt));
    if (c->format == CLLM_PAIRS_COLLABLLM_V2) {
        cJSON_AddStringToObject(o, "chosen", ch->text);
        cJSON_AddStringToObject(o, "rejected", rj->text);
    } else {
        a = cJSON_AddArrayToObject(o, "chosen");
        cJSON_AddItemToArray(a, cllm__assistant_msg(ch->text));
        a = cJSON_AddArrayToObject(o, "rejected");
        cJSON_AddItemToArray(a, cllm__assistant_msg(rj->text));
    }
    cJSON_AddNumberToObject(o, "score_chosen", ch->score);
    cJSON_AddNumberToObject(o, "score_rejected", rj->score);
    if (c->format == CLLM_PAIRS_TRL) cJSON_AddNumberToObject(o, "conv_id", ch->conv_id);
    if (c->format == CLLM_PAIRS_TRL) cJSON_AddNumberToObject(o, "turn_id", ch->turn_id);
    return o;
}

/* One SFT row (data_fmt/sft.md): the prompt of rows->recs[end] and its text as the final assistant message. */
static cJSON *cllm__sft_json(const cllm__rowset *rows, int end, const cllm_pairs_config *c) {
    const cllm__rec *r = &rows->recs[end];
    cJSON *o = cJSON_CreateObject(), *msgs = cllm__prompt_json(r->prompt, c->system_prompt);
    cJSON_AddItemToArray(msgs, cllm__assistant_msg(r->text));
    cJSON_AddItemToObject(o, "messages", msgs);
    if (c->format == CLLM_PAIRS_TRL) cJSON_AddNumberToObject(o, "conv_id", r->conv_id);
    if (c->format == CLLM_PAIRS_TRL) cJSON_AddNumberToObject(o, "score", r->score);
    return o;
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

/* From records (or published rows) to training files, by CollabLLM's rules (data_fmt/published.md): SFT rows
   {"messages"} and DPO pairs in the chosen format. A row without a score (every MR sample failed) takes no part. */
CLLMDEF cllm_result cllm_build_pairs(const char *records_path, const cllm_pairs_config *cfg, const char *sft_path,
                                     const char *dpo_path, int *n_sft, int *n_pairs, cllm_err *err) {
    cllm_pairs_config c;
    cllm__rowset rows;
    cllm__pick *picks = NULL;
    int *ends = NULL, n_picks = 0, n_ends = 0, i, v1;
    cJSON *sft = NULL, *dpo = NULL;
    cllm_result rc;
    if (n_sft) *n_sft = 0;
    if (n_pairs) *n_pairs = 0;
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    if ((unsigned)c.format > CLLM_PAIRS_COLLABLLM_V1 || (unsigned)c.rules > CLLM_PAIRS_RULES_V1 ||
        (unsigned)c.gap_preset > CLLM_GAP_NONE)
        return cllm__fail(err, CLLM_ERR_ARG, "the pairs configuration's format, rules or gap_preset is out of range");
    if ((rc = cllm__rowset_read(&rows, records_path, err)) != CLLM_OK) return rc;
    v1 = rows.kind == CLLM__ROWS_V1_DPO || c.rules == CLLM_PAIRS_RULES_V1;
    if (rows.kind == CLLM__ROWS_V1_DPO) picks = cllm__v1_row_picks(&rows, cllm_pairs_min_gap(&c), &n_picks);
    else picks = cllm__flat_picks(&rows, c.rules, cllm_pairs_min_gap(&c), &n_picks);
    if (n_picks >= 0) ends = cllm__sft_ends(&rows, picks, n_picks, v1, &n_ends);
    sft = cJSON_CreateArray();
    dpo = cJSON_CreateArray();
    for (i = 0; sft && i < n_ends; i++) cJSON_AddItemToArray(sft, cllm__sft_json(&rows, ends[i], &c));
    for (i = 0; dpo && i < n_picks; i++)
        if (picks[i].kept) cJSON_AddItemToArray(dpo, cllm__pair_json(&rows, &picks[i], &c));
    if (!sft || !dpo || n_picks < 0 || n_ends < 0) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory building pairs");
    if (rc == CLLM_OK && sft_path) rc = cllm__write_jsonl(sft_path, sft, err);
    if (rc == CLLM_OK && dpo_path) rc = cllm__write_jsonl(dpo_path, dpo, err);
    if (rc == CLLM_OK && n_sft) *n_sft = cJSON_GetArraySize(sft);
    if (rc == CLLM_OK && n_pairs) *n_pairs = cJSON_GetArraySize(dpo);
    stbds_arrfree(picks);
    stbds_arrfree(ends);
    cJSON_Delete(sft);
    cJSON_Delete(dpo);
    cllm__rowset_free(&rows);
    return rc == CLLM_OK ? cllm__succeed(err) : rc;
}

/* -------------------------------------------------------------------------------------------- */
/* I.6 Updates: the SFT and DPO steps, online DPO, PPO (rollout, value head, step), GRPO        */
/* -------------------------------------------------------------------------------------------- */

/* How the policy learns from the objectives of section I.3: one micro-batch of SFT or DPO (the
   paper's offline stages, section 3.3), then the online stages, where MR (section I.4) scores the
   policy's own samples: online DPO, PPO and GRPO. Each is a task of the trainer loop (section
   II.10), which shuffles, accumulates, clips, updates and checkpoints. */

/* ---- one micro-batch of SFT and of DPO (HF causal-LM loss; TRL v0.19.1 DPOTrainer) ----------- */

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

/* SFT (paper section 3.3; HF ForCausalLMLoss, summed): the loss terms -log p of every target token; backward of their
   sum / norm, so d(loss_sum / norm) / d logp = -1/norm on each target. Adds "loss" (sum and target count) to st. */
CLLMDEF cllm_result cllm_sft_micro_step(cllm_model *m, const cllm_train_seq *const *rows, int n, double norm,
                                        int backward, cllm_train_stats *st, cllm_err *err) {
    cllm__seq_batch sb = CLLM__ZERO;
    double *lp = (double *)cllm__calloc((size_t)n + 1, sizeof(double));
    double sum = 0;
    int b, targets = 0;
    cllm_result rc;
    if (!lp) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (n < 1 || !(norm > 0)) rc = cllm__fail(err, CLLM_ERR_ARG, "SFT step: need n >= 1 rows and norm > 0");
    else rc = cllm__seq_batch_make(&sb, rows, n, 0, err);
    if (rc == CLLM_OK) rc = cllm_forward(m, &sb.batch, NULL, err);
    if (rc == CLLM_OK) {
        cllm__row_logps(m, lp);
        for (b = 0; b < n; b++) {
            sum += lp[b];
            lp[b] = -1.0 / norm;
        }
        targets = m->n_targets;
        if (backward) rc = cllm__backward_rows(m, lp, err);
    }
    if (rc == CLLM_OK && st) {
        cllm_train_stats_add(st, "loss", -sum, targets);
        st->tokens += (double)cllm__batch_tokens(&sb);
    }
    cllm__seq_batch_free(&sb);
    CLLM_FREE(lp);
    return rc == CLLM_OK ? cllm__succeed(err) : rc;
}

/* The reference logps of a DPO micro-batch (2n rows: chosen then rejected), from the first source
   that has them: the pairs (precomputed, TRL's precompute_ref_log_probs), the reference model, the
   policy with its adapters disabled (TRL's null_ref_context under PEFT), 0 with reference_free. */
static cllm_result cllm__dpo_ref_logps(cllm_model *m, cllm_model *ref, const cllm_dpo_pair *const *pairs, int n,
                                       const cllm__seq_batch *sb, int reference_free, double *out, cllm_err *err) {
    cllm_lora *lo = m->lora;
    int have = 1, i;
    cllm_result rc;
    for (i = 0; i < n; i++) have &= !isnan(pairs[i]->ref_chosen) && !isnan(pairs[i]->ref_rejected);
    if (have) {
        for (i = 0; i < n; i++) {
            out[i] = pairs[i]->ref_chosen;
            out[n + i] = pairs[i]->ref_rejected;
        }
        return CLLM_OK;
    }
    if (ref) {
        rc = cllm_forward(ref, &sb->batch, NULL, err);
        if (rc == CLLM_OK) cllm__row_logps(ref, out);
        return rc;
    }
    if (lo && lo->enabled) {                   /* the base model under the adapters */
        int training = lo->training;
        lo->enabled = 0;
        lo->training = 0;
        rc = cllm_forward(m, &sb->batch, NULL, err);
        lo->enabled = 1;
        lo->training = training;
        if (rc == CLLM_OK) cllm__row_logps(m, out);
        return rc;
    }
    if (reference_free) {
        for (i = 0; i < 2 * n; i++) out[i] = 0;
        return CLLM_OK;
    }
    return cllm__fail(err, CLLM_ERR_ARG, "DPO needs a reference: a reference model, precomputed ref_*_logps in the "
                                         "pairs, LoRA adapters (the base model is the reference), or reference_free");
}

/* DPO (paper section 3.3; TRL v0.19.1 DPOTrainer.concatenated_forward + dpo_loss): chosen and rejected rows in one
   batch, their summed completion logps (averaged per token for IPO, as TRL's DPOTrainer, unless cfg->ipo_sum), the
   reference's (cllm__dpo_ref_logps), cllm_dpo_loss, then backward of (sum of the pair losses) / norm through dlogp =
   d loss / d logp(row) on every completion token. RPO (TRL's rpo_alpha, Pang et al. 2024) adds alpha x the NLL of the
   chosen completions, a mean over this micro-batch's chosen tokens. Adds loss (sum and pairs) and TRL's metrics as
   this micro-batch's means (TRL stores one value per micro-batch and logs their mean): rewards/chosen,
   rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, logps/rejected (and nll_loss with RPO). */
CLLMDEF cllm_result cllm_dpo_micro_step(cllm_model *m, cllm_model *ref, const cllm_dpo_pair *const *pairs, int n,
                                        const cllm_dpo_config *cfg, double norm, cllm_train_stats *st, cllm_err *err) {
    size_t rows_n = 2 * (size_t)n + 1;
    const cllm_train_seq **rows = (const cllm_train_seq **)cllm__calloc(rows_n, sizeof *rows);
    double *mem = (double *)cllm__calloc(7 * rows_n, sizeof(double));
    double *pol = mem;                       /* (2n) the policy's logps: chosen, then rejected */
    double *refl = mem + rows_n;             /* (2n) the reference's                           */
    double *len = mem + 2 * rows_n;          /* (2n) completion tokens                         */
    double *d = mem + 3 * rows_n;            /* (2n) d loss / d logp                           */
    double *losses = mem + 4 * rows_n;       /* (n) per pair                                   */
    double *cr = mem + 5 * rows_n;           /* (n) chosen rewards                             */
    double *rj = mem + 6 * rows_n;           /* (n) rejected rewards                           */
    double s_cr = 0, s_rj = 0, s_acc = 0, s_pc = 0, s_pr = 0, s_loss = 0;
    cllm_dpo_config c = CLLM__ZERO;
    cllm_dpo_out out = CLLM__ZERO;
    cllm__seq_batch sb = CLLM__ZERO;
    cllm_result rc = CLLM_OK;
    int per_token, i;
    if (cfg) c = *cfg;
    per_token = c.loss_type == CLLM_DPO_IPO && !c.ipo_sum;   /* TRL's DPOTrainer: IPO on per-token averages */
    if (!rows || !mem) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else if (n < 1 || !(norm > 0)) rc = cllm__fail(err, CLLM_ERR_ARG, "DPO step: need n >= 1 pairs and norm > 0");
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        rows[i] = &pairs[i]->chosen;
        rows[n + i] = &pairs[i]->rejected;
        len[i] = cllm_train_seq_targets(rows[i]);
        len[n + i] = cllm_train_seq_targets(rows[n + i]);
        if (len[i] < 1 || len[n + i] < 1)
            rc = cllm__fail(err, CLLM_ERR_ARG, "pair %d: a completion has no target tokens", i);
    }
    if (rc != CLLM_OK) goto done;
    if ((rc = cllm__seq_batch_make(&sb, rows, 2 * n, 0, err)) != CLLM_OK) goto done;
    /* reference first: the policy's forward must be the last one, its activations feed backward */
    if ((rc = cllm__dpo_ref_logps(m, ref, pairs, n, &sb, c.reference_free, refl, err)) != CLLM_OK) goto done;
    if ((rc = cllm_forward(m, &sb.batch, NULL, err)) != CLLM_OK) goto done;
    cllm__row_logps(m, pol);
    for (i = 0; per_token && i < 2 * n; i++) {
        pol[i] /= len[i];
        refl[i] /= len[i];
    }
    out.losses = losses;
    out.chosen_rewards = cr;
    out.rejected_rewards = rj;
    out.d_chosen = d;
    out.d_rejected = d + n;
    if ((rc = cllm_dpo_loss(&c, n, pol, pol + n, refl, refl + n, &out, err)) != CLLM_OK) goto done;
    /* cllm_dpo_loss differentiates the mean over these n pairs; the step wants sum / norm */
    for (i = 0; i < 2 * n; i++) d[i] *= (double)n / norm / (per_token ? len[i] : 1.0);
    if (c.rpo_alpha > 0) {
        /* RPO: + alpha * NLL(chosen), NLL = -(sum of the chosen tokens' logps) / (chosen tokens) */
        double tok_c = 0, nll = 0;
        for (i = 0; i < n; i++) {
            tok_c += len[i];
            nll -= pol[i] * (per_token ? len[i] : 1.0);
        }
        for (i = 0; i < n; i++) d[i] -= c.rpo_alpha * (double)n / norm / tok_c;
        for (i = 0; i < n; i++) losses[i] += c.rpo_alpha * nll / tok_c;
        if (st) cllm_train_stats_add(st, "nll_loss", nll / tok_c, 1);
    }
    if ((rc = cllm__backward_rows(m, d, err)) != CLLM_OK) goto done;
    for (i = 0; i < n; i++) {
        s_loss += losses[i];
        s_cr += cr[i];
        s_rj += rj[i];
        s_acc += cr[i] > rj[i];
        s_pc += pol[i];
        s_pr += pol[n + i];
    }
    if (st) {                       /* TRL logs each micro-batch's means and averages them over the step */
        cllm_train_stats_add(st, "loss", s_loss, n);
        cllm_train_stats_add(st, "rewards/chosen", s_cr / n, 1);
        cllm_train_stats_add(st, "rewards/rejected", s_rj / n, 1);
        cllm_train_stats_add(st, "rewards/accuracies", s_acc / n, 1);
        cllm_train_stats_add(st, "rewards/margins", (s_cr - s_rj) / n, 1);
        cllm_train_stats_add(st, "logps/chosen", s_pc / n, 1);
        cllm_train_stats_add(st, "logps/rejected", s_pr / n, 1);
        st->tokens += (double)cllm__batch_tokens(&sb);
    }
done:
    cllm__seq_batch_free(&sb);
    CLLM_FREE(rows);
    CLLM_FREE(mem);
    return rc == CLLM_OK ? cllm__succeed(err) : rc;
}

/* TRL's DPOTrainer evaluation (evaluation_loop over dpo_loss, no update), per pair: the summed completion logps of
   the policy and of the reference (the pairs' ref_*_logps, else ref, else m itself: an unchanged policy is its own
   frozen copy; 0 with reference_free), then cllm_dpo_loss on them (IPO on per-token averages, as DPOTrainer):
       chosen_rewards_i = beta (pc_i - rc_i),  rejected_rewards_i = beta (pr_i - rr_i),  losses_i = l(z_i). */
CLLMDEF cllm_result cllm_dpo_eval(cllm_model *m, cllm_model *ref, const cllm_dpo_data *d, const cllm_dpo_config *cfg,
                                  int batch_size, double *logps, cllm_dpo_out *out, cllm_err *err) {
    int n = d ? d->n : 0;
    const cllm_train_seq **seqs = (const cllm_train_seq **)cllm__calloc(2 * (size_t)n + 1, sizeof *seqs);
    double *avg = (double *)cllm__calloc(4 * (size_t)n + 1, sizeof(double));
    cllm_dpo_config c = CLLM__ZERO;
    cllm_result rc = CLLM_OK;
    int i;
    if (cfg) c = *cfg;
    if (!seqs || !avg) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else if (n < 1 || !m || !logps || !out) rc = cllm__fail(err, CLLM_ERR_ARG, "DPO eval: needs a model and pairs");
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        seqs[i] = &d->pairs[i].chosen;
        seqs[n + i] = &d->pairs[i].rejected;
    }
    if (rc == CLLM_OK) rc = cllm_seq_logps(m, seqs, 2 * n, batch_size, logps, err);
    if (rc == CLLM_OK && d->has_ref) {
        for (i = 0; i < n; i++) {
            logps[2 * n + i] = d->pairs[i].ref_chosen;
            logps[3 * n + i] = d->pairs[i].ref_rejected;
        }
    } else if (rc == CLLM_OK && c.reference_free) {
        for (i = 0; i < 2 * n; i++) logps[2 * n + i] = 0;
    } else if (rc == CLLM_OK) {
        rc = cllm_seq_logps(ref ? ref : m, seqs, 2 * n, batch_size, logps + 2 * n, err);
    }
    for (i = 0; i < 4 * n && rc == CLLM_OK; i++) {
        int tokens = cllm_train_seq_targets(seqs[i % (2 * n)]);
        int per_token = c.loss_type == CLLM_DPO_IPO && !c.ipo_sum;
        if (tokens < 1) rc = cllm__fail(err, CLLM_ERR_ARG, "pair %d: a completion has no target tokens", i % n);
        else avg[i] = per_token ? logps[i] / tokens : logps[i];
    }
    if (rc == CLLM_OK) rc = cllm_dpo_loss(&c, n, avg, avg + n, avg + 2 * n, avg + 3 * n, out, err);
    CLLM_FREE(seqs);
    CLLM_FREE(avg);
    return rc == CLLM_OK ? cllm__succeed(err) : rc;
}

/* The trainer's units of a step whose loss is a mean over examples (pairs, prompts). */
static double cllm__units_are_examples(void *ctx, const int *idx, int n) {
    (void)ctx;
    (void)idx;
    return n;
}

/* ---- rollouts: the policy's samples, scored by MR (shared by online DPO, PPO and GRPO) ------- */

/* The online stages train on the response's token ids as generated (no re-tokenization) and keep LoRA dropout off in
   every forward and backward (TRL's PPO and online DPO disable dropout; we do the same for GRPO so that the sampler's
   and the trainer's log-probs agree). The policy's seed counter is set per (step, prompt, phase), so a resumed run
   samples the same responses and futures (data_fmt/train_online.md, "Seeds and resuming"). A response whose MR failed
   leaves its pair, row or group out of the step ("mr/failed"); a step left with nothing is an error. */

/* The seed counter of (step, prompt, phase): phase 0 samples the trained responses, 1 simulates MR's futures, 2 is a
   local simulator's, 3 + e orders PPO's pass e. One splitmix64 step over the three mixed by odd constants, so every
   combination gets its own streams and a resumed run replays exactly those of an uninterrupted one. */
static uint64_t cllm__online_call(long step, int prompt, int phase) {
    uint64_t x = (uint64_t)step * 0x9E3779B97F4A7C15ull ^ (uint64_t)(unsigned)prompt * 0xBF58476D1CE4E5B9ull ^
                 (uint64_t)(unsigned)phase * 0x94D049BB133111EBull;
    return cllm__splitmix64(&x);
}

/* The rollout settings with a method's defaults. */
static cllm_rollout_config cllm__rollout_def(const cllm_rollout_config *in, float temperature, int top_k,
                                             int max_new_tokens, uint64_t seed) {
    cllm_rollout_config c = *in;
    c.gen.sampler.temperature = cllm__def(c.gen.sampler.temperature, temperature);
    c.gen.sampler.top_k = c.gen.sampler.top_k < 0 ? 0 : cllm__def(c.gen.sampler.top_k, top_k);
    c.gen.sampler.top_p = cllm__def(c.gen.sampler.top_p, 1.0f);
    c.gen.sampler.seed = cllm__def(c.gen.sampler.seed, seed);
    c.gen.max_new_tokens = cllm__def(c.gen.max_new_tokens, max_new_tokens);
    c.logprob_tol = cllm__def(c.logprob_tol, 1e-4);
    return c;
}

static cllm_result cllm__rollout_check_config(const cllm_rollout_config *c, const cllm_local_lm *policy,
                                              const cllm_online_prompts *p, cllm_err *err) {
    if (!policy || !policy->model.params_memory || !policy->tok.priv)
        return cllm__fail(err, CLLM_ERR_ARG, "online training needs the policy as a loaded local model");
    if (!p || p->n < 1) return cllm__fail(err, CLLM_ERR_ARG, "online training needs prompts");
    if (!c->mr) return cllm__fail(err, CLLM_ERR_ARG, "online training needs the reward: rollout.mr");
    if (c->mr->window > 0 && (!c->user || !c->future))
        return cllm__fail(err, CLLM_ERR_ARG, "MR with window %d needs rollout.user (the simulator) and rollout.future "
                                             "(the policy as future assistant)", c->mr->window);
    if (c->gen.sampler.greedy)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "online training samples its responses: greedy decoding gives every sample the same answer");
    return CLLM_OK;
}

/* n_samples responses to each prompt idx[0..n) into out[i * n_samples + s], the policy's seed
   counter set per prompt (phase 0). The system prompt goes first, never into the history. */
static cllm_result cllm__rollout_sample(cllm_local_lm *lm, const cllm_rollout_config *c, const cllm_online_prompts *p,
                                        const int *idx, int n, int n_samples, long step, cllm_local_output *out,
                                        cllm_err *err) {
    int sys = c->system_prompt != NULL, i, j;
    cllm_result rc = CLLM_OK;
    memset(out, 0, (size_t)n * (size_t)n_samples * sizeof *out);
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        const cllm_conv *h = &p->items[idx[i]].history;
        cllm_conv view = CLLM__ZERO;
        view.msgs = (cllm_message *)cllm__calloc((size_t)h->n + 1, sizeof *view.msgs);
        if (!view.msgs) {
            rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
            break;
        }
        if (sys) {
            view.msgs[0].role = "system";
            view.msgs[0].content = c->system_prompt;
        }
        for (j = 0; j < h->n; j++) view.msgs[sys + j] = h->msgs[j];
        view.n = view.cap = sys + h->n;
        lm->calls = cllm__online_call(step, idx[i], 0);
        rc = cllm_local_chat(lm, &view, 1, n_samples, &c->gen, out + (size_t)i * n_samples, err);
        CLLM_FREE(view.msgs);
    }
    if (rc != CLLM_OK) cllm_local_outputs_free(out, n * n_samples);
    return rc;
}

/* MR (paper Eq. 1-2, cllm_mr_score) of every response out[k] (k < n * n_samples, prompt idx[k / n_samples]) in one
   batch: scores[k], NAN where it failed; *failed counts those. The policy plays the future assistant with its seed
   counter set from (step, first prompt, 1) (a local simulator's from phase 2). */
static cllm_result cllm__rollout_score(const cllm_rollout_config *c, cllm_local_lm *policy,
                                       const cllm_online_prompts *p, const int *idx, int n, int n_samples, long step,
                                       const cllm_local_output *out, double *scores, int *failed, cllm_err *err) {
    int N = n * n_samples, k;
    cllm_mr_item *items = (cllm_mr_item *)cllm__calloc((size_t)N, sizeof *items);
    cllm_mr_result *res = (cllm_mr_result *)cllm__calloc((size_t)N, sizeof *res);
    cllm_result rc = CLLM_OK;
    cllm_err e;
    *failed = 0;
    if (!items || !res) {
        CLLM_FREE(items);
        CLLM_FREE(res);
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    for (k = 0; k < N; k++) {
        const cllm_online_prompt *it = &p->items[idx[k / n_samples]];
        items[k].goal = &it->goal;
        items[k].task = &it->task;
        items[k].history = &it->history;
        items[k].candidate = out[k].text;
    }
    policy->calls = cllm__online_call(step, idx[0], 1);
    if (c->user_lm) c->user_lm->calls = cllm__online_call(step, idx[0], 2);
    cllm__ok(&e);
    if (cllm_mr_score(c->mr, c->user, c->future, items, N, res, &e) != CLLM_OK && res[0].n_samples == 0)
        rc = cllm__fail(err, e.code, "MR: %s", e.msg);                  /* it never ran: a setup error */
    for (k = 0; k < N; k++) {
        scores[k] = rc == CLLM_OK && res[k].code == CLLM_OK ? res[k].mr : NAN;
        *failed += rc == CLLM_OK && isnan(scores[k]);
        cllm_mr_result_free(&res[k]);
    }
    CLLM_FREE(items);
    CLLM_FREE(res);
    return rc;
}

/* The tokens of a response equal to id (the tokenizer's eos: TRL compares with eos_token_id only). */
static int cllm__count_id(const cllm_local_output *o, int id) {
    int t, count = 0;
    for (t = 0; t < o->n; t++) count += o->ids[t] == id;
    return count;
}

/* The training sequence of one response: its prompt ids, then its ids as targets. */
static cllm_result cllm__rollout_seq(const cllm_local_output *o, cllm_train_seq *seq, cllm_err *err) {
    int n = o->n_prompt + o->n, t;
    int *ids = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    unsigned char *target = (unsigned char *)cllm__calloc((size_t)n + 1, 1);
    cllm_result rc;
    memset(seq, 0, sizeof *seq);
    if (!ids || !target) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else if (o->n_prompt < 1 || o->n < 1)
        rc = cllm__fail(err, CLLM_ERR_ARG, "a response needs a prompt and at least one token");
    else {
        for (t = 0; t < n; t++) {
            ids[t] = t < o->n_prompt ? o->prompt_ids[t] : o->ids[t - o->n_prompt];
            target[t] = t >= o->n_prompt;
        }
        rc = cllm__seq_from(seq, ids, target, n, o->n_prompt, err);
    }
    CLLM_FREE(ids);
    CLLM_FREE(target);
    return rc;
}

/* A forward of sequences under m at temperature tau, dropout off (see above), with pad_cols pad positions after the
   longest one (cllm__seq_batch_make). */
static cllm_result cllm__rollout_forward(cllm_model *m, const cllm_train_seq *const *seqs, int n, float tau,
                                         int pad_cols, cllm__seq_batch *sb, cllm_err *err) {
    int training = m->lora ? m->lora->training : 0;
    cllm_result rc = cllm__seq_batch_make(sb, seqs, n, pad_cols, err);
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
static void cllm__gather_logps(const cllm_model *m, const cllm_train_seq *const *seqs, int n, int L, double fill,
                               double *out) {
    int r, t;
    for (r = 0; r < n; r++) {
        int len = seqs[r]->n - seqs[r]->n_prompt;
        for (t = 0; t < L; t++)
            out[(size_t)r * L + t] = t < len ? (double)m->acts.logp[cllm__resp_pos(m, seqs[r], r, t)] : fill;
    }
}

/* The values of the last forward as (n, L): V at the position before token t, for t up to the
   response length (the slot after the last token reads the last token's state), else 0. */
static void cllm__gather_values(const cllm_model *m, const cllm_value_head *vh, const cllm_train_seq *const *seqs,
                                int n, int L, double *out) {
    int C = m->config.hidden_size, r, t;
    for (r = 0; r < n; r++) for (t = 0; t < L; t++) {
        double *v = &out[(size_t)r * L + t];
        *v = 0;
        if (t <= seqs[r]->n - seqs[r]->n_prompt)
            cllm_value_head_forward(vh, m->acts.lnf + cllm__resp_pos(m, seqs[r], r, t) * C, 1, v);
    }
}

/* The reference's response log-probs: ref, else m with its adapters off (PEFT), at tau. */
static cllm_result cllm__rollout_ref(cllm_model *m, cllm_model *ref, const cllm_train_seq *const *seqs, int n,
                                     float tau, int L, double *out, cllm_err *err) {
    cllm__seq_batch sb;
    cllm_model *which = ref ? ref : m;
    int enabled = m->lora ? m->lora->enabled : 0;
    cllm_result rc;
    if (!ref && !(m->lora && m->lora->enabled))
        return cllm__fail(err, CLLM_ERR_ARG, "this objective needs a reference: a frozen reference model, or LoRA "
                                             "adapters (the base model is the reference)");
    if (!ref) m->lora->enabled = 0;
    rc = cllm__rollout_forward(which, seqs, n, tau, 0, &sb, err);
    if (!ref) m->lora->enabled = enabled;
    if (rc == CLLM_OK) cllm__gather_logps(which, seqs, n, L, 1.0, out);
    cllm__seq_batch_free(&sb);
    return rc;
}

/* Backward of sum over rows and response tokens of scale * (dlp * logp + dv * value), after the
   policy's forward of seqs (the last forward of m, cllm__rollout_forward: dropout off, so off
   here too, whatever the trainer's micro-step set). dv and vh may be NULL. */
static cllm_result cllm__rollout_backward(cllm_model *m, cllm_value_head *vh, const cllm_train_seq *const *seqs, int n,
                                          int L, const double *dlp, const double *dv, double scale, cllm_err *err) {
    size_t BT = (size_t)m->B * (size_t)m->T, C = (size_t)m->config.hidden_size;
    cllm_float *dlogp = (cllm_float *)cllm__calloc(BT, sizeof(cllm_float));
    cllm_float *dh = dv ? (cllm_float *)cllm__calloc(BT * C, sizeof(cllm_float)) : NULL;
    cllm_result rc = CLLM_OK;
    int training = m->lora ? m->lora->training : 0, r, t;
    if (!dlogp || (dv && !dh)) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (r = 0; r < n && rc == CLLM_OK; r++) {
        int len = seqs[r]->n - seqs[r]->n_prompt;
        for (t = 0; t < L && t < len; t++)
            dlogp[cllm__resp_pos(m, seqs[r], r, t)] = (cllm_float)(scale * dlp[(size_t)r * L + t]);
        for (t = 0; dv && t < L && t <= len; t++) {
            size_t pos = cllm__resp_pos(m, seqs[r], r, t);
            double d = scale * dv[(size_t)r * L + t];
            if (d != 0) cllm_value_head_backward(vh, m->acts.lnf + pos * C, 1, &d, dh + pos * C);
        }
    }
    if (rc == CLLM_OK) {
        if (m->lora) m->lora->training = 0;
        rc = cllm_backward(m, dlogp, dh, err);
        if (m->lora) m->lora->training = training;
    }
    CLLM_FREE(dlogp);
    CLLM_FREE(dh);
    return rc;
}

/* The largest |sampler logprob - forward logprob| over the responses (the forward at the
   sampling temperature is the last one of m over seqs); a failure above tol. */
static cllm_result cllm__rollout_check(const cllm_rollout_config *c, const cllm_model *m,
                                       const cllm_local_output *const *outs, const cllm_train_seq *const *seqs, int n,
                                       double *max_diff, cllm_err *err) {
    int r, t;
    *max_diff = 0;
    if (c->logprob_tol < 0 || c->gen.sampler.top_k > 0 || c->gen.sampler.top_p < 1) return CLLM_OK;
    for (r = 0; r < n; r++) for (t = 0; t < outs[r]->n; t++) {
        double d = fabs((double)outs[r]->logprobs[t] - (double)m->acts.logp[cllm__resp_pos(m, seqs[r], r, t)]);
        if (!(d <= *max_diff)) *max_diff = d;
    }
    if (!(*max_diff <= c->logprob_tol))
        return cllm__fail(err, CLLM_ERR_NUMERIC, "the sampler's log-probs differ from a forward pass at the sampling "
                                                 "temperature by %.3g (> logprob_tol %g): the old log-probs would be "
                                                 "wrong (set logprob_tol higher, or negative to skip the check)",
                          *max_diff, c->logprob_tol);
    return CLLM_OK;
}

/* The rows of a rollout: a sequence and a pointer per kept response, freed together. */
typedef struct cllm__rows {
    cllm_train_seq *seqs;
    const cllm_train_seq **ptr;
    const cllm_local_output **out;
    int n;
} cllm__rows;

static void cllm__rows_free(cllm__rows *r) {
    int i;
    for (i = 0; i < r->n; i++) cllm_train_seq_free(&r->seqs[i]);
    CLLM_FREE(r->seqs);
    CLLM_FREE(r->ptr);
    CLLM_FREE(r->out);
    memset(r, 0, sizeof *r);
}

/* rows = out[keep[i]] for i < n. */
static cllm_result cllm__rows_make(cllm__rows *rows, const cllm_local_output *out, const int *keep, int n,
                                   cllm_err *err) {
    cllm_result rc = CLLM_OK;
    int i;
    memset(rows, 0, sizeof *rows);
    rows->seqs = (cllm_train_seq *)cllm__calloc((size_t)n + 1, sizeof *rows->seqs);
    rows->ptr = (const cllm_train_seq **)cllm__calloc((size_t)n + 1, sizeof *rows->ptr);
    rows->out = (const cllm_local_output **)cllm__calloc((size_t)n + 1, sizeof *rows->out);
    if (!rows->seqs || !rows->ptr || !rows->out) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        rc = cllm__rollout_seq(&out[keep[i]], &rows->seqs[i], err);
        rows->ptr[i] = &rows->seqs[i];
        rows->out[i] = &out[keep[i]];
        rows->n = i + 1;
    }
    if (rc != CLLM_OK) cllm__rows_free(rows);
    return rc;
}

/* ---- online DPO (TRL v0.19.1 OnlineDPOTrainer, MR as the judge) ------------------------------ */

typedef struct cllm__odpo_ctx {
    cllm_local_lm             *lm;
    cllm_model                *ref;
    const cllm_online_prompts *p;
    cllm_online_dpo_config     cfg;      /* defaults applied */
    cllm_dpo_config            dpo;
} cllm__odpo_ctx;

/* A pair from two responses to one prompt, cut to max_length by the start of the prompt (the
   same cut for both, from the longer response). */
static cllm_result cllm__odpo_pair(cllm_dpo_pair *pair, const cllm_local_output *chosen,
                                   const cllm_local_output *rejected, int max_length, cllm_err *err) {
    int longer = chosen->n > rejected->n ? chosen->n : rejected->n, keep = -1;
    cllm_result rc;
    memset(pair, 0, sizeof *pair);
    pair->ref_chosen = pair->ref_rejected = NAN;
    if ((rc = cllm__rollout_seq(chosen, &pair->chosen, err)) != CLLM_OK) return rc;
    if ((rc = cllm__rollout_seq(rejected, &pair->rejected, err)) != CLLM_OK) {
        cllm_train_seq_free(&pair->chosen);
        return rc;
    }
    if (pair->chosen.n > max_length || pair->rejected.n > max_length)
        keep = max_length - longer < 1 ? 1 : max_length - longer;
    cllm_train_seq_truncate(&pair->chosen, max_length, keep);
    cllm_train_seq_truncate(&pair->rejected, max_length, keep);
    return CLLM_OK;
}

/* One micro-batch of online DPO: two responses per prompt, both scored by MR; the higher MR is chosen (a tie: the
   first, as CollabLLM's judge takes the argmax); cllm_dpo_micro_step on the pairs, dropout off (TRL's
   disable_dropout). Statistics as TRL v0.19.1 OnlineDPOTrainer.training_step logs them, one value per micro-batch:
   val/contain_eos_token (responses holding the tokenizer's eos id) and beta, besides cllm_dpo_micro_step's. TRL's
   objective/kl, objective/non_score_reward and objective/entropy sum over every completion slot, the pads after
   the eos included (trl#6803); ours sum over the response tokens and carry their own names: objective/kl_response
   = mean over responses of sum_t (logp - ref) = (rewards/chosen + rewards/rejected) / (2 beta), and so on. */
static cllm_result cllm__odpo_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm,
                                    cllm_train_stats *st, cllm_err *err) {
    cllm__odpo_ctx *c = (cllm__odpo_ctx *)ctx;
    cllm_local_output *out = (cllm_local_output *)cllm__calloc(2 * (size_t)n, sizeof *out);
    double *mr = (double *)cllm__calloc(2 * (size_t)n, sizeof(double));
    cllm_dpo_pair *pairs = (cllm_dpo_pair *)cllm__calloc((size_t)n, sizeof *pairs);
    const cllm_dpo_pair **pp = (const cllm_dpo_pair **)cllm__calloc((size_t)n, sizeof *pp);
    double s_mr = 0, s_ch = 0, s_rj = 0, eos = 0, s_cr, s_rr, s_pc, s_pr;
    int failed = 0, k = 0, training = tr->lora ? tr->lora->training : 0, eos_id = c->lm->tok.eos_id, i;
    cllm_train_stats dst = CLLM__ZERO;
    cllm_result rc;
    if (!out || !mr || !pairs || !pp) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else rc = cllm__rollout_sample(c->lm, &c->cfg.rollout, c->p, idx, n, 2, tr->step, out, err);
    if (rc == CLLM_OK)
        rc = cllm__rollout_score(&c->cfg.rollout, c->lm, c->p, idx, n, 2, tr->step, out, mr, &failed, err);
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        int first = mr[2 * i] >= mr[2 * i + 1];
        eos += (cllm__count_id(&out[2 * i], eos_id) > 0) + (cllm__count_id(&out[2 * i + 1], eos_id) > 0);
        if (isnan(mr[2 * i]) || isnan(mr[2 * i + 1])) continue;
        rc = cllm__odpo_pair(&pairs[k], &out[2 * i + !first], &out[2 * i + first], c->cfg.max_length, err);
        if (rc != CLLM_OK) break;
        pp[k] = &pairs[k];
        k++;
        s_mr += mr[2 * i] + mr[2 * i + 1];
        s_ch += mr[2 * i + !first];
        s_rj += mr[2 * i + first];
    }
    if (rc == CLLM_OK && k == 0)
        rc = cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: MR failed for every response of a micro-batch (%d "
                                               "failures); nothing to train on", tr->step + 1, failed);
    if (rc != CLLM_OK) goto done;
    if (tr->lora) tr->lora->training = 0;
    rc = cllm_dpo_micro_step(tr->model, c->ref, pp, k, &c->dpo, norm, &dst, err);
    if (tr->lora) tr->lora->training = training;
    if (rc != CLLM_OK) goto done;
    for (i = 0; i < dst.n; i++) cllm_train_stats_add(st, dst.name[i], dst.sum[i], dst.count[i]);
    st->tokens += dst.tokens;
    s_cr = cllm_train_stats_mean(&dst, "rewards/chosen");
    s_rr = cllm_train_stats_mean(&dst, "rewards/rejected");
    s_pc = cllm_train_stats_mean(&dst, "logps/chosen");
    s_pr = cllm_train_stats_mean(&dst, "logps/rejected");
    cllm_train_stats_add(st, "objective/kl_response", (s_cr + s_rr) / (2 * c->dpo.beta), 1);
    cllm_train_stats_add(st, "objective/non_score_reward_response", -(s_cr + s_rr) / 2, 1);
    cllm_train_stats_add(st, "objective/entropy_response", -(s_pc + s_pr) / 2, 1);
    cllm_train_stats_add(st, "val/contain_eos_token", eos / (2 * n), 1);
    cllm_train_stats_add(st, "beta", c->dpo.beta, 1);
    cllm_train_stats_add(st, "reward", s_mr, 2 * k);
    cllm_train_stats_add(st, "mr/chosen", s_ch, k);
    cllm_train_stats_add(st, "mr/rejected", s_rj, k);
    cllm_train_stats_add(st, "mr/failed", failed, 1);
done:
    for (i = 0; pairs && i < k; i++) {
        cllm_train_seq_free(&pairs[i].chosen);
        cllm_train_seq_free(&pairs[i].rejected);
    }
    if (out) cllm_local_outputs_free(out, 2 * n);
    CLLM_FREE(out);
    CLLM_FREE(mr);
    CLLM_FREE(pairs);
    CLLM_FREE(pp);
    return rc;
}

/* Online DPO (paper section 3.3, TRL v0.19.1 OnlineDPOTrainer): sampling as TRL (T 0.9, top_k
   50, 64 new tokens), DPO on summed log-probs (sigmoid or IPO), the paper's learning rate 5e-6.
   Units of the step's loss: pairs. Statistics: TRL's, listed in data_fmt/train_online.md. */
CLLMDEF cllm_result cllm_train_online_dpo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref,
                                          const cllm_online_prompts *prompts, const cllm_online_dpo_config *cfg,
                                          const cllm_train_config *train, cllm_err *err) {
    cllm__odpo_ctx ctx = CLLM__ZERO;
    cllm_result rc;
    if (!cfg || !train) return cllm__fail(err, CLLM_ERR_ARG, "online DPO: needs a config and a training config");
    ctx.lm = policy;
    ctx.ref = ref;
    ctx.p = prompts;
    ctx.cfg = *cfg;
    ctx.cfg.rollout = cllm__rollout_def(&cfg->rollout, 0.9f, 50, 64, cllm__def(train->seed, 42));
    ctx.cfg.beta = cllm__def(cfg->beta, 0.1);
    ctx.cfg.max_length = cllm__def(cfg->max_length, 512);
    if ((rc = cllm__rollout_check_config(&ctx.cfg.rollout, policy, prompts, err)) != CLLM_OK) return rc;
    if (ctx.cfg.loss_type != CLLM_DPO_SIGMOID && ctx.cfg.loss_type != CLLM_DPO_IPO)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "online DPO: loss_type must be sigmoid or IPO (as TRL's OnlineDPOTrainer)");
    if (ctx.cfg.max_length < 2) return cllm__fail(err, CLLM_ERR_ARG, "online DPO: max_length must be at least 2");
    if (!ref && !lora)
        return cllm__fail(err, CLLM_ERR_ARG, "online DPO needs a reference: a frozen copy of the initial policy, or "
                                             "LoRA adapters (the base model is the reference)");
    if (!(ctx.cfg.rpo_alpha >= 0)) return cllm__fail(err, CLLM_ERR_ARG, "online DPO: rpo_alpha must be >= 0");
    ctx.dpo.loss_type = ctx.cfg.loss_type;
    ctx.dpo.beta = ctx.cfg.beta;
    ctx.dpo.ipo_sum = 1;
    ctx.dpo.rpo_alpha = ctx.cfg.rpo_alpha;
    return cllm__train_task(&policy->model, lora, "online-dpo", prompts->n, 5e-6, cllm__units_are_examples,
                            cllm__odpo_micro, &ctx, train, err);
}

/* ---- PPO: the rollout arithmetic (TRL v0.19 PPOTrainer) -------------------------------------- */

CLLMDEF void cllm_ppo_rollout_free(cllm_ppo_rollout *r) {
    if (!r) return;
    CLLM_FREE(r->response);
    CLLM_FREE(r->scores);
    memset(r, 0, sizeof *r);
}

/* One allocation per type: the ints (response, then seq_end) and the doubles (scores, then the nine (B, L) arrays). */
CLLMDEF cllm_result cllm_ppo_rollout_alloc(cllm_ppo_rollout *r, int B, int L, cllm_err *err) {
    size_t n;
    memset(r, 0, sizeof *r);
    if (B < 1 || L < 1 || (size_t)B > SIZE_MAX / sizeof(double) / 10 / (size_t)L)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO rollout: bad size %d x %d", B, L);
    n = (size_t)B * (size_t)L;
    r->B = B;
    r->L = L;
    r->response = (int *)cllm__calloc(n + (size_t)B, sizeof(int));
    r->scores = (double *)cllm__calloc(9 * n + (size_t)B, sizeof(double));
    if (!r->response || !r->scores) {
        cllm_ppo_rollout_free(r);
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for a %d x %d rollout", B, L);
    }
    r->seq_end = r->response + n;
    r->logprobs = r->scores + B;
    r->ref_logprobs = r->logprobs + n;
    r->values = r->ref_logprobs + n;
    r->mask = r->values + n;
    r->value_mask = r->mask + n;
    r->kl = r->value_mask + n;
    r->rewards = r->kl + n;
    r->advantages = r->rewards + n;
    r->returns = r->advantages + n;
    return CLLM_OK;
}

/* Zero fields take TRL v0.19's defaults; negative ones mean 0 where the field says so. */
static cllm_ppo_config cllm__ppo_def(const cllm_ppo_config *in) {
    cllm_ppo_config c;
    if (in) c = *in;
    else memset(&c, 0, sizeof c);
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

/* TRL v0.19 PPOTrainer's rollout arithmetic, in place (its train() before the optimisation):
     1. sequence ends (cllm_ppo_sequence_end) and the masks: policy t <= end (TRL's ~pm), critic
        t <= end + 1 (~pm1); log-probs after the end become INVALID_LOGPROB 1.0, values after
        end + 1 become 0;
     2. per-token rewards (cllm_ppo_rewards); with whiten_rewards, whitened over the critic mask
        keeping their mean, then zeroed after end + 1;
     3. GAE over all L positions (CLLM_GAE_TRL), returns = advantages + values;
     4. the advantages whitened over the policy mask (unbiased, or biased_whiten as OpenRLHF) and
        zeroed after the end. */
CLLMDEF cllm_result cllm_ppo_prepare(const cllm_ppo_config *cfg, cllm_ppo_rollout *r, cllm_err *err) {
    cllm_ppo_config c = cllm__ppo_def(cfg);
    cllm_ppo_rewards_input rin = CLLM__ZERO;
    cllm_gae_input gin = CLLM__ZERO;
    size_t n = (size_t)r->B * (size_t)r->L, i;
    cllm_result rc;
    int b, t;
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
    rin.B = r->B;
    rin.T = r->L;
    rin.logprobs = r->logprobs;
    rin.ref_logprobs = r->ref_logprobs;
    rin.scores = r->scores;
    rin.seq_end = r->seq_end;
    rin.kl_coef = c.kl_coef;
    rin.kl_estimator = c.kl_estimator;
    rin.placement = c.reward_placement;
    if ((rc = cllm_ppo_rewards(&rin, r->rewards, r->kl, err)) != CLLM_OK) return rc;
    if (c.whiten_rewards) {
        if ((rc = cllm_masked_whiten(r->rewards, r->value_mask, n, 1, 0, err)) != CLLM_OK) return rc;
        for (i = 0; i < n; i++)
            if (!r->value_mask[i]) r->rewards[i] = 0;
    }
    gin.B = r->B;
    gin.T = r->L;
    gin.rewards = r->rewards;
    gin.values = r->values;
    gin.mask = r->mask;
    gin.gamma = c.gamma;
    gin.lam = c.lam;
    if ((rc = cllm_gae(&gin, r->advantages, r->returns, err)) != CLLM_OK) return rc;
    if ((rc = cllm_masked_whiten(r->advantages, r->mask, n, 0, c.biased_whiten, err)) != CLLM_OK) return rc;
    for (i = 0; i < n; i++)
        if (!r->mask[i]) r->advantages[i] = 0;
    return cllm__succeed(err);
}

/* The loss of a micro-batch of rollout rows rows[0..n) given the current policy's log-probs and
   values there (n*L each, in the order of rows), overwritten as TRL does (INVALID 1.0 after the
   end, 0 after end + 1): cllm_ppo_loss with the rollout's log-probs, values, advantages, returns
   and masks. out->d_logprobs / d_values (n*L, optional) receive the gradients. */
CLLMDEF cllm_result cllm_ppo_rollout_loss(const cllm_ppo_config *cfg, const cllm_ppo_rollout *r, const int *rows, int n,
                                          double *logprobs, double *values, cllm_ppo_loss_out *out, cllm_err *err) {
    cllm_ppo_config c = cllm__ppo_def(cfg);
    cllm_ppo_loss_input in = CLLM__ZERO;
    size_t N = (size_t)n * (size_t)r->L;
    double *buf = (double *)cllm__calloc(N * 6 + 1, sizeof(double));
    double *old_lp = buf, *old_v = buf + N, *adv = buf + 2 * N, *ret = buf + 3 * N, *mask = buf + 4 * N;
    double *vmask = buf + 5 * N;
    cllm_result rc;
    int k, t;
    if (!buf) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (k = 0; k < n; k++) {
        if (rows[k] < 0 || rows[k] >= r->B) {
            CLLM_FREE(buf);
            return cllm__fail(err, CLLM_ERR_ARG, "PPO rollout: row %d is not in the rollout", rows[k]);
        }
        for (t = 0; t < r->L; t++) {
            size_t src = (size_t)rows[k] * r->L + t, i = (size_t)k * r->L + t;
            old_lp[i] = r->logprobs[src];
            old_v[i] = r->values[src];
            adv[i] = r->advantages[src];
            ret[i] = r->returns[src];
            mask[i] = r->mask[src];
            vmask[i] = r->value_mask[src];
            if (!mask[i]) logprobs[i] = 1.0;            /* TRL: new_logprobs[pm] = INVALID_LOGPROB */
            if (!vmask[i]) values[i] = 0;               /*      vpred[pm1] = 0 */
        }
    }
    in.B = n;
    in.T = r->L;
    in.logprobs = logprobs;
    in.old_logprobs = old_lp;
    in.advantages = adv;
    in.values = values;
    in.old_values = old_v;
    in.returns = ret;
    in.mask = mask;
    in.value_mask = vmask;
    in.cliprange = c.cliprange;
    in.cliprange_value = c.cliprange_value;
    in.vf_coef = c.vf_coef;
    rc = cllm_ppo_loss(&in, out, err);
    CLLM_FREE(buf);
    return rc;
}

/* ---- PPO: the value head (legacy TRL's AutoModelForCausalLMWithValueHead) -------------------- */

CLLMDEF void cllm_value_head_free(cllm_value_head *vh) {
    if (!vh) return;
    CLLM_FREE(vh->w);
    memset(vh, 0, sizeof *vh);
}

/* Init as torch's nn.Linear(C, 1): kaiming_uniform(a = sqrt 5) for the weight and the bias rule
   both give U(-1/sqrt C, 1/sqrt C). The weights, gradient and AdamW moments share one allocation. */
CLLMDEF cllm_result cllm_value_head_init(cllm_value_head *vh, int C, uint64_t seed, cllm_err *err) {
    cllm_rng rng;
    double bound;
    int i;
    memset(vh, 0, sizeof *vh);
    if (C < 1) return cllm__fail(err, CLLM_ERR_ARG, "value head: hidden size must be positive");
    vh->C = C;
    vh->w = (cllm_float *)cllm__calloc(4 * ((size_t)C + 1), sizeof(cllm_float));
    if (!vh->w) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    vh->grad = vh->w + (C + 1);
    vh->m = vh->grad + (C + 1);
    vh->v = vh->m + (C + 1);
    cllm_rng_seed(&rng, seed ^ 0x56484541444ull);
    bound = 1.0 / sqrt((double)C);
    for (i = 0; i <= C; i++) vh->w[i] = (cllm_float)((2 * cllm_rng_uniform(&rng) - 1) * bound);
    return cllm__succeed(err);
}

/* v = w . h + b for each row (TRL's v_head.summary). */
CLLMDEF void cllm_value_head_forward(const cllm_value_head *vh, const cllm_float *h, int n, double *values) {
    int i, c;
    for (i = 0; i < n; i++) {
        double s = vh->w[vh->C];
        for (c = 0; c < vh->C; c++) s += (double)vh->w[c] * h[(size_t)i * vh->C + c];
        values[i] = s;
    }
}

/* dw += dv h, db += dv, dh += dv w. */
CLLMDEF void cllm_value_head_backward(cllm_value_head *vh, const cllm_float *h, int n, const double *dvalues,
                                      cllm_float *dh) {
    int i, c;
    for (i = 0; i < n; i++) {
        for (c = 0; c < vh->C; c++) {
            vh->grad[c] += (cllm_float)(dvalues[i] * h[(size_t)i * vh->C + c]);
            if (dh) dh[(size_t)i * vh->C + c] += (cllm_float)(dvalues[i] * vh->w[c]);
        }
        vh->grad[vh->C] += (cllm_float)dvalues[i];
    }
}

/* ---- PPO: the trainer's step (TRL v0.19 PPOTrainer.train, MR as the reward) ------------------ */

typedef struct cllm__ppo_ctx {
    cllm_local_lm             *lm;
    cllm_model                *ref;
    const cllm_online_prompts *p;
    cllm_ppo_config            cfg;         /* defaults applied                                   */
    cllm_value_head           *vh;
    int                        batch_size;  /* TRL's per-device batch                             */
    int                        grad_accum;  /* and its accumulation steps                         */
    double                     kl_coef;     /* the current one (adaptive with kl_target)          */
    cllm_running_moments       scores;      /* of every score so far (score_scaling)              */
} cllm__ppo_ctx;

/* The response rows of a rollout in TRL's layout; with pad_is_eos every token that can end a
   response is padding too (CollabLLM sets pad_token = eos_token). */
static void cllm__ppo_fill_response(cllm_ppo_rollout *r, const cllm__rows *rows, const cllm_local_lm *lm,
                                    int pad_is_eos) {
    int b, t, s;
    r->pad_id = -1;                                  /* not a token id: padding is only padding */
    for (b = 0; b < r->B; b++) for (t = 0; t < r->L; t++) {
        int id = t < rows->out[b]->n ? rows->out[b]->ids[t] : -1;
        for (s = 0; pad_is_eos && id >= 0 && s < lm->n_stop_ids; s++)
            if (id == lm->stop_ids[s]) id = -1;
        r->response[(size_t)b * r->L + t] = id;
    }
}

/* TRL's val/num_eos_tokens of one response padded to L slots: the slots equal to eos_token_id, so with pad_is_eos
   (pad = eos) every pad slot counts too. */
static int cllm__ppo_eos_tokens(const cllm_local_output *o, int L, int eos_id, int pad_is_eos) {
    return cllm__count_id(o, eos_id) + (pad_is_eos ? L - o->n : 0);
}

/* TRL's rollout statistics (see cllm_train_ppo). */
static void cllm__ppo_rollout_stats(const cllm__ppo_ctx *c, const cllm_ppo_rollout *r, const cllm__rows *rows,
                                    const double *mr, cllm_train_stats *st) {
    double kl = 0, ent = 0, sc = 0, raw = 0, eos = 0;
    int b, t;
    for (b = 0; b < r->B; b++) {
        for (t = 0; t < r->L; t++) {
            kl += r->kl[(size_t)b * r->L + t];
            ent -= r->logprobs[(size_t)b * r->L + t];
        }
        sc += r->scores[b];
        raw += mr[b];
        eos += cllm__ppo_eos_tokens(rows->out[b], r->L, c->lm->tok.eos_id, c->cfg.pad_is_eos);
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

/* The scores of a rollout: MR minus missing_eos_penalty for a response without its end; with
   score_scaling, legacy TRL's division by the running std of every score so far (+ float32 eps,
   as TRL adds torch.finfo(float32).eps), after subtracting the running mean for CLLM_SCORE_NORM. */
static void cllm__ppo_scores(cllm__ppo_ctx *c, cllm_ppo_rollout *r, const cllm__rows *rows, const double *mr,
                             cllm_train_stats *st) {
    double scale, shift;
    int b;
    for (b = 0; b < r->B; b++) {
        int missing = c->cfg.missing_eos_penalty && rows->out[b]->finish != CLLM_FINISH_EOS;
        r->scores[b] = mr[b] - (missing ? c->cfg.missing_eos_penalty : 0);
    }
    if (!c->cfg.score_scaling) return;
    cllm_running_moments_update(&c->scores, r->scores, r->B, NULL, NULL);
    scale = c->scores.std + FLT_EPSILON;
    shift = c->cfg.score_scaling == CLLM_SCORE_NORM ? c->scores.mean : 0;
    for (b = 0; b < r->B; b++) r->scores[b] = (r->scores[b] - shift) / scale;
    cllm_train_stats_add(st, "objective/score_running_mean", c->scores.mean, 1);
    cllm_train_stats_add(st, "objective/score_running_std", c->scores.std, 1);
}

/* The rollout of one step (TRL's "no grad" phase): sample one response per prompt, score it by MR, then the old
   log-probs and values from one forward of the policy at the sampling temperature (checked against the sampler's),
   the reference's log-probs, and cllm_ppo_prepare. With kl_target, legacy TRL's adaptive KL controller updates the
   coefficient from the step's objective/kl. rows, r and *mr_out are filled for the caller. */
static cllm_result cllm__ppo_rollout(cllm__ppo_ctx *c, cllm_trainer *tr, const int *idx, int n, cllm_local_output *out,
                                     cllm__rows *rows, cllm_ppo_rollout *r, double **mr_out, cllm_train_stats *st,
                                     cllm_err *err) {
    const cllm_rollout_config *rcfg = &c->cfg.rollout;
    double *mr = (double *)cllm__calloc((size_t)n, sizeof(double));
    double diff = 0;
    int *keep = (int *)cllm__calloc((size_t)n, sizeof(int));
    int B = 0, L = 1, failed = 0, b;
    float tau = rcfg->gen.sampler.temperature;
    cllm_ppo_config now = c->cfg;
    cllm__seq_batch sb = CLLM__ZERO;
    cllm_result rc;
    *mr_out = mr;
    if (!mr || !keep) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else rc = cllm__rollout_sample(c->lm, rcfg, c->p, idx, n, 1, tr->step, out, err);
    if (rc == CLLM_OK) rc = cllm__rollout_score(rcfg, c->lm, c->p, idx, n, 1, tr->step, out, mr, &failed, err);
    if (rc != CLLM_OK) goto done;
    for (b = 0; b < n; b++) {
        if (isnan(mr[b])) continue;
        mr[B] = mr[b];
        keep[B++] = b;
        if (out[b].n > L) L = out[b].n;
    }
    cllm_train_stats_add(st, "mr/failed", failed, 1);
    if (B == 0)
        rc = cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: MR failed for every response of the rollout; nothing to "
                                               "train on", tr->step + 1);
    if (rc == CLLM_OK) rc = cllm__rows_make(rows, out, keep, B, err);
    if (rc == CLLM_OK) rc = cllm_ppo_rollout_alloc(r, B, L, err);
    if (rc != CLLM_OK) goto done;
    cllm__ppo_fill_response(r, rows, c->lm, c->cfg.pad_is_eos);
    cllm__ppo_scores(c, r, rows, mr, st);
    if ((rc = cllm__rollout_forward(tr->model, rows->ptr, B, tau, 0, &sb, err)) != CLLM_OK) goto done;
    st->tokens += (double)cllm__batch_tokens(&sb);
    if ((rc = cllm__rollout_check(rcfg, tr->model, rows->out, rows->ptr, B, &diff, err)) != CLLM_OK) goto done;
    cllm_train_stats_add(st, "rollout/logprob_diff", diff, 1);
    cllm__gather_logps(tr->model, rows->ptr, B, L, 1.0, r->logprobs);
    cllm__gather_values(tr->model, c->vh, rows->ptr, B, L, r->values);
    if ((rc = cllm__rollout_ref(tr->model, c->ref, rows->ptr, B, tau, L, r->ref_logprobs, err)) != CLLM_OK) goto done;
    now.kl_coef = c->kl_coef > 0 ? c->kl_coef : -1;      /* the config's "negative = 0" */
    if ((rc = cllm_ppo_prepare(&now, r, err)) != CLLM_OK) goto done;
    cllm__ppo_rollout_stats(c, r, rows, mr, st);
    if (c->cfg.kl_target > 0)
        c->kl_coef = cllm_adaptive_kl_update(c->kl_coef, cllm_train_stats_mean(st, "objective/kl"), c->cfg.kl_target,
                                             c->cfg.kl_horizon, n);
done:
    cllm__seq_batch_free(&sb);
    CLLM_FREE(keep);
    return rc;
}

/* Row b of a rollout as TRL's training forward attends to it: the prompt and the response up to its first pad
   (with pad_is_eos the final end token is a pad). What follows is never trained: the cut changes no loss. */
static cllm_train_seq cllm__ppo_attended(const cllm_ppo_rollout *r, const cllm_train_seq *row, int b) {
    cllm_train_seq cut = *row;
    int t = 0;
    while (t < r->L && r->response[(size_t)b * r->L + t] >= 0) t++;
    cut.n = cut.n_prompt + t;
    return cut;
}

/* TRL v0.19.1 PPOTrainer's policy/entropy_avg of a micro-batch: the mean over every response slot t < L of every row,
   pads included, of the entropy of the logits that predict slot t (at the sampling temperature). For a row with R
   attended response tokens (cut by cllm__ppo_attended), slot t <= R reads the position that predicts it. A later
   slot reads a pad, which TRL's forward() gives id 0, position id P + R (the attended tokens before it) and
   attention to the attended tokens only: the same at every pad, and the same as the pad position right after the
   row here (the forward needs one pad column). m's last forward is of cut. */
static double cllm__ppo_entropy_avg(const cllm_model *m, const cllm_train_seq *const *cut, int n, int L) {
    double sum = 0;
    int k, t;
    for (k = 0; k < n; k++) {
        int R = cut[k]->n - cut[k]->n_prompt;
        for (t = 0; t < L; t++) sum += m->acts.entropy[cllm__resp_pos(m, cut[k], k, t <= R ? t : R + 1)];
    }
    return sum / ((double)n * L);
}

/* Our policy/entropy_response_avg: the mean entropy over the trained slots t <= seq_end of rollout rows sel[0..n),
   whose cut rows m's last forward ran (0 when none is trained). */
static double cllm__ppo_entropy_response_avg(const cllm_model *m, const cllm_train_seq *const *cut,
                                             const cllm_ppo_rollout *r, const int *sel, int n) {
    double sum = 0, count = 0;
    int k, t;
    for (k = 0; k < n; k++) {
        for (t = 0; t <= r->seq_end[sel[k]]; t++) sum += m->acts.entropy[cllm__resp_pos(m, cut[k], k, t)];
        count += r->seq_end[sel[k]] + 1;
    }
    return count > 0 ? sum / count : 0;
}

/* One micro-batch of the optimisation: forward the rows at the sampling temperature, the PPO
   loss on them (cllm_ppo_rollout_loss), backward of loss / n_micro (accelerate's division by the
   accumulation steps) into the policy and the value head. */
static cllm_result cllm__ppo_micro(cllm__ppo_ctx *c, cllm_trainer *tr, const cllm__rows *rows,
                                   const cllm_ppo_rollout *r, const int *sel, int n, int n_micro, cllm_train_stats *st,
                                   cllm_err *err) {
    size_t N = (size_t)n * (size_t)r->L;
    const cllm_train_seq **seqs = (const cllm_train_seq **)cllm__calloc((size_t)n, sizeof *seqs);
    cllm_train_seq *cut = (cllm_train_seq *)cllm__calloc((size_t)n, sizeof *cut);
    double *buf = (double *)cllm__calloc(4 * N + 1, sizeof(double));
    double *lp = buf, *val = buf + N, *dlp = buf + 2 * N, *dv = buf + 3 * N;
    double ratio = 0, entropy, entropy_response;
    cllm_ppo_loss_out lo = CLLM__ZERO;
    cllm__seq_batch sb = CLLM__ZERO;
    cllm_result rc = CLLM_OK;
    int k, t;
    if (!seqs || !cut || !buf) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (k = 0; k < n && rc == CLLM_OK; k++) {
        cut[k] = cllm__ppo_attended(r, rows->ptr[sel[k]], sel[k]);
        seqs[k] = &cut[k];
    }
    if (rc == CLLM_OK)
        rc = cllm__rollout_forward(tr->model, seqs, n, c->cfg.rollout.gen.sampler.temperature, 1, &sb, err);
    if (rc != CLLM_OK) goto done;
    cllm__gather_logps(tr->model, seqs, n, r->L, 1.0, lp);
    cllm__gather_values(tr->model, c->vh, seqs, n, r->L, val);
    entropy = cllm__ppo_entropy_avg(tr->model, seqs, n, r->L);
    entropy_response = cllm__ppo_entropy_response_avg(tr->model, seqs, r, sel, n);
    lo.d_logprobs = dlp;
    lo.d_values = dv;
    if ((rc = cllm_ppo_rollout_loss(&c->cfg, r, sel, n, lp, val, &lo, err)) != CLLM_OK) goto done;
    for (k = 0; k < n; k++)
        for (t = 0; t < r->L; t++) ratio += exp(lp[(size_t)k * r->L + t] - r->logprobs[(size_t)sel[k] * r->L + t]);
    rc = cllm__rollout_backward(tr->model, c->vh, seqs, n, r->L, dlp, dv, 1.0 / n_micro, err);
    if (rc != CLLM_OK) goto done;
    cllm_train_stats_add(st, "loss", lo.loss, 1);
    cllm_train_stats_add(st, "loss/policy_avg", lo.pg_loss, 1);
    cllm_train_stats_add(st, "loss/value_avg", lo.vf_loss, 1);
    cllm_train_stats_add(st, "policy/approxkl_avg", lo.approxkl, 1);
    cllm_train_stats_add(st, "policy/clipfrac_avg", lo.clipfrac, 1);
    cllm_train_stats_add(st, "val/clipfrac_avg", lo.vf_clipfrac, 1);
    cllm_train_stats_add(st, "policy/entropy_avg", entropy, 1);
    cllm_train_stats_add(st, "policy/entropy_response_avg", entropy_response, 1);
    cllm_train_stats_add(st, "val/ratio", ratio / (double)N, 1);
    st->tokens += (double)cllm__batch_tokens(&sb);
done:
    cllm__seq_batch_free(&sb);
    CLLM_FREE(seqs);
    CLLM_FREE(cut);
    CLLM_FREE(buf);
    return rc;
}

/* One AdamW update of the policy and the value head from the accumulated gradients (one optimizer over both, as TRL's
   PolicyAndValueWrapper), clipped together when max_grad_norm is set; the bias of the head gets no weight decay. */
static cllm_result cllm__ppo_update(cllm__ppo_ctx *c, cllm_trainer *tr, double loss, cllm_err *err) {
    cllm_adamw_config bias = tr->cfg.adam;
    cllm_value_head *vh = c->vh;
    cllm_float *g[2];
    size_t sz[2];
    double lr;
    int C = vh->C, n = 0, t;
    cllm_result rc;
    if (!isfinite(loss)) return cllm__numeric_fail(tr, "loss", loss, err);
    if (tr->lora) {
        g[n] = tr->lora->grads;
        sz[n++] = tr->lora->num_params;
    } else if (tr->model->grads_memory) {
        g[n] = tr->model->grads_memory;
        sz[n++] = tr->model->num_params;
    }
    g[n] = vh->grad;
    sz[n++] = (size_t)C + 1;
    tr->grad_norm = cllm_clip_grad_norm_arrays(g, sz, n, tr->cfg.max_grad_norm > 0 ? tr->cfg.max_grad_norm : 0);
    if (!isfinite(tr->grad_norm)) return cllm__numeric_fail(tr, "gradient norm", tr->grad_norm, err);
    if ((rc = cllm_trainer_update(tr, &lr, err)) != CLLM_OK) return rc;
    t = tr->lora ? tr->lora->adam_t : tr->model->adam_t;     /* one optimizer over both: the same step count */
    bias.weight_decay = 0;
    cllm_adamw_step(vh->w, vh->grad, vh->m, vh->v, (size_t)C, t, lr, &tr->cfg.adam);
    cllm_adamw_step(vh->w + C, vh->grad + C, vh->m + C, vh->v + C, 1, t, lr, &bias);
    return CLLM_OK;
}

/* perm = a permutation of 0..n-1: Fisher-Yates driven by cllm_rng_seed(seed) (also the trainer's
   order of the examples, section II.10). */
static void cllm__permutation(int *perm, int n, uint64_t seed) {
    cllm_rng rng;
    int i;
    cllm_rng_seed(&rng, seed);
    for (i = 0; i < n; i++) perm[i] = i;
    for (i = n - 1; i > 0; i--) {
        int j = (int)(cllm_rng_uniform(&rng) * (i + 1)), swap = perm[i];
        perm[i] = perm[j];
        perm[j] = swap;
    }
}

/* A step: the rollout, then ppo_epochs passes over it in mini_batches AdamW updates, each over
   grad_accum micro-batches of batch_size rows; the order of each pass is a permutation drawn
   from (seed, step, pass) (TRL: np.random.permutation per epoch). */
static cllm_result cllm__ppo_step(void *ctx, cllm_trainer *tr, const int *idx, int n, cllm_train_stats *st,
                                  cllm_err *err) {
    cllm__ppo_ctx *c = (cllm__ppo_ctx *)ctx;
    cllm_local_output *out = (cllm_local_output *)cllm__calloc((size_t)n, sizeof *out);
    int *perm = NULL, e, mb, i;
    double *mr = NULL;
    cllm__rows rows = CLLM__ZERO;
    cllm_ppo_rollout r = CLLM__ZERO;
    cllm_result rc;
    if (!out) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm__ppo_rollout(c, tr, idx, n, out, &rows, &r, &mr, st, err)) != CLLM_OK) goto done;
    if (!(perm = (int *)cllm__calloc((size_t)r.B, sizeof(int)))) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (e = 0; e < c->cfg.ppo_epochs && rc == CLLM_OK; e++) {
        cllm__permutation(perm, r.B, cllm__online_call(tr->step, 0, 3 + e) ^ tr->cfg.seed);
        for (mb = 0; mb < c->cfg.mini_batches && rc == CLLM_OK; mb++) {
            /* mini-batch mb: rows [b0, b1) of the permutation (near-equal parts when B is short) */
            int b0 = (int)((long)r.B * mb / c->cfg.mini_batches);
            int b1 = (int)((long)r.B * (mb + 1) / c->cfg.mini_batches);
            int n_micro = (b1 - b0 + c->batch_size - 1) / c->batch_size, m0;
            cllm_train_stats mst = CLLM__ZERO;
            if (b1 <= b0) continue;
            if ((rc = cllm_trainer_zero_grad(tr, err)) != CLLM_OK) break;
            memset(c->vh->grad, 0, ((size_t)c->vh->C + 1) * sizeof(cllm_float));
            for (m0 = b0; m0 < b1 && rc == CLLM_OK; m0 += c->batch_size) {
                int size = b1 - m0 < c->batch_size ? b1 - m0 : c->batch_size;
                rc = cllm__ppo_micro(c, tr, &rows, &r, perm + m0, size, n_micro, &mst, err);
            }
            if (rc == CLLM_OK) rc = cllm__ppo_update(c, tr, cllm_train_stats_mean(&mst, "loss"), err);
            for (i = 0; rc == CLLM_OK && i < mst.n; i++)
                cllm_train_stats_add(st, mst.name[i], mst.sum[i], mst.count[i]);
            st->tokens += mst.tokens;
        }
    }
done:
    cllm__rows_free(&rows);
    cllm_ppo_rollout_free(&r);
    cllm_local_outputs_free(out, n);
    CLLM_FREE(out);
    CLLM_FREE(perm);
    CLLM_FREE(mr);
    return rc;
}

/* PPO (TRL v0.19 PPOTrainer with MR as the reward model; legacy TRL's score scaling and adaptive KL, which
   CollabLLM's PPO script uses, as options). A step is one rollout of batch_size x grad_accum x mini_batches prompts,
   then ppo_epochs x mini_batches AdamW updates of the policy and the value head, all at the step's learning rate (the
   paper's 2e-6 by default). The value head is saved in every checkpoint and in final/ (value_head.safetensors) and
   restored on resume. Gradient clipping is off unless train->max_grad_norm is set (TRL's PPO loop does not clip).
   Statistics: TRL's, listed in data_fmt/train_online.md. */
CLLMDEF cllm_result cllm_train_ppo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref, cllm_value_head *vh,
                                   const cllm_online_prompts *prompts, const cllm_ppo_config *cfg,
                                   const cllm_train_config *train, cllm_err *err) {
    cllm__ppo_ctx ctx = CLLM__ZERO;
    cllm_train_task task = CLLM__ZERO;
    cllm_train_config tc;
    cllm_value_head own = CLLM__ZERO;
    cllm_result rc;
    if (!cfg || !train) return cllm__fail(err, CLLM_ERR_ARG, "PPO: needs a config and a training config");
    ctx.lm = policy;
    ctx.ref = ref;
    ctx.p = prompts;
    ctx.cfg = cllm__ppo_def(cfg);
    ctx.cfg.rollout = cllm__rollout_def(&cfg->rollout, 0.7f, 0, 53, cllm__def(train->seed, 42));
    if ((rc = cllm__rollout_check_config(&ctx.cfg.rollout, policy, prompts, err)) != CLLM_OK) return rc;
    if (ctx.cfg.ppo_epochs < 1 || ctx.cfg.mini_batches < 1)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO: ppo_epochs and mini_batches must be positive");
    if (ctx.cfg.kl_estimator != CLLM_KL_K1 && ctx.cfg.kl_estimator != CLLM_KL_K3)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO: kl_estimator must be k1 or k3 (TRL's choices)");
    if (ctx.cfg.score_scaling < CLLM_SCORE_RAW || ctx.cfg.score_scaling > CLLM_SCORE_NORM)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO: score_scaling must be CLLM_SCORE_RAW, _SCALE or _NORM");
    if (ctx.cfg.kl_target < 0 || ctx.cfg.kl_horizon <= 0)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO: kl_target must be >= 0 and kl_horizon > 0");
    if (!ref && !lora)
        return cllm__fail(err, CLLM_ERR_ARG, "PPO needs a reference for its KL penalty: a frozen copy of the initial "
                                             "policy, or LoRA adapters (the base model)");
    if (!vh) {
        rc = cllm_value_head_init(&own, policy->model.config.hidden_size, cllm__def(train->seed, 42), err);
        if (rc != CLLM_OK) return rc;
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
    task.name = "ppo";
    task.n_examples = prompts->n;
    task.default_lr = 2e-6;                  /* paper Table 6 */
    task.step = cllm__ppo_step;
    task.save_extra = cllm__ppo_state_save;
    task.load_extra = cllm__ppo_state_load;
    task.ctx = &ctx;
    rc = cllm__train_run(&policy->model, lora, &task, &tc, err);
    cllm_value_head_free(&own);
    return rc;
}

/* ---- GRPO (TRL v0.19 GRPOTrainer, MR as the reward) ------------------------------------------ */

typedef struct cllm__grpo_ctx {
    cllm_local_lm             *lm;
    cllm_model                *ref;
    const cllm_online_prompts *p;
    cllm_grpo_config           cfg;         /* defaults applied */
} cllm__grpo_ctx;

/* The group advantages of a micro-batch: for each prompt i whose G responses all have an MR,
   cllm_grpo_advantages (TRL: scaled by the unbiased std + 1e-4 unless scale_rewards says no) into
   adv[B..], their indices into keep[B..]; *B and *L (the longest kept response) grow. A group
   with a failed score is left out. Adds TRL v0.19.1 GRPOTrainer's completion statistics: a response is terminated
   when it holds the tokenizer's eos id, and its length counts the tokens up to that eos (TRL's completion_mask);
   spread[] receives the sum of the kept groups' reward stds, the number of those that are 0 (torch.isclose: at most
   1e-8), and the number of kept groups. */
static cllm_result cllm__grpo_groups(const cllm__grpo_ctx *c, const cllm_local_output *out, const double *mr, int n,
                                     double *adv, int *keep, int *B, int *L, double spread[3], cllm_train_stats *st,
                                     cllm_err *err) {
    int G = c->cfg.num_generations, eos_id = c->lm->tok.eos_id;
    double len_sum = 0, clipped = 0;
    int i, s, t;
    spread[0] = spread[1] = spread[2] = 0;
    for (i = 0; i < n; i++) {
        double mean = 0, var = 0;
        int ok = 1;
        cllm_result rc;
        for (s = 0; s < G; s++) {
            const cllm_local_output *o = &out[i * G + s];
            for (t = 0; t < o->n && o->ids[t] != eos_id; t++) continue;
            len_sum += t < o->n ? t + 1 : o->n;
            clipped += t == o->n;
            ok &= !isnan(mr[i * G + s]);
        }
        if (!ok) continue;
        rc = cllm_grpo_advantages(G, mr + i * G, G, CLLM_GROUP_GRPO, c->cfg.scale_rewards > 0, 1e-4, adv + *B, err);
        if (rc != CLLM_OK) return rc;
        for (s = 0; s < G; s++) mean += mr[i * G + s] / G;
        for (s = 0; s < G; s++) var += (mr[i * G + s] - mean) * (mr[i * G + s] - mean) / (G > 1 ? G - 1 : 1);
        spread[0] += sqrt(var);
        spread[1] += sqrt(var) <= 1e-8;
        spread[2]++;
        for (s = 0; s < G; s++) {
            keep[(*B)++] = i * G + s;
            if (out[i * G + s].n > *L) *L = out[i * G + s].n;
        }
    }
    cllm_train_stats_add(st, "completions/mean_length", len_sum, n * G);
    cllm_train_stats_add(st, "completions/clipped_ratio", clipped, n * G);
    return CLLM_OK;
}

/* One micro-batch of GRPO: G responses per prompt scored by MR, group advantages, the reference's
   log-probs (beta > 0), the policy's forward at the sampling temperature (the last one: it feeds
   backward), then cllm_grpo_loss with old = current log-probs (num_iterations 1, TRL's default,
   so r = 1) and backward of the micro-batch's loss weighted by its prompts in the step. */
static cllm_result cllm__grpo_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm,
                                    cllm_train_stats *st, cllm_err *err) {
    cllm__grpo_ctx *c = (cllm__grpo_ctx *)ctx;
    const cllm_rollout_config *rcfg = &c->cfg.rollout;
    int G = c->cfg.num_generations, N = n * G, B = 0, L = 1, failed = 0, i, s;
    cllm_local_output *out = (cllm_local_output *)cllm__calloc((size_t)N, sizeof *out);
    double *mr = (double *)cllm__calloc((size_t)N, sizeof(double));
    double *adv = (double *)cllm__calloc((size_t)N, sizeof(double));
    int *keep = (int *)cllm__calloc((size_t)N, sizeof(int));
    double *buf = NULL, *ref = NULL;
    double diff = 0, spread[3];
    double *lp, *old, *mask, *dlp;
    float tau = rcfg->gen.sampler.temperature;
    cllm_grpo_loss_input in = CLLM__ZERO;
    cllm_grpo_loss_out lo = CLLM__ZERO;
    cllm__seq_batch sb = CLLM__ZERO;
    cllm__rows rows = CLLM__ZERO;
    cllm_result rc;
    if (!out || !mr || !adv || !keep) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else rc = cllm__rollout_sample(c->lm, rcfg, c->p, idx, n, G, tr->step, out, err);
    if (rc == CLLM_OK) rc = cllm__rollout_score(rcfg, c->lm, c->p, idx, n, G, tr->step, out, mr, &failed, err);
    if (rc != CLLM_OK) goto done;
    cllm_train_stats_add(st, "mr/failed", failed, 1);
    rc = cllm__grpo_groups(c, out, mr, n, adv, keep, &B, &L, spread, st, err);
    if (rc == CLLM_OK && B == 0)
        rc = cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: MR failed in every group of a micro-batch; nothing to train "
                                               "on", tr->step + 1);
    if (rc == CLLM_OK) rc = cllm__rows_make(&rows, out, keep, B, err);
    if (rc == CLLM_OK && !(buf = (double *)cllm__calloc((size_t)B * L * 5 + 1, sizeof(double))))
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (rc != CLLM_OK) goto done;
    lp = buf;
    old = lp + (size_t)B * L;
    mask = old + (size_t)B * L;
    dlp = mask + (size_t)B * L;
    if (c->cfg.beta != 0) {
        ref = dlp + (size_t)B * L;
        if ((rc = cllm__rollout_ref(tr->model, c->ref, rows.ptr, B, tau, L, ref, err)) != CLLM_OK) goto done;
    }
    if ((rc = cllm__rollout_forward(tr->model, rows.ptr, B, tau, 0, &sb, err)) != CLLM_OK) goto done;
    if ((rc = cllm__rollout_check(rcfg, tr->model, rows.out, rows.ptr, B, &diff, err)) != CLLM_OK) goto done;
    cllm__gather_logps(tr->model, rows.ptr, B, L, 0.0, lp);
    for (i = 0; i < B; i++) for (s = 0; s < L; s++) {
        size_t k = (size_t)i * L + s;
        mask[k] = s < rows.out[i]->n;
        old[k] = lp[k];                       /* num_iterations = 1: old = current, detached */
    }
    in.B = B;
    in.T = L;
    in.logprobs = lp;
    in.old_logprobs = old;
    in.ref_logprobs = ref;
    in.advantages = adv;
    in.mask = mask;
    in.beta = c->cfg.beta;
    in.eps_low = c->cfg.epsilon;
    in.eps_high = c->cfg.epsilon_high;
    in.loss_type = c->cfg.loss_type;
    in.max_completion_length = rcfg->gen.max_new_tokens;
    lo.d_logprobs = dlp;
    if ((rc = cllm_grpo_loss(&in, &lo, err)) != CLLM_OK) goto done;
    rc = cllm__rollout_backward(tr->model, NULL, rows.ptr, B, L, dlp, NULL, (double)n / norm, err);
    if (rc != CLLM_OK) goto done;
    cllm_train_stats_add(st, "loss", lo.loss * n, n);
    for (i = 0; i < B; i++) cllm_train_stats_add(st, "reward", mr[keep[i]], 1);
    cllm_train_stats_add(st, "reward_std", spread[0], spread[2]);
    cllm_train_stats_add(st, "frac_reward_zero_std", spread[1], spread[2]);
    if (c->cfg.beta != 0) cllm_train_stats_add(st, "kl", lo.kl, 1);
    cllm_train_stats_add(st, "clip_ratio/region_mean", lo.clip_ratio, 1);
    cllm_train_stats_add(st, "rollout/logprob_diff", diff, 1);
    st->tokens += (double)cllm__batch_tokens(&sb);
done:
    cllm__seq_batch_free(&sb);
    cllm__rows_free(&rows);
    if (out) cllm_local_outputs_free(out, N);
    CLLM_FREE(out);
    CLLM_FREE(mr);
    CLLM_FREE(adv);
    CLLM_FREE(keep);
    CLLM_FREE(buf);
    return rc;
}

/* GRPO (TRL v0.19 GRPOTrainer; verl's CollabLLM recipe also trains with GRPO): sampling as TRL (T 1, 256 new tokens),
   G = 8 responses per prompt, TRL's learning rate 1e-6. Units of the step's loss: prompts (each micro-batch's
   aggregated loss is weighted by its number of prompts). Statistics: TRL's, listed in data_fmt/train_online.md. */
CLLMDEF cllm_result cllm_train_grpo(cllm_local_lm *policy, cllm_lora *lora, cllm_model *ref,
                                    const cllm_online_prompts *prompts, const cllm_grpo_config *cfg,
                                    const cllm_train_config *train, cllm_err *err) {
    cllm__grpo_ctx ctx = CLLM__ZERO;
    cllm_result rc;
    if (!cfg || !train) return cllm__fail(err, CLLM_ERR_ARG, "GRPO: needs a config and a training config");
    ctx.lm = policy;
    ctx.ref = ref;
    ctx.p = prompts;
    ctx.cfg = *cfg;
    ctx.cfg.rollout = cllm__rollout_def(&cfg->rollout, 1.0f, 0, 256, cllm__def(train->seed, 42));
    ctx.cfg.num_generations = cllm__def(cfg->num_generations, 8);
    ctx.cfg.epsilon = cllm__def(cfg->epsilon, 0.2);
    ctx.cfg.epsilon_high = cllm__def(cfg->epsilon_high, ctx.cfg.epsilon);
    ctx.cfg.scale_rewards = cfg->scale_rewards < 0 ? 0 : 1;
    if ((rc = cllm__rollout_check_config(&ctx.cfg.rollout, policy, prompts, err)) != CLLM_OK) return rc;
    if (ctx.cfg.num_generations < 2 || ctx.cfg.num_generations > 65536)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "GRPO: num_generations must be in [2, 65536] (a group of one has no baseline)");
    if (ctx.cfg.loss_type < CLLM_GRPO_BNPO || ctx.cfg.loss_type > CLLM_GRPO_DR_GRPO)
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO: unknown loss_type %d", (int)ctx.cfg.loss_type);
    if (ctx.cfg.beta < 0) return cllm__fail(err, CLLM_ERR_ARG, "GRPO: beta must be >= 0");
    if (ctx.cfg.beta != 0 && !ref && !lora)
        return cllm__fail(err, CLLM_ERR_ARG, "GRPO with beta > 0 needs a reference: a frozen copy of the initial "
                                             "policy, or LoRA adapters (the base model)");
    return cllm__train_task(&policy->model, lora, "grpo", prompts->n, 1e-6, cllm__units_are_examples,
                            cllm__grpo_micro, &ctx, train, err);
}


/* ############################################################################################ */
/* PART II. INFRASTRUCTURE                                                                      */
/* ############################################################################################ */

/* -------------------------------------------------------------------------------------------- */
/* II.1 Basics: random numbers, files, UTF-8                                                    */
/* -------------------------------------------------------------------------------------------- */

/* ---- random numbers: xoshiro128** (Blackman and Vigna) seeded by splitmix64 ------------------ */

static uint64_t cllm__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

CLLMDEF void cllm_rng_seed(cllm_rng *r, uint64_t seed) {
    uint64_t a = cllm__splitmix64(&seed), b = cllm__splitmix64(&seed);
    r->s[0] = (uint32_t)a;
    r->s[1] = (uint32_t)(a >> 32);
    r->s[2] = (uint32_t)b;
    r->s[3] = (uint32_t)(b >> 32);
}

static uint32_t cllm__rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

CLLMDEF uint32_t cllm_rng_u32(cllm_rng *r) {
    uint32_t *s = r->s;
    uint32_t result = cllm__rotl(s[1] * 5, 7) * 9;
    uint32_t t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = cllm__rotl(s[3], 11);
    return result;
}

CLLMDEF double cllm_rng_uniform(cllm_rng *r) {
    uint64_t hi = cllm_rng_u32(r) >> 5, lo = cllm_rng_u32(r) >> 6;   /* 27 + 26 = 53 bits */
    return (double)(hi * 67108864.0 + lo) / 9007199254740992.0;
}

/* Box-Muller, one of the pair. */
CLLMDEF double cllm_rng_normal(cllm_rng *r) {
    double u1 = cllm_rng_uniform(r), u2 = cllm_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- files: read whole, write atomically ----------------------------------------------------- */

/* Opens a file for reading; NULL after a message naming it. A directory is refused by name (on POSIX fopen accepts
   one, and its "size" is nonsense). kind: what was expected, "a JSONL file". */
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
    FILE *f = cllm__open_read(path, "a file", err);
    long size = 0;
    char *buf = NULL;
    cllm_result rc = CLLM_OK;
    *out = NULL;
    if (len) *len = 0;
    if (!f) return CLLM_ERR_IO;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        rc = cllm__fail(err, CLLM_ERR_IO, "%s: cannot determine the file size", path);
    else if (!(buf = (char *)CLLM_MALLOC((size_t)size + 1)))
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory reading %ld bytes", path, size);
    else if (size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size)
        rc = cllm__fail(err, CLLM_ERR_IO, "%s: short read", path);
    fclose(f);
    if (rc != CLLM_OK) {
        CLLM_FREE(buf);
        return rc;
    }
    buf[size] = 0;
    *out = buf;
    if (len) *len = (size_t)size;
    return cllm__succeed(err);
}

/* The temporary file is path.tmp.<pid> in the same directory, so rename() stays on one file system and is atomic on
   POSIX. fsync makes the data durable before the name moves. */
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
        return cllm__fail(err, CLLM_ERR_IO, "%s: write failed (%s); the previous file is untouched", path,
                          strerror(errno));
    }
#if defined(_WIN32)
    remove(path);
#endif
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return cllm__fail(err, CLLM_ERR_IO, "%s: cannot rename the temporary file into place (%s)", path,
                          strerror(errno));
    }
    return cllm__succeed(err);
}

CLLMDEF cllm_result cllm_write_file_atomic(const char *path, const void *data, size_t len, cllm_err *err) {
    char tmp[4096];
    FILE *f = cllm__open_temp(path, tmp, sizeof tmp, err);
    if (!f) return CLLM_ERR_IO;
    if (len && fwrite(data, 1, len, f) != len) {
        fclose(f);
        remove(tmp);
        return cllm__fail(err, CLLM_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
    }
    return cllm__commit_temp(f, tmp, path, err);
}

static int cllm__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
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

static cllm_result cllm__mkdir(const char *dir, cllm_err *err) {
#if defined(_WIN32)
    (void)dir;
    (void)err;
#else
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return cllm__fail(err, CLLM_ERR_IO, "%s: cannot create directory (%s)", dir, strerror(errno));
#endif
    return CLLM_OK;
}

/* ---- lines of text files (JSONL) ------------------------------------------------------------- */

/* *line is NUL-terminated and freed with cllm_free_buffer; it never grows past CLLM_MAX_LINE_BYTES, whatever the file
   holds. A reader that gets a length below CLLM_LINE_EOF reports it with cllm__line_fail. */
CLLMDEF long cllm_read_line(FILE *f, char **line, size_t *cap) {
    size_t n = 0;
    int ch;
    if (!*line) {
        *cap = 256;
        *line = (char *)CLLM_MALLOC(*cap);
    }
    if (!*line) return CLLM_LINE_NOMEM;
    while ((ch = fgetc(f)) != EOF && ch != '\n') {
        if (n + 1 >= *cap) {
            char *grown;
            if (*cap >= (size_t)CLLM_MAX_LINE_BYTES) return CLLM_LINE_TOO_LONG;
            grown = (char *)CLLM_REALLOC(*line, *cap * 2);
            if (!grown) return CLLM_LINE_NOMEM;
            *line = grown;
            *cap *= 2;
        }
        (*line)[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) return CLLM_LINE_EOF;
    if (n && (*line)[n - 1] == '\r') n--;
    (*line)[n] = 0;
    return (long)n;
}

/* The error for a cllm_read_line result below CLLM_LINE_EOF at path:lineno (lineno 0: no line number). */
static cllm_result cllm__line_fail(cllm_err *err, const char *path, int lineno, long len) {
    char at[32] = "";
    if (lineno > 0) snprintf(at, sizeof at, ":%d", lineno);
    if (len == CLLM_LINE_NOMEM) return cllm__fail(err, CLLM_ERR_NOMEM, "%s%s: out of memory reading a line", path, at);
    return cllm__fail(err, CLLM_ERR_LIMIT, "%s%s: a line longer than %ld MB (corrupt file? the limit is "
                      "CLLM_MAX_LINE_BYTES)", path, at, (long)(CLLM_MAX_LINE_BYTES >> 20));
}

/* One line of a JSONL file parsed; NULL after a message at path:lineno: text that is not UTF-8 (with the byte of the
   line where it stops being UTF-8), or not JSON. */
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

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* Decodes the character at s[0..n), n >= 1, as Unicode's Table 3-7 (well-formed UTF-8 byte
   sequences) defines it: returns its length (1-4) and sets *cp. Ill-formed bytes (overlong forms,
   surrogates, values above U+10FFFF, as in Rust's str) return 0 and set *part, when not NULL, to
   the length of the maximal subpart: the longest prefix that could still start a character. */
static int cllm__utf8_next(const unsigned char *s, size_t n, uint32_t *cp, size_t *part) {
    unsigned char c = s[0];
    unsigned char lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;   /* the second byte's range */
    unsigned char hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    size_t len = c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0, k;
    uint32_t v = len == 1 ? c : c & (0x7Fu >> len);
    for (k = 1; k < len && k < n; k++) {
        if (s[k] < (k == 1 ? lo : 0x80) || s[k] > (k == 1 ? hi : 0xBF)) break;
        v = v << 6 | (s[k] & 0x3Fu);
    }
    if (len == 0 || k < len) {
        if (part) *part = len ? k : 1;
        return 0;
    }
    *cp = v;
    return (int)len;
}

/* Encodes cp (at most U+10FFFF) into o[0..4); returns its length. */
static int cllm__utf8_put(uint32_t cp, unsigned char *o) {
    static const unsigned char lead[5] = { 0, 0, 0xC0, 0xE0, 0xF0 };
    int len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4, k;
    for (k = len - 1; k > 0; k--, cp >>= 6) o[k] = (unsigned char)(0x80 | (cp & 0x3F));
    o[0] = (unsigned char)(lead[len] | cp);
    return len;
}

/* Offset of the first invalid UTF-8 byte in s[0..n), or n if it is all valid. */
static size_t cllm__utf8_check(const char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        int len = cllm__utf8_next((const unsigned char *)s + i, n - i, &cp, NULL);
        if (!len) return i;
        i += (size_t)len;
    }
    return n;
}

/* Appends b[0..n) to out with each maximal subpart of ill-formed bytes replaced by one U+FFFD:
   Unicode's "substitution of maximal subparts", as Rust's String::from_utf8_lossy and Python's
   bytes.decode("utf-8", "replace") do. With final = 0 a character that is valid so far but cut
   by the end is left unconsumed. Returns the bytes consumed; adds the U+FFFD written to
   *replaced (when not NULL). */
static size_t cllm__utf8_lossy(const unsigned char *b, size_t n, int final, cllm__sb *out, size_t *replaced) {
    size_t i = 0, part;
    uint32_t cp;
    while (i < n) {
        int len = cllm__utf8_next(b + i, n - i, &cp, &part);
        if (len) {
            cllm__sb_putn(out, (const char *)b + i, (size_t)len);
            i += (size_t)len;
            continue;
        }
        if (!final && i + part == n && b[i] >= 0xC2 && b[i] <= 0xF4) return i;   /* the rest may follow */
        cllm__sb_puts(out, "\xEF\xBF\xBD");
        if (replaced) (*replaced)++;
        i += part;
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

/* -------------------------------------------------------------------------------------------- */
/* II.2 Checkpoints: safetensors, config.json, Hugging Face directories, token batches          */
/* -------------------------------------------------------------------------------------------- */

/* ---- safetensors: strict reader and atomic writer -------------------------------------------- */

/* Layout: u64 LE header length N | N bytes JSON | byte buffer. Each tensor entry gives dtype, shape and [begin, end)
   offsets into the buffer. We reject anything the reference Rust reader rejects (header bound, gaps, overlaps,
   trailing bytes, size mismatch, duplicates), because a file that only we accept would not be loadable by
   transformers or vLLM. */

#define CLLM_ST_MAX_HEADER   100000000ull          /* the Rust reader's MAX_HEADER_SIZE */
#define CLLM_ST_MAX_NUMEL    (1ll << 40)

static const char *cllm__dtype_names[CLLM_DT_COUNT] = {
    "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL" };
static const int cllm__dtype_sizes[CLLM_DT_COUNT] = { 4, 2, 2, 8, 8, 4, 2, 1, 1, 1 };

/* The dtype called s, or CLLM_DT_COUNT. */
static cllm_dtype cllm__dtype_from_name(const char *s) {
    int i;
    for (i = 0; i < CLLM_DT_COUNT; i++) if (strcmp(s, cllm__dtype_names[i]) == 0) break;
    return (cllm_dtype)i;
}

/* IEEE half -> float, including subnormals, infinities and NaN. */
static float cllm__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    float f;
    if (exp == 0 && mant == 0) bits = sign;
    else if (exp == 0) {                         /* subnormal: renormalise */
        exp = 127 - 15 + 1;
        while (!(mant & 0x400)) {
            mant <<= 1;
            exp--;
        }
        mant &= 0x3FF;
        bits = sign | (exp << 23) | (mant << 13);
    } else if (exp == 31) bits = sign | 0x7F800000u | (mant << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> half, round to nearest even, overflow to infinity, NaN kept quiet. */
static uint16_t cllm__f32_to_f16(float f) {
    uint32_t x, sign, mant, r, rem, half;
    int exp, shift;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000;
    exp = (int)((x >> 23) & 0xFF) - 127 + 15;
    mant = x & 0x7FFFFF;
    if (((x >> 23) & 0xFF) == 0xFF) return (uint16_t)(sign | 0x7C00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7C00);
    if (exp < -10) return (uint16_t)sign;
    if (exp <= 0) {                              /* subnormal: the implicit 1 joins the mantissa */
        mant |= 0x800000;
        shift = 14 - exp;
    } else shift = 13;
    half = 1u << (shift - 1);
    rem = mant & ((1u << shift) - 1);
    r = (exp <= 0 ? 0 : (uint32_t)exp << 10) | (mant >> shift);
    if (rem > half || (rem == half && (r & 1))) r++;   /* may carry into the exponent: correct */
    return (uint16_t)(sign | r);
}

static float cllm__bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
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

/* One little-endian F32, F16, BF16 or F64 value. */
static cllm_float cllm__st_value(const unsigned char *b, cllm_dtype dtype) {
    uint64_t bits = 0;
    uint32_t bits32;
    float f;
    double d;
    int k;
    for (k = cllm__dtype_sizes[dtype] - 1; k >= 0; k--) bits = (bits << 8) | b[k];
    bits32 = (uint32_t)bits;
    memcpy(&f, &bits32, 4);
    memcpy(&d, &bits, 8);
    if (dtype == CLLM_DT_F16) return (cllm_float)cllm__f16_to_f32((uint16_t)bits);
    if (dtype == CLLM_DT_BF16) return (cllm_float)cllm__bf16_to_f32((uint16_t)bits);
    return dtype == CLLM_DT_F32 ? (cllm_float)f : (cllm_float)d;
}

/* x as F32, or rounded to BF16 or F16 (nearest even), little-endian into out; returns the bytes written. */
static int cllm__st_encode(unsigned char *out, float x, cllm_dtype dtype) {
    uint32_t bits;
    int size = dtype == CLLM_DT_F32 ? 4 : 2, k;
    if (dtype == CLLM_DT_F32) memcpy(&bits, &x, 4);
    else bits = dtype == CLLM_DT_BF16 ? cllm__f32_to_bf16(x) : cllm__f32_to_f16(x);
    for (k = 0; k < size; k++) out[k] = (unsigned char)(bits >> (8 * k));
    return size;
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
    uint64_t begin, end, dim, bytes;
    int64_t numel = 1;
    if (!cJSON_IsObject(item))
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", path, name);
    if (!cJSON_IsString(dt)) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': missing \"dtype\"", path, name);
    t->dtype = cllm__dtype_from_name(dt->valuestring);
    if (t->dtype == CLLM_DT_COUNT)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: tensor '%s': unknown or unsupported dtype '%s' (supported: "
                          "F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)", path, name, dt->valuestring);
    if (!cJSON_IsArray(shape))
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': missing \"shape\" array", path, name);
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > CLLM_ST_MAX_DIMS)
        return cllm__fail(err, CLLM_ERR_LIMIT, "%s: tensor '%s': %d dimensions (at most %d)", path, name, t->ndim,
                          CLLM_ST_MAX_DIMS);
    t->ndim = 0;
    cJSON_ArrayForEach(d, shape) {
        if (!cllm__json_u53(d, &dim) || dim > (uint64_t)CLLM_ST_MAX_NUMEL)
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': shape entries must be integers in [0, 2^40]",
                              path, name);
        t->shape[t->ndim++] = (int64_t)dim;
        if (dim && numel > CLLM_ST_MAX_NUMEL / (int64_t)dim)
            return cllm__fail(err, CLLM_ERR_LIMIT, "%s: tensor '%s': more than 2^40 elements", path, name);
        numel *= (int64_t)dim;
    }
    t->numel = numel;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !cllm__json_u53(cJSON_GetArrayItem(offs, 0), &begin) ||
        !cllm__json_u53(cJSON_GetArrayItem(offs, 1), &end))
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be two non-negative integers",
                          path, name);
    if (end < begin)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': data_offsets end %llu is before begin %llu", path,
                          name, (unsigned long long)end, (unsigned long long)begin);
    bytes = (uint64_t)numel * (uint64_t)cllm__dtype_sizes[t->dtype];
    if (end - begin != bytes)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': %llu bytes in data_offsets but shape x %s needs %llu",
                          path, name, (unsigned long long)(end - begin), dt->valuestring, (unsigned long long)bytes);
    t->begin = begin;
    t->end = end;
    t->name = cllm__strdup(name);
    return t->name ? CLLM_OK : cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path);
}

/* The entries of the header object root into st->tensors (__metadata__ must map strings to strings). */
static cllm_result cllm__st_parse_entries(cllm_safetensors *st, const char *path, const cJSON *root, cllm_err *err) {
    const cJSON *item, *kv;
    cllm_result rc;
    st->tensors = (cllm_st_tensor *)cllm__calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof(cllm_st_tensor));
    if (!st->tensors) return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path);
    cJSON_ArrayForEach(item, root) {
        if (item->string && strcmp(item->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(item))
                return cllm__fail(err, CLLM_ERR_FORMAT, "%s: __metadata__ must be an object of strings", path);
            cJSON_ArrayForEach(kv, item) if (!cJSON_IsString(kv))
                return cllm__fail(err, CLLM_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string", path,
                                  kv->string);
            continue;
        }
        if ((rc = cllm__st_parse_entry(path, item, &st->tensors[st->n], err)) != CLLM_OK) return rc;
        st->n++;
    }
    return CLLM_OK;
}

/* Names unique; the tensors, sorted by offset, tile the data buffer [0, bufsize) exactly. Sorts st->tensors by name
   (for cllm_st_find's binary search). */
static cllm_result cllm__st_check_layout(cllm_safetensors *st, const char *path, uint64_t bufsize, cllm_err *err) {
    cllm_st_tensor **order;
    uint64_t expect = 0;
    cllm_result rc = CLLM_OK;
    int i;
    qsort(st->tensors, (size_t)st->n, sizeof(cllm_st_tensor), cllm__st_cmp_name);
    for (i = 1; i < st->n; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0)
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", path,
                              st->tensors[i].name);
    order = (cllm_st_tensor **)cllm__calloc((size_t)st->n + 1, sizeof(*order));
    if (!order) return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path);
    for (i = 0; i < st->n; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n, sizeof(*order), cllm__st_cmp_offset);
    for (i = 0; i < st->n && rc == CLLM_OK; i++) {
        const cllm_st_tensor *t = order[i];
        unsigned long long begin = t->begin, end = t->end, previous_end = expect, data_bytes = bufsize;
        if (begin > bufsize || end > bufsize)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu) run past the end of the "
                            "file's %llu data bytes (truncated?)", path, t->name, begin, end, data_bytes);
        else if (begin < expect)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': data_offsets overlap the previous tensor (begin "
                            "%llu < %llu)", path, t->name, begin, previous_end);
        else if (begin > expect)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s': gap before its data (begin %llu, previous end "
                            "%llu); tensors must be contiguous", path, t->name, begin, previous_end);
        expect = t->end;
    }
    if (rc == CLLM_OK && expect != bufsize)
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor", path,
                        (unsigned long long)(bufsize - expect));
    CLLM_FREE(order);
    return rc;
}

/* Validates the header JSON (hlen bytes, not NUL-terminated) of a file of fsize bytes and fills st->tensors.
   Separate from the file reading so that the fuzzer can drive it from memory. */
static cllm_result cllm__st_parse_header(cllm_safetensors *st, const char *path, const char *header, uint64_t hlen,
                                         uint64_t fsize, cllm_err *err) {
    const char *parse_end = NULL;
    cJSON *root;
    cllm_result rc;
    if (hlen < 2) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: header too short to hold a JSON object", path);
    if (header[0] != '{') return cllm__fail(err, CLLM_ERR_FORMAT, "%s: header does not start with '{'", path);
    root = cJSON_ParseWithLengthOpts(header, (size_t)hlen, &parse_end, 0);
    while (cJSON_IsObject(root) && parse_end && parse_end < header + hlen && *parse_end == ' ') parse_end++;
    if (!root || !cJSON_IsObject(root))
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: header is not valid JSON (near byte %ld)", path,
                        parse_end ? (long)(parse_end - header) : 0L);
    else if (parse_end && parse_end < header + hlen)
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: unexpected bytes after the header JSON (only space padding is "
                        "allowed)", path);
    else rc = cllm__st_parse_entries(st, path, root, err);
    cJSON_Delete(root);
    st->data_start = 8 + hlen;
    return rc == CLLM_OK ? cllm__st_check_layout(st, path, fsize - st->data_start, err) : rc;
}

CLLMDEF cllm_result cllm_st_open(cllm_safetensors *st, const char *path, cllm_err *err) {
    unsigned char lenbuf[8];
    unsigned long long hlen = 0, fsize = 0;
    long sz;
    char *header = NULL;
    cllm_result rc = CLLM_OK;
    int i;

    memset(st, 0, sizeof *st);
    st->path = cllm__strdup(path);
    st->file = cllm__open_read(path, "a .safetensors file", err);
    if (!st->file) rc = CLLM_ERR_IO;
    else if (!st->path) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else if (fseek(st->file, 0, SEEK_END) != 0 || (sz = ftell(st->file)) < 0)
        rc = cllm__fail(err, CLLM_ERR_IO, "%s: cannot size the file", path);
    else {
        fsize = (unsigned long long)sz;
        rewind(st->file);
        if (fsize < 8 || fread(lenbuf, 1, 8, st->file) != 8)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: truncated: shorter than the 8-byte header length", path);
    }
    if (rc != CLLM_OK) goto done;
    for (i = 7; i >= 0; i--) hlen = (hlen << 8) | lenbuf[i];
    if (hlen > CLLM_ST_MAX_HEADER)
        rc = cllm__fail(err, CLLM_ERR_LIMIT, "%s: header length %llu exceeds the 100 MB limit (corrupt or not a "
                        "safetensors file?)", path, hlen);
    else if (hlen > fsize - 8)
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: header length %llu is larger than the file (%llu bytes): truncated "
                        "or corrupt", path, hlen, fsize);
    else if (!(header = (char *)CLLM_MALLOC((size_t)hlen + 1)))
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory for the header", path);
    else if (fread(header, 1, (size_t)hlen, st->file) != hlen)
        rc = cllm__fail(err, CLLM_ERR_IO, "%s: short read in the header", path);
    else rc = cllm__st_parse_header(st, path, header, hlen, fsize, err);
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
    return (const cllm_st_tensor *)bsearch(&key, st->tensors, (size_t)st->n, sizeof(cllm_st_tensor),
                                           cllm__st_cmp_name);
}

CLLMDEF cllm_result cllm_st_read(const cllm_safetensors *st, const cllm_st_tensor *t, cllm_float *out, cllm_err *err) {
    const int64_t chunk = 8192;
    unsigned char buf[8192 * 8];                  /* a chunk of values of up to 8 bytes */
    int esize;
    int64_t done = 0, i, n;
    if (t->dtype != CLLM_DT_F32 && t->dtype != CLLM_DT_F16 && t->dtype != CLLM_DT_BF16 && t->dtype != CLLM_DT_F64)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s cannot be read as floating point",
                          st->path, t->name, cllm__dtype_names[t->dtype]);
    esize = cllm__dtype_sizes[t->dtype];
    if (fseek(st->file, (long)(st->data_start + t->begin), SEEK_SET) != 0)
        return cllm__fail(err, CLLM_ERR_IO, "%s: tensor '%s': seek failed", st->path, t->name);
    for (; done < t->numel; done += n) {
        n = t->numel - done < chunk ? t->numel - done : chunk;
        if (fread(buf, (size_t)esize, (size_t)n, st->file) != (size_t)n)
            return cllm__fail(err, CLLM_ERR_IO, "%s: tensor '%s': short read (file changed or truncated?)", st->path,
                              t->name);
        for (i = 0; i < n; i++) out[done + i] = cllm__st_value(buf + i * esize, t->dtype);
    }
    return cllm__succeed(err);
}

/* The header object of cllm_st_save: the tensors' dtypes, shapes and offsets in order, {"format":"pt"} metadata. */
static cllm_result cllm__st_header(const char *path, const cllm_st_entry *entries, int n, char **json, cllm_err *err) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    uint64_t offset = 0;
    int i, k;
    cllm_result rc = CLLM_OK;
    if (meta) cJSON_AddStringToObject(meta, "format", "pt");
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        const cllm_st_entry *e = &entries[i];
        cJSON *t = NULL, *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
        int64_t numel = 1;
        if (e->dtype != CLLM_DT_F32 && e->dtype != CLLM_DT_BF16 && e->dtype != CLLM_DT_F16)
            rc = cllm__fail(err, CLLM_ERR_ARG, "%s: tensor '%s': can only write F32, BF16 or F16", path, e->name);
        else if (e->ndim < 0 || e->ndim > CLLM_ST_MAX_DIMS)
            rc = cllm__fail(err, CLLM_ERR_ARG, "%s: tensor '%s': bad ndim %d", path, e->name, e->ndim);
        else if (!(t = cJSON_AddObjectToObject(root, e->name)) || !shape || !offs)
            rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path);
        if (rc != CLLM_OK) {
            cJSON_Delete(shape);
            cJSON_Delete(offs);
            break;
        }
        cJSON_AddStringToObject(t, "dtype", cllm__dtype_names[e->dtype]);
        for (k = 0; k < e->ndim; k++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[k]));
        for (k = 0; k < e->ndim; k++) numel *= e->shape[k];
        cJSON_AddItemToObject(t, "shape", shape);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        offset += (uint64_t)numel * (uint64_t)cllm__dtype_sizes[e->dtype];
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToObject(t, "data_offsets", offs);
    }
    *json = rc == CLLM_OK && root ? cJSON_PrintUnformatted(root) : NULL;
    if (rc == CLLM_OK && !*json) rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path);
    cJSON_Delete(root);
    return rc;
}

CLLMDEF cllm_result cllm_st_save(const char *path, const cllm_st_entry *entries, int n, cllm_err *err) {
    char *json = NULL, tmp[4096];
    unsigned char bytes[8];
    FILE *f;
    uint64_t hlen;
    size_t jlen;
    int64_t j, numel;
    int i, k;
    cllm_result rc = cllm__st_header(path, entries, n, &json, err);
    if (rc != CLLM_OK) return rc;
    jlen = strlen(json);
    hlen = (uint64_t)jlen;
    while ((8 + hlen) % 8) hlen++;                     /* pad with spaces so the data is aligned */
    f = cllm__open_temp(path, tmp, sizeof tmp, err);
    if (f) {
        for (k = 0; k < 8; k++) bytes[k] = (unsigned char)(hlen >> (8 * k));
        fwrite(bytes, 1, 8, f);
        fwrite(json, 1, jlen, f);
        for (k = 0; k < (int)(hlen - jlen); k++) fputc(' ', f);
    }
    cJSON_free(json);
    if (!f) return CLLM_ERR_IO;
    for (i = 0; i < n; i++) {
        const cllm_st_entry *e = &entries[i];
        for (numel = 1, k = 0; k < e->ndim; k++) numel *= e->shape[k];
        for (j = 0; j < numel; j++) fwrite(bytes, 1, (size_t)cllm__st_encode(bytes, (float)e->data[j], e->dtype), f);
    }
    return cllm__commit_temp(f, tmp, path, err);
}

/* ---- config.json (transformers LlamaConfig, Qwen2Config, Qwen3Config) ------------------------ */

/* An integer field into *out (def when missing or null); returns 0, leaving def, if it is not an int. */
static int cllm__json_int(const cJSON *o, const char *key, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def;
    if (!j || cJSON_IsNull(j)) return 1;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || fabs(j->valuedouble) > 2147483647.0) return 0;
    *out = (int)j->valuedouble;
    return 1;
}

static int cllm__json_float(const cJSON *o, const char *key, float def, float *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def;
    if (!j || cJSON_IsNull(j)) return 1;
    if (!cJSON_IsNumber(j)) return 0;
    *out = (float)j->valuedouble;
    return 1;
}

static int cllm__json_bool(const cJSON *o, const char *key, int def) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(j) ? cJSON_IsTrue(j) : def;
}

static const char *cllm__json_str(const cJSON *o, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* rope_scaling: null, {"rope_type" (or the older "type"): "default" | "llama3" | "linear", "factor", ...}. */
static cllm_result cllm__rope_scaling_from_json(cllm_config *c, const cJSON *scaling, cllm_err *err) {
    const char *type = cllm__json_str(scaling, "rope_type");
    int ok = 1;
    c->rope_type = CLLM_ROPE_DEFAULT;
    if (!scaling || cJSON_IsNull(scaling)) return CLLM_OK;
    if (!type) type = cllm__json_str(scaling, "type");
    if (!cJSON_IsObject(scaling) || !type)
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: rope_scaling must be null or an object with "
                          "\"rope_type\"");
    if (strcmp(type, "default") == 0) return CLLM_OK;
    if (strcmp(type, "llama3") != 0 && strcmp(type, "linear") != 0)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: rope_scaling type '%s' is not supported (supported: "
                          "default, llama3, linear)", type);
    c->rope_type = strcmp(type, "llama3") == 0 ? CLLM_ROPE_LLAMA3 : CLLM_ROPE_LINEAR;
    ok &= cllm__json_float(scaling, "factor", 0, &c->rope_factor);
    ok &= cllm__json_float(scaling, "low_freq_factor", 1, &c->rope_low_freq_factor);
    ok &= cllm__json_float(scaling, "high_freq_factor", 4, &c->rope_high_freq_factor);
    ok &= cllm__json_int(scaling, "original_max_position_embeddings", 8192, &c->rope_original_max_pos);
    if (!ok || !(c->rope_factor > 0))
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: rope_scaling '%s' needs a positive \"factor\"", type);
    if (c->rope_type == CLLM_ROPE_LLAMA3 &&
        !(c->rope_high_freq_factor > c->rope_low_freq_factor && c->rope_original_max_pos > 0))
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: llama3 rope_scaling needs high_freq_factor > "
                          "low_freq_factor and original_max_position_embeddings > 0");
    return CLLM_OK;
}

static cllm_result cllm__config_from_json(cllm_config *c, const cJSON *root, cllm_err *err) {
    const char *mt = cllm__json_str(root, "model_type"), *act;
    const cJSON *eos, *e;
    cllm_result rc;
    int ok = 1, tp = 1;
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root)) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: not a JSON object");
    if (!mt)
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: missing \"model_type\" (expected llama, qwen2 or qwen3)");
    if (strcmp(mt, "llama") == 0) c->arch = CLLM_ARCH_LLAMA;
    else if (strcmp(mt, "qwen2") == 0) c->arch = CLLM_ARCH_QWEN2;
    else if (strcmp(mt, "qwen3") == 0) c->arch = CLLM_ARCH_QWEN3;
    else
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: model_type '%s' is not supported (supported: llama, "
                          "qwen2, qwen3)", mt);

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
    if (!ok)
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: a size field is not an integer (check vocab_size, "
                          "hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, "
                          "num_key_value_heads, head_dim)");
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0)
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: vocab_size, hidden_size, intermediate_size, "
                          "num_hidden_layers and num_attention_heads must all be given and positive");
    if (c->head_dim == 0 && c->hidden_size % c->n_heads)
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: hidden_size %d is not divisible by num_attention_heads "
                          "%d; give head_dim", c->hidden_size, c->n_heads);
    if (c->head_dim == 0) c->head_dim = c->hidden_size / c->n_heads;
    if (c->head_dim <= 0 || c->head_dim % 2)
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: head_dim %d must be positive and even (RoPE rotates "
                          "pairs)", c->head_dim);
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: num_attention_heads %d must be a multiple of "
                          "num_key_value_heads %d", c->n_heads, c->n_kv_heads);
    if ((double)c->vocab_size * c->hidden_size > 1e11 ||
        (double)c->n_layers * c->intermediate_size * c->hidden_size > 1e12)
        return cllm__fail(err, CLLM_ERR_LIMIT, "config.json: model sizes are implausibly large (corrupt config?)");
    if (!(c->rms_norm_eps > 0)) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: rms_norm_eps must be positive");
    if (!(c->rope_theta > 0)) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: rope_theta must be positive");

    act = cllm__json_str(root, "hidden_act");
    if (act && strcmp(act, "silu") != 0)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: hidden_act '%s' is not supported (only silu)", act);
    if (cllm__json_bool(root, "mlp_bias", 0))
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: mlp_bias true is not supported");
    if (!cllm__json_int(root, "pretraining_tp", 1, &tp) || tp != 1)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: pretraining_tp must be 1");
    /* Qwen2 always has q/k/v biases (its config has no switch); Llama and Qwen3 put a bias on o_proj too when
       attention_bias is set, which we do not support. */
    if (c->arch != CLLM_ARCH_QWEN2 && cllm__json_bool(root, "attention_bias", 0))
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: attention_bias true is not supported for "
                          "model_type '%s'", mt);
    c->attention_bias = c->arch == CLLM_ARCH_QWEN2;
    c->qk_norm = c->arch == CLLM_ARCH_QWEN3;
    if (c->arch == CLLM_ARCH_QWEN2 && cllm__json_bool(root, "use_sliding_window", 0))
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "config.json: use_sliding_window true is not supported");
    c->tie_word_embeddings = cllm__json_bool(root, "tie_word_embeddings", c->arch == CLLM_ARCH_LLAMA ? 0 : 1);
    rc = cllm__rope_scaling_from_json(c, cJSON_GetObjectItemCaseSensitive(root, "rope_scaling"), err);
    if (rc != CLLM_OK) return rc;

    eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");       /* an id, a list of ids, or null */
    e = cJSON_IsArray(eos) ? eos->child : cJSON_IsNull(eos) ? NULL : eos;
    for (; e; e = cJSON_IsArray(eos) ? e->next : NULL) {
        uint64_t id;
        if (!cllm__json_u53(e, &id) || id >= (uint64_t)c->vocab_size)
            return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: eos_token_id must be a token id in [0, vocab_size) "
                              "or a list of them");
        if (c->n_eos < CLLM_MAX_EOS) c->eos_token_ids[c->n_eos++] = (int)id;
    }
    return cllm__succeed(err);
}

CLLMDEF cllm_result cllm_config_parse(cllm_config *c, const char *json_text, size_t len, cllm_err *err) {
    cJSON *root = cJSON_ParseWithLength(json_text, len);
    cllm_result rc;
    if (!root) return cllm__fail(err, CLLM_ERR_FORMAT, "config.json: not valid JSON");
    rc = cllm__config_from_json(c, root, err);
    cJSON_Delete(root);
    return rc;
}

/* ---- reading a Hugging Face directory: config.json + model.safetensors (or its shards) ------- */

/* Tensors that may appear in a checkpoint without being parameters (skipped, not an error). */
static int cllm__ignorable_tensor(const char *name) {
    size_t n = strlen(name);
    return n > 19 && strcmp(name + n - 19, "rotary_emb.inv_freq") == 0;
}

/* Which parameter tensor (and layer) a checkpoint name is, or -1. A tied lm_head is still recognised. */
static int cllm__param_lookup(const cllm_model *m, const char *name, int *layer) {
    char buf[CLLM_NAME_MAX];
    int i, l;
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        if (!m->param_sizes[i] && i != CLLM__P_LM_HEAD) continue;
        for (l = 0; l < (cllm__param_per_layer(i) ? m->config.n_layers : 1); l++) {
            cllm_param_name(i, l, buf, sizeof buf);
            if (strcmp(buf, name) != 0) continue;
            *layer = l;
            return i;
        }
    }
    return -1;
}

/* Loads every parameter tensor found in one shard; marks each in `seen` (indexed by tensor and layer) so that
   missing ones are reported after all shards. */
static cllm_result cllm__load_shard(cllm_model *m, const char *path, unsigned char *seen, cllm_err *err) {
    static const char *model_types[] = { "?", "llama", "qwen2", "qwen3" };
    const cllm_config *c = &m->config;
    cllm_safetensors st;
    cllm_float **ptrs[CLLM_NUM_PARAM_TENSORS];
    cllm_result rc = cllm_st_open(&st, path, err);
    int t;
    if (rc != CLLM_OK) return rc;
    cllm__param_ptrs(&m->params, ptrs);
    for (t = 0; t < st.n && rc == CLLM_OK; t++) {
        const cllm_st_tensor *ten = &st.tensors[t];
        char got[96] = "";
        int l = 0, i = cllm__param_lookup(m, ten->name, &l), rows, cols, k, n = 0, tied;
        if (i < 0 && cllm__ignorable_tensor(ten->name)) continue;
        if (i < 0) {
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: unexpected tensor '%s' (not a parameter of this %s config: "
                            "wrong model_type, layer count or bias settings?)", path, ten->name, model_types[c->arch]);
            break;
        }
        tied = i == CLLM__P_LM_HEAD && c->tie_word_embeddings;
        cllm__param_shape(c, i, &rows, &cols);
        if (tied) rows = c->vocab_size;
        for (k = 0; k < ten->ndim && n < 80; k++)
            n += snprintf(got + n, sizeof got - (size_t)n, k ? ",%lld" : "%lld", (long long)ten->shape[k]);
        if (cols && !(ten->ndim == 2 && ten->shape[0] == rows && ten->shape[1] == cols))
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%d,%d] from config.json",
                            path, ten->name, got, rows, cols);
        else if (!cols && !(ten->ndim == 1 && ten->shape[0] == rows))
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%d] from config.json",
                            path, ten->name, got, rows);
        else if (tied) continue;                                   /* HF re-ties it to the embedding */
        else if (seen[i * c->n_layers + l])
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' appears in more than one shard", path, ten->name);
        else {
            seen[i * c->n_layers + l] = 1;
            rc = cllm_st_read(&st, ten, *ptrs[i] + (size_t)l * (size_t)rows * (size_t)(cols ? cols : 1), err);
        }
    }
    cllm_st_close(&st);
    return rc;
}

/* The weight files of a checkpoint directory (paths owned, stb_ds array): model.safetensors, else the distinct shards
   of model.safetensors.index.json in order of appearance. */
static cllm_result cllm__weight_files(const char *dir, char ***files, cllm_err *err) {
    char path[4096], shard[4096];
    char *text = NULL, *copy;
    size_t len;
    cJSON *index;
    const cJSON *wm, *e;
    cllm_result rc = CLLM_OK;
    int dup, k;
    *files = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);   /* HF's order: the single file first */
    if (cllm__file_exists(path)) {
        copy = cllm__strdup(path);
        if (!copy) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        stbds_arrput(*files, copy);
        return CLLM_OK;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!cllm__file_exists(path))
        return cllm__fail(err, CLLM_ERR_IO, "%s: no model.safetensors and no model.safetensors.index.json", dir);
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    index = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(index);
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing \"weight_map\" object", path);
    }
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || strstr(e->valuestring, "..")) {
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: weight_map entry '%s' must be a plain file name", path,
                            e->string);
            break;
        }
        snprintf(shard, sizeof shard, "%s/%s", dir, e->valuestring);
        for (dup = 0, k = 0; k < (int)stbds_arrlen(*files); k++) dup |= strcmp((*files)[k], shard) == 0;
        if (dup) continue;
        if (!(copy = cllm__strdup(shard))) {
            rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
            break;
        }
        stbds_arrput(*files, copy);
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
    cJSON *root;
    cllm_config cfg;
    unsigned char *seen = NULL;
    cllm_result rc;
    int i, l, k;

    memset(m, 0, sizeof *m);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    root = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    if (!root) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: not valid JSON", path);
    rc = cllm__config_from_json(&cfg, root, err);
    if (rc == CLLM_OK) rc = cllm__weight_files(dir, &files, err);
    /* Untrusted sizes: the weights must hold at least 2 bytes (F16/BF16) per parameter that config.json describes,
       checked before the parameters are allocated. */
    if (rc == CLLM_OK) cllm__fill_in_param_sizes(sizes, &cfg);
    for (i = 0; rc == CLLM_OK && i < CLLM_NUM_PARAM_TENSORS; i++) n_params += sizes[i];
    for (k = 0; rc == CLLM_OK && k < (int)stbds_arrlen(files); k++)
        bytes += (b = cllm__file_bytes(files[k])) > 0 ? b : 0;
    if (rc == CLLM_OK && (double)bytes < 2.0 * (double)n_params)
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: config.json describes %zu parameters (%.3g GB as F32) but the "
                        "weight files hold only %lld bytes: config and weights do not match", dir, n_params,
                        n_params * 4.0 / 1e9, bytes);
    if (rc == CLLM_OK) rc = cllm__model_setup(m, &cfg, err);
    if (rc != CLLM_OK) {
        cJSON_Delete(root);
        goto done;
    }
    m->hf_config = root;
    seen = (unsigned char *)cllm__calloc((size_t)CLLM_NUM_PARAM_TENSORS * (size_t)cfg.n_layers, 1);
    if (!seen) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (k = 0; rc == CLLM_OK && k < (int)stbds_arrlen(files); k++) rc = cllm__load_shard(m, files[k], seen, err);
    for (i = 0; rc == CLLM_OK && i < CLLM_NUM_PARAM_TENSORS; i++) {
        for (l = 0; m->param_sizes[i] && l < (cllm__param_per_layer(i) ? cfg.n_layers : 1); l++) {
            if (seen[i * cfg.n_layers + l]) continue;
            cllm_param_name(i, l, path, sizeof path);
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing tensor '%s'", dir, path);
            break;
        }
    }
done:
    CLLM_FREE(seen);
    cllm__weight_files_free(files);
    if (rc != CLLM_OK) cllm_model_free(m);
    else cllm__ok(err);
    return rc;
}

/* ---- token batches from JSONL ---------------------------------------------------------------- */

/* Reads a JSON array of integers into a new int array; returns its length or -1. */
static int cllm__json_int_array(const cJSON *arr, int **out) {
    const cJSON *e;
    int n = 0;
    *out = NULL;
    if (!cJSON_IsArray(arr)) return -1;
    *out = (int *)cllm__calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(int));
    if (!*out) return -1;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || fabs(e->valuedouble) > 2147483647.0) {
            CLLM_FREE(*out);
            *out = NULL;
            return -1;
        }
        (*out)[n++] = (int)e->valuedouble;
    }
    return n;
}

CLLMDEF void cllm_batch_free(cllm_batch *batch) {
    if (!batch) return;
    CLLM_FREE((void *)batch->input_ids);
    CLLM_FREE((void *)batch->labels);
    CLLM_FREE((void *)batch->attn_mask);
    memset(batch, 0, sizeof *batch);
}

/* One row {"input_ids": [...], "labels": [...] or absent or null} of a token-batch file; its length, or 0 after an
   error. *labels stays NULL without labels. */
static int cllm__batch_row(const char *line, long len, const char *path, int lineno, int **ids, int **labels,
                           cllm_err *err) {
    cJSON *row = cllm__jsonl_parse(line, (size_t)len, path, lineno, err), *jl;
    int n, n_labels = -2;
    *ids = *labels = NULL;
    if (!row) return 0;
    n = cllm__json_int_array(cJSON_GetObjectItemCaseSensitive(row, "input_ids"), ids);
    jl = cJSON_GetObjectItemCaseSensitive(row, "labels");
    if (jl && !cJSON_IsNull(jl)) n_labels = cllm__json_int_array(jl, labels);
    cJSON_Delete(row);
    if (n > 0 && (n_labels == -2 || n_labels == n)) return n;
    CLLM_FREE(*ids);
    CLLM_FREE(*labels);
    if (n <= 0)
        cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: \"input_ids\" must be a non-empty array of integers", path, lineno);
    else
        cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: \"labels\" must be an integer array as long as input_ids (%d)", path,
                   lineno, n);
    return 0;
}

CLLMDEF cllm_result cllm_batch_read_jsonl(cllm_batch *batch, const char *path, cllm_err *err) {
    FILE *f = cllm__open_read(path, "a JSONL file", err);
    char *line = NULL;
    size_t cap = 0;
    int **ids = NULL, **labels = NULL, *lens = NULL, B = 0, T = 0, lineno = 0, b, t, n;
    int *in = NULL, *lab = NULL, *mask = NULL, *x, *y;
    long len;
    cllm_result rc = CLLM_OK;
    memset(batch, 0, sizeof *batch);
    if (!f) return CLLM_ERR_IO;
    while ((len = cllm_read_line(f, &line, &cap)) >= 0) {
        lineno++;
        if (len == 0) continue;
        if (!(n = cllm__batch_row(line, len, path, lineno, &x, &y, err))) {
            rc = CLLM_ERR_FORMAT;
            break;
        }
        stbds_arrput(ids, x);
        stbds_arrput(labels, y);
        stbds_arrput(lens, n);
        if (n > T) T = n;
        B++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && len < CLLM_LINE_EOF) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && B == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no rows", path);
    if (rc == CLLM_OK && (double)B * T > 1e8)
        rc = cllm__fail(err, CLLM_ERR_LIMIT, "%s: %d rows padded to %d tokens is too large for one batch (at most 1e8 "
                        "tokens)", path, B, T);
    if (rc == CLLM_OK) {
        in = (int *)cllm__calloc((size_t)B * T, sizeof(int));
        lab = (int *)cllm__calloc((size_t)B * T, sizeof(int));
        mask = (int *)cllm__calloc((size_t)B * T, sizeof(int));
        if (!in || !lab || !mask) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    for (b = 0; rc == CLLM_OK && b < B; b++) for (t = 0; t < T; t++) {    /* right-padded: id 0, mask 0, label -100 */
        int i = b * T + t, real = t < lens[b];
        in[i] = real ? ids[b][t] : 0;
        lab[i] = real ? (labels[b] ? labels[b][t] : ids[b][t]) : -100;
        mask[i] = real;
    }
    if (rc == CLLM_OK) {
        batch->B = B;
        batch->T = T;
        batch->input_ids = in;
        batch->labels = lab;
        batch->attn_mask = mask;
        in = lab = mask = NULL;
        cllm__ok(err);
    }
    for (b = 0; b < (int)stbds_arrlen(ids); b++) CLLM_FREE(ids[b]);
    for (b = 0; b < (int)stbds_arrlen(labels); b++) CLLM_FREE(labels[b]);
    stbds_arrfree(ids);
    stbds_arrfree(labels);
    stbds_arrfree(lens);
    CLLM_FREE(in);
    CLLM_FREE(lab);
    CLLM_FREE(mask);
    return rc;
}

/* ---- writing a Hugging Face directory -------------------------------------------------------- */

/* config.json for a model that has none (made by cllm_model_init). */
static cJSON *cllm__config_to_json(const cllm_config *c) {
    static const char *types[] = { "llama", "qwen2", "qwen3" };
    static const char *archs[] = { "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM" };
    cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "architectures"), *e;
    int i, t = (int)c->arch - 1;
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
    cJSON_AddNumberToObject(o, "max_position_embeddings", cllm__def(c->max_position_embeddings, 2048));
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
    e = c->n_eos > 1 ? cJSON_AddArrayToObject(o, "eos_token_id") : NULL;
    for (i = 0; e && i < c->n_eos; i++) cJSON_AddItemToArray(e, cJSON_CreateNumber(c->eos_token_ids[i]));
    if (c->arch == CLLM_ARCH_QWEN2) cJSON_AddBoolToObject(o, "use_sliding_window", 0);
    return o;
}

CLLMDEF int cllm_model_tensor_count(const cllm_model *m) {
    int i, n = 0;
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++)
        if (m->param_sizes[i]) n += cllm__param_per_layer(i) ? m->config.n_layers : 1;
    return n;
}

CLLMDEF int cllm_model_entries(const cllm_model *m, const cllm_float *memory, const char *prefix, cllm_dtype dtype,
                               cllm_st_entry *entries) {
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
            e->shape[0] = rows;
            e->shape[1] = cols;
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

    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "saving the model: the model is not loaded");
    if (dtype != CLLM_DT_F32 && dtype != CLLM_DT_BF16 && dtype != CLLM_DT_F16)
        return cllm__fail(err, CLLM_ERR_ARG, "saving the model: dtype must be F32, BF16 or F16");
    if ((rc = cllm__mkdir(dir, err)) != CLLM_OK) return rc;
    entries = (cllm_st_entry *)cllm__calloc((size_t)cllm_model_tensor_count(m) + 1, sizeof *entries);
    if (!entries) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rc = cllm_st_save(path, entries, cllm_model_entries(m, m->params_memory, NULL, dtype, entries), err);
    if (rc == CLLM_OK) cfg = m->hf_config ? cJSON_Duplicate(m->hf_config, 1) : cllm__config_to_json(&m->config);
    if (rc == CLLM_OK && cfg) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, "torch_dtype");
        cJSON_AddStringToObject(cfg, "torch_dtype", dtype == CLLM_DT_BF16 ? "bfloat16" :
                                                    dtype == CLLM_DT_F16 ? "float16" : "float32");
        json = cJSON_Print(cfg);
    }
    if (rc == CLLM_OK && !json) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (rc == CLLM_OK) rc = cllm_write_file_atomic(path, json, strlen(json), err);
    cJSON_free(json);
    cJSON_Delete(cfg);
    CLLM_FREE(entries);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* II.3 Tokenizer (tokenizer.json, byte-level BPE; tiktoken rank files)                         */
/* -------------------------------------------------------------------------------------------- */

/* The pipeline of Hugging Face tokenizers (tokenizer/mod.rs, added_vocabulary.rs), step by step:
     1. added tokens written in the text are cut out first (leftmost-longest; tokens with
        normalized:false match the raw text, the others match the normalized text);
     2. the normalizer (NFC per UAX #15, or none) runs on the remaining pieces;
     3. the pre-tokenizer splits them (Split with the Llama-3 / Qwen2 regex, Digits, ByteLevel with
        the GPT-2 regex; the regexes are written out as scanners, no regex engine);
     4. byte-level BPE turns each piece into ids, applying merges by rank (models/bpe/word.rs);
     5. the post_processor adds special tokens (TemplateProcessing) when asked.
   Decoding maps ids back to bytes (the ByteLevel decoder) and decodes UTF-8 lossily. */

/* Unicode classes, as cllm__uni_class() returns them (tables in Part IV) */
#define CLLM__U_LETTER 1   /* \p{L}: General_Category Lu Ll Lt Lm Lo          */
#define CLLM__U_NUMBER 2   /* \p{N}: Nd Nl No (also Rust's char::is_numeric) */
#define CLLM__U_SPACE  4   /* \s: White_Space (Oniguruma's \s for UTF-8)      */

/* ---- NFC normalization (UAX #15: canonical decomposition, canonical ordering, composition) -- */

/* A character during NFC: code point, combining class, position in the decomposition, and its
   alignment change as Hugging Face counts it (0: takes the place of one original character; +1:
   inserted by a decomposition; -N: also stands for N characters after). Original byte ranges
   are kept per original character (cllm__nfc) and assigned from the changes at the end. */
typedef struct cllm__nchar {
    uint32_t cp;
    unsigned ccc;
    size_t seq;
    long change;
} cllm__nchar;

/* Hangul syllables decompose and compose by arithmetic (Unicode section 3.12) */
enum { CLLM__HANGUL_S = 0xAC00, CLLM__HANGUL_L = 0x1100, CLLM__HANGUL_V = 0x1161, CLLM__HANGUL_T = 0x11A7,
       CLLM__HANGUL_NV = 21, CLLM__HANGUL_NT = 28, CLLM__HANGUL_NS = 11172 };

/* The canonical decomposition entry (cp, first, second or 0) of cp, or NULL (binary search). */
static const uint32_t *cllm__decomp_find(uint32_t cp) {
    size_t lo = 0, hi;
    const uint32_t *table = cllm__uni_decomp_entries(&hi);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t c = table[3 * mid] & 0x7FFFFFFFu;
        if (c == cp) return &table[3 * mid];
        if (c < cp) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Appends the full canonical decomposition of cp (recursive mappings, Hangul by arithmetic). */
static void cllm__nfd_push(uint32_t cp, cllm__nchar **out) {
    const uint32_t *d = cp >= 0xC0 ? cllm__decomp_find(cp) : NULL;
    cllm__nchar c;
    if (cp >= CLLM__HANGUL_S && cp < CLLM__HANGUL_S + CLLM__HANGUL_NS) {
        uint32_t s = cp - CLLM__HANGUL_S, t = s % CLLM__HANGUL_NT;
        cllm__nfd_push(CLLM__HANGUL_L + s / (CLLM__HANGUL_NV * CLLM__HANGUL_NT), out);
        cllm__nfd_push(CLLM__HANGUL_V + (s % (CLLM__HANGUL_NV * CLLM__HANGUL_NT)) / CLLM__HANGUL_NT, out);
        if (t) cllm__nfd_push(CLLM__HANGUL_T + t, out);
        return;
    }
    if (d) {
        cllm__nfd_push(d[1], out);
        if (d[2]) cllm__nfd_push(d[2], out);
        return;
    }
    c.cp = cp;
    c.ccc = cllm__uni_ccc(cp);
    c.seq = (size_t)stbds_arrlen(*out);
    c.change = 1;
    stbds_arrput(*out, c);
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
        if (k < key) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* Normalized text with, for each of its bytes, the original byte range it came from. */
typedef struct cllm__ntext {
    cllm__sb b;
    size_t *os, *oe;   /* stb_ds arrays, one per byte of b */
} cllm__ntext;

static void cllm__ntext_add(cllm__ntext *t, const char *bytes, size_t n, size_t os, size_t oe) {
    size_t i;
    cllm__sb_putn(&t->b, bytes, n);
    for (i = 0; i < n; i++) {
        stbds_arrput(t->os, os);
        stbds_arrput(t->oe, oe);
    }
}

/* Appends NFC(s[0..n)) to t; base is the offset of s in the caller's original text. */
static void cllm__nfc(const uint64_t *comp, size_t ncomp, const char *s, size_t n, size_t base, cllm__ntext *t) {
    cllm__nchar *d = NULL;
    size_t *starts = NULL;   /* where each original character starts, and base + n */
    size_t i = 0, j, k, m;
    long st;                 /* index of the last starter, -1 if none yet */
    unsigned last;
    for (i = 0; i < n && (unsigned char)s[i] < 0x80; i++) {}
    if (i == n) {            /* ASCII is already NFC */
        for (i = 0; i < n; i++) cllm__ntext_add(t, s + i, 1, base + i, base + i + 1);
        return;
    }
    /* 1. full canonical decomposition */
    for (i = 0; i < n;) {
        uint32_t cp;
        int len = cllm__utf8_next((const unsigned char *)s + i, n - i, &cp, NULL);
        size_t first = (size_t)stbds_arrlen(d);
        cllm__nfd_push(cp, &d);
        d[first].change = 0;   /* the first piece replaces the character */
        stbds_arrput(starts, base + i);
        i += (size_t)len;
    }
    stbds_arrput(starts, base + n);
    m = (size_t)stbds_arrlen(d);
    /* 2. canonical ordering of each run of non-starters */
    for (i = 0; i < m; i = j) {
        for (j = i; j < m && d[j].ccc; j++) {}
        if (j - i > 1) qsort(d + i, j - i, sizeof *d, cllm__nchar_cmp);
        if (j == i) j++;
    }
    /* 3. canonical composition: a character combines with the last starter unless a character
       between them blocks it (one of class 0, or of a class >= its own). last = class of the
       previous kept character; it is 0 exactly when that character is the starter itself. m >= 1:
       the text has a character that is not ASCII. */
    st = d[0].ccc ? -1 : 0;
    last = d[0].ccc;
    for (i = 1, k = 1; i < m; i++) {
        unsigned c = d[i].ccc;
        uint32_t composite = st >= 0 && (last < c || last == 0) ? cllm__compose(comp, ncomp, d[st].cp, d[i].cp) : 0;
        if (composite) {
            d[st].cp = composite;
            d[st].change += d[i].change - 1;
            continue;
        }
        if (c == 0) st = (long)k;
        last = c;
        d[k++] = d[i];
    }
    /* 4. offsets, aligned as Hugging Face's tokenizers align them (the changes above, applied in
       output order): a character with change <= 0 takes the range of the next original
       character and skips -change more; an inserted one (+1) shares the range of the last
       original character passed. Offsets thus never run backwards, even where marks were
       reordered (a composite keeps only its first character's range, as in HF). */
    for (i = 0, j = 0; i < k; i++) {
        unsigned char o[4];
        int len = cllm__utf8_put(d[i].cp, o), inserted = d[i].change > 0;
        size_t os = inserted ? (j ? starts[j - 1] : base) : starts[j];
        size_t oe = inserted ? (j ? starts[j] : base) : starts[j + 1];
        if (!inserted) j += (size_t)(1 - d[i].change);
        cllm__ntext_add(t, (const char *)o, (size_t)len, os, oe);
    }
    stbds_arrfree(d);
    stbds_arrfree(starts);
}

/* ---- Hash maps: byte strings -> id, and (id, id) pairs -> merge ----------------------------- */

/* Open addressing over entries stored elsewhere: slot holds entry index + 1 (0 = empty). */
typedef struct cllm__smap {
    uint32_t *slot;
    size_t nslot;
} cllm__smap;

static uint64_t cllm__hash_bytes(const char *s, size_t n) {   /* FNV-1a, 64 bit */
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Byte strings live in one pool; an id's string is pool[off .. off+len). */
typedef struct cllm__str {
    uint32_t off, len;
} cllm__str;
#define CLLM__NO_STR 0xFFFFFFFFu

static int cllm__smap_init(cllm__smap *m, size_t n) {
    m->nslot = 16;
    while (m->nslot < 2 * n + 16) m->nslot *= 2;
    m->slot = (uint32_t *)cllm__calloc(m->nslot, sizeof(uint32_t));
    return m->slot != NULL;
}

/* Looks up key; entries[i] are (pool offset, length) pairs of entry i. Returns the entry index or -1. */
static long cllm__smap_get(const cllm__smap *m, const char *pool, const cllm__str *entries, const char *key, size_t n) {
    size_t mask = m->nslot - 1, i = (size_t)cllm__hash_bytes(key, n) & mask;
    if (!m->slot) return -1;
    for (; m->slot[i]; i = (i + 1) & mask) {
        const cllm__str *e = &entries[m->slot[i] - 1];
        if (e->len == n && memcmp(pool + e->off, key, n) == 0) return (long)m->slot[i] - 1;
    }
    return -1;
}

static void cllm__smap_put(cllm__smap *m, const char *pool, const cllm__str *entries, uint32_t index) {
    size_t mask = m->nslot - 1;
    size_t i = (size_t)cllm__hash_bytes(pool + entries[index].off, entries[index].len) & mask;
    while (m->slot[i]) i = (i + 1) & mask;
    m->slot[i] = index + 1;
}

/* Merge table: key = left id << 32 | right id; rank = position in the merges list. */
typedef struct cllm__merge {
    uint64_t key;
    int rank, id;
} cllm__merge;
#define CLLM__NO_KEY 0xFFFFFFFFFFFFFFFFull

static uint64_t cllm__hash_u64(uint64_t x) {   /* MurmurHash3's fmix64 */
    x = (x ^ (x >> 33)) * 0xff51afd7ed558ccdull;
    x = (x ^ (x >> 33)) * 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* The slot of pair (a, b) in the merge table: where it is, or the empty slot where it goes. */
static size_t cllm__merge_slot(const cllm__merge *t, size_t nslot, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = nslot - 1, i = (size_t)cllm__hash_u64(key) & mask;
    while (t[i].key != CLLM__NO_KEY && t[i].key != key) i = (i + 1) & mask;
    return i;
}

static const cllm__merge *cllm__merge_get(const cllm__merge *t, size_t nslot, int a, int b) {
    const cllm__merge *m = t ? &t[cllm__merge_slot(t, nslot, a, b)] : NULL;
    return m && m->key != CLLM__NO_KEY ? m : NULL;
}

/* ---- The tokenizer's private state ----------------------------------------------------------- */

/* The pre-tokenizer steps we implement (tokenizers/src/pre_tokenizers) */
typedef enum cllm__pretok_kind {
    CLLM__PT_SPLIT_LLAMA3 = 1,   /* Split with Llama-3's regex, behavior Isolated */
    CLLM__PT_SPLIT_QWEN2,        /* Split with Qwen2's regex (one digit per match) */
    CLLM__PT_DIGITS,             /* Digits */
    CLLM__PT_BYTELEVEL           /* ByteLevel, with GPT-2's regex when use_regex */
} cllm__pretok_kind;
typedef struct cllm__pretok {
    cllm__pretok_kind kind;
    int individual_digits, add_prefix_space, use_regex;   /* the step's flags in tokenizer.json */
} cllm__pretok;
#define CLLM__MAX_PRETOK 16

typedef struct cllm__added {
    int id;
    cllm__str content;   /* as matched: the normalized content for normalized tokens */
    unsigned char special, normalized, lstrip, rstrip, first;
} cllm__added;

struct cllm__tok {
    cllm__sb       pool;          /* every string below points into pool.p                          */
    int            n_ids;
    cllm__str     *tok_str;       /* (n_ids) the token as written in tokenizer.json                 */
    cllm__str     *tok_bytes;     /* (n_ids) the bytes it decodes to                                */
    unsigned char *special;       /* (n_ids) 1 for added tokens marked special                      */
    cllm__smap     by_str;        /* token string -> id (vocab and added tokens; entries tok_str)   */
    cllm__smap     by_bytes;      /* raw bytes -> id for vocab tokens made of byte-level chars      */
    int            byte_id[256];  /* id of the single-byte token of each byte, -1 if none           */
    cllm__merge   *merges;        /* open-addressing table of nmerge_slots                          */
    size_t         nmerge_slots;
    int            ignore_merges, unk_id, fuse_unk;
    cllm__added   *added;         /* stb_ds array, bucketed by first byte, longest first            */
    int            bucket[257];   /* added tokens starting with byte c: added[bucket[c]..bucket[c+1]) */
    int            any_normalized_added;
    int            nfc;           /* normalizer: NFC (else none)                                    */
    uint64_t      *comp;          /* NFC composition table (a << 21 | b) << 21 | composite, sorted  */
    size_t         ncomp;
    cllm__pretok   pretok[CLLM__MAX_PRETOK];
    int            npretok;
    int           *post_before;   /* stb_ds arrays: the ids TemplateProcessing puts before $A ...   */
    int           *post_after;    /* ... and after it                                               */
    int            has_template;
    const char    *chat_default_system;   /* ChatML: system prompt used when the first message is not one */
    int            chat_gen_always;       /* Llama-3 variant that always appends the assistant header */
};

/* ---- The byte-level alphabet (GPT-2's bytes_to_unicode) -------------------------------------- */
/* As GPT-2's encoder.py and HF's pre_tokenizers/byte_level.rs build it: printable bytes 0x21-0x7E,
   0xA1-0xAC, 0xAE-0xFF stand for themselves; the other 68 bytes map, in ascending order, to
   U+0100, U+0101, ... (space -> U+0120 'Ġ', newline -> U+010A 'Ċ'). */

/* Inverse: the byte a byte-level character stands for, or -1 if cp is not in the alphabet. */
static int cllm__bl_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp >= 0x100 && cp <= 0x120) return (int)(cp - 0x100);          /* bytes 0x00-0x20 */
    if (cp >= 0x121 && cp <= 0x142) return (int)(cp - 0x121 + 0x7F);   /* bytes 0x7F-0xA0 */
    return cp == 0x143 ? 0xAD : -1;
}

/* The bytes a token string stands for: each character through the inverse alphabet; if any
   character is outside it, the token's own UTF-8 (what the ByteLevel decoder does). Appends to
   pool and returns where; *byte_level says whether every character was in the alphabet. */
static cllm__str cllm__token_bytes(cllm__sb *pool, const char *s, size_t n, int *byte_level) {
    cllm__str r;
    size_t i;
    int len = 0, b;
    r.off = (uint32_t)pool->n;
    for (i = 0; i < n; i += (size_t)len) {
        uint32_t cp;
        len = cllm__utf8_next((const unsigned char *)s + i, n - i, &cp, NULL);
        b = len ? cllm__bl_byte(cp) : -1;
        if (b < 0) break;
        cllm__sb_putc(pool, (char)b);
    }
    *byte_level = i == n;
    if (!*byte_level) {
        pool->n = r.off;
        cllm__sb_putn(pool, s, n);
    }
    r.len = (uint32_t)(pool->n - r.off);
    return r;
}

/* ---- Loading tokenizer.json ------------------------------------------------------------------ */

#define CLLM__MAX_IDS 16000000   /* ids above this are rejected as corrupt */
/* cllm__fail for a problem in tokenizer.json, which the message names (fmt: a string literal) */
#define CLLM__TJ_FAIL(err, code, ...) cllm__fail((err), (code), "tokenizer.json: " __VA_ARGS__)

CLLMDEF void cllm_tokenizer_free(cllm_tokenizer *tok) {
    struct cllm__tok *p = tok ? tok->priv : NULL;
    if (!tok) return;
    if (p) {
        CLLM_FREE(p->pool.p);
        CLLM_FREE(p->tok_str);
        CLLM_FREE(p->tok_bytes);
        CLLM_FREE(p->special);
        CLLM_FREE(p->by_str.slot);
        CLLM_FREE(p->by_bytes.slot);
        CLLM_FREE(p->merges);
        CLLM_FREE(p->comp);
        stbds_arrfree(p->added);
        stbds_arrfree(p->post_before);
        stbds_arrfree(p->post_after);
        CLLM_FREE(p);
    }
    CLLM_FREE(tok->chat_template);
    CLLM_FREE(tok->bos_token);
    CLLM_FREE(tok->eos_token);
    CLLM_FREE(tok->pad_token);
    memset(tok, 0, sizeof *tok);
}

static int cllm__json_id(const cJSON *j, int *id) {
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble)) return 0;
    if (j->valuedouble < 0 || j->valuedouble >= CLLM__MAX_IDS) return 0;
    *id = (int)j->valuedouble;
    return 1;
}

static int cllm__json_flag(const cJSON *o, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static cllm__str cllm__pool_add(cllm__sb *pool, const char *s, size_t n) {
    cllm__str r;
    r.off = (uint32_t)pool->n;
    cllm__sb_putn(pool, s, n);
    r.len = (uint32_t)n;
    return r;
}

/* Sets token `id` to string s (as written in the file) and derives the bytes it decodes to;
   *byte_level says whether s is made of byte-level characters only. */
static cllm_result cllm__set_token(struct cllm__tok *p, int id, const char *s, int *byte_level, cllm_err *err) {
    size_t n = strlen(s);
    const cllm__str had = p->tok_str[id];
    if (had.off != CLLM__NO_STR)
        return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "id %d is given to both '%.*s' and '%.*s'", id,
                             (int)cllm__utf8_prefix(p->pool.p + had.off, had.len, 40), p->pool.p + had.off,
                             CLLM__CUT(s, 40));
    p->tok_str[id] = cllm__pool_add(&p->pool, s, n);
    p->tok_bytes[id] = cllm__token_bytes(&p->pool, s, n, byte_level);
    if (p->pool.oom || p->pool.n >= 0xFFFFFFF0u)
        return CLLM__TJ_FAIL(err, CLLM_ERR_NOMEM, "out of memory for the token strings");
    return CLLM_OK;
}

static int cllm__find_token(const struct cllm__tok *p, const char *s, size_t n) {
    return (int)cllm__smap_get(&p->by_str, p->pool.p, p->tok_str, s, n);
}

/* One merge of model.merges: "a b" (the legacy form) or ["a", "b"]. Returns 0 if it is neither. */
static int cllm__merge_parts(const cJSON *it, const char **a, size_t *la, const char **b, size_t *lb) {
    const char *sp = cJSON_IsString(it) ? strchr(it->valuestring, ' ') : NULL;
    if (sp && !strchr(sp + 1, ' ')) {
        *a = it->valuestring;
        *la = (size_t)(sp - *a);
        *b = sp + 1;
    } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
               cJSON_IsString(it->child->next)) {
        *a = it->child->valuestring;
        *la = strlen(*a);
        *b = it->child->next->valuestring;
    } else return 0;
    *lb = strlen(*b);
    return 1;
}

/* model: {"type": "BPE", "vocab": {token: id}, "merges": [...], ...}, as HF's models/bpe/model.rs reads it. The rank
   of a merge is its position in the list; a repeated pair keeps its first rank; the merged token is vocab[a + b].
   max_added_id and n_added: the largest id and the number of the added tokens. */
static cllm_result cllm__load_bpe(struct cllm__tok *p, const cJSON *model, int max_added_id, int n_added,
                                  cllm_err *err) {
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *it, *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    const char *unk = cllm__json_str(model, "unk_token"), *pre = cllm__json_str(model, "continuing_subword_prefix");
    const char *suf = cllm__json_str(model, "end_of_word_suffix");
    int max_id = max_added_id, id = 0, rank = 0, nvocab = 0, byte_level, i;
    size_t nmerges;
    cllm_result rc;

    if (!cJSON_IsObject(model)) return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "missing \"model\" object");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") != 0)
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "model type '%s' is not supported (only BPE)",
                             type->valuestring);
    if (!cJSON_IsObject(vocab))
        return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "model.vocab must be an object of token -> id");
    if (!cJSON_IsArray(merges)) return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "model.merges must be an array");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "BPE dropout %g is not supported (encoding must be "
                             "deterministic)", dropout->valuedouble);
    if (cllm__json_flag(model, "byte_fallback"))
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "BPE byte_fallback is not supported");
    if ((pre && *pre) || (suf && *suf))
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "BPE continuing_subword_prefix / end_of_word_suffix are not "
                             "supported");
    p->ignore_merges = cllm__json_flag(model, "ignore_merges");
    p->fuse_unk = cllm__json_flag(model, "fuse_unk");

    cJSON_ArrayForEach(it, vocab) {
        if (!cllm__json_id(it, &id))
            return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "vocab entry '%.*s' has no valid id (integer in [0, %d))",
                                 CLLM__CUT(it->string, 60), CLLM__MAX_IDS);
        if (id > max_id) max_id = id;
        nvocab++;
    }
    /* Tables are indexed by id: ids must be about as many as the tokens (real files number
       them densely), or a short file could claim id 15999999 and cost half a gigabyte. */
    if ((double)max_id >= 2.0 * ((double)nvocab + n_added) + 256)
        return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "ids run up to %d but there are only %d tokens (ids must be nearly "
                             "dense; corrupt file?)", max_id, nvocab + n_added);
    p->n_ids = max_id + 1;
    p->tok_str = (cllm__str *)cllm__calloc((size_t)p->n_ids, sizeof(cllm__str));
    p->tok_bytes = (cllm__str *)cllm__calloc((size_t)p->n_ids, sizeof(cllm__str));
    p->special = (unsigned char *)cllm__calloc((size_t)p->n_ids, 1);
    if (!p->tok_str || !p->tok_bytes || !p->special || !cllm__smap_init(&p->by_str, (size_t)p->n_ids) ||
        !cllm__smap_init(&p->by_bytes, (size_t)nvocab))
        return CLLM__TJ_FAIL(err, CLLM_ERR_NOMEM, "out of memory for %d ids", p->n_ids);
    for (i = 0; i < p->n_ids; i++) p->tok_str[i].off = p->tok_bytes[i].off = CLLM__NO_STR;
    for (i = 0; i < 256; i++) p->byte_id[i] = -1;
    cJSON_ArrayForEach(it, vocab) {
        cllm__json_id(it, &id);
        if ((rc = cllm__set_token(p, id, it->string, &byte_level, err)) != CLLM_OK) return rc;
        if (byte_level && cllm__find_token(p, it->string, strlen(it->string)) >= 0)
            return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "vocab token '%.*s' appears twice", CLLM__CUT(it->string, 60));
        cllm__smap_put(&p->by_str, p->pool.p, p->tok_str, (uint32_t)id);
        if (!byte_level) continue;
        cllm__smap_put(&p->by_bytes, p->pool.p, p->tok_bytes, (uint32_t)id);
        if (p->tok_bytes[id].len == 1) p->byte_id[(unsigned char)p->pool.p[p->tok_bytes[id].off]] = id;
    }
    p->unk_id = unk ? cllm__find_token(p, unk, strlen(unk)) : -1;
    if (unk && p->unk_id < 0)
        return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "unk_token '%.*s' is not in the vocab", CLLM__CUT(unk, 60));

    nmerges = (size_t)cJSON_GetArraySize(merges);
    p->nmerge_slots = 16;
    while (p->nmerge_slots < 2 * nmerges + 16) p->nmerge_slots *= 2;
    p->merges = (cllm__merge *)CLLM_MALLOC(p->nmerge_slots * sizeof(cllm__merge));
    if (!p->merges) return CLLM__TJ_FAIL(err, CLLM_ERR_NOMEM, "out of memory for %zu merges", nmerges);
    memset(p->merges, 0xFF, p->nmerge_slots * sizeof(cllm__merge));   /* every key CLLM__NO_KEY: empty */
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t la, lb, ab = p->pool.n, slot;   /* a + b is spelt at the end of the pool, then dropped */
        int ia, ib, iab;
        if (rank == 0 && cJSON_IsString(it) && strncmp(it->valuestring, "#version", 8) == 0) continue;
        if (!cllm__merge_parts(it, &a, &la, &b, &lb))
            return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "merge %d must be \"a b\" or [\"a\", \"b\"]", rank);
        cllm__sb_putn(&p->pool, a, la);
        cllm__sb_putn(&p->pool, b, lb);
        if (p->pool.oom) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        ia = cllm__find_token(p, a, la);
        ib = cllm__find_token(p, b, lb);
        iab = cllm__find_token(p, p->pool.p + ab, la + lb);
        p->pool.n = ab;
        if (ia < 0 || ib < 0 || iab < 0)
            return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "merge %d ('%.*s' + '%.*s') uses a token that is not in the "
                                 "vocab", rank, (int)la, a, (int)lb, b);
        slot = cllm__merge_slot(p->merges, p->nmerge_slots, ia, ib);
        if (p->merges[slot].key == CLLM__NO_KEY) {
            p->merges[slot].key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
            p->merges[slot].rank = rank;
            p->merges[slot].id = iab;
        }
        rank++;
    }
    return CLLM_OK;
}

/* added_tokens: [{"id", "content", "special", "normalized", "lstrip", "rstrip", "single_word"}]
   (HF's AddedToken; normalized defaults to !special) */
static cllm_result cllm__load_added(struct cllm__tok *p, const cJSON *list, cllm_err *err) {
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const char *content = cllm__json_str(it, "content");
        cllm__added a;
        int vocab_id, byte_level;
        cllm_result rc;
        memset(&a, 0, sizeof a);
        if (!content || !cllm__json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &a.id))
            return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "added_tokens entries need \"content\" and an integer \"id\"");
        if (cllm__json_flag(it, "single_word"))
            return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "added token '%.*s' sets single_word, which is not "
                                 "supported", CLLM__CUT(content, 60));
        if (!*content) continue;   /* HF ignores empty tokens */
        a.special = (unsigned char)cllm__json_flag(it, "special");
        a.normalized = (unsigned char)cllm__json_bool(it, "normalized", !a.special);
        a.lstrip = (unsigned char)cllm__json_flag(it, "lstrip");
        a.rstrip = (unsigned char)cllm__json_flag(it, "rstrip");
        /* a token that is already in the vocabulary keeps its vocabulary id (HF add_tokens) */
        vocab_id = cllm__find_token(p, content, strlen(content));
        if (vocab_id >= 0) a.id = vocab_id;
        else if ((rc = cllm__set_token(p, a.id, content, &byte_level, err)) != CLLM_OK) return rc;
        else cllm__smap_put(&p->by_str, p->pool.p, p->tok_str, (uint32_t)a.id);
        if (a.special) p->special[a.id] = 1;
        if (cllm__utf8_check(content, strlen(content)) != strlen(content))
            return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "added token %d is not valid UTF-8", a.id);
        if (a.normalized && p->nfc) {   /* normalized tokens match the normalized text */
            cllm__ntext t;
            memset(&t, 0, sizeof t);
            cllm__nfc(p->comp, p->ncomp, content, strlen(content), 0, &t);
            a.content = cllm__pool_add(&p->pool, t.b.p ? t.b.p : "", t.b.n);
            CLLM_FREE(t.b.p);
            stbds_arrfree(t.os);
            stbds_arrfree(t.oe);
        } else a.content = cllm__pool_add(&p->pool, content, strlen(content));
        if (a.normalized) p->any_normalized_added = 1;
        stbds_arrput(p->added, a);
    }
    if (p->pool.oom) return CLLM__TJ_FAIL(err, CLLM_ERR_NOMEM, "out of memory for the added tokens");
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
static const char *cllm__re_llama3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *cllm__re_qwen2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* normalizer: null | {"type":"NFC"} | {"type":"Sequence","normalizers":[...]} */
static cllm_result cllm__load_normalizer(struct cllm__tok *p, const cJSON *n, cllm_err *err) {
    const char *type = cllm__json_str(n, "type");
    const cJSON *it;
    cllm_result rc;
    if (!n || cJSON_IsNull(n)) return CLLM_OK;
    if (type && strcmp(type, "NFC") == 0) p->nfc = 1;
    else if (type && strcmp(type, "Sequence") == 0) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers"))
            if ((rc = cllm__load_normalizer(p, it, err)) != CLLM_OK) return rc;
    } else return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "normalizer '%s' is not supported "
                                "(supported: none, NFC, Sequence of those)", type ? type : "?");
    return CLLM_OK;
}

/* pre_tokenizer: Split (Llama-3 or Qwen2 regex, Isolated), Digits, ByteLevel, Sequence. */
static cllm_result cllm__load_pretok(struct cllm__tok *p, const cJSON *t, cllm_err *err) {
    const char *type = cllm__json_str(t, "type");
    const char *re = cllm__json_str(cJSON_GetObjectItemCaseSensitive(t, "pattern"), "Regex");
    const char *behavior = cllm__json_str(t, "behavior");
    const cJSON *it;
    cllm__pretok s;
    cllm_result rc;
    memset(&s, 0, sizeof s);
    if (!type) return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "pre_tokenizer without \"type\"");
    if (strcmp(type, "Sequence") == 0) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(t, "pretokenizers"))
            if ((rc = cllm__load_pretok(p, it, err)) != CLLM_OK) return rc;
        return CLLM_OK;
    }
    if (strcmp(type, "Split") == 0) {
        if (!re)
            return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "Split with a String pattern is not supported (only the "
                                 "Llama-3 and Qwen2 regexes)");
        if (strcmp(re, cllm__re_llama3) == 0) s.kind = CLLM__PT_SPLIT_LLAMA3;
        else if (strcmp(re, cllm__re_qwen2) == 0) s.kind = CLLM__PT_SPLIT_QWEN2;
        else return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "Split regex '%.*s' is not supported (only the Llama-3 "
                                  "and Qwen2 patterns)", CLLM__CUT(re, 200));
        if (!behavior || strcmp(behavior, "Isolated") != 0 || cllm__json_flag(t, "invert"))
            return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "Split behavior '%s'%s is not supported (only Isolated, "
                                 "invert false)", behavior ? behavior : "?",
                                 cllm__json_flag(t, "invert") ? " with invert" : "");
    } else if (strcmp(type, "Digits") == 0) {
        s.kind = CLLM__PT_DIGITS;
        s.individual_digits = cllm__json_flag(t, "individual_digits");
    } else if (strcmp(type, "ByteLevel") == 0) {
        s.kind = CLLM__PT_BYTELEVEL;
        s.add_prefix_space = cllm__json_bool(t, "add_prefix_space", 1);
        s.use_regex = cllm__json_bool(t, "use_regex", 1);
    } else return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "pre_tokenizer '%s' is not supported "
                                "(supported: Split, Digits, ByteLevel, Sequence)", type);
    if (p->npretok == CLLM__MAX_PRETOK)
        return CLLM__TJ_FAIL(err, CLLM_ERR_LIMIT, "more than %d pre-tokenizer steps", CLLM__MAX_PRETOK);
    p->pretok[p->npretok++] = s;
    return CLLM_OK;
}

/* post_processor: null | ByteLevel (offsets only) | TemplateProcessing | Sequence of those. Only
   the "single" template matters for one sequence: ids before and after $A. */
static cllm_result cllm__load_post(struct cllm__tok *p, const cJSON *t, cllm_err *err) {
    const char *type = cllm__json_str(t, "type");
    const cJSON *it, *specials = cJSON_GetObjectItemCaseSensitive(t, "special_tokens");
    int seen_a = 0;
    cllm_result rc;
    if (!t || cJSON_IsNull(t) || (type && strcmp(type, "ByteLevel") == 0)) return CLLM_OK;
    if (type && strcmp(type, "Sequence") == 0) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(t, "processors"))
            if ((rc = cllm__load_post(p, it, err)) != CLLM_OK) return rc;
        return CLLM_OK;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0)
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "post_processor '%s' is not supported (supported: ByteLevel, "
                             "TemplateProcessing, Sequence)", type ? type : "?");
    if (p->has_template)
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "more than one TemplateProcessing post_processor");
    p->has_template = 1;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(t, "single")) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const char *name = cllm__json_str(seq ? seq : sp, "id");
        const cJSON *entry = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL, *id_json;
        int **to = seen_a ? &p->post_after : &p->post_before, id;
        if (seq && (!name || strcmp(name, "A") != 0 || seen_a))
            return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "TemplateProcessing single template must contain $A once");
        seen_a |= seq != NULL;
        if (seq) continue;
        if (!sp)
            return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "TemplateProcessing items must be SpecialToken or Sequence");
        if (!entry)
            return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "TemplateProcessing special token '%s' is not in special_tokens",
                                 name ? name : "?");
        cJSON_ArrayForEach(id_json, cJSON_GetObjectItemCaseSensitive(entry, "ids")) {
            if (!cllm__json_id(id_json, &id))
                return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "TemplateProcessing token '%s' has a bad id", name);
            stbds_arrput(*to, id);
        }
    }
    if (!seen_a) return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "TemplateProcessing single template has no $A");
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
static cllm_result cllm__config_token(const cllm_tokenizer *tok, const cJSON *cfg, const char *key, char **str, int *id,
                                      cllm_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(j) ? j->valuestring : cllm__json_str(j, "content");
    *id = s ? cllm__find_token(tok->priv, s, strlen(s)) : -1;
    if (!s) return CLLM_OK;
    if (*id < 0)
        return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer_config.json: %s '%.*s' is not a token of tokenizer.json",
                          key, CLLM__CUT(s, 60));
    *str = cllm__strdup(s);
    return *str ? CLLM_OK : cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
}

static cllm_chat_family cllm__detect_chat_family(struct cllm__tok *p, const char *tmpl);

/* tokenizer_config.json: bos/eos/pad tokens, add_bos_token and the chat template (a string, or a
   list of {"name", "template"} of which "default" is used). */
static cllm_result cllm__load_config(cllm_tokenizer *tok, const cJSON *cfg, cllm_err *err) {
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), *it;
    const cJSON *add_bos = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    cllm_result rc;
    if (!cJSON_IsObject(cfg)) return cllm__fail(err, CLLM_ERR_FORMAT, "tokenizer_config.json: not a JSON object");
    if ((rc = cllm__config_token(tok, cfg, "bos_token", &tok->bos_token, &tok->bos_id, err)) != CLLM_OK) return rc;
    if ((rc = cllm__config_token(tok, cfg, "eos_token", &tok->eos_token, &tok->eos_id, err)) != CLLM_OK) return rc;
    if ((rc = cllm__config_token(tok, cfg, "pad_token", &tok->pad_token, &tok->pad_id, err)) != CLLM_OK) return rc;
    tok->add_bos_token = cJSON_IsBool(add_bos) ? cJSON_IsTrue(add_bos) : -1;
    if (cJSON_IsArray(ct)) {
        const cJSON *pick = NULL;
        cJSON_ArrayForEach(it, ct)
            if (cllm__json_str(it, "name") && strcmp(cllm__json_str(it, "name"), "default") == 0)
                pick = cJSON_GetObjectItemCaseSensitive(it, "template");
        ct = pick;
    }
    if (!cJSON_IsString(ct)) return CLLM_OK;
    tok->chat_template = cllm__strdup(ct->valuestring);
    if (!tok->chat_template) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    tok->chat_family = cllm__detect_chat_family(tok->priv, tok->chat_template);
    return CLLM_OK;
}

/* Are all the ids of the stb_ds array below n? */
static int cllm__ids_below(const int *ids, int n) {
    ptrdiff_t i, count = stbds_arrlen(ids);
    for (i = 0; i < count; i++) if (ids[i] >= n) return 0;
    return 1;
}

/* Reads the parts of tokenizer.json, then tokenizer_config.json when there is one, into tok. */
static cllm_result cllm__load_tokenizer(cllm_tokenizer *tok, const cJSON *root, const char *config_json,
                                        size_t config_len, cllm_err *err) {
    struct cllm__tok *p = tok->priv;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *truncation = cJSON_GetObjectItemCaseSensitive(root, "truncation");
    const cJSON *padding = cJSON_GetObjectItemCaseSensitive(root, "padding");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *it;
    const char *decoder = cllm__json_str(cJSON_GetObjectItemCaseSensitive(root, "decoder"), "type");
    int max_added = -1, id, i;
    cJSON *config;
    cllm_result rc;
    rc = cllm__load_normalizer(p, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), err);
    if (rc != CLLM_OK) return rc;
    if (p->nfc && !cllm__build_compose(p)) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (!pre || cJSON_IsNull(pre))
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "no pre_tokenizer; only byte-level BPE (a ByteLevel "
                             "pre-tokenizer) is supported");
    if ((rc = cllm__load_pretok(p, pre, err)) != CLLM_OK) return rc;
    for (i = 0; i < p->npretok - 1 && p->pretok[i].kind != CLLM__PT_BYTELEVEL; i++) {}
    if (p->npretok == 0 || p->pretok[p->npretok - 1].kind != CLLM__PT_BYTELEVEL || i < p->npretok - 1)
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "the pre_tokenizer must end with one ByteLevel step "
                             "(byte-level BPE)");
    if ((rc = cllm__load_post(p, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), err)) != CLLM_OK) return rc;
    if (!decoder || strcmp(decoder, "ByteLevel") != 0)
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "decoder '%s' is not supported (only ByteLevel)",
                             decoder ? decoder : "null");
    if (truncation && !cJSON_IsNull(truncation))
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "truncation is not supported (set it to null)");
    if (padding && !cJSON_IsNull(padding))
        return CLLM__TJ_FAIL(err, CLLM_ERR_UNSUPPORTED, "padding is not supported (set it to null)");
    cJSON_ArrayForEach(it, added)
        if (cllm__json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id) && id > max_added) max_added = id;
    rc = cllm__load_bpe(p, cJSON_GetObjectItemCaseSensitive(root, "model"), max_added, cJSON_GetArraySize(added), err);
    if (rc != CLLM_OK || (rc = cllm__load_added(p, added, err)) != CLLM_OK) return rc;
    if (!cllm__ids_below(p->post_before, p->n_ids) || !cllm__ids_below(p->post_after, p->n_ids))
        return CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "TemplateProcessing uses an id outside the vocabulary");
    cllm__index_added(p);
    tok->n_ids = p->n_ids;
    if (!config_json) return CLLM_OK;
    config = cJSON_ParseWithLength(config_json, config_len);
    rc = cllm__load_config(tok, config, err);
    cJSON_Delete(config);
    return rc;
}

/* Whatever the encoder does not implement fails with CLLM_ERR_UNSUPPORTED naming the feature (e.g. a
   pre-tokenizer regex other than the GPT-2, Llama-3 and Qwen2 ones), never with a different encoding. */
CLLMDEF cllm_result cllm_tokenizer_load_json(cllm_tokenizer *tok, const char *json, size_t len, const char *config_json,
                                             size_t config_len, cllm_err *err) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    cllm_result rc;
    memset(tok, 0, sizeof *tok);
    tok->bos_id = tok->eos_id = tok->pad_id = tok->add_bos_token = -1;
    if (!root || !cJSON_IsObject(root)) rc = CLLM__TJ_FAIL(err, CLLM_ERR_FORMAT, "not valid JSON");
    else if (!(tok->priv = (struct cllm__tok *)cllm__calloc(1, sizeof(struct cllm__tok))))
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else rc = cllm__load_tokenizer(tok, root, config_json, config_len, err);
    cJSON_Delete(root);
    if (rc != CLLM_OK) {
        cllm_tokenizer_free(tok);
        tok->bos_id = tok->eos_id = tok->pad_id = tok->add_bos_token = -1;
        return rc;
    }
    return cllm__succeed(err);
}

CLLMDEF cllm_result cllm_tokenizer_load(cllm_tokenizer *tok, const char *path_or_dir, cllm_err *err) {
    char path[4096], cpath[4096];
    char *json = NULL, *cfg = NULL;
    size_t len = 0, clen = 0, n = strlen(path_or_dir);
    const char *slash = strrchr(path_or_dir, '/');
    cllm_result rc;
    memset(tok, 0, sizeof *tok);
    if (n + 32 > sizeof path) return cllm__fail(err, CLLM_ERR_ARG, "tokenizer path too long");
    if (n > 9 && strcmp(path_or_dir + n - 9, ".tiktoken") == 0)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s is a tiktoken rank file: it encodes and counts tokens "
                          "(cllm_tiktoken_load) but has no chat template; here a tokenizer.json is needed",
                          path_or_dir);
    if (n > 5 && strcmp(path_or_dir + n - 5, ".json") == 0) {   /* a file, with tokenizer_config.json beside it */
        snprintf(path, sizeof path, "%s", path_or_dir);
        snprintf(cpath, sizeof cpath, "%.*s%stokenizer_config.json", slash ? (int)(slash - path_or_dir) : 0,
                 path_or_dir, slash ? "/" : "");
    } else {                                                   /* a directory */
        snprintf(path, sizeof path, "%s/tokenizer.json", path_or_dir);
        snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", path_or_dir);
    }
    rc = cllm_read_file(path, &json, &len, err);
    if (rc == CLLM_OK && cllm__file_exists(cpath)) rc = cllm_read_file(cpath, &cfg, &clen, err);
    if (rc == CLLM_OK && (rc = cllm_tokenizer_load_json(tok, json, len, cfg, clen, err)) != CLLM_OK && err) {
        char msg[CLLM_ERRMSG_SIZE];   /* name the file in the message */
        snprintf(msg, sizeof msg, "%.*s: %.*s", CLLM__CUT(path_or_dir, 150), CLLM__CUT(err->msg, 350));
        memcpy(err->msg, msg, sizeof msg);
    }
    CLLM_FREE(json);
    CLLM_FREE(cfg);
    return rc;
}

CLLMDEF int cllm_tokenizer_token_id(const cllm_tokenizer *tok, const char *token) {
    if (!tok || !tok->priv || !token) return -1;
    return cllm__find_token(tok->priv, token, strlen(token));
}

/* The bytes may be part of a UTF-8 character: byte-level tokens cut text anywhere. */
CLLMDEF const char *cllm_tokenizer_id_bytes(const cllm_tokenizer *tok, int id, size_t *len) {
    const struct cllm__tok *p = tok ? tok->priv : NULL;
    int known = p && id >= 0 && id < p->n_ids && p->tok_bytes[id].off != CLLM__NO_STR;
    if (len) *len = known ? p->tok_bytes[id].len : 0;
    return known ? p->pool.p + p->tok_bytes[id].off : NULL;
}

/* ---- Encoding: added tokens ------------------------------------------------------------------ */

/* A segment [s, e) of the text: an added token (id) or ordinary text (id -1). */
typedef struct cllm__seg {
    size_t s, e;
    int id;
} cllm__seg;

static void cllm__seg_put(cllm__seg **out, size_t s, size_t e, int id) {
    cllm__seg seg;
    seg.s = s;
    seg.e = e;
    seg.id = id;
    stbds_arrput(*out, seg);
}

/* Does s[..i) end in a White_Space character? Sets *start to where that character starts. */
static int cllm__space_before(const char *s, size_t i, size_t *start) {
    size_t j = i;
    uint32_t cp;
    if (i == 0) return 0;
    while (j > 0 && ((unsigned char)s[j - 1] & 0xC0) == 0x80) j--;
    if (j > 0) j--;
    cllm__utf8_next((const unsigned char *)s + j, i - j, &cp, NULL);
    if (!(cllm__uni_class(cp) & CLLM__U_SPACE)) return 0;
    *start = j;
    return 1;
}

/* Cuts the added tokens whose `normalized` flag equals `normalized` out of s[from, to):
   leftmost-longest matches, then lstrip / rstrip widen a match over White_Space on its left /
   right exactly as HF's AddedVocabulary::find_matches does. */
static void cllm__split_added(const struct cllm__tok *p, const char *s, size_t from, size_t to, int normalized,
                              cllm__seg **out) {
    size_t i, next, start_offset = from;
    for (i = from; i < to; i = next) {
        const cllm__added *hit = NULL;
        size_t ms = i, stop, space;
        unsigned char c = (unsigned char)s[i];
        int k, len;
        uint32_t cp;
        for (k = p->bucket[c]; k < p->bucket[c + 1] && !hit; k++) {
            const cllm__added *a = &p->added[k];
            int fits = a->normalized == normalized && a->content.len <= to - i;
            if (fits && memcmp(s + i, p->pool.p + a->content.off, a->content.len) == 0) hit = a;
        }
        next = i + 1;
        if (!hit) continue;
        next = stop = i + hit->content.len;   /* the search goes on after the literal match */
        while (hit->lstrip && cllm__space_before(s, ms, &space) && space >= from) ms = space;
        if (hit->lstrip && ms < start_offset) ms = start_offset;
        while (hit->rstrip && stop < to) {
            len = cllm__utf8_next((const unsigned char *)s + stop, to - stop, &cp, NULL);
            if (!len || !(cllm__uni_class(cp) & CLLM__U_SPACE)) break;
            stop += (size_t)len;
        }
        if (start_offset < ms) cllm__seg_put(out, start_offset, ms, -1);
        cllm__seg_put(out, ms, stop, hit->id);
        start_offset = stop;
    }
    if (start_offset < to) cllm__seg_put(out, start_offset, to, -1);
}

/* ---- Encoding: pre-tokenizer regexes as scanners ---------------------------------------------- */
/* Each alternation is tried in order at position i, with the backtracking the regex engine (Oniguruma in HF
   tokenizers) would do written out; the result is the end of the match. Every alternation of the three patterns
   matches at least one character at any position, so the matches tile the piece. */

/* The character classes of the regexes; OTHER = not \s, \p{L}, \p{N}. */
typedef enum cllm__cclass { CLLM__C_LETTER, CLLM__C_NUMBER, CLLM__C_SPACE, CLLM__C_OTHER, CLLM__C_CRLF } cllm__cclass;

/* Is the character at s[i] (i < n, valid UTF-8) of class `what`? */
static int cllm__is(const unsigned char *s, size_t n, size_t i, cllm__cclass what) {
    uint32_t cp;
    unsigned k;
    if (i >= n) return 0;
    cllm__utf8_next(s + i, n - i, &cp, NULL);
    if (what == CLLM__C_CRLF) return cp == '\r' || cp == '\n';
    k = cllm__uni_class(cp);
    if (what == CLLM__C_LETTER) return (k & CLLM__U_LETTER) != 0;
    if (what == CLLM__C_NUMBER) return (k & CLLM__U_NUMBER) != 0;
    if (what == CLLM__C_SPACE) return (k & CLLM__U_SPACE) != 0;
    return k == 0;
}

static size_t cllm__next_char(const unsigned char *s, size_t n, size_t i) {
    uint32_t cp;
    return i + (size_t)cllm__utf8_next(s + i, n - i, &cp, NULL);
}

/* End of the run of `what` characters from i, at most max characters (0: unlimited). */
static size_t cllm__run(const unsigned char *s, size_t n, size_t i, cllm__cclass what, int max) {
    int count;
    for (count = 0; i < n && (max == 0 || count < max) && cllm__is(s, n, i, what); count++)
        i = cllm__next_char(s, n, i);
    return i;
}

/* 's 't 're 've 'm 'll 'd after the apostrophe at s[i-1]: returns the suffix length or 0. With ci (Oniguruma's (?i))
   letters match either case, and 's' also matches U+017F LONG S, whose case fold is 's'. */
static size_t cllm__contraction(const unsigned char *s, size_t n, size_t i, int ci) {
    static const char *suffix[7] = { "s", "t", "re", "ve", "m", "ll", "d" };
    int k;
    for (k = 0; k < 7; k++) {
        const char *q = suffix[k];
        size_t j = i;
        for (; *q; q++) {
            if (j < n && (s[j] == (unsigned char)*q || (ci && s[j] == (unsigned char)(*q - 32)))) j++;
            else if (ci && *q == 's' && j + 1 < n && s[j] == 0xC5 && s[j + 1] == 0xBF) j += 2;
            else break;
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
    while (((s[last] & 0xC0) == 0x80)) last--;   /* start of the run's last character */
    return last > i ? last : w;
}

/* The Split regexes of Llama-3's tokenizer.json (max_digits 3) and Qwen2's (max_digits 1):
   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
   \s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t cllm__match_llama3(const unsigned char *s, size_t n, size_t i, int max_digits) {
    size_t j, nx = cllm__next_char(s, n, i);
    int letter = cllm__is(s, n, i, CLLM__C_LETTER), number = cllm__is(s, n, i, CLLM__C_NUMBER);
    if (s[i] == '\'' && (j = cllm__contraction(s, n, i + 1, 1)) > 0) return i + 1 + j;
    if (!letter && !number && !cllm__is(s, n, i, CLLM__C_CRLF) && cllm__is(s, n, nx, CLLM__C_LETTER))
        return cllm__run(s, n, nx, CLLM__C_LETTER, 0);
    if (letter) return cllm__run(s, n, i, CLLM__C_LETTER, 0);
    if (number) return cllm__run(s, n, i, CLLM__C_NUMBER, max_digits);
    j = (s[i] == ' ' && cllm__is(s, n, nx, CLLM__C_OTHER)) ? nx : i;
    if (cllm__is(s, n, j, CLLM__C_OTHER)) return cllm__run(s, n, cllm__run(s, n, j, CLLM__C_OTHER, 0), CLLM__C_CRLF, 0);
    if (cllm__is(s, n, i, CLLM__C_SPACE)) return cllm__match_space(s, n, i, 1);
    return nx;   /* unreachable: every character has a class */
}

/* GPT-2's regex (ByteLevel with use_regex):
   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t cllm__match_gpt2(const unsigned char *s, size_t n, size_t i) {
    static const cllm__cclass kinds[3] = { CLLM__C_LETTER, CLLM__C_NUMBER, CLLM__C_OTHER };
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
typedef struct cllm__piece {
    size_t s, e, anchor;
    int prefix;
} cllm__piece;

static void cllm__piece_put(cllm__piece **out, size_t s, size_t e, size_t anchor, int prefix) {
    cllm__piece q;
    if (s == e && !prefix) return;
    q.s = s;
    q.e = e;
    q.anchor = anchor;
    q.prefix = prefix;
    stbds_arrput(*out, q);
}

/* Digits (HF pre_tokenizers/digits.rs): every numeric character alone (individual_digits) or
   runs of them, and the text between them, become pieces. */
static void cllm__pretok_digits(const unsigned char *t, cllm__piece in, int individual, cllm__piece **out) {
    size_t i, j, start = in.s;
    for (i = in.s; i < in.e; i = j) {
        j = cllm__next_char(t, in.e, i);
        if (!cllm__is(t, in.e, i, CLLM__C_NUMBER)) continue;
        if (!individual) j = cllm__run(t, in.e, i, CLLM__C_NUMBER, 0);
        cllm__piece_put(out, start, i, in.anchor, 0);
        cllm__piece_put(out, i, j, in.anchor, 0);
        start = j;
    }
    cllm__piece_put(out, start, in.e, in.anchor, 0);
}

/* Split (Isolated) or ByteLevel (HF pre_tokenizers/split.rs, byte_level.rs): every regex match
   becomes a piece. ByteLevel's add_prefix_space first puts a space in front of a piece that does
   not start with one; the regex then sees that space (it may end up alone, or join the first word). */
static void cllm__pretok_regex(const cllm__pretok *st, const unsigned char *t, cllm__piece in, cllm__sb *tmp,
                               cllm__piece **out) {
    const unsigned char *s = t + in.s;
    size_t n = in.e - in.s, i, j;
    int byte_level = st->kind == CLLM__PT_BYTELEVEL;
    int pre = in.prefix || (byte_level && st->add_prefix_space && !(n > 0 && s[0] == ' '));
    if (byte_level && !st->use_regex) {
        cllm__piece_put(out, in.s, in.e, in.anchor, pre);
        return;
    }
    if (pre) {   /* the regex runs on " " + the piece */
        tmp->n = 0;
        cllm__sb_putc(tmp, ' ');
        cllm__sb_putn(tmp, (const char *)s, n);
        if (tmp->oom) return;
        s = (const unsigned char *)tmp->p;
        n++;
    }
    for (i = 0; i < n; i = j) {
        if (byte_level) j = cllm__match_gpt2(s, n, i);
        else j = cllm__match_llama3(s, n, i, st->kind == CLLM__PT_SPLIT_LLAMA3 ? 3 : 1);
        if (pre) cllm__piece_put(out, in.s + (i ? i - 1 : 0), in.s + j - 1, in.anchor, i == 0);
        else cllm__piece_put(out, in.s + i, in.s + j, in.anchor, 0);
    }
}

/* ---- Encoding: byte-level BPE ----------------------------------------------------------------- */

/* A queued merge: join the symbol at pos with its right neighbour into id, with priority rank.
   The heap pops the lowest rank, then the leftmost position (HF's word.rs merge_all). */
typedef struct cllm__mq {
    int rank, pos, id;
} cllm__mq;

static int cllm__mq_before(const cllm__mq *a, const cllm__mq *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void cllm__heap_push(cllm__mq **heap, int rank, int pos, int id) {
    cllm__mq m, *h;
    size_t i;
    m.rank = rank;
    m.pos = pos;
    m.id = id;
    stbds_arrput(*heap, m);
    h = *heap;
    i = (size_t)stbds_arrlen(h) - 1;
    while (i > 0 && cllm__mq_before(&m, &h[(i - 1) / 2])) {   /* move parents down, then place m */
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = m;
}

static cllm__mq cllm__heap_pop(cllm__mq *h) {
    size_t n = (size_t)stbds_arrlen(h) - 1, i = 0, child;
    cllm__mq top = h[0], last = h[n];
    stbds_arrsetlen(h, n);
    while ((child = 2 * i + 1) < n) {   /* move the smaller child up until `last` fits */
        if (child + 1 < n && cllm__mq_before(&h[child + 1], &h[child])) child++;
        if (!cllm__mq_before(&h[child], &last)) break;
        h[i] = h[child];
        i = child;
    }
    if (n) h[i] = last;
    return top;
}

/* One symbol of the word being merged (HF's word.rs Symbol). */
typedef struct cllm__sym {
    int id, prev, next;   /* prev / next: neighbouring symbols, -1 at the ends */
    size_t start, len;    /* its bytes in the piece; len 0 once merged into its left neighbour */
} cllm__sym;

/* Work arrays reused across pieces (stb_ds arrays), and the piece being merged. */
typedef struct cllm__bpe_work {
    cllm__sym *sym;
    cllm__mq *heap;
    const unsigned char *piece;
} cllm__bpe_work;

/* The merge of symbol pos with its right neighbour: its rank (-1: they do not merge) and, in *id, the token it makes.
   tokenizer.json looks the pair of ids up in its merges; tiktoken looks the pair's bytes up in its ranks. */
typedef long (*cllm__pair_fn)(const void *model, const cllm__bpe_work *w, int pos, int *id);

static void cllm__queue_merge(const void *model, cllm__pair_fn pair, cllm__bpe_work *w, int pos) {
    int id;
    long rank = pair(model, w, pos, &id);
    if (rank >= 0) cllm__heap_push(&w->heap, (int)rank, pos, id);
}

/* The merge loop of both BPEs (HF's models/bpe/word.rs merge_all; tiktoken's byte_pair_merge) over the symbols of
   w->sym: repeatedly apply the queued merge of lowest rank (leftmost on ties), skipping queue entries that went stale.
   Appends each token's id and the index of its first byte in the piece. */
static void cllm__merge_all(const void *model, cllm__pair_fn pair, cllm__bpe_work *w, int **ids, size_t **starts) {
    cllm__sym *sym = w->sym;
    int n = (int)stbds_arrlen(w->sym), i, id;
    if (n == 0) return;
    sym[n - 1].next = -1;
    stbds_arrsetlen(w->heap, 0);
    for (i = 0; i + 1 < n; i++) cllm__queue_merge(model, pair, w, i);
    while (stbds_arrlen(w->heap) > 0) {
        cllm__mq top = cllm__heap_pop(w->heap);
        cllm__sym *left = &sym[top.pos], *right;
        if (left->len == 0 || left->next < 0) continue;
        if (pair(model, w, top.pos, &id) < 0 || id != top.id) continue;   /* stale: the pair changed since queued */
        right = &sym[left->next];
        left->id = top.id;
        left->len += right->len;
        right->len = 0;
        left->next = right->next;
        if (right->next >= 0) sym[right->next].prev = top.pos;
        if (left->prev >= 0) cllm__queue_merge(model, pair, w, left->prev);
        if (left->next >= 0) cllm__queue_merge(model, pair, w, top.pos);
    }
    for (i = 0; i >= 0; i = sym[i].next) {
        stbds_arrput(*ids, sym[i].id);
        stbds_arrput(*starts, sym[i].start);
    }
}

static long cllm__merges_pair(const void *model, const cllm__bpe_work *w, int pos, int *id) {
    const struct cllm__tok *p = (const struct cllm__tok *)model;
    const cllm__merge *m = cllm__merge_get(p->merges, p->nmerge_slots, w->sym[pos].id, w->sym[w->sym[pos].next].id);
    *id = m ? m->id : -1;
    return m ? m->rank : -1;
}

/* BPE of the bytes b[0..n), as HF's BPE model with its cache off (models/bpe/word.rs): one symbol per byte (unknown
   bytes become unk, fused or dropped), then the merges by rank. */
static void cllm__bpe(const struct cllm__tok *p, const unsigned char *b, size_t n, cllm__bpe_work *w, int **ids,
                      size_t **starts) {
    int ns = 0, i;
    long whole;
    if (n == 0) return;
    whole = p->ignore_merges ? cllm__smap_get(&p->by_bytes, p->pool.p, p->tok_bytes, (const char *)b, n) : -1;
    if (whole >= 0) {   /* ignore_merges: a piece that is itself a token is kept whole */
        stbds_arrput(*ids, (int)whole);
        stbds_arrput(*starts, 0);
        return;
    }
    stbds_arrsetlen(w->sym, 0);
    for (i = 0; i < (int)n; i++) {
        cllm__sym s, *last = ns > 0 ? &w->sym[ns - 1] : NULL;
        int known = p->byte_id[b[i]] >= 0;
        s.id = known ? p->byte_id[b[i]] : p->unk_id;   /* a byte not in the vocabulary: unk, or dropped */
        if (s.id < 0) continue;
        if (!known && p->fuse_unk && last && last->id == p->unk_id && last->start + last->len == (size_t)i) {
            last->len++;
            continue;
        }
        s.prev = ns - 1;
        s.next = ns + 1;
        s.start = (size_t)i;
        s.len = 1;
        stbds_arrput(w->sym, s);
        ns++;
    }
    cllm__merge_all(p, cllm__merges_pair, w, ids, starts);
}

/* ---- Encoding: the whole pipeline ------------------------------------------------------------ */

typedef struct cllm__enc {
    cllm__ntext     nt;            /* normalized text, with the original range of each byte */
    cllm__seg      *raw, *norm;    /* added-token splits                                    */
    cllm__piece    *pa, *pb;       /* pre-tokenizer pieces (ping-pong)                      */
    cllm__sb        tmp, bytes;
    cllm__bpe_work  w;
    cllm__seg      *out;           /* the tokens with their ranges in the original text     */
    int            *pids;          /* per-piece BPE output                                  */
    size_t         *pstarts;
} cllm__enc;

static void cllm__enc_free(cllm__enc *e) {
    cllm__sb_free(&e->nt.b);
    stbds_arrfree(e->nt.os);
    stbds_arrfree(e->nt.oe);
    stbds_arrfree(e->raw);
    stbds_arrfree(e->norm);
    stbds_arrfree(e->pa);
    stbds_arrfree(e->pb);
    cllm__sb_free(&e->tmp);
    cllm__sb_free(&e->bytes);
    stbds_arrfree(e->w.sym);
    stbds_arrfree(e->w.heap);
    stbds_arrfree(e->out);
    stbds_arrfree(e->pids);
    stbds_arrfree(e->pstarts);
}

/* The post_processor's tokens (the ids of an stb_ds array), at offsets [0, 0). */
static void cllm__emit_post(cllm__enc *e, const int *ids) {
    ptrdiff_t i, n = stbds_arrlen(ids);
    for (i = 0; i < n; i++) cllm__seg_put(&e->out, 0, 0, ids[i]);
}

/* Steps 3-4: pre-tokenizes and BPE-encodes the normalized text nt[s, t), emitting tokens with the
   original offsets of their first and last byte. */
static void cllm__encode_text(const struct cllm__tok *p, cllm__enc *e, size_t s, size_t t) {
    const unsigned char *nb = (const unsigned char *)e->nt.b.p;
    int k, count;
    size_t i;
    stbds_arrsetlen(e->pa, 0);
    cllm__piece_put(&e->pa, s, t, s, 0);
    for (k = 0; k < p->npretok; k++) {   /* each step splits every piece of the previous one */
        cllm__piece *swap;
        stbds_arrsetlen(e->pb, 0);
        for (i = 0; i < (size_t)stbds_arrlen(e->pa); i++) {
            if (p->pretok[k].kind == CLLM__PT_DIGITS)
                cllm__pretok_digits(nb, e->pa[i], p->pretok[k].individual_digits, &e->pb);
            else cllm__pretok_regex(&p->pretok[k], nb, e->pa[i], &e->tmp, &e->pb);
        }
        swap = e->pa;
        e->pa = e->pb;
        e->pb = swap;
    }
    for (i = 0; i < (size_t)stbds_arrlen(e->pa); i++) {
        cllm__piece q = e->pa[i];
        e->bytes.n = 0;
        if (q.prefix) cllm__sb_putc(&e->bytes, ' ');
        cllm__sb_putn(&e->bytes, (const char *)nb + q.s, q.e - q.s);
        stbds_arrsetlen(e->pids, 0);
        stbds_arrsetlen(e->pstarts, 0);
        cllm__bpe(p, (const unsigned char *)e->bytes.p, e->bytes.n, &e->w, &e->pids, &e->pstarts);
        count = (int)stbds_arrlen(e->pids);
        for (k = 0; k < count; k++) {
            size_t b0 = e->pstarts[k], b1 = (k + 1 < count ? e->pstarts[k + 1] : e->bytes.n) - 1;
            /* byte index in the piece -> index in nt (the prefix space maps to the anchor) */
            size_t n0 = q.prefix ? (b0 == 0 ? q.anchor : q.s + b0 - 1) : q.s + b0;
            size_t n1 = q.prefix ? (b1 == 0 ? q.anchor : q.s + b1 - 1) : q.s + b1;
            cllm__seg_put(&e->out, e->nt.os[n0], e->nt.oe[n1], e->pids[k]);
        }
    }
}

/* Steps 2-4 for a stretch of ordinary text: normalizes it (the offsets stay those of the original
   text), cuts out the added tokens with normalized: true, and encodes the rest. */
static void cllm__encode_segment(const struct cllm__tok *p, cllm__enc *e, const char *text, cllm__seg sg) {
    size_t start = e->nt.b.n, b;
    if (p->nfc) cllm__nfc(p->comp, p->ncomp, text + sg.s, sg.e - sg.s, sg.s, &e->nt);
    else for (b = sg.s; b < sg.e; b++) cllm__ntext_add(&e->nt, text + b, 1, b, b + 1);
    stbds_arrsetlen(e->norm, 0);
    if (p->any_normalized_added) cllm__split_added(p, e->nt.b.p, start, e->nt.b.n, 1, &e->norm);
    else cllm__seg_put(&e->norm, start, e->nt.b.n, -1);
    for (b = 0; b < (size_t)stbds_arrlen(e->norm); b++) {
        cllm__seg q = e->norm[b];
        if (q.id >= 0) cllm__seg_put(&e->out, e->nt.os[q.s], e->nt.oe[q.e - 1], q.id);
        else if (q.e > q.s) cllm__encode_text(p, e, q.s, q.e);
    }
}

/* What both encoders (tokenizer.json's, tiktoken's) refuse before they start: nothing loaded, text of 1 GB or more,
   invalid UTF-8 (HF and tiktoken take only strings). who names the encoder in messages. */
static cllm_result cllm__encode_begin(const char *who, int loaded, const char *text, size_t len, int **ids, int *n,
                                      int **offsets, cllm_err *err) {
    size_t bad;
    *ids = NULL;
    *n = 0;
    if (offsets) *offsets = NULL;
    if (!loaded) return cllm__fail(err, CLLM_ERR_ARG, "%s: not loaded", who);
    if (len > (size_t)INT_MAX / 2)
        return cllm__fail(err, CLLM_ERR_LIMIT, "%s: text of %zu bytes is too long (limit %d)", who, len, INT_MAX / 2);
    if ((bad = cllm__utf8_check(text, len)) != len)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: the text is not valid UTF-8 at byte %zu", who, bad + 1);
    return CLLM_OK;
}

/* Hands the tokens over as plain CLLM_MALLOC buffers: *ids, and *offsets (if asked) as [start, end) byte pairs. */
static cllm_result cllm__encode_end(const cllm__seg *tokens, int oom, const char *who, int **ids, int *n, int **offsets,
                                    cllm_err *err) {
    int count = (int)stbds_arrlen(tokens), i;
    int *out_ids = oom ? NULL : (int *)cllm__calloc((size_t)count + 1, sizeof(int));
    int *out_offsets = out_ids && offsets ? (int *)cllm__calloc(2 * (size_t)count + 1, sizeof(int)) : NULL;
    if (!out_ids || (offsets && !out_offsets)) {
        CLLM_FREE(out_ids);
        return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", who);
    }
    for (i = 0; i < count; i++) {
        out_ids[i] = tokens[i].id;
        if (offsets) out_offsets[2 * i] = (int)tokens[i].s;
        if (offsets) out_offsets[2 * i + 1] = (int)tokens[i].e;
    }
    *ids = out_ids;
    *n = count;
    if (offsets) *offsets = out_offsets;
    return cllm__succeed(err);
}

/* Invalid UTF-8 is rejected (HF accepts only strings). Special and added tokens written in the text
   are matched as tokens (HF's default). Offsets are bytes of the original text: after NFC a token
   maps to the bytes it came from; the post_processor's tokens get [0, 0). */
CLLMDEF cllm_result cllm_tokenizer_encode(const cllm_tokenizer *tok, const char *text, size_t len,
                                          int add_special_tokens, int **ids, int *n, int **offsets, cllm_err *err) {
    const struct cllm__tok *p = tok ? tok->priv : NULL;
    cllm__enc e;
    size_t a;
    cllm_result rc = cllm__encode_begin("tokenizer", p != NULL, text, len, ids, n, offsets, err);
    if (rc != CLLM_OK) return rc;
    memset(&e, 0, sizeof e);
    if (add_special_tokens) cllm__emit_post(&e, p->post_before);   /* 5. the post_processor's tokens ... */
    cllm__split_added(p, text, 0, len, 0, &e.raw);   /* 1. added tokens on the raw text */
    for (a = 0; a < (size_t)stbds_arrlen(e.raw); a++) {
        if (e.raw[a].id >= 0) cllm__seg_put(&e.out, e.raw[a].s, e.raw[a].e, e.raw[a].id);
        else cllm__encode_segment(p, &e, text, e.raw[a]);
    }
    if (add_special_tokens) cllm__emit_post(&e, p->post_after);    /* ... around the text */
    rc = cllm__encode_end(e.out, e.nt.b.oom || e.tmp.oom || e.bytes.oom, "tokenizer", ids, n, offsets, err);
    cllm__enc_free(&e);
    return rc;
}

/* ---- Decoding -------------------------------------------------------------------------------- */

/* Appends the bytes of ids (skipping unknown ids and, if asked, special tokens). */
static void cllm__decode_bytes(const struct cllm__tok *p, const int *ids, int n, int skip_special, cllm__sb *out) {
    int i;
    for (i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= p->n_ids || p->tok_bytes[id].off == CLLM__NO_STR) continue;
        if (skip_special && p->special[id]) continue;
        cllm__sb_putn(out, p->pool.p + p->tok_bytes[id].off, p->tok_bytes[id].len);
    }
}

/* The text of decoded bytes (raw, freed here): allocated, NUL-terminated, invalid UTF-8 as U+FFFD (lossy). */
static cllm_result cllm__decoded_text(cllm__sb *raw, const char *who, char **text, size_t *len, cllm_err *err) {
    cllm__sb out = { NULL, 0, 0, 0 };
    size_t n_out;
    cllm__utf8_lossy((const unsigned char *)raw->p, raw->n, 1, &out, NULL);
    out.oom |= raw->oom;
    cllm__sb_free(raw);
    n_out = out.n;
    *text = cllm__sb_take(&out);
    if (!*text) return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", who);
    if (len) *len = n_out;
    return cllm__succeed(err);
}

/* HF's decode with the ByteLevel decoder: the tokens' bytes, decoded as Rust's from_utf8_lossy does
   (one U+FFFD per maximal invalid subsequence). Unknown ids are skipped, as in HF. */
CLLMDEF cllm_result cllm_tokenizer_decode(const cllm_tokenizer *tok, const int *ids, int n, int skip_special,
                                          char **text, size_t *len, cllm_err *err) {
    cllm__sb raw = { NULL, 0, 0, 0 };
    *text = NULL;
    if (len) *len = 0;
    if (!tok || !tok->priv) return cllm__fail(err, CLLM_ERR_ARG, "tokenizer: not loaded");
    cllm__decode_bytes(tok->priv, ids, n, skip_special, &raw);
    return cllm__decoded_text(&raw, "tokenizer", text, len, err);
}

CLLMDEF void cllm_decode_stream_init(cllm_decode_stream *s, const cllm_tokenizer *tok, int skip_special) {
    memset(s, 0, sizeof *s);
    s->tok = tok;
    s->skip_special = skip_special;
}

/* Decodes the pending bytes and the new ids' bytes; a character still unfinished stays pending until
   its last byte arrives, so the pieces concatenate to what cllm_tokenizer_decode gives. */
static cllm_result cllm__stream_step(cllm_decode_stream *s, const int *ids, int n, int final, const char **out,
                                     size_t *out_len, cllm_err *err) {
    cllm__sb raw = { NULL, 0, 0, 0 }, o = { NULL, 0, 0, 0 };
    size_t used;
    if (!s->tok || !s->tok->priv) return cllm__fail(err, CLLM_ERR_ARG, "decode stream: tokenizer not loaded");
    cllm__sb_putn(&raw, (const char *)s->pending, (size_t)s->n_pending);
    cllm__decode_bytes(s->tok->priv, ids, n, s->skip_special, &raw);
    o.p = s->buf;                         /* the output buffer is reused from call to call */
    o.cap = s->cap;
    cllm__sb_putn(&o, "", 0);             /* allocates it and ends it with a NUL */
    used = cllm__utf8_lossy((const unsigned char *)raw.p, raw.n, final, &o, NULL);
    s->n_pending = (int)(raw.n - used);   /* at most 3 bytes of one character */
    if (s->n_pending) memcpy(s->pending, raw.p + used, (size_t)s->n_pending);
    o.oom |= raw.oom;
    cllm__sb_free(&raw);
    s->buf = o.p;
    s->cap = o.cap;
    if (o.oom) return cllm__fail(err, CLLM_ERR_NOMEM, "decode stream: out of memory");
    *out = o.p;
    *out_len = o.n;
    return cllm__succeed(err);
}

CLLMDEF cllm_result cllm_decode_stream_push(cllm_decode_stream *s, int id, const char **out, size_t *out_len,
                                            cllm_err *err) {
    return cllm__stream_step(s, &id, 1, 0, out, out_len, err);
}

CLLMDEF cllm_result cllm_decode_stream_flush(cllm_decode_stream *s, const char **out, size_t *out_len, cllm_err *err) {
    return cllm__stream_step(s, NULL, 0, 1, out, out_len, err);
}

CLLMDEF void cllm_decode_stream_free(cllm_decode_stream *s) {
    CLLM_FREE(s->buf);
    memset(s, 0, sizeof *s);
}

/* ---- tiktoken rank files: the encodings CollabLLM counts tokens with (cl100k_base) --------------- */
/* tiktoken describes an encoding by a rank file, a split pattern and its special tokens. The rank file NAME.tiktoken
   has one line per mergeable token: its bytes in base64, a space, its rank, which is both its id and its merge
   priority. encode_ordinary(text):
     1. the split pattern cuts the text into pieces (the scanners above: cl100k_base's pattern is Llama-3's, character
        for character; r50k_base's and p50k's are GPT-2's);
     2. a piece that is itself a token becomes that token;
     3. otherwise its bytes merge pairwise, always the adjacent pair whose concatenation has the lowest rank (leftmost
        on ties), until no adjacent concatenation is a token; each part left is a token, its rank its id.
   Special-token text ("<|endoftext|>") is ordinary text there. Python's tiktoken later respelled the patterns for speed
   (0.6: possessive quantifiers; 0.8: also `\s++$`); `make crosscheck` runs those spellings in tiktoken's own engine
   too, and their ids are the published pattern's (tests/crosscheck_tiktoken.js). */

#define CLLM__TIKTOKEN_MAX_FILE_BYTES  (64L << 20)   /* cl100k_base.tiktoken has 1.7 MB                    */
#define CLLM__TIKTOKEN_MAX_IDS         (1 << 24)     /* ids below 16,777,216, as the tokenizer's           */
#define CLLM__TIKTOKEN_MAX_TOKEN_BYTES 1024          /* the published tokens have 128 at most              */

typedef enum cllm__tiktoken_split {
    CLLM__TIKTOKEN_SPLIT_GPT2,     /* r50k_base, p50k_base, p50k_edit: cllm__match_gpt2                 */
    CLLM__TIKTOKEN_SPLIT_CL100K    /* cl100k_base: cllm__match_llama3 with runs of up to 3 digits      */
} cllm__tiktoken_split;

typedef struct cllm__tiktoken_encoding {
    const char          *name;
    cllm__tiktoken_split split;
    int                  n_specials;
    struct { const char *text; int id; } specials[5];
} cllm__tiktoken_encoding;

/* The special tokens of each encoding, as tiktoken_ext/openai_public.py defines them. */
static const cllm__tiktoken_encoding cllm__tiktoken_encodings[] = {
    { "cl100k_base", CLLM__TIKTOKEN_SPLIT_CL100K, 5,
      { { "<|endoftext|>", 100257 }, { "<|fim_prefix|>", 100258 }, { "<|fim_middle|>", 100259 },
        { "<|fim_suffix|>", 100260 }, { "<|endofprompt|>", 100276 } } },
    { "r50k_base", CLLM__TIKTOKEN_SPLIT_GPT2, 1, { { "<|endoftext|>", 50256 } } },
    { "p50k_base", CLLM__TIKTOKEN_SPLIT_GPT2, 1, { { "<|endoftext|>", 50256 } } },
    { "p50k_edit", CLLM__TIKTOKEN_SPLIT_GPT2, 4,
      { { "<|endoftext|>", 50256 }, { "<|fim_prefix|>", 50281 }, { "<|fim_middle|>", 50282 },
        { "<|fim_suffix|>", 50283 } } },
};

/* The pattern cllm__match_gpt2 implements, as tiktoken writes it for r50k_base and p50k. */
static const char *cllm__re_gpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct cllm__tiktoken {
    cllm__sb                       pool;            /* the bytes of every token                               */
    cllm__str                     *id_bytes;        /* (n_ids) each id's bytes in pool; off CLLM__NO_STR: none */
    cllm__smap                     by_bytes;        /* mergeable token bytes -> rank (entries id_bytes)       */
    int                            byte_rank[256];  /* the rank of each single byte                           */
    const cllm__tiktoken_encoding *encoding;
};

/* A line of the rank file, kept until every line is checked. */
typedef struct cllm__tiktoken_line {
    cllm__str   bytes;
    int         rank, base64_len;
    long        lineno;
    const char *base64;   /* the token as the file spells it, for messages */
} cllm__tiktoken_line;

static int cllm__tiktoken_is_special(const cllm__tiktoken_encoding *enc, int id) {
    int k;
    for (k = 0; k < enc->n_specials; k++) if (enc->specials[k].id == id) return 1;
    return 0;
}

/* The encoding named by `encoding`, or else by source's base name NAME.tiktoken. */
static cllm_result cllm__tiktoken_encoding_of(const char *source, const char *encoding,
                                              const cllm__tiktoken_encoding **found, cllm_err *err) {
    const char *name = encoding ? encoding : source;
    size_t len, k;
    for (k = 0; !encoding && source[k]; k++) if (source[k] == '/' || source[k] == '\\') name = source + k + 1;
    len = strlen(name);
    if (!encoding && (len <= 9 || strcmp(name + len - 9, ".tiktoken") != 0))
        return cllm__fail(err, CLLM_ERR_ARG, "%s: the encoding is named by the file's base name, NAME.tiktoken "
                          "(cl100k_base, r50k_base, p50k_base or p50k_edit); rename the file or name the encoding",
                          source);
    if (!encoding) len -= 9;
    for (k = 0; k < sizeof cllm__tiktoken_encodings / sizeof cllm__tiktoken_encodings[0]; k++) {
        const cllm__tiktoken_encoding *known = &cllm__tiktoken_encodings[k];
        if (strlen(known->name) != len || memcmp(known->name, name, len) != 0) continue;
        *found = known;
        return CLLM_OK;
    }
    return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: encoding '%.*s' is not supported (supported: cl100k_base, "
                      "r50k_base, p50k_base, p50k_edit; o200k_base's split pattern is not implemented)", source,
                      (int)(len < 64 ? len : 64), name);
}

/* Appends the bytes base64 text s[0..n) stands for (RFC 4648, standard alphabet, '=' padding). Strict, so that a byte
   string has one spelling: groups of 4, padding only at the very end, the bits it leaves unused 0. Returns NULL, or
   what is wrong. */
static const char *cllm__base64_decode(const char *s, size_t n, cllm__sb *out) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    if (n == 0) return "it is empty";
    if (n % 4 != 0) return "its length is not a multiple of 4";
    for (i = 0; i < n; i += 4) {
        unsigned long bits = 0;
        int k, pad = 0;
        char bytes[3];
        for (k = 0; k < 4; k++) {
            const char *letter = s[i + k] ? strchr(alphabet, s[i + k]) : NULL;
            if (s[i + k] == '=' && (i + 4 != n || k < 2)) return "'=' padding may only end it, after 2 or 3 letters";
            if (s[i + k] == '=') pad++;
            else if (pad) return "a letter follows '=' padding";
            else if (!letter) return "a character outside the base64 alphabet A-Z a-z 0-9 + /";
            bits = bits << 6 | (unsigned long)(letter ? letter - alphabet : 0);
        }
        if (bits & ((1ul << 8 * pad) - 1)) return "the bits before the padding are not 0 (not the canonical spelling)";
        bytes[0] = (char)(bits >> 16);
        bytes[1] = (char)(bits >> 8 & 0xFF);
        bytes[2] = (char)(bits & 0xFF);
        cllm__sb_putn(out, bytes, (size_t)(3 - pad));
    }
    return NULL;
}

/* One line "BASE64 RANK"; the token's bytes go to pool. */
static cllm_result cllm__tiktoken_parse_line(const char *line, size_t len, const char *source, long lineno,
                                             cllm__sb *pool, cllm__tiktoken_line *out, cllm_err *err) {
    const char *space = (const char *)memchr(line, ' ', len), *digits, *problem;
    size_t n_token, n_digits, i;
    long rank = 0;
    if (!space)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%ld: expected 'BASE64 RANK' (a token's bytes in base64, a space, "
                          "its rank), got '%.*s'", source, lineno, (int)(len < 60 ? len : 60), line);
    n_token = (size_t)(space - line);
    digits = space + 1;
    n_digits = len - n_token - 1;
    if (n_digits == 0 || n_digits > 8)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%ld: the rank '%.*s' must be 1 to 8 digits", source, lineno,
                          (int)(n_digits < 20 ? n_digits : 20), digits);
    for (i = 0; i < n_digits; i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%ld: the rank '%.*s' is not a decimal number (one space "
                              "separates the two fields)", source, lineno, (int)n_digits, digits);
        rank = rank * 10 + (digits[i] - '0');
    }
    if (rank >= CLLM__TIKTOKEN_MAX_IDS)
        return cllm__fail(err, CLLM_ERR_LIMIT, "%s:%ld: rank %ld is too large (ids must stay below %d)", source, lineno,
                          rank, CLLM__TIKTOKEN_MAX_IDS);
    out->bytes.off = (uint32_t)pool->n;
    problem = cllm__base64_decode(line, n_token, pool);
    if (problem)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%ld: the token '%.*s' is not valid base64: %s", source, lineno,
                          (int)(n_token < 60 ? n_token : 60), line, problem);
    out->bytes.len = (uint32_t)(pool->n - out->bytes.off);
    if (out->bytes.len > CLLM__TIKTOKEN_MAX_TOKEN_BYTES)
        return cllm__fail(err, CLLM_ERR_LIMIT, "%s:%ld: a token of %u bytes (at most %d; is this a rank file?)", source,
                          lineno, (unsigned)out->bytes.len, CLLM__TIKTOKEN_MAX_TOKEN_BYTES);
    out->rank = (int)rank;
    out->lineno = lineno;
    out->base64 = line;
    out->base64_len = (int)n_token;
    return CLLM_OK;
}

/* Every line into *lines (stb_ds array). Empty lines are skipped, as tiktoken skips them; a line may end in CR LF. */
static cllm_result cllm__tiktoken_parse_lines(const char *text, size_t len, const char *source, cllm__sb *pool,
                                              cllm__tiktoken_line **lines, cllm_err *err) {
    size_t start, end, n;
    long lineno = 0;
    for (start = 0; start < len; start = end + 1) {
        const char *newline = (const char *)memchr(text + start, '\n', len - start);
        cllm__tiktoken_line parsed;
        cllm_result rc;
        end = newline ? (size_t)(newline - text) : len;
        n = end - start;
        lineno++;
        if (n > 0 && text[start + n - 1] == '\r') n--;
        if (n == 0) continue;
        rc = cllm__tiktoken_parse_line(text + start, n, source, lineno, pool, &parsed, err);
        if (rc != CLLM_OK) return rc;
        stbds_arrput(*lines, parsed);
    }
    if (pool->oom) return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory for the tokens", source);
    if (stbds_arrlen(*lines) == 0)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: no tokens (an empty rank file)", source);
    return CLLM_OK;
}

/* Ranks: each once, none a special token's id, and 0, 1, 2, ... without gaps other than the special tokens' ids
   (p50k_base skips 50256, <|endoftext|>'s). Fills id_bytes and the sizes. */
static cllm_result cllm__tiktoken_index_ranks(cllm_tiktoken *tk, const cllm__tiktoken_line *lines, int n_lines,
                                              const char *source, cllm_err *err) {
    struct cllm__tiktoken *p = tk->priv;
    const cllm__tiktoken_encoding *enc = p->encoding;
    int i, k, top = 0, n_ids;
    for (i = 1; i < n_lines; i++) if (lines[i].rank > lines[top].rank) top = i;
    if (lines[top].rank >= n_lines + enc->n_specials)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%ld: rank %d, but the file has only %d tokens: ranks must run 0, "
                          "1, 2, ... without gaps (a truncated or corrupt file?)", source, lines[top].lineno,
                          lines[top].rank, n_lines);
    n_ids = lines[top].rank + 1;
    for (k = 0; k < enc->n_specials; k++) if (enc->specials[k].id >= n_ids) n_ids = enc->specials[k].id + 1;
    p->id_bytes = (cllm__str *)cllm__calloc((size_t)n_ids, sizeof(cllm__str));
    if (!p->id_bytes) return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory for %d ids", source, n_ids);
    for (i = 0; i < n_ids; i++) p->id_bytes[i].off = CLLM__NO_STR;
    for (i = 0; i < n_lines; i++) {
        int rank = lines[i].rank;
        if (cllm__tiktoken_is_special(enc, rank))
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%ld: rank %d is the id of a special token of %s (a rank file "
                              "of another encoding?)", source, lines[i].lineno, rank, enc->name);
        if (p->id_bytes[rank].off != CLLM__NO_STR) {
            for (k = 0; lines[k].rank != rank; k++) {}
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%ld: rank %d appears again (first on line %ld)", source,
                              lines[i].lineno, rank, lines[k].lineno);
        }
        p->id_bytes[rank] = lines[i].bytes;
    }
    for (i = 0; i <= lines[top].rank; i++)
        if (p->id_bytes[i].off == CLLM__NO_STR && !cllm__tiktoken_is_special(enc, i))
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s: no token has rank %d: ranks must run 0, 1, 2, ... without "
                              "gaps (a truncated or corrupt file?)", source, i);
    tk->n_ranks = n_lines;
    tk->n_ids = n_ids;
    return CLLM_OK;
}

/* bytes -> rank: each byte string once, and every single byte a token (else some text could not be encoded). */
static cllm_result cllm__tiktoken_index_bytes(struct cllm__tiktoken *p, const cllm__tiktoken_line *lines, int n_lines,
                                              const char *source, cllm_err *err) {
    int i, first, b;
    if (!cllm__smap_init(&p->by_bytes, (size_t)n_lines))
        return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory for %d tokens", source, n_lines);
    for (i = 0; i < n_lines; i++) {
        const cllm__str *bytes = &lines[i].bytes;
        long seen = cllm__smap_get(&p->by_bytes, p->pool.p, p->id_bytes, p->pool.p + bytes->off, bytes->len);
        if (seen >= 0) {
            for (first = 0; lines[first].rank != (int)seen; first++) {}
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%ld: the token '%.*s' appears again (first on line %ld, rank "
                              "%ld)", source, lines[i].lineno, lines[i].base64_len < 60 ? lines[i].base64_len : 60,
                              lines[i].base64, lines[first].lineno, seen);
        }
        cllm__smap_put(&p->by_bytes, p->pool.p, p->id_bytes, (uint32_t)lines[i].rank);
    }
    for (b = 0; b < 256; b++) {
        char byte = (char)b;
        long rank = cllm__smap_get(&p->by_bytes, p->pool.p, p->id_bytes, &byte, 1);
        if (rank < 0)
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s: byte 0x%02X is not a token: every single byte must be one, "
                              "or some text cannot be encoded (a truncated file?)", source, b);
        p->byte_rank[b] = (int)rank;
    }
    return CLLM_OK;
}

CLLMDEF void cllm_tiktoken_free(cllm_tiktoken *tk) {
    struct cllm__tiktoken *p = tk->priv;
    if (p) {
        cllm__sb_free(&p->pool);
        CLLM_FREE(p->id_bytes);
        CLLM_FREE(p->by_bytes.slot);
    }
    CLLM_FREE(p);
    memset(tk, 0, sizeof *tk);
}

CLLMDEF cllm_result cllm_tiktoken_load_text(cllm_tiktoken *tk, const char *text, size_t len, const char *source,
                                            const char *encoding, cllm_err *err) {
    const cllm__tiktoken_encoding *enc = NULL;
    cllm__tiktoken_line *lines = NULL;
    struct cllm__tiktoken *p;
    cllm_result rc;
    int k;
    memset(tk, 0, sizeof *tk);
    if (!source) source = "tiktoken rank file";
    rc = cllm__tiktoken_encoding_of(source, encoding, &enc, err);
    if (rc != CLLM_OK) return rc;
    if (len > (size_t)CLLM__TIKTOKEN_MAX_FILE_BYTES)
        return cllm__fail(err, CLLM_ERR_LIMIT, "%s: %zu bytes; a rank file has at most %ld (cl100k_base's has 1.7 MB)",
                          source, len, CLLM__TIKTOKEN_MAX_FILE_BYTES);
    p = (struct cllm__tiktoken *)cllm__calloc(1, sizeof *p);
    if (!p) return cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", source);
    p->encoding = enc;
    tk->priv = p;
    tk->encoding = enc->name;
    tk->pattern = enc->split == CLLM__TIKTOKEN_SPLIT_CL100K ? cllm__re_llama3 : cllm__re_gpt2;
    rc = cllm__tiktoken_parse_lines(text, len, source, &p->pool, &lines, err);
    if (rc == CLLM_OK) rc = cllm__tiktoken_index_ranks(tk, lines, (int)stbds_arrlen(lines), source, err);
    if (rc == CLLM_OK) rc = cllm__tiktoken_index_bytes(p, lines, (int)stbds_arrlen(lines), source, err);
    for (k = 0; rc == CLLM_OK && k < enc->n_specials; k++) {   /* special tokens decode to their text */
        p->id_bytes[enc->specials[k].id].off = (uint32_t)p->pool.n;
        p->id_bytes[enc->specials[k].id].len = (uint32_t)strlen(enc->specials[k].text);
        cllm__sb_puts(&p->pool, enc->specials[k].text);
    }
    if (rc == CLLM_OK && p->pool.oom) rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", source);
    stbds_arrfree(lines);
    if (rc != CLLM_OK) cllm_tiktoken_free(tk);
    return rc == CLLM_OK ? cllm__succeed(err) : rc;
}

/* A file over 64 MB is refused before it is read. */
CLLMDEF cllm_result cllm_tiktoken_load(cllm_tiktoken *tk, const char *path, const char *encoding, cllm_err *err) {
    long long size = cllm__file_bytes(path);
    char *text = NULL;
    size_t len = 0;
    cllm_result rc;
    memset(tk, 0, sizeof *tk);
    if (size > CLLM__TIKTOKEN_MAX_FILE_BYTES)
        return cllm__fail(err, CLLM_ERR_LIMIT, "%s: %lld bytes; a rank file has at most %ld (cl100k_base's has 1.7 MB)",
                          path, size, CLLM__TIKTOKEN_MAX_FILE_BYTES);
    rc = cllm_read_file(path, &text, &len, err);
    if (rc == CLLM_OK) rc = cllm_tiktoken_load_text(tk, text, len, path, encoding, err);
    CLLM_FREE(text);
    return rc;
}

/* The rank of the bytes of symbol pos and its right neighbour together, -1 if they are no token; the rank is the id. */
static long cllm__tiktoken_pair(const void *model, const cllm__bpe_work *w, int pos, int *id) {
    const struct cllm__tiktoken *p = (const struct cllm__tiktoken *)model;
    const cllm__sym *left = &w->sym[pos];
    const char *start = (const char *)w->piece + left->start;
    long rank = cllm__smap_get(&p->by_bytes, p->pool.p, p->id_bytes, start, left->len + w->sym[left->next].len);
    *id = (int)rank;
    return rank;
}

/* Steps 2 and 3 for one piece of n >= 1 bytes. The merge queue pops the lowest rank, then the leftmost pair: the pair
   tiktoken's linear scan for the minimum finds, without its quadratic time on long pieces. */
static void cllm__tiktoken_piece(const struct cllm__tiktoken *p, const unsigned char *piece, size_t n,
                                 cllm__bpe_work *w, int **ids, size_t **starts) {
    long whole = cllm__smap_get(&p->by_bytes, p->pool.p, p->id_bytes, (const char *)piece, n);
    size_t i;
    if (whole >= 0) {
        stbds_arrput(*ids, (int)whole);
        stbds_arrput(*starts, 0);
        return;
    }
    stbds_arrsetlen(w->sym, n);
    for (i = 0; i < n; i++) {
        w->sym[i].id = p->byte_rank[piece[i]];
        w->sym[i].prev = (int)i - 1;
        w->sym[i].next = (int)i + 1;
        w->sym[i].start = i;
        w->sym[i].len = 1;
    }
    w->piece = piece;
    cllm__merge_all(p, cllm__tiktoken_pair, w, ids, starts);
}

CLLMDEF cllm_result cllm_tiktoken_encode(const cllm_tiktoken *tk, const char *text, size_t len, int **ids, int *n,
                                         int **offsets, cllm_err *err) {
    const struct cllm__tiktoken *p = tk ? tk->priv : NULL;
    const unsigned char *s = (const unsigned char *)text;
    cllm__bpe_work w = { NULL, NULL, NULL };
    cllm__seg *tokens = NULL;
    int *piece_ids = NULL;
    size_t *piece_starts = NULL, i, end, k, count;
    cllm_result rc = cllm__encode_begin("tiktoken", p != NULL, text, len, ids, n, offsets, err);
    for (i = 0; rc == CLLM_OK && i < len; i = end) {   /* 1. the split pattern's pieces */
        if (p->encoding->split == CLLM__TIKTOKEN_SPLIT_CL100K) end = cllm__match_llama3(s, len, i, 3);
        else end = cllm__match_gpt2(s, len, i);
        stbds_arrsetlen(piece_ids, 0);
        stbds_arrsetlen(piece_starts, 0);
        cllm__tiktoken_piece(p, s + i, end - i, &w, &piece_ids, &piece_starts);
        count = (size_t)stbds_arrlen(piece_ids);
        for (k = 0; k < count; k++)
            cllm__seg_put(&tokens, i + piece_starts[k], k + 1 < count ? i + piece_starts[k + 1] : end, piece_ids[k]);
    }
    if (rc == CLLM_OK) rc = cllm__encode_end(tokens, 0, "tiktoken", ids, n, offsets, err);
    stbds_arrfree(tokens);
    stbds_arrfree(piece_ids);
    stbds_arrfree(piece_starts);
    stbds_arrfree(w.sym);
    stbds_arrfree(w.heap);
    return rc;
}

CLLMDEF const char *cllm_tiktoken_id_bytes(const cllm_tiktoken *tk, int id, size_t *len) {
    const struct cllm__tiktoken *p = tk ? tk->priv : NULL;
    if (len) *len = 0;
    if (!p || id < 0 || id >= tk->n_ids || p->id_bytes[id].off == CLLM__NO_STR) return NULL;
    if (len) *len = p->id_bytes[id].len;
    return p->pool.p + p->id_bytes[id].off;
}

/* tiktoken's decode(errors="replace"): an id that is no token is an error, as in tiktoken. */
CLLMDEF cllm_result cllm_tiktoken_decode(const cllm_tiktoken *tk, const int *ids, int n, int skip_special, char **text,
                                         size_t *len, cllm_err *err) {
    cllm__sb raw = { NULL, 0, 0, 0 };
    size_t n_bytes;
    const char *bytes;
    int i;
    *text = NULL;
    if (len) *len = 0;
    if (!tk || !tk->priv) return cllm__fail(err, CLLM_ERR_ARG, "tiktoken: not loaded");
    for (i = 0; i < n; i++) {
        bytes = cllm_tiktoken_id_bytes(tk, ids[i], &n_bytes);
        if (!bytes) {
            cllm__sb_free(&raw);
            return cllm__fail(err, CLLM_ERR_ARG, "tiktoken: id %d (position %d) is not a token of %s", ids[i], i,
                              tk->encoding);
        }
        if (skip_special && cllm__tiktoken_is_special(tk->priv->encoding, ids[i])) continue;
        cllm__sb_putn(&raw, bytes, n_bytes);
    }
    return cllm__decoded_text(&raw, "tiktoken", text, len, err);
}

/* -------------------------------------------------------------------------------------------- */
/* II.4 Chat templates and assistant masks                                                      */
/* -------------------------------------------------------------------------------------------- */

/* Each supported template is written out in C below, line for line with its Jinja source in the model's
   tokenizer_config.json, for conversations of system / user / assistant messages (tool calls and tool roles are
   refused). While rendering we record the byte spans a model should learn to produce, the spans transformers'
   apply_chat_template(return_assistant_tokens_mask=True) marks with {% generation %}: an assistant message's content
   and its end-of-turn token. The text is then tokenized once and a token is trainable when its first byte lies in
   such a span. Tokenizing pieces separately would be wrong: BPE pre-tokens can straddle a header and the content. */

static const char *cllm__smollm2_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
static const char *cllm__qwen25_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
static const char *cllm__plain_chatml =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Recognises a template by text that only that family has. A template we do not recognise is
   not guessed at: rendering then fails and names it. */
static cllm_chat_family cllm__detect_chat_family(struct cllm__tok *p, const char *t) {
    const char *s = t;
    size_t n = strlen(cllm__plain_chatml);
    if (strstr(t, "<|start_header_id|>") && strstr(t, "<|end_header_id|>")) {
        if (strstr(t, "Cutting Knowledge Date: December 2023") && strstr(t, "Today Date: ") && strstr(t, "date_string"))
            return CLLM_CHAT_LLAMA31;
        if (!strstr(t, "bos_token + content") || !strstr(t, "message['content'] | trim") || strstr(t, "tool"))
            return CLLM_CHAT_NONE;
        p->chat_gen_always = !strstr(t, "{% if add_generation_prompt %}");   /* the first Llama-3 release */
        return CLLM_CHAT_LLAMA3;
    }
    if (!strstr(t, "<|im_start|>")) return CLLM_CHAT_NONE;
    if (strstr(t, "enable_thinking") && strstr(t, "reasoning_content") && strstr(t, "last_query_index"))
        return CLLM_CHAT_QWEN3;
    if (strstr(t, cllm__qwen25_system) && !strstr(t, "<think>")) {   /* with or without its tools part */
        p->chat_default_system = cllm__qwen25_system;
        return CLLM_CHAT_CHATML;
    }
    if (strstr(t, cllm__smollm2_system) && strstr(t, "loop.first and messages[0]['role'] != 'system'")) {
        p->chat_default_system = cllm__smollm2_system;
        return CLLM_CHAT_CHATML;
    }
    while (*s == ' ' || *s == '\n') s++;   /* the classic ChatML template, exactly */
    if (strncmp(s, cllm__plain_chatml, n) != 0) return CLLM_CHAT_NONE;
    for (s += n; *s == ' ' || *s == '\n'; s++) {}
    return *s ? CLLM_CHAT_NONE : CLLM_CHAT_CHATML;
}

CLLMDEF const char *cllm_chat_family_name(cllm_chat_family family) {
    switch (family) {
        case CLLM_CHAT_CHATML: return "chatml";
        case CLLM_CHAT_QWEN3: return "qwen3";
        case CLLM_CHAT_LLAMA3: return "llama3";
        case CLLM_CHAT_LLAMA31: return "llama3.1";
        default: return "none";
    }
}

/* The rendered text and its trainable spans (stb_ds array of begin, end, begin, end, ...). */
typedef struct cllm__render {
    cllm__sb text;
    size_t *spans;
} cllm__render;

/* Begins or ends a trainable span where the text is now. */
static void cllm__span_mark(cllm__render *r) {
    stbds_arrput(r->spans, r->text.n);
}

/* Appends a, b and c: a template's `'<|im_start|>' + role + '\n'`. */
static void cllm__puts3(cllm__render *r, const char *a, const char *b, const char *c) {
    cllm__sb_puts(&r->text, a);
    cllm__sb_puts(&r->text, b);
    cllm__sb_puts(&r->text, c);
}

/* Is the character at s[i, e) one that the strips below remove? '\n' when only_nl, else Python's
   str.isspace(), which Jinja's trim and Python's strip() use: White_Space plus the information
   separators U+001C..U+001F. Sets *len to its length. */
static int cllm__strippable(const char *s, size_t i, size_t e, int only_nl, int *len) {
    uint32_t cp;
    *len = cllm__utf8_next((const unsigned char *)s + i, e - i, &cp, NULL);
    if (!*len) return 0;
    if (only_nl) return cp == '\n';
    return (cllm__uni_class(cp) & CLLM__U_SPACE) || (cp >= 0x1C && cp <= 0x1F);
}

/* s[*b, *e) stripped on the chosen sides: Python's strip() / lstrip() / rstrip(), or with
   only_nl their ('\n') forms. */
static void cllm__strip(const char *s, size_t *b, size_t *e, int left, int right, int only_nl) {
    size_t j;
    int len;
    while (left && *b < *e && cllm__strippable(s, *b, *e, only_nl, &len)) *b += (size_t)len;
    while (right && *e > *b) {
        for (j = *e - 1; j > *b && ((unsigned char)s[j] & 0xC0) == 0x80; j--) {}
        if (!cllm__strippable(s, j, *e, only_nl, &len)) break;
        *e = j;
    }
}

/* Python's str.find / rfind of needle in s[b, e); returns the index or (size_t)-1. */
static size_t cllm__find(const char *s, size_t b, size_t e, const char *needle, int last) {
    size_t n = strlen(needle), i, found = (size_t)-1;
    for (i = b; i + n <= e && (last || found == (size_t)-1); i++)
        if (memcmp(s + i, needle, n) == 0) found = i;
    return found;
}

static int cllm__role_is(const cllm_message *m, const char *role) {
    return strcmp(m->role, role) == 0;
}

/* ChatML: SmolLM2-Instruct (default system prompt when messages[0] is not a system message, inside the loop),
   Qwen2.5-Instruct (the same, before the loop, with its own prompt) and the classic template. */
static cllm_result cllm__render_chatml(const struct cllm__tok *p, const cllm_message *m, int n,
                                       const cllm_render_opts *o, cllm__render *r, cllm_err *err) {
    int i, qwen = p->chat_default_system == cllm__qwen25_system;
    if (p->chat_default_system && (n == 0 || !cllm__role_is(&m[0], "system")) && (n > 0 || qwen))
        cllm__puts3(r, "<|im_start|>system\n", p->chat_default_system, "<|im_end|>\n");
    for (i = 0; i < n; i++) {
        int asst = cllm__role_is(&m[i], "assistant");
        if (qwen && !asst && !cllm__role_is(&m[i], "user") && !cllm__role_is(&m[i], "system"))
            return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "chat template (Qwen2.5): role '%.*s' is not supported "
                              "(system, user, assistant)", CLLM__CUT(m[i].role, 40));
        cllm__puts3(r, "<|im_start|>", m[i].role, "\n");
        if (asst) cllm__span_mark(r);
        cllm__puts3(r, m[i].content, "<|im_end|>", "");
        if (asst) cllm__span_mark(r);
        cllm__sb_puts(&r->text, "\n");
    }
    if (o->add_generation_prompt) cllm__sb_puts(&r->text, "<|im_start|>assistant\n");
    return CLLM_OK;
}

/* Qwen3's test for a tool's answer written as a user message. */
static int cllm__tool_response(const char *c) {
    size_t len = strlen(c);
    return strncmp(c, "<tool_response>", 15) == 0 && len >= 16 && strcmp(c + len - 16, "</tool_response>") == 0;
}

/* Qwen3 without tools. An assistant message after the last user query gets a <think> block
   (empty unless its content carries <think>...</think>); earlier ones lose their reasoning. */
static cllm_result cllm__render_qwen3(const cllm_message *m, int n, const cllm_render_opts *o, cllm__render *r,
                                      cllm_err *err) {
    int i, last_query;
    for (i = n - 1; i >= 0; i--)   /* ns.last_query_index */
        if (cllm__role_is(&m[i], "user") && !cllm__tool_response(m[i].content)) break;
    last_query = i >= 0 ? i : n - 1;
    if (n > 0 && cllm__role_is(&m[0], "system")) cllm__puts3(r, "<|im_start|>system\n", m[0].content, "<|im_end|>\n");
    for (i = 0; i < n; i++) {
        const char *c = m[i].content;
        size_t len = strlen(c), cb = 0, ce = len, rb = 0, re = 0, k;
        if (cllm__role_is(&m[i], "user") || (cllm__role_is(&m[i], "system") && i > 0)) {
            cllm__puts3(r, "<|im_start|>", m[i].role, "\n");
            cllm__puts3(r, c, "<|im_end|>\n", "");
            continue;
        }
        if (cllm__role_is(&m[i], "system")) continue;
        if (!cllm__role_is(&m[i], "assistant"))
            return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "chat template (Qwen3): role '%.*s' is not supported "
                              "(system, user, assistant)", CLLM__CUT(m[i].role, 40));
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
        cllm__sb_puts(&r->text, "<|im_start|>assistant\n");
        if (i > last_query && (i == n - 1 || re > rb)) {
            size_t sb = rb, se = re;
            cllm__strip(c, &sb, &se, 1, 1, 1);   /* reasoning_content.strip('\n') */
            if (se > sb) cllm__span_mark(r);     /* the model writes a non-empty think block */
            cllm__sb_puts(&r->text, "<think>\n");
            cllm__sb_putn(&r->text, c + sb, se - sb);
            cllm__sb_puts(&r->text, "\n</think>\n\n");
            if (se == sb) cllm__span_mark(r);
            cllm__strip(c, &cb, &ce, 1, 0, 1);   /* content.lstrip('\n') */
        } else cllm__span_mark(r);
        cllm__sb_putn(&r->text, c + cb, ce - cb);
        cllm__sb_puts(&r->text, "<|im_end|>");
        cllm__span_mark(r);
        cllm__sb_puts(&r->text, "\n");
    }
    if (o->add_generation_prompt) cllm__sb_puts(&r->text, "<|im_start|>assistant\n");
    if (o->add_generation_prompt && !o->enable_thinking) cllm__sb_puts(&r->text, "<think>\n\n</think>\n\n");
    return CLLM_OK;
}

/* One Llama-3 turn: <|start_header_id|>role<|end_header_id|>\n\n content|trim <|eot_id|> */
static void cllm__llama_turn(const cllm_message *m, cllm__render *r) {
    size_t b = 0, e = strlen(m->content);
    int asst = cllm__role_is(m, "assistant");
    cllm__strip(m->content, &b, &e, 1, 1, 0);
    cllm__puts3(r, "<|start_header_id|>", m->role, "<|end_header_id|>\n\n");
    if (asst) cllm__span_mark(r);
    cllm__sb_putn(&r->text, m->content + b, e - b);
    cllm__sb_puts(&r->text, "<|eot_id|>");
    if (asst) cllm__span_mark(r);
}

/* Meta-Llama-3-Instruct, and Llama-3.1 / 3.2 / 3.3-Instruct (a system block with the dates first,
   holding the system message if there is one). */
static cllm_result cllm__render_llama(const cllm_tokenizer *tok, cllm_chat_family family, const cllm_message *m, int n,
                                      const cllm_render_opts *o, cllm__render *r, cllm_err *err) {
    int i, first = family == CLLM_CHAT_LLAMA31 && n > 0 && cllm__role_is(&m[0], "system");
    size_t b = 0, e = first ? strlen(m[0].content) : 0;
    if (family == CLLM_CHAT_LLAMA31) {
        if (tok->bos_token) cllm__sb_puts(&r->text, tok->bos_token);
        cllm__strip(first ? m[0].content : "", &b, &e, 1, 1, 0);
        cllm__puts3(r, "<|start_header_id|>system<|end_header_id|>\n\n", "Cutting Knowledge Date: December 2023\n",
                    "Today Date: ");
        cllm__puts3(r, o->date_string, "\n\n", "");
        if (first) cllm__sb_putn(&r->text, m[0].content + b, e - b);
        cllm__sb_puts(&r->text, "<|eot_id|>");
    }
    for (i = first; i < n; i++) {
        if (family == CLLM_CHAT_LLAMA31 && (cllm__role_is(&m[i], "ipython") || cllm__role_is(&m[i], "tool")))
            return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "chat template (Llama-3.1): role '%.*s' is not supported "
                              "(tool calls are not rendered)", CLLM__CUT(m[i].role, 40));
        if (family == CLLM_CHAT_LLAMA3 && i == 0 && tok->bos_token) cllm__sb_puts(&r->text, tok->bos_token);
        cllm__llama_turn(&m[i], r);
    }
    if (o->add_generation_prompt || (family == CLLM_CHAT_LLAMA3 && tok->priv->chat_gen_always))
        cllm__sb_puts(&r->text, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return CLLM_OK;
}

/* Renders, then tokenizes once (no post_processor: the templates write bos themselves) and marks
   each token whose first byte lies in a trainable span. */
CLLMDEF cllm_result cllm_chat_render(const cllm_tokenizer *tok, const cllm_message *msgs, int n,
                                     const cllm_render_opts *opts, char **text, int **ids, unsigned char **mask,
                                     int *n_ids, cllm_err *err) {
    cllm_render_opts o;
    cllm__render r = { { NULL, 0, 0, 0 }, NULL };
    cllm_result rc;
    int i, nt = 0, *tid = NULL, *offs = NULL;
    unsigned char *trainable = NULL;
    size_t sp = 0, len, bad;
    if (text) *text = NULL;
    if (ids) *ids = NULL;
    if (mask) *mask = NULL;
    if (n_ids) *n_ids = 0;
    if (!tok || !tok->priv) return cllm__fail(err, CLLM_ERR_ARG, "chat template: tokenizer not loaded");
    if (n < 0 || (n > 0 && !msgs)) return cllm__fail(err, CLLM_ERR_ARG, "chat template: bad message list");
    for (i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return cllm__fail(err, CLLM_ERR_ARG, "chat template: message %d has no role or content", i);
        len = strlen(msgs[i].content);
        if ((bad = cllm__utf8_check(msgs[i].content, len)) < len)   /* where the user can find it, not in the render */
            return cllm__fail(err, CLLM_ERR_FORMAT, "message %d (%s): \"content\" is not valid UTF-8 at byte %zu", i,
                              msgs[i].role, bad + 1);
    }
    if (!tok->chat_template)
        return cllm__fail(err, CLLM_ERR_FORMAT, "the tokenizer has no chat_template (tokenizer_config.json)");
    if (!tok->chat_family)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "chat template not supported (ChatML/SmolLM2/Qwen2.5, Qwen3, "
                          "Llama-3, Llama-3.1+ are): \"%.*s...\"", CLLM__CUT(tok->chat_template, 60));
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    o.date_string = cllm__def(o.date_string, "26 Jul 2024");
    if (tok->chat_family == CLLM_CHAT_CHATML) rc = cllm__render_chatml(tok->priv, msgs, n, &o, &r, err);
    else if (tok->chat_family == CLLM_CHAT_QWEN3) rc = cllm__render_qwen3(msgs, n, &o, &r, err);
    else rc = cllm__render_llama(tok, tok->chat_family, msgs, n, &o, &r, err);
    cllm__sb_putn(&r.text, "", 0);   /* an empty conversation renders as "" */
    if (rc == CLLM_OK && r.text.oom) rc = cllm__fail(err, CLLM_ERR_NOMEM, "chat template: out of memory");
    if (rc == CLLM_OK && (ids || mask || n_ids))
        rc = cllm_tokenizer_encode(tok, r.text.p, r.text.n, 0, &tid, &nt, &offs, err);
    if (rc == CLLM_OK && mask && !(trainable = (unsigned char *)cllm__calloc((size_t)nt + 1, 1)))
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "chat template: out of memory");
    for (i = 0; rc == CLLM_OK && mask && i < nt; i++) {   /* spans and tokens are both in order */
        size_t start = (size_t)offs[2 * i];
        while (sp < (size_t)stbds_arrlen(r.spans) && r.spans[sp + 1] <= start) sp += 2;
        trainable[i] = sp < (size_t)stbds_arrlen(r.spans) && r.spans[sp] <= start;
    }
    CLLM_FREE(offs);
    stbds_arrfree(r.spans);
    if (rc != CLLM_OK || !text) cllm__sb_free(&r.text);
    if (rc != CLLM_OK || !ids) CLLM_FREE(tid);
    if (rc != CLLM_OK) CLLM_FREE(trainable);
    if (rc != CLLM_OK) return rc;
    if (text) *text = r.text.p;
    if (ids) *ids = tid;
    if (mask) *mask = trainable;
    if (n_ids) *n_ids = nt;
    return cllm__succeed(err);
}

/* -------------------------------------------------------------------------------------------- */
/* II.5 Generation: KV cache and sampling                                                       */
/* -------------------------------------------------------------------------------------------- */

/* ---- KV cache ------------------------------------------------------------------------------ */

/* As HF transformers' past_key_values (DynamicCache): per layer, the keys after RoPE (and
   Qwen3's k_norm) and the values of every position so far, so that the next token costs one row
   of the forward pass plus attention over the cached rows. */

#define CLLM__KV_BLOCK 32   /* prefill rows computed together: bounds the work space, not the math */

/* Work space for `rows` rows of one incremental step, carved from kv->work in this order. */
typedef struct cllm__kv_work {
    cllm_float *x, *ln, *h;               /* (rows, C) residual, normed input, residual after attention */
    cllm_float *q, *att, *q_pre;          /* (rows, H*hd) queries, attention output, pre-norm q         */
    cllm_float *k, *v, *k_pre;            /* (rows, KV*hd)                                              */
    cllm_float *rstd, *q_rstd, *k_rstd;   /* (rows), (rows*H), (rows*KV)                                */
    cllm_float *gate, *up;                /* (rows, I)                                                  */
    cllm_float *s;                        /* (max_len) attention scores of one query                    */
} cllm__kv_work;

/* Points w's views into mem (when mem is not NULL) and returns the floats needed. */
static size_t cllm__kv_work_views(cllm__kv_work *w, cllm_float *mem, const cllm_config *c, size_t rows,
                                  size_t max_len) {
    size_t C = rows * (size_t)c->hidden_size, I = rows * (size_t)c->intermediate_size, used = 0;
    size_t Q = rows * (size_t)c->n_heads * (size_t)c->head_dim, K = rows * (size_t)c->n_kv_heads * (size_t)c->head_dim;
    cllm_float **views[15] = { &w->x, &w->ln, &w->h, &w->q, &w->att, &w->q_pre, &w->k, &w->v, &w->k_pre,
                               &w->rstd, &w->q_rstd, &w->k_rstd, &w->gate, &w->up, &w->s };
    size_t sizes[15] = { C, C, C, Q, Q, Q, K, K, K, rows, rows * (size_t)c->n_heads, rows * (size_t)c->n_kv_heads,
                         I, I, max_len };
    int i;
    for (i = 0; i < 15; i++) {
        if (mem) *views[i] = mem + used;
        used += sizes[i];
    }
    return used;
}

CLLMDEF void cllm_kv_cache_free(cllm_kv_cache *kv) {
    if (!kv) return;
    CLLM_FREE(kv->len);        /* with row_seq, row_pos and row_id */
    CLLM_FREE(kv->k);
    CLLM_FREE(kv->v);
    CLLM_FREE(kv->rope_cos);   /* with rope_sin */
    CLLM_FREE(kv->work);
    memset(kv, 0, sizeof *kv);
}

/* Memory: 2 * L * n_seq * max_len * KV*hd floats for k and v (SmolLM2-135M, 4 x 2048: 377 MB). */
CLLMDEF cllm_result cllm_kv_cache_init(cllm_kv_cache *kv, const cllm_model *m, int n_seq, int max_len, cllm_err *err) {
    const cllm_config *c = &m->config;
    cllm__kv_work sizing;
    size_t per, rows, rope = (size_t)max_len * (size_t)(c->head_dim / 2);
    double gb = 2.0 * c->n_layers * (double)n_seq * max_len * c->n_kv_heads * c->head_dim * sizeof(cllm_float) / 1e9;
    memset(kv, 0, sizeof *kv);
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "KV cache: the model is not loaded");
    if (n_seq < 1 || max_len < 1)
        return cllm__fail(err, CLLM_ERR_ARG, "KV cache: n_seq (%d) and max_len (%d) must be at least 1", n_seq,
                          max_len);
    if (gb > 1024 || (double)n_seq * max_len > 1e10)
        return cllm__fail(err, CLLM_ERR_LIMIT, "KV cache: %d sequences x %d positions need %.0f GB; use fewer or "
                          "shorter sequences", n_seq, max_len, gb);
    kv->n_seq = n_seq;
    kv->max_len = max_len;
    kv->n_layers = c->n_layers;
    kv->kv_dim = c->n_kv_heads * c->head_dim;
    kv->head_dim = c->head_dim;
    kv->rows = n_seq > CLLM__KV_BLOCK ? n_seq : CLLM__KV_BLOCK;
    rows = (size_t)kv->rows;
    per = (size_t)c->n_layers * (size_t)n_seq * (size_t)max_len * (size_t)kv->kv_dim;
    kv->len = (int *)cllm__calloc((size_t)n_seq + 3 * rows, sizeof(int));
    kv->k = (cllm_float *)cllm__calloc(per, sizeof(cllm_float));
    kv->v = (cllm_float *)cllm__calloc(per, sizeof(cllm_float));
    kv->rope_cos = (cllm_float *)cllm__calloc(2 * rope, sizeof(cllm_float));
    kv->work_size = cllm__kv_work_views(&sizing, NULL, c, rows, (size_t)max_len);
    kv->work = (cllm_float *)cllm__calloc(kv->work_size, sizeof(cllm_float));
    if (!kv->len || !kv->k || !kv->v || !kv->rope_cos || !kv->work) {
        cllm_kv_cache_free(kv);
        return cllm__fail(err, CLLM_ERR_NOMEM, "KV cache: out of memory for %d sequences x %d positions (%.2f GB)",
                          n_seq, max_len, gb);
    }
    kv->row_seq = kv->len + n_seq;
    kv->row_pos = kv->row_seq + rows;
    kv->row_id = kv->row_pos + rows;
    kv->rope_sin = kv->rope_cos + rope;
    cllm__rope_tables(kv->rope_cos, kv->rope_sin, c, max_len);   /* the same tables cllm_forward uses */
    return cllm__succeed(err);
}

/* Start of the cached rows of (layer l, sequence s) in kv->k or kv->v. */
static size_t cllm__kv_offset(const cllm_kv_cache *kv, int l, int s) {
    return ((size_t)l * kv->n_seq + (size_t)s) * (size_t)kv->max_len * (size_t)kv->kv_dim;
}

CLLMDEF cllm_result cllm_kv_cache_copy_seq(cllm_kv_cache *kv, int src, int dst, cllm_err *err) {
    size_t bytes;
    int l;
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq)
        return cllm__fail(err, CLLM_ERR_ARG, "KV cache copy: sequences %d -> %d, the cache has %d", src, dst,
                          kv->n_seq);
    bytes = (size_t)kv->len[src] * (size_t)kv->kv_dim * sizeof(cllm_float);
    for (l = 0; l < kv->n_layers && src != dst; l++) {
        memcpy(kv->k + cllm__kv_offset(kv, l, dst), kv->k + cllm__kv_offset(kv, l, src), bytes);
        memcpy(kv->v + cllm__kv_offset(kv, l, dst), kv->v + cllm__kv_offset(kv, l, src), bytes);
    }
    kv->len[dst] = kv->len[src];
    return cllm__succeed(err);
}

static cllm_result cllm__kv_check(const cllm_model *m, const cllm_kv_cache *kv, const char *fn, cllm_err *err) {
    const cllm_config *c = &m->config;
    cllm__kv_work sizing;
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "%s: the model is not loaded", fn);
    if (!kv->work || kv->n_layers != c->n_layers || kv->kv_dim != c->n_kv_heads * c->head_dim ||
        kv->head_dim != c->head_dim ||
        kv->work_size != cllm__kv_work_views(&sizing, NULL, c, (size_t)kv->rows, (size_t)kv->max_len))
        return cllm__fail(err, CLLM_ERR_ARG, "%s: the KV cache was not made for this model", fn);
    return CLLM_OK;
}

/* Attention of each row r and head h over its sequence's cached positions 0..row_pos[r]:
   att[r, h] = sum_j softmax_j(q[r, h] . k[j] / sqrt(hd)) v[j], with the k, v of head h's group.
   The fast path (OpenMP) gives every thread its own score row and splits the (row, head) pairs;
   each pair is computed exactly as the serial loop computes it. */
static void cllm__kv_attend(const cllm_kv_cache *kv, int l, cllm__kv_work *w, int N, int H, int KV, int hd,
                            cllm_float scale) {
    int Q = H * hd, K = KV * hd, rep = H / KV, rh;
    cllm_float *scores = w->s;   /* one row of max_len scores (serial) */
#ifdef CLLM__OMP
    int threads = cllm__max_threads();
    double work = (double)N * H * hd * (kv->row_pos[N - 1] + 1);
    if (threads > 1 && work >= 32768)
        scores = (cllm_float *)CLLM_MALLOC(sizeof(cllm_float) * (size_t)threads * (size_t)kv->max_len);
    if (!scores) scores = w->s;
#pragma omp parallel for schedule(static) if(scores != w->s)
#endif
    for (rh = 0; rh < N * H; rh++) {
        int r = rh / H, h = rh % H;
        size_t kv0 = cllm__kv_offset(kv, l, kv->row_seq[r]) + (size_t)(h / rep) * hd;
        size_t qo = (size_t)r * Q + (size_t)h * hd;
        cllm_float *s = scores == w->s ? w->s : scores + (size_t)cllm__thread_num() * (size_t)kv->max_len;
        cllm__attend_row(w->att + qo, w->q + qo, kv->k + kv0, kv->v + kv0, (size_t)K, kv->row_pos[r] + 1, NULL, hd,
                         scale, s);
    }
    if (scores != w->s) CLLM_FREE(scores);
}

/* The incremental forward for N rows: row r is token ids[r] of sequence kv->row_seq[r] at position kv->row_pos[r].
   Rows of one sequence must continue its cached positions without gaps. Per layer, every row's k and v go into the
   cache first; then row r attends to positions 0..row_pos[r] of its sequence: the cached past plus earlier rows of
   this step (causal). Leaves the final-normed hidden states in the work rows w->ln (N, C). */
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
        for (r = 0; r < N; r++) {   /* RoPE at each row's own position, then cache k, v */
            size_t pos = (size_t)kv->row_pos[r], at = cllm__kv_offset(kv, l, kv->row_seq[r]) + pos * K;
            const cllm_float *cos_row = kv->rope_cos + pos * half, *sin_row = kv->rope_sin + pos * half;
            cllm__rope_forward(w->q + (size_t)r * Q, cos_row, sin_row, 1, 1, H, hd);
            cllm__rope_forward(w->k + (size_t)r * K, cos_row, sin_row, 1, 1, KV, hd);
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
        return cllm__fail(err, CLLM_ERR_ARG, "%s: sequence %d: token id %d is outside the vocabulary [0, %d)", fn, seq,
                          id, m->config.vocab_size);
    return CLLM_OK;
}

/* Blocks of up to CLLM__KV_BLOCK rows; each block's rows attend causally to the cache and to
   each other, so the logits equal cllm_forward's for the same tokens. */
CLLMDEF cllm_result cllm_kv_prefill(const cllm_model *m, cllm_kv_cache *kv, int seq, const int *ids, int n,
                                    cllm_float *logits_out, cllm_err *err) {
    int C = m->config.hidden_size, V = m->config.vocab_size, done, r;
    cllm__kv_work w;
    cllm_result rc = cllm__kv_check(m, kv, "KV cache prefill", err);
    if (rc != CLLM_OK) return rc;
    if (seq < 0 || seq >= kv->n_seq)
        return cllm__fail(err, CLLM_ERR_ARG, "KV cache prefill: sequence %d, the cache has %d", seq, kv->n_seq);
    if (n < 0 || (n > 0 && !ids)) return cllm__fail(err, CLLM_ERR_ARG, "KV cache prefill: need n >= 0 token ids");
    if (n > kv->max_len - kv->len[seq])
        return cllm__fail(err, CLLM_ERR_LIMIT, "KV cache prefill: sequence %d holds %d of %d positions, %d more do "
                          "not fit (make the cache longer)", seq, kv->len[seq], kv->max_len, n);
    for (r = 0; r < n; r++)
        if ((rc = cllm__kv_check_id(m, ids[r], "KV cache prefill", seq, err)) != CLLM_OK) return rc;
    cllm__kv_work_views(&w, kv->work, &m->config, (size_t)kv->rows, (size_t)kv->max_len);
    for (done = 0; done < n; done += CLLM__KV_BLOCK) {
        int N = n - done < CLLM__KV_BLOCK ? n - done : CLLM__KV_BLOCK;
        for (r = 0; r < N; r++) kv->row_seq[r] = seq;
        for (r = 0; r < N; r++) kv->row_pos[r] = kv->len[seq] + r;
        cllm__kv_forward_rows(m, kv, ids + done, N, &w);
        kv->len[seq] += N;
        if (logits_out) cllm__matmul_forward(logits_out + (size_t)done * V, w.ln, m->params.lm_head, NULL, N, C, V);
    }
    return cllm__succeed(err);
}

/* The sequences that take part are computed as one batch of rows. */
CLLMDEF cllm_result cllm_kv_step(const cllm_model *m, cllm_kv_cache *kv, const int *ids, cllm_float *logits_out,
                                 cllm_err *err) {
    int C = m->config.hidden_size, V = m->config.vocab_size, N = 0, s, r;
    cllm__kv_work w;
    cllm_result rc = cllm__kv_check(m, kv, "KV cache step", err);
    if (rc != CLLM_OK) return rc;
    if (!ids) return cllm__fail(err, CLLM_ERR_ARG, "KV cache step: ids is NULL");
    for (s = 0; s < kv->n_seq; s++) {
        if (ids[s] < 0) continue;
        if ((rc = cllm__kv_check_id(m, ids[s], "KV cache step", s, err)) != CLLM_OK) return rc;
        if (kv->len[s] >= kv->max_len)
            return cllm__fail(err, CLLM_ERR_LIMIT, "KV cache step: sequence %d already fills all %d positions of the "
                              "cache", s, kv->max_len);
    }
    for (s = 0; s < kv->n_seq; s++) {
        if (ids[s] < 0) continue;
        kv->row_seq[N] = s;
        kv->row_pos[N] = kv->len[s];
        kv->row_id[N++] = ids[s];
    }
    cllm__kv_work_views(&w, kv->work, &m->config, (size_t)kv->rows, (size_t)kv->max_len);
    if (N > 0) cllm__kv_forward_rows(m, kv, kv->row_id, N, &w);
    for (r = 0; r < N; r++) {
        s = kv->row_seq[r];
        kv->len[s]++;
        if (logits_out)
            cllm__matmul_forward(logits_out + (size_t)s * V, w.ln + (size_t)r * C, m->params.lm_head, NULL, 1, C, V);
    }
    return cllm__succeed(err);
}

/* ---- Sampling -------------------------------------------------------------------------------- */

/* A token and its score. */
typedef struct cllm__cand {
    double z;
    int id;
} cllm__cand;

/* The ranking every filter uses: higher score first, then lower id. A total order, so sorting
   and selection give one answer on every platform. */
static int cllm__cand_before(const cllm__cand *a, const cllm__cand *b) {
    return a->z > b->z || (a->z == b->z && a->id < b->id);
}

static int cllm__cand_cmp(const void *a, const void *b) {
    const cllm__cand *x = (const cllm__cand *)a, *y = (const cllm__cand *)b;
    return cllm__cand_before(x, y) ? -1 : cllm__cand_before(y, x) ? 1 : 0;
}

static void cllm__cand_swap(cllm__cand *a, cllm__cand *b) {
    cllm__cand t = *a;
    *a = *b;
    *b = t;
}

/* Selection (Hoare's FIND): rearranges c[0..n) so that c[k] is the (k+1)-th in rank order, with every earlier-ranked
   candidate before it and every later one after it. O(n) on average, so top-k does not sort the whole vocabulary. */
static void cllm__select(cllm__cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        cllm__cand pivot = c[k];
        int i = lo, j = hi;
        do {
            while (cllm__cand_before(&c[i], &pivot)) i++;
            while (cllm__cand_before(&pivot, &c[j])) j--;
            if (i <= j) cllm__cand_swap(&c[i++], &c[j--]);
        } while (i <= j);
        if (j < k) lo = i;
        if (k < i) hi = j;
    }
}

static cllm_result cllm__sampler_check(const cllm_sampler *s, cllm_err *err) {
    if (!(s->temperature == 0 || (s->temperature >= 1e-6f && s->temperature <= 1e6f)))
        return cllm__fail(err, CLLM_ERR_ARG, "sampler: temperature %g must be in [1e-6, 1e6] (0 = default 1.0; set "
                          "greedy = 1 for argmax)", (double)s->temperature);
    if (s->top_k < 0) return cllm__fail(err, CLLM_ERR_ARG, "sampler: top_k must be >= 0 (0 = off)");
    if (!(s->top_p >= 0 && s->top_p <= 1))
        return cllm__fail(err, CLLM_ERR_ARG, "sampler: top_p must be in (0, 1] (0 = default 1.0 = off)");
    return CLLM_OK;
}

/* Logits may mask tokens with -inf, but need one finite value and no NaN or +inf. */
static cllm_result cllm__logits_check(const cllm_float *logits, int V, cllm_err *err) {
    int i, finite = 0;
    if (!logits || V < 1) return cllm__fail(err, CLLM_ERR_ARG, "sampler: need V >= 1 logits");
    for (i = 0; i < V; i++) {
        if (logits[i] != logits[i] || logits[i] == INFINITY)
            return cllm__fail(err, CLLM_ERR_NUMERIC, "sampler: logit %d is %s", i,
                              logits[i] != logits[i] ? "NaN" : "+inf");
        if (logits[i] > -INFINITY) finite = 1;
    }
    if (!finite) return cllm__fail(err, CLLM_ERR_NUMERIC, "sampler: every logit is -inf");
    return CLLM_OK;
}

/* Hugging Face's logits warpers, in the order generate(do_sample=True) applies them; scores[i]
   is z_i, or -INFINITY where a warper removed token i:
     z = logits / temperature                                           (TemperatureLogitsWarper)
     top_k: drop z below the k-th largest z (ties with it stay)         (TopKLogitsWarper)
     top_p: with p = softmax(z) over the survivors, sorted by z descending (ties: lower id first),
            keep a token while the mass of the tokens before it is < top_p: the smallest set with
            mass >= top_p, never empty                                  (TopPLogitsWarper)
   Computed in double. cand: work space of V. Returns the number of kept tokens. */
static int cllm__warp(const cllm_sampler *s, const cllm_float *logits, int V, double *scores, cllm__cand *cand) {
    double T = (double)cllm__def(s->temperature, 1.0f), p = (double)cllm__def(s->top_p, 1.0f);
    int n = 0, i, k = s->top_k;
    for (i = 0; i < V; i++) {
        scores[i] = logits[i] > -INFINITY ? (double)logits[i] / T : -INFINITY;
        if (!(scores[i] > -INFINITY)) continue;   /* -inf has no mass */
        cand[n].z = scores[i];
        cand[n++].id = i;
    }
    if (k > 0 && k < n) {   /* top-k: keep z >= the k-th largest z */
        int kept = k;
        cllm__select(cand, n, k - 1);
        for (i = k; i < n; i++)
            if (cand[i].z == cand[k - 1].z) cllm__cand_swap(&cand[kept++], &cand[i]);
        n = kept;
    }
    if (p < 1 && n > 1) {   /* top-p over softmax of the survivors */
        double mx = -INFINITY, Z = 0, mass = 0, small;
        int m = 0, kept = 0;
        for (i = 0; i < n; i++) if (cand[i].z > mx) mx = cand[i].z;
        for (i = 0; i < n; i++) Z += exp(cand[i].z - mx);
        /* Tokens with p_i < (1-top_p)/(n-1) can never be kept (together they hold less than 1-top_p
           and rank last), so only the others need sorting (llama2.c's trick). */
        small = (1 - p) / (n - 1) * Z;
        for (i = 0; i < n; i++)
            if (exp(cand[i].z - mx) >= small) cllm__cand_swap(&cand[m++], &cand[i]);
        if (m == 0) m = n;
        qsort(cand, (size_t)m, sizeof *cand, cllm__cand_cmp);
        for (kept = 0; kept < m && mass < p; kept++) mass += exp(cand[kept].z - mx) / Z;
        n = kept;
    }
    if (n < V) {   /* write back: only the kept candidates keep a score */
        for (i = 0; i < V; i++) scores[i] = -INFINITY;
        for (i = 0; i < n; i++) scores[cand[i].id] = cand[i].z;
    }
    return n;
}

/* One draw from softmax(z) with u in [0, 1): the first id (in id order) whose running sum of
   exp(z - max) exceeds u * total, so that a seed gives the same tokens on every platform.
   *logprob = z[id] - max - log(total). */
static int cllm__draw(const double *z, int V, double u, double *logprob) {
    double mx = -INFINITY, total = 0, acc = 0, r;
    int i, pick = -1;
    for (i = 0; i < V; i++) if (z[i] > mx) mx = z[i];
    for (i = 0; i < V; i++) if (z[i] > -INFINITY) total += exp(z[i] - mx);
    r = u * total;
    for (i = 0; i < V; i++) {
        if (!(z[i] > -INFINITY)) continue;
        acc += exp(z[i] - mx);
        pick = i;   /* the last kept id, should rounding leave r >= acc */
        if (r < acc) break;
    }
    *logprob = z[pick] - mx - log(total);
    return pick;
}

/* Greedy: argmax (lowest id on ties); *logprob = log softmax(logits)[argmax], the model's own
   probability at temperature 1, as HF reports it for greedy search. */
static int cllm__argmax(const cllm_float *logits, int V, double *logprob) {
    double sum = 0;
    int i, best = 0;
    for (i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    for (i = 0; i < V; i++) sum += exp((double)logits[i] - logits[best]);
    *logprob = -log(sum);
    return best;
}

/* scores and cand: work space of V each. */
static int cllm__sample_with(const cllm_sampler *s, const cllm_float *logits, int V, cllm_rng *rng,
                             double *scores, cllm__cand *cand, double *logprob) {
    if (s->greedy) return cllm__argmax(logits, V, logprob);
    cllm__warp(s, logits, V, scores, cand);
    return cllm__draw(scores, V, cllm_rng_uniform(rng), logprob);
}

/* logits may hold -INFINITY but not NaN or +inf; greedy is ignored; *n_kept (optional): the tokens
   left with a finite score. */
CLLMDEF cllm_result cllm_sampler_scores(const cllm_sampler *s, const cllm_float *logits, int V, double *scores,
                                        int *n_kept, cllm_err *err) {
    cllm__cand *cand;
    cllm_result rc;
    int n;
    if (!s || !scores) return cllm__fail(err, CLLM_ERR_ARG, "sampler: sampler and scores are required");
    if ((rc = cllm__sampler_check(s, err)) != CLLM_OK) return rc;
    if ((rc = cllm__logits_check(logits, V, err)) != CLLM_OK) return rc;
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand);
    if (!cand) return cllm__fail(err, CLLM_ERR_NOMEM, "sampler: out of memory");
    n = cllm__warp(s, logits, V, scores, cand);
    if (n_kept) *n_kept = n;
    CLLM_FREE(cand);
    return cllm__succeed(err);
}

/* One cllm_rng_uniform per draw; *logprob = log softmax(scores)[token], or for greedy the model's
   log softmax(logits)[token]. Allocates O(V) work space per call; cllm_generate keeps its own. */
CLLMDEF cllm_result cllm_sample(const cllm_sampler *s, const cllm_float *logits, int V, cllm_rng *rng,
                                int *token, double *logprob, cllm_err *err) {
    double lp;
    cllm__cand *cand;   /* V candidates, then V scores */
    cllm_result rc;
    if (!s || !rng || !token) return cllm__fail(err, CLLM_ERR_ARG, "sampler: sampler, rng and token are required");
    if ((rc = cllm__sampler_check(s, err)) != CLLM_OK) return rc;
    if ((rc = cllm__logits_check(logits, V, err)) != CLLM_OK) return rc;
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand + sizeof(double));
    if (!cand) return cllm__fail(err, CLLM_ERR_NOMEM, "sampler: out of memory");
    *token = cllm__sample_with(s, logits, V, rng, (double *)(void *)(cand + V), cand, &lp);
    if (logprob) *logprob = lp;
    CLLM_FREE(cand);
    return cllm__succeed(err);
}

/* ---- Generation loop ------------------------------------------------------------------------ */

CLLMDEF const char *cllm_finish_reason_string(cllm_finish_reason reason) {
    switch (reason) {
        case CLLM_FINISH_LENGTH: return "length";
        case CLLM_FINISH_EOS: return "eos";
        case CLLM_FINISH_STOP: return "stop";
        default: return "unknown";
    }
}

CLLMDEF void cllm_completions_free(cllm_completion *c, int n) {
    int i;
    for (i = 0; c && i < n; i++) {
        CLLM_FREE(c[i].ids);
        CLLM_FREE(c[i].logprobs);
        memset(&c[i], 0, sizeof c[i]);
    }
}

static int cllm__is_eos(const cllm_gen_config *g, const cllm_config *c, int id) {
    const int *list = g->eos_ids ? g->eos_ids : c->eos_token_ids;
    int n = g->eos_ids ? g->n_eos : c->n_eos, i;
    if (g->ignore_eos) return 0;
    for (i = 0; i < n; i++) if (list[i] == id) return 1;
    return 0;
}

/* HF generate(do_sample=True, max_new_tokens, eos_token_id) for n samples of one prompt. The prompt (all but its last
   token) is prefilled into sequence 0 and copied to the other samples; then every step feeds each unfinished sample's
   newest token (at first the prompt's last one) through cllm_kv_step as one batch, samples the next token from its
   logits row, and checks EOS, the stop callback and the length limit. The last sampled token is never fed. With top_k
   and top_p off, the logprobs equal cllm_forward's logp with batch.temperature = the sampling temperature. */
CLLMDEF cllm_result cllm_generate(const cllm_model *m, const int *prompt, int n_prompt, int n_samples,
                                  const cllm_gen_config *cfg, cllm_completion *out, cllm_err *err) {
    cllm_gen_config g;
    cllm_kv_cache kv;
    cllm_float *logits = NULL;
    cllm__cand *cand = NULL;   /* V candidates, then V scores */
    cllm_rng *rngs = NULL;
    int *cur = NULL, V = m->config.vocab_size, active, s;
    cllm_result rc;

    memset(&kv, 0, sizeof kv);
    memset(&g, 0, sizeof g);
    if (cfg) g = *cfg;
    g.max_new_tokens = cllm__def(g.max_new_tokens, 256);
    if (!out || n_samples < 1 || n_samples > 65536)
        return cllm__fail(err, CLLM_ERR_ARG, "generation: n_samples must be in [1, 65536] with an output array");
    memset(out, 0, (size_t)n_samples * sizeof *out);
    if (!m->params_memory) return cllm__fail(err, CLLM_ERR_ARG, "generation: the model is not loaded");
    if (!prompt || n_prompt < 1)
        return cllm__fail(err, CLLM_ERR_ARG, "generation: the prompt needs at least one token (e.g. BOS)");
    if (g.max_new_tokens < 1 || g.max_new_tokens > INT_MAX / 2 - n_prompt)
        return cllm__fail(err, CLLM_ERR_ARG, "generation: max_new_tokens must be positive and fit an int with the "
                          "prompt");
    if (g.eos_ids && g.n_eos < 0) return cllm__fail(err, CLLM_ERR_ARG, "generation: n_eos must be >= 0");
    if ((rc = cllm__sampler_check(&g.sampler, err)) != CLLM_OK) return rc;
    for (s = 0; s < n_prompt; s++)
        if (prompt[s] < 0 || prompt[s] >= V)
            return cllm__fail(err, CLLM_ERR_ARG, "generation: prompt token %d is id %d, outside the vocabulary [0, %d)",
                              s, prompt[s], V);

    rc = cllm_kv_cache_init(&kv, m, n_samples, n_prompt + g.max_new_tokens - 1, err);
    if (rc != CLLM_OK) return rc;
    logits = (cllm_float *)cllm__calloc((size_t)n_samples * (size_t)V, sizeof *logits);
    cand = (cllm__cand *)cllm__calloc((size_t)V, sizeof *cand + sizeof(double));
    rngs = (cllm_rng *)cllm__calloc((size_t)n_samples, sizeof *rngs);
    cur = (int *)cllm__calloc((size_t)n_samples, sizeof *cur);
    if (!logits || !cand || !rngs || !cur) rc = cllm__fail(err, CLLM_ERR_NOMEM, "generation: out of memory");
    for (s = 0; rc == CLLM_OK && s < n_samples; s++) {
        out[s].ids = (int *)cllm__calloc((size_t)g.max_new_tokens, sizeof(int));
        out[s].logprobs = (cllm_float *)cllm__calloc((size_t)g.max_new_tokens, sizeof(cllm_float));
        if (!out[s].ids || !out[s].logprobs)
            rc = cllm__fail(err, CLLM_ERR_NOMEM, "generation: out of memory for %d x %d tokens", n_samples,
                            g.max_new_tokens);
        cllm_rng_seed(&rngs[s], g.sampler.seed * 0x9E3779B97F4A7C15ull + (uint64_t)s);   /* its own stream */
        cur[s] = prompt[n_prompt - 1];
    }
    if (rc == CLLM_OK) rc = cllm_kv_prefill(m, &kv, 0, prompt, n_prompt - 1, NULL, err);
    for (s = 1; rc == CLLM_OK && s < n_samples; s++) cllm_kv_cache_copy_seq(&kv, 0, s, NULL);

    for (active = n_samples; rc == CLLM_OK && active > 0;) {
        if ((rc = cllm_kv_step(m, &kv, cur, logits, err)) != CLLM_OK) break;
        for (s = 0; s < n_samples && rc == CLLM_OK; s++) {
            cllm_completion *o = &out[s];
            const cllm_float *row = logits + (size_t)s * V;
            double lp;
            int tok, ended = 1;
            if (cur[s] < 0 || (rc = cllm__logits_check(row, V, err)) != CLLM_OK) continue;
            tok = cllm__sample_with(&g.sampler, row, V, &rngs[s], (double *)(void *)(cand + V), cand, &lp);
            o->ids[o->n] = tok;
            o->logprobs[o->n++] = (cllm_float)lp;
            if (cllm__is_eos(&g, &m->config, tok)) o->finish = CLLM_FINISH_EOS;
            else if (g.stop && g.stop(g.stop_ctx, o->ids, o->n)) o->finish = CLLM_FINISH_STOP;
            else if (o->n == g.max_new_tokens) o->finish = CLLM_FINISH_LENGTH;
            else ended = 0;
            cur[s] = ended ? -1 : tok;
            active -= ended;
        }
    }
    if (rc == CLLM_OK) cllm__ok(err);
    else cllm_completions_free(out, n_samples);
    cllm_kv_cache_free(&kv);
    CLLM_FREE(logits);
    CLLM_FREE(cand);
    CLLM_FREE(rngs);
    CLLM_FREE(cur);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* II.6 The chat-completions client, conversations, lenient JSON, task files                    */
/* -------------------------------------------------------------------------------------------- */

/* The client speaks OpenAI's chat-completions protocol (see its declarations) through libcurl. Every error message
   passes one scrubber (secrets, below) and all text an endpoint sends one gate (cllm__received_text). */

/* ---- secrets: the one redaction point ----------------------------------------------------------
   Every live client registers its API key here (cllm_client_init; cllm_client_free takes it out). Two kinds of text
   pass through cllm__scrub: every error message (cllm__fail does it, whatever path formatted the message), and the
   text an endpoint sends (a reply's content, the fields read from a model's JSON answer). A run of 8 or more bytes of
   a key, starting anywhere in the key (the whole key when it is shorter), becomes "[redacted]": an endpoint may echo
   a key whole or cut. Received text is scrubbed only of keys that look like secrets (16 bytes or more, with a letter
   and a digit): a placeholder such as "sk-no-key-required" is made of words that text may hold. The registry follows
   curl_global_init's rule: change it (init or free a client) only while no other thread uses the library. */
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
static size_t cllm__scrub(cllm__sb *out, const char *s, size_t n, int in_text) {
    size_t count = 0, run, at;
    while ((at = cllm__secret_find(s, n, in_text, &run)) < n) {
        cllm__sb_putn(out, s, at);
        cllm__sb_puts(out, "[redacted]");
        s += at + run;
        n -= at + run;
        count++;
    }
    cllm__sb_putn(out, s, n);
    return count;
}

/* s[0..n) as one line of valid UTF-8 without any key, into out[0..cap): invalid sequences become U+FFFD, key runs
   "[redacted]", control characters spaces; what does not fit is cut on a character boundary and ends in "...". */
static void cllm__clean_line(char *out, size_t cap, const char *s, size_t n) {
    cllm__sb valid = { NULL, 0, 0, 0 }, clean = { NULL, 0, 0, 0 };
    size_t i, keep;
    if (cap == 0) return;
    cllm__utf8_lossy((const unsigned char *)s, n, 1, &valid, NULL);
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

#include <curl/curl.h>
#include <time.h>
#if !defined(_WIN32)
#include <sys/time.h>
#endif

/* ---- small helpers --------------------------------------------------------------------------- */

/* Seconds on a monotonic clock when the host program exposes one (POSIX CLOCK_MONOTONIC), else gettimeofday; only
   differences are used (backoff waits, call durations). */
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

/* The one string builder of the library: a growable NUL-terminated string, zero-initialised ({ NULL, 0, 0, 0 });
   `oom` is sticky, so callers check it once at the end. */
static void cllm__sb_putn(cllm__sb *b, const char *s, size_t len) {
    size_t cap = b->cap ? b->cap : 256;
    char *grown = b->p;
    if (b->oom) return;
    while (cap < b->n + len + 1 && cap <= SIZE_MAX / 2) cap *= 2;
    if (cap != b->cap) grown = cap >= b->n + len + 1 ? (char *)CLLM_REALLOC(b->p, cap) : NULL;
    if (!grown) {
        b->oom = 1;
        return;
    }
    b->p = grown;
    b->cap = cap;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void cllm__sb_puts(cllm__sb *b, const char *s) {
    cllm__sb_putn(b, s, strlen(s));
}

static void cllm__sb_putc(cllm__sb *b, char c) {
    cllm__sb_putn(b, &c, 1);
}

/* Hands the string over (an empty one if nothing was written; NULL after an allocation failure). */
static char *cllm__sb_take(cllm__sb *b) {
    char *p = b->oom ? NULL : b->p ? b->p : cllm__strdup("");
    if (b->oom) CLLM_FREE(b->p);
    memset(b, 0, sizeof *b);
    return p;
}

static void cllm__sb_free(cllm__sb *b) {
    CLLM_FREE(b->p);
    memset(b, 0, sizeof *b);
}

/* A NUL-terminated copy of s[0..n), or NULL when out of memory. */
static char *cllm__strndup(const char *s, size_t n) {
    char *copy = (char *)CLLM_MALLOC(n + 1);
    if (copy) memcpy(copy, s, n);
    if (copy) copy[n] = 0;
    return copy;
}

/* A copy of s without leading and trailing white space. */
static char *cllm__strdup_trim(const char *s) {
    size_t start = 0, end = strlen(s);
    while (end > start && isspace((unsigned char)s[end - 1])) end--;
    while (start < end && isspace((unsigned char)s[start])) start++;
    return cllm__strndup(s + start, end - start);
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
        if (hit < 0) {
            cllm__sb_putn(&b, open, 2);
            p = open + 2;
            continue;
        }
        cllm__sb_puts(&b, values[hit] ? values[hit] : "");
        p = open + 4 + strlen(names[hit]);
    }
    cllm__sb_puts(&b, p);
    return cllm__sb_take(&b);
}

/* The return value of every batch call: CLLM_OK when all n items succeeded, else the first failure's code and a
   message counting the failures. Items are structs with `code` and `err` fields; code0/err0 point at item 0's and
   stride is the struct size. */
static cllm_result cllm__batch_result(const cllm_result *code0, const cllm_err *err0, size_t stride, int n,
                                      const char *what, cllm_err *err) {
    const char *codes = (const char *)code0;
    const cllm_err *e;
    cllm_result code = CLLM_OK;
    int i, failed = 0, first = -1;
    for (i = 0; i < n; i++) {
        if (*(const cllm_result *)(const void *)(codes + (size_t)i * stride) == CLLM_OK) continue;
        failed++;
        if (first < 0) first = i;
    }
    if (failed) code = *(const cllm_result *)(const void *)(codes + (size_t)first * stride);
    e = (const cllm_err *)(const void *)((const char *)err0 + (size_t)(failed ? first : 0) * stride);
    if (!failed) cllm__ok(err);
    else if (n == 1) cllm__fail(err, code, "%s", e->msg);
    else cllm__fail(err, code, "%d of %d %s failed; first (#%d): %s", failed, n, what, first, e->msg);
    return code;
}

/* ---- conversations --------------------------------------------------------------------------- */

static int cllm__valid_role(const char *r) {
    return r && (strcmp(r, "system") == 0 || strcmp(r, "user") == 0 || strcmp(r, "assistant") == 0);
}

CLLMDEF int cllm_msg_incomplete(const cllm_msg_meta *meta) {
    return meta && (strcmp(meta->finish_reason, "length") == 0 || strcmp(meta->finish_reason, "content_filter") == 0);
}

CLLMDEF cllm_result cllm_conv_push_meta(cllm_conv *c, const char *role, const char *content, const cllm_msg_meta *meta,
                                        cllm_err *err) {
    char *r, *t;
    if (!c || !role || !content)
        return cllm__fail(err, CLLM_ERR_ARG, "conversation: conversation, role and content are required");
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
    r = cllm__strdup(role);
    t = cllm__strdup(content);
    if (!r || !t) {
        CLLM_FREE(r);
        CLLM_FREE(t);
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
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
    for (i = 0; i < c->n; i++) {
        CLLM_FREE((void *)c->msgs[i].role);
        CLLM_FREE((void *)c->msgs[i].content);
    }
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
    cllm_result rc = CLLM_OK;
    memset(dst, 0, sizeof *dst);
    for (i = 0; i < src->n && rc == CLLM_OK; i++)
        rc = cllm_conv_push_meta(dst, src->msgs[i].role, src->msgs[i].content, cllm__conv_meta(src, i), err);
    if (rc != CLLM_OK) cllm_conv_free(dst);
    return rc;
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
    if (!ok) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

CLLMDEF cJSON *cllm_conv_to_json(const cllm_conv *c) {
    cJSON *arr = cJSON_CreateArray();
    int i;
    if (!arr) return NULL;
    for (i = 0; i < c->n; i++) {
        cJSON *m = cllm__message_json(c->msgs[i].role, c->msgs[i].content, cllm__conv_meta(c, i));
        if (!m) goto oom;
        if (!cJSON_AddItemToArray(arr, m)) {
            cJSON_Delete(m);
            goto oom;
        }
    }
    return arr;
oom:
    cJSON_Delete(arr);
    return NULL;
}

CLLMDEF cllm_result cllm_conv_from_json(cllm_conv *c, const cJSON *messages, cllm_err *err) {
    const cJSON *m;
    int i = 0;
    cllm_result rc = CLLM_OK;
    memset(c, 0, sizeof *c);
    if (!cJSON_IsArray(messages))
        return cllm__fail(err, CLLM_ERR_FORMAT, "\"messages\" must be an array of {\"role\", \"content\"} objects");
    cJSON_ArrayForEach(m, messages) {
        const char *role = cllm__json_str(m, "role");
        const char *content = cllm__json_str(m, "content");
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(m, "finish_reason");
        cllm_msg_meta meta;
        int finish_fits = cJSON_IsString(fr) && strlen(fr->valuestring) < sizeof meta.finish_reason;
        memset(&meta, 0, sizeof meta);
        if (!cllm__valid_role(role))
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"role\" must be \"system\", \"user\" or "
                            "\"assistant\"", i);
        else if (!content)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"content\" must be a string", i);
        else if (fr && !cJSON_IsNull(fr) && !finish_fits)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"finish_reason\" must be a string of at most %d "
                            "bytes", i, (int)sizeof meta.finish_reason - 1);
        else if (!cllm__json_int(m, "replaced", 0, &meta.replaced) || meta.replaced < 0)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "messages[%d]: \"replaced\" must be a count (an integer >= 0)", i);
        if (rc == CLLM_OK && cJSON_IsString(fr)) strcpy(meta.finish_reason, fr->valuestring);
        if (rc == CLLM_OK) rc = cllm_conv_push_meta(c, role, content, &meta, err);
        if (rc != CLLM_OK) break;
        i++;
    }
    if (rc != CLLM_OK) cllm_conv_free(c);
    return rc;
}

/* Renders a conversation for a prompt, one block per message, system messages left out: "**User**: ..." (bold = 1,
   the simulator's view) or "User: ..." (the judges' view). */
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
        if (s[i] == '"') in_str = !in_str;
        if (!in_str || s[i] != '\\' || i + 1 >= n) continue;
        if (s[i + 1] != 'u' || i + 6 > n || !cllm__hex4(s + i + 2, &v)) {
            i++;
            continue;
        }
        if (v == 0) (*nul)++;
        if (v >= 0xD800 && v <= 0xDBFF && i + 12 <= n && s[i + 6] == '\\' && s[i + 7] == 'u' &&
            cllm__hex4(s + i + 8, &w) && w >= 0xDC00 && w <= 0xDFFF) {
            i += 11;                                  /* a pair: cJSON decodes it */
            continue;
        }
        if (v >= 0xD800 && v <= 0xDFFF) {
            (*lone)++;
            if (!copy) copy = cllm__strndup(s, n);
            if (copy) memcpy(copy + i, "\\ufffd", 6);
        }
        i += 5;
    }
    return copy;
}

/* A copy of the JSON text s[0..n) with every \u0000 escape inside a string written as \u0020. */
static char *cllm__json_nul_to_space(const char *s, size_t n) {
    char *copy = cllm__strndup(s, n);
    size_t i;
    int in_str = 0;
    if (!copy) return NULL;
    for (i = 0; i < n; i++) {
        if (s[i] == '"') in_str = !in_str;
        if (!in_str || s[i] != '\\' || i + 1 >= n) continue;
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

/* Text received from an endpoint as we keep it: valid UTF-8 (each invalid sequence becomes U+FFFD, counted in
   *replaced; cllm__utf8_lossy, the tokenizer's decoder too), without any API key (cllm__scrub), and small enough that
   a JSONL line holding it stays readable: written as JSON it must fit in CLLM__MAX_TEXT_JSON bytes. *text (owned,
   NUL-terminated) is replaced by the kept text; on failure it is freed and set to NULL. */
static cllm_result cllm__received_text(char **text, size_t *replaced, cllm_err *err) {
    size_t n = strlen(*text), run, escaped;
    cllm__sb out;
    memset(&out, 0, sizeof out);
    if (cllm__utf8_check(*text, n) != n) {
        cllm__utf8_lossy((const unsigned char *)*text, n, 1, &out, replaced);
        if (!out.oom) {
            CLLM_FREE(*text);
            *text = out.p;
            n = out.n;
            memset(&out, 0, sizeof out);
        }
    }
    if (!out.oom && cllm__secret_find(*text, n, 1, &run) < n) {
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

/* ---- lenient JSON ---------------------------------------------------------------------------- */

/* Is a quote whose text ends at s[after] the end of a string? In valid JSON a closing quote is
   followed (after white space) by , : } ] or the end, so valid JSON is never changed by this
   test; a quote followed by anything else is taken as a quote inside the text. */
static int cllm__quote_closes(const char *s, size_t len, size_t after) {
    /* cJSON's white space: any control byte or space */
    while (after < len && s[after] && (unsigned char)s[after] <= 0x20) after++;
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
                char d = s[i], esc[8];
                int backslash = d == '\\' && i + 1 < len;
                size_t step = 1;
                if (backslash && s[i + 1] == '\'') {                          /* \' -> ' */
                    cllm__sb_putc(&b, '\'');
                    step = 2;
                } else if (backslash && strchr("\"\\/bfnrtu", s[i + 1])) {   /* a JSON escape: kept */
                    cllm__sb_putn(&b, s + i, 2);
                    step = 2;
                } else if (backslash) {                                       /* no escape: a backslash */
                    cllm__sb_puts(&b, "\\\\");
                } else if (d == c && (q == 1 ? cllm__quote_closes(s, len, i + 1)
                                             : (i + 2 < len && s[i + 1] == c && s[i + 2] == c))) {
                    i += q;
                    break;
                } else if (d == '"') {
                    cllm__sb_puts(&b, "\\\"");
                } else if ((unsigned char)d < 0x20) {
                    snprintf(esc, sizeof esc, "\\u%04x", (unsigned)(unsigned char)d);
                    cllm__sb_puts(&b, d == '\n' ? "\\n" : d == '\r' ? "\\r" : d == '\t' ? "\\t" : esc);
                } else {
                    cllm__sb_putc(&b, d);
                }
                i += step;
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
        } else {
            size_t k = i + 1;
            while (c == ',' && k < len && isspace((unsigned char)s[k])) k++;
            /* a comma right before } or ] is dropped; anything else is copied */
            if (!(c == ',' && k < len && (s[k] == '}' || s[k] == ']'))) cllm__sb_putc(&b, c);
            i++;
        }
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
    if (o && !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        o = NULL;
    }
    if (o && nuls && end) {                       /* a \u0000 inside this object, not in prose after it? */
        CLLM_FREE(cllm__json_escapes(base, (size_t)(end - base), &lone, &nuls));
        if (nuls) {
            cJSON_Delete(o);
            o = NULL;
            *nul = 1;
        }
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
        if (memchr(body, '{', (size_t)(close - body))) {
            *b = body;
            *e = close;
            return 1;
        }
        if (close == end) return 0;
        p = close + 3;
    }
    return 0;
}

CLLMDEF cJSON *cllm_json_parse_lenient(const char *text, cllm_err *err) {
    const char *region[2][2];
    int nreg = 1, mode, r, nul = 0;
    if (!text) {
        cllm__fail(err, CLLM_ERR_ARG, "model reply: no text");
        return NULL;
    }
    region[0][0] = text;
    region[0][1] = text + strlen(text);
    if (cllm__json_fence(text, &region[1][0], &region[1][1])) nreg = 2;
    /* Strict first (so valid JSON, even with a ``` inside a string, is read as written), then repaired; in each mode
       the whole text, then the fenced block; the object starts at the first '{' (or a later one, when prose before it
       holds braces). cJSON stops at the end of the object, so text after it does not matter. */
    for (mode = 0; mode < 2; mode++) {
        for (r = 0; r < nreg; r++) {
            const char *b = region[r][0];
            int tries;
            for (tries = 0; tries < 16; tries++, b++) {
                char *fixed;
                cJSON *o;
                b = (const char *)memchr(b, '{', (size_t)(region[r][1] - b));
                if (!b) break;
                fixed = mode ? cllm__json_repair(b, (size_t)(region[r][1] - b)) : NULL;
                if (mode && !fixed) {
                    cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
                    return NULL;
                }
                o = cllm__json_object_at(fixed ? fixed : b, fixed ? strlen(fixed) : (size_t)(region[r][1] - b), &nul);
                CLLM_FREE(fixed);
                if (o) {
                    cllm__ok(err);
                    return o;
                }
            }
        }
    }
    if (nul)
        cllm__fail(err, CLLM_ERR_FORMAT, "the model's JSON holds a NUL character (\\u0000), which collabllm.h text "
                   "cannot carry; refused rather than cut there");
    else                                          /* quotes the start of the reply, cut on a character boundary */
        cllm__fail(err, CLLM_ERR_FORMAT, "no JSON object found in the model's reply (%zu chars, starting \"%.*s\")",
                   strlen(text), (int)cllm__utf8_prefix(text, strlen(text), 60), text);
    return NULL;
}

/* A JSON number, a numeric string ("0.8"), a boolean (1/0) or an object {"score": x} as a double. */
static int cllm__json_number(const cJSON *v, double *out) {
    if (cJSON_IsNumber(v) || cJSON_IsBool(v)) {
        *out = cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsTrue(v) ? 1.0 : 0.0;
        return 1;
    }
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

/* ---- the client: configuration, messages ----------------------------------------------------- */

/* The endpoint's own explanation from an error body, for the message: error.message (OpenAI, vLLM), error as a string
   (Ollama), detail (FastAPI), message, else the start of the raw body. Scrubbed, one line, at most `cap` bytes. The
   scrub comes before the cut, so a key that the cut would shorten below 8 bytes is already gone. */
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

/* Appends a header line to the list, or frees the list and returns NULL when out of memory. */
static struct curl_slist *cllm__header_add(struct curl_slist *h, const char *line) {
    struct curl_slist *grown = curl_slist_append(h, line);
    if (!grown) curl_slist_free_all(h);
    return grown;
}

CLLMDEF cllm_result cllm_client_init(cllm_client *c, const cllm_client_config *cfg, cllm_err *err) {
    cllm_client_config d;
    const char *key, *env_base = getenv("OPENAI_BASE_URL");
    struct curl_slist *h;
    cllm__sb url = { NULL, 0, 0, 0 };
    size_t blen;
    int registered;
    memset(c, 0, sizeof *c);
    memset(&d, 0, sizeof d);
    if (cfg) d = *cfg;
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
        return cllm__fail(err, CLLM_ERR_ARG, "client settings: timeouts, deadline, backoff, max_concurrency and the "
                          "byte limits must not be negative");
    if (d.max_inflight_bytes < d.max_response_bytes)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "client settings: max_inflight_bytes (%lld) must be at least max_response_bytes (%ld), "
                          "or no response could reach its own limit", d.max_inflight_bytes, d.max_response_bytes);
    if (strncmp(d.base_url, "http://", 7) != 0 && strncmp(d.base_url, "https://", 8) != 0)
        return cllm__fail(err, CLLM_ERR_ARG, "the base URL must start with http:// or https:// (got \"%.*s\")",
                          CLLM__CUT(d.base_url, 200));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return cllm__fail(err, CLLM_ERR_HTTP, "libcurl failed to initialise");

    blen = strlen(d.base_url);
    while (blen > 0 && d.base_url[blen - 1] == '/') blen--;
    cllm__sb_putn(&url, d.base_url, blen);
    cllm__sb_puts(&url, "/chat/completions");
    c->url = cllm__sb_take(&url);
    c->model = d.model ? cllm__strdup(d.model) : NULL;
    key = getenv(d.api_key_env);
    if (key && *key) c->key = cllm__strdup(key);
    registered = cllm__secret_register(c->key);      /* from here on no message or received text holds it */
    h = cllm__header_add(NULL, "Content-Type: application/json");
    if (h) h = cllm__header_add(h, "Accept: application/json");
    if (h) h = cllm__header_add(h, "Expect:");                 /* no 100-continue round trip */
    if (h && c->key) {
        cllm__sb auth = { NULL, 0, 0, 0 };
        cllm__sb_puts(&auth, "Authorization: Bearer ");
        cllm__sb_puts(&auth, c->key);
        if (auth.oom) curl_slist_free_all(h);
        h = auth.oom ? NULL : cllm__header_add(h, auth.p);
        if (auth.p) memset(auth.p, 0, auth.n);              /* the key lives only in c->key and the header list */
        cllm__sb_free(&auth);
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
    return cllm__succeed(err);
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
    if (!model) {
        cllm__fail(err, CLLM_ERR_ARG,
                   "no model named for the endpoint: give one (the client's model or the request's)");
        return NULL;
    }
    if (!r->messages || r->n_messages <= 0) {
        cllm__fail(err, CLLM_ERR_ARG, "the request has no messages");
        return NULL;
    }
    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", model);
    msgs = cJSON_AddArrayToObject(root, "messages");
    for (i = 0; i < r->n_messages; i++) {
        cJSON *m = cJSON_CreateObject();
        if (!r->messages[i].role || !r->messages[i].content) {
            cJSON_Delete(m);
            cJSON_Delete(root);
            cllm__fail(err, CLLM_ERR_ARG, "request message %d has no role or content", i);
            return NULL;
        }
        cJSON_AddStringToObject(m, "role", r->messages[i].role);
        cJSON_AddStringToObject(m, "content", r->messages[i].content);
        cJSON_AddItemToArray(msgs, m);
    }
    if (r->params.temperature != 0)
        cJSON_AddNumberToObject(root, "temperature", r->params.temperature < 0 ? 0.0 : r->params.temperature);
    if (r->params.top_p != 0) cJSON_AddNumberToObject(root, "top_p", r->params.top_p);
    if (r->params.max_tokens > 0) cJSON_AddNumberToObject(root, "max_tokens", r->params.max_tokens);
    if (r->params.seed != 0) cJSON_AddNumberToObject(root, "seed", (double)r->params.seed);
    if (r->response_format) {
        cJSON *rf;
        if (r->response_format[0] == '{') rf = cJSON_Parse(r->response_format);
        else {
            rf = cJSON_CreateObject();
            cJSON_AddStringToObject(rf, "type", r->response_format);
        }
        if (!cJSON_IsObject(rf)) {
            cJSON_Delete(rf);
            cJSON_Delete(root);
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
        if (in_str && ch == '\\') i++;
        else if (in_str) in_str = ch != '"';
        else if (ch == '"') in_str = 1;
        else if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') depth--;
        if (depth > *max_depth) *max_depth = depth;
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
            snprintf(why, why_size, "choices[0].message has tool_calls and no text content (collabllm.h calls no "
                     "tools; ask for a text answer)");
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
            snprintf(why, why_size, "choices[0].message.content[%d] is a part of type \"%.*s\" with no text; "
                     "collabllm.h keeps text only", k, CLLM__CUT(type ? type : "?", 40));
            return NULL;
        }
        cllm__sb_puts(&b, text);
        k++;
    }
    if (k == 0) {
        snprintf(why, why_size, "choices[0].message.content is an empty list of parts");
        return NULL;
    }
    if (b.oom) snprintf(why, why_size, "out of memory");
    return cllm__sb_take(&b);
}

/* Reads a 2xx body into r: choices[0].message's text (see cllm__received_text), finish_reason, usage. */
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
            return cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: response JSON is truncated (%zu bytes end inside an "
                              "unclosed object or string; starts \"%s\")", c->url, len, snippet);
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
    /* remote text too: valid UTF-8, no key, cut to fit */
    if (fr) cllm__clean_line(r->finish_reason, sizeof r->finish_reason, fr, strlen(fr));
    why[0] = 0;
    if (e && !cJSON_IsNull(e)) {
        cllm__endpoint_message(json, len, snippet, sizeof snippet);
        rc = cllm__fail(&r->err, CLLM_ERR_HTTP, "%s: the endpoint returned an error: %s", c->url, snippet);
    } else if (!cJSON_IsObject(choice))
        rc = cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: response has no \"choices\"[0] object (not an OpenAI chat "
                        "completion?)", c->url);
    else if (!cJSON_IsObject(msg))
        rc = cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: response has no choices[0].message object", c->url);
    else if (!(text = cllm__message_text(msg, why, sizeof why))) {
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
            rc = cllm__fail(&r->err, CLLM_ERR_FORMAT, "%s: the reply's content holds a NUL character (\\u0000) at "
                            "byte %zu of %zu; collabllm.h keeps text as C strings and refuses the reply rather than "
                            "cut it there", c->url, strlen(text), strlen(full));
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
        if (!cllm__json_int(usage, "prompt_tokens", -1, &r->prompt_tokens) || r->prompt_tokens < 0)
            r->prompt_tokens = -1;
        if (!cllm__json_int(usage, "completion_tokens", -1, &r->completion_tokens) || r->completion_tokens < 0)
            r->completion_tokens = -1;
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

/* ---- the client: transfers, retries, concurrency --------------------------------------------- */
/* Each request is a small state machine driven by one curl multi handle:
     WAITING --(due and a slot is free)--> RUNNING --(done)--> DONE
                 ^                                   |
                 +----(retryable failure, wait)------+
   The loop starts what may start, lets curl move bytes, collects finished transfers, then sleeps until a socket is
   ready, a curl timer fires or the next retry is due. The limits of the declarations ("Limits and trust") hold here:
   cllm__on_data bounds the bodies (a body is released as soon as its attempt is read), cllm__xfer_start cuts each
   attempt's timeout to what deadline_ms leaves, and a retry that would start after the deadline is not made. */

typedef enum cllm__xfer_state { CLLM__WAITING = 0, CLLM__RUNNING, CLLM__DONE } cllm__xfer_state;

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
    cllm__xfer_state  state;
    double            not_before;     /* when the next attempt may start (cllm__now seconds)  */
    double            t_first;        /* start of the first attempt                           */
    double            deadline;       /* t_first + deadline_ms                                */
    char              errbuf[CURL_ERROR_SIZE];
} cllm__xfer;

/* Takes the next piece of a response body, within the transfer's limit and the batch's budget. */
static size_t cllm__on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
    cllm__xfer *x = (cllm__xfer *)userdata;
    size_t len = size * nmemb, need = x->resp.n + len + 1;
    if (x->resp.n + len > (size_t)x->limit) {     /* returning 0 makes curl abort the transfer */
        x->too_big = 1;
        return 0;
    }
    if (need > x->resp.cap) {                      /* grow by doubling, never past the limit */
        size_t cap = x->resp.cap ? x->resp.cap : 256;
        char *grown;
        while (cap < need) cap *= 2;
        if (cap > (size_t)x->limit + 1) cap = (size_t)x->limit + 1;
        if (*x->held + (long long)(cap - x->resp.cap) > x->budget) {
            x->over_budget = 1;
            return 0;
        }
        grown = (char *)CLLM_REALLOC(x->resp.p, cap);
        if (!grown) {
            x->resp.oom = 1;
            return 0;
        }
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
    if (status == 401 || status == 403)
        return c->key ? " (check the API key and the endpoint)"
                      : " (no API key was sent: its environment variable is unset or empty)";
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
        snprintf(why, size, "the request's deadline ran out (deadline_ms %ld covers every attempt and wait; %zu "
                 "bytes of this attempt's response had arrived)", c->cfg.deadline_ms, x->resp.n);
    } else {
        *retryable = cllm__curl_retryable(cc);
        if (cc == CURLE_PARTIAL_FILE)
            snprintf(why, size, "the connection closed before the whole response arrived (truncated body, %zu bytes)",
                     x->resp.n);
        else if (cc == CURLE_OPERATION_TIMEDOUT)
            snprintf(why, size, "timed out (%s; limits: connect_timeout_ms %ld, timeout_ms %ld)",
                     x->errbuf[0] ? x->errbuf : "no answer", c->cfg.connect_timeout_ms, c->cfg.timeout_ms);
        else snprintf(why, size, "%s (%s)", curl_easy_strerror(cc), x->errbuf);
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
    if (why[0] && (x->res->attempts > 1 || gave_up[0]))
        cllm__fail(&x->res->err, code, "%s: %s (gave up after %d attempts%s)", c->url, why, x->res->attempts, gave_up);
    else if (why[0]) cllm__fail(&x->res->err, code, "%s: %s", c->url, why);
    x->res->code = code;
    if (code != CLLM_OK) c->usage.failures++;
}

CLLMDEF cllm_result cllm_client_chat_batch(cllm_client *c, const cllm_chat_request *requests, int n,
                                           cllm_chat_result *results, cllm_err *err) {
    cllm__xfer *xs;
    long long held = 0;
    int i, running = 0, remaining = 0, limit;
    if (!c || !c->multi || n < 0 || (n > 0 && (!requests || !results)))
        return cllm__fail(err, CLLM_ERR_ARG, "chat completions: needs an initialised client and n >= 0 requests "
                          "and results");
    if (n == 0) return cllm__succeed(err);
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
        if (!x->body) {
            x->state = CLLM__DONE;
            results[i].code = results[i].err.code;
            continue;
        }
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
            if (cllm__xfer_start(c, x) == CLLM_OK) {
                x->state = CLLM__RUNNING;
                running++;
            } else {
                x->state = CLLM__DONE;
                x->res->code = x->res->err.code;
                c->usage.failures++;
                remaining--;
            }
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
    for (i = 0; i < n; i++) {
        cJSON_free(xs[i].body);
        cllm__sb_free(&xs[i].resp);
    }
    CLLM_FREE(xs);
    return CLLM__BATCH_RESULT(results, n, "requests", err);
}

CLLMDEF cllm_result cllm_client_chat(cllm_client *c, const cllm_chat_request *request, cllm_chat_result *result,
                                     cllm_err *err) {
    return cllm_client_chat_batch(c, request, 1, result, err);
}

/* ---- task files ------------------------------------------------------------------------------ */

static void cllm__task_free(cllm_task *t) {
    CLLM_FREE(t->prompt);
    CLLM_FREE(t->completion);
    cJSON_Delete(t->json);
    memset(t, 0, sizeof *t);
}

CLLMDEF void cllm_tasks_free(cllm_task *tasks, int n) {
    int i;
    if (!tasks) return;
    for (i = 0; i < n; i++) cllm__task_free(&tasks[i]);
    CLLM_FREE(tasks);
}

/* One line into t (which owns everything it points at afterwards, also on failure). */
static cllm_result cllm__task_parse(cllm_task *t, const char *line, size_t len, const char *path, int lineno,
                                    cllm_err *err) {
    const cJSON *p, *c;
    memset(t, 0, sizeof *t);
    if (!(t->json = cllm__jsonl_parse(line, len, path, lineno, err))) return CLLM_ERR_FORMAT;
    if (!cJSON_IsObject(t->json)) return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: not a JSON object", path, lineno);
    p = cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_prompt");
    c = cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_completion");
    if (!cJSON_IsString(p))
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: \"single_turn_prompt\" must be a string", path, lineno);
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
            int grown_cap = tcap ? 2 * tcap : 16;
            cllm_task *grown = NULL;
            if (tcap < INT_MAX / 2) grown = (cllm_task *)CLLM_REALLOC(ts, (size_t)grown_cap * sizeof *ts);
            if (!grown) {
                rc = cllm__fail(err, CLLM_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            ts = grown;
            tcap = grown_cap;
        }
        rc = cllm__task_parse(&ts[count], line, (size_t)len, path, lineno, err);
        count++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && count == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no tasks", path);
    if (rc != CLLM_OK) {
        cllm_tasks_free(ts, count);
        return rc;
    }
    *tasks = ts;
    *n = count;
    return cllm__succeed(err);
}

/* The task description CollabLLM v2 gives each of its datasets (examples/single_turn_ds/__init__.py, datasets_info). */
CLLMDEF const char *cllm_task_desc_of_dataset(const char *dataset) {
    static const char *const table[][2] = {
        { "math-hard", "question answering" }, { "abg-coqa", "question answering" },
        { "medium", "document editing" },      { "bigcodebench", "code generation" },
    };
    size_t i;
    for (i = 0; dataset && i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(dataset, table[i][0])) return table[i][1];
    return NULL;
}

/* ---- CollabLLM's rows: flat multiturn rows, v1's DPO rows, the published schema ---------------- */

/* Our metric names and CollabLLM v2's, which name a metric by what it scores ("x->metric"); names not listed here
   are the same in both. */
static const char *const cllm__collabllm_metric_names[][2] = {
    { "bleu", "document->bleu" },
    { "pass_rate", "runnable code->pass_rate" },
};

CLLMDEF const char *cllm_metric_name_collabllm(const char *name) {
    size_t i;
    for (i = 0; name && i < sizeof cllm__collabllm_metric_names / sizeof cllm__collabllm_metric_names[0]; i++)
        if (!strcmp(name, cllm__collabllm_metric_names[i][0])) return cllm__collabllm_metric_names[i][1];
    return name;
}

/* Whether p is a list of messages whose role and content are strings. */
static int cllm__is_messages(const cJSON *p) {
    const cJSON *m;
    if (!cJSON_IsArray(p)) return 0;
    cJSON_ArrayForEach(m, p) if (!cllm__json_str(m, "role") || !cllm__json_str(m, "content")) return 0;
    return 1;
}

/* The population standard deviation (np.std) of the numbers in rewards.MR; 0 when there are none. */
static double cllm__mr_std(const cJSON *row) {
    const cJSON *mr = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(row, "rewards"), "MR"), *v;
    double sum = 0, dev = 0;
    int n = 0;
    cJSON_ArrayForEach(v, mr) if (cJSON_IsNumber(v)) {
        sum += v->valuedouble;
        n++;
    }
    cJSON_ArrayForEach(v, mr) if (cJSON_IsNumber(v)) dev += (v->valuedouble - sum / n) * (v->valuedouble - sum / n);
    return n ? sqrt(dev / n) : 0.0;
}

/* The first field of o that a row of this kind needs and lacks (or holds with the wrong type), as "\"field\" is
   missing" / "\"field\" must be ..."; NULL when o is a good row. */
static const char *cllm__row_problem(const cJSON *o, cllm__rows_kind kind, char *buf, size_t cap) {
    static const char *const flat[] = { "prompt", "completion", "conv_id", "score", "turn_id" };
    static const char *const v1[] = { "prompt", "chosen", "rejected", "idx", "chosen_eval", "rejected_eval" };
    const char *const *keys = kind == CLLM__ROWS_FLAT ? flat : v1;
    int n = kind == CLLM__ROWS_FLAT ? 5 : 6, i, id;
    for (i = 0; i < n; i++) {
        const char *key = keys[i], *want = NULL;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
        if (!v && strcmp(key, "turn_id") != 0) want = NULL;
        else if (!strcmp(key, "prompt") && !cllm__is_messages(v)) want = "a list of {\"role\", \"content\"} strings";
        else if ((!strcmp(key, "completion") || !strcmp(key, "chosen") || !strcmp(key, "rejected")) &&
                 !cJSON_IsString(v))
            want = "a string";
        else if ((!strcmp(key, "conv_id") || !strcmp(key, "idx") || !strcmp(key, "turn_id")) &&
                 (!cllm__json_int(o, key, 0, &id) || id < 0))
            want = "a non-negative integer";
        else if (!strcmp(key, "score") && !cJSON_IsNumber(v) && !cJSON_IsNull(v)) want = "a number or null";
        else if (strstr(key, "_eval") && !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(v, "reward")))
            want = "an object with a number \"reward\"";
        else continue;
        if (want) snprintf(buf, cap, "\"%s\" must be %s", key, want);
        else snprintf(buf, cap, "\"%s\" is missing", key);
        return buf;
    }
    return NULL;
}

static void cllm__rowset_free(cllm__rowset *rows) {
    int i;
    for (i = 0; i < stbds_arrlen(rows->lines); i++) cJSON_Delete(rows->lines[i]);
    stbds_arrfree(rows->lines);
    stbds_arrfree(rows->recs);
    memset(rows, 0, sizeof *rows);
}

/* Adds the scored rows of one line (a flat row gives one, a v1 row two: chosen then rejected). */
static void cllm__rowset_add(cllm__rowset *rows, const cJSON *o) {
    cllm__rec r;
    memset(&r, 0, sizeof r);
    r.row = o;
    r.prompt = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    if (rows->kind == CLLM__ROWS_V1_DPO) {
        cllm__json_int(o, "idx", 0, &r.conv_id);
        r.turn_id = cJSON_GetArraySize(r.prompt);
        r.text = cllm__json_str(o, "chosen");
        r.eval = cJSON_GetObjectItemCaseSensitive(o, "chosen_eval");
        r.score = cJSON_GetObjectItemCaseSensitive(r.eval, "reward")->valuedouble;
        stbds_arrput(rows->recs, r);
        r.text = cllm__json_str(o, "rejected");
        r.eval = cJSON_GetObjectItemCaseSensitive(o, "rejected_eval");
        r.score = cJSON_GetObjectItemCaseSensitive(r.eval, "reward")->valuedouble;
        stbds_arrput(rows->recs, r);
        return;
    }
    if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "score"))) return;   /* every MR sample failed */
    cllm__json_int(o, "conv_id", 0, &r.conv_id);
    cllm__json_int(o, "turn_id", cJSON_GetArraySize(r.prompt), &r.turn_id);       /* v2: len(prompt) when absent */
    r.text = cllm__json_str(o, "completion");
    r.score = cJSON_GetObjectItemCaseSensitive(o, "score")->valuedouble;
    r.mr_std = cllm__mr_std(o);
    stbds_arrput(rows->recs, r);
}

/* Reads flat multiturn rows (our records or the published ones) or v1's DPO rows; the first row decides which, and
   every row must be of that kind. Errors name path:line and the field. */
static cllm_result cllm__rowset_read(cllm__rowset *rows, const char *path, cllm_err *err) {
    static const char *const kind_name[] = {
        "a flat multiturn row (data_fmt/published.md: prompt, completion, conv_id, score)",
        "a v1 DPO row (data_fmt/published.md: prompt, chosen, rejected, idx, chosen_eval, rejected_eval)",
    };
    FILE *f = cllm__open_read(path, "a JSONL file", err);
    char *line = NULL, why[160];
    size_t cap = 0;
    long len = 0;
    int lineno = 0, first = 0;
    cllm_result rc = CLLM_OK;
    memset(rows, 0, sizeof *rows);
    if (!f) return CLLM_ERR_IO;
    while (rc == CLLM_OK && (len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *o;
        const char *problem;
        cllm__rows_kind kind;
        lineno++;
        if (len == 0) continue;
        if (!(o = cllm__jsonl_parse(line, (size_t)len, path, lineno, err))) {
            rc = CLLM_ERR_FORMAT;
            break;
        }
        stbds_arrput(rows->lines, o);
        kind = cJSON_GetObjectItemCaseSensitive(o, "chosen_eval") ? CLLM__ROWS_V1_DPO : CLLM__ROWS_FLAT;
        if (!first) rows->kind = kind;
        if (!first) first = lineno;
        if (!cJSON_IsObject(o)) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: not a JSON object", path, lineno);
        else if (kind != rows->kind)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: %s after %s at line %d; one kind of row per file", path,
                            lineno, kind_name[kind], kind_name[rows->kind], first);
        else if ((problem = cllm__row_problem(o, kind, why, sizeof why)) != NULL)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: %s, in %s", path, lineno, problem, kind_name[kind]);
        else cllm__rowset_add(rows, o);
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && !first) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no records (the file is empty; "
                                                 "data_fmt/records.md)", path);
    rows->n = (int)stbds_arrlen(rows->recs);
    if (rc != CLLM_OK) cllm__rowset_free(rows);
    return rc;
}

/* A copy of a list of messages with only their role and content (the published rows hold nothing else). */
static cJSON *cllm__plain_messages(const cJSON *msgs) {
    cJSON *out = cJSON_CreateArray();
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "role", cllm__json_str(m, "role") ? cllm__json_str(m, "role") : "");
        cJSON_AddStringToObject(c, "content", cllm__json_str(m, "content") ? cllm__json_str(m, "content") : "");
        cJSON_AddItemToArray(out, c);
    }
    return out;
}

/* One flat row in the published schema, fields in the order v2's MultiturnDataset._flatten_nested writes them. */
static cJSON *cllm__collabllm_row(const cJSON *o) {
    const cJSON *stc = cJSON_GetObjectItemCaseSensitive(o, "single_turn_completion");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(o, "single_turn_metadata");
    const cJSON *sessions = cJSON_GetObjectItemCaseSensitive(o, "sessions");
    const cJSON *rewards = cJSON_GetObjectItemCaseSensitive(o, "rewards"), *v;
    cJSON *out = cJSON_CreateObject(), *list;
    int turn_id;
    cJSON_AddItemToObject(out, "prompt", cllm__plain_messages(cJSON_GetObjectItemCaseSensitive(o, "prompt")));
    cJSON_AddStringToObject(out, "completion", cllm__json_str(o, "completion"));
    cJSON_AddItemToObject(out, "conv_id", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(o, "conv_id"), 1));
    cJSON_AddItemToObject(out, "score", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(o, "score"), 1));
    v = cJSON_GetObjectItemCaseSensitive(o, "single_turn_prompt");
    cJSON_AddStringToObject(out, "single_turn_prompt", cJSON_IsString(v) ? v->valuestring : "");
    if (cJSON_IsString(stc) || !stc || cJSON_IsNull(stc)) {
        cJSON_AddStringToObject(out, "single_turn_completion", stc && cJSON_IsString(stc) ? stc->valuestring : "");
    } else {                                          /* an object (BigCodeBench): v2 holds its JSON text */
        char *text = cJSON_PrintUnformatted(stc);
        cJSON_AddStringToObject(out, "single_turn_completion", text ? text : "");
        cJSON_free(text);
    }
    cJSON_AddItemToObject(out, "single_turn_metadata", cJSON_IsObject(meta) ? cJSON_Duplicate(meta, 1)
                                                                             : cJSON_CreateObject());
    cllm__json_int(o, "turn_id", cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "prompt")), &turn_id);
    cJSON_AddNumberToObject(out, "turn_id", turn_id);
    if (sessions) {
        list = cJSON_AddArrayToObject(out, "sessions");
        cJSON_ArrayForEach(v, sessions) cJSON_AddItemToArray(list, cllm__plain_messages(v));
    }
    if (rewards) {                                    /* v2's order: the metrics, then MR */
        list = cJSON_AddObjectToObject(out, "rewards");
        cJSON_ArrayForEach(v, rewards) {
            if (!strcmp(v->string, "MR") || !strcmp(v->string, "forward_tokens")) continue;
            cJSON_AddItemToObject(list, cllm_metric_name_collabllm(v->string), cJSON_Duplicate(v, 1));
        }
        v = cJSON_GetObjectItemCaseSensitive(rewards, "MR");
        if (v) cJSON_AddItemToObject(list, "MR", cJSON_Duplicate(v, 1));
    }
    return out;
}

CLLMDEF cllm_result cllm_records_to_collabllm(const char *records_path, const char *out_path, int *n_rows,
                                              int *n_skipped, cllm_err *err) {
    cllm__rowset rows;
    cJSON *out;
    int i, skipped = 0;
    cllm_result rc;
    if (n_rows) *n_rows = 0;
    if (n_skipped) *n_skipped = 0;
    if ((rc = cllm__rowset_read(&rows, records_path, err)) != CLLM_OK) return rc;
    if (rows.kind != CLLM__ROWS_FLAT) {
        cllm__rowset_free(&rows);
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: v1 DPO rows, not flat multiturn rows (data_fmt/published.md)",
                          records_path);
    }
    out = cJSON_CreateArray();
    for (i = 0; out && i < stbds_arrlen(rows.lines); i++) {
        if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(rows.lines[i], "score")))
            cJSON_AddItemToArray(out, cllm__collabllm_row(rows.lines[i]));
        else skipped++;
    }
    rc = out ? cllm__write_jsonl(out_path, out, err) : cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (rc == CLLM_OK && n_rows) *n_rows = cJSON_GetArraySize(out);
    if (rc == CLLM_OK && n_skipped) *n_skipped = skipped;
    cJSON_Delete(out);
    cllm__rowset_free(&rows);
    return rc == CLLM_OK ? cllm__succeed(err) : rc;
}

/* -------------------------------------------------------------------------------------------- */
/* II.7 Chat backends: API and local models as assistants and simulators                        */
/* -------------------------------------------------------------------------------------------- */

/* One interface, cllm_chat_backend, completes n conversations with the backend's own sampling settings; an API model
   (over the client) and a local model (over cllm_local_chat) implement it. The user simulator and the judges (section
   I.4) and the assistant below are written once on top of it; the public roles (cllm_llm_sim, cllm_local_user_sim,
   cllm_api_assistant, cllm_local_assistant, cllm_judge) only choose a backend and their defaults. */

/* ---- asking many prompts at once, re-asking unusable answers --------------------------------- */

/* Sends prompts[i] (one user message each; NULL entries are skipped) to the backend and hands each
   answer to take(ctx, i, answer, last), which records it in the caller's own result and returns 1,
   or returns 0 to draw a new sample (never when `last`). The refused ones are asked again together,
   for up to `retries` more rounds. A backend that answers one at a time (a local model) takes each
   prompt through its rounds before the next, so that its seed counter runs in the same order as
   asking them one by one. A failed call is final: the backend already retried it. */
static void cllm__ask_all(const cllm_chat_backend *backend, char *const *prompts, int n, int json, int retries,
                          cllm__take_fn take, void *ctx) {
    int *pending = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    cllm_message *msgs = (cllm_message *)cllm__calloc((size_t)n + 1, sizeof *msgs);
    cllm_conv *convs = (cllm_conv *)cllm__calloc((size_t)n + 1, sizeof *convs);
    cllm_reply *answers = (cllm_reply *)cllm__calloc((size_t)n + 1, sizeof *answers);
    int group = backend->one_at_a_time ? 1 : n;
    int first, i, k, np, round;
    for (first = 0; pending && msgs && convs && answers && first < n; first += group) {
        for (i = first, np = 0; i < first + group && i < n; i++)
            if (prompts[i]) pending[np++] = i;
        for (round = 0; np > 0 && round <= retries; round++) {
            int keep = 0;
            for (k = 0; k < np; k++) {
                msgs[k].role = "user";
                msgs[k].content = prompts[pending[k]];
                convs[k].msgs = &msgs[k];
                convs[k].n = 1;
            }
            memset(answers, 0, (size_t)np * sizeof *answers);
            backend->complete(backend->ctx, convs, np, json, answers);
            for (k = 0; k < np; k++) {
                if (!take(ctx, pending[k], &answers[k], round == retries)) pending[keep++] = pending[k];
                cllm_reply_free(&answers[k]);
            }
            np = keep;
        }
    }
    CLLM_FREE(pending);
    CLLM_FREE(msgs);
    CLLM_FREE(convs);
    CLLM_FREE(answers);
}

/* ---- an API model as a backend --------------------------------------------------------------- */

/* n conversations as n concurrent requests of the client (cllm_client_chat_batch). */
static void cllm__api_complete(void *ctx, const cllm_conv *convs, int n, int json, cllm_reply *out) {
    const cllm_api_backend *b = (const cllm_api_backend *)ctx;
    cllm_chat_request *reqs = (cllm_chat_request *)cllm__calloc((size_t)n + 1, sizeof *reqs);
    cllm_chat_result *res = (cllm_chat_result *)cllm__calloc((size_t)n + 1, sizeof *res);
    int i;
    for (i = 0; reqs && res && i < n; i++) {
        reqs[i].messages = convs[i].msgs;
        reqs[i].n_messages = convs[i].n;
        reqs[i].params = *b->params;
        reqs[i].response_format = json ? "json_object" : NULL;
    }
    if (reqs && res) cllm_client_chat_batch(b->client, reqs, n, res, NULL);
    for (i = 0; i < n; i++) {
        if (!reqs || !res) {
            out[i].code = cllm__fail(&out[i].err, CLLM_ERR_NOMEM, "out of memory before the endpoint was asked");
            continue;
        }
        out[i].code = res[i].code;
        if (res[i].code != CLLM_OK) out[i].err = res[i].err;
        else {
            out[i].text = res[i].content;
            res[i].content = NULL;
            snprintf(out[i].meta.finish_reason, sizeof out[i].meta.finish_reason, "%s", res[i].finish_reason);
            out[i].meta.replaced = res[i].replaced;
        }
        cllm_chat_result_free(&res[i]);
    }
    CLLM_FREE(reqs);
    CLLM_FREE(res);
}

/* The client with sampling parameters (borrowed) as a backend; it names the model in messages. */
static void cllm__api_backend_init(cllm_api_backend *b, cllm_client *client, const cllm_llm_params *params) {
    b->client = client;
    b->params = params;
    b->backend.complete = cllm__api_complete;
    b->backend.ctx = b;
    b->backend.one_at_a_time = 0;
    b->backend.name = params->model ? params->model : client ? client->model : NULL;
}

/* ---- loading: model + tokenizer + the ids that end a turn ------------------------------------ */

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
    rc = cllm_tokenizer_load(&lm->tok, dir, err);
    if (rc == CLLM_OK && lm->tok.n_ids > lm->model.config.vocab_size)
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tokenizer.json has ids up to %d but config.json's vocab_size is %d: "
                        "they are not from the same model", dir, lm->tok.n_ids - 1, lm->model.config.vocab_size);
    if (rc != CLLM_OK) {
        cllm_local_lm_free(lm);
        return rc;
    }
    end = lm->tok.chat_family == CLLM_CHAT_LLAMA3 || lm->tok.chat_family == CLLM_CHAT_LLAMA31 ? llama_end
        : lm->tok.chat_family ? chatml_end : NULL;
    for (i = 0; end && end[i]; i++) cllm__local_add_stop_id(lm, cllm_tokenizer_token_id(&lm->tok, end[i]));
    cllm__local_add_stop_id(lm, lm->tok.eos_id);
    for (i = 0; i < lm->model.config.n_eos; i++) cllm__local_add_stop_id(lm, lm->model.config.eos_token_ids[i]);
    return cllm__succeed(err);
}

/* ---- one conversation: render, generate, decode ---------------------------------------------- */

CLLMDEF void cllm_local_outputs_free(cllm_local_output *out, int n) {
    int i;
    if (!out) return;
    for (i = 0; i < n; i++) {
        CLLM_FREE(out[i].text);
        CLLM_FREE(out[i].ids);
        CLLM_FREE(out[i].logprobs);
        CLLM_FREE(out[i].prompt_ids);
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

typedef struct cllm__local_stop_ctx {
    const cllm_tokenizer *tok;
    const cllm_local_gen_config *cfg;
} cllm__local_stop_ctx;

/* cllm_generate's stop test: the caller's on_token, then the stop strings on the text decoded so
   far. Decoding everything at each token costs O(n^2) byte copies per sample, which is small
   next to a forward step; it keeps the test exactly the text that is returned. */
static int cllm__local_stop(void *ctx, const int *ids, int n) {
    const cllm__local_stop_ctx *sc = (const cllm__local_stop_ctx *)ctx;
    char *text = NULL;
    int hit;
    if (sc->cfg->on_token && sc->cfg->on_token(sc->cfg->on_token_ctx, ids, n)) return 1;
    if (sc->cfg->n_stop <= 0) return 0;
    if (cllm_tokenizer_decode(sc->tok, ids, n, !sc->cfg->keep_special, &text, NULL, NULL) != CLLM_OK) return 0;
    hit = text && cllm__local_find_stop(text, sc->cfg) != NULL;
    CLLM_FREE(text);
    return hit;
}

/* o->text from o->ids: the token that ended the turn is left out, a stop string cuts the text. */
static cllm_result cllm__local_text(const cllm_tokenizer *tok, const cllm_local_gen_config *cfg, cllm_local_output *o,
                                    cllm_err *err) {
    int n = o->n - (o->finish == CLLM_FINISH_EOS);
    cllm_result rc = cllm_tokenizer_decode(tok, o->ids, n, !cfg->keep_special, &o->text, NULL, err);
    if (rc == CLLM_OK && !o->text && !(o->text = cllm__strdup("")))
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
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
    memset(&g, 0, sizeof g);
    memset(out, 0, (size_t)n_samples * sizeof *out);
    if (cfg->n_stop < 0 || (cfg->n_stop > 0 && !cfg->stop))
        return cllm__fail(err, CLLM_ERR_ARG, "local generation: n_stop must be >= 0, with that many stop strings");
    for (s = 0; s < cfg->n_stop; s++)
        if (!cfg->stop[s] || !cfg->stop[s][0])
            return cllm__fail(err, CLLM_ERR_ARG, "local generation: stop string %d is empty", s);
    ro.add_generation_prompt = 1;
    if ((rc = cllm_chat_render(&lm->tok, msgs, n_msgs, &ro, NULL, &prompt, NULL, &n_prompt, err)) != CLLM_OK) return rc;
    call = lm->calls++;
    g.sampler = cfg->sampler;
    g.sampler.seed = cllm__local_seed(cfg->sampler.seed, call);
    g.max_new_tokens = cfg->max_new_tokens;
    g.eos_ids = lm->stop_ids;
    g.n_eos = lm->n_stop_ids;
    sc.tok = &lm->tok;
    sc.cfg = cfg;
    g.stop = cfg->n_stop > 0 || cfg->on_token ? cllm__local_stop : NULL;
    g.stop_ctx = &sc;
    comp = (cllm_completion *)cllm__calloc((size_t)n_samples, sizeof *comp);
    if (!comp) {
        CLLM_FREE(prompt);
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    rc = cllm_generate(&lm->model, prompt, n_prompt, n_samples, &g, comp, err);
    for (s = 0; rc == CLLM_OK && s < n_samples; s++) {
        cllm_local_output *o = &out[s];
        o->ids = comp[s].ids;
        o->logprobs = comp[s].logprobs;
        o->n = comp[s].n;
        o->finish = (cllm_finish_reason)comp[s].finish;
        comp[s].ids = NULL;
        comp[s].logprobs = NULL;
        o->call = call;
        o->n_prompt = n_prompt;
        o->prompt_ids = (int *)cllm__calloc((size_t)n_prompt, sizeof(int));
        if (!o->prompt_ids) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
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
static cllm_local_gen_config cllm__local_gen_def(const cllm_local_gen_config *cfg, float temperature,
                                                 int max_new_tokens) {
    cllm_local_gen_config c;
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    c.sampler.temperature = cllm__def(c.sampler.temperature, temperature);
    c.max_new_tokens = cllm__def(c.max_new_tokens, max_new_tokens);
    return c;
}

CLLMDEF cllm_result cllm_local_chat(cllm_local_lm *lm, const cllm_conv *histories, int n, int n_samples,
                                    const cllm_local_gen_config *cfg, cllm_local_output *out, cllm_err *err) {
    cllm_local_gen_config c = cllm__local_gen_def(cfg, 1.0f, 256);
    cllm_result rc;
    int i;
    if (!lm || !lm->model.params_memory || !lm->tok.priv)
        return cllm__fail(err, CLLM_ERR_ARG, "local model: not loaded");
    if (n < 0 || n_samples < 1 || n_samples > 65536 || (n > 0 && (!histories || !out)) || n > INT_MAX / n_samples)
        return cllm__fail(err, CLLM_ERR_ARG,
                          "local chat: needs n >= 0 conversations, n_samples in [1, 65536] and n * n_samples outputs");
    memset(out, 0, (size_t)n * (size_t)n_samples * sizeof *out);
    for (i = 0; i < n; i++) {
        cllm_local_output *o = out + (size_t)i * n_samples;
        rc = cllm__local_chat_one(lm, histories[i].msgs, histories[i].n, n_samples, &c, o, err);
        if (rc == CLLM_OK) continue;
        cllm_local_outputs_free(out, i * n_samples);
        return rc;
    }
    return cllm__succeed(err);
}

/* ---- a local model as a backend -------------------------------------------------------------- */

/* n conversations one after the other, one sample each (cllm__local_chat_one: the counter scheme
   seeds them in this order). A sample ended by an end-of-turn/EOS token or a stop string finishes
   "stop", as vLLM reports both; max_new_tokens "length". */
static void cllm__local_complete(void *ctx, const cllm_conv *convs, int n, int json, cllm_reply *out) {
    cllm_local_backend *b = (cllm_local_backend *)ctx;
    int i;
    (void)json;
    for (i = 0; i < n; i++) {
        cllm_local_output o;
        b->generations++;
        out[i].code = cllm__local_chat_one(b->lm, convs[i].msgs, convs[i].n, 1, b->gen, &o, &out[i].err);
        if (out[i].code == CLLM_OK) {
            out[i].text = o.text;
            o.text = NULL;
            snprintf(out[i].meta.finish_reason, sizeof out[i].meta.finish_reason, "%s",
                     o.finish == CLLM_FINISH_LENGTH ? "length" : "stop");
        }
        cllm_local_outputs_free(&o, 1);
    }
}

/* The model with its generation settings (borrowed, defaults applied) as a backend. */
static void cllm__local_backend_init(cllm_local_backend *b, cllm_local_lm *lm, const cllm_local_gen_config *gen) {
    b->lm = lm;
    b->gen = gen;
    b->backend.complete = cllm__local_complete;
    b->backend.ctx = b;
    b->backend.one_at_a_time = 1;
    b->backend.name = "(local model)";
}

/* ---- the roles: user simulators, assistants and judges on a backend -------------------------- */

/* Zero sampling fields take the role's defaults. */
static cllm_llm_params cllm__params_def(cllm_llm_params p, double temperature, int max_tokens) {
    p.temperature = cllm__def(p.temperature, temperature);
    p.max_tokens = cllm__def(p.max_tokens, max_tokens);
    return p;
}

/* A retry budget: zero means the default 3, negative none. */
static int cllm__retries_def(int r) {
    return r < 0 ? 0 : cllm__def(r, 3);
}

/* The assistant on a backend: the system prompt goes first in what the model sees, never into the conversation. */
static void cllm__assistant_ask(const cllm_chat_backend *backend, const char *system_prompt,
                                const cllm_conv *histories, int n, cllm_reply *out) {
    cllm_conv *views;
    int i, j, built;
    if (!system_prompt) {
        backend->complete(backend->ctx, histories, n, 0, out);
        return;
    }
    views = (cllm_conv *)cllm__calloc((size_t)n + 1, sizeof *views);
    for (built = 0; views && built < n; built++) {
        const cllm_conv *h = &histories[built];
        cllm_message *msgs = (cllm_message *)cllm__calloc((size_t)h->n + 1, sizeof *msgs);
        if (!msgs) break;
        msgs[0].role = "system";
        msgs[0].content = system_prompt;
        for (j = 0; j < h->n; j++) msgs[1 + j] = h->msgs[j];
        views[built].msgs = msgs;
        views[built].n = 1 + h->n;
    }
    if (built == n) backend->complete(backend->ctx, views, n, 0, out);
    for (i = 0; built < n && i < n; i++)
        cllm__fail(&out[i].err, out[i].code = CLLM_ERR_NOMEM, "out of memory before the assistant was asked");
    for (i = 0; i < built; i++) CLLM_FREE(views[i].msgs);
    CLLM_FREE(views);
}

/* The roles' interfaces. Each role struct starts with its interface and is the interface's ctx, so
   one single-conversation function serves every role: the batch of one. */
static cllm_result cllm__sim_turn_one(void *ctx, const cllm_goal *goal, const cllm_conv *history, cllm_reply *out) {
    ((const cllm_user_sim *)ctx)->turn_batch(ctx, goal, history, 1, out);
    return out->code;
}

static cllm_result cllm__respond_one(void *ctx, const cllm_conv *history, cllm_reply *out) {
    ((const cllm_assistant *)ctx)->respond_batch(ctx, history, 1, out);
    return out->code;
}

static cllm_result cllm__llm_sim_batch(void *ctx, const cllm_goal *goals, const cllm_conv *histories, int n,
                                       cllm_reply *out) {
    cllm_llm_sim *s = (cllm_llm_sim *)ctx;
    cllm__user_sim_ask(&s->api.backend, &s->cfg, goals, histories, n, out);
    return CLLM_OK;
}

static cllm_result cllm__local_sim_batch(void *ctx, const cllm_goal *goals, const cllm_conv *histories, int n,
                                         cllm_reply *out) {
    cllm_local_user_sim *s = (cllm_local_user_sim *)ctx;
    cllm_llm_sim_config settings;
    memset(&settings, 0, sizeof settings);
    settings.termination = s->cfg.termination;
    settings.prompt = s->cfg.prompt;
    settings.max_parse_retries = s->cfg.max_parse_retries;
    cllm__user_sim_ask(&s->local.backend, &settings, goals, histories, n, out);
    return CLLM_OK;
}

static cllm_result cllm__api_assistant_batch(void *ctx, const cllm_conv *histories, int n, cllm_reply *out) {
    cllm_api_assistant *a = (cllm_api_assistant *)ctx;
    if (a->cfg.proactive)
        cllm__proactive_ask(&a->api.backend, a->cfg.proactive_prompt, a->cfg.params.max_tokens, histories, n, out);
    else cllm__assistant_ask(&a->api.backend, a->cfg.system_prompt, histories, n, out);
    return CLLM_OK;
}

static cllm_result cllm__local_assistant_batch(void *ctx, const cllm_conv *histories, int n, cllm_reply *out) {
    cllm_local_assistant *a = (cllm_local_assistant *)ctx;
    if (a->cfg.proactive)
        cllm__proactive_ask(&a->local.backend, a->cfg.proactive_prompt, a->cfg.gen.max_new_tokens, histories, n, out);
    else cllm__assistant_ask(&a->local.backend, a->cfg.system_prompt, histories, n, out);
    return CLLM_OK;
}

/* (a) The LLM user simulator: an API model, temperature 1.0 and 1024 tokens (CollabLLM's defaults). */
CLLMDEF void cllm_llm_sim_init(cllm_llm_sim *s, cllm_client *client, const cllm_llm_sim_config *cfg) {
    memset(s, 0, sizeof *s);
    if (cfg) s->cfg = *cfg;
    s->cfg.params = cllm__params_def(s->cfg.params, 1.0, 1024);
    s->cfg.termination = cllm__def(s->cfg.termination, CLLM_TERMINATION_SIGNAL);
    s->cfg.max_parse_retries = cllm__retries_def(s->cfg.max_parse_retries);
    cllm__api_backend_init(&s->api, client, &s->cfg.params);
    s->sim.turn = cllm__sim_turn_one;
    s->sim.turn_batch = cllm__llm_sim_batch;
    s->sim.ctx = s;
}

/* (b) The user simulator as a local model, with the API simulator's defaults. */
CLLMDEF void cllm_local_user_sim_init(cllm_local_user_sim *s, cllm_local_lm *lm,
                                      const cllm_local_user_sim_config *cfg) {
    memset(s, 0, sizeof *s);
    if (cfg) s->cfg = *cfg;
    s->cfg.gen = cllm__local_gen_def(&s->cfg.gen, 1.0f, 1024);
    s->cfg.termination = cllm__def(s->cfg.termination, CLLM_TERMINATION_SIGNAL);
    s->cfg.max_parse_retries = cllm__retries_def(s->cfg.max_parse_retries);
    cllm__local_backend_init(&s->local, lm, &s->cfg.gen);
    s->sim.turn = cllm__sim_turn_one;
    s->sim.turn_batch = cllm__local_sim_batch;
    s->sim.ctx = s;
}

/* An assistant served by an API model: temperature 0.8 and 2048 tokens (CollabLLM's defaults). */
CLLMDEF void cllm_api_assistant_init(cllm_api_assistant *a, cllm_client *client, const cllm_api_assistant_config *cfg) {
    memset(a, 0, sizeof *a);
    if (cfg) a->cfg = *cfg;
    a->cfg.params = cllm__params_def(a->cfg.params, 0.8, 2048);
    cllm__api_backend_init(&a->api, client, &a->cfg.params);
    a->assistant.respond = cllm__respond_one;
    a->assistant.respond_batch = cllm__api_assistant_batch;
    a->assistant.ctx = a;
}

/* The policy as an assistant: temperature 0.8 as the API assistant's, 1024 new tokens (vLLM's
   max_tokens in CollabLLM's local path). */
CLLMDEF void cllm_local_assistant_init(cllm_local_assistant *a, cllm_local_lm *lm,
                                       const cllm_local_assistant_config *cfg) {
    memset(a, 0, sizeof *a);
    if (cfg) a->cfg = *cfg;
    a->cfg.gen = cllm__local_gen_def(&a->cfg.gen, 0.8f, 1024);
    cllm__local_backend_init(&a->local, lm, &a->cfg.gen);
    a->assistant.respond = cllm__respond_one;
    a->assistant.respond_batch = cllm__local_assistant_batch;
    a->assistant.ctx = a;
}

/* The judges: temperature 0 (sent as 0) and 2048 tokens, the built-in prompts of section I.4. */
CLLMDEF void cllm_judge_init(cllm_judge *j, cllm_client *client, const cllm_judge_config *cfg) {
    memset(j, 0, sizeof *j);
    if (cfg) j->cfg = *cfg;
    j->cfg.params = cllm__params_def(j->cfg.params, -1.0, 2048);
    j->cfg.max_parse_retries = cllm__retries_def(j->cfg.max_parse_retries);
    j->cfg.interactivity_prompt = cllm__def(j->cfg.interactivity_prompt, cllm__prompt_interactivity);
    j->cfg.accuracy_prompt = cllm__def(j->cfg.accuracy_prompt, cllm__prompt_accuracy);
    j->cfg.extract_prompt = cllm__def(j->cfg.extract_prompt, cllm__prompt_extract);
    j->cfg.interactivity_v1_prompt = cllm__def(j->cfg.interactivity_v1_prompt, cllm__prompt_interactivity_v1);
    cllm__api_backend_init(&j->api, client, &j->cfg.params);
}

/* -------------------------------------------------------------------------------------------- */
/* II.8 Metrics: built-in metrics, pass_rate, BLEU                                              */
/* -------------------------------------------------------------------------------------------- */

/* ---- built-in metrics ------------------------------------------------------------------------ */

static const char *cllm__last_assistant(const cllm_conv *c) {
    int i;
    for (i = c->n - 1; i >= 0; i--) if (strcmp(c->msgs[i].role, "assistant") == 0) return c->msgs[i].content;
    return NULL;
}

/* CollabLLM v2's token_amount: the tokens of every assistant message of the session / 1000. */
/* The end of a metric's batch, by its contract (cllm_metric_fn): an error when it scored none of n sessions, else
   CLLM_OK, with why (the first reason a session went unscored) kept in err->msg when some did. */
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

CLLMDEF cllm_result cllm_metric_token_amount(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    cllm_err why;
    int i;
    cllm__ok(&why);
    for (i = 0; i < n; i++) {
        int tokens = cllm__count_joined((const cllm_token_counter *)ctx, s[i].conv, 0, "assistant", " ");
        if (tokens < 0) cllm__metric_why(&why, CLLM_ERR_NOMEM, "out of memory counting tokens");
        scores[i] = tokens < 0 ? NAN : tokens / 1000.0;
    }
    return cllm__metric_done(scores, n, "token_amount", &why, err);
}

/* Copies judgements into scores (NAN for a failed one; the judge's message says why) and frees them. */
static cllm_result cllm__judged(cllm_judgement *j, int n, double *scores, const char *metric, cllm_err *err) {
    cllm_err why;
    int i;
    cllm__ok(&why);
    for (i = 0; i < n; i++) {
        scores[i] = j[i].code == CLLM_OK ? j[i].score : NAN;
        cllm__metric_why(&why, j[i].code, j[i].err.msg);
        cllm_judgement_free(&j[i]);
    }
    CLLM_FREE(j);
    return cllm__metric_done(scores, n, metric, &why, err);
}

/* The two judge metrics: interactivity judges the conversations, accuracy each against its task's reference. */
static cllm_result cllm__metric_judge(void *ctx, const cllm_session *s, int n, double *scores, int accuracy,
                                      cllm_err *err) {
    const char *metric = accuracy ? "accuracy" : "interactivity";
    cllm_judgement *j = (cllm_judgement *)cllm__calloc((size_t)n + 1, sizeof *j);
    cllm_conv *convs = (cllm_conv *)cllm__calloc((size_t)n + 1, sizeof *convs);
    cllm_accuracy_item *it = (cllm_accuracy_item *)cllm__calloc((size_t)n + 1, sizeof *it);
    int i;
    if (!ctx || !j || !convs || !it) {
        CLLM_FREE(j);
        CLLM_FREE(convs);
        CLLM_FREE(it);
        if (!ctx) return cllm__fail(err, CLLM_ERR_ARG, "%s metric: needs an LLM judge", metric);
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    for (i = 0; i < n; i++) {
        convs[i] = *s[i].conv;
        it[i].question = s[i].task ? s[i].task->prompt : s[i].goal->prompt;
        it[i].ground_truth = s[i].task ? s[i].task->completion : s[i].goal->reference;
        it[i].conv = s[i].conv;
    }
    if (accuracy) cllm_judge_accuracy((cllm_judge *)ctx, it, n, j, NULL);
    else cllm_judge_interactivity((cllm_judge *)ctx, convs, n, j, NULL);
    CLLM_FREE(convs);
    CLLM_FREE(it);
    return cllm__judged(j, n, scores, metric, err);
}

CLLMDEF cllm_result cllm_metric_interactivity(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    return cllm__metric_judge(ctx, s, n, scores, 0, err);
}

CLLMDEF cllm_result cllm_metric_accuracy(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    return cllm__metric_judge(ctx, s, n, scores, 1, err);
}

/* CollabLLM v1's interactivity term (multiturn_reward.py at c41bc29): the judge's x in 1..3 on the follow-up, the
   candidate and the future after it, with the history as context, rescaled to x/3. */
CLLMDEF cllm_result cllm_metric_interactivity_v1(void *ctx, const cllm_session *s, int n, double *scores,
                                                 cllm_err *err) {
    cllm_judgement *j;
    cllm_followup_item *it;
    int i;
    if (!ctx) return cllm__fail(err, CLLM_ERR_ARG, "interactivity_v1 metric: needs an LLM judge");
    j = (cllm_judgement *)cllm__calloc((size_t)n + 1, sizeof *j);
    it = (cllm_followup_item *)cllm__calloc((size_t)n + 1, sizeof *it);
    if (!j || !it) {
        CLLM_FREE(j);
        CLLM_FREE(it);
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    for (i = 0; i < n; i++) {
        it[i].conv = s[i].conv;
        it[i].n_history = s[i].n_history;
    }
    cllm_judge_interactivity_v1((cllm_judge *)ctx, it, n, j, NULL);
    for (i = 0; i < n; i++) j[i].score /= 3;
    CLLM_FREE(it);
    return cllm__judged(j, n, scores, "interactivity_v1", err);
}

/* Lower-cases, trims and collapses whitespace runs to one space, into a new string. */
static char *cllm__normalize_answer(const char *s) {
    size_t n = strlen(s), k = 0;
    char *o = (char *)CLLM_MALLOC(n + 1);
    int space = 1;
    if (!o) return NULL;
    for (; *s; s++) {
        int c = (unsigned char)*s, ws = c == ' ' || (c >= '\t' && c <= '\r');
        if (ws) {
            if (!space) o[k++] = ' ';
            space = 1;
            continue;
        }
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
    a = cllm__normalize_answer(answer);
    b = cllm__normalize_answer(reference);
    same = a && b && strcmp(a, b) == 0;
    if (!same && a && b && cfg && cfg->numeric) {
        char *ea, *eb;
        double x = strtod(a, &ea), y = strtod(b, &eb), tol = cllm__def(cfg->tolerance, 1e-6);
        if (ea != a && *ea == 0 && eb != b && *eb == 0) same = fabs(x - y) <= tol * (fabs(y) > 1 ? fabs(y) : 1);
    }
    CLLM_FREE(a);
    CLLM_FREE(b);
    return same;
}

CLLMDEF cllm_result cllm_metric_exact_match(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    for (i = 0; i < n; i++) {
        const char *ref = s[i].task ? s[i].task->completion : s[i].goal->reference;
        const char *last = cllm__last_assistant(s[i].conv);
        scores[i] = cllm_answer_matches((const cllm_match_config *)ctx, last, ref) ? 1.0 : 0.0;
    }
    return cllm__succeed(err);
}

/* The final artifact of each session, as CollabLLM scores documents and code: an LLM extracts it from the whole
   session (the judge's extraction prompt, with the task's single_turn_metadata.extraction_requirement), or, with
   no judge, the last assistant message as it is (the caller asked for no extraction). texts[i] is owned (NULL =
   extraction failed; the first reason goes to why). */
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
        it[i].conv = s[i].conv;
        it[i].kind = kind;
        it[i].requirement = cllm__json_str(meta, "extraction_requirement");
    }
    cllm_judge_extract(judge, it, n, j, NULL);
    for (i = 0; i < n; i++) {                     /* texts[] comes zeroed: NULL where none is taken */
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

/* The error of a document or code metric given no extractor: CollabLLM never scores an unextracted artifact. */
static cllm_result cllm__no_extractor(const char *metric, const char *what, const char *opt_out, cllm_err *err) {
    return cllm__fail(err, CLLM_ERR_ARG, "%s: no extractor. CollabLLM has an LLM extract the final %s from the "
                      "session before scoring it: give a cllm_judge (--judge-model), or ask for no extraction (%s; "
                      "--no-extract on the command line)", metric, what, opt_out);
}

/* Character BLEU (NLTK sentence_bleu on the raw strings, as CollabLLM) of each final document vs the completion. */
static cllm_result cllm__bleu_of(cllm_judge *extractor, const cllm_session *s, int n, double *scores, cllm_err *err) {
    char **docs = (char **)cllm__calloc((size_t)n + 1, sizeof(char *));
    cllm_err why;
    int i;
    if (!docs) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    cllm__ok(&why);
    cllm__extract_final(extractor, "document", s, n, docs, &why);
    for (i = 0; i < n; i++) {
        const char *ref = s[i].task ? s[i].task->completion : s[i].goal->reference;
        double b = NAN;
        cllm_err berr;
        if (!ref)
            cllm__metric_why(&why, CLLM_ERR_ARG, "the task has no reference (single_turn_completion) to compare with");
        else if (docs[i] && cllm_bleu(1, &ref, docs[i], CLLM_BLEU_CHAR, CLLM_BLEU_NO_SMOOTHING, &b, &berr) != CLLM_OK) {
            b = NAN;
            cllm__metric_why(&why, berr.code, berr.msg);
        }
        scores[i] = b;
        CLLM_FREE(docs[i]);
    }
    CLLM_FREE(docs);
    return cllm__metric_done(scores, n, extractor ? "bleu" : "bleu_last", &why, err);
}

CLLMDEF cllm_result cllm_metric_bleu(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    if (!ctx) return cllm__no_extractor("bleu", "document", "the metric bleu_last", err);
    return cllm__bleu_of((cllm_judge *)ctx, s, n, scores, err);
}

CLLMDEF cllm_result cllm_metric_bleu_last(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    (void)ctx;
    return cllm__bleu_of(NULL, s, n, scores, err);
}

/* ---- pass_rate: run the task's unit tests on the final code ---------------------------------- */

/* The code to test: the last ```python (or ```) block of the text, else the whole text. */
static char *cllm__code_block(const char *text) {
    const char *p = text, *best = NULL, *best_end = NULL;
    while ((p = strstr(p, "```")) != NULL) {
        const char *body = strchr(p + 3, '\n'), *end;
        if (!body) break;
        end = strstr(body + 1, "```");
        if (!end) break;
        best = body + 1;
        best_end = end;
        p = end + 3;
    }
    return best ? cllm__strndup(best, (size_t)(best_end - best)) : cllm__strdup(text);
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
/* Runs `python file` with limits; stdout (up to 64 KB) into out. Returns the exit status, or -1 if it could not
   start, -2 on timeout. The child gets its own process group so that a timeout kills anything it spawned. */
static int cllm__run_python(const cllm_code_config *cfg, const char *file, char *out, size_t outsize) {
    int fds[2] = { -1, -1 }, errfds[2] = { -1, -1 }, status = 0, timed_out = 0, exec_errno = 0;
    size_t got = 0;
    double deadline;
    pid_t pid = -1;
    const char *python = cfg && cfg->python ? cfg->python : "python3";
    double timeout = cfg ? cllm__def(cfg->timeout_s, 10.0) : 10.0;
    long mem_mb = cfg ? cllm__def(cfg->memory_mb, 2048L) : 2048L;
    out[0] = 0;
    /* errfds: close-on-exec, so it reads EOF once python runs, or the child's errno if exec failed */
    if (pipe(fds) == 0 && pipe(errfds) == 0 && fcntl(errfds[1], F_SETFD, FD_CLOEXEC) == 0) pid = fork();
    if (pid < 0) {                                /* close(-1) of a pipe never made is harmless */
        close(fds[0]);
        close(fds[1]);
        close(errfds[0]);
        close(errfds[1]);
        return -1;
    }
    if (pid == 0) {                               /* child: limits, stdout to the pipe, no shell */
        struct rlimit cpu, as;
        int devnull = open("/dev/null", O_WRONLY);
        char *argv[3] = { (char *)python, (char *)file, NULL };
        close(errfds[0]);
        setpgid(0, 0);
        cpu.rlim_cur = cpu.rlim_max = (rlim_t)(timeout + 1);
        as.rlim_cur = as.rlim_max = (rlim_t)mem_mb * 1024 * 1024;
        setrlimit(RLIMIT_CPU, &cpu);
        setrlimit(RLIMIT_AS, &as);
        dup2(fds[1], 1);
        if (devnull >= 0) {
            dup2(devnull, 2);
            dup2(devnull, 0);
        }
        close(fds[0]);
        close(fds[1]);
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
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        pfd.fd = fds[0];
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0) continue;
        r = read(fds[0], got + 1 < outsize ? out + got : sink, got + 1 < outsize ? outsize - 1 - got : sizeof sink);
        if (r <= 0) break;                        /* EOF: the child closed its stdout */
        if (got + 1 < outsize) got += (size_t)r;
    }
    out[got] = 0;
    close(fds[0]);
    if (timed_out) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
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
    (void)ctx, (void)s, (void)n, (void)scores;
    return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "pass_rate: running code is only implemented on POSIX systems");
#else
    const cllm_code_config *cfg = (const cllm_code_config *)ctx;
    char **texts;
    cllm_err why;
    int i;
    if (!cfg || (!cfg->extractor && !cfg->no_extract))
        return cllm__no_extractor("pass_rate", "code", "cllm_code_config.no_extract = 1", err);
    texts = (char **)cllm__calloc((size_t)n + 1, sizeof(char *));
    if (!texts) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    cllm__ok(&why);
    cllm__extract_final(cfg->no_extract ? NULL : cfg->extractor, "code", s, n, texts, &why);
    for (i = 0; i < n; i++) {
        char path[64] = "/tmp/cllm_pass_rate_XXXXXX";
        char out[65536], *line;
        char *code = texts[i] ? cllm__code_block(texts[i]) : NULL;
        char *tests = cllm__task_tests(s[i].task);
        int fd = -1, status, parsed, run = 0, failed = 0;
        FILE *f = NULL;
        scores[i] = NAN;
        if (!tests) cllm__metric_why(&why, CLLM_ERR_ARG, "the task has no unit tests (single_turn_metadata.test)");
        if (code && tests) fd = mkstemp(path);        /* nothing to run: unscored */
        if (fd >= 0) f = fdopen(fd, "w");
        if (fd >= 0 && !f) close(fd);
        if (code && tests && !f) cllm__metric_why(&why, CLLM_ERR_IO, "cannot write a temporary file in /tmp");
        if (f) {
            fprintf(f, "%s\n\n%s%s", code, tests, cllm__unittest_runner);
            fclose(f);
            status = cllm__run_python(cfg, path, out, sizeof out);
            line = strstr(out, "CLLM_TESTS ");
            parsed = line && sscanf(line, "CLLM_TESTS %d %d", &run, &failed) == 2;
            /* code that crashes, times out or never reaches the report passes nothing: score 0. BigCodeBench's
               untrusted_check says "pass" only when the tests ran and none failed or raised. */
            if (status >= 0 && parsed && run > 0 && cfg->pass_rule == CLLM_PASS_FRACTION)
                scores[i] = (double)(run - failed) / run;
            else if (status >= 0 && parsed && run > 0) scores[i] = failed == 0 ? 1 : 0;
            else if (status == -1 && !line)
                cllm__metric_why(&why, CLLM_ERR_IO, "the Python interpreter (cllm_code_config.python) did not start");
            else scores[i] = 0;
            remove(path);
        }
        CLLM_FREE(code);
        CLLM_FREE(tests);
        CLLM_FREE(texts[i]);
    }
    CLLM_FREE(texts);
    return cllm__metric_done(scores, n, "pass_rate", &why, err);
#endif
}

CLLMDEF cllm_result cllm_metric_builtin(const char *name, cllm_metric *m, cllm_err *err) {
    static const cllm_metric table[] = {
        { "token_amount", 0, cllm_metric_token_amount, NULL }, { "interactivity", 0, cllm_metric_interactivity, NULL },
        { "accuracy", 0, cllm_metric_accuracy, NULL },         { "exact_match", 0, cllm_metric_exact_match, NULL },
        { "bleu", 0, cllm_metric_bleu, NULL },                 { "pass_rate", 0, cllm_metric_pass_rate, NULL },
        { "bleu_last", 0, cllm_metric_bleu_last, NULL },
        { "interactivity_v1", 0, cllm_metric_interactivity_v1, NULL }
    };
    size_t i;
    for (i = 0; name && i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(name, table[i].name) != 0) continue;
        m->name = table[i].name;
        m->fn = table[i].fn;
        return cllm__succeed(err);
    }
    return cllm__fail(err, CLLM_ERR_ARG, "unknown metric '%s' (built-in: token_amount, interactivity, accuracy, "
                      "interactivity_v1, exact_match, bleu, bleu_last, pass_rate)", name ? name : "(null)");
}

/* ---- BLEU, as NLTK 3.8's sentence_bleu (weights 0.25 x 4) ------------------------------------ */

/* NLTK, for each order n = 1..4:
     p_n = sum over distinct hypothesis n-grams g of min(count_hyp(g), max_ref count_ref(g))
           / max(1, number of hypothesis n-grams)                         (modified precision)
   c = the reference length closest to the hypothesis length h (a tie goes to the shorter),
   BP = 1 if h > c, 0 if h = 0, else exp(1 - c/h);
   BLEU = 0 if no unigram matches, else BP * exp(fsum(0.25 * log p_n)), where a p_n with no
   match becomes DBL_MIN (method0), 0.1/den (method1), or (num+1)/(den+1) for n >= 2 (method2).
   sacrebleu differs (13a tokenizer, 0-100 scale, effective order, 'exp' smoothing): not this. */

typedef struct {                                 /* an n-gram, n <= 4; unused slots 0 */
    int s[4];
} cllm__ngram;

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
            double big = fabs(v) < fabs(p[j]) ? p[j] : v;
            double small = fabs(v) < fabs(p[j]) ? v : p[j];
            double s = big + small;
            lo = small - (s - big);                  /* the exact error of big + small */
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

CLLMDEF cllm_result cllm_bleu_ids(int n_refs, const int *const *refs, const int *ref_lens, const int *hyp, int hyp_len,
                                  int smoothing, double *bleu, cllm_err *err) {
    cllm__ngram *H = NULL, *R = NULL;
    int *count = NULL, *best = NULL;
    long num[5] = { 0 }, den[5] = { 0 };
    double terms[4], bp;
    int i, n, u, j, max_ref = 0, closest = -1;
    if (n_refs < 1 || !refs || !ref_lens || hyp_len < 0 || (hyp_len && !hyp) || !bleu)
        return cllm__fail(err, CLLM_ERR_ARG, "BLEU: need at least one reference and a hypothesis");
    if (smoothing < CLLM_BLEU_NO_SMOOTHING || smoothing > CLLM_BLEU_METHOD2)
        return cllm__fail(err, CLLM_ERR_ARG, "BLEU: unknown smoothing %d", smoothing);
    for (i = 0; i < n_refs; i++) {
        int d = abs(ref_lens[i] - hyp_len), dc = abs(closest - hyp_len);
        if (ref_lens[i] < 0 || (ref_lens[i] && !refs[i]))
            return cllm__fail(err, CLLM_ERR_ARG, "BLEU: reference %d is invalid", i);
        if (closest < 0 || d < dc || (d == dc && ref_lens[i] < closest)) closest = ref_lens[i];
        if (ref_lens[i] > max_ref) max_ref = ref_lens[i];
    }
    H = (cllm__ngram *)cllm__calloc((size_t)hyp_len + 1, sizeof *H);
    R = (cllm__ngram *)cllm__calloc((size_t)max_ref + 1, sizeof *R);
    count = (int *)cllm__calloc(2 * ((size_t)hyp_len + 1), sizeof *count);   /* count, then best */
    if (!H || !R || !count) {
        CLLM_FREE(H);
        CLLM_FREE(R);
        CLLM_FREE(count);
        return cllm__fail(err, CLLM_ERR_NOMEM, "BLEU: out of memory");
    }
    best = count + hyp_len + 1;
    for (n = 1; n <= 4; n++) {
        int h = cllm__ngrams_sorted(hyp, hyp_len, n, H), distinct = 0;
        for (j = 0; j < h; j++) {                    /* distinct n-grams H[0..distinct) with counts */
            if (distinct && cllm__ngram_cmp(&H[distinct - 1], &H[j]) == 0) {
                count[distinct - 1]++;
                continue;
            }
            H[distinct] = H[j];
            count[distinct] = 1;
            best[distinct] = 0;
            distinct++;
        }
        for (i = 0; i < n_refs; i++) {               /* best[u] = max over references of their count */
            int r = cllm__ngrams_sorted(refs[i], ref_lens[i], n, R);
            for (u = 0, j = 0; u < distinct; u++) {
                int c = 0;
                while (j < r && cllm__ngram_cmp(&R[j], &H[u]) < 0) j++;
                while (j < r && cllm__ngram_cmp(&R[j], &H[u]) == 0) {
                    j++;
                    c++;
                }
                if (c > best[u]) best[u] = c;
            }
        }
        for (u = 0; u < distinct; u++) num[n] += count[u] < best[u] ? count[u] : best[u];
        den[n] = h > 1 ? h : 1;
    }
    CLLM_FREE(H);
    CLLM_FREE(R);
    CLLM_FREE(count);
    cllm__ok(err);
    if (num[1] == 0) {                               /* no unigram matches: NLTK returns the int 0 */
        *bleu = 0;
        return CLLM_OK;
    }
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
        unsigned c = p[0], k;
        unsigned len = c < 0x80 ? 1 : c < 0xC2 ? 0 : c <= 0xDF ? 2 : c <= 0xEF ? 3 : c <= 0xF4 ? 4 : 0;
        unsigned cp = len == 1 ? c : c & (0x7Fu >> len);  /* the lead byte's payload bits */
        for (k = 1; k < len; k++) {
            if ((p[k] & 0xC0) != 0x80) {
                len = 0;
                break;
            }
            cp = (cp << 6) | (p[k] & 0x3F);
        }
        if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) len = 0;   /* overlong, surrogate */
        if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) len = 0;
        if (len == 0) {
            out[n++] = 0x110000 + (int)c;
            p++;
            continue;
        }
        out[n++] = (int)cp;
        p += len;
    }
    return n;
}

typedef struct {
    const int *p;
    int len;
    int *id;
} cllm__bleu_tok;

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
    for (i = 0; toks && ids && i < n; i++) {
        ids[i] = (int *)cllm__calloc((size_t)lens[i] + 1, sizeof(int));
        if (!ids[i]) break;
    }
    if (!toks || !ids || i < n) {
        for (i = 0; ids && i < n; i++) CLLM_FREE(ids[i]);
        CLLM_FREE(ids);
        CLLM_FREE(toks);
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
            toks[k].p = seqs[i] + start;
            toks[k].len = t - start;
            toks[k].id = &ids[i][count++];
            k++;
        }
        lens[i] = count;
    }
    qsort(toks, k, sizeof *toks, cllm__tok_cmp);
    for (j = 0; j < k; j++) {
        if (j > 0 && cllm__tok_cmp(&toks[j - 1], &toks[j]) != 0) id++;
        *toks[j].id = id;
    }
    for (i = 0; i < n; i++) {
        CLLM_FREE(seqs[i]);
        seqs[i] = ids[i];
    }
    CLLM_FREE(ids);
    CLLM_FREE(toks);
    return CLLM_OK;
}

CLLMDEF cllm_result cllm_bleu(int n_refs, const char *const *references, const char *hypothesis, int level,
                              int smoothing, double *bleu, cllm_err *err) {
    int n = n_refs + 1, i, **sym = NULL, *len = NULL;   /* string 0 is the hypothesis */
    cllm_result rc = CLLM_OK;
    if (n_refs < 1 || !references || !hypothesis)
        return cllm__fail(err, CLLM_ERR_ARG, "BLEU: need at least one reference and a hypothesis");
    if (level != CLLM_BLEU_CHAR && level != CLLM_BLEU_TOKEN)
        return cllm__fail(err, CLLM_ERR_ARG, "BLEU: unknown level %d (char or token)", level);
    sym = (int **)cllm__calloc((size_t)n, sizeof *sym);
    len = (int *)cllm__calloc((size_t)n, sizeof *len);
    if (!sym || !len) rc = cllm__fail(err, CLLM_ERR_NOMEM, "BLEU: out of memory");
    for (i = 0; rc == CLLM_OK && i < n; i++) {
        const char *s = i ? references[i - 1] : hypothesis;
        size_t bytes = s ? strlen(s) : 0;
        if (!s) rc = cllm__fail(err, CLLM_ERR_ARG, "BLEU: reference %d is NULL", i - 1);
        else if (bytes > INT_MAX / 2)
            rc = cllm__fail(err, CLLM_ERR_LIMIT, "BLEU: a string of %zu bytes is too long", bytes);
        else if (!(sym[i] = (int *)cllm__calloc(bytes + 1, sizeof(int))))
            rc = cllm__fail(err, CLLM_ERR_NOMEM, "BLEU: out of memory");
        else len[i] = cllm__utf8_symbols(s, sym[i]);
    }
    if (rc == CLLM_OK && level == CLLM_BLEU_TOKEN) rc = cllm__bleu_tokenize(sym, len, n, err);
    if (rc == CLLM_OK)
        rc = cllm_bleu_ids(n_refs, (const int *const *)(sym + 1), len + 1, sym[0], len[0], smoothing, bleu, err);
    for (i = 0; sym && i < n; i++) CLLM_FREE(sym[i]);
    CLLM_FREE(sym);
    CLLM_FREE(len);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* II.9 Evaluation (paper section 4)                                                            */
/* -------------------------------------------------------------------------------------------- */

/* ---- evaluation: one simulated conversation per task, then the metrics ----------------------- */

CLLMDEF void cllm_eval_summary_free(cllm_eval_summary *s) {
    if (!s) return;
    CLLM_FREE(s->metric_means);
    CLLM_FREE(s->metric_counts);
    memset(s, 0, sizeof *s);
}

/* Evaluation as in the paper (section 4): one conversation per task between the model and the simulator, up to
   max_turns user turns, then every metric on the whole conversation. Per task a JSON line with the conversation,
   every metric (null when unscored), the assistant's tokens and, on failure, why (a judge's failure names its
   endpoint, HTTP status and message). A metric's mean is over the conversations it scored, with that count; never a 0
   for an unscored one. Returns an error when any conversation failed (the details are still written). */
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
    if (!cfg || !user || !model || n_tasks < 0 || (n_tasks && !tasks)) {
        rc = cllm__fail(err, CLLM_ERR_ARG, "evaluation: needs a config, a simulator, a model and tasks");
        goto done;
    }
    summary->metric_means = (double *)cllm__calloc((size_t)nm + 1, sizeof(double));
    summary->metric_counts = (int *)cllm__calloc((size_t)nm + 1, sizeof(int));
    if (!goals || !convs || !st || !ses || !why || !ok_idx || !scores || !col || !details || !summary->metric_means ||
        !summary->metric_counts) {
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        goto done;
    }
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
        ses[n_sim].goal = &goals[t];
        ses[n_sim].task = &tasks[t];
        ses[n_sim].conv = &convs[t];
        ses[n_sim].n_history = convs[t].n > 0 ? 1 : 0;
        ok_idx[n_sim++] = t;
    }
    for (m = 0; m < nm; m++) {                                     /* each metric on every simulated conversation */
        cllm_err metric_err;
        cllm_result metric_rc = cllm__metric_run(&cfg->metrics[m], ses, n_sim, col, &metric_err);
        for (k = 0; k < n_sim; k++) {
            t = ok_idx[k];
            scores[(size_t)t * nm + m] = col[k];
            if (col[k] == col[k] || why[t].code != CLLM_OK) continue;
            cllm__fail(&why[t], metric_rc != CLLM_OK ? metric_rc : CLLM_ERR_FORMAT,
                       "metric '%s' could not score this conversation: %s", cfg->metrics[m].name,
                       metric_err.msg[0] ? metric_err.msg : "it gave no reason");
        }
    }
    summary->n_tasks = n_tasks;
    for (t = 0; t < n_tasks; t++) {
        cJSON *o = cJSON_CreateObject(), *mo;
        long tokens = 0;
        int turns = 0, incomplete = cllm__conv_incomplete(&convs[t]);
        for (i = 0; i < convs[t].n; i++) {
            if (strcmp(convs[t].msgs[i].role, "assistant") == 0)
                tokens += cllm_count_tokens(&cfg->tokens, convs[t].msgs[i].content);
            else turns++;
        }
        cJSON_AddNumberToObject(o, "conv_id", t);
        cJSON_AddItemToObject(o, "messages", cllm_conv_to_json(&convs[t]));
        cJSON_AddBoolToObject(o, "terminated", st[t].terminated);
        if (incomplete) cJSON_AddNumberToObject(o, "incomplete_messages", incomplete);
        mo = cJSON_AddObjectToObject(o, "metrics");
        for (m = 0; m < nm; m++) {
            double v = scores[(size_t)t * nm + m];
            cJSON_AddItemToObject(mo, cfg->metrics[m].name, v == v ? cJSON_CreateNumber(v) : cJSON_CreateNull());
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
        const cllm_err *first;
        for (t = 0; t < n_tasks && st[t].code == CLLM_OK && why[t].code == CLLM_OK; t++) {}
        first = st[t].code != CLLM_OK ? &st[t].err : &why[t];
        rc = cllm__fail(err, first->code, "%d of %d conversations failed; they are left out of the averages they lack "
                        "(see the \"error\" field of the details). First (#%d): %s", summary->n_failed, n_tasks, t,
                        first->msg);
    }
done:
    for (t = 0; convs && t < n_tasks; t++) cllm_conv_free(&convs[t]);
    CLLM_FREE(goals);
    CLLM_FREE(convs);
    CLLM_FREE(st);
    CLLM_FREE(ses);
    CLLM_FREE(why);
    CLLM_FREE(ok_idx);
    CLLM_FREE(scores);
    CLLM_FREE(col);
    cJSON_Delete(details);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* -------------------------------------------------------------------------------------------- */
/* II.10 Training infrastructure: data, batches, LoRA files, checkpoints, the loop, prompts      */
/* -------------------------------------------------------------------------------------------- */

#if !defined(_WIN32)
#include <dirent.h>
#endif

/* ---- tokenized examples ---------------------------------------------------------------------- */

CLLMDEF void cllm_train_seq_free(cllm_train_seq *s) {
    if (!s) return;
    CLLM_FREE(s->ids);
    CLLM_FREE(s->target);
    memset(s, 0, sizeof *s);
}

CLLMDEF int cllm_train_seq_targets(const cllm_train_seq *s) {
    int i, n = 0;
    for (i = 1; i < s->n; i++) n += s->target[i] != 0;
    return n;
}

/* prompt | completion -> (last keep_prompt tokens of the prompt) | (first tokens of the completion),
   keep_prompt at least 1; < 0: max_length - (completion length) if too long (data_fmt/train.md). */
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

/* A copy of ids/target (n tokens) into seq. */
static cllm_result cllm__seq_from(cllm_train_seq *seq, const int *ids, const unsigned char *target, int n, int n_prompt,
                                  cllm_err *err) {
    memset(seq, 0, sizeof *seq);
    seq->ids = (int *)cllm__calloc((size_t)n + 1, sizeof(int));
    seq->target = (unsigned char *)cllm__calloc((size_t)n + 1, 1);
    if (!seq->ids || !seq->target) {
        cllm_train_seq_free(seq);
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    }
    memcpy(seq->ids, ids, sizeof(int) * (size_t)n);
    memcpy(seq->target, target, (size_t)n);
    seq->target[0] = 0;
    seq->n = n;
    seq->n_prompt = n_prompt;
    return CLLM_OK;
}

/* SFT: targets = the chat template's assistant mask (every assistant message's content and end-of-turn token;
   cllm_chat_render); the completion side is the last run of targets (the final assistant message). */
CLLMDEF cllm_result cllm_sft_seq(const cllm_tokenizer *tok, const cllm_message *msgs, int n, cllm_train_seq *seq,
                                 cllm_err *err) {
    int *ids = NULL;
    int n_ids = 0, start, i;
    unsigned char *mask = NULL;
    cllm_result rc;
    memset(seq, 0, sizeof *seq);
    rc = cllm_chat_render(tok, msgs, n, NULL, NULL, &ids, &mask, &n_ids, err);
    if (rc != CLLM_OK) return rc;
    for (start = n_ids - 1; start >= 1 && !mask[start]; start--) {}
    while (start >= 1 && mask[start - 1]) start--;
    if (start < 1) rc = cllm__fail(err, CLLM_ERR_FORMAT, "the conversation has no assistant message to train on");
    for (i = 0; i < n_ids && rc == CLLM_OK; i++) mask[i] = mask[i] != 0;
    if (rc == CLLM_OK) rc = cllm__seq_from(seq, ids, mask, n_ids, start, err);
    CLLM_FREE(ids);
    CLLM_FREE(mask);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* CLLM_COMPLETION_TOKENS_TRL, as TRL v0.19.1 DPOTrainer builds a row (data_utils.apply_chat_template, then
   DPOTrainer.tokenize_row with add_special_tokens=False):
       prompt ids     = encode(text[0, P))
       completion ids = encode(text[P, end)) ++ [eos_token_id]        (EOS appended even after an end of turn)
   every completion id a target; text[P, end) is all the template writes after the prompt, trailing newline and
   any non-assistant message included. */
static cllm_result cllm__completion_trl(const cllm_tokenizer *tok, const char *text, size_t P, cllm_train_seq *seq,
                                        cllm_err *err) {
    int *pids = NULL, *cids = NULL, *ids = NULL;
    int np = 0, nc = 0, i;
    unsigned char *target = NULL;
    cllm_result rc;
    if (tok->eos_id < 0)
        return cllm__fail(err, CLLM_ERR_UNSUPPORTED, "TRL's completion tokens end with eos_token_id, and this "
                                                     "tokenizer has none (tokenizer_config.json eos_token)");
    rc = cllm_tokenizer_encode(tok, text, P, 0, &pids, &np, NULL, err);
    if (rc == CLLM_OK) rc = cllm_tokenizer_encode(tok, text + P, strlen(text + P), 0, &cids, &nc, NULL, err);
    if (rc != CLLM_OK) goto done;
    ids = (int *)cllm__calloc((size_t)np + (size_t)nc + 1, sizeof(int));
    target = (unsigned char *)cllm__calloc((size_t)np + (size_t)nc + 1, 1);
    if (!ids || !target) {
        rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < np + nc; i++) ids[i] = i < np ? pids[i] : cids[i - np];
    ids[np + nc] = tok->eos_id;
    memset(target + np, 1, (size_t)nc + 1);
    rc = cllm__seq_from(seq, ids, target, np + nc + 1, np, err);
done:
    CLLM_FREE(pids);
    CLLM_FREE(cids);
    CLLM_FREE(ids);
    CLLM_FREE(target);
    return rc;
}

/* CLLM_COMPLETION_TOKENS_TURN: text tokenized in one pass (ids, mask from cllm_chat_render); the targets are the
   assistant-mask tokens that start at byte >= P: each assistant message's content and end-of-turn token, nothing
   after the last of them (ChatML's newline). */
static cllm_result cllm__completion_turn(const cllm_tokenizer *tok, const char *text, size_t P, const int *ids,
                                         unsigned char *mask, int n_ids, cllm_train_seq *seq, cllm_err *err) {
    int *ids2 = NULL, *offs = NULL;
    int n2 = 0, first = -1, last = -1, i;
    cllm_result rc;
    /* the same ids again, with byte offsets: a target starts at or after the prompt's end */
    if ((rc = cllm_tokenizer_encode(tok, text, strlen(text), 0, &ids2, &n2, &offs, err)) != CLLM_OK) return rc;
    CLLM_ASSERT(n2 == n_ids);
    for (i = 0; i < n_ids; i++) {
        mask[i] = mask[i] && (size_t)offs[2 * i] >= P && i > 0;
        if (!mask[i]) continue;
        if (first < 0) first = i;
        last = i;
    }
    if (first < 0)
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "the completion has no assistant tokens (it must hold an assistant "
                        "message)");
    else rc = cllm__seq_from(seq, ids, mask, last + 1, first, err);
    CLLM_FREE(ids2);
    CLLM_FREE(offs);
    return rc;
}

/* A completion after a prompt, for DPO: P = the byte length of the prompt rendered with its generation prompt, text =
   prompt + completion rendered; the completion's tokens as `tokens` says (TRL's summed completion logps, up to the
   differences listed in data_fmt/train.md, "Inputs and tokenization"). */
CLLMDEF cllm_result cllm_completion_seq(const cllm_tokenizer *tok, const cllm_message *prompt, int n_prompt,
                                        const cllm_message *completion, int n_completion,
                                        cllm_completion_tokens tokens, cllm_train_seq *seq, cllm_err *err) {
    cllm_render_opts gen;
    cllm_message *all = NULL;
    char *ptext = NULL, *text = NULL;
    int *ids = NULL;
    int n_ids = 0, i;
    unsigned char *mask = NULL;
    size_t P;
    cllm_result rc;
    memset(&gen, 0, sizeof gen);
    memset(seq, 0, sizeof *seq);
    if (n_prompt < 1 || n_completion < 1 || !prompt || !completion)
        return cllm__fail(err, CLLM_ERR_ARG, "a pair needs at least one prompt message and one completion message");
    if (tokens != CLLM_COMPLETION_TOKENS_TURN && tokens != CLLM_COMPLETION_TOKENS_TRL)
        return cllm__fail(err, CLLM_ERR_ARG, "completion tokens: %d is not a cllm_completion_tokens", (int)tokens);
    if (prompt[n_prompt - 1].role && strcmp(prompt[n_prompt - 1].role, "assistant") == 0)
        return cllm__fail(err, CLLM_ERR_FORMAT, "the prompt ends with an assistant message; it must end with the "
                          "user's turn");
    for (i = 0; i < n_completion && !(completion[i].role && strcmp(completion[i].role, "assistant") == 0); i++) {}
    if (i == n_completion) return cllm__fail(err, CLLM_ERR_FORMAT, "the completion holds no assistant message");
    gen.add_generation_prompt = 1;
    all = (cllm_message *)cllm__calloc((size_t)n_prompt + (size_t)n_completion, sizeof *all);
    if (!all) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    memcpy(all, prompt, sizeof *all * (size_t)n_prompt);
    memcpy(all + n_prompt, completion, sizeof *all * (size_t)n_completion);
    if ((rc = cllm_chat_render(tok, prompt, n_prompt, &gen, &ptext, NULL, NULL, NULL, err)) != CLLM_OK) goto done;
    rc = cllm_chat_render(tok, all, n_prompt + n_completion, NULL, &text, &ids, &mask, &n_ids, err);
    if (rc != CLLM_OK) goto done;
    P = strlen(ptext);
    if (strncmp(text, ptext, P) != 0)
        rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "the chat template renders the prompt differently inside the whole "
                                                   "conversation, so the completion cannot be located");
    else if (tokens == CLLM_COMPLETION_TOKENS_TRL) rc = cllm__completion_trl(tok, text, P, seq, err);
    else rc = cllm__completion_turn(tok, text, P, ids, mask, n_ids, seq, err);
done:
    CLLM_FREE(all);
    CLLM_FREE(ptext);
    CLLM_FREE(text);
    CLLM_FREE(ids);
    CLLM_FREE(mask);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* ---- SFT rows and DPO pairs from JSONL (data_fmt/train.md) ----------------------------------- */

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

/* SFT rows: JSONL lines {"messages": [...]} (other fields ignored), each through cllm_sft_seq. */
CLLMDEF cllm_result cllm_sft_data_load(cllm_sft_data *d, const cllm_tokenizer *tok, const char *path, int max_length,
                                      cllm_err *err) {
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
        if (!(row = cllm__jsonl_parse(line, (size_t)len, path, lineno, err))) {
            rc = CLLM_ERR_FORMAT;
            break;
        }
        rc = cllm_conv_from_json(&conv, cJSON_GetObjectItemCaseSensitive(row, "messages"), err);
        if (rc == CLLM_OK) rc = cllm_sft_seq(tok, conv.msgs, conv.n, &seq, err);
        cllm_conv_free(&conv);                    /* empty when cllm_conv_from_json failed */
        cJSON_Delete(row);
        if (rc != CLLM_OK) {
            rc = cllm__fail_where(err, rc, path, lineno, "\"messages\": ");
            break;
        }
        d->n_truncated += cllm_train_seq_truncate(&seq, max_length, -1);
        stbds_arrput(d->rows, seq);
        d->n++;
    }
    fclose(f);
    CLLM_FREE(line);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && d->n == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no rows", path);
    if (rc != CLLM_OK) cllm_sft_data_free(d);
    else cllm__ok(err);
    return rc;
}

CLLMDEF void cllm_dpo_data_free(cllm_dpo_data *d) {
    int i;
    if (!d) return;
    for (i = 0; d->pairs && i < d->n; i++) {
        cllm_train_seq_free(&d->pairs[i].chosen);
        cllm_train_seq_free(&d->pairs[i].rejected);
    }
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
static cllm_result cllm__dpo_pair_parse(cllm_dpo_pair *p, const cllm_tokenizer *tok, const cJSON *row,
                                        const cllm_dpo_data_config *c, int *truncated, cllm_err *err) {
    const cJSON *ref_c = cJSON_GetObjectItemCaseSensitive(row, "ref_chosen_logps");
    const cJSON *ref_r = cJSON_GetObjectItemCaseSensitive(row, "ref_rejected_logps");
    const char *what = "\"prompt\": ";
    cllm_conv prompt, chosen, rejected;
    cllm_result rc;
    int max_length = c->max_length, longer, keep;
    memset(&chosen, 0, sizeof chosen);
    memset(&rejected, 0, sizeof rejected);
    memset(p, 0, sizeof *p);
    rc = cllm_conv_from_json(&prompt, cJSON_GetObjectItemCaseSensitive(row, "prompt"), err);
    if (rc == CLLM_OK) {
        what = "\"chosen\": ";
        rc = cllm__completion_json(&chosen, cJSON_GetObjectItemCaseSensitive(row, "chosen"), err);
    }
    if (rc == CLLM_OK) {
        what = "\"rejected\": ";
        rc = cllm__completion_json(&rejected, cJSON_GetObjectItemCaseSensitive(row, "rejected"), err);
    }
    if (rc == CLLM_OK) {
        what = "\"chosen\": ";
        rc = cllm_completion_seq(tok, prompt.msgs, prompt.n, chosen.msgs, chosen.n, c->completion_tokens, &p->chosen,
                                 err);
    }
    if (rc == CLLM_OK) {
        what = "\"rejected\": ";
        rc = cllm_completion_seq(tok, prompt.msgs, prompt.n, rejected.msgs, rejected.n, c->completion_tokens,
                                 &p->rejected, err);
    }
    cllm_conv_free(&prompt);
    cllm_conv_free(&chosen);
    cllm_conv_free(&rejected);
    if (rc != CLLM_OK) rc = cllm__fail_where(err, rc, NULL, 0, what);
    else if ((ref_c && !cJSON_IsNumber(ref_c)) || (ref_r && !cJSON_IsNumber(ref_r)) || (!ref_c) != (!ref_r))
        rc = cllm__fail(err, CLLM_ERR_FORMAT,
                        "\"ref_chosen_logps\" and \"ref_rejected_logps\" must both be numbers, or both be absent");
    if (rc != CLLM_OK) {
        cllm_train_seq_free(&p->chosen);
        cllm_train_seq_free(&p->rejected);
        return rc;
    }
    p->ref_chosen = ref_c ? ref_c->valuedouble : NAN;
    p->ref_rejected = ref_c ? ref_r->valuedouble : NAN;
    /* one prompt cut for both, from the longer completion, so they keep the same prompt */
    longer = p->chosen.n - p->chosen.n_prompt;
    if (p->rejected.n - p->rejected.n_prompt > longer) longer = p->rejected.n - p->rejected.n_prompt;
    keep = max_length - longer;
    if (p->chosen.n <= max_length && p->rejected.n <= max_length) keep = -1;   /* nothing to cut */
    else if (keep < 1) keep = 1;
    *truncated = cllm_train_seq_truncate(&p->chosen, max_length, keep) |
                 cllm_train_seq_truncate(&p->rejected, max_length, keep);
    return CLLM_OK;
}

/* DPO pairs: {"prompt", "chosen", "rejected", optional "ref_chosen_logps", "ref_rejected_logps"}
   (TRL's conversational preference format); the reference logps are given for every pair or none. */
CLLMDEF cllm_result cllm_dpo_data_load(cllm_dpo_data *d, const cllm_tokenizer *tok, const char *path,
                                      const cllm_dpo_data_config *cfg, cllm_err *err) {
    cllm_dpo_data_config c = CLLM__ZERO;
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    long len;
    int lineno = 0, with_ref = 0;
    cllm_result rc;
    memset(d, 0, sizeof *d);
    if (cfg) c = *cfg;
    if ((rc = cllm__check_max_length(&c.max_length, err)) != CLLM_OK) return rc;
    if (!(f = cllm__open_read(path, "a JSONL file", err))) return CLLM_ERR_IO;
    while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *row;
        cllm_dpo_pair p;
        int cut = 0;
        lineno++;
        if (len == 0) continue;
        if (!(row = cllm__jsonl_parse(line, (size_t)len, path, lineno, err))) {
            rc = CLLM_ERR_FORMAT;
            break;
        }
        rc = cllm__dpo_pair_parse(&p, tok, row, &c, &cut, err);
        cJSON_Delete(row);
        if (rc != CLLM_OK) {
            rc = cllm__fail_where(err, rc, path, lineno, "");
            break;
        }
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
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: %d of %d pairs carry ref_chosen_logps/ref_rejected_logps; give them "
                                              "for all pairs or none", path, with_ref, d->n);
    d->has_ref = with_ref == d->n;
    if (rc != CLLM_OK) cllm_dpo_data_free(d);             /* zeroes d, has_ref too */
    else cllm__ok(err);
    return rc;
}

/* ---- sequences as right-padded batches ------------------------------------------------------- */

/* A (B, T) batch of n sequences: pad id 0 (never attended to), labels = the id at targets and -100 elsewhere, so that
   cllm_forward's per-row sum is the sum of the targets' log-probs; T = the longest sequence + pad_cols, so that every
   row has at least pad_cols pad positions. The ids, labels and mask share one allocation. */

static void cllm__seq_batch_free(cllm__seq_batch *sb) {
    CLLM_FREE(sb->ids);
    memset(sb, 0, sizeof *sb);
}

static cllm_result cllm__seq_batch_make(cllm__seq_batch *sb, const cllm_train_seq *const *seqs, int n, int pad_cols,
                                        cllm_err *err) {
    int T = 0, b, t;
    size_t BT;
    memset(sb, 0, sizeof *sb);
    for (b = 0; b < n; b++) {
        if (seqs[b]->n < 1) return cllm__fail(err, CLLM_ERR_ARG, "an empty training sequence");
        if (seqs[b]->n > T) T = seqs[b]->n;
    }
    T += pad_cols;
    BT = (size_t)n * (size_t)T;
    if (!(sb->ids = (int *)cllm__calloc(3 * BT, sizeof(int))))
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for a %d x %d batch", n, T);
    sb->labels = sb->ids + BT;
    sb->mask = sb->labels + BT;
    for (b = 0; b < n; b++) {
        for (t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            int real = t < seqs[b]->n;
            sb->ids[i] = real ? seqs[b]->ids[t] : 0;
            sb->mask[i] = real;
            sb->labels[i] = real && seqs[b]->target[t] ? seqs[b]->ids[t] : -100;
        }
    }
    sb->batch.B = n;
    sb->batch.T = T;
    sb->batch.input_ids = sb->ids;
    sb->batch.labels = sb->labels;
    sb->batch.attn_mask = sb->mask;
    return CLLM_OK;
}

/* Per-row sums of the target log-probs of the last forward, in double. */
static void cllm__row_logps(const cllm_model *m, double *out) {
    int b, t;
    for (b = 0; b < m->B; b++) {
        double s = 0;
        for (t = 0; t < m->T; t++)
            if (m->targets[b * m->T + t] >= 0) s += m->acts.logp[b * m->T + t];
        out[b] = s;
    }
}

static long cllm__batch_tokens(const cllm__seq_batch *sb) {
    size_t BT = (size_t)sb->batch.B * (size_t)sb->batch.T;
    size_t i;
    long n = 0;
    for (i = 0; i < BT; i++) n += sb->mask[i];
    return n;
}

/* Summed target log-probs, batch_size sequences at a time (0 = 8), no gradients, adapters as they
   are set (no dropout). */
CLLMDEF cllm_result cllm_seq_logps(cllm_model *m, const cllm_train_seq *const *seqs, int n, int batch_size,
                                   double *logps, cllm_err *err) {
    int done;
    batch_size = cllm__def(batch_size, 8);
    if (batch_size < 1 || n < 0)
        return cllm__fail(err, CLLM_ERR_ARG, "sequence log-probs: batch_size must be positive");
    for (done = 0; done < n; done += batch_size) {
        int k = n - done < batch_size ? n - done : batch_size;
        cllm__seq_batch sb;
        cllm_result rc = cllm__seq_batch_make(&sb, seqs + done, k, 0, err);
        if (rc == CLLM_OK) rc = cllm_forward(m, &sb.batch, NULL, err);
        if (rc == CLLM_OK) cllm__row_logps(m, logps + done);
        cllm__seq_batch_free(&sb);
        if (rc != CLLM_OK) return rc;
    }
    return cllm__succeed(err);
}

/* Writes in_path's non-empty lines to out_path with the two reference fields set. */
static cllm_result cllm__write_ref_pairs(const cllm_dpo_data *d, const char *in_path, const char *out_path,
                                        cllm_err *err) {
    FILE *f = cllm__open_read(in_path, "a JSONL file", err);
    char *line = NULL;
    size_t cap = 0;
    long len;
    int lineno = 0, k = 0;
    cllm__sb out = { NULL, 0, 0, 0 };
    cllm_result rc = CLLM_OK;
    if (!f) return CLLM_ERR_IO;
    while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *row = NULL;
        char *text;
        lineno++;
        if (len == 0) continue;
        if (k >= d->n || d->pairs[k].line != lineno)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s changed since it was loaded (line %d)", in_path, lineno);
        else if (!(row = cllm__jsonl_parse(line, (size_t)len, in_path, lineno, err))) rc = CLLM_ERR_FORMAT;
        if (rc != CLLM_OK) break;
        cJSON_DeleteItemFromObjectCaseSensitive(row, "ref_chosen_logps");
        cJSON_DeleteItemFromObjectCaseSensitive(row, "ref_rejected_logps");
        cJSON_AddNumberToObject(row, "ref_chosen_logps", d->pairs[k].ref_chosen);
        cJSON_AddNumberToObject(row, "ref_rejected_logps", d->pairs[k].ref_rejected);
        text = cJSON_PrintUnformatted(row);
        cJSON_Delete(row);
        if (!text) {
            out.oom = 1;
            break;
        }
        cllm__sb_puts(&out, text);
        cllm__sb_putc(&out, '\n');
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

/* TRL's precompute_ref_log_probs: one pass of ref (no shuffling) over the pairs; the results go
   into d and, if out_path is set, into a copy of in_path's lines with "ref_chosen_logps" and
   "ref_rejected_logps" added, written atomically. */
CLLMDEF cllm_result cllm_dpo_precompute_ref(cllm_model *ref, cllm_dpo_data *d, int batch_size, const char *in_path,
                                            const char *out_path, cllm_err *err) {
    const cllm_train_seq **seqs = (const cllm_train_seq **)cllm__calloc((size_t)d->n * 2 + 1, sizeof *seqs);
    double *lp = (double *)cllm__calloc((size_t)d->n * 2 + 1, sizeof(double));
    cllm_result rc = CLLM_OK;
    int i;
    if (!seqs || !lp) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < d->n && rc == CLLM_OK; i++) {
        seqs[2 * i] = &d->pairs[i].chosen;
        seqs[2 * i + 1] = &d->pairs[i].rejected;
    }
    if (rc == CLLM_OK) rc = cllm_seq_logps(ref, seqs, 2 * d->n, batch_size, lp, err);
    for (i = 0; i < d->n && rc == CLLM_OK; i++) {
        d->pairs[i].ref_chosen = lp[2 * i];
        d->pairs[i].ref_rejected = lp[2 * i + 1];
    }
    if (rc == CLLM_OK) d->has_ref = 1;
    if (rc == CLLM_OK && out_path) rc = cllm__write_ref_pairs(d, in_path, out_path, err);
    CLLM_FREE(seqs);
    CLLM_FREE(lp);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* ---- LoRA adapters: storage, PEFT files, merging (PEFT LoraModel) ---------------------------- */

static const char *cllm__lora_names[CLLM_LORA_NUM_TARGETS] = { "q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj" };
static const char *cllm__lora_short[CLLM_LORA_NUM_TARGETS] = { "q", "k", "v", "o", "gate", "up", "down" };
/* the base weight each target adapts, as a cllm_params tensor index */
static const int cllm__lora_param[CLLM_LORA_NUM_TARGETS] = { CLLM__P_WQ, CLLM__P_WK, CLLM__P_WV, CLLM__P_WO,
                                                             CLLM__P_GATE, CLLM__P_UP, CLLM__P_DOWN };

CLLMDEF const char *cllm_lora_target_name(int t) {
    return t >= 0 && t < CLLM_LORA_NUM_TARGETS ? cllm__lora_names[t] : "?";
}

CLLMDEF cllm_result cllm_lora_parse_targets(const char *list, unsigned *targets, cllm_err *err) {
    const char *p = list;
    *targets = 0;
    if (!list) return cllm__fail(err, CLLM_ERR_ARG, "no LoRA targets given");
    if (strcmp(list, "all") == 0) {
        *targets = CLLM_LORA_ALL;
        return CLLM_OK;
    }
    while (*p) {
        size_t n = strcspn(p, ",");
        int found = -1, t;
        for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
            int is_short = strlen(cllm__lora_short[t]) == n && strncmp(p, cllm__lora_short[t], n) == 0;
            if (is_short || (strlen(cllm__lora_names[t]) == n && strncmp(p, cllm__lora_names[t], n) == 0)) found = t;
        }
        if (found < 0)
            return cllm__fail(err, CLLM_ERR_ARG, "LoRA target '%.*s' is not one of q, k, v, o, gate, up, down",
                              (int)n, p);
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

/* Storage for the adapters of cfg on m (all zero), attached to m: every A and B in one
   allocation, A (L, r, in) then B (L, out, r) per target. */
static cllm_result cllm__lora_setup(cllm_lora *lo, cllm_model *m, const cllm_lora_config *cfg, cllm_err *err) {
    const cllm_config *c = &m->config;
    int Q = c->n_heads * c->head_dim, K = c->n_kv_heads * c->head_dim, H = c->hidden_size, I = c->intermediate_size;
    int ins[CLLM_LORA_NUM_TARGETS] = { H, H, H, Q, H, H, I };    /* q, k, v, o, gate, up, down */
    int outs[CLLM_LORA_NUM_TARGETS] = { Q, K, K, H, I, I, H };
    int t;
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
    if (lo->cfg.r < 1 || lo->cfg.r > CLLM_LORA_MAX_R)
        return cllm__fail(err, CLLM_ERR_ARG, "LoRA: r must be in [1, %d] (got %d)", CLLM_LORA_MAX_R, lo->cfg.r);
    if (!(lo->cfg.alpha > 0))
        return cllm__fail(err, CLLM_ERR_ARG, "LoRA: alpha must be positive (got %g)", lo->cfg.alpha);
    if (!(lo->cfg.dropout < 1))
        return cllm__fail(err, CLLM_ERR_ARG, "LoRA: dropout must be below 1 (got %g)", lo->cfg.dropout);
    if (lo->cfg.targets & ~(unsigned)CLLM_LORA_ALL)
        return cllm__fail(err, CLLM_ERR_ARG, "LoRA: unknown target bits 0x%x", lo->cfg.targets);
    lo->n_layers = c->n_layers;
    lo->scale = lo->cfg.alpha / lo->cfg.r;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        lo->in[t] = ins[t];
        lo->out[t] = outs[t];
        if (lo->cfg.targets & (1u << t))
            lo->num_params += (size_t)lo->n_layers * (size_t)lo->cfg.r * (size_t)(ins[t] + outs[t]);
    }
    lo->params = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
    if (!lo->params)
        return cllm__fail(err, CLLM_ERR_NOMEM, "LoRA: out of memory for %zu adapter parameters", lo->num_params);
    cllm__lora_point(lo, lo->params, lo->A, lo->B);
    lo->enabled = 1;
    lo->model = m;
    m->lora = lo;
    return CLLM_OK;
}

/* PEFT's init_lora_weights="gaussian" (CollabLLM's setting): A ~ N(0, std 1/r), drawn target by
   target, layer by layer, row-major; B = 0, so training starts at the base model. */
CLLMDEF cllm_result cllm_lora_init(cllm_lora *lo, cllm_model *m, const cllm_lora_config *cfg, cllm_err *err) {
    cllm_rng rng;
    size_t k, n;
    int t;
    cllm_result rc = cllm__lora_setup(lo, m, cfg, err);
    if (rc != CLLM_OK) {
        cllm_lora_free(lo);
        return rc;
    }
    cllm_rng_seed(&rng, lo->cfg.seed);
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        if (!lo->A[t]) continue;
        n = (size_t)lo->n_layers * (size_t)lo->cfg.r * (size_t)lo->in[t];
        for (k = 0; k < n; k++) lo->A[t][k] = (cllm_float)(cllm_rng_normal(&rng) / lo->cfg.r);
    }
    return cllm__succeed(err);
}

CLLMDEF void cllm_lora_free(cllm_lora *lo) {
    if (!lo) return;
    if (lo->model && lo->model->lora == lo) lo->model->lora = NULL;
    CLLM_FREE(lo->params);
    CLLM_FREE(lo->grads);
    CLLM_FREE(lo->m);
    CLLM_FREE(lo->v);
    CLLM_FREE(lo->u);
    CLLM_FREE(lo->xd);
    memset(lo, 0, sizeof *lo);
}

/* The adapters (memory = params, grads, m or v) as checkpoint entries with PEFT's names,
   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight, ... */
static int cllm__lora_entries(const cllm_lora *lo, const cllm_float *memory, const char *prefix,
                              cllm_st_entry *entries) {
    size_t r = (size_t)lo->cfg.r;
    int t, l, ab, n = 0;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        size_t b_offset = (size_t)lo->n_layers * r * (size_t)lo->in[t];      /* B after all of A */
        if (!(lo->cfg.targets & (1u << t))) continue;
        for (ab = 0; ab < 2; ab++) {
            for (l = 0; l < lo->n_layers; l++) {
                cllm_st_entry *e = &entries[n++];
                size_t rows = ab ? (size_t)lo->out[t] : r;
                size_t cols = ab ? r : (size_t)lo->in[t];
                snprintf(e->name, sizeof e->name, "%sbase_model.model.model.layers.%d.%s.%s.lora_%c.weight",
                         prefix ? prefix : "", l, t < 4 ? "self_attn" : "mlp", cllm__lora_names[t], ab ? 'B' : 'A');
                e->dtype = CLLM_DT_F32;
                e->ndim = 2;
                e->shape[0] = (int64_t)rows;
                e->shape[1] = (int64_t)cols;
                e->data = memory + (ab ? b_offset : 0) + (size_t)l * rows * cols;
            }
        }
        memory += (size_t)lo->n_layers * r * (size_t)(lo->in[t] + lo->out[t]);
    }
    return n;
}

static int cllm__lora_tensor_count(const cllm_lora *lo) {
    int t, n = 0;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++)
        if (lo->cfg.targets & (1u << t)) n += 2 * lo->n_layers;
    return n;
}

/* Reads the tensors named like `entries` (every one, and no other) into the entries' data. */
static cllm_result cllm__st_read_entries(const char *path, const cllm_st_entry *entries, int n, cllm_err *err) {
    cllm_safetensors st;
    cllm_result rc = cllm_st_open(&st, path, err);
    int i, k;
    for (i = 0; i < n && rc == CLLM_OK; i++) {
        const cllm_st_tensor *t = cllm_st_find(&st, entries[i].name);
        int same = t && t->ndim == entries[i].ndim;
        for (k = 0; same && k < t->ndim; k++) same = t->shape[k] == entries[i].shape[k];
        if (!t) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing tensor '%s'", path, entries[i].name);
        else if (!same)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: tensor '%s' does not have the expected shape", path,
                            entries[i].name);
        else rc = cllm_st_read(&st, t, (cllm_float *)entries[i].data, err);
    }
    if (rc == CLLM_OK && st.n != n) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: %d tensors, expected %d", path, st.n, n);
    cllm_st_close(&st);
    return rc;
}

/* The adapters of lo (memory = params, m or v) written to, or read from, a safetensors file. */
static cllm_result cllm__lora_file(const cllm_lora *lo, const cllm_float *memory, const char *path, int write,
                                   cllm_err *err) {
    cllm_st_entry *entries = (cllm_st_entry *)cllm__calloc((size_t)cllm__lora_tensor_count(lo) + 1, sizeof *entries);
    cllm_result rc;
    int n;
    if (!entries) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    n = cllm__lora_entries(lo, memory, NULL, entries);
    rc = write ? cllm_st_save(path, entries, n, err) : cllm__st_read_entries(path, entries, n, err);
    CLLM_FREE(entries);
    return rc;
}

/* dir/adapter_model.safetensors and dir/adapter_config.json, as PEFT's save_pretrained writes them (the fields in
   its order; this run's values replace the nulls); base_model: base_model_name_or_path (may be NULL). */
CLLMDEF cllm_result cllm_lora_save(const cllm_lora *lo, const char *dir, const char *base_model, cllm_err *err) {
    static const char peft_config[] =
        "{\"alpha_pattern\": {}, \"base_model_name_or_path\": null, \"bias\": \"none\", \"fan_in_fan_out\": false, "
        "\"inference_mode\": true, \"init_lora_weights\": \"gaussian\", \"layers_pattern\": null, "
        "\"layers_to_transform\": null, \"lora_alpha\": null, \"lora_dropout\": null, \"modules_to_save\": null, "
        "\"peft_type\": \"LORA\", \"r\": null, \"rank_pattern\": {}, \"revision\": null, \"target_modules\": [], "
        "\"task_type\": \"CAUSAL_LM\", \"use_dora\": false, \"use_rslora\": false}";
    cJSON *cfg, *tm;
    char path[4096], *json;
    cllm_result rc;
    int t;
    if (!lo->params) return cllm__fail(err, CLLM_ERR_ARG, "LoRA: no adapters to save");
    if ((rc = cllm__mkdir(dir, err)) != CLLM_OK) return rc;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((rc = cllm__lora_file(lo, lo->params, path, 1, err)) != CLLM_OK) return rc;
    if (!(cfg = cJSON_Parse(peft_config))) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (base_model)
        cJSON_ReplaceItemInObjectCaseSensitive(cfg, "base_model_name_or_path", cJSON_CreateString(base_model));
    cJSON_ReplaceItemInObjectCaseSensitive(cfg, "lora_alpha", cJSON_CreateNumber(lo->cfg.alpha));
    cJSON_ReplaceItemInObjectCaseSensitive(cfg, "lora_dropout", cJSON_CreateNumber(lo->cfg.dropout));
    cJSON_ReplaceItemInObjectCaseSensitive(cfg, "r", cJSON_CreateNumber(lo->cfg.r));
    tm = cJSON_GetObjectItemCaseSensitive(cfg, "target_modules");
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++)
        if (lo->cfg.targets & (1u << t)) cJSON_AddItemToArray(tm, cJSON_CreateString(cllm__lora_names[t]));
    json = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    if (!json) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    rc = cllm_write_file_atomic(path, json, strlen(json), err);
    cJSON_free(json);
    return rc;
}

/* A number field of a JSON object (adapter_config.json, trainer_state.json), def when absent or not a number. */
static double cllm__json_num_or(const cJSON *o, const char *key, double def) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(it) ? it->valuedouble : def;
}

/* PEFT adapters: accepts the targets, r, lora_alpha and lora_dropout it finds in
   adapter_config.json, and refuses what it does not implement (rsLoRA, DoRA, fan_in_fan_out, bias). */
CLLMDEF cllm_result cllm_lora_load(cllm_lora *lo, cllm_model *m, const char *dir, cllm_err *err) {
    char path[4096], *text = NULL;
    size_t len;
    cJSON *root;
    const cJSON *tm, *it;
    cllm_lora_config cfg;
    cllm_result rc;
    const char *bias;
    double r, alpha, dropout;
    int unsupported;
    memset(&cfg, 0, sizeof cfg);
    memset(lo, 0, sizeof *lo);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    root = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    if (!root) return cllm__fail(err, CLLM_ERR_FORMAT, "%s: not valid JSON", path);
    r = cllm__json_num_or(root, "r", 0);
    alpha = cllm__json_num_or(root, "lora_alpha", 0);
    dropout = cllm__json_num_or(root, "lora_dropout", 0);
    bias = cllm__json_str(root, "bias");
    tm = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    unsupported = cllm__json_bool(root, "use_rslora", 0) || cllm__json_bool(root, "use_dora", 0) ||
                  cllm__json_bool(root, "fan_in_fan_out", 0) || (bias && strcmp(bias, "none") != 0);
    if (!(r >= 1 && r <= CLLM_LORA_MAX_R && r == floor(r)) || !(alpha > 0))
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: needs an integer \"r\" in [1, %d] and a positive \"lora_alpha\"",
                        path, CLLM_LORA_MAX_R);
    else if (unsupported)
        rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: use_rslora, use_dora, fan_in_fan_out and bias other than "
                                                   "\"none\" are not supported", path);
    else if (!cJSON_IsArray(tm))
        rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: \"target_modules\" must be a list of module names", path);
    else {
        cJSON_ArrayForEach(it, tm) {
            unsigned bits;
            if (cJSON_IsString(it) && cllm_lora_parse_targets(it->valuestring, &bits, err) == CLLM_OK &&
                bits != CLLM_LORA_ALL) {
                cfg.targets |= bits;
                continue;
            }
            rc = cllm__fail(err, CLLM_ERR_UNSUPPORTED, "%s: target module %s is not one of q_proj, k_proj, v_proj, "
                                                       "o_proj, gate_proj, up_proj, down_proj", path,
                            cJSON_IsString(it) ? it->valuestring : "?");
            break;
        }
    }
    cJSON_Delete(root);
    if (rc != CLLM_OK) return rc;
    cfg.r = (int)r;
    cfg.alpha = alpha;
    cfg.dropout = dropout > 0 ? dropout : -1;
    rc = cllm__lora_setup(lo, m, &cfg, err);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (rc == CLLM_OK) rc = cllm__lora_file(lo, lo->params, path, 0, err);
    if (rc != CLLM_OK) cllm_lora_free(lo);
    else cllm__ok(err);
    return rc;
}

/* W += sign * (alpha/r) B A for every adapted weight. */
static void cllm__lora_merge_into(const cllm_lora *lo, cllm_model *m, double sign) {
    size_t r = (size_t)lo->cfg.r;
    int t, l, o, c, j;
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++) {
        for (l = 0; lo->A[t] && l < lo->n_layers; l++) {
            const cllm_float *A = lo->A[t] + (size_t)l * r * lo->in[t];
            const cllm_float *B = lo->B[t] + (size_t)l * lo->out[t] * r;
            cllm_float *W = cllm__lora_base(m, t, l);
            for (o = 0; o < lo->out[t]; o++) {
                for (c = 0; c < lo->in[t]; c++) {
                    double acc = 0;
                    for (j = 0; j < (int)r; j++) acc += (double)B[(size_t)o * r + j] * A[(size_t)j * lo->in[t] + c];
                    W[(size_t)o * lo->in[t] + c] += (cllm_float)(sign * lo->scale * acc);
                }
            }
        }
    }
}

/* PEFT's merge_and_unload: W += (alpha / r) B A for every adapter, then lo is detached from its
   model (cllm_model_save then writes a plain Hugging Face checkpoint); lo keeps its weights. */
CLLMDEF cllm_result cllm_lora_merge(cllm_lora *lo, cllm_err *err) {
    cllm_model *m = lo ? lo->model : NULL;
    if (!m || m->lora != lo)
        return cllm__fail(err, CLLM_ERR_ARG, "LoRA merge: the adapters are not attached to a model");
    cllm__lora_merge_into(lo, m, 1.0);
    m->lora = NULL;
    lo->model = NULL;
    return cllm__succeed(err);
}

/* ---- checkpoint directories ------------------------------------------------------------------ */

/* Checkpoints (data_fmt/train.md): OUT/ckpt-N/ holds the weights as a Hugging Face directory (with LoRA: PEFT's
   adapter files), optimizer.safetensors, trainer_state.json and what the task trains beside the model (PPO's value
   head). It is written into OUT/ckpt-N.tmp/, renamed, and only then does OUT/latest point at it: a crash at any
   moment leaves the previous checkpoint intact. A resumed run continues with bit-identical losses. */

/* Removes a directory and the files in it (checkpoint directories hold no subdirectories). */
static cllm_result cllm__remove_dir(const char *dir, cllm_err *err) {
#if !defined(_WIN32)
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    if (!d && errno == ENOENT) return CLLM_OK;
    if (!d) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot open directory (%s)", dir, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (remove(path) == 0) continue;
        closedir(d);
        return cllm__fail(err, CLLM_ERR_IO, "%s: cannot remove (%s)", path, strerror(errno));
    }
    closedir(d);
    if (rmdir(dir) != 0) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot remove directory (%s)", dir, strerror(errno));
#else
    (void)dir, (void)err;
#endif
    return CLLM_OK;
}

/* Makes a rename inside dir durable (POSIX: fsync the directory). */
static void cllm__sync_dir(const char *dir) {
#if !defined(_WIN32)
    int fd = open(dir, O_RDONLY);
    if (fd < 0) return;
    fsync(fd);
    close(fd);
#else
    (void)dir;
#endif
}

/* The tokenizer files a Hugging Face model directory carries, copied when they exist. */
static cllm_result cllm__copy_tokenizer_files(const char *from, const char *to, cllm_err *err) {
    static const char *files[] = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                   "generation_config.json" };
    char src[4200], dst[4200];
    size_t i;
    cllm_result rc = CLLM_OK;
    for (i = 0; from && rc == CLLM_OK && i < sizeof files / sizeof files[0]; i++) {
        char *data = NULL;
        size_t len = 0;
        snprintf(src, sizeof src, "%s/%s", from, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, files[i]);
        if (!cllm__file_exists(src)) continue;
        rc = cllm_read_file(src, &data, &len, err);
        if (rc == CLLM_OK) rc = cllm_write_file_atomic(dst, data, len, err);
        CLLM_FREE(data);
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
        int tmp = strncmp(e->d_name, "ckpt-", 5) == 0 && len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0;
        if (s >= 0) stbds_arrput(steps, s);
        if (s >= 0 || !tmp) continue;
        snprintf(path, sizeof path, "%s/%s", out_dir, e->d_name);
        if (rc == CLLM_OK) rc = cllm__remove_dir(path, err);
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
    (void)out_dir, (void)keep, (void)latest, (void)err;
    return CLLM_OK;
#endif
}

/* PPO's value head with its AdamW moments as checkpoint entries: TRL's names, "m." and "v.". */
static int cllm__value_head_entries(cllm_value_head *vh, cllm_st_entry *e) {
    cllm_float *mem[3] = { vh->w, vh->m, vh->v };
    const char *prefix[3] = { "", "m.", "v." };
    int k;
    memset(e, 0, 6 * sizeof *e);
    for (k = 0; k < 6; k++) {                     /* weight (1, C), then bias (1), of each of the three */
        int bias = k % 2;
        snprintf(e[k].name, sizeof e[k].name, "%sv_head.summary.%s", prefix[k / 2], bias ? "bias" : "weight");
        e[k].dtype = CLLM_DT_F32;
        e[k].ndim = bias ? 1 : 2;
        e[k].shape[0] = 1;
        if (!bias) e[k].shape[1] = vh->C;
        e[k].data = mem[k / 2] + (bias ? vh->C : 0);
    }
    return 6;
}

/* PPO's own state in a checkpoint (a cllm_train_task's save_extra): value_head.safetensors, and ppo_state.json with
   the current KL coefficient and the running moments of the scores (%.17g: exact doubles). */
static cllm_result cllm__ppo_state_save(void *ctx, const char *dir, cllm_err *err) {
    cllm__ppo_ctx *c = (cllm__ppo_ctx *)ctx;
    cllm_st_entry e[6];
    char path[4200], json[512];
    cllm_result rc;
    snprintf(path, sizeof path, "%s/value_head.safetensors", dir);
    if ((rc = cllm_st_save(path, e, cllm__value_head_entries(c->vh, e), err)) != CLLM_OK) return rc;
    snprintf(path, sizeof path, "%s/ppo_state.json", dir);
    snprintf(json, sizeof json, "{\"kl_coef\": %.17g, \"score_mean\": %.17g, \"score_var\": %.17g, \"score_std\": "
                                "%.17g, \"score_count\": %.17g}\n", c->kl_coef, c->scores.mean, c->scores.var,
             c->scores.std, c->scores.count);
    return cllm_write_file_atomic(path, json, strlen(json), err);
}

/* ... and its load_extra; a checkpoint from before ppo_state.json existed resumes only without
   adaptive KL and score scaling. */
static cllm_result cllm__ppo_state_load(void *ctx, const char *dir, cllm_err *err) {
    static const char *keys[5] = { "kl_coef", "score_mean", "score_var", "score_std", "score_count" };
    cllm__ppo_ctx *c = (cllm__ppo_ctx *)ctx;
    double *dst[5] = { &c->kl_coef, &c->scores.mean, &c->scores.var, &c->scores.std, &c->scores.count };
    cllm_st_entry e[6];
    char path[4200], *text = NULL;
    size_t len;
    cJSON *o;
    cllm_result rc;
    int k;
    snprintf(path, sizeof path, "%s/value_head.safetensors", dir);
    if ((rc = cllm__st_read_entries(path, e, cllm__value_head_entries(c->vh, e), err)) != CLLM_OK) return rc;
    snprintf(path, sizeof path, "%s/ppo_state.json", dir);
    if (!cllm__file_exists(path)) {
        if (c->cfg.kl_target > 0 || c->cfg.score_scaling)
            return cllm__fail(err, CLLM_ERR_FORMAT, "%s is missing: this checkpoint cannot resume adaptive KL or score "
                                                    "scaling", path);
        return CLLM_OK;
    }
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    o = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    for (k = 0; k < 5 && rc == CLLM_OK; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        if (cJSON_IsNumber(x)) *dst[k] = x->valuedouble;
        else rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: \"%s\" must be a number", path, keys[k]);
    }
    cJSON_Delete(o);
    return rc;
}

/* ---- the training loop (Hugging Face Trainer) ------------------------------------------------ */

/* One optimizer step (cllm__trainer_step; data_fmt/train.md, "One optimizer step"):
     1. epoch e visits the examples in a Fisher-Yates shuffle seeded by (seed, e), in micro-batches of batch_size
        (the last one shorter, HF's drop_last=False), grad_accum per step; the position in the data is a function of
        the step alone, which makes resuming exact;
     2. forward, loss and backward per micro-batch; the step's loss is (sum of its unit losses) / (units in the
        step), units = target tokens (SFT) or pairs (DPO), so accumulating k micro-batches equals one batch k times
        larger (HF divides each micro-batch's mean by grad_accum instead: the same when the micro-batches hold equal
        numbers of units);
     3. a NaN or infinite loss or gradient norm stops the run before anything is updated;
     4. torch's clip_grad_norm_, transformers' schedule at this step (the first update uses step 0), AdamW; a metrics
        line, a progress line, a checkpoint every save_every steps.
   Memory: parameters, gradients and two AdamW moments, 16 bytes per parameter in fp32, plus activations; with LoRA
   the base model has no gradients and no moments (measured by examples/lora_memory.c: data_fmt/train.md). */

CLLMDEF void cllm_train_stats_add(cllm_train_stats *s, const char *name, double sum, double count) {
    int i;
    for (i = 0; i < s->n && strcmp(s->name[i], name) != 0; i++) {}
    if (i == s->n) {
        if (s->n == CLLM_TRAIN_MAX_STATS) return;
        s->name[i] = name;
        s->sum[i] = 0;
        s->count[i] = 0;
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

/* The schedule a cllm_train_config names; 0 after a message when it names none. */
static int cllm__schedule_kind(const char *name, cllm_schedule *kind) {
    if (strcmp(name, "constant") == 0) *kind = CLLM_SCHED_CONSTANT;
    else if (strcmp(name, "linear") == 0) *kind = CLLM_SCHED_LINEAR;
    else if (strcmp(name, "cosine") == 0) *kind = CLLM_SCHED_COSINE;
    else return 0;
    return 1;
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
    cllm_schedule kind;
    long micro;
    memset(tr, 0, sizeof *tr);
    if (!m || !m->params_memory || !task || (!task->step && (!task->micro_step || !task->units)))
        return cllm__fail(err, CLLM_ERR_ARG, "trainer: needs a loaded model and a task with units and micro_step (or "
                                             "step)");
    if (lora && (lora->model != m || m->lora != lora))
        return cllm__fail(err, CLLM_ERR_ARG, "trainer: the LoRA adapters are not attached to this model");
    if (task->n_examples < 1) return cllm__fail(err, CLLM_ERR_ARG, "trainer: the data set is empty");
    if (cfg) *c = *cfg;
    c->lr = cllm__def(c->lr, task->default_lr);
    c->lr_schedule = cllm__def(c->lr_schedule, "cosine");
    c->epochs = cllm__def(c->epochs, 1);
    c->batch_size = cllm__def(c->batch_size, 8);
    c->grad_accum = cllm__def(c->grad_accum, 1);
    c->max_grad_norm = cllm__def(c->max_grad_norm, 1.0);
    c->adam = cllm__adamw_defaults(&c->adam);
    if (!(c->adam.beta1 > 0 && c->adam.beta1 < 1 && c->adam.beta2 > 0 && c->adam.beta2 < 1 && c->adam.eps > 0 &&
          c->adam.weight_decay >= 0))
        return cllm__fail(err, CLLM_ERR_ARG, "AdamW: betas must be in (0, 1), eps > 0 and weight_decay >= 0 (got %g, "
                          "%g, %g, %g)", c->adam.beta1, c->adam.beta2, c->adam.eps, c->adam.weight_decay);
    c->seed = cllm__def(c->seed, 42);
    c->log_every = cllm__def(c->log_every, 1);
    c->tokenizer_dir = cllm__def(c->tokenizer_dir, c->model_dir);
    if (!(c->lr > 0)) return cllm__fail(err, CLLM_ERR_ARG, "learning rate must be positive (got %g)", c->lr);
    if (!cllm__schedule_kind(c->lr_schedule, &kind))
        return cllm__fail(err, CLLM_ERR_ARG, "lr schedule '%s' is not constant, linear or cosine", c->lr_schedule);
    if (c->epochs < 1 || c->batch_size < 1 || c->grad_accum < 1 || c->max_steps < 0 || c->warmup_steps < 0 ||
        c->save_every < 0 || c->keep_last < 0 || c->stop_after < 0 || c->log_every < 1)
        return cllm__fail(err, CLLM_ERR_ARG, "epochs, batch_size, grad_accum and log_every must be positive; "
                          "max_steps, warmup_steps, save_every, keep_last and stop_after non-negative");
    if (!(c->warmup_ratio >= 0 && c->warmup_ratio <= 1))
        return cllm__fail(err, CLLM_ERR_ARG, "warmup_ratio must be in [0, 1] (got %g)", c->warmup_ratio);
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
    if ((m->lora != NULL) != (lora != NULL))
        return cllm__fail(err, CLLM_ERR_ARG, "trainer: adapters are attached to the model but not given to the "
                          "trainer");
    if (c->out_dir && cllm__mkdir(c->out_dir, err) != CLLM_OK) return CLLM_ERR_IO;
    return cllm__succeed(err);
}

/* ---- trained parameters: the whole model or the adapters ------------------------------------- */

CLLMDEF cllm_result cllm_trainer_zero_grad(cllm_trainer *tr, cllm_err *err) {
    cllm_lora *lo = tr->lora;
    if (!lo) return cllm_zero_grad(tr->model, err);
    if (lo->grads) memset(lo->grads, 0, lo->num_params * sizeof(cllm_float));
    else if (!(lo->grads = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float))))
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the LoRA gradients");
    cllm__lora_point(lo, lo->grads, lo->dA, lo->dB);
    return cllm__succeed(err);
}

static double cllm__trainer_clip(cllm_trainer *tr) {
    double max_norm = tr->cfg.max_grad_norm > 0 ? tr->cfg.max_grad_norm : 0;   /* 0: measure only */
    if (!tr->lora) return cllm_clip_grad_norm(tr->model, max_norm);
    return cllm_clip_grad_norm_arrays(&tr->lora->grads, &tr->lora->num_params, 1, max_norm);
}

/* AdamW on the trained parameters; every adapter tensor is a matrix, so weight decay applies to
   all of them (as the HF Trainer decays every matrix). */
static cllm_result cllm__trainer_update(cllm_trainer *tr, double lr, cllm_err *err) {
    cllm_lora *lo = tr->lora;
    if (!lo) return cllm_adamw_update(tr->model, &tr->cfg.adam, lr, err);
    if (!lo->m) {
        lo->m = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
        lo->v = (cllm_float *)cllm__calloc(lo->num_params, sizeof(cllm_float));
    }
    if (!lo->m || !lo->v) {
        CLLM_FREE(lo->m);
        CLLM_FREE(lo->v);
        lo->m = lo->v = NULL;
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the AdamW moments");
    }
    cllm_adamw_step(lo->params, lo->grads, lo->m, lo->v, lo->num_params, ++lo->adam_t, lr, &tr->cfg.adam);
    return cllm__succeed(err);
}

/* Parameters / Adam moments as checkpoint entries (count returned; entries NULL = count only). */
static int cllm__trainer_entries(const cllm_trainer *tr, const cllm_float *memory, const char *prefix,
                                 cllm_st_entry *entries) {
    if (tr->lora && !entries) return cllm__lora_tensor_count(tr->lora);
    if (tr->lora) return cllm__lora_entries(tr->lora, memory, prefix, entries);
    if (!entries) return cllm_model_tensor_count(tr->model);
    return cllm_model_entries(tr->model, memory, prefix, CLLM_DT_F32, entries);
}

/* ---- trainer state (trainer_state.json) ------------------------------------------------------ */

/* A float setting as the shortest decimal that names it (0.9f -> 0.9, not 0.899999976). */
static cJSON *cllm__trainer_state_json(const cllm_trainer *tr) {
    const cllm_train_config *c = &tr->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON *rng, *cf;
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
        cJSON *l = cJSON_AddObjectToObject(o, "lora");
        cJSON *t;
        cJSON_AddNumberToObject(l, "r", tr->lora->cfg.r);
        cJSON_AddNumberToObject(l, "alpha", tr->lora->cfg.alpha);
        cJSON_AddNumberToObject(l, "dropout", tr->lora->cfg.dropout);
        t = cJSON_AddArrayToObject(l, "targets");
        for (i = 0; i < CLLM_LORA_NUM_TARGETS; i++)
            if (tr->lora->cfg.targets & (1u << i)) cJSON_AddItemToArray(t, cJSON_CreateString(cllm__lora_names[i]));
    } else {
        cJSON_AddNullToObject(o, "lora");
    }
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
    cJSON_AddNumberToObject(cf, "adam_beta1", c->adam.beta1);
    cJSON_AddNumberToObject(cf, "adam_beta2", c->adam.beta2);
    cJSON_AddNumberToObject(cf, "adam_eps", c->adam.eps);
    cJSON_AddNumberToObject(cf, "weight_decay", c->adam.weight_decay);
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
        return cllm__fail(err, CLLM_ERR_ARG, "%s: the checkpoint has %s = %.17g but this run has %.17g; resume with "
                                             "the settings it was started with", path, key, j->valuedouble, want);
    return CLLM_OK;
}

static cllm_result cllm__trainer_load_state(cllm_trainer *tr, const char *ckpt, cllm_err *err) {
    const char *name = tr->task.name ? tr->task.name : "";
    const char *task, *data_seed;
    char path[4200], *text = NULL, seed[32];
    size_t len;
    cJSON *o, *cf;
    const cJSON *rng, *lora;
    double step, adam_t;
    cllm_result rc;
    int i, had_lora;
    snprintf(path, sizeof path, "%s/trainer_state.json", ckpt);
    if ((rc = cllm_read_file(path, &text, &len, err)) != CLLM_OK) return rc;
    o = cJSON_ParseWithLength(text, len);
    CLLM_FREE(text);
    if (!o || !cllm__json_str(o, "format") || strcmp(cllm__json_str(o, "format"), "collabllm-trainer-state") != 0) {
        cJSON_Delete(o);
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: not a collabllm trainer state", path);
    }
    cf = cJSON_GetObjectItemCaseSensitive(o, "config");
    task = cllm__json_str(o, "task");
    data_seed = cllm__json_str(o, "data_seed");
    lora = cJSON_GetObjectItemCaseSensitive(o, "lora");
    had_lora = lora && !cJSON_IsNull(lora);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)tr->cfg.seed);
    if (!task || strcmp(task, name) != 0)
        rc = cllm__fail(err, CLLM_ERR_ARG, "%s: the checkpoint is of a '%s' run, not '%s'", path, task ? task : "?",
                        name);
    else if (!data_seed || strcmp(data_seed, seed) != 0)
        rc = cllm__fail(err, CLLM_ERR_ARG, "%s: the checkpoint was written with seed %s, this run has %s", path,
                        data_seed ? data_seed : "?", seed);
    else if (had_lora != (tr->lora != NULL))
        rc = cllm__fail(err, CLLM_ERR_ARG, "%s: the checkpoint was written %s LoRA, this run %s", path,
                        tr->lora ? "without" : "with", tr->lora ? "uses it" : "does not");
    if (rc == CLLM_OK) rc = cllm__state_expect(o, "n_examples", tr->task.n_examples, path, err);
    if (rc == CLLM_OK) rc = cllm__state_expect(o, "total_steps", (double)tr->total_steps, path, err);
    if (rc == CLLM_OK) rc = cllm__state_expect(o, "warmup_steps", (double)tr->warmup_steps, path, err);
    if (rc == CLLM_OK) rc = cllm__state_expect(cf, "batch_size", tr->cfg.batch_size, path, err);
    if (rc == CLLM_OK) rc = cllm__state_expect(cf, "grad_accum", tr->cfg.grad_accum, path, err);
    if (rc == CLLM_OK && tr->lora) rc = cllm__state_expect(lora, "r", tr->lora->cfg.r, path, err);
    if (rc == CLLM_OK && tr->lora) rc = cllm__state_expect(lora, "alpha", tr->lora->cfg.alpha, path, err);
    if (rc == CLLM_OK && tr->lora) rc = cllm__state_expect(lora, "dropout", tr->lora->cfg.dropout, path, err);
    step = cllm__json_num_or(o, "step", -1);
    adam_t = cllm__json_num_or(o, "adam_t", -1);
    rng = cJSON_GetObjectItemCaseSensitive(o, "rng_state");
    if (rc == CLLM_OK && (!(step >= 0 && step <= (double)tr->total_steps) || !(adam_t >= 0 && adam_t < 2147483647.0) ||
                          !cJSON_IsArray(rng) || cJSON_GetArraySize(rng) != 4))
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: bad step, adam_t or rng_state", path);
    if (rc == CLLM_OK) {
        tr->step = (long)step;
        if (tr->lora) tr->lora->adam_t = (int)adam_t;
        else tr->model->adam_t = (int)adam_t;
        for (i = 0; i < 4; i++) tr->rng.s[i] = (uint32_t)cJSON_GetArrayItem(rng, i)->valuedouble;
        tr->elapsed = cllm__json_num_or(o, "elapsed_s", 0);
        tr->tokens = cllm__json_num_or(o, "tokens", 0);
        tr->lr = cllm__json_num_or(o, "lr", 0);
    }
    cJSON_Delete(o);
    return rc;
}

/* The trained parameters (moments = 0: every tensor of model.safetensors or adapter_model.safetensors) or their AdamW
   moments (moments = 1: optimizer.safetensors, "m.<name>" and "v.<name>"), written to or read from path. */
static cllm_result cllm__trainer_file(const cllm_trainer *tr, const char *path, int moments, int write, cllm_err *err) {
    cllm_float *params = tr->lora ? tr->lora->params : tr->model->params_memory;
    cllm_float *mm = tr->lora ? tr->lora->m : tr->model->m_memory;
    cllm_float *vv = tr->lora ? tr->lora->v : tr->model->v_memory;
    int count = cllm__trainer_entries(tr, NULL, NULL, NULL);
    cllm_st_entry *entries = (cllm_st_entry *)cllm__calloc(2 * (size_t)count + 1, sizeof *entries);
    cllm_result rc;
    int k;
    if (!entries) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    k = cllm__trainer_entries(tr, moments ? mm : params, moments ? "m." : NULL, entries);
    if (moments) k += cllm__trainer_entries(tr, vv, "v.", entries + k);
    rc = write ? cllm_st_save(path, entries, k, err) : cllm__st_read_entries(path, entries, k, err);
    CLLM_FREE(entries);
    return rc;
}

/* Reads the moments, allocating them if needed (a checkpoint saved before any update has none). */
static cllm_result cllm__trainer_load_optimizer(cllm_trainer *tr, const char *ckpt, cllm_err *err) {
    cllm_float **mm = tr->lora ? &tr->lora->m : &tr->model->m_memory;
    cllm_float **vv = tr->lora ? &tr->lora->v : &tr->model->v_memory;
    size_t n = tr->lora ? tr->lora->num_params : tr->model->num_params;
    char path[4200];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt);
    if (!cllm__file_exists(path)) {
        if ((tr->lora ? tr->lora->adam_t : tr->model->adam_t) == 0) return CLLM_OK;
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s: missing", path);
    }
    if (!*mm) *mm = (cllm_float *)cllm__calloc(n, sizeof(cllm_float));
    if (!*vv) *vv = (cllm_float *)cllm__calloc(n, sizeof(cllm_float));
    if (!*mm || !*vv) return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory for the AdamW moments");
    return cllm__trainer_file(tr, path, 1, 0, err);
}

/* Keeps the metrics lines of steps <= step (a killed run may have logged steps after its last
   checkpoint) and opens the file for appending. */
static cllm_result cllm__trainer_open_metrics(cllm_trainer *tr, cllm_err *err) {
    const char *path = tr->cfg.metrics_path;
    char def[4096];
    FILE *f;
    cllm__sb keep = { NULL, 0, 0, 0 };
    char *line = NULL;
    size_t cap = 0;
    long len = -1;
    cllm_result rc;
    if (tr->metrics || (!path && !tr->cfg.out_dir) || (path && !*path)) return CLLM_OK;   /* open, or none asked */
    snprintf(def, sizeof def, "%s/metrics.jsonl", tr->cfg.out_dir ? tr->cfg.out_dir : "");
    if (!path) path = def;
    if ((f = fopen(path, "rb")) != NULL) {
        while ((len = cllm__read_line(f, &line, &cap)) >= 0) {
            cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "step");
            if (cJSON_IsNumber(s) && s->valuedouble <= (double)tr->step) {
                cllm__sb_putn(&keep, line, (size_t)len);
                cllm__sb_putc(&keep, '\n');
            }
            cJSON_Delete(o);
        }
        fclose(f);
    }
    CLLM_FREE(line);
    if (len < -1) rc = cllm__line_fail(err, path, 0, len);
    else if (keep.oom) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else rc = cllm_write_file_atomic(path, keep.p ? keep.p : "", keep.n, err);
    cllm__sb_free(&keep);
    if (rc != CLLM_OK) return rc;
    tr->metrics = fopen(path, "ab");
    if (!tr->metrics) return cllm__fail(err, CLLM_ERR_IO, "%s: cannot open for appending (%s)", path, strerror(errno));
    return CLLM_OK;
}

/* With cfg.resume and OUT/latest present: loads that checkpoint's weights (or adapters),
   optimizer and trainer state, and what the task trains beside the model, and checks that the
   settings match. Without one it leaves the trainer at step 0. */
CLLMDEF cllm_result cllm_trainer_resume(cllm_trainer *tr, int *resumed, cllm_err *err) {
    char ckpt[4000], path[4200];
    long step;
    cllm_result rc;
    if (resumed) *resumed = 0;
    if (!tr->cfg.resume || !tr->cfg.out_dir || (step = cllm__latest_step(tr->cfg.out_dir)) < 0) {
        return cllm__succeed(err);
    }
    snprintf(ckpt, sizeof ckpt, "%s/ckpt-%ld", tr->cfg.out_dir, step);
    if ((rc = cllm__trainer_load_state(tr, ckpt, err)) != CLLM_OK) return rc;
    if (tr->step != step)
        return cllm__fail(err, CLLM_ERR_FORMAT, "%s/trainer_state.json: step %ld does not match the directory name",
                          ckpt, tr->step);
    snprintf(path, sizeof path, "%s/%s", ckpt, tr->lora ? "adapter_model.safetensors" : "model.safetensors");
    rc = cllm__trainer_file(tr, path, 0, 0, err);
    if (rc == CLLM_OK) rc = cllm__trainer_load_optimizer(tr, ckpt, err);
    if (rc == CLLM_OK && tr->task.load_extra) rc = tr->task.load_extra(tr->task.ctx, ckpt, err);
    if (rc != CLLM_OK) return rc;
    if (!tr->cfg.quiet)
        fprintf(stderr, "[%s] resumed from %s (step %ld of %ld)\n", tr->task.name, ckpt, tr->step, tr->total_steps);
    tr->saved_step = tr->step;
    if (resumed) *resumed = 1;
    return cllm__succeed(err);
}

/* A checkpoint of the current step (see "checkpoint directories"): 1. everything into
   ckpt-N.tmp/, each file flushed to disk; 2. the directory takes its name in one rename; 3. only
   then does `latest` point at it; then old checkpoints are pruned (keep_last). */
CLLMDEF cllm_result cllm_trainer_save(cllm_trainer *tr, cllm_err *err) {
    const cllm_train_config *c = &tr->cfg;
    char dir[4096], tmp[4200], path[4400], latest[64];
    cJSON *state = NULL;
    char *json = NULL;
    cllm_result rc;
    if (!c->out_dir) return cllm__fail(err, CLLM_ERR_ARG, "trainer: no output directory to save the checkpoint in");
    snprintf(dir, sizeof dir, "%s/ckpt-%ld", c->out_dir, tr->step);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    if ((rc = cllm__remove_dir(tmp, err)) != CLLM_OK || (rc = cllm__mkdir(tmp, err)) != CLLM_OK) return rc;
    if (tr->lora) rc = cllm_lora_save(tr->lora, tmp, c->model_dir, err);
    else rc = cllm_model_save(tr->model, tmp, CLLM_DT_F32, err);
    if (rc == CLLM_OK) rc = cllm__copy_tokenizer_files(c->tokenizer_dir, tmp, err);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    if (rc == CLLM_OK && (tr->lora ? tr->lora->m : tr->model->m_memory))
        rc = cllm__trainer_file(tr, path, 1, 1, err);
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
    if ((rc = cllm__remove_dir(dir, err)) != CLLM_OK) return rc;
    if (rename(tmp, dir) != 0)
        return cllm__fail(err, CLLM_ERR_IO, "%s: cannot rename into place (%s)", dir, strerror(errno));
    cllm__sync_dir(c->out_dir);
    snprintf(path, sizeof path, "%s/latest", c->out_dir);
    snprintf(latest, sizeof latest, "ckpt-%ld\n", tr->step);
    if ((rc = cllm_write_file_atomic(path, latest, strlen(latest), err)) != CLLM_OK) return rc;
    cllm__sync_dir(c->out_dir);
    tr->saved_step = tr->step;
    return cllm__prune_checkpoints(c->out_dir, c->keep_last, tr->step, err);
}

/* The trained model as a plain Hugging Face directory with the tokenizer files; with LoRA the adapters are merged
   into the saved weights (the model in memory keeps them separate) and, if adapter_dir is set, also saved there as
   PEFT files. State trained beside the model (task.save_extra: PPO's value head) is written into dir too. */
CLLMDEF cllm_result cllm_trainer_save_final(cllm_trainer *tr, const char *dir, const char *adapter_dir,
                                            cllm_err *err) {
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
    if (keep) memcpy(m->params_memory, keep, m->num_params * sizeof(cllm_float));
    CLLM_FREE(keep);
    if (rc == CLLM_OK) rc = cllm__copy_tokenizer_files(tr->cfg.tokenizer_dir, dir, err);
    if (rc == CLLM_OK && tr->lora && adapter_dir) rc = cllm_lora_save(tr->lora, adapter_dir, tr->cfg.model_dir, err);
    if (rc == CLLM_OK && tr->task.save_extra) rc = tr->task.save_extra(tr->task.ctx, dir, err);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* ---- steps ----------------------------------------------------------------------------------- */

/* tr->order = epoch's permutation of the examples (kept until the epoch changes), drawn from a
   seed that depends on the epoch alone. */
static cllm_result cllm__trainer_order(cllm_trainer *tr, long epoch, cllm_err *err) {
    if (tr->order_epoch == epoch) return CLLM_OK;
    if (!tr->order && !(tr->order = (int *)cllm__calloc((size_t)tr->task.n_examples, sizeof(int))))
        return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    cllm__permutation(tr->order, tr->task.n_examples, tr->cfg.seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch);
    tr->order_epoch = epoch;
    return CLLM_OK;
}

/* "1:02:03" or "2:03" */
static void cllm__fmt_duration(char *buf, size_t n, double s) {
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* The step's JSON line in the metrics file, and every log_every steps a progress line. */
static void cllm__trainer_log(cllm_trainer *tr, const cllm_train_stats *st, double step_tokens) {
    double run_s = cllm__now() - tr->run_t0;
    double done = (double)(tr->step - tr->run_step0);
    double tps = run_s > 0 ? (tr->tokens - tr->run_tokens0) / run_s : 0;
    double epoch = (double)tr->step / (double)tr->steps_per_epoch;
    double margin = cllm_train_stats_mean(st, "rewards/margins");
    double reward = cllm_train_stats_mean(st, "reward");
    char el[32], eta[32];
    int i;
    if (tr->metrics) {
        cJSON *o = cJSON_CreateObject();
        char *line;
        cJSON_AddNumberToObject(o, "step", (double)tr->step);
        cJSON_AddNumberToObject(o, "epoch", epoch);
        for (i = 0; i < st->n; i++)
            cJSON_AddNumberToObject(o, st->name[i], st->count[i] > 0 ? st->sum[i] / st->count[i] : NAN);
        cJSON_AddNumberToObject(o, "lr", tr->lr);
        cJSON_AddNumberToObject(o, "grad_norm", tr->grad_norm);
        cJSON_AddNumberToObject(o, "tokens", step_tokens);
        cJSON_AddNumberToObject(o, "tokens_per_s", tps);
        cJSON_AddNumberToObject(o, "elapsed_s", tr->elapsed);
        line = cJSON_PrintUnformatted(o);
        if (line) fprintf(tr->metrics, "%s\n", line);
        fflush(tr->metrics);
        cJSON_free(line);
        cJSON_Delete(o);
    }
    if (tr->cfg.quiet || (tr->step % tr->cfg.log_every != 0 && tr->step != tr->total_steps)) return;
    cllm__fmt_duration(el, sizeof el, tr->elapsed);
    cllm__fmt_duration(eta, sizeof eta, done > 0 ? run_s / done * (double)(tr->total_steps - tr->step) : 0);
    fprintf(stderr, "[%s] step %ld/%ld  epoch %.2f  loss %.4f", tr->task.name, tr->step, tr->total_steps, epoch,
            cllm_train_stats_mean(st, "loss"));
    if (!isnan(reward)) fprintf(stderr, "  reward %.4f", reward);
    if (!isnan(margin))
        fprintf(stderr, "  margin %.4f  acc %.2f", margin, cllm_train_stats_mean(st, "rewards/accuracies"));
    fprintf(stderr, "  lr %.2e  gnorm %.3f  %.0f tok/s  elapsed %s  eta %s\n", tr->lr, tr->grad_norm, tps, el, eta);
}

/* A non-finite loss or gradient: nothing is updated, the run stops, the last checkpoint stays. */
static cllm_result cllm__numeric_fail(const cllm_trainer *tr, const char *what, double value, cllm_err *err) {
    long latest = tr->cfg.out_dir ? cllm__latest_step(tr->cfg.out_dir) : -1;
    if (latest >= 0)
        return cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: the %s is %g; nothing was updated and the last good "
                          "checkpoint is %s/ckpt-%ld (lower the learning rate?)", tr->step + 1, what, value,
                          tr->cfg.out_dir, latest);
    return cllm__fail(err, CLLM_ERR_NUMERIC, "step %ld: the %s is %g; nothing was updated and no checkpoint was "
                                             "written (lower the learning rate?)", tr->step + 1, what, value);
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

/* One AdamW update at this step's learning rate, after the caller has checked and clipped the
   gradients (no logging; the step does not advance). */
CLLMDEF cllm_result cllm_trainer_update(cllm_trainer *tr, double *lr, cllm_err *err) {
    cllm_schedule kind = CLLM_SCHED_COSINE;
    double rate;
    cllm_result rc;
    cllm__schedule_kind(tr->cfg.lr_schedule, &kind);
    rate = cllm_lr_at(kind, tr->cfg.lr, tr->step, tr->warmup_steps, tr->total_steps);
    rc = cllm__trainer_update(tr, rate, err);
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
    return cllm__succeed(err);
}

/* After the step's backward passes (stats: the step's statistics, with "loss"): check, clip,
   update, log and checkpoint. */
CLLMDEF cllm_result cllm_trainer_apply(cllm_trainer *tr, const cllm_train_stats *st, cllm_err *err) {
    double loss = cllm_train_stats_mean(st, "loss");
    double t0 = cllm__now();
    cllm_result rc;
    if ((rc = cllm__trainer_start(tr, err)) != CLLM_OK) return rc;
    if (!isfinite(loss)) return cllm__numeric_fail(tr, "loss", loss, err);
    tr->grad_norm = cllm__trainer_clip(tr);
    if (!isfinite(tr->grad_norm)) return cllm__numeric_fail(tr, "gradient norm", tr->grad_norm, err);
    if ((rc = cllm_trainer_update(tr, NULL, err)) != CLLM_OK) return rc;
    tr->elapsed += cllm__now() - t0;
    return cllm__trainer_end_step(tr, st, err);
}

/* One optimizer step of the task: its micro-batches (LoRA dropout on, each with its own masks),
   then cllm_trainer_apply; or the task's own step. */
static cllm_result cllm__trainer_step(cllm_trainer *tr, cllm_err *err) {
    const cllm_train_config *c = &tr->cfg;
    long N = tr->task.n_examples;
    long epoch = tr->step / tr->steps_per_epoch;
    long k = tr->step % tr->steps_per_epoch;
    long micro = (N + c->batch_size - 1) / c->batch_size;
    long j0 = k * c->grad_accum;
    long j1 = j0 + c->grad_accum < micro ? j0 + c->grad_accum : micro;
    long j;
    double norm = 0;
    double t0 = cllm__now();
    cllm_train_stats st;
    cllm_result rc;
    memset(&st, 0, sizeof st);
    if ((rc = cllm__trainer_order(tr, epoch, err)) != CLLM_OK) return rc;
    if (tr->task.step) {                          /* the task makes its own updates */
        long b0 = j0 * c->batch_size;
        long b1 = j1 * c->batch_size < N ? j1 * c->batch_size : N;
        if ((rc = tr->task.step(tr->task.ctx, tr, tr->order + b0, (int)(b1 - b0), &st, err)) != CLLM_OK) return rc;
        tr->elapsed += cllm__now() - t0;
        return cllm__trainer_end_step(tr, &st, err);
    }
    if ((rc = cllm_trainer_zero_grad(tr, err)) != CLLM_OK) return rc;
    for (j = j0; j < j1; j++) {
        long b0 = j * c->batch_size;
        long n = b0 + c->batch_size <= N ? c->batch_size : N - b0;
        norm += tr->task.units(tr->task.ctx, tr->order + b0, (int)n);
    }
    if (!(norm > 0))
        return cllm__fail(err, CLLM_ERR_ARG, "step %ld: its examples have nothing to train on", tr->step + 1);
    for (j = j0; j < j1 && rc == CLLM_OK; j++) {
        long b0 = j * c->batch_size;
        long n = b0 + c->batch_size <= N ? c->batch_size : N - b0;
        if (tr->lora) {                            /* dropout on, with this micro-batch's masks */
            uint64_t hi = cllm_rng_u32(&tr->rng);
            uint64_t lo = cllm_rng_u32(&tr->rng);   /* in this order */
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

/* Runs steps until total_steps (or stop_after / on_step), then writes a checkpoint. */
CLLMDEF cllm_result cllm_trainer_run(cllm_trainer *tr, cllm_err *err) {
    cllm_result rc;
    int stop = 0;
    tr->started = 0;                              /* each call measures its own throughput */
    if ((rc = cllm__trainer_start(tr, err)) != CLLM_OK) return rc;
    if (!tr->cfg.quiet && tr->step == 0)
        fprintf(stderr, "[%s] %d examples, %ld steps (%ld per epoch, batch %d x %d accumulated), lr %g %s, "
                "warmup %ld\n", tr->task.name, tr->task.n_examples, tr->total_steps, tr->steps_per_epoch,
                tr->cfg.batch_size, tr->cfg.grad_accum, tr->cfg.lr, tr->cfg.lr_schedule, tr->warmup_steps);
    while (tr->step < tr->total_steps && !stop) {
        if ((rc = cllm__trainer_step(tr, err)) != CLLM_OK) return rc;
        if (tr->cfg.on_step && tr->cfg.on_step(tr->cfg.on_step_ctx, tr)) return cllm__succeed(err);
        stop = tr->cfg.stop_after > 0 && tr->step - tr->run_step0 >= tr->cfg.stop_after;
    }
    if (tr->cfg.out_dir && tr->saved_step != tr->step && (rc = cllm_trainer_save(tr, err)) != CLLM_OK) return rc;
    return cllm__succeed(err);
}

/* ---- SFT and DPO runs ------------------------------------------------------------------------ */

typedef struct cllm__sft_ctx {
    const cllm_sft_data *d;
} cllm__sft_ctx;

static double cllm__sft_units(void *ctx, const int *idx, int n) {
    const cllm__sft_ctx *c = (const cllm__sft_ctx *)ctx;
    double u = 0;
    int i;
    for (i = 0; i < n; i++) u += cllm_train_seq_targets(&c->d->rows[idx[i]]);
    return u;
}

static cllm_result cllm__sft_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm,
                                   cllm_train_stats *st, cllm_err *err) {
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

typedef struct cllm__dpo_ctx {
    const cllm_dpo_data *d;
    cllm_model          *ref;
    cllm_dpo_config      cfg;
} cllm__dpo_ctx;

static cllm_result cllm__dpo_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm,
                                   cllm_train_stats *st, cllm_err *err) {
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

/* Init, resume, run, and the final model of a task: OUT/final (+ OUT/adapter with LoRA). */
static cllm_result cllm__train_run(cllm_model *m, cllm_lora *lora, const cllm_train_task *task,
                                   const cllm_train_config *cfg, cllm_err *err) {
    cllm_trainer tr;
    char dir[4096], adir[4096];
    cllm_result rc = cllm_trainer_init(&tr, m, lora, task, cfg, err);
    if (rc == CLLM_OK) rc = cllm_trainer_resume(&tr, NULL, err);
    if (rc == CLLM_OK) rc = cllm_trainer_run(&tr, err);
    if (rc == CLLM_OK && tr.cfg.out_dir && tr.step == tr.total_steps) {
        snprintf(dir, sizeof dir, "%s/final", tr.cfg.out_dir);
        snprintf(adir, sizeof adir, "%s/adapter", tr.cfg.out_dir);
        rc = cllm_trainer_save_final(&tr, dir, lora ? adir : NULL, err);
        if (rc == CLLM_OK && !tr.cfg.quiet)
            fprintf(stderr, "[%s] done: %s%s%s\n", task->name, dir, lora ? " (merged) and " : "", lora ? adir : "");
    }
    cllm_trainer_free(&tr);
    return rc;
}

/* A task from its parts, then cllm__train_run. */
static cllm_result cllm__train_task(cllm_model *m, cllm_lora *lora, const char *name, int n_examples, double default_lr,
                                    double (*units)(void *, const int *, int),
                                    cllm_result (*micro)(void *, cllm_trainer *, const int *, int, double,
                                                         cllm_train_stats *, cllm_err *),
                                    void *ctx, const cllm_train_config *cfg, cllm_err *err) {
    cllm_train_task task;
    memset(&task, 0, sizeof task);
    task.name = name;
    task.n_examples = n_examples;
    task.default_lr = default_lr;
    task.units = units;
    task.micro_step = micro;
    task.ctx = ctx;
    return cllm__train_run(m, lora, &task, cfg, err);
}

/* SFT (paper section 3.3): units are target tokens; the paper's learning rate 1e-5 (Table 6). */
CLLMDEF cllm_result cllm_train_sft(cllm_model *m, cllm_lora *lora, const cllm_sft_data *d, const cllm_train_config *cfg,
                                   cllm_err *err) {
    cllm__sft_ctx ctx;
    ctx.d = d;
    return cllm__train_task(m, lora, "sft", d->n, 1e-5, cllm__sft_units, cllm__sft_micro, &ctx, cfg, err);
}

/* Offline DPO (paper section 3.3): units are pairs; the paper's learning rate 5e-6 (Table 6). */
CLLMDEF cllm_result cllm_train_dpo(cllm_model *m, cllm_lora *lora, cllm_model *ref, const cllm_dpo_data *d,
                                   const cllm_dpo_config *dpo, const cllm_train_config *cfg, cllm_err *err) {
    cllm__dpo_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.d = d;
    ctx.ref = ref;
    if (dpo) ctx.cfg = *dpo;
    if (!d->has_ref && !ref && !lora && !ctx.cfg.reference_free)
        return cllm__fail(err, CLLM_ERR_ARG, "DPO needs a reference: a reference model, ref_chosen_logps/"
                                             "ref_rejected_logps in the pairs (precompute them), LoRA adapters (the "
                                             "base model is the reference), or reference_free");
    return cllm__train_task(m, lora, "dpo", d->n, 5e-6, cllm__units_are_examples, cllm__dpo_micro, &ctx, cfg, err);
}

/* ---- online training prompts: CollabLLM's inputs form (data_fmt/train_prompts.md) ------------ */

CLLMDEF void cllm_online_prompts_free(cllm_online_prompts *p) {
    int i;
    if (!p) return;
    for (i = 0; i < p->n; i++) {
        cllm_conv_free(&p->items[i].history);
        cllm__task_free(&p->items[i].task);
    }
    stbds_arrfree(p->items);
    memset(p, 0, sizeof *p);
}

/* Appends a prompt, taking over history and task (both zeroed here, also on failure). */
static cllm_result cllm__prompt_add(cllm_online_prompts *p, cllm_conv *history, cllm_task *task, long conv_id,
                                    const cllm_prompts_config *cfg, cllm_err *err) {
    cllm_online_prompt it;
    memset(&it, 0, sizeof it);
    it.history = *history;
    it.task = *task;
    memset(history, 0, sizeof *history);
    memset(task, 0, sizeof *task);
    if (it.history.n < 1 || strcmp(it.history.msgs[it.history.n - 1].role, "assistant") == 0) {
        cllm_conv_free(&it.history);
        cllm__task_free(&it.task);
        return cllm__fail(err, CLLM_ERR_FORMAT, "a prompt must be a non-empty conversation that ends with the user's "
                                                "turn");
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
typedef struct cllm__keyset {
    uint64_t *slot;
    size_t    cap, n;
} cllm__keyset;

static int cllm__keyset_add(cllm__keyset *s, uint64_t key) {
    size_t i;
    if (2 * (s->n + 1) > s->cap) {                 /* rehash into twice the slots */
        cllm__keyset g;
        g.cap = s->cap ? 2 * s->cap : 64;
        g.n = 0;
        if (!(g.slot = (uint64_t *)cllm__calloc(g.cap, sizeof(uint64_t)))) return -1;
        for (i = 0; i < s->cap; i++)
            if (s->slot[i]) cllm__keyset_add(&g, s->slot[i]);
        CLLM_FREE(s->slot);
        *s = g;
    }
    for (i = (size_t)(key * 0x9E3779B97F4A7C15ull >> 20) % s->cap; s->slot[i]; i = (i + 1) % s->cap)
        if (s->slot[i] == key) return 1;
    s->slot[i] = key;
    s->n++;
    return 0;
}

/* From MR records (data_fmt/records.md), as CollabLLM's to_inputs_dataset: one prompt per (conv_id, turn_id), in the
   order first seen, with that record's "prompt" messages and task fields (single_turn_*; the heavy fields completion,
   score, rewards and sessions are dropped). Reads the prompt files cllm_online_prompts_write writes too. */
CLLMDEF cllm_result cllm_online_prompts_read(cllm_online_prompts *p, const char *path, const cllm_prompts_config *cfg,
                                             cllm_err *err) {
    static const char *heavy[] = { "completion", "score", "rewards", "sessions", "task_rows" };
    cllm__keyset seen = { NULL, 0, 0 };            /* (conv_id, turn_id) already taken */
    FILE *f = cllm__open_read(path, "a JSONL file", err);
    char *line = NULL;
    size_t cap = 0, h;
    long len;
    int lineno = 0, added = 0;
    cllm_result rc = CLLM_OK;
    if (!f) return CLLM_ERR_IO;
    while (rc == CLLM_OK && (len = cllm__read_line(f, &line, &cap)) >= 0) {
        cllm_task task;
        cllm_conv history;
        const cJSON *cid, *tid, *messages;
        int ids_ok, dup = 1;
        memset(&history, 0, sizeof history);
        lineno++;
        if (len == 0) continue;
        rc = cllm__task_parse(&task, line, (size_t)len, path, lineno, err);
        cid = cJSON_GetObjectItemCaseSensitive(task.json, "conv_id");
        tid = cJSON_GetObjectItemCaseSensitive(task.json, "turn_id");
        messages = cJSON_GetObjectItemCaseSensitive(task.json, "prompt");
        ids_ok = cJSON_IsNumber(cid) && cid->valuedouble >= 0 && cid->valuedouble < 1e11 &&
                 (!tid || (cJSON_IsNumber(tid) && tid->valuedouble >= 0 && tid->valuedouble < 1e6));
        if (rc == CLLM_OK && !ids_ok)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s:%d: \"conv_id\" (and \"turn_id\" when present) must be "
                                                  "non-negative integers", path, lineno);
        else if (rc == CLLM_OK && (rc = cllm_conv_from_json(&history, messages, err)) != CLLM_OK)
            rc = cllm__fail_where(err, rc, path, lineno, "\"prompt\": ");
        if (rc == CLLM_OK) {
            uint64_t key = ((uint64_t)cid->valuedouble << 20 | (uint64_t)(tid ? tid->valuedouble : history.n)) + 1;
            if ((dup = cllm__keyset_add(&seen, key)) < 0) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
        }
        if (rc == CLLM_OK && !dup) {              /* a (conv_id, turn_id) seen before is skipped */
            for (h = 0; h < sizeof heavy / sizeof heavy[0]; h++)
                cJSON_DeleteItemFromObjectCaseSensitive(task.json, heavy[h]);
            if ((rc = cllm__prompt_add(p, &history, &task, (long)cid->valuedouble, cfg, err)) != CLLM_OK)
                rc = cllm__fail_where(err, rc, path, lineno, "");
            added++;
        }
        cllm__task_free(&task);                   /* empty when cllm__prompt_add took it */
        cllm_conv_free(&history);
    }
    fclose(f);
    CLLM_FREE(line);
    CLLM_FREE(seen.slot);
    if (rc == CLLM_OK && len < -1) rc = cllm__line_fail(err, path, lineno + 1, len);
    if (rc == CLLM_OK && added == 0) rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: no prompts", path);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}

/* One JSON line per prompt: the task's fields, "conv_id", "turn_id" and "prompt" (the history). */
CLLMDEF cllm_result cllm_online_prompts_write(const cllm_online_prompts *p, const char *path, cllm_err *err) {
    cllm__sb out = { NULL, 0, 0, 0 };
    cllm_result rc;
    int i;
    for (i = 0; i < p->n && !out.oom; i++) {
        const cllm_online_prompt *it = &p->items[i];
        cJSON *o = cJSON_Duplicate(it->task.json, 1);
        char *text;
        if (!o) {
            out.oom = 1;
            break;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(o, "conv_id");
        cJSON_DeleteItemFromObjectCaseSensitive(o, "turn_id");
        cJSON_DeleteItemFromObjectCaseSensitive(o, "prompt");
        cJSON_AddNumberToObject(o, "conv_id", (double)it->conv_id);
        cJSON_AddNumberToObject(o, "turn_id", it->turn_id);
        cJSON_AddItemToObject(o, "prompt", cllm_conv_to_json(&it->history));
        text = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!text) {
            out.oom = 1;
            break;
        }
        cllm__sb_puts(&out, text);
        cllm__sb_putc(&out, '\n');
        cJSON_free(text);
    }
    if (out.oom) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    else rc = cllm_write_file_atomic(path, out.p ? out.p : "", out.n, err);
    cllm__sb_free(&out);
    return rc;
}

/* A deep copy of a task. */
static cllm_result cllm__task_copy(cllm_task *dst, const cllm_task *src, cllm_err *err) {
    dst->prompt = cllm__strdup(src->prompt);
    dst->completion = cllm__strdup(src->completion ? src->completion : "");
    dst->json = cJSON_Duplicate(src->json, 1);
    if (dst->prompt && dst->completion && dst->json) return CLLM_OK;
    cllm__task_free(dst);
    return cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
}

/* The prompts a cache file holds, checked against the tasks they were made from. */
static cllm_result cllm__prompts_from_cache(cllm_online_prompts *p, const cllm_task *tasks, int n_tasks,
                                            const cllm_prompts_config *cfg, const char *cache_path, cllm_err *err) {
    cllm_online_prompts c;
    cllm_result rc;
    int i;
    memset(&c, 0, sizeof c);
    if ((rc = cllm_online_prompts_read(&c, cache_path, cfg, err)) != CLLM_OK) return rc;
    if (c.n != n_tasks)
        rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s holds %d prompts for %d tasks: it was made from other tasks (delete "
                                              "it to simulate the openings again)", cache_path, c.n, n_tasks);
    for (i = 0; rc == CLLM_OK && i < c.n; i++)
        if (strcmp(c.items[i].task.prompt, tasks[i].prompt) != 0)
            rc = cllm__fail(err, CLLM_ERR_FORMAT, "%s: prompt %d is for another task than line %d of the tasks (delete "
                                                  "it to simulate the openings again)", cache_path, i + 1, i + 1);
    for (i = 0; rc == CLLM_OK && i < c.n; i++)
        rc = cllm__prompt_add(p, &c.items[i].history, &c.items[i].task, c.items[i].conv_id, cfg, err);
    cllm_online_prompts_free(&c);
    return rc;
}

/* From a task file: the prompt of task i is the simulated user's opening message (one batch of user turns on empty
   histories). cache_path (optional) makes the openings once per task: when the file exists it is read instead (it
   must hold one prompt per task, with the same single_turn_prompt, in order); otherwise the new prompts are written
   there (JSONL, the form cllm_online_prompts_write writes). */
CLLMDEF cllm_result cllm_online_prompts_from_tasks(cllm_online_prompts *p, const cllm_task *tasks, int n_tasks,
                                                   const cllm_user_sim *user, const cllm_prompts_config *cfg,
                                                   const char *cache_path, cllm_err *err) {
    cllm_online_prompts made;
    cllm_goal *goals;
    cllm_conv *empty;
    cllm_reply *replies;
    cllm_result rc = CLLM_OK;
    int i;
    memset(&made, 0, sizeof made);
    if (n_tasks < 1 || !tasks) return cllm__fail(err, CLLM_ERR_ARG, "prompts from tasks: no tasks");
    if (cache_path && cllm__file_exists(cache_path))
        return cllm__prompts_from_cache(p, tasks, n_tasks, cfg, cache_path, err);
    if (!user) return cllm__fail(err, CLLM_ERR_ARG, "prompts from tasks: the opening messages need a user simulator");
    goals = (cllm_goal *)cllm__calloc((size_t)n_tasks, sizeof *goals);
    empty = (cllm_conv *)cllm__calloc((size_t)n_tasks, sizeof *empty);
    replies = (cllm_reply *)cllm__calloc((size_t)n_tasks, sizeof *replies);
    if (!goals || !empty || !replies) rc = cllm__fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; rc == CLLM_OK && i < n_tasks; i++) {
        goals[i].task_desc = cfg && cfg->task_desc ? cfg->task_desc : "a task";
        goals[i].prompt = tasks[i].prompt;
        goals[i].reference = cfg && cfg->show_reference && tasks[i].completion[0] ? tasks[i].completion : NULL;
    }
    if (rc == CLLM_OK) cllm_user_sim_turns(user, goals, empty, n_tasks, replies, NULL);
    for (i = 0; rc == CLLM_OK && i < n_tasks; i++) {
        cllm_conv h;
        cllm_task t;
        memset(&h, 0, sizeof h);
        memset(&t, 0, sizeof t);
        if (replies[i].code != CLLM_OK || !replies[i].text) {
            rc = cllm__fail(err, replies[i].code != CLLM_OK ? replies[i].code : CLLM_ERR_FORMAT,
                            "task %d: the user simulator gave no opening message (%s)", i + 1, replies[i].err.msg);
            break;
        }
        rc = cllm_conv_push(&h, "user", replies[i].text, err);
        if (rc == CLLM_OK) rc = cllm__task_copy(&t, &tasks[i], err);
        if (rc == CLLM_OK) rc = cllm__prompt_add(&made, &h, &t, i, cfg, err);
        cllm_conv_free(&h);
    }
    if (rc == CLLM_OK && cache_path) rc = cllm_online_prompts_write(&made, cache_path, err);
    for (i = 0; rc == CLLM_OK && i < made.n; i++)
        rc = cllm__prompt_add(p, &made.items[i].history, &made.items[i].task, made.items[i].conv_id, cfg, err);
    for (i = 0; replies && i < n_tasks; i++) cllm_reply_free(&replies[i]);
    cllm_online_prompts_free(&made);
    CLLM_FREE(goals);
    CLLM_FREE(empty);
    CLLM_FREE(replies);
    if (rc == CLLM_OK) cllm__ok(err);
    return rc;
}


/* ############################################################################################ */
/* PART III. FAST PATHS                                                                         */
/* ############################################################################################ */

/* -------------------------------------------------------------------------------------------- */
/* III.1 Fast paths (OpenMP, cache blocking, AVX2 / NEON) and the dispatchers                   */
/* -------------------------------------------------------------------------------------------- */
/* Each fast path computes the formula of the Part I reference it names; tests/test_fastpath.c compares the two on
   odd sizes (in the scalar build and again in the fast one). The switches (manual section 3) are set before Part I,
   with the dispatchers' declarations. Summation order:
   - OpenMP alone: unchanged, results are bit-identical to the references.
   - CLLM_BLOCKED: the matmul still adds the products of each output element in ascending order, starting from the
     bias or the value being accumulated into, so without SIMD it too is bit-identical; the tiles only decide which
     thread computes which outputs.
   - CLLM_SIMD: fused multiply-adds (one rounding instead of two); dot products (the forward matmul, attention
     scores) keep 8 (AVX2) or 4 (NEON) lane partial sums per K block of the matmul (cllm__dot: 4 such vectors) and
     add them at the end. Differences are a few float ulps per operation, ~1e-7..1e-6 relative (tests/test_fastpath.c
     prints them). */

#ifdef CLLM__FAST

/* ---- vector helpers: a dot product and y += alpha x ------------------------------------------ */

#ifdef CLLM__AVX2
static float cllm__hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* init + sum_i a[i] b[i]: left to right without SIMD (as the reference loops), else in 4 vector partial sums,
   combined at the end, then the scalar tail. */
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
    for (; i + 8 <= n; i += 8) 
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#elif defined(CLLM__NEON)
    float32x4_t va = vdupq_n_f32(alpha);
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
#endif
    for (; i < n; i++) y[i] += alpha * x[i];
}

/* ---- matmul: cache blocking (mirrors cllm__matmul_forward_naive, cllm__matmul_backward_naive)  */

/* The forward product out = inp W^T pairs rows of inp with rows of W, both contiguous along C, so it is a grid of dot
   products: the "dot" kernel takes 3 rows of inp and 4 rows of W and keeps their 12 dot products in registers (12 of
   the 16 AVX2 registers). The backward products are sums of outer products, with the rows of B contiguous:
     dinp (N,C)  += dout (N,OC)   . W   (OC,C)      A(n,o) = dout[n][o],  B(o,c) = W[o][c]
     dW   (OC,C) += dout^T (OC,N) . inp (N,C)       A(o,n) = dout[n][o],  B(n,c) = inp[n][c]
   The "outer" kernel holds a 6 x 16 block of the output in registers and adds, for each k, the 6 values A(i,k) times
   the 16 values B(k,j); B's rows are first copied into a contiguous panel. Both walk K in blocks that fit their
   operands in L1/L2. The output is cut into tiles, one thread per tile, and inside a tile K is walked in ascending
   order: the thread count never changes a result. */
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
            __m256 x0 = _mm256_loadu_ps(xr[0] + k), x1 = _mm256_loadu_ps(xr[1] + k), x2 = _mm256_loadu_ps(xr[2] + k);
            __m256 wv;
#define CLLM__COL(j) wv = _mm256_loadu_ps(wr[j] + k); s0##j = _mm256_fmadd_ps(x0, wv, s0##j); \
            s1##j = _mm256_fmadd_ps(x1, wv, s1##j); s2##j = _mm256_fmadd_ps(x2, wv, s2##j);
            CLLM__COL(0) CLLM__COL(1) CLLM__COL(2) CLLM__COL(3)      /* a 3 x 4 block of fused multiply-adds */
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
        CLLM__ROW(0) CLLM__ROW(1) CLLM__ROW(2) CLLM__ROW(3) CLLM__ROW(4) CLLM__ROW(5)   /* a 6 x 16 block */
#undef CLLM__ROW
    }
    _mm256_storeu_ps(c, c00);           _mm256_storeu_ps(c + 8, c01);            /* a register table: a row a line */
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
            acc[r][0] = vfmaq_f32(acc[r][0], av, b0); acc[r][1] = vfmaq_f32(acc[r][1], av, b1);   /* a row of 16 */
            acc[r][2] = vfmaq_f32(acc[r][2], av, b2); acc[r][3] = vfmaq_f32(acc[r][3], av, b3);
        }
    }
    for (r = 0; r < CLLM__MR; r++) for (j = 0; j < 4; j++) vst1q_f32(c + r * ldc + 4 * j, acc[r][j]);
}
#else
static void cllm__kernel_outer(int kc, const cllm_float *const *a, size_t acs, const cllm_float *b, cllm_float *c,
                               size_t ldc) {
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
                    for (r = 0; r < CLLM__MR; r++)
                        a[r] = A + (size_t)(i0 + p + (r < mr ? r : 0)) * ars + (size_t)k0 * acs;
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
                    for (r = 0; r < CLLM__MR; r++) for (j = 0; j < CLLM__NR; j++)
                        tile[r * CLLM__NR + j] = r < mr && j < nr ? c[r * ldc + j] : 0;
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
/* ---- matmul forward, OpenMP alone, a few rows (mirrors cllm__matmul_forward_naive) ----------- */

/* Decoding (one token at a time): parallel over the outputs, each row of W read once and dotted with every input
   row while in L1, in the reference's order (cllm__dot without SIMD), so results equal the reference's. */
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

/* ---- RMSNorm backward in parallel (mirrors cllm__rmsnorm_backward_naive) --------------------- */

/* dw[c] sums over the rows, so the reference's row loop would race on it; here each thread owns a block of columns
   and adds its rows in the reference's order (dw[c] += dy[c] x[c] r). */
static void cllm__rmsnorm_backward_parallel(cllm_float *dinp, cllm_float *dw, const cllm_float *dout,
                                            const cllm_float *inp, const cllm_float *w, const cllm_float *rstd,
                                            int N, int C) {
    int n, c0;
    CLLM__PARALLEL_FOR((size_t)N * C)
    for (n = 0; n < N; n++) {                                     /* dx: the reference, row by row */
        size_t row = (size_t)n * C;
        cllm__rmsnorm_backward_naive(dinp + row, NULL, dout + row, inp + row, w, rstd + n, 1, C);
    }
    if (!dw) return;
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

/* ---- attention: (batch, head) pairs in parallel (mirrors cllm__attention_*_naive) ------------ */

/* Forward: each (b, h) is independent; each thread gets its own score row (s when only one thread runs). Every row
   goes through cllm__attend_row, as the KV cache's rows do. */
static void cllm__attention_forward_fast(cllm_float *out, cllm_float *lse, const cllm_float *q, const cllm_float *k,
                                         const cllm_float *v, const int *mask, int B, int T, int H, int KV, int hd,
                                         cllm_float *s) {
    int bh, rep = H / KV, threads = cllm__max_threads();
    cllm_float scale = 1 / cllm__sqrt((cllm_float)hd);
    cllm_float *rows = threads > 1 ? (cllm_float *)CLLM_MALLOC(sizeof(cllm_float) * (size_t)threads * T) : NULL;
    CLLM__PARALLEL_FOR(rows ? (size_t)B * H * T * T * hd : 0)
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, t;
        size_t kv0 = ((size_t)b * T * KV + h / rep) * hd;                        /* key 0 of row b */
        cllm_float *score_row = rows ? rows + (size_t)cllm__thread_num() * T : s;
        for (t = 0; t < T; t++) {
            size_t row = (size_t)(b * T + t) * H + h;
            const int *mask_b = mask ? mask + b * T : NULL;
            lse[((size_t)b * H + h) * T + t] = cllm__attend_row(out + row * hd, q + row * hd, k + kv0, v + kv0,
                                                                (size_t)KV * hd, t + 1, mask_b, hd, scale, score_row);
        }
    }
    CLLM_FREE(rows);
}

/* Backward: dk and dv of a kv head collect from the H/KV query heads that share it, so the unit of work is a
   (b, kv head) pair, whose query heads run in the reference's order. */
static void cllm__attention_backward_fast(cllm_float *dq, cllm_float *dk, cllm_float *dv, const cllm_float *dout,
                                          const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                          const cllm_float *out, const cllm_float *lse, const int *mask, int B, int T,
                                          int H, int KV, int hd) {
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

/* ---- dispatchers: the names Part I, the KV cache and the public API call --------------------- */

static void cllm__matmul_forward(cllm_float *out, const cllm_float *inp, const cllm_float *W, const cllm_float *bias,
                                 int N, int C, int OC) {
#if defined(CLLM_BLOCKED)
    cllm__matmul_forward_blocked(out, inp, W, bias, N, C, OC);   /* any N: see cllm__gemm_nt */
#elif defined(CLLM__OMP)
    if (N < 4) cllm__matmul_forward_rows(out, inp, W, bias, N, C, OC);   /* parallel over OC */
    else cllm__matmul_forward_naive(out, inp, W, bias, N, C, OC);
#else
    cllm__matmul_forward_naive(out, inp, W, bias, N, C, OC);
#endif
}

static void cllm__matmul_backward(cllm_float *dinp, cllm_float *dW, cllm_float *dbias, const cllm_float *dout,
                                  const cllm_float *inp, const cllm_float *W, int N, int C, int OC) {
#ifdef CLLM_BLOCKED
    cllm__matmul_backward_blocked(dinp, dW, dbias, dout, inp, W, N, C, OC);
#else
    cllm__matmul_backward_naive(dinp, dW, dbias, dout, inp, W, N, C, OC);
#endif
}

static void cllm__rmsnorm_backward(cllm_float *dinp, cllm_float *dw, const cllm_float *dout, const cllm_float *inp,
                                   const cllm_float *w, const cllm_float *rstd, int N, int C) {
#ifdef CLLM__FAST
    cllm__rmsnorm_backward_parallel(dinp, dw, dout, inp, w, rstd, N, C);
#else
    cllm__rmsnorm_backward_naive(dinp, dw, dout, inp, w, rstd, N, C);
#endif
}

/* One row of attention, cllm__attend_row_naive's formula; with SIMD the dot products q . k_j and the updates
   y += p_j v_j are vector ones (cllm__dot, cllm__axpy). The full attention and the KV cache (II.5) both call it,
   so in every build a token's logits are the same whether its sequence ran whole or was decoded step by step. */
static cllm_float cllm__attend_row(cllm_float *y, const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                   size_t stride, int n, const int *mask, int hd, cllm_float scale, cllm_float *s) {
#if defined(CLLM__AVX2) || defined(CLLM__NEON)
    int j, i;
    cllm_float mx = -INFINITY, sum = 0;
    for (j = 0; j < n; j++) {
        s[j] = mask && !mask[j] ? -INFINITY : cllm__dot(0, q, k + (size_t)j * stride, hd) * scale;
        if (s[j] > mx) mx = s[j];
    }
    for (j = 0; j < n; j++) {
        s[j] = cllm__exp(s[j] - mx);
        sum += s[j];
    }
    for (i = 0; i < hd; i++) y[i] = 0;
    for (j = 0; j < n; j++) {
        cllm_float p = s[j] / sum;
        if (p != 0) cllm__axpy(y, p, v + (size_t)j * stride, hd);
    }
    return mx + cllm__log(sum);
#else
    return cllm__attend_row_naive(y, q, k, v, stride, n, mask, hd, scale, s);
#endif
}

/* s: scratch of T values (the fast path allocates one row per thread itself). */
static void cllm__attention_forward(cllm_float *out, cllm_float *lse, const cllm_float *q, const cllm_float *k,
                                    const cllm_float *v, const int *mask, int B, int T, int H, int KV, int hd,
                                    cllm_float *s) {
#ifdef CLLM__FAST
    cllm__attention_forward_fast(out, lse, q, k, v, mask, B, T, H, KV, hd, s);
#else
    cllm__attention_forward_naive(out, lse, q, k, v, mask, B, T, H, KV, hd, s);
#endif
}

static void cllm__attention_backward(cllm_float *dq, cllm_float *dk, cllm_float *dv, const cllm_float *dout,
                                     const cllm_float *q, const cllm_float *k, const cllm_float *v,
                                     const cllm_float *out, const cllm_float *lse, const int *mask, int B, int T,
                                     int H, int KV, int hd) {
#ifdef CLLM__FAST
    cllm__attention_backward_fast(dq, dk, dv, dout, q, k, v, out, lse, mask, B, T, H, KV, hd);
#else
    cllm__attention_backward_naive(dq, dk, dv, dout, q, k, v, out, lse, mask, B, T, H, KV, hd);
#endif
}

CLLMDEF void cllm_matmul_forward(cllm_float *out, const cllm_float *inp, const cllm_float *W, const cllm_float *bias,
                                 int N, int C, int OC) {
    cllm__matmul_forward(out, inp, W, bias, N, C, OC);
}

CLLMDEF void cllm_matmul_backward(cllm_float *dinp, cllm_float *dW, cllm_float *dbias, const cllm_float *dout,
                                  const cllm_float *inp, const cllm_float *W, int N, int C, int OC) {
    cllm__matmul_backward(dinp, dW, dbias, dout, inp, W, N, C, OC);
}

CLLMDEF int cllm_num_threads(void) { return cllm__max_threads(); }

/* ############################################################################################ */
/* PART IV. GENERATED TABLES                                                                    */
/* ############################################################################################ */

/* ---- Unicode tables, generated from Debian's unicode-data by tests/gen_unicode_tables.py ----- */

/* BEGIN GENERATED UNICODE TABLES (tests/gen_unicode_tables.py, Unicode 15.0.0; `make unicode-tables`) */
#define CLLM__UNICODE_VERSION "15.0.0"
/* \p{L} \p{N} \s: start << 3 | bits (1 letter L*, 2 number N*, 4 White_Space) until the next */
static const uint32_t cllm__uni_class_table[1562] = {
    0,76,112,260,264,386,464,521,728,777,984,1068,1072,1284,1288,1361,1368,1426,1440,1449,1456,1482,1489,1496,1506,
    1528,1537,1720,1729,1976,1985,5648,5681,5776,5889,5928,5985,5992,6001,6008,7041,7080,7089,7104,7121,7152,7161,
    7168,7217,7224,7233,7256,7265,7272,7281,7440,7449,8112,8121,9232,9297,10624,10633,10936,10953,10960,11009,11336,
    11905,12120,12153,12184,12545,12888,13058,13136,13169,13184,13193,13984,13993,14000,14121,14136,14193,14210,14289,
    14312,14329,14336,14465,14472,14481,14720,14953,15664,15753,15760,15874,15953,16216,16289,16304,16337,16344,16385,
    16560,16593,16600,16673,16680,16705,16712,16897,17096,17153,17240,17281,17472,17481,17528,17665,18000,18465,18896,
    18921,18928,19073,19080,19137,19216,19250,19328,19337,19464,19497,19560,19577,19592,19609,19784,19793,19848,19857,
    19864,19889,19920,19945,19952,20081,20088,20193,20208,20217,20240,20274,20353,20368,20386,20432,20449,20456,20521,
    20568,20601,20616,20633,20808,20817,20872,20881,20896,20905,20920,20929,20944,21193,21224,21233,21240,21298,21376,
    21393,21416,21545,21616,21625,21648,21657,21832,21841,21896,21905,21920,21929,21968,21993,22000,22145,22152,22273,
    22288,22322,22400,22473,22480,22569,22632,22649,22664,22681,22856,22865,22920,22929,22944,22953,22992,23017,23024,
    23265,23280,23289,23312,23346,23424,23433,23442,23488,23577,23584,23593,23640,23665,23688,23697,23728,23753,23768,
    23777,23784,23793,23808,23833,23848,23873,23896,23921,24016,24193,24200,24370,24472,24617,24680,24689,24712,24721,
    24904,24913,25040,25065,25072,25281,25304,25321,25328,25345,25360,25394,25472,25538,25592,25601,25608,25641,25704,
    25713,25736,25745,25928,25937,26016,26025,26064,26089,26096,26345,26360,26369,26384,26418,26496,26505,26520,26657,
    26728,26737,26760,26769,27096,27113,27120,27249,27256,27297,27320,27330,27385,27408,27442,27592,27601,27648,27689,
    27832,27857,28048,28057,28128,28137,28144,28161,28216,28466,28544,28681,29064,29073,29088,29185,29240,29314,29392,
    29705,29720,29729,29736,29745,29784,29793,29984,29993,30000,30009,30088,30097,30112,30185,30192,30209,30248,30257,
    30264,30338,30416,30433,30464,30721,30728,30978,31136,31233,31296,31305,31592,31809,31848,32769,33112,33273,33282,
    33360,33409,33456,33489,33520,33545,33552,33577,33592,33649,33672,33705,33808,33905,33912,33922,34000,34049,34352,
    34361,34368,34409,34416,34433,34776,34785,37448,37457,37488,37505,37560,37569,37576,37585,37616,37633,37960,37969,
    38000,38017,38280,38289,38320,38337,38392,38401,38408,38417,38448,38465,38584,38593,39048,39057,39088,39105,39640,
    39754,39912,39937,40064,40193,40880,40897,40944,40969,45928,45945,46084,46089,46296,46337,46936,46962,46985,47048,
    47105,47248,47353,47504,47617,47760,47873,47976,47985,48008,48129,48544,48825,48832,48865,48872,48898,48976,49026,
    49104,49282,49360,49409,50120,50177,50216,50233,50504,50513,50520,50561,51120,51201,51448,51762,51841,52080,52097,
    52136,52225,52576,52609,52816,52866,52952,53249,53432,53505,53928,54274,54352,54402,54480,54585,54592,55337,55712,
    55849,55912,55938,56016,56345,56584,56689,56706,56785,57136,57345,57632,57858,57936,57961,57986,58065,58352,58369,
    58440,58497,58840,58857,58880,59209,59240,59249,59296,59305,59320,59345,59352,59393,60928,61441,63664,63681,63728,
    63745,64048,64065,64112,64129,64192,64201,64208,64217,64224,64233,64240,64249,64496,64513,64936,64945,65000,65009,
    65016,65041,65064,65073,65128,65153,65184,65201,65248,65281,65384,65425,65448,65457,65512,65540,65624,65860,65872,
    65916,65920,66300,66304,66434,66441,66448,66466,66512,66553,66562,66640,66689,66792,67601,67608,67641,67648,67665,
    67744,67753,67760,67785,67824,67873,67880,67889,67896,67905,67912,67921,67952,67961,68048,68065,68096,68137,68176,
    68209,68216,68226,68633,68650,68688,74498,74976,75602,75776,80818,81056,90113,91944,91993,92024,92049,92064,92138,
    92144,92161,92464,92473,92480,92521,92528,92545,92992,93049,93056,93185,93368,93441,93496,93505,93560,93569,93624,
    93633,93688,93697,93752,93761,93816,93825,93880,93889,93944,94585,94592,98308,98312,98345,98362,98368,98570,98640,
    98697,98736,98754,98777,98792,98825,99512,99561,99584,99593,100312,100321,100352,100393,100736,100745,101496,
    101522,101552,101633,101888,102273,102400,102658,102736,102978,103040,103050,103168,103426,103504,103818,103936,
    106497,159232,159745,337000,337537,337904,337921,340072,340097,340226,340305,340320,340481,340856,340985,341232,
    341249,341810,341888,342201,342272,342289,343112,343129,343640,343681,343696,343705,343712,343721,343760,343953,
    344080,344089,344112,344121,344152,344161,344344,344450,344496,344577,344992,345105,345504,345730,345808,346001,
    346048,346073,346080,346089,346104,346114,346193,346416,346497,346680,346881,347112,347169,347544,347769,347778,
    347856,347905,347944,347953,348034,348113,348152,348161,348488,348673,348696,348705,348768,348802,348880,348929,
    349112,349137,349144,349169,349568,349577,349584,349609,349624,349641,349680,349697,349704,349713,349720,349913,
    349936,349953,350040,350097,350120,350217,350264,350281,350328,350345,350392,350465,350520,350529,350584,350593,
    350936,350945,351056,351105,352024,352130,352208,352257,441632,441729,441912,441945,442336,509953,512880,512897,
    513744,514049,514104,514201,514240,514281,514288,514297,514376,514385,514488,514497,514536,514545,514552,514561,
    514576,514585,514600,514609,515472,515737,518640,518785,519296,519313,519744,520065,520160,521089,521128,521137,
    522216,522370,522448,522505,522712,522761,522968,523057,523768,523793,523840,523857,523904,523921,523968,523985,
    524008,524289,524384,524393,524600,524609,524760,524769,524784,524793,524912,524929,525040,525313,526296,526394,
    526752,526850,527304,527442,527456,529409,529640,529665,530056,530186,530400,530433,530690,530720,530793,530954,
    530961,531026,531032,531073,531376,531457,531696,531713,532000,532033,532096,532106,532144,532481,533744,533762,
    533840,533889,534176,534209,534496,534529,534848,534913,535328,535425,535512,535521,535640,535649,535704,535713,
    535728,535737,535824,535833,535952,535961,536016,536025,536040,536577,539064,539137,539312,539393,539456,539649,
    539696,539705,540040,540049,540120,540673,540720,540737,540744,540753,541104,541113,541128,541153,541160,541177,
    541360,541378,541441,541624,541642,541697,541944,542010,542080,542465,542616,542625,542640,542682,542721,542898,
    542944,542977,543184,543745,544192,544226,544241,544258,544384,544402,544769,544776,544897,544928,544937,544960,
    544969,545200,545282,545352,545537,545770,545784,545793,546026,546048,546305,546368,546377,546600,546650,546688,
    546817,547248,547329,547504,547522,547585,547736,547778,547841,547984,548170,548224,548865,549448,549889,550296,
    550401,550808,550866,550913,551200,551298,551376,553730,553976,553985,554320,554369,554384,555009,555242,555321,
    555328,555393,555568,555658,555688,555905,556048,556417,556586,556640,556801,556984,557081,557504,557714,557952,
    557961,557976,557993,558000,558105,558464,558721,558920,558978,559056,559129,559416,559538,559616,559649,559656,
    559673,559680,559745,560024,560049,560056,560153,560536,560649,560680,560770,560849,560856,560865,560872,560906,
    561064,561153,561296,561305,561504,561657,561672,562177,562232,562241,562248,562257,562288,562297,562416,562425,
    562504,562561,562936,563074,563152,563241,563304,563321,563336,563353,563528,563537,563592,563601,563616,563625,
    563664,563689,563696,563841,563848,563945,563984,565249,565672,565817,565848,565890,565968,566009,566032,566273,
    566656,566817,566832,566841,566848,566914,566992,568321,568696,569025,569056,569345,569728,569889,569896,569986,
    570064,570369,570712,570817,570824,570882,570960,571393,571608,571778,571872,571905,571960,573441,573792,574721,
    575234,575384,575481,575544,575561,575568,575585,575648,575657,575672,575681,575872,575993,576000,576009,576016,
    576130,576208,576769,576832,576849,577160,577289,577296,577305,577312,577537,577544,577625,577944,578001,578008,
    578177,578184,578273,578640,578793,578800,578945,579528,581633,581704,581713,582008,582145,582152,582274,582504,
    582545,582784,583681,583736,583745,583760,583769,584072,584241,584248,584322,584400,584449,584496,584505,584520,
    584529,584784,584897,584904,584962,585040,587521,587672,587793,587800,587809,587912,587921,588192,588418,588496,
    589185,589192,589314,589480,589825,597200,598018,598904,599041,600608,621697,622472,622593,631168,631305,631352,
    663553,668216,737281,741832,741889,742136,742146,742224,742273,742904,742914,742992,743041,743280,743425,743808,
    743937,743968,744066,744144,744154,744208,744217,744384,744425,744576,750081,750594,750776,751617,752216,752257,
    752264,752793,752896,753409,753424,753433,753440,753665,802752,802817,812720,813057,813128,884609,884640,884649,
    884704,884713,884728,884737,887064,887185,887192,887425,887448,887465,887472,887585,887616,887681,890848,909313,
    910168,910209,910312,910337,910408,910465,910544,955906,956064,956162,956320,957186,957384,958465,959144,959153,
    959720,959729,959744,959761,959768,959785,959800,959817,959848,959857,959952,959961,959968,959977,960032,960041,
    960560,960569,960600,960617,960680,960689,960744,960753,960976,960985,961016,961025,961064,961073,961080,961105,
    961160,961169,963888,963905,964104,964113,964312,964321,964568,964577,964776,964785,965032,965041,965240,965249,
    965496,965505,965704,965713,965960,965969,966168,966177,966240,966258,966656,980993,981240,981289,981336,983425,
    983920,985089,985448,985529,985584,985602,985680,985713,985720,988289,988528,988673,989024,989058,989136,992897,
    993120,993154,993232,999169,999224,999233,999264,999273,999288,999297,999416,999425,1001000,1001018,1001088,
    1001473,1002016,1002073,1002080,1002114,1002192,1008522,1008992,1009002,1009024,1009034,1009064,1009674,1010032,
    1010042,1010160,1011713,1011744,1011753,1011968,1011977,1011992,1012001,1012008,1012025,1012032,1012041,1012120,
    1012129,1012160,1012169,1012176,1012185,1012192,1012241,1012248,1012281,1012288,1012297,1012304,1012313,1012320,
    1012329,1012352,1012361,1012376,1012385,1012392,1012409,1012416,1012425,1012432,1012441,1012448,1012457,1012464,
    1012473,1012480,1012489,1012504,1012513,1012520,1012537,1012568,1012577,1012632,1012641,1012672,1012681,1012712,
    1012721,1012728,1012737,1012816,1012825,1012960,1013001,1013024,1013033,1013072,1013081,1013216,1017858,1017960,
    1040258,1040336,1048577,1390336,1390593,1423824,1423873,1425648,1425665,1471760,1471873,1531656,1556481,1560816,
    1572865,1612376,1612417,1645952,
};
/* canonical combining class: start << 8 | ccc until the next start */
static const uint32_t cllm__uni_ccc_table[581] = {
    0,196838,202216,202460,203496,203736,203996,205258,205788,206794,207324,209921,211420,212454,214512,214758,215004,
    215782,216540,216832,217318,218076,219110,219368,219612,220134,220393,220650,221161,221418,221929,222182,225280,
    295910,296960,365020,365286,366300,366566,367326,367580,367846,369372,370918,371420,371686,372190,372452,372710,
    372746,373003,373260,373517,373774,374031,374288,374545,374802,375059,375572,375829,376086,376320,376599,376832,
    377112,377369,377600,378086,378332,378368,378642,378880,397542,399390,399647,399904,400128,412443,412700,412957,
    413214,413471,413728,413985,414242,414694,415196,415718,416988,417254,417756,417792,421923,422144,448230,449792,
    450534,451548,451814,451840,452582,452864,453340,453606,454108,454144,463140,463360,471270,471516,471782,472284,
    472550,473052,473830,474076,474598,474844,475110,475868,476134,476380,476646,476892,477158,477404,477670,477952,
    519142,520924,521190,521216,523740,523776,530150,530944,531430,533504,533990,534528,535014,536064,547292,547840,
    563430,563676,564454,565248,576230,577500,578790,582144,582620,582886,583388,583654,584156,584422,585180,585755,
    586012,586269,586726,587484,587750,588252,588774,589824,605191,605440,609545,609792,610790,611036,611302,611584,
    637959,638208,642313,642560,655078,655104,670727,670976,675081,675328,703495,703744,707849,708096,736263,736512,
    740617,740864,773385,773632,801799,802048,806153,806400,808276,808539,808704,834567,834816,838921,839168,867081,
    867584,871689,871936,903689,903936,931943,932361,932608,936043,936960,964726,965129,965376,968826,969728,989404,
    989696,996828,996864,997340,997376,997848,997888,1012097,1012354,1012480,1012868,1012992,1014402,1015296,1015938,
    1016064,1016550,1016841,1017088,1017574,1017856,1033948,1033984,1062663,1062912,1063177,1063680,1084892,1084928,
    1269222,1269760,1512457,1512960,1520649,1520896,1561097,1561344,1564134,1564160,1616356,1616384,1653214,1653478,
    1653724,1653760,1710054,1710300,1710336,1728521,1728768,1734118,1735936,1736668,1736704,1749222,1750492,1752038,
    1752540,1752576,1753052,1753574,1754076,1754598,1755868,1756134,1756928,1782791,1783040,1786889,1787136,1797094,
    1797340,1797606,1799168,1813001,1813504,1828359,1828608,1831433,1831936,1849095,1849344,1888486,1889024,1889281,
    1889756,1891046,1891548,1892582,1892608,1892865,1894656,1895900,1895936,1897702,1897728,1898726,1899008,1949926,
    1950428,1950694,1952476,1952742,1953258,1953494,1953756,1953994,1954278,1963752,1964004,1964508,1964762,1965030,
    1965289,1965532,1965798,1966044,1966080,2150630,2150913,2151654,2152449,2153446,2153728,2154982,2155008,2155777,
    2156518,2156764,2157030,2157057,2157788,2158822,2158848,2944998,2945536,2981641,2981888,3006694,3014656,3156698,
    3156964,3157224,3157470,3157728,3158016,3184904,3185408,10907622,10907648,10908902,10911232,10919654,10919936,
    10940646,10940928,11011593,11011840,11021321,11021568,11060233,11060480,11067622,11072000,11086812,11087360,
    11096841,11097088,11121415,11121664,11124745,11124992,11186406,11186432,11186918,11187420,11187456,11188198,
    11188480,11189990,11190272,11190758,11190784,11204105,11204352,11267337,11267584,16457242,16457472,16654566,
    16656348,16658150,16658432,16907740,16907776,16965852,16965888,17004262,17005312,17436124,17436160,17436646,
    17436672,17447142,17447169,17447644,17447680,17448713,17448960,17491430,17491676,17491712,17638630,17639424,
    17738726,17739008,17759708,17760256,17778396,17778918,17779676,17779942,17780188,17780992,17793766,17794012,
    17794278,17794524,17794560,17843721,17843968,17854473,17854720,17858313,17858560,17873161,17873415,17873664,
    17891558,17892096,17904393,17904896,17920775,17921024,17940489,17940736,17943047,17943296,17970441,17970695,
    17970944,18016519,18016777,18017024,18037511,18038016,18042121,18042368,18048742,18050304,18051302,18052352,
    18104841,18105088,18105863,18106112,18112230,18112256,18137609,18137863,18138112,18202377,18202631,18202880,
    18235145,18235392,18265609,18265863,18266112,18295561,18295808,18364681,18364935,18365184,18431241,18431744,
    18432775,18433024,18472969,18473216,18494473,18494720,18499337,18499584,18520329,18520576,18628361,18628608,
    18694663,18694912,18695177,18695680,18716425,18716672,18825481,18825984,23785473,23786752,23802086,23803648,
    24113158,24113664,29138433,29138688,30500312,30500609,30501376,30502370,30502616,30503680,30505948,30507776,
    30508518,30509788,30510080,30517990,30518784,30556902,30557440,31457510,31459072,31459558,31463680,31464422,
    31465984,31466470,31466752,31467238,31468288,31494118,31494144,31535334,31536896,31633126,31633152,31648998,
    31649792,31780072,31780572,31780838,31780864,32035036,32036608,32064742,32066055,32066304,
};
/* {cp + 2^31 if a pair excluded from composition, first, second (0 = singleton)}, sorted by cp */
static const uint32_t cllm__uni_decomp[6183] = {
    192,65,768,193,65,769,194,65,770,195,65,771,196,65,776,197,65,778,199,67,807,200,69,768,201,69,769,202,69,770,203,
    69,776,204,73,768,205,73,769,206,73,770,207,73,776,209,78,771,210,79,768,211,79,769,212,79,770,213,79,771,214,79,
    776,217,85,768,218,85,769,219,85,770,220,85,776,221,89,769,224,97,768,225,97,769,226,97,770,227,97,771,228,97,776,
    229,97,778,231,99,807,232,101,768,233,101,769,234,101,770,235,101,776,236,105,768,237,105,769,238,105,770,239,105,
    776,241,110,771,242,111,768,243,111,769,244,111,770,245,111,771,246,111,776,249,117,768,250,117,769,251,117,770,
    252,117,776,253,121,769,255,121,776,256,65,772,257,97,772,258,65,774,259,97,774,260,65,808,261,97,808,262,67,769,
    263,99,769,264,67,770,265,99,770,266,67,775,267,99,775,268,67,780,269,99,780,270,68,780,271,100,780,274,69,772,
    275,101,772,276,69,774,277,101,774,278,69,775,279,101,775,280,69,808,281,101,808,282,69,780,283,101,780,284,71,
    770,285,103,770,286,71,774,287,103,774,288,71,775,289,103,775,290,71,807,291,103,807,292,72,770,293,104,770,296,
    73,771,297,105,771,298,73,772,299,105,772,300,73,774,301,105,774,302,73,808,303,105,808,304,73,775,308,74,770,309,
    106,770,310,75,807,311,107,807,313,76,769,314,108,769,315,76,807,316,108,807,317,76,780,318,108,780,323,78,769,
    324,110,769,325,78,807,326,110,807,327,78,780,328,110,780,332,79,772,333,111,772,334,79,774,335,111,774,336,79,
    779,337,111,779,340,82,769,341,114,769,342,82,807,343,114,807,344,82,780,345,114,780,346,83,769,347,115,769,348,
    83,770,349,115,770,350,83,807,351,115,807,352,83,780,353,115,780,354,84,807,355,116,807,356,84,780,357,116,780,
    360,85,771,361,117,771,362,85,772,363,117,772,364,85,774,365,117,774,366,85,778,367,117,778,368,85,779,369,117,
    779,370,85,808,371,117,808,372,87,770,373,119,770,374,89,770,375,121,770,376,89,776,377,90,769,378,122,769,379,90,
    775,380,122,775,381,90,780,382,122,780,416,79,795,417,111,795,431,85,795,432,117,795,461,65,780,462,97,780,463,73,
    780,464,105,780,465,79,780,466,111,780,467,85,780,468,117,780,469,220,772,470,252,772,471,220,769,472,252,769,473,
    220,780,474,252,780,475,220,768,476,252,768,478,196,772,479,228,772,480,550,772,481,551,772,482,198,772,483,230,
    772,486,71,780,487,103,780,488,75,780,489,107,780,490,79,808,491,111,808,492,490,772,493,491,772,494,439,780,495,
    658,780,496,106,780,500,71,769,501,103,769,504,78,768,505,110,768,506,197,769,507,229,769,508,198,769,509,230,769,
    510,216,769,511,248,769,512,65,783,513,97,783,514,65,785,515,97,785,516,69,783,517,101,783,518,69,785,519,101,785,
    520,73,783,521,105,783,522,73,785,523,105,785,524,79,783,525,111,783,526,79,785,527,111,785,528,82,783,529,114,
    783,530,82,785,531,114,785,532,85,783,533,117,783,534,85,785,535,117,785,536,83,806,537,115,806,538,84,806,539,
    116,806,542,72,780,543,104,780,550,65,775,551,97,775,552,69,807,553,101,807,554,214,772,555,246,772,556,213,772,
    557,245,772,558,79,775,559,111,775,560,558,772,561,559,772,562,89,772,563,121,772,832,768,0,833,769,0,835,787,0,
    2147484484,776,769,884,697,0,894,59,0,901,168,769,902,913,769,903,183,0,904,917,769,905,919,769,906,921,769,908,
    927,769,910,933,769,911,937,769,912,970,769,938,921,776,939,933,776,940,945,769,941,949,769,942,951,769,943,953,
    769,944,971,769,970,953,776,971,965,776,972,959,769,973,965,769,974,969,769,979,978,769,980,978,776,1024,1045,768,
    1025,1045,776,1027,1043,769,1031,1030,776,1036,1050,769,1037,1048,768,1038,1059,774,1049,1048,774,1081,1080,774,
    1104,1077,768,1105,1077,776,1107,1075,769,1111,1110,776,1116,1082,769,1117,1080,768,1118,1091,774,1142,1140,783,
    1143,1141,783,1217,1046,774,1218,1078,774,1232,1040,774,1233,1072,774,1234,1040,776,1235,1072,776,1238,1045,774,
    1239,1077,774,1242,1240,776,1243,1241,776,1244,1046,776,1245,1078,776,1246,1047,776,1247,1079,776,1250,1048,772,
    1251,1080,772,1252,1048,776,1253,1080,776,1254,1054,776,1255,1086,776,1258,1256,776,1259,1257,776,1260,1069,776,
    1261,1101,776,1262,1059,772,1263,1091,772,1264,1059,776,1265,1091,776,1266,1059,779,1267,1091,779,1268,1063,776,
    1269,1095,776,1272,1067,776,1273,1099,776,1570,1575,1619,1571,1575,1620,1572,1608,1620,1573,1575,1621,1574,1610,
    1620,1728,1749,1620,1730,1729,1620,1747,1746,1620,2345,2344,2364,2353,2352,2364,2356,2355,2364,2147486040,2325,
    2364,2147486041,2326,2364,2147486042,2327,2364,2147486043,2332,2364,2147486044,2337,2364,2147486045,2338,2364,
    2147486046,2347,2364,2147486047,2351,2364,2507,2503,2494,2508,2503,2519,2147486172,2465,2492,2147486173,2466,2492,
    2147486175,2479,2492,2147486259,2610,2620,2147486262,2616,2620,2147486297,2582,2620,2147486298,2583,2620,
    2147486299,2588,2620,2147486302,2603,2620,2888,2887,2902,2891,2887,2878,2892,2887,2903,2147486556,2849,2876,
    2147486557,2850,2876,2964,2962,3031,3018,3014,3006,3019,3015,3006,3020,3014,3031,3144,3142,3158,3264,3263,3285,
    3271,3270,3285,3272,3270,3286,3274,3270,3266,3275,3274,3285,3402,3398,3390,3403,3399,3390,3404,3398,3415,3546,
    3545,3530,3548,3545,3535,3549,3548,3530,3550,3545,3551,2147487555,3906,4023,2147487565,3916,4023,2147487570,3921,
    4023,2147487575,3926,4023,2147487580,3931,4023,2147487593,3904,4021,2147487603,3953,3954,2147487605,3953,3956,
    2147487606,4018,3968,2147487608,4019,3968,2147487617,3953,3968,2147487635,3986,4023,2147487645,3996,4023,
    2147487650,4001,4023,2147487655,4006,4023,2147487660,4011,4023,2147487673,3984,4021,4134,4133,4142,6918,6917,6965,
    6920,6919,6965,6922,6921,6965,6924,6923,6965,6926,6925,6965,6930,6929,6965,6971,6970,6965,6973,6972,6965,6976,
    6974,6965,6977,6975,6965,6979,6978,6965,7680,65,805,7681,97,805,7682,66,775,7683,98,775,7684,66,803,7685,98,803,
    7686,66,817,7687,98,817,7688,199,769,7689,231,769,7690,68,775,7691,100,775,7692,68,803,7693,100,803,7694,68,817,
    7695,100,817,7696,68,807,7697,100,807,7698,68,813,7699,100,813,7700,274,768,7701,275,768,7702,274,769,7703,275,
    769,7704,69,813,7705,101,813,7706,69,816,7707,101,816,7708,552,774,7709,553,774,7710,70,775,7711,102,775,7712,71,
    772,7713,103,772,7714,72,775,7715,104,775,7716,72,803,7717,104,803,7718,72,776,7719,104,776,7720,72,807,7721,104,
    807,7722,72,814,7723,104,814,7724,73,816,7725,105,816,7726,207,769,7727,239,769,7728,75,769,7729,107,769,7730,75,
    803,7731,107,803,7732,75,817,7733,107,817,7734,76,803,7735,108,803,7736,7734,772,7737,7735,772,7738,76,817,7739,
    108,817,7740,76,813,7741,108,813,7742,77,769,7743,109,769,7744,77,775,7745,109,775,7746,77,803,7747,109,803,7748,
    78,775,7749,110,775,7750,78,803,7751,110,803,7752,78,817,7753,110,817,7754,78,813,7755,110,813,7756,213,769,7757,
    245,769,7758,213,776,7759,245,776,7760,332,768,7761,333,768,7762,332,769,7763,333,769,7764,80,769,7765,112,769,
    7766,80,775,7767,112,775,7768,82,775,7769,114,775,7770,82,803,7771,114,803,7772,7770,772,7773,7771,772,7774,82,
    817,7775,114,817,7776,83,775,7777,115,775,7778,83,803,7779,115,803,7780,346,775,7781,347,775,7782,352,775,7783,
    353,775,7784,7778,775,7785,7779,775,7786,84,775,7787,116,775,7788,84,803,7789,116,803,7790,84,817,7791,116,817,
    7792,84,813,7793,116,813,7794,85,804,7795,117,804,7796,85,816,7797,117,816,7798,85,813,7799,117,813,7800,360,769,
    7801,361,769,7802,362,776,7803,363,776,7804,86,771,7805,118,771,7806,86,803,7807,118,803,7808,87,768,7809,119,768,
    7810,87,769,7811,119,769,7812,87,776,7813,119,776,7814,87,775,7815,119,775,7816,87,803,7817,119,803,7818,88,775,
    7819,120,775,7820,88,776,7821,120,776,7822,89,775,7823,121,775,7824,90,770,7825,122,770,7826,90,803,7827,122,803,
    7828,90,817,7829,122,817,7830,104,817,7831,116,776,7832,119,778,7833,121,778,7835,383,775,7840,65,803,7841,97,803,
    7842,65,777,7843,97,777,7844,194,769,7845,226,769,7846,194,768,7847,226,768,7848,194,777,7849,226,777,7850,194,
    771,7851,226,771,7852,7840,770,7853,7841,770,7854,258,769,7855,259,769,7856,258,768,7857,259,768,7858,258,777,
    7859,259,777,7860,258,771,7861,259,771,7862,7840,774,7863,7841,774,7864,69,803,7865,101,803,7866,69,777,7867,101,
    777,7868,69,771,7869,101,771,7870,202,769,7871,234,769,7872,202,768,7873,234,768,7874,202,777,7875,234,777,7876,
    202,771,7877,234,771,7878,7864,770,7879,7865,770,7880,73,777,7881,105,777,7882,73,803,7883,105,803,7884,79,803,
    7885,111,803,7886,79,777,7887,111,777,7888,212,769,7889,244,769,7890,212,768,7891,244,768,7892,212,777,7893,244,
    777,7894,212,771,7895,244,771,7896,7884,770,7897,7885,770,7898,416,769,7899,417,769,7900,416,768,7901,417,768,
    7902,416,777,7903,417,777,7904,416,771,7905,417,771,7906,416,803,7907,417,803,7908,85,803,7909,117,803,7910,85,
    777,7911,117,777,7912,431,769,7913,432,769,7914,431,768,7915,432,768,7916,431,777,7917,432,777,7918,431,771,7919,
    432,771,7920,431,803,7921,432,803,7922,89,768,7923,121,768,7924,89,803,7925,121,803,7926,89,777,7927,121,777,7928,
    89,771,7929,121,771,7936,945,787,7937,945,788,7938,7936,768,7939,7937,768,7940,7936,769,7941,7937,769,7942,7936,
    834,7943,7937,834,7944,913,787,7945,913,788,7946,7944,768,7947,7945,768,7948,7944,769,7949,7945,769,7950,7944,834,
    7951,7945,834,7952,949,787,7953,949,788,7954,7952,768,7955,7953,768,7956,7952,769,7957,7953,769,7960,917,787,7961,
    917,788,7962,7960,768,7963,7961,768,7964,7960,769,7965,7961,769,7968,951,787,7969,951,788,7970,7968,768,7971,7969,
    768,7972,7968,769,7973,7969,769,7974,7968,834,7975,7969,834,7976,919,787,7977,919,788,7978,7976,768,7979,7977,768,
    7980,7976,769,7981,7977,769,7982,7976,834,7983,7977,834,7984,953,787,7985,953,788,7986,7984,768,7987,7985,768,
    7988,7984,769,7989,7985,769,7990,7984,834,7991,7985,834,7992,921,787,7993,921,788,7994,7992,768,7995,7993,768,
    7996,7992,769,7997,7993,769,7998,7992,834,7999,7993,834,8000,959,787,8001,959,788,8002,8000,768,8003,8001,768,
    8004,8000,769,8005,8001,769,8008,927,787,8009,927,788,8010,8008,768,8011,8009,768,8012,8008,769,8013,8009,769,
    8016,965,787,8017,965,788,8018,8016,768,8019,8017,768,8020,8016,769,8021,8017,769,8022,8016,834,8023,8017,834,
    8025,933,788,8027,8025,768,8029,8025,769,8031,8025,834,8032,969,787,8033,969,788,8034,8032,768,8035,8033,768,8036,
    8032,769,8037,8033,769,8038,8032,834,8039,8033,834,8040,937,787,8041,937,788,8042,8040,768,8043,8041,768,8044,
    8040,769,8045,8041,769,8046,8040,834,8047,8041,834,8048,945,768,8049,940,0,8050,949,768,8051,941,0,8052,951,768,
    8053,942,0,8054,953,768,8055,943,0,8056,959,768,8057,972,0,8058,965,768,8059,973,0,8060,969,768,8061,974,0,8064,
    7936,837,8065,7937,837,8066,7938,837,8067,7939,837,8068,7940,837,8069,7941,837,8070,7942,837,8071,7943,837,8072,
    7944,837,8073,7945,837,8074,7946,837,8075,7947,837,8076,7948,837,8077,7949,837,8078,7950,837,8079,7951,837,8080,
    7968,837,8081,7969,837,8082,7970,837,8083,7971,837,8084,7972,837,8085,7973,837,8086,7974,837,8087,7975,837,8088,
    7976,837,8089,7977,837,8090,7978,837,8091,7979,837,8092,7980,837,8093,7981,837,8094,7982,837,8095,7983,837,8096,
    8032,837,8097,8033,837,8098,8034,837,8099,8035,837,8100,8036,837,8101,8037,837,8102,8038,837,8103,8039,837,8104,
    8040,837,8105,8041,837,8106,8042,837,8107,8043,837,8108,8044,837,8109,8045,837,8110,8046,837,8111,8047,837,8112,
    945,774,8113,945,772,8114,8048,837,8115,945,837,8116,940,837,8118,945,834,8119,8118,837,8120,913,774,8121,913,772,
    8122,913,768,8123,902,0,8124,913,837,8126,953,0,8129,168,834,8130,8052,837,8131,951,837,8132,942,837,8134,951,834,
    8135,8134,837,8136,917,768,8137,904,0,8138,919,768,8139,905,0,8140,919,837,8141,8127,768,8142,8127,769,8143,8127,
    834,8144,953,774,8145,953,772,8146,970,768,8147,912,0,8150,953,834,8151,970,834,8152,921,774,8153,921,772,8154,
    921,768,8155,906,0,8157,8190,768,8158,8190,769,8159,8190,834,8160,965,774,8161,965,772,8162,971,768,8163,944,0,
    8164,961,787,8165,961,788,8166,965,834,8167,971,834,8168,933,774,8169,933,772,8170,933,768,8171,910,0,8172,929,
    788,8173,168,768,8174,901,0,8175,96,0,8178,8060,837,8179,969,837,8180,974,837,8182,969,834,8183,8182,837,8184,927,
    768,8185,908,0,8186,937,768,8187,911,0,8188,937,837,8189,180,0,8192,8194,0,8193,8195,0,8486,937,0,8490,75,0,8491,
    197,0,8602,8592,824,8603,8594,824,8622,8596,824,8653,8656,824,8654,8660,824,8655,8658,824,8708,8707,824,8713,8712,
    824,8716,8715,824,8740,8739,824,8742,8741,824,8769,8764,824,8772,8771,824,8775,8773,824,8777,8776,824,8800,61,824,
    8802,8801,824,8813,8781,824,8814,60,824,8815,62,824,8816,8804,824,8817,8805,824,8820,8818,824,8821,8819,824,8824,
    8822,824,8825,8823,824,8832,8826,824,8833,8827,824,8836,8834,824,8837,8835,824,8840,8838,824,8841,8839,824,8876,
    8866,824,8877,8872,824,8878,8873,824,8879,8875,824,8928,8828,824,8929,8829,824,8930,8849,824,8931,8850,824,8938,
    8882,824,8939,8883,824,8940,8884,824,8941,8885,824,9001,12296,0,9002,12297,0,2147494620,10973,824,12364,12363,
    12441,12366,12365,12441,12368,12367,12441,12370,12369,12441,12372,12371,12441,12374,12373,12441,12376,12375,12441,
    12378,12377,12441,12380,12379,12441,12382,12381,12441,12384,12383,12441,12386,12385,12441,12389,12388,12441,12391,
    12390,12441,12393,12392,12441,12400,12399,12441,12401,12399,12442,12403,12402,12441,12404,12402,12442,12406,12405,
    12441,12407,12405,12442,12409,12408,12441,12410,12408,12442,12412,12411,12441,12413,12411,12442,12436,12358,12441,
    12446,12445,12441,12460,12459,12441,12462,12461,12441,12464,12463,12441,12466,12465,12441,12468,12467,12441,12470,
    12469,12441,12472,12471,12441,12474,12473,12441,12476,12475,12441,12478,12477,12441,12480,12479,12441,12482,12481,
    12441,12485,12484,12441,12487,12486,12441,12489,12488,12441,12496,12495,12441,12497,12495,12442,12499,12498,12441,
    12500,12498,12442,12502,12501,12441,12503,12501,12442,12505,12504,12441,12506,12504,12442,12508,12507,12441,12509,
    12507,12442,12532,12454,12441,12535,12527,12441,12536,12528,12441,12537,12529,12441,12538,12530,12441,12542,12541,
    12441,63744,35912,0,63745,26356,0,63746,36554,0,63747,36040,0,63748,28369,0,63749,20018,0,63750,21477,0,63751,
    40860,0,63752,40860,0,63753,22865,0,63754,37329,0,63755,21895,0,63756,22856,0,63757,25078,0,63758,30313,0,63759,
    32645,0,63760,34367,0,63761,34746,0,63762,35064,0,63763,37007,0,63764,27138,0,63765,27931,0,63766,28889,0,63767,
    29662,0,63768,33853,0,63769,37226,0,63770,39409,0,63771,20098,0,63772,21365,0,63773,27396,0,63774,29211,0,63775,
    34349,0,63776,40478,0,63777,23888,0,63778,28651,0,63779,34253,0,63780,35172,0,63781,25289,0,63782,33240,0,63783,
    34847,0,63784,24266,0,63785,26391,0,63786,28010,0,63787,29436,0,63788,37070,0,63789,20358,0,63790,20919,0,63791,
    21214,0,63792,25796,0,63793,27347,0,63794,29200,0,63795,30439,0,63796,32769,0,63797,34310,0,63798,34396,0,63799,
    36335,0,63800,38706,0,63801,39791,0,63802,40442,0,63803,30860,0,63804,31103,0,63805,32160,0,63806,33737,0,63807,
    37636,0,63808,40575,0,63809,35542,0,63810,22751,0,63811,24324,0,63812,31840,0,63813,32894,0,63814,29282,0,63815,
    30922,0,63816,36034,0,63817,38647,0,63818,22744,0,63819,23650,0,63820,27155,0,63821,28122,0,63822,28431,0,63823,
    32047,0,63824,32311,0,63825,38475,0,63826,21202,0,63827,32907,0,63828,20956,0,63829,20940,0,63830,31260,0,63831,
    32190,0,63832,33777,0,63833,38517,0,63834,35712,0,63835,25295,0,63836,27138,0,63837,35582,0,63838,20025,0,63839,
    23527,0,63840,24594,0,63841,29575,0,63842,30064,0,63843,21271,0,63844,30971,0,63845,20415,0,63846,24489,0,63847,
    19981,0,63848,27852,0,63849,25976,0,63850,32034,0,63851,21443,0,63852,22622,0,63853,30465,0,63854,33865,0,63855,
    35498,0,63856,27578,0,63857,36784,0,63858,27784,0,63859,25342,0,63860,33509,0,63861,25504,0,63862,30053,0,63863,
    20142,0,63864,20841,0,63865,20937,0,63866,26753,0,63867,31975,0,63868,33391,0,63869,35538,0,63870,37327,0,63871,
    21237,0,63872,21570,0,63873,22899,0,63874,24300,0,63875,26053,0,63876,28670,0,63877,31018,0,63878,38317,0,63879,
    39530,0,63880,40599,0,63881,40654,0,63882,21147,0,63883,26310,0,63884,27511,0,63885,36706,0,63886,24180,0,63887,
    24976,0,63888,25088,0,63889,25754,0,63890,28451,0,63891,29001,0,63892,29833,0,63893,31178,0,63894,32244,0,63895,
    32879,0,63896,36646,0,63897,34030,0,63898,36899,0,63899,37706,0,63900,21015,0,63901,21155,0,63902,21693,0,63903,
    28872,0,63904,35010,0,63905,35498,0,63906,24265,0,63907,24565,0,63908,25467,0,63909,27566,0,63910,31806,0,63911,
    29557,0,63912,20196,0,63913,22265,0,63914,23527,0,63915,23994,0,63916,24604,0,63917,29618,0,63918,29801,0,63919,
    32666,0,63920,32838,0,63921,37428,0,63922,38646,0,63923,38728,0,63924,38936,0,63925,20363,0,63926,31150,0,63927,
    37300,0,63928,38584,0,63929,24801,0,63930,20102,0,63931,20698,0,63932,23534,0,63933,23615,0,63934,26009,0,63935,
    27138,0,63936,29134,0,63937,30274,0,63938,34044,0,63939,36988,0,63940,40845,0,63941,26248,0,63942,38446,0,63943,
    21129,0,63944,26491,0,63945,26611,0,63946,27969,0,63947,28316,0,63948,29705,0,63949,30041,0,63950,30827,0,63951,
    32016,0,63952,39006,0,63953,20845,0,63954,25134,0,63955,38520,0,63956,20523,0,63957,23833,0,63958,28138,0,63959,
    36650,0,63960,24459,0,63961,24900,0,63962,26647,0,63963,29575,0,63964,38534,0,63965,21033,0,63966,21519,0,63967,
    23653,0,63968,26131,0,63969,26446,0,63970,26792,0,63971,27877,0,63972,29702,0,63973,30178,0,63974,32633,0,63975,
    35023,0,63976,35041,0,63977,37324,0,63978,38626,0,63979,21311,0,63980,28346,0,63981,21533,0,63982,29136,0,63983,
    29848,0,63984,34298,0,63985,38563,0,63986,40023,0,63987,40607,0,63988,26519,0,63989,28107,0,63990,33256,0,63991,
    31435,0,63992,31520,0,63993,31890,0,63994,29376,0,63995,28825,0,63996,35672,0,63997,20160,0,63998,33590,0,63999,
    21050,0,64000,20999,0,64001,24230,0,64002,25299,0,64003,31958,0,64004,23429,0,64005,27934,0,64006,26292,0,64007,
    36667,0,64008,34892,0,64009,38477,0,64010,35211,0,64011,24275,0,64012,20800,0,64013,21952,0,64016,22618,0,64018,
    26228,0,64021,20958,0,64022,29482,0,64023,30410,0,64024,31036,0,64025,31070,0,64026,31077,0,64027,31119,0,64028,
    38742,0,64029,31934,0,64030,32701,0,64032,34322,0,64034,35576,0,64037,36920,0,64038,37117,0,64042,39151,0,64043,
    39164,0,64044,39208,0,64045,40372,0,64046,37086,0,64047,38583,0,64048,20398,0,64049,20711,0,64050,20813,0,64051,
    21193,0,64052,21220,0,64053,21329,0,64054,21917,0,64055,22022,0,64056,22120,0,64057,22592,0,64058,22696,0,64059,
    23652,0,64060,23662,0,64061,24724,0,64062,24936,0,64063,24974,0,64064,25074,0,64065,25935,0,64066,26082,0,64067,
    26257,0,64068,26757,0,64069,28023,0,64070,28186,0,64071,28450,0,64072,29038,0,64073,29227,0,64074,29730,0,64075,
    30865,0,64076,31038,0,64077,31049,0,64078,31048,0,64079,31056,0,64080,31062,0,64081,31069,0,64082,31117,0,64083,
    31118,0,64084,31296,0,64085,31361,0,64086,31680,0,64087,32244,0,64088,32265,0,64089,32321,0,64090,32626,0,64091,
    32773,0,64092,33261,0,64093,33401,0,64094,33401,0,64095,33879,0,64096,35088,0,64097,35222,0,64098,35585,0,64099,
    35641,0,64100,36051,0,64101,36104,0,64102,36790,0,64103,36920,0,64104,38627,0,64105,38911,0,64106,38971,0,64107,
    24693,0,64108,148206,0,64109,33304,0,64112,20006,0,64113,20917,0,64114,20840,0,64115,20352,0,64116,20805,0,64117,
    20864,0,64118,21191,0,64119,21242,0,64120,21917,0,64121,21845,0,64122,21913,0,64123,21986,0,64124,22618,0,64125,
    22707,0,64126,22852,0,64127,22868,0,64128,23138,0,64129,23336,0,64130,24274,0,64131,24281,0,64132,24425,0,64133,
    24493,0,64134,24792,0,64135,24910,0,64136,24840,0,64137,24974,0,64138,24928,0,64139,25074,0,64140,25140,0,64141,
    25540,0,64142,25628,0,64143,25682,0,64144,25942,0,64145,26228,0,64146,26391,0,64147,26395,0,64148,26454,0,64149,
    27513,0,64150,27578,0,64151,27969,0,64152,28379,0,64153,28363,0,64154,28450,0,64155,28702,0,64156,29038,0,64157,
    30631,0,64158,29237,0,64159,29359,0,64160,29482,0,64161,29809,0,64162,29958,0,64163,30011,0,64164,30237,0,64165,
    30239,0,64166,30410,0,64167,30427,0,64168,30452,0,64169,30538,0,64170,30528,0,64171,30924,0,64172,31409,0,64173,
    31680,0,64174,31867,0,64175,32091,0,64176,32244,0,64177,32574,0,64178,32773,0,64179,33618,0,64180,33775,0,64181,
    34681,0,64182,35137,0,64183,35206,0,64184,35222,0,64185,35519,0,64186,35576,0,64187,35531,0,64188,35585,0,64189,
    35582,0,64190,35565,0,64191,35641,0,64192,35722,0,64193,36104,0,64194,36664,0,64195,36978,0,64196,37273,0,64197,
    37494,0,64198,38524,0,64199,38627,0,64200,38742,0,64201,38875,0,64202,38911,0,64203,38923,0,64204,38971,0,64205,
    39698,0,64206,40860,0,64207,141386,0,64208,141380,0,64209,144341,0,64210,15261,0,64211,16408,0,64212,16441,0,
    64213,152137,0,64214,154832,0,64215,163539,0,64216,40771,0,64217,40846,0,2147547933,1497,1460,2147547935,1522,
    1463,2147547946,1513,1473,2147547947,1513,1474,2147547948,64329,1473,2147547949,64329,1474,2147547950,1488,1463,
    2147547951,1488,1464,2147547952,1488,1468,2147547953,1489,1468,2147547954,1490,1468,2147547955,1491,1468,
    2147547956,1492,1468,2147547957,1493,1468,2147547958,1494,1468,2147547960,1496,1468,2147547961,1497,1468,
    2147547962,1498,1468,2147547963,1499,1468,2147547964,1500,1468,2147547966,1502,1468,2147547968,1504,1468,
    2147547969,1505,1468,2147547971,1507,1468,2147547972,1508,1468,2147547974,1510,1468,2147547975,1511,1468,
    2147547976,1512,1468,2147547977,1513,1468,2147547978,1514,1468,2147547979,1493,1465,2147547980,1489,1471,
    2147547981,1499,1471,2147547982,1508,1471,69786,69785,69818,69788,69787,69818,69803,69797,69818,69934,69937,69927,
    69935,69938,69927,70475,70471,70462,70476,70471,70487,70843,70841,70842,70844,70841,70832,70846,70841,70845,71098,
    71096,71087,71099,71097,71087,71992,71989,71984,2147602782,119127,119141,2147602783,119128,119141,2147602784,
    119135,119150,2147602785,119135,119151,2147602786,119135,119152,2147602787,119135,119153,2147602788,119135,119154,
    2147602875,119225,119141,2147602876,119226,119141,2147602877,119227,119150,2147602878,119228,119150,2147602879,
    119227,119151,2147602880,119228,119151,194560,20029,0,194561,20024,0,194562,20033,0,194563,131362,0,194564,20320,
    0,194565,20398,0,194566,20411,0,194567,20482,0,194568,20602,0,194569,20633,0,194570,20711,0,194571,20687,0,194572,
    13470,0,194573,132666,0,194574,20813,0,194575,20820,0,194576,20836,0,194577,20855,0,194578,132380,0,194579,13497,
    0,194580,20839,0,194581,20877,0,194582,132427,0,194583,20887,0,194584,20900,0,194585,20172,0,194586,20908,0,
    194587,20917,0,194588,168415,0,194589,20981,0,194590,20995,0,194591,13535,0,194592,21051,0,194593,21062,0,194594,
    21106,0,194595,21111,0,194596,13589,0,194597,21191,0,194598,21193,0,194599,21220,0,194600,21242,0,194601,21253,0,
    194602,21254,0,194603,21271,0,194604,21321,0,194605,21329,0,194606,21338,0,194607,21363,0,194608,21373,0,194609,
    21375,0,194610,21375,0,194611,21375,0,194612,133676,0,194613,28784,0,194614,21450,0,194615,21471,0,194616,133987,
    0,194617,21483,0,194618,21489,0,194619,21510,0,194620,21662,0,194621,21560,0,194622,21576,0,194623,21608,0,194624,
    21666,0,194625,21750,0,194626,21776,0,194627,21843,0,194628,21859,0,194629,21892,0,194630,21892,0,194631,21913,0,
    194632,21931,0,194633,21939,0,194634,21954,0,194635,22294,0,194636,22022,0,194637,22295,0,194638,22097,0,194639,
    22132,0,194640,20999,0,194641,22766,0,194642,22478,0,194643,22516,0,194644,22541,0,194645,22411,0,194646,22578,0,
    194647,22577,0,194648,22700,0,194649,136420,0,194650,22770,0,194651,22775,0,194652,22790,0,194653,22810,0,194654,
    22818,0,194655,22882,0,194656,136872,0,194657,136938,0,194658,23020,0,194659,23067,0,194660,23079,0,194661,23000,
    0,194662,23142,0,194663,14062,0,194664,14076,0,194665,23304,0,194666,23358,0,194667,23358,0,194668,137672,0,
    194669,23491,0,194670,23512,0,194671,23527,0,194672,23539,0,194673,138008,0,194674,23551,0,194675,23558,0,194676,
    24403,0,194677,23586,0,194678,14209,0,194679,23648,0,194680,23662,0,194681,23744,0,194682,23693,0,194683,138724,0,
    194684,23875,0,194685,138726,0,194686,23918,0,194687,23915,0,194688,23932,0,194689,24033,0,194690,24034,0,194691,
    14383,0,194692,24061,0,194693,24104,0,194694,24125,0,194695,24169,0,194696,14434,0,194697,139651,0,194698,14460,0,
    194699,24240,0,194700,24243,0,194701,24246,0,194702,24266,0,194703,172946,0,194704,24318,0,194705,140081,0,194706,
    140081,0,194707,33281,0,194708,24354,0,194709,24354,0,194710,14535,0,194711,144056,0,194712,156122,0,194713,24418,
    0,194714,24427,0,194715,14563,0,194716,24474,0,194717,24525,0,194718,24535,0,194719,24569,0,194720,24705,0,194721,
    14650,0,194722,14620,0,194723,24724,0,194724,141012,0,194725,24775,0,194726,24904,0,194727,24908,0,194728,24910,0,
    194729,24908,0,194730,24954,0,194731,24974,0,194732,25010,0,194733,24996,0,194734,25007,0,194735,25054,0,194736,
    25074,0,194737,25078,0,194738,25104,0,194739,25115,0,194740,25181,0,194741,25265,0,194742,25300,0,194743,25424,0,
    194744,142092,0,194745,25405,0,194746,25340,0,194747,25448,0,194748,25475,0,194749,25572,0,194750,142321,0,194751,
    25634,0,194752,25541,0,194753,25513,0,194754,14894,0,194755,25705,0,194756,25726,0,194757,25757,0,194758,25719,0,
    194759,14956,0,194760,25935,0,194761,25964,0,194762,143370,0,194763,26083,0,194764,26360,0,194765,26185,0,194766,
    15129,0,194767,26257,0,194768,15112,0,194769,15076,0,194770,20882,0,194771,20885,0,194772,26368,0,194773,26268,0,
    194774,32941,0,194775,17369,0,194776,26391,0,194777,26395,0,194778,26401,0,194779,26462,0,194780,26451,0,194781,
    144323,0,194782,15177,0,194783,26618,0,194784,26501,0,194785,26706,0,194786,26757,0,194787,144493,0,194788,26766,
    0,194789,26655,0,194790,26900,0,194791,15261,0,194792,26946,0,194793,27043,0,194794,27114,0,194795,27304,0,194796,
    145059,0,194797,27355,0,194798,15384,0,194799,27425,0,194800,145575,0,194801,27476,0,194802,15438,0,194803,27506,
    0,194804,27551,0,194805,27578,0,194806,27579,0,194807,146061,0,194808,138507,0,194809,146170,0,194810,27726,0,
    194811,146620,0,194812,27839,0,194813,27853,0,194814,27751,0,194815,27926,0,194816,27966,0,194817,28023,0,194818,
    27969,0,194819,28009,0,194820,28024,0,194821,28037,0,194822,146718,0,194823,27956,0,194824,28207,0,194825,28270,0,
    194826,15667,0,194827,28363,0,194828,28359,0,194829,147153,0,194830,28153,0,194831,28526,0,194832,147294,0,194833,
    147342,0,194834,28614,0,194835,28729,0,194836,28702,0,194837,28699,0,194838,15766,0,194839,28746,0,194840,28797,0,
    194841,28791,0,194842,28845,0,194843,132389,0,194844,28997,0,194845,148067,0,194846,29084,0,194847,148395,0,
    194848,29224,0,194849,29237,0,194850,29264,0,194851,149000,0,194852,29312,0,194853,29333,0,194854,149301,0,194855,
    149524,0,194856,29562,0,194857,29579,0,194858,16044,0,194859,29605,0,194860,16056,0,194861,16056,0,194862,29767,0,
    194863,29788,0,194864,29809,0,194865,29829,0,194866,29898,0,194867,16155,0,194868,29988,0,194869,150582,0,194870,
    30014,0,194871,150674,0,194872,30064,0,194873,139679,0,194874,30224,0,194875,151457,0,194876,151480,0,194877,
    151620,0,194878,16380,0,194879,16392,0,194880,30452,0,194881,151795,0,194882,151794,0,194883,151833,0,194884,
    151859,0,194885,30494,0,194886,30495,0,194887,30495,0,194888,30538,0,194889,16441,0,194890,30603,0,194891,16454,0,
    194892,16534,0,194893,152605,0,194894,30798,0,194895,30860,0,194896,30924,0,194897,16611,0,194898,153126,0,194899,
    31062,0,194900,153242,0,194901,153285,0,194902,31119,0,194903,31211,0,194904,16687,0,194905,31296,0,194906,31306,
    0,194907,31311,0,194908,153980,0,194909,154279,0,194910,154279,0,194911,31470,0,194912,16898,0,194913,154539,0,
    194914,31686,0,194915,31689,0,194916,16935,0,194917,154752,0,194918,31954,0,194919,17056,0,194920,31976,0,194921,
    31971,0,194922,32000,0,194923,155526,0,194924,32099,0,194925,17153,0,194926,32199,0,194927,32258,0,194928,32325,0,
    194929,17204,0,194930,156200,0,194931,156231,0,194932,17241,0,194933,156377,0,194934,32634,0,194935,156478,0,
    194936,32661,0,194937,32762,0,194938,32773,0,194939,156890,0,194940,156963,0,194941,32864,0,194942,157096,0,
    194943,32880,0,194944,144223,0,194945,17365,0,194946,32946,0,194947,33027,0,194948,17419,0,194949,33086,0,194950,
    23221,0,194951,157607,0,194952,157621,0,194953,144275,0,194954,144284,0,194955,33281,0,194956,33284,0,194957,
    36766,0,194958,17515,0,194959,33425,0,194960,33419,0,194961,33437,0,194962,21171,0,194963,33457,0,194964,33459,0,
    194965,33469,0,194966,33510,0,194967,158524,0,194968,33509,0,194969,33565,0,194970,33635,0,194971,33709,0,194972,
    33571,0,194973,33725,0,194974,33767,0,194975,33879,0,194976,33619,0,194977,33738,0,194978,33740,0,194979,33756,0,
    194980,158774,0,194981,159083,0,194982,158933,0,194983,17707,0,194984,34033,0,194985,34035,0,194986,34070,0,
    194987,160714,0,194988,34148,0,194989,159532,0,194990,17757,0,194991,17761,0,194992,159665,0,194993,159954,0,
    194994,17771,0,194995,34384,0,194996,34396,0,194997,34407,0,194998,34409,0,194999,34473,0,195000,34440,0,195001,
    34574,0,195002,34530,0,195003,34681,0,195004,34600,0,195005,34667,0,195006,34694,0,195007,17879,0,195008,34785,0,
    195009,34817,0,195010,17913,0,195011,34912,0,195012,34915,0,195013,161383,0,195014,35031,0,195015,35038,0,195016,
    17973,0,195017,35066,0,195018,13499,0,195019,161966,0,195020,162150,0,195021,18110,0,195022,18119,0,195023,35488,
    0,195024,35565,0,195025,35722,0,195026,35925,0,195027,162984,0,195028,36011,0,195029,36033,0,195030,36123,0,
    195031,36215,0,195032,163631,0,195033,133124,0,195034,36299,0,195035,36284,0,195036,36336,0,195037,133342,0,
    195038,36564,0,195039,36664,0,195040,165330,0,195041,165357,0,195042,37012,0,195043,37105,0,195044,37137,0,195045,
    165678,0,195046,37147,0,195047,37432,0,195048,37591,0,195049,37592,0,195050,37500,0,195051,37881,0,195052,37909,0,
    195053,166906,0,195054,38283,0,195055,18837,0,195056,38327,0,195057,167287,0,195058,18918,0,195059,38595,0,195060,
    23986,0,195061,38691,0,195062,168261,0,195063,168474,0,195064,19054,0,195065,19062,0,195066,38880,0,195067,168970,
    0,195068,19122,0,195069,169110,0,195070,38923,0,195071,38923,0,195072,38953,0,195073,169398,0,195074,39138,0,
    195075,19251,0,195076,39209,0,195077,39335,0,195078,39362,0,195079,39422,0,195080,19406,0,195081,170800,0,195082,
    39698,0,195083,40000,0,195084,40189,0,195085,19662,0,195086,19693,0,195087,40295,0,195088,172238,0,195089,19704,0,
    195090,172293,0,195091,172558,0,195092,172689,0,195093,40635,0,195094,19798,0,195095,40697,0,195096,40702,0,
    195097,40709,0,195098,40719,0,195099,40726,0,195100,40763,0,195101,173568,0,
};
/* END GENERATED UNICODE TABLES */


/* The value at cp of a breakpoint table t of n entries start << shift | value: the entry with the largest start <= cp
   (entry 0 starts at 0), by binary search. */
static unsigned cllm__uni_lookup(const uint32_t *t, size_t n, int shift, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (t[mid] >> shift <= cp) lo = mid;
        else hi = mid;
    }
    return t[lo] & ((1u << shift) - 1);
}

static unsigned cllm__uni_class(uint32_t cp) {
    return cllm__uni_lookup(cllm__uni_class_table, sizeof cllm__uni_class_table / sizeof(uint32_t), 3, cp);
}

static unsigned cllm__uni_ccc(uint32_t cp) {
    return cllm__uni_lookup(cllm__uni_ccc_table, sizeof cllm__uni_ccc_table / sizeof(uint32_t), 8, cp);
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
