"""Trainer: early stopping, NaN guard, checkpoints, resume, Ctrl-C, history."""
import json

import pytest
import torch

from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.errors import TrainingError
from hetcrf_lite.model import HetCRF
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import fit
from hetcrf_lite.trainer import Trainer
from hetcrf_lite.utils import resolve_device, seed_everything


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_hin(num_nodes=240, num_classes=3, seed=4)


def cfg(**changes) -> HetCRFConfig:
    base = dict(dataset="synthetic", hidden_channels=16, heads=1, epochs=6, cluster_every=3,
                grad_balance_every=2, lr=0.01, feat_drop=0.1, attn_drop=0.1)
    base.update(changes)
    return HetCRFConfig(**base)


def test_history_and_run_files(tiny, tmp_path):
    _, history = fit(tiny, cfg(), out_dir=tmp_path, progress=False)
    assert len(history["epochs"]) == 6 and history["stopped"] == "reached 6 epochs"
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["config"]["epochs"] == 6 and saved["env"]["torch"] == torch.__version__
    assert all(r["seconds"] > 0 for r in saved["epochs"])
    assert "gradient_balance" in saved["epochs"][0] and "gradient_balance" not in saved["epochs"][1]
    assert saved["cluster_refreshes"][0]["epoch"] == 0
    assert (tmp_path / "checkpoint.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_early_stopping_on_training_loss(tiny):
    # lr so small the loss barely moves, and dropout noise makes it wander: patience 1 stops it
    _, history = fit(tiny, cfg(epochs=50, patience=1, lr=1e-7), progress=False)
    assert len(history["epochs"]) < 50 and history["stopped"].startswith("early stop")
    refreshes = [r["epoch"] for r in history["cluster_refreshes"] if r["epoch"] > 0]
    since = max(refreshes, default=0)  # losses are compared within one positive set only
    losses = [r["loss"] for r in history["epochs"] if r["epoch"] >= since]
    assert history["best_loss"] == min(losses)


class _StepModel(torch.nn.Module):
    """Loss = w^2 + offset; the offset jumps when the 'positives' change at epoch ``jump``."""

    def __init__(self, jump: int, losses_before: float, losses_after: float,
                 report_change: bool = True):
        super().__init__()
        self.report_change = report_change
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.jump, self.before, self.after = jump, losses_before, losses_after
        self.offset = losses_before

    def on_epoch_start(self, epoch):
        if epoch == self.jump:
            self.offset = self.after
            return self.report_change
        return epoch == 0  # the first refresh is not a change of objective

    def training_step(self, epoch):
        return self.w ** 2 + self.offset, {}


def test_early_stopping_rebaselines_when_positives_change():
    # The objective jumps up by 5 at epoch 3 while the model keeps improving: patience must not
    # count the jump as 'no improvement', and the restored state must come from after it.
    model = _StepModel(jump=3, losses_before=0.0, losses_after=5.0)
    config = cfg(epochs=12, patience=2, lr=0.05, grad_balance_every=0)
    history = Trainer(model, config, progress=False).fit()
    assert history["stopped"] == "reached 12 epochs"
    assert history["best_epoch"] == 11 and history["best_loss"] > 5.0
    # Without the re-baseline the jump would look like 2 bad epochs and stop at epoch 4.
    plain = _StepModel(jump=3, losses_before=0.0, losses_after=5.0, report_change=False)
    stopped = Trainer(plain, config, progress=False).fit()
    assert stopped["stopped"].startswith("early stop at epoch 4")


def test_resume_continues_to_the_same_result(tiny, tmp_path):
    straight, _ = fit(tiny, cfg(epochs=6), out_dir=tmp_path / "a", progress=False)
    seed_everything(0)
    model = HetCRF(tiny, cfg(epochs=6))
    first = Trainer(model, cfg(epochs=6), out_dir=tmp_path / "b", progress=False,
                    checkpoint_every=3)
    first.config = cfg(epochs=3)  # stop after epoch 2, checkpoint written
    first.fit()
    resumed = Trainer(HetCRF(tiny, cfg(epochs=6)), cfg(epochs=6), out_dir=tmp_path / "b",
                      progress=False)
    assert resumed.load_checkpoint() == 3
    resumed.start_epoch = 3
    history = resumed.fit()
    assert [r["epoch"] for r in history["epochs"]] == list(range(6))
    torch.testing.assert_close(resumed.model.embed(), straight.embed(), rtol=1e-5, atol=1e-6)


class ExplodingModel(HetCRF):
    def training_step(self, epoch):
        loss, parts = super().training_step(epoch)
        return (loss * float("nan") if epoch == 3 else loss), parts


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path):
    seed_everything(0)
    trainer = Trainer(ExplodingModel(tiny, cfg()), cfg(), out_dir=tmp_path, progress=False,
                      checkpoint_every=2)
    with pytest.raises(TrainingError, match="loss became nan at epoch 3"):
        trainer.fit()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


class InterruptedModel(HetCRF):
    def training_step(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return super().training_step(epoch)


def test_ctrl_c_saves_and_returns(tiny, tmp_path):
    seed_everything(0)
    trainer = Trainer(InterruptedModel(tiny, cfg()), cfg(), out_dir=tmp_path, progress=False)
    history = trainer.fit()
    assert history["stopped"] == "interrupted at epoch 2"
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert (tmp_path / "history.json").is_file()


def test_resume_without_checkpoint_is_a_clear_error(tiny, tmp_path):
    trainer = Trainer(HetCRF(tiny, cfg()), cfg(), out_dir=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="no checkpoint"):
        trainer.fit(resume=True)


def test_device_auto_is_cpu_without_gpu_and_cuda_with_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(TrainingError, match="no CUDA"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


def test_cosine_schedule_anneals_the_learning_rate(tiny):
    _, history = fit(tiny, cfg(lr_schedule="cosine", epochs=4), progress=False)
    lrs = [r["lr"] for r in history["epochs"]]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-9 < lrs[0] < 0.01
    _, flat = fit(tiny, cfg(epochs=4), progress=False)
    assert {r["lr"] for r in flat["epochs"]} == {0.01}


@pytest.mark.parametrize("changes", [
    {},
    # the benchmark configs sample the schema view's neighbours (HeCo's per-type counts) from
    # the model's own generator, which the contrastive embedding a probe asks for also draws on
    {"schema_sample": {"author": 2, "subject": 1}},
])
def test_on_epoch_end_probes_without_changing_training(tiny, changes):
    # The hook sees the model and every epoch's record; probing the embeddings there (as
    # tune.py's --curve-every does), even with random draws, leaves the training unchanged.
    _, plain = fit(tiny, cfg(epochs=5, **changes), progress=False)
    seen = []

    def probe(model, epoch, record):
        torch.rand(1000)  # a hook that draws random numbers: the trainer forks the RNG
        seen.append((epoch, record["loss"], model.embed().shape[0]))

    _, probed = fit(tiny, cfg(epochs=5, **changes), progress=False, on_epoch_end=probe)
    assert [e for e, _, _ in seen] == [0, 1, 2, 3, 4]
    assert all(n == tiny.num_nodes for _, _, n in seen)
    assert [l for _, l, _ in seen] == [r["loss"] for r in probed["epochs"]]
    assert [r["loss"] for r in probed["epochs"]] == [r["loss"] for r in plain["epochs"]]


def test_a_hook_that_returns_true_ends_training_after_that_epoch(tiny):
    # hetcrf-lite tune cuts a training past its validation peak this way; the epochs run are
    # those of the full run, and the model ends with its lowest-loss parameters, as at an
    # early stop (so a run of that many epochs returns the same model)
    _, full = fit(tiny, cfg(epochs=6), progress=False)
    model, cut = fit(tiny, cfg(epochs=6), progress=False,
                     on_epoch_end=lambda m, epoch, r: epoch == 2)
    assert [r["loss"] for r in cut["epochs"]] == [r["loss"] for r in full["epochs"][:3]]
    assert "on_epoch_end" in cut["stopped"] and "epoch 2" in cut["stopped"]
    short, _ = fit(tiny, cfg(epochs=3), progress=False)
    assert torch.equal(model.embed(), short.embed())
    _, none = fit(tiny, cfg(epochs=4), progress=False, on_epoch_end=lambda *_: None)
    assert len(none["epochs"]) == 4  # None (a hook without a return) never stops
