"""A folder skill_lens writes into: one writer at a time, each step committed whole, a manifest of what we wrote.

A run directory, a pruned model's directory and a seeds directory are each a :class:`Folder`:

* **One writer.** :meth:`Folder.writing` takes an advisory lock (``fcntl.flock`` on ``FOLDER/.lock``) for the
  whole step; the lock file names the step and its process, so a second writer is refused in one line
  naming them. The kernel releases the lock when its process dies, so a killed step never leaves a lock
  behind; the next writer notices the dead process's record and says so.
* **Whole steps.** A step writes its outputs into ``FOLDER/.staging/``; :meth:`Transaction.commit` then writes
  a journal (``.staging/commit.json``: what to install, what to remove, the new manifest) and applies it. The
  journal is the commit point: a step killed before it leaves the folder as it was (the staging folder is
  removed by the next writer), one killed after it is completed by the next writer or reader. Readers take
  a shared lock on the folder while they read, so they never see a commit half applied.
* **A manifest of what we wrote.** ``FOLDER/manifest.json`` records every file a step committed, with the
  step, its kind (:mod:`skill_lens.store.kinds`) and the sha256 of its bytes. Only files it lists are ever
  replaced or removed, and :meth:`Folder.verify` refuses a file whose bytes changed since, naming the
  command that makes it again. Paths are relative: a moved, copied or symlinked folder stays valid.

>>> import tempfile
>>> folder = Folder(tempfile.mkdtemp())
>>> with folder.writing("probe") as tx:
...     _ = tx.path("scores.txt", "predictivity").write_text("0.9")
>>> sorted(folder.manifest()), folder.entry("scores.txt")["step"]
(['scores.txt'], 'probe')
>>> folder.verify("scores.txt", "skill-lens probe RUN")
>>> _ = (folder.root / "scores.txt").write_text("1.0")
>>> folder.verify("scores.txt", "skill-lens probe RUN")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
skill_lens.store.artifacts.ArtifactError: ...scores.txt changed after `probe` wrote it ... make it again: skill-lens probe RUN.

A step removes only what the manifest lists; a file it did not write stays, and a step that fails commits
nothing:

>>> _ = (folder.root / "mine.txt").write_text("my notes")
>>> with folder.writing("tune") as tx:
...     tx.remove("scores.txt"); tx.remove("mine.txt")
>>> sorted(p.name for p in folder.root.iterdir() if not p.name.startswith("."))
['manifest.json', 'mine.txt']
>>> try:
...     with folder.writing("probe") as tx:
...         _ = tx.path("half.txt", "predictivity").write_text("...")
...         raise KeyboardInterrupt
... except KeyboardInterrupt:
...     pass
>>> (folder.root / "half.txt").exists(), (folder.root / ".staging").exists()
(False, False)
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; steps are still committed whole
    fcntl = None

from skill_lens.base.progress import say
from skill_lens.store.artifacts import ArtifactError, fsync_dir, read_json, write_json
from skill_lens.store.kinds import LOCK, MANIFEST, STAGING

__all__ = ["Folder", "Transaction", "LockedError", "content_hash", "clean_temporaries"]

JOURNAL = "commit.json"
FORMAT = 1
_HELD: dict[tuple[int, int], "_Held"] = {}  # folders this process writes: a nested step joins the outer one


class LockedError(ArtifactError):
    """Another process is writing the folder."""


def content_hash(path) -> str:
    """The sha256 of a file's bytes (hex): an artifact's own content hash, recorded in the manifest.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "f"); _ = open(p, "w").write("x")
    >>> content_hash(p)[:16]
    '2d711642b726b044'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Held:
    def __init__(self, fd: int, tx: "Transaction"):
        self.fd, self.tx, self.depth = fd, tx, 1


class Folder:
    """A directory skill_lens writes into as a unit (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)

    # ------------------------------------------------------------------ the manifest
    def manifest(self) -> dict[str, dict]:
        """``{relative path: {"sha256", "size", "kind", "step"}}`` of every file committed; ``{}`` without one."""
        self.settle()
        path = self.root / MANIFEST
        if not path.exists():
            return {}
        data = read_json(path)
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            raise ArtifactError(f"{path} is not a skill_lens manifest (no 'files'); it is corrupt.")
        return files

    def has_manifest(self) -> bool:
        return (self.root / MANIFEST).exists()

    def entry(self, rel: str) -> dict | None:
        """The manifest's record of ``rel`` (``None``: not written by a step of ours)."""
        return self.manifest().get(str(rel))

    def verify(self, rel: str, redo: str) -> None:
        """Refuse ``rel`` unless its bytes are the ones a step committed (a folder without a manifest, made by
        an older skill_lens, is not checked). ``redo`` is the command that makes it again."""
        files = self.manifest()
        if not files:
            return
        path, rec = self.root / rel, files.get(str(rel))
        if rec is None:
            raise ArtifactError(f"{path} was not written by a skill_lens step in {self.root} (manifest.json does not "
                                f"list it), so its content cannot be trusted; make it again: {redo}.")
        if not path.exists():
            raise ArtifactError(f"{path} is missing although `{rec.get('step')}` wrote it; make it again: {redo}.")
        if path.stat().st_size != rec.get("size") or content_hash(path) != rec.get("sha256"):
            raise ArtifactError(f"{path} changed after `{rec.get('step')}` wrote it (its content hash differs from "
                                f"manifest.json's): it was edited or damaged; make it again: {redo}.")

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def writing(self, step: str) -> Iterator["Transaction"]:
        """Hold the folder's write lock for ``step`` and yield a :class:`Transaction`, committed when the block
        ends without an error (nothing is committed otherwise; :meth:`Transaction.commit` commits earlier). A
        nested call in the same process joins the outer step's transaction. Another process writing the
        folder: :class:`LockedError`, naming it. A folder this call made, left empty by a failed step, is
        removed again."""
        key = _key_or_none(self.root)
        held = _HELD.get(key) if key is not None else None
        if held is not None:
            held.depth += 1
            try:
                yield held.tx
            finally:
                held.depth -= 1
            return
        made_root, made_lock = not self.root.exists(), not (self.root / LOCK).exists()
        self.root.mkdir(parents=True, exist_ok=True)
        fd = self._lock(step)
        tx = Transaction(self, step)
        _HELD[_key(self.root)] = _Held(fd, tx)
        try:
            yield tx
            tx.commit()
        finally:
            tx.discard()
            del _HELD[_key(self.root)]
            self._unlock(fd, made_lock and not tx.committed, made_root)

    def _unlock(self, fd: int, forget: bool, made_root: bool) -> None:
        """Release the lock; a finished step leaves an empty record (a killed one leaves its own, so the next
        writer knows). ``forget``: remove the lock file (and the folder, if made and left empty)."""
        os.ftruncate(fd, 0)
        if forget:
            (self.root / LOCK).unlink(missing_ok=True)
            if made_root and not any(self.root.iterdir()):
                self.root.rmdir()
        os.close(fd)

    def _lock(self, step: str) -> int:
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _flock(fd, "try")
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise LockedError(f"{self.root} is being written by {_holder(path)}; wait for it to finish (or stop it), "
                              "then rerun.") from None
        old = _record(path)
        if old and old.get("pid") != os.getpid() and not _alive(old.get("pid")):
            say(f"{self.root}: `{old.get('step')}` (process {old.get('pid')}) ended without finishing; completing or "
                "undoing what it left")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"step": step, "pid": os.getpid(), "since": _now()}).encode(), 0)
        self.recover()
        clean_temporaries(self.root)
        return fd

    def recover(self) -> None:
        """Complete a commit whose journal was written (roll forward), or drop a step's staged outputs that
        never reached it (roll back). Called by the next writer; readers call :meth:`settle`."""
        staging = self.root / STAGING
        if (staging / JOURNAL).exists():
            _apply(self.root, read_json(staging / JOURNAL))
        if staging.exists():
            shutil.rmtree(staging)
            fsync_dir(self.root)

    def settle(self) -> None:
        """A reader's part of recovery: a commit left half applied by a killed writer is completed first (if no
        one else is writing the folder now)."""
        if not (self.root / STAGING / JOURNAL).exists() or _key_or_none(self.root) in _HELD:
            return
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _flock(fd, "try")
        except OSError:
            os.close(fd)
            with self.reading():  # the writer is applying it: wait until it is done
                return
        try:
            if (self.root / STAGING / JOURNAL).exists():
                self.recover()
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A shared lock on the folder while reading: a writer applying a commit waits, and waits for us."""
        if not self.root.is_dir() or _key_or_none(self.root) in _HELD:
            yield
            return
        fd = os.open(self.root, os.O_RDONLY) if fcntl is not None else None
        try:
            _flock(fd, "shared")
            yield
        finally:
            if fd is not None:
                os.close(fd)


class Transaction:
    """The outputs of one step: files staged in ``FOLDER/.staging/``, committed together (see the module docstring)."""

    def __init__(self, folder: Folder, step: str):
        self.folder, self.step = folder, step
        self.staged: dict[str, str] = {}  # relative path -> kind
        self.removed: set[str] = set()
        self.committed = False
        self.trees: dict[str, str] = {}
        self.adopted: dict[str, dict] = {}

    @property
    def staging(self) -> Path:
        return self.folder.root / STAGING

    def path(self, rel: str, kind: str, ours: bool = False) -> Path:
        """Where to write ``rel`` (a file of ``kind``) now; it replaces ``FOLDER/rel`` when the step commits.
        A file of that name that the manifest does not list is refused (not ours), unless ``ours`` says the
        caller recognised it as ours (e.g. a report by its generator tag)."""
        rel = str(rel)
        target = self.folder.root / rel
        unlisted = target.exists() and self.folder.entry(rel) is None and self.folder.has_manifest() and not ours
        if target.is_dir() or unlisted:
            raise ArtifactError(f"{target} exists and was not written by skill_lens; it is left as it is. Move it "
                                "away, then rerun.")
        self.staged[rel] = kind
        self.removed.discard(rel)
        out = self.staging / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def remove(self, rel: str, ours: bool = False) -> None:
        """Remove ``FOLDER/rel`` when the step commits, if the manifest lists it (else it is not ours: kept), or
        ``ours`` says this step made it (a checkpoint it resumed from)."""
        if (ours or self.folder.entry(str(rel)) is not None) and str(rel) not in self.staged:
            self.removed.add(str(rel))

    def adopt(self, files: dict[str, str]) -> None:
        """List files written before this folder had a manifest (``{relative path: kind}``), as they are now, in
        the manifest this step commits: an older run's files stay readable and replaceable."""
        for rel, kind in files.items():
            p = self.folder.root / rel
            if p.is_file():
                self.adopted[rel] = {"sha256": content_hash(p), "size": p.stat().st_size, "kind": kind,
                                     "step": "adopted"}

    def stage_tree(self, rel: str, kind: str) -> Path:
        """A staging folder for ``rel/`` whose files are written by others' code (``save_pretrained``): every file
        found there when the step commits is committed as ``kind``."""
        self.trees[str(rel)] = kind
        out = self.staging / rel
        out.mkdir(parents=True, exist_ok=True)
        return out

    def remove_folder(self, rel: str) -> None:
        """Remove a folder of ours inside this one (e.g. ``pruned/``): the files its own manifest lists."""
        sub = Folder(self.folder.root / rel)
        for name in sub.manifest():
            self.removed.add(f"{rel}/{name}")
        if sub.has_manifest():
            self.removed.add(f"{rel}/{MANIFEST}")

    def commit(self) -> None:
        """Write the journal (the commit point), then apply it: install the staged files, remove the removed
        ones, write the new manifest."""
        for tree, kind in self.trees.items():
            for p in sorted((self.staging / tree).rglob("*")):
                rel = str(p.relative_to(self.staging))
                if p.is_file() and rel not in self.staged:
                    self.path(rel, kind)
        self.trees = {}
        if not self.staged and not self.removed:
            return
        files = {k: v for k, v in {**self.adopted, **self.folder.manifest()}.items() if k not in self.removed}
        for rel, kind in self.staged.items():
            src = self.staging / rel
            if not src.exists():
                raise ArtifactError(f"step `{self.step}` staged {rel} but wrote nothing there (a bug in skill_lens).")
            files[rel] = {"sha256": content_hash(src), "size": src.stat().st_size, "kind": kind, "step": self.step}
        journal = {"step": self.step, "install": sorted(self.staged), "remove": sorted(self.removed),
                   "manifest": {"format": FORMAT, "files": dict(sorted(files.items()))}}
        fsync_dir(self.staging)
        write_json(self.staging / JOURNAL, journal)
        fd = os.open(self.folder.root, os.O_RDONLY) if fcntl is not None else None
        try:
            _flock(fd, "exclusive")  # readers are done reading the old state
            _apply(self.folder.root, journal)
        finally:
            if fd is not None:
                os.close(fd)
        self.staged, self.removed, self.committed = {}, set(), True

    def discard(self) -> None:
        """Drop whatever was staged and not committed (an error or an interruption ended the step)."""
        if self.staging.exists() and not (self.staging / JOURNAL).exists():
            shutil.rmtree(self.staging, ignore_errors=True)


def _apply(root: Path, journal: dict) -> None:
    """Apply a commit journal; safe to repeat (a killed apply is completed by the next one)."""
    staging = root / STAGING
    for rel in journal["remove"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(root / rel)
    for rel in journal["install"]:
        if (staging / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, root / rel)
    write_json(root / MANIFEST, journal["manifest"])
    for rel in journal["remove"]:  # folders of ours left empty (a removed pruned model)
        parent = (root / rel).parent
        if parent != root and parent.is_dir() and not any(p.name not in (LOCK,) for p in parent.iterdir()):
            with contextlib.suppress(OSError):
                (parent / LOCK).unlink(missing_ok=True)
                parent.rmdir()
    fsync_dir(root)
    os.unlink(staging / JOURNAL)
    shutil.rmtree(staging, ignore_errors=True)


_TEMP = re.compile(r"^\..+\.sl(\d+)\.[^.]+\.tmp$")  # store.artifacts.atomic_write's temporaries


def clean_temporaries(root) -> list[str]:
    """Remove atomic-write temporaries left in ``root`` by processes that died (SIGKILL, power loss): only files
    named as :func:`~skill_lens.store.artifacts.atomic_write` names them, whose process is gone.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / ".run.json.sl999999999.x1.tmp").write_text("{")
    >>> _ = (d / ".mine.tmp").write_text("keep")
    >>> clean_temporaries(d), sorted(p.name for p in d.iterdir())
    (['.run.json.sl999999999.x1.tmp'], ['.mine.tmp'])
    """
    removed = []
    for p in Path(root).iterdir() if Path(root).is_dir() else ():
        m = _TEMP.match(p.name)
        if m and p.is_file() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def _flock(fd, how: str) -> None:
    """``flock`` ``fd``: ``"try"`` (exclusive, or OSError at once), ``"exclusive"`` or ``"shared"`` (waiting)."""
    if fcntl is not None:
        fcntl.flock(fd, {"try": fcntl.LOCK_EX | fcntl.LOCK_NB, "exclusive": fcntl.LOCK_EX,
                         "shared": fcntl.LOCK_SH}[how])


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder(path: Path) -> str:
    rec = _record(path)
    if not rec:
        return "another skill_lens process"
    gone = "" if _alive(rec.get("pid")) else ", which has ended; a process it started still holds the lock"
    return f"`skill-lens {rec.get('step')}` (process {rec.get('pid')}{gone}, since {rec.get('since')})"


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _key(root: Path) -> tuple[int, int]:
    st = root.stat()
    return st.st_dev, st.st_ino


def _key_or_none(root: Path):
    try:
        return _key(root)
    except OSError:
        return None
