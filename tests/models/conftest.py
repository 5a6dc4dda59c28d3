"""Fixtures for llmhost.models tests: `fake_hub` (tests/support/hub_fixture.py), imported for pytest."""

from support.hub_fixture import fake_hub

__all__ = ["fake_hub"]
