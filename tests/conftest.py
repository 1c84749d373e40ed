"""Shared fixtures. Real data lives outside the repository, in ../shared/data (or $SAINET_DATA_ROOT);
tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SAINET_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


def real_data_dir(name: str) -> Path:
    path = DATA_ROOT / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (set SAINET_DATA_ROOT to run this test)")
    return path


@pytest.fixture(scope="session")
def amazon_dir() -> Path:
    return real_data_dir("amazon-food-kitchen")


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    return real_data_dir("movielens-1m")
