"""hetcrf-lite: train, evaluate, describe, umap, embed, tune.

Examples:

    hetcrf-lite train --dataset synthetic --out runs/demo
    hetcrf-lite train --dataset acm --seed 1 --epochs 100 --out runs/acm
    hetcrf-lite train --resume --out runs/acm --override lr=4e-4
    hetcrf-lite evaluate runs/acm/embeddings.npy --dataset acm
    hetcrf-lite describe --dataset dblp
    hetcrf-lite umap runs/acm
    hetcrf-lite train --data graph.pt --target paper --metapaths PAP PSP --out runs/mine
    hetcrf-lite evaluate runs/mine
    hetcrf-lite embed runs/mine --out runs/mine/reloaded.npy
    hetcrf-lite tune --data graph.pt --target paper --metapaths PAP PSP --out runs/tune
"""
from __future__ import annotations

import argparse
import os
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


def _train_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Path]:
    """``(config or None, overrides, run folder)`` of ``train``. With ``--resume`` the config
    may be left out (the checkpoint's is used); ``--epochs`` and ``--device`` then count as
    overrides, and ``--override FIELD=VALUE`` gives the others."""
    from .config import parse_override
    from .trainer import resume_config

    graph = graph_fields(args)
    if not (args.config or args.dataset or args.resume or graph):
        raise ConfigError("train needs --dataset, --data GRAPH or --config (or --resume --out "
                          "RUN_DIR to continue a run)")
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
    config = _named_config(args, graph)
    if config is None and not args.out:
        raise ConfigError("--resume without --dataset or --config needs --out RUN_DIR (the "
                          "folder holding checkpoint.pt)")
    out = Path(args.out) if args.out else Path("runs") / f"{config.dataset}-seed{config.seed}"
    if flags:
        base = config if config is not None else resume_config(out)
        config = base.replace(**flags)
    return config, overrides, out


def _named_config(args: argparse.Namespace, graph: dict[str, Any]) -> Any:
    """The config of ``--config`` or ``--dataset``, or HeCo's defaults for a graph of your own,
    with the fields of :func:`graph_fields` (``graph``); ``None`` when nothing names one."""
    from .config import HetCRFConfig, default_config

    config = (HetCRFConfig.load(args.config) if args.config
              else default_config(args.dataset) if args.dataset
              else HetCRFConfig() if graph else None)
    return config.replace(**graph) if graph else config


def cmd_train(args: argparse.Namespace) -> int:
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


# --------------------------------------------------------------------------------------------
# Options shared by several commands: defined once here
# --------------------------------------------------------------------------------------------

def add_graph_options(parser: argparse.ArgumentParser, run_folder: bool = False) -> None:
    """``--data GRAPH --target TYPE --metapaths SPEC... --split-seed N``: a graph of your own
    (the config fields ``graph``, ``target``, ``metapaths``, ``split_seed``). For a command on
    a run folder (``run_folder``) only ``--data``: where the run's graph is now, when it moved
    (its sha256 must match the recorded one)."""
    group = parser.add_argument_group(
        "a graph of your own", "a torch_geometric HeteroData saved with torch.save; labels in "
        "data[TYPE].y (-1 unlabelled), splits from boolean masks train_mask_<rate>, "
        "val_mask_<rate>, test_mask_<rate> on TYPE, else drawn at 20/40/60 per class")
    if run_folder:
        group.add_argument("--data", metavar="GRAPH", help="the run's graph file, if it moved "
                           "since training (checked against the sha256 in RUN_DIR/graph.json)")
        return
    group.add_argument("--data", metavar="GRAPH", help="the saved HeteroData (torch.save); "
                       "read with weights_only=True, no pickled code runs")
    group.add_argument("--target", metavar="TYPE", help="the labelled node type")
    group.add_argument("--metapaths", nargs="+", metavar="SPEC",
                       help="meta-paths from and to TYPE, by node-type initials (PAP PSP) or "
                       "names joined by dashes (paper-author-paper)")
    group.add_argument("--split-seed", type=_seed, help="seed of drawn splits (default 0)")


def graph_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields :func:`add_graph_options` gave (``{}`` without ``--data``); the path
    made absolute so that a run folder finds it from anywhere. ``--data`` with ``--dataset`` is
    a :class:`ConfigError`."""
    target, metapaths = getattr(args, "target", None), getattr(args, "metapaths", None)
    if args.data is None:
        if target is not None or metapaths is not None:
            raise ConfigError("--target and --metapaths describe a graph of your own: give "
                              "--data GRAPH too")
        return {}
    if getattr(args, "dataset", None):
        raise ConfigError("give --dataset (a built-in graph) or --data (your own), not both")
    fields: dict[str, Any] = {"graph": str(Path(args.data).expanduser().absolute()),
                              "target": target, "metapaths": metapaths,
                              "dataset": Path(args.data).stem}
    if getattr(args, "split_seed", None) is not None:
        fields["split_seed"] = args.split_seed
    return fields


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` of every command that computes (validated: an integer >= 1)."""
    parser.add_argument("--threads", type=_positive_int,
                        help="CPU threads of torch (and UMAP's numba) (default: their choice; 1 "
                        "is faster on a busy small machine). Same seed, same result at a given "
                        "thread count")


def _apply_threads(threads: int | None) -> None:
    if not threads:
        return
    import torch

    numba = sys.modules.get("numba")  # UMAP's; it reads its thread count when first imported
    if numba is None:
        os.environ["NUMBA_NUM_THREADS"] = str(min(threads, os.cpu_count() or threads))
    else:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    # torch last: starting numba's OpenMP pool resets the OpenMP thread count torch uses (with
    # torch first, `train --data ... --threads 1` trained and evaluated at 2 threads)
    torch.set_num_threads(threads)


def _dataset_for(args: argparse.Namespace, run: Path | None = None) -> tuple[Any, Any]:
    """``(config or None, dataset)`` a command names: ``--dataset``, ``--data ...``, or the run
    folder ``run`` (its config and recorded graph)."""
    from .config import HetCRFConfig
    from .train import config_dataset, run_dataset
    from .utils import load_named_dataset

    if run is not None and args.data and args.target is None and args.metapaths is None:
        return run_dataset(run, graph=args.data)  # the run's own graph, moved
    graph = graph_fields(args)
    if graph:
        config = HetCRFConfig(**graph)
        return config, config_dataset(config)
    if args.dataset:
        return None, load_named_dataset(args.dataset, seed=args.seed)
    if run is not None:
        return run_dataset(run)
    raise ConfigError(f"{args.command} needs --dataset NAME or --data GRAPH --target TYPE "
                      "--metapaths SPEC... (or a run folder)")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    from .eval import evaluate_embeddings

    given = Path(args.embeddings)
    path = given / "embeddings.npy" if given.is_dir() else given
    run = path.parent if (path.parent / "config.yaml").is_file() else None
    emb = _read_embeddings(path)
    if args.json:
        _check_output_file(Path(args.json))  # before the evaluation, not after it
    config, dataset = _dataset_for(args, run)
    lr = args.lr if args.lr is not None or config is None else config.eval_lr
    results = evaluate_embeddings(emb, dataset, runs=args.runs, lr=lr)
    print(results)
    if args.json:
        results.save_json(args.json)
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

    print(describe(_dataset_for(args)[1]))
    return 0


def cmd_umap(args: argparse.Namespace) -> int:
    from .train import umap_figure_for_run

    path = umap_figure_for_run(args.run_dir, out=args.out, seed=args.seed, graph=args.data)
    print(f"wrote {path}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .files import atomic_write_bytes
    from .train import load_run, run_embeddings

    if args.out:
        _check_output_file(Path(args.out))
    model, _, config = load_run(args.run_dir, graph=args.data)
    emb = run_embeddings(model, config)
    saved = Path(args.run_dir) / "embeddings.npy"
    same = ""
    if saved.is_file():
        equal = np.array_equal(np.load(saved, allow_pickle=False), emb)
        same = f"; {'equal to' if equal else 'NOT equal to'} {saved}"
    if args.out:
        atomic_write_bytes(Path(args.out), lambda fh: np.save(fh, emb))
        print(f"wrote {args.out}")
    what = config.embed + (", columns standardised" if config.embed_norm == "standardise" else "")
    print(f"embeddings [{emb.shape[0]}, {emb.shape[1]}] ({what}) of the model in "
          f"{args.run_dir}{same}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Budgeted validation-only search (hetcrf_lite.tune); writes OUT/tune.json, OUT/best.yaml."""
    from .files import ensure_folder
    from .train import config_dataset
    from .tune import format_table, tune, write_outputs

    graph = graph_fields(args)
    if not (args.dataset or graph or args.config):
        raise ConfigError("tune needs --dataset NAME or --data GRAPH --target TYPE --metapaths "
                          "SPEC... (or --config FILE)")
    base = _named_config(args, graph)
    if args.epochs is not None:
        base = base.replace(epochs=args.epochs)
    out = Path(args.out) if args.out else Path("runs") / f"tune-{base.dataset}"
    ensure_folder(out)  # fail before the search, not after it
    dataset = config_dataset(base)
    from tqdm.auto import tqdm

    result = tune(dataset, base, seeds=args.seeds, budget_s=args.budget * 60,
                  eval_runs=args.eval_runs, progress=not args.quiet, log=tqdm.write)
    command = "hetcrf-lite " + " ".join(args.argv)
    json_path, yaml_path = write_outputs(result, out, command=command)
    print()
    print(format_table(result))
    print(f"\nwrote {json_path} and {yaml_path} ({result['seconds']:.0f} s of a "
          f"{args.budget:g} min budget); train it with: hetcrf-lite train --config {yaml_path} "
          f"--out RUN_DIR")
    return 0


def _parsed(text: str, cast: type, ok, what: str, rule: str):
    """``cast(text)`` if ``ok`` accepts it, else argparse's usage error (exit 2)."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text} {rule}")
    return value


def _minutes(text: str) -> float:
    return _parsed(text, float, lambda v: 0 < v < float("inf"), "a number of minutes",
                   "must be a positive number of minutes")


def cmd_migrate(args: argparse.Namespace) -> int:
    from .trainer import migrate_checkpoint

    print(f"migrated {migrate_checkpoint(args.checkpoint)}")
    return 0


def _seed(text: str) -> int:
    return _parsed(text, int, lambda v: 0 <= v < 2**32, "an integer", "must lie in [0, 2**32 - 1]")


def _positive_int(text: str) -> int:
    return _parsed(text, int, lambda v: v >= 1, "an integer", "must be >= 1")


def _finish(parser: argparse.ArgumentParser, func: Any, run_folder: bool = False) -> None:
    """The options every data-reading command shares (threads, a graph of your own), and the
    command's function."""
    add_threads_option(parser)
    add_graph_options(parser, run_folder=run_folder)
    parser.set_defaults(func=func)


def _add_train_command(sub: Any) -> None:
    """The parser of ``hetcrf-lite train``."""
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
    _finish(train, cmd_train)


def _add_evaluate_command(sub: Any) -> None:
    """The parser of ``hetcrf-lite evaluate``."""
    ev = sub.add_parser("evaluate", help="classification and clustering metrics of embeddings",
                        epilog="examples:\n  hetcrf-lite evaluate runs/acm/embeddings.npy "
                        "--dataset acm\n  hetcrf-lite evaluate runs/mine   (a run folder: its "
                        "embeddings, config and graph)",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("embeddings", help=".npy file of [N, D] embeddings of the target nodes, or "
                    "a run folder")
    ev.add_argument("--dataset", help="a built-in dataset (default: the run folder's data)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the synthetic graph")
    ev.add_argument("--runs", type=_positive_int, default=50)
    ev.add_argument("--lr", type=float, default=None)
    ev.add_argument("--json", help="also write the metrics here")
    _finish(ev, cmd_evaluate)


def _add_describe_command(sub: Any) -> None:
    """The parser of ``hetcrf-lite describe``."""
    de = sub.add_parser("describe", help="node, relation and meta-path statistics")
    de.add_argument("--dataset")
    de.add_argument("--seed", type=int, default=0)
    _finish(de, cmd_describe)


def _add_umap_command(sub: Any) -> None:
    """The parser of ``hetcrf-lite umap``."""
    um = sub.add_parser("umap", help="UMAP figure of a run's embeddings, coloured by class")
    um.add_argument("run_dir")
    um.add_argument("--out", help="PNG path (default RUN_DIR/umap.png)")
    um.add_argument("--seed", type=int, default=0)
    _finish(um, cmd_umap, run_folder=True)


def _add_embed_command(sub: Any) -> None:
    """The parser of ``hetcrf-lite embed``."""
    em = sub.add_parser("embed", help="reload a run's trained model (checkpoint.pt, "
                        "weights-only) and compute its embeddings",
                        epilog="example:\n  hetcrf-lite embed runs/acm --out emb.npy\n"
                        "equals the run's embeddings.npy at the thread count it trained with",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    em.add_argument("run_dir")
    em.add_argument("--out", help="write the [N, D] embeddings here (.npy)")
    _finish(em, cmd_embed, run_folder=True)


def _add_tune_command(sub: Any) -> None:
    """The parser of ``hetcrf-lite tune``."""
    tu = sub.add_parser(
        "tune", help="budgeted search of lr, tau, epochs and embedding on validation labels",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  hetcrf-lite tune --dataset synthetic --budget 5 --out runs/tune\n"
               "  hetcrf-lite tune --data graph.pt --target paper --metapaths PAP PSP\n"
               "scores validation labels only (test nodes are never passed); writes OUT/tune.json "
               "and OUT/best.yaml\n(hetcrf-lite train --config OUT/best.yaml). The search order "
               "is in hetcrf_lite/tune.py.")
    tsource = tu.add_mutually_exclusive_group()
    tsource.add_argument("--dataset", choices=["synthetic", "acm", "dblp", "aminer", "freebase"])
    tsource.add_argument("--config", help="start from this YAML config instead of the shipped "
                         "one (its lr, tau, epochs, embed are the first candidate)")
    tu.add_argument("--seeds", nargs="+", type=_seed, default=[0, 1, 2],
                    help="training seeds of every candidate (default: 0 1 2)")
    tu.add_argument("--budget", type=_minutes, default=10.0, metavar="MINUTES",
                    help="no candidate starts that would pass it; the first always runs "
                    "(default: 10)")
    tu.add_argument("--epochs", type=_positive_int,
                    help="longest training; the best epoch count up to it is read off the "
                    "validation curve (default: the config's)")
    tu.add_argument("--eval-runs", type=_positive_int, default=5,
                    help="logistic-regression repeats per validation score (default: 5)")
    tu.add_argument("--out", help="folder for tune.json and best.yaml (default "
                    "runs/tune-<dataset>)")
    tu.add_argument("--quiet", action="store_true", help="no progress bar")
    _finish(tu, cmd_tune)


def _add_migrate_command(sub: Any) -> None:
    """The parser of ``hetcrf-lite migrate-checkpoint``."""
    mi = sub.add_parser("migrate-checkpoint",
                        help="rewrite a checkpoint of hetcrf-lite before issue 13 in the safe "
                        "format (unpickles it: only for a file you wrote yourself)")
    mi.add_argument("checkpoint")
    mi.set_defaults(func=cmd_migrate)


def build_parser() -> argparse.ArgumentParser:
    """The ``hetcrf-lite`` parser: one sub-command per ``_add_*_command``."""
    parser = argparse.ArgumentParser(
        prog="hetcrf-lite", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train_command, _add_evaluate_command, _add_describe_command,
                _add_umap_command, _add_embed_command, _add_tune_command,
                _add_migrate_command):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; every named error (and any other operating-system error: a file that
    cannot be read or written) is one line on stderr and exit status 2, never a traceback."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _apply_threads(getattr(args, "threads", None))
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
