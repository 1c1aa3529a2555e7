"""The input cache on disk: whole splits' keys/values kept in files for the next process that needs them.

An :class:`~skill_lens.prompting.input_cache.InputCache` with a directory writes every split it computed
whole into one safetensors file there, named by a hash of everything its numbers depend on (the model's
weights fingerprint, dtype and device type, torch's version, the attention implementation, the batch size
and the split's exact batches). A later fill of the same split on the same model, in this process or
another, reads it back bit for bit instead of computing it: ``skill-lens tune`` then ``skill-lens probe``
compute each input once. A file whose recorded identity differs is not read, a damaged one is written
again, and the directory is kept under its budget by removing the least recently used files, only those
named ``inputs-*.safetensors`` (never what another program put there).

>>> import tempfile, torch
>>> files = InputFiles(tempfile.mkdtemp(), disk_mb=1)
>>> path = files.directory / "inputs-example.safetensors"
>>> files.write(path, {"format": FORMAT}, {(5, 7): torch.ones(2, 2, 1, 2, 4), (9,): torch.zeros(2, 2, 1, 1, 4)})
>>> [(key, kv.shape[3]) for key, kv in files.read(path, {"format": FORMAT}, room=2**20)]
[((5, 7), 2), ((9,), 1)]
>>> files.read(path, {"format": FORMAT + 1}, room=2**20) is None  # made from something else: not read
True
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor

from skill_lens.model.fingerprint import fingerprint
from skill_lens.model.loading import dtype_name, model_device
from skill_lens.store.artifacts import ArtifactError, load_tensors, save_tensors

__all__ = ["InputFiles", "disk_budget_mb", "DISK_ENV", "DEFAULT_DISK_MB", "FORMAT"]

DISK_ENV = "SKILL_LENS_INPUT_DISK_MB"  # disk the persistent cache may use (0: none)
DEFAULT_DISK_MB = 8192.0
FORMAT = 2  # of the files in the persistent cache's directory


def disk_budget_mb() -> float:
    """The megabytes of disk the persistent input cache may use: ``$SKILL_LENS_INPUT_DISK_MB`` (default 8192; 0
    keeps nothing on disk), checked.

    >>> disk_budget_mb() >= 0
    True
    """
    raw = os.environ.get(DISK_ENV, "")
    try:
        disk_mb = float(raw) if raw.strip() else DEFAULT_DISK_MB
    except ValueError:
        raise ValueError(f"${DISK_ENV}={raw!r} is not a number of megabytes; set it to e.g. 8192, or 0 to keep "
                         "no input keys/values on disk.") from None
    return max(disk_mb, 0.0)


class InputFiles:
    """A directory of split files (``inputs-<hash>.safetensors``), kept under ``disk_mb`` megabytes.

    Each file holds one split's inputs end to end: their token ids (``ids``, with each input's ``lengths``)
    and their keys/values (``kv``, ``[layers, 2, kv_heads, length, head_dim]`` concatenated along the length),
    with the identity they were computed under in its metadata.
    """

    def __init__(self, directory: str | os.PathLike, disk_mb: float = DEFAULT_DISK_MB):
        self.directory, self.disk_bytes = Path(directory), int(disk_mb * 2**20)

    def locate(self, pm, batches: list, batch_size: int) -> tuple[Path, dict]:
        """The file of a split's inputs under the prompted model ``pm``, computed in ``batches``
        (``(ids, mask, keys)`` each) of ``batch_size``, and what it records of how (checked when it is read)."""
        hf = pm.model.original_model
        identity = {"format": FORMAT, "model_fingerprint": fingerprint(pm.model),
                    "dtype": dtype_name(next(hf.parameters()).dtype), "device": model_device(pm.model).type,
                    "torch": torch.__version__, "attention": hf.config._attn_implementation,
                    "batch_size": batch_size}
        h = hashlib.sha256(repr(sorted(identity.items())).encode())
        for ids, mask, _ in batches:
            h.update(repr(tuple(ids.shape)).encode())
            h.update(ids.cpu().numpy().tobytes())
            h.update(mask.cpu().numpy().tobytes())
        identity["batches"] = h.hexdigest()  # ... and the exact batches
        return self.directory / f"inputs-{h.hexdigest()[:32]}.safetensors", identity

    def write(self, path: Path, identity: dict, inputs: dict[tuple[int, ...], Tensor]) -> None:
        """Keep ``inputs`` (token ids -> keys/values) in ``path`` unless they alone exceed ``disk_mb``, then trim
        the directory to ``disk_mb``. Raises ``OSError`` or ``ArtifactError`` when the disk refuses."""
        if sum(kv.numel() * kv.element_size() for kv in inputs.values()) > self.disk_bytes:
            return
        tensors = {"ids": torch.tensor([t for key in inputs for t in key]),
                   "lengths": torch.tensor([len(key) for key in inputs]), "kv": torch.cat(list(inputs.values()), dim=3)}
        self.directory.mkdir(parents=True, exist_ok=True)
        save_tensors(path, tensors, {"kind": "input keys/values", **identity})
        self.trim(keep=path)

    def read(self, path: Path, identity: dict, room: int) -> list[tuple[tuple[int, ...], Tensor]] | None:
        """The inputs stored in ``path`` as ``(token ids, keys/values)`` (views of its tensors); ``None`` if it
        is missing, unreadable, made from anything but ``identity``, or bigger than ``room`` bytes."""
        try:
            if path.stat().st_size > room:
                return None
            tensors, meta = load_tensors(path)
        except (OSError, ArtifactError):  # missing, or not readable here
            return None
        if any(meta.get(k) != v for k, v in identity.items()) or not {"ids", "lengths", "kv"} <= tensors.keys():
            return None
        lengths = tensors["lengths"].tolist()
        os.utime(path)  # recently used: trimmed last
        return [(tuple(key.tolist()), kv)
                for key, kv in zip(tensors["ids"].split(lengths), tensors["kv"].split(lengths, dim=3))]

    def trim(self, keep: Path) -> None:
        """Remove the least recently used files this class names until the directory fits ``disk_mb``
        (never ``keep``, the file just written)."""
        files = []
        for f in self.directory.glob("inputs-*.safetensors"):
            try:
                files.append((f.stat().st_mtime, f.stat().st_size, f))
            except FileNotFoundError:  # another process trimmed it meanwhile
                continue
        total = 0
        for _, size, f in sorted(files, reverse=True):
            total += size
            if total > self.disk_bytes and f != keep:
                for old in (f, f.with_suffix(f.suffix + ".json")):
                    old.unlink(missing_ok=True)
