/* test_train.c - SFT and DPO training against independent references.
   - DPO loss, TRL metrics and the gradient of every parameter of a tiny checkpoint vs PyTorch
     (tests/gen_train.py), for cDPO (sigmoid + label smoothing) and IPO (length-averaged logps);
     micro-batches accumulated into one step equal the whole batch; a frozen reference copy
     gives zero rewards and loss log 2 at the start.
   - the SFT loss of a rendered conversation equals cllm_forward on labels masked by hand, and
     its gradient equals cllm_backward's.
   - DPO completions located by byte offsets: targets are exactly content + end-of-turn
     (ChatML and Llama-3 templates); truncation keeps the prompt's end and the completion's
     start; the example files of data_fmt/train.md load.
   - DPO on a tiny chat model raises its implicit reward margin. */
#include "../collabllm.h"
#include "check.h"
#include <string.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

#define RTOL 1e-4
static const char *QWEN_TOK = "tests/data/tokenizers/qwen2_style";
static const char *LLAMA_TOK = "tests/data/tokenizers/llama3_style";
static const char *TINY = "tests/data/train/tiny_qwen2";

static cllm_float *read_tensor(cllm_safetensors *st, const char *name, size_t *n) {
    const cllm_st_tensor *t = cllm_st_find(st, name);
    cllm_float *buf;
    if (!t) { printf("  FAIL expected tensor %s missing\n", name); check_failures++; return NULL; }
    buf = (cllm_float *)malloc(((size_t)t->numel + 1) * sizeof(cllm_float));
    if (cllm_st_read(st, t, buf, NULL) != CLLM_OK) { free(buf); return NULL; }
    *n = (size_t)t->numel;
    return buf;
}

/* ---- DPO vs PyTorch ------------------------------------------------------------------------- */

static int json_ids(const cJSON *arr, int **out) {
    const cJSON *e;
    int n = 0;
    *out = (int *)malloc(((size_t)cJSON_GetArraySize(arr) + 1) * sizeof(int));
    cJSON_ArrayForEach(e, arr) (*out)[n++] = (int)e->valuedouble;
    return n;
}

/* dpo_pairs.jsonl: token ids, the first n_prompt are the prompt, the rest are targets */
static int load_id_pairs(cllm_dpo_pair *pairs, int with_ref) {
    FILE *f = fopen("tests/data/train/dpo_pairs.jsonl", "rb");
    char line[4096];
    int n = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f) && n < 3) {
        cJSON *o = cJSON_Parse(line);
        int p = (int)cJSON_GetObjectItem(o, "n_prompt")->valuedouble, k, s;
        for (s = 0; s < 2; s++) {
            cllm_train_seq *q = s ? &pairs[n].rejected : &pairs[n].chosen;
            q->n = json_ids(cJSON_GetObjectItem(o, s ? "rejected_ids" : "chosen_ids"), &q->ids);
            q->target = (unsigned char *)calloc((size_t)q->n, 1);
            for (k = p; k < q->n; k++) q->target[k] = 1;
            q->n_prompt = p;
        }
        pairs[n].ref_chosen = with_ref ? cJSON_GetObjectItem(o, "ref_chosen_logps")->valuedouble : NAN;
        pairs[n].ref_rejected = with_ref ? cJSON_GetObjectItem(o, "ref_rejected_logps")->valuedouble : NAN;
        cJSON_Delete(o);
        n++;
    }
    fclose(f);
    return n;
}

static void check_grads(cllm_model *m, cllm_safetensors *st, const char *prefix) {
    cllm_st_entry entries[64];
    int n = cllm_model_entries(m, m->grads_memory, NULL, CLLM_DT_F32, entries), i;
    double worst = 0;
    for (i = 0; i < n; i++) {
        char name[320];
        size_t k;
        cllm_float *ref;
        snprintf(name, sizeof name, "%.60s%.255s", prefix, entries[i].name);
        if (!(ref = read_tensor(st, name, &k))) continue;
        if (check_tensor(name, entries[i].data, ref, k, RTOL)) {
            double mx = 0, d = 0; size_t j;
            for (j = 0; j < k; j++) { if (fabs(ref[j]) > mx) mx = fabs(ref[j]); if (fabs(entries[i].data[j] - ref[j]) > d) d = fabs(entries[i].data[j] - ref[j]); }
            if (mx > 0 && d / mx > worst) worst = d / mx;
        }
        free(ref);
    }
    printf("  (%d gradient tensors, worst relative difference %.2e)\n", n, worst);
}

static void test_dpo_vs_torch(void) {
    static const char *cases[] = { "sigmoid", "ipo" };
    cllm_model m, ref;
    cllm_safetensors st;
    cllm_dpo_pair pairs[3];
    const cllm_dpo_pair *pp[3];
    const cllm_train_seq *rows[6];
    cllm_err err;
    double logps[6];
    cllm_float *want, *saved;
    size_t n;
    int c, i;
    printf("DPO on tests/data/golden/qwen2_bias vs PyTorch (tests/gen_train.py)\n");
    memset(pairs, 0, sizeof pairs);
    if (!check_true("load model, pairs and expectations", cllm_model_load(&m, "tests/data/golden/qwen2_bias", &err) == CLLM_OK &&
                    load_id_pairs(pairs, 1) == 3 && cllm_st_open(&st, "tests/data/train/dpo_expected.safetensors", &err) == CLLM_OK)) return;
    for (i = 0; i < 3; i++) { pp[i] = &pairs[i]; rows[i] = &pairs[i].chosen; rows[3 + i] = &pairs[i].rejected; }
    check_true("cllm_seq_logps", cllm_seq_logps(&m, rows, 6, 4, logps, &err) == CLLM_OK);
    if ((want = read_tensor(&st, "logps", &n))) { check_tensor_d("summed completion logps (6 rows)", logps, (double[]){want[0], want[1], want[2], want[3], want[4], want[5]}, 6, RTOL); free(want); }
    for (c = 0; c < 2; c++) {
        cllm_dpo_config cfg;
        cllm_train_stats stats;
        char name[64];
        double got[3];
        memset(&cfg, 0, sizeof cfg);
        memset(&stats, 0, sizeof stats);
        if (c == 0) { cfg.loss_type = CLLM_DPO_SIGMOID; cfg.beta = 0.1; cfg.label_smoothing = 0.1; }
        else { cfg.loss_type = CLLM_DPO_IPO; cfg.beta = 0.5; }
        printf(" case %s\n", cases[c]);
        cllm_zero_grad(&m, &err);
        check_true("cllm_dpo_micro_step", cllm_dpo_micro_step(&m, NULL, pp, 3, &cfg, 3.0, &stats, &err) == CLLM_OK);
        got[0] = cllm_train_stats_mean(&stats, "loss");
        snprintf(name, sizeof name, "%s.loss", cases[c]);
        if ((want = read_tensor(&st, name, &n))) { check_tensor_d("loss", got, (double[]){want[0]}, 1, RTOL); free(want); }
        snprintf(name, sizeof name, "%s.rewards_chosen", cases[c]);
        got[0] = cllm_train_stats_mean(&stats, "rewards/chosen");
        if ((want = read_tensor(&st, name, &n))) { check_tensor_d("rewards/chosen (mean)", got, (double[]){(want[0] + want[1] + want[2]) / 3}, 1, RTOL); free(want); }
        snprintf(name, sizeof name, "%s.rewards_rejected", cases[c]);
        got[0] = cllm_train_stats_mean(&stats, "rewards/rejected");
        if ((want = read_tensor(&st, name, &n))) { check_tensor_d("rewards/rejected (mean)", got, (double[]){(want[0] + want[1] + want[2]) / 3}, 1, RTOL); free(want); }
        snprintf(name, sizeof name, "%s.grad.", cases[c]);
        check_grads(&m, &st, name);
    }
    /* two micro-batches (2 pairs + 1 pair) with the step's norm = one batch of 3 */
    {
        cllm_dpo_config cfg;
        cllm_train_stats s1;
        memset(&cfg, 0, sizeof cfg);
        memset(&s1, 0, sizeof s1);
        cfg.beta = 0.1; cfg.label_smoothing = 0.1;
        cllm_zero_grad(&m, &err);
        cllm_dpo_micro_step(&m, NULL, pp, 3, &cfg, 3.0, NULL, &err);
        saved = (cllm_float *)malloc(m.num_params * sizeof(cllm_float));
        memcpy(saved, m.grads_memory, m.num_params * sizeof(cllm_float));
        cllm_zero_grad(&m, &err);
        cllm_dpo_micro_step(&m, NULL, pp, 2, &cfg, 3.0, &s1, &err);
        cllm_dpo_micro_step(&m, NULL, pp + 2, 1, &cfg, 3.0, &s1, &err);
        check_tensor("accumulated micro-batches (2 + 1) == one batch of 3", m.grads_memory, saved, m.num_params, 1e-5);
        free(saved);
        /* TRL stores each micro-batch's mean and logs their mean; the loss stays the step's objective (sum / 3) */
        if ((want = read_tensor(&st, "sigmoid.rewards_chosen", &n))) {
            double got = cllm_train_stats_mean(&s1, "rewards/chosen");
            check_tensor_d("rewards/chosen = mean of the micro-batches' means (TRL)", &got,
                           (double[]){((want[0] + want[1]) / 2 + want[2]) / 2}, 1, RTOL);
            free(want);
        }
        if ((want = read_tensor(&st, "sigmoid.loss", &n))) {
            double got = cllm_train_stats_mean(&s1, "loss");
            check_tensor_d("loss = the mean over the step's pairs", &got, (double[]){want[0]}, 1, RTOL);
            free(want);
        }
    }
    /* a frozen copy of the policy as the reference: z = 0, so loss = log 2 and rewards are 0 */
    {
        cllm_dpo_config cfg;
        cllm_train_stats s;
        cllm_dpo_pair nr[3];
        const cllm_dpo_pair *np[3];
        memset(&cfg, 0, sizeof cfg);
        memset(&s, 0, sizeof s);
        memset(nr, 0, sizeof nr);
        load_id_pairs(nr, 0);
        for (i = 0; i < 3; i++) np[i] = &nr[i];
        check_true("load the reference copy", cllm_model_load(&ref, "tests/data/golden/qwen2_bias", &err) == CLLM_OK);
        check_true("micro-step with a reference model", cllm_dpo_micro_step(&m, &ref, np, 3, &cfg, 3.0, &s, &err) == CLLM_OK);
        check_true("reference = policy: loss = log 2, rewards 0, accuracy 0 (TRL's strict >)",
                   fabs(cllm_train_stats_mean(&s, "loss") - log(2.0)) < 1e-6 && fabs(cllm_train_stats_mean(&s, "rewards/margins")) < 1e-6 &&
                   cllm_train_stats_mean(&s, "rewards/accuracies") == 0);
        check_true("no reference at all is an error naming the options", cllm_dpo_micro_step(&m, NULL, np, 3, &cfg, 3.0, NULL, &err) == CLLM_ERR_ARG && strstr(err.msg, "reference") != NULL);
        for (i = 0; i < 3; i++) { cllm_train_seq_free(&nr[i].chosen); cllm_train_seq_free(&nr[i].rejected); }
        cllm_model_free(&ref);
    }
    for (i = 0; i < 3; i++) { cllm_train_seq_free(&pairs[i].chosen); cllm_train_seq_free(&pairs[i].rejected); }
    cllm_st_close(&st);
    cllm_model_free(&m);
}

/* ---- SFT loss vs a hand-masked forward ------------------------------------------------------ */

static int append_enc(const cllm_tokenizer *tok, const char *text, int *ids, int n, unsigned char *lab, int is_target) {
    int *x = NULL, k = 0, i;
    cllm_tokenizer_encode(tok, text, strlen(text), 0, &x, &k, NULL, NULL);
    for (i = 0; i < k; i++) { ids[n + i] = x[i]; lab[n + i] = (unsigned char)is_target; }
    cllm_free_buffer(x);
    return n + k;
}

static void test_sft_loss(void) {
    cllm_message msgs[5] = {
        { "system", "You are a collaborative assistant." },
        { "user", "Can you help me write a short poem?" },
        { "assistant", "Happily. What should it be about?" },
        { "user", "The sea, please." },
        { "assistant", "Waves fold over waves,\nsalt writes on the evening sand." } };
    cllm_tokenizer tok;
    cllm_model m;
    cllm_train_seq seq;
    cllm_err err;
    int ids[512], labels[512], n = 0, i, same;
    unsigned char tgt[512];
    cllm_batch batch;
    cllm_train_stats st;
    const cllm_train_seq *rows[1];
    cllm_float hand_loss, *g1;
    printf("SFT loss of a rendered conversation vs a hand-masked cllm_forward\n");
    if (!check_true("load tokenizer and tiny model", cllm_tokenizer_load(&tok, QWEN_TOK, &err) == CLLM_OK && cllm_model_load(&m, TINY, &err) == CLLM_OK)) return;
    check_true("cllm_sft_seq", cllm_sft_seq(&tok, msgs, 5, &seq, &err) == CLLM_OK);
    /* by hand: ChatML turns, targets = assistant content + <|im_end|> */
    for (i = 0; i < 5; i++) {
        int asst = strcmp(msgs[i].role, "assistant") == 0;
        char head[64];
        snprintf(head, sizeof head, "<|im_start|>%s\n", msgs[i].role);
        n = append_enc(&tok, head, ids, n, tgt, 0);
        n = append_enc(&tok, msgs[i].content, ids, n, tgt, asst);
        n = append_enc(&tok, "<|im_end|>", ids, n, tgt, asst);
        n = append_enc(&tok, "\n", ids, n, tgt, 0);
    }
    same = seq.n == n;
    for (i = 0; same && i < n; i++) same = seq.ids[i] == ids[i] && seq.target[i] == tgt[i];
    check_true("ids and targets equal the hand-built ChatML turns", same);
    check_true("completion side = the last assistant message", seq.n_prompt > 0 && seq.target[seq.n_prompt] && !seq.target[seq.n_prompt - 1]);
    for (i = 0; i < n; i++) labels[i] = tgt[i] ? ids[i] : -100;
    memset(&batch, 0, sizeof batch);
    batch.B = 1; batch.T = n; batch.input_ids = ids; batch.labels = labels;
    cllm_forward(&m, &batch, NULL, &err);
    hand_loss = m.loss;
    cllm_zero_grad(&m, &err);
    cllm_backward(&m, NULL, NULL, &err);
    g1 = (cllm_float *)malloc(m.num_params * sizeof(cllm_float));
    memcpy(g1, m.grads_memory, m.num_params * sizeof(cllm_float));
    memset(&st, 0, sizeof st);
    rows[0] = &seq;
    cllm_zero_grad(&m, &err);
    check_true("cllm_sft_micro_step", cllm_sft_micro_step(&m, rows, 1, cllm_train_seq_targets(&seq), 1, &st, &err) == CLLM_OK);
    {
        double got = cllm_train_stats_mean(&st, "loss"), want = hand_loss;
        check_tensor_d("SFT loss == hand-masked HF loss", &got, &want, 1, 1e-6);
    }
    check_tensor("SFT gradient == cllm_backward(mean CE)", m.grads_memory, g1, m.num_params, 1e-6);
    free(g1);
    cllm_train_seq_free(&seq);
    cllm_model_free(&m);
    cllm_tokenizer_free(&tok);
}

/* ---- completions by byte offsets, truncation, example files ---------------------------------- */

static void check_completion(const char *tokdir, const char *want_completion) {
    cllm_message prompt[2] = { { "system", "Be brief." }, { "user", "Hello there" } };
    cllm_message done[1] = { { "assistant", "Sure thing." } };
    cllm_render_opts gen;
    cllm_tokenizer tok;
    cllm_train_seq seq;
    cllm_err err;
    char *ptext = NULL, *dec = NULL, label[200];
    int *tids = NULL, nt = 0, i, k = 0, contiguous = 1;
    if (cllm_tokenizer_load(&tok, tokdir, &err) != CLLM_OK) { check_true(err.msg, 0); return; }
    snprintf(label, sizeof label, "%s: cllm_completion_seq", tokdir);
    check_true(label, cllm_completion_seq(&tok, prompt, 2, done, 1, CLLM_COMPLETION_TOKENS_TURN, &seq, &err) == CLLM_OK);
    for (i = seq.n_prompt; i < seq.n; i++) contiguous &= seq.target[i];
    for (i = 0; i < seq.n; i++) k += seq.target[i];
    tids = (int *)malloc(sizeof(int) * (size_t)seq.n);
    for (i = seq.n_prompt; i < seq.n; i++) tids[nt++] = seq.ids[i];
    cllm_tokenizer_decode(&tok, tids, nt, 0, &dec, NULL, &err);
    snprintf(label, sizeof label, "%s: the targets decode to \"%s\" (got \"%s\")", tokdir, want_completion, dec ? dec : "");
    check_true(label, dec && strcmp(dec, want_completion) == 0 && contiguous && k == nt);
    cllm_free_buffer(dec); dec = NULL;
    memset(&gen, 0, sizeof gen);
    gen.add_generation_prompt = 1;
    cllm_chat_render(&tok, prompt, 2, &gen, &ptext, NULL, NULL, NULL, &err);
    cllm_tokenizer_decode(&tok, seq.ids, seq.n_prompt, 0, &dec, NULL, &err);
    snprintf(label, sizeof label, "%s: the tokens before them are the prompt with its generation prompt", tokdir);
    check_true(label, dec && ptext && strcmp(dec, ptext) == 0);
    cllm_free_buffer(dec); cllm_free_buffer(ptext); free(tids);
    cllm_train_seq_free(&seq);
    {
        cllm_message bad[2] = { { "user", "Hi" }, { "assistant", "Hello" } };
        snprintf(label, sizeof label, "%s: a prompt ending with the assistant is refused", tokdir);
        check_true(label, cllm_completion_seq(&tok, bad, 2, done, 1, CLLM_COMPLETION_TOKENS_TURN, &seq, &err) == CLLM_ERR_FORMAT && strstr(err.msg, "prompt") != NULL);
        snprintf(label, sizeof label, "%s: a completion without an assistant message is refused", tokdir);
        check_true(label, cllm_completion_seq(&tok, prompt, 2, prompt + 1, 1, CLLM_COMPLETION_TOKENS_TURN, &seq, &err) == CLLM_ERR_FORMAT);
    }
    cllm_tokenizer_free(&tok);
}

/* ---- completion tokens: turn (the default) and TRL's, vs Hugging Face and PyTorch ------------ */

/* One side of a loaded pair against its fixture entry {"ids", "targets", "n_prompt"}, token by token. */
static int side_matches(const char *label, const cllm_train_seq *s, const cJSON *want) {
    const cJSON *ids = cJSON_GetObjectItem(want, "ids"), *tg = cJSON_GetObjectItem(want, "targets");
    int n = cJSON_GetArraySize(ids), np = (int)cJSON_GetObjectItem(want, "n_prompt")->valuedouble, i;
    char msg[400];
    if (s->n != n || s->n_prompt != np) {
        snprintf(msg, sizeof msg, "%s: %d tokens (prompt %d), want %d (prompt %d)", label, s->n, s->n_prompt, n, np);
        return check_true(msg, 0);
    }
    for (i = 0; i < n; i++) {
        int id = (int)cJSON_GetArrayItem(ids, i)->valuedouble, t = (int)cJSON_GetArrayItem(tg, i)->valuedouble;
        if (s->ids[i] == id && s->target[i] == t) continue;
        snprintf(msg, sizeof msg, "%s: token %d is %d (target %d), want %d (target %d)", label, i, s->ids[i],
                 s->target[i], id, t);
        return check_true(msg, 0);
    }
    return 1;
}

/* The scored tokens of s, each as its bytes in brackets, newlines as \n (for the log). */
static void print_scored(const cllm_tokenizer *tok, const char *label, const cllm_train_seq *s) {
    int i;
    size_t k;
    printf("    %-6s", label);
    for (i = 1; i < s->n; i++) {
        size_t len = 0;
        const char *b = s->target[i] ? cllm_tokenizer_id_bytes(tok, s->ids[i], &len) : NULL;
        if (!b) continue;
        putchar('[');
        for (k = 0; k < len; k++) fputs(b[k] == '\n' ? "\\n" : (char[2]){ b[k], 0 }, stdout);
        putchar(']');
    }
    printf("\n");
}

static const char *MODE_NAMES[] = { "turn", "trl" };

/* tests/data/train/trl_tokens.jsonl (tests/gen_trl_tokens.js): every pair loaded by cllm_dpo_data_load in both modes
   equals, id by id and target by target, what Hugging Face's tokenizer and Jinja give under each rule. The qwen2_style
   pairs are kept in qwen[mode] for the log-prob check. */
static void test_completion_tokens(cllm_dpo_pair qwen[2][3]) {
    FILE *f = fopen("tests/data/train/trl_tokens.jsonl", "rb");
    char line[65536];
    int n_lines = 0, n_ok = 0, n_qwen = 0;
    printf("completion tokens, turn and trl, vs TRL's procedure, HF tokenizers + jinja (tests/gen_trl_tokens.js)\n");
    memset(qwen, 0, 2 * sizeof *qwen);
    if (!check_true("tests/data/train/trl_tokens.jsonl", f != NULL)) return;
    while (fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line), *row = cJSON_CreateObject();
        const char *name = cJSON_GetObjectItem(o, "tokenizer")->valuestring;
        char dir[256], label[300], *text;
        cllm_tokenizer tok;
        cllm_err err;
        int mode, ok = 1;
        FILE *g;
        snprintf(dir, sizeof dir, "tests/data/tokenizers/%s", name);
        cJSON_AddItemReferenceToObject(row, "prompt", cJSON_GetObjectItem(o, "prompt"));
        cJSON_AddItemReferenceToObject(row, "chosen", cJSON_GetObjectItem(o, "chosen"));
        cJSON_AddItemReferenceToObject(row, "rejected", cJSON_GetObjectItem(o, "rejected"));
        text = cJSON_PrintUnformatted(row);
        g = fopen("build/tmp_trl_tokens.jsonl", "wb");
        fprintf(g, "%s\n", text);
        fclose(g);
        cJSON_free(text);
        n_lines++;
        if (!check_true(dir, cllm_tokenizer_load(&tok, dir, &err) == CLLM_OK)) break;
        for (mode = 0; mode < 2; mode++) {
            cllm_dpo_data_config c = { 4096, (cllm_completion_tokens)mode };
            cllm_dpo_data d;
            char key[32];
            snprintf(label, sizeof label, "%s pair %d, %s", name, n_lines, MODE_NAMES[mode]);
            if (!check_true(label, cllm_dpo_data_load(&d, &tok, "build/tmp_trl_tokens.jsonl", &c, &err) == CLLM_OK)) {
                printf("      %s\n", err.msg);
                ok = 0;
                continue;
            }
            snprintf(key, sizeof key, "%s_chosen", MODE_NAMES[mode]);
            ok &= side_matches(label, &d.pairs[0].chosen, cJSON_GetObjectItem(o, key));
            snprintf(key, sizeof key, "%s_rejected", MODE_NAMES[mode]);
            ok &= side_matches(label, &d.pairs[0].rejected, cJSON_GetObjectItem(o, key));
            if (n_lines % 3 == 1 && strcmp(name, "smollm2") != 0) {
                const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "chosen"), 0);
                if (mode == 0) printf("  %s, chosen \"%s\", scored tokens:\n", name, first->child->next->valuestring);
                print_scored(&tok, MODE_NAMES[mode], &d.pairs[0].chosen);
            }
            if (strcmp(name, "qwen2_style") == 0 && n_qwen < 3) {          /* moved out of d */
                qwen[mode][n_qwen] = d.pairs[0];
                memset(&d.pairs[0], 0, sizeof d.pairs[0]);
            }
            cllm_dpo_data_free(&d);
        }
        n_qwen += strcmp(name, "qwen2_style") == 0;
        n_ok += ok;
        cllm_tokenizer_free(&tok);
        cJSON_Delete(row);
        cJSON_Delete(o);
    }
    fclose(f);
    snprintf(line, sizeof line, "%d of %d pairs (3 tokenizers x 3 pairs) identical in both modes, token by token",
             n_ok, n_lines);
    check_true(line, n_lines == 9 && n_ok == 9);
}

/* The qwen2_style pairs on the tiny model, both modes: summed logps and the step-1 DPO gradient (reference = the
   policy, sigmoid, beta 0.1) vs PyTorch (tests/gen_trl_logps.py); and how far apart the two modes are. */
static void test_completion_tokens_logps(cllm_dpo_pair qwen[2][3]) {
    cllm_model m;
    cllm_safetensors st;
    cllm_err err;
    cllm_float *g_turn = NULL;
    double chosen_mean[2] = { 0, 0 };
    int mode, i, n = 3;
    printf("completion tokens on tests/data/train/tiny_qwen2 vs PyTorch (tests/gen_trl_logps.py)\n");
    if (!check_true("load the tiny model and expectations", qwen[0][2].chosen.n > 0 && qwen[1][2].chosen.n > 0 &&
                    cllm_model_load(&m, TINY, &err) == CLLM_OK &&
                    cllm_st_open(&st, "tests/data/train/trl_tokens_expected.safetensors", &err) == CLLM_OK)) return;
    for (mode = 0; mode < 2; mode++) {
        const cllm_train_seq *rows[6];
        const cllm_dpo_pair *pp[3];
        double logps[6], want_d[6];
        cllm_dpo_config cfg;
        cllm_float *want;
        size_t k;
        char name[64];
        memset(&cfg, 0, sizeof cfg);
        cfg.beta = 0.1;
        for (i = 0; i < n; i++) {
            rows[i] = &qwen[mode][i].chosen;
            rows[n + i] = &qwen[mode][i].rejected;
            pp[i] = &qwen[mode][i];
        }
        printf(" mode %s\n", MODE_NAMES[mode]);
        check_true("cllm_seq_logps", cllm_seq_logps(&m, rows, 2 * n, 8, logps, &err) == CLLM_OK);
        snprintf(name, sizeof name, "%s.logps", MODE_NAMES[mode]);
        if ((want = read_tensor(&st, name, &k))) {
            for (i = 0; i < 2 * n; i++) want_d[i] = want[i];
            check_tensor_d("summed logps of the scored tokens (3 chosen, 3 rejected)", logps, want_d, 6, RTOL);
            free(want);
        }
        for (i = 0; i < n; i++) {
            qwen[mode][i].ref_chosen = logps[i];
            qwen[mode][i].ref_rejected = logps[n + i];
            chosen_mean[mode] += logps[i] / n;
        }
        cllm_zero_grad(&m, &err);
        check_true("cllm_dpo_micro_step", cllm_dpo_micro_step(&m, NULL, pp, n, &cfg, n, NULL, &err) == CLLM_OK);
        snprintf(name, sizeof name, "%s.grad.", MODE_NAMES[mode]);
        check_grads(&m, &st, name);
        if (mode == 0) {
            g_turn = (cllm_float *)malloc(m.num_params * sizeof(cllm_float));
            memcpy(g_turn, m.grads_memory, m.num_params * sizeof(cllm_float));
        }
    }
    {
        double diff = 0, norm = 0;
        size_t j;
        for (j = 0; j < m.num_params; j++) {
            diff += ((double)m.grads_memory[j] - g_turn[j]) * ((double)m.grads_memory[j] - g_turn[j]);
            norm += (double)g_turn[j] * g_turn[j];
        }
        printf("  logps/chosen turn %.4f, trl %.4f (x %.2f); step-1 gradient |g_trl - g_turn| / |g_turn| = %.3f\n",
               chosen_mean[0], chosen_mean[1], chosen_mean[1] / chosen_mean[0], sqrt(diff / norm));
        check_true("the modes score different tokens: the gradients differ by more than 10 %", sqrt(diff / norm) > 0.1);
    }
    free(g_turn);
    cllm_st_close(&st);
    cllm_model_free(&m);
}

static void test_truncation(void) {
    cllm_train_seq s;
    int i, ok = 1;
    printf("truncation: keep the end of the prompt and the start of the completion\n");
    memset(&s, 0, sizeof s);
    s.n = 10; s.n_prompt = 6;
    s.ids = (int *)malloc(10 * sizeof(int)); s.target = (unsigned char *)calloc(10, 1);
    for (i = 0; i < 10; i++) { s.ids[i] = i; s.target[i] = i >= 6; }
    check_true("max 8: the prompt loses its first 2 tokens", cllm_train_seq_truncate(&s, 8, -1) == 1 && s.n == 8 && s.n_prompt == 4 && s.ids[0] == 2 && s.ids[7] == 9);
    check_true("max 8 again: nothing to cut", cllm_train_seq_truncate(&s, 8, -1) == 0);
    cllm_train_seq_truncate(&s, 3, -1);
    check_true("max 3: one prompt token (the last) + the completion's first 2", s.n == 3 && s.n_prompt == 1 && s.ids[0] == 5 && s.ids[1] == 6 && s.ids[2] == 7 && !s.target[0] && s.target[1]);
    cllm_train_seq_free(&s);
    {
        cllm_tokenizer tok;
        cllm_sft_data sd;
        cllm_dpo_data dd;
        cllm_dpo_data_config dc24 = { 24, CLLM_COMPLETION_TOKENS_TURN };
        cllm_err err;
        cllm_tokenizer_load(&tok, QWEN_TOK, &err);
        check_true("data_fmt/train_sft.example.jsonl loads (5 rows)", cllm_sft_data_load(&sd, &tok, "data_fmt/train_sft.example.jsonl", 0, &err) == CLLM_OK && sd.n == 5 && sd.n_truncated == 0);
        cllm_sft_data_free(&sd);
        check_true("max_length 20 truncates the SFT rows, each keeps targets", cllm_sft_data_load(&sd, &tok, "data_fmt/train_sft.example.jsonl", 20, &err) == CLLM_OK && sd.n_truncated > 0);
        for (i = 0; i < sd.n; i++) ok &= sd.rows[i].n <= 20 && cllm_train_seq_targets(&sd.rows[i]) > 0;
        check_true("  every row within 20 tokens, with targets", ok);
        cllm_sft_data_free(&sd);
        check_true("data_fmt/train_dpo.example.jsonl loads (4 pairs, message lists and strings)", cllm_dpo_data_load(&dd, &tok, "data_fmt/train_dpo.example.jsonl", NULL, &err) == CLLM_OK && dd.n == 4 && !dd.has_ref);
        cllm_dpo_data_free(&dd);
        check_true("data_fmt/sft.example.jsonl and dpo.example.jsonl (cllm_build_pairs' output) load",
                   cllm_sft_data_load(&sd, &tok, "data_fmt/sft.example.jsonl", 0, &err) == CLLM_OK && sd.n == 2 &&
                   cllm_dpo_data_load(&dd, &tok, "data_fmt/dpo.example.jsonl", NULL, &err) == CLLM_OK && dd.n == 2);
        cllm_sft_data_free(&sd);
        cllm_dpo_data_free(&dd);
        check_true("max_length 24: pairs keep the same prompt tokens", cllm_dpo_data_load(&dd, &tok, "data_fmt/train_dpo.example.jsonl", &dc24, &err) == CLLM_OK && dd.n_truncated > 0);
        for (ok = 1, i = 0; i < dd.n; i++) {
            const cllm_dpo_pair *p = &dd.pairs[i];
            ok &= p->chosen.n <= 24 && p->rejected.n <= 24 && p->chosen.n_prompt == p->rejected.n_prompt &&
                  memcmp(p->chosen.ids, p->rejected.ids, sizeof(int) * (size_t)p->chosen.n_prompt) == 0;
        }
        check_true("  chosen and rejected within 24 tokens, identical prompts", ok);
        cllm_dpo_data_free(&dd);
        {
            FILE *f = fopen("build/tmp_train_bad.jsonl", "wb");
            fputs("{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}], \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": [], \"chosen\": \"a\"}\n", f);
            fclose(f);
            check_true("a bad pair names its line", cllm_dpo_data_load(&dd, &tok, "build/tmp_train_bad.jsonl", NULL, &err) != CLLM_OK && strstr(err.msg, ":2:") != NULL);
            printf("         -> %s\n", err.msg);
            f = fopen("build/tmp_train_bad.jsonl", "wb");
            fputs("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", f);
            fclose(f);
            check_true("an SFT row without an assistant message is refused", cllm_sft_data_load(&sd, &tok, "build/tmp_train_bad.jsonl", 0, &err) == CLLM_ERR_FORMAT && strstr(err.msg, "assistant") != NULL);
            printf("         -> %s\n", err.msg);
            remove("build/tmp_train_bad.jsonl");
        }
        cllm_tokenizer_free(&tok);
    }
}

/* ---- DPO raises the implicit reward margin ------------------------------------------------- */

typedef struct { double margin[64], acc[64]; int n; } margins;
static int record(void *ctx, const cllm_trainer *tr) {
    margins *m = (margins *)ctx;
    if (m->n < 64) { m->margin[m->n] = cllm_train_stats_mean(&tr->last, "rewards/margins"); m->acc[m->n] = cllm_train_stats_mean(&tr->last, "rewards/accuracies"); m->n++; }
    return 0;
}

static void test_dpo_learns(void) {
    cllm_tokenizer tok;
    cllm_model m, ref;
    cllm_dpo_data d;
    cllm_dpo_config dpo;
    cllm_train_config cfg;
    cllm_err err;
    margins rec;
    printf("DPO on a tiny chat model raises the implicit reward margin\n");
    if (!check_true("load", cllm_tokenizer_load(&tok, QWEN_TOK, &err) == CLLM_OK && cllm_model_load(&m, TINY, &err) == CLLM_OK &&
                    cllm_model_load(&ref, TINY, &err) == CLLM_OK && cllm_dpo_data_load(&d, &tok, "data_fmt/train_dpo.example.jsonl", NULL, &err) == CLLM_OK)) return;
    memset(&dpo, 0, sizeof dpo);
    memset(&cfg, 0, sizeof cfg);
    memset(&rec, 0, sizeof rec);
    cfg.lr = 1e-2; cfg.lr_schedule = "constant"; cfg.batch_size = 4; cfg.epochs = 12; cfg.quiet = 1;
    cfg.on_step = record; cfg.on_step_ctx = &rec;
    check_true("cllm_train_dpo, 12 steps", cllm_train_dpo(&m, NULL, &ref, &d, &dpo, &cfg, &err) == CLLM_OK && rec.n == 12);
    printf("  margin step 1 %.4f (acc %.2f) -> step 12 %.4f (acc %.2f)\n", rec.margin[0], rec.acc[0], rec.margin[rec.n - 1], rec.acc[rec.n - 1]);
    check_true("step 1 (policy = reference): margin 0, accuracy 0", fabs(rec.margin[0]) < 1e-9 && rec.acc[0] == 0);
    check_true("step 12: margin > 0.05 and every pair ranked right", rec.margin[rec.n - 1] > 0.05 && rec.acc[rec.n - 1] == 1);
    cllm_dpo_data_free(&d);
    cllm_model_free(&m); cllm_model_free(&ref);
    cllm_tokenizer_free(&tok);
}

int main(void) {
    test_dpo_vs_torch();
    test_sft_loss();
    printf("DPO completions located by byte offsets\n");
    check_completion(QWEN_TOK, "Sure thing.<|im_end|>");
    check_completion(LLAMA_TOK, "Sure thing.<|eot_id|>");
    test_truncation();
    test_dpo_learns();
    {
        cllm_dpo_pair qwen[2][3];
        int i;
        test_completion_tokens(qwen);
        test_completion_tokens_logps(qwen);
        for (i = 0; i < 6; i++) {
            cllm_train_seq_free(&qwen[i / 3][i % 3].chosen);
            cllm_train_seq_free(&qwen[i / 3][i % 3].rejected);
        }
    }
    return check_summary("test_train");
}
