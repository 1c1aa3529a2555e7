"""Tiny random models of each family, and a tiny task they can learn, built with no download.

For tests and examples: a two-layer model runs in milliseconds on a CPU.

>>> from skill_lens.model.loading import describe
>>> model = tiny_model("mlm")
>>> describe(model).family
'mlm'
>>> task = tiny_task()
>>> task.label_words, len(task.train)
(['bad', 'good'], 64)
"""

from __future__ import annotations

import functools
import random
import tempfile

import torch

from skill_lens.data.tasks import Task
from skill_lens.model.loading import bridge_from_hf

__all__ = ["tiny_model", "tiny_hf", "tiny_tokenizer", "tiny_task", "FAMILIES", "VOCAB"]

FAMILIES = ("causal", "gpt2", "mlm", "seq2seq")

_SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
_POSITIVE = "good great fine nice superb lovely".split()
_NEGATIVE = "bad awful poor dull boring terrible".split()
_FILLER = "the a movie film plot was is very quite and but it this story acting".split()
VOCAB = _SPECIAL + _FILLER + _POSITIVE + _NEGATIVE + ["review", "sentiment", "answer", ":", "\n"]


@functools.lru_cache(maxsize=None)
def _tokenizer_dir() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        mask_token="<mask>",
    )
    path = tempfile.mkdtemp(prefix="skill_lens_tiny_tok_")
    tok.save_pretrained(path)
    return path


def tiny_tokenizer():
    """A whitespace word-level tokenizer over :data:`VOCAB` (saved to a temp dir, as the bridge reloads it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_tokenizer_dir())


def tiny_model(family: str = "causal", seed: int = 0, n_layers: int = 2, d_model: int = 32, d_mlp: int = 64):
    """A random ``TransformerBridge`` of ``family`` in ``FAMILIES``: ``causal`` (Llama-style,
    gated MLP), ``gpt2`` (Conv1D layers), ``mlm`` (RoBERTa-style) or ``seq2seq`` (T5-style)."""
    return bridge_from_hf(tiny_hf(family, seed, n_layers, d_model, d_mlp), tiny_tokenizer(), name=f"tiny-{family}")


def tiny_hf(family: str = "causal", seed: int = 0, n_layers: int = 2, d_model: int = 32, d_mlp: int = 64):
    """The Hugging Face model inside :func:`tiny_model` (not bridged): to save as a local model directory.

    >>> import tempfile
    >>> from skill_lens.model.loading import describe, load_model
    >>> d = tempfile.mkdtemp()
    >>> tiny_hf("mlm").save_pretrained(d); tiny_tokenizer().save_pretrained(d) and None
    >>> describe(load_model(d)).family
    'mlm'
    """
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=len(VOCAB), pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "causal":
        hf = tf.LlamaForCausalLM(tf.LlamaConfig(
            hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=n_layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, **common))
    elif family == "gpt2":
        hf = tf.GPT2LMHeadModel(tf.GPT2Config(
            n_embd=d_model, n_inner=d_mlp, n_layer=n_layers, n_head=4, n_positions=256, **common))
    elif family == "mlm":
        hf = tf.RobertaForMaskedLM(tf.RobertaConfig(
            hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=n_layers, num_attention_heads=4,
            max_position_embeddings=260, **common))
    elif family == "seq2seq":
        hf = tf.T5ForConditionalGeneration(tf.T5Config(
            d_model=d_model, d_ff=d_mlp, d_kv=8, num_layers=n_layers, num_heads=4, decoder_start_token_id=0,
            **common))
    else:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    return hf


def tiny_task(n_train: int = 64, n_dev: int = 32, n_test: int = 32, seed: int = 0):
    """A synthetic sentiment task over :data:`VOCAB`: label 1 when the sentence holds a positive word."""
    rng = random.Random(seed)

    def sentence(label: int) -> str:
        words = rng.sample(_FILLER, 4)
        words.insert(rng.randrange(5), rng.choice(_POSITIVE if label else _NEGATIVE))
        return " ".join(words)

    def split(n: int):
        labels = [i % 2 for i in range(n)]
        return [sentence(y) for y in labels], labels

    (tr, ytr), (dv, ydv), (te, yte) = split(n_train), split(n_dev), split(n_test)
    return Task.from_lists(
        "tiny_sentiment", ["negative", "positive"], ["bad", "good"],
        train=(tr, ytr), dev=(dv, ydv), test=(te, yte), hard_prompt="review : {text} \n sentiment :",
    )
