"""benchmarks/reproduce.py: the MetaPath2Vec baseline (walk relations, determinism, that it
learns), which earlier rows a re-run keeps, and the report's once-per-dataset baselines."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hetcrf_lite.errors import MetaPathError
from hetcrf_lite.eval import ClassificationResult, ClusteringResult, Results
from hetcrf_lite.synthetic import make_synthetic_hin

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import reproduce  # noqa: E402


@pytest.fixture(scope="module")
def hin():
    # 300 papers, 3 planted classes; PAP and PSP; rate 20 only (no small-class warnings)
    return make_synthetic_hin(num_nodes=300, num_classes=3, rates=(20,), seed=0)


def centroid_accuracy(emb: np.ndarray, y: np.ndarray) -> float:
    """Cosine nearest-class-centroid accuracy, centroids from even nodes, scored on odd ones."""
    train = np.arange(len(y)) % 2 == 0
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cent = np.stack([emb[train & (y == c)].mean(0) for c in range(int(y.max()) + 1)])
    return float(((emb[~train] @ cent.T).argmax(1) == y[~train]).mean())


def test_metapath_cycle_follows_relation_directions(hin):
    edge_index_dict, cycle = reproduce.metapath_cycle(hin)
    assert [(s, d) for s, _, d in cycle] == [("paper", "author"), ("author", "paper"),
                                            ("paper", "subject"), ("subject", "paper")]
    for src, rel, dst in cycle:  # row 0 indexes the source type, row 1 the destination
        ei = edge_index_dict[(src, rel, dst)]
        assert int(ei[0].max()) < hin.data[src].num_nodes
        assert int(ei[1].max()) < hin.data[dst].num_nodes
    _, one = reproduce.metapath_cycle(hin, ["PSP"])
    assert [(s, d) for s, _, d in one] == [("paper", "subject"), ("subject", "paper")]


def test_metapath_cycle_rejects_unknown_metapath(hin):
    with pytest.raises(MetaPathError, match="PXP"):
        reproduce.metapath_cycle(hin, ["PXP"])


def test_metapath2vec_deterministic_and_leaves_global_rng(hin):
    torch.manual_seed(123)
    a = reproduce.metapath2vec_embeddings(hin, seed=0, epochs=1, batch_size=64)
    after = torch.rand(3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    assert torch.equal(after, expected)  # the caller's RNG stream is untouched
    b = reproduce.metapath2vec_embeddings(hin, seed=0, epochs=1, batch_size=64)
    c = reproduce.metapath2vec_embeddings(hin, seed=1, epochs=1, batch_size=64)
    assert a.shape == (300, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_metapath2vec_learns_classes_where_pyg_init_does_not(hin):
    y = hin.labels.numpy()
    ours = reproduce.metapath2vec_embeddings(hin, seed=0, epochs=3, batch_size=32)
    pyg_init = reproduce.metapath2vec_embeddings(hin, seed=0, epochs=3, batch_size=32,
                                                 init_std=1.0)
    acc, acc_pyg = centroid_accuracy(ours, y), centroid_accuracy(pyg_init, y)
    assert acc > 0.7  # chance is 1/3
    assert acc > acc_pyg + 0.15  # N(0, 1) init (PyG's) is still mostly noise after 3 epochs


def fake_results(macro: float) -> dict:
    runs = [macro - 1.0, macro + 1.0]
    clf = {rate: ClassificationResult(macro_f1=runs, micro_f1=runs, auc=runs, macro_step=[9, 9],
                                      micro_step=[9, 9])
           for rate in (20, 40, 60)}
    return Results(classification=clf, clustering=ClusteringResult(nmi=[50.0], ari=[40.0]),
                   meta={"dataset": "acm"}).to_dict()


ENV = {"platform": "test", "cpu_count": 2, "torch": "x", "torch_threads": 1,
       "torch_geometric": "y", "scikit_learn": "z"}


def hetcrf_row(ds: str, seed: int, macro: float) -> dict:
    return {"dataset": ds, "kind": "hetcrf", "seed": seed, "env": ENV, "epochs": 2,
            "stopped": "reached 2 epochs", "seconds_per_epoch": 1.0, "train_seconds": 2.0,
            "train_cpu_seconds": 3.0,
            "peak_rss_mb": 100.0, "hetcrf": fake_results(macro)}


def baseline_row(ds: str, lr_macro: float, m2v_macro: float) -> dict:
    return {"dataset": ds, "kind": "baselines", "seed": 0, "env": ENV,
            "lr_raw": fake_results(lr_macro), "metapath2vec": fake_results(m2v_macro),
            "propagated": fake_results(lr_macro + 5.0),
            "metapath2vec_seconds": 30.0, "metapath2vec_cpu_seconds": 25.0,
            "metapath2vec_epochs": 12, "peak_rss_mb": 300.0}


def test_report_has_one_baseline_row_per_dataset(tmp_path):
    rows = [baseline_row("acm", 70.0, 60.0)]
    rows += [hetcrf_row("acm", s, 88.0 + s) for s in (2, 0, 1)]
    rows += [hetcrf_row("dblp", 0, 90.0)]
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    reproduce.write_report(rows, md, js, "python benchmarks/reproduce.py --seeds 0 1 2")
    text = md.read_text()
    acm = next(line for line in text.splitlines() if line.startswith("| acm | 0,1,2 |"))
    # HetCRF averaged over the three seeds; the baselines shown as run, once
    assert "89.00±1.00 / 89.00±1.00 / 89.00±1.00" in acm
    assert "70.00±1.00 / 70.00±1.00 / 70.00±1.00" in acm
    assert "60.00±1.00 / 60.00±1.00 / 60.00±1.00" in acm
    assert "75.00±1.00 / 75.00±1.00 / 75.00±1.00" in acm  # the training-free baseline
    dblp = next(line for line in text.splitlines() if line.startswith("| dblp | 0 |"))
    assert dblp.count("not run") == 3
    # 4 HetCRF rows x 3 CPU s + the baselines' 25 CPU s
    assert "Training CPU time of every row together: 0.6 min" in text
    assert "once per dataset" in text and "metapath2vec.npy" in text
    assert "| acm | 0 | 12 | 30 | 25 | 300 |" in text  # the baselines' cost line
    assert "| acm | Micro-F1 | " in text and "| acm | AUC | " in text
    # Macro-F1 table, targets, Micro-F1 and AUC, clustering, cost x2
    assert text.count("| acm | ") == 1 + 3 + 2 + 1 + 3 + 1


def test_report_says_which_datasets_lack_seeds_and_copies_the_notes(tmp_path):
    rows = [hetcrf_row("acm", s, 88.0) for s in (0, 1, 2)] + [hetcrf_row("dblp", 0, 90.0)]
    rows[0]["command"] = "python benchmarks/reproduce.py --datasets acm"
    notes = tmp_path / "notes.md"
    notes.write_text("## Notes\n\nFreebase: tried a wider grid.\n")
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    reproduce.write_report(rows, md, js, "python benchmarks/reproduce.py", notes=notes)
    text = md.read_text()
    assert "Fewer training seeds than the plan's three" in text
    assert "dblp (1)" in text and "acm (" not in text
    assert "rows of earlier runs kept" in text  # two distinct commands made the rows
    for r in rows:  # all rows from one earlier run, the page rewritten by another command
        r["command"] = "python benchmarks/reproduce.py --fresh --jobs 2"
    reproduce.write_report(rows, md, js, "python benchmarks/reproduce.py --datasets acm")
    header = md.read_text().splitlines()[2]
    assert header.startswith("Generated by `python benchmarks/reproduce.py --datasets acm`")
    assert header.endswith(", every row from one earlier "
                           "`python benchmarks/reproduce.py --fresh --jobs 2`.")
    assert text.rstrip().endswith("Freebase: tried a wider grid.")
    reproduce.write_report(rows, md, js, "x", notes=tmp_path / "absent.md")
    assert "wider grid" not in md.read_text()


def test_default_seed_plan_is_three_seeds_everywhere():
    assert set(reproduce.SEEDS_BY_DATASET) == set(reproduce.REFERENCE)
    assert all(tuple(seeds) == (0, 1, 2) for seeds in reproduce.SEEDS_BY_DATASET.values())


def test_kept_rows_keeps_only_rows_whose_key_matches_the_plan():
    legacy = hetcrf_row("acm", 1, 80.0)
    legacy["lr_raw"] = legacy["metapath2vec"] = fake_results(30.0)
    del legacy["kind"]  # written before the baselines had their own row
    same = {**hetcrf_row("acm", 0, 88.0), "key": "k0"}
    stale = {**hetcrf_row("acm", 2, 88.0), "key": "old"}
    old = [{**baseline_row("acm", 70.0, 60.0), "key": "b"}, same, legacy, stale,
           baseline_row("dblp", 70.0, 80.0), hetcrf_row("dblp", 0, 90.0)]
    planned = {("hetcrf", "acm", 0): "k0", ("hetcrf", "acm", 2): "new",
               ("baselines", "acm", 0): "b2"}
    kept = reproduce.kept_rows(old, planned)
    # acm seed 0 kept (same key), seed 2 and the acm baselines dropped (key changed), the rest
    # is outside the plan
    assert [(r["dataset"], reproduce.kind(r), r["seed"]) for r in kept] == [
        ("acm", "hetcrf", 0), ("acm", "hetcrf", 1), ("dblp", "baselines", 0),
        ("dblp", "hetcrf", 0)]
    assert "lr_raw" not in kept[1] and "metapath2vec" not in kept[1]
    assert "lr_raw" in kept[2]  # a baseline row keeps its results


def test_row_key_changes_with_the_config_and_not_otherwise():
    a = reproduce.row_key("hetcrf", "acm", 0, {"config": reproduce.hetcrf_config("acm", 0, None)
                                                .to_dict()})
    b = reproduce.row_key("hetcrf", "acm", 0, {"config": reproduce.hetcrf_config("acm", 0, None)
                                                .to_dict()})
    c = reproduce.row_key("hetcrf", "acm", 0, {"config": reproduce.hetcrf_config("acm", 0, 7)
                                                .to_dict()})
    d = reproduce.row_key("hetcrf", "acm", 1, {"config": reproduce.hetcrf_config("acm", 1, None)
                                                .to_dict()})
    assert a == b and len({a, c, d}) == 3


def test_committed_rows_are_the_ones_a_plain_run_would_keep():
    """Every row of docs/results.json carries the key a plain `make reproduce` plans for it, so
    a re-run from a fresh clone keeps it. It fails when a shipped config, the package version or
    a new config field (not listed in ADDED_FIELDS) changes what the rows were made with; then
    re-run those rows (`--datasets`) or list the field."""
    rows = json.loads((BENCH.parent / "docs" / "results.json").read_text())
    made_with = {r["env"]["torch"] for r in rows}
    if made_with != {torch.__version__}:  # the key holds the torch version: all rows re-run
        pytest.skip(f"the rows were made with torch {sorted(made_with)}, this is "
                    f"{torch.__version__}")
    stale = [(reproduce.kind(r), r["dataset"], r["seed"]) for r in rows
             if r.get("key") != reproduce.planned_key(reproduce.kind(r), r["dataset"], r["seed"])]
    # one row per training seed and one for the baselines, per dataset: 16
    planned_rows = sum(len(seeds) + 1 for seeds in reproduce.SEEDS_BY_DATASET.values())
    assert len(rows) == planned_rows and not stale, stale


def test_help_runs():
    out = subprocess.run([sys.executable, str(BENCH / "reproduce.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--seeds" in out and "--m2v-epochs" in out
