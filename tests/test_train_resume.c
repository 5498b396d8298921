/* test_train_resume.c - checkpoints and exact resumption of the training loop.
   - SFT: 8 steps in one go vs 3 steps (stop_after) + a resumed run: every logged loss, gradient
     norm and learning rate is identical, and so are the final weights, byte for byte.
   - a child process killed with SIGKILL after step 5 (checkpoints every 2 steps), with a torn
     ckpt-6.tmp left behind, resumes from ckpt-4 and ends identical to the uninterrupted run.
   - DPO with a frozen reference: the same exactness.
   - a NaN gradient stops the run with CLLM_ERR_NUMERIC naming the last good checkpoint, which
     stays `latest`; nothing is updated.
   - checkpoint layout and trainer_state.json fields as data_fmt/train.md documents them;
     keep_last prunes; settings that differ from the checkpoint's refuse to resume. */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"
#include <string.h>
#if !defined(_WIN32)
#include <sys/wait.h>
#endif

static const char *TOK = "tests/data/tokenizers/qwen2_style";
static const char *TINY = "tests/data/train/tiny_qwen2";
static cllm_tokenizer tok;
static cllm_sft_data sft;
static cllm_dpo_data dpo;

/* Removes a test output directory: its checkpoint subdirectories, files, then itself. */
static void clean(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (remove(path) != 0) cllm__remove_dir(path, NULL);
    }
    closedir(d);
    rmdir(dir);
}

static void base_config(cllm_train_config *c, const char *out) {
    memset(c, 0, sizeof *c);
    c->lr = 3e-3; c->lr_schedule = "cosine"; c->warmup_steps = 2;
    c->batch_size = 2; c->grad_accum = 2; c->max_steps = 8;     /* 5 rows: 3 micro-batches, 2 steps per epoch */
    c->save_every = 2; c->out_dir = out; c->quiet = 1;
    c->model_dir = TINY; c->tokenizer_dir = TOK;
}

static cllm_result run_sft(const cllm_train_config *c) {
    cllm_model m;
    cllm_err err;
    cllm_result rc;
    if ((rc = cllm_model_load(&m, TINY, &err)) == CLLM_OK) rc = cllm_train_sft(&m, NULL, &sft, c, &err);
    if (rc != CLLM_OK) printf("    %s\n", err.msg);
    cllm_model_free(&m);
    return rc;
}

static cllm_result run_dpo(const cllm_train_config *c) {
    cllm_model m, ref;
    cllm_dpo_config d;
    cllm_err err;
    cllm_result rc;
    memset(&d, 0, sizeof d);
    if ((rc = cllm_model_load(&m, TINY, &err)) == CLLM_OK && (rc = cllm_model_load(&ref, TINY, &err)) == CLLM_OK)
        rc = cllm_train_dpo(&m, NULL, &ref, &dpo, &d, c, &err);
    if (rc != CLLM_OK) printf("    %s\n", err.msg);
    cllm_model_free(&m); cllm_model_free(&ref);
    return rc;
}

static int exists(const char *p) { FILE *f = fopen(p, "rb"); if (f) fclose(f); return f != NULL; }

static void test_sft_resume(void) {
    cllm_train_config c;
    printf("SFT: 8 steps in one run vs 3 + resumed 5\n");
    clean("build/tmp_resume_a"); clean("build/tmp_resume_b");
    base_config(&c, "build/tmp_resume_a");
    check_true("uninterrupted run", run_sft(&c) == CLLM_OK);
    base_config(&c, "build/tmp_resume_b");
    c.stop_after = 3;
    check_true("first 3 steps (stop_after)", run_sft(&c) == CLLM_OK);
    check_true("  stopped with a checkpoint at step 3 and no final model", cllm__latest_step("build/tmp_resume_b") == 3 && !exists("build/tmp_resume_b/final/model.safetensors"));
    c.stop_after = 0; c.resume = 1;
    check_true("resumed run", run_sft(&c) == CLLM_OK);
    check_true("every logged loss, grad norm and lr identical (8 lines)", check_same_metrics("build/tmp_resume_a/metrics.jsonl", "build/tmp_resume_b/metrics.jsonl", 8));
    check_true("final weights identical, byte for byte", check_same_file("build/tmp_resume_a/final/model.safetensors", "build/tmp_resume_b/final/model.safetensors"));
    check_true("final Adam moments identical", check_same_file("build/tmp_resume_a/ckpt-8/optimizer.safetensors", "build/tmp_resume_b/ckpt-8/optimizer.safetensors"));
    check_true("checkpoint layout: HF model + tokenizer + optimizer + state; latest -> ckpt-8",
               exists("build/tmp_resume_a/ckpt-8/config.json") && exists("build/tmp_resume_a/ckpt-8/model.safetensors") &&
               exists("build/tmp_resume_a/ckpt-8/tokenizer.json") && exists("build/tmp_resume_a/ckpt-8/tokenizer_config.json") &&
               exists("build/tmp_resume_a/ckpt-8/trainer_state.json") && cllm__latest_step("build/tmp_resume_a") == 8 &&
               exists("build/tmp_resume_a/final/tokenizer.json"));
    {   /* the saved checkpoint loads as a model */
        cllm_model m;
        cllm_err err;
        check_true("ckpt-8 loads with cllm_model_load", cllm_model_load(&m, "build/tmp_resume_a/ckpt-8", &err) == CLLM_OK);
        cllm_model_free(&m);
    }
    /* settings that change the data order must not change on resume */
    base_config(&c, "build/tmp_resume_b");
    c.resume = 1; c.batch_size = 1;
    {
        cllm_model m;
        cllm_trainer tr;
        cllm_train_task task;
        cllm_err err;
        int resumed = 0;
        memset(&task, 0, sizeof task);
        cllm_model_load(&m, TINY, &err);
        task.name = "sft"; task.n_examples = sft.n; task.default_lr = 1e-5;
        task.units = cllm__sft_units; task.micro_step = cllm__sft_micro;
        {
            cllm__sft_ctx ctx; ctx.d = &sft; task.ctx = &ctx;
            cllm_trainer_init(&tr, &m, NULL, &task, &c, &err);
            check_true("resuming with another batch_size is refused, naming it",
                       cllm_trainer_resume(&tr, &resumed, &err) == CLLM_ERR_ARG && strstr(err.msg, "batch_size") != NULL);
            printf("         -> %s\n", err.msg);
            cllm_trainer_free(&tr);
        }
        cllm_model_free(&m);
    }
}

/* ---- SIGKILL in the middle of a run ---- */

static int kill_at_5(void *ctx, const cllm_trainer *tr) {
    (void)ctx;
#if !defined(_WIN32)
    if (tr->step == 5) raise(SIGKILL);
#endif
    return 0;
}

static const char *argv0;

/* The killed run happens in a fresh process (this program re-executed with --kill-child): a
   forked copy of a process that has used OpenMP threads must not use them again. */
static int kill_child(void) {
    cllm_train_config c;
    base_config(&c, "build/tmp_resume_k");
    c.on_step = kill_at_5;
    run_sft(&c);
    return 0;                                      /* not reached */
}

static void test_kill(void) {
#if !defined(_WIN32)
    cllm_train_config c;
    pid_t pid;
    int status = 0;
    printf("SFT: a child killed with SIGKILL after step 5, then resumed\n");
    clean("build/tmp_resume_k");
    base_config(&c, "build/tmp_resume_k");
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        execl(argv0, argv0, "--kill-child", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    check_true("the child died of SIGKILL", WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    check_true("latest -> ckpt-4 (step 5 was logged but not saved)", cllm__latest_step("build/tmp_resume_k") == 4);
    {   /* a torn checkpoint directory from a crash during a save */
        FILE *f;
        cllm__mkdir("build/tmp_resume_k/ckpt-6.tmp", NULL);
        f = fopen("build/tmp_resume_k/ckpt-6.tmp/model.safetensors", "wb");
        if (f) { fputs("torn", f); fclose(f); }
    }
    c.resume = 1;
    check_true("resumed run", run_sft(&c) == CLLM_OK);
    check_true("every logged loss identical to the uninterrupted run (8 lines)", check_same_metrics("build/tmp_resume_a/metrics.jsonl", "build/tmp_resume_k/metrics.jsonl", 8));
    check_true("final weights identical", check_same_file("build/tmp_resume_a/final/model.safetensors", "build/tmp_resume_k/final/model.safetensors"));
    check_true("the torn ckpt-6.tmp was cleaned up", !exists("build/tmp_resume_k/ckpt-6.tmp/model.safetensors"));
#endif
}

static void test_dpo_resume(void) {
    cllm_train_config c;
    printf("DPO with a frozen reference: 6 steps vs 2 + resumed 4\n");
    clean("build/tmp_resume_da"); clean("build/tmp_resume_db");
    base_config(&c, "build/tmp_resume_da");
    c.max_steps = 6; c.batch_size = 1; c.lr = 1e-2; c.save_every = 0; c.keep_last = 1;
    check_true("uninterrupted run", run_dpo(&c) == CLLM_OK);
    base_config(&c, "build/tmp_resume_db");
    c.max_steps = 6; c.batch_size = 1; c.lr = 1e-2; c.save_every = 0; c.keep_last = 1;
    c.stop_after = 2;
    check_true("first 2 steps", run_dpo(&c) == CLLM_OK);
    c.stop_after = 0; c.resume = 1;
    check_true("resumed run", run_dpo(&c) == CLLM_OK);
    check_true("every logged loss, margin and logp identical (6 lines)", check_same_metrics("build/tmp_resume_da/metrics.jsonl", "build/tmp_resume_db/metrics.jsonl", 6));
    check_true("final weights identical", check_same_file("build/tmp_resume_da/final/model.safetensors", "build/tmp_resume_db/final/model.safetensors"));
    check_true("keep_last 1: only ckpt-6 is left", exists("build/tmp_resume_db/ckpt-6/trainer_state.json") && !exists("build/tmp_resume_db/ckpt-2/trainer_state.json"));
}

static cllm_result run_dpo_lora(const cllm_train_config *c) {
    cllm_model m;
    cllm_lora lo;
    cllm_lora_config lc;
    cllm_dpo_config d;
    cllm_err err;
    cllm_result rc;
    memset(&d, 0, sizeof d);
    memset(&lc, 0, sizeof lc);
    lc.r = 4; lc.alpha = 8; lc.dropout = 0.3;
    if ((rc = cllm_model_load(&m, TINY, &err)) == CLLM_OK && (rc = cllm_lora_init(&lo, &m, &lc, &err)) == CLLM_OK)
        rc = cllm_train_dpo(&m, &lo, NULL, &dpo, &d, c, &err);      /* the base model is the reference */
    if (rc != CLLM_OK) printf("    %s\n", err.msg);
    cllm_lora_free(&lo);
    cllm_model_free(&m);
    return rc;
}

static void test_lora_resume(void) {
    cllm_train_config c;
    printf("DPO with LoRA (dropout 0.3, base model as the reference): 6 steps vs 4 + resumed 2\n");
    clean("build/tmp_resume_la"); clean("build/tmp_resume_lb");
    base_config(&c, "build/tmp_resume_la");
    c.max_steps = 6; c.batch_size = 2; c.lr = 1e-2;
    check_true("uninterrupted run", run_dpo_lora(&c) == CLLM_OK);
    base_config(&c, "build/tmp_resume_lb");
    c.max_steps = 6; c.batch_size = 2; c.lr = 1e-2;
    c.stop_after = 4;
    check_true("first 4 steps", run_dpo_lora(&c) == CLLM_OK);
    check_true("  the checkpoint holds the adapters, not the base weights",
               exists("build/tmp_resume_lb/ckpt-4/adapter_model.safetensors") && !exists("build/tmp_resume_lb/ckpt-4/model.safetensors"));
    c.stop_after = 0; c.resume = 1;
    check_true("resumed run", run_dpo_lora(&c) == CLLM_OK);
    check_true("every logged loss, margin and logp identical (6 lines)", check_same_metrics("build/tmp_resume_la/metrics.jsonl", "build/tmp_resume_lb/metrics.jsonl", 6));
    check_true("final adapters and merged weights identical", check_same_file("build/tmp_resume_la/adapter/adapter_model.safetensors", "build/tmp_resume_lb/adapter/adapter_model.safetensors") &&
               check_same_file("build/tmp_resume_la/final/model.safetensors", "build/tmp_resume_lb/final/model.safetensors"));
}

/* ---- trainer_state.json fields as documented ---- */

static void test_state_doc(void) {
    char *text = NULL, *doc = NULL;
    size_t len;
    cJSON *state, *ex, *it;
    int ok = 1;
    printf("trainer_state.json and metrics lines as data_fmt/train.md documents them\n");
    if (cllm_read_file("build/tmp_resume_a/ckpt-8/trainer_state.json", &text, &len, NULL) != CLLM_OK ||
        cllm_read_file("data_fmt/train_state.example.json", &doc, &len, NULL) != CLLM_OK) { check_true("read files", 0); free(text); free(doc); return; }
    state = cJSON_Parse(text); ex = cJSON_Parse(doc);
    cJSON_ArrayForEach(it, ex) if (!cJSON_GetObjectItem(state, it->string)) { printf("    missing %s\n", it->string); ok = 0; }
    cJSON_ArrayForEach(it, state) if (!cJSON_GetObjectItem(ex, it->string)) { printf("    undocumented %s\n", it->string); ok = 0; }
    check_true("trainer_state.json has exactly the fields of data_fmt/train_state.example.json", ok);
    check_true("  step 8, epoch 4, adam_t 8", cJSON_GetObjectItem(state, "step")->valuedouble == 8 && cJSON_GetObjectItem(state, "epoch")->valuedouble == 4 &&
               cJSON_GetObjectItem(state, "adam_t")->valuedouble == 8);
    cJSON_Delete(state); cJSON_Delete(ex); free(text); free(doc);
    text = doc = NULL;
    ok = 1;
    if (cllm_read_file("build/tmp_resume_da/metrics.jsonl", &text, &len, NULL) == CLLM_OK &&
        cllm_read_file("data_fmt/train_metrics.example.jsonl", &doc, &len, NULL) == CLLM_OK) {
        *strchr(text, '\n') = 0;
        state = cJSON_Parse(text);
        ex = cJSON_Parse(strchr(doc, '\n') + 1);            /* line 2 of the example: a DPO step */
        cJSON_ArrayForEach(it, ex) if (!cJSON_GetObjectItem(state, it->string)) { printf("    missing %s\n", it->string); ok = 0; }
        cJSON_ArrayForEach(it, state) if (!cJSON_GetObjectItem(ex, it->string)) { printf("    undocumented %s\n", it->string); ok = 0; }
        cJSON_Delete(state); cJSON_Delete(ex);
    } else ok = 0;
    check_true("a DPO metrics line has exactly the fields of data_fmt/train_metrics.example.jsonl", ok);
    free(text); free(doc);
}

/* ---- a NaN stops the run, keeping the last good checkpoint ---- */

static cllm_result poisoned_micro(void *ctx, cllm_trainer *tr, const int *idx, int n, double norm, cllm_train_stats *st, cllm_err *err) {
    cllm_result rc = cllm__sft_micro(ctx, tr, idx, n, norm, st, err);
    if (tr->step == 2) tr->model->grads_memory[7] = NAN;     /* during the 3rd step */
    return rc;
}

static void test_nan(void) {
    cllm_train_config c;
    cllm_train_task task;
    cllm__sft_ctx ctx;
    cllm_trainer tr;
    cllm_model m;
    cllm_err err;
    cllm_result rc;
    size_t i;
    int finite = 1;
    printf("a NaN gradient stops the run\n");
    clean("build/tmp_resume_nan");
    base_config(&c, "build/tmp_resume_nan");
    memset(&task, 0, sizeof task);
    ctx.d = &sft;
    task.name = "sft"; task.n_examples = sft.n; task.default_lr = 1e-5;
    task.units = cllm__sft_units; task.micro_step = poisoned_micro; task.ctx = &ctx;
    cllm_model_load(&m, TINY, &err);
    cllm_trainer_init(&tr, &m, NULL, &task, &c, &err);
    rc = cllm_trainer_run(&tr, &err);
    if (rc != CLLM_OK) printf("         -> %s\n", err.msg);
    check_true("CLLM_ERR_NUMERIC at step 3, naming the last good checkpoint", rc == CLLM_ERR_NUMERIC && strstr(err.msg, "step 3") && strstr(err.msg, "ckpt-2"));
    check_true("latest still -> ckpt-2, 2 steps done", cllm__latest_step("build/tmp_resume_nan") == 2 && tr.step == 2);
    for (i = 0; i < m.num_params; i++) finite &= isfinite(m.params_memory[i]) != 0;
    check_true("the weights are finite (nothing was updated with the NaN)", finite);
    cllm_trainer_free(&tr);
    cllm_model_free(&m);
}

int main(int argc, char **argv) {
    cllm_err err;
    argv0 = argv[0];
    cllm__mkdir("build", NULL);
    if (cllm_tokenizer_load(&tok, TOK, &err) != CLLM_OK || cllm_sft_data_load(&sft, &tok, "data_fmt/train_sft.example.jsonl", 0, &err) != CLLM_OK ||
        cllm_dpo_data_load(&dpo, &tok, "data_fmt/train_dpo.example.jsonl", NULL, &err) != CLLM_OK) {
        printf("setup: %s\n", err.msg);
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "--kill-child") == 0) return kill_child();
    test_sft_resume();
    test_kill();
    test_dpo_resume();
    test_lora_resume();
    test_state_doc();
    test_nan();
    cllm_sft_data_free(&sft);
    cllm_dpo_data_free(&dpo);
    cllm_tokenizer_free(&tok);
    return check_summary("test_train_resume");
}
