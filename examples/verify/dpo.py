"""dpo.py - the DPO numbers of a batch of pairs, collabllm dpo-eval against TRL's DPOTrainer semantics.

collabllm side:  build/collabllm dpo-eval --model POLICY --ref REF --tokenizer TOK --data PAIRS.jsonl
                 --out OUT.jsonl --with-ids     (per pair: logps, reference logps, rewards, margin, loss)
Python side:     TRL v0.19's concatenated_forward (summed completion log-probs, labels shifted by one) for the
                 policy and the reference, then dpo_loss with loss_type="sigmoid":
                 loss = -log sigmoid(beta ((pc - rc) - (pr - rr))), rewards = beta (pc - rc), beta (pr - rr).
                 The token ids come from collabllm (--with-ids); that they equal TRL's tokenization is checked
                 separately (make crosscheck, data_fmt/train.md).
Tolerance:       1e-5 relative on log-probs and rewards (float32 forward), 1e-5 on the loss.
With no --policy, the recipe first trains one for two DPO steps from --ref, so that policy and reference differ.
Run from the repository root: /usr/bin/python3 examples/verify/dpo.py  (data_fmt/verify.md)."""
import json
import os
import tempfile

import torch
import torch.nn.functional as F

from hf_ref import Checker, arguments, collabllm, forward, load_model, pad_right, sequence_logps, token_logps

args = arguments(__doc__, ["sign", "mean", "shift"], policy="", ref="tests/data/train/tiny_qwen2",
                 tokenizer="tests/data/tokenizers/qwen2_style", pairs="data_fmt/train_dpo.example.jsonl", beta="0.1")
beta = float(args.beta)
tmp_dir = tempfile.TemporaryDirectory()          # removed when the script ends
tmp = tmp_dir.name
policy = args.policy
if not policy:
    collabllm("dpo", "--model", args.ref, "--tokenizer", args.tokenizer, "--data", args.pairs, "--out",
              os.path.join(tmp, "run"), "--max-steps", 2, "--lr", "1e-3", "--batch-size", 2, "--quiet")
    policy = os.path.join(tmp, "run", "final")
out = os.path.join(tmp, "eval.jsonl")
summary = json.loads(collabllm("dpo-eval", "--model", policy, "--ref", args.ref, "--tokenizer", args.tokenizer,
                               "--data", args.pairs, "--out", out, "--beta", beta, "--with-ids"))
with open(out) as f:
    ours = [json.loads(line) for line in f]

def completion_logps(model_dir, side):
    """TRL's summed log-probs of one side of every pair (HF forward, right padding, shifted labels)."""
    model = load_model(model_dir)       # transformers: AutoModelForCausalLM.from_pretrained(..., torch.float64)
    ids, mask, labels = pad_right(ours, side + "_input_ids", side + "_labels")
    with torch.no_grad():
        tok = token_logps(forward(model, ids, mask), labels, args.inject)
    return sequence_logps(tok, labels, args.inject)


pc, pr = completion_logps(policy, "chosen"), completion_logps(policy, "rejected")
rc, rr = completion_logps(args.ref, "chosen"), completion_logps(args.ref, "rejected")
z = (pc - rc) - (pr - rr)
if args.inject == "sign":
    z = -z
losses = -F.logsigmoid(beta * z)          # trl: DPOTrainer.dpo_loss(pc, pr, rc, rr) with loss_type="sigmoid"
chosen_rewards, rejected_rewards = beta * (pc - rc), beta * (pr - rr)

check = Checker("dpo")
check.same("chosen_logps", [r["chosen_logps"] for r in ours], pc, 1e-5, 1e-5)
check.same("rejected_logps", [r["rejected_logps"] for r in ours], pr, 1e-5, 1e-5)
check.same("ref_chosen_logps", [r["ref_chosen_logps"] for r in ours], rc, 1e-5, 1e-5)
check.same("ref_rejected_logps", [r["ref_rejected_logps"] for r in ours], rr, 1e-5, 1e-5)
check.same("chosen_rewards", [r["chosen_rewards"] for r in ours], chosen_rewards, 1e-5, 1e-6)
check.same("rejected_rewards", [r["rejected_rewards"] for r in ours], rejected_rewards, 1e-5, 1e-6)
check.same("margins", [r["margins"] for r in ours], chosen_rewards - rejected_rewards, 1e-5, 1e-6)
check.same("losses", [r["losses"] for r in ours], losses, 1e-5, 1e-6)
check.same("eval_loss", summary["eval_loss"], losses.mean(), 1e-5, 1e-6)
check.same("eval_rewards/accuracies", summary["eval_rewards/accuracies"],
           (chosen_rewards > rejected_rewards).double().mean(), 0, 0)
check.same("eval_rewards/margins", summary["eval_rewards/margins"], (chosen_rewards - rejected_rewards).mean(), 1e-5, 1e-6)
check.done()
