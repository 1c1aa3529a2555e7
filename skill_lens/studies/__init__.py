"""The papers' evidence: specificity, transferability, origin, label words, word selectivity, robustness, the pruning study."""
