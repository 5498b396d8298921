/* test_fastpath.c - every fast path against its readable reference kernel, on odd sizes that
   leave remainders in every blocking dimension (kernel blocks, K blocks, tiles, SIMD lanes).
   The test turns on CLLM_SIMD (which implies CLLM_BLOCKED) itself, so the scalar `make test`
   build checks the blocked code with the scalar microkernels, and the fast build (-march=native
   -fopenmp) checks the AVX2/NEON microkernels and the OpenMP loops.
   Tolerances: without SIMD microkernels the fast paths add in the reference's order and must
   agree exactly (GCC keeps a*b+c unfused in ISO C mode); with them, fused multiply-adds and
   vector partial sums change the rounding, relative error ~1e-7..1e-6, tolerance 1e-5.
   The matmul's SIMD kernels compute each output as one fused chain in ascending k, in every
   vector width, so they must also equal a scalar fmaf() loop BIT FOR BIT; on an AVX-512 host the
   fast suite runs this test twice, built with and without AVX-512 (build/fast/test_fastpath_avx2),
   so the two widths agree with each other too; `make neon` runs it built for AArch64 (NEON) under qemu-user. */
#ifndef CLLM_SIMD
#define CLLM_SIMD
#endif
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>
#include <float.h>
#include <math.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

#if defined(CLLM__AVX2) || defined(CLLM__NEON)
#define TOL 1e-5
#define FUSED 1
#if defined(CLLM__AVX512)
#define KERNELS "AVX-512 microkernels"
#elif defined(CLLM__AVX2)
#define KERNELS "AVX2 microkernels"
#else
#define KERNELS "NEON microkernels"
#endif
#elif defined(__GNUC__) && !defined(__clang__)
#define TOL 0.0
#define KERNELS "scalar microkernels"
#else
#define TOL 1e-6     /* other compilers may contract a*b+c into an FMA in one place only */
#define KERNELS "scalar microkernels"
#endif

static cllm_rng rng;
static cllm_float *randn(size_t n) {
    cllm_float *x = (cllm_float *)malloc((n + 1) * sizeof(cllm_float));
    size_t i;
    for (i = 0; i < n; i++) x[i] = (cllm_float)cllm_rng_normal(&rng);
    return x;
}
static cllm_float *copy(const cllm_float *x, size_t n) {
    cllm_float *y = (cllm_float *)malloc((n + 1) * sizeof(cllm_float));
    memcpy(y, x, n * sizeof(cllm_float));
    return y;
}

#ifdef FUSED
/* The SIMD matmul's arithmetic written plainly: out[n][o] = fmaf(x[c], w[c], acc) for c ascending, from the bias;
   the backward's two products likewise, from the values accumulated into. */
static void fma_forward(float *out, const float *inp, const float *W, const float *bias, int N, int C, int OC) {
    int n, o, c;
    for (n = 0; n < N; n++) for (o = 0; o < OC; o++) {
        float acc = bias ? bias[o] : 0;
        for (c = 0; c < C; c++) acc = fmaf(inp[(size_t)n * C + c], W[(size_t)o * C + c], acc);
        out[(size_t)n * OC + o] = acc;
    }
}
static void fma_backward(float *dinp, float *dW, const float *dout, const float *inp, const float *W,
                         int N, int C, int OC) {
    int n, o, c;
    for (n = 0; n < N; n++) for (c = 0; c < C; c++) {
        float acc = dinp[(size_t)n * C + c];
        for (o = 0; o < OC; o++) acc = fmaf(dout[(size_t)n * OC + o], W[(size_t)o * C + c], acc);
        dinp[(size_t)n * C + c] = acc;
    }
    for (o = 0; o < OC; o++) for (c = 0; c < C; c++) {
        float acc = dW[(size_t)o * C + c];
        for (n = 0; n < N; n++) acc = fmaf(dout[(size_t)n * OC + o], inp[(size_t)n * C + c], acc);
        dW[(size_t)o * C + c] = acc;
    }
}

/* every SIMD kernel (the gemm, the decoding kernel, their tails) against the fmaf chains, bit for bit */
static void test_matmul_fused(int N, int C, int OC, int with_bias) {
    cllm_float *x = randn((size_t)N * C), *W = randn((size_t)OC * C), *b = with_bias ? randn((size_t)OC) : NULL;
    cllm_float *dout = randn((size_t)N * OC), *y_ref = randn((size_t)N * OC), *y = randn((size_t)N * OC);
    cllm_float *dx_ref = randn((size_t)N * C), *dW_ref = randn((size_t)OC * C);
    cllm_float *dx = copy(dx_ref, (size_t)N * C), *dW = copy(dW_ref, (size_t)OC * C);
    char label[128];
    fma_forward(y_ref, x, W, b, N, C, OC);
    cllm__matmul_forward(y, x, W, b, N, C, OC);
    snprintf(label, sizeof label, "matmul forward  N=%d C=%d OC=%d = fmaf chains, bit for bit", N, C, OC);
    check_true(label, memcmp(y, y_ref, sizeof(cllm_float) * (size_t)N * OC) == 0);
    fma_backward(dx_ref, dW_ref, dout, x, W, N, C, OC);
    cllm__matmul_backward(dx, dW, NULL, dout, x, W, N, C, OC);
    snprintf(label, sizeof label, "matmul backward N=%d C=%d OC=%d = fmaf chains, bit for bit", N, C, OC);
    check_true(label, memcmp(dx, dx_ref, sizeof(cllm_float) * (size_t)N * C) == 0 &&
                      memcmp(dW, dW_ref, sizeof(cllm_float) * (size_t)OC * C) == 0);
    free(x); free(W); free(b); free(dout); free(y_ref); free(y); free(dx_ref); free(dW_ref); free(dx); free(dW);
}
#endif

/* ---- matmul: forward and backward ---------------------------------------------------------- */
static void test_matmul(int N, int C, int OC, int with_bias) {
    cllm_float *x = randn((size_t)N * C), *W = randn((size_t)OC * C), *b = with_bias ? randn((size_t)OC) : NULL;
    cllm_float *dout = randn((size_t)N * OC);
    cllm_float *y_ref = randn((size_t)N * OC), *y = randn((size_t)N * OC);      /* overwritten */
    cllm_float *dx_ref = randn((size_t)N * C), *dW_ref = randn((size_t)OC * C), *db_ref = randn((size_t)OC);
    cllm_float *dx = copy(dx_ref, (size_t)N * C), *dW = copy(dW_ref, (size_t)OC * C), *db = copy(db_ref, (size_t)OC);
    char label[128];
    cllm__matmul_forward_naive(y_ref, x, W, b, N, C, OC);
    cllm__matmul_forward(y, x, W, b, N, C, OC);
    snprintf(label, sizeof label, "matmul forward  N=%d C=%d OC=%d%s", N, C, OC, b ? " +bias" : "");
    check_tensor(label, y, y_ref, (size_t)N * OC, TOL);
    /* backward accumulates: start both from the same non-zero gradients */
    cllm__matmul_backward_naive(dx_ref, dW_ref, b ? db_ref : NULL, dout, x, W, N, C, OC);
    cllm__matmul_backward(dx, dW, b ? db : NULL, dout, x, W, N, C, OC);
    snprintf(label, sizeof label, "matmul d/dinp   N=%d C=%d OC=%d", N, C, OC);
    check_tensor(label, dx, dx_ref, (size_t)N * C, TOL);
    snprintf(label, sizeof label, "matmul d/dW     N=%d C=%d OC=%d", N, C, OC);
    check_tensor(label, dW, dW_ref, (size_t)OC * C, TOL);
    if (b) {
        snprintf(label, sizeof label, "matmul d/dbias  N=%d C=%d OC=%d", N, C, OC);
        check_tensor(label, db, db_ref, (size_t)OC, TOL);
    }
    free(x); free(W); free(b); free(dout); free(y_ref); free(y);
    free(dx_ref); free(dW_ref); free(db_ref); free(dx); free(dW); free(db);
}

/* ---- batch invariance: a row's output does not depend on the rows computed with it ----------
   (generation samples the same token whether it decodes 1 sequence or 8, and the KV cache's
   logits equal the full forward's). Rows 1..9 at a time (the decoding kernel up to 8, the gemm
   from 9) against the whole batch of N, bit-exact. */
static void test_batch_invariance(int N, int C, int OC) {
    int m, r;
    char label[128];
    cllm_float *x = randn((size_t)N * C), *W = randn((size_t)OC * C), *b = randn((size_t)OC);
    cllm_float *all = randn((size_t)N * OC), *some = randn((size_t)9 * OC);
    int same = 1;
    cllm__matmul_forward(all, x, W, b, N, C, OC);
    for (m = 1; m <= 9 && m <= N; m++) for (r = 0; r + m <= N; r += m) {
        cllm__matmul_forward(some, x + (size_t)r * C, W, b, m, C, OC);
        same &= memcmp(some, all + (size_t)r * OC, sizeof(cllm_float) * (size_t)m * OC) == 0;
    }
    snprintf(label, sizeof label, "matmul forward C=%d OC=%d: rows 1..9 at a time = a batch of %d, bit for bit",
             C, OC, N);
    check_true(label, same);
    free(x); free(W); free(b); free(all); free(some);
}

/* ---- rmsnorm backward (rows in parallel, dw by column blocks) ------------------------------- */
static void test_rmsnorm(int N, int C) {
    cllm_float *x = randn((size_t)N * C), *w = randn((size_t)C), *dy = randn((size_t)N * C), *y = randn((size_t)N * C);
    cllm_float *rstd = randn((size_t)N), *dx_ref = randn((size_t)N * C), *dw_ref = randn((size_t)C);
    cllm_float *dx = copy(dx_ref, (size_t)N * C), *dw = copy(dw_ref, (size_t)C);
    char label[128];
    cllm__rmsnorm_forward(y, rstd, x, w, N, C, 1e-5f);
    cllm__rmsnorm_backward_naive(dx_ref, dw_ref, dy, x, w, rstd, N, C);
    cllm__rmsnorm_backward(dx, dw, dy, x, w, rstd, N, C);
    snprintf(label, sizeof label, "rmsnorm d/dinp  N=%d C=%d", N, C);
    check_tensor(label, dx, dx_ref, (size_t)N * C, 0.0);          /* same order in every build */
    snprintf(label, sizeof label, "rmsnorm d/dw    N=%d C=%d", N, C);
    check_tensor(label, dw, dw_ref, (size_t)C, 0.0);
    free(x); free(w); free(dy); free(y); free(rstd); free(dx_ref); free(dw_ref); free(dx); free(dw);
}

/* ---- attention: (b, h) in parallel, SIMD dots; GQA and a right-padding mask ----------------- */
static void test_attention(int B, int T, int H, int KV, int hd) {
    size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * KV * hd, nl = (size_t)B * H * T;
    cllm_float *q = randn(nq), *k = randn(nk), *v = randn(nk), *dy = randn(nq);
    cllm_float *y_ref = randn(nq), *y = randn(nq), *lse_ref = randn(nl), *lse = randn(nl), *s = randn((size_t)T);
    cllm_float *dq_ref = randn(nq), *dk_ref = randn(nk), *dv_ref = randn(nk);
    cllm_float *dq = copy(dq_ref, nq), *dk = copy(dk_ref, nk), *dv = copy(dv_ref, nk);
    int *mask = (int *)malloc(sizeof(int) * (size_t)B * T), b, t;
    char label[128];
    for (b = 0; b < B; b++) for (t = 0; t < T; t++) mask[b * T + t] = t < T - 3 * b;   /* row b has 3b pads */
    cllm__attention_forward_naive(y_ref, lse_ref, q, k, v, mask, B, T, H, KV, hd, s);
    cllm__attention_forward(y, lse, q, k, v, mask, B, T, H, KV, hd, s);
    snprintf(label, sizeof label, "attention out   B=%d T=%d H=%d KV=%d hd=%d", B, T, H, KV, hd);
    check_tensor(label, y, y_ref, nq, TOL);
    snprintf(label, sizeof label, "attention lse   B=%d T=%d H=%d KV=%d hd=%d", B, T, H, KV, hd);
    check_tensor(label, lse, lse_ref, nl, TOL);
    cllm__attention_backward_naive(dq_ref, dk_ref, dv_ref, dy, q, k, v, y_ref, lse_ref, mask, B, T, H, KV, hd);
    cllm__attention_backward(dq, dk, dv, dy, q, k, v, y_ref, lse_ref, mask, B, T, H, KV, hd);
    snprintf(label, sizeof label, "attention d/dq  B=%d T=%d H=%d KV=%d hd=%d", B, T, H, KV, hd);
    check_tensor(label, dq, dq_ref, nq, TOL);
    snprintf(label, sizeof label, "attention d/dk  B=%d T=%d H=%d KV=%d hd=%d", B, T, H, KV, hd);
    check_tensor(label, dk, dk_ref, nk, TOL);
    snprintf(label, sizeof label, "attention d/dv  B=%d T=%d H=%d KV=%d hd=%d", B, T, H, KV, hd);
    check_tensor(label, dv, dv_ref, nk, TOL);
    free(q); free(k); free(v); free(dy); free(y_ref); free(y); free(lse_ref); free(lse); free(s);
    free(dq_ref); free(dk_ref); free(dv_ref); free(dq); free(dk); free(dv); free(mask);
}

/* ---- bf16 sampling weights: rounding, the packed layout, the kernels ------------------------ */

/* bf16 rounding from its definition, in double: the nearer of the two bf16 values around f (the even one on a tie;
   2^128 stands for the value past the largest finite, which rounds to infinity), NaN quieted, subnormals to zero. */
static uint16_t bf16_by_definition(float f) {
    uint32_t u;
    uint16_t lo;
    double below, above;
    memcpy(&u, &f, 4);
    if (f != f) return (uint16_t)((u >> 16) | 0x40);
    if (f == 0 || fabs(f) < FLT_MIN) return (uint16_t)((u >> 16) & 0x8000);
    if (isinf(f)) return (uint16_t)(u >> 16);
    lo = (uint16_t)(u >> 16);                                   /* toward zero; lo + 1 is the next one out */
    below = ldexp(1.0 + (lo & 0x7f) / 128.0, ((lo >> 7) & 0xff) - 127);
    above = ((lo + 1) & 0x7f80) == 0x7f80 ? ldexp(1.0, 128)
                                          : ldexp(1.0 + ((lo + 1) & 0x7f) / 128.0, (((lo + 1) >> 7) & 0xff) - 127);
    if (fabs(f) - below < above - fabs(f)) return lo;
    if (fabs(f) - below > above - fabs(f)) return (uint16_t)(lo + 1);
    return (uint16_t)(lo & 1 ? lo + 1 : lo);
}

static float word_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_bf16_round(void) {
    static const uint32_t edge[][2] = {   /* fp32 word, its bf16 */
        { 0x00000000, 0x0000 }, { 0x80000000, 0x8000 }, { 0x00000001, 0x0000 }, { 0x807fffff, 0x8000 },
        { 0x00800000, 0x0080 }, { 0x3f800000, 0x3f80 }, { 0x3f808000, 0x3f80 }, { 0x3f818000, 0x3f82 },
        { 0x3f808001, 0x3f81 }, { 0xbf80ffff, 0xbf81 }, { 0x7f7f7fff, 0x7f7f }, { 0x7f7f8000, 0x7f80 },
        { 0x7f7fffff, 0x7f80 }, { 0xff7fffff, 0xff80 }, { 0x7f800000, 0x7f80 }, { 0xff800000, 0xff80 },
        { 0x7fc00000, 0x7fc0 }, { 0x7f800001, 0x7fc0 }, { 0xff800001, 0xffc0 }, { 0x7fffffff, 0x7fff },
    };
    size_t i, bad_edge = 0, bad_random = 0, n_random = (size_t)1 << 20;
    for (i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        float f = word_float(edge[i][0]);
        if (cllm__bf16_round(f) != edge[i][1] || bf16_by_definition(f) != edge[i][1]) {
            printf("  bf16 of 0x%08x: %04x (definition %04x), want %04x\n", (unsigned)edge[i][0], cllm__bf16_round(f),
                   bf16_by_definition(f), (unsigned)edge[i][1]);
            bad_edge++;
        }
    }
    check_true("bf16 rounding: zeros, subnormals, ties to even, overflow to inf, inf, NaN (20 words)", bad_edge == 0);
    for (i = 0; i < n_random; i++) {
        float f = word_float(cllm_rng_u32(&rng));
        bad_random += cllm__bf16_round(f) != bf16_by_definition(f);
    }
    check_true("bf16 rounding = its definition on 2^20 random words", bad_random == 0);
#if defined(__AVX512BF16__)
    {   /* the CPU's own conversion, VCVTNE2PS2BF16 */
        size_t bad = 0;
        for (i = 0; i < n_random; i += 16) {
            float in[16];
            uint16_t hw[32];
            __m512bh v;
            int j;
            for (j = 0; j < 16; j++) in[j] = i < 16 ? word_float(edge[j][0]) : word_float(cllm_rng_u32(&rng));
            v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(in), _mm512_loadu_ps(in));
            memcpy(hw, &v, sizeof hw);
            for (j = 0; j < 16; j++) bad += hw[j] != cllm__bf16_round(in[j]);
        }
        check_true("bf16 rounding = AVX512_BF16's VCVTNE2PS2BF16 on 2^20 words", bad == 0);
    }
#endif
}

/* The packed layout by its formula, and a row of bf16 values through the pack unchanged. */
static void test_bf16_pack(int N, int K) {
    cllm_float *W = randn((size_t)N * K);
    size_t count = cllm__bf16_packed_count(N, K), bad = 0, i;
    cllm__bf16 *P = (cllm__bf16 *)malloc(count * sizeof(cllm__bf16));
    char label[128];
    int p, q, jj, h;
    for (i = 0; i < count; i++) P[i] = 0x1234;                   /* every value must be written */
    cllm__bf16_pack(P, W, N, K);
    for (p = 0; p < (N + 15) / 16; p++) for (q = 0; q < (K + 1) / 2; q++) for (jj = 0; jj < 16; jj++)
        for (h = 0; h < 2; h++) {
        int j = 16 * p + jj, k = 2 * q + h;
        cllm__bf16 want = j < N && k < K ? bf16_by_definition((float)W[(size_t)j * K + k]) : 0;
        bad += P[((size_t)(p * ((K + 1) / 2) + q) * 16 + jj) * 2 + h] != want;
    }
    snprintf(label, sizeof label, "bf16 pack N=%d K=%d: P[((p KP + q) 16 + jj) 2 + h] = bf16(W[16p+jj][2q+h]), 0 past",
             N, K);
    check_true(label, bad == 0 && count == (size_t)((N + 15) / 16) * 16 * (size_t)((K + 1) / 2) * 2);
    free(W);
    free(P);
}

/* A 64-byte aligned packed copy of a random W, and W's rounded values (Wr) for the references. */
static cllm__bf16 *bf16_random(int N, int K, cllm_float **Wr, void **raw) {
    cllm_float *W = randn((size_t)N * K);
    size_t i;
    char *mem = (char *)malloc(cllm__bf16_packed_count(N, K) * sizeof(cllm__bf16) + 64);
    cllm__bf16 *P = (cllm__bf16 *)(void *)(mem + (64 - (uintptr_t)mem % 64) % 64);
    cllm__bf16_pack(P, W, N, K);
    for (i = 0; i < (size_t)N * K; i++) W[i] = cllm__bf16_widen(cllm__bf16_round(W[i]));
    *Wr = W;
    *raw = mem;
    return P;
}

/* The kernels against the reference (tolerance as the fp32 matmul's), and rows 1..9 at a time = the batch bit for
   bit; with SIMD also = the fmaf chains on the rounded weights, bit for bit, and = the fp32 kernel on them. */
static void test_matmul_bf16(int N, int C, int OC, int with_bias) {
    cllm_float *Wr, *x = randn((size_t)N * C), *b = with_bias ? randn((size_t)OC) : NULL;
    cllm_float *y_ref = randn((size_t)N * OC), *y = randn((size_t)N * OC), *some = randn((size_t)9 * OC);
    void *raw;
    cllm__bf16 *P = bf16_random(OC, C, &Wr, &raw);
    char label[160];
    int m, r, same = 1;
    cllm__matmul_forward_bf16_naive(y_ref, x, P, b, N, C, OC);
    cllm__matmul_forward_bf16(y, x, P, b, N, C, OC);
    snprintf(label, sizeof label, "bf16 matmul N=%d C=%d OC=%d%s", N, C, OC, b ? " +bias" : "");
    check_tensor(label, y, y_ref, (size_t)N * OC, TOL);
    for (m = 1; m <= 9 && m <= N; m++) for (r = 0; r + m <= N; r += m) {
        cllm__matmul_forward_bf16(some, x + (size_t)r * C, P, b, m, C, OC);
        same &= memcmp(some, y + (size_t)r * OC, sizeof(cllm_float) * (size_t)m * OC) == 0;
    }
    snprintf(label, sizeof label, "bf16 matmul C=%d OC=%d: rows 1..9 at a time = a batch of %d, bit for bit", C, OC, N);
    check_true(label, same);
    cllm__matmul_forward(y_ref, x, Wr, b, N, C, OC);
    snprintf(label, sizeof label, "bf16 matmul N=%d C=%d OC=%d = the fp32 kernel on the rounded W, bit for bit", N, C,
             OC);
    check_true(label, memcmp(y, y_ref, sizeof(cllm_float) * (size_t)N * OC) == 0);
#ifdef FUSED
    fma_forward(y_ref, x, Wr, b, N, C, OC);
    snprintf(label, sizeof label, "bf16 matmul N=%d C=%d OC=%d = fmaf chains on the rounded W, bit for bit", N, C, OC);
    check_true(label, memcmp(y, y_ref, sizeof(cllm_float) * (size_t)N * OC) == 0);
#endif
    free(Wr); free(x); free(b); free(y_ref); free(y); free(some); free(raw);
}

/* AdamW's vector update does the reference's correctly rounded operations lane by lane: equal bit for bit, three
   steps in a row, on a length that leaves a tail of scalar values. */
static void test_adamw(size_t n) {
    cllm__adamw_coef k = { 0.99999f, -0.0013f, 0.9f, 0.1f, 0.999f, 0.001f, 0.0547f, 1e-8f };
    cllm_float *p = randn(n), *g = randn(n), *m = randn(n), *v = randn(n);
    cllm_float *p_ref = copy(p, n), *m_ref, *v_ref;
    size_t i;
    int step;
    for (i = 0; i < n; i++) v[i] = v[i] * v[i];
    m_ref = copy(m, n);
    v_ref = copy(v, n);
    for (step = 0; step < 3; step++) {
        cllm__adamw_apply(p, g, m, v, n, &k);
        cllm__adamw_apply_naive(p_ref, g, m_ref, v_ref, n, &k);
    }
    check_tensor("AdamW parameters, fast vs reference", p, p_ref, n, 0.0);
    check_tensor("AdamW first moments, fast vs reference", m, m_ref, n, 0.0);
    check_tensor("AdamW second moments, fast vs reference", v, v_ref, n, 0.0);
    free(p); free(g); free(m); free(v); free(p_ref); free(m_ref); free(v_ref);
}

#ifdef CLLM__OMP
/* Tiles and (b, h) pairs only decide which thread computes an output: one thread and all of
   them must agree bit for bit. */
static void test_thread_count_independence(void) {
    int N = 77, C = 300, OC = 270, nth = omp_get_max_threads();
    cllm_float *x = randn((size_t)N * C), *W = randn((size_t)OC * C), *dout = randn((size_t)N * OC);
    cllm_float *y1 = randn((size_t)N * OC), *yn = randn((size_t)N * OC);
    cllm_float *dW1 = (cllm_float *)calloc((size_t)OC * C, sizeof(cllm_float)), *dWn = (cllm_float *)calloc((size_t)OC * C, sizeof(cllm_float));
    omp_set_num_threads(1);
    cllm__matmul_forward(y1, x, W, NULL, N, C, OC);
    cllm__matmul_backward(NULL, dW1, NULL, dout, x, W, N, C, OC);
    omp_set_num_threads(nth > 1 ? nth : 2);
    cllm__matmul_forward(yn, x, W, NULL, N, C, OC);
    cllm__matmul_backward(NULL, dWn, NULL, dout, x, W, N, C, OC);
    omp_set_num_threads(nth);
    check_tensor("matmul forward, 1 thread vs all", yn, y1, (size_t)N * OC, 0.0);
    check_tensor("matmul d/dW, 1 thread vs all", dWn, dW1, (size_t)OC * C, 0.0);
    free(x); free(W); free(dout); free(y1); free(yn); free(dW1); free(dWn);
}
#endif

int main(void) {
    static const int mm[][3] = {   /* N, C, OC: every remainder of the 12x32 and 6x16 blocks, K > 256, tiles */
        { 1, 1, 1 }, { 1, 37, 5 }, { 2, 64, 9 }, { 3, 8, 4 }, { 5, 7, 3 }, { 7, 300, 37 }, { 9, 17, 33 },
        { 13, 33, 17 }, { 25, 40, 70 }, { 75, 531, 270 }, { 100, 1030, 20 }, { 200, 96, 300 }
    };
    size_t i;
    cllm_rng_seed(&rng, 42);
#ifdef CLLM__OMP
    printf("fast paths: cache-blocked matmul with %s, OpenMP (%d threads)\n", KERNELS, omp_get_max_threads());
#else
    printf("fast paths: cache-blocked matmul with %s, no OpenMP\n", KERNELS);
#endif
    for (i = 0; i < sizeof mm / sizeof mm[0]; i++) test_matmul(mm[i][0], mm[i][1], mm[i][2], (int)(i % 2));
#ifdef FUSED
    for (i = 0; i < sizeof mm / sizeof mm[0]; i++) test_matmul_fused(mm[i][0], mm[i][1], mm[i][2], (int)(i % 2));
    test_matmul_fused(8, 768, 2053, 1);    /* the threaded decoding kernel */
    test_matmul_fused(1, 64, 40, 1);       /* one row: AVX2's pairs of blocks, and one block left over */
    test_matmul_fused(1, 768, 2053, 1);    /* one row, threaded, a partial block at the end */
    test_matmul_fused(300, 517, 333, 0);   /* several tiles and K blocks per thread */
#endif
    test_batch_invariance(9, 331, 70);     /* tails in K and OC; serial */
    test_batch_invariance(37, 257, 300);   /* batches 9..37: the gemm's row edges */
    test_batch_invariance(12, 768, 2053);  /* the threaded decoding kernel */
    test_rmsnorm(1, 5);
    test_rmsnorm(37, 200);
    test_rmsnorm(300, 130);
    test_attention(1, 5, 2, 1, 8);
    test_attention(2, 37, 6, 2, 33);
    test_attention(3, 70, 4, 4, 64);
    test_bf16_round();
    test_bf16_pack(1, 1);
    test_bf16_pack(17, 33);
    test_bf16_pack(40, 64);
    for (i = 0; i < sizeof mm / sizeof mm[0]; i++) test_matmul_bf16(mm[i][0], mm[i][1], mm[i][2], (int)(i % 2));
    test_matmul_bf16(12, 768, 2053, 1);    /* the threaded decoding kernel, the prefill's tiles */
    test_adamw(7);
    test_adamw(40013);                     /* threaded, 8 lanes, a tail */
#ifdef CLLM__OMP
    test_thread_count_independence();
#endif
    return check_summary("test_fastpath");
}
