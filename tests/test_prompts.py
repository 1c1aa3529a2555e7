"""Soft prompts and their placement, on every tiny family."""

import pytest
import torch

from skill_lens.prompting.prompted_model import PromptedModel
from skill_lens.prompting.prompts import PromptError, SoftPrompt, Verbalizer
from skill_lens.model.tiny import FAMILIES, tiny_model

TEXTS = ["the movie was good", "bad", "a very very dull plot and boring acting"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    return request.param, tiny_model(request.param)


def _pm(model, P=4):
    return PromptedModel(model, SoftPrompt.init(model, P, seed=1), Verbalizer.from_words(model, ["bad", "good"]))


def test_label_logits_equal_the_bridge_forward(family_model):
    family, model = family_model
    pm = _pm(model)
    batch = pm.encode(TEXTS)
    ours = pm.label_logits(batch)
    with model.hooks(fwd_hooks=pm.hooks(batch)):
        if family == "seq2seq":
            dec = torch.zeros(len(TEXTS), 1, dtype=torch.long)
            ref = model(batch.input_ids, attention_mask=batch.attention_mask, decoder_input=dec)[:, 0]
        else:
            ref = model(batch.input_ids, attention_mask=batch.attention_mask)[torch.arange(3), batch.predict_pos]
    torch.testing.assert_close(ours, ref[:, list(pm.verbalizer.token_ids)], atol=1e-5, rtol=1e-5)


def test_prompt_changes_the_output_only_through_its_positions(family_model):
    _, model = family_model
    pm = _pm(model)
    batch = pm.encode(TEXTS)
    before = pm.label_logits(batch)
    pm.prompt.embedding.data += torch.randn(pm.prompt.embedding.shape, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(before, pm.label_logits(batch))
    # prompt positions are the same in every row and hold placeholders
    assert batch.prompt_slice.stop - batch.prompt_slice.start == 4
    assert (batch.attention_mask[:, batch.prompt_slice] == 1).all()
    assert not batch.input_mask[:, batch.prompt_slice].any()


def test_batched_equals_one_by_one(family_model):
    _, model = family_model
    pm = _pm(model)
    together = pm.label_logits(pm.encode(TEXTS))
    alone = torch.cat([pm.label_logits(pm.encode([t])) for t in TEXTS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["causal", "gpt2"])
def test_cached_input_path_matches_and_gives_the_same_gradient(family):
    model = tiny_model(family)
    pm = _pm(model)
    batch = pm.encode(TEXTS)
    full = pm.label_logits(batch)
    full.sum().backward()
    g_full = pm.prompt.embedding.grad.clone()
    pm.prompt.embedding.grad = None
    cached = pm.label_logits(batch, input_cache=True)
    cached.sum().backward()
    torch.testing.assert_close(full, cached, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_full, pm.prompt.embedding.grad, atol=1e-5, rtol=1e-4)


def test_causal_prompt_comes_after_the_input():
    model = tiny_model("causal")
    batch = _pm(model).encode(TEXTS)
    assert batch.prompt_slice.stop == batch.input_ids.shape[1]
    assert (batch.predict_pos == batch.input_ids.shape[1] - 1).all()


def test_multi_token_label_word_is_a_clear_error():
    with pytest.raises(PromptError, match="not a single token"):
        Verbalizer.from_words(tiny_model(), ["good", "unbelievablyterrible"])


def test_text_longer_than_context_is_a_clear_error_unless_truncating():
    model = tiny_model("causal")
    long = " ".join(["good"] * 400)
    with pytest.raises(PromptError, match="max_length"):
        _pm(model).encode([long])
    pm = PromptedModel(model, SoftPrompt.init(model, 4), Verbalizer.from_words(model, ["bad", "good"]), max_length=64)
    assert pm.encode([long]).input_ids.shape[1] == 64


def test_prompt_from_another_model_is_refused(tmp_path):
    small, wide = tiny_model("causal"), tiny_model("causal", d_model=48)
    SoftPrompt.init(small, 4).save(tmp_path / "p.safetensors")
    with pytest.raises(ValueError, match="d_model"):
        SoftPrompt.load(tmp_path / "p.safetensors", wide)
    with pytest.raises(PromptError, match="d_model"):
        PromptedModel(wide, SoftPrompt.load(tmp_path / "p.safetensors"), Verbalizer.from_words(wide, ["bad", "good"]))


def test_bos_follows_the_tokenizer_not_the_bridge():
    # The bridge makes every tokenizer add BOS; SmolLM2's BOS is a chat token that costs accuracy.
    m = tiny_model("causal")  # its word-level tokenizer adds no BOS of its own
    verbalizer = Verbalizer.from_words(m, ["bad", "good"])
    plain = PromptedModel(m, SoftPrompt.init(m, 2), verbalizer)
    with_bos = PromptedModel(m, SoftPrompt.init(m, 2), verbalizer, prepend_bos=True)
    a, b = plain.encode(["good bad"]), with_bos.encode(["good bad"])
    assert a.input_ids[0, 0] != m.tokenizer.bos_token_id
    assert b.input_ids[0, 0] == m.tokenizer.bos_token_id and b.input_ids.shape[1] == a.input_ids.shape[1] + 1
    assert b.input_mask[0].tolist() == [False, True, True, False, False]


def _recorder(order, tag):
    def hook(act, hook):
        order.append(tag)
    return hook


def test_hooks_run_in_one_order_and_with_hooks_leaves_the_model_alone():
    model = tiny_model("causal")
    pm = _pm(model)
    batch, order, name = pm.encode(TEXTS), [], "blocks.0.mlp.hook_post"
    first = pm.with_hooks([(name, _recorder(order, "first"))])
    both = first.with_hooks(lambda b: [(name, _recorder(order, f"second:{b.input_ids.shape[1]}"))])
    both.label_logits(batch, fwd_hooks=[(name, _recorder(order, "call"))])
    assert order == ["first", f"second:{batch.input_ids.shape[1]}", "call"]  # as added, then the call's
    assert [n for n, _ in both.hooks(batch)] == ["embed.hook_out", name, name]
    assert both.model is pm.model and both.prompt is pm.prompt and pm.hooks(batch)[1:] == []
    order.clear()
    pm.label_logits(batch)
    assert order == [] and not any(hp.fwd_hooks for hp in model.hook_dict.values())  # nothing left behind


@pytest.mark.parametrize("prompt_only", [True, False])
def test_only_hooks_that_spare_the_input_let_it_come_from_the_cache(prompt_only):
    from skill_lens.model.tiny import tiny_task
    from skill_lens.prompting.input_cache import InputCache

    model, dev = tiny_model("causal"), tiny_task().dev
    pm, cache = _pm(model), InputCache()
    double = [("blocks.0.mlp.hook_post", lambda act, hook: act * 2)]  # layer 1 reads its input positions
    hooked = pm.with_hooks(double, prompt_only=prompt_only)
    assert (hooked.cache_inputs(dev, cache) is cache) == prompt_only and (len(cache) > 0) == prompt_only
    batch, seen = pm.encode_split(dev, slice(0, 6)), []
    spy = pm.with_hooks(lambda b: seen.append(b.input_ids.shape[1]) or [], prompt_only=prompt_only)
    got = hooked.label_logits(batch, input_cache=cache)
    spy.label_logits(batch, input_cache=cache)
    assert cache.hits == (2 * batch.size if prompt_only else 0)
    assert seen == [pm.prompt_length if prompt_only else batch.input_ids.shape[1]]  # built for the part that runs
    whole = pm.label_logits(batch, fwd_hooks=double)  # the whole batch, hooks everywhere
    if prompt_only:  # the input ran without the hook: only the prompt positions are doubled
        assert not torch.allclose(got, whole, atol=1e-4)
    else:
        assert torch.equal(got, whole)


@pytest.mark.parametrize("family", ["causal", "mlm"])
def test_cache_inputs_only_where_the_input_runs_apart(family):
    from skill_lens.model.tiny import tiny_task
    from skill_lens.prompting.input_cache import InputCache

    model, dev = tiny_model(family), tiny_task().dev
    hard = PromptedModel(model, None, Verbalizer.from_words(model, ["bad", "good"]))
    assert hard.cache_inputs(dev, InputCache()) is None and _pm(model).cache_inputs(dev, None) is None
    cache = InputCache()
    assert (_pm(model).cache_inputs(dev, cache) is cache) == (family == "causal")


def test_run_input_is_the_base_model_on_the_input_alone():
    model = tiny_model("causal")
    pm, ids = _pm(model), torch.tensor([[5, 6, 7, 8]])
    out = pm.run_input(ids).last_hidden_state
    torch.testing.assert_close(out, model.original_model.base_model(input_ids=ids).last_hidden_state)
    with model.hooks(fwd_hooks=[("blocks.1.mlp.hook_post", lambda act, hook: act * 0)]):  # the bridge, with them
        assert not torch.allclose(pm.run_input(ids).last_hidden_state, out, atol=1e-4)
