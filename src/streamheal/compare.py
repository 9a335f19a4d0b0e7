"""One-shot drift check: a reference batch against a current batch, column by column.

The classic check for people who have two batches rather than a stream. Inputs are lists
(or any iterables) of dicts, or anything with ``to_dict("records")`` such as a pandas
DataFrame (pandas is not required).

**Types come from the data.** A column is numeric when its values are numbers, or strings
that all parse as numbers (rows from ``csv.DictReader``); categorical when its values are
strings that are not numbers, or booleans. A column that mixes numbers with other text is
refused with a ``ValueError`` naming it, never silently turned into categories; list it
in ``categorical`` to compare it as categories anyway (zip codes, ids). ``None``, NaN,
infinities and the usual NA spellings (``""``, ``"NA"``, ``"n/a"``, ``"null"``, ...) are
missing values.

**Per column**

* *missing rate*: the share of missing values, tested with a two-proportion chi-square
  test (2x2, no continuity correction, so exactly the two-proportion z-test);
* *distribution* of the present values, like Evidently's default ``DataDriftPreset``:
  numeric columns with more than 5 distinct values get the two-sample Kolmogorov-Smirnov
  test (p-values exactly scipy's ``ks_2samp``), other columns a chi-square test on
  category counts; every column also gets an *effect size* (Wasserstein distance divided
  by the reference's standard deviation for numeric columns, Jensen-Shannon distance in
  base 2 for the others) and PSI.

A column drifts when its p-value, adjusted for the number of columns (Bonferroni by
default, or Benjamini-Hochberg, or none), is below ``threshold`` -- or, when the effect
size decides, when the effect size reaches ``effect_threshold``. With ``method="auto"``
(the default) the effect size decides for columns with more than 1,000 present reference
values, as in Evidently: on large samples every p-value is tiny, and a distance says
whether the change is big enough to matter. The dataset drifts when at least ``share``
of the feature columns drift; the label column (``label=``) is tested and reported apart
(``result["label"]``) and never counts toward that share. Missing-rate changes are
reported per column and listed in ``result["dataset"]["missing_changed"]``.

**Chi-square variants** (``chi2=``): ``"contingency"`` (the default) is the test of
homogeneity on the 2 x k table of counts: both batches are samples, so a small reference
is not taken as the truth, a category new in the current batch is handled, and with two
categories it equals the two-proportion z-test Evidently uses for binary columns.
``"gof"`` is Evidently's goodness-of-fit test (``scipy.stats.chisquare`` of the current
counts against the reference shares scaled to the current size): it treats the
reference's shares as exact and so gives smaller p-values; a category the reference never
saw makes its p-value 0.

>>> ref = [{"x": float(i), "c": "a"} for i in range(100)]
>>> cur = [{"x": float(i) + 50, "c": "a"} for i in range(100)]
>>> result = compare(ref, cur)
>>> result["columns"]["x"]["test"], result["columns"]["x"]["drifted"], result["dataset"]["drift"]
('ks', True, True)
>>> csv_like = [{"x": str(i)} for i in range(100)]  # numbers as text, as csv.DictReader gives
>>> compare(csv_like, csv_like)["columns"]["x"]["type"]
'numeric'
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import numbers
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2 as chi2_distribution
from scipy.stats import wasserstein_distance

from streamheal.detectors import stats

Method = Literal["auto", "test", "effect"]
Chi2Variant = Literal["contingency", "gof"]
Correction = Literal["bonferroni", "bh", "none"]
METHODS = ("auto", "test", "effect")
CHI2_VARIANTS = ("contingency", "gof")
CORRECTIONS = ("bonferroni", "bh", "none")

NUMERIC_MIN_UNIQUE = 6  # Evidently's rule: up to 5 distinct values is tested as categories
# Evidently's default stat-test choice (evidentlyai/evidently,
# src/evidently/calculations/stattests/registry.py, _get_default_stattest): p-value tests
# while the reference column (NaN dropped) has <= 1000 rows, distances above.
P_VALUE_MAX_REFERENCE = 1000
# Evidently's default thresholds for both distances: StatTest(default_threshold=0.1) in
# src/evidently/calculations/stattests/wasserstein_distance_norm.py (normed by
# max(std(reference), 0.001), drift when >= 0.1) and jensenshannon.py (base 2, >= 0.1).
EFFECT_THRESHOLD = 0.1
WASSERSTEIN_MIN_NORM = 0.001
# pandas.read_csv's default NA spellings: what a data scientist expects to read as missing.
NA_TEXT = frozenset(
    {"", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None", "<NA>"}
    | {"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "1.#IND", "1.#QNAN"}
)
TOP_CATEGORIES = 20  # categories listed per column in the JSON and drawn in the HTML
_MISSING_TYPES = frozenset({"NAType", "NaTType"})  # pandas.NA and pandas.NaT, duck-typed
_NUMBER_TYPES = frozenset({float, int, type(None), np.float64, np.float32, np.int64, np.int32})


def read_table(path: str | Path, label: str | None = None) -> list[dict[str, Any]]:
    """Rows from a CSV (header row; cells kept as text, typed by :func:`compare`) or a
    JSONL file in the event schema (features, plus the label as a column, joined from a
    later label event if need be)."""
    file = Path(path)
    if file.suffix.lower() == ".csv":
        with file.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if label is not None and rows and label not in rows[0]:
            raise ValueError(f"{file}: no column {label!r}")
        return rows
    rows_by_id: dict[str, dict[str, Any]] = {}  # in order: a later label event joins its row
    target = label or "label"
    with file.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise ValueError(f"{file}:{number}: not JSON ({err})") from err
            if not isinstance(event, dict):
                continue
            event_id = str(event.get("id", number))
            if isinstance(event.get("features"), dict):
                rows_by_id[event_id] = dict(event["features"])
            if event.get("label") is not None and event_id in rows_by_id:
                rows_by_id[event_id][target] = event["label"]
    return list(rows_by_id.values())


def compare(
    reference: Any,
    current: Any,
    threshold: float = 0.05,
    correction: Correction = "bonferroni",
    share: float = 0.5,
    *,
    label: str | None = None,
    method: Method = "auto",
    effect_threshold: float = EFFECT_THRESHOLD,
    chi2: Chi2Variant = "contingency",
    categorical: Collection[str] = (),
) -> dict[str, Any]:
    """Compare two batches column by column; a JSON-ready dict.

    Parameters
    ----------
    reference, current
        Lists or iterables of dicts (one per row), or DataFrames (``to_dict("records")``).
    threshold
        Significance level for the adjusted p-values, in (0, 1).
    correction
        ``"bonferroni"``, ``"bh"`` (Benjamini-Hochberg) or ``"none"``.
    share
        Share of drifted feature columns at which the dataset drifts, in (0, 1].
    label
        The label column: tested like the others, reported as ``result["label"]``, left
        out of the dataset share.
    method
        ``"auto"`` (effect size above 1,000 present reference values), ``"test"``
        (always p-values) or ``"effect"`` (always effect sizes).
    effect_threshold
        Effect size at which a column drifts (> 0; Evidently's 0.1 by default).
    chi2
        ``"contingency"`` or ``"gof"`` (see the module docstring).
    categorical
        Columns to compare as categories even when their values are numbers.

    Returns
    -------
    dict
        ``columns`` (features), ``label`` (or None), ``dataset`` and the settings.

    Raises
    ------
    ValueError
        For a setting out of range, an empty reference, an unknown column name, or a
        column whose values mix numbers with other text.
    """
    _check_settings(threshold, correction, share, method, effect_threshold, chi2)
    if isinstance(categorical, str):  # one name, not its letters
        categorical = [categorical]
    # A DataFrame's "category" dtype says how to compare a column, whatever its values.
    categorical = {*categorical, *_category_dtypes(reference), *_category_dtypes(current)}
    reference_rows, current_rows = _records(reference, "reference"), _records(current, "current")
    for side, rows in (("reference", reference_rows), ("current", current_rows)):
        if not rows:
            raise ValueError(f"the {side} batch has no rows")
    names = list(
        dict.fromkeys(k for rows in (reference_rows, current_rows) for r in rows for k in r)
    )
    if label is not None and label not in names:
        raise ValueError(f"no label column {label!r}; columns: {_some(names)}")
    unknown = [n for n in categorical if n not in names]
    if unknown:
        raise ValueError(f"categorical: no column {_some(unknown)}; columns: {_some(names)}")
    typed = {
        name: _typed_column(name, reference_rows, current_rows, name in categorical)
        for name in names
    }
    settings = _Settings(method, effect_threshold, chi2)
    columns = {name: _column_result(column, settings) for name, column in typed.items()}
    _missing_tests(typed, columns)
    features = [n for n in names if n != label]
    _decide(columns, features, threshold, correction)
    if label is not None:
        _decide(columns, [label], threshold, "none")  # a family of one: no correction
    feature_columns = {n: columns[n] for n in features}
    return {
        "reference_rows": len(reference_rows),
        "current_rows": len(current_rows),
        "threshold": threshold,
        "effect_threshold": effect_threshold,
        "correction": correction,
        "method": method,
        "chi2": chi2,
        "label_column": label,
        "categorical": sorted(map(str, categorical)),
        "columns": feature_columns,
        "label": columns[label] if label is not None else None,
        "dataset": _dataset(feature_columns, share),
    }


# ----------------------------------------------------------------------- settings, input


@dataclass(frozen=True)
class _Settings:
    method: Method
    effect_threshold: float
    chi2: Chi2Variant


def _check_settings(
    threshold: float,
    correction: str,
    share: float,
    method: str,
    effect_threshold: float,
    chi2: str,
) -> None:
    if not 0 < threshold < 1:  # also refuses NaN
        raise ValueError(
            f"threshold is a p-value threshold: expected 0 < threshold < 1, got {threshold}"
        )
    if not 0 < share <= 1:
        raise ValueError(f"share: expected 0 < share <= 1, got {share}")
    if not (0 < effect_threshold < math.inf):
        raise ValueError(f"effect_threshold: expected a number > 0, got {effect_threshold}")
    for name, value, allowed in (
        ("correction", correction, CORRECTIONS),
        ("method", method, METHODS),
        ("chi2", chi2, CHI2_VARIANTS),
    ):
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def _records(data: Any, side: str) -> list[Mapping[str, Any]]:
    """Rows as mappings: a DataFrame (anything with ``to_dict("records")``) or an
    iterable of mappings. Duck-typed so pandas stays optional."""
    if not isinstance(data, Mapping) and callable(getattr(data, "to_dict", None)):
        data = data.to_dict("records")
    if isinstance(data, Mapping | str | bytes) or not isinstance(data, Iterable):
        raise ValueError(
            f"{side}: expected a list of dicts (one per row) or a DataFrame, "
            f"got {type(data).__name__}"
        )
    rows = list(data)
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"{side} row {number}: expected a dict, got {type(row).__name__}")
    return rows


def _category_dtypes(data: Any) -> set[Any]:
    """Columns a DataFrame declares categorical (dtype ``category``), duck-typed."""
    dtypes = getattr(data, "dtypes", None)
    items = getattr(dtypes, "items", None)
    if not callable(items):
        return set()
    return {name for name, dtype in items() if str(dtype) == "category"}


def _some(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------- typing


@dataclass
class _Side:
    """One batch's cells of one column, sorted into what they are."""

    numbers: np.ndarray  # the value of each numeric cell (numbers and numeric text)
    labels: list[str] | np.ndarray | None  # text of each present cell; None: from numbers
    missing: int
    rows: int
    kinds: set[str]  # of the present cells: "number", "numeric text", "text", "bool"
    texts: list[str]  # present text that is not a number (for the error message)


@dataclass
class _Column:
    """A typed column's present values: floats when ``kind`` is numeric, text labels when
    categorical; empty when one batch has no present value."""

    name: str
    kind: Literal["numeric", "categorical", "empty"]
    reference: np.ndarray
    current: np.ndarray
    reference_missing: int
    current_missing: int
    reference_rows: int
    current_rows: int


def _typed_column(
    name: str,
    reference_rows: list[Mapping[str, Any]],
    current_rows: list[Mapping[str, Any]],
    as_categories: bool,
) -> _Column:
    ref = _cells(name, [row.get(name) for row in reference_rows])
    cur = _cells(name, [row.get(name) for row in current_rows])
    kinds = ref.kinds | cur.kinds
    if as_categories or kinds in ({"text"}, {"bool"}):
        kind = "categorical"
        ref_values: np.ndarray = _labels(ref)
        cur_values: np.ndarray = _labels(cur)
    elif kinds <= {"number", "numeric text"}:
        kind = "numeric"
        ref_values, cur_values = ref.numbers, cur.numbers
    else:
        raise ValueError(_mixed_message(name, ref, cur, kinds))
    if not len(ref_values) or not len(cur_values):
        kind = "empty"
    return _Column(name, kind, ref_values, cur_values, ref.missing, cur.missing, ref.rows, cur.rows)


def _labels(side: _Side) -> np.ndarray:
    if side.labels is None:
        return np.array([_number_label(v) for v in side.numbers.tolist()], dtype=str)
    return np.asarray(side.labels, dtype=str)


def _cells(name: str, values: list[Any]) -> _Side:
    """Sort cells into numbers, text and missing values."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:
        return _number_cells(values)
    if types <= {str, type(None)}:
        side = _numeric_text_cells(values)
        if side is not None:
            return side
    return _mixed_cells(name, values)


def _number_cells(values: list[Any]) -> _Side:
    """All numbers (a DataFrame's numeric column, JSON numbers): one numpy conversion."""
    array = np.array(values, dtype=float)  # None becomes NaN
    present = array[np.isfinite(array)]
    kinds = {"number"} if len(present) else set()
    return _Side(present, None, len(array) - len(present), len(array), kinds, [])


def _numeric_text_cells(values: list[Any]) -> _Side | None:
    """All text (csv.DictReader rows): stripped, NA spellings dropped, parsed by numpy in
    one go; None when some text is not a number (the per-cell path sorts that out)."""
    text = np.char.strip(np.array(values, dtype=str))  # None becomes "None": an NA spelling
    present = text[~np.isin(text, list(NA_TEXT))]
    try:
        numbers_ = present.astype(float)
    except ValueError:
        return None
    finite = np.isfinite(numbers_)  # "inf" and "nan" are missing, as in the event schema
    kinds = {"numeric text"} if finite.any() else set()
    missing = len(values) - int(finite.sum())
    return _Side(numbers_[finite], present[finite], missing, len(values), kinds, [])


def _mixed_cells(name: str, values: list[Any]) -> _Side:
    """Cell by cell, for columns of text, booleans or a mixture."""
    kinds: set[str] = set()
    numbers_: list[float] = []
    labels: list[str] = []
    texts: list[str] = []
    missing = 0
    for value in values:
        if value is None or type(value).__name__ in _MISSING_TYPES:
            missing += 1
        elif isinstance(value, str):
            text = value.strip()
            if text in NA_TEXT:
                missing += 1
                continue
            try:
                number = float(text)
            except ValueError:
                kinds.add("text")
                texts.append(text)
                labels.append(text)
                continue
            if math.isfinite(number):
                kinds.add("numeric text")
                numbers_.append(number)
                labels.append(text)
            else:  # "inf", "nan": missing, as in the event schema
                missing += 1
        elif isinstance(value, bool | np.bool_):
            kinds.add("bool")
            labels.append(str(bool(value)))
        elif isinstance(value, numbers.Real):
            number = float(value)
            if math.isfinite(number):
                kinds.add("number")
                numbers_.append(number)
                labels.append(_number_label(number))
            else:
                missing += 1
        else:
            raise ValueError(
                f"column {name!r}: {value!r} is a {type(value).__name__}, neither a number "
                "nor a string; convert the column (e.g. dates to numbers) or drop it"
            )
    return _Side(np.array(numbers_, dtype=float), labels, missing, len(values), kinds, texts)


def _mixed_message(name: str, ref: _Side, cur: _Side, kinds: set[str]) -> str:
    if "bool" in kinds:
        found = "booleans mixed with other values"
    else:
        numbers_ = len(ref.numbers) + len(cur.numbers)
        texts = list(dict.fromkeys(ref.texts + cur.texts))
        found = (
            f"{numbers_:,} values are numbers and {len(ref.texts) + len(cur.texts):,} are "
            f"text that is not a number (e.g. {_some(texts, 3)})"
        )
    return (
        f"column {name!r}: {found}. Mark missing values as empty or NA, or pass the column "
        f"in categorical= (--categorical {name}) to compare it as categories."
    )


def _number_label(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


# ----------------------------------------------------------------------- tests per column


def _column_result(column: _Column, settings: _Settings) -> dict[str, Any]:
    decided_by = _decided_by(len(column.reference), settings.method)
    if column.kind == "empty":
        result = _empty_result()
    elif column.kind == "numeric":
        pooled = np.concatenate([column.reference, column.current])
        distinct, codes = np.unique(pooled, return_inverse=True)
        if len(distinct) >= NUMERIC_MIN_UNIQUE:
            result = _numeric_result(column.reference, column.current)
        else:  # few distinct numbers: tested as categories, as Evidently does
            labels = np.array([_number_label(v) for v in distinct.tolist()], dtype=str)[codes]
            split = len(column.reference)
            result = _categorical_result(labels[:split], labels[split:], settings.chi2)
    else:
        result = _categorical_result(column.reference, column.current, settings.chi2)
    result["type"] = column.kind
    result["decided_by"] = None if column.kind == "empty" else decided_by
    # The p-value threshold is filled in by _decide, with the correction.
    effect = result["decided_by"] == "effect_size"
    result["threshold"] = settings.effect_threshold if effect else None
    return result


def _decided_by(reference_present: int, method: Method) -> Literal["p_value", "effect_size"]:
    if method == "effect" or (method == "auto" and reference_present > P_VALUE_MAX_REFERENCE):
        return "effect_size"
    return "p_value"


def _empty_result() -> dict[str, Any]:
    return {
        "test": None,
        "statistic": None,
        "p_value": None,
        "effect_measure": None,
        "effect_size": None,
        "psi": None,
        "drifted": False,
    }


def _numeric_result(reference: np.ndarray, current: np.ndarray) -> dict[str, Any]:
    sorted_ref = np.sort(reference)
    d, p = stats.ks_2samp(sorted_ref, current)
    edges = stats.quantile_edges(sorted_ref, 10)
    psi = stats.psi(stats.binned_counts(edges, sorted_ref), stats.binned_counts(edges, current))
    return {
        "test": "ks",
        "statistic": d,
        "p_value": p,
        "effect_measure": "wasserstein_norm",
        "effect_size": wasserstein_norm(sorted_ref, current),
        "psi": psi,
        "drifted": False,
        "reference": stats.summary(sorted_ref),
        "current": stats.summary(current),
    }


def wasserstein_norm(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's ``wasserstein`` drift score: the first Wasserstein distance divided by
    the reference's (population) standard deviation, floored at 0.001.

    >>> round(wasserstein_norm(np.array([0.0, 2.0]), np.array([1.0, 3.0])), 6)
    1.0
    """
    norm = max(float(np.std(reference)), WASSERSTEIN_MIN_NORM)
    return float(wasserstein_distance(reference, current)) / norm


def _categorical_result(
    reference: np.ndarray, current: np.ndarray, chi2: Chi2Variant
) -> dict[str, Any]:
    categories, codes = np.unique(np.concatenate([reference, current]), return_inverse=True)
    ref_counts = np.bincount(codes[: len(reference)], minlength=len(categories))
    cur_counts = np.bincount(codes[len(reference) :], minlength=len(categories))
    if chi2 == "gof":
        statistic, p = chi2_goodness_of_fit(ref_counts, cur_counts)
        new = [
            str(c)
            for c, r, k in zip(categories, ref_counts, cur_counts, strict=True)
            if r == 0 and k
        ]
    else:
        statistic, p = stats.chi2_homogeneity(ref_counts, cur_counts)
        new = []
    result: dict[str, Any] = {
        "test": "chi2_gof" if chi2 == "gof" else "chi2",
        "statistic": statistic,
        "p_value": p,
        "effect_measure": "jensenshannon",
        "effect_size": float(jensenshannon(ref_counts, cur_counts, base=2)),
        "psi": stats.psi(ref_counts, cur_counts),
        "drifted": False,
        "categories": len(categories),
        "reference": _top_shares(categories, ref_counts, ref_counts + cur_counts),
        "current": _top_shares(categories, cur_counts, ref_counts + cur_counts),
    }
    if new:
        result["new_categories"] = new[:TOP_CATEGORIES]
    return result


def chi2_goodness_of_fit(
    reference_counts: np.ndarray, current_counts: np.ndarray
) -> tuple[float | None, float]:
    """Evidently's ``chisquare`` test: the current counts against the reference's shares
    scaled to the current size (``scipy.stats.chisquare``). A category the reference never
    saw cannot come from its distribution: statistic ``None`` (infinite), p-value 0.

    >>> stat, p = chi2_goodness_of_fit(np.array([40, 60]), np.array([80, 20]))
    >>> round(stat, 2), p < 1e-6
    (66.67, True)
    """
    expected = reference_counts / reference_counts.sum() * current_counts.sum()
    if (current_counts[expected == 0] > 0).any():
        return None, 0.0
    seen = expected > 0
    if seen.sum() < 2:
        return 0.0, 1.0
    statistic = float(((current_counts[seen] - expected[seen]) ** 2 / expected[seen]).sum())
    return statistic, float(chi2_distribution.sf(statistic, seen.sum() - 1))


def _top_shares(
    categories: np.ndarray, counts: np.ndarray, order_by: np.ndarray
) -> dict[str, float]:
    """Shares of the most frequent categories (both batches together), so a column of
    20,000 ids does not write 20,000 entries."""
    total = max(int(counts.sum()), 1)
    top = np.argsort(-order_by, kind="stable")[:TOP_CATEGORIES]
    return {str(categories[i]): round(float(counts[i]) / total, 6) for i in top}


def _missing_tests(typed: dict[str, _Column], columns: dict[str, dict[str, Any]]) -> None:
    """Two-proportion (2x2 chi-square) test of the missing share, all columns at once."""
    names = list(typed)
    ref_missing = np.array([typed[n].reference_missing for n in names])
    cur_missing = np.array([typed[n].current_missing for n in names])
    ref_rows, cur_rows = typed[names[0]].reference_rows, typed[names[0]].current_rows
    statistics, p_values = stats.chi2_2x2_many(ref_missing, ref_rows, cur_missing, cur_rows)
    for i, name in enumerate(names):
        columns[name]["missing"] = {
            "reference": float(ref_missing[i] / ref_rows),
            "current": float(cur_missing[i] / cur_rows),
            "reference_count": int(ref_missing[i]),
            "current_count": int(cur_missing[i]),
            "statistic": float(statistics[i]),
            "p_value": float(p_values[i]),
        }


def _decide(
    columns: dict[str, dict[str, Any]], names: list[str], threshold: float, correction: str
) -> None:
    """Adjust the family's p-values (distribution and missing rate, each its own family)
    and mark what drifted."""
    tested = [n for n in names if columns[n]["p_value"] is not None]
    adjusted = _adjust([columns[n]["p_value"] for n in tested], correction)
    for name, p in zip(tested, adjusted, strict=True):
        column = columns[name]
        column["p_value_adjusted"] = p
        if column["decided_by"] == "effect_size":
            column["drifted"] = bool(column["effect_size"] >= column["threshold"])
        else:
            column["threshold"] = threshold
            column["drifted"] = bool(p < threshold)
    for name in names:
        columns[name].setdefault("p_value_adjusted", None)
    missing = _adjust([columns[n]["missing"]["p_value"] for n in names], correction)
    for name, p in zip(names, missing, strict=True):
        columns[name]["missing"]["p_value_adjusted"] = p
        columns[name]["missing"]["changed"] = bool(p < threshold)


def _dataset(columns: dict[str, dict[str, Any]], share: float) -> dict[str, Any]:
    tested = [n for n, c in columns.items() if c["type"] != "empty"]
    drifted = sum(1 for n in tested if columns[n]["drifted"])
    drifted_share = drifted / max(len(tested), 1)
    return {
        "columns": len(tested),
        "drifted_columns": drifted,
        "share": drifted_share,
        "drift_share": share,
        "drift": bool(tested) and drifted_share >= share,
        "missing_changed": [n for n, c in columns.items() if c["missing"]["changed"]],
    }


def _adjust(p_values: list[float], correction: str) -> list[float]:
    m = len(p_values)
    if correction == "none" or m == 0:
        return list(p_values)
    if correction == "bonferroni":
        return [min(1.0, p * m) for p in p_values]
    order = sorted(range(m), key=p_values.__getitem__)  # Benjamini-Hochberg step-up
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted


# ----------------------------------------------------------------------- HTML

TEST_NAMES = {
    "ks": "Kolmogorov-Smirnov",
    "chi2": "chi-square (contingency)",
    "chi2_gof": "chi-square (goodness of fit)",
}
EFFECT_NAMES = {"wasserstein_norm": "Wasserstein / std", "jensenshannon": "Jensen-Shannon"}
DASH = "\u2014"  # what a table shows where there is no number (never "None")


def render_html(result: dict[str, Any], reference: Any, current: Any) -> str:
    """One self-contained page: the verdict, a table per column and the distributions."""
    reference_rows, current_rows = _records(reference, "reference"), _records(current, "current")
    panels = dict(result["columns"])
    if result["label"] is not None:
        panels[result["label_column"]] = result["label"]
    image = _distributions_png(panels, reference_rows, current_rows)
    dataset = result["dataset"]
    rows = "".join(_table_row(name, column) for name, column in result["columns"].items())
    label_rows = (
        _table_row(result["label_column"], result["label"]) if result["label"] is not None else ""
    )
    missing = ", ".join(html.escape(str(n)) for n in dataset["missing_changed"]) or "none"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>streamheal compare</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}td{white-space:nowrap}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}"
        "tr.drift td:first-child{color:#b00;font-weight:bold}"
        "</style></head><body><h1>Reference vs current</h1>"
        f"<p>{result['reference_rows']:,} reference rows, {result['current_rows']:,} current "
        f"rows. {_settings_text(result)}</p>"
        f"<p>{dataset['drifted_columns']} of {dataset['columns']} feature columns drifted "
        f"({_pct(dataset['share'])}; the dataset drifts at {_pct(dataset['drift_share'])}): "
        f"dataset drift <b>{'yes' if dataset['drift'] else 'no'}</b>. Missing rate changed: "
        f"<b>{missing}</b>.</p>"
        f"<h2>Features</h2>{_table(rows)}"
        + (f"<h2>Label (not in the dataset share)</h2>{_table(label_rows)}" if label_rows else "")
        + f"<h2>Distributions</h2><img alt='distributions' src='data:image/png;base64,{image}'>"
        "</body></html>"
    )


def _settings_text(result: dict[str, Any]) -> str:
    chi2 = TEST_NAMES["chi2_gof" if result["chi2"] == "gof" else "chi2"]
    return html.escape(
        f"Method {result['method']}: p-values ({result['correction']} correction) decide at "
        f"< {_p(result['threshold'])}, effect sizes at >= {_num(result['effect_threshold'])}; "
        f"with auto, the effect size decides for columns with more than "
        f"{P_VALUE_MAX_REFERENCE:,} present reference values. Categories: {chi2}."
    )


def _table(rows: str) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "column",
            "type",
            "test",
            "statistic",
            "p-value",
            "adjusted p",
            "effect size",
            "measure",
            "PSI",
            "decided by",
            "drifted",
            "missing ref → cur",
            "missing adjusted p",
            "missing changed",
        )
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _table_row(name: str, column: dict[str, Any]) -> str:
    missing = column["missing"]
    if column["decided_by"] == "effect_size":
        decided = f"effect ≥ {_num(column['threshold'])}"
    elif column["decided_by"] == "p_value":
        decided = f"adj. p < {_p(column['threshold'])}"
    else:
        decided = DASH
    cells = [
        ("", html.escape(str(name))),  # DataFrame columns may be named by numbers
        ("", column["type"]),
        ("", TEST_NAMES.get(column["test"] or "", DASH)),
        ("n", _num(column["statistic"]) if column["test"] else DASH),
        ("n", _p(column["p_value"])),
        ("n", _p(column["p_value_adjusted"])),
        ("n", _num(column["effect_size"])),
        ("", EFFECT_NAMES.get(column["effect_measure"] or "", DASH)),
        ("n", _num(column["psi"])),
        ("", decided),
        ("", "yes" if column["drifted"] else "no"),
        ("n", f"{_pct(missing['reference'])} → {_pct(missing['current'])}"),
        ("n", _p(missing["p_value_adjusted"])),
        ("", "yes" if missing["changed"] else "no"),
    ]
    css = " class='drift'" if column["drifted"] or missing["changed"] else ""
    return f"<tr{css}>" + "".join(f"<td class='{c}'>{v}</td>" for c, v in cells) + "</tr>"


def _num(value: float | None) -> str:
    if value is None:
        return DASH
    return "∞" if math.isinf(value) else f"{value:.3f}"


def _p(value: float | None) -> str:
    """p-values: three decimals, or two significant digits below 0.001 (never 0.000)."""
    if value is None:
        return DASH
    return f"{value:.3f}" if value >= 0.001 or value == 0 else f"{value:.1e}"


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.1%}"


def _distributions_png(
    panels: dict[str, dict[str, Any]],
    reference_rows: list[Mapping[str, Any]],
    current_rows: list[Mapping[str, Any]],
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = max(1, math.ceil(len(panels) / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
    for axis, (name, column) in zip(axes.flat, panels.items(), strict=False):
        if column["test"] == "ks":
            typed = _typed_column(name, reference_rows, current_rows, False)
            bins = np.histogram_bin_edges(np.concatenate([typed.reference, typed.current]), 20)
            axis.hist(
                typed.reference,
                bins,
                alpha=0.55,
                density=True,
                histtype="stepfilled",
                label="reference",
            )
            axis.hist(
                typed.current,
                bins,
                alpha=0.55,
                density=True,
                histtype="stepfilled",
                label="current",
            )
        elif column["test"] is not None:
            categories = list(column["reference"])[:TOP_CATEGORIES]
            x = np.arange(len(categories))
            axis.bar(x - 0.2, [column["reference"][c] for c in categories], 0.4, label="reference")
            axis.bar(x + 0.2, [column["current"][c] for c in categories], 0.4, label="current")
            axis.set_xticks(x, categories, fontsize=7, rotation=30)
        drifted = column["drifted"] or column["missing"]["changed"]
        flag = "DRIFT" if column["drifted"] else "ok"
        if column["missing"]["changed"]:
            flag += ", missing rate changed"
        axis.set_title(f"{name}: {flag}", fontsize=9, color="red" if drifted else "black")
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    handles, labels = next(
        (h for h in (a.get_legend_handles_labels() for a in axes.flat) if h[0]), ([], [])
    )
    if handles:  # outside the panels, so it never hides data
        figure.legend(handles, labels, loc="upper right", fontsize=8, ncols=2)
    # Fixed margins (in inches, as fractions of the height): tight_layout would draw the
    # whole figure an extra time, seconds for thirty panels.
    height = 2.6 * rows
    figure.subplots_adjust(
        left=0.05, right=0.98, bottom=0.45 / height, top=1 - 0.55 / height, hspace=0.55, wspace=0.22
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()
