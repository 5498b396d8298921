/* fuzz_sft_jsonl.c - libFuzzer target for SFT rows (cllm_sft_data_load, data_fmt/sft.md) through
   a committed tokenizer and its chat template. Byte 0 picks the tokenizer (smollm2, qwen2_style,
   llama3_style) and max_length (2..65); the rest is the JSONL file.
   Invariants of a loaded row: at most max_length tokens, the first never a target, at least one
   target, and the prompt part shorter than the row. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *names[] = { "smollm2", "qwen2_style", "llama3_style" };
    const cllm_tokenizer *tok;
    cllm_sft_data d;
    cllm_err err;
    int max_length, i;
    if (size < 1) return 0;
    tok = fuzz_tokenizer(names[data[0] % 3]);
    max_length = 2 + (data[0] / 3) % 64;
    if (cllm_sft_data_load(&d, tok, fuzz_file("sft", data + 1, size - 1), max_length, &err) == CLLM_OK) {
        FUZZ_CHECK(d.n >= 1 && d.n_truncated <= d.n, "rows were read");
        for (i = 0; i < d.n; i++) {
            const cllm_train_seq *s = &d.rows[i];
            FUZZ_CHECK(s->n >= 2 && s->n <= max_length && s->target[0] == 0, "a row fits max_length and its first token is no target");
            FUZZ_CHECK(cllm_train_seq_targets(s) >= 1 && s->n_prompt >= 1 && s->n_prompt < s->n, "a row has a prompt and targets");
        }
        cllm_sft_data_free(&d);
    } else FUZZ_CHECK(err.msg[0] && d.n == 0 && !d.rows, "a refused file names the problem and returns nothing");
    return 0;
}
