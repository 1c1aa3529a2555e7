"""Mixture-of-experts layers made hookable: every expert's neurons at one hook point.

transformers keeps a layer's experts as stacked 3-D weights and runs them inside one module, so no
hook point sits between an expert's activation and its down projection, and the bridge's
``blocks.{l}.mlp.hook_post`` of an MoE layer is the layer's output (``d_model`` wide), not its neurons.
:func:`attach` (run on every bridge skill_lens makes) adds three hook points to each MoE layer's MLP
component, so that the rest of skill_lens treats an MoE layer like any other (see
:mod:`skill_lens.model.anatomy` for what a neuron of an MoE layer is):

* ``blocks.{l}.mlp.hook_experts_post`` ``[batch, seq, experts * width]``: the routed experts' activations,
  expert after expert: the input of each expert's down projection where the router sends the token,
  0 where it does not (writing there changes nothing: that expert does not run there);
* ``blocks.{l}.mlp.hook_shared_post`` ``[batch, seq, shared]``: the shared expert's activations, where
  there is one (the bridge's own ``shared_expert.hook_post`` sees them flattened to ``[tokens, shared]``);
* ``blocks.{l}.mlp.hook_routing`` ``[batch, seq, experts]``: each expert's routing weight (0 where not
  routed), to read (changing it changes nothing).

While any of them carries a hook, the layer's experts run skill_lens' forward: expert by expert over the
tokens routed to it, as transformers' eager implementation does, with the activations gathered for the
hook in between (that holds a ``[tokens, experts * width]`` tensor). So do pruned experts
(:func:`mark_pruned`: transformers' grouped kernels want widths aligned to 16 bytes, and its eager forward
ignores the biases pruning folds into). Otherwise they run the model's own configured implementation,
untouched.

>>> import torch
>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model("mixtral")
>>> with torch.no_grad(), model.hooks(fwd_hooks=[("blocks.0.mlp.hook_experts_post", lambda a, hook: print(a.shape))]):
...     _ = model(torch.tensor([[1, 5, 6]]))
torch.Size([1, 3, 96])
"""

from __future__ import annotations

import types

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from skill_lens.model.record import model_record
from skill_lens.model.anatomy import (EXPERTS_HOOK, ROUTING_HOOK, SHARED_HOOK, experts_module, ffn_layers, ffn_stack,
                                      shared_mlps, unwrap)

__all__ = ["attach", "moe_layers", "mark_pruned"]

_ATTACHED, _PRUNED = "_skill_lens_experts", "_skill_lens_pruned"


def moe_layers(model) -> list[int]:
    """The layers whose FFN is a mixture of experts (hookable after :func:`attach`).

    >>> from skill_lens.model.tiny import tiny_model
    >>> moe_layers(tiny_model("mixtral")), moe_layers(tiny_model("causal"))
    ([0, 1], [])
    """
    return [layer.layer for layer in ffn_layers(model) if layer.kind == "moe"]


def attach(bridge) -> None:
    """Add the hook points of the module docstring to every MoE layer of ``bridge`` (in place; idempotent;
    a model without experts is left as it is). Every bridge skill_lens makes has them already.

    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model("qwen2_moe"); attach(model)
    >>> sorted(h for h in model.hook_dict if h.startswith("blocks.0.mlp.hook_") and "post" in h)
    ['blocks.0.mlp.hook_experts_post', 'blocks.0.mlp.hook_post', 'blocks.0.mlp.hook_shared_post']
    """
    if model_record(bridge).experts_attached:
        return
    stack = ffn_stack(bridge)
    try:
        layers = moe_layers(bridge)
    except ValueError:  # no FFN to read: describe() names the problem when asked
        layers = []
    for l in layers:
        mlp = getattr(bridge, stack)[l].mlp
        state = _Layer()
        for name in (EXPERTS_HOOK, SHARED_HOOK, ROUTING_HOOK):
            setattr(mlp, name, HookPoint())  # a component registers a HookPoint set on it
        state.experts, state.shared, state.routing = (getattr(mlp, n) for n in (EXPERTS_HOOK, SHARED_HOOK, ROUTING_HOOK))
        unwrap(mlp).register_forward_pre_hook(state.record, with_kwargs=True)
        experts = experts_module(mlp)
        experts.__dict__[_ATTACHED] = state
        experts.forward = types.MethodType(_forward, experts)  # the instance's, before its class's dispatch
        for sub in shared_mlps(mlp):
            unwrap(sub.out).register_forward_pre_hook(state.shared_input)
    if layers:
        # TransformerBridge builds its hook registry once; this is the re-scan it runs itself after
        # registering aliases, picking up the hook points just added to the components.
        bridge._scan_existing_hooks(bridge, "")
    model_record(bridge).experts_attached = True


class _Layer:
    """One MoE layer's hook points and the ``[batch, seq]`` shape of its current input (experts see tokens)."""

    experts: HookPoint
    shared: HookPoint
    routing: HookPoint
    shape: tuple[int, ...] = ()

    def record(self, module, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        if isinstance(x, Tensor):
            self.shape = tuple(x.shape[:-1])

    def as_positions(self, t: Tensor) -> Tensor:
        """``[tokens, n]`` as ``[batch, seq, n]`` (``[1, tokens, n]`` if the recorded shape does not fit)."""
        n = 1
        for s in self.shape:
            n *= s
        return t.reshape(*self.shape, t.shape[-1]) if self.shape and n == t.shape[0] else t.reshape(1, -1, t.shape[-1])

    def shared_input(self, module, args):
        if not _hooked(self.shared):
            return None
        x = args[0]
        return (self.shared(self.as_positions(x.reshape(-1, x.shape[-1]))).reshape(x.shape), *args[1:])


def mark_pruned(experts: torch.nn.Module) -> None:
    """Make an experts module (transformers' stacked experts) run skill_lens' forward, hooked or not.

    >>> from skill_lens.model.tiny import tiny_hf
    >>> experts = tiny_hf("mixtral").model.layers[0].mlp.experts; mark_pruned(experts)
    >>> experts.__dict__[_PRUNED]
    True
    """
    experts.__dict__[_PRUNED] = True


def _hooked(point: HookPoint) -> bool:
    return bool(point._forward_hooks or point._forward_pre_hooks or point._backward_hooks)


def _forward(self, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor) -> Tensor:
    """The experts' forward: the model's own implementation, or :func:`_hooked_forward` when needed."""
    state = self.__dict__[_ATTACHED]
    if _hooked(state.experts) or _hooked(state.routing) or self.__dict__.get(_PRUNED):
        return _hooked_forward(self, state, hidden_states, top_k_index, top_k_weights)
    return type(self).forward(self, hidden_states, top_k_index, top_k_weights)


def _linear(x: Tensor, w: Tensor, b: Tensor | None, transposed: bool) -> Tensor:
    y = x @ w if transposed else torch.nn.functional.linear(x, w)
    return y if b is None else y + b


def _hooked_forward(self, state: _Layer, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor) -> Tensor:
    """Expert by expert, as transformers' eager experts; the activations pass ``state.experts`` on the way."""
    n_experts, t = self.down_proj.shape[0], self.is_transposed
    tokens = hidden_states.shape[0]
    inp = self.gate_up_proj if self.has_gate else self.up_proj
    in_bias = (self.gate_up_proj_bias if self.has_gate else self.up_proj_bias) if self.has_bias else None
    if _hooked(state.routing):
        weights = torch.zeros(tokens, n_experts, dtype=top_k_weights.dtype, device=top_k_weights.device)
        valid = top_k_index < n_experts  # expert-parallel sentinels route nowhere here
        weights.scatter_(1, top_k_index.clamp(max=n_experts - 1).long(), top_k_weights * valid)
        state.routing(state.as_positions(weights))
    routed = [(e, *torch.where(top_k_index == e)) for e in range(n_experts)]
    routed = [(e, tok, slot) for e, tok, slot in routed if len(tok)]
    width = self.down_proj.shape[1] if t else self.down_proj.shape[2]
    acts = hidden_states.new_zeros(tokens, n_experts, width)
    for e, tok, _ in routed:
        proj = _linear(hidden_states[tok], inp[e], None if in_bias is None else in_bias[e], t)
        acts[tok, e] = (self._apply_gate(proj) if self.has_gate else self.act_fn(proj)).to(acts.dtype)
    if _hooked(state.experts):
        acts = state.experts(state.as_positions(acts.reshape(tokens, -1))).reshape(tokens, n_experts, width)
    out = torch.zeros_like(hidden_states)
    for e, tok, slot in routed:
        y = _linear(acts[tok, e], self.down_proj[e], self.down_proj_bias[e] if self.has_bias else None, t)
        out.index_add_(0, tok, (y * top_k_weights[tok, slot, None]).to(out.dtype))
    return out
