/* test_optim.c - the optimiser against torch 1.13: torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and
   transformers' schedules through LambdaLR.
   (1) tests/data/optim/adamw.json (tests/gen_optim.py): 10-step torch runs of several tensors with weight decay on
       the matrices, a warmup + cosine / linear / constant schedule and clipping, replayed through cllm_lr_at,
       cllm_clip_grad_norm_arrays and cllm_adamw_step; every parameter after every step must be within 1e-7 of
       torch's, relative to that element (measured: equal, bit for bit). The same replay with beta1 and beta2
       rounded to float (the bug of issue 16) must fail that tolerance, so the test can fail.
   (2) hand vectors of torch 1.13 in float64.
   This file builds twice: as test_optim in double (COLLABLLM_DOUBLE: the float64 runs and the hand vectors) and,
   included by test_optim_f32.c, in the default float32 build (the float32 runs). */
/* no-fast-path: the optimiser on given numbers, no model kernel (make test runs it in its first pass only) */
#ifndef TEST_OPTIM_F32
#define COLLABLLM_DOUBLE
#endif
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"

#define MAX_TENSORS 8

/* x rounded to float. Through a volatile: gcc 12 -O2 vectorises two adjacent double fields' (double)(float) casts into
   a copy and drops the rounding. */
static double as_float(double x) {
    volatile float f = (float)x;
    return f;
}

static double number(const cJSON *o, const char *key) {
    return cJSON_GetObjectItem(o, key)->valuedouble;
}

/* Replays one run of the fixture in this build's precision (with betas rounded to float first when float_betas)
   and returns the largest difference from torch, relative to the element, over every parameter of every step. */
static double replay(const cJSON *c, int float_betas, int report) {
    const cJSON *tensors = cJSON_GetObjectItem(c, "tensors"), *steps = cJSON_GetObjectItem(c, "steps"), *t, *st;
    const cJSON *betas = cJSON_GetObjectItem(c, "betas");
    cllm_float *p[MAX_TENSORS], *m[MAX_TENSORS], *v[MAX_TENSORS], *g[MAX_TENSORS];
    cllm_adamw_config cfg[MAX_TENSORS];
    size_t size[MAX_TENSORS], k;
    double base = number(c, "lr"), max_norm = number(c, "max_grad_norm"), worst = 0, worst_lr = 0, worst_norm = 0;
    long warmup = (long)number(c, "warmup"), total = (long)number(c, "total");
    const char *kind_name = cJSON_GetObjectItem(c, "schedule")->valuestring;
    cllm_schedule kind = !strcmp(kind_name, "cosine")   ? CLLM_SCHED_COSINE
                         : !strcmp(kind_name, "linear") ? CLLM_SCHED_LINEAR
                                                        : CLLM_SCHED_CONSTANT;
    int n = 0, step = 0, i;
    cJSON_ArrayForEach(t, tensors) {
        const cJSON *init = cJSON_GetObjectItem(t, "init"), *x;
        size[n] = (size_t)cJSON_GetArraySize(init);
        p[n] = calloc(size[n], sizeof(cllm_float));
        m[n] = calloc(size[n], sizeof(cllm_float));
        v[n] = calloc(size[n], sizeof(cllm_float));
        g[n] = calloc(size[n], sizeof(cllm_float));
        k = 0;
        cJSON_ArrayForEach(x, init) p[n][k++] = (cllm_float)x->valuedouble;
        cfg[n].beta1 = cJSON_GetArrayItem(betas, 0)->valuedouble;
        cfg[n].beta2 = cJSON_GetArrayItem(betas, 1)->valuedouble;
        if (float_betas) {
            cfg[n].beta1 = as_float(cfg[n].beta1);
            cfg[n].beta2 = as_float(cfg[n].beta2);
        }
        cfg[n].eps = number(c, "eps");
        cfg[n].weight_decay = number(t, "weight_decay");
        n++;
    }
    cJSON_ArrayForEach(st, steps) {
        const cJSON *gs = cJSON_GetObjectItem(st, "grads"), *ps = cJSON_GetObjectItem(st, "params");
        double lr = cllm_lr_at(kind, base, step, warmup, total), want_lr = number(st, "lr");
        double want_norm = number(st, "grad_norm"), worst_step = 0;
        for (i = 0; i < n; i++) {
            const cJSON *x;
            k = 0;
            cJSON_ArrayForEach(x, cJSON_GetArrayItem(gs, i)) g[i][k++] = (cllm_float)x->valuedouble;
        }
        if (max_norm > 0) {
            double norm = cllm_clip_grad_norm_arrays(g, size, n, max_norm);
            double d = fabs((double)(cllm_float)norm - want_norm) / want_norm;    /* torch returns it in its dtype */
            if (d > worst_norm) worst_norm = d;
        }
        if (fabs(lr - want_lr) > worst_lr) worst_lr = fabs(lr - want_lr);
        for (i = 0; i < n; i++) {
            const cJSON *x;
            cllm_adamw_step(p[i], g[i], m[i], v[i], size[i], step + 1, lr, &cfg[i]);
            k = 0;
            cJSON_ArrayForEach(x, cJSON_GetArrayItem(ps, i)) {
                double want = x->valuedouble, d = fabs((double)p[i][k] - want);
                double rel = want != 0 ? d / fabs(want) : d > 0 ? INFINITY : 0;
                if (!(rel <= worst_step)) worst_step = rel;
                k++;
            }
        }
        if (report) printf("    step %2d  lr %-10.6g max relative difference %.3g\n", step + 1, lr, worst_step);
        if (!(worst_step <= worst)) worst = worst_step;
        step++;
    }
    if (report) {
        check_true("  the learning rate of every step is LambdaLR's (transformers' factor x base), exactly",
                   worst_lr == 0);
        char label[160];
        snprintf(label, sizeof label, "  clip_grad_norm_'s norm is torch's within 2 ulps of %s (max %.3g)",
                 sizeof(cllm_float) == 4 ? "float" : "double", worst_norm);
        check_true(label, worst_norm <= 2 * (sizeof(cllm_float) == 4 ? FLT_EPSILON : DBL_EPSILON));
    }
    for (i = 0; i < n; i++) {
        free(p[i]);
        free(m[i]);
        free(v[i]);
        free(g[i]);
    }
    return worst;
}

static void test_torch_runs(void) {
    const char *dtype = sizeof(cllm_float) == 4 ? "float32" : "float64";
    char *text = NULL, label[200];
    size_t len;
    cllm_err err;
    cJSON *root, *c;
    int n = 0;
    printf("torch.optim.AdamW runs in %s (tests/data/optim/adamw.json)\n", dtype);
    if (cllm_read_file("tests/data/optim/adamw.json", &text, &len, &err) != CLLM_OK) {
        check_true(err.msg, 0);
        return;
    }
    root = cJSON_ParseWithLength(text, len);
    cllm_free_buffer(text);
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        double exact, float_betas;
        if (strcmp(cJSON_GetObjectItem(c, "dtype")->valuestring, dtype) != 0) continue;
        printf("  %s\n", cJSON_GetObjectItem(c, "name")->valuestring);
        exact = replay(c, 0, 1);
        float_betas = replay(c, 1, 0);
        snprintf(label, sizeof label, "every parameter after every step within 1e-7 relative (max %.3g)", exact);
        check_true(label, exact <= 1e-7);
        snprintf(label, sizeof label, "with float betas the same replay differs by %.3g: the test can fail",
                 float_betas);
        check_true(label, float_betas > 1e-7);
        n++;
    }
    check_true("the fixture has runs of this precision", n >= 2);
    cJSON_Delete(root);
}

#ifdef COLLABLLM_DOUBLE
static void test_adamw(void) {
    /* theta0 = [1, -2, 0.5], lr .1, wd .01, betas (.9, .999), eps 1e-8, three steps */
    cllm_adamw_config opt = { .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01 };
    double p[3] = { 1, -2, 0.5 }, m[3] = { 0 }, v[3] = { 0 };
    const double g[3][3] = { { .1, -.2, .3 }, { 0, .5, -.1 }, { 1, 1, 1 } };
    const double want[3][3] = { { 0.89900001, -1.898000005, 0.39950000333 },
                                { 0.831095194, -1.940323530, 0.359078648 },
                                { 0.761550381, -2.010835261, 0.288486022 } };
    int t;
    char label[64];
    for (t = 1; t <= 3; t++) {
        cllm_adamw_step(p, g[t - 1], m, v, 3, t, 0.1, &opt);
        snprintf(label, sizeof label, "AdamW params after step %d", t);
        check_tensor_d(label, p, want[t - 1], 3, 1e-8);   /* the vector has ~9 digits */
    }
}

static void test_clip(void) {
    double g1[2] = { 3, 4 }, g2[1] = { 12 }, *gs[2];
    const double want1[2] = { 0.230769213, 0.307692284 }, want2[1] = { 0.923076852 };
    size_t sizes[2] = { 2, 1 };
    double norm, thirteen = 13, small[2] = { 0.3, 0.4 }, *gsmall[1];
    size_t nsmall = 2;
    gs[0] = g1; gs[1] = g2;
    norm = cllm_clip_grad_norm_arrays(gs, sizes, 2, 1.0);
    check_tensor_d("clip_grad_norm_ returns the pre-clip norm", &norm, &thirteen, 1, 1e-12);
    check_tensor_d("clip_grad_norm_ scales grads of tensor 1", g1, want1, 2, 1e-8);
    check_tensor_d("clip_grad_norm_ scales grads of tensor 2", g2, want2, 1, 1e-8);
    gsmall[0] = small;
    cllm_clip_grad_norm_arrays(gsmall, &nsmall, 1, 1.0);
    check_true("clip_grad_norm_ leaves a norm below max_norm unchanged", small[0] == 0.3 && small[1] == 0.4);
}

static void test_schedules(void) {
    /* cosine with warmup W = 2, T = 10, steps 0..10 (transformers get_cosine_schedule_with_warmup) */
    const double want_cos[11] = { 0, .5, 1, .96194, .853553, .691342, .5, .308658, .146447, .03806, 0 };
    double got[11], want_lin[11];
    int s;
    for (s = 0; s <= 10; s++) got[s] = cllm_lr_at(CLLM_SCHED_COSINE, 1.0, s, 2, 10);
    check_tensor_d("cosine schedule with warmup (W=2, T=10)", got, want_cos, 11, 1e-5);   /* vector has 6 digits */
    /* linear: warmup s/W, then (T - s)/(T - W) - written out from transformers' formula */
    for (s = 0; s <= 10; s++) { got[s] = cllm_lr_at(CLLM_SCHED_LINEAR, 2.0, s, 2, 10); want_lin[s] = 2.0 * (s < 2 ? s / 2.0 : (10.0 - s) / 8.0); }
    check_tensor_d("linear schedule with warmup (W=2, T=10)", got, want_lin, 11, 1e-12);
    check_true("constant schedule after warmup", cllm_lr_at(CLLM_SCHED_CONSTANT, 3.0, 7, 2, 10) == 3.0 && cllm_lr_at(CLLM_SCHED_CONSTANT, 3.0, 1, 2, 10) == 1.5);
}

#endif

int main(void) {
    test_torch_runs();
#ifdef COLLABLLM_DOUBLE
    test_adamw();
    test_clip();
    test_schedules();
    return check_summary("test_optim");
#else
    return check_summary("test_optim_f32");
#endif
}
