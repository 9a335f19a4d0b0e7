"""One owner for the serving model: versions from one authority, lineage, the policy acting
through it; and the one record loop both Engine modes share."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from streamheal import models
from streamheal.config import Config
from streamheal.detectors.suite import Drift
from streamheal.engine import Engine, Prediction
from streamheal.events import Source
from streamheal.kafka.records import record_of
from streamheal.policy import Action
from streamheal.scenarios import SCENARIOS
from streamheal.serving import ServingModel, VersionCounter
from tests.conftest import scenario_events


def run(engine: Engine, events: list, batch: int = 500) -> list:
    outputs = []
    for i in range(0, len(events), batch):
        outputs += engine.process(events[i : i + batch])
    return outputs


def stagger(partition: int = 0) -> list:
    events = scenario_events(SCENARIOS["stagger"](events=12000, drift_at=6000, seed=3))
    if partition:
        events = [
            dataclasses.replace(e, source=Source(e.source.topic, partition, e.source.offset))
            for e in events
        ]
    return events


def promotions(outputs: list) -> list[Action]:
    return [o for o in outputs if isinstance(o, Action) and o.action == "promote"]


def test_partitions_sharing_an_authority_never_issue_the_same_version() -> None:
    versions = VersionCounter()
    first, second = Engine(Config(), versions), Engine(Config(), versions)
    promoted = promotions(run(first, stagger(0))) + promotions(run(second, stagger(1)))
    assert len(promoted) == 2
    assert [a.model_version for a in promoted] == [2, 3]  # one sequence, not "v2" twice
    assert first.model_version == 2 and second.model_version == 3
    step = second.serving.lineage[-1]
    assert (step.version, step.parent, step.action) == (3, 1, "promote")
    assert second.serving.partition == 1 and promoted[1].partition == 1


def test_the_policy_changes_the_champion_only_through_the_serving_model() -> None:
    engine = Engine(Config())
    assert engine.policy.serving is engine.serving
    with pytest.raises(AttributeError):
        engine.model = None  # read-only: the serving model owns it
    run(engine, stagger())
    assert engine.model is engine.serving.model and engine.model_version == 2


def test_an_installed_version_moves_the_counter_forward() -> None:
    engine = Engine(Config())
    events = stagger()
    run(engine, events[:4000])
    engine.install(copy.deepcopy(engine.model), 7, "registry promote v7")
    promoted = promotions(run(engine, events[4000:]))
    assert [a.model_version for a in promoted] == [8]  # never back to "v2"
    assert [s.action for s in engine.serving.lineage] == ["initial", "install", "promote"]


def test_a_restored_checkpoint_never_reissues_its_version() -> None:
    engine = Engine(Config())
    run(engine, stagger())
    restored = Engine(Config())  # its own counter, as in a worker without a registry
    restored.load_bytes(engine.to_bytes())
    assert restored.model_version == 2
    assert list(restored.serving.lineage) == list(engine.serving.lineage)
    restored.serving.replace(models.loads(models.dumps(restored.model)), **_why())
    assert restored.model_version == 3


def test_a_serving_model_keeps_a_bounded_lineage() -> None:
    serving = ServingModel("m0")
    for i in range(100):
        serving.replace(f"m{i + 1}", **_why())
    assert serving.version == 101 and len(serving.lineage) == 32
    assert serving.lineage[-1].parent == 100


def _why() -> dict:
    return {"action": "reset", "cause": "test", "index": 0}


def _records(outputs: list) -> list:
    return [
        (type(o).__name__, record_of(o))
        for o in outputs
        if isinstance(o, Prediction | Drift | Action)
    ]


def test_mini_batch_runs_the_model_check_where_it_falls_due() -> None:
    """A batch that crosses a model-check boundary is cut there: the check re-scores with
    the model as it is at that event, and the rest of the batch is scored after it. So one
    big batch gives exactly what batches ending at the boundaries give."""
    config = Config().replace(
        engine={"mode": "mini_batch"},
        detectors={"model_check_every": 2000, "window_check_every": 500},
    )
    events = scenario_events(
        SCENARIOS["stagger"](events=9000, drift_at=4500, seed=3, label_delay=10)
    )
    whole = Engine(config)
    assert whole.mini_batch
    in_one = whole.process(events)
    cut = Engine(config)
    in_pieces, start, scored = [], 0, 0
    for i, event in enumerate(events):
        scored += event.features is not None
        if event.features is not None and scored % 2000 == 0:
            in_pieces += cut.process(events[start : i + 1])
            start = i + 1
    in_pieces += cut.process(events[start:])
    assert _records(in_one) == _records(in_pieces)
    assert models.dumps(whole.model) == models.dumps(cut.model)
    assert any(isinstance(o, Drift) for o in in_one)  # the detectors were at work


def test_a_checkpoint_pickled_before_the_detector_module_was_renamed_restores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from streamheal.detectors import predictions

    engine = Engine(Config())
    run(engine, stagger()[:3000])
    # Pickle as the previous release did: the class under its old module path.
    monkeypatch.setitem(sys.modules, "streamheal.detectors.model", predictions)
    monkeypatch.setattr(predictions.PredictionMonitor, "__module__", "streamheal.detectors.model")
    old = engine.to_bytes()
    monkeypatch.undo()
    assert b"streamheal.detectors.model" in old and "streamheal.detectors.model" not in sys.modules
    restored = Engine(Config())
    restored.load_bytes(old)
    assert type(restored.drift.predictions) is predictions.PredictionMonitor
    later = stagger()[3000:4000]
    assert _records(restored.process(later)) == _records(engine.process(later))
