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
(:func:`skill_lens.model.fingerprint.fingerprint`), the task's data, the prompt, and of the artifact it was
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
from dataclasses import dataclass, field
from pathlib import Path

from skill_lens.base.display import card
from skill_lens.data.sources import load_task
from skill_lens.model.fingerprint import fingerprint
from skill_lens.model.loading import describe, dtype_name, load_model, load_options, model_dtype
from skill_lens.probing.neurons import NeuronSet
from skill_lens.intervening.curve import SuppressionCurve
from skill_lens.probing.result import ProbeResult
from skill_lens.prompting.evaluation import prompted
from skill_lens.prompting.input_cache import InputCache
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.prompting.tuning import TuneConfig, tune, with_defaults
from skill_lens.store.artifacts import ArtifactError, atomic_write, load_tensors, read_json, write_json
from skill_lens.store.kinds import KINDS, LOCK, STAGING, artifacts_by_name, kind_of, ours_by_name
from skill_lens.store.manifest import Folder, Transaction
from skill_lens.workflow.methods import run_fields
from skill_lens.workflow.run_json import differences, file_fingerprint, redo, run_meta, validated

__all__ = ["Run"]

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
            meta = run_meta(model, task, config, task_args, result, cache)
            _stage_run(tx, path, result, meta, ckpt)  # committed whole; the old run's files go after that
        return cls(path, meta, model, task, _input_cache=cache)

    @classmethod
    def open(cls, path, *, device=None, dtype=None, **placement) -> "Run":
        """Open a finished run; ``run.json`` is validated field by field. Its model loads (when first needed) on
        ``device`` (default: CUDA when available, else the CPU) in ``dtype`` (default: :attr:`dtype`, the run's;
        another gives other weights, which :meth:`use_model` refuses), both checked here, before any work; or
        over several devices by ``placement`` (``device_map``, ``max_memory``, ``offload_folder``,
        ``memory_budget``, as :func:`~skill_lens.model.loading.load_model` takes them): a resource, so any step
        may place the model otherwise than tuning did."""
        path = Path(path)
        load = load_options(device, dtype, **placement)
        Folder(path).settle() if path.is_dir() else None  # a commit a killed step left half applied
        if not (path / KINDS["run"].file).exists():
            raise ArtifactError(f"{path} is not a finished run (no run.json); run `skill-lens tune --out {path}` first.")
        with Folder(path).reading():  # not while a commit is being applied
            meta = read_json(path / KINDS["run"].file)
        return cls(path, validated(meta, path), load=load)

    @property
    def folder(self) -> Folder:
        """The run directory as a :class:`~skill_lens.store.manifest.Folder`: its lock, manifest and commits."""
        return Folder(self.path)

    @contextlib.contextmanager
    def writing(self, step: str):
        """Hold the run's write lock for ``step`` (yields its :class:`~skill_lens.store.manifest.Transaction`): what
        the block stages is committed whole when it ends without an error; every step that writes holds it. A run
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

    @property
    def dtype(self) -> str:
        """The dtype the run's model was tuned in (``run.json``'s ``dtype``; runs made before it: float32)."""
        return self.meta.get("dtype", "float32")

    @property
    def model(self):
        if self._model is None:
            self.use_model(load_model(self.meta["model"], **{**self.load, "dtype": self.load.get("dtype") or self.dtype}))
        return self._model

    def use_model(self, model) -> None:
        """Use an already loaded model, checked against the run's weights fingerprint (which depends on
        the dtype, :func:`~skill_lens.model.fingerprint.fingerprint`: a model in another dtype is refused, naming it)."""
        _check_weights(self, model)
        if model is not self._model:
            self._model, self._input_cache = model, None  # a cache belongs to one model object

    @property
    def task(self):
        if self._task is None:
            self.use_task(_load_task(self))
        return self._task

    def use_task(self, task) -> None:
        """Use an already loaded task, checked against the data the run was tuned on."""
        _check_task(self, task)
        self._task = task

    def file(self, artifact: str) -> Path:
        """Where ``artifact`` (a kind of :data:`~skill_lens.store.kinds.KINDS`) lives in this run.

        >>> Run(Path("runs/rt"), {}).file("predictivity").as_posix()
        'runs/rt/predictivity.safetensors'
        """
        return self.path / KINDS[artifact].path()

    def prompt(self) -> SoftPrompt:
        """The run's tuned prompt, checked: the very file tuning wrote, 2-D float ``[prompt_length, d_model]``."""
        return _read_prompt(self)

    @property
    def input_cache(self) -> InputCache:
        """The keys/values of the run's inputs under its model (:mod:`skill_lens.prompting.input_cache`), shared by
        the steps on this ``Run``, bounded by the run's ``input_cache_mb`` (``.clear()`` frees it), and kept on disk
        (:meth:`~skill_lens.prompting.input_cache.InputCache.persistent`) for the next process's steps."""
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
        >>> sorted(Run(Path("runs/rt"), meta).lineage())  # by content, never by path: a moved run makes the same
        ['model_fingerprint', 'prompt_fingerprint', 'task_fingerprint']
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
        _check_lineage(self, meta, artifact, where)

    def probe_result(self):
        """The probe's :class:`~skill_lens.probing.result.ProbeResult`, checked against this run's prompt (its
        lineage) and against the bytes the probe wrote (its content)."""
        path = self.file("predictivity")
        with self.folder.reading():
            self._require(path, "predictivity")
            result = ProbeResult.load(path)
            self.check(result.meta, "predictivity", path)
            _check_probe_shape(self, result, path)
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

    def results(self) -> dict[str, Path]:
        """What the run holds now, by name (``prompt``, ``predictivity``, ``neurons``, ``perturb_gaussian``,
        ``robustness_typos``, ``report``, ``pruned``...), as its steps recorded them; read each with its own method
        (:meth:`probe_result`, :meth:`neurons`, :meth:`curve`, :meth:`read_result`). Example: :meth:`curve`."""
        return artifacts_by_name(self.path, set(self.folder.manifest()) or ours_by_name(self.path))

    def curve(self, method: str = "gaussian"):
        """The suppression curve ``skill-lens perturb --method METHOD`` wrote (``RUN/perturb_<method>.json``),
        checked, as a :class:`~skill_lens.intervening.curve.SuppressionCurve` (an error names the curves there).

        >>> import tempfile
        >>> from skill_lens.model.tiny import tiny_model, tiny_task
        >>> from skill_lens.prompting.tuning import TuneConfig
        >>> from skill_lens.workflow import steps
        >>> run = steps.tune(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2))
        >>> _ = steps.probe(run); _ = steps.perturb(run, method="zero", fractions=[0, 0.1], controls=1)
        >>> run.curve("zero").fractions, sorted(run.results())
        ([0.0, 0.1], ['perturb_zero', 'predictivity', 'prompt'])
        """
        return SuppressionCurve.from_dict(self.read_result("perturb", _curve_path(self.path, method)))

    def __repr__(self) -> str:
        """The directory, model, task, accuracies (95% Wilson intervals) and what the run holds.

        >>> Run(Path("runs/rt"), {"model": "m", "n_layers": 2, "d_mlp": 4, "task": {"name": "t"}, "prompt_length": 8,
        ...     "seed": 0, "accuracy": {"dev": 0.845}})  # doctest: +ELLIPSIS
        Run(directory: runs/rt; model: m (2 layers x 4 FFN neurons); task: t; prompt: 8 tokens, seed 0; soft prompt: dev 0.845, test n/a; ...)
        """
        return "Run(" + "; ".join(f"{k}: {v}" for k, v in run_fields(self.meta, self.path, self.results())) + ")"

    def _repr_html_(self) -> str:
        return card("Run", run_fields(self.meta, self.path, self.results()))

    def _stage(self, tx: Transaction, kind: str) -> Path:
        """Register every file of an artifact of ``kind`` (its sidecar too) with ``tx``; return where to write it."""
        return [tx.path(f, kind) for f in KINDS[kind].files()][0]

    def _require(self, path: Path, artifact: str) -> None:
        if not path.exists():
            raise ArtifactError(f"{self.path} has no {path.name}; run `{redo(artifact, self.path)}` first.")


# ------------------------------------------------------------------ helpers
def _load_task(run: Run):
    """The run's task, loaded by the name and arguments ``run.json`` records."""
    t = run.meta["task"]
    if not t["source"]:
        raise ArtifactError(f"run {run.path} was tuned on a task built in memory ({t.get('name')}, e.g. "
                            "Task.from_lists), which cannot be reloaded by name; pass it: run.use_task(task).")
    return load_task(t["source"], **t.get("args", {}))


def _check_task(run: Run, task) -> None:
    """Refuse a task whose data differ from the data the run was tuned on."""
    want = run.meta["task"]
    if task.fingerprint() != want["fingerprint"]:
        raise ArtifactError(f"this task's data ({task.name}, data {task.fingerprint()[:12]}) differ from the data "
                            f"run {run.path} was tuned on ({want.get('name')}, data {want['fingerprint'][:12]}); "
                            "restore the data files, or re-tune.")


def _check_probe_shape(run: Run, result, path: Path) -> None:
    """Refuse a probe result whose shape is not the run's ``[n_layers, prompt_length, d_mlp]``."""
    m, baseline = run.meta, result.baseline
    if (baseline.shape[0], baseline.shape[-1]) != (m["n_layers"], m["d_mlp"]) or \
            (baseline.dim() == 3 and baseline.shape[1] not in (1, m["prompt_length"])):
        raise ArtifactError(f"{path} has shape {list(baseline.shape)}, not [{m['n_layers']}, {m['prompt_length']}, "
                            f"{m['d_mlp']}] as run.json says; re-probe: {redo('predictivity', run.path)}.")


def _curve_path(path: Path, method: str) -> Path:
    """``RUN/perturb_<method>.json``, or an error naming the curves the run has and the command that makes it.

    >>> import tempfile
    >>> _curve_path(Path(tempfile.mkdtemp()), "zero")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    skill_lens.store.artifacts.ArtifactError: ... has no perturb_zero.json; run `skill-lens perturb ... --method zero`.
    """
    out = path / f"perturb_{method}.json"
    if not out.exists():
        made = sorted(p.stem.removeprefix("perturb_") for p in path.glob("perturb_*.json")
                      if not p.name.endswith(".checkpoint.json"))
        raise ArtifactError(f"{path} has no {out.name}" + (f" (it has curves for {', '.join(made)})" if made else "")
                            + f"; run `skill-lens perturb {path} --method {method}`.")
    return out


def _check_lineage(run: Run, meta: dict, artifact: str, where) -> None:
    """:meth:`Run.check`."""
    again = redo(artifact, run.path)
    _checked_prompt_file(run)
    lineage = meta.get("lineage") if isinstance(meta, dict) else None
    if not isinstance(lineage, dict):
        raise ArtifactError(f"{where} records no lineage (written by another tool or an older skill_lens), so it "
                            f"cannot be traced to run {run.path}; make it again: {again}.")
    expected = run.lineage()
    for key, what in (("model_fingerprint", "model weights"), ("task_fingerprint", "task data"),
                      ("prompt_fingerprint", "prompt")):
        if lineage.get(key) != expected[key]:
            raise ArtifactError(f"{where} was made from other {what} ({key} {lineage.get(key)}) than run "
                                f"{run.path} ({expected[key]}): it is stale or belongs to another run. "
                                f"Make it again: {again}.")
    parent = KINDS[artifact].parent
    if parent is not None and parent != "prompt":
        recorded = (lineage.get("parent") or {}).get("fingerprint")
        run._require(run.file(parent), parent)
        if recorded != file_fingerprint(run.file(parent)):
            raise ArtifactError(f"{where} was derived from another {KINDS[parent].file} than the one in "
                                f"{run.path} now (it was re-made or replaced since). Make it again: {again}.")
        run.verify(parent)
    run.verify("run", "prompt")


def _read_prompt(run: Run) -> SoftPrompt:
    """:meth:`Run.prompt`."""
    with run.folder.reading():
        path = _checked_prompt_file(run)
        tensors, meta = load_tensors(path)
        emb = tensors.get("prompt")
        want = (run.meta["prompt_length"], run.meta["d_model"])
        if emb is None or emb.dim() != 2 or not emb.is_floating_point() or tuple(emb.shape) != want:
            got = "no 'prompt' tensor" if emb is None else f"a {emb.dtype} tensor of shape {list(emb.shape)}"
            raise ArtifactError(f"{path} holds {got}, but run.json says a float prompt of shape {list(want)}; "
                                f"re-tune: {redo('prompt', run.path)}.")
        run.verify("run", "prompt")
    return SoftPrompt(emb, meta)


def _checked_prompt_file(run: Run) -> Path:
    """``RUN/prompt.safetensors``, if it is the very file tuning wrote (the root of every lineage)."""
    path = run.file("prompt")
    run._require(path, "prompt")
    if file_fingerprint(path) != run.meta["prompt_fingerprint"]:
        raise ArtifactError(f"{path} is not the prompt run {run.path} tuned (its content fingerprint differs from "
                            "run.json's prompt_fingerprint): it was replaced or copied from another run. Restore "
                            f"it, or re-tune: {redo('prompt', run.path)}.")
    return path


def _check_weights(run: Run, model) -> None:
    """Refuse a model whose weights are not the run's, naming a dtype that differs (the usual cause) or else
    the weights or architecture."""
    info, fp, want = describe(model), fingerprint(model), run.meta["model_fingerprint"]
    now = dtype_name(model_dtype(model))
    if fp != want and now != run.dtype:
        raise ArtifactError(
            f"run {run.path} was tuned on {run.meta['model']} in {run.dtype}, but this model is in {now}, "
            f"so its weights differ (fingerprint {fp}, not {want}) and the run's "
            f"artifacts would not apply. Use --dtype {run.dtype} (or leave --dtype out: a run's steps load "
            f"its own dtype), or tune a new run in {now}: skill-lens tune --dtype {now} --out NEW_DIR.")
    if fp != want:
        raise ArtifactError(
            f"run {run.path} was tuned on {run.meta['model']} with weights {want}, "
            f"but this model ({info.name}, {info.n_layers}x{info.d_mlp}) has weights {fp}: its weights or "
            f"architecture differ. Load the run's own model, or re-tune: "
            f"{redo('prompt', run.path)}.")


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
    old = Run(path, validated(read_json(path / KINDS["run"].file), path))
    same = differences(old.meta, model, task, config)
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
