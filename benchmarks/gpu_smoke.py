"""GPU smoke test: tune, probe and perturb SmolLM2-135M on CUDA, and the same short pipeline on the CPU.

Checks what a CPU-only test suite cannot: that a run on a GPU stays there (model weights, the tuned
prompt, the activations every linear layer sees) and gives finite results on the CPU. Then times the
pipeline (tune, probe, neurons, perturb on a small rotten_tomatoes sample) on both devices and a bare
forward pass on the GPU:

* ``tokens_per_s``: prompted forward passes over the dev split on the GPU (no grad, batch 32), tokens
  (prompt and padding included) per second, median of the repeats;
* ``speedup_vs_cpu``: the pipeline's wall time on the CPU over its time on the GPU (same settings).

With two or more CUDA devices it also splits the model with ``device_map="auto"`` (``max_memory`` caps the
first GPU at half the weights, so the layers land on two devices) and reprobes the tuned run that way: the
predictivity must equal the single-device probe's (``device_map_equal``), with every layer's hooks, the
statistics' reduction on the CPU and the stored inputs' keys/values moving across devices.

Without CUDA it prints that it was skipped and ``RESULT skipped=no_cuda`` (exit 0).

    python benchmarks/gpu_smoke.py [--dtype bfloat16]   -> last line: RESULT tokens_per_s=X speedup_vs_cpu=Y ...

``--device cpu --model DIR --task csv:FILE`` runs the same code on the CPU alone (to check the script
itself on a machine without a GPU; the "speedup" is then about 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("SKILL_LENS_QUIET", "1")

import torch  # noqa: E402

from skill_lens import steps  # noqa: E402
from skill_lens.model.loading import load_model, model_device, parse_device  # noqa: E402
from skill_lens.data.sources import load_task
from skill_lens.prompting.tuning import TuneConfig

SIZES = {"train_size": 64, "dev_size": 64, "test_size": 32, "seed": 0}
CONFIG = TuneConfig(prompt_length=8, steps=20, batch_size=16, eval_every=20)
REPEATS = 5


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline(model, task, out: str) -> tuple[float, dict]:
    """tune -> probe -> neurons -> perturb into ``out``; the wall time and what the checks need."""
    device = model_device(model)
    seen = set()
    handles = [m.register_forward_pre_hook(lambda mod, args: seen.add((args[0].dtype, str(args[0].device))))
               for m in model.original_model.modules() if isinstance(m, torch.nn.Linear)]
    sync(device)
    t0 = time.perf_counter()
    run = steps.tune(out, model, task, CONFIG)
    result = steps.probe(run, batch_size=32)
    steps.neurons(run, top=0.02)
    curve = steps.perturb(run, method="gaussian", fractions=[0, 0.05], controls=1, batch_size=32)
    sync(device)
    seconds = time.perf_counter() - t0
    for h in handles:
        h.remove()
    return seconds, {"run": run, "result": result, "curve": curve, "seen": seen}


def check(model, got: dict) -> None:
    """Everything stayed on the model's device and dtype; results are finite CPU tensors."""
    device, dtype = model_device(model), next(model.original_model.parameters()).dtype
    params = {(p.dtype, p.device) for p in model.original_model.parameters()}
    assert params == {(dtype, device)}, f"model parameters moved: {params}"
    assert got["seen"] == {(dtype, str(device))}, f"activations left {dtype} on {device}: {got['seen']}"
    prompt = got["run"].prompted().prompt.embedding
    assert prompt.device == device and prompt.dtype == torch.float32, (prompt.device, prompt.dtype)
    for name in ("baseline", "dev_acc", "test_acc"):
        t = getattr(got["result"], name)
        assert t.device.type == "cpu" and bool(torch.isfinite(t).all()), name
    rows = got["curve"].rows
    assert all(r["accuracy"] == r["accuracy"] and abs(r["logit_diff"]) < float("inf") for r in rows)


def tokens_per_s(run) -> float:
    """Prompted forward passes over the dev split (no grad): tokens per second, median of REPEATS."""
    pm, dev = run.prompted(), run.task.dev
    device = model_device(pm.model)
    batches = [pm.encode_split(dev, slice(s, s + 32)) for s in range(0, len(dev), 32)]
    tokens = sum(b.input_ids.numel() for b in batches)
    times = []
    with torch.no_grad():
        for _ in range(REPEATS + 1):  # the first is a warm-up
            sync(device)
            t0 = time.perf_counter()
            for b in batches:
                pm.label_logits(b)
            sync(device)
            times.append(time.perf_counter() - t0)
    return tokens / statistics.median(times[1:])


def device_map_case(run, single) -> dict:
    """Reprobe ``run`` with its model split over two GPUs by ``device_map="auto"``; compare with ``single``."""
    from skill_lens.model.loading import resources
    from skill_lens.workflow.runs import Run

    if torch.cuda.device_count() < 2:
        return {"device_map": "skipped_one_gpu"}
    weights = sum(p.numel() * p.element_size() for p in run.model.original_model.parameters())
    split = Run.open(run.path, device_map="auto", max_memory={0: weights // 2, 1: 4 * weights})
    result = steps.probe(split, batch_size=32)
    used = resources(split.model)["devices"]
    assert len(used) >= 2, f"device_map='auto' left the model on {used}"
    equal = all(torch.equal(getattr(result, f), getattr(single, f)) for f in ("baseline", "dev_acc", "test_acc"))
    curve = steps.perturb(split, method="gaussian", fractions=[0, 0.05], controls=1, batch_size=32)
    assert all(r["accuracy"] == r["accuracy"] for r in curve.rows)
    return {"device_map_devices": len(used), "device_map_equal": equal}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--device", default="cuda", help="the device under test (default cuda)")
    p.add_argument("--dtype", default="float32", help="its dtype (default float32; bfloat16 ...)")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_smoke: skipped, no CUDA device here (torch {torch.__version__}, "
              f"built {'with' if torch.backends.cuda.is_built() else 'without'} CUDA)")
        print("RESULT skipped=no_cuda")
        return 0
    device = parse_device(args.device)
    task = load_task(args.task, **SIZES)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(args.model, device=device, dtype=args.dtype)
        pipeline(model, task, os.path.join(tmp, "warmup"))  # kernels, caches, allocator
        gpu_s, got = pipeline(model, task, os.path.join(tmp, "gpu"))
        check(model, got)
        tps = tokens_per_s(got["run"])
        acc = got["run"].meta["accuracy"]
        mapped = device_map_case(got["run"], got["result"]) if device.type == "cuda" else {}
        del model, got
        cpu_model = load_model(args.model, device="cpu", dtype="float32")
        cpu_s, cpu_got = pipeline(cpu_model, task, os.path.join(tmp, "cpu"))
        check(cpu_model, cpu_got)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"{args.model} on {name} ({args.dtype}): pipeline {gpu_s:.1f}s (cpu float32 {cpu_s:.1f}s); dev accuracy "
          f"{acc['dev']:.3f} after {CONFIG.steps} steps; {tps:,.0f} tokens/s forward")
    print(f"RESULT tokens_per_s={tps:.0f} speedup_vs_cpu={cpu_s / gpu_s:.2f} gpu_s={gpu_s:.2f} cpu_s={cpu_s:.2f} "
          f"device={device.type} dtype={args.dtype} " + " ".join(f"{k}={v}" for k, v in mapped.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
