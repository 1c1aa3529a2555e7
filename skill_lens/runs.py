"""A run directory: what one ``skill-lens tune`` produced, and everything later steps add to it.

``RUN/run.json`` records what made the run (model, task spec and fingerprint, split
sizes, seed, placement, label words and ids, prompt length, hook names, accuracies,
library version); ``RUN/prompt.safetensors`` holds the prompt. Later steps
(``probe``, ``neurons``, ``perturb`` ...) reopen the run with :meth:`Run.open`, which
rebuilds the same model, task and prompt and refuses mismatches.

>>> import tempfile
>>> from skill_lens.tiny import tiny_model, tiny_task
>>> from skill_lens.tuning import TuneConfig
>>> d = tempfile.mkdtemp()
>>> run = Run.create(d, tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=4, eval_every=2))
>>> sorted(Run.open(d).meta["accuracy"])
['dev', 'hard_prompt_dev', 'hard_prompt_test', 'test']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from skill_lens.artifacts import ArtifactError, library_version, read_json, write_json
from skill_lens.models import describe, load_model
from skill_lens.prompts import SoftPrompt
from skill_lens.tuning import TuneConfig, evaluate, hard_prompt_model, prompted, tune, with_defaults

__all__ = ["Run"]

PLACEMENT = {"causal": "input, prompt (predict at the last position)",
             "mlm": "<mask>, prompt, input (predict at the mask)",
             "seq2seq": "prompt, input (predict the first decoder token)"}


@dataclass
class Run:
    """A run directory and its ``run.json``; model and task are loaded lazily and cached."""

    path: Path
    meta: dict
    _model: object = field(default=None, repr=False)
    _task: object = field(default=None, repr=False)

    @classmethod
    def create(cls, path, model, task, config: TuneConfig, task_args: dict | None = None) -> "Run":
        """Tune a prompt for ``task`` on ``model`` and write ``prompt.safetensors`` and ``run.json``.

        A directory holding a run of the same model, task and config is tuned again (resuming a
        checkpoint if one is left); one holding another run is refused before anything is written.
        """
        path = Path(path)
        info = describe(model)
        _check_same_run(path, info.name, task, dataclasses.asdict(config))
        result = tune(model, task, config, run_dir=path)
        pm = prompted(model, task, result.prompt, config.max_length)
        hard = hard_prompt_model(model, task, config.max_length)
        acc = {
            "dev": evaluate(pm, task.dev, config.eval_batch_size)["accuracy"],
            "test": evaluate(pm, task.test, config.eval_batch_size)["accuracy"] if len(task.test) else None,
            "hard_prompt_dev": evaluate(hard, task.dev, config.eval_batch_size)["accuracy"],
            "hard_prompt_test": evaluate(hard, task.test, config.eval_batch_size)["accuracy"] if len(task.test) else None,
        }
        meta = {
            "library_version": library_version(),
            "model": info.name,
            "family": info.family,
            "n_layers": info.n_layers,
            "d_mlp": info.d_mlp,
            "d_model": info.d_model,
            "hook_names": list(info.hook_names),
            "task": {**task.describe(), "fingerprint": task.fingerprint(), "args": task_args or {}},
            "placement": PLACEMENT[info.family],
            "template": pm.template,
            "hard_prompt": task.hard_prompt,
            "label_words": list(pm.verbalizer.words),
            "label_token_ids": list(pm.verbalizer.token_ids),
            "prompt_length": result.prompt.length,
            "seed": config.seed,
            "config": dataclasses.asdict(config),
            "best_step": result.best_step,
            "accuracy": acc,
            "history": result.history,
        }
        result.prompt.save(path / "prompt.safetensors", task=task.name, task_fingerprint=task.fingerprint())
        write_json(path / "run.json", meta)
        (path / "checkpoint.safetensors").unlink(missing_ok=True)
        (path / "checkpoint.safetensors.json").unlink(missing_ok=True)
        return cls(path, meta, model, task)

    @classmethod
    def open(cls, path) -> "Run":
        path = Path(path)
        if not (path / "run.json").exists():
            raise ArtifactError(f"{path} is not a finished run (no run.json); run `skill-lens tune --out {path}` first.")
        return cls(path, read_json(path / "run.json"))

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.meta["model"])
        return self._model

    def use_model(self, model) -> None:
        """Use an already loaded model (checked against the run)."""
        info = describe(model)
        if (info.name, info.n_layers, info.d_mlp) != (self.meta["model"], self.meta["n_layers"], self.meta["d_mlp"]):
            raise ArtifactError(
                f"run {self.path} was made with {self.meta['model']} ({self.meta['n_layers']}x{self.meta['d_mlp']}), "
                f"not {info.name} ({info.n_layers}x{info.d_mlp}); load the run's model."
            )
        self._model = model

    @property
    def task(self):
        if self._task is None:
            from skill_lens.tasks import load_task

            t = self.meta["task"]
            task = load_task(t["source"], **t.get("args", {}))
            if task.fingerprint() != t["fingerprint"]:
                raise ArtifactError(
                    f"task {t['source']!r} no longer loads the data run {self.path} was tuned on "
                    "(its fingerprint differs); retune, or restore the data files."
                )
            self._task = task
        return self._task

    def task_with_train_size(self, n: int):
        """The run's task with ``n`` training examples and the very same dev and test splits.

        For re-tuning on more data than the run was tuned on (e.g. after pruning): dev accuracies stay
        comparable with the run's. Refuses a source whose dev or test split would change.

        >>> import os, tempfile
        >>> from skill_lens.tasks import load_task
        >>> p = os.path.join(tempfile.mkdtemp(), "toy_train.csv")
        >>> _ = open(p, "w").write("text,label\\n" + "".join(f"t{i},{i % 2}\\n" for i in range(40)))
        >>> args = {"train_size": 10, "dev_size": 4, "test_size": 4}
        >>> task = load_task("csv:" + p, **args)
        >>> run = Run(p, {"task": {"source": "csv:" + p, "args": args, "fingerprint": task.fingerprint()}})
        >>> bigger = run.task_with_train_size(20)
        >>> len(bigger.train), bigger.dev == run.task.dev
        (20, True)
        """
        from skill_lens.tasks import load_task

        if n < 1:
            raise ValueError(f"a training split needs at least 1 example, got {n}")
        t = self.meta["task"]
        bigger = load_task(t["source"], **{**t.get("args", {}), "train_size": n})
        for name in ("dev", "test"):
            if getattr(self.task, name) != getattr(bigger, name):
                raise ArtifactError(f"task {t['source']!r} gives another {name} split with train_size={n}, so its "
                                    f"accuracies would not compare with run {self.path}'s; re-tune on the run's own "
                                    "training split instead.")
        return bigger

    def use_task(self, task) -> None:
        if task.fingerprint() != self.meta["task"]["fingerprint"]:
            raise ArtifactError(f"this task's data differ from the data run {self.path} was tuned on.")
        self._task = task

    def prompt(self) -> SoftPrompt:
        return SoftPrompt.load(self.path / "prompt.safetensors", self.model)

    def prompted(self):
        """The run's :class:`~skill_lens.prompts.PromptedModel` (model, prompt and verbalizer)."""
        return prompted(self.model, self.task, self.prompt(), self.meta["config"].get("max_length"))


def _check_same_run(path: Path, model: str, task, config: dict) -> None:
    """Refuse to overwrite ``path/run.json`` made by another model, task or tuning config."""
    if not (path / "run.json").exists():
        return
    old = read_json(path / "run.json")
    old_task = old.get("task") or {}
    differs = []
    if old.get("model") != model:
        differs.append(f"model: {old.get('model')} in run.json, {model} now")
    if old_task.get("fingerprint") != task.fingerprint():
        differs.append(f"task: {old_task.get('name')} (data {str(old_task.get('fingerprint'))[:12]}) in run.json, "
                       f"{task.name} (data {task.fingerprint()[:12]}) now")
    old_config = with_defaults(old.get("config") or {})
    keys = [*config, *(k for k in old_config if k not in config)]
    changed = [f"{k} {old_config.get(k)!r} -> {config.get(k)!r}" for k in keys if old_config.get(k) != config.get(k)]
    if changed:
        differs.append(f"config: {', '.join(changed)}")
    if differs:
        raise ArtifactError(f"{path} already holds a different run ({'; '.join(differs)}); use a new --out "
                            f"directory, or delete {path} to replace that run.")
