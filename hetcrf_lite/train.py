"""Training loop: Adam, early stopping on the training loss, atomic checkpoints, resume, history.

The trainer knows nothing of the method: it asks the model for ``training_step(epoch)`` (a loss
and its named parts), calls ``on_epoch_start(epoch)`` (cluster refreshes) and, every
``grad_balance_every`` epochs, ``gradient_balance_summary()``. Everything the method does lives in
:mod:`hetcrf_lite.model`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import HetCRFConfig
from .errors import TrainingError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when a GPU is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(device)


def environment_info() -> dict[str, Any]:
    """Versions and machine, recorded with every result."""
    import sklearn
    import torch_geometric

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Atomic JSON write."""
    atomic_write_bytes(Path(path), lambda fh: fh.write(json.dumps(obj, indent=2).encode()))


class Trainer:
    r"""Fit a :class:`~hetcrf_lite.model.HetCRF` (or any model with the same three methods).

    Args:
        model (torch.nn.Module): exposes ``training_step(epoch) -> (loss, parts)``,
            ``on_epoch_start(epoch)``, ``gradient_balance_summary() -> dict`` and optional
            ``extra_state()`` / ``load_extra_state(state)`` for non-parameter state (positives).
        config (HetCRFConfig): lr, weight_decay, epochs, patience, min_epochs,
            grad_balance_every are read from it.
        out_dir (str, optional): run folder for ``checkpoint.pt`` and ``history.json``;
            ``None`` keeps everything in memory. (default: ``None``)
        progress (bool, optional): show a tqdm bar with the loss parts. (default: ``True``)
        checkpoint_every (int, optional): epochs between checkpoints. (default: ``10``)
        on_epoch_end (callable, optional): called as ``on_epoch_end(model, epoch, record)`` after
            each epoch's step, e.g. to probe the embeddings during training
            (``benchmarks/tune.py --curve-every``). It runs inside ``torch.random.fork_rng``, so
            a hook that draws random numbers leaves the training unchanged. (default: ``None``)
    """

    def __init__(self, model: torch.nn.Module, config: HetCRFConfig,
                 out_dir: str | os.PathLike | None = None, progress: bool = True,
                 checkpoint_every: int = 10,
                 on_epoch_end: Callable[[torch.nn.Module, int, dict[str, Any]], None] | None = None
                 ) -> None:
        self.model = model
        self.on_epoch_end = on_epoch_end
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.checkpoint_every = max(1, checkpoint_every)
        params = (model.param_groups(config.lr) if hasattr(model, "param_groups")
                  else model.parameters())
        self.optimizer = torch.optim.Adam(params, lr=config.lr,
                                          weight_decay=config.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, config.epochs)
                          if config.lr_schedule == "cosine" else None)
        self.history: dict[str, Any] = {"config": config.to_dict(), "env": environment_info(),
                                        "epochs": [], "stopped": None}
        self.start_epoch = 0
        self.best_loss = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self._best_state: dict[str, Any] | None = None
        self._rebaseline = False  # the objective changed (new positives): next loss is the new best

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoint.pt"

    # ---------------------------------------------------------------------------------------
    def save_checkpoint(self, epoch: int) -> None:
        """Atomically write model, optimiser, config, epoch, history and RNG state."""
        if self.checkpoint_path is None:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "config": self.config.to_dict(),
            "epoch": epoch,
            "history": self.history,
            "best": (self.best_loss, self.best_epoch, self.bad_epochs, self._best_state),
            "rebaseline": self._rebaseline,
            "rng": torch.get_rng_state(),
            "extra": self.model.extra_state() if hasattr(self.model, "extra_state") else None,
        }
        atomic_write_bytes(self.checkpoint_path, lambda fh: torch.save(state, fh))

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> int:
        """Restore a checkpoint; returns the epoch training resumes from."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None or not path.is_file():
            raise TrainingError(f"no checkpoint at {path}; train without --resume first")
        # Our own file, written by save_checkpoint: plain tensors and dicts.
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history = state["history"]
        self.best_loss, self.best_epoch, self.bad_epochs, self._best_state = state["best"]
        self._rebaseline = bool(state.get("rebaseline", False))
        torch.set_rng_state(state["rng"])
        if state.get("extra") is not None and hasattr(self.model, "load_extra_state"):
            self.model.load_extra_state(state["extra"])
        self.start_epoch = state["epoch"] + 1
        return self.start_epoch

    # ---------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until ``epochs`` or early stopping; return (and save) the history.

        The model ends with the parameters of its lowest-loss epoch, as HeCo and HGMAE do.
        A NaN or Inf loss raises :class:`TrainingError`; the checkpoint on disk stays the last
        good one. Ctrl-C saves a checkpoint and returns the history so far.
        """
        if resume:
            self.load_checkpoint()
        cfg = self.config
        bar = tqdm(range(self.start_epoch, cfg.epochs), disable=not self.progress,
                   desc="HetCRF", unit="epoch", initial=self.start_epoch, total=cfg.epochs)
        epoch = self.start_epoch - 1
        try:
            for epoch in bar:
                record = self._one_epoch(epoch)
                bar.set_postfix({k: f"{v:.3f}" for k, v in record["parts"].items()})
                if self.on_epoch_end is not None:
                    with torch.random.fork_rng():  # the hook must not shift training's draws
                        self.on_epoch_end(self.model, epoch, record)
                if self._early_stop(epoch, record["loss"]):
                    self.history["stopped"] = f"early stop at epoch {epoch} (patience {cfg.patience})"
                    break
                if (epoch + 1) % self.checkpoint_every == 0:
                    self.save_checkpoint(epoch)
            else:
                self.history["stopped"] = f"reached {cfg.epochs} epochs"
        except KeyboardInterrupt:
            self.history["stopped"] = f"interrupted at epoch {epoch}"
            self.save_checkpoint(epoch - 1 if epoch > self.start_epoch else epoch)
            bar.close()
            self._save_history()
            return self.history
        bar.close()
        self.save_checkpoint(epoch)
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self.history["best_epoch"] = self.best_epoch
        self.history["best_loss"] = self.best_loss
        self._save_history()
        return self.history

    def _one_epoch(self, epoch: int) -> dict[str, Any]:
        start = time.perf_counter()
        if self.model.on_epoch_start(epoch) and self.best_epoch >= 0:
            self._rebaseline = True
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = self.model.training_step(epoch)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {epoch} (parts: {parts}); the last good "
                f"checkpoint is kept at {self.checkpoint_path}. Lower lr or check the features "
                "for NaN/Inf.")
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        record: dict[str, Any] = {"epoch": epoch, "loss": float(loss.detach()), "parts": parts,
                                  "lr": self.optimizer.param_groups[0]["lr"]}
        if getattr(self.model, "diagnostics", None):  # beta, channel gradients: plain data
            record["diagnostics"] = dict(self.model.diagnostics)
        every = self.config.grad_balance_every
        if every and epoch % every == 0 and hasattr(self.model, "gradient_balance_summary"):
            record["gradient_balance"] = self.model.gradient_balance_summary()
        record["seconds"] = time.perf_counter() - start
        self.history["epochs"].append(record)
        return record

    def _early_stop(self, epoch: int, loss: float) -> bool:
        """Patience on the training loss, re-baselined whenever the objective changes.

        A cluster refresh changes the positive sets, so losses before and after it are not
        comparable (a refresh can raise the loss with no change in the model). The first epoch
        after a refresh becomes the new best; the count of epochs without improvement carries on.
        """
        if self._rebaseline:
            self._rebaseline = False
            self.best_loss, self.best_epoch = loss, epoch
            self._best_state = copy.deepcopy(self.model.state_dict())
            self.bad_epochs += 1
            return epoch + 1 >= self.config.min_epochs and self.bad_epochs >= self.config.patience
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self._best_state = copy.deepcopy(self.model.state_dict())
            return False
        self.bad_epochs += 1
        return epoch + 1 >= self.config.min_epochs and self.bad_epochs >= self.config.patience

    def _save_history(self) -> None:
        if hasattr(self.model, "refresh_log"):
            self.history["cluster_refreshes"] = self.model.refresh_log()
        if self.out_dir is not None:
            save_json(self.history, self.out_dir / "history.json")


def fit(dataset, config: HetCRFConfig, out_dir: str | os.PathLike | None = None,
        progress: bool = True, resume: bool = False,
        on_epoch_end: Callable[[torch.nn.Module, int, dict[str, Any]], None] | None = None):
    """Seed, build a :class:`~hetcrf_lite.model.HetCRF` on ``dataset`` and train it.

    Full batch when ``config.batch_size`` is ``None``; otherwise subgraph mini-batches
    (:func:`hetcrf_lite.minibatch.fit_minibatch`), which never build an ``N x N`` matrix.
    ``on_epoch_end`` goes to the trainer (see :class:`Trainer`).
    Returns ``(model, history)``; the model holds its lowest-loss parameters.
    """
    from .model import HetCRF

    if config.batch_size is not None:
        from .minibatch import fit_minibatch  # imports this module: import here, not at the top

        return fit_minibatch(dataset, config, out_dir=out_dir, progress=progress, resume=resume,
                             on_epoch_end=on_epoch_end)
    seed_everything(config.seed)
    model = HetCRF(dataset, config)
    trainer = Trainer(model, config, out_dir=out_dir, progress=progress,
                      on_epoch_end=on_epoch_end)
    history = trainer.fit(resume=resume)
    return model, history


def train_run(config: HetCRFConfig, out_dir: str | os.PathLike, resume: bool = False,
              progress: bool = True, eval_runs: int = 50) -> dict[str, Any]:
    """Everything ``hetcrf-lite train`` does: data, training, evaluation, run folder.

    The run folder receives ``embeddings.npy``, ``history.json``, ``config.yaml``,
    ``metrics.json`` (with config, seed and versions) and ``loss.png``.
    """
    from .cli import _load
    from .eval import evaluate_embeddings
    from .plot import plot_loss_curves

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.yaml")
    dataset = _load(config.dataset, config)  # the synthetic graph stays seed 0
    model, history = fit(dataset, config, out_dir=out, progress=progress, resume=resume)
    if config.batch_size is None:
        emb = model.embed().cpu().numpy()
    else:  # chunked inference: a graph trained in mini-batches may not fit a full-graph pass
        from .minibatch import embed_layerwise

        emb = embed_layerwise(model).cpu().numpy()
    atomic_write_bytes(out / "embeddings.npy", lambda fh: np.save(fh, emb))
    results = evaluate_embeddings(emb, dataset, runs=eval_runs, lr=config.eval_lr)
    metrics = {"results": results.to_dict(), "config": config.to_dict(),
               "seed": config.seed, "env": environment_info(),
               "epochs": len(history["epochs"]), "stopped": history["stopped"]}
    save_json(metrics, out / "metrics.json")
    fig = plot_loss_curves(history)
    fig.savefig(out / "loss.png", dpi=120, bbox_inches="tight")
    return {"model": model, "history": history, "results": results, "embeddings": emb,
            "dataset": dataset}
