"""The test suite's own rules: shared helpers live in conftest.py, long statistical tests
carry the registered ``slow`` marker (``make test`` still runs them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

TESTS = Path(__file__).parent


def test_no_test_module_imports_another() -> None:
    importing = [
        f"{path.name}: {line.strip()}"
        for path in sorted(TESTS.glob("test_*.py"))
        for line in path.read_text().splitlines()
        if re.match(r"\s*(from|import) tests\.test_", line)
    ]
    assert importing == []


def test_the_slow_marker_is_registered_and_used() -> None:
    pyproject = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())
    markers = pyproject["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)
    marked = [p.name for p in TESTS.glob("test_*.py") if "@pytest.mark.slow" in p.read_text()]
    assert len(marked) >= 2
    makefile = (TESTS.parent / "Makefile").read_text()
    assert "not slow" not in makefile  # make test runs them all
