"""SSLR (method family `sslr`): Eqs. 1-7 against hand computations and brute force, the lookup-table rule,
the stage/iteration schedule, checkpoint state, and tiny end-to-end runs (per-iteration metrics, resume)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mprd.core.backbone import ReIDBackbone
from mprd.methods.sslr.baseline import instance_logits
from mprd.methods.sslr.config import ScheduleConfig, config_from_method
from mprd.methods.sslr.module import SSLRModule
from mprd.methods.sslr.schedule import Schedule, lr_factor_fn
from mprd.methods.sslr.similarity import dissimilarity_rows, part_features, reliable_sets
from mprd.methods.sslr.softened import softened_cross_entropy, softened_target
from mprd.train import run
from tests.conftest import compose_cfg  # noqa: E402

# ----------------------------------------------------------------------------------------- Eqs. 1-4


def test_eq1_probabilities_and_one_hot_loss_by_hand():
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    v = torch.tensor([[0.8, 0.6]])
    cos = [0.8, 0.6, 0.6 * 0.8 + 0.8 * 0.6]  # V_j^T v
    z = sum(math.exp(c / 0.1) for c in cos)
    expected = [math.exp(c / 0.1) / z for c in cos]
    probs = F.softmax(instance_logits(v, table, tau=0.1), dim=1)[0]
    assert probs.tolist() == pytest.approx(expected, rel=1e-5)
    # Eq. 2 with a one-hot target on class y_i = 1
    loss = softened_cross_entropy(instance_logits(v, table, 0.1), torch.tensor([1]), None, lam=0.6)
    assert loss.item() == pytest.approx(-math.log(expected[1]), rel=1e-5)


def test_softened_target_and_loss_on_a_hand_case():
    index = torch.tensor([0, 4])
    reliable = torch.tensor([[3, 1], [2, 0]])
    target = softened_target(index, reliable, num_classes=5, lam=0.6)
    assert torch.allclose(target, torch.tensor([[0.6, 0.2, 0.0, 0.2, 0.0], [0.2, 0.0, 0.2, 0.0, 0.6]]))
    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 0.0], [0.3, -0.2, 1.5, 0.0, 2.5]])
    log_p = [[x - math.log(sum(math.exp(y) for y in row)) for x in row] for row in logits.tolist()]
    by_hand = [
        -(0.6 * log_p[0][0] + 0.2 * log_p[0][3] + 0.2 * log_p[0][1]),  # Eq. 4, k = 2, (1 - 0.6) / 2 = 0.2
        -(0.6 * log_p[1][4] + 0.2 * log_p[1][2] + 0.2 * log_p[1][0]),
    ]
    loss = softened_cross_entropy(logits, index, reliable, lam=0.6)
    assert loss.item() == pytest.approx(sum(by_hand) / 2, rel=1e-6)
    dense = -(target * F.log_softmax(logits, 1)).sum(1).mean()  # Eq. 2 with t_i of Eq. 3
    assert loss.item() == pytest.approx(dense.item(), rel=1e-6)
    # lambda = 1 gives back the baseline (one-hot cross-entropy)
    assert softened_cross_entropy(logits, index, reliable, 1.0).item() == pytest.approx(
        F.cross_entropy(logits, index).item(), rel=1e-6
    )


# ----------------------------------------------------------------------------------------- Eqs. 5-7


def test_part_features_are_normalised_stripe_means():
    fmap = torch.rand(2, 3, 6, 2)
    parts = part_features(fmap, 3)
    assert parts.shape == (2, 3, 3)
    stripe1 = fmap[:, :, 2:4].mean(dim=(2, 3))  # 6 rows / 3 stripes: rows 2-3 form stripe 1
    assert torch.allclose(parts[:, 1], F.normalize(stripe1, dim=1), atol=1e-6)
    # p = 1 is the normalised global average (Fig. 4(f): "the part distance is the global distance")
    assert torch.allclose(part_features(fmap, 1)[:, 0], F.normalize(fmap.mean(dim=(2, 3)), dim=1), atol=1e-6)
    assert part_features(torch.rand(2, 3, 2, 1), 8).shape == (2, 8, 3)  # p > map height still works


def brute_force_d(g, parts, cams, lambda_p, lambda_c):
    """Eq. 7 over all N x N pairs with torch.cdist."""
    d = torch.cdist(g.double(), g.double())
    d_part = torch.stack([torch.cdist(parts[:, i].double(), parts[:, i].double()) for i in range(parts.shape[1])])
    cce = (cams[:, None] == cams[None, :]).double() * lambda_c
    return (1 - lambda_p) * d + lambda_p * d_part.mean(0) + cce


def random_features(n=37, c=6, p=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = F.normalize(torch.randn(n, c, generator=gen), dim=1)
    parts = F.normalize(torch.randn(n, p, c, generator=gen), dim=2)
    parts[n // 2, 1] = 0.0  # an all-zero stripe (a dead ReLU region): its distance is ||x||, not sqrt(2)
    cams = torch.randint(0, 3, (n,), generator=gen)
    return g, parts, cams


def test_dissimilarity_blocks_equal_brute_force():
    g, parts, cams = random_features()
    ref = brute_force_d(g, parts, cams, lambda_p=0.5, lambda_c=0.02)
    blocks = [dissimilarity_rows(s, min(s + 8, 37), g, parts, cams, 0.5, 0.02) for s in range(0, 37, 8)]
    got = torch.cat(blocks).double()
    off = ~torch.eye(37, dtype=torch.bool)  # d(x, x) = sqrt(~1e-7 rounding) = ~1e-3, and self is excluded anyway
    assert torch.allclose(got[off], ref[off], atol=1e-5)
    assert torch.allclose(got.diagonal(), ref.diagonal(), atol=2e-3)
    same_cam = cams[:, None] == cams[None, :]
    assert same_cam.any() and (~same_cam).any()
    # global only: D = d
    plain = dissimilarity_rows(0, 37, g, None, cams, 0.5, 0.0).double()
    assert torch.allclose(plain[off], torch.cdist(g.double(), g.double())[off], atol=1e-5)


@pytest.mark.parametrize("lambda_p,lambda_c", [(0.5, 0.3), (0.0, 0.3), (0.5, 0.0), (0.0, 0.0)])
def test_reliable_sets_equal_brute_force_top_k(lambda_p, lambda_c):
    g, parts, cams = random_features(seed=1)
    ref = brute_force_d(g, parts, cams, lambda_p, lambda_c)
    ref.fill_diagonal_(math.inf)
    expected = torch.topk(ref, 4, dim=1, largest=False).indices
    got = reliable_sets(g, parts, cams, 4, lambda_p=lambda_p, lambda_c=lambda_c, block_rows=7)
    assert torch.equal(got, expected)
    assert not (got == torch.arange(37)[:, None]).any()  # self excluded


def test_cce_and_parts_change_the_reliable_sets():
    g, parts, cams = random_features(seed=2)
    plain = reliable_sets(g, parts, cams, 4, lambda_p=0.0, lambda_c=0.0)
    with_cce = reliable_sets(g, parts, cams, 4, lambda_p=0.0, lambda_c=0.3)
    with_parts = reliable_sets(g, parts, cams, 4, lambda_p=0.5, lambda_c=0.0)
    cross = lambda r: (cams[:, None] != cams[r]).float().mean()  # noqa: E731
    assert cross(with_cce) > cross(plain)  # CCE pulls cross-camera images into the reliable sets
    assert not torch.equal(with_parts, plain)


def test_cce_hand_case():
    """b (same camera) is nearer than c (other camera) by less than lambda_c: CCE picks c (Fig. 3)."""
    g = torch.tensor([[1.0, 0.0], [math.cos(0.50), math.sin(0.50)], [math.cos(0.51), -math.sin(0.51)]])
    cams = torch.tensor([0, 0, 1])
    assert reliable_sets(g, None, cams, 1, lambda_p=0.0, lambda_c=0.0)[0, 0] == 1
    assert reliable_sets(g, None, cams, 1, lambda_p=0.0, lambda_c=0.02)[0, 0] == 2


@pytest.mark.parametrize("lambda_p,lambda_c", [(0.5, 0.02), (1.0, 0.0)])
def test_float16_part_storage_equals_brute_force_on_the_stored_values(lambda_p, lambda_c):
    """The memory-bounded path (parts stored in float16, upcast per stripe and block) computes exactly Eq. 7 of
    the stored values, and on random inputs picks the same reliable sets as float32 storage."""
    g, parts, cams = random_features(n=53, c=16, p=4, seed=3)
    half = parts.half()
    ref = brute_force_d(g, half.double(), cams, lambda_p, lambda_c)
    ref.fill_diagonal_(math.inf)
    got = reliable_sets(g, half, cams, 4, lambda_p=lambda_p, lambda_c=lambda_c, block_rows=10)
    assert torch.equal(got, torch.topk(ref, 4, dim=1, largest=False).indices)
    rows = dissimilarity_rows(5, 17, g, half, cams, lambda_p, lambda_c).double()
    off = ref[5:17].isfinite()
    assert torch.allclose(rows[off], ref[5:17][off], atol=1e-5)
    # storage rounding (2^-11 relative) moves D by far less than the gaps between neighbours here
    full = brute_force_d(g, parts, cams, lambda_p, lambda_c)
    assert (full[5:17][off] - ref[5:17][off]).abs().max() < 2e-3
    assert torch.equal(got, reliable_sets(g, parts, cams, 4, lambda_p=lambda_p, lambda_c=lambda_c, block_rows=10))


def test_part_norms_of_float16_storage_need_no_full_upcast():
    """The squared part norms of float16 storage equal those of the upcast values (computed stripe by stripe)."""
    from mprd.methods.sslr.similarity import _squared_norms

    g, parts, _ = random_features(n=9, c=5, p=3, seed=4)
    half = parts.half()
    g_sq, p_sq = _squared_norms(g, half)
    assert p_sq.dtype == torch.float32 and p_sq.shape == (9, 3)
    assert torch.allclose(p_sq, half.float().square().sum(dim=2), atol=1e-6)
    assert p_sq[9 // 2, 1] == 0.0  # the all-zero stripe


def test_reliable_sets_reject_bad_k():
    g, parts, cams = random_features(n=5)
    with pytest.raises(ValueError, match="k=5"):
        reliable_sets(g, parts, cams, 5)


# ------------------------------------------------------------------------------- schedule, lr, config


def test_schedule_structure_and_errors():
    s = Schedule.resolve(ScheduleConfig(stage0_epochs=3, epochs_per_iteration=2), max_epochs=9)
    assert s.iterations == 3 and s.total_epochs == 9
    assert [s.iteration_of(e) for e in range(9)] == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert [e for e in range(9) if s.ends_iteration(e)] == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="max_epochs=8"):
        Schedule.resolve(ScheduleConfig(stage0_epochs=3, epochs_per_iteration=2), max_epochs=8)
    with pytest.raises(ValueError, match="needs max_epochs=7"):
        Schedule.resolve(ScheduleConfig(stage0_epochs=3, epochs_per_iteration=2, iterations=2), max_epochs=9)


def test_lr_schedule_steps_in_stage0_then_constant():
    f = lr_factor_fn(stage0=25, milestones=[15], gamma=0.1, iteration_scale=0.5)
    assert [f(e) for e in (0, 14, 15, 24, 25, 40)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.5, 0.5])


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="soft.kk"):
        config_from_method({"family": "sslr", "name": "x", "soft": {"kk": 4}})
    with pytest.raises(ValueError, match="lam"):
        config_from_method({"soft": {"lam": 1.5}})
    with pytest.raises(ValueError, match="lambda_p"):
        config_from_method({"similarity": {"lambda_p": -0.1}})
    with pytest.raises(ValueError, match="part_dtype='bfloat16'"):
        config_from_method({"similarity": {"part_dtype": "bfloat16"}})


ROWS = {  # SSLR Tab. 1 rows: experiment/row key -> (lambda_p, lambda_c, iterations, paper label)
    "sslr_baseline": (0.5, 0.02, 0, "Baseline"),
    "sslr_global": (0.0, 0.0, None, "w/o part and CCE"),
    "sslr_cce": (0.0, 0.02, None, "w/o part"),
    "sslr": (0.5, 0.02, None, "SSLR (Ours"),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_table1_rows_compose_with_their_dissimilarity(row, tmp_path):
    """Each row changes only what SSLR Tab. 1 changes (D's terms; the baseline stops after stage 0), and its
    key is the row key of the paper numbers (display = the paper's label)."""
    from mprd.report import load_paper

    cfg = compose_cfg(tmp_path, f"experiment=sslr/{row}")
    lambda_p, lambda_c, iterations, label = ROWS[row]
    assert cfg.row == cfg.method.name == row and cfg.artefact == "sslr"
    sim = cfg.method.similarity
    assert (sim.lambda_p, sim.lambda_c, cfg.method.schedule.iterations) == (lambda_p, lambda_c, iterations)
    assert (cfg.method.soft.lam, cfg.method.soft.k, sim.parts) == (0.6, 4, 8)
    baselines = {r["key"]: r for r in load_paper()["tables"]["baselines"]["rows"]}
    assert label in baselines[row]["display"]


# -------------------------------------------------------------------------------- table, checkpoints


def tiny_module(num=6, **config) -> SSLRModule:
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    backbone = ReIDBackbone(body, 4, name="tiny", mean=(0.5,) * 3, std=(0.5,) * 3)
    cfg = {"schedule": {"stage0_epochs": 1, "epochs_per_iteration": 1}, "soft": {"k": 2}, **config}
    return SSLRModule(backbone, torch.tensor([0, 0, 1, 1, 2, 2][:num]), max_epochs=3, config=cfg)


def test_table_update_rule():
    module = tiny_module(embed_dim=2)
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [0.0, -1.0], [-1.0, 0.0]])
    module.table.features.copy_(table)
    module.write_table(torch.tensor([2, 3]), torch.tensor([[0.0, 2.0], [0.6, 0.8]]))  # written features normalised
    h = 1 / math.sqrt(2)
    assert module.table.features[2].tolist() == pytest.approx([h, h], abs=1e-6)  # normalise(V/2 + v/2)
    assert module.table.features[3].tolist() == pytest.approx([0.6, 0.8], abs=1e-6)
    untouched = [0, 1, 4, 5]
    assert torch.equal(module.table.features[untouched], table[untouched])


def test_checkpoint_round_trip_of_table_and_iteration_state():
    a = tiny_module()
    a.table.features.copy_(F.normalize(torch.randn(6, 4), dim=1))
    a.table.initialised.fill_(True)
    a.reliable = torch.tensor([[1, 2], [0, 3], [3, 0], [2, 5], [5, 1], [4, 0]])
    a.reliable_iteration = 2
    a.history = [{"epoch": 3, "rank1": 10.0, "iteration": 2}]
    ckpt = {"state_dict": a.state_dict()}
    a.on_save_checkpoint(ckpt)
    b = tiny_module()
    b.load_state_dict(ckpt["state_dict"])
    b.on_load_checkpoint(ckpt)
    assert torch.equal(b.table.features, a.table.features) and bool(b.table.initialised)
    assert torch.equal(b.reliable, a.reliable) and b.reliable_iteration == 2
    assert b.history == a.history
    assert "sslr/reliable_cross_camera" in b._reliable_stats


# ------------------------------------------------------------------------------------------ end to end


def test_tiny_run_logs_every_iteration(data_root, tmp_path):
    """Stage 0 (1 epoch) + 2 iterations of 1 epoch; Lightning never validates (eval_every > max_epochs), so
    every metrics entry comes from the per-iteration evaluation."""
    cfg = compose_cfg(data_root, "experiment=sslr/sslr", "max_epochs=3", "eval_every=100", "data.batch_size=16",
                      "method.schedule.stage0_epochs=1", "method.schedule.epochs_per_iteration=1",
                      "eval_initial=false")  # no epoch-0 entry: every entry is an iteration end
    record = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["row"] == "sslr" and saved["artefact"] == "sslr"
    entries = saved["per_epoch"]
    assert [(e["epoch"], e["iteration"], e["iteration_end"]) for e in entries] == [
        (1, 0, True), (2, 1, True), (3, 2, True)]
    assert "reliable_precision" not in entries[0]
    assert all(0.0 <= e["reliable_precision"] <= 1.0 for e in entries[1:])
    assert saved["final"]["rank1"] == entries[-1]["rank1"] == record["final"]["rank1"]
    assert saved["train_log"]["sslr/iteration"] == 2.0
    assert 0.0 <= saved["train_log"]["labels/pair_precision"] <= 1.0
    assert saved["train_log"]["lr/group1"] == pytest.approx(0.1 * cfg.optim.lr_new)  # iteration lr = 0.1 x base
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    state = ckpt["sslr"]
    n = saved["dataset_statistics"]["train"]["images"]
    assert state["reliable"].shape == (n, 4) and state["reliable_iteration"] == 2
    assert torch.allclose(ckpt["state_dict"]["table.features"].norm(dim=1), torch.ones(n), atol=1e-5)


def test_resume_mid_iteration_matches_an_uninterrupted_run(data_root, tmp_path):
    """Interrupt after the first epoch of a 2-epoch iteration: the resumed run must reuse the stored reliable
    sets (recomputing them from the later network would change the result)."""
    common = ("experiment=sslr/sslr", "max_epochs=3", "eval_every=1", "seed=2", "data.batch_size=16",
              "method.schedule.stage0_epochs=1", "method.schedule.epochs_per_iteration=2", "eval_initial=false")
    straight = run(compose_cfg(data_root, *common), tmp_path / "straight")
    first = run(compose_cfg(data_root, *common, "debug.stop_after_epochs=2"), tmp_path / "resumed")
    assert first == {"interrupted_after_epochs": 2}
    ckpt = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["sslr"]["reliable_iteration"] == 1
    resumed = run(compose_cfg(data_root, *common, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert resumed["final"] == pytest.approx(straight["final"], abs=1e-6)
    assert [e["epoch"] for e in resumed["per_epoch"]] == [1, 2, 3]
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(ckpt, weights_only=False)
    assert torch.allclose(a["state_dict"]["table.features"], b["state_dict"]["table.features"], atol=1e-6)
    assert torch.equal(a["sslr"]["reliable"], b["sslr"]["reliable"])


def test_float16_part_storage_in_a_tiny_run_gives_the_float32_reliable_sets(data_root, tmp_path, monkeypatch):
    """`method.similarity.part_dtype=float16` (the MSMT17-scale memory setting) reaches the training path: after
    the same stage 0, iteration 1's reliable sets match those of float32 storage (rounding may flip near-ties)."""
    import mprd.methods.sslr.module as sslr_module

    stored = []

    def recording(global_feats, part_feats, *args, **kwargs):
        stored.append(part_feats.dtype)
        return reliable_sets(global_feats, part_feats, *args, **kwargs)

    monkeypatch.setattr(sslr_module, "reliable_sets", recording)
    common = ("experiment=sslr/sslr", "max_epochs=2", "eval_every=100", "data.batch_size=16",
              "method.schedule.stage0_epochs=1", "method.schedule.epochs_per_iteration=1")
    sets = {}
    for dtype in ("float32", "float16"):
        run(compose_cfg(data_root, *common, f"method.similarity.part_dtype={dtype}"), tmp_path / dtype)
        assert stored.pop() == getattr(torch, dtype) and not stored
        ckpt = torch.load(tmp_path / dtype / "checkpoints" / "last.ckpt", weights_only=False)
        assert ckpt["sslr"]["reliable_iteration"] == 1
        sets[dtype] = ckpt["sslr"]["reliable"].sort(dim=1).values
    same = (sets["float16"] == sets["float32"]).all(dim=1).float().mean().item()
    assert same >= 0.9


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("cpu", {"sslr": (2, 2, 2), "sslr_baseline": (2, 2, 0)}),
     ("cpu_real", {"sslr": (2, 1, 2), "sslr_baseline": (2, 1, 0)}),
     ("paper_sslr", {"sslr": (25, 2, 20), "sslr_baseline": (25, 2, 0)})],
)
def test_sslr_rows_fit_each_preset_schedule(tmp_path, preset, expected):
    """The CPU presets shorten SSLR's schedule (`sslr_schedule`) so its rows fit max_epochs; the paper's stays."""
    for row, (stage0, per, iterations) in expected.items():
        cfg = compose_cfg(tmp_path, f"experiment=sslr/{row}", f"preset={preset}")
        given = cfg.method.schedule
        schedule = Schedule.resolve(ScheduleConfig(stage0_epochs=given.stage0_epochs,
                                                   epochs_per_iteration=given.epochs_per_iteration,
                                                   iterations=given.iterations), int(cfg.max_epochs))
        assert (schedule.stage0, schedule.per_iteration, schedule.iterations) == (stage0, per, iterations), row
