/* lora_memory.c - Demonstrates that LoRA keeps the memory of training a 0.5B model small: the
   Qwen2.5-0.5B shape with random weights, adapters r=32 alpha=16 on all seven projections (the
   paper's setting), one SFT micro-step (or a DPO pair: two rows) at T tokens, then AdamW on the
   adapters; prints the peak resident memory.

     build/lora_memory [T (512)] [rows (1)]

   The base model has no gradient buffer and no AdamW moments: memory is the fp32 weights
   (~2 GB), the activations of the batch, and the adapters with their gradients and moments. */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

static double peak_gb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / (1024.0 * 1024.0);          /* Linux reports KiB */
}

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 512, rows = argc > 2 ? atoi(argv[2]) : 1, i, b;
    cllm_config c;
    cllm_model m;
    cllm_lora lo;
    cllm_train_seq *seqs;
    const cllm_train_seq **ptr;
    cllm_train_stats st;
    cllm_err err;
    cllm_rng rng;
    clock_t t0;
    if (T < 2 || rows < 1) { fprintf(stderr, "usage: lora_memory [T >= 2] [rows >= 1]\n"); return 2; }
    memset(&c, 0, sizeof c);                                   /* Qwen/Qwen2.5-0.5B config.json */
    c.arch = CLLM_ARCH_QWEN2; c.vocab_size = 151936; c.hidden_size = 896; c.intermediate_size = 4864;
    c.n_layers = 24; c.n_heads = 14; c.n_kv_heads = 2; c.head_dim = 64; c.max_position_embeddings = 32768;
    c.rms_norm_eps = 1e-6f; c.rope_theta = 1000000.0f; c.tie_word_embeddings = 1; c.attention_bias = 1;
    c.bos_token_id = -1;
    if (cllm_model_init(&m, &c, 1, &err) != CLLM_OK || cllm_lora_init(&lo, &m, NULL, &err) != CLLM_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
    printf("model: %.1fM parameters (%.2f GB fp32); adapters: %.2fM parameters; after init: peak RSS %.2f GB\n",
           m.num_params / 1e6, m.num_params * 4 / 1e9, lo.num_params / 1e6, peak_gb());
    seqs = (cllm_train_seq *)calloc((size_t)rows, sizeof *seqs);
    ptr = (const cllm_train_seq **)calloc((size_t)rows, sizeof *ptr);
    cllm_rng_seed(&rng, 7);
    for (b = 0; b < rows; b++) {                               /* a prompt half and a completion half */
        seqs[b].n = T; seqs[b].n_prompt = T / 2;
        seqs[b].ids = (int *)malloc(sizeof(int) * (size_t)T);
        seqs[b].target = (unsigned char *)malloc((size_t)T);
        for (i = 0; i < T; i++) { seqs[b].ids[i] = (int)(cllm_rng_u32(&rng) % (uint32_t)c.vocab_size); seqs[b].target[i] = i >= T / 2; }
        ptr[b] = &seqs[b];
    }
    memset(&st, 0, sizeof st);
    lo.training = 1; lo.dropout_seed = 1;
    t0 = clock();
    if (cllm_sft_micro_step(&m, ptr, rows, cllm_train_seq_targets(&seqs[0]) * rows, 1, &st, &err) != CLLM_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
    lo.m = (cllm_float *)calloc(lo.num_params, sizeof(cllm_float));
    lo.v = (cllm_float *)calloc(lo.num_params, sizeof(cllm_float));
    cllm_clip_grad_norm_arrays(&lo.grads, &lo.num_params, 1, 1.0);
    cllm_adamw_step(lo.params, lo.grads, lo.m, lo.v, lo.num_params, 1, 1e-5, NULL);
    printf("one step, %d x %d tokens: loss %.4f, %.0f s CPU; base gradients allocated: %s; peak RSS %.2f GB\n",
           rows, T, cllm_train_stats_mean(&st, "loss"), (double)(clock() - t0) / CLOCKS_PER_SEC, m.grads_memory ? "yes" : "no", peak_gb());
    for (b = 0; b < rows; b++) cllm_train_seq_free(&seqs[b]);
    free(seqs); free(ptr);
    cllm_lora_free(&lo);
    cllm_model_free(&m);
    return 0;
}
