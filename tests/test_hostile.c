/* test_hostile.c - a hostile or broken OpenAI-compatible endpoint leaks nothing, loses nothing
   and holds memory bounded (issue 13).

   A server process (tests/hostile_server.c over tests/mock_openai.c, loopback only) answers
   each request with the fault its model name picks. Every case runs in a process of its own: a
   fork that calls the library, or the collabllm command line. Short timeouts and deadlines are
   set through the client's configuration (flags for the command line), never left at the
   defaults. The parent measures each case's wall time and peak resident memory (wait4), kills
   it past its bound, and checks:
     - the outcome: success with the right content, or a failure whose message says what
       happened (checked in the case itself);
     - wall time within the case's bound, peak RSS <= 512 MB;
     - no 8 bytes in a row of the API key in the case's stdout, stderr or any file it wrote;
     - every one of those files is valid UTF-8 (a strict decoder written here, independent of
       the library's).
   The table (case, outcome, peak RSS, wall time) is printed and written to
   $BUILD/tmp_hostile/table.md. */
/* no-fast-path: the client and the CLI on API models, no model kernel (make test runs it in its first pass only) */
#define _DEFAULT_SOURCE                   /* wait4 */
#include "mock_openai.c"
#include "hostile_server.c"
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define RSS_BUDGET_MB 512.0

/* Under AddressSanitizer, freed blocks wait in a quarantine (256 MB by default) before they are
   reused, which would count as our memory; a small quarantine keeps the RSS figure about us. */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=16"; }
#endif

static const char *build_dir;
static char case_dir[512], base_url[128], cli[512];
static int other_port;

/* ---- what a library case does (in its child) ---------------------------------------------------- */

typedef struct case_opts {
    int       retries;                    /* 0: none (the config's -1)                          */
    long      deadline_ms, backoff_max_ms;
    long      timeout_ms;                 /* per attempt (default 4000)                          */
    int       reject_incomplete;
    int       n;                          /* requests in one batch (default 1)                 */
} case_opts;

static void on_wait_record(void *ctx, const char *line) {
    FILE *f = fopen((const char *)ctx, "ab");
    if (f) { fprintf(f, "%s\n", line); fclose(f); }
}

/* A client on the hostile server with the case's limits; every wait line goes to DIR/NAME.waits. */
static void client_open(cllm_client *c, const char *name, const case_opts *o) {
    static char waits[600];
    cllm_client_config cfg;
    cllm_err err;
    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = base_url;
    cfg.api_key_env = "HOSTILE_KEY";
    cfg.max_retries = o->retries > 0 ? o->retries : -1;
    cfg.backoff_ms = 20;
    cfg.backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 2000;
    cfg.deadline_ms = o->deadline_ms ? o->deadline_ms : 5000;
    cfg.timeout_ms = o->timeout_ms ? o->timeout_ms : 4000;
    cfg.connect_timeout_ms = 2000;
    cfg.reject_incomplete = o->reject_incomplete;
    cfg.seed = 1;
    snprintf(waits, sizeof waits, "%s/%s.waits", case_dir, name);
    cfg.on_wait = on_wait_record;
    cfg.on_wait_ctx = waits;
    if (cllm_client_init(c, &cfg, &err) != CLLM_OK) { printf("client init: %s\n", err.msg); exit(3); }
}

/* Writes each result as a JSON line to DIR/NAME.json (through the library's own JSON writer),
   and the first one's outcome to DIR/NAME.outcome (the table's column). */
static void record(const char *name, const cllm_chat_result *res, int n, double seconds) {
    char path[600];
    FILE *f;
    int i;
    snprintf(path, sizeof path, "%s/%s.json", case_dir, name);
    f = fopen(path, "wb");
    for (i = 0; f && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        char *line;
        cJSON_AddStringToObject(o, "code", cllm_result_string(res[i].code));
        cJSON_AddNumberToObject(o, "http_status", (double)res[i].http_status);
        cJSON_AddNumberToObject(o, "attempts", res[i].attempts);
        cJSON_AddNumberToObject(o, "content_bytes", res[i].content ? (double)strlen(res[i].content) : -1);
        if (res[i].content && strlen(res[i].content) < 4096) cJSON_AddStringToObject(o, "content", res[i].content);
        cJSON_AddStringToObject(o, "finish_reason", res[i].finish_reason);
        cJSON_AddNumberToObject(o, "replaced", res[i].replaced);
        cJSON_AddStringToObject(o, "error", res[i].err.msg);
        line = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", line);
        cJSON_free(line);
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/%s.outcome", case_dir, name);
    if ((f = fopen(path, "wb")) != NULL) {
        const cllm_chat_result *r = &res[0];
        if (r->code == CLLM_OK) fprintf(f, "ok: %zu bytes, finish_reason \"%s\", %d replaced, %d attempt(s), %.2f s",
                                        strlen(r->content), r->finish_reason, r->replaced, r->attempts, seconds);
        else fprintf(f, "%s%s: %s", n > 1 ? "all 16: " : "", cllm_result_string(res[0].code), res[0].err.msg);
        fclose(f);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sends o->n (default 1) requests to `model` in one batch; results (o->n) are the caller's. */
static double ask(const char *name, const char *model, const case_opts *o, cllm_chat_result *res) {
    cllm_client c;
    cllm_message msg = { "user", "Say something." };
    cllm_chat_request req[16];
    int i, n = o->n ? o->n : 1;
    double t0;
    memset(req, 0, sizeof req);
    for (i = 0; i < n; i++) { req[i].messages = &msg; req[i].n_messages = 1; req[i].params.model = model; }
    client_open(&c, name, o);
    t0 = now_s();
    cllm_client_chat_batch(&c, req, n, res, NULL);
    t0 = now_s() - t0;
    cllm_client_free(&c);
    record(name, res, n, t0);
    return t0;
}

static void free_results(cllm_chat_result *res, int n) {
    int i;
    for (i = 0; i < n; i++) cllm_chat_result_free(&res[i]);
}

/* DIR/NAME.EXT, read whole (NULL if absent). */
static char *slurp(const char *name, const char *ext) {
    char path[600], *text = NULL;
    size_t len;
    cllm_err err;
    snprintf(path, sizeof path, "%s/%s.%s", case_dir, name, ext);
    if (cllm_read_file(path, &text, &len, &err) != CLLM_OK) return NULL;
    return text;
}

/* ---- the library cases --------------------------------------------------------------------------
   Most cases are one row of the table below: the calls must return `code`, with `want` as the
   content (CLLM_OK, after `attempts` attempts, `replaced` replacements and finish_reason
   `finish`, default "stop"), or with every '|'-separated phrase of `want` in the message. A case
   may add checks of its own (`extra`). */

struct hcase;
typedef void (*case_fn)(const struct hcase *hc);

typedef struct hcase {
    const char *name;                     /* the model the server sees (library cases)          */
    const char *fault;                    /* for the table                                       */
    double      bound_s;                  /* wall-time bound                                     */
    case_opts   opts;                     /* the client's limits                                 */
    cllm_result code;                     /* what every call must return ...                     */
    const char *want;                     /* ... with this content, or these phrases ('|')       */
    int         attempts, replaced;       /* for a success                                       */
    const char *finish;                   /* for a success (default "stop")                      */
    double      wait_min, wait_max;       /* the batch's time, when it must wait (seconds)       */
    case_fn     extra;                    /* checks of its own (optional)                        */
    const char *args;                     /* a command-line case: collabllm's arguments ({U} base
                                             URL, {D} DIR/NAME, {T} the task file) ...          */
    void      (*after)(const char *name, int status);   /* ... and its checks, in the parent     */
} hcase;

static double last_seconds;               /* how long the case's batch took                      */

/* A conversation with the endpoint's reply as its assistant message, written as a JSON line
   (the library's writer: the file is then checked for the key and for UTF-8). */
static void write_conv(const char *name, const char *text, const cllm_chat_result *r) {
    cllm_conv c;
    cllm_msg_meta meta;
    cJSON *j;
    char path[600], *line;
    FILE *f;
    memset(&c, 0, sizeof c);
    memset(&meta, 0, sizeof meta);
    if (r) {
        snprintf(meta.finish_reason, sizeof meta.finish_reason, "%s", r->finish_reason);
        meta.replaced = r->replaced;
    }
    cllm_conv_push(&c, "user", "hi", NULL);
    cllm_conv_push_meta(&c, "assistant", text, &meta, NULL);
    j = cllm_conv_to_json(&c);
    line = cJSON_PrintUnformatted(j);
    snprintf(path, sizeof path, "%s/%s.conv.jsonl", case_dir, name);
    if ((f = fopen(path, "wb")) != NULL) { fprintf(f, "%s\n", line); fclose(f); }
    cJSON_free(line);
    cJSON_Delete(j);
    cllm_conv_free(&c);
}

/* The row's expectation: one success with the content, or every call failing with the phrases. */
static void run_expectation(const struct hcase *hc) {
    cllm_chat_result res[16];
    const char *finish = hc->finish ? hc->finish : "stop";
    char label[600], phrases[400], *p, *next;
    int i, n = hc->opts.n ? hc->opts.n : 1, ok = 1;
    last_seconds = ask(hc->name, hc->name, &hc->opts, res);
    if (hc->code == CLLM_OK) {
        snprintf(label, sizeof label, "%s: succeeds after %d attempt(s) with \"%s\", finish_reason \"%s\", %d replaced",
                 hc->name, hc->attempts, hc->want, finish, hc->replaced);
        ok = res[0].code == CLLM_OK && !strcmp(res[0].content, hc->want) && res[0].attempts == hc->attempts &&
             res[0].replaced == hc->replaced && !strcmp(res[0].finish_reason, finish);
        if (!check_true(label, ok)) printf("    got %s: %s\n", cllm_result_string(res[0].code),
                                           res[0].code ? res[0].err.msg : res[0].content);
        if (res[0].content) write_conv(hc->name, res[0].content, &res[0]);
    } else {
        for (i = 0; i < n; i++) {
            int ok_i = res[i].code == hc->code && res[i].content == NULL;
            snprintf(phrases, sizeof phrases, "%s", hc->want);
            for (p = phrases; p; p = next) {
                if ((next = strchr(p, '|')) != NULL) *next++ = 0;
                ok_i &= strstr(res[i].err.msg, p) != NULL;
            }
            if (i == 0 || !ok_i) printf("    [%d] %s: %s\n", i, cllm_result_string(res[i].code), res[i].err.msg);
            ok &= ok_i;
        }
        snprintf(label, sizeof label, "%s: %d request(s) fail with %s, naming \"%s\"", hc->name, n,
                 cllm_result_string(hc->code), hc->want);
        check_true(label, ok);
    }
    if (hc->wait_max > 0) {
        snprintf(label, sizeof label, "%s: waited %.2f s, in [%.2f, %.2f) s", hc->name, last_seconds, hc->wait_min,
                 hc->wait_max);
        check_true(label, last_seconds >= hc->wait_min && last_seconds < hc->wait_max);
    }
    free_results(res, n);
}

static void x_big_valid(const struct hcase *hc) {
    cllm_chat_result r;
    size_t i, bad = 0, tl = strlen(HOSTILE_TEXT);
    ask(hc->name, hc->name, &hc->opts, &r);
    for (i = 0; r.content && i < HOSTILE_BIG; i++) bad += r.content[i] != HOSTILE_TEXT[i % tl];
    check_true("a valid 60 MiB reply arrives whole: every byte as sent",
               r.code == CLLM_OK && strlen(r.content) == HOSTILE_BIG && bad == 0);
    cllm_chat_result_free(&r);
}

static void x_deep_lenient(const struct hcase *hc) {
    char *deep = (char *)malloc(100001);
    cllm_err err;
    cJSON *obj;
    double t0;
    memset(deep, '{', 100000);
    deep[100000] = 0;
    t0 = now_s();
    obj = cllm_json_parse_lenient(deep, &err);
    printf("    lenient parse of 100000 '{': %s in %.2f s\n", err.msg, now_s() - t0);
    check_true("a model reply of 100000 nested '{' is refused by the lenient parser in under 5 s",
               !obj && now_s() - t0 < 5.0);
    free(deep);
    (void)hc;
}

static void x_flagged(const struct hcase *hc) {
    cllm_msg_meta meta;
    memset(&meta, 0, sizeof meta);
    snprintf(meta.finish_reason, sizeof meta.finish_reason, "%s", hc->finish);
    check_true("cllm_msg_incomplete flags the message", cllm_msg_incomplete(&meta));
}

static void x_not_followed(const struct hcase *hc) {
    char where[64], hits[600], *json;
    snprintf(where, sizeof where, "redirects to http://127.0.0.1:%d/", other_port);
    snprintf(hits, sizeof hits, "%s/redirect_target_hits", case_dir);
    json = slurp(hc->name, "json");
    check_true("the message names the other port, which never saw a request (nor the key)",
               json && strstr(json, where) && access(hits, F_OK) != 0);
    cllm_free_buffer(json);
}

/* The key as the reply's text, given to the LLM user simulator: its error must not quote it. */
static void x_key_reply(const struct hcase *hc) {
    cllm_client c;
    cllm_llm_sim sim;
    cllm_llm_sim_config sc;
    cllm_goal goal = { "a task", "write a haiku", NULL };
    cllm_conv hist;
    cllm_reply rep;
    cllm_err err;
    char path[600];
    FILE *f;
    memset(&hist, 0, sizeof hist);
    memset(&rep, 0, sizeof rep);
    memset(&sc, 0, sizeof sc);
    sc.params.model = hc->name;
    sc.max_parse_retries = 1;
    client_open(&c, hc->name, &hc->opts);
    cllm_llm_sim_init(&sim, &c, &sc);
    cllm_user_sim_turns(&sim.sim, &goal, &hist, 1, &rep, &err);
    printf("    %s\n", rep.err.msg);
    snprintf(path, sizeof path, "%s/%s.outcome", case_dir, hc->name);
    if ((f = fopen(path, "wb")) != NULL) { fprintf(f, "%s: %s", cllm_result_string(rep.code), rep.err.msg); fclose(f); }
    check_true("the simulator's reply \"<key> is what you sent me\" fails as unusable, quoted with [redacted]",
               rep.code == CLLM_ERR_FORMAT && strstr(rep.err.msg, "starting \"[redacted] is what you sent me\""));
    write_conv(hc->name, rep.err.msg, NULL);
    cllm_reply_free(&rep);
    cllm_client_free(&c);
}

/* ---- the command-line cases: argv after `collabllm`, then checks in the parent ------------------- */

static char cli_outcome[700];             /* what a command-line case showed, for the table     */


static void a_sim_key(const char *name, int status) {
    char *conv = slurp(name, "conv.jsonl");
    const char *said = conv ? strstr(conv, "my key is") : NULL;
    snprintf(cli_outcome, sizeof cli_outcome, "exit %d; the user's message: \"%.*s\"", status,
             said ? (int)strcspn(said, "\"") : 0,
             said ? said : "");
    check_true("simulate: exit 0; the simulator's message keeps its text, the key (plain and \\u-escaped) [redacted]",
               status == 0 && conv && strstr(conv, "my key is [redacted], or [redacted]") != NULL);
    cllm_free_buffer(conv);
}

static void a_sim_wait(const char *name, int status) {
    char *err = slurp(name, "err");
    const char *line = err ? strstr(err, "waiting ") : NULL, *p;
    int lines = 0;
    for (p = err; p && (p = strstr(p, "waiting ")) != NULL; p++) lines++;
    while (line && line > err && line[-1] != '\n') line--;
    printf("    stderr: %.*s\n", line ? (int)strcspn(line, "\n") : 0, line ? line : "");
    snprintf(cli_outcome, sizeof cli_outcome, "exit %d; %d line on stderr: \"%.*s\"", status, lines,
             line ? (int)strcspn(line, "\n") : 0,
             line ? line : "");
    check_true("simulate: a 6 s Retry-After prints one stderr line: who (user, model sim-wait6), why (429), how long",
               status == 0 && lines == 1 && strstr(err, "user: http://127.0.0.1") && strstr(err, "model sim-wait6") &&
               strstr(err, "waiting 6.0 s") && strstr(err, "HTTP 429: rate limited (Retry-After 6 s)"));
    cllm_free_buffer(err);
}

static void a_big_valid(const char *name, int status) {
    char path[600], *line = NULL;
    size_t cap = 0;
    long len;
    FILE *f;
    snprintf(path, sizeof path, "%s/%s.conv.jsonl", case_dir, name);
    f = fopen(path, "rb");
    len = f ? cllm_read_line(f, &line, &cap) : -9;
    if (f) fclose(f);
    printf("    the conversation line is %ld bytes\n", len);
    snprintf(cli_outcome, sizeof cli_outcome, "exit %d; the conversation line (%ld bytes) reads back", status, len);
    check_true("simulate with a 60 MiB assistant reply: exit 0, and our own reader takes its line back",
               status == 0 && len > (long)HOSTILE_BIG && len < (long)CLLM_MAX_LINE_BYTES);
    free(line);
}

static void a_sim_utf8(const char *name, int status) {
    char *conv = slurp(name, "conv.jsonl");
    snprintf(cli_outcome, sizeof cli_outcome, "exit %d; the message is written with U+FFFD and \"replaced\":10",
             status);
    check_true("simulate: the assistant's invalid UTF-8 is written as U+FFFD with \"replaced\":10 on its message",
               status == 0 && conv && strstr(conv, "caf\xef\xbf\xbd ok") && strstr(conv, "\"replaced\":10"));
    cllm_free_buffer(conv);
}

static void a_datagen_key(const char *name, int status) {
    char *err = slurp(name, "err");
    const char *quote = err ? strstr(err, "no JSON object found") : NULL;
    snprintf(cli_outcome, sizeof cli_outcome, "exit %d; ...%.*s", status, quote ? (int)strcspn(quote, "\n") : 0,
             quote ? quote : "");
    check_true("generate-data: the judge's non-JSON reply starting with the key fails the task, quoted with [redacted]",
               status != 0 && err && strstr(err, "starting \"[redacted] is what you sent me") != NULL);
    cllm_free_buffer(err);
}

static void a_eval_judge500(const char *name, int status) {
    char *out = slurp(name, "out"), *details = slurp(name, "details.jsonl"), *summary = slurp(name, "summary.json");
    cJSON *d = details ? cJSON_Parse(details) : NULL, *s = summary ? cJSON_Parse(summary) : NULL;
    const char *error = cllm__json_str(d, "error");
    char url[256];
    snprintf(url, sizeof url, "%s/chat/completions", base_url);
    printf("    details error: %s\n    stdout:\n%s", error ? error : "(none)", out ? out : "");
    snprintf(cli_outcome, sizeof cli_outcome,
             "exit %d; details \"error\": \"%.200s\"; stdout: ITR null (0 of 1 scored)", status,
             error ? strstr(error, "judge judge-500") ? strstr(error, "judge judge-500") : error : "");
    check_true("eval with a judge answering 500: exit 1; the details name the endpoint, HTTP 500 and the message",
               status == 1 && error && strstr(error, url) && strstr(error, "HTTP 500: the judge is down") &&
               strstr(error, "judge judge-500"));
    check_true("the metric is null in the details, and the summary says null with 0 scored, not 0.0",
               cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "metrics"), "interactivity")) &&
               cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "metrics"), "interactivity")) &&
               cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "scored"), "interactivity")) == 0.0);
    check_true("the table prints null and the count scored (0), and ITR null",
               out && strstr(out, "null") &&
               strstr(out, "ITR (CollabLLM v2: 100 x mean of the [0, 1] judge score): null (0 of 1 conversations "
                                "scored)"));
    cJSON_Delete(d); cJSON_Delete(s);
    cllm_free_buffer(out); cllm_free_buffer(details); cllm_free_buffer(summary);
}

/* ---- the cases ------------------------------------------------------------------------------------ */

#define SIM_ARGS(user, asst) "simulate --tasks {T} --out {D}.conv.jsonl --user-model " user " --assistant-model " asst \
    " --base-url {U} --api-key-env HOSTILE_KEY --retries 1 --backoff-max-ms 8000 --deadline-ms 20000 --timeout-ms 10000"
#define FAILS(c, phrases) .code = c, .want = phrases
#define GIVES(text, n) .code = CLLM_OK, .want = text, .attempts = n

static const hcase cases[] = {
    /* Retry-After: 1 waits a second, not the 20 ms backoff */
    { "r429-short", "429, Retry-After: 1", 5, { .retries = 2 }, GIVES("after a short Retry-After", 2),
      .wait_min = 0.95, .wait_max = 3 },
    /* Retry-After: 999999999 is capped at backoff_max_ms (1500) */
    { "r429-huge", "429, Retry-After: 999999999", 5, { .retries = 2, .backoff_max_ms = 1500 },
      GIVES("after a huge Retry-After", 2), .wait_min = 1.45, .wait_max = 3 },
    /* an HTTP-date 2 s ahead (dates have whole seconds: 1 to 2 s) */
    { "r429-date", "429, Retry-After as an HTTP-date", 5, { .retries = 2 }, GIVES("after an HTTP-date Retry-After", 2),
      .wait_min = 0.9, .wait_max = 3 },
    { "cli-wait-6s", "429, Retry-After: 6 (a wait over 5 s)", 12, .args = SIM_ARGS("sim-wait6", "asst-ok"),
      .after = a_sim_wait },
    { "e502-once", "502, then a completion", 5, { .retries = 2 }, GIVES("after a 502", 2) },
    { "e503-always", "503 on every attempt", 5, { .retries = 2 },
      FAILS(CLLM_ERR_HTTP, "HTTP 503: overloaded, try later|gave up after 3 attempts") },
    { "slow-body", "the body at 1 byte per second", 5, { .retries = 3, .deadline_ms = 2000 },
      FAILS(CLLM_ERR_HTTP, "deadline ran out|deadline_ms 2000") },
    { "no-headers", "the request read, no headers ever", 5, { .retries = 3, .deadline_ms = 2000 },
      FAILS(CLLM_ERR_HTTP, "deadline ran out|0 bytes") },
    { "length-2gb", "Content-Length: 2147483648", 5, { .retries = 1 },
      FAILS(CLLM_ERR_LIMIT, "larger than max_response_bytes (67108864)|Content-Length") },
    { "length-2gb-x16", "Content-Length: 2 GB, 16 at once", 10, { .retries = 1, .n = 16 },
      FAILS(CLLM_ERR_LIMIT, "larger than max_response_bytes (67108864)|Content-Length") },
    /* each stops at its limit, or at the batch's budget (then it is retried, once here) */
    { "chunked-endless", "an endless chunked body", 10, { .retries = 1, .deadline_ms = 30000, .timeout_ms = 15000 },
      FAILS(CLLM_ERR_LIMIT, "max_") },
    { "chunked-endless-x16", "an endless chunked body, 16 at once", 40,
      { .retries = 1, .deadline_ms = 30000, .timeout_ms = 15000, .n = 16 },
      FAILS(CLLM_ERR_LIMIT, "max_") },
    { "gzip-bomb", "a gzip bomb (1.6 MB -> 256 MiB)", 10, { .retries = 1, .deadline_ms = 30000, .timeout_ms = 15000 },
      FAILS(CLLM_ERR_LIMIT, "max_") },
    { "gzip-bomb-x16", "a gzip bomb, 16 at once", 40,
      { .retries = 1, .deadline_ms = 30000, .timeout_ms = 15000, .n = 16 },
      FAILS(CLLM_ERR_LIMIT, "max_") },
    { "big-valid", "a valid 60 MiB reply", 15, { .retries = 1, .deadline_ms = 20000, .timeout_ms = 15000 },
      .extra = x_big_valid },
    { "cli-big-valid", "a valid 60 MiB reply, simulate writes it", 20, .args = SIM_ARGS("sim-basic", "big-valid"),
      .after = a_big_valid },
    { "big-control", "60 MiB of control characters", 15, { .retries = 1, .deadline_ms = 20000, .timeout_ms = 15000 },
      FAILS(CLLM_ERR_LIMIT, "62914560 bytes, 377487360 as JSON|CLLM_MAX_LINE_BYTES") },
    /* Python: b'caf\xc3 ok \xff\xfe end \xe2\x82 x \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf z'.decode('utf-8', 'replace') */
    { "bad-utf8", "invalid UTF-8 in the content", 5, { .retries = 1 },
      GIVES("caf\xef\xbf\xbd ok \xef\xbf\xbd\xef\xbf\xbd end \xef\xbf\xbd x \xef\xbf\xbd "
            "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
            "\xef\xbf\xbd\xef\xbf\xbd z", 1), .replaced = 10 },
    { "cli-bad-utf8", "invalid UTF-8, simulate writes it", 10, .args = SIM_ARGS("sim-basic", "bad-utf8"),
      .after = a_sim_utf8 },
    { "lone-surrogate", "lone surrogate escapes \\ud800 \\udc00", 5, { .retries = 1 },
      GIVES("a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xf0\x9f\x98\x80" "d", 1), .replaced = 2 },
    { "nul-content", "an embedded \\u0000", 5, { .retries = 1 },
      FAILS(CLLM_ERR_FORMAT, "NUL character (\\u0000) at byte 4 of 13|rather than cut") },
    { "deep-json", "100,000-deep JSON", 10, { .retries = 1 },
      FAILS(CLLM_ERR_FORMAT, "nests 100000 levels deep|CJSON_NESTING_LIMIT"),
      .extra = x_deep_lenient },
    { "empty-choices", "\"choices\": []", 5, { .retries = 1 }, FAILS(CLLM_ERR_FORMAT, "no \"choices\"[0]") },
    { "null-content", "content null", 5, { .retries = 1 }, FAILS(CLLM_ERR_FORMAT, "content is null") },
    { "content-parts", "content as a list of parts", 5, { .retries = 1 }, GIVES("Hello, world", 1) },
    { "tool-calls-only", "tool_calls only", 5, { .retries = 1 },
      FAILS(CLLM_ERR_FORMAT, "tool_calls and no text|finish_reason \"tool_calls\"") },
    { "finish-length", "finish_reason length", 5, { .retries = 1 }, GIVES("cut off in the mid", 1),
      .finish = "length",
      .extra = x_flagged },
    { "finish-length-reject", "finish_reason length, reject_incomplete", 5, { .retries = 1, .reject_incomplete = 1 },
      FAILS(CLLM_ERR_LIMIT, "finish_reason \"length\"|reject_incomplete") },
    { "finish-filter", "finish_reason content_filter", 5, { .retries = 1 }, GIVES("", 1), .finish = "content_filter",
      .extra = x_flagged },
    { "finish-filter-reject", "content_filter, reject_incomplete", 5, { .retries = 1, .reject_incomplete = 1 },
      FAILS(CLLM_ERR_HTTP, "finish_reason \"content_filter\"|reject_incomplete") },
    { "finish-filter-null", "content_filter with content null", 5, { .retries = 1 },
      FAILS(CLLM_ERR_FORMAT, "content is null|content_filter") },
    { "error-in-200", "an error object in a 200", 5, { .retries = 1 },
      FAILS(CLLM_ERR_HTTP, "returned an error: model overloaded") },
    { "empty-200", "an empty 200", 5, { .retries = 1 }, FAILS(CLLM_ERR_FORMAT, "empty response body") },
    { "redirect-302", "302 to another port", 5, { .retries = 1 },
      FAILS(CLLM_ERR_HTTP, "HTTP 302|redirects to http://127.0.0.1:|not followed"),
      .extra = x_not_followed },
    { "redirect-307", "307 to another port", 5, { .retries = 1 },
      FAILS(CLLM_ERR_HTTP, "HTTP 307|redirects to http://127.0.0.1:|not followed"),
      .extra = x_not_followed },
    { "http10-no-length", "HTTP/1.0 without Content-Length", 5, { .retries = 1 }, GIVES("an HTTP/1.0 answer", 1) },
    { "gzip", "gzip", 5, { .retries = 1 }, GIVES("a gzipped answer", 1) },
    { "gzip-broken", "broken gzip", 5, { .retries = 1 }, FAILS(CLLM_ERR_HTTP, "content encoding is broken") },
    { "key-in-401", "the key echoed in a 401", 5, { .retries = 1 },
      FAILS(CLLM_ERR_HTTP, "HTTP 401: Incorrect API key provided: Bearer [redacted]") },
    { "key-cut-401", "20 bytes of the key in a 401", 5, { .retries = 1 },
      FAILS(CLLM_ERR_HTTP, "HTTP 401: Incorrect API key provided: Bearer [redacted]") },
    { "key-in-500", "the key echoed in a 500", 5, { .retries = 1 },
      FAILS(CLLM_ERR_HTTP, "HTTP 500: Incorrect API key provided: Bearer [redacted]|gave up after 2 attempts") },
    { "key-in-200-body", "a non-JSON 200 starting with the key", 5, { .retries = 1 },
      FAILS(CLLM_ERR_FORMAT, "not valid JSON|starts \"[redacted]") },
    { "key-in-reply", "the simulator's reply starts with the key", 5, { .retries = 1 }, .extra = x_key_reply },
    { "cli-sim-key", "the key in the simulator's reply text", 10, .args = SIM_ARGS("sim-key", "asst-ok"),
      .after = a_sim_key },
    { "cli-judge-key", "generate-data, a judge reply starting with the key", 15,
      .args = "generate-data --tasks {T} --out {D}.records.jsonl --user-model sim-basic --assistant-model asst-ok "
              "--judge-model judge-key-reply"
              " --metrics interactivity --candidates 1 --samples 1 --window 1 --max-turns 1 --base-url {U} "
              "--api-key-env HOSTILE_KEY"
              " --retries 1 --deadline-ms 10000", .after = a_datagen_key },
    { "reset-always", "a connection reset mid-body, every time", 5, { .retries = 2 },
      FAILS(CLLM_ERR_HTTP, "Connection reset|gave up after 3 attempts") },
    { "reset-once", "a connection reset mid-body, once", 5, { .retries = 2 }, GIVES("after a reset", 2) },
    { "cli-eval-judge-500", "eval, the judge answering 500", 10,
      .args = "eval --tasks {T} --details {D}.details.jsonl --summary {D}.summary.json --user-model sim-basic "
              "--assistant-model asst-ok"
              " --judge-model judge-500 --metrics interactivity --base-url {U} --api-key-env HOSTILE_KEY --retries 1 "
              "--deadline-ms 10000",
      .after = a_eval_judge500 },
};

/* ---- the checks on every file a case leaves -------------------------------------------------------- */

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. Returns the
   offset of the first bad byte, or n. Written here, apart from the library's decoder. */
static size_t strict_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, cp, k;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; }
        else return i;
        for (k = 1; k <= need; k++) {
            if (i + k >= n || (s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000)) return i;
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return i;
        i += need + 1;
    }
    return n;
}

/* Does s[0..n) hold 8 bytes in a row of the key? */
static int holds_key(const char *s, size_t n) {
    const char *key = HOSTILE_KEY;
    size_t i, j, k = strlen(key);
    for (i = 0; i + 8 <= k; i++)
        for (j = 0; j + 8 <= n; j++)
            if (s[j] == key[i] && memcmp(s + j, key + i, 8) == 0) return 1;
    return 0;
}

/* Checks every file DIR/NAME.*: no key, valid UTF-8. Returns the number of files. */
static int scan_files(const char *name, int *leaks, int *bad_utf8) {
    DIR *d = opendir(case_dir);
    struct dirent *e;
    size_t nl = strlen(name);
    int files = 0;
    *leaks = *bad_utf8 = 0;
    while (d && (e = readdir(d)) != NULL) {
        char path[1024], *text = NULL;
        size_t len, bad;
        cllm_err err;
        if (strncmp(e->d_name, name, nl) != 0 || e->d_name[nl] != '.') continue;
        snprintf(path, sizeof path, "%s/%s", case_dir, e->d_name);
        if (cllm_read_file(path, &text, &len, &err) != CLLM_OK) continue;
        files++;
        if (holds_key(text, len)) { printf("    LEAK: %s holds 8 bytes of the key\n", path); (*leaks)++; }
        if ((bad = strict_utf8((const unsigned char *)text, len)) != len) {
            printf("    NOT UTF-8: %s at byte %zu\n", path, bad);
            (*bad_utf8)++;
        }
        cllm_free_buffer(text);
    }
    if (d) closedir(d);
    return files;
}

/* ---- running a case -------------------------------------------------------------------------------- */

/* argv for collabllm from the case's argument string, placeholders filled. */
static char **cli_argv(const hcase *hc, char *buf, size_t size) {
    static char *argv[64];
    char tasks[600], dn[600];
    const char *p;
    size_t o = 0;
    int n = 0;
    snprintf(tasks, sizeof tasks, "%s/tasks.jsonl", case_dir);
    snprintf(dn, sizeof dn, "%s/%s", case_dir, hc->name);
    for (p = hc->args; *p && o + 600 < size; p++) {
        if (p[0] == '{' && p[2] == '}' && strchr("UDT", p[1])) {
            o += (size_t)snprintf(buf + o, size - o, "%s", p[1] == 'U' ? base_url : p[1] == 'D' ? dn : tasks);
            p += 2;
        } else buf[o++] = *p;
    }
    buf[o] = 0;
    argv[n++] = cli;
    for (p = strtok(buf, " "); p && n < 63; p = strtok(NULL, " ")) argv[n++] = (char *)p;
    argv[n] = NULL;
    return argv;
}

static FILE *table;

static void run_case(const hcase *hc) {
    char out[600], errp[600], outcome[700] = "", argbuf[4096], label[400];
    struct rusage ru;
    int status = 0, leaks, bad_utf8, files, done = 0, killed = 0;
    double t0 = now_s(), wall, rss;
    pid_t pid;
    char **argv = hc->args ? cli_argv(hc, argbuf, sizeof argbuf) : NULL;
    printf("-- %s: %s\n", hc->name, hc->fault);
    snprintf(out, sizeof out, "%s/%s.out", case_dir, hc->name);
    snprintf(errp, sizeof errp, "%s/%s.err", case_dir, hc->name);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        close(fo);
        close(fe);
        if (argv) {
#if defined(__SANITIZE_ADDRESS__)
            setenv("ASAN_OPTIONS", "quarantine_size_mb=16", 0);  /* as above, for the command line */
#endif
            execv(cli, argv);
            _exit(127);
        }
        check_failures = 0;                        /* the child counts its own checks */
        check_count = 0;
        if (hc->want) run_expectation(hc);
        if (hc->extra) hc->extra(hc);
        fflush(NULL);
        exit(check_failures ? 1 : 0);              /* exit, not _exit: LeakSanitizer checks the child */
    }
    memset(&ru, 0, sizeof ru);
    while (!done) {
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) { done = 1; break; }
        if (now_s() - t0 > hc->bound_s + 10 && !killed) { kill(pid, SIGKILL); killed = 1; }
        mock_sleep_ms(5);
    }
    wall = now_s() - t0;
    rss = ru.ru_maxrss / 1024.0;
    {   /* the child's own report (library cases) */
        char *text = slurp(hc->name, "out"), *oc = slurp(hc->name, "outcome");
        if (text) printf("%s", text);
        if (oc) snprintf(outcome, sizeof outcome, "%s", oc);
        else if (hc->args) {
            char *e = slurp(hc->name, "err");
            const char *last = e ? e + strlen(e) : NULL;
            while (last && last > e && last[-1] == '\n') last--;
            while (last && last > e && last[-1] != '\n') last--;
            snprintf(outcome, sizeof outcome, "exit %d: %.*s", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                     last ? (int)strcspn(last, "\n") : 0, last ? last : "");
            cllm_free_buffer(e);
        }
        cllm_free_buffer(text);
        cllm_free_buffer(oc);
    }
    cli_outcome[0] = 0;
    if (hc->after) hc->after(hc->name, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    if (cli_outcome[0]) snprintf(outcome, sizeof outcome, "%s", cli_outcome);
    else {
        snprintf(label, sizeof label, "%s: the case's own checks pass (exit 0)", hc->name);
        check_true(label, WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    files = scan_files(hc->name, &leaks, &bad_utf8);
    snprintf(label, sizeof label,
             "%s: within %.0f s (%.2f s), peak RSS %.0f MB <= %.0f MB; %d files: no 8 bytes of the key, all "
             "valid UTF-8", hc->name, hc->bound_s, wall, rss, RSS_BUDGET_MB, files);
    check_true(label,
               !killed && wall <= hc->bound_s && rss <= RSS_BUDGET_MB && files >= 2 && leaks == 0 && bad_utf8 == 0);
    {   /* the outcome for the table: one line, without the URL prefix, shortened */
        char *p, shown[240], url[256];
        size_t n;
        snprintf(url, sizeof url, "%s/chat/completions: ", base_url);
        while ((p = strstr(outcome, url)) != NULL) memmove(p, p + strlen(url), strlen(p + strlen(url)) + 1);
        for (p = outcome; *p; p++) if (*p == '|' || *p == '\n') *p = ' ';
        n = cllm__utf8_prefix(outcome, strlen(outcome), 200);
        snprintf(shown, sizeof shown, "%.*s%s", (int)n, outcome, n < strlen(outcome) ? "..." : "");
        fprintf(table, "| %s | %s | %s | %.0f MB | %.2f s |\n", hc->name, hc->fault, shown, rss, wall);
    }
}

int main(void) {
    int fds[2], ports[2];
    pid_t server;
    size_t i;
    char path[600];
    FILE *f;
    build_dir = getenv("BUILD") ? getenv("BUILD") : "build";
    snprintf(case_dir, sizeof case_dir, "%s/tmp_hostile", build_dir);
    snprintf(cli, sizeof cli, "%s/collabllm", build_dir);
    mkdir(case_dir, 0755);
    {   /* a clean directory: every file in it is this run's */
        DIR *d = opendir(case_dir);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            char file[1024];
            if (e->d_name[0] == '.') continue;
            snprintf(file, sizeof file, "%s/%s", case_dir, e->d_name);
            remove(file);
        }
        if (d) closedir(d);
    }
    snprintf(path, sizeof path, "%s/tasks.jsonl", case_dir);
    if ((f = fopen(path,
                   "wb")) != NULL) { fputs("{\"single_turn_prompt\": \"write a haiku about the sea\", "
                                           "\"single_turn_completion\": \"waves\"}\n", f); fclose(f); }
    setenv("HOSTILE_KEY", HOSTILE_KEY, 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    unsetenv("OPENAI_BASE_URL");
    if (pipe(fds) != 0) return 1;
    fflush(NULL);
    server = fork();                                     /* before any thread: the server process has them all */
    if (server == 0) {
        char hits[600];
        close(fds[0]);
        snprintf(hits, sizeof hits, "%s/redirect_target_hits", case_dir);
        hostile_serve(fds[1], hits);
    }
    close(fds[1]);
    if (read(fds[0], ports,
             sizeof ports) != (ssize_t)sizeof ports) { printf("the hostile server did not start\n"); return 1; }
    close(fds[0]);
    other_port = ports[1];
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d/v1", ports[0]);
    printf("hostile server at %s (redirect target port %d); CLI %s; files in %s\n", base_url, other_port, cli,
           case_dir);
    snprintf(path, sizeof path, "%s/table.md", case_dir);
    table = fopen(path, "wb");
    if (!table) return 1;
    fprintf(table, "| case | fault | outcome | peak RSS | wall time |\n|---|---|---|---|---|\n");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    fclose(table);
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    {
        char *t = NULL;
        size_t len;
        cllm_err err;
        if (cllm_read_file(path, &t, &len, &err) == CLLM_OK) printf("\n%s\n", t);
        cllm_free_buffer(t);
    }
    (void)mock_reset_stats;
    (void)mock_stop;
    return check_summary("test_hostile");
}
