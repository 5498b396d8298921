/* test_gradcheck.c - finite-difference gradient checks, in double precision, for every layer's
   backward pass and for whole tiny models (llama with GQA + tied + llama3 RoPE, qwen2 with
   biases, qwen3 with q/k norms), including a custom dlogp, a value-head dhidden and a
   temperature. Central differences with h = 1e-6; agreement ~1e-9 is expected in double. */
#define COLLABLLM_DOUBLE
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>

#define H_FD 1e-6
#define TOL 1e-6

static cllm_rng rng;
static double *randn(size_t n, double scale) {
    double *x = (double *)malloc((n + 1) * sizeof(double));
    size_t i;
    for (i = 0; i < n; i++) x[i] = scale * cllm_rng_normal(&rng);
    return x;
}

/* A layer under test: forward into out (n_out values) from the current inputs. */
typedef void (*fwd_fn)(void *ctx, double *out);

/* Objective L = sum_i w_i out_i. Checks d L / d x[j] for every j of one input x against the
   analytic gradient dx (computed by the caller's backward with dout = w). */
static void fd_check(const char *label, fwd_fn f, void *ctx, double *x, size_t nx, const double *dx, const double *w, size_t nout) {
    double *num = (double *)malloc((nx + 1) * sizeof(double)), *out = (double *)malloc((nout + 1) * sizeof(double));
    size_t j, i;
    for (j = 0; j < nx; j++) {
        double keep = x[j], lp = 0, lm = 0;
        x[j] = keep + H_FD; f(ctx, out); for (i = 0; i < nout; i++) lp += w[i] * out[i];
        x[j] = keep - H_FD; f(ctx, out); for (i = 0; i < nout; i++) lm += w[i] * out[i];
        x[j] = keep;
        num[j] = (lp - lm) / (2 * H_FD);
    }
    check_tensor_d(label, dx, num, nx, TOL);
    free(num); free(out);
}

/* ---- matmul ------------------------------------------------------------------------------- */
typedef struct { double *inp, *W, *b; int N, C, OC; } mm_ctx;
static void mm_fwd(void *c, double *out) { mm_ctx *m = (mm_ctx *)c; cllm__matmul_forward(out, m->inp, m->W, m->b, m->N, m->C, m->OC); }
static void test_matmul(void) {
    mm_ctx m = { 0 };
    double *w, *dinp, *dW, *db;
    m.N = 5; m.C = 7; m.OC = 4;
    m.inp = randn(35, 1); m.W = randn(28, 1); m.b = randn(4, 1); w = randn(20, 1);
    dinp = (double *)calloc(35, sizeof(double)); dW = (double *)calloc(28, sizeof(double)); db = (double *)calloc(4, sizeof(double));
    cllm__matmul_backward(dinp, dW, db, w, m.inp, m.W, m.N, m.C, m.OC);
    fd_check("matmul d/dinp", mm_fwd, &m, m.inp, 35, dinp, w, 20);
    fd_check("matmul d/dW", mm_fwd, &m, m.W, 28, dW, w, 20);
    fd_check("matmul d/dbias", mm_fwd, &m, m.b, 4, db, w, 20);
    free(m.inp); free(m.W); free(m.b); free(w); free(dinp); free(dW); free(db);
}

/* ---- rmsnorm ------------------------------------------------------------------------------ */
typedef struct { double *inp, *w, rstd[8]; int N, C; } rn_ctx;
static void rn_fwd(void *c, double *out) { rn_ctx *r = (rn_ctx *)c; cllm__rmsnorm_forward(out, r->rstd, r->inp, r->w, r->N, r->C, 1e-5f); }
static void test_rmsnorm(void) {
    rn_ctx r;
    double *w, *dinp, *dw, out[24];
    r.N = 3; r.C = 8; r.inp = randn(24, 1); r.w = randn(8, 1); w = randn(24, 1);
    dinp = (double *)calloc(24, sizeof(double)); dw = (double *)calloc(8, sizeof(double));
    rn_fwd(&r, out);
    cllm__rmsnorm_backward(dinp, dw, w, r.inp, r.w, r.rstd, r.N, r.C);
    fd_check("rmsnorm d/dinp", rn_fwd, &r, r.inp, 24, dinp, w, 24);
    fd_check("rmsnorm d/dweight", rn_fwd, &r, r.w, 8, dw, w, 24);
    free(r.inp); free(r.w); free(w); free(dinp); free(dw);
}

/* ---- rope --------------------------------------------------------------------------------- */
typedef struct { double *x, *cs, *sn; int B, T, NH, hd; } rp_ctx;
static void rp_fwd(void *c, double *out) {
    rp_ctx *r = (rp_ctx *)c;
    size_t n = (size_t)r->B * r->T * r->NH * r->hd;
    memcpy(out, r->x, n * sizeof(double));
    cllm__rope_forward(out, r->cs, r->sn, r->B, r->T, r->NH, r->hd);
}
static void test_rope(void) {
    rp_ctx r;
    cllm_config cfg;
    size_t n;
    double *w, *dx;
    memset(&cfg, 0, sizeof cfg);
    cfg.head_dim = 8; cfg.rope_theta = 500000; cfg.rope_type = CLLM_ROPE_LLAMA3; cfg.rope_factor = 8;
    cfg.rope_low_freq_factor = 1; cfg.rope_high_freq_factor = 4; cfg.rope_original_max_pos = 32;
    r.B = 2; r.T = 5; r.NH = 3; r.hd = 8; n = (size_t)2 * 5 * 3 * 8;
    r.cs = (double *)calloc(5 * 4, sizeof(double)); r.sn = (double *)calloc(5 * 4, sizeof(double));
    cllm__rope_tables(r.cs, r.sn, &cfg, 5);
    r.x = randn(n, 1); w = randn(n, 1); dx = (double *)malloc(n * sizeof(double));
    memcpy(dx, w, n * sizeof(double));
    cllm__rope_backward(dx, r.cs, r.sn, r.B, r.T, r.NH, r.hd);
    fd_check("rope (llama3 scaling) d/dx", rp_fwd, &r, r.x, n, dx, w, n);
    free(r.x); free(r.cs); free(r.sn); free(w); free(dx);
}

/* ---- attention ---------------------------------------------------------------------------- */
typedef struct { double *q, *k, *v, lse[64], s[16]; int *mask, B, T, H, KV, hd; } at_ctx;
static void at_fwd(void *c, double *out) { at_ctx *a = (at_ctx *)c; cllm__attention_forward(out, a->lse, a->q, a->k, a->v, a->mask, a->B, a->T, a->H, a->KV, a->hd, a->s); }
static void test_attention(void) {
    at_ctx a;
    int mask[12] = { 1, 1, 1, 1, 1, 1,  1, 1, 1, 1, 0, 0 };   /* row 1 right-padded */
    size_t nq, nk;
    double *w, *out, *dq, *dk, *dv;
    a.B = 2; a.T = 6; a.H = 4; a.KV = 2; a.hd = 4; a.mask = mask;
    nq = (size_t)a.B * a.T * a.H * a.hd; nk = (size_t)a.B * a.T * a.KV * a.hd;
    a.q = randn(nq, 1); a.k = randn(nk, 1); a.v = randn(nk, 1); w = randn(nq, 1);
    out = (double *)calloc(nq, sizeof(double));
    dq = (double *)calloc(nq, sizeof(double)); dk = (double *)calloc(nk, sizeof(double)); dv = (double *)calloc(nk, sizeof(double));
    at_fwd(&a, out);
    cllm__attention_backward(dq, dk, dv, w, a.q, a.k, a.v, out, a.lse, a.mask, a.B, a.T, a.H, a.KV, a.hd);
    fd_check("attention (GQA, padded) d/dq", at_fwd, &a, a.q, nq, dq, w, nq);
    fd_check("attention (GQA, padded) d/dk", at_fwd, &a, a.k, nk, dk, w, nq);
    fd_check("attention (GQA, padded) d/dv", at_fwd, &a, a.v, nk, dv, w, nq);
    free(a.q); free(a.k); free(a.v); free(w); free(out); free(dq); free(dk); free(dv);
}

/* ---- swiglu ------------------------------------------------------------------------------- */
typedef struct { double *g, *u; size_t n; } sw_ctx;
static void sw_fwd(void *c, double *out) { sw_ctx *s = (sw_ctx *)c; cllm__swiglu_forward(out, s->g, s->u, s->n); }
static void test_swiglu(void) {
    sw_ctx s;
    double *w, *dg, *du;
    s.n = 20; s.g = randn(20, 2); s.u = randn(20, 1); w = randn(20, 1);
    dg = (double *)calloc(20, sizeof(double)); du = (double *)calloc(20, sizeof(double));
    cllm__swiglu_backward(dg, du, w, s.g, s.u, s.n);
    fd_check("swiglu d/dgate", sw_fwd, &s, s.g, 20, dg, w, 20);
    fd_check("swiglu d/dup", sw_fwd, &s, s.u, 20, du, w, 20);
    free(s.g); free(s.u); free(w); free(dg); free(du);
}

/* ---- embedding ---------------------------------------------------------------------------- */
typedef struct { double *E; int ids[6]; } em_ctx;
static void em_fwd(void *c, double *out) { em_ctx *e = (em_ctx *)c; cllm__embedding_forward(out, e->ids, e->E, 6, 3); }
static void test_embedding(void) {
    em_ctx e = { NULL, { 2, 0, 2, 4, 1, 2 } };   /* repeated ids accumulate */
    double *w = randn(18, 1), *dE = (double *)calloc(15, sizeof(double));
    e.E = randn(15, 1);
    cllm__embedding_backward(dE, w, e.ids, 6, 3);
    fd_check("embedding d/dE", em_fwd, &e, e.E, 15, dE, w, 18);
    free(e.E); free(w); free(dE);
}

/* ---- log-softmax row with temperature ---------------------------------------------------- */
typedef struct { double *z; int y, V; double inv_tau; } ls_ctx;
static void ls_fwd(void *c, double *out) { ls_ctx *l = (ls_ctx *)c; double lse, ent; cllm__logsoftmax_row(&lse, &out[0], &ent, l->z, l->y, l->inv_tau, l->V); }
static void test_logsoftmax(void) {
    ls_ctx l;
    double w = 0.7, *dz, lse, logp, ent;
    l.V = 11; l.y = 3; l.inv_tau = 1 / 0.7; l.z = randn(11, 2);
    dz = (double *)malloc(11 * sizeof(double));
    memcpy(dz, l.z, 11 * sizeof(double));
    cllm__logsoftmax_row(&lse, &logp, &ent, l.z, l.y, l.inv_tau, l.V);
    cllm__logsoftmax_row_backward(dz, lse, l.y, w, l.inv_tau, l.V);
    fd_check("log-softmax (temperature 0.7) d/dlogits", ls_fwd, &l, l.z, 11, dz, &w, 1);
    free(l.z); free(dz);
}

/* ---- whole models ------------------------------------------------------------------------- */
/* Objective: L = sum_t dlogp[t] * logp[t] + sum dhidden * lnf  (or the mean CE loss).        */
typedef struct { cllm_model *m; cllm_batch *b; const double *dlogp, *dhidden; } md_ctx;
static void md_fwd(void *c, double *out) {
    md_ctx *x = (md_ctx *)c;
    size_t BT = (size_t)x->b->B * x->b->T, C = (size_t)x->m->config.hidden_size, i;
    double L = 0;
    cllm_forward(x->m, x->b, NULL, NULL);
    if (!x->dlogp) L = x->m->loss;
    else for (i = 0; i < BT; i++) L += x->dlogp[i] * x->m->acts.logp[i];
    if (x->dhidden) for (i = 0; i < BT * C; i++) L += x->dhidden[i] * x->m->acts.lnf[i];
    out[0] = L;
}

static void test_model(const char *label, cllm_config cfg, int custom, float temperature) {
    cllm_model m;
    cllm_batch b;
    cllm_err err;
    int ids[12] = { 3, 7, 1, 9, 4, 2,  5, 5, 8, 0, 0, 0 }, mask[12] = { 1, 1, 1, 1, 1, 1,  1, 1, 1, 1, 0, 0 };
    int labels[12] = { -100, -100, 1, 9, 4, 2,  5, 5, 8, 0, -100, -100 };
    double *dlogp = NULL, *dhidden = NULL, one = 1;
    md_ctx ctx;
    char name[160];
    int i, n_checked = 0;
    cllm_float **pp[CLLM_NUM_PARAM_TENSORS], **gp[CLLM_NUM_PARAM_TENSORS];
    if (cllm_model_init(&m, &cfg, 7, &err) != CLLM_OK) { check_true(err.msg, 0); return; }
    /* larger random weights than the 0.02 init, so every path carries signal */
    for (i = 0; i < (int)m.num_params; i++) m.params_memory[i] += 0.3 * cllm_rng_normal(&rng);
    memset(&b, 0, sizeof b);
    b.B = 2; b.T = 6; b.input_ids = ids; b.attn_mask = mask; b.labels = labels; b.temperature = temperature;
    if (custom) { dlogp = randn(12, 1); dhidden = randn(12 * (size_t)cfg.hidden_size, 0.5); }
    ctx.m = &m; ctx.b = &b; ctx.dlogp = dlogp; ctx.dhidden = dhidden;
    cllm_forward(&m, &b, NULL, &err);
    cllm_zero_grad(&m, &err);
    if (!check_true("model backward runs", cllm_backward(&m, dlogp, dhidden, &err) == CLLM_OK)) printf("    %s\n", err.msg);
    cllm__param_ptrs(&m.params, pp);
    cllm__param_ptrs(&m.grads, gp);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        if (!m.param_sizes[i]) continue;
        snprintf(name, sizeof name, "%s d/d%s", label, strchr(cllm__param_fmt[i], '%') ? strchr(cllm__param_fmt[i], '%') + 3 : cllm__param_fmt[i]);
        fd_check(name, md_fwd, &ctx, *pp[i], m.param_sizes[i], *gp[i], &one, 1);
        n_checked++;
    }
    free(dlogp); free(dhidden);
    cllm_model_free(&m);
}

static cllm_config tiny(int arch) {
    cllm_config c;
    memset(&c, 0, sizeof c);
    c.arch = arch; c.vocab_size = 13; c.hidden_size = 8; c.intermediate_size = 12; c.n_layers = 2;
    c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 4; c.rms_norm_eps = 1e-5f; c.rope_theta = 10000;
    c.bos_token_id = -1;
    return c;
}

int main(void) {
    cllm_config c;
    cllm_rng_seed(&rng, 1234);
    printf("layers\n");
    test_matmul(); test_rmsnorm(); test_rope(); test_attention(); test_swiglu(); test_embedding(); test_logsoftmax();
    printf("whole models\n");
    c = tiny(CLLM_ARCH_LLAMA); c.tie_word_embeddings = 1; c.rope_type = CLLM_ROPE_LLAMA3; c.rope_factor = 8;
    c.rope_low_freq_factor = 1; c.rope_high_freq_factor = 4; c.rope_original_max_pos = 16;
    test_model("llama tied llama3-rope CE", c, 0, 0);
    c = tiny(CLLM_ARCH_QWEN2); c.attention_bias = 1;
    test_model("qwen2 bias dlogp+dhidden T=0.8", c, 1, 0.8f);
    c = tiny(CLLM_ARCH_QWEN3); c.qk_norm = 1; c.head_dim = 6; c.tie_word_embeddings = 1;
    test_model("qwen3 qk-norm hd!=C/H CE", c, 0, 0);
    return check_summary("test_gradcheck");
}
