/* fuzz_util.h - helpers shared by the libFuzzer targets in tests/fuzz (not a target itself).
   The targets run from the repository root (tests/fuzz/run.sh), so committed test data is found
   under tests/data. An invariant that does not hold calls FUZZ_CHECK, which prints what failed
   and traps, so libFuzzer saves the input as a crash. */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H
#define COLLABLLM_IMPLEMENTATION
#include "../../collabllm.h"
#include <unistd.h>

#ifndef FUZZ_CHECK   /* tests/test_fuzz_regressions.c brings its own, naming the input */
#define FUZZ_CHECK(cond, what) \
    do { if (!(cond)) { fprintf(stderr, "invariant failed (%s:%d): %s\n", __FILE__, __LINE__, what); __builtin_trap(); } } while (0)
#endif

/* Writes data to a per-process temporary file (reused by every run) and returns its path. */
static const char *fuzz_file(const char *tag, const uint8_t *data, size_t size) {
    static char path[8][128];
    static int used;
    int slot = used++ & 7;
    FILE *f;
    snprintf(path[slot], sizeof path[slot], "/tmp/cllm_fuzz_%s_%ld", tag, (long)getpid());
    f = fopen(path[slot], "wb");
    if (!f) { perror(path[slot]); __builtin_trap(); }
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    return path[slot];
}

/* One of the small committed tokenizers (tests/data/tokenizers/NAME), loaded once. A harness
   that cannot find its data stops at once: that is a setup problem, not a finding. */
static struct { const char *name; cllm_tokenizer tok; } fuzz_tok_cache[8];
static int fuzz_tok_cached;
static const cllm_tokenizer *fuzz_tokenizer(const char *name) {
    char dir[256];
    cllm_err err;
    int i;
    memset(&err, 0, sizeof err);
    for (i = 0; i < fuzz_tok_cached; i++) if (strcmp(fuzz_tok_cache[i].name, name) == 0) return &fuzz_tok_cache[i].tok;
    snprintf(dir, sizeof dir, "tests/data/tokenizers/%s", name);
    if (fuzz_tok_cached == 8 || cllm_tokenizer_load(&fuzz_tok_cache[fuzz_tok_cached].tok, dir, &err) != CLLM_OK) {
        fprintf(stderr, "fuzz setup: cannot load %s (run from the repository root): %s\n", dir, err.msg);
        exit(2);
    }
    fuzz_tok_cache[fuzz_tok_cached].name = name;
    return &fuzz_tok_cache[fuzz_tok_cached++].tok;
}

/* The committed small tiktoken rank file under cl100k_base's (0) or r50k_base's (1) pattern,
   loaded once. */
static cllm_tiktoken fuzz_tiktoken_cache[2];
static const cllm_tiktoken *fuzz_small_tiktoken(int which) {
    static const char *names[2] = { "cl100k_base", "r50k_base" };
    cllm_err err;
    if (!fuzz_tiktoken_cache[which].priv &&
        cllm_tiktoken_load(&fuzz_tiktoken_cache[which], "tests/data/tiktoken/small.tiktoken", names[which], &err) !=
        CLLM_OK) {
        fprintf(stderr, "fuzz setup: cannot load tests/data/tiktoken/small.tiktoken (run from the repository root): "
                "%s\n", err.msg);
        exit(2);
    }
    return &fuzz_tiktoken_cache[which];
}

/* Frees the cached tokenizers (for a replay that ends; libFuzzer never does). */
static void fuzz_free_tokenizers(void) {
    while (fuzz_tok_cached > 0) cllm_tokenizer_free(&fuzz_tok_cache[--fuzz_tok_cached].tok);
    cllm_tiktoken_free(&fuzz_tiktoken_cache[0]);
    cllm_tiktoken_free(&fuzz_tiktoken_cache[1]);
}

/* A NUL-terminated copy of the input (the parsers of model replies take C strings). */
static char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = (char *)malloc(size + 1);
    if (!s) __builtin_trap();
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* Is s[0..n) valid UTF-8 (the tokenizer accepts nothing else)? */
static int fuzz_utf8(const char *s, size_t n) { return cllm__utf8_check(s, n) == n; }

/* Does s[0..n) contain needle? */
static int fuzz_contains(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle), i;
    for (i = 0; i + k <= n; i++) if (memcmp(s + i, needle, k) == 0) return 1;
    return 0;
}

/* The fake API key of the client-side targets, registered once as a live client's key would be
   (cllm_client_init does it): from then on no message and no received text may hold it. */
static const char fuzz_key[] = "sk-FUZZ0secret1KEY2zq7";
static void fuzz_register_key(void) {
    static int done;
    if (!done) done = cllm__secret_register(fuzz_key);
}

/* A message or a received text: valid UTF-8 and no 8 bytes in a row of the key (nor the whole
   key); a message (one_line) also has no control characters. */
static void fuzz_check_clean(const char *s, int one_line, const char *what) {
    size_t i, k = strlen(fuzz_key), n = s ? strlen(s) : 0;
    char window[9];
    if (!s) return;
    FUZZ_CHECK(fuzz_utf8(s, n), what);
    FUZZ_CHECK(!fuzz_contains(s, n, fuzz_key), what);
    for (i = 0; i + 8 <= k; i++) {
        memcpy(window, fuzz_key + i, 8);
        window[8] = 0;
        FUZZ_CHECK(!fuzz_contains(s, n, window), what);
    }
    for (i = 0; one_line && i < n; i++) FUZZ_CHECK((unsigned char)s[i] >= 0x20 && s[i] != 0x7F, what);
}

/* Decodes ids (skip: leave out special tokens) and checks the text is valid UTF-8 and that the
   streaming decoder, fed one id at a time, gives exactly that text, never running ahead. */
static void fuzz_check_stream(const cllm_tokenizer *tok, const int *ids, int n, int skip) {
    cllm_decode_stream ds;
    cllm_err err;
    char *want, *got;
    size_t want_n, got_n = 0;
    int i;
    FUZZ_CHECK(cllm_tokenizer_decode(tok, ids, n, skip, &want, &want_n, &err) == CLLM_OK, "decode succeeds");
    FUZZ_CHECK(fuzz_utf8(want, want_n), "decode gives valid UTF-8");
    got = (char *)calloc(want_n + 1, 1);
    cllm_decode_stream_init(&ds, tok, skip);
    for (i = 0; i <= n; i++) {
        const char *piece;
        size_t plen;
        cllm_result rc = i < n ? cllm_decode_stream_push(&ds, ids[i], &piece, &plen, &err) : cllm_decode_stream_flush(&ds, &piece, &plen, &err);
        FUZZ_CHECK(rc == CLLM_OK && got_n + plen <= want_n && fuzz_utf8(piece, plen), "each streamed piece is valid UTF-8 and a prefix of decode");
        memcpy(got + got_n, piece, plen);
        got_n += plen;
    }
    FUZZ_CHECK(got_n == want_n && memcmp(got, want, want_n) == 0, "streamed text == decoded text");
    cllm_decode_stream_free(&ds);
    free(got);
    CLLM_FREE(want);
}

/* The number of lines in a file that are not empty. */
static int fuzz_count_lines(const char *path) {
    FILE *f = fopen(path, "rb");
    int c, n = 0, in_line = 0;
    if (!f) return -1;
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n') { n += in_line; in_line = 0; }
        else if (c != '\r') in_line = 1;
    }
    fclose(f);
    return n + in_line;
}
#endif
