"""Validation-only tuning: ``hetcrf-lite tune`` and the grid of ``benchmarks/tune.py``.

The package's top layer, beside the CLI: it imports ``train``, ``eval``, ``config``, ``data``
and ``diagnostics``; nothing below imports it.

**What is scored, and on what.** Every score is the field's protocol with each label rate's
*validation* nodes standing in for its test nodes (:func:`validation_only`): the probe picks its
step on validation and reports validation, so no test label is read (the test indices are not
even passed in). A score is the validation Macro-F1 averaged over the label rates, then over the
training seeds.

**The budgeted search** (:func:`tune`, ``hetcrf-lite tune``) covers the few settings that matter
for this method:

* ``lr`` and ``tau``: one training per seed for each candidate;
* the number of epochs, read off a validation curve during that same training: about
  :data:`CURVE_POINTS` times per run the trainer's ``on_epoch_end`` hook scores the parameters
  a run of that many epochs would end with (its lowest-loss epoch so far,
  :attr:`~hetcrf_lite.trainer.Trainer.lowest_loss_state`), so ``epochs: E`` in ``best.yaml``
  gives the model that was scored, and epochs cost no extra trainings. A seed that stopped early
  counts with its final model at every later epoch (a longer run stops at the same epoch). With
  ``lr_schedule: cosine`` the schedule depends on the epoch count, so only the last epoch is
  scored. A training past its peak is cut: once its last :data:`CUT_PROBES` probes all score
  :data:`CUT_DROP` points or more below its best so far, it ends there, nothing later is
  scored, and the candidate's next seeds train only that far. Where training moves the
  embedding away from the classes after a few epochs (the movie graph of docs/method.md: a
  peak at 6 of 200 epochs) that leaves the budget to the other candidates;
* the final embedding (``concat`` / ``encoder`` / ``contrastive``), each as it is and with its
  columns standardised (``embed_norm``), scored from the same trained model, no retraining. On
  graphs whose embeddings are mostly one vector shared by every node the standardised columns
  score far higher; where they are not, it can cost a point or two (docs/method.md, "Where the
  movie graph loses the classes"), so it is a choice made on validation, not a default.

A candidate's score is its best (epochs, embedding) point. The candidates come from a short
coordinate search, in this order, each step from the best candidate so far (``L``, ``T``: the
starting config's lr and tau):

1. the starting config itself (the shipped config of ``--dataset``, HeCo's defaults
   ``HetCRFConfig()`` for ``--data``, or ``--config``): always run, whatever the budget;
2. ``lr x4``, then one more factor 4 in the direction that won (``lr x16`` if ``x4`` beat the
   default, else ``lr /4``): on a graph the defaults were not made for, the learning rate
   matters most (issue 12: lr 5e-3 instead of 8e-4 on a held-out graph);
3. ``tau x0.6`` at the best lr, then one more step in the direction that won (``x0.36`` or
   ``/0.6``);
4. ``lr x2`` and ``lr /2`` around the best point (refinement).

At most 7 candidates; the search ends when they are spent or the budget is. Before the search a
short timing run (the first :data:`TIMING_EPOCHS` epochs and one probe) estimates one training
and one candidate (all seeds); the estimate follows the measured candidates afterwards. When
fewer than :data:`MIN_FIT` candidates of the config's epochs would fit, every candidate trains
fewer epochs, as many as let :data:`MIN_FIT` fit (:func:`epochs_that_fit`, never below
:data:`EPOCHS_FLOOR`): a search of one long candidate would not search. A new
candidate starts only while the time spent plus one candidate's estimate stays within the
budget, so a budget too small for two candidates runs only the first. A candidate whose
training fails (NaN at a high lr) is recorded as failed and the search goes on.

For comparison the two training-free baselines are scored on the same validation splits:
logistic regression on the raw features (skipped for identity features: one-hot node ids give
a linear probe nothing to generalise from, only the training nodes to memorise) and on
:func:`~hetcrf_lite.diagnostics.propagated_features` (raw features with their mean over each
meta-path's neighbours).

Picking the best of several candidates and epochs on the same validation nodes flatters the
winner a little; the test split, untouched here, is what ``hetcrf-lite train`` reports.

The grid over the shipped configs that picked the benchmark epochs and learning rates
(``--curve-every``) is a benchmark tool: ``benchmarks/tune.py``, built on this module.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from .config import HetCRFConfig
from .data import is_identity
from .diagnostics import propagated_features
from .errors import ConfigError, NoValidationLabelsError, TrainingError
from .eval import evaluate_embeddings
from .files import atomic_write_bytes, ensure_folder, save_json
from .train import build_trainer
from .utils import environment_info

__all__ = ["tune", "check_tunable", "validation_only", "validation_scores", "baseline_scores",
           "candidates", "format_table", "write_outputs", "embed_label", "parse_embed_label",
           "EMBED_MODES", "EMBED_NORMS", "EMBED_LABELS"]

CURVE_POINTS = 8
"""Probes of the validation curve per training (plus the last epoch)."""
TIMING_EPOCHS = 3
"""Epochs of the timing run that estimates one training before the search."""
CUT_PROBES = 2
CUT_DROP = 2.0
"""A training of the search ends once its last ``CUT_PROBES`` probes all score at least
``CUT_DROP`` points of validation Macro-F1 (its best embedding, mean over the rates) below its
best probe so far: past its peak, the rest of the curve cannot be picked."""
EMBED_MODES = ("concat", "encoder", "contrastive")
EMBED_NORMS = ("none", "standardise")


# --------------------------------------------------------------------------------------------
# Validation only
# --------------------------------------------------------------------------------------------

def validation_only(dataset):
    """The dataset with each split's test nodes replaced by its validation nodes."""
    splits = {rate: {"train": s["train"], "val": s["val"], "test": s["val"]}
              for rate, s in dataset.splits.items()}
    return dataclasses.replace(dataset, splits=splits)


def validation_scores(emb, val_dataset, eval_runs: int, lr: float | None = None) -> dict:
    """Validation Macro-F1 per label rate of one embedding (no clustering, no test labels)."""
    res = evaluate_embeddings(emb, val_dataset, lr=lr, runs=eval_runs, clustering=False)
    return {rate: res.classification[rate].summary()["macro_f1"][0] for rate in res.classification}


def check_tunable(dataset) -> None:
    """Refuse, with what to do instead, a graph whose validation labels cannot score a setting:
    no labels (all ``-1``), fewer than 2 classes among them, or no validation nodes."""
    labels = dataset.labels
    labelled = labels[labels >= 0]
    classes = int(torch.unique(labelled).numel())
    with_val = [rate for rate, s in dataset.splits.items() if s["val"].numel() > 0]
    if labelled.numel() == 0:
        why = f"graph {dataset.name!r} has no labels (every data[{dataset.target!r}].y is -1)"
    elif classes < 2:
        why = (f"graph {dataset.name!r} has labels of {classes} class only; a classifier needs "
               "at least 2")
    elif not with_val:
        why = f"graph {dataset.name!r} has no validation nodes in any split"
    else:
        return
    raise NoValidationLabelsError(
        f"tuning needs validation labels: {why}. Settings are picked by validation Macro-F1, so "
        "without them there is nothing to pick by. Train with the defaults instead "
        "(hetcrf-lite train --data GRAPH --target TYPE --metapaths ...; on a graph without "
        "labels give the cluster positives a count: a --config file with num_clusters: auto), "
        f"or label some {dataset.target!r} nodes (data[TYPE].y, -1 for unlabelled) and tune "
        "again")


def _labelled_splits(dataset):
    """The dataset restricted to the label rates that have validation nodes."""
    splits = {r: s for r, s in dataset.splits.items() if s["val"].numel() > 0}
    return dataset if len(splits) == len(dataset.splits) else dataclasses.replace(
        dataset, splits=splits)


# --------------------------------------------------------------------------------------------
# Training-free baselines
# --------------------------------------------------------------------------------------------

def baseline_scores(dataset, eval_runs: int, lr: float | None = None) -> dict[str, dict]:
    """Validation Macro-F1 per rate of the two training-free baselines:
    ``{"raw features": {...} or {"skipped": why}, "propagated features": {...}}``."""
    val_dataset = validation_only(dataset)
    x = dataset.x
    out: dict[str, dict] = {}
    if is_identity(x):
        out["raw features"] = {"skipped": "identity features (one-hot node ids): a linear probe "
                               "can only memorise the training nodes, nothing carries to "
                               "unseen ones"}
    else:
        dense = (x.to_dense() if x.is_sparse else x).float()
        out["raw features"] = validation_scores(dense, val_dataset, eval_runs, lr)
    out["propagated features"] = validation_scores(propagated_features(dataset), val_dataset,
                                                   eval_runs, lr)
    return out


# --------------------------------------------------------------------------------------------
# One candidate: a training per seed, probed during training
# --------------------------------------------------------------------------------------------

def embed_label(mode: str, norm: str) -> str:
    """How tables and curves name an embedding choice: ``contrastive``, ``contrastive+std``."""
    return mode if norm == "none" else f"{mode}+std"


EMBED_LABELS = tuple(embed_label(m, n) for n in EMBED_NORMS for m in EMBED_MODES)
"""Every embedding choice by its label: ``concat``, ..., ``contrastive+std``."""


def parse_embed_label(label: str) -> tuple[str, str]:
    """The ``(embed, embed_norm)`` that :func:`embed_label` named ``label``."""
    if label not in EMBED_LABELS:
        raise ConfigError(f"embedding {label!r}: use one of {list(EMBED_LABELS)}")
    mode, std, _ = label.partition("+")
    return mode, "standardise" if std else "none"


def _modes(config: HetCRFConfig) -> list[tuple[str, str]]:
    """The ``(embed, embed_norm)`` choices scored, the starting config's first."""
    modes = ["encoder"] if not config.use_contrastive else (  # H is all there is without it
        [config.embed] + [m for m in EMBED_MODES if m != config.embed])
    norms = [config.embed_norm] + [n for n in EMBED_NORMS if n != config.embed_norm]
    return [(m, n) for n in norms for m in modes]


def _probe_epochs(config: HetCRFConfig) -> set[int]:
    """Every ``ceil(epochs / CURVE_POINTS)`` epochs and the last, plus two probes before the
    first of those (at a quarter and a half of it): on a graph the defaults were not made for
    the curve can peak early (issue 12's movie graph: at 15-25 of 200 epochs)."""
    if config.lr_schedule != "constant":
        return {config.epochs}
    every = max(1, math.ceil(config.epochs / CURVE_POINTS))
    early = {max(1, every // 4), max(1, every // 2)}
    return early | set(range(every, config.epochs + 1, every)) | {config.epochs}


def _past_peak(curve: list[dict]) -> bool:
    """Whether the last :data:`CUT_PROBES` points of ``curve`` all lie :data:`CUT_DROP` or more
    below the best point before them (each point: its best embedding, mean over rates)."""
    if len(curve) <= CUT_PROBES:
        return False
    score = [max(float(np.mean(list(v.values()))) for v in c["val_macro_f1"].values())
             for c in curve]
    return max(score[-CUT_PROBES:]) <= max(score[:-CUT_PROBES]) - CUT_DROP


def _train_probed(dataset, config: HetCRFConfig, val_dataset, eval_runs: int,
                  probe_at: set[int], cut: bool = False) -> dict[str, Any]:
    """One training; at each epoch count in ``probe_at`` (and at an early stop) the validation
    scores of every mode of the model a run of that many epochs returns. With ``cut`` the
    training ends once the curve is past its peak (:func:`_past_peak`): ``cut`` in the result
    is then that epoch, and no later epoch of this run is scored."""
    modes = _modes(config)
    curve: list[dict] = []
    halted: list[int] = []

    def scores(model) -> dict[str, dict]:
        return {embed_label(m, n): validation_scores(model.embed(m, n), val_dataset, eval_runs,
                                                     config.eval_lr) for m, n in modes}

    def probe(model, epoch: int, record: dict) -> bool:
        if epoch + 1 not in probe_at:
            return False
        with trainer.returned_model() as returned:
            curve.append({"epoch": epoch + 1, "val_macro_f1": scores(returned)})
        if cut and _past_peak(curve):
            halted.append(epoch + 1)
        return bool(halted)

    t0 = time.perf_counter()
    trainer = build_trainer(dataset, config, progress=False, on_epoch_end=probe)
    history = trainer.fit()
    trained = len(history["epochs"])
    if not curve or curve[-1]["epoch"] != trained:  # stopped early between probes
        curve.append({"epoch": trained, "val_macro_f1": scores(trainer.model)})
    out = {"epochs_trained": trained, "stopped": history["stopped"],
           "train_s": time.perf_counter() - t0, "curve": curve}
    if halted:
        out["cut"] = halted[0]
    return out


def _points(runs: dict[int, dict], modes: list[tuple[str, str]]) -> list[dict]:
    """Every (epochs, embedding) point that every seed can score, with its mean over rates and
    seeds; a seed that stopped before E counts with its final model."""
    epochs = sorted({c["epoch"] for run in runs.values() for c in run["curve"]})
    points = []
    for e in epochs:
        per_seed = {}
        for seed, run in runs.items():
            at = {c["epoch"]: c for c in run["curve"]}
            if e in at:
                per_seed[seed] = at[e]["val_macro_f1"]
            # a cut run is never extended, so no epoch past a cut gets every seed (a seed
            # trained only to that cut, its "limit", cannot reach a point beyond it)
            elif e >= run["epochs_trained"] and "cut" not in run:
                per_seed[seed] = run["curve"][-1]["val_macro_f1"]
        if len(per_seed) < len(runs):
            continue
        for mode, norm in modes:
            by_seed = {s: per_seed[s][embed_label(mode, norm)] for s in runs}
            rates = sorted(next(iter(by_seed.values())))
            per_rate = {r: float(np.mean([by_seed[s][r] for s in runs])) for r in rates}
            points.append({"epochs": e, "embed": mode, "embed_norm": norm,
                           "label": embed_label(mode, norm), "score": float(np.mean(
                [np.mean(list(v.values())) for v in by_seed.values()])),
                "val_macro_f1": per_rate, "by_seed": by_seed})
    return points


# --------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------

def _best(rows: list[dict]) -> dict | None:
    done = [r for r in rows if r.get("best")]
    return max(done, key=lambda r: r["best"]["score"]) if done else None  # first of ties


def _score_of(rows: list[dict], lr: float, tau: float) -> float:
    for r in rows:
        if r["lr"] == lr and r["tau"] == tau and r.get("best"):
            return r["best"]["score"]
    return -math.inf


def candidates(base: HetCRFConfig, rows: list[dict]) -> Iterator[tuple[float, float, str]]:
    """The search order (module docstring): yields ``(lr, tau, why)``; each step reads the
    results appended to ``rows`` so far. Points already tried are skipped."""
    tried: set[tuple[float, float]] = set()

    def new(lr: float, tau: float) -> bool:
        key = (float(f"{lr:.6g}"), float(f"{tau:.6g}"))
        return key not in tried and not tried.add(key)

    lr0, tau0 = base.lr, base.tau
    r = lambda v: float(f"{v:.6g}")  # noqa: E731 (no float noise in best.yaml)
    if new(lr0, tau0):
        yield lr0, tau0, "starting config"
    if new(r(lr0 * 4), tau0):
        yield r(lr0 * 4), tau0, "lr x4"
    up = _score_of(rows, r(lr0 * 4), tau0) > _score_of(rows, lr0, tau0)
    lr2, why = (r(lr0 * 16), "lr x16") if up else (r(lr0 / 4), "lr /4")
    if new(lr2, tau0):
        yield lr2, tau0, why
    best = _best(rows)
    lr_best = best["lr"] if best else lr0
    t1 = r(tau0 * 0.6)
    if new(lr_best, t1):
        yield lr_best, t1, "tau x0.6"
    down = _score_of(rows, lr_best, t1) > _score_of(rows, lr_best, tau0)
    t2, why = (r(tau0 * 0.36), "tau x0.36") if down else (r(tau0 / 0.6), "tau /0.6")
    if new(lr_best, t2):
        yield lr_best, t2, why
    best = _best(rows)
    if best:
        for factor, why in ((2, "lr x2"), (0.5, "lr /2")):
            if new(r(best["lr"] * factor), best["tau"]):
                yield r(best["lr"] * factor), best["tau"], why


MAX_CANDIDATES = 7
MIN_FIT = 4
"""Candidates the budget should hold: when fewer fit at the config's epochs, every candidate
trains fewer epochs (:func:`epochs_that_fit`)."""
EPOCHS_FLOOR = 20
"""No candidate is shortened below this many epochs (or the config's, if fewer)."""


def candidate_seconds(est: dict[str, float], config: HetCRFConfig, n_seeds: int) -> float:
    """Seconds of one candidate (``n_seeds`` trainings of ``config.epochs``, probed) by the
    timing run's ``est`` (:func:`_estimate`)."""
    probes = len(_probe_epochs(config))
    return n_seeds * (est["setup_s"] + est["epoch_s"] * config.epochs + est["probe_s"] * probes)


def epochs_that_fit(est: dict[str, float], config: HetCRFConfig, n_seeds: int,
                    budget_s: float) -> int:
    """The most epochs, up to ``config.epochs`` and not below :data:`EPOCHS_FLOOR`, at which
    :data:`MIN_FIT` candidates fit in ``budget_s``. On a slow machine or a large graph a
    search of one full-length candidate would not search at all; the curves this module reads
    peak earlier for the larger learning rates it tries (docs/method.md: the movie graph at 6
    of 200 epochs), so shorter candidates lose least where the search helps most."""
    floor = min(config.epochs, EPOCHS_FLOOR)
    for epochs in range(config.epochs, floor, -1):
        if MIN_FIT * candidate_seconds(est, config.replace(epochs=epochs), n_seeds) <= budget_s:
            return epochs
    return floor


def _estimate(dataset, base: HetCRFConfig, val_dataset, eval_runs: int,
              seeds: list[int]) -> dict[str, float]:
    """Time the first epochs and one probe of the starting config: seconds of one training and
    of one candidate (all seeds)."""
    epochs = min(TIMING_EPOCHS, base.epochs)
    config = base.replace(epochs=epochs, seed=seeds[0], patience=max(base.patience, epochs))
    stamps: list[float] = []
    t0 = time.perf_counter()
    trainer = build_trainer(dataset, config, progress=False,
                            on_epoch_end=lambda *_: stamps.append(time.perf_counter()))
    trainer.fit()
    setup = stamps[0] - t0 - (stamps[1] - stamps[0] if len(stamps) > 1 else 0.0)
    per_epoch = (stamps[-1] - t0 - max(setup, 0.0)) / len(stamps)
    t1 = time.perf_counter()
    for mode, norm in _modes(base):
        validation_scores(trainer.model.embed(mode, norm), val_dataset, eval_runs, base.eval_lr)
    probe = time.perf_counter() - t1
    est = {"setup_s": max(setup, 0.0), "epoch_s": per_epoch, "probe_s": probe,
           "probes": len(_probe_epochs(base))}
    return {**est, "training_s": candidate_seconds(est, base, 1),
            "candidate_s": candidate_seconds(est, base, len(seeds)),
            "timing_run_s": time.perf_counter() - t0}


def tune(dataset, base: HetCRFConfig, seeds: list[int] | tuple[int, ...] = (0, 1, 2),
         budget_s: float = 600.0, eval_runs: int = 5, progress: bool = True,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """The budgeted validation-only search of the module docstring.

    Args:
        dataset (HINDataset): the graph, with validation labels (:func:`check_tunable`).
        base (HetCRFConfig): the starting config (the first candidate).
        seeds (list of int): training seeds; every candidate trains once per seed.
        budget_s (float): seconds; no candidate starts once the time spent plus one candidate's
            estimate would pass it (the first always runs).
        eval_runs (int): logistic-regression runs per validation score.
        progress (bool): a tqdm bar over the trainings (on stderr).
        log (callable): where the estimate and each candidate's line go.

    Returns:
        dict: ``rows`` (every candidate: lr, tau, per-seed curves, best point, seconds; best
        first), ``best`` (the winning row), ``best_config`` (a :class:`HetCRFConfig`),
        ``baselines``, ``estimate``, ``budget_s``, ``skipped`` (why the search stopped).
    """
    seeds = list(seeds)
    _check_tune_settings(base, seeds, budget_s, eval_runs)
    check_tunable(dataset)
    dataset = _labelled_splits(dataset)
    val_dataset = validation_only(dataset)
    start = time.perf_counter()
    quiet = {"grad_balance_every": 0, "channel_grad_every": 0}  # logging only: same training
    base_run = base.replace(**{k: 0 for k in quiet if hasattr(base, k)})

    baselines = baseline_scores(dataset, eval_runs, base.eval_lr)
    est = _estimate(dataset, base_run, val_dataset, eval_runs, seeds)
    left = budget_s - (time.perf_counter() - start)
    base_run = _fit_to_budget(est, base_run, len(seeds), budget_s, left, log)
    per_candidate = candidate_seconds(est, base_run, len(seeds))
    fit_n = max(1, int(left // per_candidate))
    log(f"about {min(fit_n, MAX_CANDIDATES)} of at most {MAX_CANDIDATES} candidates fit in "
        f"{budget_s / 60:g} min")

    rows: list[dict] = []
    skipped = None
    bar = tqdm(total=min(fit_n, MAX_CANDIDATES) * len(seeds), desc="tune", unit="training",
               disable=not progress, file=sys.stderr)
    for lr, tau, why in candidates(base, rows):
        elapsed = time.perf_counter() - start
        if rows and elapsed + per_candidate > budget_s:
            skipped = (f"budget: {elapsed:.0f} s spent, one more candidate ~{per_candidate:.0f} "
                       f"s would pass {budget_s:.0f} s")
            break
        row = _run_candidate(dataset, val_dataset, base_run.replace(lr=lr, tau=tau), why, seeds,
                             eval_runs, bar)
        _log_candidate(row, log)
        rows.append(row)
        measured = [r["seconds"] for r in rows if "failed" not in r]
        per_candidate = float(np.mean(measured)) if measured else per_candidate
        left = budget_s - (time.perf_counter() - start)
        more = min(max(0, int(left // per_candidate)), MAX_CANDIDATES - len(rows))
        bar.total = (len(rows) + more) * len(seeds)
        bar.refresh()
    bar.close()
    return {**_outcome(rows, base), "baselines": baselines, "estimate": est,
            "epochs_cap": base_run.epochs if base_run.epochs < base.epochs else None,
            "budget_s": budget_s, "seconds": time.perf_counter() - start, "seeds": seeds,
            "eval_runs": eval_runs, "skipped": skipped, "base_config": base}


def _fit_to_budget(est: dict[str, float], config: HetCRFConfig, n_seeds: int, budget_s: float,
                   left_s: float, log: Callable[[str], None]) -> HetCRFConfig:
    """Log the timing run's estimate; ``config`` shortened by :func:`epochs_that_fit` when
    fewer than :data:`MIN_FIT` candidates of its epochs fit in the ``left_s`` seconds."""
    log(f"one training ~{est['training_s']:.1f} s ({est['setup_s']:.1f} s set-up, "
        f"{est['epoch_s']:.3f} s/epoch x {config.epochs} epochs, {est['probes']} validation "
        f"probes x {est['probe_s']:.2f} s); one candidate ({n_seeds} seeds) "
        f"~{est['candidate_s']:.0f} s")
    epochs = epochs_that_fit(est, config, n_seeds, left_s)
    if epochs < config.epochs:
        log(f"fewer than {MIN_FIT} candidates of {config.epochs} epochs fit in "
            f"{budget_s / 60:g} min: each candidate trains at most {epochs} epochs (a larger "
            f"--budget keeps more)")
        config = config.replace(epochs=epochs)
    return config


def _check_tune_settings(base: HetCRFConfig, seeds: list[int], budget_s: float,
                         eval_runs: int) -> None:
    """Refuse, with the fix, settings :func:`tune` cannot run with."""
    if not seeds:
        raise ConfigError("tune needs at least one seed (--seeds 0 1 2)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} repeat one; give each seed once")
    if not budget_s > 0 or not math.isfinite(budget_s):
        raise ConfigError(f"budget {budget_s} s must be a positive number of seconds "
                          "(--budget MINUTES, e.g. 10)")
    if eval_runs < 1:
        raise ConfigError(f"eval_runs {eval_runs} must be >= 1")
    if base.batch_size is not None:
        raise ConfigError("tune trains full batch; the starting config sets batch_size "
                          f"{base.batch_size}: set batch_size: null")


def _run_candidate(dataset, val_dataset, config: HetCRFConfig, why: str, seeds: list[int],
                   eval_runs: int, bar: Any) -> dict[str, Any]:
    """One candidate (``config``'s lr and tau) trained once per seed with validation probes:
    its row, with ``points`` and ``best``, or ``failed`` when a training diverged."""
    row: dict[str, Any] = {"lr": config.lr, "tau": config.tau, "why": why, "runs": {}}
    t0 = time.perf_counter()
    limit = config.epochs  # a seed cut at epoch c: later seeds need not train past c
    try:
        for seed in seeds:
            bar.set_postfix_str(f"{why}: lr {config.lr:g} tau {config.tau:g} seed {seed}")
            run = _train_probed(dataset, config.replace(seed=seed, epochs=limit), val_dataset,
                                eval_runs, {e for e in _probe_epochs(config) if e <= limit},
                                cut=True)
            if limit < config.epochs:
                run["limit"] = limit
            limit = min(limit, run.get("cut", limit))
            row["runs"][seed] = run
            bar.update(1)
    except TrainingError as err:
        row["failed"] = str(err).splitlines()[0][:300]
    row["seconds"] = time.perf_counter() - t0
    if "failed" not in row:
        row["points"] = _points(row["runs"], _modes(config))
        row["best"] = max(row["points"], key=lambda p: p["score"])  # first of ties
    return row


def _log_candidate(row: dict[str, Any], log: Callable[[str], None]) -> None:
    """The line :func:`tune` logs for one candidate."""
    what = f"  {row['why']}: lr {row['lr']:g}, tau {row['tau']:g}"
    if "failed" in row:
        log(f"{what}: failed ({row['failed']})")
        return
    cells = " / ".join(f"{v:.2f}" for v in row["best"]["val_macro_f1"].values())
    cuts = sorted({run["cut"] for run in row["runs"].values() if "cut" in run})
    cut = f", past its peak: cut at {cuts[0]} epochs" if cuts else ""
    log(f"{what}: val Macro-F1 {row['best']['score']:.2f} [{cells}] at "
        f"{row['best']['epochs']} epochs, {row['best']['label']} ({row['seconds']:.0f} s{cut})")


def _outcome(rows: list[dict[str, Any]], base: HetCRFConfig) -> dict[str, Any]:
    """``rows`` best first, the best row, its config, and the starting config's own score."""
    best = _best(rows)
    if best is None:
        raise TrainingError("every candidate failed to train (NaN/Inf): " + rows[0]["failed"])
    best_config = base.replace(lr=best["lr"], tau=best["tau"], epochs=best["best"]["epochs"],
                               embed=best["best"]["embed"], embed_norm=best["best"]["embed_norm"])
    starting = rows[0].get("points", [])
    first = embed_label(*_modes(base)[0])
    as_given = next((p for p in starting if p["epochs"] == base.epochs and p["label"] == first),
                    None)
    ordered = sorted(rows, key=lambda r: -r["best"]["score"] if r.get("best") else math.inf)
    return {"rows": ordered, "best": best, "best_config": best_config,
            "starting_config_score": as_given}


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------

def format_table(result: dict[str, Any]) -> str:
    """Candidates best first, then the baselines, as printed by ``hetcrf-lite tune``."""
    rates = sorted(result["best"]["best"]["val_macro_f1"])
    head = "/".join(map(str, rates))
    lines = [f"validation Macro-F1 (mean over rates {head} and seeds "
             f"{' '.join(map(str, result['seeds']))}), best first",
             f"{'score':>7} | {'per rate ' + head:>24} | {'lr':>9} | {'tau':>6} | {'epochs':>6} "
             f"| {'embed':>15} | {'s':>6} | candidate"]
    lines.append("-" * len(lines[-1]))
    for r in result["rows"]:
        if not r.get("best"):
            lines.append(f"{'failed':>7} | {'':>24} | {r['lr']:>9g} | {r['tau']:>6g} | "
                         f"{'':>6} | {'':>15} | {r['seconds']:>6.0f} | {r['why']}")
            continue
        b = r["best"]
        cells = " / ".join(f"{b['val_macro_f1'][k]:.2f}" for k in rates)
        lines.append(f"{b['score']:>7.2f} | {cells:>24} | {r['lr']:>9g} | {r['tau']:>6g} | "
                     f"{b['epochs']:>6} | {b['label']:>15} | {r['seconds']:>6.0f} | {r['why']}")
    given = result.get("starting_config_score")
    if given:
        lines.append(f"the starting config as it is ({given['epochs']} epochs, {given['label']}): "
                     f"{given['score']:.2f}")
    lines.append("training-free baselines on the same validation splits:")
    for name, scores in result["baselines"].items():
        if "skipped" in scores:
            lines.append(f"  {name}: skipped ({scores['skipped']})")
        else:
            cells = " / ".join(f"{scores[k]:.2f}" for k in rates if k in scores)
            lines.append(f"  {name}: {np.mean(list(scores.values())):.2f} [{cells}]")
    if result.get("epochs_cap"):
        lines.append(f"each candidate trained at most {result['epochs_cap']} epochs (the "
                     f"budget held fewer than {MIN_FIT} candidates of the config's)")
    if result.get("skipped"):
        lines.append(f"stopped: {result['skipped']}")
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out: Path, command: str = "") -> tuple[Path, Path]:
    """``out/tune.json`` (every candidate, per seed and rate; budget, configs, versions) and
    ``out/best.yaml`` (accepted by ``hetcrf-lite train --config``)."""


    ensure_folder(out)
    best = result["best"]
    config: HetCRFConfig = result["best_config"]
    header = (f"# hetcrf-lite tune: validation Macro-F1 {best['best']['score']:.2f} (mean over "
              f"rates and seeds {' '.join(map(str, result['seeds']))}), no test label read\n"
              + (f"# {command}\n" if command else "")
              + "# train: hetcrf-lite train --config best.yaml --out RUN_DIR\n")
    text = header + yaml.safe_dump(config.to_dict(), sort_keys=False)
    yaml_path, json_path = out / "best.yaml", out / "tune.json"
    atomic_write_bytes(yaml_path, lambda fh: fh.write(text.encode()))
    plain = {k: v for k, v in result.items() if k not in ("best_config", "base_config", "best")}
    plain.update({"command": command, "best_index": result["rows"].index(best),
                  "best_config": config.to_dict(), "base_config": result["base_config"].to_dict(),
                  "seed": result["seeds"], "env": environment_info(),
                  "score": "validation Macro-F1 (%), mean over label rates then seeds; test "
                           "nodes replaced by validation nodes"})
    save_json(plain, json_path)
    return json_path, yaml_path
