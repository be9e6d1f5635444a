"""Ablations of HetCRF (issues 4 and 12): each a table (mean ± std over seeds) and a figure.

    make ablations                                    # every table below, --jobs 2, resumable
    python benchmarks/ablations.py --plan             # runs, core-hours per table; trains nothing
    python benchmarks/ablations.py --only channels depth --jobs 2
    python benchmarks/ablations.py --report-only      # tables from docs/ablations_runs.jsonl: no training
    python benchmarks/ablations.py --datasets synthetic --seeds 0 --epochs 2 --jobs 1  # smoke run

Every variant is a set of changes to the shipped config (``configs/<dataset>.yaml``), never a code
fork. Two budgets (``Ablation.budget``):

* **shipped epochs** (issue 12, item 4): ``channels`` (generative / contrastive / both),
  ``augmentation`` (positives: none / meta-path / meta-path + clustering), ``depth`` (second
  stage depth 0 vs 1) and ``switches`` (each design switch of docs/method.md, "How the channels
  share the encoder", flipped away from the dataset's shipped value one at a time), trained for
  the YAML's own ``epochs`` (no override) on ACM and Freebase with seeds 0, 1, 2; the channels
  table also on AMiner with seed 0 (one AMiner run is about 20 core-minutes).
* **reduced epochs** (``DEFAULT_EPOCHS``: acm 40 of the shipped 120, freebase 60 of 500, aminer
  40 of 300), ACM and Freebase, 3 seeds: ``views`` (raw masked features vs encoder embeddings),
  ``oversmoothing`` (second-stage depth 0-3 with the mean pairwise cosine of the embeddings),
  ``loss_weights`` (w_feat x w_cl, 3 x 3, without the diagonal cells that repeat the shipped run
  where the edge channel is off), ``num_clusters`` (S = class count, off by 1 and 2),
  ``gradient_balance`` (the method page's quantities, logged every ``BALANCE_EVERY`` epochs, with
  and without augmentation), ``encoder`` (HAN vs GCN per meta-path), ``negatives`` (all /
  debiased / drop same cluster), ``feature_init`` (featureless datasets only). Their titles in
  the report say "reduced epochs (N of M)": compare variants within such a table only.

``--datasets``, ``--seeds`` and ``--epochs`` override every table's scope (smoke runs); a table
whose epochs then differ from the YAML's is labelled reduced. ``--plan`` prints, per table and
budget, the table cells, the distinct trainings, those first needed by that table and their
estimated core-hours: epochs x ``hetcrf_lite.runs.SECONDS_PER_EPOCH`` (the shipped config's
training CPU time per epoch from ``make reproduce``, median over seeds; variants cost more or
less) plus ``EVAL_SECONDS``. It trains and loads nothing.

Deduplication and resume. Many variants equal the shipped config ("both", "depth 1", ...). A run
is keyed by a hash of (dataset, resolved config, evaluation settings): each key trains once and
serves every table that lists it. Each finished run is appended (and fsync'ed) to a JSONL file,
``docs/ablations_runs.jsonl``, which is committed: runs already there are never retrained, so
``make ablations`` stopped by Ctrl-C, continued in a later session or in a fresh clone trains only
what is missing, and ``--report-only`` rebuilds the page from the repository alone. (Until
session 17 the file lived in the git-ignored ``benchmarks/out/``; every new checkout lost it, and
with it the rows behind docs/ablations.md.) ``--cache PATH`` points at another file (smoke runs,
tests). Changing a shipped YAML or a config field's default changes the keys of the runs it
touches, which then train again: by design, a row always matches the config that made it.

Evaluation: :func:`~hetcrf_lite.eval.evaluate_embeddings` with ``--eval-runs`` (20)
logistic-regression runs at 20 and 40 labels per class and ``--clustering-runs`` (3) K-means runs.
Outputs: the tables printed and written to docs/ablations.md with, for the channels, depth and
augmentation tables, sentences generated from the numbers (issue 12's acceptance checks),
figures/ablation_<name>.png, and benchmarks/out/ablations.json (per-seed values included).
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
RUNS = ROOT / "docs" / "ablations_runs.jsonl"  # committed: the page's rows, resumable anywhere
NOTES = ROOT / "docs" / "ablations_notes.md"  # hand-written reading of the tables, copied in
CACHE_VERSION = 1  # bump when a row's content changes meaning: old cache rows are then ignored


@dataclass(frozen=True)
class DatasetInfo:
    """What the variants of a dataset depend on, known without loading it."""

    name: str
    num_classes: int
    featureless: bool  # target type has identity (one-hot) features only: "sparse-feature"


DATASETS = {
    "acm": DatasetInfo("acm", 3, False),
    "dblp": DatasetInfo("dblp", 4, False),
    "aminer": DatasetInfo("aminer", 4, True),
    "freebase": DatasetInfo("freebase", 3, True),
    "synthetic": DatasetInfo("synthetic", 3, False),  # make_synthetic_hin() defaults
}
SEEDS = (0, 1, 2)
# Which datasets and seeds a table trains by default. Freebase: the cheapest featureless
# benchmark. AMiner (about 20 core-minutes a run at its shipped 300 epochs) in the channels
# table only, with one seed (issue 12, item 4).
DEFAULT_SCOPE = {"acm": SEEDS, "freebase": SEEDS}
CHANNELS_SCOPE = {**DEFAULT_SCOPE, "aminer": (0,)}
# Epochs of the reduced tables, about a third of the shipped ones or less (see --plan).
DEFAULT_EPOCHS = {"acm": 40, "dblp": 30, "aminer": 40, "freebase": 60, "synthetic": 40}
EVAL_SECONDS = 5.0  # --plan: one evaluation (session 3 measured about 2 s on acm and freebase)
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
# The design switches of version 0.2 (docs/method.md, "How the channels share the encoder") and
# every value each can take; the switches table flips each away from the shipped value.
SWITCHES: dict[str, tuple[Any, ...]] = {
    "cl_encoder_grad": (True, False),
    "second_stage_fusion": ("mean", "beta"),
    "edge_loss_weights": ("beta", "uniform"),
    "cl_fusion": ("encoder", "own"),
    "channel_balance": ("none", "norm", "pcgrad"),
    "cl_beta_grad": (True, False),
    "gen_beta_grad": (True, False),
    "semantic_fusion": ("attention", "mean"),
    "node_attention": ("gat", "mean"),
}

_AUG = {
    "none": dict(metapath_positives=False, cluster_aug=False),
    "meta-path only": dict(cluster_aug=False),
    "meta-path + clustering": dict(),
}
_WEIGHTS = (0.25, 1.0, 4.0)


@dataclass(frozen=True)
class Ablation:
    """One ablation: its question, the variants (label -> config changes) for a dataset, its
    budget (``shipped``: the YAML's epochs; ``reduced``: :data:`DEFAULT_EPOCHS`) and its default
    datasets with their seeds."""

    title: str
    question: str
    variants: Callable[[DatasetInfo], dict[str, dict[str, Any]]]
    extra: tuple[str, ...] = ()  # ablation-specific columns: "cosine", "balance"
    budget: str = "reduced"
    scope: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(DEFAULT_SCOPE))


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


SINGLE_CHANNELS = {"generative only": dict(use_contrastive=False, embed="encoder"),
                   "contrastive only": dict(use_feat_recon=False, use_edge_recon=False)}
# Single channels' own epoch counts, read off their validation curves the way the full model's
# were (ACM 200 epochs probed every 10, Freebase 500 every 25, three seeds; the probed epoch with
# the best mean validation Macro-F1): session 18, benchmarks/logs/method_search/channel_budget_s18/.
# A channel whose curve peaks at the shipped epoch count has no entry. Contrastive only: ACM peaks
# at 140 (validation 87.77; 87.65 at the shipped 120), Freebase still rises at 500, the end of
# the curve (58.33; 57.56 at the shipped 350). Generative only: ACM peaks at 180 (70.81; 68.61
# at 120), Freebase at 75 (55.79; 54.77 at 350).
OWN_EPOCHS: dict[str, dict[str, int]] = {
    "acm": {"generative only": 180, "contrastive only": 140},
    "freebase": {"generative only": 75, "contrastive only": 500}}


def _channels(info: DatasetInfo) -> dict[str, dict[str, Any]]:
    out = dict(SINGLE_CHANNELS)
    for label, n in OWN_EPOCHS.get(info.name, {}).items():
        out[f"{label}, own epochs ({n})"] = {**SINGLE_CHANNELS[label], "epochs": n,
                                             "patience": n}
    return {**out, "both": {}}


def _switch_inert(cfg: Any, name: str) -> bool:
    """Whether flipping the switch ``name`` cannot change a run of ``cfg`` (its code path is off):
    edge-loss weights without edge reconstruction; ``cl_beta_grad`` and ``channel_balance`` when
    InfoNCE's gradient already stops at the encoder output (``cl_encoder_grad`` false with a
    generative loss on: nothing reaches beta, and the balanced gradient is the generative one;
    a 2-epoch synthetic smoke run gave identical numbers)."""
    edge_on = cfg.use_edge_recon and cfg.w_edge > 0
    gen_on = edge_on or (cfg.use_feat_recon and cfg.w_feat > 0)
    if name == "edge_loss_weights":
        return not edge_on
    if name in ("cl_beta_grad", "channel_balance"):
        return gen_on and not cfg.cl_encoder_grad
    return False


def _switches(info: DatasetInfo) -> dict[str, dict[str, Any]]:
    from hetcrf_lite.config import default_config

    cfg = default_config(info.name)
    out: dict[str, dict[str, Any]] = {"shipped": {}}
    for name, values in SWITCHES.items():
        if _switch_inert(cfg, name):
            continue
        for value in values:
            if value != getattr(cfg, name):
                shown = str(value).lower() if isinstance(value, bool) else value
                out[f"{name}: {shown}"] = {name: value}
    return out


ABLATIONS: dict[str, Ablation] = {
    # ---- shipped epochs (issue 12, item 4) --------------------------------------------------
    "channels": Ablation(
        "Channels", "Generative only, contrastive only, or both; a single channel whose own "
        "validation curve peaks elsewhere also at its own epoch count (issue 12: single channels "
        "get the same validation budget as the full model).",
        _channels, budget="shipped", scope=dict(CHANNELS_SCOPE)),
    "augmentation": Ablation(
        "Positive augmentation", "Do meta-path positives and cluster positives help?",
        lambda info: dict(_AUG), budget="shipped"),
    "depth": Ablation(
        "Second stage", "The second-stage GCN (depth 1, shipped) against none (depth 0), with "
        "the mean pairwise cosine of the contrastive and of the final embedding.",
        lambda info: {f"depth {d}": dict(second_stage_depth=d) for d in (0, 1)},
        extra=("cosine",), budget="shipped"),
    "switches": Ablation(
        "Design switches", "Each switch of docs/method.md (\"How the channels share the "
        "encoder\") flipped away from the dataset's shipped value, one at a time: one variant "
        "per switch, two for channel_balance (norm and pcgrad, the two balancing directions of "
        "issue 12). A switch whose code path is off in the shipped config is left out, as it "
        "would train the shipped run again: edge_loss_weights where edge reconstruction is off "
        "(ACM), cl_beta_grad and channel_balance where InfoNCE does not reach the encoder. No "
        "combinations: choosing a combined design is a validation question "
        "(benchmarks/tune.py).",
        _switches, budget="shipped"),
    # ---- reduced epochs ---------------------------------------------------------------------
    "views": Ablation(
        "View construction", "Views from the encoder's embeddings (HetCRF) vs from masked raw "
        "features (HeCo-style) for the schema view.",
        lambda info: {"raw features (masked)": dict(views="raw"), "encoder embeddings": dict()}),
    "oversmoothing": Ablation(
        "Second-stage depth 0-3", "GCN layers after view construction; deeper over-smooths (mean "
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
    table: str = ""  # the first ablation that asked for it (--plan counts it there)


@dataclass
class Plan:
    """Distinct jobs; per ablation / dataset / variant, the job key of each seed; per ablation
    and dataset, the ``(seeds, epochs)`` it trains."""

    jobs: dict[str, Job] = field(default_factory=dict)
    tables: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)
    scope: dict[str, dict[str, tuple[tuple[int, ...], int]]] = field(default_factory=dict)
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


def shipped_epochs(dataset: str) -> int:
    """``epochs`` of ``configs/<dataset>.yaml``."""
    from hetcrf_lite.config import default_config

    return default_config(dataset).epochs


def table_scope(ab: Ablation, datasets: Sequence[str] | None = None,
                seeds: Sequence[int] | None = None,
                epochs: int | None = None) -> dict[str, tuple[tuple[int, ...], int]]:
    """``{dataset: (seeds, epochs)}`` of one ablation: its own scope and budget, unless
    ``datasets``, ``seeds`` or ``epochs`` override them."""
    out = {}
    for ds in (ab.scope if datasets is None else datasets):
        ds_seeds = tuple(seeds) if seeds is not None else tuple(ab.scope.get(ds, SEEDS))
        default = shipped_epochs(ds) if ab.budget == "shipped" else DEFAULT_EPOCHS[ds]
        out[ds] = (ds_seeds, epochs or default)
    return out


def make_plan(names: Sequence[str], eval_settings: dict[str, Any],
              registry: dict[str, Ablation] | None = None, datasets: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, epochs: int | None = None,
              variants: Sequence[str] | None = None) -> Plan:
    """Resolve every (ablation, dataset, variant, seed) to a config and deduplicate the runs.

    Args:
        names (sequence of str): ablations to plan (keys of ``registry``), in this order.
        eval_settings (dict): evaluation settings; part of every run's key.
        registry (dict, optional): the ablations; :obj:`None` is :data:`ABLATIONS`.
        datasets, seeds (sequences, optional): override every ablation's own scope.
        epochs (int, optional): overrides every ablation's budget (shipped or reduced).
        variants (sequence of str, optional): plan only the variants with these labels (e.g.
            ``"node_attention: mean"``, to add one new row to a cache); :obj:`None`: all.

    Returns:
        Plan: distinct jobs keyed by :func:`run_key`, the tables that point at them, each
        table's scope, and the skipped (ablation, dataset) pairs with the reason.
    """
    registry = ABLATIONS if registry is None else registry
    known = config_fields()
    plan = Plan()
    for name in names:
        plan.tables[name] = {}
        plan.scope[name] = table_scope(registry[name], datasets, seeds, epochs)
        for ds in plan.scope[name]:
            _plan_dataset(plan, name, registry[name], ds, eval_settings, known, variants,
                          own_epochs=epochs is None)
    return plan


def _plan_dataset(plan: Plan, name: str, ab: Ablation, ds: str, eval_settings: dict[str, Any],
                  known: set[str], only: Sequence[str] | None = None,
                  own_epochs: bool = True) -> None:
    """Add one ablation's variants on one dataset (those labelled in ``only``) to ``plan``;
    variants with an epoch count of their own (:data:`OWN_EPOCHS`) only if ``own_epochs`` (not
    when ``--epochs`` overrides every budget)."""
    from hetcrf_lite.config import default_config

    variants = ab.variants(dataset_info(ds))
    if not variants:
        plan.skipped.append(f"{name} on {ds}: not applicable (the ablation is for "
                            "featureless datasets: aminer, freebase)")
        return
    if only is not None:
        variants = {label: c for label, c in variants.items() if label in only}
        if not variants:
            plan.skipped.append(f"{name} on {ds}: no variant labelled {list(only)}")
            return
    seeds, epochs = plan.scope[name][ds]
    for label, changes in variants.items():
        if "epochs" in changes and not own_epochs:
            plan.skipped.append(f"{name} / {label} on {ds}: left out, --epochs overrides "
                                "every budget")
            continue
        missing = sorted(set(changes) - known)
        if missing and set(missing) <= OPTIONAL_FIELDS:
            plan.skipped.append(f"{name} / {label} on {ds}: HetCRFConfig has no field "
                                f"{missing} yet; skipped")
            continue
        for seed in seeds:
            base = {"seed": seed, "epochs": epochs, "grad_balance_every": BALANCE_EVERY}
            resolved = default_config(ds, **{**base, **changes})
            config, key = resolved.to_dict(), run_key(ds, resolved.identity(), eval_settings)
            plan.requested += 1
            if key not in plan.jobs:
                plan.jobs[key] = Job(ds, config, dict(eval_settings), key, f"{name} / {label}",
                                     name)
            plan.tables[name].setdefault(ds, {}).setdefault(label, []).append(key)


def budget_label(scope: dict[str, tuple[tuple[int, ...], int]]) -> str:
    """"shipped epochs (acm 120, ...)" when every dataset trains its YAML's epochs, else
    "reduced epochs (acm 40 of 120, ...)": N of the YAML's M epochs."""
    shipped = {ds: shipped_epochs(ds) for ds in scope}
    if all(ep == shipped[ds] for ds, (_, ep) in scope.items()):
        return "shipped epochs (" + ", ".join(f"{ds} {ep}" for ds, (_, ep) in scope.items()) + ")"
    return "reduced epochs (" + ", ".join(f"{ds} {ep} of {shipped[ds]}"
                                          for ds, (_, ep) in scope.items()) + ")"


# ------------------------------------------------------------------------------ one run
@lru_cache(maxsize=4)
def load(name: str, pos_num: int | None = None, pos_score: str = "count") -> "HINDataset":
    """The dataset of a run, loaded once per process (a worker serves many runs)."""
    from hetcrf_lite.utils import load_named_dataset

    return load_named_dataset(name, pos_num=pos_num, pos_score=pos_score)


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
    from hetcrf_lite.diagnostics import mean_pairwise_cosine
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
def estimate_seconds(job: Job, per_epoch: dict[str, float]) -> float | None:
    """One run's core-seconds: its epochs at the dataset's measured seconds per epoch, plus one
    evaluation (:data:`EVAL_SECONDS`); :obj:`None` without a measurement. An upper bound where
    early stopping ends a run sooner; variants without a channel cost less, balanced ones more."""
    spe = per_epoch.get(job.dataset)
    return None if spe is None else job.config["epochs"] * spe + EVAL_SECONDS


def _core_hours(jobs: Sequence[Job], per_epoch: dict[str, float]) -> tuple[float, int]:
    """Estimated core-hours of ``jobs`` and how many of them have no measurement."""
    secs = [estimate_seconds(j, per_epoch) for j in jobs]
    return sum(s for s in secs if s is not None) / 3600, sum(s is None for s in secs)


def _table_keys(table: dict[str, dict[str, list[str]]]) -> list[str]:
    return list(dict.fromkeys(k for variants in table.values() for keys in variants.values()
                              for k in keys))


def _plan_row(name: str, plan: Plan, new: list[Job], per_epoch: dict[str, float]) -> str:
    table = plan.tables[name]
    cells = sum(len(keys) for variants in table.values() for keys in variants.values())
    scope = ", ".join(f"{ds} {len(s)}x{ep}" for ds, (s, ep) in plan.scope[name].items())
    hours, unknown = _core_hours(new, per_epoch)
    budget = "shipped" if budget_label(plan.scope[name]).startswith("shipped") else "reduced"
    return (f"  {budget:8s}{name:17s}{scope:42s}{cells:6d}{len(_table_keys(table)):6d}"
            f"{len(new):6d}{hours:8.2f}" + (f"  ({unknown} not measured)" if unknown else ""))


def print_plan(plan: Plan, cache: Path, workers: int, per_epoch: dict[str, float],
               log: Callable[[str], None] = print) -> float:
    """Print, per table and budget, the cells, the distinct trainings, those first needed by
    that table ("new") and their estimated core-hours; then the totals. Returns the estimated
    core-hours still to train (runs in ``cache`` excluded)."""
    log("estimated cost: epochs x seconds per epoch of the shipped config (make reproduce's CPU "
        f"time, hetcrf_lite.runs.SECONDS_PER_EPOCH: {_fmt_spe(per_epoch)}) + {EVAL_SECONDS:g} s "
        "evaluation, on one core")
    log(f"  {'budget':8s}{'table':17s}{'datasets: seeds x epochs':42s}{'cells':>6s}"
        f"{'runs':>6s}{'new':>6s}{'core-h':>8s}")
    seen: set[str] = set()
    by_budget: dict[str, list[Job]] = {}
    for name, table in plan.tables.items():
        new = [plan.jobs[k] for k in _table_keys(table) if k not in seen]
        seen.update(j.key for j in new)
        log(_plan_row(name, plan, new, per_epoch))
        budget = "shipped" if budget_label(plan.scope[name]).startswith("shipped") else "reduced"
        by_budget.setdefault(budget, []).extend(new)
    for budget, jobs in by_budget.items():
        log(f"  {budget}-epoch tables: {len(jobs)} distinct trainings, "
            f"{_core_hours(jobs, per_epoch)[0]:.1f} core-hours")
    for msg in plan.skipped:
        log(f"  skipped: {msg}")
    return _plan_total(plan, cache, workers, per_epoch, log)


def _fmt_spe(per_epoch: dict[str, float]) -> str:
    return ", ".join(f"{ds} {s:.2f} s" for ds, s in sorted(per_epoch.items())) or "none"


def _plan_total(plan: Plan, cache: Path, workers: int, per_epoch: dict[str, float],
                log: Callable[[str], None]) -> float:
    cached = read_cache(cache)
    todo = [j for j in plan.jobs.values() if j.key not in cached]
    total, unknown = _core_hours(list(plan.jobs.values()), per_epoch)
    left, _ = _core_hours(todo, per_epoch)
    log(f"total: {len(plan.jobs)} distinct trainings ({plan.requested} table cells before "
        f"deduplication), {total:.1f} core-hours; {len(plan.jobs) - len(todo)} already in "
        f"{cache}, {len(todo)} to train: {left:.1f} core-hours, about {left / max(1, workers):.1f} "
        f"h wall with --jobs {workers} (each worker at the measured 1-thread speed)")
    if unknown:
        log(f"  {unknown} runs on datasets without a measurement in docs/results.json are not "
            "in the estimate")
    return left


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
            if not out[name][ds]:  # nothing trained yet on this dataset
                del out[name][ds]
    return out


def _fmt(ms: tuple[float, float], digits: int = 2) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _fmt_g(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.3g} ± {ms[1]:.2g}"


def table_lines(name: str, summary: dict[str, Any],
                expected: dict[str, dict[str, list[str]]] | None = None) -> list[str]:
    """The markdown table of one ablation (one row per dataset and variant); a variant of
    ``expected`` (the plan's table) without any row reads "not run yet"."""
    ab = ABLATIONS.get(name)
    extra = ab.extra if ab is not None else ()
    head = ["dataset", "variant", "seeds", "epochs"] + [f"Ma-F1@{r}" for r in RATES] + ["NMI"]
    if "cosine" in extra:
        head += ["cos (contrastive emb.)", "cos (final emb.)"]
    if "balance" in extra:
        head += list(BALANCE_QUANTITIES.values())
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    expected = expected if expected is not None else {
        ds: {label: cell["keys"] for label, cell in variants.items()}
        for ds, variants in summary.items()}
    for ds, variants in expected.items():
        for label, keys in variants.items():
            cell = summary.get(ds, {}).get(label)
            if cell is None:
                lines.append(f"| {ds} | {label} | not run yet |" + " |" * (len(head) - 3))
                continue
            lines.append("| " + " | ".join(_row_cells(ds, label, cell, len(keys), extra)) + " |")
    return lines


def _row_cells(ds: str, label: str, cell: dict[str, Any], expected_seeds: int,
               extra: tuple[str, ...]) -> list[str]:
    m = cell["metrics"]
    seeds = len(cell["seeds"])
    cells = [ds, label, str(seeds) if seeds >= expected_seeds else f"{seeds} of {expected_seeds}",
             f"{np.mean(cell['epochs']):.0f}"]
    cells += [_fmt(m[f"macro_f1_{r}"]) for r in RATES] + [_fmt(m["nmi"])]
    if "cosine" in extra:
        cells += [_fmt(m["cos_contrastive"], 3) if "cos_contrastive" in m else "n/a",
                  _fmt(m["cos_final"], 3)]
    if "balance" in extra:
        bal = cell.get("balance", {})
        cells += [_fmt_g(bal[f"{k}_mean"]) if f"{k}_mean" in bal else "n/a"
                  for k in BALANCE_QUANTITIES]
    return cells


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
    depth = name in ("depth", "oversmoothing")
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


# ------------------------------------------------------------------------------ checks
SPARSE = tuple(ds for ds, info in DATASETS.items() if info.featureless)  # aminer, freebase
# The "helps" checks of issue 12: (table, better variant, worse variant, what is compared).
HELPS = {
    "depth": [("depth 1", "depth 0", "the second stage (depth 1 against depth 0)")],
    "augmentation": [("meta-path only", "none", "meta-path positives (meta-path only against "
                      "none)"), ("meta-path + clustering", "meta-path only", "cluster positives "
                      "(meta-path + clustering against meta-path only)")],
}


def _by_rate(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[int, str, bool]]:
    """Per rate: "a vs b" (Macro-F1 mean ± std) and whether a's mean is at or above b's."""
    out = []
    for r in RATES:
        ma, mb = a["metrics"][f"macro_f1_{r}"], b["metrics"][f"macro_f1_{r}"]
        out.append((r, f"{_fmt(ma)} vs {_fmt(mb)}", ma[0] >= mb[0]))
    return out


def _phrase(pairs: list[tuple[int, str, bool]], yes: str, no: str) -> str:
    """"yes at 20 labels (x vs y) and no at 40 labels (x vs y)", grouped by verdict."""
    groups: dict[str, list[str]] = {}
    for rate, numbers, ok in pairs:
        groups.setdefault(yes if ok else no, []).append(f"{rate} labels ({numbers})")
    return " and ".join(f"{v} at {' and '.join(items)}" for v, items in groups.items())


def _missing(cells: dict[str, Any], labels: Sequence[str]) -> list[str]:
    return [label for label in labels if label not in cells]


def channel_checks(per_ds: dict[str, Any], expected: dict[str, dict[str, list[str]]]) -> list[str]:
    """Sentences: on each dataset, is the full model ("both") at or above each single channel,
    at the shipped epochs and at its own (:data:`OWN_EPOCHS`), at every rate (means over
    seeds); then the verdict over all datasets."""
    lines, verdicts = [], []
    for ds in expected:
        cells = per_ds.get(ds, {})
        missing = _missing(cells, list(dict.fromkeys(["both", *SINGLE_CHANNELS,
                                                      *expected[ds]])))
        if missing:
            lines.append(f"- {ds}: not run yet (missing: {', '.join(missing)}).")
            verdicts.append(None)
            continue
        singles = [label for label in cells if label.startswith(tuple(SINGLE_CHANNELS))]
        parts = [_phrase(_by_rate(cells["both"], cells[s]), f"at or above {s}", f"below {s}")
                 for s in singles]
        lines.append(f"- {ds}: the full model (both) is {'; '.join(parts)}.")
        verdicts.append(all(ok for s in singles for _, _, ok in _by_rate(cells["both"], cells[s])))
    return lines + [_verdict("the full model at or above each single channel at every rate on "
                             "every dataset", verdicts, every=True)]


def helps_checks(name: str, per_ds: dict[str, Any],
                 expected: dict[str, dict[str, list[str]]]) -> list[str]:
    """Sentences: for each comparison of :data:`HELPS`, does it help (mean over seeds strictly
    above, per rate) on each sparse-feature dataset of the table; then the verdict."""
    lines = []
    sparse = [ds for ds in expected if ds in SPARSE]
    for better, worse, what in HELPS.get(name, []):
        if not sparse:
            lines.append(f"- {what}: no sparse-feature dataset ({', '.join(SPARSE)}) in this "
                         "run; not checked.")
            continue
        verdicts = []
        for ds in sparse:
            line, ok = _helps_line(per_ds.get(ds, {}), ds, better, worse, what)
            lines.append(line)
            verdicts.append(ok)
        lines.append(_verdict(f"{what} helps on at least one sparse-feature dataset at every "
                              "rate", verdicts, every=False))
    return lines


def _helps_line(cells: dict[str, Any], ds: str, better: str, worse: str,
                what: str) -> tuple[str, bool | None]:
    missing = _missing(cells, (better, worse))
    if missing:
        return f"- {ds}: {what}: not run yet (missing: {', '.join(missing)}).", None
    pairs = [(r, numbers, _mean(cells[better], r) > _mean(cells[worse], r))
             for r, numbers, _ in _by_rate(cells[better], cells[worse])]
    return (f"- {ds}: {what} {_phrase(pairs, 'helps', 'does not help')}.",
            all(ok for _, _, ok in pairs))


def _mean(cell: dict[str, Any], rate: int) -> float:
    return cell["metrics"][f"macro_f1_{rate}"][0]


def _verdict(claim: str, verdicts: list[bool | None], every: bool) -> str:
    """"Check: <claim>: met / not met / not run yet" from per-dataset verdicts (None: missing);
    ``every``: all datasets must pass, else one is enough."""
    known = [v for v in verdicts if v is not None]
    if every:
        met = bool(verdicts) and all(v is True for v in verdicts)
        undecided = not met and not any(v is False for v in verdicts)
    else:
        met = any(known)
        undecided = not met and len(known) < len(verdicts)
    state = "met" if met else ("not run yet" if undecided else "not met (numbers above)")
    return f"\n**Check (issue 12): {claim}: {state}.**\n"


def check_lines(name: str, per_ds: dict[str, Any],
                expected: dict[str, dict[str, list[str]]]) -> list[str]:
    """The generated sentences of one table (channels, depth, augmentation), else none."""
    if name == "channels":
        return channel_checks(per_ds, expected)
    return helps_checks(name, per_ds, expected) if name in HELPS else []


# ------------------------------------------------------------------------------ report
def _header_lines(plan: Plan, rows: dict[str, Any], args: argparse.Namespace,
                  command: str) -> list[str]:
    from hetcrf_lite.utils import environment_info

    env = environment_info()
    used = [rows[k] for k in plan.jobs if k in rows]
    platforms = sorted({r["env"]["platform"] for r in used})
    core_min = sum(r["train_seconds"] + r["eval_seconds"] for r in used) / 60
    return [
        "# Ablations of HetCRF", "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.",
        f"Machine: {env['platform']}, {env['cpu_count']} CPUs; Python {env['python']}, torch "
        f"{env['torch']}, torch_geometric {env['torch_geometric']}, numpy {env['numpy']}, "
        f"scikit-learn {env['scikit_learn']}."
        + (f" Rows were trained on: {'; '.join(platforms)}." if len(platforms) > 1 else ""),
        f"Runs: {len(used)} of {len(plan.jobs)} distinct trainings done for {plan.requested} "
        f"table cells (variants equal to the shipped config are trained once and shared); "
        f"{core_min:.0f} core-minutes of training and evaluation, in worker processes of one "
        "torch thread. Early stopping on the training loss as shipped.",
        f"Evaluation: `evaluate_embeddings`, {args.eval_runs} logistic-regression runs at "
        f"{' and '.join(map(str, RATES))} labels per class (the field's protocol otherwise: "
        f"Adam, 200 iterations, lr 0.05 on ACM, 0.01 elsewhere); K-means with the class count "
        f"(runs: {args.clustering_runs}). Cells: mean ± std over the training seeds (ddof 1) "
        "of each seed's mean over evaluation runs, in %.", "",
        "**Two budgets.** Each table's title says its budget. Tables at *shipped epochs* train "
        "each config's own `epochs` (configs/<dataset>.yaml). Tables at *reduced epochs (N of "
        "M)* train N of the shipped M epochs so that they fit a 2-core machine: their numbers "
        "are below the full-schedule ones of docs/results.md; compare variants within such a "
        "table only. Cells not trained yet read \"not run yet\".", "",
    ]


def _cost_lines(plan: Plan, rows: dict[str, Any]) -> list[str]:
    used = [rows[k] for k in plan.jobs if k in rows]
    lines = ["Cost per run (median; timings of a shared machine are noisy):", "",
             "| dataset | epochs (max) | runs | epochs run | s / epoch | train + eval s |",
             "|---|---|---|---|---|---|"]
    for ds, max_ep in sorted({(j.dataset, j.config["epochs"]) for j in plan.jobs.values()}):
        rs = [r for r in used if r["dataset"] == ds and r["config"]["epochs"] == max_ep]
        if rs:
            lines.append(f"| {ds} | {max_ep} | {len(rs)} | "
                         f"{np.median([r['epochs'] for r in rs]):.0f} | "
                         f"{np.median([r['seconds_per_epoch'] for r in rs]):.2f} | "
                         f"{np.median([r['train_seconds'] + r['eval_seconds'] for r in rs]):.0f} |")
    return lines + [""]


def _section_lines(name: str, plan: Plan, summary: dict[str, Any], figures: Path,
                   md_dir: Path) -> list[str]:
    ab = ABLATIONS.get(name)
    label = budget_label(plan.scope[name])
    fig = os.path.relpath(figures / f"ablation_{name}.png", md_dir)
    lines = [f"## {ab.title if ab else name}: {label} (`--only {name}`)", "",
             (ab.question if ab else "") + f" Budget: {label}.", "", f"![{name}]({fig})", ""]
    if not plan.tables[name]:
        return lines + ["Not run: no dataset of this run applies (see Skipped).", ""]
    lines += table_lines(name, summary.get(name, {}), plan.tables[name]) + [""]
    checks = check_lines(name, summary.get(name, {}), plan.tables[name])
    if checks:
        lines += ["What the numbers say (generated; Macro-F1 means over seeds):", ""]
        lines += checks + [""]
    if name == "gradient_balance":
        lines += ["Each quantity is the mean over anchors (512 fixed anchors), averaged over "
                  f"the epochs logged every {BALANCE_EVERY}, then mean ± std over seeds. The "
                  "positive and negative gradient sums are equal by construction (a unit "
                  "test, not a column). \"none\" has the anchor as its only positive.", ""]
    return lines


def write_markdown(path: Path, summary: dict[str, Any], plan: Plan, rows: dict[str, Any],
                   args: argparse.Namespace, figures: Path, command: str,
                   notes: Path | None = NOTES) -> None:
    """docs/ablations.md: header, skipped variants, cost, one section per table (its budget in
    the title, "not run yet" for missing cells, the generated check sentences), the notes."""
    lines = _header_lines(plan, rows, args, command)
    if plan.skipped:
        lines += ["Skipped:", ""] + [f"- {s}" for s in plan.skipped] + [""]
    lines += _cost_lines(plan, rows)
    for name in plan.tables:
        lines += _section_lines(name, plan, summary, figures, path.parent)
    if notes is not None and notes.is_file():  # what the tables say, written by hand
        lines += ["", f"<!-- the section below is copied from {notes.name}; edit it there -->",
                  notes.read_text().rstrip(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS),
                        metavar="NAME", help=f"ablations to run: {', '.join(ABLATIONS)}")
    parser.add_argument("--datasets", nargs="+", default=None, choices=list(DATASETS),
                        help="override every table's datasets (default: each table's own)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="override every table's seeds (default: 0 1 2; aminer 0)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="LABEL",
                        help="only the variants with these labels, e.g. 'node_attention: mean' "
                             "(default: every variant)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs for every table and dataset (default: the YAML's for the "
                             f"shipped-epoch tables, {DEFAULT_EPOCHS} for the others)")
    parser.add_argument("--eval-runs", type=int, default=20)
    parser.add_argument("--clustering-runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 8),
                        help="worker processes, one torch thread each (default: CPU count)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads with --jobs 1 (default 1)")
    parser.add_argument("--plan", action="store_true",
                        help="print runs and estimated core-hours per table; train nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="write the tables from the runs in --cache (default: the committed "
                             "docs/ablations_runs.jsonl); train nothing")
    parser.add_argument("--cache", type=Path, default=RUNS,
                        help="JSONL of finished runs, resumed and appended to (default: the "
                             "committed docs/ablations_runs.jsonl)")
    parser.add_argument("--json", type=Path, default=OUT / "ablations.json")
    parser.add_argument("--md", type=Path, default=ROOT / "docs" / "ablations.md")
    parser.add_argument("--figures", type=Path, default=ROOT / "figures")
    parser.add_argument("--notes", type=Path, default=NOTES,
                        help="hand-written notes appended to the markdown, if the file exists")
    return parser


def report(plan: Plan, rows: dict[str, Any], args: argparse.Namespace, command: str,
           failed: Sequence[str] = ()) -> dict[str, Any]:
    """Print the tables, draw the figures, write the markdown and the JSON; the summary."""
    summary = summarise(plan, rows)
    checks = {}
    for name in plan.tables:
        per_ds, label = summary.get(name, {}), budget_label(plan.scope[name])
        print(f"\n== {name}: {label}; mean ± std over seeds ==")
        print("\n".join(table_lines(name, per_ds, plan.tables[name])))
        checks[name] = check_lines(name, per_ds, plan.tables[name])
        print("\n".join(checks[name]))
        if per_ds and name == "gradient_balance":
            balance_figure(per_ds, args.figures / f"ablation_{name}.png")
        elif per_ds:
            bar_figure(name, per_ds, args.figures / f"ablation_{name}.png")
    write_markdown(args.md, summary, plan, rows, args, args.figures, command, notes=args.notes)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "command": command, "date": datetime.now(timezone.utc).isoformat(),
        "machine": platform.platform(), "scope": plan.scope, "eval": plan_eval(plan),
        "budgets": {n: budget_label(plan.scope[n]) for n in plan.tables}, "checks": checks,
        "balance_every": BALANCE_EVERY, "distinct_runs": len(plan.jobs),
        "skipped": plan.skipped, "failed": list(failed), "ablations": summary}, indent=2))
    print(f"\nwrote {args.md}, {args.json}, {args.figures}/ablation_*.png")
    return summary


def plan_eval(plan: Plan) -> dict[str, Any] | None:
    return next(iter(plan.jobs.values())).eval if plan.jobs else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    # One thread unless asked: two threads on a busy 2-core machine run these small sparse
    # products about 10x slower (docs/performance.md), and K-means follows the same limit.
    torch.set_num_threads(args.threads or 1)
    _limits_main = threadpool_limits(args.threads or 1)  # noqa: F841 (kept alive for the run)
    eval_settings = {"runs": args.eval_runs, "rates": list(RATES),
                     "clustering_runs": args.clustering_runs}
    names = [n for n in ABLATIONS if n in args.only]  # shipped-epoch tables first
    plan = make_plan(names, eval_settings, datasets=args.datasets, seeds=args.seeds,
                     epochs=args.epochs, variants=args.variants)
    if args.plan:
        from hetcrf_lite.runs import SECONDS_PER_EPOCH

        print_plan(plan, args.cache, args.jobs, dict(SECONDS_PER_EPOCH))
        return 0
    for msg in plan.skipped:
        print(f"skipped: {msg}")
    if args.report_only:
        rows, failed = read_cache(args.cache), []
    else:
        rows, failed = run_jobs(list(plan.jobs.values()), args.cache, args.jobs)
    command = "python benchmarks/ablations.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report(plan, rows, args, command.strip(), failed)
    if failed:
        print(f"{len(failed)} run(s) failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
