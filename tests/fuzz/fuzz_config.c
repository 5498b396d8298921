/* fuzz_config.c - libFuzzer target for config.json parsing. */
#define COLLABLLM_IMPLEMENTATION
#include "../../collabllm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cllm_config c;
    cllm_err err;
    if (cllm_config_parse(&c, (const char *)data, size, &err) == CLLM_OK) {
        /* an accepted config must describe a model we can size without overflow */
        if (c.head_dim <= 0 || c.n_heads % c.n_kv_heads || c.vocab_size <= 0) __builtin_trap();
    }
    return 0;
}
