"""The tensor core against brute force: accumulators, aggregation, selection, subtask merge, Spearman."""

from __future__ import annotations

import pytest
import torch

from skill_lens.probing.scores import aggregate_positions, combine_runs, merge_subtasks, predictivity, rank, select_top, spearman, top_k_overlap
from skill_lens.probing.statistics import AgreementAccumulator, MeanAccumulator

B_TRAIN, B_DEV, L, P, N = 13, 17, 2, 3, 5


def int_acts(n, seed):
    """Small integer-valued activations [n L P N]: many exact ties with the (integer) baselines."""
    return torch.randint(-2, 3, (n, L, P, N), generator=torch.Generator().manual_seed(seed)).float()


def batches(x, size):
    return [x[i : i + size] for i in range(0, len(x), size)]


@pytest.fixture
def data():
    train = int_acts(B_TRAIN, 0)
    train[:, 0, 0, 0] = 1.0  # a constant neuron: every dev value 1.0 ties with its baseline
    dev = int_acts(B_DEV, 1)
    dev[:, 0, 0, 0] = 1.0
    labels = torch.randint(0, 2, (B_DEV,), generator=torch.Generator().manual_seed(2))
    return train, dev, labels


def brute_acc(train, dev, labels):
    base = train.double().mean(0)
    hits = [[(dev[i].double() > base) == bool(labels[i]) for i in range(len(dev))]]
    return torch.stack(hits[0]).double().mean(0), base


@pytest.mark.parametrize("size", [1, 3, 7, 100])
def test_accumulators_match_brute_force_for_any_batch_size(data, size):
    train, dev, labels = data
    want, base = brute_acc(train, dev, labels)
    mean = MeanAccumulator()
    for b in batches(train, size):
        mean.add(b)
    assert mean.count == B_TRAIN and torch.equal(mean.mean(), base)
    agree = AgreementAccumulator()
    for b, y in zip(batches(dev, size), batches(labels, size)):
        agree.add(b, y, mean.mean())
    assert agree.n == B_DEV and torch.equal(agree.accuracy(), want)


def test_ties_with_the_baseline_count_as_not_above(data):
    train, dev, labels = data
    base = MeanAccumulator().add(train).mean()
    assert (dev == base).any(), "the data must hold exact ties for this test to mean anything"
    acc = AgreementAccumulator().add(dev, labels, base).accuracy()
    assert acc[0, 0, 0] == (labels == 0).double().mean()  # never above: agrees exactly with the 0 labels
    ge = ((dev.double() >= base) == labels.bool().view(-1, 1, 1, 1)).double().mean(0)
    assert not torch.equal(acc, ge), ">= must give different accuracies on this data"


def test_mean_float32_and_bool_labels(data):
    train, dev, labels = data
    m = MeanAccumulator().add(train)
    assert m.mean(torch.float32).dtype == torch.float32 and m.mean().dtype == torch.float64
    a = AgreementAccumulator().add(dev, labels, m.mean())
    b = AgreementAccumulator().add(dev, labels.bool(), m.mean())
    assert torch.equal(a.agree, b.agree)


def test_merge_equals_single_pass_and_state_dict_round_trips(data):
    train, dev, labels = data
    whole = MeanAccumulator().add(train)
    parts = [MeanAccumulator().add(b) for b in batches(train, 4)]
    merged = MeanAccumulator()
    for p in parts:
        merged.merge(MeanAccumulator.from_state_dict(p.state_dict()))
    assert merged.count == whole.count and torch.allclose(merged.sum, whole.sum, rtol=0, atol=1e-12)

    base = whole.mean()
    full = AgreementAccumulator().add(dev, labels, base)
    a = AgreementAccumulator().add(dev[:5], labels[:5], base)
    b = AgreementAccumulator().add(dev[5:], labels[5:], base)
    merged_acc = AgreementAccumulator.from_state_dict(a.state_dict()).merge(b).merge(AgreementAccumulator())
    assert merged_acc.n == B_DEV and torch.equal(merged_acc.agree, full.agree)
    state = full.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and state["n"].item() == B_DEV
    assert torch.equal(AgreementAccumulator.from_state_dict(state).accuracy(), full.accuracy())


def test_accumulator_errors(data):
    train, dev, labels = data
    base = MeanAccumulator().add(train).mean()
    with pytest.raises(ValueError, match="0/1.*binary subtasks"):
        AgreementAccumulator().add(dev, labels + 1, base)
    with pytest.raises(ValueError, match="one per example"):
        AgreementAccumulator().add(dev, labels[:3], base)
    with pytest.raises(ValueError, match="baseline has shape"):
        AgreementAccumulator().add(dev, labels, base[:1])
    bad = dev.clone()
    bad[4, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite activations in layer 1.*dtype"):
        AgreementAccumulator().add(bad, labels, base)
    with pytest.raises(ValueError, match="non-finite activations in layer 1"):
        MeanAccumulator().add(bad.clone().fill_(0).index_fill_(1, torch.tensor([1]), float("inf")))
    m = MeanAccumulator().add(train)
    with pytest.raises(ValueError, match="do not match"):
        m.add(train[:, :1])
    with pytest.raises(ValueError, match="cannot merge"):
        m.merge(MeanAccumulator().add(train[:, :1]))
    with pytest.raises(ValueError, match=r"\[batch layer pos d_mlp\]"):
        m.add(train[0])
    with pytest.raises(ValueError, match="no activations"):
        MeanAccumulator().mean()
    with pytest.raises(ValueError, match="no examples"):
        AgreementAccumulator().accuracy()
    with pytest.raises(ValueError, match="empty accumulator"):
        AgreementAccumulator().state_dict()


def test_predictivity_and_aggregation():
    acc = torch.tensor([[[0.1, 0.6], [0.5, 0.7]]])  # [1 layer, 2 pos, 2 neurons]
    pred = predictivity(acc)
    assert torch.allclose(pred, torch.tensor([[[0.9, 0.6], [0.5, 0.7]]]))
    assert torch.allclose(aggregate_positions(pred), torch.tensor([[0.9, 0.7]]))
    assert torch.allclose(aggregate_positions(pred, "mean"), torch.tensor([[0.7, 0.65]]))
    runs = [torch.tensor([[0.5, 1.0]]), torch.tensor([[0.75, 0.5]])]
    assert combine_runs(runs).tolist() == [[0.625, 0.75]]
    assert torch.equal(combine_runs(torch.stack(runs), "min"), combine_runs(runs, "min"))
    with pytest.raises(ValueError, match="different shapes"):
        combine_runs([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="'max' or 'mean'"):
        aggregate_positions(pred, "median")
    with pytest.raises(ValueError, match="no runs"):
        combine_runs([])


def test_rank_breaks_ties_by_layer_then_index():
    scores = torch.tensor([[0.5, 0.9, 0.5], [0.9, 0.5, 0.1]])
    assert rank(scores).tolist() == [[0, 1], [1, 0], [0, 0], [0, 2], [1, 1], [1, 2]]
    const = torch.zeros(3, 4)
    assert rank(const).tolist() == [[layer, i] for layer in range(3) for i in range(4)]


def test_rank_is_a_sort_by_score():
    scores = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    got = [scores[l, n].item() for l, n in rank(scores).tolist()]  # noqa: E741
    assert got == sorted(scores.flatten().tolist(), reverse=True)


def test_select_top_counts_global_and_per_layer():
    scores = torch.rand(3, 50, generator=torch.Generator().manual_seed(0))
    assert select_top(scores, 0.1).sum() == 15 and select_top(scores, 7).sum() == 7
    per = select_top(scores, 0.1, per_layer=True)
    assert per.sum(1).tolist() == [5, 5, 5]
    assert select_top(scores, 2, per_layer=True).sum(1).tolist() == [2, 2, 2]
    assert select_top(scores, 1.0).all() and select_top(scores, 0.001).sum() == 1
    assert select_top(torch.zeros(1, 100), 0.29).sum() == 29  # 0.29 * 100 is 28.999999999999996 in floats
    assert select_top(torch.zeros(1, 50), 0.05).sum() == 3  # 2.5 rounds up
    for layer in range(3):  # the chosen ones are each layer's best
        assert scores[layer][per[layer]].min() > scores[layer][~per[layer]].max()
    top = select_top(scores, 15)
    assert scores[top].min() > scores[~top].max()


def test_select_top_ties_are_deterministic():
    scores = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.9]])
    assert select_top(scores, 3).int().tolist() == [[1, 1, 0], [0, 0, 1]]
    assert select_top(scores, 1, per_layer=True).int().tolist() == [[1, 0, 0], [0, 0, 1]]
    assert torch.equal(select_top(scores, 3), select_top(scores.clone(), 3))


@pytest.mark.parametrize("top", [0.0, 1.5, -0.2, 0, 7, True, "0.1"])
def test_select_top_rejects_bad_top(top):
    with pytest.raises(ValueError, match="top"):
        select_top(torch.zeros(2, 3), top)


def test_select_top_count_per_layer_bound():
    with pytest.raises(ValueError, match="per layer"):
        select_top(torch.zeros(2, 3), 4, per_layer=True)
    assert select_top(torch.zeros(2, 3), 4).sum() == 4


def test_merge_subtasks_takes_equal_counts_from_disjoint_rankings():
    g = torch.Generator().manual_seed(0)
    subtasks = [torch.rand(2, 30, generator=g) for _ in range(3)]
    mask = merge_subtasks(subtasks, 12)
    assert mask.sum() == 12
    for s in subtasks:  # each subtask's top 4 is in
        assert select_top(s, 4).logical_and(mask).sum() == 4
    per = merge_subtasks(subtasks, 6, per_layer=True)
    assert per.sum(1).tolist() == [6, 6]
    assert torch.equal(merge_subtasks([subtasks[0]], 0.2), select_top(subtasks[0], 0.2))


def test_merge_subtasks_fills_overlaps_round_robin():
    a = torch.tensor([[9.0, 8, 7, 6, 5, 4]])   # ranking N0 N1 N2 N3 N4 N5
    b = torch.tensor([[9.0, 1, 2, 7, 8, 3]])   # ranking N0 N4 N3 N5 N2 N1
    # top 2 of each: {N0, N1} | {N0, N4} = 3; then a adds N2 (next unchosen), then b adds N3
    assert merge_subtasks([a, b], 4).int().tolist() == [[1, 1, 1, 0, 1, 0]]
    assert merge_subtasks([a, b], 5).int().tolist() == [[1, 1, 1, 1, 1, 0]]
    assert merge_subtasks([a, b], 1).int().tolist() == [[1, 0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="different shapes"):
        merge_subtasks([a, torch.zeros(2, 6)], 2)


def test_spearman_known_values():
    x = torch.tensor([[0.1, 0.4], [0.3, 0.2]])
    assert spearman(x, x * 10) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)  # reversed order
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    # ties: ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman(torch.tensor([1.0, 2, 2, 3]), torch.tensor([1.0, 2, 3, 4])) == pytest.approx(0.9 ** 0.5)
    # d^2 formula (valid without ties): [1,2,3,4,5] vs [2,1,4,3,5], sum d^2 = 4 -> 1 - 6*4/(5*24) = 0.8
    assert spearman(torch.tensor([1.0, 2, 3, 4, 5]), torch.tensor([2.0, 1, 4, 3, 5])) == pytest.approx(0.8)


def test_spearman_matches_pearson_of_average_ranks_brute_force():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 4, (40,), generator=g).double(), torch.randint(0, 6, (40,), generator=g).double()

    def avg_ranks(v):
        return torch.tensor([(v < x).sum().item() + ((v == x).sum().item() + 1) / 2 for x in v], dtype=torch.float64)

    ra, rb = avg_ranks(a), avg_ranks(b)
    want = torch.corrcoef(torch.stack([ra, rb]))[0, 1].item()
    assert spearman(a, b) == pytest.approx(want, abs=1e-12)


def test_spearman_errors():
    with pytest.raises(ValueError, match="shapes"):
        spearman(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="at least 2"):
        spearman(torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="constant"):
        spearman(torch.zeros(3), torch.arange(3.0))


def test_top_k_overlap():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 20, generator=g)
    assert top_k_overlap(a, a, 0.1) == 1.0 and top_k_overlap(a, a * 2 + 1, 0.3, per_layer=True) == 1.0
    assert top_k_overlap(a, -a, 0.5) == 0.0
    b = a.clone()
    best = rank(a)[:6]
    b[best[0, 0], best[0, 1]] = -1.0  # the best neuron of a falls out of b's top 6
    assert top_k_overlap(a, b, 6) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="shapes"):
        top_k_overlap(a, a[:2], 0.1)

