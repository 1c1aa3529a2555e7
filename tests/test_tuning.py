"""Prompt tuning on tiny models: it learns, touches only the prompt, resumes exactly, refuses bad input."""

import os
import subprocess
import sys

import pytest
import torch

from skill_lens.prompting.prompts import PromptError
from skill_lens.workflow.runs import Run
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig, tune
from skill_lens.prompting.evaluation import evaluate, prompted

FAST = TuneConfig(prompt_length=4, steps=30, batch_size=8, eval_every=10, lr=0.1, warmup_steps=2)


def _skewed_task():
    """Three positives for each negative: even a random tiny model can lower the loss by learning the prior."""
    from skill_lens.data.tasks import Task

    t = tiny_task(n_train=96)
    keep = [i for i, y in enumerate(t.train.labels) if y == 1 or i % 6 == 0]
    tr = t.train.subset(keep)
    return Task.from_lists("skewed", ["negative", "positive"], ["bad", "good"], train=(tr.texts, tr.labels),
                           dev=(t.dev.texts, t.dev.labels), test=(t.test.texts, t.test.labels))


@pytest.mark.parametrize("family", ["causal", "gpt2", "mlm", "seq2seq"])
def test_loss_falls_and_only_the_prompt_changes(family):
    model, task = tiny_model(family), _skewed_task()
    before = {k: v.clone() for k, v in model.original_model.state_dict().items()}
    result = tune(model, task, FAST)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    after = model.original_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in model.original_model.parameters())


def test_tuning_beats_chance_on_the_tiny_task():
    # random two-layer models are weak feature extractors; the tiny T5 is the one a prompt can steer reliably
    model, task = tiny_model("seq2seq"), tiny_task()
    result = tune(model, task, TuneConfig(prompt_length=4, steps=40, batch_size=8, eval_every=10, lr=0.5))
    assert result.dev_accuracy > 0.6
    assert evaluate(prompted(model, task, result.prompt), task.dev)["accuracy"] == result.dev_accuracy


def interrupted_at_20(model, task, run_dir, edit_config=lambda config: None) -> None:
    """Run the first 20 of FAST's 30 steps in ``run_dir``, as if the run had crashed there."""
    from skill_lens.store.artifacts import load_tensors, save_tensors

    path = run_dir / "checkpoint.safetensors"
    tune(model, task, TuneConfig(**{**FAST.__dict__, "steps": 20}), checkpoint=path)
    tensors, meta = load_tensors(path)
    meta["identity"]["config"]["steps"] = FAST.steps  # the interrupted run was asked for 30 steps
    edit_config(meta["identity"]["config"])
    save_tensors(path, tensors, meta)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    model, task = tiny_model("causal"), tiny_task()
    whole = tune(model, task, FAST, checkpoint=tmp_path / "whole" / "checkpoint.safetensors")
    interrupted_at_20(model, task, tmp_path / "half")
    resumed = tune(model, task, FAST, checkpoint=tmp_path / "half" / "checkpoint.safetensors")
    assert torch.equal(whole.prompt.embedding, resumed.prompt.embedding)
    assert whole.dev_accuracy == resumed.dev_accuracy and whole.best_step == resumed.best_step
    assert whole.history == resumed.history


def test_checkpoint_of_another_task_is_refused(tmp_path):
    model = tiny_model("causal")
    tune(model, tiny_task(seed=0), FAST, checkpoint=tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match=r"c.safetensors is a tuning checkpoint of other settings \(task: "):
        tune(model, tiny_task(seed=1), FAST, checkpoint=tmp_path / "c.safetensors")


def test_checkpoint_is_a_file_kept_for_the_caller_and_run_dir_still_maps_to_one(tmp_path):
    model, task = tiny_model("causal"), tiny_task()
    cfg = TuneConfig(prompt_length=2, steps=4, batch_size=8, eval_every=2)
    a = tune(model, task, cfg, checkpoint=tmp_path / "a" / "tuning.safetensors")
    assert (tmp_path / "a" / "tuning.safetensors").exists()  # the caller removes it once the result is saved
    with pytest.warns(DeprecationWarning, match="checkpoint="):
        b = tune(model, task, cfg, run_dir=tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint.safetensors",
                                                                 "checkpoint.safetensors.json",
                                                                 "checkpoint.safetensors.log"]
    assert torch.equal(a.prompt.embedding, b.prompt.embedding)
    again = tune(model, task, cfg, checkpoint=tmp_path / "b" / "checkpoint.safetensors")  # finished: resumes at 4
    assert torch.equal(again.prompt.embedding, a.prompt.embedding) and again.history == a.history


def test_killed_tuning_resumes_to_the_same_prompt(tmp_path):
    """SIGKILL a tuning process part-way; resuming gives the uninterrupted result."""
    script = """
import os, sys, signal
os.environ["SKILL_LENS_QUIET"] = "1"
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig, tune
from skill_lens.store.checkpoint import Checkpoint
cfg = TuneConfig(prompt_length=4, steps=30, batch_size=8, eval_every=10, lr=0.1, warmup_steps=2)
if sys.argv[1] == "kill":
    orig = Checkpoint.save
    def ckpt_then_die(self, tensors, state):
        orig(self, tensors, state)
        if state["step"] == 20:
            os.kill(os.getpid(), signal.SIGKILL)
    Checkpoint.save = ckpt_then_die
r = tune(tiny_model("causal"), tiny_task(), cfg, checkpoint=os.path.join(sys.argv[2], "checkpoint.safetensors"))
r.prompt.save(os.path.join(sys.argv[2], "out.safetensors"))
"""
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    killed = subprocess.run([sys.executable, "-c", script, "kill", str(tmp_path / "a")], env=env)
    assert killed.returncode == -9
    assert not (tmp_path / "a" / "out.safetensors").exists()
    subprocess.run([sys.executable, "-c", script, "resume", str(tmp_path / "a")], env=env, check=True)
    subprocess.run([sys.executable, "-c", script, "whole", str(tmp_path / "b")], env=env, check=True)
    from skill_lens.prompting.prompts import SoftPrompt

    a = SoftPrompt.load(tmp_path / "a" / "out.safetensors").embedding
    b = SoftPrompt.load(tmp_path / "b" / "out.safetensors").embedding
    assert torch.equal(a, b)


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path):
    from skill_lens.data.tasks import Split

    model, task = tiny_model("causal"), tiny_task()
    one_class = tiny_task()
    one_class.train = Split(task.train.texts[:4], [1, 1, 1, 1])
    with pytest.raises(PromptError, match="only one class"):
        Run.create(tmp_path / "r1", model, one_class, FAST)
    empty = tiny_task()
    empty.dev = Split([], [])
    with pytest.raises(PromptError, match="empty"):
        Run.create(tmp_path / "r2", model, empty, FAST)
    with pytest.raises(PromptError, match="single token"):
        Run.create(tmp_path / "r3", model, tiny_task().with_label_words(["bad", "notaword"]), FAST)
    too_long = tiny_task()
    too_long.train = Split([" ".join(["good"] * 500)] + task.train.texts[1:], task.train.labels)
    with pytest.raises(PromptError, match="max_length"):
        Run.create(tmp_path / "r4", model, too_long, FAST)
    for name in ("r1", "r2", "r3", "r4"):
        assert not (tmp_path / name / "run.json").exists()
        assert not (tmp_path / name / "prompt.safetensors").exists()


def test_run_directory_records_what_made_it(tmp_path):
    model, task = tiny_model("causal"), tiny_task()
    run = Run.create(tmp_path, model, task, FAST)
    meta = Run.open(tmp_path).meta
    for key in ("model", "task", "placement", "template", "label_words", "label_token_ids", "prompt_length",
                "seed", "hook_names", "accuracy", "library_version"):
        assert key in meta
    assert meta["prompt_length"] == 4 and meta["hook_names"][0] == "blocks.0.mlp.hook_post"
    assert run.prompt().embedding.shape == (4, 32)
    with pytest.raises(ValueError, match="tiny-causal"):
        Run.open(tmp_path).use_model(tiny_model("mlm"))


@pytest.mark.parametrize("family", ["causal", "gpt2"])
def test_kept_input_keys_values_give_the_same_tuning(family):
    """Reusing each input's keys/values across epochs changes the speed, not the result (to float noise)."""
    import dataclasses

    from skill_lens.prompting.input_cache import InputCache

    model, task = tiny_model(family), _skewed_task()
    kept = tune(model, task, FAST)
    plain = tune(model, task, dataclasses.replace(FAST, input_cache_mb=0))
    torch.testing.assert_close(kept.prompt.embedding, plain.prompt.embedding, atol=1e-4, rtol=1e-4)
    assert [h.get("dev_accuracy") for h in kept.history] == [h.get("dev_accuracy") for h in plain.history]

    pm, cache = prompted(model, task, kept.prompt), InputCache()
    batch = pm.encode(task.dev.texts[:4])
    pm.label_logits(batch, input_cache=cache)
    assert (len(cache), cache.misses) == (4, 4)
    pm.label_logits(batch, [("blocks.0.mlp.hook_post", lambda a, hook: a * 0)], input_cache=cache)
    assert cache.hits == 0  # hooks on the inputs must run: the cache is not used with fwd_hooks
    full = InputCache(max_mb=0)  # no room: computed every time, still correct
    torch.testing.assert_close(pm.label_logits(batch, input_cache=full), pm.label_logits(batch),
                               atol=1e-5, rtol=1e-4)
    assert len(full) == 0


def test_linear_schedule_warms_up_then_decays():
    from skill_lens.prompting.tuning import learning_rate

    cfg = TuneConfig(lr=0.1, steps=20, warmup_steps=4, schedule="linear")
    lrs = [learning_rate(cfg, s) for s in range(cfg.steps)]
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:])) and 0 < lrs[-1] < 0.01
    flat = TuneConfig(lr=0.1, steps=20, warmup_steps=4)
    assert [learning_rate(flat, s) for s in range(4, 20)] == [0.1] * 16


def test_unknown_schedule_is_refused_before_tuning(tmp_path):
    with pytest.raises(PromptError, match="schedule 'cosine'.*constant, linear"):
        tune(tiny_model(), tiny_task(), TuneConfig(steps=2, schedule="cosine"), run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_runs_and_checkpoints_recorded_before_a_config_field_existed_still_resume(tmp_path):
    from skill_lens.store.artifacts import read_json, write_json

    model, task = tiny_model("causal"), tiny_task()
    whole = tune(model, task, FAST, run_dir=tmp_path / "whole")
    interrupted_at_20(model, task, tmp_path / "half", lambda config: config.pop("schedule"))  # before it existed
    resumed = tune(model, task, FAST, run_dir=tmp_path / "half")
    assert torch.equal(whole.prompt.embedding, resumed.prompt.embedding)
    with pytest.raises(ValueError, match="other settings"):  # but a real difference is still one
        tune(model, task, TuneConfig(**{**FAST.__dict__, "schedule": "linear"}), run_dir=tmp_path / "half")

    cfg = TuneConfig(prompt_length=2, steps=2, batch_size=8, eval_every=2)
    Run.create(tmp_path / "run", model, task, cfg)
    meta = read_json(tmp_path / "run" / "run.json")
    del meta["config"]["schedule"]
    write_json(tmp_path / "run" / "run.json", meta)
    assert Run.create(tmp_path / "run", model, task, cfg, reuse=True).meta == meta  # still the same run: reused


# ---------------------------------------------------------------- every setting checked before any work
BAD_SETTINGS = [
    ("prompt_length", 0, r"prompt_length \(--prompt-length\) must be a whole number of at least 1, got 0"),
    ("steps", 0, r"steps \(--steps\) must be .* at least 1, got 0"),
    ("steps", 2.5, r"steps \(--steps\) must be a whole number .*got 2.5"),
    ("batch_size", 0, r"batch_size \(--batch-size\) must be .* at least 1, got 0"),
    ("batch_size", -3, r"batch_size \(--batch-size\) .*got -3"),
    ("eval_every", 0, r"eval_every \(--eval-every\) must be .* at least 1, got 0"),
    ("eval_batch_size", 0, r"eval_batch_size must be .* at least 1, got 0"),
    ("patience", 0, r"patience \(--patience\) must be .* at least 1 \(or None: no limit\), got 0"),
    ("lr", 0.0, r"lr \(--lr\) must be a finite number above 0, got 0.0"),
    ("lr", -0.1, r"lr \(--lr\) .*got -0.1"),
    ("lr", float("nan"), r"lr \(--lr\) .*got nan"),
    ("lr", float("inf"), r"lr \(--lr\) .*got inf"),
    ("warmup_steps", -1, r"warmup_steps must be a whole number of at least 0, got -1"),
    ("weight_decay", -0.5, r"weight_decay must be a finite number of at least 0, got -0.5"),
    ("weight_decay", float("inf"), r"weight_decay .*got inf"),
    ("max_grad_norm", 0.0, r"max_grad_norm must be a number above 0 .*got 0.0"),
    ("max_grad_norm", float("nan"), r"max_grad_norm .*got nan"),
    ("schedule", "cosine", r"schedule 'cosine' .*use one of constant, linear"),
    ("init", "zeros", r"init 'zeros' .*use one of vocab, normal"),
    ("input_cache_mb", -1.0, r"input_cache_mb must be .* at least 0 .*got -1.0"),
    ("max_length", 0, r"max_length \(--max-length\) must be .* at least 1 \(or None: no limit\), got 0"),
    ("seed", "0", r"seed must be a whole number, got '0'"),
    ("cache_input", "yes", r"cache_input must be True or False, got 'yes'"),
]


@pytest.mark.parametrize("name,value,message", BAD_SETTINGS, ids=[f"{n}={v!r}" for n, v, _ in BAD_SETTINGS])
def test_every_setting_is_checked_when_the_config_is_made(name, value, message):
    import dataclasses

    from skill_lens.prompting.tuning import ConfigError

    with pytest.raises(ConfigError, match=message):
        TuneConfig(**{name: value})
    with pytest.raises(ConfigError, match=message):  # replace() checks too (e.g. re-tuning overrides)
        dataclasses.replace(TuneConfig(), **{name: value})
    assert issubclass(ConfigError, PromptError) and issubclass(ConfigError, ValueError)


def test_edge_settings_that_are_valid_stay_valid():
    cfg = TuneConfig(patience=1, max_length=1, warmup_steps=0, weight_decay=0, input_cache_mb=0, lr=1,
                     max_grad_norm=float("inf"), prompt_length=1, steps=1, batch_size=1, eval_every=1,
                     eval_batch_size=1, schedule="linear", init="normal", seed=-3)
    assert cfg.lr == 1 and cfg.max_grad_norm == float("inf")


@pytest.mark.parametrize("split,index", [("dev", 5), ("test", 31), ("train", 63)])
def test_a_too_long_text_in_any_split_is_refused_before_the_first_step(tmp_path, monkeypatch, split, index):
    import skill_lens.prompting.tuning as T
    from skill_lens.data.tasks import Split

    task = tiny_task()
    s = getattr(task, split)
    texts = list(s.texts)
    texts[index] = " ".join(["good"] * 400)  # the tiny models' context is 256 tokens
    setattr(task, split, Split(texts, s.labels))
    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("trained despite a too-long text"))
    with pytest.raises(PromptError, match=rf"example {index} of the {split} split has 40\d tokens .*context "
                                          r"\(256 tokens\).*--max-length N"):
        tune(tiny_model("causal"), task, FAST, checkpoint=tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()


def test_max_length_truncates_every_split_instead():
    import dataclasses

    from skill_lens.data.tasks import Split

    task = tiny_task()
    task.dev = Split([" ".join(["good"] * 400)] + task.dev.texts[1:], task.dev.labels)
    result = tune(tiny_model("causal"), task, dataclasses.replace(FAST, steps=2, eval_every=2, max_length=32))
    assert result.best_step == 2


def test_a_prompt_longer_than_the_context_is_encodes_own_error():
    with pytest.raises(PromptError, match="leaves no room for the text"):
        tune(tiny_model("causal"), tiny_task(), TuneConfig(prompt_length=300, steps=1))


def test_labels_outside_the_verbalizer_in_test_are_refused_before_tuning(monkeypatch):
    import skill_lens.prompting.tuning as T
    from skill_lens.data.tasks import Split

    task = tiny_task()
    task.test = Split(task.test.texts[:2], [0, 2])
    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("trained despite a bad label"))
    with pytest.raises(PromptError, match="example 1 has label 2, but the verbalizer has 2 label words"):
        tune(tiny_model("causal"), task, FAST)


def test_the_shared_loop_orders_batches_by_seed_and_step_only():
    from skill_lens.prompting.tuning import batch_indices

    epoch = [batch_indices(4, step, 10, 4) for step in range(3)]
    assert sorted(sum(epoch, [])) == list(range(10)) and [len(b) for b in epoch] == [4, 4, 2]
    assert batch_indices(4, 3, 10, 4) != epoch[0] and batch_indices(5, 0, 10, 4) != epoch[0]
    assert batch_indices(4, 1, 10, 4) == epoch[1]


def test_a_checkpoint_in_the_format_before_checkpoint_py_still_resumes(tmp_path):
    """tune wrote ``{prompt, best, exp_avg, exp_avg_sq, opt_step}`` with model/task/config/state at the top."""
    from skill_lens.store.artifacts import load_tensors, save_tensors

    model, task = tiny_model("causal"), tiny_task()
    whole = tune(model, task, FAST)
    interrupted_at_20(model, task, tmp_path, lambda config: config.pop("schedule"))
    path = tmp_path / "checkpoint.safetensors"
    tensors, meta = load_tensors(path)
    old = {k.removesuffix(".0").replace("param", "prompt"): v for k, v in tensors.items()}
    assert sorted(old) == ["best", "exp_avg", "exp_avg_sq", "opt_step", "prompt"]
    save_tensors(path, old, {**meta["identity"], "state": meta["state"]})
    resumed = tune(model, task, FAST, checkpoint=path)
    assert torch.equal(whole.prompt.embedding, resumed.prompt.embedding) and whole.history == resumed.history
    with pytest.raises(ValueError, match="other settings"):
        tune(model, tiny_task(seed=1), FAST, checkpoint=path)
