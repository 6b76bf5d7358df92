"""Shared fixtures: the real CUHK03-NP copy (optional) and compact helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def cuhk03_root() -> Path | None:
    """MPRD_CUHK03_ROOT, else ../shared/data/cuhk03-np-detected beside the checkout; None when absent."""
    candidates = [os.environ.get("MPRD_CUHK03_ROOT"), str(REPO.parent / "shared" / "data" / "cuhk03-np-detected")]
    for c in candidates:
        if c and (Path(c) / "bounding_box_train").is_dir():
            return Path(c)
    return None


@pytest.fixture
def cuhk03() -> Path:
    root = cuhk03_root()
    if root is None:
        pytest.skip("CUHK03-NP copy not found (set MPRD_CUHK03_ROOT)")
    return root


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # one intra-op thread: on a busy 2-core machine two threads spin against each other (measured 10-300x
    # slower small ops); tests check values, not speed
    torch.set_num_threads(1)
