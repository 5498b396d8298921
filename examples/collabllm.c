/* collabllm.c - the collabllm.h command-line tool.
   Demonstrates the library end to end; each subcommand is a short function over the public API.

     build/collabllm dump --model DIR --input FILE.jsonl --out FILE.safetensors [--grads]
     build/collabllm tokenize --tokenizer PATH [--add-special-tokens] [--offsets] < texts.jsonl
     build/collabllm detokenize --tokenizer PATH [--skip-special-tokens] < ids.jsonl
     build/collabllm render --tokenizer DIR --messages FILE.json [--add-generation-prompt]

   Run `build/collabllm help` for the list. Formats are documented in data_fmt/. */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

/* ---- flag parsing: --name value pairs and bare --switches ---------------------------------- */

static const char *flag(int argc, char **argv, const char *name) {
    int i;
    for (i = 0; i < argc - 1; i++) if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static int has_switch(int argc, char **argv, const char *name) {
    int i;
    for (i = 0; i < argc; i++) if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

static const char *need(int argc, char **argv, const char *name, const char *usage) {
    const char *v = flag(argc, argv, name);
    if (!v) fprintf(stderr, "missing %s\nusage: %s\n", name, usage);
    return v;
}

static int fail(const cllm_err *err) {
    fprintf(stderr, "error: %s\n", err->msg);
    return 1;
}

/* ---- dump: logits, loss, logps (and gradients) of a checkpoint on a token file ------------- */
/* The interface other implementations use to check themselves against this one; the output
   format is data_fmt/dump.md. */

static int cmd_dump(int argc, char **argv) {
    static const char *usage = "collabllm dump --model DIR --input FILE.jsonl --out FILE.safetensors [--grads]";
    const char *dir = need(argc, argv, "--model", usage), *in = need(argc, argv, "--input", usage), *out = need(argc, argv, "--out", usage);
    int grads = has_switch(argc, argv, "--grads"), rc = 1, n = 0;
    cllm_model m;
    cllm_batch batch;
    cllm_err err;
    cllm_float *logits = NULL;
    cllm_st_entry *entries = NULL;
    if (!dir || !in || !out) return 2;
    if (cllm_model_load(&m, dir, &err) != CLLM_OK) return fail(&err);
    if (cllm_batch_read_jsonl(&batch, in, &err) != CLLM_OK) { cllm_model_free(&m); return fail(&err); }
    logits = (cllm_float *)malloc((size_t)batch.B * batch.T * m.config.vocab_size * sizeof(cllm_float));
    entries = (cllm_st_entry *)calloc(3 + (size_t)cllm_model_tensor_count(&m), sizeof *entries);
    if (!logits || !entries) { fprintf(stderr, "error: out of memory\n"); goto done; }
    if (cllm_forward(&m, &batch, logits, &err) != CLLM_OK) { fail(&err); goto done; }
    strcpy(entries[n].name, "logits"); entries[n].ndim = 3;
    entries[n].shape[0] = batch.B; entries[n].shape[1] = batch.T; entries[n].shape[2] = m.config.vocab_size; entries[n++].data = logits;
    strcpy(entries[n].name, "loss"); entries[n].ndim = 0; entries[n++].data = &m.loss;
    strcpy(entries[n].name, "logps"); entries[n].ndim = 1; entries[n].shape[0] = batch.B; entries[n++].data = m.seq_logp;
    if (grads) {
        if (cllm_zero_grad(&m, &err) != CLLM_OK || cllm_backward(&m, NULL, NULL, &err) != CLLM_OK) { fail(&err); goto done; }
        n += cllm_model_entries(&m, m.grads_memory, "grad.", CLLM_DT_F32, entries + n);
    }
    if (cllm_st_save(out, entries, n, &err) != CLLM_OK) { fail(&err); goto done; }
    fprintf(stderr, "dump: B=%d T=%d V=%d loss=%.6f (%d targets) -> %s (%d tensors)\n",
            batch.B, batch.T, m.config.vocab_size, (double)m.loss, m.n_targets, out, n);
    rc = 0;
done:
    free(logits); free(entries);
    cllm_batch_free(&batch);
    cllm_model_free(&m);
    return rc;
}

/* ---- tokenize / detokenize: JSONL filters over a tokenizer.json -------------------------- */

/* Reads one line of any length from f into *buf (grown as needed); returns its length or -1 at EOF. */
static long read_line(FILE *f, char **buf, size_t *cap) {
    size_t n = 0;
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (n + 2 > *cap) {
            size_t nc = *cap ? 2 * *cap : 4096;
            char *q = (char *)realloc(*buf, nc);
            if (!q) return -1;
            *buf = q; *cap = nc;
        }
        if (c == '\n') break;
        (*buf)[n++] = (char)c;
    }
    if (c == EOF && n == 0) return -1;
    (*buf)[n] = 0;
    return (long)n;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    int i;
    for (i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* Prints {"text": s} for s[0..n), which may contain NUL bytes (cJSON strings cannot). */
static void print_text_line(const char *s, size_t n) {
    size_t i;
    fputs("{\"text\":\"", stdout);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { fputc('\\', stdout); fputc(c, stdout); }
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else fputc(c, stdout);
    }
    fputs("\"}\n", stdout);
}

static void print_json_line(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (s) { fputs(s, stdout); fputc('\n', stdout); cJSON_free(s); }
    cJSON_Delete(o);
}

/* stdin {"text": ...} lines -> stdout {"ids": [...]} (and "offsets": [start, end, ...] in bytes) */
static int cmd_tokenize(int argc, char **argv) {
    static const char *usage = "collabllm tokenize --tokenizer PATH [--add-special-tokens] [--offsets] < texts.jsonl";
    const char *path = need(argc, argv, "--tokenizer", usage);
    int special = has_switch(argc, argv, "--add-special-tokens"), want_offsets = has_switch(argc, argv, "--offsets"), rc = 0;
    cllm_tokenizer tok;
    cllm_err err;
    char *line = NULL;
    size_t cap = 0;
    long len, lineno = 0;
    if (!path) return 2;
    if (cllm_tokenizer_load(&tok, path, &err) != CLLM_OK) return fail(&err);
    while ((len = read_line(stdin, &line, &cap)) >= 0) {
        cJSON *in, *out;
        const cJSON *text;
        int *ids = NULL, *offs = NULL, n = 0;
        lineno++;
        if (len == 0) continue;
        in = cJSON_ParseWithLength(line, (size_t)len);
        text = cJSON_GetObjectItemCaseSensitive(in, "text");
        if (!cJSON_IsString(text)) { fprintf(stderr, "error: stdin line %ld: expected {\"text\": \"...\"}\n", lineno); cJSON_Delete(in); rc = 1; break; }
        if (cllm_tokenizer_encode(&tok, text->valuestring, strlen(text->valuestring), special, &ids, &n, want_offsets ? &offs : NULL, &err) != CLLM_OK) {
            fprintf(stderr, "error: stdin line %ld: %s\n", lineno, err.msg); cJSON_Delete(in); rc = 1; break;
        }
        out = cJSON_CreateObject();
        cJSON_AddItemToObject(out, "ids", int_array(ids, n));
        if (want_offsets) cJSON_AddItemToObject(out, "offsets", int_array(offs, 2 * n));
        print_json_line(out);
        cllm_free_buffer(ids); cllm_free_buffer(offs);
        cJSON_Delete(in);
    }
    free(line);
    cllm_tokenizer_free(&tok);
    return rc;
}

/* stdin {"ids": [...]} lines -> stdout {"text": ...} */
static int cmd_detokenize(int argc, char **argv) {
    static const char *usage = "collabllm detokenize --tokenizer PATH [--skip-special-tokens] < ids.jsonl";
    const char *path = need(argc, argv, "--tokenizer", usage);
    int skip = has_switch(argc, argv, "--skip-special-tokens"), rc = 0;
    cllm_tokenizer tok;
    cllm_err err;
    char *line = NULL;
    size_t cap = 0;
    long len, lineno = 0;
    if (!path) return 2;
    if (cllm_tokenizer_load(&tok, path, &err) != CLLM_OK) return fail(&err);
    while ((len = read_line(stdin, &line, &cap)) >= 0) {
        cJSON *in;
        const cJSON *arr, *it;
        int *ids, n = 0;
        char *text = NULL;
        size_t tlen = 0;
        lineno++;
        if (len == 0) continue;
        in = cJSON_ParseWithLength(line, (size_t)len);
        arr = cJSON_GetObjectItemCaseSensitive(in, "ids");
        if (!cJSON_IsArray(arr)) { fprintf(stderr, "error: stdin line %ld: expected {\"ids\": [...]}\n", lineno); cJSON_Delete(in); rc = 1; break; }
        ids = (int *)malloc(((size_t)cJSON_GetArraySize(arr) + 1) * sizeof(int));
        cJSON_ArrayForEach(it, arr) ids[n++] = cJSON_IsNumber(it) ? (int)it->valuedouble : -1;
        if (cllm_tokenizer_decode(&tok, ids, n, skip, &text, &tlen, &err) != CLLM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
        else print_text_line(text, tlen);
        cllm_free_buffer(text); free(ids);
        cJSON_Delete(in);
        if (rc) break;
    }
    free(line);
    cllm_tokenizer_free(&tok);
    return rc;
}

/* ---- render: a conversation through the chat template, with the trainable mask ------------ */

/* A conversation is an array of {"role", "content"}, or {"messages": [...]} which may also set
   "add_generation_prompt", "enable_thinking" and "date_string" for itself. */
static int render_one(const cllm_tokenizer *tok, const cJSON *conv, cllm_render_opts opts) {
    const cJSON *list = cJSON_IsArray(conv) ? conv : cJSON_GetObjectItemCaseSensitive(conv, "messages"), *it;
    cllm_message *msgs;
    int n = 0, *ids = NULL, n_ids = 0, i, ok;
    unsigned char *mask = NULL;
    char *text = NULL;
    cllm_err err;
    cJSON *out, *m;
    if (!cJSON_IsArray(list)) { fprintf(stderr, "error: expected a list of messages or {\"messages\": [...]}\n"); return 1; }
    if (cJSON_IsObject(conv)) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(conv, "add_generation_prompt"), *t = cJSON_GetObjectItemCaseSensitive(conv, "enable_thinking");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(conv, "date_string");
        if (cJSON_IsBool(g)) opts.add_generation_prompt = cJSON_IsTrue(g);
        if (cJSON_IsBool(t)) opts.enable_thinking = cJSON_IsTrue(t);
        if (cJSON_IsString(d)) opts.date_string = d->valuestring;
    }
    msgs = (cllm_message *)calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof *msgs);
    cJSON_ArrayForEach(it, list) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(it, "role"), *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        msgs[n].role = cJSON_IsString(r) ? r->valuestring : NULL;
        msgs[n].content = cJSON_IsString(c) ? c->valuestring : NULL;
        n++;
    }
    ok = cllm_chat_render(tok, msgs, n, &opts, &text, &ids, &mask, &n_ids, &err) == CLLM_OK;
    free(msgs);
    if (!ok) return fail(&err);
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "text", text);
    cJSON_AddItemToObject(out, "ids", int_array(ids, n_ids));
    m = cJSON_AddArrayToObject(out, "mask");
    for (i = 0; i < n_ids; i++) cJSON_AddItemToArray(m, cJSON_CreateNumber(mask[i]));
    print_json_line(out);
    cllm_free_buffer(text); cllm_free_buffer(ids); cllm_free_buffer(mask);
    return 0;
}

/* FILE.json holds one conversation, or is JSONL with one conversation per line. */
static int cmd_render(int argc, char **argv) {
    static const char *usage = "collabllm render --tokenizer DIR --messages FILE.json [--add-generation-prompt] [--enable-thinking] [--date \"26 Jul 2024\"]";
    const char *dir = need(argc, argv, "--tokenizer", usage), *file = need(argc, argv, "--messages", usage);
    cllm_render_opts opts;
    cllm_tokenizer tok;
    cllm_err err;
    char *data = NULL, *line, *next;
    size_t len;
    int rc = 0;
    cJSON *all;
    if (!dir || !file) return 2;
    memset(&opts, 0, sizeof opts);
    opts.add_generation_prompt = has_switch(argc, argv, "--add-generation-prompt");
    opts.enable_thinking = has_switch(argc, argv, "--enable-thinking");
    opts.date_string = flag(argc, argv, "--date");
    if (cllm_read_file(file, &data, &len, &err) != CLLM_OK) return fail(&err);
    if (cllm_tokenizer_load(&tok, dir, &err) != CLLM_OK) { cllm_free_buffer(data); return fail(&err); }
    all = cJSON_ParseWithLengthOpts(data, len + 1, NULL, 1);      /* one JSON value, then only the NUL */
    if (all) rc = render_one(&tok, all, opts);
    else for (line = data; line && *line && !rc; line = next) {          /* JSONL */
        cJSON *conv;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (!*line) continue;
        conv = cJSON_Parse(line);
        if (!conv) { fprintf(stderr, "error: %s: a line is not JSON\n", file); rc = 1; break; }
        rc = render_one(&tok, conv, opts);
        cJSON_Delete(conv);
    }
    cJSON_Delete(all);
    cllm_free_buffer(data);
    cllm_tokenizer_free(&tok);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;
static const command commands[] = {
    { "dump", cmd_dump, "logits, loss, logps and (--grads) gradients of a checkpoint on token rows" },
    { "tokenize", cmd_tokenize, "stdin {\"text\"} lines -> {\"ids\"} lines with a tokenizer.json" },
    { "detokenize", cmd_detokenize, "stdin {\"ids\"} lines -> {\"text\"} lines" },
    { "render", cmd_render, "a conversation through the chat template -> {\"text\", \"ids\", \"mask\"}" },
};

int main(int argc, char **argv) {
    size_t i;
    if (argc >= 2) for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "usage: collabllm COMMAND [flags]\n\ncommands:\n");
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(stderr, "  %-14s %s\n", commands[i].name, commands[i].help);
    return argc >= 2 && strcmp(argv[1], "help") == 0 ? 0 : 2;
}
