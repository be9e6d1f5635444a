"""hetcrf-lite: train, evaluate, describe, umap.

Examples:

    hetcrf-lite train --dataset synthetic --out runs/demo
    hetcrf-lite train --dataset acm --seed 1 --epochs 100 --out runs/acm
    hetcrf-lite train --resume --out runs/acm --override lr=4e-4
    hetcrf-lite evaluate runs/acm/embeddings.npy --dataset acm
    hetcrf-lite describe --dataset dblp
    hetcrf-lite umap runs/acm
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError, DataFileNotFoundError, HetCRFError, OutputError

EXIT_ERROR = 2  # a named error, one line on stderr (as argparse's usage errors)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), checkpoint saved


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


def _train_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Path]:
    """``(config or None, overrides, run folder)`` of ``train``. With ``--resume`` the config
    may be left out (the checkpoint's is used); ``--epochs`` and ``--device`` then count as
    overrides, and ``--override FIELD=VALUE`` gives the others."""
    from .config import HetCRFConfig, default_config, parse_override
    from .train import resume_config

    if not (args.config or args.dataset or args.resume):
        raise ConfigError("train needs --dataset or --config (or --resume --out RUN_DIR to "
                          "continue a run)")
    overrides: dict[str, Any] = {}
    for text in args.override or []:
        name, value = parse_override(text)
        if name in overrides:
            raise ConfigError(f"--override {name} is given twice; give it once")
        overrides[name] = value
    if overrides and not args.resume:
        raise ConfigError("--override changes a resumed run (--resume); for a fresh run use "
                          "--config FILE or the flags")
    flags = {k: v for k, v in (("seed", args.seed), ("epochs", args.epochs),
                                ("device", args.device), ("batch_size", args.batch_size))
             if v is not None}
    if args.resume:
        for name in ("epochs", "device"):  # safe fields: a flag is an explicit change
            if name in flags:
                overrides.setdefault(name, flags.pop(name))
    config = (HetCRFConfig.load(args.config) if args.config
              else default_config(args.dataset) if args.dataset else None)
    if config is None and not args.out:
        raise ConfigError("--resume without --dataset or --config needs --out RUN_DIR (the "
                          "folder holding checkpoint.pt)")
    out = Path(args.out) if args.out else Path("runs") / f"{config.dataset}-seed{config.seed}"
    if flags:
        base = config if config is not None else resume_config(out)
        config = base.replace(**flags)
    return config, overrides, out


def cmd_train(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from .train import train_run

    config, overrides, out = _train_config(args)
    start = time.perf_counter()
    result = train_run(config, out, resume=args.resume, progress=not args.quiet,
                       eval_runs=args.eval_runs, overrides=overrides)
    history = result["history"]
    if result["interrupted"]:
        print(f"\n{history['stopped']}; checkpoint saved in {out}. Continue with: "
              f"hetcrf-lite train --resume --out {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result["results"])
    print(f"\nrun folder: {out}  ({time.perf_counter() - start:.1f} s, "
          f"{len(result['history']['epochs'])} epochs; {result['history']['stopped']})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .eval import evaluate_embeddings

    emb = _read_embeddings(Path(args.embeddings))
    if args.json:
        _check_output_file(Path(args.json))  # before the evaluation, not after it
    dataset = _load(args.dataset, seed=args.seed)
    results = evaluate_embeddings(emb, dataset, runs=args.runs, lr=args.lr)
    print(results)
    if args.json:
        from .files import atomic_write_bytes

        # NaN AUCs are written as JSON's non-standard NaN, which json.load reads back
        text = json.dumps(results.to_dict(), indent=2)
        atomic_write_bytes(Path(args.json), lambda fh: fh.write(text.encode()))
    return 0


def _read_embeddings(path: Path) -> np.ndarray:
    """A numeric 2-D ``.npy`` array, or a :class:`DataError` saying what the file is instead."""
    if not path.is_file():
        raise DataFileNotFoundError(f"embeddings file {path} does not exist; write one with "
                                    "'hetcrf-lite train --out DIR' (DIR/embeddings.npy)")
    try:
        emb = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a numeric .npy array file ({err}); give the "
                        "embeddings.npy of a run") from err
    if not isinstance(emb, np.ndarray):  # an .npz archive
        emb.close()
        raise DataError(f"{path} is an .npz archive, not an .npy array; save one array with "
                        "numpy.save (a run's embeddings.npy is one)")
    if emb.ndim != 2 or emb.dtype.kind not in "biuf":
        raise DataError(f"{path} holds a {emb.dtype} array of shape {emb.shape}; embeddings "
                        "are a numeric [N, D] array")
    return emb


def _check_output_file(path: Path) -> None:
    """Fail before any work when ``path`` cannot become a file (a folder, under a file)."""
    from .files import ensure_folder

    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name such as "
                          f"{path / 'metrics.json'}")
    ensure_folder(path.parent if str(path.parent) else Path("."))


def cmd_describe(args: argparse.Namespace) -> int:
    from .data import describe

    print(describe(_load(args.dataset, seed=args.seed)))
    return 0


def cmd_umap(args: argparse.Namespace) -> int:
    from .plot import umap_figure_for_run

    path = umap_figure_for_run(args.run_dir, out=args.out, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .train import migrate_checkpoint

    print(f"migrated {migrate_checkpoint(args.checkpoint)}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


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
    source = train.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=["synthetic", "acm", "dblp", "aminer", "freebase"])
    source.add_argument("--config", help="a YAML config file (see hetcrf_lite/configs/)")
    train.add_argument("--seed", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"])
    train.add_argument("--batch-size", type=int, help="seeds per subgraph mini-batch step "
                       "(default: full batch); for graphs whose full-batch pass does not fit")
    train.add_argument("--out", help="run folder (default runs/<dataset>-seed<seed>)")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt with its config (--dataset and "
                       "--config may be left out; if given they must match it)")
    train.add_argument("--override", action="append", metavar="FIELD=VALUE",
                       help="with --resume: change a safe field (epochs, lr, weight_decay, "
                       "patience, min_epochs, grad_balance_every, eval_lr, device); repeatable")
    train.add_argument("--eval-runs", type=_positive_int, default=50,
                       help="logistic-regression repeats")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=_positive_int,
                       help="torch CPU threads (default: torch's choice; 1 is faster on a busy "
                       "small machine). Same seed, same embeddings at a given thread count")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="classification and clustering metrics of embeddings",
                        epilog="example:\n  hetcrf-lite evaluate runs/acm/embeddings.npy --dataset acm",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("embeddings", help=".npy file of [N, D] embeddings of the target nodes")
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--seed", type=int, default=0, help="seed of the synthetic graph")
    ev.add_argument("--runs", type=_positive_int, default=50)
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

    mi = sub.add_parser("migrate-checkpoint",
                        help="rewrite a checkpoint of hetcrf-lite before issue 13 in the safe "
                        "format (unpickles it: only for a file you wrote yourself)")
    mi.add_argument("checkpoint")
    mi.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; every named error (and any other operating-system error: a file that
    cannot be read or written) is one line on stderr and exit status 2, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HetCRFError as err:
        print(f"hetcrf-lite: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"hetcrf-lite: error: {err.strerror or err}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("hetcrf-lite: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
