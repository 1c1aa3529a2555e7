"""The fast path (skill_lens.model.fast_path): same numbers as the bridge's own forward, hooks still honoured."""

import pytest
import torch
from transformer_lens.hook_points import HookPoint

from skill_lens.prompting import prompted_model
from skill_lens.model.fast_path import plain_model, reconstructing_layers
from skill_lens.prompting.input_cache import InputCache
from skill_lens.prompting.prompted_model import PromptedModel
from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
from skill_lens.model.tiny import tiny_model, tiny_task


def _every_layer_hooked(model):
    """A no-op pattern hook on every layer: the bridge then re-implements attention everywhere."""
    return [(f"blocks.{l}.attn.hook_pattern", lambda act, hook: act) for l in range(model.cfg.n_layers)]


@pytest.mark.parametrize("family", ["causal", "gpt2"])
def test_fast_attention_equals_the_bridge_reimplementation_with_padding(family):
    model = tiny_model(family)
    ids = torch.randint(5, 30, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = 0  # left padding, as causal batches are laid out
    kw = dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    fast = model.original_model(**kw).logits
    with model.hooks(fwd_hooks=_every_layer_hooked(model)):
        assert reconstructing_layers(model) == model.cfg.n_layers
        slow = model.original_model(**kw).logits
    assert torch.allclose(fast[mask.bool()], slow[mask.bool()], atol=1e-5)


def test_a_cached_prompt_step_has_the_same_loss_and_gradient_either_way():
    model, task = tiny_model("causal"), tiny_task()
    pm = PromptedModel(model, SoftPrompt.init(model, 3, seed=0), Verbalizer.from_words(model, task.label_words))
    cache = InputCache()
    assert cache.fill(pm, task.train)
    batch, labels = pm.encode_split(task.train, range(12)), torch.tensor(task.train.labels[:12])

    def loss_and_grad(hooks):
        pm.prompt.embedding.grad = None
        logits = pm.with_hooks(hooks, prompt_only=True).label_logits(batch, input_cache=cache)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        return loss.detach(), pm.prompt.embedding.grad.clone()

    (fast_loss, fast_grad), (slow_loss, slow_grad) = loss_and_grad([]), loss_and_grad(_every_layer_hooked(model))
    assert torch.allclose(fast_loss, slow_loss, atol=1e-6)
    assert torch.allclose(fast_grad, slow_grad, atol=1e-6)
    assert fast_grad.abs().sum() > 0


def test_attention_hooks_still_fire_and_act():
    model = tiny_model("causal")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    seen = []

    def uniform(pattern, hook):  # replace layer 0's attention pattern: the output must change
        seen.append(hook.name)
        causal = torch.ones_like(pattern).tril()
        return causal / causal.sum(-1, keepdim=True)

    plain = model.original_model(input_ids=ids).logits
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)]):
        patched = model.original_model(input_ids=ids).logits
    assert seen == ["blocks.0.attn.hook_pattern"]
    assert not torch.allclose(plain, patched, atol=1e-4)


def test_mlp_hooks_keep_fast_attention_and_nothing_leaks_on_errors():
    model = tiny_model("causal")
    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", lambda act, hook: act)]):
        assert reconstructing_layers(model) == 0
    with pytest.raises(RuntimeError):
        with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", lambda act, hook: act)]):
            assert reconstructing_layers(model) == 1
            raise RuntimeError("boom")
    assert reconstructing_layers(model) == 0


def test_compatibility_mode_keeps_the_bridge_attention():
    model = tiny_model("causal")
    for component in model.original_model.modules():
        if hasattr(component, "compatibility_mode"):
            component.compatibility_mode = True  # what enable_compatibility_mode() sets on every component
    try:
        assert reconstructing_layers(model) == model.cfg.n_layers
    finally:
        for component in model.original_model.modules():
            if hasattr(component, "compatibility_mode"):
                component.compatibility_mode = False


@pytest.mark.parametrize("family", ["causal", "gpt2"])
def test_every_hook_point_fires_alone_as_often_as_when_everything_is_hooked(family):
    """A hook on one point makes its component take the bridge's path: it fires as it would with every
    point hooked (where no component takes the fast path), and an identity hook changes nothing."""
    model = tiny_model(family)
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 7, 8, 9]])
    kw = dict(input_ids=ids, attention_mask=(ids > 0).long())
    names = [n for n in model.hook_dict if (n.startswith("blocks.0.") or not n.startswith("blocks.")) and _hookable(model, n)]

    def run(hooked):
        fired = []
        record = lambda act, hook: fired.append(hook.name)  # noqa: E731
        with model.hooks(fwd_hooks=[(n, record) for n in hooked]):
            return model.original_model(**kw).logits, fired

    plain, _ = run([])
    _, everything = run(list({id(model.hook_dict[n]): n for n in names}.values()))  # each point once (aliases)
    assert len(set(everything)) > 20
    for name in names:
        logits, fired = run([name])
        assert len(fired) == everything.count(model.hook_dict[name].name), name
        real = kw["attention_mask"].bool()  # padded positions' outputs are not defined
        assert torch.allclose(logits[real], plain[real], atol=1e-5), name


@pytest.mark.filterwarnings("ignore:A forward hook edited")  # the bridge's note that an edited norm recomputes
def test_normalization_and_projection_hooks_act():
    model = tiny_model("causal")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    plain = model.original_model(input_ids=ids).logits
    for name in ("blocks.0.ln1.hook_normalized", "blocks.0.mlp.hook_post", "blocks.1.attn.q.hook_out"):
        with model.hooks(fwd_hooks=[(name, lambda act, hook: 0 * act)]):
            assert not torch.allclose(model.original_model(input_ids=ids).logits, plain, atol=1e-4), name


@pytest.mark.parametrize("family", ["causal", "gpt2"])
@pytest.mark.parametrize("cached", [False, True])
def test_the_plain_model_gives_the_bridges_logits_and_gradients(family, cached, monkeypatch):
    model, task = tiny_model(family), tiny_task()
    pm = PromptedModel(model, SoftPrompt.init(model, 3, seed=0), Verbalizer.from_words(model, task.label_words))
    cache = InputCache() if cached else None
    batch, labels = pm.encode_split(task.train, range(12)), torch.tensor(task.train.labels[:12])

    def loss_and_grad():
        pm.prompt.embedding.grad = None
        logits = pm.label_logits(batch, input_cache=cache)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        return logits.detach(), pm.prompt.embedding.grad.clone()

    assert plain_model(model) is not None
    plain = loss_and_grad()
    with monkeypatch.context() as m:  # the bridge, as when something is hooked
        m.setattr(prompted_model, "plain_model", lambda model: None)  # the one place a forward picks it
        if cached:
            cache = InputCache()
        bridged = loss_and_grad()
    assert torch.equal(plain[0], bridged[0]) and torch.equal(plain[1], bridged[1])
    assert plain[1].abs().sum() > 0


def test_the_plain_model_shares_the_weights_and_steps_aside_for_any_hook():
    model = tiny_model("causal")
    plain = plain_model(model)
    assert {id(p) for p in plain.parameters()} == {id(p) for p in model.original_model.parameters()}
    assert not any(isinstance(m, HookPoint) for m in plain.modules())
    assert plain_model(model) is plain  # kept
    with model.hooks(fwd_hooks=[("blocks.1.hook_out", lambda act, hook: act)]):
        assert plain_model(model) is None
    handle = model.blocks[0].mlp.register_forward_pre_hook(lambda module, args: None)  # a torch hook on a bridge
    assert plain_model(model) is None
    handle.remove()
    model.blocks[0].attn.compatibility_mode = True
    assert plain_model(model) is None
    model.blocks[0].attn.compatibility_mode = False
    assert plain_model(model) is plain
    assert plain_model(tiny_model("mlm")) is None  # its bridge hooks its own MLP halves together: it must run


def test_the_plain_model_follows_replaced_modules_and_train_mode():
    model = tiny_model("causal")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    plain = plain_model(model)
    mlp = model.original_model.model.layers[0].mlp  # a bridge; its original's projection is replaced below
    down = mlp.original_component.down_proj
    new = torch.nn.Linear(down.in_features, down.out_features, bias=False)
    torch.nn.init.zeros_(new.weight)
    down.set_original_component(new)
    try:
        rebuilt = plain_model(model)
        assert rebuilt is not plain
        assert torch.equal(rebuilt(input_ids=ids).logits, model.original_model(input_ids=ids).logits)
        model.train()
        assert all(m.training for m in plain_model(model).modules())
    finally:
        model.eval()
    assert not any(m.training for m in plain_model(model).modules())


def _hookable(model, name):
    """Some hook points need a switch first (``set_use_hook_mlp_in``); those are not this test's business."""
    try:
        with model.hooks(fwd_hooks=[(name, lambda act, hook: act)]):
            return True
    except ValueError:
        return False
