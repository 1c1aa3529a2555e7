"""Evidence at scale on a 2-core CPU: the probe's memory, its cost over a bare forward, and the plan's error, from
135M to 7B parameters.

Random-initialised models of real shapes (``docs/configs``): SmolLM2-135M, -360M and -1.7B in float32, and the
Llama-2-7B shape in bfloat16 with as many of its 32 layers as fit ``--memory`` (by the plan; default 10 GiB, the
rest of the machine being shared), its figures extrapolated per layer to 32. Each size runs in a fresh
process, loaded through ``load_model(..., random_init=True, dtype=...)``, and probes 64 examples of
rotten_tomatoes (32 train for the baselines, 32 dev) in length-sorted batches of 16:

* ``memory_ratio``: the process's peak resident memory (``VmHWM``, loading included) above what it held
  before the model was made, over the bytes of the weights: what a probe costs beyond the weights;
* ``overhead``: the probe's wall time (capture hooks on every FFN layer, float64 sums) over a bare forward
  (no hooks, the plain Hugging Face model) of the same batches; the two alternate, medians of ``--repeats``;
* ``plan_error``: ``|plan - measured| / measured`` for that peak, the plan (:func:`skill_lens.workflow.plan.plan`)
  made from the config file alone, before the model exists.

    .venv/bin/python benchmarks/scale.py     # alone on the machine: it times
      -> last line: RESULT sizes=... max_memory_ratio=X (target <= 1.3) max_overhead=Y (<= 1.15) plan_error=Z (<= 0.2)

Measured alone on 2 CPU cores (Dec 2026; ``--repeats 2``):

| model (random weights) | dtype | layers | weights GB | peak RSS GB | memory ratio | plan GB | plan error | bare s | probe s | overhead |
|---|---|---|---|---|---|---|---|---|---|---|
| smollm2-135m | float32 | 30/30 | 0.54 | 0.64 | 1.186 | 0.58 | 0.087 | 3.0 | 3.2 | 1.056 |
| smollm2-360m | float32 | 32/32 | 1.45 | 1.61 | 1.110 | 1.52 | 0.051 | 8.8 | 9.0 | 1.031 |
| smollm2-1.7b | float32 | 24/24 | 6.85 | 7.31 | 1.068 | 7.14 | 0.023 | 43.6 | 44.0 | 1.008 |
| llama-2-7b | bfloat16 | 21/32 | 9.02 | 9.39 | 1.041 | 9.31 | 0.009 | 31.4 | 30.4 | 0.968 |
| llama-2-7b, extrapolated | bfloat16 | 32/32 | 13.48 | 13.96 | 1.036 | | | 48 | 46 | |

RESULT sizes=135m,360m,1.7b,2-7b(21of32) max_memory_ratio=1.186 max_overhead=1.056 plan_error=0.087
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "docs" / "configs"
SIZES = [("smollm2-135m", "float32"), ("smollm2-360m", "float32"), ("smollm2-1.7b", "float32"),
         ("llama-2-7b", "bfloat16")]
N, BATCH, P = 32, 16, 8  # N train + N dev examples, batch size, prompt length
RUNTIME = 2**30  # what the plan leaves out and a process holds anyway (Python, torch, tokenizer): 1 GiB


def layers_that_fit(name: str, dtype: str, memory_gib: float, tokens: int) -> int:
    """The most layers of ``name`` whose probe the plan puts under ``memory_gib`` (with the runtime)."""
    from skill_lens.workflow.plan import plan

    config = json.loads((CONFIGS / f"{name}.json").read_text())
    sizes = {"train": N, "dev": N, "test": 0}
    for k in range(config["num_hidden_layers"], 0, -1):
        p = plan({**config, "num_hidden_layers": k}, sizes, dtype=dtype, tokens=tokens, batch_size=BATCH,
                 input_cache_mb=0)
        if p.step("probe").peak + RUNTIME <= memory_gib * 2**30:
            return k
    raise SystemExit(f"not even one layer of {name} fits {memory_gib} GiB")


def tokenizer_for(config: dict, out: Path, task) -> None:
    """SmolLM2's tokenizer where the vocabulary is SmolLM2's; else a byte-level BPE trained here on the task's
    texts, no larger than the model's vocabulary (the label words and template words as tokens of their own)."""
    from skill_lens.model.sources import model_source

    smol = Path(model_source("smollm2-135m"))
    if config["vocab_size"] == json.loads((smol / "config.json").read_text())["vocab_size"]:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(smol).save_pretrained(out)
        return
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = [*task.train.texts, *task.dev.texts, *[" ".join(task.label_words) + " Review: Sentiment:"] * 200]
    bpe.train_from_iterator(corpus, vocab_size=min(config["vocab_size"], 8000), min_frequency=1,
                            special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(out)


def child(name: str, dtype: str, layers: int, repeats: int) -> dict:
    os.environ["SKILL_LENS_QUIET"] = "1"
    import torch

    from skill_lens.data.batching import length_batches, token_lengths
    from skill_lens.data.sources import load_task
    from skill_lens.model.loading import load_model
    from skill_lens.model.memory import peak_resident_bytes, reset_peak_resident, resident_bytes
    from skill_lens.probing.probe import probe
    from skill_lens.prompting.evaluation import prompted
    from skill_lens.prompting.prompts import SoftPrompt
    from skill_lens.workflow.plan import plan

    task = load_task("rotten_tomatoes", train_size=N, dev_size=N, test_size=2, seed=0)  # the test split is not probed
    config = {**json.loads((CONFIGS / f"{name}.json").read_text()), "num_hidden_layers": layers}
    d = Path(tempfile.mkdtemp(prefix=f"scale_{name}_"))
    (d / "config.json").write_text(json.dumps(config))
    tokenizer_for(config, d, load_task("rotten_tomatoes", train_size=2000, dev_size=N, test_size=2, seed=1))
    before = resident_bytes(anonymous=False)
    reset_peak_resident()
    t0 = time.perf_counter()
    model = load_model(str(d), device="cpu", dtype=dtype, random_init=True)
    load_s = time.perf_counter() - t0
    pm = prompted(model, task, SoftPrompt.init(model, P, seed=0))
    tokens = int((token_lengths(pm, task.train) - P).median())
    expected = plan(str(d / "config.json"), {"train": N, "dev": N, "test": 0}, dtype=dtype, tokens=tokens,
                    batch_size=BATCH, input_cache_mb=0)
    batches = {s: length_batches(pm, getattr(task, s), BATCH) for s in ("train", "dev")}

    def bare() -> None:
        with torch.no_grad():
            for s, bs in batches.items():
                for idx in bs:
                    pm.label_logits(pm.encode_split(getattr(task, s), idx))

    with torch.no_grad():  # warm-up: one batch of each split (kernels, allocator)
        for s, bs in batches.items():
            pm.label_logits(pm.encode_split(getattr(task, s), bs[0]))
    times = {"bare": [], "probe": []}
    for r in range(repeats):
        for kind in (("bare", "probe") if r % 2 == 0 else ("probe", "bare")):
            t0 = time.perf_counter()
            bare() if kind == "bare" else probe(pm, task, batch_size=BATCH, splits=("dev",))
            times[kind].append(time.perf_counter() - t0)
    weights = sum(t.numel() * t.element_size() for t in {id(t): t for t in (
        *model.original_model.parameters(), *model.original_model.buffers())}.values())
    peak = peak_resident_bytes() - before
    return {"name": name, "dtype": dtype, "layers": layers, "of": json.loads((CONFIGS / f"{name}.json").read_text())[
        "num_hidden_layers"], "weights": weights, "peak": peak, "plan": expected.step("probe").peak,
        "plan_weights": expected.weights, "tokens": tokens, "load_s": load_s, "times": times,
        "forward_tokens": expected.step("probe").forward_tokens}


def run_child(name: str, dtype: str, layers: int, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", name, dtype, str(layers), str(repeats)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(got: dict, per_layer: dict | None) -> dict:
    """The measured ratios; for a model cut to fewer layers, also its figures extrapolated to all of them."""
    bare, probe_s = statistics.median(got["times"]["bare"]), statistics.median(got["times"]["probe"])
    row = {**got, "bare_s": bare, "probe_s": probe_s, "overhead": probe_s / bare,
           "memory_ratio": got["peak"] / got["weights"], "plan_error": abs(got["plan"] - got["peak"]) / got["peak"]}
    if per_layer is not None and got["layers"] < got["of"]:
        extra = got["of"] - got["layers"]
        row["full"] = {"weights": got["weights"] + extra * per_layer["weights"],
                       "peak": got["peak"] + extra * per_layer["peak"],
                       "bare_s": bare * got["of"] / got["layers"], "probe_s": probe_s * got["of"] / got["layers"]}
        row["full"]["memory_ratio"] = row["full"]["peak"] / row["full"]["weights"]
    return row


def per_layer_cost(name: str, dtype: str, tokens: int) -> dict:
    """What one more layer adds to the weights and the probe's planned peak (the plan's difference of two)."""
    from skill_lens.workflow.plan import plan

    config = json.loads((CONFIGS / f"{name}.json").read_text())
    sizes = {"train": N, "dev": N, "test": 0}
    a, b = (plan({**config, "num_hidden_layers": k}, sizes, dtype=dtype, tokens=tokens, batch_size=BATCH,
                 input_cache_mb=0) for k in (1, 2))
    return {"weights": b.weights - a.weights, "peak": b.step("probe").peak - a.step("probe").peak}


def table(rows: list[dict]) -> str:
    lines = ["| model (random weights) | dtype | layers | weights GB | peak RSS GB | memory ratio | plan GB | "
             "plan error | bare s | probe s | overhead |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['name']} | {r['dtype']} | {r['layers']}/{r['of']} | {r['weights'] / 1e9:.2f} | "
                     f"{r['peak'] / 1e9:.2f} | {r['memory_ratio']:.3f} | {r['plan'] / 1e9:.2f} | "
                     f"{r['plan_error']:.3f} | {r['bare_s']:.1f} | {r['probe_s']:.1f} | {r['overhead']:.3f} |")
        if "full" in r:
            f = r["full"]
            lines.append(f"| {r['name']}, extrapolated | {r['dtype']} | {r['of']}/{r['of']} | {f['weights'] / 1e9:.2f} "
                         f"| {f['peak'] / 1e9:.2f} | {f['memory_ratio']:.3f} | | | {f['bare_s']:.0f} | "
                         f"{f['probe_s']:.0f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=float, default=10.0, help="GiB the largest model's process may use")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(n for n, _ in SIZES))
    args = parser.parse_args()
    rows = []
    for name, dtype in SIZES:
        if name not in args.sizes.split(","):
            continue
        config = json.loads((CONFIGS / f"{name}.json").read_text())
        layers = config["num_hidden_layers"] if dtype == "float32" else layers_that_fit(name, dtype, args.memory, 48)
        got = run_child(name, dtype, layers, args.repeats)
        rows.append(summary(got, per_layer_cost(name, dtype, got["tokens"]) if layers < config["num_hidden_layers"]
                            else None))
        r = rows[-1]
        print(f"{name} {dtype} {layers}/{r['of']} layers: weights {r['weights'] / 1e9:.2f} GB, peak RSS above the "
              f"start {r['peak'] / 1e9:.2f} GB (ratio {r['memory_ratio']:.3f}), plan {r['plan'] / 1e9:.2f} GB (error "
              f"{r['plan_error']:.3f}); bare {r['bare_s']:.1f} s, probe {r['probe_s']:.1f} s (overhead "
              f"{r['overhead']:.3f}); {r['tokens']} input tokens per example, load {r['load_s']:.0f} s", flush=True)
    print(table(rows))
    names = ",".join(f"{r['name'].split('-', 1)[1]}" + (f"({r['layers']}of{r['of']})" if r["layers"] < r["of"] else "")
                     for r in rows)
    print(f"RESULT sizes={names} max_memory_ratio={max(r['memory_ratio'] for r in rows):.3f} "
          f"max_overhead={max(r['overhead'] for r in rows):.3f} plan_error={max(r['plan_error'] for r in rows):.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
    else:
        main()
