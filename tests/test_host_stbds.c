/* test_host_stbds.c - a host program that uses stb_ds (with its short names) and cJSON itself
   and also contains the collabllm.h implementation, in one translation unit, built with
   COLLABLLM_STATIC. It checks the documented rule: include <stb_ds.h> first to keep the short
   names; stb_ds is linked from Debian's -lstb, so nobody defines STB_DS_IMPLEMENTATION here. */
/* no-fast-path: linking with stb_ds, no model kernel (make test runs it in its first pass only) */
#include <stb/stb_ds.h>
#include <cjson/cJSON.h>
#define COLLABLLM_STATIC
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include "check.h"

int main(void) {
    int *xs = NULL, i, sum = 0;
    struct { char *key; int value; } *map = NULL;
    cJSON *j = cJSON_Parse("{\"a\": 5}");
    cllm_config c;
    cllm_err err;
    for (i = 1; i <= 10; i++) arrput(xs, i);           /* the host's short names still work */
    for (i = 0; i < (int)arrlen(xs); i++) sum += xs[i];
    shput(map, "k", 7);
    check_true("host stb_ds arrays work next to collabllm.h", sum == 55);
    check_true("host stb_ds string maps work", shget(map, "k") == 7);
    check_true("host cJSON works", cJSON_GetObjectItem(j, "a")->valueint == 5);
    check_true("the library works in the same program", cllm_config_parse(&c, "{\"model_type\": \"qwen3\"}", 23, &err) != CLLM_OK && strstr(err.msg, "hidden_size"));
    arrfree(xs); shfree(map); cJSON_Delete(j);
    return check_summary("test_host_stbds");
}
