/* test_dump.c - the `collabllm dump` command, end to end: it runs the built tool on a golden
   case and compares the file it writes with the PyTorch reference, tensor by tensor. */
#include "../collabllm.h"
#include "check.h"
#include <math.h>
#include <string.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

/* token_logps (not in the PyTorch reference) are the terms of logps: each row sums to it. */
static void check_token_logps(const cllm_safetensors *got) {
    const cllm_st_tensor *tok = cllm_st_find(got, "token_logps"), *seq = cllm_st_find(got, "logps");
    cllm_float *t, *s;
    cllm_err err;
    int b, i, B, T, ok = 1;
    if (!check_true("token_logps is [B, T], logps [B]", tok && seq && tok->ndim == 2 && seq->ndim == 1 &&
                    tok->shape[0] == seq->shape[0])) return;
    B = (int)tok->shape[0];
    T = (int)tok->shape[1];
    t = (cllm_float *)malloc((size_t)B * T * sizeof *t);
    s = (cllm_float *)malloc((size_t)B * sizeof *s);
    if (t && s && cllm_st_read(got, tok, t, &err) == CLLM_OK && cllm_st_read(got, seq, s, &err) == CLLM_OK) {
        for (b = 0; b < B; b++) {
            double sum = 0;
            for (i = 0; i < T; i++) sum += t[(size_t)b * T + i];
            ok &= fabs(sum - s[b]) <= 1e-4 * (1 + fabs((double)s[b])) && t[(size_t)b * T] == 0;
        }
    } else ok = 0;
    check_true("each row of token_logps sums to its logps (column 0 is 0)", ok);
    free(t);
    free(s);
}

static void compare_file(const char *got_path, const char *ref_path) {
    cllm_safetensors got, ref;
    cllm_err err;
    int i;
    if (!check_true("open dump output", cllm_st_open(&got, got_path, &err) == CLLM_OK)) { printf("    %s\n", err.msg); return; }
    if (!check_true("open reference", cllm_st_open(&ref, ref_path, &err) == CLLM_OK)) { printf("    %s\n", err.msg); cllm_st_close(&got); return; }
    check_true("the reference's tensors and token_logps", got.n == ref.n + 1 && cllm_st_find(&got, "token_logps"));
    check_token_logps(&got);
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
