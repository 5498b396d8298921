/* fuzz_client_response.c - libFuzzer target for the chat-completions client's response parsing,
   without a network: the body of a 2xx reply goes to the parser the transfer engine calls
   (cllm__parse_completion), the body of an error reply to the one that extracts the endpoint's
   explanation (cllm__endpoint_message). The client holds a fake API key.
   Invariants: a success carries the content string (valid UTF-8) and usage counts of -1 or
   more; a failure carries a one-line message; no message, content or finish_reason holds the API
   key, nor any 8 bytes in a row of it, even where the body holds them (an endpoint may echo a
   truncated key, or spell it with \u escapes); with reject_incomplete (inputs of odd length) a reply
   cut by length or a content filter is a failure. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cllm_client c;
    cllm_chat_result r;
    char said[300];
    size_t caps[] = { 1, 5, 80, sizeof said }, k;
    fuzz_register_key();
    memset(&c, 0, sizeof c);
    c.url = (char *)"http://127.0.0.1:9/v1/chat/completions";
    c.key = (char *)fuzz_key;
    c.cfg.reject_incomplete = (int)(size & 1);
    memset(&r, 0, sizeof r);
    r.prompt_tokens = r.completion_tokens = r.total_tokens = -1;
    r.code = cllm__parse_completion(&c, (const char *)data, size, &r);
    if (r.code == CLLM_OK) {
        FUZZ_CHECK(r.content != NULL, "a success carries content");
        FUZZ_CHECK(r.prompt_tokens >= -1 && r.completion_tokens >= -1 && r.total_tokens >= -1, "usage is -1 (absent) or a count");
        FUZZ_CHECK(strlen(r.finish_reason) < sizeof r.finish_reason, "finish_reason fits");
        FUZZ_CHECK(r.replaced >= 0, "the replacement count is a count");
        fuzz_check_clean(r.content, 0, "the content is valid UTF-8 and holds no 8 bytes of the API key");
        FUZZ_CHECK(!c.cfg.reject_incomplete || !(strcmp(r.finish_reason, "length") == 0 ||
                                                 strcmp(r.finish_reason, "content_filter") == 0),
                   "reject_incomplete: a reply cut by length or a content filter is a failure");
    } else {
        FUZZ_CHECK(r.content == NULL && r.err.msg[0], "a failure has a message and no content");
        fuzz_check_clean(r.err.msg, 1, "a failure's message is one line of UTF-8 without the API key");
    }
    fuzz_check_clean(r.finish_reason, 1, "finish_reason is one line of UTF-8 without the API key");
    FUZZ_CHECK(c.usage.prompt_tokens >= 0 && c.usage.completion_tokens >= 0 && c.usage.total_tokens >= 0, "usage totals never go negative");
    cllm_chat_result_free(&r);
    for (k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        cllm__endpoint_message((const char *)data, size, said, caps[k]);
        FUZZ_CHECK(strlen(said) < caps[k], "the endpoint message fits its buffer");
        fuzz_check_clean(said, 1, "the endpoint's message is one line of UTF-8 without the API key");
    }
    return 0;
}
