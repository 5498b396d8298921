/* fuzz_tokenizer_json.c - libFuzzer target for tokenizer.json loading (cllm_tokenizer_load_json).
   Input: a tokenizer.json text. Seeds: the committed test tokenizers (35-41 KB) and trimmed ones.
   Invariants of an accepted tokenizer: memory stays proportional to the input (at most 2 ids
   per byte, plus 256); encoding valid UTF-8 succeeds with ids inside the vocabulary and
   offsets inside the text; decoding gives valid UTF-8, and the streaming decoder gives the
   same text. */
#include "fuzz_util.h"

static const char *texts[] = {
    "Hello world", " 12345  h\xC3\xA9llo\n\n\tx", "<|im_end|><|endoftext|>a<mask> b", "", "'s 'LL don't",
    "e\xCC\x81 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80!",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cllm_tokenizer tok;
    cllm_err err;
    size_t k;
    if (cllm_tokenizer_load_json(&tok, (const char *)data, size, NULL, 0, &err) != CLLM_OK) {
        FUZZ_CHECK(err.msg[0] && tok.priv == NULL, "a failed load names the problem and leaves nothing allocated");
        return 0;
    }
    FUZZ_CHECK(tok.n_ids > 0 && (size_t)tok.n_ids <= 2 * size + 256, "ids are bounded by the size of tokenizer.json");
    for (k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        const char *t = texts[k];
        size_t len = strlen(t);
        int *ids = NULL, *offs = NULL, n = 0, i, special;
        cllm_result rc = cllm_tokenizer_encode(&tok, t, len, (int)(k & 1), &ids, &n, &offs, &err);
        FUZZ_CHECK(rc == CLLM_OK, "encoding valid UTF-8 succeeds");
        for (i = 0; i < n; i++) {
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < tok.n_ids, "ids lie inside the vocabulary");
            FUZZ_CHECK(offs[2 * i] >= 0 && offs[2 * i] <= offs[2 * i + 1] && (size_t)offs[2 * i + 1] <= len, "offsets lie inside the text");
        }
        for (special = 0; special < 2; special++) fuzz_check_stream(&tok, ids, n, special);
        CLLM_FREE(ids); CLLM_FREE(offs);
    }
    cllm_tokenizer_free(&tok);
    return 0;
}
