"""What skill_lens keeps about a loaded model lives in one record (skill_lens.model.record)."""

from __future__ import annotations

import copy

import torch

from skill_lens.intervening.pruning import prune, pruning_info
from skill_lens.model.fast_path import plain_model
from skill_lens.model.fingerprint import fingerprint
from skill_lens.model.loading import describe
from skill_lens.model.record import model_record
from skill_lens.model.tiny import tiny_model


def _ours(obj) -> list[str]:
    return [k for k in vars(obj) if "skill_lens" in k]


def test_a_model_carries_one_record_and_its_tokenizer_one_too():
    model = tiny_model("causal")
    info, digest, plain = describe(model), fingerprint(model), plain_model(model)
    assert _ours(model) == ["_skill_lens"] and _ours(model.tokenizer) == ["_skill_lens"]
    kept = model_record(model)
    assert (kept.name, kept.info, kept.fingerprint, kept.plain.model) == ("tiny-causal", info, digest, plain)
    assert kept.tokenizer_adds_bos is False and model_record(model.tokenizer).tokenizer_adds_bos is False
    assert kept.pruning is None and pruning_info(model) is None


def test_a_copy_keeps_the_record_and_a_pruned_model_has_its_own():
    model = tiny_model("causal")
    twin = copy.deepcopy(model)
    assert model_record(twin) is not model_record(model)
    assert (model_record(twin).name, model_record(twin).tokenizer_adds_bos) == ("tiny-causal", False)
    assert describe(twin) == describe(model) and fingerprint(twin) == fingerprint(model)
    keep = torch.zeros(2, 64, dtype=torch.bool)
    keep[:, :8] = True
    pruned = prune(model, keep, torch.zeros(2, 64), layers=[0, 1])
    assert model_record(pruned).pruning is pruning_info(pruned) and pruning_info(pruned) is not None
    assert model_record(pruned).hf_keys and model_record(model).pruning is None
