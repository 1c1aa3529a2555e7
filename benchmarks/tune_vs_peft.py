"""Prompt-tuning throughput: skill_lens vs PEFT's PromptTuningConfig on SmolLM2-135M.

Same Hugging Face weights, same batches (16 Rotten Tomatoes reviews), same 8-token prompt, same
classification loss over the label words. PEFT puts the prompt before the input, so every step runs
forward and backward through every position. skill_lens puts it after the input of a causal model:
before the first step it computes the training inputs' keys/values once, without autograd, in
length-sorted batches (:meth:`skill_lens.prompting.input_cache.InputCache.fill`), and every step then runs only
the prompt positions against them. Three things are timed alternately in one run:

- ``peft``: a PEFT step;
- ``fill``: the batched input pass over 64 new examples, reported per 16 (one step's share);
- ``warm``: a skill_lens step on stored inputs (every step is one now).

A first-epoch step costs its share of the fill plus a warm step. ``speedup`` is PEFT's time over
ours for the issue's whole tuning run: 150 steps of 16 over 400 training examples (the fill of 400
inputs plus 150 warm steps; ``--steps-total`` and ``--train-size`` change that); ``first`` is the
per-step speed-up in the first epoch, ``warm`` after it.

The floor is the prompt-only step: forward and backward of 8 positions per example through all 30
layers, attending to the stored keys/values. Backward needs no weight gradients (the model is
frozen), so the step is about two prompt-length forwards; PEFT's step is the same work for the 8
prompt positions plus every input position. A warm step spends about two thirds of its time in the
linear layers' matrix multiplies, at the ~110 GFLOP/s these [128, 576] shapes get from float32 on
this CPU (the input pass gets the same rate); the rest is the element-wise work of eager PyTorch
(normalization, rotary embedding, SiLU) on [16, 8, 576] tensors, which PEFT's eager step pays too.
What skill_lens added on top of that is gone: a step has no hook on it, so it runs the plain Hugging
Face model, the same modules as PEFT's, sharing the bridge's weights (:func:`skill_lens.model.fast_path.plain_model`;
the bridge's wrappers around every component cost 5-7% of a step); attention runs at SDPA speed with
grouped heads folded, not copied; and a step assembles its stored inputs with one copy per example,
handed to the cache as they are. Measured alone on 2 CPU cores (Dec 2026): ``speedup`` 4.66 and 4.67,
``first`` 2.35 and 2.41, ``warm`` 5.79 and 5.75 (PEFT 4.7 to 5.1 s per step in that slow hour); with
one more copy of the stored inputs per step, six runs gave 4.50 to 4.68, and seven before the plain
model 4.31 to 4.79 (median 4.48). The alternating measurement does not cancel all of this machine's
run-to-run noise (a few percent either way).
What remains above the floor is eager PyTorch's element-wise work, which only fused kernels (a
compiler) would remove. A second tuning on the same task (another seed or learning rate, through a
:class:`~skill_lens.workflow.runs.Run`) reads its inputs from disk and runs at the ``warm`` speed-up throughout.

    python benchmarks/tune_vs_peft.py [--rounds 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from skill_lens.prompting.input_cache import InputCache
from skill_lens.model.loading import load_model
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.data.sources import load_task
from skill_lens.prompting.evaluation import prompted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8,
                    help="each round: PEFT and warm steps alternately, then one fill; medians over all rounds")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--prompt-length", type=int, default=8)
    ap.add_argument("--train-size", type=int, default=400, help="the tuning run's training examples")
    ap.add_argument("--steps-total", type=int, default=150, help="the tuning run the speed-up is computed for")
    args = ap.parse_args()
    torch.manual_seed(0)

    fill_n, warm_n = 64, args.batch_size * args.steps * args.rounds  # new inputs per fill; the warm steps' inputs
    task = load_task("rotten_tomatoes", train_size=warm_n + fill_n * args.rounds, dev_size=50, test_size=50)
    bridge = load_model("smollm2-135m")
    P, B = args.prompt_length, args.batch_size
    pm = prompted(bridge, task, SoftPrompt.init(bridge, P, seed=0))
    ours_opt = torch.optim.AdamW([pm.prompt.embedding], lr=0.03)

    # PEFT on a separate copy of the same weights (the bridge wraps its HF modules in hooks).
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from skill_lens.model.sources import model_source

    hf = AutoModelForCausalLM.from_pretrained(model_source("smollm2-135m"), dtype=torch.float32).eval()
    peft_model = get_peft_model(hf, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=P))
    peft_opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=0.03)
    tok = bridge.tokenizer
    label_ids = list(pm.verbalizer.token_ids)

    batches = [list(range(i, i + B)) for i in range(0, len(task.train) - B + 1, B)]
    labels = torch.tensor(task.train.labels)

    cache = InputCache()
    cache.fill(pm, task.train.subset(range(warm_n)))  # the inputs of the warm steps
    unseen = iter(range(warm_n, len(task.train), fill_n))

    def ours_step(idx):
        batch = pm.encode([task.train.texts[i] for i in idx])
        logits = pm.label_logits(batch, input_cache=cache)
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        ours_opt.zero_grad()
        loss.backward()
        ours_opt.step()

    def fill_step(_idx):
        start = next(unseen)
        InputCache().fill(pm, task.train.subset(range(start, start + fill_n)))  # a fresh cache: all new inputs

    def peft_step(idx):
        enc = tok([task.train.texts[i] for i in idx], return_tensors="pt", padding=True, padding_side="left")
        out = peft_model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        logits = out.logits[:, -1, label_ids]
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        peft_opt.zero_grad()
        loss.backward()
        peft_opt.step()

    times = {"peft": [], "fill": [], "warm": []}
    k = 0
    for r in range(args.rounds):
        kinds = [("peft", peft_step), ("warm", ours_step)]
        for _ in range(args.steps):
            idx = batches[k % len(batches)]
            k += 1
            for name, step in kinds if (r + k) % 2 == 0 else kinds[::-1]:
                t0 = time.perf_counter()
                step(idx)
                times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fill_step(None)
        times["fill"].append((time.perf_counter() - t0) * B / fill_n)  # one step's share
        print(f"round {r + 1}: " + ", ".join(f"{n} {statistics.median(t):.2f} s/step" for n, t in times.items()),
              flush=True)
    peft_s, fill_s, warm_s = (statistics.median(times[n]) for n in ("peft", "fill", "warm"))
    per_epoch = args.train_size / B  # the fill covers the training split once
    ours_run = per_epoch * fill_s + args.steps_total * warm_s
    print(f"median seconds per step (batch {B}, prompt {P}): PEFT {peft_s:.3f}; skill_lens {warm_s:.3f} "
          f"plus {fill_s:.3f} in the first epoch (its share of the batched input pass)")
    print(f"a {args.steps_total}-step run over {args.train_size} examples: PEFT {args.steps_total * peft_s:.0f} s, "
          f"skill_lens {ours_run:.0f} s (input pass {per_epoch * fill_s:.0f} s)")
    print(f"RESULT speedup={args.steps_total * peft_s / ours_run:.2f} first={peft_s / (fill_s + warm_s):.2f} "
          f"warm={peft_s / warm_s:.2f} peft_s_per_step={peft_s:.3f} fill_s_per_step={fill_s:.3f}")

if __name__ == "__main__":
    main()
