"""Length-sorted batches and the batched input pass: same numbers as one example at a time, in order."""

from __future__ import annotations

import pytest
import torch

from skill_lens import steps
from skill_lens.data.batching import length_batches, pad_fraction, token_lengths
from skill_lens.prompting.evaluation import predict, prompted
from skill_lens.prompting.input_cache import InputCache
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.data.tasks import Task
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig


def ragged():
    """Texts of 1 to 12 words: batches in the split's order pad a lot."""
    base = tiny_task(48, 40, 24, seed=3)

    def cut(split):
        return [" ".join((t.split() * 3)[: 1 + (7 * i) % 12]) for i, t in enumerate(split.texts)], list(split.labels)

    return Task.from_lists("ragged", ["negative", "positive"], ["bad", "good"], train=cut(base.train),
                           dev=cut(base.dev), test=cut(base.test), hard_prompt="review : {text} \n sentiment :")


def distinct(task) -> int:
    """Inputs a cache of every split holds (the same text in two splits is one input)."""
    return len({t for s in task.splits().values() for t in s.texts})


@pytest.fixture(scope="module")
def pm():
    model = tiny_model("causal")
    return prompted(model, ragged(), SoftPrompt.init(model, 3, seed=1))


def test_batched_input_pass_agrees_with_one_input_at_a_time(pm):
    dev = ragged().dev
    filled, alone = InputCache(), InputCache()
    filled.fill(pm, dev)  # length-sorted batches of 32, left-padded
    for idx in length_batches(pm, dev, 7):
        batch = pm.encode_split(dev, idx)
        a = pm.label_logits(batch, input_cache=filled)
        b = pm.label_logits(batch, input_cache=alone)  # misses: each input computed alone
        assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, pm.label_logits(batch), atol=1e-5)
    assert filled.misses == 0 and alone.misses == len(dev) and len(filled) == len(alone) == len(dev)


def test_fill_is_a_function_of_the_split_alone(pm):
    """Whatever a cache held before, an input's keys/values are those of its fixed batch: bit for bit."""
    data = ragged()
    fresh, used = InputCache(), InputCache()
    used.fill(pm, data.train)  # another split first: the dev batches are still the dev split's own
    fresh.fill(pm, data.dev), used.fill(pm, data.dev)
    batch = pm.encode_split(data.dev, list(range(len(data.dev))))
    assert torch.equal(pm.label_logits(batch, input_cache=fresh),
                       pm.label_logits(batch, input_cache=used))


def test_predict_restores_the_split_order(pm):
    dev = ragged().dev
    got = predict(pm, dev, batch_size=5)
    one_by_one = torch.cat([pm.label_logits(pm.encode_split(dev, [i])) for i in range(len(dev))])
    assert torch.allclose(got, one_by_one, atol=1e-5)
    cached = predict(pm, dev, batch_size=5, input_cache=InputCache())
    assert torch.allclose(cached, one_by_one, atol=1e-5)


def test_length_batches_cut_padding(pm):
    dev = ragged().dev
    lengths, batches = token_lengths(pm, dev), length_batches(pm, dev, 8)
    assert sorted(i for b in batches for i in b) == list(range(len(dev)))
    assert pad_fraction(lengths, batches) < 0.5 * pad_fraction(lengths, None, 8)


def test_probe_through_the_cache_equals_the_full_forward(pm):
    task = ragged()
    plain = probe(pm, task, batch_size=6)
    cache = InputCache()
    cache.fill(pm, task.dev)  # what tuning left; the probe fills train and test itself
    cached = probe(pm, task, batch_size=6, input_cache=cache)
    assert torch.allclose(plain.baseline, cached.baseline, atol=1e-5)
    assert torch.equal(plain.dev_acc, cached.dev_acc) and torch.equal(plain.test_acc, cached.test_acc)
    assert cache.misses == 0 and len(cache) == distinct(task)


def test_a_cache_belongs_to_one_model(pm):
    cache = InputCache()
    cache.fill(pm, ragged().dev)
    other = prompted(tiny_model("causal", seed=1), ragged(), SoftPrompt.init(tiny_model("causal", seed=1), 3))
    with pytest.raises(ValueError, match="another model"):
        cache.fill(other, ragged().dev)


def test_a_run_reuses_the_inputs_tuning_computed(tmp_path):
    model, task = tiny_model("causal"), ragged()
    run = steps.tune(tmp_path / "run", model, task, TuneConfig(prompt_length=2, steps=4, batch_size=8, eval_every=2))
    cache = run.input_cache
    assert len(cache) == distinct(task)  # tuning, dev and test evaluation
    misses = cache.misses
    steps.probe(run)
    steps.perturb(run, fractions=(0.0, 0.1), controls=1)
    assert cache.misses == misses, "the probe and the curve computed an input again"


def test_a_split_that_does_not_fit_runs_the_ordinary_way(pm):
    task = ragged()
    small = InputCache(max_mb=0.05)  # a few inputs of the tiny model
    assert not small.fill(pm, task.dev)
    assert len(small) < len(task.dev)
    got = predict(pm, task.dev, batch_size=5, input_cache=small)
    assert torch.allclose(got, predict(pm, task.dev, batch_size=5), atol=1e-5)
    assert small.misses == 0, "a split that does not fit is not computed one input at a time"
    assert torch.equal(probe(pm, task, batch_size=6, input_cache=small).dev_acc, probe(pm, task, batch_size=6).dev_acc)


# ------------------------------------------------------------------ kept on disk across processes
def _computed_inputs(model):
    """Counts the input passes a cache runs (each fill batch is one forward of the base model)."""
    calls = []
    handle = model.original_model.base_model.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_a_split_kept_on_disk_is_read_back_bit_for_bit(pm, tmp_path):
    dev = ragged().dev
    first = InputCache(directory=tmp_path)
    assert first.fill(pm, dev)
    files = sorted(p.name for p in tmp_path.glob("inputs-*.safetensors"))
    assert len(files) == 1
    calls, handle = _computed_inputs(pm.model)
    try:
        second = InputCache(directory=tmp_path)  # as another process would
        assert second.fill(pm, dev)
    finally:
        handle.remove()
    assert calls == [] and second.loaded == len(second) == len(first)
    assert torch.equal(predict(pm, dev, batch_size=5, input_cache=second),
                       predict(pm, dev, batch_size=5, input_cache=first))


def test_another_model_or_batching_gets_its_own_file(pm, tmp_path):
    dev = ragged().dev
    assert InputCache(directory=tmp_path).fill(pm, dev)
    other = prompted(tiny_model("causal", seed=1), ragged(), SoftPrompt.init(tiny_model("causal", seed=1), 3, seed=0))
    for cache, p in ((InputCache(directory=tmp_path), other), (InputCache(directory=tmp_path, batch_size=7), pm)):
        assert cache.fill(p, dev) and cache.loaded == 0
    assert len(list(tmp_path.glob("inputs-*.safetensors"))) == 3


def test_the_directory_stays_under_its_budget_and_keeps_what_it_did_not_write(pm, tmp_path):
    task = ragged()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "other.safetensors").write_bytes(b"not ours")
    one = InputCache(directory=tmp_path)
    one.fill(pm, task.dev)
    size = next(tmp_path.glob("inputs-*.safetensors")).stat().st_size
    small = InputCache(directory=tmp_path, disk_mb=1.5 * size / 2**20)  # room for one split's file
    assert small.fill(pm, task.test)
    kept = list(tmp_path.glob("inputs-*.safetensors"))
    assert len(kept) == 1 and InputCache(directory=tmp_path).fill(pm, task.test)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "other.safetensors").exists()


def test_a_damaged_file_is_computed_and_rewritten(pm, tmp_path):
    dev = ragged().dev
    InputCache(directory=tmp_path).fill(pm, dev)
    path = next(tmp_path.glob("inputs-*.safetensors"))
    path.write_bytes(b"truncated")
    cache = InputCache(directory=tmp_path)
    assert cache.fill(pm, dev) and cache.loaded == 0
    again = InputCache(directory=tmp_path)
    assert again.fill(pm, dev) and again.loaded == len(again)


def test_a_run_opened_in_another_process_reads_its_inputs_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("SKILL_LENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SKILL_LENS_INPUT_DISK_MB", "64")
    model, task = tiny_model("causal"), ragged()
    steps.tune(tmp_path / "run", model, task, TuneConfig(prompt_length=2, steps=4, batch_size=8, eval_every=2))
    assert len(list((tmp_path / "cache" / "inputs").glob("inputs-*.safetensors"))) == 3  # train, dev, test
    from skill_lens.workflow.runs import Run

    run = Run.open(tmp_path / "run")  # a new Run and a new cache, as `skill-lens probe` has
    run.use_model(model)
    run.use_task(task)
    steps.probe(run)
    assert run.input_cache.loaded == distinct(task) and run.input_cache.misses == 0  # every input read, none computed
    seed1 = steps.tune(tmp_path / "seed1", model, task, TuneConfig(prompt_length=3, steps=2, batch_size=8, seed=1))
    assert seed1.input_cache.loaded == distinct(task), "another seed and prompt length computed the inputs again"


def test_a_disk_that_cannot_be_written_costs_speed_not_the_job(pm, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    cache = InputCache(directory=blocked / "inputs")
    with pytest.warns(UserWarning, match="could not keep the input keys/values"):
        assert cache.fill(pm, ragged().dev)
    assert len(cache) == len(set(ragged().dev.texts))


def test_a_file_made_from_something_else_is_not_read(pm, tmp_path):
    from skill_lens.store.artifacts import load_tensors, save_tensors

    dev = ragged().dev
    InputCache(directory=tmp_path).fill(pm, dev)
    path = next(tmp_path.glob("inputs-*.safetensors"))
    tensors, meta = load_tensors(path)
    save_tensors(path, tensors, {**meta, "model_fingerprint": "another model"})  # same name, other lineage
    cache = InputCache(directory=tmp_path)
    assert cache.fill(pm, dev) and cache.loaded == 0
