"""hetcrf-lite: train, evaluate, describe, umap.

Examples:

    hetcrf-lite train --dataset synthetic --out runs/demo
    hetcrf-lite train --dataset acm --seed 1 --epochs 100 --out runs/acm
    hetcrf-lite evaluate runs/acm/embeddings.npy --dataset acm
    hetcrf-lite describe --dataset dblp
    hetcrf-lite umap runs/acm
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import DataError, DataFileNotFoundError, HetCRFError


def _load(name: str, config=None, seed: int = 0):
    """The dataset a run needs: one of the four benchmarks or the synthetic default."""
    if name == "synthetic":
        from .synthetic import make_synthetic_hin

        return make_synthetic_hin(seed=seed)
    from .data import load_dataset

    kwargs = {}
    if config is not None:
        kwargs = {"pos_num": config.pos_num, "pos_score": config.pos_score}
    return load_dataset(name, **kwargs)


def cmd_train(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from .config import HetCRFConfig, default_config
    from .train import train_run

    if args.config:
        config = HetCRFConfig.load(args.config)
    else:
        config = default_config(args.dataset)
    changes = {k: v for k, v in (("seed", args.seed), ("epochs", args.epochs),
                                  ("device", args.device), ("batch_size", args.batch_size))
               if v is not None}
    if changes:
        config = config.replace(**changes)
    out = Path(args.out) if args.out else Path("runs") / f"{config.dataset}-seed{config.seed}"
    start = time.perf_counter()
    result = train_run(config, out, resume=args.resume, progress=not args.quiet,
                       eval_runs=args.eval_runs)
    print(result["results"])
    print(f"\nrun folder: {out}  ({time.perf_counter() - start:.1f} s, "
          f"{len(result['history']['epochs'])} epochs; {result['history']['stopped']})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .eval import evaluate_embeddings

    path = Path(args.embeddings)
    if not path.is_file():
        raise DataFileNotFoundError(f"embeddings file {path} does not exist; write one with "
                                    "'hetcrf-lite train --out DIR' (DIR/embeddings.npy)")
    try:
        emb = np.load(path, allow_pickle=False)
    except ValueError as err:  # not an .npy array file (or an object array)
        raise DataError(f"{path} is not a numeric .npy array file: {err}") from err
    dataset = _load(args.dataset, seed=args.seed)
    results = evaluate_embeddings(emb, dataset, runs=args.runs, lr=args.lr)
    print(results)
    if args.json:
        results.save_json(args.json)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from .data import describe

    print(describe(_load(args.dataset, seed=args.seed)))
    return 0


def cmd_umap(args: argparse.Namespace) -> int:
    from .plot import umap_figure_for_run

    path = umap_figure_for_run(args.run_dir, out=args.out, seed=args.seed)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hetcrf-lite", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train HetCRF and write a run folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  hetcrf-lite train --dataset acm --seed 0 --out runs/acm\n"
               "writes embeddings.npy, history.json, config.yaml, metrics.json, loss.png")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=["synthetic", "acm", "dblp", "aminer", "freebase"])
    source.add_argument("--config", help="a YAML config file (see hetcrf_lite/configs/)")
    train.add_argument("--seed", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"])
    train.add_argument("--batch-size", type=int, help="seeds per subgraph mini-batch step "
                       "(default: full batch); for graphs whose full-batch pass does not fit")
    train.add_argument("--out", help="run folder (default runs/<dataset>-seed<seed>)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--eval-runs", type=int, default=50, help="logistic-regression repeats")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; "
                       "1 is faster on a busy small machine)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="classification and clustering metrics of embeddings",
                        epilog="example:\n  hetcrf-lite evaluate runs/acm/embeddings.npy --dataset acm",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("embeddings", help=".npy file of [N, D] embeddings of the target nodes")
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--seed", type=int, default=0, help="seed of the synthetic graph")
    ev.add_argument("--runs", type=int, default=50)
    ev.add_argument("--lr", type=float, default=None)
    ev.add_argument("--json", help="also write the metrics here")
    ev.set_defaults(func=cmd_evaluate)

    de = sub.add_parser("describe", help="node, relation and meta-path statistics")
    de.add_argument("--dataset", required=True)
    de.add_argument("--seed", type=int, default=0)
    de.set_defaults(func=cmd_describe)

    um = sub.add_parser("umap", help="UMAP figure of a run's embeddings, coloured by class")
    um.add_argument("run_dir")
    um.add_argument("--out", help="PNG path (default RUN_DIR/umap.png)")
    um.add_argument("--seed", type=int, default=0)
    um.set_defaults(func=cmd_umap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HetCRFError as err:
        print(f"hetcrf-lite: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
