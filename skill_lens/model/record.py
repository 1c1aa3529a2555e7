"""What skill_lens keeps about a loaded model: one :class:`ModelRecord`, in one place.

A ``TransformerBridge`` carries a few facts skill_lens learns once and reads on every call: the name it
was loaded under, whether its tokenizer added BOS before the bridge made it always do so, its
:class:`~skill_lens.model.loading.ModelInfo` and weights fingerprint, the plain Hugging Face model of
:func:`~skill_lens.model.fast_path.plain_model`, and what a pruned model was pruned from. They all live
in one record held by one attribute of the bridge (``model_record(model)``), so a copy of the bridge
(``copy.deepcopy``) keeps them and they go when the bridge goes. A tokenizer that a bridge changed gets
a record too, holding only ``tokenizer_adds_bos``, for the next bridge made with it.

>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model()
>>> model_record(model).name, model_record(model).tokenizer_adds_bos
('tiny-causal', False)
>>> model_record(model) is model_record(model)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: loading imports this module
    from skill_lens.model.loading import ModelInfo

__all__ = ["ModelRecord", "model_record"]

ATTRIBUTE = "_skill_lens"  # the one attribute skill_lens sets on a bridge (or a tokenizer)


@dataclass
class ModelRecord:
    """Everything skill_lens keeps about one bridge; each field is written by one module.

    >>> ModelRecord().info is None
    True
    """

    name: str | None = None  # the name it was loaded under (model.loading.bridge_from_hf)
    tokenizer_adds_bos: bool | None = None  # the tokenizer's own habit, before the bridge (bridge_from_hf)
    info: ModelInfo | None = None  # describe(model), computed once (model.loading)
    fingerprint: str | None = None  # fingerprint(model), computed once (model.fingerprint)
    plain: Any = None  # the plain Hugging Face model and its checks (model.fast_path)
    pruning: Any = None  # PruningInfo of a pruned model (intervening.pruning)
    hf_keys: frozenset[str] | None = None  # a pruned model's own state-dict keys (intervening.pruning)
    experts_attached: bool = False  # the MoE hook points were added (model.experts.attach)
    placement: Any = None  # the Placement it was loaded with (model.loading.load_model)


def model_record(obj) -> ModelRecord:
    """The :class:`ModelRecord` of ``obj`` (a bridge, or a tokenizer), made empty on first use.

    >>> class Bridge: pass
    >>> b = Bridge()
    >>> model_record(b).fingerprint = "abc"
    >>> model_record(b).fingerprint, vars(b) == {ATTRIBUTE: model_record(b)}
    ('abc', True)
    """
    kept = obj.__dict__.get(ATTRIBUTE)
    if kept is None:
        kept = obj.__dict__[ATTRIBUTE] = ModelRecord()  # __dict__: the bridge forwards attribute writes
    return kept
