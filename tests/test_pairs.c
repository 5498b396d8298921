/* test_pairs.c - SFT rows and DPO pairs by CollabLLM's rules, and CollabLLM's published row formats.
   The expected files in tests/data/pairs/ come from tests/gen_pairs.py, which re-implements the selection of
   CollabLLM v2 (datasets/multiturn.py) and v1 (generate_conv_dpo.py, datasets/__init__.py) on hand-built rows:
   grouping in order of first appearance, v2's stable sort (chosen = first maximum, rejected = last minimum), the
   gap compared in double, v1's tie-break by reward_std, v1's filter and its SFT rows. Also: the published fixtures
   in data_fmt/ read, written back unchanged, and errors that name the line and the field. */
/* no-fast-path: file formats, no model kernel (make test runs it in its first pass only) */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>

#define DIR "tests/data/pairs/"

/* Line by line, `got` holds the JSON values of `want` (numbers within cJSON's relative epsilon), with as many lines.
   With bytes: each line of `want`, parsed and printed by cJSON, is byte for byte the line of `got` (same key order). */
static int same_lines(const char *got, const char *want, int bytes) {
    FILE *f = fopen(got, "rb"), *g = fopen(want, "rb");
    char *la = NULL, *lb = NULL, *text = NULL;
    size_t ca = 0, cb = 0;
    int ok = f && g, lines = 0;
    while (ok) {
        long na = cllm_read_line(f, &la, &ca), nb = cllm_read_line(g, &lb, &cb);
        cJSON *x, *y;
        if (na < 0 || nb < 0) {
            ok = na == nb && lines > 0;
            break;
        }
        x = cJSON_Parse(la);
        y = cJSON_Parse(lb);
        text = y ? cJSON_PrintUnformatted(y) : NULL;
        ok = x && y && (bytes ? text && strcmp(text, la) == 0 : cJSON_Compare(x, y, 1));
        if (!ok) printf("    differs:\n      got  %s\n      want %s\n", la, lb);
        cJSON_free(text);
        cJSON_Delete(x);
        cJSON_Delete(y);
        lines++;
    }
    if (f) fclose(f);
    if (g) fclose(g);
    free(la);
    free(lb);
    return ok;
}
#define same_jsonl(got, want) same_lines(got, want, 0)

static int build(const char *in, double gap, cllm_gap_preset preset, const char *sys, cllm_pair_rules rules,
                 cllm_pairs_format format) {
    cllm_pairs_config pc;
    cllm_err err;
    memset(&pc, 0, sizeof pc);
    pc.min_gap = gap;
    pc.gap_preset = preset;
    pc.system_prompt = sys;
    pc.rules = rules;
    pc.format = format;
    if (cllm_build_pairs(in, &pc, "build/tmp_pairs_sft.jsonl", "build/tmp_pairs_dpo.jsonl", NULL, NULL, &err) == CLLM_OK)
        return 1;
    printf("    %s\n", err.msg);
    return 0;
}

static void test_rules(void) {
    const char *sys = "Be brief.";
    printf("v2's rules on flat rows (tests/gen_pairs.py)\n");
    check_true("gap 0 (negative min_gap): ties kept, first max / last min, groups in order of first appearance",
               build(DIR "flat.jsonl", -1, CLLM_GAP_DEFAULT, NULL, CLLM_PAIRS_RULES_V2, CLLM_PAIRS_COLLABLLM_V2) &&
               same_jsonl("build/tmp_pairs_dpo.jsonl", DIR "a_dpo.jsonl"));
    check_true("  SFT: highest turn_id, then higher score, the first on equal; a null score takes no part",
               same_jsonl("build/tmp_pairs_sft.jsonl", DIR "a_sft.jsonl"));
    check_true("gap preset none = gap 0", build(DIR "flat.jsonl", 0, CLLM_GAP_NONE, NULL, CLLM_PAIRS_RULES_V2,
               CLLM_PAIRS_COLLABLLM_V2) && same_jsonl("build/tmp_pairs_dpo.jsonl", DIR "a_dpo.jsonl"));
    check_true("default gap 0.02 with a system prompt", build(DIR "flat.jsonl", 0, CLLM_GAP_DEFAULT, sys,
               CLLM_PAIRS_RULES_V2, CLLM_PAIRS_COLLABLLM_V2) && same_jsonl("build/tmp_pairs_dpo.jsonl", DIR "b_dpo.jsonl"));
    check_true("  SFT rows with the system prompt first", same_jsonl("build/tmp_pairs_sft.jsonl", DIR "b_sft.jsonl"));
    check_true("preset v1-math 0.05: 0.55 - 0.50 = 0.05000000000000004 is kept",
               build(DIR "flat.jsonl", 0, CLLM_GAP_V1_MATH, NULL, CLLM_PAIRS_RULES_V2, CLLM_PAIRS_COLLABLLM_V2) &&
               same_jsonl("build/tmp_pairs_dpo.jsonl", DIR "c_dpo.jsonl"));
    check_true("explicit min_gap 0.05 = the preset", build(DIR "flat.jsonl", 0.05, CLLM_GAP_DEFAULT, NULL,
               CLLM_PAIRS_RULES_V2, CLLM_PAIRS_COLLABLLM_V2) && same_jsonl("build/tmp_pairs_dpo.jsonl", DIR "c_dpo.jsonl"));

    printf("v1's rules\n");
    check_true("on flat rows, written as v1's rows: first max / first min, a full tie by reward_std",
               build(DIR "flat.jsonl", -1, CLLM_GAP_DEFAULT, NULL, CLLM_PAIRS_RULES_V1, CLLM_PAIRS_COLLABLLM_V1) &&
               same_jsonl("build/tmp_pairs_dpo.jsonl", DIR "d_dpo.jsonl"));
    check_true("  SFT: per conversation (ascending) the pair of longest prompt, the first of equal length",
               same_jsonl("build/tmp_pairs_sft.jsonl", DIR "d_sft.jsonl"));
    check_true("v1's rows in, v1's rows out, gap 0.02 (filter_dpo)", build(DIR "v1_rows.jsonl", 0, CLLM_GAP_V1, sys,
               CLLM_PAIRS_RULES_V2, CLLM_PAIRS_COLLABLLM_V1) && same_jsonl("build/tmp_pairs_dpo.jsonl", DIR "e_dpo.jsonl"));
    check_true("  SFT from v1's rows, with the system prompt", same_jsonl("build/tmp_pairs_sft.jsonl", DIR "e_sft.jsonl"));
    check_true("v1's rows in, v2's rows out, gap 0.05", build(DIR "v1_rows.jsonl", 0, CLLM_GAP_V1_MATH, sys,
               CLLM_PAIRS_RULES_V2, CLLM_PAIRS_COLLABLLM_V2) && same_jsonl("build/tmp_pairs_dpo.jsonl", DIR "f_dpo.jsonl"));
}

/* The default TRL form holds the same selection as v2's rows, as message lists, with conv_id and turn_id. */
static void test_trl_form(void) {
    FILE *f, *g;
    char a[4096], b[4096];
    int ok = 1, n = 0;
    printf("TRL's conversational form\n");
    check_true("builds (gap 0)", build(DIR "flat.jsonl", -1, CLLM_GAP_DEFAULT, NULL, CLLM_PAIRS_RULES_V2, CLLM_PAIRS_TRL));
    f = fopen("build/tmp_pairs_dpo.jsonl", "rb");
    g = fopen(DIR "a_dpo.jsonl", "rb");
    while (f && g && fgets(a, sizeof a, f) && fgets(b, sizeof b, g)) {
        cJSON *x = cJSON_Parse(a), *y = cJSON_Parse(b);
        const char *keys[] = { "chosen", "rejected" };
        int k;
        for (k = 0; k < 2; k++) {
            const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(x, keys[k]), 0);
            ok &= cJSON_GetArraySize(cJSON_GetObjectItem(x, keys[k])) == 1;
            ok &= strcmp(cJSON_GetObjectItem(m, "role")->valuestring, "assistant") == 0;
            ok &= strcmp(cJSON_GetObjectItem(m, "content")->valuestring, cJSON_GetObjectItem(y, keys[k])->valuestring) == 0;
        }
        ok &= cJSON_Compare(cJSON_GetObjectItem(x, "prompt"), cJSON_GetObjectItem(y, "prompt"), 1);
        ok &= cJSON_GetObjectItem(x, "score_chosen")->valuedouble == cJSON_GetObjectItem(y, "score_chosen")->valuedouble;
        ok &= cJSON_IsNumber(cJSON_GetObjectItem(x, "conv_id")) && cJSON_IsNumber(cJSON_GetObjectItem(x, "turn_id"));
        cJSON_Delete(x);
        cJSON_Delete(y);
        n++;
    }
    if (f) fclose(f);
    if (g) fclose(g);
    check_true("  the same 5 pairs, chosen/rejected as one assistant message, conv_id and turn_id", ok && n == 5);
    check_true("CollabLLM's system prompt, in our words", build(DIR "flat.jsonl", 0, CLLM_GAP_DEFAULT,
               cllm_system_prompt_collabllm(), CLLM_PAIRS_RULES_V2, CLLM_PAIRS_TRL));
    f = fopen("build/tmp_pairs_sft.jsonl", "rb");
    ok = f && fgets(a, sizeof a, f) && strstr(a, "{\"role\":\"system\",\"content\":\"You are a helpful assistant") != NULL;
    if (f) fclose(f);
    check_true("  is the first message of every row", ok);
}

static void test_gaps(void) {
    cllm_pairs_config pc;
    memset(&pc, 0, sizeof pc);
    printf("gap presets\n");
    check_true("default", cllm_pairs_min_gap(&pc) == 0.02);
    check_true("no config", cllm_pairs_min_gap(NULL) == 0.02);
    pc.gap_preset = CLLM_GAP_V1_MATH;
    check_true("v1 math (scripts/config.sh)", cllm_pairs_min_gap(&pc) == 0.05);
    pc.gap_preset = CLLM_GAP_V1;
    check_true("v1 medium, bigcodebench", cllm_pairs_min_gap(&pc) == 0.02);
    pc.gap_preset = CLLM_GAP_V2;
    check_true("v2 (offline_dpo.py)", cllm_pairs_min_gap(&pc) == 0.02);
    pc.gap_preset = CLLM_GAP_NONE;
    check_true("none", cllm_pairs_min_gap(&pc) == 0.0);
    pc.min_gap = 0.1;
    check_true("min_gap wins over the preset", cllm_pairs_min_gap(&pc) == 0.1);
    pc.min_gap = -1;
    check_true("negative min_gap = 0", cllm_pairs_min_gap(&pc) == 0.0);
}

static int fails_with(const char *content, const char *want) {
    FILE *f = fopen("build/tmp_pairs_bad.jsonl", "wb");
    cllm_err err;
    int ok;
    fputs(content, f);
    fclose(f);
    err.msg[0] = 0;
    ok = cllm_build_pairs("build/tmp_pairs_bad.jsonl", NULL, NULL, "build/tmp_pairs_bad_out.jsonl", NULL, NULL, &err) ==
         CLLM_ERR_FORMAT && strstr(err.msg, want) != NULL;
    if (!ok) printf("    got: %s\n", err.msg);
    return ok;
}

static void test_errors(void) {
    const char *good = "{\"prompt\":[{\"role\":\"user\",\"content\":\"q\"}],\"completion\":\"a\",\"conv_id\":0,\"score\":1}\n";
    const char *v1 = "{\"idx\":0,\"prompt\":[{\"role\":\"user\",\"content\":\"q\"}],\"chosen\":\"a\",\"rejected\":\"b\","
                     "\"chosen_eval\":{\"reward\":1},\"rejected_eval\":{\"reward\":0}}\n";
    char text[1024];
    printf("errors name the line and the field\n");
    snprintf(text, sizeof text, "%s\n{\"prompt\":[],\"completion\":\"a\",\"score\":1}\n", good);
    check_true("missing conv_id", fails_with(text, "tmp_pairs_bad.jsonl:3: \"conv_id\" is missing, in a flat multiturn row"));
    snprintf(text, sizeof text, "%s{\"prompt\":\"q\",\"completion\":\"a\",\"conv_id\":0,\"score\":1}\n", good);
    check_true("prompt not a list of messages", fails_with(text, ":2: \"prompt\" must be a list of {\"role\", \"content\"}"));
    snprintf(text, sizeof text, "{\"prompt\":[],\"completion\":\"a\",\"conv_id\":0,\"score\":\"high\"}\n");
    check_true("score not a number", fails_with(text, ":1: \"score\" must be a number or null"));
    snprintf(text, sizeof text, "{\"prompt\":[],\"completion\":\"a\",\"conv_id\":0,\"score\":1,\"turn_id\":1.5}\n");
    check_true("turn_id not an integer", fails_with(text, ":1: \"turn_id\" must be a non-negative integer"));
    snprintf(text, sizeof text, "{\"prompt\":[],\"completion\":7,\"conv_id\":0,\"score\":1}\n");
    check_true("completion not a string", fails_with(text, ":1: \"completion\" must be a string"));
    snprintf(text, sizeof text, "{\"idx\":0,\"prompt\":[],\"chosen\":\"a\",\"rejected\":\"b\",\"chosen_eval\":{}}\n");
    check_true("v1 row whose chosen_eval has no reward", fails_with(text, ":1: \"chosen_eval\" must be an object with a number "
                                                          "\"reward\", in a v1 DPO row"));
    snprintf(text, sizeof text, "%s%s", good, v1);
    check_true("one kind of row per file", fails_with(text, ":2: a v1 DPO row (data_fmt/published.md: prompt, chosen, "
                                                      "rejected, idx, chosen_eval, rejected_eval) after a flat"));
    check_true("not JSON", fails_with("{\"prompt\":\n", ":1: not valid JSON"));
    check_true("not an object", fails_with("[1]\n", ":1: not a JSON object"));
    check_true("an empty file", fails_with("\n", "no records"));
}

static void test_published(void) {
    cllm_err err;
    int n = 0, skipped = 0, n_sft = 0, n_pairs = 0;
    cllm_task *tasks = NULL;
    FILE *f;
    char line[8192];
    cJSON *o;
    printf("the published formats (data_fmt/published.md)\n");
    check_true("flat multiturn rows: written back in the published schema",
               cllm_records_to_collabllm("data_fmt/collabllm-multiturn.example.jsonl", "build/tmp_pairs_v2.jsonl", &n,
                                         &skipped, &err) == CLLM_OK && n == 4 && skipped == 0);
    check_true("  identical to the fixture (values and key order)",
               same_lines("build/tmp_pairs_v2.jsonl", "data_fmt/collabllm-multiturn.example.jsonl", 1));
    check_true("  build-pairs reads them (v2's rules): 3 conversations, 1 pair",
               cllm_build_pairs("data_fmt/collabllm-multiturn.example.jsonl", NULL, "build/tmp_pairs_sft.jsonl",
                                "build/tmp_pairs_dpo.jsonl", &n_sft, &n_pairs, &err) == CLLM_OK && n_sft == 3 &&
               n_pairs == 1);
    check_true("our records in the published schema", cllm_records_to_collabllm("data_fmt/records.example.jsonl",
               "build/tmp_pairs_v2.jsonl", &n, &skipped, &err) == CLLM_OK && n == 2);
    f = fopen("build/tmp_pairs_v2.jsonl", "rb");
    o = f && fgets(line, sizeof line, f) ? cJSON_Parse(line) : NULL;
    if (f) fclose(f);
    check_true("  our fields dropped (task_rows, forward_tokens), MR last as in v2's rewards",
               o && !cJSON_GetObjectItem(o, "task_rows") && !cJSON_GetObjectItem(cJSON_GetObjectItem(o, "rewards"),
               "forward_tokens") && !strcmp(cJSON_GetObjectItem(o, "rewards")->child->next->string, "MR"));
    cJSON_Delete(o);
    f = fopen("build/tmp_pairs_rec.jsonl", "wb");
    fputs("{\"prompt\":[{\"role\":\"user\",\"content\":\"q\",\"finish_reason\":\"stop\"}],\"completion\":\"a\","
          "\"conv_id\":3,\"turn_id\":1,\"score\":0.5,\"rewards\":{\"MR\":[0.5],\"bleu\":[0.25],\"pass_rate\":[1],"
          "\"token_amount\":[0.1]},\"single_turn_prompt\":\"p\",\"single_turn_completion\":{\"test\":\"t\"},"
          "\"task_rows\":2}\n{\"prompt\":[],\"completion\":\"b\",\"conv_id\":3,\"turn_id\":1,\"score\":null}\n", f);
    fclose(f);
    check_true("metric names as CollabLLM's; a row without a score is left out",
               cllm_records_to_collabllm("build/tmp_pairs_rec.jsonl", "build/tmp_pairs_v2.jsonl", &n, &skipped, &err) ==
               CLLM_OK && n == 1 && skipped == 1);
    f = fopen("build/tmp_pairs_v2.jsonl", "rb");
    check_true("  exactly the published row", f && fgets(line, sizeof line, f) && !strcmp(line,
               "{\"prompt\":[{\"role\":\"user\",\"content\":\"q\"}],\"completion\":\"a\",\"conv_id\":3,\"score\":0.5,"
               "\"single_turn_prompt\":\"p\",\"single_turn_completion\":\"{\\\"test\\\":\\\"t\\\"}\","
               "\"single_turn_metadata\":{},\"turn_id\":1,\"rewards\":{\"document->bleu\":[0.25],"
               "\"runnable code->pass_rate\":[1],\"token_amount\":[0.1],\"MR\":[0.5]}}\n"));
    if (f) fclose(f);
    check_true("cllm_metric_name_collabllm", !strcmp(cllm_metric_name_collabllm("bleu"), "document->bleu") &&
               !strcmp(cllm_metric_name_collabllm("pass_rate"), "runnable code->pass_rate") &&
               !strcmp(cllm_metric_name_collabllm("accuracy"), "accuracy"));
    check_true("v1's rows are not flat rows", cllm_records_to_collabllm("data_fmt/collabllm-v1-dpo.example.jsonl",
               "build/tmp_pairs_v2.jsonl", &n, &skipped, &err) == CLLM_ERR_FORMAT);
    {
        cllm_pairs_config pc;
        memset(&pc, 0, sizeof pc);
        pc.gap_preset = CLLM_GAP_V1_MATH;
        check_true("v1 DPO rows (fixture): build-pairs keeps both at v1's gap for math, one SFT row",
                   cllm_build_pairs("data_fmt/collabllm-v1-dpo.example.jsonl", &pc, "build/tmp_pairs_sft.jsonl",
                                    "build/tmp_pairs_dpo.jsonl", &n_sft, &n_pairs, &err) == CLLM_OK && n_pairs == 2 &&
                   n_sft == 1);
    }
    {
        cllm_tokenizer tok;
        cllm_dpo_data dd;
        int ok = cllm_tokenizer_load(&tok, "tests/data/tokenizers/qwen2_style", &err) == CLLM_OK;
        ok = ok && cllm_dpo_data_load(&dd, &tok, "data_fmt/collabllm-v1-dpo.example.jsonl", 0, &err) == CLLM_OK;
        check_true("v1 DPO rows load as DPO pairs (collabllm dpo)", ok && dd.n == 2);
        if (ok) cllm_dpo_data_free(&dd);
        cllm_tokenizer_free(&tok);
    }
    {
        static const char *sets[] = { "math-hard", "medium", "bigcodebench", "abg-coqa" };
        static const char *descs[] = { "question answering", "document editing", "code generation", "question answering" };
        int i, ok = 1;
        for (i = 0; i < 4; i++) {
            char path[128];
            snprintf(path, sizeof path, "data_fmt/task-%s.example.jsonl", sets[i]);
            ok &= cllm_tasks_read_jsonl(path, &tasks, &n, &err) == CLLM_OK && n == 1;
            ok &= cJSON_IsObject(cJSON_GetObjectItem(tasks[0].json, "single_turn_metadata"));
            ok &= cJSON_GetArraySize(tasks[0].json) == 3;
            ok &= !strcmp(cllm_task_desc_of_dataset(sets[i]), descs[i]);
            if (i == 2) ok &= strstr(cJSON_GetObjectItem(cJSON_GetObjectItem(tasks[0].json, "single_turn_metadata"),
                                                         "extraction_requirement")->valuestring, "def task_func") != NULL;
            cllm_tasks_free(tasks, n);
        }
        check_true("single-turn task rows of the four datasets read as tasks, task_desc per dataset", ok);
        check_true("  another name has no task_desc", cllm_task_desc_of_dataset("gsm8k") == NULL);
    }
}

int main(void) {
    test_rules();
    test_trl_form();
    test_gaps();
    test_errors();
    test_published();
    return check_summary("test_pairs");
}
