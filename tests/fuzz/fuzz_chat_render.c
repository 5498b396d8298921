/* fuzz_chat_render.c - libFuzzer target for chat rendering (cllm_chat_render) with arbitrary
   messages. Byte 0 picks the template family (ChatML as SmolLM2 and as Qwen2.5, Qwen3, Llama-3,
   Llama-3.1) and the options; the rest is a JSON array of {"role", "content"} objects (elements
   without two strings are left out, any role string is passed on).
   Invariants of a rendering: the ids decode to the rendered text (NFC of it for the NFC
   tokenizer), the mask is 0/1, and it marks tokens exactly when there is an assistant message. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *names[] = { "smollm2", "qwen2_style", "qwen2_style", "llama3_style", "llama3_style" };
    cllm_tokenizer tok;
    cllm_render_opts o;
    cllm_message *msgs;
    cJSON *root, *arr, *it;
    char *text = NULL, *back = NULL;
    int *ids = NULL, n_ids = 0, n = 0, i, ones = 0, assistant = 0, setup;
    unsigned char *mask = NULL;
    cllm_err err;
    if (size < 1) return 0;
    setup = data[0] % 5;
    tok = *fuzz_tokenizer(names[setup]);          /* a shallow copy: only chat_family changes */
    if (setup == 2) tok.chat_family = CLLM_CHAT_QWEN3;
    if (setup == 4) tok.chat_family = CLLM_CHAT_LLAMA3;
    memset(&o, 0, sizeof o);
    o.add_generation_prompt = (data[0] / 5) & 1;
    o.enable_thinking = (data[0] / 10) & 1;
    if ((data[0] / 20) & 1) o.date_string = "01 Jan 2030";
    root = cJSON_ParseWithLength((const char *)data + 1, size - 1);
    msgs = (cllm_message *)calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *msgs);
    arr = cJSON_IsArray(root) ? root : NULL;
    cJSON_ArrayForEach(it, arr) {
        const char *role = cllm__json_str(it, "role"), *content = cllm__json_str(it, "content");
        if (!role || !content) continue;
        msgs[n].role = role; msgs[n].content = content;
        assistant |= strcmp(role, "assistant") == 0;
        n++;
    }
    if (cllm_chat_render(&tok, msgs, n, &o, &text, &ids, &mask, &n_ids, &err) == CLLM_OK) {
        size_t len = strlen(text), want_n;
        char *want = text;
        FUZZ_CHECK(cllm_tokenizer_decode(&tok, ids, n_ids, 0, &back, NULL, &err) == CLLM_OK, "decode succeeds");
        if (tok.priv->nfc) {
            cllm__ntext t;
            memset(&t, 0, sizeof t);
            cllm__nfc(tok.priv->comp, tok.priv->ncomp, text, len, 0, &t);
            stbds_arrfree(t.os); stbds_arrfree(t.oe);
            want = t.b.p ? t.b.p : text;
        }
        want_n = strlen(want);
        FUZZ_CHECK(strlen(back) == want_n && memcmp(back, want, want_n) == 0, "ids decode to the rendered text");
        if (want != text) CLLM_FREE(want);
        for (i = 0; i < n_ids; i++) { FUZZ_CHECK(mask[i] <= 1, "mask is 0/1"); ones += mask[i]; }
        FUZZ_CHECK((ones > 0) == assistant, "tokens are trainable exactly when there is an assistant message");
    } else {
        FUZZ_CHECK(err.msg[0] && !text && !ids && !mask, "a failure names the problem and returns nothing");
    }
    CLLM_FREE(text); CLLM_FREE(back); CLLM_FREE(ids); CLLM_FREE(mask);
    free(msgs);
    cJSON_Delete(root);
    return 0;
}
