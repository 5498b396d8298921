/* bench.c - speed and memory of the transformer on this machine (`make bench`).
   Demonstrates timing cllm_forward, cllm_backward and cllm_adamw_update on random-weight models
   of real shapes, and the matmul kernel on its own, with the figures written as JSON.

     build/bench [--preset NAME]... [--config DIR] [--B n] [--T n] [--matmul n] [--json PATH] [--list]
     build/bench --help                   (the flags, from the table in main's file: examples/flags.h)

   Without --preset or --config every preset runs; --matmul sets the size of the matmul alone
   (default 1024, 0 skips it). The JSON is described in data_fmt/bench.md. Each model runs in a child process, so the
   peak RSS (getrusage) is that model's alone. Build it with the fast paths on:
     cc -O3 -march=native -fopenmp -DCLLM_SIMD examples/bench.c -lcjson -lcurl -lstb -lm
   FLOPs of a training step: 6 * parameters * tokens (llm.c's convention; attention's T^2 term
   is left out). Times are medians of repeated runs after one warm-up run. */
#define _XOPEN_SOURCE 700
#if defined(__unix__) || defined(__APPLE__)
#include "../tests/mock_openai.c"      /* the loopback chat-completions server of the tests */
#define BENCH_MR 1
#endif
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "flags.h"
#include "run_files.h"
#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#define BENCH_FORK 1
#endif
#ifdef BENCH_OPENBLAS
#include <cblas.h>
#undef I                    /* OpenBLAS's cblas.h includes <complex.h>; I is a size below */
#endif

/* ---- shapes: Hugging Face config.json text, random weights --------------------------------- */

typedef struct preset {
    const char *name, *why;
    int B, T, train;          /* batch for the forward and training figures; train: 0 = forward only */
    const char *config;
} preset;

static const preset presets[] = {
    { "smollm2-135m", "SmolLM2-135M(-Instruct)", 1, 256, 1,
      "{\"model_type\":\"llama\",\"vocab_size\":49152,\"hidden_size\":576,\"intermediate_size\":1536,"
      "\"num_hidden_layers\":30,\"num_attention_heads\":9,\"num_key_value_heads\":3,\"rms_norm_eps\":1e-5,"
      "\"rope_theta\":100000,\"tie_word_embeddings\":true}" },
    { "qwen2.5-0.5b", "Qwen2.5-0.5B(-Instruct)", 1, 256, 1,
      "{\"model_type\":\"qwen2\",\"vocab_size\":151936,\"hidden_size\":896,\"intermediate_size\":4864,"
      "\"num_hidden_layers\":24,\"num_attention_heads\":14,\"num_key_value_heads\":2,\"rms_norm_eps\":1e-6,"
      "\"rope_theta\":1000000,\"tie_word_embeddings\":true}" },
    { "gpt2-124m-like", "llm.c train_gpt2 anchor size: GPT-2 124M as a Llama (I = 2048 keeps 124M params), B=4 T=64", 4, 64, 1,
      "{\"model_type\":\"llama\",\"vocab_size\":50257,\"hidden_size\":768,\"intermediate_size\":2048,"
      "\"num_hidden_layers\":12,\"num_attention_heads\":12,\"tie_word_embeddings\":true}" },
    { "llmc-small-like", "llm.c 'small' anchor size (L4 C256 NH4 V50257) as a Llama, B=4 T=64", 4, 64, 1,
      "{\"model_type\":\"llama\",\"vocab_size\":50257,\"hidden_size\":256,\"intermediate_size\":688,"
      "\"num_hidden_layers\":4,\"num_attention_heads\":4,\"tie_word_embeddings\":true}" },
    { "llama2c-15m-like", "llama2.c stories15M shape (dim 288, 6 layers, vocab 32000)", 1, 256, 0,
      "{\"model_type\":\"llama\",\"vocab_size\":32000,\"hidden_size\":288,\"intermediate_size\":768,"
      "\"num_hidden_layers\":6,\"num_attention_heads\":6,\"rms_norm_eps\":1e-5,\"tie_word_embeddings\":true}" },
    { "llama2c-110m-like", "llama2.c stories110M shape (dim 768, 12 layers, vocab 32000)", 1, 256, 0,
      "{\"model_type\":\"llama\",\"vocab_size\":32000,\"hidden_size\":768,\"intermediate_size\":2048,"
      "\"num_hidden_layers\":12,\"num_attention_heads\":12,\"rms_norm_eps\":1e-5,\"tie_word_embeddings\":true}" },
};
#define NPRESETS (int)(sizeof presets / sizeof presets[0])

/* ---- timing ----------------------------------------------------------------------------------- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* CPU seconds used by this process so far (all threads), or -1. */
static double cpu_seconds(void) {
#ifdef BENCH_FORK
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
#else
    return -1;
#endif
}

/* Runs fn once to warm up, then at least 3 times and until 2 s have passed (at most 15);
   returns the median seconds per run. *busy gets the CPU time used per wall second and thread
   (near 1 when the threads had the cores to themselves; well below when others ran). */
typedef int (*bench_fn)(void *ctx);
static double median_time(bench_fn fn, void *ctx, double *busy) {
    double t[15], start, cpu0;
    int n = 0;
    if (fn(ctx) != 0) return -1;
    start = now();
    cpu0 = cpu_seconds();
    while (n < 15 && (n < 3 || now() - start < 2.0)) {
        double t0 = now();
        if (fn(ctx) != 0) return -1;
        t[n++] = now() - t0;
    }
    *busy = (cpu_seconds() - cpu0) / (now() - start) / cllm_num_threads();
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static double peak_rss_mib(void) {
#ifdef BENCH_FORK
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
#if defined(__APPLE__)
    return ru.ru_maxrss / 1048576.0;     /* bytes on macOS */
#else
    return ru.ru_maxrss / 1024.0;        /* KiB on Linux */
#endif
#else
    return -1;
#endif
}

/* ---- the machine's limits, measured in the same run as the figures they bound -------------------
   The FMA peak of the vector width this program was compiled for, the streaming read bandwidth, and OpenBLAS's
   sgemm on the matmul's own shapes. OpenBLAS only when the Makefile found it (-DBENCH_OPENBLAS -lopenblas): it is
   linked into the bench programs, never into the library. */
#if defined(__linux__)
extern int madvise(void *, size_t, int);
#endif
static double limit_fma_gflop_s = -1, limit_read_gb_s = -1;   /* from the limits job, before the models run */

/* Each thread runs LIMIT_ITERS steps of LIMIT_CHAINS independent chains acc = acc * m + c held in registers: enough
   chains to cover the FMA latency (4 cycles) times the FMA pipes (2). Nothing is loaded or stored; the values
   converge to c / (1 - m) = 1. flops = 2 x lanes x chains x steps x threads. */
#define LIMIT_CHAINS 12
#define LIMIT_ITERS 20000000L
#if defined(CLLM__AVX512)
#define LIMIT_LANES 16
#elif defined(CLLM__AVX2)
#define LIMIT_LANES 8
#else
#define LIMIT_LANES 1
#endif
static volatile float limit_sink;

static int run_fma_chains(void *unused) {
    (void)unused;
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        float total = 0;
        long step;
        int i;
#if defined(CLLM__AVX512)
        __m512 acc[LIMIT_CHAINS], m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.001f);
        for (i = 0; i < LIMIT_CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
        for (step = 0; step < LIMIT_ITERS; step++) {
#pragma GCC unroll 12
            for (i = 0; i < LIMIT_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
        }
        for (i = 0; i < LIMIT_CHAINS; i++) total += _mm512_reduce_add_ps(acc[i]);
#elif defined(CLLM__AVX2)
        __m256 acc[LIMIT_CHAINS], m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
        for (i = 0; i < LIMIT_CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
        for (step = 0; step < LIMIT_ITERS; step++) {
#pragma GCC unroll 12
            for (i = 0; i < LIMIT_CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
        }
        for (i = 0; i < LIMIT_CHAINS; i++) total += _mm256_cvtss_f32(acc[i]);
#else
        float acc[LIMIT_CHAINS];
        for (i = 0; i < LIMIT_CHAINS; i++) acc[i] = (float)i;
        for (step = 0; step < LIMIT_ITERS; step++) {
            for (i = 0; i < LIMIT_CHAINS; i++) acc[i] = acc[i] * 0.999f + 0.001f;
        }
        for (i = 0; i < LIMIT_CHAINS; i++) total += acc[i];
#endif
        if (total == 12345.0f) limit_sink = total;    /* keeps the chains alive */
    }
    return 0;
}

/* Every thread sums its own contiguous part of an array far larger than the caches (written first by the same
   threads, on 2 MB pages where allowed, as the library's tensors are), as LIMIT_STREAMS interleaved sequential
   streams of 64-byte lines: one stream per thread reads about 20% less on a Zen 5 host, and the decoding kernels
   read several rows of W at once. */
#define LIMIT_STREAMS 4
#define LIMIT_READ_BYTES ((size_t)512 << 20)
typedef struct read_ctx { float *a; long n; } read_ctx;

static int run_read_pass(void *p) {
    read_ctx *r = (read_ctx *)p;
    long threads = cllm_num_threads(), part = (r->n / threads + 63) / 64 * 64, th;
    double total = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) reduction(+:total)
#endif
    for (th = 0; th < threads; th++) {
        long begin = th * part, end = begin + part < r->n ? begin + part : r->n;
        long len = end > begin ? (end - begin) / LIMIT_STREAMS / 16 * 16 : 0, i;
        const float *a = r->a + (end > begin ? begin : 0);
        int q;
#if defined(CLLM__AVX512)
        __m512 s[LIMIT_STREAMS];
        for (q = 0; q < LIMIT_STREAMS; q++) s[q] = _mm512_setzero_ps();
        for (i = 0; i < len; i += 16) {
            for (q = 0; q < LIMIT_STREAMS; q++) s[q] = _mm512_add_ps(s[q], _mm512_load_ps(a + q * len + i));
        }
        for (q = 0; q < LIMIT_STREAMS; q++) total += _mm512_reduce_add_ps(s[q]);
#elif defined(CLLM__AVX2)
        __m256 s[LIMIT_STREAMS];
        for (q = 0; q < LIMIT_STREAMS; q++) s[q] = _mm256_setzero_ps();
        for (i = 0; i < len; i += 16) {
            for (q = 0; q < LIMIT_STREAMS; q++) {
                __m256 line = _mm256_add_ps(_mm256_load_ps(a + q * len + i), _mm256_load_ps(a + q * len + i + 8));
                s[q] = _mm256_add_ps(s[q], line);
            }
        }
        for (q = 0; q < LIMIT_STREAMS; q++) total += _mm256_cvtss_f32(s[q]);
#else
        for (i = 0; i < len; i++) {
            for (q = 0; q < LIMIT_STREAMS; q++) total += a[q * len + i];
        }
#endif
    }
    if (total == -1) limit_sink = (float)total;
    return 0;
}

#ifdef BENCH_OPENBLAS
/* OpenBLAS picks its kernels when it loads, by CPU detection or OPENBLAS_CORETYPE. Debian's 0.3.21 does not know
   Zen 5 and takes it for Haswell (AVX2 kernels: half the AVX-512 sgemm's speed), and some environments set
   OPENBLAS_CORETYPE=Haswell. The limit of an AVX-512 build is the AVX-512 sgemm, so then the bench runs itself
   again with OPENBLAS_CORETYPE=SkylakeX and says so (BENCH_KEEP_OPENBLAS_CORETYPE=1 keeps the core). */
static void openblas_prefer_avx512(char **argv) {
#if defined(CLLM__AVX512) && defined(__linux__)
    const char *core = openblas_get_corename();
    if (getenv("BENCH_OPENBLAS_WAS")) {
        printf("note: OpenBLAS runs its SkylakeX kernels (it had picked %s)\n", getenv("BENCH_OPENBLAS_WAS"));
        return;
    }
    if (getenv("BENCH_KEEP_OPENBLAS_CORETYPE") || !core) return;
    if (strstr(core, "kylakex") || strstr(core, "ooperlake") || strstr(core, "apphire")) return;
    setenv("BENCH_OPENBLAS_WAS", core, 1);
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    execv("/proc/self/exe", argv);      /* if that fails, go on with the core it picked */
#else
    (void)argv;
#endif
}
#endif

/* The limits as a JSON object: fma_peak_gflop_s, read_gb_s (null when they could not be measured). */
static cJSON *bench_limits(void) {
    cJSON *o = cJSON_CreateObject();
    read_ctx r;
    double t, busy, bytes = (double)LIMIT_READ_BYTES;
    long i;
    t = median_time(run_fma_chains, NULL, &busy);
    limit_fma_gflop_s = 2.0 * LIMIT_LANES * LIMIT_CHAINS * (double)LIMIT_ITERS * cllm_num_threads() / t / 1e9;
    printf("limits: FMA peak %.0f GFLOP/s (%d-lane vectors, %d thread(s))", limit_fma_gflop_s, LIMIT_LANES,
           cllm_num_threads());
    cJSON_AddNumberToObject(o, "fma_peak_gflop_s", limit_fma_gflop_s);
    r.n = (long)(LIMIT_READ_BYTES / sizeof(float));
    if (posix_memalign((void **)&r.a, 64, LIMIT_READ_BYTES) != 0) r.a = NULL;
    if (!r.a) {
        printf(", read bandwidth: no memory for %.0f MiB\n", bytes / 1048576);
        cJSON_AddNullToObject(o, "read_gb_s");
        return o;
    }
#if defined(__linux__)
    madvise(r.a, LIMIT_READ_BYTES, 14);            /* MADV_HUGEPAGE, which strict C99 hides */
#endif
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (i = 0; i < r.n; i++) r.a[i] = 1.0f / (float)(1 + (i & 1023));
    t = median_time(run_read_pass, &r, &busy);
    limit_read_gb_s = bytes / t / 1e9;
    printf(", streaming read %.1f GB/s (%.0f MiB)\n", limit_read_gb_s, bytes / 1048576);
    cJSON_AddNumberToObject(o, "read_gb_s", limit_read_gb_s);
    free(r.a);
    return o;
}

/* /proc/cpuinfo's "model name" (lscpu's), or "unknown" */
static void cpu_name(char *buf, size_t size) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(buf, size, "unknown");
    while (f && fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        colon += strspn(colon + 1, " \t") + 1;
        snprintf(buf, size, "%.*s", (int)strcspn(colon, "\n"), colon);
        break;
    }
    if (f) fclose(f);
}

/* a figure, or null when it was not measured */
static void add_figure(cJSON *o, const char *name, double value) {
    if (value > 0) cJSON_AddNumberToObject(o, name, value);
    else cJSON_AddNullToObject(o, name);
}

/* ---- the model figures ------------------------------------------------------------------------ */

typedef struct run_ctx { cllm_model *m; cllm_batch *batch; cllm_err err; } run_ctx;

static int run_forward(void *p) {
    run_ctx *r = (run_ctx *)p;
    return cllm_forward(r->m, r->batch, NULL, &r->err) != CLLM_OK;
}

static int run_train_step(void *p) {              /* what llm.c's train_gpt2 times: fwd + bwd + AdamW */
    run_ctx *r = (run_ctx *)p;
    return cllm_forward(r->m, r->batch, NULL, &r->err) != CLLM_OK || cllm_zero_grad(r->m, &r->err) != CLLM_OK ||
           cllm_backward(r->m, NULL, NULL, &r->err) != CLLM_OK || cllm_adamw_update(r->m, NULL, 1e-4, &r->err) != CLLM_OK;
}

static int run_fwd_bwd(void *p) {
    run_ctx *r = (run_ctx *)p;
    return cllm_forward(r->m, r->batch, NULL, &r->err) != CLLM_OK || cllm_zero_grad(r->m, &r->err) != CLLM_OK ||
           cllm_backward(r->m, NULL, NULL, &r->err) != CLLM_OK;
}

/* The weight stream of one decoding step: x W^T for every matrix of the model, one row. Decoding
   is bound by how fast the weights are read, and that speed moves with whatever else the machine
   is doing, so this compares our kernel with the plain loop llama2.c uses (a parallel for over
   output rows, each a dot product the compiler vectorizes, as -Ofast lets it), interleaved. */
typedef struct stream_ctx { const cllm_model *m; cllm_float *x, *y; int plain; double bytes; } stream_ctx;

static void plain_matvec(cllm_float *y, const cllm_float *x, const cllm_float *W, int n, int d) {
    int i;
#ifdef _OPENMP
#pragma omp parallel for
#endif
    for (i = 0; i < d; i++) {
        const cllm_float *w = W + (size_t)i * n;
        cllm_float v = 0;
        int j;
#ifdef _OPENMP
#pragma omp simd reduction(+:v)
#endif
        for (j = 0; j < n; j++) v += w[j] * x[j];
        y[i] = v;
    }
}

static int run_stream(void *p) {
    stream_ctx *c = (stream_ctx *)p;
    const cllm_config *g = &c->m->config;
    const cllm_params *w = &c->m->params;
    int C = g->hidden_size, Q = g->n_heads * g->head_dim, K = g->n_kv_heads * g->head_dim, I = g->intermediate_size, l, k;
    c->bytes = 0;
    for (l = 0; l <= g->n_layers; l++) {
        const cllm_float *mats[7];
        int rows[7], cols[7], nm = 7;
        if (l == g->n_layers) { mats[0] = w->lm_head; rows[0] = g->vocab_size; cols[0] = C; nm = 1; }
        else {
            mats[0] = w->wq + (size_t)l * Q * C; rows[0] = Q; cols[0] = C;
            mats[1] = w->wk + (size_t)l * K * C; rows[1] = K; cols[1] = C;
            mats[2] = w->wv + (size_t)l * K * C; rows[2] = K; cols[2] = C;
            mats[3] = w->wo + (size_t)l * C * Q; rows[3] = C; cols[3] = Q;
            mats[4] = w->w_gate + (size_t)l * I * C; rows[4] = I; cols[4] = C;
            mats[5] = w->w_up + (size_t)l * I * C; rows[5] = I; cols[5] = C;
            mats[6] = w->w_down + (size_t)l * C * I; rows[6] = C; cols[6] = I;
        }
        for (k = 0; k < nm; k++) {
            c->bytes += (double)sizeof(cllm_float) * rows[k] * cols[k];
            if (c->plain) plain_matvec(c->y, c->x, mats[k], cols[k], rows[k]);
            else cllm_matmul_forward(c->y, c->x, mats[k], NULL, 1, cols[k], rows[k]);
        }
    }
    return 0;
}

/* Median seconds of each kind of pass, the two measured in turns (5 rounds), and the bytes of
   weights one pass reads. */
static void bench_stream(const cllm_model *m, double *ours, double *plain, double *bytes) {
    const cllm_config *g = &m->config;
    int Q = g->n_heads * g->head_dim, n = g->intermediate_size > g->hidden_size ? g->intermediate_size : g->hidden_size, big, r, i;
    double t[2][5], busy;
    stream_ctx c;
    if (Q > n) n = Q;                               /* x is the input of every matrix, y its output */
    big = g->vocab_size > n ? g->vocab_size : n;
    c.m = m;
    c.x = (cllm_float *)calloc((size_t)n, sizeof(cllm_float));
    c.y = (cllm_float *)calloc((size_t)big, sizeof(cllm_float));
    *ours = *plain = -1;
    c.bytes = 0;
    if (c.x && c.y) {
        for (i = 0; i < n; i++) c.x[i] = 1.0f / (1 + i % 7);
        for (r = 0; r < 5; r++) for (c.plain = 0; c.plain < 2; c.plain++) t[c.plain][r] = median_time(run_stream, &c, &busy);
        qsort(t[0], 5, sizeof(double), cmp_double); qsort(t[1], 5, sizeof(double), cmp_double);
        *ours = t[0][2]; *plain = t[1][2];
    }
    *bytes = c.bytes;
    free(c.x); free(c.y);
}

/* How far the bf16 copy's logits are from fp32's, on the fp32 greedy sequence (prompt + 256 tokens) fed to a KV cache
   of each kind: max |diff|, that over the largest |fp32 logit|, mean |diff|, the share of positions whose argmax
   agrees; and how many of the 256 greedy tokens the two generations share before they first differ. */
static int bench_bf16_logits(cllm_model *m, int id0, const cllm_completion c[2], cJSON *o, cllm_err *err) {
    int n = c[0].n + 1, V = m->config.vocab_size, t, v, w, agree = 0, same = 0;
    int *ids = (int *)malloc(sizeof(int) * (size_t)n);
    cllm_float *logits[2];
    double max_abs = 0, max_logit = 0, sum_abs = 0;
    logits[0] = (cllm_float *)malloc(sizeof(cllm_float) * (size_t)n * V);
    logits[1] = (cllm_float *)malloc(sizeof(cllm_float) * (size_t)n * V);
    if (!ids || !logits[0] || !logits[1]) {
        free(ids); free(logits[0]); free(logits[1]);
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return 1;
    }
    ids[0] = id0;
    memcpy(ids + 1, c[0].ids, sizeof(int) * (size_t)c[0].n);
    for (w = 0; w < 2; w++) {
        cllm_kv_cache kv;
        int rc = cllm_kv_cache_init(&kv, m, 1, n, err) != CLLM_OK;
        kv.weights = w ? CLLM_SAMPLE_BF16 : CLLM_SAMPLE_FP32;
        rc = rc || cllm_kv_prefill(m, &kv, 0, ids, n, logits[w], err) != CLLM_OK;
        cllm_kv_cache_free(&kv);
        if (rc) { free(ids); free(logits[0]); free(logits[1]); return 1; }
    }
    for (t = 0; t < n; t++) {
        const cllm_float *a = logits[0] + (size_t)t * V, *b = logits[1] + (size_t)t * V;
        int best_a = 0, best_b = 0;
        for (v = 0; v < V; v++) {
            double d = fabs((double)a[v] - b[v]);
            if (d > max_abs) max_abs = d;
            if (fabs(a[v]) > max_logit) max_logit = fabs(a[v]);
            sum_abs += d;
            if (a[v] > a[best_a]) best_a = v;
            if (b[v] > b[best_b]) best_b = v;
        }
        agree += best_a == best_b;
    }
    while (same < c[0].n && same < c[1].n && c[0].ids[same] == c[1].ids[same]) same++;
    printf("  bf16 logits vs fp32  max |diff| %.3g (%.3g of the largest |logit|), mean %.3g; argmax agrees at %d of "
           "%d positions; greedy: the first %d of %d tokens equal\n", max_abs, max_abs / max_logit,
           sum_abs / ((double)n * V), agree, n, same, c[0].n);
    cJSON_AddNumberToObject(o, "bf16_logits_max_abs_diff", max_abs);
    cJSON_AddNumberToObject(o, "bf16_logits_max_rel_diff", max_abs / max_logit);
    cJSON_AddNumberToObject(o, "bf16_logits_mean_abs_diff", sum_abs / ((double)n * V));
    cJSON_AddNumberToObject(o, "bf16_argmax_agree", (double)agree / n);
    cJSON_AddNumberToObject(o, "bf16_greedy_same_tokens", same);
    free(ids); free(logits[0]); free(logits[1]);
    return 0;
}

/* Benchmarks one model; returns its figures as a JSON object (NULL on error). */
static cJSON *bench_model(const char *name, const char *why, const cllm_config *cfg, int B, int T, int train) {
    cllm_model m;
    cllm_batch batch, one;
    cllm_err err;
    cllm_rng rng;
    run_ctx ctx;
    int *ids = (int *)malloc(sizeof(int) * (size_t)B * T), i, id0 = 1;
    double t, t0 = now(), N, tokens = (double)B * T, busy = 0, least_busy = 1;
    cJSON *o = cJSON_CreateObject();
    if (!ids || !o) return NULL;
    if (cllm_model_init(&m, cfg, 1, &err) != CLLM_OK) { fprintf(stderr, "%s: %s\n", name, err.msg); free(ids); cJSON_Delete(o); return NULL; }
    N = (double)m.num_params;
    printf("%s: %s\n  %.1fM parameters, random weights (%.1f s to initialise), B=%d T=%d\n", name, why, N / 1e6, now() - t0, B, T);
    cllm_rng_seed(&rng, 7);
    for (i = 0; i < B * T; i++) ids[i] = (int)(cllm_rng_u32(&rng) % (uint32_t)cfg->vocab_size);
    memset(&batch, 0, sizeof batch);
    batch.B = B; batch.T = T; batch.input_ids = ids;
    ctx.m = &m; ctx.batch = &batch;
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "shape", why);
    cJSON_AddNumberToObject(o, "params", N);
    cJSON_AddNumberToObject(o, "B", B);
    cJSON_AddNumberToObject(o, "T", T);

    t = median_time(run_forward, &ctx, &busy);
    if (t < 0) goto fail;
    if (busy < least_busy) least_busy = busy;
    printf("  forward              %8.1f ms  %8.0f tok/s  %6.1f GFLOP/s (2N per token)\n", t * 1e3, tokens / t, 2 * N * tokens / t / 1e9);
    cJSON_AddNumberToObject(o, "forward_ms", t * 1e3);
    cJSON_AddNumberToObject(o, "forward_tok_s", tokens / t);
    if (train) {
        t = median_time(run_fwd_bwd, &ctx, &busy);
        if (t < 0) goto fail;
        if (busy < least_busy) least_busy = busy;
        printf("  forward+backward     %8.1f ms  %8.0f tok/s  %6.1f GFLOP/s (6N per token)\n", t * 1e3, tokens / t, 6 * N * tokens / t / 1e9);
        cJSON_AddNumberToObject(o, "fwd_bwd_ms", t * 1e3);
        cJSON_AddNumberToObject(o, "peak_rss_fwd_bwd_mib", peak_rss_mib());
        printf("  peak RSS, fwd+bwd    %8.0f MiB (params + grads + activations)\n", peak_rss_mib());
        t = median_time(run_train_step, &ctx, &busy);
        if (t < 0) goto fail;
        if (busy < least_busy) least_busy = busy;
        printf("  training step        %8.1f ms  %8.0f tok/s  %6.1f GFLOP/s (fwd+bwd+AdamW, 6N per token)\n", t * 1e3, tokens / t, 6 * N * tokens / t / 1e9);
        cJSON_AddNumberToObject(o, "train_step_ms", t * 1e3);
        cJSON_AddNumberToObject(o, "train_tok_s", tokens / t);
        cJSON_AddNumberToObject(o, "train_gflop_s", 6 * N * tokens / t / 1e9);
        add_figure(o, "train_vs_fma_peak", limit_fma_gflop_s > 0 ? 6 * N * tokens / t / 1e9 / limit_fma_gflop_s : -1);
        cJSON_AddNumberToObject(o, "peak_rss_train_mib", peak_rss_mib());   /* before any generation */
    }
    /* Generation preview: a forward of one token (T=1) streams every weight once, as one
       KV-cache decoding step at a short context does (without its attention over the cache). */
    memset(&one, 0, sizeof one);
    one.B = 1; one.T = 1; one.input_ids = &id0;
    ctx.batch = &one;
    t = median_time(run_forward, &ctx, &busy);
    if (t < 0) goto fail;
    if (busy < least_busy) least_busy = busy;
    printf("  1-token forward      %8.2f ms  %8.1f tok/s  (one token, no cache)\n", t * 1e3, 1 / t);
    cJSON_AddNumberToObject(o, "one_token_forward_ms", t * 1e3);
    cJSON_AddNumberToObject(o, "gen_preview_tok_s", 1 / t);
    {   /* generation with the KV cache: greedy, 256 new tokens after a 1-token prompt, as llama2.c's
           anchor is measured (the best of 3 runs), from the fp32 weights and from the bf16 copy in turns */
        cllm_gen_config g;
        cllm_completion c[2];
        double best[2] = { 0, 0 };
        int rep_, w;
        memset(&g, 0, sizeof g);
        memset(c, 0, sizeof c);
        g.sampler.greedy = 1; g.max_new_tokens = 256; g.ignore_eos = 1;
        for (rep_ = 0; rep_ < 3; rep_++) for (w = 0; w < 2; w++) {
            double t1 = now();
            cllm_completions_free(&c[w], 1);
            g.weights = w ? CLLM_SAMPLE_BF16 : CLLM_SAMPLE_FP32;
            if (cllm_generate(&m, &id0, 1, 1, &g, &c[w], &err) != CLLM_OK) {
                ctx.err = err;
                cllm_completions_free(c, 2);
                goto fail;
            }
            t1 = now() - t1;
            if (c[w].n / t1 > best[w]) best[w] = c[w].n / t1;
        }
        printf("  generation (KV cache) %7.1f tok/s  (greedy, 256 tokens); bf16 weights %7.1f tok/s (x%.2f, "
               "interleaved)\n", best[0], best[1], best[1] / best[0]);
        cJSON_AddNumberToObject(o, "gen_kv_tok_s", best[0]);
        cJSON_AddNumberToObject(o, "gen_kv_bf16_tok_s", best[1]);
        cJSON_AddNumberToObject(o, "gen_kv_bf16_vs_fp32", best[1] / best[0]);
        if (bench_bf16_logits(&m, id0, c, o, &ctx.err) != 0) { cllm_completions_free(c, 2); goto fail; }
        cllm_completions_free(c, 2);
    }
    {   /* what bounds generation: reading the weights once per token, ours vs llama2.c's loop */
        double ours, plain, bytes;
        bench_stream(&m, &ours, &plain, &bytes);
        if (ours > 0 && plain > 0) {
            printf("  decode weight stream  %6.2f ms %5.1f GB/s; llama2.c's loop %6.2f ms %5.1f GB/s (x%.2f, interleaved)\n",
                   ours * 1e3, bytes / ours / 1e9, plain * 1e3, bytes / plain / 1e9, plain / ours);
            cJSON_AddNumberToObject(o, "decode_stream_ms", ours * 1e3);
            cJSON_AddNumberToObject(o, "decode_stream_gb_s", bytes / ours / 1e9);
            cJSON_AddNumberToObject(o, "decode_stream_plain_loop_ms", plain * 1e3);
            cJSON_AddNumberToObject(o, "decode_stream_speedup_vs_plain_loop", plain / ours);
            /* the time over the weights' bytes at the measured read bandwidth: 1 would be the limit */
            add_figure(o, "decode_vs_read_bw", limit_read_gb_s > 0 ? ours / (bytes / (limit_read_gb_s * 1e9)) : -1);
            if (limit_read_gb_s > 0) printf("  decode weight stream / read-bandwidth floor: %.2f\n", ours * limit_read_gb_s * 1e9 / bytes);
        }
    }
    cJSON_AddNumberToObject(o, "peak_rss_mib", peak_rss_mib());
    cJSON_AddNumberToObject(o, "least_cpu_share", least_busy);
    if (least_busy < 0.85) printf("  note: the threads had %.0f%% of their cores in one phase; other processes were running\n", 100 * least_busy);
    printf("  peak RSS             %8.0f MiB (params %.0f MiB%s)\n", peak_rss_mib(), N * sizeof(cllm_float) / 1048576.0,
           train ? " + grads + AdamW m and v + activations" : " + activations");
    free(ids);
    cllm_model_free(&m);
    return o;
fail:
    fprintf(stderr, "%s: %s\n", name, ctx.err.msg);
    free(ids);
    cllm_model_free(&m);
    cJSON_Delete(o);
    return NULL;
}

/* ---- the matmul kernel alone: sgemm-shaped n x n x n ------------------------------------------ */

typedef struct mm_ctx { cllm_float *x, *w, *y, *dx, *dw; int n; } mm_ctx;
static int run_mm_forward(void *p) {
    mm_ctx *c = (mm_ctx *)p;
    cllm_matmul_forward(c->y, c->x, c->w, NULL, c->n, c->n, c->n);
    return 0;
}
static int run_mm_backward(void *p) {
    mm_ctx *c = (mm_ctx *)p;
    cllm_matmul_backward(c->dx, c->dw, NULL, c->y, c->x, c->w, c->n, c->n, c->n);
    return 0;
}
#ifdef BENCH_OPENBLAS
/* The same products with OpenBLAS: y = x W^T, then dx += y W and dW += y^T x. */
static int run_blas_forward(void *p) {
    mm_ctx *c = (mm_ctx *)p;
    int n = c->n;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, c->x, n, c->w, n, 0.0f, c->y, n);
    return 0;
}
static int run_blas_backward(void *p) {
    mm_ctx *c = (mm_ctx *)p;
    int n = c->n;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, c->y, n, c->w, n, 1.0f, c->dx, n);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, n, 1.0f, c->y, n, c->x, n, 1.0f, c->dw, n);
    return 0;
}
#endif

/* The four timings taken in turns, 3 rounds, each the median of its runs; returns the median round. OpenBLAS's
   threads spin for a while after a call, so the next timing waits 200 ms for them. */
enum { MM_OURS_FWD, MM_OURS_BWD, MM_BLAS_FWD, MM_BLAS_BWD, MM_KINDS };
static void time_matmuls(mm_ctx *c, double seconds[MM_KINDS], double *least_busy) {
    static const bench_fn runs[MM_KINDS] = {
        run_mm_forward, run_mm_backward,
#ifdef BENCH_OPENBLAS
        run_blas_forward, run_blas_backward
#endif
    };
    double t[MM_KINDS][3], busy;
    int round, kind;
    *least_busy = 1;
    for (round = 0; round < 3; round++) for (kind = 0; kind < MM_KINDS; kind++) {
        struct timespec pause = { 0, 200000000L };
        t[kind][round] = runs[kind] ? median_time(runs[kind], c, &busy) : -1;
        if (runs[kind] && kind < MM_BLAS_FWD && busy < *least_busy) *least_busy = busy;
        if (runs[kind] && kind >= MM_BLAS_FWD) nanosleep(&pause, NULL);
    }
    for (kind = 0; kind < MM_KINDS; kind++) {
        qsort(t[kind], 3, sizeof(double), cmp_double);
        seconds[kind] = t[kind][1];
    }
}


static cJSON *bench_matmul(int n) {
    mm_ctx c;
    size_t nn = (size_t)n * n, i;
    cllm_rng rng;
    double t[MM_KINDS], least_busy, flop = 2.0 * n * (double)nn, gf, gb, blas_f, blas_b;
    cJSON *o = cJSON_CreateObject();
    c.n = n;
    c.x = (cllm_float *)calloc(nn, sizeof(cllm_float));
    c.w = (cllm_float *)calloc(nn, sizeof(cllm_float));
    c.y = (cllm_float *)calloc(nn, sizeof(cllm_float));
    c.dx = (cllm_float *)calloc(nn, sizeof(cllm_float));
    c.dw = (cllm_float *)calloc(nn, sizeof(cllm_float));
    if (!o || !c.x || !c.w || !c.y || !c.dx || !c.dw) {
        free(c.x); free(c.w); free(c.y); free(c.dx); free(c.dw); cJSON_Delete(o);
        return NULL;
    }
    cllm_rng_seed(&rng, 3);
    for (i = 0; i < nn; i++) { c.x[i] = (cllm_float)cllm_rng_normal(&rng); c.w[i] = (cllm_float)cllm_rng_normal(&rng); }
#ifdef BENCH_OPENBLAS
    openblas_set_num_threads(cllm_num_threads());
#endif
    time_matmuls(&c, t, &least_busy);
    gf = flop / t[MM_OURS_FWD] / 1e9;
    gb = 2 * flop / t[MM_OURS_BWD] / 1e9;
    blas_f = t[MM_BLAS_FWD] > 0 ? flop / t[MM_BLAS_FWD] / 1e9 : -1;
    blas_b = t[MM_BLAS_BWD] > 0 ? 2 * flop / t[MM_BLAS_BWD] / 1e9 : -1;
    printf("%d thread(s): matmul n=%d: forward %.1f GFLOP/s (%.2f ms), backward dinp+dW %.1f GFLOP/s (%.2f ms)\n",
           cllm_num_threads(), n, gf, t[MM_OURS_FWD] * 1e3, gb, t[MM_OURS_BWD] * 1e3);
    if (blas_f > 0) printf("  OpenBLAS sgemm, in turns: forward %.1f GFLOP/s (ours x%.2f), backward %.1f (ours x%.2f)\n",
                           blas_f, gf / blas_f, blas_b, gb / blas_b);
    else printf("  OpenBLAS: absent (the bench was built without it; make build/bench links it where installed)\n");
    cJSON_AddNumberToObject(o, "n", n);
    cJSON_AddNumberToObject(o, "threads", cllm_num_threads());
    cJSON_AddNumberToObject(o, "forward_gflop_s", gf);
    cJSON_AddNumberToObject(o, "backward_gflop_s", gb);
    add_figure(o, "openblas_gflop_s", blas_f);
    add_figure(o, "openblas_backward_gflop_s", blas_b);
    add_figure(o, "forward_vs_openblas", blas_f > 0 ? gf / blas_f : -1);
    add_figure(o, "backward_vs_openblas", blas_b > 0 ? gb / blas_b : -1);
    cJSON_AddNumberToObject(o, "least_cpu_share", least_busy);
    free(c.x); free(c.w); free(c.y); free(c.dx); free(c.dw);
    return o;
}

/* ---- each benchmark in a child process, figures back through a pipe ---------------------------
   Each child has its own peak RSS; and the parent never starts OpenMP threads, which a forked
   child could not use (libgomp's thread pool does not survive fork). */

typedef struct job { const char *name, *why; const cllm_config *cfg; int B, T, train, matmul_n, limits; } job;

static cJSON *run_job(const job *j) {
    if (j->limits) return bench_limits();
    if (!j->cfg) return bench_matmul(j->matmul_n);
    return bench_model(j->name, j->why, j->cfg, j->B, j->T, j->train);
}

static cJSON *isolated(const job *j) {
#ifdef BENCH_FORK
    int fd[2];
    pid_t pid;
    char *text = NULL;
    size_t len = 0, cap = 0;
    cJSON *o;
    fflush(stdout);
    if (pipe(fd) != 0 || (pid = fork()) < 0) return run_job(j);
    if (pid == 0) {
        cJSON *r = run_job(j);
        char *s = r ? cJSON_PrintUnformatted(r) : NULL;
        close(fd[0]);
        if (s && write(fd[1], s, strlen(s)) < 0) s = NULL;
        fflush(stdout);
        _exit(s ? 0 : 1);
    }
    close(fd[1]);
    for (;;) {
        ssize_t k;
        if (len + 4096 > cap) { char *nt = (char *)realloc(text, cap = 2 * cap + 4096); if (!nt) break; text = nt; }
        k = read(fd[0], text + len, cap - len - 1);
        if (k <= 0) break;
        len += (size_t)k;
    }
    close(fd[0]);
    waitpid(pid, NULL, 0);
    if (!text) return NULL;
    text[len] = 0;
    o = cJSON_Parse(text);
    free(text);
    return o;
#else
    return run_job(j);
#endif
}

static int add_figures(cJSON *models, cJSON *figures) {
    if (!figures) return 0;
    cJSON_AddItemToArray(models, figures);
    return 1;
}

static const flag_spec bench_flags[] = {
    { .name = "--preset", .type = FLAG_TEXT, .metavar = "NAME", .need = FLAG_REPEATABLE, .def_note = "all of them",
      .help = "a model shape to time (--list names them)" },
    { .name = "--config", .type = FLAG_IN_DIR, .metavar = "DIR",
      .help = "time the model of DIR/config.json (random weights) instead of the presets" },
    { .name = "--B", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 65536, .def_note = "the preset's; --config 1",
      .help = "batch size of the forward and training figures" },
    { .name = "--T", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e6, .def_note = "the preset's; --config 256",
      .help = "sequence length of the forward and training figures" },
    { .name = "--matmul", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 16384, .def = "1024",
      .help = "size of the matmul timed alone, 0 = skip it" },
    { .name = "--no-mr", .type = FLAG_SWITCH,
      .help = "skip the multiturn-aware reward against the loopback simulator" },
    { .name = "--json", .type = FLAG_OUT_FILE, .metavar = "PATH",
      .help = "also write the figures as JSON (data_fmt/bench.md)" },
    { .name = "--overwrite", .type = FLAG_SWITCH,
      .help = "replace an existing --json file" },
    { .name = "--list", .type = FLAG_SWITCH,
      .help = "list the presets and exit" },
};
static const flag_group bench_group = FLAG_GROUP("bench", bench_flags);
static const flag_command bench_command = {
    "bench", "Speed and memory of the transformer and its kernels on this machine (make bench).",
    "Prints the figures; --json writes them (data_fmt/bench.md). Without --preset or --config every preset runs. "
    "Build it with the fast paths on (make build/bench).", NULL,
    { &bench_group, NULL },
};

/* ---- the multiturn-aware reward against the loopback simulator ---------------------------------
   8 candidates x 3 forward samples x w = 2: 24 futures, each with two user turns served by the
   loopback server with 200 ms of latency per call (a remote simulator's), and an assistant that
   answers at once. All futures advance in lockstep, one concurrent batch of calls per round, so
   the wall time is about two rounds, not 48 calls one after another. */
#ifdef BENCH_MR
static void mr_handler(void *ctx, const mock_request *req, mock_response *resp) {
    (void)ctx;
    if (!strcmp(req->model, "user")) {
        resp->delay_ms = 200;
        resp->content = mock_strdup("{\"current_answer\": \"\", \"thought\": \"\", \"response\": \"large please\"}");
    } else resp->content = mock_strdup("one large coffee");
}
#endif

static cJSON *bench_mr(void) {
    cJSON *o = cJSON_CreateObject();
#ifdef BENCH_MR
    mock_server srv;
    cllm_client uc, ac;
    cllm_client_config cc;
    cllm_llm_sim sim;
    cllm_llm_sim_config scfg;
    cllm_api_assistant asst;
    cllm_api_assistant_config acfg;
    cllm_metric metric;
    cllm_mr_config mr;
    cllm_mr_item items[8];
    cllm_mr_result res[8];
    cllm_goal goal = { "ordering", "order a large coffee", NULL };
    cllm_conv hist;
    cllm_err err;
    char url[64];
    double t;
    int i, calls;
    (void)mock_last_user; (void)mock_reset_stats;
    if (mock_start(&srv, mr_handler, NULL) != 0) { cJSON_AddStringToObject(o, "error", "cannot start the loopback server"); return o; }
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", srv.port);
    memset(&cc, 0, sizeof cc);
    cc.base_url = url; cc.max_concurrency = 64;
    cllm_client_init(&uc, &cc, &err); cllm_client_init(&ac, &cc, &err);
    memset(&scfg, 0, sizeof scfg); scfg.params.model = "user";
    cllm_llm_sim_init(&sim, &uc, &scfg);
    memset(&acfg, 0, sizeof acfg); acfg.params.model = "assistant";
    cllm_api_assistant_init(&asst, &ac, &acfg);
    memset(&metric, 0, sizeof metric);
    cllm_metric_builtin("exact_match", &metric, &err); metric.weight = 1;
    cllm_mr_config_init(&mr, CLLM_MR_PRESET_MATH);
    mr.metrics = &metric; mr.n_metrics = 1;
    memset(&hist, 0, sizeof hist);
    cllm_conv_push(&hist, "user", "i want a coffee", &err);
    for (i = 0; i < 8; i++) { items[i].goal = &goal; items[i].task = NULL; items[i].history = &hist; items[i].candidate = "what size ?"; }
    t = now();
    cllm_mr_score(&mr, &sim.sim, &asst.assistant, items, 8, res, &err);
    t = now() - t;
    calls = srv.requests;
    printf("multiturn-aware reward, 8 candidates x S=3 x w=2 (24 futures, %d endpoint calls, 200 ms each for the simulator):\n"
           "  %.2f s wall (one call after another would take %.1f s): %.1f candidates/s, %.0f calls/s, MR %.4f\n",
           calls, t, 48 * 0.2, 8 / t, calls / t, res[0].mr);
    cJSON_AddNumberToObject(o, "futures", 24);
    cJSON_AddNumberToObject(o, "endpoint_calls", calls);
    cJSON_AddNumberToObject(o, "simulator_latency_ms", 200);
    cJSON_AddNumberToObject(o, "wall_s", t);
    cJSON_AddNumberToObject(o, "sequential_s", 48 * 0.2);
    cJSON_AddNumberToObject(o, "candidates_per_s", 8 / t);
    for (i = 0; i < 8; i++) cllm_mr_result_free(&res[i]);
    cllm_conv_free(&hist);
    cllm_client_free(&uc); cllm_client_free(&ac);
    mock_stop(&srv);
#else
    cJSON_AddStringToObject(o, "error", "needs POSIX sockets");
#endif
    return o;
}

/* Is name one of the presets given with --preset? Every one of those must exist (0 after a message). */
static int preset_selected(const flags *fl, const char *name) {
    int i;
    for (i = 0; i < flag_given(fl, "--preset"); i++) if (strcmp(flag_nth(fl, "--preset", i), name) == 0) return 1;
    return 0;
}

static int presets_exist(const flags *fl) {
    int i;
    int k;
    for (i = 0; i < flag_given(fl, "--preset"); i++) {
        for (k = 0; k < NPRESETS && strcmp(presets[k].name, flag_nth(fl, "--preset", i)) != 0; k++) {}
        if (k == NPRESETS) {
            return !flags_fail(fl->cmd, "--preset: no preset '%s' (--list names them)", flag_nth(fl, "--preset", i));
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    const char *json_path;
    const char *cdir;
    int Bo;
    int To;
    int mm_n;
    int k;
    int failed = 0;
    int status;
    cllm_err err;
    job j, mm;
    cJSON *root, *models, *machine;
    char *out;
    flags fl;
    run_files rf;
    flags_status parsed = flags_parse(&fl, &bench_command, argc - 1, argv + 1);
    char cpu[256];
    cJSON *limits;

    if (parsed != FLAGS_OK) return parsed == FLAGS_HELP ? 0 : 2;
    if (flag_on(&fl, "--list")) {
        for (k = 0; k < NPRESETS; k++) printf("%-18s %s\n", presets[k].name, presets[k].why);
        return 0;
    }
    if (!presets_exist(&fl)) return 2;
    if ((status = run_files_prepare(&rf, &fl)) != 0) return status;
    json_path = flag_text(&fl, "--json");
    cdir = flag_text(&fl, "--config");
    Bo = (int)flag_number(&fl, "--B");
    To = (int)flag_number(&fl, "--T");
    mm_n = (int)flag_number(&fl, "--matmul");
#ifdef BENCH_OPENBLAS
    openblas_prefer_avx512(argv);
#endif
    root = cJSON_CreateObject();
    models = cJSON_CreateArray();
    machine = cJSON_CreateObject();
#if defined(CLLM__AVX512)
    cJSON_AddStringToObject(machine, "simd", "avx512+fma");
#elif defined(CLLM__AVX2)
    cJSON_AddStringToObject(machine, "simd", "avx2+fma");
#elif defined(CLLM__NEON)
    cJSON_AddStringToObject(machine, "simd", "neon");
#else
    cJSON_AddStringToObject(machine, "simd", "none");
#endif
#ifdef CLLM_BLOCKED
    cJSON_AddBoolToObject(machine, "blocked_matmul", 1);
#else
    cJSON_AddBoolToObject(machine, "blocked_matmul", 0);
#endif
    {   /* the figures mean little if something else is running */
        FILE *f = fopen("/proc/loadavg", "r");
        double load = 0;
        if (f) {
            if (fscanf(f, "%lf", &load) == 1 && load > 0.5) printf("note: load average %.2f; other processes will slow these figures\n", load);
            fclose(f);
        }
    }
    printf("collabllm.h bench: SIMD %s, blocked matmul %s\n",
           cJSON_GetObjectItem(machine, "simd")->valuestring, cJSON_IsTrue(cJSON_GetObjectItem(machine, "blocked_matmul")) ? "on" : "off");
    cpu_name(cpu, sizeof cpu);
    printf("CPU: %s, %d thread(s)\n", cpu, cllm_num_threads());
    cJSON_AddStringToObject(machine, "cpu", cpu);
#ifdef BENCH_OPENBLAS
    cJSON_AddStringToObject(machine, "openblas_core", openblas_get_corename());
#else
    cJSON_AddStringToObject(machine, "openblas_core", "absent");
#endif
    memset(&mm, 0, sizeof mm);
    mm.limits = 1;                                 /* in a child too: the parent starts no threads */
    limits = isolated(&mm);
    limit_fma_gflop_s = cJSON_GetNumberValue(cJSON_GetObjectItem(limits, "fma_peak_gflop_s"));
    limit_read_gb_s = cJSON_GetNumberValue(cJSON_GetObjectItem(limits, "read_gb_s"));
    add_figure(machine, "fma_peak_gflop_s", limit_fma_gflop_s > 0 ? limit_fma_gflop_s : -1);
    add_figure(machine, "read_gb_s", limit_read_gb_s > 0 ? limit_read_gb_s : -1);
    cJSON_Delete(limits);
    cJSON_AddItemToObject(root, "machine", machine);
    memset(&mm, 0, sizeof mm);
    mm.matmul_n = mm_n;
    if (mm_n > 0) cJSON_AddItemToObject(root, "matmul", isolated(&mm));

    if (cdir) {                                    /* a Hugging Face config.json */
        char path[4096], *text;
        size_t len;
        cllm_config cfg;
        snprintf(path, sizeof path, "%s/config.json", cdir);
        if (cllm_read_file(path, &text, &len, &err) != CLLM_OK || cllm_config_parse(&cfg, text, len, &err) != CLLM_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        cllm_free_buffer(text);
        j.name = cdir; j.why = "config.json"; j.cfg = &cfg; j.B = Bo ? Bo : 1; j.T = To ? To : 256; j.train = 1;
        if (!add_figures(models, isolated(&j))) failed = 1;
    }
    for (k = 0; k < NPRESETS; k++) {
        const preset *p = &presets[k];
        cllm_config cfg;
        if (!preset_selected(&fl, p->name) && (cdir || flag_given(&fl, "--preset"))) continue;
        if (cllm_config_parse(&cfg, p->config, strlen(p->config), &err) != CLLM_OK) { fprintf(stderr, "%s: %s\n", p->name, err.msg); return 1; }
        j.name = p->name; j.why = p->why; j.cfg = &cfg; j.B = Bo ? Bo : p->B; j.T = To ? To : p->T; j.train = p->train;
        if (!add_figures(models, isolated(&j))) failed = 1;
    }
    cJSON_AddItemToObject(root, "models", models);
    if (!flag_on(&fl, "--no-mr")) cJSON_AddItemToObject(root, "mr", bench_mr());
    out = cJSON_Print(root);
    if (json_path && out) {
        if (cllm_write_file_atomic(json_path, out, strlen(out), &err) != CLLM_OK) { fprintf(stderr, "%s\n", err.msg); failed = 1; }
        else printf("figures written to %s\n", json_path);
    }
    free(out);
    cJSON_Delete(root);
    return failed;
}
