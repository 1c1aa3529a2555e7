"""Session fixtures for command-line tests on tiny models (see clitools.py)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from clitools import FAST_TUNE, cli

from skill_lens.model.tiny import tiny_hf, tiny_task, tiny_tokenizer

# Runs keep their inputs' keys/values on disk in the user cache; tests keep nothing there (the tests of that
# feature give it a directory of their own).
os.environ.setdefault("SKILL_LENS_INPUT_DISK_MB", "0")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """``model_dir(family, seed=0)``: a tiny model saved as a Hugging Face directory."""

    @functools.cache
    def make(family: str = "causal", seed: int = 0) -> Path:
        d = tmp_path_factory.mktemp(f"model_{family}_{seed}")
        tiny_hf(family, seed=seed).save_pretrained(d)
        tiny_tokenizer().save_pretrained(d)
        return d

    return make


@pytest.fixture(scope="session")
def task_csv(tmp_path_factory):
    """``task_csv(seed=0)``: the tiny sentiment task as one CSV (labels ``bad``/``good``, the label words)."""

    @functools.cache
    def make(seed: int = 0) -> Path:
        t = tiny_task(n_train=64, n_dev=32, n_test=32, seed=seed)
        rows = [(x, y) for s in t.splits().values() for x, y in zip(s.texts, s.labels)]
        p = tmp_path_factory.mktemp(f"task{seed}") / "tiny_train.csv"
        p.write_text("text,label\n" + "".join(f"{x},{['bad', 'good'][y]}\n" for x, y in rows))
        return p

    return make


@pytest.fixture(scope="session")
def made_run(tmp_path_factory, model_dir, task_csv):
    """``made_run(family, task_seed=0, steps=("probe", "neurons"))``: a run made with the CLI (do not modify:
    copy it with :func:`copy_run`)."""

    @functools.cache
    def make(family: str = "causal", task_seed: int = 0, steps: tuple[str, ...] = ("probe", "neurons")) -> Path:
        out = tmp_path_factory.mktemp(f"run_{family}_{task_seed}_{'_'.join(steps)}") / "run"
        rc, _, err = cli("tune", "--model", model_dir(family), "--task", f"csv:{task_csv(task_seed)}", "--out", out,
                         *FAST_TUNE)
        assert rc == 0, err
        for step in steps:
            rc, _, err = cli(step, out, *(("--top", "0.25") if step == "neurons" else ()))
            assert rc == 0, err
        return out

    return make
