/* fuzz_records_jsonl.c - libFuzzer target for the readers of data-generation records
   (data_fmt/records.md): cllm_build_pairs (records -> SFT rows and DPO pairs) and the resume
   scan of cllm_datagen_run (which conversations of a records file are complete; the rest is
   dropped by rewriting the file).
   Invariants: the counts equal the lines written; every pair clears min_gap and has
   score_chosen >= score_rejected; after the resume rewrite the file scans clean and keeps
   exactly the complete conversations. */
#include "fuzz_util.h"

#define N_TASKS 6

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("records", data, size);
    const char *sft = fuzz_file("records_sft", NULL, 0), *dpo = fuzz_file("records_dpo", NULL, 0);
    cllm_pairs_config pc;
    unsigned char done[N_TASKS + 1], again[N_TASKS + 1];
    int n_sft = -1, n_pairs = -1, dirty, i;
    cllm_err err;
    memset(&pc, 0, sizeof pc);
    pc.min_gap = 0.05;
    if (cllm_build_pairs(path, &pc, sft, dpo, &n_sft, &n_pairs, &err) == CLLM_OK) {
        char *text = NULL, *line, *next;
        size_t len;
        FUZZ_CHECK(n_sft == fuzz_count_lines(sft) && n_pairs == fuzz_count_lines(dpo), "counts equal the lines written");
        FUZZ_CHECK(cllm_read_file(dpo, &text, &len, &err) == CLLM_OK, "the pairs file is readable");
        for (line = text; *line; line = next) {
            cJSON *p;
            double c, r;
            next = line + strcspn(line, "\n");
            if (*next) *next++ = 0;
            p = cJSON_Parse(line);
            c = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "score_chosen"));
            r = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "score_rejected"));
            FUZZ_CHECK(p && c - r >= pc.min_gap, "a pair is valid JSON and clears min_gap");
            cJSON_Delete(p);
        }
        CLLM_FREE(text);
    } else FUZZ_CHECK(err.msg[0] && n_sft == 0 && n_pairs == 0, "a refused file names the problem and counts nothing");

    /* resume: scan, rewrite if anything must go, scan again */
    FUZZ_CHECK(cllm__datagen_scan(path, N_TASKS, done, &dirty, &err) == CLLM_OK, "the scan reads any file");
    if (dirty) {
        FUZZ_CHECK(cllm__datagen_compact(path, N_TASKS, done, &err) == CLLM_OK, "the rewrite succeeds");
        FUZZ_CHECK(cllm__datagen_scan(path, N_TASKS, again, &dirty, &err) == CLLM_OK && !dirty, "a rewritten file scans clean");
        for (i = 0; i < N_TASKS; i++) FUZZ_CHECK(again[i] == done[i], "the rewrite keeps exactly the complete conversations");
    }
    return 0;
}
