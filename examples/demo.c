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

   The reward is the paper's, on CollabLLM v1's scales: R* = success + 1 * itr - min(lambda *
   tokens, 1). success is an exact match of the final answer; itr is the interactivity judge's
   score, an integer from 1 to 3 divided by 3 as in v1's training reward for math and code
   (weight 1); tokens counts the candidate and the simulated future. The same reward scores the
   offline data, online DPO's pairs and PPO's rollouts. The judge (demo_judge in demo_task.h)
   reads only the conversation, like an LLM judge: never the task, whether it is under-specified,
   or the hidden detail. It can tell that a question was needless only from what the user says
   next (a restatement), and that a guess was wrong only from the user's correction. An immediate
   reward (w = 0) never sees that reply: the judge scores every candidate 2 there, so the w = 0
   ablation keeps the reward's form but learns nothing about asking from it. MR with w = 2 sees
   the reply, which is the paper's case for looking ahead.

   Settings that differ from the paper, and why. The paper fine-tunes an 8B model with LoRA; here
   a 0.2M-parameter model is trained from scratch in a minute, so learning rates are larger,
   lambda (5e-3) is larger because conversations are ~50 tokens instead of thousands, DPO uses
   beta = 1 and RPO (alpha = 10) because plain DPO at this scale lowers the rejected answers'
   templates everywhere and breaks the answers that follow a clarification, and, following the
   paper's lineage (SFT -> offline DPO), each DPO run starts with 4 epochs of SFT on the
   conversations MR picked. Data generation samples k = 3 candidates per turn (CollabLLM v2's
   examples; v1 used 2): with 2, offline DPO fell short of the base + 30 points on some seeds.
   Everything else is the paper's: S = 3 forward samples, w = 2, pairs kept at a score gap >= 0.02.
   Online DPO starts from offline DPO, as in the paper. PPO starts from offline DPO too, where the
   paper's PPO starts from SFT: from SFT, 4 epochs of PPO at this scale learnt when to ask on some
   seeds and not on others (seeds 1-3: under-specified success 66-92 %, needless questions 4-25 %,
   against the base's 24-26 %), so the PPO row would show the seed, not the method. Both see each
   training prompt 4 times; online DPO uses beta = 1 and RPO alpha = 1 for the reason above, PPO
   TRL's defaults (k1 KL 0.05, 4 PPO epochs, GAE 1/0.95). Their prompts are every user turn of the
   MR data (w = 2), as CollabLLM's online training uses its multiturn dataset; with the openings
   alone, PPO never trained the answer that follows a clarification and fell 12 points below
   offline DPO on some seeds.
   The evaluation may use the labels: "asks when needed" and "asks needlessly" split the first
   replies by the task's label. ITR is the same conversation-only judge on the whole evaluated
   conversation: the mean of its score / 3, as a percentage (33.3 = every conversation low, 100 =
   every conversation high). */
#define _XOPEN_SOURCE 700
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "demo_task.h"
#include "demo_bpe.h"
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "flags.h"
#include "run_files.h"

/* ---- settings ------------------------------------------------------------------------------- */

#define SFT_ROWS_PER_TASK 2      /* conversations per training task in the base's SFT mixture  */
#define P_ASK             0.3    /* how often the base mixture asks, needed or not             */
#define MAX_TURNS         3      /* user turns per conversation (evaluation, data generation)  */
#define MAX_NEW_TOKENS    24     /* longest reply                                              */
#define LAMBDA            5e-3   /* token cost                                                 */
#define W_ITR             1.0    /* the interactivity judge's weight in R* (v1, math and code) */
#define ONLINE_DPO_LR     1e-3
#define ONLINE_DPO_BETA   1.0
#define ONLINE_DPO_RPO    1.0    /* + the chosen responses' NLL (see the top)                  */
#define PPO_LR            1e-4   /* PPO makes 4 updates per rollout (TRL's num_ppo_epochs)     */

/* How much work each stage does: the demo's, or --quick's (every stage on a few tasks, in seconds:
   for tests of the pipeline and its outputs; its numbers mean nothing). */
typedef struct demo_size {
    int train_tasks;      /* tasks for SFT, data generation and online training                  */
    int test_tasks;       /* held out: half under-specified, half fully specified                */
    int base_epochs;      /* the base's SFT. Copying the detail into the answer is learnt late:
                             after 30 epochs some seeds' bases still got a third of the fully
                             specified requests wrong, and every later row inherited it        */
    int picked_epochs;    /* SFT on the conversations MR picked, before each offline DPO         */
    int dpo_epochs;       /* offline DPO                                                         */
    int online_epochs;    /* passes over the training prompts, online DPO and PPO                */
} demo_size;
static const demo_size demo_full = { 600, 200, 45, 4, 16, 4 };
static const demo_size demo_quick = { 24, 10, 1, 1, 1, 1 };
static demo_size run_size;

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
    ctx->tasks = tasks;
    ctx->n_tasks = n;
    sim.turn = demo_user_turn;
    sim.turn_batch = NULL;
    sim.ctx = ctx;
    return sim;
}

static const char *task_desc(void) { return real.task_desc ? real.task_desc : "ordering"; }

/* asked, in the real mode: the first reply contains a question mark */
static cllm_result metric_has_question(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx; (void)err;
    for (i = 0; i < n; i++) {
        const char *r = demo_first_reply(&s[i]);
        scores[i] = r && strchr(r, '?') ? 1.0 : 0.0;
    }
    return CLLM_OK;
}

/* The interactivity judge: the bundled conversation-only one, or the API judge in the real mode. */
static void interactivity_metric(cllm_metric *m) {
    cllm_err err;
    memset(m, 0, sizeof *m);
    if (real.model_dir) {
        cllm_metric_builtin("interactivity", m, &err);
        m->ctx = &real.judge;
    } else {
        m->fn = demo_metric_judge;
    }
    m->name = "interactivity";
    m->weight = 1;
}

/* The task metric: exact match of the final answer, or the accuracy judge in the real mode. */
static void success_metric(cllm_metric *m) {
    cllm_err err;
    memset(m, 0, sizeof *m);
    if (real.judge_model) {
        cllm_metric_builtin("accuracy", m, &err);
        m->ctx = &real.judge;
    } else {
        cllm_metric_builtin("exact_match", m, &err);
    }
    m->name = "success";
    m->weight = 1;
}

/* The reward (see the top): R* = success + W_ITR * itr - min(lambda * tokens, 1), with the
   conversation-only judge (demo_judge), or in the real mode the API judge when there is one. */
static cllm_metric reward_metrics[2];
static void demo_mr_config(cllm_mr_config *mr, int window, cllm_tokenizer *tok) {
    cllm_mr_config_init(mr, CLLM_MR_PRESET_MATH);
    success_metric(&reward_metrics[0]);
    mr->metrics = reward_metrics;
    mr->n_metrics = 1;
    if (!real.model_dir || real.judge_model) {
        interactivity_metric(&reward_metrics[1]);
        reward_metrics[1].weight = W_ITR;
        mr->n_metrics = 2;
    }
    mr->window = window;
    mr->samples = window ? 3 : 1;          /* the immediate reward has no future to sample */
    if (!real.model_dir) mr->lambda = LAMBDA;
    mr->tokens.count = cllm_tokenizer_count;
    mr->tokens.ctx = tok;
}

/* A training run. The real mode trains LoRA adapters (r 32, alpha 16, dropout 0.1) for one
   epoch at the paper's rate for the stage (paper_lr), in batches of 8. */
static cllm_train_config train_config(double lr, int epochs, double paper_lr, const char *dir, const char *model_dir) {
    cllm_train_config tc;
    memset(&tc, 0, sizeof tc);
    tc.lr = real.model_dir ? paper_lr : lr;
    tc.epochs = real.model_dir ? 1 : epochs;
    tc.batch_size = real.model_dir ? 8 : 16;
    tc.seed = seed;
    tc.out_dir = path(dir);
    tc.log_every = real.model_dir ? 1 : 100;
    tc.model_dir = model_dir;
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
        buf[n++] = d->vague;
        buf[n++] = d->question;
        for (v = 0; v < d->n_values; v++) {
            const char *fmts[4] = { d->full, d->reveal, d->restate, d->answer };
            for (k = 0; k < 4; k++) {
                snprintf(store[n], sizeof store[n], fmts[k], d->values[v]);
                buf[n] = store[n];
                n++;
            }
        }
    }
    buf[n++] = "user";
    buf[n++] = "assistant";
    buf[n++] = "system";
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
    c.arch = CLLM_ARCH_LLAMA;
    c.vocab_size = (vocab + 7) / 8 * 8;
    c.hidden_size = 64;
    c.intermediate_size = 192;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    c.max_position_embeddings = 256;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000;
    c.tie_word_embeddings = 1;
    c.bos_token_id = -1;
    c.eos_token_ids[0] = 2;                                     /* <|im_end|> */
    c.n_eos = 1;
    if (cllm_model_init(&m, &c, seed, &err) != CLLM_OK ||
        cllm_model_save(&m, path("init"), CLLM_DT_F32, &err) != CLLM_OK) die("init", &err);
    cllm_rng_seed(&rng, seed * 31 + 7);
    for (i = 0; i < n_train; i++) for (r = 0; r < SFT_ROWS_PER_TASK; r++) {
        cJSON *row = demo_sft_row(&rng, &train_tasks[i], P_ASK);
        char *text = cJSON_PrintUnformatted(row);
        fprintf(f, "%s\n", text);
        cJSON_free(text);
        cJSON_Delete(row);
    }
    fclose(f);
    if (cllm_tokenizer_load(&tok, path("init"), &err) != CLLM_OK ||
        cllm_sft_data_load(&d, &tok, path("sft_base.jsonl"), 0, &err) != CLLM_OK) die("sft data", &err);
    tc = train_config(5e-3, run_size.base_epochs, 0, "base", path("init"));
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
/* The numbers of a row one by one (the mean and std over seeds). */
static const size_t row_fields[] = { offsetof(row, success), offsetof(row, success_under), offsetof(row, success_spec),
                                     offsetof(row, avg_tokens), offsetof(row, clarify_rate),
                                     offsetof(row, unnecessary_rate), offsetof(row, itr) };
#define N_FIELDS ((int)(sizeof row_fields / sizeof row_fields[0]))
#define FIELD(r, j) ((double *)((char *)(r) + row_fields[j]))

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
    r->name = name;
    r->label = label;
    if (cllm_local_lm_load(&lm, model_dir, &err) != CLLM_OK) die(model_dir, &err);
    local_assistant(&asst, &lm, 17, T_EVALUATE);
    memset(metrics, 0, sizeof metrics);
    success_metric(&metrics[0]);
    metrics[1].name = "asked";
    metrics[1].fn = real.model_dir ? metric_has_question : demo_metric_asked;
    interactivity_metric(&metrics[2]);
    if (real.model_dir && !real.judge_model) n_metrics = 2;
    memset(&ec, 0, sizeof ec);
    ec.max_turns = MAX_TURNS;
    ec.task_desc = task_desc();
    ec.metrics = metrics;
    ec.n_metrics = n_metrics;
    ec.tokens.count = cllm_tokenizer_count;
    ec.tokens.ctx = &lm.tok;
    snprintf(details, sizeof details, "%s/eval_%s.jsonl", out_dir, name);
    if (cllm_eval_run(&ec, &sim, &asst.assistant, test_tasks, n_test, details, &sum, &err) != CLLM_OK) {
        die("eval", &err);
    }
    f = fopen(details, "rb");                              /* split by kind, from the details */
    while (f && (len = cllm_read_line(f, &line, &cap)) >= 0) {
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len), *m = cJSON_GetObjectItem(o, "metrics");
        const cJSON *u = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "single_turn_metadata"), "underspecified");
        const cJSON *jok = cJSON_GetObjectItem(m, "success"), *jasked = cJSON_GetObjectItem(m, "asked");
        double ok = cJSON_IsNumber(jok) ? jok->valuedouble : 0,
               asked = cJSON_IsNumber(jasked) ? jasked->valuedouble : 0;
        if (cJSON_IsTrue(u)) {
            r->success_under += ok;
            r->clarify_rate += asked;
            n_u++;
        } else if (cJSON_IsFalse(u)) {
            r->success_spec += ok;
            r->unnecessary_rate += asked;
            n_s++;
        }
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    free(line);
    r->success = sum.metric_means[0];
    r->itr = n_metrics > 2 ? 100 * sum.metric_means[2] : NAN;
    r->avg_tokens = 1000 * sum.tokens_k;
    r->success_under = n_u ? r->success_under / n_u : NAN;
    r->clarify_rate = n_u ? r->clarify_rate / n_u : NAN;
    r->success_spec = n_s ? r->success_spec / n_s : NAN;
    r->unnecessary_rate = n_s ? r->unnecessary_rate / n_s : NAN;
    fprintf(stderr, "   %-12s success %.2f (under-specified %.2f, fully specified %.2f); "
                    "asks when needed %.2f, needlessly %.2f; %.1f tokens\n",
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
    dg.n_candidates = 3;
    dg.max_turns = MAX_TURNS;
    dg.task_desc = task_desc();
    remove(path(records));
    if (cllm_datagen_run(&dg, &sim, &asst.assistant, &asst.assistant, train_tasks, n_train, path(records),
                         &err) != CLLM_OK) die("generate-data", &err);
    memset(&pc, 0, sizeof pc);
    if (cllm_build_pairs(path(records), &pc, path(sft), path(pairs), &n_sft, &n_pairs, &err) != CLLM_OK) {
        die("build-pairs", &err);
    }
    fprintf(stderr, "   w = %d: %s -> %d SFT conversations, %d DPO pairs (gap >= 0.02)\n",
            window, path(records), n_sft, n_pairs);
    cllm_local_lm_free(&lm);
}

/* ---- 5. offline DPO (after SFT on the conversations MR picked) ----------------------------------- */

/* The model directories an offline run leaves: after SFT on the picked conversations, after DPO
   (each the one before when its data is empty). */
typedef struct offline_models { char sft[1024], dpo[1024]; } offline_models;

static void offline_dpo(const char *base_dir, const char *tag, const char *name, offline_models *out) {
    cllm_model m, ref;
    cllm_lora lora;
    cllm_tokenizer tok;
    cllm_sft_data sd;
    cllm_dpo_data d;
    cllm_train_config tc;
    cllm_dpo_config dc;
    cllm_err err;
    char sft[64], pairs[64], dir[64], final_dir[80];
    snprintf(out->sft, sizeof out->sft, "%s", base_dir);
    snprintf(sft, sizeof sft, "sft_%s.jsonl", tag);
    snprintf(pairs, sizeof pairs, "pairs_%s.jsonl", tag);
    load_policy(&m, &lora, base_dir);
    memset(&ref, 0, sizeof ref);        /* with LoRA the reference is the base under the adapters */
    if ((!real.model_dir && cllm_model_load(&ref, base_dir, &err) != CLLM_OK) ||
        cllm_tokenizer_load(&tok, base_dir, &err) != CLLM_OK ||
        cllm_sft_data_load(&sd, &tok, path(sft), 0, &err) != CLLM_OK ||
        cllm_dpo_data_load(&d, &tok, path(pairs), NULL, &err) != CLLM_OK) die(tag, &err);
    snprintf(dir, sizeof dir, "%s_sft", name);
    tc = train_config(1e-3, run_size.picked_epochs, 1e-5, dir, base_dir);
    if (sd.n > 0) {
        if (cllm_train_sft(&m, LORA(&lora), &sd, &tc, &err) != CLLM_OK) die(dir, &err);
        snprintf(final_dir, sizeof final_dir, "%s/final", dir);
        snprintf(out->sft, sizeof out->sft, "%s", path(final_dir));
    }
    snprintf(out->dpo, sizeof out->dpo, "%s", out->sft);
    memset(&dc, 0, sizeof dc);
    if (!real.model_dir) {    /* see the top; real: TRL's beta 0.1 */
        dc.beta = 1.0;
        dc.rpo_alpha = 10.0;
    }
    tc = train_config(1e-3, run_size.dpo_epochs, 5e-6, name, base_dir);
    if (d.n == 0) fprintf(stderr, "   %s: no pairs; the model after SFT stands in\n", name);
    else {
        if (cllm_train_dpo(&m, LORA(&lora), real.model_dir ? NULL : &ref, &d, &dc, &tc, &err) != CLLM_OK) {
            die(name, &err);
        }
        snprintf(final_dir, sizeof final_dir, "%s/final", name);
        snprintf(out->dpo, sizeof out->dpo, "%s", path(final_dir));
    }
    cllm_lora_free(&lora);
    cllm_sft_data_free(&sd);
    cllm_dpo_data_free(&d);
    cllm_tokenizer_free(&tok);
    cllm_model_free(&m);
    cllm_model_free(&ref);
}

/* ---- 6. online DPO and PPO: MR on the fly, the policy as the future assistant -------------------- */

typedef enum online_method { ONLINE_DPO, PPO } online_method;

/* Trains from start_dir (also the reference model); writes the trained model's directory to result. */
static void online(const char *start_dir, online_method method, const char *name, char *result, size_t size) {
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
    memset(&ref, 0, sizeof ref);
    memset(&prompts, 0, sizeof prompts);
    if (cllm_local_lm_load(&lm, start_dir, &err) != CLLM_OK) die(start_dir, &err);
    attach_lora(&lm.model, &lora);
    if (!real.model_dir && cllm_model_load(&ref, start_dir, &err) != CLLM_OK) die(start_dir, &err);
    /* The prompts: every user turn of the MR data (w = 2), with the conversation before it, as
       CollabLLM trains online on its multiturn dataset. Openings alone would never train the
       answer that follows a clarification, which MR's futures reward. */
    memset(&pc, 0, sizeof pc);
    pc.task_desc = task_desc();
    if (cllm_online_prompts_read(&prompts, path("records_w2.jsonl"), &pc, &err) != CLLM_OK) die("prompts", &err);
    demo_mr_config(&mr, 2, &lm.tok);
    local_assistant(&future, &lm, 300 + (uint64_t)method, T_GENERATE);
    memset(&ro, 0, sizeof ro);
    ro.gen.sampler.temperature = T_GENERATE;
    ro.gen.max_new_tokens = real.model_dir ? 256 : MAX_NEW_TOKENS;
    ro.mr = &mr;
    ro.user = &sim;
    ro.future = &future.assistant;
    if (method == ONLINE_DPO) {
        cllm_online_dpo_config dc;
        memset(&dc, 0, sizeof dc);
        dc.rollout = ro;
        if (!real.model_dir) {
            dc.beta = ONLINE_DPO_BETA;
            dc.rpo_alpha = ONLINE_DPO_RPO;
        }
        tc = train_config(ONLINE_DPO_LR, run_size.online_epochs, 5e-6, name, start_dir);
        rc = cllm_train_online_dpo(&lm, LORA(&lora), real.model_dir ? NULL : &ref, &prompts, &dc, &tc, &err);
    } else {
        cllm_ppo_config ppo;
        memset(&ppo, 0, sizeof ppo);                     /* TRL's defaults: k1, kl 0.05, 4 epochs */
        ppo.rollout = ro;
        tc = train_config(PPO_LR, run_size.online_epochs, 2e-6, name, start_dir);
        rc = cllm_train_ppo(&lm, LORA(&lora), real.model_dir ? NULL : &ref, NULL, &prompts, &ppo, &tc, &err);
    }
    if (rc != CLLM_OK) die(name, &err);
    snprintf(result, size, "%s/final", path(name));
    cllm_online_prompts_free(&prompts);
    cllm_lora_free(&lora);
    cllm_model_free(&ref);
    cllm_local_lm_free(&lm);
}

/* ---- outputs: the table, the claims, summary.json, curves.svg ------------------------------------- */

enum { ROW_BASE, ROW_W0, ROW_OFFLINE, ROW_ONLINE, ROW_PPO, N_ROWS };
#define N_COLUMNS 7

/* A row's columns as the table shows them (percentages, tokens per conversation). */
static void row_columns(const row *r, double v[N_COLUMNS]) {
    v[0] = 100 * r->success;
    v[1] = 100 * r->success_under;
    v[2] = 100 * r->success_spec;
    v[3] = r->avg_tokens;
    v[4] = 100 * r->clarify_rate;
    v[5] = 100 * r->unnecessary_rate;
    v[6] = r->itr;
}

/* Appends text right-aligned in `width` columns (a '±' is two bytes but one column). */
static int put_cell(char *buf, size_t cap, int k, int width, const char *text) {
    int shown = (int)strlen(text) - (strstr(text, "±") ? 1 : 0);
    return k + snprintf(buf + k, cap - (size_t)k, " %*s%s", width > shown ? width - shown : 0, "", text);
}

/* The table: one line per model; with sd, each cell is "mean ± sd". Returns its length. */
static int format_table(char *buf, size_t cap, const row *rows, const row *sd, int n) {
    static const char *head[2][N_COLUMNS] = {
        { "success", "under-spec", "fully-spec", "tokens", "asks when", "asks", "ITR" },
        { "(all)", "success", "success", "/conv", "needed", "needlessly", "" },
    };
    static const int width[N_COLUMNS] = { 9, 10, 10, 8, 9, 12, 6 };
    int k = 0, i, j, widen = sd ? 6 : 0;
    for (i = 0; i < 2; i++) {
        k += snprintf(buf + k, cap - (size_t)k, "%-28s", i == 0 ? "model" : "");
        for (j = 0; j < N_COLUMNS; j++) k = put_cell(buf, cap, k, width[j] + widen, head[i][j]);
        k += snprintf(buf + k, cap - (size_t)k, "\n");
    }
    for (i = 0; i < n; i++) {
        double v[N_COLUMNS], d[N_COLUMNS];
        row_columns(&rows[i], v);
        if (sd) row_columns(&sd[i], d);
        k += snprintf(buf + k, cap - (size_t)k, "%-28s", rows[i].label);
        for (j = 0; j < N_COLUMNS; j++) {
            char cell[48];
            if (isnan(v[j])) snprintf(cell, sizeof cell, "n/a");
            else if (sd) snprintf(cell, sizeof cell, "%.1f ± %.1f", v[j], d[j]);
            else snprintf(cell, sizeof cell, "%.1f", v[j]);
            k = put_cell(buf, cap, k, width[j] + widen, cell);
        }
        k += snprintf(buf + k, cap - (size_t)k, "\n");
    }
    return k;
}

static void write_table(const row *rows, int n) {
    char buf[8192];
    int k = format_table(buf, sizeof buf, rows, NULL, n);
    cllm_err err;
    fprintf(stdout, "\n%s\n", buf);
    if (cllm_write_file_atomic(path("table.txt"), buf, (size_t)k, &err) != CLLM_OK) die("table.txt", &err);
}

/* What the table must show on every seed (the paper's claims, as numbers): each CollabLLM row
   beats the base on under-specified success by 30 points, asks needlessly at most half as often,
   and has a higher ITR; the w = 0 ablation stays below each of them on under-specified success. */
typedef struct claim {
    const char *row, *what;
    double value, bound;        /* in the table's units */
    int holds;
} claim;
#define N_CLAIMS 12

static int check_claims(const row *rows, claim *c) {
    int r, n = 0, all = 1;
    double base[N_COLUMNS], w0[N_COLUMNS];
    row_columns(&rows[ROW_BASE], base);
    row_columns(&rows[ROW_W0], w0);
    for (r = ROW_OFFLINE; r <= ROW_PPO; r++) {
        double v[N_COLUMNS];
        row_columns(&rows[r], v);
        c[n++] = (claim){ rows[r].name, "under-specified success >= base + 30", v[1], base[1] + 30,
                          v[1] >= base[1] + 30 };
        c[n++] = (claim){ rows[r].name, "asks needlessly <= base / 2", v[5], base[5] / 2, v[5] <= base[5] / 2 };
        c[n++] = (claim){ rows[r].name, "ITR > base", v[6], base[6], v[6] > base[6] };
        c[n++] = (claim){ rows[r].name, "under-specified success > the w = 0 ablation's", v[1], w0[1], v[1] > w0[1] };
    }
    for (r = 0; r < n; r++) all &= c[r].holds;
    return all;
}

static int format_claims(char *buf, size_t cap, const claim *c, int all) {
    int k = snprintf(buf, cap, "the paper's claims on this seed: %s\n", all ? "all hold" : "NOT ALL HOLD");
    int i;
    for (i = 0; i < N_CLAIMS; i++)
        k += snprintf(buf + k, cap - (size_t)k, "  %-4s %-12s %-48s %6.1f  (bound %.1f)\n", c[i].holds ? "ok" : "FAIL",
                      c[i].row, c[i].what, c[i].value, c[i].bound);
    return k;
}

static void add_rate(cJSON *o, const char *key, double v) {
    if (isnan(v)) cJSON_AddNullToObject(o, key);
    else cJSON_AddNumberToObject(o, key, v);
}

/* A row's fields in summary.json (rates in [0, 1]; NaN, n/a, as null). */
static cJSON *row_json(const row *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", r->name);
    add_rate(o, "success", r->success);
    add_rate(o, "success_underspecified", r->success_under);
    add_rate(o, "success_specified", r->success_spec);
    add_rate(o, "avg_tokens", r->avg_tokens);
    add_rate(o, "clarify_rate", r->clarify_rate);
    add_rate(o, "unnecessary_question_rate", r->unnecessary_rate);
    add_rate(o, "itr", r->itr);
    return o;
}

/* The claims as JSON: {"hold": bool, "checks": [{"row", "claim", "value", "bound", "holds"}]}. */
static cJSON *claims_json(const row *rows) {
    claim c[N_CLAIMS];
    cJSON *o = cJSON_CreateObject(), *arr;
    int i, all = check_claims(rows, c);
    cJSON_AddBoolToObject(o, "hold", all);
    arr = cJSON_AddArrayToObject(o, "checks");
    for (i = 0; i < N_CLAIMS; i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "row", c[i].row);
        cJSON_AddStringToObject(x, "claim", c[i].what);
        cJSON_AddNumberToObject(x, "value", c[i].value);
        cJSON_AddNumberToObject(x, "bound", c[i].bound);
        cJSON_AddBoolToObject(x, "holds", c[i].holds);
        cJSON_AddItemToArray(arr, x);
    }
    return o;
}

static void write_json(const char *name, cJSON *o) {
    char *text = cJSON_Print(o);
    cllm_err err;
    if (cllm_write_file_atomic(path(name), text, strlen(text), &err) != CLLM_OK) die(name, &err);
    cJSON_free(text);
    cJSON_Delete(o);
}

/* summary.json: the seed, the time, every row; and what the reward was and whether the claims hold. */
static void write_summary(const row *rows, int n, double seconds) {
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "rows"), *reward;
    int i;
    cJSON_AddNumberToObject(o, "seed", (double)seed);
    cJSON_AddNumberToObject(o, "seconds", seconds);
    for (i = 0; i < n; i++) cJSON_AddItemToArray(arr, row_json(&rows[i]));
    cJSON_AddBoolToObject(o, "quick", run_size.train_tasks != demo_full.train_tasks);
    reward = cJSON_AddObjectToObject(o, "reward");
    cJSON_AddStringToObject(reward, "formula", "success + w_itr * itr - min(lambda * tokens, 1)");
    cJSON_AddNumberToObject(reward, "w_itr", real.model_dir && !real.judge_model ? 0 : W_ITR);
    cJSON_AddNumberToObject(reward, "lambda", real.model_dir ? 5e-4 : LAMBDA);
    cJSON_AddStringToObject(reward, "itr", real.model_dir ? "the API judge's interactivity in [0, 1]"
                                                          : "the conversation-only judge's 1-3 score / 3");
    if (!real.model_dir && n == N_ROWS) cJSON_AddItemToObject(o, "claims", claims_json(rows));
    write_json("summary.json", o);
}

/* ---- curves.svg: every training run's logged metrics, and the five models side by side -------- */

/* One panel: a metric of a run's metrics.jsonl (its name as TRL logs it) against the step. */
typedef struct curve { const char *metric, *dir, *what; } curve;

static int read_curve(const char *dir, const char *metric, double *x, double *y, int max) {
    char file[1024], *line = NULL;
    size_t cap = 0;
    long len;
    int n = 0;
    FILE *f;
    snprintf(file, sizeof file, "%s/%s/metrics.jsonl", out_dir, dir);
    f = fopen(file, "rb");
    while (f && n < max && (len = cllm_read_line(f, &line, &cap)) >= 0) {
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len), *v = cJSON_GetObjectItem(o, metric);
        const cJSON *step = cJSON_GetObjectItem(o, "step");
        if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
            x[n] = cJSON_IsNumber(step) ? step->valuedouble : n + 1;
            y[n++] = v->valuedouble;
        }
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    free(line);
    return n;
}

/* The SVG text, grown as it is written. */
typedef struct svg { char *text; size_t len, cap; } svg;

static void svg_add(svg *s, const char *fmt, ...) {
    va_list ap;
    int need;
    va_start(ap, fmt);
    need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0) return;
    if (s->len + (size_t)need + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 1 << 16;
        char *grown;
        while (s->len + (size_t)need + 1 > cap) cap *= 2;
        if (!(grown = (char *)realloc(s->text, cap))) return;
        s->text = grown;
        s->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(s->text + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
    s->len += (size_t)need;
}

/* A tick spacing of 1, 2 or 5 times a power of ten giving about `ticks` ticks over span. */
static double nice_step(double span, int ticks) {
    double raw = span / ticks, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

/* A plot area and its mapping from data to pixels (y on a log10 scale when log is set). */
typedef struct plot { double x0, y0, w, h, xlo, xhi, ylo, yhi; int log; } plot;

static double plot_x(const plot *p, double x) { return p->x0 + (x - p->xlo) / (p->xhi - p->xlo) * p->w; }
static double plot_y(const plot *p, double y) {
    double v = p->log ? log10(y) : y;
    return p->y0 + p->h - (v - p->ylo) / (p->yhi - p->ylo) * p->h;
}

/* Grid lines, ticks and labels on both axes; the zero line when 0 is in range. */
static void draw_axes(svg *s, const plot *p, int integer_x) {
    double step, v;
    step = nice_step(p->xhi - p->xlo, 5);
    if (integer_x && step < 1) step = 1;
    for (v = ceil(p->xlo / step) * step; v <= p->xhi + 1e-9 * step; v += step) {
        double x = plot_x(p, v);
        svg_add(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n",
                x, p->y0, x, p->y0 + p->h);
        svg_add(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\"/>\n",
                x, p->y0 + p->h, x, p->y0 + p->h + 4);
        svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x, p->y0 + p->h + 15, v);
    }
    if (p->log) {                                  /* decades, with 2 and 5 when there are few */
        int d, m, few = p->yhi - p->ylo <= 2.5;
        for (d = (int)floor(p->ylo); d <= (int)ceil(p->yhi); d++) {
            for (m = 1; m <= 9; m++) {
                double e = d + log10((double)m), y;
                int major = m == 1, labelled = major || (few && (m == 2 || m == 5));
                if (e < p->ylo - 1e-9 || e > p->yhi + 1e-9) continue;
                y = p->y0 + p->h - (e - p->ylo) / (p->yhi - p->ylo) * p->h;
                svg_add(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", p->x0, y,
                        p->x0 + p->w, y, major ? "#dcdcdc" : "#f0f0f0");
                if (labelled)
                    svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                            p->x0 - 6, y + 4, m * pow(10, d));
            }
        }
    } else {
        step = nice_step(p->yhi - p->ylo, 5);
        for (v = ceil(p->ylo / step - 1e-9) * step; v <= p->yhi + 1e-9 * step; v += step) {
            double y = plot_y(p, v);
            if (fabs(v) < 1e-12 * step) v = 0;
            svg_add(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n",
                    p->x0, y, p->x0 + p->w, y);
            svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", p->x0 - 6, y + 4, v);
        }
        if (p->ylo < 0 && p->yhi > 0)
            svg_add(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>\n", p->x0, plot_y(p, 0),
                    p->x0 + p->w, plot_y(p, 0));
    }
    svg_add(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#555\"/>\n",
            p->x0, p->y0, p->w, p->h);
}

static void draw_line(svg *s, const plot *p, const double *x, const double *y, int n, const char *style) {
    int i;
    svg_add(s, "<polyline fill=\"none\" %s points=\"", style);
    for (i = 0; i < n; i++) svg_add(s, "%.1f,%.1f ", plot_x(p, x[i]), plot_y(p, y[i]));
    svg_add(s, "\"/>\n");
}

/* A run's metric, raw (faint) and smoothed as TensorBoard smooths: a debiased exponential moving
   average with weight w (TensorBoard's 0.6 for short runs, up to 0.98 so it spans ~20 steps). */
static void draw_curve(svg *s, const curve *c, double left, double top, double width, double height) {
    static double x[100000], y[100000], ema[100000];
    int n = read_curve(c->dir, c->metric, x, y, 100000), i, positive = 1;
    double lo = 1e300, hi = -1e300, w = fmin(0.98, fmax(0.6, 1 - 20.0 / n)), last = 0, pad;
    plot p;
    svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" font-weight=\"bold\" font-size=\"13\">%s</text>\n",
            left + 8, top + 16, c->metric);
    svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">%s</text>\n", left + 8, top + 31, c->what);
    if (n == 0) {
        svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#999\">not logged</text>\n", left + width / 2, top + height / 2);
        return;
    }
    for (i = 0; i < n; i++) {
        lo = y[i] < lo ? y[i] : lo;
        hi = y[i] > hi ? y[i] : hi;
        positive &= y[i] > 0;
        last = last * w + (1 - w) * y[i];
        ema[i] = last / (1 - pow(w, i + 1));
    }
    memset(&p, 0, sizeof p);
    p.x0 = left + 62;
    p.y0 = top + 42;
    p.w = width - 80;
    p.h = height - 82;
    p.xlo = x[0] < x[n - 1] ? x[0] : 0;
    p.xhi = x[n - 1] > p.xlo ? x[n - 1] : p.xlo + 1;
    p.log = positive && hi / lo >= 30;                    /* spans decades */
    if (p.log) {
        p.ylo = log10(lo);
        p.yhi = log10(hi);
        pad = 0.04 * (p.yhi - p.ylo);
    } else {
        if (hi - lo < 1e-12) {
            lo -= 0.5;
            hi += 0.5;
        }
        pad = nice_step(hi - lo, 5);
        p.ylo = floor(lo / pad) * pad;
        p.yhi = ceil(hi / pad) * pad;
        pad = 0;
    }
    p.ylo -= pad;
    p.yhi += pad;
    draw_axes(s, &p, 1);
    draw_line(s, &p, x, y, n, "stroke=\"#1f77b4\" stroke-opacity=\"0.25\" stroke-width=\"1\"");
    draw_line(s, &p, x, ema, n, "stroke=\"#1f77b4\" stroke-width=\"1.8\"");
    svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\">step</text>\n",
            p.x0 + p.w / 2, p.y0 + p.h + 30);
    svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555\">%sEMA %.2f</text>\n",
            p.x0 + p.w, p.y0 + p.h + 30, p.log ? "log scale, " : "", w);
}

/* The five models on the table's three columns of the claim, as grouped bars (percent). */
static void draw_bars(svg *s, const row *rows, int n_rows, double left, double top, double width, double height) {
    static const char *colors[] = { "#7f7f7f", "#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd" };
    static const char *groups[] = { "under-specified success", "asks needlessly", "ITR (conversation-only judge)" };
    static const int column[] = { 1, 5, 6 };
    double gw, bw;
    int g, r, tick;
    plot p;
    memset(&p, 0, sizeof p);
    p.x0 = left + 62;
    p.y0 = top + 42;
    p.w = width - 330;
    p.h = height - 82;
    p.xlo = 0;
    p.xhi = 1;
    p.ylo = 0;
    p.yhi = 100;
    svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" font-weight=\"bold\" font-size=\"13\">"
               "the models on the held-out tasks (%%)</text>\n",
            left + 8, top + 16);
    svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">higher is better, except asks needlessly</text>\n",
            left + 8, top + 31);
    for (tick = 0; tick <= 100; tick += 20) {
        double y = plot_y(&p, tick);
        svg_add(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n",
                p.x0, y, p.x0 + p.w, y);
        svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n", p.x0 - 6, y + 4, tick);
    }
    gw = p.w / 3;
    bw = gw * 0.8 / n_rows;
    for (g = 0; g < 3; g++) {
        svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                p.x0 + (g + 0.5) * gw, p.y0 + p.h + 16, groups[g]);
        for (r = 0; r < n_rows; r++) {
            double v[N_COLUMNS], bx = p.x0 + g * gw + gw * 0.1 + r * bw;
            row_columns(&rows[r], v);
            if (isnan(v[column[g]])) continue;
            svg_add(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
                    bx + 1, plot_y(&p, v[column[g]]), bw - 2, p.y0 + p.h - plot_y(&p, v[column[g]]), colors[r % 6]);
            svg_add(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"9\">%.0f</text>\n", bx + bw / 2,
                    plot_y(&p, v[column[g]]) - 3, v[column[g]]);
        }
    }
    svg_add(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#555\"/>\n",
            p.x0, p.y0, p.w, p.h);
    for (r = 0; r < n_rows; r++) {
        double ly = p.y0 + 10 + r * 20;
        svg_add(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n",
                p.x0 + p.w + 20, ly - 10, colors[r % 6]);
        svg_add(s, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", p.x0 + p.w + 38, ly, rows[r].label);
    }
}

static void write_curves(const curve *curves, int n_curves, const row *rows, int n_rows) {
    enum { W = 420, H = 270, COLS = 3, BARS_H = 300 };
    int c, n_grid = (n_curves + COLS - 1) / COLS;
    svg s;
    cllm_err err;
    memset(&s, 0, sizeof s);
    svg_add(&s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
                "font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            COLS * W, n_grid * H + BARS_H);
    for (c = 0; c < n_curves; c++) draw_curve(&s, &curves[c], (c % COLS) * W, (c / COLS) * H, W, H);
    draw_bars(&s, rows, n_rows, 0, n_grid * H, COLS * W, BARS_H);
    svg_add(&s, "</svg>\n");
    if (!s.text) fprintf(stderr, "demo: curves.svg: out of memory\n"), exit(1);
    if (cllm_write_file_atomic(path("curves.svg"), s.text, s.len, &err) != CLLM_OK) die("curves.svg", &err);
    free(s.text);
}

/* ---- main ------------------------------------------------------------------------------------------ */

static const flag_spec demo_flags[] = {
    { .name = "--seed", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 9007199254740992.0, .def = "1",
      .help = "seed of the tasks, the models and the sampling" },
    { .name = "--seeds", .type = FLAG_INT, .metavar = "K", .min = 1, .max = 1000, .def = "1",
      .help = "run K seeds (--seed, --seed + 1, ...), each in DIR/seed-N, and report their mean and std" },
    { .name = "--quick", .type = FLAG_SWITCH,
      .help = "every stage on a few tasks, in seconds: a test of the pipeline (its numbers mean nothing)" },
    { .name = "--out", .type = FLAG_RUN_DIR, .metavar = "DIR", .def = "build/demo",
      .help = "every model, the data of each stage (data_fmt/), summary.json, table.txt, curves.svg" },
    { .name = "--overwrite", .type = FLAG_SWITCH,
      .help = "replace the run in an existing --out (it is removed first, so runs never mix)" },
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
    "offline DPO, online DPO and PPO on it, and evaluates every model; the table goes to stdout and DIR/table.txt, "
    "with the claims it must show (summary.json). DIR holds one run: a changed seed or setting needs --overwrite, "
    "which removes the old run first. --seeds K runs K seeds, each in DIR/seed-N, then prints each table and the "
    "mean +- std over the seeds (DIR/seeds.txt, DIR/seeds.json; make demo-seeds).\n"
    "With --model and the task files the same pipeline runs on a real model and endpoint (see examples/demo.c).",
    NULL, { &demo_group, &demo_real_group, NULL },
};

/* A run that fails (die() exits) leaves no empty output directory behind. */
static run_files demo_files;
static int demo_finished, n_seeds = 1;
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
    if (real.model_dir && flag_on(&fl, "--quick"))
        return !flags_fail(fl.cmd, "--quick applies to the bundled task (the real mode's size is --limit)");
    real.judge_model = flag_text(&fl, "--judge-model");
    real.base_url = flag_text(&fl, "--base-url");
    real.task_desc = flag_text(&fl, "--task-desc");
    real.limit = (int)flag_number(&fl, "--limit");
    seed = (uint64_t)flag_number(&fl, "--seed");
    n_seeds = (int)flag_number(&fl, "--seeds");
    run_size = flag_on(&fl, "--quick") ? demo_quick : demo_full;
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
    memset(&cc, 0, sizeof cc);
    memset(&sc, 0, sizeof sc);
    memset(&jc, 0, sizeof jc);
    cc.base_url = real.base_url;                         /* NULL: $OPENAI_BASE_URL; key: $OPENAI_API_KEY */
    if (cllm_client_init(&real.client, &cc, &err) != CLLM_OK) die("client", &err);
    sc.params.model = real.user_model;
    sc.params.seed = (long long)seed;
    cllm_llm_sim_init(&real.sim, &real.client, &sc);
    jc.params.model = real.judge_model;
    if (real.judge_model) cllm_judge_init(&real.judge, &real.client, &jc);
    if (cllm_tasks_read_jsonl(real.train, &train_tasks, &n_train, &err) != CLLM_OK ||
        cllm_tasks_read_jsonl(real.test, &test_tasks, &n_test, &err) != CLLM_OK) die("tasks", &err);
    n_train_read = n_train;
    n_test_read = n_test;
    if (real.limit > 0 && real.limit < n_train) n_train = real.limit;
    if (real.limit > 0 && real.limit < n_test) n_test = real.limit;
    fprintf(stderr, "   base %s; %d training and %d test tasks; simulator %s, judge %s\n",
            real.model_dir, n_train, n_test, real.user_model,
            real.judge_model ? real.judge_model : "none (exact match)");
}

/* One seed's whole run into out_dir; rows gets the table's N_ROWS lines. */
static void run_seed(row *rows) {
    static const curve curves[] = {
        { "loss", "base", "base: SFT from scratch" },
        { "loss", "dpo_w0_sft", "w=0: SFT on the conversations MR picked" },
        { "rewards/margins", "dpo_w0", "w=0 (ablation): offline DPO" },
        { "loss", "dpo_w2_sft", "w=2: SFT on the conversations MR picked" },
        { "rewards/margins", "dpo_w2", "w=2 (CollabLLM): offline DPO" },
        { "rewards/accuracies", "dpo_w2", "w=2 (CollabLLM): offline DPO" },
        { "reward", "online_dpo", "online DPO (from offline DPO): mean MR of the samples" },
        { "objective/scores", "ppo", "PPO (from offline DPO): mean MR of the rollouts" },
        { "objective/kl", "ppo", "PPO: KL to its starting model" },
    };
    const char **texts;
    char base_dir[1024], odpo[1024], ppo[1024];   /* path() recycles its buffers: copies */
    offline_models w0, w2;
    cllm_err err;
    int n_rows = 0, vocab, n_texts, skip = real.model_dir ? 1 : 0;
    t_start = now();
    fprintf(stderr, "CollabLLM demo, seed %llu, output in %s/\n", (unsigned long long)seed, out_dir);

    if (real.model_dir) {
        stage("1-2. a real model, API user simulator, task files");
        setup_real();
        snprintf(base_dir, sizeof base_dir, "%s", real.model_dir);
    } else {
        stage("1. tasks (data_fmt/task.md) and a tokenizer trained on the task family");
        if (demo_write_tasks(path("tasks_train.jsonl"), seed, run_size.train_tasks, &err) != CLLM_OK ||
            demo_write_tasks(path("tasks_test.jsonl"), seed + 1000003, run_size.test_tasks, &err) != CLLM_OK) {
            die("tasks", &err);
        }
        if (cllm_tasks_read_jsonl(path("tasks_train.jsonl"), &train_tasks, &n_train, &err) != CLLM_OK ||
            cllm_tasks_read_jsonl(path("tasks_test.jsonl"), &test_tasks, &n_test, &err) != CLLM_OK) die("tasks", &err);
        n_train_read = n_train;
        n_test_read = n_test;
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
    offline_dpo(base_dir, "w0", "dpo_w0", &w0);
    offline_dpo(base_dir, "w2", "dpo_w2", &w2);

    stage("6. online DPO and PPO from offline DPO, MR (w = 2) on the fly");
    online(w2.dpo, ONLINE_DPO, "online_dpo", odpo, sizeof odpo);
    online(w2.dpo, PPO, "ppo", ppo, sizeof ppo);

    stage("7. evaluate");
    evaluate(w0.dpo, "w0_dpo", "Offline DPO, w=0 (ablation)", &rows[n_rows++]);
    evaluate(w2.dpo, "offline_dpo", "CollabLLM offline DPO (w=2)", &rows[n_rows++]);
    evaluate(odpo, "online_dpo", "CollabLLM online DPO (w=2)", &rows[n_rows++]);
    evaluate(ppo, "ppo", "CollabLLM PPO (w=2)", &rows[n_rows++]);

    stage("results (table.txt, summary.json, curves.svg)");
    write_table(rows, n_rows);
    if (!real.model_dir) {
        char buf[4096];
        claim c[N_CLAIMS];
        format_claims(buf, sizeof buf, c, check_claims(rows, c));
        fprintf(stdout, "%s\n", buf);
    }
    write_summary(rows, n_rows, now() - t_start);
    write_curves(curves + skip, (int)(sizeof curves / sizeof curves[0]) - skip, rows, n_rows);
    fprintf(stderr, "demo: seed %llu done in %.0fs\n", (unsigned long long)seed, now() - t_start);
    cllm_tasks_free(train_tasks, n_train_read);
    cllm_tasks_free(test_tasks, n_test_read);
    if (real.model_dir) cllm_client_free(&real.client);
}

/* --seeds: every seed's table and claims again, then the mean ± std over the seeds (the sample
   standard deviation, n - 1), to stdout, DIR/seeds.txt and DIR/seeds.json. */
static void write_sweep(row (*runs)[N_ROWS], const uint64_t *seeds, int n) {
    static char buf[1 << 16];
    row mean[N_ROWS], sd[N_ROWS];
    cJSON *o = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(o, "seeds");
    cJSON *hold = cJSON_AddArrayToObject(o, "claims_hold"), *jm, *js;
    cllm_err err;
    int k = 0, s, r, j;
    for (s = 0; s < n; s++) {
        k += snprintf(buf + k, sizeof buf - (size_t)k, "seed %llu (seed-%llu/)\n", (unsigned long long)seeds[s],
                      (unsigned long long)seeds[s]);
        k += format_table(buf + k, sizeof buf - (size_t)k, runs[s], NULL, N_ROWS);
        cJSON_AddItemToArray(list, cJSON_CreateNumber((double)seeds[s]));
        if (!real.model_dir) {
            claim c[N_CLAIMS];
            int all = check_claims(runs[s], c);
            k += format_claims(buf + k, sizeof buf - (size_t)k, c, all);
            cJSON_AddItemToArray(hold, cJSON_CreateBool(all));
        }
        k += snprintf(buf + k, sizeof buf - (size_t)k, "\n");
    }
    for (r = 0; r < N_ROWS; r++) {
        mean[r] = sd[r] = runs[0][r];
        for (j = 0; j < N_FIELDS; j++) {
            double sum = 0, sq = 0, *m = FIELD(&mean[r], j);
            for (s = 0; s < n; s++) sum += *FIELD(&runs[s][r], j);
            *m = sum / n;
            for (s = 0; s < n; s++) sq += (*FIELD(&runs[s][r], j) - *m) * (*FIELD(&runs[s][r], j) - *m);
            *FIELD(&sd[r], j) = n > 1 ? sqrt(sq / (n - 1)) : 0;
        }
    }
    k += snprintf(buf + k, sizeof buf - (size_t)k, "mean ± std over seeds %llu-%llu (%d runs; std with n - 1)\n",
                  (unsigned long long)seeds[0], (unsigned long long)seeds[n - 1], n);
    k += format_table(buf + k, sizeof buf - (size_t)k, mean, sd, N_ROWS);
    fprintf(stdout, "\n%s", buf);
    if (cllm_write_file_atomic(path("seeds.txt"), buf, (size_t)k, &err) != CLLM_OK) die("seeds.txt", &err);
    jm = cJSON_AddArrayToObject(o, "mean");
    js = cJSON_AddArrayToObject(o, "std");
    for (r = 0; r < N_ROWS; r++) {
        cJSON_AddItemToArray(jm, row_json(&mean[r]));
        cJSON_AddItemToArray(js, row_json(&sd[r]));
    }
    write_json("seeds.json", o);
}

int main(int argc, char **argv) {
    static row runs[1000][N_ROWS];
    static uint64_t seeds[1000];
    char top[1024], dir[1100];
    uint64_t first_seed;
    int status, s;
    if (!demo_flags_read(argc, argv, &status)) return status;
    if (n_seeds == 1) run_seed(runs[0]);
    else {
        snprintf(top, sizeof top, "%s", out_dir);
        first_seed = seed;
        for (s = 0; s < n_seeds; s++) {
            seeds[s] = first_seed + (uint64_t)s;
            snprintf(dir, sizeof dir, "%s/seed-%llu", top, (unsigned long long)seeds[s]);
            if (mkdir(dir, 0755) != 0) {
                fprintf(stderr, "demo: cannot create %s\n", dir);
                return 1;
            }
            out_dir = dir;
            seed = seeds[s];
            run_seed(runs[s]);
        }
        out_dir = top;
        write_sweep(runs, seeds, n_seeds);
    }
    demo_finished = 1;
    return 0;
}
