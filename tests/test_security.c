/* test_security.c - the trust boundaries of collabllm.h (manual section 6, "Security"):
   - the API key never reaches an error message, stderr/stdout or a file: `collabllm simulate`
     runs with a bogus key in its environment against the loopback mock, whose 401 answer echoes
     the key back (whole, or its first 20 bytes), and against a closed port; nothing it prints or
     writes holds the key or 8 bytes in a row of it;
   - TLS certificates are verified by default: a TLS server with a self-signed certificate
     (openssl s_server) is refused with a certificate error, and reached only with insecure = 1;
   - the pass_rate metric starts the interpreter without a shell (a "python" of
     "python3; touch FILE" runs nothing) and under a memory limit (1 GB allocated with a
     128 MB limit fails the unit tests). */
/* no-fast-path: trust boundaries on API models, no model kernel (make test runs it in its first pass only) */
#include "mock_openai.c"
#include "../collabllm.h"
#include "check.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#define KEY "sk-bogus-SECRET-7f3a9c0d1e2b4a6f"

static int echo_cut;            /* > 0: the endpoint quotes only that many bytes of the credentials */

static void handler(void *ctx, const mock_request *q, mock_response *r) {
    char buf[512];
    (void)ctx;
    r->status = 401;            /* like a proxy that quotes the credentials it refused */
    snprintf(buf, sizeof buf, "{\"error\": {\"message\": \"invalid credentials: %.*s...\"}}", echo_cut > 0 ? echo_cut : 400,
             q->auth ? q->auth : "(none)");
    r->body = mock_strdup(buf);
}

/* Does the file hold the key, or a fragment of 8 bytes of it? -1 if it cannot be read. */
static int file_has_key(const char *path) {
    char *text = NULL;
    size_t len;
    cllm_err err;
    int has;
    if (cllm_read_file(path, &text, &len, &err) != CLLM_OK) return -1;
    {   /* the key, or any 8 bytes in a row of it */
        const char *key = KEY;
        size_t i;
        char window[9];
        has = 0;
        for (i = 0; i + 8 <= strlen(key); i++) {
            memcpy(window, key + i, 8);
            window[8] = 0;
            if (strstr(text, window)) has = 1;
        }
    }
    cllm_free_buffer(text);
    return has;
}

static void test_key(const char *build) {
    mock_server srv;
    char cmd[2048], path[512];
    const char *outs[] = { "out", "err", "conv" };
    int which, k;
    FILE *f;
    printf("the API key in $CLLM_SEC_KEY, the endpoint echoing it\n");
    if (mock_start(&srv, handler, NULL) != 0) { check_true("the mock server starts", 0); return; }
    snprintf(path, sizeof path, "%s/tmp_sec_tasks.jsonl", build);
    f = fopen(path, "wb");
    if (f) { fputs("{\"single_turn_prompt\": \"order a coffee\"}\n", f); fclose(f); }
    setenv("CLLM_SEC_KEY", KEY, 1);
    for (which = 0; which < 3; which++) {
        char url[64], label[160];
        int leaked = 0, status;
        echo_cut = which == 1 ? 7 + 20 : 0;                             /* "Bearer " + 20 bytes of the key */
        if (which < 2) snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", srv.port);
        else snprintf(url, sizeof url, "http://127.0.0.1:9/v1");     /* the discard port: refused */
        snprintf(cmd, sizeof cmd, "%s/collabllm simulate --tasks %s --out %s/tmp_sec_conv.jsonl --user-model u --assistant-model a "
                 "--base-url %s --api-key-env CLLM_SEC_KEY --retries 0 >%s/tmp_sec_out.txt 2>%s/tmp_sec_err.txt",
                 build, path, build, url, build, build);
        snprintf(label, sizeof label, "%s/tmp_sec_conv.jsonl", build);
        remove(label);
        status = system(cmd);
        for (k = 0; k < 3; k++) {
            char p[512];
            snprintf(p, sizeof p, "%s/tmp_sec_%s.%s", build, outs[k], k == 2 ? "jsonl" : "txt");
            leaked |= file_has_key(p) == 1;
        }
        {
            char p[512], *text = NULL;
            size_t len;
            cllm_err err;
            snprintf(p, sizeof p, "%s/tmp_sec_err.txt", build);
            if (cllm_read_file(p, &text, &len, &err) == CLLM_OK) printf("    stderr: %.300s\n", text);
            snprintf(label, sizeof label, "%s: the run fails, and neither stdout, stderr nor the output file holds the key",
                     which == 2 ? "a refused connection" : which ? "a 401 that echoes 20 bytes of the key" : "a 401 that echoes \"Bearer <key>\"");
            check_true(label, status != 0 && !leaked && text && (which == 2 || strstr(text, "[redacted]") != NULL));
            cllm_free_buffer(text);
        }
    }
    mock_stop(&srv);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

static void test_tls(const char *build) {
    char cmd[1024], url[64];
    int port = 20000 + (int)(getpid() % 20000), i, up = 0;
    pid_t pid;
    cllm_client c;
    cllm_client_config cfg;
    cllm_chat_request req;
    cllm_chat_result res;
    cllm_message msg = { "user", "hi" };
    cllm_err err;
    printf("TLS verification\n");
    if (system("command -v openssl >/dev/null 2>&1") != 0) { printf("  SKIP no openssl command (Debian package openssl)\n"); return; }
    snprintf(cmd, sizeof cmd, "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout %s/tmp_sec_key.pem -out %s/tmp_sec_cert.pem >/dev/null 2>&1", build, build);
    if (system(cmd) != 0) { check_true("openssl makes a self-signed certificate", 0); return; }
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        char portarg[16], certarg[256], keyarg[256];
        int devnull = open("/dev/null", O_WRONLY);
        snprintf(portarg, sizeof portarg, "%d", port);
        snprintf(certarg, sizeof certarg, "%s/tmp_sec_cert.pem", build);
        snprintf(keyarg, sizeof keyarg, "%s/tmp_sec_key.pem", build);
        if (devnull >= 0) { dup2(devnull, 1); dup2(devnull, 2); }
        execlp("openssl", "openssl", "s_server", "-accept", portarg, "-cert", certarg, "-key", keyarg, "-www", "-quiet", (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 200 && !up; i++) {          /* wait until it listens (up to 10 s) */
        struct sockaddr_in a;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct timespec ts = { 0, 50000000 };
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET; a.sin_port = htons((unsigned short)port); a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        up = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (!up) nanosleep(&ts, NULL);
    }
    snprintf(url, sizeof url, "https://127.0.0.1:%d/v1", port);
    memset(&req, 0, sizeof req);
    req.messages = &msg; req.n_messages = 1; req.params.model = "m";
    for (i = 0; i < 2 && up; i++) {
        memset(&cfg, 0, sizeof cfg);
        cfg.base_url = url; cfg.max_retries = -1; cfg.insecure = i; cfg.timeout_ms = 1500;
        cfg.api_key_env = "CLLM_SEC_UNSET";
        if (cllm_client_init(&c, &cfg, &err) != CLLM_OK) { check_true(err.msg, 0); break; }
        cllm_client_chat(&c, &req, &res, &err);
        printf("    insecure = %d: %s\n", i, res.err.msg);
        if (i == 0) check_true("default: the self-signed certificate is refused (a certificate error, nothing sent)", res.code != CLLM_OK && strstr(res.err.msg, "certificate") != NULL);
        else check_true("insecure = 1: the handshake passes (any failure is not about the certificate)", strstr(res.err.msg, "certificate") == NULL);
        cllm_chat_result_free(&res);
        cllm_client_free(&c);
    }
    if (!up) check_true("openssl s_server listens", 0);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* ---- pass_rate: no shell, a memory limit -------------------------------------------------- */

static double pass_rate(const char *python, long memory_mb, const char *code) {
    static const char *tests = "import unittest\nclass T(unittest.TestCase):\n    def test_it(self): self.assertEqual(f(), 1)\n";
    cllm_code_config cfg;
    cllm_conv conv = { 0 };
    cllm_session s;
    cllm_task task;
    cllm_goal goal = { NULL, "p", NULL };
    cllm_err err;
    double score = -1;
    memset(&cfg, 0, sizeof cfg);
    memset(&task, 0, sizeof task);
    memset(&s, 0, sizeof s);
    cfg.python = python; cfg.memory_mb = memory_mb; cfg.timeout_s = 20; cfg.no_extract = 1;
    task.json = cJSON_CreateObject();
    cJSON_AddItemToObject(task.json, "single_turn_metadata", cJSON_CreateObject());
    cJSON_AddStringToObject(cJSON_GetObjectItem(task.json, "single_turn_metadata"), "test", tests);
    s.goal = &goal; s.task = &task; s.conv = &conv; s.n_history = 1;
    cllm_conv_push(&conv, "user", "write f", &err);
    cllm_conv_push(&conv, "assistant", code, &err);
    cllm_metric_pass_rate(&cfg, &s, 1, &score, &err);
    cllm_conv_free(&conv);
    cJSON_Delete(task.json);
    return score;
}

static void test_pass_rate(const char *build) {
    char python[600], marker[512];
    double s;
    printf("pass_rate: no shell, a memory limit\n");
    s = pass_rate(NULL, 0, "```python\ndef f():\n    return 1\n```");
    check_true("a correct f passes (python3 runs)", s == 1.0);
    snprintf(marker, sizeof marker, "%s/tmp_sec_pwned", build);
    remove(marker);
    snprintf(python, sizeof python, "python3; touch %s", marker);
    s = pass_rate(python, 0, "```python\ndef f():\n    return 1\n```");
    check_true("\"python3; touch FILE\" is taken as one program name: nothing runs (unscored, NaN), no FILE", isnan(s) && access(marker, F_OK) != 0);
    s = pass_rate(NULL, 0, "```python\ndef f():\n    x = bytearray(1 << 30)\n    return 1\n```");
    check_true("1 GB allocated under the default 2 GB limit: passes", s == 1.0);
    s = pass_rate(NULL, 128, "```python\ndef f():\n    x = bytearray(1 << 30)\n    return 1\n```");
    check_true("1 GB allocated under a 128 MB limit: fails (score 0)", s == 0.0);
}

int main(void) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    (void)mock_last_user; (void)mock_reset_stats;
    test_key(build);
    test_tls(build);
    test_pass_rate(build);
    return check_summary("test_security");
}
