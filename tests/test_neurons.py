"""NeuronSet: constructors, views, set algebra against Python sets, repr, save/load and mismatch errors."""

from __future__ import annotations

import pytest
import torch

from skill_lens.store.artifacts import ArtifactError, load_tensors, save_tensors
from skill_lens.model.layout import parse_label
from skill_lens.model.layout import neuron_pairs
from skill_lens.probing.neurons import NeuronSet, as_neuron_set


def random_set(seed, shape=(3, 10), p=0.3):
    return NeuronSet.from_mask(torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p)


def test_constructors_agree():
    pairs = [(2, 9), (0, 1), (1, 3)]
    a = NeuronSet.from_pairs(pairs, 3, 10)
    assert a.pairs() == sorted(pairs) and list(a) == sorted(pairs) and len(a) == 3
    assert NeuronSet.from_pairs(["L0.N1", "L1.N3", "L2.N9"], 3, 10) == a
    assert NeuronSet.from_pairs(torch.tensor(pairs), 3, 10) == a
    assert NeuronSet.from_mask(a.mask.to(torch.uint8)) == a
    assert NeuronSet.from_pairs([], 3, 10) == NeuronSet.empty(3, 10) == ~NeuronSet.full(3, 10)
    assert a.shape == (3, 10) and a.n_layers == 3 and a.d_mlp == 10


def test_from_mask_copies_and_validates():
    mask = torch.zeros(2, 3, dtype=torch.bool)
    ns = NeuronSet.from_mask(mask)
    mask[0, 0] = True
    assert len(ns) == 0
    with pytest.raises(ValueError, match="0/1"):
        NeuronSet.from_mask(torch.tensor([[0.0, 0.5]]))
    with pytest.raises(ValueError, match=r"\[layer, d_mlp\]"):
        NeuronSet.from_mask(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="L3.N0 is not in a model with 3 layers x 10"):
        NeuronSet.from_pairs([(3, 0)], 3, 10)
    with pytest.raises(ValueError, match="L0.N10"):
        NeuronSet.from_pairs(["L0.N10"], 3, 10)


def test_from_scores_uses_select_top_and_keeps_scores():
    scores = torch.rand(3, 10, generator=torch.Generator().manual_seed(0))
    glob = NeuronSet.from_scores(scores, 0.2, meta={"model": "m"})
    assert len(glob) == 6 and glob.meta["model"] == "m" and torch.equal(glob.scores, scores)
    chosen = scores[glob.mask]
    assert chosen.min() > scores[~glob.mask].max()
    per = NeuronSet.from_scores(scores, 2, per_layer=True)
    assert per.counts_per_layer() == [2, 2, 2]


def test_from_scores_is_global_unless_per_layer_is_named():
    import inspect

    scores = torch.tensor([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]])
    assert NeuronSet.from_scores(scores, 2).pairs() == [(0, 0), (0, 1)]
    assert NeuronSet.from_scores(scores, 1, per_layer=True).pairs() == [(0, 0), (1, 2)]
    assert inspect.signature(NeuronSet.from_scores).parameters["per_layer"].kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(TypeError):
        NeuronSet.from_scores(scores, 1, True)


def test_labels_and_parse():
    assert NeuronSet.label(29, 692) == "L29.N692" and parse_label("L29.N692") == (29, 692)
    assert parse_label(" L0.N0 ") == (0, 0)
    for bad in ["L1N2", "l1.n2", "L-1.N2", "L1.N2.3", ""]:
        with pytest.raises(ValueError, match="L29.N692"):
            parse_label(bad)


def test_contains_and_views():
    ns = NeuronSet.from_pairs([(0, 1), (2, 5), (2, 0)], 3, 10)
    assert (0, 1) in ns and "L2.N5" in ns and (1, 1) not in ns and (7, 0) not in ns and (0, -1) not in ns
    per = ns.per_layer()
    assert list(per) == [0, 2] and per[2].tolist() == [0, 5] and per[2].dtype == torch.long
    assert ns.counts_per_layer() == [1, 0, 2] and ns.layers() == [0, 2]
    r = ns.restrict_layers(range(1, 3))
    assert r.pairs() == [(2, 0), (2, 5)] and r.shape == ns.shape
    assert ns.restrict_layers([]) == NeuronSet.empty(3, 10)
    with pytest.raises(ValueError, match="layers \\[3\\] do not exist"):
        ns.restrict_layers([0, 3])


@pytest.mark.parametrize("seed", range(3))
def test_set_operations_match_python_sets(seed):
    a, b = random_set(seed), random_set(seed + 100)
    sa, sb = set(a.pairs()), set(b.pairs())
    assert set((a | b).pairs()) == sa | sb
    assert set((a & b).pairs()) == sa & sb
    assert set((a - b).pairs()) == sa - sb
    assert set((a ^ b).pairs()) == sa ^ sb
    everything = {(layer, i) for layer in range(3) for i in range(10)}
    assert set((~a).pairs()) == everything - sa
    assert (a | b) == (b | a) and a != b and a == NeuronSet.from_pairs(sa, 3, 10)


def test_operations_keep_common_meta_and_never_mutate():
    a = NeuronSet.from_pairs([(0, 0)], 2, 2, meta={"model": "m", "task": "sst2"})
    b = NeuronSet.from_pairs([(1, 1)], 2, 2, meta={"model": "m", "task": "imdb"})
    before = a.mask.clone()
    assert (a | b).meta == {"model": "m"}
    _ = a - b, a ^ b, ~a, a & b
    assert torch.equal(a.mask, before)
    with pytest.raises(Exception):
        a.mask = torch.ones(2, 2, dtype=torch.bool)  # frozen


def test_operations_between_shapes_fail_clearly():
    a, b = NeuronSet.empty(2, 8), NeuronSet.empty(3, 8)
    for op in (lambda: a | b, lambda: a & b, lambda: a - b, lambda: a ^ b):
        with pytest.raises(ValueError, match="2x8 and 3x8.*same model"):
            op()
    with pytest.raises(TypeError):
        _ = a | {(0, 1)}
    assert a != b and a != "L0.N1"


def test_repr():
    assert repr(NeuronSet.from_pairs([(1, 7), (0, 1), (1, 3)], 2, 8)) == "NeuronSet(3 neurons of 2x8: L0.N1, L1.N3, L1.N7)"
    assert repr(NeuronSet.from_pairs(["L1.N2"], 2, 8)) == "NeuronSet(1 neuron of 2x8: L1.N2)"
    assert repr(NeuronSet.empty(2, 8)) == "NeuronSet(0 neurons of 2x8)"
    big = repr(NeuronSet.full(2, 8))
    assert big.startswith("NeuronSet(16 neurons of 2x8: L0.N0, L0.N1,") and big.endswith("L1.N1, ...)")
    assert big.count("L") == 10


def test_check_compatible():
    ns = NeuronSet.empty(30, 1536, meta={"model": "SmolLM2-135M"})
    ns.check_compatible(30, 1536)
    with pytest.raises(ValueError, match="30 layers x 1536 neurons \\(SmolLM2-135M\\), but this model has 2 layers x 64"):
        ns.check_compatible(2, 64)


def test_save_load_round_trip(tmp_path):
    scores = torch.rand(3, 10, generator=torch.Generator().manual_seed(0))
    ns = NeuronSet.from_scores(scores, 0.2, meta={"model": "m", "hook_names": ["blocks.0.mlp.hook_post"]})
    path = tmp_path / "sub" / "n.safetensors"
    ns.save(path)
    back = NeuronSet.load(path, expect_shape=(3, 10), expect_model="m")
    assert back == ns and torch.equal(back.scores, ns.scores)
    assert back.meta["model"] == "m" and back.meta["hook_names"] == ["blocks.0.mlp.hook_post"]
    assert "tensors" not in back.meta and (tmp_path / "sub" / "n.safetensors.json").exists()
    empty = tmp_path / "e.safetensors"
    NeuronSet.empty(2, 3).save(empty)
    assert NeuronSet.load(empty) == NeuronSet.empty(2, 3) and NeuronSet.load(empty).scores is None


def test_load_accepts_a_uint8_mask(tmp_path):
    save_tensors(tmp_path / "u.safetensors", {"mask": torch.tensor([[0, 1], [1, 0]], dtype=torch.uint8)})
    assert NeuronSet.load(tmp_path / "u.safetensors").pairs() == [(0, 1), (1, 0)]
    assert load_tensors(tmp_path / "u.safetensors")[0]["mask"].dtype == torch.uint8


def test_load_mismatches_raise_artifact_errors(tmp_path):
    path = tmp_path / "n.safetensors"
    NeuronSet.from_pairs([(0, 1)], 2, 8, meta={"model": "tiny"}).save(path)
    with pytest.raises(ArtifactError, match="2 layers x 8 neurons, but 30 layers x 1536 were expected"):
        NeuronSet.load(path, expect_shape=(30, 1536))
    with pytest.raises(ArtifactError, match="model='tiny', but this is model='big'"):
        NeuronSet.load(path, expect_model="big")
    with pytest.raises(ArtifactError, match="does not exist"):
        NeuronSet.load(tmp_path / "missing.safetensors")
    save_tensors(tmp_path / "other.safetensors", {"baseline": torch.zeros(2, 8)})
    with pytest.raises(ArtifactError, match="no \\[layer, d_mlp\\] 'mask'"):
        NeuronSet.load(tmp_path / "other.safetensors")
    save_tensors(tmp_path / "bad.safetensors", {"mask": torch.tensor([[0, 2]], dtype=torch.uint8)})
    with pytest.raises(ArtifactError, match="other than 0/1"):
        NeuronSet.load(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------ coercion: as_neuron_set and neuron_pairs
def test_coerce_accepts_every_form_and_agrees():
    expected = NeuronSet.from_pairs([(0, 3), (1, 2)], 2, 4)
    mask = expected.mask.clone()
    forms = [expected, mask, [(0, 3), (1, 2)], [[1, 2], [0, 3]], torch.tensor([[1, 2], [0, 3]]),
             ["L0.N3", "L1.N2"], ["L1.N2", (0, 3)], mask.numpy()]
    for form in forms:
        ns = as_neuron_set(form, 2, 4)
        assert isinstance(ns, NeuronSet) and ns == expected, form
    assert as_neuron_set(expected) is expected  # a set is returned as is, metadata included
    assert as_neuron_set(mask) == expected  # a mask knows its shape
    assert as_neuron_set("L1.N2", 2, 4).pairs() == [(1, 2)] and as_neuron_set((1, 2), 2, 4).pairs() == [(1, 2)]
    assert as_neuron_set([], 2, 4) == NeuronSet.empty(2, 4)
    copy = as_neuron_set(mask)
    mask[0, 0] = True
    assert copy == expected  # the mask was copied


def test_coerce_errors_name_what_is_accepted():
    accepted = "pass a NeuronSet, a bool tensor \\[n_layers, d_mlp\\] \\(here 2 layers x 4 neurons\\)"
    with pytest.raises(ValueError, match="torch.float32 tensor of shape \\[2, 4\\]; " + accepted):
        as_neuron_set(torch.ones(2, 4), 2, 4)  # 0/1 floats are not a mask here (from_mask takes them)
    with pytest.raises(ValueError, match="int64 tensor of shape \\[2, 3\\]"):
        as_neuron_set(torch.ones(2, 3, dtype=torch.long), 2, 4)
    with pytest.raises(ValueError, match="made for a model with 3 layers x 4 neurons, but this model has 2 layers"):
        as_neuron_set(torch.ones(3, 4, dtype=torch.bool), 2, 4)
    with pytest.raises(ValueError, match="made for a model with 2 layers x 4 neurons, but this model has 2 layers x 5"):
        as_neuron_set(NeuronSet.empty(2, 4), 2, 5)
    with pytest.raises(ValueError, match="pass n_layers and d_mlp"):
        as_neuron_set([(0, 1)])
    with pytest.raises(ValueError, match="L2.N0 is not in a model with 2 layers x 4 neurons"):
        as_neuron_set([(2, 0)], 2, 4)
    with pytest.raises(ValueError, match="L29.N692"):
        as_neuron_set("layer 1 neuron 2", 2, 4)
    with pytest.raises(ValueError, match="\\(True, False\\) is not a neuron; pass a NeuronSet"):
        as_neuron_set([(True, False)], 2, 4)  # a mask as nested lists: ambiguous, refused
    with pytest.raises(ValueError, match="\\(1, 2, 3\\) is not a neuron"):
        as_neuron_set([(1, 2, 3)], 2, 4)
    with pytest.raises(ValueError, match="cannot read neurons from int; pass a NeuronSet"):
        as_neuron_set(7, 2, 4)


def test_pairs_of_keeps_the_order_given():
    class Set:  # anything with .pairs()
        def pairs(self):
            return [(0, 3), (1, 2)]
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[1, 2] = True
    assert neuron_pairs(Set()) == [(0, 3), (1, 2)]
    assert neuron_pairs(mask) == [(1, 2)] and neuron_pairs((1, 2)) == [(1, 2)]
    assert neuron_pairs(["L1.N2", (0, 3), "L1.N2"], 2, 4) == [(1, 2), (0, 3), (1, 2)]
    assert neuron_pairs(torch.tensor([[1, 0], [0, 1]])) == [(1, 0), (0, 1)]
    assert neuron_pairs("L0.N7") == [(0, 7)] and neuron_pairs([]) == []
    with pytest.raises(ValueError, match="L0.N4 is not in a model with 2 layers x 4 neurons"):
        neuron_pairs(["L0.N4"], 2, 4)
    with pytest.raises(ValueError, match="L5.N0 is not in a model with 2 layers;"):
        neuron_pairs([(5, 0)], 2)
    with pytest.raises(ValueError, match="L0.N-1 is not in a model with any size"):
        neuron_pairs([(0, -1)])
