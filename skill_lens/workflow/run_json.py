"""``run.json``, what a run records about itself: what made it and what it scored (:func:`run_meta`), checked
field by field when read (:func:`validated`), compared with a new tuning (:func:`differences`); and the two
things every artifact check names: the command that remakes an artifact (:func:`redo`) and a file's content
fingerprint (:func:`file_fingerprint`). :class:`~skill_lens.workflow.runs.Run` reads and writes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from skill_lens.model.fingerprint import fingerprint
from skill_lens.model.loading import DTYPES, describe, dtype_name, model_dtype, resources
from skill_lens.prompting.evaluation import evaluate, hard_prompt_model, prompted
from skill_lens.prompting.input_cache import InputCache
from skill_lens.prompting.tuning import RESOURCE_FIELDS, TuneConfig, with_defaults
from skill_lens.store.artifacts import ArtifactError, library_version
from skill_lens.store.kinds import KINDS

__all__ = ["run_meta", "validated", "differences", "redo", "file_fingerprint", "PLACEMENT", "REQUIRED"]

PLACEMENT = {"causal": "input, prompt (predict at the last position)",
             "mlm": "<mask>, prompt, input (predict at the mask)",
             "seq2seq": "prompt, input (predict the first decoder token)"}
REQUIRED = {"model": str, "model_fingerprint": str, "family": str, "n_layers": int, "d_mlp": int, "d_model": int,
            "hook_names": list, "task": dict, "label_words": list, "prompt_length": int, "prompt_fingerprint": str,
            "config": dict, "accuracy": dict}


def redo(kind: str, run) -> str:
    """The command that makes an artifact of ``kind`` of ``run`` again (:data:`skill_lens.store.kinds.KINDS`).

    >>> redo("predictivity", "runs/rt")
    'skill-lens probe runs/rt'
    """
    return KINDS[kind].redo.format(run=run)


def file_fingerprint(path) -> str:
    """The sha256 (first 16 hex digits) of a file's bytes: an artifact's content fingerprint.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "f"); _ = open(p, "w").write("x")
    >>> file_fingerprint(p)
    '2d711642b726b044'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def run_meta(model, task, config: TuneConfig, task_args: dict | None, result, cache: InputCache | None = None) -> dict:
    """``run.json``: what made the run and what it scored (dev/test accuracy of the prompt and the hard prompt,
    ``accuracy``, with their Wilson 95% intervals ``[low, high]`` in ``accuracy_ci``; ``None`` without a test split).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.tuning import TuneConfig, tune
    >>> model, task, config = tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2)
    >>> meta = run_meta(model, task, config, None, tune(model, task, config))
    >>> meta["model"], meta["prompt_length"], sorted(meta["accuracy"])[:2], differences(meta, model, task, config)
    ('tiny-causal', 2, ['dev', 'hard_prompt_dev'], [])
    """
    info = describe(model)
    pm = prompted(model, task, result.prompt, config.max_length)
    hard = hard_prompt_model(model, task, config.max_length)
    bs = config.eval_batch_size
    evals = {key: evaluate(m, split, bs, input_cache=cache) if len(split) else None for key, m, split in (
        ("dev", pm, task.dev), ("test", pm, task.test), ("hard_prompt_dev", hard, task.dev),
        ("hard_prompt_test", hard, task.test))}
    acc = {k: None if e is None else e["accuracy"] for k, e in evals.items()}
    ci = {k: None if e is None else [e["accuracy_ci_low"], e["accuracy_ci_high"]] for k, e in evals.items()}
    return {"library_version": library_version(), "model": info.name, "model_fingerprint": fingerprint(model),
            "dtype": dtype_name(model_dtype(model)), "resources": resources(model), "family": info.family,
            "n_layers": info.n_layers,
            "d_mlp": info.d_mlp, "d_model": info.d_model,
            "hook_names": list(info.hook_names),
            "task": {**task.describe(), "fingerprint": task.fingerprint(), "args": task_args or {}},
            "placement": PLACEMENT[info.family], "template": pm.template, "hard_prompt": task.hard_prompt,
            "label_words": list(pm.verbalizer.words), "label_token_ids": list(pm.verbalizer.token_ids),
            "prompt_length": result.prompt.length, "seed": config.seed, "config": dataclasses.asdict(config),
            "best_step": result.best_step, "accuracy": acc, "accuracy_ci": ci,
            "history": [h for h in result.history if "dev_accuracy" in h]}  # the loss curve: tuning_curve.json


def differences(old: dict, model, task, config: TuneConfig) -> list[str]:
    """What differs between a run's ``run.json`` (``old``) and a tuning of ``model``, ``task`` and ``config`` now:
    one line each for the weights, the data and the settings (resources such as ``input_cache_mb`` aside);
    empty for the very same run (see :func:`run_meta`)."""
    differs = []
    if old["model_fingerprint"] != fingerprint(model):
        differs.append(f"model: {old['model']} weights {old['model_fingerprint']} in run.json, "
                       f"{describe(model).name} weights {fingerprint(model)} now")
    if old["task"].get("fingerprint") != task.fingerprint():
        differs.append(f"task: {old['task'].get('name')} (data {str(old['task'].get('fingerprint'))[:12]}) in "
                       f"run.json, {task.name} (data {task.fingerprint()[:12]}) now")
    new, was = dataclasses.asdict(config), with_defaults(old["config"])
    changed = [f"{k} {was.get(k)!r} -> {new.get(k)!r}" for k in {**was, **new}
               if was.get(k) != new.get(k) and k not in RESOURCE_FIELDS]
    if changed:
        differs.append(f"config: {', '.join(changed)}")
    return differs


def validated(meta, path: Path) -> dict:
    """``run.json`` with every field the steps read, of the right type; else an error naming the field.

    >>> validated({"model": "m"}, Path("runs/rt"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.store.artifacts.ArtifactError: runs/rt/run.json has no 'model_fingerprint' field ...
    """
    where = path / KINDS["run"].file
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where} is not a JSON object; it is corrupt. Re-tune into a new directory.")
    for key, kind in REQUIRED.items():
        if key not in meta:
            older = " (written by an older skill_lens)" if key.endswith("fingerprint") else ""
            raise ArtifactError(f"{where} has no {key!r} field{older}; it cannot be checked. Re-tune: "
                                f"{redo('prompt', path)}.")
        if not isinstance(meta[key], kind) or (kind is int and isinstance(meta[key], bool)):
            raise ArtifactError(f"{where}: field {key!r} should be of type {kind.__name__}, got {meta[key]!r}; the file "
                                f"is corrupt. Re-tune: {redo('prompt', path)}.")
    for key in ("source", "fingerprint"):
        if not isinstance(meta["task"].get(key), str):
            raise ArtifactError(f"{where}: field 'task.{key}' is missing or not a string; the file is corrupt. "
                                f"Re-tune: {redo('prompt', path)}.")
    if meta.get("dtype", "float32") not in DTYPES:
        raise ArtifactError(f"{where}: field 'dtype' should be one of {', '.join(DTYPES)}, got {meta['dtype']!r}; the "
                            f"file is corrupt. Re-tune: {redo('prompt', path)}.")
    if not isinstance(meta["task"].get("args", {}), dict):
        raise ArtifactError(f"{where}: field 'task.args' should be an object; the file is corrupt.")
    if not isinstance(meta.get("accuracy_ci", {}), dict):  # absent in runs made before intervals
        raise ArtifactError(f"{where}: field 'accuracy_ci' should be an object; the file is corrupt.")
    return meta
