/* test_generation_sampler.c - the sampler against reference vectors from tests/gen_sampling.py:
   top-k / top-p masks against Hugging Face's warper semantics computed in torch, the sampling
   distribution against the exact filtered softmax (chi-square and total variation over many
   seeded draws), and the exact draws of a fixed seed against an independent Python copy of the
   RNG and of the documented inverse-CDF walk (the same tokens on every platform). */
/* no-fast-path: the sampler on given logits, no model kernel (make test runs it in its first pass only) */
#include "../collabllm.h"
#include "check.h"
#include <string.h>
#include <math.h>

/* A JSON number array (null = -inf) as doubles; n = its length. */
static double *json_doubles(const cJSON *a, int *n) {
    const cJSON *e;
    double *out = (double *)calloc((size_t)cJSON_GetArraySize(a) + 1, sizeof(double));
    int i = 0;
    cJSON_ArrayForEach(e, a) out[i++] = cJSON_IsNull(e) ? -INFINITY : e->valuedouble;
    *n = i;
    return out;
}

/* Upper tail of chi-square(df) at p = 1e-6, by the Wilson-Hilferty cube approximation. */
static double chi2_critical(int df) {
    double z = 4.753, a = 2.0 / (9.0 * df);
    return df * pow(1 - a + z * sqrt(a), 3);
}

/* Draws `n` tokens from the case's logits and compares the histogram with probs:
   - no draw may land on a removed token;
   - Pearson chi-square over bins with expected count >= 5 (the rest pooled) below the 1e-6 tail;
   - total variation below 4x its expected size sqrt(2 p(1-p) / (pi n)) / 2 summed over tokens. */
static void check_distribution(const char *name, const cllm_sampler *s, const cllm_float *logits, const double *probs, int V, int n, uint64_t seed) {
    cllm_rng rng;
    cllm_err err;
    long *count = (long *)calloc((size_t)V, sizeof(long));
    double chi2 = 0, tv = 0, tv_expect = 0, pool_obs = 0, pool_exp = 0, lp_err = 0;
    int i, bins = 0, outside = 0, ok = 1;
    char label[256];
    cllm_rng_seed(&rng, seed);
    for (i = 0; i < n && ok; i++) {
        int tok;
        double lp;
        ok = cllm_sample(s, logits, V, &rng, &tok, &lp, &err) == CLLM_OK;
        if (!ok) { printf("    %s\n", err.msg); break; }
        count[tok]++;
        if (probs[tok] == 0) outside++;
        else if (fabs(lp - log(probs[tok])) > lp_err) lp_err = fabs(lp - log(probs[tok]));
    }
    for (i = 0; i < V; i++) {
        double e = probs[i] * n, o = (double)count[i];
        tv += fabs(o / n - probs[i]) / 2;
        tv_expect += sqrt(2 * probs[i] * (1 - probs[i]) / (3.14159265358979 * n)) / 2;
        if (probs[i] == 0) continue;
        if (e >= 5) { chi2 += (o - e) * (o - e) / e; bins++; }
        else { pool_obs += o; pool_exp += e; }
    }
    if (pool_exp > 0) { chi2 += (pool_obs - pool_exp) * (pool_obs - pool_exp) / (pool_exp > 1e-9 ? pool_exp : 1e-9); bins++; }
    snprintf(label, sizeof label, "%s: %d draws, none outside the kept set", name, n);
    check_true(label, ok && outside == 0);
    snprintf(label, sizeof label, "%s: logprob = log(reference prob) of each draw (max err %.1e, tol 1e-9)", name, lp_err);
    check_true(label, lp_err <= 1e-9);
    if (bins > 1) {
        snprintf(label, sizeof label, "%s: chi-square %.1f < %.1f (df %d, p 1e-6)", name, chi2, chi2_critical(bins - 1), bins - 1);
        check_true(label, chi2 < chi2_critical(bins - 1));
    }
    snprintf(label, sizeof label, "%s: total variation %.4f < %.4f (4x expected)", name, tv, 4 * tv_expect + 1e-12);
    check_true(label, tv < 4 * tv_expect + 1e-12);
    free(count);
}

static void run_case(const cJSON *c) {
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    cllm_sampler s;
    cllm_err err;
    cllm_rng rng;
    int V, n, i, mism = 0, n_kept = 0, ref_kept = 0, draw_mism = 0;
    double *logits_d = json_doubles(cJSON_GetObjectItem(c, "logits"), &V);
    double *probs = json_doubles(cJSON_GetObjectItem(c, "probs"), &n);
    double *keep = json_doubles(cJSON_GetObjectItem(c, "keep"), &n);
    double *draws = json_doubles(cJSON_GetObjectItem(c, "draws"), &n);
    double *scores = (double *)calloc((size_t)V, sizeof(double)), maxrel = 0;
    cllm_float *logits = (cllm_float *)calloc((size_t)V, sizeof(cllm_float));
    uint64_t seed = (uint64_t)cJSON_GetObjectItem(c, "seed")->valuedouble;
    char label[256];
    printf("case %s (V=%d)\n", name, V);
    for (i = 0; i < V; i++) logits[i] = (cllm_float)logits_d[i];
    memset(&s, 0, sizeof s);
    s.temperature = (float)cJSON_GetObjectItem(c, "temperature")->valuedouble;
    s.top_k = cJSON_GetObjectItem(c, "top_k")->valueint;
    s.top_p = (float)cJSON_GetObjectItem(c, "top_p")->valuedouble;

    /* the mask and the kept scores */
    check_true("cllm_sampler_scores", cllm_sampler_scores(&s, logits, V, scores, &n_kept, &err) == CLLM_OK);
    for (i = 0; i < V; i++) {
        int kept = scores[i] > -INFINITY;
        ref_kept += keep[i] != 0;
        if (kept != (keep[i] != 0)) mism++;
        else if (kept) {
            double want = (double)logits[i] / (double)s.temperature, rel = fabs(scores[i] - want) / (fabs(want) > 1e-300 ? fabs(want) : 1);
            if (rel > maxrel) maxrel = rel;
        }
    }
    snprintf(label, sizeof label, "keep mask = torch HF warpers (%d kept, %d mismatches)", ref_kept, mism);
    check_true(label, mism == 0 && n_kept == ref_kept);
    snprintf(label, sizeof label, "kept scores = logits / temperature (max rel %.1e, tol 1e-15)", maxrel);
    check_true(label, maxrel <= 1e-15);

    /* the exact tokens of the seed, as the Python copy of the RNG and the walk draws them */
    cllm_rng_seed(&rng, seed);
    for (i = 0; i < n; i++) {
        int tok = -1;
        cllm_sample(&s, logits, V, &rng, &tok, NULL, &err);
        if (tok != (int)draws[i]) draw_mism++;
    }
    snprintf(label, sizeof label, "first %d draws of seed %llu = the Python reference (%d differ)", n, (unsigned long long)seed, draw_mism);
    check_true(label, draw_mism == 0);

    check_distribution(name, &s, logits, probs, V, cJSON_GetObjectItem(c, "stat_draws")->valueint, seed + 1000);
    free(logits_d); free(probs); free(keep); free(draws); free(scores); free(logits);
}

/* A sampler that ignores the temperature or mixes up the warper order must fail here. */
static void check_sensitivity(void) {
    cllm_float logits[6] = { 2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -3.0f };
    double probs[6], z = 0;
    cllm_sampler s;
    cllm_rng rng;
    cllm_err err;
    long count[6] = { 0 };
    int i, tok;
    double tv = 0;
    printf("sensitivity\n");
    memset(&s, 0, sizeof s);
    s.temperature = 1.0f;
    for (i = 0; i < 6; i++) z += exp(logits[i] / 0.5);
    for (i = 0; i < 6; i++) probs[i] = exp(logits[i] / 0.5) / z;        /* T = 0.5, not 1 */
    cllm_rng_seed(&rng, 3);
    for (i = 0; i < 20000; i++) { cllm_sample(&s, logits, 6, &rng, &tok, NULL, &err); count[tok]++; }
    for (i = 0; i < 6; i++) tv += fabs(count[i] / 20000.0 - probs[i]) / 2;
    check_true("draws at T=1 are far (TV > 0.05) from the T=0.5 distribution", tv > 0.05);
}

static void check_greedy_and_errors(void) {
    cllm_float logits[5] = { 0.5f, 3.0f, -1.0f, 3.0f, 2.0f }, bad[3] = { 0, 1, 0 };
    cllm_sampler s;
    cllm_rng rng;
    cllm_err err;
    double lp, lse = 0;
    int tok = -1, i;
    printf("greedy and errors\n");
    memset(&s, 0, sizeof s);
    s.greedy = 1;
    s.temperature = 0.1f;                                   /* ignored by greedy */
    for (i = 0; i < 5; i++) lse += exp((double)logits[i]);
    lse = log(lse);
    cllm_rng_seed(&rng, 1);
    check_true("greedy picks the argmax, lowest id on ties",
               cllm_sample(&s, logits, 5, &rng, &tok, &lp, &err) == CLLM_OK && tok == 1);
    check_true("greedy logprob = log_softmax(logits)[argmax] at temperature 1", fabs(lp - (3.0 - lse)) < 1e-12);
    memset(&s, 0, sizeof s);
    s.top_p = 1.5f;
    check_true("top_p 1.5 is rejected", cllm_sample(&s, logits, 5, &rng, &tok, &lp, &err) == CLLM_ERR_ARG && strstr(err.msg, "top_p"));
    s.top_p = 0; s.top_k = -1;
    check_true("top_k -1 is rejected", cllm_sample(&s, logits, 5, &rng, &tok, &lp, &err) == CLLM_ERR_ARG);
    s.top_k = 0; s.temperature = -1;
    check_true("negative temperature is rejected", cllm_sample(&s, logits, 5, &rng, &tok, &lp, &err) == CLLM_ERR_ARG);
    s.temperature = 0;
    bad[1] = (cllm_float)NAN;
    check_true("a NaN logit is a numeric error", cllm_sample(&s, bad, 3, &rng, &tok, &lp, &err) == CLLM_ERR_NUMERIC && strstr(err.msg, "NaN"));
    bad[0] = bad[1] = bad[2] = -INFINITY;
    check_true("all -inf logits is a numeric error", cllm_sample(&s, bad, 3, &rng, &tok, &lp, &err) == CLLM_ERR_NUMERIC);
}

int main(void) {
    char *text = NULL;
    size_t len;
    cllm_err err;
    cJSON *root, *c;
    if (cllm_read_file("tests/data/sampling/cases.json", &text, &len, &err) != CLLM_OK) { printf("FAIL %s\n", err.msg); return 1; }
    root = cJSON_Parse(text);
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) run_case(c);
    cJSON_Delete(root);
    cllm_free_buffer(text);
    check_sensitivity();
    check_greedy_and_errors();
    return check_summary("test_generation_sampler");
}
