/* fuzz_tiktoken_encode.c - libFuzzer target for encoding and decoding arbitrary bytes with the
   committed small rank file (tests/data/tiktoken/small.tiktoken). Byte 0 of the input picks the
   encoding's pattern (cl100k_base or r50k_base) and whether special ids are skipped; the rest is
   the text. Invariants:
     - valid UTF-8 encodes, anything else is refused with CLLM_ERR_FORMAT;
     - the tokens tile the text: each token's bytes are the text at its offsets, in order;
     - decode(encode(x)) == x, and cllm_tiktoken_count(x) == the number of ids;
     - the same bytes read as ids (16 bits, some of them no token) decode to valid UTF-8, or are
       refused naming the id that is no token. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const cllm_tiktoken *tk;
    const char *text;
    size_t len;
    int *ids = NULL;
    int *offsets = NULL;
    int *raw_ids;
    int n = 0;
    int n_raw;
    int skip;
    int i;
    char *back = NULL;
    size_t back_len = 0;
    cllm_err err;
    cllm_result rc;
    if (size < 1) return 0;
    tk = fuzz_small_tiktoken(data[0] & 1);
    skip = (data[0] >> 1) & 1;
    text = (const char *)data + 1;
    len = size - 1;
    rc = cllm_tiktoken_encode(tk, text, len, &ids, &n, &offsets, &err);
    if (!fuzz_utf8(text, len)) {
        FUZZ_CHECK(rc == CLLM_ERR_FORMAT, "invalid UTF-8 is refused");
    } else {
        char *copy = fuzz_cstr((const uint8_t *)text, len);
        FUZZ_CHECK(rc == CLLM_OK, "valid UTF-8 encodes");
        for (i = 0; i < n; i++) {
            size_t n_bytes;
            const char *bytes = cllm_tiktoken_id_bytes(tk, ids[i], &n_bytes);
            FUZZ_CHECK(bytes && ids[i] < tk->n_ranks, "ids are mergeable tokens (special text is ordinary text)");
            FUZZ_CHECK(offsets[2 * i] == (i ? offsets[2 * i - 1] : 0), "tokens follow each other");
            FUZZ_CHECK((size_t)(offsets[2 * i + 1] - offsets[2 * i]) == n_bytes &&
                       memcmp(text + offsets[2 * i], bytes, n_bytes) == 0,
                       "a token's bytes are the text at its offsets");
        }
        FUZZ_CHECK(n == 0 || (size_t)offsets[2 * n - 1] == len, "the tokens cover the text");
        FUZZ_CHECK(cllm_tiktoken_decode(tk, ids, n, skip, &back, &back_len, &err) == CLLM_OK && back_len == len &&
                   memcmp(back, text, len) == 0, "decode(encode(x)) == x");
        if (strlen(copy) == len) FUZZ_CHECK(cllm_tiktoken_count((void *)tk, copy) == n, "count == the number of ids");
        free(copy);
        CLLM_FREE(back);
    }
    CLLM_FREE(ids);
    CLLM_FREE(offsets);

    n_raw = (int)(len / 2);
    raw_ids = (int *)malloc(sizeof(int) * (size_t)n_raw + 1);
    for (i = 0; i < n_raw; i++) raw_ids[i] = (uint8_t)text[2 * i] | ((uint8_t)text[2 * i + 1] & 1) << 8;
    for (i = 0; i < n_raw && i < 4; i++) {
        if ((uint8_t)text[2 * i + 1] & 2) raw_ids[i] = 100257 + (uint8_t)text[2 * i] % 20;   /* special ids, or none */
    }
    rc = cllm_tiktoken_decode(tk, raw_ids, n_raw, skip, &back, &back_len, &err);
    if (rc == CLLM_OK) FUZZ_CHECK(fuzz_utf8(back, back_len), "decode gives valid UTF-8");
    else FUZZ_CHECK(rc == CLLM_ERR_ARG && strstr(err.msg, "is not a token of"), "an id that is no token is named");
    CLLM_FREE(back);
    free(raw_ids);
    return 0;
}
