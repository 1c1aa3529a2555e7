"""skill_lens: find and use skill neurons in pretrained transformers, on TransformerLens hooks.

One import gives the method (README, "One import")::

    import skill_lens as sl
    model = sl.load_model("smollm2-135m"); task = sl.load_task("rotten_tomatoes")
    pm = sl.prompted(model, task, sl.tune(model, task, sl.TuneConfig(prompt_length=8)).prompt)
    skill = sl.NeuronSet.from_scores(sl.probe(pm, task).scores("dev"), top=0.02)

Names load lazily on first use, so ``import skill_lens`` stays fast (no torch until needed). Every
name also lives in its module (``from skill_lens.probe import ProbeResult`` works as before).

``sl.probe`` and ``sl.capture`` are the *functions*, also after ``import skill_lens.probe`` elsewhere
(the package keeps these two names when their modules load). Reach the modules with
``from skill_lens.probe import ...``, ``importlib.import_module("skill_lens.probe")`` or
``sys.modules["skill_lens.probe"]``; ``import skill_lens.probe as m`` and ``from skill_lens import probe``
give the function.

>>> import skill_lens as sl
>>> sl.probe.__module__, sl.capture.__module__, sl.steps.__name__
('skill_lens.probe', 'skill_lens.capture', 'skill_lens.steps')
>>> import skill_lens.probe
>>> callable(skill_lens.probe) and skill_lens.probe is sl.probe
True
"""

import importlib
import sys
import types

__version__ = "0.1.0"

# name -> module it lives in; a module itself when the name is the module's own.
_API = {
    "load_model": "models", "describe": "models",
    "load_task": "tasks",
    "TuneConfig": "tuning", "tune": "tuning",
    "evaluate": "evaluation", "prompted": "evaluation", "hard_prompt_model": "evaluation",
    "SoftPrompt": "prompts",
    "probe": "probe", "ProbeResult": "probe",
    "NeuronSet": "neurons", "select_top": "predictivity", "spearman": "predictivity",
    "zero_ablate": "interventions", "mean_ablate": "interventions", "gaussian_noise": "interventions",
    "intervene": "interventions", "random_like": "interventions",
    "suppression_curve": "curves",
    "patch": "patching",
    "prune": "pruning", "save_pruned": "pruning", "load_pruned": "pruning",
    "capture": "capture",
    "Run": "runs",
}
_MODULES = ("steps", "plots", "viz")
_FUNCTIONS_OVER_MODULES = frozenset(name for name, mod in _API.items() if name == mod)  # probe, capture

__all__ = [*_API, *_MODULES]


def __getattr__(name: str):
    """Load a top-level name on first use (PEP 562) and keep it."""
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    elif name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; the top-level names are "
                             f"{', '.join(__all__)} (others live in their modules, e.g. skill_lens.analyses)")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package, keeping ``probe``/``capture`` as functions when the import system records their modules."""

    def __setattr__(self, name, value):
        if name in _FUNCTIONS_OVER_MODULES and isinstance(value, types.ModuleType):
            return  # the module stays in sys.modules; the package's name stays the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
