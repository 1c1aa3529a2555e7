"""Kill a step with SIGKILL at every write it makes into a run, and check what each kill leaves.

``python tests/killharness.py STEP WORKDIR`` prepares a run in WORKDIR (the "old" state), runs STEP on a copy once
uninterrupted (the "new" state, and how many writes it makes), then for every write k: runs STEP on a fresh
copy, killed just before its k-th write; opens the run as a reader would; checks that the run is the old one
or the new one, every file the manifest lists is whole, and the user's files are byte-identical; reruns the
same command and checks it finishes with the new state and leaves nothing in progress behind. It prints one
JSON line per kill and exits 0.

Writes are the calls that change the run directory: ``os.replace``, ``rename``, ``unlink``, ``rmdir``,
``mkdir``, ``fsync``, ``truncate`` and ``ftruncate`` on a path (or file descriptor) inside it. Each attempt is a
forked child of this process (the model and libraries are loaded once; torch runs one thread so that a fork is
safe), killed for real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

os.environ.setdefault("SKILL_LENS_QUIET", "1")
os.environ.setdefault("SKILL_LENS_INPUT_DISK_MB", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)  # before any work: OpenMP's pool would not survive a fork

sys.path.insert(0, str(Path(__file__).parent))
from clitools import FAST_TUNE, cli, snapshot  # noqa: E402

from skill_lens.model.tiny import tiny_hf, tiny_task, tiny_tokenizer  # noqa: E402
from skill_lens.store.manifest import Folder  # noqa: E402
from skill_lens.workflow.runs import Run  # noqa: E402

WRITES = ("replace", "rename", "unlink", "remove", "rmdir", "mkdir", "fsync", "truncate", "ftruncate")
UNSTABLE = {"prune_summary.json"}  # holds timings: compared by name only
USER_FILES = {"notes.txt": "mine", "perturb_my_analysis.csv": "a,b\n1,2\n", "robustness_mine.json": "{}"}


def steps(model: Path, task: Path) -> dict:
    """Per step: the commands that make the old state, and the step (``{run}``: the run directory)."""
    tune = ["tune", "--model", model, "--task", f"csv:{task}", "--out", "{run}", *FAST_TUNE]
    prune = ["prune", "{run}", "--repeats", "1", "--protect-massive", "0", "--calibration-size", "8"]
    perturb = ["perturb", "{run}", "--controls", "1", "--method", "zero"]
    return {
        "tune": ([tune, ["probe", "{run}"], ["neurons", "{run}", "--top", "0.25"]], tune + ["--overwrite", "--seed", "1"]),
        "probe": ([tune, ["probe", "{run}"]], ["probe", "{run}", "--pooling"]),
        "perturb": ([tune, ["probe", "{run}"], perturb + ["--fractions", "0,0.05"]], perturb + ["--fractions", "0,0.1"]),
        "prune": ([tune, ["probe", "{run}"], prune + ["--keep", "0.25"]], prune + ["--keep", "0.5"]),
    }


def arm(root: Path, kill_at: int, counter: list[int]) -> None:
    """Count writes into ``root``; SIGKILL this process just before the ``kill_at``-th (0: never)."""
    root_s = os.path.realpath(root)

    def inside(args, kwargs) -> bool:
        for a in args[:2]:
            if isinstance(a, int):
                p = os.readlink(f"/proc/self/fd/{a}")
            elif isinstance(a, (str, bytes, os.PathLike)):
                p = os.fsdecode(a)
                if kwargs.get("dir_fd") is not None and not os.path.isabs(p):
                    p = os.path.join(os.readlink(f"/proc/self/fd/{kwargs['dir_fd']}"), p)
                p = os.path.abspath(p)
            else:
                continue
            if p == root_s or p.startswith(root_s + os.sep):
                return True
        return False

    for name in WRITES:
        orig = getattr(os, name)

        def wrapped(*args, __orig=orig, **kwargs):
            noop = __orig.__name__ == "mkdir" and os.path.isdir(args[0])  # mkdir(exist_ok=True) of what exists
            if not noop and inside(args, kwargs):
                counter[0] += 1
                if os.environ.get("KILLHARNESS_TRACE"):
                    os.write(2, f"{counter[0]} {__orig.__name__} {args[:2]}\n".encode())
                if counter[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return __orig(*args, **kwargs)

        setattr(os, name, wrapped)


def in_child(argv: list, run: Path, kill_at: int) -> tuple[int, int]:
    """Run ``skill-lens ARGV`` in a forked child (killed at its ``kill_at``-th write): ``(exit code, writes)``;
    the exit code is -9 when it was killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        counter = [0]
        arm(run, kill_at, counter)
        try:
            rc = cli(*[str(a).format(run=run) for a in argv])[0]
        except BaseException:
            rc = 99
        os.write(w, str(counter[0]).encode())
        os._exit(rc)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    writes = os.read(r, 64).decode()
    os.close(r)
    return os.waitstatus_to_exitcode(status), int(writes or -1)


def state(run: Path) -> dict:
    """The committed state a reader sees (after it completes a commit a kill left half applied): every folder's
    manifest, each file checked whole."""
    Run.open(run)
    out = {}
    for key, folder in (("run", Folder(run)), ("pruned", Folder(run / "pruned"))):
        folder.settle()
        files = folder.manifest()
        for rel in files:
            folder.verify(rel, "rerun")
        out[key] = {rel: None if rel in UNSTABLE else e["sha256"] for rel, e in files.items()}
    return out


def leftovers(run: Path) -> list[str]:
    """What a finished step must not leave: staged outputs, checkpoints, temporaries."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                  if ".staging" in p.parts or "checkpoint" in p.name or p.name.endswith(".tmp"))


def main(step: str, work: Path) -> None:
    model, task = work / "model", work / "tiny_train.csv"
    tiny_hf("causal").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    t = tiny_task(n_train=64, n_dev=32, n_test=32)
    rows = [(x, y) for s in t.splits().values() for x, y in zip(s.texts, s.labels)]
    task.write_text("text,label\n" + "".join(f"{x},{['bad', 'good'][y]}\n" for x, y in rows))
    prepare, argv = steps(model, task)[step]
    base = work / "base"
    for cmd in prepare:
        rc, _, err = cli(*[str(a).format(run=base) for a in cmd])
        assert rc == 0, err
    for name, text in USER_FILES.items():
        (base / name).write_text(text)
    user = {k: v for k, v in snapshot(base).items() if k in USER_FILES}
    old = state(base)
    ref = work / "ref"
    shutil.copytree(base, ref)
    rc, n = in_child(argv, ref, 0)
    assert rc == 0 and n > 0, (rc, n)
    new = state(ref)
    assert new != old
    for k in range(1, n + 1):
        run = work / f"k{k}"
        shutil.copytree(base, run)
        rc, _ = in_child(argv, run, k)
        seen = state(run)
        report = {"step": step, "write": k, "of": n, "killed": rc == -9,
                  "state": "old" if seen == old else "new" if seen == new else "neither",
                  "user_files_intact": {k: v for k, v in snapshot(run).items() if k in USER_FILES} == user}
        report["rerun"] = in_child(argv, run, 0)[0]  # tune's is `tune --overwrite`: it reruns in either state
        report["after_rerun"] = "new" if state(run) == new else "other"
        report["leftovers"] = leftovers(run)
        print(json.dumps(report), flush=True)
        shutil.rmtree(run)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
