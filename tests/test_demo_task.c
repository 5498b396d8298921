/* test_demo_task.c - the demo's task family, rule-based simulator and judge (examples/demo_task.h):
   determinism from the seed, the simulator's three behaviours, the judge's four cases, and the
   base model's SFT mixture rates. */
/* no-fast-path: the demo's rule-based task, no model kernel (make test runs it in its first pass only) */
#include "../collabllm.h"
#include "../examples/demo_task.h"
#include "../examples/demo_bpe.h"
#include "check.h"

int main(void) {
    cllm_task *tasks = NULL;
    int n = 0, i, asked_under = 0, asked_full = 0, right_guess = 0, guesses = 0;
    cllm_err err;
    demo_sim_ctx ctx;
    cllm_user_sim sim = { demo_user_turn, NULL, NULL };
    cllm_goal g;
    cllm_conv c = { 0 };
    cllm_reply r;
    cllm_rng rng;
    char *a, *b;
    size_t la, lb;
    double sc[4];
    cllm_session s[4];
    cllm_conv convs[4];

    check_true("write 200 tasks", demo_write_tasks("build/tmp_demo_tasks.jsonl", 7, 200, &err) == CLLM_OK);
    demo_write_tasks("build/tmp_demo_tasks2.jsonl", 7, 200, &err);
    cllm_read_file("build/tmp_demo_tasks.jsonl", &a, &la, &err);
    cllm_read_file("build/tmp_demo_tasks2.jsonl", &b, &lb, &err);
    check_true("the same seed gives the same tasks", la == lb && memcmp(a, b, la) == 0);
    cllm_free_buffer(a); cllm_free_buffer(b);
    check_true("tasks parse in the data_fmt task format", cllm_tasks_read_jsonl("build/tmp_demo_tasks.jsonl", &tasks, &n, &err) == CLLM_OK && n == 200);
    ctx.tasks = tasks; ctx.n_tasks = n;
    sim.ctx = &ctx;

    /* task 0 is under-specified, task 1 fully specified */
    memset(&g, 0, sizeof g);
    g.prompt = tasks[0].prompt;
    memset(&r, 0, sizeof r);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("an under-specified task opens with the vague request", demo_underspecified(&tasks[0]) && strcmp(r.text, demo_meta_str(&tasks[0], "opening")) == 0 && !strstr(r.text, demo_meta_str(&tasks[0], "value")));
    cllm_conv_push(&c, "user", r.text, &err); cllm_reply_free(&r);
    cllm_conv_push(&c, "assistant", demo_family_of(&tasks[0])->question, &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("a question gets the hidden detail", strstr(r.text, demo_meta_str(&tasks[0], "value")) && !strstr(r.text, "already") && !r.terminated);
    cllm_conv_push(&c, "user", r.text, &err); cllm_reply_free(&r);
    cllm_conv_push(&c, "assistant", "what else ?", &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("a second question gets a restatement", strstr(r.text, "already") != NULL);
    cllm_reply_free(&r);
    cllm_conv_push(&c, "user", "x", &err);
    cllm_conv_push(&c, "assistant", "here is something .", &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("an answer ends the conversation", r.terminated && strcmp(r.text, CLLM_TERMINATION_SIGNAL) == 0);
    cllm_reply_free(&r); cllm_conv_free(&c);
    g.prompt = tasks[1].prompt;
    cllm_conv_push(&c, "user", tasks[1].prompt, &err);
    cllm_conv_push(&c, "assistant", demo_family_of(&tasks[1])->question, &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("a needless question on a full request gets a restatement", !demo_underspecified(&tasks[1]) && strstr(r.text, "already") != NULL);
    cllm_reply_free(&r); cllm_conv_free(&c);

    /* judge: asked/answered x under/full */
    for (i = 0; i < 4; i++) {
        const cllm_task *t = &tasks[i % 2];
        memset(&convs[i], 0, sizeof convs[i]);
        cllm_conv_push(&convs[i], "user", demo_meta_str(t, "opening"), &err);
        cllm_conv_push(&convs[i], "assistant", i < 2 ? demo_family_of(t)->question : t->completion, &err);
        s[i].goal = NULL; s[i].task = t; s[i].conv = &convs[i]; s[i].n_history = 1;
    }
    demo_metric_interactivity(NULL, s, 4, sc, &err);
    check_true("judge: ask when needed 1, needless ask 0, guess 0, direct answer 1", sc[0] == 1 && sc[1] == 0 && sc[2] == 0 && sc[3] == 1);
    demo_metric_asked(NULL, s, 4, sc, &err);
    check_true("asked: 1, 1, 0, 0", sc[0] == 1 && sc[1] == 1 && sc[2] == 0 && sc[3] == 0);
    for (i = 0; i < 4; i++) cllm_conv_free(&convs[i]);

    /* the SFT mixture asks with p_ask and guesses about 1/7 right */
    cllm_rng_seed(&rng, 3);
    for (i = 0; i < n; i++) {
        cJSON *row = demo_sft_row(&rng, &tasks[i], 0.3), *msgs = cJSON_GetObjectItem(row, "messages");
        const char *first = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "content")->valuestring;
        const char *last = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1), "content")->valuestring;
        if (demo_is_question(first)) { if (demo_underspecified(&tasks[i])) asked_under++; else asked_full++; }
        else if (demo_underspecified(&tasks[i])) { guesses++; right_guess += strcmp(last, tasks[i].completion) == 0; }
        if (demo_is_question(first) && strcmp(last, tasks[i].completion) != 0) check_true("after a question the SFT answer is right", 0);
        cJSON_Delete(row);
    }
    printf("  SFT mixture: asked %d/100 under-specified, %d/100 fully specified; %d of %d guesses right\n", asked_under, asked_full, right_guess, guesses);
    check_true("about 30% ask on both kinds (binomial, 4 sigma)", abs(asked_under - 30) < 19 && abs(asked_full - 30) < 19);
    check_true("guesses are right about 1/7 of the time (under 30%)", guesses > 0 && right_guess * 100 < 30 * guesses);

    {   /* the demo's tokenizer: trained on the family's text, loaded by the real tokenizer code */
        const char **texts = (const char **)calloc((size_t)n * 4, sizeof(char *));
        int nt = 0, vocab, *ids = NULL, n_ids = 0, words = 0;
        cllm_tokenizer tok;
        const char *probe = "i need a train ticket to rome .";
        char *back = NULL;
        size_t back_len = 0;
        for (i = 0; i < n; i++) { texts[nt++] = tasks[i].prompt; texts[nt++] = tasks[i].completion; texts[nt++] = demo_meta_str(&tasks[i], "opening"); }
        check_mkdir("build/tmp_demo_tok");
        vocab = demo_bpe_train(texts, nt, 400, "build/tmp_demo_tok", &err);
        check_true("BPE training writes a tokenizer", vocab > 259);
        check_true("the tokenizer loads with its ChatML template", cllm_tokenizer_load(&tok, "build/tmp_demo_tok", &err) == CLLM_OK && tok.chat_family == CLLM_CHAT_CHATML);
        cllm_tokenizer_encode(&tok, probe, strlen(probe), 0, &ids, &n_ids, NULL, &err);
        for (i = 0; probe[i]; i++) words += probe[i] == ' ';
        printf("  vocabulary %d; \"%s\" -> %d tokens\n", vocab, probe, n_ids);
        check_true("frequent words are single tokens", n_ids == words + 1);
        cllm_tokenizer_decode(&tok, ids, n_ids, 0, &back, &back_len, &err);
        check_true("decode(encode(x)) == x", back && strcmp(back, probe) == 0);
        cllm_free_buffer(back); cllm_free_buffer(ids);
        cllm_tokenizer_free(&tok);
        free(texts);
    }
    cllm_tasks_free(tasks, n);
    return check_summary("test_demo_task");
}
