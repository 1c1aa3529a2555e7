"""What a neuron reads: the tokens whose embeddings it weighs most, and the tokens it fires on.

:func:`word_selectivity` (the neuron's input weights against the token embeddings) and
:func:`top_activating_tokens` (streamed mean activation per input token over a split).
"""

from __future__ import annotations


import torch
from torch import Tensor

from skill_lens.base.progress import progress
from skill_lens.model.anatomy import by_segment, input_weights
from skill_lens.model.loading import describe
from skill_lens.prompting.prompted_model import PromptedModel
from skill_lens.studies.tables import AnalysisError, TokenTable

__all__ = ["word_selectivity", "top_activating_tokens"]


def _input_weight(model, layer: int, projection: str) -> Tensor:
    """``[d_mlp, d_model]``: each neuron's input weight vector (read from the model: model.anatomy)."""
    info = describe(model)
    if not 0 <= layer < info.n_layers:
        raise AnalysisError(f"layer {layer} is not in 0..{info.n_layers - 1} of {info.name}")
    role = {"auto": "auto", "gate": "gate", "up": "in", "fc": "in", "in": "in"}.get(projection)
    if projection == "fc" and info.layers[layer].gated:  # a gated FFN has two input projections
        raise AnalysisError(f"found no 'fc' FFN input projection for layer {layer} of {info.name}: it is gated; "
                            "use 'gate' or 'up'")
    if role is None:
        raise AnalysisError(f"projection is 'auto', 'gate' or 'up' (gated MLPs) or 'fc', not {projection!r}")
    try:
        return input_weights(model, layer, role)
    except ValueError as e:
        raise AnalysisError(f"found no {projection!r} FFN input projection for layer {layer} of {info.name}: {e}")


def word_selectivity(model, layer: int, neuron: int, k: int = 10, projection: str = "auto") -> TokenTable:
    """Vocabulary tokens whose input embeddings have the highest / lowest cosine similarity with the
    neuron's input weight vector (its row of the FFN's first projection).

    ``projection="auto"``: for gated MLPs (Llama, SmolLM2) the *gate* projection, whose SiLU decides
    whether the neuron fires (``"up"`` gives the linear branch); GPT-2 ``c_fc`` (Conv1D, a column),
    RoBERTa ``intermediate.dense``, T5 ``wi`` (``wi_0`` for gated T5). The residual stream is
    normalised before the FFN, so this reads the embedding direction, not its scale.

    >>> from skill_lens.model.tiny import tiny_model, VOCAB
    >>> model = tiny_model()
    >>> w = model.original_model.model.layers[0].mlp.gate_proj.weight
    >>> with torch.no_grad(): w[5] = model.original_model.get_input_embeddings().weight[VOCAB.index("superb")]
    >>> word_selectivity(model, 0, 5, k=1).top[0]["token"]
    'superb'
    """
    info = describe(model)
    if not 0 <= neuron < info.d_mlp:
        raise AnalysisError(f"neuron {neuron} is not in 0..{info.d_mlp - 1} of {info.name}")
    w = _input_weight(model, layer, projection)[neuron]
    emb = model.original_model.get_input_embeddings().weight.detach().float()
    sims = torch.nn.functional.cosine_similarity(emb, w[None, :], dim=1)
    k = min(k, len(sims))
    tok = model.tokenizer

    def rows(idx):
        return [{"token": tok.convert_ids_to_tokens(int(i)), "token_id": int(i), "cosine": float(sims[i])} for i in idx]

    return TokenTable(layer, neuron, f"cosine({projection} weight, input embedding)",
                      rows(sims.topk(k).indices), rows((-sims).topk(k).indices))


def top_activating_tokens(pm: PromptedModel, split, layer: int, neuron: int, k: int = 10, min_count: int = 1,
                          batch_size: int = 32) -> TokenTable:
    """Input tokens with the highest / lowest mean activation of one neuron over ``split``
    (every input-token position, not the prompt; streamed as per-token-id float64 sums and counts).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task

    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> t = top_activating_tokens(prompted(model, task, None), task.dev, 1, 3, k=2)
    >>> len(t.top), sorted(t.top[0])
    (2, ['count', 'mean', 'token', 'token_id'])
    """
    info = describe(pm.model)
    if not (0 <= layer < info.n_layers and 0 <= neuron < info.widths[layer]):
        raise AnalysisError(f"neuron ({layer}, {neuron}) is not in {info.n_layers} layers x {info.d_mlp}")
    (seg, local, _), = by_segment(info.layers[layer].segments, torch.tensor([neuron]))
    neuron = int(local)
    if split is None or len(split) == 0:
        raise AnalysisError("the split is empty; pass a split with examples (e.g. task.dev).")
    V = len(pm.model.tokenizer)
    sums, counts = torch.zeros(V, dtype=torch.float64), torch.zeros(V, dtype=torch.long)
    for start in progress(range(0, len(split), batch_size), desc="token activations"):
        batch = pm.encode_split(split, slice(start, start + batch_size))

        def hook(act, hook, batch=batch):
            ids = batch.input_ids[batch.input_mask].cpu()  # float64 sums on the CPU
            vals = act[..., neuron][batch.input_mask].to("cpu", torch.float64)
            sums.index_add_(0, ids, vals)
            counts.index_add_(0, ids, torch.ones_like(ids))

        with torch.no_grad():
            pm.label_logits(batch, fwd_hooks=[(seg.hook, hook)])
    seen = (counts >= max(1, min_count)).nonzero()[:, 0]
    if len(seen) == 0:
        raise AnalysisError(f"no input token occurs at least {min_count} times; lower min_count.")
    means = sums[seen] / counts[seen]
    k = min(k, len(seen))
    tok = pm.model.tokenizer

    def rows(order):
        return [{"token": tok.convert_ids_to_tokens(int(seen[i])), "token_id": int(seen[i]),
                 "mean": float(means[i]), "count": int(counts[seen[i]])} for i in order]

    return TokenTable(layer, neuron, "mean activation", rows(means.topk(k).indices), rows((-means).topk(k).indices))
