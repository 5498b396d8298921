/* test_demo_task.c - the demo's task family, rule-based simulator and judge (examples/demo_task.h):
   determinism from the seed, the simulator's behaviours, the conversation-only judge's rubric on
   hand-written and simulated conversations, a check that its score does not move when the task's
   under-specified label is flipped or removed (it never receives the label), and the base model's
   SFT mixture rates. */
/* no-fast-path: the demo's rule-based task, no model kernel (make test runs it in its first pass only) */
#include "../collabllm.h"
#include "../examples/demo_task.h"
#include "../examples/demo_bpe.h"
#include "check.h"

/* One conversation: an opening and then alternating assistant / user messages (NULL-terminated). */
static void conv_of(cllm_conv *c, const char *const *msgs) {
    cllm_err err;
    int i;
    memset(c, 0, sizeof *c);
    for (i = 0; msgs[i]; i++) cllm_conv_push(c, i % 2 == 0 ? "user" : "assistant", msgs[i], &err);
}

/* Scores a session through the metric three times: with its task's label as it is, flipped, and
   with no task or goal at all. The judge must give the same score each time. */
static double judge_blind(const cllm_conv *c, cllm_task *t, int *same) {
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_metadata");
    int was = demo_underspecified(t);
    cllm_session s;
    cllm_goal g;
    cllm_err err;
    double a, b, none;
    memset(&g, 0, sizeof g);
    g.prompt = t->prompt;
    s.goal = &g;
    s.task = t;
    s.conv = c;
    s.n_history = 1;
    demo_metric_judge(NULL, &s, 1, &a, &err);
    cJSON_ReplaceItemInObjectCaseSensitive(meta, "underspecified", cJSON_CreateBool(!was));
    demo_metric_judge(NULL, &s, 1, &b, &err);
    cJSON_ReplaceItemInObjectCaseSensitive(meta, "underspecified", cJSON_CreateBool(was));
    s.goal = NULL;
    s.task = NULL;
    demo_metric_judge(NULL, &s, 1, &none, &err);
    *same = a == b && a == none && demo_underspecified(t) == was;
    return a;
}

/* The judge's rubric: good questions and accepted answers 3, a needless question or a corrected
   answer 1, nothing to go on (no reply yet, as at w = 0) 2; the metric gives score / 3. */
static void check_judge(cllm_task *tasks, const cllm_user_sim *sim) {
    const cllm_task *under = &tasks[0], *full = &tasks[1];
    const demo_family *fu = demo_family_of(under), *ff = demo_family_of(full);
    const char *vu = demo_meta_str(under, "value"), *vf = demo_meta_str(full, "value");
    const char *wrong = strcmp(vu, fu->values[0]) ? fu->values[0] : fu->values[1];
    char reveal[160], restate[160], guess[160], correction[200], answer_f[160];
    int i, same, all_same = 1, all_asked = 1;
    cllm_conv c;
    snprintf(reveal, sizeof reveal, fu->reveal, vu);
    snprintf(restate, sizeof restate, ff->restate, vf);
    snprintf(guess, sizeof guess, fu->answer, wrong);
    snprintf(correction, sizeof correction, "no , %s %s", reveal, CLLM_TERMINATION_SIGNAL);
    snprintf(answer_f, sizeof answer_f, ff->answer, vf);
    struct { const char *name; cllm_task *task; int expect; const char *msgs[8]; } cases[] = {
        { "a question answered with the detail, then the answer accepted: 3", &tasks[0], 3,
          { fu->vague, fu->question, reveal, under->completion, CLLM_TERMINATION_SIGNAL } },
        { "a question answered by a restatement (needless): 1", &tasks[1], 1,
          { full->prompt, ff->question, restate, answer_f, CLLM_TERMINATION_SIGNAL } },
        { "a guess the user corrects: 1", &tasks[0], 1, { fu->vague, guess, correction } },
        { "a direct answer accepted: 3", &tasks[1], 3, { full->prompt, answer_f, CLLM_TERMINATION_SIGNAL } },
        { "a question with no reply yet (w = 0): 2", &tasks[0], 2, { fu->vague, fu->question } },
        { "an answer with no reply yet (w = 0), even a guess: 2", &tasks[0], 2, { fu->vague, guess } },
    };
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        cllm_session s;
        double score, asked;
        conv_of(&c, cases[i].msgs);
        score = judge_blind(&c, cases[i].task, &same);
        check_true(cases[i].name,
                   demo_judge(&c, 1) == (demo_judge_score)cases[i].expect && score == cases[i].expect / 3.0);
        all_same &= same;
        memset(&s, 0, sizeof s);
        s.conv = &c;
        s.n_history = 1;
        demo_metric_asked(NULL, &s, 1, &asked, NULL);
        all_asked &= asked == (demo_is_question(cases[i].msgs[1]) ? 1.0 : 0.0) && asked == (i == 0 || i == 1 || i == 4);
        cllm_conv_free(&c);
    }
    check_true("the judge scores the same with the label set, cleared, or no task at all", all_same);
    check_true("asked: the first reply is a question (cases 1, 2 and 5)", all_asked);
    {   /* a second question after the detail was given is needless too, whatever came before */
        const char *msgs[] = { fu->vague, fu->question, reveal, fu->question, "i already told you , x .", NULL };
        conv_of(&c, msgs);
        check_true("a second question, answered by a restatement: 1", demo_judge(&c, 1) == DEMO_JUDGE_LOW);
        check_true("the context before n_history is not judged", demo_judge(&c, 3) == DEMO_JUDGE_LOW &&
                                                                  demo_judge(&c, 5) == DEMO_JUDGE_MODERATE);
        cllm_conv_free(&c);
    }
    {   /* conversations the simulator plays: ask / answer on each kind of task, judged blind */
        static const int expect[2][2] = { { 3, 1 }, { 1, 3 } };  /* [asks][under-specified?] -> low/high */
        cllm_goal g;
        int asks, k;
        memset(&g, 0, sizeof g);
        for (k = 0; k < 2; k++) for (asks = 0; asks < 2; asks++) {
            const cllm_task *t = &tasks[k];
            const demo_family *f = demo_family_of(t);
            cllm_reply r;
            char text[160];
            g.prompt = t->prompt;
            memset(&c, 0, sizeof c);
            memset(&r, 0, sizeof r);
            sim->turn(sim->ctx, &g, &c, &r);
            cllm_conv_push(&c, "user", r.text, NULL);
            cllm_reply_free(&r);
            if (asks) {
                cllm_conv_push(&c, "assistant", f->question, NULL);
                sim->turn(sim->ctx, &g, &c, &r);
                cllm_conv_push(&c, "user", r.text, NULL);
            cllm_reply_free(&r);
                cllm_conv_push(&c, "assistant", t->completion, NULL);
            } else {
                snprintf(text, sizeof text, f->answer, k == 0 ? wrong : vf);  /* the vague request: a wrong guess */
                cllm_conv_push(&c, "assistant", text, NULL);
            }
            sim->turn(sim->ctx, &g, &c, &r);
            cllm_conv_push(&c, "user", r.text, NULL);
            cllm_reply_free(&r);
            judge_blind(&c, &tasks[k], &same);
            check_true("simulated conversations: asking is judged high exactly when the detail was missing",
                       demo_judge(&c, 1) == (demo_judge_score)(asks ? expect[0][k] : expect[1][k]) && same);
            cllm_conv_free(&c);
        }
    }
}

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

    check_true("write 200 tasks", demo_write_tasks("build/tmp_demo_tasks.jsonl", 7, 200, &err) == CLLM_OK);
    demo_write_tasks("build/tmp_demo_tasks2.jsonl", 7, 200, &err);
    cllm_read_file("build/tmp_demo_tasks.jsonl", &a, &la, &err);
    cllm_read_file("build/tmp_demo_tasks2.jsonl", &b, &lb, &err);
    check_true("the same seed gives the same tasks", la == lb && memcmp(a, b, la) == 0);
    cllm_free_buffer(a);
    cllm_free_buffer(b);
    check_true("tasks parse in the data_fmt task format",
               cllm_tasks_read_jsonl("build/tmp_demo_tasks.jsonl", &tasks, &n, &err) == CLLM_OK && n == 200);
    if (n != 200) return check_summary("test_demo_task");    /* nothing below can run without them */
    ctx.tasks = tasks;
    ctx.n_tasks = n;
    sim.ctx = &ctx;

    /* task 0 is under-specified, task 1 fully specified */
    memset(&g, 0, sizeof g);
    g.prompt = tasks[0].prompt;
    memset(&r, 0, sizeof r);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("an under-specified task opens with the vague request",
               demo_underspecified(&tasks[0]) && strcmp(r.text, demo_meta_str(&tasks[0], "opening")) == 0 &&
               !strstr(r.text, demo_meta_str(&tasks[0], "value")));
    cllm_conv_push(&c, "user", r.text, &err);
    cllm_reply_free(&r);
    cllm_conv_push(&c, "assistant", demo_family_of(&tasks[0])->question, &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("a question gets the hidden detail",
               strstr(r.text, demo_meta_str(&tasks[0], "value")) && !strstr(r.text, "already") && !r.terminated);
    cllm_conv_push(&c, "user", r.text, &err);
    cllm_reply_free(&r);
    cllm_conv_push(&c, "assistant", "what else ?", &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("a second question gets a restatement", strstr(r.text, "already") != NULL);
    cllm_reply_free(&r);
    cllm_conv_push(&c, "user", "x", &err);
    cllm_conv_push(&c, "assistant", "here is something .", &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("a wrong answer is corrected, and ends the conversation",
               r.terminated && strncmp(r.text, "no , ", 5) == 0 && strstr(r.text, demo_meta_str(&tasks[0], "value")) &&
               strstr(r.text, CLLM_TERMINATION_SIGNAL));
    cllm_reply_free(&r);
    cllm_conv_push(&c, "user", "x", &err);
    cllm_conv_push(&c, "assistant", tasks[0].completion, &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("the right answer is accepted: the termination signal alone",
               r.terminated && strcmp(r.text, CLLM_TERMINATION_SIGNAL) == 0);
    cllm_reply_free(&r);
    cllm_conv_free(&c);
    g.prompt = tasks[1].prompt;
    cllm_conv_push(&c, "user", tasks[1].prompt, &err);
    cllm_conv_push(&c, "assistant", demo_family_of(&tasks[1])->question, &err);
    sim.turn(sim.ctx, &g, &c, &r);
    check_true("a needless question on a full request gets a restatement",
               !demo_underspecified(&tasks[1]) && strstr(r.text, "already") != NULL);
    cllm_reply_free(&r);
    cllm_conv_free(&c);

    check_judge(tasks, &sim);
    /* the SFT mixture asks with p_ask and guesses about 1/7 right */
    cllm_rng_seed(&rng, 3);
    for (i = 0; i < n; i++) {
        cJSON *row = demo_sft_row(&rng, &tasks[i], 0.3), *msgs = cJSON_GetObjectItem(row, "messages");
        const char *first = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "content")->valuestring;
        const char *last =
            cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1), "content")->valuestring;
        if (demo_is_question(first)) {
            if (demo_underspecified(&tasks[i])) asked_under++;
            else asked_full++;
        } else if (demo_underspecified(&tasks[i])) {
            guesses++;
            right_guess += strcmp(last, tasks[i].completion) == 0;
        }
        if (demo_is_question(first) && strcmp(last, tasks[i].completion) != 0) {
            check_true("after a question the SFT answer is right", 0);
        }
        cJSON_Delete(row);
    }
    printf("  SFT mixture: asked %d/100 under-specified, %d/100 fully specified; %d of %d guesses right\n",
           asked_under, asked_full, right_guess, guesses);
    check_true("about 30% ask on both kinds (binomial, 4 sigma)",
               abs(asked_under - 30) < 19 && abs(asked_full - 30) < 19);
    check_true("guesses are right about 1/7 of the time (under 30%)", guesses > 0 && right_guess * 100 < 30 * guesses);

    {   /* the demo's tokenizer: trained on the family's text, loaded by the real tokenizer code */
        const char **texts = (const char **)calloc((size_t)n * 4, sizeof(char *));
        int nt = 0, vocab, *ids = NULL, n_ids = 0, words = 0;
        cllm_tokenizer tok;
        const char *probe = "i need a train ticket to rome .";
        char *back = NULL;
        size_t back_len = 0;
        for (i = 0; i < n; i++) {
            texts[nt++] = tasks[i].prompt;
            texts[nt++] = tasks[i].completion;
            texts[nt++] = demo_meta_str(&tasks[i], "opening");
        }
        check_mkdir("build/tmp_demo_tok");
        vocab = demo_bpe_train(texts, nt, 400, "build/tmp_demo_tok", &err);
        check_true("BPE training writes a tokenizer", vocab > 259);
        check_true("the tokenizer loads with its ChatML template",
                   cllm_tokenizer_load(&tok, "build/tmp_demo_tok", &err) == CLLM_OK &&
                   tok.chat_family == CLLM_CHAT_CHATML);
        cllm_tokenizer_encode(&tok, probe, strlen(probe), 0, &ids, &n_ids, NULL, &err);
        for (i = 0; probe[i]; i++) words += probe[i] == ' ';
        printf("  vocabulary %d; \"%s\" -> %d tokens\n", vocab, probe, n_ids);
        check_true("frequent words are single tokens", n_ids == words + 1);
        cllm_tokenizer_decode(&tok, ids, n_ids, 0, &back, &back_len, &err);
        check_true("decode(encode(x)) == x", back && strcmp(back, probe) == 0);
        cllm_free_buffer(back);
        cllm_free_buffer(ids);
        cllm_tokenizer_free(&tok);
        free(texts);
    }
    cllm_tasks_free(tasks, n);
    return check_summary("test_demo_task");
}
