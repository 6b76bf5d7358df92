"""DDP on CPU: 2 gloo processes on the `tiny` synthetic set, through the real command line (`trainer=ddp_cpu`).

The slow tests read the per-rank records of `mprd.ddp.DDPProbe` (`+debug.ddp_probe=<folder>`, one file per rank
and epoch) and check what must hold: memory replicas, parameters, positive sets (SSLR: reliable sets) and the
GCN identical on both ranks after every epoch; the epoch refreshes run on rank 0 only; the ranks' batches are
exactly the halves of the one-process global batches; the evaluations are the same on both ranks. The fast
tests check the sampler, the evaluation gather's de-duplication and the refusals without processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mprd.core.memory import FeatureMemory
from mprd.core.reid_module import _ordered
from mprd.data.samplers import EpochShuffle, GlobalBatchShard, per_rank_batch
from mprd.ddp import replicated_buffer_names

REPO = Path(__file__).resolve().parents[1]
COMMON = ("dataset.synthetic.preset=tiny", "logger.wandb.enabled=false", "trainer.enable_progress_bar=false",
          "trainer.enable_model_summary=false", "data.test_batch_size=64", "eval_every=1")
# deterministic inputs: no random augmentation and no CamStyle draw, so a DDP run and a one-process run see
# the same pixels and only the batch-norm statistics and float summation order can differ
NO_AUG = ("data.augment.pad=0", "data.augment.rotation=0", "data.augment.jitter=[0,0,0,0]",
          "data.augment.erasing_p=0", "data.augment.flip_p=0", "data.camstyle=false")


# ------------------------------------------------------------------------------------------ fast tests
def test_global_batch_shards_are_the_halves_of_the_one_process_batches():
    base = EpochShuffle(37, seed=3)
    shards = [GlobalBatchShard(EpochShuffle(37, seed=3), per_rank=4, rank=r, world_size=2) for r in (0, 1)]
    for epoch in (0, 1, 5):
        base.set_epoch(epoch)
        order = list(base)
        for s in shards:
            s.set_epoch(epoch)
        mine = [list(s) for s in shards]
        assert [len(m) for m in mine] == [len(s) for s in shards] == [16, 16]  # 4 whole global batches of 8
        for b in range(4):
            assert mine[0][4 * b:4 * b + 4] == order[8 * b:8 * b + 4]
            assert mine[1][4 * b:4 * b + 4] == order[8 * b + 4:8 * b + 8]
        assert not set(mine[0]) & set(mine[1]) and set(mine[0]) | set(mine[1]) == set(order[:32])
    base.set_epoch(0)
    assert list(base) != order  # epochs differ (the shards follow them)


def test_global_batch_shard_leaves_the_random_stream_rank_specific_and_reproducible():
    draws = {}
    for rank in (0, 1):
        for attempt in (0, 1):
            torch.manual_seed(11)  # every rank reseeds alike at the epoch start
            list(GlobalBatchShard(EpochShuffle(8, seed=0), per_rank=2, rank=rank, world_size=2))
            draws[rank, attempt] = torch.rand(3)
    assert torch.equal(draws[0, 0], draws[0, 1]) and torch.equal(draws[1, 0], draws[1, 1])
    assert not torch.equal(draws[0, 0], draws[1, 0])


def test_bad_shard_arguments_and_uneven_global_batch_are_refused():
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        GlobalBatchShard(EpochShuffle(8, seed=0), per_rank=2, rank=2, world_size=2)
    assert per_rank_batch(32, 4) == 8
    with pytest.raises(ValueError, match=r"data.batch_size=30 is the global batch .* 4 DDP processes"):
        per_rank_batch(30, 4)


def test_gathered_evaluation_rows_keep_each_index_once_in_record_order():
    # rank 0 holds items 0, 2, 4; rank 1 holds 1, 3 and the padding repeat of 0 (DistributedSampler)
    rows = torch.tensor([[0, 1.0], [2, 3.0], [4, 5.0], [1, 2.0], [3, 4.0], [0, 1.0]])
    assert _ordered(rows).flatten().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_only_feature_memories_are_exempt_from_the_buffer_broadcast():
    module = torch.nn.Module()
    module.memory = FeatureMemory(4, 3)
    module.bn = torch.nn.BatchNorm1d(3)
    assert replicated_buffer_names(module) == {"memory.features", "memory.initialised"}


def _trainer_cfg(family: str, batch_size: int = 32, precision: str = "32-true"):
    from omegaconf import OmegaConf

    return OmegaConf.create({"method": {"family": family}, "data": {"batch_size": batch_size},
                             "trainer": {"precision": precision, "accelerator": "cpu"}})


def test_uga_under_ddp_is_refused_with_what_to_use_instead():
    from mprd.settings import SettingsError
    from mprd.train import check_trainer

    check_trainer(_trainer_cfg("uga"), world_size=1)
    with pytest.raises(SettingsError, match=r"method.family=uga with 2 processes .* use trainer.devices=1"):
        check_trainer(_trainer_cfg("uga"), world_size=2)
    check_trainer(_trainer_cfg("memory"), world_size=2)
    with pytest.raises(SettingsError, match=r"data.batch_size=30: the global batch must split evenly over the 4"):
        check_trainer(_trainer_cfg("memory", batch_size=30), world_size=4)
    cpu_sync = _trainer_cfg("memory")
    cpu_sync.trainer.sync_batchnorm = True
    with pytest.raises(
        SettingsError, match=r"trainer.sync_batchnorm=true with trainer.accelerator=cpu: .* trainer=ddp_cpu"
    ):
        check_trainer(cpu_sync, world_size=2)
    check_trainer(cpu_sync, world_size=1)


def test_uga_module_refuses_ddp_at_fit_start_too():
    from mprd.methods.uga.module import UGAModule

    fake = SimpleNamespace(world_size=2)
    with pytest.raises(ValueError, match="trainer.devices=1"):
        UGAModule.on_fit_start(SimpleNamespace(trainer=fake))


# ------------------------------------------------------------------------------------------ slow tests
def _train(out: Path, data_root: Path, *overrides: str) -> dict:
    args = [sys.executable, "-m", "mprd.train", f"paths.root_dir={data_root}", f"hydra.run.dir={out}", *COMMON,
            *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "metrics.json").read_text())


def _records(folder: Path, epochs: int) -> list[tuple[dict, dict]]:
    load = lambda r, e: torch.load(folder / f"rank{r}-epoch{e}.pt", weights_only=False)  # noqa: E731
    return [(load(0, e), load(1, e)) for e in range(epochs)]


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if isinstance(a[key], dict):
            _assert_same_tensors(a[key], b[key], f"{what}.{key}")
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{what}.{key} differs between the ranks"
        else:
            assert a[key] == b[key], f"{what}.{key} differs between the ranks"


# one row per method family: (overrides, epochs, epochs whose start refreshes the labels on rank 0)
FAMILIES = {
    "knn": (("method=knn",), 2, [0, 1]),  # the CNN rows of Table 1 (KNN, SS, MPLP*, Super, Single)
    "mprd": (("method=mprd",), 2, [0, 1]),  # + the GCN phase of Algorithm 1 on rank 0
    "mlcr": (("method=mlcr", "method.labels.start_epoch=1"), 2, [1]),  # + per-batch MPLP on every rank
    "sslr": (("experiment=sslr/sslr", "method.schedule.stage0_epochs=1", "method.schedule.epochs_per_iteration=1"),
             2, []),  # reliable sets (not a generator) at iteration starts
}


@pytest.mark.slow
@pytest.mark.parametrize("row", list(FAMILIES))
def test_ddp_ranks_hold_identical_replicas_after_every_epoch(data_root, tmp_path, row):
    overrides, epochs, refresh_epochs = FAMILIES[row]
    probe = tmp_path / "probe"
    record = _train(tmp_path / "run", data_root, *overrides, f"max_epochs={epochs}", "seed=2", "data.batch_size=16",
                    "trainer=ddp_cpu", f"+debug.ddp_probe={probe}")
    for epoch, (a, b) in enumerate(_records(probe, epochs)):
        assert (a["rank"], b["rank"], a["world_size"]) == (0, 1, 2)
        _assert_same_tensors(a["memories"], b["memories"], f"epoch {epoch} memory")
        assert a["memories"], "the probe found no memory"
        _assert_same_tensors(a["parameters"], b["parameters"], f"epoch {epoch} parameters")
        for key in ("positives", "reliable", "generator"):
            assert (key in a) == (key in b)
            if key in a:
                _assert_same_tensors({key: a[key]}, {key: b[key]}, f"epoch {epoch}")
        if row == "mprd":  # the GCN trained on rank 0 reached rank 1 (parameters and optimiser)
            assert any(k.startswith("net.") for k in a["generator"]["gcn"])
        assert a["refreshes"] == [e for e in refresh_epochs if e <= epoch] and b["refreshes"] == []
        assert a["history"] == b["history"] and [h["epoch"] for h in a["history"]] == list(range(epoch + 2))
        # per-rank batches: rank r holds half r of every global batch of 16 of the one-process order
        num_train = len(next(v for k, v in a["memories"].items() if k.endswith("features")))
        shuffle = EpochShuffle(num_train, seed=2)
        shuffle.set_epoch(epoch)
        order = list(shuffle)
        assert len(a["batches"]) == len(b["batches"]) == len(order) // 16 >= 3
        for k, (ba, bb) in enumerate(zip(a["batches"], b["batches"], strict=True)):
            assert ba == order[16 * k:16 * k + 8] and bb == order[16 * k + 8:16 * k + 16]
    # rank 0's records: the final evaluation is the one both ranks computed
    assert record["final"] == pytest.approx({k: v for k, v in a["history"][-1].items() if k != "epoch"})


# DDP (2 processes x 8) against one process with the same global batch of 16, inputs deterministic (NO_AUG), head
# BN on global-batch statistics (GatheredBatchNorm, conf/trainer/ddp_cpu.yaml). The math of a step is the same
# (test_one_ddp_step_...: 5e-16 in float64); what differs is float32 round-off: oneDNN picks other convolution
# kernels for 8 images than for 16, which moves Lite0's first gradient by ~2e-4 (relative). Discrete decisions
# (the kNN label refresh, the hard-negative top-r) then amplify it from epoch to epoch, so one epoch is compared.
# Measured on this machine (seed 3, epoch 1): knn |dmAP| 0.26, |dRank-10| 5.9 (2 of 34 queries), memory cosine
# >= 0.9998, parameters 1.1e-3; mprd |dmAP| 0.006, Rank-k equal, memory cosine >= 0.99999, parameters 1.1e-4.
# Per-rank BN (trainer.plugins=null) instead: knn |dRank-1| 11.8 and memory cosine down to 0.77 after one epoch.
MATCH_ROWS = {"knn": ("method=knn",), "mprd": ("method=mprd",)}
RANK_TOL, MAP_TOL = 6.0, 1.0  # points: Rank-1/5/10 (2 of the 34 tiny queries), mAP and mINP
MEMORY_COS, PARAM_REL = 0.999, 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("row", list(MATCH_ROWS))
def test_ddp_epoch_equals_one_process_with_the_same_global_batch(data_root, tmp_path, row):
    common = (*MATCH_ROWS[row], *NO_AUG, "max_epochs=1", "seed=3", "data.batch_size=16")
    single = _train(tmp_path / "single", data_root, *common, f"+debug.ddp_probe={tmp_path / 'p1'}")
    ddp = _train(tmp_path / "ddp", data_root, *common, "trainer=ddp_cpu", f"+debug.ddp_probe={tmp_path / 'p2'}")
    assert ddp["initial"] == single["initial"]  # the untrained network: the gathered evaluation is exact
    one = torch.load(tmp_path / "p1" / "rank0-epoch0.pt", weights_only=False)
    (r0, r1), = _records(tmp_path / "p2", 1)
    assert one["batches"] == [x + y for x, y in zip(r0["batches"], r1["batches"], strict=True)]  # same global batches
    gaps = {k: abs(ddp["final"][k] - single["final"][k]) for k in single["final"]}
    cos = (one["memories"]["memory.features"] * r0["memories"]["memory.features"]).sum(1)
    rel = max(float((one["parameters"][n] - r0["parameters"][n]).norm() / one["parameters"][n].norm().clamp(min=1e-12))
              for n in one["parameters"])
    print(f"\n{row}: |DDP - one process| after 1 epoch: {gaps}; memory cosine min {cos.min():.6f}; "
          f"parameters max relative {rel:.1e}")
    assert all(gaps[k] <= RANK_TOL for k in ("rank1", "rank5", "rank10")), gaps
    assert gaps["mAP"] <= MAP_TOL and gaps["mINP"] <= MAP_TOL, gaps
    assert cos.min() >= MEMORY_COS and rel <= PARAM_REL


@pytest.mark.parametrize("env,main", [
    ({}, True), ({"LOCAL_RANK": "1"}, False), ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
    ({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}, True), ({"SLURM_NTASKS": "8", "SLURM_PROCID": "5"}, False),
    ({"SLURM_NTASKS": "1", "SLURM_PROCID": "3"}, True),  # one task (e.g. a single-GPU job array element)
])
def test_only_the_first_process_of_a_ddp_run_owns_the_run_folder(monkeypatch, env, main):
    from mprd.runfolder import is_main_process

    for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_main_process() is main


# ------------------------------------------------------------------- one step, DDP against one process
def _step_model(dtype: torch.dtype):
    from mprd.core.backbone import ReIDBackbone

    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 32, 3, stride=2))
    return ReIDBackbone(body, 32, name="step", mean=(0.5,) * 3, std=(0.5,) * 3).to(dtype).train()


def _step_loss(net, x, index, memory, positives):
    """One training step's loss as the CNN module computes it: features, memory write (all slots of the global
    batch, gathered under DDP), then the BD loss against the written memory."""
    import torch.nn.functional as F

    from mprd.methods.mprd.losses import binomial_deviance_loss

    feats = F.normalize(net(x), dim=1)
    all_index, all_feats = index, feats.detach()
    if torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        parts_i = [torch.empty_like(index) for _ in range(world)]
        parts_f = [torch.empty_like(all_feats) for _ in range(world)]
        torch.distributed.all_gather(parts_i, index)
        torch.distributed.all_gather(parts_f, all_feats)
        all_index, all_feats = torch.cat(parts_i), torch.cat(parts_f)
    memory.update(all_index, all_feats, gamma=0.7)
    loss, _ = binomial_deviance_loss(feats, memory.features, index, positives, neg_ratio=0.1)
    return loss


def _step_inputs(dtype: torch.dtype):
    from mprd.core.memory import FeatureMemory
    from mprd.core.positive_sets import PositiveSets

    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 12, 6, generator=g).to(dtype)
    index = torch.randperm(40, generator=g)[:8]
    memory = FeatureMemory(40, 32).to(dtype)
    memory.initialise(torch.randn(40, 32, generator=g).to(dtype))
    return x, index, memory, PositiveSets.from_labels(torch.arange(40) // 3)


def _ddp_step_worker(rank: int, port: int, dtype: torch.dtype, out: str) -> None:
    from mprd.ddp import GatheredBatchNorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        net = GatheredBatchNorm().apply(_step_model(dtype))
        ddp = torch.nn.parallel.DistributedDataParallel(net, forward_sync_buffers=False)
        x, index, memory, positives = _step_inputs(dtype)
        mine = slice(4 * rank, 4 * rank + 4)
        _step_loss(ddp, x[mine], index[mine], memory, positives).backward()
        torch.save({"grads": {n: p.grad for n, p in net.named_parameters()}, "memory": memory.features,
                    "buffers": dict(net.named_buffers())}, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
def test_one_ddp_step_equals_one_process_step_with_the_global_batch(tmp_path, dtype, tol):
    """2 gloo processes x 4 images against one process with the 8: the same gradients (head and body BN on
    global-batch statistics via GatheredBatchNorm), memory and BN running statistics. In float64 the difference
    is round-off (1e-12); in float32 it is float summation order (stated bound 1e-4 relative, measured ~1e-6)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_step_worker, args=(_free_port(), dtype, str(tmp_path)), nprocs=2)
    net = _step_model(dtype)
    x, index, memory, positives = _step_inputs(dtype)
    _step_loss(net, x, index, memory, positives).backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        # relative to the whole gradient's norm: a conv bias before a BN has a zero gradient (round-off only)
        scale = torch.cat([p.grad.flatten() for p in net.parameters()]).norm()
        worst = max(float((got["grads"][n] - p.grad).norm() / scale) for n, p in net.named_parameters())
        print(f"\n{dtype} rank {rank}: largest gradient difference / gradient norm = {worst:.1e}")
        assert worst <= tol
        assert torch.allclose(got["memory"], memory.features, atol=tol, rtol=0)
        for name, b in net.named_buffers():
            assert torch.allclose(got["buffers"][name].to(b.dtype), b, atol=tol * 10, rtol=0), name


@pytest.mark.parametrize("trainer,expected", [
    ({"devices": 1}, 1), ({"devices": 2, "num_nodes": 2}, 4), ({"devices": [0, 3]}, 2), ({"devices": "0,1,2"}, 3),
    ({"devices": "2"}, 2), ({"devices": "auto", "accelerator": "cpu"}, 1), ({"devices": -1, "accelerator": "cpu"}, 1),
])
def test_planned_world_size_counts_processes_as_lightning_does(trainer, expected):
    from omegaconf import OmegaConf

    from mprd.train import planned_world_size

    assert planned_world_size(OmegaConf.create(trainer)) == expected


@pytest.mark.slow
def test_uga_ddp_run_is_refused_before_anything_starts(data_root, tmp_path):
    args = [sys.executable, "-m", "mprd.train", f"paths.root_dir={data_root}", f"hydra.run.dir={tmp_path / 'run'}",
            *COMMON, "experiment=uga/uga", "data.batch_size=12", "trainer=ddp_cpu", "max_epochs=2"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "method.family=uga with 2 processes" in proc.stderr and "use trainer.devices=1" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_gathered_batchnorm_swaps_classes_keeps_state_and_is_plain_bn_on_one_process():
    from mprd.ddp import GatheredBatchNorm, GatheredBatchNorm1d, GatheredBatchNorm2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Flatten(1),
                              torch.nn.BatchNorm1d(4 * 9)).train()
    x = torch.randn(6, 3, 3, 3)
    plain = net(x).detach().clone()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    GatheredBatchNorm().apply(net)
    assert (type(net[1]), type(net[3])) == (GatheredBatchNorm2d, GatheredBatchNorm1d)
    net.load_state_dict(before)  # same keys: checkpoints load either way
    assert torch.allclose(net(x), plain, atol=1e-6)  # no process group: the plain layer
    GatheredBatchNorm().revert(net)
    assert (type(net[1]), type(net[3])) == (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)
