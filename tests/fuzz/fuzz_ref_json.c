/* fuzz_ref_json.c - libFuzzer target for `collabllm ref NAME` (examples/ref_json.h, data_fmt/ref.md).
   Byte 0 picks the function (dpo, gae, ppo-loss, ppo-rewards, grpo, adamw, bleu); the rest is
   its JSON input. Invariants: a success gives one JSON object; a failure names the problem and
   gives nothing. */
#include "fuzz_util.h"
#include "../../examples/ref_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *names[] = { "dpo", "gae", "ppo-loss", "ppo-rewards", "grpo", "adamw", "bleu" };
    char *out = NULL;
    cllm_err err;
    if (size < 1) return 0;
    if (ref_json(names[data[0] % 7], (const char *)data + 1, size - 1, &out, &err) == CLLM_OK) {
        cJSON *o = cJSON_Parse(out);
        FUZZ_CHECK(cJSON_IsObject(o), "the output is one JSON object");
        cJSON_Delete(o);
        free(out);
    } else FUZZ_CHECK(!out && err.msg[0], "a failure names the problem and gives nothing");
    return 0;
}
