"""Self-healing in the Engine: fork and promote, reset, rollback, discard, warnings."""

from __future__ import annotations

import numpy as np

from streamheal import models
from streamheal.config import Config
from streamheal.engine import Engine, Prediction
from streamheal.policy import Action
from streamheal.scenarios import SCENARIOS
from tests.conftest import scenario_events


def run(engine: Engine, events: list, batch: int = 500) -> list:
    outputs = []
    for i in range(0, len(events), batch):
        outputs += engine.process(events[i : i + batch])
    return outputs


def actions(outputs: list, *names: str) -> list[Action]:
    return [o for o in outputs if isinstance(o, Action) and (not names or o.action in names)]


def stagger(**options) -> list:
    return scenario_events(SCENARIOS["stagger"](events=16000, drift_at=8000, seed=3, **options))


def test_a_concept_drift_forks_a_challenger_that_gets_promoted() -> None:
    engine = Engine(Config())
    outputs = run(engine, stagger(label_delay=10))
    snapshot = actions(outputs, "snapshot")[0]
    fork = actions(outputs, "fork")[0]
    promote = actions(outputs, "promote")[0]
    assert 8000 < fork.index <= promote.index < 9500
    assert snapshot.model_version == 1 and models.loads(snapshot.model) is not None
    assert promote.model_version == 2 == engine.model_version
    assert promote.detail["challenger_accuracy"] > promote.detail["champion_accuracy"]
    served = [o.model_version for o in outputs if isinstance(o, Prediction)]
    assert len(served) == 16000 and served[0] == 1 and served[-1] == 2  # none lost in the swap
    no_policy = Engine(Config().replace(policy={"enabled": False}))
    run(no_policy, stagger(label_delay=10))
    assert engine.counters.accuracy > no_policy.counters.accuracy


def test_reset_replaces_the_champion_and_relearns_the_reference() -> None:
    config = Config().replace(policy={"concept": ["reset"], "challenger": "fresh"})
    engine = Engine(config)
    outputs = run(engine, stagger())
    reset = actions(outputs, "reset")[0]
    assert reset.index > 8000 and engine.model_version >= 2
    assert engine.drift.covariate is not None  # the new reference was learned after the reset


def test_a_bad_install_is_rolled_back_automatically() -> None:
    events = scenario_events(SCENARIOS["stationary"](events=6000, seed=4))
    engine = Engine(Config())
    run(engine, events[:3000])
    good_version = engine.model_version
    bad = models.build_model(Config().model, seed=1)
    rng = np.random.default_rng(0)
    for event in events[:500]:  # learns the labels upside down
        bad.learn_one(event.features, not event.label if rng.random() < 0.95 else event.label)
    install = engine.install(bad, 7, "promote by test: a bad model")
    assert install.action == "install" and engine.model_version == 7
    outputs = run(engine, events[3000:])
    rollback = actions(outputs, "rollback")[0]
    assert rollback.model_version == good_version == engine.model_version
    assert rollback.detail["previous_accuracy"] > rollback.detail["new_accuracy"]
    served = [o.model_version for o in outputs if isinstance(o, Prediction)]
    assert served[0] == 7 and served[-1] == good_version


def test_a_challenger_that_never_wins_is_discarded_after_the_timeout() -> None:
    config = Config().replace(
        policy={
            "covariate": ["fork"],
            "challenger": "copy",
            "challenger_timeout": 300,
            "promotion_margin": 0.5,
        }
    )
    events = scenario_events(SCENARIOS["breast-cancer"](events=6000, drift_at=3000, seed=2))
    outputs = run(Engine(config), events)
    fork, discard = actions(outputs, "fork")[0], actions(outputs, "discard")[0]
    assert discard.index > fork.index and not actions(outputs, "promote")


def test_the_one_sided_test_promotes_too() -> None:
    config = Config().replace(policy={"promotion_test": "one_sided"})
    outputs = run(Engine(config), stagger())
    assert actions(outputs, "promote")


def test_a_ddm_warning_starts_the_challenger_early() -> None:
    config = Config().replace(detectors={"concept_detector": "ddm"})
    outputs = run(Engine(config), stagger())
    forks = actions(outputs, "fork")
    assert forks and forks[0].cause.startswith("warning")


def test_warm_start_zero_keeps_no_rows_to_warm_start_on() -> None:
    events = scenario_events(SCENARIOS["stationary"](events=600, seed=5))
    cold = Engine(Config().replace(policy={"challenger": "warm", "warm_start": 0}))
    warm = Engine(Config().replace(policy={"challenger": "warm", "warm_start": 5}))
    run(cold, events)
    run(warm, events)
    assert len(cold.policy.recent) == 0
    assert len(warm.policy.recent) == 5
    # A "warm" model on zero rows is a fresh one: the same bytes as an untrained model.
    assert models.dumps(cold.policy._fresh().model) == models.dumps(cold.policy.make_model())


def test_a_rollback_discards_the_live_challenger_with_an_action() -> None:
    config = Config().replace(
        policy={
            "covariate": ["fork"],
            "challenger": "copy",
            "challenger_timeout": 100_000,
            "promotion_margin": 0.9,  # the challenger never wins: it is still racing
        }
    )
    events = scenario_events(SCENARIOS["breast-cancer"](events=7000, drift_at=1500, seed=2))
    engine = Engine(config)
    outputs = run(engine, events[:3500])
    assert actions(outputs, "fork") and engine.policy.challenger is not None
    good_version = engine.model_version
    bad = models.build_model(config.model, seed=1)
    for event in events[:500]:  # learns the labels upside down
        bad.learn_one(event.features, not event.label)
    engine.install(bad, 7, "promote by test: a bad model")
    outputs = run(engine, events[3500:])
    rollback = actions(outputs, "rollback")[0]
    discard = actions(outputs, "discard")[0]
    assert rollback.model_version == good_version
    assert discard.index == rollback.index and discard.detail["reason"] == "rollback"
    assert discard.detail["raced"] == 7 and "rolled back" in discard.message
    assert engine.policy.challenger is None


TREE = {"name": "hoeffding_tree"}


def learned_weight(model) -> float:
    return model.summary["total_observed_weight"]


def test_a_tree_started_after_a_drift_catches_up_then_learns_at_weight_one() -> None:
    config = Config().replace(model=TREE, policy={"catch_up_weight": 10.0, "catch_up_events": 300})
    engine = Engine(config)
    outputs = run(engine, stagger())
    *_, fork, promote = actions(outputs, "fork", "promote", "reset", "rollback")
    assert (fork.action, promote.action) == ("fork", "promote") and fork.index > 8000
    # The challenger learned its warm start and every labeled event from the fork on: the
    # first 300 of them counted ten times each, the rest once.
    learned = fork.detail["warm_rows"] + 16000 - fork.index
    assert learned_weight(engine.model) == 10 * 300 + (learned - 300)
    assert engine.policy.catch_up is None  # over: the champion learns at weight 1 again
    # A gradient learner never catches up: a weight would only be a larger step.
    linear = Engine(Config())
    run(linear, stagger())
    assert linear.policy._fresh().catch_up == 0 and linear.policy.catch_up is None


def test_a_reset_tree_catches_up_too() -> None:
    policy = {"concept": ["reset"], "catch_up_weight": 10.0, "catch_up_events": 300}
    engine = Engine(Config().replace(model=TREE, policy=policy))
    outputs = run(engine, stagger())
    *_, reset = actions(outputs, "reset", "rollback", "promote", "fork")
    assert reset.action == "reset" and reset.index > 8000
    learned = reset.detail["warm_rows"] + 16000 - reset.index
    assert learned_weight(engine.model) == 10 * 300 + (learned - 300)


def test_catch_up_makes_a_tree_recover_sooner_and_hold() -> None:
    def accuracy_after_drift(policy: dict) -> float:
        events = stagger()
        labels = {e.id: e.label for e in events}
        outputs = run(Engine(Config().replace(model=TREE, policy=policy)), events)
        right = [o.prediction == labels[o.id] for o in outputs if isinstance(o, Prediction)]
        return sum(right[8000:13000]) / 5000

    slow = accuracy_after_drift({})  # the default: off
    fast = accuracy_after_drift({"catch_up_weight": 10.0})
    assert fast > slow + 0.02, (fast, slow)


def test_a_clear_lead_promotes_the_challenger_early() -> None:
    # A fresh challenger (no warm start to be scored on) meets the champion's errors live.
    events = scenario_events(SCENARIOS["stagger"](events=12000, drift_at=6000, seed=3, width=1))
    fresh = Config().replace(policy={"challenger": "fresh"})
    early = actions(run(Engine(fresh), events), "promote")[0]
    waiting = Engine(fresh.replace(policy={"promotion_early_samples": 0}))
    late = actions(run(waiting, events), "promote")[0]
    assert early.detail["early"] and 30 <= early.detail["samples"] < 100
    assert early.detail["challenger_accuracy"] > early.detail["champion_accuracy"] + 0.2
    assert "early" not in late.detail and late.detail["samples"] >= 100
    assert late.index > early.index


def test_a_checkpoint_taken_while_catching_up_continues_exactly() -> None:
    config = Config().replace(model=TREE, policy={"catch_up_weight": 10.0, "catch_up_events": 2000})
    events = stagger()
    whole = Engine(config)
    expected = run(whole, events)
    first = Engine(config)
    before = run(first, events[:9000])
    assert first.policy.catch_up is not None  # mid-way through its catch-up
    second = Engine(config)
    second.load_bytes(first.to_bytes())
    after = run(second, events[9000:])
    scores = [(o.id, o.probabilities) for o in expected if isinstance(o, Prediction)]
    resumed = [(o.id, o.probabilities) for o in before + after if isinstance(o, Prediction)]
    assert resumed == scores
    probe = [e.features for e in events[::40]]
    assert [second.model.predict_proba_one(x) for x in probe] == [
        whole.model.predict_proba_one(x) for x in probe
    ]
    assert second.model.summary == whole.model.summary


def test_a_warm_challenger_learns_and_is_scored_on_the_rows_since_the_change() -> None:
    # ADWIN's cut places the change: the challenger learns only the rows after it, each
    # tested before it is learned beside the champion's answer then: its comparison with
    # the champion starts with those rows, not from nothing.
    outputs = run(Engine(Config()), stagger())
    fork, promote = actions(outputs, "fork", "promote")[:2]
    assert (fork.action, promote.action) == ("fork", "promote")
    assert promote.detail["samples"] > promote.index - fork.index + 30
    assert promote.detail["challenger_accuracy"] > promote.detail["champion_accuracy"]


def test_the_warm_start_skips_rows_from_before_the_change() -> None:
    # Rows of the old concept (label 0) then of the new one (label 1): told where the
    # change was, the challenger learns and is scored on the new rows only.
    engine = Engine(Config())
    policy = engine.policy
    old = [({"x": 1.0}, 0) for _ in range(150)]
    new = [({"x": 1.0}, 1) for _ in range(50)]
    policy.recent.extend(old + new)
    since = [1] * 50  # the champion was wrong on each row since the change
    fork = policy._fork(0, "concept", since)
    assert fork.action == "fork"
    assert len(policy.challenger_right) == 50 and list(policy.champion_right) == [0] * 50
    assert policy.challenger.predict_proba_one({"x": 1.0})[True] > 0.5  # it never saw a 0


def test_an_adwin_warning_forks_a_provisional_challenger() -> None:
    # At a loose warning confidence warnings come on a stationary stream too: a
    # challenger a drift never confirms is discarded, unpromoted (a clear lead aside).
    # Even at no margin, an unconfirmed challenger waits for a drift (or a clear lead).
    policy = {"warning_patience": 200, "promotion_margin": 0.0, "challenger": "copy"}
    loose = Config().replace(detectors={"warning_delta": 0.5}, policy=policy)
    events = scenario_events(SCENARIOS["stationary"](events=20000, seed=4))
    outputs = actions(run(Engine(loose), events))
    warned = [a for a in outputs if a.action == "fork" and a.cause.startswith("warning")]
    discarded = [a for a in outputs if a.action == "discard"]
    assert warned and discarded
    assert all(a.detail["reason"] == "warning not confirmed" for a in discarded)
    assert all(a.detail["samples"] >= 1 for a in discarded)
    assert not [a for a in outputs if a.action == "promote" and not a.detail.get("early")]


def test_the_rows_kept_for_warm_starts_line_up_with_the_errors_the_suite_saw(monkeypatch) -> None:
    # since_change slices the suite's error window and the policy pairs it with its own
    # newest rows: both must be the same labeled events in the same order, in either mode,
    # with labels late, however the stream is cut.
    from streamheal.policy import Policy

    fresh, forks = Policy._fresh, []

    def checked(policy, since_change=None):
        seen = list(engine.drift.labels.window)
        kept = [label for _, label in policy.recent]
        count = min(len(seen), len(kept))
        forks.append([bool(v) for v in seen[-count:]] == [bool(v) for v in kept[-count:]])
        return fresh(policy, since_change)

    monkeypatch.setattr(Policy, "_fresh", checked)
    for mode in ("per_event", "mini_batch"):
        for batch in (100, 2000):
            engine = Engine(Config().replace(engine={"mode": mode}))
            run(engine, stagger(label_delay=10), batch)
    assert len(forks) >= 4 and all(forks)
