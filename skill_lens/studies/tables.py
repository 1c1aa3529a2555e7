"""The small result objects the studies return: labelled matrices and tables (``.to_pandas()``, ``.to_dict()``).

Matrix results index rows by the *source* (the task whose prompt or neurons are used) and columns by the
*target*; ``numpy.asarray(result)`` gives the values, so ``plots.heatmap(result, result.rows)`` draws them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping

import torch  # noqa: F401  (the doctests use it)
from jaxtyping import Float
from torch import Tensor


__all__ = ["AnalysisError", "Result", "to_plain", "Matrix", "SpearmanMatrix", "TransferMatrix", "Table", "TokenTable",
           "check_names"]


class AnalysisError(ValueError):
    """The inputs of an analysis do not fit together."""


def to_plain(x):
    """Tensors, floats (NaN -> None), dataclasses and containers -> JSON-able values."""
    if isinstance(x, Tensor):
        return to_plain(x.tolist())
    if isinstance(x, float):
        return None if math.isnan(x) else x
    if isinstance(x, Mapping):
        return {str(k): to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    return x


class Result:
    """A study's result: a dataclass that turns into plain JSON-able values."""

    def to_dict(self) -> dict:
        """Every field as plain JSON-able values (tensors as lists, NaN as ``None``)."""
        return {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass
class Matrix(Result):
    """A labelled ``[rows, cols]`` matrix (rows: source, columns: target).

    >>> m = Matrix(["a", "b"], ["a", "b"], torch.eye(2), "demo")
    >>> float(m.to_pandas().loc["a", "b"]), m.to_dict()["values"]
    (0.0, [[1.0, 0.0], [0.0, 1.0]])
    """

    rows: list[str]
    cols: list[str]
    values: Float[Tensor, "rows cols"]
    kind: str = ""

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.values.double().numpy(), index=list(self.rows), columns=list(self.cols))

    def __array__(self, dtype=None, copy=None):
        return self.values.double().numpy().astype(dtype or "float64")

    def off_diagonal(self) -> dict[tuple[str, str], float]:
        """``{(row, col): value}`` for ``row != col``.

        >>> Matrix(["a", "b"], ["a", "b"], torch.tensor([[1., 2.], [3., 4.]])).off_diagonal()
        {('a', 'b'): 2.0, ('b', 'a'): 3.0}
        """
        return {(r, c): float(self.values[i, j]) for i, r in enumerate(self.rows)
                for j, c in enumerate(self.cols) if r != c}


@dataclass
class SpearmanMatrix(Matrix):
    """Spearman correlations between tasks' neuron rankings, with type-level means.

    ``values[i, j]`` is the mean over seed pairs; the diagonal is the mean correlation between
    different seeds of a task (1.0 when it has one). ``within_type``/``cross_type`` average the
    off-diagonal entries whose tasks share/do not share a type (``None`` when there are none).
    """

    types: dict[str, str] | None = None
    within_type: float | None = None
    cross_type: float | None = None
    n_seeds: dict[str, int] = field(default_factory=dict)


@dataclass
class Table(Result):
    """Rows of plain values (``list[dict]``), e.g. the origin table."""

    rows: list[dict]
    kind: str = ""

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


@dataclass
class TokenTable(Result):
    """The ``k`` tokens scoring highest (``top``) and lowest (``bottom``) for one neuron."""

    layer: int
    neuron: int
    measure: str
    top: list[dict]
    bottom: list[dict]

    def to_pandas(self):
        import pandas as pd

        rows = [{"end": end, "rank": r, **d} for end in ("top", "bottom") for r, d in enumerate(getattr(self, end))]
        return pd.DataFrame(rows)


@dataclass
class TransferMatrix(Matrix):
    """``values``: a relative or difference measure; ``accuracy[s, t]``: raw accuracy of source ``s``
    on target ``t``; ``own_accuracy[t]``: the target's own (clean) accuracy."""

    accuracy: Tensor | None = None
    own_accuracy: dict[str, float] = field(default_factory=dict)


def check_names(pms, tasks, what: str) -> list[str]:
    names = list(pms)
    if not names:
        raise AnalysisError(f"{what} needs at least one task")
    if missing := [n for n in names if n not in tasks]:
        raise AnalysisError(f"no task given for {missing}; pass tasks[name] for every prompt.")
    counts = {n: tasks[n].n_labels for n in names}
    if len(set(counts.values())) > 1:
        raise AnalysisError(f"{what} needs tasks with the same number of labels, got {counts}; "
                            "make binary subtasks first (task.binarize(...), CLI --binary).")
    return names
