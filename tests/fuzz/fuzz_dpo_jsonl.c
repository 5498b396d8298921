/* fuzz_dpo_jsonl.c - libFuzzer target for DPO pairs (cllm_dpo_data_load, data_fmt/dpo.md)
   through a committed tokenizer and its chat template. Byte 0 picks the tokenizer (smollm2,
   qwen2_style, llama3_style), max_length (2..65) and, from 192 on, TRL's completion tokens; the
   rest is the JSONL file.
   Invariants of a loaded pair: both sides fit max_length, start with a prompt of at least one
   token, have targets and no target first; has_ref means every pair carries both numbers. */
#include "fuzz_util.h"

static void check_side(const cllm_train_seq *s, int max_length) {
    FUZZ_CHECK(s->n >= 2 && s->n <= max_length && s->target[0] == 0, "a side fits max_length and its first token is no target");
    FUZZ_CHECK(s->n_prompt >= 1 && s->n_prompt < s->n && cllm_train_seq_targets(s) >= 1, "a side has a prompt and targets");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *names[] = { "smollm2", "qwen2_style", "llama3_style" };
    const cllm_tokenizer *tok;
    cllm_dpo_data d;
    cllm_dpo_data_config cfg;
    cllm_err err;
    int max_length, i;
    if (size < 1) return 0;
    tok = fuzz_tokenizer(names[data[0] % 3]);
    max_length = 2 + (data[0] / 3) % 64;
    memset(&cfg, 0, sizeof cfg);
    cfg.max_length = max_length;
    cfg.completion_tokens = data[0] >= 192 ? CLLM_COMPLETION_TOKENS_TRL : CLLM_COMPLETION_TOKENS_TURN;
    if (cllm_dpo_data_load(&d, tok, fuzz_file("dpo", data + 1, size - 1), &cfg, &err) == CLLM_OK) {
        FUZZ_CHECK(d.n >= 1 && d.n_truncated <= d.n, "pairs were read");
        for (i = 0; i < d.n; i++) {
            check_side(&d.pairs[i].chosen, max_length);
            check_side(&d.pairs[i].rejected, max_length);
            FUZZ_CHECK(!d.has_ref || (!isnan(d.pairs[i].ref_chosen) && !isnan(d.pairs[i].ref_rejected)), "has_ref: every pair has both reference logps");
        }
        cllm_dpo_data_free(&d);
    } else FUZZ_CHECK(err.msg[0] && d.n == 0 && !d.pairs, "a refused file names the problem and returns nothing");
    return 0;
}
