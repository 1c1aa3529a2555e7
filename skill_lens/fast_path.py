"""Attention at SDPA speed on a ``TransformerBridge``, in every layer nothing hooks.

TransformerBridge re-implements a decoder's attention step by step (scores, mask, softmax, pattern,
in float32) so that ``hook_attn_scores`` and ``hook_pattern`` fire, whatever attention the Hugging
Face model was set to. skill_lens hooks MLP activations and embeddings, so for it that
re-implementation is pure cost: on SmolLM2 it made attention the larger half of a prompt-tuning
step on long inputs, and a quarter of a forward pass. :func:`use_fast_attention` changes two things:

1. **Unhooked layers run the Hugging Face module.** An attention layer none of whose hook points
   carries a hook runs its original module (through the bridge's q/k/v/o projections, whose own hooks
   still fire). A layer with any hook on it (``run_with_cache``, a pattern hook of yours) runs the
   bridge's re-implementation as before, so every attention hook sees what it always saw. The choice is
   made per layer and per call, so hooks added and removed with ``model.hooks(...)`` just work. After
   ``enable_compatibility_mode()`` (processed weights) every layer re-implements, as the bridge intends.
2. **Grouped-query heads are not copied.** The Hugging Face modules call :func:`sdpa`, which hands
   torch's ``scaled_dot_product_attention`` the key/value heads as they are (``enable_gqa``).
   transformers' own ``"sdpa"`` copies every key/value head once per query head whenever there is a
   padding mask (on CPU there always is one here) and sums the copies again in backward; for a prompt
   step attending to a 400-token stored input that is about 3x the attention's time.

Both change only float rounding (about 1e-6 against the bridge's float32 eager attention).

>>> import torch
>>> from skill_lens.tiny import tiny_model
>>> model = tiny_model("causal")
>>> ids = torch.tensor([[5, 6, 7, 8]])
>>> fast = model.original_model(input_ids=ids).logits
>>> with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", lambda act, hook: act)]):  # layer 0 reconstructs
...     hooked = model.original_model(input_ids=ids).logits
>>> torch.allclose(fast, hooked, atol=1e-5)
True
"""

from __future__ import annotations

import types

import torch
from transformer_lens.hook_points import HookPoint
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["NAME", "sdpa", "use_fast_attention", "reconstructing_layers"]

NAME = "skill_lens_sdpa"  # the attention implementation registered with transformers


def sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
         attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
         is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa`` attention, with grouped key/value heads passed to torch uncopied.

    Anything beyond plain grouped-query attention (a position bias, a paged cache, soft-capping) and
    every model without grouped heads goes to transformers' own ``sdpa_attention_forward``.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    plain = not any(kwargs.get(k) is not None for k in ("position_bias", "cache", "softcap"))
    if groups == 1 or not plain or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = bool(query.shape[2] > 1 and attention_mask is None and is_causal and key.shape[2] == query.shape[2])
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=is_causal,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)

# Bridge components that re-implement attention (the others call their Hugging Face module anyway).
_RECONSTRUCTING = ("PositionEmbeddingsAttentionBridge", "JointQKVAttentionBridge")


def use_fast_attention(bridge) -> None:
    """Make ``bridge`` run attention as described in the module docstring (idempotent; in place)."""
    hf = bridge.original_model
    try:
        hf.set_attn_implementation(NAME)
    except Exception:  # an architecture without SDPA keeps its attention
        return
    for component in hf.modules():
        if type(component).__name__ in _RECONSTRUCTING and "forward" not in component.__dict__:
            points = [m for m in component.modules() if isinstance(m, HookPoint)]
            # object.__setattr__: the bridge forwards attribute writes to the wrapped module.
            object.__setattr__(component, "forward", types.MethodType(_forward(type(component).forward, points),
                                                                      component))


def _forward(reconstruct, points: list[HookPoint]):
    def forward(self, *args, **kwargs):
        if _reconstructs(self, points):
            return reconstruct(self, *args, **kwargs)
        return self.original_component(*args, **kwargs)

    return forward


def _reconstructs(component, points: list[HookPoint]) -> bool:
    """A hook on the layer needs the bridge's attention, and so do processed weights (compatibility mode)."""
    return bool(getattr(component, "compatibility_mode", False)) or any(
        p._forward_hooks or p._forward_pre_hooks or p._backward_hooks or p._backward_pre_hooks for p in points)


def reconstructing_layers(bridge) -> int:
    """How many attention layers would run the bridge's re-implementation now (those with a hook).

    >>> from skill_lens.tiny import tiny_model
    >>> model = tiny_model("causal")
    >>> reconstructing_layers(model)
    0
    >>> with model.hooks(fwd_hooks=[("blocks.1.attn.hook_z", lambda act, hook: act)]):
    ...     reconstructing_layers(model)
    1
    """
    return sum(_reconstructs(c, [m for m in c.modules() if isinstance(m, HookPoint)])
               for c in bridge.original_model.modules() if type(c).__name__ in _RECONSTRUCTING)
