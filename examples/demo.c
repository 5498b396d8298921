/* demo.c - `make demo`: CollabLLM's central result, offline, in a few minutes on 2 CPU cores.

   Demonstrates the whole method on the bundled collaborative task family (demo_task.h): a tiny
   model is trained from scratch to a base policy that sometimes asks and sometimes guesses; the
   multiturn-aware reward (MR) scores candidate responses by simulating the next turns with a
   user simulator that knows the hidden goal; and training on MR (forward window w = 2) is
   compared with training on the immediate reward (w = 0), as in the paper's ablation.

   Every stage goes through the same code paths a real model does: a Hugging Face directory
   (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a ChatML template),
   the tokenizer and template with assistant masks, KV-cache sampling, the trainers and the
   evaluation loop. Outputs in build/demo/: the model directories, the data files of each stage
   (data_fmt/), summary.json, table.txt and curves.svg.

     build/demo [--seed N] [--out DIR] [--fast]        (make demo SEED=N)               */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "demo_task.h"
#include "demo_bpe.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- settings: one place, documented ------------------------------------------------------- */

#define N_TRAIN_TASKS   600    /* tasks for SFT, data generation and online training          */
#define N_TEST_TASKS    200    /* held out: half under-specified, half fully specified        */
#define SFT_ROWS_PER_TASK 2    /* conversations per training task in the base's SFT mixture   */
#define P_ASK           0.3    /* how often the base mixture asks, needed or not              */
#define MAX_TURNS       3      /* user turns per conversation (evaluation, data generation)   */

static const char *out_dir = "build/demo";
static uint64_t seed = 1;
static double t_start;
static double env_num(const char *name, double def) { const char *v = getenv(name); return v ? atof(v) : def; }

static double now(void) { return cllm__now(); }

static void stage(const char *what) {
    fprintf(stderr, "\n== [%6.1fs] %s\n", now() - t_start, what);
}

static int die(const char *where, const cllm_err *err) {
    fprintf(stderr, "demo: %s: %s\n", where, err->msg);
    exit(1);
}

static char *path(const char *name) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", out_dir, name);
    return buf[k];
}

/* ---- stage 1: tasks and the tokenizer -------------------------------------------------------- */

/* Every sentence the family can produce, so the tokenizer has a token for every word. */
static int corpus(const char ***out) {
    static const char *buf[4096];
    static char store[4096][200];
    int n = 0, f, v;
    for (f = 0; f < DEMO_N_FAMILIES; f++) {
        const demo_family *d = &demo_families[f];
        buf[n++] = d->vague; buf[n++] = d->question;
        for (v = 0; v < d->n_values; v++) {
            const char *fmts[4] = { d->full, d->reveal, d->restate, d->answer };
            int k;
            for (k = 0; k < 4; k++) { snprintf(store[n], sizeof store[n], fmts[k], d->values[v]); buf[n] = store[n]; n++; }
        }
    }
    buf[n++] = "user"; buf[n++] = "assistant"; buf[n++] = "system";
    *out = buf;
    return n;
}

/* ---- the models' evaluation (the table's columns) --------------------------------------------- */

typedef struct row {
    const char *name;
    double success, success_under, success_spec, avg_tokens, clarify_rate, unnecessary_rate, itr;
} row;

static cllm_task *test_tasks;
static int n_test;

static void evaluate(const char *model_dir, const char *name, row *r) {
    cllm_local_lm lm;
    cllm_local_assistant asst;
    cllm_local_assistant_config ac;
    cllm_eval_config ec;
    cllm_eval_summary sum;
    cllm_metric metrics[3];
    demo_sim_ctx sctx;
    cllm_user_sim sim = { demo_user_turn, NULL, NULL };
    cllm_err err;
    char details[1024];
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    long len;
    double n_u = 0, n_s = 0;
    memset(r, 0, sizeof *r);
    r->name = name;
    if (cllm_local_lm_load(&lm, model_dir, &err) != CLLM_OK) die(model_dir, &err);
    memset(&ac, 0, sizeof ac);
    ac.gen.sampler.temperature = 1.0f;                 /* the policy's own distribution */
    ac.gen.sampler.seed = seed * 7919 + 17;
    ac.gen.max_new_tokens = 24;
    cllm_local_assistant_init(&asst, &lm, &ac);
    sctx.tasks = test_tasks; sctx.n_tasks = n_test; sim.ctx = &sctx;
    memset(metrics, 0, sizeof metrics);
    cllm_metric_builtin("exact_match", &metrics[0], &err); metrics[0].name = "success";
    metrics[1].name = "asked"; metrics[1].fn = demo_metric_asked;
    metrics[2].name = "interactivity"; metrics[2].fn = demo_metric_interactivity;
    memset(&ec, 0, sizeof ec);
    ec.max_turns = MAX_TURNS; ec.task_desc = "ordering"; ec.metrics = metrics; ec.n_metrics = 3;
    ec.tokens.count = cllm_tokenizer_count; ec.tokens.ctx = &lm.tok;
    snprintf(details, sizeof details, "%s/eval_%s.jsonl", out_dir, name);
    if (cllm_eval_run(&ec, &sim, &asst.assistant, test_tasks, n_test, details, &sum, &err) != CLLM_OK) die("eval", &err);
    /* split by kind from the per-task details */
    f = fopen(details, "rb");
    while (f && (len = cllm__read_line(f, &line, &cap)) >= 0) {
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len), *m = cJSON_GetObjectItem(o, "metrics");
        int under = cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "single_turn_metadata"), "underspecified"));
        double ok = cJSON_GetObjectItem(m, "success")->valuedouble, asked = cJSON_GetObjectItem(m, "asked")->valuedouble;
        if (under) { r->success_under += ok; r->clarify_rate += asked; n_u++; }
        else { r->success_spec += ok; r->unnecessary_rate += asked; n_s++; }
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    free(line);
    r->success = sum.metric_means[0];
    r->itr = 100 * sum.metric_means[2];
    r->avg_tokens = 1000 * sum.tokens_k;
    if (n_u) { r->success_under /= n_u; r->clarify_rate /= n_u; }
    if (n_s) { r->success_spec /= n_s; r->unnecessary_rate /= n_s; }
    fprintf(stderr, "   %-12s success %.3f (under-specified %.3f, specified %.3f), asks when needed %.3f, needlessly %.3f, %.1f tokens\n",
            name, r->success, r->success_under, r->success_spec, r->clarify_rate, r->unnecessary_rate, r->avg_tokens);
    cllm_eval_summary_free(&sum);
    cllm_local_lm_free(&lm);
}

/* ---- stage 4: data generation with MR, and the pairs ------------------------------------------ */

#define N_GEN_TASKS ((int)env_num("NGEN", 200))       /* training tasks whose conversations are generated and scored */


/* The reward of the demo: R* = success + w_int * interactivity - min(lambda * tokens, 1). */
static void demo_mr_config(cllm_mr_config *mr, cllm_metric *metrics, int window, cllm_tokenizer *tok) {
    cllm_err err;
    memset(metrics, 0, 2 * sizeof *metrics);
    cllm_metric_builtin("exact_match", &metrics[0], &err); metrics[0].name = "success"; metrics[0].weight = 1;
    metrics[1].name = "interactivity"; metrics[1].fn = demo_metric_interactivity; metrics[1].weight = env_num("WINT", 0.0);
    cllm_mr_config_init(mr, CLLM_MR_PRESET_MATH);
    mr->window = window;
    mr->samples = window ? 3 : 1;          /* the immediate reward has no future to sample */
    mr->lambda = env_num("LAMBDA", 5e-3);
    mr->metrics = metrics; mr->n_metrics = 2;
    mr->tokens.count = cllm_tokenizer_count; mr->tokens.ctx = tok;
}

static void generate(const char *model_dir, const cllm_task *tasks, int n, int window, const char *records, const char *pairs) {
    cllm_local_lm lm;
    cllm_local_assistant asst;
    cllm_local_assistant_config ac;
    cllm_datagen_config dg;
    cllm_metric metrics[2];
    cllm_pairs_config pc;
    demo_sim_ctx sctx;
    cllm_user_sim sim = { demo_user_turn, NULL, NULL };
    cllm_err err;
    int n_sft, n_pairs;
    if (cllm_local_lm_load(&lm, model_dir, &err) != CLLM_OK) die(model_dir, &err);
    memset(&ac, 0, sizeof ac);
    ac.gen.sampler.temperature = 1.0f;
    ac.gen.sampler.seed = seed * 104729 + (uint64_t)window;
    ac.gen.max_new_tokens = 24;
    cllm_local_assistant_init(&asst, &lm, &ac);
    sctx.tasks = tasks; sctx.n_tasks = n; sim.ctx = &sctx;
    memset(&dg, 0, sizeof dg);
    demo_mr_config(&dg.mr, metrics, window, &lm.tok);
    dg.n_candidates = 2; dg.max_turns = MAX_TURNS; dg.task_desc = "ordering";
    remove(path(records));
    if (cllm_datagen_run(&dg, &sim, &asst.assistant, &asst.assistant, tasks, n < N_GEN_TASKS ? n : N_GEN_TASKS, path(records), &err) != CLLM_OK) die("generate-data", &err);
    memset(&pc, 0, sizeof pc);
    {
        char sft_name[256];
        snprintf(sft_name, sizeof sft_name, "sft_%s", pairs);
        if (cllm_build_pairs(path(records), &pc, path(sft_name), path(pairs), &n_sft, &n_pairs, &err) != CLLM_OK) die("build-pairs", &err);
    }
    fprintf(stderr, "   w = %d: %d DPO pairs (gap >= 0.02)\n", window, n_pairs);
    cllm_local_lm_free(&lm);
}

/* ---- stage 5: offline DPO ------------------------------------------------------------------------- */

static void dpo(const char *base_dir, const char *pairs, const char *name) {
    cllm_model m, ref;
    cllm_tokenizer tok;
    cllm_dpo_data d;
    cllm_train_config tc;
    cllm_dpo_config dc;
    cllm_err err;
    if (cllm_model_load(&m, base_dir, &err) != CLLM_OK || cllm_model_load(&ref, base_dir, &err) != CLLM_OK ||
        cllm_tokenizer_load(&tok, base_dir, &err) != CLLM_OK || cllm_dpo_data_load(&d, &tok, path(pairs), 0, &err) != CLLM_OK) die(pairs, &err);
    if (env_num("MRSFT", 0) > 0) {          /* the paper's lineage: SFT on the MR-chosen conversations first */
        cllm_sft_data sd;
        char rows[256], dir[256];
        snprintf(rows, sizeof rows, "sft_%s", pairs);
        snprintf(dir, sizeof dir, "%s_sft", name);
        if (cllm_sft_data_load(&sd, &tok, path(rows), 0, &err) != CLLM_OK) die(rows, &err);
        memset(&tc, 0, sizeof tc);
        tc.lr = env_num("MRSFT_LR", 1e-3); tc.epochs = (int)env_num("MRSFT", 0); tc.batch_size = 16; tc.seed = seed;
        tc.out_dir = path(dir); tc.log_every = 50; tc.model_dir = base_dir;
        if (cllm_train_sft(&m, NULL, &sd, &tc, &err) != CLLM_OK) die(dir, &err);
        cllm_sft_data_free(&sd);
    }
    memset(&tc, 0, sizeof tc);
    tc.lr = env_num("DPO_LR", 1e-3); tc.epochs = (int)env_num("DPO_EP", 4); tc.batch_size = 16; tc.seed = seed;
    tc.out_dir = path(name); tc.log_every = 20; tc.model_dir = base_dir;
    memset(&dc, 0, sizeof dc);
    dc.beta = env_num("BETA", 0.1);
    dc.rpo_alpha = env_num("RPO", 0);
    if (d.n == 0) { fprintf(stderr, "   %s: no pairs; the model stays the base\n", name); cllm_model_save(&m, path(name), CLLM_DT_F32, &err); }
    else if (cllm_train_dpo(&m, NULL, &ref, &d, &dc, &tc, &err) != CLLM_OK) die(name, &err);
    cllm_dpo_data_free(&d);
    cllm_tokenizer_free(&tok);
    cllm_model_free(&m); cllm_model_free(&ref);
}

/* ---- main -------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    cllm_err err;
    int i, n_train = 0, vocab;
    cllm_task *train_tasks = NULL;
    row rows[8];
    int n_rows = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_dir = argv[++i];
        else { fprintf(stderr, "usage: demo [--seed N] [--out DIR]\n"); return 2; }
    }
    t_start = now();
    cllm__mkdir("build", &err);
    if (cllm__mkdir(out_dir, &err) != CLLM_OK) die(out_dir, &err);

    stage("1. tasks and tokenizer");
    if (demo_write_tasks(path("tasks_train.jsonl"), seed, N_TRAIN_TASKS, &err) != CLLM_OK ||
        demo_write_tasks(path("tasks_test.jsonl"), seed + 1000003, N_TEST_TASKS, &err) != CLLM_OK) die("tasks", &err);
    if (cllm_tasks_read_jsonl(path("tasks_train.jsonl"), &train_tasks, &n_train, &err) != CLLM_OK ||
        cllm_tasks_read_jsonl(path("tasks_test.jsonl"), &test_tasks, &n_test, &err) != CLLM_OK) die("tasks", &err);
    cllm__mkdir(path("init"), &err);
    {
        const char **c;
        int n = corpus(&c);
        vocab = demo_bpe_train(c, n, 1000, path("init"), &err);
        if (vocab < 0) die("tokenizer", &err);
    }
    fprintf(stderr, "   %d training and %d test tasks; tokenizer of %d tokens\n", n_train, n_test, vocab);

    stage("2. a base model from scratch: SFT on a mixture that asks 30% of the time");
    if (!getenv("SKIP_SFT")) {
        cllm_config c;
        cllm_model m;
        cllm_tokenizer tok;
        cllm_sft_data d;
        cllm_train_config tc;
        cllm_rng rng;
        cJSON *rowj;
        char *text;
        FILE *f = fopen(path("sft_base.jsonl"), "wb");
        int r;
        memset(&c, 0, sizeof c);
        c.arch = CLLM_ARCH_LLAMA; c.vocab_size = (vocab + 7) / 8 * 8; c.hidden_size = 64; c.intermediate_size = 3 * c.hidden_size;
        c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = c.hidden_size / 4; c.max_position_embeddings = 256;
        c.rms_norm_eps = 1e-5f; c.rope_theta = 10000; c.tie_word_embeddings = 1; c.bos_token_id = -1;
        c.eos_token_ids[0] = 2; c.n_eos = 1;                          /* <|im_end|> */
        if (cllm_model_init(&m, &c, seed, &err) != CLLM_OK || cllm_model_save(&m, path("init"), CLLM_DT_F32, &err) != CLLM_OK) die("init", &err);
        cllm_rng_seed(&rng, seed * 31 + 7);
        for (i = 0; i < n_train; i++) for (r = 0; r < SFT_ROWS_PER_TASK; r++) {
            rowj = demo_sft_row(&rng, &train_tasks[i], P_ASK);
            text = cJSON_PrintUnformatted(rowj);
            fprintf(f, "%s\n", text);
            cJSON_free(text); cJSON_Delete(rowj);
        }
        fclose(f);
        if (cllm_tokenizer_load(&tok, path("init"), &err) != CLLM_OK || cllm_sft_data_load(&d, &tok, path("sft_base.jsonl"), 0, &err) != CLLM_OK) die("sft data", &err);
        memset(&tc, 0, sizeof tc);
        tc.lr = 5e-3; tc.epochs = 30;   /* the copying of the detail appears late: keep a margin */ tc.batch_size = 16; tc.seed = seed; tc.out_dir = path("sft"); tc.log_every = 50;
        tc.model_dir = path("init");
        if (cllm_train_sft(&m, NULL, &d, &tc, &err) != CLLM_OK) die("sft", &err);
        cllm_sft_data_free(&d);
        cllm_tokenizer_free(&tok);
        cllm_model_free(&m);
    }

    stage("3. evaluate the base model");
    evaluate(path("sft/final"), "base", &rows[n_rows++]);

    stage("4. MR-scored data from the base: forward window w = 2, and the immediate reward w = 0");
    generate(path("sft/final"), train_tasks, n_train, 2, "records_w2.jsonl", "pairs_w2.jsonl");
    generate(path("sft/final"), train_tasks, n_train, 0, "records_w0.jsonl", "pairs_w0.jsonl");

    stage("5. offline DPO from the base on each");
    dpo(path("sft/final"), "pairs_w2.jsonl", "dpo_w2");
    dpo(path("sft/final"), "pairs_w0.jsonl", "dpo_w0");
    evaluate(path("dpo_w0/final"), "w0_dpo", &rows[n_rows++]);
    evaluate(path("dpo_w2/final"), "offline_dpo", &rows[n_rows++]);
    fprintf(stderr, "\ndemo: %.1fs\n", now() - t_start);
    cllm_tasks_free(train_tasks, n_train);
    cllm_tasks_free(test_tasks, n_test);
    return 0;
}
