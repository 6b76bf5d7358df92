"""The "uses besides images" derivation (mprd.supervision) on hand-made and on the real composed configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mprd.supervision import CAMSTYLE, CAMSTYLE_AUTO, camstyle_setting, describe, uses_besides_images
from tests.conftest import compose_cfg

CAMS = "camera IDs (per-camera classifiers)"


def cfg_of(method: dict, dataset: str = "synthetic", camstyle: object = "auto", max_epochs: int = 6) -> dict:
    return {"method": method, "dataset": {"name": dataset}, "data": {"camstyle": camstyle}, "max_epochs": max_epochs}


SSLR = {"family": "sslr", "name": "sslr", "camstyle": False, "similarity": {"lambda_c": 0.02},
        "schedule": {"stage0_epochs": 25, "epochs_per_iteration": 2, "iterations": None}}


@pytest.mark.parametrize(
    "cfg,expected",
    [
        (cfg_of({"name": "super"}), ["identity labels (all)", CAMSTYLE]),
        (cfg_of({"name": "super_knn", "generator": {"k": 16}}), ["identity labels (within the 16-NN)", CAMSTYLE]),
        (cfg_of({"name": "knn"}), [CAMSTYLE]),
        (cfg_of({"name": "knn"}, camstyle=False), ["none"]),
        (cfg_of({"name": "knn"}, dataset="market1501"), [CAMSTYLE_AUTO]),  # auto on real data: unknown offline
        (cfg_of({"name": "knn"}, dataset="market1501", camstyle=True), [CAMSTYLE]),
        (cfg_of({"name": "mprd", "meta": {"num_ids": 3}}), ["3 meta IDs", CAMSTYLE]),
        (cfg_of({"name": "mprd_nocam", "camstyle": False, "meta": {"num_ids": 5}}), ["5 meta IDs"]),
        (cfg_of({"name": "mprd_0id", "meta": {"num_ids": 0}}), [CAMSTYLE]),
        (cfg_of({"name": "mlcr_5id", "meta_ground_truth": {"num_ids": 5, "seed": 0}}), ["5 meta IDs", CAMSTYLE]),
        # SSLR: CCE only once an iteration runs (S = (29 - 25) / 2 = 2) and lambda_c > 0
        (cfg_of(SSLR, max_epochs=29), ["camera IDs (CCE)"]),
        (cfg_of(SSLR, max_epochs=25), ["none"]),
        (cfg_of({**SSLR, "similarity": {"lambda_c": 0.0}}, max_epochs=29), ["none"]),
        (cfg_of({**SSLR, "schedule": {**SSLR["schedule"], "iterations": 0}}, max_epochs=25), ["none"]),
        (cfg_of({"family": "uga", "name": "uga", "camstyle": False, "supervision": "intra-camera labels"}),
         ["intra-camera labels", CAMS]),
    ],
)
def test_uses_of_hand_made_configs(cfg: dict, expected: list[str]) -> None:
    assert uses_besides_images(cfg) == expected


def test_actual_camstyle_overrides_the_config() -> None:
    cfg = cfg_of({"name": "knn"}, dataset="market1501")
    assert uses_besides_images(cfg, camstyle=False) == ["none"]
    assert uses_besides_images(cfg, camstyle=True) == [CAMSTYLE]


def test_describe() -> None:
    assert describe(["5 meta IDs", CAMSTYLE]) == "5 meta IDs + CamStyle (camera IDs)"
    assert describe("intra-camera labels") == "intra-camera labels" and describe(None) == "—"


EXPECTED = {
    "table1/super": "identity labels (all) + CamStyle (camera IDs)",
    "table1/super_knn": "identity labels (within the 8-NN) + CamStyle (camera IDs)",
    "table1/knn": "CamStyle (camera IDs)",
    "table1/ss": "CamStyle (camera IDs)",
    "table1/mplp": "CamStyle (camera IDs)",
    "table1/single": "CamStyle (camera IDs)",
    "table1/mprd_wo": "5 meta IDs + CamStyle (camera IDs)",
    "table1/mprd_nocam": "5 meta IDs",
    "table1/mprd": "5 meta IDs + CamStyle (camera IDs)",
    "table2/mlcr": "CamStyle (camera IDs)",
    "table2/mlcr_5id": "5 meta IDs + CamStyle (camera IDs)",
    "table2/mprd_0id": "CamStyle (camera IDs)",
    "table3/mprd": "5 meta IDs + CamStyle (camera IDs)",
    "table3/mlcr": "CamStyle (camera IDs)",
    "uga/table3": f"intra-camera labels + {CAMS}",
    "uga/intra": f"intra-camera labels + {CAMS}",
}


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_uses_of_the_composed_experiments(experiment: str, tmp_path: Path) -> None:
    from mprd.train import resolve_camstyle

    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    assert camstyle_setting(cfg) == resolve_camstyle(cfg)  # the offline reading agrees with training's
    assert describe(uses_besides_images(cfg, resolve_camstyle(cfg))) == EXPECTED[experiment]


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (("experiment=table1/mprd", "method.meta.num_ids=20"), "20 meta IDs + CamStyle (camera IDs)"),
        (("experiment=table1/mprd", "data.camstyle=false"), "5 meta IDs"),
        (("experiment=table2/mlcr_5id", "method.meta_ground_truth.num_ids=1"), "1 meta ID + CamStyle (camera IDs)"),
        (("experiment=sslr/table3", "max_epochs=29"), "camera IDs (CCE)"),  # stage 0 (25) + 2 iterations
        (("experiment=sslr/table3", "max_epochs=29", "method.similarity.lambda_c=0"), "none"),
    ],
)
def test_uses_follow_overrides(overrides: tuple[str, ...], expected: str, tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path, *overrides)
    assert describe(uses_besides_images(cfg)) == expected
