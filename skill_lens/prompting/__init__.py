"""Soft prompts: placement and the prompted forward pass, tuning (the one training loop), evaluation, BitFit and adapters."""
