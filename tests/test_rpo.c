/* test_rpo.c - RPO (DPO + alpha * NLL of the chosen completions, TRL's rpo_alpha): the loss grows
   by alpha times the chosen tokens' mean NLL, and the gradient equals the plain DPO gradient plus
   alpha times the gradient of that NLL, computed independently with the SFT micro-step. */
#include "../collabllm.h"
#include "check.h"

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

int main(void) {
    cllm_tokenizer tok;
    cllm_model m, ref;
    cllm_dpo_data d;
    cllm_dpo_config dc;
    cllm_train_stats st;
    cllm_err err;
    const cllm_dpo_pair *pairs[8];
    const cllm_train_seq *chosen[8];
    cllm_float *g_dpo, *g_rpo, *g_sft, *want;
    double loss_dpo, loss_rpo, nll, sft_nll, tok_c = 0, alpha = 0.7, want_loss;
    size_t k, np;
    int n, i;
    if (!check_true("load", cllm_tokenizer_load(&tok, "tests/data/tokenizers/qwen2_style", &err) == CLLM_OK &&
                    cllm_model_load(&m, "tests/data/train/tiny_qwen2", &err) == CLLM_OK && cllm_model_load(&ref, "tests/data/train/tiny_qwen2", &err) == CLLM_OK &&
                    cllm_dpo_data_load(&d, &tok, "data_fmt/train_dpo.example.jsonl", NULL, &err) == CLLM_OK)) { printf("  %s\n", err.msg); return check_summary("test_rpo"); }
    /* a policy that differs from the reference, so the DPO term is not at its symmetric point */
    for (k = 0; k < m.num_params; k++) m.params_memory[k] += (cllm_float)(0.01 * (double)((int)((k * 7919) % 13) - 6) / 6.0);
    n = d.n < 8 ? d.n : 8;
    np = m.num_params;
    for (i = 0; i < n; i++) { pairs[i] = &d.pairs[i]; chosen[i] = &d.pairs[i].chosen; tok_c += cllm_train_seq_targets(chosen[i]); }
    g_dpo = (cllm_float *)malloc(np * sizeof *g_dpo); g_rpo = (cllm_float *)malloc(np * sizeof *g_rpo);
    g_sft = (cllm_float *)malloc(np * sizeof *g_sft); want = (cllm_float *)malloc(np * sizeof *want);
    memset(&dc, 0, sizeof dc);
    dc.beta = 0.1;
    memset(&st, 0, sizeof st);
    cllm_zero_grad(&m, &err);
    check_true("DPO micro-step", cllm_dpo_micro_step(&m, &ref, pairs, n, &dc, n, &st, &err) == CLLM_OK);
    loss_dpo = cllm_train_stats_mean(&st, "loss");
    memcpy(g_dpo, m.grads_memory, np * sizeof *g_dpo);
    dc.rpo_alpha = alpha;
    memset(&st, 0, sizeof st);
    cllm_zero_grad(&m, &err);
    check_true("RPO micro-step", cllm_dpo_micro_step(&m, &ref, pairs, n, &dc, n, &st, &err) == CLLM_OK);
    loss_rpo = cllm_train_stats_mean(&st, "loss");
    nll = cllm_train_stats_mean(&st, "nll_loss");
    memcpy(g_rpo, m.grads_memory, np * sizeof *g_rpo);
    /* the NLL of the chosen completions on its own: the SFT loss over those tokens, mean per token */
    memset(&st, 0, sizeof st);
    cllm_zero_grad(&m, &err);
    check_true("SFT micro-step on the chosen rows", cllm_sft_micro_step(&m, chosen, n, tok_c, 1, &st, &err) == CLLM_OK);
    memcpy(g_sft, m.grads_memory, np * sizeof *g_sft);
    sft_nll = cllm_train_stats_mean(&st, "loss");
    want_loss = loss_dpo + alpha * sft_nll;
    check_tensor_d("RPO loss = DPO loss + alpha * mean NLL of the chosen tokens", &loss_rpo, &want_loss, 1, 1e-6);
    check_tensor_d("... and the logged nll_loss is that NLL", &nll, &sft_nll, 1, 1e-6);
    for (k = 0; k < np; k++) want[k] = g_dpo[k] + (cllm_float)alpha * g_sft[k];
    check_tensor("RPO gradient = DPO gradient + alpha * NLL gradient", g_rpo, want, np, 1e-5);
    free(g_dpo); free(g_rpo); free(g_sft); free(want);
    cllm_dpo_data_free(&d);
    cllm_model_free(&m); cllm_model_free(&ref);
    cllm_tokenizer_free(&tok);
    return check_summary("test_rpo");
}
