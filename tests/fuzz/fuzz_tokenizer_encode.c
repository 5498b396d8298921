/* fuzz_tokenizer_encode.c - libFuzzer target for encoding and decoding arbitrary bytes with the
   fixed committed tokenizers. Byte 0 of the input picks the tokenizer and the flags; the rest is
   the text. Invariants:
     - valid UTF-8 encodes (ids in the vocabulary, offsets inside the text, start <= end, starts
       in order, also when NFC reorders combining marks);
       anything else is refused with CLLM_ERR_FORMAT;
     - round trip: decode(encode(x)) == x for the byte-level tokenizers without a normalizer
       (gpt2: unless x holds "<mask>", whose lstrip/rstrip swallow the spaces around it), and
       == NFC(x) for the NFC one, whose encoding of x and of NFC(x) are the same ids;
     - NFC is idempotent: NFC(NFC(x)) == NFC(x);
     - the same bytes read as 16-bit ids decode (unknown ids skipped) to valid UTF-8, and the
       streaming decoder gives exactly the text of decode. */
#include "fuzz_util.h"

static char *nfc(const struct cllm__tok *p, const char *s, size_t n, size_t *out_n) {
    cllm__ntext t;
    memset(&t, 0, sizeof t);
    cllm__nfc(p->comp, p->ncomp, s, n, 0, &t);
    stbds_arrfree(t.os); stbds_arrfree(t.oe);
    *out_n = t.b.n;
    if (!t.b.p) t.b.p = (char *)calloc(1, 1);
    return t.b.p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *names[] = { "gpt2", "gpt2_prefix", "llama3_style", "qwen2_style", "smollm2" };
    const cllm_tokenizer *tok;
    const char *text;
    size_t len, i;
    int *ids = NULL, *offs = NULL, n = 0, *raw_ids, n_raw, k;
    int add_special, skip;
    cllm_err err;
    cllm_result rc;
    if (size < 1) return 0;
    tok = fuzz_tokenizer(names[data[0] % 5]);
    add_special = (data[0] / 5) & 1;
    skip = (data[0] / 10) & 1;
    text = (const char *)data + 1;
    len = size - 1;

    rc = cllm_tokenizer_encode(tok, text, len, add_special, &ids, &n, &offs, &err);
    if (!fuzz_utf8(text, len)) FUZZ_CHECK(rc == CLLM_ERR_FORMAT, "invalid UTF-8 is refused");
    else {
        FUZZ_CHECK(rc == CLLM_OK, "valid UTF-8 encodes");
        for (k = 0; k < n; k++) {
            FUZZ_CHECK(ids[k] >= 0 && ids[k] < tok->n_ids, "ids lie inside the vocabulary");
            FUZZ_CHECK(offs[2 * k] <= offs[2 * k + 1] && offs[2 * k] >= 0 && (size_t)offs[2 * k + 1] <= len, "offsets lie inside the text");
            FUZZ_CHECK(k == 0 || offs[2 * k] >= offs[2 * k - 2] || offs[2 * k + 1] == 0, "token starts are in order");
        }
        fuzz_check_stream(tok, ids, n, skip);
        if (!add_special && strcmp(names[data[0] % 5], "gpt2_prefix") != 0) {
            char *back, *want;
            size_t back_n, want_n;
            int is_nfc = tok->priv->nfc;
            FUZZ_CHECK(cllm_tokenizer_decode(tok, ids, n, 0, &back, &back_n, &err) == CLLM_OK, "decode succeeds");
            if (is_nfc) {
                size_t twice_n;
                char *twice;
                int *ids2, n2;
                want = nfc(tok->priv, text, len, &want_n);
                twice = nfc(tok->priv, want, want_n, &twice_n);
                FUZZ_CHECK(twice_n == want_n && memcmp(twice, want, want_n) == 0, "NFC(NFC(x)) == NFC(x)");
                FUZZ_CHECK(cllm_tokenizer_encode(tok, want, want_n, 0, &ids2, &n2, NULL, &err) == CLLM_OK, "NFC(x) encodes");
                FUZZ_CHECK(n2 == n && memcmp(ids2, ids, sizeof(int) * (size_t)n) == 0, "encode(NFC(x)) == encode(x)");
                CLLM_FREE(ids2);
                free(twice);
            } else { want = (char *)malloc(len + 1); memcpy(want, text, len); want_n = len; }
            if (!(strcmp(names[data[0] % 5], "gpt2") == 0 && fuzz_contains(text, len, "<mask>")))
                FUZZ_CHECK(back_n == want_n && memcmp(back, want, want_n) == 0, "decode(encode(x)) == x (NFC(x) for an NFC tokenizer)");
            free(want);
            CLLM_FREE(back);
        }
    }
    CLLM_FREE(ids); CLLM_FREE(offs);

    /* the input as a list of 16-bit ids, some of them unknown or negative */
    n_raw = (int)(len / 2);
    raw_ids = (int *)malloc(sizeof(int) * (size_t)n_raw + 1);
    for (i = 0; i < (size_t)n_raw; i++) raw_ids[i] = (int16_t)((uint8_t)text[2 * i] | (uint8_t)text[2 * i + 1] << 8) % (tok->n_ids + 8);
    fuzz_check_stream(tok, raw_ids, n_raw, skip);
    free(raw_ids);
    return 0;
}
