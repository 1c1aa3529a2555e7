"""BitFit and adapters by hooks: only their parameters change, the loss falls, nothing leaks."""

import pytest
import torch

from skill_lens.prompting.peft_methods import Adapter, BitFit, peft_prompted, tune_hooks
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig
from skill_lens.prompting.evaluation import hard_prompt_model


def _train_loss(pm, task):
    with torch.no_grad():
        logits = pm.label_logits(pm.encode(task.train.texts))
    return torch.nn.functional.cross_entropy(logits, torch.tensor(task.train.labels)).item()


# BitFit's shifts barely depend on the input in a random 2-layer model: it can only remove the
# untrained model's label bias (loss towards ln 2); an adapter learns the task.
@pytest.mark.parametrize("make,min_drop", [(lambda m: BitFit(m), 0.002), (lambda m: Adapter(m, rank=8), 0.05)],
                         ids=["bitfit", "adapter"])
def test_only_module_parameters_change_and_loss_falls(make, min_drop):
    model, task = tiny_model(), tiny_task()
    module = make(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module_before = {k: v.clone() for k, v in module.state_dict().items()}
    loss0 = _train_loss(peft_prompted(model, task, module), task)
    result = tune_hooks(model, task, module, TuneConfig(steps=30, eval_every=30, lr=0.05))
    loss1 = _train_loss(peft_prompted(model, task, result.module), task)
    assert loss1 < loss0 - min_drop
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(module_before[k], v) for k, v in result.module.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())


def test_hooks_removed_after_tuning_and_on_error():
    model, task = tiny_model(), tiny_task()
    hard = hard_prompt_model(model, task)
    batch = hard.encode(task.dev.texts[:4])
    clean = hard.label_logits(batch)
    module = BitFit(model)
    tune_hooks(model, task, module, TuneConfig(steps=3, eval_every=3, lr=0.5))
    assert torch.equal(hard.label_logits(batch), clean)
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())
    with pytest.raises(RuntimeError):
        hard.label_logits(batch, fwd_hooks=[*module.hooks(), ("blocks.1.mlp.hook_out", _boom)])
    assert torch.equal(hard.label_logits(batch), clean)


def _boom(act, hook):
    raise RuntimeError("boom")


def test_zero_init_is_the_frozen_model_and_tuned_module_changes_it():
    model, task = tiny_model(), tiny_task()
    hard = hard_prompt_model(model, task)
    batch = hard.encode(task.dev.texts[:4])
    for module in (BitFit(model), Adapter(model, rank=2)):
        pm = peft_prompted(model, task, module)
        assert torch.allclose(pm.label_logits(batch), hard.label_logits(batch), atol=1e-6)
    module = BitFit(model)
    with torch.no_grad():
        module.bias_out[1] += 1.0
    assert not torch.allclose(peft_prompted(model, task, module).label_logits(batch), hard.label_logits(batch))


def test_probe_sees_the_tuned_module():
    from skill_lens.probing.probe import probe

    model, task = tiny_model(), tiny_task()
    module = BitFit(model)
    with torch.no_grad():
        module.bias_in.normal_(0, 1.0)
    r_tuned = probe(peft_prompted(model, task, module), task, splits=("dev",))
    r_plain = probe(hard_prompt_model(model, task), task, splits=("dev",))
    assert r_tuned.dev_acc.shape == (2, 1, 64)
    assert not torch.equal(r_tuned.baseline, r_plain.baseline)


def test_bad_inputs():
    model, task = tiny_model(), tiny_task()
    with pytest.raises(ValueError, match="rank"):
        Adapter(model, rank=0)
    frozen = BitFit(model).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        tune_hooks(model, task, frozen, TuneConfig(steps=1))


def test_tune_hooks_follows_the_schedule_of_the_shared_loop(monkeypatch):
    import skill_lens.prompting.tuning as T

    seen = []
    real = T.learning_rate
    monkeypatch.setattr(T, "learning_rate", lambda cfg, step: seen.append(real(cfg, step)) or seen[-1])
    model, task = tiny_model(), tiny_task()
    cfg = TuneConfig(steps=6, eval_every=3, lr=0.1, warmup_steps=2, schedule="linear")
    linear = tune_hooks(model, task, BitFit(model), cfg)
    assert seen == pytest.approx([0.05, 0.1, 0.1, 0.075, 0.05, 0.025])  # warmup, then linear decay
    constant = tune_hooks(model, task, BitFit(model), TuneConfig(steps=6, eval_every=3, lr=0.1, warmup_steps=2))
    losses = lambda r: [h["loss"] for h in r.history]  # noqa: E731
    assert losses(linear)[:4] == losses(constant)[:4] and losses(linear)[4:] != losses(constant)[4:]


def test_tune_hooks_resumes_from_its_checkpoint_to_the_uninterrupted_result(tmp_path):
    from skill_lens.store.artifacts import load_tensors, save_tensors

    model, task = tiny_model(), tiny_task()
    cfg = TuneConfig(steps=6, eval_every=2, lr=0.05)
    whole = tune_hooks(model, task, Adapter(model, rank=2), cfg)
    path = tmp_path / "adapter.checkpoint.safetensors"
    tune_hooks(model, task, Adapter(model, rank=2), TuneConfig(steps=4, eval_every=2, lr=0.05), checkpoint=path)
    tensors, meta = load_tensors(path)  # as if the 6-step run had been killed after step 4
    meta["identity"]["config"]["steps"] = 6
    save_tensors(path, tensors, meta)
    resumed = tune_hooks(model, task, Adapter(model, rank=2, seed=7), cfg, checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(whole.module.parameters(), resumed.module.parameters()))
    assert whole.history == resumed.history and whole.best_step == resumed.best_step
    with pytest.raises(ValueError, match="other settings.*parameters"):  # another rank is another job
        tune_hooks(model, task, Adapter(model, rank=3), cfg, checkpoint=path)


def test_tune_hooks_checks_every_split_and_setting_before_training(monkeypatch):
    from skill_lens.prompting.prompts import PromptError
    from skill_lens.data.tasks import Split
    from skill_lens.prompting.tuning import ConfigError

    model = tiny_model()
    with pytest.raises(ConfigError, match=r"batch_size \(--batch-size\) must be .*got 0"):
        tune_hooks(model, tiny_task(), BitFit(model), TuneConfig(batch_size=0))
    monkeypatch.setattr("skill_lens.prompting.peft_methods.train", lambda *a, **k: pytest.fail("trained on a bad task"))
    task = tiny_task()
    task.test = Split(task.test.texts[:3] + [" ".join(["good"] * 400)], [0, 1, 0, 1])
    with pytest.raises(PromptError, match="example 3 of the test split has 40. tokens.*--max-length"):
        tune_hooks(model, task, BitFit(model), TuneConfig(steps=2))
    one_class = tiny_task()
    one_class.train = Split(one_class.train.texts[:4], [1, 1, 1, 1])
    with pytest.raises(PromptError, match="only one class"):
        tune_hooks(model, one_class, BitFit(model), TuneConfig(steps=2))
