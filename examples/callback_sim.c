/* callback_sim.c - Demonstrates a user simulator and an assistant written as plain C callbacks,
   run against each other by cllm_simulate: no model, no network.

     cc -std=c99 -O2 -o callback_sim examples/callback_sim.c -lcjson -lcurl -lstb -lm && ./callback_sim

   The scripted user opens with a vague request, answers one clarifying question with a detail
   from its hidden goal, and ends the chat once it has an answer. The scripted assistant asks
   first and answers second. Swap either side for cllm_llm_sim / cllm_api_assistant (or a local
   model) without touching the other: both are just a function pointer plus a context. */
#define COLLABLLM_IMPLEMENTATION
#include "../collabllm.h"
#include <string.h>

/* ---- the user: turn() gets the hidden goal and the history, writes the next message --------- */

typedef struct scripted_user { const char *termination; int calls; } scripted_user;

static cllm_result scripted_user_turn(void *ctx, const cllm_goal *goal, const cllm_conv *history, cllm_reply *out) {
    scripted_user *u = (scripted_user *)ctx;
    const cllm_message *last = history->n ? &history->msgs[history->n - 1] : NULL;
    char msg[512];
    u->calls++;
    if (!last)                                            /* opening: vague on purpose */
        return cllm_reply_set(out, "hi, can you help me with something for my class?", 0);
    if (strchr(last->content, '?')) {                     /* the assistant asked: reveal the goal */
        snprintf(msg, sizeof msg, "sure, here it is: %s", goal->prompt);
        return cllm_reply_set(out, msg, 0);
    }
    return cllm_reply_set(out, u->termination, 1);        /* it answered: done */
}

/* ---- the assistant: respond() gets the history, writes the next message -------------------- */

static cllm_result scripted_assistant_respond(void *ctx, const cllm_conv *history, cllm_reply *out) {
    int asked = 0, i;
    (void)ctx;
    for (i = 0; i < history->n; i++) asked |= strcmp(history->msgs[i].role, "assistant") == 0;
    return cllm_reply_set(out, asked ? "Here is a worked answer to your question." : "Happy to help. What exactly is the question?", 0);
}

/* Runs n conversations with these two callbacks; convs (n, zeroed) receive the messages. */
static cllm_result run_scripted(const cllm_goal *goals, cllm_conv *convs, int n, cllm_sim_status *status, scripted_user *u, cllm_err *err) {
    cllm_user_sim user;
    cllm_assistant assistant;
    memset(&user, 0, sizeof user);
    memset(&assistant, 0, sizeof assistant);
    u->termination = CLLM_TERMINATION_SIGNAL;
    user.turn = scripted_user_turn;                       /* no turn_batch: called once per conversation */
    user.ctx = u;
    assistant.respond = scripted_assistant_respond;
    return cllm_simulate(&user, &assistant, goals, convs, n, 10, status, err);
}

#ifndef CALLBACK_SIM_NO_MAIN
int main(void) {
    cllm_goal goal;
    cllm_conv conv;
    cllm_sim_status st;
    scripted_user u;
    cllm_err err;
    int i;
    memset(&goal, 0, sizeof goal);
    memset(&conv, 0, sizeof conv);
    memset(&u, 0, sizeof u);
    goal.task_desc = "question answering";
    goal.prompt = "What is the derivative of x^3?";
    if (run_scripted(&goal, &conv, 1, &st, &u, &err) != CLLM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    for (i = 0; i < conv.n; i++) printf("%-9s | %s\n", conv.msgs[i].role, conv.msgs[i].content);
    printf("(%d messages, %s)\n", st.n_new, st.terminated ? "ended by the user" : "ran out of turns");
    cllm_conv_free(&conv);
    return 0;
}
#endif
