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
     - after an answer: if it is what the user wanted, ends the conversation with the
       termination signal; if not, corrects it ("no , to rome .") and gives up, ending the
       conversation too. A wrong answer is therefore final, as with a user who has no time for
       a second attempt.
   The task metric is an exact match of the assistant's final answer with the reference
   ("here is your ticket to rome .").

   The interactivity judge (demo_judge) reads the conversation and nothing else: not the task,
   not whether the request was under-specified, not the hidden detail. Like an LLM judge it can
   only tell a needless question from what the user says next, so it needs the simulated
   future that MR's forward window provides. Its rubric and its 1-3 scale (CollabLLM v1's) are
   written out above demo_judge below.

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
    char *line, *buf, *grown;
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
        while (len + k + 2 > cap) cap *= 2;
        if (!(grown = (char *)realloc(buf, cap))) {
            cJSON_free(line);
            cJSON_Delete(o);
            free(buf);
            return CLLM_ERR_NOMEM;
        }
        buf = grown;
        memcpy(buf + len, line, k);
        buf[len + k] = '\n';
        len += k + 1;
        cJSON_free(line);
        cJSON_Delete(o);
    }
    rc = cllm_write_file_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

static const demo_family *demo_family_of(const cllm_task *t) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_metadata");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(meta, "family");
    int i;
    for (i = 0; cJSON_IsString(name) && i < DEMO_N_FAMILIES; i++) {
        if (strcmp(demo_families[i].name, name->valuestring) == 0) return &demo_families[i];
    }
    return NULL;
}

static int demo_underspecified(const cllm_task *t) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_metadata"), "underspecified"));
}

static const char *demo_meta_str(const cllm_task *t, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(t->json, "single_turn_metadata"), key);
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
    const char *value = t ? demo_meta_str(t, "value") : "";
    const char *last;
    char detail[160], text[240];
    int i, told = 0;
    if (!t || !f) {
        out->code = CLLM_ERR_ARG;
        snprintf(out->err.msg, sizeof out->err.msg, "demo simulator: unknown task '%s'", goal->prompt);
        out->err.code = out->code;
        return out->code;
    }
    if (h->n == 0) return cllm_reply_set(out, demo_meta_str(t, "opening"), 0);
    last = h->msgs[h->n - 1].content;
    snprintf(detail, sizeof detail, f->reveal, value);
    if (!demo_is_question(last)) {                   /* an answer: accepted, or corrected and final */
        if (cllm_answer_matches(NULL, last, t->completion)) return cllm_reply_set(out, CLLM_TERMINATION_SIGNAL, 1);
        snprintf(text, sizeof text, "no , %s %s", detail, CLLM_TERMINATION_SIGNAL);
        return cllm_reply_set(out, text, 1);
    }
    /* a question: was the detail already given (in the request, or in an earlier answer)? */
    told = !demo_underspecified(t);
    for (i = 1; i < h->n; i++) {
        if (strcmp(h->msgs[i].role, "user") == 0 && strstr(h->msgs[i].content, value)) told = 1;
    }
    if (!told) return cllm_reply_set(out, detail, 0);
    snprintf(text, sizeof text, f->restate, value);
    return cllm_reply_set(out, text, 0);
}

/* ---- the interactivity judge: it reads the conversation, nothing else ------------------------ */

/* CollabLLM v1's judge scale: an integer from 1 to 3, divided by 3 in the reward. */
typedef enum demo_judge_score {
    DEMO_JUDGE_LOW = 1,          /* a needless question, or an answer the user had to correct      */
    DEMO_JUDGE_MODERATE = 2,     /* no evidence either way: the user has not reacted yet           */
    DEMO_JUDGE_HIGH = 3          /* questions that drew new information, answers the user accepted */
} demo_judge_score;

/* Is `word` (n bytes) one of the space-separated words of text? */
static int demo_has_word(const char *text, const char *word, size_t n) {
    const char *p = text;
    while (*p) {
        size_t len;
        while (*p == ' ') p++;
        len = strcspn(p, " ");
        if (len == n && len > 0 && memcmp(p, word, n) == 0) return 1;
        p += len;
    }
    return 0;
}

/* Did the user's message at index k bring nothing new: it says it already told the assistant, or
   every word of it is in the user's earlier messages? */
static int demo_restates(const cllm_conv *c, int k) {
    const char *p = c->msgs[k].content;
    if (demo_has_word(p, "already", 7)) return 1;
    while (*p) {
        size_t len;
        int j, said = 0;
        while (*p == ' ') p++;
        len = strcspn(p, " ");
        for (j = 0; j < k && len > 0 && !said; j++) {
            said = strcmp(c->msgs[j].role, "user") == 0 && demo_has_word(c->msgs[j].content, p, len);
        }
        if (len > 0 && !said) return 0;
        p += len;
    }
    return 1;
}

/* Is the user's message the termination signal and nothing else? */
static int demo_accepts(const char *text) {
    const char *at = strstr(text, CLLM_TERMINATION_SIGNAL);
    size_t i;
    if (!at) return 0;
    for (i = 0; text + i < at; i++) if (text[i] != ' ' && text[i] != '\n') return 0;
    for (at += strlen(CLLM_TERMINATION_SIGNAL); *at; at++) if (*at != ' ' && *at != '\n') return 0;
    return 1;
}

/* The judge, written as an LLM judge's rubric would be. It sees the conversation only: the
   messages before index n_history are context, and the assistant's messages from n_history on
   (the reply under review and the simulated future, or a whole evaluated conversation) are
   judged, each by the user's next message:
     - a question the user answers with something it had not said before: a good question;
     - a question the user answers by restating what it had said: a needless question;
     - an answer the user ends the conversation on, saying nothing else: accepted;
     - an answer the user replies to with anything else (a correction): a failure;
     - a message the user has not replied to (yet): no evidence.
   3 (high): no needless question and no failure, and at least one good question or accepted
   answer; 1 (low): a needless question or a failure; 2 (moderate): no evidence either way, e.g. a
   reply scored with no simulated future (w = 0), whether it asks or answers. */
static demo_judge_score demo_judge(const cllm_conv *c, int n_history) {
    int i, good = 0;
    for (i = n_history > 0 ? n_history : 0; i + 1 < c->n; i++) {
        const char *said = c->msgs[i].content;
        if (strcmp(c->msgs[i].role, "assistant") != 0 || strcmp(c->msgs[i + 1].role, "user") != 0) continue;
        if (demo_is_question(said) ? demo_restates(c, i + 1) : !demo_accepts(c->msgs[i + 1].content)) {
            return DEMO_JUDGE_LOW;
        }
        good = 1;
    }
    return good ? DEMO_JUDGE_HIGH : DEMO_JUDGE_MODERATE;
}

/* The judge as a metric of the reward and the evaluation: its score / 3 (v1's training scale).
   Only each session's conversation and n_history reach the judge, never its task or goal. */
static cllm_result demo_metric_judge(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx; (void)err;
    for (i = 0; i < n; i++) {
        scores[i] = demo_judge(s[i].conv, s[i].n_history) / 3.0;
    }
    return CLLM_OK;
}

/* ---- the table's ground truth ------------------------------------------------------------------ */

/* The assistant's first reply in the session: the candidate (MR) or the first answer (eval). */
static const char *demo_first_reply(const cllm_session *s) {
    int i;
    for (i = s->n_history; i < s->conv->n; i++) {
        if (strcmp(s->conv->msgs[i].role, "assistant") == 0) return s->conv->msgs[i].content;
    }
    return NULL;
}

/* asked: 1 when the first reply is a clarifying question (the table's clarification rates, which
   the evaluation splits by the task's label) */
static cllm_result demo_metric_asked(void *ctx, const cllm_session *s, int n, double *scores, cllm_err *err) {
    int i;
    (void)ctx;
    (void)err;
    for (i = 0; i < n; i++) {
        const char *r = demo_first_reply(&s[i]);
        scores[i] = r && demo_is_question(r) ? 1.0 : 0.0;
    }
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
#define DEMO_MSG(role, text) (m = cJSON_CreateObject(), cJSON_AddStringToObject(m, "role", role), \
                              cJSON_AddStringToObject(m, "content", text), cJSON_AddItemToArray(msgs, m))
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
