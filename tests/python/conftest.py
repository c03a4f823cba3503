"""Shared fixtures for the Python conformance suites."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def secref_bin() -> str:
    """Path to the built `secref` binary (scripts/test.sh builds it)."""
    path = os.environ.get("SECREF_BIN") or str(ROOT / "target" / "debug" / "secref")
    assert os.path.exists(path), f"build secref first: {path}"
    return path
