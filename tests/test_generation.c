/* test_generation.c - the KV-cache forward and the generation loop.
   - KV-cache logits equal cllm_forward's logits at every position, on every golden model (qwen2
     biases, qwen3 q/k norm, llama3 RoPE scaling, GQA, tied heads), with several sequences of
     different lengths in one cache, block prefill across the 32-row block size, and decode steps
     where the sequences sit at different positions; and they match the PyTorch logits too.
   - Greedy generation picks the argmax of the full forward's logits at every step; sampled
     generation reports the log-probs a full forward at the sampling temperature computes.
   - A seed reproduces its samples, a sample does not depend on how many others run with it,
     and generation stops on EOS ids, the stop callback and max_new_tokens.
   - bf16 sampling weights: the KV cache and generation with them equal the fp32 code on rounded weights, bit for
     bit; the copy is made again after the weights change and dropped by cllm_forward.
   - The example of data_fmt/generate-ids.md parses with the documented fields. */
#include "../collabllm.h"
#include "check.h"
#include <string.h>
#include <math.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

static const char *cases[] = { "llama_gqa_tied", "qwen2_bias", "qwen3_qknorm", "llama3_rope", "llama_bf16", "llama_f16_sharded" };

static cllm_float *read_tensor(const char *path, const char *name) {
    cllm_safetensors st;
    cllm_err err;
    const cllm_st_tensor *t;
    cllm_float *buf = NULL;
    if (cllm_st_open(&st, path, &err) != CLLM_OK) { printf("  FAIL %s\n", err.msg); check_failures++; return NULL; }
    if ((t = cllm_st_find(&st, name)) != NULL) {
        buf = (cllm_float *)malloc((size_t)t->numel * sizeof(cllm_float) + 1);
        cllm_st_read(&st, t, buf, &err);
    }
    cllm_st_close(&st);
    return buf;
}

/* ---- KV-cache logits against the full forward ----------------------------------------------- */

/* Feeds an empty cache the batch's rows: the longest row in one prefill (crossing the 32-row block when T > 32), the
   next row its first half, the others nothing; then decode steps feed everyone's remaining tokens. cached (B, T, V)
   receives the logits of every real position. */
static void fill_cache(const cllm_model *m, cllm_kv_cache *kv, const cllm_batch *batch, const int *lens, int longest,
                       cllm_float *cached) {
    int B = batch->B, T = batch->T, V = m->config.vocab_size, b, ids[8];
    cllm_float *step = (cllm_float *)calloc((size_t)B * V, sizeof(cllm_float));
    cllm_err err;
    for (b = 0; b < B; b++) {
        int pre = b == longest ? lens[b] : b == (longest + 1) % B ? lens[b] / 2 : 0;
        if (pre && cllm_kv_prefill(m, kv, b, batch->input_ids + b * T, pre, cached + (size_t)b * T * V, &err)) {
            printf("  FAIL prefill: %s\n", err.msg);
            check_failures++;
        }
    }
    for (;;) {
        int any = 0;
        for (b = 0; b < B; b++) {
            ids[b] = kv->len[b] < lens[b] ? batch->input_ids[b * T + kv->len[b]] : -1;
            any |= ids[b] >= 0;
        }
        if (!any) break;
        if (cllm_kv_step(m, kv, ids, step, &err) != CLLM_OK) {
            printf("  FAIL step: %s\n", err.msg);
            check_failures++;
            break;
        }
        for (b = 0; b < B; b++)
            if (ids[b] >= 0)
                memcpy(cached + ((size_t)b * T + kv->len[b] - 1) * V, step + (size_t)b * V, sizeof(cllm_float) * V);
    }
    free(step);
}

/* The rows of real positions of a (B, T, V) tensor, packed into out; returns how many. */
static int real_rows(const cllm_float *in, const int *lens, int B, int T, int V, cllm_float *out) {
    int b, t, n = 0;
    for (b = 0; b < B; b++) for (t = 0; t < lens[b]; t++, n++)
        memcpy(out + (size_t)n * V, in + ((size_t)b * T + t) * V, sizeof(cllm_float) * (size_t)V);
    return n;
}

/* The length of each row of batch (its real tokens); returns the longest row. */
static int row_lengths(const cllm_batch *batch, int *lens) {
    int b, longest = 0;
    for (b = 0; b < batch->B; b++) {
        for (lens[b] = 0; lens[b] < batch->T && batch->attn_mask[b * batch->T + lens[b]]; lens[b]++) {}
        if (lens[b] > lens[longest]) longest = b;
    }
    return longest;
}

static void kv_case(const char *name) {
    char dir[256], path[300];
    cllm_model m;
    cllm_batch batch;
    cllm_kv_cache kv;
    cllm_err err;
    int B, T, V, longest, n, lens[8], ids[8];
    cllm_float *full, *cached, *step, *torch_ref, *got, *want, *want_torch;
    printf("KV cache: %s\n", name);
    snprintf(dir, sizeof dir, "tests/data/golden/%s", name);
    snprintf(path, sizeof path, "%s/batch.jsonl", dir);
    if (!check_true("load model and batch", cllm_model_load(&m, dir, &err) == CLLM_OK && cllm_batch_read_jsonl(&batch, path, &err) == CLLM_OK)) { printf("    %s\n", err.msg); return; }
    B = batch.B; T = batch.T; V = m.config.vocab_size;
    full = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    cached = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    step = (cllm_float *)calloc((size_t)B * V, sizeof(cllm_float));
    got = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    want = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    want_torch = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    torch_ref = read_tensor(path, "logits");
    check_true("full forward", cllm_forward(&m, &batch, full, &err) == CLLM_OK);
    longest = row_lengths(&batch, lens);
    check_true("KV cache init", cllm_kv_cache_init(&kv, &m, B, T, &err) == CLLM_OK);
    fill_cache(&m, &kv, &batch, lens, longest, cached);
    n = real_rows(cached, lens, B, T, V, got);
    real_rows(full, lens, B, T, V, want);
    if (torch_ref) real_rows(torch_ref, lens, B, T, V, want_torch);
    {
        char label[128];
        snprintf(label, sizeof label, "cached lengths = row lengths (%d, %d, %d)", lens[0], lens[1], lens[2]);
        check_true(label, kv.len[0] == lens[0] && kv.len[1] == lens[1] && kv.len[2] == lens[2]);
    }
    check_tensor("KV-cache logits vs cllm_forward, every real position", got, want, (size_t)n * V, 1e-5);
    if (torch_ref) check_tensor("KV-cache logits vs PyTorch", got, want_torch, (size_t)n * V, 1e-4);
    /* a full cache refuses more tokens */
    ids[0] = batch.input_ids[0]; ids[1] = ids[2] = -1;
    kv.len[0] = kv.max_len;
    check_true("a step past max_len is a limit error", cllm_kv_step(&m, &kv, ids, step, &err) == CLLM_ERR_LIMIT);
    check_true("a prefill past max_len is a limit error", cllm_kv_prefill(&m, &kv, 0, ids, 1, NULL, &err) == CLLM_ERR_LIMIT);
    kv.len[0] = 0; ids[0] = V;
    check_true("a token id outside the vocabulary is rejected", cllm_kv_step(&m, &kv, ids, step, &err) == CLLM_ERR_ARG && strstr(err.msg, "vocabulary"));
    cllm_kv_cache_free(&kv);
    free(full); free(cached); free(step); free(got); free(want); free(want_torch); free(torch_ref);
    cllm_batch_free(&batch);
    cllm_model_free(&m);
}

/* ---- generation against full forwards --------------------------------------------------------- */

/* Full forward over prompt ++ completion at temperature tau: logp[t] = log p(c[t]) and argmax[t]
   of the logits that predict c[t]. */
static void full_forward_completion(cllm_model *m, const int *prompt, int np, const cllm_completion *c, float tau,
                                    cllm_float *logp, int *argmax) {
    int T = np + c->n, t, v, V = m->config.vocab_size;
    int *ids = (int *)calloc((size_t)T, sizeof(int)), *labels = (int *)calloc((size_t)T, sizeof(int));
    cllm_float *logits = (cllm_float *)calloc((size_t)T * V, sizeof(cllm_float));
    cllm_batch b;
    cllm_err err;
    for (t = 0; t < T; t++) { ids[t] = t < np ? prompt[t] : c->ids[t - np]; labels[t] = t < np ? -100 : ids[t]; }
    memset(&b, 0, sizeof b);
    b.B = 1; b.T = T; b.input_ids = ids; b.labels = labels; b.temperature = tau;
    if (cllm_forward(m, &b, logits, &err) != CLLM_OK) { printf("  FAIL forward: %s\n", err.msg); check_failures++; }
    for (t = 0; t < c->n; t++) {
        const cllm_float *row = logits + (size_t)(np - 1 + t) * V;
        logp[t] = m->acts.logp[np - 1 + t];
        argmax[t] = 0;
        for (v = 1; v < V; v++) if (row[v] > row[argmax[t]]) argmax[t] = v;
    }
    free(ids); free(labels); free(logits);
}

static int same_completion(const cllm_completion *a, const cllm_completion *b) {
    return a->n == b->n && a->finish == b->finish && memcmp(a->ids, b->ids, sizeof(int) * (size_t)a->n) == 0 &&
           memcmp(a->logprobs, b->logprobs, sizeof(cllm_float) * (size_t)a->n) == 0;
}

/* ---- bf16 sampling weights ------------------------------------------------------------------ */

/* x rounded to bf16, to nearest even (the golden weights are finite and normal). */
static cllm_float to_bf16(cllm_float x) {
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static double max_diff(const cllm_float *a, const cllm_float *b, size_t n) {
    double d = 0;
    size_t i;
    for (i = 0; i < n; i++) if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
    return d;
}

/* Decoding with the bf16 copy computes exactly what the fp32 code computes on weights that hold bf16 values: model a
   with weights = CLLM_SAMPLE_BF16 against model r, a's weights rounded (projections and lm head, what the copy holds;
   untied models, as a tied lm head is also the embedding, which stays fp32). Through the same cache pattern as
   kv_case: prefill blocks and batched steps, bit for bit; against r's full forward as kv_case's tolerance; greedy
   generation identical. Then the copy's life: made again after the weights change, dropped by cllm_forward. */
static void bf16_case(const char *name) {
    char dir[256], path[300], label[160];
    cllm_model a, r;
    cllm_batch batch;
    cllm_kv_cache kv;
    cllm_err err;
    cllm_gen_config g;
    cllm_completion ca[2], cr[2];
    int B, T, V, C, longest, n, i, lens[8], prompt[5] = { 1, 5, 9, 2, 7 };
    size_t k;
    cllm_float *full, *cached, *got, *want, *fp32, *again;
    cllm_float *mats[8];
    size_t sizes[8];
    printf("bf16 sampling weights: %s\n", name);
    snprintf(dir, sizeof dir, "tests/data/golden/%s", name);
    snprintf(path, sizeof path, "%s/batch.jsonl", dir);
    if (!check_true("load model twice and batch",
                    cllm_model_load(&a, dir, &err) == CLLM_OK && cllm_model_load(&r, dir, &err) == CLLM_OK &&
                    cllm_batch_read_jsonl(&batch, path, &err) == CLLM_OK)) {
        printf("    %s\n", err.msg);
        return;
    }
    B = batch.B; T = batch.T; V = a.config.vocab_size; C = a.config.hidden_size;
    mats[0] = r.params.wq; mats[1] = r.params.wk; mats[2] = r.params.wv; mats[3] = r.params.wo;
    mats[4] = r.params.w_gate; mats[5] = r.params.w_up; mats[6] = r.params.w_down; mats[7] = r.params.lm_head;
    sizes[0] = r.param_sizes[2]; sizes[1] = r.param_sizes[4]; sizes[2] = r.param_sizes[6]; sizes[3] = r.param_sizes[10];
    sizes[4] = r.param_sizes[12]; sizes[5] = r.param_sizes[13]; sizes[6] = r.param_sizes[14]; sizes[7] = (size_t)V * C;
    for (i = 0; i < 8; i++) for (k = 0; k < sizes[i]; k++) mats[i][k] = to_bf16(mats[i][k]);
    cllm_model_weights_changed(&r);
    full = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    cached = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    got = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    want = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    fp32 = (cllm_float *)calloc((size_t)B * T * V, sizeof(cllm_float));
    again = (cllm_float *)calloc((size_t)T * V, sizeof(cllm_float));
    longest = row_lengths(&batch, lens);
    check_true("full forward of the rounded model", cllm_forward(&r, &batch, full, &err) == CLLM_OK);
    cllm_kv_cache_init(&kv, &r, B, T, &err);
    fill_cache(&r, &kv, &batch, lens, longest, cached);
    n = real_rows(cached, lens, B, T, V, want);
    cllm_kv_cache_free(&kv);
    cllm_kv_cache_init(&kv, &a, B, T, &err);
    fill_cache(&a, &kv, &batch, lens, longest, cached);
    real_rows(cached, lens, B, T, V, fp32);
    cllm_kv_cache_free(&kv);
    cllm_kv_cache_init(&kv, &a, B, T, &err);
    kv.weights = CLLM_SAMPLE_BF16;
    fill_cache(&a, &kv, &batch, lens, longest, cached);
    real_rows(cached, lens, B, T, V, got);
    cllm_kv_cache_free(&kv);
    check_tensor("bf16 KV cache = fp32 KV cache on the rounded weights, bit for bit", got, want, (size_t)n * V, 0.0);
    real_rows(full, lens, B, T, V, want);
    check_tensor("bf16 KV cache vs the rounded model's full forward", got, want, (size_t)n * V, 1e-5);
    snprintf(label, sizeof label, "bf16 logits differ from fp32's (max |diff| %.2e)",
             max_diff(got, fp32, (size_t)n * V));
    check_true(label, max_diff(got, fp32, (size_t)n * V) > 0);
    memset(&g, 0, sizeof g);
    g.sampler.greedy = 1; g.max_new_tokens = 12; g.ignore_eos = 1; g.weights = CLLM_SAMPLE_BF16;
    check_true("greedy generation, bf16 weights", cllm_generate(&a, prompt, 5, 2, &g, ca, &err) == CLLM_OK);
    g.weights = CLLM_SAMPLE_FP32;
    check_true("greedy generation, fp32 on the rounded weights",
               cllm_generate(&r, prompt, 5, 2, &g, cr, &err) == CLLM_OK);
    check_true("the same tokens and log-probs", same_completion(&ca[0], &cr[0]) && same_completion(&ca[1], &cr[1]));
    cllm_completions_free(ca, 2);
    cllm_completions_free(cr, 2);
    /* the copy's life: kept between generations, made again when the weights change, dropped by a forward */
    check_true("the copy is kept after generation", a.bf16 != NULL);
    for (k = 0; k < (size_t)V * C; k++) a.params.lm_head[k] *= 2;     /* exact, in bf16 too */
    cllm_model_weights_changed(&a);
    check_true("weights_changed drops the copy", a.bf16 == NULL);
    cllm_kv_cache_init(&kv, &a, 1, T, &err);
    kv.weights = CLLM_SAMPLE_BF16;
    check_true("prefill after a change",
               cllm_kv_prefill(&a, &kv, 0, batch.input_ids + longest * T, lens[longest], again, &err) == CLLM_OK);
    for (k = 0; k < (size_t)lens[longest] * V; k++) again[k] /= 2;
    check_tensor("the copy is made from the changed weights (lm head x 2 -> logits x 2)", again,
                 cached + (size_t)longest * T * V, (size_t)lens[longest] * V, 0.0);   /* cached: bf16, unchanged a */
    check_true("cllm_forward drops the copy (a training step never holds it)",
               a.bf16 != NULL && cllm_forward(&a, &batch, NULL, &err) == CLLM_OK && a.bf16 == NULL);
    kv.weights = (cllm_sample_weights)7;
    check_true("an unknown weights value is rejected",
               cllm_kv_step(&a, &kv, prompt, NULL, &err) == CLLM_ERR_ARG && strstr(err.msg, "CLLM_SAMPLE_BF16"));
    cllm_kv_cache_free(&kv);
    free(full); free(cached); free(got); free(want); free(fp32); free(again);
    cllm_batch_free(&batch);
    cllm_model_free(&a);
    cllm_model_free(&r);
}

typedef struct { const int *expect; int calls, mismatch, stop_at; } stop_ctx;
static int stop_after(void *ctx, const int *ids, int n) {
    stop_ctx *s = (stop_ctx *)ctx;
    s->calls++;
    if (s->expect && memcmp(ids, s->expect, sizeof(int) * (size_t)n) != 0) s->mismatch++;
    return n >= s->stop_at;
}

static void gen_case(const char *name) {
    char dir[256], label[200];
    cllm_model m;
    cllm_gen_config g;
    cllm_completion greedy[2], a[3], b[3], one[1], c1[1];
    cllm_float ref[16];
    int argmax[16], prompt[5] = { 3, 1, 4, 1, 5 }, s, t, ok, V, eos_at = -1;
    cllm_err err;
    printf("generation: %s\n", name);
    snprintf(dir, sizeof dir, "tests/data/golden/%s", name);
    if (!check_true("load model", cllm_model_load(&m, dir, &err) == CLLM_OK)) { printf("    %s\n", err.msg); return; }
    V = m.config.vocab_size;

    /* greedy: 2 identical samples, each token the argmax of the full forward's logits */
    memset(&g, 0, sizeof g);
    g.sampler.greedy = 1; g.max_new_tokens = 12; g.ignore_eos = 1;
    check_true("greedy generate", cllm_generate(&m, prompt, 5, 2, &g, greedy, &err) == CLLM_OK);
    check_true("greedy: both samples identical, 12 tokens, finish length",
               same_completion(&greedy[0], &greedy[1]) && greedy[0].n == 12 && greedy[0].finish == CLLM_FINISH_LENGTH);
    full_forward_completion(&m, prompt, 5, &greedy[0], 1.0f, ref, argmax);
    for (ok = 1, t = 0; t < greedy[0].n; t++) ok &= greedy[0].ids[t] == argmax[t];
    check_true("greedy token = argmax of the full forward's logits at each of the 12 steps", ok);
    check_tensor("greedy logprobs vs full-forward log_softmax", greedy[0].logprobs, ref, 12, 1e-5);

    /* sampled at T = 0.7: logprobs = the full forward's at temperature 0.7 */
    memset(&g, 0, sizeof g);
    g.sampler.temperature = 0.7f; g.sampler.seed = 42; g.max_new_tokens = 10; g.ignore_eos = 1;
    check_true("sampled generate (T 0.7, 3 samples)", cllm_generate(&m, prompt, 5, 3, &g, a, &err) == CLLM_OK);
    for (s = 0; s < 3; s++) {
        full_forward_completion(&m, prompt, 5, &a[s], 0.7f, ref, argmax);
        snprintf(label, sizeof label, "sample %d logprobs vs full forward at temperature 0.7", s);
        check_tensor(label, a[s].logprobs, ref, (size_t)a[s].n, 1e-5);
    }
    check_true("the 3 samples are not all equal", !(same_completion(&a[0], &a[1]) && same_completion(&a[1], &a[2])));
    check_true("same seed, second run: identical ids and logprobs",
               cllm_generate(&m, prompt, 5, 3, &g, b, &err) == CLLM_OK && same_completion(&a[0], &b[0]) && same_completion(&a[1], &b[1]) && same_completion(&a[2], &b[2]));
    cllm_completions_free(b, 3);
    check_true("n = 1 gives sample 0 of n = 3 (samples do not depend on each other)",
               cllm_generate(&m, prompt, 5, 1, &g, one, &err) == CLLM_OK && same_completion(&one[0], &a[0]));
    cllm_completions_free(one, 1);
    g.sampler.seed = 43;
    check_true("another seed gives other samples",
               cllm_generate(&m, prompt, 5, 3, &g, b, &err) == CLLM_OK && !(same_completion(&a[0], &b[0]) && same_completion(&a[1], &b[1]) && same_completion(&a[2], &b[2])));
    cllm_completions_free(b, 3);

    /* top-k 3, top-p 0.8: every token is among the full forward's 3 best; renormalised logprob */
    g.sampler.top_k = 3; g.sampler.top_p = 0.8f; g.sampler.temperature = 1.0f;
    check_true("sampled generate (top-k 3, top-p 0.8)", cllm_generate(&m, prompt, 5, 3, &g, b, &err) == CLLM_OK);
    for (ok = 1, s = 0; s < 3; s++) {
        int T = 5 + b[s].n, v;
        int *ids = (int *)calloc((size_t)T, sizeof(int));
        cllm_float *logits = (cllm_float *)calloc((size_t)T * V, sizeof(cllm_float));
        cllm_batch bt;
        memset(&bt, 0, sizeof bt);
        for (t = 0; t < T; t++) ids[t] = t < 5 ? prompt[t] : b[s].ids[t - 5];
        bt.B = 1; bt.T = T; bt.input_ids = ids;
        cllm_forward(&m, &bt, logits, &err);
        for (t = 0; t < b[s].n; t++) {
            const cllm_float *row = logits + (size_t)(4 + t) * V;
            int above = 0;
            for (v = 0; v < V; v++) above += row[v] > row[b[s].ids[t]];
            ok &= above < 3 && b[s].logprobs[t] >= m.acts.logp[4 + t] - 1e-5f && b[s].logprobs[t] <= 0;
        }
        free(ids); free(logits);
    }
    check_true("top-k 3: each token ranks in the top 3; logprob >= unfiltered logprob", ok);
    cllm_completions_free(b, 3);
    cllm_completions_free(a, 3);

    /* stop conditions, on a sampled reference continuation r (T 1, seed 7, no EOS): the same
       seed draws the same tokens, so each stop rule must cut r at the predicted place */
    memset(&g, 0, sizeof g);
    g.sampler.seed = 7; g.max_new_tokens = 12; g.ignore_eos = 1;
    check_true("reference continuation", cllm_generate(&m, prompt, 5, 1, &g, a, &err) == CLLM_OK && a[0].n == 12);
    for (t = 1; t < a[0].n && eos_at < 0; t++) {
        int seen = 0, j;
        for (j = 0; j < t; j++) seen |= a[0].ids[j] == a[0].ids[t];
        if (!seen) eos_at = t;
    }
    if (check_true("the reference has a token not seen before it (for the EOS test)", eos_at > 0)) {
        int eos[2];
        eos[0] = V + 5; eos[1] = a[0].ids[eos_at];
        g.ignore_eos = 0; g.eos_ids = eos; g.n_eos = 2;
        snprintf(label, sizeof label, "EOS id list: stops at token %d, finish eos, EOS kept", eos_at + 1);
        check_true(label, cllm_generate(&m, prompt, 5, 1, &g, c1, &err) == CLLM_OK && c1[0].n == eos_at + 1 &&
                   c1[0].finish == CLLM_FINISH_EOS && memcmp(c1[0].ids, a[0].ids, sizeof(int) * (size_t)c1[0].n) == 0);
        cllm_completions_free(c1, 1);
        g.eos_ids = NULL; g.n_eos = 0;
        m.config.n_eos = 1; m.config.eos_token_ids[0] = eos[1];
        check_true("default EOS ids come from the model config",
                   cllm_generate(&m, prompt, 5, 1, &g, c1, &err) == CLLM_OK && c1[0].n == eos_at + 1 && c1[0].finish == CLLM_FINISH_EOS);
        cllm_completions_free(c1, 1);
        g.ignore_eos = 1;
        check_true("ignore_eos runs to max_new_tokens",
                   cllm_generate(&m, prompt, 5, 1, &g, c1, &err) == CLLM_OK && c1[0].n == 12 && c1[0].finish == CLLM_FINISH_LENGTH);
        cllm_completions_free(c1, 1);
        {   /* the stop test is not asked about an EOS token: EOS wins */
            stop_ctx sc; memset(&sc, 0, sizeof sc); sc.stop_at = eos_at + 1;
            g.ignore_eos = 0; g.stop = stop_after; g.stop_ctx = &sc;
            check_true("EOS before the stop callback: finish eos, callback called for the tokens before it",
                       cllm_generate(&m, prompt, 5, 1, &g, c1, &err) == CLLM_OK && c1[0].finish == CLLM_FINISH_EOS && sc.calls == eos_at);
            cllm_completions_free(c1, 1);
        }
    }
    {
        stop_ctx sc; memset(&sc, 0, sizeof sc);
        sc.expect = a[0].ids; sc.stop_at = 5;
        g.ignore_eos = 1; g.stop = stop_after; g.stop_ctx = &sc;
        check_true("stop callback: 5 tokens, finish stop, called once per token with the ids so far",
                   cllm_generate(&m, prompt, 5, 1, &g, c1, &err) == CLLM_OK && c1[0].n == 5 && c1[0].finish == CLLM_FINISH_STOP &&
                   sc.calls == 5 && sc.mismatch == 0);
        cllm_completions_free(c1, 1);
        g.stop = NULL; g.max_new_tokens = 4;
        check_true("max_new_tokens 4: 4 tokens, finish length, = the reference's prefix",
                   cllm_generate(&m, prompt, 5, 1, &g, c1, &err) == CLLM_OK && c1[0].n == 4 && c1[0].finish == CLLM_FINISH_LENGTH &&
                   memcmp(c1[0].ids, a[0].ids, 4 * sizeof(int)) == 0);
        cllm_completions_free(c1, 1);
        check_true("one-token prompt works", cllm_generate(&m, prompt, 1, 2, &g, b, &err) == CLLM_OK && b[0].n == 4 && b[1].n == 4);
        cllm_completions_free(b, 2);
    }
    cllm_completions_free(a, 1);
    /* errors leave zeroed outputs */
    prompt[2] = V;
    check_true("a prompt id outside the vocabulary is rejected, outputs zeroed",
               cllm_generate(&m, prompt, 5, 1, &g, c1, &err) == CLLM_ERR_ARG && c1[0].ids == NULL && c1[0].n == 0);
    check_true("an empty prompt is rejected", cllm_generate(&m, prompt, 0, 1, &g, c1, &err) == CLLM_ERR_ARG);
    g.sampler.top_p = 2;
    prompt[2] = 4;
    check_true("a bad sampler is rejected", cllm_generate(&m, prompt, 5, 1, &g, c1, &err) == CLLM_ERR_ARG && strstr(err.msg, "top_p"));
    cllm_completions_free(greedy, 2);
    cllm_model_free(&m);
}

static void cache_errors(void) {
    cllm_model a, b;
    cllm_kv_cache kv;
    cllm_err err;
    int id = 1;
    printf("KV cache errors\n");
    cllm_model_load(&a, "tests/data/golden/llama_gqa_tied", &err);
    cllm_model_load(&b, "tests/data/golden/qwen3_qknorm", &err);
    check_true("cache init", cllm_kv_cache_init(&kv, &a, 1, 8, &err) == CLLM_OK);
    check_true("a cache made for another model shape is rejected", cllm_kv_prefill(&b, &kv, 0, &id, 1, NULL, &err) == CLLM_ERR_ARG && strstr(err.msg, "was not made for this model"));
    check_true("copy to a sequence the cache does not have is rejected", cllm_kv_cache_copy_seq(&kv, 0, 1, &err) == CLLM_ERR_ARG);
    cllm_kv_cache_free(&kv);
    cllm_kv_cache_free(&kv);
    {   /* same layers, kv heads and head_dim but a wider MLP: its work space would not fit */
        cllm_config c = a.config;
        cllm_model wide;
        c.intermediate_size *= 2;
        cllm_model_init(&wide, &c, 1, &err);
        cllm_kv_cache_init(&kv, &a, 1, 8, &err);
        check_true("a cache made for a model with another MLP width is rejected", cllm_kv_prefill(&wide, &kv, 0, &id, 1, NULL, &err) == CLLM_ERR_ARG);
        cllm_kv_cache_free(&kv);
        cllm_model_free(&wide);
    }
    check_true("zero sequences are rejected", cllm_kv_cache_init(&kv, &a, 0, 8, &err) == CLLM_ERR_ARG);
    check_true("an absurd size is a limit error, not an allocation", cllm_kv_cache_init(&kv, &a, 100000, 1000000000, &err) == CLLM_ERR_LIMIT);
    cllm_model_free(&a); cllm_model_free(&b);
}

/* data_fmt/generate-ids.md's example: one JSON object per line with sample, ids, logprobs, finish. */
static void format_example(void) {
    char *text = NULL, *line, *next;
    size_t len;
    cllm_err err;
    int lines = 0, ok = 1;
    printf("data_fmt/generate-ids example\n");
    if (!check_true("read data_fmt/generate-ids.example.jsonl", cllm_read_file("data_fmt/generate-ids.example.jsonl", &text, &len, &err) == CLLM_OK)) return;
    for (line = text; *line; line = next) {
        cJSON *o, *ids, *lp, *f;
        next = strchr(line, '\n');
        if (next) *next++ = 0; else next = line + strlen(line);
        o = cJSON_Parse(line);
        ids = cJSON_GetObjectItem(o, "ids"); lp = cJSON_GetObjectItem(o, "logprobs"); f = cJSON_GetObjectItem(o, "finish");
        ok &= o && cJSON_IsNumber(cJSON_GetObjectItem(o, "sample")) && cJSON_IsArray(ids) && cJSON_IsArray(lp) &&
              cJSON_GetArraySize(ids) == cJSON_GetArraySize(lp) && cJSON_IsString(f) &&
              (!strcmp(f->valuestring, "eos") || !strcmp(f->valuestring, "stop") || !strcmp(f->valuestring, "length"));
        cJSON_Delete(o);
        lines++;
    }
    check_true("every line has sample, ids, logprobs (same length) and a known finish", ok && lines > 0);
    cllm_free_buffer(text);
}

int main(void) {
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) kv_case(cases[i]);
    gen_case("llama_gqa_tied");
    gen_case("qwen3_qknorm");
    gen_case("llama3_rope");
    bf16_case("qwen2_bias");
    bf16_case("llama_f16_sharded");
    cache_errors();
    format_example();
    return check_summary("test_generation");
}
