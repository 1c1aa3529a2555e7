"""Cost of the probe's capture hooks: probe forward passes vs bare forward passes over the same batches.

SmolLM2-135M with an 8-token prompt on a small rotten_tomatoes sample. One "probe" repeat is the
whole ``probe(...)`` call (train pass + dev pass: encoding, forward with the capture hooks on all
30 FFN layers, float64 accumulation); one "bare" repeat encodes and runs the same batches through
``pm.label_logits`` with the prompt hook only. Repeats alternate; medians are compared.

A third repeat, "null", is the same probe with ``permutations=200`` (the permutation null):
``null_overhead`` is its time over the plain probe's.

    python benchmarks/probe_overhead.py        -> last line: RESULT overhead=X (target <= 1.15) ... null_overhead=Y
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("SKILL_LENS_QUIET", "1")

import torch  # noqa: E402

from skill_lens.model.loading import load_model  # noqa: E402
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import SoftPrompt  # noqa: E402
from skill_lens.data.sources import load_task
from skill_lens.prompting.evaluation import prompted

N, BATCH, REPEATS = 32, 16, 5  # N train + N dev examples per repeat


def bare(pm, task) -> None:
    with torch.no_grad():
        for split in (task.train, task.dev):
            for s in range(0, len(split), BATCH):
                pm.label_logits(pm.encode(split.texts[s : s + BATCH]))


def main() -> None:
    model = load_model("smollm2-135m")
    task = load_task("rotten_tomatoes", train_size=N, dev_size=N, test_size=8, seed=0)
    pm = prompted(model, task, SoftPrompt.init(model, 8))
    bare(pm, task)  # warm-up
    times = {"bare": [], "probe": [], "null": []}
    for r in range(REPEATS):
        for name in (("bare", "probe", "null") if r % 2 == 0 else ("null", "probe", "bare")):
            t0 = time.perf_counter()
            if name == "bare":
                bare(pm, task)
            else:
                probe(pm, task, batch_size=BATCH, splits=("dev",), permutations=200 if name == "null" else 0)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k}: median {med[k]:.2f} s over {REPEATS} repeats ({', '.join(f'{t:.2f}' for t in v)})")
    print(f"RESULT overhead={med['probe'] / med['bare']:.3f} probe_s={med['probe']:.2f} bare_s={med['bare']:.2f} "
          f"null_overhead={med['null'] / med['probe']:.3f}")


if __name__ == "__main__":
    main()
