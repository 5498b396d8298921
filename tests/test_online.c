/* test_online.c - online DPO, PPO and GRPO with the multiturn-aware reward.
   - the hand-built TRL v0.19.1 PPO test vector through cllm_ppo_prepare and
     cllm_ppo_rollout_loss (the plumbing the trainer runs), and TRL's pad == eos semantics;
   - cllm_grpo_loss against torch (tests/gen_online.py) with ratios != 1, k3 and every
     aggregation, and its gradient by finite differences;
   - prompts: tasks -> openings of a callback simulator (cached, reused, a stale cache refused),
     records -> one prompt per (conv_id, turn_id), data_fmt/train_prompts.example.jsonl;
   - a tiny model whose reward is scripted (a callback simulator, MR with w = 1, and a metric
     that scores the share of "the" among the words "the" / "and" of the answer, about 0.5 after
     SFT): PPO, GRPO and online DPO each raise the mean reward of sampled answers (T = 1, 16 per
     prompt) by more than 0.25 within a few seconds;
   - the old-logprob self-check: the sampler agrees with a forward pass, and a wrong old
     logprob is caught;
   - exact resume: a run stopped and resumed logs the same losses and ends with the same weights
     as an uninterrupted one (PPO also with its value head, killed with SIGKILL). */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>
#if !defined(_WIN32)
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
#endif

static const char *TOK = "tests/data/tokenizers/qwen2_style";
static char model_dir[512];

/* ---- a tiny chat model ------------------------------------------------------------------------ */

static const char *goals[] = {
    "book a table", "order a pizza", "find a shirt", "set an alarm", "plan a trip", "write a poem",
    "fix my code", "sort a list", "name a cat", "pick a color", "book a room", "buy a ticket",
};
#define N_GOALS 12

/* A random tiny Qwen2-style model, then a few SFT steps on answers that are random mixes of
   the words "the" and "and" (6 words, then the end of the turn): a policy that says "the"
   about half the time, which RL can push either way. */
static int make_model(const char *dir) {
    cllm_config c;
    cllm_model m;
    cllm_sft_data d;
    cllm_tokenizer tok;
    cllm_train_config t;
    cllm_rng rng;
    cllm_err err;
    char buf[1 << 15], answer[64];
    size_t len = 0;
    int ok, i, k;
    memset(&c, 0, sizeof c);
    c.arch = CLLM_ARCH_QWEN2; c.vocab_size = 1461; c.hidden_size = 16; c.intermediate_size = 32; c.n_layers = 1;
    c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 8; c.rms_norm_eps = 1e-6f; c.rope_theta = 10000;
    c.tie_word_embeddings = 1; c.attention_bias = 1; c.bos_token_id = -1;
    c.eos_token_ids[0] = 1458; c.n_eos = 1;
    cllm_rng_seed(&rng, 3);
    for (i = 0; i < 48; i++) {
        answer[0] = 0;
        for (k = 0; k < 6; k++) strcat(answer, cllm_rng_uniform(&rng) < 0.5 ? (k ? " the" : "the") : (k ? " and" : "and"));
        len += (size_t)snprintf(buf + len, sizeof buf - len, "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}, {\"role\": \"assistant\", \"content\": \"%s\"}]}\n",
                                goals[i % N_GOALS], answer);
    }
    memset(&t, 0, sizeof t);
    t.lr = 5e-2; t.lr_schedule = "constant"; t.max_steps = 25; t.batch_size = 16; t.quiet = 1;
    memset(&tok, 0, sizeof tok); memset(&d, 0, sizeof d);
    ok = cllm_model_init(&m, &c, 7, &err) == CLLM_OK && cllm_write_file_atomic("build/tmp_online_sft.jsonl", buf, len, &err) == CLLM_OK &&
         cllm_tokenizer_load(&tok, TOK, &err) == CLLM_OK && cllm_sft_data_load(&d, &tok, "build/tmp_online_sft.jsonl", 0, &err) == CLLM_OK &&
         cllm_train_sft(&m, NULL, &d, &t, &err) == CLLM_OK && cllm_model_save(&m, dir, CLLM_DT_F32, &err) == CLLM_OK &&
         check_copy_file(TOK, dir, "tokenizer.json") && check_copy_file(TOK, dir, "tokenizer_config.json");
    if (!ok) printf("    %s\n", err.msg);
    else printf("  tiny model: SFT loss %.3f after 25 steps\n", (double)m.loss);
    cllm_model_free(&m);
    cllm_sft_data_free(&d);
    cllm_tokenizer_free(&tok);
    return ok;
}

/* ---- the scripted world ------------------------------------------------------------------------ */

/* The simulated user opens with its goal and answers anything with "thanks" and the end. */
static cllm_result user_turn(void *ctx, const cllm_goal *goal, const cllm_conv *h, cllm_reply *out) {
    (void)ctx;
    if (h->n == 0) return cllm_reply_set(out, goal->prompt, 0);
    return cllm_reply_set(out, "thanks [[TERMINATE CHAT]]", 1);
}

/* The reward: of the words "the" and "and" in the candidate (as substrings, so that "thethe"
   counts twice), the fraction that are "the"; about 0.5 at the start, 0 without either word. */
static cllm_result say_the(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx; (void)err;
    for (i = 0; i < n; i++) {
        const char *p = s[i].conv->msgs[s[i].n_history].content;
        int the = 0, and_ = 0;
        for (; *p; p++) { the += strncmp(p, "the", 3) == 0; and_ += strncmp(p, "and", 3) == 0; }
        scores[i] = the + and_ ? (double)the / (the + and_) : 0;
    }
    return CLLM_OK;
}

typedef struct world {
    cllm_local_lm        lm;
    cllm_local_assistant future;
    cllm_user_sim        user;
    cllm_metric          metric;
    cllm_mr_config       mr;
    cllm_online_prompts  prompts;
    cllm_task           *tasks;
    int                  n_tasks;
} world;

static void world_free(world *w) {
    cllm_online_prompts_free(&w->prompts);
    cllm_tasks_free(w->tasks, w->n_tasks);
    cllm_local_lm_free(&w->lm);
    memset(w, 0, sizeof *w);
}

static int write_tasks(const char *path) {
    char buf[4096];
    size_t len = 0;
    int i;
    cllm_err err;
    for (i = 0; i < N_GOALS; i++) len += (size_t)snprintf(buf + len, sizeof buf - len, "{\"single_turn_prompt\": \"%s\", \"single_turn_completion\": \"done\"}\n", goals[i]);
    return cllm_write_file_atomic(path, buf, len, &err) == CLLM_OK;
}

static int world_init(world *w, int window, int max_new) {
    cllm_local_assistant_config ac;
    cllm_err err;
    memset(w, 0, sizeof *w);
    if (cllm_local_lm_load(&w->lm, model_dir, &err) != CLLM_OK) { printf("    %s\n", err.msg); return 0; }
    memset(&ac, 0, sizeof ac);
    ac.gen.max_new_tokens = max_new; ac.gen.sampler.temperature = 1.0f; ac.gen.sampler.seed = 5;
    cllm_local_assistant_init(&w->future, &w->lm, &ac);
    w->user.turn = user_turn;
    w->metric.name = "say_the"; w->metric.weight = 1; w->metric.fn = say_the;
    cllm_mr_config_init(&w->mr, CLLM_MR_PRESET_MATH);
    w->mr.variant = CLLM_MR_WEIGHTED_SUM; w->mr.window = window; w->mr.samples = 1;
    w->mr.metrics = &w->metric; w->mr.n_metrics = 1;
    if (!write_tasks("build/tmp_online_tasks.jsonl") || cllm_tasks_read_jsonl("build/tmp_online_tasks.jsonl", &w->tasks, &w->n_tasks, &err) != CLLM_OK ||
        cllm_online_prompts_from_tasks(&w->prompts, w->tasks, w->n_tasks, &w->user, NULL, NULL, &err) != CLLM_OK) {
        printf("    %s\n", err.msg);
        return 0;
    }
    return 1;
}

/* Rollouts at temperature 1, the temperature mean_reward measures at (a policy trained at a
   lower one may learn answers that fall apart at 1, e.g. "the" and the end of the turn, which
   at T = 1 becomes "thethethe"). */
static void rollout_of(const world *w, cllm_rollout_config *rc, int max_new) {
    memset(rc, 0, sizeof *rc);
    rc->gen.max_new_tokens = max_new; rc->gen.sampler.temperature = 1.0f;
    rc->mr = &w->mr; rc->user = &w->user; rc->future = &w->future.assistant;
}

/* Mean reward of sampled answers (T = 1, 16 per prompt, fixed seeds) over every prompt. */
static double mean_reward(world *w, int max_new) {
    cllm_local_gen_config g;
    cllm_local_output out[16];
    cllm_session ses;
    cllm_conv conv;
    double sum = 0, sc;
    int i, s, n = 0;
    memset(&g, 0, sizeof g);
    g.max_new_tokens = max_new; g.sampler.temperature = 1.0f; g.sampler.seed = 99;
    for (i = 0; i < w->prompts.n; i++) {
        w->lm.calls = (uint64_t)i;
        if (cllm_local_chat(&w->lm, &w->prompts.items[i].history, 1, 16, &g, out, NULL) != CLLM_OK) return NAN;
        for (s = 0; s < 16; s++) {
            memset(&conv, 0, sizeof conv);
            cllm_conv_copy(&conv, &w->prompts.items[i].history, NULL);
            cllm_conv_push(&conv, "assistant", out[s].text, NULL);
            memset(&ses, 0, sizeof ses);
            ses.conv = &conv; ses.n_history = conv.n - 1;
            say_the(NULL, &ses, 1, &sc, NULL);
            sum += sc; n++;
            cllm_conv_free(&conv);
        }
        cllm_local_outputs_free(out, 16);
    }
    return sum / n;
}

static void train_cfg(cllm_train_config *t, const char *out, double lr, long steps) {
    memset(t, 0, sizeof *t);
    t->lr = lr; t->lr_schedule = "constant"; t->max_steps = steps; t->batch_size = 4; t->out_dir = out; t->quiet = 1;
    t->model_dir = model_dir;
}

/* Each method from the same starting model: the mean reward of sampled answers must rise. */
static void test_trivial_reward(void) {
    static const char *names[3] = { "PPO", "GRPO", "online DPO" };
    int method;
    for (method = 0; method < 3; method++) {
        world w;
        cllm_train_config t;
        cllm_model ref;
        cllm_err err;
        double before, after;
        cllm_result rc = CLLM_ERR_ARG;
        int max_new = 8;
        char label[128];
        printf("%s on a scripted reward (MR with w = 1: the callback user answers, the policy continues)\n", names[method]);
        if (!world_init(&w, 1, 4)) { check_true("world", 0); return; }
        before = mean_reward(&w, max_new);
        cllm_model_load(&ref, model_dir, &err);
        /* PPO makes ppo_epochs x mini_batches = 4 updates per step: a smaller rate, more steps.
           No output directory: nothing is written (checkpoints are the resume tests' part) */
        train_cfg(&t, NULL, method == 0 ? 5e-3 : 1e-2, method == 0 ? 16 : 6);
        if (method == 0) {
            cllm_ppo_config pc;
            memset(&pc, 0, sizeof pc);
            rollout_of(&w, &pc.rollout, max_new);
            rc = cllm_train_ppo(&w.lm, NULL, &ref, NULL, &w.prompts, &pc, &t, &err);
        } else if (method == 1) {
            cllm_grpo_config gc;
            memset(&gc, 0, sizeof gc);
            rollout_of(&w, &gc.rollout, max_new);
            gc.num_generations = 4;
            rc = cllm_train_grpo(&w.lm, NULL, &ref, &w.prompts, &gc, &t, &err);
        } else {
            cllm_online_dpo_config dc;
            memset(&dc, 0, sizeof dc);
            rollout_of(&w, &dc.rollout, max_new);
            rc = cllm_train_online_dpo(&w.lm, NULL, &ref, &w.prompts, &dc, &t, &err);
        }
        if (rc != CLLM_OK) printf("    %s\n", err.msg);
        check_true("trains", rc == CLLM_OK);
        after = mean_reward(&w, max_new);
        snprintf(label, sizeof label, "mean reward rises: %.4f -> %.4f (by more than 0.25)", before, after);
        check_true(label, after > before + 0.25);
        cllm_model_free(&ref);
        world_free(&w);
    }
}

/* ---- the hand-built TRL v0.19.1 PPO test vector --------------------------------------------- */

static void set_rows(double *dst, const double *src, int n) { memcpy(dst, src, sizeof(double) * (size_t)n); }

/* The vector's rollout: responses [[5,6,2,pad,pad],[7,8,9,10,11]] with pad 0. */
static void vector_rollout(cllm_ppo_rollout *r) {
    static const int resp[10] = { 5, 6, 2, 0, 0, 7, 8, 9, 10, 11 };
    static const double logp[10] = { -1, -.5, -.2, -3, -3, -2, -1, -.7, -.4, -1.5 };
    static const double ref[10] = { -1.2, -.4, -.3, -2, -2, -1.5, -1.1, -.9, -.6, -1 };
    static const double val[10] = { .1, .2, .3, .4, .5, 0, -.1, -.2, -.3, -.4 };
    static const double score[2] = { 1, -.5 };
    cllm_ppo_rollout_alloc(r, 2, 5, NULL);
    memcpy(r->response, resp, sizeof resp);
    r->pad_id = 0;
    set_rows(r->logprobs, logp, 10); set_rows(r->ref_logprobs, ref, 10); set_rows(r->values, val, 10); set_rows(r->scores, score, 2);
}

static void test_ppo_vector(void) {
    static const double rewards[10] = { -.01, .005, -.005, 1, 0, .025, -.005, -.01, -.01, -.475 };
    static const double adv_raw[10] = { .789912, .73675, .665, .6, 0, -.429424, -.373078, -.282187, -.18125, -.075 };
    static const double returns[10] = { .889912, .93675, .965, 1, 0, -.429424, -.473078, -.482187, -.48125, -.475 };
    static const double adv[10] = { 1.291757, 1.191295, 1.055708, 0, 0, -1.012443, -.905965, -.734207, -.543464, -.342682 };
    static const double dlp[10] = { .1, -.3, .05, 0, 0, .3, 0, -.1, .2, -.25 };
    static const double dv[10] = { .3, -.25, .1, .5, 0, .05, .4, -.3, 0, .1 };
    static const double val0[10] = { .1, .2, .3, .4, .5, 0, -.1, -.2, -.3, -.4 };
    static const double logp0[10] = { -1, -.5, -.2, -3, -3, -2, -1, -.7, -.4, -1.5 };
    double got_raw[10], nlp[10], vp[10], want;
    int rows[2] = { 0, 1 }, i, ends_ok;
    cllm_ppo_rollout r;
    cllm_ppo_config cfg;
    cllm_ppo_loss_out out;
    cllm_err err;
    printf("PPO test vector (TRL v0.19.1: k1, kl_coef .05, gamma 1, lambda .95) through cllm_ppo_prepare / cllm_ppo_rollout_loss\n");
    memset(&cfg, 0, sizeof cfg);                      /* zero = TRL's defaults, which the vector uses */
    vector_rollout(&r);
    check_true("prepare", cllm_ppo_prepare(&cfg, &r, &err) == CLLM_OK);
    ends_ok = r.seq_end[0] == 2 && r.seq_end[1] == 4;
    check_true("sequence ends [2, 4]; masks t <= end and t <= end + 1", ends_ok && r.mask[3] == 0 && r.value_mask[3] == 1 && r.value_mask[4] == 0 && r.mask[9] == 1);
    check_tensor_d("rewards (score after the EOS slot, -0.05 k1)", r.rewards, rewards, 10, 1e-12);
    for (i = 0; i < 10; i++) got_raw[i] = r.returns[i] - r.values[i];
    check_tensor_d("GAE advantages before whitening (returns - values)", got_raw, adv_raw, 10, 1e-6);
    check_tensor_d("returns", r.returns, returns, 10, 1e-6);
    check_tensor_d("advantages whitened over the policy mask, 0 after the end", r.advantages, adv, 10, 1e-6);
    for (i = 0; i < 10; i++) { nlp[i] = logp0[i] + dlp[i]; vp[i] = val0[i] + dv[i]; }
    memset(&out, 0, sizeof out);
    check_true("loss", cllm_ppo_rollout_loss(&cfg, &r, rows, 2, nlp, vp, &out, &err) == CLLM_OK);
    want = 0.05686382; check_tensor_d("pg_loss", &out.pg_loss, &want, 1, 1e-6);
    want = 0.14992367; check_tensor_d("vf_loss", &out.vf_loss, &want, 1, 1e-6);
    want = 0.07185619; check_tensor_d("loss", &out.loss, &want, 1, 1e-6);
    {   /* the same loss as two micro-batches of one row each is not the mean of the two (masked
           means per micro-batch, as TRL); the rows in another order give the same numbers */
        int swapped[2] = { 1, 0 };
        double nlp2[10], vp2[10];
        cllm_ppo_loss_out o2;
        memcpy(nlp2, nlp + 5, 5 * sizeof(double)); memcpy(nlp2 + 5, nlp, 5 * sizeof(double));
        memcpy(vp2, vp + 5, 5 * sizeof(double)); memcpy(vp2 + 5, vp, 5 * sizeof(double));
        memset(&o2, 0, sizeof o2);
        cllm_ppo_rollout_loss(&cfg, &r, swapped, 2, nlp2, vp2, &o2, &err);
        check_tensor_d("rows given in the other order: same loss", &o2.loss, &out.loss, 1, 1e-12);
    }
    cllm_ppo_rollout_free(&r);

    printf("the library differences (pitfalls reported upstream)\n");
    vector_rollout(&r);
    r.pad_id = 2;                                     /* pad == eos: the EOS at t = 2 is padding */
    cllm_ppo_prepare(&cfg, &r, &err);
    check_true("pad == eos: end = 1, the EOS is not trained, the score sits on its slot",
               r.seq_end[0] == 1 && r.mask[2] == 0 && r.value_mask[2] == 1 && fabs(r.rewards[2] - 1.0) < 1e-12 && r.advantages[2] == 0);
    cllm_ppo_rollout_free(&r);
    vector_rollout(&r);
    cfg.reward_placement = CLLM_REWARD_LAST_TOKEN;
    cllm_ppo_prepare(&cfg, &r, &err);
    want = 1 - 0.05 * (-0.2 + 0.3);
    check_tensor_d("last-token placement: score + KL term on the EOS itself", &r.rewards[2], &want, 1, 1e-12);
    check_true("  and nothing after it", r.rewards[3] == 0);
    cllm_ppo_rollout_free(&r);
    {   /* biased whitening = the same raw advantages scaled by sqrt(s/(s-1)) (8 masked tokens) */
        cllm_ppo_rollout u;
        double ratio[8], ones[8];
        int k = 0;
        memset(&cfg, 0, sizeof cfg);
        vector_rollout(&u); cllm_ppo_prepare(&cfg, &u, &err);
        cfg.biased_whiten = 1;
        vector_rollout(&r); cllm_ppo_prepare(&cfg, &r, &err);
        for (i = 0; i < 10; i++) if (r.mask[i]) { ratio[k] = r.advantages[i] / u.advantages[i] / sqrt(8.0 / 7.0); ones[k++] = 1; }
        check_tensor_d("biased (OpenRLHF) / unbiased (TRL) whitening = sqrt(8/7)", ratio, ones, 8, 1e-6);
        cllm_ppo_rollout_free(&u); cllm_ppo_rollout_free(&r);
    }
    {   /* the trainer's response rows: with pad_is_eos the token that ended a response is padding */
        cllm_local_lm lm;
        cllm_local_output o[2];
        const cllm_local_output *po[2];
        cllm__rows rows;
        int ids0[3] = { 5, 6, 99 }, ids1[2] = { 7, 8 }, okd, oke;
        memset(&lm, 0, sizeof lm); memset(o, 0, sizeof o); memset(&rows, 0, sizeof rows);
        lm.stop_ids[0] = 99; lm.n_stop_ids = 1;
        o[0].ids = ids0; o[0].n = 3; o[1].ids = ids1; o[1].n = 2;
        po[0] = &o[0]; po[1] = &o[1];
        rows.out = po; rows.n = 2;
        cllm_ppo_rollout_alloc(&r, 2, 3, NULL);
        cllm__ppo_fill_response(&r, &rows, &lm, 0);
        okd = r.response[2] == 99 && r.response[5] == r.pad_id && cllm_ppo_sequence_end(r.response, 3, r.pad_id, -1) == 2;
        cllm__ppo_fill_response(&r, &rows, &lm, 1);
        oke = r.response[2] == r.pad_id && cllm_ppo_sequence_end(r.response, 3, r.pad_id, -1) == 1;
        check_true("rollout rows: pad != eos keeps the EOS as the last trained token; pad_is_eos makes it padding", okd && oke);
        cllm_ppo_rollout_free(&r);
    }
}

/* ---- the GRPO loss against torch ------------------------------------------------------------- */

static size_t numbers(const cJSON *j, double *out) {
    const cJSON *e;
    size_t n = 0;
    if (cJSON_IsNumber(j)) { if (out) out[0] = j->valuedouble; return 1; }
    cJSON_ArrayForEach(e, j) n += numbers(e, out ? out + n : NULL);
    return n;
}

static double *numbers_of(const cJSON *c, const char *key, size_t *n) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c, key);
    size_t k = numbers(j, NULL);
    double *x = (double *)calloc(k + 1, sizeof(double));
    numbers(j, x);
    if (n) *n = k;
    return x;
}

static double number_of(const cJSON *c, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(c, key)->valuedouble;
}

static void test_grpo_loss(void) {
    char *text = NULL;
    size_t len, n;
    cJSON *root, *c;
    double worst_loss = 0, worst_grad = 0, worst_stats = 0, fd_worst = 0;
    int cases = 0, bad = 0;
    printf("GRPO loss vs PyTorch float64 (tests/data/objectives/grpo_loss.json: ratios != 1, beta k3, bnpo / grpo / dr_grpo)\n");
    if (cllm_read_file("tests/data/objectives/grpo_loss.json", &text, &len, NULL) != CLLM_OK) { check_true("grpo_loss.json", 0); return; }
    root = cJSON_ParseWithLength(text, len);
    cllm_free_buffer(text);
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
        const char *lt = cJSON_GetObjectItemCaseSensitive(c, "loss_type")->valuestring;
        int type = !strcmp(lt, "bnpo") ? CLLM_GRPO_BNPO : !strcmp(lt, "grpo") ? CLLM_GRPO_GRPO : CLLM_GRPO_DR_GRPO;
        int B = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(c, "logprobs")), T;
        double *lp = numbers_of(c, "logprobs", &n), *old = numbers_of(c, "old_logprobs", NULL), *ref = numbers_of(c, "ref_logprobs", NULL);
        double *adv = numbers_of(c, "advantages", NULL), *mask = numbers_of(c, "mask", NULL), *want_d = numbers_of(c, "d_logprobs", NULL);
        double *d = (double *)calloc(n + 1, sizeof(double)), beta = cJSON_GetObjectItemCaseSensitive(c, "beta")->valuedouble;
        double e1, e2;
        cllm_grpo_loss_out out;
        size_t i;
        T = (int)n / B;
        memset(&out, 0, sizeof out);
        out.d_logprobs = d;
        cllm_grpo_loss_input in = { .B = B, .T = T, .logprobs = lp, .old_logprobs = old, .ref_logprobs = ref, .advantages = adv,
                                    .mask = mask, .beta = beta, .eps_low = cJSON_GetObjectItemCaseSensitive(c, "eps_low")->valuedouble,
                                    .eps_high = cJSON_GetObjectItemCaseSensitive(c, "eps_high")->valuedouble,
                                    .loss_type = (cllm_grpo_loss_type)type,
                                    .max_completion_length = (int)cJSON_GetObjectItemCaseSensitive(c, "max_completion_length")->valuedouble };
        if (cllm_grpo_loss(&in, &out, NULL) != CLLM_OK) bad++;
        e1 = fabs(out.loss - cJSON_GetObjectItemCaseSensitive(c, "loss")->valuedouble);
        if (e1 > worst_loss) worst_loss = e1;
        for (i = 0; i < n; i++) if (fabs(d[i] - want_d[i]) > worst_grad) worst_grad = fabs(d[i] - want_d[i]);
        e2 = fabs(out.clip_ratio - cJSON_GetObjectItemCaseSensitive(c, "clip_ratio")->valuedouble) +
             fabs(out.kl - cJSON_GetObjectItemCaseSensitive(c, "kl")->valuedouble);
        if (e2 > worst_stats) worst_stats = e2;
        for (i = 0; i < n; i++) {                     /* and by central differences */
            double keep = lp[i], lp_, lm_, h = 1e-6;
            cllm_grpo_loss_out o2;
            memset(&o2, 0, sizeof o2);
            in.eps_low = .2; in.eps_high = .28;
            lp[i] = keep + h; cllm_grpo_loss(&in, &o2, NULL); lp_ = o2.loss;
            lp[i] = keep - h; cllm_grpo_loss(&in, &o2, NULL); lm_ = o2.loss;
            lp[i] = keep;
            if (fabs((lp_ - lm_) / (2 * h) - d[i]) > fd_worst) fd_worst = fabs((lp_ - lm_) / (2 * h) - d[i]);
        }
        cases++;
        free(lp); free(old); free(ref); free(adv); free(mask); free(want_d); free(d);
    }
    cJSON_Delete(root);
    printf("  %d cases: max |loss diff| %.2e, max |d logprobs diff| %.2e, max |kl| + |clip_ratio| diff %.2e, finite differences %.2e\n",
           cases, worst_loss, worst_grad, worst_stats, fd_worst);
    check_true("60 cases, loss / gradient / kl / clip ratio within 1e-12 of torch, gradient within 1e-7 of finite differences",
               cases == 60 && !bad && worst_loss < 1e-12 && worst_grad < 1e-12 && worst_stats < 1e-12 && fd_worst < 1e-7);
}

/* ---- prompts ------------------------------------------------------------------------------- */

/* ---- PPO's logged statistics against TRL's definitions ---------------------------------------------------- */

/* tests/data/objectives/ppo_stats.json (tests/gen_online.py): rollouts padded as TRL pads them, with TRL's
   policy/entropy_avg (every slot of the padded batch, pads included, computed by torch on the training forward TRL
   runs: pads masked, id 0, position ids from the mask) and val/num_eos_tokens, and our entropy over the trained
   slots. The trainer's pieces reproduce them: the attended rows, the forward with one pad column, the averages. */
static void test_ppo_stats(void) {
    char *text = NULL, label[200];
    size_t len;
    cllm_err err;
    cllm_model m;
    cJSON *root, *c;
    printf("PPO statistics vs TRL v0.19.1's definitions in PyTorch float64 (tests/data/objectives/ppo_stats.json)\n");
    if (cllm_read_file("tests/data/objectives/ppo_stats.json", &text, &len, NULL) != CLLM_OK ||
        !check_true("the tiny qwen2 checkpoint", cllm_model_load(&m, "tests/data/golden/qwen2_bias", &err) == CLLM_OK)) {
        check_true("ppo_stats.json", 0);
        cllm_free_buffer(text);
        return;
    }
    root = cJSON_ParseWithLength(text, len);
    cllm_free_buffer(text);
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
        const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(c, "prompts");
        const cJSON *responses = cJSON_GetObjectItemCaseSensitive(c, "responses");
        int pad = cJSON_GetObjectItemCaseSensitive(c, "pad_id")->valueint;
        int eos = cJSON_GetObjectItemCaseSensitive(c, "eos_id")->valueint, pad_is_eos = pad == eos;
        int L = cJSON_GetObjectItemCaseSensitive(c, "L")->valueint, B = cJSON_GetArraySize(prompts), b, t;
        float tau = (float)cJSON_GetObjectItemCaseSensitive(c, "temperature")->valuedouble;
        double *want = numbers_of(c, "entropy", NULL), *want_end = numbers_of(c, "seq_end", NULL);
        double avg, response_avg, slot_worst = 0, eos_tokens = 0;
        cllm_train_seq rows[8], cut[8];
        const cllm_train_seq *seqs[8];
        cllm_local_output outs[8];
        int sel[8], ends_ok = 1;
        cllm_ppo_rollout r;
        cllm__seq_batch sb;
        memset(rows, 0, sizeof rows);
        memset(outs, 0, sizeof outs);
        memset(&r, 0, sizeof r);
        cllm_ppo_rollout_alloc(&r, B, L, &err);
        for (b = 0; b < B; b++) {
            const cJSON *p = cJSON_GetArrayItem(prompts, b), *resp = cJSON_GetArrayItem(responses, b);
            int np = cJSON_GetArraySize(p), nr = cJSON_GetArraySize(resp);
            rows[b].ids = (int *)calloc((size_t)(np + nr), sizeof(int));
            rows[b].target = (unsigned char *)calloc((size_t)(np + nr), 1);
            rows[b].n = np + nr;
            rows[b].n_prompt = np;
            for (t = 0; t < np + nr; t++) {
                rows[b].ids[t] = cJSON_GetArrayItem(t < np ? p : resp, t < np ? t : t - np)->valueint;
                rows[b].target[t] = t >= np;
            }
            for (t = 0; t < L; t++) {        /* the trainer's response layout: -1 for padding (and eos with pad_is_eos) */
                int id = t < nr ? rows[b].ids[np + t] : -1;
                r.response[(size_t)b * L + t] = pad_is_eos && id == eos ? -1 : id;
            }
            r.seq_end[b] = cllm_ppo_sequence_end(r.response + (size_t)b * L, L, -1, -1);
            ends_ok &= r.seq_end[b] == (int)want_end[b];
            outs[b].ids = rows[b].ids + np;
            outs[b].n = nr;
            eos_tokens += cllm__ppo_eos_tokens(&outs[b], L, eos, pad_is_eos);
            cut[b] = cllm__ppo_attended(&r, &rows[b], b);
            seqs[b] = &cut[b];
            sel[b] = b;
        }
        printf("  pad %s eos, T = %g\n", pad_is_eos ? "==" : "!=", (double)tau);
        check_true("  the sequence ends are TRL's", ends_ok);
        if (cllm__rollout_forward(&m, seqs, B, tau, 1, &sb, &err) == CLLM_OK) {
            avg = cllm__ppo_entropy_avg(&m, seqs, B, L);
            response_avg = cllm__ppo_entropy_response_avg(&m, seqs, &r, sel, B);
            for (b = 0; b < B; b++) {
                int R = cut[b].n - cut[b].n_prompt;
                for (t = 0; t < L; t++) {
                    double got = m.acts.entropy[cllm__resp_pos(&m, seqs[b], b, t <= R ? t : R + 1)];
                    double d = fabs(got - want[b * L + t]) / want[b * L + t];
                    if (!(d <= slot_worst)) slot_worst = d;
                }
            }
            snprintf(label, sizeof label, "  the entropy at every slot, pads included (max rel diff %.2g)", slot_worst);
            check_true(label, slot_worst < 1e-5);
            snprintf(label, sizeof label, "  policy/entropy_avg %.6f = TRL's %.6f", avg, number_of(c, "entropy_avg"));
            check_true(label, fabs(avg - number_of(c, "entropy_avg")) < 1e-5 * avg);
            snprintf(label, sizeof label, "  policy/entropy_response_avg %.6f = %.6f, and differs from TRL's",
                     response_avg, number_of(c, "entropy_response_avg"));
            check_true(label, fabs(response_avg - number_of(c, "entropy_response_avg")) < 1e-5 * avg &&
                                  fabs(response_avg - avg) > 1e-3);
        } else {
            check_true(err.msg, 0);
        }
        snprintf(label, sizeof label, "  val/num_eos_tokens %g = TRL's %g", eos_tokens, number_of(c, "num_eos_tokens"));
        check_true(label, eos_tokens == number_of(c, "num_eos_tokens"));
        cllm__seq_batch_free(&sb);
        for (b = 0; b < B; b++) cllm_train_seq_free(&rows[b]);
        cllm_ppo_rollout_free(&r);
        free(want);
        free(want_end);
    }
    cJSON_Delete(root);
    cllm_model_free(&m);
}

/* GRPO's completion and reward-spread statistics on a hand-built micro-batch, against TRL v0.19.1
   GRPOTrainer._generate_and_score_completions written out by hand: a completion is terminated when it holds the
   tokenizer's eos id (another stop token does not count), its length runs to that eos, and a group's std is "zero"
   when torch.isclose(std, 0) (|std| <= 1e-8). */
static void test_grpo_stats(void) {
    static cllm_local_lm lm;                         /* only the tokenizer's eos id is read */
    int ids[6][4] = { { 11, 12, 5 }, { 11, 5, 13, 5 }, { 11, 12, 13, 14 }, { 11, 9 }, { 5 }, { 12, 13, 5 } };
    int lens[6] = { 3, 4, 4, 2, 1, 3 }, keep[6], B = 0, L = 1, i;
    double mr[6] = { 0.5, 0.5, 0.5, 1.0, 1.0 + 1e-9, 0.0 }, adv[6], spread[3];
    cllm_local_output out[6];
    cllm__grpo_ctx ctx;
    cllm_train_stats st;
    cllm_err err;
    memset(out, 0, sizeof out);
    memset(&ctx, 0, sizeof ctx);
    memset(&st, 0, sizeof st);
    lm.tok.eos_id = 5;
    ctx.lm = &lm;
    ctx.cfg.num_generations = 3;
    ctx.cfg.scale_rewards = 1;
    for (i = 0; i < 6; i++) {
        out[i].ids = ids[i];
        out[i].n = lens[i];
        out[i].finish = CLLM_FINISH_EOS;
    }
    printf("GRPO statistics vs TRL v0.19.1's definitions (hand-built groups)\n");
    check_true("cllm__grpo_groups", cllm__grpo_groups(&ctx, out, mr, 2, adv, keep, &B, &L, spread, &st, &err) == CLLM_OK);
    /* lengths to the first eos (3, 2), no eos: all 4, [11 9] ended by another stop token: 2 (TRL: the batch's
       width, see data_fmt/train_online.md), 1, 3 */
    check_true("completions/mean_length: tokens up to the first eos", cllm_train_stats_mean(&st, "completions/mean_length")
                                                                          == (3 + 2 + 4 + 2 + 1 + 3) / 6.0);
    check_true("completions/clipped_ratio: completions without the tokenizer's eos (2 of 6)",
               cllm_train_stats_mean(&st, "completions/clipped_ratio") == 2 / 6.0);
    check_true("reward std of group 0 is 0, of group 1 the unbiased std; both groups kept",
               spread[2] == 2 && spread[0] > 0.5 && spread[1] == 1);
}

static int user_calls = 0;
static cllm_result counting_user(void *ctx, const cllm_goal *goal, const cllm_conv *h, cllm_reply *out) {
    user_calls++;
    return user_turn(ctx, goal, h, out);
}

static void test_prompts(void) {
    cllm_user_sim user = { counting_user, NULL, NULL };
    cllm_prompts_config pc;
    cllm_online_prompts p;
    cllm_task *tasks = NULL;
    cllm_err err;
    char *text = NULL;
    size_t len;
    int n = 0, ok, distinct = 0;
    printf("prompts: CollabLLM's inputs form\n");
    memset(&pc, 0, sizeof pc);
    pc.task_desc = "errands"; pc.show_reference = 1;
    remove("build/tmp_online_prompts.jsonl");
    write_tasks("build/tmp_online_tasks.jsonl");
    cllm_tasks_read_jsonl("build/tmp_online_tasks.jsonl", &tasks, &n, &err);
    memset(&p, 0, sizeof p);
    user_calls = 0;
    ok = cllm_online_prompts_from_tasks(&p, tasks, n, &user, &pc, "build/tmp_online_prompts.jsonl", &err) == CLLM_OK;
    check_true("from tasks: one prompt per task, the simulator's opening as the user turn, goal and task attached",
               ok && p.n == n && user_calls == n && p.items[3].history.n == 1 && !strcmp(p.items[3].history.msgs[0].content, goals[3]) &&
               !strcmp(p.items[3].goal.prompt, goals[3]) && !strcmp(p.items[3].goal.task_desc, "errands") &&
               p.items[3].goal.reference && !strcmp(p.items[3].goal.reference, "done") && p.items[3].conv_id == 3 && p.items[3].turn_id == 1);
    cllm_online_prompts_free(&p);
    user_calls = 0;
    ok = cllm_online_prompts_from_tasks(&p, tasks, n, &user, &pc, "build/tmp_online_prompts.jsonl", &err) == CLLM_OK;
    check_true("the cache is read instead of asking the simulator again", ok && user_calls == 0 && p.n == n && !strcmp(p.items[5].history.msgs[0].content, goals[5]));
    cllm_online_prompts_free(&p);
    free(tasks[0].prompt); tasks[0].prompt = (char *)malloc(8); strcpy(tasks[0].prompt, "other");
    ok = cllm_online_prompts_from_tasks(&p, tasks, n, &user, &pc, "build/tmp_online_prompts.jsonl", &err) != CLLM_OK && strstr(err.msg, "another task") != NULL;
    check_true("a cache made from other tasks is refused, naming what to do", ok);
    printf("         -> %s\n", err.msg);
    cllm_online_prompts_free(&p);
    cllm_tasks_free(tasks, n);

    /* records: one prompt per (conv_id, turn_id), counted here from the file itself */
    ok = cllm_online_prompts_read(&p, "data_fmt/records.example.jsonl", &pc, &err) == CLLM_OK;
    if (cllm_read_file("data_fmt/records.example.jsonl", &text, &len, NULL) == CLLM_OK) {
        char *line = text, *next;
        long keys[64][2];
        int k = 0, j;
        for (; line && *line; line = next) {
            cJSON *o;
            next = strchr(line, '\n');
            if (next) *next++ = 0;
            if (!(o = cJSON_Parse(line))) continue;
            keys[k][0] = (long)cJSON_GetObjectItem(o, "conv_id")->valuedouble; keys[k][1] = (long)cJSON_GetObjectItem(o, "turn_id")->valuedouble;
            for (j = 0; j < k && (keys[j][0] != keys[k][0] || keys[j][1] != keys[k][1]); j++) {}
            if (j == k) distinct++;
            if (k < 63) k++;
            cJSON_Delete(o);
        }
        cllm_free_buffer(text);
    }
    check_true("records: one prompt per distinct (conv_id, turn_id), history = the record's prompt, heavy fields dropped",
               ok && p.n == distinct && distinct > 0 && p.items[0].turn_id == p.items[0].history.n &&
               !strcmp(p.items[0].history.msgs[p.items[0].history.n - 1].role, "user") &&
               !cJSON_GetObjectItem(p.items[0].task.json, "sessions") && cJSON_GetObjectItem(p.items[0].task.json, "single_turn_prompt"));
    printf("         %d records -> %d prompts\n", distinct ? distinct : 0, p.n);
    cllm_online_prompts_free(&p);
    {   /* two candidates of one turn, a later turn, another conversation: 3 prompts, first seen wins */
        static const char *rec =
            "{\"single_turn_prompt\": \"g\", \"conv_id\": 4, \"turn_id\": 1, \"prompt\": [{\"role\": \"user\", \"content\": \"a\"}], \"completion\": \"x\", \"score\": 1}\n"
            "{\"single_turn_prompt\": \"g\", \"conv_id\": 4, \"turn_id\": 1, \"prompt\": [{\"role\": \"user\", \"content\": \"b\"}], \"completion\": \"y\", \"score\": 0}\n"
            "\n{\"single_turn_prompt\": \"g\", \"conv_id\": 4, \"turn_id\": 3, \"prompt\": [{\"role\": \"user\", \"content\": \"a\"}, "
            "{\"role\": \"assistant\", \"content\": \"x\"}, {\"role\": \"user\", \"content\": \"c\"}], \"completion\": \"z\"}\n"
            "{\"single_turn_prompt\": \"h\", \"conv_id\": 5, \"prompt\": [{\"role\": \"user\", \"content\": \"d\"}]}\n";
        static const char *bad[3] = {
            "{\"single_turn_prompt\": \"g\", \"conv_id\": 1, \"prompt\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"x\"}]}\n",
            "{\"single_turn_prompt\": \"g\", \"prompt\": [{\"role\": \"user\", \"content\": \"a\"}]}\n",
            "{\"single_turn_prompt\": \"g\", \"conv_id\": -2, \"prompt\": [{\"role\": \"user\", \"content\": \"a\"}]}\n" };
        int b, refused = 0;
        ok = cllm_write_file_atomic("build/tmp_online_records.jsonl", rec, strlen(rec), &err) == CLLM_OK &&
             cllm_online_prompts_read(&p, "build/tmp_online_records.jsonl", &pc, &err) == CLLM_OK;
        check_true("records with repeats: one prompt per (conv_id, turn_id), the first line's; turn_id defaults to len(prompt)",
                   ok && p.n == 3 && !strcmp(p.items[0].history.msgs[0].content, "a") && p.items[1].turn_id == 3 && p.items[1].history.n == 3 &&
                   p.items[2].conv_id == 5 && p.items[2].turn_id == 1 && !cJSON_GetObjectItem(p.items[0].task.json, "completion"));
        cllm_online_prompts_free(&p);
        for (b = 0; b < 3; b++) {
            cllm_write_file_atomic("build/tmp_online_records.jsonl", bad[b], strlen(bad[b]), &err);
            refused += cllm_online_prompts_read(&p, "build/tmp_online_records.jsonl", &pc, &err) == CLLM_ERR_FORMAT && strstr(err.msg, ":1:") != NULL;
            if (b == 0) printf("         -> %s\n", err.msg);
            cllm_online_prompts_free(&p);
        }
        check_true("refused, naming the line: a prompt ending with the assistant, no conv_id, a negative conv_id", refused == 3);
    }
    ok = cllm_online_prompts_read(&p, "data_fmt/train_prompts.example.jsonl", &pc, &err) == CLLM_OK;
    check_true("data_fmt/train_prompts.example.jsonl parses: 2 prompts, the second at turn 3 with a BigCodeBench-style completion",
               ok && p.n == 2 && p.items[1].turn_id == 3 && p.items[1].history.n == 3 && p.items[1].task.completion[0] == '{');
    if (!ok) printf("    %s\n", err.msg);
    {   /* written and read back: the same prompts */
        cllm_online_prompts q;
        memset(&q, 0, sizeof q);
        ok = cllm_online_prompts_write(&p, "build/tmp_online_prompts2.jsonl", &err) == CLLM_OK &&
             cllm_online_prompts_read(&q, "build/tmp_online_prompts2.jsonl", &pc, &err) == CLLM_OK &&
             q.n == p.n && q.items[1].conv_id == p.items[1].conv_id && !strcmp(q.items[1].history.msgs[2].content, p.items[1].history.msgs[2].content);
        check_true("written and read back unchanged", ok);
        cllm_online_prompts_free(&q);
    }
    cllm_online_prompts_free(&p);
}

/* ---- the old-logprob self-check -------------------------------------------------------------- */

static void test_logprob_check(void) {
    world w;
    cllm_rollout_config rc;
    cllm_local_output out[4];
    cllm__rows rows;
    cllm__seq_batch sb;
    int keep[4] = { 0, 1, 2, 3 }, idx[2] = { 0, 1 };
    double diff = -1;
    cllm_err err;
    printf("old log-probs: the sampler's against a forward pass at the sampling temperature\n");
    if (!world_init(&w, 0, 4)) { check_true("world", 0); return; }
    rollout_of(&w, &rc, 8);
    rc.gen.sampler.temperature = 0.7f;               /* PPO's default */
    rc = cllm__rollout_def(&rc, 0.7f, 0, 8, 42);
    memset(&sb, 0, sizeof sb);
    check_true("sample 2 x 2 responses", cllm__rollout_sample(&w.lm, &rc, &w.prompts, idx, 2, 2, 0, out, &err) == CLLM_OK);
    cllm__rows_make(&rows, out, keep, 4, &err);
    cllm__rollout_forward(&w.lm.model, rows.ptr, 4, rc.gen.sampler.temperature, 0, &sb, &err);
    check_true("they agree within 1e-4", cllm__rollout_check(&rc, &w.lm.model, rows.out, rows.ptr, 4, &diff, &err) == CLLM_OK);
    printf("         max |sampler - forward| = %.3g\n", diff);
    out[2].logprobs[1] += 2e-4f;                     /* a wrong old log-prob */
    check_true("a log-prob off by 2e-4 fails the step, naming the setting",
               cllm__rollout_check(&rc, &w.lm.model, rows.out, rows.ptr, 4, &diff, &err) == CLLM_ERR_NUMERIC && strstr(err.msg, "logprob_tol") != NULL);
    printf("         -> %s\n", err.msg);
    cllm__seq_batch_free(&sb);
    cllm__rows_free(&rows);
    cllm_local_outputs_free(out, 4);
    /* bf16 sampling weights: the gap is only logged (the old log-probs come from the fp32 forward), even at a tolerance
       fp32 sampling could not meet; the copy made for the rollout is gone once the training forward has run */
    rc.gen.weights = CLLM_SAMPLE_BF16;
    rc.logprob_tol = 1e-12;
    check_true("bf16: sample 2 x 2 responses",
               cllm__rollout_sample(&w.lm, &rc, &w.prompts, idx, 2, 2, 0, out, &err) == CLLM_OK && w.lm.model.bf16);
    cllm__rows_make(&rows, out, keep, 4, &err);
    cllm__rollout_forward(&w.lm.model, rows.ptr, 4, rc.gen.sampler.temperature, 0, &sb, &err);
    check_true("bf16: the training forward freed the sampling copy", w.lm.model.bf16 == NULL);
    check_true("bf16: the gap is logged, not an error",
               cllm__rollout_check(&rc, &w.lm.model, rows.out, rows.ptr, 4, &diff, &err) == CLLM_OK && diff > 1e-12);
    printf("         max |bf16 sampler - fp32 forward| = %.3g\n", diff);
    cllm__seq_batch_free(&sb);
    cllm__rows_free(&rows);
    cllm_local_outputs_free(out, 4);
    world_free(&w);
}

/* ---- exact resume ------------------------------------------------------------------------------ */

static void clean(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("    could not remove %s\n", dir);
}

static int kill_at = 0;
static int kill_on_step(void *ctx, const cllm_trainer *tr) {
    (void)ctx;
#if !defined(_WIN32)
    if (tr->step == kill_at) raise(SIGKILL);
#endif
    return 0;
}

/* One short run of a method (0 PPO, 1 GRPO, 2 online DPO) from the starting model into out. */
static cllm_result run_method(int method, const char *out, long stop_after, int resume, int use_lora) {
    world w;
    cllm_train_config t;
    cllm_model ref;
    cllm_lora lora;
    cllm_err err;
    cllm_result rc;
    memset(&ref, 0, sizeof ref); memset(&lora, 0, sizeof lora);
    if (!world_init(&w, 1, 3)) return CLLM_ERR_ARG;
    train_cfg(&t, out, 1e-2, 4);
    t.save_every = kill_at ? 2 : 0; t.stop_after = stop_after; t.resume = resume; t.batch_size = 3; t.grad_accum = 2;
    if (kill_at) t.on_step = kill_on_step;
    if (use_lora) { cllm_lora_config lc; memset(&lc, 0, sizeof lc); lc.r = 2; lc.dropout = 0.1; cllm_lora_init(&lora, &w.lm.model, &lc, &err); }
    else cllm_model_load(&ref, model_dir, &err);
    if (method == 0 || method == 3) {
        cllm_ppo_config pc;
        memset(&pc, 0, sizeof pc);
        rollout_of(&w, &pc.rollout, 6);
        pc.mini_batches = 2; pc.ppo_epochs = 2;
        if (method == 3) { pc.score_scaling = CLLM_SCORE_SCALE; pc.kl_coef = 0.2; pc.kl_target = 6; pc.kl_horizon = 10; }  /* legacy TRL */
        t.grad_accum = 1;
        rc = cllm_train_ppo(&w.lm, use_lora ? &lora : NULL, use_lora ? NULL : &ref, NULL, &w.prompts, &pc, &t, &err);
    } else if (method == 1) {
        cllm_grpo_config gc;
        memset(&gc, 0, sizeof gc);
        rollout_of(&w, &gc.rollout, 6);
        gc.num_generations = 3; gc.beta = 0.04;
        rc = cllm_train_grpo(&w.lm, use_lora ? &lora : NULL, use_lora ? NULL : &ref, &w.prompts, &gc, &t, &err);
    } else {
        cllm_online_dpo_config dc;
        memset(&dc, 0, sizeof dc);
        rollout_of(&w, &dc.rollout, 6);
        rc = cllm_train_online_dpo(&w.lm, use_lora ? &lora : NULL, use_lora ? NULL : &ref, &w.prompts, &dc, &t, &err);
    }
    if (rc != CLLM_OK) printf("    %s\n", err.msg);
    cllm_lora_free(&lora);
    cllm_model_free(&ref);
    world_free(&w);
    return rc;
}

static const char *argv0;

/* The legacy-TRL run's log (kl_coef 0.2, target 6, horizon 10, 6 prompts a step, scores scaled):
   each step's KL coefficient is the controller applied to the previous step's coefficient and
   KL, and the mean scaled score is the mean MR over the running std + eps. */
static void check_legacy_ppo_log(const char *dir) {
    char path[128], *text = NULL, *line, *next;
    size_t len;
    double prev_coef = 0, prev_kl = 0, worst_kl = 0, worst_sc = 0;
    int step = 0, ok = 1;
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    if (cllm_read_file(path, &text, &len, NULL) != CLLM_OK) { check_true("legacy PPO: metrics.jsonl", 0); return; }
    for (line = text; *line; line = next) {
        cJSON *o;
        const cJSON *coef, *kl, *sc, *mr, *sd;
        next = strchr(line, '\n');
        if (next) *next++ = 0; else next = line + strlen(line);
        if (!(o = cJSON_Parse(line))) continue;
        coef = cJSON_GetObjectItem(o, "objective/kl_coef"); kl = cJSON_GetObjectItem(o, "objective/kl");
        sc = cJSON_GetObjectItem(o, "objective/scores"); mr = cJSON_GetObjectItem(o, "reward"); sd = cJSON_GetObjectItem(o, "objective/score_running_std");
        if (!coef || !kl || !sc || !mr || !sd) ok = 0;
        else {
            double want = step == 0 ? 0.2 : cllm_adaptive_kl_update(prev_coef, prev_kl, 6, 10, 6), d;
            d = fabs(coef->valuedouble - want) / want; if (d > worst_kl) worst_kl = d;
            d = fabs(sc->valuedouble - mr->valuedouble / (sd->valuedouble + FLT_EPSILON)); if (d > worst_sc) worst_sc = d;
            prev_coef = coef->valuedouble; prev_kl = kl->valuedouble;
            step++;
        }
        cJSON_Delete(o);
    }
    cllm_free_buffer(text);
    printf("    4 steps: kl_coef %.6f at the end; worst rel. difference %.1e (controller), abs %.1e (scaled scores)\n", prev_coef, worst_kl, worst_sc);
    check_true("legacy PPO: kl_coef follows the adaptive controller, scores are scaled by the running std (1e-12)",
               ok && step == 4 && worst_kl <= 1e-12 && worst_sc <= 1e-12 && prev_coef != 0.2);
}

static void test_resume(void) {
    static const char *names[4] = { "PPO (value head in the checkpoints)", "GRPO (beta 0.04: a reference)", "online DPO",
                                    "PPO, legacy TRL (score scaling and adaptive KL: their state in the checkpoints)" };
    int method, lora;
    for (method = 0; method < 4; method++) for (lora = 0; lora < 2; lora++) {
        char a[64], b[64], pa[128], pb[128];
        int ok;
        if (lora && (method == 1 || method == 3)) continue;    /* LoRA: PPO and online DPO are enough */
        printf("%s%s: 4 steps in one run vs 1 + resumed 3\n", names[method], lora ? " with LoRA (base = reference)" : "");
        snprintf(a, sizeof a, "build/tmp_online_ra%d%d", method, lora); snprintf(b, sizeof b, "build/tmp_online_rb%d%d", method, lora);
        clean(a); clean(b);
        ok = run_method(method, a, 0, 0, lora) == CLLM_OK && run_method(method, b, 1, 0, lora) == CLLM_OK && run_method(method, b, 0, 1, lora) == CLLM_OK;
        check_true("runs", ok);
        snprintf(pa, sizeof pa, "%s/metrics.jsonl", a); snprintf(pb, sizeof pb, "%s/metrics.jsonl", b);
        check_true("every logged number identical (4 lines): losses, rewards, KL, grad norms", check_same_metrics(pa, pb, 4));
        snprintf(pa, sizeof pa, "%s/final/model.safetensors", a); snprintf(pb, sizeof pb, "%s/final/model.safetensors", b);
        check_true("final weights identical, byte for byte", check_same_file(pa, pb));
        if (method == 3) check_legacy_ppo_log(a);
        if (method == 0) {
            snprintf(pa, sizeof pa, "%s/ckpt-4/value_head.safetensors", a); snprintf(pb, sizeof pb, "%s/ckpt-4/value_head.safetensors", b);
            check_true("value head and its AdamW moments identical", check_same_file(pa, pb));
            snprintf(pb, sizeof pb, "%s/final/value_head.safetensors", a);
            check_true("final/ holds the value head of the last step", check_same_file(pa, pb));
        }
    }
#if !defined(_WIN32)
    {   /* PPO killed with SIGKILL after step 3 (checkpoints every 2) in a fresh process */
        pid_t pid;
        int status = 0;
        printf("PPO: a child killed with SIGKILL after step 3, then resumed\n");
        clean("build/tmp_online_rk");
        fflush(stdout);
        pid = fork();
        if (pid == 0) { execl(argv0, argv0, "--kill-child", (char *)NULL); _exit(127); }
        waitpid(pid, &status, 0);
        check_true("the child died of SIGKILL; latest -> ckpt-2", WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && cllm__latest_step("build/tmp_online_rk") == 2);
        check_true("resumed", run_method(0, "build/tmp_online_rk", 0, 1, 0) == CLLM_OK);
        check_true("every logged number identical to the uninterrupted run", check_same_metrics("build/tmp_online_ra00/metrics.jsonl", "build/tmp_online_rk/metrics.jsonl", 4));
        check_true("final weights and value head identical",
                   check_same_file("build/tmp_online_ra00/final/model.safetensors", "build/tmp_online_rk/final/model.safetensors") &&
                   check_same_file("build/tmp_online_ra00/ckpt-4/value_head.safetensors", "build/tmp_online_rk/ckpt-4/value_head.safetensors"));
    }
#endif
}

int main(int argc, char **argv) {
    argv0 = argv[0];
    snprintf(model_dir, sizeof model_dir, "build/tmp_online_model");
    if (argc > 1 && !strcmp(argv[1], "--kill-child")) { kill_at = 3; run_method(0, "build/tmp_online_rk", 0, 0, 0); return 0; }
    test_ppo_vector();
    test_grpo_loss();
    test_ppo_stats();
    test_grpo_stats();
    check_true("tiny model", make_model(model_dir));
    test_prompts();
    test_logprob_check();
    test_trivial_reward();
    test_resume();
    return check_summary("test_online");
}
