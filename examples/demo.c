/* demo.c - `make demo`: CollabLLM's central result, offline, in a few minutes on 2 CPU cores.

   Demonstrates the whole method on the bundled collaborative task family (demo_task.h). A tiny
   model is trained from scratch into a base policy that sometimes asks and sometimes guesses.
   The multiturn-aware reward (MR) scores candidate responses by simulating the next turns with a
   user simulator that knows the hidden goal. Training on MR (forward window w = 2) is compared
   with training on the immediate reward (w = 0), the paper's ablation, and with online DPO and
   PPO driven by MR.

   Every stage goes through the code paths a real model does: a Hugging Face directory
   (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a ChatML template),
   the tokenizer and template with assistant masks, KV-cache sampling, the trainers, MR and the
   evaluation loop. Outputs in build/demo/ (or --out): every model directory, the data files of
   each stage (formats in data_fmt/), summary.json, table.txt and curves.svg.

     build/cllm_demo [--seed N] [--out DIR] [--overwrite]    (make demo SEED=N)
     build/cllm_demo --help

   The same pipeline runs on a real model and endpoint when given a Hugging Face model directory,
   CollabLLM-format task files and an OpenAI-compatible user simulator (and judge):
     OPENAI_BASE_URL=... OPENAI_API_KEY=... build/cllm_demo --model DIR --tasks TRAIN.jsonl \
         --test-tasks TEST.jsonl --user-model M [--judge-model M] [--limit N] [--task-desc TEXT]
   Then stages 1-2 are skipped (DIR is the base), the simulator is the API model, the reward is
   the paper's (accuracy judged by --judge-model, or exact match without it, + the interactivity
   judge - min(5e-4 tokens, 1)), training uses LoRA with the paper's Table 6 settings (one epoch
   each), and "asks" means the first reply contains a '?'. Tasks whose single_turn_metadata has
   "underspecified" are split by it in the table; without it those columns are n/a.

   The reward. R* = success - min(lambda * tokens, 1): exact match of the final answer, minus the
   token cost of the candidate and the simulated future (the paper's formula). The rule-based
   interactivity judge is measured (the ITR column) but carries no reward weight here: in this toy
   world it is a direct readout of the behaviour being learnt, and giving it weight would hand
   the w = 0 ablation the answer. So the only reason to ask is what asking does to the outcome,
   which only a forward-looking reward can see: at w = 0 a question scores as an unfinished
   answer; at w = 2 the simulated user answers it and the policy then gets the order right.

   Settings that differ from the paper, and why. The paper fine-tunes an 8B model with LoRA; here
   a 0.2M-parameter model is trained from scratch in a minute, so learning rates are larger,
   lambda (5e-3) is larger because conversations are ~50 tokens instead of thousands, DPO uses
   beta = 1 and RPO (alpha = 10) because plain DPO at this scale lowers the rejected answers'
   templates everywhere and breaks the answers that follow a clarification, and, following the
   paper's lineage (SFT -> offline DPO), each DPO run starts with 4 epochs of SFT on the
   conversations MR picked. Everything else is the paper's: k = 2 candidates per turn, S = 3
   forward samples, w = 2, pairs kept at a score gap >= 0.02.
   Online DPO and PPO start from the base (the issue allows it; the paper's online DPO starts
   from offline DPO) and see each training prompt 4 times; online DPO uses beta = 1 and RPO
   alpha = 1 for the reason above, PPO TRL's defaults (k1 KL 0.05, 4 PPO epochs, GAE 1/0.95).
   What PPO does with this reward is worth reading in the table: a needless question costs only
   its tokens here (the interactivity judge has no weight), a small signal next to the gain of
   asking when the detail is missing, so PPO learns to ask almost always. */
#define _XOPEN_SOURCE 700
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "demo_task.h"
#include "demo_bpe.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "flags.h"
#include "run_files.h"

/* ---- settings ------------------------------------------------------------------------------- */

#define N_TRAIN_TASKS     600    /* tasks for SFT, data generation and online training         */
#define N_TEST_TASKS      200    /* held out: half under-specified, half fully specified       */
#define SFT_ROWS_PER_TASK 2      /* conversations per training task in the base's SFT mixture  */
#define P_ASK             0.3    /* how often the base mixture asks, needed or not             */
#define MAX_TURNS         3      /* user turns per conversation (evaluation, data generation)  */
#define MAX_NEW_TOKENS    24     /* longest reply                                              */
#define LAMBDA            5e-3   /* token cost                                                 */
#define ONLINE_EPOCHS     4      /* passes over the training prompts, online DPO and PPO       */
#define ONLINE_DPO_LR     1e-3
#define ONLINE_DPO_BETA   1.0
#define ONLINE_DPO_RPO    1.0    /* + the chosen responses' NLL (see the top)                  */
#define PPO_LR            1e-4   /* PPO makes 4 updates per rollout (TRL's num_ppo_epochs)     */

/* --model and friends: the real-model mode (see the top); model_dir NULL = the bundled task */
static struct {
    const char *model_dir, *train, *test, *user_model, *judge_model, *task_desc, *base_url;
    int limit;
    cllm_client client;          /* the endpoint of the simulator and the judge */
    cllm_llm_sim sim;
    cllm_judge judge;
} real;

static const char *out_dir = "build/demo";
static uint64_t seed = 1;
static double t_start;
static cllm_task *train_tasks, *test_tasks;
static int n_train, n_test, n_train_read, n_test_read;   /* used; read (and freed) */

static double now(void) {                                 /* seconds on a monotonic clock */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void stage(const char *what) { fprintf(stderr, "\n== [%5.0fs] %s\n", now() - t_start, what); }

static void die(const char *where, const cllm_err *err) {
    fprintf(stderr, "demo: %s: %s\n", where, err->msg);
    exit(1);
}

static const char *path(const char *name) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", out_dir, name);
    return buf[k];
}

/* The policy as an assistant, seeded: sampled at temperature 1 (its own distribution) to
   generate data, at 0.7 to evaluate (the paper's evaluations use 0.6 to 0.8). */
#define T_GENERATE 1.0f
#define T_EVALUATE 0.7f
static void local_assistant(cllm_local_assistant *a, cllm_local_lm *lm, uint64_t salt, float temperature) {
    cllm_local_assistant_config ac;
    memset(&ac, 0, sizeof ac);
    ac.gen.sampler.temperature = temperature;
    ac.gen.sampler.seed = seed * 1000003 + salt;
    ac.gen.max_new_tokens = real.model_dir ? 256 : MAX_NEW_TOKENS;
    cllm_local_assistant_init(a, lm, &ac);
}

/* The rule-based user simulator over a task list, or the API simulator in the real mode. */
static cllm_user_sim simulator(demo_sim_ctx *ctx, const cllm_task *tasks, int n) {
    cllm_user_sim sim;
    if (real.model_dir) return real.sim.sim;
    ctx->tasks = tasks; ctx->n_tasks = n;
    sim.turn = demo_user_turn; sim.turn_batch = NULL; sim.ctx = ctx;
    return sim;
}

static const char *task_desc(void) { return real.task_desc ? real.task_desc : "ordering"; }

/* asked, in the real mode: the first reply contains a question mark */
static cllm_result metric_has_question(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx; (void)err;
    for (i = 0; i < n; i++) { const char *r = demo_first_reply(&s[i]); scores[i] = r && strchr(r, '?') ? 1.0 : 0.0; }
    return CLLM_OK;
}

/* The task metric: exact match of the final answer, or the accuracy judge in the real mode. */
static void success_metric(cllm_metric *m) {
    cllm_err err;
    memset(m, 0, sizeof *m);
    if (real.judge_model) { cllm_metric_builtin("accuracy", m, &err); m->ctx = &real.judge; }
    else cllm_metric_builtin("exact_match", m, &err);
    m->name = "success"; m->weight = 1;
}

/* The demo's reward (see the top): R* = success - min(lambda * tokens, 1); in the real mode the
   paper's, with the interactivity judge when there is a judge. */
static cllm_metric reward_metrics[2];
static void demo_mr_config(cllm_mr_config *mr, int window, cllm_tokenizer *tok) {
    cllm_err err;
    cllm_mr_config_init(mr, CLLM_MR_PRESET_MATH);
    success_metric(&reward_metrics[0]);
    mr->metrics = reward_metrics; mr->n_metrics = 1;
    if (real.judge_model) {
        cllm_metric_builtin("interactivity", &reward_metrics[1], &err);
        reward_metrics[1].ctx = &real.judge; reward_metrics[1].weight = 1;
        mr->n_metrics = 2;
    }
    mr->window = window;
    mr->samples = window ? 3 : 1;          /* the immediate reward has no future to sample */
    if (!real.model_dir) mr->lambda = LAMBDA;
    mr->tokens.count = cllm_tokenizer_count; mr->tokens.ctx = tok;
}

/* A training run. The real mode trains LoRA adapters (r 32, alpha 16, dropout 0.1) for one
   epoch at the paper's rate for the stage (paper_lr), in batches of 8. */
static cllm_train_config train_config(double lr, int epochs, double paper_lr, const char *dir, const char *model_dir) {
    cllm_train_config tc;
    memset(&tc, 0, sizeof tc);
    tc.lr = real.model_dir ? paper_lr : lr; tc.epochs = real.model_dir ? 1 : epochs;
    tc.batch_size = real.model_dir ? 8 : 16; tc.seed = seed;
    tc.out_dir = path(dir); tc.log_every = real.model_dir ? 1 : 100; tc.model_dir = model_dir;
    return tc;
}

/* What is trained: the whole tiny model, or LoRA adapters on a real one (left empty otherwise). */
static void attach_lora(cllm_model *m, cllm_lora *lora) {
    cllm_lora_config lc;
    cllm_err err;
    memset(&lc, 0, sizeof lc);                       /* the paper's: r 32, alpha 16, dropout 0.1 */
    memset(lora, 0, sizeof *lora);
    if (real.model_dir && cllm_lora_init(lora, m, &lc, &err) != CLLM_OK) die("lora", &err);
}

/* The model trained from base_dir: a full copy (the tiny model), or LoRA adapters on it. */
static void load_policy(cllm_model *m, cllm_lora *lora, const char *base_dir) {
    cllm_err err;
    if (cllm_model_load(m, base_dir, &err) != CLLM_OK) die(base_dir, &err);
    attach_lora(m, lora);
}
#define LORA(lora) (real.model_dir ? (lora) : NULL)

/* ---- 1. tasks and the tokenizer ---------------------------------------------------------------- */

/* Every sentence the family can produce, so that the tokenizer has a token for every word. */
static int corpus(const char ***out) {
    static const char *buf[4096];
    static char store[4096][200];
    int n = 0, f, v, k;
    for (f = 0; f < DEMO_N_FAMILIES; f++) {
        const demo_family *d = &demo_families[f];
        buf[n++] = d->vague; buf[n++] = d->question;
        for (v = 0; v < d->n_values; v++) {
            const char *fmts[4] = { d->full, d->reveal, d->restate, d->answer };
            for (k = 0; k < 4; k++) { snprintf(store[n], sizeof store[n], fmts[k], d->values[v]); buf[n] = store[n]; n++; }
        }
    }
    buf[n++] = "user"; buf[n++] = "assistant"; buf[n++] = "system";
    *out = buf;
    return n;
}

/* ---- 2. the base model ------------------------------------------------------------------------- */

static void train_base(int vocab) {
    cllm_config c;
    cllm_model m;
    cllm_tokenizer tok;
    cllm_sft_data d;
    cllm_train_config tc;
    cllm_rng rng;
    cllm_err err;
    FILE *f = fopen(path("sft_base.jsonl"), "wb");
    int i, r;
    memset(&c, 0, sizeof c);
    c.arch = CLLM_ARCH_LLAMA; c.vocab_size = (vocab + 7) / 8 * 8; c.hidden_size = 64; c.intermediate_size = 192;
    c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 16; c.max_position_embeddings = 256;
    c.rms_norm_eps = 1e-5f; c.rope_theta = 10000; c.tie_word_embeddings = 1; c.bos_token_id = -1;
    c.eos_token_ids[0] = 2; c.n_eos = 1;                                     /* <|im_end|> */
    if (cllm_model_init(&m, &c, seed, &err) != CLLM_OK || cllm_model_save(&m, path("init"), CLLM_DT_F32, &err) != CLLM_OK) die("init", &err);
    cllm_rng_seed(&rng, seed * 31 + 7);
    for (i = 0; i < n_train; i++) for (r = 0; r < SFT_ROWS_PER_TASK; r++) {
        cJSON *row = demo_sft_row(&rng, &train_tasks[i], P_ASK);
        char *text = cJSON_PrintUnformatted(row);
        fprintf(f, "%s\n", text);
        cJSON_free(text); cJSON_Delete(row);
    }
    fclose(f);
    if (cllm_tokenizer_load(&tok, path("init"), &err) != CLLM_OK || cllm_sft_data_load(&d, &tok, path("sft_base.jsonl"), 0, &err) != CLLM_OK) die("sft data", &err);
    /* copying the detail from the request into the answer is learnt late: 30 epochs keep a margin */
    tc = train_config(5e-3, 30, 0, "base", path("init"));
    if (cllm_train_sft(&m, NULL, &d, &tc, &err) != CLLM_OK) die("sft", &err);
    cllm_sft_data_free(&d);
    cllm_tokenizer_free(&tok);
    cllm_model_free(&m);
}

/* ---- evaluation: the table's columns ----------------------------------------------------------- */

typedef struct row {
    const char *name, *label;
    double success, success_under, success_spec, avg_tokens, clarify_rate, unnecessary_rate, itr;
} row;

static void evaluate(const char *model_dir, const char *name, const char *label, row *r) {
    cllm_local_lm lm;
    cllm_local_assistant asst;
    cllm_eval_config ec;
    cllm_eval_summary sum;
    cllm_metric metrics[3];
    int n_metrics = 3;
    demo_sim_ctx sctx;
    cllm_user_sim sim = simulator(&sctx, test_tasks, n_test);
    cllm_err err;
    char details[1024];
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    long len;
    double n_u = 0, n_s = 0;
    memset(r, 0, sizeof *r);
    r->name = name; r->label = label;
    if (cllm_local_lm_load(&lm, model_dir, &err) != CLLM_OK) die(model_dir, &err);
    local_assistant(&asst, &lm, 17, T_EVALUATE);
    memset(metrics, 0, sizeof metrics);
    success_metric(&metrics[0]);
    metrics[1].name = "asked"; metrics[1].fn = real.model_dir ? metric_has_question : demo_metric_asked;
    metrics[2].name = "interactivity"; metrics[2].fn = demo_metric_interactivity;
    if (real.model_dir) {
        if (real.judge_model) { cllm_metric_builtin("interactivity", &metrics[2], &err); metrics[2].ctx = &real.judge; }
        else n_metrics = 2;
    }
    memset(&ec, 0, sizeof ec);
    ec.max_turns = MAX_TURNS; ec.task_desc = task_desc(); ec.metrics = metrics; ec.n_metrics = n_metrics;
    ec.tokens.count = cllm_tokenizer_count; ec.tokens.ctx = &lm.tok;
    snprintf(details, sizeof details, "%s/eval_%s.jsonl", out_dir, name);
    if (cllm_eval_run(&ec, &sim, &asst.assistant, test_tasks, n_test, details, &sum, &err) != CLLM_OK) die("eval", &err);
    f = fopen(details, "rb");                              /* split by kind, from the details */
    while (f && (len = cllm_read_line(f, &line, &cap)) >= 0) {
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len), *m = cJSON_GetObjectItem(o, "metrics");
        const cJSON *u = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "single_turn_metadata"), "underspecified");
        const cJSON *jok = cJSON_GetObjectItem(m, "success"), *jasked = cJSON_GetObjectItem(m, "asked");
        double ok = cJSON_IsNumber(jok) ? jok->valuedouble : 0, asked = cJSON_IsNumber(jasked) ? jasked->valuedouble : 0;
        if (cJSON_IsTrue(u)) { r->success_under += ok; r->clarify_rate += asked; n_u++; }
        else if (cJSON_IsFalse(u)) { r->success_spec += ok; r->unnecessary_rate += asked; n_s++; }
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    free(line);
    r->success = sum.metric_means[0];
    r->itr = n_metrics > 2 ? 100 * sum.metric_means[2] : NAN;
    r->avg_tokens = 1000 * sum.tokens_k;
    r->success_under = n_u ? r->success_under / n_u : NAN; r->clarify_rate = n_u ? r->clarify_rate / n_u : NAN;
    r->success_spec = n_s ? r->success_spec / n_s : NAN; r->unnecessary_rate = n_s ? r->unnecessary_rate / n_s : NAN;
    fprintf(stderr, "   %-12s success %.2f (under-specified %.2f, fully specified %.2f); asks when needed %.2f, needlessly %.2f; %.1f tokens\n",
            name, r->success, r->success_under, r->success_spec, r->clarify_rate, r->unnecessary_rate, r->avg_tokens);
    cllm_eval_summary_free(&sum);
    cllm_local_lm_free(&lm);
}

/* ---- 4. MR-scored data ------------------------------------------------------------------------- */

static void generate(const char *model_dir, int window, const char *tag) {
    cllm_local_lm lm;
    cllm_local_assistant asst;
    cllm_datagen_config dg;
    cllm_pairs_config pc;
    demo_sim_ctx sctx;
    cllm_user_sim sim = simulator(&sctx, train_tasks, n_train);
    cllm_err err;
    char records[64], sft[64], pairs[64];
    int n_sft, n_pairs;
    snprintf(records, sizeof records, "records_%s.jsonl", tag);
    snprintf(sft, sizeof sft, "sft_%s.jsonl", tag);
    snprintf(pairs, sizeof pairs, "pairs_%s.jsonl", tag);
    if (cllm_local_lm_load(&lm, model_dir, &err) != CLLM_OK) die(model_dir, &err);
    local_assistant(&asst, &lm, 100 + (uint64_t)window, T_GENERATE);   /* candidates and futures: the base */
    memset(&dg, 0, sizeof dg);
    demo_mr_config(&dg.mr, window, &lm.tok);
    dg.n_candidates = 2; dg.max_turns = MAX_TURNS; dg.task_desc = task_desc();
    remove(path(records));
    if (cllm_datagen_run(&dg, &sim, &asst.assistant, &asst.assistant, train_tasks, n_train, path(records), &err) != CLLM_OK) die("generate-data", &err);
    memset(&pc, 0, sizeof pc);
    if (cllm_build_pairs(path(records), &pc, path(sft), path(pairs), &n_sft, &n_pairs, &err) != CLLM_OK) die("build-pairs", &err);
    fprintf(stderr, "   w = %d: %s -> %d SFT conversations, %d DPO pairs (gap >= 0.02)\n", window, path(records), n_sft, n_pairs);
    cllm_local_lm_free(&lm);
}

/* ---- 5. offline DPO (after SFT on the conversations MR picked) ----------------------------------- */

/* Writes the trained model's directory to result. */
static void offline_dpo(const char *base_dir, const char *tag, const char *name, char *result, size_t size) {
    cllm_model m, ref;
    cllm_lora lora;
    cllm_tokenizer tok;
    cllm_sft_data sd;
    cllm_dpo_data d;
    cllm_train_config tc;
    cllm_dpo_config dc;
    cllm_err err;
    char sft[64], pairs[64], dir[64], final_dir[80];
    snprintf(result, size, "%s", base_dir);
    snprintf(sft, sizeof sft, "sft_%s.jsonl", tag);
    snprintf(pairs, sizeof pairs, "pairs_%s.jsonl", tag);
    load_policy(&m, &lora, base_dir);
    memset(&ref, 0, sizeof ref);        /* with LoRA the reference is the base under the adapters */
    if ((!real.model_dir && cllm_model_load(&ref, base_dir, &err) != CLLM_OK) ||
        cllm_tokenizer_load(&tok, base_dir, &err) != CLLM_OK || cllm_sft_data_load(&sd, &tok, path(sft), 0, &err) != CLLM_OK ||
        cllm_dpo_data_load(&d, &tok, path(pairs), NULL, &err) != CLLM_OK) die(tag, &err);
    snprintf(dir, sizeof dir, "%s_sft", name);
    tc = train_config(1e-3, 4, 1e-5, dir, base_dir);
    if (sd.n > 0) {
        if (cllm_train_sft(&m, LORA(&lora), &sd, &tc, &err) != CLLM_OK) die(dir, &err);
        snprintf(final_dir, sizeof final_dir, "%s/final", dir);
        snprintf(result, size, "%s", path(final_dir));
    }
    memset(&dc, 0, sizeof dc);
    if (!real.model_dir) { dc.beta = 1.0; dc.rpo_alpha = 10.0; }    /* see the top; real: TRL's beta 0.1 */
    tc = train_config(1e-3, 16, 5e-6, name, base_dir);
    if (d.n == 0) fprintf(stderr, "   %s: no pairs; the model after SFT stands in\n", name);
    else {
        if (cllm_train_dpo(&m, LORA(&lora), real.model_dir ? NULL : &ref, &d, &dc, &tc, &err) != CLLM_OK) die(name, &err);
        snprintf(final_dir, sizeof final_dir, "%s/final", name);
        snprintf(result, size, "%s", path(final_dir));
    }
    cllm_lora_free(&lora);
    cllm_sft_data_free(&sd);
    cllm_dpo_data_free(&d);
    cllm_tokenizer_free(&tok);
    cllm_model_free(&m); cllm_model_free(&ref);
}

/* ---- 7. online DPO and PPO from the base: MR on the fly, the policy as the future assistant ----- */

enum { ONLINE_DPO, PPO };

/* Writes the trained model's directory to result. */
static void online(const char *base_dir, int method, const char *name, char *result, size_t size) {
    cllm_local_lm lm;                 /* the policy: its model is trained in place */
    cllm_local_assistant future;      /* the policy again, answering in MR's simulated futures */
    cllm_model ref;
    cllm_lora lora;
    cllm_online_prompts prompts;
    cllm_prompts_config pc;
    cllm_rollout_config ro;
    cllm_mr_config mr;
    cllm_train_config tc;
    demo_sim_ctx sctx;
    cllm_user_sim sim = simulator(&sctx, train_tasks, n_train);
    cllm_err err;
    cllm_result rc;
    memset(&ref, 0, sizeof ref); memset(&prompts, 0, sizeof prompts);
    if (cllm_local_lm_load(&lm, base_dir, &err) != CLLM_OK) die(base_dir, &err);
    attach_lora(&lm.model, &lora);
    if (!real.model_dir && cllm_model_load(&ref, base_dir, &err) != CLLM_OK) die(base_dir, &err);
    /* the prompts: the simulated user's opening of every training task (made once, cached) */
    memset(&pc, 0, sizeof pc);
    pc.task_desc = task_desc();
    if (cllm_online_prompts_from_tasks(&prompts, train_tasks, n_train, &sim, &pc, path("online_prompts.jsonl"), &err) != CLLM_OK) die("prompts", &err);
    demo_mr_config(&mr, 2, &lm.tok);
    local_assistant(&future, &lm, 300 + (uint64_t)method, T_GENERATE);
    memset(&ro, 0, sizeof ro);
    ro.gen.sampler.temperature = T_GENERATE;
    ro.gen.max_new_tokens = real.model_dir ? 256 : MAX_NEW_TOKENS;
    ro.mr = &mr; ro.user = &sim; ro.future = &future.assistant;
    if (method == ONLINE_DPO) {
        cllm_online_dpo_config dc;
        memset(&dc, 0, sizeof dc);
        dc.rollout = ro;
        if (!real.model_dir) { dc.beta = ONLINE_DPO_BETA; dc.rpo_alpha = ONLINE_DPO_RPO; }
        tc = train_config(ONLINE_DPO_LR, ONLINE_EPOCHS, 5e-6, name, base_dir);
        rc = cllm_train_online_dpo(&lm, LORA(&lora), real.model_dir ? NULL : &ref, &prompts, &dc, &tc, &err);
    } else {
        cllm_ppo_config ppo;
        memset(&ppo, 0, sizeof ppo);                     /* TRL's defaults: k1, kl 0.05, 4 epochs */
        ppo.rollout = ro;
        tc = train_config(PPO_LR, ONLINE_EPOCHS, 2e-6, name, base_dir);
        rc = cllm_train_ppo(&lm, LORA(&lora), real.model_dir ? NULL : &ref, NULL, &prompts, &ppo, &tc, &err);
    }
    if (rc != CLLM_OK) die(name, &err);
    snprintf(result, size, "%s/final", path(name));
    cllm_online_prompts_free(&prompts);
    cllm_lora_free(&lora);
    cllm_model_free(&ref);
    cllm_local_lm_free(&lm);
}

/* ---- outputs: the table, summary.json, curves.svg ------------------------------------------------ */

static void write_table(const row *rows, int n) {
    char buf[8192];
    int k = 0, i;
    k += snprintf(buf + k, sizeof buf - (size_t)k,
                  "%-28s %9s %10s %10s %8s %9s %12s %6s\n", "model", "success", "under-spec", "fully-spec", "tokens", "asks when", "asks", "ITR");
    k += snprintf(buf + k, sizeof buf - (size_t)k,
                  "%-28s %9s %10s %10s %8s %9s %12s %6s\n", "", "(all)", "success", "success", "/conv", "needed", "needlessly", "");
    for (i = 0; i < n; i++) {
        const double v[7] = { 100 * rows[i].success, 100 * rows[i].success_under, 100 * rows[i].success_spec, rows[i].avg_tokens,
                              100 * rows[i].clarify_rate, 100 * rows[i].unnecessary_rate, rows[i].itr };
        static const int width[7] = { 9, 10, 10, 8, 9, 12, 6 };
        int j;
        k += snprintf(buf + k, sizeof buf - (size_t)k, "%-28s", rows[i].label);
        for (j = 0; j < 7; j++)
            k += isnan(v[j]) ? snprintf(buf + k, sizeof buf - (size_t)k, " %*s", width[j], "n/a")
                             : snprintf(buf + k, sizeof buf - (size_t)k, " %*.1f", width[j], v[j]);
        k += snprintf(buf + k, sizeof buf - (size_t)k, "\n");
    }
    fprintf(stdout, "\n%s\n", buf);
    {
        cllm_err err;
        if (cllm_write_file_atomic(path("table.txt"), buf, (size_t)k, &err) != CLLM_OK) die("table.txt", &err);
    }
}

static void add_rate(cJSON *o, const char *key, double v) {
    if (isnan(v)) cJSON_AddNullToObject(o, key);
    else cJSON_AddNumberToObject(o, key, v);
}

static void write_summary(const row *rows, int n, double seconds) {
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "rows");
    char *text;
    cllm_err err;
    int i;
    cJSON_AddNumberToObject(o, "seed", (double)seed);
    cJSON_AddNumberToObject(o, "seconds", seconds);
    for (i = 0; i < n; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "name", rows[i].name);
        add_rate(r, "success", rows[i].success);                    /* NaN (n/a) is written as null */
        add_rate(r, "success_underspecified", rows[i].success_under);
        add_rate(r, "success_specified", rows[i].success_spec);
        add_rate(r, "avg_tokens", rows[i].avg_tokens);
        add_rate(r, "clarify_rate", rows[i].clarify_rate);
        add_rate(r, "unnecessary_question_rate", rows[i].unnecessary_rate);
        add_rate(r, "itr", rows[i].itr);
        cJSON_AddItemToArray(arr, r);
    }
    text = cJSON_Print(o);
    if (cllm_write_file_atomic(path("summary.json"), text, strlen(text), &err) != CLLM_OK) die("summary.json", &err);
    cJSON_free(text);
    cJSON_Delete(o);
}

/* One panel per training run: a metric from its metrics.jsonl against the step. */
typedef struct curve { const char *title, *dir, *metric; } curve;

static int read_curve(const char *dir, const char *metric, double *y, int max) {
    char file[1024], *line = NULL;
    size_t cap = 0;
    long len;
    int n = 0;
    FILE *f;
    snprintf(file, sizeof file, "%s/%s/metrics.jsonl", out_dir, dir);
    f = fopen(file, "rb");
    while (f && n < max && (len = cllm_read_line(f, &line, &cap)) >= 0) {
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len), *v = cJSON_GetObjectItem(o, metric);
        if (cJSON_IsNumber(v)) y[n++] = v->valuedouble;
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    free(line);
    return n;
}

static void write_curves(const curve *curves, int n_curves) {
    enum { W = 360, H = 200, COLS = 3 };
    static double y[100000];
    char *svg;
    size_t cap = 1 << 20, k = 0;
    int c, rows_ = (n_curves + COLS - 1) / COLS, i;
    cllm_err err;
    svg = (char *)malloc(cap);
    k += (size_t)snprintf(svg + k, cap - k, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n"
                          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", COLS * W, rows_ * H);
    for (c = 0; c < n_curves; c++) {
        int n = read_curve(curves[c].dir, curves[c].metric, y, 100000), x0 = (c % COLS) * W + 45, y0 = (c / COLS) * H + 25, pw = W - 65, ph = H - 60;
        double lo = 1e300, hi = -1e300;
        for (i = 0; i < n; i++) { if (y[i] < lo) lo = y[i]; if (y[i] > hi) hi = y[i]; }
        if (hi <= lo) { hi = lo + 1; }
        k += (size_t)snprintf(svg + k, cap - k, "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">%s</text>\n", x0, y0 - 8, curves[c].title);
        k += (size_t)snprintf(svg + k, cap - k, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", x0, y0, pw, ph);
        k += (size_t)snprintf(svg + k, cap - k, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.3g</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.3g</text>\n",
                              x0 - 4, y0 + 10, hi, x0 - 4, y0 + ph, lo);
        k += (size_t)snprintf(svg + k, cap - k, "<text x=\"%d\" y=\"%d\">%s, %d steps</text>\n", x0, y0 + ph + 16, curves[c].metric, n);
        k += (size_t)snprintf(svg + k, cap - k, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.2\" points=\"");
        for (i = 0; i < n && k + 64 < cap; i++)
            k += (size_t)snprintf(svg + k, cap - k, "%.1f,%.1f ", x0 + (n > 1 ? (double)i / (n - 1) : 0) * pw, y0 + ph - (y[i] - lo) / (hi - lo) * ph);
        k += (size_t)snprintf(svg + k, cap - k, "\"/>\n");
    }
    k += (size_t)snprintf(svg + k, cap - k, "</svg>\n");
    if (cllm_write_file_atomic(path("curves.svg"), svg, k, &err) != CLLM_OK) die("curves.svg", &err);
    free(svg);
}

/* ---- main ------------------------------------------------------------------------------------------ */

static const flag_spec demo_flags[] = {
    { .name = "--seed", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 9007199254740992.0, .def = "1",
      .help = "seed of the tasks, the models and the sampling" },
    { .name = "--out", .type = FLAG_OUT_DIR, .metavar = "DIR", .def = "build/demo",
      .help = "every model, the data of each stage (data_fmt/), summary.json, table.txt, curves.svg" },
    { .name = "--overwrite", .type = FLAG_SWITCH,
      .help = "write into an existing --out, replacing the files of an earlier run" },
};
static const flag_spec demo_real_flags[] = {
    { .name = "--model", .type = FLAG_IN_DIR, .metavar = "DIR",
      .help = "a Hugging Face chat model as the base (then stages 1-2 are skipped)" },
    { .name = "--tasks", .type = FLAG_IN_FILE, .metavar = "TRAIN.jsonl",
      .help = "training tasks (data_fmt/task.md)" },
    { .name = "--test-tasks", .type = FLAG_IN_FILE, .metavar = "TEST.jsonl",
      .help = "held-out tasks (data_fmt/task.md)" },
    { .name = "--user-model", .type = FLAG_TEXT, .metavar = "M",
      .help = "the user simulator, a model behind the endpoint" },
    { .name = "--judge-model", .type = FLAG_TEXT, .metavar = "M", .def_note = "exact match, no judge",
      .help = "the accuracy and interactivity judge" },
    { .name = "--base-url", .type = FLAG_TEXT, .metavar = "URL", .def_note = "$OPENAI_BASE_URL",
      .help = "the OpenAI-compatible endpoint (key: $OPENAI_API_KEY; data_fmt/endpoints.md)" },
    { .name = "--limit", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e9, .def_note = "all",
      .help = "only the first N tasks of each file" },
    { .name = "--task-desc", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "\"ordering\"",
      .help = "what kind of task the user has, in the simulator's prompt" },
};
static const flag_group demo_group = FLAG_GROUP("demo", demo_flags);
static const flag_group demo_real_group =
    FLAG_GROUP("a real model (--model, --tasks, --test-tasks and --user-model together)", demo_real_flags);
static const flag_command demo_command = {
    "cllm_demo", "CollabLLM's central result, offline, in a few minutes on 2 CPU cores (make demo).",
    "Trains a tiny base policy on the bundled task family, generates MR-scored data with w = 2 and w = 0, trains "
    "offline DPO, online DPO and PPO on it, and evaluates every model; the table goes to stdout and DIR/table.txt.\n"
    "With --model and the task files the same pipeline runs on a real model and endpoint (see examples/demo.c).",
    NULL, { &demo_group, &demo_real_group, NULL },
};

/* A run that fails (die() exits) leaves no empty output directory behind. */
static run_files demo_files;
static int demo_finished;
static void demo_at_exit(void) { run_files_end(&demo_files, !demo_finished); }

/* The command line into the settings; 1 to run, else 0 with *status the exit status. */
static int demo_flags_read(int argc, char **argv, int *status) {
    static const char *real_only[] = { "--judge-model", "--base-url", "--limit", "--task-desc" };
    static flags fl;
    size_t i;
    flags_status parsed = flags_parse(&fl, &demo_command, argc - 1, argv + 1);
    *status = parsed == FLAGS_HELP ? 0 : 2;
    if (parsed != FLAGS_OK) return 0;
    real.model_dir = flag_text(&fl, "--model");
    real.train = flag_text(&fl, "--tasks");
    real.test = flag_text(&fl, "--test-tasks");
    real.user_model = flag_text(&fl, "--user-model");
    if ((real.model_dir || real.train || real.test || real.user_model) &&
        !(real.model_dir && real.train && real.test && real.user_model))
        return !flags_fail(fl.cmd, "the real mode needs --model, --tasks, --test-tasks and --user-model together");
    for (i = 0; i < sizeof real_only / sizeof real_only[0] && !real.model_dir; i++) {
        if (flag_given(&fl, real_only[i])) {
            return !flags_fail(fl.cmd, "%s applies to the real mode (--model)", real_only[i]);
        }
    }
    real.judge_model = flag_text(&fl, "--judge-model");
    real.base_url = flag_text(&fl, "--base-url");
    real.task_desc = flag_text(&fl, "--task-desc");
    real.limit = (int)flag_number(&fl, "--limit");
    seed = (uint64_t)flag_number(&fl, "--seed");
    out_dir = flag_text(&fl, "--out");
    if ((*status = run_files_prepare(&demo_files, &fl)) != 0) return 0;
    atexit(demo_at_exit);
    return 1;
}

/* The real mode: the endpoint, the API simulator and judge, the task files (--limit: the first N). */
static void setup_real(void) {
    cllm_client_config cc;
    cllm_llm_sim_config sc;
    cllm_judge_config jc;
    cllm_err err;
    memset(&cc, 0, sizeof cc); memset(&sc, 0, sizeof sc); memset(&jc, 0, sizeof jc);
    cc.base_url = real.base_url;                         /* NULL: $OPENAI_BASE_URL; key: $OPENAI_API_KEY */
    if (cllm_client_init(&real.client, &cc, &err) != CLLM_OK) die("client", &err);
    sc.params.model = real.user_model; sc.params.seed = (long long)seed;
    cllm_llm_sim_init(&real.sim, &real.client, &sc);
    jc.params.model = real.judge_model;
    if (real.judge_model) cllm_judge_init(&real.judge, &real.client, &jc);
    if (cllm_tasks_read_jsonl(real.train, &train_tasks, &n_train, &err) != CLLM_OK ||
        cllm_tasks_read_jsonl(real.test, &test_tasks, &n_test, &err) != CLLM_OK) die("tasks", &err);
    n_train_read = n_train; n_test_read = n_test;
    if (real.limit > 0 && real.limit < n_train) n_train = real.limit;
    if (real.limit > 0 && real.limit < n_test) n_test = real.limit;
    fprintf(stderr, "   base %s; %d training and %d test tasks; simulator %s, judge %s\n", real.model_dir, n_train, n_test,
            real.user_model, real.judge_model ? real.judge_model : "none (exact match)");
}

int main(int argc, char **argv) {
    static const curve curves[] = {
        { "base: SFT from scratch", "base", "loss" },
        { "w=0: SFT on picked conversations", "dpo_w0_sft", "loss" },
        { "w=0: DPO reward margin", "dpo_w0", "rewards/margins" },
        { "w=2: SFT on picked conversations", "dpo_w2_sft", "loss" },
        { "w=2 (CollabLLM): DPO reward margin", "dpo_w2", "rewards/margins" },
        { "w=2 (CollabLLM): DPO accuracy", "dpo_w2", "rewards/accuracies" },
        { "online DPO: mean MR of the samples", "online_dpo", "reward" },
        { "PPO: mean MR of the rollouts", "ppo", "reward" },
        { "PPO: KL to the base", "ppo", "objective/kl" },
    };
    const char **texts;
    char base_dir[1024], dpo_w0[1024], dpo_w2[1024], odpo[1024], ppo[1024];   /* path() recycles its buffers: copies */
    cllm_err err;
    row rows[8];
    int n_rows = 0, vocab, n_texts, status;
    if (!demo_flags_read(argc, argv, &status)) return status;
    t_start = now();
    fprintf(stderr, "CollabLLM demo, seed %llu, output in %s/\n", (unsigned long long)seed, out_dir);

    if (real.model_dir) {
        stage("1-2. a real model, API user simulator, task files");
        setup_real();
        snprintf(base_dir, sizeof base_dir, "%s", real.model_dir);
    } else {
        stage("1. tasks (data_fmt/task.md) and a tokenizer trained on the task family");
        if (demo_write_tasks(path("tasks_train.jsonl"), seed, N_TRAIN_TASKS, &err) != CLLM_OK ||
            demo_write_tasks(path("tasks_test.jsonl"), seed + 1000003, N_TEST_TASKS, &err) != CLLM_OK) die("tasks", &err);
        if (cllm_tasks_read_jsonl(path("tasks_train.jsonl"), &train_tasks, &n_train, &err) != CLLM_OK ||
            cllm_tasks_read_jsonl(path("tasks_test.jsonl"), &test_tasks, &n_test, &err) != CLLM_OK) die("tasks", &err);
        n_train_read = n_train; n_test_read = n_test;
        mkdir(path("init"), 0755);                         /* exists already on a rerun */
        n_texts = corpus(&texts);
        if ((vocab = demo_bpe_train(texts, n_texts, 1000, path("init"), &err)) < 0) die("tokenizer", &err);
        fprintf(stderr, "   %d training and %d test tasks; %d tokens\n", n_train, n_test, vocab);

        stage("2. the base model, from scratch: SFT on a mixture that asks 30% of the time, needed or not");
        train_base(vocab);
        snprintf(base_dir, sizeof base_dir, "%s", path("base/final"));
    }

    stage("3. evaluate the base model on the held-out tasks");
    evaluate(base_dir, "base", "Base", &rows[n_rows++]);

    stage("4. MR-scored data from the base: forward window w = 2, and the immediate reward w = 0");
    generate(base_dir, 2, "w2");
    generate(base_dir, 0, "w0");

    stage("5. offline DPO on each (after SFT on the conversations MR picked)");
    offline_dpo(base_dir, "w0", "dpo_w0", dpo_w0, sizeof dpo_w0);
    offline_dpo(base_dir, "w2", "dpo_w2", dpo_w2, sizeof dpo_w2);

    stage("6. online DPO and PPO from the base, MR (w = 2) computed on the fly");
    online(base_dir, ONLINE_DPO, "online_dpo", odpo, sizeof odpo);
    online(base_dir, PPO, "ppo", ppo, sizeof ppo);

    stage("7. evaluate");
    evaluate(dpo_w0, "w0_dpo", "Offline DPO, w=0 (ablation)", &rows[n_rows++]);
    evaluate(dpo_w2, "offline_dpo", "CollabLLM offline DPO (w=2)", &rows[n_rows++]);
    evaluate(odpo, "online_dpo", "CollabLLM online DPO (w=2)", &rows[n_rows++]);
    evaluate(ppo, "ppo", "CollabLLM PPO (w=2)", &rows[n_rows++]);

    stage("results (table.txt, summary.json, curves.svg)");
    write_table(rows, n_rows);
    write_summary(rows, n_rows, now() - t_start);
    write_curves(curves + (real.model_dir ? 1 : 0), (int)(sizeof curves / sizeof curves[0]) - (real.model_dir ? 1 : 0));
    fprintf(stderr, "demo: done in %.0fs\n", now() - t_start);
    cllm_tasks_free(train_tasks, n_train_read);
    cllm_tasks_free(test_tasks, n_test_read);
    if (real.model_dir) cllm_client_free(&real.client);
    demo_finished = 1;
    return 0;
}
