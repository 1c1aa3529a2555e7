"""Fold constants measured on the pruned model, and the massive-activation neurons no constant can replace."""

from __future__ import annotations

import pytest
import torch

from skill_lens.intervening.calibration import calibrate, keep_also, massive_neurons
from skill_lens.model.loading import describe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.intervening.pruning import PruningError
from skill_lens.model.tiny import FAMILIES, tiny_model, tiny_task
from skill_lens.prompting.evaluation import prompted
from test_pruning import L, N, baseline_hooks, random_keep


@pytest.fixture(scope="module")
def task():
    return tiny_task(n_train=16, n_dev=8, n_test=8)


# ------------------------------------------------------------------------------------------ calibrate
def activations_mean(model, task, prompt, texts, layer, fwd_hooks=()):
    """Mean of ``blocks.{layer}.mlp.hook_post`` over the real tokens of ``texts`` (an independent pass)."""
    pm = prompted(model, task, prompt)
    batch = pm.encode(texts)
    got = {}
    name = describe(model).hook_names[layer]
    with torch.no_grad():
        pm.label_logits(batch, fwd_hooks=[*fwd_hooks, (name, lambda a, hook: got.__setitem__("a", a.clone()))])
    return got["a"][batch.attention_mask.bool()].double().mean(0)


@pytest.mark.parametrize("family", FAMILIES)
def test_calibrated_constants_are_means_under_the_pruned_layers_below(family, task):
    model = tiny_model(family)
    prompt = SoftPrompt.init(model, 3, seed=4)
    keep, texts = random_keep(10), task.train.texts[:12]
    consts = calibrate(prompted(model, task, prompt), keep, layers=[0, 1], texts=texts)
    # layer 0 sees the unpruned model: its plain mean over real tokens
    torch.testing.assert_close(consts[0], activations_mean(model, task, prompt, texts, 0), atol=1e-6, rtol=1e-5)
    # layer 1 sees layer 0 pruned: the mean with layer 0's removed neurons fixed at their constants
    below = baseline_hooks(model, keep, consts.float(), [0])
    want = activations_mean(model, task, prompt, texts, 1, below)
    torch.testing.assert_close(consts[1], want, atol=1e-6, rtol=1e-5)
    assert (consts[1] - activations_mean(model, task, prompt, texts, 1)).abs().max() > 1e-5  # 30x the tolerance
    # only the pruned layers fix their neurons: with layers=[1], layer 1 sees the unpruned layer 0
    alone = calibrate(prompted(model, task, prompt), keep, layers=[1], texts=texts)
    torch.testing.assert_close(alone[1], activations_mean(model, task, prompt, texts, 1), atol=1e-6, rtol=1e-5)


def test_calibrate_bad_input():
    model, task = tiny_model("causal"), tiny_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    with pytest.raises(PruningError, match="needs texts"):
        calibrate(pm, random_keep(0), texts=[])
    with pytest.raises(PruningError, match="shape \\(3, 64\\)"):
        calibrate(pm, torch.ones(3, N, dtype=torch.bool), texts=task.train.texts[:4])


# ------------------------------------------------------------------------------- massive activations
def test_massive_neurons_finds_a_neuron_scaled_up(task):
    model = tiny_model("causal")
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    assert not massive_neurons(pm, task.train.texts[:8]).any()  # a random tiny model has none
    with torch.no_grad():
        model.original_model.model.layers[1].mlp.up_proj.weight[5] *= 1000
    found = massive_neurons(pm, task.train.texts[:8])
    assert found.nonzero().tolist() == [[1, 5]]
    with pytest.raises(PruningError, match="needs texts"):
        massive_neurons(pm, [])


def test_keep_also_swaps_in_the_extras_and_keeps_each_layers_count():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(L, N, generator=g)
    keep = scores >= scores.topk(6, dim=1).values[:, -1:]  # the top 6 of each layer
    extra = torch.zeros(L, N, dtype=torch.bool)
    low = scores[0].argsort()[:2]  # two of the worst neurons of layer 0
    extra[0, low] = True
    extra[1, keep[1].nonzero()[0, 0]] = True  # already kept: nothing to swap
    out = keep_also(keep, extra, scores)
    assert out.sum(1).tolist() == [6, 6] and (out & extra).sum() == extra.sum()
    dropped = (keep[0] & ~out[0]).nonzero()[:, 0]
    assert sorted(dropped.tolist()) == sorted(scores[0].masked_fill(~keep[0], 9).argsort()[:2].tolist())
    assert torch.equal(out[1], keep[1])
    many = torch.zeros(L, N, dtype=torch.bool)
    many[0, :10] = True  # more extras than the layer keeps: it grows to hold them
    assert keep_also(keep, many, scores)[0].nonzero()[:, 0].tolist() == list(range(10))
    with pytest.raises(PruningError, match="same \\[n_layers, d_mlp\\] shape"):
        keep_also(keep, extra[:1], scores)
