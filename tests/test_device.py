"""Device and dtype: the library follows the model's (``--device``, ``--dtype``), in bfloat16 and on CUDA.

On a CPU-only machine the bfloat16 runs stand in for another device: every linear layer of the model must
see inputs in the model's dtype and on its device (a float32 tensor mixed into the activations would
promote them to float32), the model must stay where it was loaded, and results come back on the CPU.
The CUDA tests run only where CUDA is.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from clitools import FAST_TUNE, cli, copy_run, snapshot

from skill_lens import steps
from skill_lens.model.fingerprint import fingerprint
from skill_lens.model.loading import bridge_from_hf, load_model, model_device, model_dtype, parse_device
from skill_lens.prompting.prompted_model import PromptedModel
from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
from skill_lens.workflow.runs import Run
from skill_lens.model.tiny import tiny_hf, tiny_task, tiny_tokenizer
from skill_lens.prompting.tuning import TuneConfig

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _watch(model) -> list[tuple[torch.dtype, torch.device]]:
    """Record the dtype and device of every input of every linear layer of ``model`` (forward pre-hooks)."""
    seen = []
    for module in model.original_model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(lambda mod, args: seen.append((args[0].dtype, args[0].device)))
    return seen


def _steps_pipeline(model, tmp_path):
    """tune -> probe -> neurons -> perturb (gaussian and mean) on ``model`` through skill_lens.workflow.steps."""
    run = steps.tune(tmp_path / "run", model, tiny_task(), TuneConfig(prompt_length=2, steps=4, eval_every=2,
                                                                       batch_size=8))
    result = steps.probe(run, batch_size=16, permutations=3)
    steps.neurons(run, top=0.25)
    curves = [steps.perturb(run, method=m, fractions=[0, 0.1], controls=1, batch_size=16) for m in ("gaussian", "mean")]
    return run, result, curves


def _check_pipeline(model, run, result, curves, seen, dtype, device) -> None:
    assert seen and set(seen) == {(dtype, device)}, f"activations left {dtype} on {device}: {set(seen)}"
    assert {(p.dtype, p.device) for p in model.original_model.parameters()} == {(dtype, device)}
    assert run.meta["dtype"] == str(dtype).removeprefix("torch.")
    prompt = run.prompted().prompt.embedding
    assert (prompt.dtype, prompt.device) == (torch.float32, device)  # the float32 master copy beside the model
    for name in ("baseline", "dev_acc", "test_acc", "null_max_dev"):
        t = getattr(result, name)
        assert t.device.type == "cpu" and torch.isfinite(t).all(), name
    assert run.probe_result().baseline.isfinite().all()
    for curve in curves:
        assert all(math.isfinite(r["accuracy"]) and math.isfinite(r["logit_diff"]) for r in curve.rows)
    acc = run.meta["accuracy"]
    assert all(0.0 <= acc[k] <= 1.0 for k in ("dev", "test", "hard_prompt_dev"))


def test_a_bfloat16_run_stays_in_bfloat16_on_its_device(model_dir, tmp_path):
    model = load_model(str(model_dir("causal")), device="cpu", dtype="bfloat16")
    seen = _watch(model)
    run, result, curves = _steps_pipeline(model, tmp_path)
    _check_pipeline(model, run, result, curves, seen, torch.bfloat16, torch.device("cpu"))


def test_label_logits_in_bfloat16_follow_the_float32_model():
    hf = tiny_hf("causal")
    m32 = bridge_from_hf(hf, tiny_tokenizer(), name="tiny-causal")
    m16 = bridge_from_hf(tiny_hf("causal").to(torch.bfloat16), tiny_tokenizer(), name="tiny-causal")
    assert model_dtype(m16) == torch.bfloat16 and model_device(m16) == torch.device("cpu")
    prompt = SoftPrompt.init(m32, 3, seed=0)
    verbalizer = Verbalizer.from_words(m32, ["bad", "good"])
    texts = ["the movie was good", "bad", "a dull and boring plot"]
    ref = PromptedModel(m32, prompt, verbalizer).label_logits(PromptedModel(m32, prompt, verbalizer).encode(texts))
    pm = PromptedModel(m16, SoftPrompt(prompt.embedding), verbalizer)
    batch = pm.encode(texts)
    plain, cached = pm.label_logits(batch), pm.label_logits(batch, input_cache=True)
    assert plain.dtype == torch.bfloat16 and torch.isfinite(plain).all()
    torch.testing.assert_close(plain.float(), ref.detach(), atol=0.1, rtol=0.05)
    torch.testing.assert_close(cached.float(), plain.float(), atol=0.05, rtol=0.05)
    cached.float().sum().backward()  # the gradient reaches the float32 master copy through the cast
    assert pm.prompt.embedding.dtype == torch.float32 and pm.prompt.embedding.grad.dtype == torch.float32
    assert torch.isfinite(pm.prompt.embedding.grad).all() and pm.prompt.embedding.grad.abs().sum() > 0


def test_the_fingerprint_depends_on_the_dtype_not_on_the_device():
    m32 = bridge_from_hf(tiny_hf("causal"), tiny_tokenizer(), name="tiny-causal")
    m16 = bridge_from_hf(tiny_hf("causal").to(torch.bfloat16), tiny_tokenizer(), name="tiny-causal")
    assert fingerprint(m32) != fingerprint(m16)
    if torch.cuda.is_available():
        assert fingerprint(bridge_from_hf(tiny_hf("causal"), tiny_tokenizer(), "tiny-causal", "cuda")) == fingerprint(m32)


def test_bfloat16_tune_probe_perturb_through_the_cli(model_dir, task_csv, tmp_path):
    out = tmp_path / "run"
    rc, _, err = cli("tune", "--model", model_dir("causal"), "--task", f"csv:{task_csv()}", "--out", out, *FAST_TUNE,
                     "--device", "cpu", "--dtype", "bf16")
    assert rc == 0, err
    assert json.loads((out / "run.json").read_text())["dtype"] == "bfloat16"
    rc, stdout, err = cli("probe", out, "--device", "cpu")  # the run's dtype by default
    assert rc == 0, err
    assert "probed 2 layers" in stdout
    rc, stdout, err = cli("perturb", out, "--method", "gaussian", "--fractions", "0,0.1", "--controls", "1",
                          "--dtype", "bfloat16")
    assert rc == 0, err
    data = json.loads((out / "perturb_gaussian.json").read_text())
    assert all(math.isfinite(r["accuracy"]) and math.isfinite(r["logit_diff"]) for r in data["rows"])
    assert Run.open(out).probe_result().baseline.isfinite().all()


def test_a_step_in_another_dtype_than_the_run_is_refused_naming_dtype(model_dir, task_csv, tmp_path):
    out = tmp_path / "run"
    rc, _, err = cli("tune", "--model", model_dir("causal"), "--task", f"csv:{task_csv()}", "--out", out, *FAST_TUNE,
                     "--dtype", "bfloat16")
    assert rc == 0, err
    rc, _, err = cli("probe", out, "--dtype", "float32")
    assert rc == 2 and "Traceback" not in err
    assert "tuned on" in err and "in bfloat16" in err and "--dtype bfloat16" in err
    assert not (out / "predictivity.safetensors").exists()


def test_a_float32_run_probed_in_bfloat16_is_refused_untouched(made_run, tmp_path):
    run = copy_run(made_run("causal"), tmp_path / "run")  # tuned in float32 (the default)
    before = snapshot(run)
    rc, _, err = cli("perturb", run, "--dtype", "bfloat16", "--method", "zero", "--fractions", "0,0.1")
    assert rc == 2 and "Traceback" not in err
    assert "in float32, but this model is in bfloat16" in err and "--dtype float32" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("step", ["tune", "probe", "perturb", "patch", "robustness", "report", "prune", "demo"])
@pytest.mark.parametrize("flag, value", [("--dtype", "int8"), ("--device", "gpu"), ("--device", "cuda:99")])
def test_bad_device_or_dtype_names_the_flag(step, flag, value, tmp_path):
    args = {"tune": ["--out", tmp_path / "new"], "demo": ["--out", tmp_path / "new"],
            "patch": [tmp_path, "--source-text", "a", "--target-text", "b"],
            "robustness": [tmp_path, "--adversarial", "typos:0.1"]}.get(step, [tmp_path])
    rc, out, err = cli(step, *args, flag, value)
    assert rc == 2 and "Traceback" not in err and out == ""
    assert f"error: {flag} {value!r}" in err or f"error: {flag} {value}:" in err, err
    assert not (tmp_path / "new").exists()  # refused before any work


def test_parse_device_refuses_cuda_without_it():
    if torch.cuda.is_available():
        assert parse_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="--device cuda: this machine has no CUDA"):
            parse_device("cuda")
    assert parse_device(None) == parse_device("auto")


@CUDA
def test_a_run_on_cuda_stays_on_cuda(model_dir, tmp_path):
    model = load_model(str(model_dir("causal")), device="cuda")
    seen = _watch(model)
    run, result, curves = _steps_pipeline(model, tmp_path)
    _check_pipeline(model, run, result, curves, seen, torch.float32, model_device(model))
    again = Run.open(run.path, device="cpu")  # the same weights on another device: the same lineage
    assert model_device(again.model).type == "cpu" and again.probe_result() is not None


@CUDA
def test_a_bfloat16_run_on_cuda(model_dir, tmp_path):
    model = load_model(str(model_dir("causal")), device="cuda", dtype=torch.bfloat16)
    seen = _watch(model)
    run, result, curves = _steps_pipeline(model, tmp_path)
    _check_pipeline(model, run, result, curves, seen, torch.bfloat16, model_device(model))
