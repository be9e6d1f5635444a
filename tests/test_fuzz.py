"""Property-based fuzzing (hypothesis) of everything that reads outside input: the loaders' file
readers, meta-path specs, configs (as dicts and as YAML bytes) and checkpoints.

The property: a **named error** (:class:`~hetcrf_lite.errors.HetCRFError`) **or a valid result**,
never another exception. Derandomised (the same examples every run) and capped so that the file
takes seconds in ``make test``; ``make fuzz`` runs the long profile
(``HETCRF_FUZZ_PROFILE=long``) and, with ``HETCRF_FUZZ_FIGURES=DIR``, writes the outcome counts
per target (``fuzz_outcomes.json``) and their bar chart (``fuzz_outcomes.png``) there.
"""
from __future__ import annotations

import io
import json
import math
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch_geometric.data import HeteroData

import hetcrf_lite.data as hd
from hetcrf_lite.config import HetCRFConfig, parse_yaml
from hetcrf_lite.errors import HetCRFError

PROFILES = {
    "ci": dict(max_examples=60),  # make test: about 10 s for the whole file
    "long": dict(max_examples=2000),  # make fuzz
}
FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much],
                **PROFILES[os.environ.get("HETCRF_FUZZ_PROFILE", "ci")])

OUTCOMES: dict[str, Counter] = defaultdict(Counter)


def outcome(target: str, call) -> object:
    """Run ``call``; a result or a named error is recorded under ``target``, anything else
    propagates (and fails the property)."""
    try:
        result = call()
    except HetCRFError as err:
        OUTCOMES[target][type(err).__name__] += 1
        return err
    OUTCOMES[target]["valid"] += 1
    return result


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    folder = os.environ.get("HETCRF_FUZZ_FIGURES")
    if folder and OUTCOMES:
        write_report(Path(folder), OUTCOMES)


def write_report(folder: Path, outcomes: dict[str, Counter]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    targets = sorted(outcomes)
    kinds = sorted({k for c in outcomes.values() for k in c}, key=lambda k: (k != "valid", k))
    summary = {"profile": os.environ.get("HETCRF_FUZZ_PROFILE", "ci"),
               "outcomes": {t: dict(outcomes[t]) for t in targets}}
    (folder / "fuzz_outcomes.json").write_text(json.dumps(summary, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(targets) + 1.6))
    left = np.zeros(len(targets))
    for kind in kinds:
        counts = np.array([outcomes[t].get(kind, 0) for t in targets], dtype=float)
        ax.barh(targets, counts, left=left, label=kind)
        left += counts
    ax.set_xlabel("fuzzed inputs (hypothesis examples)")
    ax.set_title("Fuzzed inputs: valid result or named error (no other exception)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "fuzz_outcomes.png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------

def numeric_text():
    """Text that mostly looks like an edge list: ids, signs, dots, exponents, junk."""
    token = st.one_of(st.integers(-10, 10**20).map(str), st.floats(allow_nan=True).map(str),
                      st.sampled_from(["", "x", "nan", "1e3", "-0", "0x1f", "#", "1,2"]))
    line = st.tuples(st.lists(token, max_size=4), st.sampled_from([" ", "\t", "  "])).map(
        lambda t: t[1].join(t[0]))
    return st.lists(line, max_size=8).map("\n".join)


def raw_bytes():
    return st.one_of(st.binary(max_size=300), numeric_text().map(str.encode),
                     st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")))


def edge_lines(n_src: int, n_dst: int):
    """Well-formed edge lists, some with an id out of range or an empty line."""
    def ids(n: int):
        return st.integers(-1, n).filter(lambda i: i < n or n % 3 == 0)  # mostly in range

    pair = st.tuples(ids(n_src), ids(n_dst)).map(lambda p: f"{p[0]} {p[1]}")
    return st.lists(pair, min_size=1, max_size=6).map(lambda lines: "\n".join(lines).encode())


ARRAY_DTYPES = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                         hnp.floating_dtypes(), hnp.boolean_dtypes(), hnp.complex_number_dtypes(),
                         hnp.unicode_string_dtypes(max_len=3), hnp.byte_string_dtypes(max_len=3))


def arrays(max_dims: int = 2):
    return hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=max_dims, max_side=6))


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# the loaders' readers
# ---------------------------------------------------------------------------------------------

@FUZZ
@given(draw=st.data(), n_src=st.integers(1, 20), n_dst=st.integers(1, 20))
def test_edge_list_reader(tmp_path, draw, n_src, n_dst):
    path = tmp_path / "pa.txt"
    lines = edge_lines(n_src, n_dst)
    path.write_bytes(draw.draw(st.one_of(lines, raw_bytes(), lines)))
    result = outcome("edge list (pa.txt)", lambda: hd._read_edges(path, n_src, n_dst))
    if isinstance(result, torch.Tensor):
        assert result.dtype == torch.int64 and result.dim() == 2 and result.size(0) == 2
        assert int(result[0].max()) < n_src and int(result[1].max()) < n_dst


def label_arrays(n: int):
    """Mostly the right length, small class ids around the valid range, some floats."""
    dtype = st.sampled_from([np.int64, np.int32, np.float64, np.float32, np.int8])
    return dtype.flatmap(lambda d: hnp.arrays(d, st.sampled_from([(n,), (n,), (n + 1,)]),
                                              elements=st.integers(-2, 4)))


@FUZZ
@given(data=st.data(), n=st.integers(0, 6))
def test_label_file_reader(tmp_path, data, n):
    payload = data.draw(st.one_of(
        arrays().map(npy_bytes), raw_bytes(), label_arrays(n).map(npy_bytes),
        label_arrays(n).map(npy_bytes), arrays().map(npy_bytes).flatmap(
            lambda b: st.integers(0, len(b)).map(lambda k: b[:k]))))
    path = tmp_path / "labels.npy"
    path.write_bytes(payload)
    result = outcome("labels (labels.npy)",
                     lambda: hd.validate_labels(hd._read_npy(path), n, where=str(path)))
    if isinstance(result, torch.Tensor):
        assert result.dtype == torch.int64 and result.shape == (n,)
        assert result.numel() == 0 or int(result.min()) >= -1


@FUZZ
@given(payload=st.one_of(arrays().map(npy_bytes), raw_bytes(),
                         label_arrays(4).map(npy_bytes)))
def test_split_file_reader(tmp_path, payload):
    path = tmp_path / "train_20.npy"
    path.write_bytes(payload)
    result = outcome("split ids (train_20.npy)",
                     lambda: hd.as_index(hd._read_npy(path), str(path)))
    if isinstance(result, torch.Tensor):
        assert result.dtype == torch.int64 and result.dim() == 1


def sparse_payload():
    values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                       st.integers(-5, 5).map(float))
    dense = st.integers(1, 5).flatmap(lambda r: st.integers(1, 5).flatmap(
        lambda c: st.lists(values, min_size=r * c, max_size=r * c).map(
            lambda v: np.array(v, dtype=np.float32).reshape(r, c))))

    def npz(m: np.ndarray) -> bytes:
        buf = io.BytesIO()
        sp.save_npz(buf, sp.csr_matrix(m))
        return buf.getvalue()

    return st.one_of(dense.map(npz), raw_bytes(), arrays().map(npy_bytes),
                     dense.map(npz).flatmap(lambda b: st.integers(0, len(b)).map(
                         lambda k: b[:k])))


@FUZZ
@given(payload=sparse_payload(), n=st.integers(1, 5), dense=st.booleans())
def test_feature_file_reader(tmp_path, payload, n, dense):
    path = tmp_path / "p_feat.npz"
    path.write_bytes(payload)
    result = outcome("features (p_feat.npz)", lambda: hd._read_features(path, n, dense))
    if isinstance(result, torch.Tensor):
        assert result.shape[0] == n and result.is_floating_point()


# ---------------------------------------------------------------------------------------------
# meta-path specs
# ---------------------------------------------------------------------------------------------

def toy_graph() -> HeteroData:
    data = HeteroData()
    data["paper"].x = torch.rand(6, 3)
    data["paper"].y = torch.tensor([0, 1, 0, 1, 0, 1])
    data["author"].num_nodes = 3
    data["subject"].num_nodes = 2
    data["paper", "to", "author"].edge_index = torch.tensor([[0, 1, 2, 3, 4, 5],
                                                            [0, 0, 1, 1, 2, 2]])
    data["paper", "to", "subject"].edge_index = torch.tensor([[0, 1, 2, 3], [0, 1, 0, 1]])
    return data


TOY = toy_graph()
NAMES = ["paper", "author", "subject", "P", "A", "S", "p", "a", "-", "", "venue", "PAP"]
PATHS = st.sampled_from(["author", "subject"]).flatmap(lambda t: st.sampled_from([
    ["paper", t, "paper"], ["paper", t, "paper", t, "paper"], "P" + t[0].upper() + "P",
    "p-" + t[0] + "-p", f"paper-{t}-paper"]))
SPEC = st.one_of(
    PATHS, PATHS, PATHS,
    st.text(alphabet="PASpasV-x ", max_size=8),
    st.lists(st.sampled_from(NAMES), max_size=6),
    st.lists(st.sampled_from(NAMES), max_size=6).map(tuple),
    st.lists(st.one_of(st.sampled_from(NAMES), st.integers(), st.none()), max_size=4),
    st.integers(), st.none(), st.floats(), st.binary(max_size=4),
)


@FUZZ
@given(specs=st.one_of(st.lists(PATHS, min_size=1, max_size=2), st.lists(PATHS, max_size=2),
                       st.lists(SPEC, max_size=3),
                       st.dictionaries(st.text(max_size=3), SPEC, max_size=3), SPEC))
def test_metapath_specs(specs):
    def build():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny graph: make_splits warns about class sizes
            return hd.from_heterodata(TOY, "paper", specs, pos_num=2)

    result = outcome("meta-path specs (from_heterodata)", build)
    if isinstance(result, hd.HINDataset):
        for types in result.metapaths.values():
            assert types[0] == types[-1] == "paper" and len(types) >= 3


# ---------------------------------------------------------------------------------------------
# configs and checkpoints
# ---------------------------------------------------------------------------------------------

FIELDS = [f for f in HetCRFConfig.__dataclass_fields__]
DEFAULTS = HetCRFConfig().to_dict()


def near_default(name: str):
    """Values of the field's own kind around its default (so many configs are valid)."""
    default = DEFAULTS[name]
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-1, 12)
    if isinstance(default, float):
        return st.one_of(st.floats(0, 1), st.floats(0, 1).map(repr))
    return st.just(default)


VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True),
              st.sampled_from(["auto", "han", "gcn", "cosine", "1e-3", "no", "", "inf", "3",
                               "all", "cpu", "embedding"]),
              st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=4)


CONFIG_DICTS = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=4), st.integers()),
                    VALUE, max_size=4),
    st.lists(st.sampled_from(FIELDS), max_size=4, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({n: near_default(n) for n in names})))


@FUZZ
@given(values=CONFIG_DICTS)
def test_config_dicts(values):
    result = outcome("config fields (from_dict)", lambda: HetCRFConfig.from_dict(values))
    if isinstance(result, HetCRFConfig):
        for name, value in result.to_dict().items():  # every float finite, ints not bools
            if isinstance(value, float):
                assert math.isfinite(value), name
        assert not isinstance(result.hidden_channels, bool)


YAML_LINE = st.one_of(
    st.tuples(st.sampled_from(FIELDS), VALUE).map(lambda kv: f"{kv[0]}: {json.dumps(kv[1])}"),
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(
        ["1e-3", ".inf", "-.nan", "no", "yes", "~", "[1, 2", "{a: 1}", "!!python/object:os.system",
         "&a 1", "*a", "0x10", "1_000", "'3'", "|\n  x"])).map(lambda kv: f"{kv[0]}: {kv[1]}"),
    st.text(max_size=20),
)


GOOD_LINE = st.sampled_from(FIELDS).flatmap(lambda n: near_default(n).map(
    lambda v: f"{n}: {json.dumps(v)}"))


@FUZZ
@given(lines=st.one_of(st.lists(YAML_LINE, max_size=5), st.lists(GOOD_LINE, max_size=3)),
       junk=st.one_of(st.just(b""), st.binary(max_size=8)))
def test_config_files(tmp_path, lines, junk):
    path = tmp_path / "c.yaml"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + junk)
    outcome("config files (YAML)", lambda: HetCRFConfig.load(path))


@FUZZ
@given(text=st.text(max_size=40))
def test_yaml_values(text):
    outcome("--override values (YAML)", lambda: parse_yaml(text, "--override"))


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory) -> str:
    from hetcrf_lite.synthetic import make_synthetic_hin
    from hetcrf_lite.train import fit

    run = tmp_path_factory.mktemp("ckpt")
    config = HetCRFConfig(hidden_channels=8, epochs=1, cluster_every=1)
    fit(make_synthetic_hin(num_nodes=240, seed=4), config, out_dir=run, progress=False)
    return str(run / "checkpoint.pt")  # a path: hypothesis prints its arguments


# A saved file, damaged: cut at a fraction of its length (junk bytes when nothing is left), then
# up to three bytes flipped at fractional positions.
DAMAGE = dict(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1),
                                                            st.integers(1, 255)), max_size=3),
              junk=st.binary(max_size=64))


def damaged(original: bytes, cut: float, flips: list[tuple[float, int]], junk: bytes) -> bytes:
    raw = bytearray(original[: int(cut * len(original))] or junk)
    for where, byte in flips:
        if raw:
            raw[int(where * (len(raw) - 1))] ^= byte
    return bytes(raw)


@FUZZ
@given(**DAMAGE)
def test_checkpoint_files(tmp_path, checkpoint_file, cut, flips, junk):
    from hetcrf_lite.trainer import read_checkpoint

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(damaged(Path(checkpoint_file).read_bytes(), cut, flips, junk))
    result = outcome("checkpoints (read_checkpoint)", lambda: read_checkpoint(path))
    if isinstance(result, dict):
        assert "model" in result and "config" in result


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory) -> str:
    from hetcrf_lite.synthetic import make_synthetic_hin

    path = tmp_path_factory.mktemp("graph") / "graph.pt"
    torch.save(hd.to_heterodata(make_synthetic_hin(num_nodes=150, rates=(5,))), path)
    return str(path)  # a path: hypothesis prints its arguments


@FUZZ
@given(**DAMAGE)
def test_graph_files(tmp_path, graph_file, cut, flips, junk):
    path = tmp_path / "graph.pt"
    path.write_bytes(damaged(Path(graph_file).read_bytes(), cut, flips, junk))
    result = outcome("graph files (--data)",
                     lambda: hd.load_graph_dataset(path, "paper", ["PAP", "PSP"]))
    if isinstance(result, hd.HINDataset):
        assert result.num_nodes == 150
