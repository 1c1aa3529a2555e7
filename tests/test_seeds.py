"""Seeds: one run per seed, their predictivity averaged over seeds, the ranking's replicability between seeds,
neurons selected from the mean; and the aggregate's lineage (a re-probed or foreign seed is refused)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from clitools import FAST_TUNE, cli, snapshot

from skill_lens.probing.scores import select_top, spearman
from skill_lens.workflow.runs import Run
from skill_lens.workflow.seeds import SeedGroup, SeedScores, replicability


# ------------------------------------------------------------------ known answers
def test_replicability_of_a_shared_signal_and_of_pure_noise():
    g = torch.Generator().manual_seed(0)
    signal = torch.rand(4, 500, generator=g)
    same = replicability(torch.stack([signal + 0.01 * torch.rand(4, 500, generator=g) for _ in range(3)]), top=0.01)
    assert same["spearman_mean"] > 0.99 and same["overlap_mean"] >= 0.7 and same["in_all"] >= 10
    noise = replicability(torch.rand(3, 4, 500, generator=g), top=0.01)
    assert abs(noise["spearman_mean"]) < 0.05  # 2000 neurons: the std of rho under independence is ~0.022
    assert noise["overlap_mean"] < 0.15 and noise["overlap_chance"] == 20 / 2000
    assert noise["in_all"] <= 2 and noise["k"] == 20 and len(noise["pairs"]) == 3


def test_replicability_needs_two_seeds():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        replicability(torch.rand(1, 2, 8))


# ------------------------------------------------------------------ the CLI end to end
@pytest.fixture(scope="module")
def seeds_dir(tmp_path_factory, model_dir, task_csv):
    d = tmp_path_factory.mktemp("seeds") / "S"
    rc, out, err = cli("tune", "--model", model_dir(), "--task", f"csv:{task_csv()}", "--out", d, "--seeds", "0,1,2",
                       *FAST_TUNE)
    assert rc == 0, err
    assert "seed 2: dev accuracy" in out and f"skill-lens seeds {d}" in out
    for s in range(3):
        assert cli("probe", d / f"seed-{s}")[0] == 0
    rc, out, err = cli("seeds", d, "--top", "0.05")
    assert rc == 0, err
    assert "Spearman between seeds' predictivities" in out and "pairs of seeds" in out and "wrote" in out
    return d


def copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / "S")


def test_each_seed_is_an_ordinary_run_with_its_seed(seeds_dir):
    runs = [Run.open(seeds_dir / f"seed-{s}") for s in range(3)]
    assert [r.meta["seed"] for r in runs] == [0, 1, 2]
    assert len({r.meta["prompt_fingerprint"] for r in runs}) == 3
    for r in runs:
        lo, hi = r.meta["accuracy_ci"]["dev"]
        assert lo <= r.meta["accuracy"]["dev"] <= hi


def test_the_aggregate_is_the_mean_of_the_runs_scores(seeds_dir):
    agg = SeedGroup.open(seeds_dir).probe_result()
    per_run = [Run.open(seeds_dir / f"seed-{s}").probe_result() for s in range(3)]
    for split in ("dev", "test"):
        want = torch.stack([p.scores(split, "max") for p in per_run])
        assert torch.equal(agg.seed_scores(split), want)
        assert torch.allclose(agg.scores(split), want.mean(0))
    rep = agg.meta["replicability"]["dev"]
    assert rep["spearman"][0] == pytest.approx(spearman(per_run[0].scores(), per_run[1].scores()))
    assert agg.meta["seeds"] == [0, 1, 2] and rep["top"] == 0.05
    sidecar = json.loads((seeds_dir / "seeds.safetensors.json").read_text())
    assert [r["path"] for r in sidecar["lineage"]["runs"]] == ["seed-0", "seed-1", "seed-2"]


def test_neurons_select_from_the_mean_over_seeds(seeds_dir, tmp_path):
    d = copy(seeds_dir, tmp_path)
    rc, out, err = cli("neurons", d, "--top", "5")
    assert rc == 0, err
    ns = SeedGroup.open(d).neurons()
    mean = SeedGroup.open(d).probe_result().scores()
    assert len(ns) == 5 and torch.equal(ns.mask, select_top(mean, 5))  # ties as everywhere (lower layer first)
    assert "mean over 3 seeds" in ns.meta["scored_on"]


def test_a_reprobed_seed_makes_the_aggregate_and_its_neurons_stale(seeds_dir, tmp_path):
    d = copy(seeds_dir, tmp_path)
    assert cli("neurons", d, "--top", "5")[0] == 0
    assert cli("probe", d / "seed-1", "--batch-size", "4", "--permutations", "3")[0] == 0  # another predictivity file
    before = snapshot(d)
    rc, _, err = cli("neurons", d)
    assert rc == 2 and "seeds.safetensors was derived from another predictivity.safetensors" in err
    assert "skill-lens seeds DIR" in err and snapshot(d) == before
    assert cli("seeds", d)[0] == 0  # re-aggregating repairs it; the old neurons are now stale
    with pytest.raises(ValueError, match="not selected from the current seeds.safetensors"):
        SeedGroup.open(d).neurons()


def test_runs_that_do_not_belong_together_are_refused(seeds_dir, made_run, tmp_path):
    d = copy(seeds_dir, tmp_path)
    before = snapshot(d)
    other_task = made_run("causal", task_seed=1, steps=("probe",))
    rc, _, err = cli("seeds", d / "seed-0", other_task, "--out", tmp_path / "agg")
    assert rc == 2 and "other task data" in err
    rc, _, err = cli("seeds", d / "seed-0", d / "seed-0", "--out", tmp_path / "agg")
    assert rc == 2 and "very same prompt" in err
    rc, _, err = cli("seeds", d / "seed-0", d / "seed-1")
    assert rc == 2 and "--out" in err
    rc, _, err = cli("seeds", d / "seed-0", d / "seed-1", "--out", d / "seed-2")
    assert rc == 2 and "is a run" in err
    assert snapshot(d) == before and not (tmp_path / "agg").exists()


def test_unprobed_seeds_are_named_with_the_command_that_probes_them(tmp_path, model_dir, task_csv):
    d = tmp_path / "S"
    assert cli("tune", "--model", model_dir(), "--task", f"csv:{task_csv()}", "--out", d, "--seeds", "3,4",
               *FAST_TUNE)[0] == 0
    assert cli("probe", d / "seed-3")[0] == 0
    rc, _, err = cli("seeds", d)
    assert rc == 2 and f"skill-lens probe {d / 'seed-4'}" in err and "seed-3`" not in err
    assert not (d / "seeds.safetensors").exists()


def test_a_foreign_seeds_file_is_left_alone(seeds_dir, tmp_path):
    d = copy(seeds_dir, tmp_path)
    from skill_lens.store.artifacts import save_tensors

    save_tensors(d / "seeds.safetensors", {"x": torch.ones(1)}, {"mine": True})
    before = snapshot(d)
    rc, _, err = cli("seeds", d)
    assert rc == 2 and "not an aggregate of seeds" in err and snapshot(d) == before


def test_tune_seeds_reuses_finished_seeds_and_refuses_other_settings(seeds_dir, tmp_path, model_dir, task_csv):
    d = copy(seeds_dir, tmp_path)
    before = snapshot(d)
    argv = ["tune", "--model", model_dir(), "--task", f"csv:{task_csv()}", "--out", d, "--seeds", "0,1,2", *FAST_TUNE]
    assert cli(*argv)[0] == 0 and snapshot(d) == before  # the same runs, reused as they are
    rc, _, err = cli(*argv, "--lr", "0.1")  # other settings: refused, nothing re-tuned
    assert rc == 2 and "--overwrite" in err and "lr 0.03 -> 0.1" in err and snapshot(d) == before
    rc, _, err = cli("tune", "--out", d / "seed-0", "--seeds", "0,0")
    assert rc == 2 and "distinct" in err


def test_seed_scores_report_missing_splits():
    with pytest.raises(ValueError, match="no 'test_max' scores"):
        SeedScores({"dev_max": torch.zeros(2, 1, 3)}).scores("test")
