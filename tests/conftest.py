"""Shared test fixtures."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from simulators.buttons import sim_pin_factory


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands under test (``desk-supervisor check-config``) set up logging for a
    process; put the root logger back so one test's handlers never leak into another."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """A fresh MockFactory of ``SimPin``s per test, passed to devices explicitly and closed
    after; gpiozero's global ``Device.pin_factory`` is never touched (gpiozero #1087: pins
    of a shared factory leak between tests)."""
    f = sim_pin_factory()
    yield f
    f.reset()
    f.close()
    assert Device.pin_factory is None or not isinstance(Device.pin_factory, MockFactory)
