"""Activation patching of neurons: identity on own activations, exact copies, role alignment, errors."""

import math

import pytest
import torch

from skill_lens.interventions import InterventionError
from skill_lens.models import describe
from skill_lens.patching import capture, patch, patch_hooks
from skill_lens.prompts import SoftPrompt
from skill_lens.tiny import FAMILIES, tiny_model, tiny_task
from skill_lens.tuning import hard_prompt_model, prompted


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


# ---------------------------------------------------------------- CLI: skill-lens patch

@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    import contextlib
    import io

    from skill_lens.cli.probe import probe_run
    from skill_lens.runs import Run
    from skill_lens.tuning import TuneConfig

    r = Run.create(tmp_path_factory.mktemp("run"), tiny_model(), tiny_task(),
                   TuneConfig(prompt_length=2, steps=4, eval_every=2))
    with contextlib.redirect_stdout(io.StringIO()):
        probe_run(r)
    return r


def test_patch_cli_prints_the_effect(probed_run, capsys):
    from skill_lens.cli import build_parser
    from skill_lens.cli import patch as patch_cli

    args = build_parser().parse_args(["patch", str(probed_run.path), "--source-text", "a good film",
                                      "--target-text", "the plot was bad", "--top", "5"])
    assert patch_cli.run(args, run_obj=probed_run) == 0
    out = capsys.readouterr().out
    assert "patching 5 skill neurons" in out and "restored" in out and "patched" in out


def test_patch_cli_uses_the_saved_neuron_set(probed_run, capsys):
    from skill_lens.cli.patch import run_neurons
    from skill_lens.neurons import NeuronSet

    NeuronSet.from_pairs([(0, 1), (1, 2), (1, 3)], 2, 64, meta={"model": "tiny-causal"}).save(
        probed_run.path / "neurons.safetensors")
    try:
        assert len(run_neurons(probed_run)) == 3
        assert len(run_neurons(probed_run, top=0.1)) == 13  # --top selects afresh
    finally:
        (probed_run.path / "neurons.safetensors").unlink()
        (probed_run.path / "neurons.safetensors.json").unlink(missing_ok=True)


@pytest.mark.parametrize("argv, message", [(["--top", "1.5"], "--top"), (["--source-text", " "], "empty")])
def test_patch_cli_validates_before_opening_the_run(tmp_path, argv, message, capsys):
    from skill_lens.cli import main

    base = ["patch", str(tmp_path / "missing"), "--source-text", "good", "--target-text", "bad"]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err
