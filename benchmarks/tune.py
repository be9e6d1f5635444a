"""Validation-only tuning grid over the shipped config (built on ``hetcrf_lite.tune``).

    HETCRF_DATA=/path/to/heco python benchmarks/tune.py --dataset aminer \\
        --grid lr=0.001,0.003 tau=0.5,0.8 --seeds 0 --out runs/tune
    # validation score every 10 epochs while training (how the shipped epoch counts were picked)
    python benchmarks/tune.py --dataset acm --seeds 0 1 2 --fixed epochs=200 patience=1000 \\
        --curve-every 10 --figure figures/tune_curve_acm.png
    python benchmarks/tune.py --dataset acm --replot a.json b.json --figure curve.png

Every grid point trains with ``default_config(dataset, **point)`` and is scored with each label
rate's validation nodes standing in for its test nodes (no test label is read). Writes
``<dataset>-tune.json`` and ``<dataset>-best.yaml`` in ``--out``. For a budgeted search on any
graph (lr, tau, epochs and embedding, with a progress bar and a time budget) use
``hetcrf-lite tune`` instead; see ``hetcrf_lite/tune.py``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from hetcrf_lite.config import HetCRFConfig, default_config
from hetcrf_lite.errors import ConfigError
from hetcrf_lite.files import save_json
from hetcrf_lite.plot import plt, write_png
from hetcrf_lite.train import build_trainer
from hetcrf_lite.tune import (EMBED_LABELS, embed_label, parse_embed_label, validation_only,
                              validation_scores)
from hetcrf_lite.utils import environment_info, load_named_dataset

ROOT = Path(__file__).resolve().parents[1]


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["lr=0.001,0.003", "embed=concat,encoder"]`` -> ``{"lr": [0.001, 0.003], ...}``."""
    grid = {}
    for item in items:
        key, _, values = item.partition("=")
        if not values:
            raise ConfigError(f"--grid {item!r}: write KEY=V1,V2,...")
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def score(dataset, changes: dict, seed: int, eval_runs: int,
          embed_modes: list[str] | None = None, curve_every: int = 0,
          base: HetCRFConfig | None = None) -> dict[str, dict]:
    """Train once; score each final-embedding mode (no retraining needed): {mode: row}.

    The config is ``base`` (default: ``default_config(dataset.name)``) with ``changes``. With
    ``curve_every`` the embeddings are also scored every that many epochs *during* training,
    through the trainer's ``on_epoch_end`` hook, which leaves the training itself as it is
    without probes. A probe scores the model a run of that many epochs returns (its lowest-loss
    epoch so far, ``Trainer.returned_model``), as ``hetcrf-lite tune`` does, so a curve point
    is the score of ``epochs: E`` without training it; logs before 2026-12-07 scored the
    current parameters instead.
    """
    base = base if base is not None else default_config(dataset.name)
    config = base.replace(**{"grad_balance_every": 0, **changes, "seed": seed})
    modes = embed_modes or [embed_label(config.embed, config.embed_norm)]
    val_dataset = validation_only(dataset)
    curve: list[dict] = []

    def probe(model, epoch: int, record: dict) -> None:
        if not curve_every or (epoch + 1) % curve_every:
            return
        with trainer.returned_model() as returned:
            curve.append({"epoch": epoch + 1, "loss": record["loss"],
                          **{mode: validation_scores(returned.embed(*parse_embed_label(mode)),
                                                     val_dataset, eval_runs)
                             for mode in modes}})
        means = " ".join(f"{mode} {np.mean(list(curve[-1][mode].values())):.2f}" for mode in modes)
        print(f"    seed {seed} epoch {epoch + 1}: loss {record['loss']:.4f}, val {means}",
              flush=True)

    t0 = time.perf_counter()
    trainer = build_trainer(dataset, config, progress=False, on_epoch_end=probe)
    history = trainer.fit()
    model = trainer.model
    train_s = time.perf_counter() - t0
    rows = {}
    for mode in modes:
        rows[mode] = {"val_macro_f1": validation_scores(model.embed(*parse_embed_label(mode)),
                                                        val_dataset, eval_runs),
                      "epochs": len(history["epochs"]), "best_epoch": history["best_epoch"],
                      "stopped": history["stopped"], "train_s": train_s,
                      "curve": [{"epoch": c["epoch"], "loss": c["loss"], "val_macro_f1": c[mode]}
                                for c in curve]}
    return rows


def curve_summary(curves: list[list[dict]]) -> list[dict]:
    """Per probed epoch: the score (mean over rates and seeds) and each seed's mean over rates."""
    out = []
    for points in zip(*curves):  # ends at the first seed's last probe (early stops)
        by_seed = [float(np.mean(list(p["val_macro_f1"].values()))) for p in points]
        out.append({"epoch": points[0]["epoch"], "score": float(np.mean(by_seed)),
                    "by_seed": by_seed})
    return out


def merge_results(results: list[dict], dataset: str) -> dict:
    """Several tune results as one: each row's point gains the fixed settings that differ."""
    keys = {k for r in results for k in r["fixed"]}
    differ = {k for k in keys if len({json.dumps(r["fixed"].get(k)) for r in results}) > 1}
    rows = [{**row, "point": {**{k: r["fixed"].get(k, "config default") for k in sorted(differ)},
                              **row["point"]}}
            for r in results for row in r["rows"]]
    return {"dataset": dataset, "seeds": results[0]["seeds"], "rows": rows,
            "fixed": {k: v for k, v in results[0]["fixed"].items() if k not in differ}}


def plot_curves(result: dict, path: Path) -> None:
    """Validation score against epoch for each grid point: one thin line per seed, the mean bold."""
    rows = [r for r in result["rows"] if r.get("curve")]
    if not rows:
        raise ConfigError("no curve to plot: run with --curve-every N")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, row in enumerate(rows):
        epochs = [c["epoch"] for c in row["curve"]]
        color = f"C{i}"
        for seed_scores in zip(*(c["by_seed"] for c in row["curve"])):  # one line per seed
            ax.plot(epochs, seed_scores, color=color, alpha=0.35, lw=1)
        label = ", ".join(f"{k}={v}" for k, v in row["point"].items()) or "shipped config"
        ax.plot(epochs, [c["score"] for c in row["curve"]], color=color, lw=2.2,
                label=f"{label} (mean of seeds {', '.join(map(str, result['seeds']))})")
    fixed = ", ".join(f"{k}={v}" for k, v in result["fixed"].items())
    title = f"{result['dataset']}: validation during training" + (f" ({fixed})" if fixed else "")
    ax.set(xlabel="epoch", ylabel="validation Macro-F1 (mean over rates)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_png(fig, path)
    print(f"figure written to {path}")


def grid_main(argv: list[str] | None = None, root: Path | None = None) -> int:
    """``python benchmarks/tune.py``: the grid, ``--fixed``, ``--curve-every``, ``--figure``,
    ``--replot``. A named error is one line and exit status 2."""
    try:
        return _grid_main(argv, root or Path.cwd())
    except ConfigError as err:
        print(f"tune.py: error: {err}", file=sys.stderr)
        return 2


def _grid_parser(root: Path) -> argparse.ArgumentParser:
    """The options of ``benchmarks/tune.py``."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/tune.py",
        description="Validation-only tuning: a grid over the shipped config, scored on the "
                    "validation splits (hetcrf_lite.tune).")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--grid", nargs="+", default=[], help="KEY=V1,V2 ... (YAML values)")
    parser.add_argument("--fixed", nargs="+", default=[], help="KEY=V changes for every point")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--eval-runs", type=int, default=10)
    parser.add_argument("--embed-modes", nargs="+", default=None,
                        choices=EMBED_LABELS,
                        help="score these final embeddings of each trained model (free; "
                             "+std: columns standardised)")
    parser.add_argument("--curve-every", type=int, default=0,
                        help="also score the embeddings every N epochs during training")
    parser.add_argument("--figure", default=None,
                        help="with --curve-every: plot the curves to this PNG")
    parser.add_argument("--replot", nargs="+", default=None, metavar="TUNE_JSON",
                        help="only redraw --figure from saved <dataset>-tune.json files (several: "
                             "one figure, lines labelled by the settings they differ in)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop starting new points after this many seconds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(root / "runs" / "tune"))
    return parser


def _grid_rows(point: dict[str, Any], by_seed: list[dict[str, Any]],
               embed_modes: Any) -> list[dict[str, Any]]:
    """One row per scored embedding of a grid point, its seeds' results averaged (printed)."""
    rows = []
    for mode in by_seed[0]:
        runs = [seed_rows[mode] for seed_rows in by_seed]
        rates = sorted(runs[0]["val_macro_f1"])
        per_rate = {r: float(np.mean([run["val_macro_f1"][r] for run in runs])) for r in rates}
        embed, norm = parse_embed_label(mode)
        full = ({**point, "embed": embed, **({"embed_norm": norm} if norm != "none" else {})}
                if embed_modes else point)
        row = {"point": full, "val_macro_f1": per_rate,
               "score": float(np.mean(list(per_rate.values()))),
               "epochs": [run["epochs"] for run in runs],
               "best_epoch": [run["best_epoch"] for run in runs],
               "curve": curve_summary([run["curve"] for run in runs]),
               "train_s": float(np.mean([run["train_s"] for run in runs]))}
        print(f"  {full}: val Macro-F1 {per_rate} (score {row['score']:.2f}, "
              f"{row['train_s']:.1f} s, lowest loss at epochs {row['best_epoch']})", flush=True)
        for c in row["curve"]:
            print(f"    epoch {c['epoch']:4d}: score {c['score']:.2f} "
                  f"(seeds {' / '.join(f'{v:.2f}' for v in c['by_seed'])})", flush=True)
        rows.append(row)
    return rows


def _grid_main(argv: list[str] | None, root: Path) -> int:
    """``benchmarks/tune.py``: the grid, its table, ``<dataset>-best.yaml`` and
    ``<dataset>-tune.json`` (and the curves' figure)."""
    args = _grid_parser(root).parse_args(argv)
    if args.replot:
        plot_curves(merge_results([json.loads(Path(f).read_text()) for f in args.replot],
                                  args.dataset), Path(args.figure or f"{args.dataset}-curve.png"))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)


    grid = parse_grid(args.grid)
    fixed = {k: v[0] for k, v in parse_grid(args.fixed).items()}
    base = default_config(args.dataset, **fixed)
    dataset = load_named_dataset(args.dataset, pos_num=base.pos_num, pos_score=base.pos_score)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.perf_counter()
    for done, point in enumerate(tqdm(points, desc=f"tune {args.dataset}", file=sys.stdout)):
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: {len(points) - done} points skipped")
            break
        by_seed = [score(dataset, {**fixed, **point}, s, args.eval_runs, args.embed_modes,
                         args.curve_every)
                   for s in args.seeds]
        rows += _grid_rows(point, by_seed, args.embed_modes)
    rows.sort(key=lambda r: -r["score"])
    print(f"\n{args.dataset}: validation Macro-F1 (mean over rates and seeds {args.seeds}), "
          "best first")
    for r in rows:
        cells = " / ".join(f"{v:.2f}" for v in r["val_macro_f1"].values())
        print(f"{r['score']:6.2f}  [{cells}]  epochs {r['epochs']}  {r['point']}")
    best = default_config(args.dataset, **{**fixed, **rows[0]["point"]})
    best.save(out / f"{args.dataset}-best.yaml")
    result = {"command": "python benchmarks/tune.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "dataset": args.dataset, "fixed": fixed, "grid": grid, "seeds": args.seeds,
              "rows": rows, "env": environment_info()}
    save_json(result, out / f"{args.dataset}-tune.json")
    if args.figure:
        plot_curves(result, Path(args.figure))
    print(f"best point written to {out / f'{args.dataset}-best.yaml'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return grid_main(argv, ROOT)


if __name__ == "__main__":
    sys.exit(main())
