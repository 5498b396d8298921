/* test_tiktoken.c - tiktoken encodings (cllm_tiktoken_*) against npm tiktoken's Rust core, offline.
   tests/data/tiktoken/ holds a small rank file and the ids tiktoken gives for it under cl100k_base's
   and r50k_base's patterns and special tokens, each encoding's pattern string and special tokens as
   the package defines them, and real cl100k_base ids and CollabLLM token counts; all of it is
   written by tests/crosscheck_tiktoken.js (`make crosscheck FIXTURES=1`). OpenAI's cl100k_base file
   is too large to commit: it is checked when the npm cache of `make crosscheck` holds it. Then
   come the rank file's validation (each error names the file and line) and the edge cases. */
/* no-fast-path: tiktoken rank files, no model kernel (make test runs it in its first pass only) */
#include "../collabllm.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#define DATA "tests/data/tiktoken/"

/* A growable NUL-terminated string (zero-initialised), for the rank files and texts built here. */
typedef struct text_buf {
    char  *p;
    size_t n, cap;
} text_buf;

static void put(text_buf *b, const char *s) {
    size_t n = strlen(s);
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->p = (char *)realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n + 1);
    b->n += n;
}

/* Encodes the "text" of every row and compares with rows[i][key]; also checks that the token
   bytes are the text at the offsets, decode(encode(x)) == x, and the counter's count. */
static void check_ids(const char *label, const cllm_tiktoken *tk, cJSON **rows, int n_rows, const char *key) {
    cllm_token_counter counter;
    char line[200];
    int ok_ids = 0;
    int ok_offsets = 0;
    int ok_round = 0;
    int ok_count = 0;
    int r;
    counter.count = cllm_tiktoken_count;
    counter.ctx = (void *)tk;
    for (r = 0; r < n_rows; r++) {
        const char *text = cJSON_GetObjectItem(rows[r], "text")->valuestring;
        size_t len = strlen(text);
        int *ids = NULL;
        int *offsets = NULL;
        int n = 0;
        int k;
        int offsets_ok = 1;
        char *back = NULL;
        size_t back_len = 0;
        cllm_err err;
        if (cllm_tiktoken_encode(tk, text, len, &ids, &n, &offsets, &err) != CLLM_OK) {
            printf("    %s: %s\n", label, err.msg);
            continue;
        }
        if (check_same_ids(cJSON_GetObjectItem(rows[r], key), ids, n)) ok_ids++;
        else if (r - ok_ids < 5) printf("    differs on row %d\n", r + 1);
        for (k = 0; k < n; k++) {
            size_t n_bytes;
            const char *bytes = cllm_tiktoken_id_bytes(tk, ids[k], &n_bytes);
            int start = offsets[2 * k];
            int end = offsets[2 * k + 1];
            int contiguous = start == (k ? offsets[2 * k - 1] : 0);
            int same_bytes = bytes && (size_t)(end - start) == n_bytes && memcmp(text + start, bytes, n_bytes) == 0;
            if (!contiguous || !same_bytes) offsets_ok = 0;
        }
        if (offsets_ok && (n == 0 || (size_t)offsets[2 * n - 1] == len)) ok_offsets++;
        if (cllm_tiktoken_decode(tk, ids, n, 0, &back, &back_len, &err) == CLLM_OK && back_len == len &&
            memcmp(back, text, len) == 0) {
            ok_round++;
        }
        if (cllm_count_tokens(&counter, text) == n) ok_count++;
        cllm_free_buffer(back);
        cllm_free_buffer(ids);
        cllm_free_buffer(offsets);
    }
    snprintf(line, sizeof line, "%s: ids == tiktoken's encode_ordinary (%d/%d)", label, ok_ids, n_rows);
    check_true(line, ok_ids == n_rows && n_rows > 0);
    snprintf(line, sizeof line, "%s: offsets cover each token's bytes, in order (%d/%d)", label, ok_offsets, n_rows);
    check_true(line, ok_offsets == n_rows);
    snprintf(line, sizeof line, "%s: decode(encode(x)) == x (%d/%d)", label, ok_round, n_rows);
    check_true(line, ok_round == n_rows);
    snprintf(line, sizeof line, "%s: cllm_count_tokens through a cllm_token_counter == n ids (%d/%d)", label, ok_count,
             n_rows);
    check_true(line, ok_count == n_rows);
}

/* The pattern string and the special tokens of an encoding equal npm tiktoken's (encodings.json). */
static void check_encoding_definition(const cllm_tiktoken *tk, const cJSON *encodings) {
    const cJSON *def = cJSON_GetObjectItem(encodings, tk->encoding);
    const cJSON *specials = cJSON_GetObjectItem(def, "special_tokens");
    const cJSON *special;
    char line[200];
    int specials_ok = 1;
    snprintf(line, sizeof line, "%s: the split pattern is the string npm tiktoken gives (pat_str)", tk->encoding);
    check_true(line, def && strcmp(cJSON_GetObjectItem(def, "pat_str")->valuestring, tk->pattern) == 0);
    cJSON_ArrayForEach(special, specials) {
        size_t len;
        const char *bytes = cllm_tiktoken_id_bytes(tk, special->valueint, &len);
        if (!bytes || len != strlen(special->string) || memcmp(bytes, special->string, len) != 0) specials_ok = 0;
    }
    snprintf(line, sizeof line, "%s: special tokens at tiktoken's ids, decoding to their text (%d)", tk->encoding,
             cJSON_GetArraySize(specials));
    check_true(line, def && specials_ok);
}

static void check_small_file(void) {
    static const char *names[] = { "cl100k_base", "r50k_base", "p50k_base", "p50k_edit" };
    char *text = NULL;
    size_t len;
    cJSON *encodings;
    cJSON **rows;
    int n_rows;
    size_t k;
    cllm_err err;
    printf("-- the small rank file (tests/data/tiktoken/small.tiktoken) under each encoding\n");
    if (cllm_read_file(DATA "encodings.json", &text, &len, &err) != CLLM_OK) {
        check_true(err.msg, 0);
        return;
    }
    encodings = cJSON_Parse(text);
    cllm_free_buffer(text);
    rows = check_read_jsonl(DATA "small_expected.jsonl", &n_rows);
    for (k = 0; k < sizeof names / sizeof names[0]; k++) {
        cllm_tiktoken tk;
        char label[200];
        snprintf(label, sizeof label, "load small.tiktoken as %s", names[k]);
        if (!check_true(label, cllm_tiktoken_load(&tk, DATA "small.tiktoken", names[k], &err) == CLLM_OK)) {
            printf("    %s\n", err.msg);
            continue;
        }
        check_encoding_definition(&tk, encodings);
        if (k < 2) {
            snprintf(label, sizeof label, "small.tiktoken as %s", names[k]);
            check_ids(label, &tk, rows, n_rows, names[k]);
        }
        cllm_tiktoken_free(&tk);
    }
    check_free_rows(rows, n_rows);
    cJSON_Delete(encodings);
}

/* A rank file in memory: every byte (in order, ranks 0..255), then the given lines. */
static char *rank_file(const char *tail) {
    text_buf b;
    int i;
    memset(&b, 0, sizeof b);
    for (i = 0; i < 256; i++) {
        static const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char line[32];
        snprintf(line, sizeof line, "%c%c== %d\n", alphabet[i >> 2], alphabet[(i & 3) << 4], i);
        put(&b, line);
    }
    put(&b, tail);
    return b.p;
}

static void check_bad_files(void) {
    static const struct { const char *what, *tail, *message; cllm_result code; } cases[] = {
        { "a rank twice", "YWI= 256\nYWM= 256\n", "bad.tiktoken:258: rank 256 appears again (first on line 257)",
          CLLM_ERR_FORMAT },
        { "a token twice", "YWI= 256\nYWI= 257\n",
          "bad.tiktoken:258: the token 'YWI=' appears again (first on line 257, rank 256)", CLLM_ERR_FORMAT },
        { "a character outside base64", "Y*I= 256\n", "bad.tiktoken:257: the token 'Y*I=' is not valid base64: a "
          "character outside", CLLM_ERR_FORMAT },
        { "a length not a multiple of 4", "YWI 256\n", "bad.tiktoken:257: the token 'YWI' is not valid base64: its "
          "length", CLLM_ERR_FORMAT },
        { "padding inside", "YQ==YWI= 256\n", "'=' padding may only end it", CLLM_ERR_FORMAT },
        { "padding too early", "Y=== 256\n", "'=' padding may only end it", CLLM_ERR_FORMAT },
        { "non-canonical base64", "YWJ= 256\n", "the bits before the padding are not 0", CLLM_ERR_FORMAT },
        { "an empty token", " 256\n", "bad.tiktoken:257: the token '' is not valid base64: it is empty",
          CLLM_ERR_FORMAT },
        { "no rank", "YWI=\n", "bad.tiktoken:257: expected 'BASE64 RANK'", CLLM_ERR_FORMAT },
        { "two spaces", "YWI=  256\n", "bad.tiktoken:257: the rank ' 256' is not a decimal number", CLLM_ERR_FORMAT },
        { "a negative rank", "YWI= -1\n", "the rank '-1' is not a decimal number", CLLM_ERR_FORMAT },
        { "a rank of 9 digits", "YWI= 123456789\n", "bad.tiktoken:257: the rank '123456789' must be 1 to 8 digits",
          CLLM_ERR_FORMAT },
        { "a rank beyond 2^24", "YWI= 16777216\n", "bad.tiktoken:257: rank 16777216 is too large", CLLM_ERR_LIMIT },
        { "a rank far beyond the file", "YWI= 400\n", "bad.tiktoken:257: rank 400, but the file has only 257 tokens",
          CLLM_ERR_FORMAT },
        { "a gap in the ranks", "YWI= 258\n", "bad.tiktoken: no token has rank 256: ranks must run 0, 1, 2",
          CLLM_ERR_FORMAT },
    };
    size_t k;
    printf("-- rank files that must be refused, each naming the file and line\n");
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *text = rank_file(cases[k].tail);
        cllm_tiktoken tk;
        cllm_err err;
        cllm_result rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "dir/bad.tiktoken", "cl100k_base", &err);
        char label[1024];
        snprintf(label, sizeof label, "%s: %s", cases[k].what, rc == CLLM_OK ? "(loaded)" : err.msg);
        check_true(label, rc == cases[k].code && strstr(err.msg, cases[k].message) != NULL && tk.priv == NULL);
        cllm_tiktoken_free(&tk);
        free(text);
    }
}

/* A synthetic rank file of n_ranks ranks (every byte, then distinct two- and three-byte tokens),
   leaving out the rank `skip` (-1: none). */
static char *synthetic_rank_file(int n_ranks, int skip) {
    text_buf b;
    int rank;
    int made = 0;
    memset(&b, 0, sizeof b);
    for (rank = 0; rank < n_ranks; rank++) {
        unsigned char bytes[3];
        size_t n_bytes;
        char line[64];
        char *p = line;
        size_t i;
        static const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        if (rank == skip) continue;
        if (rank < 256) {
            bytes[0] = (unsigned char)rank;
            n_bytes = 1;
        } else {
            bytes[0] = (unsigned char)(made & 0xFF);
            bytes[1] = (unsigned char)((made >> 8) & 0xFF);
            bytes[2] = (unsigned char)'z';
            n_bytes = made < 0x10000 ? 3 : 2;
            made++;
        }
        for (i = 0; i < n_bytes; i += 3) {
            unsigned long v = (unsigned long)bytes[i] << 16;
            size_t left = n_bytes - i;
            if (left > 1) v |= (unsigned long)bytes[i + 1] << 8;
            if (left > 2) v |= bytes[i + 2];
            *p++ = alphabet[v >> 18 & 63];
            *p++ = alphabet[v >> 12 & 63];
            *p++ = left > 1 ? alphabet[v >> 6 & 63] : '=';
            *p++ = left > 2 ? alphabet[v & 63] : '=';
        }
        snprintf(p, sizeof line - (size_t)(p - line), " %d\n", rank);
        put(&b, line);
    }
    return b.p;
}

static void check_load_errors(void) {
    cllm_tiktoken tk;
    cllm_err err;
    char *text;
    char label[1024];
    cllm_result rc;
    FILE *f;
    printf("-- naming the encoding, special ids, missing bytes, files\n");
    text = synthetic_rank_file(255, -1);
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "x/cl100k_base.tiktoken", NULL, &err);
    snprintf(label, sizeof label, "byte 0xFF missing: %s", err.msg);
    check_true(label, rc == CLLM_ERR_FORMAT && strstr(err.msg, "byte 0xFF is not a token") != NULL);
    free(text);

    text = rank_file("");
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "x/cl100k_base.tiktoken", NULL, &err);
    check_true("256 bytes, CR-less lines: loads as cl100k_base (from the name)", rc == CLLM_OK &&
               strcmp(tk.encoding, "cl100k_base") == 0 && tk.n_ranks == 256 && tk.n_ids == 100277);
    cllm_tiktoken_free(&tk);
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "x/foo.tiktoken", NULL, &err);
    snprintf(label, sizeof label, "an unknown name: %s", err.msg);
    check_true(label, rc == CLLM_ERR_UNSUPPORTED && strstr(err.msg, "x/foo.tiktoken: encoding 'foo' is not supported"));
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "x/o200k_base.tiktoken", NULL, &err);
    check_true("o200k_base is refused, saying why",
               rc == CLLM_ERR_UNSUPPORTED && strstr(err.msg, "o200k_base's split"));
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "cache/9b5ad71b2ce5302211f9c61530b329a4922fc6a4", NULL, &err);
    snprintf(label, sizeof label, "a file named otherwise, without an encoding: %s", err.msg);
    check_true(label, rc == CLLM_ERR_ARG && strstr(err.msg, "rename the file or name the encoding"));
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "cache/9b5ad71b2ce5302211f9c61530b329a4922fc6a4", "r50k_base",
                                 &err);
    check_true("... and with the encoding named: loads", rc == CLLM_OK && strcmp(tk.encoding, "r50k_base") == 0);
    cllm_tiktoken_free(&tk);
    free(text);

    text = rank_file("\r\n\r\nYWI= 256\r\n\n");
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "crlf.tiktoken", "r50k_base", &err);
    check_true("CR LF line ends and empty lines (skipped, as tiktoken skips them)", rc == CLLM_OK && tk.n_ranks == 257);
    cllm_tiktoken_free(&tk);
    free(text);
    rc = cllm_tiktoken_load_text(&tk, "\n\n", 2, "empty.tiktoken", "r50k_base", &err);
    check_true("no tokens: refused", rc == CLLM_ERR_FORMAT && strstr(err.msg, "empty.tiktoken: no tokens"));
    {
        text_buf long_line;
        int i;
        memset(&long_line, 0, sizeof long_line);
        for (i = 0; i < 344; i++) put(&long_line, "YWJj");     /* 1032 bytes */
        put(&long_line, " 256\n");
        text = rank_file(long_line.p);
        free(long_line.p);
        rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "long.tiktoken", "r50k_base", &err);
        snprintf(label, sizeof label, "a token over 1024 bytes: %s", err.msg);
        check_true(label, rc == CLLM_ERR_LIMIT && strstr(err.msg, "long.tiktoken:257: a token of 1032 bytes"));
        free(text);
    }

    /* r50k_base's <|endoftext|> is 50256: a rank file that gives that rank to a token is refused;
       p50k_base's own file skips that rank, which is allowed */
    text = synthetic_rank_file(50257, -1);
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "r50k_base.tiktoken", NULL, &err);
    snprintf(label, sizeof label, "a rank that is a special token's id: %s", err.msg);
    check_true(label, rc == CLLM_ERR_FORMAT && strstr(err.msg, "r50k_base.tiktoken:50257: rank 50256 is the id of a "
                                                               "special token of r50k_base"));
    free(text);
    text = synthetic_rank_file(50281, 50256);
    rc = cllm_tiktoken_load_text(&tk, text, strlen(text), "p50k_edit.tiktoken", NULL, &err);
    check_true("p50k_edit: ranks 0..50280 without 50256 (<|endoftext|>'s id) load; 4 special tokens up to 50283",
               rc == CLLM_OK && tk.n_ranks == 50280 && tk.n_ids == 50284);
    cllm_tiktoken_free(&tk);
    free(text);

    rc = cllm_tiktoken_load(&tk, "tests/data/tiktoken/no-such-file.tiktoken", NULL, &err);
    check_true("a missing file: an i/o error naming it", rc == CLLM_ERR_IO && strstr(err.msg, "no-such-file.tiktoken"));
    f = fopen("build/test_tiktoken_huge.tiktoken", "wb");
    if (f) {
        fseek(f, 65L << 20, SEEK_SET);                /* sparse: 65 MB on paper, nothing on disk */
        fputc('\n', f);
        fclose(f);
    }
    rc = cllm_tiktoken_load(&tk, "build/test_tiktoken_huge.tiktoken", "cl100k_base", &err);
    snprintf(label, sizeof label, "a file over 64 MB is refused before it is read: %s", err.msg);
    check_true(label, rc == CLLM_ERR_LIMIT && strstr(err.msg, "a rank file has at most"));
    remove("build/test_tiktoken_huge.tiktoken");
    {
        cllm_tokenizer tok;
        rc = cllm_tokenizer_load(&tok, DATA "small.tiktoken", &err);
        snprintf(label, sizeof label, "cllm_tokenizer_load on a .tiktoken file says what it is: %s", err.msg);
        check_true(label, rc == CLLM_ERR_UNSUPPORTED && strstr(err.msg, "is a tiktoken rank file"));
    }
}

static void check_api_edges(void) {
    cllm_tiktoken tk;
    cllm_tiktoken none;
    cllm_err err;
    int *ids = NULL;
    int n = -1;
    char *text = NULL;
    char label[200];
    int special[2] = { 100257, 100276 };
    int unknown[2] = { 0, 100256 };
    text_buf big;
    int i;
    printf("-- encode and decode: errors, special ids, long inputs\n");
    memset(&none, 0, sizeof none);
    check_true("encode with no encoding loaded: refused", cllm_tiktoken_encode(&none, "a", 1, &ids, &n, NULL, &err) ==
               CLLM_ERR_ARG && ids == NULL && n == 0);
    cllm_tiktoken_free(&none);
    if (cllm_tiktoken_load(&tk, DATA "small.tiktoken", "cl100k_base", &err) != CLLM_OK) {
        check_true(err.msg, 0);
        return;
    }
    check_true("invalid UTF-8 is refused, naming the byte",
               cllm_tiktoken_encode(&tk, "ab\xff", 3, &ids, &n, NULL, &err) == CLLM_ERR_FORMAT &&
               strstr(err.msg, "byte 3"));
    check_true("... and counts as 0 tokens", cllm_tiktoken_count(&tk, "ab\xff") == 0);
    check_true("the empty text has no tokens", cllm_tiktoken_encode(&tk, "", 0, &ids, &n, NULL, &err) == CLLM_OK &&
               n == 0);
    cllm_free_buffer(ids);
    check_true("special ids decode to their text", cllm_tiktoken_decode(&tk, special, 2, 0, &text, NULL, &err) ==
               CLLM_OK && strcmp(text, "<|endoftext|><|endofprompt|>") == 0);
    cllm_free_buffer(text);
    check_true("... and are left out with skip_special", cllm_tiktoken_decode(&tk, special, 2, 1, &text, NULL, &err) ==
               CLLM_OK && strcmp(text, "") == 0);
    cllm_free_buffer(text);
    snprintf(label, sizeof label, "an id that is no token is an error, as in tiktoken");
    check_true(label, cllm_tiktoken_decode(&tk, unknown, 2, 0, &text, NULL, &err) == CLLM_ERR_ARG && text == NULL &&
               strstr(err.msg, "id 100256 (position 1) is not a token of cl100k_base"));
    check_true("special-token text is ordinary text (encode_ordinary): more than one token",
               cllm_tiktoken_count(&tk, "<|endoftext|>") > 1);
    /* long pieces: the merge queue keeps them fast (tiktoken's linear scan would be quadratic) */
    memset(&big, 0, sizeof big);
    for (i = 0; i < 200000; i++) put(&big, "a");
    put(&big, " ");
    for (i = 0; i < 100000; i++) put(&big, " ");
    put(&big, "x\n");
    if (cllm_tiktoken_encode(&tk, big.p, big.n, &ids, &n, NULL, &err) == CLLM_OK) {
        char *back = NULL;
        size_t back_len = 0;
        check_true("a 300 KB text of two pieces encodes, and decodes back", n > 0 &&
                   cllm_tiktoken_decode(&tk, ids, n, 0, &back, &back_len, &err) == CLLM_OK && back_len == big.n &&
                   memcmp(back, big.p, big.n) == 0);
        cllm_free_buffer(back);
    } else {
        check_true(err.msg, 0);
    }
    cllm_free_buffer(ids);
    free(big.p);
    cllm_tiktoken_free(&tk);
}

/* OpenAI's cl100k_base, as `make crosscheck` writes it into the npm cache. */
static void check_real_cl100k(void) {
    const char *cache = getenv("COLLABLLM_NPM_CACHE");
    const char *home = getenv("HOME");
    char path[1200];
    cllm_tiktoken tk;
    cllm_err err;
    cJSON **rows;
    int n_rows;
    int r;
    int ok_counts = 0;
    cllm_token_counter counter;
    FILE *f;
    if (cache) snprintf(path, sizeof path, "%s/tiktoken/cl100k_base.tiktoken", cache);
    else snprintf(path, sizeof path, "%s/.cache/collabllm-npm/tiktoken/cl100k_base.tiktoken", home ? home : ".");
    if (!(f = fopen(path, "rb"))) {
        printf("  (no %s: OpenAI's cl100k_base is checked after `make crosscheck` has written it)\n", path);
        return;
    }
    fclose(f);
    printf("-- cl100k_base (OpenAI's file) from %s\n", path);
    if (!check_true("cl100k_base (OpenAI's file): loads: 100256 ranks, ids up to 100276",
                    cllm_tiktoken_load(&tk, path, NULL, &err) == CLLM_OK && tk.n_ranks == 100256 &&
                    tk.n_ids == 100277)) {
        printf("    %s\n", err.msg);
        return;
    }
    rows = check_read_jsonl(DATA "cl100k_expected.jsonl", &n_rows);
    check_ids("cl100k_base (OpenAI's file)", &tk, rows, n_rows, "ids");
    check_free_rows(rows, n_rows);
    /* CollabLLM's counts: v1's reward counts the candidate and the future joined by "\n"; v2's
       token_amount the assistant messages of the session joined by " "; v1's evaluation each
       message followed by " " */
    counter.count = cllm_tiktoken_count;
    counter.ctx = &tk;
    rows = check_read_jsonl(DATA "cl100k_counts.jsonl", &n_rows);
    for (r = 0; r < n_rows; r++) {
        const cJSON *messages = cJSON_GetObjectItem(rows[r], "messages");
        int candidate = cJSON_GetObjectItem(rows[r], "candidate")->valueint;
        text_buf v1 = { 0 }, v2 = { 0 }, read = { 0 }, typed = { 0 };
        const cJSON *m;
        int index = 0;
        int ok;
        cJSON_ArrayForEach(m, messages) {
            const char *role = cJSON_GetObjectItem(m, "role")->valuestring;
            const char *content = cJSON_GetObjectItem(m, "content")->valuestring;
            if (index >= candidate) {
                if (index > candidate) put(&v1, "\n");
                put(&v1, content);
            }
            if (strcmp(role, "assistant") == 0) {
                if (v2.n) put(&v2, " ");
                put(&v2, content);
                put(&read, content);
                put(&read, " ");
            }
            if (strcmp(role, "user") == 0) {
                put(&typed, content);
                put(&typed, " ");
            }
            index++;
        }
        ok = cllm_count_tokens(&counter, v1.p) == cJSON_GetObjectItem(rows[r], "v1_reward")->valueint &&
             cllm_count_tokens(&counter, v2.p) == cJSON_GetObjectItem(rows[r], "v2_token_amount")->valueint &&
             cllm_count_tokens(&counter, read.p) == cJSON_GetObjectItem(rows[r], "v1_eval_assistant")->valueint &&
             cllm_count_tokens(&counter, typed.p) == cJSON_GetObjectItem(rows[r], "v1_eval_user")->valueint;
        {   /* the library's own token_amount metric on that session gives v2's count / 1000 */
            cllm_conv conv = { 0 };
            cllm_session ses;
            cllm_goal goal = { NULL, "p", NULL };
            cllm_err err;
            double amount = -1;
            memset(&ses, 0, sizeof ses);
            cJSON_ArrayForEach(m, messages)
                cllm_conv_push(&conv, cJSON_GetObjectItem(m, "role")->valuestring,
                               cJSON_GetObjectItem(m, "content")->valuestring, &err);
            ses.goal = &goal;
            ses.conv = &conv;
            ses.n_history = candidate;
            cllm_metric_token_amount(&counter, &ses, 1, &amount, &err);
            ok = ok && amount == cJSON_GetObjectItem(rows[r], "v2_token_amount")->valueint / 1000.0;
            cllm_conv_free(&conv);
        }
        if (ok) ok_counts++;
        else printf("    conversation %d: v1 %d, v2 %d\n", r, cllm_count_tokens(&counter, v1.p),
                    cllm_count_tokens(&counter, v2.p));
        free(v1.p);
        free(v2.p);
        free(read.p);
        free(typed.p);
    }
    {
        char label[200];
        snprintf(label, sizeof label, "CollabLLM's counts (v1 reward, v2 token_amount, v1 eval; the token_amount "
                 "metric) == tiktoken's on %d/%d conversations", ok_counts, n_rows);
        check_true(label, ok_counts == n_rows && n_rows > 0);
    }
    check_free_rows(rows, n_rows);
    cllm_tiktoken_free(&tk);
}

int main(void) {
    (void)check_tensor_d;
    check_small_file();
    check_bad_files();
    check_load_errors();
    check_api_edges();
    check_real_cl100k();
    return check_summary("test_tiktoken");
}
