"""Ablations of HetCRF (issue 4, item 3): each a table (mean ± std over seeds) and a figure.

    make ablations                                    # everything below, acm + freebase, 3 seeds
    python benchmarks/ablations.py --plan             # count runs, estimate time, train nothing
    python benchmarks/ablations.py --only depth negatives --datasets acm aminer --jobs 2
    python benchmarks/ablations.py --datasets synthetic --seeds 0 --epochs 2   # smoke run

Every variant is a set of changes to the shipped config (``configs/<dataset>.yaml``), never a code
fork. The ablations (``--only NAME`` picks some): ``augmentation`` (positives: none / meta-path /
meta-path + clustering), ``views`` (raw masked features vs encoder embeddings), ``channels``
(generative / contrastive / both), ``depth`` (second-stage GCN layers 0-3, with the mean pairwise
cosine similarity of the embeddings: over-smoothing), ``loss_weights`` (w_feat x w_cl, 3 x 3;
on ACM, whose edge channel is off, without the two diagonal cells that repeat the shipped run),
``num_clusters`` (S = class count, off by 1 and 2), ``gradient_balance`` (the method page's
quantities, logged every ``BALANCE_EVERY`` epochs, with and without augmentation), ``encoder``
(HAN vs one GCN per meta-path with mean fusion), ``negatives`` (all vs debiased vs dropping
same-cluster negatives) and ``feature_init`` (identity vs a learned embedding table vs fixed
random features; featureless datasets only).

Budget. ``make ablations`` must finish within 2 hours on a 2-core CPU, so every run trains for a
reduced number of epochs (``DEFAULT_EPOCHS``: acm 40 of the shipped 120, freebase 60 of 500,
aminer 40 of 300; ``--epochs`` overrides all) with 3 seeds, in ``--jobs`` worker processes of one
torch thread each: 138 distinct trainings (acm 63, freebase 75) for 201 table cells. The
numbers are therefore below the full-schedule ones of docs/results.md; what the tables show is
the difference between variants under one budget. ``--plan`` prints the number of distinct
trainings and an estimate of the time from two measured epochs per dataset (and, over
``--budget-min``, the epochs that would fit).

Deduplication and resume. Many variants equal the shipped config ("both", "depth 1", "HAN", ...).
A run is keyed by a hash of (dataset, resolved config, evaluation settings): each key trains
once and serves every table that lists it. Each finished run is appended to a JSONL cache
(``benchmarks/out/ablations_cache.jsonl``); runs already there are never retrained, so an
interrupted ``make ablations`` continues where it stopped.

Evaluation: :func:`~hetcrf_lite.eval.evaluate_embeddings` with ``--eval-runs`` (20)
logistic-regression runs at 20 and 40 labels per class and ``--clustering-runs`` (3) K-means runs.
Outputs: the tables printed and written to docs/ablations.md, figures/ablation_<name>.png, and
benchmarks/out/ablations.json (per-seed values included).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hetcrf_lite.data import HINDataset

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
NOTES = ROOT / "docs" / "ablations_notes.md"  # hand-written reading of the tables, copied in
CACHE_VERSION = 1  # bump when a row's content changes meaning: old cache rows are then ignored


@dataclass(frozen=True)
class DatasetInfo:
    """What the variants of a dataset depend on, known without loading it."""

    name: str
    num_classes: int
    featureless: bool  # target type has identity (one-hot) features only


DATASETS = {
    "acm": DatasetInfo("acm", 3, False),
    "dblp": DatasetInfo("dblp", 4, False),
    "aminer": DatasetInfo("aminer", 4, True),
    "freebase": DatasetInfo("freebase", 3, True),
    "synthetic": DatasetInfo("synthetic", 3, False),  # make_synthetic_hin() defaults
}
DEFAULT_DATASETS = ("acm", "freebase")  # Freebase: the cheapest featureless benchmark
# Reduced epochs per dataset, so that the default run fits 2 hours on 2 cores (see --plan).
DEFAULT_EPOCHS = {"acm": 40, "dblp": 30, "aminer": 40, "freebase": 60, "synthetic": 40}
BALANCE_EVERY = 5  # gradient_balance log period (epochs) of every run: one key for all tables
RATES = (20, 40)

# Quantities of hetcrf_lite.contrastive.gradient_balance (summary key prefixes), with labels.
BALANCE_QUANTITIES = {
    "num_pos": "|Pos|",
    "pos_mass": "pos. mass",
    "grad_per_pos": "grad / pos.",
    "neg_grad_mean": "mean grad / neg.",
    "neg_grad_max": "max grad / neg.",
    "top1pct_neg_share": "top-1% neg. share",
    "anchor_grad_pos_norm": "|anchor grad| pos.",
    "anchor_grad_neg_norm": "|anchor grad| neg.",
}
# Config fields another change may not have brought yet: a variant needing a missing one is
# skipped with a message instead of failing (any other unknown key is a typo and raises).
OPTIONAL_FIELDS = {"feature_init"}

_AUG = {
    "none": dict(metapath_positives=False, cluster_aug=False),
    "meta-path only": dict(cluster_aug=False),
    "meta-path + clustering": dict(),
}
_WEIGHTS = (0.25, 1.0, 4.0)


@dataclass(frozen=True)
class Ablation:
    """One ablation: its question, and the variants (label -> config changes) for a dataset."""

    title: str
    question: str
    variants: Callable[[DatasetInfo], dict[str, dict[str, Any]]]
    extra: tuple[str, ...] = ()  # ablation-specific columns: "cosine", "balance"


def _clusters(info: DatasetInfo) -> dict[str, dict[str, Any]]:
    from hetcrf_lite.config import default_config

    shipped_is_true_count = default_config(info.name).num_clusters is None  # None: class count
    out = {}
    for d in (-2, -1, 0, 1, 2):
        s = info.num_classes + d
        if s < 2:  # K-means needs two clusters
            continue
        # the true count as the shipped None, so that it shares the shipped config's run
        changes = {} if d == 0 and shipped_is_true_count else dict(num_clusters=s)
        out[f"S={s} ({'true count' if d == 0 else f'{d:+d}'})"] = changes
    return out


def _feature_init(info: DatasetInfo) -> dict[str, dict[str, Any]]:
    if not info.featureless:
        return {}
    return {"identity (one-hot)": dict(),
            "learned embedding table": dict(feature_init="embedding"),
            "fixed random features": dict(feature_init="random")}


def _loss_weights(info: DatasetInfo) -> dict[str, dict[str, Any]]:
    from hetcrf_lite.config import default_config

    cfg = default_config(info.name)
    edge_on = cfg.use_edge_recon and cfg.w_edge > 0
    out = {}
    for a in _WEIGHTS:
        for b in _WEIGHTS:
            # (a, a) is a times the shipped loss when the edge term is absent: same Adam steps
            if a == b and a != cfg.w_feat and cfg.w_feat == cfg.w_cl and not edge_on:
                continue
            out[f"w_feat={a:g}, w_cl={b:g}"] = dict(w_feat=a, w_cl=b)
    return out


ABLATIONS: dict[str, Ablation] = {
    "augmentation": Ablation(
        "Positive augmentation", "Do meta-path positives and cluster positives help?",
        lambda info: dict(_AUG)),
    "views": Ablation(
        "View construction", "Views from the encoder's embeddings (HetCRF) vs from masked raw "
        "features (HeCo-style) for the schema view.",
        lambda info: {"raw features (masked)": dict(views="raw"), "encoder embeddings": dict()}),
    "channels": Ablation(
        "Channels", "Generative only, contrastive only, or both.",
        lambda info: {"generative only": dict(use_contrastive=False, embed="encoder"),
                      "contrastive only": dict(use_feat_recon=False, use_edge_recon=False),
                      "both": dict()}),
    "depth": Ablation(
        "Second-stage depth", "GCN layers after view construction; deeper over-smooths (mean "
        "pairwise cosine of the contrastive embedding and of the final embedding).",
        lambda info: {f"depth {d}": dict(second_stage_depth=d) for d in (0, 1, 2, 3)},
        extra=("cosine",)),
    "loss_weights": Ablation(
        "Loss-weight sensitivity", "w_feat x w_cl on a log grid, w_edge as shipped. Adam's "
        "steps do not change when the whole loss is multiplied by a constant, so the diagonal "
        "differs from the shipped (1, 1) only through w_edge, and is left out where the edge "
        "channel is off (ACM): there it would train the shipped config again.", _loss_weights),
    "num_clusters": Ablation(
        "Cluster count S", "Clustering augmentation with S = the true class count and off by 1 "
        "and 2 (the paper assumes the class count is known).", _clusters),
    "gradient_balance": Ablation(
        "Gradient balance", "The method page's gradient-balance quantities (per-anchor means, "
        f"averaged over the epochs logged every {BALANCE_EVERY}) with and without augmentation.",
        lambda info: dict(_AUG), extra=("balance",)),
    "encoder": Ablation(
        "Encoder", "HAN (node- and semantic-level attention) vs one GCN per meta-path with mean "
        "fusion, under the same view construction.",
        lambda info: {"HAN (attention)": dict(), "GCN per meta-path (no attention)":
                      dict(encoder="gcn")}),
    "negatives": Ablation(
        "Negatives", "All negatives (paper) vs false-negative mitigation.",
        lambda info: {"all": dict(), "debiased": dict(negatives="debiased"),
                      "drop same cluster": dict(negatives="drop_same_cluster")}),
    "feature_init": Ablation(
        "Featureless input", "Identity features vs a learned embedding table vs fixed random "
        "features for a featureless target type: is the gain from the method or from the "
        "feature initialisation? (featureless datasets only)", _feature_init),
}


# ------------------------------------------------------------------------------ planning
@dataclass
class Job:
    """One distinct training run: dataset, resolved config and evaluation settings."""

    dataset: str
    config: dict[str, Any]
    eval: dict[str, Any]
    key: str
    label: str  # the first (ablation, variant) that asked for it, for progress lines


@dataclass
class Plan:
    """Distinct jobs and, per ablation / dataset / variant, the job key of each seed."""

    jobs: dict[str, Job] = field(default_factory=dict)
    tables: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    requested: int = 0  # (dataset, variant, seed) cells over all tables, before deduplication


def run_key(dataset: str, config: dict[str, Any], eval_settings: dict[str, Any]) -> str:
    """Hash of everything a run's numbers depend on (the resolved config holds the seed)."""
    blob = json.dumps({"v": CACHE_VERSION, "dataset": dataset, "config": config,
                       "eval": eval_settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def config_fields() -> set[str]:
    from hetcrf_lite.config import HetCRFConfig

    return {f.name for f in fields(HetCRFConfig)}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise SystemExit(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def make_plan(names: Sequence[str], datasets: Sequence[str], seeds: Sequence[int],
              epochs: dict[str, int], eval_settings: dict[str, Any],
              registry: dict[str, Ablation] | None = None) -> Plan:
    """Resolve every (ablation, dataset, variant, seed) to a config and deduplicate the runs.

    Args:
        names (sequence of str): ablations to plan (keys of ``registry``).
        datasets (sequence of str): dataset names (keys of :data:`DATASETS`).
        seeds (sequence of int): training seeds.
        epochs (dict): epochs per dataset.
        eval_settings (dict): evaluation settings; part of every run's key.
        registry (dict, optional): the ablations; :obj:`None` is :data:`ABLATIONS`.
            (default: :obj:`None`)

    Returns:
        Plan: distinct jobs keyed by :func:`run_key`, the tables that point at them, and the
        skipped (ablation, dataset) pairs with the reason.
    """
    from hetcrf_lite.config import default_config

    registry = ABLATIONS if registry is None else registry
    known = config_fields()
    plan = Plan()
    for name in names:
        table: dict[str, dict[str, list[str]]] = {}
        for ds in datasets:
            info = dataset_info(ds)
            variants = registry[name].variants(info)
            if not variants:
                plan.skipped.append(f"{name} on {ds}: not applicable (the ablation is for "
                                    "featureless datasets: aminer, freebase)")
                continue
            for label, changes in variants.items():
                missing = sorted(set(changes) - known)
                if missing and set(missing) <= OPTIONAL_FIELDS:
                    plan.skipped.append(f"{name} / {label} on {ds}: HetCRFConfig has no field "
                                        f"{missing} yet; skipped")
                    continue
                for seed in seeds:
                    base = {"seed": seed, "epochs": epochs[ds], "grad_balance_every": BALANCE_EVERY}
                    config = default_config(ds, **{**base, **changes}).to_dict()
                    key = run_key(ds, config, eval_settings)
                    plan.requested += 1
                    if key not in plan.jobs:
                        plan.jobs[key] = Job(ds, config, dict(eval_settings), key,
                                             f"{name} / {label}")
                    table.setdefault(ds, {}).setdefault(label, []).append(key)
        plan.tables[name] = table
    return plan


# ------------------------------------------------------------------------------ one run
@lru_cache(maxsize=4)
def load(name: str, pos_num: int | None = None, pos_score: str = "count") -> "HINDataset":
    """The dataset of a run, loaded once per process (a worker serves many runs)."""
    from hetcrf_lite.utils import load_named_dataset

    return load_named_dataset(name, pos_num=pos_num, pos_score=pos_score)


def mean_pairwise_cosine(emb: np.ndarray) -> float:
    r"""Mean cosine similarity over all pairs :math:`i \neq j`, exact, in :math:`O(ND)`.

    .. math::
        \frac{1}{N(N-1)} \sum_{i \neq j} \mathbf{u}_i^\top \mathbf{u}_j
        = \frac{\lVert \sum_i \mathbf{u}_i \rVert^2 - \sum_i \lVert \mathbf{u}_i \rVert^2}{N(N-1)}

    with :math:`\mathbf{u}_i` the L2-normalised rows (all-zero rows stay zero), so no
    :math:`N \times N` similarity matrix is built. 1 means every embedding points the same way.
    """
    x = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)  # [N, D]
    n = len(u)
    total = u.sum(0)
    return float((total @ total - (u * u).sum()) / (n * (n - 1)))


def train_and_evaluate(dataset_name: str, config: dict[str, Any],
                       eval_settings: dict[str, Any]) -> dict[str, Any]:
    """Train one config and evaluate its embeddings; a JSON-ready row (one cache line).

    Args:
        dataset_name (str): a key of :data:`DATASETS`.
        config (dict): a resolved :class:`~hetcrf_lite.config.HetCRFConfig` as a dict.
        eval_settings (dict): ``runs``, ``rates`` and ``clustering_runs`` of
            :func:`~hetcrf_lite.eval.evaluate_embeddings`.

    Returns:
        dict: ``metrics`` (Macro-/Micro-F1 per rate and NMI / ARI, means over evaluation runs;
        mean pairwise cosine of the final and the contrastive embedding), ``balance_log`` (the
        gradient-balance summary of every logged epoch) and its mean ``balance``, epochs, stop
        reason, timings and the environment.
    """
    from hetcrf_lite.config import HetCRFConfig
    from hetcrf_lite.eval import evaluate_embeddings
    from hetcrf_lite.train import fit
    from hetcrf_lite.utils import environment_info

    cfg = HetCRFConfig.from_dict(config)
    dataset = load(dataset_name, cfg.pos_num, cfg.pos_score)
    t0 = time.perf_counter()
    model, history = fit(dataset, cfg, progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = model.embed().cpu().numpy()
    res = evaluate_embeddings(emb, dataset, rates=eval_settings["rates"],
                              runs=eval_settings["runs"],
                              clustering_runs=eval_settings["clustering_runs"], lr=cfg.eval_lr)
    row: dict[str, Any] = {"dataset": dataset_name, "seed": cfg.seed, "metrics": {}}
    for rate in eval_settings["rates"]:
        s = res.classification[rate].summary()
        row["metrics"][f"macro_f1_{rate}"] = s["macro_f1"][0]
        row["metrics"][f"micro_f1_{rate}"] = s["micro_f1"][0]
    clu = res.clustering.summary()
    row["metrics"]["nmi"], row["metrics"]["ari"] = clu["nmi"][0], clu["ari"][0]
    row["metrics"]["cos_final"] = mean_pairwise_cosine(emb)
    if cfg.use_contrastive:
        row["metrics"]["cos_contrastive"] = mean_pairwise_cosine(
            model.contrastive_embedding().cpu().numpy())
    log = [{"epoch": r["epoch"], **r["gradient_balance"]} for r in history["epochs"]
           if r.get("gradient_balance")]
    row["balance_log"] = log
    if log:
        row["balance"] = {k: float(np.mean([r[k] for r in log])) for k in log[0] if k != "epoch"}
    row.update(epochs=len(history["epochs"]), stopped=history["stopped"], train_seconds=train_s,
               eval_seconds=time.perf_counter() - t0,
               seconds_per_epoch=train_s / max(1, len(history["epochs"])),
               epoch_seconds=[r["seconds"] for r in history["epochs"]],
               env=environment_info())
    return row


# ------------------------------------------------------------------------------ cache + pool
def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of the JSONL cache by key; a line cut short by a kill is ignored."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return rows
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            print(f"cache {path}: line {i + 1} is incomplete (interrupted write); it is retrained",
                  file=sys.stderr)
            continue
        rows[row["key"]] = row
    return rows


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_limits = None  # keeps threadpoolctl's limit alive in a worker


def _init_worker() -> None:
    """One thread per worker: N workers on N cores, no oversubscription (torch, BLAS, K-means)."""
    global _limits
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    _limits = threadpool_limits(1)


def _run_job(job: Job) -> dict[str, Any]:
    row = train_and_evaluate(job.dataset, job.config, job.eval)
    row.update(key=job.key, config=job.config, eval=job.eval)
    return row


def run_jobs(jobs: Sequence[Job], cache: Path, workers: int = 1,
             log: Callable[[str], None] = print) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Train every job not in ``cache`` (appending each row as it finishes); all rows by key.

    ``workers > 1`` runs jobs in that many spawned processes of one torch thread each; with
    ``workers == 1`` they run in this process, with its thread setting.

    Returns:
        ``(rows, failed)``: every job's row (cached or new) by key, and one message per failed job.
    """
    rows = read_cache(cache)
    todo = [j for j in jobs if j.key not in rows]
    log(f"{len(jobs)} distinct runs: {len(jobs) - len(todo)} in the cache, {len(todo)} to train "
        f"({workers} worker{'s' if workers > 1 else ''})")
    failed: list[str] = []
    start = time.perf_counter()

    def finished(i: int, job: Job, row: dict[str, Any] | None, err: BaseException | None) -> None:
        if err is not None:
            failed.append(f"{job.dataset} {job.label} seed {job.config['seed']}: {err!r}")
            log(f"[{i}/{len(todo)}] FAILED {failed[-1]}")
            return
        rows[job.key] = row
        _append(cache, row)
        elapsed = time.perf_counter() - start
        eta = elapsed / i * (len(todo) - i)
        m = row["metrics"]
        log(f"[{i}/{len(todo)}] {job.dataset} {job.label} seed {row['seed']}: "
            f"Ma-F1@{RATES[-1]} {m.get(f'macro_f1_{RATES[-1]}', float('nan')):.2f} NMI "
            f"{m['nmi']:.2f}, {row['epochs']} epochs {row['train_seconds']:.0f} s; "
            f"elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min")

    if workers <= 1:
        for i, job in enumerate(todo, 1):
            try:
                finished(i, job, _run_job(job), None)
            except Exception as err:  # one broken variant must not lose the others
                finished(i, job, None, err)
        return rows, failed
    import multiprocessing

    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update({k: "1" for k in _THREAD_ENV})  # read by the spawned children at start-up
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(_run_job, job): job for job in todo}
            try:
                for i, fut in enumerate(as_completed(futures), 1):
                    err = fut.exception()
                    finished(i, futures[fut], None if err else fut.result(), err)
            except KeyboardInterrupt:
                # without this the pool would run every queued job before exiting
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rows, failed


# ------------------------------------------------------------------------------ --plan
def measure_cost(dataset_name: str, eval_settings: dict[str, Any]) -> dict[str, float]:
    """Two epochs and one evaluation of the shipped config, timed on one thread.

    Epoch 0 carries the one-off costs and the first cluster refresh (K-means), epoch 1 is a
    plain step: ``first_epoch`` and ``epoch`` seconds, ``eval_seconds``, ``load_seconds``.
    """
    import torch

    from hetcrf_lite.config import default_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a worker runs
    try:
        cfg = default_config(dataset_name, epochs=2, grad_balance_every=BALANCE_EVERY)
        t0 = time.perf_counter()
        load(dataset_name, cfg.pos_num, cfg.pos_score)
        load_s = time.perf_counter() - t0
        row = train_and_evaluate(dataset_name, cfg.to_dict(), eval_settings)
    finally:
        torch.set_num_threads(threads)
    first, plain = row["epoch_seconds"][:2]
    return {"first_epoch": first, "epoch": plain, "eval_seconds": row["eval_seconds"],
            "load_seconds": load_s}


def estimate_seconds(config: dict[str, Any], cost: dict[str, float]) -> float:
    """A run's seconds from :func:`measure_cost`: plain epochs, plus epoch 0's extra cost again
    at every later cluster refresh (an upper bound: it includes one-off start-up), plus the
    evaluation."""
    epochs = config["epochs"]
    refreshes = 1
    if config["use_contrastive"] and config["cluster_aug"]:
        refreshes = -(-epochs // config["cluster_every"])  # ceil
    extra = max(0.0, cost["first_epoch"] - cost["epoch"])
    return epochs * cost["epoch"] + refreshes * extra + cost["eval_seconds"]


def print_plan(plan: Plan, cache: Path, workers: int, eval_settings: dict[str, Any],
               measure: bool = True, budget_min: float = 120.0,
               log: Callable[[str], None] = print) -> float | None:
    """Print the run count and, when ``measure``, the estimated wall time (returned, seconds);
    above ``budget_min`` minutes, also the epochs that would fit."""
    cached = read_cache(cache)
    todo = [j for j in plan.jobs.values() if j.key not in cached]
    log(f"distinct training runs: {len(plan.jobs)} ({plan.requested} table cells before "
        f"deduplication; {len(plan.jobs) - len(todo)} already in {cache.name}, {len(todo)} to "
        "train)")
    for name, table in plan.tables.items():
        cells = sum(len(keys) for variants in table.values() for keys in variants.values())
        log(f"  {name:17s} {cells:4d} cells")
    for msg in plan.skipped:
        log(f"  skipped: {msg}")
    if not measure or not todo:
        return 0.0 if not todo else None
    total = 0.0
    for ds in sorted({j.dataset for j in todo}):
        cost = measure_cost(ds, eval_settings)
        mine = [j for j in todo if j.dataset == ds]
        secs = sum(estimate_seconds(j.config, cost) for j in mine)
        total += secs
        log(f"  {ds}: {len(mine)} runs x {mine[0].config['epochs']} epochs; measured on 1 "
            f"thread: epoch 0 {cost['first_epoch']:.2f} s (start-up, cluster refresh), epoch 1 "
            f"{cost['epoch']:.2f} s, evaluation {cost['eval_seconds']:.1f} s -> "
            f"{secs / 60:.0f} min of one core")
    wall = total / max(1, workers)
    log(f"estimated wall time with --jobs {workers}: {wall / 60:.0f} min ({total / 3600:.1f} "
        "core-hours; assumes each worker runs at the measured 1-thread speed and every run "
        "reaches its epoch limit: early stopping only shortens it; variants cost more or less "
        "than the shipped config measured here)")
    if wall > 60 * budget_min:
        scale = 60 * budget_min / wall  # the estimate is about linear in the epochs
        fit_epochs = {ds: max(1, int(scale * e)) for ds, e in
                      sorted({(j.dataset, j.config["epochs"]) for j in todo})}
        log(f"over the {budget_min:.0f}-minute budget: about {fit_epochs} epochs would fit "
            "(--epochs sets one value for all; DEFAULT_EPOCHS holds the per-dataset defaults)")
    return wall


# ------------------------------------------------------------------------------ results
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else 0.0)


def summarise(plan: Plan, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per ablation / dataset / variant: mean and std over seeds of every metric, and the seeds."""
    out: dict[str, Any] = {}
    for name, table in plan.tables.items():
        out[name] = {}
        for ds, variants in table.items():
            out[name][ds] = {}
            for label, keys in variants.items():
                rs = [rows[k] for k in keys if k in rows]
                if not rs:
                    continue
                cell: dict[str, Any] = {"seeds": [r["seed"] for r in rs],
                                        "epochs": [r["epochs"] for r in rs],
                                        "keys": [r["key"] for r in rs], "metrics": {},
                                        "per_seed": {}}
                for metric in rs[0]["metrics"]:
                    vals = [r["metrics"][metric] for r in rs if metric in r["metrics"]]
                    cell["metrics"][metric] = _mean_std(vals)
                    cell["per_seed"][metric] = vals
                if all("balance" in r for r in rs):
                    cell["balance"] = {k: _mean_std([r["balance"][k] for r in rs])
                                       for k in rs[0]["balance"]}
                    cell["balance_log"] = [r["balance_log"] for r in rs]
                out[name][ds][label] = cell
    return out


def _fmt(ms: tuple[float, float], digits: int = 2) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _fmt_g(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.3g} ± {ms[1]:.2g}"


def table_lines(name: str, summary: dict[str, Any]) -> list[str]:
    """The markdown table of one ablation (one row per dataset and variant)."""
    ab = ABLATIONS.get(name)
    extra = ab.extra if ab is not None else ()
    head = ["dataset", "variant", "seeds", "epochs"] + [f"Ma-F1@{r}" for r in RATES] + ["NMI"]
    if "cosine" in extra:
        head += ["cos (contrastive emb.)", "cos (final emb.)"]
    if "balance" in extra:
        head += list(BALANCE_QUANTITIES.values())
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds, variants in summary.items():
        for label, cell in variants.items():
            m = cell["metrics"]
            cells = [ds, label, str(len(cell["seeds"])), f"{np.mean(cell['epochs']):.0f}"]
            cells += [_fmt(m[f"macro_f1_{r}"]) for r in RATES] + [_fmt(m["nmi"])]
            if "cosine" in extra:
                cells += [_fmt(m["cos_contrastive"], 3) if "cos_contrastive" in m else "n/a",
                          _fmt(m["cos_final"], 3)]
            if "balance" in extra:
                bal = cell.get("balance", {})
                cells += [_fmt_g(bal[f"{k}_mean"]) if f"{k}_mean" in bal else "n/a"
                          for k in BALANCE_QUANTITIES]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


# ------------------------------------------------------------------------------ figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_figure(name: str, summary: dict[str, Any], path: Path) -> None:
    """Grouped bars (Macro-F1 at each rate, NMI) per variant, one panel per dataset, std bars;
    the depth ablation adds a row with the mean pairwise cosine against depth."""
    plt = _plt()
    datasets = list(summary)
    metrics = [(f"macro_f1_{r}", f"Macro-F1@{r}") for r in RATES] + [("nmi", "NMI")]
    depth = name == "depth"
    nrows = 2 if depth else 1
    width = max(4.5, 0.55 * max(len(v) for v in summary.values()) * len(metrics) / 2)
    fig, axes = plt.subplots(nrows, len(datasets), figsize=(width * len(datasets), 3.6 * nrows),
                             squeeze=False)
    for col, ds in enumerate(datasets):
        ax = axes[0][col]
        labels = list(summary[ds])
        x = np.arange(len(labels))
        w = 0.8 / len(metrics)
        for i, (key, lab) in enumerate(metrics):
            ms = [summary[ds][v]["metrics"][key] for v in labels]
            ax.bar(x + (i - (len(metrics) - 1) / 2) * w, [m[0] for m in ms], w,
                   yerr=[m[1] for m in ms], capsize=2, label=lab)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 118)  # headroom for the legend above the bars
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("%")
        ax.set_title(f"{ds}: {ABLATIONS[name].title if name in ABLATIONS else name}", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=len(metrics), frameon=False)
        if depth:
            ax = axes[1][col]
            d = [int(v.split()[-1]) for v in labels]
            for key, lab in (("cos_contrastive", "contrastive embedding"),
                             ("cos_final", "final embedding")):
                ms = [summary[ds][v]["metrics"].get(key, (np.nan, 0.0)) for v in labels]
                ax.errorbar(d, [m[0] for m in ms], yerr=[m[1] for m in ms], marker="o",
                            capsize=2, label=lab)
            ax.set_xticks(d)
            ax.set_xlabel("second-stage depth")
            ax.set_ylabel("mean pairwise cosine")
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def balance_figure(summary: dict[str, Any], path: Path) -> None:
    """Each gradient-balance quantity against the epoch, one line per variant (mean over seeds,
    band: min to max over seeds), one row per dataset."""
    plt = _plt()
    datasets = list(summary)
    keys = [k for k in BALANCE_QUANTITIES if k != "num_pos"]
    fig, axes = plt.subplots(len(datasets), len(keys), figsize=(2.9 * len(keys),
                                                                 2.6 * len(datasets)),
                             squeeze=False)
    for r, ds in enumerate(datasets):
        seen: dict[str, list[float]] = {k: [] for k in keys}
        for label, cell in summary[ds].items():
            logs = cell.get("balance_log")
            if not logs:
                continue
            n = min(len(log) for log in logs)
            epochs = [e["epoch"] for e in logs[0][:n]]
            for c, k in enumerate(keys):
                vals = np.array([[e[f"{k}_mean"] for e in log[:n]] for log in logs])  # [seeds, T]
                seen[k] += vals.ravel().tolist()
                ax = axes[r][c]
                ax.plot(epochs, vals.mean(0), marker=".", label=label)
                ax.fill_between(epochs, vals.min(0), vals.max(0), alpha=0.2)
        for c, k in enumerate(keys):
            ax = axes[r][c]
            ax.set_title(f"{ds}: {BALANCE_QUANTITIES[k]}", fontsize=8)
            ax.set_xlabel("epoch", fontsize=7)
            v = np.asarray(seen[k])
            if v.size and v.min() > 0 and v.max() / v.min() > 10:  # log only where it spans decades
                ax.set_yscale("log")
        axes[r][0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ report
def write_markdown(path: Path, summary: dict[str, Any], plan: Plan, rows: dict[str, Any],
                   args: argparse.Namespace, epochs: dict[str, int], figures: Path,
                   command: str, notes: Path | None = NOTES) -> None:
    from hetcrf_lite.config import default_config
    from hetcrf_lite.utils import environment_info

    env = environment_info()
    used = [rows[k] for k in plan.jobs if k in rows]
    platforms = sorted({r["env"]["platform"] for r in used})
    core_min = sum(r["train_seconds"] + r["eval_seconds"] for r in used) / 60
    ep = ", ".join(f"{ds} {epochs[ds]}" for ds in args.datasets)
    shipped = ", ".join(f"{ds} {default_config(ds).epochs}" for ds in args.datasets)
    lines = [
        "# Ablations of HetCRF", "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.",
        f"Machine: {env['platform']}, {env['cpu_count']} CPUs; Python {env['python']}, torch "
        f"{env['torch']}, torch_geometric {env['torch_geometric']}, numpy {env['numpy']}, "
        f"scikit-learn {env['scikit_learn']}."
        + (f" Rows were trained on: {'; '.join(platforms)}." if len(platforms) > 1 else ""),
        f"Datasets: {', '.join(args.datasets)}. Training seeds: {args.seeds}. Epochs (maximum; "
        f"early stopping on the training loss as shipped): {ep}.",
        f"Runs: {len(plan.jobs)} distinct trainings for {plan.requested} table cells (variants "
        f"equal to the shipped config are trained once and shared); {core_min:.0f} core-minutes "
        f"of training and evaluation, in worker processes of one torch thread.",
        f"Evaluation: `evaluate_embeddings`, {args.eval_runs} logistic-regression runs at "
        f"{' and '.join(map(str, RATES))} labels per class (the field's protocol otherwise: "
        f"Adam, 200 iterations, lr 0.05 on ACM, 0.01 elsewhere); K-means with the class count "
        f"(runs: {args.clustering_runs}). Cells: mean ± std over the training seeds (ddof 1) "
        "of each seed's mean over evaluation runs, in %.", "",
        f"**These numbers come from reduced epochs** ({ep}, where the shipped configs train "
        f"{shipped}; the defaults of `make ablations` are sized to fit every ablation in 2 hours "
        "on a 2-core CPU). They are not the reproduction numbers (docs/results.md); compare "
        "variants within a table.", "",
    ]
    if plan.skipped:
        lines += ["Skipped:", ""] + [f"- {s}" for s in plan.skipped] + [""]
    lines += ["Cost per run (median; timings of a shared machine are noisy):", "",
              "| dataset | runs | epochs run | s / epoch | train + eval s |",
              "|---|---|---|---|---|"]
    for ds in args.datasets:
        rs = [r for r in used if r["dataset"] == ds]
        if rs:
            epochs_run = np.median([r["epochs"] for r in rs])
            per_epoch = np.median([r["seconds_per_epoch"] for r in rs])
            per_run = np.median([r["train_seconds"] + r["eval_seconds"] for r in rs])
            lines.append(f"| {ds} | {len(rs)} | {epochs_run:.0f} | {per_epoch:.2f} | "
                         f"{per_run:.0f} |")
    lines.append("")
    for name, per_ds in summary.items():
        ab = ABLATIONS.get(name)
        fig = os.path.relpath(figures / f"ablation_{name}.png", path.parent)
        lines += [f"## {ab.title if ab else name} (`--only {name}`)", "",
                  ab.question if ab else "", "", f"![{name}]({fig})", ""]
        lines += (table_lines(name, per_ds) if per_ds else
                  ["Not run: no dataset of this run applies (see Skipped)."]) + [""]
        if name == "gradient_balance":
            lines += ["Each quantity is the mean over anchors (512 fixed anchors), averaged over "
                      f"the epochs logged every {BALANCE_EVERY}, then mean ± std over seeds. The "
                      "positive and negative gradient sums are equal by construction (a unit "
                      "test, not a column). \"none\" has the anchor as its only positive.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    if notes is not None and notes.is_file():  # what the tables say, written by hand
        lines += ["", f"<!-- the section below is copied from {notes.name}; edit it there -->",
                  notes.read_text().rstrip(), ""]
    path.write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS),
                        metavar="NAME", help=f"ablations to run: {', '.join(ABLATIONS)}")
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS),
                        choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs for every dataset (default per dataset: {DEFAULT_EPOCHS})")
    parser.add_argument("--eval-runs", type=int, default=20)
    parser.add_argument("--clustering-runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 8),
                        help="worker processes, one torch thread each (default: CPU count)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads with --jobs 1 (default 1)")
    parser.add_argument("--plan", action="store_true",
                        help="print the distinct runs and an estimated time; train nothing "
                             "(times 2 epochs of the shipped config per dataset)")
    parser.add_argument("--budget-min", type=float, default=120.0,
                        help="--plan: wall-clock budget in minutes to compare against")
    parser.add_argument("--cache", type=Path, default=OUT / "ablations_cache.jsonl")
    parser.add_argument("--json", type=Path, default=OUT / "ablations.json")
    parser.add_argument("--md", type=Path, default=ROOT / "docs" / "ablations.md")
    parser.add_argument("--figures", type=Path, default=ROOT / "figures")
    parser.add_argument("--notes", type=Path, default=NOTES,
                        help="hand-written notes appended to the markdown, if the file exists")
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    # One thread unless asked: two threads on a busy 2-core machine run these small sparse
    # products about 10x slower (docs/performance.md), and K-means follows the same limit.
    torch.set_num_threads(args.threads or 1)
    _limits_main = threadpool_limits(args.threads or 1)  # noqa: F841 (kept alive for the run)
    epochs = {ds: args.epochs or DEFAULT_EPOCHS[ds] for ds in args.datasets}
    eval_settings = {"runs": args.eval_runs, "rates": list(RATES),
                     "clustering_runs": args.clustering_runs}
    plan = make_plan(args.only, args.datasets, args.seeds, epochs, eval_settings)
    print(f"epochs per dataset (reduced, see the docstring): {epochs}")
    if args.plan:
        print_plan(plan, args.cache, args.jobs, eval_settings, budget_min=args.budget_min)
        return 0
    for msg in plan.skipped:
        print(f"skipped: {msg}")
    rows, failed = run_jobs(list(plan.jobs.values()), args.cache, args.jobs)
    summary = summarise(plan, rows)
    for name, per_ds in summary.items():
        print(f"\n== {name}: mean ± std over seeds {args.seeds}, epochs {epochs} (reduced) ==")
        if not per_ds:
            print("not run: no dataset of this run applies (see skipped above)")
            continue
        print("\n".join(table_lines(name, per_ds)))
        if name == "gradient_balance":  # its figure: the quantities with vs without augmentation
            balance_figure(per_ds, args.figures / f"ablation_{name}.png")
        else:
            bar_figure(name, per_ds, args.figures / f"ablation_{name}.png")
    command = "python benchmarks/ablations.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_markdown(args.md, summary, plan, rows, args, epochs, args.figures, command.strip(),
                   notes=args.notes)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "command": command.strip(), "date": datetime.now(timezone.utc).isoformat(),
        "machine": platform.platform(), "datasets": args.datasets, "seeds": args.seeds,
        "epochs": epochs, "eval": eval_settings, "balance_every": BALANCE_EVERY,
        "distinct_runs": len(plan.jobs), "skipped": plan.skipped, "failed": failed,
        "ablations": summary}, indent=2))
    print(f"\nwrote {args.md}, {args.json}, {args.figures}/ablation_*.png")
    if failed:
        print(f"{len(failed)} run(s) failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
