/* test_local.c - local models behind the chat, assistant and user-simulator interfaces, on tiny
   models built here with the committed small tokenizers (tests/data/tokenizers/):
   - cllm_local_chat: the prompt ids are the chat template's render; the text is the decode of
     the response ids without the end-of-turn token; the logprobs equal a full cllm_forward at the
     sampling temperature; seeds follow (base seed, call counter): reruns, batches and single
     calls agree; end-of-turn tokens and stop strings end a sample and stay out of the text.
   - the user simulator (b): a model trained here for a few steps to answer either a fixed JSON
     reply or unusable prose (about half each) is re-asked exactly as often as an independent
     replay of the same seeds says, with and without a retry budget.
   - cllm_local_assistant against cllm_local_chat with its system prompt; cllm_simulate with both
     sides local; `collabllm generate` and examples/chat.c (streaming) against the library. */
#define _POSIX_C_SOURCE 200809L   /* popen, to run the command-line tools */
#include "../collabllm.h"
#include "check.h"
#include <string.h>
#include <cjson/cJSON.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

static char tmp_dir[512], build_dir[256];

/* ---- tiny models ---------------------------------------------------------------------------- */

/* A random model of the given family with the vocabulary of tokenizer dir `tok_dir`, written to
   tmp_dir/name with that tokenizer: a complete Hugging Face model directory. */
static int make_model_dir(const char *name, const char *tok_dir, int arch, int vocab_size, int config_eos, int tied, char *out, size_t size) {
    cllm_config c;
    cllm_model m;
    cllm_err err;
    int ok;
    memset(&c, 0, sizeof c);
    c.arch = arch; c.vocab_size = vocab_size; c.hidden_size = 32; c.intermediate_size = 64; c.n_layers = 2;
    c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.rms_norm_eps = 1e-5f; c.rope_theta = 10000;
    c.tie_word_embeddings = tied; c.qk_norm = arch == CLLM_ARCH_QWEN3; c.bos_token_id = -1;
    c.eos_token_ids[0] = config_eos; c.n_eos = 1;
    snprintf(out, size, "%s/%s", tmp_dir, name);
    ok = cllm_model_init(&m, &c, 11, &err) == CLLM_OK && cllm_model_save(&m, out, CLLM_DT_F32, &err) == CLLM_OK &&
         check_copy_file(tok_dir, out, "tokenizer.json") && check_copy_file(tok_dir, out, "tokenizer_config.json");
    if (!ok) printf("    %s\n", err.msg);
    cllm_model_free(&m);
    return ok;
}

/* ---- references computed independently of cllm_local_chat ------------------------------------ */

/* log p(ids[t] | prompt, ids[<t]) from one full forward over prompt ++ ids at temperature tau. */
static void forward_logprobs(cllm_model *m, const int *prompt, int np, const int *ids, int n, float tau, cllm_float *out) {
    int T = np + n, t;
    int *all = (int *)calloc((size_t)T, sizeof(int)), *labels = (int *)calloc((size_t)T, sizeof(int));
    cllm_batch b;
    cllm_err err;
    for (t = 0; t < T; t++) { all[t] = t < np ? prompt[t] : ids[t - np]; labels[t] = t < np ? -100 : all[t]; }
    memset(&b, 0, sizeof b);
    b.B = 1; b.T = T; b.input_ids = all; b.labels = labels; b.temperature = tau;
    if (cllm_forward(m, &b, NULL, &err) != CLLM_OK) { printf("  FAIL forward: %s\n", err.msg); check_failures++; }
    for (t = 0; t < n; t++) out[t] = m->acts.logp[np - 1 + t];
    free(all); free(labels);
}

/* A malloc'd copy (not the library's buffer, so free() is right whatever CLLM_FREE is). */
static char *decode(const cllm_tokenizer *tok, const int *ids, int n, int skip) {
    cllm_decode_stream ds;
    const char *piece;
    size_t len, total = 0;
    char *out = (char *)calloc(1, 1);
    int i;
    cllm_decode_stream_init(&ds, tok, skip);
    for (i = 0; i <= n; i++) {
        if (i < n) cllm_decode_stream_push(&ds, ids[i], &piece, &len, NULL);
        else cllm_decode_stream_flush(&ds, &piece, &len, NULL);
        out = (char *)realloc(out, total + len + 1);
        memcpy(out + total, piece, len);
        out[total += len] = 0;
    }
    cllm_decode_stream_free(&ds);
    return out;
}

static int same_output(const cllm_local_output *a, const cllm_local_output *b) {
    return a->n == b->n && a->finish == b->finish && a->n_prompt == b->n_prompt && strcmp(a->text, b->text) == 0 &&
           memcmp(a->ids, b->ids, sizeof(int) * (size_t)a->n) == 0 && memcmp(a->logprobs, b->logprobs, sizeof(cllm_float) * (size_t)a->n) == 0 &&
           memcmp(a->prompt_ids, b->prompt_ids, sizeof(int) * (size_t)a->n_prompt) == 0;
}

static int same_outputs(const cllm_local_output *a, const cllm_local_output *b, int n) {
    int i, ok = 1;
    for (i = 0; i < n; i++) ok &= same_output(&a[i], &b[i]);
    return ok;
}

static void conv_of(cllm_conv *c, const cllm_message *msgs, int n) {
    int i;
    memset(c, 0, sizeof *c);
    for (i = 0; i < n; i++) cllm_conv_push(c, msgs[i].role, msgs[i].content, NULL);
}

/* ---- a model trained to answer as the user simulator ---------------------------------------- */

/* The simulator prompt template of these tests: short, so training takes a moment. */
static const char *sim_template = "Goal: {{goal}}";
static const char *reply_json = "{\"response\": \"hello there\"}";
static const char *reply_prose = "No idea.";

/* Trains the model so that after the prompt (as one user message, with the generation prompt) it
   answers with either target followed by the end-of-turn token: each target is a row of one
   batch and the loss counts the answer tokens only, so the first answer token becomes a coin
   flip. Returns the last loss. */
static double train_replies(cllm_local_lm *lm, const char *prompt, const char *const targets[2], int steps) {
    int rows = 2, T = 0, r, t, step, len[2], start[2], *row[2], *ids, *labels, *mask;
    cllm_render_opts ro;
    cllm_adamw_config opt;
    cllm_batch batch;
    cllm_err err;
    memset(&ro, 0, sizeof ro);
    ro.add_generation_prompt = 1;
    for (r = 0; r < rows; r++) {
        cllm_message msg;
        const char *target = targets[r];
        int *p = NULL, *a = NULL, na = 0;
        msg.role = "user"; msg.content = prompt;
        cllm_chat_render(&lm->tok, &msg, 1, &ro, NULL, &p, NULL, &start[r], &err);
        cllm_tokenizer_encode(&lm->tok, target, strlen(target), 0, &a, &na, NULL, &err);
        len[r] = start[r] + na + 1;
        row[r] = (int *)calloc((size_t)len[r], sizeof(int));
        memcpy(row[r], p, sizeof(int) * (size_t)start[r]);
        memcpy(row[r] + start[r], a, sizeof(int) * (size_t)na);
        row[r][len[r] - 1] = lm->stop_ids[0];                       /* the template's end of turn */
        if (len[r] > T) T = len[r];
        cllm_free_buffer(p); cllm_free_buffer(a);
    }
    ids = (int *)calloc((size_t)rows * T, sizeof(int));
    labels = (int *)calloc((size_t)rows * T, sizeof(int));
    mask = (int *)calloc((size_t)rows * T, sizeof(int));
    for (r = 0; r < rows; r++)
        for (t = 0; t < T; t++) {
            ids[r * T + t] = t < len[r] ? row[r][t] : 0;
            mask[r * T + t] = t < len[r];
            labels[r * T + t] = t < len[r] && t >= start[r] ? row[r][t] : -100;
        }
    memset(&batch, 0, sizeof batch);
    batch.B = rows; batch.T = T; batch.input_ids = ids; batch.labels = labels; batch.attn_mask = mask;
    memset(&opt, 0, sizeof opt);
    for (step = 0; step < steps; step++) {
        cllm_forward(&lm->model, &batch, NULL, &err);
        cllm_zero_grad(&lm->model, &err);
        cllm_backward(&lm->model, NULL, NULL, &err);
        cllm_adamw_update(&lm->model, &opt, 1e-2, &err);
    }
    cllm_forward(&lm->model, &batch, NULL, &err);
    for (r = 0; r < rows; r++) free(row[r]);
    free(ids); free(labels); free(mask);
    return lm->model.loss;
}

/* ---- loading ----------------------------------------------------------------------------------- */

static char dir_chatml[600], dir_llama[600], dir_sim[600];

static void test_load(cllm_local_lm *chatml, cllm_local_lm *llama) {
    char dir[600];
    cllm_local_lm lm;
    cllm_err err;
    printf("loading\n");
    check_true("model directories written (config.json, model.safetensors, tokenizer files)",
               make_model_dir("chatml", "tests/data/tokenizers/smollm2", CLLM_ARCH_LLAMA, 1459, 0, 1, dir_chatml, sizeof dir_chatml) &&
               make_model_dir("llama", "tests/data/tokenizers/llama3_style", CLLM_ARCH_QWEN3, 1461, 1457, 1, dir_llama, sizeof dir_llama) &&
               make_model_dir("sim", "tests/data/tokenizers/smollm2", CLLM_ARCH_LLAMA, 1459, 0, 0, dir_sim, sizeof dir_sim) &&
               make_model_dir("small", "tests/data/tokenizers/smollm2", CLLM_ARCH_LLAMA, 1000, 0, 1, dir, sizeof dir));
    if (!check_true("load the ChatML (SmolLM2 template) model", cllm_local_lm_load(chatml, dir_chatml, &err) == CLLM_OK)) printf("    %s\n", err.msg);
    if (!check_true("load the Llama-3.1-template model", cllm_local_lm_load(llama, dir_llama, &err) == CLLM_OK)) printf("    %s\n", err.msg);
    check_true("ChatML stop ids: <|im_end|> (template and eos_token) then the config's eos 0",
               chatml->n_stop_ids == 2 && chatml->stop_ids[0] == 2 && chatml->stop_ids[1] == 0);
    check_true("Llama-3.1 stop ids: <|eot_id|> (template and eos_token) then the config's <|end_of_text|>",
               llama->n_stop_ids == 2 && llama->stop_ids[0] == 1460 && llama->stop_ids[1] == 1457);
    check_true("a tokenizer larger than the model's vocabulary is refused, naming vocab_size",
               cllm_local_lm_load(&lm, dir, &err) == CLLM_ERR_FORMAT && strstr(err.msg, "vocab_size") && lm.model.params_memory == NULL);
    printf("    (%s)\n", err.msg);
    check_true("a missing directory fails", cllm_local_lm_load(&lm, "build/no/such/dir", &err) != CLLM_OK);
    cllm_local_lm_free(&lm);
}

/* ---- cllm_local_chat on a random model ---------------------------------------------------------- */

static const cllm_message conv0[1] = { { "user", "Hello there!" } };
static const cllm_message conv1[4] = { { "system", "Be brief." }, { "user", "What is 2+2?" }, { "assistant", "4." }, { "user", "And 3+3?" } };

static cllm_local_gen_config sampled_config(void) {
    cllm_local_gen_config g;
    memset(&g, 0, sizeof g);
    g.sampler.temperature = 0.7f; g.sampler.seed = 5; g.max_new_tokens = 10;
    return g;
}

/* Every output against references computed here: the chat template's render, the tokenizer's
   decode, and a full forward at temperature tau. */
static void check_outputs(const char *label, cllm_local_lm *lm, const cllm_conv *convs, int n, int n_samples,
                          const cllm_local_output *out, float tau, int keep_special) {
    int i, s, ok_prompt = 1, ok_text = 1, total = 0, k = 0;
    cllm_float *got, *want;
    char lab[200];
    for (i = 0; i < n * n_samples; i++) total += out[i].n;
    got = (cllm_float *)calloc((size_t)total + 1, sizeof(cllm_float));
    want = (cllm_float *)calloc((size_t)total + 1, sizeof(cllm_float));
    for (i = 0; i < n; i++) {
        cllm_render_opts ro;
        int *ids = NULL, n_ids = 0;
        cllm_err err;
        memset(&ro, 0, sizeof ro);
        ro.add_generation_prompt = 1;
        cllm_chat_render(&lm->tok, convs[i].msgs, convs[i].n, &ro, NULL, &ids, NULL, &n_ids, &err);
        for (s = 0; s < n_samples; s++) {
            const cllm_local_output *o = &out[i * n_samples + s];
            char *text = decode(&lm->tok, o->ids, o->n - (o->finish == CLLM_FINISH_EOS), !keep_special);
            ok_prompt &= o->n_prompt == n_ids && memcmp(o->prompt_ids, ids, sizeof(int) * (size_t)n_ids) == 0;
            ok_text &= text && strcmp(text, o->text) == 0 && o->n > 0 &&
                       (o->finish == CLLM_FINISH_EOS ? o->ids[o->n - 1] == lm->stop_ids[0] || o->ids[o->n - 1] == lm->stop_ids[1] : 1);
            forward_logprobs(&lm->model, o->prompt_ids, o->n_prompt, o->ids, o->n, tau, want + k);
            memcpy(got + k, o->logprobs, sizeof(cllm_float) * (size_t)o->n);
            k += o->n;
            free(text);
        }
        cllm_free_buffer(ids);
    }
    snprintf(lab, sizeof lab, "%s: prompt ids = the template's render + generation prompt", label);
    check_true(lab, ok_prompt);
    snprintf(lab, sizeof lab, "%s: text = decode(ids without the end-of-turn token)", label);
    check_true(lab, ok_text);
    snprintf(lab, sizeof lab, "%s: logprobs vs full forward at T %g", label, (double)tau);
    check_tensor(lab, got, want, (size_t)total, 1e-5);
    free(got); free(want);
}

static void test_chat(cllm_local_lm *lm, cllm_local_lm *llama) {
    cllm_conv convs[2];
    cllm_local_output a[6], b[6], one[3], greedy[2];
    cllm_local_gen_config g = sampled_config();
    cllm_err err;
    int i, ok;
    printf("cllm_local_chat\n");
    conv_of(&convs[0], conv0, 1);
    conv_of(&convs[1], conv1, 4);
    lm->calls = 0;
    if (!check_true("2 conversations x 3 samples (T 0.7, seed 5, 10 new tokens)", cllm_local_chat(lm, convs, 2, 3, &g, a, &err) == CLLM_OK)) { printf("    %s\n", err.msg); return; }
    check_outputs("ChatML", lm, convs, 2, 3, a, 0.7f, 0);
    check_true("conversation i is seeded with call i; the counter advanced by 2",
               a[0].call == 0 && a[2].call == 0 && a[3].call == 1 && a[5].call == 1 && lm->calls == 2);
    check_true("the samples of one conversation differ", !(same_output(&a[0], &a[1]) && same_output(&a[1], &a[2])));
    lm->calls = 0;
    check_true("rerun from the same counter: identical text, ids, logprobs",
               cllm_local_chat(lm, convs, 2, 3, &g, b, &err) == CLLM_OK && same_outputs(a, b, 6));
    cllm_local_outputs_free(b, 6);
    check_true("the next call (counter 2) samples other tokens",
               cllm_local_chat(lm, convs, 1, 3, &g, b, &err) == CLLM_OK && !same_output(&a[0], &b[0]));
    cllm_local_outputs_free(b, 3);
    lm->calls = 0;
    ok = cllm_local_chat(lm, &convs[0], 1, 3, &g, b, &err) == CLLM_OK && cllm_local_chat(lm, &convs[1], 1, 3, &g, one, &err) == CLLM_OK;
    check_true("a batch of 2 conversations = 2 single calls in order", ok && same_outputs(a, b, 3) && same_outputs(a + 3, one, 3));
    cllm_local_outputs_free(b, 3); cllm_local_outputs_free(one, 3);
    lm->calls = 0;
    check_true("1 sample = the first of 3 (samples are independent streams)",
               cllm_local_chat(lm, convs, 1, 1, &g, one, &err) == CLLM_OK && same_output(&a[0], &one[0]));
    cllm_local_outputs_free(one, 1);
    g.sampler.seed = 6;
    lm->calls = 0;
    check_true("another base seed samples other tokens", cllm_local_chat(lm, convs, 1, 1, &g, one, &err) == CLLM_OK && !same_output(&a[0], &one[0]));
    cllm_local_outputs_free(one, 1);
    cllm_local_outputs_free(a, 6);

    g = sampled_config();
    g.keep_special = 1;
    lm->calls = 0;
    check_true("keep_special", cllm_local_chat(lm, convs, 2, 3, &g, a, &err) == CLLM_OK);
    check_outputs("ChatML, keep_special", lm, convs, 2, 3, a, 0.7f, 1);
    cllm_local_outputs_free(a, 6);

    memset(&g, 0, sizeof g);
    g.sampler.greedy = 1; g.max_new_tokens = 8;
    if (check_true("Llama-3.1 template, greedy, 2 samples", cllm_local_chat(llama, &convs[1], 1, 2, &g, greedy, &err) == CLLM_OK)) {
        check_outputs("Llama-3.1 greedy", llama, &convs[1], 1, 2, greedy, 1.0f, 0);
        check_true("greedy samples are identical; the prompt starts with <|begin_of_text|>",
                   same_output(&greedy[0], &greedy[1]) && greedy[0].prompt_ids[0] == 1456);
        cllm_local_outputs_free(greedy, 2);
    }

    /* errors */
    g = sampled_config();
    {
        static const char *empty[1] = { "" };
        cllm_local_lm none;
        cllm_conv bad;
        cllm_message tool = { "tool", "x" };
        memset(&none, 0, sizeof none);
        check_true("an lm that is not loaded is refused", cllm_local_chat(&none, convs, 1, 1, &g, one, &err) == CLLM_ERR_ARG);
        check_true("0 samples are refused", cllm_local_chat(lm, convs, 1, 0, &g, one, &err) == CLLM_ERR_ARG);
        g.stop = empty; g.n_stop = 1;
        check_true("an empty stop string is refused", cllm_local_chat(lm, convs, 1, 1, &g, one, &err) == CLLM_ERR_ARG && strstr(err.msg, "empty"));
        g.stop = NULL;
        check_true("n_stop without stop strings is refused", cllm_local_chat(lm, convs, 1, 1, &g, one, &err) == CLLM_ERR_ARG && strstr(err.msg, "n_stop"));
        g = sampled_config();
        bad.msgs = &tool; bad.n = 1; bad.cap = 1;
        check_true("a role the template refuses fails that call, outputs zeroed",
                   cllm_local_chat(llama, &bad, 1, 1, &g, one, &err) == CLLM_ERR_UNSUPPORTED && one[0].text == NULL);
        g.sampler.top_p = 3;
        check_true("a bad sampler is refused", cllm_local_chat(lm, convs, 1, 1, &g, one, &err) == CLLM_ERR_ARG && strstr(err.msg, "top_p"));
    }
    for (i = 0; i < 2; i++) cllm_conv_free(&convs[i]);
}

/* ---- a trained model: end-of-turn, stop strings, on_token ------------------------------------ */

static const cllm_goal poem = { NULL, "write a poem", NULL };

static char *sim_prompt(void) {
    cllm_llm_sim_config pc;
    cllm_conv empty;
    cllm_err err;
    char *p = NULL;
    memset(&pc, 0, sizeof pc);
    memset(&empty, 0, sizeof empty);
    pc.prompt = sim_template;
    cllm_user_sim_prompt(&pc, &poem, &empty, &p, &err);
    return p;
}

typedef struct { int calls, stop_at; } count_ctx;
static int count_tokens(void *ctx, const int *ids, int n) {
    count_ctx *c = (count_ctx *)ctx;
    (void)ids;
    c->calls++;
    return c->stop_at && n >= c->stop_at;
}

static void test_trained(cllm_local_lm *lm) {
    static const char *stops[2] = { "zzz", "there" };
    const char *targets[2];
    char *prompt = sim_prompt(), lab[200];
    cllm_conv c;
    cllm_local_output ref[12], out[12];
    cllm_local_gen_config g;
    cllm_err err;
    int s, n_eos = 0, ok_eos = 1, n_stop = 0, ok_stop = 1, n_json = 0, ok_count = 1, n_there;
    double loss;
    printf("a model trained to answer the simulator prompt\n");
    targets[0] = reply_json; targets[1] = reply_prose;
    loss = train_replies(lm, prompt, targets, 60);
    snprintf(lab, sizeof lab, "60 AdamW steps: mean loss %.3f on the answer tokens (not 0: the first one is a coin flip)", loss);
    check_true(lab, loss < 0.2);
    {   /* kept as a model directory for trying the tools by hand (data_fmt/generate.md's example) */
        char dir[700];
        snprintf(dir, sizeof dir, "%s/sim_trained", tmp_dir);
        check_true("the trained model saves as a model directory",
                   cllm_model_save(&lm->model, dir, CLLM_DT_F32, &err) == CLLM_OK && check_copy_file(dir_sim, dir, "tokenizer.json") &&
                   check_copy_file(dir_sim, dir, "tokenizer_config.json"));
    }
    memset(&c, 0, sizeof c);
    cllm_conv_push(&c, "user", prompt, NULL);
    memset(&g, 0, sizeof g);
    g.max_new_tokens = 24; g.keep_special = 1; g.sampler.seed = 9;
    lm->calls = 0;
    if (!check_true("12 samples at T 1 with special tokens kept", cllm_local_chat(lm, &c, 1, 12, &g, ref, &err) == CLLM_OK)) { printf("    %s\n", err.msg); return; }
    for (s = 0; s < 12; s++) {
        char *all = decode(&lm->tok, ref[s].ids, ref[s].n, 0);
        if (ref[s].finish == CLLM_FINISH_EOS) {
            size_t la = strlen(all);
            n_eos++;
            ok_eos &= ref[s].ids[ref[s].n - 1] == 2 && la >= 10 && strcmp(all + la - 10, "<|im_end|>") == 0 &&
                      strncmp(ref[s].text, all, la - 10) == 0 && strlen(ref[s].text) == la - 10 && !strstr(ref[s].text, "<|im_end|>");
        }
        n_json += strcmp(ref[s].text, reply_json) == 0;
        free(all);
    }
    check_outputs("trained", lm, &c, 1, 12, ref, 1.0f, 1);
    snprintf(lab, sizeof lab, "%d of 12 samples end on <|im_end|>: kept in ids, left out of the text", n_eos);
    check_true(lab, n_eos >= 6 && ok_eos);
    snprintf(lab, sizeof lab, "%d of 12 samples are the JSON reply, the others mostly the prose", n_json);
    check_true(lab, n_json >= 2 && n_json <= 10);

    /* stop strings: the same seeds again, cut where "there" is first completed */
    g.stop = stops; g.n_stop = 2; g.keep_special = 0;
    lm->calls = 0;
    if (check_true("the same 12 samples with stop strings {\"zzz\", \"there\"}", cllm_local_chat(lm, &c, 1, 12, &g, out, &err) == CLLM_OK)) {
        for (s = 0; s < 12; s++) {
            char *all = decode(&lm->tok, out[s].ids, out[s].n, 1), *before = decode(&lm->tok, out[s].ids, out[s].n - 1, 1);
            long at = strstr(all, "there") ? (long)(strstr(all, "there") - all) : -1;
            int prefix = out[s].n <= ref[s].n && memcmp(out[s].ids, ref[s].ids, sizeof(int) * (size_t)out[s].n) == 0;
            ok_stop &= prefix;
            if (out[s].finish == CLLM_FINISH_STOP) {
                n_stop++;
                ok_stop &= at >= 0 && !strstr(before, "there") && (long)strlen(out[s].text) == at && strncmp(out[s].text, all, (size_t)at) == 0;
            } else ok_stop &= at < 0 && out[s].n == ref[s].n;
            free(all); free(before);
        }
        for (s = 0, n_there = 0; s < 12; s++) {             /* unstopped samples that contain the stop string */
            char *all = decode(&lm->tok, ref[s].ids, ref[s].n, 1);
            n_there += strstr(all, "there") != NULL;
            free(all);
        }
        snprintf(lab, sizeof lab, "%d samples stop at the token completing \"there\" (as many as contain it unstopped), text cut before it; ids a prefix of the unstopped run", n_stop);
        check_true(lab, n_stop == n_there && n_stop > 0 && ok_stop);
        cllm_local_outputs_free(out, 12);
    }
    /* on_token sees every token that does not end the sample, and can stop it */
    memset(&g, 0, sizeof g);
    g.max_new_tokens = 24; g.sampler.seed = 9;
    {
        count_ctx cc = { 0, 0 };
        g.on_token = count_tokens; g.on_token_ctx = &cc;
        lm->calls = 0;
        cllm_local_chat(lm, &c, 1, 1, &g, out, &err);
        ok_count = cc.calls == out[0].n - (out[0].finish == CLLM_FINISH_EOS);
        cllm_local_outputs_free(out, 1);
    }
    {
        count_ctx cc = { 0, 3 };
        g.on_token_ctx = &cc;
        lm->calls = 0;
        check_true("on_token: called once per token before the end of turn; returning 1 at 3 tokens stops there",
                   ok_count && cllm_local_chat(lm, &c, 1, 1, &g, out, &err) == CLLM_OK && out[0].n == 3 && out[0].finish == CLLM_FINISH_STOP && cc.calls == 3);
        cllm_local_outputs_free(out, 1);
    }
    cllm_local_outputs_free(ref, 12);
    cllm_conv_free(&c);
    cllm_free_buffer(prompt);
}

/* ---- (b) the local user simulator: re-asking, against a replay of the same seeds --------------- */

/* What the simulator must do for n conversations starting at counter `call`, replayed with
   cllm_local_chat and cllm_user_sim_parse: attempts[i] samples for conversation i and the text
   of its reply ("" when it had none). Returns the counter after the last sample. */
static uint64_t replay_sim(cllm_local_lm *lm, const cllm_local_gen_config *g, uint64_t call, int n, int retries, int *attempts, char texts[][64]) {
    char *prompt = sim_prompt();
    cllm_conv c;
    int i;
    memset(&c, 0, sizeof c);
    cllm_conv_push(&c, "user", prompt, NULL);
    for (i = 0; i < n; i++) {
        texts[i][0] = 0;
        for (attempts[i] = 1; ; attempts[i]++) {
            cllm_local_output o;
            cllm_reply r;
            cllm_err err;
            memset(&r, 0, sizeof r);
            lm->calls = call++;
            if (cllm_local_chat(lm, &c, 1, 1, g, &o, &err) != CLLM_OK) { printf("  FAIL replay: %s\n", err.msg); check_failures++; break; }
            cllm_user_sim_parse(o.text, NULL, &r);
            if (r.code == CLLM_OK) snprintf(texts[i], 64, "%s", r.text);
            cllm_reply_free(&r);
            cllm_local_outputs_free(&o, 1);
            if (texts[i][0] || attempts[i] > retries) break;
        }
    }
    cllm_conv_free(&c);
    cllm_free_buffer(prompt);
    return call;
}

static void test_user_sim(cllm_local_lm *lm) {
    enum { N = 8 };
    cllm_local_user_sim sim;
    cllm_local_user_sim_config cfg;
    cllm_goal goals[N];
    cllm_conv hist[N];
    cllm_reply out[N];
    cllm_err err;
    char texts[N][64], lab[200];
    int attempts[N], i, ok = 1, total = 0, retried = 0, first_ok = 0;
    uint64_t end;
    printf("the local user simulator (b)\n");
    memset(&cfg, 0, sizeof cfg);
    cfg.prompt = sim_template; cfg.gen.max_new_tokens = 24; cfg.gen.sampler.seed = 3; cfg.max_parse_retries = 8;
    cllm_local_user_sim_init(&sim, lm, &cfg);
    check_true("defaults: temperature 1, termination signal; given: 8 retries",
               sim.cfg.gen.sampler.temperature == 1.0f && !strcmp(sim.cfg.termination, CLLM_TERMINATION_SIGNAL) && sim.cfg.max_parse_retries == 8);
    for (i = 0; i < N; i++) { goals[i] = poem; memset(&hist[i], 0, sizeof hist[i]); }
    end = replay_sim(lm, &sim.cfg.gen, 100, N, 8, attempts, texts);
    for (i = 0; i < N; i++) { total += attempts[i]; retried += attempts[i] > 1; first_ok += attempts[i] == 1; }
    snprintf(lab, sizeof lab, "the replay exercises both paths: %d conversations answered at once, %d re-asked (%d samples)", first_ok, retried, total);
    check_true(lab, retried > 0 && first_ok > 0);
    lm->calls = 100;
    check_true("8 simulator turns, all usable", cllm_user_sim_turns(&sim.sim, goals, hist, N, out, &err) == CLLM_OK);
    for (i = 0; i < N; i++) ok &= out[i].code == CLLM_OK && !strcmp(out[i].text, texts[i]) && !strcmp(out[i].text, "hello there") && !out[i].terminated;
    snprintf(lab, sizeof lab, "replies = the replay's, sample for sample (%ld samples drawn, counter at %d)", sim.local.generations, (int)lm->calls);
    check_true(lab, ok && sim.local.generations == total && lm->calls == end);
    for (i = 0; i < N; i++) cllm_reply_free(&out[i]);

    /* no retries: exactly the conversations whose first sample was unusable fail */
    cfg.max_parse_retries = -1;
    cllm_local_user_sim_init(&sim, lm, &cfg);
    lm->calls = 100;
    end = replay_sim(lm, &sim.cfg.gen, 100, N, 0, attempts, texts);
    lm->calls = 100;
    check_true("no retries: the call reports failures", cllm_user_sim_turns(&sim.sim, goals, hist, N, out, &err) == CLLM_ERR_FORMAT);
    printf("    (%s)\n", err.msg);
    for (ok = 1, i = 0; i < N; i++)
        ok &= texts[i][0] ? out[i].code == CLLM_OK && !strcmp(out[i].text, texts[i])
                          : out[i].code == CLLM_ERR_FORMAT && strstr(out[i].err.msg, "no usable answer in 1 tries") != NULL;
    check_true("no retries: the conversations whose one sample did not parse fail, naming it; the others succeed", ok && sim.local.generations == N && lm->calls == end);
    for (i = 0; i < N; i++) cllm_reply_free(&out[i]);

    /* a generation that fails is final, not re-asked */
    cfg.max_parse_retries = 8; cfg.gen.max_new_tokens = 2000000000;
    cllm_local_user_sim_init(&sim, lm, &cfg);
    check_true("a failed generation is not retried", cllm_user_sim_turns(&sim.sim, goals, hist, 1, out, &err) == CLLM_ERR_ARG && sim.local.generations == 1);
    printf("    (%s)\n", err.msg);
    cllm_reply_free(&out[0]);
}

/* ---- the local assistant and a simulation with both sides local ------------------------------- */

static void test_assistant(cllm_local_lm *lm, cllm_local_lm *sim_lm) {
    static const cllm_message with_sys0[2] = { { "system", "Answer in one word." }, { "user", "Hello there!" } };
    static const cllm_message with_sys1[4] = { { "system", "Answer in one word." }, { "user", "What is 2+2?" }, { "assistant", "4." }, { "user", "And 3+3?" } };
    cllm_local_assistant a;
    cllm_local_assistant_config cfg;
    cllm_local_user_sim sim;
    cllm_local_user_sim_config scfg;
    cllm_conv hist[2], ref_convs[2], convs[2];
    cllm_local_output ref[2];
    cllm_reply out[2], one;
    cllm_sim_status st[2];
    cllm_goal goals[2];
    cllm_err err;
    int i, k, ok = 1;
    printf("the local assistant, and cllm_simulate with both sides local\n");
    memset(&cfg, 0, sizeof cfg);
    cfg.system_prompt = "Answer in one word."; cfg.gen.max_new_tokens = 8; cfg.gen.sampler.seed = 21;
    cllm_local_assistant_init(&a, lm, &cfg);
    check_true("defaults: temperature 0.8 as the API assistant; given: 8 new tokens",
               a.cfg.gen.sampler.temperature == 0.8f && a.cfg.gen.max_new_tokens == 8);
    conv_of(&hist[0], conv0, 1);
    conv_of(&hist[1], conv1 + 1, 3);
    conv_of(&ref_convs[0], with_sys0, 2);
    conv_of(&ref_convs[1], with_sys1, 4);
    lm->calls = 0;
    cllm_local_chat(lm, ref_convs, 2, 1, &a.cfg.gen, ref, &err);
    lm->calls = 0;
    check_true("respond_batch of 2 histories", cllm_assistant_replies(&a.assistant, hist, 2, out, &err) == CLLM_OK);
    check_true("= cllm_local_chat with the system prompt put first (and the history left unchanged)",
               !strcmp(out[0].text, ref[0].text) && !strcmp(out[1].text, ref[1].text) && hist[0].n == 1 && hist[1].n == 3);
    lm->calls = 1;
    memset(&one, 0, sizeof one);
    check_true("respond (one history) = the batch's second reply",
               a.assistant.respond(a.assistant.ctx, &hist[1], &one) == CLLM_OK && !strcmp(one.text, ref[1].text));
    cllm_reply_free(&one);
    for (i = 0; i < 2; i++) { cllm_reply_free(&out[i]); cllm_conv_free(&hist[i]); cllm_conv_free(&ref_convs[i]); }
    cllm_local_outputs_free(ref, 2);

    memset(&scfg, 0, sizeof scfg);
    scfg.prompt = sim_template; scfg.gen.max_new_tokens = 24; scfg.max_parse_retries = 8;
    cllm_local_user_sim_init(&sim, sim_lm, &scfg);
    for (i = 0; i < 2; i++) { goals[i] = poem; memset(&convs[i], 0, sizeof convs[i]); }
    check_true("cllm_simulate: 2 conversations, 4 new messages each", cllm_simulate(&sim.sim, &a.assistant, goals, convs, 2, 4, st, &err) == CLLM_OK);
    for (i = 0; i < 2; i++) {
        ok &= st[i].code == CLLM_OK && st[i].n_new == 4 && convs[i].n == 4 && !st[i].terminated;
        for (k = 0; k < convs[i].n; k++)
            ok &= !strcmp(convs[i].msgs[k].role, k % 2 ? "assistant" : "user") && (k % 2 || !strcmp(convs[i].msgs[k].content, "hello there"));
        cllm_conv_free(&convs[i]);
    }
    check_true("user and assistant alternate; the user says what the simulator was trained to say", ok);
}

/* ---- the command-line tools: `collabllm generate` and examples/chat.c ------------------------- */

/* stdout of a shell command (malloc'd), or NULL if it did not exit with 0. */
static char *run(const char *cmd) {
    FILE *f = popen(cmd, "r");
    char *out = (char *)calloc(1, 1);
    size_t n = 0, got;
    char chunk[4096];
    if (!f) return NULL;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        out = (char *)realloc(out, n + got + 1);
        memcpy(out + n, chunk, got);
        out[n += got] = 0;
    }
    if (pclose(f) != 0) { free(out); return NULL; }
    return out;
}

/* One `generate` output line against a library output: same fields, text, ids, and logprobs
   that round-trip to the same floats. */
static int num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : -1;
}

static int same_line(const cJSON *o, int conv, int sample, const cllm_local_output *want) {
    const cJSON *ids = cJSON_GetObjectItem(o, "ids"), *lps = cJSON_GetObjectItem(o, "logprobs"), *it;
    const cJSON *text = cJSON_GetObjectItem(o, "text"), *fin = cJSON_GetObjectItem(o, "finish");
    int k = 0, ok = o && num(o, "conversation") == conv && num(o, "sample") == sample && num(o, "prompt_tokens") == want->n_prompt &&
             cJSON_IsString(text) && !strcmp(text->valuestring, want->text) && cJSON_IsString(fin) && !strcmp(fin->valuestring, cllm_finish_reason_string(want->finish)) &&
             cJSON_GetArraySize(ids) == want->n && cJSON_GetArraySize(lps) == want->n;
    cJSON_ArrayForEach(it, ids) { ok &= k < want->n && (int)it->valuedouble == want->ids[k]; k++; }
    k = 0;
    cJSON_ArrayForEach(it, lps) { ok &= k < want->n && (float)it->valuedouble == (float)want->logprobs[k]; k++; }
    return ok;
}

/* Parses JSON lines; returns how many (up to max). */
static int parse_lines(char *text, cJSON **rows, int max) {
    int n = 0;
    char *line, *next;
    for (line = text; line && *line && n < max; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        rows[n++] = cJSON_Parse(line);
    }
    return n;
}

static void test_tools(cllm_local_lm *lm) {
    static const char *convs_jsonl =
        "[{\"role\": \"user\", \"content\": \"Hello there!\"}]\n"
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"What is 2+2?\"},"
        " {\"role\": \"assistant\", \"content\": \"4.\"}, {\"role\": \"user\", \"content\": \"And 3+3?\"}]}\n";
    char cmd[4096], file[700], *o1, *o2, *expect = NULL;
    cllm_conv convs[2], sys;
    cllm_local_output ref[6], r1, r2;
    cllm_local_gen_config g = sampled_config();
    cJSON *rows[8];
    cllm_err err;
    int n, i, ok;
    printf("collabllm generate and examples/chat.c\n");
    snprintf(file, sizeof file, "%s/convs.jsonl", tmp_dir);
    cllm_write_file_atomic(file, convs_jsonl, strlen(convs_jsonl), &err);
    conv_of(&convs[0], conv0, 1);
    conv_of(&convs[1], conv1, 4);
    lm->calls = 0;
    cllm_local_chat(lm, convs, 2, 3, &g, ref, &err);
    snprintf(cmd, sizeof cmd, "%s/collabllm generate --model %s --messages %s --n 3 --temperature 0.7 --max-new-tokens 10 --seed 5",
             build_dir, dir_chatml, file);
    o1 = run(cmd);
    o2 = run(cmd);
    if (!check_true("generate runs (twice)", o1 && o2)) { free(o1); free(o2); return; }
    check_true("two processes print the same lines", !strcmp(o1, o2));
    n = parse_lines(o1, rows, 8);
    for (ok = n == 6, i = 0; i < n; i++) { ok &= i >= 6 || same_line(rows[i], i / 3, i % 3, &ref[i]); cJSON_Delete(rows[i]); }
    check_true("6 lines = cllm_local_chat on the 2 conversations x 3 samples (text, ids, logprobs to the float, finish)", ok);
    free(o1); free(o2);
    cllm_local_outputs_free(ref, 6);

    /* --system goes first; chat.c streams the same replies as cllm_local_chat, turn after turn */
    memset(&sys, 0, sizeof sys);
    cllm_conv_push(&sys, "system", "Be brief.", NULL);
    cllm_conv_push(&sys, "user", "Hello there!", NULL);
    lm->calls = 0;
    cllm_local_chat(lm, &sys, 1, 1, &g, &r1, &err);
    snprintf(cmd, sizeof cmd, "head -1 %s > %s.first && %s/collabllm generate --model %s --messages %s.first --temperature 0.7 --max-new-tokens 10 --seed 5 --system 'Be brief.'",
             file, file, build_dir, dir_chatml, file);
    o1 = run(cmd);
    n = o1 ? parse_lines(o1, rows, 8) : 0;
    check_true("--system: the reply = cllm_local_chat with the system message first", n == 1 && same_line(rows[0], 0, 0, &r1));
    if (n) cJSON_Delete(rows[0]);
    free(o1);
    cllm_conv_push(&sys, "assistant", r1.text, NULL);
    cllm_conv_push(&sys, "user", "And 3+3?", NULL);
    cllm_local_chat(lm, &sys, 1, 1, &g, &r2, &err);
    expect = (char *)malloc(strlen(r1.text) + strlen(r2.text) + 3);
    sprintf(expect, "%s\n%s\n", r1.text, r2.text);
    snprintf(cmd, sizeof cmd, "printf 'Hello there!\\nAnd 3+3?\\n' | %s/chat %s --system 'Be brief.' --temperature 0.7 --max-new-tokens 10 --seed 5 2>/dev/null",
             build_dir, dir_chatml);
    o1 = run(cmd);
    check_true("chat: 2 turns streamed token by token = cllm_local_chat's replies on the growing conversation", o1 && !strcmp(o1, expect));
    free(o1); free(expect);
    cllm_local_outputs_free(&r1, 1); cllm_local_outputs_free(&r2, 1);
    cllm_conv_free(&sys);
    for (i = 0; i < 2; i++) cllm_conv_free(&convs[i]);
    snprintf(cmd, sizeof cmd, "%s/collabllm generate --model %s --messages %s --top-p 2 2>/dev/null", build_dir, dir_chatml, file);
    check_true("generate --top-p 2 fails", run(cmd) == NULL);

    /* simulate with both sides local, on the documented task file: the trained simulator, given
       as its template the exact prompt it was trained on, and the random assistant */
    snprintf(file, sizeof file, "%s/sim_template.txt", tmp_dir);
    cllm_write_file_atomic(file, "Goal: write a poem", 18, &err);
    snprintf(cmd, sizeof cmd, "%s/collabllm simulate --tasks data_fmt/task.example.jsonl --out %s/sim.jsonl --user-model-dir %s/sim_trained "
             "--assistant-model-dir %s --user-prompt %s --max-messages 4 --user-max-tokens 24 --assistant-max-tokens 6 "
             "--seed 1 --overwrite "
             "2>/dev/null && cat %s/sim.jsonl",
             build_dir, tmp_dir, tmp_dir, dir_chatml, file, tmp_dir);
    o1 = run(cmd);
    n = o1 ? parse_lines(o1, rows, 8) : 0;
    for (ok = n == 3, i = 0; i < n; i++) {
        const cJSON *msgs = cJSON_GetObjectItem(rows[i], "messages"), *sim = cJSON_GetObjectItem(rows[i], "simulation"), *m;
        int k = 0;
        const cJSON *asst_dir = cJSON_GetObjectItem(sim, "assistant_model_dir");
        ok &= cJSON_GetArraySize(msgs) == 4 && !cJSON_GetObjectItem(rows[i], "error") && cJSON_IsString(cJSON_GetObjectItem(sim, "user_model_dir")) &&
              cJSON_IsString(asst_dir) && !strcmp(asst_dir->valuestring, dir_chatml);
        cJSON_ArrayForEach(m, msgs) {
            const cJSON *content = cJSON_GetObjectItem(m, "content");
            ok &= cJSON_IsString(content) && (k % 2 || !strcmp(content->valuestring, "hello there"));
            k++;
        }
        cJSON_Delete(rows[i]);
    }
    check_true("simulate --user-model-dir --assistant-model-dir: 3 conversations of 4 messages, local provenance", ok);
    free(o1);
}

/* data_fmt/generate.example.jsonl: the fields data_fmt/generate.md documents. */
static void test_format_example(void) {
    char *text = NULL;
    size_t len;
    cllm_err err;
    cJSON *rows[16];
    int n, i, ok;
    printf("data_fmt/generate example\n");
    if (!check_true("read data_fmt/generate.example.jsonl", cllm_read_file("data_fmt/generate.example.jsonl", &text, &len, &err) == CLLM_OK)) return;
    n = parse_lines(text, rows, 16);
    for (ok = n > 0, i = 0; i < n; i++) {
        const cJSON *o = rows[i], *ids = cJSON_GetObjectItem(o, "ids"), *lp = cJSON_GetObjectItem(o, "logprobs"), *f = cJSON_GetObjectItem(o, "finish");
        ok &= o && cJSON_IsNumber(cJSON_GetObjectItem(o, "conversation")) && cJSON_IsNumber(cJSON_GetObjectItem(o, "sample")) &&
              cJSON_IsString(cJSON_GetObjectItem(o, "text")) && cJSON_IsArray(ids) && cJSON_IsArray(lp) && cJSON_GetArraySize(ids) == cJSON_GetArraySize(lp) &&
              cJSON_IsNumber(cJSON_GetObjectItem(o, "prompt_tokens")) && cJSON_IsString(f) &&
              (!strcmp(f->valuestring, "eos") || !strcmp(f->valuestring, "stop") || !strcmp(f->valuestring, "length"));
        cJSON_Delete(rows[i]);
    }
    check_true("every line has conversation, sample, text, ids, logprobs (same length), finish, prompt_tokens", ok);
    cllm_free_buffer(text);
}

int main(void) {
    const char *b = getenv("BUILD");
    cllm_local_lm chatml, llama, sim;
    cllm_err err;
    snprintf(build_dir, sizeof build_dir, "%s", b && *b ? b : "build");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/tmp_local", build_dir);
    check_mkdir(build_dir);
    check_mkdir(tmp_dir);
    memset(&sim, 0, sizeof sim);
    test_load(&chatml, &llama);
    test_chat(&chatml, &llama);
    if (check_true("load the model to train", cllm_local_lm_load(&sim, dir_sim, &err) == CLLM_OK)) {
        test_trained(&sim);
        test_user_sim(&sim);
        test_assistant(&chatml, &sim);
    }
    test_tools(&chatml);
    test_format_example();
    cllm_local_lm_free(&chatml);
    cllm_local_lm_free(&llama);
    cllm_local_lm_free(&sim);
    return check_summary("test_local");
}
