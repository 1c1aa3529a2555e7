"""Matplotlib figures of skill-neuron results, built from plain tensors, dicts and DataFrames.

Every function returns an :class:`InlineFigure` (a :class:`matplotlib.figure.Figure`) made without
``pyplot``: no global figure state, no ``plt.show()``, no display needed (it renders with Agg). In
Jupyter a returned figure displays inline as a PNG, in a fresh kernel without ``%matplotlib``
(its ``_repr_png_``); elsewhere save it (``fig.savefig(...)``) or embed it in HTML with
:func:`figure_to_png_base64`. Inputs are duck-typed (read by :mod:`skill_lens.views.plot_inputs`): a result
object, its ``.to_dict()``, or a ``pandas.DataFrame`` (``.to_pandas()``) all work, so these plots do not depend on
the classes of :mod:`skill_lens.intervening.suppression`, :mod:`skill_lens.studies.robustness` or
:mod:`skill_lens.intervening.pruning`.

>>> import torch
>>> fig = predictivity_by_layer(torch.rand(3, 2, 16), prompt_accuracy=0.8)
>>> len(fig.axes), fig.axes[0].get_xlabel()
(1, 'layer')
"""

from __future__ import annotations

import base64
import io
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from skill_lens.model.layout import NeuronLayout
# SPEED_KEYS: still importable from here, where it was defined before plot_inputs
from skill_lens.views.plot_inputs import (SPEED_KEYS, as_array, as_mapping, curve_series, gap_series,  # noqa: F401
                                          labelled_matrix, overlap_series, tradeoff_points)

__all__ = ["predictivity_by_layer", "predictivity_by_expert", "neurons_per_layer", "suppression_curves", "heatmap",
           "overlap_curves", "pruning_tradeoff", "InlineFigure", "figure_to_png_base64"]

SKILL_COLOR, RANDOM_COLOR, PROMPT_COLOR = "#c0392b", "#7f8c8d", "#2471a3"


class InlineFigure(Figure):
    """A matplotlib ``Figure`` that Jupyter (IPython's display) shows as a PNG with no backend set up.

    A ``Figure`` made without ``pyplot`` has no display of its own: as a cell's last expression it
    shows only ``<Figure size ... with 1 Axes>`` unless ``%matplotlib inline`` ran first. This one
    gives IPython ``_repr_png_`` (the same bytes as ``savefig(..., format="png")``); ``savefig`` and
    :func:`figure_to_png_base64` work as on any figure.

    >>> fig = InlineFigure(figsize=(1, 1)); _ = fig.add_subplot().plot([0, 1])
    >>> fig._repr_png_()[:4]
    b'\\x89PNG'
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def _title(ax, text: str) -> None:
    """A title wrapped to the figure's width, so a long one is never cut off."""
    import textwrap

    width = max(30, int(ax.figure.get_figwidth() * 11))
    ax.set_title(textwrap.fill(text, width), fontsize="medium")


def predictivity_by_layer(pred: Any, prompt_accuracy: float | None = None, title: str | None = None,
                          aggregate: str = "max", threshold: float | None = None) -> InlineFigure:
    """Box plot of neuron predictivity per layer, with a line at the prompt's accuracy (Wang et al., fig. 2)
    and, given ``threshold`` (``ProbeResult.fwer_threshold()``), one at the permutation null's family-wise
    threshold: neurons above it beat what the best of as many noise neurons reaches.

    ``pred`` is predictivity ``[L, P, d_mlp]`` (aggregated over positions with ``aggregate``),
    per-neuron scores ``[L, d_mlp]``, or an object with ``.scores()`` (a ``ProbeResult``).

    >>> import torch
    >>> fig = predictivity_by_layer(torch.rand(4, 8), prompt_accuracy=0.9, title="tiny", threshold=0.8)
    >>> ax = fig.axes[0]
    >>> len(ax.get_xticks()), ax.get_title(), len(ax.get_lines()) > 4
    (4, 'tiny', True)
    """
    if hasattr(pred, "scores") and callable(pred.scores):
        pred = pred.scores(aggregate=aggregate)
    scores = as_array(pred)
    if scores.ndim == 3:
        scores = scores.max(1) if aggregate == "max" else scores.mean(1)
    if scores.ndim != 2:
        raise ValueError(f"predictivity must be [layers, positions, d_mlp] or [layers, d_mlp], got shape {scores.shape}")
    L = scores.shape[0]
    fig = InlineFigure(figsize=(max(5.0, 0.35 * L + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.boxplot(list(scores), positions=range(L), widths=0.6, showfliers=True,
               flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": "black"})
    if L > 12:
        ax.set_xticks(range(L), [str(l) if l % max(1, L // 10) == 0 else "" for l in range(L)])
    if prompt_accuracy is not None:
        ax.axhline(prompt_accuracy, color=PROMPT_COLOR, linestyle="--", label=f"prompt accuracy {prompt_accuracy:.3f}")
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color="black", linestyle=":", label=f"family-wise 5% null {threshold:.3f}")
    if prompt_accuracy is not None or threshold is not None:
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("layer")
    ax.set_ylabel("predictivity")
    _title(ax, title or "neuron predictivity by layer")
    return fig


def predictivity_by_expert(scores: Any, layout: Any, routing: Any = None, title: str | None = None) -> InlineFigure:
    """A mixture of experts, layer by expert: each expert's best neuron predictivity (the shared expert in the
    last column), and given ``routing`` (``ProbeResult.routing [L, 2, E]``) how much more often the router sends
    label-1 than label-0 examples to each expert.

    ``scores`` are per-neuron scores ``[L, d_mlp]`` (or a ``ProbeResult``); ``layout`` the model's
    :class:`~skill_lens.model.layout.NeuronLayout` (``describe(model).layout``, or its JSON in a probe's meta).

    >>> import torch
    >>> from skill_lens.model.layout import LayerLayout
    >>> lay = NeuronLayout.of([LayerLayout(10, 2, 4)] * 3)
    >>> fig = predictivity_by_expert(torch.rand(3, 10), lay, routing=torch.rand(3, 2, 2))
    >>> [ax.get_title() for ax in fig.axes[::2]]
    ['best predictivity per expert', 'routing: label 1 - label 0']
    """
    layout = layout if isinstance(layout, NeuronLayout) else NeuronLayout.from_json(layout)
    if hasattr(scores, "scores") and callable(scores.scores):
        scores = scores.scores()
    sc = as_array(scores)
    n_e = max((x.experts for x in layout.layers), default=0)
    if not n_e or sc.shape[0] != len(layout.layers):
        raise ValueError("predictivity_by_expert needs a mixture-of-experts layout with one row per layer of scores")
    shared = any(x.shared for x in layout.layers if x.experts)
    best = np.full((len(layout.layers), n_e + shared), np.nan)
    for l, x in enumerate(layout.layers):
        for e in range(x.experts):
            best[l, e] = sc[l, e * x.expert_width:(e + 1) * x.expert_width].max()
        if x.experts and x.shared:
            best[l, n_e] = sc[l, x.experts * x.expert_width:x.width].max()
    panels = [("best predictivity per expert", best, "viridis")]
    if routing is not None:
        r = as_array(routing)
        panels.append(("routing: label 1 - label 0", r[:, 1, :n_e] - r[:, 0, :n_e], "coolwarm"))
    fig = InlineFigure(figsize=(3.2 + 2.6 * len(panels) + 0.3 * n_e, 1.5 + 0.3 * len(layout.layers)),
                       layout="constrained")
    for i, (name, m, cmap) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        lim = np.nanmax(np.abs(m)) if cmap == "coolwarm" else None
        im = ax.imshow(m, cmap=cmap, aspect="auto", vmin=-lim if lim else None, vmax=lim)
        ax.set_xticks(range(m.shape[1]), [f"E{e}" for e in range(n_e)] + (["S"] if m.shape[1] > n_e else []))
        ax.set_xlabel("expert")
        ax.set_ylabel("layer")
        ax.set_title(name)
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def suppression_curves(curve: Any, title: str | None = None, baseline: float | None = None) -> InlineFigure:
    """Accuracy as more neurons are suppressed: skill neurons vs random draws (mean line, spread band).

    ``curve`` is a :class:`~skill_lens.intervening.suppression.SuppressionCurve`, its ``.to_dict()`` (long ``rows`` with
    ``fraction``, ``set``, ``accuracy``: the band is min-max over random draws) or ``.to_pandas()``
    (band: mean +- std), a long DataFrame, or ``{"fractions": [F], "skill": [F], "random": [F, draws]}``.
    ``baseline``: the unperturbed accuracy (a horizontal line). When the curve's summary carries the
    gap's interval (``gap``, ``gap_ci_low``, ``gap_ci_high``: a ``SuppressionCurve``, its ``.to_dict()``
    or ``.to_pandas()``), a second panel below shows the gap (random minus skill accuracy, in points)
    with its paired bootstrap 95% interval as a shaded band and error bars, and a line at zero.

    >>> fig = suppression_curves({"fractions": [0, .01, .05], "skill": [.9, .7, .5],
    ...                           "random": [[.9, .9], [.88, .9], [.85, .87]]}, baseline=0.9)
    >>> ax = fig.axes[0]
    >>> len(fig.axes), len(ax.get_lines()), len(ax.collections)   # skill, random mean, baseline; one band
    (1, 3, 1)
    >>> rows = [{"fraction": f, "gap": g, "gap_ci_low": g - .05, "gap_ci_high": g + .05} for f, g in ((0, 0), (.05, .3))]
    >>> fig = suppression_curves({"fractions": [0, .05], "skill": [.9, .5], "random": [[.9], [.8]], "summary": rows})
    >>> len(fig.axes), fig.axes[1].get_ylabel()
    (2, 'gap (points)')
    """
    fractions, series = curve_series(curve)
    m = as_mapping(curve)
    if baseline is None and isinstance(m, Mapping):
        baseline = next((float(m[k]) for k in ("baseline", "clean_accuracy", "unperturbed") if
                         isinstance(m.get(k), (int, float))), None)
    gaps = gap_series(m)
    fig = InlineFigure(figsize=(5.5, 3.6 if gaps is None else 5.4), layout="constrained")
    if gaps is None:
        ax = fig.add_subplot()
    else:
        ax = fig.add_gridspec(2, 1, height_ratios=(2, 1)).subplots(sharex=True)[0]
    for i, (name, (mean, lo, hi, n)) in enumerate(series.items()):
        color = SKILL_COLOR if "skill" in name.lower() else RANDOM_COLOR if "random" in name.lower() else f"C{i}"
        ax.plot(fractions, mean, color=color, marker="o", ms=3, label=f"{name} (mean of {n})" if n > 1 else name)
        if lo is not None:
            ax.fill_between(fractions, lo, hi, color=color, alpha=0.2, lw=0)
    if baseline is not None:
        ax.axhline(baseline, color="black", lw=0.8, linestyle=":", label=f"unperturbed {baseline:.3f}")
    method = m.get("method") if isinstance(m, Mapping) else None
    xlabel = "fraction of neurons suppressed" + (f" ({method})" if isinstance(method, str) else "")
    ax.set_xlabel(xlabel if gaps is None else "")
    ax.set_ylabel("accuracy")
    _title(ax, title or "suppression: skill vs random neurons")
    ax.legend(fontsize="small")
    if gaps is not None:
        _gap_panel(fig.axes[1], gaps, xlabel)
    return fig


def _gap_panel(ax, gaps: np.ndarray, xlabel: str) -> None:
    """The gap (points) with its 95% interval: shaded band and error bars, a line at zero."""
    f, gap, low, high = (100 * gaps[:, i] if i else gaps[:, i] for i in range(4))
    ax.axhline(0, color="black", lw=0.8)
    ax.fill_between(f, low, high, color=SKILL_COLOR, alpha=0.2, lw=0, label="95% CI (paired bootstrap)")
    ax.errorbar(f, gap, yerr=np.abs(np.stack([gap - low, high - gap])), color=SKILL_COLOR, marker="o", ms=3,
                capsize=3, label="gap: random - skill")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("gap (points)")
    ax.legend(fontsize="small")


def heatmap(matrix: Any, labels: Sequence[str] | None = None, title: str | None = None,
            col_labels: Sequence[str] | None = None, vmin: float | None = None, vmax: float | None = None,
            cmap: str = "viridis", annotate: bool | None = None) -> InlineFigure:
    """A labelled matrix (Spearman correlations, transferability) with a colour bar.

    ``matrix`` is a 2-d array, a :mod:`skill_lens.studies.tables` matrix (or its ``.to_dict()`` /
    ``.to_pandas()``, whose labels are used). ``labels`` name the rows (and columns, unless
    ``col_labels``); values are written in the cells when the matrix is at most 12 x 12 (``annotate``).

    >>> fig = heatmap([[1.0, 0.3], [0.3, 1.0]], ["rt", "tweets"], "Spearman")
    >>> len(fig.axes), len(fig.axes[0].texts)   # the matrix and its colour bar; four values
    (2, 4)
    """
    m, rows, cols = labelled_matrix(matrix, labels, col_labels)
    size = 1.2 + 0.55 * max(m.shape)
    fig = InlineFigure(figsize=(size + 1.5, size), layout="constrained")
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
    _title(ax, title or "")
    return fig


def overlap_curves(ks: Any, overlaps: Any = None, title: str | None = None, chance: Any = None,
                   layer_labels: Sequence[str] | None = None) -> InlineFigure:
    """Overlap of the top-k neurons on clean vs adversarial data, as k grows.

    ``overlaps`` is one curve ``[K]`` (total), per-layer curves ``[L, K]``, or ``{name: [K]}`` (a
    ``"total"`` entry is drawn thick, ``"per_layer"`` ``[L, K]`` as thin lines). Alone, ``ks`` may be a
    :class:`~skill_lens.studies.robustness.RobustnessResult`, its ``.to_dict()`` / ``.to_pandas()``, or a dict
    with ``"ks"`` (or ``"k"``) and overlap values. ``chance``: the overlap of random sets (``[K]`` or a number).

    >>> fig = overlap_curves([1, 5, 10], {"total": [0.2, 0.5, 0.6]}, chance=[0.01, 0.05, 0.1])
    >>> len(fig.axes[0].get_lines())
    2
    >>> len(overlap_curves({"ks": [1, 5], "total": [.2, .4], "per_layer": [[.1, .3], [.3, .5]]}).axes[0].get_lines())
    3
    >>> len(overlap_curves({"ks": [1, 5], "total": [.2, .4], "per_layer": [[.1, .3]] * 12}).axes[0].get_lines())  # viridis
    13
    """
    ks, curves, chance = overlap_series(ks, overlaps, chance, layer_labels)
    fig = InlineFigure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    layers = [k for k in curves if k.startswith("layer ")]
    many = len(layers) > 10
    for i, name in enumerate(layers):
        color = matplotlib.colormaps["viridis"](i / max(1, len(layers) - 1)) if many else f"C{i}"
        ax.plot(ks, curves[name], color=color, lw=1, alpha=0.8, label=None if many else name)
    for name in (k for k in curves if k not in layers):
        ax.plot(ks, curves[name], color="black" if name == "total" else None, lw=2.2, marker="o", ms=3, label=name)
    if chance is not None:
        ax.plot(ks, np.broadcast_to(as_array(chance), ks.shape), color="black", linestyle=":", label="chance")
    ax.set_xlabel("top k (neurons, or a fraction of them)")
    ax.set_ylabel("overlap clean vs adversarial")
    _title(ax, title or "skill-neuron overlap: clean vs adversarial")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", ncol=2 if len(curves) > 5 else 1)
    return fig


def pruning_tradeoff(points: Any, title: str | None = None) -> InlineFigure:
    """Accuracy against speed for pruned models (one labelled point each).

    ``points`` is a list of dicts (or a DataFrame) with ``accuracy``, a speed column
    (one of ``speedup``, ``speed``, ``throughput``, ``examples_per_s``, ``tokens_per_s``,
    ``relative_speed``) and optionally ``label``/``name``; or the summary of ``skill-lens prune``
    (``{"accuracy": {"unpruned": a, "pruned": b}, "seconds": {"unpruned": t, "pruned": u}}``: speed-up
    relative to the unpruned model).

    >>> fig = pruning_tradeoff([{"label": "full", "accuracy": 0.9, "speedup": 1.0},
    ...                         {"label": "pruned", "accuracy": 0.88, "speedup": 1.4}])
    >>> len(fig.axes[0].collections), len(fig.axes[0].texts)
    (1, 2)
    """
    points, speed = tradeoff_points(points)
    x = np.array([float(p[speed]) for p in points])
    y = np.array([float(p["accuracy"]) for p in points])
    fig = InlineFigure(figsize=(5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(x, y, color=SKILL_COLOR, zorder=3)
    for i, p in enumerate(points):
        ax.annotate(str(p.get("label", p.get("name", i))), (x[i], y[i]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlabel(speed.replace("_", " "))
    ax.set_ylabel("accuracy")
    _title(ax, title or "pruning: accuracy vs speed")
    ax.margins(0.15)
    return fig


def neurons_per_layer(counts: Mapping[str, Sequence[int]], title: str | None = None,
                      total: int | None = None) -> InlineFigure:
    """Neurons per layer, one bar group per layer and one bar per series (e.g. neurons above the permutation
    null's threshold, and the selected skill neurons); ``total`` (neurons per layer) adds a right axis in %.

    >>> fig = neurons_per_layer({"above chance": [0, 3, 9], "skill neurons": [0, 1, 4]}, total=16)
    >>> ax = fig.axes[0]
    >>> len(ax.patches), ax.get_xlabel(), [t.get_text() for t in ax.get_legend().get_texts()]
    (6, 'layer', ['above chance', 'skill neurons'])
    """
    if not counts:
        raise ValueError("neurons_per_layer needs at least one series of counts per layer")
    series = {k: as_array(v) for k, v in counts.items()}
    L = {len(v) for v in series.values()}
    if len(L) != 1:
        raise ValueError(f"every series needs one count per layer; got lengths {sorted(L)}")
    L = L.pop()
    fig = InlineFigure(figsize=(max(5.0, 0.3 * L + 2), 3.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    colors = ["#7f8c8d", SKILL_COLOR, PROMPT_COLOR]
    for i, (name, v) in enumerate(series.items()):
        ax.bar(np.arange(L) + (i - (len(series) - 1) / 2) * width, v, width, label=name, color=colors[i % 3])
    ax.set_xticks(range(L), [str(l) if L <= 12 or l % max(1, L // 10) == 0 else "" for l in range(L)])
    if total:
        sec = ax.secondary_yaxis("right", functions=(lambda c: 100 * c / total, lambda p: p * total / 100))
        sec.set_ylabel(f"% of the layer's {total:,}")
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons")
    _title(ax, title or "neurons per layer")
    ax.legend(fontsize="small")
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
