"""A run directory owns its artifacts and their lineage.

``skill-lens tune`` makes a run; every later step reads it and writes beside it. This module is the one
place that reads and writes a run's artifacts; what each is called, made from and remade by is the table
of :mod:`skill_lens.store.kinds` (``KINDS``).

Every step that writes into a run holds the run's lock and commits its outputs whole through the run's
:class:`~skill_lens.store.manifest.Folder` (:meth:`Run.writing`): ``RUN/manifest.json`` lists every file a step
wrote with the sha256 of its bytes, only those are ever replaced or removed, and every read checks the
bytes it reads against it, naming the command that makes a changed file again.

A ``seeds`` aggregate lives in a directory of its own beside (or above) its runs; it records every run's
lineage and is read through :class:`skill_lens.workflow.seeds.SeedGroup`, which checks each with :meth:`Run.check`.

Each artifact records a ``lineage``: the content fingerprints of the model's weights
(:func:`skill_lens.model.loading.fingerprint`), the task's data, the prompt, and of the artifact it was
derived from. Every read checks that chain against the run and names what does not match and
what to run, so a prompt copied from another run, a predictivity file left from an earlier prompt,
or a model directory re-saved with other weights is refused instead of silently used.

>>> import tempfile
>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.tuning import TuneConfig
>>> d = tempfile.mkdtemp()
>>> run = Run.create(d, tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=4, eval_every=2))
>>> reopened = Run.open(d)
>>> sorted(reopened.meta["accuracy"]), reopened.prompt().length
(['dev', 'hard_prompt_dev', 'hard_prompt_test', 'test'], 2)
>>> sorted(reopened.folder.manifest())  # what tune wrote, each with the sha256 every read checks
['prompt.safetensors', 'prompt.safetensors.json', 'run.json', 'tuning_curve.json']
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from skill_lens.store.artifacts import ArtifactError, library_version, load_tensors, read_json, write_json
from skill_lens.store.checkpoint import Checkpoint
from skill_lens.store.kinds import KINDS, LOCK, STAGING, kind_of, ours_by_name
from skill_lens.store.manifest import Folder, Transaction
from skill_lens.prompting.input_cache import InputCache
from skill_lens.model.loading import (DTYPES, describe, dtype_name, fingerprint, load_model, load_options,
                                      model_dtype, resources)
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.prompting.tuning import RESOURCE_FIELDS, TuneConfig, tune, with_defaults
from skill_lens.prompting.evaluation import evaluate, hard_prompt_model, prompted

__all__ = ["Run", "file_fingerprint", "redo"]

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


@dataclass
class Run:
    """A run directory and its ``run.json``; model and task are loaded lazily, checked, and cached.

    ``load`` holds how to load the run's model (``device``, ``dtype``; see :meth:`open`).
    """

    path: Path
    meta: dict
    _model: object = field(default=None, repr=False)
    _task: object = field(default=None, repr=False)
    load: dict = field(default_factory=dict, repr=False)
    _input_cache: InputCache | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ making and opening
    @classmethod
    def create(cls, path, model, task, config: TuneConfig, task_args: dict | None = None, *,
               overwrite: bool = False, reuse: bool = False) -> "Run":
        """Tune a prompt for ``task`` on ``model`` into ``path`` (``prompt.safetensors`` and ``run.json``).

        An interrupted tuning of the same run resumes from its checkpoint. A directory that already holds
        a finished run is refused, unless ``overwrite=True`` (re-tune; once the new prompt is tuned, every
        artifact derived from the old one is removed before the new one is written) or ``reuse=True`` and
        it is this very run (same weights, data, config), which is then returned as it is. A directory
        holding anything else is refused untouched.
        """
        path = Path(path)
        _claim(path, model, task, config, overwrite, reuse, check_only=True)  # before anything is made
        with Folder(path).writing("tune") as tx:
            existing = _claim(path, model, task, config, overwrite, reuse)
            if existing is not None:
                return existing
            ckpt, cache = path / KINDS["checkpoint"].file, InputCache.persistent(config.input_cache_mb)
            result = tune(model, task, config, checkpoint=ckpt, input_cache=cache)  # the old run stays whole
            meta = _run_meta(model, task, config, task_args, result, cache)
            _stage_run(tx, path, result, meta, ckpt)  # committed whole; the old run's files go after that
        return cls(path, meta, model, task, _input_cache=cache)

    @classmethod
    def open(cls, path, *, device=None, dtype=None, **placement) -> "Run":
        """Open a finished run; ``run.json`` is validated field by field.

        Its model loads (when first needed) on ``device`` (default: CUDA when available, else the CPU) in
        ``dtype`` (default: the dtype the run was tuned in, :attr:`dtype`); both are checked here, before
        any work. Another dtype than the run's gives other weights, which :meth:`use_model` refuses.
        ``placement`` (``device_map``, ``max_memory``, ``offload_folder``, ``memory_budget``, as
        :func:`~skill_lens.model.loading.load_model` takes them) places it over several devices instead: a
        resource, like the device, so any step may use another placement than tuning did (``run.json``'s
        ``resources`` records tuning's).
        """
        path = Path(path)
        load = load_options(device, dtype, **placement)
        Folder(path).settle() if path.is_dir() else None  # a commit a killed step left half applied
        if not (path / KINDS["run"].file).exists():
            raise ArtifactError(f"{path} is not a finished run (no run.json); run `skill-lens tune --out {path}` first.")
        with Folder(path).reading():  # not while a commit is being applied
            meta = read_json(path / KINDS["run"].file)
        return cls(path, _validated(meta, path), load=load)

    @property
    def folder(self) -> Folder:
        """The run directory as a :class:`~skill_lens.store.manifest.Folder`: its lock, manifest and commits."""
        return Folder(self.path)

    @contextlib.contextmanager
    def writing(self, step: str):
        """Hold the run's write lock for ``step`` (a context manager yielding its
        :class:`~skill_lens.store.manifest.Transaction`): what the block stages is committed whole when it ends
        without an error. Every step that writes into the run holds it (:mod:`skill_lens.workflow.steps`). A run
        made before manifests has its own files (by name and lineage) listed as they are by the first commit."""
        with self.folder.writing(step) as tx:
            if not self.folder.has_manifest():
                tx.adopt({rel: kind_of(rel).name for rel in ours_by_name(self.path)})
            yield tx

    def verify(self, *kinds: str) -> None:
        """Refuse the run's files of ``kinds`` (``"run"``, ``"prompt"``, ...) whose bytes changed since the step
        that wrote them (``RUN/manifest.json``), naming the command that makes them again."""
        for kind in kinds:
            self.folder.verify(KINDS[kind].file, redo(kind, self.path))

    # ------------------------------------------------------------------ model and task
    @property
    def dtype(self) -> str:
        """The dtype the run's model was tuned in (``run.json``'s ``dtype``; runs made before it: float32).

        >>> Run(Path("runs/rt"), {}).dtype
        'float32'
        """
        return self.meta.get("dtype", "float32")

    @property
    def model(self):
        if self._model is None:
            self.use_model(load_model(self.meta["model"], **{**self.load, "dtype": self.load.get("dtype") or self.dtype}))
        return self._model

    def use_model(self, model) -> None:
        """Use an already loaded model, checked against the run's weights fingerprint (which depends on
        the dtype, :func:`~skill_lens.model.loading.fingerprint`: a model in another dtype is refused, naming it)."""
        info, fp = describe(model), fingerprint(model)
        now = dtype_name(model_dtype(model))
        if fp != self.meta["model_fingerprint"] and now != self.dtype:
            raise ArtifactError(
                f"run {self.path} was tuned on {self.meta['model']} in {self.dtype}, but this model is in {now}, "
                f"so its weights differ (fingerprint {fp}, not {self.meta['model_fingerprint']}) and the run's "
                f"artifacts would not apply. Use --dtype {self.dtype} (or leave --dtype out: a run's steps load "
                f"its own dtype), or tune a new run in {now}: skill-lens tune --dtype {now} --out NEW_DIR.")
        if fp != self.meta["model_fingerprint"]:
            raise ArtifactError(
                f"run {self.path} was tuned on {self.meta['model']} with weights {self.meta['model_fingerprint']}, "
                f"but this model ({info.name}, {info.n_layers}x{info.d_mlp}) has weights {fp}: its weights or "
                f"architecture differ. Load the run's own model, or re-tune: "
                f"{redo('prompt', self.path)}.")
        if model is not self._model:
            self._model, self._input_cache = model, None  # a cache belongs to one model object

    @property
    def task(self):
        if self._task is None:
            from skill_lens.data.sources import load_task

            t = self.meta["task"]
            if not t["source"]:
                raise ArtifactError(f"run {self.path} was tuned on a task built in memory ({t.get('name')}, e.g. "
                                    "Task.from_lists), which cannot be reloaded by name; pass it: run.use_task(task).")
            self.use_task(load_task(t["source"], **t.get("args", {})))
        return self._task

    def use_task(self, task) -> None:
        """Use an already loaded task, checked against the data the run was tuned on."""
        if task.fingerprint() != self.meta["task"]["fingerprint"]:
            raise ArtifactError(f"this task's data ({task.name}, data {task.fingerprint()[:12]}) differ from the data "
                                f"run {self.path} was tuned on ({self.meta['task'].get('name')}, data "
                                f"{self.meta['task']['fingerprint'][:12]}); restore the data files, or re-tune.")
        self._task = task

    def task_with_train_size(self, n: int):
        """The run's task with ``n`` training examples and the very same dev and test splits.

        For re-tuning on more data than the run was tuned on (e.g. after pruning): dev accuracies stay
        comparable with the run's. Refuses a source whose dev or test split would change.
        """
        from skill_lens.data.sources import load_task

        if n < 1:
            raise ValueError(f"a training split needs at least 1 example, got {n}")
        t = self.meta["task"]
        bigger = load_task(t["source"], **{**t.get("args", {}), "train_size": n})
        if (self.task.dev, self.task.test) != (bigger.dev, bigger.test):
            raise ArtifactError(f"task {t['source']!r} gives other dev or test splits with train_size={n}, so its "
                                f"accuracies would not compare with run {self.path}'s; re-tune on the run's own "
                                "training split instead.")
        return bigger

    # ------------------------------------------------------------------ artifacts
    def file(self, artifact: str) -> Path:
        """Where ``artifact`` (a kind of :data:`~skill_lens.store.kinds.KINDS`) lives in this run.

        >>> Run(Path("runs/rt"), {}).file("predictivity").as_posix()
        'runs/rt/predictivity.safetensors'
        """
        return self.path / KINDS[artifact].path()

    def prompt(self) -> SoftPrompt:
        """The run's tuned prompt, checked: the very file tuning wrote, 2-D float ``[prompt_length, d_model]``."""
        with self.folder.reading():
            path = self._checked_prompt_file()
            tensors, meta = load_tensors(path)
            emb = tensors.get("prompt")
            want = (self.meta["prompt_length"], self.meta["d_model"])
            if emb is None or emb.dim() != 2 or not emb.is_floating_point() or tuple(emb.shape) != want:
                got = "no 'prompt' tensor" if emb is None else f"a {emb.dtype} tensor of shape {list(emb.shape)}"
                raise ArtifactError(f"{path} holds {got}, but run.json says a float prompt of shape {list(want)}; "
                                    f"re-tune: {redo('prompt', self.path)}.")
            self.verify("run", "prompt")
        return SoftPrompt(emb, meta)

    def _checked_prompt_file(self) -> Path:
        """``RUN/prompt.safetensors``, if it is the very file tuning wrote (the root of every lineage)."""
        path = self.file("prompt")
        self._require(path, "prompt")
        if file_fingerprint(path) != self.meta["prompt_fingerprint"]:
            raise ArtifactError(f"{path} is not the prompt run {self.path} tuned (its content fingerprint differs from "
                                "run.json's prompt_fingerprint): it was replaced or copied from another run. Restore "
                                f"it, or re-tune: {redo('prompt', self.path)}.")
        return path

    @property
    def input_cache(self) -> InputCache:
        """The keys/values of the run's inputs under its model (:mod:`skill_lens.prompting.input_cache`), shared by the steps
        on this ``Run`` object: the probe and suppression curves after :meth:`create` compute no input that
        tuning computed. Bounded by the run's ``input_cache_mb``; ``run.input_cache.clear()`` frees it. Every
        split it computes whole is also kept on disk (:meth:`InputCache.persistent
        <skill_lens.prompting.input_cache.InputCache.persistent>`), so a ``Run`` opened in another process, e.g. by
        ``skill-lens probe`` after ``skill-lens tune``, reads its inputs instead of computing them again."""
        if self._input_cache is None:
            self._input_cache = InputCache.persistent(with_defaults(self.meta["config"])["input_cache_mb"])
        return self._input_cache

    def prompted(self):
        """The run's :class:`~skill_lens.prompting.prompted_model.PromptedModel` (model, checked prompt and verbalizer)."""
        return prompted(self.model, self.task, self.prompt(), self.meta["config"].get("max_length"))

    def lineage(self, parent: str | None = None) -> dict:
        """What an artifact made now from this run is made from (recorded in its metadata): the run's model,
        task and prompt fingerprints and, with ``parent``, that artifact's file fingerprint.

        >>> meta = {"model_fingerprint": "m", "task": {"fingerprint": "t"}, "prompt_fingerprint": "p"}
        >>> sorted(Run(Path("runs/rt"), meta).lineage())
        ['model_fingerprint', 'prompt_fingerprint', 'task_fingerprint']

        The run is named by its content (these fingerprints), never by its path: a run moved, copied or
        reached through a symlink or another spelling of its path makes the very same artifacts.
        """
        out = {"model_fingerprint": self.meta["model_fingerprint"],
               "task_fingerprint": self.meta["task"]["fingerprint"], "prompt_fingerprint": self.meta["prompt_fingerprint"]}
        if parent is not None:
            out["parent"] = {"artifact": parent, "fingerprint": file_fingerprint(self.file(parent))}
        return out

    def check(self, meta: dict, artifact: str, where) -> None:
        """Refuse an artifact whose recorded lineage (``meta["lineage"]``) does not match this run and its
        current files, naming what differs and the command that makes it again. The readers below call it;
        see the module docstring for an example."""
        again = redo(artifact, self.path)
        self._checked_prompt_file()
        lineage = meta.get("lineage") if isinstance(meta, dict) else None
        if not isinstance(lineage, dict):
            raise ArtifactError(f"{where} records no lineage (written by another tool or an older skill_lens), so it "
                                f"cannot be traced to run {self.path}; make it again: {again}.")
        expected = self.lineage()
        for key, what in (("model_fingerprint", "model weights"), ("task_fingerprint", "task data"),
                          ("prompt_fingerprint", "prompt")):
            if lineage.get(key) != expected[key]:
                raise ArtifactError(f"{where} was made from other {what} ({key} {lineage.get(key)}) than run "
                                    f"{self.path} ({expected[key]}): it is stale or belongs to another run. "
                                    f"Make it again: {again}.")
        parent = KINDS[artifact].parent
        if parent is not None and parent != "prompt":
            recorded = (lineage.get("parent") or {}).get("fingerprint")
            self._require(self.file(parent), parent)
            if recorded != file_fingerprint(self.file(parent)):
                raise ArtifactError(f"{where} was derived from another {KINDS[parent].file} than the one in "
                                    f"{self.path} now (it was re-made or replaced since). Make it again: {again}.")
            self.verify(parent)
        self.verify("run", "prompt")

    def probe_result(self):
        """The probe's :class:`~skill_lens.probing.result.ProbeResult`, checked against this run's prompt (its
        lineage) and against the bytes the probe wrote (its content)."""
        from skill_lens.probing.result import ProbeResult

        path = self.file("predictivity")
        with self.folder.reading():
            self._require(path, "predictivity")
            result = ProbeResult.load(path)
            self.check(result.meta, "predictivity", path)
            want = (self.meta["n_layers"], self.meta["d_mlp"])
            got = (result.baseline.shape[0], result.baseline.shape[-1])
            if got != want or (result.baseline.dim() == 3
                               and result.baseline.shape[1] not in (1, self.meta["prompt_length"])):
                raise ArtifactError(f"{path} has shape {list(result.baseline.shape)}, not [{want[0]}, "
                                    f"{self.meta['prompt_length']}, {want[1]}] as run.json says; "
                                    f"re-probe: {redo('predictivity', self.path)}.")
            self.verify("predictivity")
        return result

    def save_probe_result(self, result) -> Path:
        """Write a :class:`~skill_lens.probing.result.ProbeResult` as ``RUN/predictivity.safetensors`` with its lineage
        (made from the run's prompt), committed at once: what :func:`skill_lens.workflow.steps.probe` does."""
        result.meta.update(lineage=self.lineage("prompt"))
        with self.writing("probe") as tx:
            result.save(self._stage(tx, "predictivity"))
            tx.commit()
        return self.file("predictivity")

    def neurons(self):
        """The selected :class:`~skill_lens.probing.neurons.NeuronSet`, checked against this run's predictivity."""
        from skill_lens.probing.neurons import NeuronSet

        path = self.file("neurons")
        with self.folder.reading():
            self._require(path, "neurons")
            ns = NeuronSet.load(path, expect_shape=(self.meta["n_layers"], self.meta["d_mlp"]))
            self.check(ns.meta, "neurons", path)
            self.verify("neurons")
        return ns

    def save_neurons(self, ns) -> Path:
        """Write a :class:`~skill_lens.probing.neurons.NeuronSet` as ``RUN/neurons.safetensors`` with its lineage (made
        from the run's current predictivity): what :func:`skill_lens.workflow.steps.neurons` does."""
        with self.writing("neurons") as tx:
            ns.meta.update(lineage=self.lineage("predictivity"))
            ns.save(self._stage(tx, "neurons"))
        return self.file("neurons")

    def save_result(self, artifact: str, name: str, data: dict, table=None) -> tuple[Path, Path | None]:
        """Write ``RUN/<name>.json`` (``data`` with its lineage) and, with ``table`` (a DataFrame), ``<name>.csv``
        (a ``<name>.csv`` of an earlier result of ours is removed without one)."""
        from skill_lens.store.artifacts import atomic_write

        json_name, csv_name = KINDS[artifact].files(name)
        with self.writing(artifact) as tx:
            write_json(tx.path(json_name, artifact), {**data, "lineage": self.lineage(KINDS[artifact].parent)})
            if table is None:
                tx.remove(csv_name)
                return self.path / json_name, None
            with atomic_write(tx.path(csv_name, artifact)) as f:
                table.to_csv(f, index=False)
        return self.path / json_name, self.path / csv_name

    def read_result(self, artifact: str, path) -> dict:
        """A JSON result of this run (e.g. ``perturb_gaussian.json``), checked (lineage and content)."""
        path = Path(path)
        with self.folder.reading():
            data = read_json(path)
            self.check(data, artifact, path)
            Folder(path.parent).verify(path.name, redo(artifact, self.path))  # the run, or a pruned model's folder
        return data

    def _stage(self, tx: Transaction, kind: str) -> Path:
        """Register every file of an artifact of ``kind`` (its sidecar too) with ``tx``; return where to write it."""
        return [tx.path(f, kind) for f in KINDS[kind].files()][0]

    def _require(self, path: Path, artifact: str) -> None:
        if not path.exists():
            raise ArtifactError(f"{self.path} has no {path.name}; run `{redo(artifact, self.path)}` first.")


# ------------------------------------------------------------------ helpers
def _run_meta(model, task, config: TuneConfig, task_args: dict | None, result, cache: InputCache | None = None) -> dict:
    """``run.json``: what made the run and what it scored (dev/test accuracy of the prompt and the hard prompt,
    ``accuracy``, with their Wilson 95% intervals ``[low, high]`` in ``accuracy_ci``; ``None`` without a test split)."""
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
            "dtype": dtype_name(model_dtype(model)), "resources": resources(model),
            "family": info.family, "n_layers": info.n_layers,
            "d_mlp": info.d_mlp, "d_model": info.d_model,
            "hook_names": list(info.hook_names),
            "task": {**task.describe(), "fingerprint": task.fingerprint(), "args": task_args or {}},
            "placement": PLACEMENT[info.family], "template": pm.template, "hard_prompt": task.hard_prompt,
            "label_words": list(pm.verbalizer.words), "label_token_ids": list(pm.verbalizer.token_ids),
            "prompt_length": result.prompt.length, "seed": config.seed, "config": dataclasses.asdict(config),
            "best_step": result.best_step, "accuracy": acc, "accuracy_ci": ci,
            "history": [h for h in result.history if "dev_accuracy" in h]}  # the loss curve: tuning_curve.json


def _claim(path: Path, model, task, config: TuneConfig, overwrite: bool, reuse: bool,
           check_only: bool = False) -> Run | None:
    """Make ``path`` ready for tuning, or return the identical finished run to reuse; refuse anything else.
    ``check_only``: only refuse (before the lock is taken, so a refused directory is left untouched)."""
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"{path} is a file, not a run directory; choose another --out.")
    if not (path / KINDS["run"].file).exists():
        foreign = [p.name for p in path.iterdir() if not _ours_in_progress(p)] if path.exists() else []
        if foreign:
            raise ArtifactError(f"{path} exists and holds files that are not a skill_lens run ({', '.join(foreign[:3])}"
                                f"{' ...' if len(foreign) > 3 else ''}); choose a new --out directory.")
        return None
    old = Run(path, _validated(read_json(path / KINDS["run"].file), path))
    same = _differences(old.meta, model, task, config)
    if reuse and not same and not overwrite:
        if not check_only:
            old.use_model(model), old.use_task(task)
        return old
    if not overwrite:
        differs = f" ({'; '.join(same)})" if same else " (the same model, task and settings)"
        raise ArtifactError(f"{path} already holds a tuned run{differs}. Pass --overwrite to re-tune it (this removes "
                            "its predictivity, neurons, curves and other results made from the old prompt), or "
                            "choose a new --out directory.")
    return None


def _ours_in_progress(p: Path) -> bool:
    """Files an interrupted ``tune`` of ours leaves: its checkpoint, the lock, staged outputs and atomic-write
    temporaries."""
    return p.name.startswith(KINDS["checkpoint"].file) or p.name in (LOCK, STAGING) or \
        (p.name.startswith(".") and p.name.endswith(".tmp"))


def _differences(old: dict, model, task, config: TuneConfig) -> list[str]:
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


def _stage_run(tx: Transaction, path: Path, result, meta: dict, ckpt: Path) -> None:
    """Stage a tuned run (prompt, the whole loss curve, ``run.json``) so that it replaces the old run's files
    and removes everything else the old run's steps wrote (the manifest's files; an older run's by name and
    lineage), its checkpoint too, all when ``tx`` commits: never before the new run is committed whole."""
    old = set(tx.folder.manifest()) or ours_by_name(path)
    for rel in old:
        tx.remove(rel, ours=True)
    if (path / KINDS["pruned"].file / "manifest.json").exists():
        tx.remove_folder(KINDS["pruned"].file)
    for name in (ckpt.name, ckpt.name + ".json", ckpt.name + ".log"):
        tx.remove(name, ours=True)
    prompt_file = [tx.path(f, "prompt") for f in KINDS["prompt"].files()][0]
    result.prompt.save(prompt_file, task=meta["task"]["name"], lineage={
        "model_fingerprint": meta["model_fingerprint"], "task_fingerprint": meta["task"]["fingerprint"]})
    meta["prompt_fingerprint"] = file_fingerprint(prompt_file)
    write_json(tx.path(KINDS["tuning_curve"].file, "tuning_curve"), {
        "prompt_fingerprint": meta["prompt_fingerprint"], "steps": [h["step"] for h in result.history],
        "loss": [h.get("loss") for h in result.history]})
    write_json(tx.path(KINDS["run"].file, "run"), meta)


def _validated(meta, path: Path) -> dict:
    """``run.json`` with every field the steps read, of the right type; else an error naming the field."""
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
