"""Matplotlib figures of skill-neuron results, built from plain tensors, dicts and DataFrames.

Every function returns a :class:`matplotlib.figure.Figure` made without ``pyplot``: no global
figure state, no ``plt.show()``, no display needed (it renders with Agg). In Jupyter a returned
figure displays inline; elsewhere save it (``fig.savefig(...)``) or embed it in HTML with
:func:`figure_to_png_base64`. Inputs are duck-typed: a result object, its ``.to_dict()``, or a
``pandas.DataFrame`` (``.to_pandas()``) all work, so these plots do not depend on the classes
of :mod:`skill_lens.curves`, :mod:`skill_lens.robustness` or :mod:`skill_lens.pruning`.

>>> import torch
>>> fig = predictivity_by_layer(torch.rand(3, 2, 16), prompt_accuracy=0.8)
>>> len(fig.axes), fig.axes[0].get_xlabel()
(1, 'layer')
"""

from __future__ import annotations

import base64
import io
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["predictivity_by_layer", "suppression_curves", "heatmap", "overlap_curves", "pruning_tradeoff",
           "figure_to_png_base64"]

SKILL_COLOR, RANDOM_COLOR, PROMPT_COLOR = "#c0392b", "#7f8c8d", "#2471a3"


def _np(x: Any) -> np.ndarray:
    """Tensor, array, list or scalar -> float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_mapping(obj: Any) -> Any:
    """A result object -> its ``to_dict()``; DataFrames and mappings pass through."""
    if hasattr(obj, "to_dict") and not hasattr(obj, "columns") and not isinstance(obj, Mapping):
        return obj.to_dict()
    return obj


def predictivity_by_layer(pred: Any, prompt_accuracy: float | None = None, title: str | None = None,
                          aggregate: str = "max") -> Figure:
    """Box plot of neuron predictivity per layer, with a line at the prompt's accuracy (Wang et al., fig. 2).

    ``pred`` is predictivity ``[L, P, d_mlp]`` (aggregated over positions with ``aggregate``),
    per-neuron scores ``[L, d_mlp]``, or an object with ``.scores()`` (a ``ProbeResult``).

    >>> import torch
    >>> fig = predictivity_by_layer(torch.rand(4, 8), prompt_accuracy=0.9, title="tiny")
    >>> ax = fig.axes[0]
    >>> len(ax.get_xticks()), ax.get_title()
    (4, 'tiny')
    """
    if hasattr(pred, "scores") and callable(pred.scores):
        pred = pred.scores(aggregate)
    scores = _np(pred)
    if scores.ndim == 3:
        scores = scores.max(1) if aggregate == "max" else scores.mean(1)
    if scores.ndim != 2:
        raise ValueError(f"predictivity must be [layers, positions, d_mlp] or [layers, d_mlp], got shape {scores.shape}")
    L = scores.shape[0]
    fig = Figure(figsize=(max(5.0, 0.35 * L + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.boxplot(list(scores), positions=range(L), widths=0.6, showfliers=True,
               flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": "black"})
    if L > 12:
        ax.set_xticks(range(L), [str(l) if l % max(1, L // 10) == 0 else "" for l in range(L)])
    if prompt_accuracy is not None:
        ax.axhline(prompt_accuracy, color=PROMPT_COLOR, linestyle="--", label=f"prompt accuracy {prompt_accuracy:.3f}")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("layer")
    ax.set_ylabel("predictivity")
    ax.set_title(title or "neuron predictivity by layer")
    return fig


def _curve_series(curve: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(fractions [F], {name: values [F] or [F, draws]})`` from a dict or a long DataFrame."""
    curve = _as_mapping(curve)
    if hasattr(curve, "columns"):  # long format: fraction, kind, (draw,) accuracy
        df = curve
        fcol = next((c for c in df.columns if "fraction" in str(c)), None)
        ycol = next((c for c in ("accuracy", "acc", "value", "metric") if c in df.columns), None)
        kcol = next((c for c in ("kind", "selection", "neurons", "which", "method", "group") if c in df.columns), None)
        if fcol is None or ycol is None or kcol is None:
            raise ValueError(f"a curve DataFrame needs fraction, accuracy and kind columns; got {list(df.columns)}")
        fractions = np.array(sorted(df[fcol].unique()), dtype=np.float64)
        series = {}
        for kind, g in df.groupby(kcol, sort=False):
            per = [g[g[fcol] == f][ycol].to_numpy(dtype=np.float64) for f in fractions]
            width = max(len(p) for p in per)
            series[str(kind)] = np.array([np.pad(p, (0, width - len(p)), constant_values=np.nan) for p in per])
        return fractions, series
    if not isinstance(curve, Mapping):
        raise TypeError(f"expected a curve object, dict or DataFrame, got {type(curve).__name__}")
    fkey = next((k for k in ("fractions", "fraction", "x") if k in curve), None)
    if fkey is None:
        raise ValueError(f"a curve dict needs a 'fractions' key; got keys {sorted(curve)}")
    fractions = _np(curve[fkey])
    series = {}
    for key, value in curve.items():
        if key == fkey or isinstance(value, (str, bool)) or value is None:
            continue
        if isinstance(value, Mapping):  # e.g. {"random": {"accuracy": [[...]]}} or {"mean":..., "std":...}
            value = next((value[k] for k in ("accuracy", "accuracies", "values", "draws", "mean") if k in value), None)
            if value is None:
                continue
        try:
            arr = _np(value)
        except (TypeError, ValueError):
            continue
        if arr.ndim == 2 and arr.shape[0] != len(fractions) and arr.shape[1] == len(fractions):
            arr = arr.T  # [draws, F] -> [F, draws]
        if arr.ndim in (1, 2) and arr.shape[0] == len(fractions):
            series[str(key)] = arr
    if not series:
        raise ValueError(f"no accuracy series of length {len(fractions)} found in keys {sorted(curve)}")
    return fractions, series


def suppression_curves(curve: Any, title: str | None = None, baseline: float | None = None) -> Figure:
    """Accuracy as more neurons are suppressed: skill neurons vs random draws (mean line, min-max band).

    ``curve`` is a suppression-curve object, its ``.to_dict()`` (``{"fractions": [F], "skill": [F],
    "random": [F, draws]}``; any other ``[F]``/``[F, draws]`` series are drawn too) or a long
    DataFrame with ``fraction``, ``kind`` and ``accuracy`` columns. ``baseline``: unperturbed accuracy.

    >>> fig = suppression_curves({"fractions": [0, .01, .05], "skill": [.9, .7, .5],
    ...                           "random": [[.9, .9], [.88, .9], [.85, .87]]}, baseline=0.9)
    >>> ax = fig.axes[0]
    >>> len(ax.get_lines()), len(ax.collections)   # skill, random mean, baseline; one band
    (3, 1)
    """
    fractions, series = _curve_series(curve)
    if baseline is None and isinstance(m := _as_mapping(curve), Mapping):
        baseline = next((float(m[k]) for k in ("baseline", "clean_accuracy", "unperturbed") if
                         isinstance(m.get(k), (int, float))), None)
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(series.items()):
        color = SKILL_COLOR if "skill" in name.lower() else RANDOM_COLOR if "random" in name.lower() else f"C{i}"
        if values.ndim == 2 and values.shape[1] > 1:
            ax.plot(fractions, np.nanmean(values, 1), color=color, marker="o", ms=3,
                    label=f"{name} (mean of {values.shape[1]})")
            ax.fill_between(fractions, np.nanmin(values, 1), np.nanmax(values, 1), color=color, alpha=0.2, lw=0)
        else:
            ax.plot(fractions, values.reshape(len(fractions), -1)[:, 0], color=color, marker="o", ms=3, label=name)
    if baseline is not None:
        ax.axhline(baseline, color="black", lw=0.8, linestyle=":", label=f"unperturbed {baseline:.3f}")
    ax.set_xlabel("fraction of neurons suppressed")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "suppression: skill vs random neurons")
    ax.legend(fontsize="small")
    return fig


def heatmap(matrix: Any, labels: Sequence[str] | None = None, title: str | None = None,
            col_labels: Sequence[str] | None = None, vmin: float | None = None, vmax: float | None = None,
            cmap: str = "viridis", annotate: bool | None = None) -> Figure:
    """A labelled matrix (Spearman correlations, transferability) with a colour bar.

    ``labels`` name the rows (and columns, unless ``col_labels``); values are written in the
    cells when the matrix is at most 12 x 12 (``annotate``).

    >>> fig = heatmap([[1.0, 0.3], [0.3, 1.0]], ["rt", "tweets"], "Spearman")
    >>> len(fig.axes), len(fig.axes[0].texts)   # the matrix and its colour bar; four values
    (2, 4)
    """
    m = _np(matrix)
    if m.ndim != 2:
        raise ValueError(f"heatmap needs a 2-d matrix, got shape {m.shape}")
    rows = list(labels) if labels is not None else [str(i) for i in range(m.shape[0])]
    cols = list(col_labels) if col_labels is not None else (rows if m.shape[0] == m.shape[1] else
                                                             [str(i) for i in range(m.shape[1])])
    if len(rows) != m.shape[0] or len(cols) != m.shape[1]:
        raise ValueError(f"{len(rows)} row / {len(cols)} column labels for a {m.shape[0]}x{m.shape[1]} matrix")
    size = 1.2 + 0.55 * max(m.shape)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(m.shape[1]), cols, rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), rows)
    if annotate if annotate is not None else max(m.shape) <= 12:
        lo, hi = np.nanmin(m), np.nanmax(m)
        for (i, j), v in np.ndenumerate(m):
            dark = hi > lo and (v - lo) / (hi - lo) < 0.5
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title(title or "")
    return fig


def overlap_curves(ks: Any, overlaps: Any = None, title: str | None = None, chance: Any = None,
                   layer_labels: Sequence[str] | None = None) -> Figure:
    """Overlap of the top-k neurons on clean vs adversarial data, as k grows.

    ``overlaps`` is one curve ``[K]`` (total), per-layer curves ``[L, K]``, or ``{name: [K]}``.
    A dict or result object may be passed alone as ``ks`` when it holds ``"ks"`` and one of
    ``"overlap"``, ``"total"`` or ``"per_layer"``. ``chance``: the overlap of random sets (``[K]`` or a number).

    >>> fig = overlap_curves([1, 5, 10], {"total": [0.2, 0.5, 0.6]}, chance=[0.01, 0.05, 0.1])
    >>> len(fig.axes[0].get_lines())
    2
    >>> len(overlap_curves([1, 5], [[0.1, 0.3], [0.2, 0.4], [0.3, 0.5]]).axes[0].get_lines())
    3
    """
    if overlaps is None:
        d = _as_mapping(ks)
        if hasattr(d, "columns"):
            d = {c: d[c].to_numpy() for c in d.columns}
        if not isinstance(d, Mapping) or "ks" not in d:
            raise ValueError("pass overlap_curves(ks, overlaps), or one dict with 'ks' and overlap values")
        ks, chance = d["ks"], chance if chance is not None else d.get("chance")
        rest = {k: v for k, v in d.items() if k not in ("ks", "chance") and not isinstance(v, (str, int, float))}
        overlaps = rest.get("per_layer", rest.get("overlap", rest.get("total", rest)))
    ks = _np(ks)
    if isinstance(overlaps, Mapping):
        curves = {str(k): _np(v) for k, v in overlaps.items()}
    else:
        arr = _np(overlaps)
        if arr.ndim == 1:
            curves = {"total": arr}
        else:
            names = list(layer_labels) if layer_labels is not None else [f"layer {i}" for i in range(len(arr))]
            curves = dict(zip(names, arr))
    bad = {k: v.shape for k, v in curves.items() if v.shape != ks.shape}
    if bad:
        raise ValueError(f"each overlap curve needs {len(ks)} values (one per k); got shapes {bad}")
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    many = len(curves) > 10
    for i, (name, v) in enumerate(curves.items()):
        color = fig.colormaps["viridis"](i / max(1, len(curves) - 1)) if many else f"C{i}"
        ax.plot(ks, v, color=color, marker=None if many else "o", ms=3, label=None if many else name)
    if chance is not None:
        ax.plot(ks, np.broadcast_to(_np(chance), ks.shape), color="black", linestyle=":", label="chance")
    ax.set_xlabel("k (top neurons)")
    ax.set_ylabel("overlap clean vs adversarial")
    ax.set_title(title or "skill-neuron overlap: clean vs adversarial")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", ncol=2 if len(curves) > 5 else 1)
    return fig


SPEED_KEYS = ("speedup", "speed", "throughput", "examples_per_s", "tokens_per_s", "relative_speed")


def pruning_tradeoff(points: Any, title: str | None = None) -> Figure:
    """Accuracy against speed for pruned models (one labelled point each).

    ``points`` is a list of dicts (or a DataFrame) with ``accuracy``, a speed column
    (one of ``speedup``, ``speed``, ``throughput``, ``examples_per_s``, ``tokens_per_s``,
    ``relative_speed``) and optionally ``label``/``name``.

    >>> fig = pruning_tradeoff([{"label": "full", "accuracy": 0.9, "speedup": 1.0},
    ...                         {"label": "pruned", "accuracy": 0.88, "speedup": 1.4}])
    >>> len(fig.axes[0].collections), len(fig.axes[0].texts)
    (1, 2)
    """
    points = _as_mapping(points)
    if hasattr(points, "columns"):
        points = points.to_dict("records")
    if isinstance(points, Mapping):
        points = points.get("points", [points])
    points = [dict(_as_mapping(p)) for p in points]
    if not points:
        raise ValueError("pruning_tradeoff needs at least one point")
    speed = next((k for k in SPEED_KEYS if all(k in p for p in points)), None)
    if speed is None or not all("accuracy" in p for p in points):
        raise ValueError(f"each point needs 'accuracy' and one of {SPEED_KEYS}; got keys {sorted(points[0])}")
    x = np.array([float(p[speed]) for p in points])
    y = np.array([float(p["accuracy"]) for p in points])
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(x, y, color=SKILL_COLOR, zorder=3)
    for i, p in enumerate(points):
        ax.annotate(str(p.get("label", p.get("name", i))), (x[i], y[i]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlabel(speed.replace("_", " "))
    ax.set_ylabel("accuracy")
    ax.set_title(title or "pruning: accuracy vs speed")
    ax.margins(0.15)
    return fig


def figure_to_png_base64(fig: Figure, dpi: int = 100) -> str:
    """The figure as a base64 PNG string, for ``<img src="data:image/png;base64,...">``.

    >>> s = figure_to_png_base64(heatmap([[1.0]], ["a"]))
    >>> base64.b64decode(s)[:4]
    b'\\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")
