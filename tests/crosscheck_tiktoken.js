// crosscheck_tiktoken.js - collabllm.h's tiktoken encodings (cllm_tiktoken_*) against npm `tiktoken`
// 1.0.22, the Rust core of OpenAI's tiktoken compiled to WASM. Called by crosscheck.js (`make
// crosscheck`) with its corpus; with --write-fixtures it also writes what `make test` checks offline.
//
//   rank files     cl100k_base, r50k_base and p50k_base rebuilt from the package's ranks; their
//                  SHA-256 must be the ones tiktoken pins for OpenAI's published files (so they
//                  are those files, byte for byte). They go to <npm cache>/tiktoken/, where
//                  tests/test_tiktoken.c finds them.
//   ids            `collabllm tokenize --tokenizer NAME.tiktoken` == encode_ordinary, on every
//                  corpus string, for cl100k_base, r50k_base, p50k_base and p50k_edit;
//   offsets        == the running sum of tiktoken's token byte lengths;
//   decode         decode(encode(x)) == x, and random id lists (special ids included, with and
//                  without --skip-special-tokens) decode as tiktoken's bytes through UTF-8 with
//                  replacement;
//   spellings      Python tiktoken 0.6-0.7 and >= 0.8 rewrote the split patterns for speed; the
//                  package's Rust engine runs those spellings too, and their ids must equal ours;
//   counts         CollabLLM's token counts on a few conversations through the C API
//                  (tests/test_tiktoken.c): v1's reward (candidate + future joined by "\n"), v2's
//                  token_amount (assistant messages joined by " "), v1's evaluation counts.
//
// Fixtures (tests/data/tiktoken/, compared here, rewritten with --write-fixtures):
//   small.tiktoken           256 bytes + BPE merges trained here + a few designed tokens
//   small_expected.jsonl     tiktoken's ids for small.tiktoken under cl100k_base's and r50k_base's
//                            patterns and special tokens (new Tiktoken(ranks, specials, pattern))
//   encodings.json           each encoding's pattern and special tokens, as the package defines them
//   cl100k_expected.jsonl    real cl100k_base ids of a few dozen strings
//   cl100k_counts.jsonl      the conversations and CollabLLM's counts of them
"use strict";
const fs = require("fs");
const path = require("path");
const cp = require("child_process");
const crypto = require("crypto");
const { Tiktoken, get_encoding } = require("tiktoken");

const PACKAGE = path.dirname(require.resolve("tiktoken"));
const REGISTRY = JSON.parse(fs.readFileSync(path.join(PACKAGE, "registry.json"), "utf8"));
const ENCODINGS = ["cl100k_base", "r50k_base", "p50k_base", "p50k_edit"];
const RANK_FILES = { cl100k_base: "cl100k_base", r50k_base: "r50k_base", p50k_base: "p50k_base", p50k_edit: "p50k_base" };
// expected_hash of each published file in tiktoken_ext/openai_public.py (openai/tiktoken)
const OPENAI_SHA256 = {
    cl100k_base: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    r50k_base: "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    p50k_base: "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
};
// How Python tiktoken spells the patterns since 0.6.0 and since 0.8.0 (tiktoken_ext/openai_public.py).
const SPELLINGS = {
    cl100k_base: {
        "tiktoken 0.6-0.7": String.raw`'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`,
        "tiktoken >= 0.8": String.raw`'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`,
    },
    r50k_base: {
        "tiktoken 0.6-0.7": String.raw`'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
        "tiktoken >= 0.8": String.raw`'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`,
    },
};
// Strings for what the shared corpus has few of: whitespace that ends the text (where the
// spellings differ as regexes), long digit runs, contractions in odd cases, special-token text.
const EXTRA = [
    "x\n  ", "x\n\n  ", "a \n\t", "def f():\n    ", "\n    \n  ", "end\r\n \t", "  ", "\t\t", " \u3000\n ", "x \n",
    "trailing\n\n\n", "tabs\t\n\t", "1234567", "12 345 6789", "0.000001", "1e10", "٣٤٥٦٧", "9999999999999999999",
    "'S", "'Ll", "'ſ", "I'M", "they'RE", "we'Ve", "it'd've", "🧑‍💻", "🏳️‍🌈", "<|endoftext|>",
    "<|fim_prefix|>a<|fim_middle|>b<|fim_suffix|>", "<|endofprompt|>", "aaaa", "aaaaaaa", "abababab", "qxj", " qxj",
    "qxjq", "for (int i = 0; i < n; i++) {\n\t\tx += i;\n}\n", "    return x  \n", "Ünïcödé\u00a0spaces\u2009thin",
    "ﬀ ﬁ ﬂ", "𝔸𝔹ℂ", "a".repeat(2000), " ".repeat(300) + "y", "\n".repeat(50), "🎉".repeat(100),
];

function toRankFile(encoder) {
    const lines = [];
    for (const line of encoder.bpe_ranks.split("\n")) {     // "! FIRST_RANK tok tok ...": consecutive ranks
        const fields = line.split(" ");
        if (fields[0] !== "!") throw new Error("unexpected bpe_ranks layout in the tiktoken package");
        let rank = Number(fields[1]);
        for (const token of fields.slice(2)) lines.push(`${token} ${rank++}`);
    }
    return lines.join("\n") + "\n";
}

const sha256 = (text) => crypto.createHash("sha256").update(text).digest("hex");
const writeAtomic = (file, text) => { fs.writeFileSync(file + ".tmp", text); fs.renameSync(file + ".tmp", file); };

// ---- the small rank file: bytes in GPT-2's order, then the merges of a BPE trained on a fixed
// text (crosscheck.js's trainer), then a few designed tokens -----------------------------------
const TRAINING = [
    "The assistant asks a clarifying question when the request is ambiguous, and answers at once when it is not. ",
    "Tokens are counted with cl100k_base: 1,234 tokens, 56 turns, 7.5 seconds; don't, I'm, we'll, it's, they're. ",
    "def count(text):\n    return len(text.split())\n\n\tif x == 0:\n\t\treturn None\n",
    "Ελληνικά, Русский, العربية, हिन्दी, 日本語のテキスト, 中文文本, 한국어, Tiếng Việt, naïve café 😀🎉 ",
    "aaaa aaa baaa abab ababab    indented\n        deeper\n\n\n",
];
const DESIGNED = ["qxj", " Qxj", "aaa", "\n\n\n\n", "<|endoftext|>"];   // reachable only whole, or by merges

function smallRankFile(trainBPE, B2U) {
    const byteOf = new Map(B2U.map((ch, b) => [ch, b]));
    const order = [];
    for (let b = 0x21; b <= 0x7e; b++) order.push(b);
    for (let b = 0xa1; b <= 0xac; b++) order.push(b);
    for (let b = 0xae; b <= 0xff; b++) order.push(b);
    for (let b = 0; b < 256; b++) if (!order.includes(b)) order.push(b);
    const tokens = [];
    const known = new Set();
    const add = (bytes) => { if (!known.has(bytes.toString("hex"))) { known.add(bytes.toString("hex")); tokens.push(bytes); } };
    for (const b of order) add(Buffer.from([b]));
    const texts = [];
    for (let r = 0; r < 20; r++) texts.push(...TRAINING);
    for (const [a, b] of trainBPE(texts, 230)) add(Buffer.from([...(a + b)].map((ch) => byteOf.get(ch))));
    for (const d of DESIGNED) add(Buffer.from(d, "utf8"));
    return tokens.map((t, rank) => `${t.toString("base64")} ${rank}`).join("\n") + "\n";
}

// ---- conversations for CollabLLM's counts (written for this test) -----------------------------
const words = (n, seed) => { const w = ["the", "reward", "looks", "ahead", "at", "turns", "ça", "données", "数据", "token", "42,", "ok."]; let s = []; for (let i = 0; i < n; i++) s.push(w[(i * 7 + seed) % w.length]); return s.join(" "); };
const CONVERSATIONS = [
    { candidate: 1, messages: [
        { role: "user", content: "What is the probability of two heads in three fair coin flips?" },
        { role: "assistant", content: "Do you mean exactly two heads, or at least two?" },
        { role: "user", content: "Exactly two, please." },
        { role: "assistant", content: "There are C(3,2) = 3 outcomes with exactly two heads out of 2^3 = 8, so the probability is 3/8 = 0.375." },
        { role: "user", content: "Thanks! [[TERMINATE CHAT]]" } ] },
    { candidate: 3, messages: [
        { role: "user", content: "Help me write a short note inviting my team to Friday's demo." },
        { role: "assistant", content: "Sure. Should it be formal or casual, and is there a time?" },
        { role: "user", content: "Casual, 3 pm, room B." },
        { role: "assistant", content: "Hi all,\n\nJoin us for the demo on Friday at 3 pm in room B.\nSnacks provided!\n\n— Sam  \n" },
        { role: "user", content: "Perfect.\n" } ] },
    { candidate: 1, messages: [
        { role: "system", content: "You are a careful coding assistant." },
        { role: "user", content: "Write a Python function that sums the even numbers in a list." },
        { role: "assistant", content: "```python\ndef sum_even(xs):\n    return sum(x for x in xs if x % 2 == 0)\n```\n\tTabs\tand  spaces   \n" },
        { role: "user", content: "Does it handle an empty list?  " },
        { role: "assistant", content: "Yes: sum() of an empty generator is 0.\n\n    >>> sum_even([])\n    0\n    " } ] },
    { candidate: 1, messages: [
        { role: "user", content: "Résume ce texte: « Les données ne mentent pas » 😀" },
        { role: "assistant", content: words(2000, 3) },
        { role: "user", content: "<|endoftext|> is just text here; 日本語も。" },
        { role: "assistant", content: "D'accord — I'M on it: 1234567 items, it's fine.\r\n" } ] },
];

function countsOf(enc, conv) {
    const n = (text) => enc.encode_ordinary(text).length;
    const contents = conv.messages.map((m) => m.content);
    const of = (role) => conv.messages.filter((m) => m.role === role).map((m) => m.content);
    return {
        v1_reward: n(contents.slice(conv.candidate).join("\n")),      // v1: candidate + future, both roles, "\n"
        v2_token_amount: n(of("assistant").join(" ")),                  // v2: assistant messages of the session, " "
        v1_eval_assistant: n(of("assistant").map((c) => c + " ").join("")),   // v1 TokenAmount: each message + " "
        v1_eval_user: n(of("user").map((c) => c + " ").join("")),
    };
}

module.exports = async function checkTiktoken(ctx) {
    const { CORPUS, FIXED, ROOT, BUILD, WORK, WRITE, runTool, fail, show, cache, trainBPE, B2U } = ctx;
    const DATA = path.join(ROOT, "tests", "data", "tiktoken");
    const dir = path.join(WORK, "tiktoken");
    const cacheDir = path.join(cache, "tiktoken");
    fs.mkdirSync(dir, { recursive: true });
    fs.mkdirSync(cacheDir, { recursive: true });
    const results = [];

    // the published rank files, rebuilt from the package
    const encoder = {};
    for (const name of ["cl100k_base", "r50k_base", "p50k_base"]) {
        encoder[name] = JSON.parse(fs.readFileSync(path.join(PACKAGE, "encoders", name + ".json"), "utf8"));
        const text = toRankFile(encoder[name]);
        const h = sha256(text);
        if (h !== OPENAI_SHA256[name]) fail(`tiktoken: ${name}.tiktoken rebuilt from the package has SHA-256 ${h}, OpenAI's file ${OPENAI_SHA256[name]}`);
        writeAtomic(path.join(cacheDir, name + ".tiktoken"), text);
        writeAtomic(path.join(dir, name + ".tiktoken"), text);
    }
    fs.copyFileSync(path.join(dir, "p50k_base.tiktoken"), path.join(dir, "p50k_edit.tiktoken"));
    console.log(`tiktoken: cl100k_base, r50k_base, p50k_base rebuilt from npm tiktoken; SHA-256 == OpenAI's published files`);

    const strings = CORPUS.concat(EXTRA);
    for (const name of ENCODINGS) {
        const enc = get_encoding(name);
        const file = path.join(dir, name + ".tiktoken");
        const ours = runTool(["tokenize", "--tokenizer", file, "--offsets"], strings.map((t) => ({ text: t })));
        let okIds = 0, okOffsets = 0;
        const refIds = [];
        for (let i = 0; i < strings.length; i++) {
            const ids = Array.from(enc.encode_ordinary(strings[i]));
            refIds.push(ids);
            if (JSON.stringify(ids) === JSON.stringify(ours[i].ids)) okIds++;
            else fail(`tiktoken ${name}: ids differ on ${show(strings[i])}\n      ours ${JSON.stringify(ours[i].ids).slice(0, 200)}\n      tiktoken ${JSON.stringify(ids).slice(0, 200)}`);
            const offsets = [];
            let at = 0;
            for (const id of ids) { const l = enc.decode_single_token_bytes(id).length; offsets.push(at, at + l); at += l; }
            if (JSON.stringify(offsets) === JSON.stringify(ours[i].offsets)) okOffsets++;
            else fail(`tiktoken ${name}: offsets differ on ${show(strings[i])}`);
        }
        const back = runTool(["detokenize", "--tokenizer", file], ours.map((o) => ({ ids: o.ids })));
        const okRound = back.filter((b, i) => b.text === strings[i]).length;
        if (okRound !== strings.length) fail(`tiktoken ${name}: decode(encode(x)) != x on ${strings.length - okRound} strings`);
        // random id lists: mergeable ids (split UTF-8 included) and special ids
        const specials = Object.values(REGISTRY[name].special_tokens);
        const nRanks = name === "cl100k_base" ? 100256 : name === "r50k_base" ? 50256 : 50281;
        let seed = 7;
        const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
        const lists = [];
        for (let k = 0; k < 300; k++) {
            const l = [];
            for (let j = rnd(12); j > 0; j--) {
                let id = rnd(nRanks);
                if (specials.includes(id)) id = 0;
                l.push(rnd(10) === 0 ? specials[rnd(specials.length)] : id);
            }
            lists.push(l);
        }
        const utf8 = new TextDecoder("utf-8");
        let okDecode = 0;
        for (const skip of [false, true]) {
            const got = runTool(["detokenize", "--tokenizer", file].concat(skip ? ["--skip-special-tokens"] : []), lists.map((ids) => ({ ids })));
            lists.forEach((l, k) => {
                const kept = skip ? l.filter((id) => !specials.includes(id)) : l;
                const want = utf8.decode(enc.decode(Uint32Array.from(kept)));
                if (got[k].text === want) okDecode++;
                else fail(`tiktoken ${name}: decode(${JSON.stringify(l)}, skip=${skip}) ours ${show(got[k].text)} tiktoken ${show(want)}`);
            });
        }
        // Python tiktoken's later spellings of the pattern, run by the same engine
        const spellings = [];
        for (const [label, pattern] of Object.entries(SPELLINGS[name === "cl100k_base" ? name : "r50k_base"])) {
            const respelled = new Tiktoken(encoder[RANK_FILES[name]].bpe_ranks, REGISTRY[name].special_tokens, pattern);
            let same = 0;
            strings.forEach((s, i) => {
                const ids = Array.from(respelled.encode_ordinary(s));
                if (JSON.stringify(ids) === JSON.stringify(ours[i].ids)) same++;
                else fail(`tiktoken ${name} as ${label} spells its pattern: ids differ on ${show(s)}`);
            });
            respelled.free();
            spellings.push(`${label} ${same}/${strings.length}`);
        }
        enc.free();
        const N = strings.length;
        console.log(`tiktoken ${name.padEnd(12)} ids ${okIds}/${N}  offsets ${okOffsets}/${N}  decode(encode(x))==x ${okRound}/${N}  ` +
                    `decode(random ids) ${okDecode}/${2 * lists.length}` + (spellings.length ? `  pattern spellings: ${spellings.join(", ")}` : ""));
        results.push({ name, N, okIds, okOffsets, okRound, okDecode, nDecode: 2 * lists.length, spellings });
    }

    // fixtures for `make test`
    const fixtures = {};
    const small = smallRankFile(trainBPE, B2U);
    fixtures["small.tiktoken"] = small;
    const smallStrings = FIXED.concat(EXTRA.filter((s) => s.length < 1000), CORPUS.slice(FIXED.length, FIXED.length + 30));
    const smallEnc = {};
    for (const name of ["cl100k_base", "r50k_base"]) smallEnc[name] = new Tiktoken(small, REGISTRY[name].special_tokens, REGISTRY[name].pat_str);
    fixtures["small_expected.jsonl"] = smallStrings.map((text) => JSON.stringify({
        text, cl100k_base: Array.from(smallEnc.cl100k_base.encode_ordinary(text)), r50k_base: Array.from(smallEnc.r50k_base.encode_ordinary(text)),
    })).join("\n") + "\n";
    for (const e of Object.values(smallEnc)) e.free();
    const encodings = {};
    for (const name of ENCODINGS) encodings[name] = { pat_str: REGISTRY[name].pat_str, special_tokens: REGISTRY[name].special_tokens };
    fixtures["encodings.json"] = JSON.stringify(encodings, null, 1) + "\n";
    const cl100k = get_encoding("cl100k_base");
    fixtures["cl100k_expected.jsonl"] = FIXED.slice(0, 40).concat(EXTRA.filter((s) => s.length < 100)).map((text) =>
        JSON.stringify({ text, ids: Array.from(cl100k.encode_ordinary(text)) })).join("\n") + "\n";
    fixtures["cl100k_counts.jsonl"] = CONVERSATIONS.map((c) => JSON.stringify({ ...c, ...countsOf(cl100k, c) })).join("\n") + "\n";
    cl100k.free();
    fs.mkdirSync(DATA, { recursive: true });
    for (const [file, text] of Object.entries(fixtures)) {
        const target = path.join(DATA, file);
        const same = fs.existsSync(target) && fs.readFileSync(target, "utf8") === text;
        if (WRITE) writeAtomic(target, text);
        else if (!same) fail(`tiktoken: tests/data/tiktoken/${file} differs from what npm tiktoken gives now (FIXTURES=1 rewrites it)`);
    }
    if (WRITE) console.log("wrote tests/data/tiktoken/");

    // CollabLLM's counts through the C API, and the real cl100k_base fixture, in the test program
    const test = cp.spawnSync(path.join(BUILD, "test_tiktoken"), [], { cwd: ROOT, encoding: "utf8", env: { ...process.env, COLLABLLM_NPM_CACHE: cache } });
    const realChecked = /cl100k_base \(OpenAI's file\)/.test(test.stdout);
    if (test.status !== 0 || !realChecked) fail(`tiktoken: ${BUILD}/test_tiktoken with the real cl100k_base failed (status ${test.status}):\n${test.stdout.split("\n").filter((l) => /FAIL/.test(l)).join("\n")}${test.stderr}`);
    const counts = (test.stdout.match(/^.*CollabLLM's counts.*$/m) || ["(no count line)"])[0].trim();
    console.log(`tiktoken: test_tiktoken on OpenAI's cl100k_base: ${test.status === 0 && realChecked ? "OK" : "FAILED"}; ${counts}`);
    return results;
};
