/* ref_json.h - the training math of collabllm.h as JSON in, JSON out: `collabllm ref NAME`.

   Demonstrates calling the objectives of collabllm.h (cllm_dpo_loss, cllm_ppo_rewards, cllm_gae,
   cllm_ppo_loss, cllm_grpo_advantages, cllm_grpo_loss, cllm_adamw_step with cllm_clip_grad_norm_arrays, cllm_bleu) on plain arrays, so that any
   PyTorch / TRL / NLTK computation can be checked against them from a script. The fields of each
   NAME, with examples, are in data_fmt/ref.md (tests/test_ref_doc.c runs every one of them).

   ref_json(name, input, len, &output, &err): name is dpo, ppo-rewards, gae, ppo-loss, grpo, grpo-loss,
   adamw or bleu; input is one JSON object (len bytes); *output receives the result object as text
   (NUL-terminated; release it with free()). A failure names the field and what it must be, and
   gives no output.

   Uses the public API only. Include it after collabllm.h and cJSON (examples/collabllm.c and the
   fuzz target tests/fuzz/fuzz_ref_json.c do). Everything here is static. */
#ifndef REF_JSON_H
#define REF_JSON_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

/* Arrays of one call come from a pool that ref_json frees in one place. */
#define REF_POOL_MAX 32
typedef struct ref_pool {
    void *p[REF_POOL_MAX];
    int n;
} ref_pool;

static void *ref_calloc(ref_pool *pool, size_t n, size_t size) {
    void *p;
    if (pool->n == REF_POOL_MAX || !(p = calloc(n + 1, size))) return NULL;
    pool->p[pool->n++] = p;
    return p;
}

/* Records an error (one line of printable text) and returns its code. */
static cllm_result ref_fail(cllm_err *err, cllm_result code, const char *fmt, ...) {
    va_list ap;
    char *c;
    if (!err) return code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    for (c = err->msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';
    err->code = code;
    return code;
}

/* A number (or a boolean as 0/1) field; absent or null gives def. */
static cllm_result ref_num(const cJSON *in, const char *key, double def, double *out, cllm_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(in, key);
    *out = def;                                   /* written on every path, errors included */
    if (!j || cJSON_IsNull(j)) return CLLM_OK;
    if (cJSON_IsBool(j)) *out = cJSON_IsTrue(j) ? 1 : 0;
    else if (cJSON_IsNumber(j)) *out = j->valuedouble;
    else return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" must be a number", key);
    return CLLM_OK;
}

static cllm_result ref_int(const cJSON *in, const char *key, int def, int *out, cllm_err *err) {
    double d;
    cllm_result rc = ref_num(in, key, def, &d, err);
    *out = def;
    if (rc != CLLM_OK) return rc;
    if (d != floor(d) || fabs(d) > 2147483647.0)
        return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" must be an integer", key);
    *out = (int)d;
    return CLLM_OK;
}

/* A string field that must be one of names (its index goes to *out); absent gives 0. */
static cllm_result ref_enum(const cJSON *in, const char *key, const char *const *names, int count, int *out,
                            cllm_err *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(in, key);
    char list[256] = "";
    int i;
    *out = 0;
    if (!j || cJSON_IsNull(j)) return CLLM_OK;
    for (i = 0; i < count; i++) {
        size_t used = strlen(list);
        if (cJSON_IsString(j) && strcmp(j->valuestring, names[i]) == 0) {
            *out = i;
            return CLLM_OK;
        }
        snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "", names[i]);
    }
    return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" must be one of %s", key, list);
}

/* A row of numbers (booleans count as 0/1) into *out (allocated unless given). *n = -1 (must be
   given) or 0 (any length) on entry, or a length the row must have. */
static cllm_result ref_row(const cJSON *arr, const char *key, ref_pool *pool, double **out, int *n, cllm_err *err) {
    const cJSON *e;
    int count;
    if (!cJSON_IsArray(arr)) return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" must be an array of numbers", key);
    count = cJSON_GetArraySize(arr);
    if (*n > 0 && count != *n)
        return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\": %d values where %d are needed", key, count, *n);
    if (count < 1) return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" is empty", key);
    if (!*out && !(*out = (double *)ref_calloc(pool, (size_t)count, sizeof(double))))
        return ref_fail(err, CLLM_ERR_NOMEM, "out of memory reading \"%s\"", key);
    count = 0;
    cJSON_ArrayForEach(e, arr) {
        if (cJSON_IsBool(e)) (*out)[count++] = cJSON_IsTrue(e) ? 1 : 0;
        else if (cJSON_IsNumber(e)) (*out)[count++] = e->valuedouble;
        else return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" must hold only numbers", key);
    }
    *n = count;
    return CLLM_OK;
}

/* An array field; absent and optional: *out = NULL. */
static cllm_result ref_array(const cJSON *in, const char *key, int required, ref_pool *pool, double **out, int *n,
                             cllm_err *err) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(in, key);
    *out = NULL;
    if (arr && !cJSON_IsNull(arr)) return ref_row(arr, key, pool, out, n, err);
    return required ? ref_fail(err, CLLM_ERR_FORMAT, "missing \"%s\"", key) : CLLM_OK;
}

/* A rectangular B x T matrix (an array of equal-length rows). *B, *T: 0 = take them from this
   field, else the shape it must have. */
static cllm_result ref_matrix(const cJSON *in, const char *key, int required, ref_pool *pool, double **out, int *B,
                              int *T, cllm_err *err) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(in, key), *row;
    int b = 0, rows;
    cllm_result rc;
    *out = NULL;
    if (!arr || cJSON_IsNull(arr)) return required ? ref_fail(err, CLLM_ERR_FORMAT, "missing \"%s\"", key) : CLLM_OK;
    if (!cJSON_IsArray(arr) || (rows = cJSON_GetArraySize(arr)) < 1)
        return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" must be a non-empty array of rows", key);
    if (*B && rows != *B)
        return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" has %d rows where %d are needed", key, rows, *B);
    if (!*T) {
        row = cJSON_GetArrayItem(arr, 0);
        *T = cJSON_IsArray(row) ? cJSON_GetArraySize(row) : 0;
    }
    if (*T < 1) return ref_fail(err, CLLM_ERR_FORMAT, "\"%s\" must hold rows of numbers", key);
    if ((size_t)rows > SIZE_MAX / sizeof(double) / (size_t)*T)
        return ref_fail(err, CLLM_ERR_LIMIT, "\"%s\" is too large", key);
    if (!(*out = (double *)ref_calloc(pool, (size_t)rows * (size_t)*T, sizeof(double))))
        return ref_fail(err, CLLM_ERR_NOMEM, "out of memory reading \"%s\"", key);
    cJSON_ArrayForEach(row, arr) {
        double *dst = *out + (size_t)b * (size_t)*T;
        int t = *T;
        if ((rc = ref_row(row, key, pool, &dst, &t, err)) != CLLM_OK) return rc;
        b++;
    }
    *B = rows;
    return CLLM_OK;
}

static void ref_put_matrix(cJSON *out, const char *key, const double *x, int B, int T) {
    cJSON *m = cJSON_AddArrayToObject(out, key);
    int b;
    for (b = 0; m && b < B; b++) cJSON_AddItemToArray(m, cJSON_CreateDoubleArray(x + (size_t)b * T, T));
}

/* dpo: cllm_dpo_loss on n pairs. */
static cllm_result ref_dpo(const cJSON *in, cJSON *out, ref_pool *pool, cllm_err *err) {
    static const char *types[] = { "sigmoid", "robust", "hinge", "ipo" };
    cllm_dpo_config c;
    cllm_dpo_out o;
    double *pc, *pr, *ref_c, *ref_r, rf;
    int n = -1, type;
    cllm_result rc;
    memset(&c, 0, sizeof c);
    memset(&o, 0, sizeof o);
    if ((rc = ref_enum(in, "loss_type", types, 4, &type, err)) ||
        (rc = ref_num(in, "beta", 0.1, &c.beta, err)) ||
        (rc = ref_num(in, "label_smoothing", 0, &c.label_smoothing, err)) ||
        (rc = ref_num(in, "reference_free", 0, &rf, err)) ||
        (rc = ref_array(in, "policy_chosen_logps", 1, pool, &pc, &n, err)) ||
        (rc = ref_array(in, "policy_rejected_logps", 1, pool, &pr, &n, err)) ||
        (rc = ref_array(in, "ref_chosen_logps", rf == 0, pool, &ref_c, &n, err)) ||
        (rc = ref_array(in, "ref_rejected_logps", rf == 0, pool, &ref_r, &n, err))) return rc;
    if (!(c.beta > 0)) return ref_fail(err, CLLM_ERR_ARG, "\"beta\" must be > 0");
    c.loss_type = (cllm_dpo_loss_type)type;
    c.reference_free = rf != 0;
    o.losses = (double *)ref_calloc(pool, (size_t)n, sizeof(double));
    o.chosen_rewards = (double *)ref_calloc(pool, (size_t)n, sizeof(double));
    o.rejected_rewards = (double *)ref_calloc(pool, (size_t)n, sizeof(double));
    o.d_chosen = (double *)ref_calloc(pool, (size_t)n, sizeof(double));
    o.d_rejected = (double *)ref_calloc(pool, (size_t)n, sizeof(double));
    if (!o.losses || !o.chosen_rewards || !o.rejected_rewards || !o.d_chosen || !o.d_rejected)
        return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm_dpo_loss(&c, n, pc, pr, ref_c, ref_r, &o, err)) != CLLM_OK) return rc;
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

/* gae: cllm_gae (mode "trl" or "verl"). */
static cllm_result ref_gae(const cJSON *in, cJSON *out, ref_pool *pool, cllm_err *err) {
    static const char *modes[] = { "trl", "verl" };
    cllm_gae_input g;
    double *r, *v, *m, *adv, *ret, whiten;
    int mode;
    cllm_result rc;
    memset(&g, 0, sizeof g);
    if ((rc = ref_matrix(in, "rewards", 1, pool, &r, &g.B, &g.T, err)) ||
        (rc = ref_matrix(in, "values", 1, pool, &v, &g.B, &g.T, err)) ||
        (rc = ref_matrix(in, "mask", 0, pool, &m, &g.B, &g.T, err)) ||
        (rc = ref_num(in, "gamma", 1, &g.gamma, err)) ||
        (rc = ref_num(in, "lam", 0.95, &g.lam, err)) ||
        (rc = ref_num(in, "whiten", 0, &whiten, err)) ||
        (rc = ref_enum(in, "mode", modes, 2, &mode, err))) return rc;
    g.rewards = r;
    g.values = v;
    g.mask = m;
    g.mode = mode ? CLLM_GAE_SKIP : CLLM_GAE_TRL;
    g.whiten = whiten != 0;
    adv = (double *)ref_calloc(pool, (size_t)g.B * g.T, sizeof(double));
    ret = (double *)ref_calloc(pool, (size_t)g.B * g.T, sizeof(double));
    if (!adv || !ret) return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm_gae(&g, adv, ret, err)) != CLLM_OK) return rc;
    ref_put_matrix(out, "advantages", adv, g.B, g.T);
    ref_put_matrix(out, "returns", ret, g.B, g.T);
    return CLLM_OK;
}

/* ppo-loss: cllm_ppo_loss, with its gradients. */
static cllm_result ref_ppo_loss(const cJSON *in, cJSON *out, ref_pool *pool, cllm_err *err) {
    static const char *keys[] = { "logprobs", "old_logprobs", "advantages", "values", "old_values", "returns", "mask" };
    cllm_ppo_loss_input p;
    cllm_ppo_loss_out o;
    double *x[8];
    int i;
    cllm_result rc;
    memset(&p, 0, sizeof p);
    memset(&o, 0, sizeof o);
    for (i = 0; i < 7; i++)
        if ((rc = ref_matrix(in, keys[i], 1, pool, &x[i], &p.B, &p.T, err)) != CLLM_OK) return rc;
    if ((rc = ref_matrix(in, "value_mask", 0, pool, &x[7], &p.B, &p.T, err)) ||
        (rc = ref_num(in, "cliprange", 0.2, &p.cliprange, err)) ||
        (rc = ref_num(in, "cliprange_value", 0.2, &p.cliprange_value, err)) ||
        (rc = ref_num(in, "vf_coef", 0.1, &p.vf_coef, err))) return rc;
    p.logprobs = x[0];
    p.old_logprobs = x[1];
    p.advantages = x[2];
    p.values = x[3];
    p.old_values = x[4];
    p.returns = x[5];
    p.mask = x[6];
    p.value_mask = x[7];
    o.d_logprobs = (double *)ref_calloc(pool, (size_t)p.B * p.T, sizeof(double));
    o.d_values = (double *)ref_calloc(pool, (size_t)p.B * p.T, sizeof(double));
    if (!o.d_logprobs || !o.d_values) return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    if ((rc = cllm_ppo_loss(&p, &o, err)) != CLLM_OK) return rc;
    cJSON_AddNumberToObject(out, "pg_loss", o.pg_loss);
    cJSON_AddNumberToObject(out, "vf_loss", o.vf_loss);
    cJSON_AddNumberToObject(out, "loss", o.loss);
    cJSON_AddNumberToObject(out, "clipfrac", o.clipfrac);
    cJSON_AddNumberToObject(out, "vf_clipfrac", o.vf_clipfrac);
    cJSON_AddNumberToObject(out, "approxkl", o.approxkl);
    ref_put_matrix(out, "d_logprobs", o.d_logprobs, p.B, p.T);
    ref_put_matrix(out, "d_values", o.d_values, p.B, p.T);
    return CLLM_OK;
}

/* ppo-rewards: the sequence ends (given, or from the responses with cllm_ppo_sequence_end), then
   cllm_ppo_rewards. */
static cllm_result ref_ppo_rewards(const cJSON *in, cJSON *out, ref_pool *pool, cllm_err *err) {
    static const char *estimators[] = { "k1", "k2", "k3" };
    static const char *placements[] = { "after_eos", "last_token" };
    cllm_ppo_rewards_input p;
    double *lp, *ref, *scores, *ends = NULL, *resp = NULL, *rew, *kl;
    int n_scores, n_ends, est, place, pad, stop, b, t, *seq, *row;
    cllm_result rc;
    memset(&p, 0, sizeof p);
    if ((rc = ref_matrix(in, "logprobs", 1, pool, &lp, &p.B, &p.T, err)) ||
        (rc = ref_matrix(in, "ref_logprobs", 1, pool, &ref, &p.B, &p.T, err))) return rc;
    n_scores = n_ends = p.B;
    if ((rc = ref_array(in, "scores", 1, pool, &scores, &n_scores, err)) ||
        (rc = ref_array(in, "sequence_ends", 0, pool, &ends, &n_ends, err)) ||
        (rc = ref_matrix(in, "responses", 0, pool, &resp, &p.B, &p.T, err)) ||
        (rc = ref_int(in, "pad_token_id", 0, &pad, err)) ||
        (rc = ref_int(in, "stop_token_id", -1, &stop, err)) ||
        (rc = ref_num(in, "kl_coef", 0.05, &p.kl_coef, err)) ||
        (rc = ref_enum(in, "kl_estimator", estimators, 3, &est, err)) ||
        (rc = ref_enum(in, "placement", placements, 2, &place, err))) return rc;
    if (!ends == !resp)
        return ref_fail(err, CLLM_ERR_FORMAT, "give exactly one of \"sequence_ends\" and \"responses\" (+ "
                                              "\"pad_token_id\")");
    seq = (int *)ref_calloc(pool, (size_t)p.B, sizeof(int));
    row = (int *)ref_calloc(pool, (size_t)p.T, sizeof(int));
    rew = (double *)ref_calloc(pool, (size_t)p.B * p.T, sizeof(double));
    kl = (double *)ref_calloc(pool, (size_t)p.B * p.T, sizeof(double));
    if (!seq || !row || !rew || !kl) return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (b = 0; b < p.B && ends; b++) {
        if (ends[b] != floor(ends[b]) || ends[b] < -1 || ends[b] >= p.T)
            return ref_fail(err, CLLM_ERR_FORMAT, "\"sequence_ends\"[%d] must be an integer in [-1, %d]", b, p.T - 1);
        seq[b] = (int)ends[b];
    }
    for (b = 0; b < p.B && resp; b++) {
        for (t = 0; t < p.T; t++) {
            double id = resp[(size_t)b * p.T + t];
            if (id != floor(id) || fabs(id) > 2147483647.0)
                return ref_fail(err, CLLM_ERR_FORMAT, "\"responses\"[%d][%d] must be a token id (an integer)", b, t);
            row[t] = (int)id;
        }
        seq[b] = cllm_ppo_sequence_end(row, p.T, pad, stop);
    }
    p.logprobs = lp;
    p.ref_logprobs = ref;
    p.scores = scores;
    p.seq_end = seq;
    p.kl_estimator = (cllm_kl_estimator)est;
    p.placement = (cllm_reward_placement)place;
    if ((rc = cllm_ppo_rewards(&p, rew, kl, err)) != CLLM_OK) return rc;
    ref_put_matrix(out, "rewards", rew, p.B, p.T);
    ref_put_matrix(out, "kl", kl, p.B, p.T);
    cJSON_AddItemToObject(out, "sequence_ends", cJSON_CreateIntArray(seq, p.B));
    return CLLM_OK;
}

/* grpo: cllm_grpo_advantages (estimator "grpo" or "rloo"). */
static cllm_result ref_grpo(const cJSON *in, cJSON *out, ref_pool *pool, cllm_err *err) {
    static const char *estimators[] = { "grpo", "rloo" };
    double *r, *adv, scale, eps;
    int n = -1, G, est;
    cllm_result rc;
    if ((rc = ref_array(in, "rewards", 1, pool, &r, &n, err)) ||
        (rc = ref_int(in, "group_size", 0, &G, err)) ||
        (rc = ref_num(in, "scale_rewards", 1, &scale, err)) ||
        (rc = ref_num(in, "eps", 1e-4, &eps, err)) ||
        (rc = ref_enum(in, "estimator", estimators, 2, &est, err))) return rc;
    if (!(adv = (double *)ref_calloc(pool, (size_t)n, sizeof(double))))
        return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    rc = cllm_grpo_advantages(n, r, G, est ? CLLM_GROUP_RLOO : CLLM_GROUP_GRPO, !est && scale != 0, eps, adv, err);
    if (rc != CLLM_OK) return rc;
    cJSON_AddItemToObject(out, "advantages", cJSON_CreateDoubleArray(adv, n));
    return CLLM_OK;
}

/* grpo-loss: cllm_grpo_loss (TRL v0.19 GRPOTrainer's clipped token loss + beta k3). */
static cllm_result ref_grpo_loss(const cJSON *in, cJSON *out, ref_pool *pool, cllm_err *err) {
    static const char *types[] = { "bnpo", "grpo", "dr_grpo" };
    cllm_grpo_loss_input p;
    cllm_grpo_loss_out o;
    double *lp, *old = NULL, *ref = NULL, *adv, *mask = NULL, *d;
    int B = 0, T = 0, nb, type;
    cllm_result rc;
    memset(&p, 0, sizeof p);
    memset(&o, 0, sizeof o);
    if ((rc = ref_matrix(in, "logprobs", 1, pool, &lp, &B, &T, err)) ||
        (rc = ref_matrix(in, "old_logprobs", 0, pool, &old, &B, &T, err)) ||
        (rc = ref_matrix(in, "ref_logprobs", 0, pool, &ref, &B, &T, err)) ||
        (rc = ref_matrix(in, "mask", 0, pool, &mask, &B, &T, err)) ||
        ((nb = B), (rc = ref_array(in, "advantages", 1, pool, &adv, &nb, err))) ||
        (rc = ref_num(in, "beta", 0, &p.beta, err)) ||
        (rc = ref_num(in, "epsilon", 0.2, &p.eps_low, err)) ||
        (rc = ref_num(in, "epsilon_high", p.eps_low, &p.eps_high, err)) ||
        (rc = ref_int(in, "max_completion_length", T, &p.max_completion_length, err)) ||
        (rc = ref_enum(in, "loss_type", types, 3, &type, err))) return rc;
    d = (double *)ref_calloc(pool, (size_t)B * T, sizeof(double));
    if (!d) return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (!mask && !(mask = (double *)ref_calloc(pool, (size_t)B * T, sizeof(double))))
        return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (!cJSON_GetObjectItemCaseSensitive(in, "mask")) {
        int i;
        for (i = 0; i < B * T; i++) mask[i] = 1;
    }
    p.B = B;
    p.T = T;
    p.logprobs = lp;
    p.old_logprobs = old ? old : lp;            /* TRL's single update per generation: old = current, detached */
    p.ref_logprobs = ref;
    p.advantages = adv;
    p.mask = mask;
    p.loss_type = (cllm_grpo_loss_type)type;
    o.d_logprobs = d;
    if ((rc = cllm_grpo_loss(&p, &o, err)) != CLLM_OK) return rc;
    cJSON_AddNumberToObject(out, "loss", o.loss);
    cJSON_AddNumberToObject(out, "kl", o.kl);
    cJSON_AddNumberToObject(out, "clip_ratio", o.clip_ratio);
    ref_put_matrix(out, "d_logprobs", d, B, T);
    return CLLM_OK;
}

/* adamw: cllm_adamw_step (torch semantics) once per row of grads. Parameters and moments are
   cllm_float, so in a float build the results carry float rounding. */
static cllm_result ref_adamw(const cJSON *in, cJSON *out, ref_pool *pool, cllm_err *err) {
    double *p0, *g, *betas = NULL, lr = 0, max_norm = 0;
    cllm_adamw_config cfg = { 0 };
    cllm_float *p, *gf, *m, *v;
    int n = -1, steps = 0, nb = 2, s, i;
    size_t size;
    cJSON *list, *norms;
    cllm_result rc;
    if ((rc = ref_array(in, "params", 1, pool, &p0, &n, err)) ||
        (rc = ref_matrix(in, "grads", 1, pool, &g, &steps, &n, err)) ||
        (rc = ref_array(in, "betas", 0, pool, &betas, &nb, err)) ||
        (rc = ref_num(in, "lr", 1e-3, &lr, err)) ||
        (rc = ref_num(in, "eps", 1e-8, &cfg.eps, err)) ||
        (rc = ref_num(in, "weight_decay", 1e-2, &cfg.weight_decay, err)) ||
        (rc = ref_num(in, "max_grad_norm", 0, &max_norm, err))) return rc;
    if (!(max_norm >= 0)) return ref_fail(err, CLLM_ERR_FORMAT, "\"max_grad_norm\" must be >= 0 (0 = no clipping)");
    cfg.beta1 = betas ? betas[0] : 0.9;
    cfg.beta2 = betas ? betas[1] : 0.999;
    if (!(cfg.beta1 > 0 && cfg.beta1 < 1 && cfg.beta2 > 0 && cfg.beta2 < 1 && cfg.eps > 0))
        return ref_fail(err, CLLM_ERR_ARG, "\"betas\" must be in (0, 1) and \"eps\" > 0 (cllm_adamw_config reads 0 "
                                           "as the default)");
    p = (cllm_float *)ref_calloc(pool, (size_t)n, sizeof *p);
    gf = (cllm_float *)ref_calloc(pool, (size_t)n, sizeof *gf);
    m = (cllm_float *)ref_calloc(pool, (size_t)n, sizeof *m);
    v = (cllm_float *)ref_calloc(pool, (size_t)n, sizeof *v);
    if (!p || !gf || !m || !v) return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    for (i = 0; i < n; i++) p[i] = (cllm_float)p0[i];
    list = cJSON_AddArrayToObject(out, "params");
    norms = cJSON_AddArrayToObject(out, "grad_norm");
    size = (size_t)n;
    for (s = 0; s < steps; s++) {
        cJSON *row = cJSON_CreateArray();
        for (i = 0; i < n; i++) gf[i] = (cllm_float)g[(size_t)s * n + i];
        /* clip_grad_norm_ before the step, as the HF Trainer; the norm logged is the one before clipping */
        cJSON_AddItemToArray(norms, cJSON_CreateNumber(cllm_clip_grad_norm_arrays(&gf, &size, 1, max_norm)));
        cllm_adamw_step(p, gf, m, v, (size_t)n, s + 1, lr, &cfg);
        for (i = 0; i < n; i++) cJSON_AddItemToArray(row, cJSON_CreateNumber((double)p[i]));
        cJSON_AddItemToArray(list, row);
    }
    return CLLM_OK;
}

/* bleu: cllm_bleu (NLTK's sentence_bleu). */
static cllm_result ref_bleu(const cJSON *in, cJSON *out, ref_pool *pool, cllm_err *err) {
    static const char *levels[] = { "char", "token" };
    static const char *smooth[] = { "method0", "method1", "method2" };
    const cJSON *refs = cJSON_GetObjectItemCaseSensitive(in, "references"), *e;
    const cJSON *hyp = cJSON_GetObjectItemCaseSensitive(in, "hypothesis");
    const char **list;
    int level, smoothing, n = 0;
    double bleu;
    cllm_result rc;
    if ((rc = ref_enum(in, "level", levels, 2, &level, err)) ||
        (rc = ref_enum(in, "smoothing", smooth, 3, &smoothing, err))) return rc;
    if (!cJSON_IsString(hyp)) return ref_fail(err, CLLM_ERR_FORMAT, "\"hypothesis\" must be a string");
    if (!cJSON_IsArray(refs) || cJSON_GetArraySize(refs) < 1)
        return ref_fail(err, CLLM_ERR_FORMAT, "\"references\" must be a non-empty array of strings");
    if (!(list = (const char **)ref_calloc(pool, (size_t)cJSON_GetArraySize(refs), sizeof *list)))
        return ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    cJSON_ArrayForEach(e, refs) {
        if (!cJSON_IsString(e)) return ref_fail(err, CLLM_ERR_FORMAT, "\"references\" must hold only strings");
        list[n++] = e->valuestring;
    }
    if ((rc = cllm_bleu(n, list, hyp->valuestring, level, smoothing, &bleu, err)) != CLLM_OK) return rc;
    cJSON_AddNumberToObject(out, "bleu", bleu);
    return CLLM_OK;
}

/* The whole call: find the handler, parse the input (one JSON object, nothing after it), run it,
   print the result; on failure the message is prefixed with "ref NAME: ". */
static cllm_result ref_json(const char *name, const char *input, size_t len, char **output, cllm_err *err) {
    static const struct {
        const char *name;
        cllm_result (*fn)(const cJSON *, cJSON *, ref_pool *, cllm_err *);
    } table[] = {
        { "dpo", ref_dpo }, { "gae", ref_gae }, { "ppo-loss", ref_ppo_loss }, { "ppo-rewards", ref_ppo_rewards },
        { "grpo", ref_grpo }, { "grpo-loss", ref_grpo_loss }, { "adamw", ref_adamw }, { "bleu", ref_bleu },
    };
    ref_pool pool;
    cJSON *in = NULL, *out = NULL;
    const char *end = NULL;
    char *text = NULL;
    cllm_result rc = CLLM_OK;
    size_t i, k = sizeof table / sizeof table[0];
    *output = NULL;
    memset(&pool, 0, sizeof pool);
    for (i = 0; i < k && !(name && strcmp(name, table[i].name) == 0); i++) {}
    if (i == k)
        return ref_fail(err, CLLM_ERR_ARG, "ref: unknown name '%s' (dpo, gae, ppo-loss, ppo-rewards, grpo, "
                                           "grpo-loss, adamw, bleu)", name ? name : "");
    in = cJSON_ParseWithLengthOpts(input, len, &end, 0);
    if (!in || !cJSON_IsObject(in))
        rc = ref_fail(err, CLLM_ERR_FORMAT, "ref %s: the input is not one JSON object", name);
    for (; rc == CLLM_OK && end && end < input + len; end++)
        if (!strchr(" \t\r\n", *end))
            rc = ref_fail(err, CLLM_ERR_FORMAT, "ref %s: unexpected text after the JSON object", name);
    if (rc == CLLM_OK && !(out = cJSON_CreateObject())) rc = ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (rc == CLLM_OK && (rc = table[i].fn(in, out, &pool, err)) != CLLM_OK && err) {
        char msg[CLLM_ERRMSG_SIZE];
        memcpy(msg, err->msg, sizeof msg);
        snprintf(err->msg, sizeof err->msg, "ref %s: %.400s", name, msg);
    }
    if (rc == CLLM_OK && (text = cJSON_PrintUnformatted(out)) != NULL) *output = (char *)malloc(strlen(text) + 1);
    if (rc == CLLM_OK && !*output) rc = ref_fail(err, CLLM_ERR_NOMEM, "out of memory");
    if (rc == CLLM_OK) memcpy(*output, text, strlen(text) + 1);
    if (rc == CLLM_OK && err) {
        err->code = CLLM_OK;
        err->msg[0] = 0;
    }
    for (k = 0; k < (size_t)pool.n; k++) free(pool.p[k]);
    cJSON_free(text);
    cJSON_Delete(in);
    cJSON_Delete(out);
    return rc;
}

#endif /* REF_JSON_H */
