"""The kinds of artifact skill_lens writes: one row per kind, the one table every module reads.

A run directory (``RUN/``, :class:`skill_lens.workflow.runs.Run`) holds one artifact per kind, or several for the
kinds named per use (``perturb_<method>``, ``robustness_<source>``). Each :class:`Kind` says where its files
are, what it is made from (``parent``; lineage is checked against it on every read), the command that makes
it again (``redo``, in error messages), and which section of the report shows it. The run's manifest
(:mod:`skill_lens.store.manifest`) records which files a step wrote; only those are ever replaced or removed.

=============  =================================  ============  ===========================================
kind           file(s) in ``RUN/``                parent        made by
=============  =================================  ============  ===========================================
run            ``run.json``                       (none)        ``skill-lens tune``
prompt         ``prompt.safetensors``             (none)        ``skill-lens tune``
tuning_curve   ``tuning_curve.json``              prompt        ``skill-lens tune`` (the whole loss curve)
predictivity   ``predictivity.safetensors``       prompt        ``skill-lens probe``
neurons        ``neurons.safetensors``            predictivity  ``skill-lens neurons``
perturb        ``perturb_<method>.json/.csv``     predictivity  ``skill-lens perturb``
robustness     ``robustness_<source>.json/.csv``  prompt        ``skill-lens robustness``
pruned         ``pruned/`` (or ``--out``)         predictivity  ``skill-lens prune``
report         ``report.html``                    (all)         ``skill-lens report``
seeds          ``DIR/seeds.safetensors``          predictivity  ``skill-lens seeds`` (several runs)
=============  =================================  ============  ===========================================

>>> KINDS["neurons"].file, KINDS["neurons"].parent, KINDS["neurons"].redo.format(run="runs/rt")
('neurons.safetensors', 'predictivity', 'skill-lens neurons runs/rt')
>>> kind_of("perturb_zero.csv").name, kind_of("my_notes.txt") is None
('perturb', True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Kind", "KINDS", "kind_of", "ours_by_name", "PRUNED_INFO", "PRUNED_WEIGHTS", "PRUNED_PROMPT", "PRUNE_SUMMARY",
           "MANIFEST", "LOCK", "STAGING"]

# Files of our own bookkeeping in every folder skill_lens writes (a run, a pruned model, a seeds directory).
MANIFEST, LOCK, STAGING = "manifest.json", ".lock", ".staging"
# A pruned model's directory (skill_lens.intervening.pruning): its record, weights, prompt and the study's summary.
PRUNED_INFO, PRUNED_WEIGHTS, PRUNED_PROMPT, PRUNE_SUMMARY = ("pruning.json", "model.safetensors", "prompt.safetensors",
                                                             "prune_summary.json")


@dataclass(frozen=True)
class Kind:
    """One kind of artifact: ``file`` (a name, or a pattern with ``{name}`` for kinds made per use), ``parent``
    (the kind it is derived from; ``None``: made from the model and task), ``redo`` (the command that makes it
    again, with ``{run}``), ``section`` (the report section showing it; ``None``: not a result section),
    ``sidecar`` (a ``.json`` sidecar beside a safetensors file) and ``extras`` (other suffixes of the same
    artifact, e.g. the ``.csv`` table beside a result's ``.json``)."""

    name: str
    file: str
    parent: str | None
    redo: str
    section: str | None = None
    sidecar: bool = False
    extras: tuple[str, ...] = ()

    def path(self, name: str | None = None) -> str:
        """The file name, for a kind made per use that use's ``name``.

        >>> KINDS["perturb"].path("perturb_zero"), KINDS["prompt"].path()
        ('perturb_zero.json', 'prompt.safetensors')
        """
        return self.file.format(name=name) if "{name}" in self.file else self.file

    def files(self, name: str | None = None) -> tuple[str, ...]:
        """Every file of one artifact of this kind: the file, its sidecar and extras.

        >>> KINDS["predictivity"].files(), KINDS["perturb"].files("perturb_zero")
        (('predictivity.safetensors', 'predictivity.safetensors.json'), ('perturb_zero.json', 'perturb_zero.csv'))
        """
        main = self.path(name)
        stem = main.rsplit(".", 1)[0]
        return (main,) + ((main + ".json",) if self.sidecar else ()) + tuple(stem + e for e in self.extras)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("run", "run.json", None, "skill-lens tune --out {run} --overwrite"),
    Kind("prompt", "prompt.safetensors", None, "skill-lens tune --out {run} --overwrite", sidecar=True),
    Kind("tuning_curve", "tuning_curve.json", "prompt", "skill-lens tune --out {run} --overwrite"),
    Kind("checkpoint", "checkpoint.safetensors", None, "skill-lens tune --out {run}"),
    Kind("predictivity", "predictivity.safetensors", "prompt", "skill-lens probe {run}", sidecar=True),
    Kind("neurons", "neurons.safetensors", "predictivity", "skill-lens neurons {run}", sidecar=True),
    Kind("perturb", "{name}.json", "predictivity", "skill-lens perturb {run}", "perturb", extras=(".csv",)),
    Kind("robustness", "{name}.json", "prompt", "skill-lens robustness {run} --adversarial ...", "robustness",
         extras=(".csv",)),
    Kind("pruned", "pruned", "predictivity", "skill-lens prune {run}", "pruned"),
    Kind("report", "report.html", None, "skill-lens report {run}"),
    Kind("seeds", "seeds.safetensors", "predictivity", "skill-lens seeds DIR (DIR: the seeds directory "
         "aggregating {run})", sidecar=True),
)}
PREFIXES = {"perturb_": "perturb", "robustness_": "robustness"}  # kinds made per use, by their names' prefix


def kind_of(filename: str) -> Kind | None:
    """The kind a file name in a run belongs to (``None``: not one of ours by name).

    >>> kind_of("predictivity.safetensors.json").name, kind_of("robustness_typos.json").name
    ('predictivity', 'robustness')
    """
    for kind in KINDS.values():
        if "{name}" not in kind.file and filename in kind.files():
            return kind
    for prefix, name in PREFIXES.items():
        if filename.startswith(prefix) and filename.endswith((".json", ".csv")) and ".checkpoint" not in filename:
            return KINDS[name]
    return None


def ours_by_name(folder) -> set[str]:
    """The files of a run made before manifests that are ours: the fixed names of our kinds, and results
    (``perturb_*``, ``robustness_*``) whose JSON records a lineage, with their tables. Reports and checkpoints
    are left out (a report is recognised by its generator tag; a checkpoint by its identity).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for name, text in [("run.json", "{}"), ("perturb_zero.json", '{"lineage": {}}'), ("perturb_zero.csv", ""),
    ...                    ("perturb_mine.json", "{}"), ("notes.txt", "")]:
    ...     _ = (d / name).write_text(text)
    >>> sorted(ours_by_name(d))
    ['perturb_zero.csv', 'perturb_zero.json', 'run.json']
    """
    folder, out = Path(folder), set()
    for p in folder.iterdir() if folder.is_dir() else ():
        kind = kind_of(p.name)
        if kind is None or not p.is_file() or kind.name in ("report", "checkpoint"):
            continue
        if "{name}" not in kind.file:
            out.add(p.name)
        elif p.suffix == ".json" and "lineage" in _json_object(p):
            out.update(f for f in kind.files(p.stem) if (folder / f).exists())
    return out


def _json_object(p: Path) -> dict:
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
