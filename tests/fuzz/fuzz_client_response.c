/* fuzz_client_response.c - libFuzzer target for the chat-completions client's response parsing,
   without a network: the body of a 2xx reply goes to the parser the transfer engine calls
   (cllm__parse_completion), the body of an error reply to the one that extracts the endpoint's
   explanation (cllm__endpoint_message). The client holds a fake API key.
   Invariants: a success carries the content string and usage counts of -1 or more; a failure
   carries a one-line message; no message holds the API key, nor any 8 bytes in a row of it,
   even where the body holds them (an endpoint may echo a truncated key). */
#include "fuzz_util.h"

static const char key[] = "sk-FUZZ0secret1KEY2zq7";

static void check_no_key(const char *msg) {
    size_t i, k = strlen(key), n = strlen(msg);
    char window[9];
    FUZZ_CHECK(!fuzz_contains(msg, n, key), "the API key never appears in a message");
    for (i = 0; i + 8 <= k; i++) {
        memcpy(window, key + i, 8);
        window[8] = 0;
        FUZZ_CHECK(!fuzz_contains(msg, n, window), "no 8 bytes in a row of the API key appear in a message");
    }
    for (i = 0; i < n; i++) FUZZ_CHECK((unsigned char)msg[i] >= 0x20, "messages are one line");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cllm_client c;
    cllm_chat_result r;
    char said[300];
    size_t caps[] = { 1, 5, 80, sizeof said }, k;
    memset(&c, 0, sizeof c);
    c.url = (char *)"http://127.0.0.1:9/v1/chat/completions";
    c.key = (char *)key;
    memset(&r, 0, sizeof r);
    r.prompt_tokens = r.completion_tokens = r.total_tokens = -1;
    r.code = cllm__parse_completion(&c, (const char *)data, size, &r);
    if (r.code == CLLM_OK) {
        FUZZ_CHECK(r.content != NULL, "a success carries content");
        FUZZ_CHECK(r.prompt_tokens >= -1 && r.completion_tokens >= -1 && r.total_tokens >= -1, "usage is -1 (absent) or a count");
        FUZZ_CHECK(strlen(r.finish_reason) < sizeof r.finish_reason, "finish_reason fits");
    } else {
        FUZZ_CHECK(r.content == NULL && r.err.msg[0], "a failure has a message and no content");
        check_no_key(r.err.msg);
    }
    FUZZ_CHECK(c.usage.prompt_tokens >= 0 && c.usage.completion_tokens >= 0 && c.usage.total_tokens >= 0, "usage totals never go negative");
    cllm_chat_result_free(&r);
    for (k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        cllm__endpoint_message(&c, (const char *)data, size, said, caps[k]);
        FUZZ_CHECK(strlen(said) < caps[k], "the endpoint message fits its buffer");
        check_no_key(said);
    }
    return 0;
}
