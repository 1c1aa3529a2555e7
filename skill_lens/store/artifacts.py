"""Artifacts: safetensors for tensors, JSON for metadata, atomic writes, no pickles.

Every file skill_lens writes goes through :func:`atomic_write`, so a killed run
never leaves a half-written file that reads as complete: data is written to a
temporary file in the same directory and renamed into place.

>>> import tempfile, torch, os
>>> d = tempfile.mkdtemp()
>>> save_tensors(os.path.join(d, "x.safetensors"), {"a": torch.ones(2)}, {"task": "demo"})
>>> t, meta = load_tensors(os.path.join(d, "x.safetensors"))
>>> t["a"].tolist(), meta["task"]
([1.0, 1.0], 'demo')
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

__all__ = [
    "ArtifactError",
    "atomic_write",
    "write_json",
    "read_json",
    "save_tensors",
    "load_tensors",
    "check_meta",
    "library_version",
    "fsync_dir",
    "umask",
    "check_safetensors",
]


class ArtifactError(ValueError):
    """An artifact is missing, corrupt, or does not match what it is used with."""


def library_version() -> str:
    from skill_lens import __version__

    return __version__


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    The file gets the permissions the umask gives a new file (as ``open`` would), not the temporary's 0600,
    so collaborators who may read the folder may read what we write. The temporary is named
    ``.<name>.sl<pid>.<random>.tmp``: one a killed process leaves is removed by the next writer of the folder
    (:func:`skill_lens.store.manifest.clean_temporaries`).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "f.txt")
    >>> with atomic_write(p) as f:
    ...     _ = f.write("hello")
    >>> open(p).read()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.sl{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def umask() -> int:
    """The process's umask (what ``open`` and ``mkdir`` take away from 0o666 and 0o777).

    >>> 0 <= umask() <= 0o777
    True
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o22)  # no /proc (macOS): read it by setting it, then put it back
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames and removals in directory ``path`` durable (a no-op where directories cannot be synced).

    >>> import tempfile
    >>> fsync_dir(tempfile.mkdtemp())
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist: run the step that writes it first.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it and rerun.") from e


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def save_tensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None
) -> None:
    """Save tensors as safetensors plus a readable JSON sidecar ``<path>.json``.

    ``meta`` (plus the library version and each tensor's shape and dtype) is stored in the
    safetensors header too, so the one file written atomically is the whole artifact:
    a killed write leaves the previous version or nothing, never a mix.
    """
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ArtifactError(f"tensor {k!r} has non-finite values; refusing to save it to {path}.")
    sidecar = dict(meta or {})
    sidecar.setdefault("library_version", library_version())
    sidecar["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()}
    with atomic_write(path, "wb") as f:
        f.write(save(tensors, metadata={"skill_lens_meta": json.dumps(sidecar, default=_json_default)}))
    write_json(_sidecar(path), sidecar)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``(tensors, meta)`` saved by :func:`save_tensors`."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist: run the step that writes it first.")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{path} is not a readable safetensors file ({e}); delete it and rerun.") from e
    meta = json.loads(header["skill_lens_meta"]) if "skill_lens_meta" in header else {}
    return tensors, meta


def check_safetensors(path: str | os.PathLike) -> None:
    """Refuse a truncated or corrupt safetensors file in one line naming it (reads only its header).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_tensors(p, {"w": torch.ones(4)}); check_safetensors(p)
    >>> _ = os.truncate(p, os.path.getsize(p) - 3)
    >>> check_safetensors(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.store.artifacts.ArtifactError: ...w.safetensors is truncated or corrupt (it has 221 bytes; its header describes 224); download or save it again.
    """
    size = os.path.getsize(path)
    why = None
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or n > size - 8:
            why = f"it has {size} bytes, too few for its header"
        else:
            try:
                header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                why = "its header is not valid"
            else:
                if 8 + n + end != size:
                    why = f"it has {size} bytes; its header describes {8 + n + end}"
    if why:
        raise ArtifactError(f"{path} is truncated or corrupt ({why}); download or save it again.")


def check_meta(meta: Mapping[str, Any], expected: Mapping[str, Any], what: str) -> None:
    """Raise :class:`ArtifactError` naming every field where ``meta`` differs from ``expected``.

    >>> check_meta({"model": "a", "d_mlp": 4}, {"model": "a", "d_mlp": 4}, "prompt")
    >>> check_meta({"model": "a"}, {"model": "b"}, "prompt")
    Traceback (most recent call last):
    ...
    skill_lens.store.artifacts.ArtifactError: prompt was made for model='a', but this is model='b'. Use a matching model or redo the prompt.
    """
    diffs = [
        f"{k}={meta.get(k)!r}, but this is {k}={v!r}"
        for k, v in expected.items()
        if k in meta and v is not None and meta.get(k) != v
    ]
    if diffs:
        raise ArtifactError(f"{what} was made for " + "; ".join(diffs) + f". Use a matching model or redo the {what}.")


def _sidecar(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".json")
