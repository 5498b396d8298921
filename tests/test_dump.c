/* test_dump.c - the `collabllm dump` command, end to end: it runs the built tool on a golden
   case and compares the file it writes with the PyTorch reference, tensor by tensor. */
#include "../collabllm.h"
#include "check.h"
#include <string.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

static void compare_file(const char *got_path, const char *ref_path) {
    cllm_safetensors got, ref;
    cllm_err err;
    int i;
    if (!check_true("open dump output", cllm_st_open(&got, got_path, &err) == CLLM_OK)) { printf("    %s\n", err.msg); return; }
    if (!check_true("open reference", cllm_st_open(&ref, ref_path, &err) == CLLM_OK)) { printf("    %s\n", err.msg); cllm_st_close(&got); return; }
    check_true("same tensor count as the reference", got.n == ref.n);
    for (i = 0; i < ref.n; i++) {
        const cllm_st_tensor *r = &ref.tensors[i], *g = cllm_st_find(&got, r->name);
        cllm_float *a, *b;
        if (!g || g->numel != r->numel || g->ndim != r->ndim) { printf("  FAIL %s missing or misshapen in the dump\n", r->name); check_failures++; continue; }
        a = (cllm_float *)malloc((size_t)g->numel * sizeof *a + 1); b = (cllm_float *)malloc((size_t)r->numel * sizeof *b + 1);
        cllm_st_read(&got, g, a, &err); cllm_st_read(&ref, r, b, &err);
        check_tensor(r->name, a, b, (size_t)r->numel, 1e-4);
        free(a); free(b);
    }
    cllm_st_close(&got); cllm_st_close(&ref);
}

int main(void) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[2048], out[512];
    snprintf(out, sizeof out, "%s/test_dump_out.safetensors", build);
    remove(out);                                   /* an existing output is refused without --overwrite */
    snprintf(cmd, sizeof cmd, "%s/collabllm dump --model tests/data/golden/qwen3_qknorm --input tests/data/golden/qwen3_qknorm/batch.jsonl --out %s --grads", build, out);
    printf("$ %s\n", cmd);
    if (check_true("collabllm dump exits 0", system(cmd) == 0)) compare_file(out, "tests/data/golden/qwen3_qknorm/expected.safetensors");
    snprintf(cmd, sizeof cmd, "%s/collabllm dump --model tests/data/golden/does_not_exist --input x --out %s 2>/dev/null", build, out);
    check_true("a missing model directory fails with a non-zero exit", system(cmd) != 0);
    remove(out);
    return check_summary("test_dump");
}
