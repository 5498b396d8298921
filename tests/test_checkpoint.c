/* test_checkpoint.c - checkpoint writing and strict reading.
   Round trips (F32 exact, BF16/F16 rounding, config.json preserved) and a corpus of broken
   files, each of which must give a clear error that names the problem, without crashing
   (this test also runs under ASan/UBSan via `make asan`). */
#include "../collabllm.h"
#include "check.h"
#include <string.h>

CHECK_DEFINE_CONVERTING(check_tensor, cllm_float, cllm_float)

/* x rounded to bfloat16 (the top 16 bits of a float) to nearest, ties to even; finite x only. */
static float bf16_round(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    bits += 0x7FFF + ((bits >> 16) & 1);
    bits &= 0xFFFF0000u;
    memcpy(&x, &bits, 4);
    return x;
}

static const char *DIR_ = "build/tmp_checkpoint";   /* not build/test_checkpoint: that is this program */

/* writes a raw safetensors file: header text (padded to nothing) + data bytes */
static void write_raw(const char *path, uint64_t hlen, const char *header, size_t header_bytes, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    int k;
    if (!f) { printf("  FAIL cannot create %s\n", path); check_failures++; return; }
    for (k = 0; k < 8; k++) fputc((int)((hlen >> (8 * k)) & 0xFF), f);
    fwrite(header, 1, header_bytes, f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void expect_bad_file(const char *label, uint64_t hlen_override, const char *header, size_t ndata, const char *must_contain) {
    char path[256], msg[600];
    cllm_safetensors st;
    cllm_err err;
    unsigned char data[256] = { 0 };
    uint64_t hlen = hlen_override ? hlen_override : strlen(header);
    cllm_result rc;
    snprintf(path, sizeof path, "%s/bad.safetensors", DIR_);
    write_raw(path, hlen, header, strlen(header), data, ndata);
    rc = cllm_st_open(&st, path, &err);
    snprintf(msg, sizeof msg, "rejects %s", label);
    check_true(msg, rc != CLLM_OK && strstr(err.msg, must_contain) != NULL);
    if (rc != CLLM_OK) printf("         -> %s\n", err.msg); else cllm_st_close(&st);
}

static void test_bad_files(void) {
    char path[256];
    cllm_safetensors st;
    cllm_err err;
    FILE *f;
    printf("malformed safetensors files\n");
    /* a valid file first, so the rejections below are about the one change each makes */
    {
        const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}";
        snprintf(path, sizeof path, "%s/good.safetensors", DIR_);
        write_raw(path, strlen(ok), ok, strlen(ok), "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
        check_true("accepts a valid two-tensor file", cllm_st_open(&st, path, &err) == CLLM_OK && st.n == 2);
        cllm_st_close(&st);
    }
    expect_bad_file("a truncated data buffer", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 10, "'a'");
    expect_bad_file("a header length larger than the file", 5000, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "larger than the file");
    expect_bad_file("a header length over 100 MB", 200000000ull, "{}", 0, "100 MB");
    expect_bad_file("overlapping offsets", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap");
    expect_bad_file("offsets past the end of the file", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1000,1008]}}", 8, "past the end");
    expect_bad_file("a gap between tensors", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "gap");
    expect_bad_file("trailing bytes after the last tensor", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, "trailing");
    expect_bad_file("an unknown dtype", 0, "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "F8_E4M3");
    expect_bad_file("a shape that disagrees with the byte size", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12");
    expect_bad_file("a duplicate tensor name", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "twice");
    expect_bad_file("a header that is not JSON", 0, "{\"a\": [1, 2", 0, "not valid JSON");
    expect_bad_file("a negative shape entry", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape");
    expect_bad_file("a 2^62-element shape", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,1073741824],\"data_offsets\":[0,4]}}", 4, "2^40");
    expect_bad_file("end before begin", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, "before begin");
    expect_bad_file("missing data_offsets", 0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    expect_bad_file("bytes after the header JSON", 0, "{} x", 0, "after the header");
    snprintf(path, sizeof path, "%s/short.safetensors", DIR_);
    f = fopen(path, "wb"); fwrite("abc", 1, 3, f); fclose(f);
    check_true("rejects a 3-byte file", cllm_st_open(&st, path, &err) == CLLM_ERR_FORMAT);
    printf("         -> %s\n", err.msg);
    check_true("reports a missing file as an i/o error", cllm_st_open(&st, "build/does/not/exist.safetensors", &err) == CLLM_ERR_IO);
}

static cllm_config tiny_config(void) {
    cllm_config c;
    memset(&c, 0, sizeof c);
    c.arch = CLLM_ARCH_QWEN2; c.attention_bias = 1; c.vocab_size = 11; c.hidden_size = 8; c.intermediate_size = 12;
    c.n_layers = 2; c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 4; c.rms_norm_eps = 1e-6f; c.rope_theta = 10000;
    c.bos_token_id = -1; c.eos_token_ids[0] = 3; c.n_eos = 1;
    return c;
}

/* Saves the tiny model's tensors with one change made by `edit`, then expects the load to fail. */
typedef void (*edit_fn)(cllm_st_entry *e, int *n);
static void drop_one(cllm_st_entry *e, int *n) { e[3] = e[*n - 1]; (*n)--; }                       /* lose a tensor */
static void reshape(cllm_st_entry *e, int *n) { (void)n; e[2].shape[0] -= 1; }                    /* wrong shape */
static void extra(cllm_st_entry *e, int *n) { e[*n] = e[0]; snprintf(e[*n].name, sizeof e[*n].name, "model.layers.7.mlp.up_proj.weight"); (*n)++; }

static void expect_bad_model(const char *label, cllm_model *m, edit_fn edit, const char *must_contain) {
    cllm_st_entry *e = (cllm_st_entry *)calloc((size_t)cllm_model_tensor_count(m) + 2, sizeof *e);
    char path[256], msg[600];
    cllm_model back;
    cllm_err err;
    int n = cllm_model_entries(m, m->params_memory, NULL, CLLM_DT_F32, e);
    cllm_result rc;
    edit(e, &n);
    snprintf(path, sizeof path, "%s/bad_model/model.safetensors", DIR_);
    cllm_st_save(path, e, n, &err);
    snprintf(path, sizeof path, "%s/bad_model", DIR_);
    rc = cllm_model_load(&back, path, &err);
    snprintf(msg, sizeof msg, "rejects a checkpoint with %s", label);
    check_true(msg, rc != CLLM_OK && strstr(err.msg, must_contain) != NULL);
    if (rc != CLLM_OK) printf("         -> %s\n", err.msg); else cllm_model_free(&back);
    free(e);
}

static void expect_bad_config(const char *label, const char *json, const char *must_contain) {
    cllm_config c;
    cllm_err err;
    char msg[300];
    cllm_result rc = cllm_config_parse(&c, json, strlen(json), &err);
    snprintf(msg, sizeof msg, "rejects config.json with %s", label);
    check_true(msg, rc != CLLM_OK && strstr(err.msg, must_contain) != NULL);
    if (rc != CLLM_OK) printf("         -> %s\n", err.msg);
}

static void test_models(void) {
    cllm_config c = tiny_config();
    cllm_model m, back;
    cllm_err err;
    char path[256], *text;
    size_t len, k;
    cllm_float *rounded;
    printf("checkpoint round trips\n");
    cllm_model_init(&m, &c, 42, &err);
    for (k = 0; k < m.num_params; k++) m.params_memory[k] += (cllm_float)(0.1 * (double)(k % 17) / 17.0);  /* norms/biases non-trivial */
    snprintf(path, sizeof path, "%s/f32", DIR_);
    check_true("save F32", cllm_model_save(&m, path, CLLM_DT_F32, &err) == CLLM_OK);
    check_true("load F32 back", cllm_model_load(&back, path, &err) == CLLM_OK);
    check_tensor("F32 round trip is exact", back.params_memory, m.params_memory, m.num_params, 0);
    check_true("config survives (arch, sizes, eos)", back.config.arch == c.arch && back.config.n_kv_heads == 1 && back.config.eos_token_ids[0] == 3 && back.config.attention_bias);
    cllm_model_free(&back);

    snprintf(path, sizeof path, "%s/bf16", DIR_);
    check_true("save BF16", cllm_model_save(&m, path, CLLM_DT_BF16, &err) == CLLM_OK);
    check_true("load BF16 back", cllm_model_load(&back, path, &err) == CLLM_OK);
    rounded = (cllm_float *)malloc(m.num_params * sizeof *rounded);
    for (k = 0; k < m.num_params; k++) rounded[k] = bf16_round((float)m.params_memory[k]);
    check_tensor("BF16 round trip equals round-to-nearest-even", back.params_memory, rounded, m.num_params, 0);
    check_tensor("BF16 round trip within bf16 precision", back.params_memory, m.params_memory, m.num_params, 4e-3);
    snprintf(path, sizeof path, "%s/bf16/config.json", DIR_);
    cllm_read_file(path, &text, &len, &err);
    check_true("config.json records torch_dtype bfloat16", strstr(text, "\"bfloat16\"") != NULL);
    cllm_free_buffer(text);
    /* a loaded checkpoint keeps its config.json's other fields when saved again */
    snprintf(path, sizeof path, "%s/resaved", DIR_);
    cllm_model_save(&back, path, CLLM_DT_F16, &err);
    cllm_model_free(&back);
    snprintf(path, sizeof path, "%s/resaved/config.json", DIR_);
    cllm_read_file(path, &text, &len, &err);
    check_true("re-saved config.json keeps use_sliding_window and says float16", strstr(text, "use_sliding_window") && strstr(text, "\"float16\""));
    cllm_free_buffer(text);
    free(rounded);

    printf("broken checkpoints\n");
    snprintf(path, sizeof path, "%s/bad_model", DIR_);
    cllm_model_save(&m, path, CLLM_DT_F32, &err);      /* gives it a config.json */
    expect_bad_model("a missing tensor", &m, drop_one, "missing tensor");
    expect_bad_model("a wrong shape", &m, reshape, "has shape [7], expected [8]");
    expect_bad_model("an unexpected tensor", &m, extra, "model.layers.7.mlp.up_proj.weight");
    snprintf(path, sizeof path, "%s/no_weights", DIR_);
    check_mkdir(path);
    snprintf(path, sizeof path, "%s/no_weights/config.json", DIR_);
    {
        const char *cfg = "{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2}";
        cllm_write_file_atomic(path, cfg, strlen(cfg), &err);
    }
    snprintf(path, sizeof path, "%s/no_weights", DIR_);
    check_true("reports a directory without weights", cllm_model_load(&back, path, &err) != CLLM_OK && strstr(err.msg, "no model.safetensors"));
    printf("         -> %s\n", err.msg);
    cllm_model_free(&m);

    expect_bad_config("an unknown model_type", "{\"model_type\": \"mistral\"}", "mistral");
    expect_bad_config("a missing size", "{\"model_type\": \"llama\", \"vocab_size\": 10}", "hidden_size");
    expect_bad_config("non-divisible heads", "{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"num_key_value_heads\": 3}", "multiple");
    expect_bad_config("an unsupported rope_scaling", "{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}", "yarn");
    expect_bad_config("invalid JSON", "{\"model_type\": ", "not valid JSON");
    /* found by fuzz_config: a huge eos id used to overflow an int cast */
    expect_bad_config("an eos_token_id beyond int range", "{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"eos_token_id\": [1, 6.7e50]}", "eos_token_id");
}

int main(void) {
    char path[256];
    check_mkdir("build");
    check_mkdir(DIR_);
    snprintf(path, sizeof path, "%s/bad_model", DIR_);
    check_mkdir(path);
    test_bad_files();
    test_models();
    return check_summary("test_checkpoint");
}
