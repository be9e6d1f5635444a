"""Tests of hetcrf_lite.data: loaders, download with sha256, validation, from_heterodata,
make_splits, describe. Broken inputs are built in tmp_path; the shared data is only read."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import threading
import warnings
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData
from torch_geometric.datasets import FakeHeteroDataset

import hetcrf_lite.data as hd
from hetcrf_lite.data import (
    DATASETS,
    HINDataset,
    data_root,
    describe,
    from_heterodata,
    identity_features,
    load_dataset,
    make_splits,
    required_files,
    validate_features,
    validate_labels,
)
from hetcrf_lite.errors import ConfigError, DataError, DataFileNotFoundError, MetaPathError
from hetcrf_lite.metapaths import metapath_scores, topk_violations

EXPECTED = {
    "acm": ("paper", {"paper": 4019, "author": 7167, "subject": 60}, 3, ["PAP", "PSP"]),
    "dblp": ("author", {"author": 4057, "paper": 14328, "conference": 20, "term": 7723}, 4,
             ["APA", "APCPA", "APTPA"]),
    "aminer": ("paper", {"paper": 6564, "author": 13329, "reference": 35890}, 4, ["PAP", "PRP"]),
    "freebase": ("movie", {"movie": 3492, "director": 2502, "actor": 33401, "writer": 4459}, 3,
                 ["MAM", "MDM", "MWM"]),
}


def is_identity(x: torch.Tensor, n: int) -> bool:
    x = x.coalesce()
    return (x.layout == torch.sparse_coo and tuple(x.shape) == (n, n) and x._nnz() == n
            and bool((x.indices()[0] == x.indices()[1]).all()) and bool((x.values() == 1).all()))


# ---------------------------------------------------------------- the four benchmarks

@pytest.mark.parametrize("name", DATASETS)
def test_load_dataset_contents(heco, heco_root, name):
    target, counts, num_classes, metapaths = EXPECTED[name]
    ds = heco(name)
    assert isinstance(ds, HINDataset) and ds.name == name and ds.target == target
    assert {t: int(ds.data[t].num_nodes) for t in ds.data.node_types} == counts
    for src, rel, dst in ds.data.edge_types:
        if rel == "to":  # every relation is stored both ways, as transposes
            fwd, rev = ds.data[src, rel, dst].edge_index, ds.data[dst, "rev_to", src].edge_index
            assert torch.equal(fwd.flip(0), rev)
    assert len(ds.data.edge_types) == 2 * (len(counts) - 1)
    for t, n in counts.items():  # identity features everywhere but the bag-of-words targets
        if not (t == target and name in ("acm", "dblp")):
            assert is_identity(ds.data[t].x, n), t
    labels = np.load(heco_root / name / "labels.npy", allow_pickle=False)
    assert ds.labels.dtype == torch.int64 and torch.equal(ds.labels, torch.from_numpy(
        labels.astype(np.int64)))
    assert ds.num_classes == num_classes and int(ds.labels.max()) == num_classes - 1
    assert torch.equal(ds.data[target].y, ds.labels)
    for rate in (20, 40, 60):
        for part in ("train", "val", "test"):
            stored = np.load(heco_root / name / f"{part}_{rate}.npy", allow_pickle=False)
            assert torch.equal(ds.splits[rate][part], torch.from_numpy(stored))
        assert len(ds.splits[rate]["train"]) == rate * num_classes
    assert list(ds.metapaths) == metapaths == list(ds.metapath_adj) == list(ds.metapath_counts)
    for m, ei in ds.metapath_adj.items():
        assert ei.dtype == torch.int64 and ds.metapath_counts[m].shape == (ei.size(1),)
        assert bool((ds.metapath_counts[m] >= 1).all())
    assert ds.pos.dtype == torch.int64 and bool((ds.pos[0][1:] >= ds.pos[0][:-1]).all())


def test_target_features_row_normalised(heco, heco_root):
    acm = heco("acm")
    raw = sp.load_npz(heco_root / "acm" / "p_feat.npz").toarray()
    expected = raw / raw.sum(1, keepdims=True)
    assert acm.x.layout == torch.strided and acm.x.dtype == torch.float32
    np.testing.assert_allclose(acm.x.numpy(), expected, rtol=1e-6)
    dblp = heco("dblp")
    sums = dblp.x.sum(1)
    assert dblp.x.shape == (4057, 334) and bool(torch.isfinite(dblp.x).all())
    assert int((sums == 0).sum()) == 39  # all-zero authors stay zero, not NaN
    assert torch.allclose(sums[sums > 0], torch.ones(4057 - 39))


def test_extra_features(heco_root):
    acm = load_dataset("acm", root=heco_root, download=False, positives="stored",
                       extra_features=True)
    a = acm.data["author"].x
    assert a.layout == torch.sparse_coo and a.shape == (7167, 1902)
    sums = torch.sparse.sum(a, dim=1).to_dense()
    assert torch.allclose(sums[sums > 0], torch.ones(int((sums > 0).sum())), atol=1e-5)
    dblp = load_dataset("dblp", root=heco_root, download=False, positives="stored",
                        extra_features=True)
    t = dblp.data["term"].x
    stored = np.load(heco_root / "dblp" / "t_feat.npz", allow_pickle=False)  # a .npy payload
    assert t.layout == torch.strided and bool((t < 0).any())  # signed, never row-normalised
    np.testing.assert_allclose(t.numpy(), stored.astype(np.float32))
    assert dblp.data["paper"].x.layout == torch.sparse_coo
    assert dblp.data["paper"].x.shape == (14328, 4231)
    assert is_identity(dblp.data["conference"].x, 20)


def test_positives_options(heco, heco_root):
    stored = load_dataset("acm", root=heco_root, download=False, positives="stored")
    m = sp.load_npz(heco_root / "acm" / "pos.npz").tocoo()
    order = np.lexsort((m.col, m.row))
    assert stored.pos.tolist() == [m.row[order].tolist(), m.col[order].tolist()]
    small = load_dataset("acm", root=heco_root, download=False, pos_num=3,
                         pos_score="normalised")
    sizes = torch.bincount(small.pos[0])
    assert int(sizes.max()) == 3 and small.pos.size(1) < heco("acm").pos.size(1)
    s = metapath_scores(small.metapath_adj, small.num_nodes, "normalised")
    assert topk_violations(small.pos, s, 3).size == 0
    with pytest.raises(ConfigError, match="positives='file'"):
        load_dataset("acm", root=heco_root, positives="file")


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'imdb'.*\['acm', 'dblp'"):
        load_dataset("imdb", root=tmp_path)


def test_required_files_never_include_pickles_or_stored_metapaths():
    for name in DATASETS:
        files = required_files(name, positives="stored", extra_features=True)
        assert not any(f.startswith("nei_") for f in files)
        assert not any(f in files for f in ("pap.npz", "psp.npz", "apa.npz", "apcpa.npz"))
    assert "pos.npz" not in required_files("acm")
    assert "a_feat.npz" in required_files("acm", extra_features=True)


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("HETCRF_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("HETCRF_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "hetcrf_lite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_root() == Path.home() / ".cache" / "hetcrf_lite"


def test_shipped_manifest_matches_data(heco_root):
    shipped = Path(hd.__file__).parent / "SHA256SUMS"
    assert shipped.read_text() == (heco_root / "SHA256SUMS").read_text()
    digest = hashlib.sha256((heco_root / "acm" / "pa.txt").read_bytes()).hexdigest()
    assert hd._manifest()["acm/pa.txt"] == digest


# ---------------------------------------------------------------- local copies and download

def copy_acm(heco_root: Path, dest: Path, positives: str = "metapath") -> Path:
    folder = dest / "acm"
    folder.mkdir(parents=True)
    for f in required_files("acm", positives=positives):
        shutil.copyfile(heco_root / "acm" / f, folder / f)
    return folder


@pytest.fixture
def upstream(tmp_path, heco_root, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving a copy of the acm files; HECO_URL points at it."""
    served = tmp_path / "upstream"
    copy_acm(heco_root, served, positives="stored")
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/{{dataset}}/{{file}}"
    monkeypatch.setattr(hd, "HECO_URL", url)
    yield SimpleNamespace(dir=served / "acm", requests=requests)
    server.shutdown()
    server.server_close()


def test_download_fetches_only_needed_files(upstream, tmp_path, heco):
    root = tmp_path / "cache"
    ds = load_dataset("acm", root=root)
    needed = required_files("acm")
    assert sorted(upstream.requests) == sorted(f"/acm/{f}" for f in needed)
    assert sorted(os.listdir(root / "acm")) == sorted(needed)  # no .part leftovers, no nei_*
    ref = heco("acm")
    for m in ref.metapath_adj:
        assert torch.equal(ds.metapath_adj[m], ref.metapath_adj[m])
    assert torch.equal(ds.pos, ref.pos) and torch.equal(ds.x, ref.x)
    upstream.requests.clear()
    load_dataset("acm", root=root, positives="stored")  # only the new file is fetched
    assert upstream.requests == ["/acm/pos.npz"]


def test_corrupt_cached_file_is_fetched_again(upstream, tmp_path, heco_root):
    folder = copy_acm(heco_root, tmp_path / "cache")
    (folder / "pa.txt").write_bytes((folder / "pa.txt").read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match=r"\['pa.txt'\].*sha256.*fetching again"):
        load_dataset("acm", root=tmp_path / "cache")
    assert upstream.requests == ["/acm/pa.txt"]
    assert (folder / "pa.txt").read_bytes() == (heco_root / "acm" / "pa.txt").read_bytes()


def test_corrupt_download_leaves_nothing(upstream, tmp_path):
    (upstream.dir / "labels.npy").write_bytes(b"not the labels")
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"labels.npy downloaded with sha256 .* expected"):
        load_dataset("acm", root=root)
    assert "labels.npy" not in os.listdir(root / "acm")
    assert not [f for f in os.listdir(root / "acm") if f.endswith(".part")]


def test_missing_files_without_download(tmp_path, heco_root):
    folder = copy_acm(heco_root, tmp_path)
    (folder / "ps.txt").unlink()
    with pytest.raises(DataFileNotFoundError) as err:
        load_dataset("acm", root=tmp_path, download=False)
    msg = str(err.value)
    assert "ps.txt" in msg and str(folder) in msg and "HETCRF_DATA" in msg
    assert "missing ['ps.txt'] in" in msg  # only what is missing is named


def test_no_network(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(hd, "HECO_URL", f"http://127.0.0.1:{port}/{{dataset}}/{{file}}")
    with pytest.raises(DataFileNotFoundError) as err:
        load_dataset("freebase", root=tmp_path)
    msg = str(err.value)
    assert "could not download" in msg and "ma.txt" in msg and "HETCRF_DATA" in msg
    assert str(tmp_path / "freebase") in msg
    assert not any((tmp_path / "freebase").iterdir())  # nothing half-written


def test_download_is_a_monkeypatchable_function(tmp_path, monkeypatch, heco_root):
    calls = []

    def fake(url, path, sha256=None, timeout=60.0):
        calls.append(url)
        shutil.copyfile(heco_root / "aminer" / Path(url).name, path)

    monkeypatch.setattr(hd, "download_file", fake)
    ds = load_dataset("aminer", root=tmp_path)
    assert len(calls) == len(required_files("aminer")) and ds.num_nodes == 6564
    assert all(u.startswith("https://raw.githubusercontent.com/liun-online/HeCo/") for u in calls)


def test_read_only_root(tmp_path, heco_root):
    folder = copy_acm(heco_root, tmp_path)
    (folder / "val_20.npy").unlink()
    (folder / "pa.txt").write_bytes(b"0 0\n")
    before = sorted(os.listdir(folder))
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(DataError, match=r"\['pa.txt'\].*sha256.*read-only"):
            load_dataset("acm", root=tmp_path)
        shutil.copyfile(heco_root / "acm" / "pa.txt", folder / "pa.txt")  # (root may write)
        with pytest.raises(DataFileNotFoundError, match=r"val_20.npy.*read-only.*HETCRF_DATA"):
            load_dataset("acm", root=tmp_path)
        assert sorted(os.listdir(folder)) == before  # nothing written by the loader
    finally:
        os.chmod(folder, 0o755)


def test_read_only_shared_copy_loads(heco_root):
    folder = heco_root / "aminer"
    if not folder.stat().st_mode & 0o222:  # the shared copy is r-x: never a download target
        assert not hd._writable(folder)
    before = sorted(os.listdir(folder))
    ds = load_dataset("aminer", root=heco_root, download=True)  # verifies, writes nothing
    assert ds.num_nodes == 6564 and sorted(os.listdir(folder)) == before


def test_changed_file_is_hashed_again(tmp_path, heco_root):
    folder = copy_acm(heco_root, tmp_path)
    load_dataset("acm", root=tmp_path, download=False)
    raw = bytearray((folder / "labels.npy").read_bytes())
    raw[-1] ^= 1  # same size, new content (and mtime)
    (folder / "labels.npy").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"\['labels.npy'\].*sha256.*download=True"):
        load_dataset("acm", root=tmp_path, download=False)


# ---------------------------------------------------------------- validation of broken copies

def broken_acm(tmp_path, heco_root, fname, content) -> Path:
    folder = copy_acm(heco_root, tmp_path)
    path = folder / fname
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, np.ndarray):
        with open(path, "wb") as f:
            np.save(f, content)
    else:
        sp.save_npz(path, content)
    return folder


@pytest.mark.parametrize("fname, content, match", [
    ("labels.npy", np.zeros(4000), r"labels.npy has shape \[4000\], expected \[4019\]"),
    ("labels.npy", np.r_[np.zeros(4018), 3.0], r"label 3 is out of range for 3 classes"),
    ("labels.npy", np.r_[np.zeros(4018), -2], r"minimum -2 < -1"),
    ("labels.npy", np.r_[np.zeros(4018), 0.5], r"non-integer"),
    ("pa.txt", b"0 0\n1 7167\n", r"pa.txt: column 1 holds ids in \[0, 7167\].*7167 nodes"),
    ("pa.txt", b"0 1 2\n3 4 5\n", r"pa.txt has shape \(2, 3\)"),
    ("ps.txt", b"0 x\n", r"cannot read .*ps.txt"),
    ("p_feat.npz", b"PK\x03\x04 broken zip", r"cannot read .*p_feat.npz"),
    ("p_feat.npz", sp.csr_matrix(np.ones((10, 3))), r"p_feat.npz holds features of shape"),
    ("train_20.npy", np.array([0, 5000]), r"splits\[20\]\['train'\] has node ids outside"),
])
def test_broken_files_raise(tmp_path, heco_root, fname, content, match):
    folder = broken_acm(tmp_path, heco_root, fname, content)
    with pytest.raises(DataError, match=match):
        load_dataset("acm", root=folder.parent, download=False, verify=False)
    # with verification on, the same copy fails the checksum first
    with pytest.raises(DataError, match=rf"\['{fname}'\].*sha256"):
        load_dataset("acm", root=folder.parent, download=False)


def test_nan_features_raise(tmp_path, heco_root):
    m = sp.load_npz(heco_root / "acm" / "p_feat.npz").tocsr()
    m.data[5] = np.nan
    folder = broken_acm(tmp_path, heco_root, "p_feat.npz", m)
    with pytest.raises(DataError, match=r"p_feat.npz holds 1 NaN/Inf value\(s\), first in row 0"):
        load_dataset("acm", root=folder.parent, download=False, verify=False)


def test_validate_features():
    validate_features(torch.ones(3, 2), "x")
    validate_features(identity_features(4), "x")
    bad = torch.ones(3, 2)
    bad[2, 1] = float("inf")
    with pytest.raises(DataError, match=r"x holds 1 NaN/Inf value\(s\), first in row 2"):
        validate_features(bad, "x")
    sparse = torch.sparse_coo_tensor(torch.tensor([[1], [0]]), torch.tensor([float("nan")]),
                                     (3, 2), check_invariants=True)
    with pytest.raises(DataError, match="first in row 1"):
        validate_features(sparse, "x")
    with pytest.raises(DataError, match="dtype torch.int64"):
        validate_features(torch.ones(3, 2, dtype=torch.int64), "x")
    with pytest.raises(DataError, match=r"shape \[3\]"):
        validate_features(torch.ones(3), "x")


def test_validate_labels():
    y = validate_labels(np.array([0.0, 2.0, -1.0]), 3, 3)
    assert y.dtype == torch.int64 and y.tolist() == [0, 2, -1]
    with pytest.raises(DataError, match="out of range for 2 classes"):
        validate_labels(torch.tensor([0, 2]), 2, 2)


# ---------------------------------------------------------------- from_heterodata

def fake_graph(seed: int = 0) -> tuple[HeteroData, list[str]]:
    random.seed(seed)
    torch.manual_seed(seed)
    data = FakeHeteroDataset(num_node_types=3, num_edge_types=6, avg_num_nodes=300,
                             avg_degree=4, num_classes=3)[0]
    linked = [t for t in data.node_types if t != "v0" and any(
        {s, d} == {"v0", t} for s, _, d in data.edge_types)]
    return data, linked


def test_from_heterodata_fake_dataset():
    data, linked = fake_graph()
    assert linked, "the fake graph should join v0 to another type"
    n_other = int(data[linked[0]].num_nodes)
    del data[linked[0]].x  # a type without features gets identity features
    data[linked[0]].num_nodes = n_other
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny classes: make_splits scales down, and says so
        ds = from_heterodata(data, "v0", [["v0", t, "v0"] for t in linked], pos_num=4)
    assert list(ds.metapaths) == [f"v0-{t}-v0" for t in linked]
    assert "x" not in data[linked[0]]  # the input is left as it was
    assert is_identity(ds.data[linked[0]].x, n_other)
    assert torch.equal(ds.labels, data["v0"].y) and ds.num_classes == 3
    assert set(ds.splits) == {20, 40, 60}
    for parts in ds.splits.values():
        idx = torch.cat([parts["train"], parts["val"], parts["test"]])
        assert idx.unique().numel() == idx.numel()
    s = metapath_scores(ds.metapath_adj, ds.num_nodes)
    assert topk_violations(ds.pos, s, 4).size == 0
    with pytest.raises(MetaPathError, match="ambiguous"):
        from_heterodata(data, "v0", ["VVV"])


def test_from_heterodata_round_trip(heco):
    acm = heco("acm")
    ds = from_heterodata(acm.data, "paper", acm.metapaths, labels=acm.labels,
                         splits=acm.splits, pos_num=5, name="acm-again")
    assert ds.name == "acm-again" and list(ds.metapaths) == ["PAP", "PSP"]
    for m in acm.metapath_adj:
        assert torch.equal(ds.metapath_adj[m], acm.metapath_adj[m])
        assert torch.equal(ds.metapath_counts[m], acm.metapath_counts[m])
    assert torch.equal(ds.pos, acm.pos) and ds.num_classes == 3


def tiny_graph() -> HeteroData:
    data = HeteroData()
    data["paper"].x = torch.rand(6, 3)
    data["paper"].y = torch.tensor([0, 1, 0, 1, -1, 0])
    data["author"].num_nodes = 3
    data["paper", "to", "author"].edge_index = torch.tensor([[0, 1, 2, 3, 4, 5],
                                                            [0, 0, 1, 1, 2, 2]])
    return data


def test_from_heterodata_unlabelled_nodes_never_split():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_heterodata(tiny_graph(), "paper", ["PAP"], pos_num=2)
    assert ds.labels.tolist() == [0, 1, 0, 1, -1, 0] and ds.num_classes == 2
    for parts in ds.splits.values():
        assert 4 not in torch.cat(list(parts.values())).tolist()
    unlabelled = tiny_graph()
    del unlabelled["paper"].y
    ds = from_heterodata(unlabelled, "paper", {"pap": "PAP"})
    assert bool((ds.labels == -1).all()) and ds.num_classes == 0 and ds.splits == {}


@pytest.mark.parametrize("change, error, match", [
    (lambda d: d["paper"].x.__setitem__((1, 1), float("nan")), DataError,
     r"data\['paper'\].x holds 1 NaN/Inf"),
    (lambda d: setattr(d["paper"], "y", torch.tensor([0, 1, 0])), DataError,
     r"labels has shape \[3\], expected \[6\]"),
    (lambda d: setattr(d["paper"], "y", torch.tensor([0, 1, 0, 1, -3, 0])), DataError,
     r"minimum -3 < -1"),
    (lambda d: d["paper", "to", "author"].edge_index.__setitem__((1, 0), 3), DataError,
     r"'author' ids span \[0, 3\] but 'author' has 3 nodes"),
    (lambda d: d["paper"].update({"num_nodes": 6, "x": torch.rand(5, 3)}), DataError,
     r"data\['paper'\].x has 5 rows but 'paper' has 6"),
])
def test_from_heterodata_validation(change, error, match):
    data = tiny_graph()
    change(data)
    with pytest.raises(error, match=match):
        from_heterodata(data, "paper", ["PAP"])


def test_a_densified_identity_is_refused_where_identity_features_are_promised_sparse():
    """HINDataset holds identity features sparse, never dense N x N: a dense identity given for
    a node type is refused (DataError, naming the sparse identity_features); the sparse one, and
    a dense square matrix that is not the identity, are accepted."""
    data = tiny_graph()
    data["author"].x = torch.eye(3)  # what x.to_dense() of identity_features(3) gives
    with pytest.raises(DataError, match=r"data\['author'\].x is a dense 3 x 3 identity.*"
                                        r"identity_features\(3\)"):
        from_heterodata(data, "paper", ["PAP"])
    data["author"].x = hd.identity_features(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_heterodata(data, "paper", ["PAP"])
    assert ds.data["author"].x.is_sparse
    data["author"].x = 2 * torch.eye(3)  # square and diagonal, but not one-hot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_heterodata(data, "paper", ["PAP"])


def test_from_heterodata_target_and_metapath_errors():
    data = tiny_graph()
    with pytest.raises(DataError, match=r"target 'venue' is not a node type"):
        from_heterodata(data, "venue", ["PAP"])
    with pytest.raises(MetaPathError, match="must start and end at the target type 'paper'"):
        from_heterodata(data, "paper", [["author", "paper", "author"]])
    with pytest.raises(MetaPathError, match="unknown node type 'S'"):
        from_heterodata(data, "paper", ["PSP"])
    with pytest.raises(DataError, match="label 1 is out of range for 1 classes"):
        from_heterodata(data, "paper", ["PAP"], num_classes=1)
    empty = tiny_graph()
    empty["paper", "to", "author"].edge_index = torch.zeros(2, 0, dtype=torch.int64)
    with pytest.raises(MetaPathError, match=r"meta-path PAP \(paper-author-paper\) has no edges"):
        from_heterodata(empty, "paper", ["PAP"])


# ---------------------------------------------------------------- make_splits

def test_make_splits_seeded_per_class():
    labels = torch.tensor([c for c in range(3) for _ in range(200)] + [-1] * 50)
    a = make_splits(labels, rates=(20, 40), num_val=100, num_test=100, seed=1)
    b = make_splits(labels, rates=(40,), num_val=100, num_test=100, seed=1)
    c = make_splits(labels, rates=(20, 40), num_val=100, num_test=100, seed=2)
    assert all(torch.equal(a[40][p], b[40][p]) for p in ("train", "val", "test"))
    assert not torch.equal(a[20]["train"], c[20]["train"])
    for rate, parts in a.items():
        assert torch.bincount(labels[parts["train"]]).tolist() == [rate] * 3
        assert len(parts["val"]) == len(parts["test"]) == 100
        allidx = torch.cat(list(parts.values()))
        assert allidx.unique().numel() == allidx.numel()
        assert bool((labels[allidx] >= 0).all())
        assert parts["train"].dtype == torch.int64


def test_make_splits_scales_down_with_warning():
    labels = torch.tensor([0] * 30 + [1] * 10 + [-1] * 5)
    with pytest.warns(UserWarning) as record:
        splits = make_splits(labels, rates=(20,), num_val=100, num_test=100)
    messages = [str(w.message) for w in record]
    assert any("class 0 has only 30 labelled nodes; rate 20 uses 15" in m for m in messages)
    assert any("class 1 has only 10 labelled nodes; rate 20 uses 5" in m for m in messages)
    assert any("using 10 for validation and 10 for test" in m for m in messages)
    assert torch.bincount(labels[splits[20]["train"]]).tolist() == [15, 5]
    # 20 nodes left for 200 requested: validation and test share them half and half
    assert len(splits[20]["val"]) == 10 and len(splits[20]["test"]) == 10
    with pytest.raises(ConfigError):
        make_splits(labels, rates=(0,))


# ---------------------------------------------------------------- describe and helpers

def test_describe_acm(heco):
    ds = heco("acm")
    text = describe(ds)
    assert text == ds.summary()
    lines = text.splitlines()
    assert lines[0] == "acm: target 'paper', 4019 nodes, 3 classes"
    assert any(line.split()[:3] == ["paper", "4019", "dense"] for line in lines)
    assert any(line.split()[:4] == ["author", "7167", "identity", "(sparse)"] for line in lines)
    psp = next(line.split() for line in lines if line.startswith("PSP"))
    deg = torch.bincount(ds.metapath_adj["PSP"][1])
    assert psp[2:] == ["4338213", f"{4338213 / 4019:.2f}", str(int(deg.min())),
                       f"{float(deg.float().median()):.0f}", str(int(deg.max()))]
    zeros = 1 - int((ds.x != 0).sum()) / ds.x.numel()
    assert f"{zeros:.4f}" in next(line for line in lines if line.startswith("paper "))
    assert any(line.split() == ["0", "1993", "49.6%"] for line in lines)
    # every row of a table is as wide as its rule line
    rule = next(i for i, line in enumerate(lines) if line.startswith("---------  -----"))
    assert len(lines[rule + 1]) <= len(lines[rule])


def test_describe_fake_graph_with_unlabelled():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_heterodata(tiny_graph(), "paper", ["PAP"], pos_num=2)
    text = describe(ds)
    assert "PAP" in text and "-1" in text and "author -to-> paper" not in text


def test_hindataset_helpers(heco, heco_root):
    ds = heco("acm")
    assert repr(ds) == ("HINDataset(name='acm', target='paper', num_nodes=4019, "
                        "num_features=1902, num_classes=3, metapaths=['PAP', 'PSP'], "
                        f"pos=[2, {ds.pos.size(1)}])")
    assert ds.neighbor_types == ["author", "subject"]
    pa = np.unique(np.loadtxt(heco_root / "acm" / "pa.txt", dtype=np.int64), axis=0)
    assert ds.neighbors("author").tolist() == pa.T.tolist()
    moved = ds.to("cpu")
    assert torch.equal(moved.metapath_adj["PAP"], ds.metapath_adj["PAP"])
