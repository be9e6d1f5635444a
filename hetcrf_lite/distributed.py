"""Beyond one process: data-parallel HetCRF training.

(Whether a full-batch step fits in memory at all is :mod:`hetcrf_lite.memory`.)

:func:`train_ddp` trains one :class:`~hetcrf_lite.model.HetCRF` per process with
:class:`torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on GPU): every rank starts
from the same parameters, and the gradients are averaged across ranks before every Adam step, so the
ranks stay identical. With ``batch_size = B`` the run trains on subgraph mini-batches
(:class:`~hetcrf_lite.minibatch.MiniBatchTrainer`): an epoch's seed order is shared, each rank takes
its own ``B`` seeds of every step and samples its own fan-out, masks and dropped edges (its own
seed), so a step sees ``W * B`` seeds on ``W`` ranks and an epoch takes ``ceil(N / (W * B))`` steps.
Without ``batch_size`` every rank runs the full-batch step on its own corruptions.


Launch on one machine with ``torchrun`` (or ``--nproc`` without it)::

    torchrun --nproc_per_node=2 -m hetcrf_lite.distributed --dataset synthetic \\
        --batch-size 256 --epochs 5
    python -m hetcrf_lite.distributed --nproc 2 --dataset synthetic --batch-size 256

and on two machines (run on each, ``--node_rank`` 0 and 1; the address is node 0's)::

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=1 --master_addr=10.0.0.1 \\
        --master_port=29500 -m hetcrf_lite.distributed --dataset acm --batch-size 1024

What data parallelism buys here: each rank holds the whole graph (it samples from it), but a
step runs on the rank's own subgraph, so ``W`` ranks finish an epoch in ``1 / W`` of the steps.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import os
import socket
import sys
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .config import HetCRFConfig, default_config
from .data import HINDataset
from .errors import ConfigError
from .minibatch import MiniBatchTrainer
from .model import HetCRF
from .trainer import Trainer
from .utils import load_named_dataset, resolve_device, seed_everything

__all__ = ["StepModule", "DistributedHetCRF", "init_distributed", "build_rank_model", "train_ddp",
           "spawn_local", "free_port", "main"]


# ------------------------------------------------------------------------------------------
# Data-parallel training
# ------------------------------------------------------------------------------------------
class StepModule(nn.Module):
    """``forward(epoch, graph)`` runs ``model.training_step(epoch, graph)``.

    DistributedDataParallel all-reduces the gradients of what its ``forward`` returned; HetCRF's
    loss comes from ``training_step``, so this thin module makes it the forward.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, epoch: int, graph: Any = None) -> tuple[Tensor, dict[str, float]]:
        return self.model.training_step(epoch, graph)


class DistributedHetCRF(nn.Module):
    r"""A :class:`~hetcrf_lite.model.HetCRF` under DistributedDataParallel, shaped for
    :class:`~hetcrf_lite.trainer.Trainer`.

    ``training_step`` returns a loss whose *gradient* is the rank's own (DDP averages it over
    ranks during ``backward``) and whose *value*, like the logged parts, is the mean over ranks:

    .. math::
        \ell_{\mathrm{returned}} = \ell_r + \mathrm{sg}\Big(\frac{1}{W}\sum_{r'} \ell_{r'}
        - \ell_r\Big)

    (:math:`\mathrm{sg}` = stop-gradient), so every rank takes the same early-stopping decision
    and keeps the same best epoch. ``state_dict`` is the wrapped model's, so a checkpoint of a
    distributed run loads into a single-process HetCRF.

    Args:
        model (torch.nn.Module): the HetCRF of this rank, already on its device.
        device_ids (list[int], optional): the rank's GPU, for NCCL; ``None`` on CPU.
            (default: ``None``)
        find_unused_parameters (bool, optional): let DDP skip parameters a step does not use
            (costs a graph traversal per step; HetCRF's steps use every parameter).
            (default: ``False``)
    """

    def __init__(self, model: nn.Module, device_ids: list[int] | None = None,
                 find_unused_parameters: bool = False) -> None:
        super().__init__()
        if not dist.is_initialized():
            raise ConfigError("DistributedHetCRF needs an initialised process group: call "
                              "init_distributed(rank, world_size) (or use train_ddp) first")
        # The buffers are the schema view's relation edges, identical on every rank: never
        # broadcast before a forward (that would copy them every step). torch 2.13 renamed the
        # switch and deprecated the old name.
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                   inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})
        self.ddp = DistributedDataParallel(StepModule(model), device_ids=device_ids,
                                           find_unused_parameters=find_unused_parameters,
                                           **no_sync)
        self.world_size = dist.get_world_size()

    @property
    def hetcrf(self) -> nn.Module:
        """The wrapped model."""
        return self.ddp.module.model

    def training_step(self, epoch: int, graph: Any = None) -> tuple[Tensor, dict[str, float]]:
        """The wrapped model's step on ``graph`` (its full graph when ``None``; a
        :meth:`~hetcrf_lite.model.HetCRF.subgraph` in mini-batch training), averaged as above."""
        loss, parts = self.ddp(epoch, graph)
        keys = sorted(parts)
        stats = torch.tensor([float(loss.detach())] + [parts[k] for k in keys],
                             dtype=torch.float64, device=loss.device)
        dist.all_reduce(stats)  # sum over ranks
        stats /= self.world_size
        mean = stats[0].to(loss.dtype)
        return loss + (mean - loss).detach(), {k: float(v) for k, v in zip(keys, stats[1:])}

    # The rest of what Trainer asks for, from the wrapped model.
    def on_epoch_start(self, epoch: int) -> bool:
        return self.hetcrf.on_epoch_start(epoch)

    def gradient_balance_summary(self) -> dict[str, float]:
        return self.hetcrf.gradient_balance_summary()

    def refresh_log(self) -> list[dict[str, Any]]:
        return self.hetcrf.refresh_log()

    def extra_state(self) -> dict[str, Any]:
        return self.hetcrf.extra_state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.hetcrf.load_extra_state(state)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.hetcrf.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        return self.hetcrf.load_state_dict(state_dict, strict=strict, assign=assign)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a local process group)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed(rank: int, world_size: int, init_method: str | None = None,
                     backend: str | None = None, device: str = "auto") -> torch.device:
    """Join the process group (unless this process already has) and pick this rank's device.

    Args:
        rank (int): this process's rank, ``0 <= rank < world_size``.
        world_size (int): number of processes.
        init_method (str, optional): ``"tcp://127.0.0.1:PORT"``, ``"file://..."`` or
            ``"env://"`` (``MASTER_ADDR`` / ``MASTER_PORT``, as ``torchrun`` sets them); ``None``
            means ``"env://"``. (default: ``None``)
        backend (str, optional): ``"gloo"`` or ``"nccl"``; ``None`` picks NCCL when the device
            is a GPU, else gloo. (default: ``None``)
        device (str, optional): ``"auto"``, ``"cpu"`` or ``"cuda"``; on CUDA the rank uses GPU
            ``LOCAL_RANK`` (or ``rank`` modulo the GPU count). (default: ``"auto"``)

    Returns:
        The rank's device.
    """
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank} must lie in [0, world_size={world_size})")
    dev = resolve_device(device)
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
        torch.cuda.set_device(local)  # HetCRF's tensors go to the current GPU
        dev = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"),
                                init_method=init_method or "env://", rank=rank,
                                world_size=world_size)
    return dev


def build_rank_model(dataset: HINDataset, config: HetCRFConfig, rank: int) -> nn.Module:
    """A HetCRF with the parameters of ``config.seed`` on every rank, and rank-specific
    randomness afterwards: the model's generator (anchors, masks, dropped edges, neighbour
    samples) and torch's global generator (dropout) are reseeded with ``config.seed + rank``.
    K-means keeps ``config.seed``, so cluster positives agree across ranks."""
    seed_everything(config.seed)
    model = HetCRF(dataset, config)
    model.generator.manual_seed(config.seed + rank)
    torch.manual_seed(config.seed + rank)
    return model


def train_ddp(rank: int, world_size: int, config: HetCRFConfig,
              dataset_fn: Callable[[], HINDataset], init_method: str | None = None,
              backend: str | None = None, out_dir: str | os.PathLike | None = None,
              progress: bool = False, find_unused_parameters: bool = False
              ) -> tuple[nn.Module, dict[str, Any]]:
    """Train HetCRF data-parallel; call once in every process (``rank`` 0 to ``world_size-1``).

    Joins the process group (or reuses the one this process has), builds the dataset with
    ``dataset_fn`` (every rank its own identical copy), builds the model
    (:func:`build_rank_model`), wraps it (:class:`DistributedHetCRF`) and runs
    trainer: :class:`~hetcrf_lite.minibatch.MiniBatchTrainer` on subgraph mini-batches when
    ``config.batch_size`` is set, :class:`~hetcrf_lite.trainer.Trainer` (full batch) otherwise;
    Adam, early stopping on the loss averaged over ranks.
    Rank 0 alone writes ``out_dir`` and shows progress. A process group created here is
    destroyed on return.

    Args:
        rank (int): this process's rank.
        world_size (int): number of processes.
        config (HetCRFConfig): the run's settings; ``batch_size`` seeds per rank and step.
        dataset_fn (callable): returns the :class:`HINDataset` (picklable for ``spawn``).
        init_method (str, optional): see :func:`init_distributed`. (default: ``None``)
        backend (str, optional): see :func:`init_distributed`. (default: ``None``)
        out_dir (str, optional): run folder (checkpoint, history) on rank 0. (default: ``None``)
        progress (bool, optional): tqdm bar on rank 0. (default: ``False``)
        find_unused_parameters (bool, optional): see :class:`DistributedHetCRF`.
            (default: ``False``)

    Returns:
        ``(model, history)``: this rank's HetCRF, holding the best epoch's parameters (the same
        on every rank), and the trainer's history.
    """
    owns_group = not dist.is_initialized()
    dev = init_distributed(rank, world_size, init_method, backend, config.device)
    try:
        dataset = dataset_fn()
        model = build_rank_model(dataset, config, rank)
        wrapped = DistributedHetCRF(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                    find_unused_parameters=find_unused_parameters)
        rank_out, rank_progress = out_dir if rank == 0 else None, progress and rank == 0
        if config.batch_size is not None:
            trainer = MiniBatchTrainer(wrapped, config, dataset, out_dir=rank_out,
                                       progress=rank_progress, rank=rank, world_size=world_size)
        else:
            trainer = Trainer(wrapped, config, out_dir=rank_out, progress=rank_progress)
        history = trainer.fit()
        history["world_size"] = world_size
        return model, history
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _spawned(rank: int, world_size: int, port: int, config: HetCRFConfig,
             dataset_fn: Callable[[], HINDataset], out_dir: str | None, progress: bool) -> None:
    _, history = train_ddp(rank, world_size, config, dataset_fn,
                           init_method=f"tcp://127.0.0.1:{port}", out_dir=out_dir,
                           progress=progress)
    if rank == 0:
        _print_summary(history)


def spawn_local(world_size: int, config: HetCRFConfig, dataset_fn: Callable[[], HINDataset],
                out_dir: str | None = None, progress: bool = False) -> None:
    """Run :func:`train_ddp` in ``world_size`` local processes on a free 127.0.0.1 port
    (``torch.multiprocessing.spawn``); rank 0 prints a summary."""
    mp.spawn(_spawned, args=(world_size, free_port(), config, dataset_fn, out_dir, progress),
             nprocs=world_size, join=True)


def _print_summary(history: dict[str, Any]) -> None:
    epochs = history["epochs"]
    seconds = sorted(e["seconds"] for e in epochs)
    print(f"world size {history.get('world_size')}: {len(epochs)} epochs, {history['stopped']}; "
          f"best loss {history.get('best_loss', float('nan')):.4f} at epoch "
          f"{history.get('best_epoch')}; median {seconds[len(seconds) // 2]:.3f} s per epoch "
          "(rank 0)", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m hetcrf_lite.distributed``: under ``torchrun`` (``RANK`` set) every process
    trains one rank; without it ``--nproc`` local processes are spawned."""
    p = argparse.ArgumentParser(prog="python -m hetcrf_lite.distributed",
                                description="Data-parallel HetCRF training (DDP).")
    p.add_argument("--dataset", default="synthetic",
                   help="acm | dblp | aminer | freebase | synthetic (default: synthetic)")
    p.add_argument("--config", help="a config YAML instead of the dataset's shipped one")
    p.add_argument("--batch-size", type=int,
                   help="seeds per rank and step: trains on subgraph mini-batches")
    p.add_argument("--fanout", type=int, nargs="+",
                   help="meta-path neighbours drawn per seed, meta-path and hop (default: the "
                        "config's)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--num-nodes", type=int, help="target nodes of the synthetic graph")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes to spawn when not launched by torchrun (default: 1)")
    p.add_argument("--out", help="run folder, written by rank 0")
    p.add_argument("--progress", action="store_true", help="tqdm bar on rank 0")
    args = p.parse_args(argv)

    config = HetCRFConfig.load(args.config) if args.config else default_config(args.dataset)
    changes = {k: v for k, v in (("batch_size", args.batch_size), ("epochs", args.epochs),
                                  ("fanout", args.fanout),
                                  ("seed", args.seed), ("device", args.device)) if v is not None}
    config = config.replace(**changes) if changes else config
    dataset_fn = functools.partial(load_named_dataset, args.dataset, args.num_nodes, 0,
                                   config.pos_num, config.pos_score)
    start = time.perf_counter()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        _, history = train_ddp(rank, world, config, dataset_fn, init_method="env://",
                               out_dir=args.out, progress=args.progress)
        if rank == 0:
            _print_summary(history)
    else:
        if args.nproc < 1:
            raise ConfigError(f"--nproc={args.nproc} must be >= 1")
        spawn_local(args.nproc, config, dataset_fn, args.out, args.progress)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"total {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
