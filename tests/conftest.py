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


CONF = str(REPO / "conf")
TINY = ("dataset.synthetic.preset=tiny", "logger.wandb.enabled=false", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "data.test_batch_size=64")


def compose_cfg(tmp_root: Path, *overrides: str):
    """`conf/train.yaml` composed as `python -m mprd.train` would, on the `tiny` synthetic set under `tmp_root`."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[f"paths.root_dir={tmp_root}", "paths.output_dir=unused", *TINY, *overrides],
        )


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One `paths.root_dir` for the whole session: the `tiny` set is generated once, on first use."""
    return tmp_path_factory.mktemp("suite")
