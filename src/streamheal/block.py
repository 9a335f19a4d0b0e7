"""A batch's features as one numeric matrix, made once per batch and read three times.

Building a matrix from feature dicts costs about as much as one careful pass over them,
and three parts of the Engine need one: the input guard (are all values inside their
bounds?), mini-batch scoring (River's ``predict_proba_many`` takes a DataFrame) and the
drift suite (its CUSUMs and windowed tests work on arrays). When every feature row of a
batch is all numbers under the same names (the common case), the
Engine makes the matrix once and hands it to all three; any other batch (a string
value, a missing or new name, a value out of bounds) takes each part's own careful path.

>>> rows = [{"a": 1.0, "b": 2}, {"a": 3.5, "b": -1.0}]
>>> block = FeatureBlock.of(rows)
>>> block.names, block.matrix.tolist()
(('a', 'b'), [[1.0, 2.0], [3.5, -1.0]])
>>> block.take(rows[1:], ["b", "a"]).tolist()
[[-1.0, 3.5]]
>>> FeatureBlock.of([{"a": 1.0}, {"a": "1.5"}]) is None       # a string: no block
True
"""

from __future__ import annotations

import array
import itertools
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

try:  # the batch's matrix in one C pass (see detectors/_loops.c); the same without it
    from streamheal.detectors import _loops as compiled
except ImportError:  # pragma: no cover - built without a C compiler
    compiled = None


class FeatureBlock:
    """Row ``i`` of ``matrix`` holds the values of ``rows[i]``, columns in ``names``.

    The rows are looked up by identity (:meth:`take`): a row a guard replaced by a copy
    is not in the block, and whoever asks for it takes the careful path.
    """

    __slots__ = ("_index", "_next", "_where", "matrix", "memo", "names", "rows")

    def __init__(
        self, names: tuple[str, ...], matrix: np.ndarray, rows: Sequence[dict[str, Any]]
    ) -> None:
        self.names = names
        self.matrix = matrix
        self.rows = rows  # kept alive, so the identities in _where stay theirs
        # What a reader derived from the whole block, keyed by reader (it lives as long as
        # the block: one batch).
        self.memo: dict[str, Any] = {}
        self._where: dict[int, int] | None = None  # made on the first ask that is no run
        self._next = 0  # where the last run taken ended (see run_of)
        self._index: dict[str, int] | None = None  # column of each name, made on first need

    @classmethod
    def of(cls, rows: Sequence[dict[str, Any]]) -> FeatureBlock | None:
        """The block of ``rows`` (columns in the first row's order), or None unless every
        row has exactly the first row's names and every value is a number (an int, a
        float, or a bool beside them)."""
        if not rows:
            return None
        names = tuple(rows[0])
        width = len(names)
        if not width:
            return None
        if compiled is not None and type(rows) is list:
            # One C pass over the dicts (0.3 us a row of 30, against 0.9 below); anything
            # it does not take as it is (a string, None, a float subclass) comes below.
            matrix = np.empty((len(rows), width))
            if compiled.fill_rows(rows, names, matrix):
                return cls(names, matrix, rows)
        if any(len(row) != width for row in rows):
            return None
        getter = operator.itemgetter(*names) if width > 1 else lambda row: (row[names[0]],)
        try:
            flat = list(itertools.chain.from_iterable(map(getter, rows)))
        except KeyError:  # same count, other names
            return None
        try:
            # array("d") takes ints, floats and bools and refuses anything else (numpy would
            # parse the string "1.5" as a number, or make an object array of a None).
            values = np.frombuffer(array.array("d", flat))
        except (TypeError, OverflowError):
            return None
        return cls(names, values.reshape(len(rows), width), rows)

    def take(self, rows: Sequence[dict[str, Any]], names: Sequence[str]) -> np.ndarray | None:
        """The matrix of ``rows`` (each one of this block's rows), columns ``names`` (a
        copy); None if a row or a name is not in the block."""
        positions = self.run_of(rows)
        if positions is None:
            where = self._positions()
            try:
                positions = np.fromiter((where[id(row)] for row in rows), np.intp, len(rows))
            except KeyError:
                return None
        if tuple(names) == self.names:
            matrix = self.matrix[positions]
            return matrix.copy() if type(positions) is slice else matrix
        columns = self._column_positions(names)
        if columns is None:
            return None
        if type(positions) is slice:
            return self.matrix[positions][:, columns]  # a copy: columns by index
        return self.matrix[np.ix_(positions, columns)]

    def columns(self, names: Sequence[str]) -> np.ndarray | None:
        """The whole matrix with columns ``names`` (the block's own array when they are its
        names: read it, do not write it); None if a name is not in the block."""
        if tuple(names) == self.names:
            return self.matrix
        columns = self._column_positions(names)
        return None if columns is None else self.matrix[:, columns]

    def _column_positions(self, names: Sequence[str]) -> list[int] | None:
        """The column of each of ``names``; None if one is not in the block."""
        if self._index is None:
            self._index = {name: j for j, name in enumerate(self.names)}
        index = self._index
        try:
            return [index[name] for name in names]
        except KeyError:
            return None

    def run_of(self, rows: Sequence[dict[str, Any]]) -> slice | None:
        """Where ``rows`` lie as one run of this block's rows (the common ask: the batch's
        rows from some point on, chunk after chunk), or None. The run is looked for where
        the last one ended, then at the start, then where its first row is; the rows are
        checked with ``operator.is_`` over the two lists, in C, against a dict lookup
        per row."""
        own, count = self.rows, len(rows)
        if not count:
            return None
        first, hint = rows[0], self._next
        if hint < len(own) and own[hint] is first:
            start = hint
        elif own[0] is first:
            start = 0
        else:
            start = self._positions().get(id(first), -1)
        if (
            start >= 0
            and start + count <= len(own)
            and all(map(operator.is_, rows, own[start : start + count]))
        ):
            self._next = start + count
            return slice(start, start + count)
        return None

    def _positions(self) -> dict[int, int]:
        """Each row's position, by the row's identity (made on first need)."""
        if self._where is None:
            self._where = {id(row): i for i, row in enumerate(self.rows)}
        return self._where

    def rows_within(
        self, names: Sequence[str], lows: Sequence[float], highs: Sequence[float]
    ) -> np.ndarray | None:
        """Per row, True when every value lies in its name's ``[low, high]`` (NaN lies in
        none); None unless the block's columns are exactly ``names`` (in any order)."""
        if len(names) != len(self.names):
            return None
        if tuple(names) != self.names:
            order = {name: j for j, name in enumerate(names)}
            try:
                columns = [order[name] for name in self.names]
            except KeyError:
                return None
            lows, highs = [lows[j] for j in columns], [highs[j] for j in columns]
        matrix = self.matrix
        return ((matrix >= np.asarray(lows)) & (matrix <= np.asarray(highs))).all(axis=1)
