"""Files: atomic safetensors + JSON artifacts (never pickles), one resumable job's checkpoint, the pinned offline model and corpora."""
