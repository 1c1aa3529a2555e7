"""Hostile and odd inputs (Hypothesis): a clear skill_lens ValueError naming the fix, or a correct result.

Also the safety scan: no pickle, no ``torch.load`` without ``weights_only=True``, no ``eval``/``exec``.
Known bugs in other modules are ``xfail(strict=True)`` with the failing input, so they flip when fixed.
"""

from __future__ import annotations

import functools
import io
import re
import tempfile
import tokenize
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import skill_lens
from skill_lens.prompting.evaluation import evaluate_distributed
from skill_lens.model.loading import describe
from skill_lens.probing.statistics import AgreementAccumulator, MeanAccumulator
from skill_lens.probing.capture import probed_positions
from skill_lens.probing.result import ProbeError
from skill_lens.probing.probe import probe
from skill_lens.prompting.prompts import PromptError, SoftPrompt
from skill_lens.data.tasks import Split, Task, TaskError
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import evaluate, prompted

FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def checkpointed(pm, task, **kw):
    """The probe's checkpointing path (a save after every batch) in a fresh directory."""
    return probe(pm, task, checkpoint=tempfile.mkdtemp(), checkpoint_every=1, **kw)


@functools.lru_cache(maxsize=None)
def model(family: str = "causal"):
    return tiny_model(family)


@functools.lru_cache(maxsize=None)
def soft(family: str = "causal", P: int = 2, max_length: int | None = None):
    return prompted(model(family), tiny_task(), SoftPrompt.init(model(family), P, seed=0), max_length)


def small_task(n_train=8, n_dev=6, n_test=0):
    return tiny_task(n_train, n_dev, n_test)


# ------------------------------------------------------------------ safety scan


def unsafe_calls(source: str) -> list[str]:
    """Code (not strings or comments) that could run pickled or arbitrary code."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)]
    found = []
    for i, t in enumerate(toks):
        prev = toks[i - 1].string if i else ""
        nxt = toks[i + 1].string if i + 1 < len(toks) else ""
        if t.type != tokenize.NAME:
            continue
        if any(bad in t.string.lower() for bad in ("pickle", "dill", "joblib", "marshal", "shelve")):
            found.append(f"line {t.start[0]}: {t.string}")
        elif t.string in ("eval", "exec", "__import__") and prev != "." and nxt == "(":
            found.append(f"line {t.start[0]}: {t.string}(")
        elif t.string == "load" and prev == "." and toks[i - 2].string == "torch":
            call, depth = [], 0
            for u in toks[i + 1:]:  # the call's tokens, to its closing parenthesis
                depth += {"(": 1, ")": -1}.get(u.string, 0)
                call.append(u.string)
                if depth == 0:
                    break
            if "weights_only=True" not in "".join(call):
                found.append(f"line {t.start[0]}: torch.load without weights_only=True")
    return found


def test_the_scan_catches_what_it_should():
    bad = ("import pickle\nx = torch.load(p)\ny = eval('1')\nexec(s)\nz = pd.read_pickle(p)\n"
           "ok = torch.load(p, weights_only=True)\nmodel.eval()\n# pickle in a comment\ns = 'eval(x)'\n")
    assert [f.split(":")[0] for f in unsafe_calls(bad)] == ["line 1", "line 2", "line 3", "line 4", "line 5"]


def test_no_pickle_eval_exec_or_unsafe_torch_load_in_the_package():
    root = Path(skill_lens.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 20
    found = {str(f.relative_to(root)): hits for f in files if (hits := unsafe_calls(f.read_text()))}
    assert found == {}


# ------------------------------------------------------------------ tasks and splits


@FEW
@given(n=st.integers(1, 4), extra=st.integers(0, 3))
def test_mismatched_split_lengths_are_task_errors(n, extra):
    assume(extra)
    with pytest.raises(TaskError, match="as many labels"):
        Split(["x"] * n, [0] * (n + extra))
    with pytest.raises(TaskError, match="as many labels"):
        Split(["x"] * n, [0] * n, ["y"] * (n + extra))


@FEW
@given(bad=st.one_of(st.integers(2, 10**6), st.integers(-10**6, -1), st.sampled_from(["1", 1.5, None])))
def test_labels_outside_the_label_set_are_task_errors(bad):
    # the message names the split, the example, the value and the label set
    with pytest.raises(TaskError, match=rf"train split.*example 1 has label {re.escape(repr(bad))}.*\['neg', 'pos'\]"):
        Task.from_lists("t", ["neg", "pos"], train=(["a", "b"], [0, bad]), dev=([], []), test=([], []))
    with pytest.raises(TaskError, match=r"dev split.*example 0 has label 2"):  # a Split built beforehand too
        Task.from_lists("t", ["neg", "pos"], train=(["a"], [0]), dev=Split(["b"], [2]), test=([], []))


def test_non_string_texts_are_task_errors():
    with pytest.raises(TaskError, match="text 0 is None"):
        Split([None, 3], [0, 1])
    with pytest.raises(TaskError, match=r"second text \(texts_b\) 1 is 3 \(int\)"):
        Split(["a", "b"], [0, 1], ["c", 3])


# ------------------------------------------------------------------ texts


@FEW
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=4),
       family=st.sampled_from(["causal", "gpt2", "mlm", "seq2seq"]))
def test_any_text_gives_finite_logits_or_a_prompt_error(texts, family):
    pm = soft(family)
    try:
        logits = pm.label_logits(pm.encode(texts))
    except PromptError:
        return
    assert logits.shape == (len(texts), 2) and torch.isfinite(logits).all()


@FEW
@given(extra=st.integers(0, 2000), family=st.sampled_from(["causal", "mlm", "seq2seq"]),
       max_length=st.integers(8, 64))
def test_texts_longer_than_the_context_need_max_length(extra, family, max_length):
    text = " ".join(["good"] * (describe(model(family)).n_ctx + extra))
    with pytest.raises(PromptError, match="max_length"):
        soft(family).encode([text, "bad"])
    pm = soft(family, max_length=max_length)
    batch = pm.encode([text, "bad"])
    assert batch.input_ids.shape[1] <= max_length
    assert torch.isfinite(pm.label_logits(batch)).all()


@pytest.mark.parametrize("family", ["causal", "mlm", "seq2seq"])
def test_max_length_too_small_for_the_prompt_is_a_prompt_error(family):
    # a 2-token prompt and the family's special tokens fill max_length=2: truncating would keep no text
    with pytest.raises(PromptError, match=r"max_length=2 leaves no room .* use max_length of at least \d"):
        soft(family, P=2, max_length=2).encode(["good bad"])
    for bad in (0, -1):  # not "no limit"
        with pytest.raises(PromptError, match=f"max_length must be a positive number of tokens, got {bad}"):
            soft(family, max_length=bad)


# ------------------------------------------------------------------ activations and splits


@FEW
@given(value=st.sampled_from([float("nan"), float("inf"), float("-inf")]), layer=st.integers(0, 1),
       call=st.integers(1, 4), checkpoint=st.booleans())
def test_non_finite_activations_while_probing_are_a_clear_error(value, layer, call, checkpoint):
    pm, task, calls = soft(), small_task(), []

    def inject(act, hook):
        calls.append(1)
        if len(calls) == call:
            act = act.clone()
            act[0, -1, 3] = value
        return act

    run = checkpointed if checkpoint else probe
    with pm.model.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", inject)]):
        with pytest.raises(ProbeError, match="non-finite activations"):
            run(pm, task, batch_size=2)


def test_non_finite_logits_in_distributed_evaluation_are_a_clear_error():
    pm = soft()
    nan = [("blocks.0.mlp.hook_post", lambda act, hook: act.fill_(float("nan")))]
    with pytest.raises(PromptError, match="non-finite label logits"):
        evaluate_distributed(pm, small_task().dev, nan)


def test_distributed_evaluation_on_labels_outside_the_verbalizer_is_a_clear_error():
    with pytest.raises(PromptError, match="label 5, but the verbalizer has 2 label words"):
        evaluate_distributed(soft(), Split(["good", "bad"], [1, 5]))


def test_non_finite_logits_in_evaluate_are_a_clear_error():
    pm = soft()
    nan = [("blocks.0.mlp.hook_post", lambda act, hook: act.fill_(float("nan")))]
    with pytest.raises(PromptError, match="non-finite label logits.*a hook writing NaN"):  # not accuracy 0.5
        evaluate(pm, small_task().dev, fwd_hooks=nan)


@pytest.mark.parametrize("label", [5, -1])
def test_evaluate_on_labels_outside_the_verbalizer_is_a_clear_error(label):
    # not a raw torch RuntimeError from gather
    with pytest.raises(PromptError, match=f"example 1 has label {label}, but the verbalizer has 2 label words"):
        evaluate(soft(), Split(["good", "bad"], [1, label]))


@pytest.mark.parametrize("empty", ["train", "dev"])
@pytest.mark.parametrize("run", [probe, checkpointed])
def test_empty_train_or_dev_is_a_probe_error(empty, run):
    task = small_task()
    setattr(task, empty, Split([], []))
    with pytest.raises(ProbeError, match=f"the {empty} split is empty"):
        run(soft(), task)


@pytest.mark.parametrize("run", [probe, checkpointed])
def test_empty_test_is_skipped_and_empty_evaluation_is_an_error(run):
    assert run(soft(), small_task(n_test=0)).test_acc is None
    with pytest.raises(PromptError, match="empty"):
        evaluate(soft(), Split([], []))


@FEW
@given(labels=st.lists(st.integers(-3, 5), min_size=2, max_size=6))
def test_non_binary_labels_are_a_probe_error(labels):
    assume(not set(labels) <= {0, 1})
    task = small_task()
    task.train = Split(["good film"] * len(labels), labels)
    with pytest.raises(ProbeError, match="binary"):
        probe(soft(), task)


def per_example_acts(pm, split) -> torch.Tensor:
    """``[n, layer, P, d_mlp]``: each example run alone, captured where the probe captures."""
    names, rows = describe(pm.model).hook_names, []
    for i in range(len(split)):
        batch, got = pm.encode(split.texts[i : i + 1]), {}
        hooks = [(h, lambda a, hook, j=j: got.__setitem__(j, probed_positions(a, batch, False, False)[0]))
                 for j, h in enumerate(names)]
        with torch.no_grad():
            pm.label_logits(batch, fwd_hooks=hooks)
        rows.append(torch.stack([got[j] for j in range(len(names))]))
    return torch.stack(rows)


@functools.lru_cache(maxsize=None)
def oracle_acts():
    task = small_task(n_train=8, n_dev=6)
    return per_example_acts(soft(), task.train), per_example_acts(soft(), task.dev)


@FEW
@given(train_idx=st.lists(st.integers(0, 7), min_size=1, max_size=10),
       dev_idx=st.lists(st.integers(0, 5), min_size=2, max_size=10))
def test_duplicates_and_one_example_batches_match_brute_force(train_idx, dev_idx):
    task = small_task(n_train=8, n_dev=6)
    assume({task.dev.labels[i] for i in dev_idx} == {0, 1})
    task.train, task.dev = task.train.subset(train_idx), task.dev.subset(dev_idx)
    train_acts, dev_acts = oracle_acts()
    base = MeanAccumulator()
    for i in train_idx:  # the probe's order of float64 additions at batch size 1
        base.add(train_acts[i : i + 1])
    agree = AgreementAccumulator().add(dev_acts[dev_idx], torch.as_tensor(task.dev.labels), base.mean())
    result = probe(soft(), task, batch_size=1)
    assert torch.equal(result.baseline, base.mean().float())
    assert torch.equal(result.dev_acc, agree.accuracy().float())
