"""Clean vs adversarial analyses (Ackermann & Ohmer): does a prompt stay robust because it keeps
activating the same skill neurons on adversarial inputs?

* sources as splits: :func:`adversarial_split` (``"advglue:sst2[:PATH]"``, or a corruption of a
  task split such as ``"typos:0.1"``, ``"word_deletion:0.2"``, ``"word_swap:0.2"``, ``"distractor:1.0"``,
  any of :data:`skill_lens.data.adversarial.METHODS`), :func:`adversarial_task` (dev/test corrupted);
* accuracy: :func:`clean_vs_adversarial`;
* neurons: :func:`neuron_robustness` (predictivity on adversarial data with the clean train baseline,
  Spearman of clean vs adversarial scores, top-k overlaps by :func:`overlaps`, suppression curves);
* repair: :func:`patch_repair` patches the skill neurons' clean activations into adversarial runs.

Corrupted splits keep the order, so example ``i`` of the adversarial split is the corrupted version of
example ``i`` of the clean one (same label). AdvGLUE examples have no clean partner in this library.

>>> from skill_lens.model.tiny import tiny_task
>>> task = tiny_task()
>>> adv = adversarial_split("word_swap:1.0", task, seed=0)
>>> task.dev.texts[0], adv.texts[0], adv.labels == task.dev.labels
('was acting and the terrible', 'acting was and terrible the', True)
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from skill_lens.data.adversarial import METHODS, load_adv_glue, corrupt, corrupt_pairs
from skill_lens.data.batching import in_order, length_batches
from skill_lens.probing.scores import spearman, top_k_overlap
from skill_lens.data.tasks import Split, Task

__all__ = ["RobustnessError", "RobustnessResult", "RepairResult", "adversarial_split", "adversarial_task",
           "source_name", "check_adversarial", "clean_vs_adversarial", "overlaps", "neuron_robustness", "patch_repair",
           "DEFAULT_KS"]

DEFAULT_KS = tuple(i / 100 for i in range(1, 21))  # k = 1%, 2%, ..., 20% of the neurons
DEFAULT_STRENGTH = 0.1


class RobustnessError(ValueError):
    """An adversarial source or split cannot be used as asked; the message names the fix."""


# ------------------------------------------------------------------ sources


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
    skill_lens.studies.robustness.RobustnessError: the adversarial split has labels [0, 2] but task tiny_sentiment ...
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
    skill_lens.studies.robustness.RobustnessError: typos:0.1 corrupts a task's split: pass the task ...
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


# ------------------------------------------------------------------ accuracy


def _metrics(logits: Tensor, labels: Tensor) -> dict:
    """As :func:`skill_lens.prompting.tuning.evaluate`: accuracy, mean gold-minus-best-other logit difference, n."""
    gold = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return {"accuracy": (logits.argmax(1) == labels).float().mean().item(),
            "logit_diff": (gold - other).mean().item(), "n": len(labels)}


def _paired(a: Split, b: Split) -> bool:
    return len(a) == len(b) and a.labels == b.labels and (a.texts_b is None) == (b.texts_b is None)


def clean_vs_adversarial(pm, clean_split: Split, adv_split: Split, batch_size: int = 32,
                         paired: bool | None = None) -> dict:
    """Accuracy and logit difference of ``pm`` on clean and adversarial data, and the drop.

    ``paired`` (default: when both splits have the same length and labels) adds how often the prediction
    stays the same (``consistency``) and flips from right to wrong / wrong to right.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import hard_prompt_model
    >>> task = tiny_task()
    >>> r = clean_vs_adversarial(hard_prompt_model(tiny_model(), task), task.dev, task.dev)
    >>> r["accuracy_drop"], r["consistency"]
    (0.0, 1.0)
    """
    from skill_lens.prompting.evaluation import predict

    check_adversarial(clean_split, None, "clean split")
    check_adversarial(adv_split, None, "adversarial split")
    paired = _paired(clean_split, adv_split) if paired is None else paired
    if paired and not _paired(clean_split, adv_split):
        raise RobustnessError(f"paired=True needs splits of equal length and labels (got {len(clean_split)} and "
                              f"{len(adv_split)} examples); corrupt the clean split (adversarial_split) to pair them")
    lc, la = predict(pm, clean_split, batch_size, desc="clean"), predict(pm, adv_split, batch_size, desc="adversarial")
    yc, ya = torch.as_tensor(clean_split.labels), torch.as_tensor(adv_split.labels)
    out = {"clean": _metrics(lc, yc), "adversarial": _metrics(la, ya), "paired": paired}
    out["accuracy_drop"] = out["clean"]["accuracy"] - out["adversarial"]["accuracy"]
    if paired:
        pc, pa = lc.argmax(1), la.argmax(1)
        out["consistency"] = (pc == pa).float().mean().item()
        out["right_to_wrong"] = ((pc == yc) & (pa != ya)).float().mean().item()
        out["wrong_to_right"] = ((pc != yc) & (pa == ya)).float().mean().item()
    return out


# ------------------------------------------------------------------ neurons


def overlaps(clean: Float[Tensor, "layer d_mlp"], adv: Float[Tensor, "layer d_mlp"],
             ks: Sequence[float | int] = DEFAULT_KS) -> dict:
    """Top-k overlaps ``|top-k clean ∩ top-k adv| / k`` for every ``k``: over all neurons (``total``) and
    within each layer (``per_layer`` ``[L][K]``); ``chance`` is the expected overlap of random sets (k / N).
    The dict goes straight to :func:`skill_lens.views.plots.overlap_curves`.

    >>> s = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2]])
    >>> o = overlaps(s, s, [0.25, 0.5])
    >>> o["total"], o["per_layer"]
    ([1.0, 1.0], [[1.0, 1.0], [1.0, 1.0]])
    >>> overlaps(s, -s, [0.25])["total"]
    [0.0]
    """
    if clean.shape != adv.shape or clean.dim() != 2:
        raise RobustnessError(f"clean and adversarial scores must both be [layer d_mlp] of one model, got "
                              f"{tuple(clean.shape)} and {tuple(adv.shape)}")
    ks = list(ks)
    if not ks:
        raise RobustnessError("no k given; pass fractions of neurons such as 0.01,0.05,0.1")
    L, N = clean.shape
    total = [top_k_overlap(clean, adv, k) for k in ks]
    per_layer = [[top_k_overlap(clean[l : l + 1], adv[l : l + 1], k) for k in ks] for l in range(L)]
    chance = [(k if isinstance(k, float) else k / (L * N)) for k in ks]
    return {"ks": ks, "total": total, "per_layer": per_layer, "chance": chance}


def _spearman(a: Tensor, b: Tensor) -> float:
    try:
        return spearman(a, b)
    except ValueError:  # a constant layer (e.g. all 0.5): undefined
        return math.nan


@dataclass
class RobustnessResult:
    """Clean and adversarial neuron scores ``[L, d_mlp]`` (max over prompt positions) and their comparison.

    ``adv_self`` (optional) compares with scores whose baseline comes from half of the adversarial data;
    ``curves`` holds suppression curves on adversarial data by clean and by adversarial neurons.
    """

    clean_scores: Float[Tensor, "layer d_mlp"]
    adv_scores: Float[Tensor, "layer d_mlp"]
    accuracy: dict
    spearman: float
    spearman_per_layer: list[float]
    overlap: dict
    adv_self: dict | None = None
    curves: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain data (JSON-ready; NaN becomes None); the score tensors are left out.

        >>> r = RobustnessResult(torch.ones(1, 2), torch.ones(1, 2), {}, 1.0, [math.nan],
        ...                      overlaps(torch.eye(2), torch.eye(2), [0.5]))
        >>> r.to_dict()["spearman_per_layer"], r.to_dict()["overlap"]["total"]
        ([None], [1.0])
        """
        return _no_nan({"accuracy": self.accuracy, "spearman": self.spearman,
                        "spearman_per_layer": self.spearman_per_layer, "overlap": self.overlap,
                        "adv_self": self.adv_self, "curves": {k: c.to_dict() for k, c in self.curves.items()},
                        "meta": self.meta})

    def to_pandas(self):
        """The overlap table: one row per k (``k``, ``overlap``, ``chance``, ``layer_0``... and, with
        ``adv_self``, ``adv_self_overlap``).

        >>> r = RobustnessResult(torch.ones(2, 2), torch.ones(2, 2), {}, 1.0, [1.0, 1.0],
        ...                      overlaps(torch.eye(2), torch.eye(2), [0.5]))
        >>> list(r.to_pandas().columns)
        ['k', 'overlap', 'chance', 'layer_0', 'layer_1']
        """
        import pandas as pd

        o = self.overlap
        rows = []
        for j, k in enumerate(o["ks"]):
            row = {"k": k, "overlap": o["total"][j], "chance": o["chance"][j]}
            row |= {f"layer_{l}": per[j] for l, per in enumerate(o["per_layer"])}
            if self.adv_self and "overlap" in self.adv_self:
                row["adv_self_overlap"] = self.adv_self["overlap"][j]
            rows.append(row)
        return pd.DataFrame(rows)

    def table(self) -> str:
        """Overlaps per k as text: overall, chance, and the layers' mean / min / max.

        >>> r = RobustnessResult(torch.ones(2, 2), torch.ones(2, 2), {}, 1.0, [1.0, 1.0],
        ...                      overlaps(torch.eye(2), torch.eye(2), [0.5]))
        >>> print(r.table().splitlines()[1])
           0.5   1.000  0.500      1.000 1.000 1.000
        """
        lines = [f"{'k':>6} {'overlap':>7} {'chance':>6} {'layer mean':>10} {'min':>5} {'max':>5}"]
        o = self.overlap
        for j, k in enumerate(o["ks"]):
            col = [per[j] for per in o["per_layer"]]
            lines.append(f"{k:>6g} {o['total'][j]:>7.3f} {o['chance'][j]:>6.3f} {sum(col) / len(col):>10.3f} "
                         f"{min(col):>5.3f} {max(col):>5.3f}")
        return "\n".join(lines)

    def summary_text(self) -> str:
        """What ``skill-lens robustness`` prints: accuracies, Spearman, the overlap table, the curves."""
        a = self.accuracy
        lines = [f"accuracy  clean {a['clean']['accuracy']:.3f} ({a['clean']['n']})  adversarial "
                 f"{a['adversarial']['accuracy']:.3f}  drop {a['accuracy_drop']:+.3f}"
                 + (f"  consistency {a['consistency']:.3f}" if a["paired"] else ""),
                 f"Spearman (clean vs adversarial predictivity, {self.clean_scores.numel()} neurons): "
                 f"{self.spearman:.3f}"]
        if self.adv_self:
            lines.append("adversarial-baseline scores: " + ", ".join(f"{k}={v}" for k, v in self.adv_self.items()
                                                                     if not isinstance(v, list)))
        lines += ["top-k overlap |clean ∩ adversarial| / k:", self.table()]
        for key, curve in self.curves.items():
            lines += [f"suppression on adversarial data, {key.replace('_', ' ')} ({curve.method}):", curve.table()]
        return "\n".join(lines)


def _no_nan(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def _halves(s: Split, seed: int) -> tuple[Split, Split]:
    """Two halves of ``s``, stratified by label and seeded."""
    rng, a, b = random.Random(f"skill_lens.robustness/halves/{seed}"), [], []
    for y in sorted(set(s.labels)):
        idx = [i for i, v in enumerate(s.labels) if v == y]
        rng.shuffle(idx)
        a, b = a + idx[: len(idx) // 2], b + idx[len(idx) // 2 :]
    return s.subset(sorted(a)), s.subset(sorted(b))


def neuron_robustness(pm, task: Task, adv_split: Split, ks: Sequence[float | int] = DEFAULT_KS, split: str = "dev",
                      adv_baseline: bool = False, min_half: int = 20, curve_fractions: Sequence[float] = (0, 0.05, 0.1),
                      method: str = "gaussian", controls: int = 1, batch_size: int = 32, seed: int = 0,
                      aggregate: str = "max") -> RobustnessResult:
    """Skill neurons on clean vs adversarial data.

    One probe pass: baselines from the clean train split; predictivity on the clean ``split`` and on
    ``adv_split``. Scores are aggregated over prompt positions (``aggregate``). Reports Spearman's
    correlation (all neurons and per layer) and :func:`overlaps` for ``ks``. ``adv_baseline=True`` also
    probes with the baseline from one half of ``adv_split`` and accuracy on the other, when each half has
    ``min_half`` examples of both labels (else ``adv_self`` says why it was skipped).
    ``curve_fractions`` (empty: none) gives suppression curves on ``adv_split`` with the top clean and
    the top adversarial neurons (``method``, ``controls`` random sets; see :mod:`skill_lens.intervening.suppression`); the
    adversarial neurons are selected on the data they are then suppressed on, which favours them.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> r = neuron_robustness(pm, task, task.dev, ks=[0.05], curve_fractions=())
    >>> r.spearman, r.overlap["total"]
    (1.0, [1.0])
    """
    from skill_lens.intervening.suppression import suppression_curve
    from skill_lens.probing.probe import probe

    check_adversarial(adv_split, task)
    if len(set(adv_split.labels)) < 2:
        raise RobustnessError("the adversarial split has only one label; predictivity needs both classes")
    clean = check_adversarial(getattr(task, split), task, f"clean {split} split")
    res = probe(pm, replace(task, dev=clean, test=adv_split), batch_size=batch_size, splits=("dev", "test"))
    cs, as_ = res.scores("dev", aggregate=aggregate), res.scores("test", aggregate=aggregate)
    over = overlaps(cs, as_, ks)
    adv_self = None
    if adv_baseline:
        a, b = _halves(adv_split, seed)
        if min(len(a), len(b)) < min_half or min(len(set(a.labels)), len(set(b.labels))) < 2:
            adv_self = {"skipped": f"{len(adv_split)} adversarial examples: each half needs {min_half} with both "
                                   "labels (lower min_half or use more data)"}
        else:
            self_task = replace(task, train=a, dev=b, test=Split([], [], [] if b.texts_b is not None else None))
            ss = probe(pm, self_task, batch_size=batch_size, splits=("dev",)).scores("dev", aggregate=aggregate)
            adv_self = {"n_baseline": len(a), "n_eval": len(b), "spearman": _spearman(cs, ss),
                        "spearman_vs_adv": _spearman(as_, ss), "overlap": overlaps(cs, ss, ks)["total"]}
    curves = {}
    if len(curve_fractions):
        for name, scores in (("clean_neurons", cs), ("adversarial_neurons", as_)):
            curves[name] = suppression_curve(pm, adv_split, scores, curve_fractions, method=method, controls=controls,
                                             baseline=res.baseline, seed=seed, batch_size=batch_size)
    acc = clean_vs_adversarial(pm, clean, adv_split, batch_size)
    meta = {"task": task.name, "clean_split": split, "n_train": len(task.train), "n_clean": len(clean),
            "n_adversarial": len(adv_split), "aggregate": aggregate, "shape": list(cs.shape),
            "model": res.meta.get("model"), "curve_method": method, "controls": controls}
    return RobustnessResult(cs, as_, acc, _spearman(cs, as_), [_spearman(c, a) for c, a in zip(cs, as_)], over,
                            adv_self, curves, meta)


# ------------------------------------------------------------------ patching repair


@dataclass
class RepairResult:
    """Accuracy on clean, adversarial, and adversarial runs with clean skill-neuron activations patched in.

    ``recovered = (patched - adversarial) / (clean - adversarial)`` accuracy; NaN when
    ``|clean - adversarial|`` is below ``eps`` (nothing to recover). ``fixed`` / ``broken``: fractions
    of examples the patch turns wrong -> right / right -> wrong.
    """

    clean_accuracy: float
    adversarial_accuracy: float
    patched_accuracy: float
    recovered: float
    fixed: float
    broken: float
    logit_diff: dict
    n: int
    n_neurons: int

    def to_dict(self) -> dict:
        """Plain data (NaN becomes None).

        >>> RepairResult(0.9, 0.6, 0.75, 0.5, 0.2, 0.05, {}, 10, 3).to_dict()["recovered"]
        0.5
        """
        return _no_nan(dict(vars(self)))


def patch_repair(pm, clean_split: Split, adv_split: Split, neurons, batch_size: int = 32,
                 positions: str = "prompt", eps: float = 1e-9) -> RepairResult:
    """Patch ``neurons``' activations from each clean example into its adversarial partner's run.

    The splits must be paired (example ``i`` of ``adv_split`` is a corruption of example ``i`` of ``clean_split``).
    Prompt positions align even when the texts have different lengths. Built on
    :func:`skill_lens.intervening.patching.patch_hooks` (one capture pass on the clean batch per batch).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> r = patch_repair(pm, task.dev, task.dev, torch.ones(2, 64, dtype=torch.bool))
    >>> r.patched_accuracy == r.adversarial_accuracy == r.clean_accuracy, math.isnan(r.recovered)
    (True, True)
    """
    from skill_lens.intervening.interventions import neuron_mask
    from skill_lens.intervening.patching import patch_hooks

    check_adversarial(clean_split, None, "clean split")
    check_adversarial(adv_split, None, "adversarial split")
    if not _paired(clean_split, adv_split):
        raise RobustnessError(f"patching needs paired splits (same length, labels and form), got {len(clean_split)} "
                              f"clean and {len(adv_split)} adversarial examples; use a corruption source "
                              "(adversarial_split('typos:0.1', task)) -- AdvGLUE has no clean partners here")
    if positions == "prompt" and pm.prompt is None:
        raise RobustnessError("a hard prompt has no prompt positions to patch; "
                              "pass positions='predict' or a soft prompt")
    n_neurons = int(neuron_mask(pm.model, neurons).sum())
    logits = {"clean": [], "adversarial": [], "patched": []}

    batches = length_batches(pm, adv_split, batch_size)  # pairs batched by the adversarial text's length
    with torch.no_grad():
        for part in batches:
            src, tgt = pm.encode_split(clean_split, part), pm.encode_split(adv_split, part)
            hooks = patch_hooks(pm, src, tgt, neurons, positions) if n_neurons else []
            logits["clean"].append(pm.label_logits(src).float().cpu())  # collected on the CPU
            logits["adversarial"].append(pm.label_logits(tgt).float().cpu())
            patched = pm.label_logits(tgt, fwd_hooks=hooks).float().cpu() if hooks else logits["adversarial"][-1]
            logits["patched"].append(patched)
    logits = {k: in_order(v, batches) for k, v in logits.items()}
    y = torch.as_tensor(adv_split.labels)
    m = {k: _metrics(v, y) for k, v in logits.items()}
    right = {k: v.argmax(1) == y for k, v in logits.items()}
    gap = m["clean"]["accuracy"] - m["adversarial"]["accuracy"]
    recovered = (m["patched"]["accuracy"] - m["adversarial"]["accuracy"]) / gap if abs(gap) > eps else math.nan
    return RepairResult(m["clean"]["accuracy"], m["adversarial"]["accuracy"], m["patched"]["accuracy"], recovered,
                        (~right["adversarial"] & right["patched"]).float().mean().item(),
                        (right["adversarial"] & ~right["patched"]).float().mean().item(),
                        {k: v["logit_diff"] for k, v in m.items()}, len(y), n_neurons)
