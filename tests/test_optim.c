/* test_optim.c - the optimiser pieces against the torch / transformers test vectors of
   torch 1.13 in float64:
   torch.optim.AdamW, torch.nn.utils.clip_grad_norm_, and transformers' schedules. */
/* no-fast-path: the optimiser on given numbers, no model kernel (make test runs it in its first pass only) */
#define COLLABLLM_DOUBLE
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"

static void test_adamw(void) {
    /* theta0 = [1, -2, 0.5], lr .1, wd .01, betas (.9, .999), eps 1e-8, three steps */
    double p[3] = { 1, -2, 0.5 }, m[3] = { 0 }, v[3] = { 0 };
    const double g[3][3] = { { .1, -.2, .3 }, { 0, .5, -.1 }, { 1, 1, 1 } };
    const double want[3][3] = { { 0.89900001, -1.898000005, 0.39950000333 },
                                { 0.831095194, -1.940323530, 0.359078648 },
                                { 0.761550381, -2.010835261, 0.288486022 } };
    int t;
    char label[64];
    for (t = 1; t <= 3; t++) {
        cllm_adamw_step(p, g[t - 1], m, v, 3, t, 0.1, 0.9, 0.999, 1e-8, 0.01);
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

int main(void) {
    test_adamw();
    test_clip();
    test_schedules();
    return check_summary("test_optim");
}
