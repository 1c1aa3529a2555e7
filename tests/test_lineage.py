"""A run owns its artifacts: foreign, stale or damaged ones are refused by every step that would use them,
with an error naming the fix, no traceback, and nothing of the user's removed or half-written.

Runs are made through ``skill-lens`` itself on tiny models saved as local directories, for the three
families (causal, masked LM, seq2seq)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from clitools import FAST_TUNE, cli, copy_run, snapshot

from skill_lens.store.artifacts import load_tensors, save_tensors, write_json
from skill_lens.store.manifest import Folder
from skill_lens.workflow.runs import Run, file_fingerprint

FAMILIES = ("causal", "mlm", "seq2seq")
# every step that reads the predictivity, with fast options
USES_PREDICTIVITY = {
    "neurons": [],
    "perturb": ["--fractions", "0,0.1", "--controls", "1", "--method", "zero"],
    "patch": ["--source-text", "a good film", "--target-text", "a bad film", "--top", "0.1"],
    "prune": ["--keep", "0.5", "--repeats", "1", "--protect-massive", "0"],
    "report": ["--no-views"],
}
USES_PROMPT = {"probe": [], "robustness": ["--adversarial", "word_swap:0.5", "--ks", "0.1", "--curve-fractions", "",
                                           "--patch-top", "0"], **USES_PREDICTIVITY}


def refused(argv, where, *needles):
    """Run ``argv``; it must fail with a message holding every needle, and leave ``where`` as it was."""
    before = snapshot(where)
    rc, out, err = cli(*argv)
    assert rc == 2, (out, err)
    assert "Traceback" not in err and err.splitlines()[-1].startswith(f"skill-lens {argv[0]}: error: "), err
    for needle in needles:
        assert needle in err, err
    assert snapshot(where) == before, f"{argv[0]} changed {where} although it failed"
    return err


# ------------------------------------------------------------------ lineage
@pytest.mark.parametrize("family", FAMILIES)
def test_a_made_run_passes_every_check(made_run, family, tmp_path):
    run = Run.open(copy_run(made_run(family), tmp_path / "run"))
    assert run.probe_result().baseline.shape[1] == 2 and len(run.neurons()) > 0
    rc, out, err = cli("perturb", run.path, *USES_PREDICTIVITY["perturb"])
    assert rc == 0, err
    assert run.read_result("perturb", run.path / "perturb_zero.json")["lineage"]["parent"]["artifact"] == "predictivity"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("step", sorted(USES_PROMPT))
def test_a_prompt_from_another_runs_task_is_refused(made_run, family, step, tmp_path):
    run = copy_run(made_run(family), tmp_path / "run")
    other = made_run(family, task_seed=1, steps=())
    shutil.copy(other / "prompt.safetensors", run / "prompt.safetensors")
    refused([step, run, *USES_PROMPT[step]], run, "prompt.safetensors is not the prompt run", "--overwrite")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("step", sorted(USES_PREDICTIVITY))
def test_a_predictivity_from_another_run_is_refused(made_run, family, step, tmp_path):
    run = copy_run(made_run(family), tmp_path / "run")
    other = made_run(family, task_seed=1, steps=("probe",))
    shutil.copy(other / "predictivity.safetensors", run / "predictivity.safetensors")
    refused([step, run, *USES_PREDICTIVITY[step]], run, "predictivity.safetensors was made from other",
            f"skill-lens probe {run}")


@pytest.mark.parametrize("step", sorted(USES_PREDICTIVITY))
def test_a_retuned_prompt_makes_old_derived_artifacts_stale(made_run, step, tmp_path):
    """As if the prompt had been re-tuned in place (by hand or an older version) without removing what
    was derived from the old one: the old predictivity no longer matches the prompt."""
    run = copy_run(made_run("causal"), tmp_path / "run")
    tensors, meta = load_tensors(run / "prompt.safetensors")
    save_tensors(run / "prompt.safetensors", {"prompt": tensors["prompt"] + 1}, meta)
    record = json.loads((run / "run.json").read_text())
    record["prompt_fingerprint"] = file_fingerprint(run / "prompt.safetensors")
    (run / "run.json").write_text(json.dumps(record))
    refused([step, run, *USES_PREDICTIVITY[step]], run, "was made from other prompt", f"skill-lens probe {run}")


def test_neurons_of_an_earlier_predictivity_are_refused(made_run, tmp_path):
    """The predictivity was re-made (its lineage is fine) after the neurons were selected from the old one."""
    run = copy_run(made_run("causal"), tmp_path / "run")
    result = Run.open(run).probe_result()
    result.dev_acc = 1 - result.dev_acc
    Run.open(run).save_probe_result(result)  # committed through the run: its content is recorded
    assert cli("perturb", run, *USES_PREDICTIVITY["perturb"])[0] == 0  # the predictivity itself is fine
    refused(["patch", run, *USES_PREDICTIVITY["patch"][:4]], run, "neurons.safetensors was derived from another",
            f"skill-lens neurons {run}")
    refused(["report", run, "--no-views"], run, "neurons.safetensors was derived from another")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("step", ["probe", "perturb", "patch", "prune"])
def test_a_model_directory_with_changed_weights_is_refused(made_run, model_dir, family, step, tmp_path):
    """The run names a local directory; re-saving other weights there must not pass as the same model."""
    src = made_run(family)
    model = tmp_path / "model"
    shutil.copytree(model_dir(family), model)
    run = copy_run(src, tmp_path / "run")
    record = json.loads((run / "run.json").read_text())
    record["model"] = str(model)
    with Folder(run).writing("edit") as tx:  # run.json edited through skill_lens: its new bytes are recorded
        write_json(tx.path("run.json", "run"), record)
    assert cli("probe", run)[0] == 0  # the run itself is fine as long as the weights are the same
    shutil.rmtree(model)
    shutil.copytree(model_dir(family, seed=1), model)
    refused([step, run, *USES_PROMPT[step]], run, "weights", "differ")


# ------------------------------------------------------------------ overwriting
def test_tuning_again_into_a_finished_run_is_refused_unless_overwrite(made_run, model_dir, task_csv, tmp_path):
    run = copy_run(made_run("causal"), tmp_path / "run")
    (run / "my_notes.txt").write_text("mine")
    argv = ["tune", "--model", model_dir("causal"), "--task", f"csv:{task_csv(0)}", "--out", run, *FAST_TUNE]
    refused(argv, run, "already holds a tuned run", "--overwrite")
    rc, _, err = cli(*argv, "--overwrite", "--seed", "1")
    assert rc == 0, err
    left = sorted(p.name for p in run.iterdir())
    assert "predictivity.safetensors" not in left and "neurons.safetensors" not in left, left
    assert (run / "my_notes.txt").read_text() == "mine"
    assert Run.open(run).meta["seed"] == 1


def test_tune_refuses_a_directory_of_other_files(model_dir, task_csv, tmp_path):
    (tmp_path / "paper.tex").write_text("mine")
    refused(["tune", "--model", model_dir("causal"), "--task", f"csv:{task_csv(0)}", "--out", tmp_path, *FAST_TUNE],
            tmp_path, "not a skill_lens run", "new --out")


@pytest.mark.parametrize("target", ["user_dir", "run_dir", "user_file"])
def test_prune_out_never_replaces_what_it_did_not_write(made_run, target, tmp_path):
    run = copy_run(made_run("causal"), tmp_path / "run")
    out = {"user_dir": tmp_path / "mine", "run_dir": run, "user_file": tmp_path / "mine.txt"}[target]
    if target == "user_dir":
        out.mkdir()
        (out / "data.csv").write_text("precious")
    if target == "user_file":
        out.write_text("precious")
    refused(["prune", run, "--out", out, *USES_PREDICTIVITY["prune"]], tmp_path, "--out")


def test_prune_replaces_its_own_output(made_run, tmp_path):
    run = copy_run(made_run("causal"), tmp_path / "run")
    for _ in range(2):
        rc, _, err = cli("prune", run, "--out", tmp_path / "small", *USES_PREDICTIVITY["prune"])
        assert rc == 0, err
    assert (tmp_path / "small" / "pruning.json").exists()


def test_report_out_never_replaces_a_users_file(made_run, tmp_path):
    run = copy_run(made_run("causal"), tmp_path / "run")
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    refused(["report", run, "--out", mine, "--no-views"], tmp_path, "not a skill_lens report")
    for _ in range(2):  # its own report is replaced
        assert cli("report", run, "--out", tmp_path / "r.html", "--no-views")[0] == 0


# ------------------------------------------------------------------ damaged files
def _edit_run_json(run, edit):
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(edit(record)))


DAMAGE = {
    "run.json not an object": (lambda r: (r / "run.json").write_text("[1, 2]"), "not a JSON object"),
    "run.json not JSON": (lambda r: (r / "run.json").write_text("{"), "not valid JSON"),
    "run.json without model": (lambda r: _edit_run_json(r, lambda m: {k: v for k, v in m.items() if k != "model"}),
                               "no 'model' field"),
    "run.json with a string layer count": (lambda r: _edit_run_json(r, lambda m: {**m, "n_layers": "2"}),
                                           "field 'n_layers' should be of type int"),
    "run.json task without source": (lambda r: _edit_run_json(r, lambda m: {**m, "task": {"fingerprint": "x"}}),
                                     "'task.source'"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
@pytest.mark.parametrize("step", ["probe", "neurons", "report"])
def test_a_damaged_run_json_is_named(made_run, case, step, tmp_path):
    run = copy_run(made_run("causal"), tmp_path / "run")
    damage, needle = DAMAGE[case]
    damage(run)
    refused([step, run, *USES_PROMPT[step]], run, needle)


@pytest.mark.parametrize("shape", [(2,), (1, 2, 32), (5, 32), (2, 16)])
def test_a_prompt_tensor_of_the_wrong_shape_is_named(made_run, shape, tmp_path):
    run = copy_run(made_run("causal"), tmp_path / "run")
    _, meta = load_tensors(run / "prompt.safetensors")
    save_tensors(run / "prompt.safetensors", {"prompt": torch.zeros(shape)}, meta)
    _edit_run_json(run, lambda m: {**m, "prompt_fingerprint": file_fingerprint(run / "prompt.safetensors")})
    refused(["probe", run], run, f"shape {list(shape)}", "[2, 32]")


# ------------------------------------------------------------------ bad settings, checked before any work
BAD_TUNE = {
    "negative train size": (["--train-size", "-5"], "train"),
    "zero batch size": (["--batch-size", "0"], "--batch-size"),
    "zero eval interval": (["--eval-every", "0"], "--eval-every"),
    "zero steps": (["--steps", "0"], "--steps"),
    "zero patience": (["--patience", "0"], "--patience"),
    "negative learning rate": (["--lr", "-1"], "--lr"),
    "nan learning rate": (["--lr", "nan"], "--lr"),
    "zero prompt length": (["--prompt-length", "0"], "--prompt-length"),
    "more examples than exist": (["--train-size", "100000"], "train"),
}


def test_clamp_takes_a_smaller_split_and_records_it(model_dir, task_csv, tmp_path):
    out = tmp_path / "run"
    rc, _, err = cli("tune", "--model", model_dir("causal"), "--task", f"csv:{task_csv(0)}", "--out", out,
                     *FAST_TUNE, "--train-size", "100000", "--clamp")
    assert rc == 0, err
    task = Run.open(out).meta["task"]
    assert task["clamped"]["train"]["requested"] == 100000 and task["args"]["clamp"] is True
    assert len(Run.open(out).task.train) == task["clamped"]["train"]["available"]


@pytest.mark.parametrize("case", sorted(BAD_TUNE))
def test_bad_tuning_settings_are_refused_before_any_work(model_dir, task_csv, case, tmp_path):
    extra, needle = BAD_TUNE[case]
    out = tmp_path / "run"
    refused(["tune", "--model", model_dir("causal"), "--task", f"csv:{task_csv(0)}", "--out", out, *FAST_TUNE, *extra],
            tmp_path, needle)
    assert not out.exists()


LABELS = {
    "ints mixed with words": ["0", "1", "negative", "positive"],
    "a trailing space": ["negative", "positive", "positive "],
    "case": ["negative", "positive", "Positive"],
}


@pytest.mark.parametrize("case", sorted(LABELS))
def test_labels_that_would_silently_make_extra_classes_are_refused(model_dir, case, tmp_path):
    values = LABELS[case]
    csv = tmp_path / "data" / "odd_train.csv"
    csv.parent.mkdir()
    csv.write_text("text,label\n" + "".join(f"good film {i},{values[i % len(values)]}\n" for i in range(120)))
    refused(["tune", "--model", model_dir("causal"), "--task", f"csv:{csv}", "--label-words", "bad,good",
             "--out", tmp_path / "run", *FAST_TUNE], tmp_path, repr(values[-1]))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_text_too_long_anywhere_is_refused_before_tuning(model_dir, task_csv, family, tmp_path):
    csv = tmp_path / "data" / "long_train.csv"
    csv.parent.mkdir()
    lines = task_csv(0).read_text().splitlines()
    for i in range(8, len(lines), 8):  # some in dev and test, not only (or not at all) the first training example
        lines[i] = "good " * 20000 + ",good"
    csv.write_text("\n".join(lines) + "\n")
    refused(["tune", "--model", model_dir(family), "--task", f"csv:{csv}", "--out", tmp_path / "run", *FAST_TUNE],
            tmp_path, "--max-length")


@pytest.mark.parametrize("argv, needle", [
    (["probe", "{tmp}/nowhere"], "not a finished run"),
    (["perturb", "{run}", "--fractions", "0,2"], "fractions"),
    (["perturb", "{run}", "--batch-size", "0"], "--batch-size"),
    (["neurons", "{run}", "--top", "1.5"], "--top"),
    (["prune", "{run}", "--keep", "0"], "--keep"),
    (["prune", "{run}", "--layers", "0-9"], "--layers"),
    (["prune", "{run}", "--retune-steps", "2", "--retune-schedule", "cosine"], "schedule"),
    (["patch", "{run}", "--source-text", " ", "--target-text", "x"], "--source-text"),
    (["report", "{run}", "--neurons", "0"], "--neurons"),
    (["robustness", "{run}", "--adversarial", "nope:1"], "nope"),
])
def test_bad_options_of_later_steps_are_named(made_run, argv, needle, tmp_path):
    run = copy_run(made_run("causal"), tmp_path / "run")
    refused([a.format(run=run, tmp=tmp_path) for a in argv], tmp_path, needle)


def test_a_step_before_its_parent_names_the_step_to_run(made_run, tmp_path):
    run = copy_run(made_run("causal", steps=()), tmp_path / "run")
    refused(["neurons", run], run, f"skill-lens probe {run}")
    refused(["perturb", run], run, f"skill-lens probe {run}")
