"""Known answers for the family-wise permutation null of predictivity (issue 17).

Pure tensor functions first (planted neuron found, noise neurons not; the family-wise error rate
of pure noise is about alpha), then the probe (batch size, kill-and-resume, sharding and
``permutations=0`` leave it as it was).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skill_lens.store.artifacts import ArtifactError, load_tensors
from skill_lens.store.checkpoint import Checkpoint
from skill_lens.probing.null import adjusted_p_values, fwer_threshold, null_maxima, significant
from skill_lens.probing.scores import aggregate_positions, predictivity
from skill_lens.probing.statistics import AgreementAccumulator, MeanAccumulator, NullAccumulator, permuted_labels
from skill_lens.probing.result import ProbeError, ProbeResult
from skill_lens.probing.probe import permutation_labels, probe, probe_fingerprint
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.data.tasks import Split
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import prompted

NULL_FIELDS = ("null_max_dev", "null_layer_max_dev", "null_max_test", "null_layer_max_test")


def scores_and_maxima(acts, labels, baseline, K, seed, batch=None):
    """Real scores [L, N] and permutation maxima ([K], [K, L]) through the streaming accumulators."""
    y = permuted_labels(labels, K, seed)
    agree, null = AgreementAccumulator(), NullAccumulator()
    batch = batch or len(labels)
    for s in range(0, len(labels), batch):
        agree.add(acts[s : s + batch], labels[s : s + batch], baseline)
        null.add(acts[s : s + batch], y[s : s + batch], baseline)
    scores = aggregate_positions(predictivity(agree.accuracy().float()))
    return scores, *null_maxima(null.agree, null.n), null


# ------------------------------------------------------------------ pure functions


def test_null_counts_equal_agreement_counts_of_each_permuted_label_vector():
    g = torch.Generator().manual_seed(0)
    acts, labels = torch.randn(23, 2, 3, 5, generator=g), torch.randint(0, 2, (23,), generator=g)
    baseline = torch.randn(2, 3, 5, generator=g) * 0.1
    y = permuted_labels(labels, 6, seed=4)
    assert y.dtype == torch.bool and y.shape == (23, 6)
    assert (y.sum(0) == labels.sum()).all()  # permutations keep the class counts
    null = NullAccumulator().add(acts[:10], y[:10], baseline).add(acts[10:], y[10:], baseline)
    assert null.agree.dtype == torch.int32 and null.agree.shape == (6, 2, 3, 5) and null.n == 23  # no capacity given
    for k in range(6):
        ref = AgreementAccumulator().add(acts, y[:, k].long(), baseline)
        assert torch.equal(null.agree[k].long(), ref.agree), k
    # a state dict round trip and a merge are the same sums
    half = NullAccumulator().add(acts[:10], y[:10], baseline)
    rest = NullAccumulator.from_state_dict(NullAccumulator().add(acts[10:], y[10:], baseline).state_dict())
    assert torch.equal(half.merge(rest).agree, null.agree)


def test_permutations_are_pure_functions_of_seed_split_and_k():
    labels = [0, 1] * 20
    a, b = permutation_labels(labels, "dev", 5, seed=1), permutation_labels(labels, "dev", 8, seed=1)
    assert torch.equal(a, b[:, :5])  # permutation k does not depend on how many follow
    assert not torch.equal(a, permutation_labels(labels, "test", 5, seed=1))
    assert not torch.equal(a, permutation_labels(labels, "dev", 5, seed=2))
    assert not all(torch.equal(a[:, k], torch.tensor(labels).bool()) for k in range(5))


def test_planted_neuron_is_significant_and_noise_neurons_are_not():
    g = torch.Generator().manual_seed(1)
    L, P, N, n = 2, 3, 50, 200
    train_y, dev_y = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)

    def acts(y):
        a = torch.randn(len(y), L, P, N, generator=g)
        a[:, 1, 2, 7] = y.float() + 0.3 * torch.randn(len(y), generator=g)  # the planted neuron
        return a

    baseline = MeanAccumulator().add(acts(train_y)).mean()
    scores, maxima, layer_maxima, _ = scores_and_maxima(acts(dev_y), dev_y, baseline, K=200, seed=0, batch=32)
    expect = torch.zeros(L, N, dtype=torch.bool)
    expect[1, 7] = True
    assert torch.equal(significant(scores, maxima), expect)
    assert torch.equal(significant(scores, layer_maxima), expect)  # per-layer thresholds
    p = adjusted_p_values(scores, maxima)
    assert p[1, 7] == 1 / 201 and (p[~expect] > 0.05).all()
    # the point of the null: the best noise neuron is far above 0.5, yet below the threshold
    best_noise = scores[~expect].max()
    assert best_noise > 0.56 and best_noise <= fwer_threshold(maxima)


def test_family_wise_error_rate_of_pure_noise_is_about_alpha():
    # 200 independent pure-noise draws (labels independent of activations); a draw is a family-wise
    # error when ANY of its 32 neuron-positions is significant. With K = 99 the test rejects with
    # probability floor(alpha * 100) / 100 (a little less with ties, so n = 400 examples keeps them rare).
    # alpha = 0.05: Binomial(200, 0.05) has mean 10, sd 3.1, and [2, 22] errors (rate 0.01..0.11) holds
    # with probability 0.9994. alpha = 0.2: mean 40, sd 5.7, [24, 58] holds with probability 0.998. A wrong quantile
    # (the median, per-neuron thresholds) gives rates near 1; "above 0.5" would flag nearly every draw.
    g = torch.Generator().manual_seed(2)
    errors, naive = {0.05: 0, 0.2: 0}, 0
    for draw in range(200):
        acts, labels = torch.randn(400, 2, 2, 8, generator=g), torch.randint(0, 2, (400,), generator=g)
        scores, maxima, _, _ = scores_and_maxima(acts, labels, torch.zeros(2, 2, 8), K=99, seed=draw)
        for alpha in errors:
            errors[alpha] += bool(significant(scores, maxima, alpha=alpha).any())
        naive += bool((scores > 0.55).any())
    assert 2 <= errors[0.05] <= 22 and 24 <= errors[0.2] <= 58, errors
    assert naive > 120  # without the null, noise alone looks predictive


def test_threshold_and_p_values_agree_and_refuse_bad_input():
    g = torch.Generator().manual_seed(3)
    scores, maxima = torch.rand(3, 40, generator=g) * 0.5 + 0.5, torch.rand(99, generator=g) * 0.5 + 0.5
    for alpha in (0.01, 0.05, 0.2):
        assert torch.equal(significant(scores, maxima, alpha), adjusted_p_values(scores, maxima) <= alpha)
    assert fwer_threshold(torch.full((10,), 0.7), 0.05) == float("inf")  # 10 permutations cannot reach 0.05
    with pytest.raises(ValueError, match="alpha"):
        fwer_threshold(maxima, 1.5)
    with pytest.raises(ValueError, match="permutations > 0"):
        fwer_threshold(torch.zeros(0))
    with pytest.raises(ValueError, match=r"\[batch k\]"):
        NullAccumulator().add(torch.zeros(3, 1, 1, 2), torch.zeros(2, 4, dtype=torch.bool), torch.zeros(1, 1, 2))


# ------------------------------------------------------------------ the probe


@pytest.fixture(scope="module")
def setup():
    task, m = tiny_task(n_train=40, n_dev=24, n_test=16), tiny_model("causal")
    return task, prompted(m, task, SoftPrompt.init(m, 3, seed=2))


def same(a: ProbeResult, b: ProbeResult, fields=("dev_acc", "test_acc", *NULL_FIELDS)) -> None:
    for f in fields:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_probe_null_is_the_same_for_any_batch_size(setup):
    task, pm = setup
    a = probe(pm, task, batch_size=1, permutations=20, permutation_seed=5)
    b = probe(pm, task, batch_size=7, permutations=20, permutation_seed=5)
    same(a, b)
    assert a.null_max_dev.shape == (20,) and a.null_layer_max_test.shape == (20, 2)
    assert torch.equal(a.null_max_dev, a.null_layer_max_dev.amax(1))
    assert (a.null_max_dev >= 0.5).all() and a.meta["permutations"] == 20 and a.meta["permutation_seed"] == 5
    other = probe(pm, task, batch_size=7, permutations=20, permutation_seed=6)
    assert not torch.equal(a.null_max_dev, other.null_max_dev)


def test_probe_null_matches_the_pure_functions(setup):
    task, pm = setup
    r = probe(pm, task, batch_size=5, permutations=9, splits=("dev",))
    y = permutation_labels(task.dev.labels, "dev", 9, seed=0)
    # each permutation's maximum is the best predictivity of the real probe rerun on those labels
    for k in (0, 4, 8):
        relabel = dataclasses.replace(task, dev=Split(task.dev.texts, [int(v) for v in y[:, k]]))
        ref = probe(pm, relabel, batch_size=5, splits=("dev",))
        assert torch.equal(r.null_max_dev[k], ref.scores("dev").max()), k
        assert torch.equal(r.null_layer_max_dev[k], ref.scores("dev").amax(1)), k


def test_killed_probe_resumes_to_the_same_null(setup, tmp_path, monkeypatch):
    task, pm = setup
    ref = probe(pm, task, batch_size=4, permutations=20)
    orig, calls = Checkpoint.save, []

    def save_then_fail(self, tensors, state):
        orig(self, tensors, state)
        calls.append(state)
        if len(calls) == 7:  # train: 10 batches = 5 saves; this one is in the dev pass
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_fail)
    with pytest.raises(KeyboardInterrupt):
        probe(pm, task, batch_size=4, permutations=20, checkpoint=tmp_path, checkpoint_every=2)
    assert calls[-1]["pass"] == "dev" and (tmp_path / "probe_checkpoint.0of1.safetensors").exists()
    monkeypatch.setattr(Checkpoint, "save", orig)
    with pytest.raises(ArtifactError, match="other settings"):  # a different null refuses the checkpoint
        probe(pm, task, batch_size=4, permutations=21, checkpoint=tmp_path, checkpoint_every=2)
    same(probe(pm, task, batch_size=4, permutations=20, checkpoint=tmp_path, checkpoint_every=2), ref)


def test_counts_use_the_smallest_exact_type_and_a_finished_split_drops_them(setup, monkeypatch):
    """uint8 counts for a split of <= 255 examples (int16 up to 32767), exact against int64 agreements; once a
    split is done its counts are gone before the next split's first batch."""
    acts, y = torch.randn(300, 1, 2, 3, generator=torch.Generator().manual_seed(0)), torch.rand(300, 4) > 0.5
    baseline = torch.zeros(1, 2, 3)
    for capacity, dtype in ((300, torch.int16), (255, torch.uint8)):
        n = min(capacity, 300)
        null = NullAccumulator(capacity=capacity).add(acts[:n], y[:n], baseline)
        exact = torch.stack([AgreementAccumulator().add(acts[:n], y[:n, k], baseline).agree for k in range(4)])
        assert null.agree.dtype == dtype and torch.equal(null.agree.long(), exact)
    with pytest.raises(ValueError, match="capacity"):
        NullAccumulator(capacity=255).add(acts[:256], y[:256], baseline)

    task, pm = setup
    from skill_lens.probing.sums import Sums

    seen = []
    finish = Sums.finish

    def spy(self, p, result):
        finish(self, p, result)
        seen.append((p, sorted(self.local[p]), sorted(result)))
    monkeypatch.setattr(Sums, "finish", spy)
    probe(pm, task, batch_size=4, permutations=20)
    assert [s[:2] for s in seen] == [("dev", []), ("test", [])]  # no accumulator of a finished split is kept
    assert "null_max_dev" in seen[0][2]


def test_no_permutations_leaves_the_probe_as_it_was(setup, tmp_path):
    task, pm = setup
    plain, zero = probe(pm, task, batch_size=4), probe(pm, task, batch_size=4, permutations=0)
    with_null = probe(pm, task, batch_size=4, permutations=20)
    same(plain, zero, ("baseline", "dev_acc", "test_acc"))
    same(plain, with_null, ("baseline", "dev_acc", "test_acc"))  # the null never changes the real accuracies
    pooled = ("dev_acc", "mean_pool_dev_acc", "max_pool_test_acc")
    same(probe(pm, task, batch_size=4, pooling=True), probe(pm, task, batch_size=4, pooling=True, permutations=5), pooled)
    assert all(getattr(zero, f) is None for f in NULL_FIELDS) and "permutations" not in zero.meta
    assert probe_fingerprint(pm, task, batch_size=4) == probe_fingerprint(pm, task, batch_size=4, permutations=0, permutation_seed=9)
    assert probe_fingerprint(pm, task, batch_size=4, permutations=20) != probe_fingerprint(pm, task, batch_size=4, permutations=20,
                                                                                permutation_seed=1)
    zero.save(tmp_path / "p.safetensors")
    assert sorted(load_tensors(tmp_path / "p.safetensors")[0]) == ["baseline", "dev_acc", "test_acc"]
    assert zero.null_summary() == {"permutations": 0}
    with pytest.raises(ProbeError, match="permutations=200"):
        zero.significant()
    with pytest.raises(ProbeError, match=r"permutations \(--permutations\) must be"):
        probe(pm, task, batch_size=4, permutations=-1)


def test_null_results_save_load_and_summarise(setup, tmp_path):
    task, pm = setup
    r = probe(pm, task, batch_size=8, permutations=19)
    r.save(tmp_path / "p.safetensors")
    back = ProbeResult.load(tmp_path / "p.safetensors")
    same(r, back)
    s = back.null_summary()
    assert s["permutations"] == 19 and set(s) == {"permutations", "alpha", "dev", "test"}
    assert s["dev"]["fwer_threshold"] == float(back.null_max_dev.max())  # K = 19: the largest maximum
    assert s["dev"]["significant"] == int(back.significant().sum()) == sum(s["dev"]["significant_per_layer"])
    assert back.fwer_threshold(per_layer=True).shape == (2,)
    assert back.adjusted_p_values("test").shape == (2, 64)
    with pytest.raises(ProbeError, match="aggregate='max'"):
        back.significant(aggregate="mean")


WORKER = """
import os, sys
os.environ["SKILL_LENS_QUIET"] = "1"
from skill_lens.data.distributed import init_from_env
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import prompted
rank, world = init_from_env()
task, m = tiny_task(n_train=40, n_dev=24, n_test=16), tiny_model("causal")
pm = prompted(m, task, SoftPrompt.init(m, 3, seed=2))
probe(pm, task, batch_size=5, permutations=20, checkpoint=sys.argv[1], checkpoint_every=2,
      on_result=lambda r: r.save(os.path.join(sys.argv[1], "p.safetensors")))
"""


def test_two_processes_give_the_single_process_null(setup, tmp_path):
    # dev: 5 batches of 5 -> shards of 2 and 3 batches, the last one ragged: each rank must index
    # the permuted labels of its own rows
    task, pm = setup
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKILL_LENS_QUIET": "1"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
           str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = ProbeResult.load(tmp_path / "p.safetensors")
    assert got.meta["world_size"] == 2
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count (kernels may differ per count)
    try:
        same(got, probe(pm, task, batch_size=5, permutations=20))
    finally:
        torch.set_num_threads(n)
