"""Structural pruning against the unpruned model with removed neurons overwritten by their baselines."""

from __future__ import annotations


import pytest
import torch

from skill_lens.model.loading import describe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.intervening.pruning import (PruningError, kept_neurons, load_pruned, parameter_count, prune, pruning_info,
                                save_pruned)
from skill_lens.model.tiny import FAMILIES, tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig, tune
from skill_lens.prompting.evaluation import prompted

L, N = 2, 64


@pytest.fixture(scope="module")
def task():
    return tiny_task(n_train=16, n_dev=8, n_test=8)


def random_keep(seed: int, frac: float = 0.2) -> torch.Tensor:
    return torch.rand(L, N, generator=torch.Generator().manual_seed(seed)) < frac


def random_baseline(seed: int, P: int = 3) -> torch.Tensor:
    return torch.randn(L, P, N, generator=torch.Generator().manual_seed(seed))


def label_logits(model, task, prompt, fwd_hooks=()):
    pm = prompted(model, task, prompt)
    batch = pm.encode(task.dev.texts)
    with torch.no_grad():
        return pm.label_logits(batch, fwd_hooks=list(fwd_hooks))


def baseline_hooks(model, keep, base, layers):
    """Hooks overwriting every removed neuron of ``layers`` by its baseline, at every position."""
    names = describe(model).hook_names

    def make(layer):
        removed = ~keep[layer]

        def hook(act, hook):
            act = act.clone()
            act[..., removed] = base[layer, removed].to(act.dtype)
            return act
        return hook

    return [(names[l], make(l)) for l in layers]


def ffn_outputs(model, task, prompt, fwd_hooks=()):
    """``blocks.{l}.mlp.hook_out`` (the FFN's output) of every probed layer on the dev texts."""
    names = [h.replace("hook_post", "hook_out") for h in describe(model).hook_names]
    got = {}
    pm = prompted(model, task, prompt)
    batch = pm.encode(task.dev.texts)
    with torch.no_grad():
        pm.label_logits(batch, fwd_hooks=[*fwd_hooks, *((n, lambda a, hook, n=n: got.__setitem__(n, a))
                                                         for n in names)])
    return [got[n] for n in names]


@pytest.mark.parametrize("family", FAMILIES)
def test_keeping_every_neuron_changes_nothing(family, task):
    model = tiny_model(family)
    prompt = SoftPrompt.init(model, 3, seed=1)
    pruned = prune(model, torch.ones(L, N, dtype=torch.bool), random_baseline(0))
    assert pruning_info(pruned).widths == {0: N, 1: N}
    torch.testing.assert_close(label_logits(pruned, task, prompt), label_logits(model, task, prompt),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("position", ["mean", 1])
def test_pruned_equals_unpruned_with_baselines_patched_in(family, position, task):
    model = tiny_model(family)
    prompt = SoftPrompt.init(model, 3, seed=2)
    keep, base3 = random_keep(3), random_baseline(4)
    base = base3.mean(1) if position == "mean" else base3[:, position]
    for layers in ([0, 1], [1]):
        pruned = prune(model, keep, base3, layers=layers, position=position)
        widths = pruning_info(pruned).widths
        assert all(widths[l] == int(keep[l].sum()) for l in layers) and all(widths[l] == N for l in {0, 1} - set(layers))
        want = label_logits(model, task, prompt, baseline_hooks(model, keep, base, layers))
        torch.testing.assert_close(label_logits(pruned, task, prompt), want, atol=1e-5, rtol=1e-4)
        # and not trivially: without the baselines the outputs differ
        assert not torch.allclose(label_logits(model, task, prompt), want, atol=1e-4)
        # FFN outputs layer by layer
        patched = ffn_outputs(model, task, prompt, baseline_hooks(model, keep, base, layers))
        for a, b in zip(ffn_outputs(pruned, task, prompt), patched):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_weights_are_smaller_and_hooks_have_the_kept_width(family, task):
    model = tiny_model(family)
    before = {k: v.clone() for k, v in model.original_model.state_dict().items()}
    keep = random_keep(5)
    pruned = prune(model, keep, random_baseline(6)[:, 0])  # a [L, d_mlp] baseline
    assert parameter_count(pruned, ffn_only=True) < parameter_count(model, ffn_only=True) / 3
    seen = {}
    prompt = SoftPrompt.init(model, 3)
    hooks = [(h, lambda a, hook, h=h: seen.__setitem__(h, a.shape[-1])) for h in describe(pruned).hook_names]
    label_logits(pruned, task, prompt, hooks)
    assert [seen[h] for h in describe(pruned).hook_names] == [int(keep[l].sum()) for l in range(L)]
    for k, v in model.original_model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k]), k
    assert pruning_info(model) is None
    assert pruning_info(pruned).kept == {l: keep[l].nonzero()[:, 0].tolist() for l in range(L)}
    assert pruning_info(pruned).original_index(1, 0) == int(keep[1].nonzero()[0])


def test_neuronset_is_accepted(task):
    from skill_lens.probing.neurons import NeuronSet

    model = tiny_model("causal")
    ns = NeuronSet.from_mask(random_keep(7))
    assert pruning_info(prune(model, ns, random_baseline(0))).widths == {l: int(ns.mask[l].sum()) for l in range(L)}


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(family, task, tmp_path):
    model = tiny_model(family)
    prompt = SoftPrompt.init(model, 3, seed=3)
    pruned = prune(model, random_keep(8), random_baseline(9), layers=[1])
    path = save_pruned(pruned, tmp_path / "pruned", prompt=prompt)
    save_pruned(pruned, path)  # overwriting an existing directory works
    assert not [p for p in tmp_path.iterdir() if p.name != "pruned"]  # no temp or backup dirs left
    loaded = load_pruned(path)
    assert pruning_info(loaded) == pruning_info(pruned)
    bos = [prompted(m, task, prompt).prepend_bos for m in (model, pruned, loaded)]
    assert bos == [bos[0]] * 3  # the original tokenizer's BOS habit survives, though the bridge changed it
    assert describe(loaded).name == describe(pruned).name
    assert torch.equal(label_logits(loaded, task, prompt), label_logits(pruned, task, prompt))
    assert loaded.tokenizer.encode("good movie") == pruned.tokenizer.encode("good movie")
    save_pruned(pruned, path, prompt=prompt)
    again, saved = load_pruned(path, with_prompt=True)
    assert torch.equal(saved.embedding, prompt.embedding) and pruning_info(again) == pruning_info(pruned)
    assert torch.equal(label_logits(again, task, saved), label_logits(pruned, task, prompt))


def test_load_errors(tmp_path):
    from skill_lens.store.artifacts import ArtifactError

    with pytest.raises(ArtifactError, match="save_pruned"):
        load_pruned(tmp_path)
    with pytest.raises(PruningError, match="prune it"):
        save_pruned(tiny_model(), tmp_path / "x")
    keep = torch.ones(2, 64, dtype=torch.bool)
    bare = save_pruned(prune(tiny_model(), keep, torch.zeros(2, 64)), tmp_path / "bare")
    with pytest.raises(ArtifactError, match="saved without a prompt"):
        load_pruned(bare, with_prompt=True)


def test_width_padding_adds_the_next_best_neurons():
    keep = torch.zeros(L, N, dtype=torch.bool)
    keep[0, [3, 9]] = True
    scores = torch.rand(L, N, generator=torch.Generator().manual_seed(0))
    scores[0, 9] = -1.0  # kept although its score is the worst
    kept = kept_neurons(keep, [0, 1], width=5, scores=scores)
    others = scores[0].clone()
    others[[3, 9]] = float("-inf")
    assert kept[0] == sorted([3, 9, *others.topk(3).indices.tolist()])
    assert kept[1] == sorted(scores[1].topk(5).indices.tolist())
    assert kept_neurons(keep, [0, 1], width={0: 2}, scores=scores) == {0: [3, 9], 1: []}
    model = tiny_model("gpt2")
    pruned = prune(model, keep, random_baseline(0), layers=[0, 1], width=[4, 6], scores=scores)
    assert pruning_info(pruned).widths == {0: 4, 1: 6}
    assert pruned.original_model.transformer.h[1].mlp.c_proj.weight.shape == (6, 32)


def test_an_empty_layer_still_runs(task):
    model = tiny_model("causal")
    keep = torch.zeros(L, N, dtype=torch.bool)
    base = random_baseline(1)
    pruned = prune(model, keep, base, layers=[0])
    prompt = SoftPrompt.init(model, 3)
    want = label_logits(model, task, prompt, baseline_hooks(model, keep, base.mean(1), [0]))
    torch.testing.assert_close(label_logits(pruned, task, prompt), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(keep=torch.ones(3, N, dtype=torch.bool)), "shape \\(3, 64\\).*select neurons from a probe of this model"),
    (dict(keep=torch.ones(N, dtype=torch.bool)), "bool tensor \\[n_layers, d_mlp\\]"),
    (dict(baseline=torch.zeros(L, 3, 32)), "baseline has shape.*ProbeResult.baseline"),
    (dict(baseline=torch.zeros(5)), "baseline has shape"),
    (dict(width=N + 1, scores=torch.zeros(L, N)), "width 65 .*outside 0..64.*smaller width"),
    (dict(width=1), "keeps .* neurons but its width is 1"),
    (dict(width=40), "needs scores; pass scores="),
    (dict(width=40, scores=torch.zeros(3, 3)), "scores have shape"),
    (dict(width=[40], layers=[0, 1], scores=torch.zeros(L, N)), "1 widths for 2 layers"),
    (dict(layers=[2]), "layers \\[2\\] do not exist"),
    (dict(position=7), "position must be 'mean' or an int in 0..2"),
])
def test_bad_input_gives_clear_errors(kwargs, match):
    model = tiny_model("causal")
    args = dict(keep=random_keep(0), baseline=random_baseline(0)) | kwargs
    with pytest.raises(PruningError, match=match):
        prune(model, **args)


def test_pruning_a_pruned_model_is_refused():
    model = tiny_model("causal")
    pruned = prune(model, random_keep(0), random_baseline(0))
    with pytest.raises(PruningError, match="already pruned"):
        prune(pruned, random_keep(0), random_baseline(0))


@pytest.mark.parametrize("family", ["causal", "seq2seq"])
def test_retuning_the_prompt_on_the_pruned_model(family, task):
    model = tiny_model(family)
    old = SoftPrompt.init(model, 3, seed=0)
    start = old.embedding.detach().clone()
    pruned = prune(model, random_keep(1), random_baseline(2))
    cfg = TuneConfig(prompt_length=3, steps=4, batch_size=8, eval_every=2, lr=0.1)
    result = tune(pruned, task, cfg, prompt=SoftPrompt(old.embedding, meta=old.meta))
    assert torch.equal(old.embedding, start)  # the old prompt is untouched
    assert not torch.equal(result.prompt.embedding, start)
    assert 0.0 <= result.dev_accuracy <= 1.0
    assert result.prompt.meta["model"] == describe(pruned).name


# ------------------------------------------------------------------ CLI (the rest: tests/test_cli.py)
def test_cli_is_registered():
    from skill_lens.cli import build_parser

    args = build_parser().parse_args(["prune", "RUN", "--keep", "0.02", "--layers", "10-29", "--retune-steps", "5"])
    assert (args.keep, args.layers, args.retune_steps, args.func.__module__) == (0.02, "10-29", 5, "skill_lens.cli.prune")
