/* chat.c - talk to a local model: a multi-turn REPL over any supported model directory.
   Demonstrates cllm_local_lm_load, cllm_local_chat on a growing conversation, and streaming the
   reply as it is generated (the on_token callback feeding a cllm_decode_stream).

     build/chat DIR [--system TEXT] [--temperature 0.8] [--top-p 1] [--max-new-tokens 512] [--seed 0]

   Reads one user message per line from stdin; the reply goes to stdout as it is generated,
   followed by a newline; prompts and messages go to stderr. An empty line or EOF ends it. */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include <stdlib.h>
#include <string.h>

static const char *flag(int argc, char **argv, const char *name, const char *def) {
    int i;
    for (i = 0; i < argc - 1; i++) if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

/* on_token: decode the newest token (UTF-8 held back until complete) and print it at once. */
static int stream_token(void *ctx, const int *ids, int n) {
    const char *text;
    size_t len;
    if (cllm_decode_stream_push((cllm_decode_stream *)ctx, ids[n - 1], &text, &len, NULL) == CLLM_OK) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv) {
    cllm_local_lm lm;
    cllm_local_gen_config gen;
    cllm_decode_stream ds;
    cllm_conv conv;
    cllm_err err;
    char line[8192];
    const char *system = flag(argc, argv, "--system", NULL);
    if (argc < 2 || argv[1][0] == '-') { fprintf(stderr, "usage: chat MODEL_DIR [--system TEXT] [--temperature T] [--top-p P] [--max-new-tokens N] [--seed S]\n"); return 2; }
    if (cllm_local_lm_load(&lm, argv[1], &err) != CLLM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    memset(&gen, 0, sizeof gen);
    gen.sampler.temperature = (float)atof(flag(argc, argv, "--temperature", "0.8"));
    gen.sampler.greedy = gen.sampler.temperature == 0;
    gen.sampler.top_p = (float)atof(flag(argc, argv, "--top-p", "1"));
    gen.sampler.seed = (uint64_t)strtoull(flag(argc, argv, "--seed", "0"), NULL, 10);
    gen.max_new_tokens = atoi(flag(argc, argv, "--max-new-tokens", "512"));
    gen.on_token = stream_token;
    gen.on_token_ctx = &ds;
    memset(&conv, 0, sizeof conv);
    memset(&ds, 0, sizeof ds);
    if (system) cllm_conv_push(&conv, "system", system, NULL);
    fprintf(stderr, "%s: %d layers, vocabulary %d, chat template %s. Empty line to quit.\n", argv[1],
            lm.model.config.n_layers, lm.model.config.vocab_size, cllm_chat_family_name(lm.tok.chat_family));
    for (;;) {
        cllm_local_output out;
        const char *rest;
        size_t len;
        fprintf(stderr, "> ");
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) break;
        cllm_conv_push(&conv, "user", line, NULL);
        cllm_decode_stream_free(&ds);
        cllm_decode_stream_init(&ds, &lm.tok, 1);                 /* special tokens stay out, as in out.text */
        if (cllm_local_chat(&lm, &conv, 1, 1, &gen, &out, &err) != CLLM_OK) { fprintf(stderr, "error: %s\n", err.msg); break; }
        if (cllm_decode_stream_flush(&ds, &rest, &len, NULL) == CLLM_OK) fwrite(rest, 1, len, stdout);
        printf("\n");
        fflush(stdout);
        fprintf(stderr, "[%d tokens, %s]\n", out.n, cllm_finish_reason_string(out.finish));
        cllm_conv_push(&conv, "assistant", out.text, NULL);
        cllm_local_outputs_free(&out, 1);
    }
    cllm_decode_stream_free(&ds);
    cllm_conv_free(&conv);
    cllm_local_lm_free(&lm);
    return 0;
}
