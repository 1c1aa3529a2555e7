"""skill_lens: find and use skill neurons in pretrained transformers, on TransformerLens hooks."""

__version__ = "0.1.0"
