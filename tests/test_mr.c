/* test_mr.c - the multiturn-aware reward on scripted simulators, against values computed by hand
   for both reward variants; sample failures, w = 0, and the built-in metrics (exact match,
   token_amount, BLEU, pass_rate running real Python unit tests). */
/* no-fast-path: MR on scripted simulators, no model kernel (make test runs it in its first pass only) */
#include "../collabllm.h"
#include "check.h"
#include <string.h>

/* A scripted user: answers a question about the size with "large please", terminates after an
   answer. With ctx != NULL it alternates sizes between calls, to make samples differ. */
static int calls_user = 0;
static cllm_result user_turn(void *ctx, const cllm_goal *goal, const cllm_conv *h, cllm_reply *out) {
    const char *last = h->n ? h->msgs[h->n - 1].content : "";
    (void)goal;
    calls_user++;
    if (strstr(last, "?")) return cllm_reply_set(out, ctx && (calls_user % 2) ? "small please" : "large please", 0);
    return cllm_reply_set(out, "[[TERMINATE CHAT]]", 1);
}
static cllm_result asst_reply(void *ctx, const cllm_conv *h, cllm_reply *out) {
    const char *last = h->msgs[h->n - 1].content;
    (void)ctx;
    return cllm_reply_set(out, strstr(last, "small") ? "one small coffee" : "one large coffee", 0);
}
/* interactivity stand-in: 1 if the candidate asked a question */
static cllm_result asked(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx; (void)err;
    for (i = 0; i < n; i++) scores[i] = strchr(s[i].conv->msgs[s[i].n_history].content, '?') ? 1.0 : 0.0;
    return CLLM_OK;
}
/* fails (NAN) on sessions whose final answer is "one small coffee" */
static cllm_result flaky(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx; (void)err;
    for (i = 0; i < n; i++) scores[i] = strstr(s[i].conv->msgs[s[i].conv->n - 2].content, "small") ? NAN : 0.25;
    return CLLM_OK;
}

static void test_hand_values(void) {
    cllm_user_sim user = { user_turn, NULL, NULL };
    cllm_assistant asst = { asst_reply, NULL, NULL };
    cllm_goal goal = { "ordering", "order a large coffee", NULL };
    cllm_task task;
    cllm_conv hist = { 0 };
    cllm_metric metrics[3];
    cllm_mr_config cfg;
    cllm_mr_item item;
    cllm_mr_result r;
    cllm_err err;
    double want;
    memset(&task, 0, sizeof task);
    task.prompt = (char *)"order a large coffee"; task.completion = (char *)"one large coffee";
    cllm_conv_push(&hist, "user", "i want a coffee", &err);
    memset(metrics, 0, sizeof metrics);
    cllm_metric_builtin("exact_match", &metrics[0], &err); metrics[0].weight = 1;
    metrics[1].name = "interactivity"; metrics[1].fn = asked; metrics[1].weight = 0.5;
    cllm_metric_builtin("token_amount", &metrics[2], &err); metrics[2].weight = -0.5;
    item.goal = &goal; item.task = &task; item.history = &hist; item.candidate = "what size ?";

    printf("paper variant: R* = 1 exact + 0.5 asked - min(5e-4 tokens, 1)\n");
    cllm_mr_config_init(&cfg, CLLM_MR_PRESET_MATH);
    cfg.metrics = metrics; cfg.n_metrics = 2;          /* token_amount is not a term in this variant */
    check_true("scores", cllm_mr_score(&cfg, &user, &asst, &item, 1, &r, &err) == CLLM_OK);
    /* future: user "large please", assistant "one large coffee", user terminates (w = 2 allows 4
       messages; termination stops at 3). Forward tokens: 3 + 2 + 3 + 2 = 10 words
       ("[[TERMINATE CHAT]]" is two). */
    want = 1 + 0.5 - 5e-4 * 10;
    check_tensor_d("MR = 1 + 0.5 - 0.005", &r.mr, &want, 1, 1e-12);
    check_true("3 samples, all succeeded, all terminated after 3 new messages",
               r.n_samples == 3 && r.n_ok == 3 && r.samples[0].terminated && r.samples[0].session.n == 5 && r.samples[2].tokens == 10);
    check_true("the session keeps history, candidate and future in order",
               strcmp(r.samples[1].session.msgs[1].content, "what size ?") == 0 && r.samples[1].n_history == 1 &&
               strcmp(r.samples[1].session.msgs[3].content, "one large coffee") == 0);
    cllm_mr_result_free(&r);

    printf("weighted-sum variant (CollabLLM v2): R* = 1 exact + 0.5 asked - 0.5 token_amount\n");
    cfg.variant = CLLM_MR_WEIGHTED_SUM; cfg.n_metrics = 3;
    cllm_mr_score(&cfg, &user, &asst, &item, 1, &r, &err);
    want = 1 + 0.5 - 0.5 * (3 + 3) / 1000.0;            /* assistant words in the whole session */
    check_tensor_d("MR = 1.5 - 0.5 * 0.006", &r.mr, &want, 1, 1e-12);
    cllm_mr_result_free(&r);

    printf("immediate reward (w = 0)\n");
    cfg.window = 0; cfg.variant = CLLM_MR_PAPER; cfg.n_metrics = 2; cfg.samples = 1;
    calls_user = 0;
    cllm_mr_score(&cfg, NULL, NULL, &item, 1, &r, &err);
    want = 0 + 0.5 - 5e-4 * 3;                          /* a question is not an answer yet */
    check_tensor_d("MR(ask) = 0 + 0.5 - 5e-4 * 3", &r.mr, &want, 1, 1e-12);
    check_true("w = 0 calls no simulator", calls_user == 0 && r.samples[0].session.n == 2);
    cllm_mr_result_free(&r);
    item.candidate = "one large coffee";
    cllm_mr_score(&cfg, NULL, NULL, &item, 1, &r, &err);
    want = 1 + 0 - 5e-4 * 3;
    check_tensor_d("MR(right guess) = 1 - 5e-4 * 3", &r.mr, &want, 1, 1e-12);
    cllm_mr_result_free(&r);

    printf("stochastic futures, failed samples\n");
    {
        cllm_user_sim noisy = { user_turn, NULL, (void *)1 };
        cllm_metric two[2];
        double vals[4], mean = 0, var = 0;
        int k, n_good = 0;
        two[0] = metrics[0];
        two[1].name = "flaky"; two[1].fn = flaky; two[1].weight = 1; two[1].ctx = NULL;
        item.candidate = "what size ?";
        cllm_mr_config_init(&cfg, CLLM_MR_PRESET_DOCUMENT);
        cfg.metrics = two; cfg.n_metrics = 2; cfg.samples = 4;
        calls_user = 0;
        check_true("scores with some failed samples", cllm_mr_score(&cfg, &noisy, &asst, &item, 1, &r, &err) == CLLM_OK);
        for (k = 0; k < 4; k++) {
            cllm_mr_sample *s = &r.samples[k];
            int small = strstr(s->session.msgs[3].content, "small") != NULL;
            if (small) { check_true("a sample with a failed metric is excluded", s->reward != s->reward && s->code != CLLM_OK); continue; }
            vals[n_good++] = 1 + 0.25 - 1e-4 * 10;
        }
        for (k = 0; k < n_good; k++) mean += vals[k] / n_good;
        for (k = 0; k < n_good; k++) var += (vals[k] - mean) * (vals[k] - mean) / n_good;
        check_true("n_ok counts the good samples", r.n_ok == n_good && n_good > 0 && n_good < 4);
        check_tensor_d("MR = mean over the good samples", &r.mr, &mean, 1, 1e-12);
        var = sqrt(var);
        check_tensor_d("std over the good samples", &r.std, &var, 1, 1e-12);
        cllm_mr_result_free(&r);
    }
    cllm_conv_free(&hist);
}

static void test_metrics(void) {
    cllm_match_config num = { "Answer:", 1, 1e-6 };
    cllm_conv c = { 0 };
    cllm_session s;
    cllm_task task;
    cllm_goal goal = { NULL, "p", NULL };
    cllm_err err;
    double score, want;
    const char *ref = "The cat sat on the mat.";
    printf("metrics\n");
    check_true("exact match ignores case and spacing", cllm_answer_matches(NULL, "  One   LARGE coffee \n", "one large coffee"));
    check_true("exact match rejects a different answer", !cllm_answer_matches(NULL, "one small coffee", "one large coffee"));
    check_true("numeric match after the answer prefix", cllm_answer_matches(&num, "so... Answer: 0.5000000001", "0.5"));
    check_true("numeric match rejects 0.51", !cllm_answer_matches(&num, "Answer: 0.51", "0.5"));
    check_true("a missing prefix is no match", !cllm_answer_matches(&num, "0.5", "0.5"));
    memset(&task, 0, sizeof task);
    task.completion = (char *)ref;
    cllm_conv_push(&c, "user", "write it", &err);
    cllm_conv_push(&c, "assistant", "A cat sat on a mat.", &err);
    s.goal = &goal; s.task = &task; s.conv = &c; s.n_history = 1;
    check_true("bleu without an extractor is an error that names the way out (never a silent fallback)",
               cllm_metric_bleu(NULL, &s, 1, &score, &err) == CLLM_ERR_ARG && strstr(err.msg, "no extractor") &&
               strstr(err.msg, "bleu_last") && strstr(err.msg, "--no-extract"));
    cllm_metric_bleu_last(NULL, &s, 1, &score, &err);
    cllm_bleu(1, &ref, "A cat sat on a mat.", CLLM_BLEU_CHAR, 0, &want, &err);
    check_tensor_d("bleu_last = character BLEU of the last assistant message", &score, &want, 1, 0);
    check_true("bleu is in (0, 1)", score > 0 && score < 1);
    cllm_conv_free(&c);
    {   /* token counts with a real tokenizer, against the encoder's own count */
        cllm_tokenizer tok;
        cllm_token_counter tc;
        int *ids = NULL, n = 0;
        const char *text = "Hello there, how many tokens is this?";
        if (check_true("load the committed SmolLM2-style tokenizer", cllm_tokenizer_load(&tok, "tests/data/tokenizers/smollm2", &err) == CLLM_OK)) {
            tc.count = cllm_tokenizer_count; tc.ctx = &tok;
            cllm_tokenizer_encode(&tok, text, strlen(text), 0, &ids, &n, NULL, &err);
            check_true("cllm_tokenizer_count = the encoder's token count, and differs from the word count",
                       cllm_count_tokens(&tc, text) == n && n > 0 && n != cllm_count_tokens(NULL, text));
            cllm_free_buffer(ids);
            cllm_tokenizer_free(&tok);
        }
    }
}

static void test_pass_rate(void) {
    static const char *tests =
        "import unittest\n"
        "class T(unittest.TestCase):\n"
        "    def test_small(self): self.assertEqual(add(1, 2), 3)\n"
        "    def test_neg(self): self.assertEqual(add(-1, -1), -2)\n"
        "    def test_wrong(self): self.assertEqual(add(2, 2), 5)\n";
    cllm_code_config cfg;
    cllm_conv c = { 0 };
    cllm_session s;
    cllm_task task;
    cllm_goal goal = { NULL, "p", NULL };
    cllm_err err;
    double score, want;
    char line[2048];
    int rule;
    printf("pass_rate (runs python3)\n");
    memset(&cfg, 0, sizeof cfg);
    memset(&task, 0, sizeof task);
    snprintf(line, sizeof line, "{\"single_turn_prompt\": \"p\", \"single_turn_metadata\": {\"test\": %s}}", "\"\"");
    task.json = cJSON_Parse(line);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(task.json, "single_turn_metadata"), "test", cJSON_CreateString(tests));
    s.goal = &goal; s.task = &task; s.conv = &c; s.n_history = 1;
    cllm_conv_push(&c, "user", "write add", &err);
    cllm_conv_push(&c, "assistant", "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nEnjoy.", &err);
    check_true("pass_rate without an extractor is an error that names the way out",
               cllm_metric_pass_rate(&cfg, &s, 1, &score, &err) == CLLM_ERR_ARG && strstr(err.msg, "no extractor") &&
               strstr(err.msg, "no_extract"));
    cfg.no_extract = 1;
    cllm_metric_pass_rate(&cfg, &s, 1, &score, &err);
    want = 0;
    check_tensor_d("2 of 3 tests pass: 0 by default, as BigCodeBench's untrusted_check in CollabLLM", &score, &want, 1, 0);
    cfg.pass_rule = CLLM_PASS_FRACTION;
    cllm_metric_pass_rate(&cfg, &s, 1, &score, &err);
    want = 2.0 / 3.0;
    check_tensor_d("2 of 3 tests pass: 2/3 with CLLM_PASS_FRACTION", &score, &want, 1, 1e-12);
    cllm_conv_free(&c);
    cllm_conv_push(&c, "user", "write add", &err);
    cllm_conv_push(&c, "assistant", "```python\ndef add(a, b):\n    return a + b if a + b != 4 else 5\n```", &err);
    for (rule = CLLM_PASS_ALL; rule <= CLLM_PASS_FRACTION; rule++) {
        cfg.pass_rule = (cllm_pass_rule)rule;
        cllm_metric_pass_rate(&cfg, &s, 1, &score, &err);
        want = 1;
        check_tensor_d(rule == CLLM_PASS_ALL ? "every test passes: 1 (all)" : "every test passes: 1 (fraction)",
                       &score, &want, 1, 0);
    }
    cllm_conv_free(&c);
    cllm_conv_push(&c, "user", "write add", &err);
    cllm_conv_push(&c, "assistant", "```python\ndef add(a, b):\n    while True: pass\n```", &err);
    cfg.timeout_s = 1;
    cllm_metric_pass_rate(&cfg, &s, 1, &score, &err);
    want = 0;
    check_tensor_d("an endless loop is stopped by the time limit and passes nothing", &score, &want, 1, 0);
    cllm_conv_free(&c);
    cllm_conv_push(&c, "user", "write add", &err);
    cllm_conv_push(&c, "assistant", "def add(a, b) return", &err);
    cllm_metric_pass_rate(&cfg, &s, 1, &score, &err);
    check_tensor_d("a syntax error passes nothing", &score, &want, 1, 0);
    cllm_conv_free(&c);
    cJSON_Delete(task.json);
}

int main(void) {
    test_hand_values();
    test_metrics();
    test_pass_rate();
    return check_summary("test_mr");
}
