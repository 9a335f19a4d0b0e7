"""The package's public surface: ``__all__``, ``__version__``, one error base."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import streamheal
from streamheal.cli import main
from streamheal.errors import StreamhealError


def test_every_public_name_resolves():
    for name in streamheal.__all__:
        assert getattr(streamheal, name) is not None, name
    assert set(streamheal.__all__) <= set(dir(streamheal))


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert streamheal.__version__ == version("streamheal")


def test_version_option_prints_the_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"streamheal {streamheal.__version__}"


def test_every_project_error_derives_from_streamheal_error():
    package = streamheal.__path__
    classes = []
    for info in pkgutil.walk_packages(package, "streamheal."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                classes.append(cls)
    assert len(classes) >= 15
    orphans = [
        f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, StreamhealError)
    ]
    assert orphans == []


def test_errors_keep_their_builtin_base_for_existing_handlers():
    assert issubclass(streamheal.ConfigError, ValueError)
    assert issubclass(streamheal.RegistryError, RuntimeError)
    assert issubclass(streamheal.BrokerUnavailable, RuntimeError)
