"""The checkpoint's manifest and config hashes, as written to the state topic (no broker:
the records' bytes; the broker tests read them back across restarts)."""

from __future__ import annotations

import dataclasses

import orjson

from streamheal.config import Config
from streamheal.state import checkpoint


def test_a_manifest_is_written_as_its_fields_in_order() -> None:
    # Manifests were written as orjson.dumps(dataclasses.asdict(manifest)); written from
    # the dataclass itself now, the bytes must stay the same (readers parse them).
    parts = {
        "join.c0": checkpoint.Part.of(b"x" * 100, None, 10),
        "reference": checkpoint.Part.of(b"y", None, 10).written(),
    }
    for parts_given, registry in ((parts, {"champion": 3}), (None, None), (parts, None)):
        records = checkpoint.encode(
            "events", 2, 17, b"state" * 50, Config(), None, 64, 4, parts_given, registry
        )
        manifest = checkpoint.Manifest.from_bytes(records[-1][1])
        assert checkpoint.Manifest.from_bytes(manifest.to_bytes()) == manifest
    # Built here, its dicts in the order the code fills them (not as parsed back).
    manifest = checkpoint.Manifest(
        "events", 2, "ab12", 17, 1, 250, "f" * 64, None, {"model": "1", "engine": "2"}, 4, 1.5,
        parts={name: part.describe() for name, part in parts.items()},
        registry={"champion": 3},
    )  # fmt: skip
    assert manifest.to_bytes() == orjson.dumps(dataclasses.asdict(manifest))


def fresh_hashes(config: Config) -> dict[str, str]:
    checkpoint._last_hashes = None
    return checkpoint.section_hashes(config)


def test_section_hashes_follow_the_config_they_are_asked_about() -> None:
    config = Config()
    first = fresh_hashes(config)
    first["model"] = "changed by a caller"  # a copy: the next answer is not touched
    again = checkpoint.section_hashes(config)
    assert again == fresh_hashes(config) and again["model"] != "changed by a caller"
    other = config.replace(detectors={"window_size": 700})
    changed = checkpoint.section_hashes(other)
    assert changed == fresh_hashes(other)
    assert {n for n in changed if changed[n] != checkpoint.section_hashes(config)[n]} == {
        "detectors"
    }
