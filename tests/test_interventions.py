"""Neuron interventions as hooks: exact effects, positions, cleanup, random controls, errors."""

import pytest
import torch

from skill_lens.intervening.interventions import (InterventionError, Positions, constant, gaussian_noise, intervene, mean_ablate,
                                      random_like, scale, zero_ablate)
from skill_lens.model.loading import describe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import FAMILIES, tiny_model, tiny_task
from skill_lens.prompting.evaluation import evaluate, prompted

TEXTS = ["the movie was good", "a very boring and dull film", "bad"]


@pytest.fixture(scope="module")
def task():
    return tiny_task()


@pytest.fixture(scope="module", params=FAMILIES)
def pm(request, task):
    model = tiny_model(request.param)
    return prompted(model, task, SoftPrompt.init(model, 3, seed=1))


@pytest.fixture(scope="module")
def causal_pm(task):
    model = tiny_model("causal")
    return prompted(model, task, SoftPrompt.init(model, 3, seed=1))


def _mask(pm, layer=None, n=None, seed=0):
    info = describe(pm.model)
    m = torch.zeros(info.shape, dtype=torch.bool)
    if layer is not None:
        m[layer] = True
    if n is not None:
        m.view(-1)[torch.randperm(m.numel(), generator=torch.Generator().manual_seed(seed))[:n]] = True
    return m


def _recorder(store, key):
    def hook(act, hook):
        store[key] = act.detach().clone()
    return hook


@pytest.mark.parametrize("layer", [0, 1])
def test_zero_ablating_a_whole_layer_equals_zeroing_the_hook_point(pm, layer):
    batch = pm.encode(TEXTS)
    name = describe(pm.model).hook_names[layer]
    ours = pm.label_logits(batch, fwd_hooks=zero_ablate(pm.model, _mask(pm, layer)))
    plain = pm.label_logits(batch, fwd_hooks=[(name, lambda act, hook: torch.zeros_like(act))])
    assert torch.equal(ours, plain)
    assert not torch.allclose(ours, pm.label_logits(batch))  # it did something


def test_empty_set_is_the_identity(pm):
    batch, empty = pm.encode(TEXTS), _mask(pm)
    factories = [zero_ablate(pm.model, empty), constant(pm.model, empty, 3.0), scale(pm.model, empty, 0.0),
                 gaussian_noise(pm.model, empty, std=5.0), mean_ablate(pm.model, empty, torch.ones(2, 64), positions="all")]
    assert all(hooks == [] for hooks in factories)
    assert torch.equal(pm.label_logits(batch, fwd_hooks=zero_ablate(pm.model, empty)), pm.label_logits(batch))


def test_only_chosen_neurons_at_chosen_positions_change(causal_pm):
    pm, batch = causal_pm, causal_pm.encode(TEXTS)
    mask = _mask(pm, n=20)
    name = describe(pm.model).hook_names[0]
    got = {}
    hooks = [(name, _recorder(got, "before")), *constant(pm.model, mask, 7.0, positions="prompt", batch=batch),
             (name, _recorder(got, "after"))]
    pm.label_logits(batch, fwd_hooks=hooks)
    changed = got["before"] != got["after"]
    assert changed.any()
    expected = torch.zeros_like(changed)
    expected[:, batch.prompt_slice] = mask[0]
    assert torch.equal(changed, expected & (got["before"] != 7.0))
    assert torch.all(got["after"][:, batch.prompt_slice][..., mask[0]] == 7.0)


def test_input_and_predict_positions_follow_the_batch(causal_pm):
    pm, batch = causal_pm, causal_pm.encode(TEXTS)
    name = describe(pm.model).hook_names[0]
    for role, where in (("input", batch.input_mask), ("predict", None)):
        if where is None:
            where = torch.zeros_like(batch.input_mask)
            where[torch.arange(batch.size), batch.predict_pos] = True
        got = {}
        pm.label_logits(batch, fwd_hooks=[*constant(pm.model, _mask(pm, 0), 5.0, positions=role, batch=batch),
                                          (name, _recorder(got, "after"))])
        assert torch.equal((got["after"] == 5.0).all(-1), where)


def test_role_positions_need_a_batch_and_with_hooks_provides_it(causal_pm, task):
    pm = causal_pm
    with pytest.raises(InterventionError, match="depend on the batch"):
        pm.label_logits(pm.encode(TEXTS), fwd_hooks=zero_ablate(pm.model, _mask(pm, 0), positions="prompt"))
    everything = _mask(pm, 0) | _mask(pm, 1)
    hooked = pm.with_hooks(lambda b: zero_ablate(pm.model, everything, positions="prompt", batch=b))
    plain = evaluate(pm, task.dev, batch_size=8)
    assert evaluate(hooked, task.dev, batch_size=8)["logit_diff"] != plain["logit_diff"]
    assert evaluate(pm, task.dev, batch_size=8) == plain  # nothing left behind


def test_mean_ablation_to_the_probe_baseline_has_the_baseline_as_train_mean(causal_pm, task):
    from skill_lens.probing.probe import probe

    pm = causal_pm
    base = probe(pm, task, splits=("dev",)).baseline  # [L, P, N] train means at prompt positions
    mask = _mask(pm, n=40, seed=3)
    names = describe(pm.model).hook_names
    for per_position in (True, False):
        sums = torch.zeros_like(base, dtype=torch.float64)
        for start in range(0, len(task.train), 16):
            batch = pm.encode(task.train.texts[start : start + 16])
            got = {}
            hooks = mean_ablate(pm.model, mask, base, per_position=per_position, positions="prompt", batch=batch)
            pm.label_logits(batch, fwd_hooks=[*hooks, *[(n, _recorder(got, l)) for l, n in enumerate(names)]])
            for l in range(len(names)):
                sums[l] += got[l][:, batch.prompt_slice].double().sum(0)
        mean = (sums / len(task.train)).float()
        target = base if per_position else base.mean(1, keepdim=True).expand_as(base)
        for l in range(len(names)):
            assert torch.allclose(mean[l][:, mask[l]], target[l][:, mask[l]], atol=1e-6)
        # layer 0 comes first: its unablated neurons are untouched, so its whole mean is the baseline
        if per_position:
            assert torch.allclose(mean[0], base[0], atol=1e-5)


def test_mean_ablation_errors(causal_pm):
    pm, batch = causal_pm, causal_pm.encode(TEXTS)
    with pytest.raises(InterventionError, match="baseline is"):
        mean_ablate(pm.model, _mask(pm, 0), torch.zeros(3, 64))
    with pytest.raises(InterventionError, match="fits positions 'prompt' only"):
        mean_ablate(pm.model, _mask(pm, 0), torch.zeros(2, 3, 64), positions="input")
    with pytest.raises(InterventionError, match="prompt positions"):
        mean_ablate(pm.model, _mask(pm, 0), torch.zeros(2, 5, 64), positions="prompt", batch=batch)
    with pytest.raises(InterventionError, match="pass positions='prompt' .* or per_position=False"):
        mean_ablate(pm.model, _mask(pm, 0), torch.zeros(2, 3, 64))  # the default positions are "all"


def test_every_factory_defaults_to_all_positions_with_keyword_only_options(causal_pm):
    import inspect

    from skill_lens.intervening.interventions import scale
    for factory in (zero_ablate, mean_ablate, gaussian_noise, constant, scale):
        params = inspect.signature(factory).parameters
        assert params["positions"].default == "all", factory.__name__
        for name in ("positions", "batch", "layers", "seed", "per", "per_position"):
            assert name not in params or params[name].kind is inspect.Parameter.KEYWORD_ONLY, (factory, name)
    pm, batch, mask = causal_pm, causal_pm.encode(TEXTS), _mask(causal_pm, 0)
    base = torch.rand(2, 64)
    for explicit, default in ((zero_ablate(pm.model, mask, positions="all"), zero_ablate(pm.model, mask)),
                              (mean_ablate(pm.model, mask, base, positions="all"), mean_ablate(pm.model, mask, base)),
                              (gaussian_noise(pm.model, mask, positions="all"), gaussian_noise(pm.model, mask))):
        assert torch.equal(pm.label_logits(batch, fwd_hooks=explicit), pm.label_logits(batch, fwd_hooks=default))
    with pytest.raises(TypeError):
        zero_ablate(pm.model, mask, "prompt")  # noqa: the positions are named


@pytest.mark.parametrize("family", ["causal", "seq2seq"])
def test_no_hook_remains_after_an_exception(family):
    model = tiny_model(family)
    names = describe(model).hook_names
    hooks = zero_ablate(model, torch.ones(describe(model).shape, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(model, hooks):
            assert all(len(model.hook_dict[n].fwd_hooks) == 1 for n in names)
            raise RuntimeError("boom")
    for n in names:
        assert model.hook_dict[n].fwd_hooks == [] and len(model.hook_dict[n]._forward_hooks) == 0


def test_intervene_works_with_run_with_hooks_and_plain_forward():
    model = tiny_model("gpt2")
    tokens = torch.tensor([[1, 5, 6, 7, 8]])
    hooks = zero_ablate(model, torch.ones(describe(model).shape, dtype=torch.bool))
    with intervene(model, hooks):
        inside = model(tokens)
    assert torch.equal(inside, model.run_with_hooks(tokens, fwd_hooks=hooks))
    assert not torch.equal(inside, model(tokens))


def test_noise_per_token_and_per_example(causal_pm):
    pm, batch = causal_pm, causal_pm.encode(TEXTS)
    mask = _mask(pm, n=30)
    name = describe(pm.model).hook_names[0]
    diffs = {}
    for per in ("token", "example"):
        got = {}
        hooks = [(name, _recorder(got, "before")),
                 *gaussian_noise(pm.model, mask, std=2.0, seed=4, per=per, positions="prompt", batch=batch),
                 (name, _recorder(got, "after"))]
        pm.label_logits(batch, fwd_hooks=hooks)
        d = got["after"] - got["before"]
        assert torch.all(d[..., ~mask[0]] == 0)  # other neurons untouched
        outside = torch.ones(d.shape[1], dtype=torch.bool)
        outside[batch.prompt_slice] = False
        assert torch.all(d[:, outside] == 0)  # other positions untouched
        diffs[per] = d[:, batch.prompt_slice][..., mask[0]]  # [B, P, k]
        assert 1.0 < diffs[per].std().item() < 3.0
    ex, tok = diffs["example"], diffs["token"]
    assert torch.allclose(ex, ex[:, :1].expand_as(ex), atol=1e-5)  # one vector per example, shared across tokens
    assert not torch.allclose(ex[0], ex[1], atol=1e-2)  # but different examples differ
    assert not torch.allclose(tok, tok[:, :1].expand_as(tok), atol=1e-2)  # fresh per token


def test_noise_is_seeded(causal_pm):
    pm, batch, mask = causal_pm, causal_pm.encode(TEXTS), _mask(causal_pm, n=30)
    run = lambda seed: pm.label_logits(batch, fwd_hooks=gaussian_noise(pm.model, mask, 1.0, seed=seed))  # noqa: E731
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_random_controls_are_reproducible_and_disjoint():
    m = torch.zeros(3, 50, dtype=torch.bool)
    m[0, :5] = m[1, 10:13] = True
    a, b = random_like(m, seed=7, n_draws=3), random_like(m, seed=7, n_draws=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], random_like(m, seed=8)[0])
    assert not torch.equal(a[0], a[1])
    for d in a:
        assert torch.equal(d.sum(1), m.sum(1)) and not (d & m).any()
    overlapping = random_like(torch.ones(2, 4, dtype=torch.bool), seed=0, disjoint=False)[0]
    assert overlapping.all()
    with pytest.raises(InterventionError, match="disjoint"):
        random_like(torch.ones(2, 4, dtype=torch.bool), seed=0)


def test_random_controls_keep_the_neuron_set_type():
    neurons = pytest.importorskip("skill_lens.probing.neurons")
    m = torch.zeros(2, 64, dtype=torch.bool)
    m[0, :3] = True
    ns = neurons.NeuronSet.from_scores(m.float(), top=3, per_layer=False)
    draw = random_like(ns, seed=0)[0]
    assert isinstance(draw, neurons.NeuronSet)
    assert torch.equal(draw.mask.sum(1), ns.mask.sum(1))
    model = tiny_model()
    assert len(zero_ablate(model, draw)) == 1


def test_bad_inputs_give_clear_errors(causal_pm):
    pm, batch = causal_pm, causal_pm.encode(TEXTS)
    with pytest.raises(InterventionError, match="2 layers x 64 neurons"):
        zero_ablate(pm.model, torch.ones(3, 64, dtype=torch.bool))
    with pytest.raises(InterventionError, match="2 layers x 64 neurons"):
        zero_ablate(pm.model, torch.ones(2, 64))  # not boolean
    seq = batch.input_ids.shape[1]
    with pytest.raises(InterventionError, match=f"beyond the sequence of length {seq}"):
        pm.label_logits(batch, fwd_hooks=zero_ablate(pm.model, _mask(pm, 0), positions=[0, seq + 3]))
    with pytest.raises(InterventionError, match="beyond the sequence"):
        zero_ablate(pm.model, _mask(pm, 0), positions=[seq], batch=batch)  # checked when built for a batch
    with pytest.raises(InterventionError, match="unknown positions"):
        Positions.of("everywhere")
    with pytest.raises(InterventionError, match="layers"):
        zero_ablate(pm.model, _mask(pm, 0), layers=[5])
    with pytest.raises(InterventionError, match="per must be"):
        gaussian_noise(pm.model, _mask(pm, 0), per="batch")
    with pytest.raises(InterventionError, match="built for a batch"):
        other = pm.encode(["good"])
        pm.label_logits(batch, fwd_hooks=zero_ablate(pm.model, _mask(pm, 0), positions="prompt", batch=other))
    for n in describe(pm.model).hook_names:  # errors inside a forward leave no hook behind
        assert pm.model.hook_dict[n].fwd_hooks == []


def test_layer_range_restricts_the_set(causal_pm):
    both = _mask(causal_pm, 0) | _mask(causal_pm, 1)
    names = [n for n, _ in zero_ablate(causal_pm.model, both, layers=range(1, 2))]
    assert names == [describe(causal_pm.model).hook_names[1]]
