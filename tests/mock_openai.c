/* mock_openai.c - a loopback OpenAI chat-completions server for the tests (POSIX sockets and
   threads). A test #includes it first (it sets _POSIX_C_SOURCE), starts it on 127.0.0.1 with an
   ephemeral port and a handler, and points a client at http://127.0.0.1:PORT/v1.

   What it speaks: HTTP/1.1, one request per connection (it answers "Connection: close").
     POST /v1/chat/completions  body: the client's JSON. The handler decides the answer:
       a completion {"choices":[{"message":{"role":"assistant","content":...},"finish_reason":"stop"}],
                     "usage":{"prompt_tokens","completion_tokens","total_tokens"}},
       or any status and raw body, after a delay, with Retry-After, or a fault:
         hang      read the request, never answer (until the client gives up and disconnects)
         truncate  promise Content-Length N, send N/2 bytes, close
         raw       the handler's own writer sends the whole answer, headers and all (any fault
                   HTTP can carry: slow bodies, chunked or gzipped ones, lying headers, ...)
         reset     close with a TCP reset (SO_LINGER 0) instead of an orderly close
     any other path: 404 {"error": {"message": ...}}.
   Each connection gets its own thread, so delays overlap as they would on a real server; the
   server counts requests in flight and remembers the most seen at once. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#ifdef MSG_NOSIGNAL
#define MOCK_SEND_FLAGS MSG_NOSIGNAL          /* a client that hung up must not kill the test */
#else
#define MOCK_SEND_FLAGS 0
#endif

typedef struct mock_request {
    const char *path;
    const char *auth;          /* the Authorization header value, or NULL                      */
    const char *body;          /* the request body (NUL-terminated)                            */
    cJSON      *json;          /* the parsed body, or NULL                                     */
    const char *model;         /* json.model, or ""                                            */
    int         seen;          /* earlier requests with the same model (for "fail k times")    */
} mock_request;

struct mock_request;
typedef struct mock_response {
    int   status;              /* default 200                                                  */
    int   delay_ms;            /* before answering                                             */
    int   retry_after;         /* > 0: send "Retry-After: N"                                   */
    int   hang, truncate;      /* faults, see the top                                          */
    char *content;             /* malloc'd: answer with a completion carrying this content     */
    char *body;                /* malloc'd: answer with exactly this body (wins over content)  */
    void (*raw)(int fd, const struct mock_request *q);   /* writes the whole answer itself     */
    int   reset;               /* end with a TCP reset                                         */
} mock_response;

typedef void (*mock_handler)(void *ctx, const mock_request *req, mock_response *resp);

#define MOCK_MAX_MODELS 256
typedef struct mock_server {
    int             port, fd, stop;
    mock_handler    handler;
    void           *ctx;
    pthread_t       acceptor;
    pthread_mutex_t mu;
    int             active;                 /* connection threads alive                       */
    int             in_flight, max_in_flight, requests;
    char           *models[MOCK_MAX_MODELS];
    int             counts[MOCK_MAX_MODELS];
    int             n_models;
} mock_server;

typedef struct mock_conn { mock_server *s; int fd; } mock_conn;

static char *mock_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void mock_sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* A completion body carrying `content`; usage counts bytes so tests can check the sums. */
static char *mock_completion(const char *content, size_t prompt_len) {
    cJSON *root = cJSON_CreateObject(), *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *choice = cJSON_CreateObject(), *msg, *usage;
    char *out;
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    msg = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    cJSON_AddStringToObject(msg, "content", content);
    cJSON_AddStringToObject(choice, "finish_reason", "stop");
    usage = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", (double)prompt_len);
    cJSON_AddNumberToObject(usage, "completion_tokens", (double)strlen(content));
    cJSON_AddNumberToObject(usage, "total_tokens", (double)(prompt_len + strlen(content)));
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* Reads headers and a Content-Length body; returns the malloc'd request text or NULL. */
static char *mock_read_request(int fd, size_t *head_len, size_t *total) {
    size_t cap = 4096, n = 0, need = 0;
    char *buf = (char *)malloc(cap + 1);
    *head_len = 0;
    while (buf) {
        ssize_t r;
        if (n == cap) { char *nb = (char *)realloc(buf, 2 * cap + 1); if (!nb) break; buf = nb; cap *= 2; }
        r = recv(fd, buf + n, cap - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        buf[n] = 0;
        if (!*head_len) {
            char *end = strstr(buf, "\r\n\r\n"), *cl;
            if (!end) continue;
            *head_len = (size_t)(end - buf) + 4;
            cl = strstr(buf, "Content-Length:");
            if (!cl) cl = strstr(buf, "content-length:");
            need = *head_len + (cl && cl < end ? (size_t)strtoul(cl + 15, NULL, 10) : 0);
        }
        if (*head_len && n >= need) { *total = n; return buf; }
    }
    free(buf);
    return NULL;
}

static void mock_send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MOCK_SEND_FLAGS);
        if (w <= 0) return;
        p += w; n -= (size_t)w;
    }
}

/* How many requests with this model came before (under the lock). */
static int mock_count_model(mock_server *s, const char *model) {
    int i, seen = 0;
    for (i = 0; i < s->n_models; i++) if (strcmp(s->models[i], model) == 0) { seen = s->counts[i]++; return seen; }
    if (s->n_models < MOCK_MAX_MODELS && (s->models[s->n_models] = mock_strdup(model)) != NULL) s->counts[s->n_models++] = 1;
    return 0;
}

/* Answers one request; returns 1 when the connection is to end with a reset. */
static int mock_answer(mock_server *s, int fd, char *req, size_t head_len) {
    mock_request q;
    mock_response r;
    char path[256] = "", header[512], *auth = NULL, *a, *body;
    const cJSON *model;
    size_t blen;
    memset(&q, 0, sizeof q);
    memset(&r, 0, sizeof r);
    sscanf(req, "%*s %255s", path);
    if ((a = strstr(req, "Authorization: ")) != NULL && a < req + head_len) {
        char *eol = strstr(a, "\r\n");
        auth = (char *)malloc((size_t)(eol - a));
        if (auth) { memcpy(auth, a + 15, (size_t)(eol - a) - 15); auth[eol - a - 15] = 0; }
    }
    q.path = path;
    q.auth = auth;
    q.body = req + head_len;
    q.json = cJSON_Parse(q.body);
    model = cJSON_GetObjectItemCaseSensitive(q.json, "model");
    q.model = cJSON_IsString(model) ? model->valuestring : "";
    pthread_mutex_lock(&s->mu);
    q.seen = mock_count_model(s, q.model);
    s->requests++;
    if (++s->in_flight > s->max_in_flight) s->max_in_flight = s->in_flight;
    pthread_mutex_unlock(&s->mu);

    r.status = 200;
    if (strcmp(path, "/v1/chat/completions") != 0) {
        r.status = 404;
        r.body = mock_strdup("{\"error\": {\"message\": \"no such route\", \"type\": \"invalid_request_error\"}}");
    } else s->handler(s->ctx, &q, &r);
    if (r.delay_ms > 0) mock_sleep_ms(r.delay_ms);
    if (r.raw) r.raw(fd, &q);
    else if (r.hang) {
        struct pollfd p;
        char sink[256];
        p.fd = fd; p.events = POLLIN;
        while (!s->stop) {                      /* until the client hangs up */
            int k = poll(&p, 1, 50);
            if (k > 0 && recv(fd, sink, sizeof sink, 0) <= 0) break;
        }
    } else {
        body = r.body ? r.body : mock_completion(r.content ? r.content : "", strlen(q.body));
        blen = body ? strlen(body) : 0;
        snprintf(header, sizeof header, "HTTP/1.1 %d Mock\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n", r.status, blen);
        if (r.retry_after > 0) snprintf(header + strlen(header), sizeof header - strlen(header), "Retry-After: %d\r\n", r.retry_after);
        strcat(header, "\r\n");
        mock_send_all(fd, header, strlen(header));
        mock_send_all(fd, body ? body : "", r.truncate ? blen / 2 : blen);
        if (body != r.body) free(body);
    }
    pthread_mutex_lock(&s->mu);
    s->in_flight--;
    pthread_mutex_unlock(&s->mu);
    free(r.body); free(r.content); free(auth);
    cJSON_Delete(q.json);
    return r.reset;
}

static void *mock_conn_main(void *arg) {
    mock_conn *c = (mock_conn *)arg;
    mock_server *s = c->s;
    size_t head_len = 0, total = 0;
    char *req = mock_read_request(c->fd, &head_len, &total);
    int reset = req ? mock_answer(s, c->fd, req, head_len) : 0;
    free(req);
    if (reset) {                              /* RST instead of FIN: the client sees a reset */
        struct linger l;
        l.l_onoff = 1;
        l.l_linger = 0;
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    } else shutdown(c->fd, SHUT_WR);
    close(c->fd);
    free(c);
    pthread_mutex_lock(&s->mu);
    s->active--;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void *mock_accept_main(void *arg) {
    mock_server *s = (mock_server *)arg;
    struct pollfd p;
    p.fd = s->fd; p.events = POLLIN;
    while (!s->stop) {
        int fd;
        mock_conn *c;
        pthread_t t;
        if (poll(&p, 1, 50) <= 0) continue;
        if ((fd = accept(s->fd, NULL, NULL)) < 0) continue;
        c = (mock_conn *)malloc(sizeof *c);
        if (!c) { close(fd); continue; }
        c->s = s; c->fd = fd;
        pthread_mutex_lock(&s->mu);
        s->active++;
        pthread_mutex_unlock(&s->mu);
        if (pthread_create(&t, NULL, mock_conn_main, c) != 0) {
            close(fd); free(c);
            pthread_mutex_lock(&s->mu); s->active--; pthread_mutex_unlock(&s->mu);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

/* Listens on 127.0.0.1 with a port the kernel picks; returns 0 on success. */
static int mock_start(mock_server *s, mock_handler handler, void *ctx) {
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    int one = 1;
    memset(s, 0, sizeof *s);
    s->handler = handler; s->ctx = ctx;
    pthread_mutex_init(&s->mu, NULL);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (s->fd < 0) return -1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(s->fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s->fd, 128) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&addr, &alen) != 0) { close(s->fd); return -1; }
    s->port = ntohs(addr.sin_port);
    if (pthread_create(&s->acceptor, NULL, mock_accept_main, s) != 0) { close(s->fd); return -1; }
    return 0;
}

static void mock_stop(mock_server *s) {
    int i, active = 1;
    s->stop = 1;
    pthread_join(s->acceptor, NULL);
    close(s->fd);
    while (active) {                          /* connection threads notice `stop` within 50 ms */
        pthread_mutex_lock(&s->mu);
        active = s->active;
        pthread_mutex_unlock(&s->mu);
        if (active) mock_sleep_ms(5);
    }
    for (i = 0; i < s->n_models; i++) free(s->models[i]);
    pthread_mutex_destroy(&s->mu);
}

/* Resets the in-flight high-water mark (between test cases). */
static void mock_reset_stats(mock_server *s) {
    pthread_mutex_lock(&s->mu);
    s->max_in_flight = s->in_flight;
    pthread_mutex_unlock(&s->mu);
}

/* The text of the last user message in the request, or "". */
static const char *mock_last_user(const mock_request *q) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(q->json, "messages"), *m;
    const char *last = "";
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role"), *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0 && cJSON_IsString(content)) last = content->valuestring;
    }
    return last;
}
