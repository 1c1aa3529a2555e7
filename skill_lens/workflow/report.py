"""One self-contained HTML report of a run directory.

:func:`write_report` reads what the steps of the method left in ``RUN/`` and writes ``RUN/report.html``,
a page that argues its case in order (the words come from :mod:`skill_lens.workflow.methods`):

* in short: the prompt's accuracy, how many neurons predict the label above chance, the best one, the
  suppression gap, each with its interval or chance level;
* how these numbers were made: one definition of skill neurons, then a methods paragraph (model, task,
  sizes, prompt, probe, selection, perturbation, controls, draws, null, intervals);
* accuracy of the tuned and the hard prompt (``run.json``);
* predictivity (``skill-lens probe``): by layer with the permutation null's threshold, why 0.5 is not
  chance, neurons above the threshold and skill neurons (``skill-lens neurons``) per layer, the top
  neurons of all with every column explained;
* views of the best skill neurons on dev examples, static HTML (they need the model;
  ``views=False`` leaves them out with a note; :class:`ReportOptions` says what is shown);
* ``perturb_*.json`` (suppression curves), pruning and robustness results, and matrices
  (``{"matrix", "labels"}``) from the analyses, whichever are present; then the run's details.

Everything is embedded (figures as base64 PNG) under a Content-Security-Policy that forbids any network
access and any script (:mod:`skill_lens.views.page`), so the file opens offline. Text from datasets and
artifacts is HTML-escaped. Missing or unreadable artifacts become a note in the report (and a warning), never
an error. Every artifact is read through the :class:`~skill_lens.workflow.runs.Run`, which checks its lineage:
a stale or foreign artifact stops the report with the step to rerun, before anything is written. ``--out``
must be a new file or a report this module wrote.

>>> import tempfile
>>> from skill_lens.workflow.runs import Run
>>> from skill_lens.data.tasks import Task
>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.tuning import TuneConfig
>>> t = tiny_task()
>>> evil = Task.from_lists("t<1>", t.label_names, t.label_words, train=(t.train.texts, t.train.labels),
...                        dev=(t.dev.texts, t.dev.labels), test=(t.test.texts, t.test.labels))
>>> run = Run.create(tempfile.mkdtemp(), tiny_model(), evil, TuneConfig(prompt_length=2, steps=2, eval_every=2))
>>> page = write_report(run, views=False).read_text()
>>> "t&lt;1&gt;" in page, "t<1>" in page, "soft prompt (tuned)" in page
(True, False, True)
"""

from __future__ import annotations

import html
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skill_lens.base.options import Options, option
from skill_lens.model.layout import NeuronLayout
from skill_lens.store.artifacts import ArtifactError, atomic_write, read_json
from skill_lens.store.kinds import KINDS, MANIFEST, PRUNE_SUMMARY, PRUNED_INFO, kind_of
from skill_lens.store.manifest import Folder
from skill_lens.views import plots, viz
from skill_lens.views.page import CSP, CSS
from skill_lens.workflow.methods import (COLUMNS, curve_table, definition, gap_interval, methods, summary, top_table,
                                        why_above_half)
from skill_lens.workflow.runs import Run

__all__ = ["write_report", "ReportOptions", "check_report_out", "REPORT_FILE"]

REPORT_FILE = "report.html"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _table(rows: list[list[Any]], header: list[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(
        f'<td class="num">{_e(_fmt(c))}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
        else f"<td>{_e(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _figure(fig, caption: str) -> str:
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{plots.figure_to_png_base64(fig)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _try(what: str, fn, notes: list[str]) -> str:
    """``fn()``'s HTML, or a note saying why ``what`` is missing."""
    try:
        return fn()
    except Exception as e:  # an unexpected artifact must not stop the rest of the report
        notes.append(f"{what}: {type(e).__name__}: {e}")
        return _note(f"{what} could not be shown ({type(e).__name__}: {e}).")


# ------------------------------------------------------------------ sections
def _run_section(meta: dict) -> str:
    """Run details (an appendix): everything run.json records about the model, task and prompt."""
    task = meta.get("task", {}) if isinstance(meta.get("task"), dict) else {"name": meta.get("task")}
    splits = task.get("splits", {})
    sizes = ", ".join(f"{k} {v.get('size')}" for k, v in splits.items() if isinstance(v, dict))
    rows = [["model", meta.get("model")], ["family", meta.get("family")],
            ["FFN neurons", f"{meta.get('n_layers')} layers x {meta.get('d_mlp')}" if meta.get("n_layers") else None],
            ["task", task.get("name")], ["source", task.get("source")], ["splits", sizes or None],
            ["labels", ", ".join(map(str, task.get("label_names", []))) or None],
            ["label words", ", ".join(map(str, meta.get("label_words", []))) or None],
            ["prompt length", meta.get("prompt_length")], ["placement", meta.get("placement")],
            ["hard prompt", meta.get("hard_prompt")], ["seed", meta.get("seed")], ["best step", meta.get("best_step")],
            ["library version", meta.get("library_version")]]
    return "<h2>Run details</h2>" + _table([r for r in rows if r[1] not in (None, "")])


def _accuracy_section(meta: dict) -> str:
    acc, ci = meta.get("accuracy", {}), meta.get("accuracy_ci") or {}
    cell = lambda k: _with_interval(acc.get(k), ci.get(k))  # noqa: E731
    acc_rows = [["soft prompt (tuned)", cell("dev"), cell("test")],
                ["hard prompt (zero-shot)", cell("hard_prompt_dev"), cell("hard_prompt_test")]]
    note = _note("Accuracy of the label word with the higher logit, with its Wilson 95% interval in brackets; the "
                 f"hard prompt is the text template {meta.get('hard_prompt')!r} without tuning.") if ci else ""
    return "<h2>Accuracy</h2>" + _table(acc_rows, ["prompt", "dev", "test"]) + note


def _explained(columns: list[str]) -> str:
    """What each column means (methods.COLUMNS), under a table."""
    items = "".join(f"<li><b>{_e(c)}</b>: {_e(COLUMNS[c])}</li>" for c in columns if c in COLUMNS)
    return f'<ul class="columns">{items}</ul>' if items else ""


def _with_interval(value, interval) -> Any:
    """``0.812 [0.750, 0.862]``: an accuracy with its 95% interval (the value alone for runs made before intervals).

    >>> _with_interval(0.8125, [0.75, 0.8625]), _with_interval(0.8125, None), _with_interval(None, None)
    ('0.812 [0.750, 0.863]', 0.8125, None)
    """
    ok = isinstance(value, (int, float)) and isinstance(interval, (list, tuple)) and len(interval) == 2 \
        and all(isinstance(x, (int, float)) for x in interval)
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if ok else value


def _predictivity_section(result, meta: dict, ns, top: int) -> str:
    """Predictivity by layer with the chance level, neurons above it per layer, and the top neurons explained."""
    per = result.per_position("dev")
    per = per if per.dim() == 3 else per[:, None]
    L, P, N = per.shape
    has_null = result.null_max_dev is not None
    threshold = result.fwer_threshold() if has_null else None
    fig = plots.predictivity_by_layer(per, prompt_accuracy=meta.get("accuracy", {}).get("dev"), threshold=threshold,
                                      title=f"Predictivity of every FFN neuron, by layer (dev, best of {P} "
                                            f"prompt position{'s' * (P != 1)})")
    if has_null:
        reading = (f'<p class="reading">{int(result.significant().sum()):,} of {L * N:,} neurons are above the '
                   f"family-wise 5% threshold of {threshold:.3f}: the predictivity the best of {L * N:,} neurons "
                   f"reaches with shuffled labels in 95% of {len(result.null_max_dev)} permutations.</p>")
    else:
        reading = _note(f"No permutation null: run `skill-lens probe {meta.get('run', 'RUN')} --permutations 100` to "
                        "see which neurons predict the label above chance.")
    parts = ["<h2>Skill neuron predictivity</h2>", reading, _figure(fig, "Each box: one layer's neurons. Dashed: the "
             "tuned prompt's dev accuracy (Wang et al. 2022, fig. 2)" + ("; dotted: the permutation null's "
             "family-wise 5% threshold." if has_null else ".")), _note(why_above_half(result)), _experts(result, meta)]
    counts = {}
    if has_null:
        counts["above the threshold"] = result.significant().sum(1).tolist()
    if ns is not None:
        counts["skill neurons"] = ns.counts_per_layer()
    if counts:
        parts.append(_figure(plots.neurons_per_layer(counts, total=N, title="Neurons per layer: "
                                                     + " and ".join(counts)), "Per layer, "
                             + "; ".join(f"{k}: {sum(v):,} in all" for k, v in counts.items()) + "."))
    return "".join(parts) + _top_table(result, top, meta)


def _experts(result, meta: dict) -> str:
    """Mixture of experts: each expert's best neuron (and the router's label preference), else nothing."""
    layout = NeuronLayout.from_json(meta.get("layout"))
    if not layout.moe:
        return ""
    return _figure(plots.predictivity_by_expert(result.scores("dev"), layout, result.routing), "Mixture of experts: "
                   "each expert's best neuron (S: the shared expert)" + ("; right, how much more often the router "
                   "sends label-1 than label-0 train examples to each expert." if result.routing is not None else "."))


def _top_table(result, top: int, meta: dict) -> str:
    header, rows = top_table(result, top, label=NeuronLayout.from_json(meta.get("layout")).label)
    return f"<h3>Top {len(rows)} neurons of all</h3>" + _table(rows, header) + _explained(header)


def _scalars(data: dict, prefix: str = "") -> list[list[Any]]:
    """Scalar fields, and those one dict deep as ``outer.inner``."""
    rows = []
    for k, v in data.items():
        if isinstance(v, (int, float, str, bool)) and len(str(v)) < 200:
            rows.append([prefix + str(k), v])
        elif isinstance(v, dict) and not prefix:
            rows += _scalars(v, f"{k}.")
    return rows


def _json_figure(path: Path, data, notes: list[str], name: str | None = None) -> str:
    """Figures for a result JSON, chosen by its keys (curves, overlaps, matrices, pruning); its scalars as a table."""
    name = name or path.name
    parts = [f"<h3>{_e(name)}</h3>"]
    if isinstance(data, dict) and (rows := _scalars(data)):
        parts.append(_table(rows[:40], ["field", "value"]))
    if not isinstance(data, dict):
        return "".join(parts)
    if "fractions" in data:
        parts.append(_try(f"suppression curves {name}", lambda: _figure(
            plots.suppression_curves(data, title=path.stem), "Accuracy while suppressing skill neurons vs random "
            "neurons (band: spread over random draws)."), notes))
    if isinstance(data.get("overlap"), dict) or "ks" in data:
        parts.append(_try(f"overlap curves {name}", lambda: _figure(plots.overlap_curves(data, title=path.stem),
                          "Overlap of the top neurons found on clean vs adversarial data."), notes))
    for key, curve in (data.get("curves") or {}).items() if isinstance(data.get("curves"), dict) else ():
        parts.append(_try(f"curve {key} in {name}", lambda c=curve, k=key: _figure(
            plots.suppression_curves(c, title=f"{path.stem}: {k}"), f"Suppression curve {k}."), notes))
    if "matrix" in data or ("values" in data and "rows" in data):
        parts.append(_try(f"matrix {name}", lambda: _figure(plots.heatmap(
            data.get("matrix", data), data.get("labels"), data.get("title", data.get("kind") or path.stem)),
            str(path.stem)), notes))
    if "points" in data or (isinstance(data.get("accuracy"), dict) and isinstance(data.get("seconds"), dict)):
        parts.append(_try(f"pruning {name}", lambda: _figure(plots.pruning_tradeoff(data), "Accuracy vs speed "
                          "of the pruned model(s)."), notes))
    return "".join(parts)


METHOD_WORDS = {"gaussian": "Gaussian noise", "zero": "zero ablation", "mean": "mean ablation (to the baseline)"}


def _perturb_section(name: str, data: dict, notes: list[str]) -> str:
    """A suppression curve as a results paragraph: what was perturbed, the numbers per fraction, the figure."""
    meta, rows = data.get("meta", {}), data.get("summary", [])
    method = METHOD_WORDS.get(data.get("method"), str(data.get("method")))
    if data.get("method") == "gaussian":
        method += f" (std {meta.get('std', 1.0)})"
    how = (f"{method} at the {meta.get('positions', 'prompt')} positions of the top "
           f"{'fraction of each layer' if meta.get('per_layer') else 'fraction of all neurons'} by "
           f"{meta.get('selected_on', 'score')}, against {meta.get('controls', '?')} random sets with the same "
           f"count per layer; accuracy on {meta.get('split', 'dev')} ({meta.get('n_examples', '?')} examples).")
    header, table_rows = curve_table(data)
    table = _table(table_rows, header)
    worst = max((r for r in rows if r["fraction"] > 0), key=lambda r: r["gap"], default=None)
    reading = "" if worst is None else (
        f'<p class="reading">Largest gap at {worst["fraction"]:.0%} of neurons: the skill set leaves '
        f'{worst["skill_accuracy"]:.3f}, random sets {worst["random_accuracy_mean"]:.3f} '
        f'({100 * worst["gap"]:.1f} points, 95% CI {gap_interval(worst)}).</p>')
    title = f"Dev accuracy under {method}: top skill neurons vs random neurons"
    fig = _try(f"suppression curves {name}", lambda: _figure(plots.suppression_curves(data, title=title),
               "Top: accuracy as more neurons are perturbed, skill neurons vs random sets (band: spread over the "
               "random sets). Below, when there are random controls: the gap (random minus skill accuracy, in "
               "points) with its paired bootstrap 95% interval."), notes)
    return (f"<h3>Suppression: {_e(method)} ({_e(name)})</h3><p>{_e(how)}</p>" + reading + table + _explained(header)
            + fig)


def _robustness_section(name: str, data: dict, notes: list[str]) -> str:
    """Clean vs adversarial data: accuracy, rank agreement of predictivity, top-k overlaps, curves."""
    a, o = data.get("accuracy", {}), data.get("overlap", {})
    clean, adv = ({"accuracy": v} if isinstance(v, (int, float)) else v or {}
                  for v in (a.get("clean"), a.get("adversarial")))
    reading = (f'<p class="reading">Accuracy {clean.get("accuracy", float("nan")):.3f} clean vs '
               f'{adv.get("accuracy", float("nan")):.3f} on {adv.get("n", "?")} adversarial examples of '
               f'{_e(data.get("source", "?"))}; Spearman of clean and adversarial predictivity '
               f'{_fmt(data.get("spearman"))}.</p>')
    table = _table([[k, t, c] for k, t, c in zip(o.get("ks", []), o.get("total", []), o.get("chance", []))],
                   ["top k (fraction)", "overlap clean ∩ adversarial", "chance"])
    figs = _try(f"overlap curves {name}", lambda: _figure(plots.overlap_curves(data, title=name),
                "Overlap of the top neurons found on clean vs adversarial data."), notes)
    for key, curve in (data.get("curves") or {}).items():
        figs += _try(f"curve {key} in {name}", lambda c=curve, k=key: _figure(
            plots.suppression_curves(c, title=f"{name}: {k}"), f"Suppression on adversarial data, {k}."), notes)
    if data.get("repair"):
        r = data["repair"]
        figs += _note(f"Patching repair with the top {r.get('top')} clean neurons: adversarial "
                      f"{_fmt(r.get('adversarial_accuracy'))} -> patched {_fmt(r.get('patched_accuracy'))}.")
    return f"<h3>Robustness ({_e(name)})</h3>" + reading + table + figs


def _prune_section(name: str, data: dict, notes: list[str]) -> str:
    """A pruned model's summary: what was kept, accuracy before and after, the speed-up."""
    acc, test = data.get("accuracy", {}), data.get("accuracy_test", {})
    (kept, total) = data.get("params", {}).get("ffn", (None, None))
    n = len(data.get("layers", []))
    reading = (f'<p class="reading">{n} layer{"s" * (n != 1)} pruned, '
               + (f"{kept / total:.1%} of FFN parameters kept; " if kept and total else "")
               + f'{data.get("speedup", float("nan")):.2f}x faster on dev.</p>')
    table = _table([[k.replace("_", " "), acc.get(k), test.get(k)] for k in acc], ["model", "dev", "test"])
    fig = _try(f"pruning {name}", lambda: _figure(plots.pruning_tradeoff(data), "Accuracy vs speed of the "
               "pruned model."), notes)
    return f"<h3>Pruned model ({_e(name)})</h3>" + reading + table + fig


RENDER = {"perturb": _perturb_section, "robustness": _robustness_section, "pruned": _prune_section}  # by Kind.section


def _pruned_summary(d: Path) -> str:
    info = json.loads((d / PRUNED_INFO).read_text())
    kept = {str(k): len(v) for k, v in info.get("kept", {}).items()}
    d_mlp = info.get("d_mlp")
    total = d_mlp * len(kept) if d_mlp else None
    rows = [["base model", info.get("base_model")], ["pruned layers", ", ".join(sorted(kept, key=int)) or "none"],
            ["neurons kept in pruned layers", f"{sum(kept.values())} of {total}" if total else sum(kept.values())],
            ["removed neurons fixed at", f"prompt position {info['position']} of the baseline"
             if info.get("position") is not None else "a constant per neuron"],
            ["constants from", info.get("baseline_source")]]
    return f"<h4>pruned model {_e(d.name)}/</h4>" + _table([r for r in rows if r[1] is not None])


def _pruned_dirs(run) -> list[Path]:
    """The pruned models in the run (``pruned/`` and any other folder holding a pruning record)."""
    return sorted(d for d in run.path.iterdir() if d.is_dir() and (d / PRUNED_INFO).exists())


def _results(run, notes: list[str]) -> list[tuple[Path, str | None, dict]]:
    """Every result JSON of the run, read; ours (``perturb_*``, ``robustness_*``, pruned models' summaries)
    checked against the run's lineage first, so a stale one stops the report before anything is written."""
    def shown(p: Path) -> bool:  # a result, not one of our records (run.json, sidecars, checkpoints, manifests)
        kind = kind_of(p.name)
        return p.name != MANIFEST and not p.name.startswith(".") and (kind is None or kind.section is not None) \
            and not p.name.endswith((".safetensors.json", ".checkpoint.json"))

    out = []
    for p in sorted(filter(shown, run.path.glob("*.json"))) + [d / PRUNE_SUMMARY for d in _pruned_dirs(run)
                                                                 if (d / PRUNE_SUMMARY).exists()]:
        kind = "pruned" if p.name == PRUNE_SUMMARY else getattr(kind_of(p.name), "name", None)
        folder = Folder(p.parent)
        if folder.has_manifest() and folder.entry(p.name) is None:
            kind = None  # named like ours, but no step wrote it: the user's
        if kind is not None:
            out.append((p, kind, run.read_result(kind, p)))
            continue
        try:  # not ours (a user's matrix...): shown as it is, untraced
            out.append((p, None, read_json(p)))
        except ArtifactError as e:
            notes.append(f"{p.relative_to(run.path)} could not be read ({e})")
    return out


def _result_sections(run, results: list[tuple[Path, str | None, dict]], notes: list[str]) -> str:
    pruned = _pruned_dirs(run)
    out = ["<h2>Suppression, pruning, robustness, analyses</h2>"]
    if not results and not pruned:
        out.append(_note("No result files yet (perturb_*.json, pruned models, robustness, analyses); "
                         "run those steps to add them here."))
    for d in pruned:  # a pruned model with its summary is shown with it below
        if not (d / PRUNE_SUMMARY).exists():
            out.append(_try(f"pruned model {d.name}", lambda d=d: _pruned_summary(d), notes))
    for p, kind, data in results:
        name = str(p.relative_to(run.path))
        section = RENDER.get(KINDS[kind].section if kind else None,
                             lambda name, data, notes, p=p: _json_figure(p, data, notes, name))
        out.append(_try(name, lambda section=section, data=data, name=name: section(name, data, notes), notes))
        if kind == "pruned" and (p.parent / PRUNED_INFO).exists():
            out.append(_try(f"pruned model {p.parent.name}", lambda d=p.parent: _pruned_summary(d), notes))
    return "".join(out)


def _views_section(run, labels: list[str], result, n_examples: int, notes: list[str]) -> str:
    """The best skill neurons over a few dev examples and their most and least active examples: static HTML."""
    pm, task = run.prompted(), run.task
    split = task.dev
    first = split.subset(range(min(n_examples, len(split))))  # with their second texts and gold labels
    acts = viz.neuron_activations_view(pm, first, labels, result=result, label_names=task.label_names,
                                       title="The best skill neurons over the first dev examples (a tab per neuron, "
                                             "best first)")
    top = viz.top_examples_view(pm, split, labels[:4], k=3, label_names=task.label_names, result=result,
                                title="Where the four best are most and least active (dev, mean over the prompt)")
    return ("<h2>Neuron views</h2>" + _note("Each neuron on one colour scale across examples: white is its train "
            "baseline at the position the probe scored it (outlined), orange above it, blue below; hover a token "
            "for its activation. Captions give the gold label and the model's prediction.")
            + acts.fragment() + top.fragment())


# ------------------------------------------------------------------ entry point
@dataclass
class ReportOptions(Options):
    """What the report shows, validated when made; the flags of ``skill-lens report``.

    >>> ReportOptions(n_neurons=0)
    Traceback (most recent call last):
    ...
    ValueError: n_neurons (--neurons) must be a whole number of at least 1, got 0.
    """

    views: bool = option(True, "leave out the neuron views (they load and run the model)", flag="--no-views")
    n_neurons: int = option(8, "how many top neurons the views show", flag="--neurons")
    n_examples: int = option(3, "how many dev examples the views show", flag="--examples")
    top: int = option(20, "how many top neurons the predictivity section lists", flag=None)

    def __post_init__(self):
        self.check_bool("views")
        for name in ("n_neurons", "n_examples", "top"):
            self.check_int(name, 1)


def write_report(run, out=None, options: ReportOptions | None = None, **overrides) -> Path:
    """Write the HTML report of ``run`` (a :class:`~skill_lens.workflow.runs.Run` or its directory) to ``out``
    (default ``RUN/report.html``) atomically; return its path.

    Every artifact is read and checked first (a stale one is an error naming the step to rerun); what is
    shown follows ``options`` (a :class:`ReportOptions`, or its fields as keywords): ``top`` neurons are
    listed, ``n_neurons`` of them shown in the views (which run the model) over ``n_examples`` dev examples.
    ``out`` must be new or a report written here.

    >>> import tempfile
    >>> from skill_lens.workflow import steps
    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.tuning import TuneConfig
    >>> r = steps.tune(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    >>> _ = steps.probe(r)
    >>> page = write_report(r).read_text()
    >>> "<h2>Neuron views</h2>" in page, "<script" in page  # views are static HTML: the page runs no script
    (True, False)
    """
    opts = ReportOptions.build(options, **overrides)
    run = run if isinstance(run, Run) else Run.open(run)
    out = check_report_out(Path(out) if out is not None else run.file("report"))
    meta, notes = {**run.meta, "run": str(run.path)}, []
    result = run.probe_result() if run.file("predictivity").exists() else None
    ns = run.neurons() if run.file("neurons").exists() else None
    results = _results(run, notes)  # all read and checked before anything is written
    curve = next((data for _, kind, data in results if kind == "perturb"), None)
    title = f"Skill neurons of {meta['model']} on {meta['task'].get('name', '?')}"
    body = [f"<h1>{_e(title)}</h1>", _note(f"skill_lens report of the run directory {run.path}"),
            f'<p class="reading">{_e(summary(meta, result, ns, curve))}</p>',
            "<h2>How these numbers were made</h2>", f"<p><b>{_e(definition(meta, ns, (curve or {}).get('meta')))}</b></p>",
            f"<p>{_e(methods(meta, result, ns, curve))}</p>", _accuracy_section(meta)]
    if result is not None:
        body.append(_try("predictivity", lambda: _predictivity_section(result, meta, ns, opts.top), notes))
    else:
        body.append("<h2>Skill neuron predictivity</h2>" +
                    _note(f"No predictivity.safetensors yet: run `skill-lens probe {run.path}`."))
    body += [_views(run, result, ns, opts, notes),
             _result_sections(run, results, notes), _run_section(meta)]
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n{GENERATOR}\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f"<title>{_e(title)}</title><style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    _write_page(run, out, page)
    for n in notes:
        warnings.warn(f"report {out}: {n}", stacklevel=2)
    return out


GENERATOR = '<meta name="generator" content="skill_lens report">'


def _write_page(run, out: Path, page: str) -> None:
    """Write the page: into the run (under its lock, committed to its manifest) or to a file elsewhere."""
    inside = out.resolve().parent == run.path.resolve()
    if not inside:
        with atomic_write(out) as f:
            f.write(page)
        return
    with run.writing("report") as tx:  # an earlier report of ours (by its generator tag) is replaced
        with atomic_write(tx.path(out.name, "report", ours=out.exists())) as f:
            f.write(page)


def check_report_out(path: Path) -> Path:
    """``path`` as a place for a report: a new file, or a report written here (never a user's file).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.html"
    >>> _ = p.write_text("<p>my notes</p>")
    >>> check_report_out(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.store.artifacts.ArtifactError: ... exists and is not a skill_lens report; choose another --out (a new file).
    """
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory; give --out a file name such as {path / REPORT_FILE}.")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(4096)
        if GENERATOR.encode() not in head:
            raise ArtifactError(f"{path} exists and is not a skill_lens report; choose another --out (a new file).")
    return path


def _views(run, result, ns, opts: ReportOptions, notes: list[str]) -> str:
    """The views of the best skill neurons (the selected set's best, else the best of all)."""
    if ns is not None and ns.scores is not None and len(ns):
        labels = [label for label, _ in ns.top(opts.n_neurons)]
    elif result is not None:
        labels = [label for label, _, _ in result.top(opts.n_neurons)]
    else:
        labels = []
    if not opts.views:
        return "<h2>Neuron views</h2>" + _note("Neuron views left out (--no-views); they need the model to run.")
    if not labels:
        return "<h2>Neuron views</h2>" + _note("No neurons to show: run `skill-lens probe` (and `neurons`) first.")
    return _try("neuron views", lambda: _views_section(run, labels, result, opts.n_examples, notes), notes)
