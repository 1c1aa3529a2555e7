"""Checkpoints: one resumable job's state in one atomic safetensors file, tied to what the job computes.

Tuning, probing and suppression curves all resume after a kill the same way: every so often
they :meth:`Checkpoint.save` their tensors and a JSON-able ``state``; a rerun of the same command
:meth:`Checkpoint.load`\\ s them back. The checkpoint records an ``identity`` (model, task, prompt,
options ...); a checkpoint whose identity differs from the job's is refused with the fields that
differ, never silently resumed. :meth:`Checkpoint.remove` deletes the file once the job's result
is written (only this checkpoint's own files).

What grows with the job goes to an append-only log beside it (``<path>.log``, JSON lines after a line of
identity), never rewritten: :meth:`Checkpoint.append` adds a record (a finished curve row, fsynced at once;
a training step's loss, made durable with the next :meth:`~Checkpoint.save`), :meth:`Checkpoint.records`
reads them back, only up to the last save when the job also saves state, so the two always agree. A
record torn by a kill is dropped. A save costs the state, not the history.

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
>>> ck.append({"row": 1}); ck.append({"row": 2}); ck.records()
[{'row': 1}, {'row': 2}]
>>> ck.remove(); ck.path.exists(), ck.log.exists()
(False, False)
"""

from __future__ import annotations

import json
import os
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
        self.log = self.path.with_name(self.path.name + ".log")
        self._appender = None

    def save(self, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
        """Write ``tensors`` and ``state`` atomically (a kill leaves the previous checkpoint or none); the records
        appended so far are made durable first and belong to this state."""
        log_bytes = self._sync_log()
        save_tensors(self.path, dict(tensors), {"identity": self.identity, "state": dict(state),
                                                "log_bytes": log_bytes})

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """``(tensors, state)`` of a checkpoint of this very job; ``None`` when there is none."""
        if not self.path.exists():
            return None
        tensors, meta = load_tensors(self.path)
        old = meta.get("identity")
        if not isinstance(old, dict) or "state" not in meta:
            raise ArtifactError(f"{self.path} is not a skill_lens {self.what} checkpoint; delete it to start over.")
        self._check_identity(old)
        return tensors, meta["state"]

    def append(self, record: Mapping[str, Any], sync: bool = True) -> None:
        """Add ``record`` to the log. ``sync``: durable now, a record of its own (a curve's row); else durable
        with the next :meth:`save` and read back only with the state it saved (a training step)."""
        if self._appender is None:
            self.records(tied=not sync)  # a torn record, or one the last save does not cover, goes first
            new = not self.log.exists() or self.log.stat().st_size == 0
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._appender = open(self.log, "a")
            if new:
                self._appender.write(json.dumps({"identity": self.identity}) + "\n")
        self._appender.write(json.dumps(dict(record)) + "\n")
        if sync:
            self._sync_log()

    def records(self, tied: bool = False) -> list[dict]:
        """The log's records; ``tied``: only those saved with the checkpoint's state (the rest are cut off, and
        all of them without a checkpoint). A record a kill tore is cut off."""
        if self._appender is not None:
            self._appender.flush()
        if not self.log.exists():
            return []
        data = self.log.read_bytes()
        keep = data.rfind(b"\n") + 1  # complete lines only
        if tied:
            keep = min(keep, load_tensors(self.path)[1].get("log_bytes") or 0) if self.path.exists() else 0
        if keep < len(data) and self._appender is None:
            os.truncate(self.log, keep)
        lines = [json.loads(line) for line in data[:keep].splitlines() if line.strip()]
        if lines and not tied:  # a tied log belongs to the state file, whose identity load() checked
            self._check_identity(lines[0].get("identity"))
        return lines[1:]

    def stored_identity(self) -> dict | None:
        """The identity recorded on disk (by the state file, else the log), whatever it is; ``None`` when there is
        no checkpoint or it is unreadable. For a job that may have been started with other settings
        (:func:`skill_lens.model.memory.halved_start`).

        >>> import tempfile; from pathlib import Path
        >>> ck = Checkpoint(Path(tempfile.mkdtemp()) / "c.safetensors", {"batch_size": 8})
        >>> ck.stored_identity(); ck.append({"row": 1}); Checkpoint(ck.path, {}).stored_identity()
        {'batch_size': 8}
        """
        try:
            if self.path.exists():
                from safetensors import safe_open

                with safe_open(str(self.path), "pt") as f:
                    return json.loads((f.metadata() or {})["skill_lens_meta"]).get("identity")
            if self.log.exists():
                with open(self.log) as f:
                    return json.loads(f.readline()).get("identity")
        except Exception:  # noqa: BLE001 - not ours or damaged: load() names the problem
            return None
        return None

    def remove(self) -> None:
        """Delete this checkpoint's files: the state, its JSON sidecar and the log (after the job's result is
        written)."""
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        for p in (self.path, self.path.with_name(self.path.name + ".json"), self.log):
            p.unlink(missing_ok=True)

    def _sync_log(self) -> int:
        if self._appender is None:
            return self.log.stat().st_size if self.log.exists() else 0
        self._appender.flush()
        os.fsync(self._appender.fileno())
        return self._appender.tell()

    def _check_identity(self, old) -> None:
        if not isinstance(old, dict):
            raise ArtifactError(f"{self.path} is not a skill_lens {self.what} checkpoint; delete it to start over.")
        diffs = [f"{k}: {_short(old.get(k))} in the checkpoint, {_short(v)} now"
                 for k, v in self.identity.items() if old.get(k) != v]
        if diffs:
            raise ArtifactError(f"{self.path} is a {self.what} checkpoint of other settings ({'; '.join(diffs)}); "
                                "rerun with the same settings to resume, or delete it to start over.")


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
