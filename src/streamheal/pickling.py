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
the given names load as those name objects. Reading the live model's state still moves
*its* attributes into dicts (Python offers no other way to read them), so whoever keeps
serving a model it pickled should serve such a copy instead (the Engine does).

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
import io
import pickle
from collections.abc import Iterable
from typing import Any

_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT: attributes stored beside the instance
_plain: dict[type, bool] = {}  # per class: is its state its attribute dict?


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


class _CopyPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, canonical: dict[str, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.canonical = canonical

    def persistent_id(self, obj: Any) -> str | None:
        return obj if type(obj) is str and obj in self.canonical else None

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        plain = _plain.get(cls)
        if plain is None:
            plain = _plain[cls] = _state_is_attributes(cls)
        if not plain or not obj.__dict__:
            return NotImplemented
        # The reduction object.__reduce_ex__ makes, with our state setter in its place.
        return copyreg.__newobj__, (cls,), obj.__dict__, None, None, _set_state


class _CopyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, canonical: dict[str, str]) -> None:
        super().__init__(file)
        self.canonical = canonical

    def persistent_load(self, pid: Any) -> str:
        return self.canonical[pid]


def _state_is_attributes(cls: type) -> bool:
    """True when the default pickle would save ``cls`` instances as ``(cls.__new__, state
    = the attribute dict)``: the class keeps its attributes beside the instance and has no
    reduction, state getter, custom attribute setter or slots of its own."""
    return (
        not issubclass(cls, type)
        and bool(cls.__flags__ & _MANAGED_DICT)
        and cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and getattr(cls, "__getstate__", object.__getstate__) is object.__getstate__
        and cls.__setattr__ is object.__setattr__
        and not copyreg._slotnames(cls)  # type: ignore[attr-defined]
    )


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
