/* demo_task.h - the bundled collaborative task family of `make demo`.

   Demonstrates how a task family, a rule-based user simulator and a rule-based judge plug into
   collabllm.h's interfaces (cllm_user_sim, cllm_metric), so that the whole CollabLLM pipeline can
   run offline on a laptop. Include it after collabllm.h.

   The world. A user asks an assistant to do something small: book a ticket, order a pizza,
   find a shirt, set an alarm, reserve a room. Each request has one detail (the city, the
   topping, the color, the time, the day). In an UNDER-SPECIFIED request the user leaves the
   detail out ("i need a train ticket .") and only the simulated user knows it, so a guess is
   right about once in six to eight. In a FULLY-SPECIFIED request the detail is stated ("i need
   a train ticket to rome ."), so a clarifying question only costs the user effort.

   The simulated user (it knows its goal):
     - opens with its request (vague or complete, as the task says);
     - after a question: gives the detail ("to rome ."), or, if it had already given it,
       restates it with some annoyance ("i already told you , to rome .");
     - after an answer: takes it and ends the conversation with the termination signal.
   A wrong answer is therefore final, as with a real user who cannot check the work.
   The task metric is an exact match of the assistant's final answer with the reference
   ("here is your ticket to rome ."). The rule-based interactivity judge gives 1 when the
   assistant's first reply asked exactly when asking was needed, else 0.

   Tasks are stored in CollabLLM's single-turn format (data_fmt/task.md):
     {"single_turn_prompt": "i need a train ticket to rome .",
      "single_turn_completion": "here is your ticket to rome .",
      "single_turn_metadata": {"family": "ticket", "value": "rome", "underspecified": true,
                               "opening": "i need a train ticket ."}}                          */
#ifndef DEMO_TASK_H
#define DEMO_TASK_H

#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <cjson/cJSON.h>

typedef struct demo_family {
    const char *name;
    const char *values[8];     /* the hidden detail's possible values */
    int         n_values;
    const char *vague;         /* the request without the detail */
    const char *full;          /* the request with it (%s = value) */
    const char *question;      /* the clarifying question */
    const char *reveal;        /* the user's answer to it (%s) */
    const char *restate;       /* the user's answer when it had already said it (%s) */
    const char *answer;        /* the correct final answer (%s) */
} demo_family;

static const demo_family demo_families[] = {
    { "ticket", { "rome", "paris", "oslo", "lima", "cairo", "tokyo", "delhi", "sydney" }, 8,
      "i need a train ticket .", "i need a train ticket to %s .", "where are you going ?",
      "to %s .", "i already told you , to %s .", "here is your ticket to %s ." },
    { "pizza", { "cheese", "ham", "mushroom", "olive", "onion", "pepper", "tuna", "corn" }, 8,
      "i want to order a pizza .", "i want to order a pizza with %s .", "which topping would you like ?",
      "%s please .", "i already told you , %s .", "one pizza with %s is on its way ." },
    { "shirt", { "red", "blue", "green", "black", "white", "yellow", "pink" }, 7,
      "please find me a shirt .", "please find me a %s shirt .", "what color do you want ?",
      "%s .", "i already told you , %s .", "here is a %s shirt ." },
    { "alarm", { "six", "seven", "eight", "nine", "ten", "eleven" }, 6,
      "set an alarm for me .", "set an alarm for %s .", "for what time ?",
      "for %s .", "i already told you , %s .", "alarm set for %s ." },
    { "room", { "monday", "tuesday", "wednesday", "thursday", "friday", "saturday" }, 6,
      "book a meeting room .", "book a meeting room for %s .", "which day do you need it ?",
      "on %s .", "i already told you , %s .", "the room is booked for %s ." },
};
#define DEMO_N_FAMILIES ((int)(sizeof demo_families / sizeof demo_families[0]))

/* ---- tasks ----------------------------------------------------------------------------------- */

/* One task as a JSON object (owned by the caller). Task i of a seed is always the same. */
static cJSON *demo_task_json(cllm_rng *rng, int underspecified) {
    const demo_family *f = &demo_families[cllm_rng_u32(rng) % DEMO_N_FAMILIES];
    const char *v = f->values[cllm_rng_u32(rng) % (uint32_t)f->n_values];
    char full[160], answer[160];
    cJSON *o = cJSON_CreateObject(), *meta;
    snprintf(full, sizeof full, f->full, v);
    snprintf(answer, sizeof answer, f->answer, v);
    cJSON_AddStringToObject(o, "single_turn_prompt", full);
    cJSON_AddStringToObject(o, "single_turn_completion", answer);
    meta = cJSON_AddObjectToObject(o, "single_turn_metadata");
    cJSON_AddStringToObject(meta, "family", f->name);
    cJSON_AddStringToObject(meta, "value", v);
    cJSON_AddBoolToObject(meta, "underspecified", underspecified);
    cJSON_AddStringToObject(meta, "opening", underspecified ? f->vague : full);
    return o;
}

/* Writes n tasks, half of them under-specified (alternating), to a JSONL file. */
static cllm_result demo_write_tasks(const char *path, uint64_t seed, int n, cllm_err *err) {
    cllm_rng rng;
    cJSON *o;
    char *line, *buf;
    size_t len = 0, cap = 1 << 16;
    cllm_result rc;
    int i;
    cllm_rng_seed(&rng, seed);
    buf = (char *)malloc(cap);
    if (!buf) return CLLM_ERR_NOMEM;
    for (i = 0; i < n; i++) {
        size_t k;
        o = demo_task_json(&rng, i % 2 == 0);
        line = cJSON_PrintUnformatted(o);
        k = strlen(line);
        while (len + k + 2 > cap) { cap *= 2; buf = (char *)realloc(buf, cap); }
        memcpy(buf + len, line, k); buf[len + k] = '\n'; len += k + 1;
        cJSON_free(line); cJSON_Delete(o);
    }
    rc = cllm_write_file_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

static const demo_family *demo_family_of(const cllm_task *t) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_metadata");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(meta, "family");
    int i;
    for (i = 0; cJSON_IsString(name) && i < DEMO_N_FAMILIES; i++) if (strcmp(demo_families[i].name, name->valuestring) == 0) return &demo_families[i];
    return NULL;
}

static int demo_underspecified(const cllm_task *t) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_metadata"), "underspecified"));
}

static const char *demo_meta_str(const cllm_task *t, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_metadata"), key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* A reply is a clarifying question when it ends with '?'. */
static int demo_is_question(const char *text) {
    size_t n = text ? strlen(text) : 0;
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\n')) n--;
    return n > 0 && text[n - 1] == '?';
}

/* ---- the rule-based user simulator ------------------------------------------------------------ */

/* The simulator needs the task, not only the goal text: its context is the task list, and the
   goal's prompt identifies the task (any cllm_goal built from a task of the list works). */
typedef struct demo_sim_ctx { const cllm_task *tasks; int n_tasks; } demo_sim_ctx;

static const cllm_task *demo_find_task(const demo_sim_ctx *c, const char *prompt) {
    int i;
    /* two tasks can share a prompt (one under-specified, one not): the library passes the task's
       own string as the goal, so its address identifies the task; text is the fallback */
    for (i = 0; i < c->n_tasks; i++) if (c->tasks[i].prompt == prompt) return &c->tasks[i];
    for (i = 0; i < c->n_tasks; i++) if (strcmp(c->tasks[i].prompt, prompt) == 0) return &c->tasks[i];
    return NULL;
}

static cllm_result demo_user_turn(void *ctx, const cllm_goal *goal, const cllm_conv *h, cllm_reply *out) {
    const cllm_task *t = demo_find_task((const demo_sim_ctx *)ctx, goal->prompt);
    const demo_family *f = t ? demo_family_of(t) : NULL;
    char text[200];
    int i, told = 0;
    if (!t || !f) { out->code = CLLM_ERR_ARG; snprintf(out->err.msg, sizeof out->err.msg, "demo simulator: unknown task '%s'", goal->prompt); out->err.code = out->code; return out->code; }
    if (h->n == 0) return cllm_reply_set(out, demo_meta_str(t, "opening"), 0);
    if (!demo_is_question(h->msgs[h->n - 1].content)) return cllm_reply_set(out, CLLM_TERMINATION_SIGNAL, 1);
    /* a question: was the detail already given (in the request, or in an earlier answer)? */
    told = !demo_underspecified(t);
    for (i = 0; i < h->n; i++) if (strcmp(h->msgs[i].role, "user") == 0 && strstr(h->msgs[i].content, demo_meta_str(t, "value")) && i > 0) told = 1;
    snprintf(text, sizeof text, told ? f->restate : f->reveal, demo_meta_str(t, "value"));
    return cllm_reply_set(out, text, 0);
}

/* ---- the rule-based judge and the table's measurements ---------------------------------------- */

/* The assistant's first reply in the session: the candidate (MR) or the first answer (eval). */
static const char *demo_first_reply(const cllm_session *s) {
    int i;
    for (i = s->n_history; i < s->conv->n; i++) if (strcmp(s->conv->msgs[i].role, "assistant") == 0) return s->conv->msgs[i].content;
    return NULL;
}

/* interactivity: 1 when the first reply asked exactly when asking was needed */
static cllm_result demo_metric_interactivity(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx; (void)err;
    for (i = 0; i < n; i++) {
        const char *r = demo_first_reply(&s[i]);
        scores[i] = r && demo_is_question(r) == demo_underspecified(s[i].task) ? 1.0 : 0.0;
    }
    return CLLM_OK;
}

/* asked: 1 when the first reply is a clarifying question (the table's clarification rates) */
static cllm_result demo_metric_asked(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx; (void)err;
    for (i = 0; i < n; i++) { const char *r = demo_first_reply(&s[i]); scores[i] = r && demo_is_question(r) ? 1.0 : 0.0; }
    return CLLM_OK;
}

/* ---- SFT conversations for the base model ------------------------------------------------------- */

/* A conversation of the base model's SFT mixture for task t, as a JSON {"messages": [...]} row.
   With probability p_ask the assistant asks first (needed or not); otherwise it answers at once,
   guessing a random value when the detail is missing. After a question it always answers right,
   so the base model knows how to use a clarification; what it lacks is knowing when to ask. */
static cJSON *demo_sft_row(cllm_rng *rng, const cllm_task *t, double p_ask) {
    const demo_family *f = demo_family_of(t);
    const char *v = demo_meta_str(t, "value");
    int under = demo_underspecified(t), ask = cllm_rng_uniform(rng) < p_ask;
    char a[200], u[200];
    cJSON *row = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(row, "messages"), *m;
#define DEMO_MSG(role, text) (m = cJSON_CreateObject(), cJSON_AddStringToObject(m, "role", role), cJSON_AddStringToObject(m, "content", text), cJSON_AddItemToArray(msgs, m))
    DEMO_MSG("user", demo_meta_str(t, "opening"));
    if (ask) {
        DEMO_MSG("assistant", f->question);
        snprintf(u, sizeof u, under ? f->reveal : f->restate, v);
        DEMO_MSG("user", u);
    } else if (under) v = f->values[cllm_rng_u32(rng) % (uint32_t)f->n_values];    /* a guess */
    snprintf(a, sizeof a, f->answer, v);
    DEMO_MSG("assistant", a);
#undef DEMO_MSG
    return row;
}

#endif /* DEMO_TASK_H */
