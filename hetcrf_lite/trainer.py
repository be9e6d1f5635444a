"""The training loop: Adam, early stopping on the training loss, atomic checkpoints, resume,
history.

The trainer knows nothing of the method: it asks the model for ``training_step(epoch)`` (a loss
and its named parts), calls ``on_epoch_start(epoch)`` (cluster refreshes) and, every
``grad_balance_every`` epochs, ``gradient_balance_summary()``. Everything the method does lives in
:mod:`hetcrf_lite.model`.

What a run can trust (docs/reliability.md lists the tests behind each promise):

* **Checkpoints hold tensors and plain data only** and are read with
  ``torch.load(weights_only=True)``, which runs no code; a file that needs more (a crafted one,
  or one from before this format) is refused with :class:`~hetcrf_lite.errors.CheckpointError`.
* **Exact resume.** A checkpoint is always taken at an epoch boundary: model, optimiser,
  scheduler, early-stopping state, history, every RNG (torch, NumPy, Python) and the model's
  extra state (sampling generator, cluster positives) as they were between two epochs. Ctrl-C
  before an epoch's first optimiser step rolls that epoch back; after it, the interrupt waits
  until the epoch is complete (a second Ctrl-C stops at once, without a checkpoint). A resumed
  run repeats the uninterrupted one bit for bit.
* **No NaN "good" state.** The loss is checked before each step and the parameters after it,
  before any checkpoint or best state is taken.
* **Same seed, same result on a CPU** at a given thread count: training runs with
  ``torch.use_deterministic_algorithms`` (on the CPU it makes ``index_put_``'s accumulation, the
  backward of ``x[index]``, sequential instead of racing threads).
* **Resume keeps its config**: fields outside :data:`~hetcrf_lite.config.RESUME_SAFE_FIELDS`
  must match the checkpoint's; safe ones change explicitly and are recorded in the history.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import pickle
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import RESUME_SAFE_FIELDS, HetCRFConfig, config_differences, show_differences
from .errors import CheckpointError, ConfigError, HetCRFError, TrainingError
from .files import atomic_write_bytes, remove_orphans, save_json
from .utils import environment_info

__all__ = ["Trainer", "read_checkpoint", "resume_config", "migrate_checkpoint",
           "deterministic_algorithms",
           "checkpoint_config", "to_plain", "from_plain",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 2  # 1: pickled objects (before issue 13); 2: tensors and plain data only
_NUMPY = "__numpy__"  # marks an ndarray stored as raw bytes in a checkpoint


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """Within the block, torch picks deterministic kernels (restored afterwards).

    On the CPU this serialises ``index_put_(accumulate=True)`` (the backward of ``x[index]``),
    which otherwise adds rows from several threads in a racing order. Ops without a deterministic
    kernel warn instead of failing; memory left uninitialised is not filled (no cost).
    """
    if not enabled:
        yield
        return
    import torch.utils.deterministic as det

    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        det.fill_uninitialized_memory = before[2]


# ---------------------------------------------------------------------------------------------
# Checkpoint contents: tensors and plain data only
# ---------------------------------------------------------------------------------------------

def to_plain(obj: Any, where: str = "state") -> Any:
    """``obj`` as tensors and plain data (what ``torch.load(weights_only=True)`` reads back):
    NumPy arrays become ``{"__numpy__": uint8 tensor, "dtype", "shape"}`` (exact bytes), NumPy
    scalars Python numbers. Anything else raises :class:`CheckpointError` naming where it is."""
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    for base in (bool, int, float, str):  # subclasses (torch.__version__ is one) pickle as such
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise CheckpointError(f"cannot checkpoint {where}: an object array; store numbers")
        raw = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)
        return {_NUMPY: torch.from_numpy(raw.copy()), "dtype": obj.dtype.str,
                "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, to_plain(v, f"{where}[{k!r}]")) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise CheckpointError(
        f"cannot checkpoint {where}: a {type(obj).__name__} is neither a tensor nor plain data "
        "(numbers, strings, lists, dicts, NumPy arrays); convert it before returning it from "
        "extra_state() or putting it in the history")


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(obj, dict):
        if _NUMPY in obj:
            raw = obj[_NUMPY].numpy().tobytes()
            return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return type(obj)((k, from_plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def _rng_state() -> dict[str, Any]:
    cuda = (torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(), "cuda": cuda}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("numpy") is not None:
        np.random.set_state(tuple(state["numpy"]))
    if state.get("python") is not None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_MIGRATE = ("python -c \"from hetcrf_lite.trainer import migrate_checkpoint; "
            "migrate_checkpoint('{path}')\" (it unpickles the file: only for one you wrote "
            "yourself), or train afresh")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: no code in it ever runs.

    Raises:
        CheckpointError: no such file; a file that needs unpickling (a crafted file, or the
            pickled format written before issue 13: the message says how to migrate a trusted
            one); a damaged or truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train without --resume first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
        first = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0])
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain data ({first[:200]}), so it is "
            "not loaded: unpickling them could run code. A checkpoint of hetcrf-lite before "
            f"issue 13 is in that old format; migrate it: {_MIGRATE.format(path=path)}.") from err
    except Exception as err:  # noqa: BLE001 - any parse failure of a damaged file
        raise CheckpointError(f"{path} is damaged or truncated ({type(err).__name__}: "
                              f"{str(err)[:200]}); restore it, or train afresh without "
                              "--resume") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this version (format "
                              f"{state.get('format', 1) if isinstance(state, dict) else '?'}, "
                              f"expected {CHECKPOINT_FORMAT}); migrate it: "
                              f"{_MIGRATE.format(path=path)}.")
    _check_layout(state, path)
    return state


_LAYOUT = {"model": dict, "optimizer": dict, "config": dict, "epoch": int, "history": dict,
           "best": dict, "rng": dict}


def _check_layout(state: dict[str, Any], path: Path) -> None:
    wrong = [k for k, kind in _LAYOUT.items()
             if not isinstance(state.get(k), kind) or isinstance(state.get(k), bool)]
    if not wrong and not {"loss", "epoch", "bad_epochs", "state"} <= set(state["best"]):
        wrong = ["best"]
    if not wrong and not isinstance(state["rng"].get("torch"), torch.Tensor):
        wrong = ["rng"]
    if wrong:
        raise CheckpointError(f"{path} has missing or malformed {wrong}; it is damaged: "
                              "restore it, or train afresh without --resume")


def migrate_checkpoint(path: str | os.PathLike) -> Path:
    """Rewrite a format-1 checkpoint (pickled, before issue 13) in the current format, in place.

    **This unpickles the file** (``weights_only=False``): run it only on a checkpoint you wrote
    yourself. Returns the path.
    """
    path = Path(path)
    old = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(old, dict) and old.get("format") == CHECKPOINT_FORMAT:
        return path
    best = old["best"]
    state = {
        "format": CHECKPOINT_FORMAT, "model": old["model"], "optimizer": old["optimizer"],
        "scheduler": to_plain(old.get("scheduler"), "scheduler"), "config": old["config"],
        "epoch": old["epoch"], "history": to_plain(old["history"], "history"),
        "best": {"loss": best[0], "epoch": best[1], "bad_epochs": best[2], "state": best[3]},
        "rebaseline": bool(old.get("rebaseline", False)),
        "rng": {"torch": old["rng"], "numpy": None, "python": None, "cuda": None},
        "extra": to_plain(old.get("extra"), "extra"),
    }
    atomic_write_bytes(path, lambda fh: torch.save(state, fh))
    return path


def checkpoint_config(values: Any, path: Any) -> HetCRFConfig:
    """The :class:`HetCRFConfig` stored in the checkpoint at ``path`` (``values``, plain data).

    Raises:
        CheckpointError: the stored config is not valid for this version.
    """
    try:
        return HetCRFConfig.from_dict(dict(values))
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"the config stored in {path} is not valid for this version "
                              f"({err}); train afresh") from err


def resume_config(out_dir: str | os.PathLike | None, config: HetCRFConfig | None = None,
                  overrides: Mapping[str, Any] | None = None) -> HetCRFConfig:
    """The config a resume of ``out_dir`` trains with: the checkpoint's, with ``overrides``.

    Args:
        out_dir (str): run folder holding ``checkpoint.pt``.
        config (HetCRFConfig, optional): the config the caller asked for; every field that is
            not overridden must equal the checkpoint's. ``None``: take the checkpoint's.
        overrides (dict, optional): ``{field: value}`` changes, only fields in
            :data:`~hetcrf_lite.config.RESUME_SAFE_FIELDS`.

    Raises:
        ConfigError: an override outside the safe list, or a config that differs from the
            checkpoint's (the message names every differing field with both values).
        CheckpointError: no checkpoint, or one that cannot be read safely.
    """
    if out_dir is None:
        raise TrainingError("resume needs the run folder (out_dir) that holds checkpoint.pt")
    overrides = dict(overrides or {})
    unsafe = [k for k in overrides if k not in RESUME_SAFE_FIELDS]
    if unsafe:
        raise ConfigError(f"cannot override {unsafe} on resume: only {list(RESUME_SAFE_FIELDS)} "
                          "may change; other fields define the run, so train them afresh into "
                          "a new --out folder")
    path = Path(out_dir) / "checkpoint.pt"
    saved = checkpoint_config(read_checkpoint(path)["config"], path)
    if config is not None:
        diffs = {k: v for k, v in config_differences(saved, config).items() if k not in overrides}
        if diffs:
            raise ConfigError(
                f"resume refused: the config differs from the one in {path} in "
                f"{show_differences(diffs)}. "
                "Resume with the checkpoint's config (on the command line: leave out --config, "
                "--dataset and the flags); change a safe field explicitly with --override "
                f"FIELD=VALUE ({', '.join(RESUME_SAFE_FIELDS)}); anything else needs a fresh "
                "run in a new --out folder.")
    return saved.replace(**overrides) if overrides else saved


# ---------------------------------------------------------------------------------------------
# Ctrl-C at a consistent point
# ---------------------------------------------------------------------------------------------

class _InterruptGuard:
    """SIGINT during training: ``KeyboardInterrupt`` at once, except while an epoch's optimiser
    steps run (``critical``); then it waits until the epoch is complete. A second Ctrl-C in that
    window raises at once and marks the state ``torn`` (no checkpoint may be taken from it).

    Installed only on the main thread over Python's default handler; elsewhere interrupts come
    as usual and ``critical`` still tells the trainer whether the state is torn.
    """

    def __init__(self) -> None:
        self.critical = self.pending = self.torn = False
        self._previous: Any = None

    def __enter__(self) -> "_InterruptGuard":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.critical and not self.pending:
            self.pending = True
            print("\nCtrl-C: finishing this epoch, then saving a checkpoint (Ctrl-C again to "
                  "stop now without one)", file=sys.stderr, flush=True)
            return
        raise KeyboardInterrupt

    def step_started(self, *args: Any) -> None:
        self.critical = True

    def epoch_done(self, keep_pending: bool = True) -> None:
        """Leave the critical window; raise a held interrupt unless ``keep_pending`` is off."""
        self.critical = False
        if self.pending:
            self.pending = False
            if keep_pending:
                raise KeyboardInterrupt

    def interrupted_in_step(self) -> None:
        """Called on a ``KeyboardInterrupt``: inside the window the parameters may be torn."""
        self.torn = self.critical


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------

EpochHook = Callable[[torch.nn.Module, int, dict[str, Any]], Optional[bool]]
"""``on_epoch_end(model, epoch, record)``; returning ``True`` ends training after that epoch."""


class Trainer:
    r"""Fit a :class:`~hetcrf_lite.model.HetCRF` (or any model with the same three methods).

    Args:
        model (torch.nn.Module): exposes ``training_step(epoch) -> (loss, parts)``,
            ``on_epoch_start(epoch)``, ``gradient_balance_summary() -> dict`` and optional
            ``extra_state()`` / ``load_extra_state(state)`` for non-parameter state (positives);
            the extra state must be tensors, NumPy arrays and plain data.
        config (HetCRFConfig): lr, weight_decay, epochs, patience, min_epochs,
            grad_balance_every are read from it.
        out_dir (str, optional): run folder for ``checkpoint.pt`` and ``history.json``;
            ``None`` keeps everything in memory. (default: ``None``)
        progress (bool, optional): show a tqdm bar with the loss parts. (default: ``True``)
        checkpoint_every (int, optional): epochs between checkpoints. (default: ``10``)
        on_epoch_end (callable, optional): called as ``on_epoch_end(model, epoch, record)`` after
            each epoch's step, e.g. to probe the embeddings during training
            (``hetcrf-lite tune``, ``benchmarks/tune.py --curve-every``). The random
            generators and the model's extra state (its sampling generator) are put back after
            it, so a hook that draws random numbers or embeds leaves the training unchanged.
            A hook that returns ``True`` ends training after that epoch, as an early stop does
            (the model keeps its lowest-loss parameters). (default: ``None``)
        deterministic (bool, optional): train with ``torch.use_deterministic_algorithms`` on
            the CPU (:func:`deterministic_algorithms`): same seed, same bits at a given thread
            count. Ignored on a GPU. (default: ``True``)
    """

    def __init__(self, model: torch.nn.Module, config: HetCRFConfig,
                 out_dir: str | os.PathLike | None = None, progress: bool = True,
                 checkpoint_every: int = 10,
                 on_epoch_end: EpochHook | None = None,
                 deterministic: bool = True) -> None:
        self.model = model
        self.on_epoch_end = on_epoch_end
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.checkpoint_every = max(1, checkpoint_every)
        self.deterministic = deterministic
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
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
        self._saved_epoch: int | None = None  # epoch of the checkpoint written or loaded here
        self._completed = -1  # last epoch whose step and bookkeeping are done

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoint.pt"

    # ---------------------------------------------------------------------------------------
    def save_checkpoint(self, epoch: int) -> None:
        """Atomically write the state between epoch ``epoch`` and the next: model, optimiser,
        scheduler, config, history, early stopping, every RNG, the model's extra state.
        Tensors and plain data only (:func:`to_plain`); never a non-finite parameter."""
        if self.checkpoint_path is None:
            return
        self._check_parameters(epoch, "before writing a checkpoint")
        extra = self.model.extra_state() if hasattr(self.model, "extra_state") else None
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": to_plain(None if self.scheduler is None else self.scheduler.state_dict(),
                                  "scheduler"),
            "config": self.config.to_dict(),
            "epoch": epoch,
            "history": to_plain(self.history, "history"),
            "best": {"loss": self.best_loss, "epoch": self.best_epoch,
                     "bad_epochs": self.bad_epochs, "state": self._best_state},
            "rebaseline": self._rebaseline,
            "rng": to_plain(_rng_state(), "rng"),
            "extra": to_plain(extra, "extra_state()"),
        }
        atomic_write_bytes(self.checkpoint_path, lambda fh: torch.save(state, fh))
        self._saved_epoch = epoch

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> int:
        """Restore a checkpoint (read safely, :func:`read_checkpoint`); returns the epoch
        training resumes from.

        The trainer's config must equal the checkpoint's except in
        :data:`~hetcrf_lite.config.RESUME_SAFE_FIELDS`; those changes are applied (a new ``lr``
        or ``weight_decay`` reaches the optimiser, a new ``epochs`` the cosine schedule) and
        recorded in ``history["resumes"]``.
        """
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise CheckpointError("no run folder (out_dir) to resume from; give the folder "
                                  "that holds checkpoint.pt")
        state = read_checkpoint(path)
        changed = self._resume_changes(state["config"], path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(from_plain(state["scheduler"]))
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"{path} does not fit this model ({str(err)[:300]}); was it "
                                  "written for other data? Train afresh") from err
        self._apply_changes(changed)
        self.history = from_plain(state["history"])
        best = state["best"]
        self.best_loss, self.best_epoch = best["loss"], best["epoch"]
        self.bad_epochs, self._best_state = best["bad_epochs"], best["state"]
        self._rebaseline = bool(state.get("rebaseline", False))
        _set_rng_state(from_plain(state["rng"]))
        if state.get("extra") is not None and hasattr(self.model, "load_extra_state"):
            self.model.load_extra_state(from_plain(state["extra"]))
        self.start_epoch = state["epoch"] + 1
        self._saved_epoch = self._completed = state["epoch"]
        self.history["config"] = self.config.to_dict()
        self.history.setdefault("resumes", []).append(
            {"epoch": self.start_epoch, "changed": {k: list(v) for k, v in changed.items()}})
        return self.start_epoch

    def _resume_changes(self, saved: Any, path: Path) -> dict[str, tuple[Any, Any]]:
        diffs = config_differences(checkpoint_config(saved, path), self.config)
        unsafe = {k: v for k, v in diffs.items() if k not in RESUME_SAFE_FIELDS}
        if unsafe:
            raise ConfigError(
                f"resume refused: the config differs from the one in {path} in "
                f"{show_differences(unsafe)}. "
                f"Only {', '.join(RESUME_SAFE_FIELDS)} may change on resume; anything else "
                "needs a fresh run in a new folder.")
        return diffs

    def _apply_changes(self, changed: Mapping[str, tuple[Any, Any]]) -> None:
        """Push overridden optimiser settings into the restored optimiser and schedule."""
        cfg = self.config
        for group in self.optimizer.param_groups:
            if "lr" in changed:
                group["lr"] = cfg.lr
                if "initial_lr" in group:
                    group["initial_lr"] = cfg.lr
            if "weight_decay" in changed:
                group["weight_decay"] = cfg.weight_decay
        sched = self.scheduler
        if sched is not None and ("lr" in changed or "epochs" in changed):
            sched.T_max = cfg.epochs
            sched.base_lrs = [cfg.lr] * len(self.optimizer.param_groups)
            t = min(sched.last_epoch, cfg.epochs)  # the closed form at the current step
            lr = sched.eta_min + (cfg.lr - sched.eta_min) * (1 + math.cos(math.pi * t / cfg.epochs)) / 2
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            sched._last_lr = [lr] * len(self.optimizer.param_groups)

    # ---------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until ``epochs`` or early stopping; return (and save) the history.

        The model ends with the parameters of its lowest-loss epoch, as HeCo and HGMAE do.
        A NaN or Inf loss, or parameters that a step made NaN or Inf, raise
        :class:`TrainingError`; the checkpoint on disk stays the last good one. Ctrl-C saves a
        checkpoint at an epoch boundary and returns the history so far (see the module notes).
        """
        if resume:
            self.load_checkpoint()
        if self.out_dir is not None:
            remove_orphans(self.out_dir)
        with deterministic_algorithms(self.deterministic and self._on_cpu()):
            interrupted = self._loop()
        if interrupted:
            return self.history
        self.save_checkpoint(self._completed)
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self.history["best_epoch"] = self.best_epoch
        self.history["best_loss"] = self.best_loss
        self._save_history()
        return self.history

    @property
    def lowest_loss_state(self) -> dict[str, torch.Tensor] | None:
        """The parameters :meth:`fit` would end with if training stopped after the last
        completed epoch (its lowest-loss epoch since the last re-baselining; ``None`` before
        the first epoch). Read it in ``on_epoch_end`` to score what a run of that many epochs
        returns; do not modify it."""
        return self._best_state

    @contextlib.contextmanager
    def returned_model(self) -> Iterator[torch.nn.Module]:
        """The model holding :attr:`lowest_loss_state` for the block (what a run stopped after
        the last completed epoch returns), its current parameters restored afterwards: for an
        ``on_epoch_end`` hook that scores a shorter run without training it."""
        best = self._best_state
        if best is None or self.best_epoch == len(self.history["epochs"]) - 1:
            yield self.model  # the current parameters are the lowest-loss ones
            return
        current = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(best)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(current)

    def _on_cpu(self) -> bool:
        param = next(iter(self.model.parameters()), None)
        return param is None or param.device.type == "cpu"

    def _loop(self) -> bool:
        """The epochs; returns whether Ctrl-C ended them (checkpoint and history saved)."""
        cfg = self.config
        bar = tqdm(range(self.start_epoch, cfg.epochs), disable=not self.progress,
                   desc="HetCRF", unit="epoch", initial=self.start_epoch, total=cfg.epochs)
        epoch, boundary = self.start_epoch, None
        guard = _InterruptGuard()
        try:
            with guard:
                for epoch in bar:
                    boundary = self._snapshot()
                    record, stop = self._run_epoch(epoch, guard)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in record["parts"].items()})
                    halt = self.on_epoch_end is not None and self._call_hook(epoch, record)
                    if stop:
                        self.history["stopped"] = (f"early stop at epoch {epoch} "
                                                   f"(patience {cfg.patience})")
                        break
                    if halt:
                        self.history["stopped"] = f"stopped by on_epoch_end at epoch {epoch}"
                        break
                    if (epoch + 1) % self.checkpoint_every == 0:
                        self.save_checkpoint(epoch)
                else:
                    self.history["stopped"] = f"reached {cfg.epochs} epochs"
        except KeyboardInterrupt:
            bar.close()
            self._interrupted(epoch, boundary if self._completed < epoch else None, guard)
            return True
        bar.close()
        return False

    def _call_hook(self, epoch: int, record: dict[str, Any]) -> bool:
        """``on_epoch_end`` without shifting training's draws: what :meth:`_snapshot` records
        (the global generators and the model's extra state: its sampling generator, which a
        schema view with ``schema_sample`` draws on whenever a probe asks for the contrastive
        embedding, and the cluster positives) is put back after the hook, also when it
        raises. Returns whether the hook asked to stop (returned ``True``)."""
        boundary = self._snapshot()
        try:
            return self.on_epoch_end(self.model, epoch, record) is True
        finally:
            self._restore(boundary)

    def _snapshot(self) -> dict[str, Any]:
        """What an epoch changes before its first optimiser step (rolled back on Ctrl-C)."""
        extra = self.model.extra_state() if hasattr(self.model, "extra_state") else None
        return {"rng": _rng_state(), "extra": copy.deepcopy(extra), "rebaseline": self._rebaseline,
                "epochs": len(self.history["epochs"])}

    def _restore(self, boundary: dict[str, Any]) -> None:
        _set_rng_state(boundary["rng"])
        if boundary["extra"] is not None and hasattr(self.model, "load_extra_state"):
            self.model.load_extra_state(boundary["extra"])
        self._rebaseline = boundary["rebaseline"]
        del self.history["epochs"][boundary["epochs"]:]

    def _run_epoch(self, epoch: int, guard: _InterruptGuard) -> tuple[dict[str, Any], bool]:
        """One epoch and its bookkeeping. Ctrl-C after the first optimiser step waits for the
        end of this (``guard``); on return the epoch is complete (``self._completed``)."""
        hook = self.optimizer.register_step_pre_hook(guard.step_started)
        try:
            try:
                record = self._one_epoch(epoch)
            except ValueError as err:  # e.g. K-means on a blown-up embedding
                raise self._nonfinite_error(err, epoch) from err
            self._check_parameters(epoch, "after its step", record)
            stop = self._early_stop(epoch, record["loss"])
            self._completed = epoch
        except KeyboardInterrupt:
            guard.interrupted_in_step()
            raise
        finally:
            hook.remove()
        guard.epoch_done(keep_pending=not stop)  # a finished run needs no checkpoint to resume
        return record, stop

    def _interrupted(self, epoch: int, boundary: dict[str, Any] | None,
                     guard: _InterruptGuard) -> None:
        if guard.torn:  # a second Ctrl-C inside a step: parameters may be half updated
            self.history["stopped"] = (f"interrupted twice at epoch {epoch}; no checkpoint "
                                       "written (the one on disk, if any, is kept)")
            raise KeyboardInterrupt
        if boundary is not None:  # before the epoch's first step: undo its draws
            self._restore(boundary)
        self.history["stopped"] = f"interrupted at epoch {epoch}"
        self.save_checkpoint(self._completed)
        self._save_history()

    def _one_epoch(self, epoch: int) -> dict[str, Any]:
        start = time.perf_counter()
        if self.model.on_epoch_start(epoch) and self.best_epoch >= 0:
            self._rebaseline = True
        self.model.train()
        loss, parts = self.optimizer_step(epoch)
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

    def optimizer_step(self, epoch: int, graph: Any = None,
                       step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """One Adam step on ``model.training_step(epoch, graph)`` (``graph=None``: the model's
        own graph; a mini-batch step passes its subgraph and its ``step`` number); a NaN/Inf
        loss raises :class:`TrainingError` before the step. Returns ``(loss, parts)``."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = (self.model.training_step(epoch) if graph is None
                       else self.model.training_step(epoch, graph))
        if not torch.isfinite(loss):
            where = f"epoch {epoch}" if step is None else f"epoch {epoch}, step {step}"
            raise TrainingError(self.nonfinite_message(
                f"loss became {loss.item()} at {where} (parts: {parts})"))
        loss.backward()
        self.optimizer.step()
        return loss, parts

    # ---------------------------------------------------------------------------------------
    def nonfinite_message(self, what: str) -> str:
        """``what`` plus where the last good state is (only a checkpoint that exists) and the
        fix; for :class:`TrainingError` on NaN/Inf."""
        path = self.checkpoint_path
        if self._saved_epoch is not None and path is not None and path.is_file():
            where = (f"the last good checkpoint (epoch {self._saved_epoch}) is kept at {path}; "
                     "continue from it with a lower lr: hetcrf-lite train --resume --out "
                     f"{self.out_dir} --override lr=<lower>")
        else:
            where = "no checkpoint was written before it; train again with a lower lr"
        return f"{what}: {where}. Also check the features for NaN/Inf."

    def _check_parameters(self, epoch: int, when: str,
                          record: dict[str, Any] | None = None) -> None:
        bad = [name for name, p in self.model.named_parameters()
               if not bool(torch.isfinite(p.detach()).all())]
        if bad:
            loss = "" if record is None else f" (its loss was {record['loss']:.4g})"
            lr = self.optimizer.param_groups[0]["lr"]
            raise TrainingError(self.nonfinite_message(
                f"parameters are NaN/Inf {when} at epoch {epoch}{loss}: {len(bad)} tensor(s), "
                f"first {bad[0]}; the step with lr {lr:g} blew them up"))

    def _nonfinite_error(self, err: ValueError, epoch: int) -> Exception:
        """A ValueError from inside the epoch (scikit-learn's K-means on a NaN embedding) as
        :class:`TrainingError` when it is about NaN/Inf; anything else unchanged."""
        text = str(err)
        if isinstance(err, HetCRFError) or not ("NaN" in text or "infinity" in text.lower()):
            return err
        return TrainingError(self.nonfinite_message(
            f"the embedding became NaN/Inf before the cluster refresh of epoch {epoch} "
            f"({text.splitlines()[0][:120]})"))

    def _early_stop(self, epoch: int, loss: float) -> bool:
        """Patience on the training loss, re-baselined whenever the objective changes.

        A cluster refresh changes the positive sets, so losses before and after it are not
        comparable (a refresh can raise the loss with no change in the model). The first epoch
        after a refresh becomes the new best; the count of epochs without improvement carries on.
        """
        improved = loss < self.best_loss and not self._rebaseline
        if improved or self._rebaseline:
            self._rebaseline = False
            self.best_loss, self.best_epoch = loss, epoch
            self._best_state = copy.deepcopy(self.model.state_dict())
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return (not improved and epoch + 1 >= self.config.min_epochs
                and self.bad_epochs >= self.config.patience)

    def _save_history(self) -> None:
        if hasattr(self.model, "refresh_log"):
            self.history["cluster_refreshes"] = self.model.refresh_log()
        if self.out_dir is not None:
            save_json(self.history, self.out_dir / "history.json")
