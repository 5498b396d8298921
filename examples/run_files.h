/* run_files.h - the examples never destroy an input: the checks a command makes before it writes.

   Demonstrates how a program around collabllm.h can keep its promise "never lose or overwrite what
   already exists", using the path types of flags.h. run_files_prepare() runs before anything is
   opened for writing and refuses (exit status 2, with a message that says what to do):
     - an output that is the same file as an input (same path, or same device and inode), two
       outputs that are the same file, and an input inside an output directory;
     - an output file or a non-empty output directory that exists, unless --overwrite is given;
     - --resume of anything but a run of this same command with the same inputs and settings.
   A resumable output (FLAG_RUN_FILE, FLAG_RUN_DIR) carries a sidecar, FILE.meta.json beside a
   file or DIR/meta.json inside a directory, written atomically when the run starts. It names the
   command, its inputs (a file by its size and FNV-1a 64 hash, a directory by its absolute path)
   and its settings (every FLAG_SETTING flag, given or default), and a fingerprint of them all
   (data_fmt/meta.md). --resume continues only when the sidecar matches; the data files themselves
   stay in their documented formats. run_files_end() removes what a failed run created and left
   empty, so a failure leaves no empty directory or stray sidecar behind.

   Include it after collabllm.h (cllm_write_file_atomic) and flags.h. POSIX: needs realpath and
   lstat (_XOPEN_SOURCE 700); elsewhere only the path checks run. */
#ifndef RUN_FILES_H
#define RUN_FILES_H

#include <cjson/cJSON.h>
#if !defined(_WIN32)
#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#define RUN_FILES_POSIX 1
#endif

#define RUN_FILES_PATH 4096

typedef struct run_files {
    const flags     *fl;
    const flag_spec *run;                  /* the resumable output (FLAG_RUN_FILE / _DIR), or NULL */
    const char      *run_path;
    char             sidecar[RUN_FILES_PATH];
    int              resuming;             /* continuing a run this command started               */
    int              created_dir;          /* this invocation created the run directory           */
    int              wrote_sidecar;        /* this invocation wrote the sidecar (a new run)       */
    char             made_out_dir[RUN_FILES_PATH];   /* a FLAG_OUT_DIR this invocation created    */
} run_files;

/* ---- paths -------------------------------------------------------------------------------- */

static int run_files__is_path(flag_type t) {
    return t >= FLAG_IN_FILE;
}

static int run_files__is_input(flag_type t) {
    return t == FLAG_IN_FILE || t == FLAG_IN_DIR || t == FLAG_IN_PATH;
}

static int run_files__is_dir_output(flag_type t) {
    return t == FLAG_OUT_DIR || t == FLAG_RUN_DIR;
}

/* What a file flag expects, from its metavar: "a JSONL file", "a JSON file", "a file". */
static const char *run_files__kind(const flag_spec *s) {
    size_t n = strlen(s->metavar);
    if (n >= 6 && strcmp(s->metavar + n - 6, ".jsonl") == 0) return "a JSONL file";
    if (n >= 5 && strcmp(s->metavar + n - 5, ".json") == 0) return "a JSON file (or JSONL)";
    if (n >= 12 && strcmp(s->metavar + n - 12, ".safetensors") == 0) return "a .safetensors file";
    return "a file";
}

#if defined(RUN_FILES_POSIX)
/* out = dir/base; 0 if that would not fit in RUN_FILES_PATH. */
static int run_files__join(char *out, const char *dir, const char *base) {
    size_t n_dir = strlen(dir);
    size_t n_base = strlen(base);
    if (n_dir + 1 + n_base + 1 > RUN_FILES_PATH) return 0;
    memcpy(out, dir, n_dir);
    out[n_dir] = '/';
    memcpy(out + n_dir + 1, base, n_base + 1);
    return 1;
}

/* The absolute form of a path that may not exist yet (its directory must). 0 if it cannot be had. */
static int run_files__resolve(const char *given, char *out) {
    char path[RUN_FILES_PATH];
    char parent[RUN_FILES_PATH];
    char resolved[PATH_MAX];
    size_t n = (size_t)snprintf(path, sizeof path, "%s", given);
    const char *slash;
    const char *base;
    while (n > 1 && path[n - 1] == '/') path[--n] = 0;          /* "run/" is "run" */
    slash = strrchr(path, '/');
    base = slash ? slash + 1 : path;
    if (realpath(path, resolved)) {
        snprintf(out, RUN_FILES_PATH, "%s", resolved);
        return 1;
    }
    if (slash == path) snprintf(parent, sizeof parent, "/");
    else if (slash) snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path);
    else snprintf(parent, sizeof parent, ".");
    if (!realpath(parent, resolved)) return 0;
    return run_files__join(out, strcmp(resolved, "/") == 0 ? "" : resolved, base);
}

/* Is `inner` (absolute) the directory `outer` or inside it? */
static int run_files__inside(const char *inner, const char *outer) {
    size_t n = strlen(outer);
    return strncmp(inner, outer, n) == 0 && (inner[n] == 0 || inner[n] == '/');
}

/* A directory with nothing in it, or (empty_files_count) nothing but empty files and empty
   directories; the file `except` (if given) is not counted. */
static int run_files__dir_is_empty(const char *dir, const char *except, int empty_files_count) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int empty = 1;
    if (!d) return 0;
    while (empty && (e = readdir(d)) != NULL) {
        char path[RUN_FILES_PATH];
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (except && strcmp(e->d_name, except) == 0) continue;
        if (!empty_files_count || !run_files__join(path, dir, e->d_name) || lstat(path, &st) != 0) {
            empty = 0;
        } else if (S_ISDIR(st.st_mode)) {
            empty = run_files__dir_is_empty(path, NULL, 1);
        } else {
            empty = S_ISREG(st.st_mode) && st.st_size == 0;
        }
    }
    closedir(d);
    return empty;
}

/* Removes a directory tree (symbolic links are removed, never followed). */
static int run_files__remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int ok = 1;
    if (!d) return 0;
    while ((e = readdir(d)) != NULL) {
        char path[RUN_FILES_PATH];
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) != 0) ok = 0;
        else if (S_ISDIR(st.st_mode)) ok &= run_files__remove_tree(path);
        else ok &= unlink(path) == 0;
    }
    closedir(d);
    return ok && rmdir(dir) == 0;
}
#endif

/* ---- the sidecar ---------------------------------------------------------------------------- */

/* FNV-1a, 64 bits, continued over n more bytes. */
static uint64_t run_files__fnv(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

#define RUN_FILES_FNV_START 14695981039346656037ull

/* {"path", "bytes", "fnv1a64"} of an input file, or {"path"} of a directory. */
static cJSON *run_files__input(const char *path) {
    cJSON *o = cJSON_CreateObject();
    char resolved[RUN_FILES_PATH];
    char hex[24];
    FILE *f;
#if defined(RUN_FILES_POSIX)
    struct stat st;
    if (!run_files__resolve(path, resolved)) snprintf(resolved, sizeof resolved, "%s", path);
    cJSON_AddStringToObject(o, "path", resolved);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return o;
#else
    snprintf(resolved, sizeof resolved, "%s", path);
    cJSON_AddStringToObject(o, "path", resolved);
#endif
    f = fopen(path, "rb");
    if (f) {
        static unsigned char chunk[1 << 16];
        uint64_t h = RUN_FILES_FNV_START;
        double bytes = 0;
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
            h = run_files__fnv(h, chunk, got);
            bytes += (double)got;
        }
        fclose(f);
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
        cJSON_AddNumberToObject(o, "bytes", bytes);
        cJSON_AddStringToObject(o, "fnv1a64", hex);
    }
    return o;
}

/* What identifies an input: a file by its contents (it may move), a directory by its path. */
static const char *run_files__input_identity(const cJSON *input) {
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(input, "fnv1a64");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(input, "path");
    if (cJSON_IsString(hash)) return hash->valuestring;
    return cJSON_IsString(path) ? path->valuestring : "";
}

/* The sidecar of this invocation: command, inputs, settings, logs and their fingerprint. */
static cJSON *run_files__describe(const run_files *rf) {
    const flags *fl = rf->fl;
    cJSON *meta = cJSON_CreateObject();
    cJSON *inputs;
    cJSON *settings;
    cJSON *logs;
    cJSON *item;
    char *canonical;
    char hex[24];
    uint64_t h;
    int i;
    cJSON_AddStringToObject(meta, "command", fl->cmd->program);
    inputs = cJSON_AddObjectToObject(meta, "inputs");
    settings = cJSON_AddObjectToObject(meta, "settings");
    for (i = 0; i < fl->n; i++) {
        const flag_spec *s = fl->values[i].spec;
        const char *text = flag_text(fl, s->name);
        if (run_files__is_input(s->type)) {
            if (text) cJSON_AddItemToObject(inputs, s->name, run_files__input(text));
        } else if (run_files__is_path(s->type) || s->effect == FLAG_RUNTIME) {
            continue;
        } else if (s->type == FLAG_SWITCH) {
            cJSON_AddBoolToObject(settings, s->name, flag_on(fl, s->name));
        } else if (!text) {
            cJSON_AddNullToObject(settings, s->name);
        } else if (s->type == FLAG_INT || s->type == FLAG_REAL) {
            cJSON_AddNumberToObject(settings, s->name, flag_number(fl, s->name));
        } else {
            cJSON_AddStringToObject(settings, s->name, text);
        }
    }
    /* the fingerprint: FNV-1a 64 over the command, each input's identity (a file's hash, a
       directory's path) and the settings as compact JSON, one per line */
    h = run_files__fnv(RUN_FILES_FNV_START, fl->cmd->program, strlen(fl->cmd->program) + 1);
    cJSON_ArrayForEach(item, inputs) {
        const char *id = run_files__input_identity(item);
        h = run_files__fnv(h, item->string, strlen(item->string) + 1);
        h = run_files__fnv(h, id, strlen(id) + 1);
    }
    canonical = cJSON_PrintUnformatted(settings);
    h = run_files__fnv(h, canonical ? canonical : "", canonical ? strlen(canonical) : 0);
    cJSON_free(canonical);
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    cJSON_AddStringToObject(meta, "fingerprint", hex);
    /* the files the run appends to besides its own (--metrics): a resumed run may append again */
    logs = cJSON_AddObjectToObject(meta, "logs");
    for (i = 0; i < fl->n; i++) {
        const flag_spec *s = fl->values[i].spec;
        const char *text = flag_text(fl, s->name);
        char resolved[RUN_FILES_PATH];
        if (s->type != FLAG_RUN_LOG || !text) continue;
#if defined(RUN_FILES_POSIX)
        if (!run_files__resolve(text, resolved)) continue;
#else
        snprintf(resolved, sizeof resolved, "%s", text);
#endif
        cJSON_AddStringToObject(logs, s->name, resolved);
    }
    return meta;
}

/* The sidecar at path parsed, or NULL if there is none or it is not a collabllm sidecar. */
static cJSON *run_files__read_sidecar(const char *path) {
    char *text = NULL;
    size_t len = 0;
    cJSON *meta;
    if (cllm_read_file(path, &text, &len, NULL) != CLLM_OK) return NULL;
    meta = cJSON_ParseWithLength(text, len);
    cllm_free_buffer(text);
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(meta, "command")) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(meta, "fingerprint"))) {
        cJSON_Delete(meta);
        return NULL;
    }
    return meta;
}

/* A value of a sidecar in a message: 2, "text", unset. */
static void run_files__show(const cJSON *v, char *buf, size_t size) {
    char *text = v && !cJSON_IsNull(v) ? cJSON_PrintUnformatted(v) : NULL;
    snprintf(buf, size, "%s", text ? text : "unset");
    cJSON_free(text);
}

/* 1 if the sidecar `old` describes a run this invocation may continue; else a message. */
static int run_files__matches(const run_files *rf, const cJSON *old, const cJSON *now) {
    const char *old_command = cJSON_GetObjectItemCaseSensitive(old, "command")->valuestring;
    static const char *sections[] = { "settings", "inputs" };
    const char *what = rf->run->name;
    size_t k;
    if (strcmp(old_command, rf->fl->cmd->program) != 0) {
        flags_refuse(rf->fl->cmd, "%s %s holds the output of `%s`, not of `%s`: it cannot be resumed here; "
                   "choose another %s", what, rf->run_path, old_command, rf->fl->cmd->program, what);
        return 0;
    }
    for (k = 0; k < 2; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(old, sections[k]);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(now, sections[k]);
        const cJSON *item;
        int pass;
        for (pass = 0; pass < 2; pass++) {                  /* keys of the old, then of the new */
            const cJSON *keys = pass == 0 ? a : b;
            cJSON_ArrayForEach(item, keys) {
                const cJSON *other = cJSON_GetObjectItemCaseSensitive(pass == 0 ? b : a, item->string);
                const cJSON *was = pass == 0 ? item : other;
                const cJSON *is = pass == 0 ? other : item;
                char was_text[512];
                char is_text[512];
                if (k == 1 && was && is) {
                    const cJSON *pw = cJSON_GetObjectItemCaseSensitive(was, "path");
                    const cJSON *pi = cJSON_GetObjectItemCaseSensitive(is, "path");
                    if (strcmp(run_files__input_identity(was), run_files__input_identity(is)) == 0) continue;
                    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(is, "fnv1a64"))) {
                        flags_refuse(rf->fl->cmd, "%s %s cannot be resumed: the contents of %s %s differ from the "
                                     "file the run started with (%s); resume with that file, or pass --overwrite to "
                                     "start over",
                                     what, rf->run_path, item->string, cJSON_IsString(pi) ? pi->valuestring : "?",
                                     cJSON_IsString(pw) ? pw->valuestring : "?");
                        return 0;
                    }
                    run_files__show(pw, was_text, sizeof was_text);
                    run_files__show(pi, is_text, sizeof is_text);
                } else if (was && is && cJSON_Compare(was, is, 1)) {
                    continue;
                } else {
                    run_files__show(was, was_text, sizeof was_text);
                    run_files__show(is, is_text, sizeof is_text);
                }
                flags_refuse(rf->fl->cmd, "%s %s cannot be resumed: it was started with %s %s, and this run has %s %s; "
                           "resume with the same %s, or pass --overwrite to start over", what, rf->run_path,
                           item->string, was_text, item->string, is_text, k == 1 ? "inputs" : "settings");
                return 0;
            }
        }
    }
    return 1;
}

/* ---- the checks --------------------------------------------------------------------------- */

#if defined(RUN_FILES_POSIX)
/* The outputs against the inputs and each other: same path, same inode, or inside a directory. */
static int run_files__check_overlaps(const run_files *rf) {
    const flags *fl = rf->fl;
    int i;
    int j;
    for (i = 0; i < fl->n; i++) {
        const flag_spec *out = fl->values[i].spec;
        const char *out_path = flag_text(fl, out->name);
        char out_real[RUN_FILES_PATH];
        struct stat out_st;
        int out_exists;
        if (!run_files__is_path(out->type) || run_files__is_input(out->type) || !out_path) continue;
        if (!run_files__resolve(out_path, out_real)) {
            flags_refuse(fl->cmd, "%s %s: the directory it would go in does not exist", out->name, out_path);
            return 0;
        }
        out_exists = stat(out_path, &out_st) == 0;
        if (out_exists && !S_ISDIR(out_st.st_mode) && run_files__is_dir_output(out->type)) {
            flags_refuse(fl->cmd, "%s %s is a file; expected a directory to write the run into", out->name, out_path);
            return 0;
        }
        if (out_exists && S_ISDIR(out_st.st_mode) && !run_files__is_dir_output(out->type)) {
            flags_refuse(fl->cmd, "%s %s is a directory; expected a file to write", out->name, out_path);
            return 0;
        }
        for (j = 0; j < fl->n; j++) {
            const flag_spec *other = fl->values[j].spec;
            const char *other_path = flag_text(fl, other->name);
            char other_real[RUN_FILES_PATH];
            struct stat other_st;
            int same;
            if (j == i || !run_files__is_path(other->type) || !other_path) continue;
            if (!run_files__is_input(other->type) && j < i) continue;    /* each pair of outputs once */
            if (!run_files__resolve(other_path, other_real)) continue;
            same = strcmp(out_real, other_real) == 0;
            same |= out_exists && stat(other_path, &other_st) == 0 && other_st.st_dev == out_st.st_dev &&
                    other_st.st_ino == out_st.st_ino;
            if (same && run_files__is_input(other->type)) {
                flags_refuse(fl->cmd, "%s %s is the same file as the input %s %s; an output never replaces an input: "
                           "choose another %s", out->name, out_path, other->name, other_path, out->name);
                return 0;
            }
            if (same) {
                flags_refuse(fl->cmd, "%s and %s name the same file %s; give each its own", out->name, other->name,
                             out_path);
                return 0;
            }
            if (run_files__is_input(other->type) && run_files__is_dir_output(out->type) &&
                run_files__inside(other_real, out_real)) {
                flags_refuse(fl->cmd, "%s %s is inside %s %s, which this command writes into: move it out, or choose "
                           "another %s", other->name, other_path, out->name, out_path, out->name);
                return 0;
            }
        }
        if (out->type == FLAG_RUN_FILE) {          /* the sidecar is an output too */
            char sidecar[RUN_FILES_PATH];
            char sidecar_real[RUN_FILES_PATH];
            snprintf(sidecar, sizeof sidecar, "%s.meta.json", out_path);
            for (j = 0; j < fl->n && run_files__resolve(sidecar, sidecar_real); j++) {
                const flag_spec *in = fl->values[j].spec;
                const char *in_path = flag_text(fl, in->name);
                char in_real[RUN_FILES_PATH];
                if (!run_files__is_input(in->type) || !in_path || !run_files__resolve(in_path, in_real)) continue;
                if (strcmp(in_real, sidecar_real) == 0) {
                    flags_refuse(fl->cmd, "%s %s is where %s %s keeps its sidecar; choose another %s", in->name,
                                 in_path, out->name, out_path, out->name);
                    return 0;
                }
            }
        }
    }
    return 1;
}
#endif

/* Inputs exist and are what they should be: a file, a directory. */
static int run_files__check_inputs(const run_files *rf) {
    const flags *fl = rf->fl;
    int i;
    for (i = 0; i < fl->n; i++) {
        const flag_spec *s = fl->values[i].spec;
        const char *path = flag_text(fl, s->name);
#if defined(RUN_FILES_POSIX)
        struct stat st;
        if (!run_files__is_input(s->type) || !path) continue;
        if (stat(path, &st) != 0) {
            flags_refuse(fl->cmd, "%s: %s: %s", s->name, path, strerror(errno));
            return 0;
        }
        if (s->type == FLAG_IN_FILE && S_ISDIR(st.st_mode)) {
            flags_refuse(fl->cmd, "%s: %s is a directory; expected %s", s->name, path, run_files__kind(s));
            return 0;
        }
        if (s->type == FLAG_IN_DIR && !S_ISDIR(st.st_mode)) {
            flags_refuse(fl->cmd, "%s: %s is not a directory; expected a directory (%s)", s->name, path, s->help);
            return 0;
        }
#else
        (void)s; (void)path;
#endif
    }
    return 1;
}

/* An existing output: allowed by --overwrite, --resume (a matching run) or being empty. */
static int run_files__check_existing(run_files *rf) {
    const flags *fl = rf->fl;
    int overwrite = flags_declared(fl, "--overwrite") && flag_on(fl, "--overwrite");
    int resume = flags_declared(fl, "--resume") && flag_on(fl, "--resume");
    cJSON *logs = NULL;
    int i;
    if (overwrite && resume) {
        flags_refuse(fl->cmd, "--resume and --overwrite exclude each other: continue the run, or replace it");
        return 0;
    }
    if (rf->run) {                              /* the resumable output first: it decides the rest */
        cJSON *old = NULL;
        int exists = 0;
        int non_empty = 0;
#if defined(RUN_FILES_POSIX)
        struct stat st;
        exists = stat(rf->run_path, &st) == 0;
        non_empty = exists && (rf->run->type == FLAG_RUN_DIR ? !run_files__dir_is_empty(rf->run_path, NULL, 0) : 1);
#endif
        old = exists ? run_files__read_sidecar(rf->sidecar) : NULL;
        if (non_empty && !overwrite && !resume) {
            if (old) {
                flags_refuse(fl->cmd, "%s %s already holds a run of `%s`: pass --resume to continue it, --overwrite to "
                           "replace it, or choose another %s", rf->run->name, rf->run_path,
                           cJSON_GetObjectItemCaseSensitive(old, "command")->valuestring, rf->run->name);
            } else {
                flags_refuse(fl->cmd, "%s %s exists: choose another %s, or pass --overwrite to replace it",
                           rf->run->name, rf->run_path, rf->run->name);
            }
            cJSON_Delete(old);
            return 0;
        }
        if (non_empty && !old) {
            if (resume) {
                flags_refuse(fl->cmd, "%s %s was not written by `%s` (it has no %s), so it cannot be resumed: choose "
                           "another %s, or pass --overwrite to replace it", rf->run->name, rf->run_path,
                           fl->cmd->program, rf->sidecar, rf->run->name);
                return 0;
            }
            if (rf->run->type == FLAG_RUN_DIR) {   /* --overwrite deletes only a directory of ours */
                flags_refuse(fl->cmd, "%s %s is a directory that holds no collabllm run (no %s); --overwrite replaces "
                           "only runs: remove it yourself, or choose another %s", rf->run->name, rf->run_path,
                           rf->sidecar, rf->run->name);
                return 0;
            }
        }
        if (non_empty && old && resume) {
            cJSON *now = run_files__describe(rf);
            int ok = run_files__matches(rf, old, now);
            cJSON_Delete(now);
            if (!ok) {
                cJSON_Delete(old);
                return 0;
            }
            rf->resuming = 1;
            logs = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(old, "logs"), 1);
        }
        cJSON_Delete(old);
    }
    for (i = 0; i < fl->n; i++) {               /* the other outputs */
        const flag_spec *s = fl->values[i].spec;
        const char *path = flag_text(fl, s->name);
#if defined(RUN_FILES_POSIX)
        struct stat st;
        char resolved[RUN_FILES_PATH];
        const cJSON *logged;
        if (s == rf->run || !path || !run_files__is_path(s->type) || run_files__is_input(s->type)) continue;
        if (stat(path, &st) != 0 || overwrite) continue;
        if (s->type == FLAG_OUT_DIR && run_files__dir_is_empty(path, NULL, 0)) continue;
        logged = cJSON_GetObjectItemCaseSensitive(logs, s->name);
        if (s->type == FLAG_RUN_LOG && rf->resuming && cJSON_IsString(logged) && run_files__resolve(path, resolved) &&
            strcmp(logged->valuestring, resolved) == 0) continue;
        flags_refuse(fl->cmd, "%s %s exists: choose another %s, or pass --overwrite to replace it", s->name, path,
                     s->name);
        cJSON_Delete(logs);
        return 0;
#else
        (void)s; (void)path;
#endif
    }
    cJSON_Delete(logs);
    return 1;
}

/* ---- prepare and end ------------------------------------------------------------------------ */

/* Creates a FLAG_OUT_DIR that does not exist yet (its parent does: checked), remembering it. */
static int run_files__make_out_dirs(run_files *rf) {
#if defined(RUN_FILES_POSIX)
    int i;
    for (i = 0; i < rf->fl->n; i++) {
        const flag_spec *s = rf->fl->values[i].spec;
        const char *path = flag_text(rf->fl, s->name);
        struct stat st;
        if (s->type != FLAG_OUT_DIR || !path || stat(path, &st) == 0) continue;
        if (mkdir(path, 0755) != 0) {
            fprintf(stderr, "%s: cannot create %s (%s)\n", rf->fl->cmd->program, path, strerror(errno));
            return 0;
        }
        snprintf(rf->made_out_dir, sizeof rf->made_out_dir, "%s", path);
    }
#else
    (void)rf;
#endif
    return 1;
}

/* Every check, then (only if all pass) the writes that start a run: --overwrite's removal of
   the old run, the run directory and the sidecar. Returns 0, or the exit status after a message
   (2: refused, nothing written; 1: the filesystem failed). */
static inline int run_files_prepare(run_files *rf, const flags *fl) {
    int i;
    memset(rf, 0, sizeof *rf);
    rf->fl = fl;
    for (i = 0; i < fl->n; i++) {
        const flag_spec *s = fl->values[i].spec;
        if ((s->type == FLAG_RUN_FILE || s->type == FLAG_RUN_DIR) && flag_text(fl, s->name)) {
            rf->run = s;
            rf->run_path = flag_text(fl, s->name);
            snprintf(rf->sidecar, sizeof rf->sidecar, s->type == FLAG_RUN_DIR ? "%s/meta.json" : "%s.meta.json",
                     rf->run_path);
        }
    }
    if (!run_files__check_inputs(rf)) return 2;
#if defined(RUN_FILES_POSIX)
    if (!run_files__check_overlaps(rf)) return 2;
#endif
    if (!run_files__check_existing(rf)) return 2;
    if (!run_files__make_out_dirs(rf)) return 1;
    if (rf->run && !rf->resuming && flags_declared(fl, "--resume") && flag_on(fl, "--resume")) {
        fprintf(stderr, "%s: %s holds no run yet; starting a new one\n", fl->cmd->program, rf->run_path);
    }
    if (!rf->run || rf->resuming) return 0;
    {                                           /* a new run: clear the old one, then the sidecar */
        cllm_err err;
        cJSON *meta;
        char *text;
        int ok;
#if defined(RUN_FILES_POSIX)
        struct stat st;
        if (stat(rf->run_path, &st) == 0) {
            int empty = S_ISDIR(st.st_mode) && run_files__dir_is_empty(rf->run_path, NULL, 0);
            if (S_ISDIR(st.st_mode) && !empty && !run_files__remove_tree(rf->run_path)) {
                fprintf(stderr, "%s: cannot remove the old run %s (%s)\n", fl->cmd->program, rf->run_path,
                        strerror(errno));
                return 1;
            }
            if (!S_ISDIR(st.st_mode) && unlink(rf->run_path) != 0) {
                fprintf(stderr, "%s: cannot remove the old %s (%s)\n", fl->cmd->program, rf->run_path, strerror(errno));
                return 1;
            }
        }
        if (rf->run->type == FLAG_RUN_DIR && stat(rf->run_path, &st) != 0) {
            if (mkdir(rf->run_path, 0755) != 0) {
                fprintf(stderr, "%s: cannot create %s (%s)\n", fl->cmd->program, rf->run_path, strerror(errno));
                return 1;
            }
            rf->created_dir = 1;
        }
#endif
        meta = run_files__describe(rf);
        text = cJSON_Print(meta);
        cJSON_Delete(meta);
        ok = text && cllm_write_file_atomic(rf->sidecar, text, strlen(text), &err) == CLLM_OK;
        cJSON_free(text);
        if (!ok) {
            fprintf(stderr, "%s: cannot write %s: %s\n", fl->cmd->program, rf->sidecar,
                    text ? err.msg : "out of memory");
            return 1;
        }
        rf->wrote_sidecar = 1;
    }
    return 0;
}

/* After the command: if it failed without writing anything worth keeping (only empty files and
   directories), removes what it created: the sidecar, the run directory, an output directory. */
static inline void run_files_end(const run_files *rf, int failed) {
#if defined(RUN_FILES_POSIX)
    struct stat st;
    if (!failed) return;
    if (rf->made_out_dir[0] && run_files__dir_is_empty(rf->made_out_dir, NULL, 1)) {
        run_files__remove_tree(rf->made_out_dir);
    }
    if (!rf->wrote_sidecar) return;
    if (rf->run->type == FLAG_RUN_FILE) {
        if (stat(rf->run_path, &st) == 0 && st.st_size > 0) return;
        unlink(rf->run_path);
        unlink(rf->sidecar);
        return;
    }
    if (!run_files__dir_is_empty(rf->run_path, "meta.json", 1)) return;
    run_files__remove_tree(rf->run_path);
    if (!rf->created_dir) mkdir(rf->run_path, 0755);     /* it was there, empty: leave it so */
#else
    (void)rf; (void)failed;
#endif
}

#endif /* RUN_FILES_H */
