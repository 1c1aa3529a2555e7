"""A suppression curve's result: per-set rows, their summary with the gap's bootstrap interval, and its views.

:func:`skill_lens.intervening.suppression.suppression_curve` computes the rows (one per fraction, neuron set and
noise draw); :class:`SuppressionCurve` holds them and reads them: :meth:`~SuppressionCurve.summary` per fraction
(the skill set against the random sets, the gap with its paired bootstrap 95% interval over examples), a text
:meth:`~SuppressionCurve.table`, a notebook card, and plain data both ways (:meth:`~SuppressionCurve.to_dict`,
:meth:`~SuppressionCurve.from_dict`) for ``perturb_*.json`` and :meth:`Run.curve <skill_lens.workflow.runs.Run.curve>`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

from skill_lens.base.display import card, table
from skill_lens.base.stats import paired_bootstrap_gap

__all__ = ["SuppressionCurve"]


@dataclass
class SuppressionCurve:
    """Per-fraction results: ``rows`` has one dict per (fraction, neuron set, noise draw) with ``fraction``,
    ``set`` (``"skill"`` or ``"random"``), ``draw`` (the random control's index; 0 for the skill set),
    ``noise_draw`` (the noise draw's index, 0 unless ``draws > 1``), ``n_neurons``, ``accuracy``,
    ``logit_diff`` and ``correct`` (each example's correctness as a string of ``0``/``1``, for the
    bootstrap interval of the gap). ``meta`` may hold ``bootstrap`` and ``ci_seed`` for that interval."""

    rows: list[dict]
    fractions: list[float]
    method: str
    meta: dict = field(default_factory=dict)

    def summary(self) -> list[dict]:
        """One row per fraction: the skill set's numbers (mean over noise draws), the random sets' mean
        and std (over controls and noise draws), the accuracy drop of the skill set beyond the random
        sets' (``gap`` = random mean - skill) and its paired bootstrap 95% interval over examples
        (``gap_ci_low``, ``gap_ci_high``; :func:`skill_lens.base.stats.paired_bootstrap_gap`, NaN without
        random sets or rows without ``correct``).

        >>> c = SuppressionCurve([{"fraction": 0.1, "set": "skill", "draw": 0, "n_neurons": 2, "accuracy": 0.5,
        ...     "logit_diff": 0.0, "correct": "1100"}, {"fraction": 0.1, "set": "random", "draw": 0,
        ...     "n_neurons": 2, "accuracy": 0.75, "logit_diff": 1.0, "correct": "1110"}], [0.1], "zero")
        >>> s = c.summary()[0]
        >>> s["gap"], s["gap_ci_low"] <= s["gap"] <= s["gap_ci_high"]
        (0.25, True)
        """
        out = []
        for f in self.fractions:
            skill = [r for r in self.rows if r["fraction"] == f and r["set"] == "skill"]
            rand = [r for r in self.rows if r["fraction"] == f and r["set"] == "random"]
            row = {"fraction": f, "n_neurons": skill[0]["n_neurons"],
                   "skill_accuracy": statistics.fmean(r["accuracy"] for r in skill),
                   "skill_logit_diff": statistics.fmean(r["logit_diff"] for r in skill)}
            for key in ("accuracy", "logit_diff"):
                vals = [r[key] for r in rand]
                row[f"random_{key}_mean"] = statistics.fmean(vals) if vals else math.nan
                row[f"random_{key}_std"] = statistics.pstdev(vals) if len(vals) > 1 else (0.0 if vals else math.nan)
            row["gap"] = row["random_accuracy_mean"] - row["skill_accuracy"]
            row["gap_ci_low"], row["gap_ci_high"] = self._gap_interval(skill, rand)
            out.append(row)
        return out

    def _gap_interval(self, skill: list[dict], rand: list[dict]) -> tuple[float, float]:
        if not rand or not all("correct" in r for r in skill + rand):
            return math.nan, math.nan

        def bits(rows):
            return torch.tensor([[c == "1" for c in r["correct"]] for r in rows], dtype=torch.bool)

        _, low, high = paired_bootstrap_gap(bits(skill), bits(rand), int(self.meta.get("bootstrap", 1000)),
                                            int(self.meta.get("ci_seed", 0)))
        return low, high

    def to_dict(self) -> dict:
        """Plain data (JSON-ready): method, fractions, meta, per-set rows and the per-fraction summary."""
        return {"method": self.method, "fractions": self.fractions, "meta": self.meta, "rows": self.rows,
                "summary": self.summary()}

    def to_pandas(self):
        """The per-fraction :meth:`summary` as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.summary())

    @classmethod
    def from_dict(cls, data: dict) -> "SuppressionCurve":
        """The curve back from :meth:`to_dict` (e.g. a ``perturb_*.json``; a run reads it with
        :meth:`Run.curve <skill_lens.workflow.runs.Run.curve>`, checked).

        >>> c = SuppressionCurve([{"fraction": 0.0, "set": "skill", "draw": 0, "n_neurons": 0, "accuracy": 0.9,
        ...                        "logit_diff": 1.0}], [0.0], "zero", {"n_examples": 8})
        >>> again = SuppressionCurve.from_dict(c.to_dict())
        >>> (again.rows, again.fractions, again.method, again.meta) == (c.rows, c.fractions, c.method, c.meta)
        True
        """
        missing = [k for k in ("rows", "fractions", "method") if k not in data]
        if missing:
            raise ValueError(f"not a suppression curve: no {', '.join(missing)} (write one with suppression_curve "
                             "or skill-lens perturb)")
        return cls(list(data["rows"]), [float(f) for f in data["fractions"]], str(data["method"]),
                   dict(data.get("meta") or {}))

    def _largest_gap(self) -> str:
        """``"12.2 points at 10% (95% CI 5.0 to 19.5)"``: the largest gap, stated with its interval."""
        rows = [r for r in self.summary() if r["fraction"] > 0 and r["gap"] == r["gap"]]
        if not rows:
            return "no random controls" if self.summary() and not self.meta.get("controls", 1) else "n/a"
        r = max(rows, key=lambda r: r["gap"])
        ci = "" if r["gap_ci_low"] != r["gap_ci_low"] else \
            f" (95% CI {100 * r['gap_ci_low']:.1f} to {100 * r['gap_ci_high']:.1f})"
        return f"{100 * r['gap']:.1f} points at {r['fraction']:.0%}{ci}"

    def _fields(self) -> list[tuple[str, str]]:
        m = self.meta
        draws = f" x {m['draws']} noise draws" if m.get("draws", 1) > 1 else ""
        return [("perturbation", f"{self.method} at the {m.get('positions', 'prompt')} positions of the top "
                 f"{', '.join(f'{f:.0%}' for f in self.fractions)} of "
                 f"{'each layer' if m.get('per_layer') else 'all neurons'}"),
                ("controls", f"{m.get('controls', '?')} random sets of the same size per layer{draws}"),
                ("examples", str(m.get("n_examples", "?"))), ("largest gap", self._largest_gap())]

    def __repr__(self) -> str:
        """The perturbation, its controls and the largest gap with its interval (no rows).

        >>> SuppressionCurve([{"fraction": 0.0, "set": "skill", "draw": 0, "n_neurons": 0, "accuracy": 0.9,
        ...                    "logit_diff": 1.0}], [0.0], "zero", {"n_examples": 8, "controls": 0})
        SuppressionCurve(perturbation: zero at the prompt positions of the top 0% of all neurons; controls: 0 random sets of the same size per layer; examples: 8; largest gap: no random controls)
        """
        return "SuppressionCurve(" + "; ".join(f"{k}: {v}" for k, v in self._fields()) + ")"

    def _repr_html_(self) -> str:
        """In a notebook: what was perturbed, and the summary as a table that fits (gap in points)."""
        rows = [[f"{r['fraction']:.0%}", r["n_neurons"], r["skill_accuracy"],
                 f"{r['random_accuracy_mean']:.3f} ± {r['random_accuracy_std']:.3f}", _points(r["gap"]),
                 _interval(r)] for r in self.summary()]
        return card("SuppressionCurve", self._fields(), table(rows, [
            "fraction", "neurons", "skill set acc", "random sets acc", "gap (points)", "gap 95% CI"]))

    def table(self) -> str:
        """The summary as a fixed-width text table under 80 characters: accuracy of the skill set and of
        the random sets (mean ± std), the gap in points with its 95% bootstrap interval (logit differences:
        :meth:`to_pandas`)."""
        lines = [f"{'fraction':>8} {'neurons':>7} {'skill acc':>9} {'random acc':>15} {'gap (pts)':>9} {'gap 95% CI':>14}"]
        for r in self.summary():
            lines.append(f"{r['fraction']:>8.1%} {r['n_neurons']:>7d} {r['skill_accuracy']:>9.3f} "
                         f"{r['random_accuracy_mean']:>7.3f} ± {r['random_accuracy_std']:<5.3f} "
                         f"{_points(r['gap']):>9} {_interval(r):>14}")
        return "\n".join(lines)


def _points(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def _interval(row: dict) -> str:
    return "n/a" if row["gap_ci_low"] != row["gap_ci_low"] else \
        f"[{100 * row['gap_ci_low']:.1f}, {100 * row['gap_ci_high']:.1f}]"
