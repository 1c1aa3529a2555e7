"""Options written once: a step's settings are a dataclass whose fields carry the default and the help.

Each field is an :func:`option`: its default, the help text the command line shows, and its flag
(``--batch-size`` for ``batch_size`` unless given; ``flag=None`` for settings only the library offers).
The class validates itself when made (``__post_init__``, with the checks of :class:`Options`), so a bad
value is refused before any work, naming the field and its flag. The command line's flags are generated
from the same fields (``add_options`` in the CLI's ``_parse.py``), and library functions take the object,
or its fields as keywords (:meth:`Options.build`).

>>> import dataclasses
>>> @dataclasses.dataclass
... class Demo(Options):
...     batch_size: int = option(32, "examples per forward pass")
...     seed: int = option(0, "seed of the noise", flag=None)
...     def __post_init__(self):
...         self.check_int("batch_size", 1)
>>> Demo.build(None, batch_size=8)
Demo(batch_size=8, seed=0)
>>> Demo(batch_size=0)
Traceback (most recent call last):
...
ValueError: batch_size (--batch-size) must be a whole number of at least 1, got 0.
>>> flag_of(Demo, "batch_size"), flag_of(Demo, "seed")
('--batch-size', None)
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Sequence

__all__ = ["option", "Options", "flag_of", "parse_floats", "parse_layers"]


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = "", choices: Sequence | None = None,
           parse: Callable[[str], Any] | None = None, type: Callable | None = None, metavar: str | None = None,
           off_flag: str | None = None):
    """A dataclass field with its default, help text and command-line flag (see the module docstring).

    ``flag``: ``""`` derives it from the name, ``None`` offers no flag. ``choices`` limits the values;
    ``parse`` turns the flag's text into the value (e.g. :func:`parse_floats`); ``type`` converts it when
    the default (``None``) does not say; ``off_flag`` adds a flag that turns a bool option off. A default
    must be immutable (a tuple, not a list): every object shares it.

    >>> option(3, "random neuron sets per fraction").metadata["help"]
    'random neuron sets per fraction'
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError(f"option default {default!r} is mutable; use a tuple")
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None, "parse": parse,
            "type": type, "metavar": metavar, "off_flag": off_flag}
    return dataclasses.field(default=default, metadata=meta)


def flag_of(cls, name: str) -> str | None:
    """The command-line flag of option ``name`` of the options class ``cls`` (``None``: library only).

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class O(Options):
    ...     per_layer: bool = option(False, "of each layer")
    >>> flag_of(O, "per_layer")
    '--per-layer'
    """
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]
    flag = meta.get("flag", "")
    return "--" + name.replace("_", "-") if flag == "" else flag


class Options:
    """Base of the options dataclasses: building with keyword overrides, and checks that name the flag.

    ``error`` is the exception a subclass raises (its module's error, a ``ValueError``).
    """

    error: type[Exception] = ValueError

    @classmethod
    def build(cls, options=None, /, **overrides):
        """``options`` (default: the defaults) with ``overrides`` replaced, validated again.

        A library function taking ``options`` and ``**overrides`` calls this, so both
        ``f(x, Opts(seed=1))`` and ``f(x, seed=1)`` work; an unknown keyword is a ``TypeError``
        naming the fields.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        if unknown := sorted(set(overrides) - set(names)):
            raise TypeError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; its fields are "
                            f"{', '.join(names)}")
        if options is None:
            return cls(**overrides)
        if not isinstance(options, cls):
            raise TypeError(f"options must be a {cls.__name__}, got {type(options).__name__}; pass the options "
                            f"object, or its fields as keywords")
        return dataclasses.replace(options, **overrides) if overrides else options

    @classmethod
    def label(cls, name: str) -> str:
        """``"batch_size (--batch-size)"``: a field as an error message names it."""
        flag = flag_of(cls, name)
        return name if flag is None else f"{name} ({flag})"

    def fail(self, name: str, wanted: str) -> None:
        """Raise :attr:`error`: option ``name`` must be ``wanted``, naming its flag and value."""
        raise self.error(f"{self.label(name)} must be {wanted}, got {getattr(self, name)!r}.")

    def check_int(self, name: str, low: int | None = None, optional: bool = False) -> None:
        """A whole number (``>= low``; or ``None``, no limit, when ``optional``)."""
        value = getattr(self, name)
        if optional and value is None:
            return
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not whole or (low is not None and value < low):
            self.fail(name, "a whole number" + (f" of at least {low}" if low is not None else "")
                      + (" (or None: no limit)" if optional else ""))

    def check_number(self, name: str, ok: Callable[[float], bool], wanted: str) -> None:
        """A real number (not a bool) for which ``ok`` holds."""
        value = getattr(self, name)
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not ok(float(value)):
            self.fail(name, wanted)

    def check_choice(self, name: str, choices: Sequence) -> None:
        """One of ``choices``."""
        if getattr(self, name) not in choices:
            self.fail(name, "one of " + ", ".join(map(repr, choices)))

    def check_bool(self, *names: str) -> None:
        """True or False."""
        for name in names:
            if not isinstance(getattr(self, name), bool):
                self.fail(name, "True or False")

    def check_fractions(self, name: str, low_open: bool = False, empty: bool = False) -> tuple[float, ...]:
        """A sequence of numbers in [0, 1] (``(0, 1]`` with ``low_open``), as a tuple of floats, which the
        caller stores back (``empty``: may have none)."""
        flag, value = flag_of(type(self), name), getattr(self, name)
        where = f" ({flag})" if flag else ""
        try:
            out = tuple(float(x) for x in value)
        except (TypeError, ValueError):
            raise self.error(f"{name}{where} must be fractions of neurons such as 0,0.01,0.05, got {value!r}.") from None
        bad = [x for x in out if not (0 < x <= 1 if low_open else 0 <= x <= 1)]
        if bad:
            raise self.error(f"{name} {bad} are outside {'(0, 1]' if low_open else '[0, 1]'}{where}; pass fractions "
                             "of neurons such as 0,0.01,0.05.")
        if not out and not empty:
            raise self.error(f"{name}{where} are empty; pass fractions of neurons such as 0,0.01,0.05.")
        return out


def parse_floats(text: str) -> tuple[float, ...]:
    """``"0,0.01,0.1"`` -> ``(0.0, 0.01, 0.1)`` (``""``: none): the text of a flag taking fractions.

    >>> parse_floats("0, 0.05"), parse_floats("")
    ((0.0, 0.05), ())
    >>> parse_floats("a")
    Traceback (most recent call last):
    ...
    ValueError: use comma-separated numbers such as 0,0.01,0.05
    """
    try:
        return tuple(float(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError("use comma-separated numbers such as 0,0.01,0.05") from None


def parse_layers(text: str) -> tuple[int, ...]:
    """``"10-12,15"`` -> ``(10, 11, 12, 15)``: the text of a flag naming layers.

    >>> parse_layers("0,2-4")
    (0, 2, 3, 4)
    >>> parse_layers("3-1")
    Traceback (most recent call last):
    ...
    ValueError: ranges go low-high, e.g. '10-29'
    """
    layers = set()
    for part in str(text).split(","):
        try:
            lo, _, hi = part.strip().partition("-")
            lo, hi = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError("use layer numbers and ranges, e.g. '10-29' or '0,2,5-7'") from None
        if lo > hi or lo < 0:
            raise ValueError("ranges go low-high, e.g. '10-29'")
        layers.update(range(lo, hi + 1))
    return tuple(sorted(layers))
