"""Activation patching of neurons: identity on own activations, exact copies, role alignment, errors."""

import math

import pytest
import torch

from skill_lens.intervening.interventions import InterventionError
from skill_lens.model.loading import describe
from skill_lens.intervening.patching import capture, patch, patch_hooks
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import FAMILIES, tiny_model, tiny_task
from skill_lens.prompting.evaluation import hard_prompt_model, prompted


@pytest.fixture(scope="module")
def task():
    return tiny_task()


@pytest.fixture(scope="module", params=FAMILIES)
def pm(request, task):
    model = tiny_model(request.param)
    return prompted(model, task, SoftPrompt.init(model, 3, seed=2))


def _all(pm):
    return torch.ones(describe(pm.model).shape, dtype=torch.bool)


@pytest.mark.parametrize("positions", ["prompt", "predict", "all", "input"])
def test_patching_a_run_with_its_own_activations_changes_nothing(pm, positions):
    texts = ["the movie was good", "a dull film"]
    r = patch(pm, texts, texts, _all(pm), positions=positions)
    assert torch.equal(r.patched, r.target) and torch.equal(r.source, r.target)
    assert all(math.isnan(x) for x in r.restored)


def test_patching_another_input_moves_the_logits_and_copies_activations(pm):
    source, target = pm.encode(["good good great"]), pm.encode(["the plot was very dull and boring"])
    mask = _all(pm)
    r = patch(pm, "good good great", "the plot was very dull and boring", mask)
    assert not torch.equal(r.patched, r.target)
    # layer 0's patched neurons now hold exactly the source's values at the prompt positions
    name = describe(pm.model).hook_names[0]
    got = {}
    hooks = [*patch_hooks(pm, source, target, mask), (name, lambda act, hook: got.setdefault("a", act.clone()))]
    pm.label_logits(target, fwd_hooks=hooks)
    src = capture(pm, source, mask)[0][0]
    assert torch.equal(got["a"][0, target.prompt_slice], src)
    (a, b), = r.pairs
    d = lambda x: (x[0, a] - x[0, b]).item()  # noqa: E731
    assert r.restored[0] == pytest.approx((d(r.patched) - d(r.target)) / (d(r.source) - d(r.target)))


def test_a_subset_of_neurons_changes_only_those(task):
    model = tiny_model("causal")
    pm = prompted(model, task, SoftPrompt.init(model, 3))
    source, target = pm.encode(["good"]), pm.encode(["a bad film was dull"])
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, [1, 5, 9]] = True
    name = describe(model).hook_names[0]
    got = {}
    rec = lambda key: (name, lambda act, hook: got.setdefault(key, act.clone()))  # noqa: E731
    pm.label_logits(target, fwd_hooks=[rec("clean")])
    pm.label_logits(target, fwd_hooks=[*patch_hooks(pm, source, target, mask), rec("patched")])
    changed = (got["clean"] != got["patched"]).any(0)
    assert changed[:, ~mask[0]].sum() == 0
    assert changed[target.prompt_slice][:, mask[0]].all() and not changed[: target.prompt_slice.start].any()


def test_source_prompt_patching(task):
    model = tiny_model("causal")
    pm_a = prompted(model, task, SoftPrompt.init(model, 3, seed=0))
    pm_b = prompted(model, task, SoftPrompt.init(model, 3, seed=1))
    r = patch(pm_b, "a good film", "a good film", _all(pm_b), source_pm=pm_a)
    assert torch.allclose(r.source, pm_a.label_logits(pm_a.encode(["a good film"])))
    assert not torch.allclose(r.patched, r.target)
    with pytest.raises(InterventionError, match="3 positions and the target's 4"):
        patch(prompted(model, task, SoftPrompt.init(model, 4)), "good", "bad", _all(pm_b), source_pm=pm_a)
    with pytest.raises(InterventionError, match="share the model and the verbalizer"):
        patch(pm_b, "good", "bad", _all(pm_b), source_pm=prompted(tiny_model("causal"), task, None))


def test_role_alignment_errors(task):
    model = tiny_model("causal")
    pm = prompted(model, task, SoftPrompt.init(model, 3))
    mask = _all(pm)
    with pytest.raises(InterventionError, match="same length"):
        patch(pm, "good", "a very bad film", mask, positions="all")
    with pytest.raises(InterventionError, match="input positions"):
        patch(pm, "good", "a very bad film", mask, positions="input")
    r = patch(pm, "good film", "bad plot", mask, positions="input")  # equal input lengths align
    assert not torch.allclose(r.patched, r.target)
    with pytest.raises(InterventionError, match="pair them one to one"):
        patch(pm, ["good", "bad"], "bad", mask)
    with pytest.raises(InterventionError, match="beyond the sequence"):
        patch(pm, "good", "bad", mask, positions=[0, 40])
    with pytest.raises(InterventionError, match="2 layers x 64"):
        patch(pm, "good", "bad", torch.ones(4, 64, dtype=torch.bool))
    with pytest.raises(InterventionError, match="no soft prompt"):
        patch(hard_prompt_model(model, task), "good", "bad", mask)
    hard = patch(hard_prompt_model(model, task), "good", "a bad film", mask, positions="predict")
    assert hard.patched.shape == (1, 2)
