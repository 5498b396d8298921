/* test_online_gradcheck.c - the PPO objective through the trainer's plumbing, differentiated by
   finite differences in double precision: forward of prompt + response rows at a sampling
   temperature, response log-probs and value-head values gathered at the positions that predict
   each response token, cllm_ppo_rollout_loss, then the trainer's backward (dlogp for the policy,
   dhidden for the value head on the final normed hidden state). Checked: every value-head
   weight and a sample of the trunk's parameters (embeddings, attention, MLP, norms), with and
   without clipping in play (every other token set up so that the policy or the value clip binds), and a pure value loss (vf only) whose gradient reaches the trunk
   only through the value head. The GRPO loss (cllm_grpo_loss, ratios away from 1, beta k3)
   through the same forward and backward, on the trunk and on LoRA adapters whose dropout the
   trainer has switched on for the micro-step (the online passes run without it, forward and
   backward alike). Central differences, h = 1e-6. */
#define COLLABLLM_DOUBLE
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>

#define H_FD 1e-6

typedef struct setup {
    cllm_model      m;
    cllm_value_head vh;
    cllm_train_seq  seqs[3];
    const cllm_train_seq *ptr[3];
    cllm_ppo_rollout r;
    cllm_ppo_config cfg;
    int             rows[3];
    float           tau;
} setup;

/* J = the PPO loss of all rows under the current parameters (no gradients). */
static double objective(setup *s, double *dlp, double *dv, cllm_ppo_loss_out *stats) {
    cllm__seq_batch sb;
    size_t N = 3 * (size_t)s->r.L;
    double *lp = (double *)calloc(N, sizeof(double)), *val = (double *)calloc(N, sizeof(double)), J;
    cllm_ppo_loss_out out;
    memset(&sb, 0, sizeof sb);
    cllm__rollout_forward(&s->m, s->ptr, 3, s->tau, 0, &sb, NULL);
    cllm__gather_logps(&s->m, s->ptr, 3, s->r.L, 1.0, lp);
    cllm__gather_values(&s->m, &s->vh, s->ptr, 3, s->r.L, val);
    memset(&out, 0, sizeof out);
    out.d_logprobs = dlp; out.d_values = dv;
    cllm_ppo_rollout_loss(&s->cfg, &s->r, s->rows, 3, lp, val, &out, NULL);
    J = out.loss;
    if (stats) *stats = out;
    if (dlp) {                                         /* the analytic gradient, as the trainer computes it */
        cllm_zero_grad(&s->m, NULL);
        memset(s->vh.grad, 0, sizeof(cllm_float) * ((size_t)s->vh.C + 1));
        cllm__rollout_backward(&s->m, &s->vh, s->ptr, 3, s->r.L, dlp, dv, 1.0, NULL);
    }
    cllm__seq_batch_free(&sb);
    free(lp); free(val);
    return J;
}

static double fd(setup *s, cllm_float *p) {
    double keep = *p, jp, jm;
    *p = keep + H_FD; jp = objective(s, NULL, NULL, NULL);
    *p = keep - H_FD; jm = objective(s, NULL, NULL, NULL);
    *p = keep;
    return (jp - jm) / (2 * H_FD);
}

static void init(setup *s, double cliprange, double vf_only) {
    static const int prompt[3][4] = { { 1, 5, 9, 2 }, { 3, 4, 7, 0 }, { 6, 6, 1, 8 } };
    static const int resp[3][3] = { { 11, 12, 13 }, { 14, 15, 0 }, { 16, 0, 0 } };
    static const int np[3] = { 4, 3, 2 }, nr[3] = { 3, 2, 1 };
    cllm_config c;
    cllm_rng rng;
    int b, t, L = 3;
    double v_now[9];
    memset(s, 0, sizeof *s);
    memset(&c, 0, sizeof c);
    c.arch = CLLM_ARCH_QWEN2; c.vocab_size = 32; c.hidden_size = 8; c.intermediate_size = 16; c.n_layers = 2;
    c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 4; c.rms_norm_eps = 1e-6f; c.rope_theta = 10000;
    c.attention_bias = 1; c.bos_token_id = -1; c.n_eos = 0;
    cllm_model_init(&s->m, &c, 3, NULL);
    {   /* larger weights than the 0.02 init, so every path carries gradient */
        size_t i;
        cllm_rng_seed(&rng, 9);
        for (i = 0; i < s->m.num_params; i++) s->m.params_memory[i] += 0.3 * cllm_rng_normal(&rng);
    }
    cllm_value_head_init(&s->vh, 8, 4, NULL);
    for (b = 0; b < 3; b++) {
        int ids[8];
        unsigned char tg[8];
        for (t = 0; t < np[b] + nr[b]; t++) { ids[t] = t < np[b] ? prompt[b][t] : resp[b][t - np[b]]; tg[t] = t >= np[b]; }
        cllm__seq_from(&s->seqs[b], ids, tg, np[b] + nr[b], np[b], NULL);
        s->ptr[b] = &s->seqs[b];
        s->rows[b] = b;
    }
    s->tau = 0.7f;
    s->cfg.cliprange = cliprange; s->cfg.cliprange_value = cliprange;
    s->cfg.vf_coef = vf_only ? 1 : 0.1;
    cllm_ppo_rollout_alloc(&s->r, 3, L, NULL);
    s->r.pad_id = 0;
    {   /* the rollout: old log-probs and values near the current ones, random scores */
        cllm__seq_batch sb;
        memset(&sb, 0, sizeof sb);
        cllm__rollout_forward(&s->m, s->ptr, 3, s->tau, 0, &sb, NULL);
        cllm__gather_logps(&s->m, s->ptr, 3, L, 1.0, s->r.logprobs);
        cllm__gather_values(&s->m, &s->vh, s->ptr, 3, L, s->r.values);
        cllm__seq_batch_free(&sb);
        memcpy(v_now, s->r.values, sizeof v_now);
    }
    cllm_rng_seed(&rng, 11);
    for (b = 0; b < 3; b++) {
        s->r.scores[b] = cllm_rng_normal(&rng);
        for (t = 0; t < L; t++) {
            size_t i = (size_t)b * L + t;
            s->r.response[i] = resp[b][t];
            s->r.logprobs[i] += 0.4 * cllm_rng_normal(&rng);   /* ratios away from 1 */
            s->r.ref_logprobs[i] = s->r.logprobs[i] + 0.2 * cllm_rng_normal(&rng);
            s->r.values[i] += 0.3 * cllm_rng_normal(&rng);
        }
    }
    cllm_ppo_prepare(&s->cfg, &s->r, NULL);
    for (b = 0; b < 3 * L; b++) {                      /* every other token: a ratio / a value where clipping binds */
        if (b % 2 == 0 && s->r.mask[b]) s->r.logprobs[b] += s->r.advantages[b] > 0 ? -0.5 : 0.5;
        if (b % 2 == 1 && s->r.value_mask[b]) s->r.values[b] = v_now[b] + (s->r.returns[b] > v_now[b] ? -0.5 : 0.5);
    }
    if (vf_only) for (b = 0; b < 3 * L; b++) s->r.advantages[b] = 0;   /* J = vf_loss alone */
}

static void teardown(setup *s) {
    int b;
    for (b = 0; b < 3; b++) cllm_train_seq_free(&s->seqs[b]);
    cllm_ppo_rollout_free(&s->r);
    cllm_value_head_free(&s->vh);
    cllm_model_free(&s->m);
}

static void run(const char *label, double cliprange, int vf_only) {
    setup s;
    double dlp[9], dv[9], *num, *ana, J;
    cllm_ppo_loss_out clip;
    int k, n = 0, i, p;
    cllm_rng rng;
    char buf[160];
    init(&s, cliprange, vf_only);
    J = objective(&s, dlp, dv, &clip);
    num = (double *)calloc(200, sizeof(double)); ana = (double *)calloc(200, sizeof(double));
    printf("%s (J = %.6f, policy clipfrac %.2f, value clipfrac %.2f)\n", label, J, clip.clipfrac, clip.vf_clipfrac);
    for (k = 0; k <= s.vh.C; k++) { ana[n] = s.vh.grad[k]; num[n++] = fd(&s, &s.vh.w[k]); }
    check_tensor_d("value head: weight (1, C) and bias", ana, num, (size_t)n, 1e-6);
    n = 0;
    cllm_rng_seed(&rng, 5);
    for (p = 0; p < CLLM_NUM_PARAM_TENSORS; p++) {
        cllm_float *w = ((cllm_float **)&s.m.params)[p], *g = ((cllm_float **)&s.m.grads)[p];
        if (!s.m.param_sizes[p] || (p == CLLM__P_LM_HEAD && s.m.config.tie_word_embeddings)) continue;
        for (i = 0; i < 8; i++) {
            size_t j = (size_t)(cllm_rng_uniform(&rng) * (double)s.m.param_sizes[p]);
            ana[n] = g[j]; num[n++] = fd(&s, &w[j]);
        }
    }
    snprintf(buf, sizeof buf, "trunk: 8 entries of each of the %d parameter tensors", n / 8);
    check_tensor_d(buf, ana, num, (size_t)n, 1e-6);
    free(num); free(ana);
    teardown(&s);
}

/* ---- GRPO: cllm_grpo_loss through the same forward and backward ---- */

typedef struct grpo_setup { setup s; double old[9], ref[9], adv[3], mask[9]; int loss_type; } grpo_setup;

static double grpo_objective(grpo_setup *g, double *dlp) {
    cllm__seq_batch sb;
    double lp[9];
    cllm_grpo_loss_out out;
    memset(&sb, 0, sizeof sb);
    cllm__rollout_forward(&g->s.m, g->s.ptr, 3, g->s.tau, 0, &sb, NULL);
    cllm__gather_logps(&g->s.m, g->s.ptr, 3, 3, 0.0, lp);
    memset(&out, 0, sizeof out);
    out.d_logprobs = dlp;
    cllm_grpo_loss_input in = { .B = 3, .T = 3, .logprobs = lp, .old_logprobs = g->old, .ref_logprobs = g->ref, .advantages = g->adv,
                                .mask = g->mask, .beta = 0.04, .eps_low = 0.2, .eps_high = 0.28,
                                .loss_type = (cllm_grpo_loss_type)g->loss_type, .max_completion_length = 4 };
    cllm_grpo_loss(&in, &out, NULL);
    if (dlp) {
        cllm_zero_grad(&g->s.m, NULL);
        cllm__rollout_backward(&g->s.m, NULL, g->s.ptr, 3, 3, dlp, NULL, 1.0, NULL);
    }
    cllm__seq_batch_free(&sb);
    return out.loss;
}

static void run_grpo(const char *label, int loss_type) {
    grpo_setup g;
    double dlp[9], num[200], ana[200];
    cllm_rng rng;
    int n = 0, i, p, b;
    char buf[160];
    init(&g.s, 10, 0);
    g.loss_type = loss_type;
    cllm_rng_seed(&rng, 21);
    for (b = 0; b < 9; b++) {                          /* old / ref log-probs around the rollout's; A per sequence */
        g.mask[b] = g.s.r.mask[b];
        g.old[b] = g.s.r.mask[b] ? g.s.r.logprobs[b] : 0;
        g.ref[b] = g.old[b] + 0.3 * cllm_rng_normal(&rng);
    }
    for (b = 0; b < 3; b++) g.adv[b] = cllm_rng_normal(&rng);
    printf("%s (J = %.6f)\n", label, grpo_objective(&g, dlp));
    cllm_rng_seed(&rng, 5);
    for (p = 0; p < CLLM_NUM_PARAM_TENSORS; p++) {
        cllm_float *w = ((cllm_float **)&g.s.m.params)[p], *gr = ((cllm_float **)&g.s.m.grads)[p];
        if (!g.s.m.param_sizes[p] || (p == CLLM__P_LM_HEAD && g.s.m.config.tie_word_embeddings)) continue;
        for (i = 0; i < 8; i++) {
            size_t j = (size_t)(cllm_rng_uniform(&rng) * (double)g.s.m.param_sizes[p]);
            double keep = w[j], jp, jm;
            ana[n] = gr[j];
            w[j] = keep + H_FD; jp = grpo_objective(&g, NULL);
            w[j] = keep - H_FD; jm = grpo_objective(&g, NULL);
            w[j] = keep;
            num[n++] = (jp - jm) / (2 * H_FD);
        }
    }
    snprintf(buf, sizeof buf, "trunk: 8 entries of each of the %d parameter tensors", n / 8);
    check_tensor_d(buf, ana, num, (size_t)n, 1e-6);
    teardown(&g.s);
}

/* With LoRA adapters (dropout 0.25) and the trainer's micro-step state (lora.training = 1):
   the online trainers keep dropout off in their forwards, so backward must not apply it. */
static void run_grpo_lora(void) {
    grpo_setup g;
    cllm_lora lo;
    cllm_lora_config lc;
    cllm_rng rng;
    double dlp[9], *num;
    size_t k;
    int b;
    init(&g.s, 10, 0);
    g.loss_type = CLLM_GRPO_BNPO;
    memset(&lc, 0, sizeof lc);
    lc.r = 2; lc.alpha = 4; lc.dropout = 0.25;
    cllm_lora_init(&lo, &g.s.m, &lc, NULL);
    cllm_rng_seed(&rng, 33);
    for (k = 0; k < lo.num_params; k++) lo.params[k] = (cllm_float)(0.4 * cllm_rng_normal(&rng));      /* B != 0 */
    lo.training = 1; lo.dropout_seed = 0x5EEDull;
    for (b = 0; b < 9; b++) {
        g.mask[b] = g.s.r.mask[b];
        g.old[b] = g.s.r.mask[b] ? g.s.r.logprobs[b] : 0;
        g.ref[b] = g.old[b] + 0.3 * cllm_rng_normal(&rng);
    }
    for (b = 0; b < 3; b++) g.adv[b] = cllm_rng_normal(&rng);
    printf("GRPO loss through LoRA adapters (dropout 0.25, off in the online trainers' passes) (J = %.6f)\n", grpo_objective(&g, dlp));
    num = (double *)calloc(lo.num_params, sizeof(double));
    for (k = 0; k < lo.num_params; k++) {
        double keep = lo.params[k], jp, jm;
        lo.params[k] = keep + H_FD; jp = grpo_objective(&g, NULL);
        lo.params[k] = keep - H_FD; jm = grpo_objective(&g, NULL);
        lo.params[k] = keep;
        num[k] = (jp - jm) / (2 * H_FD);
    }
    check_tensor_d("every adapter parameter", lo.grads, num, lo.num_params, 1e-6);
    free(num);
    cllm_lora_free(&lo);
    teardown(&g.s);
}

int main(void) {
    run_grpo_lora();
    run_grpo("GRPO loss (ratios != 1 with clipping, beta 0.04 k3, per-sequence advantages), grpo aggregation", CLLM_GRPO_GRPO);
    run_grpo("the same with bnpo aggregation (TRL v0.19's default)", CLLM_GRPO_BNPO);
    run("PPO loss, clipping out of reach (cliprange 10)", 10, 0);
    run("PPO loss with clipping in play (cliprange and cliprange_value 0.2)", 0.2, 0);
    run("value loss alone (advantages 0, vf_coef 1): the trunk learns only through the value head", 10, 1);
    return check_summary("test_online_gradcheck");
}
