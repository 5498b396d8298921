/* collabllm.c - the collabllm.h command-line tool.
   Demonstrates the library end to end; each subcommand is a short function over the public API.

     build/collabllm dump --model DIR --input FILE.jsonl --out FILE.safetensors [--grads]
     build/collabllm generate-ids --model DIR --prompt-ids 1,2,3 [--n N] [--temperature T] ...
     build/collabllm ref NAME < input.json > output.json
     build/collabllm generate --model DIR --messages FILE.json [--n N] [--temperature T] [--system TEXT] ...
     build/collabllm simulate --tasks T.jsonl --out C.jsonl (--user-model M | --user-model-dir DIR)
                              (--assistant-model M | --assistant-model-dir DIR)
     build/collabllm tokenize --tokenizer PATH [--add-special-tokens] [--offsets] < texts.jsonl
     build/collabllm detokenize --tokenizer PATH [--skip-special-tokens] < ids.jsonl
     build/collabllm render --tokenizer DIR --messages FILE.json [--add-generation-prompt]
     build/collabllm sft --model DIR --data ROWS.jsonl --out DIR [--lora-r 32 ...] [--resume]
     build/collabllm dpo --model DIR --data PAIRS.jsonl --out DIR [--ref DIR | --precompute-ref] [--loss ipo]
     build/collabllm online-dpo|ppo|grpo --model DIR --out DIR (--prompts P.jsonl | --tasks T.jsonl)
                              (--user-model M | --user-model-dir DIR) [--metrics NAME:W,...] [--window 2]

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

/* A required flag's value, or NULL after naming it (the usage is printed once per run). */
static const char *need(int argc, char **argv, const char *name, const char *usage) {
    static int usage_shown;
    const char *v = flag(argc, argv, name);
    if (!v) {
        fprintf(stderr, "missing %s\n", name);
        if (!usage_shown++) fprintf(stderr, "usage: %s\n", usage);
    }
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

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    int i;
    for (i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* Prints o as one line and deletes it. */
static void print_json_line(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (s) { fputs(s, stdout); fputc('\n', stdout); cJSON_free(s); }
    cJSON_Delete(o);
}

/* "ids", "logprobs" (9 significant digits: all a float holds) and "finish" of one sample. */
static void add_generated(cJSON *o, const int *ids, const cllm_float *logprobs, int n, int finish) {
    cJSON *lps;
    char num[32];
    int t;
    cJSON_AddItemToObject(o, "ids", int_array(ids, n));
    lps = cJSON_AddArrayToObject(o, "logprobs");
    for (t = 0; t < n; t++) {
        snprintf(num, sizeof num, "%.9g", (double)logprobs[t]);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(strtod(num, NULL)));
    }
    cJSON_AddStringToObject(o, "finish", cllm_finish_reason_string(finish));
}

/* Calls fn on each JSON value of a file that holds one JSON value, or JSONL (one per line);
   stops at the first nonzero return. */
static int each_json(const char *file, int (*fn)(const cJSON *value, void *ctx), void *ctx) {
    char *data = NULL, *line, *next;
    size_t len;
    cllm_err err;
    int rc = 0;
    cJSON *all;
    if (cllm_read_file(file, &data, &len, &err) != CLLM_OK) return fail(&err);
    all = cJSON_ParseWithLengthOpts(data, len + 1, NULL, 1);      /* one JSON value, then only the NUL */
    if (all) rc = fn(all, ctx);
    else for (line = data; line && *line && !rc; line = next) {
        cJSON *v;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (!*line) continue;
        if (!(v = cJSON_Parse(line))) { fprintf(stderr, "error: %s: a line is not JSON\n", file); rc = 1; break; }
        rc = fn(v, ctx);
        cJSON_Delete(v);
    }
    cJSON_Delete(all);
    cllm_free_buffer(data);
    return rc;
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

/* --temperature (0 = greedy), --top-k, --top-p, --max-new-tokens, --seed; 0 after a message. */
static int sampling_flags(int argc, char **argv, cllm_local_gen_config *g) {
    double temp, top_k, top_p, max_new, seed;
    if (!num_flag(argc, argv, "--temperature", 0, 1e6, 1, &temp) || !num_flag(argc, argv, "--top-k", 0, 1e9, 0, &top_k) ||
        !num_flag(argc, argv, "--top-p", 1e-9, 1, 1, &top_p) || !num_flag(argc, argv, "--max-new-tokens", 1, 1e7, 256, &max_new) ||
        !num_flag(argc, argv, "--seed", 0, 9007199254740992.0, 0, &seed))
        return 0;
    memset(g, 0, sizeof *g);
    g->sampler.greedy = temp == 0;
    g->sampler.temperature = (float)temp;
    g->sampler.top_k = (int)top_k;
    g->sampler.top_p = (float)top_p;
    g->sampler.seed = (uint64_t)seed;
    g->max_new_tokens = (int)max_new;
    return 1;
}

/* ---- generate-ids: sample continuations of a prompt given as token ids ------------------------ */
/* Token ids in, JSON lines out (data_fmt/generate-ids.md); temperature 0 means greedy. Text
   prompts (`generate --messages`) need the tokenizer and chat templates. */

static int cmd_generate_ids(int argc, char **argv) {
    static const char *usage = "collabllm generate-ids --model DIR --prompt-ids 1,2,3 [--n N] [--temperature T (0 = greedy)] "
                               "[--top-k K] [--top-p P] [--max-new-tokens M] [--seed S] [--eos-ids 2,7 | --ignore-eos]";
    const char *dir = need(argc, argv, "--model", usage), *ptext = need(argc, argv, "--prompt-ids", usage), *etext = flag(argc, argv, "--eos-ids");
    double n;
    int *prompt = NULL, *eos = NULL, n_prompt = 0, n_eos = 0, rc = 1, s;
    cllm_model m;
    cllm_local_gen_config flags;
    cllm_gen_config g;
    cllm_completion *out = NULL;
    cllm_err err;
    if (!dir || !ptext) return 2;
    if (!num_flag(argc, argv, "--n", 1, 65536, 1, &n) || !sampling_flags(argc, argv, &flags)) return 2;
    if (!(prompt = int_list("--prompt-ids", ptext, 0, 2147483647L, &n_prompt))) return 2;
    if (etext && !(eos = int_list("--eos-ids", etext, 0, 2147483647L, &n_eos))) { free(prompt); return 2; }
    memset(&g, 0, sizeof g);
    g.sampler = flags.sampler;
    g.max_new_tokens = flags.max_new_tokens;
    g.eos_ids = eos; g.n_eos = n_eos;
    g.ignore_eos = has_switch(argc, argv, "--ignore-eos");
    if (cllm_model_load(&m, dir, &err) != CLLM_OK) { free(prompt); free(eos); return fail(&err); }
    out = (cllm_completion *)calloc((size_t)n, sizeof *out);
    if (!out) fprintf(stderr, "error: out of memory\n");
    else if (cllm_generate(&m, prompt, n_prompt, (int)n, &g, out, &err) != CLLM_OK) fail(&err);
    else {
        for (s = 0; s < (int)n; s++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "sample", s);
            add_generated(o, out[s].ids, out[s].logprobs, out[s].n, out[s].finish);
            print_json_line(o);
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
/* Each side is a model behind an OpenAI-compatible endpoint or a local model directory (the
   cllm_user_sim / cllm_assistant interfaces hide which). Formats: data_fmt/task.md in,
   data_fmt/conversation.md out. */

static double flag_num(int argc, char **argv, const char *name, double def) {
    const char *v = flag(argc, argv, name);
    return v ? atof(v) : def;
}

/* The client's on_wait: a wait over 5 s before a retry gets one line on stderr. */
static void print_wait(void *ctx, const char *line) {
    fprintf(stderr, "%s: %s\n", (const char *)ctx, line);
}

/* A client for one side: --{side}-base-url / --{side}-api-key-env, else the shared flags. */
static int make_client(cllm_client *c, int argc, char **argv, const char *side, cllm_err *err) {
    cllm_client_config cfg;
    char name[64];
    double deadline_ms, backoff_max_ms;
    memset(&cfg, 0, sizeof cfg);
    /* --deadline-ms: one request, every attempt and wait included (default 600000 = 10 min);
       --backoff-max-ms: the longest wait before a retry, Retry-After included (default 60000) */
    if (!num_flag(argc, argv, "--deadline-ms", 1, 1e9, 0, &deadline_ms) ||
        !num_flag(argc, argv, "--backoff-max-ms", 1, 1e9, 0, &backoff_max_ms)) {
        snprintf(err->msg, sizeof err->msg, "bad client flag (see above)");
        return 0;
    }
    cfg.deadline_ms = (long)deadline_ms;
    cfg.backoff_max_ms = (long)backoff_max_ms;
    /* --reject-incomplete: a reply whose finish_reason is length or content_filter is a failed call */
    cfg.reject_incomplete = has_switch(argc, argv, "--reject-incomplete");
    cfg.on_wait = print_wait;
    cfg.on_wait_ctx = (void *)side;
    snprintf(name, sizeof name, "--%s-base-url", side);
    cfg.base_url = flag(argc, argv, name) ? flag(argc, argv, name) : flag(argc, argv, "--base-url");
    snprintf(name, sizeof name, "--%s-api-key-env", side);
    cfg.api_key_env = flag(argc, argv, name) ? flag(argc, argv, name) : flag(argc, argv, "--api-key-env");
    cfg.max_concurrency = (int)flag_num(argc, argv, "--concurrency", 0);
    cfg.timeout_ms = (long)flag_num(argc, argv, "--timeout-ms", 0);
    cfg.max_retries = (int)flag_num(argc, argv, "--retries", 0);
    if (flag(argc, argv, "--retries") && cfg.max_retries == 0) cfg.max_retries = -1;   /* 0 in the config means the default */
    cfg.insecure = has_switch(argc, argv, "--insecure");
    return cllm_client_init(c, &cfg, err) == CLLM_OK;
}

/* One output line: the task's own fields, then messages, terminated, error and provenance. */
static cJSON *conversation_record(const cllm_task *t, const cllm_conv *conv, const cllm_sim_status *st, cJSON *provenance) {
    cJSON *rec = cJSON_Duplicate(t->json, 1);
    int i, incomplete = 0;
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "messages");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "terminated");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "error");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "simulation");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "incomplete_messages");
    cJSON_AddItemToObject(rec, "messages", cllm_conv_to_json(conv));
    cJSON_AddBoolToObject(rec, "terminated", st->terminated);
    for (i = 0; i < conv->n; i++) incomplete += cllm_msg_incomplete(conv->meta ? &conv->meta[i] : NULL);
    if (incomplete) cJSON_AddNumberToObject(rec, "incomplete_messages", incomplete);
    if (st->code != CLLM_OK) cJSON_AddStringToObject(rec, "error", st->err.msg);
    cJSON_AddItemToObject(rec, "simulation", cJSON_Duplicate(provenance, 1));
    return rec;
}

/* The two sides of a simulation: each an API model (--user-model / --assistant-model) or a
   collabllm.h model directory (--user-model-dir / --assistant-model-dir; the same directory for
   both sides is loaded once and shares its seed counter). */
typedef struct {
    cllm_client          client[2];       /* [0] user, [1] assistant (API sides only) */
    cllm_local_lm        lm[2];
    cllm_llm_sim         api_sim;
    cllm_local_user_sim  local_sim;
    cllm_api_assistant   api_asst;
    cllm_local_assistant local_asst;
    const cllm_user_sim  *user;
    const cllm_assistant *assistant;
    const char           *termination;
} sides;

static void free_sides(sides *sd) {
    int i;
    for (i = 0; i < 2; i++) { cllm_client_free(&sd->client[i]); cllm_local_lm_free(&sd->lm[i]); }
}

/* The user side: a local simulator model (--user-model-dir) or an API model. */
static int make_user_side(sides *sd, int argc, char **argv, const char *user_prompt, cllm_err *err) {
    const char *user_dir = flag(argc, argv, "--user-model-dir");
    long long seed = (long long)flag_num(argc, argv, "--seed", 0);
    double user_temp = flag_num(argc, argv, "--user-temperature", 0);
    int user_max = (int)flag_num(argc, argv, "--user-max-tokens", 0);
    if (user_dir) {
        cllm_local_user_sim_config c;
        if (cllm_local_lm_load(&sd->lm[0], user_dir, err) != CLLM_OK) return 0;
        memset(&c, 0, sizeof c);
        c.gen.sampler.temperature = (float)user_temp;
        c.gen.sampler.seed = (uint64_t)seed;
        c.gen.max_new_tokens = user_max;
        c.termination = flag(argc, argv, "--termination");
        c.prompt = user_prompt;
        cllm_local_user_sim_init(&sd->local_sim, &sd->lm[0], &c);
        sd->user = &sd->local_sim.sim;
        sd->termination = sd->local_sim.cfg.termination;
    } else {
        cllm_llm_sim_config c;
        if (!make_client(&sd->client[0], argc, argv, "user", err)) return 0;
        memset(&c, 0, sizeof c);
        c.params.model = flag(argc, argv, "--user-model");
        c.params.temperature = user_temp;
        c.params.max_tokens = user_max;
        c.params.seed = seed;
        c.termination = flag(argc, argv, "--termination");
        c.json_mode = has_switch(argc, argv, "--json-mode");
        c.prompt = user_prompt;
        cllm_llm_sim_init(&sd->api_sim, &sd->client[0], &c);
        sd->user = &sd->api_sim.sim;
        sd->termination = sd->api_sim.cfg.termination;
    }
    return 1;
}

/* The assistant side over a loaded local model (the policy of an online run, or
   --assistant-model-dir). */
static void local_assistant_side(sides *sd, cllm_local_lm *lm, int argc, char **argv) {
    cllm_local_assistant_config c;
    memset(&c, 0, sizeof c);
    c.gen.sampler.temperature = (float)flag_num(argc, argv, "--assistant-temperature", 0);
    c.gen.sampler.seed = (uint64_t)flag_num(argc, argv, "--seed", 0);
    c.gen.max_new_tokens = (int)flag_num(argc, argv, "--assistant-max-tokens", 0);
    c.system_prompt = flag(argc, argv, "--assistant-system");
    cllm_local_assistant_init(&sd->local_asst, lm, &c);
    sd->assistant = &sd->local_asst.assistant;
}

static int make_sides(sides *sd, int argc, char **argv, const char *user_prompt, cllm_err *err) {
    const char *user_dir = flag(argc, argv, "--user-model-dir"), *asst_dir = flag(argc, argv, "--assistant-model-dir");
    cllm_local_lm *asst_lm = &sd->lm[1];
    memset(sd, 0, sizeof *sd);
    if (!make_user_side(sd, argc, argv, user_prompt, err)) return 0;
    if (asst_dir) {
        if (user_dir && strcmp(user_dir, asst_dir) == 0) asst_lm = &sd->lm[0];
        else if (cllm_local_lm_load(asst_lm, asst_dir, err) != CLLM_OK) return 0;
        local_assistant_side(sd, asst_lm, argc, argv);
    } else {
        cllm_api_assistant_config c;
        if (!make_client(&sd->client[1], argc, argv, "assistant", err)) return 0;
        memset(&c, 0, sizeof c);
        c.params.model = flag(argc, argv, "--assistant-model");
        c.params.temperature = flag_num(argc, argv, "--assistant-temperature", 0);
        c.params.max_tokens = (int)flag_num(argc, argv, "--assistant-max-tokens", 0);
        c.params.seed = (long long)flag_num(argc, argv, "--seed", 0);
        c.system_prompt = flag(argc, argv, "--assistant-system");
        cllm_api_assistant_init(&sd->api_asst, &sd->client[1], &c);
        sd->assistant = &sd->api_asst.assistant;
    }
    return 1;
}

static int cmd_simulate(int argc, char **argv) {
    static const char *usage =
        "collabllm simulate --tasks TASKS.jsonl --out CONVS.jsonl (--user-model M | --user-model-dir DIR)\n"
        "    (--assistant-model M | --assistant-model-dir DIR)\n"
        "    [--task-desc TEXT] [--max-messages 14] [--limit N] [--show-reference] [--termination TEXT]\n"
        "    [--assistant-system TEXT] [--user-temperature 1] [--assistant-temperature 0.8] [--seed N] [--json-mode]\n"
        "    [--user-max-tokens 1024] [--assistant-max-tokens 2048 (API) / 1024 (local)] [--user-prompt TEMPLATE_FILE]\n"
        "    [--base-url URL] [--api-key-env NAME] [--user-base-url URL] [--user-api-key-env NAME]\n"
        "    [--assistant-base-url URL] [--assistant-api-key-env NAME] [--concurrency 16] [--insecure]\n"
        "    [--timeout-ms N] [--retries N] [--deadline-ms 600000] [--backoff-max-ms 60000] [--reject-incomplete]";
    const char *tasks_path = need(argc, argv, "--tasks", usage), *out = need(argc, argv, "--out", usage);
    const char *user_model = flag(argc, argv, "--user-model"), *asst_model = flag(argc, argv, "--assistant-model");
    const char *user_dir = flag(argc, argv, "--user-model-dir"), *asst_dir = flag(argc, argv, "--assistant-model-dir");
    const char *task_desc = flag(argc, argv, "--task-desc") ? flag(argc, argv, "--task-desc") : "a task";
    const char *prompt_file = flag(argc, argv, "--user-prompt");
    int max_messages = (int)flag_num(argc, argv, "--max-messages", 14), limit = (int)flag_num(argc, argv, "--limit", 0);
    int show_ref = has_switch(argc, argv, "--show-reference"), n = 0, n_read = 0, i, rc = 1, failed = 0, terminated = 0;
    cllm_task *tasks = NULL;
    char *user_prompt = NULL;
    sides sd;
    cllm_goal *goals = NULL;
    cllm_conv *convs = NULL;
    cllm_sim_status *status = NULL;
    cJSON *prov = NULL;
    char *line;
    size_t total = 0, cap = 1 << 16;
    char *buf = NULL;
    cllm_err err;
    double messages = 0;
    if (!tasks_path || !out) return 2;
    if (!user_model == !user_dir || !asst_model == !asst_dir) {
        fprintf(stderr, "give one of --user-model / --user-model-dir and one of --assistant-model / --assistant-model-dir\nusage: %s\n", usage);
        return 2;
    }
    memset(&sd, 0, sizeof sd);
    if (prompt_file && cllm_read_file(prompt_file, &user_prompt, NULL, &err) != CLLM_OK) return fail(&err);
    if (cllm_tasks_read_jsonl(tasks_path, &tasks, &n_read, &err) != CLLM_OK) { cllm_free_buffer(user_prompt); return fail(&err); }
    n = limit > 0 && limit < n_read ? limit : n_read;
    if (!make_sides(&sd, argc, argv, user_prompt, &err)) { fail(&err); goto done; }

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
    cllm_simulate(sd.user, sd.assistant, goals, convs, n, max_messages, status, &err);

    prov = cJSON_CreateObject();
    cJSON_AddStringToObject(prov, "task_desc", task_desc);
    cJSON_AddStringToObject(prov, user_dir ? "user_model_dir" : "user_model", user_dir ? user_dir : user_model);
    cJSON_AddStringToObject(prov, asst_dir ? "assistant_model_dir" : "assistant_model", asst_dir ? asst_dir : asst_model);
    cJSON_AddNumberToObject(prov, "max_messages", max_messages);
    cJSON_AddStringToObject(prov, "termination", sd.termination);
    for (i = 0; i < n; i++) {
        cJSON *rec = conversation_record(&tasks[i], &convs[i], &status[i], prov);
        size_t len;
        line = rec ? cJSON_PrintUnformatted(rec) : NULL;
        cJSON_Delete(rec);
        if (!line) { fprintf(stderr, "error: out of memory\n"); goto done; }
        len = strlen(line);
        if (len >= (size_t)CLLM_MAX_LINE_BYTES) {        /* a line no reader of ours would take: write no file */
            fprintf(stderr, "error: conversation %d would be a %zu-byte line, longer than the readers accept "
                    "(CLLM_MAX_LINE_BYTES)\n", i, len);
            cJSON_free(line);
            goto done;
        }
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
    if (!user_dir) fprintf(stderr, "  user simulator tokens: %lld prompt + %lld completion\n", sd.client[0].usage.prompt_tokens, sd.client[0].usage.completion_tokens);
    else fprintf(stderr, "  local user simulator: %ld samples drawn (re-asks included)\n", sd.local_sim.generations);
    if (!asst_dir) fprintf(stderr, "  assistant tokens: %lld prompt + %lld completion\n", sd.client[1].usage.prompt_tokens, sd.client[1].usage.completion_tokens);
    rc = failed ? 1 : 0;
done:
    for (i = 0; convs && i < n; i++) cllm_conv_free(&convs[i]);
    free(goals); free(convs); free(status); free(buf);
    cJSON_Delete(prov);
    free_sides(&sd);
    cllm_tasks_free(tasks, n_read);
    cllm_free_buffer(user_prompt);
    return rc;
}

/* ---- the multiturn-aware reward, data generation, pairs, evaluation -------------------------- */
/* Shared by mr, generate-data and eval: the reward's metrics from --metrics NAME:WEIGHT,...,
   with an LLM judge (--judge-model, same endpoint flags with the "judge" side) for the metrics
   that need one, and the token counter (the local assistant's tokenizer, --tokenizer DIR, or
   whitespace words). */

typedef struct {
    cllm_metric       metrics[16];
    int               n;
    cllm_client       judge_client;
    cllm_judge        judge;
    cllm_match_config match;
    cllm_code_config  code;
    cllm_tokenizer    tok;
    cllm_token_counter tokens;
} metric_set;

static void free_metric_set(metric_set *ms) {
    cllm_client_free(&ms->judge_client);
    cllm_tokenizer_free(&ms->tok);
}

static int make_metric_set(metric_set *ms, int argc, char **argv, const sides *sd, const char *def, cllm_err *err) {
    const char *spec = flag(argc, argv, "--metrics") ? flag(argc, argv, "--metrics") : def;
    const char *judge_model = flag(argc, argv, "--judge-model"), *tok_dir = flag(argc, argv, "--tokenizer");
    char buf[512], *item, *next;
    int need_judge = 0, i;
    memset(ms, 0, sizeof *ms);
    if (tok_dir) {
        if (cllm_tokenizer_load(&ms->tok, tok_dir, err) != CLLM_OK) return 0;
        ms->tokens.count = cllm_tokenizer_count; ms->tokens.ctx = &ms->tok;
    } else if (sd->assistant == &sd->local_asst.assistant) {
        ms->tokens.count = cllm_tokenizer_count; ms->tokens.ctx = (void *)&sd->local_asst.lm->tok;
    }
    ms->match.answer_prefix = flag(argc, argv, "--answer-prefix");
    ms->match.numeric = has_switch(argc, argv, "--numeric");
    ms->code.python = flag(argc, argv, "--python");
    ms->code.timeout_s = flag_num(argc, argv, "--code-timeout", 0);
    snprintf(buf, sizeof buf, "%s", spec);
    for (item = buf; item && *item; item = next) {
        char *colon = strchr(item, ':');
        next = strchr(item, ',');
        if (next) *next++ = 0;
        cllm_metric *m = &ms->metrics[ms->n];
        if (ms->n == 16) { snprintf(err->msg, sizeof err->msg, "--metrics: at most 16"); return 0; }
        colon = strchr(item, ':');
        if (colon) *colon = 0;
        if (cllm_metric_builtin(item, m, err) != CLLM_OK) return 0;
        m->weight = colon ? atof(colon + 1) : 1.0;
        if (!strcmp(m->name, "interactivity") || !strcmp(m->name, "accuracy")) { m->ctx = &ms->judge; need_judge = 1; }
        else if (!strcmp(m->name, "exact_match")) m->ctx = &ms->match;
        else if (!strcmp(m->name, "pass_rate")) m->ctx = &ms->code;
        else if (!strcmp(m->name, "token_amount")) m->ctx = &ms->tokens;
        else if (!strcmp(m->name, "bleu") && judge_model) { m->ctx = &ms->judge; need_judge = 1; }
        ms->n++;
    }
    if (need_judge || (judge_model && has_switch(argc, argv, "--extract-code"))) {
        cllm_judge_config jc;
        if (!judge_model) { snprintf(err->msg, sizeof err->msg, "--metrics %s needs an LLM judge: give --judge-model", spec); return 0; }
        if (!make_client(&ms->judge_client, argc, argv, "judge", err)) return 0;
        memset(&jc, 0, sizeof jc);
        jc.params.model = judge_model;
        cllm_judge_init(&ms->judge, &ms->judge_client, &jc);
        if (has_switch(argc, argv, "--extract-code")) ms->code.extractor = &ms->judge;
    }
    for (i = 0; i < ms->n; i++) fprintf(stderr, "%s%s:%g", i ? ", " : "metrics: ", ms->metrics[i].name, ms->metrics[i].weight);
    fprintf(stderr, "\n");
    return 1;
}

/* --preset math|code|document, then --window, --samples, --lambda, --variant paper|weighted */
static int mr_config_flags(cllm_mr_config *mr, int argc, char **argv, const metric_set *ms) {
    const char *preset = flag(argc, argv, "--preset"), *variant = flag(argc, argv, "--variant");
    cllm_mr_config_init(mr, preset && !strcmp(preset, "document") ? CLLM_MR_PRESET_DOCUMENT : preset && !strcmp(preset, "code") ? CLLM_MR_PRESET_CODE : CLLM_MR_PRESET_MATH);
    if (preset && strcmp(preset, "math") && strcmp(preset, "code") && strcmp(preset, "document")) { fprintf(stderr, "--preset: math, code or document\n"); return 0; }
    mr->window = (int)flag_num(argc, argv, "--window", mr->window);
    mr->samples = (int)flag_num(argc, argv, "--samples", mr->samples);
    mr->lambda = flag_num(argc, argv, "--lambda", mr->lambda);
    if (variant && !strcmp(variant, "weighted")) mr->variant = CLLM_MR_WEIGHTED_SUM;
    else if (variant && strcmp(variant, "paper")) { fprintf(stderr, "--variant: paper or weighted\n"); return 0; }
    if (mr->window < 0 || mr->samples < 1) { fprintf(stderr, "--window must be >= 0 and --samples >= 1\n"); return 0; }
    mr->metrics = ms->metrics; mr->n_metrics = ms->n;
    mr->tokens = ms->tokens;
    fprintf(stderr, "MR: w=%d S=%d %s variant, lambda %g\n", mr->window, mr->samples, mr->variant == CLLM_MR_PAPER ? "paper" : "weighted-sum", mr->lambda);
    return 1;
}

#define SIDES_USAGE \
    "    (--user-model M | --user-model-dir DIR) (--assistant-model M | --assistant-model-dir DIR)\n" \
    "    [--user-temperature T] [--assistant-temperature T] [--seed N] [--termination TEXT] [--json-mode]\n" \
    "    [--base-url URL] [--api-key-env NAME] [--{user,assistant,judge}-base-url URL] [--concurrency N]\n" \
    "    [--timeout-ms N] [--retries N] [--deadline-ms 600000] [--backoff-max-ms 60000] [--reject-incomplete]\n"
#define METRICS_USAGE \
    "    [--metrics NAME:W,...] (token_amount, interactivity, accuracy, exact_match, bleu, pass_rate)\n" \
    "    [--judge-model M] [--answer-prefix TEXT] [--numeric] [--python PATH] [--code-timeout S]\n" \
    "    [--extract-code] [--tokenizer DIR]\n"
#define MR_USAGE \
    "    [--preset math|code|document] [--window 2] [--samples 3] [--lambda L] [--variant paper|weighted]\n"

static int cmd_generate_data(int argc, char **argv) {
    static const char *usage = "collabllm generate-data --tasks TASKS.jsonl --out RECORDS.jsonl\n" SIDES_USAGE METRICS_USAGE MR_USAGE
        "    [--candidates 2] [--max-turns 7] [--shard i/n] [--task-desc TEXT] [--show-reference]";
    const char *tasks_path = need(argc, argv, "--tasks", usage), *out = need(argc, argv, "--out", usage), *shard = flag(argc, argv, "--shard");
    cllm_task *tasks = NULL;
    int n = 0, rc = 1;
    sides sd;
    metric_set ms;
    cllm_datagen_config cfg;
    cllm_err err;
    if (!tasks_path || !out) return 2;
    memset(&ms, 0, sizeof ms);
    memset(&cfg, 0, sizeof cfg);
    if (shard && sscanf(shard, "%d/%d", &cfg.shard, &cfg.n_shards) != 2) { fprintf(stderr, "--shard: i/n, e.g. 0/4\n"); return 2; }
    if (cllm_tasks_read_jsonl(tasks_path, &tasks, &n, &err) != CLLM_OK) return fail(&err);
    if (!make_sides(&sd, argc, argv, NULL, &err) || !make_metric_set(&ms, argc, argv, &sd, "accuracy:1,interactivity:0.5", &err) ||
        !mr_config_flags(&cfg.mr, argc, argv, &ms)) { if (err.msg[0]) fail(&err); goto done; }
    cfg.n_candidates = (int)flag_num(argc, argv, "--candidates", 2);
    cfg.max_turns = (int)flag_num(argc, argv, "--max-turns", 7);
    cfg.task_desc = flag(argc, argv, "--task-desc");
    cfg.show_reference = has_switch(argc, argv, "--show-reference");
    cfg.verbose = 1;
    if (cllm_datagen_run(&cfg, sd.user, sd.assistant, sd.assistant, tasks, n, out, &err) != CLLM_OK) { fail(&err); goto done; }
    fprintf(stderr, "generate-data: wrote %s\n", out);
    rc = 0;
done:
    free_metric_set(&ms);
    free_sides(&sd);
    cllm_tasks_free(tasks, n);
    return rc;
}

static int cmd_build_pairs(int argc, char **argv) {
    static const char *usage = "collabllm build-pairs --records RECORDS.jsonl [--sft SFT.jsonl] [--dpo PAIRS.jsonl] [--min-gap 0.02] [--system TEXT]";
    const char *records = need(argc, argv, "--records", usage);
    cllm_pairs_config pc;
    int n_sft = 0, n_pairs = 0;
    cllm_err err;
    if (!records) return 2;
    if (!flag(argc, argv, "--sft") && !flag(argc, argv, "--dpo")) { fprintf(stderr, "give --sft and/or --dpo\nusage: %s\n", usage); return 2; }
    memset(&pc, 0, sizeof pc);
    pc.min_gap = flag_num(argc, argv, "--min-gap", 0.02);
    pc.system_prompt = flag(argc, argv, "--system");
    if (cllm_build_pairs(records, &pc, flag(argc, argv, "--sft"), flag(argc, argv, "--dpo"), &n_sft, &n_pairs, &err) != CLLM_OK) return fail(&err);
    fprintf(stderr, "build-pairs: %d SFT rows, %d DPO pairs (min gap %g)\n", n_sft, n_pairs, pc.min_gap);
    return 0;
}

/* A mean in a table column, or "null" where nothing was scored (never a 0). */
static void print_mean(double v, int width, int precision) {
    if (v == v) printf(" %*.*f", width, precision, v);
    else printf(" %*s", width, "null");
}

static int cmd_eval(int argc, char **argv) {
    static const char *usage = "collabllm eval --tasks TASKS.jsonl --details DETAILS.jsonl [--summary SUMMARY.json]\n" SIDES_USAGE METRICS_USAGE
        "    [--max-turns 7] [--task-desc TEXT] [--show-reference] [--limit N]";
    const char *tasks_path = need(argc, argv, "--tasks", usage), *details = need(argc, argv, "--details", usage), *summary_path = flag(argc, argv, "--summary");
    cllm_task *tasks = NULL;
    int n = 0, rc = 1, m, limit = (int)flag_num(argc, argv, "--limit", 0);
    sides sd;
    metric_set ms;
    cllm_eval_config cfg;
    cllm_eval_summary sum;
    cllm_err err;
    cJSON *js = NULL;
    char scored[32];
    if (!tasks_path || !details) return 2;
    memset(&ms, 0, sizeof ms);
    memset(&sum, 0, sizeof sum);
    if (cllm_tasks_read_jsonl(tasks_path, &tasks, &n, &err) != CLLM_OK) return fail(&err);
    if (!make_sides(&sd, argc, argv, NULL, &err) || !make_metric_set(&ms, argc, argv, &sd, "accuracy,interactivity", &err)) { if (err.msg[0]) fail(&err); goto done; }
    memset(&cfg, 0, sizeof cfg);
    cfg.max_turns = (int)flag_num(argc, argv, "--max-turns", 7);
    cfg.task_desc = flag(argc, argv, "--task-desc");
    cfg.show_reference = has_switch(argc, argv, "--show-reference");
    cfg.metrics = ms.metrics; cfg.n_metrics = ms.n;
    cfg.tokens = ms.tokens;
    rc = cllm_eval_run(&cfg, sd.user, sd.assistant, tasks, limit > 0 && limit < n ? limit : n, details, &sum, &err) == CLLM_OK ? 0 : 1;
    if (rc) fprintf(stderr, "warning: %s\n", err.msg);
    /* the table: the paper's columns (metrics, #Tokens(k), and ITR = interactivity x 100), each
       metric's mean over the conversations it scored and that count; "null" where it scored none */
    printf("%-18s", "");
    for (m = 0; m < ms.n; m++) printf(" %14s", ms.metrics[m].name);
    printf(" %10s %8s\n%-18s", "tokens(k)", "turns", "mean");
    for (m = 0; m < ms.n; m++) print_mean(sum.metric_means ? sum.metric_means[m] : NAN, 14, 4);
    print_mean(sum.tokens_k, 10, 4);
    print_mean(sum.turns, 8, 2);
    snprintf(scored, sizeof scored, "scored (of %d)", sum.n_tasks);
    printf("\n%-18s", scored);
    for (m = 0; m < ms.n; m++) printf(" %14d", sum.metric_counts ? sum.metric_counts[m] : 0);
    printf("\n");
    for (m = 0; m < ms.n; m++) {
        if (strcmp(ms.metrics[m].name, "interactivity") != 0) continue;
        printf("ITR (interactivity x 100):");
        print_mean(sum.metric_means ? 100 * sum.metric_means[m] : NAN, 1, 1);
        printf(" (%d of %d conversations scored)\n", sum.metric_counts ? sum.metric_counts[m] : 0, sum.n_tasks);
    }
    if (summary_path) {
        char *text;
        cJSON *mo, *so;
        js = cJSON_CreateObject();
        cJSON_AddNumberToObject(js, "tasks", sum.n_tasks);
        cJSON_AddNumberToObject(js, "failed", sum.n_failed);
        mo = cJSON_AddObjectToObject(js, "metrics");
        so = cJSON_AddObjectToObject(js, "scored");
        for (m = 0; m < ms.n; m++) {
            double v = sum.metric_means ? sum.metric_means[m] : NAN;
            cJSON_AddItemToObject(mo, ms.metrics[m].name, v == v ? cJSON_CreateNumber(v) : cJSON_CreateNull());
            cJSON_AddNumberToObject(so, ms.metrics[m].name, sum.metric_counts ? sum.metric_counts[m] : 0);
        }
        cJSON_AddItemToObject(js, "tokens_k",
                              sum.tokens_k == sum.tokens_k ? cJSON_CreateNumber(sum.tokens_k) : cJSON_CreateNull());
        cJSON_AddItemToObject(js, "turns", sum.turns == sum.turns ? cJSON_CreateNumber(sum.turns) : cJSON_CreateNull());
        text = cJSON_Print(js);
        if (cllm_write_file_atomic(summary_path, text, strlen(text), &err) != CLLM_OK) { fail(&err); rc = 1; }
        cJSON_free(text);
    }
done:
    cJSON_Delete(js);
    cllm_eval_summary_free(&sum);
    free_metric_set(&ms);
    free_sides(&sd);
    cllm_tasks_free(tasks, n);
    return rc;
}

/* mr: scores given candidates. Each input line is a task (single_turn_* fields) plus "history"
   (messages ending with the user's) and "candidates" (strings); each output line lists the
   candidates with their MR, its standard deviation, every sample's rewards and sessions. */
typedef struct { const cllm_mr_config *mr; const sides *sd; const char *task_desc; int failed; } mr_ctx;

static int mr_one(const cJSON *line, void *vctx) {
    mr_ctx *c = (mr_ctx *)vctx;
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(line, "history"), *cands = cJSON_GetObjectItemCaseSensitive(line, "candidates"), *it;
    cllm_task task;
    cllm_goal goal;
    cllm_conv history;
    static cllm_mr_item items[64];
    static cllm_mr_result res[64];
    cllm_err err;
    cJSON *out, *arr;
    int k = 0, i, s, m;
    memset(&task, 0, sizeof task);
    memset(&history, 0, sizeof history);
    task.json = (cJSON *)line;
    task.prompt = (char *)(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(line, "single_turn_prompt")) ? cJSON_GetObjectItemCaseSensitive(line, "single_turn_prompt")->valuestring : NULL);
    task.completion = (char *)(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(line, "single_turn_completion")) ? cJSON_GetObjectItemCaseSensitive(line, "single_turn_completion")->valuestring : "");
    if (!task.prompt || !cJSON_IsArray(cands) || cllm_conv_from_json(&history, hist, &err) != CLLM_OK || history.n == 0) {
        fprintf(stderr, "error: each line needs single_turn_prompt, a non-empty \"history\" and \"candidates\"\n");
        cllm_conv_free(&history);
        return 1;
    }
    goal.task_desc = c->task_desc ? c->task_desc : "a task"; goal.prompt = task.prompt; goal.reference = NULL;
    cJSON_ArrayForEach(it, cands) if (cJSON_IsString(it) && k < 64) { items[k].goal = &goal; items[k].task = &task; items[k].history = &history; items[k].candidate = it->valuestring; k++; }
    cllm_mr_score(c->mr, c->sd->user, c->sd->assistant, items, k, res, &err);
    out = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(out, "candidates");
    for (i = 0; i < k; i++) {
        cJSON *o = cJSON_CreateObject(), *rw = cJSON_AddObjectToObject(o, "rewards"), *ss = cJSON_AddArrayToObject(o, "sessions"), *a;
        cJSON_AddStringToObject(o, "completion", items[i].candidate);
        if (res[i].code == CLLM_OK) { cJSON_AddNumberToObject(o, "score", res[i].mr); cJSON_AddNumberToObject(o, "std", res[i].std); }
        else { cJSON_AddNullToObject(o, "score"); cJSON_AddStringToObject(o, "error", res[i].err.msg); c->failed = 1; }
        a = cJSON_AddArrayToObject(rw, "MR");
        for (s = 0; s < res[i].n_samples; s++) cJSON_AddItemToArray(a, res[i].samples[s].reward == res[i].samples[s].reward ? cJSON_CreateNumber(res[i].samples[s].reward) : cJSON_CreateNull());
        for (m = 0; m < c->mr->n_metrics; m++) {
            a = cJSON_AddArrayToObject(rw, c->mr->metrics[m].name);
            for (s = 0; s < res[i].n_samples; s++) cJSON_AddItemToArray(a, res[i].samples[s].metrics[m] == res[i].samples[s].metrics[m] ? cJSON_CreateNumber(res[i].samples[s].metrics[m]) : cJSON_CreateNull());
        }
        for (s = 0; s < res[i].n_samples; s++) cJSON_AddItemToArray(ss, cllm_conv_to_json(&res[i].samples[s].session));
        cJSON_AddItemToArray(arr, o);
        cllm_mr_result_free(&res[i]);
    }
    print_json_line(out);                     /* prints and frees it */
    cllm_conv_free(&history);
    return 0;
}

static int cmd_mr(int argc, char **argv) {
    static const char *usage = "collabllm mr --input ITEMS.jsonl\n" SIDES_USAGE METRICS_USAGE MR_USAGE "    [--task-desc TEXT]";
    const char *input = need(argc, argv, "--input", usage);
    sides sd;
    metric_set ms;
    cllm_mr_config mr;
    mr_ctx ctx;
    cllm_err err;
    int rc = 1;
    if (!input) return 2;
    memset(&ms, 0, sizeof ms);
    if (!make_sides(&sd, argc, argv, NULL, &err) || !make_metric_set(&ms, argc, argv, &sd, "accuracy:1,interactivity:0.5", &err) || !mr_config_flags(&mr, argc, argv, &ms)) { if (err.msg[0]) fail(&err); goto done; }
    ctx.mr = &mr; ctx.sd = &sd; ctx.task_desc = flag(argc, argv, "--task-desc"); ctx.failed = 0;
    rc = each_json(input, mr_one, &ctx) || ctx.failed;
done:
    free_metric_set(&ms);
    free_sides(&sd);
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
   "add_generation_prompt", "enable_thinking" and "date_string" (into *opts) for itself. Returns
   a malloc'd list of *n messages after `extra` free slots at the front (e.g. for a system
   prompt), pointing into conv; NULL after a message. */
static cllm_message *conversation_of(const cJSON *conv, int extra, cllm_render_opts *opts, int *n) {
    const cJSON *list = cJSON_IsArray(conv) ? conv : cJSON_GetObjectItemCaseSensitive(conv, "messages"), *it;
    cllm_message *msgs;
    *n = extra;
    if (!cJSON_IsArray(list)) { fprintf(stderr, "error: expected a list of messages or {\"messages\": [...]}\n"); return NULL; }
    if (cJSON_IsObject(conv)) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(conv, "add_generation_prompt"), *t = cJSON_GetObjectItemCaseSensitive(conv, "enable_thinking");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(conv, "date_string");
        if (cJSON_IsBool(g)) opts->add_generation_prompt = cJSON_IsTrue(g);
        if (cJSON_IsBool(t)) opts->enable_thinking = cJSON_IsTrue(t);
        if (cJSON_IsString(d)) opts->date_string = d->valuestring;
    }
    if (!(msgs = (cllm_message *)calloc((size_t)cJSON_GetArraySize(list) + (size_t)extra + 1, sizeof *msgs))) { fprintf(stderr, "error: out of memory\n"); return NULL; }
    cJSON_ArrayForEach(it, list) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(it, "role"), *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        msgs[*n].role = cJSON_IsString(r) ? r->valuestring : NULL;
        msgs[*n].content = cJSON_IsString(c) ? c->valuestring : NULL;
        (*n)++;
    }
    return msgs;
}

typedef struct { const cllm_tokenizer *tok; cllm_render_opts opts; } render_ctx;

static int render_one(const cJSON *conv, void *ctx) {
    const render_ctx *rc = (const render_ctx *)ctx;
    cllm_render_opts opts = rc->opts;
    cllm_message *msgs;
    int n = 0, *ids = NULL, n_ids = 0, i, ok;
    unsigned char *mask = NULL;
    char *text = NULL;
    cllm_err err;
    cJSON *out, *m;
    if (!(msgs = conversation_of(conv, 0, &opts, &n))) return 1;
    ok = cllm_chat_render(rc->tok, msgs, n, &opts, &text, &ids, &mask, &n_ids, &err) == CLLM_OK;
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
    render_ctx ctx;
    cllm_tokenizer tok;
    cllm_err err;
    int rc;
    if (!dir || !file) return 2;
    memset(&ctx, 0, sizeof ctx);
    ctx.opts.add_generation_prompt = has_switch(argc, argv, "--add-generation-prompt");
    ctx.opts.enable_thinking = has_switch(argc, argv, "--enable-thinking");
    ctx.opts.date_string = flag(argc, argv, "--date");
    if (cllm_tokenizer_load(&tok, dir, &err) != CLLM_OK) return fail(&err);
    ctx.tok = &tok;
    rc = each_json(file, render_one, &ctx);
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

/* ---- online-dpo / ppo / grpo: the policy trained on its own responses, scored by MR ------------ */
/* The policy (--model) answers the prompts, MR scores the answers with the user side as the
   simulator and the policy itself as the future assistant, and the trainer updates the policy
   (data_fmt/train_online.md). Prompts come from --prompts (records or a prompts file,
   data_fmt/train_prompts.md) or --tasks (the simulator's openings, made once into OUT/prompts.jsonl). */

#define ONLINE_USAGE \
    "    (--prompts PROMPTS.jsonl | --tasks TASKS.jsonl [--task-desc TEXT] [--show-reference]) [--ref DIR]\n" \
    "    (--user-model M | --user-model-dir DIR) [--user-temperature T] [--termination TEXT] [--json-mode]\n" \
    "    [--base-url URL] [--api-key-env NAME] [--{user,judge}-base-url URL] [--concurrency N]\n" \
    "    [--assistant-temperature T] [--assistant-max-tokens N] (the policy as MR's future assistant)\n" \
    "    [--temperature T] [--top-k K] [--top-p P] [--max-new-tokens N] [--system TEXT] [--logprob-tol X]\n" \
    METRICS_USAGE MR_USAGE \
    "    [--metrics-file PATH (default OUT/metrics.jsonl; --metrics names the reward's metrics)]\n"

typedef struct {
    sides               sd;           /* sd.lm[1] is the policy */
    metric_set          ms;
    cllm_mr_config      mr;
    cllm_online_prompts prompts;
    cllm_task          *tasks;
    int                 n_tasks;
    cllm_model          ref;
    cllm_lora           lora;
    int                 use_lora, max_length;
    cllm_train_config   train;
    cllm_rollout_config rollout;
} online_run;

static void online_free(online_run *o) {
    cllm_lora_free(&o->lora);
    cllm_model_free(&o->ref);
    cllm_online_prompts_free(&o->prompts);
    cllm_tasks_free(o->tasks, o->n_tasks);
    free_metric_set(&o->ms);
    free_sides(&o->sd);
}

/* Everything the three commands share: flags, the policy, the simulator, the reward, the
   prompts, LoRA and (need_ref) the reference. Returns 0, or the exit status after a message. */
static int online_setup(online_run *o, int argc, char **argv, const char *usage, int need_ref) {
    const char *dir = need(argc, argv, "--model", usage), *out = need(argc, argv, "--out", usage);
    const char *prompts = flag(argc, argv, "--prompts"), *tasks = flag(argc, argv, "--tasks"), *ref_dir = flag(argc, argv, "--ref");
    double temp, top_k, top_p, max_new, tol;
    cllm_lora_config lcfg;
    cllm_prompts_config pc;
    cllm_err err;
    memset(o, 0, sizeof *o);
    if (!dir || !out) return 2;
    if (!prompts == !tasks) { fprintf(stderr, "give one of --prompts and --tasks\nusage: %s\n", usage); return 2; }
    if (!flag(argc, argv, "--user-model") == !flag(argc, argv, "--user-model-dir")) { fprintf(stderr, "give one of --user-model and --user-model-dir\nusage: %s\n", usage); return 2; }
    if (!train_flags(argc, argv, &o->train, &o->max_length, &o->use_lora, &lcfg) ||
        !num_flag(argc, argv, "--temperature", 0, 1e6, 0, &temp) || !num_flag(argc, argv, "--top-k", -1, 1e9, 0, &top_k) ||
        !num_flag(argc, argv, "--top-p", 0, 1, 0, &top_p) || !num_flag(argc, argv, "--max-new-tokens", 0, 1e7, 0, &max_new) ||
        !num_flag(argc, argv, "--logprob-tol", -1, 1e9, 0, &tol)) return 2;
    /* --metrics names the reward's metrics here; the metrics JSONL goes to --metrics-file */
    o->train.metrics_path = flag(argc, argv, "--metrics-file");
    if (flag(argc, argv, "--temperature") && temp == 0) { fprintf(stderr, "--temperature: online training samples its responses (> 0)\n"); return 2; }
    o->rollout.gen.sampler.temperature = (float)temp;
    o->rollout.gen.sampler.top_k = flag(argc, argv, "--top-k") && top_k == 0 ? -1 : (int)top_k;   /* an explicit 0 = off */
    o->rollout.gen.sampler.top_p = (float)top_p;
    o->rollout.gen.max_new_tokens = (int)max_new;
    o->rollout.system_prompt = flag(argc, argv, "--system");
    o->rollout.logprob_tol = tol;
    make_dir(out);
    if (cllm_local_lm_load(&o->sd.lm[1], dir, &err) != CLLM_OK || !make_user_side(&o->sd, argc, argv, NULL, &err)) return fail(&err);
    local_assistant_side(&o->sd, &o->sd.lm[1], argc, argv);
    err.msg[0] = 0;
    if (!make_metric_set(&o->ms, argc, argv, &o->sd, "accuracy:1,interactivity:0.5", &err) || !mr_config_flags(&o->mr, argc, argv, &o->ms)) {
        if (err.msg[0]) fail(&err);
        return 1;
    }
    o->rollout.mr = &o->mr; o->rollout.user = o->sd.user; o->rollout.future = o->sd.assistant;
    o->rollout.user_lm = flag(argc, argv, "--user-model-dir") ? &o->sd.lm[0] : NULL;
    memset(&pc, 0, sizeof pc);
    pc.task_desc = flag(argc, argv, "--task-desc");
    pc.show_reference = has_switch(argc, argv, "--show-reference");
    if (prompts && cllm_online_prompts_read(&o->prompts, prompts, &pc, &err) != CLLM_OK) return fail(&err);
    if (tasks) {
        char cache[4096];
        snprintf(cache, sizeof cache, "%s/prompts.jsonl", out);         /* the openings, simulated once */
        if (cllm_tasks_read_jsonl(tasks, &o->tasks, &o->n_tasks, &err) != CLLM_OK ||
            cllm_online_prompts_from_tasks(&o->prompts, o->tasks, o->n_tasks, o->sd.user, &pc, cache, &err) != CLLM_OK) return fail(&err);
    }
    /* the reference: --ref, else (when needed) a frozen copy of --model; with LoRA the base model */
    if (ref_dir || (need_ref && !o->use_lora))
        if (cllm_model_load(&o->ref, ref_dir ? ref_dir : dir, &err) != CLLM_OK) return fail(&err);
    if (o->use_lora && cllm_lora_init(&o->lora, &o->sd.lm[1].model, &lcfg, &err) != CLLM_OK) return fail(&err);
    if (!o->train.quiet) fprintf(stderr, "online: %d prompts\n", o->prompts.n);
    return 0;
}

static cllm_model *online_ref(online_run *o) { return o->ref.params_memory ? &o->ref : NULL; }

static int cmd_online_dpo(int argc, char **argv) {
    static const char *usage = "collabllm online-dpo --model DIR --out DIR [--beta 0.1] [--loss sigmoid|ipo] [--max-length 512] [--rpo-alpha A]\n" ONLINE_USAGE TRAIN_FLAGS_USAGE;
    const char *loss = flag(argc, argv, "--loss");
    cllm_online_dpo_config c;
    online_run o;
    cllm_err err;
    double beta, rpo;
    int rc;
    memset(&c, 0, sizeof c);
    if (!num_flag(argc, argv, "--beta", 1e-9, 1e9, 0, &beta) || !num_flag(argc, argv, "--rpo-alpha", 0, 1e9, 0, &rpo)) return 2;
    if (loss && strcmp(loss, "sigmoid") && strcmp(loss, "ipo")) { fprintf(stderr, "--loss: '%s' is not sigmoid or ipo\n", loss); return 2; }
    if ((rc = online_setup(&o, argc, argv, usage, 1)) == 0) {
        c.rollout = o.rollout; c.beta = beta; c.max_length = o.max_length; c.rpo_alpha = rpo;
        c.loss_type = loss && !strcmp(loss, "ipo") ? CLLM_DPO_IPO : CLLM_DPO_SIGMOID;
        rc = cllm_train_online_dpo(&o.sd.lm[1], o.use_lora ? &o.lora : NULL, online_ref(&o), &o.prompts, &c, &o.train, &err) == CLLM_OK ? 0 : fail(&err);
    }
    online_free(&o);
    return rc;
}

static int cmd_ppo(int argc, char **argv) {
    static const char *usage =
        "collabllm ppo --model DIR --out DIR [--ppo-epochs 4] [--mini-batches 1] [--kl-coef 0.05] [--kl-estimator k1|k3]\n"
        "    [--cliprange 0.2] [--cliprange-value 0.2] [--vf-coef 0.1] [--gamma 1] [--lam 0.95] [--whiten-rewards]\n"
        "    [--reward-placement after-eos|last-token] [--pad-is-eos] [--biased-whiten] [--missing-eos-penalty P]\n"
        "    [--score-scaling scale|norm] [--kl-target T] [--kl-horizon 10000]   (legacy TRL, as CollabLLM's script)\n" ONLINE_USAGE TRAIN_FLAGS_USAGE;
    const char *est = flag(argc, argv, "--kl-estimator"), *place = flag(argc, argv, "--reward-placement"), *scaling = flag(argc, argv, "--score-scaling");
    double epochs, mb, kl, cr, crv, vf, gamma, lam, pen, target, horizon;
    cllm_ppo_config c;
    online_run o;
    cllm_err err;
    int rc;
    memset(&c, 0, sizeof c);
    if (!num_flag(argc, argv, "--ppo-epochs", 0, 1e6, 0, &epochs) || !num_flag(argc, argv, "--mini-batches", 0, 1e6, 0, &mb) ||
        !num_flag(argc, argv, "--kl-coef", 0, 1e6, 0, &kl) || !num_flag(argc, argv, "--cliprange", 0, 1e6, 0, &cr) ||
        !num_flag(argc, argv, "--cliprange-value", 0, 1e6, 0, &crv) || !num_flag(argc, argv, "--vf-coef", 0, 1e6, 0, &vf) ||
        !num_flag(argc, argv, "--gamma", 0, 1, 1, &gamma) || !num_flag(argc, argv, "--lam", 0, 1, 0.95, &lam) ||
        !num_flag(argc, argv, "--missing-eos-penalty", -1e6, 1e6, 0, &pen) || !num_flag(argc, argv, "--kl-target", 0, 1e9, 0, &target) ||
        !num_flag(argc, argv, "--kl-horizon", 1e-9, 1e12, 10000, &horizon)) return 2;
    if (scaling && strcmp(scaling, "scale") && strcmp(scaling, "norm")) { fprintf(stderr, "--score-scaling: '%s' is not scale or norm\n", scaling); return 2; }
    if (est && strcmp(est, "k1") && strcmp(est, "k3")) { fprintf(stderr, "--kl-estimator: '%s' is not k1 or k3\n", est); return 2; }
    if (place && strcmp(place, "after-eos") && strcmp(place, "last-token")) { fprintf(stderr, "--reward-placement: '%s' is not after-eos or last-token\n", place); return 2; }
    c.ppo_epochs = (int)epochs; c.mini_batches = (int)mb;
    c.kl_coef = flag(argc, argv, "--kl-coef") && kl == 0 ? -1 : kl;          /* the config's "negative = 0" */
    c.gamma = gamma == 0 ? -1 : gamma; c.lam = lam == 0 ? -1 : lam;
    c.cliprange = cr; c.cliprange_value = crv; c.vf_coef = vf; c.missing_eos_penalty = pen;
    c.kl_estimator = est && !strcmp(est, "k3") ? CLLM_KL_K3 : CLLM_KL_K1;
    c.reward_placement = place && !strcmp(place, "last-token") ? CLLM_REWARD_LAST_TOKEN : CLLM_REWARD_AFTER_EOS;
    c.whiten_rewards = has_switch(argc, argv, "--whiten-rewards");
    c.pad_is_eos = has_switch(argc, argv, "--pad-is-eos");
    c.biased_whiten = has_switch(argc, argv, "--biased-whiten");
    c.score_scaling = !scaling ? CLLM_SCORE_RAW : !strcmp(scaling, "norm") ? CLLM_SCORE_NORM : CLLM_SCORE_SCALE;
    c.kl_target = target; c.kl_horizon = horizon;
    if ((rc = online_setup(&o, argc, argv, usage, 1)) == 0) {
        c.rollout = o.rollout;
        rc = cllm_train_ppo(&o.sd.lm[1], o.use_lora ? &o.lora : NULL, online_ref(&o), NULL, &o.prompts, &c, &o.train, &err) == CLLM_OK ? 0 : fail(&err);
    }
    online_free(&o);
    return rc;
}

static int cmd_grpo(int argc, char **argv) {
    static const char *usage =
        "collabllm grpo --model DIR --out DIR [--num-generations 8] [--beta 0] [--epsilon 0.2] [--epsilon-high E]\n"
        "    [--no-scale-rewards] [--loss bnpo|grpo|dr_grpo]\n" ONLINE_USAGE TRAIN_FLAGS_USAGE;
    static const char *losses[] = { "bnpo", "grpo", "dr_grpo" };
    const char *loss = flag(argc, argv, "--loss");
    double g, beta, eps, eps_high;
    cllm_grpo_config c;
    online_run o;
    cllm_err err;
    int rc, i;
    memset(&c, 0, sizeof c);
    if (!num_flag(argc, argv, "--num-generations", 0, 65536, 0, &g) || !num_flag(argc, argv, "--beta", 0, 1e6, 0, &beta) ||
        !num_flag(argc, argv, "--epsilon", 0, 1, 0, &eps) || !num_flag(argc, argv, "--epsilon-high", 0, 1e6, 0, &eps_high)) return 2;
    for (i = 0; loss && i < 3 && strcmp(loss, losses[i]) != 0; i++) {}
    if (loss && i == 3) { fprintf(stderr, "--loss: '%s' is not bnpo, grpo or dr_grpo\n", loss); return 2; }
    c.num_generations = (int)g; c.beta = beta; c.epsilon = eps; c.epsilon_high = eps_high;
    c.scale_rewards = has_switch(argc, argv, "--no-scale-rewards") ? -1 : 1;
    c.loss_type = loss ? i : CLLM_GRPO_BNPO;
    if ((rc = online_setup(&o, argc, argv, usage, beta > 0)) == 0) {
        c.rollout = o.rollout;
        rc = cllm_train_grpo(&o.sd.lm[1], o.use_lora ? &o.lora : NULL, online_ref(&o), &o.prompts, &c, &o.train, &err) == CLLM_OK ? 0 : fail(&err);
    }
    online_free(&o);
    return rc;
}

/* ---- generate: a local model's responses to conversations ------------------------------------ */
/* The same conversation files as render (one, or JSONL); one JSON line per response, in file
   order (data_fmt/generate.md). Conversation i is seeded with (--seed, i), so a rerun, or a
   run over the file's first k conversations, reproduces the same lines. */

typedef struct {
    cllm_local_lm        *lm;
    cllm_local_gen_config gen;
    const char           *system;
    int                   n_samples, index;
} generate_ctx;

static int generate_one(const cJSON *value, void *ctx) {
    generate_ctx *g = (generate_ctx *)ctx;
    cllm_local_gen_config gen = g->gen;
    cllm_local_output *out = (cllm_local_output *)calloc((size_t)g->n_samples, sizeof *out);
    cllm_conv conv;
    cllm_err err;
    int s, sys = g->system != NULL, rc = 1;
    memset(&conv, 0, sizeof conv);
    if (!out) { fprintf(stderr, "error: out of memory\n"); return 1; }
    if ((conv.msgs = conversation_of(value, sys, &gen.render, &conv.n)) != NULL) {
        if (sys) { conv.msgs[0].role = "system"; conv.msgs[0].content = g->system; }
        g->lm->calls = (uint64_t)g->index;
        if (cllm_local_chat(g->lm, &conv, 1, g->n_samples, &gen, out, &err) != CLLM_OK) fail(&err);
        else {
            for (s = 0; s < g->n_samples; s++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddNumberToObject(o, "conversation", g->index);
                cJSON_AddNumberToObject(o, "sample", s);
                cJSON_AddStringToObject(o, "text", out[s].text);
                add_generated(o, out[s].ids, out[s].logprobs, out[s].n, out[s].finish);
                cJSON_AddNumberToObject(o, "prompt_tokens", out[s].n_prompt);
                print_json_line(o);
            }
            rc = 0;
        }
    }
    g->index++;
    cllm_local_outputs_free(out, g->n_samples);
    free(out); free(conv.msgs);
    return rc;
}

static int cmd_generate(int argc, char **argv) {
    static const char *usage = "collabllm generate --model DIR --messages FILE.json [--n N] [--temperature T (0 = greedy)] [--top-k K] [--top-p P]\n"
                               "    [--max-new-tokens M] [--seed S] [--system TEXT] [--stop TEXT] [--keep-special-tokens] [--enable-thinking] [--date TEXT]";
    const char *dir = need(argc, argv, "--model", usage), *file = need(argc, argv, "--messages", usage);
    const char *stop = flag(argc, argv, "--stop");
    generate_ctx ctx;
    cllm_local_lm lm;
    cllm_err err;
    double n;
    int rc;
    if (!dir || !file) return 2;
    memset(&ctx, 0, sizeof ctx);
    if (!num_flag(argc, argv, "--n", 1, 65536, 1, &n) || !sampling_flags(argc, argv, &ctx.gen)) return 2;
    ctx.n_samples = (int)n;
    ctx.system = flag(argc, argv, "--system");
    if (stop) { ctx.gen.stop = &stop; ctx.gen.n_stop = 1; }
    ctx.gen.keep_special = has_switch(argc, argv, "--keep-special-tokens");
    ctx.gen.render.enable_thinking = has_switch(argc, argv, "--enable-thinking");
    ctx.gen.render.date_string = flag(argc, argv, "--date");
    if (cllm_local_lm_load(&lm, dir, &err) != CLLM_OK) return fail(&err);
    ctx.lm = &lm;
    rc = each_json(file, generate_one, &ctx);
    cllm_local_lm_free(&lm);
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
    { "mr", cmd_mr, "multiturn-aware reward of candidate responses (simulated futures, metrics, R*)" },
    { "generate-data", cmd_generate_data, "CollabLLM data generation: MR-scored candidates per turn -> records (resumable)" },
    { "build-pairs", cmd_build_pairs, "records -> SFT rows and DPO pairs (TRL formats)" },
    { "eval", cmd_eval, "one conversation per task with the simulator; metrics, tokens, ITR" },
    { "generate", cmd_generate, "a local model's responses to conversations: JSON lines of text, ids, logprobs, finish" },
    { "sft", cmd_sft, "supervised fine-tuning on {\"messages\"} rows (full or LoRA), resumable checkpoints" },
    { "dpo", cmd_dpo, "offline DPO on preference pairs (sigmoid/cDPO, robust, hinge, IPO), resumable checkpoints" },
    { "online-dpo", cmd_online_dpo, "online DPO: two responses per prompt, the higher MR chosen (TRL OnlineDPOTrainer)" },
    { "ppo", cmd_ppo, "PPO on MR with a value head, GAE and clipped losses (TRL v0.19 PPOTrainer)" },
    { "grpo", cmd_grpo, "GRPO on MR: G responses per prompt, group-normalised advantages (TRL v0.19)" },
};

int main(int argc, char **argv) {
    size_t i;
    if (argc >= 2) for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "usage: collabllm COMMAND [flags]\n\ncommands:\n");
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(stderr, "  %-14s %s\n", commands[i].name, commands[i].help);
    return argc >= 2 && strcmp(argv[1], "help") == 0 ? 0 : 2;
}
