/* test_online_cli.c - `collabllm online-dpo`, `ppo` and `grpo` end to end, each run as its own
   process for two steps on the tiny chat model of tests/data (tiny_qwen2 + the qwen2_style
   tokenizer) with the loopback OpenAI-compatible server as the user simulator. The server opens
   with "i want a coffee" and ends the chat after any reply; the reward is the weighted-sum MR of
   token_amount (-1 per thousand policy tokens), so answers of different lengths score
   differently. Checked: exit codes, the outputs each method writes (final model, metrics with the
   method's statistics, the value head in PPO's checkpoints, the cached openings of --tasks),
   data_fmt/train_prompts.example.jsonl read by --prompts, a PPO run stopped after one step and
   resumed logging the losses of an uninterrupted run, and bad flags refused. */
#include "mock_openai.c"
#include "../collabllm.h"
#include "check.h"
#include <sys/wait.h>

static void handler(void *ctx, const mock_request *req, mock_response *resp) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req->json, "messages");
    const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    const char *content = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(last, "content")) ? cJSON_GetObjectItemCaseSensitive(last, "content")->valuestring : "";
    (void)ctx;
    if (strcmp(req->model, "user") != 0) { resp->status = 404; return; }
    if (strstr(content, "(no messages yet)")) resp->content = mock_strdup("{\"current_answer\": \"\", \"thought\": \"start\", \"response\": \"i want a coffee\"}");
    else resp->content = mock_strdup("{\"current_answer\": \"done\", \"thought\": \"ok\", \"response\": \"thanks [[TERMINATE CHAT]]\"}");
}

static int run(const char *cmd) {
    printf("$ %s\n", cmd);
    fflush(stdout);
    return system(cmd);
}

/* Number of lines of a file that contain every one of the given keys (NULL-terminated). */
static int lines_with(const char *path, const char *const *keys) {
    FILE *f = fopen(path, "rb");
    char line[1 << 14];
    int n = 0, k, ok;
    while (f && fgets(line, sizeof line, f)) {
        for (k = 0, ok = 1; keys[k]; k++) ok &= strstr(line, keys[k]) != NULL;
        n += ok;
    }
    if (f) fclose(f);
    return n;
}

static int exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* The "loss" values of a metrics file, in order, as one string. */
static void losses(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "rb");
    char line[1 << 14];
    size_t n = 0;
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"loss\":");
        const char *e = p ? strchr(p, ',') : NULL;
        if (p && e && n + (size_t)(e - p) + 2 < cap) { memcpy(out + n, p, (size_t)(e - p)); n += (size_t)(e - p); out[n++] = ';'; out[n] = 0; }
    }
    if (f) fclose(f);
}

int main(void) {
    mock_server srv;
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[16384], common[1024], dir[512], path[1024], a[2048], b[2048];
    FILE *f;
    (void)mock_last_user; (void)mock_reset_stats;
    if (mock_start(&srv, handler, NULL) != 0) { printf("cannot start the mock server\n"); return 1; }
    /* a chat model directory: the tiny model with the tokenizer and its template */
    snprintf(dir, sizeof dir, "%s/tmp_ocli_model", build);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s/tmp_ocli_*.out; mkdir -p %s", dir, build, dir);
    system(cmd);
    check_true("model directory", check_copy_file("tests/data/train/tiny_qwen2", dir, "config.json") &&
               check_copy_file("tests/data/train/tiny_qwen2", dir, "model.safetensors") &&
               check_copy_file("tests/data/tokenizers/qwen2_style", dir, "tokenizer.json") &&
               check_copy_file("tests/data/tokenizers/qwen2_style", dir, "tokenizer_config.json"));
    snprintf(path, sizeof path, "%s/tmp_ocli_tasks.jsonl", build);
    f = fopen(path, "wb");
    fputs("{\"single_turn_prompt\": \"order a large coffee\", \"single_turn_completion\": \"one large coffee\"}\n"
          "{\"single_turn_prompt\": \"order a small tea\", \"single_turn_completion\": \"one small tea\"}\n"
          "{\"single_turn_prompt\": \"order a cake\", \"single_turn_completion\": \"one cake\"}\n", f);
    fclose(f);
    snprintf(common, sizeof common, "--model %s --user-model user --base-url http://127.0.0.1:%d/v1 --retries 0 "
             "--metrics token_amount:-1 --variant weighted --window 1 --samples 2 --max-new-tokens 6 --assistant-max-tokens 4 "
             "--max-steps 2 --batch-size 2 --lr 1e-3 --seed 3 --quiet", dir, srv.port);

    printf("-- online-dpo (with RPO) on data_fmt/train_prompts.example.jsonl\n");
    snprintf(cmd, sizeof cmd, "%s/collabllm online-dpo %s --prompts data_fmt/train_prompts.example.jsonl --out %s/tmp_ocli_odpo.out --rpo-alpha 0.5 2>%s/tmp_ocli_err",
             build, common, build, build);
    check_true("online-dpo exits 0", run(cmd) == 0);
    {
        static const char *keys[] = { "\"loss\"", "\"rewards/chosen\"", "\"rewards/margins\"", "\"objective/kl_response\"", "\"reward\"", "\"mr/chosen\"", "\"mr/rejected\"", "\"mr/failed\":0", "\"nll_loss\"", NULL };
        snprintf(path, sizeof path, "%s/tmp_ocli_odpo.out/metrics.jsonl", build);
        check_true("  2 metrics lines with TRL's DPO statistics, the MR of chosen / rejected and RPO's nll_loss", lines_with(path, keys) == 2);
        snprintf(path, sizeof path, "%s/tmp_ocli_odpo.out/final/model.safetensors", build);
        check_true("  the final model", exists(path));
    }

    printf("-- ppo on a task file (openings simulated once into OUT/prompts.jsonl)\n");
    snprintf(cmd, sizeof cmd, "%s/collabllm ppo %s --tasks %s/tmp_ocli_tasks.jsonl --out %s/tmp_ocli_ppo.out --ppo-epochs 2 --mini-batches 2 "
             "--kl-estimator k3 --pad-is-eos --score-scaling scale --kl-coef 0.2 --kl-target 6 --kl-horizon 10 --save-every 1 2>>%s/tmp_ocli_err", build, common, build, build, build);
    check_true("ppo exits 0", run(cmd) == 0);
    {
        static const char *keys[] = { "\"objective/kl\"", "\"objective/kl_coef\"", "\"objective/score_running_std\"", "\"objective/scores\"", "\"loss/policy_avg\"", "\"loss/value_avg\"", "\"policy/approxkl_avg\"", "\"val/clipfrac_avg\"", "\"policy/entropy_avg\"", "\"policy/entropy_response_avg\"", "\"val/num_eos_tokens\"", "\"rollout/logprob_diff\"", NULL };
        static const char *opening[] = { "\"prompt\":[{\"role\":\"user\",\"content\":\"i want a coffee\"}]", NULL };
        snprintf(path, sizeof path, "%s/tmp_ocli_ppo.out/metrics.jsonl", build);
        check_true("  2 metrics lines with TRL's PPO statistics (legacy score scaling and adaptive KL on)", lines_with(path, keys) == 2);
        snprintf(path, sizeof path, "%s/tmp_ocli_ppo.out/prompts.jsonl", build);
        check_true("  OUT/prompts.jsonl: one prompt per task, the simulator's opening", lines_with(path, opening) == 3);
        snprintf(path, sizeof path, "%s/tmp_ocli_ppo.out/ckpt-1/value_head.safetensors", build);
        check_true("  every checkpoint holds the value head", exists(path) && (snprintf(path, sizeof path, "%s/tmp_ocli_ppo.out/ckpt-2/value_head.safetensors", build), exists(path)));
    }
    snprintf(cmd, sizeof cmd, "%s/collabllm ppo %s --tasks %s/tmp_ocli_tasks.jsonl --out %s/tmp_ocli_ppo2.out --ppo-epochs 2 --mini-batches 2 "
             "--kl-estimator k3 --pad-is-eos --score-scaling scale --kl-coef 0.2 --kl-target 6 --kl-horizon 10 --save-every 1 --stop-after 1 2>>%s/tmp_ocli_err && "
             "%s/collabllm ppo %s --tasks %s/tmp_ocli_tasks.jsonl --out %s/tmp_ocli_ppo2.out --ppo-epochs 2 --mini-batches 2 "
             "--kl-estimator k3 --pad-is-eos --score-scaling scale --kl-coef 0.2 --kl-target 6 --kl-horizon 10 --save-every 1 --resume 2>>%s/tmp_ocli_err",
             build, common, build, build, build, build, common, build, build, build);
    check_true("ppo --stop-after 1, then --resume, exits 0", run(cmd) == 0);
    snprintf(path, sizeof path, "%s/tmp_ocli_ppo.out/metrics.jsonl", build);
    losses(path, a, sizeof a);
    snprintf(path, sizeof path, "%s/tmp_ocli_ppo2.out/metrics.jsonl", build);
    losses(path, b, sizeof b);
    printf("   losses: %s | %s\n", a, b);
    check_true("  the resumed run logs the uninterrupted run's losses", a[0] && strcmp(a, b) == 0);
    snprintf(a, sizeof a, "%s/tmp_ocli_ppo.out/final/model.safetensors", build);
    snprintf(b, sizeof b, "%s/tmp_ocli_ppo2.out/final/model.safetensors", build);
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", a, b);
    check_true("  and ends with identical weights", run(cmd) == 0);

    printf("-- grpo with a reference (beta 0.04) and LoRA\n");
    snprintf(cmd, sizeof cmd, "%s/collabllm grpo %s --prompts data_fmt/train_prompts.example.jsonl --out %s/tmp_ocli_grpo.out --num-generations 3 "
             "--beta 0.04 --loss dr_grpo --lora-r 2 2>>%s/tmp_ocli_err", build, common, build, build);
    check_true("grpo exits 0", run(cmd) == 0);
    {
        static const char *keys[] = { "\"reward\"", "\"reward_std\"", "\"frac_reward_zero_std\"", "\"completions/mean_length\"", "\"kl\"", "\"clip_ratio/region_mean\"", NULL };
        snprintf(path, sizeof path, "%s/tmp_ocli_grpo.out/metrics.jsonl", build);
        check_true("  2 metrics lines with TRL's GRPO statistics", lines_with(path, keys) == 2);
        snprintf(path, sizeof path, "%s/tmp_ocli_grpo.out/adapter/adapter_model.safetensors", build);
        check_true("  the PEFT adapter and the merged model", exists(path) && (snprintf(path, sizeof path, "%s/tmp_ocli_grpo.out/final/model.safetensors", build), exists(path)));
    }
    snprintf(path, sizeof path, "%s/tmp_ocli_err", build);
    {
        static const char *err_keys[] = { "error", NULL };
        check_true("no run printed an error", lines_with(path, err_keys) == 0);
    }

    printf("-- bad flags\n");
    snprintf(cmd, sizeof cmd, "%s/collabllm ppo %s --prompts data_fmt/train_prompts.example.jsonl --out %s/tmp_ocli_x.out --kl-estimator k2 2>/dev/null", build, common, build);
    check_true("ppo --kl-estimator k2 exits 2", WEXITSTATUS(run(cmd)) == 2);
    snprintf(cmd, sizeof cmd, "%s/collabllm ppo %s --prompts data_fmt/train_prompts.example.jsonl --out %s/tmp_ocli_x.out --score-scaling mean 2>/dev/null", build, common, build);
    check_true("ppo --score-scaling mean exits 2", WEXITSTATUS(run(cmd)) == 2);
    snprintf(cmd, sizeof cmd, "%s/collabllm grpo %s --out %s/tmp_ocli_x.out 2>/dev/null", build, common, build);
    check_true("grpo without --prompts or --tasks exits 2", WEXITSTATUS(run(cmd)) == 2);
    snprintf(cmd, sizeof cmd, "%s/collabllm online-dpo %s --prompts data_fmt/train_prompts.example.jsonl --out %s/tmp_ocli_x.out --temperature 0 2>/dev/null", build, common, build);
    check_true("online-dpo --temperature 0 (greedy) exits 2", WEXITSTATUS(run(cmd)) == 2);
    mock_stop(&srv);
    return check_summary("test_online_cli");
}
