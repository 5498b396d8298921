/* test_model.c - the transformer against the independent PyTorch reference (tests/gen_golden.py).
   For each tiny HF checkpoint in tests/data/golden/: logits, loss, per-sequence log-probs and the
   gradient of every parameter tensor; then 6 AdamW steps against torch's loss trajectory. */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

#define RTOL 1e-4   /* the target: 100x tighter than llm.c's 1e-2 */
/* Weights after the 6 AdamW steps. Adam is scale-free: a gradient entry at rounding-noise level
   (layer 1 k_proj [361]: 3.8e-7 against a tensor maximum of 7.9e-2, near eps after clipping)
   moves its weight by about lr whatever its exact value, so fp32 rounding differences alone
   (the fast paths' fused multiply-adds and partial sums) show up at ~1e-4 of the weights. The
   fast build checks them at 3e-4; losses, gradient norms and all gradients stay at 1e-4. */
#ifdef CLLM_SIMD
#define RTOL_FINAL 3e-4
#else
#define RTOL_FINAL RTOL
#endif

static cllm_float *read_expected(cllm_safetensors *st, const char *name, size_t *n) {
    const cllm_st_tensor *t = cllm_st_find(st, name);
    cllm_float *buf;
    cllm_err err;
    if (!t) { printf("  FAIL expected tensor %s missing\n", name); check_failures++; return NULL; }
    buf = (cllm_float *)malloc(((size_t)t->numel + 1) * sizeof(cllm_float));
    if (cllm_st_read(st, t, buf, &err) != CLLM_OK) { printf("  FAIL %s\n", err.msg); check_failures++; free(buf); return NULL; }
    *n = (size_t)t->numel;
    return buf;
}

/* Compares every parameter tensor (params or grads view) with "<prefix><HF name>" in st. */
static void check_param_tensors(cllm_model *m, cllm_params *view, cllm_safetensors *st, const char *prefix, double rtol) {
    cllm_float **ptrs[CLLM_NUM_PARAM_TENSORS];
    int i, l;
    cllm__param_ptrs(view, ptrs);
    for (i = 0; i < CLLM_NUM_PARAM_TENSORS; i++) {
        int layers = cllm__param_per_layer(i) ? m->config.n_layers : 1;
        size_t per = m->param_sizes[i] / (size_t)layers;
        if (!m->param_sizes[i]) continue;
        for (l = 0; l < layers; l++) {
            char name[256], full[300];
            size_t n = 0;
            cllm_float *ref;
            cllm_param_name(i, l, name, sizeof name);
            snprintf(full, sizeof full, "%s%s", prefix, name);
            ref = read_expected(st, full, &n);
            if (!ref) continue;
            if (n != per) { printf("  FAIL %s: %zu values, expected %zu\n", full, n, per); check_failures++; }
            else check_tensor(full, *ptrs[i] + (size_t)l * per, ref, n, rtol);
            free(ref);
        }
    }
}

static void run_case(const char *name) {
    char dir[512], path[600];
    cllm_model m;
    cllm_batch batch;
    cllm_safetensors exp;
    cllm_err err;
    cllm_float *logits, *ref;
    size_t n;
    printf("case %s\n", name);
    snprintf(dir, sizeof dir, "tests/data/golden/%s", name);
    if (!check_true("load checkpoint", cllm_model_load(&m, dir, &err) == CLLM_OK)) { printf("    %s\n", err.msg); return; }
    snprintf(path, sizeof path, "%s/batch.jsonl", dir);
    if (!check_true("read batch.jsonl", cllm_batch_read_jsonl(&batch, path, &err) == CLLM_OK)) { printf("    %s\n", err.msg); cllm_model_free(&m); return; }
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    if (!check_true("open expected.safetensors", cllm_st_open(&exp, path, &err) == CLLM_OK)) { printf("    %s\n", err.msg); return; }

    logits = (cllm_float *)malloc((size_t)batch.B * batch.T * m.config.vocab_size * sizeof(cllm_float));
    check_true("forward", cllm_forward(&m, &batch, logits, &err) == CLLM_OK);
    if ((ref = read_expected(&exp, "logits", &n))) { check_tensor("logits", logits, ref, n, RTOL); free(ref); }
    if ((ref = read_expected(&exp, "loss", &n))) { check_tensor("loss", &m.loss, ref, 1, RTOL); free(ref); }
    if ((ref = read_expected(&exp, "logps", &n))) { check_tensor("logps", m.seq_logp, ref, n, RTOL); free(ref); }
    cllm_zero_grad(&m, &err);
    check_true("backward", cllm_backward(&m, NULL, NULL, &err) == CLLM_OK);
    check_param_tensors(&m, &m.grads, &exp, "grad.", RTOL);
    free(logits);
    cllm_st_close(&exp);
    cllm_batch_free(&batch);
    cllm_model_free(&m);
}

/* 6 steps of clip_grad_norm_(1.0) + AdamW(lr 1e-2, wd 0.01 on 2-D tensors) vs torch. */
static void run_training(void) {
    const char *dir = "tests/data/golden/llama_gqa_tied";
    cllm_model m;
    cllm_batch batch;
    cllm_safetensors tr;
    cllm_err err;
    cllm_adamw_config opt = { 0 };
    cllm_float losses[6], norms[6], *ref;
    size_t n;
    int step;
    printf("case AdamW trajectory (llama_gqa_tied, 6 steps)\n");
    if (cllm_model_load(&m, dir, &err) != CLLM_OK || cllm_batch_read_jsonl(&batch, "tests/data/golden/llama_gqa_tied/batch.jsonl", &err) != CLLM_OK ||
        cllm_st_open(&tr, "tests/data/golden/llama_gqa_tied/train.safetensors", &err) != CLLM_OK) {
        check_true(err.msg, 0);
        return;
    }
    opt.weight_decay = 0.01;
    for (step = 0; step < 6; step++) {
        cllm_forward(&m, &batch, NULL, &err);
        losses[step] = m.loss;
        cllm_zero_grad(&m, &err);
        cllm_backward(&m, NULL, NULL, &err);
        norms[step] = (cllm_float)cllm_clip_grad_norm(&m, 1.0);
        cllm_adamw_update(&m, &opt, 1e-2, &err);
    }
    if ((ref = read_expected(&tr, "losses", &n))) { check_tensor("losses (before each step)", losses, ref, 6, RTOL); free(ref); }
    if ((ref = read_expected(&tr, "grad_norms", &n))) { check_tensor("grad norms (before clipping)", norms, ref, 6, RTOL); free(ref); }
    check_param_tensors(&m, &m.params, &tr, "final.", RTOL_FINAL);
    cllm_st_close(&tr);
    cllm_batch_free(&batch);
    cllm_model_free(&m);
}

int main(void) {
    static const char *cases[] = { "llama_gqa_tied", "qwen2_bias", "qwen3_qknorm", "llama3_rope", "llama_bf16", "llama_f16_sharded" };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(cases[i]);
    run_training();
    return check_summary("test_model");
}
