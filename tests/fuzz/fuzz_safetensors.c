/* fuzz_safetensors.c - libFuzzer target for the safetensors header validator.
   Input: the first bytes of a .safetensors file (8-byte length + header JSON + data). The data
   bytes are not read here; the validator only needs the file size. */
#define COLLABLLM_IMPLEMENTATION
#include "../../collabllm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cllm_safetensors st;
    cllm_err err;
    uint64_t hlen = 0;
    int i;
    if (size < 8) return 0;
    for (i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    if (hlen > size - 8) return 0;       /* cllm_st_open rejects this before parsing */
    memset(&st, 0, sizeof st);
    if (cllm__st_parse_header(&st, "fuzz", (const char *)data + 8, hlen, size, &err) == CLLM_OK) {
        /* every accepted tensor must lie inside the file */
        for (i = 0; i < st.n; i++) if (st.data_start + st.tensors[i].end > size) __builtin_trap();
    }
    cllm_st_close(&st);
    return 0;
}
