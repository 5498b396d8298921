/* test_lora.c - LoRA adapters (PEFT semantics) on a tiny checkpoint.
   - fresh adapters (B = 0) leave the logits bit-identical; A's spread is PEFT's gaussian 1/r
   - merged weights (W + alpha/r B A) give the logits of the unmerged adapters; disabled
     adapters give the base model's logits exactly
   - KV-cache generation sees the adapters: prefill logits equal cllm_forward's, greedy tokens
     equal the merged model's
   - dropout: reproducible from its seed, different for another seed, off outside training
   - PEFT files: tensor names and shapes, adapter_config.json fields, save/load round trip
   - training: only the adapters change (base weights bit-identical, no base gradient or AdamW
     buffers), and a LoRA DPO run with dropout resumes bit-identically. */
#include "../collabllm.h"
#include "check.h"
#include <string.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

static const char *MODEL = "tests/data/golden/qwen3_qknorm";   /* q/k norms, tied head */
static int ids[2][9] = { { 3, 17, 42, 8, 8, 60, 11, 5, 2 }, { 9, 1, 33, 70, 4, 0, 0, 0, 0 } };
static int mask[2][9] = { { 1, 1, 1, 1, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 1, 0, 0, 0, 0 } };

static void make_batch(cllm_batch *b) {
    memset(b, 0, sizeof *b);
    b->B = 2; b->T = 9; b->input_ids = &ids[0][0]; b->attn_mask = &mask[0][0];
}

static cllm_float *logits_of(cllm_model *m) {
    cllm_batch b;
    cllm_float *z = (cllm_float *)malloc(2 * 9 * (size_t)m->config.vocab_size * sizeof(cllm_float));
    make_batch(&b);
    cllm_forward(m, &b, z, NULL);
    return z;
}

static int same(const cllm_float *a, const cllm_float *b, size_t n) { return memcmp(a, b, n * sizeof(cllm_float)) == 0; }

static void randomize_B(cllm_lora *lo) {
    cllm_rng rng;
    int t;
    size_t k;
    cllm_rng_seed(&rng, 5);
    for (t = 0; t < CLLM_LORA_NUM_TARGETS; t++)
        if (lo->B[t]) for (k = 0; k < (size_t)lo->n_layers * lo->out[t] * lo->cfg.r; k++) lo->B[t][k] = (cllm_float)(0.05 * cllm_rng_normal(&rng));
}

static void test_forward_merge(void) {
    cllm_model m, base;
    cllm_lora lo;
    cllm_lora_config lc;
    cllm_err err;
    cllm_float *z0, *z1, *z2, *z3;
    size_t n, k;
    double sd = 0;
    printf("adapters in the forward pass; merging\n");
    cllm_model_load(&m, MODEL, &err);
    cllm_model_load(&base, MODEL, &err);
    n = 2 * 9 * (size_t)m.config.vocab_size;
    z0 = logits_of(&base);
    memset(&lc, 0, sizeof lc);
    lc.r = 4; lc.alpha = 16;
    check_true("cllm_lora_init r=4 alpha=16, all targets", cllm_lora_init(&lo, &m, &lc, &err) == CLLM_OK && lo.scale == 4.0 && m.lora == &lo);
    for (k = 0; k < (size_t)lo.n_layers * 4 * (size_t)lo.in[0]; k++) sd += (double)lo.A[0][k] * lo.A[0][k];
    sd = sqrt(sd / (double)((size_t)lo.n_layers * 4 * (size_t)lo.in[0]));
    printf("  std of A (q_proj) = %.4f, PEFT gaussian: 1/r = %.4f\n", sd, 1.0 / 4);
    check_true("A ~ normal with std 1/r (within 15%), B = 0", fabs(sd - 0.25) < 0.0375);
    z1 = logits_of(&m);
    check_true("fresh adapters (B = 0): logits bit-identical to the base model", same(z0, z1, n));
    free(z1);
    randomize_B(&lo);
    z1 = logits_of(&m);
    check_true("trained-looking adapters change the logits", !same(z0, z1, n));
    lo.enabled = 0;
    z2 = logits_of(&m);
    check_true("disabled adapters: bit-identical to the base model", same(z0, z2, n));
    lo.enabled = 1;
    {   /* KV cache path: prefill logits of row 0 and greedy generation */
        cllm_kv_cache kv;
        cllm_float *zk = (cllm_float *)malloc(9 * (size_t)m.config.vocab_size * sizeof(cllm_float));
        cllm_kv_cache_init(&kv, &m, 1, 32, &err);
        cllm_kv_prefill(&m, &kv, 0, ids[0], 9, zk, &err);
        check_tensor("KV-cache prefill logits with adapters == cllm_forward's", zk, z1, 9 * (size_t)m.config.vocab_size, 1e-5);
        cllm_kv_cache_free(&kv);
        free(zk);
    }
    {
        cllm_gen_config g;
        cllm_completion c1[1], c2[1];
        memset(&g, 0, sizeof g);
        memset(c1, 0, sizeof c1); memset(c2, 0, sizeof c2);
        g.sampler.greedy = 1; g.max_new_tokens = 12; g.ignore_eos = 1;
        cllm_generate(&m, ids[0], 5, 1, &g, c1, &err);
        check_true("cllm_lora_merge", cllm_lora_merge(&lo, &err) == CLLM_OK && m.lora == NULL && lo.model == NULL);
        z3 = logits_of(&m);
        check_tensor("merged W + (alpha/r) B A: logits == unmerged adapters", z3, z1, n, 1e-5);
        cllm_generate(&m, ids[0], 5, 1, &g, c2, &err);
        check_true("greedy generation with adapters == with merged weights", c1[0].n == c2[0].n && memcmp(c1[0].ids, c2[0].ids, sizeof(int) * (size_t)c1[0].n) == 0);
        cllm_completions_free(c1, 1); cllm_completions_free(c2, 1);
        free(z3);
    }
    free(z0); free(z1); free(z2);
    cllm_lora_free(&lo);
    cllm_model_free(&m); cllm_model_free(&base);
}

static double train_loss(cllm_model *m, cllm_lora *lo, int training, uint64_t seed) {
    cllm_batch b;
    make_batch(&b);
    lo->training = training; lo->dropout_seed = seed;
    cllm_forward(m, &b, NULL, NULL);
    lo->training = 0;
    return m->loss;
}

static void test_dropout(void) {
    cllm_model m;
    cllm_lora lo;
    cllm_lora_config lc;
    cllm_err err;
    double a, b, c, e;
    printf("dropout on the adapter input\n");
    cllm_model_load(&m, MODEL, &err);
    memset(&lc, 0, sizeof lc);
    lc.r = 4; lc.dropout = 0.5;
    cllm_lora_init(&lo, &m, &lc, &err);
    randomize_B(&lo);
    a = train_loss(&m, &lo, 1, 11); b = train_loss(&m, &lo, 1, 11); c = train_loss(&m, &lo, 1, 12); e = train_loss(&m, &lo, 0, 11);
    printf("  loss seed 11: %.7f, again: %.7f, seed 12: %.7f, eval: %.7f\n", a, b, c, e);
    check_true("the same seed gives the same masks", a == b);
    check_true("another seed gives other masks", a != c);
    check_true("eval (training = 0) has no dropout", e != a && e != c);
    cllm_lora_free(&lo);
    cllm_model_free(&m);
}

static void test_peft_files(void) {
    cllm_model m, m2;
    cllm_lora lo, lo2;
    cllm_lora_config lc;
    cllm_safetensors st;
    cllm_err err;
    const cllm_st_tensor *t;
    char *cfg = NULL;
    size_t len;
    cJSON *j;
    printf("PEFT files\n");
    cllm_model_load(&m, MODEL, &err);
    cllm_model_load(&m2, MODEL, &err);
    memset(&lc, 0, sizeof lc);
    lc.r = 4; lc.alpha = 8; lc.dropout = 0.05; lc.targets = CLLM_LORA_Q | CLLM_LORA_V | CLLM_LORA_DOWN;
    cllm_lora_init(&lo, &m, &lc, &err);
    randomize_B(&lo);
    check_true("cllm_lora_save", cllm_lora_save(&lo, "build/tmp_lora_adapter", "some/base-model", &err) == CLLM_OK);
    check_true("adapter_model.safetensors opens", cllm_st_open(&st, "build/tmp_lora_adapter/adapter_model.safetensors", &err) == CLLM_OK);
    t = cllm_st_find(&st, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    check_true("layers.0.self_attn.q_proj.lora_A.weight is (r, hidden)", t && t->ndim == 2 && t->shape[0] == 4 && t->shape[1] == m.config.hidden_size);
    t = cllm_st_find(&st, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    check_true("layers.1.self_attn.v_proj.lora_B.weight is (kv_heads*head_dim, r)", t && t->shape[0] == m.config.n_kv_heads * m.config.head_dim && t->shape[1] == 4);
    t = cllm_st_find(&st, "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
    check_true("layers.1.mlp.down_proj.lora_A.weight is (r, intermediate)", t && t->shape[1] == m.config.intermediate_size);
    check_true("only the three targets: 2 layers x 3 targets x (A, B) = 12 tensors", st.n == 12 && !cllm_st_find(&st, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"));
    cllm_st_close(&st);
    cllm_read_file("build/tmp_lora_adapter/adapter_config.json", &cfg, &len, &err);
    j = cJSON_Parse(cfg);
    check_true("adapter_config.json: peft_type LORA, task_type CAUSAL_LM, r 4, lora_alpha 8, lora_dropout 0.05, gaussian, bias none",
               j && strcmp(cJSON_GetObjectItem(j, "peft_type")->valuestring, "LORA") == 0 && strcmp(cJSON_GetObjectItem(j, "task_type")->valuestring, "CAUSAL_LM") == 0 &&
               cJSON_GetObjectItem(j, "r")->valuedouble == 4 && cJSON_GetObjectItem(j, "lora_alpha")->valuedouble == 8 &&
               fabs(cJSON_GetObjectItem(j, "lora_dropout")->valuedouble - 0.05) < 1e-12 &&
               strcmp(cJSON_GetObjectItem(j, "init_lora_weights")->valuestring, "gaussian") == 0 && strcmp(cJSON_GetObjectItem(j, "bias")->valuestring, "none") == 0 &&
               strcmp(cJSON_GetObjectItem(j, "base_model_name_or_path")->valuestring, "some/base-model") == 0);
    check_true("  target_modules [q_proj, v_proj, down_proj]", cJSON_GetArraySize(cJSON_GetObjectItem(j, "target_modules")) == 3 &&
               strcmp(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "target_modules"), 2)->valuestring, "down_proj") == 0);
    cJSON_Delete(j); free(cfg);
    check_true("cllm_lora_load reads them back", cllm_lora_load(&lo2, &m2, "build/tmp_lora_adapter", &err) == CLLM_OK);
    check_true("  same r, alpha, dropout, targets and weights", lo2.cfg.r == 4 && lo2.scale == 2.0 && lo2.cfg.targets == lc.targets &&
               fabs(lo2.cfg.dropout - 0.05) < 1e-12 && lo2.num_params == lo.num_params && same(lo.params, lo2.params, lo.num_params));
    {
        cllm_lora lo3;
        check_true("a second set of adapters on the same model is refused", cllm_lora_init(&lo3, &m2, &lc, &err) == CLLM_ERR_ARG);
    }
    cllm_lora_free(&lo); cllm_model_free(&m);
    cllm_model_free(&m2);
    cllm_lora_free(&lo2);
    {
        unsigned bits = 0;
        check_true("targets 'q,k,v,o,gate,up,down' = all; 'v_proj,up' parsed; 'x' refused",
                   cllm_lora_parse_targets("q,k,v,o,gate,up,down", &bits, &err) == CLLM_OK && bits == CLLM_LORA_ALL &&
                   cllm_lora_parse_targets("v_proj,up", &bits, &err) == CLLM_OK && bits == (CLLM_LORA_V | CLLM_LORA_UP) &&
                   cllm_lora_parse_targets("x", &bits, &err) == CLLM_ERR_ARG);
    }
}

static void test_training_frozen_base(void) {
    cllm_tokenizer tok;
    cllm_model m, base;
    cllm_lora lo;
    cllm_sft_data d;
    cllm_train_config cfg;
    cllm_err err;
    float *before;
    printf("training with LoRA: only the adapters change\n");
    cllm_tokenizer_load(&tok, "tests/data/tokenizers/qwen2_style", &err);
    cllm_sft_data_load(&d, &tok, "data_fmt/train_sft.example.jsonl", 0, &err);
    cllm_model_load(&m, "tests/data/train/tiny_qwen2", &err);
    cllm_model_load(&base, "tests/data/train/tiny_qwen2", &err);
    cllm_lora_init(&lo, &m, NULL, &err);
    before = (float *)malloc(lo.num_params * sizeof(float));
    memcpy(before, lo.params, lo.num_params * sizeof(float));
    memset(&cfg, 0, sizeof cfg);
    cfg.lr = 1e-2; cfg.batch_size = 2; cfg.max_steps = 3; cfg.quiet = 1;
    check_true("cllm_train_sft with LoRA defaults (r 32, alpha 16, dropout 0.1)", cllm_train_sft(&m, &lo, &d, &cfg, &err) == CLLM_OK);
    check_true("base weights bit-identical", same(m.params_memory, base.params_memory, m.num_params));
    check_true("no base gradients or AdamW moments were allocated", !m.grads_memory && !m.m_memory && !m.v_memory);
    check_true("the adapters moved and have AdamW state (adam_t 3)", !same(before, lo.params, lo.num_params) && lo.m && lo.adam_t == 3);
    free(before);
    cllm_lora_free(&lo);
    cllm_model_free(&m); cllm_model_free(&base);
    cllm_sft_data_free(&d);
    cllm_tokenizer_free(&tok);
}

int main(void) {
    check_mkdir("build");
    test_forward_merge();
    test_dropout();
    test_peft_files();
    test_training_frozen_base();
    return check_summary("test_lora");
}
