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

>>> import tempfile, json
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "run.json").write_text(json.dumps({"model": "m", "task": {"name": "t<1>"},
...                                              "accuracy": {"dev": 0.9, "hard_prompt_dev": 0.6}}))
>>> page = write_report(d, include_views=False).read_text()
>>> "t&lt;1&gt;" in page, "t<1>" in page, "0.900" in page
(True, False, True)
"""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from skill_lens.artifacts import ArtifactError, atomic_write, load_tensors, read_json
from skill_lens import plots

__all__ = ["write_report", "REPORT_FILE"]

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
    acc = meta.get("accuracy", {})
    acc_rows = [["soft prompt (tuned)", acc.get("dev"), acc.get("test")],
                ["hard prompt (zero-shot)", acc.get("hard_prompt_dev"), acc.get("hard_prompt_test")]]
    return ("<h2>Run</h2>" + _table([r for r in rows if r[1] not in (None, "")]) +
            "<h2>Accuracy</h2>" + _table(acc_rows, ["prompt", "dev", "test"]))


def _read_predictivity(path: Path) -> dict:
    """Per-neuron scores from a probe file: ``{"dev": [L, N], "test": [L, N] | None, "pos": [L, N], ...}``."""
    tensors, meta = load_tensors(path)
    if "dev_acc" not in tensors:
        raise ArtifactError(f"{path} has no dev_acc tensor")
    pred = {s: torch.maximum(tensors[f"{s}_acc"], 1 - tensors[f"{s}_acc"]).float()
            for s in ("dev", "test") if f"{s}_acc" in tensors}
    dev = pred["dev"] if pred["dev"].dim() == 3 else pred["dev"][:, None]
    score, pos = dev.max(1)
    test = pred.get("test")
    if test is not None:
        test = (test if test.dim() == 3 else test[:, None]).amax(1)
    return {"pred": dev, "dev": score, "pos": pos, "test": test, "baseline": tensors.get("baseline"), "meta": meta}


def _predictivity_section(p: dict, meta: dict, top: int) -> str:
    L, N = p["dev"].shape
    fig = plots.predictivity_by_layer(p["pred"], prompt_accuracy=meta.get("accuracy", {}).get("dev"),
                                      title=f"{L} layers x {N} neurons (dev)")
    order = p["dev"].flatten().argsort(descending=True)[:top].tolist()
    rows = []
    for flat in order:
        l, n = divmod(flat, N)
        base = p["baseline"]
        rows.append([f"L{l}.N{n}", l, n, p["dev"][l, n].item(), None if p["test"] is None else p["test"][l, n].item(),
                     int(p["pos"][l, n]), None if base is None else base.reshape(L, -1, N)[l, int(p["pos"][l, n]), n].item()])
    table = _table(rows, ["neuron", "layer", "index", "dev predictivity", "test predictivity", "best prompt position",
                          "baseline there"])
    return ("<h2>Skill neuron predictivity</h2>" + _figure(fig, "Predictivity (max over prompt positions) of every "
            "neuron per layer; the dashed line is the tuned prompt's dev accuracy (Wang et al. 2022, fig. 2).") +
            f"<h3>Top {len(rows)} neurons</h3>" + table)


def _neurons_section(path: Path, shape: tuple[int, int] | None) -> tuple[str, list[tuple[int, int]]]:
    pairs = _read_neuron_pairs(path, shape)
    per_layer: dict[int, int] = {}
    for l, _ in pairs:
        per_layer[l] = per_layer.get(l, 0) + 1
    rows = [[f"layer {l}", c] for l, c in sorted(per_layer.items())]
    return (f"<h2>Selected skill neurons</h2><p>{len(pairs)} neurons in {path.name}.</p>" +
            _table(rows, ["layer", "neurons"]), pairs)


def _read_neuron_pairs(path: Path, shape) -> list[tuple[int, int]]:
    try:
        from skill_lens.neurons import NeuronSet

        return [tuple(map(int, p)) for p in NeuronSet.load(path, expect_shape=shape).pairs()]
    except ImportError:
        pass
    tensors, _ = load_tensors(path)
    for t in tensors.values():
        if t.dim() == 2 and t.dtype == torch.bool:
            return [tuple(p) for p in t.nonzero().tolist()]
        if t.dim() == 2 and t.shape[1] == 2 and not t.is_floating_point():
            return [tuple(p) for p in t.tolist()]
    raise ArtifactError(f"{path} holds no neuron mask or (layer, index) pairs")


def _scalars(data: dict, prefix: str = "") -> list[list[Any]]:
    """Scalar fields, and those one dict deep as ``outer.inner``."""
    rows = []
    for k, v in data.items():
        if isinstance(v, (int, float, str, bool)) and len(str(v)) < 200:
            rows.append([prefix + str(k), v])
        elif isinstance(v, dict) and not prefix:
            rows += _scalars(v, f"{k}.")
    return rows


def _json_figure(path: Path, notes: list[str], name: str | None = None) -> str:
    """Figures for a result JSON, chosen by its keys (curves, overlaps, matrices, pruning); its scalars as a table."""
    data = json.loads(path.read_text())
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


HF_FILES = {"config.json", "generation_config.json", "special_tokens_map.json", "tokenizer.json",
            "tokenizer_config.json", "vocab.json", "added_tokens.json", "pruning.json"}


def _pruned_summary(d: Path) -> str:
    info = json.loads((d / "pruning.json").read_text())
    kept = {str(k): len(v) for k, v in info.get("kept", {}).items()}
    d_mlp = info.get("d_mlp")
    total = d_mlp * len(kept) if d_mlp else None
    rows = [["base model", info.get("base_model")], ["pruned layers", ", ".join(sorted(kept, key=int)) or "none"],
            ["neurons kept in pruned layers", f"{sum(kept.values())} of {total}" if total else sum(kept.values())],
            ["removed neurons fixed at", f"prompt position {info['position']} of the baseline"
             if info.get("position") is not None else "a constant per neuron"],
            ["constants from", info.get("baseline_source")]]
    return f"<h3>pruned model {_e(d.name)}/</h3>" + _table([r for r in rows if r[1] is not None])


def _result_sections(run_dir: Path, notes: list[str]) -> str:
    def results(d: Path) -> list[Path]:
        return sorted(p for p in d.glob("*.json") if p.name not in HF_FILES | {"run.json"}
                      and not p.name.endswith((".safetensors.json", ".checkpoint.json"))
                      and not p.name.startswith("."))

    pruned = sorted(d for d in run_dir.iterdir() if d.is_dir() and (d / "pruning.json").exists())
    files = results(run_dir) + [p for d in pruned for p in results(d)]
    out = ["<h2>Suppression, pruning, robustness, analyses</h2>"]
    if not files and not pruned:
        out.append(_note("No result files yet (perturb_*.json, pruned models, robustness, analyses); "
                         "run those steps to add them here."))
    for d in pruned:
        out.append(_try(f"pruned model {d.name}", lambda d=d: _pruned_summary(d), notes))
    for p in files:
        out.append(_try(str(p.relative_to(run_dir)), lambda p=p: _json_figure(p, notes, str(p.relative_to(run_dir))), notes))
    return "".join(out)


def _views_section(run, pairs, n_examples: int, notes: list[str]) -> str:
    from skill_lens import viz

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
def write_report(run_dir, out=None, include_views: bool = True, run=None, top: int = 20, n_neurons: int = 8,
                 n_examples: int = 3) -> Path:
    """Write the HTML report of ``run_dir`` to ``out`` (default ``RUN/report.html``) atomically; return its path.

    ``run`` is an already opened :class:`~skill_lens.runs.Run` (its model is reused for the views);
    ``run_dir`` may also be a ``Run``. ``top`` neurons are listed, ``n_neurons`` of them shown in the
    views over ``n_examples`` dev examples. See the module docstring for what is read.

    >>> import tempfile
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.runs import Run
    >>> from skill_lens.tuning import TuneConfig
    >>> from skill_lens.artifacts import save_tensors
    >>> r = Run.create(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    >>> save_tensors(r.path / "predictivity.safetensors", {"baseline": torch.zeros(2, 2, 64),
    ...              "dev_acc": torch.rand(2, 2, 64, generator=torch.Generator().manual_seed(0))})
    >>> page = write_report(r).read_text()
    >>> "CircuitsVis.render" in page, "<h2>Neuron views</h2>" in page
    (True, True)
    """
    if hasattr(run_dir, "meta") and hasattr(run_dir, "path"):
        run, run_dir = run_dir, run_dir.path
    run_dir = Path(run_dir)
    if run is None and not (run_dir / "run.json").exists():
        raise ArtifactError(f"{run_dir} is not a finished run (no run.json); run `skill-lens tune --out {run_dir}` "
                            "first.")
    meta = run.meta if run is not None else read_json(run_dir / "run.json")  # validates before writing anything
    out = Path(out) if out is not None else run_dir / REPORT_FILE
    notes: list[str] = []
    shape = (meta["n_layers"], meta["d_mlp"]) if "n_layers" in meta and "d_mlp" in meta else None
    task = meta.get("task", {})
    title = f"skill_lens report: {task.get('name', '?') if isinstance(task, dict) else task} on {meta.get('model', '?')}"
    body = [f"<h1>{_e(title)}</h1>", _note(f"Run directory: {run_dir}"), _run_section(meta)]

    scores, pairs = None, []
    pred_path = run_dir / "predictivity.safetensors"
    if pred_path.exists():
        try:
            pred = _read_predictivity(pred_path)
            scores = pred["dev"]
            body.append(_try("predictivity", lambda: _predictivity_section(pred, meta, top), notes))
        except Exception as e:
            notes.append(f"predictivity.safetensors: {type(e).__name__}: {e}")
            body.append("<h2>Skill neuron predictivity</h2>" + _note(f"predictivity.safetensors is unreadable ({e})."))
    else:
        body.append("<h2>Skill neuron predictivity</h2>" +
                    _note(f"No predictivity.safetensors yet: run `skill-lens probe {run_dir}`."))
    neurons_path = run_dir / "neurons.safetensors"
    if neurons_path.exists():
        def neurons_html():
            nonlocal pairs
            section, pairs = _neurons_section(neurons_path, shape)
            return section
        body.append(_try("selected neurons", neurons_html, notes))

    if scores is not None:  # order the viewed neurons by predictivity
        N = scores.shape[1]
        ranked = [divmod(i, N) for i in scores.flatten().argsort(descending=True).tolist()]
        chosen = set(pairs)
        pairs = [p for p in ranked if p in chosen][:n_neurons] if pairs else ranked[:n_neurons]
    else:
        pairs = pairs[:n_neurons]
    views, script = "", ""
    if not include_views:
        views = "<h2>Neuron views</h2>" + _note("Neuron views left out (--no-views); they need the model to run.")
    elif not pairs:
        views = "<h2>Neuron views</h2>" + _note("No neurons to show: run `skill-lens probe` (and `neurons`) first.")
    else:
        def views_html():
            from skill_lens.runs import Run

            return _views_section(run if run is not None else Run.open(run_dir), pairs, n_examples, notes)
        views = _try("neuron views", views_html, notes)
        if "CircuitsVis.render" in views:
            from skill_lens.viz import circuitsvis_script

            script = circuitsvis_script()
    body.append(views)
    body.append(_result_sections(run_dir, notes))
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f"<title>{_e(title)}</title><style>{CSS}</style>\n{script}\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    with atomic_write(out) as f:
        f.write(page)
    for n in notes:
        warnings.warn(f"report {out}: {n}", stacklevel=2)
    return out
