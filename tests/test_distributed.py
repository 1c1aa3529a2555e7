"""Sharded probing under torchrun (2 gloo processes on CPU) equals the single-process probe exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skill_lens.data.distributed import DistributedError, all_reduce_, shard
from skill_lens.prompting.evaluation import evaluate_distributed
from skill_lens.probing.statistics import MeanAccumulator
from skill_lens.probing.result import ProbeError, ProbeResult
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.data.tasks import Split
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import evaluate, hard_prompt_model, prompted

TORCHRUN = Path(sys.executable).with_name("torchrun")

# Two probes per launch (a soft prompt with pooling on a causal model, a hard prompt on T5's decoder);
# batch size 6 makes the shards uneven (train: 11 batches -> 5 + 6) and the last batch ragged.
WORKER = """
import json, os, sys
os.environ["SKILL_LENS_QUIET"] = "1"
from skill_lens.data.distributed import init_from_env
from skill_lens.prompting.evaluation import evaluate_distributed
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import prompted, hard_prompt_model
rank, world = init_from_env()
out = sys.argv[1]
task = tiny_task()
m = tiny_model("causal")
pm = prompted(m, task, SoftPrompt.init(m, 3, seed=0))
causal = os.path.join(out, "causal")

def on_result(r):  # rank 0 only, while every rank's checkpoint is still there
    r.save(os.path.join(causal, "predictivity.safetensors"))
    with open(os.path.join(out, f"on_result.{rank}.json"), "w") as f:
        json.dump(sorted(os.listdir(causal)), f)

probe(pm, task, batch_size=6, pooling=True, checkpoint=causal, checkpoint_every=2, on_result=on_result)
t5 = tiny_model("seq2seq")
hard = hard_prompt_model(t5, task)
r = probe(hard, task, batch_size=6, hook_names=["decoder_blocks.0.mlp.hook_post"])
ev = evaluate_distributed(pm, task.dev, batch_size=6)
if rank == 0:
    r.save(os.path.join(out, "t5.safetensors"))
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump({"world": world, **ev}, f)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_threaded(fn):
    """The reference in this process, with the workers' thread count (kernels may differ per count)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(n)


def test_two_processes_equal_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKILL_LENS_QUIET": "1"}
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    task = tiny_task()
    m = tiny_model("causal")
    pm = prompted(m, task, SoftPrompt.init(m, 3, seed=0))
    ref = single_threaded(lambda: probe(pm, task, batch_size=6, pooling=True))
    got = ProbeResult.load(tmp_path / "causal" / "predictivity.safetensors", m)
    assert got.meta["world_size"] == 2 and got.sizes == ref.sizes
    for split in ("dev", "test", "mean_pool_dev", "max_pool_dev", "mean_pool_test", "max_pool_test"):
        assert torch.equal(got.per_position(split), ref.per_position(split)), split
    torch.testing.assert_close(got.baseline, ref.baseline, rtol=1e-6, atol=1e-7)  # float64 sums, other order
    assert sorted(p.name for p in (tmp_path / "causal").iterdir()) == [  # checkpoints removed when done
        "predictivity.safetensors", "predictivity.safetensors.json"]
    assert sorted(p.name for p in tmp_path.glob("on_result.*")) == ["on_result.0.json"]  # on rank 0 only
    listed = json.loads((tmp_path / "on_result.0.json").read_text())
    assert {"probe_checkpoint.0of2.safetensors", "probe_checkpoint.1of2.safetensors"} <= set(listed)

    t5 = tiny_model("seq2seq")
    ref5 = single_threaded(lambda: probe(hard_prompt_model(t5, task), task, batch_size=6,
                                         hook_names=["decoder_blocks.0.mlp.hook_post"]))
    got5 = ProbeResult.load(tmp_path / "t5.safetensors")
    assert torch.equal(got5.per_position("dev"), ref5.per_position("dev"))
    assert torch.equal(got5.per_position("test"), ref5.per_position("test"))

    ev = json.loads((tmp_path / "eval.json").read_text())
    one = single_threaded(lambda: evaluate(pm, task.dev, batch_size=6))
    assert ev["world"] == 2 and ev["n"] == one["n"] and ev["accuracy"] == one["accuracy"]
    assert ev["logit_diff"] == pytest.approx(one["logit_diff"], rel=1e-5)


def test_shards_partition_the_split_in_whole_batches():
    s = Split([str(i) for i in range(23)], [i % 2 for i in range(23)])
    for world in (1, 2, 3, 5, 30):
        for bs in (1, 4, 7):
            parts = [shard(s, r, world, bs) for r in range(world)]
            assert sum((p.texts for p in parts), []) == s.texts
            assert all(len(p) % bs == 0 for p in parts[:-1])  # only the last shard ends in a partial batch
    with pytest.raises(DistributedError, match="rank"):
        shard(s, 2, 2)
    with pytest.raises(DistributedError, match="batch size"):
        shard(s, 0, 2, batch_size=0)


def test_single_process_checkpointed_probe_is_the_probe(tmp_path):
    task, m = tiny_task(n_train=20, n_dev=10, n_test=6), tiny_model("mlm")
    pm = prompted(m, task, SoftPrompt.init(m, 2, seed=1))
    a, b = probe(pm, task, batch_size=4), probe(pm, task, batch_size=4, checkpoint=tmp_path, checkpoint_every=1)
    assert torch.equal(a.baseline, b.baseline) and torch.equal(a.dev_acc, b.dev_acc)
    assert torch.equal(a.test_acc, b.test_acc) and a.sizes == b.sizes and a.hook_names == b.hook_names


def test_no_process_group_reduce_is_identity_and_evaluate_matches():
    m = MeanAccumulator().add(torch.arange(6.0).view(2, 1, 1, 3))
    assert all_reduce_(m) is m and m.count == 2
    task, model = tiny_task(), tiny_model("gpt2")
    pm = hard_prompt_model(model, task)
    assert evaluate_distributed(pm, task.dev, batch_size=5)["accuracy"] == evaluate(pm, task.dev, 5)["accuracy"]


def test_distributed_probe_errors_are_clear():
    task, model = tiny_task(), tiny_model()
    pm = hard_prompt_model(model, task)
    with pytest.raises(ProbeError, match=r"batch_size \(--batch-size\) must be"):
        probe(pm, task, batch_size=0)
    with pytest.raises(ProbeError, match="checkpoint_every"):
        probe(pm, task, checkpoint_every=0)
    with pytest.raises(ProbeError, match="unknown split"):
        probe(pm, task, splits=("train",))
    with pytest.raises(DistributedError, match="empty"):
        evaluate_distributed(pm, Split([], []))


# A causal model with a soft prompt, its inputs' keys/values in an input cache, a permutation null and
# suppression curves (Gaussian noise with two draws, and zero ablation): 1 and 2 processes agree bit for bit.
CURVES = """
import json, os, sys
os.environ["SKILL_LENS_QUIET"] = "1"
from skill_lens.data.distributed import init_from_env
from skill_lens.intervening.suppression import suppression_curve
from skill_lens.prompting.input_cache import InputCache
from skill_lens.probing.probe import probe
from skill_lens.prompting.evaluation import prompted
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import tiny_model, tiny_task

def run(out):
    task, m = tiny_task(), tiny_model("causal", n_layers=3)
    pm = prompted(m, task, SoftPrompt.init(m, 3, seed=0))
    cache = InputCache(batch_size=8)
    r = probe(pm, task, batch_size=6, permutations=30, input_cache=cache, checkpoint=out, checkpoint_every=1)
    rows = {}
    for method, draws in (("gaussian", 2), ("zero", 1)):
        c = suppression_curve(pm, task, r.scores("dev"), fractions=[0, 0.05, 0.2], method=method, controls=2,
                              draws=draws, batch_size=6, input_cache=cache,
                              checkpoint=os.path.join(out, method + ".ckpt"))
        rows[method] = c.rows
    return r, rows

if __name__ == "__main__":
    rank, world = init_from_env()
    r, rows = run(sys.argv[1])
    if rank == 0:
        r.save(os.path.join(sys.argv[1], "probe.safetensors"))
        with open(os.path.join(sys.argv[1], "rows.json"), "w") as f:
            json.dump(rows, f)
"""


def test_two_processes_give_one_process_probe_null_and_curves_bit_for_bit(tmp_path):
    script = tmp_path / "curves.py"
    script.write_text(CURVES)
    out = tmp_path / "two"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKILL_LENS_QUIET": "1"}
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(script), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one = tmp_path / "one"
    one.mkdir()
    import importlib.util

    spec = importlib.util.spec_from_file_location("curves_worker", script)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    ref, ref_rows = single_threaded(lambda: worker.run(str(one)))
    got = ProbeResult.load(out / "probe.safetensors")
    assert got.meta["world_size"] == 2
    for field in ("dev_acc", "test_acc", "null_max_dev", "null_layer_max_dev", "null_max_test", "null_layer_max_test"):
        assert torch.equal(getattr(got, field), getattr(ref, field)), field
    torch.testing.assert_close(got.baseline, ref.baseline, rtol=1e-6, atol=1e-7)  # float64 sums, other order
    assert json.loads((out / "rows.json").read_text()) == json.loads(json.dumps(ref_rows))
    assert sorted(p.name for p in out.iterdir()) == ["probe.safetensors", "probe.safetensors.json", "rows.json"]
