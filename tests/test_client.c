/* test_client.c - the chat-completions client against the loopback mock (tests/mock_openai.c):
   request fields, the bearer key, usage, every fault the client must survive or report (429 with
   Retry-After, 5xx, timeouts, refused connections, truncated bodies, malformed JSON, missing
   fields, 4xx, oversized bodies), that the key never reaches an error message, per-request
   status in batches, the concurrency limit, and that 32 calls of 200 ms overlap. The mock picks
   its behaviour from the request's model name. */
/* no-fast-path: the HTTP client, no model kernel (make test runs it in its first pass only) */
#include "mock_openai.c"
#include "../collabllm.h"
#include "check.h"

#define KEY_ENV "CLLM_TEST_KEY"

/* o[key] when it is a string, else NULL */
static const char *str_field(const cJSON *o, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}
#define KEY     "sk-test-SECRET-0123456789abcdef"

static pthread_mutex_t recorded_mu = PTHREAD_MUTEX_INITIALIZER;
static char *recorded;                     /* body of the last "record" request */

static char *dupf(const char *fmt, const char *arg) {
    char *s = (char *)malloc(strlen(fmt) + (arg ? strlen(arg) : 0) + 1);
    sprintf(s, fmt, arg ? arg : "");
    return s;
}

static void handler(void *ctx, const mock_request *q, mock_response *r) {
    const char *m = q->model;
    (void)ctx;
    if (!strcmp(m, "ok") || !strcmp(m, "slow")) { r->content = mock_strdup("hello from the mock"); if (m[0] == 's') r->delay_ms = 200; }
    else if (!strcmp(m, "echo")) r->content = mock_strdup(mock_last_user(q));
    else if (!strcmp(m, "record")) {
        pthread_mutex_lock(&recorded_mu);
        free(recorded);
        recorded = mock_strdup(q->body);
        pthread_mutex_unlock(&recorded_mu);
        r->content = mock_strdup("recorded");
    } else if (!strcmp(m, "auth"))
        r->content = mock_strdup(!q->auth ? "auth-none" : !strcmp(q->auth, "Bearer " KEY) ? "auth-ok" : "auth-wrong");
    else if (!strcmp(m, "r429")) {
        if (q->seen == 0) { r->status = 429; r->retry_after = 1; r->body = mock_strdup("{\"error\": {\"message\": \"Rate limit reached\"}}"); }
        else r->content = mock_strdup("after the rate limit");
    } else if (!strcmp(m, "e500x2") || !strcmp(m, "e500") || !strcmp(m, "e500n")) {
        if (q->seen < 2 || strcmp(m, "e500x2") != 0) { r->status = 500; r->body = mock_strdup("{\"error\": {\"message\": \"upstream overloaded\"}}"); }
        else r->content = mock_strdup("third time lucky");
    } else if (!strcmp(m, "e503")) { r->status = 503; r->body = mock_strdup("Service Unavailable"); }
    else if (!strcmp(m, "hang")) r->hang = 1;
    else if (!strcmp(m, "trunc") || (!strcmp(m, "trunc1") && q->seen == 0)) { r->truncate = 1; r->content = mock_strdup("this answer is cut in half by the server"); }
    else if (!strcmp(m, "trunc1")) r->content = mock_strdup("whole this time");
    else if (!strcmp(m, "badjson")) r->body = mock_strdup("{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"hi\"}");
    else if (!strcmp(m, "garbage")) r->body = mock_strdup("<html>bad gateway</html>");
    else if (!strcmp(m, "empty")) r->body = mock_strdup("");
    else if (!strcmp(m, "nochoices")) r->body = mock_strdup("{\"id\": \"x\", \"object\": \"chat.completion\"}");
    else if (!strcmp(m, "emptychoices")) r->body = mock_strdup("{\"choices\": []}");
    else if (!strcmp(m, "nomessage")) r->body = mock_strdup("{\"choices\": [{\"text\": \"legacy completion\"}]}");
    else if (!strcmp(m, "numcontent")) r->body = mock_strdup("{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": 42}}]}");
    else if (!strcmp(m, "nullcontent")) r->body = mock_strdup("{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": null}}]}");
    else if (!strcmp(m, "err200")) r->body = mock_strdup("{\"error\": {\"message\": \"model is loading\"}}");
    else if (!strcmp(m, "nousage")) r->body = mock_strdup("{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"no usage\"}}]}");
    else if (!strcmp(m, "e401")) { r->status = 401; r->body = dupf("{\"error\": {\"message\": \"Incorrect API key provided: %s\"}}", q->auth); }
    else if (!strcmp(m, "e401raw")) { r->status = 401; r->body = dupf("denied for %s", q->auth); }
    else if (!strcmp(m, "e400long")) {
        char pad[400];
        memset(pad, 'x', sizeof pad - 1); pad[sizeof pad - 1] = 0;
        r->status = 400;
        r->body = (char *)malloc(1000);
        snprintf(r->body, 1000, "{\"error\": {\"message\": \"%.290s %s\"}}", pad, q->auth ? q->auth : "");
    } else if (!strcmp(m, "e400")) { r->status = 400; r->body = mock_strdup("{\"error\": {\"message\": \"max_tokens is too large: 999999\"}}"); }
    else if (!strcmp(m, "e404")) { r->status = 404; r->body = mock_strdup("{\"error\": \"model 'e404' not found\"}"); }
    else if (!strcmp(m, "e400utf8") || !strcmp(m, "garbage8")) {      /* 2-byte characters across every cut */
        int k;
        char *text = (char *)malloc(1200);
        for (k = 0; k < 500; k++) memcpy(text + 2 * k, "\xc3\xa9", 2);
        text[1000] = 0;
        if (m[0] == 'e') { r->status = 400; r->body = dupf("{\"error\": {\"message\": \"x%s\"}}", text); }
        else r->body = dupf("x%s", text);
        free(text);
    } else if (!strcmp(m, "huge")) {
        r->content = (char *)malloc(5001);
        memset(r->content, 'a', 5000);
        r->content[5000] = 0;
    }
    else { r->status = 400; r->body = mock_strdup("{\"error\": {\"message\": \"unknown test model\"}}"); }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char base_url[128];

static void client_make(cllm_client *c, int retries, long timeout_ms) {
    cllm_client_config cfg;
    cllm_err err;
    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = base_url;
    cfg.api_key_env = KEY_ENV;
    cfg.max_retries = retries;
    cfg.timeout_ms = timeout_ms;
    cfg.backoff_ms = 10;                   /* keep the suite fast; Retry-After is still honoured */
    cfg.max_concurrency = 32;
    cfg.seed = 7;
    if (cllm_client_init(c, &cfg, &err) != CLLM_OK) { printf("client init failed: %s\n", err.msg); exit(1); }
}

/* One call to a mock model; returns the result (caller frees) and checks the key stayed secret. */
static cllm_chat_result call(cllm_client *c, const char *model) {
    cllm_message msg;
    cllm_chat_request req;
    cllm_chat_result res;
    memset(&req, 0, sizeof req);
    msg.role = "user";
    msg.content = "Say hello.";
    req.messages = &msg;
    req.n_messages = 1;
    req.params.model = model;
    cllm_client_chat(c, &req, &res, NULL);
    if (strstr(res.err.msg, KEY) || strstr(res.err.msg, "SECRET")) { printf("  FAIL the API key leaked into: %s\n", res.err.msg); check_failures++; }
    printf("    [%s] code=%s http=%ld attempts=%d %.3fs%s%s\n", model ? model : "(client model)", cllm_result_string(res.code), res.http_status, res.attempts,
           res.seconds, res.code ? " msg: " : "", res.err.msg);
    return res;
}

/* A failure with the expected code, attempt count and a phrase in the message. */
static void expect_fail(cllm_client *c, const char *model, cllm_result code, int attempts, const char *phrase) {
    char label[200];
    cllm_chat_result r = call(c, model);
    snprintf(label, sizeof label, "%s: fails with %s after %d attempt(s), message mentions \"%s\"", model, cllm_result_string(code), attempts, phrase);
    check_true(label, r.code == code && r.attempts == attempts && r.content == NULL && strstr(r.err.msg, phrase) != NULL);
    cllm_chat_result_free(&r);
}

static void test_success_and_fields(cllm_client *c) {
    cllm_message msgs[2];
    cllm_chat_request req;
    cllm_chat_result r;
    cJSON *body;
    const cJSON *rf;
    printf("-- a completion, usage, and the request fields\n");
    r = call(c, "ok");
    check_true("ok: content, finish_reason, status 200, one attempt", r.code == CLLM_OK && r.content && !strcmp(r.content, "hello from the mock") &&
               !strcmp(r.finish_reason, "stop") && r.http_status == 200 && r.attempts == 1);
    check_true("ok: usage recorded (completion_tokens = content length in the mock)", r.completion_tokens == 19 && r.prompt_tokens > 0 &&
               r.total_tokens == r.prompt_tokens + r.completion_tokens && c->usage.completion_tokens >= 19);
    cllm_chat_result_free(&r);
    r = call(c, "nousage");
    check_true("no usage block: content kept, token counts -1", r.code == CLLM_OK && !strcmp(r.content, "no usage") && r.prompt_tokens == -1 && r.total_tokens == -1);
    cllm_chat_result_free(&r);

    memset(&req, 0, sizeof req);
    msgs[0].role = "system"; msgs[0].content = "Be brief.";
    msgs[1].role = "user";   msgs[1].content = "Quote \"this\" \xc3\xa9t\xc3\xa9\nplease";
    req.messages = msgs; req.n_messages = 2;
    req.params.model = "record"; req.params.temperature = 0.7; req.params.top_p = 0.9; req.params.max_tokens = 77; req.params.seed = 1234;
    req.response_format = "json_object";
    cllm_client_chat(c, &req, &r, NULL);
    cllm_chat_result_free(&r);
    body = cJSON_Parse(recorded);
    rf = cJSON_GetObjectItemCaseSensitive(body, "response_format");
    {
        static const char *keys[4] = { "temperature", "top_p", "max_tokens", "seed" };
        double want[4] = { 0.7, 0.9, 77, 1234 }, got[4];
        int k;
        for (k = 0; k < 4; k++) { const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, keys[k]); got[k] = cJSON_IsNumber(v) ? v->valuedouble : -1; }
        check_tensor_d("request temperature, top_p, max_tokens, seed as sent", got, want, 4, 0.0);
        check_true("request carries the model", body && !strcmp(str_field(body, "model"), "record"));
    }
    check_true("response_format \"json_object\" is sent as {\"type\": \"json_object\"}", cJSON_IsObject(rf) && !strcmp(str_field(rf, "type"), "json_object"));
    check_true("messages arrive intact (roles, quotes, UTF-8, newline)", cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(body, "messages")) == 2 &&
               !strcmp(str_field(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "messages"), 1), "content"), msgs[1].content) &&
               !strcmp(str_field(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "messages"), 0), "role"), "system"));
    cJSON_Delete(body);

    memset(&req.params, 0, sizeof req.params);
    req.params.model = "record"; req.params.temperature = -1;
    req.response_format = "{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", \"schema\": {\"type\": \"object\"}}}";
    cllm_client_chat(c, &req, &r, NULL);
    cllm_chat_result_free(&r);
    body = cJSON_Parse(recorded);
    rf = cJSON_GetObjectItemCaseSensitive(body, "response_format");
    check_true("zero fields are not sent; a negative temperature sends 0", body && !cJSON_GetObjectItemCaseSensitive(body, "top_p") &&
               !cJSON_GetObjectItemCaseSensitive(body, "max_tokens") && !cJSON_GetObjectItemCaseSensitive(body, "seed") &&
               cJSON_GetObjectItemCaseSensitive(body, "temperature")->valuedouble == 0.0);
    check_true("a JSON-object response_format is passed through", cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(rf, "json_schema")));
    cJSON_Delete(body);
}

static void test_auth(cllm_client *c) {
    cllm_client other;
    cllm_client_config cfg;
    cllm_chat_result r;
    cllm_err err;
    printf("-- the API key\n");
    r = call(c, "auth");
    check_true("the key from the named env var is sent as \"Authorization: Bearer <key>\"", r.code == CLLM_OK && !strcmp(r.content, "auth-ok"));
    cllm_chat_result_free(&r);
    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = base_url;
    cfg.api_key_env = "CLLM_TEST_UNSET_KEY";
    cllm_client_init(&other, &cfg, &err);
    r = call(&other, "auth");
    check_true("an unset key env var sends no Authorization header", r.code == CLLM_OK && !strcmp(r.content, "auth-none"));
    cllm_chat_result_free(&r);
    r = call(&other, "e401");
    check_true("401 without a key says the key variable is unset", r.code == CLLM_ERR_HTTP && strstr(r.err.msg, "no API key was sent") != NULL);
    cllm_chat_result_free(&r);
    cllm_client_free(&other);
    expect_fail(c, "e401", CLLM_ERR_HTTP, 1, "Incorrect API key provided: Bearer [redacted]");
    expect_fail(c, "e401raw", CLLM_ERR_HTTP, 1, "denied for Bearer [redacted]");
    expect_fail(c, "e400long", CLLM_ERR_HTTP, 1, "xxxxxxxx");
}

static void test_retries(void) {
    cllm_client c;
    cllm_chat_result r;
    double t0;
    printf("-- retries: 429 with Retry-After, 5xx, timeouts, refused connections, truncated bodies\n");
    client_make(&c, 2, 400);
    t0 = now_s();
    r = call(&c, "r429");
    check_true("429 + Retry-After: 1 -> retried, succeeds on attempt 2", r.code == CLLM_OK && r.attempts == 2 && !strcmp(r.content, "after the rate limit"));
    printf("    waited %.3f s before the retry (Retry-After: 1, backoff_ms 10)\n", now_s() - t0);
    check_true("the retry waited for Retry-After (>= 0.95 s), not the 10 ms backoff", now_s() - t0 >= 0.95);
    cllm_chat_result_free(&r);
    r = call(&c, "e500x2");
    check_true("500, 500, then 200 -> succeeds on attempt 3", r.code == CLLM_OK && r.attempts == 3 && !strcmp(r.content, "third time lucky"));
    cllm_chat_result_free(&r);
    expect_fail(&c, "e500", CLLM_ERR_HTTP, 3, "HTTP 500: upstream overloaded (gave up after 3 attempts)");
    expect_fail(&c, "e503", CLLM_ERR_HTTP, 3, "HTTP 503: Service Unavailable");
    t0 = now_s();
    expect_fail(&c, "hang", CLLM_ERR_HTTP, 3, "timed out");
    check_true("three 400 ms timeouts end in under 5 s", now_s() - t0 < 5.0);
    expect_fail(&c, "trunc", CLLM_ERR_HTTP, 3, "truncated body");
    r = call(&c, "trunc1");
    check_true("a body truncated once is retried and then succeeds", r.code == CLLM_OK && r.attempts == 2 && !strcmp(r.content, "whole this time"));
    cllm_chat_result_free(&r);
    cllm_client_free(&c);

    client_make(&c, -1, 0);
    expect_fail(&c, "e500n", CLLM_ERR_HTTP, 1, "HTTP 500");
    cllm_client_free(&c);
}

static void test_refused(void) {
    cllm_client c;
    cllm_client_config cfg;
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    char url[128];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    printf("-- connection refused\n");
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&addr, sizeof addr);
    getsockname(fd, (struct sockaddr *)&addr, &alen);
    close(fd);                                    /* a port that was free a moment ago: nobody listens */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", ntohs(addr.sin_port));
    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = url; cfg.model = "ok"; cfg.max_retries = 2; cfg.backoff_ms = 10; cfg.api_key_env = KEY_ENV;
    cllm_client_init(&c, &cfg, NULL);
    expect_fail(&c, "ok", CLLM_ERR_HTTP, 3, "onnect");
    cllm_client_free(&c);
}

static void test_bad_bodies(cllm_client *c) {
    cllm_client small;
    cllm_client_config cfg;
    char url[160];
    printf("-- malformed, truncated and incomplete 200 responses; other 4xx\n");
    expect_fail(c, "badjson", CLLM_ERR_FORMAT, 1, "response JSON is truncated");
    expect_fail(c, "garbage", CLLM_ERR_FORMAT, 1, "not valid JSON (24 bytes, starts \"<html>bad gateway</html>\")");
    expect_fail(c, "empty", CLLM_ERR_FORMAT, 1, "empty response body");
    expect_fail(c, "nochoices", CLLM_ERR_FORMAT, 1, "no \"choices\"[0]");
    expect_fail(c, "emptychoices", CLLM_ERR_FORMAT, 1, "no \"choices\"[0]");
    expect_fail(c, "nomessage", CLLM_ERR_FORMAT, 1, "no choices[0].message");
    expect_fail(c, "numcontent", CLLM_ERR_FORMAT, 1, "content is of the wrong type");
    expect_fail(c, "nullcontent", CLLM_ERR_FORMAT, 1, "content is null");
    expect_fail(c, "err200", CLLM_ERR_HTTP, 1, "the endpoint returned an error: model is loading");
    expect_fail(c, "e400", CLLM_ERR_HTTP, 1, "HTTP 400: max_tokens is too large: 999999");
    expect_fail(c, "e404", CLLM_ERR_HTTP, 1, "HTTP 404: model 'e404' not found (check base_url");

    memset(&cfg, 0, sizeof cfg);
    snprintf(url, sizeof url, "%s/../wrong", base_url);
    cfg.base_url = url;
    cllm_client_init(&small, &cfg, NULL);
    expect_fail(&small, "ok", CLLM_ERR_HTTP, 1, "no such route");
    cllm_client_free(&small);

    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = base_url; cfg.max_response_bytes = 1024;
    cllm_client_init(&small, &cfg, NULL);
    expect_fail(&small, "huge", CLLM_ERR_LIMIT, 1, "larger than max_response_bytes (1024)");
    cllm_client_free(&small);
}

/* Is s valid UTF-8 (shortest forms, no surrogates, at most U+10FFFF) without U+FFFD, i.e. was
   every cut made on a character boundary? */
static int cut_cleanly(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        unsigned cp = len == 1 ? c : c & (0x7Fu >> len), k;
        if (!len) return 0;
        for (k = 1; k < len; k++) {
            if ((p[k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (p[k] & 0x3Fu);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFFFD)
            return 0;
        p += len;
    }
    return 1;
}

static void test_utf8_cuts(cllm_client *c) {
    cllm_chat_result r;
    printf("-- messages are cut on character boundaries\n");
    r = call(c, "e400utf8");
    check_true("a 400 whose message is 1000 bytes of 2-byte characters (odd offset): cut on a boundary, ending \"...\"",
               r.code == CLLM_ERR_HTTP && cut_cleanly(r.err.msg) && strstr(r.err.msg, "...") &&
               strlen(r.err.msg) < CLLM_ERRMSG_SIZE);
    cllm_chat_result_free(&r);
    r = call(c, "garbage8");
    check_true("a non-JSON 200 of 2-byte characters: the quoted start is cut on a boundary",
               r.code == CLLM_ERR_FORMAT && cut_cleanly(r.err.msg));
    cllm_chat_result_free(&r);
}

static void test_arguments(void) {
    cllm_client c;
    cllm_client_config cfg;
    cllm_err err;
    cllm_chat_result r;
    printf("-- configuration and arguments\n");
    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = "ftp://example.com";
    check_true("a base_url that is not http(s) is rejected", cllm_client_init(&c, &cfg, &err) == CLLM_ERR_ARG && strstr(err.msg, "base URL") != NULL);
    setenv("OPENAI_BASE_URL", base_url, 1);
    memset(&cfg, 0, sizeof cfg);
    cfg.model = "ok";
    cllm_client_init(&c, &cfg, &err);
    check_true("the base URL defaults to $OPENAI_BASE_URL", !strncmp(c.url, base_url, strlen(base_url)) && !strcmp(c.url + strlen(base_url), "/chat/completions"));
    r = call(&c, NULL);
    check_true("a request without a model uses the client's model", r.code == CLLM_OK);
    cllm_chat_result_free(&r);
    cllm_client_free(&c);
    unsetenv("OPENAI_BASE_URL");
    cllm_client_init(&c, NULL, &err);
    check_true("without $OPENAI_BASE_URL the default is https://api.openai.com/v1", !strcmp(c.url, "https://api.openai.com/v1/chat/completions") &&
               c.cfg.max_retries == 5 && c.cfg.max_concurrency == 16 && c.cfg.timeout_ms == 300000 && !c.cfg.insecure);
    r = call(&c, NULL);
    check_true("no model anywhere -> CLLM_ERR_ARG before any request", r.code == CLLM_ERR_ARG && r.attempts == 0 && strstr(r.err.msg, "no model") != NULL);
    cllm_chat_result_free(&r);
    cllm_client_free(&c);
}

static void test_batch(cllm_client *c, mock_server *srv) {
    static const char *models[] = { "ok", "e400", "echo", "nochoices" };
    cllm_message msg[4];
    cllm_chat_request req[32];
    cllm_chat_result res[32];
    cllm_client lim;
    cllm_client_config cfg;
    cllm_err err;
    cllm_result rc;
    double t0, t1, t32;
    int i, ok;
    printf("-- batches: per-request status, the concurrency limit, overlap\n");
    memset(req, 0, sizeof req);
    for (i = 0; i < 4; i++) {
        msg[i].role = "user"; msg[i].content = i == 2 ? "echo me" : "hi";
        req[i].messages = &msg[i]; req[i].n_messages = 1; req[i].params.model = models[i];
    }
    rc = cllm_client_chat_batch(c, req, 4, res, &err);
    printf("    batch: %s\n", err.msg);
    check_true("mixed batch: each result has its own status", res[0].code == CLLM_OK && res[1].code == CLLM_ERR_HTTP &&
               res[2].code == CLLM_OK && !strcmp(res[2].content, "echo me") && res[3].code == CLLM_ERR_FORMAT);
    check_true("mixed batch returns the first failure and counts them", rc == CLLM_ERR_HTTP && strstr(err.msg, "2 of 4 requests failed; first (#1)") != NULL);
    for (i = 0; i < 4; i++) cllm_chat_result_free(&res[i]);

    for (i = 0; i < 32; i++) { req[i] = req[0]; req[i].params.model = "slow"; }
    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = base_url; cfg.max_concurrency = 4;
    cllm_client_init(&lim, &cfg, NULL);
    mock_reset_stats(srv);
    rc = cllm_client_chat_batch(&lim, req, 12, res, &err);
    printf("    12 calls with max_concurrency 4: the server saw at most %d in flight\n", srv->max_in_flight);
    check_true("max_concurrency 4: never more than 4 requests in flight, and 4 were", rc == CLLM_OK && srv->max_in_flight == 4);
    for (i = 0; i < 12; i++) cllm_chat_result_free(&res[i]);
    cllm_client_free(&lim);

    t0 = now_s();
    rc = cllm_client_chat_batch(c, req, 1, res, &err);
    t1 = now_s() - t0;
    cllm_chat_result_free(&res[0]);
    mock_reset_stats(srv);
    t0 = now_s();
    rc |= cllm_client_chat_batch(c, req, 32, res, &err);
    t32 = now_s() - t0;
    for (i = 0, ok = 1; i < 32; i++) { ok &= res[i].code == CLLM_OK; cllm_chat_result_free(&res[i]); }
    printf("    one 200 ms call: %.3f s; 32 concurrent 200 ms calls: %.3f s (%.2fx; bound 4x); %d in flight at most\n",
           t1, t32, t32 / t1, srv->max_in_flight);
    check_true("32 calls of 200 ms finish in under 4x the time of one", rc == CLLM_OK && ok && t32 < 4.0 * t1);
}

int main(void) {
    mock_server srv;
    cllm_client c;
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    setenv(KEY_ENV, KEY, 1);
    if (mock_start(&srv, handler, NULL) != 0) { printf("cannot start the mock server\n"); return 1; }
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d/v1", srv.port);
    printf("mock server at %s\n", base_url);
    client_make(&c, 2, 0);
    test_success_and_fields(&c);
    test_auth(&c);
    test_retries();
    test_refused();
    test_bad_bodies(&c);
    test_utf8_cuts(&c);
    test_arguments();
    test_batch(&c, &srv);
    printf("    usage totals: %lld prompt + %lld completion tokens, %ld requests, %ld failures, %ld attempts\n",
           c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.requests, c.usage.failures, c.usage.attempts);
    cllm_client_free(&c);
    mock_stop(&srv);
    free(recorded);
    return check_summary("test_client");
}
