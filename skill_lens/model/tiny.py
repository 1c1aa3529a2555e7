"""Tiny random models of each family and architecture, and a tiny task they can learn, built with no download.

For tests and examples: a two-layer model runs in milliseconds on a CPU. :data:`FAMILIES` are the four
models most tests use; :data:`ARCHITECTURES` has one tiny model per architecture the TransformerBridge
supports that skill_lens is tested on (``tests/test_architectures.py``, the README's coverage table),
each with an FFN width unequal to 4 x hidden and to hidden, and experts where the architecture has them.

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
from dataclasses import dataclass
from typing import Callable

import torch

from skill_lens.model.loading import bridge_from_hf

__all__ = ["tiny_model", "tiny_hf", "tiny_tokenizer", "tiny_task", "tiny_dir", "Architecture", "ARCHITECTURES",
           "FAMILIES", "VOCAB"]

FAMILIES = ("causal", "gpt2", "mlm", "seq2seq")

_SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
_POSITIVE = "good great fine nice superb lovely".split()
_NEGATIVE = "bad awful poor dull boring terrible".split()
_FILLER = "the a movie film plot was is very quite and but it this story acting".split()
VOCAB = _SPECIAL + _FILLER + _POSITIVE + _NEGATIVE + ["review", "sentiment", "answer", ":", "\n"]


@functools.lru_cache(maxsize=None)
def _tokenizer_dir(kind: str = "word") -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "word":
        tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:  # byte-level BPE, trained here on the vocabulary, each word a token (with and without its space)
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        words = [w for w in VOCAB if w not in _SPECIAL]
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=_SPECIAL, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tk.train_from_iterator([" ".join(words)] * 50 + words * 50, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        mask_token="<mask>",
    )
    path = tempfile.mkdtemp(prefix=f"skill_lens_tiny_{kind}_tok_")
    tok.save_pretrained(path)
    return path


def tiny_tokenizer(kind: str = "word"):
    """A tokenizer over :data:`VOCAB` (saved to a temp dir, as the bridge reloads it): ``"word"``, one token
    per whitespace-separated word, or ``"bpe"``, byte-level BPE as GPT-2 and Qwen use (transformers forces
    ``Qwen2Tokenizer``, a byte-level BPE, on Qwen2 directories).

    >>> tiny_tokenizer("bpe").tokenize("the film was good")
    ['the', 'Ġfilm', 'Ġwas', 'Ġgood']
    """
    from transformers import AutoTokenizer

    if kind not in ("word", "bpe"):
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose 'word' or 'bpe'")
    return AutoTokenizer.from_pretrained(_tokenizer_dir(kind))


def tiny_model(family: str = "causal", seed: int = 0, n_layers: int = 2, d_model: int = 32, d_mlp: int | None = None):
    """A random ``TransformerBridge`` of ``family`` in ``FAMILIES``: ``causal`` (Llama-style,
    gated MLP), ``gpt2`` (Conv1D layers), ``mlm`` (RoBERTa-style) or ``seq2seq`` (T5-style); or of an
    architecture in :data:`ARCHITECTURES` (``"mixtral"``, ``"phi3"``...)."""
    kind = ARCHITECTURES[family].tokenizer if family in ARCHITECTURES else "word"
    return bridge_from_hf(tiny_hf(family, seed, n_layers, d_model, d_mlp), tiny_tokenizer(kind), name=f"tiny-{family}")


def tiny_hf(family: str = "causal", seed: int = 0, n_layers: int = 2, d_model: int = 32, d_mlp: int | None = None):
    """The Hugging Face model inside :func:`tiny_model` (not bridged): to save as a local model directory
    (:func:`tiny_dir` saves it with its tokenizer). ``d_mlp`` defaults to 64 for ``FAMILIES`` and to 48 for
    ``ARCHITECTURES`` (a mixture of experts: experts of half that, a shared expert of 40).

    >>> import tempfile
    >>> from skill_lens.model.loading import describe, load_model
    >>> d = tempfile.mkdtemp()
    >>> tiny_hf("mlm").save_pretrained(d); tiny_tokenizer().save_pretrained(d) and None
    >>> describe(load_model(d)).family
    'mlm'
    """
    import transformers as tf

    torch.manual_seed(seed)
    if family in ARCHITECTURES and family not in FAMILIES:
        return ARCHITECTURES[family].build(n_layers, d_model, d_mlp or 48)
    d_mlp = d_mlp or 64
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
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES} or an architecture of ARCHITECTURES")
    return hf


def tiny_dir(name: str, path, seed: int = 0, **sizes):
    """Save the tiny model ``name`` (a family or an architecture) with its tokenizer as a local Hugging Face
    directory ``path``, which ``load_model(path)`` and ``skill-lens tune --model PATH`` read; returns ``path``.

    >>> import tempfile
    >>> from skill_lens.model.loading import describe, load_model
    >>> describe(load_model(tiny_dir("qwen2_moe", tempfile.mkdtemp()))).layers[0].describe()
    'gated MoE 4 experts x 24 + shared 40'
    """
    tiny_hf(name, seed, **sizes).save_pretrained(path)
    tiny_tokenizer(ARCHITECTURES[name].tokenizer if name in ARCHITECTURES else "word").save_pretrained(path)
    return path


@dataclass(frozen=True)
class Architecture:
    """A tiny random model of one architecture: its ``title`` (the README's), transformers' ``model`` and
    ``config`` classes, ``config(n_layers, d_model, width)`` their sizes, the ``tokenizer`` kind, and
    ``refused``: the line ``skill-lens tune`` answers with when skill_lens cannot run it (``None``: it can)."""

    title: str
    model: str
    config_class: str
    config: Callable[[int, int, int], dict]
    tokenizer: str = "word"
    refused: str | None = None

    def build(self, n_layers: int = 2, d_model: int = 32, width: int = 48) -> torch.nn.Module:
        """The random Hugging Face model (seeded by the caller).

        >>> type(ARCHITECTURES["phi3"].build()).__name__
        'Phi3ForCausalLM'
        """
        import transformers as tf

        vocab = len(tiny_tokenizer(self.tokenizer))
        config = getattr(tf, self.config_class)(**self.config(n_layers, d_model, width), vocab_size=vocab,
                                                 pad_token_id=0, bos_token_id=1, eos_token_id=2)
        return getattr(tf, self.model)(config)


def _llama(n, h, w, **more) -> dict:  # the Llama-style config most decoders share
    return dict(hidden_size=h, intermediate_size=w, num_hidden_layers=n, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=256, **more)


def _moe(n, h, w, **more) -> dict:  # experts of half the width
    return _llama(n, h, w // 2, num_experts_per_tok=2, **more)


def _seq2seq(n, h, w, **more) -> dict:  # BART-style encoder-decoders
    return dict(d_model=h, encoder_ffn_dim=w, decoder_ffn_dim=w, encoder_layers=n, decoder_layers=n,
                encoder_attention_heads=4, decoder_attention_heads=4, max_position_embeddings=256,
                decoder_start_token_id=2, **more)


_A = Architecture
ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": _A("GPT-2", "GPT2LMHeadModel", "GPT2Config",
               lambda n, h, w: dict(n_embd=h, n_inner=w, n_layer=n, n_head=4, n_positions=256)),
    "gpt_neo": _A("GPT-Neo", "GPTNeoForCausalLM", "GPTNeoConfig", lambda n, h, w: dict(
        hidden_size=h, intermediate_size=w, num_layers=n, num_heads=4, attention_types=[[["global", "local"], n // 2]],
        window_size=16, max_position_embeddings=256)),
    "gptj": _A("GPT-J", "GPTJForCausalLM", "GPTJConfig",
               lambda n, h, w: dict(n_embd=h, n_inner=w, n_layer=n, n_head=4, rotary_dim=4, n_positions=256)),
    "gpt_neox": _A("GPT-NeoX (Pythia)", "GPTNeoXForCausalLM", "GPTNeoXConfig", lambda n, h, w: dict(
        hidden_size=h, intermediate_size=w, num_hidden_layers=n, num_attention_heads=4, max_position_embeddings=256)),
    "opt": _A("OPT", "OPTForCausalLM", "OPTConfig", lambda n, h, w: dict(
        hidden_size=h, ffn_dim=w, num_hidden_layers=n, num_attention_heads=4, word_embed_proj_dim=h,
        max_position_embeddings=256)),
    "bloom": _A("BLOOM", "BloomForCausalLM", "BloomConfig", lambda n, h, w: dict(hidden_size=h, n_layer=n, n_head=4)),
    "falcon": _A("Falcon", "FalconForCausalLM", "FalconConfig", lambda n, h, w: dict(
        hidden_size=h, ffn_hidden_size=w, num_hidden_layers=n, num_attention_heads=4)),
    "llama": _A("Llama", "LlamaForCausalLM", "LlamaConfig", _llama),
    "mistral": _A("Mistral", "MistralForCausalLM", "MistralConfig", _llama),
    "mixtral": _A("Mixtral", "MixtralForCausalLM", "MixtralConfig",
                  lambda n, h, w: _moe(n, h, w, num_local_experts=4)),
    "qwen2": _A("Qwen2", "Qwen2ForCausalLM", "Qwen2Config", _llama, tokenizer="bpe"),
    "qwen2_moe": _A("Qwen2-MoE", "Qwen2MoeForCausalLM", "Qwen2MoeConfig", lambda n, h, w: _llama(
        n, h, w, moe_intermediate_size=w // 2, shared_expert_intermediate_size=40, num_experts=4, num_experts_per_tok=2),
        tokenizer="bpe"),
    "qwen3": _A("Qwen3", "Qwen3ForCausalLM", "Qwen3Config", lambda n, h, w: _llama(n, h, w, head_dim=8)),
    "qwen3_moe": _A("Qwen3-MoE", "Qwen3MoeForCausalLM", "Qwen3MoeConfig", lambda n, h, w: _llama(
        n, h, w, head_dim=8, moe_intermediate_size=w // 2, num_experts=4, num_experts_per_tok=2)),
    "gemma": _A("Gemma", "GemmaForCausalLM", "GemmaConfig", lambda n, h, w: _llama(n, h, w, head_dim=8)),
    "gemma2": _A("Gemma 2", "Gemma2ForCausalLM", "Gemma2Config", lambda n, h, w: _llama(n, h, w, head_dim=8)),
    "gemma3": _A("Gemma 3 (text)", "Gemma3ForCausalLM", "Gemma3TextConfig", lambda n, h, w: _llama(n, h, w, head_dim=8)),
    "phi": _A("Phi", "PhiForCausalLM", "PhiConfig", lambda n, h, w: dict(
        hidden_size=h, intermediate_size=w, num_hidden_layers=n, num_attention_heads=4, max_position_embeddings=256)),
    "phi3": _A("Phi-3", "Phi3ForCausalLM", "Phi3Config", _llama),
    "stablelm": _A("StableLM", "StableLmForCausalLM", "StableLmConfig", _llama),
    "olmo": _A("OLMo", "OlmoForCausalLM", "OlmoConfig", _llama),
    "olmo2": _A("OLMo 2", "Olmo2ForCausalLM", "Olmo2Config", _llama),
    "olmoe": _A("OLMoE", "OlmoeForCausalLM", "OlmoeConfig", lambda n, h, w: _moe(n, h, w, num_experts=4)),
    "gpt_bigcode": _A("GPT-BigCode (StarCoder)", "GPTBigCodeForCausalLM", "GPTBigCodeConfig",
                      lambda n, h, w: dict(n_embd=h, n_inner=w, n_layer=n, n_head=4, n_positions=256)),
    "starcoder2": _A("StarCoder2", "Starcoder2ForCausalLM", "Starcoder2Config", _llama),
    "smollm3": _A("SmolLM3", "SmolLM3ForCausalLM", "SmolLM3Config", _llama),
    "granite": _A("Granite", "GraniteForCausalLM", "GraniteConfig", _llama),
    "cohere": _A("Cohere (Command R)", "CohereForCausalLM", "CohereConfig", _llama),
    "codegen": _A("CodeGen", "CodeGenForCausalLM", "CodeGenConfig", lambda n, h, w: dict(
        n_embd=h, n_inner=w, n_layer=n, n_head=4, rotary_dim=4, n_positions=256, n_ctx=256)),
    "glm": _A("GLM", "GlmForCausalLM", "GlmConfig", lambda n, h, w: _llama(n, h, w, head_dim=8)),
    "deepseek_v3": _A("DeepSeek-V3", "DeepseekV3ForCausalLM", "DeepseekV3Config", lambda n, h, w: {**_llama(
        n, h, w, moe_intermediate_size=w // 2, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
        first_k_dense_replace=0, n_group=1, topk_group=1, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=4,
        qk_nope_head_dim=4, v_head_dim=4), "num_key_value_heads": 4}),  # latent attention: keys 8 wide, values 4
    "bert": _A("BERT", "BertForMaskedLM", "BertConfig", lambda n, h, w: dict(
        hidden_size=h, intermediate_size=w, num_hidden_layers=n, num_attention_heads=4, max_position_embeddings=260)),
    "roberta": _A("RoBERTa", "RobertaForMaskedLM", "RobertaConfig", lambda n, h, w: dict(
        hidden_size=h, intermediate_size=w, num_hidden_layers=n, num_attention_heads=4, max_position_embeddings=260)),
    "t5": _A("T5", "T5ForConditionalGeneration", "T5Config", lambda n, h, w: dict(
        d_model=h, d_ff=w, d_kv=8, num_layers=n, num_heads=4, decoder_start_token_id=0)),
    "bart": _A("BART", "BartForConditionalGeneration", "BartConfig", _seq2seq),
    "mamba": _A("Mamba", "MambaForCausalLM", "MambaConfig", lambda n, h, w: dict(hidden_size=h, num_hidden_layers=n),
                refused="has no FFN"),
    "rwkv": _A("RWKV", "RwkvForCausalLM", "RwkvConfig", lambda n, h, w: dict(
        hidden_size=h, num_hidden_layers=n, attention_hidden_size=h, intermediate_size=w, context_length=256),
        refused="has no FFN"),
    "distilbert": _A("DistilBERT", "DistilBertForMaskedLM", "DistilBertConfig",
                     lambda n, h, w: dict(dim=h, hidden_dim=w, n_layers=n, n_heads=4),
                     refused="not supported by TransformerLens"),
    "llama4": _A("Llama 4 (text)", "Llama4ForCausalLM", "Llama4TextConfig", lambda n, h, w: _llama(
        n, h, w, intermediate_size_mlp=w, num_local_experts=4, num_experts_per_tok=1, head_dim=8),
        refused="experts without transformers' experts layout flags"),
}


def tiny_task(n_train: int = 64, n_dev: int = 32, n_test: int = 32, seed: int = 0):
    """A synthetic sentiment task over :data:`VOCAB`: label 1 when the sentence holds a positive word."""
    from skill_lens.data.tasks import Task

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
