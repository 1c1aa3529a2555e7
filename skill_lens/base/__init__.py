"""Utilities every stage uses: progress bars and confidence intervals."""
