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
#endif
