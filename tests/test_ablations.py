"""benchmarks/ablations.py: valid variants, deduplication, the JSONL cache, --plan, a smoke run.

Training cases use the synthetic graph for 2 epochs with tiny evaluations (a few seconds each).
"""
from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablations as A  # noqa: E402

EVAL = {"runs": 2, "rates": [20, 40], "clustering_runs": 1}
FIELDS = {f.name for f in fields(HetCRFConfig)}


def tiny_plan(names, registry=None, datasets=("synthetic",), seeds=(0,)):
    epochs = {ds: 2 for ds in datasets}
    return A.make_plan(names, list(datasets), list(seeds), epochs, EVAL, registry=registry)


@pytest.mark.parametrize("dataset", [d for d in A.DATASETS if d != "synthetic"])
def test_every_variant_resolves_to_a_valid_config(dataset):
    info = A.DATASETS[dataset]
    plan = A.make_plan(list(A.ABLATIONS), [dataset], [0], A.DEFAULT_EPOCHS, EVAL)
    assert not [s for s in plan.skipped if "no field" in s], plan.skipped  # all fields exist now
    for name, ab in A.ABLATIONS.items():
        variants = ab.variants(info)
        if name == "feature_init" and not info.featureless:
            assert variants == {} and any(s.startswith("feature_init on") for s in plan.skipped)
            continue
        assert len(variants) >= 2, name
        keys = plan.tables[name][dataset]
        for label, changes in variants.items():
            assert set(changes) <= FIELDS, (name, label)  # a typo would fail here
            config = plan.jobs[keys[label][0]].config
            HetCRFConfig.from_dict(config)  # validates
            assert all(config[k] == v for k, v in changes.items()), (name, label)
            assert config["epochs"] == A.DEFAULT_EPOCHS[dataset]
            assert config["grad_balance_every"] == A.BALANCE_EVERY


def test_cluster_counts_are_true_count_and_off_by_one_and_two():
    labels = list(A.ABLATIONS["num_clusters"].variants(A.DATASETS["dblp"]))  # 4 classes
    assert [lab.split()[0] for lab in labels] == ["S=2", "S=3", "S=4", "S=5", "S=6"]
    assert "true count" in labels[2]
    acm = A.ABLATIONS["num_clusters"].variants(A.DATASETS["acm"])  # 3 classes: S=1 impossible
    assert [v.get("num_clusters") for v in acm.values()] == [2, None, 4, 5]
    plan = A.make_plan(["num_clusters", "channels"], ["acm"], [0], A.DEFAULT_EPOCHS, EVAL)
    assert plan.tables["num_clusters"]["acm"]["S=3 (true count)"] == \
        plan.tables["channels"]["acm"]["both"]  # the shipped None is the class count


def test_loss_grid_drops_the_diagonal_only_where_it_repeats_the_shipped_config():
    acm = A.ABLATIONS["loss_weights"].variants(A.DATASETS["acm"])  # edge channel off
    freebase = A.ABLATIONS["loss_weights"].variants(A.DATASETS["freebase"])  # w_edge 0.1
    assert len(freebase) == 9 and len(acm) == 7
    assert "w_feat=1, w_cl=1" in acm and "w_feat=4, w_cl=4" not in acm


def test_variants_equal_to_the_default_train_once():
    plan = A.make_plan(["channels", "augmentation", "gradient_balance", "depth"], ["acm"], [0, 1],
                       A.DEFAULT_EPOCHS, EVAL)
    t = {name: plan.tables[name]["acm"] for name in plan.tables}
    default = t["channels"]["both"]
    assert t["augmentation"]["meta-path + clustering"] == default
    assert t["depth"]["depth 1"] == default  # second_stage_depth 1 is the shipped value
    assert t["gradient_balance"]["none"] == t["augmentation"]["none"]
    # per seed: default + 2 channels + 2 augmentation + 3 depths; gradient_balance adds nothing
    assert plan.requested == 2 * (3 + 3 + 3 + 4)
    assert len(plan.jobs) == 2 * 8
    assert len(set(default)) == 2  # the two seeds stay apart


def test_optional_field_is_skipped_and_a_typo_raises(monkeypatch):
    registry = {"x": A.Ablation("x", "?", lambda info: {"base": {}, "new": {"not_yet": 1}})}
    monkeypatch.setattr(A, "OPTIONAL_FIELDS", {"not_yet"})
    plan = tiny_plan(["x"], registry)
    assert list(plan.tables["x"]["synthetic"]) == ["base"]
    assert any("not_yet" in s and "skipped" in s for s in plan.skipped)
    monkeypatch.setattr(A, "OPTIONAL_FIELDS", set())
    with pytest.raises(ConfigError, match="not_yet"):
        tiny_plan(["x"], registry)


def test_mean_pairwise_cosine_matches_the_dense_formula():
    x = np.random.default_rng(0).normal(size=(30, 5))
    x[3] = 0.0  # a zero row counts as similarity 0 with everything
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    sim = u @ u.T
    dense = (sim.sum() - np.trace(sim)) / (30 * 29)
    assert A.mean_pairwise_cosine(x) == pytest.approx(dense, abs=1e-12)
    assert A.mean_pairwise_cosine(np.ones((4, 3))) == pytest.approx(1.0)


def test_shared_default_trains_once_and_the_cache_resumes(tmp_path, monkeypatch):
    registry = {"a": A.Ablation("a", "?", lambda info: {"default": {}, "tau": {"tau": 0.3}}),
                "b": A.Ablation("b", "?", lambda info: {"default": {}})}
    plan = tiny_plan(["a", "b"], registry)
    assert plan.requested == 3 and len(plan.jobs) == 2
    cache = tmp_path / "cache.jsonl"
    rows, failed = A.run_jobs(list(plan.jobs.values()), cache, workers=1, log=lambda s: None)
    assert failed == [] and len(cache.read_text().splitlines()) == 2
    summary = A.summarise(plan, rows)
    a_def, b_def = summary["a"]["synthetic"]["default"], summary["b"]["synthetic"]["default"]
    assert a_def["keys"] == b_def["keys"] and a_def["metrics"] == b_def["metrics"]
    assert 0 <= a_def["metrics"]["macro_f1_40"][0] <= 100 and a_def["epochs"] == [2]
    assert rows[a_def["keys"][0]]["balance_log"][0]["epoch"] == 0  # logged at epoch 0
    # an interrupted write leaves half a line: ignored, the rest is reused, nothing retrains
    with open(cache, "a") as fh:
        fh.write('{"key": "cut sh')

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was retrained")

    monkeypatch.setattr(A, "train_and_evaluate", no_training)
    messages = []
    rows2, failed2 = A.run_jobs(list(plan.jobs.values()), cache, workers=1, log=messages.append)
    assert failed2 == [] and rows2.keys() == rows.keys()
    assert "2 in the cache, 0 to train" in messages[0]


def test_plan_prints_the_run_count_and_trains_nothing(tmp_path, capsys):
    cache = tmp_path / "cache.jsonl"
    code = A.main(["--plan", "--datasets", "synthetic", "--seeds", "0", "1", "--epochs", "2",
                   "--only", "channels", "depth", "--eval-runs", "2", "--clustering-runs", "1",
                   "--jobs", "2", "--cache", str(cache)])
    out = capsys.readouterr().out
    assert code == 0 and not cache.exists()
    # per seed: default, generative only, contrastive only, depth 0 / 2 / 3
    assert "distinct training runs: 12 (14 table cells" in out
    assert "estimated wall time with --jobs 2" in out


def test_smoke_run_writes_tables_figures_and_json(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--datasets", "synthetic", "--seeds", "0", "--epochs", "2", "--only",
            "gradient_balance", "depth", "--eval-runs", "2", "--clustering-runs", "1",
            "--jobs", "1", "--cache", str(out / "c.jsonl"), "--json", str(out / "a.json"),
            "--md", str(out / "a.md"), "--figures", str(out / "fig"),
            "--notes", str(tmp_path / "notes.md")]
    (tmp_path / "notes.md").write_text("## Reading the tables\n\nDepth 3 over-smooths.\n")
    assert A.main(argv) == 0
    md = (out / "a.md").read_text()
    assert md.rstrip().endswith("Depth 3 over-smooths.")  # the hand-written notes, copied
    assert "reduced epochs" in md and "Training seeds: [0]" in md
    assert "| synthetic | depth 3 |" in md and "cos (contrastive emb.)" in md
    assert "pos. mass" in md and "| synthetic | none |" in md
    assert (out / "fig" / "ablation_depth.png").stat().st_size > 0
    assert (out / "fig" / "ablation_gradient_balance.png").stat().st_size > 0
    result = json.loads((out / "a.json").read_text())
    assert result["distinct_runs"] == 6  # 3 augmentation states + depth 0 / 2 / 3
    cell = result["ablations"]["gradient_balance"]["synthetic"]["none"]
    assert cell["balance"]["num_pos_mean"][0] == 1.0  # no augmentation: the anchor alone
    aug = result["ablations"]["gradient_balance"]["synthetic"]["meta-path + clustering"]
    assert aug["balance"]["num_pos_mean"][0] > 1.0
    capsys.readouterr()


def test_estimate_counts_plain_epochs_refreshes_and_evaluation():
    cost = {"first_epoch": 5.0, "epoch": 2.0, "eval_seconds": 3.0, "load_seconds": 1.0}
    config = {"epochs": 40, "cluster_every": 10, "use_contrastive": True, "cluster_aug": True}
    assert A.estimate_seconds(config, cost) == 40 * 2 + 4 * 3 + 3  # refreshes at 0, 10, 20, 30
    assert A.estimate_seconds({**config, "cluster_aug": False}, cost) == 40 * 2 + 3 + 3
