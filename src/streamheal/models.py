"""River model pipelines built from config, and their serialization.

Numeric features are standard-scaled and string features one-hot encoded before a
linear model; trees take both as they are. ``logistic_regression`` is River's
binary classifier (labels 0/1 or booleans); set ``model.params.multiclass = true``
for more classes or string labels (one-vs-rest).

>>> from streamheal.config import ModelConfig
>>> model = build_model(ModelConfig(), seed=1)
>>> model.learn_one({"x": 1.0, "colour": "red"}, 1)
>>> sorted(model.predict_proba_one({"x": 1.0, "colour": "red"}))
[False, True]
"""

from __future__ import annotations

import numbers
import pickle
from typing import Any

import numpy as np
from river import base, compose, forest, linear_model, multiclass, preprocessing, tree
from river.tree.hoeffding_tree import HoeffdingTree

from streamheal.block import FeatureBlock
from streamheal.config import ModelConfig

# An exact float or int is a number: the numeric selector takes it on its type alone.
# River's SelectType asks isinstance of every value, and against the numbers.Number ABC
# that costs about 150 ns: a fifth of the default model's step on 30 features (63 -> 50 us
# per predict and learn on the benchmark stream).
_PLAIN_NUMBERS = frozenset({float, int})


class _SelectNumbers(compose.SelectType):
    """``SelectType(Number)`` that also works on a DataFrame (for mini-batch mode)."""

    def __init__(self) -> None:
        super().__init__(numbers.Number)

    def transform_one(self, x: dict[str, Any]) -> dict[str, Any]:
        plain = _PLAIN_NUMBERS
        return {k: v for k, v in x.items() if type(v) in plain or isinstance(v, numbers.Number)}

    def learn_many(self, X: Any, y: Any = None) -> None:
        pass

    def transform_many(self, X: Any) -> Any:
        return X.select_dtypes("number")


class _SelectStrings(compose.SelectType):
    """``SelectType(str)`` that also works on a DataFrame (for mini-batch mode)."""

    def __init__(self) -> None:
        super().__init__(str)

    def transform_one(self, x: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in x.items() if isinstance(v, str)}  # one C check, no ABC

    def learn_many(self, X: Any, y: Any = None) -> None:
        pass

    def transform_many(self, X: Any) -> Any:
        return X.select_dtypes(exclude="number")


class _SkipsEmptyBatches:
    """A River transformer's batch methods on a mini-batch without any column of its kind
    (no string column for the encoder, no numeric one for the scaler): nothing to do."""

    def learn_many(self, X: Any) -> None:
        if len(X.columns):
            super().learn_many(X)  # type: ignore[misc]

    def transform_many(self, X: Any) -> Any:
        return super().transform_many(X) if len(X.columns) else X  # type: ignore[misc]


class _OneHotEncoder(_SkipsEmptyBatches, preprocessing.OneHotEncoder):
    """River's one-hot encoder, tolerant of a mini-batch without any string column."""


class _StandardScaler(_SkipsEmptyBatches, preprocessing.StandardScaler):
    """River's standard scaler, tolerant of a mini-batch without any numeric column.

    Its ``transform_many`` on a pandas frame of float64 columns (the mini-batch frames the
    Engine makes) does River's arithmetic on the frame's matrix directly, without River's
    backend-agnostic wrapping (narwhals): 0.25 ms for 2,000 rows of 30, against River's
    0.6-1 ms. The same numbers in the same frame (a test compares them with River's)."""

    def transform_many(self, X: Any) -> Any:
        import pandas as pd  # only mini-batch paths have a DataFrame

        if type(X) is not pd.DataFrame or not len(X.columns) or not self.takes_fast(X):
            return super().transform_many(X)
        columns = list(X.columns)
        frame = pd.DataFrame(np.ascontiguousarray(self.scaled(X, columns)), columns=columns)
        frame.index = X.index
        return frame

    def takes_fast(self, X: Any) -> bool:
        """Whether :meth:`scaled` gives this scaler's ``transform_many`` of ``X``: a
        pandas frame of float64 columns, no window, scaled to unit variance."""
        return self.window_size is None and self.with_std and bool((X.dtypes == np.float64).all())

    def scaled(self, X: Any, columns: list[str]) -> np.ndarray:
        """preprocessing.StandardScaler.transform_many's numbers, operation for operation."""
        means = np.array([self.means[c] for c in columns], dtype=np.float64)
        scaled = X.to_numpy(dtype=np.float64, na_value=np.nan) - means
        stds = np.array([self.vars[c] ** 0.5 for c in columns], dtype=np.float64)
        np.divide(scaled, stds, where=stds > 0, out=scaled)
        return scaled


class _Union(compose.TransformerUnion):
    """River's union of the numeric and the string branch. On a pandas frame where one
    branch has no column (a batch of numbers only, the common case) that branch's frame is
    the union's: River's horizontal concat through narwhals made the same frame again
    (0.4 ms a batch of 2,000). A test compares the two."""

    def transform_many(self, X: Any) -> Any:
        import pandas as pd  # only mini-batch paths have a DataFrame

        if type(X) is not pd.DataFrame:
            return super().transform_many(X)
        frames = [t.transform_many(X) for t in self.transformers.values()]
        kept = [frame for frame in frames if len(frame.columns)]
        if len(kept) == 1 and type(kept[0]) is pd.DataFrame and kept[0].index.equals(X.index):
            return kept[0]
        # compose.TransformerUnion.transform_many, on the frames made above
        import narwhals.stable.v2 as nw
        from river.utils.dataframe import into_frame

        return nw.concat([into_frame(frame) for frame in frames], how="horizontal").to_native()


def build_model(cfg: ModelConfig, seed: int) -> base.Classifier:
    """A fresh, untrained model as the config describes it."""
    params = dict(cfg.params)
    if cfg.name == "logistic_regression":
        one_vs_rest = bool(params.pop("multiclass", False))
        classifier: base.Classifier = linear_model.LogisticRegression(**params)
        if one_vs_rest:
            classifier = multiclass.OneVsRestClassifier(classifier)
        numeric = _SelectNumbers() | _StandardScaler()
        categorical = _SelectStrings() | _OneHotEncoder()
        # Named as River names a TransformerUnion step: the model's steps keep their names.
        return compose.Pipeline(("TransformerUnion", _Union(numeric, categorical)), classifier)
    if cfg.name == "hoeffding_tree":
        return tree.HoeffdingTreeClassifier(**params)
    if cfg.name == "arf":
        return forest.ARFClassifier(seed=seed, **params)
    raise ValueError(f"unknown model name {cfg.name!r}")


def default_proba_many(model: base.Classifier, X: Any) -> np.ndarray | None:
    """``model.predict_proba_many(X).to_numpy()`` (columns False, True) for the default
    model (:func:`build_model`'s logistic regression, binary) on a pandas frame of float64
    columns, the frames mini-batch mode makes: the scaler's and the classifier's own
    arithmetic on the matrix, without the frames River builds between the steps (the
    selectors' copies, the scaled frame, narwhals' wrapping and the probability frame:
    about 0.6 ms of a 2,000-row batch's 0.9). None for any other model or frame; a test
    holds the two to the same bits."""
    import pandas as pd  # only mini-batch paths have a DataFrame

    if type(model) is not compose.Pipeline or type(X) is not pd.DataFrame or not len(X.columns):
        return None
    steps = list(model.steps.values())
    if len(steps) != 2 or type(steps[0]) is not _Union:
        return None
    union, classifier = steps
    if type(classifier) is not linear_model.LogisticRegression:
        return None
    branches = [list(branch.steps.values()) for branch in union.transformers.values()]
    if [[type(step) for step in branch] for branch in branches] != [
        [_SelectNumbers, _StandardScaler],
        [_SelectStrings, _OneHotEncoder],
    ]:
        return None
    scaler = branches[0][1]
    if not scaler.takes_fast(X):  # float64 only: every column is numeric, none a string
        return None
    columns = list(X.columns)
    # The layout River's to_numpy gives the classifier (a pandas frame's, column-major;
    # the scaler's matrix already is): BLAS sums the matrix-vector product in an order
    # that depends on it, and a test at a batch's size holds the bits.
    scaled = np.asfortranarray(scaler.scaled(X, columns))
    p = classifier.loss.mean_func(classifier._raw_dot_many(scaled, columns))
    return np.column_stack([1.0 - p, p])


def final_step(model: base.Classifier) -> Any:
    """The estimator that answers: a pipeline's last step, or the model itself."""
    return model[list(model.steps)[-1]] if isinstance(model, compose.Pipeline) else model


def is_binary_bool(model: base.Classifier) -> bool:
    """True when the model reports classes as False/True (River's binary classifiers)."""
    last = final_step(model)
    return isinstance(last, base.Classifier) and not last._multiclass


def counts_evidence(model: base.Classifier) -> bool:
    """True when the model's statistics are weighted counts (River's Hoeffding trees): an
    event learned with sample weight ``w`` then counts as ``w`` events (a gradient
    learner would take a ``w`` times larger step instead)."""
    return isinstance(final_step(model), HoeffdingTree)


def learn_weighted(model: base.Classifier, features: dict, label: Any, weight: float) -> None:
    """``learn_one`` with sample weight ``weight`` (River's keyword ``w``; only passed
    when it is not 1, so a learner without one is never handed it)."""
    if weight == 1.0:
        model.learn_one(features, label)
    else:
        model.learn_one(features, label, w=weight)


def supports_mini_batch(model: base.Classifier) -> bool:
    return hasattr(model, "learn_many") and hasattr(model, "predict_proba_many")


def dumps(model: base.Classifier) -> bytes:
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes) -> base.Classifier:
    """A model from :func:`dumps` bytes; TypeError when they hold something that cannot
    serve (a registry entry that is not a classifier must not reach a partition).

    Only for bytes this process or its registry wrote (integrity and signature are checked
    by the caller: unpickling runs code)."""
    model = pickle.loads(blob)
    if not all(callable(getattr(model, verb, None)) for verb in ("learn_one", "predict_proba_one")):
        raise TypeError(f"not a River classifier: a {type(model).__name__}")
    return model


def feature_frame(rows: list[dict[str, Any]], block: FeatureBlock | None = None) -> Any:
    """A DataFrame of feature dicts, columns in the first row's order. When every row has
    the same names and only numbers: one float matrix, taken from ``block`` (the batch's
    matrix) when it holds the rows. Anything else (a string, a missing name) lets pandas
    infer per-column types."""
    import pandas as pd  # only mini-batch paths need a DataFrame

    if len(rows[0]) > 1:
        columns = list(rows[0])
        matrix = None if block is None else block.take(rows, columns)
        if matrix is None:
            own = FeatureBlock.of(rows)
            matrix = None if own is None else own.matrix
        if matrix is not None:
            return pd.DataFrame(matrix, columns=columns)
    return pd.DataFrame.from_records(rows)


def batchable(frame: Any) -> bool:
    """True when River's batch methods can take ``frame``: at least one column, and every
    non-numeric column holds only strings (a column mixing types goes row by row)."""
    if not len(frame.columns):
        return False
    for _, column in frame.select_dtypes(exclude="number").items():
        if not column.dropna().map(type).eq(str).all():
            return False
    return True


def predict_proba_matrix(model: base.Classifier, rows: list[dict[str, Any]]) -> tuple[list, Any]:
    """Class probabilities for many rows as ``(classes, n x k matrix)``: one
    ``predict_proba_many`` where the model has it and no cell is missing, else row by row."""
    if rows and supports_mini_batch(model):
        frame = feature_frame(rows)
        if frame.notna().all(axis=None):
            probabilities = model.predict_proba_many(frame)
            return list(probabilities.columns), probabilities.to_numpy()
    answers = [model.predict_proba_one(row) for row in rows]
    classes = sorted({c for answer in answers for c in answer}, key=str)
    return classes, np.array([[a.get(c, 0.0) for c in classes] for a in answers]).reshape(
        len(rows), len(classes)
    )
