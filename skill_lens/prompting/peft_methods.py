"""Other parameter-efficient tuning on a frozen model, by hooks: BitFit-style biases and adapters.

Their parameters are float32 master copies on the model's device, cast to its dtype in the hooks (as
a :class:`~skill_lens.prompting.prompts.SoftPrompt` is). Both predict through the task's verbalizer with
the hard-prompt template (no soft prompt), their hooks added to every forward of the prompted model
(:meth:`~skill_lens.prompting.prompted_model.PromptedModel.with_hooks`), so the skill neurons they induce
can be probed at the prediction position and compared with prompt tuning's
(``probe(peft_prompted(model, task, module), task)``).

* :class:`BitFit` -- true BitFit (Ben Zaken et al. 2022) trains the model's own bias terms, but
  Llama/SmolLM2 layers have no biases. Here each layer gets two trainable ``[d_model]`` vectors,
  added by hooks at the FFN input (``mlp.hook_in``, after the norm) and output (``mlp.hook_out``):
  the biases an FFN with biases would have (the input one acts through the FFN's first projection
  like its bias). Zero-initialised, so training starts from the frozen model.
* :class:`Adapter` -- a bottleneck adapter (Houlsby et al. 2019) after every FFN:
  ``x + up(relu(down(x)))`` on ``mlp.hook_out``, ``up`` zero-initialised.

:func:`tune_hooks` runs prompt tuning's own loop (:func:`skill_lens.prompting.tuning.train`: seeded batches,
AdamW with warmup and the config's schedule, clipping on the trainable parameters only, best dev
accuracy kept, optional checkpoint); the model's weights never change and every hook is removed when
a forward pass ends.

>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.tuning import TuneConfig
>>> model, task = tiny_model(), tiny_task()
>>> result = tune_hooks(model, task, Adapter(model, rank=4), TuneConfig(steps=4, eval_every=2, lr=0.01))
>>> 0.0 <= result.dev_accuracy <= 1.0, len(result.module.hooks())
(True, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from skill_lens.prompting.evaluation import check_labels, check_split, evaluate
from skill_lens.model.loading import describe, model_device
from skill_lens.prompting.prompted_model import PromptedModel
from skill_lens.prompting.prompts import Hook, Verbalizer
from skill_lens.prompting.tuning import TuneConfig, check_texts_fit, train, tuning_checkpoint

__all__ = ["BitFit", "Adapter", "HookTuneResult", "tune_hooks", "peft_prompted"]


def _block_prefixes(model) -> list[str]:
    """``blocks.{l}`` (T5: ``encoder_blocks.{l}``) for every probed layer."""
    return [h.rsplit(".mlp.", 1)[0] for h in describe(model).hook_names]  # MoE: .mlp.hook_experts_post


class BitFit(nn.Module):
    """Trainable bias vectors added at each layer's FFN input and output (see the module docstring).

    >>> from skill_lens.model.tiny import tiny_model
    >>> b = BitFit(tiny_model())
    >>> b.bias_in.shape, b.bias_out.shape, [name for name, _ in b.hooks()][:2]
    (torch.Size([2, 32]), torch.Size([2, 32]), ['blocks.0.mlp.hook_in', 'blocks.0.mlp.hook_out'])
    """

    def __init__(self, model):
        super().__init__()
        info = describe(model)
        self.prefixes = _block_prefixes(model)
        self.bias_in = nn.Parameter(torch.zeros(info.n_layers, info.d_model, device=model_device(model)))
        self.bias_out = nn.Parameter(torch.zeros(info.n_layers, info.d_model, device=model_device(model)))

    def hooks(self) -> list[Hook]:
        """``(hook_name, fn)`` pairs adding the biases (pass to ``model.hooks`` or ``fwd_hooks``)."""
        out = []
        for layer, prefix in enumerate(self.prefixes):
            for name, bias in (("mlp.hook_in", self.bias_in), ("mlp.hook_out", self.bias_out)):
                out.append((f"{prefix}.{name}", _add(bias, layer)))
        return out


def _add(bias: Tensor, layer: int):
    def add_bias(act: Tensor, hook) -> Tensor:
        return act + bias[layer].to(act.dtype)
    return add_bias


class Adapter(nn.Module):
    """Bottleneck adapters ``x + up(relu(down(x)))`` after each FFN (``up`` starts at zero).

    >>> from skill_lens.model.tiny import tiny_model
    >>> a = Adapter(tiny_model(), rank=4)
    >>> a.down.shape, a.up.shape, a.up.detach().abs().sum().item()
    (torch.Size([2, 32, 4]), torch.Size([2, 4, 32]), 0.0)
    """

    def __init__(self, model, rank: int = 8, seed: int = 0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"adapter rank must be at least 1, got {rank}")
        info = describe(model)
        self.prefixes = _block_prefixes(model)
        g, device = torch.Generator().manual_seed(seed), model_device(model)  # drawn on the CPU: same on every device
        down = torch.randn(info.n_layers, info.d_model, rank, generator=g) / math.sqrt(info.d_model)
        self.down = nn.Parameter(down.to(device))
        self.up = nn.Parameter(torch.zeros(info.n_layers, rank, info.d_model, device=device))

    def hooks(self) -> list[Hook]:
        """``(hook_name, fn)`` pairs applying the adapters on each ``mlp.hook_out``."""
        return [(f"{p}.mlp.hook_out", self._adapt(layer)) for layer, p in enumerate(self.prefixes)]

    def _adapt(self, layer: int):
        def adapter(act: Tensor, hook) -> Tensor:
            h = torch.relu(act @ self.down[layer].to(act.dtype))
            return act + h @ self.up[layer].to(act.dtype)
        return adapter


def peft_prompted(model, task, module: nn.Module, max_length: int | None = None) -> PromptedModel:
    """The hard-prompt-style model for ``task`` (its template and label words) with ``module``'s hooks on
    every forward (so :func:`~skill_lens.probing.probe.probe`, :func:`~skill_lens.prompting.evaluation.evaluate`
    etc. see the tuned model). ``module`` moves to the model's device, in place: its float32 parameters
    train beside the model.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = peft_prompted(model, task, BitFit(model))
    >>> pm.prompt is None, len(pm.hooks(pm.encode(["good"])))
    (True, 4)
    """
    module.to(model_device(model))
    pm = PromptedModel(model, None, Verbalizer.from_words(model, task.label_words), template=task.hard_prompt,
                       pair_template=task.hard_prompt, max_length=max_length)
    return pm.with_hooks(lambda batch: module.hooks())  # acting anywhere: its forwards run every position


@dataclass
class HookTuneResult:
    module: nn.Module  # holds the best parameters (by dev accuracy)
    dev_accuracy: float
    best_step: int
    history: list[dict] = field(default_factory=list)

    def prompted(self, model, task) -> PromptedModel:
        """The tuned model for ``task`` (see :func:`peft_prompted`)."""
        return peft_prompted(model, task, self.module)


def tune_hooks(model, task, module: nn.Module, config: TuneConfig | None = None, *,
               checkpoint: str | Path | None = None) -> HookTuneResult:
    """Train ``module``'s parameters (used through its ``hooks()``) on ``task``; keep the best dev state.

    ``config`` is a :class:`~skill_lens.prompting.tuning.TuneConfig` (``prompt_length``, ``init`` and
    ``cache_input`` are unused). The loop is prompt tuning's (:func:`skill_lens.prompting.tuning.train`):
    batches depend only on ``(seed, step)``, the learning rate follows ``schedule``. With
    ``checkpoint`` (a file path) progress is saved there and an interrupted run resumes.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> r = tune_hooks(tiny_model(), tiny_task(), BitFit(tiny_model()), TuneConfig(steps=2, eval_every=2))
    >>> r.best_step, len(r.history)
    (2, 2)
    """
    cfg = config or TuneConfig()
    check_split(task.train, "train", need_two_classes=True)
    check_split(task.dev, "dev")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters; nothing to tune.")
    pm = peft_prompted(model, task, module, cfg.max_length)
    for split in task.splits().values():
        check_labels(pm, split)
    check_texts_fit(pm, task)
    ckpt = None
    if checkpoint is not None:
        shapes = {name: list(p.shape) for name, p in module.named_parameters() if p.requires_grad}
        ckpt = tuning_checkpoint(checkpoint, model, task, cfg, module=type(module).__name__, parameters=shapes)
    labels = torch.as_tensor(task.train.labels)

    def step_loss(idx: list[int]) -> Tensor:
        logits = pm.label_logits(pm.encode_split(task.train, idx))
        return nn.functional.cross_entropy(logits.float(), labels[idx].to(logits.device))

    def dev_accuracy() -> float:
        return evaluate(pm, task.dev, cfg.eval_batch_size)["accuracy"]

    state = train(params, step_loss, dev_accuracy, len(task.train), cfg, ckpt, desc=f"tune {type(module).__name__}")
    with torch.no_grad():
        for p, best in zip(params, state.best):
            p.copy_(best)
    return HookTuneResult(module, state.best_dev, state.best_step, state.history)
