"""A probe killed part-way resumes to the uninterrupted result; checkpoints refuse a different probe or run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from skill_lens.store.artifacts import ArtifactError, load_tensors
from skill_lens.store.checkpoint import Checkpoint
from skill_lens.probing.result import ProbeResult
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig
from skill_lens.prompting.evaluation import prompted

# argv: mode ("kill:N" = SIGKILL right after the N-th checkpoint of this process, "plain" = no checkpoint)
SCRIPT = """
import os, sys, signal
os.environ["SKILL_LENS_QUIET"] = "1"
from skill_lens.store.checkpoint import Checkpoint
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import prompted
mode, out = sys.argv[1], sys.argv[2]
if mode.startswith("kill:"):
    orig, calls = Checkpoint.save, []
    def save_then_die(self, tensors, state):
        orig(self, tensors, state)
        calls.append(state)
        if len(calls) == int(mode[5:]):
            print(state, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    Checkpoint.save = save_then_die
task, m = tiny_task(n_train=40, n_dev=24, n_test=16), tiny_model("mlm")
pm = prompted(m, task, SoftPrompt.init(m, 3, seed=2))
if mode == "plain":
    probe(pm, task, batch_size=4, pooling=True).save(os.path.join(out, "predictivity.safetensors"))
else:
    probe(pm, task, batch_size=4, pooling=True, checkpoint=out, checkpoint_every=2,
          on_result=lambda r: r.save(os.path.join(out, "predictivity.safetensors")))
"""


def run(mode, out) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, str(out)], env=env, capture_output=True, text=True)


def test_killed_probe_resumes_to_the_uninterrupted_result(tmp_path):
    # train: 10 batches = 5 checkpoints; dev: 6 batches = 3; test: 4 batches = 2.
    a, final = tmp_path / "a", tmp_path / "a" / "predictivity.safetensors"
    killed = run("kill:2", a)  # in the train pass
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "'pass': 'train', 'batch': 4" in killed.stdout
    assert not final.exists() and (a / "probe_checkpoint.0of1.safetensors").exists()
    killed = run("kill:5", a)  # resumed at train batch 4: the 5th save is in the dev pass, past the baseline
    assert killed.returncode == -signal.SIGKILL and "'pass': 'dev', 'batch': 4" in killed.stdout
    assert not final.exists()
    done = run("resume", a)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in a.iterdir()) == ["predictivity.safetensors", "predictivity.safetensors.json"]

    whole = run("plain", tmp_path / "b")
    assert whole.returncode == 0, whole.stderr[-2000:]
    got, ref = ProbeResult.load(final), ProbeResult.load(tmp_path / "b" / "predictivity.safetensors")
    for key in ("baseline", "dev_acc", "test_acc", "mean_pool_dev_acc", "max_pool_dev_acc", "mean_pool_test_acc",
                "max_pool_test_acc"):
        assert torch.equal(getattr(got, key), getattr(ref, key)), key


class Crash(Exception):
    pass


def crash_after(n: int, monkeypatch) -> None:
    orig, calls = Checkpoint.save, []

    def save_then_crash(self, tensors, state):
        orig(self, tensors, state)
        calls.append(1)
        if len(calls) == n:
            raise Crash

    monkeypatch.setattr(Checkpoint, "save", save_then_crash)


def checkpointed(pm, task, d, **kw):
    """The probe as the run code calls it: checkpoints in ``d``, the result saved there by ``on_result``."""
    return probe(pm, task, checkpoint=d, on_result=lambda r: r.save(d / "predictivity.safetensors"), **kw)


def test_checkpoint_of_a_different_probe_is_refused(tmp_path, monkeypatch):
    task, m = tiny_task(n_train=16, n_dev=8, n_test=0), tiny_model("causal")
    pm = prompted(m, task, SoftPrompt.init(m, 2, seed=0))
    crash_after(1, monkeypatch)
    with pytest.raises(Crash):
        checkpointed(pm, task, tmp_path, batch_size=4, checkpoint_every=1)
    monkeypatch.undo()
    ckpt = tmp_path / "probe_checkpoint.0of1.safetensors"
    _, meta = load_tensors(ckpt)
    assert meta["state"] == {"pass": "train", "batch": 1} and meta["identity"]["batch_size"] == 4
    assert meta["identity"]["shard"] == "0/1"
    other = r"probe checkpoint of other settings \(batch_size: 4 in the checkpoint, 8 now"
    with pytest.raises(ArtifactError, match=other):
        checkpointed(pm, task, tmp_path, batch_size=8)
    other_prompt = prompted(m, task, SoftPrompt.init(m, 2, seed=1))
    with pytest.raises(ArtifactError, match="prompt:"):
        checkpointed(other_prompt, task, tmp_path, batch_size=4)
    with pytest.raises(ArtifactError, match="task:"):
        checkpointed(pm, tiny_task(n_train=16, n_dev=8, n_test=0, seed=3), tmp_path, batch_size=4)
    with pytest.raises(ArtifactError, match="hook_names:"):
        checkpointed(pm, task, tmp_path, batch_size=4, hook_names=["blocks.0.mlp.hook_post"])
    with pytest.raises(ArtifactError, match="model:"):
        gpt2 = tiny_model("gpt2")
        checkpointed(prompted(gpt2, task, pm.prompt), task, tmp_path, batch_size=4)
    assert not (tmp_path / "predictivity.safetensors").exists()
    # the same probe resumes and finishes; the result equals a probe without checkpoints
    resumed = checkpointed(pm, task, tmp_path, batch_size=4, checkpoint_every=1)
    plain = probe(pm, task, batch_size=4)
    assert torch.equal(resumed.dev_acc, plain.dev_acc) and torch.equal(resumed.baseline, plain.baseline)
    assert not ckpt.exists() and (tmp_path / "predictivity.safetensors").exists()


def test_nan_during_a_checkpointed_probe_writes_no_result(tmp_path):
    task, m = tiny_task(n_train=16, n_dev=8, n_test=0), tiny_model("causal")
    pm = prompted(m, task, SoftPrompt.init(m, 2, seed=0))
    calls = []

    def nan_later(act, hook):
        calls.append(1)
        return act.fill_(float("nan")) if len(calls) > 2 else act

    with m.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", nan_later)]):
        with pytest.raises(ValueError, match="non-finite activations"):
            checkpointed(pm, task, tmp_path, batch_size=4, checkpoint_every=1)
    assert not (tmp_path / "predictivity.safetensors").exists()


def test_on_result_runs_once_before_the_checkpoint_is_removed_and_probe_writes_no_result(tmp_path):
    task, m = tiny_task(n_train=16, n_dev=8, n_test=0), tiny_model("causal")
    pm = prompted(m, task, SoftPrompt.init(m, 2, seed=0))
    seen = []

    def on_result(r):
        _, meta = load_tensors(tmp_path / "probe_checkpoint.0of1.safetensors")  # still there, every split done
        seen.append((r, meta["state"]))

    result = probe(pm, task, batch_size=4, checkpoint=tmp_path, checkpoint_every=3, on_result=on_result)
    assert len(seen) == 1 and seen[0][0] is result and seen[0][1] == {"pass": "dev", "batch": 2}
    assert list(tmp_path.iterdir()) == []  # the checkpoint is removed; saving the result is on_result's job
    assert torch.equal(result.dev_acc, probe(pm, task, batch_size=4).dev_acc)
    with pytest.raises(ValueError, match="checkpoint_every must be at least 1 batch, got 0"):
        probe(pm, task, checkpoint=tmp_path, checkpoint_every=0)


def test_run_create_refuses_a_leftover_tuning_checkpoint_of_another_task(tmp_path):
    """What exists today: the tuning checkpoint's identity check (run.json itself is not checked, see below)."""
    from skill_lens.workflow.runs import Run
    from skill_lens.prompting.tuning import tune

    cfg = TuneConfig(prompt_length=2, steps=4, batch_size=8, eval_every=2)
    m = tiny_model("causal")
    tune(m, tiny_task(seed=0), cfg, run_dir=tmp_path)  # leaves checkpoint.safetensors (a "crashed" run)
    with pytest.raises(ArtifactError, match="other settings"):
        Run.create(tmp_path, m, tiny_task(seed=1), cfg)
    assert not (tmp_path / "run.json").exists()


def test_run_create_refuses_a_finished_run_of_another_task(tmp_path):
    from skill_lens.workflow.runs import Run

    cfg = TuneConfig(prompt_length=2, steps=2, batch_size=8, eval_every=2)
    m = tiny_model("causal")
    Run.create(tmp_path, m, tiny_task(seed=0), cfg)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ArtifactError, match=r"already holds a tuned run \(task: .*Pass --overwrite .* new --out"):
        Run.create(tmp_path, m, tiny_task(seed=1), cfg)
    with pytest.raises(ArtifactError, match="model: tiny-causal weights .* in run.json, tiny-gpt2 weights .* now"):
        Run.create(tmp_path, tiny_model("gpt2"), tiny_task(seed=0), cfg)
    with pytest.raises(ArtifactError, match=r"config: prompt_length 2 -> 3"):
        Run.create(tmp_path, m, tiny_task(seed=0), TuneConfig(prompt_length=3, steps=2, batch_size=8, eval_every=2))
    with pytest.raises(ArtifactError, match=r"the same model, task and settings"):
        Run.create(tmp_path, m, tiny_task(seed=0), cfg)  # even the same run is not silently re-tuned
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written
    assert Run.create(tmp_path, m, tiny_task(seed=0), cfg, reuse=True).meta == Run.open(tmp_path).meta  # reused
    Run.create(tmp_path, m, tiny_task(seed=0), cfg, overwrite=True)  # re-tuned: the same prompt again
    assert (tmp_path / "prompt.safetensors").read_bytes() == before["prompt.safetensors"]
