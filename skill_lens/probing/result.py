"""The result of a probe: baselines and accuracies per neuron and prompt position, and what follows from them.

:class:`ProbeResult` holds the train baselines ``[L, P, N]`` and each evaluation split's agreement accuracy,
optionally the permutation null's maxima; :meth:`ProbeResult.scores` gives a neuron's predictivity over
positions (``[L, N]``), :meth:`ProbeResult.fwer_threshold` the family-wise chance level. Saved and read as
safetensors + JSON (:meth:`ProbeResult.save`, :meth:`ProbeResult.load`). :func:`skill_lens.probing.probe.probe`
makes one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch  # noqa: F401  (the doctests use it)
from jaxtyping import Bool, Float
from torch import Tensor

from skill_lens.model.loading import describe
from skill_lens.probing.null import adjusted_p_values, fwer_threshold, significant
from skill_lens.probing.scores import aggregate_positions, predictivity
from skill_lens.store.artifacts import ArtifactError, check_meta, load_tensors, save_tensors

__all__ = ["ProbeError", "ProbeResult", "SPLITS", "AGGREGATES"]


class ProbeError(ValueError):
    """A probe cannot run or its result cannot answer: the message names the problem and the fix."""


SPLITS = ("dev", "test", "mean_pool_dev", "max_pool_dev", "mean_pool_test", "max_pool_test")
AGGREGATES = ("max", "mean")


@dataclass
class ProbeResult:
    """Baselines ``[L, P, N]`` and per-split agreement accuracies (float32) of a probe.

    ``P`` is the prompt length (1 for a hard prompt or decoder hooks). Pooling fields are ``[L, N]``.
    With ``probe(..., permutations=K)``, ``null_max_dev [K]`` holds each label permutation's best
    predictivity over all neurons and positions and ``null_layer_max_dev [K, L]`` its best per layer
    (``..._test`` likewise): see :meth:`fwer_threshold`, :meth:`significant`, :meth:`adjusted_p_values`.
    On a mixture of experts, ``routing [L, 2, E]`` is the fraction of train examples of each label whose
    probed positions the router sends to each expert (averaged over the positions; 0 for dense layers).
    """

    baseline: Float[Tensor, "layer pos d_mlp"]
    dev_acc: Float[Tensor, "layer pos d_mlp"] | None
    test_acc: Float[Tensor, "layer pos d_mlp"] | None = None
    mean_pool_dev_acc: Float[Tensor, "layer d_mlp"] | None = None
    max_pool_dev_acc: Float[Tensor, "layer d_mlp"] | None = None
    mean_pool_test_acc: Float[Tensor, "layer d_mlp"] | None = None
    max_pool_test_acc: Float[Tensor, "layer d_mlp"] | None = None
    null_max_dev: Float[Tensor, " k"] | None = None
    null_layer_max_dev: Float[Tensor, "k layer"] | None = None
    null_max_test: Float[Tensor, " k"] | None = None
    null_layer_max_test: Float[Tensor, "k layer"] | None = None
    routing: Float[Tensor, "layer label expert"] | None = None
    sizes: dict = field(default_factory=dict)
    hook_names: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def per_position(self, split: str = "dev") -> Float[Tensor, "layer pos d_mlp"]:
        """``max(acc, 1 - acc)`` on ``split`` (``"dev"``, ``"test"``, ``"mean_pool_dev"``...).

        >>> ProbeResult(torch.zeros(1, 1, 2), torch.tensor([[[0.25, 0.625]]])).per_position("dev").tolist()
        [[[0.75, 0.625]]]
        """
        if (acc := getattr(self, f"{split}_acc", None)) is None:
            raise ProbeError(f"this probe has no {split!r} accuracies; rerun probe with that split"
                             + (" and pooling=True (--pooling)." if "pool" in split else "."))
        return predictivity(acc)

    def scores(self, split: str = "dev", aggregate: str = "max") -> Float[Tensor, "layer d_mlp"]:
        """Per-neuron score on ``split`` (default ``"dev"``): predictivity aggregated over prompt positions
        by ``aggregate`` (``"max"``, the paper and the default, or ``"mean"``).

        >>> r = ProbeResult(torch.zeros(1, 2, 1), torch.tensor([[[0.875], [0.5]]]), torch.tensor([[[0.5], [0.5]]]))
        >>> r.scores().tolist(), r.scores("test").tolist(), r.scores("dev", "mean").tolist()
        ([[0.875]], [[0.5]], [[0.6875]])
        >>> r.scores("train")
        Traceback (most recent call last):
        ...
        skill_lens.probing.result.ProbeError: scores(split, aggregate): split is one of 'dev', 'test', 'mean_pool_dev', 'max_pool_dev', 'mean_pool_test', 'max_pool_test' and aggregate 'max' or 'mean'; got split='train', aggregate='max'
        """
        if split not in SPLITS or aggregate not in AGGREGATES:
            raise ProbeError(f"scores(split, aggregate): split is one of {', '.join(map(repr, SPLITS))} and aggregate "
                             f"'max' or 'mean'; got split={split!r}, aggregate={aggregate!r}")
        pred = self.per_position(split)
        return pred if pred.dim() == 2 else aggregate_positions(pred, aggregate)

    def null_maxima(self, split: str = "dev", per_layer: bool = False) -> Float[Tensor, "k *layer"]:
        """The permutation maxima of ``split``: ``[K]`` over all neurons, or ``[K, L]`` with ``per_layer``.

        >>> ProbeResult(torch.zeros(1, 1, 1), None).null_maxima()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        skill_lens.probing.result.ProbeError: this probe has no permutation null on 'dev'; rerun probe with ...
        """
        name = f"null_{'layer_' if per_layer else ''}max_{split}"
        m = getattr(self, name, None) if split in ("dev", "test") else None
        if m is None:
            raise ProbeError(f"this probe has no permutation null on {split!r}; rerun probe with permutations=200 "
                             "(and that split).")
        return m

    def fwer_threshold(self, split: str = "dev", alpha: float = 0.05, per_layer: bool = False) -> float | Tensor:
        """The family-wise critical predictivity at level ``alpha``: the ``(1 - alpha)`` quantile of the
        permutation maxima (the ``floor(alpha (K + 1))``-th largest, see
        :func:`skill_lens.probing.null.fwer_threshold`); a float, or ``[L]`` thresholds with ``per_layer``.

        >>> r = ProbeResult(torch.zeros(1, 1, 2), torch.tensor([[[0.25, 0.5]]]), null_max_dev=torch.full((19,), 0.625))
        >>> r.fwer_threshold(), r.significant().tolist(), r.adjusted_p_values().tolist()
        (0.625, [[True, False]], [[0.05, 1.0]])
        """
        t = fwer_threshold(self.null_maxima(split, per_layer), alpha)
        return t if per_layer else float(t)

    def significant(self, split: str = "dev", alpha: float = 0.05, aggregate: str = "max",
                    per_layer: bool = False) -> Bool[Tensor, "layer d_mlp"]:
        """Neurons whose :meth:`scores` (max over positions, as the null's) exceed :meth:`fwer_threshold`:
        significant at ``alpha`` family-wise over all neurons (over the layer's with ``per_layer``).

        >>> r = ProbeResult(torch.zeros(1, 1, 2), torch.tensor([[[0.25, 0.5]]]), null_max_dev=torch.full((19,), 0.625))
        >>> r.significant(alpha=0.01).tolist()   # K = 19 permutations cannot reach 0.01
        [[False, False]]
        """
        return significant(self._null_scores(split, aggregate), self.null_maxima(split, per_layer), alpha)

    def adjusted_p_values(self, split: str = "dev", aggregate: str = "max",
                          per_layer: bool = False) -> Float[Tensor, "layer d_mlp"]:
        """Per-neuron family-wise adjusted p-values ``(1 + #{k: max_k >= score}) / (1 + K)``: the
        max-statistic (Westfall–Young single-step) adjustment; ``p <= alpha`` iff :meth:`significant`.

        >>> r = ProbeResult(torch.zeros(1, 1, 2), torch.tensor([[[0.25, 0.5]]]), null_max_dev=torch.full((3,), 0.625))
        >>> r.adjusted_p_values().tolist()
        [[0.25, 1.0]]
        """
        return adjusted_p_values(self._null_scores(split, aggregate), self.null_maxima(split, per_layer))

    def _null_scores(self, split: str, aggregate: str) -> Tensor:
        if aggregate != "max":
            raise ProbeError("the permutation null is of the max over positions; "
                             f"use aggregate='max', not {aggregate!r}")
        return self.scores(split, "max")

    def null_summary(self, alpha: float = 0.05) -> dict:
        """JSON-able summary per split with a null: its threshold and significant neurons (``{"permutations": 0}``
        without a null).

        >>> r = ProbeResult(torch.zeros(1, 1, 2), torch.tensor([[[0.25, 0.5]]]), null_max_dev=torch.full((19,), 0.625),
        ...                 null_layer_max_dev=torch.full((19, 1), 0.625))
        >>> s = r.null_summary(); s["permutations"], s["dev"]
        (19, {'fwer_threshold': 0.625, 'significant': 1, 'significant_per_layer': [1]})
        """
        out: dict = {"permutations": 0 if self.null_max_dev is None else len(self.null_max_dev), "alpha": alpha}
        for split in ("dev", "test"):
            if getattr(self, f"null_max_{split}") is not None and getattr(self, f"{split}_acc") is not None:
                mask = self.significant(split, alpha)
                out[split] = {"fwer_threshold": self.fwer_threshold(split, alpha), "significant": int(mask.sum()),
                              "significant_per_layer": mask.sum(1).tolist()}
        return out if out["permutations"] else {"permutations": 0}

    def save(self, path) -> None:
        """Write ``baseline``, ``dev_acc``, ``test_acc`` (and pooling keys) with a JSON sidecar."""
        tensors = {k: v for k, v in vars(self).items() if isinstance(v, Tensor)}
        save_tensors(path, tensors, {**self.meta, "hook_names": list(self.hook_names), "sizes": self.sizes})

    @classmethod
    def load(cls, path, model=None) -> "ProbeResult":
        """Read a saved probe; with ``model``, check it was made on that model (and its hooks).

        >>> import tempfile, os; from skill_lens.model.tiny import tiny_model
        >>> p = os.path.join(tempfile.mkdtemp(), "pred.safetensors")
        >>> ProbeResult(torch.zeros(2, 1, 64), torch.ones(2, 1, 64), meta={"model": "tiny-causal"}).save(p)
        >>> ProbeResult.load(p, tiny_model()).dev_acc.shape
        torch.Size([2, 1, 64])
        """
        tensors, meta = load_tensors(path)
        if "baseline" not in tensors:
            raise ArtifactError(f"{path} holds no 'baseline' tensor; is it a predictivity file?")
        if model is not None:
            info = describe(model)
            check_meta(meta, {"model": info.name}, "predictivity file")
            missing = [h for h in meta.get("hook_names", ()) if h not in model.hook_dict]
            if missing or tensors["baseline"].shape[-1] != info.d_mlp:
                raise ArtifactError(f"{path} was probed at hooks/widths {info.name} lacks ({missing}); reprobe.")
        fields = {k: tensors.get(k) for k in cls.__dataclass_fields__
                  if k.endswith("acc") or k.startswith("null_") or k == "routing"}
        return cls(tensors["baseline"], **fields, sizes=meta.pop("sizes", {}),
                   hook_names=tuple(meta.pop("hook_names", ())), meta=meta)
