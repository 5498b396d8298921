/* fuzz_batch_jsonl.c - libFuzzer target for the token-row JSONL reader (cllm_batch_read_jsonl). */
#define COLLABLLM_IMPLEMENTATION
#include "../../collabllm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    cllm_batch b;
    cllm_err err;
    FILE *f;
    if (!path[0]) snprintf(path, sizeof path, "/tmp/cllm_fuzz_batch_%ld.jsonl", (long)getpid());
    f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    if (cllm_batch_read_jsonl(&b, path, &err) == CLLM_OK) {
        int i;
        for (i = 0; i < b.B * b.T; i++) if (b.attn_mask[i] != 0 && b.attn_mask[i] != 1) __builtin_trap();
        cllm_batch_free(&b);
    }
    return 0;
}
