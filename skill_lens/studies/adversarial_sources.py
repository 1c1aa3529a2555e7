"""Adversarial data as splits, by spec: AdvGLUE, or a corruption of a task's split.

``"advglue:NAME[:PATH]"`` reads an AdvGLUE dev task (from a local JSON file, or the Hugging Face hub);
``"METHOD[:STRENGTH]"`` corrupts a task split with any of :data:`skill_lens.data.adversarial.METHODS`
(``"typos:0.1"``, ``"word_deletion:0.2"``, ``"word_swap:0.2"``, ``"distractor:1.0"``...).
:func:`adversarial_split` gives a :class:`~skill_lens.data.tasks.Split`, :func:`adversarial_task` a task with
adversarial dev and test splits, :func:`check_adversarial` checks a split against a task. The analyses on
them live in :mod:`skill_lens.studies.robustness`.

Corrupted splits keep the order, so example ``i`` of the adversarial split is the corrupted version of
example ``i`` of the clean one (same label). AdvGLUE examples have no clean partner in this library.

>>> from skill_lens.model.tiny import tiny_task
>>> task = tiny_task()
>>> adv = adversarial_split("word_swap:1.0", task, seed=0)
>>> task.dev.texts[0], adv.texts[0], adv.labels == task.dev.labels
('was acting and the terrible', 'acting was and terrible the', True)
"""

from __future__ import annotations

import re
from dataclasses import replace

from skill_lens.data.adversarial import METHODS, corrupt, corrupt_pairs, load_adv_glue
from skill_lens.data.tasks import Split, Task

__all__ = ["RobustnessError", "adversarial_split", "adversarial_task", "source_name", "check_adversarial"]

DEFAULT_STRENGTH = 0.1


class RobustnessError(ValueError):
    """An adversarial source or split cannot be used as asked; the message names the fix."""


def _parse(spec: str) -> tuple[str, str, str | None]:
    """``(kind, name_or_method, path_or_strength)`` of a source spec."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "advglue":
        name, _, path = rest.partition(":")
        return "advglue", name or "sst2", path or None
    if kind in METHODS:
        return "corrupt", kind, rest or None
    raise RobustnessError(f"unknown adversarial source {spec!r}; use advglue:TASK[:PATH] (e.g. advglue:sst2) or "
                          f"METHOD:STRENGTH with METHOD in {', '.join(METHODS)} (e.g. typos:0.1)")


def source_name(spec: str) -> str:
    """A file-name-safe name of a source spec (an AdvGLUE path is left out).

    >>> source_name("advglue:sst2:/data/adv_glue_dev.json"), source_name("typos:0.1")
    ('advglue_sst2', 'typos_0.1')
    """
    kind, name, arg = _parse(spec)
    raw = f"advglue_{name}" if kind == "advglue" else f"{name}_{arg or DEFAULT_STRENGTH}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)


def _strength(method: str, arg: str | None) -> float:
    try:
        s = float(arg) if arg is not None else DEFAULT_STRENGTH
    except ValueError:
        raise RobustnessError(f"cannot read the strength {arg!r} of {method}; write {method}:0.1") from None
    if not 0.0 <= s <= 1.0:
        raise RobustnessError(f"{method}:{arg}: the strength must be in [0, 1] (a fraction), e.g. {method}:0.1")
    return s


def _corrupt_split(s: Split, method: str, strength: float, seed: int) -> Split:
    if s.texts_b is None:
        return Split(corrupt(s.texts, method, strength, seed), list(s.labels))
    a, b = corrupt_pairs(s.texts, s.texts_b, method, strength, seed, which="both")
    return Split(a, list(s.labels), b)


def check_adversarial(adv: Split, task: Task | None = None, what: str = "adversarial split") -> Split:
    """Raise :class:`RobustnessError` if ``adv`` is empty or does not fit ``task`` (labels, pairs); return it.

    >>> from skill_lens.model.tiny import tiny_task
    >>> check_adversarial(Split(["x", "y"], [0, 2]), tiny_task())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    skill_lens.studies.adversarial_sources.RobustnessError: the adversarial split has labels [0, 2] but task tiny_sentiment ...
    """
    if adv is None or len(adv) == 0:
        raise RobustnessError(f"the {what} is empty; use a source with examples (or a non-empty task split)")
    if task is not None:
        present = sorted(set(adv.labels))
        if any(not isinstance(y, int) or not 0 <= y < task.n_labels for y in present):
            raise RobustnessError(f"the {what} has labels {present} but task {task.name} has {task.n_labels} labels "
                                  f"(0..{task.n_labels - 1}: {', '.join(task.label_names)}); use an adversarial "
                                  "source of this task (e.g. advglue:sst2 for binary sentiment)")
        if (adv.texts_b is None) != (task.train.texts_b is None):
            has = "sentence pairs" if adv.texts_b is not None else "single texts"
            raise RobustnessError(f"the {what} has {has} but task {task.name} does not; use a source of the same "
                                  "form (advglue:sst2 for single sentences, advglue:qnli... for pairs)")
    return adv


def adversarial_split(spec: str, task: Task | None = None, split: str = "dev", seed: int = 0) -> Split:
    """The adversarial examples of ``spec`` as a :class:`~skill_lens.data.tasks.Split`.

    ``"advglue:NAME[:PATH]"`` reads the AdvGLUE dev task ``NAME`` from a local JSON file, or from the
    Hugging Face hub without ``PATH``; ``"METHOD[:STRENGTH]"`` corrupts ``task``'s ``split`` (same order and
    labels; pairs: both texts) with ``seed``. With ``task``, the labels are checked against it.

    >>> from skill_lens.model.tiny import tiny_task
    >>> task = tiny_task()
    >>> adversarial_split("word_deletion:0.2", task, seed=3) == adversarial_split("word_deletion:0.2", task, seed=3)
    True
    >>> adversarial_split("typos:0.1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    skill_lens.studies.adversarial_sources.RobustnessError: typos:0.1 corrupts a task's split: pass the task ...
    """
    kind, name, arg = _parse(spec)
    if kind == "advglue":
        try:
            data = load_adv_glue(name, arg)
        except (ValueError, FileNotFoundError) as e:
            raise RobustnessError(f"cannot load {spec}: {e}") from e
        except Exception as e:  # the hub: no network, no dataset
            raise RobustnessError(f"cannot load AdvGLUE {name} from the Hugging Face hub ({type(e).__name__}: {e}); "
                                  f"pass a local file: advglue:{name}:PATH/adv_glue_dev.json") from e
        adv = Split(list(data["texts"]), list(data["labels"]), data["texts_b"])
    else:
        if task is None:
            raise RobustnessError(f"{spec} corrupts a task's split: pass the task (adversarial_split(spec, task))")
        if split not in ("train", "dev", "test"):
            raise RobustnessError(f"unknown split {split!r}; use 'dev' or 'test' (or 'train')")
        clean = check_adversarial(getattr(task, split), None, f"{split} split of {task.name}")
        adv = _corrupt_split(clean, name, _strength(name, arg), seed)
    return check_adversarial(adv, task)


def adversarial_task(task: Task, spec: str, seed: int = 0) -> Task:
    """``task`` with adversarial dev and test splits and the train split untouched.

    A corruption applies to dev and test (pairing kept); AdvGLUE becomes the dev split and test is empty.

    >>> from skill_lens.model.tiny import tiny_task
    >>> t = adversarial_task(tiny_task(), "word_deletion:0.2")
    >>> t.train == tiny_task().train, t.dev.texts[0], t.dev.labels == tiny_task().dev.labels
    (True, 'was acting and the', True)
    """
    kind, name, _ = _parse(spec)
    if kind == "advglue":
        dev, test = adversarial_split(spec, task), Split([], [], [] if task.train.texts_b is not None else None)
    else:
        dev = adversarial_split(spec, task, "dev", seed)
        test = adversarial_split(spec, task, "test", seed) if len(task.test) else task.test
    return replace(task, name=f"{task.name}+{source_name(spec)}", dev=dev, test=test)
