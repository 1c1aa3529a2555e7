"""FFN anatomy read from the model (model.anatomy), hookable experts (model.experts), the fingerprint per
architecture family, and pruning of the layouts the anatomy reads (the whole method per architecture is
tests/test_architectures.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from skill_lens.intervening.pruning import (PruningError, load_pruned, prune, pruning_info, save_pruned,
                                            top_per_expert)
from skill_lens.model.anatomy import input_weights
from skill_lens.model.layout import NeuronLayout, parse_label
from skill_lens.model.fingerprint import fingerprint
from skill_lens.model.loading import bridge_from_hf, describe, load_model
from skill_lens.model.tiny import tiny_dir, tiny_hf, tiny_model, tiny_task, tiny_tokenizer
from skill_lens.probing.neurons import NeuronSet
from skill_lens.probing.probe import probe
from skill_lens.prompting.evaluation import prompted
from skill_lens.prompting.prompts import SoftPrompt

IDS = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])


@pytest.mark.parametrize("arch", ["gemma", "gemma3", "gpt2", "phi3", "mixtral", "qwen2_moe", "t5", "bart", "bert"])
def test_two_loads_of_a_directory_share_a_fingerprint_and_one_weight_changes_it(arch, tmp_path):
    d = str(tiny_dir(arch, tmp_path / "a"))
    assert fingerprint(load_model(d, device="cpu")) == fingerprint(load_model(d, device="cpu"))
    other = str(shutil.copytree(d, tmp_path / "b"))
    hf = type(tiny_hf(arch)).from_pretrained(other)
    with torch.no_grad():
        next(p for p in hf.parameters() if p.dim() == 2).view(-1)[0] += 1e-3
    hf.save_pretrained(other)
    assert fingerprint(load_model(other, device="cpu")) != fingerprint(load_model(d, device="cpu"))


def test_widths_are_read_from_the_weights_not_config_names():
    for arch, width in (("opt", 48), ("falcon", 48), ("bart", 48), ("bloom", 128)):
        assert describe(tiny_model(arch)).widths == (width, width), arch
    keep = torch.zeros(2, 48, dtype=torch.bool)
    keep[1, :5] = True
    assert describe(prune(tiny_model("opt"), keep, torch.zeros(2, 48), layers=[1])).widths == (48, 5)


def test_labels_name_experts_and_parse_back():
    layout = describe(tiny_model("qwen2_moe")).layout
    labels = [layout.label(1, i) for i in range(136)]
    assert labels[0] == "L1.E0.N0" and labels[25] == "L1.E1.N1" and labels[96] == "L1.S.N0"
    assert [parse_label(x, layout)[1] for x in labels] == list(range(136))
    assert NeuronLayout.from_json(layout.as_json()) == layout
    with pytest.raises(ValueError, match="4 experts of 24"):
        parse_label("L1.E4.N0", layout)
    ns = NeuronSet.from_pairs(["L0.E3.N23", "L1.S.N39"], 2, 136, layout=layout)
    assert ns.pairs() == [(0, 95), (1, 135)] and ns.labels() == ["L0.E3.N23", "L1.S.N39"]
    assert "L1.S.N39" in ns and "L1.S.N38" not in ns


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "deepseek_v3"])
def test_expert_hooks_see_every_expert_and_writes_where_not_routed_change_nothing(arch):
    model = tiny_model(arch)
    info = describe(model)
    seg = info.layers[0].segments[0]
    got = {}

    def keep(name):
        return lambda act, hook: got.__setitem__(name, act.clone())

    with torch.no_grad():
        plain = model(IDS)
        same = model.run_with_hooks(IDS, fwd_hooks=[(seg.hook, keep("acts")), ("blocks.0.mlp.hook_routing", keep("r"))])
        routed = (got["r"] > 0)[..., None].expand(-1, -1, -1, seg.expert_width).flatten(2)  # [B, S, E * width]

        def write(where):
            return lambda act, hook: act.masked_fill(where, 100.0)

        elsewhere = model.run_with_hooks(IDS, fwd_hooks=[(seg.hook, write(~routed))])
        there = model.run_with_hooks(IDS, fwd_hooks=[(seg.hook, write(routed))])
    assert got["acts"].shape == (2, 5, seg.width) and torch.allclose(same, plain, atol=1e-5)
    assert bool((got["r"] > 0).sum(-1).eq(2).all())  # top-2 routing: two experts per token
    assert bool(got["acts"][~routed].eq(0).all()) and bool(got["acts"][routed].ne(0).any())
    assert torch.allclose(elsewhere, plain, atol=1e-5) and not torch.allclose(there, plain, atol=1e-3)


def test_the_probe_counts_how_often_each_class_is_routed_to_each_expert():
    model, task = tiny_model("mixtral"), tiny_task()
    result = probe(prompted(model, task, SoftPrompt.init(model, 2)), task, splits=("dev",))
    assert result.routing.shape == (2, 2, 4) and torch.allclose(result.routing.sum(-1), torch.full((2, 2), 2.0))
    dense = probe(prompted(tiny_model(), task, SoftPrompt.init(tiny_model(), 2)), task, splits=("dev",))
    assert dense.routing is None and result.dev_acc.shape == (2, 2, 96)


def test_input_weights_read_fused_and_expert_stacks():
    phi3 = tiny_model("phi3")
    mlp = phi3.blocks[0].mlp
    assert torch.equal(input_weights(phi3, 0, "gate"), mlp.gate.original_component.weight.float())
    assert torch.equal(input_weights(phi3, 0, "in"), mlp.in_proj.weight.float() if hasattr(mlp, "in_proj")
                       else getattr(mlp, "in").original_component.weight.float())
    moe = tiny_model("mixtral")
    stack = moe.original_model.model.layers[1].mlp.experts.gate_up_proj.detach()  # [E, 2 x 24, d]
    w = input_weights(moe, 1)
    assert torch.equal(w[24:48], stack[1, :24]) and torch.equal(input_weights(moe, 1, "in")[24:48], stack[1, 24:])


def test_moe_pruning_keeps_as_many_in_every_expert_and_round_trips(tmp_path):
    model = tiny_model("qwen2_moe")
    info = describe(model)
    scores = torch.rand(info.shape)
    keep = top_per_expert(scores, 0.25, info.layout)
    assert keep[0, :96].view(4, 24).sum(1).tolist() == [6, 6, 6, 6] and int(keep[0, 96:].sum()) == 10
    uneven = keep.clone()
    uneven[0, 0:24] = True  # expert 0 keeps all of its neurons: the others are padded to as many
    with pytest.raises(PruningError, match="as many each"):
        prune(model, uneven, torch.zeros(info.shape))
    small = prune(model, uneven, torch.zeros(info.shape), scores=scores)
    assert describe(small).layers[0].describe() == "gated MoE 4 experts x 24 + shared 10"
    assert describe(small).layers[1].describe() == "gated MoE 4 experts x 6 + shared 10"
    path = save_pruned(small, tmp_path / "p")
    with torch.no_grad():
        assert torch.allclose(load_pruned(path, device="cpu")(IDS), small(IDS), atol=1e-6)
        info_file = path / "pruning.json"  # a model saved before layouts were recorded still loads
        saved = json.loads(info_file.read_text())
        saved["meta"].pop("ffn")
        info_file.write_text(json.dumps(saved))
        (path / "manifest.json").unlink()  # ... and before manifests: its files are then read by name
        assert torch.allclose(load_pruned(path, device="cpu")(IDS), small(IDS), atol=1e-6)
    assert pruning_info(small).widths == {0: 106, 1: 34}


class _Custom(nn.Module):  # a projection pruning cannot slice: not a Linear or Conv1D
    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x @ self.weight.T


def test_a_layout_that_cannot_be_pruned_is_refused_in_one_line_before_any_work():
    hf = tiny_hf("causal")
    hf.model.layers[1].mlp.down_proj = _Custom(hf.model.layers[1].mlp.down_proj.weight.detach().clone())
    model = bridge_from_hf(hf, tiny_tokenizer(), name="custom")
    assert describe(model).layers[1].unprunable == "its out projection is a _Custom, not a Linear or Conv1D"
    keep = torch.ones(2, 64, dtype=torch.bool)
    assert pruning_info(prune(model, keep, torch.zeros(2, 64), layers=[0])).widths == {0: 64, 1: 64}
    with pytest.raises(PruningError, match=r"^layer 1 of custom \(gated MLP 64\) cannot be pruned: its out projection"):
        prune(model, keep, torch.zeros(2, 64))
