"""Sharded probing: throughput with 1 and 2 processes (torchrun, gloo, CPU) and time as the data grow.

Each measurement is ``skill_lens.probing.probe.probe`` under the process group (train pass, all-reduce, dev pass)
with a 4-token random soft prompt, batch size 16, timed between barriers after a warm-up batch;
each time is the minimum of ``REPEATS`` runs (the least disturbed by other load), one thread per process.
The data are rotten_tomatoes: ``1x`` is N train + N/2 dev examples; 2x and 4x double them.
One ``torchrun --nproc_per_node 1`` worker times 1x, 2x, 4x; a ``--nproc_per_node 2`` worker times 1x.
Both processes share the machine's cores (2 here, also used by others), so expect a speedup below 2.

    python benchmarks/probe_scaling.py                 # SmolLM2-135M, N=32
    python benchmarks/probe_scaling.py --model tiny    # a 4-layer tiny causal model, N=256 (fast)

Last line: ``RESULT two_process_speedup=X time_4x_over_1x=Y``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SKILL_LENS_QUIET", "1")

BATCH, REPEATS = 16, 3


def worker(model_name: str, sizes: list[int]) -> None:
    import torch.distributed as dist

    from skill_lens.data.distributed import init_from_env
    from skill_lens.probing.probe import probe
    from skill_lens.prompting.prompts import SoftPrompt
    from skill_lens.data.sources import load_task
    from skill_lens.prompting.evaluation import prompted

    rank, world = init_from_env()
    if model_name == "tiny":
        from skill_lens.model.tiny import tiny_model

        model = tiny_model("causal", n_layers=4, d_model=128, d_mlp=512)
    else:
        from skill_lens.model.loading import load_model

        model = load_model(model_name)
    timings = []
    for n in sizes:
        task = load_task("rotten_tomatoes", train_size=n, dev_size=n // 2, test_size=8, seed=0)
        if model_name == "tiny":  # the tiny vocabulary: map words outside it to <unk>, lengths kept
            task = task.with_label_words(["bad", "good"])
        pm = prompted(model, task, SoftPrompt.init(model, 4, seed=0))
        pm.label_logits(pm.encode(task.train.texts[:BATCH]))  # warm-up
        seconds = []
        for _ in range(REPEATS):
            if world > 1:
                dist.barrier()
            start = time.perf_counter()
            probe(pm, task, batch_size=BATCH, splits=("dev",))
            if world > 1:
                dist.barrier()
            seconds.append(time.perf_counter() - start)
        timings.append({"n": n, "examples": len(task.train) + len(task.dev), "seconds": min(seconds)})
    if rank == 0:
        print("TIMING " + json.dumps({"world": world, "timings": timings}), flush=True)
    if world > 1:
        dist.destroy_process_group()


def launch(nproc: int, model_name: str, sizes: list[int]) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1", "--master_port", str(port),
           __file__, "--worker", "--model", model_name, "--sizes", ",".join(map(str, sizes))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"torchrun failed:\n{out.stderr[-4000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("TIMING "))
    return json.loads(line[len("TIMING "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="'smollm2-135m' (default) or 'tiny'")
    ap.add_argument("--n", type=int, default=None, help="train examples at 1x (default 32, tiny: 256)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.model, [int(s) for s in args.sizes.split(",")])
    n = args.n or (256 if args.model == "tiny" else 32)
    print(f"model: {args.model}; 1x = {n} train + {n // 2} dev examples; batch {BATCH}; "
          f"{os.cpu_count()} CPU cores (shared); torchrun + gloo, 1 thread per process")
    one = launch(1, args.model, [n, 2 * n, 4 * n])["timings"]
    two = launch(2, args.model, [n])["timings"]
    for label, t in [("1 process  1x", one[0]), ("1 process  2x", one[1]), ("1 process  4x", one[2]),
                     ("2 processes 1x", two[0])]:
        rate = t["examples"] / t["seconds"]
        print(f"{label}: {t['examples']:4d} examples in {t['seconds']:7.2f} s = {rate:6.1f} ex/s")
    speedup = one[0]["seconds"] / two[0]["seconds"]
    growth = one[2]["seconds"] / one[0]["seconds"]
    print(f"RESULT two_process_speedup={speedup:.2f} time_4x_over_1x={growth:.2f}")


if __name__ == "__main__":
    main()
