/* fuzz_tiktoken_file.c - libFuzzer target for tiktoken rank files (cllm_tiktoken_load_text).
   Byte 0 of the input picks the encoding (cl100k_base, r50k_base, p50k_base, p50k_edit); the rest
   is the file. Seeds: the committed small rank file, and broken ones. Invariants:
     - a refused file leaves nothing allocated and says why, naming the file;
     - an accepted one has every byte as a token, ids bounded by its lines (plus the special
       tokens' fixed ids), every rank 0 .. n_ranks - 1 decodable;
     - encoding valid UTF-8 succeeds, the token bytes are the text at the offsets, and
       decode(encode(x)) == x. */
#include "fuzz_util.h"

static const char *tiktoken_texts[] = {
    "Hello world", " 12345  h\xC3\xA9llo\n\n\tx", "<|endoftext|>a b", "", "'s 'LL don't  \n  ",
    "e\xCC\x81 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80!", "aaaaaaaaaaaa", "\xFF",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *encodings[] = { "cl100k_base", "r50k_base", "p50k_base", "p50k_edit" };
    static const int n_specials[] = { 5, 1, 1, 4 };
    cllm_tiktoken tk;
    cllm_err err;
    size_t k;
    int id;
    int n_tokens = 0;
    if (size < 1) return 0;
    if (cllm_tiktoken_load_text(&tk, (const char *)data + 1, size - 1, "fuzz.tiktoken", encodings[data[0] % 4],
                                &err) != CLLM_OK) {
        FUZZ_CHECK(tk.priv == NULL && strstr(err.msg, "fuzz.tiktoken") != NULL,
                   "a refused file names itself and leaves nothing allocated");
        return 0;
    }
    FUZZ_CHECK(tk.n_ranks >= 256 && (size_t)tk.n_ranks <= size, "every byte is a token; at most a token per byte");
    FUZZ_CHECK(tk.n_ids <= (tk.n_ranks + 5 > 100277 ? tk.n_ranks + 5 : 100277), "ids are bounded by the lines");
    for (id = 0; id < tk.n_ids; id++) {
        size_t len;
        if (cllm_tiktoken_id_bytes(&tk, id, &len) != NULL) n_tokens++;
    }
    FUZZ_CHECK(n_tokens == tk.n_ranks + n_specials[data[0] % 4], "each rank and special id decodes, no other id");
    for (k = 0; k < sizeof tiktoken_texts / sizeof tiktoken_texts[0]; k++) {
        const char *text = tiktoken_texts[k];
        size_t len = strlen(text);
        int *ids = NULL;
        int *offsets = NULL;
        int n = 0;
        int i;
        char *back = NULL;
        size_t back_len = 0;
        cllm_result rc = cllm_tiktoken_encode(&tk, text, len, &ids, &n, &offsets, &err);
        if (!fuzz_utf8(text, len)) {
            FUZZ_CHECK(rc == CLLM_ERR_FORMAT, "invalid UTF-8 is refused");
            continue;
        }
        FUZZ_CHECK(rc == CLLM_OK, "valid UTF-8 encodes");
        for (i = 0; i < n; i++) {
            size_t n_bytes;
            const char *bytes = cllm_tiktoken_id_bytes(&tk, ids[i], &n_bytes);
            FUZZ_CHECK(bytes && offsets[2 * i] == (i ? offsets[2 * i - 1] : 0), "tokens follow each other");
            FUZZ_CHECK((size_t)(offsets[2 * i + 1] - offsets[2 * i]) == n_bytes &&
                       memcmp(text + offsets[2 * i], bytes, n_bytes) == 0,
                       "a token's bytes are the text at its offsets");
        }
        FUZZ_CHECK(cllm_tiktoken_decode(&tk, ids, n, 0, &back, &back_len, &err) == CLLM_OK && back_len == len &&
                   memcmp(back, text, len) == 0, "decode(encode(x)) == x");
        CLLM_FREE(back);
        CLLM_FREE(ids);
        CLLM_FREE(offsets);
    }
    cllm_tiktoken_free(&tk);
    return 0;
}
