/* test_datagen.c - CollabLLM data generation on scripted simulators: the records and their
   MR scores (hand-computed), resuming after a failure and after a torn write (same data as an
   uninterrupted run, no duplicates), shards that concatenate, SFT rows / DPO pairs, and the
   evaluation loop. */
/* no-fast-path: data generation on scripted simulators, no model kernel (make test runs it in its first pass only) */
#include "../collabllm.h"
#include "check.h"
#include <string.h>

static int fail_on_prompt_calls = -1;   /* the user simulator fails on this (0-based) opening call */
static int opening_calls = 0;
static cllm_result user_turn(void *ctx, const cllm_goal *goal, const cllm_conv *h, cllm_reply *out) {
    (void)ctx;
    if (h->n == 0) {
        if (opening_calls++ == fail_on_prompt_calls) {
            out->code = out->err.code = CLLM_ERR_HTTP;
            snprintf(out->err.msg, sizeof out->err.msg, "simulated outage");
            return out->code;
        }
        return cllm_reply_set(out, strstr(goal->prompt, "tea") ? "i want a tea" : "i want a coffee", 0);
    }
    if (strchr(h->msgs[h->n - 1].content, '?')) return cllm_reply_set(out, "large please", 0);
    return cllm_reply_set(out, "[[TERMINATE CHAT]]", 1);
}
/* asks or guesses, alternating with the number of identical histories seen in a batch */
static cllm_result asst_reply(void *ctx, const cllm_conv *h, cllm_reply *out) {
    const char *drink = strstr(h->msgs[0].content, "tea") ? "tea" : "coffee";
    char text[64];
    int i, large = 0;
    (void)ctx;
    for (i = 0; i < h->n; i++) large |= strstr(h->msgs[i].content, "large please") != NULL;
    if (large) snprintf(text, sizeof text, "one large %s", drink);
    else snprintf(text, sizeof text, "what size ?");
    return cllm_reply_set(out, text, 0);
}
static cllm_result asst_batch(void *ctx, const cllm_conv *h, int n, cllm_reply *out) {
    int i;
    for (i = 0; i < n; i++) {
        asst_reply(ctx, &h[i], &out[i]);
        if (i % 2 == 1 && strcmp(out[i].text, "what size ?") == 0) {   /* the second candidate guesses */
            cllm_reply_free(&out[i]);
            cllm_reply_set(&out[i], strstr(h[i].msgs[0].content, "tea") ? "one small tea" : "one small coffee", 0);
        }
    }
    return CLLM_OK;
}

static cllm_task tasks[3];
static cllm_metric metrics[1];
static void setup(cllm_datagen_config *cfg) {
    static const char *lines[3] = {
        "{\"single_turn_prompt\": \"order a large coffee\", \"single_turn_completion\": \"one large coffee\", \"single_turn_metadata\": {\"k\": 1}}",
        "{\"single_turn_prompt\": \"order a large tea\", \"single_turn_completion\": \"one large tea\"}",
        "{\"single_turn_prompt\": \"order a large coffee please\", \"single_turn_completion\": \"one large coffee\"}" };
    int i;
    cllm_err err;
    for (i = 0; i < 3; i++) {
        tasks[i].json = cJSON_Parse(lines[i]);
        tasks[i].prompt = cJSON_GetObjectItem(tasks[i].json, "single_turn_prompt")->valuestring;
        tasks[i].completion = cJSON_GetObjectItem(tasks[i].json, "single_turn_completion")->valuestring;
    }
    memset(metrics, 0, sizeof metrics);
    cllm_metric_builtin("exact_match", &metrics[0], &err); metrics[0].weight = 1;
    memset(cfg, 0, sizeof *cfg);
    cllm_mr_config_init(&cfg->mr, CLLM_MR_PRESET_MATH);
    cfg->mr.metrics = metrics; cfg->mr.n_metrics = 1; cfg->mr.samples = 2;
    cfg->n_candidates = 2; cfg->task_desc = "ordering";
}

/* the lines of a file, sorted, as one string (run order may differ after a resume) */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static char *sorted_lines(const char *path, int *n) {
    char *text, *p, **lines = NULL, *out;
    size_t len, total = 0;
    int i, k = 0;
    cllm_err err;
    *n = 0;
    if (cllm_read_file(path, &text, &len, &err) != CLLM_OK) return NULL;
    for (p = strtok(text, "\n"); p; p = strtok(NULL, "\n")) { lines = (char **)realloc(lines, sizeof(char *) * (size_t)(k + 1)); lines[k++] = p; total += strlen(p) + 1; }
    qsort(lines, (size_t)k, sizeof(char *), cmp_str);
    out = (char *)calloc(total + 1, 1);
    for (i = 0; i < k; i++) { strcat(out, lines[i]); strcat(out, "\n"); }
    free(lines); cllm_free_buffer(text);
    *n = k;
    return out;
}

static void test_generate(void) {
    cllm_datagen_config cfg;
    cllm_user_sim user = { user_turn, NULL, NULL };
    cllm_assistant asst = { asst_reply, asst_batch, NULL };
    cllm_err err;
    char *full, *resumed, *s0;
    int n_full, n_res, n0, n_sft, n_pairs;
    FILE *f;
    setup(&cfg);
    printf("generate-data\n");
    remove("build/tmp_records_full.jsonl");
    check_true("an uninterrupted run succeeds", cllm_datagen_run(&cfg, &user, &asst, &asst, tasks, 3, "build/tmp_records_full.jsonl", &err) == CLLM_OK);
    full = sorted_lines("build/tmp_records_full.jsonl", &n_full);
    check_true("4 records per task (2 turns x 2 candidates)", n_full == 12);
    {   /* hand values: asking scores 1 - 5e-4 * 10 = 0.995; guessing 0 - 5e-4 * 5; answering 1 - 5e-4 * 5 */
        FILE *g = fopen("build/tmp_records_full.jsonl", "rb");
        char line[65536];
        int rows = 0, ok = 1;
        while (fgets(line, sizeof line, g)) {
            cJSON *o = cJSON_Parse(line);
            const char *c = cJSON_GetObjectItem(o, "completion")->valuestring;
            double sc = cJSON_GetObjectItem(o, "score")->valuedouble, want = strchr(c, '?') ? 0.995 : strstr(c, "small") ? -0.0025 : 0.9975;
            int turn = cJSON_GetObjectItem(o, "turn_id")->valueint;
            ok &= fabs(sc - want) < 1e-12 && (turn == 1 || turn == 3) && cJSON_GetObjectItem(o, "task_rows")->valueint == 4;
            ok &= cJSON_GetArraySize(cJSON_GetObjectItem(o, "sessions")) == 2 && cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "rewards"), "MR")) == 2;
            ok &= cJSON_GetArraySize(cJSON_GetObjectItem(o, "prompt")) == turn && cJSON_GetObjectItem(o, "single_turn_prompt") != NULL;
            rows++;
            cJSON_Delete(o);
        }
        fclose(g);
        check_true("every record has the hand-computed score, turn_id, sessions, rewards, task fields", ok && rows == 12);
    }

    printf("resume after a simulator outage\n");
    remove("build/tmp_records_res.jsonl");
    opening_calls = 0; fail_on_prompt_calls = 1;
    check_true("a failing task makes the run report an error", cllm_datagen_run(&cfg, &user, &asst, &asst, tasks, 3, "build/tmp_records_res.jsonl", &err) != CLLM_OK);
    printf("         -> %s\n", err.msg);
    fail_on_prompt_calls = -1;
    /* a torn write of the failed task: two lines of it, the last one cut short */
    f = fopen("build/tmp_records_res.jsonl", "ab");
    fputs("{\"conv_id\": 1, \"task_rows\": 4, \"turn_id\": 1, \"prompt\": [], \"completion\": \"x\", \"score\": 0}\n{\"conv_id\": 1, \"task_", f);
    fclose(f);
    check_true("the rerun succeeds", cllm_datagen_run(&cfg, &user, &asst, &asst, tasks, 3, "build/tmp_records_res.jsonl", &err) == CLLM_OK);
    resumed = sorted_lines("build/tmp_records_res.jsonl", &n_res);
    check_true("resumed data equals the uninterrupted run (no duplicates, no losses)", resumed && full && n_res == n_full && strcmp(resumed, full) == 0);
    check_true("a third run has nothing left to do and changes nothing",
               cllm_datagen_run(&cfg, &user, &asst, &asst, tasks, 3, "build/tmp_records_res.jsonl", &err) == CLLM_OK);
    free(resumed);
    resumed = sorted_lines("build/tmp_records_res.jsonl", &n_res);
    check_true("... same lines", strcmp(resumed, full) == 0);

    printf("shards\n");
    remove("build/tmp_records_s0.jsonl");
    cfg.n_shards = 2; cfg.shard = 0;
    cllm_datagen_run(&cfg, &user, &asst, &asst, tasks, 3, "build/tmp_records_s0.jsonl", &err);
    cfg.shard = 1;
    cllm_datagen_run(&cfg, &user, &asst, &asst, tasks, 3, "build/tmp_records_s0.jsonl", &err);
    s0 = sorted_lines("build/tmp_records_s0.jsonl", &n0);
    check_true("shard 0/2 + shard 1/2 concatenate to the full data", s0 && strcmp(s0, full) == 0);
    cfg.shard = 2;
    check_true("shard 2/2 is an argument error", cllm_datagen_run(&cfg, &user, &asst, &asst, tasks, 3, "build/tmp_records_s0.jsonl", &err) == CLLM_ERR_ARG);

    printf("build-pairs\n");
    check_true("builds", cllm_build_pairs("build/tmp_records_full.jsonl", NULL, "build/tmp_sft.jsonl", "build/tmp_dpo.jsonl", &n_sft, &n_pairs, &err) == CLLM_OK);
    check_true("one SFT row per conversation, one DPO pair per task (turn 3 ties: gap 0 < 0.02)", n_sft == 3 && n_pairs == 3);
    {
        FILE *g = fopen("build/tmp_dpo.jsonl", "rb");
        char line[65536];
        cJSON *o;
        int ok = 1;
        while (fgets(line, sizeof line, g)) {
            o = cJSON_Parse(line);
            ok &= strcmp(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "chosen"), 0)->child->next->valuestring, "what size ?") == 0;
            ok &= strstr(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "rejected"), 0), "content")->valuestring, "small") != NULL;
            ok &= strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "chosen"), 0), "role")->valuestring, "assistant") == 0;
            ok &= cJSON_GetArraySize(cJSON_GetObjectItem(o, "prompt")) == 1 && fabs(cJSON_GetObjectItem(o, "score_chosen")->valuedouble - 0.995) < 1e-12;
            cJSON_Delete(o);
        }
        fclose(g);
        check_true("pairs: chosen = the question, rejected = the guess, TRL conversational form", ok);
        g = fopen("build/tmp_sft.jsonl", "rb");
        ok = 1;
        while (fgets(line, sizeof line, g)) {
            o = cJSON_Parse(line);
            ok &= cJSON_GetArraySize(cJSON_GetObjectItem(o, "messages")) == 4;
            ok &= strstr(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "messages"), 3), "content")->valuestring, "one large") != NULL;
            cJSON_Delete(o);
        }
        fclose(g);
        check_true("SFT rows: the whole best conversation, ending with the answer", ok);
    }
    {
        cllm_pairs_config pc = { 2.0, "be brief", CLLM_GAP_DEFAULT, CLLM_PAIRS_RULES_V2, CLLM_PAIRS_TRL };
        cllm_build_pairs("build/tmp_records_full.jsonl", &pc, NULL, "build/tmp_dpo2.jsonl", &n_sft, &n_pairs, &err);
        check_true("min_gap 2.0 keeps no pair", n_pairs == 0);
    }
    free(full); free(resumed); free(s0);
}

static void test_eval(void) {
    cllm_eval_config cfg;
    cllm_eval_summary sum;
    cllm_user_sim user = { user_turn, NULL, NULL };
    cllm_assistant asst = { asst_reply, NULL, NULL };
    cllm_err err;
    double want_tok;
    printf("eval\n");
    memset(&cfg, 0, sizeof cfg);
    cfg.metrics = metrics; cfg.n_metrics = 1;
    check_true("runs", cllm_eval_run(&cfg, &user, &asst, tasks, 3, "build/tmp_eval.jsonl", &sum, &err) == CLLM_OK);
    /* ask, then answer: 3 + 3 assistant words per conversation; 2 user turns + termination */
    want_tok = 6 / 1000.0;
    check_tensor_d("success = 1 on every task", &sum.metric_means[0], (double[]){ 1.0 }, 1, 0);
    check_tensor_d("assistant tokens per conversation (k)", &sum.tokens_k, &want_tok, 1, 1e-12);
    check_true("3 conversations, none failed", sum.n_tasks == 3 && sum.n_failed == 0);
    cllm_eval_summary_free(&sum);
}

int main(void) {
    int i;
    test_generate();
    test_eval();
    for (i = 0; i < 3; i++) cJSON_Delete(tasks[i].json);
    return check_summary("test_datagen");
}
