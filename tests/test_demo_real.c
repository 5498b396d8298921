/* test_demo_real.c - the demo's real-model mode end to end: `cllm_demo --model DIR --tasks ...
   --user-model M --judge-model M` on a small Hugging Face directory (random weights, the
   committed SmolLM2-style tokenizer and ChatML template) against the loopback OpenAI-compatible
   server, which plays the user simulator and both judges. Checks that every stage ran through
   the API (simulator and judge calls), that LoRA training wrote its adapters, and that
   summary.json and table.txt hold every row with rates in [0, 1] (the under-/fully-specified
   split from the tasks' metadata). */
#include "mock_openai.c"
#include "../collabllm.h"
#include "check.h"

static int user_calls, judge_calls;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void handler(void *ctx, const mock_request *req, mock_response *resp) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req->json, "messages");
    const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(last, "content");
    const char *content = cJSON_IsString(c) ? c->valuestring : "";
    (void)ctx;
    pthread_mutex_lock(&mu);
    if (!strcmp(req->model, "user")) user_calls++;
    if (!strcmp(req->model, "judge")) judge_calls++;
    pthread_mutex_unlock(&mu);
    if (!strcmp(req->model, "user"))
        resp->content = mock_strdup(strstr(content, "(no messages yet)")
                                    ? "{\"current_answer\": \"\", \"thought\": \"start\", \"response\": \"i want a coffee\"}"
                                    : "{\"current_answer\": \"done\", \"thought\": \"enough\", \"response\": \"[[TERMINATE CHAT]]\"}");
    else if (!strcmp(req->model, "judge"))
        resp->content = mock_strdup(strstr(content, "\"accuracy\"") ? "{\"thought\": \"t\", \"accuracy\": 0}"
                                                                     : "{\"thought\": \"t\", \"interactivity\": 0.5}");
    else resp->status = 404;
}

int main(void) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char model[512], tasks[512], out[512], cmd[4096], file[600], *text = NULL;
    cllm_config c;
    cllm_model m;
    cllm_err err;
    mock_server srv;
    FILE *f;
    int i, ok;
    (void)mock_last_user; (void)mock_reset_stats;

    snprintf(model, sizeof model, "%s/tmp_demo_real_model", build);
    snprintf(tasks, sizeof tasks, "%s/tmp_demo_real_tasks.jsonl", build);
    snprintf(out, sizeof out, "%s/tmp_demo_real", build);
    memset(&c, 0, sizeof c);
    c.arch = CLLM_ARCH_LLAMA; c.vocab_size = 1459; c.hidden_size = 32; c.intermediate_size = 64; c.n_layers = 2;
    c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.rms_norm_eps = 1e-5f; c.rope_theta = 10000;
    c.tie_word_embeddings = 1; c.bos_token_id = -1; c.eos_token_ids[0] = 2; c.n_eos = 1;
    ok = cllm_model_init(&m, &c, 5, &err) == CLLM_OK && cllm_model_save(&m, model, CLLM_DT_F32, &err) == CLLM_OK &&
         check_copy_file("tests/data/tokenizers/smollm2", model, "tokenizer.json") &&
         check_copy_file("tests/data/tokenizers/smollm2", model, "tokenizer_config.json");
    cllm_model_free(&m);
    if (!check_true("a small HF model directory", ok)) return 1;
    f = fopen(tasks, "wb");
    for (i = 0; i < 6; i++)
        fprintf(f, "{\"single_turn_prompt\": \"order a large coffee %d\", \"single_turn_completion\": \"one large coffee\", "
                   "\"single_turn_metadata\": {\"underspecified\": %s}}\n", i, i % 2 ? "true" : "false");
    fclose(f);
    if (mock_start(&srv, handler, NULL) != 0) { printf("cannot start the mock server\n"); return 1; }

    snprintf(cmd, sizeof cmd, "rm -rf %s; OPENAI_API_KEY= %s/cllm_demo --model %s --tasks %s --test-tasks %s --user-model user "
             "--judge-model judge --base-url http://127.0.0.1:%d/v1 --limit 4 --task-desc ordering --out %s > %s.log 2>&1",
             out, build, model, tasks, tasks, srv.port, out, out);
    printf("$ %s\n", cmd);
    ok = system(cmd) == 0;
    if (!check_true("cllm_demo (real mode) exits 0", ok)) {
        snprintf(cmd, sizeof cmd, "tail -20 %s.log", out);
        if (system(cmd) != 0) printf("(no log)\n");
    }
    printf("  %d simulator calls, %d judge calls\n", user_calls, judge_calls);
    check_true("the simulator and the judges were called through the endpoint", user_calls > 0 && judge_calls > 0);
    {
        static const char *runs[] = { "dpo_w2_sft", "dpo_w2", "online_dpo", "ppo" };
        int k, all = 1;
        for (k = 0; k < 4; k++) {
            snprintf(file, sizeof file, "%s/%s/adapter/adapter_config.json", out, runs[k]);
            all &= (f = fopen(file, "rb")) != NULL;
            if (f) fclose(f);
        }
        check_true("the real mode trains LoRA adapters (SFT, offline DPO, online DPO, PPO)", all);
    }

    snprintf(file, sizeof file, "%s/summary.json", out);
    if (cllm_read_file(file, &text, NULL, &err) == CLLM_OK) {
        cJSON *o = cJSON_Parse(text), *rows = cJSON_GetObjectItem(o, "rows"), *r;
        static const char *keys[] = { "success", "success_underspecified", "success_specified", "clarify_rate",
                                      "unnecessary_question_rate" };
        int n = 0, good = 1, k;
        cJSON_ArrayForEach(r, rows) {
            n++;
            for (k = 0; k < 5; k++) {
                const cJSON *v = cJSON_GetObjectItem(r, keys[k]);
                good &= cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 1;
            }
            good &= cJSON_IsNumber(cJSON_GetObjectItem(r, "avg_tokens")) && cJSON_IsNumber(cJSON_GetObjectItem(r, "itr"));
        }
        printf("  summary.json: %d rows\n", n);
        check_true("summary.json: the five rows (base, w0_dpo, offline_dpo, online_dpo, ppo), every rate in [0, 1]", n == 5 && good);
        cJSON_Delete(o);
        cllm_free_buffer(text);
    } else check_true("summary.json written", 0);
    snprintf(file, sizeof file, "%s/table.txt", out);
    check_true("table.txt written", (f = fopen(file, "rb")) != NULL);
    if (f) fclose(f);
    mock_stop(&srv);
    return check_summary("test_demo_real");
}
