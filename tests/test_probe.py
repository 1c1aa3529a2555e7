"""The streaming probe against a brute-force computation on the same activations, and its errors."""

from __future__ import annotations

import random

import pytest
import torch

from skill_lens.store.artifacts import ArtifactError, load_tensors
from skill_lens.data.batching import in_order, length_batches
from skill_lens.model.loading import bridge_from_hf, describe
from skill_lens.probing.result import ProbeError, ProbeResult
from skill_lens.probing.capture import CaptureError, activations
from skill_lens.probing.probe import probe, probe_random_prompt
from skill_lens.prompting.prompts import PromptError, SoftPrompt
from skill_lens.model.tiny import FAMILIES, tiny_model, tiny_task, tiny_tokenizer
from skill_lens.prompting.evaluation import hard_prompt_model, prompted


def ragged_task(n_train=19, n_dev=11, n_test=7, seed=0, labels=None):
    """The tiny sentiment task with texts of different lengths (so batches are padded)."""
    from skill_lens.data.tasks import Task

    base, rng = tiny_task(n_train, n_dev, n_test, seed), random.Random(seed)

    def cut(split):
        texts = [" ".join(t.split()[: rng.randint(1, 5)] + ["very"] * rng.randint(0, 3)) for t in split.texts]
        return texts, list(split.labels) if labels is None else [labels[i % len(labels)] for i in range(len(texts))]

    k = max(2, len(labels or ()))
    return Task.from_lists("ragged", ["negative", "positive", "neutral"][:k], ["bad", "good", "fine"][:k],
                           train=cut(base.train),
                           dev=cut(base.dev), test=cut(base.test), hard_prompt="review : {text} \n sentiment :")


def relu_gpt2():
    """A GPT-2-style model with ReLU: many activations are exactly 0, ties with a zero baseline."""
    import transformers as tf

    torch.manual_seed(1)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=256,
                                          vocab_size=32, activation_function="relu", pad_token_id=0,
                                          bos_token_id=1, eos_token_id=2))
    return bridge_from_hf(hf, tiny_tokenizer(), name="tiny-relu-gpt2")


def collect(pm, split, batch_size, hook_names, pick):
    """All activations at the probed positions [n, L, P, N], in the split's order, as a test would by hand
    (in the probe's length-sorted batches, so the floats are the same bit for bit)."""
    rows, batches = [], length_batches(pm, split, batch_size)
    for idx in batches:
        batch, got = pm.encode([split.texts[i] for i in idx]), {}
        hooks = [(h, lambda act, hook, h=h: got.__setitem__(h, act.detach().clone())) for h in hook_names]
        with torch.no_grad():
            pm.label_logits(batch, fwd_hooks=hooks)
        rows.append(torch.stack([pick(got[h], batch) for h in hook_names], dim=1))
    return in_order(rows, batches)


def brute(train, evals, labels):
    baseline = train.double().mean(0)
    y = torch.as_tensor(labels).view(-1, *[1] * (evals.dim() - 1))
    return baseline.float(), ((evals.double() > baseline) == y.bool()).double().mean(0).float()


def prompt_pick(act, batch):
    return act[:, batch.prompt_slice]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_streaming_equals_brute_force(family, batch_size):
    model, task = tiny_model(family), ragged_task()
    pm = prompted(model, task, SoftPrompt.init(model, 3, seed=2))
    result = probe(pm, task, batch_size=batch_size)
    names = describe(model).hook_names
    train = collect(pm, task.train, batch_size, names, prompt_pick)
    for split, acc in (("dev", result.dev_acc), ("test", result.test_acc)):
        base, want = brute(train, collect(pm, getattr(task, split), batch_size, names, prompt_pick),
                           getattr(task, split).labels)
        assert torch.equal(result.baseline, base)
        assert torch.equal(acc, want)
    assert result.baseline.shape == (2, 3, 64) and result.dev_acc.dtype == torch.float32
    assert result.sizes == {"train": 19, "dev": 11, "test": 7}
    assert result.scores().shape == (2, 64) and (result.scores() >= 0.5).all()


def test_batch_size_changes_little():
    model, task = tiny_model("causal"), ragged_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    a, b = probe(pm, task, batch_size=1), probe(pm, task, batch_size=8)
    torch.testing.assert_close(a.baseline, b.baseline, atol=1e-5, rtol=1e-5)
    assert (a.dev_acc - b.dev_acc).abs().max() <= 1 / 11 + 1e-6  # a near-tie may flip one example at most


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_ties_at_the_threshold_count_as_not_above(batch_size):
    model, task = relu_gpt2(), ragged_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    result = probe(pm, task, batch_size=batch_size)
    names = describe(model).hook_names
    train = collect(pm, task.train, batch_size, names, prompt_pick)
    dev = collect(pm, task.dev, batch_size, names, prompt_pick)
    assert (train == 0).all(0).any(), "the test needs neurons that never fire (ties with a 0 baseline)"
    base, want = brute(train, dev, task.dev.labels)
    assert torch.equal(result.dev_acc, want)
    dead = (train == 0).all(0) & (dev == 0).all(0)
    frac_negative = 1 - sum(task.dev.labels) / len(task.dev)  # never "above": predicts 0 for everyone
    assert torch.allclose(result.dev_acc[dead], torch.tensor(frac_negative))


def test_accumulator_uses_strict_greater_than():
    from skill_lens.probing.statistics import AgreementAccumulator

    acc = AgreementAccumulator()
    acts = torch.zeros(4, 1, 1, 1)
    acc.add(acts, torch.tensor([0, 0, 0, 1]), torch.zeros(1, 1, 1))
    assert acc.accuracy().item() == 0.75


def test_hard_prompt_probes_the_prediction_position():
    model, task = tiny_model("mlm"), ragged_task()
    pm = hard_prompt_model(model, task)
    result = probe(pm, task, batch_size=3)
    pick = lambda act, batch: act[torch.arange(act.shape[0]), batch.predict_pos].unsqueeze(1)  # noqa: E731
    names = describe(model).hook_names
    base, want = brute(collect(pm, task.train, 3, names, pick), collect(pm, task.dev, 3, names, pick), task.dev.labels)
    assert result.baseline.shape == (2, 1, 64)
    assert torch.equal(result.baseline, base) and torch.equal(result.dev_acc, want)
    assert result.meta["prompt_source"]["prompt"] == "hard"


def test_decoder_hooks_probe_the_decoder_position():
    model, task = tiny_model("seq2seq"), ragged_task()
    pm = prompted(model, task, SoftPrompt.init(model, 3))
    names = describe(model).decoder_hook_names
    result = probe(pm, task, batch_size=4, hook_names=names)
    pick = lambda act, batch: act[:, :1]  # noqa: E731
    base, want = brute(collect(pm, task.train, 4, names, pick), collect(pm, task.dev, 4, names, pick), task.dev.labels)
    assert result.hook_names == names and result.baseline.shape == (2, 1, 64)
    assert torch.equal(result.dev_acc, want)


@pytest.mark.parametrize("family", ["causal", "mlm"])
def test_pooling_equals_brute_force(family):
    model, task = tiny_model(family), ragged_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    result = probe(pm, task, batch_size=3, pooling=True)
    names = describe(model).hook_names

    def pooled(how):
        def pick(act, batch):
            m = batch.input_mask.unsqueeze(-1)
            if how == "mean":
                return ((act * m).sum(1) / m.sum(1).clamp(min=1)).unsqueeze(1)
            return act.masked_fill(~m, float("-inf")).max(1).values.unsqueeze(1)
        return pick

    for how in ("mean", "max"):
        train, dev = (collect(pm, s, 3, names, pooled(how)) for s in (task.train, task.dev))
        _, want = brute(train, dev, task.dev.labels)
        assert torch.equal(getattr(result, f"{how}_pool_dev_acc"), want[:, 0])
        assert result.per_position(f"{how}_pool_dev").shape == (2, 64)
    assert result.mean_pool_test_acc.shape == (2, 64)


def test_save_load_round_trip_and_mismatch(tmp_path):
    model, task = tiny_model("causal"), ragged_task()
    result = probe(prompted(model, task, SoftPrompt.init(model, 2)), task, pooling=True)
    path = tmp_path / "predictivity.safetensors"
    result.save(path)
    back = ProbeResult.load(path, model)
    for key in ("baseline", "dev_acc", "test_acc", "mean_pool_dev_acc", "max_pool_dev_acc"):
        assert torch.equal(getattr(back, key), getattr(result, key))
    assert back.hook_names == result.hook_names and back.sizes == result.sizes
    assert back.meta["task_fingerprint"] == task.fingerprint()
    tensors, _ = load_tensors(path)
    assert {"baseline", "dev_acc", "test_acc"} <= set(tensors)
    with pytest.raises(ArtifactError, match="model"):
        ProbeResult.load(path, tiny_model("gpt2"))
    with pytest.raises(ProbeError, match="pooling"):
        probe(prompted(model, task, None), task, splits=("dev",)).per_position("mean_pool_dev")


def test_prompt_of_another_model_is_refused(tmp_path):
    model = tiny_model("causal")
    SoftPrompt.init(model, 2).save(tmp_path / "p.safetensors")
    with pytest.raises(ArtifactError):
        SoftPrompt.load(tmp_path / "p.safetensors", tiny_model("causal", d_model=48))
    with pytest.raises(PromptError, match="d_model"):
        prompted(tiny_model("causal", d_model=48), ragged_task(), SoftPrompt.init(model, 2))


def test_bad_inputs_give_clear_errors():
    model = tiny_model("causal")
    task = ragged_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    with pytest.raises(ProbeError, match="binarize"):
        probe(pm, ragged_task(labels=[0, 1, 2]))
    with pytest.raises(ProbeError, match="both classes"):
        probe(pm, ragged_task(labels=[1]))
    with pytest.raises(ProbeError, match="valid: blocks.0.mlp.hook_post"):
        probe(pm, task, hook_names=["blocks.9.mlp.hook_post"])
    with pytest.raises(ProbeError, match="batch size"):
        probe(pm, task, batch_size=0)
    with pytest.raises(ProbeError, match="split"):
        probe(pm, task, splits=("train",))
    with pytest.raises(ProbeError, match=r"non-finite activations at blocks\.0\.mlp\.hook_post;"):  # not an alias
        probe(prompted(model, task, SoftPrompt(torch.full((2, 32), float("nan")))), task)
    assert not model.hook_dict["blocks.0.mlp.hook_post"].fwd_hooks, "hooks must be removed after an error"
    with pytest.raises(CaptureError, match="not in 2 layers"):
        activations(pm, task.dev, [(5, 0)])


def test_activations_match_the_probed_values(tmp_path):
    model, task = tiny_model("causal"), ragged_task()
    pm = prompted(model, task, SoftPrompt.init(model, 3))
    neurons = [(1, 5), (0, 7)]
    acts = activations(pm, task.dev, neurons, batch_size=4)
    full = collect(pm, task.dev, 4, describe(model).hook_names, prompt_pick)  # [n, L, P, N]
    # activations streams rows in the split's order, the probe runs length-sorted batches: float rounding apart
    assert torch.allclose(acts, torch.stack([full[:, 1, :, 5], full[:, 0, :, 7]], dim=1), atol=1e-6)
    path = activations(pm, task.dev, neurons, batch_size=4, out=tmp_path / "a.safetensors")
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["activations"], acts) and meta["neurons"] == [[1, 5], [0, 7]]

    rows = activations(pm, task.dev, neurons, positions="all", batch_size=4)
    assert len(rows) == len(task.dev)
    for (tokens, a), p in zip(rows, acts):
        assert len(tokens) == a.shape[0] and torch.allclose(a[-3:].T, p, atol=1e-5)
    path = activations(pm, task.dev, neurons, positions="all", batch_size=4, out=tmp_path / "b.safetensors")
    tensors, _ = load_tensors(path)
    off = tensors["offsets"]
    assert off[-1] == tensors["activations"].shape[0] == tensors["token_ids"].shape[0]
    assert torch.equal(tensors["activations"][off[2] : off[3]], rows[2][1])


def test_random_prompt_and_random_model():
    from skill_lens.model.loading import random_init_copy

    model, task = tiny_model("causal"), ragged_task()
    r = probe_random_prompt(random_init_copy(model, seed=3), task, P=2, splits=("dev",))
    assert r.dev_acc.shape == (2, 2, 64) and r.test_acc is None


def test_scores_take_the_split_then_the_aggregate():
    dev, test = torch.rand(2, 3, 5), torch.rand(2, 3, 5)
    r = ProbeResult(torch.zeros(2, 3, 5), dev, test)
    pd, pt = torch.maximum(dev, 1 - dev), torch.maximum(test, 1 - test)
    assert torch.equal(r.scores(), pd.amax(1)) and torch.equal(r.scores("test"), pt.amax(1))
    assert torch.equal(r.scores("test", "mean"), pt.mean(1))
    assert torch.equal(r.scores(split="test", aggregate="mean"), pt.mean(1))
    assert torch.equal(r.scores(aggregate="mean"), pd.mean(1))
    for bad in (("train",), ("dev", "median"), ("max",), ("max", "test"), ("median", "test")):
        with pytest.raises(ProbeError, match="split is one of 'dev', 'test'.* aggregate 'max' or 'mean'"):
            r.scores(*bad)
    with pytest.raises(ProbeError, match="no 'mean_pool_dev' accuracies"):
        r.scores("mean_pool_dev")
