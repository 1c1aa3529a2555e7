"""A ``TransformerBridge`` that pays for hooks only where there are hooks, and attention at SDPA speed.

TransformerBridge wraps every Hugging Face module so that its hook points fire, and re-implements some
of them step by step: attention (scores, mask, softmax, pattern, in float32) so that ``hook_attn_scores``
and ``hook_pattern`` fire whatever attention the model was set to, and normalization so that
``hook_scale`` and ``hook_normalized`` do. skill_lens hooks MLP activations and embeddings, so for it
that is mostly cost: on SmolLM2 the attention re-implementation was the larger half of a prompt-tuning
step on long inputs, and the normalization and projection wrappers another 4-5% of every step.
Three things change that; :func:`use_fast_path` does the first two, :func:`plain_model` the third:

1. **A component nothing hooks runs its Hugging Face module.** An attention, normalization (RMS or
   layer norm) or linear component none of whose hook points carries a hook runs its original module
   (an attention layer through the bridge's q/k/v/o projections, which decide the same way). A component with any
   hook on it runs the bridge's forward as before, so every hook sees what it always saw. The choice
   is made per component and per call, so hooks added and removed with ``model.hooks(...)`` just
   work. After ``enable_compatibility_mode()`` (processed weights) every component takes the bridge's
   path, as the bridge intends.
2. **Grouped-query heads are not copied.** The Hugging Face modules call :func:`sdpa`, which folds
   each group of query heads into the query rows of its key/value head and hands that to torch's
   ``scaled_dot_product_attention``. transformers' own ``"sdpa"`` copies every key/value head once per
   query head whenever there is a padding mask (on CPU there always is one here) and sums the copies
   again in backward; for a prompt step attending to a 400-token stored input that is about 3x the
   attention's time.
3. **Nothing hooked: no bridge at all.** :func:`plain_model` is the Hugging Face model as it was
   before the bridge wrapped it: shallow copies of its containers (model, layers, attention, MLP)
   whose leaves are the bridge's own modules, so it shares every parameter and buffer. While no hook
   point and no bridge component carries a hook it computes what the bridge computes, without the
   bridge's Python work around every component (5-7% of a prompt-tuning step on SmolLM2). skill_lens
   runs every forward that has no hooks on it (prompt tuning, the input pass, evaluation), writing a
   soft prompt into the input embeddings instead of through ``embed.hook_out``.

The first two change only float rounding (about 1e-6 against the bridge's float32 eager attention).
The third changes nothing (see :func:`plain_model`).

>>> import torch
>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model("causal")
>>> ids = torch.tensor([[5, 6, 7, 8]])
>>> fast = model.original_model(input_ids=ids).logits
>>> with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", lambda act, hook: act)]):  # layer 0 reconstructs
...     hooked = model.original_model(input_ids=ids).logits
>>> torch.allclose(fast, hooked, atol=1e-5)
True
"""

from __future__ import annotations

import copy
import operator
import types

import torch
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from skill_lens.model.record import model_record

__all__ = ["NAME", "sdpa", "use_fast_path", "plain_model", "reconstructing_layers"]

NAME = "skill_lens_sdpa"  # the attention implementation registered with transformers


def sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
         attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
         is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa`` attention, with grouped key/value heads passed to torch uncopied: under a
    padding mask each group's query heads become query rows of one key/value head (the same numbers bit
    for bit), otherwise torch's ``enable_gqa``.

    Anything beyond plain grouped-query attention (a position bias, a paged cache, soft-capping) and
    every model without grouped heads goes to transformers' own ``sdpa_attention_forward``.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    plain = not any(kwargs.get(k) is not None for k in ("position_bias", "cache", "softcap"))
    if groups == 1 or not plain or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    batch, heads, n, head_dim = query.shape
    if attention_mask is not None and attention_mask.shape[1] == 1:  # fold each group's heads into the query rows
        query = query.reshape(batch, heads // groups, groups * n, head_dim)
        attention_mask = attention_mask.repeat(1, 1, groups, 1)
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                               dropout_p=dropout, scale=scaling)
        return out.reshape(batch, heads, n, head_dim).transpose(1, 2).contiguous(), None
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = bool(n > 1 and attention_mask is None and is_causal and key.shape[2] == n)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=is_causal,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)

# Bridge components whose forward is hooks around, or a re-implementation of, their Hugging Face module.
_ATTENTION = ("PositionEmbeddingsAttentionBridge", "JointQKVAttentionBridge")
_BYPASSED = (*_ATTENTION, "RMSNormalizationBridge", "NormalizationBridge", "LinearBridge")


def use_fast_path(bridge) -> None:
    """Make ``bridge`` run as described in the module docstring (idempotent; in place)."""
    hf = bridge.original_model
    try:
        hf.set_attn_implementation(NAME)
    except Exception:  # an architecture without SDPA keeps its attention
        pass
    for component in hf.modules():
        kind = type(component).__name__
        if kind in _BYPASSED and "forward" not in component.__dict__:
            points = [m for m in component.modules() if isinstance(m, HookPoint)]
            # object.__setattr__: the bridge forwards attribute writes to the wrapped module.
            object.__setattr__(component, "forward", types.MethodType(
                _forward(type(component).forward, points, projection=kind == "LinearBridge"), component))


def _forward(bridged, points: list[HookPoint], projection: bool):
    def forward(self, *args, **kwargs):
        if _reconstructs(self, points):
            return bridged(self, *args, **kwargs)
        out = self.original_component(*args, **kwargs)
        if projection:  # the bridge's protocol with the MLP around a projection: as if its hooks had run
            object.__setattr__(self, "_suppress_next_hook_in", False)
            object.__setattr__(self, "_fired_hook_out", True)
        return out

    return forward


def _reconstructs(component, points: list[HookPoint]) -> bool:
    """A hook on the component needs the bridge's forward, and so do processed weights (compatibility mode)."""
    return bool(getattr(component, "compatibility_mode", False)) or any(map(_has_hook, points))


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")  # a module's hook dicts


def _has_hook(module: torch.nn.Module) -> bool:
    # _HOOKS spelled out: this runs for every component of every hooked forward
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def plain_model(bridge) -> torch.nn.Module | None:
    """``bridge``'s Hugging Face model without the bridge's wrappers, or ``None`` while anything is hooked.

    It shares every parameter, buffer and leaf module with the bridge, and torch hooks on Hugging Face
    modules run in it as they do under the bridge. Its numbers are the bridge's bit for bit wherever the
    bridge runs the Hugging Face module (attention, normalization and projections, point 1 above; blocks
    and MLPs call theirs), which is every component of the Llama and GPT-2 families.

    ``None`` while a hook point or a bridge component carries a hook, or in compatibility mode: then
    only the bridge computes what the caller asked for. The plain model is kept in the bridge's record
    (:func:`~skill_lens.model.record.model_record`) and rebuilt when a module inside it was replaced; its
    copies follow the bridge's train/eval mode.

    >>> import torch
    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model("causal")
    >>> plain = plain_model(model)
    >>> ids = torch.tensor([[5, 6, 7, 8]])
    >>> torch.equal(plain(input_ids=ids).logits, model.original_model(input_ids=ids).logits)
    True
    >>> {id(p) for p in plain.parameters()} <= {id(p) for p in model.parameters()}  # shared, not copied
    True
    >>> with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", lambda act, hook: act)]):
    ...     plain_model(model) is None
    True
    """
    kept = model_record(bridge).plain
    if kept is None or not kept.current():
        kept = model_record(bridge).plain = _Plain(bridge.original_model)
    return None if kept.hooked() else kept.model


class _Plain:
    """A bridged model with each bridge component replaced by its original module (``model``), and the
    checks :func:`plain_model` runs before each use, kept cheap as they run on every forward."""

    def __init__(self, hf: torch.nn.Module):
        memo, self.bridges, self.copies = {}, [], []

        def unwrap(module):  # each module once (memo), however many parents share it
            if id(module) in memo:
                return memo[id(module)]
            if isinstance(module, GeneralizedComponent):
                self.bridges.append(module)
                memo[id(module)] = unwrap(module._modules["_original_component"])
                return memo[id(module)]
            kids = {k: None if v is None else unwrap(v) for k, v in module._modules.items()}
            memo[id(module)] = module  # no bridge below: the module itself
            if any(kids[k] is not v for k, v in module._modules.items()):
                memo[id(module)] = copy.copy(module)
                memo[id(module)].__dict__["_modules"] = kids
                self.copies.append((module, memo[id(module)]))
            return memo[id(module)]

        self.model = unwrap(hf)
        # What a copy does not follow by itself: the children of the bridges and of the copied containers.
        self.parents = [*self.bridges, *(original for original, _ in self.copies)]
        self.children = [dict(p._modules) for p in self.parents]
        points = {id(m): m for b in self.bridges for m in b.modules() if isinstance(m, HookPoint)}
        self.hooks = [getattr(m, d) for m in (*self.bridges, *points.values()) for d in _HOOKS]
        # A block wires hooks of its own on its first forward, which only feed its hook points.
        self.own = [b.__dict__["_capture_hook_handles"] for b in self.bridges
                    if "_capture_hook_handles" in b.__dict__]

    def current(self) -> bool:
        """No module inside was replaced since; the copies now share their originals' train/eval mode."""
        if list(map(operator.attrgetter("_modules"), self.parents)) != self.children:
            return False
        for original, plain in self.copies:
            plain.training = original.training
        return True

    def hooked(self) -> bool:
        """A hook or processed weights (compatibility mode) that only the bridge's forward honours."""
        return (sum(map(len, self.hooks)) > sum(map(len, self.own))
                or any(getattr(b, "compatibility_mode", False) for b in self.bridges))


def reconstructing_layers(bridge) -> int:
    """How many attention layers would run the bridge's re-implementation now (those with a hook).

    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model("causal")
    >>> reconstructing_layers(model)
    0
    >>> with model.hooks(fwd_hooks=[("blocks.1.attn.hook_z", lambda act, hook: act)]):
    ...     reconstructing_layers(model)
    1
    """
    return sum(_reconstructs(c, [m for m in c.modules() if isinstance(m, HookPoint)])
               for c in bridge.original_model.modules() if type(c).__name__ in _ATTENTION)
