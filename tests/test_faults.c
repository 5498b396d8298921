/* test_faults.c - faults survived with nothing lost.
   - Data generation with an LLM user simulator on the loopback mock (tests/mock_openai.c) that
     answers with garbage: once per prompt (re-asked, the records equal a clean run's), or always
     for one task (the run fails naming the unusable answer; the records file keeps only whole
     conversations of the other tasks; a rerun with a working simulator completes them with no
     duplicate and no loss).
   - Data generation killed with SIGKILL at several points (a child process stopping itself
     after the k-th simulator call): each rerun ends with exactly the clean run's records.
   - A training run saving a checkpoint every step, killed with SIGKILL at a random moment after
     its first save (some kills land inside a save), resumed and killed again, 12 times:
     `latest` always names a checkpoint that loads (weights, optimizer state, trainer state),
     and the last one resumes.
   Children are this program re-executed (--datagen-child, --saver): a fork of a process with
   threads (the mock server, OpenMP) must not go on using them. */
#include "mock_openai.c"
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <signal.h>
#include <sys/wait.h>

/* ---- a user simulator on the mock, and scripted assistants --------------------------------- */

/* The simulator's prompt template (cllm_llm_sim_config.prompt): the goal, then the history. */
static const char *SIM_PROMPT = "GOAL: {{goal}}\nHISTORY:\n{{history}}\nEND";

/* A good answer: opens with the drink of the goal, says "large please" after a question, ends
   the chat after an answer. */
static char *sim_answer(const char *prompt) {
    const char *last = prompt, *p;
    char *out = (char *)malloc(256);
    while ((p = strstr(last, "**Assistant**:")) != NULL) last = p + 14;
    if (last == prompt) snprintf(out, 256, "{\"thought\": \"open\", \"response\": \"i want a %s\"}", strstr(prompt, "tea") ? "tea" : "coffee");
    else if (memchr(last, '?', strcspn(last, "\n"))) snprintf(out, 256, "{\"thought\": \"size\", \"response\": \"large please\"}");
    else snprintf(out, 256, "{\"thought\": \"done\", \"response\": \"[[TERMINATE CHAT]]\"}");
    return out;
}

/* Garbage of several kinds, picked by n. */
static char *garbage(int n) {
    static const char *kinds[] = {
        "\xff\xfe\x01 binary \x7f junk", "{\"thought\": \"cut off\", \"response\": \"i wa", "", "[\"an\", \"array\"]",
        "{\"thought\": \"no response key\"}", "{\"response\": 42}", "<html>502 Bad Gateway</html>", "```json\n{'response': }\n```" };
    return mock_strdup(kinds[n % (int)(sizeof kinds / sizeof kinds[0])]);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char *seen[4096];
static int n_seen, n_garbage;
static int first_time(const char *prompt) {
    int i, first = 1;
    pthread_mutex_lock(&mu);
    for (i = 0; i < n_seen && first; i++) first = strcmp(seen[i], prompt) != 0;
    if (first && n_seen < 4096) seen[n_seen++] = mock_strdup(prompt);
    pthread_mutex_unlock(&mu);
    return first;
}

static void handler(void *ctx, const mock_request *q, mock_response *r) {
    const char *prompt = mock_last_user(q);
    (void)ctx;
    if (!strcmp(q->model, "sim-good")) r->content = sim_answer(prompt);
    else if (!strcmp(q->model, "sim-garbage-once") || (!strcmp(q->model, "sim-garbage-tea") && strstr(prompt, "tea"))) {
        if (!strcmp(q->model, "sim-garbage-tea") || first_time(prompt)) {
            pthread_mutex_lock(&mu);
            r->content = garbage(n_garbage++);
            pthread_mutex_unlock(&mu);
        } else r->content = sim_answer(prompt);
    } else if (!strcmp(q->model, "sim-garbage-tea")) r->content = sim_answer(prompt);
    else { r->status = 400; r->body = mock_strdup("{\"error\": {\"message\": \"unknown test model\"}}"); }
}

/* asks first; the second candidate guesses small; answers after "large please" */
static cllm_result asst_batch(void *ctx, const cllm_conv *h, int n, cllm_reply *out) {
    int i, k, large = 0;
    const char *drink = strstr(h->msgs[0].content, "tea") ? "tea" : "coffee";
    char text[64];
    (void)ctx;
    for (k = 0; k < h->n; k++) large |= strstr(h->msgs[k].content, "large please") != NULL;
    for (i = 0; i < n; i++) {
        if (large) snprintf(text, sizeof text, "one large %s", drink);
        else if (i % 2) snprintf(text, sizeof text, "one small %s", drink);
        else snprintf(text, sizeof text, "what size ?");
        cllm_reply_set(&out[i], text, 0);
    }
    return CLLM_OK;
}
static cllm_result asst_reply(void *ctx, const cllm_conv *h, cllm_reply *out) { return asst_batch(ctx, h, 1, out); }

static cllm_task tasks[4];
static cllm_metric metrics[1];
static void setup(cllm_datagen_config *cfg) {
    static const char *prompts[4] = { "order a large coffee", "order a large tea", "order a large coffee please", "order a large tea please" };
    static const char *answers[4] = { "one large coffee", "one large tea", "one large coffee", "one large tea" };
    cllm_err err;
    int i;
    for (i = 0; i < 4; i++) {
        char line[256];
        snprintf(line, sizeof line, "{\"single_turn_prompt\": \"%s\", \"single_turn_completion\": \"%s\"}", prompts[i], answers[i]);
        if (!tasks[i].json) tasks[i].json = cJSON_Parse(line);
        tasks[i].prompt = cJSON_GetObjectItem(tasks[i].json, "single_turn_prompt")->valuestring;
        tasks[i].completion = cJSON_GetObjectItem(tasks[i].json, "single_turn_completion")->valuestring;
    }
    memset(metrics, 0, sizeof metrics);
    cllm_metric_builtin("exact_match", &metrics[0], &err);
    metrics[0].weight = 1;
    memset(cfg, 0, sizeof *cfg);
    cllm_mr_config_init(&cfg->mr, CLLM_MR_PRESET_MATH);
    cfg->mr.metrics = metrics; cfg->mr.n_metrics = 1; cfg->mr.samples = 2;
    cfg->n_candidates = 2; cfg->task_desc = "ordering";
}

/* ---- records files ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The lines of a file, sorted, as one string; *n lines, *bad lines that are not JSON. */
static char *sorted_lines(const char *path, int *n, int *bad) {
    char *text = NULL, *p, **lines = NULL, *out;
    size_t len, total = 1;
    int i, k = 0;
    cllm_err err;
    *n = 0; *bad = 0;
    if (cllm_read_file(path, &text, &len, &err) != CLLM_OK) return calloc(1, 1);
    for (p = strtok(text, "\n"); p; p = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(p);
        *bad += o == NULL;
        cJSON_Delete(o);
        lines = (char **)realloc(lines, sizeof(char *) * (size_t)(k + 1));
        lines[k++] = p;
        total += strlen(p) + 1;
    }
    if (k) qsort(lines, (size_t)k, sizeof(char *), cmp_str);
    out = (char *)calloc(total, 1);
    for (i = 0; i < k; i++) { strcat(out, lines[i]); strcat(out, "\n"); }
    free(lines);
    cllm_free_buffer(text);
    *n = k;
    return out;
}

/* Per conversation id (0..3): rows present, and whether that equals the task_rows they state. */
static void conv_rows(const char *path, int rows[4], int complete[4]) {
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    int want[4] = { 0, 0, 0, 0 }, i;
    for (i = 0; i < 4; i++) rows[i] = 0;
    while (f && cllm_read_line(f, &line, &cap) >= 0) {
        cJSON *o = cJSON_Parse(line);
        int id = -1, tr = 0;
        if (o && cllm__json_int(o, "conv_id", -1, &id) && cllm__json_int(o, "task_rows", 0, &tr) && id >= 0 && id < 4) { rows[id]++; want[id] = tr; }
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    free(line);
    for (i = 0; i < 4; i++) complete[i] = rows[i] > 0 && rows[i] == want[i];
}

/* ---- data generation with a garbage-producing simulator ------------------------------------ */

static cllm_result run_llm_datagen(mock_server *srv, const char *model, const char *out, cllm_err *err) {
    cllm_client c;
    cllm_client_config cc;
    cllm_llm_sim sim;
    cllm_llm_sim_config sc;
    cllm_datagen_config cfg;
    cllm_assistant asst = { asst_reply, asst_batch, NULL };
    char url[64];
    cllm_result rc;
    memset(&cc, 0, sizeof cc);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", srv->port);
    cc.base_url = url;
    cc.backoff_ms = 10;
    if ((rc = cllm_client_init(&c, &cc, err)) != CLLM_OK) return rc;
    memset(&sc, 0, sizeof sc);
    sc.params.model = model;
    sc.prompt = SIM_PROMPT;
    sc.max_parse_retries = 2;
    cllm_llm_sim_init(&sim, &c, &sc);
    setup(&cfg);
    rc = cllm_datagen_run(&cfg, &sim.sim, &asst, &asst, tasks, 4, out, err);
    cllm_client_free(&c);
    return rc;
}

static void test_garbage(char **clean, int *n_clean) {
    mock_server srv;
    cllm_err err;
    char *got;
    int n, bad, rows[4], complete[4], calls_clean, calls, before;
    cllm_result rc;
    printf("data generation with a simulator that returns garbage\n");
    if (mock_start(&srv, handler, NULL) != 0) { check_true("the mock server starts", 0); return; }
    remove("build/tmp_faults_clean.jsonl");
    rc = run_llm_datagen(&srv, "sim-good", "build/tmp_faults_clean.jsonl", &err);
    if (rc) printf("    %s\n", err.msg);
    *clean = sorted_lines("build/tmp_faults_clean.jsonl", n_clean, &bad);
    calls_clean = before = srv.requests;
    check_true("a clean run: 4 tasks x 2 turns x 2 candidates = 16 records", rc == CLLM_OK && *n_clean == 16 && bad == 0);

    remove("build/tmp_faults_once.jsonl");
    rc = run_llm_datagen(&srv, "sim-garbage-once", "build/tmp_faults_once.jsonl", &err);
    if (rc) printf("    %s\n", err.msg);
    got = sorted_lines("build/tmp_faults_once.jsonl", &n, &bad);
    calls = srv.requests - before;
    printf("    simulator calls: %d clean, %d with garbage first for every distinct prompt (%d garbage answers)\n", calls_clean, calls, n_garbage);
    check_true("garbage once per prompt: each re-asked once, the run succeeds with the clean run's records",
               rc == CLLM_OK && strcmp(got, *clean) == 0 && calls == calls_clean + n_garbage);
    free(got);

    remove("build/tmp_faults_tea.jsonl");
    rc = run_llm_datagen(&srv, "sim-garbage-tea", "build/tmp_faults_tea.jsonl", &err);
    printf("    -> %s\n", err.msg);
    check_true("garbage always for the tea tasks: the run fails, naming the simulator's unusable answer",
               rc == CLLM_ERR_FORMAT && strstr(err.msg, "user simulator sim-garbage-tea: no usable answer in 3 tries") != NULL);
    got = sorted_lines("build/tmp_faults_tea.jsonl", &n, &bad);
    conv_rows("build/tmp_faults_tea.jsonl", rows, complete);
    check_true("the records file holds the coffee conversations whole (4 rows each), nothing of the tea ones, every line JSON",
               bad == 0 && n == 8 && complete[0] && complete[2] && rows[1] == 0 && rows[3] == 0);
    free(got);
    rc = run_llm_datagen(&srv, "sim-good", "build/tmp_faults_tea.jsonl", &err);
    got = sorted_lines("build/tmp_faults_tea.jsonl", &n, &bad);
    check_true("a rerun with a working simulator: the clean run's records, no duplicate, no loss", rc == CLLM_OK && strcmp(got, *clean) == 0);
    free(got);
    mock_stop(&srv);
}

/* ---- data generation killed with SIGKILL --------------------------------------------------- */

static int user_calls, kill_after = -1;
static cllm_result user_turn(void *ctx, const cllm_goal *goal, const cllm_conv *h, cllm_reply *out) {
    char prompt[512];
    char *answer;
    cJSON *o;
    cllm_result rc;
    int i, n = 0;
    (void)ctx;
    if (++user_calls == kill_after) raise(SIGKILL);
    n += snprintf(prompt + n, sizeof prompt - (size_t)n, "GOAL: %s\nHISTORY:\n", goal->prompt);
    for (i = 0; i < h->n && n < (int)sizeof prompt - 64; i++)
        n += snprintf(prompt + n, sizeof prompt - (size_t)n, "%s: %.80s\n", strcmp(h->msgs[i].role, "user") ? "**Assistant**" : "**User**", h->msgs[i].content);
    answer = sim_answer(prompt);
    o = cJSON_Parse(answer);
    rc = cllm_reply_set(out, cJSON_GetObjectItem(o, "response")->valuestring, strstr(answer, "TERMINATE") != NULL);
    strcpy(out->meta.finish_reason, "stop");       /* as the mock's completions report it */
    cJSON_Delete(o);
    free(answer);
    return rc;
}

static cllm_result run_scripted_datagen(const char *out, cllm_err *err) {
    cllm_datagen_config cfg;
    cllm_user_sim user = { user_turn, NULL, NULL };
    cllm_assistant asst = { asst_reply, asst_batch, NULL };
    setup(&cfg);
    return cllm_datagen_run(&cfg, &user, &asst, &asst, tasks, 4, out, err);
}

static const char *argv0;

static void test_datagen_kill(const char *clean) {
    static const int points[] = { 3, 10, 17, 25, 31, 38 };
    char *got = NULL;
    int i, n, bad, total;
    cllm_err err;
    printf("data generation killed with SIGKILL, then resumed\n");
    remove("build/tmp_faults_ref.jsonl");
    user_calls = 0;
    check_true("a clean scripted run gives the same 16 records as the simulator on the mock",
               run_scripted_datagen("build/tmp_faults_ref.jsonl", &err) == CLLM_OK && (got = sorted_lines("build/tmp_faults_ref.jsonl", &n, &bad)) != NULL && strcmp(got, clean) == 0);
    free(got);
    total = user_calls;
    for (i = 0; i < (int)(sizeof points / sizeof points[0]); i++) {
        char label[200], k[16];
        int status = 0, rows_before, complete[4], rows[4], whole = 0, j;
        pid_t pid;
        remove("build/tmp_faults_kill.jsonl");
        snprintf(k, sizeof k, "%d", points[i]);
        fflush(stdout);
        pid = fork();
        if (pid == 0) { execl(argv0, argv0, "--datagen-child", k, "build/tmp_faults_kill.jsonl", (char *)NULL); _exit(127); }
        waitpid(pid, &status, 0);
        conv_rows("build/tmp_faults_kill.jsonl", rows, complete);
        for (j = 0, rows_before = 0; j < 4; j++) { rows_before += rows[j]; whole += complete[j]; }
        user_calls = 0;
        got = NULL;
        snprintf(label, sizeof label, "killed at simulator call %d of %d (%d rows, %d whole conversations on disk): the rerun ends with the clean records",
                 points[i], total, rows_before, whole);
        check_true(label, WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
                   run_scripted_datagen("build/tmp_faults_kill.jsonl", &err) == CLLM_OK &&
                   (got = sorted_lines("build/tmp_faults_kill.jsonl", &n, &bad)) != NULL && strcmp(got, clean) == 0);
        free(got);
    }
}

/* ---- a checkpoint save killed with SIGKILL ------------------------------------------------- */

static const char *TOK = "tests/data/tokenizers/qwen2_style";
static const char *TINY = "tests/data/train/tiny_qwen2";
#define CKPT_OUT "build/tmp_faults_ckpt"

static void train_config(cllm_train_config *c, int resume, long stop_after) {
    memset(c, 0, sizeof *c);
    c->lr = 1e-3; c->batch_size = 2; c->max_steps = 1000000; c->stop_after = stop_after;
    c->save_every = 1; c->keep_last = 2; c->out_dir = CKPT_OUT; c->quiet = 1; c->resume = resume;
    c->model_dir = TINY; c->tokenizer_dir = TOK;
}

/* SFT on the example rows, a checkpoint after every step; resume: continue from latest;
   stop_after: end after that many steps (0: run until killed). */
static cllm_result train(int resume, long stop_after, cllm_err *err) {
    cllm_tokenizer tok;
    cllm_sft_data sft;
    cllm_model m;
    cllm_train_config c;
    cllm_result rc;
    memset(&m, 0, sizeof m);
    memset(&sft, 0, sizeof sft);
    train_config(&c, resume, stop_after);
    if ((rc = cllm_tokenizer_load(&tok, TOK, err)) != CLLM_OK) return rc;
    if ((rc = cllm_sft_data_load(&sft, &tok, "data_fmt/train_sft.example.jsonl", 0, err)) == CLLM_OK &&
        (rc = cllm_model_load(&m, TINY, err)) == CLLM_OK)
        rc = cllm_train_sft(&m, NULL, &sft, &c, err);
    cllm_model_free(&m);
    cllm_sft_data_free(&sft);
    cllm_tokenizer_free(&tok);
    return rc;
}

/* Is there a ckpt-*.tmp directory in CKPT_OUT (a save that was interrupted)? */
static int interrupted_save(void) {
    DIR *d = opendir(CKPT_OUT);
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d)) != NULL) { size_t n = strlen(e->d_name); found |= n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0; }
    if (d) closedir(d);
    return found;
}

static void test_checkpoint_kill(void) {
    cllm_rng rng;
    int i, loadable = 0, kills = 0, in_save = 0;
    cllm_err err;
    printf("a training run saving every step, killed with SIGKILL at random moments\n");
    cllm__remove_dir(CKPT_OUT, NULL);
    cllm_rng_seed(&rng, 9);
    for (i = 0; i < 12; i++) {
        int status = 0, ok;
        long step;
        char dir[256];
        cllm_model m;
        pid_t pid;
        long prev = cllm__latest_step(CKPT_OUT), waited;
        struct timespec ts;
        fflush(stdout);
        pid = fork();
        if (pid == 0) { execl(argv0, argv0, "--saver", (char *)NULL); _exit(127); }
        /* once this run has saved a checkpoint of its own (at most 20 s), 0..150 ms more */
        ts.tv_sec = 0; ts.tv_nsec = 2000000;
        for (waited = 0; waited < 10000 && cllm__latest_step(CKPT_OUT) <= prev; waited++) nanosleep(&ts, NULL);
        ts.tv_nsec = (long)(cllm_rng_uniform(&rng) * 150e6);
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        kills += WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        in_save += interrupted_save();
        step = cllm__latest_step(CKPT_OUT);
        snprintf(dir, sizeof dir, CKPT_OUT "/ckpt-%ld", step);
        ok = cllm_model_load(&m, dir, &err) == CLLM_OK;
        if (!ok) printf("    latest -> ckpt-%ld does not load: %s\n", step, err.msg);
        cllm_model_free(&m);
        if (ok) {
            cllm_safetensors st;
            char path[300], *text = NULL;
            size_t len;
            cJSON *state;
            snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
            ok = cllm_st_open(&st, path, &err) == CLLM_OK;
            cllm_st_close(&st);
            snprintf(path, sizeof path, "%s/trainer_state.json", dir);
            ok &= cllm_read_file(path, &text, &len, &err) == CLLM_OK;
            state = text ? cJSON_Parse(text) : NULL;
            ok &= cJSON_GetNumberValue(cJSON_GetObjectItem(state, "step")) == (double)step;
            cJSON_Delete(state);
            cllm_free_buffer(text);
        }
        loadable += ok;
    }
    printf("    %d kills, %d of them inside a save (a ckpt-N.tmp left behind); latest at step %ld\n", kills, in_save, cllm__latest_step(CKPT_OUT));
    check_true("every kill left `latest` naming a checkpoint whose weights, optimizer and trainer state load", kills == 12 && loadable == 12);
    {
        long step = cllm__latest_step(CKPT_OUT);
        cllm_result rc = train(1, 2, &err);
        if (rc) printf("    %s\n", err.msg);
        check_true("the last one resumes and trains two more steps", step >= 0 && rc == CLLM_OK && cllm__latest_step(CKPT_OUT) == step + 2);
    }
}

int main(int argc, char **argv) {
    char *clean = NULL;
    int n_clean = 0;
    cllm_err err;
    argv0 = argv[0];
    (void)mock_reset_stats;
    if (argc == 4 && !strcmp(argv[1], "--datagen-child")) {      /* dies at simulator call argv[2] */
        kill_after = atoi(argv[2]);
        run_scripted_datagen(argv[3], &err);
        return 3;
    }
    if (argc == 2 && !strcmp(argv[1], "--saver")) return train(1, 0, &err) == CLLM_OK ? 0 : 4;
    test_garbage(&clean, &n_clean);
    test_datagen_kill(clean);
    test_checkpoint_kill();
    free(clean);
    return check_summary("test_faults");
}
