/* collabllm.c - the collabllm.h command-line tool.
   Demonstrates the library end to end; each subcommand is a short function over the public API.

     build/collabllm dump --model DIR --input FILE.jsonl --out FILE.safetensors [--grads]
     build/collabllm generate-ids --model DIR --prompt-ids 1,2,3 [--n N] [--temperature T] ...
     build/collabllm ref NAME < input.json > output.json
     build/collabllm simulate --tasks T.jsonl --out C.jsonl --user-model M --assistant-model M
     build/collabllm tokenize --tokenizer PATH [--add-special-tokens] [--offsets] < texts.jsonl
     build/collabllm detokenize --tokenizer PATH [--skip-special-tokens] < ids.jsonl
     build/collabllm render --tokenizer DIR --messages FILE.json [--add-generation-prompt]
     build/collabllm sft --model DIR --data ROWS.jsonl --out DIR [--lora-r 32 ...] [--resume]
     build/collabllm dpo --model DIR --data PAIRS.jsonl --out DIR [--ref DIR | --precompute-ref] [--loss ipo]

   Run `build/collabllm help` for the list. Formats are documented in data_fmt/. */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#if !defined(_WIN32)
#include <sys/stat.h>
#endif

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

/* A number flag in [lo, hi]; absent -> def. Returns 0 (after a message) if it does not parse. */
static int num_flag(int argc, char **argv, const char *name, double lo, double hi, double def, double *out) {
    const char *v = flag(argc, argv, name);
    char *end;
    *out = def;
    if (!v) return 1;
    *out = strtod(v, &end);
    if (end == v || *end || !(*out >= lo && *out <= hi)) { fprintf(stderr, "%s: '%s' is not a number in [%g, %g]\n", name, v, lo, hi); return 0; }
    return 1;
}

/* "1,2,3" -> a malloc'd int array; NULL (after a message) if an entry is not an int in [lo, hi]. */
static int *int_list(const char *name, const char *text, long lo, long hi, int *n) {
    int *out = (int *)malloc((strlen(text) / 2 + 1) * sizeof(int));
    const char *p = text;
    char *end;
    *n = 0;
    while (out && *p) {
        long x = strtol(p, &end, 10);
        if (end == p || x < lo || x > hi || (*end && *end != ',')) { fprintf(stderr, "%s: '%s' must be comma-separated integers in [%ld, %ld]\n", name, text, lo, hi); free(out); return NULL; }
        out[(*n)++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (out && *n == 0) { fprintf(stderr, "%s: empty list\n", name); free(out); return NULL; }
    return out;
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

/* ---- generate-ids: sample continuations of a prompt given as token ids ------------------------ */
/* Token ids in, JSON lines out (data_fmt/generate-ids.md); temperature 0 means greedy. Text
   prompts (`generate --messages`) need the tokenizer and chat templates. */

static int cmd_generate_ids(int argc, char **argv) {
    static const char *usage = "collabllm generate-ids --model DIR --prompt-ids 1,2,3 [--n N] [--temperature T (0 = greedy)] "
                               "[--top-k K] [--top-p P] [--max-new-tokens M] [--seed S] [--eos-ids 2,7 | --ignore-eos]";
    const char *dir = need(argc, argv, "--model", usage), *ptext = need(argc, argv, "--prompt-ids", usage), *etext = flag(argc, argv, "--eos-ids");
    double n, temp, top_k, top_p, max_new, seed;
    int *prompt = NULL, *eos = NULL, n_prompt = 0, n_eos = 0, rc = 1, s, t;
    cllm_model m;
    cllm_gen_config g;
    cllm_completion *out = NULL;
    cllm_err err;
    if (!dir || !ptext) return 2;
    if (!num_flag(argc, argv, "--n", 1, 65536, 1, &n) || !num_flag(argc, argv, "--temperature", 0, 1e6, 1, &temp) ||
        !num_flag(argc, argv, "--top-k", 0, 1e9, 0, &top_k) || !num_flag(argc, argv, "--top-p", 1e-9, 1, 1, &top_p) ||
        !num_flag(argc, argv, "--max-new-tokens", 1, 1e7, 256, &max_new) || !num_flag(argc, argv, "--seed", 0, 9007199254740992.0, 0, &seed))
        return 2;
    if (!(prompt = int_list("--prompt-ids", ptext, 0, 2147483647L, &n_prompt))) return 2;
    if (etext && !(eos = int_list("--eos-ids", etext, 0, 2147483647L, &n_eos))) { free(prompt); return 2; }
    memset(&g, 0, sizeof g);
    g.sampler.greedy = temp == 0;
    g.sampler.temperature = (float)temp;
    g.sampler.top_k = (int)top_k;
    g.sampler.top_p = (float)top_p;
    g.sampler.seed = (uint64_t)seed;
    g.max_new_tokens = (int)max_new;
    g.eos_ids = eos; g.n_eos = n_eos;
    g.ignore_eos = has_switch(argc, argv, "--ignore-eos");
    if (cllm_model_load(&m, dir, &err) != CLLM_OK) { free(prompt); free(eos); return fail(&err); }
    out = (cllm_completion *)calloc((size_t)n, sizeof *out);
    if (!out) fprintf(stderr, "error: out of memory\n");
    else if (cllm_generate(&m, prompt, n_prompt, (int)n, &g, out, &err) != CLLM_OK) fail(&err);
    else {
        for (s = 0; s < (int)n; s++) {
            cJSON *o = cJSON_CreateObject(), *ids, *lps;
            char *line, num[32];
            cJSON_AddNumberToObject(o, "sample", s);
            ids = cJSON_AddArrayToObject(o, "ids");
            for (t = 0; t < out[s].n; t++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(out[s].ids[t]));
            lps = cJSON_AddArrayToObject(o, "logprobs");
            for (t = 0; t < out[s].n; t++) {          /* 9 significant digits: all a float holds */
                snprintf(num, sizeof num, "%.9g", (double)out[s].logprobs[t]);
                cJSON_AddItemToArray(lps, cJSON_CreateNumber(strtod(num, NULL)));
            }
            cJSON_AddStringToObject(o, "finish", cllm_finish_reason_string(out[s].finish));
            line = cJSON_PrintUnformatted(o);
            if (line) printf("%s\n", line);
            cJSON_free(line);
            cJSON_Delete(o);
        }
        rc = 0;
    }
    cllm_completions_free(out, out ? (int)n : 0);
    free(out); free(prompt); free(eos);
    cllm_model_free(&m);
    return rc;
}

/* ---- ref: the pure training math (DPO, GAE, PPO, GRPO, AdamW, BLEU) as JSON in, JSON out ---- */
/* One JSON object on stdin, the result object on stdout; shapes in data_fmt/ref.md. */

static int cmd_ref(int argc, char **argv) {
    char *input = NULL, *output = NULL;
    size_t len = 0, cap = 0;
    cllm_err err;
    int rc;
    if (argc < 1) { fprintf(stderr, "usage: collabllm ref dpo|gae|ppo-loss|ppo-rewards|grpo|adamw|bleu < input.json\n"); return 2; }
    for (;;) {                                   /* read all of stdin */
        size_t got;
        if (len + 4096 + 1 > cap) {
            char *grown = (char *)realloc(input, cap = 2 * cap + 4096 + 1);
            if (!grown) { free(input); fprintf(stderr, "error: out of memory\n"); return 1; }
            input = grown;
        }
        got = fread(input + len, 1, 4096, stdin);
        len += got;
        if (got == 0) break;
    }
    rc = cllm_ref_json(argv[0], input, len, &output, &err) == CLLM_OK;
    free(input);
    if (!rc) return fail(&err);
    printf("%s\n", output);
    cllm_free_buffer(output);
    return 0;
}

/* ---- simulate: conversations between a policy and a user simulator on a task file ---------- */
/* Both sides are models behind OpenAI-compatible endpoints here; a local policy plugs in as
   another cllm_assistant. Formats: data_fmt/task.md in, data_fmt/conversation.md out. */

static double flag_num(int argc, char **argv, const char *name, double def) {
    const char *v = flag(argc, argv, name);
    return v ? atof(v) : def;
}

/* A client for one side: --{side}-base-url / --{side}-api-key-env, else the shared flags. */
static int make_client(cllm_client *c, int argc, char **argv, const char *side, cllm_err *err) {
    cllm_client_config cfg;
    char name[64];
    memset(&cfg, 0, sizeof cfg);
    snprintf(name, sizeof name, "--%s-base-url", side);
    cfg.base_url = flag(argc, argv, name) ? flag(argc, argv, name) : flag(argc, argv, "--base-url");
    snprintf(name, sizeof name, "--%s-api-key-env", side);
    cfg.api_key_env = flag(argc, argv, name) ? flag(argc, argv, name) : flag(argc, argv, "--api-key-env");
    cfg.max_concurrency = (int)flag_num(argc, argv, "--concurrency", 0);
    cfg.timeout_ms = (long)flag_num(argc, argv, "--timeout-ms", 0);
    cfg.max_retries = (int)flag_num(argc, argv, "--retries", 0);
    cfg.insecure = has_switch(argc, argv, "--insecure");
    return cllm_client_init(c, &cfg, err) == CLLM_OK;
}

/* One output line: the task's own fields, then messages, terminated, error and provenance. */
static cJSON *conversation_record(const cllm_task *t, const cllm_conv *conv, const cllm_sim_status *st, cJSON *provenance) {
    cJSON *rec = cJSON_Duplicate(t->json, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "messages");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "terminated");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "error");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "simulation");
    cJSON_AddItemToObject(rec, "messages", cllm_conv_to_json(conv));
    cJSON_AddBoolToObject(rec, "terminated", st->terminated);
    if (st->code != CLLM_OK) cJSON_AddStringToObject(rec, "error", st->err.msg);
    cJSON_AddItemToObject(rec, "simulation", cJSON_Duplicate(provenance, 1));
    return rec;
}

static int cmd_simulate(int argc, char **argv) {
    static const char *usage =
        "collabllm simulate --tasks TASKS.jsonl --out CONVS.jsonl --user-model M --assistant-model M\n"
        "    [--task-desc TEXT] [--max-messages 14] [--limit N] [--show-reference] [--termination TEXT]\n"
        "    [--assistant-system TEXT] [--user-temperature 1] [--assistant-temperature 0.8] [--seed N] [--json-mode]\n"
        "    [--base-url URL] [--api-key-env NAME] [--user-base-url URL] [--user-api-key-env NAME]\n"
        "    [--assistant-base-url URL] [--assistant-api-key-env NAME] [--concurrency 16] [--timeout-ms N] [--retries N] [--insecure]";
    const char *tasks_path = need(argc, argv, "--tasks", usage), *out = need(argc, argv, "--out", usage);
    const char *user_model = need(argc, argv, "--user-model", usage), *asst_model = need(argc, argv, "--assistant-model", usage);
    const char *task_desc = flag(argc, argv, "--task-desc") ? flag(argc, argv, "--task-desc") : "a task";
    int max_messages = (int)flag_num(argc, argv, "--max-messages", 14), limit = (int)flag_num(argc, argv, "--limit", 0);
    int show_ref = has_switch(argc, argv, "--show-reference"), n = 0, n_read = 0, i, rc = 1, failed = 0, terminated = 0;
    long long seed = (long long)flag_num(argc, argv, "--seed", 0);
    cllm_task *tasks = NULL;
    cllm_client user_client, asst_client;
    cllm_llm_sim_config sim_cfg;
    cllm_api_assistant_config asst_cfg;
    cllm_llm_sim sim;
    cllm_api_assistant asst;
    cllm_goal *goals = NULL;
    cllm_conv *convs = NULL;
    cllm_sim_status *status = NULL;
    cJSON *prov = NULL;
    char *line;
    size_t total = 0, cap = 1 << 16;
    char *buf = NULL;
    cllm_err err;
    double messages = 0;
    if (!tasks_path || !out || !user_model || !asst_model) return 2;
    memset(&user_client, 0, sizeof user_client);
    memset(&asst_client, 0, sizeof asst_client);
    if (cllm_tasks_read_jsonl(tasks_path, &tasks, &n_read, &err) != CLLM_OK) return fail(&err);
    n = limit > 0 && limit < n_read ? limit : n_read;
    if (!make_client(&user_client, argc, argv, "user", &err) || !make_client(&asst_client, argc, argv, "assistant", &err)) { fail(&err); goto done; }

    memset(&sim_cfg, 0, sizeof sim_cfg);
    sim_cfg.params.model = user_model;
    sim_cfg.params.temperature = flag_num(argc, argv, "--user-temperature", 0);
    sim_cfg.params.seed = seed;
    sim_cfg.termination = flag(argc, argv, "--termination");
    sim_cfg.json_mode = has_switch(argc, argv, "--json-mode");
    cllm_llm_sim_init(&sim, &user_client, &sim_cfg);
    memset(&asst_cfg, 0, sizeof asst_cfg);
    asst_cfg.params.model = asst_model;
    asst_cfg.params.temperature = flag_num(argc, argv, "--assistant-temperature", 0);
    asst_cfg.params.seed = seed;
    asst_cfg.system_prompt = flag(argc, argv, "--assistant-system");
    cllm_api_assistant_init(&asst, &asst_client, &asst_cfg);

    goals = (cllm_goal *)calloc((size_t)n, sizeof *goals);
    convs = (cllm_conv *)calloc((size_t)n, sizeof *convs);
    status = (cllm_sim_status *)calloc((size_t)n, sizeof *status);
    buf = (char *)malloc(cap);
    if (!goals || !convs || !status || !buf) { fprintf(stderr, "error: out of memory\n"); goto done; }
    for (i = 0; i < n; i++) {
        goals[i].task_desc = task_desc;
        goals[i].prompt = tasks[i].prompt;
        goals[i].reference = show_ref && tasks[i].completion[0] ? tasks[i].completion : NULL;
    }
    fprintf(stderr, "simulate: %d conversations, up to %d messages each\n", n, max_messages);
    cllm_simulate(&sim.sim, &asst.assistant, goals, convs, n, max_messages, status, &err);

    prov = cJSON_CreateObject();
    cJSON_AddStringToObject(prov, "task_desc", task_desc);
    cJSON_AddStringToObject(prov, "user_model", user_model);
    cJSON_AddStringToObject(prov, "assistant_model", asst_model);
    cJSON_AddNumberToObject(prov, "max_messages", max_messages);
    cJSON_AddStringToObject(prov, "termination", sim.cfg.termination);
    for (i = 0; i < n; i++) {
        cJSON *rec = conversation_record(&tasks[i], &convs[i], &status[i], prov);
        size_t len;
        line = rec ? cJSON_PrintUnformatted(rec) : NULL;
        cJSON_Delete(rec);
        if (!line) { fprintf(stderr, "error: out of memory\n"); goto done; }
        len = strlen(line);
        while (total + len + 2 > cap) { char *nb = (char *)realloc(buf, cap * 2); if (!nb) { cJSON_free(line); goto done; } buf = nb; cap *= 2; }
        memcpy(buf + total, line, len);
        buf[total + len] = '\n';
        total += len + 1;
        cJSON_free(line);
        failed += status[i].code != CLLM_OK;
        terminated += status[i].terminated;
        messages += convs[i].n;
        if (status[i].code != CLLM_OK) fprintf(stderr, "  conversation %d: %s\n", i, status[i].err.msg);
    }
    if (cllm_write_file_atomic(out, buf, total, &err) != CLLM_OK) { fail(&err); goto done; }
    fprintf(stderr, "simulate: wrote %s: %d conversations, %d ended by the user, %d failed, %.1f messages on average\n",
            out, n, terminated, failed, n ? messages / n : 0.0);
    fprintf(stderr, "  user simulator tokens: %lld prompt + %lld completion; assistant tokens: %lld prompt + %lld completion\n",
            user_client.usage.prompt_tokens, user_client.usage.completion_tokens, asst_client.usage.prompt_tokens, asst_client.usage.completion_tokens);
    rc = failed ? 1 : 0;
done:
    for (i = 0; convs && i < n; i++) cllm_conv_free(&convs[i]);
    free(goals); free(convs); free(status); free(buf);
    cJSON_Delete(prov);
    cllm_client_free(&user_client);
    cllm_client_free(&asst_client);
    cllm_tasks_free(tasks, n_read);
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

/* ---- sft / dpo: fine-tuning on SFT rows or DPO pairs (data_fmt/train.md) ------------------ */

#define TRAIN_FLAGS_USAGE \
    "    [--tokenizer DIR] [--lr LR] [--schedule cosine|linear|constant] [--warmup-steps N | --warmup-ratio R]\n" \
    "    [--epochs N | --max-steps N] [--batch-size N] [--grad-accum N] [--max-length N] [--max-grad-norm X (0 = off)]\n" \
    "    [--weight-decay X] [--seed N] [--save-every N] [--keep-last N] [--log-every N] [--stop-after N] [--metrics PATH]\n" \
    "    [--resume] [--quiet] [--lora-r R --lora-alpha A --lora-dropout P --lora-targets q,k,v,o,gate,up,down]"

/* The flags both trainers share: the loop's settings, the data's max length and LoRA (on when
   any --lora-* flag is given). Zero / absent = the library's defaults. */
static int train_flags(int argc, char **argv, cllm_train_config *c, int *max_length, int *lora, cllm_lora_config *lc) {
    double lr, epochs, steps, bs, ga, ws, wr, gn, wd, seed, se, kl, le, sa, ml, r, alpha, drop;
    const char *targets = flag(argc, argv, "--lora-targets");
    cllm_err err;
    memset(c, 0, sizeof *c);
    memset(lc, 0, sizeof *lc);
    if (!num_flag(argc, argv, "--lr", 0, 1, 0, &lr) || !num_flag(argc, argv, "--epochs", 0, 1e6, 0, &epochs) ||
        !num_flag(argc, argv, "--max-steps", 0, 1e12, 0, &steps) || !num_flag(argc, argv, "--batch-size", 0, 1e6, 0, &bs) ||
        !num_flag(argc, argv, "--grad-accum", 0, 1e6, 0, &ga) || !num_flag(argc, argv, "--warmup-steps", 0, 1e12, 0, &ws) ||
        !num_flag(argc, argv, "--warmup-ratio", 0, 1, 0, &wr) || !num_flag(argc, argv, "--max-grad-norm", -1, 1e9, 0, &gn) ||
        !num_flag(argc, argv, "--weight-decay", 0, 1e3, 0, &wd) || !num_flag(argc, argv, "--seed", 0, 9007199254740992.0, 0, &seed) ||
        !num_flag(argc, argv, "--save-every", 0, 1e12, 0, &se) || !num_flag(argc, argv, "--keep-last", 0, 1e6, 0, &kl) ||
        !num_flag(argc, argv, "--log-every", 0, 1e12, 0, &le) || !num_flag(argc, argv, "--stop-after", 0, 1e12, 0, &sa) ||
        !num_flag(argc, argv, "--max-length", 0, 1e8, 0, &ml) || !num_flag(argc, argv, "--lora-r", 0, CLLM_LORA_MAX_R, 0, &r) ||
        !num_flag(argc, argv, "--lora-alpha", 0, 1e6, 0, &alpha) || !num_flag(argc, argv, "--lora-dropout", -1, 0.99, 0, &drop))
        return 0;
    c->lr = lr; c->epochs = (int)epochs; c->max_steps = (long)steps; c->batch_size = (int)bs; c->grad_accum = (int)ga;
    c->warmup_steps = (long)ws; c->warmup_ratio = wr; c->max_grad_norm = gn; c->adam.weight_decay = (float)wd;
    c->seed = (uint64_t)seed; c->save_every = (long)se; c->keep_last = (int)kl; c->log_every = (long)le; c->stop_after = (long)sa;
    c->lr_schedule = flag(argc, argv, "--schedule");
    c->metrics_path = flag(argc, argv, "--metrics");
    c->out_dir = flag(argc, argv, "--out");
    c->model_dir = flag(argc, argv, "--model");
    c->tokenizer_dir = flag(argc, argv, "--tokenizer") ? flag(argc, argv, "--tokenizer") : c->model_dir;
    c->resume = has_switch(argc, argv, "--resume");
    c->quiet = has_switch(argc, argv, "--quiet");
    if (flag(argc, argv, "--max-grad-norm") && gn == 0) c->max_grad_norm = -1;    /* as HF: 0 = no clipping */
    *max_length = (int)ml;
    *lora = flag(argc, argv, "--lora-r") || flag(argc, argv, "--lora-alpha") || flag(argc, argv, "--lora-dropout") || targets;
    lc->r = (int)r; lc->alpha = alpha; lc->seed = c->seed;
    lc->dropout = flag(argc, argv, "--lora-dropout") && drop == 0 ? -1 : drop;     /* an explicit 0 means none */
    if (targets && cllm_lora_parse_targets(targets, &lc->targets, &err) != CLLM_OK) { fprintf(stderr, "--lora-targets: %s\n", err.msg); return 0; }
    return 1;
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static void make_dir(const char *dir) {
#if !defined(_WIN32)
    mkdir(dir, 0755);                /* an existing directory is fine; a failure shows up on writing */
#else
    (void)dir;
#endif
}

static int cmd_sft(int argc, char **argv) {
    static const char *usage = "collabllm sft --model DIR --data ROWS.jsonl --out DIR\n" TRAIN_FLAGS_USAGE;
    const char *dir = need(argc, argv, "--model", usage), *data = need(argc, argv, "--data", usage), *out = need(argc, argv, "--out", usage);
    cllm_train_config cfg;
    cllm_lora_config lcfg;
    cllm_tokenizer tok;
    cllm_model m;
    cllm_lora lora;
    cllm_sft_data rows;
    cllm_err err;
    int max_length = 0, use_lora = 0, rc = 1;
    if (!dir || !data || !out) return 2;
    if (!train_flags(argc, argv, &cfg, &max_length, &use_lora, &lcfg)) return 2;
    memset(&tok, 0, sizeof tok); memset(&m, 0, sizeof m); memset(&lora, 0, sizeof lora); memset(&rows, 0, sizeof rows);
    if (cllm_tokenizer_load(&tok, cfg.tokenizer_dir, &err) != CLLM_OK || cllm_sft_data_load(&rows, &tok, data, max_length, &err) != CLLM_OK ||
        cllm_model_load(&m, dir, &err) != CLLM_OK || (use_lora && cllm_lora_init(&lora, &m, &lcfg, &err) != CLLM_OK)) fail(&err);
    else {
        if (rows.n_truncated) fprintf(stderr, "sft: %d of %d rows truncated to the max length\n", rows.n_truncated, rows.n);
        if (cllm_train_sft(&m, use_lora ? &lora : NULL, &rows, &cfg, &err) != CLLM_OK) fail(&err);
        else rc = 0;
    }
    cllm_lora_free(&lora);
    cllm_model_free(&m);
    cllm_sft_data_free(&rows);
    cllm_tokenizer_free(&tok);
    return rc;
}

static int cmd_dpo(int argc, char **argv) {
    static const char *usage =
        "collabllm dpo --model DIR --data PAIRS.jsonl --out DIR [--ref DIR | --precompute-ref] [--loss sigmoid|robust|hinge|ipo]\n"
        "    [--beta B] [--label-smoothing E] [--reference-free]\n" TRAIN_FLAGS_USAGE;
    static const char *losses[] = { "sigmoid", "robust", "hinge", "ipo" };
    const char *dir = need(argc, argv, "--model", usage), *data = need(argc, argv, "--data", usage), *out = need(argc, argv, "--out", usage);
    const char *ref_dir = flag(argc, argv, "--ref"), *loss = flag(argc, argv, "--loss");
    int precompute = has_switch(argc, argv, "--precompute-ref"), max_length = 0, use_lora = 0, rc = 1, i;
    char ref_path[4096];
    double beta, eps;
    cllm_train_config cfg;
    cllm_lora_config lcfg;
    cllm_dpo_config dpo;
    cllm_tokenizer tok;
    cllm_model m, ref;
    cllm_lora lora;
    cllm_dpo_data pairs;
    cllm_err err;
    if (!dir || !data || !out) return 2;
    if (!train_flags(argc, argv, &cfg, &max_length, &use_lora, &lcfg) ||
        !num_flag(argc, argv, "--beta", 1e-9, 1e9, 0, &beta) || !num_flag(argc, argv, "--label-smoothing", 0, 1, 0, &eps)) return 2;
    memset(&dpo, 0, sizeof dpo);
    dpo.beta = beta; dpo.label_smoothing = eps; dpo.reference_free = has_switch(argc, argv, "--reference-free");
    for (i = 0; loss && i < 4 && strcmp(loss, losses[i]) != 0; i++) {}
    if (loss && i == 4) { fprintf(stderr, "--loss: '%s' is not sigmoid, robust, hinge or ipo\n", loss); return 2; }
    dpo.loss_type = loss ? i : CLLM_DPO_SIGMOID;
    if (ref_dir && precompute) { fprintf(stderr, "--ref and --precompute-ref exclude each other\n"); return 2; }
    memset(&tok, 0, sizeof tok); memset(&m, 0, sizeof m); memset(&ref, 0, sizeof ref); memset(&lora, 0, sizeof lora); memset(&pairs, 0, sizeof pairs);
    snprintf(ref_path, sizeof ref_path, "%s/pairs_ref.jsonl", out);
    /* a resumed run reuses the reference logps computed from the initial model at the start */
    if (precompute && cfg.resume && file_exists(ref_path)) { data = ref_path; precompute = 0; }
    if (cllm_tokenizer_load(&tok, cfg.tokenizer_dir, &err) != CLLM_OK || cllm_dpo_data_load(&pairs, &tok, data, max_length, &err) != CLLM_OK ||
        cllm_model_load(&m, dir, &err) != CLLM_OK) { fail(&err); goto done; }
    if (pairs.n_truncated) fprintf(stderr, "dpo: %d of %d pairs truncated to the max length\n", pairs.n_truncated, pairs.n);
    if (precompute) {             /* TRL's precompute_ref_log_probs: the policy before any update */
        make_dir(out);
        if (cllm_dpo_precompute_ref(&m, &pairs, cfg.batch_size, data, ref_path, &err) != CLLM_OK) { fail(&err); goto done; }
        if (!cfg.quiet) fprintf(stderr, "dpo: reference logps of %d pairs written to %s\n", pairs.n, ref_path);
    }
    if (ref_dir && cllm_model_load(&ref, ref_dir, &err) != CLLM_OK) { fail(&err); goto done; }
    /* no reference given: a frozen copy of the initial policy (with LoRA: the base model itself) */
    if (!ref_dir && !pairs.has_ref && !use_lora && !dpo.reference_free) {
        if (cllm_model_load(&ref, dir, &err) != CLLM_OK) { fail(&err); goto done; }
    }
    if (use_lora && cllm_lora_init(&lora, &m, &lcfg, &err) != CLLM_OK) { fail(&err); goto done; }
    if (cllm_train_dpo(&m, use_lora ? &lora : NULL, ref.params_memory ? &ref : NULL, &pairs, &dpo, &cfg, &err) != CLLM_OK) fail(&err);
    else rc = 0;
done:
    cllm_lora_free(&lora);
    cllm_model_free(&m);
    cllm_model_free(&ref);
    cllm_dpo_data_free(&pairs);
    cllm_tokenizer_free(&tok);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;
static const command commands[] = {
    { "dump", cmd_dump, "logits, loss, logps and (--grads) gradients of a checkpoint on token rows" },
    { "generate-ids", cmd_generate_ids, "sample continuations of a prompt of token ids: JSON lines of ids, logprobs, finish" },
    { "ref",  cmd_ref,  "DPO / GAE / PPO / GRPO / AdamW / BLEU reference math: JSON on stdin -> stdout" },
    { "simulate", cmd_simulate, "conversations between an assistant model and a user simulator on a task file" },
    { "tokenize", cmd_tokenize, "stdin {\"text\"} lines -> {\"ids\"} lines with a tokenizer.json" },
    { "detokenize", cmd_detokenize, "stdin {\"ids\"} lines -> {\"text\"} lines" },
    { "render", cmd_render, "a conversation through the chat template -> {\"text\", \"ids\", \"mask\"}" },
    { "sft", cmd_sft, "supervised fine-tuning on {\"messages\"} rows (full or LoRA), resumable checkpoints" },
    { "dpo", cmd_dpo, "offline DPO on preference pairs (sigmoid/cDPO, robust, hinge, IPO), resumable checkpoints" },
};

int main(int argc, char **argv) {
    size_t i;
    if (argc >= 2) for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "usage: collabllm COMMAND [flags]\n\ncommands:\n");
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(stderr, "  %-14s %s\n", commands[i].name, commands[i].help);
    return argc >= 2 && strcmp(argv[1], "help") == 0 ? 0 : 2;
}
