/* hostile_server.c - the faults of tests/test_hostile.c, served by tests/mock_openai.c: a handler
   that picks one fault from the request's model name, and the writers for the faults that need
   the raw socket (slow, endless, gzipped, lying or cut-off answers). It runs in a process of its
   own, on two loopback ports: the main one, and a redirect target that records any request it
   gets (the client must never follow a redirect there with the key).
   Included by tests/test_hostile.c after mock_openai.c. */
#include <stdint.h>
#include <sys/stat.h>

#define HOSTILE_KEY "sk-HOSTILE-7q2Zx9Lw4Mv8Nb3Kc6Jd1Rf5Tg0Yh"
#define HOSTILE_MIB ((size_t)1 << 20)
#define HOSTILE_BIG (60 * HOSTILE_MIB)   /* the "60 MiB" replies                              */

static int hostile_other_port;           /* the redirect target                               */
static char hostile_hits[600];           /* the file the redirect target creates when reached */

/* A chat completion body: content (a string, or NULL for null) and finish_reason. */
static char *hostile_completion(const char *content, const char *finish) {
    cJSON *root = cJSON_CreateObject(), *choice = cJSON_CreateObject(), *msg;
    char *out;
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    msg = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    if (content) cJSON_AddStringToObject(msg, "content", content);
    else cJSON_AddNullToObject(msg, "content");
    cJSON_AddStringToObject(choice, "finish_reason", finish);
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static void hostile_send(int fd, const char *s) { mock_send_all(fd, s, strlen(s)); }

/* Sends all of p[0..n); 0 once the client is gone. */
static int hostile_send_n(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MOCK_SEND_FLAGS);
        if (w <= 0) return 0;
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

/* A 200 head with these extra header lines (each ending in \r\n) and a Content-Length. */
static void hostile_head(int fd, const char *status, const char *extra, size_t length) {
    char head[512];
    snprintf(head, sizeof head,
             "HTTP/1.1 %s\r\nContent-Type: application/json\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
             status, extra, length);
    hostile_send(fd, head);
}

/* ---- gzip by hand (RFC 1952 around RFC 1951), so the test needs no zlib ---------------------- */

static uint32_t hostile_crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void hostile_le32(unsigned char *o, uint32_t v) {
    int k;
    for (k = 0; k < 4; k++) o[k] = (unsigned char)(v >> (8 * k));
}

static const unsigned char hostile_gzip_head[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff };

/* A valid gzip member holding data[0..n) in stored (uncompressed) deflate blocks. */
static unsigned char *hostile_gzip_stored(const char *data, size_t n, size_t *out_len) {
    size_t blocks = n / 65535 + 1, i, o = 10;
    unsigned char *g = (unsigned char *)malloc(10 + blocks * 5 + n + 8);
    memcpy(g, hostile_gzip_head, 10);
    for (i = 0; i < blocks; i++) {
        size_t len = n - i * 65535 < 65535 ? n - i * 65535 : 65535;
        g[o++] = (unsigned char)(i + 1 == blocks);            /* BFINAL on the last, BTYPE 00 */
        g[o++] = (unsigned char)len; g[o++] = (unsigned char)(len >> 8);
        g[o++] = (unsigned char)~len; g[o++] = (unsigned char)(~len >> 8);
        memcpy(g + o, data + i * 65535, len);
        o += len;
    }
    hostile_le32(g + o, hostile_crc32((const unsigned char *)data, n));
    hostile_le32(g + o + 4, (uint32_t)n);
    *out_len = o + 8;
    return g;
}

typedef struct { unsigned char *p; size_t n; unsigned acc; int bits; } hostile_bits;
static void hostile_bit(hostile_bits *w, unsigned bit) {
    w->acc |= (bit & 1u) << w->bits;
    if (++w->bits == 8) { w->p[w->n++] = (unsigned char)w->acc; w->acc = 0; w->bits = 0; }
}
static void hostile_code(hostile_bits *w, unsigned code, int len) {      /* Huffman codes go MSB first */
    while (len-- > 0) hostile_bit(w, code >> len);
}

/* A gzip bomb: one fixed-Huffman block, the literal 'a' and then `matches` copies of <length
   258, distance 1>: 13 bits for every 258 bytes it inflates to. */
static unsigned char *hostile_gzip_bomb(size_t matches, size_t *out_len) {
    hostile_bits w;
    size_t i;
    w.p = (unsigned char *)calloc(10 + matches * 13 / 8 + 32, 1);
    memcpy(w.p, hostile_gzip_head, 10);
    w.n = 10; w.acc = 0; w.bits = 0;
    hostile_bit(&w, 1);                               /* BFINAL */
    hostile_bit(&w, 1); hostile_bit(&w, 0);           /* BTYPE 01 (fixed Huffman), LSB first */
    hostile_code(&w, 0x30 + 'a', 8);                  /* literal 'a' */
    for (i = 0; i < matches; i++) {
        hostile_code(&w, 0xC5, 8);                    /* length code 285 = 258 */
        hostile_code(&w, 0, 5);                       /* distance code 0 = 1 */
    }
    hostile_code(&w, 0, 7);                           /* end of block */
    while (w.bits) hostile_bit(&w, 0);
    memset(w.p + w.n, 0, 8);                          /* CRC and size: never reached */
    *out_len = w.n + 8;
    return w.p;
}

/* ---- raw writers ------------------------------------------------------------------------------ */

static void w_retry_date(int fd, const mock_request *q) {    /* Retry-After as an HTTP-date, 2 s ahead */
    char extra[128], date[64];
    time_t t = time(NULL) + 2;
    struct tm g;
    const char *body = "{\"error\": {\"message\": \"slow down\"}}";
    (void)q;
    gmtime_r(&t, &g);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &g);
    snprintf(extra, sizeof extra, "Retry-After: %s\r\n", date);
    hostile_head(fd, "429 Too Many Requests", extra, strlen(body));
    hostile_send(fd, body);
}

static void w_slow(int fd, const mock_request *q) {         /* one byte per second */
    char *body = hostile_completion("slowly", "stop");
    size_t i;
    (void)q;
    hostile_head(fd, "200 OK", "", strlen(body));
    for (i = 0; i < strlen(body); i++) {
        if (!hostile_send_n(fd, body + i, 1)) break;
        mock_sleep_ms(1000);
    }
    free(body);
}

static void w_length_2gb(int fd, const mock_request *q) {   /* announces 2 GB, sends until refused */
    static char zeros[65536];
    int k;
    (void)q;
    hostile_send(fd,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\nConnection: "
                 "close\r\n\r\n");
    for (k = 0; k < 1024 && hostile_send_n(fd, zeros, sizeof zeros); k++) {}
}

static void w_chunked_endless(int fd, const mock_request *q) {   /* chunks until the client hangs up (at most 1 GiB) */
    static char chunk[8 + 65536 + 2];
    int k;
    (void)q;
    memcpy(chunk, "10000\r\n", 7);
    memset(chunk + 7, 'a', 65536);
    memcpy(chunk + 7 + 65536, "\r\n", 2);
    hostile_send(fd,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: "
                 "close\r\n\r\n");
    for (k = 0; k < 16384 && hostile_send_n(fd, chunk, 7 + 65536 + 2); k++) {}
}

static unsigned char *bomb;
static size_t bomb_len;
static void w_gzip_bomb(int fd, const mock_request *q) {    /* 1.6 MB that inflate to 256 MiB */
    (void)q;
    hostile_head(fd, "200 OK", "Content-Encoding: gzip\r\n", bomb_len);
    hostile_send_n(fd, (const char *)bomb, bomb_len);
}

/* A completion whose content is HOSTILE_BIG bytes of the pattern `fill` repeated (raw bytes,
   unescaped, inside the JSON string), sent in pieces. */
static void w_big(int fd, const char *fill) {
    static const char pre[] = "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"";
    static const char post[] = "\"},\"finish_reason\":\"stop\"}]}";
    char buf[65536];
    size_t i, sent = 0, fill_len = strlen(fill), chunk = sizeof buf / fill_len * fill_len;
    for (i = 0; i < chunk; i++) buf[i] = fill[i % fill_len];
    hostile_head(fd, "200 OK", "", strlen(pre) + HOSTILE_BIG + strlen(post));
    hostile_send(fd, pre);
    while (sent < HOSTILE_BIG) {
        size_t n = HOSTILE_BIG - sent < chunk ? HOSTILE_BIG - sent : chunk;
        if (!hostile_send_n(fd, buf, n)) return;
        sent += n;
    }
    hostile_send(fd, post);
}
#define HOSTILE_TEXT "All work and no play makes Jack a dull boy. "
static void w_big_text(int fd, const mock_request *q) { (void)q; w_big(fd, HOSTILE_TEXT); }
static void w_big_ctrl(int fd, const mock_request *q) { (void)q; w_big(fd, "\x01"); }

static void w_http10(int fd, const mock_request *q) {        /* HTTP/1.0, no Content-Length: the body ends at close */
    char *body = hostile_completion("an HTTP/1.0 answer", "stop");
    (void)q;
    hostile_send(fd, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n");
    hostile_send(fd, body);
    free(body);
}

static void w_gzip(int fd, const mock_request *q) {
    char *body = hostile_completion("a gzipped answer", "stop");
    size_t n;
    unsigned char *g = hostile_gzip_stored(body, strlen(body), &n);
    (void)q;
    hostile_head(fd, "200 OK", "Content-Encoding: gzip\r\n", n);
    hostile_send_n(fd, (const char *)g, n);
    free(g);
    free(body);
}

static void w_gzip_broken(int fd, const mock_request *q) {  /* a gzip header, then bytes that are not deflate */
    char *body = hostile_completion("never readable", "stop");
    size_t n;
    unsigned char *g = hostile_gzip_stored(body, strlen(body), &n);
    (void)q;
    g[10] = 0x07;                                             /* BTYPE 11: reserved, an error */
    hostile_head(fd, "200 OK", "Content-Encoding: gzip\r\n", n);
    hostile_send_n(fd, (const char *)g, n);
    free(g);
    free(body);
}

static void w_redirect(int fd, const char *status) {
    char head[512];
    snprintf(head, sizeof head, "HTTP/1.1 %s\r\nLocation: http://127.0.0.1:%d/v1/chat/completions\r\n"
             "Content-Length: 0\r\n"
             "Connection: close\r\n\r\n", status, hostile_other_port);
    hostile_send(fd, head);
}
static void w_302(int fd, const mock_request *q) { (void)q; w_redirect(fd, "302 Found"); }
static void w_307(int fd, const mock_request *q) { (void)q; w_redirect(fd, "307 Temporary Redirect"); }

static void w_half(int fd, const mock_request *q) {         /* half the body, then (reset = 1) a TCP reset */
    char *body = hostile_completion("this answer is cut by a connection reset", "stop");
    (void)q;
    hostile_head(fd, "200 OK", "", strlen(body));
    hostile_send_n(fd, body, strlen(body) / 2);
    mock_sleep_ms(50);
    free(body);
}

/* ---- the handler: the fault is the model's name ------------------------------------------------- */

/* The user simulator's answers: opens with a request, ends once the assistant has spoken. */
static char *hostile_sim(const mock_request *q, const char *opening) {
    char buf[512];
    if (!strstr(mock_last_user(q), "**Assistant**:")) snprintf(buf, sizeof buf,
            "{\"thought\": \"open\", \"response\": \"%s\"}", opening);
    else snprintf(buf, sizeof buf, "{\"thought\": \"done\", \"response\": \"[[TERMINATE CHAT]]\"}");
    return mock_strdup(buf);
}


static void hostile_error(mock_response *r, int status, const char *message) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "error"), "message", message);
    r->status = status;
    r->body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
}

/* Bodies written out as the server sends them (escapes the client must read itself). */
static const char body_lone_surrogate[] =
    "{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"a\\ud800b\\udc00c\\ud83d\\ude00d\"}, "
    "\"finish_reason\": \"stop\"}]}";
static const char body_nul[] =
    "{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"kept\\u0000and lost\"}, "
    "\"finish_reason\": \"stop\"}]}";
static const char body_parts[] =
    "{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Hello, \"}, "
    "{\"type\": \"text\", \"text\": \"world\"}]}, \"finish_reason\": \"stop\"}]}";
static const char body_tool_calls[] =
    "{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"c1\", "
    "\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]}, "
    "\"finish_reason\": \"tool_calls\"}]}";
static const char bad_utf8[] = "caf\xc3 ok \xff\xfe end \xe2\x82 x \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf z";

/* A 429 with "Retry-After: seconds" on the model's first request, then `then` as the content
   (or, for a simulator, NULL: its answers). */
static void hostile_429_once(const mock_request *q, mock_response *r, int seconds, const char *then) {
    if (q->seen == 0) {
        hostile_error(r, 429, "rate limited");
        r->retry_after = seconds;
    } else r->content = then ? mock_strdup(then) : hostile_sim(q, "i need a haiku");
}

/* The key the request carried ("Bearer " stripped), inside `fmt` (one %s). */
static char *hostile_with_key(const mock_request *q, const char *fmt) {
    const char *key = q->auth ? q->auth + 7 : "";
    char *out = (char *)malloc(strlen(fmt) + strlen(key) + 1);
    sprintf(out, fmt, key);
    return out;
}

/* The simulator's answer holding the key twice: plain, and with every 4th character written as
   \u00XX (no 8 plain bytes of it: only the simulator's JSON decoding spells it). */
static char *hostile_sim_key(const mock_request *q) {
    char buf[1024], esc[512];
    const char *key = q->auth ? q->auth + 7 : "";
    size_t i, o = 0;
    for (i = 0; key[i] && o + 8 < sizeof esc; i++) {
        if (i % 4 == 0) o += (size_t)snprintf(esc + o, sizeof esc - o, "\\u%04x", (unsigned char)key[i]);
        else esc[o++] = key[i];
    }
    esc[o] = 0;
    snprintf(buf, sizeof buf, "{\"thought\": \"leak\", \"response\": \"my key is %s, or %s\"}", key, esc);
    return mock_strdup(buf);
}

static int is(const char *model, const char *name) { return strcmp(model, name) == 0; }

static void hostile_handler(void *ctx, const mock_request *q, mock_response *r) {
    const char *m = q->model;
    (void)ctx;
    if (is(m, "r429-short")) hostile_429_once(q, r, 1, "after a short Retry-After");
    else if (is(m, "r429-huge")) hostile_429_once(q, r, 999999999, "after a huge Retry-After");
    else if (is(m, "r429-date") && q->seen == 0) r->raw = w_retry_date;
    else if (is(m, "r429-date")) r->content = mock_strdup("after an HTTP-date Retry-After");
    else if (is(m, "sim-wait6")) hostile_429_once(q, r, 6, NULL);
    else if (is(m, "e502-once") && q->seen == 0) hostile_error(r, 502, "bad gateway");
    else if (is(m, "e502-once")) r->content = mock_strdup("after a 502");
    else if (is(m, "e503-always")) hostile_error(r, 503, "overloaded, try later");
    else if (is(m, "slow-body")) r->raw = w_slow;
    else if (is(m, "no-headers")) r->hang = 1;
    else if (is(m, "length-2gb") || is(m, "length-2gb-x16")) r->raw = w_length_2gb;
    else if (is(m, "chunked-endless") || is(m, "chunked-endless-x16")) r->raw = w_chunked_endless;
    else if (is(m, "gzip-bomb") || is(m, "gzip-bomb-x16")) r->raw = w_gzip_bomb;
    else if (is(m, "big-valid")) r->raw = w_big_text;
    else if (is(m, "big-control")) r->raw = w_big_ctrl;
    else if (is(m, "bad-utf8")) r->content = mock_strdup(bad_utf8);
    else if (is(m, "lone-surrogate")) r->body = mock_strdup(body_lone_surrogate);
    else if (is(m, "nul-content")) r->body = mock_strdup(body_nul);
    else if (is(m, "deep-json")) {
        size_t depth = 100000;
        r->body = (char *)malloc(2 * depth + 1);
        memset(r->body, '[', depth);
        memset(r->body + depth, ']', depth);
        r->body[2 * depth] = 0;
    } else if (is(m, "empty-choices")) r->body = mock_strdup("{\"choices\": []}");
    else if (is(m, "null-content")) r->body = hostile_completion(NULL, "stop");
    else if (is(m, "content-parts")) r->body = mock_strdup(body_parts);
    else if (is(m, "tool-calls-only")) r->body = mock_strdup(body_tool_calls);
    else if (is(m, "finish-length") || is(m, "finish-length-reject"))
        r->body = hostile_completion("cut off in the mid", "length");
    else if (is(m, "finish-filter") || is(m, "finish-filter-reject"))
        r->body = hostile_completion("", "content_filter");
    else if (is(m, "finish-filter-null")) r->body = hostile_completion(NULL, "content_filter");
    else if (is(m, "error-in-200")) r->body = mock_strdup("{\"error\": {\"message\": \"model overloaded\"}}");
    else if (is(m, "empty-200")) r->body = mock_strdup("");
    else if (is(m, "redirect-302")) r->raw = w_302;
    else if (is(m, "redirect-307")) r->raw = w_307;
    else if (is(m, "http10-no-length")) r->raw = w_http10;
    else if (is(m, "gzip")) r->raw = w_gzip;
    else if (is(m, "gzip-broken")) r->raw = w_gzip_broken;
    else if (is(m, "key-in-401") || is(m, "key-in-500")) {
        char *msg = hostile_with_key(q, "Incorrect API key provided: Bearer %s");
        hostile_error(r, is(m, "key-in-401") ? 401 : 500, msg);
        free(msg);
    } else if (is(m, "key-cut-401")) {                                  /* only 20 bytes of the key */
        char *msg = hostile_with_key(q, "Incorrect API key provided: Bearer %s");
        msg[strlen("Incorrect API key provided: Bearer ") + 20] = 0;
        hostile_error(r, 401, msg);
        free(msg);
    } else if (is(m, "key-in-200-body")) r->body = hostile_with_key(q, "%s was received; this is not JSON");
    else if (is(m, "key-in-reply") || is(m, "judge-key-reply"))
        r->content = hostile_with_key(q, "%s is what you sent me");
    else if (is(m, "sim-key") && !strstr(mock_last_user(q), "**Assistant**:")) r->content = hostile_sim_key(q);
    else if (is(m, "sim-key")) r->content = hostile_sim(q, "");
    else if (is(m, "sim-basic")) r->content = hostile_sim(q, "please write me a haiku");
    else if (is(m, "asst-ok")) r->content = mock_strdup("Here is a haiku about the sea.");
    else if (is(m, "judge-500")) hostile_error(r, 500, "the judge is down");
    else if (is(m, "reset-always") || (is(m, "reset-once") && q->seen == 0)) {
        r->raw = w_half;
        r->reset = 1;
    } else if (is(m, "reset-once")) r->content = mock_strdup("after a reset");
    else hostile_error(r, 400, "unknown test model");
}

/* The redirect target: records that it was reached (it must not be). */
static void hostile_other(void *ctx, const mock_request *q, mock_response *r) {
    FILE *f = fopen(hostile_hits, "ab");
    (void)ctx;
    if (f) { fprintf(f, "%s %s\n", q->model, q->auth ? "with a key" : "without a key"); fclose(f); }
    r->content = mock_strdup("followed the redirect");
}

/* The server process: both servers, their ports written to fd, then it serves until killed. */
static void hostile_serve(int fd, const char *hits_path) {
    static mock_server main_srv, other_srv;
    int ports[2];
    snprintf(hostile_hits, sizeof hostile_hits, "%s", hits_path);
    bomb = hostile_gzip_bomb((size_t)256 * HOSTILE_MIB / 258, &bomb_len);
    if (mock_start(&other_srv, hostile_other, NULL) != 0) _exit(2);
    hostile_other_port = other_srv.port;
    if (mock_start(&main_srv, hostile_handler, NULL) != 0) _exit(2);
    ports[0] = main_srv.port;
    ports[1] = other_srv.port;
    if (write(fd, ports, sizeof ports) != (ssize_t)sizeof ports) _exit(2);
    close(fd);
    for (;;) pause();
}
