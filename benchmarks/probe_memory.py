"""Peak memory of the streaming probe at 1x and 8x examples: it must not grow with the data.

Each size runs in a fresh subprocess (so one run's allocations cannot hide the other's) and reports
its peak resident set size (``ru_maxrss``, which sees torch's allocations, unlike tracemalloc).
A wider tiny model (4 layers x 2048 neurons, 8-token prompt) makes the activations sizeable: holding
the 8x dataset's prompt activations would take the "naive" megabytes printed below.

    python benchmarks/probe_memory.py          -> last line: RESULT memory_ratio=X (target <= 1.1)
"""

from __future__ import annotations

import json
import subprocess
import sys

SIZES = {"1x": 256, "8x": 2048}
LAYERS, D_MLP, P = 4, 2048, 8


def child(n: int) -> None:
    import os
    import resource

    os.environ["SKILL_LENS_QUIET"] = "1"
    import torch

    from skill_lens.probing.probe import probe
    from skill_lens.prompting.prompts import SoftPrompt
    from skill_lens.model.tiny import tiny_model, tiny_task
    from skill_lens.prompting.evaluation import prompted

    torch.set_num_threads(1)
    model = tiny_model("causal", n_layers=LAYERS, d_model=64, d_mlp=D_MLP)
    task = tiny_task(n_train=n, n_dev=n, n_test=n)
    pm = prompted(model, task, SoftPrompt.init(model, P))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = probe(pm, task, batch_size=32)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "rss_before_probe_mb": before / 1024, "peak_rss_mb": peak / 1024,
                      "dev_acc_shape": list(result.dev_acc.shape)}))


def main() -> None:
    got = {}
    for name, n in SIZES.items():
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        got[name] = json.loads(out.stdout.strip().splitlines()[-1])
        naive = 3 * n * LAYERS * P * D_MLP * 4 / 2**20
        print(f"{name}: {3 * n} examples ({n} per split), RSS before probe {got[name]['rss_before_probe_mb']:.0f} MB, "
              f"peak {got[name]['peak_rss_mb']:.0f} MB (holding the activations would need {naive:.0f} MB more)")
    ratio = got["8x"]["peak_rss_mb"] / got["1x"]["peak_rss_mb"]
    growth = got["8x"]["peak_rss_mb"] - got["1x"]["peak_rss_mb"]
    print(f"RESULT memory_ratio={ratio:.3f} growth_mb={growth:.1f} peak_1x_mb={got['1x']['peak_rss_mb']:.0f} "
          f"peak_8x_mb={got['8x']['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        main()
