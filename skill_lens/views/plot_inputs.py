"""What the figures of :mod:`skill_lens.views.plots` accept, read into arrays: duck-typed, so a result object,
its ``.to_dict()`` or its ``.to_pandas()`` all work and the plots depend on no result class. Curves (suppression:
long rows, a summary DataFrame, a dict of series) become a mean with its spread per name, a curve's summary the
gap with its interval, a labelled matrix its values and labels, overlap results one curve per name, pruning
results points with a speed.

>>> m, rows, cols = labelled_matrix({"rows": ["a", "b"], "cols": ["x"], "values": [[1.0], [2.0]]})
>>> m.shape, rows, cols
((2, 1), ['a', 'b'], ['x'])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["curve_series", "gap_series", "labelled_matrix", "overlap_series", "tradeoff_points", "as_array",
           "as_mapping", "SPEED_KEYS"]

SPEED_KEYS = ("speedup", "speed", "throughput", "examples_per_s", "tokens_per_s", "relative_speed")


def as_array(x: Any) -> np.ndarray:
    """Tensor, array, list or scalar -> float64 numpy array.

    >>> import torch
    >>> as_array(torch.tensor([1, 2])), as_array(0.5).shape
    (array([1., 2.]), ())
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def as_mapping(obj: Any) -> Any:
    """A result object -> its ``to_dict()``; DataFrames and mappings pass through.

    >>> class Result:
    ...     def to_dict(self): return {"ks": [1, 5]}
    >>> as_mapping(Result()), as_mapping({"a": 1})
    ({'ks': [1, 5]}, {'a': 1})
    """
    if hasattr(obj, "to_dict") and not hasattr(obj, "columns") and not isinstance(obj, Mapping):
        return obj.to_dict()
    return obj


def _records_series(records: list[Mapping], fractions=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Long records (``fraction``, ``set``/``kind``, ``accuracy``) -> ``(fractions, {set: [F, draws]})``."""
    if not records:
        raise ValueError("the curve has no rows")
    keys = set(records[0])
    fkey = next((k for k in keys if "fraction" in str(k)), None)
    ykey = next((k for k in ("accuracy", "acc", "value", "metric") if k in keys), None)
    kkey = next((k for k in ("set", "kind", "selection", "neurons", "which", "method", "group") if k in keys), None)
    if fkey is None or ykey is None or kkey is None:
        raise ValueError(f"curve rows need fraction, set (or kind) and accuracy fields; got {sorted(map(str, keys))}")
    fr = np.array(sorted({float(r[fkey]) for r in records}) if fractions is None else fractions, dtype=np.float64)
    groups: dict[str, list[list[float]]] = {}
    for r in records:
        per = groups.setdefault(str(r[kkey]), [[] for _ in fr])
        per[int(np.argmin(abs(fr - float(r[fkey]))))].append(np.nan if r[ykey] is None else float(r[ykey]))
    series = {}
    for name, per in groups.items():
        width = max(1, max(len(p) for p in per))
        series[name] = np.array([p + [np.nan] * (width - len(p)) for p in per])
    return fr, series


def curve_series(curve: Any) -> tuple[np.ndarray, dict[str, tuple]]:
    """``(fractions [F], {name: (mean [F], low [F] | None, high [F] | None, n_draws)})``.

    Accepts long rows (``{"fractions", "rows": [{"fraction", "set", "accuracy"}...]}``, a
    ``SuppressionCurve``), a long DataFrame, a summary DataFrame (``skill_accuracy``,
    ``random_accuracy_mean``/``_std``), or ``{"fractions": [F], name: [F] or [F, draws]}``.

    >>> fr, out = curve_series({"fractions": [0, .1], "skill": [.9, .5], "random": [[1, .5], [.75, 1]]})
    >>> fr.tolist(), out["random"][0].tolist(), out["random"][1].tolist(), out["skill"][1:]
    ([0.0, 0.1], [0.75, 0.875], [0.5, 0.75], (None, None, 1))
    """
    curve = as_mapping(curve)
    if hasattr(curve, "columns"):
        cols = list(curve.columns)
        if "skill_accuracy" in cols:  # the per-fraction summary of skill_lens.intervening.suppression
            fr = curve[next(c for c in cols if "fraction" in str(c))].to_numpy(dtype=np.float64)
            out = {"skill": (curve["skill_accuracy"].to_numpy(dtype=np.float64), None, None, 1)}
            if "random_accuracy_mean" in cols:
                m = curve["random_accuracy_mean"].to_numpy(dtype=np.float64)
                sd = curve["random_accuracy_std"].to_numpy(dtype=np.float64) if "random_accuracy_std" in cols else 0 * m
                out["random"] = (m, m - sd, m + sd, 2)
            return fr, out
        fr, series = _records_series(curve.to_dict("records"))
    elif isinstance(curve, Mapping):
        fkey = next((k for k in ("fractions", "fraction", "x") if k in curve), None)
        if isinstance(curve.get("rows"), list):
            fr, series = _records_series(curve["rows"], curve.get(fkey))
        elif fkey is None:
            raise ValueError(f"a curve dict needs a 'fractions' key; got keys {sorted(curve)}")
        else:
            fr, series = as_array(curve[fkey]), {}
            for key, value in curve.items():
                if key == fkey or value is None or isinstance(value, (str, bool, int, float)):
                    continue
                if isinstance(value, Mapping):  # {"accuracy": [[...]]} or {"mean": ...}
                    value = next((value[k] for k in ("accuracy", "accuracies", "values", "draws", "mean")
                                  if k in value), None)
                try:
                    arr = as_array(value)
                except (TypeError, ValueError):
                    continue
                if arr.ndim == 2 and arr.shape[0] != len(fr) and arr.shape[1] == len(fr):
                    arr = arr.T  # [draws, F] -> [F, draws]
                if arr.ndim in (1, 2) and arr.shape[0] == len(fr):
                    series[str(key)] = arr.reshape(len(fr), -1)
    else:
        raise TypeError(f"expected a curve object, dict or DataFrame, got {type(curve).__name__}")
    if not series:
        raise ValueError(f"no accuracy series of length {len(fr)} found in the curve")
    out = {}
    for name, v in series.items():
        many = v.shape[1] > 1
        out[name] = (np.nanmean(v, 1), np.nanmin(v, 1) if many else None, np.nanmax(v, 1) if many else None, v.shape[1])
    return fr, out


def gap_series(curve: Any) -> np.ndarray | None:
    """``[F, 4]`` rows ``(fraction, gap, gap_ci_low, gap_ci_high)`` of a curve's per-fraction summary (its
    ``.to_dict()["summary"]`` or ``.to_pandas()``), or ``None`` when it has no finite gap interval.

    >>> gap_series({"summary": [{"fraction": 0.1, "gap": 0.2, "gap_ci_low": 0.1, "gap_ci_high": 0.3}]}).tolist()
    [[0.1, 0.2, 0.1, 0.3]]
    >>> gap_series({"fractions": [0.1], "skill": [0.5]}) is None
    True
    """
    keys = ("fraction", "gap", "gap_ci_low", "gap_ci_high")
    if hasattr(curve, "columns"):
        rows = curve.to_dict("records")
    else:
        m = as_mapping(curve)
        rows = m.get("summary") if isinstance(m, Mapping) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, Mapping) and all(k in r for k in keys)
                                                          for r in rows):
        return None
    out = np.array([[np.nan if r[k] is None else float(r[k]) for k in keys] for r in rows], dtype=np.float64)
    return out if np.isfinite(out[:, 2:]).any() else None


def labelled_matrix(matrix: Any, labels: Sequence[str] | None = None,
                    col_labels: Sequence[str] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """``(values [R, C], row labels, column labels)`` of a 2-d array, a :mod:`skill_lens.studies.tables` matrix,
    its ``.to_dict()`` or a labelled DataFrame; ``labels`` / ``col_labels`` override the matrix's own. A square
    matrix's columns default to its row labels, others' to their indices.

    >>> labelled_matrix([[1.0, 0.5]], ["a"])[1:]
    (['a'], ['0', '1'])
    """
    if isinstance(matrix, Mapping) and "values" in matrix:  # Matrix.to_dict()
        labels = labels if labels is not None else matrix.get("rows")
        col_labels = col_labels if col_labels is not None else matrix.get("cols")
        matrix = matrix["values"]
    elif hasattr(matrix, "rows") and hasattr(matrix, "values") and not hasattr(matrix, "columns"):
        labels = labels if labels is not None else list(matrix.rows)
        col_labels = col_labels if col_labels is not None else list(matrix.cols)
        matrix = matrix.values
    elif hasattr(matrix, "columns") and hasattr(matrix, "index"):  # a labelled DataFrame
        labels = labels if labels is not None else [str(x) for x in matrix.index]
        col_labels = col_labels if col_labels is not None else [str(x) for x in matrix.columns]
        matrix = matrix.to_numpy(dtype=np.float64)
    m = as_array(matrix)
    if m.ndim != 2:
        raise ValueError(f"heatmap needs a 2-d matrix, got shape {m.shape}")
    rows = list(labels) if labels is not None else [str(i) for i in range(m.shape[0])]
    cols = list(col_labels) if col_labels is not None else (rows if m.shape[0] == m.shape[1] else
                                                             [str(i) for i in range(m.shape[1])])
    if len(rows) != m.shape[0] or len(cols) != m.shape[1]:
        raise ValueError(f"{len(rows)} row / {len(cols)} column labels for a {m.shape[0]}x{m.shape[1]} matrix")
    return m, rows, cols


def overlap_series(ks: Any, overlaps: Any = None, chance: Any = None,
                   layer_labels: Sequence[str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
    """``(ks [K], {name: overlap [K]}, chance)`` for :func:`~skill_lens.views.plots.overlap_curves`: per-layer
    curves are named ``"layer {i}"`` (or by ``layer_labels``), an ``"overlap"`` curve is the ``"total"``. Without
    ``overlaps``, ``ks`` is a ``RobustnessResult``, its ``.to_dict()`` / ``.to_pandas()`` or a dict with ``"ks"``.

    >>> ks, curves, chance = overlap_series({"k": [1, 5], "overlap": [.2, .4], "per_layer": [[.1, .3]], "chance": .05})
    >>> ks.tolist(), sorted(curves), chance
    ([1.0, 5.0], ['layer 0', 'total'], 0.05)
    """
    if overlaps is None:
        d = as_mapping(ks)
        if hasattr(d, "columns"):
            d = {str(c): d[c].to_numpy() for c in d.columns}
            layer_cols = sorted((c for c in d if c.startswith("layer_")), key=lambda c: int(c.split("_")[1]))
            if layer_cols:
                d["per_layer"] = [d.pop(c) for c in layer_cols]
        if isinstance(d, Mapping) and "ks" not in d and isinstance(d.get("overlap"), Mapping):
            d = d["overlap"]  # RobustnessResult.to_dict()
        kkey = next((k for k in ("ks", "k") if isinstance(d, Mapping) and k in d), None)
        if kkey is None:
            raise ValueError("pass overlap_curves(ks, overlaps), or one dict/result with 'ks' and overlap values")
        ks, chance = d[kkey], chance if chance is not None else d.get("chance")
        overlaps = {k: v for k, v in d.items() if k not in (kkey, "chance") and not isinstance(v, (str, int, float))
                    and v is not None and (k in ("total", "overlap", "per_layer") or not isinstance(v, Mapping))}
    ks = as_array(ks)
    if isinstance(overlaps, Mapping):
        curves = {}
        for k, v in overlaps.items():
            arr = as_array(v)
            if arr.ndim == 2:  # per layer
                names = list(layer_labels) if layer_labels is not None else [f"layer {i}" for i in range(len(arr))]
                curves.update(zip(names, arr))
            else:
                curves["total" if k == "overlap" else str(k)] = arr
    else:
        arr = as_array(overlaps)
        names = list(layer_labels) if layer_labels is not None else [f"layer {i}" for i in range(len(arr))]
        curves = {"total": arr} if arr.ndim == 1 else dict(zip(names, arr))
    bad = {k: v.shape for k, v in curves.items() if v.shape != ks.shape}
    if bad:
        raise ValueError(f"each overlap curve needs {len(ks)} values (one per k); got shapes {bad}")
    return ks, curves, chance


def tradeoff_points(points: Any) -> tuple[list[dict], str]:
    """``(points, speed key)`` for :func:`~skill_lens.views.plots.pruning_tradeoff`: dicts with ``accuracy`` and
    the first of :data:`SPEED_KEYS` every point has; the summary of ``skill-lens prune`` becomes one point per
    model with its speed-up over the unpruned one (a re-tuned model at its pruned model's speed).

    >>> tradeoff_points({"accuracy": {"unpruned": 0.9, "pruned": 0.8}, "seconds": {"unpruned": 2.0, "pruned": 1.0}})
    ([{'label': 'unpruned', 'accuracy': 0.9, 'speedup': 1.0}, {'label': 'pruned', 'accuracy': 0.8, 'speedup': 2.0}], 'speedup')
    """
    points = as_mapping(points)
    if hasattr(points, "columns"):
        points = points.to_dict("records")
    if isinstance(points, Mapping) and isinstance(points.get("accuracy"), Mapping) and \
            isinstance(points.get("seconds"), Mapping):  # the summary of `skill-lens prune`
        sec, acc = points["seconds"], points["accuracy"]
        ref = sec.get("unpruned") or max(sec.values())
        model_of = lambda k: k if k in sec else k.split("_")[0]  # noqa: E731  "pruned_retuned" ran on "pruned"
        points = [{"label": k, "accuracy": a, "speedup": ref / sec[model_of(k)]}
                  for k, a in acc.items() if model_of(k) in sec and a is not None]
    elif isinstance(points, Mapping):
        points = points.get("points", [points])
    points = [dict(as_mapping(p)) for p in points]
    if not points:
        raise ValueError("pruning_tradeoff needs at least one point")
    speed = next((k for k in SPEED_KEYS if all(k in p for p in points)), None)
    if speed is None or not all("accuracy" in p for p in points):
        raise ValueError(f"each point needs 'accuracy' and one of {SPEED_KEYS}; got keys {sorted(points[0])}")
    return points, speed
