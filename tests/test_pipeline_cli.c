/* test_pipeline_cli.c - the CollabLLM pipeline commands end to end against the loopback
   OpenAI-compatible server: `collabllm generate-data` (API user simulator, API candidate model,
   API judge), `build-pairs`, `eval` and `mr`, each run as its own process. The server plays a
   coffee shop: the simulator answers a question about the size and leaves after an answer; the
   assistant either asks or guesses; the judge calls a conversation interactive if it asked. */
#include "mock_openai.c"
#include "../collabllm.h"
#include "check.h"

static int asst_calls = 0, extract_calls = 0;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void handler(void *ctx, const mock_request *req, mock_response *resp) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req->json, "messages");
    const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    const char *content = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(last, "content")) ? cJSON_GetObjectItemCaseSensitive(last, "content")->valuestring : "";
    char buf[512];
    (void)ctx;
    if (!strcmp(req->model, "user")) {
        /* the simulator prompt renders the history as bold User and Assistant blocks */
        const char *a = NULL, *p;
        for (p = strstr(content, "**Assistant**: "); p; p = strstr(p + 1, "**Assistant**: ")) a = p;
        if (strstr(content, "(no messages yet)")) snprintf(buf, sizeof buf, "{\"current_answer\": \"\", \"thought\": \"start\", \"response\": \"i want a coffee\"}");
        else if (a && strchr(a, '?') && (!strchr(a, '\n') || strchr(a, '?') < strchr(a, '\n')))
            snprintf(buf, sizeof buf, "```json\n{\"current_answer\": \"none\", \"thought\": \"tell it\", \"response\": \"large please\"}\n```");
        else snprintf(buf, sizeof buf, "Sure. {\"current_answer\": \"done\", \"thought\": \"happy\", \"response\": \"[[TERMINATE CHAT]]\"}");
        resp->content = mock_strdup(buf);
    } else if (!strcmp(req->model, "assistant") && strstr(content, "How to collaborate:")) {
        /* the proactive instruction (generate-data's first candidate): asks, and orders once told the size */
        snprintf(buf, sizeof buf, "{\"current_problem\": \"size\", \"thought\": \"t\", \"response\": \"%s\"}",
                 strstr(content, "large please") ? "one large coffee" : "what size ?");
        resp->content = mock_strdup(buf);
    } else if (!strcmp(req->model, "assistant")) {
        int k;
        pthread_mutex_lock(&mu); k = asst_calls++; pthread_mutex_unlock(&mu);
        if (strstr(req->body, "large please")) resp->content = mock_strdup("one large coffee");
        else resp->content = mock_strdup(k % 2 ? "one small coffee" : "what size ?");
    } else if (!strcmp(req->model, "judge") && strstr(content, "Write out the final, complete document")) {
        /* the extractor: the order as agreed, whatever the last message says */
        pthread_mutex_lock(&mu); extract_calls++; pthread_mutex_unlock(&mu);
        snprintf(buf, sizeof buf, "{\"thought\": \"x\", \"final_completion\": \"%s\"}",
                 strstr(content, "large please") ? "one large coffee" : "a coffee");
        resp->content = mock_strdup(buf);
    } else if (!strcmp(req->model, "judge") && strstr(content, "FOLLOW-UP TO JUDGE START")) {
        /* v1's judge: 3 when the follow-up asks, else 1; and the opening request must be context, not judged */
        const char *followup = strstr(content, "FOLLOW-UP TO JUDGE START");
        int split_ok = strstr(content, "i want a coffee") && strstr(content, "i want a coffee") < followup &&
                       !strstr(followup, "i want a coffee");
        snprintf(buf, sizeof buf, split_ok ? "{\"thought\": \"x\", \"interactivity\": {\"score\": %d}}" : "no",
                 strstr(followup, "what size ?") ? 3 : 1);
        resp->content = mock_strdup(buf);
    } else if (!strcmp(req->model, "judge") && strstr(content, "ANSWER TO GRADE START")) {
        snprintf(buf, sizeof buf, "{\"thought\": \"x\", \"accuracy\": %d}",
                 strstr(strstr(content, "ANSWER TO GRADE START"), "one large coffee") ? 1 : 0);
        resp->content = mock_strdup(buf);
    } else if (!strcmp(req->model, "judge")) {
        snprintf(buf, sizeof buf, "{\"thought\": \"ok\", \"interactivity\": %s}", strstr(content, "what size ?") ? "1" : "0");
        resp->content = mock_strdup(buf);
    } else resp->status = 404;
}

int main(void) {
    mock_server srv;
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[4096], common[1024], path[512];
    FILE *f;
    int n_lines = 0, i;
    (void)mock_last_user; (void)mock_reset_stats;
    if (mock_start(&srv, handler, NULL) != 0) { printf("cannot start the mock server\n"); return 1; }
    snprintf(path, sizeof path, "%s/tmp_pipe_tasks.jsonl", build);
    f = fopen(path, "wb");
    fputs("{\"single_turn_prompt\": \"order a large coffee\", \"single_turn_completion\": \"one large coffee\"}\n"
          "{\"single_turn_prompt\": \"order a large coffee quickly\", \"single_turn_completion\": \"one large coffee\"}\n", f);
    fclose(f);
    snprintf(common, sizeof common, "--tasks %s --user-model user --assistant-model assistant --judge-model judge "
             "--base-url http://127.0.0.1:%d/v1 --metrics exact_match:1,interactivity:0.5 --retries 0", path, srv.port);

    printf("-- generate-data\n");
    asst_calls = 1;   /* the plain candidate guesses first; the proactive one asks */
    snprintf(cmd, sizeof cmd, "rm -f %s/tmp_pipe_records.jsonl; %s/collabllm generate-data %s --out %s/tmp_pipe_records.jsonl --candidates 2 --samples 2 --max-turns 3",
             build, build, common, build);
    printf("$ %s\n", cmd);
    check_true("generate-data exits 0", system(cmd) == 0);
    snprintf(path, sizeof path, "%s/tmp_pipe_records.jsonl", build);
    {
        char line[1 << 16];
        int ok = 1, mixed = 1;
        f = fopen(path, "rb");
        while (f && fgets(line, sizeof line, f)) {
            cJSON *o = cJSON_Parse(line);
            const char *c = cJSON_GetObjectItem(o, "completion")->valuestring;
            double sc = cJSON_GetObjectItem(o, "score")->valuedouble;
            /* ask: 1 + 0.5*1 - 5e-4 * (3 + 2 + 3 + 2) words; guess: 0 + 0.5*0 - 5e-4 * (3 + 2) */
            double want = strchr(c, '?') ? 1.5 - 5e-4 * 10 : strstr(c, "small") ? -5e-4 * 5 : 1.5 - 5e-4 * 5;  /* the judge sees the earlier question */
            if (n_lines == 0) { char *t = cJSON_Print(o); printf("   first record:\n%s\n", t); free(t); }
            ok &= fabs(sc - want) < 1e-9;
            /* --proactive-ratio 0.5 by default: of the 2 candidates of a turn, the first is proactive */
            mixed &= cJSON_IsTrue(cJSON_GetObjectItem(o, "proactive")) == (n_lines % 2 == 0);
            n_lines++;
            cJSON_Delete(o);
        }
        if (f) fclose(f);
        check_true("8 records with the hand-computed MR (question 1.495, guess -0.0025, answer 1.4975)", ok && n_lines == 8);
        check_true("each turn's first candidate is the proactive one (\"proactive\": true), the second plain", mixed);
    }
    {   /* the run's sidecar; a second run is refused without --resume, and with it finds nothing to do */
        char *before = NULL, *after = NULL;
        size_t n_before = 0, n_after = 0;
        cllm_err err;
        snprintf(cmd, sizeof cmd, "%s.meta.json", path);
        check_true("the sidecar RECORDS.jsonl.meta.json names the command (data_fmt/meta.md)",
                   cllm_read_file(cmd, &before, &n_before, &err) == CLLM_OK &&
                   strstr(before, "\"collabllm generate-data\"") && strstr(before, "\"fingerprint\""));
        cllm_free_buffer(before);
        cllm_read_file(path, &before, &n_before, &err);
        snprintf(cmd, sizeof cmd, "%s/collabllm generate-data %s --out %s --candidates 2 --samples 2 --max-turns 3 "
                 "2>/dev/null", build, common, path);
        check_true("generate-data into its own finished output without --resume: refused (exit 2)",
                   WEXITSTATUS(system(cmd)) == 2);
        snprintf(cmd, sizeof cmd, "%s/collabllm generate-data %s --out %s --candidates 2 --samples 2 --max-turns 3 "
                 "--resume --concurrency 4 2>%s/tmp_pipe_resume.txt", build, common, path, build);
        check_true("with --resume (and another --concurrency, a runtime flag): exit 0", system(cmd) == 0);
        cllm_read_file(path, &after, &n_after, &err);
        check_true("  nothing was redone: the records are byte-identical", before && after && n_before == n_after &&
                   memcmp(before, after, n_before) == 0);
        cllm_free_buffer(before);
        cllm_free_buffer(after);
        snprintf(cmd, sizeof cmd, "%s/collabllm generate-data %s --out %s --candidates 3 --samples 2 --max-turns 3 "
                 "--resume 2>%s/tmp_pipe_resume.txt", build, common, path, build);
        check_true("with --resume and another --candidates: refused (exit 2)", WEXITSTATUS(system(cmd)) == 2);
    }

    printf("-- build-pairs\n");
    snprintf(cmd, sizeof cmd, "%s/collabllm build-pairs --records %s --sft %s/tmp_pipe_sft.jsonl --dpo %s/tmp_pipe_dpo.jsonl "
             "--overwrite", build, path, build, build);
    check_true("build-pairs exits 0", system(cmd) == 0);
    snprintf(path, sizeof path, "%s/tmp_pipe_dpo.jsonl", build);
    {
        char *text = NULL;
        size_t len;
        cllm_err err;
        cllm_read_file(path, &text, &len, &err);
        check_true("one pair per conversation: chosen = the question", text && strstr(text, "\"chosen\":[{\"role\":\"assistant\",\"content\":\"what size ?\"}]") != NULL);
        cllm_free_buffer(text);
    }

    printf("-- eval\n");
    asst_calls = 0;   /* the first reply asks */
    snprintf(cmd, sizeof cmd, "%s/collabllm eval %s --details %s/tmp_pipe_eval.jsonl --summary %s/tmp_pipe_summary.json "
             "--overwrite", build, common, build, build);
    check_true("eval exits 0", system(cmd) == 0);
    snprintf(path, sizeof path, "%s/tmp_pipe_summary.json", build);
    {
        char *text = NULL;
        size_t len;
        cllm_err err;
        cJSON *s;
        cllm_read_file(path, &text, &len, &err);
        s = text ? cJSON_Parse(text) : NULL;
        check_true("summary: 2 tasks, exact_match and interactivity means in [0, 1]", s && cJSON_GetObjectItem(s, "tasks")->valueint == 2 &&
                   cJSON_GetObjectItem(cJSON_GetObjectItem(s, "metrics"), "exact_match")->valuedouble >= 0);
        cJSON_Delete(s);
        cllm_free_buffer(text);
    }

    printf("-- eval with CollabLLM v1's 1-3 judge: ITR as the paper's Table 1\n");
    asst_calls = 0;
    snprintf(cmd, sizeof cmd, "%s/collabllm eval --tasks %s/tmp_pipe_tasks.jsonl --user-model user --assistant-model "
             "assistant --judge-model judge --base-url http://127.0.0.1:%d/v1 --retries 0 --metrics interactivity_v1:1 "
             "--details %s/tmp_pipe_eval1.jsonl --summary %s/tmp_pipe_summary1.json --overwrite > %s/tmp_pipe_eval1.txt",
             build, build, srv.port, build, build, build);
    check_true("eval --metrics interactivity_v1:1 exits 0", system(cmd) == 0);
    {
        char *text = NULL, *details = NULL, *line, *table = NULL;
        size_t len;
        cllm_err err;
        cJSON *s, *itr;
        double sum_itr = 0, sum_m = 0;
        int convs = 0, ok = 1;
        snprintf(path, sizeof path, "%s/tmp_pipe_eval1.jsonl", build);
        cllm_read_file(path, &details, &len, &err);
        for (line = details ? strtok(details, "\n") : NULL; line; line = strtok(NULL, "\n")) {
            /* the paper's transform by hand: x = 3 for a conversation where the assistant asked, else 1 */
            cJSON *c = cJSON_Parse(line);
            int x = strstr(line, "\"what size ?\"") ? 3 : 1;
            double m = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "metrics"), "interactivity_v1")->valuedouble;
            ok = ok && m == x / 3.0;
            sum_itr += 2 * (x - 2.5);
            sum_m += m;
            convs++;
            cJSON_Delete(c);
        }
        snprintf(path, sizeof path, "%s/tmp_pipe_summary1.json", build);
        cllm_read_file(path, &text, &len, &err);
        s = text ? cJSON_Parse(text) : NULL;
        itr = cJSON_GetObjectItem(s, "itr");
        check_true("each conversation's interactivity_v1 is x/3 for the judge's x", convs == 2 && ok);
        check_true("summary itr = 100 x mean of 2(x - 2.5) over the conversations, labelled with the paper's scale",
                   itr && fabs(cJSON_GetObjectItem(itr, "value")->valuedouble - 100 * sum_itr / convs) < 1e-9 &&
                   fabs(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "metrics"), "interactivity_v1")->valuedouble -
                        sum_m / convs) < 1e-12 &&
                   strstr(cJSON_GetObjectItem(itr, "scale")->valuestring, "paper Table 1") != NULL);
        snprintf(path, sizeof path, "%s/tmp_pipe_eval1.txt", build);
        cllm_read_file(path, &table, &len, &err);
        check_true("the printed table says which ITR it is", table && strstr(table, "ITR (paper Table 1:"));
        cJSON_Delete(s);
        cllm_free_buffer(text);
        cllm_free_buffer(details);
        cllm_free_buffer(table);
    }

    printf("-- mr with v1's judge: R = a x/3 + b T - min(lambda N, 1), the follow-up judged, the history as context\n");
    snprintf(cmd, sizeof cmd, "%s/collabllm mr --input data_fmt/mr.example.jsonl --user-model user --assistant-model "
             "assistant --judge-model judge --base-url http://127.0.0.1:%d/v1 --metrics exact_match:1,interactivity_v1:1 "
             "--samples 2 > %s/tmp_pipe_mr_v1.jsonl", build, srv.port, build);
    check_true("mr --metrics exact_match:1,interactivity_v1:1 exits 0", system(cmd) == 0);
    {
        char *text = NULL;
        size_t len;
        cllm_err err;
        cJSON *o, *c0, *c1;
        snprintf(path, sizeof path, "%s/tmp_pipe_mr_v1.jsonl", build);
        cllm_read_file(path, &text, &len, &err);
        o = text ? cJSON_Parse(text) : NULL;
        c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "candidates"), 0);
        c1 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "candidates"), 1);
        /* the question: T = 1, x = 3, N = 10 words (5e-4 each, the math preset); the guess: T = 0, x = 1, N = 5 */
        check_true("the question scores 1 + 3/3 - 0.005 = 1.995, the guess 0 + 1/3 - 0.0025",
                   c0 && c1 && fabs(cJSON_GetObjectItem(c0, "score")->valuedouble - 1.995) < 1e-9 &&
                   fabs(cJSON_GetObjectItem(c1, "score")->valuedouble - (1.0 / 3 - 0.0025)) < 1e-9);
        cJSON_Delete(o);
        cllm_free_buffer(text);
    }

    printf("-- mr on the documented example, data_fmt/mr.example.jsonl (data_fmt/mr.md)\n");
    snprintf(path, sizeof path, "data_fmt/mr.example.jsonl");
    snprintf(cmd, sizeof cmd, "%s/collabllm mr --input %s --user-model user --assistant-model assistant --judge-model judge "
             "--base-url http://127.0.0.1:%d/v1 --metrics exact_match:1,interactivity:0.5 --samples 2 > %s/tmp_pipe_mr_out.jsonl", build, path, srv.port, build);
    check_true("mr exits 0", system(cmd) == 0);
    snprintf(path, sizeof path, "%s/tmp_pipe_mr_out.jsonl", build);
    {
        char *text = NULL;
        size_t len;
        cllm_err err;
        cJSON *o, *c0, *c1;
        cllm_read_file(path, &text, &len, &err);
        o = text ? cJSON_Parse(text) : NULL;
        c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "candidates"), 0);
        c1 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "candidates"), 1);
        check_true("mr: the question scores 1.495, the guess -0.0025", c0 && c1 && fabs(cJSON_GetObjectItem(c0, "score")->valuedouble - 1.495) < 1e-9 &&
                   fabs(cJSON_GetObjectItem(c1, "score")->valuedouble + 0.0025) < 1e-9);
        cJSON_Delete(o);
        cllm_free_buffer(text);
    }

    printf("-- mr with bleu: the judge extracts the final document; --no-extract scores the last message\n");
    for (i = 0; i < 2; i++) {
        char *text = NULL;
        size_t len;
        cllm_err err;
        cJSON *o, *b0, *b1;
        const char *ref = "one large coffee";
        double want;
        int calls0 = extract_calls;
        snprintf(cmd, sizeof cmd, "%s/collabllm mr --input data_fmt/mr.example.jsonl --user-model user --assistant-model "
                 "assistant --judge-model judge --base-url http://127.0.0.1:%d/v1 --metrics bleu:1 --samples 2 %s"
                 "> %s/tmp_pipe_mr_bleu.jsonl", build, srv.port, i ? "--no-extract " : "", build);
        check_true(i ? "mr --no-extract exits 0" : "mr --metrics bleu:1 --judge-model exits 0", system(cmd) == 0);
        snprintf(path, sizeof path, "%s/tmp_pipe_mr_bleu.jsonl", build);
        cllm_read_file(path, &text, &len, &err);
        o = text ? cJSON_Parse(text) : NULL;
        b0 = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "candidates"), 0),
                                                     "rewards"), "bleu");
        b1 = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "candidates"), 1),
                                                     "rewards"), "bleu");
        /* the character BLEU (as NLTK's sentence_bleu on strings) of what each mode scores for the guess */
        cllm_bleu(1, &ref, i ? "one small coffee" : "a coffee", CLLM_BLEU_CHAR, CLLM_BLEU_NO_SMOOTHING, &want, &err);
        if (i == 0)
            check_true("extracted: 4 extractions (2 candidates x 2 futures); the question's document is the order "
                       "(BLEU 1), the guess's is the extracted 'a coffee'", extract_calls - calls0 == 4 && b0 && b1 &&
                       cJSON_GetArrayItem(b0, 0)->valuedouble == 1 && cJSON_GetArrayItem(b1, 0)->valuedouble == want);
        else
            check_true("--no-extract: no extraction; the guess scores its last message, 'one small coffee'",
                       extract_calls == calls0 && b1 && cJSON_GetArrayItem(b1, 0)->valuedouble == want && want < 1);
        cJSON_Delete(o);
        cllm_free_buffer(text);
    }

    printf("-- mr --token-counter DIR/cl100k_base.tiktoken: the penalty counts its tokens (data_fmt/tiktoken.md)\n");
    {
        char counter[512];
        char *text = NULL;
        size_t len;
        cllm_err err;
        cllm_tiktoken tk;
        cJSON *o;
        const cJSON *c;
        int samples = 0;
        int exact = 0;
        int differs_from_words = 0;
        snprintf(cmd, sizeof cmd, "mkdir -p %s/tmp_pipe_tiktoken", build);
        check_true("a directory for the rank file", system(cmd) == 0);
        /* the small committed ranks, under cl100k_base's name */
        snprintf(counter, sizeof counter, "%s/tmp_pipe_tiktoken/cl100k_base.tiktoken", build);
        if (cllm_read_file("tests/data/tiktoken/small.tiktoken", &text, &len, &err) == CLLM_OK) {
            cllm_write_file_atomic(counter, text, len, &err);
        }
        cllm_free_buffer(text);
        check_true("the rank file loads as cl100k_base", cllm_tiktoken_load(&tk, counter, NULL, &err) == CLLM_OK);
        snprintf(cmd, sizeof cmd, "%s/collabllm mr --input data_fmt/mr.example.jsonl --user-model user "
                 "--assistant-model assistant --judge-model judge --base-url http://127.0.0.1:%d/v1 "
                 "--metrics exact_match:1 --samples 2 --token-counter %s > %s/tmp_pipe_mr_tk.jsonl",
                 build, srv.port, counter, build);
        check_true("mr --token-counter exits 0", system(cmd) == 0);
        snprintf(path, sizeof path, "%s/tmp_pipe_mr_tk.jsonl", build);
        text = NULL;
        cllm_read_file(path, &text, &len, &err);
        o = text ? cJSON_Parse(text) : NULL;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(o, "candidates")) {
            const cJSON *sessions = cJSON_GetObjectItem(c, "sessions");
            const cJSON *exact_match = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "rewards"), "exact_match");
            const cJSON *mr = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "rewards"), "MR");
            int s;
            for (s = 0; s < cJSON_GetArraySize(sessions); s++) {
                const cJSON *session = cJSON_GetArrayItem(sessions, s);
                int t;
                int tokens, words = 0;
                char joined[4096] = "";
                double want;
                /* v1's count: the candidate and the future, joined by "\n", in one call (core/multiturn_reward.py) */
                for (t = 1; t < cJSON_GetArraySize(session); t++) {
                    const char *content = cJSON_GetObjectItem(cJSON_GetArrayItem(session, t), "content")->valuestring;
                    if (t > 1) strncat(joined, "\n", sizeof joined - strlen(joined) - 1);
                    strncat(joined, content, sizeof joined - strlen(joined) - 1);
                    words += cllm_count_tokens(NULL, content);
                }
                tokens = cllm_tiktoken_count(&tk, joined);
                want = cJSON_GetArrayItem(exact_match, s)->valuedouble - fmin(5e-4 * tokens, 1);
                samples++;
                exact += fabs(cJSON_GetArrayItem(mr, s)->valuedouble - want) < 1e-12;
                differs_from_words += tokens != words;
            }
        }
        printf("  %d futures, %d scored with the tiktoken count, %d where it differs from the word count\n", samples,
               exact, differs_from_words);
        check_true("every future's R* = exact_match - 5e-4 x (tiktoken tokens of the candidate and the future, "
                   "joined by \"\\n\" as v1)",
                   samples == 4 && exact == samples);
        check_true("... and those counts are not the word counts (the flag is not ignored)", differs_from_words > 0);
        cJSON_Delete(o);
        cllm_free_buffer(text);
        cllm_tiktoken_free(&tk);
    }
    printf("-- mr --collabllm v1 and v2: each version's reward by its own formula, computed here by hand\n");
    {
        char counter[512];
        char *text = NULL;
        size_t len;
        cllm_err err;
        cllm_tiktoken tk;
        int version;
        snprintf(counter, sizeof counter, "%s/tmp_pipe_tiktoken/cl100k_base.tiktoken", build);
        check_true("the cl100k-named rank file loads", cllm_tiktoken_load(&tk, counter, NULL, &err) == CLLM_OK);
        for (version = 1; version <= 2; version++) {
            cJSON *o;
            const cJSON *c;
            int samples = 0, exact = 0;
            snprintf(cmd, sizeof cmd, "%s/collabllm mr --input data_fmt/mr.example.jsonl --user-model user "
                     "--assistant-model assistant --judge-model judge --base-url http://127.0.0.1:%d/v1 --collabllm v%d "
                     "--preset math --token-counter %s > %s/tmp_pipe_mr_v%d.jsonl", build, srv.port, version, counter,
                     build, version);
            check_true(version == 1 ? "mr --collabllm v1 exits 0" : "mr --collabllm v2 exits 0", system(cmd) == 0);
            snprintf(path, sizeof path, "%s/tmp_pipe_mr_v%d.jsonl", build, version);
            text = NULL;
            cllm_read_file(path, &text, &len, &err);
            o = text ? cJSON_Parse(text) : NULL;
            cJSON_ArrayForEach(c, cJSON_GetObjectItem(o, "candidates")) {
                const cJSON *sessions = cJSON_GetObjectItem(c, "sessions");
                const cJSON *mr = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "rewards"), "MR");
                int k;
                for (k = 0; k < cJSON_GetArraySize(sessions); k++) {
                    const cJSON *session = cJSON_GetArrayItem(sessions, k);
                    char forward[4096] = "", assistant[4096] = "";
                    int t, asked = 0, right = 0;
                    double want;
                    for (t = 0; t < cJSON_GetArraySize(session); t++) {
                        const cJSON *msg = cJSON_GetArrayItem(session, t);
                        const char *content = cJSON_GetObjectItem(msg, "content")->valuestring;
                        int is_assistant = !strcmp(cJSON_GetObjectItem(msg, "role")->valuestring, "assistant");
                        if (t > 1) strncat(forward, "\n", sizeof forward - strlen(forward) - 1);
                        if (t >= 1) strncat(forward, content, sizeof forward - strlen(forward) - 1);
                        if (is_assistant && assistant[0]) strncat(assistant, " ", sizeof assistant - strlen(assistant) - 1);
                        if (is_assistant) strncat(assistant, content, sizeof assistant - strlen(assistant) - 1);
                        asked |= is_assistant && !strcmp(content, "what size ?");
                        right |= is_assistant && !strcmp(content, "one large coffee");
                    }
                    /* the mock's judges: v1's x = 3 when the follow-up asks, else 1; v2's interactivity 1 or 0;
                       accuracy 1 when the order is right */
                    if (version == 1)   /* v1: a x/3 + b T - min(lambda N, 1), N = cl100k("\n".join(forward)) */
                        want = (asked ? 3 : 1) / 3.0 + right - fmin(5e-4 * cllm_tiktoken_count(&tk, forward), 1);
                    else                /* v2: accuracy + 0.5 interactivity - 0.5 cl100k(" ".join(assistant)) / 1000 */
                        want = right + 0.5 * asked - 0.5 * cllm_tiktoken_count(&tk, assistant) / 1000.0;
                    samples++;
                    exact += fabs(cJSON_GetArrayItem(mr, k)->valuedouble - want) < 1e-12;
                }
            }
            printf("  v%d: %d of %d futures scored exactly by the formula\n", version, exact, samples);
            check_true(version == 1 ? "v1: R* = x/3 + accuracy - min(5e-4 N, 1) on every future (6 of 6)"
                                    : "v2: R* = accuracy + 0.5 interactivity - 0.5 tokens/1000 on every future (6 of 6)",
                       samples == 6 && exact == samples);
            cJSON_Delete(o);
            cllm_free_buffer(text);
        }
        cllm_tiktoken_free(&tk);
    }

    printf("-- generate-data --collabllm: the run's settings (its sidecar) hold the version's values\n");
    {
        /* flag, v1 math, v2 document (data_fmt/fidelity.md; null: collabllm.h's default) */
        static const char *const want[][3] = {
            { "--variant", "paper", "weighted" },
            { "--metrics", "accuracy:1,interactivity_v1:1", "bleu:1,token_amount:-0.1" },
            { "--max-turns", "6", "7" },
            { "--assistant-temperature", "0.6", "0.9" },
            { "--assistant-max-tokens", "1536", "2048" },
            { "--user-max-tokens", "4096", "1024" },
            { "--proactive-ratio", "0.5", "0.5" },
        };
        int version;
        for (version = 1; version <= 2; version++) {
            char *text = NULL;
            size_t len;
            cllm_err err;
            cJSON *meta, *settings;
            int ok = 1;
            size_t k;
            snprintf(cmd, sizeof cmd, "%s/collabllm generate-data --tasks %s/tmp_pipe_tasks.jsonl --out "
                     "%s/tmp_pipe_mode_records.jsonl --overwrite --user-model user --assistant-model assistant "
                     "--judge-model judge --base-url http://127.0.0.1:%d/v1 --collabllm v%d --preset %s --limit 1 "
                     "--token-counter %s/tmp_pipe_tiktoken/cl100k_base.tiktoken 2>/dev/null", build, build, build,
                     srv.port, version, version == 1 ? "math" : "document", build);
            system(cmd);           /* the run itself may fail on the mock's answers: its settings are what count */
            snprintf(path, sizeof path, "%s/tmp_pipe_mode_records.jsonl.meta.json", build);
            cllm_read_file(path, &text, &len, &err);
            meta = text ? cJSON_Parse(text) : NULL;
            settings = cJSON_GetObjectItem(meta, "settings");
            for (k = 0; k < sizeof want / sizeof want[0]; k++) {
                const cJSON *v = cJSON_GetObjectItem(settings, want[k][0]);
                char got[256];
                if (cJSON_IsString(v)) snprintf(got, sizeof got, "%s", v->valuestring);
                else if (cJSON_IsNumber(v)) snprintf(got, sizeof got, "%g", v->valuedouble);
                else snprintf(got, sizeof got, "null");
                if (strcmp(got, want[k][version]) != 0) {
                    printf("    %s: %s, expected %s\n", want[k][0], got, want[k][version]);
                    ok = 0;
                }
            }
            check_true(version == 1 ? "v1 (math): variant, metrics, turns, candidate and simulator sampling"
                                    : "v2 (document): variant, metrics, turns, candidate and simulator sampling",
                       settings && ok);
            cJSON_Delete(meta);
            cllm_free_buffer(text);
        }
    }

    printf("-- build-pairs --collabllm: v1's math gap and rules, v2's; an explicit flag still wins\n");
    {
        static const char *const runs[][2] = {
            { "--collabllm v1 --preset math", "min gap 0.05, v1 rules" },
            { "--collabllm v1 --preset code", "min gap 0.02, v1 rules" },
            { "--collabllm v2 --preset math", "min gap 0.02, v2 rules" },
            { "--collabllm v1 --preset math --rules v2 --min-gap 0.1", "min gap 0.1, v2 rules" },
        };
        for (i = 0; i < 4; i++) {
            char *text = NULL;
            size_t len;
            cllm_err err;
            char label[200];
            snprintf(cmd, sizeof cmd, "%s/collabllm build-pairs --records %s/tmp_pipe_records.jsonl --dpo "
                     "%s/tmp_pipe_mode_pairs.jsonl --overwrite %s 2> %s/tmp_pipe_mode.txt", build, build, build,
                     runs[i][0], build);
            snprintf(label, sizeof label, "build-pairs %s: exit 0, \"%s\"", runs[i][0], runs[i][1]);
            snprintf(path, sizeof path, "%s/tmp_pipe_mode.txt", build);
            check_true(label, system(cmd) == 0 && cllm_read_file(path, &text, &len, &err) == CLLM_OK &&
                              strstr(text, runs[i][1]) != NULL);
            cllm_free_buffer(text);
        }
    }
    mock_stop(&srv);
    return check_summary("test_pipeline_cli");
}
