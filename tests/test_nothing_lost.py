"""Nothing lost, ever (issue 29): the hostile or careless user's cases, one row each, on tiny models.

Every row asserts the documented exit code; a failure is one line naming the problem and its fix, with no
traceback; the user's own files are byte-identical afterwards; and the run is readable (a reader completes a
commit a kill left half applied, and every file the manifest lists is whole) and is either the run before the
command ("old") or the one the command makes ("new"). Concurrent cases, Ctrl-C, SIGTERM and SIGKILL use real
processes; the kill-at-every-write test of tune, probe, perturb and prune is ``tests/killharness.py``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clitools import FAST_TUNE, cli, copy_run, snapshot

from skill_lens import steps
from skill_lens.intervening.suppression import suppression_curve
from skill_lens.intervening.interventions import InterventionError, intervene
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig, tune
from skill_lens.store.artifacts import load_tensors, save_tensors
from skill_lens.store.checkpoint import Checkpoint
from skill_lens.store.manifest import Folder
from skill_lens.workflow.runs import Run

HERE = Path(__file__).parent
USER = {"notes.txt": "mine", "perturb_my_analysis.csv": "a,b\n1,2\n", "robustness_mine.json": '{"x": 1}',
        "predictivity.safetensors.bak": "backup"}
PERTURB = ["--fractions", "0,0.1", "--controls", "1", "--method", "zero"]
PRUNE = ["--keep", "0.5", "--repeats", "1", "--protect-massive", "0", "--calibration-size", "8"]
ENV = {**os.environ, "SKILL_LENS_QUIET": "1", "SKILL_LENS_INPUT_DISK_MB": "0", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------ helpers
def with_user_files(run: Path, names=tuple(USER)) -> dict[str, str]:
    for name in names:
        (run / name).write_text(USER[name])
    return user_files(run, names)


def user_files(run: Path, names=tuple(USER)) -> dict[str, str]:
    return {k: v for k, v in snapshot(run).items() if k in names}


def committed(run: Path) -> dict:
    """What a reader sees: every folder's manifest, each listed file checked whole."""
    Run.open(run)
    out = {}
    for key, folder in (("run", Folder(run)), ("pruned", Folder(run / "pruned"))):
        for rel in folder.manifest():
            folder.verify(rel, "rerun")
        out[key] = {rel: e["sha256"] for rel, e in folder.manifest().items()}
    return out


def one_line_error(err: str, step: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith(f"skill-lens {step}: "), err
    for needle in needles:
        assert needle in err, err


def refused(argv, where: Path, *needles: str) -> str:
    before = snapshot(where)
    rc, out, err = cli(*argv)
    assert rc == 2, (out, err)
    one_line_error(err, argv[0], *needles)
    assert snapshot(where) == before, f"{argv[0]} changed {where} although it failed"
    return err


def spawn(*argv, preexec_fn=None, **kw) -> subprocess.Popen:
    """``skill-lens ARGV`` in a process of its own, with Ctrl-C's default handling (as from a terminal, even when
    pytest itself runs as a background job, whose children inherit SIGINT ignored), then ``preexec_fn``."""
    def before_exec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if preexec_fn is not None:
            preexec_fn()

    return subprocess.Popen([sys.executable, "-c", "from skill_lens.cli import main; raise SystemExit(main())",
                             *map(str, argv)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=before_exec, **kw)


def wait_for_lock(run: Path, step: str, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Wait until ``proc`` holds ``run``'s lock for ``step``; return its pid."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            record = json.loads((run / ".lock").read_text() or "{}")
        except (OSError, ValueError):
            record = {}
        if record.get("step") == step and record.get("pid") == proc.pid:
            return proc.pid
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{step} never took the lock of {run}")


def tune_argv(model_dir, task_csv, out, *extra):
    return ["tune", "--model", model_dir("causal"), "--task", f"csv:{task_csv(0)}", "--out", out, *FAST_TUNE, *extra]


@pytest.fixture
def run(made_run, tmp_path):
    """A probed run with neurons selected and a suppression curve, and the user's own files beside them."""
    run = copy_run(made_run("causal"), tmp_path / "run")
    assert cli("perturb", run, *PERTURB)[0] == 0
    return run


# ------------------------------------------------------------------ one writer per run (real processes)
def test_two_tunes_into_one_run_one_is_refused_naming_the_other(model_dir, task_csv, tmp_path):
    out = tmp_path / "run"
    first = spawn(*tune_argv(model_dir, task_csv, out, "--steps", "200", "--eval-every", "200"))
    pid = wait_for_lock(out, "tune", first)
    rc, _, err = cli(*tune_argv(model_dir, task_csv, out, "--seed", "1"))
    assert rc == 2
    one_line_error(err, "tune", "is being written by `skill-lens tune`", f"process {pid}", "wait for it")
    assert first.wait(600) == 0, first.communicate()
    assert Run.open(out).meta["seed"] == 0 and committed(out)["run"]  # the first one's run, whole


def test_overwrite_while_perturb_runs_is_refused_and_perturb_finishes(run, model_dir, task_csv):
    mine = with_user_files(run)
    slow = spawn("perturb", run, "--fractions", "0,0.05,0.1,0.2,0.3", "--controls", "10", "--method", "zero")
    pid = wait_for_lock(run, "perturb", slow)
    ours = lambda: {k: v for k, v in snapshot(run).items() if "checkpoint" not in k}  # noqa: E731 (perturb's own)
    before = ours()
    rc, _, err = cli(*tune_argv(model_dir, task_csv, run, "--overwrite", "--seed", "1"))
    assert rc == 2
    one_line_error(err, "tune", "`skill-lens perturb`", f"process {pid}")
    assert ours() == before
    assert slow.wait(600) == 0, slow.communicate()
    assert Run.open(run).read_result("perturb", run / "perturb_zero.json")["meta"]["controls"] == 10
    assert user_files(run) == mine


def test_a_killed_writers_lock_is_stale_and_the_rerun_resumes(run):
    mine = with_user_files(run)
    old = committed(run)
    work = ("--fractions", ",".join(f"{f / 100:g}" for f in range(0, 55, 5)), "--controls", "30", "--method", "zero")
    victim = spawn("perturb", run, *work)  # enough rows that it is still running when killed, also on a fast machine
    wait_for_lock(run, "perturb", victim)
    time.sleep(0.3)  # some rows done
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the perturb finished before it was killed: give it more rows"
    assert committed(run) == old and user_files(run) == mine  # old
    rc, _, err = cli("perturb", run, *work)
    assert rc == 0, err
    assert not list(run.glob("*checkpoint*")) and not (run / ".staging").exists() and user_files(run) == mine


def test_a_torchrun_probe_is_one_writer(run, tmp_path):
    """Every rank of ``torchrun ... skill-lens probe`` is the same step: rank 0 holds the lock and commits."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                           str(port), "--no-python", str(Path(sys.executable).with_name("skill-lens")), "probe", run,
                           "--pooling"], env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Run.open(run).probe_result().meta["world_size"] == 2 and committed(run)["run"]
    assert not list(run.glob("probe_checkpoint*"))


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_and_sigterm_stop_in_one_line_and_leave_no_temporaries(model_dir, task_csv, tmp_path, sig, code,
                                                                       word):
    out = tmp_path / "run"
    argv = tune_argv(model_dir, task_csv, out, "--steps", "3000", "--eval-every", "50")
    proc = spawn(*argv)
    wait_for_lock(out, "tune", proc)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    one_line_error(err, "tune", f"{word}; rerun the same command to resume")
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []  # (a checkpoint, if one was saved)
    assert not [n for n in left if n.endswith(".tmp") or n == ".staging"], left  # temporaries removed on the way out
    assert not (out / "run.json").exists()  # old: no run yet


def test_out_of_disk_leaves_the_old_run_and_a_rerun_finishes(run, model_dir, task_csv):
    mine = with_user_files(run)
    old = committed(run)
    argv = tune_argv(model_dir, task_csv, run, "--overwrite", "--seed", "1")
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # noqa: E731  (like `ulimit -f`)
    proc = spawn(*argv, preexec_fn=limit)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err
    one_line_error(err, "tune", "File too large")
    assert committed(run) == old and user_files(run) == mine  # old, whole
    rc, _, err = cli(*argv)
    assert rc == 0, err
    assert Run.open(run).meta["seed"] == 1 and user_files(run) == mine  # new


@pytest.mark.parametrize("step", ["tune", "probe", "perturb", "prune"])
def test_a_kill_at_every_write_leaves_the_old_or_the_new_run_and_a_rerun_finishes(step, tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "killharness.py"), step, str(tmp_path)], env=ENV,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows and len(rows) == rows[0]["of"] and all(r["killed"] for r in rows), proc.stdout
    for r in rows:
        assert r["state"] in ("old", "new") and r["user_files_intact"], r
        assert r["rerun"] == 0 and r["after_rerun"] == "new" and r["leftovers"] == [], r
    assert {r["state"] for r in rows} == {"old", "new"}  # killed before and after the commit point


# ------------------------------------------------------------------ only our own files removed
def test_overwrite_removes_only_what_the_old_run_wrote_after_the_new_one_is_committed(run, model_dir, task_csv):
    mine = with_user_files(run)
    (run / "report.html").write_text("<p>my own report</p>")
    mine["report.html"] = snapshot(run)["report.html"]
    rc, _, err = cli(*tune_argv(model_dir, task_csv, run, "--overwrite", "--seed", "1"))
    assert rc == 0, err
    assert user_files(run, (*USER, "report.html")) == mine
    left = set(committed(run)["run"])
    assert "predictivity.safetensors" not in left and "perturb_zero.json" not in left
    assert not (run / "predictivity.safetensors").exists() and not (run / "perturb_zero.csv").exists()
    assert Run.open(run).meta["seed"] == 1


def test_a_run_made_before_manifests_stays_usable_and_its_files_are_adopted(run, model_dir, task_csv):
    (run / "manifest.json").unlink()  # as an older skill_lens left it
    mine = with_user_files(run)
    assert cli("neurons", run, "--top", "0.1")[0] == 0
    listed = committed(run)["run"]
    assert {"run.json", "prompt.safetensors", "predictivity.safetensors", "perturb_zero.csv"} <= set(listed)
    assert not set(USER) & set(listed)  # ours by name and lineage only
    assert cli("perturb", run, *PERTURB)[0] == 0
    rc, _, err = cli("report", run, "--no-views")
    assert rc == 0, err
    assert cli(*tune_argv(model_dir, task_csv, run, "--overwrite", "--seed", "1"))[0] == 0
    assert user_files(run) == mine and not (run / "perturb_zero.json").exists()


def test_prune_out_replaces_only_its_own_files(run, tmp_path):
    out = tmp_path / "small"
    assert cli("prune", run, "--out", out, *PRUNE)[0] == 0
    (out / "my_eval.txt").write_text("precious")
    rc, _, err = cli("prune", run, "--out", out, *PRUNE[:1], "0.25", *PRUNE[2:])
    assert rc == 0, err
    assert (out / "my_eval.txt").read_text() == "precious"
    assert json.loads((out / "pruning.json").read_text())["widths"]["1"] == 16


def test_a_users_own_report_in_the_run_is_never_replaced(run):
    (run / "report.html").write_text("<p>my own report</p>")
    refused(["report", run, "--no-views"], run, "not a skill_lens report")


# ------------------------------------------------------------------ content checked, not only lineage
def test_a_changed_float_in_the_predictivity_is_refused(run):
    tensors, meta = load_tensors(run / "predictivity.safetensors")
    tensors["dev_acc"][1, 0, 5] = 1.0  # the header is intact: only the content changed
    save_tensors(run / "predictivity.safetensors", tensors, meta)
    for step, extra in (("neurons", []), ("perturb", PERTURB)):
        refused([step, run, *extra], run, "predictivity.safetensors changed after `probe` wrote it",
                f"skill-lens probe {run}")


def test_a_neuron_mask_flipped_to_all_true_is_refused(run):
    tensors, meta = load_tensors(run / "neurons.safetensors")
    save_tensors(run / "neurons.safetensors", {**tensors, "mask": torch.ones_like(tensors["mask"])}, meta)
    refused(["report", run, "--no-views"], run, "neurons.safetensors changed after `neurons` wrote it",
            f"skill-lens neurons {run}")


@pytest.mark.parametrize("how", ["moved", "copied", "symlinked"])
def test_a_moved_copied_or_symlinked_run_stays_valid(run, tmp_path, how):
    before = snapshot(run)
    where = tmp_path / how
    {"moved": shutil.move, "copied": shutil.copytree, "symlinked": lambda a, b: os.symlink(a, b)}[how](run, where)
    rc, _, err = cli("probe", where)  # re-probing through another path gives the very same predictivity
    assert rc == 0, err
    assert snapshot(where)["predictivity.safetensors"] == before["predictivity.safetensors"]
    assert len(Run.open(where).neurons()) > 0  # so what was derived from it stays valid
    assert cli("report", where, "--no-views")[0] == 0


# ------------------------------------------------------------------ bad settings, found before any work
def test_a_text_column_that_is_the_label_column_is_refused(model_dir, task_csv, tmp_path):
    refused([*tune_argv(model_dir, task_csv, tmp_path / "run"), "--text-column", "label"], tmp_path,
            "text column 'label' is the label column", "--text-column")


def test_a_text_column_that_gives_the_label_away_is_refused(model_dir, task_csv, tmp_path):
    lines = task_csv(0).read_text().splitlines()
    csv = tmp_path / "data" / "leak_train.csv"
    csv.parent.mkdir()
    csv.write_text("text,answer,label\n" + "".join(f"{line.rsplit(',', 1)[0]},{line.rsplit(',', 1)[1].upper()},"
                                                   f"{line.rsplit(',', 1)[1]}\n" for line in lines[1:]))
    refused(["tune", "--model", model_dir("causal"), "--task", f"csv:{csv}", "--out", tmp_path / "run", *FAST_TUNE,
             "--text-column", "answer"], tmp_path, "gives the label away", "--text-column")


def test_counts_that_cannot_fit_in_memory_are_refused_with_the_estimate(run):
    t0 = time.monotonic()
    refused(["perturb", run, "--controls", "100000000"], run, "would need about", "of memory", "--controls")
    refused(["probe", run, "--permutations", "1000000000"], run, "would need about", "--permutations")
    assert time.monotonic() - t0 < 60  # before any work (the MemoryError came after 47 s)


def test_a_truncated_model_file_is_named_in_one_line(model_dir, task_csv, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(model_dir("causal"), model)
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    refused(["tune", "--model", model, "--task", f"csv:{task_csv(0)}", "--out", tmp_path / "run", *FAST_TUNE],
            tmp_path, f"{weights} is truncated or corrupt")


def test_a_user_hook_returning_another_shape_is_refused_by_intervene():
    model = tiny_model()
    with pytest.raises(InterventionError, match=r"returned a tensor of shape \[1, 1, 64\] for an activation"):
        with intervene(model, [("blocks.0.mlp.hook_post", lambda act, hook: act[:, :1].clone())]):
            model(torch.tensor([[1, 2, 3]]))
    assert not model.hook_dict["blocks.0.mlp.hook_post"].fwd_hooks  # and nothing leaks
    with intervene(model, [("blocks.0.mlp.hook_post", lambda act, hook: act * 0)]):  # the same shape: fine
        model(torch.tensor([[1, 2, 3]]))


# ------------------------------------------------------------------ sharing and housekeeping
@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_files_get_the_umasks_permissions(run, tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        assert cli("neurons", run, "--top", "0.1")[0] == 0
        assert cli("prune", run, "--out", tmp_path / "small", *PRUNE)[0] == 0
    finally:
        os.umask(old)
    assert (run / "neurons.safetensors").stat().st_mode & 0o777 == file_mode
    assert (run / "manifest.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "small" / "model.safetensors").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "small").stat().st_mode & 0o777 == dir_mode


def test_temporaries_of_a_dead_process_are_cleaned_at_the_next_start(run):
    dead = run / ".neurons.safetensors.sl999999999.abcd1234.tmp"
    dead.write_bytes(b"\0" * 10)
    (run / ".staging").mkdir()
    (run / ".staging" / "neurons.safetensors").write_bytes(b"half")  # staged, never committed: rolled back
    mine = with_user_files(run, ("notes.txt",))
    (run / ".my.tmp").write_text("not ours")
    assert cli("neurons", run, "--top", "0.1")[0] == 0
    assert not dead.exists() and not (run / ".staging").exists()
    assert (run / ".my.tmp").read_text() == "not ours" and user_files(run, ("notes.txt",)) == mine


def test_checkpoints_write_only_what_changed(run, tmp_path, monkeypatch):
    # a curve's rows are appended to one file, a line each, never rewritten; the file goes when the curve is done
    r = Run.open(run)
    sizes, append = [], Checkpoint.append

    def spy(self, record, sync=True):
        append(self, record, sync)
        sizes.append((self.log.stat().st_ino, self.log.stat().st_size))

    monkeypatch.setattr(Checkpoint, "append", spy)
    ck = tmp_path / "c.checkpoint.safetensors"
    curve = suppression_curve(r.prompted(), r.task.dev, r.probe_result().scores("dev"), fractions=[0, 0.1],
                              method="zero", controls=2, checkpoint=ck)
    monkeypatch.undo()
    grown = [b - a for (_, a), (_, b) in zip(sizes, sizes[1:])]
    assert len(sizes) == len(curve.rows) and len({ino for ino, _ in sizes}) == 1  # one file, appended to
    assert min(grown) > 0 and max(grown) < 2 * min(grown)  # each save adds one row, not all of them again
    assert not ck.exists() and not Path(str(ck) + ".log").exists()
    # tuning: the checkpoint's state is a few numbers at any step; the loss curve goes to its own file once
    model, task = tiny_model(), tiny_task()
    cfg = TuneConfig(prompt_length=2, steps=12, eval_every=4, batch_size=8)
    tune(model, task, cfg, checkpoint=tmp_path / "t" / "checkpoint.safetensors")
    state = load_tensors(tmp_path / "t" / "checkpoint.safetensors")[1]["state"]
    assert sorted(state) == ["bad_evals", "best_dev", "best_step", "step"]
    made = steps.tune(tmp_path / "r", model, task, cfg)
    assert [h["step"] for h in made.meta["history"]] == [4, 8, 12]  # evaluations only
    assert len(json.loads((tmp_path / "r" / "tuning_curve.json").read_text())["loss"]) == 12
