"""The plan before a run: each step's peak memory from the config alone, within 20% of what the step holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import skill_lens as sl
from skill_lens.data.batching import token_lengths
from skill_lens.intervening.suppression import suppression_curve
from skill_lens.prompting.input_cache import InputCache
from skill_lens.model.memory import TensorPeak
from skill_lens.model.tiny import tiny_hf, tiny_model, tiny_task
from skill_lens.probing.probe import probe
from skill_lens.prompting.evaluation import prompted
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.prompting.tuning import TuneConfig, tune
from skill_lens.workflow.plan import model_shape, plan

from clitools import cli

CONFIGS = Path(__file__).resolve().parents[1] / "docs" / "configs"


def measured(model, task, P: int, K: int, batch_size: int = 32) -> dict[str, int]:
    """Bytes of live tensors at each step's peak (the weights, made before, are not counted)."""
    pm = prompted(model, task, SoftPrompt.init(model, P, seed=0))
    out = {}
    with TensorPeak() as m:
        tune(model, task, TuneConfig(prompt_length=P, steps=10, eval_every=5, batch_size=8))
    out["tune"] = m.peak
    with TensorPeak() as m:
        result = probe(pm, task, batch_size=batch_size, permutations=K, input_cache=InputCache())
    out["probe"] = m.peak
    with TensorPeak() as m:
        suppression_curve(pm, task, result.scores("dev"), batch_size=batch_size, input_cache=InputCache())
    out["perturb"] = m.peak
    return out


@pytest.mark.parametrize("d_mlp,permutations", [(256, 0), (1024, 50)])
def test_the_plan_is_within_20_percent_of_each_steps_measured_peak(d_mlp, permutations):
    torch.manual_seed(0)
    model, task, P = tiny_model("causal", n_layers=4, d_model=64, d_mlp=d_mlp), tiny_task(128, 64, 64), 4
    tokens = int((token_lengths(prompted(model, task, SoftPrompt.init(model, P)), task.train) - P).median())
    p = plan(model, task, tokens=tokens, prompt_length=P, batch_size=32, permutations=permutations, steps=10,
             eval_every=5, tune_batch_size=8)
    got = measured(model, task, P, permutations)
    for step in p.steps:
        assert 0.8 <= (step.peak - step.weights) / got[step.step] <= 1.2, (step, got[step.step])
    if permutations:
        assert p.step("probe").null_counts == permutations * 4 * P * d_mlp  # uint8: at most 255 examples a split


def test_the_probe_holds_one_splits_null_counts_at_a_time():
    """With the null dominating memory, probing dev and test peaks no higher than probing dev alone."""
    model, task = tiny_model("causal", n_layers=2, d_model=32, d_mlp=512), tiny_task(16, 16, 16)
    pm = prompted(model, task, SoftPrompt.init(model, 4, seed=0))
    peaks = []
    for splits in [("dev",), ("dev", "test")]:
        with TensorPeak() as m:
            probe(pm, task, permutations=2000, splits=splits)
        peaks.append(m.peak)
    null_counts = 2000 * 2 * 4 * 512  # one byte a count
    assert peaks[0] > null_counts and peaks[1] < peaks[0] + null_counts / 2, peaks


def test_the_plan_needs_only_the_config(tmp_path):
    hf = tiny_hf("causal", n_layers=3, d_model=64, d_mlp=128)
    (tmp_path / "config.json").write_text(hf.config.to_json_string())
    from_config = model_shape(str(tmp_path / "config.json"))
    assert from_config.weight_bytes == pytest.approx(model_shape(tiny_model("causal", 0, 3, 64, 128)).weight_bytes,
                                                     rel=0.01)  # the bridge adds a few buffers
    assert (from_config.n_layers, from_config.d_mlp, from_config.mlp_inputs) == (3, 128, 2)
    assert model_shape(hf.config, "bfloat16").weight_bytes * 2 == pytest.approx(from_config.weight_bytes, rel=0.01)
    big = plan(str(CONFIGS / "llama-3-70b.json"), dtype="bfloat16", permutations=200)
    assert 70e9 < big.weights / 2 < 71e9 and big.offload("80GiB")["probe"] > 50 * 2**30  # a meta model: instant
    assert big.step("probe").null_counts == 200 * 80 * 8 * 28672  # one byte a count: 200 examples a split
    assert plan(str(CONFIGS / "smollm2-135m.json")).fits("24GiB") == {"tune": True, "probe": True, "perturb": True}
    assert sl.plan is plan


def test_plan_options_are_checked():
    with pytest.raises(TypeError, match="unknown option.* batchsize"):
        plan(tiny_model(), batchsize=8)
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\) must be a whole number"):
        plan(tiny_model(), batch_size=0)
    with pytest.raises(ValueError, match="sizes are"):
        plan(tiny_model(), {"train": -1})


def test_the_cli_prints_the_plan_with_a_column_per_budget():
    rc, out, err = cli("plan", CONFIGS / "llama-3-8b.json", "--dtype", "bfloat16", "--budget", "80GiB",
                       "--budget", "8GiB", "--permutations", "200")
    assert rc == 0, err
    assert "weights 14.96 GiB" in out and "in 80GiB" in out and "in 8GiB" in out
    probe_row = next(line for line in out.splitlines() if line.strip().startswith("probe"))
    assert "yes" in probe_row and "offload" in probe_row
    rc, _, err = cli("plan", CONFIGS / "llama-3-8b.json", "--budget", "lots")
    assert rc == 2 and "not a size" in err


@pytest.mark.slow
def test_the_plan_is_within_20_percent_of_smollm2s_measured_peak():
    """SmolLM2-135M: weights and each step's live tensors, probing 72 examples with a null."""
    model = sl.load_model("smollm2-135m", device="cpu")
    task = sl.load_task("rotten_tomatoes", train_size=32, dev_size=32, test_size=8, seed=0)
    pm = prompted(model, task, SoftPrompt.init(model, 8))
    tokens = int((token_lengths(pm, task.train) - 8).median())
    p = plan(model, task, tokens=tokens, batch_size=16, permutations=100)
    with TensorPeak() as m:  # dev then test: one split's null counts at a time
        probe(pm, task, batch_size=16, permutations=100, input_cache=InputCache())
    weights = sum(t.numel() * t.element_size() for t in {id(t): t for t in (
        *model.original_model.parameters(), *model.original_model.buffers())}.values())
    assert p.weights == weights
    assert 0.8 <= p.step("probe").peak / (weights + m.peak) <= 1.2
    assert 0.8 <= (p.step("probe").peak - weights) / m.peak <= 1.25, json.dumps(p.to_dict()["steps"][1])
