/* test_doc_pipeline.c - the README's CollabLLM pipeline (the ```sh block that runs
   `build/collabllm generate-data`, `build-pairs`, `sft`, `dpo`, `online-dpo` and `eval`) runs as
   written, end to end. The block is cut out of README.md as it stands and run by sh -e in a
   directory of its own, with two substitutions: the model directory M becomes a tiny chat model
   (tests/data/train/tiny_qwen2 with the qwen2_style tokenizer and template), and the endpoint
   ($OPENAI_BASE_URL) is the loopback OpenAI-compatible server, playing gpt-4o-mini: the user
   simulator asks "what is 2 + 2?" and ends the chat after one answer; the judges answer as the
   built-in judge prompts ask. Checked: the block exits 0, and every file it names is written
   (records, SFT rows, DPO pairs, the models of sft, dpo and online-dpo, the evaluation). */
#include "mock_openai.c"
#include "../collabllm.h"
#include "check.h"

static void handler(void *ctx, const mock_request *req, mock_response *resp) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req->json, "messages");
    const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(last, "content");
    const char *content = cJSON_IsString(text) ? text->valuestring : "";
    (void)ctx;
    if (strcmp(req->model, "gpt-4o-mini") != 0) resp->status = 404;
    else if (strstr(content, "=== GROUND TRUTH START ==="))
        resp->content = mock_strdup("{\"thought\": \"it says 4\", \"accuracy\": 1}");
    else if (strstr(content, "Judge how interactive"))
        resp->content = mock_strdup("{\"thought\": \"fine\", \"interactivity\": 0.5}");
    else if (strstr(content, "(no messages yet)"))
        resp->content = mock_strdup("{\"current_answer\": \"\", \"thought\": \"ask\", \"response\": \"what is 2 + 2?\"}");
    else
        resp->content = mock_strdup("{\"current_answer\": \"4\", \"thought\": \"done\", \"response\": \"[[TERMINATE CHAT]]\"}");
}

/* The first ```sh block of README.md that runs `build/collabllm generate-data` (malloc'd). */
static char *pipeline_block(int *at_line) {
    char *readme = NULL, *p, *end, *block;
    size_t len = 0;
    int line = 1;
    if (cllm_read_file("README.md", &readme, &len, NULL) != CLLM_OK) return NULL;
    for (p = readme; (p = strstr(p, "```sh\n")) != NULL; p = end + 4) {
        const char *q;
        end = strstr(p + 6, "\n```");
        if (!end) break;
        *end = 0;
        if (strstr(p + 6, "build/collabllm generate-data")) {
            for (q = readme; q < p; q++) line += *q == '\n';
            *at_line = line;
            block = (char *)malloc(strlen(p + 6) + 1);
            if (block) strcpy(block, p + 6);
            cllm_free_buffer(readme);
            return block;
        }
        *end = '\n';
    }
    cllm_free_buffer(readme);
    return NULL;
}

/* Does dir/name exist with at least one byte in it? */
static int written(const char *dir, const char *name) {
    char path[1024];
    FILE *f;
    int c;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    c = f ? fgetc(f) : EOF;
    if (f) fclose(f);
    return c != EOF;
}

int main(void) {
    static const char *outputs[] = { "records.jsonl", "sft.jsonl", "pairs.jsonl", "sft-out/final/model.safetensors",
                                     "dpo-out/final/model.safetensors", "odpo-out/final/model.safetensors",
                                     "eval.jsonl", "eval.json" };
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char dir[512], cwd[1024], cmd[4096], url[4200], *block, *m, *config = NULL;
    const char *model_line = "M=path/to/Qwen2.5-0.5B-Instruct";
    size_t config_len = 0;
    mock_server srv;
    FILE *f;
    int at = 0, i, rc;
    (void)mock_last_user; (void)mock_reset_stats;

    block = pipeline_block(&at);
    check_true("README.md has the pipeline block (```sh with build/collabllm generate-data)", block != NULL);
    if (!block) return check_summary("test_doc_pipeline");
    printf("   README.md:%d\n", at);
    m = strstr(block, model_line);
    check_true("  it sets the model directory with M=path/to/Qwen2.5-0.5B-Instruct", m != NULL);
    if (!m) return check_summary("test_doc_pipeline");
    memcpy(m, "M=model                         ", strlen(model_line));   /* same length: the rest stays */

    /* the working directory: the tiny chat model, task files, and build/ pointing at this build */
    if (!getcwd(cwd, sizeof cwd) || mock_start(&srv, handler, NULL) != 0) { printf("cannot set up\n"); return 1; }
    snprintf(dir, sizeof dir, "%s/doc_pipeline", build);
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s/model && ln -s %s/%s %s/build", dir, dir, cwd, build, dir);
    check_true("working directory", system(cmd) == 0);
    /* the tiny model's context (512) is shorter than the replies the README allows (1024 tokens) */
    snprintf(cmd, sizeof cmd, "%s/model", dir);
    {
        const char *key = "\"max_position_embeddings\": 512";
        char *pos, *bigger;
        int ok = cllm_read_file("tests/data/train/tiny_qwen2/config.json", &config, &config_len, NULL) == CLLM_OK &&
                 (pos = strstr(config, key)) != NULL;
        bigger = ok ? (char *)malloc(config_len + 16) : NULL;
        if (bigger) {
            snprintf(bigger, config_len + 16, "%.*s\"max_position_embeddings\": 8192%s", (int)(pos - config), config,
                     pos + strlen(key));
            snprintf(url, sizeof url, "%s/config.json", cmd);
            ok = cllm_write_file_atomic(url, bigger, strlen(bigger), NULL) == CLLM_OK;
        }
        free(bigger);
        check_true("model directory", bigger && ok && check_copy_file("tests/data/train/tiny_qwen2", cmd, "model.safetensors") &&
                   check_copy_file("tests/data/tokenizers/qwen2_style", cmd, "tokenizer.json") &&
                   check_copy_file("tests/data/tokenizers/qwen2_style", cmd, "tokenizer_config.json"));
    }
    cllm_free_buffer(config);
    for (i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "%s/%s.jsonl", dir, i ? "test" : "train");
        f = fopen(cmd, "wb");
        if (f) {
            fputs("{\"single_turn_prompt\": \"What is 2 + 2?\", \"single_turn_completion\": \"4\"}\n"
                  "{\"single_turn_prompt\": \"What is 3 + 4?\", \"single_turn_completion\": \"7\"}\n", f);
            fclose(f);
        }
    }
    snprintf(cmd, sizeof cmd, "%s/pipeline.sh", dir);
    f = fopen(cmd, "wb");
    if (f) { fputs(block, f); fclose(f); }
    free(block);

    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", srv.port);
    setenv("OPENAI_BASE_URL", url, 1);
    snprintf(cmd, sizeof cmd, "cd %s && sh -e -x pipeline.sh > pipeline.log 2>&1", dir);
    printf("$ %s   (OPENAI_BASE_URL=%s)\n", cmd, url);
    fflush(stdout);
    rc = system(cmd);
    check_true("the block runs to the end and exits 0", rc == 0);
    if (rc != 0) {
        snprintf(cmd, sizeof cmd, "tail -25 %s/pipeline.log | sed 's/^/       /'", dir);
        if (system(cmd) != 0) printf("       (no log)\n");
    }
    for (i = 0; i < (int)(sizeof outputs / sizeof outputs[0]); i++) {
        char label[256];
        snprintf(label, sizeof label, "  it wrote %s", outputs[i]);
        check_true(label, written(dir, outputs[i]));
    }
    mock_stop(&srv);
    return check_summary("test_doc_pipeline");
}
