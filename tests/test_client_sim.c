/* test_client_sim.c - user simulators, assistants, judges and `collabllm simulate`, against the
   loopback mock (tests/mock_openai.c) playing the models. The mock's "user simulator" reads the
   simulator prompt it is sent and answers in the lenient JSON shapes real models produce; its
   "assistant" numbers its answers; its "judges" grade from the sections of their prompts. Also
   runs the callback simulator of examples/callback_sim.c (simulator kind (c)). */
/* no-fast-path: simulators and judges on API models, no model kernel (make test runs it in its first pass only) */
#include "mock_openai.c"
#define CALLBACK_SIM_NO_MAIN
#include "../examples/callback_sim.c"
#include "check.h"

#define KEY_ENV "CLLM_TEST_KEY"

/* ---- the mock's models --------------------------------------------------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char *seen_prompts[512];                /* prompts answered before, for "fail once per prompt" */
static int n_seen_prompts;
static char *last_body[8];                     /* last request body per recorded model */
static const char *recorded_models[8] = { "sim-good", "asst", "judge-int", "judge-acc", "judge-ext", "sim-json",
                                          "judge-v1" };

static int first_time(const char *prompt) {
    int i, first = 1;
    pthread_mutex_lock(&mu);
    for (i = 0; i < n_seen_prompts && first; i++) first = strcmp(seen_prompts[i], prompt) != 0;
    if (first && n_seen_prompts < 512) seen_prompts[n_seen_prompts++] = mock_strdup(prompt);
    pthread_mutex_unlock(&mu);
    return first;
}

static void record(const mock_request *q) {
    int i;
    pthread_mutex_lock(&mu);
    for (i = 0; i < 8 && recorded_models[i]; i++)
        if (!strcmp(recorded_models[i], q->model)) { free(last_body[i]); last_body[i] = mock_strdup(q->body); }
    pthread_mutex_unlock(&mu);
}

static cJSON *recorded(const char *model) {
    int i;
    for (i = 0; i < 8 && recorded_models[i]; i++) if (!strcmp(recorded_models[i], model) && last_body[i]) return cJSON_Parse(last_body[i]);
    return NULL;
}

static int count_str(const char *hay, const char *needle) {
    int n = 0;
    while ((hay = strstr(hay, needle)) != NULL) { n++; hay += strlen(needle); }
    return n;
}

/* The text between "=== NAME START ===\n" (any suffix on the line) and "\n=== NAME END", malloc'd. */
static char *section(const char *prompt, const char *name) {
    char open[64], close[64];
    const char *b, *e;
    char *out;
    snprintf(open, sizeof open, "=== %s START", name);
    snprintf(close, sizeof close, "\n=== %s END", name);
    if (!(b = strstr(prompt, open)) || !(b = strchr(b, '\n')) || !(e = strstr(++b, close))) return mock_strdup("");
    out = (char *)malloc((size_t)(e - b) + 1);
    memcpy(out, b, (size_t)(e - b));
    out[e - b] = 0;
    return out;
}

static char *json_reply(const char *thought, const char *key, const char *value, double num) {
    cJSON *o = cJSON_CreateObject();
    char *s, *r;
    cJSON_AddStringToObject(o, "thought", thought);
    if (value) cJSON_AddStringToObject(o, key, value); else cJSON_AddNumberToObject(o, key, num);
    s = cJSON_PrintUnformatted(o);
    r = mock_strdup(s);
    cJSON_free(s);
    cJSON_Delete(o);
    return r;
}

/* A user simulator: opens, then states a preference, then ends the chat after two answers. Its
   reply is fenced and single-quoted, with an apostrophe inside, as models write it. */
static char *user_sim_answer(const char *prompt, const char *signal) {
    char *hist = section(prompt, "CONVERSATION SO FAR"), *out = (char *)malloc(512);
    int answers = count_str(hist, "**Assistant**:");
    const char *resp = answers == 0 ? "hi, I need help with a math question" : answers == 1 ? "it's for homework, keep it short" : signal;
    snprintf(out, 512, "Here you go:\n```json\n{'current_answer': '%d answers so far', 'thought': \"I'll keep it brief\", 'response': '%s'}\n```", answers, resp);
    free(hist);
    return out;
}

static void handler(void *ctx, const mock_request *q, mock_response *r) {
    const char *m = q->model, *prompt = mock_last_user(q);
    (void)ctx;
    record(q);
    if (!strcmp(m, "sim-good") || !strcmp(m, "sim-json")) r->content = user_sim_answer(prompt, "[[TERMINATE CHAT]]");
    else if (!strcmp(m, "sim-custom")) r->content = user_sim_answer(prompt, "Thanks! <DONE>");
    else if (!strcmp(m, "sim-slow")) { r->delay_ms = 200; r->content = user_sim_answer(prompt, "[[TERMINATE CHAT]]"); }
    else if (!strcmp(m, "sim-flaky")) r->content = first_time(prompt) ? mock_strdup("I would probably ask for more detail.") : user_sim_answer(prompt, "[[TERMINATE CHAT]]");
    else if (!strcmp(m, "sim-never")) r->content = mock_strdup("{'thought': 'I forgot the response key'}");
    else if (!strcmp(m, "asst-pro")) {
        int asks = strstr(prompt, "How to collaborate:") && strstr(prompt, "{{") == NULL;
        r->content = mock_strdup(asks ? "{\"current_problem\": \"p\", \"thought\": \"t\", \"response\": \"Which size?\"}"
                                      : "not the proactive prompt");
    } else if (!strcmp(m, "asst-pro-bad")) r->content = mock_strdup("{\"thought\": \"no response key\"}");
    else if (!strcmp(m, "asst")) {
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(q->json, "messages");
        const char *role0 = cllm__json_str(cJSON_GetArrayItem(msgs, 0), "role");
        char buf[128];
        snprintf(buf, sizeof buf, "%sAnswer %d. Is that what you need?", role0 && !strcmp(role0, "system") ? "[sys] " : "", count_str(q->body, "\"role\":\"assistant\"") + 1);
        r->content = mock_strdup(buf);
    } else if (!strcmp(m, "asst-fail")) { r->status = 400; r->body = mock_strdup("{\"error\": {\"message\": \"context length exceeded\"}}"); }
    else if (!strcmp(m, "judge-int")) r->content = mock_strdup("Sure.\n```json\n{\"thought\": \"asked one question\", \"interactivity\": \"0.5\"}\n```");
    else if (!strcmp(m, "judge-v1")) r->content = mock_strdup("{\"interactivity\": {\"thought\": \"t\", \"score\": 2}}");
    else if (!strcmp(m, "judge-int-bad")) r->content = mock_strdup("{\"thought\": \"on a 1-3 scale\", \"interactivity\": 3}");
    else if (!strcmp(m, "judge-int-flaky")) r->content = first_time(prompt) ? mock_strdup("Highly interactive!") : mock_strdup("{'interactivity': 1, 'thought': 'great'}");
    else if (!strcmp(m, "judge-acc")) {
        char *truth = section(prompt, "GROUND TRUTH"), *answer = section(prompt, "ANSWER TO GRADE");
        r->content = json_reply("compared", "accuracy", NULL, strstr(answer, truth) ? 1 : 0);
        free(truth); free(answer);
    } else if (!strcmp(m, "judge-ext")) {
        char *conv = section(prompt, "CONVERSATION");
        const char *last = conv, *p;
        while ((p = strstr(last, "Assistant: ")) != NULL) last = p + 11;
        r->content = json_reply("took the last version", "final_completion", last, 0);
        free(conv);
    } else { r->status = 400; r->body = mock_strdup("{\"error\": {\"message\": \"unknown test model\"}}"); }
}

/* ---- helpers ------------------------------------------------------------------------------- */

static char base_url[128];

static void client_make(cllm_client *c, int concurrency) {
    cllm_client_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = base_url;
    cfg.api_key_env = KEY_ENV;
    cfg.backoff_ms = 10;
    cfg.max_retries = 1;
    cfg.max_concurrency = concurrency;
    if (cllm_client_init(c, &cfg, NULL) != CLLM_OK) exit(1);
}

static int model_calls(mock_server *s, const char *model) {
    int i, n = 0;
    pthread_mutex_lock(&s->mu);
    for (i = 0; i < s->n_models; i++) if (!strcmp(s->models[i], model)) n = s->counts[i];
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* conv with alternating user/assistant messages, k exchanges, then an optional final user turn */
static void make_history(cllm_conv *c, int exchanges, int end_with_user) {
    int i;
    memset(c, 0, sizeof *c);
    for (i = 0; i < exchanges; i++) { cllm_conv_push(c, "user", "a question", NULL); cllm_conv_push(c, "assistant", "an answer?", NULL); }
    if (end_with_user) cllm_conv_push(c, "user", "one more thing", NULL);
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* ---- the LLM simulator --------------------------------------------------------------------- */

static void test_sim_prompt(void) {
    cllm_goal g;
    cllm_conv h;
    cllm_llm_sim_config cfg;
    char *p = NULL;
    printf("-- the simulator prompt\n");
    memset(&g, 0, sizeof g);
    g.task_desc = "question answering";
    g.prompt = "What is 2+2? Explain.";
    g.reference = "4, because 2+2=4.";
    memset(&h, 0, sizeof h);
    cllm_conv_push(&h, "system", "SYSTEM-SECRET", NULL);
    cllm_conv_push(&h, "user", "help with sums", NULL);
    cllm_conv_push(&h, "assistant", "Which sum?", NULL);
    cllm_user_sim_prompt(NULL, &g, &h, &p, NULL);
    check_true("it holds the task description, goal and reference in private sections",
               strstr(p, "=== TASK TYPE START (private) ===\nquestion answering\n") && strstr(p, "What is 2+2? Explain.") && strstr(p, "4, because 2+2=4.") &&
               strstr(p, "=== YOUR GOAL START (private) ==="));
    check_true("it renders the history as **User** / **Assistant** lines without system messages",
               strstr(p, "**User**: help with sums\n\n**Assistant**: Which sum?") && !strstr(p, "SYSTEM-SECRET"));
    check_true("it names the termination signal and the three JSON keys",
               count_str(p, "[[TERMINATE CHAT]]") >= 2 && strstr(p, "\"current_answer\"") && strstr(p, "\"thought\"") && strstr(p, "\"response\""));
    free(p);
    g.reference = NULL;
    memset(&cfg, 0, sizeof cfg);
    cfg.prompt = "[{{task_desc}}|{{goal}}|{{history}}|{{termination}}]";
    cfg.termination = "<DONE>";
    cllm_user_sim_prompt(&cfg, &g, &h, &p, NULL);
    check_true("a custom template gets exactly the four values", !strcmp(p, "[question answering|What is 2+2? Explain.|**User**: help with sums\n\n**Assistant**: Which sum?|<DONE>]"));
    free(p);
    cllm_conv_free(&h);
}

static void test_llm_sim(mock_server *srv) {
    cllm_client c;
    cllm_llm_sim sim;
    cllm_llm_sim_config cfg;
    cllm_goal g[16];
    cllm_conv h[16];
    cllm_reply r[16];
    cllm_err err;
    cJSON *body;
    int i, ok;
    printf("-- (a) the LLM user simulator through the client\n");
    client_make(&c, 16);
    memset(&cfg, 0, sizeof cfg);
    cfg.params.model = "sim-good";
    cllm_llm_sim_init(&sim, &c, &cfg);
    for (i = 0; i < 16; i++) { memset(&g[i], 0, sizeof g[i]); g[i].prompt = "What is 7*6?"; make_history(&h[i], i % 3, 0); }
    check_true("three turns at once succeed",
               cllm_user_sim_turns(&sim.sim, g, h, 3, r, &err) == CLLM_OK);
    check_true("empty history -> the opening request", !strcmp(r[0].text, "hi, I need help with a math question") && !r[0].terminated);
    check_true("after one answer -> a preference (apostrophe inside single quotes survives)", !strcmp(r[1].text, "it's for homework, keep it short") && !r[1].terminated);
    check_true("after two answers -> the termination signal", !strcmp(r[2].text, "[[TERMINATE CHAT]]") && r[2].terminated);
    check_true("thought and current_answer are kept", !strcmp(r[1].thought, "I'll keep it brief") && !strcmp(r[1].current_answer, "1 answers so far"));
    for (i = 0; i < 3; i++) cllm_reply_free(&r[i]);
    body = recorded("sim-good");
    check_true("the simulator asks with one user message, temperature 1, max_tokens 1024 (defaults)",
               cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(body, "messages")) == 1 && num(body, "temperature") == 1.0 && num(body, "max_tokens") == 1024 &&
               !cJSON_GetObjectItemCaseSensitive(body, "response_format"));
    cJSON_Delete(body);

    cfg.params.model = "sim-json"; cfg.json_mode = 1; cfg.params.temperature = 0.3;
    cllm_llm_sim_init(&sim, &c, &cfg);
    cllm_user_sim_turns(&sim.sim, g, h, 1, r, &err);
    body = recorded("sim-json");
    check_true("json_mode sends response_format json_object; temperature as configured",
               r[0].code == CLLM_OK && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(body, "response_format")) && num(body, "temperature") == 0.3);
    cllm_reply_free(&r[0]);
    cJSON_Delete(body);

    memset(&cfg, 0, sizeof cfg);
    cfg.params.model = "sim-custom"; cfg.termination = "<DONE>";
    cllm_llm_sim_init(&sim, &c, &cfg);
    cllm_user_sim_turns(&sim.sim, g, h, 3, r, &err);
    check_true("a custom termination signal ends the conversation", r[2].code == CLLM_OK && r[2].terminated && !strcmp(r[2].text, "Thanks! <DONE>") && !r[1].terminated);
    for (i = 0; i < 3; i++) cllm_reply_free(&r[i]);

    cfg.params.model = "sim-flaky";
    cllm_llm_sim_init(&sim, &c, &cfg);
    for (i = 0; i < 4; i++) { cllm_conv_free(&h[i]); make_history(&h[i], i, 0); }
    check_true("unparseable first answers are re-asked: 4 turns succeed", cllm_user_sim_turns(&sim.sim, g, h, 4, r, &err) == CLLM_OK);
    printf("    sim-flaky: %d calls for 4 turns (each prompt fails once)\n", model_calls(srv, "sim-flaky"));
    check_true("... with exactly one re-ask each (8 calls)", model_calls(srv, "sim-flaky") == 8);
    for (i = 0; i < 4; i++) cllm_reply_free(&r[i]);

    cfg.params.model = "sim-never"; cfg.max_parse_retries = 2;
    cllm_llm_sim_init(&sim, &c, &cfg);
    check_true("never-usable answers fail with CLLM_ERR_FORMAT", cllm_user_sim_turns(&sim.sim, g, h, 1, r, &err) == CLLM_ERR_FORMAT &&
               r[0].text == NULL && strstr(r[0].err.msg, "\"response\""));
    check_true("... after 1 + max_parse_retries (2) calls", model_calls(srv, "sim-never") == 3);
    cllm_reply_free(&r[0]);

    cfg.params.model = "asst-fail"; cfg.max_parse_retries = 0;
    cllm_llm_sim_init(&sim, &c, &cfg);
    check_true("an endpoint error is reported as such, not re-asked", cllm_user_sim_turns(&sim.sim, g, h, 1, r, &err) == CLLM_ERR_HTTP &&
               strstr(err.msg, "context length exceeded") && model_calls(srv, "asst-fail") == 1);
    cllm_reply_free(&r[0]);

    cfg.params.model = "sim-slow";
    cllm_llm_sim_init(&sim, &c, &cfg);
    mock_reset_stats(srv);
    cllm_user_sim_turns(&sim.sim, g, h, 16, r, &err);
    for (i = 0, ok = 1; i < 16; i++) { ok &= r[i].code == CLLM_OK; cllm_reply_free(&r[i]); }
    printf("    16 simulator turns of 200 ms: %d in flight at most\n", srv->max_in_flight);
    check_true("the batch form issues all 16 simulator calls concurrently", ok && srv->max_in_flight == 16);
    for (i = 0; i < 16; i++) cllm_conv_free(&h[i]);
    cllm_client_free(&c);
}

/* ---- assistants and cllm_simulate ---------------------------------------------------------- */

static void test_simulate(mock_server *srv) {
    cllm_client c;
    cllm_llm_sim sim;
    cllm_llm_sim_config scfg;
    cllm_api_assistant asst;
    cllm_api_assistant_config acfg;
    cllm_goal g[3];
    cllm_conv conv[3];
    cllm_sim_status st[3];
    cllm_reply r;
    cllm_err err;
    cJSON *body;
    int i, ok;
    printf("-- the API assistant and cllm_simulate\n");
    client_make(&c, 8);
    memset(&acfg, 0, sizeof acfg);
    acfg.params.model = "asst";
    acfg.system_prompt = "You are a careful tutor.";
    cllm_api_assistant_init(&asst, &c, &acfg);
    make_history(&conv[0], 1, 1);
    check_true("the assistant answers with the system prompt in front", cllm_assistant_replies(&asst.assistant, conv, 1, &r, &err) == CLLM_OK &&
               !strcmp(r.text, "[sys] Answer 2. Is that what you need?"));
    body = recorded("asst");
    check_true("... sent first in the request but never stored in the conversation", conv[0].n == 3 &&
               cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(body, "messages")) == 4 && num(body, "temperature") == 0.8 && num(body, "max_tokens") == 2048);
    cJSON_Delete(body);
    cllm_reply_free(&r);
    cllm_conv_free(&conv[0]);

    memset(&scfg, 0, sizeof scfg);
    scfg.params.model = "sim-good";
    cllm_llm_sim_init(&sim, &c, &scfg);
    acfg.system_prompt = NULL;
    cllm_api_assistant_init(&asst, &c, &acfg);
    for (i = 0; i < 3; i++) { memset(&g[i], 0, sizeof g[i]); g[i].prompt = "What is 7*6?"; memset(&conv[i], 0, sizeof conv[i]); }
    check_true("three conversations run to the user's termination", cllm_simulate(&sim.sim, &asst.assistant, g, conv, 3, 14, st, &err) == CLLM_OK);
    for (i = 0, ok = 1; i < 3; i++)
        ok &= conv[i].n == 5 && st[i].n_new == 5 && st[i].terminated && !strcmp(conv[i].msgs[0].role, "user") &&
              !strcmp(conv[i].msgs[3].content, "Answer 2. Is that what you need?") && !strcmp(conv[i].msgs[4].content, "[[TERMINATE CHAT]]");
    check_true("... each: user, assistant, user, assistant, user([[TERMINATE CHAT]]), alternating", ok);
    for (i = 0; i < 3; i++) cllm_conv_free(&conv[i]);

    check_true("max_new_messages 3 stops after three messages, not terminated",
               cllm_simulate(&sim.sim, &asst.assistant, g, conv, 1, 3, st, &err) == CLLM_OK && conv[0].n == 3 && !st[0].terminated && st[0].n_new == 3);
    cllm_conv_free(&conv[0]);
    make_history(&conv[0], 0, 1);
    check_true("a history ending with the user lets the assistant speak first",
               cllm_simulate(&sim.sim, &asst.assistant, g, conv, 1, 1, st, &err) == CLLM_OK && conv[0].n == 2 && !strcmp(conv[0].msgs[1].role, "assistant"));
    cllm_conv_free(&conv[0]);

    acfg.params.model = "asst-pro";                /* CollabLLM's proactive candidates */
    acfg.proactive = 1;
    cllm_api_assistant_init(&asst, &c, &acfg);
    make_history(&conv[0], 1, 1);
    check_true("a proactive assistant: the history goes into the instruction, the JSON's \"response\" is the reply",
               cllm_assistant_replies(&asst.assistant, conv, 1, &r, &err) == CLLM_OK && !strcmp(r.text, "Which size?"));
    cllm_reply_free(&r);
    acfg.params.model = "asst-pro-bad";
    cllm_api_assistant_init(&asst, &c, &acfg);
    check_true("... a reply without \"response\" is re-asked 3 times, then a failure that says so",
               cllm_assistant_replies(&asst.assistant, conv, 1, &r, &err) == CLLM_ERR_FORMAT &&
               strstr(r.err.msg, "no usable answer in 4 tries") && model_calls(srv, "asst-pro-bad") == 4);
    cllm_reply_free(&r);
    cllm_conv_free(&conv[0]);
    acfg.proactive = 0;

    acfg.params.model = "asst-fail";
    cllm_api_assistant_init(&asst, &c, &acfg);
    for (i = 0; i < 3; i++) memset(&conv[i], 0, sizeof conv[i]);
    check_true("a failing assistant stops every conversation with its error",
               cllm_simulate(&sim.sim, &asst.assistant, g, conv, 3, 14, st, &err) == CLLM_ERR_HTTP && strstr(err.msg, "3 of 3 conversations failed") &&
               conv[2].n == 1 && st[2].code == CLLM_ERR_HTTP && strstr(st[2].err.msg, "context length exceeded"));
    for (i = 0; i < 3; i++) cllm_conv_free(&conv[i]);
    cllm_client_free(&c);
}

static void test_callback_sim(void) {
    cllm_goal g[2];
    cllm_conv conv[2];
    cllm_sim_status st[2];
    scripted_user u;
    cllm_client c;
    cllm_api_assistant asst;
    cllm_api_assistant_config acfg;
    cllm_user_sim user;
    cllm_err err;
    int i;
    printf("-- (c) a C callback as the simulator (examples/callback_sim.c)\n");
    memset(g, 0, sizeof g);
    memset(conv, 0, sizeof conv);
    memset(&u, 0, sizeof u);
    g[0].prompt = "What is the derivative of x^3?";
    g[1].prompt = "Name a prime above 10.";
    check_true("callback user + callback assistant run to termination", run_scripted(g, conv, 2, st, &u, &err) == CLLM_OK && st[0].terminated && st[1].terminated);
    check_true("the script: vague opening, question, goal revealed, answer, termination", conv[1].n == 5 &&
               !strcmp(conv[1].msgs[2].content, "sure, here it is: Name a prime above 10.") && !strcmp(conv[1].msgs[4].content, CLLM_TERMINATION_SIGNAL));
    check_true("without turn_batch the callback is called once per turn (3 user turns x 2)", u.calls == 6);
    for (i = 0; i < 2; i++) cllm_conv_free(&conv[i]);

    client_make(&c, 4);
    memset(&acfg, 0, sizeof acfg);
    acfg.params.model = "asst";
    cllm_api_assistant_init(&asst, &c, &acfg);
    memset(&user, 0, sizeof user);
    user.turn = scripted_user_turn;
    user.ctx = &u;
    check_true("the callback user also drives an API assistant (which always asks back: 4 messages, no termination)",
               cllm_simulate(&user, &asst.assistant, g, conv, 1, 4, st, &err) == CLLM_OK && conv[0].n == 4 && !st[0].terminated &&
               !strcmp(conv[0].msgs[3].content, "Answer 2. Is that what you need?"));
    cllm_conv_free(&conv[0]);
    cllm_client_free(&c);
}

/* ---- judges -------------------------------------------------------------------------------- */

static void test_judges(mock_server *srv) {
    cllm_client c;
    cllm_judge j;
    cllm_judge_config cfg;
    cllm_conv conv[2];
    cllm_judgement out[3];
    cllm_accuracy_item acc[3];
    cllm_extract_item ext[1];
    cllm_err err;
    cJSON *body;
    char *prompt;
    int i;
    printf("-- judges: interactivity, accuracy, extraction\n");
    client_make(&c, 8);
    make_history(&conv[0], 1, 0);
    memset(&conv[1], 0, sizeof conv[1]);
    cllm_conv_push(&conv[1], "user", "write me a haiku about rain", NULL);
    cllm_conv_push(&conv[1], "assistant", "Draft: grey sky", NULL);
    cllm_conv_push(&conv[1], "user", "shorter please", NULL);
    cllm_conv_push(&conv[1], "assistant", "rain taps the window", NULL);

    memset(&cfg, 0, sizeof cfg);
    cfg.params.model = "judge-int";
    cllm_judge_init(&j, &c, &cfg);
    check_true("interactivity: one conversation judged", cllm_judge_interactivity(&j, &conv[1], 1, out, &err) == CLLM_OK);
    check_true("... score read from a fenced JSON with a numeric string, thought kept", out[0].score == 0.5 && !strcmp(out[0].thought, "asked one question"));
    cllm_judgement_free(&out[0]);
    body = recorded("judge-int");
    prompt = cllm__strdup(cllm__json_str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "messages"), 0), "content"));
    check_true("... the prompt holds the conversation as Role: lines; temperature 0 is sent",
               strstr(prompt, "User: write me a haiku about rain\n\nAssistant: Draft: grey sky") && num(body, "temperature") == 0.0 &&
               cJSON_GetObjectItemCaseSensitive(body, "temperature") != NULL);
    free(prompt);
    cJSON_Delete(body);
    check_true("interactivity: two conversations in one batch", cllm_judge_interactivity(&j, conv, 2, out, &err) == CLLM_OK && out[0].score == 0.5 && out[1].score == 0.5);
    for (i = 0; i < 2; i++) cllm_judgement_free(&out[i]);

    cfg.params.model = "judge-int-bad";
    cllm_judge_init(&j, &c, &cfg);
    check_true("an out-of-range score is a failure with a code, never a silent 0",
               cllm_judge_interactivity(&j, conv, 1, out, &err) == CLLM_ERR_FORMAT && out[0].code == CLLM_ERR_FORMAT && strstr(out[0].err.msg, "outside [0, 1]"));
    check_true("... after 1 + 3 default re-asks", model_calls(srv, "judge-int-bad") == 4);
    cllm_judgement_free(&out[0]);
    cfg.params.model = "judge-int-flaky";
    cllm_judge_init(&j, &c, &cfg);
    check_true("an unusable first verdict is re-asked and then read", cllm_judge_interactivity(&j, conv, 2, out, &err) == CLLM_OK &&
               out[0].score == 1.0 && out[1].score == 1.0 && model_calls(srv, "judge-int-flaky") == 4);
    for (i = 0; i < 2; i++) cllm_judgement_free(&out[i]);

    {   /* CollabLLM v1's judge: 1-3 on the follow-up, the earlier messages as context */
        cllm_followup_item fu[1];
        fu[0].conv = &conv[1];
        fu[0].n_history = 2;
        cfg.params.model = "judge-v1";
        cllm_judge_init(&j, &c, &cfg);
        check_true("interactivity_v1: v1's nested {\"interactivity\": {\"score\": 2}} is read as 2",
                   cllm_judge_interactivity_v1(&j, fu, 1, out, &err) == CLLM_OK && out[0].score == 2.0);
        cllm_judgement_free(&out[0]);
        body = recorded("judge-v1");
        prompt = cllm__strdup(cllm__json_str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "messages"), 0),
                                             "content"));
        check_true("... the first 2 messages are the context, the last 2 the follow-up judged",
                   strstr(prompt, "END ===") && strstr(prompt, "Assistant: Draft: grey sky") &&
                   strstr(prompt, "Assistant: Draft: grey sky") < strstr(prompt, "FOLLOW-UP TO JUDGE START") &&
                   strstr(strstr(prompt, "FOLLOW-UP TO JUDGE START"), "User: shorter please\n\nAssistant: rain taps"));
        free(prompt);
        cJSON_Delete(body);
        cfg.params.model = "judge-int-bad";       /* says 3: in range for v1 */
        cllm_judge_init(&j, &c, &cfg);
        check_true("... a flat 3 is read too", cllm_judge_interactivity_v1(&j, fu, 1, out, &err) == CLLM_OK &&
                   out[0].score == 3.0);
        cllm_judgement_free(&out[0]);
        cfg.params.model = "judge-int";           /* says 0.5: outside v1's scale */
        cllm_judge_init(&j, &c, &cfg);
        check_true("... 0.5 is outside [1, 3]: a failure, never a score",
                   cllm_judge_interactivity_v1(&j, fu, 1, out, &err) == CLLM_ERR_FORMAT &&
                   strstr(out[0].err.msg, "outside [1, 3]"));
        cllm_judgement_free(&out[0]);
    }

    cfg.params.model = "judge-acc";
    cllm_judge_init(&j, &c, &cfg);
    memset(acc, 0, sizeof acc);
    acc[0].question = "What is 7*6?"; acc[0].ground_truth = "42"; acc[0].answer = "It is 42.";
    acc[1].question = "What is 7*6?"; acc[1].ground_truth = "42"; acc[1].answer = "It is 48.";
    acc[2].question = "Write a haiku"; acc[2].ground_truth = "rain taps"; acc[2].conv = &conv[1];
    check_true("accuracy: three items judged", cllm_judge_accuracy(&j, acc, 3, out, &err) == CLLM_OK);
    {
        double got[3], want[3] = { 1, 0, 1 };
        for (i = 0; i < 3; i++) got[i] = out[i].score;
        check_tensor_d("accuracy: right -> 1, wrong -> 0, over a conversation -> 1", got, want, 3, 0.0);
    }
    for (i = 0; i < 3; i++) cllm_judgement_free(&out[i]);
    acc[1].ground_truth = NULL;
    check_true("a missing ground truth fails that item alone, before any request",
               cllm_judge_accuracy(&j, acc, 3, out, &err) == CLLM_ERR_ARG && strstr(err.msg, "1 of 3 judgements failed; first (#1)") &&
               strstr(out[1].err.msg, "{{ground_truth}}") && out[0].code == CLLM_OK && out[2].code == CLLM_OK);
    for (i = 0; i < 3; i++) cllm_judgement_free(&out[i]);

    cfg.params.model = "judge-ext";
    cllm_judge_init(&j, &c, &cfg);
    memset(ext, 0, sizeof ext);
    ext[0].conv = &conv[1]; ext[0].kind = "poem"; ext[0].requirement = "Keep the original line breaks.";
    check_true("extraction returns the final artifact as text", cllm_judge_extract(&j, ext, 1, out, &err) == CLLM_OK && !strcmp(out[0].text, "rain taps the window"));
    body = recorded("judge-ext");
    prompt = cllm__strdup(cllm__json_str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "messages"), 0), "content"));
    check_true("... its prompt names the kind and the additional requirement", strstr(prompt, "final, complete poem") && strstr(prompt, "Additional requirement: Keep the original line breaks."));
    free(prompt);
    cJSON_Delete(body);
    cllm_judgement_free(&out[0]);
    check_true("n = 0 is a no-op", cllm_judge_extract(&j, ext, 0, out, &err) == CLLM_OK);
    for (i = 0; i < 2; i++) cllm_conv_free(&conv[i]);
    cllm_client_free(&c);
}

/* ---- the command --------------------------------------------------------------------------- */

static void test_cli(void) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[2048], out[256];
    cllm_task *t = NULL;
    int n = 0, i, ok = 1;
    cllm_err err;
    printf("-- build/collabllm simulate\n");
    snprintf(out, sizeof out, "%s/test_client_sim_out.jsonl", build);
    remove(out);                                  /* an existing output is refused without --overwrite */
    snprintf(cmd, sizeof cmd, "%s/collabllm simulate --tasks data_fmt/task.example.jsonl --out %s --user-model sim-good --assistant-model asst "
             "--base-url %s --api-key-env " KEY_ENV " --task-desc 'question answering' --max-messages 10 --assistant-system 'Be brief.'", build, out, base_url);
    printf("$ %s\n", cmd);
    check_true("simulate exits 0", system(cmd) == 0);
    check_true("its output reads as a task file (every task field kept)", cllm_tasks_read_jsonl(out, &t, &n, &err) == CLLM_OK && n == 3);
    for (i = 0; i < n; i++) {
        const cJSON *sim = cJSON_GetObjectItemCaseSensitive(t[i].json, "simulation");
        cllm_conv c;
        ok &= cllm_conv_from_json(&c, cJSON_GetObjectItemCaseSensitive(t[i].json, "messages"), &err) == CLLM_OK && c.n == 5 &&
              !strcmp(c.msgs[0].role, "user") && !strcmp(c.msgs[1].content, "[sys] Answer 1. Is that what you need?");
        ok &= cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t[i].json, "terminated")) && !cJSON_GetObjectItemCaseSensitive(t[i].json, "error");
        ok &= !strcmp(cllm__json_str(sim, "user_model"), "sim-good") && !strcmp(cllm__json_str(sim, "task_desc"), "question answering") &&
              num(sim, "max_messages") == 10;
        cllm_conv_free(&c);
    }
    check_true("each line: 5 alternating messages ending in termination, provenance, no error", ok && n == 3);
    check_true("the task's own fields are kept", n == 3 && !strcmp(cllm__json_str(t[1].json, "split"), "train") &&
               cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(t[2].json, "single_turn_completion")));
    cllm_tasks_free(t, n);

    snprintf(cmd, sizeof cmd, "%s/collabllm simulate --tasks data_fmt/task.example.jsonl --out %s --user-model sim-good --assistant-model asst-fail "
             "--base-url %s --limit 2 --retries 0 --overwrite 2>/dev/null", build, out, base_url);
    check_true("a failing assistant: exit status 1", system(cmd) != 0);
    check_true("... and the file still lists both conversations with their error",
               cllm_tasks_read_jsonl(out, &t, &n, &err) == CLLM_OK && n == 2 && strstr(cllm__json_str(t[0].json, "error"), "context length exceeded") &&
               cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(t[1].json, "terminated")));
    cllm_tasks_free(t, n);
    snprintf(cmd, sizeof cmd, "%s/collabllm simulate --tasks data_fmt/task.example.jsonl --out %s 2>/dev/null", build, out);
    check_true("missing model flags: usage error", system(cmd) != 0);
    remove(out);
}

int main(void) {
    mock_server srv;
    int i;
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    setenv(KEY_ENV, "sk-sim-test", 1);
    if (mock_start(&srv, handler, NULL) != 0) { printf("cannot start the mock server\n"); return 1; }
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d/v1", srv.port);
    printf("mock server at %s\n", base_url);
    test_sim_prompt();
    test_llm_sim(&srv);
    test_simulate(&srv);
    test_callback_sim();
    test_judges(&srv);
    test_cli();
    mock_stop(&srv);
    for (i = 0; i < n_seen_prompts; i++) free(seen_prompts[i]);
    for (i = 0; i < 8; i++) free(last_body[i]);
    return check_summary("test_client_sim");
}
