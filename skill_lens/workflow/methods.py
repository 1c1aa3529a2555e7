"""What a run did and found, in words: the report's summary, its one definition of skill neurons and its
methods paragraph.

Plain text built from a run's ``run.json`` (``meta``), its probe result, its selected
:class:`~skill_lens.probing.neurons.NeuronSet` and a suppression curve, whichever exist; the report
(:mod:`skill_lens.workflow.report`) and the docs' results page print the same sentences. Every number a
reader would quote comes with its interval or its chance level.

>>> meta = {"model": "m", "n_layers": 2, "d_mlp": 4, "prompt_length": 8, "accuracy": {"dev": 0.845},
...         "accuracy_ci": {"dev": [0.79, 0.89]}, "task": {"name": "rt"}}
>>> summary(meta)
'The tuned prompt reaches 0.845 [0.790, 0.890] dev accuracy on rt (95% Wilson interval).'
"""

from __future__ import annotations

from typing import Any

from skill_lens.probing.scores import rank

__all__ = ["summary", "definition", "methods", "why_above_half", "top_table", "curve_table", "gap_interval", "run_fields",
           "COLUMNS"]

# What each column of the report's tables means (the report prints these under its tables).
COLUMNS = {
    "dev predictivity": "max(acc, 1 - acc) on dev at the neuron's best prompt position, where acc is the share of "
                        "examples whose [activation > baseline] matches the label; the ranking's score",
    "test predictivity": "the same on test, at the same position: held out from the ranking, it shows whether "
                         "the neuron's predictivity generalises",
    "best prompt position": "the soft prompt token (P0 = the first) where the neuron's dev predictivity is highest",
    "train baseline there": "the neuron's mean activation over the train split at that position: the probe reads "
                            "an activation above it as one class and below it as the other",
    "family-wise p": "(1 + the number of label permutations whose best neuron scored at least this much) / "
                     "(1 + permutations): below 0.05 means above the family-wise 5% threshold",
    "fraction": "the top fraction of all neurons (by dev predictivity) that is perturbed",
    "neurons": "how many neurons that fraction is",
    "skill set accuracy": "dev accuracy with the skill neurons perturbed (mean over noise draws)",
    "random sets (mean ± std)": "dev accuracy with as many random neurons perturbed, the same number per layer and "
                                "none of the skill neurons; mean and spread over the random sets and draws",
    "gap (points)": "random minus skill accuracy, in percentage points: how much more the skill neurons matter",
    "gap 95% CI": "paired bootstrap interval of the gap over examples, noise draws and random sets",
}


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def _acc(meta: dict, key: str) -> str:
    v, ci = meta.get("accuracy", {}).get(key), (meta.get("accuracy_ci") or {}).get(key)
    if v is None:
        return "n/a"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _total(meta: dict) -> int:
    return int(meta.get("n_layers", 0)) * int(meta.get("d_mlp", 0))


def definition(meta: dict, ns=None, curve_meta: dict | None = None, short: bool = False) -> str:
    """The report's one definition of skill neurons: how the stored set (and the curve's ranking) was chosen;
    ``short``: the first sentence only.

    >>> definition({"n_layers": 30, "d_mlp": 1536, "prompt_length": 8}, None)
    'Skill neurons are the FFN neurons ranked highest by dev predictivity, each scored at the best of its 8 prompt positions (Wang et al. 2022).'
    """
    P = meta.get("prompt_length", 1)
    where = f"each scored at the best of its {P} prompt positions" if P and P > 1 else "scored at the prediction position"
    if ns is None or "top" not in ns.meta:
        return f"Skill neurons are the FFN neurons ranked highest by dev predictivity, {where} (Wang et al. 2022)."
    top, per_layer = ns.meta["top"], bool(ns.meta.get("per_layer"))
    share = f"{top:.0%}" if isinstance(top, float) else f"{top}"
    of = "of each layer's" if per_layer else f"of all {_n(_total(meta))}"
    text = (f"Skill neurons are the top {share} {of} FFN neurons by dev predictivity ({len(ns):,} neurons), {where} "
            "(Wang et al. 2022).")
    if short:
        return text
    if curve_meta is not None and bool(curve_meta.get("per_layer")) != per_layer:
        text += (" Note: the suppression curve ranks " + ("each layer apart" if curve_meta.get("per_layer") else
                 "all neurons together") + ", unlike this set; rerun `skill-lens neurons` or `skill-lens perturb` "
                 "with the same --per-layer to use one ranking.")
    else:
        text += " The suppression curve perturbs the top fractions of the same ranking, and the views show its best."
    return text


def why_above_half(result) -> str:
    """Why a predictivity of 0.5 is not chance here, with the run's own numbers.

    >>> import torch
    >>> from skill_lens.probing.result import ProbeResult
    >>> print(why_above_half(ProbeResult(torch.zeros(1, 8, 4), torch.full((1, 8, 4), 0.5), sizes={"dev": 200})))
    A neuron's score is the best of 8 positions of an accuracy over 200 dev examples, so even a neuron that carries no information scores above 0.5: here the lowest of 4 neurons scores 0.500 and layer 0's median 0.500. Chance is the permutation null's threshold, not 0.5.
    """
    scores = result.scores("dev")
    P = result.dev_acc.shape[1] if result.dev_acc.dim() == 3 else 1
    n = result.sizes.get("dev", "the")
    best = f"the best of {P} positions of " if P > 1 else ""
    return (f"A neuron's score is {best}an accuracy over {n} dev examples, so even a neuron that carries no "
            f"information scores above 0.5: here the lowest of {scores.numel():,} neurons scores "
            f"{float(scores.min()):.3f} and layer 0's median {float(scores[0].median()):.3f}. Chance is the "
            "permutation null's threshold, not 0.5.")


def summary(meta: dict, result=None, ns=None, curve: dict | None = None) -> str:
    """The run's findings in a few sentences: prompt accuracy, the chance level and how many neurons pass it,
    the best neuron, and the suppression gap, each with its interval (see the module docstring)."""
    task = (meta.get("task") or {}).get("name", "the task")
    wilson = " (95% Wilson interval)" if (meta.get("accuracy_ci") or {}).get("dev") else ""
    parts = [f"The tuned prompt reaches {_acc(meta, 'dev')} dev accuracy on {task}{wilson}"
             + (f", the zero-shot hard prompt {_acc(meta, 'hard_prompt_dev')}." if meta.get("accuracy", {}).get(
                 "hard_prompt_dev") is not None else ".")]
    if result is not None and result.dev_acc is not None:
        label, dev, test = result.top(1)[0]
        held = "" if test is None else f" ({test:.3f} on held-out test)"
        if result.null_max_dev is not None:
            parts.append(f"{int(result.significant().sum()):,} of {result.scores().numel():,} neurons predict the "
                         f"label above chance (the family-wise 5% threshold {result.fwer_threshold():.3f} from "
                         f"{len(result.null_max_dev)} label permutations); the best, {label}, scores {dev:.3f}{held}.")
        else:
            parts.append(f"The best neuron, {label}, scores {dev:.3f}{held}; no permutation null was run, so "
                         "nothing says how far above chance that is (skill-lens probe RUN --permutations 100).")
    if ns is not None and result is not None and result.null_max_dev is not None:
        parts.append(f"{int((result.significant() & ns.mask).sum()):,} of the {len(ns):,} skill neurons are above "
                     "that threshold.")
    rows = [r for r in (curve or {}).get("summary", []) if r.get("fraction", 0) > 0 and r.get("gap") == r.get("gap")]
    if rows:
        r = max(rows, key=lambda r: r["gap"])
        ci = "" if r.get("gap_ci_low") is None or r["gap_ci_low"] != r["gap_ci_low"] else \
            f" (95% CI {100 * r['gap_ci_low']:.1f} to {100 * r['gap_ci_high']:.1f})"
        parts.append(f"Perturbing the top {r['fraction']:.0%} ({r['n_neurons']:,} neurons) leaves "
                     f"{r['skill_accuracy']:.3f} dev accuracy, against {r['random_accuracy_mean']:.3f} for as many "
                     f"random neurons: {100 * r['gap']:.1f} points{ci}.")
    return " ".join(parts)


def methods(meta: dict, result=None, ns=None, curve: dict | None = None) -> str:
    """The methods paragraph: model, task, sizes, prompt, probe, selection, perturbation, controls, draws, null.

    >>> text = methods({"model": "m", "family": "causal", "n_layers": 2, "d_mlp": 4, "prompt_length": 8,
    ...                 "task": {"name": "rt", "splits": {"train": {"size": 400}}}, "config": {"steps": 150}})
    >>> text.startswith("Model: m (causal, 2 layers x 4 FFN neurons"), "150 steps" in text
    (True, True)
    """
    t, c = meta.get("task") or {}, meta.get("config") or {}
    sizes = " / ".join(f"{v.get('size')} {k}" for k, v in (t.get("splits") or {}).items() if isinstance(v, dict))
    words = ", ".join(f"{n} as '{w.strip()}'" for n, w in zip(t.get("label_names", []), meta.get("label_words", [])))
    out = [f"Model: {meta.get('model')} ({meta.get('family')}, {meta.get('n_layers')} layers x {meta.get('d_mlp')} FFN "
           f"neurons, {meta.get('dtype', 'float32')}), frozen.",
           f"Task: {t.get('name')}" + (f" ({t.get('source')})" if t.get("source") else "") + f", {sizes} examples"
           + (f"; the labels {words}." if words else "."),
           f"Prompt: {meta.get('prompt_length')} soft tokens, laid out as: {meta.get('placement', 'by family')}; tuned for "
           f"{c.get('steps')} steps (batch {c.get('batch_size')}, learning rate {c.get('lr')}, seed {meta.get('seed')})"
           + (f"; the dev-best step, {meta.get('best_step')}, is kept." if meta.get("best_step") is not None else "."),
           "Probe: each FFN neuron's activation after the non-linearity at each prompt position; its baseline is the "
           "mean over the train split, its accuracy the share of dev examples where [activation > baseline] matches "
           "the label, its predictivity max(accuracy, 1 - accuracy), and its score the best position's.",
           "Selection: " + definition(meta, ns, short=True).removeprefix("Skill neurons are ")]
    if curve:
        m = curve.get("meta", {})
        draws = m.get("draws", 1)
        out.append(f"Perturbation: {curve.get('method')}" + (f" (Gaussian noise, std {m.get('std')})" if curve.get(
                   "method") == "gaussian" else "") + f" at the {m.get('positions', 'prompt')} positions of the top "
                   + ", ".join(f"{f:.0%}" for f in curve.get("fractions", []) if f) + " of neurons; accuracy on "
                   f"{m.get('split', 'dev')} ({m.get('n_examples')} examples).")
        n = m.get("controls", "?")
        out.append(f"Controls: {n} random neuron set{'s' * (n != 1)} per fraction, with the same number of neurons "
                   f"in every layer and none of the skill neurons; {draws} noise draw{'s' * (draws != 1)} per set.")
    if result is not None and result.null_max_dev is not None:
        out.append(f"Chance: the dev labels permuted {len(result.null_max_dev)} times, the probe rerun on each; the "
                   "family-wise 5% threshold is the 95th percentile of each permutation's best predictivity over "
                   "all neurons and positions, so a neuron above it beats what the best of as many uninformative "
                   "neurons reaches.")
    if meta.get("accuracy_ci") or curve:
        out.append("Intervals: " + ("Wilson 95% for accuracies; " if meta.get("accuracy_ci") else "")
                   + "a paired bootstrap 95% over examples, draws and random sets for suppression gaps.")
    return " ".join(out)


def top_table(result, k: int = 20, label=None) -> tuple[list[str], list[list[Any]]]:
    """``(header, rows)`` of the ``k`` best neurons of all: rank, neuron, dev and test predictivity, best prompt
    position, train baseline there and, with a permutation null, the family-wise p (:data:`COLUMNS` says what
    each means); ``label(layer, index)`` names the neurons (default ``L{layer}.N{index}``; a mixture of
    experts' layout names its experts' neurons).

    >>> import torch
    >>> from skill_lens.probing.result import ProbeResult
    >>> top_table(ProbeResult(torch.zeros(1, 2, 2), torch.tensor([[[0.5, 0.9], [0.5, 0.2]]])), 1)
    (['rank', 'neuron', 'dev predictivity', 'test predictivity', 'best prompt position', 'train baseline there'], [[1, 'L0.N1', 0.9, None, 'P0', 0.0]])
    """
    per = result.per_position("dev")
    per = per if per.dim() == 3 else per[:, None]
    base = result.baseline.reshape(per.shape[0], -1, per.shape[-1])
    p_adj = result.adjusted_p_values() if result.null_max_dev is not None else None
    header = ["rank", "neuron", "dev predictivity", "test predictivity", "best prompt position", "train baseline there"]
    rows = []
    held = result.scores("test") if result.test_acc is not None else None
    name = label or (lambda layer, n: f"L{layer}.N{n}")
    for i, (layer, n) in enumerate(rank(result.scores("dev"))[:k].tolist()):
        pos = int(per[layer, :, n].argmax())
        rows.append([i + 1, name(layer, n), round(float(per[layer, pos, n]), 6),
                     None if held is None else round(float(held[layer, n]), 6), f"P{pos}",
                     round(float(base[layer, pos, n]), 6)] + ([round(float(p_adj[layer, n]), 6)] if p_adj is not None
                                                              else []))
    return header + (["family-wise p"] if p_adj is not None else []), rows


def curve_table(curve: dict) -> tuple[list[str], list[list[Any]]]:
    """``(header, rows)`` of a suppression curve's summary (``SuppressionCurve.to_dict()``): fraction, neurons,
    skill and random accuracy, the gap in points and its 95% interval.

    >>> curve_table({"summary": [{"fraction": 0.02, "n_neurons": 922, "skill_accuracy": 0.6,
    ...     "random_accuracy_mean": 0.8, "random_accuracy_std": 0.01, "gap": 0.2, "gap_ci_low": 0.1,
    ...     "gap_ci_high": 0.3}]})[1]
    [['2%', 922, 0.6, '0.800 ± 0.010', '20.0', '10.0 to 30.0']]
    """
    header = ["fraction", "neurons", "skill set accuracy", "random sets (mean ± std)", "gap (points)", "gap 95% CI"]
    rows = [[f"{r['fraction']:.0%}", r["n_neurons"], r["skill_accuracy"],
             f"{r['random_accuracy_mean']:.3f} ± {r['random_accuracy_std']:.3f}", f"{100 * r['gap']:.1f}", gap_interval(r)]
            for r in curve.get("summary", [])]
    return header, rows


def gap_interval(row: dict) -> str:
    """A row's gap interval in points, or "n/a" (no random controls, or a curve made before intervals)."""
    low, high = row.get("gap_ci_low"), row.get("gap_ci_high")
    ok = isinstance(low, (int, float)) and low == low and isinstance(high, (int, float))
    return f"{100 * low:.1f} to {100 * high:.1f}" if ok else "n/a"


def run_fields(meta: dict, path, results) -> list[tuple[str, str]]:
    """A run in a few labelled lines (its ``repr`` and notebook card): directory, model, task sizes, prompt,
    accuracies with their 95% Wilson intervals, and the names of what it holds (``results``).

    >>> run_fields({"model": "m", "accuracy": {"dev": 0.5}}, "runs/rt", [])[-3:]
    [('soft prompt', 'dev 0.500, test n/a'), ('hard prompt', 'dev n/a, test n/a'), ('results', 'none yet')]
    """
    m, t = meta, meta.get("task", {})
    sizes = "/".join(str(v.get("size")) for v in t.get("splits", {}).values() if isinstance(v, dict))
    acc, ci = m.get("accuracy", {}), m.get("accuracy_ci") or {}

    def a(key: str) -> str:
        v, c = acc.get(key), ci.get(key)
        return "n/a" if v is None else f"{v:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else "")

    return [("directory", str(path)),
            ("model", f"{m.get('model')} ({m.get('n_layers')} layers x {m.get('d_mlp')} FFN neurons)"),
            ("task", f"{t.get('name')} ({sizes} train/dev/test)" if sizes else str(t.get("name"))),
            ("prompt", f"{m.get('prompt_length')} tokens, seed {m.get('seed')}"),
            ("soft prompt", f"dev {a('dev')}, test {a('test')}"),
            ("hard prompt", f"dev {a('hard_prompt_dev')}, test {a('hard_prompt_test')}"),
            ("results", ", ".join(results) or "none yet")]
