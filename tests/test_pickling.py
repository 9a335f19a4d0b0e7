"""streamheal.pickling: copies that keep the fast instance layout and the feature-name
objects, with the same state as the original to the last bit."""

from __future__ import annotations

import gc
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

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


class _WithDefault:
    """A class attribute under an instance attribute's name: read by name, an instance
    without it would answer the class's value."""

    level = 0

    def __init__(self) -> None:
        self.steps = 1
        self.level = 2


class _Answers:
    """A class that answers attribute lookups itself."""

    def __init__(self) -> None:
        self.steps = 1

    def __getattr__(self, name: str) -> None:
        return None


def test_dumps_writes_pickles_bytes_and_leaves_a_copys_attributes_beside_it() -> None:
    """River's instances set their attributes in one order per class: the very bytes."""
    events = bench_events(400)
    for kind, attribute in (("logistic_regression", "steps"), ("hoeffding_tree", "delta")):
        model = models.build_model(ModelConfig(name=kind), seed=3)
        for e in events:
            model.learn_one(e.features, bool(e.label))
        blob, kept = pickling.dumps(model)  # read by name if its classes were seen before
        assert not (kept and _attributes_in_a_dict(model, attribute))
        assert blob == pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        twin = pickling.copy(model, events[0].features)
        blob, kept = pickling.dumps(twin)  # rebuilt here: read by name
        assert kept and not _attributes_in_a_dict(twin, attribute)
        assert blob == pickle.dumps(twin, protocol=pickle.HIGHEST_PROTOCOL)  # moves them
        assert _attributes_in_a_dict(twin, attribute)
        assert not pickling.dumps(twin)[1]


def test_dumps_reads_through_the_dict_what_it_cannot_prove_complete() -> None:
    twin = pickling.copy(_Plain({"x": 1.0}))
    twin.added = "later"  # a name not seen when the copy was made
    assert pickling.dumps(twin) == (pickle.dumps(twin, protocol=5), False)
    twin = pickling.copy(_Plain({"x": 1.0}))
    del twin.steps
    assert pickling.dumps(twin) == (pickle.dumps(twin, protocol=5), True)  # proved: one left
    for cls in (_WithDefault, _Answers):
        twin = pickling.copy(cls())
        assert pickling.dumps(twin) == (pickle.dumps(twin, protocol=5), False)
    moved = _Plain({"x": 1.0})
    moved.extra = vars(moved)["steps"]  # in a dict; one of its names is not known
    del moved.steps  # the one value read (weights) against the dict and the class
    assert pickling.dumps(moved) == (pickle.dumps(moved, protocol=5), False)
    empty = pickling.copy(_Plain({}))
    del empty.weights, empty.steps
    assert pickling.dumps(empty) == (pickle.dumps(empty, protocol=5), True)


class _Changing:
    def __init__(self) -> None:
        self.a = 0


_VALUES = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["x", "y"]), st.just(()))


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["set", "del", "copy"]), st.sampled_from("abcde"), _VALUES),
        max_size=12,
    )
)
def test_dumps_gives_pickles_state_however_attributes_come_and_go(steps: list) -> None:
    """Instances of one class that set their attributes in different orders are read in
    the class's key order: the same state, not always the same bytes."""
    obj = _Changing()
    for action, name, value in steps:
        if action == "set":
            setattr(obj, name, value)
        elif action == "del" and hasattr(obj, name):
            delattr(obj, name)
        elif action == "copy":
            obj = pickling.copy(obj)
    blob, kept = pickling.dumps(obj)
    names = list(vars(pickling.copy(obj)))
    if kept and names:
        assert not _attributes_in_a_dict(obj, names[0])
    assert vars(pickle.loads(blob)) == vars(obj)
    assert pickle.loads(blob).__class__ is _Changing


class _Tagged(dict):
    pass


class _Listed(list):
    pass


def test_a_dict_or_list_subclass_keeps_its_items_in_a_copy() -> None:
    tagged, listed = _Tagged(a=1), _Listed([1, 2])
    tagged.tag = listed.tag = "x"
    assert dict(pickling.copy(tagged)) == {"a": 1} and pickling.copy(tagged).tag == "x"
    assert list(pickling.copy(listed)) == [1, 2]


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
    """And copies once: later pickles read the copy's attributes without moving them."""
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
    served = engine.model
    blob = engine.to_bytes()
    assert engine.model is served  # nothing moved: no new copy
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


def test_a_champions_pickle_does_not_depend_on_what_the_process_pickled_before(
    monkeypatch,
) -> None:
    """A snapshot's or a good state's bytes: the first Engine reads its model through
    ``__dict__`` (no class names known yet), the second by name; both serve a copy of a
    champion they had not copied yet, so both pickle the same key objects alike."""
    from streamheal.config import Config
    from streamheal.engine import Engine

    monkeypatch.setattr(pickling, "_names", {})
    events = bench_events(2500)
    pickles = []
    for _ in range(2):
        engine = Engine(Config().replace(guards={"good_state_every": 1000}))
        engine.process(events)
        pickles.append((engine.watch.good, engine._pickled_model()))
    assert pickles[0] == pickles[1]
