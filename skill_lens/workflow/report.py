"""One self-contained HTML report of a run directory.

:func:`write_report` reads what the steps of the method left in ``RUN/`` and writes ``RUN/report.html``:

* the run (``run.json``): model, task, splits, prompt, soft- vs hard-prompt accuracy;
* ``predictivity.safetensors`` (``skill-lens probe``): predictivity by layer, top neurons;
* ``neurons.safetensors`` (``skill-lens neurons``): the selected skill neurons per layer;
* ``perturb_*.json`` (suppression curves), pruning and robustness results, and matrices
  (``{"matrix", "labels"}``) from the analyses, whichever are present;
* circuitsvis views of the top neurons on dev examples (these need the model; ``include_views=False``
  leaves them out with a note).

Everything is embedded: figures as base64 PNG, circuitsvis' JavaScript inline once, and a
Content-Security-Policy that forbids any network access, so the file opens offline. Text from
datasets and artifacts is HTML-escaped; data in scripts is JSON with ``<``, ``>``, ``&`` escaped.
Missing or unreadable artifacts become a note in the report (and a warning), never an error.

Every artifact is read through the :class:`~skill_lens.workflow.runs.Run`, which checks its lineage: a stale
or foreign artifact stops the report with the step to rerun, before anything is written. ``--out``
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
>>> page = write_report(run, include_views=False).read_text()
>>> "t&lt;1&gt;" in page, "t<1>" in page, "soft prompt (tuned)" in page
(True, False, True)
"""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any


from skill_lens.store.artifacts import ArtifactError, atomic_write
from skill_lens.model.anatomy import NeuronLayout
from skill_lens.store.kinds import KINDS, MANIFEST, PRUNE_SUMMARY, PRUNED_INFO, kind_of
from skill_lens.store.manifest import Folder
from skill_lens.views import plots

__all__ = ["write_report", "check_report_out", "REPORT_FILE"]

REPORT_FILE = "report.html"
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data:; font-src data:")
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: .8em 0; } figure img { max-width: 100%; } figcaption, .note { color: #666; font-size: .9em; }
.caption { font-weight: 600; margin-top: .8em; } .example { white-space: pre-wrap; }
.bars { max-width: 640px; font-size: .85em; } .bar { display: flex; align-items: center; height: 1.15em; }
.bar .label { width: 3.5em; color: #555; } .bar .fill { background: #4c72b0; height: .8em; min-width: 1px; }
.bar .value { margin-left: .4em; color: #333; font-variant-numeric: tabular-nums; }
p.reading { background: #f6f8fa; border-left: 3px solid #4c72b0; padding: .4em .8em; }
.cv-panel > div[style*="padding-bottom"] { padding-bottom: 1.5em !important; }  /* circuitsvis keeps 160px */
"""


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
    acc, ci = meta.get("accuracy", {}), meta.get("accuracy_ci") or {}
    cell = lambda k: _with_interval(acc.get(k), ci.get(k))  # noqa: E731
    acc_rows = [["soft prompt (tuned)", cell("dev"), cell("test")],
                ["hard prompt (zero-shot)", cell("hard_prompt_dev"), cell("hard_prompt_test")]]
    note = _note("Accuracy with its Wilson 95% interval in brackets.") if ci else ""
    return ("<h2>Run</h2>" + _table([r for r in rows if r[1] not in (None, "")]) +
            "<h2>Accuracy</h2>" + _table(acc_rows, ["prompt", "dev", "test"]) + note)


def _with_interval(value, interval) -> Any:
    """``0.812 [0.750, 0.862]``: an accuracy with its 95% interval (the value alone for runs made before intervals).

    >>> _with_interval(0.8125, [0.75, 0.8625]), _with_interval(0.8125, None), _with_interval(None, None)
    ('0.812 [0.750, 0.863]', 0.8125, None)
    """
    ok = isinstance(value, (int, float)) and isinstance(interval, (list, tuple)) and len(interval) == 2 \
        and all(isinstance(x, (int, float)) for x in interval)
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if ok else value


def _scores_of(result) -> dict:
    """Per-neuron scores of a probe: ``{"dev": [L, N], "test": [L, N] | None, "pos": [L, N], "pred", "baseline"}``."""
    dev = result.per_position("dev")
    dev = dev if dev.dim() == 3 else dev[:, None]
    score, pos = dev.max(1)
    test = result.scores("test") if result.test_acc is not None else None
    null = result.null_summary() if result.null_max_dev is not None else None
    return {"pred": dev, "dev": score, "pos": pos, "test": test, "baseline": result.baseline, "null": null,
            "routing": result.routing}


def _predictivity_section(p: dict, meta: dict, top: int) -> str:
    L, N = p["dev"].shape
    null = (p["null"] or {}).get("dev")
    fig = plots.predictivity_by_layer(p["pred"], prompt_accuracy=meta.get("accuracy", {}).get("dev"),
                                      title=f"{L} layers x {N} neurons (dev)",
                                      threshold=null["fwer_threshold"] if null else None)
    reading = "" if not null else (
        f'<p class="reading">{null["significant"]} of {L * N} neurons beat the family-wise 5% threshold of '
        f'{null["fwer_threshold"]:.3f}: the predictivity the best of {L * N} neurons reaches with shuffled labels '
        f'in 95% of {p["null"]["permutations"]} permutations.</p>')
    order = p["dev"].flatten().argsort(descending=True)[:top].tolist()
    rows, layout = [], NeuronLayout.from_json(meta.get("layout"))  # experts' neurons: L3.E5.N812
    for flat in order:
        l, n = divmod(flat, N)
        base = p["baseline"]
        rows.append([layout.label(l, n), l, n, p["dev"][l, n].item(), None if p["test"] is None else p["test"][l, n].item(),
                     int(p["pos"][l, n]), None if base is None else base.reshape(L, -1, N)[l, int(p["pos"][l, n]), n].item()])
    table = _table(rows, ["neuron", "layer", "index", "dev predictivity", "test predictivity", "best prompt position",
                          "baseline there"])
    experts = "" if not layout.moe else _figure(
        plots.predictivity_by_expert(p["dev"], layout, p.get("routing")), "Mixture of experts: each expert's best "
        "neuron (S: the shared expert)" + ("; right, how much more often the router sends label-1 than label-0 "
                                            "train examples to each expert." if p.get("routing") is not None else "."))
    return ("<h2>Skill neuron predictivity</h2>" + reading + _figure(fig, "Predictivity (max over prompt positions) "
            "of every neuron per layer; the dashed line is the tuned prompt's dev accuracy (Wang et al. 2022, fig. 2)"
            + ("; the dotted one the permutation null's family-wise 5% threshold." if null else ".")) + experts +
            f"<h3>Top {len(rows)} neurons</h3>" + table)


def _neurons_section(ns) -> str:
    counts = ns.counts_per_layer()
    summary = (f"{len(ns)} of {ns.n_layers * ns.d_mlp} neurons selected"
               + (f" ({ns.meta['top']} {'per layer' if ns.meta.get('per_layer') else 'of all'}, by "
                  f"{ns.meta.get('scored_on', 'score')})" if "top" in ns.meta else "") + "; neurons per layer:")
    return "<h2>Selected skill neurons</h2>" + f"<p>{_e(summary)}</p>" + _bars(
        [(f"L{l}", c) for l, c in enumerate(counts)], max(counts) or 1)


def _bars(items: list[tuple[str, float]], top: float) -> str:
    """A compact horizontal bar chart in HTML: one row per ``(label, value)``."""
    rows = "".join(f'<div class="bar"><span class="label">{_e(k)}</span><span class="fill" style="width:'
                   f'{100 * v / top:.1f}%"></span><span class="value">{_e(_fmt(v))}</span></div>' for k, v in items)
    return f'<div class="bars">{rows}</div>'


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


def _perturb_section(name: str, data: dict, notes: list[str]) -> str:
    """A suppression curve as a results paragraph: what was perturbed, the numbers per fraction, the figure."""
    meta, rows = data.get("meta", {}), data.get("summary", [])
    how = (f"{data.get('method')} perturbation at the {meta.get('positions', 'prompt')} positions of the top "
           f"{'fraction of each layer' if meta.get('per_layer') else 'fraction of all neurons'} by "
           f"{meta.get('selected_on', 'score')}, against {meta.get('controls', '?')} random sets with the same "
           f"count per layer; accuracy on {meta.get('split', 'dev')} ({meta.get('n_examples', '?')} examples).")
    table = _table([[f"{r['fraction']:.0%}", r["n_neurons"], r["skill_accuracy"],
                     f"{r['random_accuracy_mean']:.3f} ± {r['random_accuracy_std']:.3f}", f"{100 * r['gap']:.1f}",
                     _ci(r)] for r in rows], ["fraction", "neurons", "skill set accuracy",
                                               "random sets (mean ± std)", "gap (points)", "gap 95% CI"])
    worst = max((r for r in rows if r["fraction"] > 0), key=lambda r: r["gap"], default=None)
    reading = "" if worst is None else (
        f'<p class="reading">Largest gap at {worst["fraction"]:.0%} of neurons: the skill set leaves '
        f'{worst["skill_accuracy"]:.3f}, random sets {worst["random_accuracy_mean"]:.3f} '
        f'({100 * worst["gap"]:.1f} points, 95% CI {_ci(worst)}).</p>')
    fig = _try(f"suppression curves {name}", lambda: _figure(plots.suppression_curves(data, title=name),
               "Accuracy while perturbing skill neurons vs random neurons (band: spread over random sets); "
               "below, when the curve has random controls, the gap (random minus skill, in points) with its "
               "paired bootstrap 95% interval."), notes)
    return f"<h3>Suppression curve ({_e(name)})</h3><p>{_e(how)}</p>" + reading + table + fig


def _ci(row: dict) -> str:
    """A row's gap interval in points, or "n/a" (no random controls, or a curve made before intervals)."""
    low, high = row.get("gap_ci_low"), row.get("gap_ci_high")
    ok = isinstance(low, (int, float)) and low == low and isinstance(high, (int, float))
    return f"{100 * low:.1f} to {100 * high:.1f}" if ok else "n/a"


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
    from skill_lens.store.artifacts import read_json

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


def _views_section(run, pairs, n_examples: int, notes: list[str]) -> str:
    from skill_lens.views import viz

    pm, task = run.prompted(), run.task
    split = task.dev
    n = min(n_examples, len(split))
    texts = split.texts[:n]
    names = task.label_names
    captions = [f"dev example {i} (gold: {names[y]})" for i, y in enumerate(split.labels[:n])]
    tb = split.texts_b[:n] if split.texts_b is not None else None
    acts = viz.neuron_activations_view(pm, texts, pairs, texts_b=tb, captions=captions,
                                       title="Skill neurons over dev examples (click a neuron to colour by it)")
    top = viz.top_examples_view(pm, split, pairs[:4], k=3, label_names=names,
                                title="Most and least active dev examples per neuron (mean over the prompt)")
    listing = "".join(f'<li class="example">{_e(c)}: {_e(t)}</li>' for c, t in zip(captions, texts))
    return ("<h2>Neuron views</h2>" + f"<ul>{listing}</ul>" + acts.fragment() + top.fragment())


# ------------------------------------------------------------------ entry point
def write_report(run, out=None, include_views: bool = True, top: int = 20, n_neurons: int = 8,
                 n_examples: int = 3) -> Path:
    """Write the HTML report of ``run`` (a :class:`~skill_lens.workflow.runs.Run` or its directory) to ``out``
    (default ``RUN/report.html``) atomically; return its path.

    Every artifact is read and checked first (a stale one is an error naming the step to rerun); ``top``
    neurons are listed, ``n_neurons`` of them shown in the views (which run the model) over
    ``n_examples`` dev examples. ``out`` must be new or a report written here.

    >>> import tempfile
    >>> from skill_lens.workflow import steps
    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.tuning import TuneConfig
    >>> r = steps.tune(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    >>> _ = steps.probe(r)
    >>> page = write_report(r).read_text()
    >>> "CircuitsVis.render" in page, "<h2>Neuron views</h2>" in page
    (True, True)
    """
    from skill_lens.workflow.runs import Run

    run = run if isinstance(run, Run) else Run.open(run)
    out = check_report_out(Path(out) if out is not None else run.file("report"))
    meta, notes = run.meta, []
    pred = _scores_of(run.probe_result()) if run.file("predictivity").exists() else None
    ns = run.neurons() if run.file("neurons").exists() else None
    results = _results(run, notes)  # all read and checked before anything is written
    title = f"skill_lens report: {meta['task'].get('name', '?')} on {meta['model']}"
    body = [f"<h1>{_e(title)}</h1>", _note(f"Run directory: {run.path}"), _run_section(meta)]
    if pred is not None:
        body.append(_try("predictivity", lambda: _predictivity_section(pred, meta, top), notes))
    else:
        body.append("<h2>Skill neuron predictivity</h2>" +
                    _note(f"No predictivity.safetensors yet: run `skill-lens probe {run.path}`."))
    if ns is not None:
        body.append(_try("selected neurons", lambda: _neurons_section(ns), notes))
    views, script = _views(run, pred, ns, include_views, n_neurons, n_examples, notes)
    body += [views, _result_sections(run, results, notes)]
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n{GENERATOR}\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f"<title>{_e(title)}</title><style>{CSS}</style>\n{script}\n</head>\n<body>\n"
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


def _views(run, pred, ns, include_views: bool, n_neurons: int, n_examples: int, notes: list[str]) -> tuple[str, str]:
    """The circuitsvis views of the top neurons (ordered by predictivity) and the script they need."""
    pairs = ns.pairs() if ns is not None else []
    if pred is not None:  # order the viewed neurons by predictivity
        N = pred["dev"].shape[1]
        ranked = [divmod(i, N) for i in pred["dev"].flatten().argsort(descending=True).tolist()]
        pairs = [p for p in ranked if p in set(pairs)] if pairs else ranked
    pairs = pairs[:n_neurons]
    if not include_views:
        return "<h2>Neuron views</h2>" + _note("Neuron views left out (--no-views); they need the model to run."), ""
    if not pairs:
        return "<h2>Neuron views</h2>" + _note("No neurons to show: run `skill-lens probe` (and `neurons`) first."), ""
    views = _try("neuron views", lambda: _views_section(run, pairs, n_examples, notes), notes)
    if "CircuitsVis.render" not in views:
        return views, ""
    from skill_lens.views.viz import circuitsvis_script

    return views, circuitsvis_script()
