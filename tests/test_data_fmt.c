/* test_data_fmt.c - every example file in data_fmt/ parses with the reader that consumes it and
   round-trips through JSON unchanged: task, conversation, records, SFT rows, DPO pairs, eval. */
/* no-fast-path: file formats, no model kernel (make test runs it in its first pass only) */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>

/* Each line parses, and printing then re-parsing gives an equal value. Returns the lines. */
static int round_trip(const char *path, const char *required[], int n_required) {
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    long len;
    int lines = 0, ok = 1, k;
    if (!f) return -1;
    while ((len = cllm_read_line(f, &line, &cap)) >= 0) {
        cJSON *a, *b;
        char *text;
        if (!len) continue;
        a = cJSON_ParseWithLength(line, (size_t)len);
        text = a ? cJSON_PrintUnformatted(a) : NULL;
        b = text ? cJSON_Parse(text) : NULL;
        ok &= a && b && cJSON_Compare(a, b, 1);
        for (k = 0; k < n_required; k++) ok &= cJSON_GetObjectItemCaseSensitive(a, required[k]) != NULL;
        cJSON_free(text); cJSON_Delete(a); cJSON_Delete(b);
        lines++;
    }
    fclose(f);
    free(line);
    return ok ? lines : -1;
}

int main(void) {
    static const char *rec[] = { "prompt", "completion", "conv_id", "turn_id", "score", "rewards", "sessions", "task_rows" };
    static const char *sft[] = { "messages" };
    static const char *dpo[] = { "prompt", "chosen", "rejected", "score_chosen", "score_rejected" };
    static const char *ev[] = { "conv_id", "messages", "terminated", "metrics", "assistant_tokens", "user_turns" };
    static const char *task[] = { "single_turn_prompt" };
    static const char *mr[] = { "single_turn_prompt", "history", "candidates" };
    cllm_task *tasks = NULL;
    int n = 0, n_sft = 0, n_pairs = 0;
    cllm_err err;
    check_true("records.example.jsonl: fields, JSON round trip", round_trip("data_fmt/records.example.jsonl", rec, 8) > 0);
    check_true("records.example.jsonl: read by build-pairs", cllm_build_pairs("data_fmt/records.example.jsonl", NULL, "build/tmp_fmt_sft.jsonl", "build/tmp_fmt_dpo.jsonl", &n_sft, &n_pairs, &err) == CLLM_OK && n_sft == 1);
    check_true("sft.example.jsonl: fields, JSON round trip", round_trip("data_fmt/sft.example.jsonl", sft, 1) > 0);
    check_true("dpo.example.jsonl: fields, JSON round trip", round_trip("data_fmt/dpo.example.jsonl", dpo, 5) > 0);
    check_true("eval.example.jsonl: fields, JSON round trip", round_trip("data_fmt/eval.example.jsonl", ev, 6) > 0);
    check_true("task.example.jsonl: fields, JSON round trip", round_trip("data_fmt/task.example.jsonl", task, 1) > 0);
    check_true("mr.example.jsonl: fields, JSON round trip", round_trip("data_fmt/mr.example.jsonl", mr, 3) > 0);
    check_true("task.example.jsonl: read by the task reader", cllm_tasks_read_jsonl("data_fmt/task.example.jsonl", &tasks, &n, &err) == CLLM_OK && n > 0);
    cllm_tasks_free(tasks, n);
    return check_summary("test_data_fmt");
}
