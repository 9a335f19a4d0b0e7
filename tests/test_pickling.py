"""streamheal.pickling: copies that keep the fast instance layout and the feature-name
objects, with the same state as the original to the last bit."""

from __future__ import annotations

import gc
import pickle

from streamheal import models, pickling
from streamheal.config import ModelConfig
from streamheal.dev.bench import bench_events


def _attributes_in_a_dict(obj: object, attribute: str) -> bool:
    """True when ``obj``'s attributes live in a materialized ``__dict__``, found without
    asking for it (which would materialize it): that dict, keyed by the attribute names,
    is then one of its referents; otherwise the attribute values are."""
    return any(type(r) is dict and attribute in r for r in gc.get_referents(obj))


class _Plain:
    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = weights
        self.steps = 0


class _NeedsItself:
    """A __setstate__ that calls a method: it runs on the real instance."""

    def __init__(self) -> None:
        self.value = 1

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._check()

    def _check(self) -> None:
        self.checked = True


class _WithProperty:
    def __init__(self) -> None:
        self._level = 2

    @property
    def level(self) -> int:
        return self._level


def test_a_copied_model_learns_and_answers_exactly_as_the_original() -> None:
    events = bench_events(600)
    for kind in ("logistic_regression", "hoeffding_tree"):
        original = models.build_model(ModelConfig(name=kind), seed=3)
        for e in events[:300]:
            original.learn_one(e.features, bool(e.label))
        twin = pickling.copy(original, events[0].features)
        for e in events[300:]:
            assert twin.predict_proba_one(e.features) == original.predict_proba_one(e.features)
            twin.learn_one(e.features, bool(e.label))
            original.learn_one(e.features, bool(e.label))


def test_the_copy_keeps_attributes_beside_the_instance_and_the_given_name_objects() -> None:
    names = {"x": 0, "y": 0}
    name = next(iter(names))
    original = _Plain({"".join(["x"]): 1.0})  # an equal string, another object
    twin = pickling.copy(original, names)
    default = pickle.loads(pickle.dumps(original))
    assert _attributes_in_a_dict(default, "steps")  # what the default pickle leaves
    assert not _attributes_in_a_dict(twin, "steps")
    assert next(iter(twin.weights)) is name
    assert twin.weights == {"x": 1.0} and twin.steps == 0


def test_a_setstate_that_needs_its_instance_and_a_read_only_property_still_load() -> None:
    twin = pickling.copy(_NeedsItself())
    assert twin.value == 1 and twin.checked
    shadowed = _WithProperty()
    shadowed.__dict__["level"] = 5  # an instance entry under a read-only property's name
    twin = pickling.copy(shadowed)
    assert twin.__dict__["level"] == 5 and twin.level == 2


def test_the_engine_serves_a_fast_copy_after_keeping_a_good_state_and_after_a_checkpoint() -> None:
    from streamheal.config import Config
    from streamheal.engine import Engine
    from streamheal.guards import linear_parts

    events = bench_events(2400)
    engine = Engine(Config().replace(guards={"good_state_every": 1000}))
    engine.process(events[:1200])  # a good state was kept at the 1,000th label
    reference = Engine(Config().replace(guards={"check_model": False}))  # never pickled
    reference.process(events[:1200])
    for name in ("model", "served"):
        model = linear_parts(engine.model)[0] if name == "served" else engine.model
        assert not _attributes_in_a_dict(model, "optimizer" if name == "served" else "steps")
    scaler = (
        engine.model.steps["TransformerUnion"].transformers["Pipeline"].steps["_StandardScaler"]
    )
    assert all(a is b for a, b in zip(scaler.means, events[0].features, strict=True))
    blob = engine.to_bytes()
    assert not _attributes_in_a_dict(linear_parts(engine.model)[0], "optimizer")
    # The same state: the copy answers and learns as the never-pickled model does.
    for engine_ in (engine, reference):
        engine_.process(events[1200:])
    probe = [e.features for e in events[:50]]
    assert [engine.model.predict_proba_one(x) for x in probe] == [
        reference.model.predict_proba_one(x) for x in probe
    ]
    restored = Engine(Config())
    restored.load_bytes(blob)
    assert restored.counters.feature_events == 1200
