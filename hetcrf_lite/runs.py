"""Run records: find a trained run folder that matches a config, a dataset and this version.

A notebook that trains a benchmark makes a class wait for minutes. When a teacher has already
trained the same thing (``hetcrf-lite train``, ``make reproduce``), the notebook can load that
run folder instead, but only if it is *the same run*: the same config, the same data, the same
version of this package. Every run folder therefore gets a record, ``run.json``, written once
the run is complete:

* ``config_hash``: sha256 of the resolved config's plain dict (:func:`config_hash`), without
  the fields of :data:`HASH_EXCLUDED` (they do not change the trained model; each says why);
* ``dataset_checksum``: sha256 of the dataset's tensors (:func:`dataset_checksum`): features of
  every node type, every relation, labels, splits, meta-path graphs and positives;
* ``hetcrf_lite``: the package version;
* ``embeddings_sha256`` (so a replaced ``embeddings.npy`` is noticed), the config itself, the
  time, the writer and the machine.

:func:`find_run` looks through run folders for one whose record matches on all three and says,
for every folder it passes over, why (``reasons``). A folder without a record, with a damaged
one, or with any mismatch is never reused; nothing in a record is executed or unpickled.

Example::

    >>> from hetcrf_lite.config import default_config
    >>> from hetcrf_lite.data import load_dataset
    >>> config = default_config("acm")
    >>> dataset = load_dataset("acm", pos_num=config.pos_num, pos_score=config.pos_score)
    >>> find_run(config, dataset, roots=["runs"])   # after `hetcrf-lite train --dataset acm`
    PosixPath('runs/acm-seed0')
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .config import HetCRFConfig, config_differences, show_differences
from .files import file_sha256, save_json
from .utils import environment_info, resolve_device

__all__ = ["RUN_RECORD", "HASH_EXCLUDED", "SECONDS_PER_EPOCH", "config_hash", "dataset_checksum",
           "record_run", "forget_run", "read_record", "run_mismatch", "find_run", "describe_run",
           "expected_seconds", "expected_time"]

RUN_RECORD = "run.json"
RECORD_FORMAT = 1

HASH_EXCLUDED: dict[str, str] = {
    "grad_balance_every": "what the history logs: the gradient-balance summary is computed "
                          "without gradients on a generator of its own, so the parameters are "
                          "the same bit for bit (tests/test_runs.py checks it)",
    "channel_grad_every": "what the history logs: the channels' gradient cosine adds a zero "
                          "term to the loss unless channel_balance is on (also checked)",
    "eval_lr": "the probe's learning rate in metrics.json: training never reads it",
    "graph": "where a graph of your own lies on disk: what it holds is in the dataset checksum, "
             "so a moved graph still matches and an edited one does not",
}
"""Config fields left out of :func:`config_hash`, each with the reason it cannot change the
trained model. Everything else, ``device`` and ``epochs`` included, must match."""

SECONDS_PER_EPOCH: dict[str, float] = {
    "synthetic": 0.30, "acm": 2.53, "dblp": 7.77, "aminer": 4.07, "freebase": 1.23,
}
"""Median seconds per epoch, one torch thread: the benchmarks' training CPU time per epoch in
``docs/results.json`` (``make reproduce``; median over seeds: what an idle core takes, as the
run shared its cores), the synthetic graph measured with
its shipped config. ``tests/test_runs.py`` checks the table against ``docs/results.json``.
The benchmark rows are one ``--fresh`` run (session 17, 85 minutes of wall) on the faster of
the two machines the project has seen; on the other one (session 16) every row took 1.1-1.5x
as long, so the estimates are on the fast side there."""


# ---------------------------------------------------------------------------------------------
# What a run is: config hash and dataset checksum
# ---------------------------------------------------------------------------------------------

def config_hash(config: HetCRFConfig | Mapping[str, Any]) -> str:
    """sha256 (hex) of the config's :meth:`~HetCRFConfig.identity` as canonical JSON, without
    :data:`HASH_EXCLUDED`.

    Args:
        config (HetCRFConfig or dict): a config, or its ``to_dict()`` (a dict is validated and
            resolved through :meth:`HetCRFConfig.from_dict` first, so ``lr: 1`` and ``lr: 1.0``
            hash alike).
    """
    if not isinstance(config, HetCRFConfig):
        config = HetCRFConfig.from_dict(dict(config))
    plain = {k: v for k, v in config.identity().items() if k not in HASH_EXCLUDED}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _feed_tensor(h: "hashlib._Hash", name: str, t: torch.Tensor | None) -> None:
    if t is None:
        h.update(f"{name}:none;".encode())
        return
    t = t.detach().cpu()
    if t.layout != torch.strided:  # sparse COO/CSR: canonical (coalesced) indices and values
        t = t.to_sparse_coo().coalesce()
        _feed_tensor(h, f"{name}.indices", t.indices())
        _feed_tensor(h, f"{name}.values", t.values())
        h.update(f"{name}:sparse{list(t.shape)};".encode())
        return
    h.update(f"{name}:{t.dtype}{list(t.shape)};".encode())
    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def dataset_checksum(dataset: Any) -> str:
    """sha256 (hex) of everything a :class:`~hetcrf_lite.data.HINDataset` trains and evaluates
    on: the target type; every node type's count and features; every relation's
    ``edge_index``; labels and class count; the splits; the meta-paths, their graphs and path
    counts; the positive pairs. Dtypes and shapes are hashed with the bytes; sparse tensors
    in coalesced order. Two loads of the same files give the same checksum."""
    h = hashlib.sha256()
    data = dataset.data
    h.update(f"target:{dataset.target};classes:{int(dataset.num_classes)};".encode())
    for node_type in sorted(data.node_types):
        store = data[node_type]
        h.update(f"nodes:{node_type}:{int(store.num_nodes)};".encode())
        _feed_tensor(h, f"x[{node_type}]", store.x if "x" in store else None)
    for edge_type in sorted(data.edge_types):
        _feed_tensor(h, f"edge[{'__'.join(edge_type)}]", data[edge_type].edge_index)
    _feed_tensor(h, "labels", dataset.labels)
    for rate in sorted(dataset.splits):
        for part in sorted(dataset.splits[rate]):
            _feed_tensor(h, f"split[{rate}][{part}]", dataset.splits[rate][part])
    h.update(json.dumps(dataset.metapaths, sort_keys=True).encode())
    for name in sorted(dataset.metapath_adj):
        _feed_tensor(h, f"metapath[{name}]", dataset.metapath_adj[name])
    for name in sorted(dataset.metapath_counts):
        _feed_tensor(h, f"counts[{name}]", dataset.metapath_counts[name])
    _feed_tensor(h, "pos", dataset.pos)
    return h.hexdigest()


def _version() -> str:
    from . import __version__  # read at call time: a test may change it

    return __version__


# ---------------------------------------------------------------------------------------------
# Writing and reading the record
# ---------------------------------------------------------------------------------------------

def record_run(run_dir: str | os.PathLike, config: HetCRFConfig, dataset: Any,
               written_by: str = "hetcrf-lite train") -> dict[str, Any]:
    """Write ``run_dir/run.json`` for a complete run (after ``embeddings.npy``) and return it.

    Args:
        run_dir (str): the run folder.
        config (HetCRFConfig): the config the run trained with.
        dataset (HINDataset or str): the dataset it trained on, or its :func:`dataset_checksum`.
        written_by (str, optional): what wrote the folder, shown by :func:`describe_run`.
            (default: ``"hetcrf-lite train"``)
    """
    run = Path(run_dir)
    emb = run / "embeddings.npy"
    env = environment_info()
    record = {
        "format": RECORD_FORMAT,
        "hetcrf_lite": _version(),
        "config_hash": config_hash(config),
        "dataset": config.dataset,
        "dataset_checksum": dataset if isinstance(dataset, str) else dataset_checksum(dataset),
        "embeddings_sha256": file_sha256(emb) if emb.is_file() else None,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "written_by": written_by,
        "device": str(resolve_device(config.device)),
        "torch_threads": env["torch_threads"],
        "env": env,
        "config": config.to_dict(),
    }
    save_json(record, run / RUN_RECORD)
    return record


def forget_run(run_dir: str | os.PathLike) -> None:
    """Remove ``run_dir/run.json`` (if any): called before a folder is (re)trained into, so that
    a run killed half-way is never taken for the complete one it replaces."""
    Path(run_dir, RUN_RECORD).unlink(missing_ok=True)


_FIELDS = {"format": int, "hetcrf_lite": str, "config_hash": str, "dataset": str,
           "dataset_checksum": str, "created": str, "config": dict}


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run_dir/run.json`` as a dict, checked field by field.

    Raises:
        ValueError: missing, unreadable, not JSON, or a field missing or of the wrong type (the
            message says which).
    """
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        raise ValueError(f"no {RUN_RECORD} (written before run records existed, by another tool, "
                         "or by a run that did not finish)")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{RUN_RECORD} is damaged ({type(err).__name__}: "
                         f"{str(err)[:80]})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{RUN_RECORD} is damaged (a JSON {type(record).__name__}, not an object)")
    bad = [k for k, kind in _FIELDS.items()
           if not isinstance(record.get(k), kind) or isinstance(record.get(k), bool)]
    if bad:
        raise ValueError(f"{RUN_RECORD} is damaged (missing or malformed {bad})")
    if record["format"] != RECORD_FORMAT:
        raise ValueError(f"{RUN_RECORD} has format {record['format']}, this version reads "
                         f"{RECORD_FORMAT}")
    return record


def _differences(recorded: Mapping[str, Any], wanted: HetCRFConfig) -> str:
    """``epochs (run 120, wanted 80), lr (...)``: the fields in the hash that differ."""
    try:
        theirs = HetCRFConfig.from_dict(dict(recorded))
    except Exception:  # noqa: BLE001 - a config this version cannot read
        return "a config this version cannot read"
    diffs = {k: v for k, v in config_differences(theirs, wanted).items() if k not in HASH_EXCLUDED}
    return show_differences(diffs, "run", "wanted", most=4)


def run_mismatch(run_dir: str | os.PathLike, config: HetCRFConfig, dataset: Any,
                 require: Iterable[str] = ("embeddings.npy",)) -> str | None:
    """Why ``run_dir`` is not a reusable run of ``config`` on ``dataset``; ``None`` when it is.

    Checked in order: the record (present, readable, well formed); the package version; the
    dataset name; the config hash (the differing fields are named); the folder's
    ``config.yaml`` against the record; the dataset checksum; the files in ``require``;
    ``embeddings.npy`` against its recorded sha256. Never raises for a bad folder.

    Args:
        dataset (HINDataset or str): the dataset, or its :func:`dataset_checksum`.
        require (iterable of str, optional): files the caller will read, e.g.
            ``("checkpoint.pt", "history.json")`` for :func:`~hetcrf_lite.train.load_run`.
            (default: ``("embeddings.npy",)``)
    """
    run = Path(run_dir)
    try:
        record = read_record(run)
    except ValueError as err:
        return str(err)
    if record["hetcrf_lite"] != _version():
        return f"trained with hetcrf-lite {record['hetcrf_lite']}, this is {_version()}"
    if record["dataset"] != config.dataset:
        return f"trained on {record['dataset']!r}, not {config.dataset!r}"
    if record["config_hash"] != config_hash(config):
        return f"config differs: {_differences(record['config'], config)}"
    yaml_path = run / "config.yaml"
    if yaml_path.is_file():
        try:
            on_disk = config_hash(HetCRFConfig.load(yaml_path))
        except Exception as err:  # noqa: BLE001 - a damaged config.yaml: not reused, no traceback
            return f"config.yaml is unreadable ({type(err).__name__})"
        if on_disk != record["config_hash"]:
            return f"config.yaml no longer matches {RUN_RECORD} (edited after the run?)"
    checksum = dataset if isinstance(dataset, str) else dataset_checksum(dataset)
    if record["dataset_checksum"] != checksum:
        return (f"dataset checksum differs (run {record['dataset_checksum'][:12]}, "
                f"wanted {checksum[:12]}): the data changed")
    missing = [name for name in require if not (run / name).is_file()]
    if missing:
        return f"no {', '.join(missing)} in the folder"
    emb, emb_sha = run / "embeddings.npy", record.get("embeddings_sha256")
    if emb_sha is not None and emb.is_file() and file_sha256(emb) != emb_sha:
        return f"embeddings.npy changed since {RUN_RECORD} was written"
    return None


def _candidates(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that look like run folders."""
    marks = {RUN_RECORD, "config.yaml", "embeddings.npy"}
    return sorted({p.parent for p in root.rglob("*") if p.name in marks and p.is_file()})


def find_run(config: HetCRFConfig, dataset: Any,
             roots: Iterable[str | os.PathLike] = ("runs",),
             require: Iterable[str] = ("embeddings.npy",),
             reasons: dict[Path, str] | None = None) -> Path | None:
    """The run folder under ``roots`` that trained ``config`` on ``dataset`` with this version.

    Every folder under each root (at any depth) holding ``run.json``, ``config.yaml`` or
    ``embeddings.npy`` is checked with :func:`run_mismatch`; of those that match, the most
    recently recorded is returned. Nothing raises for a missing root or a damaged folder.

    Args:
        config (HetCRFConfig): the config the caller would train.
        dataset (HINDataset or str): the data it would train on, or its
            :func:`dataset_checksum` (computed once here otherwise).
        roots (iterable of str, optional): folders to search. (default: ``("runs",)``)
        require (iterable of str, optional): files the caller needs in the folder.
            (default: ``("embeddings.npy",)``)
        reasons (dict, optional): filled with ``{folder: why it was not reused}`` for every
            folder passed over (and ``{root: "no such folder"}``), for a notebook to print.

    Returns:
        Path or None: the folder (as found under its root), or ``None``.
    """
    checksum = dataset if isinstance(dataset, str) else dataset_checksum(dataset)
    require = tuple(require)
    matches: list[tuple[str, Path]] = []
    for root in map(Path, roots):
        if not root.is_dir():
            if reasons is not None:
                reasons[root] = "no such folder"
            continue
        for run in _candidates(root):
            why = run_mismatch(run, config, checksum, require)
            if why is None:
                matches.append((read_record(run)["created"], run))
            elif reasons is not None:
                reasons[run] = why
    return max(matches)[1] if matches else None


def describe_run(run_dir: str | os.PathLike) -> str:
    """One line on a recorded run folder: ``RUN_DIR: config hash ..., trained on DATE (device,
    threads) by WRITER, dataset NAME checksum ..., hetcrf-lite VERSION``."""
    run = Path(run_dir)
    try:
        r = read_record(run)
    except ValueError as err:
        return f"{run}: {err}"
    threads = r.get("torch_threads")
    machine = ", ".join(str(x) for x in (r.get("device"), threads and f"{threads} torch "
                        f"thread{'s' if threads != 1 else ''}") if x)
    when = r["created"].replace("T", " ").replace("Z", " UTC")
    return (f"{run}: config hash {r['config_hash'][:12]}, trained on {when}"
            + (f" ({machine})" if machine else "") + f" by {r.get('written_by', '?')}, "
            f"dataset {r['dataset']} checksum {r['dataset_checksum'][:12]}, "
            f"hetcrf-lite {r['hetcrf_lite']}")


# ---------------------------------------------------------------------------------------------
# How long a training takes
# ---------------------------------------------------------------------------------------------

def expected_seconds(config: HetCRFConfig) -> float | None:
    """``epochs x`` :data:`SECONDS_PER_EPOCH` of the config's dataset (one torch thread, the
    CPU time of an idle core); an upper bound when early stopping ends sooner. ``None`` for a graph of your
    own or a mini-batch config (not measured)."""
    per_epoch = SECONDS_PER_EPOCH.get(config.dataset)
    if per_epoch is None or config.graph is not None or config.batch_size is not None:
        return None
    return config.epochs * per_epoch


def expected_time(config: HetCRFConfig, short: bool = False) -> str:
    """``expected_seconds`` as a sentence for a notebook, e.g. ``training acm: about 6 min
    (120 epochs x 2.53 s, measured at one thread on a 2-core CPU; early stopping may end
    sooner)``; with ``short`` only ``about 6 min`` (for a widget's label)."""
    seconds = expected_seconds(config)
    if seconds is None:
        return ("time not measured" if short else
                f"training {config.dataset}: no measured time per epoch for this graph or setup")
    if seconds < 90:
        amount = f"{max(5, 5 * math.ceil(seconds / 5)):.0f} s"
    else:
        amount = f"{math.ceil(seconds / 60):.0f} min"
    if short:
        return f"about {amount}"
    return (f"training {config.dataset}: about {amount} ({config.epochs} epochs x "
            f"{SECONDS_PER_EPOCH[config.dataset]:.2f} s, measured at one thread on a 2-core "
            "CPU; early stopping may end sooner)")
