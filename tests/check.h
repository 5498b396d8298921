/* check.h - the test harness shared by the tests/ programs (llm.c check_tensor style).
   Every comparison prints what it compared, the max abs and relative differences and the
   tolerance, so a passing run documents the measured agreement. */
#ifndef CHECK_H
#define CHECK_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__) || defined(__clang__)
#define CHECK_FN static __attribute__((unused))
#else
#define CHECK_FN static
#endif

static int check_failures = 0, check_count = 0;

/* Compares got against ref (n values). rel = max|got-ref| / max(max|ref|, 1e-30): the error
   relative to the tensor's scale, robust to entries near zero. Passes when rel <= rtol. */
CHECK_FN int check_tensor_d(const char *label, const double *got, const double *ref, size_t n, double rtol) {
    double maxabs = 0, maxref = 0, rel;
    size_t i, worst = 0;
    int ok;
    for (i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]);
        if (!(d <= maxabs)) { maxabs = d; worst = i; }        /* NaN counts as the worst */
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    rel = maxabs / (maxref > 1e-30 ? maxref : 1e-30);
    ok = rel <= rtol && n > 0;
    check_count++;
    if (!ok) check_failures++;
    printf("  %-4s %-52s n=%-7zu maxabs=%.3e rel=%.3e (tol %.0e)", ok ? "OK" : "FAIL", label, n, maxabs, rel, rtol);
    if (!ok && n) printf("  worst [%zu] got %.9g want %.9g", worst, got[worst], ref[worst]);
    printf("\n");
    return ok;
}

/* float / cllm_float variants convert and call the double one */
#define CHECK_DEFINE_CONVERTING(fname, T1, T2)                                              \
CHECK_FN int fname(const char *label, const T1 *got, const T2 *ref, size_t n, double rtol) { \
    double *a = (double *)malloc((n + 1) * sizeof(double));                                \
    double *b = (double *)malloc((n + 1) * sizeof(double));                                \
    size_t i; int ok;                                                                      \
    for (i = 0; i < n; i++) { a[i] = (double)got[i]; b[i] = (double)ref[i]; }              \
    ok = check_tensor_d(label, a, b, n, rtol);                                             \
    free(a); free(b);                                                                      \
    return ok;                                                                             \
}

CHECK_FN int check_true(const char *label, int cond) {
    check_count++;
    if (!cond) check_failures++;
    printf("  %-4s %s\n", cond ? "OK" : "FAIL", label);
    return cond;
}

CHECK_FN int check_summary(const char *name) {
    printf("%s: %d checks, %d failed -> %s\n", name, check_count, check_failures, check_failures ? "FAIL" : "all OK");
    return check_failures ? 1 : 0;
}
#ifdef COLLABLLM_H
/* File helpers for the tests that run whole pipelines (need collabllm.h included first). */
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

/* Creates the directory (its parent must exist); one that exists already is fine. */
CHECK_FN void check_mkdir(const char *path) {
    (void)mkdir(path, 0755);
}

/* Copies from_dir/name to to_dir/name (atomically, as the library writes files). */
CHECK_FN int check_copy_file(const char *from_dir, const char *to_dir, const char *name) {
    char src[1024], dst[1024], *data = NULL;
    size_t len = 0;
    int ok;
    snprintf(src, sizeof src, "%s/%s", from_dir, name);
    snprintf(dst, sizeof dst, "%s/%s", to_dir, name);
    ok = cllm_read_file(src, &data, &len, NULL) == CLLM_OK && cllm_write_file_atomic(dst, data, len, NULL) == CLLM_OK;
    cllm_free_buffer(data);
    if (!ok) printf("    could not copy %s to %s\n", src, dst);
    return ok;
}

/* Are two files identical, byte for byte? */
CHECK_FN int check_same_file(const char *a, const char *b) {
    char *ta = NULL, *tb = NULL;
    size_t la = 0, lb = 0;
    int same = cllm_read_file(a, &ta, &la, NULL) == CLLM_OK && cllm_read_file(b, &tb, &lb, NULL) == CLLM_OK && la == lb && memcmp(ta, tb, la) == 0;
    cllm_free_buffer(ta); cllm_free_buffer(tb);
    return same;
}

/* The JSON value of each non-empty line of a JSONL file (rows[i] NULL where a line is not JSON);
   free with check_free_rows. A file that cannot be read is a failed check. */
CHECK_FN cJSON **check_read_jsonl(const char *path, int *n) {
    char *data = NULL;
    char *line;
    char *next;
    size_t len;
    cllm_err err;
    cJSON **rows = NULL;
    *n = 0;
    if (cllm_read_file(path, &data, &len, &err) != CLLM_OK) {
        check_true(err.msg, 0);
        return NULL;
    }
    for (line = data; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (!*line) continue;
        rows = (cJSON **)realloc(rows, (size_t)(*n + 1) * sizeof *rows);
        rows[(*n)++] = cJSON_Parse(line);
    }
    cllm_free_buffer(data);
    return rows;
}

CHECK_FN void check_free_rows(cJSON **rows, int n) {
    int i;
    for (i = 0; i < n; i++) cJSON_Delete(rows[i]);
    free(rows);
}

/* Is the JSON array `expected` the n ids? */
CHECK_FN int check_same_ids(const cJSON *expected, const int *ids, int n) {
    const cJSON *it;
    int i = 0;
    if (!cJSON_IsArray(expected) || cJSON_GetArraySize(expected) != n) return 0;
    cJSON_ArrayForEach(it, expected) {
        if ((int)it->valuedouble != ids[i++]) return 0;
    }
    return 1;
}

/* Two metrics.jsonl files with expect_lines lines each, line for line the same keys with
   identical numbers; the timing fields (tokens_per_s, elapsed_s) are left out. Prints what differs. */
CHECK_FN int check_same_metrics(const char *a, const char *b, int expect_lines) {
    char *ta = NULL, *tb = NULL, *pa, *pb;
    size_t la, lb;
    int lines = 0, same = 1;
    if (cllm_read_file(a, &ta, &la, NULL) != CLLM_OK || cllm_read_file(b, &tb, &lb, NULL) != CLLM_OK) {
        cllm_free_buffer(ta); cllm_free_buffer(tb);
        return 0;
    }
    for (pa = ta, pb = tb; *pa && *pb && same; lines++) {
        char *ea = strchr(pa, '\n'), *eb = strchr(pb, '\n');
        cJSON *oa, *ob, *x;
        if (!ea || !eb) { same = 0; break; }
        *ea = *eb = 0;
        oa = cJSON_Parse(pa); ob = cJSON_Parse(pb);
        if (!oa || !ob || cJSON_GetArraySize(oa) != cJSON_GetArraySize(ob)) { printf("    line %d: different keys\n", lines + 1); same = 0; }
        cJSON_ArrayForEach(x, oa) {
            const cJSON *y = cJSON_GetObjectItem(ob, x->string);
            if (!strcmp(x->string, "tokens_per_s") || !strcmp(x->string, "elapsed_s")) continue;
            if (!y || x->valuedouble != y->valuedouble) { printf("    line %d: %s differs\n", lines + 1, x->string); same = 0; }
        }
        cJSON_Delete(oa); cJSON_Delete(ob);
        pa = ea + 1; pb = eb + 1;
    }
    if (*pa || *pb) same = 0;
    cllm_free_buffer(ta); cllm_free_buffer(tb);
    if (same && lines != expect_lines) printf("    %d lines, expected %d\n", lines, expect_lines);
    return same && lines == expect_lines;
}
#endif
#endif
