"""Prompt-tuning throughput: skill_lens vs PEFT's PromptTuningConfig on SmolLM2-135M.

Same Hugging Face weights, same batches (16 Rotten Tomatoes reviews), same 8-token prompt, same
classification loss over the label words. PEFT puts the prompt before the input, so backward runs
through every position. skill_lens puts it after the input of a causal model, runs the input without
autograd, and keeps each input's keys/values (:mod:`skill_lens.kv_cache`), so a step on inputs seen
before runs only the prompt positions. Three kinds of step are timed alternately in one run:

- ``peft``: a PEFT step;
- ``first``: a skill_lens step on inputs not seen yet (computes and stores their keys/values);
- ``warm``: a skill_lens step on inputs already stored (every step after the first epoch).

``speedup`` is PEFT's time over ours for the issue's whole tuning run: 150 steps of 16 over 400
training examples, i.e. 25 first-epoch steps and 125 later ones (``steps_per_epoch`` and
``--steps-total`` change that). ``first`` and ``warm`` are also reported as per-step speed-ups.

    python benchmarks/tune_vs_peft.py [--rounds 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from skill_lens.kv_cache import InputCache
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
    ap.add_argument("--train-size", type=int, default=400)
    ap.add_argument("--steps-total", type=int, default=150, help="the tuning run the speed-up is computed for")
    args = ap.parse_args()
    torch.manual_seed(0)

    task = load_task("rotten_tomatoes", train_size=args.train_size, dev_size=50, test_size=50)
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

    cache = InputCache()

    def ours_step(idx):
        batch = pm.encode([task.train.texts[i] for i in idx])
        logits = pm.label_logits(batch, cache_input=True, input_cache=cache)
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
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

    times = {"peft": [], "first": [], "warm": []}
    k = 0
    for r in range(args.rounds):
        for _ in range(args.steps):
            idx = batches[k % len(batches)]  # `first` needs inputs not seen yet: rounds x steps <= batches
            k += 1
            kinds = [("peft", peft_step), ("first", ours_step), ("warm", ours_step)]
            for name, step in kinds if r % 2 == 0 else kinds[::-1][1:] + kinds[-1:]:
                t0 = time.perf_counter()
                step(idx)
                times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: " + ", ".join(f"{n} {statistics.median(t):.2f} s/step" for n, t in times.items()),
              flush=True)
    assert k <= len(batches), "more timed steps than batches: `first` steps would reuse inputs"
    peft_s, first_s, warm_s = (statistics.median(times[n]) for n in ("peft", "first", "warm"))
    per_epoch = -(-len(task.train) // B)
    n_first = min(per_epoch, args.steps_total)
    ours_run = n_first * first_s + (args.steps_total - n_first) * warm_s
    print(f"median seconds per step (batch {B}, prompt {P}): PEFT {peft_s:.3f}, skill_lens first epoch "
          f"{first_s:.3f}, later epochs {warm_s:.3f}")
    print(f"a {args.steps_total}-step run ({n_first} first-epoch steps): PEFT {args.steps_total * peft_s:.0f} s, "
          f"skill_lens {ours_run:.0f} s")
    print(f"RESULT speedup={args.steps_total * peft_s / ours_run:.2f} first={peft_s / first_s:.2f} "
          f"warm={peft_s / warm_s:.2f} peft_s_per_step={peft_s:.3f}")


if __name__ == "__main__":
    main()
