/* collabllm.c - the collabllm.h command-line tool.
   Demonstrates the library end to end; each subcommand is a short function over the public API.

     build/collabllm dump --model DIR --input FILE.jsonl --out FILE.safetensors [--grads]
     build/collabllm ref NAME < input.json > output.json

   Run `build/collabllm help` for the list. Formats are documented in data_fmt/. */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include <stdlib.h>
#include <string.h>

/* ---- flag parsing: --name value pairs and bare --switches ---------------------------------- */

static const char *flag(int argc, char **argv, const char *name) {
    int i;
    for (i = 0; i < argc - 1; i++) if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static int has_switch(int argc, char **argv, const char *name) {
    int i;
    for (i = 0; i < argc; i++) if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

static const char *need(int argc, char **argv, const char *name, const char *usage) {
    const char *v = flag(argc, argv, name);
    if (!v) fprintf(stderr, "missing %s\nusage: %s\n", name, usage);
    return v;
}

static int fail(const cllm_err *err) {
    fprintf(stderr, "error: %s\n", err->msg);
    return 1;
}

/* ---- dump: logits, loss, logps (and gradients) of a checkpoint on a token file ------------- */
/* The interface other implementations use to check themselves against this one; the output
   format is data_fmt/dump.md. */

static int cmd_dump(int argc, char **argv) {
    static const char *usage = "collabllm dump --model DIR --input FILE.jsonl --out FILE.safetensors [--grads]";
    const char *dir = need(argc, argv, "--model", usage), *in = need(argc, argv, "--input", usage), *out = need(argc, argv, "--out", usage);
    int grads = has_switch(argc, argv, "--grads"), rc = 1, n = 0;
    cllm_model m;
    cllm_batch batch;
    cllm_err err;
    cllm_float *logits = NULL;
    cllm_st_entry *entries = NULL;
    if (!dir || !in || !out) return 2;
    if (cllm_model_load(&m, dir, &err) != CLLM_OK) return fail(&err);
    if (cllm_batch_read_jsonl(&batch, in, &err) != CLLM_OK) { cllm_model_free(&m); return fail(&err); }
    logits = (cllm_float *)malloc((size_t)batch.B * batch.T * m.config.vocab_size * sizeof(cllm_float));
    entries = (cllm_st_entry *)calloc(3 + (size_t)cllm_model_tensor_count(&m), sizeof *entries);
    if (!logits || !entries) { fprintf(stderr, "error: out of memory\n"); goto done; }
    if (cllm_forward(&m, &batch, logits, &err) != CLLM_OK) { fail(&err); goto done; }
    strcpy(entries[n].name, "logits"); entries[n].ndim = 3;
    entries[n].shape[0] = batch.B; entries[n].shape[1] = batch.T; entries[n].shape[2] = m.config.vocab_size; entries[n++].data = logits;
    strcpy(entries[n].name, "loss"); entries[n].ndim = 0; entries[n++].data = &m.loss;
    strcpy(entries[n].name, "logps"); entries[n].ndim = 1; entries[n].shape[0] = batch.B; entries[n++].data = m.seq_logp;
    if (grads) {
        if (cllm_zero_grad(&m, &err) != CLLM_OK || cllm_backward(&m, NULL, NULL, &err) != CLLM_OK) { fail(&err); goto done; }
        n += cllm_model_entries(&m, m.grads_memory, "grad.", CLLM_DT_F32, entries + n);
    }
    if (cllm_st_save(out, entries, n, &err) != CLLM_OK) { fail(&err); goto done; }
    fprintf(stderr, "dump: B=%d T=%d V=%d loss=%.6f (%d targets) -> %s (%d tensors)\n",
            batch.B, batch.T, m.config.vocab_size, (double)m.loss, m.n_targets, out, n);
    rc = 0;
done:
    free(logits); free(entries);
    cllm_batch_free(&batch);
    cllm_model_free(&m);
    return rc;
}

/* ---- ref: the pure training math (DPO, GAE, PPO, GRPO, AdamW, BLEU) as JSON in, JSON out ---- */
/* One JSON object on stdin, the result object on stdout; shapes in data_fmt/ref.md. */

static int cmd_ref(int argc, char **argv) {
    char *input = NULL, *output = NULL;
    size_t len = 0, cap = 0;
    cllm_err err;
    int rc;
    if (argc < 1) { fprintf(stderr, "usage: collabllm ref dpo|gae|ppo-loss|ppo-rewards|grpo|adamw|bleu < input.json\n"); return 2; }
    for (;;) {                                   /* read all of stdin */
        size_t got;
        if (len + 4096 + 1 > cap) {
            char *grown = (char *)realloc(input, cap = 2 * cap + 4096 + 1);
            if (!grown) { free(input); fprintf(stderr, "error: out of memory\n"); return 1; }
            input = grown;
        }
        got = fread(input + len, 1, 4096, stdin);
        len += got;
        if (got == 0) break;
    }
    rc = cllm_ref_json(argv[0], input, len, &output, &err) == CLLM_OK;
    free(input);
    if (!rc) return fail(&err);
    printf("%s\n", output);
    cllm_free_buffer(output);
    return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;
static const command commands[] = {
    { "dump", cmd_dump, "logits, loss, logps and (--grads) gradients of a checkpoint on token rows" },
    { "ref",  cmd_ref,  "DPO / GAE / PPO / GRPO / AdamW / BLEU reference math: JSON on stdin -> stdout" },
};

int main(int argc, char **argv) {
    size_t i;
    if (argc >= 2) for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "usage: collabllm COMMAND [flags]\n\ncommands:\n");
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(stderr, "  %-14s %s\n", commands[i].name, commands[i].help);
    return argc >= 2 && strcmp(argv[1], "help") == 0 ? 0 : 2;
}
