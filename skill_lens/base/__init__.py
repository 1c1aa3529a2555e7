"""Utilities every stage uses: progress bars, confidence intervals and notebook displays."""
