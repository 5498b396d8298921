/* fuzz_lenient_json.c - libFuzzer target for the parsers of model replies: the lenient JSON
   extractor (cllm_json_parse_lenient and its repair pass), the user simulator's answer
   (cllm_user_sim_parse) and the three judges' verdicts (as the judge reads a reply), with a fake
   API key registered as a live client's would be.
   Invariants:
     - a reply that is exactly one JSON object is read as written, unless a string in it holds
       \u0000: then it is refused with a message that says so (never cut there);
     - no message of any of them, and no text taken from the reply (the simulator's response,
       thought and current_answer, the judge's thought and extraction), holds the key or 8 bytes
       in a row of it, even spelled with \u escapes; all of them are valid UTF-8;
     - the repair pass keeps the meaning of anything cJSON already accepts (except a \u escape
       without 4 hex digits, which cJSON reads as U+0000);
     - a simulator answer that parses has a non-empty, trimmed response, and `terminated` says
       whether it holds the termination signal;
     - a verdict is in range (interactivity in [0, 1], accuracy 0 or 1, a non-empty extraction)
       or a failure with a message, never a silent score; the last attempt is always taken. */
#include "fuzz_util.h"

/* Does cJSON accept the whole of s[0..n) (white space after the value allowed)? */
static cJSON *parse_whole(const char *s, size_t n) {
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!v) return NULL;
    while (end < s + n && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
    if (end != s + n) { cJSON_Delete(v); return NULL; }
    return v;
}

/* Are a and b the same JSON, member order and duplicate keys included? (cJSON_Compare looks
   members up by name, so an object with a duplicate key never equals itself.) */
static int same_json(const cJSON *a, const cJSON *b) {
    char *pa = a ? cJSON_PrintUnformatted(a) : NULL, *pb = b ? cJSON_PrintUnformatted(b) : NULL;
    int same = pa && pb && strcmp(pa, pb) == 0;
    cJSON_free(pa); cJSON_free(pb);
    return same;
}

/* Does s hold a \u escape without 4 hex digits? cJSON reads one as U+0000 (its hex parser
   returns 0), a meaning no repair of the text can keep. */
static int bad_u_escape(const char *s) {
    for (; *s; s++) {
        if (*s != '\\') continue;
        if (s[1] == 'u' && !(isxdigit((unsigned char)s[2]) && isxdigit((unsigned char)s[3]) && isxdigit((unsigned char)s[4]) && isxdigit((unsigned char)s[5]))) return 1;
        if (s[1]) s++;
    }
    return 0;
}

static void check_verdict(cllm__verdict_fn verdict, const char *content, int kind) {
    cllm__judge_job job;
    cllm_judgement j;
    cllm_reply res;
    int last;
    memset(&res, 0, sizeof res);
    res.text = (char *)content;
    for (last = 0; last < 2; last++) {
        int taken;
        memset(&j, 0, sizeof j);
        job.verdict = verdict;
        job.out = &j;
        job.model = NULL;
        taken = cllm__judge_take(&job, 0, &res, last);
        FUZZ_CHECK(taken || !last, "the last attempt's verdict is always taken");
        FUZZ_CHECK(taken == (j.code == CLLM_OK) || last, "an unusable verdict is asked again");
        fuzz_check_clean(j.err.msg, 1, "a verdict's message is one line of UTF-8 without the API key");
        fuzz_check_clean(j.text, 0, "an extraction is UTF-8 without the API key");
        fuzz_check_clean(j.thought, 0, "the judge's thought is UTF-8 without the API key");
        if (j.code == CLLM_OK) {
            if (kind == 0) FUZZ_CHECK(j.score >= 0 && j.score <= 1, "interactivity lies in [0, 1]");
            if (kind == 1) FUZZ_CHECK(j.score == 0 || j.score == 1, "accuracy is 0 or 1");
            if (kind == 2) FUZZ_CHECK(j.text && j.text[0], "an extraction is non-empty text");
        } else FUZZ_CHECK(j.err.msg[0] && j.err.code == j.code && !j.text, "a failed verdict names why and carries nothing");
        cllm_judgement_free(&j);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_cstr(data, size), *fixed;
    size_t len = strlen(text);
    cJSON *lenient, *strict;
    cllm_reply r;
    cllm_err err;
    size_t lone, nul;

    fuzz_register_key();
    lenient = cllm_json_parse_lenient(text, &err);
    FUZZ_CHECK(lenient ? err.code == CLLM_OK : err.msg[0] != 0, "a reply without an object is an error with a message");
    FUZZ_CHECK(!lenient || cJSON_IsObject(lenient), "the extractor returns objects only");
    fuzz_check_clean(err.msg, 1, "the extractor's message is one line of UTF-8 without the API key");
    strict = parse_whole(text, len);
    CLLM_FREE(cllm__json_escapes(text, len, &lone, &nul));
    if (strict && cJSON_IsObject(strict) && text[0] == '{' && nul)
        FUZZ_CHECK(!lenient && strstr(err.msg, "NUL character"), "an object holding \\u0000 is refused, saying so");
    else if (strict && cJSON_IsObject(strict) && text[0] == '{')
        FUZZ_CHECK(same_json(strict, lenient), "one JSON object is read as written");
    cJSON_Delete(lenient);
    if (strict && !bad_u_escape(text)) {
        cJSON *again;
        fixed = cllm__json_repair(text, len);
        again = fixed ? parse_whole(fixed, strlen(fixed)) : NULL;
        FUZZ_CHECK(same_json(strict, again), "repair keeps the meaning of what cJSON accepts");
        cJSON_Delete(again);
        CLLM_FREE(fixed);
    }
    cJSON_Delete(strict);

    memset(&r, 0, sizeof r);
    cllm_user_sim_parse(text, NULL, &r);
    fuzz_check_clean(r.err.msg, 1, "the simulator parser's message is one line of UTF-8 without the API key");
    fuzz_check_clean(r.text, 0, "the simulator's response is UTF-8 without the API key");
    fuzz_check_clean(r.thought, 0, "the simulator's thought is UTF-8 without the API key");
    fuzz_check_clean(r.current_answer, 0, "the simulator's current_answer is UTF-8 without the API key");
    if (r.code == CLLM_OK) {
        size_t n = strlen(r.text);
        FUZZ_CHECK(n > 0 && !isspace((unsigned char)r.text[0]) && !isspace((unsigned char)r.text[n - 1]), "the response is non-empty and trimmed");
        FUZZ_CHECK(r.terminated == (strstr(r.text, CLLM_TERMINATION_SIGNAL) != NULL), "terminated == the response holds the signal");
    } else FUZZ_CHECK(r.err.msg[0] && r.code == r.err.code && !r.text, "an unusable answer names why and carries no text");
    cllm_reply_free(&r);

    check_verdict(cllm__verdict_interactivity, text, 0);
    check_verdict(cllm__verdict_accuracy, text, 1);
    check_verdict(cllm__verdict_extract, text, 2);
    free(text);
    return 0;
}
