"""Placement: a model split by a device map, partly on the disk, gives the unsplit model's numbers bit for bit;
an out-of-memory batch halves the step's batch to the result of a run started there."""

from __future__ import annotations

import pytest
import torch

from skill_lens.intervening.suppression import suppression_curve
from skill_lens.prompting.input_cache import InputCache
from skill_lens.model.fingerprint import fingerprint
from skill_lens.model.loading import load_model, model_device, placement_of
from skill_lens.model.memory import Budget, OutOfBudget, TensorPeak, halving
from skill_lens.model.placement import Placement, PlacementError, model_placement
from skill_lens.model.record import model_record
from skill_lens.model.tiny import tiny_hf, tiny_task, tiny_tokenizer
from skill_lens.probing.probe import probe
from skill_lens.prompting.evaluation import evaluate, prompted
from skill_lens.prompting.prompts import SoftPrompt

FIELDS = ("baseline", "dev_acc", "test_acc", "null_max_dev", "null_layer_max_dev", "null_max_test")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny4")
    tiny_hf("causal", n_layers=4, d_model=32, d_mlp=64).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


def same(a, b, fields=FIELDS):
    for f in fields:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def run_all(model, task):
    pm = prompted(model, task, SoftPrompt.init(model, 3, seed=0))
    result = probe(pm, task, batch_size=8, permutations=20, input_cache=InputCache())
    curve = suppression_curve(pm, task, result.scores("dev"), fractions=[0, 0.1], method="gaussian", controls=1,
                              batch_size=8)
    return pm, result, curve


@pytest.mark.parametrize("device_map", [
    {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
     "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk"},
    "auto",  # with a budget too small for anything: every weight on the disk
])
def test_disk_offload_gives_the_unsplit_numbers_bit_for_bit(model_dir, tmp_path, device_map):
    task = tiny_task()
    whole = load_model(str(model_dir), device="cpu")
    split = load_model(str(model_dir), device_map=device_map, offload_folder=tmp_path / "offload",
                       max_memory={"cpu": 1000} if device_map == "auto" else None)
    where = model_placement(split)
    assert "disk" in where["devices"] and model_device(split) == torch.device("cpu")
    assert any(p.device.type == "meta" for p in split.original_model.parameters())  # really offloaded
    assert fingerprint(split) == fingerprint(whole)  # read from the disk in chunks, the same weights
    pm_w, ref, curve_w = run_all(whole, task)
    pm_s, got, curve_s = run_all(split, task)
    assert torch.equal(pm_w.prompt.embedding, pm_s.prompt.embedding)  # initialised from the offloaded embedding
    same(got, ref)
    assert curve_s.rows == curve_w.rows
    assert evaluate(pm_s, task.dev) == evaluate(pm_w, task.dev)
    assert placement_of(split).mapped and not placement_of(whole).mapped


def test_a_device_map_and_a_device_exclude_each_other(model_dir):
    with pytest.raises(PlacementError, match="two ways"):
        load_model(str(model_dir), device="cpu", device_map="auto")
    with pytest.raises(PlacementError, match="GPU 1"):
        load_model(str(model_dir), max_memory="1=10GiB")
    with pytest.raises(TypeError, match="'device_mapp'.*device_map, max_memory"):  # a typo named, with the keywords
        load_model(str(model_dir), device_mapp="auto")
    with pytest.raises(PlacementError, match="offload-folder"):
        Placement.parse(device_map={"model": "disk"})
    with pytest.raises(PlacementError, match="DEVICE=SIZE"):
        Placement.parse(max_memory="lots")
    with pytest.raises(PlacementError, match="not a device"):
        Placement.parse(device_map={"model": "gpu0"})


def oom_above(model, limit: int):
    """A hook that raises CUDA's out-of-memory error inside the forward of any batch larger than ``limit``."""
    def hook(act, hook):
        if act.shape[0] > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {act.shape[0]} GiB")
    return model.hooks(fwd_hooks=[("blocks.1.hook_out", hook)])


def test_an_out_of_memory_batch_halves_the_probe_to_the_result_of_that_batch(model_dir, tmp_path, monkeypatch):
    model, task = load_model(str(model_dir), device="cpu"), tiny_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2, seed=0))
    said = []
    monkeypatch.setattr("skill_lens.model.memory.say", said.append)
    ref = probe(pm, task, batch_size=4, permutations=10)
    with oom_above(model, 4):
        got = probe(pm, task, batch_size=16, permutations=10, checkpoint=tmp_path)
    same(got, ref, ("baseline", "dev_acc", "test_acc", "null_max_dev", "null_max_test"))
    assert got.meta["batch_size"] == 4 and ref.meta["batch_size"] == 4
    assert len(said) == 1 and "--batch-size 16" in said[0] and "--batch-size 4" in said[0]
    assert not list(tmp_path.iterdir())  # no checkpoint of 16, 8 or 4 is left
    with oom_above(model, 0), pytest.raises(torch.OutOfMemoryError, match="batch-size 1"):
        probe(pm, task, batch_size=2)


def test_a_killed_halved_probe_resumes_at_its_smaller_batch(model_dir, tmp_path):
    model, task = load_model(str(model_dir), device="cpu"), tiny_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2, seed=0))
    calls = []

    def hook(act, hook):
        calls.append(act.shape[0])
        if act.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory")
        if len(calls) == 12:
            raise KeyboardInterrupt  # killed at batch size 4, after its checkpoint was written
    with model.hooks(fwd_hooks=[("blocks.1.hook_out", hook)]), pytest.raises(KeyboardInterrupt):
        probe(pm, task, batch_size=8, checkpoint=tmp_path, checkpoint_every=1)
    assert [p.name for p in tmp_path.glob("*.safetensors")] == ["probe_checkpoint.0of1.safetensors"]
    resumed = probe(pm, task, batch_size=8, checkpoint=tmp_path)  # the same command: resumes at 4
    same(resumed, probe(pm, task, batch_size=4), ("baseline", "dev_acc", "test_acc"))
    assert resumed.meta["batch_size"] == 4


def test_the_budget_counts_as_out_of_memory(model_dir, monkeypatch):
    """A batch over ``--max-memory`` (here: a measured usage that grows with the batch) halves the batch too."""
    model, task = load_model(str(model_dir), device="cpu"), tiny_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2, seed=0))
    sizes = []
    probe_hook = pm.model.hook_dict["blocks.0.mlp.hook_post"]
    probe_hook.add_perma_hook(lambda act, hook: sizes.append(act.shape[0]))
    monkeypatch.setattr("skill_lens.model.memory.resident_bytes", lambda anonymous=True: 1000 * sizes[-1])
    monkeypatch.setattr(model_record(model), "placement", Placement(memory_budget={"cpu": 4500}))
    try:
        got = probe(pm, task, batch_size=16)
    finally:
        model.reset_hooks(including_permanent=True)
    assert got.meta["batch_size"] == 4
    with pytest.raises(OutOfBudget, match="over the budget"):
        Budget({"cpu": 1}).check()
    assert halving(lambda b: b, 3, "x") == 3


def test_an_out_of_memory_batch_halves_the_suppression_curve_too(model_dir, tmp_path):
    model, task = load_model(str(model_dir), device="cpu"), tiny_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2, seed=0))
    scores = torch.rand(4, 64, generator=torch.Generator().manual_seed(0))
    kw = dict(fractions=[0, 0.1], method="gaussian", controls=1, draws=2)
    ref = suppression_curve(pm, task, scores, batch_size=4, **kw)
    with oom_above(model, 4):
        got = suppression_curve(pm, task, scores, batch_size=16, checkpoint=tmp_path / "c.safetensors", **kw)
    assert got.rows == ref.rows and got.meta["batch_size"] == 4 and not list(tmp_path.iterdir())


def test_weights_load_in_the_dtype_asked_for_without_a_float32_copy(tmp_path):
    """A float32 checkpoint loaded in bfloat16 holds bfloat16 weights and never a float32 copy of the model."""
    d = tmp_path / "m"
    tiny_hf("causal", n_layers=4, d_model=256, d_mlp=1024).save_pretrained(d)  # float32 on disk, ~17 MB
    tiny_tokenizer().save_pretrained(d)
    with TensorPeak() as m:
        model = load_model(str(d), device="cpu", dtype="bfloat16")
    params = list(model.original_model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert m.peak < 1.2 * weights  # a float32 copy first would need 3x (2x float32 + the bfloat16)


def test_the_budget_halves_the_suppression_curve_too(model_dir, monkeypatch):
    model, task = load_model(str(model_dir), device="cpu"), tiny_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2, seed=0))
    scores = torch.rand(4, 64, generator=torch.Generator().manual_seed(0))
    ref = suppression_curve(pm, task, scores, fractions=[0, 0.1], method="zero", controls=1, batch_size=2)
    sizes = []
    model.hook_dict["blocks.0.mlp.hook_post"].add_perma_hook(lambda act, hook: sizes.append(act.shape[0]))
    monkeypatch.setattr("skill_lens.model.memory.resident_bytes", lambda anonymous=True: 1000 * sizes[-1])
    monkeypatch.setattr(model_record(model), "placement", Placement(memory_budget={"cpu": 2500}))
    try:
        got = suppression_curve(pm, task, scores, fractions=[0, 0.1], method="zero", controls=1, batch_size=8)
    finally:
        model.reset_hooks(including_permanent=True)
    assert got.meta["batch_size"] == 2 and got.rows == ref.rows
