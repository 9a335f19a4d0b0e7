"""Copies of a model that run as fast as the original did before it was pickled.

Two things make a River model slower once it has been through the default pickle, on
CPython 3.11 (measured with cachegrind on the benchmark stream, per learning step:
811k instructions on a model never pickled, 853k once pickled, 901k for a loaded copy):

- *Instance layout.* An instance keeps its attributes in a compact array beside the
  object, and attribute access is specialized for it; the first time anything asks for
  the instance's ``__dict__``, the attributes move to a real dict for good and every
  ``self.x`` takes the slower dict path. Pickling asks for it (``object.__reduce_ex__``
  reads ``__dict__``), and so does loading (the state is written through ``__dict__``,
  or by a ``__setstate__`` that does).
- *Key identity.* Dict lookups compare keys by identity before comparing strings. The
  model's per-feature dicts are keyed by the very strings the incoming events use (the
  decoder hands out one object per name), so lookups hit at once; a loaded copy's keys
  are new strings, and every lookup compares characters.

:func:`copy` makes a copy through a pickle (the same state to the last bit) that has
neither problem: plain instances are rebuilt attribute by attribute (a class's own
``__setstate__`` still decides what the state becomes: it runs against a stand-in object,
or on the instance itself when it needs more than a dict), and strings equal to one of
the given names load as those name objects.

:func:`dumps` pickles without moving anything: what ``pickle.dumps`` writes, reading each
plain instance's attributes by name when this module has seen its class's names (a
copy's instances, or any instance it had to read through ``__dict__`` once) and can prove
it read them all (see :func:`_read_attributes`). It says whether some instance
had its attributes in a dict all the same; only then does a model need a copy to run at
full speed again. A checkpoint every batch used to pickle the model and copy it (about
0.3 ms for the default pipeline); now it pickles it, and the copy is made once.

>>> from river import preprocessing
>>> scaler = preprocessing.StandardScaler()
>>> for x in (1.0, 2.0, 4.0):
...     scaler.learn_one({"x": x})
>>> name = next(iter(scaler.means))
>>> twin = copy(scaler, [name])
>>> twin.transform_one({"x": 3.0}) == scaler.transform_one({"x": 3.0})
True
>>> next(iter(twin.means)) is name
True
"""

from __future__ import annotations

import copyreg
import gc
import io
import operator
import pickle
from collections.abc import Iterable
from typing import Any

_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT: attributes stored beside the instance
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class written in Python
_plain: dict[type, bool] = {}  # per class: is its state its attribute dict?
# Per plain class: the attribute names its instances were seen with, in the order first
# seen, or None when they cannot be read one by one (see _learn_names).
_names: dict[type, tuple[str, ...] | None] = {}
_ABSENT = object()


def copy(obj: Any, names: Iterable[str] = ()) -> Any:
    """An independent copy of ``obj`` (through a pickle, so the same state to the last
    bit) whose plain instances have the fast layout and whose strings equal to one of
    ``names`` are those very objects. Dict lookups compare keys by identity first: a
    River model's per-feature dicts keyed by the objects the incoming events use as
    feature names skip a string comparison per lookup, as a model built in this process
    does (a default copy's keys are new strings: about 4% more instructions per step)."""
    canonical = {name: name for name in names}
    buffer = io.BytesIO()
    _CopyPickler(buffer, canonical).dump(obj)
    buffer.seek(0)
    return _CopyUnpickler(buffer, canonical).load()


def dumps(obj: Any) -> tuple[bytes, bool]:
    """``pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)``, and whether every plain
    instance in ``obj`` still keeps its attributes beside it (False: some were, or now
    are, in a ``__dict__``; a :func:`copy` runs faster). The same state attribute for
    attribute; an instance read by name lists its attributes in the order its class's
    instances were first seen with them, which is its ``__dict__``'s order (so the very
    same bytes) unless it set them in another order than those did."""
    buffer = io.BytesIO()
    pickler = _LayoutKeepingPickler(buffer)
    pickler.dump(obj)
    return buffer.getvalue(), not pickler.moved


class _LayoutKeepingPickler(pickle.Pickler):
    """The default pickle, reading plain instances' attributes by name where it can."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.moved = False

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if not _is_plain(cls):
            return NotImplemented
        state, by_name = _attributes(obj, cls)
        self.moved = self.moved or not by_name
        # The reduction object.__reduce_ex__ makes (an empty state is saved as None).
        return copyreg.__newobj__, (cls,), state or None, None, None


class _CopyPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, canonical: dict[str, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.canonical = canonical

    def persistent_id(self, obj: Any) -> str | None:
        return obj if type(obj) is str and obj in self.canonical else None

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if not _is_plain(cls):
            return NotImplemented
        state, _ = _attributes(obj, cls)
        if not state:
            return NotImplemented
        # The reduction object.__reduce_ex__ makes, with our state setter in its place.
        return copyreg.__newobj__, (cls,), state, None, None, _set_state


class _CopyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, canonical: dict[str, str]) -> None:
        super().__init__(file)
        self.canonical = canonical

    def persistent_load(self, pid: Any) -> str:
        return self.canonical[pid]


def _is_plain(cls: type) -> bool:
    plain = _plain.get(cls)
    if plain is None:
        plain = _plain[cls] = _state_is_attributes(cls)
    return plain


def _state_is_attributes(cls: type) -> bool:
    """True when the default pickle would save ``cls`` instances as ``(cls.__new__, state
    = the attribute dict)``: the class keeps its attributes beside the instance and has no
    reduction, state getter, custom attribute setter or slots of its own, and no base
    written in C but ``object`` (a ``dict`` or ``list`` subclass pickles its items too)."""
    return (
        not issubclass(cls, type)
        and bool(cls.__flags__ & _MANAGED_DICT)
        and all(base.__flags__ & _HEAPTYPE for base in cls.__mro__[:-1])
        and cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and getattr(cls, "__getstate__", object.__getstate__) is object.__getstate__
        and cls.__setattr__ is object.__setattr__
        and not copyreg._slotnames(cls)  # type: ignore[attr-defined]
    )


def _read_attributes(obj: Any, cls: type) -> dict[str, Any] | None:
    """``obj``'s attributes by name, read without asking for ``__dict__`` (which moves
    them into a dict for good), or None when that cannot be proved complete. The names
    are the ones seen on the class's instances (:func:`_learn_names`), in the order first
    seen, and reading one finds an instance attribute or nothing, so what is read is
    part of the instance's state. Proof that it is all of it: the garbage collector's
    referents of a compact instance are its attribute values (in its class's key order),
    then its class; once its attributes moved to a dict, that dict instead. So the
    values read must be the referents, each object as many times."""
    names = _names.get(cls, ())  # none seen yet: proved only for an empty instance
    if names is None:
        return None
    state = {}
    for name in names:
        value = getattr(obj, name, _ABSENT)
        if value is not _ABSENT:
            state[name] = value
    referents = gc.get_referents(obj)
    if len(referents) != len(state) + 1 or referents[-1] is not cls:
        return None
    del referents[-1]
    if all(map(operator.is_, referents, state.values())):
        return state
    # Another order than the names': compare the objects as multisets.
    if sorted(map(id, referents)) != sorted(map(id, state.values())):
        return None
    return state


def _attributes(obj: Any, cls: type) -> tuple[dict[str, Any], bool]:
    """``obj``'s attributes (a plain instance's), and whether they were read by name
    (:func:`_read_attributes`); else through ``__dict__``, as the default pickle reads
    them (they move there if they were not), and their names are learned."""
    state = _read_attributes(obj, cls)
    if state is not None:
        return state, True
    state = obj.__dict__
    _learn_names(cls, state)
    return state, False


def _learn_names(cls: type, attributes: Iterable[str]) -> None:
    """Add ``attributes`` to ``cls``'s known names for :func:`_read_attributes`, unless
    reading one by name could find something else than an instance attribute: a class
    attribute of that name (a default, a property), or a class that answers lookups
    itself."""
    names = _names.get(cls, ())
    if names is None or all(name in names for name in attributes):
        return
    if (
        cls.__getattribute__ is not object.__getattribute__
        or hasattr(cls, "__getattr__")
        or any(hasattr(cls, name) for name in attributes)
    ):
        _names[cls] = None
        return
    _names[cls] = tuple(dict.fromkeys([*names, *attributes]))


class _StandIn:
    """What a class's ``__setstate__`` runs against before its result is assigned."""


def _set_state(obj: Any, state: dict[str, Any]) -> None:
    cls = type(obj)
    setstate = getattr(cls, "__setstate__", None)
    if setstate is not None:
        stand_in = _StandIn()
        try:
            setstate(stand_in, state)
        except Exception:  # it needs the real instance: let it have it
            setstate(obj, state)
            return
        state = vars(stand_in)
    for name, value in state.items():
        if hasattr(getattr(cls, name, None), "__set__"):  # a property or slot: as pickle does
            obj.__dict__[name] = value
        else:
            object.__setattr__(obj, name, value)
    _learn_names(cls, state)
