"""Entry points of training: ``fit`` a model, or do everything ``hetcrf-lite train`` does in a
run folder, and read a run folder back.

:func:`fit` seeds, builds a :class:`~hetcrf_lite.model.HetCRF` and trains it, full batch
(:class:`~hetcrf_lite.trainer.Trainer`) or in subgraph mini-batches
(:class:`~hetcrf_lite.minibatch.MiniBatchTrainer`). :func:`train_run` adds the data, the
evaluation and the run folder (embeddings, history, metrics, figures); :func:`load_run` and
:func:`run_embeddings` give the trained model and its embeddings again. This module sits above
the trainers, the evaluation and the figures (docs/architecture.md).

Introduced in notebook 03 (``fit``); ``train_run`` in notebook 08.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .config import RESUME_SAFE_FIELDS, HetCRFConfig, config_differences, show_differences
from .data import load_graph, load_graph_dataset, validate_dataset
from .errors import CheckpointError, ConfigError, DataError, DataFileNotFoundError, TrainingError
from .eval import evaluate_embeddings
from .files import atomic_write_bytes, ensure_folder, file_sha256, remove_orphans, save_json
from .minibatch import embed_layerwise, fit_minibatch
from .model import HetCRF
from .plot import plot_embedding_2d, plot_loss_curves, umap_projection, write_png
from .runs import forget_run, record_run
from .trainer import (EpochHook, Trainer, checkpoint_config, from_plain, read_checkpoint,
                      resume_config)
from .utils import environment_info, load_named_dataset, seed_everything

__all__ = ["fit", "build_trainer", "check_trainable", "train_run", "config_dataset",
           "run_dataset", "load_run", "run_embeddings", "umap_figure_for_run", "GRAPH_RECORD"]


def check_trainable(dataset: Any, config: HetCRFConfig) -> None:
    """Refuse, with the fix, a dataset or config that cannot train: bad data (NaN features,
    labels out of range: :func:`~hetcrf_lite.data.validate_dataset`), or cluster positives
    whose count would default to the number of classes of a graph without labels."""
    if not isinstance(config, HetCRFConfig):
        raise ConfigError(f"config is a {type(config).__name__}; pass a HetCRFConfig "
                          "(hetcrf_lite.config.default_config or HetCRFConfig.load)")
    validate_dataset(dataset)
    if (config.use_contrastive and config.cluster_aug and config.num_clusters is None
            and dataset.num_classes < 2):
        raise ConfigError(
            f"dataset {dataset.name!r} has {dataset.num_classes} classes (no labels), so the "
            "cluster positives cannot take their count from the classes (num_clusters: null): "
            "set num_clusters: auto (picked by silhouette) or an integer >= 2, or "
            "cluster_aug: false")


def fit(dataset, config: HetCRFConfig, out_dir: str | os.PathLike | None = None,
        progress: bool = True, resume: bool = False,
        on_epoch_end: EpochHook | None = None,
        overrides: Mapping[str, Any] | None = None):
    """Seed, build a :class:`~hetcrf_lite.model.HetCRF` on ``dataset`` and train it.

    Full batch when ``config.batch_size`` is ``None``; otherwise subgraph mini-batches
    (:func:`hetcrf_lite.minibatch.fit_minibatch`), which never build an ``N x N`` matrix.
    ``on_epoch_end`` goes to the trainer (see :class:`Trainer`). The dataset is checked first
    (:func:`check_trainable`).

    ``resume=True`` continues from ``out_dir/checkpoint.pt``: ``config`` must equal the
    checkpoint's; ``overrides`` (``{field: value}``, fields of
    :data:`~hetcrf_lite.config.RESUME_SAFE_FIELDS` only) change it explicitly
    (:func:`resume_config`).
    Returns ``(model, history)``; the model holds its lowest-loss parameters.

    Introduced in notebook 03.
    """
    check_trainable(dataset, config)
    if resume:
        config = resume_config(out_dir, config, overrides)
    elif overrides:
        raise ConfigError("overrides change a resumed run (resume=True); for a fresh run put "
                          "the values in the config (config.replace(...))")
    if config.batch_size is not None:
        return fit_minibatch(dataset, config, out_dir=out_dir, progress=progress, resume=resume,
                             on_epoch_end=on_epoch_end)
    trainer = _full_batch_trainer(dataset, config, out_dir, progress, on_epoch_end)
    history = trainer.fit(resume=resume)
    return trainer.model, history


def build_trainer(dataset, config: HetCRFConfig, progress: bool = True,
                  on_epoch_end: EpochHook | None = None) -> Trainer:
    """The seeded full-batch model and :class:`Trainer` that :func:`fit` builds, not yet
    trained (no run folder): ``build_trainer(...).fit()`` gives :func:`fit`'s history and
    ``trainer.model`` its model, bit for bit. For a hook that needs the trainer itself, e.g.
    :attr:`Trainer.lowest_loss_state` (``hetcrf-lite tune``); set ``trainer.on_epoch_end``
    after building. Mini-batch configs (``batch_size``) are refused: use :func:`fit`."""
    check_trainable(dataset, config)
    if config.batch_size is not None:
        raise ConfigError("build_trainer builds the full-batch trainer; this config sets "
                          f"batch_size={config.batch_size} (mini-batches): use fit(), or set "
                          "batch_size: null")
    return _full_batch_trainer(dataset, config, None, progress, on_epoch_end)


def _full_batch_trainer(dataset, config, out_dir, progress, on_epoch_end) -> Trainer:
    seed_everything(config.seed)
    model = HetCRF(dataset, config)
    return Trainer(model, config, out_dir=out_dir, progress=progress, on_epoch_end=on_epoch_end)


def train_run(config: HetCRFConfig | None, out_dir: str | os.PathLike, resume: bool = False,
              progress: bool = True, eval_runs: int = 50,
              overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``hetcrf-lite train`` does: data, training, evaluation, run folder.

    The run folder receives ``embeddings.npy``, ``history.json``, ``config.yaml``,
    ``metrics.json`` (with config, seed and versions), ``loss.png`` and, last,
    ``run.json`` (:func:`hetcrf_lite.runs.record_run`: config hash, dataset checksum, version,
    for :func:`hetcrf_lite.runs.find_run`). With ``resume`` the
    config is checked against the checkpoint's (:func:`resume_config`; ``config=None`` takes
    the checkpoint's) before anything is written. The folder is checked for writing before
    training, and temporary files orphaned by a killed run are removed. A run stopped by
    Ctrl-C returns ``{"interrupted": True, ...}`` without evaluating.

    Introduced in notebook 08.
    """
    out = Path(out_dir)
    if resume:
        config = resume_config(out, config, overrides)
    elif config is None:
        raise ConfigError("a fresh run needs a config")
    if resume and config.graph is not None:
        _check_graph_record(out, config.graph)  # the graph the run started on, unchanged
    ensure_folder(out)
    remove_orphans(out)
    forget_run(out)  # run.json again only once this run is complete (hetcrf_lite.runs)
    dataset = config_dataset(config)  # the synthetic graph stays seed 0
    config.save(out / "config.yaml")
    _record_graph(out, config)
    model, history = fit(dataset, config, out_dir=out, progress=progress, resume=resume,
                         overrides=overrides if resume else None)
    if str(history.get("stopped", "")).startswith("interrupted"):
        return {"model": model, "history": history, "interrupted": True, "dataset": dataset}
    emb = run_embeddings(model, config)
    if not np.isfinite(emb).all():
        raise TrainingError(f"the trained model gives NaN/Inf embeddings (lr {config.lr:g} is "
                            "probably too high); nothing was written to embeddings.npy. Train "
                            "again with a lower lr.")
    atomic_write_bytes(out / "embeddings.npy", lambda fh: np.save(fh, emb))
    results = evaluate_embeddings(emb, dataset, runs=eval_runs, lr=config.eval_lr)
    metrics = {"results": results.to_dict(), "config": config.to_dict(),
               "seed": config.seed, "env": environment_info(),
               "epochs": len(history["epochs"]), "stopped": history["stopped"]}
    save_json(metrics, out / "metrics.json")
    write_png(plot_loss_curves(history), out / "loss.png")
    record_run(out, config, dataset)  # run.json: what find_run matches (hetcrf_lite.runs)
    return {"model": model, "history": history, "results": results, "embeddings": emb,
            "dataset": dataset, "interrupted": False}


# ---------------------------------------------------------------------------------------------
# Run folders: the data a run was trained on, and the trained model again
# ---------------------------------------------------------------------------------------------

GRAPH_RECORD = "graph.json"
"""In a run folder trained on a graph of your own: its path, sha256, target and meta-paths."""


def config_dataset(config: HetCRFConfig) -> Any:
    """The dataset ``config`` trains on: its ``graph`` (a saved HeteroData, with ``target``,
    ``metapaths`` and ``split_seed``), else the built-in ``dataset`` (the synthetic graph is
    always seed 0)."""
    if config.graph is not None:
        return load_graph_dataset(config.graph, config.target, config.metapaths,
                                  pos_num=config.pos_num, pos_score=config.pos_score,
                                  split_seed=config.split_seed, name=config.dataset)
    return load_named_dataset(config.dataset, pos_num=config.pos_num, pos_score=config.pos_score)


def _record_graph(out: Path, config: HetCRFConfig) -> None:
    if config.graph is None:
        return
    save_json({"path": config.graph, "sha256": file_sha256(config.graph),
               "target": config.target, "metapaths": config.metapaths,
               "split_seed": config.split_seed}, out / GRAPH_RECORD)


def _check_graph_record(run: Path, graph: str) -> None:
    """``graph`` must be the file the run in ``run`` was trained on (same sha256)."""
    record_path = run / GRAPH_RECORD
    try:
        record = json.loads(record_path.read_text())
        expected = str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{record_path} is missing or unreadable ({err}); it records which "
                        "graph the run was trained on: is this a run folder of 'hetcrf-lite "
                        "train --data'?") from err
    if not Path(graph).exists():
        raise DataFileNotFoundError(f"{graph}, the graph the run in {run} was trained on, does "
                                    "not exist; if it moved, give its new path with --data "
                                    "GRAPH (graph= in Python)")
    if not Path(graph).is_file():
        load_graph(graph)  # the named error for a folder
    digest = file_sha256(graph)
    if digest != expected:
        raise DataError(f"{graph} has sha256 {digest[:16]}..., but the run in {run} was "
                        f"trained on a graph with sha256 {expected[:16]}... (recorded in "
                        f"{record_path}, from {record.get('path')}): the graph changed. "
                        "Restore it, or give its original with --data")


def run_dataset(run_dir: str | os.PathLike, graph: str | os.PathLike | None = None
                ) -> tuple[HetCRFConfig, Any]:
    """``(config, dataset)`` of a run folder: its ``config.yaml`` and the data it was trained
    on. A graph of your own is found at its recorded path (or at ``graph``, when it has moved)
    and must have the sha256 recorded in ``graph.json``.

    Raises:
        DataError: not a run folder, or the graph changed since training.
        ConfigError: ``config.yaml`` unreadable.
    """
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise DataError(f"{run / 'config.yaml'} is missing: is {run} a folder written by "
                        "'hetcrf-lite train'?")
    config = HetCRFConfig.load(run / "config.yaml")
    if graph is not None:
        if config.graph is None:
            raise ConfigError(f"the run in {run} was trained on {config.dataset!r}, not on a "
                              "graph of your own: leave out --data")
        config = config.replace(graph=str(Path(graph).absolute()))
    if config.graph is not None:
        _check_graph_record(run, config.graph)
    return config, config_dataset(config)


def run_embeddings(model: torch.nn.Module, config: HetCRFConfig) -> np.ndarray:
    """The ``[N, D]`` embeddings a run writes to ``embeddings.npy``: one full-graph pass, or
    chunked layer-wise inference for a model trained in mini-batches."""
    if config.batch_size is None:
        return model.embed().cpu().numpy()
    return embed_layerwise(model).cpu().numpy()


def load_run(run_dir: str | os.PathLike, graph: str | os.PathLike | None = None
             ) -> tuple[torch.nn.Module, Any, HetCRFConfig]:
    """The trained model of a run folder, as training left it: ``(model, dataset, config)``.

    ``checkpoint.pt`` (read with ``weights_only=True``) holds the last epoch's parameters and
    the lowest-loss ones; a finished run's model, and its ``embeddings.npy``, are the
    lowest-loss ones, so those are loaded (with the last epoch's extra state, as the trainer
    leaves it). :func:`run_embeddings` of the result equals the run's ``embeddings.npy`` on
    the same machine and thread count. The model is in eval mode.

    Raises:
        CheckpointError: no checkpoint, an unsafe or damaged one, or one that does not match
            the folder's ``config.yaml``.
        DataError: as :func:`run_dataset`.
    """
    run = Path(run_dir)
    config, dataset = run_dataset(run, graph)
    state = read_checkpoint(run / "checkpoint.pt")
    saved = checkpoint_config(state["config"], run / "checkpoint.pt")
    diffs = {k: v for k, v in config_differences(saved, config).items()
             if k not in RESUME_SAFE_FIELDS and k != "graph"}
    if diffs:
        raise CheckpointError(f"{run / 'checkpoint.pt'} was written with another config than "
                              f"{run / 'config.yaml'}: {show_differences(diffs)}; train afresh")
    seed_everything(config.seed)
    model = HetCRF(dataset, config)
    weights = state["best"]["state"] if state["best"]["state"] is not None else state["model"]
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{run / 'checkpoint.pt'} does not fit the model of its config "
                              f"({str(err)[:300]}); train afresh") from err
    if state.get("extra") is not None and hasattr(model, "load_extra_state"):
        model.load_extra_state(from_plain(state["extra"]))
    model.eval()
    return model, dataset, config


def umap_figure_for_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                        seed: int = 0, graph: str | os.PathLike | None = None) -> Path:
    """UMAP of a training run's ``embeddings.npy`` coloured by class, silhouette in the title.
    A run on a graph of your own finds it at its recorded path (or ``graph``), checked by its
    sha256 (:func:`hetcrf_lite.train.run_dataset`).

    Introduced in notebook 08."""
    from sklearn.metrics import silhouette_score

    run = Path(run_dir)
    for needed in ("embeddings.npy", "config.yaml"):
        if not (run / needed).is_file():
            raise DataError(f"{run / needed} is missing: is {run} a folder written by "
                            "'hetcrf-lite train'?")
    emb = np.load(run / "embeddings.npy", allow_pickle=False)
    config, dataset = run_dataset(run, graph)
    labels = dataset.labels.cpu().numpy()
    if len(labels) != len(emb):
        raise DataError(f"{len(emb)} embeddings but {len(labels)} target nodes in "
                        f"{config.dataset}")
    points = umap_projection(emb, seed=seed)
    known = labels >= 0
    # Silhouette of the embeddings themselves (cosine), not of the 2-D picture.
    sil = silhouette_score(emb[known], labels[known], metric="cosine",
                           sample_size=min(5000, int(known.sum())), random_state=seed)
    fig = plot_embedding_2d(points, labels,
                            title=f"{config.dataset}: UMAP of HetCRF embeddings "
                                  f"(silhouette {sil:.3f})")
    path = Path(out) if out else run / "umap.png"
    write_png(fig, path, dpi=130)
    save_json({"silhouette_cosine": float(sil), "seed": seed}, run / "umap.json")
    return path
