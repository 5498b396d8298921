/* test_objectives.c - DPO, PPO rewards / GAE / PPO loss, GRPO / RLOO and BLEU against
   (1) hand-built vectors with TRL v0.19.1, torch and NLTK 3.8 values, and
   (2) the tests/data/objectives/ files: PyTorch float64 (with autograd gradients) and NLTK on random
       inputs, written by tests/gen_objectives.py.
   Also AdamW, clip_grad_norm and the cosine schedule on torch float64 vectors,
   and the error paths. */
/* no-fast-path: objectives on given numbers, no model kernel (make test runs it in its first pass only) */
#include "../collabllm.h"
#include "check.h"
#include "../examples/ref_json.h"
#include <string.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, double)

/* ---- reading the generated cases ---- */

static cJSON *load_cases(const char *name) {
    char path[256], *text = NULL;
    size_t len;
    cllm_err err;
    cJSON *root, *cases;
    snprintf(path, sizeof path, "tests/data/objectives/%s.json", name);
    if (cllm_read_file(path, &text, &len, &err) != CLLM_OK) { check_true(err.msg, 0); return NULL; }
    root = cJSON_ParseWithLength(text, len);
    cllm_free_buffer(text);
    cases = root ? cJSON_DetachItemFromObjectCaseSensitive(root, "cases") : NULL;
    cJSON_Delete(root);
    if (!check_true(path, cJSON_IsArray(cases))) { cJSON_Delete(cases); return NULL; }
    return cases;
}

/* Numbers of a field, nested arrays flattened row by row (booleans count 0/1). */
static void flatten(const cJSON *j, double *out, size_t *n) {
    const cJSON *e;
    if (cJSON_IsArray(j)) { cJSON_ArrayForEach(e, j) flatten(e, out, n); }
    else if (cJSON_IsBool(j)) out[(*n)++] = cJSON_IsTrue(j);
    else if (cJSON_IsNumber(j)) out[(*n)++] = j->valuedouble;
}

static size_t count_numbers(const cJSON *j) {
    const cJSON *e;
    size_t n = 0;
    if (!cJSON_IsArray(j)) return cJSON_IsNumber(j) || cJSON_IsBool(j);
    cJSON_ArrayForEach(e, j) n += count_numbers(e);
    return n;
}

/* The field as a new double array; *rows and *cols give a matrix's shape (cols = 1 for a list). */
static double *field(const cJSON *c, const char *key, int *rows, int *cols) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c, key);
    size_t n = count_numbers(j), k = 0;
    double *x = (double *)calloc(n + 1, sizeof *x);
    flatten(j, x, &k);
    if (rows) *rows = cJSON_IsArray(j) ? cJSON_GetArraySize(j) : 1;
    if (cols) *cols = cJSON_IsArray(cJSON_GetArrayItem(j, 0)) ? cJSON_GetArraySize(cJSON_GetArrayItem(j, 0)) : 1;
    return x;
}

static double num(const cJSON *c, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c, key);
    return cJSON_IsBool(j) ? cJSON_IsTrue(j) : j ? j->valuedouble : 0;
}

static const char *str(const cJSON *c, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static int is(const cJSON *c, const char *key, const char *value) {
    const char *s = str(c, key);
    return s && strcmp(s, value) == 0;
}

/* ---- a comparison accumulated over many cases: per case the error is relative to that case's
   largest reference value (as check.h does for one tensor); we report the worst case. ---- */

typedef struct { const char *label; double maxabs, maxrel, rtol; size_t n; int cases, bad_shape; } acc;

static void acc_add(acc *a, const double *got, const double *want, size_t n) {
    double maxabs = 0, maxref = 0, rel;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (!(d <= maxabs)) maxabs = d;
        if (fabs(want[i]) > maxref) maxref = fabs(want[i]);
    }
    rel = maxref > 0 ? maxabs / maxref : maxabs > 0 ? HUGE_VAL : 0;
    if (!(rel <= a->maxrel)) a->maxrel = rel;
    if (!(maxabs <= a->maxabs)) a->maxabs = maxabs;
    a->n += n; a->cases++;
}

static void acc_field(acc *a, const double *got, const cJSON *c, const char *key, size_t n) {
    int r, k;
    double *want = field(c, key, &r, &k);
    if ((size_t)r * (size_t)k != n && !(n == 1 && r == 1)) a->bad_shape++;
    else acc_add(a, got, want, n);
    free(want);
}

static void acc_report(const acc *a) {
    int ok = a->maxrel <= a->rtol && a->cases > 0 && !a->bad_shape;
    check_count++;
    if (!ok) check_failures++;
    printf("  %-4s %-44s cases=%-4d n=%-6zu maxabs=%.3e rel=%.3e (tol %.0e)%s\n", ok ? "OK" : "FAIL", a->label,
           a->cases, a->n, a->maxabs, a->maxrel, a->rtol, a->bad_shape ? " SHAPE MISMATCH" : "");
}

#define TOL 1e-12   /* double against torch float64 / NLTK: only rounding differs */

/* ---- 1. hand-built vectors (TRL, torch, NLTK values) ---- */

static void vectors_dpo(void) {
    double pc[2] = { -10, -20 }, pr[2] = { -12, -18 }, rc[2] = { -11, -19 }, rr[2] = { -11, -19 };
    static const struct { int type; double eps; double want[2]; } rows[] = {
        { CLLM_DPO_SIGMOID, 0.0, { 0.598138869, 0.798138869 } },
        { CLLM_DPO_SIGMOID, 0.1, { 0.618138869, 0.778138869 } },
        { CLLM_DPO_ROBUST,  0.1, { 0.573138869, 0.823138869 } },
        { CLLM_DPO_HINGE,   0.0, { 0.8, 1.2 } },
        { CLLM_DPO_IPO,     0.0, { 9, 49 } },
    };
    static const char *names[] = { "sigmoid", "robust", "hinge", "ipo" };
    double losses[2], cr[2], rj[2], want_cr[2] = { 0.1, -0.1 }, want_rj[2] = { -0.1, 0.1 };
    size_t i;
    printf("vectors 1: DPO (beta 0.1, z = [2, -2]; 9 digits given)\n");
    for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        cllm_dpo_config c = { 0 };
        cllm_dpo_out o;
        char label[96];
        memset(&o, 0, sizeof o);
        o.losses = losses; o.chosen_rewards = cr; o.rejected_rewards = rj;
        c.loss_type = rows[i].type; c.label_smoothing = rows[i].eps;
        check_true("cllm_dpo_loss", cllm_dpo_loss(&c, 2, pc, pr, rc, rr, &o, NULL) == CLLM_OK);
        snprintf(label, sizeof label, "%s eps=%.1f per-pair losses", names[rows[i].type], rows[i].eps);
        check_tensor_d(label, losses, rows[i].want, 2, 1e-9);
        if (i == 0) {
            double mean = 0.698138869, acc_ = 0.5;
            check_tensor_d("sigmoid mean loss", &o.loss, &mean, 1, 1e-9);
            check_tensor_d("chosen rewards b(pc - rc)", cr, want_cr, 2, 1e-15);
            check_tensor_d("rejected rewards b(pr - rr)", rj, want_rj, 2, 1e-15);
            check_tensor_d("reward accuracies", &o.reward_accuracy, &acc_, 1, 0);
        }
    }
}

/* Vectors 2: the whole TRL v0.19 PPO update on a 2 x 5 batch, pad 0 != eos 2. */
static void vectors_ppo(void) {
    int resp[2][5] = { { 5, 6, 2, 0, 0 }, { 7, 8, 9, 10, 11 } }, seq[2], b, t;
    double logp[10] = { -1, -.5, -.2, -3, -3, -2, -1, -.7, -.4, -1.5 };
    double ref[10] = { -1.2, -.4, -.3, -2, -2, -1.5, -1.1, -.9, -.6, -1 };
    double val[10] = { .1, .2, .3, .4, .5, 0, -.1, -.2, -.3, -.4 }, score[2] = { 1, -.5 };
    double want_rew[10] = { -.01, .005, -.005, 1, 0, .025, -.005, -.01, -.01, -.475 };
    double want_adv[10] = { .789912, .73675, .665, .6, 0, -.429424, -.373078, -.282187, -.18125, -.075 };
    double want_ret[10] = { .889912, .93675, .965, 1, 0, -.429424, -.473078, -.482187, -.48125, -.475 };
    double want_white[10] = { 1.291757, 1.191295, 1.055708, 0, 0, -1.012443, -.905965, -.734207, -.543464, -.342682 };
    double dlp[10] = { .1, -.3, .05, 0, 0, .3, 0, -.1, .2, -.25 }, dv[10] = { .3, -.25, .1, .5, 0, .05, .4, -.3, 0, .1 };
    double rew[10], adv[10], ret[10], mask[10], vmask[10], nlp[10], vp[10], want_seq[2] = { 2, 4 }, got_seq[2];
    double want_loss[3] = { 0.05686382, 0.14992367, 0.07185619 }, got_loss[3];
    cllm_ppo_loss_out o;
    cllm_ppo_rewards_input rin;
    cllm_gae_input gin;
    cllm_ppo_loss_input pin;
    cllm_err err;
    printf("vectors 2: TRL PPO (k1, kl_coef .05, gamma 1, lam .95; 6 / 8 digits given)\n");
    for (b = 0; b < 2; b++) { seq[b] = cllm_ppo_sequence_end(resp[b], 5, 0, -1); got_seq[b] = seq[b]; }
    check_tensor_d("sequence ends (pad 0, eos 2)", got_seq, want_seq, 2, 0);
    for (b = 0; b < 2; b++) for (t = 0; t < 5; t++) {
        int i = b * 5 + t;
        mask[i] = t <= seq[b];                          /* ~pm */
        vmask[i] = t <= seq[b] + 1;                     /* ~pm1 */
        if (!vmask[i]) val[i] = 0;                      /* TRL zeroes values after end+1 */
    }
    rin = (cllm_ppo_rewards_input){ .B = 2, .T = 5, .logprobs = logp, .ref_logprobs = ref, .scores = score,
                                    .seq_end = seq, .kl_coef = 0.05 };    /* k1, the score after EOS */
    check_true("cllm_ppo_rewards", cllm_ppo_rewards(&rin, rew, NULL, &err) == CLLM_OK);
    check_tensor_d("rewards (score one slot after EOS)", rew, want_rew, 10, 1e-12);
    gin = (cllm_gae_input){ .B = 2, .T = 5, .rewards = rew, .values = val, .mask = mask, .gamma = 1, .lam = 0.95 };
    check_true("cllm_gae", cllm_gae(&gin, adv, ret, &err) == CLLM_OK);
    check_tensor_d("raw advantages", adv, want_adv, 10, 1e-6);
    check_tensor_d("returns", ret, want_ret, 10, 1e-6);
    gin.whiten = 1;
    check_true("cllm_gae whiten", cllm_gae(&gin, adv, ret, &err) == CLLM_OK);
    check_tensor_d("whitened advantages (masked_whiten over ~pm)", adv, want_white, 10, 1e-6);
    for (t = 0; t < 10; t++) {
        nlp[t] = mask[t] ? logp[t] + dlp[t] : 1.0;     /* INVALID_LOGPROB on both sides after the end */
        logp[t] = mask[t] ? logp[t] : 1.0;
        vp[t] = vmask[t] ? val[t] + dv[t] : 0;
    }
    memset(&o, 0, sizeof o);
    pin = (cllm_ppo_loss_input){ .B = 2, .T = 5, .logprobs = nlp, .old_logprobs = logp, .advantages = adv, .values = vp,
                                 .old_values = val, .returns = ret, .mask = mask, .value_mask = vmask,
                                 .cliprange = 0.2, .cliprange_value = 0.2, .vf_coef = 0.1 };
    check_true("cllm_ppo_loss", cllm_ppo_loss(&pin, &o, &err) == CLLM_OK);
    got_loss[0] = o.pg_loss; got_loss[1] = o.vf_loss; got_loss[2] = o.loss;
    check_tensor_d("pg_loss, vf_loss, loss", got_loss, want_loss, 3, 1e-7);
}

/* pad == eos, stop-token truncation and empty responses (a pitfall reported upstream in TRL) */
static void vectors_sequence_ends(void) {
    int pad_is_eos[5] = { 5, 6, 2, 2, 2 }, stop[5] = { 5, 2, 7, 8, 0 }, empty[3] = { 0, 0, 0 };
    double lp[5] = { -1, -1, -1, -1, -1 }, ref[5] = { -1, -1, -1, -1, -1 }, score = 3, rew[5];
    int seq;
    cllm_ppo_rewards_input in = { .B = 1, .T = 5, .logprobs = lp, .ref_logprobs = ref, .scores = &score, .seq_end = &seq,
                                  .kl_coef = 0.05 };
    printf("sequence ends and reward placement variants\n");
    seq = cllm_ppo_sequence_end(pad_is_eos, 5, 2, -1);
    check_true("pad == eos: the end is the token before the EOS (1)", seq == 1);
    cllm_ppo_rewards(&in, rew, NULL, NULL);
    check_true("pad == eos, TRL placement: the score lands on the EOS slot (2)", rew[2] == 3 && rew[1] == 0);
    in.placement = CLLM_REWARD_LAST_TOKEN;
    cllm_ppo_rewards(&in, rew, NULL, NULL);
    check_true("last-token placement (legacy TRL, OpenRLHF, verl): on the end (1)", rew[1] == 3 && rew[2] == 0);
    check_true("stop token 2 truncates: end = the stop token's position (1)", cllm_ppo_sequence_end(stop, 5, 0, 2) == 1);
    check_true("no stop token: end before the first pad (3)", cllm_ppo_sequence_end(stop, 5, 0, -1) == 3);
    check_true("no pad: end = L-1", cllm_ppo_sequence_end(pad_is_eos, 5, 9, -1) == 4);
    seq = cllm_ppo_sequence_end(empty, 3, 0, -1);
    check_true("a response that starts with pad: end -1", seq == -1);
    in.T = 3;
    in.placement = CLLM_REWARD_AFTER_EOS;
    cllm_ppo_rewards(&in, rew, NULL, NULL);
    check_true("an empty response gets its score at t = 0", rew[0] == 3 && rew[1] == 0);
}

static void vectors_optim(void) {
    cllm_float p[3] = { 1, -2, 0.5f }, m[3] = { 0 }, v[3] = { 0 }, g[3];
    cllm_adamw_config opt = { .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01 };
    static const double grads[3][3] = { { .1, -.2, .3 }, { 0, .5, -.1 }, { 1, 1, 1 } };
    static const double want[3][3] = { { 0.89900001, -1.898000005, 0.39950000333 },
                                       { 0.831095194, -1.940323530, 0.359078648 },
                                       { 0.761550381, -2.010835261, 0.288486022 } };
    cllm_float g1[2] = { 3, 4 }, g2[1] = { 12 }, *gs[2];
    size_t sizes[2] = { 2, 1 };
    double norm, want_norm = 13, want_g[3] = { 0.230769213, 0.307692284, 0.923076852 }, lr[11];
    double want_lr[11] = { 0, .5, 1, .96194, .853553, .691342, .5, .308658, .146447, .03806, 0 };
    cllm_float got_g[3];
    int s, k;
    printf("vectors 4: AdamW (float32 storage), clip_grad_norm_, cosine schedule\n");
    for (s = 0; s < 3; s++) {
        char label[64];
        for (k = 0; k < 3; k++) g[k] = (cllm_float)grads[s][k];
        cllm_adamw_step(p, g, m, v, 3, s + 1, 0.1, &opt);
        snprintf(label, sizeof label, "AdamW params after step %d", s + 1);
        check_tensor(label, p, want[s], 3, sizeof(cllm_float) == 4 ? 1e-6 : 1e-9);
    }
    gs[0] = g1; gs[1] = g2;
    norm = cllm_clip_grad_norm_arrays(gs, sizes, 2, 1.0);
    check_tensor_d("clip_grad_norm_ total norm", &norm, &want_norm, 1, 1e-15);
    got_g[0] = g1[0]; got_g[1] = g1[1]; got_g[2] = g2[0];
    check_tensor("clipped gradients", got_g, want_g, 3, 1e-7);
    for (s = 0; s <= 10; s++) lr[s] = cllm_lr_at(CLLM_SCHED_COSINE, 1.0, s, 2, 10);
    check_tensor_d("cosine schedule W=2 T=10, steps 0..10", lr, want_lr, 11, 1e-5);
}

static void vectors_bleu(void) {
    static const struct { const char *ref, *hyp; int level, smoothing; double want; } rows[] = {
        { "the cat sat on the mat", "the cat sat on a mat", CLLM_BLEU_TOKEN, 0, 0.537284965911771 },
        { "the cat sat on the mat", "the cat sat on a mat", CLLM_BLEU_TOKEN, 1, 0.537284965911771 },
        { "the cat sat on the mat", "the cat sat on a mat", CLLM_BLEU_TOKEN, 2, 0.6389431042462724 },
        { "the cat sat on the mat", "the cat sat on a mat", CLLM_BLEU_CHAR, 0, 0.7762535144898028 },
        { "Optimism improves health.", "Optimism improves your health.", CLLM_BLEU_CHAR, 0, 0.7959590402572781 },
        { "a b c d", "a b c e", CLLM_BLEU_TOKEN, 0, 8.636168555094496e-78 },
        { "a b c d", "x y z w", CLLM_BLEU_TOKEN, 0, 0 },
        { "a b c d", "a b c", CLLM_BLEU_TOKEN, 0, 8.751273976943354e-78 },
    };
    size_t i;
    double worst = 0;
    int ok = 1;
    printf("vectors 5: BLEU (NLTK 3.8 values, 16 digits)\n");
    for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        double got = -1, d;
        ok &= cllm_bleu(1, &rows[i].ref, rows[i].hyp, rows[i].level, rows[i].smoothing, &got, NULL) == CLLM_OK;
        d = rows[i].want ? fabs(got - rows[i].want) / rows[i].want : fabs(got);
        if (!(d <= worst)) worst = d;
        printf("       %-5s method%d  %-32s %.17g (want %.17g)\n", rows[i].level ? "token" : "char", rows[i].smoothing, rows[i].hyp, got, rows[i].want);
    }
    printf("       max relative difference %.3e\n", worst);
    check_true("BLEU vectors within 1e-14 relative", ok && worst <= 1e-14);
}

/* ---- 2. PyTorch / NLTK on random inputs ---- */

static void torch_dpo(void) {
    static const char *types[] = { "sigmoid", "robust", "hinge", "ipo" };
    acc a_loss = { "DPO per-pair losses", 0, 0, TOL, 0, 0, 0 }, a_mean = { "DPO mean loss", 0, 0, TOL, 0, 0, 0 };
    acc a_rew = { "DPO chosen/rejected rewards", 0, 0, TOL, 0, 0, 0 }, a_met = { "DPO accuracies, margins", 0, 0, TOL, 0, 0, 0 };
    acc a_grad = { "DPO d loss / d policy logps (autograd)", 0, 0, TOL, 0, 0, 0 };
    cJSON *cases = load_cases("dpo"), *c;
    if (!cases) return;
    printf("PyTorch float64 (tests/data/objectives/dpo.json)\n");
    cJSON_ArrayForEach(c, cases) {
        int n, k;
        double *pc = field(c, "policy_chosen_logps", &n, NULL), *pr = field(c, "policy_rejected_logps", NULL, NULL);
        double *rc = field(c, "ref_chosen_logps", NULL, NULL), *rr = field(c, "ref_rejected_logps", NULL, NULL);
        double *buf = (double *)calloc(5 * (size_t)n, sizeof(double)), met[2];
        cllm_dpo_config cfg = { 0 };
        cllm_dpo_out o;
        memset(&o, 0, sizeof o);
        for (k = 0; k < 4; k++) if (is(c, "loss_type", types[k])) cfg.loss_type = k;
        cfg.beta = num(c, "beta"); cfg.label_smoothing = num(c, "label_smoothing"); cfg.reference_free = (int)num(c, "reference_free");
        o.losses = buf; o.chosen_rewards = buf + n; o.rejected_rewards = buf + 2 * n; o.d_chosen = buf + 3 * n; o.d_rejected = buf + 4 * n;
        if (cllm_dpo_loss(&cfg, n, pc, pr, rc, rr, &o, NULL) != CLLM_OK) a_loss.bad_shape++;
        acc_field(&a_loss, o.losses, c, "losses", (size_t)n);
        acc_field(&a_mean, &o.loss, c, "loss", 1);
        acc_field(&a_rew, o.chosen_rewards, c, "chosen_rewards", (size_t)n);
        acc_field(&a_rew, o.rejected_rewards, c, "rejected_rewards", (size_t)n);
        met[0] = o.reward_accuracy; met[1] = o.reward_margin;
        acc_field(&a_met, &met[0], c, "reward_accuracies", 1);
        acc_field(&a_met, &met[1], c, "reward_margins", 1);
        acc_field(&a_grad, o.d_chosen, c, "d_policy_chosen_logps", (size_t)n);
        acc_field(&a_grad, o.d_rejected, c, "d_policy_rejected_logps", (size_t)n);
        free(pc); free(pr); free(rc); free(rr); free(buf);
    }
    acc_report(&a_loss); acc_report(&a_mean); acc_report(&a_rew); acc_report(&a_met); acc_report(&a_grad);
    cJSON_Delete(cases);
}

static void torch_ppo_rewards(void) {
    acc a_seq = { "TRL sequence ends (truncation, pad==eos)", 0, 0, 0, 0, 0, 0 };
    acc a_kl = { "per-token KL (k1, k2, k3)", 0, 0, TOL, 0, 0, 0 }, a_rew = { "per-token rewards (both placements)", 0, 0, TOL, 0, 0, 0 };
    static const char *est[] = { "k1", "k2", "k3" };
    cJSON *cases = load_cases("ppo_rewards"), *c;
    if (!cases) return;
    printf("PyTorch float64 (tests/data/objectives/ppo_rewards.json)\n");
    cJSON_ArrayForEach(c, cases) {
        int B, T, b, t, k, e = 0, *seq, *row;
        double *resp = field(c, "responses", &B, &T), *lp = field(c, "logprobs", NULL, NULL), *ref = field(c, "ref_logprobs", NULL, NULL);
        double *scores = field(c, "scores", NULL, NULL), *rew = (double *)calloc((size_t)B * T, sizeof(double));
        double *kl = (double *)calloc((size_t)B * T, sizeof(double)), *seqd = (double *)calloc((size_t)B, sizeof(double));
        seq = (int *)calloc((size_t)B, sizeof(int)); row = (int *)calloc((size_t)T, sizeof(int));
        for (k = 0; k < 3; k++) if (is(c, "kl_estimator", est[k])) e = k;
        for (b = 0; b < B; b++) {
            for (t = 0; t < T; t++) row[t] = (int)resp[b * T + t];
            seq[b] = cllm_ppo_sequence_end(row, T, (int)num(c, "pad_token_id"), (int)num(c, "stop_token_id"));
            seqd[b] = seq[b];
        }
        acc_field(&a_seq, seqd, c, "sequence_ends", (size_t)B);
        cllm_ppo_rewards_input in = { .B = B, .T = T, .logprobs = lp, .ref_logprobs = ref, .scores = scores, .seq_end = seq,
                                      .kl_coef = num(c, "kl_coef"), .kl_estimator = (cllm_kl_estimator)e,
                                      .placement = is(c, "placement", "last_token") ? CLLM_REWARD_LAST_TOKEN : CLLM_REWARD_AFTER_EOS };
        if (cllm_ppo_rewards(&in, rew, kl, NULL) != CLLM_OK) a_rew.bad_shape++;
        acc_field(&a_kl, kl, c, "kl", (size_t)B * T);
        acc_field(&a_rew, rew, c, "rewards", (size_t)B * T);
        free(resp); free(lp); free(ref); free(scores); free(rew); free(kl); free(seqd); free(seq); free(row);
    }
    acc_report(&a_seq); acc_report(&a_kl); acc_report(&a_rew);
    cJSON_Delete(cases);
}

static void torch_gae(void) {
    acc a_adv = { "GAE advantages (trl/verl, +-whiten)", 0, 0, TOL, 0, 0, 0 }, a_ret = { "GAE returns", 0, 0, TOL, 0, 0, 0 };
    cJSON *cases = load_cases("gae"), *c;
    if (!cases) return;
    printf("PyTorch float64 (tests/data/objectives/gae.json)\n");
    cJSON_ArrayForEach(c, cases) {
        int B, T;
        double *r = field(c, "rewards", &B, &T), *v = field(c, "values", NULL, NULL), *m = field(c, "mask", NULL, NULL);
        double *adv = (double *)calloc((size_t)B * T, sizeof(double)), *ret = (double *)calloc((size_t)B * T, sizeof(double));
        cllm_gae_input in = { .B = B, .T = T, .rewards = r, .values = v, .mask = m, .gamma = num(c, "gamma"), .lam = num(c, "lam"),
                              .mode = is(c, "mode", "verl") ? CLLM_GAE_SKIP : CLLM_GAE_TRL, .whiten = (int)num(c, "whiten") };
        if (cllm_gae(&in, adv, ret, NULL) != CLLM_OK) a_adv.bad_shape++;
        acc_field(&a_adv, adv, c, "advantages", (size_t)B * T);
        acc_field(&a_ret, ret, c, "returns", (size_t)B * T);
        free(r); free(v); free(m); free(adv); free(ret);
    }
    acc_report(&a_adv); acc_report(&a_ret);
    cJSON_Delete(cases);
}

static void torch_ppo_loss(void) {
    acc a_loss = { "PPO pg_loss, vf_loss, loss", 0, 0, TOL, 0, 0, 0 }, a_frac = { "PPO clipfrac, vf_clipfrac, approxkl", 0, 0, TOL, 0, 0, 0 };
    acc a_dlp = { "PPO d loss / d logprobs (autograd)", 0, 0, TOL, 0, 0, 0 }, a_dv = { "PPO d loss / d values (autograd)", 0, 0, TOL, 0, 0, 0 };
    static const char *keys[] = { "logprobs", "old_logprobs", "advantages", "values", "old_values", "returns", "mask", "value_mask" };
    cJSON *cases = load_cases("ppo_loss"), *c;
    if (!cases) return;
    printf("PyTorch float64 (tests/data/objectives/ppo_loss.json)\n");
    cJSON_ArrayForEach(c, cases) {
        int B, T, k;
        double *x[8], got[3];
        cllm_ppo_loss_out o;
        cllm_ppo_loss_input in;
        for (k = 0; k < 8; k++) x[k] = field(c, keys[k], &B, &T);
        memset(&o, 0, sizeof o);
        o.d_logprobs = (double *)calloc((size_t)B * T, sizeof(double));
        o.d_values = (double *)calloc((size_t)B * T, sizeof(double));
        in = (cllm_ppo_loss_input){ .B = B, .T = T, .logprobs = x[0], .old_logprobs = x[1], .advantages = x[2], .values = x[3],
                                    .old_values = x[4], .returns = x[5], .mask = x[6], .value_mask = x[7],
                                    .cliprange = num(c, "cliprange"), .cliprange_value = num(c, "cliprange_value"),
                                    .vf_coef = num(c, "vf_coef") };
        if (cllm_ppo_loss(&in, &o, NULL) != CLLM_OK) a_loss.bad_shape++;
        got[0] = o.pg_loss; got[1] = o.vf_loss; got[2] = o.loss;
        acc_field(&a_loss, &got[0], c, "pg_loss", 1); acc_field(&a_loss, &got[1], c, "vf_loss", 1); acc_field(&a_loss, &got[2], c, "loss", 1);
        got[0] = o.clipfrac; got[1] = o.vf_clipfrac; got[2] = o.approxkl;
        acc_field(&a_frac, &got[0], c, "clipfrac", 1); acc_field(&a_frac, &got[1], c, "vf_clipfrac", 1); acc_field(&a_frac, &got[2], c, "approxkl", 1);
        acc_field(&a_dlp, o.d_logprobs, c, "d_logprobs", (size_t)B * T);
        acc_field(&a_dv, o.d_values, c, "d_values", (size_t)B * T);
        for (k = 0; k < 8; k++) free(x[k]);
        free(o.d_logprobs); free(o.d_values);
    }
    acc_report(&a_loss); acc_report(&a_frac); acc_report(&a_dlp); acc_report(&a_dv);
    cJSON_Delete(cases);
}

static void torch_grpo(void) {
    acc a = { "GRPO / RLOO advantages", 0, 0, TOL, 0, 0, 0 };
    cJSON *cases = load_cases("grpo"), *c;
    if (!cases) return;
    printf("PyTorch float64 (tests/data/objectives/grpo.json)\n");
    cJSON_ArrayForEach(c, cases) {
        int n;
        double *r = field(c, "rewards", &n, NULL), *adv = (double *)calloc((size_t)n, sizeof(double));
        if (cllm_grpo_advantages(n, r, (int)num(c, "group_size"), is(c, "estimator", "rloo") ? CLLM_GROUP_RLOO : CLLM_GROUP_GRPO,
                                 (int)num(c, "scale_rewards"), num(c, "eps"), adv, NULL) != CLLM_OK) a.bad_shape++;
        acc_field(&a, adv, c, "advantages", (size_t)n);
        free(r); free(adv);
    }
    acc_report(&a);
    cJSON_Delete(cases);
}

static void nltk_bleu(void) {
    acc a_char = { "BLEU, character level (per case relative)", 0, 0, TOL, 0, 0, 0 };
    acc a_tok = { "BLEU, token level (per case relative)", 0, 0, TOL, 0, 0, 0 };
    int zeros_ok = 1, zeros = 0, tiny = 0;
    cJSON *cases = load_cases("bleu"), *c;
    if (!cases) return;
    printf("NLTK sentence_bleu (tests/data/objectives/bleu.json)\n");
    cJSON_ArrayForEach(c, cases) {
        const cJSON *refs = cJSON_GetObjectItemCaseSensitive(c, "references"), *e;
        const char *list[8];
        int n = 0, smoothing = is(c, "smoothing", "method1") ? 1 : is(c, "smoothing", "method2") ? 2 : 0;
        int token = is(c, "level", "token");
        double got = -1, want = num(c, "bleu");
        cJSON_ArrayForEach(e, refs) if (n < 8) list[n++] = e->valuestring;
        if (cllm_bleu(n, list, str(c, "hypothesis"), token ? CLLM_BLEU_TOKEN : CLLM_BLEU_CHAR, smoothing, &got, NULL) != CLLM_OK) a_char.bad_shape++;
        acc_add(token ? &a_tok : &a_char, &got, &want, 1);
        if (want == 0) { zeros++; zeros_ok &= got == 0; }
        if (want > 0 && want < 1e-50) tiny++;
    }
    acc_report(&a_char); acc_report(&a_tok);
    printf("       (%d cases score exactly 0, %d score ~1e-78 from a zero-match order)\n", zeros, tiny);
    check_true("every NLTK zero is exactly 0", zeros_ok);
    cJSON_Delete(cases);
}

/* ---- 3. edge cases and errors ---- */

static cllm_result ref_call(const char *name, const char *json, char **out, cllm_err *err) {
    return ref_json(name, json, strlen(json), out, err);
}

static void errors(void) {
    double x[4] = { 1, 2, 3, 4 }, one_mask[4] = { 0, 1, 0, 0 }, adv[4], bleu = -1, bleu2 = -2;
    const char *r1 = "a\xff" "b", *r2 = "axb", *bad_level[1];
    cllm_dpo_config c = { 0 };
    cllm_dpo_out o;
    cllm_ppo_loss_out po;
    cllm_ppo_loss_input pin;
    cllm_err err;
    char *out = NULL;
    printf("edge cases and errors\n");
    memset(&po, 0, sizeof po);
    memset(&o, 0, sizeof o);
    check_true("whitening with one unmasked value fails (Bessel)", cllm_masked_whiten(x, one_mask, 4, 0, 0, &err) == CLLM_ERR_ARG);
    printf("       -> %s\n", err.msg);
    check_true("biased whitening accepts one value", cllm_masked_whiten(x, one_mask, 4, 0, 1, &err) == CLLM_OK);
    check_true("GRPO: 4 rewards do not split into groups of 3", cllm_grpo_advantages(4, x, 3, CLLM_GROUP_GRPO, 1, 1e-4, adv, &err) == CLLM_ERR_ARG);
    check_true("RLOO needs groups of >= 2", cllm_grpo_advantages(4, x, 1, CLLM_GROUP_RLOO, 0, 0, adv, &err) == CLLM_ERR_ARG);
    check_true("GRPO mean-only accepts groups of 1 (advantages 0)", cllm_grpo_advantages(4, x, 1, CLLM_GROUP_GRPO, 0, 0, adv, &err) == CLLM_OK && adv[3] == 0);
    c.loss_type = CLLM_DPO_ROBUST; c.label_smoothing = 0.5;
    check_true("robust DPO rejects label_smoothing 0.5", cllm_dpo_loss(&c, 1, x, x, x, x, &o, &err) == CLLM_ERR_ARG);
    c.loss_type = CLLM_DPO_SIGMOID; c.label_smoothing = 0;
    check_true("DPO without reference logps needs reference_free", cllm_dpo_loss(&c, 1, x, x, NULL, NULL, &o, &err) == CLLM_ERR_ARG);
    c.reference_free = 1;
    check_true("reference_free accepts missing reference logps", cllm_dpo_loss(&c, 1, x, x + 1, NULL, NULL, &o, &err) == CLLM_OK);
    pin = (cllm_ppo_loss_input){ .B = 1, .T = 1, .logprobs = x, .old_logprobs = x, .advantages = x, .values = x,
                                 .old_values = x, .returns = x, .mask = one_mask, .cliprange = 0.2, .cliprange_value = 0.2 };
    check_true("PPO loss with an all-zero mask fails", cllm_ppo_loss(&pin, &po, &err) == CLLM_ERR_ARG);
    check_true("an invalid UTF-8 byte is one character",
               cllm_bleu(1, &r1, r1, CLLM_BLEU_CHAR, 1, &bleu, NULL) == CLLM_OK && cllm_bleu(1, &r2, r2, CLLM_BLEU_CHAR, 1, &bleu2, NULL) == CLLM_OK && bleu == bleu2);
    bad_level[0] = "x";
    check_true("BLEU rejects an unknown level", cllm_bleu(1, bad_level, "x", 7, 0, &bleu, &err) == CLLM_ERR_ARG);
    check_true("ref: unknown name", ref_call("nope", "{}", &out, &err) == CLLM_ERR_ARG);
    check_true("ref: not JSON", ref_call("grpo", "{\"rewards\":", &out, &err) == CLLM_ERR_FORMAT);
    check_true("ref: text after the object", ref_call("grpo", "{} x", &out, &err) == CLLM_ERR_FORMAT);
    check_true("ref: missing field", ref_call("grpo", "{}", &out, &err) == CLLM_ERR_FORMAT);
    printf("       -> %s\n", err.msg);
    check_true("ref: ragged matrix", ref_call("gae", "{\"rewards\":[[1,2],[3]],\"values\":[[1,2],[3,4]]}", &out, &err) == CLLM_ERR_FORMAT);
    printf("       -> %s\n", err.msg);
    check_true("ref: wrong enum", ref_call("dpo", "{\"loss_type\":\"kto\"}", &out, &err) == CLLM_ERR_FORMAT);
    printf("       -> %s\n", err.msg);
    check_true("ref: beta 0 rejected", ref_call("dpo", "{\"beta\":0,\"policy_chosen_logps\":[1],\"policy_rejected_logps\":[1],\"ref_chosen_logps\":[1],\"ref_rejected_logps\":[1]}", &out, &err) == CLLM_ERR_ARG);
    check_true("ref: outputs stay NULL on error", out == NULL);
    {   /* 40 rows, more than the JSON layer's pool has slots: nothing may be allocated per row */
        char json[4096] = "{\"logprobs\":[", *p;
        int b;
        for (b = 0; b < 40; b++) strcat(json, b ? ",[-1,-1]" : "[-1,-1]");
        strcat(json, "],\"ref_logprobs\":[");
        for (b = 0; b < 40; b++) strcat(json, b ? ",[-1,-1]" : "[-1,-1]");
        strcat(json, "],\"responses\":[");
        for (b = 0; b < 40; b++) strcat(json, b ? ",[5,0]" : "[5,0]");
        strcat(json, "],\"scores\":[");
        for (b = 0; b < 40; b++) strcat(json, b ? ",1" : "1");
        strcat(json, "]}");
        check_true("ref ppo-rewards with 40 response rows", ref_call("ppo-rewards", json, &out, &err) == CLLM_OK);
        p = out ? strstr(out, "\"sequence_ends\":[0,0,") : NULL;
        check_true("  ... gives their ends", p != NULL);
        free(out);
    }
}

/* Legacy TRL's running score moments (Chan's merge, one batch at a time) against the two-pass
   mean and unbiased std of every value seen so far, and its adaptive KL controller against the
   formula of legacy TRL v0.11.4's AdaptiveKLController (one step below, one inside, one above the
   clip). */
static void legacy_trl(void) {
    static const int sizes[4] = { 5, 1, 7, 3 };
    double all[16], got[2], want[2], bm, bs;
    cllm_running_moments rm;
    int k, i, n = 0;
    cllm_running_moments_init(&rm);
    for (k = 0; k < 4; k++) {
        double m = 0, v = 0, bmw = 0, bv = 0;
        for (i = 0; i < sizes[k]; i++) all[n + i] = sin(3.7 * (n + i) + 1) * (k + 1) + 0.3 * k;
        cllm_running_moments_update(&rm, all + n, sizes[k], &bm, &bs);
        for (i = 0; i < sizes[k]; i++) bmw += all[n + i];
        bmw /= sizes[k];
        for (i = 0; i < sizes[k]; i++) bv += (all[n + i] - bmw) * (all[n + i] - bmw);
        n += sizes[k];
        for (i = 0; i < n; i++) m += all[i];
        m /= n;
        for (i = 0; i < n; i++) v += (all[i] - m) * (all[i] - m);
        got[0] = rm.mean; got[1] = rm.std; want[0] = m; want[1] = sqrt(v / (n - 1));
        {
            char label[96];
            snprintf(label, sizeof label, "running moments after %d batches (%d values): mean, std", k + 1, n);
            check_tensor_d(label, got, want, 2, 1e-12);
            got[0] = bm; got[1] = bs; want[0] = bmw; want[1] = sizes[k] > 1 ? sqrt(bv / (sizes[k] - 1)) : 0;
            snprintf(label, sizeof label, "  the batch's own mean and unbiased std (batch %d)", k + 1);
            check_tensor_d(label, got, want, 2, 1e-12);
        }
    }
    {   /* coef 0.2, target 6, horizon 10000, 64 prompts: KL 3 (-0.5, clipped to -0.2), 6.6 (+0.1), 100 (+0.2) */
        double g[3], w[3];
        g[0] = cllm_adaptive_kl_update(0.2, 3, 6, 10000, 64);   w[0] = 0.2 * (1 - 0.2 * 64 / 10000.0);
        g[1] = cllm_adaptive_kl_update(0.2, 6.6, 6, 10000, 64); w[1] = 0.2 * (1 + 0.1 * 64 / 10000.0);
        g[2] = cllm_adaptive_kl_update(0.2, 100, 6, 10000, 64); w[2] = 0.2 * (1 + 0.2 * 64 / 10000.0);
        check_tensor_d("adaptive KL controller: below, inside, above the clip", g, w, 3, 1e-12);
    }
}

int main(void) {
    legacy_trl();
    vectors_dpo();
    vectors_ppo();
    vectors_sequence_ends();
    vectors_optim();
    vectors_bleu();
    torch_dpo();
    torch_ppo_rewards();
    torch_gae();
    torch_ppo_loss();
    torch_grpo();
    nltk_bleu();
    errors();
    return check_summary("test_objectives");
}
