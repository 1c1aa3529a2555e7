"""skill_lens: find and use skill neurons in pretrained transformers, on TransformerLens hooks.

One import gives the method (README, "One import")::

    import skill_lens as sl
    model = sl.load_model("smollm2-135m"); task = sl.load_task("rotten_tomatoes")
    pm = sl.prompted(model, task, sl.tune(model, task, sl.TuneConfig(prompt_length=8)).prompt)
    skill = sl.NeuronSet.from_scores(sl.probe(pm, task).scores("dev"), top=0.02)

Names load lazily on first use, so ``import skill_lens`` stays fast (no torch until needed). Every
name also lives in its module, one folder per stage of the method, read bottom-up (``CONTRIBUTING.md``):
``base``, ``store``, ``data``, ``model``, ``prompting``, ``probing``, ``intervening``, ``studies``, ``views``,
``workflow``, then ``cli``. ``from skill_lens.probing.result import ProbeResult`` is the same class as
``sl.ProbeResult``.

>>> import skill_lens as sl
>>> sl.probe.__module__, sl.capture.__module__, sl.steps.__name__
('skill_lens.probing.probe', 'skill_lens.probing.capture', 'skill_lens.workflow.steps')
"""

import importlib
import warnings

# Without ipywidgets, importing tqdm.auto in Jupyter (transformers does) warns "IProgress not found" into
# every notebook; skill_lens draws its bars without widgets (skill_lens.base.progress) and turns
# transformers' own off while it loads, so the warning says nothing a reader can act on.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

__version__ = "0.1.0"

# name -> module it lives in
_API = {
    "load_model": "model.loading", "describe": "model.loading",
    "load_task": "data.sources",
    "TuneConfig": "prompting.tuning", "tune": "prompting.tuning",
    "evaluate": "prompting.evaluation", "prompted": "prompting.evaluation", "hard_prompt_model": "prompting.evaluation",
    "SoftPrompt": "prompting.prompts",
    "probe": "probing.probe", "ProbeOptions": "probing.probe", "ProbeResult": "probing.result",
    "capture": "probing.capture",
    "NeuronSet": "probing.neurons", "select_top": "probing.scores", "spearman": "probing.scores",
    "zero_ablate": "intervening.interventions", "mean_ablate": "intervening.interventions",
    "gaussian_noise": "intervening.interventions", "intervene": "intervening.interventions",
    "random_like": "intervening.interventions",
    "suppression_curve": "intervening.suppression", "CurveOptions": "intervening.suppression",
    "patch": "intervening.patching",
    "prune": "intervening.pruning", "save_pruned": "intervening.pruning", "load_pruned": "intervening.pruning",
    "Run": "workflow.runs", "plan": "workflow.plan",
}
# modules offered at the top: sl.steps, sl.plots, sl.viz
_MODULES = {"steps": "workflow.steps", "plots": "views.plots", "viz": "views.viz"}

__all__ = [*_API, *_MODULES]


def __getattr__(name: str):
    """Load a top-level name on first use (PEP 562) and keep it."""
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    elif name in _MODULES:
        value = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; the top-level names are "
                             f"{', '.join(__all__)} (others live in their modules, e.g. skill_lens.studies.specificity)")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
