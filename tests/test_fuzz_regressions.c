/* test_fuzz_regressions.c - replays, without libFuzzer, every input the fuzz targets in
   tests/fuzz/ have found a bug with (tests/data/fuzz_regressions/TARGET/) and every seed of their
   corpora (tests/fuzz/corpus/TARGET/) through the same harnesses, so each fixed crash stays
   fixed in `make test` and, with the sanitizers, in `make asan`. A broken invariant traps with
   the name of the input; `make fuzz` looks for new ones.
   Findings are listed in tests/data/fuzz_regressions/README.md; where a finding was undefined
   behaviour that only a sanitizer sees, a direct check below fails without the fix too. */
/* no-fast-path: the parsers, no model kernel (make test runs it in its first pass only) */
#define _POSIX_C_SOURCE 200809L   /* scandir */
#include <stdio.h>
static const char *replaying = "";   /* the input being replayed, for the report of a trap */
#define FUZZ_CHECK(cond, what) \
    do { if (!(cond)) { fprintf(stderr, "invariant failed on %s (%s:%d): %s\n", replaying, __FILE__, __LINE__, what); __builtin_trap(); } } while (0)
#include "fuzz/fuzz_util.h"
#include "check.h"

/* Every harness defines LLVMFuzzerTestOneInput; each gets its own name here. */
#define LLVMFuzzerTestOneInput fuzz_batch_jsonl
#include "fuzz/fuzz_batch_jsonl.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_chat_render
#include "fuzz/fuzz_chat_render.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_client_response
#include "fuzz/fuzz_client_response.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_config
#include "fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_dpo_jsonl
#include "fuzz/fuzz_dpo_jsonl.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_lenient_json
#include "fuzz/fuzz_lenient_json.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_records_jsonl
#include "fuzz/fuzz_records_jsonl.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_ref_json
#include "fuzz/fuzz_ref_json.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_safetensors
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_sft_jsonl
#include "fuzz/fuzz_sft_jsonl.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tasks_jsonl
#include "fuzz/fuzz_tasks_jsonl.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tiktoken_encode
#include "fuzz/fuzz_tiktoken_encode.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tiktoken_file
#include "fuzz/fuzz_tiktoken_file.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokenizer_config
#include "fuzz/fuzz_tokenizer_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokenizer_encode
#include "fuzz/fuzz_tokenizer_encode.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokenizer_json
#include "fuzz/fuzz_tokenizer_json.c"
#undef LLVMFuzzerTestOneInput

#include <dirent.h>

typedef int (*harness_fn)(const uint8_t *, size_t);
static const struct { const char *name; harness_fn fn; } targets[] = {
    { "batch_jsonl", fuzz_batch_jsonl }, { "chat_render", fuzz_chat_render },
    { "client_response", fuzz_client_response }, { "config", fuzz_config },
    { "dpo_jsonl", fuzz_dpo_jsonl }, { "lenient_json", fuzz_lenient_json },
    { "records_jsonl", fuzz_records_jsonl }, { "ref_json", fuzz_ref_json },
    { "safetensors", fuzz_safetensors }, { "sft_jsonl", fuzz_sft_jsonl },
    { "tasks_jsonl", fuzz_tasks_jsonl }, { "tiktoken_encode", fuzz_tiktoken_encode },
    { "tiktoken_file", fuzz_tiktoken_file }, { "tokenizer_config", fuzz_tokenizer_config },
    { "tokenizer_encode", fuzz_tokenizer_encode }, { "tokenizer_json", fuzz_tokenizer_json },
};

/* Runs fn on every file in dir (sorted, so a report is reproducible); returns how many, or -1
   if a file cannot be read. A missing directory holds no inputs. */
static int replay_dir(const char *dir, harness_fn fn) {
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort), i, done = 0;
    if (n < 0) return 0;
    for (i = 0; i < n; i++) {
        char path[512];
        char *data = NULL;
        size_t len = 0;
        cllm_err err;
        if (names[i]->d_name[0] != '.' && strcmp(names[i]->d_name, "README.md") != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
            replaying = path;
            if (cllm_read_file(path, &data, &len, &err) != CLLM_OK) { printf("  cannot read %s: %s\n", path, err.msg); done = -1; }
            else { fn((const uint8_t *)data, len); if (done >= 0) done++; }
            CLLM_FREE(data);
        }
        free(names[i]);
    }
    free(names);
    return done;
}

/* Findings whose symptom is undefined behaviour (seen only by a sanitizer) get a check of the
   fixed behaviour that fails in any build. */
static void direct_checks(void) {
    char *data = NULL, *out = NULL;
    size_t len = 0;
    cllm_tokenizer tok;
    cllm_err err;
    cllm_result rc;
    /* ref ppo-rewards: a response id of 1e88 was cast to int (UB); now it is refused */
    cllm_read_file("tests/data/fuzz_regressions/ref_json/response-id-out-of-int-range", &data, &len, &err);
    rc = data ? ref_json("ppo-rewards", data + 1, len - 1, &out, &err) : CLLM_ERR_IO;
    check_true("ppo-rewards refuses a response id outside int", rc == CLLM_ERR_FORMAT && strstr(err.msg, "token id") != NULL);
    free(out); CLLM_FREE(data);
    /* tokenizer.json: 305 tokens numbered up to 7142 were accepted, with tables for every id;
       such sparse ids (up to 16 million from a short file) are now refused */
    cllm_read_file("tests/data/fuzz_regressions/tokenizer_json/sparse-ids", &data, &len, &err);
    memset(&tok, 0, sizeof tok);
    rc = data ? cllm_tokenizer_load_json(&tok, data, len, NULL, 0, &err) : CLLM_ERR_IO;
    check_true("tokenizer.json with 305 tokens and ids up to 7142 is refused", rc == CLLM_ERR_FORMAT && strstr(err.msg, "nearly dense") != NULL);
    if (rc == CLLM_OK) cllm_tokenizer_free(&tok);
    CLLM_FREE(data);
}

int main(void) {
    size_t k;
    for (k = 0; k < sizeof targets / sizeof targets[0]; k++) {
        char dir[256], label[160];
        int found, seeds;
        snprintf(dir, sizeof dir, "tests/data/fuzz_regressions/%s", targets[k].name);
        found = replay_dir(dir, targets[k].fn);
        snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", targets[k].name);
        seeds = replay_dir(dir, targets[k].fn);
        snprintf(label, sizeof label, "fuzz_%s: %d findings and %d seeds replayed", targets[k].name, found, seeds);
        check_true(label, found >= 0 && seeds > 0);
    }
    direct_checks();
    fuzz_free_tokenizers();
    return check_summary("test_fuzz_regressions");
}
