"""Issue 13, "Trust the run": one test (or parametrised case) per reproduction of the issue.

Each would fail on the code before the issue (8ad7a45) and passes after it; docs/reliability.md
lists them by promise. Names new in the issue are imported inside the tests, so on the old code
each case fails on its own behaviour rather than all at once on an import.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch_geometric.data import HeteroData

from hetcrf_lite.cli import main
from hetcrf_lite.config import HetCRFConfig, default_config
from hetcrf_lite.data import from_heterodata, load_dataset, required_files
from hetcrf_lite.errors import (
    ConfigError,
    DataError,
    HetCRFError,
    MetaPathError,
    TrainingError,
)
from hetcrf_lite.model import HetCRF
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import fit
from hetcrf_lite.trainer import Trainer
from hetcrf_lite.utils import seed_everything

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_hin(num_nodes=240, num_classes=3, seed=4)


def cfg(**changes) -> HetCRFConfig:
    base = dict(dataset="synthetic", hidden_channels=16, heads=1, epochs=8, cluster_every=3,
                grad_balance_every=2, lr=0.01, feat_drop=0.1, attn_drop=0.1)
    base.update(changes)
    return HetCRFConfig(**base)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``main(args)`` as the console script runs it: argparse's exits become their code."""
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(err: str) -> None:
    assert err.startswith("hetcrf-lite: error:") or "error:" in err.splitlines()[-1], err
    assert "Traceback" not in err, err


def dead_pid() -> int:
    """The id of a process that has exited (for orphaned temporary files)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


# =============================================================================================
# 1. No code runs from a checkpoint
# =============================================================================================

class _Payload:
    """Unpickling this calls ``os.system(command)``: what a crafted checkpoint.pt holds."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def crafted_run(tmp_path) -> tuple[Path, Path]:
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    torch.save({"model": _Payload(f"touch {marker}")}, run / "checkpoint.pt")
    return run, marker


@pytest.mark.parametrize("via", ["api", "cli"])
def test_crafted_checkpoint_runs_no_code(tiny, tmp_path, capsys, via):
    run, marker = crafted_run(tmp_path)
    if via == "api":
        with pytest.raises(TrainingError, match="not loaded: unpickling them could run code"):
            fit(tiny, cfg(), out_dir=run, progress=False, resume=True)
    else:
        code, _, err = run_cli(["train", "--dataset", "synthetic", "--resume", "--out",
                                str(run), "--quiet"], capsys)
        assert code == 2 and "migrate" in err
        assert_one_line_error(err)
    assert not marker.exists()


def test_pickled_npy_and_yaml_tags_run_no_code(heco_root, tmp_path, capsys):
    # Held before the issue too; here so that docs/reliability.md can point at a test.
    marker = tmp_path / "pwned"
    folder = acm_copy(heco_root, tmp_path)
    (folder / "labels.npy").unlink()
    np.save(folder / "labels.npy", np.array([_Payload(f"touch {marker}")], dtype=object),
            allow_pickle=True)
    with pytest.raises(DataError, match="labels.npy"):
        load_dataset("acm", root=tmp_path, download=False, verify=False)
    code, _, err = run_cli(["evaluate", str(folder / "labels.npy"), "--dataset", "synthetic"],
                           capsys)
    assert code == 2 and "Traceback" not in err
    config = tmp_path / "c.yaml"
    config.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        HetCRFConfig.load(config)
    assert not marker.exists()


def test_checkpoints_load_with_weights_only(tiny, tmp_path):
    # 6 epochs, cluster refreshes at 0 and 3: the checkpoint carries the K-means state too
    fit(tiny, cfg(epochs=6), out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 5 and state["config"]["epochs"] == 6


def test_old_pickled_checkpoint_is_refused_with_a_migration_that_works(tiny, tmp_path):
    from hetcrf_lite.trainer import migrate_checkpoint

    fit(tiny, cfg(epochs=4), out_dir=tmp_path, progress=False)
    new = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    # the format written before issue 13: pickled NumPy centroids, a tuple for the best state
    old = {k: new[k] for k in ("model", "optimizer", "scheduler", "config", "epoch",
                               "rebaseline")}
    old.update(history=new["history"], rng=new["rng"]["torch"],
               best=tuple(new["best"][k] for k in ("loss", "epoch", "bad_epochs", "state")),
               extra={"generator": new["extra"]["generator"],
                      "augmenter": {**new["extra"]["augmenter"],
                                    "centroids": np.ones((3, 32), dtype=np.float32)}})
    torch.save(old, tmp_path / "checkpoint.pt")
    with pytest.raises(TrainingError, match=r"migrate_checkpoint\("):
        fit(tiny, cfg(epochs=6), out_dir=tmp_path, progress=False, resume=True)
    migrate_checkpoint(tmp_path / "checkpoint.pt")
    _, history = fit(tiny, cfg(epochs=4), out_dir=tmp_path, progress=False, resume=True,
                     overrides={"epochs": 6})
    assert [r["epoch"] for r in history["epochs"]] == list(range(6))


def test_damaged_checkpoint_is_a_named_error(tiny, tmp_path):
    fit(tiny, cfg(epochs=2), out_dir=tmp_path, progress=False)
    raw = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TrainingError, match="damaged or truncated"):
        fit(tiny, cfg(epochs=4), out_dir=tmp_path, progress=False, resume=True)


# =============================================================================================
# 2. Ctrl-C then resume reproduces the uninterrupted run
# =============================================================================================

@pytest.fixture(scope="module")
def uninterrupted(tiny):
    torch.set_num_threads(1)
    model, history = fit(tiny, cfg(), progress=False)
    return model.embed(), history


def _sigint_in_training_step(epoch: int):
    """Patch HetCRF.training_step to send SIGINT to this process once, at ``epoch``, after the
    forward pass (its masks and drops drawn) and before the optimizer step (the
    first-epoch-before-step case when ``epoch`` is 0)."""
    original = HetCRF.training_step
    fired = []

    def training_step(self, e):
        out = original(self, e)
        if e == epoch and not fired:
            fired.append(e)
            os.kill(os.getpid(), signal.SIGINT)
        return out

    return training_step


@pytest.fixture
def terminal_sigint():
    """SIGINT as a terminal's Ctrl-C delivers it: ``KeyboardInterrupt``. A job started in the
    background without job control (``cmd &`` in a script, ``nohup``) inherits SIGINT ignored,
    and Python then leaves it ignored, so these tests would see no interrupt at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("where, epoch", [("after_step", 5), ("before_step", 0),
                                          ("before_step", 5)])
@pytest.mark.usefixtures("terminal_sigint")
def test_ctrl_c_then_resume_equals_the_uninterrupted_run(tiny, tmp_path, monkeypatch,
                                                        uninterrupted, where, epoch):
    expected, straight = uninterrupted
    if where == "after_step":  # the reproduction: the hook runs after the step
        hook = lambda m, e, r: e == epoch and os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
        _, first = fit(tiny, cfg(), out_dir=tmp_path, progress=False, on_epoch_end=hook)
    else:
        with monkeypatch.context() as patch:
            patch.setattr(HetCRF, "training_step", _sigint_in_training_step(epoch))
            _, first = fit(tiny, cfg(), out_dir=tmp_path, progress=False)
    assert first["stopped"] == f"interrupted at epoch {epoch}"
    model, history = fit(tiny, cfg(), out_dir=tmp_path, progress=False, resume=True)
    assert [r["epoch"] for r in history["epochs"]] == list(range(8))  # no epoch twice, none lost
    assert [r["loss"] for r in history["epochs"]] == [r["loss"] for r in straight["epochs"]]
    assert torch.equal(model.embed(), expected)


@pytest.mark.usefixtures("terminal_sigint")
def test_second_ctrl_c_inside_a_step_writes_no_checkpoint(tiny, tmp_path, monkeypatch):
    # Ctrl-C during the optimizer step is held until the epoch ends; a second one stops at
    # once, and a half-updated state is never saved.
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # held: the step goes on
        os.kill(os.getpid(), signal.SIGINT)  # the second one stops now
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny, cfg(), out_dir=tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


# =============================================================================================
# 3. No NaN "good" state
# =============================================================================================

def _inf_lr_trainer(tiny, tmp_path, **config) -> Trainer:
    seed_everything(0)
    config = cfg(**config)
    trainer = Trainer(HetCRF(tiny, config), config, out_dir=tmp_path, progress=False,
                      checkpoint_every=1)
    for group in trainer.optimizer.param_groups:
        group["lr"] = float("inf")  # what `lr: .inf` did before configs refused it
    return trainer


@pytest.mark.parametrize("epochs", [8, 1])
def test_a_step_that_blows_up_the_parameters_is_an_error_and_never_saved(tiny, tmp_path,
                                                                        epochs):
    trainer = _inf_lr_trainer(tiny, tmp_path, epochs=epochs)
    with pytest.raises(TrainingError, match="parameters are NaN/Inf after its step at epoch 0"):
        trainer.fit()
    assert not (tmp_path / "checkpoint.pt").exists()
    assert trainer._best_state is None or all(  # no NaN best state either
        bool(torch.isfinite(v).all()) for v in trainer._best_state.values()
        if v.is_floating_point())


def test_inf_lr_in_the_cli_writes_no_embeddings(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: synthetic\nepochs: 1\nlr: .inf\n")
    code, _, err = run_cli(["train", "--config", str(path), "--out", str(tmp_path / "run"),
                            "--quiet", "--eval-runs", "1"], capsys)
    assert code == 2 and "'lr'" in err
    assert_one_line_error(err)
    assert not (tmp_path / "run" / "embeddings.npy").exists()


def test_blow_up_before_a_cluster_refresh_is_a_training_error(tiny):
    def poison(model, epoch, record):  # parameters go NaN after epoch 2; epoch 3 reclusters
        if epoch == 2:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))

    with pytest.raises(TrainingError, match="before the cluster refresh of epoch 3"):
        fit(tiny, cfg(cluster_every=3), progress=False, on_epoch_end=poison)


class ExplodingModel(HetCRF):
    def training_step(self, epoch):
        loss, parts = super().training_step(epoch)
        return (loss * float("nan") if epoch == 3 else loss), parts


@pytest.mark.parametrize("every, written", [(10, False), (2, True)])
def test_nan_message_names_only_a_checkpoint_that_exists(tiny, tmp_path, every, written):
    seed_everything(0)
    trainer = Trainer(ExplodingModel(tiny, cfg()), cfg(), out_dir=tmp_path, progress=False,
                      checkpoint_every=every)
    with pytest.raises(TrainingError, match="loss became nan at epoch 3") as err:
        trainer.fit()
    path = str(tmp_path / "checkpoint.pt")
    assert (path in str(err.value)) is written and Path(path).exists() is written
    if not written:
        assert "no checkpoint was written" in str(err.value)


# =============================================================================================
# 4. Same seed, same bits at the default thread count
# =============================================================================================

def test_same_seed_same_embeddings_with_several_threads():
    # Large enough that torch's CPU index_put_ (the backward of x[index] in the schema view)
    # runs on several threads; before the fix two runs differed after one epoch.
    ds = make_synthetic_hin(num_nodes=600, seed=1)
    config = default_config("synthetic", epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, os.cpu_count() or 2))
    try:
        runs = [fit(ds, config, progress=False)[0].embed() for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(runs[0], runs[1])


# =============================================================================================
# 5. Resume keeps its config; safe fields change explicitly
# =============================================================================================

@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A 2-epoch run of the shipped synthetic config (checkpoint at epoch 1)."""
    run = tmp_path_factory.mktemp("resume") / "run"
    fit(make_synthetic_hin(), default_config("synthetic", epochs=2), out_dir=run,
        progress=False)
    default_config("synthetic", epochs=2).save(run / "config.yaml")
    return run


@pytest.mark.parametrize("args, field", [
    (["--dataset", "synthetic", "--seed", "3"], "seed"),  # a different seed was accepted
    (["--override", "hidden_channels=32"], "hidden_channels"),  # not on the safe list
    (["--override", "seed=3"], "seed"),
])
def test_resume_refuses_a_changed_config_and_leaves_config_yaml(synthetic_run, capsys, args,
                                                               field):
    before = (synthetic_run / "config.yaml").read_text()
    code, _, err = run_cli(["train", "--resume", "--out", str(synthetic_run), "--quiet",
                            *args], capsys)
    assert code == 2 and field in err
    assert_one_line_error(err)
    assert (synthetic_run / "config.yaml").read_text() == before


def test_resume_with_a_changed_config_through_the_api_names_the_fields(synthetic_run):
    config = default_config("synthetic", epochs=2, lr=0.001, tau=0.3)
    with pytest.raises(ConfigError, match=r"tau \(checkpoint 0.5, given 0.3\), lr \(checkpoint "
                       r"0.02, given 0.001\)"):
        fit(make_synthetic_hin(), config, out_dir=synthetic_run, progress=False, resume=True)


def test_override_lr_reaches_the_optimizer_and_the_history(tiny, tmp_path):
    fit(tiny, cfg(epochs=4), out_dir=tmp_path, progress=False)
    _, history = fit(tiny, cfg(epochs=4), out_dir=tmp_path, progress=False, resume=True,
                     overrides={"epochs": 6, "lr": 0.001})
    assert [r["lr"] for r in history["epochs"]] == [0.01] * 4 + [0.001] * 2
    assert history["resumes"][-1] == {"epoch": 4, "changed": {"lr": [0.01, 0.001],
                                                              "epochs": [4, 6]}}
    assert history["config"]["lr"] == 0.001


def test_cli_override_rewrites_config_yaml_after_the_checks(tmp_path, capsys):
    run = tmp_path / "run"
    fit(make_synthetic_hin(), default_config("synthetic", epochs=1), out_dir=run,
        progress=False)
    code, out, err = run_cli(["train", "--resume", "--out", str(run), "--override", "lr=1e-3",
                              "--epochs", "2", "--quiet", "--eval-runs", "1"], capsys)
    assert code == 0, err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["lr"] == 0.001 and saved["epochs"] == 2
    history = json.loads((run / "history.json").read_text())
    assert history["epochs"][-1]["lr"] == 0.001 and history["resumes"][-1]["epoch"] == 1


# =============================================================================================
# 6. Config errors, not tracebacks
# =============================================================================================

@pytest.mark.parametrize("text, field", [
    (b"lr: abc\n", "lr"),
    (b"lr: [1\n", "not valid YAML"),
    (b"lr: 0.1\nepochs: 3\n\xff\xfe\n", "not UTF-8"),
    (b"seed: -1\n", "seed"),
    (b"lr: .inf\n", "lr"),
    (b"tau: .inf\n", "tau"),
    (b"weight_decay: .inf\n", "weight_decay"),
    (b"w_cl: .inf\n", "w_cl"),
    (b"tau: .nan\n", "tau"),
    (b'use_contrastive: "no"\n', "use_contrastive"),
    (b"hidden_channels: true\n", "hidden_channels"),
    (b"epochs: 2.5\n", "epochs"),
    (b"lr: 0.1\nlr: 0.2\n", "given twice"),
    (b"- lr\n", "mapping"),
])
def test_bad_config_files_are_config_errors_and_exit_2(tmp_path, capsys, text, field):
    path = tmp_path / "c.yaml"
    path.write_bytes(text if text.startswith(b"-") else b"dataset: synthetic\n" + text)
    with pytest.raises(ConfigError, match=field):
        HetCRFConfig.load(path)
    code, out, err = run_cli(["train", "--config", str(path), "--quiet"], capsys)
    assert code == 2 and field in err and out == ""
    assert_one_line_error(err)


@pytest.mark.parametrize("text, field, value", [
    ("lr: 1e-3", "lr", 0.001),  # PyYAML reads 1e-3 as a string
    ("lr: '0.01'", "lr", 0.01),
    ("epochs: 3.0", "epochs", 3),
    ("eval_lr: 5e-2", "eval_lr", 0.05),
])
def test_numbers_yaml_reads_as_strings_are_accepted(tmp_path, text, field, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"dataset: synthetic\n{text}\n")
    loaded = getattr(HetCRFConfig.load(path), field)
    assert loaded == value and type(loaded) is type(value)


@pytest.mark.parametrize("flag, value", [("--threads", "-1"), ("--threads", "0"),
                                         ("--seed", "-1"), ("--eval-runs", "0")])
def test_bad_cli_numbers_exit_2(tmp_path, capsys, flag, value):
    code, _, err = run_cli(["train", "--dataset", "synthetic", flag, value, "--out",
                            str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2 and "Traceback" not in err


# =============================================================================================
# 7-8. Clear errors from the API
# =============================================================================================

def toy_graph() -> HeteroData:
    data = HeteroData()
    data["paper"].x = torch.rand(6, 3)
    data["paper"].y = torch.tensor([0, 1, 0, 1, 0, 1])
    data["author"].num_nodes = 3
    data["paper", "to", "author"].edge_index = torch.tensor([[0, 1, 2, 3, 4, 5],
                                                            [0, 0, 1, 1, 2, 2]])
    return data


def acm_copy(heco_root: Path, dest: Path) -> Path:
    """``dest/acm`` with every file ACM needs linked from the shared copy (read, never written)."""
    folder = dest / "acm"
    folder.mkdir(parents=True)
    for f in required_files("acm"):
        (folder / f).symlink_to(heco_root / "acm" / f)
    return folder


@pytest.mark.parametrize("fname, content, match", [
    ("labels.npy", np.array(["a"] * 4019), r"labels.npy holds <U1 values"),
    ("test_20.npy", np.array(["x", "y"]), r"test_20.npy cannot be read as node ids"),
    ("train_20.npy", np.array([0.9, 1.0]), r"train_20.npy holds node ids that are not whole"),
])
def test_string_or_fractional_files_name_the_file(heco_root, tmp_path, fname, content, match):
    folder = acm_copy(heco_root, tmp_path)
    (folder / fname).unlink()
    np.save(folder / fname, content)
    with pytest.raises(DataError, match=match):
        load_dataset("acm", root=tmp_path, download=False, verify=False)


@pytest.mark.parametrize("case", ["string_labels", "metapath_int", "metapath_string_list",
                                  "float_split_ids"])
def test_from_heterodata_bad_arguments_are_named_errors(case):
    data, kwargs, error = toy_graph(), {"metapaths": ["PAP"]}, DataError
    if case == "string_labels":
        kwargs["labels"] = np.array(list("abcabc"))
    elif case == "metapath_int":
        kwargs["metapaths"], error = [123], MetaPathError
    elif case == "metapath_string_list":
        kwargs["metapaths"], error = "PAP", MetaPathError
    else:  # ids 0.9 and 2.5 were rounded down to 0 and 2
        kwargs["splits"] = {20: {"train": torch.tensor([0.9, 2.5]), "val": torch.tensor([1]),
                                 "test": torch.tensor([3])}}
    with pytest.raises(error):
        from_heterodata(data, "paper", **kwargs)


def test_whole_float_split_ids_are_kept():
    splits = {20: {"train": torch.tensor([0.0, 2.0]), "val": torch.tensor([1.0]),
                   "test": torch.tensor([3])}}
    ds = from_heterodata(toy_graph(), "paper", ["PAP"], splits=splits)
    assert ds.splits[20]["train"].tolist() == [0, 2]


def test_synthetic_nan_signal_is_refused():
    with pytest.raises(ConfigError, match="feature_signal"):  # dense mode returned NaN features
        make_synthetic_hin(num_nodes=300, feature_mode="dense", feature_signal=float("nan"))


def test_fit_checks_its_dataset(tiny):
    ds = make_synthetic_hin(num_nodes=240, num_classes=3, seed=4)
    ds.data[ds.target].x = ds.x.to_dense().clone()
    ds.data[ds.target].x[7, 0] = float("nan")
    with pytest.raises(DataError, match=r"x holds 1 NaN/Inf value\(s\), first in row 7"):
        fit(ds, cfg(epochs=1), progress=False)


def test_unlabelled_graph_error_says_what_to_set():
    data = toy_graph()
    del data["paper"].y
    ds = from_heterodata(data, "paper", ["PAP"], pos_num=2)
    with pytest.raises(ConfigError, match=r"no labels.*num_clusters: auto"):
        fit(ds, cfg(epochs=1, hidden_channels=8), progress=False)
    _, history = fit(ds, cfg(epochs=1, hidden_channels=8, cluster_aug=False), progress=False)
    assert len(history["epochs"]) == 1


@pytest.mark.parametrize("kind", ["symlink_loop", "file"])
def test_unusable_data_root_is_a_data_error(tmp_path, kind):
    root = tmp_path / "root"
    if kind == "symlink_loop":
        root.symlink_to(tmp_path / "root")
    else:
        root.write_text("not a folder")
    with pytest.raises(DataError, match="data folder"):
        load_dataset("acm", root=root)


# =============================================================================================
# 9. Output-folder faults: one line, exit 2, nothing half-written
# =============================================================================================

def _full_disk(monkeypatch):
    """Every atomic write goes to /dev/full (ENOSPC), as on a full disk."""
    import hetcrf_lite.files as files

    real = files.temp_file

    def temp_file(path, suffix=".tmp"):
        fd, tmp = real(path, suffix)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return fd, tmp

    monkeypatch.setattr(files, "temp_file", temp_file)


def _read_only(monkeypatch):
    """No file can be created (EACCES), as in a read-only folder; root ignores chmod."""
    import hetcrf_lite.files as files

    def mkstemp(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("fault, message", [
    ("out_is_a_file", "a file stands where a folder is needed"),
    ("out_under_a_file", "a file stands where a folder is needed"),
    ("read_only", "no permission to write there"),
    ("disk_full", "the disk is full"),
])
def test_output_folder_faults_exit_2(tmp_path, capsys, monkeypatch, fault, message):
    out = tmp_path / "run"
    if fault == "out_is_a_file":
        out.write_text("x")
    elif fault == "out_under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    elif fault == "read_only":
        _read_only(monkeypatch)
    else:
        _full_disk(monkeypatch)
    code, _, err = run_cli(["train", "--dataset", "synthetic", "--epochs", "1", "--out",
                            str(out), "--quiet", "--eval-runs", "1"], capsys)
    assert code == 2 and message in err
    assert_one_line_error(err)
    if out.is_dir():
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_evaluate_json_into_a_folder_fails_before_evaluating(tmp_path, capsys, monkeypatch):
    import hetcrf_lite.eval as ev

    np.save(tmp_path / "emb.npy", np.zeros((1500, 4), dtype=np.float32))
    monkeypatch.setattr(ev, "evaluate_embeddings",
                        lambda *a, **k: pytest.fail("evaluated before checking --json"))
    code, _, err = run_cli(["evaluate", str(tmp_path / "emb.npy"), "--dataset", "synthetic",
                            "--json", str(tmp_path)], capsys)
    assert code == 2 and "it is a folder" in err
    assert_one_line_error(err)


def test_evaluate_of_an_npz_archive_exits_2(tmp_path, capsys):
    np.savez(tmp_path / "emb.npz", emb=np.zeros((1500, 4), dtype=np.float32))
    code, _, err = run_cli(["evaluate", str(tmp_path / "emb.npz"), "--dataset", "synthetic",
                            "--runs", "1"], capsys)
    assert code == 2 and ".npz archive" in err
    assert_one_line_error(err)


# =============================================================================================
# 10. Housekeeping: orphans, file modes, download deadline
# =============================================================================================

def test_temporary_file_of_a_killed_writer_is_removed_by_the_next_run(tiny, tmp_path):
    # A writer killed with SIGKILL in the middle of an atomic write leaves its temporary file;
    # the next training in that folder removes it (and never a live writer's).
    script = ("import sys, time\nfrom hetcrf_lite.files import atomic_write_bytes\n"
              "def write(fh):\n    fh.write(b'x'); fh.flush(); print('ready', flush=True)\n"
              "    time.sleep(60)\n"
              f"atomic_write_bytes({str(tmp_path / 'embeddings.npy')!r}, write)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait()
    orphans = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(orphans) == 1
    live = tmp_path / f".history.json-{os.getpid()}-abcdefgh.tmp"  # this process: alive
    live.write_text("{}")
    fit(tiny, cfg(epochs=1), out_dir=tmp_path, progress=False)
    assert not orphans[0].exists() and live.exists()


def test_orphan_download_part_is_removed_by_the_next_load(heco_root, tmp_path):
    folder = acm_copy(heco_root, tmp_path)
    orphan = folder / f".pa.txt.{dead_pid()}.k2j4h6g8.part"
    orphan.write_bytes(b"partial")
    load_dataset("acm", root=tmp_path, download=False)
    assert not orphan.exists()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_run_files_and_downloads_are_0644(tiny, tmp_path, umask_022):
    from hetcrf_lite.data import download_file

    fit(tiny, cfg(epochs=1), out_dir=tmp_path / "run", progress=False)
    cfg().save(tmp_path / "run" / "config.yaml")
    src = tmp_path / "src.txt"
    src.write_text("0 1\n")
    download_file(src.as_uri(), tmp_path / "got.txt")
    files = [tmp_path / "run" / n for n in ("checkpoint.pt", "history.json", "config.yaml")]
    for path in files + [tmp_path / "got.txt"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.fixture
def trickle_server():
    """An HTTP server that sends 200 bytes, one every 20 ms (4 s in all)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.02)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/pa.txt"
    server.shutdown()
    server.server_close()


def test_download_has_an_overall_deadline(trickle_server, tmp_path):
    from hetcrf_lite.data import download_file

    start = time.monotonic()
    with pytest.raises(TimeoutError, match="download deadline"):
        download_file(trickle_server, tmp_path / "pa.txt", timeout=5.0, deadline=0.5)
    assert time.monotonic() - start < 2.0
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part


# =============================================================================================
# docs/reliability.md names real tests
# =============================================================================================

def test_reliability_doc_names_existing_tests():
    import ast
    import re

    text = (ROOT / "docs" / "reliability.md").read_text()
    ids = set(re.findall(r"(tests/test_\w+\.py)::(\w+)", text))
    assert len(ids) >= 20
    defined: dict[str, set[str]] = {}
    for path, name in sorted(ids):
        if path not in defined:
            tree = ast.parse((ROOT / path).read_text())
            defined[path] = {n.name for n in ast.walk(tree)
                             if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
        assert name in defined[path], f"docs/reliability.md names {path}::{name}, not a test"
