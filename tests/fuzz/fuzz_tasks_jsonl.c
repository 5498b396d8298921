/* fuzz_tasks_jsonl.c - libFuzzer target for CollabLLM task files (cllm_tasks_read_jsonl,
   data_fmt/task.md). Invariants: an accepted file gives one task per non-empty line, each with
   a prompt, a completion string ("" when absent) and the whole line kept as JSON; a refused one
   names the problem and returns nothing. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("tasks", data, size);
    cllm_task *tasks = NULL;
    cllm_err err;
    int n = -1, i;
    if (cllm_tasks_read_jsonl(path, &tasks, &n, &err) == CLLM_OK) {
        FUZZ_CHECK(n >= 1 && n == fuzz_count_lines(path), "one task per non-empty line");
        for (i = 0; i < n; i++) FUZZ_CHECK(tasks[i].prompt && tasks[i].completion && cJSON_IsObject(tasks[i].json), "every task has a prompt, a completion and its JSON");
        cllm_tasks_free(tasks, n);
    } else FUZZ_CHECK(!tasks && n == 0 && err.msg[0], "a refused file names the problem and returns nothing");
    return 0;
}
