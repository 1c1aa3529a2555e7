"""``skill-lens`` subcommands end to end on tiny models saved as local directories (what a user types),
and the library steps they call (:mod:`skill_lens.workflow.steps`)."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import FAST_TUNE, cli, copy_run

from skill_lens import steps
from skill_lens.store.artifacts import ArtifactError, read_json
from skill_lens.probing.neurons import NeuronSet
from skill_lens.intervening.pruning import load_pruned, pruning_info
from skill_lens.workflow.runs import Run
from skill_lens.prompting.tuning import TuneConfig


@pytest.fixture
def run(made_run, tmp_path):
    """A probed run (causal) with its neurons selected: a fresh copy per test."""
    return copy_run(made_run("causal"), tmp_path / "run")


def test_tune_prints_and_records_what_made_the_run(made_run):
    meta = Run.open(made_run("causal", steps=())).meta
    for key in ("model", "model_fingerprint", "task", "placement", "template", "label_words", "label_token_ids",
                "prompt_length", "prompt_fingerprint", "seed", "hook_names", "accuracy", "library_version"):
        assert key in meta
    assert meta["prompt_length"] == 2 and meta["hook_names"][0] == "blocks.0.mlp.hook_post"
    assert meta["task"]["args"]["train_size"] == 48


def test_probe_and_neurons_end_to_end(run):
    rc, out, err = cli("probe", run, "--batch-size", "5", "--pooling")
    assert rc == 0, err
    assert "top 5 neurons" in out and "wrote" in out
    result = Run.open(run).probe_result()
    assert result.dev_acc.shape == (2, 2, 64) and result.max_pool_dev_acc is not None
    assert result.meta["lineage"]["prompt_fingerprint"] == Run.open(run).meta["prompt_fingerprint"]
    rc, out, _ = cli("neurons", run, "--top", "0.05", "--per-layer")
    assert rc == 0
    ns = Run.open(run).neurons()
    best = result.scores().flatten().argmax().item()
    assert len(ns) >= 4 and f"L{best // 64}.N{best % 64}" in out


def test_probe_with_a_permutation_null_prints_records_and_reports_it(run, tmp_path):
    rc, out, err = cli("probe", run, "--permutations", "19")
    assert rc == 0, err
    r = Run.open(run)
    result = r.probe_result()
    null = json.loads((run / "predictivity.safetensors.json").read_text())["null"]
    assert null == json.loads(json.dumps(result.null_summary())) and null["permutations"] == 19
    threshold = result.fwer_threshold("dev")
    assert f"dev: family-wise 5% threshold {threshold:.3f} (19 label permutations)" in out
    assert f"{int(result.significant('dev').sum())} neurons above it" in out
    rc, _, err = cli("report", run, "--out", tmp_path / "r.html", "--no-views")
    assert rc == 2 and "neurons.safetensors was derived from another" in err  # re-probed: select again
    assert cli("neurons", run)[0] == 0 and cli("report", run, "--out", tmp_path / "r.html", "--no-views")[0] == 0
    page = (tmp_path / "r.html").read_text()
    assert f"neurons are above the family-wise 5% threshold of {threshold:.3f}" in page
    assert cli("probe", run, "--permutations", "-1")[0] == 2


def test_a_step_may_place_the_model_otherwise_than_tuning_did(run, tmp_path):
    """run.json records tuning's resources; probe and perturb on a disk-offloaded model give the same numbers."""
    assert Run.open(run).meta["resources"] == {"device": "cpu", "device_map": None, "max_memory": None,
                                               "offload_folder": None, "memory_budget": None, "devices": ["cpu"]}
    before = Run.open(run).probe_result()
    rc, out, err = cli("probe", run, "--device-map", '{"": "disk"}', "--offload-folder", tmp_path / "off")
    assert rc == 0, err
    after = Run.open(run).probe_result()
    assert torch.equal(after.dev_acc, before.dev_acc) and torch.equal(after.baseline, before.baseline)
    assert after.meta["resources"]["devices"] == ["disk"] and after.meta["resources"]["device_map"] == {"": "disk"}
    assert cli("perturb", run, "--method", "zero", "--fractions", "0,0.1", "--max-memory", "cpu=1000",
               "--offload-folder", tmp_path / "off2")[0] == 0
    assert json.loads((run / "perturb_zero.json").read_text())["meta"]["resources"]["max_memory"] == {"cpu": 1000}
    rc, _, err = cli("probe", run, "--device", "cpu", "--device-map", "auto")
    assert rc == 2 and "two ways" in err
    rc, _, err = cli("probe", run, "--max-memory", "cpu=lots")
    assert rc == 2 and "not a size" in err


def test_a_reprobe_of_the_same_run_gives_the_same_numbers(run):
    before = Run.open(run).probe_result()
    assert cli("probe", run, "--batch-size", "32")[0] == 0
    assert torch.equal(Run.open(run).probe_result().baseline, before.baseline)


def test_perturb_writes_json_and_csv_with_lineage(run):
    rc, out, err = cli("perturb", run, "--method", "zero", "--fractions", "0,0.1", "--controls", "2", "--per-layer")
    assert rc == 0, err
    assert "skill acc" in out and "perturb_zero" in out
    data = read_json(run / "perturb_zero.json")
    assert data["method"] == "zero" and len(data["rows"]) == 6 and data["meta"]["per_layer"] is True
    assert data["lineage"]["parent"]["artifact"] == "predictivity"
    csv = (run / "perturb_zero.csv").read_text().splitlines()
    assert csv[0].startswith("fraction,n_neurons,skill_accuracy") and len(csv) == 3
    assert "gap_ci_low,gap_ci_high" in csv[0]


def test_perturb_draws_give_the_gap_an_interval_in_the_files_the_report_and_the_demo(run, tmp_path):
    rc, out, err = cli("perturb", run, "--fractions", "0,0.1", "--controls", "2", "--draws", "3")
    assert rc == 0, err
    row = read_json(run / "perturb_gaussian.json")["summary"][1]
    assert row["gap_ci_low"] <= row["gap"] <= row["gap_ci_high"]
    assert cli("report", run, "--out", tmp_path / "r.html", "--no-views")[0] == 0
    page = (tmp_path / "r.html").read_text()
    assert f"{100 * row['gap_ci_low']:.1f} to {100 * row['gap_ci_high']:.1f}" in page
    assert steps._gap_text(row).endswith(f"(95% CI {100 * row['gap_ci_low']:.1f} to {100 * row['gap_ci_high']:.1f})")
    assert cli("perturb", run, "--method", "zero", "--draws", "2")[0] == 2  # deterministic: one draw
    assert not list(run.glob("*checkpoint*"))


@pytest.mark.parametrize("argv, message", [
    (["--fractions", "0,1.5"], "outside"), (["--fractions", "a"], "comma-separated"),
    (["--controls", "-1"], "--controls"), (["--std", "-1"], "--std"), (["--positions", "middle"], "--positions"),
])
def test_perturb_validates_its_options(run, argv, message):
    rc, _, err = cli("perturb", run, *argv)
    assert rc == 2 and message in err


def test_patch_prints_the_effect_and_uses_the_saved_neurons(run):
    rc, out, err = cli("patch", run, "--source-text", "a good film", "--target-text", "the plot was bad", "--top", "5")
    assert rc == 0, err
    assert "patching 5 skill neurons" in out and "restored" in out and "patched" in out
    r = Run.open(run)
    r.save_neurons(NeuronSet.from_pairs([(0, 1), (1, 2), (1, 3)], 2, 64))
    assert steps.patch(r, "a good film", "a bad film").n_neurons == 3  # the saved set
    assert steps.patch(r, "a good film", "a bad film", top=0.1).n_neurons == 13  # --top selects afresh


def test_prune_prunes_retunes_and_reports(run, tmp_path):
    out = tmp_path / "p"
    rc, text, err = cli("prune", run, "--keep", "0.25", "--layers", "1", "--batch-size", "8", "--repeats", "1",
                        "--retune-steps", "2", "--out", out)
    assert rc == 0, err
    for needle in ("parameters kept (total)", "parameters kept (ffn)", "dev accuracy (32): unpruned",
                   "pruned + re-tuned prompt", "speedup", f"wrote {out}"):
        assert needle in text, needle
    loaded = load_pruned(out)
    assert pruning_info(loaded).widths == {0: 64, 1: 16}
    summary = read_json(out / "prune_summary.json")
    assert summary["lineage"]["parent"]["artifact"] == "predictivity"


@pytest.mark.parametrize("argv, match", [
    (["--keep", "0"], "--keep must be"), (["--keep", "2.5"], "--keep must be"), (["--layers", "0-5"], "layers 0-1"),
    (["--layers", "a"], "layer numbers and ranges"), (["--retune-steps", "-1"], "--retune-steps"),
    (["--position", "first"], "--position"), (["--repeats", "0"], "--repeats"),
    (["--calibration-size", "0"], "--calibration-size"), (["--retune-train-size", "0"], "--retune-train-size"),
    (["--protect-massive", "-1"], "--protect-massive"), (["--retune-lr", "-0.1"], "--retune-lr"),
])
def test_prune_validates_its_options(run, tmp_path, argv, match):
    rc, _, err = cli("prune", run, "--out", tmp_path / "never", *argv)
    assert rc == 2 and match in err, err
    assert not (tmp_path / "never").exists()


def test_retuning_on_more_data_with_the_control(run, tmp_path):
    from skill_lens.studies.pruning_study import PruneOptions, prune_run

    opts = PruneOptions(keep=0.25, layers=[1], retune={"steps": 3, "schedule": "linear"}, retune_train_size=56,
                        control=True, repeats=1)
    s = prune_run(Run.open(run), opts, tmp_path / "p")
    assert set(s["accuracy"]) == {"pruned", "pruned_retuned", "unpruned", "unpruned_retuned"}
    assert set(s["accuracy_test"]) == {"pruned_retuned", "unpruned", "unpruned_retuned"}
    assert s["retune_train_size"] == 56 and s["retune"]["steps"] == 3 and s["retune"]["schedule"] == "linear"
    assert [h["step"] for h in s["retune_history"]["unpruned"]] == [2, 3]
    assert pruning_info(load_pruned(tmp_path / "p")).baseline_source.startswith("calibrated on 48 training")
    with pytest.raises(ValueError, match="unknown re-tuning option"):
        prune_run(Run.open(run), PruneOptions(keep=0.25, layers=[1], retune={"steps": 2, "learning_rate": 0.1}))


def test_a_larger_training_split_must_keep_dev_and_test(run):
    from dataclasses import replace

    from skill_lens.studies.pruning_study import task_with_train_size

    r = Run.open(run)
    bigger = task_with_train_size(r, 56)
    assert len(bigger.train) == 56 and bigger.dev == r.task.dev and bigger.test == r.task.test
    other = Run(r.path, r.meta, None, replace(r.task, dev=r.task.test))
    with pytest.raises(ArtifactError, match="other dev or test splits with train_size=56"):
        task_with_train_size(other, 56)


def test_robustness_writes_json_and_csv(run):
    rc, out, err = cli("robustness", run, "--adversarial", "typos:0.2", "--ks", "0.05,0.1", "--curve-fractions",
                       "0,0.1", "--method", "zero", "--patch-top", "0.1")
    assert rc == 0, err
    data = json.loads((run / "robustness_typos_0.2.json").read_text())
    assert data["overlap"]["ks"] == [0.05, 0.1] and set(data["curves"]) == {"clean_neurons", "adversarial_neurons"}
    assert data["repair"]["n_neurons"] == 13 and data["accuracy"]["paired"]
    assert data["lineage"]["prompt_fingerprint"] == Run.open(run).meta["prompt_fingerprint"]
    csv = (run / "robustness_typos_0.2.csv").read_text().splitlines()
    assert csv[0] == "k,overlap,chance,layer_0,layer_1" and len(csv) == 3
    assert "Spearman" in out
    assert cli("robustness", run, "--adversarial", "typos:0.2", "--ks", "2")[0] == 2
    assert sorted(p.name for p in run.glob("robustness_*")) == ["robustness_typos_0.2.csv", "robustness_typos_0.2.json"]


def test_report_with_and_without_views(run, tmp_path):
    out = tmp_path / "r.html"
    rc, printed, err = cli("report", run, "--out", out, "--neurons", "2")
    assert rc == 0, err
    assert 'class="slv-legend"' in out.read_text() and f"wrote {out}" in printed  # the views, static HTML
    assert cli("report", run, "--out", tmp_path / "n.html", "--no-views")[0] == 0
    rc, _, err = cli("report", tmp_path / "nowhere")
    assert rc == 2 and "not a finished run" in err


def test_demo_runs_every_step_and_reuses_a_finished_tuning(model_dir, task_csv, tmp_path):
    from skill_lens.model.loading import load_model
    from skill_lens.data.sources import load_task

    model = load_model(str(model_dir("causal")))
    task = load_task(f"csv:{task_csv(0)}", train_size=48, dev_size=32, test_size=32)
    config = TuneConfig(prompt_length=2, steps=2, eval_every=2, batch_size=8)
    lines = []
    done = steps.demo(model, task, tmp_path / "demo", config, controls=1, top=0.25, log=lines.append)
    assert done["report"].exists() and "largest gap" in lines[-1] and len(lines) == 6
    written = {name: (tmp_path / "demo" / name).stat().st_ino for name in ("run.json", "prompt.safetensors")}
    again = steps.demo(model, task, tmp_path / "demo", config, controls=1, top=0.25, log=lambda line: None)
    # reused, not re-tuned: an atomic rewrite would have replaced the files (new inodes)
    assert {name: (tmp_path / "demo" / name).stat().st_ino for name in written} == written
    assert again["run"].meta["prompt_fingerprint"] == done["run"].meta["prompt_fingerprint"]


def test_cli_tune_then_every_step_on_each_family(model_dir, task_csv, tmp_path):
    for family in ("mlm", "seq2seq"):
        out = tmp_path / family
        assert cli("tune", "--model", model_dir(family), "--task", f"csv:{task_csv(0)}", "--out", out,
                   *FAST_TUNE)[0] == 0
        for argv in (["probe"], ["neurons", "--top", "0.1"], ["perturb", "--fractions", "0,0.1", "--controls", "1"],
                     ["report", "--no-views"]):
            rc, _, err = cli(argv[0], out, *argv[1:])
            assert rc == 0, (family, argv, err)
