"""Several prompts of one task (tuning seeds): predictivity averaged over seeds, and how well the ranking replicates.

Wang et al. (2022) average each neuron's predictivity over the prompts of several random seeds. A ranking
that one seed's prompt gives is only worth reading if another seed's gives much the same one, so the
aggregate also records the ranking's replicability: Spearman's correlation between every pair of seeds'
per-neuron scores, and how much their top 1% neurons overlap (``|top(a) ∩ top(b)| / k``, chance ``k / n``).

Every seed is an ordinary run (``skill-lens tune --seeds 0,1,2 --out D`` makes ``D/seed-0``, ``D/seed-1``...;
any runs of the same model and task data will do). Each is probed as usual; ``skill-lens seeds D`` (or
``skill-lens seeds RUN RUN ... --out D``) then reads every run's predictivity through its
:class:`~skill_lens.workflow.runs.Run` (lineage checked), checks that they share the model weights, the task data and
the probe's hooks and sizes, and writes ``D/seeds.safetensors`` (and its JSON sidecar): each seed's scores
``[seed, layer, d_mlp]`` per split (``dev``, ``test``) and position aggregate (``max``, ``mean``), the
replicability, and the lineage of every parent run (its prompt and predictivity file fingerprints), checked on
every read. Positions are aggregated within each run first (different prompts' positions do not correspond),
then the scores are averaged over seeds. ``skill-lens neurons D`` selects from the mean over seeds.

>>> import tempfile
>>> from skill_lens.workflow import steps
>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.tuning import TuneConfig
>>> d = tempfile.mkdtemp()
>>> runs = steps.tune_seeds(d, tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2), [0, 1])
>>> for r in runs:
...     _ = steps.probe(r)
>>> agg = steps.seeds(SeedGroup.of([d]), top=0.05)
>>> agg.seed_scores().shape, agg.scores().shape, agg.meta["seeds"], sorted(agg.meta["replicability"]["dev"])[:3]
(torch.Size([2, 2, 64]), torch.Size([2, 64]), [0, 1], ['in_all', 'in_all_chance', 'k'])
>>> len(steps.neurons(SeedGroup.open(d), top=4))   # the top 4 by the mean over seeds
4
"""

from __future__ import annotations

import itertools
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from skill_lens.store.artifacts import ArtifactError, load_tensors, save_tensors
from skill_lens.probing.scores import select_top, spearman, top_k_overlap
from skill_lens.store.kinds import KINDS
from skill_lens.store.manifest import Folder
from skill_lens.workflow.runs import Run, file_fingerprint, redo

__all__ = ["SeedScores", "SeedGroup", "replicability", "replicability_text", "combine_seeds", "parse_seeds",
           "seed_dir", "open_scored"]

KEYS = tuple(f"{split}_{how}" for split in ("dev", "test") for how in ("max", "mean"))
SHARED = ("model", "family", "n_layers", "d_mlp", "d_model", "hook_names")


def parse_seeds(text) -> list[int]:
    """``"0,1,2"`` (or a list) -> ``[0, 1, 2]``: distinct whole numbers >= 0.

    >>> parse_seeds("0, 1,2"), parse_seeds([3, 4])
    ([0, 1, 2], [3, 4])
    >>> parse_seeds("0,0")
    Traceback (most recent call last):
    ...
    ValueError: --seeds must be distinct whole numbers >= 0 separated by commas, such as 0,1,2; got '0,0'
    """
    try:
        seeds = [int(x) for x in (text.split(",") if isinstance(text, str) else text) if str(x).strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must be distinct whole numbers >= 0 separated by commas, such as 0,1,2; got {text!r}")
    return seeds


def seed_dir(out, seed: int) -> Path:
    """Where ``skill-lens tune --seeds`` puts the run of ``seed``: ``OUT/seed-<seed>``.

    >>> seed_dir("runs/rt", 2).as_posix()
    'runs/rt/seed-2'
    """
    return Path(out) / f"seed-{seed}"


# ------------------------------------------------------------------ pure statistics
def replicability(scores: Float[Tensor, "seed layer d_mlp"], top: float | int = 0.01) -> dict:
    """How well per-neuron scores replicate across seeds: Spearman between every pair of seeds (overall), the
    overlap of their top ``top`` neurons (``|top(a) ∩ top(b)| / k``; chance ``k / n``), and how many neurons are
    in every seed's top (chance ``k (k / n)^(S - 1)``). Means and standard deviations are over pairs (``None``
    with one pair); pairs share seeds, so the spread is descriptive, not an interval.

    >>> base = torch.arange(40.0).reshape(2, 20)
    >>> r = replicability(torch.stack([base, base, -base]), top=0.1)
    >>> r["spearman"], r["overlap"], r["k"], r["in_all"]
    ([1.0, -1.0, -1.0], [1.0, 0.0, 0.0], 4, 0)
    """
    scores = torch.as_tensor(scores)
    if scores.dim() != 3 or scores.shape[0] < 2:
        raise ValueError(f"replicability needs scores [seed, layer, d_mlp] of at least 2 seeds, got shape "
                         f"{tuple(scores.shape)}; aggregate two or more runs.")
    S = scores.shape[0]
    pairs = list(itertools.combinations(range(S), 2))
    rho = [spearman(scores[i], scores[j]) for i, j in pairs]
    over = [top_k_overlap(scores[i], scores[j], top) for i, j in pairs]
    masks = torch.stack([select_top(s, top) for s in scores])
    k, n = int(masks[0].sum()), masks[0].numel()

    def spread(xs):
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)

    (rho_mean, rho_std), (over_mean, over_std) = spread(rho), spread(over)
    return {"seeds": S, "pairs": [list(p) for p in pairs], "spearman": rho, "spearman_mean": rho_mean,
            "spearman_std": rho_std, "top": top, "k": k, "n": n, "overlap": over, "overlap_mean": over_mean,
            "overlap_std": over_std, "overlap_chance": k / n, "in_all": int(masks.all(0).sum()),
            "in_all_chance": k * (k / n) ** (S - 1)}


def replicability_text(rep: dict) -> list[str]:
    """The replicability as printed lines (Spearman, top overlap against chance, neurons in every seed's top).

    >>> base = torch.arange(40.0).reshape(2, 20)
    >>> print("\\n".join(replicability_text(replicability(torch.stack([base, base]), top=0.1))))
    Spearman between seeds' predictivities: 1.000 (1 pair of seeds)
    top 4 neurons' overlap between seeds: 1.000 (1 pair of seeds; chance 0.100)
    in the top 4 of all 2 seeds: 4 neurons (chance 0.4)
    """
    n = len(rep["pairs"])

    def spread(name: str) -> str:
        m, s = rep[f"{name}_mean"], rep[f"{name}_std"]
        return f"{m:.3f} (1 pair of seeds" if s is None else \
            f"{m:.3f} ± {s:.3f} (mean ± std over {n} pairs of seeds, min {min(rep[name]):.3f}"

    return [f"Spearman between seeds' predictivities: {spread('spearman')})",
            f"top {rep['k']} neurons' overlap between seeds: {spread('overlap')}; chance {rep['overlap_chance']:.3f})",
            f"in the top {rep['k']} of all {rep['seeds']} seeds: {rep['in_all']} neurons "
            f"(chance {rep['in_all_chance']:.1f})"]


# ------------------------------------------------------------------ the artifact
@dataclass
class SeedScores:
    """Each seed's per-neuron scores ``[seed, layer, d_mlp]`` (``tensors["dev_max"]``, ``"dev_mean"``, and
    ``"test_*"`` when every run was probed on test) and their mean over seeds (:meth:`scores`), with ``meta``
    (seeds, runs, replicability, lineage). :func:`skill_lens.workflow.steps.neurons` selects from it as from a probe.

    >>> s = SeedScores({"dev_max": torch.tensor([[[0.5, 1.0]], [[0.75, 0.5]]])})
    >>> s.scores().tolist(), s.seed_scores().shape
    ([[0.625, 0.75]], torch.Size([2, 1, 2]))
    """

    tensors: dict[str, Tensor]
    meta: dict = field(default_factory=dict)

    @property
    def hook_names(self) -> tuple[str, ...]:
        return tuple(self.meta.get("hook_names", ()))

    @property
    def test_acc(self) -> Tensor | None:
        """Each seed's test scores (``None`` unless every run was probed on test), as ``ProbeResult.test_acc`` tells."""
        return self.tensors.get("test_max")

    def seed_scores(self, split: str | None = None, aggregate: str | None = None) -> Float[Tensor, "seed layer d_mlp"]:
        """Every seed's scores on ``split`` (``"dev"`` or ``"test"``) with positions aggregated by ``aggregate``."""
        key = f"{split or 'dev'}_{aggregate or 'max'}"
        if key not in self.tensors:
            raise ArtifactError(f"these seeds have no {key!r} scores (have {sorted(self.tensors)}); split is 'dev' or "
                                "'test' (probed on test in every run) and aggregate 'max' or 'mean'.")
        return self.tensors[key]

    def scores(self, split: str | None = None, aggregate: str | None = None) -> Float[Tensor, "layer d_mlp"]:
        """The mean over seeds of :meth:`seed_scores` (the paper's aggregate)."""
        return self.seed_scores(split, aggregate).double().mean(0).float()

    def save(self, path) -> None:
        save_tensors(path, self.tensors, self.meta)

    @classmethod
    def load(cls, path) -> "SeedScores":
        tensors, meta = load_tensors(path)
        if meta.get("kind") != "seeds" or "dev_max" not in tensors:
            raise ArtifactError(f"{path} is not an aggregate of seeds written by `skill-lens seeds`; remove it or "
                                "choose another directory.")
        return cls(tensors, meta)


def combine_seeds(runs: Sequence[Run], top: float | int = 0.01, aggregate: str = "max") -> SeedScores:
    """Read every run's predictivity (checked), check they belong together, and return their
    :class:`SeedScores` with the replicability of ``aggregate``-over-positions scores (dev, and test if probed).
    Nothing is written (see :func:`skill_lens.workflow.steps.seeds`)."""
    if len(runs) < 2:
        raise ValueError(f"aggregating seeds needs at least 2 runs, got {len(runs)}; tune more seeds "
                         "(skill-lens tune --seeds 0,1,2 --out DIR).")
    if aggregate not in ("max", "mean"):
        raise ValueError(f"--aggregate must be 'max' or 'mean', got {aggregate!r}")
    _check_together(runs)
    missing = [r for r in runs if not r.file("predictivity").exists()]
    if missing:
        raise ArtifactError("these runs are not probed yet: " + "; ".join(
            f"`{redo('predictivity', r.path)}`" for r in missing) + ". Probe them, then aggregate.")
    results = [r.probe_result() for r in runs]
    _check_probes(runs, results)
    splits = ["dev"] + (["test"] if all(p.test_acc is not None for p in results) else [])
    tensors = {f"{s}_{how}": torch.stack([p.scores(s, how) for p in results]) for s in splits for how in ("max", "mean")}
    rep = {s: replicability(tensors[f"{s}_{aggregate}"], top) for s in splits}
    first = runs[0].meta
    meta = {**{k: first[k] for k in SHARED}, "kind": "seeds", "task": first["task"].get("name"),
            "seeds": [r.meta.get("seed") for r in runs], "aggregate": aggregate, "top": top,
            "scored_on": f"dev predictivity, mean over {len(runs)} seeds", "replicability": rep,
            "sizes": dict(results[0].sizes),
            "runs": [{"seed": r.meta.get("seed"), "accuracy": r.meta["accuracy"],
                      "accuracy_ci": r.meta.get("accuracy_ci"), "null": p.meta.get("null")}
                     for r, p in zip(runs, results)]}
    return SeedScores(tensors, meta)


def _check_together(runs: Sequence[Run]) -> None:
    first = runs[0]
    for r in runs[1:]:
        for key, what in (("model_fingerprint", "model weights"), ("hook_names", "probed hooks")):
            if r.meta[key] != first.meta[key]:
                raise ArtifactError(f"runs {first.path} and {r.path} have other {what}; aggregate only runs of one model.")
        if r.meta["task"]["fingerprint"] != first.meta["task"]["fingerprint"]:
            raise ArtifactError(f"runs {first.path} and {r.path} were tuned on other task data ({first.meta['task'].get('name')}"
                                f" vs {r.meta['task'].get('name')}); aggregate only runs of one task and its splits.")
    prompts = [r.meta["prompt_fingerprint"] for r in runs]
    if len(set(prompts)) != len(prompts):
        raise ArtifactError("two of these runs hold the very same prompt (a run given twice, or a copy); aggregate "
                            "runs of different seeds.")


def _check_probes(runs: Sequence[Run], results) -> None:
    first = results[0]
    for r, p in zip(runs[1:], results[1:]):
        if (p.hook_names, p.sizes) != (first.hook_names, first.sizes):
            raise ArtifactError(f"{r.file('predictivity')} was probed at other hooks or split sizes ({p.sizes}) than "
                                f"{runs[0].file('predictivity')} ({first.sizes}); probe every run the same way.")


# ------------------------------------------------------------------ a directory of seed runs
@dataclass
class SeedGroup:
    """A directory that aggregates seed runs: it owns ``seeds.safetensors`` (and ``neurons.safetensors`` selected
    from it), and checks their lineage against the runs on every read."""

    path: Path
    runs: list[Run]

    @classmethod
    def of(cls, paths: Sequence, out=None) -> "SeedGroup":
        """The runs to aggregate: one directory of seed runs (its subdirectories holding a ``run.json``, e.g.
        ``skill-lens tune --seeds``), written there; or several run directories, written to ``out``."""
        paths = [Path(p) for p in paths]
        if len(paths) == 1 and not (paths[0] / KINDS["run"].file).exists():
            if not paths[0].is_dir():
                raise ArtifactError(f"{paths[0]} is not a directory of seed runs; make them with `skill-lens tune "
                                    f"--seeds 0,1,2 --out {paths[0]}`.")
            runs = sorted((Run.open(d) for d in paths[0].iterdir() if (d / KINDS["run"].file).exists()),
                          key=lambda r: (str(r.meta.get("seed")).zfill(12), r.path.name))
            out = paths[0] if out is None else out
        else:
            if out is None:
                raise ValueError("several runs are aggregated into a directory of their own: pass --out DIR.")
            runs = [Run.open(p) for p in paths]
        group = cls(Path(out), runs)
        group._check_out()
        return group

    @classmethod
    def open(cls, path) -> "SeedGroup":
        """A directory holding ``seeds.safetensors``, with the runs it was aggregated from."""
        path = Path(path)
        file = path / KINDS["seeds"].file
        if not file.exists():
            raise ArtifactError(f"{path} has no {KINDS['seeds'].file}; aggregate its seed runs first: "
                                f"`skill-lens seeds {path}`.")
        meta = SeedScores.load(file).meta
        runs = [Run.open(path / rec["path"]) for rec in (meta.get("lineage") or {}).get("runs", [])]
        return cls(path, runs)

    def file(self, artifact: str) -> Path:
        """``seeds`` or ``neurons`` in this directory.

        >>> SeedGroup(Path("runs/rt"), []).file("seeds").as_posix()
        'runs/rt/seeds.safetensors'
        """
        return self.path / KINDS[artifact].path()

    def writing(self, step: str):
        """Hold the directory's write lock for ``step``; what is staged is committed whole
        (:meth:`skill_lens.store.manifest.Folder.writing`)."""
        return Folder(self.path).writing(step)

    def _check_out(self) -> None:
        if (self.path / KINDS["run"].file).exists():
            raise ArtifactError(f"{self.path} is a run; aggregate seeds into a directory of their own (--out DIR).")
        file = self.file("seeds")
        if file.exists():
            SeedScores.load(file)  # ours (re-aggregating replaces it), or refused untouched

    def lineage(self) -> dict:
        """The runs' shared fingerprints and each run's own lineage (prompt, predictivity file), path relative."""
        first = self.runs[0].meta
        return {"model_fingerprint": first["model_fingerprint"], "task_fingerprint": first["task"]["fingerprint"],
                "runs": [{"path": os.path.relpath(r.path, self.path), **r.lineage("predictivity")} for r in self.runs]}

    def save_seeds(self, scores: SeedScores) -> Path:
        """Write ``seeds.safetensors`` with its lineage (what :func:`skill_lens.workflow.steps.seeds` does)."""
        self._check_out()
        scores.meta["lineage"] = self.lineage()
        with self.writing("seeds") as tx:
            scores.save([tx.path(f, "seeds") for f in KINDS["seeds"].files()][0])
        return self.file("seeds")

    def probe_result(self) -> SeedScores:
        """The aggregate, checked: every run it lists still holds the prompt and predictivity it was made from."""
        file = self.file("seeds")
        scores = SeedScores.load(file)
        Folder(self.path).verify(file.name, f"skill-lens seeds {self.path}")
        recs = (scores.meta.get("lineage") or {}).get("runs") or []
        if len(recs) != len(self.runs) or len(recs) < 2:
            raise ArtifactError(f"{file} records no runs it was aggregated from; make it again: `skill-lens seeds "
                                f"{self.path}`.")
        for run, rec in zip(self.runs, recs):
            run.check({"lineage": rec}, "seeds", file)
        return scores

    def save_neurons(self, ns) -> Path:
        """Write ``neurons.safetensors`` selected from the aggregate, its lineage naming the aggregate file."""
        lineage = {k: v for k, v in self.lineage().items() if k != "runs"}
        ns.meta.update(lineage={**lineage, "parent": {"artifact": "seeds", "fingerprint": file_fingerprint(
            self.file("seeds"))}})
        with self.writing("neurons") as tx:
            ns.save([tx.path(f, "neurons") for f in KINDS["neurons"].files()][0])
        return self.file("neurons")

    def neurons(self):
        """The neurons selected from the aggregate, checked against the current ``seeds.safetensors``."""
        from skill_lens.probing.neurons import NeuronSet

        scores = self.probe_result()
        ns = NeuronSet.load(self.file("neurons"), expect_shape=(scores.meta["n_layers"], scores.meta["d_mlp"]))
        if (ns.meta.get("lineage") or {}).get("parent", {}).get("fingerprint") != file_fingerprint(self.file("seeds")):
            raise ArtifactError(f"{self.file('neurons')} was not selected from the current {KINDS['seeds'].file}; select "
                                f"again: `skill-lens neurons {self.path}`.")
        Folder(self.path).verify(self.file("neurons").name, f"skill-lens neurons {self.path}")
        return ns


def open_scored(path) -> Run | SeedGroup:
    """What ``skill-lens neurons PATH`` selects from: a run, or a directory of aggregated seeds.

    >>> import tempfile
    >>> open_scored(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.store.artifacts.ArtifactError: ... is not a finished run (no run.json); run `skill-lens tune --out ...` first.
    """
    path = Path(path)
    if not (path / KINDS["run"].file).exists() and ((path / KINDS["seeds"].file).exists() or (
            path.is_dir() and any((d / KINDS["run"].file).exists() for d in path.iterdir()))):
        return SeedGroup.open(path)
    return Run.open(path)
