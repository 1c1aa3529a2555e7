"""Specificity against its noise ceiling: halves of the probe data, pooled scores, the ceiling and the
type-permutation p-value on synthetic scores with known structure."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from skill_lens.studies.tables import AnalysisError
from skill_lens.studies.specificity import half_scores, halves_task, restrict_scores, specificity_with_ceiling, split_halves, top_union
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import prompted


def test_halves_are_disjoint_stratified_and_reproducible():
    split = tiny_task(n_dev=41).dev
    a, b = split_halves(split, seed=3)
    assert len(a) + len(b) == 41 and abs(len(a) - len(b)) <= 2
    assert sorted(a.texts + b.texts) == sorted(split.texts)
    assert abs(sum(a.labels) - sum(b.labels)) <= 1
    assert split_halves(split, seed=3) == (a, b) and split_halves(split, seed=4) != (a, b)


def test_pooled_half_scores_equal_one_probe_of_the_whole_split():
    model, task = tiny_model(), tiny_task(n_dev=8, n_test=40)
    pm = prompted(model, task, SoftPrompt.init(model, 2, seed=1))
    a, b, both = half_scores(probe(pm, halves_task(task), 8, splits=("dev", "test")))
    whole = probe(pm, dataclasses.replace(task, dev=task.test), 8, splits=("dev",)).scores()
    assert torch.allclose(both, whole, atol=1e-6) and not torch.equal(a, b)


def test_the_ceiling_separates_signal_from_noise_and_types_from_chance():
    g = torch.Generator().manual_seed(0)
    types = {"s1": "s", "s2": "s", "e1": "e", "e2": "e", "o1": "o"}
    noise = specificity_with_ceiling({n: [torch.rand(4, 200, generator=g) for _ in range(2)] for n in types}, types)
    assert abs(noise.same["all"]) < 0.1 and abs(noise.within["all"] - noise.cross["all"]) < 0.1
    shared = {t: torch.rand(4, 200, generator=g) for t in "seo"}
    measured = {n: [shared[types[n]] + 0.5 * torch.rand(4, 200, generator=g) for _ in range(2)] for n in types}
    s = specificity_with_ceiling(measured, types)
    assert s.same["all"] > 0.7 and s.within["all"] > 0.7 and abs(s.cross["all"]) < 0.1
    # 5!/(2!2!1!) = 30 labellings, 15 partitions into types: only the true one (either way round) does as well
    assert s.type_p["all"] == pytest.approx(2 / 30)
    assert s.within["upper"] > 0.7 and s.within["top"] > s.cross["top"]
    assert "same_task=" in s.result_line() and "top1_cross=" in s.result_line()


def test_restrictions():
    s = {"a": [torch.arange(8.0).reshape(2, 4)], "b": torch.arange(8.0).flip(0).reshape(2, 4)}
    assert restrict_scores(s, layers=[1])["b"][0].tolist() == [[3.0, 2.0, 1.0, 0.0]]
    assert top_union(s, 1).sum() == 2
    with pytest.raises(AnalysisError, match="not both"):
        restrict_scores(s, layers=[1], mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(AnalysisError, match="two or more independent measurements"):
        specificity_with_ceiling({"a": [torch.rand(2, 4)]}, {"a": "x"})
