/* flags.h - the command-line flags of the examples (collabllm, cllm_demo, bench, chat), from tables.

   Demonstrates nothing of collabllm.h itself: it is the small parser the example programs share,
   so that every one of them treats its command line the same strict way. A program declares each
   flag once, in a table of flag_spec (name, type, accepted range or words, default, help line),
   and groups the tables into a flag_command. Then:
     - flags_parse() checks argv against the tables. An unknown flag, a flag without its value, a
       flag given twice, a number out of range or with trailing junk, or a word not in the list is
       an error that names the flag and what it accepts (exit status 2, nothing done).
     - -h and --help print the usage, generated from the same tables with the defaults, on stdout.
     - flag_text(), flag_number(), flag_on(), flag_given(), flag_choice() read the values; an
       absent flag reads as its declared default, or as the value a preset gave it (flag_preset(),
       e.g. collabllm's --collabllm v1): a flag on the command line always wins over a preset.
   Paths are declared with what the command does with them (reads a file, writes a run directory,
   ...); run_files.h uses that to check the outputs against the inputs before anything is written.

   Include it after the C headers; define _XOPEN_SOURCE 700 before any include (run_files.h uses
   POSIX realpath and lstat). Everything here is static; the functions a program calls are static
   inline, so a program that does not call one of them gets no warning. */
#ifndef FLAGS_H
#define FLAGS_H

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a flag holds. Path types also say what the command does with the path (run_files.h). */
typedef enum flag_type {
    FLAG_SWITCH,     /* present or absent: --grads                                                */
    FLAG_TEXT,       /* any non-empty text: --task-desc TEXT                                      */
    FLAG_INT,        /* a base-10 integer in the range                                            */
    FLAG_REAL,       /* a finite number in the range                                              */
    FLAG_CHOICE,     /* one of the words in .choices ("sigmoid|robust|hinge|ipo")                 */
    FLAG_IN_FILE,    /* a file the command reads (never written)                                  */
    FLAG_IN_DIR,     /* a directory the command reads (a model)                                   */
    FLAG_IN_PATH,    /* a file or a directory the command reads (a tokenizer)                     */
    FLAG_OUT_FILE,   /* a file the command writes whole; an existing one needs --overwrite        */
    FLAG_OUT_DIR,    /* a directory the command writes files into; a non-empty one needs --overwrite */
    FLAG_RUN_FILE,   /* a resumable output file: continued with --resume (sidecar FILE.meta.json) */
    FLAG_RUN_DIR,    /* a resumable run directory: continued with --resume (DIR/meta.json)        */
    FLAG_RUN_LOG     /* a file a resumable run appends to (--metrics): continued with its run     */
} flag_type;

typedef enum flag_need {
    FLAG_OPTIONAL = 0,
    FLAG_REQUIRED,   /* the command refuses to run without it                                     */
    FLAG_REPEATABLE  /* may be given several times (bench --preset); read with flag_nth()         */
} flag_need;

/* Whether a value changes what a run computes. Settings go into the fingerprint that a resumed
   run must match (run_files.h); runtime flags (timeouts, logging, where to stop) may change. */
typedef enum flag_effect {
    FLAG_SETTING = 0,
    FLAG_RUNTIME
} flag_effect;

typedef enum flag_bound {
    FLAG_MIN_CLOSED = 0, /* [min, ...                                                              */
    FLAG_MIN_OPEN        /* (min, ...: min itself is refused (a temperature that must be > 0)      */
} flag_bound;

#define FLAG_NO_MAX 1e300    /* .max of a number without an upper bound */

typedef struct flag_spec {
    const char *name;        /* "--candidates"                                                     */
    flag_type   type;
    const char *metavar;     /* what the value is, in the usage: "K", "TASKS.jsonl", "DIR"         */
    double      min, max;    /* FLAG_INT, FLAG_REAL: the accepted range (inclusive unless .lower)  */
    const char *choices;     /* FLAG_CHOICE: the accepted words, "a|b|c"                          */
    const char *def;         /* the value when the flag is absent, as it would be typed; NULL: unset */
    const char *def_note;    /* usage text for a default that is not a fixed value ("= --model")   */
    const char *help;        /* one line for the usage; a file names its data_fmt/ page            */
    flag_need   need;
    flag_effect effect;
    flag_bound  lower;
} flag_spec;

/* Flags that belong together, printed under one heading. */
typedef struct flag_group {
    const char      *title;
    const flag_spec *specs;
    int              n;
} flag_group;
#define FLAG_GROUP(title, specs) { title, specs, (int)(sizeof specs / sizeof specs[0]) }

#define FLAGS_MAX_GROUPS 16
typedef struct flag_command {
    const char       *program;     /* "collabllm generate-data", as messages and the usage name it */
    const char       *summary;     /* one line: what the command does                             */
    const char       *about;       /* what it reads and writes (data_fmt/ pages), or NULL          */
    const char       *positional;  /* the name of a positional argument ("NAME", "DIR"), or NULL   */
    const flag_group *groups[FLAGS_MAX_GROUPS];   /* NULL-terminated                               */
} flag_command;

#define FLAGS_MAX        192   /* flags one command may declare                                    */
#define FLAGS_MAX_REPEAT 16    /* values of one FLAG_REPEATABLE flag                               */

typedef struct flag_value {
    const flag_spec *spec;
    int              given;                      /* times given on the command line              */
    const char      *texts[FLAGS_MAX_REPEAT];    /* as given                                      */
    double           number;                     /* FLAG_INT, FLAG_REAL: the parsed value          */
    const char      *preset;                     /* set by flag_preset() when not given, or NULL   */
} flag_value;

typedef struct flags {
    const flag_command *cmd;
    flag_value          values[FLAGS_MAX];
    int                 n;
    const char         *positional;              /* the positional argument, if any               */
} flags;

typedef enum flags_status {
    FLAGS_OK,        /* parsed: run the command                                                   */
    FLAGS_HELP,      /* the usage was printed on stdout: exit 0                                   */
    FLAGS_ERROR      /* a message was printed on stderr: exit 2                                   */
} flags_status;

/* ---- messages ----------------------------------------------------------------------------- */

/* "PROGRAM: message" on stderr, then (hint) a pointer to the usage. */
static void flags__say(const flag_command *cmd, int hint, const char *fmt, va_list ap) {
    fprintf(stderr, "%s: ", cmd->program);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    if (hint) fprintf(stderr, "(`%s --help` lists the flags)\n", cmd->program);
}

/* A bad command line: the message and a pointer to the usage; returns 2, its exit status. */
static inline int flags_fail(const flag_command *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    flags__say(cmd, 1, fmt, ap);
    va_end(ap);
    return 2;
}

/* The same for a refusal whose message already says what to do (no pointer to the usage). */
static inline int flags_refuse(const flag_command *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    flags__say(cmd, 0, fmt, ap);
    va_end(ap);
    return 2;
}

/* A number as a person would write it: integers in full, others in %g. */
static const char *flags__num(double x, char *buf, size_t size) {
    if (x == floor(x) && fabs(x) < 1e17) snprintf(buf, size, "%.0f", x);
    else snprintf(buf, size, "%g", x);
    return buf;
}

/* A space the usage does not break a line at (flags__wrap prints it as a space). */
#define FLAGS_GLUE "\x1f"

/* What a number flag accepts: "an integer in [1, 64]", "a number in (0, 1]", "a number >= 0".
   glue: the space inside the range (FLAGS_GLUE in the usage, so that it stays on one line). */
static const char *flags__range(const flag_spec *s, const char *glue, char *buf, size_t size) {
    char lo[40];
    char hi[40];
    const char *kind = s->type == FLAG_INT ? "an integer" : "a number";
    flags__num(s->min, lo, sizeof lo);
    flags__num(s->max, hi, sizeof hi);
    if (s->max >= FLAG_NO_MAX) {
        snprintf(buf, size, "%s %s%s%s", kind, s->lower == FLAG_MIN_OPEN ? ">" : ">=", glue, lo);
    } else {
        snprintf(buf, size, "%s in %s%s,%s%s]", kind, s->lower == FLAG_MIN_OPEN ? "(" : "[", lo, glue, hi);
    }
    return buf;
}

/* The words of a choice flag as a sentence lists them: "sigmoid, robust, hinge or ipo". */
static const char *flags__choices(const flag_spec *s, char *buf, size_t size) {
    const char *p = s->choices;
    size_t k = 0;
    buf[0] = 0;
    while (p && k < size) {
        const char *bar = strchr(p, '|');
        int word = bar ? (int)(bar - p) : (int)strlen(p);
        const char *sep = p == s->choices ? "" : bar ? ", " : " or ";
        k += (size_t)snprintf(buf + k, size - k, "%s%.*s", sep, word, p);
        p = bar ? bar + 1 : NULL;
    }
    return buf;
}

/* ---- the tables ---------------------------------------------------------------------------- */

static const flag_spec *flags__find(const flag_command *cmd, const char *name, size_t len) {
    int g;
    int i;
    for (g = 0; g < FLAGS_MAX_GROUPS && cmd->groups[g]; g++) {
        for (i = 0; i < cmd->groups[g]->n; i++) {
            const flag_spec *s = &cmd->groups[g]->specs[i];
            if (strlen(s->name) == len && strncmp(s->name, name, len) == 0) return s;
        }
    }
    return NULL;
}

/* Edit distance of a and b, for "did you mean". */
static int flags__distance(const char *a, const char *b) {
    int row[64];
    size_t la = strlen(a);
    size_t lb = strlen(b);
    size_t i;
    size_t j;
    if (la >= 63 || lb >= 63) return 99;
    for (j = 0; j <= lb; j++) row[j] = (int)j;
    for (i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The declared flag nearest to an unknown name (a typo or a prefix), or NULL. */
static const char *flags__suggest(const flag_command *cmd, const char *name) {
    const char *best = NULL;
    int best_distance = (int)strlen(name) / 4 + 1;            /* a typo or two, not another word */
    int g;
    int i;
    for (g = 0; g < FLAGS_MAX_GROUPS && cmd->groups[g]; g++) {
        for (i = 0; i < cmd->groups[g]->n; i++) {
            const char *candidate = cmd->groups[g]->specs[i].name;
            int d = flags__distance(name, candidate);
            if (strncmp(candidate, name, strlen(name)) == 0 && strlen(name) > 4) d = 0;     /* a prefix */
            if (d < best_distance) {
                best_distance = d;
                best = candidate;
            }
        }
    }
    return best;
}

/* ---- values ------------------------------------------------------------------------------- */

/* Checks one value against its spec; 1 if accepted (numbers parsed into *number). */
static int flags__check_value(const flag_command *cmd, const flag_spec *s, const char *text, double *number) {
    char range[160];
    char *end = NULL;
    if (!*text) {
        flags_fail(cmd, "%s: the value is empty; expected %s", s->name, s->metavar);
        return 0;
    }
    if (s->type == FLAG_INT || s->type == FLAG_REAL) {
        int bad = 0;
        errno = 0;
        if (s->type == FLAG_INT) *number = (double)strtoll(text, &end, 10);
        else *number = strtod(text, &end);
        bad |= end == text || *end != 0 || errno == ERANGE;
        bad |= text[0] == ' ' || text[0] == '\t' || !isfinite(*number);
        bad |= *number < s->min || (s->lower == FLAG_MIN_OPEN && *number == s->min);
        bad |= s->max < FLAG_NO_MAX && *number > s->max;
        if (bad) {
            flags_fail(cmd, "%s: '%s' is not %s", s->name, text, flags__range(s, " ", range, sizeof range));
            return 0;
        }
    }
    if (s->type == FLAG_CHOICE) {
        const char *p = s->choices;
        size_t len = strlen(text);
        while (p) {
            const char *bar = strchr(p, '|');
            size_t word = bar ? (size_t)(bar - p) : strlen(p);
            if (word == len && strncmp(p, text, len) == 0) return 1;
            p = bar ? bar + 1 : NULL;
        }
        flags_fail(cmd, "%s: '%s' is not %s", s->name, text, flags__choices(s, range, sizeof range));
        return 0;
    }
    return 1;
}

/* The slot of a declared flag, or NULL. */
static inline flag_value *flags_declared(const flags *fl, const char *name) {
    int i;
    for (i = 0; i < fl->n; i++) {
        if (strcmp(fl->values[i].spec->name, name) == 0) return (flag_value *)&fl->values[i];
    }
    return NULL;
}

static flag_value *flags__value(const flags *fl, const char *name) {
    flag_value *v = flags_declared(fl, name);
    if (v) return v;
    /* a lookup of a flag the command does not declare is a bug in the program, not bad input */
    fprintf(stderr, "%s: internal error: %s is read but not declared\n", fl->cmd->program, name);
    abort();
}

/* Whether the flag was given (the count, for a repeatable one). */
static inline int flag_given(const flags *fl, const char *name) {
    return flags__value(fl, name)->given;
}

/* A switch: 1 when given. */
static inline int flag_on(const flags *fl, const char *name) {
    return flag_given(fl, name) > 0;
}

/* The value as given, else a preset's, else the declared default, else NULL. */
static inline const char *flag_text(const flags *fl, const char *name) {
    const flag_value *v = flags__value(fl, name);
    return v->given ? v->texts[0] : v->preset ? v->preset : v->spec->def;
}

/* The i-th value of a repeatable flag (i < flag_given()). */
static inline const char *flag_nth(const flags *fl, const char *name, int i) {
    return flags__value(fl, name)->texts[i];
}

/* A number flag: the value as given, else a preset's, else the declared default, else 0 (the library's
   "default"). */
static inline double flag_number(const flags *fl, const char *name) {
    const flag_value *v = flags__value(fl, name);
    const char *text = v->preset ? v->preset : v->spec->def;
    if (v->given) return v->number;
    return text ? strtod(text, NULL) : 0;
}

/* A choice flag: the index of its word in .choices (given, else the default), or -1 if unset. */
static inline int flag_choice(const flags *fl, const char *name) {
    const char *text = flag_text(fl, name);
    const char *p = flags__value(fl, name)->spec->choices;
    int index = 0;
    if (!text) return -1;
    while (p) {
        const char *bar = strchr(p, '|');
        size_t word = bar ? (size_t)(bar - p) : strlen(p);
        if (word == strlen(text) && strncmp(p, text, word) == 0) return index;
        index++;
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

/* A value a preset gives a flag that was not given (a flag on the command line wins): checked as if it had
   been typed. Returns 1 when set or when the flag was given, 0 (after a message) when the value is refused;
   a flag the command does not declare is left alone (1). */
static inline int flag_preset(flags *fl, const char *name, const char *text) {
    flag_value *v = flags_declared(fl, name);
    double number = 0;
    if (!v || v->given) return 1;
    if (!flags__check_value(fl->cmd, v->spec, text, &number)) return 0;
    v->preset = text;
    return 1;
}

/* ---- usage -------------------------------------------------------------------------------- */

/* Prints text from column `at`, wrapped at 118 columns with continuation lines at `indent`. */
static void flags__wrap(FILE *out, const char *text, int at, int indent) {
    int column = at;
    const char *p = text;
    while (*p) {
        const char *word_end = p;
        int len;
        while (*word_end && *word_end != ' ') word_end++;
        len = (int)(word_end - p);
        if (column > indent && column + 1 + len > 118) {
            fprintf(out, "\n%*s", indent, "");
            column = indent;
        } else if (column > at || (p != text && column > indent)) {
            fputc(' ', out);
            column++;
        }
        for (; p < word_end; p++) fputc(*p == FLAGS_GLUE[0] ? ' ' : *p, out);
        column += len;
        while (*p == ' ') p++;
    }
    fputc('\n', out);
}

/* One flag's line: name and value, help, then what it accepts and its default. */
static void flags__usage_line(FILE *out, const flag_spec *s) {
    char left[96];
    char line[1024];
    char range[160];
    size_t k;
    if (s->type == FLAG_SWITCH) snprintf(left, sizeof left, "  %s", s->name);
    else snprintf(left, sizeof left, "  %s %s", s->name, s->metavar);
    k = (size_t)snprintf(line, sizeof line, "%s", s->help);
    if (s->type == FLAG_INT || s->type == FLAG_REAL) {
        k += (size_t)snprintf(line + k, sizeof line - k, "; %s", flags__range(s, FLAGS_GLUE, range, sizeof range));
    }
    if (s->type == FLAG_CHOICE) k += (size_t)snprintf(line + k, sizeof line - k, "; %s", s->choices);
    if (s->need == FLAG_REQUIRED) k += (size_t)snprintf(line + k, sizeof line - k, "; required");
    if (s->need == FLAG_REPEATABLE) k += (size_t)snprintf(line + k, sizeof line - k, "; may be repeated");
    if (s->def_note) snprintf(line + k, sizeof line - k, " (default %s)", s->def_note);
    else if (s->def) snprintf(line + k, sizeof line - k, " (default %s)", s->def);
    fputs(left, out);
    if (strlen(left) + 2 > 32) {
        fputc('\n', out);
        fprintf(out, "%32s", "");
    } else {
        fprintf(out, "%*s", (int)(32 - strlen(left)), "");
    }
    flags__wrap(out, line, 32, 32);
}

/* The usage of a command, generated from its tables. */
static inline void flags_usage(const flag_command *cmd, FILE *out) {
    char synopsis[1024];
    size_t k;
    int g;
    int i;
    k = (size_t)snprintf(synopsis, sizeof synopsis, "usage: %s", cmd->program);
    if (cmd->positional) k += (size_t)snprintf(synopsis + k, sizeof synopsis - k, " %s", cmd->positional);
    for (g = 0; g < FLAGS_MAX_GROUPS && cmd->groups[g]; g++) {
        for (i = 0; i < cmd->groups[g]->n; i++) {
            const flag_spec *s = &cmd->groups[g]->specs[i];
            if (s->need == FLAG_REQUIRED && k < sizeof synopsis) {
                k += (size_t)snprintf(synopsis + k, sizeof synopsis - k, " %s %s", s->name, s->metavar);
            }
        }
    }
    if (k < sizeof synopsis) snprintf(synopsis + k, sizeof synopsis - k, " [flags]");
    flags__wrap(out, synopsis, 0, 8);
    fputc('\n', out);
    flags__wrap(out, cmd->summary, 0, 0);
    if (cmd->about) {
        const char *p = cmd->about;
        while (*p) {                                  /* one paragraph per line of .about */
            char para[1024];
            size_t len = strcspn(p, "\n");
            snprintf(para, sizeof para, "%.*s", (int)len, p);
            fputc('\n', out);
            flags__wrap(out, para, 0, 0);
            p += len;
            if (*p) p++;
        }
    }
    for (g = 0; g < FLAGS_MAX_GROUPS && cmd->groups[g]; g++) {
        fprintf(out, "\n%s:\n", cmd->groups[g]->title);
        for (i = 0; i < cmd->groups[g]->n; i++) flags__usage_line(out, &cmd->groups[g]->specs[i]);
    }
    fprintf(out, "\n  -h, --help                    this text\n");
    fprintf(out, "\nExit status: 0 done; 1 failed while running; 2 bad command line (nothing was written).\n");
}

/* ---- parsing ------------------------------------------------------------------------------ */

static int flags__is_help(const char *arg) {
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

/* A word that reads as a flag rather than a value: "--name", or "-x" that is not a number. */
static int flags__looks_like_flag(const char *arg) {
    if (arg[0] != '-' || arg[1] == 0) return 0;
    if (arg[1] == '-') return arg[2] != 0;
    return !(arg[1] == '.' || (arg[1] >= '0' && arg[1] <= '9'));
}

/* Fills the value slots from the tables; 0 (after a message) if a name is declared twice. */
static int flags__init(flags *fl, const flag_command *cmd) {
    int g;
    int i;
    memset(fl, 0, sizeof *fl);
    fl->cmd = cmd;
    for (g = 0; g < FLAGS_MAX_GROUPS && cmd->groups[g]; g++) {
        for (i = 0; i < cmd->groups[g]->n; i++) {
            const flag_spec *s = &cmd->groups[g]->specs[i];
            int j;
            for (j = 0; j < fl->n; j++) {
                if (strcmp(fl->values[j].spec->name, s->name) == 0) {
                    fprintf(stderr, "%s: internal error: %s is declared twice\n", cmd->program, s->name);
                    return 0;
                }
            }
            if (fl->n == FLAGS_MAX) {
                fprintf(stderr, "%s: internal error: more than %d flags\n", cmd->program, FLAGS_MAX);
                return 0;
            }
            fl->values[fl->n++].spec = s;
        }
    }
    return 1;
}

/* Reads "--name value", "--name=value" and switches; one positional argument if the command
   takes one ("--" ends the flags). argv holds the arguments after the program or command name. */
static inline flags_status flags_parse(flags *fl, const flag_command *cmd, int argc, char **argv) {
    int i;
    if (!flags__init(fl, cmd)) return FLAGS_ERROR;
    for (i = 0; i < argc; i++) {                 /* help wins over anything else on the line */
        if (strcmp(argv[i], "--") == 0) break;
        if (flags__is_help(argv[i])) {
            flags_usage(cmd, stdout);
            return FLAGS_HELP;
        }
    }
    for (i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq;
        const char *text;
        const flag_spec *s;
        flag_value *v;
        double number = 0;
        if (strcmp(arg, "--") == 0 || !flags__looks_like_flag(arg)) {
            if (strcmp(arg, "--") == 0) arg = ++i < argc ? argv[i] : NULL;
            if (!arg) break;
            if (!cmd->positional) {
                flags_fail(cmd, "unexpected argument '%s' (values follow their flag: --name VALUE)", arg);
                return FLAGS_ERROR;
            }
            if (fl->positional) {
                flags_fail(cmd, "unexpected argument '%s': %s is already '%s'", arg, cmd->positional, fl->positional);
                return FLAGS_ERROR;
            }
            fl->positional = arg;
            continue;
        }
        eq = strchr(arg, '=');
        s = flags__find(cmd, arg, eq ? (size_t)(eq - arg) : strlen(arg));
        if (!s) {
            char name[128];
            const char *near;
            snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - arg) : (int)strlen(arg), arg);
            near = flags__suggest(cmd, name);
            if (near) flags_fail(cmd, "unknown flag %s (did you mean %s?)", name, near);
            else flags_fail(cmd, "unknown flag %s", name);
            return FLAGS_ERROR;
        }
        v = flags__value(fl, s->name);
        if (s->type == FLAG_SWITCH) {
            if (eq) {
                flags_fail(cmd, "%s is a switch and takes no value (got '%s')", s->name, eq + 1);
                return FLAGS_ERROR;
            }
            text = "";
        } else if (eq) {
            text = eq + 1;
        } else if (i + 1 >= argc) {
            flags_fail(cmd, "%s needs a value (%s)", s->name, s->metavar);
            return FLAGS_ERROR;
        } else if (flags__looks_like_flag(argv[i + 1])) {
            flags_fail(cmd, "%s needs a value (%s) but is followed by the flag %s (a value that starts with "
                       "'-' is written %s=VALUE)", s->name, s->metavar, argv[i + 1], s->name);
            return FLAGS_ERROR;
        } else {
            text = argv[++i];
        }
        if (v->given && s->need != FLAG_REPEATABLE) {
            if (s->type == FLAG_SWITCH) flags_fail(cmd, "%s is given twice; give it once", s->name);
            else flags_fail(cmd, "%s is given twice ('%s' and '%s'); give it once", s->name, v->texts[0], text);
            return FLAGS_ERROR;
        }
        if (v->given == FLAGS_MAX_REPEAT) {
            flags_fail(cmd, "%s is given more than %d times", s->name, FLAGS_MAX_REPEAT);
            return FLAGS_ERROR;
        }
        if (s->type != FLAG_SWITCH && !flags__check_value(cmd, s, text, &number)) return FLAGS_ERROR;
        v->texts[v->given++] = text;
        v->number = number;
    }
    for (i = 0; i < fl->n; i++) {
        const flag_spec *s = fl->values[i].spec;
        if (s->need == FLAG_REQUIRED && !fl->values[i].given) {
            flags_fail(cmd, "missing %s %s (%s)", s->name, s->metavar, s->help);
            return FLAGS_ERROR;
        }
    }
    if (cmd->positional && !fl->positional) {
        flags_fail(cmd, "missing %s", cmd->positional);
        return FLAGS_ERROR;
    }
    return FLAGS_OK;
}

/* Two flags that exclude each other: 0 after a message if both are given. */
static inline int flags_exclusive(const flags *fl, const char *a, const char *b) {
    if (flag_given(fl, a) && flag_given(fl, b)) {
        flags_fail(fl->cmd, "%s and %s exclude each other; give one", a, b);
        return 0;
    }
    return 1;
}

/* Exactly one of two flags: 0 after a message otherwise. */
static inline int flags_one_of(const flags *fl, const char *a, const char *b) {
    if (!flag_given(fl, a) == !flag_given(fl, b)) {
        flags_fail(fl->cmd, "give one of %s and %s", a, b);
        return 0;
    }
    return 1;
}

#endif /* FLAGS_H */
