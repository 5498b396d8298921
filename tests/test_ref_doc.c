/* test_ref_doc.c - every example of data_fmt/ref.md through the built `collabllm ref` command.
   A ```json ref-input NAME block is fed to `collabllm ref NAME` on stdin; the output must have
   exactly the fields of the next ```json ref-output block, with every number within a relative
   1e-12 (exactly 0 where the document says 0; `tol=X` on the block overrides the tolerance).
   Then the command's error behaviour: a bad input exits non-zero and writes nothing on stdout. */
/* no-fast-path: `collabllm ref` on given numbers, no model kernel (make test runs it in its first pass only) */
#include "../collabllm.h"
#include "check.h"
#include <string.h>

/* Text of the next fenced block whose info line starts with `info`, from *pos; NULL if none.
   *info_rest receives the rest of the info line. */
static char *next_block(const char **pos, const char *info, char *info_rest, size_t rest_size) {
    char fence[64];
    const char *start, *body, *end, *eol;
    size_t n;
    char *out;
    snprintf(fence, sizeof fence, "```%s", info);
    if (!(start = strstr(*pos, fence))) return NULL;
    eol = strchr(start, '\n');
    if (!eol) return NULL;
    n = (size_t)(eol - start) - strlen(fence);
    if (n >= rest_size) n = rest_size - 1;
    memcpy(info_rest, start + strlen(fence), n);
    info_rest[n] = 0;
    body = eol + 1;
    if (!(end = strstr(body, "\n```"))) return NULL;
    out = (char *)malloc((size_t)(end - body) + 2);
    memcpy(out, body, (size_t)(end - body));
    out[end - body] = 0;
    *pos = end + 4;
    return out;
}

/* Compares got with want field by field; returns 1 if equal within tol, printing the first
   difference; *worst collects the largest relative difference of non-zero numbers. */
static int same(const cJSON *got, const cJSON *want, const char *path, double tol, double *worst) {
    char sub[512];
    const cJSON *e;
    if (cJSON_IsNumber(want)) {
        double g = got && cJSON_IsNumber(got) ? got->valuedouble : NAN, w = want->valuedouble, rel;
        if (w == 0) { if (g == 0) return 1; printf("       %s: got %.17g, want exactly 0\n", path, g); return 0; }
        rel = fabs(g - w) / fabs(w);
        if (!(rel <= *worst)) *worst = rel;
        if (rel <= tol) return 1;
        printf("       %s: got %.17g, want %.17g (relative %.3e)\n", path, g, w, rel);
        return 0;
    }
    if (cJSON_IsArray(want)) {
        int i = 0, ok = 1;
        if (!cJSON_IsArray(got) || cJSON_GetArraySize(got) != cJSON_GetArraySize(want)) { printf("       %s: array length differs\n", path); return 0; }
        cJSON_ArrayForEach(e, want) {
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            ok &= same(cJSON_GetArrayItem(got, i++), e, sub, tol, worst);
        }
        return ok;
    }
    if (cJSON_IsObject(want)) {
        int ok = cJSON_IsObject(got);
        if (!ok) { printf("       %s: not an object\n", path); return 0; }
        cJSON_ArrayForEach(e, want) {
            snprintf(sub, sizeof sub, "%s.%s", path, e->string);
            if (!cJSON_GetObjectItemCaseSensitive(got, e->string)) { printf("       %s: missing in the output\n", sub); ok = 0; }
            else ok &= same(cJSON_GetObjectItemCaseSensitive(got, e->string), e, sub, tol, worst);
        }
        cJSON_ArrayForEach(e, got)
            if (!cJSON_GetObjectItemCaseSensitive(want, e->string)) { printf("       %s.%s: in the output but not in the document\n", path, e->string); ok = 0; }
        return ok;
    }
    if (cJSON_IsString(want)) return cJSON_IsString(got) && strcmp(got->valuestring, want->valuestring) == 0;
    return got && got->type == want->type;
}

/* Runs `collabllm ref name` on input; returns its stdout (NULL if it failed). */
static char *run_ref(const char *build, const char *name, const char *input, int *status) {
    char in[512], out[512], cmd[2048], *text = NULL;
    size_t len;
    FILE *f;
    snprintf(in, sizeof in, "%s/test_ref_doc_in.json", build);
    snprintf(out, sizeof out, "%s/test_ref_doc_out.json", build);
    if (!(f = fopen(in, "wb"))) return NULL;
    fputs(input, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s/collabllm ref %s < %s > %s 2>/dev/null", build, name, in, out);
    *status = system(cmd);
    if (cllm_read_file(out, &text, &len, NULL) != CLLM_OK) text = NULL;
    remove(in); remove(out);
    return text;
}

int main(void) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build", *pos;
    char *doc = NULL, *input, *expected, rest[128], rest2[128];
    size_t len;
    int examples = 0, status;
    char *text;
    (void)check_tensor_d;                            /* this test compares JSON trees instead */
    if (!check_true("read data_fmt/ref.md", cllm_read_file("data_fmt/ref.md", &doc, &len, NULL) == CLLM_OK)) return check_summary("test_ref_doc");
    pos = doc;
    while ((input = next_block(&pos, "json ref-input ", rest, sizeof rest))) {
        char label[256], name[64] = "";
        double tol = 1e-12, worst = 0;
        cJSON *got = NULL, *want = NULL;
        const char *t;
        sscanf(rest, "%63s", name);
        expected = next_block(&pos, "json ref-output", rest2, sizeof rest2);
        if ((t = strstr(rest2, "tol="))) tol = atof(t + 4);
        examples++;
        text = run_ref(build, name, input, &status);
        if (text) got = cJSON_Parse(text);
        if (expected) want = cJSON_Parse(expected);
        if (!want) { check_true("the ref-output block is valid JSON", 0); }
        else {
            int ok = status == 0 && got && same(got, want, name, tol, &worst);
            snprintf(label, sizeof label, "example %2d: ref %-12s exits 0, same fields, max rel diff %.3e (tol %.0e)", examples, name, worst, tol);
            check_true(label, ok);
        }
        cJSON_Delete(got); cJSON_Delete(want);
        cllm_free_buffer(text);
        free(input); free(expected);
    }
    check_true("the document has an example for each of dpo, ppo-rewards, gae, ppo-loss, grpo, grpo-loss, adamw, bleu",
               strstr(doc, "ref-input dpo") && strstr(doc, "ref-input ppo-rewards") && strstr(doc, "ref-input gae") &&
               strstr(doc, "ref-input ppo-loss") && strstr(doc, "ref-input grpo\n") && strstr(doc, "ref-input grpo-loss") && strstr(doc, "ref-input adamw") &&
               strstr(doc, "ref-input bleu") && examples >= 7);
    text = run_ref(build, "gae", "{\"rewards\": [[1, 2]], \"values\": [[1]]}", &status);
    check_true("a ragged input exits non-zero with nothing on stdout", status != 0 && (!text || !*text));
    cllm_free_buffer(text);
    text = run_ref(build, "nosuch", "{}", &status);
    check_true("an unknown NAME exits non-zero", status != 0);
    cllm_free_buffer(text);
    cllm_free_buffer(doc);
    return check_summary("test_ref_doc");
}
