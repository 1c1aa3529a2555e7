"""What the suppression curve's checkpoint costs: the demo's curve with its checkpoint vs without one.

The demo's curve (``skill-lens perturb``, as ``make demo`` runs it): SmolLM2-135M with an 8-token prompt, 200
rotten_tomatoes dev examples, Gaussian noise on the top 0, 1, 2, 5 and 10% of neurons against 3 random sets
each, the inputs' keys/values computed once and shared (as a run does). With a checkpoint every finished row is
appended to ``perturb_gaussian.checkpoint.safetensors.log`` and fsynced (one line; the rows before it are not
written again); without, nothing is written. The checkpoint's cost does not depend on what the prompt learned,
so the prompt is a fresh one and the scores random. The two alternate within each round, in a directory on the
same disk as the repository; medians are compared. The same on the tiny test model (``tiny_ratio``), where a
row takes milliseconds and the checkpoint's share is largest (issue 29 measured 3 to 4.5x there before rows
were appended).

    .venv/bin/python benchmarks/perturb_checkpoint.py
    -> last line: RESULT ratio=X (target < 1.10) with_s=... without_s=... tiny_ratio=...

Measured alone on 2 CPU cores (Dec 2026): the demo's curve 40.4 s with the checkpoint, 42.1 s without
(``ratio=0.959``: the appends cost less than the run-to-run noise); the tiny model 0.549 vs 0.534 s
(``tiny_ratio=1.029``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SKILL_LENS_QUIET", "1")

import torch  # noqa: E402

from skill_lens.data.sources import load_task  # noqa: E402
from skill_lens.intervening.suppression import suppression_curve  # noqa: E402
from skill_lens.prompting.input_cache import InputCache  # noqa: E402
from skill_lens.model.loading import describe, load_model  # noqa: E402
from skill_lens.model.tiny import tiny_model, tiny_task  # noqa: E402
from skill_lens.prompting.prompts import SoftPrompt  # noqa: E402
from skill_lens.prompting.evaluation import prompted  # noqa: E402

ROUNDS, TINY_ROUNDS = 2, 10  # rounds alternate which goes first


def timed(pm, split, scores, cache, where: Path | None, controls: int = 3) -> float:
    ck = None if where is None else Path(tempfile.mkdtemp(dir=where)) / "perturb_gaussian.checkpoint.safetensors"
    t0 = time.perf_counter()
    suppression_curve(pm, split, scores, method="gaussian", controls=controls, checkpoint=ck, input_cache=cache)
    return time.perf_counter() - t0


def compare(pm, split, scores, rounds: int, where: Path, controls: int = 3) -> dict[str, float]:
    cache = InputCache()
    timed(pm, split, scores, cache, None, controls)  # warm-up: the inputs' keys/values
    times = {"with": [], "without": []}
    for r in range(rounds):
        for name in (("with", "without") if r % 2 == 0 else ("without", "with")):
            times[name].append(timed(pm, split, scores, cache, where if name == "with" else None, controls))
    for k, v in times.items():
        print(f"  {k} checkpoint: median {statistics.median(v):.3f} s ({', '.join(f'{t:.3f}' for t in v)})")
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    where = Path(tempfile.mkdtemp(prefix=".perturb_checkpoint.", dir=Path(__file__).resolve().parent))
    try:
        model, task = tiny_model(), tiny_task(n_dev=64)
        print("tiny model, 64 dev examples, 10 controls:")
        tiny = compare(prompted(model, task, SoftPrompt.init(model, 2)), task.dev,
                       torch.rand(describe(model).shape, generator=torch.Generator().manual_seed(0)), TINY_ROUNDS,
                       where, controls=10)
        model = load_model("smollm2-135m")
        task = load_task("rotten_tomatoes", train_size=8, dev_size=200, test_size=8, seed=0)
        print("SmolLM2-135M, the demo's curve (200 dev examples, 3 controls):")
        demo = compare(prompted(model, task, SoftPrompt.init(model, 8)), task.dev,
                       torch.rand(describe(model).shape, generator=torch.Generator().manual_seed(0)), ROUNDS, where)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    print(f"RESULT ratio={demo['with'] / demo['without']:.3f} with_s={demo['with']:.2f} "
          f"without_s={demo['without']:.2f} tiny_ratio={tiny['with'] / tiny['without']:.3f}")


if __name__ == "__main__":
    main()
