"""Self-healing on the real broker: fork and promote through a concept drift, registry
promotions applied by a running worker within one batch, a bad promotion rolled back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamheal import models
from streamheal.config import Config
from streamheal.kafka.checkpoints import CheckpointReader
from streamheal.registry import Registry
from streamheal.scenarios import SCENARIOS
from tests.conftest import produce, read_all, read_topic, running_worker, values, wait_for

pytestmark = pytest.mark.kafka


def with_registry(config: Config, tmp_path: Path) -> tuple[Config, Path]:
    config = config.replace(registry={"path": str(tmp_path / "registry")})
    topics = config.topics
    path = tmp_path / "worker.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{config.kafka.bootstrap_servers}"\n'
        f'group_id = "{config.kafka.group_id}"\n[topics]\n'
        + "".join(
            f'{n} = "{getattr(topics, n)}"\n'
            for n in ("events", "predictions", "alerts", "metrics", "dlq", "state", "control")
        )
        + f'partitions = 2\n[registry]\npath = "{tmp_path / "registry"}"\n'
    )
    return config, path


def test_a_concept_drift_makes_the_worker_fork_promote_and_keep_serving(
    config: Config, tmp_path: Path
) -> None:
    config, _ = with_registry(config, tmp_path)
    scenario = SCENARIOS["stagger"](events=16000, drift_at=8000, label_delay=10, seed=5)
    produce(config, scenario.events)
    bootstrap = config.kafka.bootstrap_servers
    with running_worker(config):
        predictions = read_topic(
            bootstrap, config.topics.predictions, lambda m: len(m) >= 16000, timeout=120
        )

        def promoted(messages: list) -> bool:
            return (
                len({v["partition"] for v in values(messages) if v.get("action") == "promote"}) == 2
            )

        alerts = read_topic(bootstrap, config.topics.alerts, promoted, timeout=60)
    served = values(predictions)
    assert len({v["id"] for v in served}) == 16000  # every event scored through the swaps
    actions = [v for v in values(alerts) if v["type"] == "action"]
    registry = Registry(tmp_path / "registry", "streamheal")
    promoted_versions = set()
    for partition in (0, 1):
        mine = [a for a in actions if a["partition"] == partition]
        kinds = [a["action"] for a in mine]
        assert kinds.index("snapshot") < kinds.index("fork") < kinds.index("promote")
        last = max(v["model_version"] for v in served if v["partition"] == partition)
        assert last >= 2
        # The registry issued the promoted model's number: one number, one model.
        promotion = next(a for a in mine if a["action"] == "promote")
        lineage = registry.lineage(promotion["model_version"])
        assert lineage is not None and lineage["partition"] == partition
        assert (lineage["action"], lineage["parent"]) == ("promote", 1)
        promoted_versions.add(promotion["model_version"])
    assert len(promoted_versions) == 2  # not "v2" on both partitions
    wait_for(
        lambda: any("concept" in v.meta["cause"] for v in registry.versions()),
        what="the pre-drift snapshot in the registry",
    )
    snapshot = next(v for v in registry.versions() if "concept" in v.meta["cause"])
    assert snapshot.meta["tags"]["serving_version"] == "1"
    assert registry.load(snapshot.version) is not None


def trained_model(events: list[dict], flip: bool) -> bytes:
    model = models.build_model(Config().model, seed=1)
    rng = np.random.default_rng(1)
    for event in events:
        if event.get("features") and event.get("label") is not None:
            label = bool(event["label"])
            if flip and rng.random() < 0.95:
                label = not label
            model.learn_one(event["features"], label)
    return models.dumps(model)


@pytest.mark.parametrize("bad", [False, True])
def test_registry_promote_reaches_a_running_worker_within_one_batch(
    config: Config, tmp_path: Path, bad: bool
) -> None:
    config, config_file = with_registry(config, tmp_path)
    config = config.replace(engine={"batch_size": 200})
    events = SCENARIOS["stationary"](events=8000, seed=6).events  # labels inline
    first, second = events[:3000], events[3000:]
    registry = Registry(tmp_path / "registry", "streamheal")
    version = registry.register(trained_model(first, flip=bad), cause="trained offline")
    bootstrap = config.kafka.bootstrap_servers
    with running_worker(config):
        produce(config, first)
        read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 3000)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamheal.cli",
                "registry",
                "-c",
                str(config_file),
                "promote",
                str(version),
                "--reason",
                "offline gate",
                "--by",
                "tester",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        alerts = read_topic(
            bootstrap,
            config.topics.alerts,
            lambda m: sum(v.get("action") == "install" for v in values(m)) == 2,
        )
        produce(config, second)
        predictions = read_topic(
            bootstrap, config.topics.predictions, lambda m: len(m) >= 8000, timeout=120
        )
        if bad:
            alerts = read_topic(
                bootstrap,
                config.topics.alerts,
                lambda m: sum(v.get("action") == "rollback" for v in values(m)) == 2,
                timeout=60,
            )
    assert registry.alias("champion") == version
    install = next(v for v in values(alerts) if v.get("action") == "install")
    assert install["model_version"] == version and "tester" in install["message"]
    later = [v for v in values(predictions) if v["id"] in {e["id"] for e in second}]
    if not bad:
        # Applied between batches: at most one batch of new events still saw the old model.
        stale = [v for v in later if v["model_version"] != version]
        assert len(stale) <= 2 * 200
        assert later[-1]["model_version"] == version
    else:
        # The fresh model served before the promotion had its number from the registry
        # too: the next one after the offline model's.
        fresh = registry.lineage(version + 1)
        assert fresh is not None and fresh["action"] == "initial"
        rollbacks = [v for v in values(alerts) if v.get("action") == "rollback"]
        assert all(r["model_version"] == version + 1 for r in rollbacks)
        by_partition = {}
        for v in later:
            by_partition[v["partition"]] = v["model_version"]
        assert set(by_partition.values()) == {version + 1}  # the good model serves again
    assert len(read_all(bootstrap, config.topics.predictions)) == 8000


def test_a_champion_promoted_while_no_worker_ran_serves_when_the_workers_return(
    config: Config, tmp_path: Path
) -> None:
    # A promote sent while the workers are down (a deploy, a crash) finds nobody on the
    # control topic; the restored partitions see that the champion moved and install it
    # before their first new event. A restart with no promotion keeps what was learned.
    config, config_file = with_registry(config, tmp_path)
    config = config.replace(engine={"batch_size": 200})
    events = SCENARIOS["stationary"](events=6000, seed=7).events  # labels inline
    parts = [events[:2000], events[2000:4000], events[4000:]]
    registry = Registry(tmp_path / "registry", "streamheal")
    first = registry.register(trained_model(parts[0], flip=False), cause="trained offline")
    registry.promote(first)
    bootstrap = config.kafka.bootstrap_servers

    def serve(part: list[dict], total: int, installs: bool = False) -> None:
        with running_worker(config):
            produce(config, part)
            read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= total)
            if not installs:
                return
            # The install is checkpointed with its batch, whatever the cadence: a crash now
            # must not restore the old champion's state and install (and re-learn) again.
            wait_for(
                lambda: all(
                    champion_in_checkpoint(config, p) == registry.alias("champion") for p in (0, 1)
                ),
                what="checkpoints that account for the champion",
            )

    config = config.replace(worker={"checkpoint_every_batches": 1000})
    serve(parts[0], 2000)
    second = registry.register(trained_model(parts[1], flip=False), cause="retrained")
    promote = [sys.executable, "-m", "streamheal.cli", "registry", "-c", str(config_file)]
    done = subprocess.run([*promote, "promote", str(second)], capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr
    serve(parts[1], 4000, installs=True)
    serve(parts[2], 6000)

    predictions = {v["id"]: v for v in values(read_all(bootstrap, config.topics.predictions))}
    assert len(predictions) == 6000
    assert {predictions[e["id"]]["model_version"] for e in parts[0]} == {first}
    assert {predictions[e["id"]]["model_version"] for e in parts[1] + parts[2]} == {second}
    installs = [v for v in values(read_all(bootstrap, config.topics.alerts)) if v.get("action")]
    assert sorted((a["action"], a["partition"], a["model_version"]) for a in installs) == [
        ("install", 0, second),
        ("install", 1, second),
    ]
    assert "promoted while the partition was not served" in installs[0]["message"]


def champion_in_checkpoint(config: Config, partition: int) -> int | None:
    reader = CheckpointReader(config)
    try:
        found = reader.latest(config.topics.events, partition, timeout=60)
    finally:
        reader.close()
    return None if found is None else found[0].registry.get("champion")
