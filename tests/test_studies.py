"""The papers' analyses on tiny models: known values, identities, shapes and clear errors."""

import json

import numpy as np
import pytest
import torch

from skill_lens.studies.tables import AnalysisError
from skill_lens.studies.transfer import activation_overlap, indicator_correlation, overlap_matrix, transferability
from skill_lens.studies.specificity import cross_task_suppression, specificity_matrix
from skill_lens.studies.origin import label_word_independence, origin_table
from skill_lens.studies.neuron_reading import top_activating_tokens, word_selectivity
from skill_lens.probing.neurons import NeuronSet
from skill_lens.prompting.prompts import PromptError, SoftPrompt
from skill_lens.data.tasks import Task, TaskError
from skill_lens.model.tiny import VOCAB, tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig
from skill_lens.prompting.evaluation import evaluate, hard_prompt_model, prompted


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def task():
    return tiny_task(n_train=32, n_dev=16, n_test=8)


def three_label_task():
    data = (["good", "bad", "the"], [2, 0, 1])
    return Task.from_lists("three", ["neg", "neu", "pos"], ["bad", "the", "good"], train=data, dev=data, test=data)


# ------------------------------------------------------------------ specificity
def test_spearman_of_permutations():
    a = torch.arange(12.0).reshape(2, 6)
    swapped = a.flatten().clone()
    swapped[[3, 4]] = swapped[[4, 3]]  # one adjacent swap: rho = 1 - 6 * 2 / (n (n^2 - 1))
    m = specificity_matrix({"a": a, "rev": a.flip(0).flip(1), "swap": swapped.reshape(2, 6), "same": a.clone()})
    v = m.to_pandas()
    assert v.loc["a", "rev"] == -1.0 and v.loc["a", "same"] == 1.0
    assert v.loc["a", "swap"] == pytest.approx(1 - 12 / (12 * 143))
    assert torch.equal(m.values, m.values.T) and m.within_type is None


def test_within_type_exceeds_cross_type_and_seeds_on_the_diagonal():
    g = torch.Generator().manual_seed(0)
    sentiment, ethics = torch.rand(3, 50, generator=g), torch.rand(3, 50, generator=g)
    noisy = lambda base: base + 0.3 * torch.rand(3, 50, generator=g)  # noqa: E731
    scores = {"rt": [noisy(sentiment), noisy(sentiment)], "tweets": noisy(sentiment),
              "justice": noisy(ethics), "deontology": noisy(ethics)}
    types = {"rt": "sentiment", "tweets": "sentiment", "justice": "ethics", "deontology": "ethics"}
    m = specificity_matrix(scores, types)
    assert m.within_type > 0.5 > m.cross_type
    assert 0.5 < m.values[0, 0] < 1.0 and m.values[1, 1] == 1.0  # two seeds vs one
    assert m.n_seeds == {"rt": 2, "tweets": 1, "justice": 1, "deontology": 1}
    d = json.loads(json.dumps(m.to_dict()))
    assert d["rows"] == list(scores) and len(d["values"]) == 4 and d["within_type"] == pytest.approx(m.within_type)
    assert np.asarray(m).shape == (4, 4)
    from skill_lens.views.plots import heatmap

    assert len(heatmap(m, m.rows).axes) == 2


def test_specificity_errors():
    with pytest.raises(AnalysisError, match="different shapes"):
        specificity_matrix({"a": torch.rand(2, 4), "b": torch.rand(2, 5)})
    with pytest.raises(AnalysisError, match="no entry"):
        specificity_matrix({"a": torch.rand(2, 4), "b": torch.rand(2, 4)}, {"a": "x"})
    with pytest.raises(AnalysisError, match="at least one"):
        specificity_matrix({})


# ------------------------------------------------------------------ transferability and overlap
def test_identical_prompts_transfer_overlap_and_correlate_perfectly(model, task):
    pm = prompted(model, task, SoftPrompt.init(model, 3, seed=1))
    t = transferability({"a": pm, "b": pm}, {"a": task, "b": task})
    assert t.values.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    skill = NeuronSet.from_mask(torch.rand(2, 64, generator=torch.Generator().manual_seed(0)) > 0.8)
    o = activation_overlap(pm, pm, task.dev, neurons=skill)
    assert o.all == 1.0 and o.skill == 1.0 and o.n_examples == len(task.dev)
    assert activation_overlap(pm, pm, task.dev, metric="jaccard").all == 1.0
    x = torch.tensor([[1.0, 0.2, 0.5], [0.7, 1.0, 0.1], [0.3, 0.9, 1.0]])
    assert indicator_correlation(x, x) == 1.0
    assert indicator_correlation(x, x) == 1.0 and indicator_correlation(x, -x) == -1.0


def test_transferability_values_are_relative_accuracies(model, task):
    other = task.with_label_words(["awful", "great"])
    other.name = "other"
    p1 = [prompted(model, task, SoftPrompt.init(model, 2, seed=s)) for s in (0, 1)]
    p2 = prompted(model, other, SoftPrompt.init(model, 4, seed=2))  # lengths may differ for transfer
    t = transferability({"t": p1, "o": p2}, {"t": task, "o": other})
    own_o = evaluate(p2, other.dev)["accuracy"]
    on_o = [evaluate(prompted(model, other, p.prompt), other.dev)["accuracy"] for p in p1]
    assert t.own_accuracy["o"] == pytest.approx(own_o)
    assert t.values[0, 1].item() == pytest.approx(sum(on_o) / 2 / own_o)
    assert t.accuracy[0, 1].item() == pytest.approx(sum(on_o) / 2)
    assert t.values[0, 0].item() == pytest.approx(1.0) and t.values[1, 1].item() == pytest.approx(1.0)
    json.dumps(t.to_dict())


def test_overlap_of_different_prompts_and_matrix(model, task):
    a = prompted(model, task, SoftPrompt.init(model, 2, seed=0, how="normal"))
    b = prompted(model, task, SoftPrompt.init(model, 2, seed=5, how="normal"))
    cos, jac = (activation_overlap(a, b, task.dev, metric=m).all for m in ("cosine", "jaccard"))
    assert 0.0 < jac <= cos < 1.0
    full = NeuronSet.from_mask(torch.ones(2, 64, dtype=torch.bool))
    assert activation_overlap(a, b, task.dev, neurons=full).skill == pytest.approx(cos)
    m = overlap_matrix({"a": a, "b": b}, {"a": task, "b": task}, neurons={"a": full, "b": full})
    assert m.values[0, 1].item() == pytest.approx(cos) and torch.allclose(m.values, m.skill)
    assert m.values.diagonal().tolist() == [1.0, 1.0]


def test_indicator_correlation_known_value_and_errors():
    overlap = {(0, 1): 0.1, (1, 0): 0.2, (0, 2): 0.3, (2, 0): 0.4}
    transfer = {(0, 1): 0.5, (1, 0): 0.4, (0, 2): 0.9, (2, 0): 1.0}  # one swapped pair of ranks
    assert indicator_correlation(overlap, transfer) == pytest.approx(1 - 6 * 2 / (4 * 15))
    with pytest.raises(AnalysisError, match="different pairs"):
        indicator_correlation(overlap, {(0, 1): 1.0})
    with pytest.raises(AnalysisError, match="at least 3"):
        indicator_correlation(torch.eye(2), torch.eye(2))
    with pytest.raises(AnalysisError, match="square"):
        indicator_correlation(torch.ones(2, 3), torch.ones(2, 3))


def test_bad_inputs_give_clear_errors(model, task):
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    three = three_label_task()
    pm3 = prompted(model, three, SoftPrompt.init(model, 2))
    with pytest.raises(AnalysisError, match="same number of labels"):
        transferability({"a": pm, "b": pm3}, {"a": task, "b": three})
    with pytest.raises(AnalysisError, match="same number of labels"):
        cross_task_suppression({"a": pm, "b": pm3}, {"a": task, "b": three}, {"a": torch.rand(2, 64),
                                                                                 "b": torch.rand(2, 64)})
    with pytest.raises(AnalysisError, match="no task"):
        transferability({"a": pm}, {})
    with pytest.raises(AnalysisError, match="no soft prompt"):
        transferability({"a": pm, "b": hard_prompt_model(model, task)}, {"a": task, "b": task})
    longer = prompted(model, task, SoftPrompt.init(model, 3))
    with pytest.raises(PromptError, match="lengths 2 and 3"):
        activation_overlap(pm, longer, task.dev)
    with pytest.raises(AnalysisError, match="takes a SoftPrompt"):
        origin_table(model, task, 2)
    with pytest.raises(TypeError):
        origin_table(model, task, SoftPrompt.init(model, 2), [0, 1])  # seeds are keyword-only
    with pytest.raises(AnalysisError, match="metric"):
        activation_overlap(pm, pm, task.dev, metric="dice")
    with pytest.raises(AnalysisError, match="different models"):
        transferability({"a": pm, "b": prompted(tiny_model(seed=1), task, SoftPrompt.init(model, 2))},
                        {"a": task, "b": task})


# ------------------------------------------------------------------ cross-task suppression, origin, label words
def test_cross_task_suppression_drops(model, task):
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    scores = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
    m = cross_task_suppression({"a": pm, "b": pm}, {"a": task, "b": task}, {"a": scores, "b": scores}, top=1.0,
                               method="zero")
    clean = evaluate(pm, task.dev)["accuracy"]
    ablated = evaluate(pm, task.dev, fwd_hooks=[(f"blocks.{l}.mlp.hook_post", _zero_prompt(pm, task)) for l in (0, 1)])
    assert m.own_accuracy == {"a": clean, "b": clean}
    assert torch.allclose(m.values, torch.full((2, 2), clean - ablated["accuracy"], dtype=torch.float64))
    with pytest.raises(AnalysisError, match="no neuron scores"):
        cross_task_suppression({"a": pm}, {"a": task}, {})
    with pytest.raises(AnalysisError, match="baselines"):
        cross_task_suppression({"a": pm}, {"a": task}, {"a": scores}, method="mean")


def _zero_prompt(pm, task):
    sl = pm.encode(task.dev.texts[:1]).prompt_slice  # the prompt is always the last P positions (causal)

    def hook(act, hook):
        act = act.clone()
        act[:, act.shape[1] - (sl.stop - sl.start):] = 0
        return act
    return hook


def test_origin_table_shape(model, task):
    t = origin_table(model, task, SoftPrompt.init(model, 2, seed=3), seeds=[0, 1])
    df = t.to_pandas()
    assert list(df["condition"]) == ["tuned prompt", "random prompt", "hard prompt", "random model"]
    assert list(df.columns) == ["condition", "top1", "top1%", "top1_std", "top1%_std", "n"]
    assert list(df["n"]) == [1, 2, 1, 2]
    assert ((df["top1"] >= df["top1%"]) & (df["top1%"] >= 0.5) & (df["top1"] <= 1.0)).all()
    json.dumps(t.to_dict())


def test_label_word_independence(model, task):
    cfg = TuneConfig(prompt_length=2, steps=4, eval_every=2, lr=0.1)
    r = label_word_independence(model, task, [["bad", "good"], ["awful", "great"], ["poor", "nice"]], cfg)
    assert r.rows == ["bad/good", "awful/great", "poor/nice"] and r.values.shape == (3, 3)
    off = r.values[~torch.eye(3, dtype=torch.bool)]
    assert r.mean_pairwise == pytest.approx(off.mean().item())
    assert set(r.dev_accuracy) == set(r.rows)
    with pytest.raises(AnalysisError, match="at least two"):
        label_word_independence(model, task, [["bad", "good"]], cfg)
    with pytest.raises(AnalysisError, match="twice"):
        label_word_independence(model, task, [["bad", "good"], ["bad", "good"]], cfg)
    with pytest.raises(TaskError, match="2 labels"):
        label_word_independence(model, task, [["bad", "good"], ["bad", "the", "good"]], cfg)


# ------------------------------------------------------------------ tokens
def _param(model, suffix):
    params = {n.replace("._original_component", ""): p for n, p in model.original_model.named_parameters()}
    return next(p for n, p in params.items() if n.endswith(suffix))


@pytest.mark.parametrize("family,suffix,column", [
    ("causal", "layers.1.mlp.gate_proj.weight", False),
    ("gpt2", "h.1.mlp.c_fc.weight", True),
    ("mlm", "layer.1.intermediate.dense.weight", False),
    ("seq2seq", "encoder.block.1.layer.1.DenseReluDense.wi.weight", False),
])
def test_word_selectivity_finds_the_hand_set_token(family, suffix, column):
    m = tiny_model(family)
    emb = m.original_model.get_input_embeddings().weight
    with torch.no_grad():
        w = _param(m, suffix)
        target = emb[VOCAB.index("superb")] - emb[VOCAB.index("dull")]
        if column:
            w[:, 7] = target
        else:
            w[7] = target
    t = word_selectivity(m, 1, 7, k=3)
    assert t.top[0]["token"] == "superb" and t.bottom[0]["token"] == "dull"
    assert t.top[0]["cosine"] > t.top[1]["cosine"] and len(t.bottom) == 3
    assert list(t.to_pandas()["end"]) == ["top"] * 3 + ["bottom"] * 3


def test_word_selectivity_up_projection_and_errors(model):
    with torch.no_grad():
        _param(model, "layers.0.mlp.up_proj.weight")[2] = model.original_model.get_input_embeddings().weight[
            VOCAB.index("lovely")]
    assert word_selectivity(model, 0, 2, k=1, projection="up").top[0]["token"] == "lovely"
    with pytest.raises(AnalysisError, match="layer 5"):
        word_selectivity(model, 5, 0)
    with pytest.raises(AnalysisError, match="neuron 64"):
        word_selectivity(model, 0, 64)
    with pytest.raises(AnalysisError, match="found no 'fc'"):
        word_selectivity(model, 0, 0, projection="fc")


def test_top_activating_tokens_matches_direct_means(model, task):
    from skill_lens.probing.capture import activations

    pm = prompted(model, task, SoftPrompt.init(model, 2))
    split = task.dev
    t = top_activating_tokens(pm, split, 1, 9, k=40, batch_size=5)
    per_example = activations(pm, split, [(1, 9)], positions="all")
    sums, counts = {}, {}
    for i, (tokens, acts) in enumerate(per_example):
        body = pm.encode([split.texts[i]]).input_mask[0]
        body = body[body.shape[0] - len(tokens):]
        for tok, a, keep in zip(tokens, acts[:, 0].tolist(), body.tolist()):
            if keep:
                sums[tok], counts[tok] = sums.get(tok, 0.0) + a, counts.get(tok, 0) + 1
    expected = {tok: sums[tok] / counts[tok] for tok in sums}
    assert len(t.top) == min(40, len(expected))
    for row in t.top:
        assert row["mean"] == pytest.approx(expected[row["token"]], abs=1e-5)
        assert row["count"] == counts[row["token"]]
    assert t.top[0]["mean"] == pytest.approx(max(expected.values()), abs=1e-5)
    assert t.bottom[0]["mean"] == pytest.approx(min(expected.values()), abs=1e-5)
    with pytest.raises(AnalysisError, match="min_count"):
        top_activating_tokens(pm, split, 1, 9, min_count=10_000)
