"""Full-batch memory refusal and data-parallel training (2 gloo processes on 127.0.0.1)."""
import functools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.distributed import (DistributedHetCRF, build_rank_model, free_port,
                                     init_distributed, train_ddp)
from hetcrf_lite.errors import ConfigError
from hetcrf_lite.memory import (available_memory_bytes, check_full_batch_fits,
                                full_batch_memory_estimate)
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.trainer import Trainer

NODES = 200


def cfg(**changes) -> HetCRFConfig:
    base = dict(dataset="synthetic", hidden_channels=16, heads=1, epochs=3, batch_size=32,
                cluster_every=2, grad_balance_every=0, lr=0.01, patience=100, device="cpu")
    base.update(changes)
    return HetCRFConfig(**base)


def tiny():
    return make_synthetic_hin(num_nodes=NODES, rates=(5, 10), seed=0)


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def flat_grads(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


# --------------------------------------------------------------------------- memory check
def test_estimate_is_quadratic_in_nodes_and_grows_with_edges_and_features():
    small, big = full_batch_memory_estimate(200_000), full_batch_memory_estimate(400_000)
    assert big / small == pytest.approx(4.0, rel=0.02)  # the N x N InfoNCE dominates
    assert full_batch_memory_estimate(20_000) > 20_000**2 * 4 * 5  # >= 5 N x N float32
    base = full_batch_memory_estimate(4019)
    assert full_batch_memory_estimate(4019, num_edges=4_396_066) > base
    assert full_batch_memory_estimate(4019, num_features=1902) > base
    with pytest.raises(ConfigError):
        full_batch_memory_estimate(-1)


def test_full_batch_refused_with_a_message_naming_batch_size():
    ds = tiny()
    need = check_full_batch_fits(ds, cfg(batch_size=None), budget_bytes=2**40)
    assert need == pytest.approx(full_batch_memory_estimate(
        NODES, sum(e.shape[1] for e in ds.metapath_adj.values()), ds.num_features, 16, 1))
    with pytest.raises(ConfigError, match="batch_size") as err:
        check_full_batch_fits(ds, cfg(batch_size=None), budget_bytes=need - 1)
    assert f"{NODES} target nodes" in str(err.value)
    # mini-batch mode never builds N x N: no refusal, whatever the budget
    assert check_full_batch_fits(ds, cfg(batch_size=32), budget_bytes=1) == 0
    # a batch as large as the graph is full batch
    with pytest.raises(ConfigError, match="batch_size"):
        check_full_batch_fits(ds, cfg(batch_size=NODES), budget_bytes=1)


def test_100k_nodes_full_batch_exceeds_a_64_gib_machine():
    # InfoNCE alone needs 5.1 * 1e10 floats (~190 GiB): no single big CPU box holds it
    assert full_batch_memory_estimate(100_000) > 64 * 2**30


def test_available_memory_is_positive_and_at_most_physical():
    import os

    avail = available_memory_bytes("cpu")
    assert 0 < avail <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# --------------------------------------------------------------------------- DDP
def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    init_distributed(rank, world_size, f"tcp://127.0.0.1:{port}", backend="gloo", device="cpu")
    config, ds = cfg(), tiny()
    res = {}
    # 1. One step: the DDP gradient is the mean of the ranks' local gradients.
    model = build_rank_model(ds, config, rank)
    res["initial"] = flat_params(model)
    wrapped = DistributedHetCRF(model)
    model.train()
    model.on_epoch_start(0)
    gen, rng = model.generator.get_state(), torch.get_rng_state()
    loss, _ = model.training_step(0)  # plain, no all-reduce
    loss.backward()
    local = flat_grads(model)
    model.zero_grad(set_to_none=True)
    model.generator.set_state(gen)
    torch.set_rng_state(rng)
    loss, _ = wrapped.training_step(0)
    loss.backward()
    gathered = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(gathered, local)
    res["local_grads"] = gathered
    res["ddp_grad"] = flat_grads(model)
    # 2. train_ddp reuses the group: a few Adam steps.
    trained, history = train_ddp(rank, world_size, config, tiny)
    res["final"] = flat_params(trained)
    res["losses"] = [e["loss"] for e in history["epochs"]]
    # 3. Controls without all-reduce: the rank's own model trained alone, and rank 0's model
    # trained alone on every rank (same seed: training itself is deterministic).
    alone = build_rank_model(ds, config, rank)
    Trainer(alone, config, progress=False).fit()
    res["alone"] = flat_params(alone)
    same = build_rank_model(ds, config, 0)
    Trainer(same, config, progress=False).fit()
    res["same_seed_alone"] = flat_params(same)
    torch.save(res, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_ranks_start_equal_and_sample_differently(ddp_results):
    r0, r1 = ddp_results
    assert torch.equal(r0["initial"], r1["initial"])
    g0, g1 = r0["local_grads"]
    assert not torch.allclose(g0, g1)  # different anchors/masks: the all-reduce has work to do


def test_ddp_gradient_is_the_mean_of_local_gradients(ddp_results):
    for r in ddp_results:
        g0, g1 = r["local_grads"]
        assert torch.allclose(r["ddp_grad"], (g0 + g1) / 2, rtol=1e-4, atol=1e-7)


def test_parameters_identical_across_ranks_after_training(ddp_results):
    r0, r1 = ddp_results
    assert torch.equal(r0["final"], r1["final"])
    assert not torch.allclose(r0["final"], r0["initial"])  # training moved them
    assert r0["losses"] == r1["losses"]  # the logged loss is the mean over ranks
    assert len(r0["losses"]) == 3


def test_without_all_reduce_ranks_drift_apart_and_with_it_they_do_not(ddp_results):
    r0, r1 = ddp_results
    # the same seed trained alone in two processes gives the same bits: a difference between
    # the ranks comes from their own samples, not from non-deterministic training
    assert torch.equal(r0["same_seed_alone"], r1["same_seed_alone"])
    assert torch.equal(r0["same_seed_alone"], r0["alone"])  # rank 0's own control
    assert not torch.allclose(r0["alone"], r1["alone"])  # each rank's samples alone: apart
    assert torch.equal(r0["final"], r1["final"])  # the all-reduce keeps them together
    assert not torch.equal(r0["final"], r0["alone"])  # and trains on both ranks' gradients


def test_wrapper_needs_a_process_group():
    if dist.is_initialized():
        pytest.skip("a process group exists in this process")
    with pytest.raises(ConfigError, match="init_distributed"):
        DistributedHetCRF(torch.nn.Linear(2, 2))


def test_rank_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="rank"):
        init_distributed(2, 2, "tcp://127.0.0.1:1", device="cpu")


def test_dataset_fn_is_picklable_for_spawn():
    import pickle

    from hetcrf_lite.utils import load_named_dataset

    fn = functools.partial(load_named_dataset, "synthetic", 400, 0)
    assert pickle.loads(pickle.dumps(fn))().num_nodes == 400
