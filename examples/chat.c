/* chat.c - talk to a local model: a multi-turn REPL over any supported model directory.
   Demonstrates cllm_local_lm_load, cllm_local_chat on a growing conversation, and streaming the
   reply as it is generated (the on_token callback feeding a cllm_decode_stream).

     build/chat DIR [--system TEXT] [--temperature 0.8] [--top-p 1] [--max-new-tokens 512] [--seed 0]
     build/chat --help

   Reads one user message per line from stdin; the reply goes to stdout as it is generated,
   followed by a newline; prompts and messages go to stderr. An empty line or EOF ends it.
   `make` links it with the library's object; alone: cc -std=c99 -O2 -DCOLLABLLM_IMPLEMENTATION
   examples/chat.c -o chat -lcjson -lcurl -lstb -lm */
#define _XOPEN_SOURCE 700
#include "../collabllm.h"
#include <stdlib.h>
#include <string.h>
#include "flags.h"

static const flag_spec chat_flags[] = {
    { .name = "--system", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "none",
      .help = "a system message first in the conversation" },
    { .name = "--temperature", .type = FLAG_REAL, .metavar = "T", .min = 0, .max = 1e6, .def = "0.8",
      .help = "sampling temperature, 0 = greedy" },
    { .name = "--top-p", .type = FLAG_REAL, .metavar = "P", .min = 0, .max = 1, .lower = FLAG_MIN_OPEN, .def = "1",
      .help = "sample among the most likely tokens holding this much probability, 1 = off" },
    { .name = "--max-new-tokens", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e7, .def = "512",
      .help = "tokens per reply at most" },
    { .name = "--seed", .type = FLAG_INT, .metavar = "S", .min = 0, .max = 9007199254740992.0, .def = "0",
      .help = "random seed of the replies" },
};
static const flag_group chat_group = FLAG_GROUP("chat", chat_flags);
static const flag_command chat_command = {
    "chat", "Talk to a local model: one user message per line on stdin, the reply streamed to stdout.",
    "MODEL_DIR is a Hugging Face chat model directory (weights, tokenizer.json, tokenizer_config.json with its "
    "chat template). An empty line or end of input ends the conversation.", "MODEL_DIR",
    { &chat_group, NULL },
};

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
    const char *system;
    const char *dir;
    flags fl;
    flags_status parsed = flags_parse(&fl, &chat_command, argc - 1, argv + 1);
    if (parsed != FLAGS_OK) return parsed == FLAGS_HELP ? 0 : 2;
    system = flag_text(&fl, "--system");
    dir = fl.positional;
    if (cllm_local_lm_load(&lm, dir, &err) != CLLM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    memset(&gen, 0, sizeof gen);
    gen.sampler.temperature = (float)flag_number(&fl, "--temperature");
    gen.sampler.greedy = gen.sampler.temperature == 0;
    gen.sampler.top_p = (float)flag_number(&fl, "--top-p");
    gen.sampler.seed = (uint64_t)flag_number(&fl, "--seed");
    gen.max_new_tokens = (int)flag_number(&fl, "--max-new-tokens");
    gen.on_token = stream_token;
    gen.on_token_ctx = &ds;
    memset(&conv, 0, sizeof conv);
    memset(&ds, 0, sizeof ds);
    if (system) cllm_conv_push(&conv, "system", system, NULL);
    fprintf(stderr, "%s: %d layers, vocabulary %d, chat template %s. Empty line to quit.\n", dir,
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
