"""Run records (hetcrf_lite.runs): a trained run folder is found again only for the same config,
the same data and the same package version; anything else, or a damaged record, is passed over
with a reason and no traceback."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hetcrf_lite
from hetcrf_lite.config import HetCRFConfig, default_config
from hetcrf_lite.data import to_heterodata
from hetcrf_lite.errors import TrainingError
from hetcrf_lite.runs import (HASH_EXCLUDED, RUN_RECORD, SECONDS_PER_EPOCH, config_hash,
                              dataset_checksum, describe_run, expected_time, find_run,
                              read_record, run_mismatch)
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import config_dataset, fit, load_run, train_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "graph.pt"
    torch.save(to_heterodata(make_synthetic_hin(num_nodes=390)), path)  # 130 per class
    return path


def tiny_config(graph: Path, **changes) -> HetCRFConfig:
    base = dict(dataset="tiny", graph=str(graph), target="paper", metapaths=["PAP", "PSP"],
                hidden_channels=16, epochs=3, cluster_every=2, grad_balance_every=1, lr=0.01)
    return HetCRFConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, graph_file) -> tuple[Path, HetCRFConfig]:
    """``(runs root, config)``: one tiny run trained with ``train_run`` into ROOT/tiny."""
    root = tmp_path_factory.mktemp("runs")
    config = tiny_config(graph_file)
    train_run(config, root / "tiny", progress=False, eval_runs=1)
    return root, config


@pytest.fixture
def dataset(trained):
    return config_dataset(trained[1])  # loaded afresh: the checksum is of the data, not the object


def copy_run(trained, tmp_path) -> Path:
    run = tmp_path / "runs" / "copy"
    shutil.copytree(trained[0] / "tiny", run)
    return run


# --------------------------------------------------------------------------------------------
# found when everything matches
# --------------------------------------------------------------------------------------------

def test_a_trained_run_is_found_and_described(trained, dataset):
    root, config = trained
    record = read_record(root / "tiny")
    assert record["config_hash"] == config_hash(config)
    assert record["dataset_checksum"] == dataset_checksum(dataset)
    assert record["hetcrf_lite"] == hetcrf_lite.__version__
    assert find_run(config, dataset, roots=[root]) == root / "tiny"
    text = describe_run(root / "tiny")
    assert record["config_hash"][:12] in text and "hetcrf-lite train" in text
    model, _, _ = load_run(root / "tiny")
    assert model is not None


def test_the_checksum_can_be_passed_instead_of_the_dataset(trained, dataset):
    root, config = trained
    assert find_run(config, dataset_checksum(dataset), roots=[root]) == root / "tiny"


def test_fields_that_do_not_change_the_model_may_differ(trained, dataset, tmp_path, graph_file):
    root, config = trained
    moved = tmp_path / "moved.pt"
    shutil.copy(graph_file, moved)  # the same graph elsewhere: the path is not in the hash
    other = config.replace(grad_balance_every=0, channel_grad_every=3, eval_lr=0.05,
                           graph=str(moved))
    assert find_run(other, dataset, roots=[root]) == root / "tiny"


def test_excluded_logging_fields_leave_training_bit_for_bit_the_same():
    tiny = make_synthetic_hin(num_nodes=240, num_classes=3, rates=(20,), seed=4)
    base = dict(dataset="synthetic", hidden_channels=16, epochs=4, cluster_every=2, lr=0.01)
    quiet, _ = fit(tiny, HetCRFConfig(**base, grad_balance_every=0, channel_grad_every=0),
                   progress=False)
    logged, history = fit(tiny, HetCRFConfig(**base, grad_balance_every=1, channel_grad_every=1),
                          progress=False)
    assert "gradient_balance" in history["epochs"][0]
    assert torch.equal(quiet.embed(), logged.embed())
    assert set(HASH_EXCLUDED) == {"grad_balance_every", "channel_grad_every", "eval_lr", "graph"}


# --------------------------------------------------------------------------------------------
# not found: another config, other data, another version
# --------------------------------------------------------------------------------------------

def test_a_changed_config_field_is_not_found_and_named(trained, dataset):
    root, config = trained
    reasons: dict[Path, str] = {}
    assert find_run(config.replace(lr=0.02), dataset, roots=[root], reasons=reasons) is None
    assert "lr (run 0.01, wanted 0.02)" in reasons[root / "tiny"]
    assert find_run(config.replace(seed=1), dataset, roots=[root]) is None
    assert find_run(config.replace(epochs=4), dataset, roots=[root]) is None


def test_a_changed_dataset_is_not_found(trained, tmp_path):
    root, config = trained
    other = tmp_path / "other.pt"
    torch.save(to_heterodata(make_synthetic_hin(num_nodes=390, seed=1)), other)
    changed = config.replace(graph=str(other))
    reasons: dict[Path, str] = {}
    assert find_run(changed, config_dataset(changed), roots=[root], reasons=reasons) is None
    assert "dataset checksum differs" in reasons[root / "tiny"]


def test_one_changed_feature_changes_the_checksum(dataset):
    before = dataset_checksum(dataset)
    x = dataset.data[dataset.target].x
    dense = x.to_dense() if x.is_sparse else x.clone()
    dense[0, 0] += 1
    dataset.data[dataset.target].x = dense
    assert dataset_checksum(dataset) != before


def test_a_changed_version_is_not_found(trained, dataset, monkeypatch):
    root, config = trained
    monkeypatch.setattr(hetcrf_lite, "__version__", "9.9.9")
    reasons: dict[Path, str] = {}
    assert find_run(config, dataset, roots=[root], reasons=reasons) is None
    version = read_record(root / "tiny")["hetcrf_lite"]
    assert reasons[root / "tiny"] == f"trained with hetcrf-lite {version}, this is 9.9.9"


def test_required_files_and_replaced_embeddings(trained, dataset, tmp_path):
    _, config = trained
    run = copy_run(trained, tmp_path)
    assert run_mismatch(run, config, dataset, require=("checkpoint.pt", "history.json")) is None
    (run / "checkpoint.pt").unlink()
    assert "no checkpoint.pt" in run_mismatch(run, config, dataset, require=("checkpoint.pt",))
    np.save(run / "embeddings.npy", np.zeros((390, 32), dtype=np.float32))
    assert "embeddings.npy changed" in run_mismatch(run, config, dataset)


# --------------------------------------------------------------------------------------------
# damaged or missing records: passed over with a reason, never a traceback
# --------------------------------------------------------------------------------------------

DAMAGED = {
    "not JSON": b"{not json",
    "truncated": None,  # the real record cut in half
    "binary junk": bytes(range(256)),
    "a list": b"[1, 2]",
    "a field missing": None,  # the real record without config_hash
    "a field of the wrong type": None,  # dataset_checksum a number
    "empty": b"",
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_record_is_not_found_and_does_not_raise(trained, dataset, tmp_path, case):
    _, config = trained
    run = copy_run(trained, tmp_path)
    good = (run / RUN_RECORD).read_bytes()
    record = json.loads(good)
    content = DAMAGED[case]
    if case == "truncated":
        content = good[: len(good) // 2]
    elif case == "a field missing":
        content = json.dumps({k: v for k, v in record.items() if k != "config_hash"}).encode()
    elif case == "a field of the wrong type":
        content = json.dumps({**record, "dataset_checksum": 12}).encode()
    (run / RUN_RECORD).write_bytes(content)
    reasons: dict[Path, str] = {}
    assert find_run(config, dataset, roots=[tmp_path / "runs"], reasons=reasons) is None
    assert "damaged" in reasons[run], reasons
    assert "damaged" in describe_run(run)


def test_a_folder_without_record_or_with_a_damaged_config_is_passed_over(trained, dataset,
                                                                         tmp_path):
    _, config = trained
    run = copy_run(trained, tmp_path)
    (run / "config.yaml").write_text("lr: [oops\n")
    assert "config.yaml is unreadable" in run_mismatch(run, config, dataset)
    (run / RUN_RECORD).unlink()
    reasons: dict[Path, str] = {}
    assert find_run(config, dataset, roots=[tmp_path / "runs", tmp_path / "nowhere"],
                    reasons=reasons) is None
    assert reasons[run].startswith("no run.json")
    assert reasons[tmp_path / "nowhere"] == "no such folder"


def test_retraining_into_a_folder_drops_its_record_until_complete(trained, tmp_path):
    _, config = trained
    run = copy_run(trained, tmp_path)
    with pytest.raises(TrainingError):  # an impossible lr: training stops before the end
        train_run(config.replace(lr=1e30), run, progress=False, eval_runs=1)
    assert not (run / RUN_RECORD).exists()


# --------------------------------------------------------------------------------------------
# hashes and the time table
# --------------------------------------------------------------------------------------------

def test_config_hash_is_stable_through_yaml_and_plain_dicts(tmp_path):
    config = default_config("acm", seed=2)
    config.save(tmp_path / "config.yaml")
    assert config_hash(HetCRFConfig.load(tmp_path / "config.yaml")) == config_hash(config)
    assert config_hash({**config.to_dict(), "lr": 3e-3}) == config_hash(config)
    assert config_hash({**config.to_dict(), "patience": 119}) != config_hash(config)


def test_the_reproduce_worker_writes_a_record_find_run_accepts(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reproduce

    import hetcrf_lite.data

    small = make_synthetic_hin(num_nodes=300, rates=(20,), seed=0)
    monkeypatch.setattr(hetcrf_lite.data, "load_dataset", lambda name, **kw: small)
    reproduce.worker("synthetic", 0, tmp_path, epochs=2, eval_runs=1)
    run = tmp_path / "synthetic-seed0"
    config = default_config("synthetic", seed=0, epochs=2)  # grad_balance_every: not in the hash
    assert find_run(config, small, roots=[tmp_path]) == run
    assert read_record(run)["written_by"] == "benchmarks/reproduce.py"
    reasons: dict[Path, str] = {}
    assert find_run(config, small, roots=[tmp_path], require=("checkpoint.pt",),
                    reasons=reasons) is None and "no checkpoint.pt" in reasons[run]


def test_seconds_per_epoch_agree_with_the_measured_results():
    rows = json.loads((ROOT / "docs" / "results.json").read_text())
    for name in ("acm", "dblp", "aminer", "freebase"):
        measured = [r["train_cpu_seconds"] / r["epochs"] for r in rows
                    if r["dataset"] == name and r.get("kind", "hetcrf") == "hetcrf"]
        assert measured, name
        assert SECONDS_PER_EPOCH[name] == pytest.approx(float(np.median(measured)), rel=0.1)
    assert "about 6 min (120 epochs" in expected_time(default_config("acm"))
    assert expected_time(default_config("acm"), short=True) == "about 6 min"
    assert "no measured time" in expected_time(HetCRFConfig(dataset="mine", graph="g.pt",
                                                                target="paper", metapaths=["PAP"]))


# --------------------------------------------------------------------------------------------
# the notebooks reuse runs in class, never under nbval
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["07_hetcrf_end_to_end", "08_umap_embeddings"])
def test_notebooks_reuse_runs_except_under_pytest_or_make_notebooks(name):
    import types

    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))

    def reuse(env: dict) -> bool:  # the committed parameters cell, run with this environment
        scope = {"os": types.SimpleNamespace(environ=env)}
        exec("".join(cell["source"]), scope)
        return scope["REUSE_RUNS"]

    assert reuse({}) is True
    assert reuse({"PYTEST_CURRENT_TEST": "nbval"}) is False  # nbval's kernel inherits it
    assert reuse({"HETCRF_REUSE_RUNS": "0"}) is False
    assert "HETCRF_REUSE_RUNS=0" in (ROOT / "Makefile").read_text()
