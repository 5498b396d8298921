/* test_client_json.c - the parsing half of the endpoint section, without a network:
   cllm_json_parse_lenient against Python's json / literal parser (tests/gen_lenient_json.py
   wrote tests/data/lenient_json/cases.jsonl), the simulator's reply parser, the judges' score
   readers, conversations to and from JSON, and the task and conversation files in data_fmt/. */
/* no-fast-path: JSON parsing of replies, no model kernel (make test runs it in its first pass only) */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>

static void test_lenient_cases(void) {
    FILE *f = fopen("tests/data/lenient_json/cases.jsonl", "rb");
    char *line = NULL;
    size_t cap = 0;
    int agree = 0, total = 0;
    printf("-- cllm_json_parse_lenient vs Python (json strict=False, then literal eval)\n");
    if (!check_true("open tests/data/lenient_json/cases.jsonl", f != NULL)) return;
    while (cllm_read_line(f, &line, &cap) >= 0) {
        cJSON *c = cJSON_Parse(line), *got;
        const cJSON *expect = cJSON_GetObjectItemCaseSensitive(c, "expect");
        const char *name = cllm__json_str(c, "name"), *input = cllm__json_str(c, "input"), *src = cllm__json_str(c, "source");
        char label[160];
        cllm_err err;
        int ok;
        if (!c || !name || !input) { check_true("a well-formed case line", 0); cJSON_Delete(c); continue; }
        got = cllm_json_parse_lenient(input, &err);
        ok = cJSON_IsNull(expect) ? (got == NULL && err.code == CLLM_ERR_FORMAT) : (got != NULL && cJSON_Compare(got, expect, 1));
        snprintf(label, sizeof label, "%-48s (%s)", name, src);
        if (!check_true(label, ok)) {
            char *g = got ? cJSON_PrintUnformatted(got) : NULL, *e = cJSON_PrintUnformatted(expect);
            printf("       got %s, want %s%s%s\n", g ? g : "NULL", e, got ? "" : "; ", got ? "" : err.msg);
            cJSON_free(g); cJSON_free(e);
        }
        agree += ok; total++;
        cJSON_Delete(got);
        cJSON_Delete(c);
    }
    printf("    %d of %d cases agree with the reference\n", agree, total);
    check_true("the case file has at least 25 cases", total >= 25);
    free(line);
    fclose(f);
}

static void test_sim_parse(void) {
    cllm_reply r;
    printf("-- the user simulator's reply parser\n");
    memset(&r, 0, sizeof r);
    cllm_user_sim_parse("```json\n{\"current_answer\": \"none yet\", \"thought\": \"ask\", \"response\": \"  Can you help me with a proof?  \"}\n```", NULL, &r);
    check_true("fenced reply: response trimmed, thought and current_answer kept, not terminated",
               r.code == CLLM_OK && !strcmp(r.text, "Can you help me with a proof?") && !strcmp(r.thought, "ask") &&
               !strcmp(r.current_answer, "none yet") && !r.terminated);
    cllm_user_sim_parse("{'current_answer': 'done', 'thought': 'happy', 'response': '[[TERMINATE CHAT]]'}", NULL, &r);
    check_true("single-quoted reply with the default signal -> terminated", r.code == CLLM_OK && r.terminated && !strcmp(r.text, "[[TERMINATE CHAT]]"));
    cllm_user_sim_parse("{\"response\": \"Thanks, that is all. <END>\"}", "<END>", &r);
    check_true("a custom signal inside a longer message terminates", r.code == CLLM_OK && r.terminated && r.thought == NULL);
    cllm_user_sim_parse("{\"response\": \"[[TERMINATE CHAT]]\"}", "<END>", &r);
    check_true("with a custom signal, the default one does not terminate", r.code == CLLM_OK && !r.terminated);
    cllm_user_sim_parse("  [[TERMINATE CHAT]]\n", NULL, &r);
    check_true("a bare signal without JSON is accepted as termination", r.code == CLLM_OK && r.terminated);
    {   /* 2-byte characters at an odd offset: the 60-byte quote ends on a character boundary */
        char text[300];
        int k;
        text[0] = 'x';
        for (k = 0; k < 100; k++) memcpy(text + 1 + 2 * k, "\xc3\xa9", 2);
        text[201] = 0;
        cllm_user_sim_parse(text, NULL, &r);
        check_true("an unusable reply is quoted in the message cut on a character boundary (valid UTF-8, no U+FFFD)",
                   r.code == CLLM_ERR_FORMAT && cllm__utf8_check(r.err.msg, strlen(r.err.msg)) == strlen(r.err.msg) &&
                   strstr(r.err.msg, "\xef\xbf\xbd") == NULL && strstr(r.err.msg, "starting \"x\xc3\xa9"));
    }
    cllm_user_sim_parse("I would ask about the proof.", NULL, &r);
    check_true("prose without JSON is a format failure", r.code == CLLM_ERR_FORMAT && r.text == NULL && strstr(r.err.msg, "no JSON object") != NULL);
    cllm_user_sim_parse("{\"thought\": \"hmm\", \"response\": \"   \"}", NULL, &r);
    check_true("an empty response is a format failure", r.code == CLLM_ERR_FORMAT && r.text == NULL && r.thought == NULL);
    cllm_user_sim_parse("{\"thought\": \"hmm\", \"response\": 5}", NULL, &r);
    check_true("a non-string response is a format failure", r.code == CLLM_ERR_FORMAT && strstr(r.err.msg, "\"response\"") != NULL);
    cllm_reply_free(&r);
}

static void test_verdicts(void) {
    static const struct { const char *json; int kind; int ok; double score; } cases[] = {
        { "{\"interactivity\": 0.5}", 0, 1, 0.5 },
        { "{\"interactivity\": \"0.75\"}", 0, 1, 0.75 },
        { "{\"interactivity\": {\"thought\": \"t\", \"score\": 1}}", 0, 1, 1.0 },
        { "{\"interactivity\": 3}", 0, 0, 0 },
        { "{\"interactivity\": -0.1}", 0, 0, 0 },
        { "{\"interactivity\": \"high\"}", 0, 0, 0 },
        { "{\"score\": 0.5}", 0, 0, 0 },
        { "{\"accuracy\": 1}", 1, 1, 1.0 },
        { "{\"accuracy\": 0}", 1, 1, 0.0 },
        { "{\"accuracy\": true}", 1, 1, 1.0 },
        { "{\"accuracy\": \"0\"}", 1, 1, 0.0 },
        { "{\"accuracy\": 0.5}", 1, 0, 0 },
        { "{\"thought\": \"no verdict\"}", 1, 0, 0 },
    };
    size_t i;
    int agree = 0;
    double got[16], want[16];
    int n = 0;
    printf("-- the judges' score readers (numbers, numeric strings, booleans, {\"score\": x}; out of range is a failure)\n");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *o = cJSON_Parse(cases[i].json);
        cllm_judgement j;
        cllm_result rc;
        memset(&j, 0, sizeof j);
        rc = cases[i].kind == 0 ? cllm__verdict_interactivity(o, &j) : cllm__verdict_accuracy(o, &j);
        if ((rc == CLLM_OK) == cases[i].ok) agree++;
        else printf("  FAIL %s -> %s (%s)\n", cases[i].json, cllm_result_string(rc), j.err.msg);
        if (rc == CLLM_OK && cases[i].ok) { got[n] = j.score; want[n] = cases[i].score; n++; }
        cJSON_Delete(o);
    }
    check_true("every verdict accepted or rejected as expected", agree == (int)(sizeof cases / sizeof cases[0]));
    check_tensor_d("scores read from the accepted verdicts", got, want, (size_t)n, 0.0);
    {
        cJSON *o = cJSON_Parse("{\"thought\": \"t\", \"final_answer\": \"def f(): pass\"}"), *e = cJSON_Parse("{\"final_completion\": \"\"}");
        cllm_judgement j;
        memset(&j, 0, sizeof j);
        check_true("extraction accepts CollabLLM v1's \"final_answer\" key", cllm__verdict_extract(o, &j) == CLLM_OK && !strcmp(j.text, "def f(): pass"));
        cllm_judgement_free(&j);
        check_true("an empty extraction is a failure, not an empty artifact", cllm__verdict_extract(e, &j) == CLLM_ERR_FORMAT && j.text == NULL);
        cJSON_Delete(o); cJSON_Delete(e);
    }
}

static void test_conversations(void) {
    cllm_conv a, b, c;
    cllm_err err;
    cJSON *j, *bad;
    char *text;
    printf("-- conversations: push, copy, JSON round trip, prompt rendering\n");
    memset(&a, 0, sizeof a);
    cllm_conv_push(&a, "system", "be kind", &err);
    cllm_conv_push(&a, "user", "hi \"there\"\n", &err);
    cllm_conv_push(&a, "assistant", "hello", &err);
    cllm_conv_copy(&b, &a, &err);
    j = cllm_conv_to_json(&b);
    check_true("from_json(to_json(copy)) is the original", cllm_conv_from_json(&c, j, &err) == CLLM_OK && c.n == 3 &&
               !strcmp(c.msgs[1].content, "hi \"there\"\n") && !strcmp(c.msgs[2].role, "assistant") && b.msgs[1].content != a.msgs[1].content);
    cllm_conv_free(&c);
    text = cllm__conv_text(&a, 1);
    check_true("the simulator's view drops system messages and bolds roles", !strcmp(text, "**User**: hi \"there\"\n\n\n**Assistant**: hello"));
    free(text);
    text = cllm__conv_text(NULL, 0);
    check_true("an empty history renders as a placeholder", !strcmp(text, "(no messages yet)"));
    free(text);
    bad = cJSON_Parse("[{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"tool\", \"content\": \"y\"}]");
    check_true("an unknown role is rejected with its index", cllm_conv_from_json(&c, bad, &err) == CLLM_ERR_FORMAT && strstr(err.msg, "messages[1]") && c.n == 0);
    cJSON_Delete(bad);
    bad = cJSON_Parse("[{\"role\": \"user\"}]");
    check_true("a message without content is rejected", cllm_conv_from_json(&c, bad, &err) == CLLM_ERR_FORMAT && strstr(err.msg, "content"));
    cJSON_Delete(bad);
    {   /* how a generated message ended travels with it */
        cllm_msg_meta cut;
        char *line;
        memset(&cut, 0, sizeof cut);
        strcpy(cut.finish_reason, "length");
        cut.replaced = 3;
        cllm_conv_push_meta(&b, "assistant", "cut o", &cut, &err);
        cJSON_Delete(j);
        j = cllm_conv_to_json(&b);
        line = cJSON_PrintUnformatted(cJSON_GetArrayItem(j, 3));
        check_true("finish_reason and replaced are written for a generated message, nothing for the others",
                   !strcmp(line, "{\"role\":\"assistant\",\"content\":\"cut o\",\"finish_reason\":\"length\","
                                 "\"replaced\":3}") &&
                   !cJSON_GetObjectItem(cJSON_GetArrayItem(j, 2), "finish_reason"));
        cJSON_free(line);
        check_true("from_json reads them back; cllm_msg_incomplete flags \"length\"",
                   cllm_conv_from_json(&c, j, &err) == CLLM_OK &&
                   !strcmp(c.meta[3].finish_reason, "length") && c.meta[3].replaced == 3 &&
                   c.meta[2].finish_reason[0] == 0 &&
                   cllm_msg_incomplete(&c.meta[3]) && !cllm_msg_incomplete(&c.meta[2]));
        cllm_conv_free(&c);
        bad = cJSON_Parse("[{\"role\": \"user\", \"content\": \"x\", \"replaced\": -1}]");
        check_true("a negative \"replaced\" is rejected",
                   cllm_conv_from_json(&c, bad, &err) == CLLM_ERR_FORMAT && strstr(err.msg, "replaced"));
        cJSON_Delete(bad);
    }
    cJSON_Delete(j);
    cllm_conv_free(&a); cllm_conv_free(&b); cllm_conv_free(&c);
}

static void test_files(void) {
    cllm_task *t = NULL;
    cllm_err err;
    int n = 0, lineno = 0, ok = 1;
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    static const char *bad[][2] = {
        { "{\"single_turn_completion\": \"x\"}\n", "\"single_turn_prompt\" must be a string" },
        { "{\"single_turn_prompt\": \"a\"}\nnot json\n", ":2: not valid JSON" },
        { "\n\n", "no tasks" },
    };
    size_t i;
    printf("-- data_fmt/task.example.jsonl and data_fmt/conversation.example.jsonl\n");
    check_true("the task example reads", cllm_tasks_read_jsonl("data_fmt/task.example.jsonl", &t, &n, &err) == CLLM_OK && n == 3);
    if (n == 3) {
        check_true("prompt and string completion", strstr(t[0].prompt, "smallest positive integer") && strstr(t[0].completion, "boxed{3}"));
        check_true("extra fields are kept in the line", !strcmp(cllm__json_str(t[1].json, "split"), "train"));
        check_true("an object completion becomes its JSON text", t[2].completion[0] == '{' && strstr(t[2].completion, "\"entry_point\":\"task_func\""));
    }
    cllm_tasks_free(t, n);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char label[160];
        cllm_write_file_atomic("build/test_client_json_tasks.jsonl", bad[i][0], strlen(bad[i][0]), NULL);
        snprintf(label, sizeof label, "a bad task file fails naming it: %s", bad[i][1]);
        check_true(label, cllm_tasks_read_jsonl("build/test_client_json_tasks.jsonl", &t, &n, &err) == CLLM_ERR_FORMAT && strstr(err.msg, bad[i][1]) && !t && !n);
    }
    remove("build/test_client_json_tasks.jsonl");
    check_true("a missing task file is an i/o error", cllm_tasks_read_jsonl("build/no_such_file.jsonl", &t, &n, &err) == CLLM_ERR_IO);

    f = fopen("data_fmt/conversation.example.jsonl", "rb");
    if (!check_true("open the conversation example", f != NULL)) return;
    while (cllm_read_line(f, &line, &cap) >= 0) {
        cJSON *rec = cJSON_Parse(line);
        const cJSON *sim = cJSON_GetObjectItemCaseSensitive(rec, "simulation");
        cllm_conv c;
        int term = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "terminated"));
        lineno++;
        ok &= cllm_conv_from_json(&c, cJSON_GetObjectItemCaseSensitive(rec, "messages"), &err) == CLLM_OK && c.n > 0;
        ok &= cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(rec, "terminated")) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(rec, "single_turn_prompt"));
        ok &= cllm__json_str(sim, "user_model") && cllm__json_str(sim, "termination") && cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(sim, "max_messages"));
        /* terminated <=> the last user message carries the signal; else the line says why it stopped or ran out */
        if (c.n > 0) ok &= term == (strstr(c.msgs[c.n - 1].content, cllm__json_str(sim, "termination")) != NULL);
        ok &= term || cllm__json_str(rec, "error") || c.n == cJSON_GetObjectItemCaseSensitive(sim, "max_messages")->valueint;
        cllm_conv_free(&c);
        cJSON_Delete(rec);
    }
    check_true("every conversation example line has the documented fields and is consistent", ok && lineno == 2);
    free(line);
    fclose(f);
}

static void test_fill(void) {
    static const char *names[] = { "a", "bb" };
    const char *values[2] = { "1", "{{a}}" };
    char *s = cllm__fill("x{{a}}y{{bb}}z{{c}}{{", names, values, 2);
    printf("-- prompt templates\n");
    check_true("placeholders are filled once (values are not re-expanded), unknown ones kept", !strcmp(s, "x1y{{a}}z{{c}}{{"));
    free(s);
}

int main(void) {
    test_lenient_cases();
    test_sim_parse();
    test_verdicts();
    test_conversations();
    test_files();
    test_fill();
    return check_summary("test_client_json");
}
