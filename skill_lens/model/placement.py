"""Where a model's weights live: one device, or a device map over GPUs, the CPU and the disk (accelerate).

A 135M model fits anywhere; a 70B one needs two 80 GB GPUs, or a GPU and the CPU, or the disk. skill_lens
does not distribute a model itself: :func:`~skill_lens.model.loading.load_model` hands a :class:`Placement`
to ``transformers``/``accelerate`` (``device_map``, ``max_memory``, ``offload_folder``), and everything
downstream follows the placed model:

* inputs go where the input embeddings run (:func:`execution_device` of that module, which for a
  disk-offloaded embedding is the device accelerate computes it on, not ``meta``);
* a hook's tensors live where its activation lives, and statistics are summed per layer there and
  reduced on the CPU;
* a weight read outside a forward (the label words' rows of the LM head, the fingerprint) is read
  with :func:`materialized`, which loads an offloaded module's weights for the moment they are needed.

The placement is a *resource*, like a batch size: it changes where numbers are computed, not which
numbers (a disk-offloaded model gives the same predictivity bit for bit, ``tests/test_placement.py``).
A run records the placement it was tuned with (``run.json``'s ``resources``), and a later step may use
another one.

>>> p = Placement.parse(device_map="auto", max_memory="0=70GiB,cpu=200GiB", offload_folder="offload")
>>> p.device_map, p.max_memory
('auto', {0: 75161927680, 'cpu': 214748364800})
>>> Placement.parse(device_map='{"model.embed_tokens": 0, "model.layers": 1, "lm_head": 1}').device_map
{'model.embed_tokens': 0, 'model.layers': 1, 'lm_head': 1}
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

__all__ = ["Placement", "PlacementError", "DEVICE_MAPS", "parse_device_map", "parse_max_memory", "execution_device",
           "materialized", "model_placement", "layer_devices"]

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class PlacementError(ValueError):
    """A device map, memory budget or offload folder that cannot be used; the message names the fix."""


@dataclass(frozen=True)
class Placement:
    """How to place a model: a ``device_map`` (a strategy name or ``{module: device}``), the ``max_memory``
    each device may hold (bytes per device key: ``0``, ``1`` ... for GPUs, ``"cpu"``, ``"mps"``), and the
    ``offload_folder`` for weights that fit nowhere else. All ``None``: one device, as before.

    Made checked by :meth:`parse`; :meth:`load_kwargs` is what ``from_pretrained`` takes, :meth:`as_meta`
    what a run records.
    """

    device_map: str | dict | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None
    memory_budget: dict | None = None

    @classmethod
    def parse(cls, device_map=None, max_memory=None, offload_folder=None, memory_budget=None) -> "Placement":
        """Check and normalise the options (strings as the CLI gives them, or Python values).

        ``max_memory`` (what accelerate may put on each device) or an offload folder without a device map
        implies ``device_map="auto"``. ``memory_budget`` (the same syntax as ``max_memory``) is what a step may
        use on each device, weights and batches together: a batch that goes over it counts as out of memory,
        and the step halves its batch (:class:`skill_lens.model.memory.Budget`).

        >>> Placement.parse(max_memory={"cpu": "2GB"})
        Placement(device_map='auto', max_memory={'cpu': 2000000000}, offload_folder=None, memory_budget=None)
        >>> Placement.parse(device_map='{"model": "disk"}')
        Traceback (most recent call last):
        ...
        skill_lens.model.placement.PlacementError: --device-map puts modules on the disk ('model'), so it needs --offload-folder DIR (where accelerate keeps them)
        """
        dm = parse_device_map(device_map)
        mm = parse_max_memory(max_memory)
        budget = parse_max_memory(memory_budget, "--memory-budget")
        folder = None if offload_folder is None else str(Path(offload_folder).expanduser())
        if dm is None and (mm is not None or folder is not None):
            dm = "auto"
        if isinstance(dm, dict) and folder is None and "disk" in dm.values():
            disk = [k for k, v in dm.items() if v == "disk"]
            raise PlacementError(f"--device-map puts modules on the disk ({', '.join(map(repr, disk[:3]))}), so it "
                                 "needs --offload-folder DIR (where accelerate keeps them)")
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise PlacementError(f"--offload-folder {folder} is a file; give a directory (it is created if missing)")
        return cls(dm, mm, folder, budget)

    def check_devices(self) -> None:
        """Refuse GPU indices this machine does not have, naming the fix (before anything loads; a plan may
        name GPUs it does not have).

        >>> Placement.parse(max_memory="cpu=1GB").check_devices()
        """
        _check_devices(self.device_map, {**(self.max_memory or {}), **(self.memory_budget or {})})

    def for_rank(self, local_rank: int, local_world: int, gpu_memory: list[int]) -> "Placement":
        """This process's share of the machine's GPUs under ``torchrun``: with ``g = len(gpu_memory) // local_world``,
        rank ``r`` places its model on GPUs ``r g`` to ``r g + g - 1``. GPU indices in the device map and the
        budgets count from the rank's first GPU; a strategy without budgets gets each of its GPUs' memory
        (``gpu_memory``, bytes per GPU), so that accelerate uses those GPUs only. One process, or fewer GPUs than
        processes: unchanged.

        >>> p = Placement.parse(device_map="auto", max_memory="0=20GiB,1=20GiB,cpu=100GiB")
        >>> p.for_rank(1, 2, [80 * 2**30] * 4).max_memory == {2: 20 * 2**30, 3: 20 * 2**30, "cpu": 100 * 2**30}
        True
        >>> Placement.parse(device_map={"model.layers.0": 0, "lm_head": 1}).for_rank(1, 2, [1, 1, 1, 1]).device_map
        {'model.layers.0': 2, 'lm_head': 3}
        >>> Placement.parse(device_map="balanced").for_rank(0, 2, [8, 8, 8, 8]).max_memory
        {0: 8, 1: 8}
        """
        g = len(gpu_memory) // max(local_world, 1)
        if not self.mapped or local_world <= 1 or g < 1:
            return self
        first = local_rank * g
        shift = lambda d: d + first if isinstance(d, int) else f"cuda:{int(d[5:] or 0) + first}" \
            if isinstance(d, str) and d.startswith("cuda") else d  # noqa: E731
        dm = {k: shift(v) for k, v in self.device_map.items()} if isinstance(self.device_map, dict) else self.device_map
        given = self.max_memory or {}
        mm = {**{first + i: given.get(i, gpu_memory[first + i]) for i in range(g)},
              **{k: v for k, v in given.items() if not isinstance(k, int)}}
        return Placement(dm, mm if not isinstance(dm, dict) or self.max_memory else None, self.offload_folder,
                         {shift(k): v for k, v in self.memory_budget.items()} if self.memory_budget else None)

    @property
    def mapped(self) -> bool:
        """Whether accelerate places the model (a device map), rather than one ``.to(device)``."""
        return self.device_map is not None

    def load_kwargs(self) -> dict:
        """Keyword arguments of ``from_pretrained`` (empty for one device).

        >>> Placement.parse(device_map="sequential").load_kwargs()
        {'device_map': 'sequential'}
        """
        out = {"device_map": self.device_map, "max_memory": self.max_memory, "offload_folder": self.offload_folder}
        return {k: v for k, v in out.items() if v is not None}

    def as_meta(self) -> dict:
        """JSON-able: what a run records of it (device keys as strings).

        >>> Placement.parse(max_memory="0=1GiB").as_meta()
        {'device_map': 'auto', 'max_memory': {'0': 1073741824}, 'offload_folder': None, 'memory_budget': None}
        """
        keyed = lambda d: None if d is None else {str(k): v for k, v in d.items()}  # noqa: E731
        return {"device_map": self.device_map, "max_memory": keyed(self.max_memory),
                "offload_folder": self.offload_folder, "memory_budget": keyed(self.memory_budget)}


def parse_device_map(spec) -> str | dict | None:
    """``None``, a strategy (``auto``, ``balanced``, ``balanced_low_0``, ``sequential``), or ``{module: device}``
    given as a dict, a JSON object or the path of a JSON file. Devices: a GPU index, ``"cuda:N"``,
    ``"cpu"``, ``"mps"`` or ``"disk"``.

    >>> parse_device_map("balanced"), parse_device_map({"model": 0})
    ('balanced', {'model': 0})
    >>> parse_device_map("everywhere")
    Traceback (most recent call last):
    ...
    skill_lens.model.placement.PlacementError: --device-map 'everywhere' is not auto, balanced, balanced_low_0, sequential, a JSON object {"module": device} or a JSON file
    """
    if spec is None or isinstance(spec, dict):
        return None if spec is None else _check_map(dict(spec))
    text = str(spec).strip()
    if text in DEVICE_MAPS:
        return text
    if not text.startswith("{") and text.endswith(".json") and Path(text).is_file():
        text = Path(text).read_text()
    try:
        value = json.loads(text) if text.startswith("{") else None
    except json.JSONDecodeError as e:
        raise PlacementError(f"--device-map is not valid JSON ({e}); write it as {{\"model.layers.0\": 0, ...}}") from None
    if not isinstance(value, dict):
        raise PlacementError(f"--device-map {text!r} is not {', '.join(DEVICE_MAPS)}, a JSON object "
                             "{\"module\": device} or a JSON file")
    return _check_map(value)


def _check_map(dm: dict) -> dict:
    for module, dev in dm.items():
        ok = isinstance(dev, int) and not isinstance(dev, bool) and dev >= 0 or \
            isinstance(dev, str) and re.fullmatch(r"cpu|disk|mps|cuda(:\d+)?", dev)
        if not isinstance(module, str) or not ok:
            raise PlacementError(f"--device-map entry {module!r}: {dev!r} is not a device; use a GPU index (0, 1 ...), "
                                 "'cuda:N', 'cpu', 'mps' or 'disk'")
    return dm


def parse_max_memory(spec, flag: str = "--max-memory") -> dict | None:
    """``None``, or bytes per device from ``"0=20GiB,1=20GiB,cpu=60GiB"``, a JSON object or a dict
    (values in bytes or with a unit: ``B``, ``KB``/``MB``/``GB``/``TB`` decimal, ``KiB``... binary).

    >>> parse_max_memory("0=1GiB, cpu=500MB")
    {0: 1073741824, 'cpu': 500000000}
    >>> parse_max_memory("gpu=1GB")
    Traceback (most recent call last):
    ...
    skill_lens.model.placement.PlacementError: --max-memory key 'gpu' is not a device; use a GPU index (0, 1 ...), cpu or mps, e.g. 0=20GiB,cpu=60GiB
    """
    if spec is None:
        return None
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        text = str(spec).strip()
        try:
            items = list(json.loads(text).items()) if text.startswith("{") else \
                [tuple(part.split("=", 1)) for part in text.split(",") if part.strip()]
        except (json.JSONDecodeError, AttributeError):
            items = [("?", text)]
        if any(len(item) != 2 for item in items) or not items:
            raise PlacementError(f"{flag} {text!r}: write DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=60GiB")
    return {_memory_key(k, flag): _bytes(v, flag) for k, v in items}


def _memory_key(key, flag: str = "--max-memory") -> int | str:
    k = str(key).strip().lower()
    if k.isdigit():
        return int(k)
    if k.startswith("cuda:") and k[5:].isdigit():
        return int(k[5:])
    if k in ("cpu", "mps"):
        return k
    raise PlacementError(f"{flag} key {key!r} is not a device; use a GPU index (0, 1 ...), cpu or mps, "
                         "e.g. 0=20GiB,cpu=60GiB")


def _bytes(value, flag: str = "--max-memory") -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = m and _UNITS.get(m.group(2).lower())
    if not m or unit is None:
        raise PlacementError(f"{flag} size {value!r} is not a size; write e.g. 20GiB, 500MB or a number of bytes")
    return int(float(m.group(1)) * unit)


def _check_devices(dm, mm) -> None:
    """GPU indices that this machine has (named with the fix), before anything loads."""
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = [d for d in (mm or {}) if isinstance(d, int)]
    if isinstance(dm, dict):
        wanted += [int(str(d).removeprefix("cuda:") or 0) if str(d).startswith("cuda") else d
                   for d in dm.values() if isinstance(d, int) or str(d).startswith("cuda")]
    missing = sorted({d for d in wanted if d >= n_cuda})
    if missing:
        have = f"{n_cuda} CUDA device(s)" if n_cuda else "no CUDA device"
        raise PlacementError(f"the placement names GPU {missing[0]}, but this machine has {have}; use cpu and disk "
                             "entries, or --device-map auto")


# ------------------------------------------------------------------ a placed model
def execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: accelerate's execution device when it placed it (also for
    weights offloaded to the CPU or disk), else the device of its first real weight (the CPU without one).

    >>> execution_device(torch.nn.Linear(2, 2))
    device(type='cpu')
    """
    for m in (module, module._modules.get("_original_component")):
        dev = getattr(getattr(m, "_hf_hook", None), "execution_device", None) if m is not None else None
        if dev is not None:
            return torch.device("cuda", dev) if isinstance(dev, int) else torch.device(dev)
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def materialized(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` with its own weights in memory on its execution device, for reading them outside a forward.

    A no-op for a module whose weights are in memory; for one accelerate offloaded (weights on ``meta``),
    they are loaded for the block and dropped after it, as accelerate does around its forward.

    >>> lin = torch.nn.Linear(2, 2)
    >>> with materialized(lin) as m:
    ...     m.weight.device.type
    'cpu'
    """
    targets = [m for m in (module, module._modules.get("_original_component")) if m is not None]
    offloaded = [m for m in targets if any(t.device.type == "meta" for t in m.parameters(recurse=False))
                 and getattr(m, "_hf_hook", None) is not None]
    if not offloaded:
        yield module
        return
    from accelerate.utils import align_module_device

    with contextlib.ExitStack() as stack:
        for m in offloaded:
            stack.enter_context(align_module_device(m, execution_device(m)))
        yield module


def model_placement(model) -> dict:
    """What a loaded bridge's placement is: ``{"device_map": {module: device} or None, "devices": [...]}``,
    JSON-able (the devices its modules compute on, ``"disk"`` when weights are offloaded there).

    >>> from skill_lens.model.tiny import tiny_model
    >>> model_placement(tiny_model())
    {'device_map': None, 'devices': ['cpu']}
    """
    hf = model.original_model
    dm = getattr(hf, "hf_device_map", None)
    if not dm:
        return {"device_map": None, "devices": sorted({str(p.device) for p in hf.parameters()})}
    devices = {f"cuda:{d}" if isinstance(d, int) else str(d) for d in dm.values()}
    return {"device_map": {k: (v if isinstance(v, (int, str)) else str(v)) for k, v in dm.items()},
            "devices": sorted(devices)}


def layer_devices(model) -> list[torch.device]:
    """The execution device of each decoder (or encoder) layer of a bridge, in order.

    >>> from skill_lens.model.tiny import tiny_model
    >>> layer_devices(tiny_model())
    [device(type='cpu'), device(type='cpu')]
    """
    blocks = getattr(model, "blocks", None) or getattr(model, "encoder_blocks", None) or []
    return [execution_device(b) for b in blocks]
