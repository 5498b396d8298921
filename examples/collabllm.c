/* collabllm.c - the collabllm.h command-line tool.
   Demonstrates the library end to end; each subcommand is a short function over the public API.

     build/collabllm COMMAND [flags]          build/collabllm COMMAND --help
     build/collabllm --help                   (the list of commands)

   The flags of every command are declared once, in the tables below (examples/flags.h): the
   parser, the checks of the values and `--help` all come from them. Before a command writes
   anything, examples/run_files.h checks its outputs against its inputs: an output never
   replaces an input, an existing output needs --overwrite, and --resume continues only a run of
   the same command with the same inputs and settings (data_fmt/meta.md). Formats: data_fmt/.
   `make` links it with the library's object; alone: cc -std=c99 -O2 -DCOLLABLLM_IMPLEMENTATION
   examples/collabllm.c -o collabllm -lcjson -lcurl -lstb -lm */
#define _XOPEN_SOURCE 700
#include "../collabllm.h"
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "flags.h"
#include "run_files.h"
#include "ref_json.h"

/* ---- flags shared by several commands -------------------------------------------------------- */

#define SEED_MAX 9007199254740992.0          /* 2^53: every integer up to it is a double */
#define COUNT_MAX 1e9

static const flag_spec overwrite_flags[] = {
    { .name = "--overwrite", .type = FLAG_SWITCH, .effect = FLAG_RUNTIME,
      .help = "replace output files that already exist (an output is never one of the inputs)" },
};

static const flag_spec resume_flags[] = {
    { .name = "--resume", .type = FLAG_SWITCH, .effect = FLAG_RUNTIME,
      .help = "continue the run in --out, started by this command with the same inputs and settings" },
    { .name = "--overwrite", .type = FLAG_SWITCH, .effect = FLAG_RUNTIME,
      .help = "replace the run in --out (and an existing --metrics file) with a new one" },
};

/* Sampling of a local model (generate, generate-ids). */
static const flag_spec sampling_flags[] = {
    { .name = "--n", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 65536, .def = "1",
      .help = "samples per prompt" },
    { .name = "--temperature", .type = FLAG_REAL, .metavar = "T", .min = 0, .max = 1e6, .def = "1",
      .help = "sampling temperature, 0 = greedy" },
    { .name = "--top-k", .type = FLAG_INT, .metavar = "K", .min = 0, .max = COUNT_MAX, .def = "0",
      .help = "sample among the K most likely tokens, 0 = off" },
    { .name = "--top-p", .type = FLAG_REAL, .metavar = "P", .min = 0, .max = 1, .def = "1", .lower = FLAG_MIN_OPEN,
      .help = "sample among the most likely tokens holding this much probability, 1 = off" },
    { .name = "--max-new-tokens", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e7, .def = "256",
      .help = "tokens per sample at most" },
    { .name = "--seed", .type = FLAG_INT, .metavar = "S", .min = 0, .max = SEED_MAX, .def = "0",
      .help = "random seed of the samples" },
    { .name = "--sample-weights", .type = FLAG_CHOICE, .choices = "fp32|bf16", .metavar = "W", .def = "fp32",
      .help = "the weights local models sample from: fp32, or a bf16 copy (decoding reads half the bytes; logits "
              "differ slightly: data_fmt/bench.md)" },
};

/* --sample-weights: the weights generation reads (cllm_sample_weights). */
static cllm_sample_weights sample_weights_of(const flags *fl) {
    return flag_choice(fl, "--sample-weights") == 1 ? CLLM_SAMPLE_BF16 : CLLM_SAMPLE_FP32;
}

/* The task file's goals as the simulated user sees them. */
static const flag_spec task_flags[] = {
    { .name = "--task-desc", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "\"a task\"",
      .help = "what kind of task the user has, in the simulator's prompt; a CollabLLM dataset name (math-hard, "
              "medium, bigcodebench, abg-coqa) means its description" },
    { .name = "--show-reference", .type = FLAG_SWITCH,
      .help = "the simulated user also sees single_turn_completion" },
};

/* --task-desc: the text, or the description CollabLLM gives a dataset named by it; NULL when not given. */
static const char *task_desc_of(const flags *fl) {
    const char *text = flag_text(fl, "--task-desc");
    return cllm_task_desc_of_dataset(text) ? cllm_task_desc_of_dataset(text) : text;
}

static const flag_spec limit_flags[] = {       /* runtime: a resumed generate-data may go further */
    { .name = "--limit", .type = FLAG_INT, .metavar = "N", .min = 1, .max = COUNT_MAX, .def_note = "all",
      .effect = FLAG_RUNTIME, .help = "only the first N tasks" },
};

/* The user simulator: an API model or a local model directory. */
static const flag_spec user_flags[] = {
    { .name = "--user-model", .type = FLAG_TEXT, .metavar = "M",
      .help = "the user simulator, a model behind the endpoint (or --user-model-dir)" },
    { .name = "--user-model-dir", .type = FLAG_IN_DIR, .metavar = "DIR",
      .help = "the user simulator, a local Hugging Face model directory" },
    { .name = "--user-temperature", .type = FLAG_REAL, .metavar = "T", .min = 0, .max = 1e6, .def_note = "1",
      .lower = FLAG_MIN_OPEN, .help = "the simulator's sampling temperature" },
    { .name = "--user-max-tokens", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e7, .def_note = "1024",
      .help = "tokens per simulator reply at most" },
    { .name = "--user-reasks", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 100, .def_note = "3",
      .help = "new samples asked of the simulator for a reply it cannot use (no JSON, no response)" },
    { .name = "--termination", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "[[TERMINATE CHAT]]",
      .help = "what the simulated user says to end the conversation" },
    { .name = "--json-mode", .type = FLAG_SWITCH,
      .help = "ask the API simulator for a JSON object (response_format json_object)" },
    { .name = "--user-base-url", .type = FLAG_TEXT, .metavar = "URL", .def_note = "--base-url", .effect = FLAG_RUNTIME,
      .help = "the API simulator's endpoint" },
    { .name = "--user-api-key-env", .type = FLAG_TEXT, .metavar = "NAME", .def_note = "--api-key-env",
      .effect = FLAG_RUNTIME, .help = "the environment variable with the API simulator's key" },
};

/* The assistant being simulated or evaluated: an API model or a local model directory. */
static const flag_spec assistant_flags[] = {
    { .name = "--assistant-model", .type = FLAG_TEXT, .metavar = "M",
      .help = "the assistant, a model behind the endpoint (or --assistant-model-dir)" },
    { .name = "--assistant-model-dir", .type = FLAG_IN_DIR, .metavar = "DIR",
      .help = "the assistant, a local Hugging Face model directory (the same as --user-model-dir is loaded once)" },
    { .name = "--assistant-base-url", .type = FLAG_TEXT, .metavar = "URL", .def_note = "--base-url",
      .effect = FLAG_RUNTIME, .help = "the API assistant's endpoint" },
    { .name = "--assistant-api-key-env", .type = FLAG_TEXT, .metavar = "NAME", .def_note = "--api-key-env",
      .effect = FLAG_RUNTIME, .help = "the environment variable with the API assistant's key" },
};

/* How the assistant samples (online training: the policy as MR's future assistant). */
static const flag_spec assistant_sampling_flags[] = {
    { .name = "--assistant-temperature", .type = FLAG_REAL, .metavar = "T", .min = 0, .max = 1e6, .def_note = "0.8",
      .lower = FLAG_MIN_OPEN, .help = "the assistant's sampling temperature" },
    { .name = "--assistant-max-tokens", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e7,
      .def_note = "2048 API, 1024 local", .help = "tokens per assistant reply at most" },
    { .name = "--assistant-system", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "none",
      .help = "a system message before every conversation the assistant sees" },
    { .name = "--sample-weights", .type = FLAG_CHOICE, .choices = "fp32|bf16", .metavar = "W", .def = "fp32",
      .help = "the weights local models sample from: fp32, or a bf16 copy (decoding reads half the bytes; logits "
              "differ slightly: data_fmt/bench.md)" },
};

/* The seed of the simulator and assistant (no training). */
static const flag_spec side_seed_flags[] = {
    { .name = "--seed", .type = FLAG_INT, .metavar = "S", .min = 0, .max = SEED_MAX, .def = "0",
      .help = "seed of local models' sampling, and sent to API models (0: none sent)" },
};

/* The endpoint every API model shares unless a --{user,assistant,judge}-* flag says otherwise. */
static const flag_spec endpoint_flags[] = {
    { .name = "--base-url", .type = FLAG_TEXT, .metavar = "URL", .def_note = "$OPENAI_BASE_URL", .effect = FLAG_RUNTIME,
      .help = "OpenAI-compatible endpoint, .../v1 (data_fmt/endpoints.md)" },
    { .name = "--api-key-env", .type = FLAG_TEXT, .metavar = "NAME", .def_note = "OPENAI_API_KEY",
      .effect = FLAG_RUNTIME, .help = "the environment variable that holds the API key" },
    { .name = "--concurrency", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 4096, .def_note = "16",
      .effect = FLAG_RUNTIME, .help = "requests in flight at once, per endpoint" },
    { .name = "--timeout-ms", .type = FLAG_INT, .metavar = "MS", .min = 1, .max = 1e9, .def_note = "300000",
      .effect = FLAG_RUNTIME, .help = "limit of one attempt of a request" },
    { .name = "--retries", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 100, .def_note = "5",
      .effect = FLAG_RUNTIME, .help = "retries of a failed request (408, 429, 5xx, timeouts), 0 = none" },
    { .name = "--deadline-ms", .type = FLAG_INT, .metavar = "MS", .min = 1, .max = 1e9, .def_note = "600000, 10 minutes",
      .effect = FLAG_RUNTIME, .help = "limit of one request, every attempt and wait included" },
    { .name = "--backoff-max-ms", .type = FLAG_INT, .metavar = "MS", .min = 1, .max = 1e9, .def_note = "60000",
      .effect = FLAG_RUNTIME, .help = "the longest wait before a retry, Retry-After included" },
    { .name = "--reject-incomplete", .type = FLAG_SWITCH,
      .help = "a reply cut by its length or a content filter (finish_reason) is a failed call" },
    { .name = "--insecure", .type = FLAG_SWITCH, .effect = FLAG_RUNTIME,
      .help = "skip TLS certificate checks" },
};

/* The metrics of the reward (or of the evaluation) and their judge. */
static const flag_spec metric_flags[] = {
    { .name = "--metrics", .type = FLAG_TEXT, .metavar = "NAME:W,...", .def = "accuracy:1,interactivity:0.5",
      .help = "metrics and weights: token_amount, interactivity, interactivity_v1, accuracy, exact_match, bleu, "
              "bleu_last, pass_rate" },
    { .name = "--judge-model", .type = FLAG_TEXT, .metavar = "M",
      .help = "the LLM judge (interactivity, accuracy; extracts the final document or code for bleu, pass_rate)" },
    { .name = "--judge-temperature", .type = FLAG_REAL, .metavar = "T", .min = 0, .max = 1e6, .def_note = "0",
      .help = "the judge's sampling temperature" },
    { .name = "--judge-reasks", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 100, .def_note = "3",
      .help = "new samples asked of the judge for a verdict it cannot use" },
    { .name = "--judge-base-url", .type = FLAG_TEXT, .metavar = "URL", .def_note = "--base-url", .effect = FLAG_RUNTIME,
      .help = "the judge's endpoint" },
    { .name = "--judge-api-key-env", .type = FLAG_TEXT, .metavar = "NAME", .def_note = "--api-key-env",
      .effect = FLAG_RUNTIME, .help = "the environment variable with the judge's key" },
    { .name = "--answer-prefix", .type = FLAG_TEXT, .metavar = "TEXT",
      .help = "exact_match: the final answer is the text after it" },
    { .name = "--numeric", .type = FLAG_SWITCH,
      .help = "exact_match: compare answers as numbers" },
    { .name = "--python", .type = FLAG_TEXT, .metavar = "PATH", .def_note = "python3", .effect = FLAG_RUNTIME,
      .help = "pass_rate: the interpreter that runs the tests" },
    { .name = "--code-timeout", .type = FLAG_REAL, .metavar = "S", .min = 0, .max = 1e6, .def_note = "10",
      .lower = FLAG_MIN_OPEN, .help = "pass_rate: seconds per run" },
    { .name = "--code-memory-mb", .type = FLAG_INT, .metavar = "MB", .min = 1, .max = 1e9, .def_note = "2048",
      .effect = FLAG_RUNTIME, .help = "pass_rate: address-space limit of a run" },
    { .name = "--pass-rule", .type = FLAG_CHOICE, .choices = "all|fraction", .metavar = "R", .def = "all",
      .help = "pass_rate: 1 only when every test passes (BigCodeBench, CollabLLM), or the fraction passed" },
    { .name = "--no-extract", .type = FLAG_SWITCH,
      .help = "bleu, pass_rate: score the last assistant message (its last ```python block) as it is, with no "
              "LLM extracting the final document or code" },
};

/* What counts tokens for token_amount and for MR's token cost (data_fmt/tiktoken.md). */
static const flag_spec token_count_flags[] = {
    { .name = "--token-counter", .type = FLAG_TEXT, .metavar = "PATH|words",
      .def_note = "the local assistant's (the policy's) tokenizer, else words",
      .help = "what counts tokens: a tiktoken file (cl100k_base.tiktoken, as CollabLLM), a tokenizer.json or its "
              "directory, or whitespace words (data_fmt/tiktoken.md)" },
};

/* The multiturn-aware reward. */
static const flag_spec mr_flags[] = {
    { .name = "--preset", .type = FLAG_CHOICE, .choices = "math|code|document", .metavar = "KIND", .def = "math",
      .help = "the paper's settings for a task kind (w = 2, S = 3; lambda 5e-4, document 1e-4)" },
    { .name = "--window", .type = FLAG_INT, .metavar = "W", .min = 0, .max = 100, .def_note = "the preset's",
      .help = "simulated exchanges after each candidate, 0 = the immediate reward" },
    { .name = "--samples", .type = FLAG_INT, .metavar = "S", .min = 1, .max = 1000, .def_note = "the preset's",
      .help = "simulated futures averaged per candidate" },
    { .name = "--lambda", .type = FLAG_REAL, .metavar = "L", .min = 0, .max = 1e6, .def_note = "the preset's",
      .help = "token cost of the paper's variant: R* - min(lambda x tokens, 1)" },
    { .name = "--variant", .type = FLAG_CHOICE, .choices = "paper|weighted", .metavar = "V", .def = "paper",
      .help = "paper: weighted metrics minus the token cost; weighted: the weighted sum only" },
};

/* CollabLLM's own settings at once (data_fmt/fidelity.md): every row of the fidelity table that a command has a
   flag for takes v1's (the paper's code, c41bc29) or v2's (09e5b25) value; a flag given explicitly still wins. */
#define COLLABLLM_FLAG                                                                                               \
    { .name = "--collabllm", .type = FLAG_CHOICE, .choices = "v1|v2", .metavar = "VERSION",                          \
      .help = "CollabLLM's settings for every row of data_fmt/fidelity.md: v1 (the paper's code) or v2 (its current "  \
              "code); flags given explicitly win; needs --token-counter PATH/cl100k_base.tiktoken where tokens count" }
static const flag_spec collabllm_flags[] = { COLLABLLM_FLAG };
/* The same with the task kind, for the commands without the MR flags (eval, build-pairs). */
static const flag_spec collabllm_kind_flags[] = {
    COLLABLLM_FLAG,
    { .name = "--preset", .type = FLAG_CHOICE, .choices = "math|code|document", .metavar = "KIND", .def = "math",
      .help = "with --collabllm: the task kind whose settings it takes" },
};

/* The training loop (sft, dpo, online-dpo, ppo, grpo). */
static const flag_spec train_flags[] = {
    { .name = "--tokenizer", .type = FLAG_IN_PATH, .metavar = "PATH", .def_note = "--model",
      .help = "tokenizer.json and chat template (or their directory)" },
    { .name = "--lr", .type = FLAG_REAL, .metavar = "LR", .min = 0, .max = 1, .lower = FLAG_MIN_OPEN,
      .def_note = "the paper's: SFT 1e-5, DPO 5e-6, PPO 2e-6; GRPO 1e-6", .help = "peak learning rate" },
    { .name = "--schedule", .type = FLAG_CHOICE, .choices = "cosine|linear|constant", .metavar = "S", .def = "cosine",
      .help = "learning-rate schedule after the warmup" },
    { .name = "--warmup-steps", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 1e12, .def = "0",
      .help = "linear warmup steps" },
    { .name = "--warmup-ratio", .type = FLAG_REAL, .metavar = "R", .min = 0, .max = 1, .def = "0",
      .help = "warmup as a fraction of the steps (when --warmup-steps is 0)" },
    { .name = "--epochs", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e6, .def = "1",
      .help = "passes over the data" },
    { .name = "--max-steps", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e12, .def_note = "from --epochs",
      .help = "exactly this many optimizer steps (overrides --epochs)" },
    { .name = "--batch-size", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e6, .def = "8",
      .help = "examples per micro-batch (online: prompts)" },
    { .name = "--grad-accum", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e6, .def = "1",
      .help = "micro-batches per optimizer step" },
    { .name = "--max-length", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e8,
      .def_note = "1024; online-dpo 512", .help = "tokens per example at most (longer ones are truncated)" },
    { .name = "--max-grad-norm", .type = FLAG_REAL, .metavar = "X", .min = 0, .max = FLAG_NO_MAX,
      .def_note = "1; ppo off, as TRL", .help = "gradient clipping threshold, 0 = off" },
    { .name = "--weight-decay", .type = FLAG_REAL, .metavar = "X", .min = 0, .max = 1e3, .def = "0",
      .help = "AdamW weight decay (2-D weights)" },
    { .name = "--adam-beta1", .type = FLAG_REAL, .metavar = "B", .min = 0, .max = 1, .lower = FLAG_MIN_OPEN,
      .def_note = "0.9", .help = "AdamW beta1" },
    { .name = "--adam-beta2", .type = FLAG_REAL, .metavar = "B", .min = 0, .max = 1, .lower = FLAG_MIN_OPEN,
      .def_note = "0.999", .help = "AdamW beta2" },
    { .name = "--adam-epsilon", .type = FLAG_REAL, .metavar = "E", .min = 0, .max = 1, .lower = FLAG_MIN_OPEN,
      .def_note = "1e-8", .help = "AdamW epsilon" },
    { .name = "--seed", .type = FLAG_INT, .metavar = "S", .min = 1, .max = SEED_MAX, .def_note = "42",
      .help = "data order, dropout, LoRA init and sampling" },
    { .name = "--save-every", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 1e12, .def = "0",
      .effect = FLAG_RUNTIME, .help = "a checkpoint every N steps, 0 = only at the end" },
    { .name = "--keep-last", .type = FLAG_INT, .metavar = "N", .min = 0, .max = 1e6, .def = "0",
      .effect = FLAG_RUNTIME, .help = "keep only the N newest checkpoints, 0 = all" },
    { .name = "--log-every", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e12, .def = "1",
      .effect = FLAG_RUNTIME, .help = "a progress line every N steps" },
    { .name = "--stop-after", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e12, .def_note = "run to the end",
      .effect = FLAG_RUNTIME, .help = "stop after N steps with a checkpoint; --resume continues" },
    { .name = "--quiet", .type = FLAG_SWITCH, .effect = FLAG_RUNTIME,
      .help = "no progress lines" },
};

static const flag_spec lora_flags[] = {
    { .name = "--lora-r", .type = FLAG_INT, .metavar = "R", .min = 1, .max = CLLM_LORA_MAX_R, .def_note = "32",
      .help = "LoRA rank; any --lora-* flag trains adapters instead of the whole model" },
    { .name = "--lora-alpha", .type = FLAG_REAL, .metavar = "A", .min = 0, .max = 1e6, .lower = FLAG_MIN_OPEN,
      .def_note = "16", .help = "the update is scaled by alpha / r" },
    { .name = "--lora-dropout", .type = FLAG_REAL, .metavar = "P", .min = 0, .max = 0.99, .def_note = "0.1",
      .help = "dropout on the adapters' input, 0 = none" },
    { .name = "--lora-targets", .type = FLAG_TEXT, .metavar = "LIST", .def_note = "all",
      .help = "adapted projections: q,k,v,o,gate,up,down" },
};

static const flag_spec train_log_flags[] = {
    { .name = "--metrics", .type = FLAG_RUN_LOG, .metavar = "PATH", .def_note = "OUT/metrics.jsonl",
      .help = "one JSON line per step (data_fmt/train.md)" },
};

/* ---- helpers ------------------------------------------------------------------------------------ */

static int fail(const cllm_err *err) {
    fprintf(stderr, "error: %s\n", err->msg);
    return 1;
}

/* Parses argv against cmd; 1 to go on, else 0 with *status the exit status (0 after --help). */
/* One row of data_fmt/fidelity.md as flag values: for the commands named (NULL: all that declare the flag) and the
   task kind named (NULL: all), v1's and v2's value (NULL: that version keeps collabllm.h's default). */
typedef struct collabllm_setting {
    const char *flag;
    const char *commands;     /* "eval", "online-dpo ppo", ... matched against the program name */
    const char *kind;         /* "math", "code", "document" */
    const char *v1, *v2;
} collabllm_setting;

static const collabllm_setting collabllm_settings[] = {
    /* the reward (core/multithread.py at c41bc29; collabllm/reward.py and scripts/engine/build_dataset.py) */
    { "--variant", NULL, NULL, "paper", "weighted" },
    { "--metrics", "mr generate-data eval", "math", "accuracy:1,interactivity_v1:1",
      "accuracy:1,interactivity:0.5,token_amount:-0.5" },
    { "--metrics", "online-dpo ppo grpo", "math", "accuracy:1,interactivity_v1:1",
      "accuracy:1,interactivity:1,token_amount:-0.5" },
    { "--metrics", NULL, "code", "pass_rate:1,interactivity_v1:1", "pass_rate:1,token_amount:-0.5" },
    { "--metrics", NULL, "document", "bleu:1", "bleu:1,token_amount:-0.1" },
    { "--samples", "ppo", NULL, "2", NULL },
    /* task metrics: BigCodeBench's untrusted_check limits */
    { "--code-timeout", NULL, NULL, "241", "241" },
    { "--code-memory-mb", NULL, NULL, "30720", "307200" },
    /* the simulator and the candidates */
    { "--user-max-tokens", NULL, NULL, "4096", "1024" },
    { "--assistant-temperature", NULL, "math", "0.6", "0.8" },
    { "--assistant-temperature", NULL, "code", "0.5", "0.8" },
    { "--assistant-temperature", NULL, "document", "0.8", "0.9" },
    { "--assistant-temperature", "eval online-dpo ppo", "code", "0.6", NULL },
    { "--assistant-max-tokens", NULL, "math", "1536", "2048" },
    { "--assistant-max-tokens", NULL, "code", "1536", "2048" },
    { "--assistant-max-tokens", NULL, "document", "2048", "2048" },
    { "--proactive-ratio", NULL, NULL, "0.5", "0.5" },
    { "--user-reasks", NULL, NULL, "10", "10" },
    /* the judges: v1 scores the reward at T 0.2 and evaluates at T 0, and re-asks without limit (here: 100) */
    { "--judge-temperature", NULL, NULL, "0.2", NULL },
    { "--judge-temperature", "eval", NULL, "0", NULL },
    { "--judge-reasks", NULL, NULL, "100", "50" },
    /* conversation lengths: data generation and evaluation */
    { "--max-turns", "generate-data", "math", "6", "7" },
    { "--max-turns", "generate-data", "code", "8", "7" },
    { "--max-turns", "generate-data", "document", "8", "7" },
    { "--max-turns", "eval", "math", "6", "7" },
    { "--max-turns", "eval", "code", "6", "7" },
    { "--max-turns", "eval", "document", "8", "7" },
    /* pairs (datasets/__init__.py at c41bc29; datasets/multiturn.py) */
    { "--gap-preset", NULL, "math", "v1-math", "v2" },
    { "--gap-preset", NULL, "code", "v1", "v2" },
    { "--gap-preset", NULL, "document", "v1", "v2" },
    { "--rules", NULL, NULL, "v1", "v2" },
    { "--system-prompt", NULL, NULL, "collabllm", "collabllm" },
    { "--completion-tokens", NULL, NULL, "turn", "trl" },
    /* online sampling (dpo_train_online.py, ppo_train.py at c41bc29; scripts/train/online_dpo.py, ppo.py) */
    { "--max-new-tokens", "online-dpo ppo", "math", "1536", "2048" },
    { "--max-new-tokens", "online-dpo ppo", "code", "1536", "2048" },
    { "--max-new-tokens", "online-dpo ppo", "document", "2048", "2048" },
    { "--temperature", "online-dpo", NULL, "0.9", "0.9" },
    { "--top-k", "online-dpo", NULL, "0", "50" },
    { "--temperature", "ppo", NULL, "0.8", "0.8" },
    { "--top-p", "ppo", NULL, "0.9", "0.9" },
};

/* Does the space-separated list hold the command's name ("collabllm eval" -> "eval")? */
static int names_command(const char *list, const char *program) {
    const char *name = strrchr(program, ' ') ? strrchr(program, ' ') + 1 : program;
    size_t n = strlen(name);
    const char *p;
    for (p = strstr(list, name); p; p = strstr(p + 1, name))
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return 1;
    return 0;
}

/* --collabllm v1|v2: the settings of its version, for the flags the command has and that were not given. The
   token counts of both versions are tiktoken's cl100k_base, so a command that counts tokens needs that file. */
static int apply_collabllm(flags *fl) {
    int version;
    const char *kind;
    const char *counter;
    size_t i;
    if (!flags_declared(fl, "--collabllm") || !flag_given(fl, "--collabllm")) return 1;
    version = flag_choice(fl, "--collabllm");
    if (flags_declared(fl, "--preset") && !flag_given(fl, "--preset"))
        return !flags_refuse(fl->cmd, "--collabllm takes CollabLLM's settings of one task kind: give --preset math, "
                             "code or document");
    kind = flags_declared(fl, "--preset") ? flag_text(fl, "--preset") : "math";
    for (i = 0; i < sizeof collabllm_settings / sizeof collabllm_settings[0]; i++) {
        const collabllm_setting *c = &collabllm_settings[i];
        const char *value = version == 0 ? c->v1 : c->v2;
        if (!value || (c->kind && strcmp(c->kind, kind) != 0)) continue;
        if (c->commands && !names_command(c->commands, fl->cmd->program)) continue;
        if (!flag_preset(fl, c->flag, value)) return 0;
    }
    counter = flags_declared(fl, "--token-counter") ? flag_text(fl, "--token-counter") : "cl100k_base.tiktoken";
    if (!counter || strlen(counter) < 20 || strcmp(counter + strlen(counter) - 20, "cl100k_base.tiktoken") != 0)
        return !flags_refuse(fl->cmd, "--collabllm %s counts tokens as CollabLLM does, with tiktoken's cl100k_base: "
                             "give --token-counter PATH/cl100k_base.tiktoken (data_fmt/tiktoken.md says where to get "
                             "it)", flag_text(fl, "--collabllm"));
    return 1;
}

static int parse(flags *fl, const flag_command *cmd, int argc, char **argv, int *status) {
    flags_status s = flags_parse(fl, cmd, argc, argv);
    *status = s == FLAGS_HELP ? 0 : 2;
    return s == FLAGS_OK && apply_collabllm(fl);
}

/* The checks of a command that writes no file: its inputs exist and are what they should be. */
static int check_files(const flags *fl) {
    run_files rf;
    return run_files_prepare(&rf, fl);
}

/* "1,2,3" -> a malloc'd int array; NULL (after a message) unless every entry is an int in [0, 2^31). */
static int *int_list(const flags *fl, const char *name, int *n) {
    const char *text = flag_text(fl, name);
    int *out = (int *)malloc((strlen(text) / 2 + 1) * sizeof(int));
    const char *p = text;
    char *end;
    *n = 0;
    while (out && *p) {
        long x;
        errno = 0;
        x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > 2147483647L || (*end && *end != ',') || (*end == ',' && !end[1])) {
            flags_fail(fl->cmd, "%s: '%s' is not a comma-separated list of integers in [0, 2147483647]", name, text);
            free(out);
            return NULL;
        }
        out[(*n)++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (!out) fprintf(stderr, "error: out of memory\n");
    return out;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    int i;
    for (i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* Prints o as one line and deletes it. */
static void print_json_line(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (s) { fputs(s, stdout); fputc('\n', stdout); cJSON_free(s); }
    cJSON_Delete(o);
}

/* "ids", "logprobs" (9 significant digits: all a float holds) and "finish" of one sample. */
static void add_generated(cJSON *o, const int *ids, const cllm_float *logprobs, int n, int finish) {
    cJSON *lps;
    char num[32];
    int t;
    cJSON_AddItemToObject(o, "ids", int_array(ids, n));
    lps = cJSON_AddArrayToObject(o, "logprobs");
    for (t = 0; t < n; t++) {
        snprintf(num, sizeof num, "%.9g", (double)logprobs[t]);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(strtod(num, NULL)));
    }
    cJSON_AddStringToObject(o, "finish", cllm_finish_reason_string(finish));
}

/* The length of the valid UTF-8 prefix of s[0..n) (n if all of it is valid). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        unsigned cp;
        size_t k;
        if (len == 0 || i + len > n) return i;
        cp = len == 1 ? c : c & (0x7Fu >> len);
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

/* Where a JSON value came from, for messages: "FILE:LINE" (the line it starts on). */
typedef struct { const char *file; int line; } json_origin;

static void origin_text(const json_origin *at, char *buf, size_t size) {
    snprintf(buf, size, "%s:%d", at->file, at->line);
}

/* Calls fn on each JSON value of a file that holds one JSON value, or JSONL (one per line);
   stops at the first nonzero return. Text that is not UTF-8 or not JSON is reported at its line
   and byte. */
static int each_json(const char *file, int (*fn)(const cJSON *value, const json_origin *at, void *ctx), void *ctx) {
    char *data = NULL;
    char *line;
    char *next;
    size_t len;
    size_t bad;
    cllm_err err;
    int rc = 0;
    int lineno = 0;
    json_origin at;
    cJSON *all;
    if (cllm_read_file(file, &data, &len, &err) != CLLM_OK) return fail(&err);
    at.file = file;
    at.line = 0;
    bad = utf8_valid_prefix((const unsigned char *)data, len);
    if (bad < len) {
        size_t line_start = bad;
        int bad_line = 1;
        size_t i;
        while (line_start > 0 && data[line_start - 1] != '\n') line_start--;
        for (i = 0; i < bad; i++) bad_line += data[i] == '\n';
        fprintf(stderr, "error: %s:%d: not valid UTF-8 at byte %zu of the line (byte %zu of the file)\n", file,
                bad_line, bad - line_start + 1, bad + 1);
        cllm_free_buffer(data);
        return 1;
    }
    all = cJSON_ParseWithLengthOpts(data, len + 1, NULL, 1);      /* one JSON value, then only the NUL */
    if (all) {
        size_t i = 0;
        at.line = 1;                                 /* messages name the line where the value starts */
        for (; i < len && strchr(" \t\r\n", data[i]); i++) at.line += data[i] == '\n';
        rc = fn(all, &at, ctx);
    }
    else for (line = data; line && *line && !rc; line = next) {
        cJSON *v;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        lineno++;
        if (!*line || (line[0] == '\r' && !line[1])) continue;
        at.line = lineno;
        if (!(v = cJSON_Parse(line))) {
            fprintf(stderr, "error: %s:%d: not valid JSON (and the whole file is not one JSON value)\n", file, lineno);
            rc = 1;
            break;
        }
        rc = fn(v, &at, ctx);
        cJSON_Delete(v);
    }
    if (rc == 0 && !all && lineno == 0) {
        fprintf(stderr, "error: %s is empty; expected JSON (data_fmt/chat.md)\n", file);
        rc = 1;
    }
    cJSON_Delete(all);
    cllm_free_buffer(data);
    return rc;
}

/* ---- dump: logits, loss, logps (and gradients) of a checkpoint on a token file ------------- */
/* The interface other implementations use to check themselves against this one; the output
   format is data_fmt/dump.md. */

static const flag_spec dump_own_flags[] = {
    { .name = "--model", .type = FLAG_IN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "Hugging Face model directory (config.json, model.safetensors)" },
    { .name = "--input", .type = FLAG_IN_FILE, .metavar = "ROWS.jsonl", .need = FLAG_REQUIRED,
      .help = "token rows {\"input_ids\", \"labels\"} (data_fmt/dump.md)" },
    { .name = "--out", .type = FLAG_OUT_FILE, .metavar = "OUT.safetensors", .need = FLAG_REQUIRED,
      .help = "logits, loss, logps and gradients (data_fmt/dump.md)" },
    { .name = "--grads", .type = FLAG_SWITCH,
      .help = "also the gradients of the loss with respect to every parameter" },
};
static const flag_group dump_group = FLAG_GROUP("dump", dump_own_flags);
static const flag_group overwrite_group = FLAG_GROUP("outputs", overwrite_flags);
static const flag_command dump_command = {
    "collabllm dump", "Logits, loss, sequence log-probs and (--grads) gradients of a checkpoint on token rows.",
    "Reads ROWS.jsonl (data_fmt/dump.md); writes OUT.safetensors (data_fmt/dump.md).", NULL,
    { &dump_group, &overwrite_group, NULL },
};

/* token_logps[b][t] = log_softmax(logits[b][t - 1])[labels[b][t]] where labels[b][t] counts (t >= 1, not -100),
   else 0: HF's shift, each position scored by the logits before it. In double, then stored as cllm_float. */
static void token_logps_of(const cllm_batch *batch, const cllm_float *logits, int V, cllm_float *out) {
    int b, t, v;
    for (b = 0; b < batch->B; b++) {
        for (t = 1; t < batch->T; t++) {
            const cllm_float *row = logits + ((size_t)b * batch->T + t - 1) * V;
            size_t at = (size_t)b * batch->T + t;
            int label = batch->labels ? batch->labels[at] : batch->attn_mask && !batch->attn_mask[at] ? -100
                                                                                                       : batch->input_ids[at];
            double max = row[0], sum = 0;
            if (label < 0 || label >= V) continue;
            for (v = 1; v < V; v++) if (row[v] > max) max = row[v];
            for (v = 0; v < V; v++) sum += exp((double)row[v] - max);
            out[at] = (cllm_float)((double)row[label] - max - log(sum));
        }
    }
}

static int cmd_dump(int argc, char **argv) {
    const char *dir;
    const char *in;
    const char *out;
    int rc = 1;
    int n = 0;
    cllm_model m;
    cllm_batch batch;
    cllm_err err;
    cllm_float *logits = NULL;
    cllm_float *token_logps = NULL;
    cllm_st_entry *entries = NULL;
    flags fl;
    run_files rf;
    if (!parse(&fl, &dump_command, argc, argv, &rc)) return rc;
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    dir = flag_text(&fl, "--model");
    in = flag_text(&fl, "--input");
    out = flag_text(&fl, "--out");
    rc = 1;
    if (cllm_model_load(&m, dir, &err) != CLLM_OK) return fail(&err);
    if (cllm_batch_read_jsonl(&batch, in, &err) != CLLM_OK) { cllm_model_free(&m); return fail(&err); }
    logits = (cllm_float *)malloc((size_t)batch.B * batch.T * m.config.vocab_size * sizeof(cllm_float));
    token_logps = (cllm_float *)calloc((size_t)batch.B * batch.T, sizeof(cllm_float));
    entries = (cllm_st_entry *)calloc(4 + (size_t)cllm_model_tensor_count(&m), sizeof *entries);
    if (!logits || !token_logps || !entries) { fprintf(stderr, "error: out of memory\n"); goto done; }
    if (cllm_forward(&m, &batch, logits, &err) != CLLM_OK) { fail(&err); goto done; }
    strcpy(entries[n].name, "logits"); entries[n].ndim = 3;
    entries[n].shape[0] = batch.B; entries[n].shape[1] = batch.T; entries[n].shape[2] = m.config.vocab_size; entries[n++].data = logits;
    strcpy(entries[n].name, "loss"); entries[n].ndim = 0; entries[n++].data = &m.loss;
    strcpy(entries[n].name, "logps"); entries[n].ndim = 1; entries[n].shape[0] = batch.B; entries[n++].data = m.seq_logp;
    token_logps_of(&batch, logits, m.config.vocab_size, token_logps);
    strcpy(entries[n].name, "token_logps"); entries[n].ndim = 2;
    entries[n].shape[0] = batch.B; entries[n].shape[1] = batch.T; entries[n++].data = token_logps;
    if (flag_on(&fl, "--grads")) {
        if (cllm_zero_grad(&m, &err) != CLLM_OK || cllm_backward(&m, NULL, NULL, &err) != CLLM_OK) { fail(&err); goto done; }
        n += cllm_model_entries(&m, m.grads_memory, "grad.", CLLM_DT_F32, entries + n);
    }
    if (cllm_st_save(out, entries, n, &err) != CLLM_OK) { fail(&err); goto done; }
    fprintf(stderr, "dump: B=%d T=%d V=%d loss=%.6f (%d targets) -> %s (%d tensors)\n",
            batch.B, batch.T, m.config.vocab_size, (double)m.loss, m.n_targets, out, n);
    rc = 0;
done:
    free(logits); free(token_logps); free(entries);
    cllm_batch_free(&batch);
    cllm_model_free(&m);
    return rc;
}

/* --temperature (0 = greedy), --top-k, --top-p, --max-new-tokens, --seed. */
static cllm_sampler sampler_of(const flags *fl) {
    cllm_sampler s;
    memset(&s, 0, sizeof s);
    s.temperature = (float)flag_number(fl, "--temperature");
    s.greedy = s.temperature == 0;
    s.top_k = (int)flag_number(fl, "--top-k");
    s.top_p = (float)flag_number(fl, "--top-p");
    s.seed = (uint64_t)flag_number(fl, "--seed");
    return s;
}

/* ---- generate-ids: sample continuations of a prompt given as token ids ------------------------ */
/* Token ids in, JSON lines out (data_fmt/generate-ids.md); temperature 0 means greedy. Text
   prompts (`generate --messages`) need the tokenizer and chat templates. */

static const flag_spec generate_ids_own_flags[] = {
    { .name = "--model", .type = FLAG_IN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "Hugging Face model directory" },
    { .name = "--prompt-ids", .type = FLAG_TEXT, .metavar = "IDS", .need = FLAG_REQUIRED,
      .help = "the prompt as comma-separated token ids: 1,2,3" },
    { .name = "--eos-ids", .type = FLAG_TEXT, .metavar = "IDS", .def_note = "the model's eos_token_id",
      .help = "token ids that end a sample: 2,7" },
    { .name = "--ignore-eos", .type = FLAG_SWITCH,
      .help = "never stop at an end token: every sample has --max-new-tokens tokens" },
};
static const flag_group generate_ids_group = FLAG_GROUP("generate-ids", generate_ids_own_flags);
static const flag_group sampling_group = FLAG_GROUP("sampling", sampling_flags);
static const flag_command generate_ids_command = {
    "collabllm generate-ids", "Sample continuations of a prompt given as token ids.",
    "Writes one JSON line per sample on stdout: ids, logprobs, finish (data_fmt/generate-ids.md).", NULL,
    { &generate_ids_group, &sampling_group, NULL },
};

static int cmd_generate_ids(int argc, char **argv) {
    int *prompt = NULL;
    int *eos = NULL;
    int n_prompt = 0;
    int n_eos = 0;
    int rc;
    int s;
    int n;
    cllm_model m;
    cllm_gen_config g;
    cllm_completion *out = NULL;
    cllm_err err;
    flags fl;
    if (!parse(&fl, &generate_ids_command, argc, argv, &rc)) return rc;
    if (!flags_exclusive(&fl, "--eos-ids", "--ignore-eos")) return 2;
    if (!(prompt = int_list(&fl, "--prompt-ids", &n_prompt))) return 2;
    if (flag_given(&fl, "--eos-ids") && !(eos = int_list(&fl, "--eos-ids", &n_eos))) { free(prompt); return 2; }
    if ((rc = check_files(&fl)) != 0) { free(prompt); free(eos); return rc; }
    rc = 1;
    n = (int)flag_number(&fl, "--n");
    memset(&g, 0, sizeof g);
    g.sampler = sampler_of(&fl);
    g.max_new_tokens = (int)flag_number(&fl, "--max-new-tokens");
    g.weights = sample_weights_of(&fl);
    g.eos_ids = eos;
    g.n_eos = n_eos;
    g.ignore_eos = flag_on(&fl, "--ignore-eos");
    if (cllm_model_load(&m, flag_text(&fl, "--model"), &err) != CLLM_OK) { free(prompt); free(eos); return fail(&err); }
    out = (cllm_completion *)calloc((size_t)n, sizeof *out);
    if (!out) fprintf(stderr, "error: out of memory\n");
    else if (cllm_generate(&m, prompt, n_prompt, n, &g, out, &err) != CLLM_OK) fail(&err);
    else {
        for (s = 0; s < n; s++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "sample", s);
            add_generated(o, out[s].ids, out[s].logprobs, out[s].n, out[s].finish);
            print_json_line(o);
        }
        rc = 0;
    }
    cllm_completions_free(out, out ? n : 0);
    free(out); free(prompt); free(eos);
    cllm_model_free(&m);
    return rc;
}

/* ---- ref: the pure training math (DPO, GAE, PPO, GRPO, AdamW, BLEU) as JSON in, JSON out ---- */
/* One JSON object on stdin, the result object on stdout (examples/ref_json.h); shapes in data_fmt/ref.md. */

static const flag_command ref_command = {
    "collabllm ref", "The training math as JSON in, JSON out: DPO, GAE, PPO, GRPO, AdamW and BLEU.",
    "NAME is one of dpo, ppo-rewards, gae, ppo-loss, grpo, grpo-loss, adamw, bleu. Reads one JSON object on stdin and writes "
    "one JSON object on stdout; the fields of every NAME, with examples, are in data_fmt/ref.md.", "NAME",
    { NULL },
};

static int cmd_ref(int argc, char **argv) {
    char *input = NULL;
    char *output = NULL;
    size_t len = 0;
    size_t cap = 0;
    cllm_err err;
    flags fl;
    int status;
    if (!parse(&fl, &ref_command, argc, argv, &status)) return status;
    for (;;) {                                   /* read all of stdin */
        size_t got;
        if (len + 4096 + 1 > cap) {
            char *grown = (char *)realloc(input, cap = 2 * cap + 4096 + 1);
            if (!grown) { free(input); fprintf(stderr, "error: out of memory\n"); return 1; }
            input = grown;
        }
        got = fread(input + len, 1, 4096, stdin);
        len += got;
        if (got == 0) break;
    }
    status = ref_json(fl.positional, input, len, &output, &err) == CLLM_OK ? 0 : fail(&err);
    free(input);
    if (status == 0) printf("%s\n", output);
    free(output);
    return status;
}

/* ---- the two sides of a simulation: user simulator and assistant ------------------------------ */
/* Each side is a model behind an OpenAI-compatible endpoint or a local model directory (the
   cllm_user_sim / cllm_assistant interfaces hide which). */

static const flag_group task_group = FLAG_GROUP("tasks", task_flags);
static const flag_group limit_group = FLAG_GROUP("how many", limit_flags);
static const flag_group user_group = FLAG_GROUP("user simulator (one of --user-model, --user-model-dir)", user_flags);
static const flag_group assistant_group =
    FLAG_GROUP("assistant (one of --assistant-model, --assistant-model-dir)", assistant_flags);
static const flag_group assistant_sampling_group = FLAG_GROUP("assistant's replies", assistant_sampling_flags);
static const flag_group side_seed_group = FLAG_GROUP("seed", side_seed_flags);
static const flag_group endpoint_group = FLAG_GROUP("API endpoints", endpoint_flags);
static const flag_group metric_group = FLAG_GROUP("metrics", metric_flags);
static const flag_group token_count_group = FLAG_GROUP("token counting", token_count_flags);
static const flag_group mr_group = FLAG_GROUP("multiturn-aware reward (MR)", mr_flags);
static const flag_group collabllm_group = FLAG_GROUP("CollabLLM's own settings", collabllm_flags);
static const flag_group collabllm_kind_group = FLAG_GROUP("CollabLLM's own settings", collabllm_kind_flags);
static const flag_group resume_group = FLAG_GROUP("resuming", resume_flags);

/* The flags that only an API model uses, refused when none is in use (they would be ignored). */
static int check_api_flags(const flags *fl) {
    static const char *shared[] = { "--base-url", "--api-key-env", "--concurrency", "--timeout-ms", "--retries",
                                    "--deadline-ms", "--backoff-max-ms", "--reject-incomplete", "--insecure" };
    static const char *user_only[] = { "--user-base-url", "--user-api-key-env", "--json-mode" };
    static const char *assistant_only[] = { "--assistant-base-url", "--assistant-api-key-env" };
    static const char *judge_only[] = { "--judge-base-url", "--judge-api-key-env" };
    int user_api = flags_declared(fl, "--user-model") && flag_given(fl, "--user-model");
    int assistant_api = flags_declared(fl, "--assistant-model") && flag_given(fl, "--assistant-model");
    int judge = flags_declared(fl, "--judge-model") && flag_given(fl, "--judge-model");
    size_t i;
    for (i = 0; i < sizeof user_only / sizeof user_only[0]; i++) {
        if (flags_declared(fl, user_only[i]) && flag_given(fl, user_only[i]) && !user_api)
            return !flags_fail(fl->cmd, "%s applies to an API user simulator (--user-model)", user_only[i]);
    }
    for (i = 0; i < sizeof assistant_only / sizeof assistant_only[0]; i++) {
        if (flags_declared(fl, assistant_only[i]) && flag_given(fl, assistant_only[i]) && !assistant_api)
            return !flags_fail(fl->cmd, "%s applies to an API assistant (--assistant-model)", assistant_only[i]);
    }
    for (i = 0; i < sizeof judge_only / sizeof judge_only[0]; i++) {
        if (flags_declared(fl, judge_only[i]) && flag_given(fl, judge_only[i]) && !judge)
            return !flags_fail(fl->cmd, "%s applies to the LLM judge (--judge-model)", judge_only[i]);
    }
    for (i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        if (flag_given(fl, shared[i]) && !user_api && !assistant_api && !judge)
            return !flags_fail(fl->cmd, "%s applies to API models (--user-model, --assistant-model, --judge-model); "
                               "this run uses none", shared[i]);
    }
    return 1;
}

/* One of --user-model / --user-model-dir (and of the assistant's pair, if the command has one). */
static int check_sides(const flags *fl) {
    if (!flags_one_of(fl, "--user-model", "--user-model-dir")) return 0;
    if (flags_declared(fl, "--assistant-model") && !flags_one_of(fl, "--assistant-model", "--assistant-model-dir")) {
        return 0;
    }
    return check_api_flags(fl);
}

/* The client's on_wait: a wait over 5 s before a retry gets one line on stderr. */
static void print_wait(void *ctx, const char *line) {
    fprintf(stderr, "%s: %s\n", (const char *)ctx, line);
}

/* A client for one side: --{side}-base-url / --{side}-api-key-env, else the shared flags. */
static int make_client(cllm_client *c, const flags *fl, const char *side, cllm_err *err) {
    cllm_client_config cfg;
    char name[64];
    memset(&cfg, 0, sizeof cfg);
    cfg.deadline_ms = (long)flag_number(fl, "--deadline-ms");              /* absent: the client's defaults */
    cfg.backoff_max_ms = (long)flag_number(fl, "--backoff-max-ms");
    cfg.reject_incomplete = flag_on(fl, "--reject-incomplete");
    cfg.on_wait = print_wait;
    cfg.on_wait_ctx = (void *)side;
    snprintf(name, sizeof name, "--%s-base-url", side);
    cfg.base_url = flag_given(fl, name) ? flag_text(fl, name) : flag_text(fl, "--base-url");
    snprintf(name, sizeof name, "--%s-api-key-env", side);
    cfg.api_key_env = flag_given(fl, name) ? flag_text(fl, name) : flag_text(fl, "--api-key-env");
    cfg.max_concurrency = (int)flag_number(fl, "--concurrency");
    cfg.timeout_ms = (long)flag_number(fl, "--timeout-ms");
    cfg.max_retries = (int)flag_number(fl, "--retries");
    if (flag_given(fl, "--retries") && cfg.max_retries == 0) cfg.max_retries = -1;   /* the config's 0 is the default */
    cfg.insecure = flag_on(fl, "--insecure");
    return cllm_client_init(c, &cfg, err) == CLLM_OK;
}

/* The two sides of a simulation: each an API model (--user-model / --assistant-model) or a
   collabllm.h model directory (--user-model-dir / --assistant-model-dir; the same directory for
   both sides is loaded once and shares its seed counter). */
typedef struct {
    cllm_client          client[2];       /* [0] user, [1] assistant (API sides only) */
    cllm_local_lm        lm[2];
    cllm_llm_sim         api_sim;
    cllm_local_user_sim  local_sim;
    cllm_api_assistant   api_asst;
    cllm_local_assistant local_asst;
    const cllm_user_sim  *user;
    const cllm_assistant *assistant;
    const char           *termination;
} sides;

static void free_sides(sides *sd) {
    int i;
    for (i = 0; i < 2; i++) { cllm_client_free(&sd->client[i]); cllm_local_lm_free(&sd->lm[i]); }
}

/* A re-ask budget flag as the library's config holds it: 0 there means the default (3), negative none. */
static int reasks_of(const flags *fl, const char *name) {
    if (!flag_text(fl, name)) return 0;
    return flag_number(fl, name) == 0 ? -1 : (int)flag_number(fl, name);
}

/* The user side: a local simulator model (--user-model-dir) or an API model. */
static int make_user_side(sides *sd, const flags *fl, const char *user_prompt, cllm_err *err) {
    const char *user_dir = flag_text(fl, "--user-model-dir");
    uint64_t seed = (uint64_t)flag_number(fl, "--seed");
    double user_temp = flag_number(fl, "--user-temperature");
    int user_max = (int)flag_number(fl, "--user-max-tokens");
    if (user_dir) {
        cllm_local_user_sim_config c;
        if (cllm_local_lm_load(&sd->lm[0], user_dir, err) != CLLM_OK) return 0;
        memset(&c, 0, sizeof c);
        c.gen.sampler.temperature = (float)user_temp;
        c.gen.sampler.seed = seed;
        c.gen.max_new_tokens = user_max;
        c.gen.weights = sample_weights_of(fl);
        c.termination = flag_text(fl, "--termination");
        c.prompt = user_prompt;
        c.max_parse_retries = reasks_of(fl, "--user-reasks");
        cllm_local_user_sim_init(&sd->local_sim, &sd->lm[0], &c);
        sd->user = &sd->local_sim.sim;
        sd->termination = sd->local_sim.cfg.termination;
    } else {
        cllm_llm_sim_config c;
        if (!make_client(&sd->client[0], fl, "user", err)) return 0;
        memset(&c, 0, sizeof c);
        c.params.model = flag_text(fl, "--user-model");
        c.params.temperature = user_temp;
        c.params.max_tokens = user_max;
        c.params.seed = (long long)seed;
        c.termination = flag_text(fl, "--termination");
        c.json_mode = flag_on(fl, "--json-mode");
        c.prompt = user_prompt;
        c.max_parse_retries = reasks_of(fl, "--user-reasks");
        cllm_llm_sim_init(&sd->api_sim, &sd->client[0], &c);
        sd->user = &sd->api_sim.sim;
        sd->termination = sd->api_sim.cfg.termination;
    }
    return 1;
}

/* The assistant side over a loaded local model (the policy of an online run, or
   --assistant-model-dir). */
static void local_assistant_side(sides *sd, cllm_local_lm *lm, const flags *fl) {
    cllm_local_assistant_config c;
    memset(&c, 0, sizeof c);
    c.gen.sampler.temperature = (float)flag_number(fl, "--assistant-temperature");
    c.gen.sampler.seed = (uint64_t)flag_number(fl, "--seed");
    c.gen.max_new_tokens = (int)flag_number(fl, "--assistant-max-tokens");
    c.gen.weights = sample_weights_of(fl);
    c.system_prompt = flag_text(fl, "--assistant-system");
    cllm_local_assistant_init(&sd->local_asst, lm, &c);
    sd->assistant = &sd->local_asst.assistant;
}

static int make_sides(sides *sd, const flags *fl, const char *user_prompt, cllm_err *err) {
    const char *user_dir = flag_text(fl, "--user-model-dir");
    const char *asst_dir = flag_text(fl, "--assistant-model-dir");
    cllm_local_lm *asst_lm = &sd->lm[1];
    memset(sd, 0, sizeof *sd);
    if (!make_user_side(sd, fl, user_prompt, err)) return 0;
    if (asst_dir) {
        if (user_dir && strcmp(user_dir, asst_dir) == 0) asst_lm = &sd->lm[0];
        else if (cllm_local_lm_load(asst_lm, asst_dir, err) != CLLM_OK) return 0;
        local_assistant_side(sd, asst_lm, fl);
    } else {
        cllm_api_assistant_config c;
        if (!make_client(&sd->client[1], fl, "assistant", err)) return 0;
        memset(&c, 0, sizeof c);
        c.params.model = flag_text(fl, "--assistant-model");
        c.params.temperature = flag_number(fl, "--assistant-temperature");
        c.params.max_tokens = (int)flag_number(fl, "--assistant-max-tokens");
        c.params.seed = (long long)flag_number(fl, "--seed");
        c.system_prompt = flag_text(fl, "--assistant-system");
        cllm_api_assistant_init(&sd->api_asst, &sd->client[1], &c);
        sd->assistant = &sd->api_asst.assistant;
    }
    return 1;
}

/* ---- simulate: conversations between a policy and a user simulator on a task file ---------- */

static const flag_spec simulate_own_flags[] = {
    { .name = "--tasks", .type = FLAG_IN_FILE, .metavar = "TASKS.jsonl", .need = FLAG_REQUIRED,
      .help = "the tasks (data_fmt/task.md)" },
    { .name = "--out", .type = FLAG_OUT_FILE, .metavar = "CONVS.jsonl", .need = FLAG_REQUIRED,
      .help = "one conversation per task (data_fmt/conversation.md)" },
    { .name = "--max-messages", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 100000, .def = "14",
      .help = "messages per conversation at most, both roles" },
    { .name = "--user-prompt", .type = FLAG_IN_FILE, .metavar = "TEMPLATE.txt", .def_note = "CollabLLM's",
      .help = "the simulator's prompt template: {{task_desc}} {{goal}} {{history}} {{termination}}" },
};
static const flag_group simulate_group = FLAG_GROUP("simulate", simulate_own_flags);
static const flag_command simulate_command = {
    "collabllm simulate", "Conversations between an assistant and a user simulator, one per task.",
    "Reads TASKS.jsonl (data_fmt/task.md); writes CONVS.jsonl (data_fmt/conversation.md). Endpoints: "
    "data_fmt/endpoints.md.", NULL,
    { &simulate_group, &limit_group, &task_group, &user_group, &assistant_group, &assistant_sampling_group,
      &side_seed_group, &endpoint_group, &overwrite_group, NULL },
};

/* One output line: the task's own fields, then messages, terminated, error and provenance. */
static cJSON *conversation_record(const cllm_task *t, const cllm_conv *conv, const cllm_sim_status *st,
                                  cJSON *provenance) {
    cJSON *rec = cJSON_Duplicate(t->json, 1);
    int incomplete = 0;
    int i;
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "messages");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "terminated");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "error");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "simulation");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "incomplete_messages");
    cJSON_AddItemToObject(rec, "messages", cllm_conv_to_json(conv));
    cJSON_AddBoolToObject(rec, "terminated", st->terminated);
    for (i = 0; i < conv->n; i++) incomplete += cllm_msg_incomplete(conv->meta ? &conv->meta[i] : NULL);
    if (incomplete) cJSON_AddNumberToObject(rec, "incomplete_messages", incomplete);
    if (st->code != CLLM_OK) cJSON_AddStringToObject(rec, "error", st->err.msg);
    cJSON_AddItemToObject(rec, "simulation", cJSON_Duplicate(provenance, 1));
    return rec;
}

/* The tasks to run: the first --limit of those read (all without the flag). */
static int limited(const flags *fl, int n_read) {
    int limit = (int)flag_number(fl, "--limit");
    return flag_given(fl, "--limit") && limit < n_read ? limit : n_read;
}

static int cmd_simulate(int argc, char **argv) {
    const char *out;
    const char *user_dir;
    const char *asst_dir;
    const char *task_desc;
    const char *prompt_file;
    int max_messages;
    int n = 0;
    int n_read = 0;
    int i;
    int rc;
    int failed = 0;
    int terminated = 0;
    cllm_task *tasks = NULL;
    char *user_prompt = NULL;
    sides sd;
    cllm_goal *goals = NULL;
    cllm_conv *convs = NULL;
    cllm_sim_status *status = NULL;
    cJSON *prov = NULL;
    char *line;
    size_t total = 0;
    size_t cap = 1 << 16;
    char *buf = NULL;
    cllm_err err;
    double messages = 0;
    flags fl;
    run_files rf;
    if (!parse(&fl, &simulate_command, argc, argv, &rc)) return rc;
    if (!check_sides(&fl)) return 2;
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    rc = 1;
    out = flag_text(&fl, "--out");
    user_dir = flag_text(&fl, "--user-model-dir");
    asst_dir = flag_text(&fl, "--assistant-model-dir");
    task_desc = flag_given(&fl, "--task-desc") ? task_desc_of(&fl) : "a task";
    prompt_file = flag_text(&fl, "--user-prompt");
    max_messages = (int)flag_number(&fl, "--max-messages");
    memset(&sd, 0, sizeof sd);
    if (prompt_file && cllm_read_file(prompt_file, &user_prompt, NULL, &err) != CLLM_OK) return fail(&err);
    if (cllm_tasks_read_jsonl(flag_text(&fl, "--tasks"), &tasks, &n_read, &err) != CLLM_OK) {
        cllm_free_buffer(user_prompt);
        return fail(&err);
    }
    n = limited(&fl, n_read);
    if (!make_sides(&sd, &fl, user_prompt, &err)) { fail(&err); goto done; }

    goals = (cllm_goal *)calloc((size_t)n, sizeof *goals);
    convs = (cllm_conv *)calloc((size_t)n, sizeof *convs);
    status = (cllm_sim_status *)calloc((size_t)n, sizeof *status);
    buf = (char *)malloc(cap);
    if (!goals || !convs || !status || !buf) { fprintf(stderr, "error: out of memory\n"); goto done; }
    for (i = 0; i < n; i++) {
        goals[i].task_desc = task_desc;
        goals[i].prompt = tasks[i].prompt;
        goals[i].reference = flag_on(&fl, "--show-reference") && tasks[i].completion[0] ? tasks[i].completion : NULL;
    }
    fprintf(stderr, "simulate: %d conversations, up to %d messages each\n", n, max_messages);
    cllm_simulate(sd.user, sd.assistant, goals, convs, n, max_messages, status, &err);

    prov = cJSON_CreateObject();
    cJSON_AddStringToObject(prov, "task_desc", task_desc);
    cJSON_AddStringToObject(prov, user_dir ? "user_model_dir" : "user_model",
                            user_dir ? user_dir : flag_text(&fl, "--user-model"));
    cJSON_AddStringToObject(prov, asst_dir ? "assistant_model_dir" : "assistant_model",
                            asst_dir ? asst_dir : flag_text(&fl, "--assistant-model"));
    cJSON_AddNumberToObject(prov, "max_messages", max_messages);
    cJSON_AddStringToObject(prov, "termination", sd.termination);
    for (i = 0; i < n; i++) {
        cJSON *rec = conversation_record(&tasks[i], &convs[i], &status[i], prov);
        size_t len;
        line = rec ? cJSON_PrintUnformatted(rec) : NULL;
        cJSON_Delete(rec);
        if (!line) { fprintf(stderr, "error: out of memory\n"); goto done; }
        len = strlen(line);
        if (len >= (size_t)CLLM_MAX_LINE_BYTES) {        /* a line no reader of ours would take: write no file */
            fprintf(stderr, "error: conversation %d would be a %zu-byte line, longer than the readers accept "
                    "(CLLM_MAX_LINE_BYTES)\n", i, len);
            cJSON_free(line);
            goto done;
        }
        while (total + len + 2 > cap) { char *nb = (char *)realloc(buf, cap * 2); if (!nb) { cJSON_free(line); goto done; } buf = nb; cap *= 2; }
        memcpy(buf + total, line, len);
        buf[total + len] = '\n';
        total += len + 1;
        cJSON_free(line);
        failed += status[i].code != CLLM_OK;
        terminated += status[i].terminated;
        messages += convs[i].n;
        if (status[i].code != CLLM_OK) fprintf(stderr, "  conversation %d: %s\n", i, status[i].err.msg);
    }
    if (cllm_write_file_atomic(out, buf, total, &err) != CLLM_OK) { fail(&err); goto done; }
    fprintf(stderr, "simulate: wrote %s: %d conversations, %d ended by the user, %d failed, %.1f messages on average\n",
            out, n, terminated, failed, n ? messages / n : 0.0);
    if (!user_dir) fprintf(stderr, "  user simulator tokens: %lld prompt + %lld completion\n", sd.client[0].usage.prompt_tokens, sd.client[0].usage.completion_tokens);
    else fprintf(stderr, "  local user simulator: %ld samples drawn (re-asks included)\n", sd.local_sim.local.generations);
    if (!asst_dir) fprintf(stderr, "  assistant tokens: %lld prompt + %lld completion\n", sd.client[1].usage.prompt_tokens, sd.client[1].usage.completion_tokens);
    rc = failed ? 1 : 0;
done:
    for (i = 0; convs && i < n; i++) cllm_conv_free(&convs[i]);
    free(goals); free(convs); free(status); free(buf);
    cJSON_Delete(prov);
    free_sides(&sd);
    cllm_tasks_free(tasks, n_read);
    cllm_free_buffer(user_prompt);
    return rc;
}

/* ---- the multiturn-aware reward, data generation, pairs, evaluation -------------------------- */
/* Shared by mr, generate-data, eval and the online trainers: the reward's metrics from
   --metrics NAME:WEIGHT,..., with an LLM judge (--judge-model, same endpoint flags with the
   "judge" side) for the metrics that need one, and the token counter (the local assistant's
   tokenizer, --tokenizer, or whitespace words). */

#define MAX_METRICS 16

typedef struct {
    cllm_metric       metrics[MAX_METRICS];
    int               n;
    cllm_client       judge_client;
    cllm_judge        judge;
    cllm_match_config match;
    cllm_code_config  code;
    cllm_tokenizer    tok;
    cllm_tiktoken     tiktoken;
    cllm_token_counter tokens;
} metric_set;

static void free_metric_set(metric_set *ms) {
    cllm_client_free(&ms->judge_client);
    cllm_tokenizer_free(&ms->tok);
    cllm_tiktoken_free(&ms->tiktoken);
}

/* Is path a tiktoken rank file (NAME.tiktoken)? */
static int is_tiktoken_path(const char *path) {
    size_t n = strlen(path);
    return n > 9 && strcmp(path + n - 9, ".tiktoken") == 0;
}

/* --token-counter SPEC: "words", a tiktoken rank file, or a tokenizer.json (or its directory). */
static int load_token_counter(metric_set *ms, const char *spec, cllm_err *err) {
    if (strcmp(spec, "words") == 0) {
        fprintf(stderr, "tokens: whitespace words\n");
        return 1;
    }
    if (is_tiktoken_path(spec)) {
        if (cllm_tiktoken_load(&ms->tiktoken, spec, NULL, err) != CLLM_OK) return 0;
        ms->tokens.count = cllm_tiktoken_count;
        ms->tokens.ctx = &ms->tiktoken;
        fprintf(stderr, "tokens: counted with tiktoken %s (%s)\n", ms->tiktoken.encoding, spec);
        return 1;
    }
    if (cllm_tokenizer_load(&ms->tok, spec, err) != CLLM_OK) return 0;
    ms->tokens.count = cllm_tokenizer_count;
    ms->tokens.ctx = &ms->tok;
    fprintf(stderr, "tokens: counted with the tokenizer %s\n", spec);
    return 1;
}

static int has_metric(const metric_set *ms, const char *name) {
    int i;
    for (i = 0; i < ms->n; i++) if (strcmp(ms->metrics[i].name, name) == 0) return 1;
    return 0;
}

/* --metrics NAME[:WEIGHT],... into ms (names and weights only); 0 after a message. Also refuses
   the flags of metrics that are not in the list (they would be ignored). */
static int parse_metrics(metric_set *ms, const flags *fl) {
    const char *spec = flag_text(fl, "--metrics");
    const char *p = spec;
    memset(ms, 0, sizeof *ms);
    while (*p) {
        char name[64];
        size_t len = strcspn(p, ",:");
        cllm_metric *m = &ms->metrics[ms->n];
        cllm_err err;
        if (ms->n == MAX_METRICS) return !flags_fail(fl->cmd, "--metrics: at most %d metrics", MAX_METRICS);
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), p);
        if (cllm_metric_builtin(name, m, &err) != CLLM_OK) return !flags_fail(fl->cmd, "--metrics: %s", err.msg);
        m->weight = 1.0;
        p += len;
        if (*p == ':') {
            char *end;
            const char *w = p + 1;
            m->weight = strtod(w, &end);
            if (end == w || (*end && *end != ',') || !isfinite(m->weight))
                return !flags_fail(fl->cmd, "--metrics: the weight of %s, '%.*s', is not a number", name,
                                   (int)strcspn(w, ","), w);
            p = end;
        }
        if (*p == ',' && !p[1]) return !flags_fail(fl->cmd, "--metrics: '%s' ends with a comma", spec);
        if (*p == ',') p++;
        ms->n++;
    }
    if (ms->n == 0) return !flags_fail(fl->cmd, "--metrics: no metric given");
    if ((flag_given(fl, "--answer-prefix") || flag_on(fl, "--numeric")) && !has_metric(ms, "exact_match"))
        return !flags_fail(fl->cmd, "--answer-prefix and --numeric apply to the exact_match metric, which --metrics "
                           "lacks");
    if ((flag_given(fl, "--python") || flag_given(fl, "--code-timeout") || flag_given(fl, "--code-memory-mb") ||
         flag_given(fl, "--pass-rule")) && !has_metric(ms, "pass_rate"))
        return !flags_fail(fl->cmd, "--python, --code-timeout, --code-memory-mb and --pass-rule apply to the "
                           "pass_rate metric, which --metrics lacks");
    if (flag_on(fl, "--no-extract") && !has_metric(ms, "bleu") && !has_metric(ms, "pass_rate"))
        return !flags_fail(fl->cmd, "--no-extract applies to the bleu and pass_rate metrics, which --metrics lacks");
    if (flags_declared(fl, "--given") && flag_on(fl, "--given")) return 1;     /* mr --given: values come scored */
    if ((has_metric(ms, "bleu") || has_metric(ms, "pass_rate")) && !flag_on(fl, "--no-extract") &&
        !flag_given(fl, "--judge-model"))
        return !flags_fail(fl->cmd, "--metrics %s: CollabLLM has an LLM extract the final document or code before "
                           "bleu and pass_rate score it: give --judge-model, or --no-extract to score the last "
                           "assistant message as it is", spec);
    if ((has_metric(ms, "interactivity") || has_metric(ms, "interactivity_v1") || has_metric(ms, "accuracy")) &&
        !flag_given(fl, "--judge-model"))
        return !flags_fail(fl->cmd, "--metrics %s needs an LLM judge: give --judge-model", spec);
    return 1;
}

/* The metrics' contexts: the judge, matching, code runs and the token counter (--token-counter,
   else the tokenizer of tokenizer_flag when one is given, else the local assistant's, else words). */
static int make_metric_set(metric_set *ms, const flags *fl, const sides *sd, const char *tokenizer_flag,
                           cllm_err *err) {
    const char *judge_model = flag_text(fl, "--judge-model");
    const char *counter = flag_text(fl, "--token-counter");
    const char *tok_dir = tokenizer_flag ? flag_text(fl, tokenizer_flag) : NULL;
    int need_judge = 0;
    int i;
    if (counter) {
        if (!load_token_counter(ms, counter, err)) return 0;
    } else if (tok_dir) {
        if (cllm_tokenizer_load(&ms->tok, tok_dir, err) != CLLM_OK) return 0;
        ms->tokens.count = cllm_tokenizer_count; ms->tokens.ctx = &ms->tok;
    } else if (sd->assistant == &sd->local_asst.assistant) {
        ms->tokens.count = cllm_tokenizer_count; ms->tokens.ctx = (void *)&sd->local_asst.local.lm->tok;
    }
    ms->match.answer_prefix = flag_text(fl, "--answer-prefix");
    ms->match.numeric = flag_on(fl, "--numeric");
    ms->code.python = flag_text(fl, "--python");
    ms->code.timeout_s = flag_number(fl, "--code-timeout");
    ms->code.memory_mb = (long)flag_number(fl, "--code-memory-mb");
    ms->code.pass_rule = flag_choice(fl, "--pass-rule") == 1 ? CLLM_PASS_FRACTION : CLLM_PASS_ALL;
    ms->code.no_extract = flag_on(fl, "--no-extract");
    for (i = 0; i < ms->n; i++) {
        cllm_metric *m = &ms->metrics[i];
        if (!strcmp(m->name, "interactivity") || !strcmp(m->name, "interactivity_v1") || !strcmp(m->name, "accuracy")) {
            m->ctx = &ms->judge;
            need_judge = 1;
        }
        else if (!strcmp(m->name, "exact_match")) m->ctx = &ms->match;
        else if (!strcmp(m->name, "pass_rate")) m->ctx = &ms->code;
        else if (!strcmp(m->name, "token_amount")) m->ctx = &ms->tokens;
        else if (!strcmp(m->name, "bleu") && flag_on(fl, "--no-extract")) m->fn = cllm_metric_bleu_last;
        else if (!strcmp(m->name, "bleu")) { m->ctx = &ms->judge; need_judge = 1; }
        if (!strcmp(m->name, "pass_rate") && !ms->code.no_extract) need_judge = 1;
    }
    if (need_judge) {
        cllm_judge_config jc;
        if (!make_client(&ms->judge_client, fl, "judge", err)) return 0;
        memset(&jc, 0, sizeof jc);
        jc.params.model = judge_model;
        jc.params.temperature = flag_number(fl, "--judge-temperature");
        jc.max_parse_retries = reasks_of(fl, "--judge-reasks");
        cllm_judge_init(&ms->judge, &ms->judge_client, &jc);
        ms->code.extractor = &ms->judge;
    }
    for (i = 0; i < ms->n; i++) fprintf(stderr, "%s%s:%g", i ? ", " : "metrics: ", ms->metrics[i].name, ms->metrics[i].weight);
    fprintf(stderr, "\n");
    return 1;
}

/* --preset, then --window, --samples, --lambda, --variant over it. */
static void mr_config_of(cllm_mr_config *mr, const flags *fl, const metric_set *ms) {
    static const cllm_mr_preset presets[] = { CLLM_MR_PRESET_MATH, CLLM_MR_PRESET_CODE, CLLM_MR_PRESET_DOCUMENT };
    cllm_mr_config_init(mr, presets[flag_choice(fl, "--preset")]);
    if (flag_given(fl, "--window")) mr->window = (int)flag_number(fl, "--window");
    if (flag_given(fl, "--samples")) mr->samples = (int)flag_number(fl, "--samples");
    if (flag_given(fl, "--lambda")) mr->lambda = flag_number(fl, "--lambda");
    mr->variant = flag_choice(fl, "--variant") == 1 ? CLLM_MR_WEIGHTED_SUM : CLLM_MR_PAPER;
    mr->metrics = ms->metrics;
    mr->n_metrics = ms->n;
    mr->tokens = ms->tokens;
    fprintf(stderr, "MR: w=%d S=%d %s variant, lambda %g\n", mr->window, mr->samples,
            mr->variant == CLLM_MR_PAPER ? "paper" : "weighted-sum", mr->lambda);
}

/* ---- generate-data ---------------------------------------------------------------------------- */

static const flag_spec generate_data_own_flags[] = {
    { .name = "--tasks", .type = FLAG_IN_FILE, .metavar = "TASKS.jsonl", .need = FLAG_REQUIRED,
      .help = "the tasks (data_fmt/task.md)" },
    { .name = "--out", .type = FLAG_RUN_FILE, .metavar = "RECORDS.jsonl", .need = FLAG_REQUIRED,
      .help = "MR-scored turn records, appended task by task (data_fmt/records.md; sidecar data_fmt/meta.md)" },
    { .name = "--candidates", .type = FLAG_INT, .metavar = "K", .min = 1, .max = 64, .def = "2",
      .help = "responses sampled and scored per turn (the paper's k)" },
    { .name = "--proactive-ratio", .type = FLAG_REAL, .metavar = "R", .min = 0, .max = 1, .def = "0.5",
      .help = "the first floor(K R) candidates of a turn come from a proactive instruction (CollabLLM's mixing), "
              "the rest from the plain chat" },
    { .name = "--max-turns", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 10000, .def = "7",
      .help = "user turns per conversation at most" },
    { .name = "--shard", .type = FLAG_TEXT, .metavar = "I/N", .def = "0/1",
      .help = "only the tasks with index % N == I (N processes, one shard each)" },
};
static const flag_group generate_data_group = FLAG_GROUP("data generation", generate_data_own_flags);
static const flag_command generate_data_command = {
    "collabllm generate-data",
    "CollabLLM data generation: at every turn K candidates, each scored by MR; the best continues the conversation.",
    "Reads TASKS.jsonl (data_fmt/task.md); writes RECORDS.jsonl (data_fmt/records.md) one task at a time, with "
    "RECORDS.jsonl.meta.json beside it (data_fmt/meta.md). An interrupted run continues with --resume.",
    NULL,
    { &generate_data_group, &limit_group, &task_group, &user_group, &assistant_group, &assistant_sampling_group,
      &side_seed_group, &endpoint_group, &metric_group, &token_count_group, &mr_group, &collabllm_group, &resume_group,
      NULL },
};

/* --shard I/N: 0 <= I < N. */
static int parse_shard(const flags *fl, int *shard, int *n_shards) {
    const char *text = flag_text(fl, "--shard");
    char *end;
    long i = strtol(text, &end, 10);
    long n = -1;
    if (end != text && *end == '/' && end[1] >= '0' && end[1] <= '9') n = strtol(end + 1, &end, 10);
    if (*end || n < 1 || n > 1000000 || i < 0 || i >= n)
        return !flags_fail(fl->cmd, "--shard: '%s' is not I/N with 0 <= I < N (e.g. 0/4)", text);
    *shard = (int)i;
    *n_shards = (int)n;
    return 1;
}

/* The candidate model again, asked with the proactive instruction (CollabLLM's proactive candidates). */
typedef union proactive_side {
    cllm_api_assistant   api;
    cllm_local_assistant local;
} proactive_side;

static const cllm_assistant *proactive_twin(sides *sd, proactive_side *twin) {
    if (sd->assistant == &sd->local_asst.assistant) {
        cllm_local_assistant_config c = sd->local_asst.cfg;
        c.proactive = 1;
        cllm_local_assistant_init(&twin->local, sd->local_asst.local.lm, &c);
        return &twin->local.assistant;
    } else {
        cllm_api_assistant_config c = sd->api_asst.cfg;
        c.proactive = 1;
        cllm_api_assistant_init(&twin->api, sd->api_asst.api.client, &c);
        return &twin->api.assistant;
    }
}

static int cmd_generate_data(int argc, char **argv) {
    proactive_side proactive;
    const char *out;
    cllm_task *tasks = NULL;
    int n = 0;
    int rc;
    sides sd;
    metric_set ms;
    cllm_datagen_config cfg;
    cllm_err err;
    flags fl;
    run_files rf;
    if (!parse(&fl, &generate_data_command, argc, argv, &rc)) return rc;
    memset(&cfg, 0, sizeof cfg);
    memset(&sd, 0, sizeof sd);
    if (!check_sides(&fl) || !parse_shard(&fl, &cfg.shard, &cfg.n_shards) || !parse_metrics(&ms, &fl)) return 2;
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    rc = 1;
    out = flag_text(&fl, "--out");
    err.msg[0] = 0;
    if (cllm_tasks_read_jsonl(flag_text(&fl, "--tasks"), &tasks, &n, &err) != CLLM_OK ||
        !make_sides(&sd, &fl, NULL, &err) || !make_metric_set(&ms, &fl, &sd, NULL, &err)) {
        fail(&err);
        goto done;
    }
    mr_config_of(&cfg.mr, &fl, &ms);
    cfg.n_candidates = (int)flag_number(&fl, "--candidates");
    cfg.proactive_ratio = flag_number(&fl, "--proactive-ratio");
    cfg.proactive = cfg.proactive_ratio > 0 ? proactive_twin(&sd, &proactive) : NULL;
    cfg.max_turns = (int)flag_number(&fl, "--max-turns");
    cfg.task_desc = task_desc_of(&fl);
    cfg.show_reference = flag_on(&fl, "--show-reference");
    cfg.verbose = 1;
    if (cllm_datagen_run(&cfg, sd.user, sd.assistant, sd.assistant, tasks, limited(&fl, n), out, &err) != CLLM_OK) {
        fail(&err);
        goto done;
    }
    fprintf(stderr, "generate-data: wrote %s\n", out);
    rc = 0;
done:
    run_files_end(&rf, rc != 0);
    free_metric_set(&ms);
    free_sides(&sd);
    cllm_tasks_free(tasks, n);
    return rc;
}

/* ---- build-pairs ------------------------------------------------------------------------------- */

static const flag_spec build_pairs_own_flags[] = {
    { .name = "--records", .type = FLAG_IN_FILE, .metavar = "RECORDS.jsonl", .need = FLAG_REQUIRED,
      .help = "records of generate-data, published flat rows, or v1's DPO rows (data_fmt/published.md)" },
    { .name = "--sft", .type = FLAG_OUT_FILE, .metavar = "SFT.jsonl",
      .help = "SFT rows: each conversation along its best responses (data_fmt/sft.md)" },
    { .name = "--dpo", .type = FLAG_OUT_FILE, .metavar = "PAIRS.jsonl",
      .help = "DPO pairs: best and worst candidate of each turn (data_fmt/dpo.md)" },
    { .name = "--min-gap", .type = FLAG_REAL, .metavar = "G", .min = 0, .max = FLAG_NO_MAX, .def_note = "0.02",
      .help = "a pair needs this MR gap between chosen and rejected (0: ties make pairs too)" },
    { .name = "--gap-preset", .type = FLAG_CHOICE, .choices = "v1-math|v1|v2|none", .metavar = "P",
      .def_note = "0.02", .help = "CollabLLM's gap: v1 math 0.05, v1 otherwise 0.02, v2 0.02, none 0" },
    { .name = "--rules", .type = FLAG_CHOICE, .choices = "v2|v1", .metavar = "R", .def = "v2",
      .help = "chosen/rejected of a turn: v2 first max / last min; v1 first max / first min, ties by reward_std" },
    { .name = "--format", .type = FLAG_CHOICE, .choices = "trl|collabllm-v2|collabllm-v1", .metavar = "F",
      .def = "trl", .help = "rows written: TRL's conversational form, or CollabLLM v2's or v1's rows" },
    { .name = "--system", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "none",
      .help = "a system message first in every row and prompt" },
    { .name = "--system-prompt", .type = FLAG_CHOICE, .choices = "none|collabllm", .metavar = "S", .def = "none",
      .help = "collabllm: CollabLLM's system prompt (in our words) first in every row and prompt" },
};
static const flag_group build_pairs_group =
    FLAG_GROUP("build-pairs (one or both of --sft, --dpo)", build_pairs_own_flags);
static const flag_command build_pairs_command = {
    "collabllm build-pairs", "Records -> SFT rows and DPO pairs, by CollabLLM's rules (v2's by default).",
    "Reads RECORDS.jsonl (data_fmt/records.md, data_fmt/published.md); writes SFT.jsonl (data_fmt/sft.md) and "
    "PAIRS.jsonl (data_fmt/dpo.md).", NULL,
    { &build_pairs_group, &collabllm_kind_group, &overwrite_group, NULL },
};

static int cmd_build_pairs(int argc, char **argv) {
    static const char *const presets[] = { "v1-math", "v1", "v2", "none" };
    static const char *const formats[] = { "trl", "collabllm-v2", "collabllm-v1" };
    cllm_pairs_config pc;
    int n_sft = 0;
    int n_pairs = 0;
    int rc;
    int i;
    cllm_err err;
    flags fl;
    run_files rf;
    if (!parse(&fl, &build_pairs_command, argc, argv, &rc)) return rc;
    if (!flag_given(&fl, "--sft") && !flag_given(&fl, "--dpo")) return flags_fail(fl.cmd, "give --sft and/or --dpo");
    if (flag_given(&fl, "--min-gap") && flag_given(&fl, "--gap-preset"))
        return flags_fail(fl.cmd, "give --min-gap or --gap-preset, not both");
    if (flag_given(&fl, "--system") && flag_given(&fl, "--system-prompt"))
        return flags_fail(fl.cmd, "give --system or --system-prompt, not both");
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    memset(&pc, 0, sizeof pc);
    if (flag_given(&fl, "--min-gap")) pc.min_gap = flag_number(&fl, "--min-gap");
    if (flag_given(&fl, "--min-gap") && pc.min_gap == 0) pc.min_gap = -1;   /* the API's "negative = 0" */
    for (i = 0; i < 4 && !flag_given(&fl, "--min-gap"); i++)
        if (flag_text(&fl, "--gap-preset") && !strcmp(flag_text(&fl, "--gap-preset"), presets[i]))
            pc.gap_preset = (cllm_gap_preset)(CLLM_GAP_V1_MATH + i);
    for (i = 0; i < 3; i++)
        if (!strcmp(flag_text(&fl, "--format"), formats[i])) pc.format = (cllm_pairs_format)i;
    pc.rules = strcmp(flag_text(&fl, "--rules"), "v1") ? CLLM_PAIRS_RULES_V2 : CLLM_PAIRS_RULES_V1;
    pc.system_prompt = flag_text(&fl, "--system");
    if (!flag_given(&fl, "--system") && !strcmp(flag_text(&fl, "--system-prompt"), "collabllm"))
        pc.system_prompt = cllm_system_prompt_collabllm();
    if (cllm_build_pairs(flag_text(&fl, "--records"), &pc, flag_text(&fl, "--sft"), flag_text(&fl, "--dpo"), &n_sft,
                         &n_pairs, &err) != CLLM_OK) return fail(&err);
    fprintf(stderr, "build-pairs: %d SFT rows, %d DPO pairs (min gap %g, %s rules)\n", n_sft, n_pairs,
            cllm_pairs_min_gap(&pc), flag_text(&fl, "--rules"));
    return 0;
}

/* ---- export-records ---------------------------------------------------------------------------- */

static const flag_spec export_records_own_flags[] = {
    { .name = "--records", .type = FLAG_IN_FILE, .metavar = "RECORDS.jsonl", .need = FLAG_REQUIRED,
      .help = "records of generate-data (data_fmt/records.md), or flat rows" },
    { .name = "--out", .type = FLAG_OUT_FILE, .metavar = "ROWS.jsonl", .need = FLAG_REQUIRED,
      .help = "the rows in the schema of collabllm/collabllm-multiturn-* (data_fmt/published.md)" },
};
static const flag_group export_records_group = FLAG_GROUP("export-records", export_records_own_flags);
static const flag_command export_records_command = {
    "collabllm export-records", "Records -> CollabLLM's published flat rows (metric names as CollabLLM's).",
    "Reads RECORDS.jsonl (data_fmt/records.md); writes ROWS.jsonl (data_fmt/published.md). Rows whose every MR "
    "sample failed (score null) are left out and counted.", NULL,
    { &export_records_group, &overwrite_group, NULL },
};

static int cmd_export_records(int argc, char **argv) {
    int n = 0;
    int skipped = 0;
    int rc;
    cllm_err err;
    flags fl;
    run_files rf;
    if (!parse(&fl, &export_records_command, argc, argv, &rc)) return rc;
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    if (cllm_records_to_collabllm(flag_text(&fl, "--records"), flag_text(&fl, "--out"), &n, &skipped, &err) != CLLM_OK)
        return fail(&err);
    fprintf(stderr, "export-records: %d rows written, %d without a score left out\n", n, skipped);
    return 0;
}

/* ---- eval: ITR ------------------------------------------------------------------------------------ */
/* The ITR of an interactivity metric's mean m, and the words that say which scale it is (NULL: not one).
   interactivity_v1 holds x/3 for the judge's x in 1..3; the paper's Table 1 maps each x to 2(x - 2.5), so the
   mean is 2(3m - 2.5) (the map is linear), times 100. v2's interactivity is in [0, 1]: 100 m. */
static const char *itr_scale(const char *metric) {
    if (!strcmp(metric, "interactivity_v1")) return "paper Table 1: 100 x mean of 2(x - 2.5), x the 1-3 judge score";
    if (!strcmp(metric, "interactivity")) return "CollabLLM v2: 100 x mean of the [0, 1] judge score";
    return NULL;
}

static double itr_of(const char *metric, double mean) {
    if (!strcmp(metric, "interactivity_v1")) return 100 * 2 * (3 * mean - 2.5);
    return 100 * mean;
}

/* ---- eval -------------------------------------------------------------------------------------- */

static const flag_spec eval_own_flags[] = {
    { .name = "--tasks", .type = FLAG_IN_FILE, .metavar = "TASKS.jsonl", .need = FLAG_REQUIRED,
      .help = "the test tasks (data_fmt/task.md)" },
    { .name = "--details", .type = FLAG_OUT_FILE, .metavar = "DETAILS.jsonl", .need = FLAG_REQUIRED,
      .help = "one line per task: conversation and scores (data_fmt/eval.md)" },
    { .name = "--summary", .type = FLAG_OUT_FILE, .metavar = "SUMMARY.json",
      .help = "the means (data_fmt/eval.md)" },
    { .name = "--max-turns", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 10000, .def = "7",
      .help = "user turns per conversation at most" },
};
static const flag_group eval_group = FLAG_GROUP("eval", eval_own_flags);
static const flag_command eval_command = {
    "collabllm eval", "One conversation per task with the simulator; metrics, tokens and ITR (the paper's section 4).",
    "Reads TASKS.jsonl (data_fmt/task.md); writes DETAILS.jsonl and SUMMARY.json (data_fmt/eval.md) and prints "
    "the table on stdout.", NULL,
    { &eval_group, &limit_group, &task_group, &user_group, &assistant_group, &assistant_sampling_group,
      &side_seed_group, &endpoint_group, &metric_group, &token_count_group, &collabllm_kind_group, &overwrite_group,
      NULL },
};

/* A mean in a table column, or "null" where nothing was scored (never a 0). */
static void print_mean(double v, int width, int precision) {
    if (v == v) printf(" %*.*f", width, precision, v);
    else printf(" %*s", width, "null");
}

static int cmd_eval(int argc, char **argv) {
    const char *summary_path;
    cllm_task *tasks = NULL;
    int n = 0;
    int rc;
    int m;
    sides sd;
    metric_set ms;
    cllm_eval_config cfg;
    cllm_eval_summary sum;
    cllm_err err;
    cJSON *js = NULL;
    char scored[32];
    flags fl;
    run_files rf;
    if (!parse(&fl, &eval_command, argc, argv, &rc)) return rc;
    memset(&sd, 0, sizeof sd);
    memset(&sum, 0, sizeof sum);
    if (!check_sides(&fl) || !parse_metrics(&ms, &fl)) return 2;
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    rc = 1;
    summary_path = flag_text(&fl, "--summary");
    err.msg[0] = 0;
    if (cllm_tasks_read_jsonl(flag_text(&fl, "--tasks"), &tasks, &n, &err) != CLLM_OK ||
        !make_sides(&sd, &fl, NULL, &err) || !make_metric_set(&ms, &fl, &sd, NULL, &err)) {
        fail(&err);
        goto done;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.max_turns = (int)flag_number(&fl, "--max-turns");
    cfg.task_desc = task_desc_of(&fl);
    cfg.show_reference = flag_on(&fl, "--show-reference");
    cfg.metrics = ms.metrics; cfg.n_metrics = ms.n;
    cfg.tokens = ms.tokens;
    rc = cllm_eval_run(&cfg, sd.user, sd.assistant, tasks, limited(&fl, n), flag_text(&fl, "--details"), &sum, &err);
    rc = rc == CLLM_OK ? 0 : 1;
    if (rc) fprintf(stderr, "warning: %s\n", err.msg);
    /* the table: the paper's columns (metrics, #Tokens(k), and ITR on its own scale, itr_of), each
       metric's mean over the conversations it scored and that count; "null" where it scored none */
    printf("%-18s", "");
    for (m = 0; m < ms.n; m++) printf(" %14s", ms.metrics[m].name);
    printf(" %10s %8s\n%-18s", "tokens(k)", "turns", "mean");
    for (m = 0; m < ms.n; m++) print_mean(sum.metric_means ? sum.metric_means[m] : NAN, 14, 4);
    print_mean(sum.tokens_k, 10, 4);
    print_mean(sum.turns, 8, 2);
    snprintf(scored, sizeof scored, "scored (of %d)", sum.n_tasks);
    printf("\n%-18s", scored);
    for (m = 0; m < ms.n; m++) printf(" %14d", sum.metric_counts ? sum.metric_counts[m] : 0);
    printf("\n");
    for (m = 0; m < ms.n; m++) {
        double itr = itr_of(ms.metrics[m].name, sum.metric_means ? sum.metric_means[m] : NAN);
        if (!itr_scale(ms.metrics[m].name)) continue;
        printf("ITR (%s):", itr_scale(ms.metrics[m].name));
        print_mean(itr, 1, 1);
        printf(" (%d of %d conversations scored)\n", sum.metric_counts ? sum.metric_counts[m] : 0, sum.n_tasks);
    }
    if (summary_path) {
        char *text;
        cJSON *mo, *so;
        js = cJSON_CreateObject();
        cJSON_AddNumberToObject(js, "tasks", sum.n_tasks);
        cJSON_AddNumberToObject(js, "failed", sum.n_failed);
        mo = cJSON_AddObjectToObject(js, "metrics");
        so = cJSON_AddObjectToObject(js, "scored");
        for (m = 0; m < ms.n; m++) {
            double v = sum.metric_means ? sum.metric_means[m] : NAN;
            cJSON_AddItemToObject(mo, ms.metrics[m].name, v == v ? cJSON_CreateNumber(v) : cJSON_CreateNull());
            cJSON_AddNumberToObject(so, ms.metrics[m].name, sum.metric_counts ? sum.metric_counts[m] : 0);
        }
        cJSON_AddItemToObject(js, "tokens_k",
                              sum.tokens_k == sum.tokens_k ? cJSON_CreateNumber(sum.tokens_k) : cJSON_CreateNull());
        cJSON_AddItemToObject(js, "turns", sum.turns == sum.turns ? cJSON_CreateNumber(sum.turns) : cJSON_CreateNull());
        for (m = 0; m < ms.n; m++) {
            double itr = itr_of(ms.metrics[m].name, sum.metric_means ? sum.metric_means[m] : NAN);
            cJSON *io;
            if (!itr_scale(ms.metrics[m].name) || cJSON_GetObjectItem(js, "itr")) continue;
            io = cJSON_AddObjectToObject(js, "itr");
            cJSON_AddItemToObject(io, "value", itr == itr ? cJSON_CreateNumber(itr) : cJSON_CreateNull());
            cJSON_AddStringToObject(io, "metric", ms.metrics[m].name);
            cJSON_AddStringToObject(io, "scale", itr_scale(ms.metrics[m].name));
        }
        text = cJSON_Print(js);
        if (cllm_write_file_atomic(summary_path, text, strlen(text), &err) != CLLM_OK) { fail(&err); rc = 1; }
        cJSON_free(text);
    }
done:
    cJSON_Delete(js);
    cllm_eval_summary_free(&sum);
    free_metric_set(&ms);
    free_sides(&sd);
    cllm_tasks_free(tasks, n);
    return rc;
}

/* ---- mr: scores given candidates ---------------------------------------------------------------- */
/* Each input line is a task (single_turn_* fields) plus "history" (messages ending with the
   user's) and "candidates" (strings); each output line lists the candidates with their MR, its
   standard deviation, every sample's rewards and sessions (data_fmt/mr.md). */

static const flag_spec mr_own_flags[] = {
    { .name = "--input", .type = FLAG_IN_FILE, .metavar = "ITEMS.jsonl", .need = FLAG_REQUIRED,
      .help = "a task, a conversation so far and the candidates per line (data_fmt/mr.md)" },
    { .name = "--given", .type = FLAG_SWITCH,
      .help = "the futures are given: each candidate brings its sessions and metric values, and only R* and MR are "
              "computed, with no simulator, judge or endpoint (data_fmt/mr.md)" },
};
static const flag_group mr_input_group = FLAG_GROUP("mr", mr_own_flags);
static const flag_command mr_command = {
    "collabllm mr", "The multiturn-aware reward of candidate responses: simulated futures, metrics, R*.",
    "Reads ITEMS.jsonl (data_fmt/mr.md); writes one JSON line per item on stdout (data_fmt/mr.md).", NULL,
    { &mr_input_group, &task_group, &user_group, &assistant_group, &assistant_sampling_group, &side_seed_group,
      &endpoint_group, &metric_group, &token_count_group, &mr_group, &collabllm_group, NULL },
};

#define MR_MAX_CANDIDATES 64

typedef struct {
    const cllm_mr_config *mr;
    const sides          *sd;
    const char           *task_desc;
    int                   show_reference;
    int                   failed;              /* 1 once a candidate could not be scored */
    int                   given;               /* --given: sessions and metric values come with the input */
} mr_ctx;

/* The string field of an item, or NULL. */
static const char *string_field(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* An item's fields checked, each error naming the line and the field. */
static int mr_item_check(const cJSON *line, const json_origin *at, cllm_conv *history) {
    const cJSON *cands = cJSON_GetObjectItemCaseSensitive(line, "candidates");
    const cJSON *it;
    char where[4200];
    cllm_err err;
    int i = 0;
    origin_text(at, where, sizeof where);
    if (!cJSON_IsObject(line)) { fprintf(stderr, "error: %s: expected an object (data_fmt/mr.md)\n", where); return 0; }
    if (!string_field(line, "single_turn_prompt")) {
        fprintf(stderr, "error: %s: \"single_turn_prompt\" must be a string (the user's goal)\n", where);
        return 0;
    }
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(line, "history"))) {
        fprintf(stderr, "error: %s: \"history\" must be a list of {\"role\", \"content\"} messages\n", where);
        return 0;
    }
    if (cllm_conv_from_json(history, cJSON_GetObjectItemCaseSensitive(line, "history"), &err) != CLLM_OK) {
        fprintf(stderr, "error: %s: \"history\": %s\n", where, err.msg);
        return 0;
    }
    if (history->n == 0 || strcmp(history->msgs[history->n - 1].role, "user") != 0) {
        fprintf(stderr, "error: %s: \"history\" must end with a user message\n", where);
        return 0;
    }
    if (!cJSON_IsArray(cands) || cJSON_GetArraySize(cands) < 1 || cJSON_GetArraySize(cands) > MR_MAX_CANDIDATES) {
        fprintf(stderr, "error: %s: \"candidates\" must be a list of 1 to %d strings\n", where, MR_MAX_CANDIDATES);
        return 0;
    }
    cJSON_ArrayForEach(it, cands) {
        if (!cJSON_IsString(it)) {
            fprintf(stderr, "error: %s: \"candidates\"[%d] must be a string\n", where, i);
            return 0;
        }
        i++;
    }
    return 1;
}

/* Prints one item's results (data_fmt/mr.md) and frees them; "tokens" (the penalty's count per future) with
   --given, where the user compares R* by hand. */
static void mr_print(mr_ctx *c, const char *const *completions, cllm_mr_result *res, int k) {
    cJSON *out = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(out, "candidates");
    int i, s, m;
    for (i = 0; i < k; i++) {
        cJSON *o = cJSON_CreateObject(), *rw = cJSON_AddObjectToObject(o, "rewards"), *ss = cJSON_AddArrayToObject(o, "sessions"), *a;
        cJSON_AddStringToObject(o, "completion", completions[i]);
        if (res[i].code == CLLM_OK) { cJSON_AddNumberToObject(o, "score", res[i].mr); cJSON_AddNumberToObject(o, "std", res[i].std); }
        else { cJSON_AddNullToObject(o, "score"); cJSON_AddStringToObject(o, "error", res[i].err.msg); c->failed = 1; }
        a = cJSON_AddArrayToObject(rw, "MR");
        for (s = 0; s < res[i].n_samples; s++) cJSON_AddItemToArray(a, res[i].samples[s].reward == res[i].samples[s].reward ? cJSON_CreateNumber(res[i].samples[s].reward) : cJSON_CreateNull());
        for (m = 0; m < c->mr->n_metrics; m++) {
            a = cJSON_AddArrayToObject(rw, c->mr->metrics[m].name);
            for (s = 0; s < res[i].n_samples; s++) cJSON_AddItemToArray(a, res[i].samples[s].metrics[m] == res[i].samples[s].metrics[m] ? cJSON_CreateNumber(res[i].samples[s].metrics[m]) : cJSON_CreateNull());
        }
        if (c->given) {
            a = cJSON_AddArrayToObject(o, "tokens");
            for (s = 0; s < res[i].n_samples; s++) cJSON_AddItemToArray(a, cJSON_CreateNumber(res[i].samples[s].tokens));
        }
        for (s = 0; s < res[i].n_samples; s++) cJSON_AddItemToArray(ss, cllm_conv_to_json(&res[i].samples[s].session));
        cJSON_AddItemToArray(arr, o);
        cllm_mr_result_free(&res[i]);
    }
    print_json_line(out);                     /* prints and frees it */
}

/* --given: one future of a candidate from its session and its "rewards" lists (index s); token_amount is counted
   when the lists lack it. 0 after a message naming the line, the candidate and the field. */
static int mr_given_sample(mr_ctx *c, const cJSON *cand, int i, int s, const cllm_conv *history, const char *where,
                           cllm_mr_sample *smp) {
    const cJSON *sess = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cand, "sessions"), s);
    const cJSON *rewards = cJSON_GetObjectItemCaseSensitive(cand, "rewards");
    const char *completion = string_field(cand, "completion");
    cllm_err err;
    int t, m;
    if (cllm_conv_from_json(&smp->session, sess, &err) != CLLM_OK) {
        fprintf(stderr, "error: %s: \"candidates\"[%d].\"sessions\"[%d]: %s\n", where, i, s, err.msg);
        return 0;
    }
    smp->n_history = history->n;
    for (t = 0; t <= history->n; t++) {
        const cllm_message *want = t < history->n ? &history->msgs[t] : NULL;
        const cllm_message *got = t < smp->session.n ? &smp->session.msgs[t] : NULL;
        if (got && (want ? !strcmp(got->role, want->role) && !strcmp(got->content, want->content)
                         : !strcmp(got->role, "assistant") && !strcmp(got->content, completion))) continue;
        fprintf(stderr, "error: %s: \"candidates\"[%d].\"sessions\"[%d][%d] must be %s (a session is the history, "
                "the candidate, then its future)\n", where, i, s, t, want ? "the history's message" : "the candidate");
        return 0;
    }
    smp->metrics = (double *)calloc((size_t)c->mr->n_metrics + 1, sizeof(double));
    if (!smp->metrics) { fprintf(stderr, "error: out of memory\n"); return 0; }
    for (m = 0; m < c->mr->n_metrics; m++) {
        const cllm_metric *met = &c->mr->metrics[m];
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(rewards, met->name);
        const cJSON *v = cJSON_GetArrayItem(list, s);
        cllm_session one;
        if (!list && !strcmp(met->name, "token_amount")) {
            one.goal = NULL; one.task = NULL; one.conv = &smp->session; one.n_history = smp->n_history;
            if (cllm_metric_token_amount(met->ctx, &one, 1, &smp->metrics[m], &err) != CLLM_OK) return fail(&err) == 0;
            continue;
        }
        if (cJSON_IsNumber(v)) { smp->metrics[m] = v->valuedouble; continue; }
        if (cJSON_IsNull(v)) {
            smp->metrics[m] = NAN;
            smp->code = CLLM_ERR_FORMAT;
            snprintf(smp->err.msg, sizeof smp->err.msg, "metric '%s' is null in future %d", met->name, s);
            smp->err.code = CLLM_ERR_FORMAT;
            continue;
        }
        fprintf(stderr, "error: %s: \"candidates\"[%d].\"rewards\".\"%s\"[%d] must be a number or null (one value per "
                "session)\n", where, i, met->name, s);
        return 0;
    }
    return 1;
}

/* --given: every candidate is {"completion", "sessions", "rewards"}; R* and MR only (cllm_mr_from_samples). */
static int mr_given_one(const cJSON *line, const json_origin *at, void *vctx) {
    mr_ctx *c = (mr_ctx *)vctx;
    static cllm_mr_result res[MR_MAX_CANDIDATES];
    const char *completions[MR_MAX_CANDIDATES];
    const cJSON *cands = cJSON_GetObjectItemCaseSensitive(line, "candidates");
    const cJSON *cand;
    cllm_conv history;
    cllm_err err;
    char where[4200];
    int k = 0, ok = 1, i, s;
    origin_text(at, where, sizeof where);
    memset(&history, 0, sizeof history);
    memset(res, 0, sizeof res);
    if (cllm_conv_from_json(&history, cJSON_GetObjectItemCaseSensitive(line, "history"), &err) != CLLM_OK) {
        fprintf(stderr, "error: %s: \"history\" must be a list of {\"role\", \"content\"} messages: %s\n", where, err.msg);
        return 1;
    }
    if (!cJSON_IsArray(cands) || cJSON_GetArraySize(cands) < 1 || cJSON_GetArraySize(cands) > MR_MAX_CANDIDATES) {
        fprintf(stderr, "error: %s: \"candidates\" must be a list of 1 to %d objects\n", where, MR_MAX_CANDIDATES);
        ok = 0;
    }
    if (!ok) cands = NULL;
    cJSON_ArrayForEach(cand, cands) {
        const cJSON *sessions = cJSON_GetObjectItemCaseSensitive(cand, "sessions");
        int S = cJSON_IsArray(sessions) ? cJSON_GetArraySize(sessions) : 0;
        if (!string_field(cand, "completion") || S < 1 || !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(cand, "rewards"))) {
            fprintf(stderr, "error: %s: \"candidates\"[%d] must be {\"completion\": string, \"sessions\": [one or more "
                    "conversations], \"rewards\": {metric: [one value per session]}} (data_fmt/mr.md)\n", where, k);
            ok = 0;
            break;
        }
        completions[k] = string_field(cand, "completion");
        res[k].n_samples = S;
        res[k].samples = (cllm_mr_sample *)calloc((size_t)S, sizeof(cllm_mr_sample));
        for (s = 0; ok && s < S; s++) ok = res[k].samples && mr_given_sample(c, cand, k, s, &history, where, &res[k].samples[s]);
        k++;
        if (!ok) break;
        cllm_mr_from_samples(c->mr, &res[k - 1]);
    }
    if (ok) mr_print(c, completions, res, k);
    for (i = 0; !ok && i < k; i++) cllm_mr_result_free(&res[i]);
    cllm_conv_free(&history);
    return !ok;
}

static int mr_one(const cJSON *line, const json_origin *at, void *vctx) {
    mr_ctx *c = (mr_ctx *)vctx;
    const cJSON *it;
    cllm_task task;
    cllm_goal goal;
    cllm_conv history;
    static cllm_mr_item items[MR_MAX_CANDIDATES];
    static cllm_mr_result res[MR_MAX_CANDIDATES];
    const char *completions[MR_MAX_CANDIDATES];
    cllm_err err;
    int k = 0;
    int i;
    memset(&task, 0, sizeof task);
    memset(&history, 0, sizeof history);
    if (!mr_item_check(line, at, &history)) { cllm_conv_free(&history); return 1; }
    task.json = (cJSON *)line;
    task.prompt = (char *)string_field(line, "single_turn_prompt");
    task.completion = (char *)string_field(line, "single_turn_completion");
    if (!task.completion) task.completion = (char *)"";
    goal.task_desc = c->task_desc ? c->task_desc : "a task";
    goal.prompt = task.prompt;
    goal.reference = c->show_reference && task.completion[0] ? task.completion : NULL;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(line, "candidates")) {
        items[k].goal = &goal; items[k].task = &task; items[k].history = &history; items[k].candidate = it->valuestring;
        k++;
    }
    cllm_mr_score(c->mr, c->sd->user, c->sd->assistant, items, k, res, &err);
    for (i = 0; i < k; i++) completions[i] = items[i].candidate;
    mr_print(c, completions, res, k);
    cllm_conv_free(&history);
    return 0;
}

static int cmd_mr(int argc, char **argv) {
    sides sd;
    metric_set ms;
    cllm_mr_config mr;
    mr_ctx ctx;
    cllm_err err;
    int rc;
    int i;
    flags fl;
    if (!parse(&fl, &mr_command, argc, argv, &rc)) return rc;
    memset(&sd, 0, sizeof sd);
    memset(&ctx, 0, sizeof ctx);
    ctx.given = flag_on(&fl, "--given");
    if (ctx.given && (flag_given(&fl, "--user-model") || flag_given(&fl, "--user-model-dir") ||
                      flag_given(&fl, "--assistant-model") || flag_given(&fl, "--assistant-model-dir") ||
                      flag_given(&fl, "--judge-model") || flag_given(&fl, "--window") || flag_given(&fl, "--samples")))
        return flags_fail(fl.cmd, "--given scores the futures that come with the input: no simulator, assistant, judge, "
                          "--window or --samples");
    if ((!ctx.given && !check_sides(&fl)) || !parse_metrics(&ms, &fl)) return 2;
    if ((rc = check_files(&fl)) != 0) return rc;
    rc = 1;
    err.msg[0] = 0;
    if (ctx.given && flag_given(&fl, "--token-counter") && !load_token_counter(&ms, flag_text(&fl, "--token-counter"), &err)) {
        fail(&err);
        goto done;
    }
    for (i = 0; ctx.given && i < ms.n; i++)
        if (!strcmp(ms.metrics[i].name, "token_amount")) ms.metrics[i].ctx = &ms.tokens;
    if (!ctx.given && (!make_sides(&sd, &fl, NULL, &err) || !make_metric_set(&ms, &fl, &sd, NULL, &err))) {
        fail(&err);
        goto done;
    }
    mr_config_of(&mr, &fl, &ms);
    ctx.mr = &mr;
    ctx.sd = &sd;
    ctx.task_desc = task_desc_of(&fl);
    ctx.show_reference = flag_on(&fl, "--show-reference");
    rc = each_json(flag_text(&fl, "--input"), ctx.given ? mr_given_one : mr_one, &ctx) || ctx.failed;
done:
    free_metric_set(&ms);
    free_sides(&sd);
    return rc;
}

/* ---- tokenize / detokenize: JSONL filters over a tokenizer.json -------------------------- */

/* The error for a cllm_read_line result below CLLM_LINE_EOF on stdin line `lineno`. */
static int read_line_failed(long len, long lineno) {
    if (len == CLLM_LINE_NOMEM) fprintf(stderr, "error: stdin line %ld: out of memory\n", lineno);
    else fprintf(stderr, "error: stdin line %ld: longer than the line limit (CLLM_MAX_LINE_BYTES)\n", lineno);
    return 1;
}

/* Prints {"text": s} for s[0..n), which may contain NUL bytes (cJSON strings cannot). */
static void print_text_line(const char *s, size_t n) {
    size_t i;
    fputs("{\"text\":\"", stdout);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { fputc('\\', stdout); fputc(c, stdout); }
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else fputc(c, stdout);
    }
    fputs("\"}\n", stdout);
}

static const flag_spec tokenizer_required_flags[] = {
    { .name = "--tokenizer", .type = FLAG_IN_PATH, .metavar = "PATH", .need = FLAG_REQUIRED,
      .help = "tokenizer.json, or a directory with tokenizer.json and tokenizer_config.json" },
};
/* tokenize and detokenize also read tiktoken rank files. */
static const flag_spec text_tokenizer_flags[] = {
    { .name = "--tokenizer", .type = FLAG_IN_PATH, .metavar = "PATH", .need = FLAG_REQUIRED,
      .help = "tokenizer.json, a directory with tokenizer.json and tokenizer_config.json, or a tiktoken file "
              "NAME.tiktoken (cl100k_base, r50k_base, p50k_base, p50k_edit; data_fmt/tiktoken.md)" },
};
static const flag_spec tokenize_own_flags[] = {
    { .name = "--add-special-tokens", .type = FLAG_SWITCH,
      .help = "add the post-processor's special tokens (BOS), as HF add_special_tokens=True (not for .tiktoken)" },
    { .name = "--offsets", .type = FLAG_SWITCH,
      .help = "also \"offsets\": the byte range [start, end) of every token" },
};
static const flag_spec detokenize_own_flags[] = {
    { .name = "--skip-special-tokens", .type = FLAG_SWITCH,
      .help = "leave special tokens out of the text" },
};
static const flag_group tokenizer_group = FLAG_GROUP("tokenizer", tokenizer_required_flags);
static const flag_group text_tokenizer_group = FLAG_GROUP("tokenizer", text_tokenizer_flags);
static const flag_group tokenize_group = FLAG_GROUP("tokenize", tokenize_own_flags);
static const flag_group detokenize_group = FLAG_GROUP("detokenize", detokenize_own_flags);
static const flag_command tokenize_command = {
    "collabllm tokenize", "Text to token ids: a JSONL filter.",
    "Reads {\"text\"} lines on stdin; writes {\"ids\"} (and \"offsets\") lines on stdout (data_fmt/chat.md).", NULL,
    { &text_tokenizer_group, &tokenize_group, NULL },
};
static const flag_command detokenize_command = {
    "collabllm detokenize", "Token ids to text: a JSONL filter.",
    "Reads {\"ids\"} lines on stdin; writes {\"text\"} lines on stdout (data_fmt/chat.md).", NULL,
    { &text_tokenizer_group, &detokenize_group, NULL },
};

/* The tokenizer of tokenize and detokenize: a tokenizer.json, or a tiktoken rank file. */
typedef struct text_tokenizer {
    cllm_tokenizer hf;
    cllm_tiktoken  tiktoken;   /* loaded (priv != NULL) for a .tiktoken path */
} text_tokenizer;

static cllm_result text_tokenizer_load(text_tokenizer *t, const char *path, cllm_err *err) {
    memset(t, 0, sizeof *t);
    if (is_tiktoken_path(path)) return cllm_tiktoken_load(&t->tiktoken, path, NULL, err);
    return cllm_tokenizer_load(&t->hf, path, err);
}

static cllm_result text_tokenizer_encode(const text_tokenizer *t, const char *text, int add_special, int **ids, int *n,
                                         int **offsets, cllm_err *err) {
    if (t->tiktoken.priv) return cllm_tiktoken_encode(&t->tiktoken, text, strlen(text), ids, n, offsets, err);
    return cllm_tokenizer_encode(&t->hf, text, strlen(text), add_special, ids, n, offsets, err);
}

static cllm_result text_tokenizer_decode(const text_tokenizer *t, const int *ids, int n, int skip_special, char **text,
                                         size_t *len, cllm_err *err) {
    if (t->tiktoken.priv) return cllm_tiktoken_decode(&t->tiktoken, ids, n, skip_special, text, len, err);
    return cllm_tokenizer_decode(&t->hf, ids, n, skip_special, text, len, err);
}

static void text_tokenizer_free(text_tokenizer *t) {
    cllm_tokenizer_free(&t->hf);
    cllm_tiktoken_free(&t->tiktoken);
}

/* stdin {"text": ...} lines -> stdout {"ids": [...]} (and "offsets": [start, end, ...] in bytes) */
static int cmd_tokenize(int argc, char **argv) {
    int special;
    int want_offsets;
    int rc;
    text_tokenizer tok;
    cllm_err err;
    char *line = NULL;
    size_t cap = 0;
    long len;
    long lineno = 0;
    flags fl;
    if (!parse(&fl, &tokenize_command, argc, argv, &rc)) return rc;
    if ((rc = check_files(&fl)) != 0) return rc;
    special = flag_on(&fl, "--add-special-tokens");
    want_offsets = flag_on(&fl, "--offsets");
    if (special && is_tiktoken_path(flag_text(&fl, "--tokenizer"))) {
        return flags_fail(fl.cmd, "--add-special-tokens: a tiktoken encoding adds no special tokens (it encodes "
                          "special-token text as ordinary text, as tiktoken's encode_ordinary)");
    }
    if (text_tokenizer_load(&tok, flag_text(&fl, "--tokenizer"), &err) != CLLM_OK) return fail(&err);
    while ((len = cllm_read_line(stdin, &line, &cap)) >= 0) {
        cJSON *in, *out;
        const cJSON *text;
        int *ids = NULL, *offs = NULL, n = 0;
        size_t bad;
        lineno++;
        if (len == 0) continue;
        if ((bad = utf8_valid_prefix((const unsigned char *)line, (size_t)len)) < (size_t)len) {
            fprintf(stderr, "error: stdin line %ld: not valid UTF-8 at byte %zu of the line\n", lineno, bad + 1);
            rc = 1;
            break;
        }
        in = cJSON_ParseWithLength(line, (size_t)len);
        text = cJSON_GetObjectItemCaseSensitive(in, "text");
        if (!cJSON_IsString(text)) { fprintf(stderr, "error: stdin line %ld: expected {\"text\": \"...\"}\n", lineno); cJSON_Delete(in); rc = 1; break; }
        if (text_tokenizer_encode(&tok, text->valuestring, special, &ids, &n, want_offsets ? &offs : NULL, &err) !=
            CLLM_OK) {
            fprintf(stderr, "error: stdin line %ld: \"text\": %s\n", lineno, err.msg); cJSON_Delete(in); rc = 1; break;
        }
        out = cJSON_CreateObject();
        cJSON_AddItemToObject(out, "ids", int_array(ids, n));
        if (want_offsets) cJSON_AddItemToObject(out, "offsets", int_array(offs, 2 * n));
        print_json_line(out);
        cllm_free_buffer(ids); cllm_free_buffer(offs);
        cJSON_Delete(in);
    }
    if (rc == 0 && len < CLLM_LINE_EOF) rc = read_line_failed(len, lineno + 1);
    free(line);
    text_tokenizer_free(&tok);
    return rc;
}

/* stdin {"ids": [...]} lines -> stdout {"text": ...} */
static int cmd_detokenize(int argc, char **argv) {
    int skip;
    int rc;
    text_tokenizer tok;
    cllm_err err;
    char *line = NULL;
    size_t cap = 0;
    long len;
    long lineno = 0;
    flags fl;
    if (!parse(&fl, &detokenize_command, argc, argv, &rc)) return rc;
    if ((rc = check_files(&fl)) != 0) return rc;
    skip = flag_on(&fl, "--skip-special-tokens");
    if (text_tokenizer_load(&tok, flag_text(&fl, "--tokenizer"), &err) != CLLM_OK) return fail(&err);
    while ((len = cllm_read_line(stdin, &line, &cap)) >= 0) {
        cJSON *in;
        const cJSON *arr, *it;
        int *ids, n = 0;
        char *text = NULL;
        size_t tlen = 0;
        lineno++;
        if (len == 0) continue;
        in = cJSON_ParseWithLength(line, (size_t)len);
        arr = cJSON_GetObjectItemCaseSensitive(in, "ids");
        if (!cJSON_IsArray(arr)) { fprintf(stderr, "error: stdin line %ld: expected {\"ids\": [...]}\n", lineno); cJSON_Delete(in); rc = 1; break; }
        ids = (int *)malloc(((size_t)cJSON_GetArraySize(arr) + 1) * sizeof(int));
        cJSON_ArrayForEach(it, arr) ids[n++] = cJSON_IsNumber(it) ? (int)it->valuedouble : -1;
        if (text_tokenizer_decode(&tok, ids, n, skip, &text, &tlen, &err) != CLLM_OK) {
            fprintf(stderr, "error: stdin line %ld: \"ids\": %s\n", lineno, err.msg);
            rc = 1;
        } else {
            print_text_line(text, tlen);
        }
        cllm_free_buffer(text); free(ids);
        cJSON_Delete(in);
        if (rc) break;
    }
    if (rc == 0 && len < CLLM_LINE_EOF) rc = read_line_failed(len, lineno + 1);
    free(line);
    text_tokenizer_free(&tok);
    return rc;
}

/* ---- render: a conversation through the chat template, with the trainable mask ------------ */

/* A conversation is an array of {"role", "content"}, or {"messages": [...]} which may also set
   "add_generation_prompt", "enable_thinking" and "date_string" (into *opts) for itself. Returns
   it as a conversation (after a system message when `system` is given); 0 after a message that
   names the line and the field. */
static int conversation_of(const cJSON *value, const json_origin *at, const char *system, cllm_render_opts *opts,
                           cllm_conv *conv) {
    const cJSON *list = cJSON_IsArray(value) ? value : cJSON_GetObjectItemCaseSensitive(value, "messages");
    char where[4200];
    cllm_conv given;
    cllm_err err;
    int i;
    origin_text(at, where, sizeof where);
    memset(conv, 0, sizeof *conv);
    if (!cJSON_IsArray(list)) {
        fprintf(stderr, "error: %s: expected a list of messages or {\"messages\": [...]} (data_fmt/chat.md)\n", where);
        return 0;
    }
    if (cJSON_IsObject(value)) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(value, "add_generation_prompt");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(value, "enable_thinking");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(value, "date_string");
        if (cJSON_IsBool(g)) opts->add_generation_prompt = cJSON_IsTrue(g);
        if (cJSON_IsBool(t)) opts->enable_thinking = cJSON_IsTrue(t);
        if (cJSON_IsString(d)) opts->date_string = d->valuestring;
    }
    if (cllm_conv_from_json(&given, list, &err) != CLLM_OK) {
        fprintf(stderr, "error: %s: %s\n", where, err.msg);
        return 0;
    }
    if (system && cllm_conv_push(conv, "system", system, &err) != CLLM_OK) {
        cllm_conv_free(&given);
        return !fail(&err);
    }
    for (i = 0; i < given.n; i++) {
        if (cllm_conv_push(conv, given.msgs[i].role, given.msgs[i].content, &err) != CLLM_OK) {
            cllm_conv_free(&given);
            cllm_conv_free(conv);
            return !fail(&err);
        }
    }
    cllm_conv_free(&given);
    return 1;
}

typedef struct { const cllm_tokenizer *tok; cllm_render_opts opts; } render_ctx;

static int render_one(const cJSON *value, const json_origin *at, void *ctx) {
    const render_ctx *rc = (const render_ctx *)ctx;
    cllm_render_opts opts = rc->opts;
    cllm_conv conv;
    int *ids = NULL;
    int n_ids = 0;
    int i;
    int ok;
    unsigned char *mask = NULL;
    char *text = NULL;
    char where[4200];
    cllm_err err;
    cJSON *out, *m;
    if (!conversation_of(value, at, NULL, &opts, &conv)) return 1;
    ok = cllm_chat_render(rc->tok, conv.msgs, conv.n, &opts, &text, &ids, &mask, &n_ids, &err) == CLLM_OK;
    cllm_conv_free(&conv);
    if (!ok) {
        origin_text(at, where, sizeof where);
        fprintf(stderr, "error: %s: %s\n", where, err.msg);
        return 1;
    }
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "text", text);
    cJSON_AddItemToObject(out, "ids", int_array(ids, n_ids));
    m = cJSON_AddArrayToObject(out, "mask");
    for (i = 0; i < n_ids; i++) cJSON_AddItemToArray(m, cJSON_CreateNumber(mask[i]));
    print_json_line(out);
    cllm_free_buffer(text); cllm_free_buffer(ids); cllm_free_buffer(mask);
    return 0;
}

static const flag_spec render_own_flags[] = {
    { .name = "--messages", .type = FLAG_IN_FILE, .metavar = "CONVS.json", .need = FLAG_REQUIRED,
      .help = "one conversation, or JSONL with one per line (data_fmt/chat.md)" },
    { .name = "--add-generation-prompt", .type = FLAG_SWITCH,
      .help = "end with the assistant's header, ready for its reply" },
    { .name = "--enable-thinking", .type = FLAG_SWITCH,
      .help = "Qwen3: keep the thinking block open" },
    { .name = "--date", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "the template's",
      .help = "Llama 3.1: the date in the system header, \"26 Jul 2024\"" },
};
static const flag_group render_group = FLAG_GROUP("render", render_own_flags);
static const flag_command render_command = {
    "collabllm render", "Conversations through the chat template: text, token ids and the trainable mask.",
    "Reads CONVS.json (data_fmt/chat.md); writes one {\"text\", \"ids\", \"mask\"} line per conversation on stdout "
    "(data_fmt/chat.md).", NULL,
    { &tokenizer_group, &render_group, NULL },
};

/* FILE.json holds one conversation, or is JSONL with one conversation per line. */
static int cmd_render(int argc, char **argv) {
    render_ctx ctx;
    cllm_tokenizer tok;
    cllm_err err;
    int rc;
    flags fl;
    if (!parse(&fl, &render_command, argc, argv, &rc)) return rc;
    if ((rc = check_files(&fl)) != 0) return rc;
    memset(&ctx, 0, sizeof ctx);
    ctx.opts.add_generation_prompt = flag_on(&fl, "--add-generation-prompt");
    ctx.opts.enable_thinking = flag_on(&fl, "--enable-thinking");
    ctx.opts.date_string = flag_text(&fl, "--date");
    if (cllm_tokenizer_load(&tok, flag_text(&fl, "--tokenizer"), &err) != CLLM_OK) return fail(&err);
    ctx.tok = &tok;
    rc = each_json(flag_text(&fl, "--messages"), render_one, &ctx);
    cllm_tokenizer_free(&tok);
    return rc;
}

/* ---- sft / dpo: fine-tuning on SFT rows or DPO pairs (data_fmt/train.md) ------------------ */

static const flag_group train_group = FLAG_GROUP("training", train_flags);
static const flag_group lora_group = FLAG_GROUP("LoRA", lora_flags);
static const flag_group train_log_group = FLAG_GROUP("metrics", train_log_flags);

/* The loop's settings and LoRA (on when any --lora-* flag is given); 0 after a message. */
static int train_config_of(const flags *fl, cllm_train_config *c, int *use_lora, cllm_lora_config *lc) {
    cllm_err err;
    memset(c, 0, sizeof *c);
    memset(lc, 0, sizeof *lc);
    c->lr = flag_number(fl, "--lr");
    c->epochs = (int)flag_number(fl, "--epochs");
    c->max_steps = (long)flag_number(fl, "--max-steps");
    c->batch_size = (int)flag_number(fl, "--batch-size");
    c->grad_accum = (int)flag_number(fl, "--grad-accum");
    c->warmup_steps = (long)flag_number(fl, "--warmup-steps");
    c->warmup_ratio = flag_number(fl, "--warmup-ratio");
    c->max_grad_norm = flag_number(fl, "--max-grad-norm");                  /* absent: the trainer's default */
    if (flag_given(fl, "--max-grad-norm") && c->max_grad_norm == 0) c->max_grad_norm = -1;   /* HF: 0 = off */
    c->adam.weight_decay = flag_number(fl, "--weight-decay");
    c->adam.beta1 = flag_number(fl, "--adam-beta1");
    c->adam.beta2 = flag_number(fl, "--adam-beta2");
    c->adam.eps = flag_number(fl, "--adam-epsilon");
    c->seed = (uint64_t)flag_number(fl, "--seed");
    c->save_every = (long)flag_number(fl, "--save-every");
    c->keep_last = (int)flag_number(fl, "--keep-last");
    c->log_every = (long)flag_number(fl, "--log-every");
    c->stop_after = (long)flag_number(fl, "--stop-after");
    c->lr_schedule = flag_text(fl, "--schedule");
    c->out_dir = flag_text(fl, "--out");
    c->model_dir = flag_text(fl, "--model");
    c->tokenizer_dir = flag_given(fl, "--tokenizer") ? flag_text(fl, "--tokenizer") : c->model_dir;
    c->resume = flag_on(fl, "--resume");
    c->quiet = flag_on(fl, "--quiet");
    if (flags_declared(fl, "--metrics-file")) c->metrics_path = flag_text(fl, "--metrics-file");
    else c->metrics_path = flag_text(fl, "--metrics");
    *use_lora = flag_given(fl, "--lora-r") || flag_given(fl, "--lora-alpha") || flag_given(fl, "--lora-dropout") ||
                flag_given(fl, "--lora-targets");
    lc->r = (int)flag_number(fl, "--lora-r");
    lc->alpha = flag_number(fl, "--lora-alpha");
    lc->seed = c->seed;
    lc->dropout = flag_number(fl, "--lora-dropout");
    if (flag_given(fl, "--lora-dropout") && lc->dropout == 0) lc->dropout = -1;     /* an explicit 0 means none */
    if (flag_given(fl, "--lora-targets") &&
        cllm_lora_parse_targets(flag_text(fl, "--lora-targets"), &lc->targets, &err) != CLLM_OK) {
        return !flags_fail(fl->cmd, "--lora-targets: %s", err.msg);
    }
    return 1;
}

static const flag_spec sft_own_flags[] = {
    { .name = "--model", .type = FLAG_IN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "the starting Hugging Face model directory" },
    { .name = "--data", .type = FLAG_IN_FILE, .metavar = "ROWS.jsonl", .need = FLAG_REQUIRED,
      .help = "{\"messages\"} rows (data_fmt/sft.md, data_fmt/train.md)" },
    { .name = "--out", .type = FLAG_RUN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "the run: checkpoints, metrics.jsonl, final/ (data_fmt/train.md; meta.json, data_fmt/meta.md)" },
};
static const flag_group sft_group = FLAG_GROUP("sft", sft_own_flags);
static const flag_command sft_command = {
    "collabllm sft", "Supervised fine-tuning on {\"messages\"} rows, of the whole model or LoRA adapters.",
    "Reads ROWS.jsonl (data_fmt/sft.md); writes the run into DIR (data_fmt/train.md) with DIR/meta.json "
    "(data_fmt/meta.md). An interrupted run continues with --resume.", NULL,
    { &sft_group, &train_group, &lora_group, &train_log_group, &resume_group, NULL },
};

static int cmd_sft(int argc, char **argv) {
    cllm_train_config cfg;
    cllm_lora_config lcfg;
    cllm_tokenizer tok;
    cllm_model m;
    cllm_lora lora;
    cllm_sft_data rows;
    cllm_err err;
    int use_lora = 0;
    int rc;
    flags fl;
    run_files rf;
    if (!parse(&fl, &sft_command, argc, argv, &rc)) return rc;
    if (!train_config_of(&fl, &cfg, &use_lora, &lcfg)) return 2;
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    rc = 1;
    memset(&tok, 0, sizeof tok); memset(&m, 0, sizeof m); memset(&lora, 0, sizeof lora); memset(&rows, 0, sizeof rows);
    if (cllm_tokenizer_load(&tok, cfg.tokenizer_dir, &err) != CLLM_OK ||
        cllm_sft_data_load(&rows, &tok, flag_text(&fl, "--data"), (int)flag_number(&fl, "--max-length"),
                           &err) != CLLM_OK ||
        cllm_model_load(&m, cfg.model_dir, &err) != CLLM_OK ||
        (use_lora && cllm_lora_init(&lora, &m, &lcfg, &err) != CLLM_OK)) fail(&err);
    else {
        if (rows.n_truncated) fprintf(stderr, "sft: %d of %d rows truncated to the max length\n", rows.n_truncated, rows.n);
        if (cllm_train_sft(&m, use_lora ? &lora : NULL, &rows, &cfg, &err) != CLLM_OK) fail(&err);
        else rc = 0;
    }
    run_files_end(&rf, rc != 0);
    cllm_lora_free(&lora);
    cllm_model_free(&m);
    cllm_sft_data_free(&rows);
    cllm_tokenizer_free(&tok);
    return rc;
}

static const flag_spec dpo_own_flags[] = {
    { .name = "--model", .type = FLAG_IN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "the starting Hugging Face model directory (the policy)" },
    { .name = "--data", .type = FLAG_IN_FILE, .metavar = "PAIRS.jsonl", .need = FLAG_REQUIRED,
      .help = "preference pairs (data_fmt/dpo.md, data_fmt/train.md)" },
    { .name = "--out", .type = FLAG_RUN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "the run: checkpoints, metrics.jsonl, final/ (data_fmt/train.md; meta.json, data_fmt/meta.md)" },
    { .name = "--ref", .type = FLAG_IN_DIR, .metavar = "DIR", .def_note = "a frozen copy of --model",
      .help = "the reference model" },
    { .name = "--precompute-ref", .type = FLAG_SWITCH,
      .help = "reference logps computed once, into DIR/pairs_ref.jsonl (TRL's precompute_ref_log_probs)" },
};
/* The DPO objective and its tokens (dpo, dpo-eval). */
static const flag_spec dpo_loss_flags[] = {
    { .name = "--loss", .type = FLAG_CHOICE, .choices = "sigmoid|robust|hinge|ipo", .metavar = "L", .def = "sigmoid",
      .help = "the DPO loss (sigmoid with --label-smoothing is cDPO)" },
    { .name = "--beta", .type = FLAG_REAL, .metavar = "B", .min = 0, .max = 1e9, .lower = FLAG_MIN_OPEN,
      .def_note = "0.1", .help = "DPO's beta" },
    { .name = "--label-smoothing", .type = FLAG_REAL, .metavar = "E", .min = 0, .max = 0.5, .def = "0",
      .help = "the probability that a label is flipped (cDPO, robust)" },
    { .name = "--reference-free", .type = FLAG_SWITCH,
      .help = "no reference model: log-ratios against 0" },
    { .name = "--completion-tokens", .type = FLAG_CHOICE, .choices = "turn|trl", .metavar = "M", .def = "turn",
      .help = "the scored tokens: the turn as the model emits it, or TRL >= 0.19's (+ newline, + EOS; data_fmt/train.md)" },
};
static const flag_group dpo_loss_group = FLAG_GROUP("the DPO objective", dpo_loss_flags);

/* The DPO objective's flags checked, into dpo and dcfg (max_length from --max-length); 0 after a message. */
static int dpo_settings_of(const flags *fl, cllm_dpo_config *dpo, cllm_dpo_data_config *dcfg) {
    if (!flags_exclusive(fl, "--ref", "--reference-free")) return 0;
    if (flag_given(fl, "--label-smoothing") && flag_choice(fl, "--loss") >= CLLM_DPO_HINGE)
        return !flags_fail(fl->cmd, "--label-smoothing applies to the sigmoid and robust losses");
    if (flag_choice(fl, "--loss") == CLLM_DPO_ROBUST && !(flag_number(fl, "--label-smoothing") < 0.5))
        return !flags_fail(fl->cmd, "--label-smoothing: the robust loss needs a value below 0.5");
    memset(dpo, 0, sizeof *dpo);
    dpo->beta = flag_number(fl, "--beta");
    dpo->label_smoothing = flag_number(fl, "--label-smoothing");
    dpo->reference_free = flag_on(fl, "--reference-free");
    dpo->loss_type = flag_choice(fl, "--loss");              /* the words are in cllm_dpo_loss_type's order */
    memset(dcfg, 0, sizeof *dcfg);
    dcfg->max_length = (int)flag_number(fl, "--max-length");
    dcfg->completion_tokens = flag_choice(fl, "--completion-tokens");   /* in cllm_completion_tokens' order */
    return 1;
}
static const flag_group dpo_group = FLAG_GROUP("dpo", dpo_own_flags);
static const flag_command dpo_command = {
    "collabllm dpo", "Offline DPO on preference pairs (sigmoid / cDPO, robust, hinge, IPO).",
    "Reads PAIRS.jsonl (data_fmt/dpo.md); writes the run into DIR (data_fmt/train.md) with DIR/meta.json "
    "(data_fmt/meta.md). An interrupted run continues with --resume.", NULL,
    { &dpo_group, &dpo_loss_group, &collabllm_group, &train_group, &lora_group, &train_log_group, &resume_group, NULL },
};

static int cmd_dpo(int argc, char **argv) {
    const char *data;
    const char *out;
    const char *ref_dir;
    int precompute;
    int use_lora = 0;
    int rc;
    char ref_path[4096];
    cllm_train_config cfg;
    cllm_lora_config lcfg;
    cllm_dpo_config dpo;
    cllm_dpo_data_config dcfg;
    cllm_tokenizer tok;
    cllm_model m, ref;
    cllm_lora lora;
    cllm_dpo_data pairs;
    cllm_err err;
    flags fl;
    run_files rf;
    if (!parse(&fl, &dpo_command, argc, argv, &rc)) return rc;
    if (!flags_exclusive(&fl, "--ref", "--precompute-ref") || !flags_exclusive(&fl, "--precompute-ref", "--reference-free") ||
        !dpo_settings_of(&fl, &dpo, &dcfg)) return 2;
    if (!train_config_of(&fl, &cfg, &use_lora, &lcfg)) return 2;
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    rc = 1;
    data = flag_text(&fl, "--data");
    out = flag_text(&fl, "--out");
    ref_dir = flag_text(&fl, "--ref");
    precompute = flag_on(&fl, "--precompute-ref");
    memset(&tok, 0, sizeof tok); memset(&m, 0, sizeof m); memset(&ref, 0, sizeof ref); memset(&lora, 0, sizeof lora); memset(&pairs, 0, sizeof pairs);
    snprintf(ref_path, sizeof ref_path, "%s/pairs_ref.jsonl", out);
    /* a resumed run reuses the reference logps computed from the initial model at the start */
    if (precompute && rf.resuming) {
        FILE *f = fopen(ref_path, "rb");
        if (f) { fclose(f); data = ref_path; precompute = 0; }
    }
    if (cllm_tokenizer_load(&tok, cfg.tokenizer_dir, &err) != CLLM_OK ||
        cllm_dpo_data_load(&pairs, &tok, data, &dcfg, &err) != CLLM_OK ||
        cllm_model_load(&m, cfg.model_dir, &err) != CLLM_OK) { fail(&err); goto done; }
    if (pairs.n_truncated) fprintf(stderr, "dpo: %d of %d pairs truncated to the max length\n", pairs.n_truncated, pairs.n);
    if (precompute) {             /* TRL's precompute_ref_log_probs: the policy before any update */
        if (cllm_dpo_precompute_ref(&m, &pairs, cfg.batch_size, data, ref_path, &err) != CLLM_OK) { fail(&err); goto done; }
        if (!cfg.quiet) fprintf(stderr, "dpo: reference logps of %d pairs written to %s\n", pairs.n, ref_path);
    }
    if (ref_dir && cllm_model_load(&ref, ref_dir, &err) != CLLM_OK) { fail(&err); goto done; }
    /* no reference given: a frozen copy of the initial policy (with LoRA: the base model itself) */
    if (!ref_dir && !pairs.has_ref && !use_lora && !dpo.reference_free) {
        if (cllm_model_load(&ref, cfg.model_dir, &err) != CLLM_OK) { fail(&err); goto done; }
    }
    if (use_lora && cllm_lora_init(&lora, &m, &lcfg, &err) != CLLM_OK) { fail(&err); goto done; }
    if (cllm_train_dpo(&m, use_lora ? &lora : NULL, ref.params_memory ? &ref : NULL, &pairs, &dpo, &cfg, &err) != CLLM_OK) fail(&err);
    else rc = 0;
done:
    run_files_end(&rf, rc != 0);
    cllm_lora_free(&lora);
    cllm_model_free(&m);
    cllm_model_free(&ref);
    cllm_dpo_data_free(&pairs);
    cllm_tokenizer_free(&tok);
    return rc;
}

/* ---- dpo-eval: TRL's DPO numbers per pair, no update ----------------------------------------------- */
/* The pass a user compares with a TRL DPOTrainer run (data_fmt/verify.md): per pair the summed completion log-probs
   of the policy and of the reference, the rewards, margin and loss, under TRL's names; the batch means TRL logs go
   to stdout. The DPO flags mean what they mean for `dpo`. */

static const flag_spec dpo_eval_own_flags[] = {
    { .name = "--model", .type = FLAG_IN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "the policy: a Hugging Face model directory" },
    { .name = "--data", .type = FLAG_IN_FILE, .metavar = "PAIRS.jsonl", .need = FLAG_REQUIRED,
      .help = "preference pairs (data_fmt/dpo.md); ref_chosen_logps / ref_rejected_logps are used when present" },
    { .name = "--out", .type = FLAG_OUT_FILE, .metavar = "OUT.jsonl", .need = FLAG_REQUIRED,
      .help = "one line per pair (data_fmt/verify.md)" },
    { .name = "--ref", .type = FLAG_IN_DIR, .metavar = "DIR", .def_note = "--model (an unchanged policy)",
      .help = "the reference model" },
    { .name = "--tokenizer", .type = FLAG_IN_PATH, .metavar = "PATH", .def_note = "--model",
      .help = "tokenizer.json and chat template (or their directory)" },
    { .name = "--max-length", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e8, .def = "1024",
      .help = "tokens per sequence after truncation (TRL's max_length)" },
    { .name = "--batch-size", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e6, .def = "8",
      .help = "sequences per forward pass (does not change the numbers)" },
    { .name = "--with-ids", .type = FLAG_SWITCH,
      .help = "also each sequence's chosen_input_ids / chosen_labels (HF labels, -100 = not scored), rejected_*" },
};
static const flag_group dpo_eval_group = FLAG_GROUP("dpo-eval", dpo_eval_own_flags);
static const flag_command dpo_eval_command = {
    "collabllm dpo-eval", "DPO evaluation, no update: per pair log-probs, reference log-probs, rewards, margin, loss.",
    "Reads PAIRS.jsonl (data_fmt/dpo.md); writes OUT.jsonl, one line per pair, and the batch means under TRL's "
    "eval_* names as one JSON line on stdout (data_fmt/verify.md).", NULL,
    { &dpo_eval_group, &dpo_loss_group, &overwrite_group, NULL },
};

/* A sequence as HF input_ids and (unshifted) labels: the id where it is scored, -100 elsewhere. */
static void add_ids_labels(cJSON *o, const char *side, const cllm_train_seq *s) {
    char key[32];
    cJSON *labels = cJSON_CreateArray();
    int t;
    snprintf(key, sizeof key, "%s_input_ids", side);
    cJSON_AddItemToObject(o, key, int_array(s->ids, s->n));
    for (t = 0; t < s->n; t++) cJSON_AddItemToArray(labels, cJSON_CreateNumber(s->target[t] ? s->ids[t] : -100));
    snprintf(key, sizeof key, "%s_labels", side);
    cJSON_AddItemToObject(o, key, labels);
}

static int cmd_dpo_eval(int argc, char **argv) {
    cllm_dpo_config dpo;
    cllm_dpo_data_config dcfg;
    cllm_dpo_out res;
    cllm_tokenizer tok;
    cllm_model m, ref;
    cllm_dpo_data pairs;
    cllm_err err;
    double *logps = NULL, *mem = NULL;
    double mean_pc = 0, mean_pr = 0;
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc, i, n;
    flags fl;
    run_files rf;
    if (!parse(&fl, &dpo_eval_command, argc, argv, &rc)) return rc;
    if (!dpo_settings_of(&fl, &dpo, &dcfg)) return 2;
    if ((rc = run_files_prepare(&rf, &fl)) != 0) return rc;
    rc = 1;
    memset(&tok, 0, sizeof tok);
    memset(&m, 0, sizeof m);
    memset(&ref, 0, sizeof ref);
    memset(&pairs, 0, sizeof pairs);
    if (cllm_tokenizer_load(&tok, flag_text(&fl, "--tokenizer") ? flag_text(&fl, "--tokenizer") : flag_text(&fl, "--model"), &err) != CLLM_OK ||
        cllm_dpo_data_load(&pairs, &tok, flag_text(&fl, "--data"), &dcfg, &err) != CLLM_OK ||
        cllm_model_load(&m, flag_text(&fl, "--model"), &err) != CLLM_OK ||
        (flag_given(&fl, "--ref") && cllm_model_load(&ref, flag_text(&fl, "--ref"), &err) != CLLM_OK)) {
        fail(&err);
        goto done;
    }
    n = pairs.n;
    if (pairs.n_truncated) fprintf(stderr, "dpo-eval: %d of %d pairs truncated to the max length\n", pairs.n_truncated, n);
    logps = (double *)calloc(4 * (size_t)n + 1, sizeof(double));
    mem = (double *)calloc(3 * (size_t)n + 1, sizeof(double));
    if (!logps || !mem) { fprintf(stderr, "error: out of memory\n"); goto done; }
    memset(&res, 0, sizeof res);
    res.losses = mem;
    res.chosen_rewards = mem + n;
    res.rejected_rewards = mem + 2 * n;
    if (cllm_dpo_eval(&m, ref.params_memory ? &ref : NULL, &pairs, &dpo, (int)flag_number(&fl, "--batch-size"), logps,
                      &res, &err) != CLLM_OK) { fail(&err); goto done; }
    for (i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        char *line;
        size_t k;
        cJSON_AddNumberToObject(o, "line", pairs.pairs[i].line);
        cJSON_AddNumberToObject(o, "chosen_logps", logps[i]);
        cJSON_AddNumberToObject(o, "rejected_logps", logps[n + i]);
        cJSON_AddNumberToObject(o, "ref_chosen_logps", logps[2 * n + i]);
        cJSON_AddNumberToObject(o, "ref_rejected_logps", logps[3 * n + i]);
        cJSON_AddNumberToObject(o, "chosen_rewards", res.chosen_rewards[i]);
        cJSON_AddNumberToObject(o, "rejected_rewards", res.rejected_rewards[i]);
        cJSON_AddNumberToObject(o, "margins", res.chosen_rewards[i] - res.rejected_rewards[i]);
        cJSON_AddNumberToObject(o, "losses", res.losses[i]);
        if (flag_on(&fl, "--with-ids")) {
            add_ids_labels(o, "chosen", &pairs.pairs[i].chosen);
            add_ids_labels(o, "rejected", &pairs.pairs[i].rejected);
        }
        line = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        k = line ? strlen(line) : 0;
        while (line && len + k + 2 > cap) {
            char *grown = (char *)realloc(text, cap ? 2 * cap : 4096);
            if (!grown) break;
            text = grown;
            cap = cap ? 2 * cap : 4096;
        }
        if (!line || len + k + 2 > cap) { cJSON_free(line); fprintf(stderr, "error: out of memory\n"); goto done; }
        memcpy(text + len, line, k);
        text[len + k] = '\n';
        len += k + 1;
        cJSON_free(line);
    }
    if (cllm_write_file_atomic(flag_text(&fl, "--out"), text, len, &err) != CLLM_OK) { fail(&err); goto done; }
    for (i = 0; i < n; i++) {
        mean_pc += logps[i] / n;
        mean_pr += logps[n + i] / n;
    }
    printf("{\"eval_loss\":%.17g,\"eval_rewards/chosen\":%.17g,\"eval_rewards/rejected\":%.17g,"
           "\"eval_rewards/accuracies\":%.17g,\"eval_rewards/margins\":%.17g,\"eval_logps/chosen\":%.17g,"
           "\"eval_logps/rejected\":%.17g,\"n_pairs\":%d}\n", res.loss, res.chosen_reward, res.rejected_reward,
           res.reward_accuracy, res.reward_margin, mean_pc, mean_pr, n);
    rc = 0;
done:
    run_files_end(&rf, rc != 0);
    free(logps);
    free(mem);
    free(text);
    cllm_model_free(&m);
    cllm_model_free(&ref);
    cllm_dpo_data_free(&pairs);
    cllm_tokenizer_free(&tok);
    return rc;
}

/* ---- online-dpo / ppo / grpo: the policy trained on its own responses, scored by MR ------------ */
/* The policy (--model) answers the prompts, MR scores the answers with the user side as the
   simulator and the policy itself as the future assistant, and the trainer updates the policy
   (data_fmt/train_online.md). Prompts come from --prompts (records or a prompts file,
   data_fmt/train_prompts.md) or --tasks (the simulator's openings, made once into OUT/prompts.jsonl). */

static const flag_spec online_flags[] = {
    { .name = "--model", .type = FLAG_IN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "the policy: a Hugging Face chat model directory" },
    { .name = "--out", .type = FLAG_RUN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "the run (data_fmt/train_online.md; meta.json, data_fmt/meta.md)" },
    { .name = "--prompts", .type = FLAG_IN_FILE, .metavar = "PROMPTS.jsonl",
      .help = "the prompts: records or a prompts file (data_fmt/train_prompts.md); or --tasks" },
    { .name = "--tasks", .type = FLAG_IN_FILE, .metavar = "TASKS.jsonl",
      .help = "tasks whose simulated openings are the prompts, cached in DIR/prompts.jsonl (data_fmt/task.md)" },
    { .name = "--ref", .type = FLAG_IN_DIR, .metavar = "DIR",
      .def_note = "a frozen copy of --model; with LoRA the base", .help = "the reference model" },
    { .name = "--metrics-file", .type = FLAG_RUN_LOG, .metavar = "PATH", .def_note = "DIR/metrics.jsonl",
      .help = "one JSON line per step (data_fmt/train_online.md); --metrics names the reward's metrics" },
    { .name = "--system", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "none",
      .help = "a system message before every prompt the policy answers" },
    { .name = "--logprob-tol", .type = FLAG_REAL, .metavar = "X", .min = 0, .max = FLAG_NO_MAX, .def_note = "1e-4",
      .help = "PPO, GRPO: sampled and recomputed log-probs must agree within X, 0 = no check" },
};
static const flag_spec online_sampling_flags[] = {
    { .name = "--temperature", .type = FLAG_REAL, .metavar = "T", .min = 0, .max = 1e6, .lower = FLAG_MIN_OPEN,
      .def_note = "TRL's: online-dpo 0.9, ppo 0.7, grpo 1", .help = "the policy's sampling temperature" },
    { .name = "--top-k", .type = FLAG_INT, .metavar = "K", .min = 0, .max = COUNT_MAX,
      .def_note = "online-dpo 50, else 0", .help = "sample among the K most likely tokens, 0 = off" },
    { .name = "--top-p", .type = FLAG_REAL, .metavar = "P", .min = 0, .max = 1, .lower = FLAG_MIN_OPEN, .def_note = "1",
      .help = "sample among the most likely tokens holding this much probability" },
    { .name = "--max-new-tokens", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e7,
      .def_note = "online-dpo 64, ppo 53, grpo 256", .help = "tokens per response at most" },
};
static const flag_group online_group = FLAG_GROUP("online training (one of --prompts, --tasks)", online_flags);
static const flag_group online_sampling_group = FLAG_GROUP("the policy's responses", online_sampling_flags);

#define ONLINE_GROUPS \
    &online_group, &online_sampling_group, &user_group, &assistant_sampling_group, &endpoint_group, &metric_group, \
    &mr_group, &collabllm_group, &token_count_group, &task_group, &train_group, &lora_group, &resume_group
#define ONLINE_ABOUT \
    "Reads PROMPTS.jsonl (data_fmt/train_prompts.md) or TASKS.jsonl (data_fmt/task.md); writes the run into DIR " \
    "(data_fmt/train_online.md) with DIR/meta.json (data_fmt/meta.md). The --assistant-* flags set the policy " \
    "as MR's future assistant. An interrupted run continues with --resume."

typedef struct {
    sides               sd;           /* sd.lm[1] is the policy */
    metric_set          ms;
    cllm_mr_config      mr;
    cllm_online_prompts prompts;
    cllm_task          *tasks;
    int                 n_tasks;
    cllm_model          ref;
    cllm_lora           lora;
    cllm_lora_config    lora_cfg;
    int                 use_lora;
    cllm_train_config   train;
    cllm_rollout_config rollout;
    flags               fl;
    run_files           rf;
} online_run;

static void online_free(online_run *o, int failed) {
    run_files_end(&o->rf, failed);
    cllm_lora_free(&o->lora);
    cllm_model_free(&o->ref);
    cllm_online_prompts_free(&o->prompts);
    cllm_tasks_free(o->tasks, o->n_tasks);
    free_metric_set(&o->ms);
    free_sides(&o->sd);
}

/* The command line of the three commands: flags, the method's own checks (check), then the
   checks of the outputs. Returns 1 to go on, else 0 with *status the exit status. */
static int online_parse(online_run *o, const flag_command *cmd, int (*check)(const flags *fl), int argc, char **argv,
                        int *status) {
    const flags *fl = &o->fl;
    memset(o, 0, sizeof *o);
    if (!parse(&o->fl, cmd, argc, argv, status)) return 0;
    *status = 2;
    if (!flags_one_of(fl, "--prompts", "--tasks") || !flags_one_of(fl, "--user-model", "--user-model-dir") ||
        !check_api_flags(fl) || !parse_metrics(&o->ms, fl) || !check(fl) ||
        !train_config_of(fl, &o->train, &o->use_lora, &o->lora_cfg)) return 0;
    if (!flag_given(fl, "--tasks") && (flag_given(fl, "--task-desc") || flag_on(fl, "--show-reference")))
        return !flags_fail(fl->cmd, "--task-desc and --show-reference apply to --tasks");
    *status = run_files_prepare(&o->rf, fl);
    return *status == 0;
}

/* Everything the three commands share: the policy, the simulator, the reward, the prompts, LoRA
   and (need_ref) the reference. Returns 0, or the exit status after a message. */
static int online_setup(online_run *o, int need_ref) {
    const flags *fl = &o->fl;
    const char *dir = flag_text(fl, "--model");
    const char *ref_dir = flag_text(fl, "--ref");
    cllm_prompts_config pc;
    cllm_err err;
    o->rollout.gen.sampler.temperature = (float)flag_number(fl, "--temperature");
    o->rollout.gen.sampler.top_k = (int)flag_number(fl, "--top-k");
    if (flag_given(fl, "--top-k") && o->rollout.gen.sampler.top_k == 0) o->rollout.gen.sampler.top_k = -1;  /* off */
    o->rollout.gen.sampler.top_p = (float)flag_number(fl, "--top-p");
    o->rollout.gen.max_new_tokens = (int)flag_number(fl, "--max-new-tokens");
    o->rollout.gen.weights = sample_weights_of(fl);
    o->rollout.system_prompt = flag_text(fl, "--system");
    o->rollout.logprob_tol = flag_number(fl, "--logprob-tol");
    if (flag_given(fl, "--logprob-tol") && o->rollout.logprob_tol == 0) o->rollout.logprob_tol = -1;      /* no check */
    if (cllm_local_lm_load(&o->sd.lm[1], dir, &err) != CLLM_OK || !make_user_side(&o->sd, fl, NULL, &err)) {
        return fail(&err);
    }
    local_assistant_side(&o->sd, &o->sd.lm[1], fl);
    if (!make_metric_set(&o->ms, fl, &o->sd, "--tokenizer", &err)) return fail(&err);
    mr_config_of(&o->mr, fl, &o->ms);
    o->rollout.mr = &o->mr; o->rollout.user = o->sd.user; o->rollout.future = o->sd.assistant;
    o->rollout.user_lm = flag_given(fl, "--user-model-dir") ? &o->sd.lm[0] : NULL;
    memset(&pc, 0, sizeof pc);
    pc.task_desc = task_desc_of(fl);
    pc.show_reference = flag_on(fl, "--show-reference");
    if (flag_given(fl, "--prompts") &&
        cllm_online_prompts_read(&o->prompts, flag_text(fl, "--prompts"), &pc, &err) != CLLM_OK) {
        return fail(&err);
    }
    if (flag_given(fl, "--tasks")) {
        char cache[4096];
        snprintf(cache, sizeof cache, "%s/prompts.jsonl", flag_text(fl, "--out"));    /* the openings, simulated once */
        if (cllm_tasks_read_jsonl(flag_text(fl, "--tasks"), &o->tasks, &o->n_tasks, &err) != CLLM_OK ||
            cllm_online_prompts_from_tasks(&o->prompts, o->tasks, o->n_tasks, o->sd.user, &pc, cache, &err) != CLLM_OK) return fail(&err);
    }
    /* the reference: --ref, else (when needed) a frozen copy of --model; with LoRA the base model */
    if (ref_dir || (need_ref && !o->use_lora))
        if (cllm_model_load(&o->ref, ref_dir ? ref_dir : dir, &err) != CLLM_OK) return fail(&err);
    if (o->use_lora && cllm_lora_init(&o->lora, &o->sd.lm[1].model, &o->lora_cfg, &err) != CLLM_OK) return fail(&err);
    if (!o->train.quiet) fprintf(stderr, "online: %d prompts\n", o->prompts.n);
    return 0;
}

static cllm_model *online_ref(online_run *o) { return o->ref.params_memory ? &o->ref : NULL; }

static const flag_spec online_dpo_own_flags[] = {
    { .name = "--beta", .type = FLAG_REAL, .metavar = "B", .min = 0, .max = 1e9, .lower = FLAG_MIN_OPEN,
      .def_note = "0.1", .help = "DPO's beta" },
    { .name = "--loss", .type = FLAG_CHOICE, .choices = "sigmoid|ipo", .metavar = "L", .def = "sigmoid",
      .help = "the DPO loss on summed log-probs" },
    { .name = "--rpo-alpha", .type = FLAG_REAL, .metavar = "A", .min = 0, .max = 1e9, .def_note = "off",
      .help = "RPO: + alpha x the chosen responses' NLL" },
};
static const flag_group online_dpo_group = FLAG_GROUP("online-dpo", online_dpo_own_flags);
static const flag_command online_dpo_command = {
    "collabllm online-dpo", "Online DPO: two responses per prompt, the higher MR chosen (TRL's OnlineDPOTrainer).",
    ONLINE_ABOUT, NULL, { &online_dpo_group, ONLINE_GROUPS, NULL },
};

static int online_dpo_check(const flags *fl) {
    if (flag_given(fl, "--logprob-tol")) return !flags_fail(fl->cmd, "--logprob-tol applies to ppo and grpo");
    return 1;
}

static int cmd_online_dpo(int argc, char **argv) {
    cllm_online_dpo_config c;
    online_run o;
    cllm_err err;
    int rc;
    if (!online_parse(&o, &online_dpo_command, online_dpo_check, argc, argv, &rc)) return rc;
    memset(&c, 0, sizeof c);
    if ((rc = online_setup(&o, 1)) == 0) {
        c.rollout = o.rollout;
        c.beta = flag_number(&o.fl, "--beta");
        c.max_length = (int)flag_number(&o.fl, "--max-length");
        c.rpo_alpha = flag_number(&o.fl, "--rpo-alpha");
        c.loss_type = flag_choice(&o.fl, "--loss") == 1 ? CLLM_DPO_IPO : CLLM_DPO_SIGMOID;
        rc = cllm_train_online_dpo(&o.sd.lm[1], o.use_lora ? &o.lora : NULL, online_ref(&o), &o.prompts, &c, &o.train, &err) == CLLM_OK ? 0 : fail(&err);
    }
    online_free(&o, rc != 0);
    return rc;
}

static const flag_spec ppo_own_flags[] = {
    { .name = "--ppo-epochs", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e6, .def_note = "4",
      .help = "passes over each rollout" },
    { .name = "--mini-batches", .type = FLAG_INT, .metavar = "N", .min = 1, .max = 1e6, .def_note = "1",
      .help = "AdamW updates per pass" },
    { .name = "--kl-coef", .type = FLAG_REAL, .metavar = "C", .min = 0, .max = 1e6, .def_note = "0.05",
      .help = "the KL penalty's coefficient (the start value with --kl-target)" },
    { .name = "--kl-estimator", .type = FLAG_CHOICE, .choices = "k1|k3", .metavar = "E", .def = "k1",
      .help = "the per-token KL estimator" },
    { .name = "--cliprange", .type = FLAG_REAL, .metavar = "X", .min = 0, .max = 1e6, .lower = FLAG_MIN_OPEN,
      .def_note = "0.2", .help = "the policy ratio's clip range" },
    { .name = "--cliprange-value", .type = FLAG_REAL, .metavar = "X", .min = 0, .max = 1e6, .lower = FLAG_MIN_OPEN,
      .def_note = "0.2", .help = "the value's clip range" },
    { .name = "--vf-coef", .type = FLAG_REAL, .metavar = "X", .min = 0, .max = 1e6, .lower = FLAG_MIN_OPEN,
      .def_note = "0.1", .help = "weight of the value loss" },
    { .name = "--gamma", .type = FLAG_REAL, .metavar = "G", .min = 0, .max = 1, .def = "1",
      .help = "GAE's discount" },
    { .name = "--lam", .type = FLAG_REAL, .metavar = "L", .min = 0, .max = 1, .def = "0.95",
      .help = "GAE's lambda" },
    { .name = "--whiten-rewards", .type = FLAG_SWITCH,
      .help = "whiten the per-token rewards first" },
    { .name = "--reward-placement", .type = FLAG_CHOICE, .choices = "after-eos|last-token", .metavar = "P",
      .def = "after-eos", .help = "where the score lands (TRL v0.19: the slot after EOS)" },
    { .name = "--pad-is-eos", .type = FLAG_SWITCH,
      .help = "the tokenizer's pad token is its EOS token (TRL's sequence end)" },
    { .name = "--biased-whiten", .type = FLAG_SWITCH,
      .help = "OpenRLHF's biased whitening instead of TRL's unbiased one" },
    { .name = "--missing-eos-penalty", .type = FLAG_REAL, .metavar = "P", .min = 0, .max = 1e6, .def_note = "none",
      .help = "subtracted from the score of a response without an end token" },
    { .name = "--score-scaling", .type = FLAG_CHOICE, .choices = "scale|norm", .metavar = "S", .def_note = "raw",
      .help = "legacy TRL: divide the score by its running std (scale), or also subtract the mean (norm)" },
    { .name = "--kl-target", .type = FLAG_REAL, .metavar = "T", .min = 0, .max = 1e9, .lower = FLAG_MIN_OPEN,
      .def_note = "off: a fixed coefficient", .help = "legacy TRL's adaptive KL controller: the KL aimed at" },
    { .name = "--kl-horizon", .type = FLAG_REAL, .metavar = "H", .min = 0, .max = 1e12, .lower = FLAG_MIN_OPEN,
      .def = "10000", .help = "the adaptive controller's horizon" },
};
static const flag_group ppo_group = FLAG_GROUP("ppo", ppo_own_flags);
static const flag_command ppo_command = {
    "collabllm ppo", "PPO on MR with a value head, GAE and clipped losses (TRL v0.19's PPOTrainer).",
    ONLINE_ABOUT, NULL, { &ppo_group, ONLINE_GROUPS, NULL },
};

static int ppo_check(const flags *fl) {
    if (flag_given(fl, "--max-length")) return !flags_fail(fl->cmd, "--max-length applies to sft, dpo and online-dpo");
    if (flag_given(fl, "--kl-horizon") && !flag_given(fl, "--kl-target"))
        return !flags_fail(fl->cmd, "--kl-horizon applies to the adaptive KL controller (--kl-target)");
    return 1;
}

static int cmd_ppo(int argc, char **argv) {
    cllm_ppo_config c;
    online_run o;
    cllm_err err;
    int rc;
    int scaling;
    if (!online_parse(&o, &ppo_command, ppo_check, argc, argv, &rc)) return rc;
    memset(&c, 0, sizeof c);
    c.ppo_epochs = (int)flag_number(&o.fl, "--ppo-epochs");
    c.mini_batches = (int)flag_number(&o.fl, "--mini-batches");
    c.kl_coef = flag_number(&o.fl, "--kl-coef");
    if (flag_given(&o.fl, "--kl-coef") && c.kl_coef == 0) c.kl_coef = -1;      /* the config's "negative = 0" */
    c.gamma = flag_number(&o.fl, "--gamma");
    if (c.gamma == 0) c.gamma = -1;
    c.lam = flag_number(&o.fl, "--lam");
    if (c.lam == 0) c.lam = -1;
    c.cliprange = flag_number(&o.fl, "--cliprange");
    c.cliprange_value = flag_number(&o.fl, "--cliprange-value");
    c.vf_coef = flag_number(&o.fl, "--vf-coef");
    c.missing_eos_penalty = flag_number(&o.fl, "--missing-eos-penalty");
    c.kl_estimator = flag_choice(&o.fl, "--kl-estimator") == 1 ? CLLM_KL_K3 : CLLM_KL_K1;
    c.reward_placement = flag_choice(&o.fl, "--reward-placement") == 1 ? CLLM_REWARD_LAST_TOKEN : CLLM_REWARD_AFTER_EOS;
    c.whiten_rewards = flag_on(&o.fl, "--whiten-rewards");
    c.pad_is_eos = flag_on(&o.fl, "--pad-is-eos");
    c.biased_whiten = flag_on(&o.fl, "--biased-whiten");
    scaling = flag_choice(&o.fl, "--score-scaling");
    c.score_scaling = scaling < 0 ? CLLM_SCORE_RAW : scaling == 1 ? CLLM_SCORE_NORM : CLLM_SCORE_SCALE;
    c.kl_target = flag_number(&o.fl, "--kl-target");
    c.kl_horizon = flag_number(&o.fl, "--kl-horizon");
    if ((rc = online_setup(&o, 1)) == 0) {
        c.rollout = o.rollout;
        rc = cllm_train_ppo(&o.sd.lm[1], o.use_lora ? &o.lora : NULL, online_ref(&o), NULL, &o.prompts, &c, &o.train, &err) == CLLM_OK ? 0 : fail(&err);
    }
    online_free(&o, rc != 0);
    return rc;
}

static const flag_spec grpo_own_flags[] = {
    { .name = "--num-generations", .type = FLAG_INT, .metavar = "G", .min = 2, .max = 65536, .def_note = "8",
      .help = "responses per prompt (a group)" },
    { .name = "--beta", .type = FLAG_REAL, .metavar = "B", .min = 0, .max = 1e6, .def = "0",
      .help = "weight of the k3 KL term (> 0 needs a reference)" },
    { .name = "--epsilon", .type = FLAG_REAL, .metavar = "E", .min = 0, .max = 1, .lower = FLAG_MIN_OPEN,
      .def_note = "0.2", .help = "the ratio's clip range below" },
    { .name = "--epsilon-high", .type = FLAG_REAL, .metavar = "E", .min = 0, .max = 1e6, .lower = FLAG_MIN_OPEN,
      .def_note = "--epsilon", .help = "the ratio's clip range above (DAPO's clip-higher)" },
    { .name = "--no-scale-rewards", .type = FLAG_SWITCH,
      .help = "do not divide the advantages by the group's std (Dr. GRPO)" },
    { .name = "--loss", .type = FLAG_CHOICE, .choices = "bnpo|grpo|dr_grpo", .metavar = "L", .def = "bnpo",
      .help = "how token losses are aggregated" },
};
static const flag_group grpo_group = FLAG_GROUP("grpo", grpo_own_flags);
static const flag_command grpo_command = {
    "collabllm grpo", "GRPO on MR: G responses per prompt, group-normalised advantages (TRL v0.19).",
    ONLINE_ABOUT, NULL, { &grpo_group, ONLINE_GROUPS, NULL },
};

static int grpo_check(const flags *fl) {
    if (flag_given(fl, "--max-length")) return !flags_fail(fl->cmd, "--max-length applies to sft, dpo and online-dpo");
    if (flag_given(fl, "--ref") && !(flag_number(fl, "--beta") > 0))
        return !flags_fail(fl->cmd, "--ref is used only with --beta > 0 (the KL term)");
    return 1;
}

static int cmd_grpo(int argc, char **argv) {
    cllm_grpo_config c;
    online_run o;
    cllm_err err;
    int rc;
    if (!online_parse(&o, &grpo_command, grpo_check, argc, argv, &rc)) return rc;
    memset(&c, 0, sizeof c);
    c.num_generations = (int)flag_number(&o.fl, "--num-generations");
    c.beta = flag_number(&o.fl, "--beta");
    c.epsilon = flag_number(&o.fl, "--epsilon");
    c.epsilon_high = flag_number(&o.fl, "--epsilon-high");
    c.scale_rewards = flag_on(&o.fl, "--no-scale-rewards") ? -1 : 1;
    c.loss_type = flag_choice(&o.fl, "--loss");              /* the words are in cllm_grpo_loss_type's order */
    if ((rc = online_setup(&o, c.beta > 0)) == 0) {
        c.rollout = o.rollout;
        rc = cllm_train_grpo(&o.sd.lm[1], o.use_lora ? &o.lora : NULL, online_ref(&o), &o.prompts, &c, &o.train, &err) == CLLM_OK ? 0 : fail(&err);
    }
    online_free(&o, rc != 0);
    return rc;
}

/* ---- generate: a local model's responses to conversations ------------------------------------ */
/* The same conversation files as render (one, or JSONL); one JSON line per response, in file
   order (data_fmt/generate.md). Conversation i is seeded with (--seed, i), so a rerun, or a
   run over the file's first k conversations, reproduces the same lines. */

typedef struct {
    cllm_local_lm        *lm;
    cllm_local_gen_config gen;
    const char           *system;
    int                   n_samples, index;
} generate_ctx;

static int generate_one(const cJSON *value, const json_origin *at, void *ctx) {
    generate_ctx *g = (generate_ctx *)ctx;
    cllm_local_gen_config gen = g->gen;
    cllm_local_output *out = (cllm_local_output *)calloc((size_t)g->n_samples, sizeof *out);
    cllm_conv conv;
    cllm_err err;
    char where[4200];
    int s;
    int rc = 1;
    if (!out) { fprintf(stderr, "error: out of memory\n"); return 1; }
    if (conversation_of(value, at, g->system, &gen.render, &conv)) {
        g->lm->calls = (uint64_t)g->index;
        if (cllm_local_chat(g->lm, &conv, 1, g->n_samples, &gen, out, &err) != CLLM_OK) {
            origin_text(at, where, sizeof where);
            fprintf(stderr, "error: %s: %s\n", where, err.msg);
        } else {
            for (s = 0; s < g->n_samples; s++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddNumberToObject(o, "conversation", g->index);
                cJSON_AddNumberToObject(o, "sample", s);
                cJSON_AddStringToObject(o, "text", out[s].text);
                add_generated(o, out[s].ids, out[s].logprobs, out[s].n, out[s].finish);
                cJSON_AddNumberToObject(o, "prompt_tokens", out[s].n_prompt);
                print_json_line(o);
            }
            rc = 0;
        }
        cllm_conv_free(&conv);
    }
    g->index++;
    cllm_local_outputs_free(out, g->n_samples);
    free(out);
    return rc;
}

static const flag_spec generate_own_flags[] = {
    { .name = "--model", .type = FLAG_IN_DIR, .metavar = "DIR", .need = FLAG_REQUIRED,
      .help = "a Hugging Face chat model directory (weights, tokenizer, chat template)" },
    { .name = "--messages", .type = FLAG_IN_FILE, .metavar = "CONVS.json", .need = FLAG_REQUIRED,
      .help = "one conversation, or JSONL with one per line (data_fmt/chat.md)" },
    { .name = "--system", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "none",
      .help = "a system message before every conversation" },
    { .name = "--stop", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "none",
      .help = "a stop string: the response ends where it begins" },
    { .name = "--keep-special-tokens", .type = FLAG_SWITCH,
      .help = "special tokens stay in the text" },
    { .name = "--enable-thinking", .type = FLAG_SWITCH,
      .help = "Qwen3: let the model think first" },
    { .name = "--date", .type = FLAG_TEXT, .metavar = "TEXT", .def_note = "the template's",
      .help = "Llama 3.1: the date in the system header" },
};
static const flag_group generate_group = FLAG_GROUP("generate", generate_own_flags);
static const flag_command generate_command = {
    "collabllm generate", "A local model's responses to conversations.",
    "Reads CONVS.json (data_fmt/chat.md); writes one JSON line per response on stdout: text, ids, logprobs, finish "
    "(data_fmt/generate.md).", NULL,
    { &generate_group, &sampling_group, NULL },
};

static int cmd_generate(int argc, char **argv) {
    const char *stop;
    generate_ctx ctx;
    cllm_local_lm lm;
    cllm_err err;
    int rc;
    flags fl;
    if (!parse(&fl, &generate_command, argc, argv, &rc)) return rc;
    if ((rc = check_files(&fl)) != 0) return rc;
    memset(&ctx, 0, sizeof ctx);
    stop = flag_text(&fl, "--stop");
    ctx.gen.sampler = sampler_of(&fl);
    ctx.gen.max_new_tokens = (int)flag_number(&fl, "--max-new-tokens");
    ctx.gen.weights = sample_weights_of(&fl);
    ctx.n_samples = (int)flag_number(&fl, "--n");
    ctx.system = flag_text(&fl, "--system");
    if (stop) { ctx.gen.stop = &stop; ctx.gen.n_stop = 1; }
    ctx.gen.keep_special = flag_on(&fl, "--keep-special-tokens");
    ctx.gen.render.enable_thinking = flag_on(&fl, "--enable-thinking");
    ctx.gen.render.date_string = flag_text(&fl, "--date");
    if (cllm_local_lm_load(&lm, flag_text(&fl, "--model"), &err) != CLLM_OK) return fail(&err);
    ctx.lm = &lm;
    rc = each_json(flag_text(&fl, "--messages"), generate_one, &ctx);
    cllm_local_lm_free(&lm);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

typedef struct { const flag_command *cmd; int (*fn)(int, char **); } command;
static const command commands[] = {
    { &dump_command, cmd_dump },
    { &generate_ids_command, cmd_generate_ids },
    { &ref_command, cmd_ref },
    { &simulate_command, cmd_simulate },
    { &tokenize_command, cmd_tokenize },
    { &detokenize_command, cmd_detokenize },
    { &render_command, cmd_render },
    { &mr_command, cmd_mr },
    { &generate_data_command, cmd_generate_data },
    { &build_pairs_command, cmd_build_pairs },
    { &export_records_command, cmd_export_records },
    { &eval_command, cmd_eval },
    { &generate_command, cmd_generate },
    { &sft_command, cmd_sft },
    { &dpo_command, cmd_dpo },
    { &dpo_eval_command, cmd_dpo_eval },
    { &online_dpo_command, cmd_online_dpo },
    { &ppo_command, cmd_ppo },
    { &grpo_command, cmd_grpo },
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void list_commands(FILE *out) {
    size_t i;
    fprintf(out, "usage: collabllm COMMAND [flags]        collabllm COMMAND --help\n\ncommands:\n");
    for (i = 0; i < N_COMMANDS; i++) {
        fprintf(out, "  %-14s ", commands[i].cmd->program + strlen("collabllm "));
        flags__wrap(out, commands[i].cmd->summary, 17, 17);
    }
    fprintf(out, "\nFile formats: data_fmt/. Exit status: 0 done; 1 failed while running; 2 bad command line.\n");
}

int main(int argc, char **argv) {
    size_t i;
    if (argc < 2) {
        list_commands(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        list_commands(stdout);
        return 0;
    }
    for (i = 0; i < N_COMMANDS; i++) {
        const char *name = commands[i].cmd->program + strlen("collabllm ");
        if (strcmp(argv[1], name) == 0) return commands[i].fn(argc - 2, argv + 2);
    }
    fprintf(stderr, "collabllm: unknown command '%s'\n\n", argv[1]);
    list_commands(stderr);
    return 2;
}
