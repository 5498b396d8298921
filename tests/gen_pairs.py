#!/usr/bin/python3
"""Expected SFT rows and DPO pairs for tests/test_pairs.c, by CollabLLM's own rules.

Run from the repository root with Debian's python (standard library only):

    /usr/bin/python3 tests/gen_pairs.py

It (re)writes tests/data/pairs/. The inputs are hand-built here; the selection re-implements, from
their description, the pair building of microsoft/CollabLLM:

  v2 (commit 09e5b25, collabllm/datasets/multiturn.py, MultiturnDataset):
    to_sft_dataset: scan the rows in file order; per conv_id keep a row when none is kept yet, or
      its turn_id is higher, or the turn_id is equal and the score strictly higher. Output in the
      order conv_ids first appear: [system?] + prompt + [assistant completion].
    to_dpo_dataset: group rows by (conv_id, turn_id) in order of first appearance; skip groups of
      fewer than 2; sort the group by score, descending, stably (Python's sorted); skip when
      first.score - last.score < minimum_gap; else prompt = [system?] + first.prompt,
      chosen = first.completion, rejected = last.completion (strings), score_chosen/rejected.
      So chosen is the first row of maximum score and rejected the last row of minimum score.
  v1 (commit c41bc29):
    scripts/generate_conv_dpo.py, per turn: with rewards r, if argmax(r) == argmin(r) (all equal)
      the chosen response is the one of smallest reward_std and the rejected one of largest
      (np.argmin/argmax: first index), else chosen = argmax, rejected = argmin; chosen_eval and
      rejected_eval are the logs of argmax(r) and argmin(r) in both cases.
    collabllm/datasets/__init__.py filter_dpo: keep a row when
      chosen_eval.reward - rejected_eval.reward >= minimum_gap.
    load_dpo_dataset(to_sft_dataset=True): per idx (ascending, np.unique) the row with the longest
      prompt (the first on ties), [system] + prompt + [assistant chosen].

One rule of collabllm.h that CollabLLM's data never meets: a row whose score is null (every MR
sample failed) takes no part. Such rows are dropped here before the rules above run. For rows
built from records, v1's reward_std is the population standard deviation (np.std) of rewards.MR.
"""
import json
import math
import os

OUT = "tests/data/pairs"
SYS = "Be brief."


def user(text):
    return {"role": "user", "content": text}


def asst(text):
    return {"role": "assistant", "content": text}


def flat_row(conv, prompt, completion, score, mr, turn_id=True):
    row = {"prompt": prompt, "completion": completion, "conv_id": conv, "score": score,
           "single_turn_prompt": "task %d" % conv, "single_turn_completion": "answer %d" % conv,
           "single_turn_metadata": {}}
    if turn_id:
        row["turn_id"] = len(prompt)
    row["rewards"] = {"MR": mr}
    return row


Q, R = [user("q")], [user("r")]
Q3 = [user("q"), asst("c1"), user("q2")]
R3 = [user("r"), asst("e2"), user("r2")]
FLAT = [
    flat_row(7, Q, "c1", 0.70, [0.7, 0.7]),
    flat_row(7, Q, "c2", 0.70, [0.6, 0.8]),
    flat_row(2, R, "e1", 0.50, [0.2, 0.8], turn_id=False),    # turn_id absent: len(prompt)
    flat_row(7, Q, "c3", 0.10, [0.1, 0.1]),
    flat_row(2, R, "e2", 0.50, [0.5, 0.5]),
    flat_row(7, Q, "c4", 0.10, [0.0, 0.2]),
    flat_row(7, Q3, "d1", 0.30, [0.3, 0.3]),
    flat_row(7, Q3, "d2", 0.31, [0.31, 0.31]),
    flat_row(2, R3, "f1", None, [None, None]),                 # failed MR: takes no part
    flat_row(2, R3, "f2", 0.55, [0.5, 0.6]),
    flat_row(2, R3, "f3", 0.50, [0.5, 0.5]),                   # 0.55 - 0.50 = 0.05000000000000004
    flat_row(9, [user("s")], "g1", 0.20, [0.2, 0.2]),          # alone in its turn: no pair
    flat_row(4, [user("t")], "h1", 0.30, [0.3, 0.3]),
    flat_row(4, [user("t")], "h2", 0.30, [0.3, 0.3]),          # full tie, equal stds
    flat_row(7, Q, "c5", 0.05, [0.05, 0.05]),                  # joins (7, 1) late: its last minimum
]


def v1_row(idx, prompt, chosen, rejected, r_chosen, r_rejected):
    def ev(r):
        return {"reward": r, "reward_std": 0.1, "llm_rw_avg": 0.5, "llm_rw_std": 0.0, "token_cost_avg": 0.01,
                "token_cost_std": 0.0, "task_metric_avg": r, "task_metric_std": 0.1, "rs": {}, "length_avg": 20.0}
    return {"idx": idx, "prompt": prompt, "chosen": chosen, "rejected": rejected, "chosen_eval": ev(r_chosen),
            "rejected_eval": ev(r_rejected), "metadata": {"user": "sim", "assistant": "cand"}}


V1 = [
    v1_row(3, [user("a")], "a-yes", "a-no", 0.55, 0.50),                            # gap 0.05000000000000004
    v1_row(3, [user("a"), asst("a-yes"), user("b")], "b-yes", "b-no", 0.52, 0.50),  # gap 0.02
    v1_row(3, [user("a"), asst("a-yes"), user("c")], "c-yes", "c-no", 0.90, 0.10),  # as long: the first wins SFT
    v1_row(1, [user("x")], "x-one", "x-two", 0.40, 0.40),                           # a tie: gap 0
    v1_row(1, [user("x"), asst("x-one"), user("y")], "y-yes", "y-no", 0.80, 0.50),
]


def scored(rows):
    return [r for r in rows if r["score"] is not None]


def turn_id(r):
    return r.get("turn_id", len(r["prompt"]))


def sysmsg(system):
    return [{"role": "system", "content": system}] if system else []


def v2_sft(rows, system):
    best = {}
    for r in scored(rows):
        p = best.get(r["conv_id"])
        if p is None or turn_id(r) > turn_id(p) or (turn_id(r) == turn_id(p) and r["score"] > p["score"]):
            best[r["conv_id"]] = r
    return [{"messages": sysmsg(system) + r["prompt"] + [asst(r["completion"])]} for r in best.values()]


def groups(rows):
    g = {}
    for r in scored(rows):
        g.setdefault((r["conv_id"], turn_id(r)), []).append(r)
    return g


def v2_dpo(rows, gap, system):
    out = []
    for items in groups(rows).values():
        if len(items) < 2:
            continue
        items = sorted(items, key=lambda r: r["score"], reverse=True)
        if items[0]["score"] - items[-1]["score"] < gap:
            continue
        out.append({"prompt": sysmsg(system) + items[0]["prompt"], "chosen": items[0]["completion"],
                    "rejected": items[-1]["completion"], "score_chosen": items[0]["score"],
                    "score_rejected": items[-1]["score"]})
    return out


def pstd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def first_arg(xs, better):
    k = 0
    for i, x in enumerate(xs):
        if better(x, xs[k]):
            k = i
    return k


def v1_rows_from_flat(rows):
    """v1's per-turn choice on each (conv_id, turn_id) group of 2 or more scored rows, unfiltered."""
    out = []
    for items in groups(rows).values():
        if len(items) < 2:
            continue
        r = [x["score"] for x in items]
        stds = [pstd(x["rewards"]["MR"]) for x in items]
        hi = first_arg(r, lambda a, b: a > b)
        lo = first_arg(r, lambda a, b: a < b)
        if hi == lo:
            pos, neg = first_arg(stds, lambda a, b: a < b), first_arg(stds, lambda a, b: a > b)
        else:
            pos, neg = hi, lo
        out.append({"idx": items[0]["conv_id"], "prompt": items[0]["prompt"], "chosen": items[pos]["completion"],
                    "rejected": items[neg]["completion"],
                    "chosen_eval": {"reward": r[hi], "reward_std": stds[hi]},
                    "rejected_eval": {"reward": r[lo], "reward_std": stds[lo]}})
    return out


def v1_filter(rows, gap):
    return [r for r in rows if r["chosen_eval"]["reward"] - r["rejected_eval"]["reward"] >= gap]


def v1_sft(rows, system):
    out = []
    for i in sorted(set(r["idx"] for r in rows)):
        subset = [r for r in rows if r["idx"] == i]
        best = max(subset, key=lambda r: len(r["prompt"]))
        out.append({"messages": sysmsg(system) + best["prompt"] + [asst(best["chosen"])]})
    return out


def v1_as_v2(rows, system):
    return [{"prompt": sysmsg(system) + r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
             "score_chosen": r["chosen_eval"]["reward"], "score_rejected": r["rejected_eval"]["reward"]} for r in rows]


def write(name, rows):
    with open(os.path.join(OUT, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    write("flat.jsonl", FLAT)
    write("v1_rows.jsonl", V1)
    # the cases of tests/test_pairs.c: input, rules, gap, system prompt -> expected files
    write("a_sft.jsonl", v2_sft(FLAT, None))
    write("a_dpo.jsonl", v2_dpo(FLAT, 0.0, None))            # v2 rules, gap 0
    write("b_sft.jsonl", v2_sft(FLAT, SYS))
    write("b_dpo.jsonl", v2_dpo(FLAT, 0.02, SYS))            # v2 rules, gap 0.02, a system prompt
    write("c_dpo.jsonl", v2_dpo(FLAT, 0.05, None))           # v2 rules, gap 0.05
    d = v1_rows_from_flat(FLAT)
    write("d_dpo.jsonl", v1_filter(d, 0.0))                  # v1 rules on records, v1 rows, gap 0
    write("d_sft.jsonl", v1_sft(d, None))
    write("e_dpo.jsonl", v1_filter(V1, 0.02))                # v1 rows in, v1 rows out, gap 0.02
    write("e_sft.jsonl", v1_sft(V1, SYS))
    write("f_dpo.jsonl", v1_as_v2(v1_filter(V1, 0.05), SYS))  # v1 rows in, v2 rows out, gap 0.05


if __name__ == "__main__":
    main()
