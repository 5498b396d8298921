/* test_lora_gradcheck.c - LoRA adapters' gradients by central finite differences, in double.
   Tiny qwen2 (q/k/v biases, GQA) and qwen3 (q/k norms) models with adapters on all seven
   projections, random A and B, dropout on (its masks are a function of the seed, so the
   objective is deterministic) and off; objective sum_t w_t logp_t through cllm_backward's dlogp.
   Every adapter parameter is checked; the base model must get no gradient buffer. */
#define COLLABLLM_DOUBLE
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>

#define H_FD 1e-6
#define TOL 1e-6

static double objective(cllm_model *m, const cllm_batch *b, const double *w) {
    double f = 0;
    int i;
    cllm_forward(m, b, NULL, NULL);
    for (i = 0; i < b->B * b->T; i++) f += w[i] * m->acts.logp[i];
    return f;
}

static void run(const char *label, int arch, double dropout) {
    cllm_config c;
    cllm_model m;
    cllm_lora lo;
    cllm_lora_config lc;
    cllm_batch b;
    cllm_rng rng;
    cllm_err err;
    int ids[2 * 6], mask[2 * 6], i, B = 2, T = 6;
    double w[2 * 6], *num;
    size_t k;
    char text[200];
    memset(&c, 0, sizeof c);
    c.arch = arch; c.vocab_size = 23; c.hidden_size = 8; c.intermediate_size = 12; c.n_layers = 2;
    c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = arch == CLLM_ARCH_QWEN3 ? 6 : 4;
    c.rms_norm_eps = 1e-6f; c.rope_theta = 10000; c.tie_word_embeddings = arch == CLLM_ARCH_QWEN3;
    c.attention_bias = arch == CLLM_ARCH_QWEN2; c.qk_norm = arch == CLLM_ARCH_QWEN3; c.bos_token_id = -1;
    printf("%s\n", label);
    if (cllm_model_init(&m, &c, 7, &err) != CLLM_OK) { check_true(err.msg, 0); return; }
    cllm_rng_seed(&rng, 99);
    for (k = 0; k < m.num_params; k++) m.params_memory[k] += (cllm_float)(0.3 * cllm_rng_normal(&rng));   /* away from init symmetry */
    memset(&lc, 0, sizeof lc);
    lc.r = 3; lc.alpha = 6; lc.dropout = dropout;
    check_true("cllm_lora_init (all seven targets)", cllm_lora_init(&lo, &m, &lc, &err) == CLLM_OK);
    for (k = 0; k < lo.num_params; k++) lo.params[k] = (cllm_float)(0.4 * cllm_rng_normal(&rng));      /* B != 0 */
    lo.training = 1;
    lo.dropout_seed = 0x5EEDull;
    for (i = 0; i < B * T; i++) {
        ids[i] = (int)(cllm_rng_u32(&rng) % 23);
        mask[i] = !(i / T == 1 && i % T >= 4);      /* row 1 is right-padded */
        w[i] = cllm_rng_normal(&rng);
    }
    memset(&b, 0, sizeof b);
    b.B = B; b.T = T; b.input_ids = ids; b.attn_mask = mask;
    cllm_forward(&m, &b, NULL, &err);
    check_true("backward with adapters", cllm_backward(&m, w, NULL, &err) == CLLM_OK);
    check_true("the base model got no gradient buffer", m.grads_memory == NULL && lo.grads != NULL);
    num = (double *)malloc(lo.num_params * sizeof(double));
    for (k = 0; k < lo.num_params; k++) {
        double keep = lo.params[k], fp, fm;
        lo.params[k] = keep + H_FD; fp = objective(&m, &b, w);
        lo.params[k] = keep - H_FD; fm = objective(&m, &b, w);
        lo.params[k] = keep;
        num[k] = (fp - fm) / (2 * H_FD);
    }
    snprintf(text, sizeof text, "d/d(every A and B), %zu parameters, dropout %.2f", lo.num_params, dropout);
    check_tensor_d(text, lo.grads, num, lo.num_params, TOL);
    {   /* the adapters change the objective: a zero gradient would also pass a lazy check */
        double mx = 0;
        for (k = 0; k < lo.num_params; k++) if (fabs(num[k]) > mx) mx = fabs(num[k]);
        check_true("  the gradients are not all zero", mx > 1e-3);
    }
    free(num);
    cllm_lora_free(&lo);
    cllm_model_free(&m);
}

int main(void) {
    run("qwen2 (biases, GQA), dropout 0.25", CLLM_ARCH_QWEN2, 0.25);
    run("qwen3 (q/k norms, head_dim != C/H), dropout 0.25", CLLM_ARCH_QWEN3, 0.25);
    run("qwen2, no dropout", CLLM_ARCH_QWEN2, -1);
    return check_summary("test_lora_gradcheck");
}
