"""Checkpoints: one resumable job's state in one atomic safetensors file, tied to what the job computes.

Tuning, probing and suppression curves all resume after a kill the same way: every so often
they :meth:`Checkpoint.save` their tensors and a JSON-able ``state``; a rerun of the same command
:meth:`Checkpoint.load`\\ s them back. The checkpoint records an ``identity`` (model, task, prompt,
options ...); a checkpoint whose identity differs from the job's is refused with the fields that
differ, never silently resumed. :meth:`Checkpoint.remove` deletes the file once the job's result
is written (only this checkpoint's own file and sidecar).

>>> import tempfile, torch
>>> from pathlib import Path
>>> ck = Checkpoint(Path(tempfile.mkdtemp()) / "job.checkpoint.safetensors", {"model": "m", "steps": 4}, "tuning")
>>> ck.load() is None
True
>>> ck.save({"x": torch.ones(2)}, {"step": 2})
>>> tensors, state = ck.load()
>>> tensors["x"].tolist(), state
([1.0, 1.0], {'step': 2})
>>> Checkpoint(ck.path, {"model": "m", "steps": 8}, "tuning").load()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
skill_lens.store.artifacts.ArtifactError: ... is a tuning checkpoint of other settings (steps: 4 in the checkpoint, 8 now); rerun with the same settings to resume, or delete it to start over.
>>> ck.remove(); ck.path.exists()
False
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from skill_lens.store.artifacts import ArtifactError, load_tensors, save_tensors

__all__ = ["Checkpoint"]


class Checkpoint:
    """``path``: the checkpoint file; ``identity``: what the job computes (JSON-able); ``what``: for messages."""

    def __init__(self, path, identity: Mapping[str, Any], what: str = "job"):
        self.path = Path(path)
        self.identity = json.loads(json.dumps(dict(identity)))  # as it reads back: tuples are lists
        self.what = what

    def save(self, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
        """Write ``tensors`` and ``state`` atomically (a kill leaves the previous checkpoint or none)."""
        save_tensors(self.path, dict(tensors), {"identity": self.identity, "state": dict(state)})

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """``(tensors, state)`` of a checkpoint of this very job; ``None`` when there is none."""
        if not self.path.exists():
            return None
        tensors, meta = load_tensors(self.path)
        old = meta.get("identity")
        if not isinstance(old, dict) or "state" not in meta:
            raise ArtifactError(f"{self.path} is not a skill_lens {self.what} checkpoint; delete it to start over.")
        diffs = [f"{k}: {_short(old.get(k))} in the checkpoint, {_short(v)} now"
                 for k, v in self.identity.items() if old.get(k) != v]
        if diffs:
            raise ArtifactError(f"{self.path} is a {self.what} checkpoint of other settings ({'; '.join(diffs)}); "
                                "rerun with the same settings to resume, or delete it to start over.")
        return tensors, meta["state"]

    def remove(self) -> None:
        """Delete this checkpoint's file and its JSON sidecar (after the job's result is written)."""
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".json").unlink(missing_ok=True)


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
