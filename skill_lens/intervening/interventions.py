"""Interventions on FFN neurons as hooks: noise, zero, mean, constant and scale, plus random controls.

Every factory returns a list of ``(hook_name, fn)`` pairs with ``fn(act, hook)`` on the FFN
activation hooks ``describe(model).hook_names[l]`` (``[batch, seq, d_mlp]``; a mixture-of-experts layer's
neurons sit at its experts' hook and its shared expert's, and an expert's neuron changes only where the
router sends the token to that expert, as the model runs it only there). The pairs work with
``model.run_with_hooks(..., fwd_hooks=...)``, ``model.hooks(fwd_hooks=...)``, :func:`intervene`,
``PromptedModel.label_logits(batch, fwd_hooks=...)``, ``PromptedModel.with_hooks(...)`` and
``evaluation.evaluate(pm, split, fwd_hooks=...)``.
Only the chosen neurons change (an index assignment on the neuron dimension); an empty set gives no
hooks at all, so it is exactly the identity.

Where along the sequence a hook acts is a :class:`Positions`: ``"all"``, explicit indices, or a role
read from a :class:`~skill_lens.prompting.batches.Batch` (``"prompt"``, ``"input"``, ``"predict"``). Role
positions differ per batch, so their hooks are built per batch: pass ``batch=...`` to a factory, or
add a ``make_hooks(batch)`` function to a prompted model with ``pm.with_hooks(make_hooks)``
(:meth:`~skill_lens.prompting.prompted_model.PromptedModel.with_hooks`; ``suppression.evaluate_with`` does this).
Every factory defaults to ``positions="all"`` (no batch needed); ``positions``, ``batch`` and
``layers`` (and ``gaussian_noise``'s ``seed`` and ``per``, ``mean_ablate``'s ``per_position``) are
keyword-only, so a call reads the same whichever factory it is.

>>> import torch
>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model()
>>> mask = torch.zeros(2, 64, dtype=torch.bool); mask[1, :5] = True
>>> tokens = torch.tensor([[1, 5, 6, 7]])
>>> with intervene(model, zero_ablate(model, mask)):
...     ablated = model(tokens)
>>> bool((ablated != model(tokens)).any())
True
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from skill_lens.model.anatomy import by_segment
from skill_lens.model.loading import describe, model_device
from skill_lens.probing.neurons import as_neuron_set
from skill_lens.prompting.batches import Batch
from skill_lens.prompting.prompts import Hook

__all__ = ["zero_ablate", "mean_ablate", "gaussian_noise", "constant", "scale", "intervene", "random_like",
           "neuron_mask", "Positions", "InterventionError", "Hook"]

ROLES = ("all", "prompt", "input", "predict")
PositionsLike = Union["Positions", str, Sequence[int]]


class InterventionError(ValueError):
    """An intervention does not fit the model, the neurons or the positions asked for."""


@dataclass(frozen=True)
class Positions:
    """Which sequence positions a hook changes: a role in ``ROLES`` or explicit ``indices``.

    >>> Positions.of("prompt"), Positions.of([0, -1]).indices
    (Positions(role='prompt', indices=()), (0, -1))
    >>> Positions.of("prompt").needs_batch
    True
    """

    role: str = "all"
    indices: tuple[int, ...] = ()

    @classmethod
    def of(cls, spec: PositionsLike) -> "Positions":
        """A :class:`Positions` from a role name, a sequence of indices (or their text, ``"0,1,-1"``), or a
        :class:`Positions`.

        >>> Positions.of("0, -1").indices
        (0, -1)
        """
        if isinstance(spec, Positions):
            return spec
        if isinstance(spec, str) and spec.replace(",", "").replace("-", "").replace(" ", "").isdigit():
            try:
                spec = [int(x) for x in spec.split(",") if x.strip()]
            except ValueError:
                raise InterventionError(f"cannot read positions {spec!r}; write indices like 0,1,-1 or one of "
                                        f"{ROLES}.") from None
        if isinstance(spec, str):
            if spec not in ROLES:
                raise InterventionError(f"unknown positions {spec!r}; use one of {ROLES} or a list of indices.")
            return cls(spec)
        idx = tuple(int(i) for i in spec)
        if not idx:
            raise InterventionError("explicit positions are empty; pass at least one index or 'all'.")
        return cls("indices", idx)

    @property
    def needs_batch(self) -> bool:
        return self.role in ("prompt", "input", "predict")

    def mask(self, batch_size: int, seq: int, batch: Batch | None = None) -> Bool[Tensor, "batch seq"]:
        """Boolean ``[batch_size, seq]`` of the selected positions (roles read them from ``batch``).

        >>> Positions.of([1, -1]).mask(1, 4).tolist()
        [[False, True, False, True]]
        """
        if self.role == "all":
            return torch.ones(batch_size, seq, dtype=torch.bool)
        if self.role == "indices":
            bad = [i for i in self.indices if not -seq <= i < seq]
            if bad:
                raise InterventionError(f"positions {bad} are beyond the sequence of length {seq}; "
                                        f"use indices in [-{seq}, {seq}).")
            out = torch.zeros(batch_size, seq, dtype=torch.bool)
            out[:, list(self.indices)] = True
            return out
        if batch is None:
            raise InterventionError(f"positions {self.role!r} depend on the batch; build the hooks per batch "
                                    "(pass batch=..., or add them with pm.with_hooks(make_hooks)).")
        if batch.input_ids.shape != (batch_size, seq):
            raise InterventionError(f"the activation is [{batch_size}, {seq}] but the hooks were built for a batch "
                                    f"of shape {list(batch.input_ids.shape)}; build hooks for this batch "
                                    "(pm.with_hooks(make_hooks, prompt_only=True) builds them for the part that runs).")
        out = torch.zeros(batch_size, seq, dtype=torch.bool, device=batch.input_ids.device)
        if self.role == "prompt":
            if batch.prompt_slice.stop - batch.prompt_slice.start == 0:
                raise InterventionError("positions 'prompt' selects nothing: this batch has no soft prompt "
                                        "(a hard prompt); use 'predict' or 'input'.")
            out[:, batch.prompt_slice] = True
        elif self.role == "input":
            out |= batch.input_mask
        else:  # predict
            out[torch.arange(batch_size, device=out.device), batch.predict_pos] = True
        return out


def neuron_mask(model, neurons, layers: Sequence[int] | range | None = None) -> Bool[Tensor, "layer d_mlp"]:
    """The ``[n_layers, d_mlp]`` boolean mask of ``neurons`` (anything :func:`~skill_lens.probing.neurons.as_neuron_set` accepts: a
    ``NeuronSet``, a bool mask, ``(layer, index)`` pairs, labels), checked against ``model`` and restricted to ``layers``.

    >>> from skill_lens.model.tiny import tiny_model
    >>> m = torch.ones(2, 64, dtype=torch.bool)
    >>> neuron_mask(tiny_model(), m, layers=[1]).sum(1).tolist()
    [0, 64]
    """
    info = describe(model)
    try:
        mask = as_neuron_set(neurons, info.n_layers, info.d_mlp, info.layout).mask
    except ValueError as e:
        raise InterventionError(f"{info.name}: {e}") from e
    if layers is not None:
        keep = torch.zeros(info.n_layers, dtype=torch.bool)
        bad = [l for l in layers if not 0 <= l < info.n_layers]
        if bad:
            raise InterventionError(f"layers {bad} are not in 0..{info.n_layers - 1} of {info.name}.")
        keep[list(layers)] = True
        mask = mask & keep[:, None]
    return mask


def _hooks(model, neurons, positions, batch, layers, change: Callable[..., Tensor]) -> list[Hook]:
    """One hook per layer with chosen neurons ``idx``: ``act[..., idx] = change(layer, idx, old [B,S,k], where [B,S])``
    at the selected positions."""
    mask, pos = neuron_mask(model, neurons, layers), Positions.of(positions)
    info = describe(model)
    if batch is not None:
        pos.mask(batch.size, batch.input_ids.shape[1], batch)  # validate now, before any forward pass

    def make(layer: int, idx: Tensor, local: Tensor) -> Callable:  # neurons idx of the layer at local of the hook
        def hook(act: Tensor, hook) -> Tensor:
            nonlocal idx
            idx = idx.to(act.device)  # where this layer runs (a device map may put layers on several devices)
            where = pos.mask(act.shape[0], act.shape[1], batch).to(act.device)[..., None]
            old = act[..., local]
            new = torch.where(where, change(layer, idx, old, where[..., 0]).to(act.dtype), old)
            act = act.clone() if act.requires_grad else act
            act[..., local] = new
            return act
        return hook

    device = model_device(model)
    return [(seg.hook, make(l, idx[at], local)) for l, idx in enumerate(_per_layer(mask)) if idx.numel()
            for seg, local, at in by_segment(info.layers[l].segments, idx.to(device))]


def _per_layer(mask: Tensor) -> list[Tensor]:
    return [row.nonzero()[:, 0] for row in mask]


def zero_ablate(model, neurons, *, positions: PositionsLike = "all", batch: Batch | None = None,
                layers=None) -> list[Hook]:
    """Set the chosen neurons to 0 at ``positions``.

    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model(); mask = torch.zeros(2, 64, dtype=torch.bool); mask[0, 3] = True
    >>> [name for name, _ in zero_ablate(model, mask)]
    ['blocks.0.mlp.hook_post']
    """
    return _hooks(model, neurons, positions, batch, layers, lambda l, idx, old, where: torch.zeros_like(old))


def constant(model, neurons, value: float, *, positions: PositionsLike = "all", batch: Batch | None = None,
             layers=None) -> list[Hook]:
    """Set the chosen neurons to ``value`` at ``positions``.

    >>> from skill_lens.model.tiny import tiny_model
    >>> len(constant(tiny_model(), torch.ones(2, 64, dtype=torch.bool), 2.0))
    2
    """
    return _hooks(model, neurons, positions, batch, layers, lambda l, idx, old, where: torch.full_like(old, value))


def scale(model, neurons, factor: float, *, positions: PositionsLike = "all", batch: Batch | None = None,
          layers=None) -> list[Hook]:
    """Multiply the chosen neurons by ``factor`` at ``positions`` (``factor=0`` is zero ablation).

    >>> from skill_lens.model.tiny import tiny_model
    >>> scale(tiny_model(), torch.zeros(2, 64, dtype=torch.bool), 0.5)  # empty set: no hooks
    []
    """
    return _hooks(model, neurons, positions, batch, layers, lambda l, idx, old, where: old * factor)


def mean_ablate(model, neurons, baseline: Float[Tensor, "layer pos d_mlp"] | Float[Tensor, "layer d_mlp"],
                *, per_position: bool = True, positions: PositionsLike = "all", batch: Batch | None = None,
                layers=None) -> list[Hook]:
    """Set the chosen neurons to their ``baseline`` (a probe's train means, ``ProbeResult.baseline``).

    A ``[L, P, d_mlp]`` baseline with ``per_position=True`` writes position ``p`` of the prompt with
    ``baseline[:, p]`` (pass ``positions="prompt"`` and the ``batch``; any positions when ``P == 1``); with
    ``per_position=False`` (or a ``[L, d_mlp]`` baseline) the mean over positions is written at
    ``positions`` (``"all"`` by default, as for every factory).

    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model(); base = torch.zeros(2, 3, 64)
    >>> len(mean_ablate(model, torch.ones(2, 64, dtype=torch.bool), base, per_position=False, positions="all"))
    2
    """
    info = describe(model)
    base = torch.as_tensor(baseline).to(model_device(model), torch.float32)  # cast to the activations' in the hook
    if base.dim() not in (2, 3) or base.shape[0] != info.n_layers or base.shape[-1] != info.d_mlp:
        raise InterventionError(f"baseline is {list(base.shape)} but {info.name} needs [{info.n_layers}, P, "
                                f"{info.d_mlp}] or [{info.n_layers}, {info.d_mlp}]; use this model's probe.")
    if base.dim() == 3 and (not per_position or base.shape[1] == 1):
        base = base.mean(1)
    pos = Positions.of(positions)
    if base.dim() == 3 and pos.role != "prompt":
        raise InterventionError(f"a per-position baseline ({base.shape[1]} positions) fits positions 'prompt' only, "
                                f"not {pos.role!r}; pass positions='prompt' (and batch=...) to write each prompt "
                                "position's mean, or per_position=False to write the mean over positions.")
    if base.dim() == 3 and batch is not None and batch.prompt_slice.stop - batch.prompt_slice.start != base.shape[1]:
        raise InterventionError(f"the baseline has {base.shape[1]} prompt positions but the batch's prompt has "
                                f"{batch.prompt_slice.stop - batch.prompt_slice.start}; use the probe of this prompt.")

    def to_baseline(layer: int, idx: Tensor, old: Tensor, where: Tensor) -> Tensor:
        if base.dim() == 2:
            return base[layer, idx.to(base.device)].to(old.device).expand_as(old)
        out = old.clone()
        counts = where.sum(1)
        if not bool((counts == base.shape[1]).all()):
            raise InterventionError(f"per-position baseline has {base.shape[1]} positions but the prompt has "
                                    f"{int(counts.max())}; use the probe of this prompt.")
        out[where] = base[layer][:, idx.to(base.device)].to(old.device, old.dtype).repeat(old.shape[0], 1)
        return out

    return _hooks(model, neurons, pos, batch, layers, to_baseline)


def gaussian_noise(model, neurons, std: float = 1.0, *, seed: int | torch.Generator = 0, per: str = "token",
                   positions: PositionsLike = "all", batch: Batch | None = None, layers=None) -> list[Hook]:
    """Add ``N(0, std^2)`` noise to the chosen neurons at ``positions``.

    ``per="token"`` draws fresh noise for every token; ``per="example"`` one vector per example shared
    by all its selected positions (as the original skill-neuron code did). ``seed`` may be a
    ``torch.Generator``, which then keeps advancing across calls (pass the same one for every batch).

    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model(); mask = torch.ones(2, 64, dtype=torch.bool)
    >>> len(gaussian_noise(model, mask, std=0.5, seed=1, per="example"))
    2
    """
    if per not in ("token", "example"):
        raise InterventionError(f"per must be 'token' or 'example', got {per!r}")
    if not std >= 0:
        raise InterventionError(f"std must be >= 0, got {std}")
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))

    def noisy(layer: int, idx: Tensor, old: Tensor, where: Tensor) -> Tensor:
        if per == "example":  # drawn on the CPU from gen: the same noise on every device
            noise = torch.randn(old.shape[0], 1, old.shape[2], generator=gen)
        else:  # one draw per selected token in (example, position) order, whatever else the sequence
            noise = torch.zeros(old.shape, dtype=torch.float32)  # holds: cached inputs draw the same numbers
            noise[where.cpu()] = torch.randn(int(where.sum()), old.shape[2], generator=gen)
        return old + (noise * std).to(old.device, old.dtype)

    return _hooks(model, neurons, positions, batch, layers, noisy)


@contextlib.contextmanager
def intervene(model, hooks: Sequence[Hook]) -> Iterator[object]:
    """Apply ``hooks`` to ``model`` inside the block; they are removed on exit, also on exceptions.

    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model()
    >>> with intervene(model, zero_ablate(model, torch.ones(2, 64, dtype=torch.bool))):
    ...     len(model.hook_dict["blocks.0.mlp.hook_post"].fwd_hooks)
    1
    >>> len(model.hook_dict["blocks.0.mlp.hook_post"].fwd_hooks)
    0

    A hook that returns another shape than the activation it received is refused (TransformerLens would
    broadcast it):

    >>> bad = [("blocks.0.mlp.hook_post", lambda act, hook: act[:, :1])]
    >>> with intervene(model, bad):
    ...     model(torch.tensor([[1, 2, 3]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.intervening.interventions.InterventionError: the hook on blocks.0.mlp.hook_post returned a tensor of shape [1, 1, 64] for an activation of shape [1, 3, 64]; ...
    """
    with model.hooks(fwd_hooks=[(name, _same_shape(name, fn)) for name, fn in hooks], reset_hooks_end=True) as m:
        yield m


def _same_shape(name, fn):
    """``fn``, refusing a result of another shape than the activation it got (TransformerLens would broadcast
    it silently into wrong numbers)."""

    def hook(act, hook):
        out = fn(act, hook)
        if isinstance(out, Tensor) and isinstance(act, Tensor) and out.shape != act.shape:
            raise InterventionError(f"the hook on {name} returned a tensor of shape {list(out.shape)} for an "
                                    f"activation of shape {list(act.shape)}; a hook returns the activation's shape "
                                    "(or None to keep it).")
        return out

    return hook


def random_like(neurons, seed: int = 0, n_draws: int = 1, disjoint: bool = True) -> list:
    """``n_draws`` random neuron sets with the same count per layer as ``neurons`` (seeded, reproducible),
    disjoint from ``neurons`` when ``disjoint``. Returns the input's type (``NeuronSet`` or mask).

    >>> m = torch.zeros(2, 8, dtype=torch.bool); m[0, :2] = True; m[1, 5] = True
    >>> draws = random_like(m, seed=0, n_draws=2)
    >>> [d.sum(1).tolist() for d in draws], any(bool((d & m).any()) for d in draws)
    ([[2, 1], [2, 1]], False)
    """
    try:
        mask = as_neuron_set(neurons).mask
    except ValueError as e:
        raise InterventionError(f"random_like needs a NeuronSet or a [n_layers, d_mlp] bool mask: {e}") from e
    if n_draws < 1:
        raise InterventionError(f"n_draws must be at least 1, got {n_draws}")
    counts, N = mask.sum(1), mask.shape[1]
    if disjoint and bool((2 * counts > N).any()):
        l = int((2 * counts > N).nonzero()[0])
        raise InterventionError(f"layer {l} has {int(counts[l])} of {N} neurons chosen: too few others for a "
                                "disjoint random set of the same size; pass disjoint=False.")
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(n_draws):
        draw = torch.zeros_like(mask)
        for l, k in enumerate(counts.tolist()):
            pool = (~mask[l]).nonzero()[:, 0] if disjoint else torch.arange(N)
            draw[l, pool[torch.randperm(len(pool), generator=gen)[:k]]] = True
        out.append(_like(neurons, draw))
    return out


def _like(neurons, mask: Tensor):
    """``mask`` as the type of ``neurons`` (a ``NeuronSet`` when given one)."""
    if not hasattr(neurons, "mask"):
        return mask
    if hasattr(type(neurons), "from_mask"):
        return type(neurons).from_mask(mask)
    return type(neurons)(mask)
