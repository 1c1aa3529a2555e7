"""capture.py: recordings equal a hand-written hook, positions are selected, nothing leaks, user hooks compose."""


import pytest
import torch

from skill_lens.probing.capture import CaptureError, activations, capture, capture_hooks, capture_neurons
from skill_lens.intervening.interventions import zero_ablate
from skill_lens.model.loading import describe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import FAMILIES, tiny_model, tiny_task
from skill_lens.prompting.evaluation import prompted

# skill_lens.probing.probe and skill_lens.probing.capture are the functions (README, "One import"); these are the modules.

TEXTS = ["the movie was good", "a dull film", "bad"]


@pytest.fixture(scope="module")
def task():
    return tiny_task()


@pytest.fixture(scope="module", params=FAMILIES)
def pm(request, task):
    model = tiny_model(request.param)
    _BEFORE[id(model)] = _hook_counts(model)
    return prompted(model, task, SoftPrompt.init(model, 3, seed=1))


def _manual(pm, batch, fwd_hooks=()):
    """Every FFN activation of one run, recorded by a hand-written hook, and the logits."""
    got = {}
    names = describe(pm.model).hook_names
    hooks = [(h, lambda act, hook, h=h: got.__setitem__(h, act.detach().clone())) for h in names]
    with torch.no_grad():
        logits = pm.label_logits(batch, fwd_hooks=[*hooks, *fwd_hooks])
    return got, logits


def _hook_counts(model) -> dict[str, int]:
    return {name: len(hp.fwd_hooks) for name, hp in model.hook_dict.items()}


_BEFORE: dict[int, dict[str, int]] = {}


def _no_hooks_left(model) -> bool:
    """The hook points hold as many hooks as before any test added one (the bridge keeps a few of its own)."""
    return _hook_counts(model) == _BEFORE[id(model)]


def test_captures_equal_a_manual_hook(pm):
    batch, names = pm.encode(TEXTS), describe(pm.model).hook_names
    want, logits = _manual(pm, batch)
    hooks, got = capture_hooks(names)
    with torch.no_grad():
        same_logits = pm.label_logits(batch, fwd_hooks=hooks)
    assert sorted(got) == sorted(names) and torch.equal(same_logits, logits)
    for h in names:
        assert torch.equal(got[h], want[h])
    with torch.no_grad(), capture(pm.model, names) as acts:  # the context manager, with the prompt's hooks inside
        pm.label_logits(batch)
    assert all(torch.equal(acts[h], want[h]) for h in names) and _no_hooks_left(pm.model)


def test_select_keeps_the_chosen_positions(pm):
    batch, names = pm.encode(TEXTS), describe(pm.model).hook_names
    want, _ = _manual(pm, batch)
    hooks, got = capture_hooks(names, select=lambda act, name: act[:, batch.prompt_slice])
    with torch.no_grad():
        pm.label_logits(batch, fwd_hooks=hooks)
    for h in names:
        assert got[h].shape == (len(TEXTS), 3, want[h].shape[-1])
        assert torch.equal(got[h], want[h][:, batch.prompt_slice])
    rows = torch.arange(len(TEXTS))
    with torch.no_grad(), capture(pm.model, names[:1], lambda act, name: act[rows, batch.predict_pos]) as acts:
        pm.label_logits(batch)
    assert torch.equal(acts[names[0]], want[names[0]][rows, batch.predict_pos])


def test_select_returning_none_keeps_nothing():
    model = tiny_model()
    hooks, got = capture_hooks(["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"],
                               select=lambda act, name: act if name.startswith("blocks.1") else None)
    model.run_with_hooks(torch.tensor([[1, 5, 6]]), fwd_hooks=hooks)
    assert list(got) == ["blocks.1.mlp.hook_post"]


def test_hooks_are_removed_after_an_exception(pm):
    batch, name = pm.encode(TEXTS), describe(pm.model).hook_names[0]
    with pytest.raises(RuntimeError, match="boom"):
        with capture(pm.model, [name]) as acts:
            assert len(pm.model.hook_dict[name].fwd_hooks) == _BEFORE[id(pm.model)][name] + 1
            pm.label_logits(batch)
            raise RuntimeError("boom")
    assert name in acts and _no_hooks_left(pm.model)

    def fail(act, hook):
        raise RuntimeError("boom in a hook")

    hooks, _ = capture_hooks([name])
    with pytest.raises(RuntimeError, match="boom in a hook"):
        pm.label_logits(batch, fwd_hooks=[*hooks, (name, fail)])
    assert _no_hooks_left(pm.model)
    with pytest.raises(ZeroDivisionError):  # an error in select itself
        with capture(pm.model, [name], select=lambda act, n: act / 0 if n == "x" else 1 / 0):
            pm.label_logits(batch)
    assert _no_hooks_left(pm.model)


def test_composes_with_a_user_hook(pm):
    """A capture before an in-place intervention keeps what the hook point saw; one after it sees the change."""
    batch, names = pm.encode(TEXTS), describe(pm.model).hook_names
    clean, _ = _manual(pm, batch)
    mask = torch.ones(describe(pm.model).shape, dtype=torch.bool)
    ablate = zero_ablate(pm.model, mask, layers=[0])  # writes act[..., idx] in place under no_grad
    before, got_before = capture_hooks(names[:1])
    after, got_after = capture_hooks(names[:1])
    want_ablated, ablated_logits = _manual(pm, batch, fwd_hooks=ablate)
    with torch.no_grad():
        logits = pm.label_logits(batch, fwd_hooks=[*before, *ablate, *after])
    assert torch.equal(logits, ablated_logits)  # capturing changes nothing
    assert torch.equal(got_before[names[0]], clean[names[0]]) and bool(got_before[names[0]].any())
    assert not bool(got_after[names[0]].any())
    assert torch.equal(got_after[names[0]], torch.zeros_like(clean[names[0]]))
    if len(names) > 1:  # the layer above sees the ablation too
        with torch.no_grad(), capture(pm.model, names[1:2]) as acts:
            pm.label_logits(batch, fwd_hooks=ablate)
        assert not torch.equal(acts[names[1]], clean[names[1]])


def test_capture_neurons_in_the_order_given(pm):
    batch = pm.encode(TEXTS)
    want, _ = _manual(pm, batch)
    names = describe(pm.model).hook_names
    neurons = ["L1.N5", (0, 3), "L1.N0", (1, 5)]
    got = capture_neurons(pm, batch, neurons, lambda act, name: act[:, batch.prompt_slice])
    manual = torch.stack([want[names[l]][:, batch.prompt_slice, i] for l, i in [(1, 5), (0, 3), (1, 0), (1, 5)]], -1)
    assert got.shape == (len(TEXTS), 3, 4) and torch.equal(got, manual.float())
    with pytest.raises(ValueError, match="L2.N0 is not in a model with 2 layers"):
        capture_neurons(pm, batch, ["L2.N0"])


def test_activations_read_the_neurons_at_the_prompt(task):
    model = tiny_model()
    pm = prompted(model, task, SoftPrompt.init(model, 3))
    batch = pm.encode(task.dev.texts[:4])
    want, _ = _manual(pm, batch)
    acts = activations(pm, task.dev, ["L1.N5", (0, 7)], batch_size=4)
    names = describe(model).hook_names
    assert torch.equal(acts[:4, 0], want[names[1]][:, batch.prompt_slice, 5])
    assert torch.equal(acts[:4, 1], want[names[0]][:, batch.prompt_slice, 7])
    with pytest.raises(CaptureError, match="unknown hook name"):
        activations(pm, task.dev, [(0, 1)], hook_names=["blocks.9.mlp.hook_post"])
