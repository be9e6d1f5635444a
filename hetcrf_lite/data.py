"""The heterogeneous-graph container every part of hetcrf_lite consumes, and its loaders.

One dataclass, :class:`HINDataset`, holds a PyG ``HeteroData`` plus what self-supervised learning on
a heterogeneous information network (HIN) needs around it: the target node type, labels, the
fixed splits, the meta-paths with their adjacencies, and the positive sets. The loaders
(:func:`load_dataset`), the synthetic generator and :func:`from_heterodata` all return it.

Sparse conventions (never a dense N x N tensor):

* a meta-path adjacency is an ``edge_index`` ``[2, E]`` (int64) over target nodes, row 0 the
  source, row 1 the destination, sorted by destination then source (CSR order of the transposed
  matrix; meta-path graphs are symmetric, so this is also CSR order of A itself), binarised and
  with self-loops as the published files have them;
* ``metapath_counts[name]`` ``[E]`` holds the number of path instances per edge, aligned with it;
* the positive sets are a ``[2, P]`` index ``(anchor, positive)`` sorted by anchor.

Files: the four HeCo benchmarks (acm, dblp, aminer, freebase) are read from ``root``, by default
``$HETCRF_DATA``, else ``$XDG_CACHE_HOME/hetcrf_lite`` (``~/.cache/hetcrf_lite``), one sub-folder
per dataset. Every file a load needs is checked against the sha256 manifest shipped with the
package (``SHA256SUMS``); missing or corrupt files are fetched from HeCo's repository, pinned to one
commit, when ``download=True`` and the folder is writable. Nothing is ever unpickled: every
``np.load`` runs with ``allow_pickle=False`` and HeCo's pickled ``nei_*.npy`` files are never read.
"""
from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
import re
import stat
import time
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import ToUndirected

from .errors import ConfigError, DataError, DataFileNotFoundError, MetaPathError
from .files import file_sha256, remove_orphans, temp_file
from .metapaths import (
    MetaPathSpec,
    metapath_adjacency,
    metapath_name,
    metapath_positives,
    parse_metapath,
    relation_matrix,
)

@dataclass
class HINDataset:
    """A heterogeneous graph ready for HetCRF.

    Attributes:
        name: dataset name (``"acm"``, ``"synthetic"``, ...).
        data: the PyG ``HeteroData`` with every node type and every relation in both directions.
            ``data[t].x`` holds the features of node type ``t``: a dense float tensor, or a sparse
            COO tensor (identity features are held sparse, never dense N x N).
        target: the node type that carries labels and over which meta-paths close.
        labels: ``[N]`` int64 class of each target node, ``-1`` for unlabelled.
        num_classes: number of classes.
        splits: ``{rate: {"train": idx, "val": idx, "test": idx}}``, ``rate`` labelled nodes per
            class in training (20, 40, 60 for the benchmarks).
        metapaths: ``{name: [node types]}``, each starting and ending at ``target``.
        metapath_adj: ``{name: edge_index [2, E]}``, binarised, self-loops included.
        metapath_counts: ``{name: [E] float}`` number of path instances of each edge.
        pos: ``[2, P]`` positive pairs (anchor, positive), sorted by anchor; every anchor has at
            least itself unless the stored file says otherwise.
    """

    name: str
    data: HeteroData
    target: str
    labels: torch.Tensor
    num_classes: int
    splits: dict[int, dict[str, torch.Tensor]]
    metapaths: dict[str, list[str]]
    metapath_adj: dict[str, torch.Tensor]
    metapath_counts: dict[str, torch.Tensor] = field(default_factory=dict)
    pos: torch.Tensor | None = None

    @property
    def num_nodes(self) -> int:
        """Number of target nodes."""
        return int(self.data[self.target].num_nodes)

    @property
    def x(self) -> torch.Tensor:
        """Target-type features (dense, or sparse COO for identity features)."""
        return self.data[self.target].x

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    def to(self, device: str | torch.device) -> "HINDataset":
        """Move the tensors the model uses (features, meta-path graphs, positives) to ``device``.

        Returns a new container; labels and splits stay on the CPU (evaluation runs there).
        """
        data = self.data.clone()
        data[self.target].x = self.x.to(device)
        return replace(
            self,
            data=data,
            metapath_adj={k: v.to(device) for k, v in self.metapath_adj.items()},
            metapath_counts={k: v.to(device) for k, v in self.metapath_counts.items()},
            pos=None if self.pos is None else self.pos.to(device),
        )

    @property
    def neighbor_types(self) -> list[str]:
        """Node types joined to the target type by a relation (the schema view's neighbours)."""
        others = (dst if src == self.target else src for src, _, dst in self.data.edge_types
                  if self.target in (src, dst))
        return list(dict.fromkeys(t for t in others if t != self.target))  # in order, once each

    def neighbors(self, node_type: str) -> torch.Tensor:
        """One-hop neighbours of type ``node_type`` of every target node.

        Returns:
            Tensor: ``[2, E]`` int64 pairs (target node, neighbour), sorted by target node then
            neighbour, duplicates merged; relations stored in either direction are used.
        """
        m = relation_matrix(self.data, self.target, node_type).tocoo()  # [N, n_type], CSR order
        return torch.from_numpy(np.stack([m.row, m.col]).astype(np.int64))  # [2, E]

    def summary(self) -> str:
        """The statistics table of :func:`describe`."""
        return describe(self)

    def __repr__(self) -> str:
        pos = "None" if self.pos is None else str(list(self.pos.shape))
        return (
            f"HINDataset(name={self.name!r}, target={self.target!r}, "
            f"num_nodes={self.num_nodes}, num_features={self.num_features}, "
            f"num_classes={self.num_classes}, metapaths={list(self.metapaths)}, pos={pos})"
        )


# --------------------------------------------------------------------------------------------
# The four HeCo benchmarks
# --------------------------------------------------------------------------------------------

HECO_URL = (
    "https://raw.githubusercontent.com/liun-online/HeCo/"
    "20e8ca2042838877b2c815279920218b6bbea1db/data/{dataset}/{file}"
)
"""Upstream address of one raw file, pinned to the commit the shipped checksums describe."""

DATASETS = ("acm", "dblp", "aminer", "freebase")
RATES = (20, 40, 60)  # labelled nodes per class in the fixed splits
POSITIVES = ("metapath", "stored")


@dataclass(frozen=True)
class _HecoSpec:
    target: str
    node_types: dict[str, int]  # type -> number of nodes, target first
    relations: dict[str, tuple[str, str]]  # edge-list file -> (source type, destination type)
    metapaths: tuple[str, ...]
    num_classes: int
    pos_num: int  # HeCo's threshold
    features: dict[str, str]  # node type -> bag-of-words file (the default features)
    extra_features: dict[str, str]  # loaded with extra_features=True


_HECO: dict[str, _HecoSpec] = {
    "acm": _HecoSpec(
        "paper", {"paper": 4019, "author": 7167, "subject": 60},
        {"pa.txt": ("paper", "author"), "ps.txt": ("paper", "subject")},
        ("PAP", "PSP"), 3, 5, {"paper": "p_feat.npz"}, {"author": "a_feat.npz"},
    ),
    "dblp": _HecoSpec(
        "author", {"author": 4057, "paper": 14328, "conference": 20, "term": 7723},
        {"pa.txt": ("paper", "author"), "pc.txt": ("paper", "conference"),
         "pt.txt": ("paper", "term")},
        ("APA", "APCPA", "APTPA"), 4, 1000, {"author": "a_feat.npz"},
        {"paper": "p_feat.npz", "term": "t_feat.npz"},
    ),
    "aminer": _HecoSpec(
        "paper", {"paper": 6564, "author": 13329, "reference": 35890},
        {"pa.txt": ("paper", "author"), "pr.txt": ("paper", "reference")},
        ("PAP", "PRP"), 4, 15, {}, {},
    ),
    "freebase": _HecoSpec(
        "movie", {"movie": 3492, "director": 2502, "actor": 33401, "writer": 4459},
        {"md.txt": ("movie", "director"), "ma.txt": ("movie", "actor"),
         "mw.txt": ("movie", "writer")},
        ("MAM", "MDM", "MWM"), 3, 80, {}, {},
    ),
}


def _spec(name: str) -> _HecoSpec:
    key = str(name).lower()
    if key not in _HECO:
        raise DataError(
            f"unknown dataset {name!r}; load_dataset knows {list(DATASETS)}. For another graph "
            "build a HeteroData and call from_heterodata()."
        )
    return _HECO[key]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding one sub-folder per dataset.

    ``root`` if given, else ``$HETCRF_DATA``, else ``$XDG_CACHE_HOME/hetcrf_lite``
    (``~/.cache/hetcrf_lite`` when ``XDG_CACHE_HOME`` is unset).

    Introduced in notebook 08.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("HETCRF_DATA"):
        return Path(os.environ["HETCRF_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "hetcrf_lite"


def required_files(
    name: str, positives: str = "metapath", extra_features: bool = False
) -> list[str]:
    """The files a :func:`load_dataset` call reads (never the stored meta-paths or ``nei_*``)."""
    spec = _spec(name)
    files = list(spec.relations) + ["labels.npy"] + list(spec.features.values())
    files += [f"{part}_{rate}.npy" for rate in RATES for part in ("train", "val", "test")]
    if extra_features:
        files += list(spec.extra_features.values())
    if positives == "stored":
        files.append("pos.npz")
    return files


@lru_cache(maxsize=1)
def _manifest() -> dict[str, str]:
    """``{"acm/pa.txt": sha256}`` from the manifest shipped inside the package."""
    # next to this file (works for namespace, editable and regular installs alike)
    text = (Path(__file__).parent / "SHA256SUMS").read_text()
    out = {}
    for line in text.splitlines():
        if line.strip():
            digest, path = line.split(maxsplit=1)
            out[path.strip().removeprefix("./")] = digest
    return out


DOWNLOAD_TIMEOUT = 60.0  # seconds one read may wait
DOWNLOAD_DEADLINE = 600.0  # seconds a whole file may take (HeCo's largest is 3 MB)


def download_file(url: str, path: str | os.PathLike, sha256: str | None = None,
                  timeout: float = DOWNLOAD_TIMEOUT, deadline: float = DOWNLOAD_DEADLINE) -> None:
    """Downloads ``url`` to ``path`` atomically, checking its sha256, within a deadline.

    The bytes go to a temporary file in the destination folder, which replaces ``path`` only once
    complete and verified (``os.replace``), so an interrupted download never leaves a truncated
    file under the real name (a temporary file orphaned by ``kill -9`` is removed by the next
    load: :func:`~hetcrf_lite.files.remove_orphans`). The file gets the usual mode (``0644``
    under the usual umask). Uses :mod:`urllib` (no extra dependency); TLS certificates are
    verified. A server that trickles bytes is given up after ``deadline`` seconds in all.

    Args:
        url (str): address to fetch.
        path (str or Path): destination file.
        sha256 (str, optional): expected hex digest; a mismatch raises :class:`DataError` and
            leaves nothing behind. (default: :obj:`None`)
        timeout (float, optional): seconds one read may wait. (default: :obj:`60.0`)
        deadline (float, optional): seconds the whole download may take; it is checked after
            every read, so it can be overrun by at most ``timeout``. (default: :obj:`600.0`)

    Raises:
        OSError: the server cannot be reached (``urllib.error.URLError`` is an ``OSError``);
            ``TimeoutError`` (an ``OSError``) when the deadline passes.
        DataError: the downloaded bytes do not match ``sha256``.
    """
    path = Path(path)
    fd, tmp = temp_file(path, suffix=".part")
    start = time.monotonic()
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                url, timeout=min(timeout, deadline)) as resp:
            read = getattr(resp, "read1", resp.read)  # read1: whatever has arrived, no waiting
            while block := read(1 << 16):
                if time.monotonic() - start > deadline:
                    raise TimeoutError(
                        f"{url} was not complete after the {deadline:g} s download deadline "
                        f"({out.tell()} bytes): the server is too slow. Try again later, or "
                        f"fetch the file by hand into {path.parent}.")
                h.update(block)
                out.write(block)
        if sha256 is not None and h.hexdigest() != sha256:
            raise DataError(
                f"{url} downloaded with sha256 {h.hexdigest()}, expected {sha256}: the transfer "
                "was corrupted or upstream changed. Try again, or fetch the file by hand into "
                f"{path.parent}."
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_folder(folder: Path) -> None:
    """A data folder that cannot be a folder (a file, a symbolic-link loop, no permission to
    look) is a :class:`DataError` naming it; a folder that does not exist yet is fine."""
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return
    except OSError as err:
        raise DataError(f"cannot use the data folder {folder}: {err.strerror or err}. Point "
                        "HETCRF_DATA (or root=) at a real folder.") from err
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"the data folder {folder} is a file, not a folder. Point HETCRF_DATA "
                        "(or root=) at the folder holding one sub-folder per dataset.")


def _writable(folder: Path) -> bool:
    """Whether files may be created in ``folder`` (or the nearest existing parent). A folder
    without any write bit counts as read-only even for root, for whom ``os.access`` always says
    yes: such a folder (like a shared read-only data copy) is never written to."""
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    return os.access(p, os.W_OK) and bool(p.stat().st_mode & 0o222)


def _refuse_unfetchable(name: str, folder: Path, missing: list[str], corrupt: list[str],
                        download: bool, hint: str) -> None:
    """Raise the named error when missing or corrupt files may not (``download=False``) or
    cannot (a read-only folder) be fetched again."""
    writable = _writable(folder)
    if corrupt and not (download and writable):
        why = ("the folder is read-only, so it cannot be fetched again: restore it, or point "
               "HETCRF_DATA (or root=) at a writable folder" if not writable else
               "delete it and load with download=True to fetch it again, or pass verify=False "
               "if you changed it on purpose")
        raise DataError(
            f"{name}: {corrupt} in {folder} do not match the sha256 in hetcrf_lite/SHA256SUMS "
            f"(corrupt or truncated); {why}."
        )
    if missing and not download:
        raise DataFileNotFoundError(
            f"{name}: missing {missing} in {folder}. {hint}, or call with download=True."
        )
    if not writable:
        raise DataFileNotFoundError(
            f"{name}: missing {missing} in {folder}, and that folder is read-only so nothing can "
            f"be downloaded there. {hint} a writable folder."
        )


def _ensure_files(name: str, files: Sequence[str], folder: Path, download: bool,
                  verify: bool) -> None:
    """Checks that every file is present (and matches the manifest); fetches what is missing or
    corrupt when allowed. A read-only folder is only read."""
    manifest = _manifest()
    _check_folder(folder)
    remove_orphans(folder, older_than=DOWNLOAD_DEADLINE + DOWNLOAD_TIMEOUT)
    missing = [f for f in files if not (folder / f).is_file()]
    corrupt = [f for f in files if verify and f not in missing
               and file_sha256(folder / f) != manifest[f"{name}/{f}"]]
    if not missing and not corrupt:
        return
    hint = (f"Set HETCRF_DATA to the folder holding the HeCo datasets (one sub-folder per "
            f"dataset, e.g. HETCRF_DATA/{name}/{files[0]}) or pass root=")
    _refuse_unfetchable(name, folder, missing, corrupt, download, hint)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataFileNotFoundError(f"{name}: cannot create {folder} for the download "
                                    f"({err.strerror or err}). {hint} a writable folder.") from err
    if corrupt:
        warnings.warn(f"{name}: {corrupt} in {folder} failed the sha256 check; fetching again.")
    failed = []
    for f in missing + corrupt:
        url = HECO_URL.format(dataset=name, file=f)
        try:
            download_file(url, folder / f, sha256=manifest[f"{name}/{f}"])
        except OSError as err:  # URLError, HTTPError, timeouts, refused connections
            failed.append(f"{f} ({url}: {err})")
    if failed:
        raise DataFileNotFoundError(
            f"{name}: could not download {failed} into {folder}. Check the network, or copy "
            f"the files there by hand. {hint}."
        )


# --------------------------------------------------------------------------------------------
# Validation (shared by the loaders and from_heterodata)
# --------------------------------------------------------------------------------------------

def validate_features(x: Tensor, where: str) -> None:
    """Checks a feature matrix: two-dimensional, floating point, every value finite.

    Args:
        x (Tensor): ``[N, F]`` dense or sparse COO features.
        where (str): what to name in the error, e.g. ``"data['paper'].x"``.

    Raises:
        DataError: wrong rank or dtype, or NaN / Inf entries (their count and first row given).
    """
    if not isinstance(x, Tensor):
        raise DataError(f"{where} is a {type(x).__name__}; features must be a torch.Tensor.")
    if x.dim() != 2:
        raise DataError(f"{where} has shape {list(x.shape)}; features must be [num_nodes, dim].")
    if not x.is_floating_point():
        raise DataError(f"{where} has dtype {x.dtype}; cast features with .float().")
    if x.layout == torch.sparse_coo:
        x = x.coalesce()
        bad = ~torch.isfinite(x.values())
        rows = x.indices()[0][bad]
    elif x.layout == torch.strided:
        bad = ~torch.isfinite(x)
        rows = bad.any(dim=1).nonzero().flatten()
    else:
        raise DataError(f"{where} has layout {x.layout}; use a dense or sparse COO tensor.")
    if bad.any():
        raise DataError(
            f"{where} holds {int(bad.sum())} NaN/Inf value(s), first in row {int(rows.min())}; "
            "clean them (e.g. torch.nan_to_num) or drop those nodes."
        )


def validate_labels(labels: Tensor | np.ndarray, num_nodes: int,
                    num_classes: int | None = None, where: str = "labels") -> Tensor:
    """Checks labels and returns them as int64: one per node, ``-1`` (unlabelled) or a class id.

    Args:
        labels (Tensor or ndarray): ``[N]`` labels; floats are accepted when they are whole
            numbers (ACM's ``labels.npy`` is float64).
        num_nodes (int): number of target nodes :math:`N`.
        num_classes (int, optional): when given, every label must be below it.
            (default: :obj:`None`)
        where (str, optional): what to name in the error. (default: :obj:`"labels"`)

    Raises:
        DataError: wrong shape, non-integer values, labels below -1 or not below ``num_classes``.
    """
    try:
        y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    except (TypeError, ValueError, RuntimeError) as err:
        kind = getattr(labels, "dtype", type(labels).__name__)
        raise DataError(f"{where} holds {kind} values; labels are integer class ids or -1."
                        ) from err
    if y.dim() != 1 or y.numel() != num_nodes:
        raise DataError(
            f"{where} has shape {list(y.shape)}, expected [{num_nodes}] (one per target node)."
        )
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            raise DataError(f"{where} holds non-integer values; labels are class ids or -1.")
    elif y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{where} has dtype {y.dtype}; labels are integer class ids or -1.")
    y = y.to(torch.int64)
    if y.numel() and int(y.min()) < -1:
        raise DataError(f"{where}: minimum {int(y.min())} < -1; use -1 for unlabelled nodes.")
    if num_classes is not None and y.numel() and int(y.max()) >= num_classes:
        raise DataError(
            f"{where}: label {int(y.max())} is out of range for {num_classes} classes "
            f"(valid: -1 .. {num_classes - 1})."
        )
    return y


def _validate_splits(splits: Mapping[int, Mapping[str, Tensor]], labels: Tensor) -> dict:
    n = labels.numel()
    out: dict[int, dict[str, Tensor]] = {}
    for rate, parts in splits.items():
        out[int(rate)] = {}
        for part in ("train", "val", "test"):
            if part not in parts:
                raise DataError(f"splits[{rate}] has no {part!r} index; give train, val and test.")
            where = f"splits[{rate}][{part!r}]"
            idx = as_index(parts[part], where)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise DataError(f"{where} has node ids outside [0, {n}).")
            if idx.numel() and bool((labels[idx] < 0).any()):
                raise DataError(f"{where} contains unlabelled nodes (label -1).")
            out[int(rate)][part] = idx
        seen = torch.cat([out[int(rate)][p] for p in ("train", "val", "test")])
        if seen.unique().numel() != seen.numel():
            raise DataError(f"splits[{rate}]: train, val and test overlap or repeat nodes.")
    return out


def as_index(values: Tensor | np.ndarray | Sequence[int], where: str) -> Tensor:
    """Node ids as a flat int64 tensor; whole-valued floats are accepted, anything else (floats
    with a fraction, which would be rounded down, booleans, strings) is a :class:`DataError`."""
    try:
        idx = torch.as_tensor(values if isinstance(values, Tensor) else np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{where} cannot be read as node ids ({err}); give integers.") from err
    idx = idx.detach().cpu().flatten()
    if idx.dtype == torch.bool or idx.is_complex():
        raise DataError(f"{where} has dtype {idx.dtype}; give integer node ids (a boolean mask "
                        "becomes ids with mask.nonzero().flatten()).")
    if idx.is_floating_point():
        whole = torch.isfinite(idx) & (idx == idx.round())
        if not bool(whole.all()):
            first = float(idx[~whole][0])
            raise DataError(f"{where} holds node ids that are not whole numbers (e.g. {first}); "
                            "ids are never rounded: give integers.")
    return idx.to(torch.int64)


def _validate_edges(data: HeteroData) -> None:
    for et in data.edge_types:
        ei = data[et].edge_index
        if ei.dim() != 2 or ei.size(0) != 2 or ei.is_floating_point():
            raise DataError(
                f"edge type {et}: edge_index has shape {list(ei.shape)} and dtype {ei.dtype}; "
                "expected an integer tensor [2, E]."
            )
        for row, t in ((0, et[0]), (1, et[2])):
            n = int(data[t].num_nodes)
            if ei.size(1) and (int(ei[row].min()) < 0 or int(ei[row].max()) >= n):
                raise DataError(
                    f"edge type {et}: {t!r} ids span [{int(ei[row].min())}, "
                    f"{int(ei[row].max())}] but {t!r} has {n} nodes; ids must lie in [0, {n})."
                )


# --------------------------------------------------------------------------------------------
# Features and file readers
# --------------------------------------------------------------------------------------------

def identity_features(num_nodes: int) -> Tensor:
    """Identity (one-hot) features ``[N, N]`` held as a sparse COO tensor, never dense."""
    idx = torch.arange(num_nodes).repeat(2, 1)  # [2, N]
    return torch.sparse_coo_tensor(idx, torch.ones(num_nodes), (num_nodes, num_nodes),
                                   is_coalesced=True, check_invariants=True)


def is_identity(x: Tensor, extra_columns: int = 0) -> bool:
    """Whether ``x`` is the identity (one-hot node ids) held sparse, as
    :func:`identity_features` builds it for featureless node types.

    Exact test, ``O(N)``: sparse COO of shape ``[N, N + extra_columns]`` with exactly ``N``
    stored entries, at ``(i, i)``, all equal to 1 (the ``extra_columns`` trailing columns empty:
    ``extra_columns=1`` recognises :func:`~hetcrf_lite.generative.with_token_column` of an
    identity). Dense tensors are never scanned: a dense identity takes the dense path.

    Args:
        x (torch.Tensor): features ``[N, C]``.
        extra_columns (int, optional): empty columns expected after the identity. (default: ``0``)

    Introduced in notebook 03 (where the feature reconstruction keeps such features sparse).
    """
    if not x.is_sparse or x.dim() != 2 or x.shape[1] != x.shape[0] + extra_columns:
        return False
    col = one_hot_columns(x, x.shape[0])  # one entry 1 per row, within the first N columns
    return col is not None and torch.equal(col, torch.arange(x.shape[0], device=x.device))


def one_hot_columns(x: Tensor, width: int) -> Tensor | None:
    """``[N]`` column of each row's single entry when sparse ``x`` is one-hot within its first
    ``width`` columns (identity features, :func:`~hetcrf_lite.generative.with_token_column` of
    them, or a subset of their rows), else ``None``. Exact, ``O(N)``: one stored entry per row,
    all equal to 1."""
    if not x.is_sparse or x.dim() != 2 or x._nnz() != x.shape[0]:
        return None
    x = x.coalesce()
    row, col = x.indices()
    if not torch.equal(row, torch.arange(x.shape[0], device=x.device)):
        return None
    if bool((col >= width).any()) or not bool((x.values() == 1).all()):
        return None
    return col


def _row_normalise(m: sp.spmatrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float64)
    s = np.asarray(m.sum(axis=1)).ravel()
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)  # zero rows stay zero, not NaN
    return sp.diags(inv) @ m


def _scipy_to_coo(m: sp.spmatrix) -> Tensor:
    c = sp.coo_matrix(m)
    c.sum_duplicates()
    idx = torch.from_numpy(np.stack([c.row, c.col]).astype(np.int64))
    val = torch.from_numpy(c.data.astype(np.float32))
    return torch.sparse_coo_tensor(idx, val, c.shape, check_invariants=True).coalesce()


def _read_error(path: Path, err: Exception) -> DataError:
    return DataError(f"cannot read {path}: {err}. The file is damaged; delete it and load again "
                     "with download=True, or restore it.")


def _read_edges(path: Path, n_src: int, n_dst: int) -> Tensor:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if not raw.isascii():
            # An edge list is ASCII digits and spaces. Anything else never reaches the parser:
            # numpy 2.4's loadtxt crashes the interpreter (segfault) on some non-ASCII
            # characters, e.g. U+E9A80 (found by tests/test_fuzz.py).
            at = next(i for i, b in enumerate(raw) if b > 127)
            raise ValueError(f"byte {at} is not ASCII ({raw[at]:#04x}); an edge list holds "
                             "two integer ids per line")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file is reported below, not as a warning
            # np.loadtxt (C parser since numpy 1.23) reads DBLP's 86k-line pt.txt in ~5 ms
            e = np.loadtxt(io.BytesIO(raw), dtype=np.int64, ndmin=2)
    except (ValueError, OverflowError, OSError) as err:
        raise _read_error(path, err) from err
    if e.shape[1] != 2 or e.shape[0] == 0:
        raise DataError(f"{path} has shape {e.shape}; expected one 'source target' pair per line.")
    for col, n in ((0, n_src), (1, n_dst)):
        if int(e[:, col].min()) < 0 or int(e[:, col].max()) >= n:
            raise DataError(
                f"{path}: column {col} holds ids in [{int(e[:, col].min())}, "
                f"{int(e[:, col].max())}], but that node type has {n} nodes."
            )
    return torch.from_numpy(np.ascontiguousarray(e.T))  # [2, E]


_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)


def _read(path: Path, load: Callable[[Any], Any]) -> Any:
    """``load(file)`` on our own handle (closed even when parsing fails); a damaged file is a
    :class:`DataError` naming it."""
    try:
        with open(path, "rb") as f:
            return load(f)
    except _READ_ERRORS as err:
        raise _read_error(path, err) from err


def _read_npy(path: Path) -> np.ndarray:
    return _read(path, lambda f: np.load(f, allow_pickle=False))


def _read_sparse(path: Path) -> sp.csr_matrix:
    return _read(path, lambda f: sp.load_npz(f).tocsr())  # scipy loads with allow_pickle=False


def _read_features(path: Path, n: int, dense: bool) -> Tensor:
    """Bag-of-words features row-normalised (dense, or sparse COO); a dense ``.npy`` payload
    (DBLP ``t_feat``: signed embeddings) is returned as stored, never normalised."""
    if _is_npy(path):
        raw = _read_npy(path)
        x = torch.from_numpy(_as_float32(raw, path))
    else:
        raw = _read_sparse(path)
        raw = sp.csr_matrix((_as_float32(raw.data, path), raw.indices, raw.indptr), raw.shape)
        # checked before normalising, which would spread one NaN over its whole row
        validate_features(_scipy_to_coo(raw), str(path))
        m = _row_normalise(raw)
        x = torch.from_numpy(m.toarray().astype(np.float32)) if dense else _scipy_to_coo(m)
    if x.dim() != 2 or x.shape[0] != n:
        raise DataError(f"{path} holds features of shape {list(x.shape)}, expected {n} rows.")
    return x


def _as_float32(values: np.ndarray, path: Path) -> np.ndarray:
    if values.dtype.kind not in "biuf":  # bool, ints, floats; never strings, bytes, complex
        raise DataError(f"{path} holds {values.dtype} values, not numbers; features are "
                        "numeric. The file is damaged: restore it.")
    return np.asarray(values, dtype=np.float32)


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(6) == b"\x93NUMPY"  # a .npz is a zip file ("PK..."); t_feat.npz is a .npy


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------

def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    download: bool = True,
    positives: str = "metapath",
    pos_num: int | None = None,
    pos_score: str = "count",
    extra_features: bool = False,
    verify: bool = True,
) -> HINDataset:
    r"""Loads one of the HeCo benchmarks (acm, dblp, aminer, freebase) as a :class:`HINDataset`.

    Node types, meta-paths and default positive-set sizes:

    .. code-block:: text

        dataset   target (N)      other types                       meta-paths         pos_num
        acm       paper (4019)    author, subject                   PAP PSP            5
        dblp      author (4057)   paper, conference, term           APA APCPA APTPA    1000
        aminer    paper (6564)    author, reference                 PAP PRP            15
        freebase  movie (3492)    director, actor, writer           MAM MDM MWM        80

    Every relation is stored in both directions (``(a, "to", b)`` and ``(b, "rev_to", a)``).
    Features, as HeCo's loaders build them: the target type's bag of words row-normalised (ACM
    ``p_feat``, DBLP ``a_feat``; all-zero rows stay zero); every other type, and the targets of
    aminer and freebase, identity features held as a sparse COO tensor. Meta-path adjacencies are
    built from the edge lists by sparse products
    (:func:`~hetcrf_lite.metapaths.metapath_adjacency`); HeCo's stored ``*.npz`` adjacencies are
    not read (the tests check they agree).

    Args:
        name (str): ``"acm"``, ``"dblp"``, ``"aminer"`` or ``"freebase"``.
        root (str or Path, optional): folder with one sub-folder per dataset; see
            :func:`data_root`. (default: :obj:`None`)
        download (bool, optional): fetch missing or corrupt files from HeCo's repository
            (:data:`HECO_URL`) when the folder is writable. (default: :obj:`True`)
        positives (str, optional): ``"metapath"`` builds the positive sets with
            :func:`~hetcrf_lite.metapaths.metapath_positives`; ``"stored"`` reads HeCo's
            ``pos.npz``. (default: :obj:`"metapath"`)
        pos_num (int, optional): positive-set size; HeCo's value when :obj:`None`.
            (default: :obj:`None`)
        pos_score (str, optional): ``"count"`` or ``"normalised"`` (see
            :func:`~hetcrf_lite.metapaths.metapath_scores`). (default: :obj:`"count"`)
        extra_features (bool, optional): also load ACM ``a_feat`` and DBLP ``p_feat`` (row-
            normalised, sparse COO) and DBLP ``t_feat`` (dense, signed, as stored).
            (default: :obj:`False`)
        verify (bool, optional): check every file's sha256 against the shipped manifest; turn
            off only for copies you changed on purpose. (default: :obj:`True`)

    Raises:
        DataFileNotFoundError: files are missing and cannot be fetched.
        DataError: unknown name, corrupt files, or contents of the wrong shape or range.

    Introduced in notebook 01.
    """
    spec = _spec(name)
    key = str(name).lower()
    if positives not in POSITIVES:
        raise ConfigError(f"positives={positives!r}; choose one of {POSITIVES}.")
    folder = data_root(root) / key
    _ensure_files(key, required_files(key, positives, extra_features), folder, download, verify)

    data = HeteroData()
    for t, n in spec.node_types.items():
        data[t].num_nodes = n
    for fname, (src, dst) in spec.relations.items():
        data[src, "to", dst].edge_index = _read_edges(
            folder / fname, spec.node_types[src], spec.node_types[dst])
    data = ToUndirected()(data)  # adds (dst, "rev_to", src) for every relation
    for t, n in spec.node_types.items():
        if t in spec.features:
            data[t].x = _read_features(folder / spec.features[t], n, dense=True)
        elif extra_features and t in spec.extra_features:
            data[t].x = _read_features(folder / spec.extra_features[t], n, dense=False)
        else:
            data[t].x = identity_features(n)

    n = spec.node_types[spec.target]
    labels = validate_labels(_read_npy(folder / "labels.npy"), n, spec.num_classes,
                             where=str(folder / "labels.npy"))
    splits = {
        rate: {part: as_index(_read_npy(folder / f"{part}_{rate}.npy"),
                              str(folder / f"{part}_{rate}.npy"))
               for part in ("train", "val", "test")}
        for rate in RATES
    }
    ds = _assemble(
        data, spec.target, {m: m for m in spec.metapaths}, labels, splits, spec.num_classes,
        spec.pos_num if pos_num is None else pos_num, pos_score, key,
        build_positives=positives == "metapath", seed=0,
    )
    if positives == "stored":
        ds.pos = _read_stored_pos(folder / "pos.npz", n)
    return ds


def _read_stored_pos(path: Path, n: int) -> Tensor:
    m = _read_sparse(path)
    if m.shape != (n, n):
        raise DataError(f"{path} has shape {m.shape}, expected ({n}, {n}).")
    m.eliminate_zeros()
    m.sort_indices()
    c = m.tocoo()  # CSR order: sorted by anchor, then positive
    return torch.from_numpy(np.stack([c.row, c.col]).astype(np.int64))  # [2, P]


def from_heterodata(
    data: HeteroData,
    target: str,
    metapaths: Mapping[str, MetaPathSpec] | Sequence[MetaPathSpec],
    labels: Tensor | np.ndarray | None = None,
    splits: Mapping[int, Mapping[str, Tensor]] | None = None,
    pos_num: int = 5,
    pos_score: str = "count",
    name: str = "custom",
    num_classes: int | None = None,
    seed: int = 0,
) -> HINDataset:
    r"""Wraps any PyG ``HeteroData`` as a :class:`HINDataset`: checks it, fills in what is missing
    and builds meta-path graphs and positive sets.

    Node types without ``x`` get sparse identity features. Labels come from ``labels`` or
    ``data[target].y`` (``-1`` marks unlabelled nodes; with neither, every node is unlabelled and
    ``num_classes`` is 0). Missing splits are drawn by :func:`make_splits` with 20/40/60 training
    nodes per class and :math:`\min(1000, \lfloor L/4 \rfloor)` validation and test nodes for
    :math:`L` labelled nodes. The input object is not modified (a shallow copy is filled in).

    Args:
        data (HeteroData): the graph; relations may be stored in one direction only.
        target (str): the node type that carries labels and closes the meta-paths.
        metapaths (dict or list): ``{name: spec}`` or a list of specs (named by
            :func:`~hetcrf_lite.metapaths.metapath_name`); a spec is letters (``"PAP"``) or a
            list of node types.
        labels (Tensor, optional): ``[N]`` class ids, ``-1`` unlabelled. (default: :obj:`None`)
        splits (dict, optional): ``{rate: {"train", "val", "test": idx}}``. (default: :obj:`None`)
        pos_num (int, optional): positive-set size, anchor included. (default: :obj:`5`)
        pos_score (str, optional): ``"count"`` or ``"normalised"``. (default: :obj:`"count"`)
        name (str, optional): dataset name. (default: :obj:`"custom"`)
        num_classes (int, optional): when given, labels must lie below it; else the largest
            label + 1. (default: :obj:`None`)
        seed (int, optional): seed of the drawn splits. (default: :obj:`0`)

    Raises:
        DataError: unknown target, bad features, labels, splits or edge ids.
        MetaPathError: a meta-path that is malformed, does not close on the target, or has no
            edges.

    Introduced in notebook 01.
    """
    return _assemble(data, target, metapaths, labels, splits, num_classes, pos_num, pos_score,
                     name, build_positives=True, seed=seed)


def _assemble(data, target, metapaths, labels, splits, num_classes, pos_num, pos_score, name,
              build_positives, seed) -> HINDataset:
    """Shared body of :func:`from_heterodata` and :func:`load_dataset` (which may skip the
    positives when it reads the stored ones)."""
    data = _checked_copy(data, target)

    n = int(data[target].num_nodes)
    if labels is None:
        labels = data[target].get("y")
    y = (torch.full((n,), -1, dtype=torch.int64) if labels is None
         else validate_labels(labels, n, num_classes))
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.numel() and int(y.max()) >= 0 else 0
    data[target].y = y

    paths, adj, counts = _metapath_graphs(data, metapaths, target)

    if splits is None:
        labelled = int((y >= 0).sum())
        size = min(1000, labelled // 4)
        splits = make_splits(y, RATES, size, size, seed=seed) if labelled else {}
    else:
        splits = _validate_splits(splits, y)
    pos = metapath_positives(adj, n, pos_num, pos_score) if build_positives else None
    return HINDataset(name=name, data=data, target=target, labels=y, num_classes=num_classes,
                      splits=splits, metapaths=paths, metapath_adj=adj, metapath_counts=counts,
                      pos=pos)


def _checked_copy(data, target: str):
    """A shallow copy of ``data`` (new stores, same tensors: the caller's object stays as it
    was) whose node types all have a count and valid features (identity features where there
    are none) and whose edges are valid."""
    if target not in data.node_types:
        raise DataError(f"target {target!r} is not a node type; the graph has {data.node_types}.")
    data = copy.copy(data)
    for t in data.node_types:
        n = data[t].num_nodes
        if n is None:
            raise DataError(f"node type {t!r} has no nodes count; set data[{t!r}].num_nodes.")
        x = data[t].get("x")
        if x is None:
            data[t].x = identity_features(int(n))
            continue
        validate_features(x, f"data[{t!r}].x")
        if x.size(0) != n:
            raise DataError(f"data[{t!r}].x has {x.size(0)} rows but {t!r} has {n} nodes.")
        refuse_dense_identity(x, f"data[{t!r}].x")
    _validate_edges(data)
    return data


def refuse_dense_identity(x: Tensor, where: str) -> None:
    """Identity (one-hot) features are held sparse, never as a dense ``N x N`` matrix
    (:class:`HINDataset`'s promise: a dense identity costs ``4 N^2`` bytes and dense products).

    Raises:
        DataError: ``x`` is a dense square identity matrix; the message names the sparse
            :func:`identity_features` (or leaving ``x`` unset, which gives it).
    """
    n = x.shape[0]
    if (x.layout == torch.strided and x.dim() == 2 and x.shape[1] == n > 1
            and int(torch.count_nonzero(x)) == n and bool((x.diagonal() == 1).all())):
        raise DataError(
            f"{where} is a dense {n} x {n} identity matrix; identity features are held sparse "
            f"({4 * n * n / 2**20:.1f} MiB dense): use hetcrf_lite.data.identity_features({n}), "
            "or leave x unset (featureless types get it)")


def _metapath_graphs(data, metapaths: object, target: str
                     ) -> tuple[dict[str, list[str]], dict[str, Tensor], dict[str, Tensor]]:
    """``(paths, adjacency, counts)`` keyed by meta-path name: the node types of each meta-path,
    its target-node graph ``[2, E]`` and its path counts; a meta-path without edges, or a name
    used twice, is a :class:`MetaPathError`."""
    items = _metapath_items(metapaths, target)
    if not items:
        raise MetaPathError(f"no meta-path given; give at least one, e.g. "
                            f"{[target, '<neighbour type>', target]}.")
    paths: dict[str, list[str]] = {}
    adj: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for key, spec in items:
        types = parse_metapath(spec, data.node_types, target, data.edge_types)
        key = metapath_name(types) if key is None else str(key)
        if key in paths:
            raise MetaPathError(f"meta-path name {key!r} is used twice; name them with a dict.")
        ei, cnt = metapath_adjacency(data, types)
        if ei.size(1) == 0:
            raise MetaPathError(
                f"meta-path {key} ({'-'.join(types)}) has no edges: no two {target!r} nodes share "
                "a neighbour along it (or no node even reaches itself). Check its relations "
                "hold edges, or drop this meta-path."
            )
        paths[key], adj[key], counts[key] = types, ei, cnt
    return paths, adj, counts


def _metapath_items(metapaths: object, target: str) -> list[tuple[str | None, object]]:
    """``[(name or None, spec)]`` from a dict or a list of specs; a spec of the wrong kind (a
    number, a bare string for the whole list) is a :class:`MetaPathError` with an example."""
    example = f"['PAP'] or [['{target}', '<neighbour type>', '{target}']]"
    if isinstance(metapaths, Mapping):
        items = list(metapaths.items())
    elif isinstance(metapaths, (list, tuple)):
        items = [(None, spec) for spec in metapaths]
    else:
        raise MetaPathError(f"metapaths is a {type(metapaths).__name__}; give a list of specs "
                            f"such as {example}, or a dict {{name: spec}}.")
    for key, spec in items:
        ok = isinstance(spec, str) or (isinstance(spec, (list, tuple))
                                       and all(isinstance(t, str) for t in spec))
        if not ok:
            named = "" if key is None else f" {key!r}"
            raise MetaPathError(f"meta-path{named} is {spec!r}; a spec is a string of letters "
                                f"or a list of node type names, e.g. {example}.")
    return items


def make_splits(
    labels: Tensor | np.ndarray,
    rates: Sequence[int] = RATES,
    num_val: int = 1000,
    num_test: int = 1000,
    seed: int = 0,
) -> dict[int, dict[str, Tensor]]:
    """Seeded splits shaped like the benchmarks': ``rate`` training nodes per class, then random
    validation and test nodes among the remaining labelled ones.

    A class with fewer than ``2 * rate`` labelled nodes gives at most half of them to training,
    and validation / test shrink in proportion when too few nodes are left; both cases warn.
    Unlabelled nodes (``-1``) are never selected. Each rate draws from its own generator
    (``numpy.random.default_rng([seed, rate])``), so asking for other rates changes nothing.

    Args:
        labels (Tensor or ndarray): ``[N]`` class ids, ``-1`` unlabelled.
        rates (list of int, optional): training nodes per class. (default: :obj:`(20, 40, 60)`)
        num_val (int, optional): validation nodes. (default: :obj:`1000`)
        num_test (int, optional): test nodes. (default: :obj:`1000`)
        seed (int, optional): random seed. (default: :obj:`0`)

    Returns:
        dict: ``{rate: {"train": idx, "val": idx, "test": idx}}``, sorted int64 indices.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(np.int64)
    if any(int(r) < 1 for r in rates) or num_val < 0 or num_test < 0:
        raise ConfigError(f"make_splits: rates {list(rates)} must be >= 1 and num_val "
                          f"{num_val}, num_test {num_test} >= 0.")
    labelled = np.flatnonzero(y >= 0)
    out: dict[int, dict[str, Tensor]] = {}
    for rate in rates:
        rng = np.random.default_rng([seed, int(rate)])
        train = []
        for c in np.unique(y[labelled]):
            idx = np.flatnonzero(y == c)
            take = min(int(rate), idx.size // 2)
            if take < rate:
                warnings.warn(f"make_splits: class {c} has only {idx.size} labelled nodes; rate "
                              f"{rate} uses {take} of them for training (at most half).")
            train.append(rng.choice(idx, take, replace=False))
        train = np.sort(np.concatenate(train)) if train else np.zeros(0, dtype=np.int64)
        rest = rng.permutation(np.setdiff1d(labelled, train))
        nv, nt = num_val, num_test
        if nv + nt > rest.size:
            nv = rest.size * num_val // max(num_val + num_test, 1)
            nt = rest.size - nv
            warnings.warn(f"make_splits: rate {rate} leaves {rest.size} labelled nodes; using "
                          f"{nv} for validation and {nt} for test instead of {num_val}/{num_test}.")
        out[int(rate)] = {
            "train": torch.from_numpy(train.astype(np.int64)),
            "val": torch.from_numpy(np.sort(rest[:nv]).astype(np.int64)),
            "test": torch.from_numpy(np.sort(rest[nv:nv + nt]).astype(np.int64)),
        }
    return out


def validate_dataset(dataset: object) -> None:
    """Checks a :class:`HINDataset` before training: every feature matrix finite and numeric,
    labels within ``num_classes``, meta-path graphs and positives integer ``[2, E]`` over the
    target nodes. Datasets built by the loaders already pass; this catches ones changed by hand.

    Raises:
        DataError: not a :class:`HINDataset`, or a bad part (named, with the fix).
        MetaPathError: no meta-path graph.
    """
    if not isinstance(dataset, HINDataset):
        raise DataError(f"expected a HINDataset, got a {type(dataset).__name__}; build one with "
                        "load_dataset, make_synthetic_hin or from_heterodata.")
    ds = dataset
    if ds.target not in ds.data.node_types:
        raise DataError(f"{ds.name}: target {ds.target!r} is not a node type of its graph.")
    for t in ds.data.node_types:
        x = ds.data[t].get("x")
        if x is not None:
            validate_features(x, f"{ds.name}: data[{t!r}].x")
    n = ds.num_nodes
    validate_labels(ds.labels, n, ds.num_classes if ds.num_classes > 0 else None,
                    where=f"{ds.name}: labels")
    if not ds.metapath_adj:
        raise MetaPathError(f"{ds.name} has no meta-path graph; build it with from_heterodata.")
    for name, ei in ds.metapath_adj.items():
        _check_pairs(ei, n, f"{ds.name}: metapath_adj[{name!r}]")
    if ds.pos is not None:
        _check_pairs(ds.pos, n, f"{ds.name}: pos")


def _check_pairs(ei: object, n: int, where: str) -> None:
    if (not isinstance(ei, Tensor) or ei.dim() != 2 or ei.size(0) != 2
            or ei.is_floating_point() or ei.dtype == torch.bool):
        shape = list(ei.shape) if isinstance(ei, Tensor) else type(ei).__name__
        raise DataError(f"{where} is {shape}; expected an integer tensor [2, E].")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise DataError(f"{where} holds node ids outside [0, {n}).")


# --------------------------------------------------------------------------------------------
# Your own graph: a HeteroData saved with torch.save, read without running pickled code
# --------------------------------------------------------------------------------------------

SPLIT_MASK = "{part}_mask_{rate}"
"""Name of a stored split mask on the target type: ``train_mask_20``, ``val_mask_20``,
``test_mask_20`` (boolean ``[N]``), one triple per label rate (training nodes per class)."""

_MASK_RE = re.compile(r"^(train|val|test)_mask_(\d+)$")
_PLAIN_MASKS = ("train_mask", "val_mask", "test_mask")
DEFAULT_POS_NUM = 5  # positive-set size of a graph of your own, anchor included


def _graph_globals() -> list[type]:
    """The PyG classes a pickled ``HeteroData`` names (data holders that run no code when
    rebuilt); ``torch.load(weights_only=True)`` allows them and nothing else beyond tensors
    and plain data."""
    from torch_geometric.data.storage import BaseStorage, EdgeStorage, NodeStorage

    return [HeteroData, BaseStorage, NodeStorage, EdgeStorage]


def to_heterodata(dataset: HINDataset) -> HeteroData:
    """The graph of ``dataset`` as a ``HeteroData`` that :func:`load_graph` reads back: labels
    in ``data[target].y`` (``-1`` unlabelled) and every split as boolean masks
    ``train_mask_<rate>``, ``val_mask_<rate>``, ``test_mask_<rate>`` on the target type.

    Save it with ``torch.save(to_heterodata(ds), "graph.pt")``; ``hetcrf-lite train --data
    graph.pt --target paper --metapaths PAP PSP`` trains on it.
    """
    data = copy.copy(dataset.data)
    store = data[dataset.target]
    n = dataset.num_nodes
    store.y = dataset.labels.clone()
    for rate, parts in dataset.splits.items():
        for part, idx in parts.items():
            mask = torch.zeros(n, dtype=torch.bool)
            mask[idx] = True
            store[SPLIT_MASK.format(part=part, rate=int(rate))] = mask
    return data


def load_graph(path: str | os.PathLike) -> HeteroData:
    """Read a ``HeteroData`` saved with ``torch.save`` (the object, or its ``to_dict()``),
    with ``torch.load(weights_only=True)``: only tensors, plain data and PyG's graph containers
    are rebuilt, so no code in the file ever runs.

    Raises:
        DataFileNotFoundError: no such file.
        DataError: not a file, a file that needs other objects unpickled (refused, nothing
            runs), a damaged file, or something other than a ``HeteroData``.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(f"graph file {path} does not exist; save a HeteroData there "
                                    "with torch.save(data, path)")
    if not path.is_file():
        raise DataError(f"graph file {path} is not a file; give the file torch.save wrote")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a file written by torch.save (which writes a zip "
                        "archive); save the graph with torch.save(data, path)")
    try:
        with torch.serialization.safe_globals(_graph_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = next((ln.strip() for ln in str(err).splitlines() if "WeightsUnpickler" in ln),
                     type(err).__name__)
        raise DataError(f"{path} holds objects other than tensors, plain data and a HeteroData "
                        f"({first[:200]}), so it is not loaded: unpickling them could run code. "
                        "Save the graph itself: torch.save(data, path) with data a HeteroData "
                        "of tensors.") from err
    except Exception as err:  # noqa: BLE001 - any parse failure of a damaged file
        raise DataError(f"cannot read {path} as a saved graph ({type(err).__name__}: "
                        f"{str(err)[:200]}); is it a file written by torch.save?") from err
    return _as_heterodata(obj, path)


def _as_heterodata(obj: object, path: Path) -> HeteroData:
    if isinstance(obj, Mapping) and not isinstance(obj, HeteroData):
        try:
            obj = HeteroData.from_dict(dict(obj))
        except Exception as err:  # noqa: BLE001 - an arbitrary dict from the file
            raise DataError(f"{path} holds a dict that is not HeteroData.to_dict() "
                            f"({type(err).__name__}: {str(err)[:200]})") from err
    if not isinstance(obj, HeteroData):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a HeteroData; save a "
                        "torch_geometric.data.HeteroData (a homogeneous Data has no node types)")
    return obj


def stored_splits(data: HeteroData, target: str) -> dict[int, dict[str, Tensor]] | None:
    """``{rate: {"train", "val", "test": idx}}`` from the boolean masks ``train_mask_<rate>``,
    ``val_mask_<rate>``, ``test_mask_<rate>`` of ``data[target]``; ``None`` when it has none.

    Raises:
        DataError: a rate without all three masks, a mask that is not boolean ``[N]``, or plain
            ``train_mask``/``val_mask``/``test_mask`` (their rate is unknown: rename them).
    """
    store = data[target]
    n = int(store.num_nodes)
    plain = [k for k in _PLAIN_MASKS if k in store]
    if plain:
        raise DataError(f"data[{target!r}] has {plain} without a label rate; name them "
                        "train_mask_<rate>, val_mask_<rate>, test_mask_<rate> (rate: training "
                        "nodes per class, e.g. train_mask_20), or delete them to draw splits")
    found: dict[int, dict[str, Tensor]] = {}
    for key in store.keys():
        match = _MASK_RE.match(str(key))
        if match is None:
            continue
        mask, where = store[key], f"data[{target!r}].{key}"
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or list(mask.shape) != [n]:
            shape = list(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise DataError(f"{where} is {getattr(mask, 'dtype', '')} {shape}; a split mask is "
                            f"a boolean tensor [{n}]")
        found.setdefault(int(match.group(2)), {})[match.group(1)] = mask.nonzero().flatten()
    for rate, parts in found.items():
        missing = [p for p in ("train", "val", "test") if p not in parts]
        if missing:
            raise DataError(f"data[{target!r}] has split masks for rate {rate} but not "
                            f"{[SPLIT_MASK.format(part=p, rate=rate) for p in missing]}")
    return dict(sorted(found.items())) or None


def load_graph_dataset(
    path: str | os.PathLike,
    target: str,
    metapaths: Mapping[str, MetaPathSpec] | Sequence[MetaPathSpec],
    pos_num: int | None = None,
    pos_score: str = "count",
    split_seed: int = 0,
    name: str | None = None,
) -> HINDataset:
    """A graph of your own as a :class:`HINDataset`: :func:`load_graph`, then
    :func:`from_heterodata`.

    Labels come from ``data[target].y`` (``-1`` unlabelled); splits from the stored masks
    (:func:`stored_splits`), else drawn by :func:`make_splits` with ``split_seed`` at 20/40/60
    training nodes per class.

    Raises:
        DataFileNotFoundError, DataError, MetaPathError: as :func:`load_graph` and
            :func:`from_heterodata`; a malformed graph object is a :class:`DataError`.
    """
    data = load_graph(path)
    try:
        if target not in data.node_types:
            raise DataError(f"{path}: target {target!r} is not a node type; the graph has "
                            f"{data.node_types}")
        splits = stored_splits(data, target)
        return from_heterodata(data, target, metapaths, splits=splits,
                               pos_num=DEFAULT_POS_NUM if pos_num is None else pos_num,
                               pos_score=pos_score, name=name or Path(path).stem,
                               seed=split_seed)
    except (DataError, MetaPathError, ConfigError):
        raise
    except Exception as err:  # noqa: BLE001 - a malformed object read from the file
        raise DataError(f"{path}: the saved graph is malformed ({type(err).__name__}: "
                        f"{str(err)[:200]}); rebuild it as a HeteroData of tensors") from err


# --------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Aligned text table: numeric columns right-aligned, text columns left-aligned."""
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(r[i], (int, float)) or _numberlike(str(r[i])) for r in rows)
               for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if num else c.ljust(w)
                       for c, w, num in zip(r, widths, numeric)).rstrip() for r in cells]
    return lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:]


def _numberlike(s: str) -> bool:
    try:
        float(s.rstrip("%"))
        return True
    except ValueError:
        return False


def _feature_stats(x: Tensor) -> tuple[str, int, float]:
    """(kind, dim, fraction of zero entries) without densifying a sparse tensor."""
    n, d = int(x.shape[0]), int(x.shape[1])
    if x.layout == torch.sparse_coo:
        x = x.coalesce()
        nonzero = int((x.values() != 0).sum())
        kind = "identity (sparse)" if is_identity(x) else "sparse"
    else:
        nonzero = int((x != 0).sum())
        kind = "dense"
    return kind, d, 1.0 - nonzero / max(n * d, 1)


def describe(dataset: HINDataset) -> str:
    """A text summary of a :class:`HINDataset`: node types with feature dimension and sparsity,
    relations, meta-path graphs with degree statistics, positive sets and class balance.

    Degrees count a node's meta-path neighbours, its self-loop included.

    Args:
        dataset (HINDataset): the dataset.

    Returns:
        str: aligned tables, one block per topic.

    Introduced in notebook 01.
    """
    ds, n = dataset, dataset.num_nodes
    out = [f"{ds.name}: target {ds.target!r}, {n} nodes, {ds.num_classes} classes", ""]
    rows = []
    for t in ds.data.node_types:
        x = ds.data[t].get("x")
        kind, dim, zeros = _feature_stats(x) if x is not None else ("none", 0, 1.0)
        rows.append([t, int(ds.data[t].num_nodes), kind, dim, f"{zeros:.4f}"])
    out += _table(["node type", "nodes", "features", "dim", "zeros"], rows) + [""]
    rows = [[f"{s} -{r}-> {d}", int(ds.data[s, r, d].edge_index.size(1))]
            for s, r, d in ds.data.edge_types]
    out += _table(["relation", "edges"], rows) + [""]
    rows = []
    for m, ei in ds.metapath_adj.items():
        deg = torch.bincount(ei[1], minlength=n).float()  # [N]
        rows.append([m, "-".join(ds.metapaths[m]), ei.size(1), f"{ei.size(1) / max(n, 1):.2f}",
                     int(deg.min()), f"{float(deg.median()):.0f}", int(deg.max())])
    out += _table(["meta-path", "path", "edges", "mean deg", "min", "median", "max"], rows)
    if ds.pos is not None:
        size = torch.bincount(ds.pos[0], minlength=n)  # [N]
        out += ["", f"positives: {ds.pos.size(1)} pairs, {ds.pos.size(1) / max(n, 1):.2f} per "
                    f"anchor (min {int(size.min())}, max {int(size.max())})"]
    counts = torch.bincount(ds.labels[ds.labels >= 0], minlength=ds.num_classes)
    rows = [[c, int(k), f"{100 * int(k) / max(n, 1):.1f}%"] for c, k in enumerate(counts)]
    unlabelled = int((ds.labels < 0).sum())
    if unlabelled:
        rows.append(["-1", unlabelled, f"{100 * unlabelled / max(n, 1):.1f}%"])
    out += [""] + _table(["class", "nodes", "share"], rows)
    if ds.splits:
        out += ["", "splits: " + ", ".join(
            f"{r}: {len(s['train'])}/{len(s['val'])}/{len(s['test'])}"
            for r, s in ds.splits.items()) + " (train/val/test)"]
    return "\n".join(out)
