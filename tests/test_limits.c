/* test_limits.c - untrusted sizes are checked before allocation: a config.json with huge sizes,
   a safetensors header claiming huge shapes or offsets, and a JSONL file with a 100 MB line are
   each refused with a clear error, and the process's peak memory stays small while it happens.
   Each case runs in a forked child; the peak resident set of that child (wait4's ru_maxrss)
   minus that of a child that does nothing is the memory the case cost. */
#define _DEFAULT_SOURCE            /* wait4 */
#include "../collabllm.h"
#include "check.h"
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIR "build/tmp_limits"

/* The budget for reading a line of up to 64 MB. Under AddressSanitizer the growing buffer's
   freed predecessors (32 + 16 + ... MB) stay in its quarantine and count as resident too. */
#if defined(__SANITIZE_ADDRESS__)
#define LINE_BUDGET_MB 224
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LINE_BUDGET_MB 224
#endif
#endif
#ifndef LINE_BUDGET_MB
#define LINE_BUDGET_MB 96
#endif

typedef cllm_result (*case_fn)(cllm_err *err);

/* Runs fn in a child. Returns its result code; *rss_mb gets its peak RSS in MB and msg the
   message it failed with (through a pipe). */
static int run_child(case_fn fn, double *rss_mb, char *msg, size_t msg_size) {
    int fds[2], status = 0;
    struct rusage ru;
    ssize_t got;
    pid_t pid;
    msg[0] = 0;
    if (pipe(fds) != 0) return -1;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        cllm_err err;
        cllm_result rc;
        memset(&err, 0, sizeof err);
        close(fds[0]);
        rc = fn ? fn(&err) : CLLM_OK;
        if (write(fds[1], err.msg, strlen(err.msg)) < 0) rc = -1;
        close(fds[1]);
        _exit((int)rc & 0x7f);
    }
    close(fds[1]);
    got = read(fds[0], msg, msg_size - 1);
    msg[got > 0 ? got : 0] = 0;
    close(fds[0]);
    memset(&ru, 0, sizeof ru);
    if (wait4(pid, &status, 0, &ru) != pid) return -1;
    *rss_mb = ru.ru_maxrss / 1024.0;    /* Linux: kilobytes */
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static double baseline_mb;

/* Expects the case to fail with `code`, a message holding `phrase`, and at most `budget_mb`
   more peak memory than the idle child. */
static void expect_refused(const char *label, case_fn fn, cllm_result code, const char *phrase, double budget_mb) {
    char msg[CLLM_ERRMSG_SIZE + 1], line[512];
    double rss = 0;
    int rc = run_child(fn, &rss, msg, sizeof msg);
    printf("    %s\n      -> %s: %s\n      peak RSS %.1f MB (idle child %.1f MB)\n", label, rc >= 0 ? cllm_result_string((cllm_result)rc) : "crashed", msg, rss, baseline_mb);
    snprintf(line, sizeof line, "%s: refused (%s, \"%s\"), +%.1f MB <= %.0f MB", label, cllm_result_string(code), phrase, rss - baseline_mb, budget_mb);
    check_true(line, rc == (int)code && strstr(msg, phrase) != NULL && rss - baseline_mb <= budget_mb);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) { fputs(text, f); fclose(f); }
}

/* A safetensors file: the 8-byte little-endian header length, the header, then data_bytes
   zero bytes. */
static void write_safetensors(const char *path, const char *header, size_t data_bytes) {
    FILE *f = fopen(path, "wb");
    uint64_t n = strlen(header);
    unsigned char len[8];
    int i;
    if (!f) return;
    for (i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, f);
    fputs(header, f);
    while (data_bytes--) fputc(0, f);
    fclose(f);
}

/* ---- the cases (each runs in the child) ---- */

/* 100000 x 65536 embedding, 80 layers of 65536 x 200000 MLPs: 1e12 parameters */
static cllm_result config_absurd(cllm_err *err) {
    static const char cfg[] = "{\"model_type\": \"llama\", \"vocab_size\": 100000, \"hidden_size\": 65536, \"intermediate_size\": 200000,"
                              " \"num_hidden_layers\": 80, \"num_attention_heads\": 64}";
    cllm_config c;
    return cllm_config_parse(&c, cfg, strlen(cfg), err);
}

/* 3e10 parameters (121 GB): within the parser's bounds, but the weights file is 28 bytes */
static cllm_result config_large_weights_small(cllm_err *err) {
    cllm_model m;
    return cllm_model_load(&m, DIR "/big_config", err);
}

static cllm_result st_huge_shape(cllm_err *err) {
    cllm_safetensors st;
    return cllm_st_open(&st, DIR "/huge_shape.safetensors", err);
}

static cllm_result st_huge_offsets(cllm_err *err) {
    cllm_safetensors st;
    return cllm_st_open(&st, DIR "/huge_offsets.safetensors", err);
}

static cllm_result st_huge_header(cllm_err *err) {
    cllm_safetensors st;
    return cllm_st_open(&st, DIR "/huge_header.safetensors", err);
}

static cllm_result tasks_long_line(cllm_err *err) {
    cllm_task *tasks;
    int n;
    return cllm_tasks_read_jsonl(DIR "/long_line.jsonl", &tasks, &n, err);
}

static cllm_result batch_long_line(cllm_err *err) {
    cllm_batch b;
    return cllm_batch_read_jsonl(&b, DIR "/long_line.jsonl", err);
}

static cllm_result batch_wide(cllm_err *err) {
    cllm_batch b;
    return cllm_batch_read_jsonl(&b, DIR "/wide_batch.jsonl", err);
}

int main(void) {
    char msg[CLLM_ERRMSG_SIZE + 1];
    FILE *f;
    int i;
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    mkdir(DIR "/big_config", 0755);
    if (run_child(NULL, &baseline_mb, msg, sizeof msg) != 0) { printf("cannot fork\n"); return 1; }

    printf("config.json\n");
    expect_refused("sizes beyond any real model (1e12 parameters)", config_absurd, CLLM_ERR_LIMIT, "implausibly large", 16);
    write_text(DIR "/big_config/config.json", "{\"model_type\": \"llama\", \"vocab_size\": 100000, \"hidden_size\": 65536, \"intermediate_size\": 1,"
                                              " \"num_hidden_layers\": 1, \"num_attention_heads\": 64}");
    write_safetensors(DIR "/big_config/model.safetensors", "{\"__metadata__\": {}}", 0);
    expect_refused("3e10 parameters (121 GB) with a 28-byte weights file", config_large_weights_small, CLLM_ERR_FORMAT, "config and weights do not match", 16);

    printf("safetensors headers\n");
    write_safetensors(DIR "/huge_shape.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1048576, 1048576, 1024], \"data_offsets\": [0, 16]}}", 16);
    expect_refused("shape [2^20, 2^20, 2^10] (2^50 elements)", st_huge_shape, CLLM_ERR_LIMIT, "more than 2^40 elements", 16);
    write_safetensors(DIR "/huge_offsets.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1000000000], \"data_offsets\": [0, 4000000000]}}", 16);
    expect_refused("shape [1e9] F32 with data_offsets [0, 4e9] in a 100-byte file", st_huge_offsets, CLLM_ERR_FORMAT, "run past the end of the file", 16);
    f = fopen(DIR "/huge_header.safetensors", "wb");
    if (f) { unsigned char len[8] = { 0, 0, 0, 0, 0, 1, 0, 0 }; fwrite(len, 1, 8, f); fputs("{}", f); fclose(f); }   /* header length 2^40 */
    expect_refused("a header length of 2^40 bytes", st_huge_header, CLLM_ERR_LIMIT, "exceeds the 100 MB limit", 16);

    printf("JSONL\n");
    /* a 100 MB line: a task's opening, then zero bytes up to 100 MB (a sparse file, no disk) */
    f = fopen(DIR "/long_line.jsonl", "wb");
    if (f) { fputs("{\"single_turn_prompt\": \"ok\", \"input_ids\": [1]}\n{\"single_turn_prompt\": \"", f); fclose(f); }
    if (truncate(DIR "/long_line.jsonl", 100L << 20) != 0) printf("    cannot extend the long-line file\n");
    expect_refused("tasks: a 100 MB second line", tasks_long_line, CLLM_ERR_LIMIT, "long_line.jsonl:2: a line longer than 64 MB", LINE_BUDGET_MB);
    expect_refused("token batches: the same file", batch_long_line, CLLM_ERR_LIMIT, "long_line.jsonl:2: a line longer than 64 MB", LINE_BUDGET_MB);
    /* 20000 one-token rows and one row of 10000 tokens: a dense 20001 x 10000 batch (2e8) */
    f = fopen(DIR "/wide_batch.jsonl", "wb");
    if (f) {
        for (i = 0; i < 20000; i++) fputs("{\"input_ids\": [1]}\n", f);
        fputs("{\"input_ids\": [1", f);
        for (i = 1; i < 10000; i++) fputs(",1", f);
        fputs("]}\n", f);
        fclose(f);
    }
    expect_refused("token batches: 20001 rows padded to 10000 tokens", batch_wide, CLLM_ERR_LIMIT, "too large for one batch", 64);
    remove(DIR "/long_line.jsonl");
    return check_summary("test_limits");
}
