// gen_trl_tokens.js - the token ids of DPO completions as TRL v0.19.1 builds them, computed with
// Hugging Face's own tokenizer (@anush008/tokenizers, the Rust `tokenizers` crate) and Jinja
// (@huggingface/jinja) on the committed tokenizers and their chat templates, for
// tests/test_train.c ("completion tokens: turn and trl"). Run by `make crosscheck`, with
// tests/crosscheck.sh's npm cache on NODE_PATH.
//
// Usage: node tests/gen_trl_tokens.js [--write-fixtures]
//   without the flag: regenerates in memory and fails if tests/data/train/trl_tokens.jsonl differs;
//   with it: rewrites that file.
//
// TRL's procedure (trl v0.19.1 data_utils.apply_chat_template and DPOTrainer.tokenize_row):
//   prompt     = render(prompt, add_generation_prompt=True), narrowed to its common prefix with
//                render(prompt + chosen) and with render(prompt + rejected)
//   chosen     = render(prompt + chosen)[len(prompt):]            (the same for rejected)
//   ids        = tokenize(prompt, add_special_tokens=False) ++ tokenize(chosen, add_special_tokens=False)
//                ++ [eos_token_id]; every id after the prompt's is scored.
// collabllm.h's default ("turn") scores the same conversation tokenized in one pass, targets = each
// assistant message's content and end-of-turn token. Computed here by tokenizing the rendered text
// piece by piece, cut at the start and end of each assistant message's "content + eos" (after the
// prompt); the pieces must concatenate to the one-pass ids, which is checked.
//
// Each output line: {"tokenizer", "prompt", "chosen", "rejected", and for mode in turn, trl and side
// in chosen, rejected: "<mode>_<side>": {"ids", "targets" (0/1 per id), "n_prompt"}}.
"use strict";
const fs = require("fs");
const path = require("path");
const { Tokenizer } = require("@anush008/tokenizers");
const { Template } = require("@huggingface/jinja");

const ROOT = path.resolve(__dirname, "..");
const OUT = path.join(ROOT, "tests", "data", "train", "trl_tokens.jsonl");
const WRITE = process.argv.includes("--write-fixtures");
const TOKENIZERS = ["qwen2_style", "llama3_style", "smollm2"];

const u = (content) => ({ role: "user", content });
const a = (content) => ({ role: "assistant", content });
const PAIRS = [
    { prompt: [u("What is 2 + 2?")], chosen: [a("4, because two plus two is four.")], rejected: [a("5")] },
    {
        prompt: [{ role: "system", content: "Answer briefly." }, u("Name two colours."), a("Which kind?"), u("Any.")],
        chosen: [a("  Sure:\n- red\n- blue\n")],
        rejected: [a("Ça va ? 日本語 🙂")],
    },
    { prompt: [u("Plan my trip.")], chosen: [a("Where to?"), u("Paris."), a("Pack an umbrella.")], rejected: [a("No.")] },
];

const tokName = (x) => (x && typeof x === "object" ? x.content : x);

function commonPrefix(x, y) {
    let i = 0;
    while (i < x.length && i < y.length && x[i] === y[i]) i++;
    return x.slice(0, i);
}

async function ids(tok, text) {
    return text.length ? (await tok.encode(text, null, { addSpecialTokens: false })).getIds() : [];
}

// TRL: the pair's prompt and the two completion texts, as apply_chat_template returns them
function trlTexts(render, pair) {
    const pc = render(pair.prompt.concat(pair.chosen), false), pr = render(pair.prompt.concat(pair.rejected), false);
    let prompt = commonPrefix(render(pair.prompt, true), pc);
    const chosen = pc.slice(prompt.length);
    prompt = commonPrefix(prompt, pr);
    return { prompt, chosen, rejected: pr.slice(prompt.length) };
}

async function trlSide(tok, eosId, prompt, completion) {
    const p = await ids(tok, prompt), c = (await ids(tok, completion)).concat([eosId]);
    return { ids: p.concat(c), targets: p.map(() => 0).concat(c.map(() => 1)), n_prompt: p.length };
}

async function turnSide(tok, eos, render, prompt, completion) {
    const text = render(prompt.concat(completion), false), P = render(prompt, true).length;
    const cuts = [];                                   // [start, end) of each assistant "content + eos"
    let at = P;
    for (const m of completion) {
        if (m.role !== "assistant") continue;
        let s = text.indexOf(m.content + eos, at), len = m.content.length + eos.length;
        if (s < 0) { s = text.indexOf(m.content.trim() + eos, at); len = m.content.trim().length + eos.length; }
        if (s < 0) throw new Error(`assistant message ${JSON.stringify(m.content)} + eos not found in the render`);
        cuts.push([s, s + len]);
        at = s + len;
    }
    const out = { ids: [], targets: [], n_prompt: 0 };
    let pos = 0;
    for (const [s, e] of cuts.concat([[text.length, text.length]])) {
        const before = await ids(tok, text.slice(pos, s)), inside = await ids(tok, text.slice(s, e));
        out.ids.push(...before, ...inside);
        out.targets.push(...before.map(() => 0), ...inside.map(() => 1));
        pos = e;
    }
    const whole = await ids(tok, text);
    if (JSON.stringify(whole) !== JSON.stringify(out.ids)) throw new Error("pieces do not tokenize as the whole text");
    const last = out.targets.lastIndexOf(1);           // nothing after the last end-of-turn token
    out.ids = out.ids.slice(0, last + 1);
    out.targets = out.targets.slice(0, last + 1);
    out.n_prompt = out.targets.indexOf(1);
    return out;
}

async function main() {
    const lines = [];
    for (const name of TOKENIZERS) {
        const dir = path.join(ROOT, "tests", "data", "tokenizers", name);
        const cfg = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
        const tok = Tokenizer.fromFile(path.join(dir, "tokenizer.json"));
        const eos = tokName(cfg.eos_token), eosId = tok.tokenToId(eos);
        const tmpl = new Template(cfg.chat_template);
        const render = (messages, gen) => tmpl.render({
            messages, add_generation_prompt: gen, bos_token: tokName(cfg.bos_token) || "", eos_token: eos,
            date_string: "26 Jul 2024",            // collabllm.h's pinned date (Llama-3.1 system block)
        });
        for (const pair of PAIRS) {
            const t = trlTexts(render, pair);
            const line = { tokenizer: name, prompt: pair.prompt, chosen: pair.chosen, rejected: pair.rejected };
            line.turn_chosen = await turnSide(tok, eos, render, pair.prompt, pair.chosen);
            line.turn_rejected = await turnSide(tok, eos, render, pair.prompt, pair.rejected);
            line.trl_chosen = await trlSide(tok, eosId, t.prompt, t.chosen);
            line.trl_rejected = await trlSide(tok, eosId, t.prompt, t.rejected);
            lines.push(JSON.stringify(line));
            console.log(`${name.padEnd(13)} chosen completion text ${JSON.stringify(t.chosen)} + ${eos}`);
        }
    }
    const text = lines.join("\n") + "\n";
    if (WRITE) {
        fs.writeFileSync(OUT, text);
        console.log(`wrote ${path.relative(ROOT, OUT)} (${lines.length} pairs)`);
    } else if (!fs.existsSync(OUT) || fs.readFileSync(OUT, "utf8") !== text) {
        console.log(`FAIL ${path.relative(ROOT, OUT)} differs from TRL's procedure; FIXTURES=1 make crosscheck rewrites it`);
        process.exit(1);
    } else console.log(`${path.relative(ROOT, OUT)}: TRL's completion tokens reproduced (${lines.length} pairs)`);
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
