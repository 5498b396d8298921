/* demo_bpe.h - trains a small byte-level BPE tokenizer and writes it as a Hugging Face
   tokenizer.json + tokenizer_config.json (ChatML template), so that the demo's model from scratch
   goes through the same loader, tokenizer and chat-template code as a real checkpoint.

   Demonstrates the tokenizer.json format collabllm.h reads: a BPE model over GPT-2's byte-level
   alphabet, the ByteLevel pre-tokenizer (GPT-2 split pattern) and decoder, and special tokens
   as added tokens. Training is the textbook algorithm: count adjacent symbol pairs over the
   corpus's pre-tokens, merge the most frequent pair (ties broken by the pair's text, so runs are
   reproducible), repeat. The pre-tokenizer here implements GPT-2's pattern for ASCII text only,
   which is all the demo's corpus contains. Include after collabllm.h. */
#ifndef DEMO_BPE_H
#define DEMO_BPE_H

#include <string.h>
#include <stdlib.h>
#ifndef INCLUDE_STB_DS_H
#define STBDS_NO_SHORT_NAMES     /* the stbds_ names only, as collabllm.h itself uses them */
#endif
#include <stb/stb_ds.h>

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the 68 others map in order to
   U+0100 + n. Writes the UTF-8 of byte b's character into out (NUL-terminated). */
static void demo_bpe_char(int b, char out[4]) {
    int cp = b, n = 0, i;
    if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
        for (i = 0; i < b; i++) if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE)) n++;
        cp = 0x100 + n;
    }
    if (cp < 0x80) { out[0] = (char)cp; out[1] = 0; }
    else { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); out[2] = 0; }
}

typedef struct demo_word { char **sym; int n; long count; } demo_word;   /* a pre-token as symbols */

static int demo_bpe_class(int c) { return c >= 'a' && c <= 'z' ? 1 : c >= '0' && c <= '9' ? 2 : c == ' ' || c == '\n' ? 3 : 4; }

/* Adds the GPT-2 pre-tokens of text (' ?letters', ' ?digits', ' ?other', whitespace) to words. */
static void demo_bpe_add_text(demo_word **words, int *n_words, const char *text) {
    const char *p = text;
    while (*p) {
        const char *s = p;
        char buf[256];
        int cls, len, i, k;
        if (*p == ' ' && p[1] && demo_bpe_class((unsigned char)p[1]) != 3) p++;   /* a space joins the next run */
        cls = demo_bpe_class((unsigned char)*p);
        while (*p && demo_bpe_class((unsigned char)*p) == cls) p++;
        len = (int)(p - s);
        if (len <= 0 || len >= (int)sizeof buf) { p = s + 1; continue; }
        memcpy(buf, s, (size_t)len); buf[len] = 0;
        {
            /* symbols: one byte-level character per byte */
            char **sym = (char **)calloc((size_t)len, sizeof(char *)), ch[4];
            int found = -1;
            for (i = 0; i < len; i++) { demo_bpe_char((unsigned char)buf[i], ch); sym[i] = (char *)malloc(strlen(ch) + 1); strcpy(sym[i], ch); }
            for (i = 0; i < *n_words && found < 0; i++) {
                if ((*words)[i].n != len) continue;
                for (k = 0; k < len && strcmp((*words)[i].sym[k], sym[k]) == 0; k++) {}
                if (k == len) found = i;
            }
            if (found >= 0) {
                (*words)[found].count++;
                for (i = 0; i < len; i++) free(sym[i]);
                free(sym);
            } else {
                *words = (demo_word *)realloc(*words, sizeof(demo_word) * (size_t)(*n_words + 1));
                (*words)[*n_words].sym = sym; (*words)[*n_words].n = len; (*words)[*n_words].count = 1;
                (*n_words)++;
            }
        }
    }
}

/* Trains up to max_merges merges on the texts and writes dir/tokenizer.json and
   dir/tokenizer_config.json. Special tokens <|endoftext|>, <|im_start|>, <|im_end|> are ids 0-2,
   the 256 byte characters ids 3-258, merges after. Returns the vocabulary size. */
static int demo_bpe_train(const char *const *texts, int n_texts, int max_merges, const char *dir, cllm_err *err) {
    static const char *specials[3] = { "<|endoftext|>", "<|im_start|>", "<|im_end|>" };
    static const char *chatml =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    demo_word *words = NULL;
    int n_words = 0, i, k, m, vocab = 0;
    cJSON *root = cJSON_CreateObject(), *added = cJSON_AddArrayToObject(root, "added_tokens"), *model, *v, *merges, *o, *cfg;
    char path[1024], *text, ch[4];
    cllm_result rc;

    for (i = 0; i < n_texts; i++) demo_bpe_add_text(&words, &n_words, texts[i]);
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    for (i = 0; i < 3; i++) {
        o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", i); cJSON_AddStringToObject(o, "content", specials[i]);
        cJSON_AddBoolToObject(o, "single_word", 0); cJSON_AddBoolToObject(o, "lstrip", 0); cJSON_AddBoolToObject(o, "rstrip", 0);
        cJSON_AddBoolToObject(o, "normalized", 0); cJSON_AddBoolToObject(o, "special", 1);
        cJSON_AddItemToArray(added, o);
    }
    cJSON_AddNullToObject(root, "normalizer");
    o = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(o, "type", "ByteLevel"); cJSON_AddBoolToObject(o, "add_prefix_space", 0);
    cJSON_AddBoolToObject(o, "trim_offsets", 1); cJSON_AddBoolToObject(o, "use_regex", 1);
    cJSON_AddNullToObject(root, "post_processor");
    o = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(o, "type", "ByteLevel"); cJSON_AddBoolToObject(o, "add_prefix_space", 1);
    cJSON_AddBoolToObject(o, "trim_offsets", 1); cJSON_AddBoolToObject(o, "use_regex", 1);
    model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout"); cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix"); cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", 0); cJSON_AddBoolToObject(model, "byte_fallback", 0); cJSON_AddBoolToObject(model, "ignore_merges", 0);
    v = cJSON_AddObjectToObject(model, "vocab");
    for (i = 0; i < 3; i++) cJSON_AddNumberToObject(v, specials[i], vocab++);
    for (i = 0; i < 256; i++) { demo_bpe_char(i, ch); cJSON_AddNumberToObject(v, ch, vocab++); }
    merges = cJSON_AddArrayToObject(model, "merges");

    for (m = 0; m < max_merges; m++) {
        /* count every adjacent pair (key "a b"; byte-level symbols never contain a space),
           then take the most frequent; ties go to the smaller key */
        struct { char *key; long value; } *counts = NULL;
        const char *ba = NULL, *bb = NULL;
        char best_key[520], merged[520], key[520];
        long best = 1;
        stbds_sh_new_strdup(counts);
        for (i = 0; i < n_words; i++) for (k = 0; k + 1 < words[i].n; k++) {
            snprintf(key, sizeof key, "%s %s", words[i].sym[k], words[i].sym[k + 1]);
            long c = stbds_shget(counts, key) + words[i].count;   /* read before shput: it may move the table */
            stbds_shput(counts, key, c);
        }
        best_key[0] = 0;
        for (i = 0; i < (int)stbds_shlen(counts); i++)
            if (counts[i].value > best || (counts[i].value == best && best_key[0] && strcmp(counts[i].key, best_key) < 0)) {
                best = counts[i].value;
                snprintf(best_key, sizeof best_key, "%s", counts[i].key);
            }
        stbds_shfree(counts);
        if (best_key[0]) { char *sp = strchr(best_key, ' '); *sp = 0; ba = best_key; bb = sp + 1; }
        if (!ba) break;                                   /* no pair occurs twice: done */
        snprintf(merged, sizeof merged, "%s%s", ba, bb);
        o = cJSON_CreateArray();
        cJSON_AddItemToArray(o, cJSON_CreateString(ba)); cJSON_AddItemToArray(o, cJSON_CreateString(bb));
        cJSON_AddItemToArray(merges, o);
        if (!cJSON_GetObjectItemCaseSensitive(v, merged)) cJSON_AddNumberToObject(v, merged, vocab++);
        /* apply the merge everywhere */
        {
            for (i = 0; i < n_words; i++) for (k = 0; k + 1 < words[i].n; k++)
                if (strcmp(words[i].sym[k], ba) == 0 && strcmp(words[i].sym[k + 1], bb) == 0) {
                    char *s = (char *)malloc(strlen(merged) + 1);
                    strcpy(s, merged);
                    free(words[i].sym[k]); free(words[i].sym[k + 1]);
                    words[i].sym[k] = s;
                    memmove(&words[i].sym[k + 1], &words[i].sym[k + 2], sizeof(char *) * (size_t)(words[i].n - k - 2));
                    words[i].n--;
                }
        }
    }
    text = cJSON_Print(root);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    rc = cllm_write_file_atomic(path, text, strlen(text), err);
    cJSON_free(text); cJSON_Delete(root);
    cfg = cJSON_CreateObject();
    cJSON_AddBoolToObject(cfg, "add_bos_token", 0);
    cJSON_AddStringToObject(cfg, "eos_token", "<|im_end|>");
    cJSON_AddStringToObject(cfg, "pad_token", "<|im_end|>");
    cJSON_AddStringToObject(cfg, "unk_token", "<|endoftext|>");
    cJSON_AddNumberToObject(cfg, "model_max_length", 256);
    cJSON_AddStringToObject(cfg, "tokenizer_class", "GPT2Tokenizer");
    cJSON_AddStringToObject(cfg, "chat_template", chatml);
    text = cJSON_Print(cfg);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (rc == CLLM_OK) rc = cllm_write_file_atomic(path, text, strlen(text), err);
    cJSON_free(text); cJSON_Delete(cfg);
    for (i = 0; i < n_words; i++) { for (k = 0; k < words[i].n; k++) free(words[i].sym[k]); free(words[i].sym); }
    free(words);
    return rc == CLLM_OK ? vocab : -1;
}

#endif /* DEMO_BPE_H */
