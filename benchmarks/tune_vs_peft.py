"""Prompt-tuning throughput: skill_lens vs PEFT's PromptTuningConfig on SmolLM2-135M.

Same Hugging Face weights, same batches (16 Rotten Tomatoes reviews), same 8-token prompt, same
classification loss over the label words. PEFT puts the prompt before the input, so backward runs
through every position; skill_lens puts it after the input of a causal model and runs the input
without autograd. The two are timed alternately, a few steps each round, and the medians compared.

    python benchmarks/tune_vs_peft.py [--rounds 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from skill_lens.models import load_model
from skill_lens.prompts import SoftPrompt
from skill_lens.tasks import load_task
from skill_lens.tuning import prompted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--prompt-length", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)

    task = load_task("rotten_tomatoes", train_size=400, dev_size=50, test_size=50)
    bridge = load_model("smollm2-135m")
    P, B = args.prompt_length, args.batch_size
    pm = prompted(bridge, task, SoftPrompt.init(bridge, P, seed=0))
    ours_opt = torch.optim.AdamW([pm.prompt.embedding], lr=0.03)

    # PEFT on a separate copy of the same weights (the bridge wraps its HF modules in hooks).
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from skill_lens.models import _offline_dir

    hf = AutoModelForCausalLM.from_pretrained(_offline_dir("smollm2-135m"), dtype=torch.float32).eval()
    peft_model = get_peft_model(hf, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=P))
    peft_opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=0.03)
    tok = bridge.tokenizer
    label_ids = list(pm.verbalizer.token_ids)

    batches = [list(range(i, i + B)) for i in range(0, len(task.train) - B + 1, B)]
    labels = torch.tensor(task.train.labels)

    def ours_step(idx):
        batch = pm.encode([task.train.texts[i] for i in idx])
        loss = torch.nn.functional.cross_entropy(pm.label_logits(batch, cache_input=True), labels[idx])
        ours_opt.zero_grad()
        loss.backward()
        ours_opt.step()

    def peft_step(idx):
        enc = tok([task.train.texts[i] for i in idx], return_tensors="pt", padding=True, padding_side="left")
        out = peft_model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        logits = out.logits[:, -1, label_ids]
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        peft_opt.zero_grad()
        loss.backward()
        peft_opt.step()

    times = {"ours": [], "peft": []}
    k = 0
    for r in range(args.rounds):
        for name, step in (("peft", peft_step), ("ours", ours_step)) if r % 2 == 0 else (("ours", ours_step), ("peft", peft_step)):
            for _ in range(args.steps):
                idx = batches[k % len(batches)]
                k += 1
                t0 = time.perf_counter()
                step(idx)
                times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: peft {statistics.median(times['peft']):.2f} s/step, "
              f"ours {statistics.median(times['ours']):.2f} s/step", flush=True)
    peft_s, ours_s = statistics.median(times["peft"]), statistics.median(times["ours"])
    print(f"median seconds per step (batch {B}, prompt {P}): PEFT {peft_s:.3f}, skill_lens {ours_s:.3f}")
    print(f"RESULT speedup={peft_s / ours_s:.2f} peft_s_per_step={peft_s:.3f} ours_s_per_step={ours_s:.3f}")


if __name__ == "__main__":
    main()
