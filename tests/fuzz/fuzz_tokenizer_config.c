/* fuzz_tokenizer_config.c - libFuzzer target for tokenizer_config.json: special tokens and the
   chat-template family detection, on top of a fixed tokenizer.json (byte 0 of the input picks
   llama3_style, qwen2_style or smollm2; the rest is the tokenizer_config.json text).
   Invariants: special-token ids lie in the vocabulary; a detected family renders a fixed
   conversation, its ids decode back to the rendered text, and the assistant mask is 0/1 with
   the assistant's tokens in it. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *bases[] = { "llama3_style", "qwen2_style", "smollm2" };
    static const cllm_message conv[] = { { "system", "Be brief." }, { "user", "Hi there" }, { "assistant", "Hello! How can I help?" }, { "user", "Thanks" } };
    const cllm_tokenizer *base;
    struct cllm__tok saved;
    cllm_tokenizer t;
    cllm_err err;
    cllm_result rc;
    cJSON *config;
    if (size < 1) return 0;
    base = fuzz_tokenizer(bases[data[0] % 3]);
    saved = *base->priv;                       /* family detection writes two fields of priv */
    memset(&t, 0, sizeof t);
    t.priv = base->priv;
    t.n_ids = base->n_ids;
    t.bos_id = t.eos_id = t.pad_id = t.add_bos_token = -1;
    config = cJSON_ParseWithLength((const char *)data + 1, size - 1);
    rc = cllm__load_config(&t, config, &err);
    cJSON_Delete(config);
    if (rc == CLLM_OK) {
        int opt;
        FUZZ_CHECK(t.bos_id >= -1 && t.bos_id < t.n_ids && t.eos_id >= -1 && t.eos_id < t.n_ids && t.pad_id >= -1 && t.pad_id < t.n_ids, "special ids lie in the vocabulary");
        FUZZ_CHECK((t.bos_id >= 0) == (t.bos_token != NULL) && (t.eos_id >= 0) == (t.eos_token != NULL), "a token string comes with its id");
        FUZZ_CHECK(t.chat_family >= CLLM_CHAT_NONE && t.chat_family <= CLLM_CHAT_LLAMA31 && (!t.chat_family || t.chat_template), "a family comes from a template");
        for (opt = 0; t.chat_family && opt < 4; opt++) {
            cllm_render_opts o;
            char *text = NULL, *back = NULL;
            int *ids = NULL, n = 0, i, ones = 0;
            unsigned char *mask = NULL;
            memset(&o, 0, sizeof o);
            o.add_generation_prompt = opt & 1;
            o.enable_thinking = opt >> 1;
            rc = cllm_chat_render(&t, conv, 3 + (opt & 1), &o, &text, &ids, &mask, &n, &err);
            FUZZ_CHECK(rc == CLLM_OK, "a detected family renders system/user/assistant messages");
            FUZZ_CHECK(cllm_tokenizer_decode(&t, ids, n, 0, &back, NULL, &err) == CLLM_OK && strcmp(back, text) == 0, "ids decode to the rendered text");
            for (i = 0; i < n; i++) { FUZZ_CHECK(mask[i] <= 1, "mask is 0/1"); ones += mask[i]; }
            FUZZ_CHECK(ones > 0 && ones < n, "the assistant message, and only part of the text, is trainable");
            CLLM_FREE(text); CLLM_FREE(back); CLLM_FREE(ids); CLLM_FREE(mask);
        }
    } else FUZZ_CHECK(err.msg[0] != 0, "a failure names the problem");
    CLLM_FREE(t.chat_template); CLLM_FREE(t.bos_token); CLLM_FREE(t.eos_token); CLLM_FREE(t.pad_token);
    *base->priv = saved;
    return 0;
}
