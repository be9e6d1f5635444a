"""Figures accept tensors wherever the model leaves them (requiring grad, on any device)."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from hetcrf_lite.plot import (plot_embedding_2d, plot_gradient_balance, plot_loss_curves,
                              plot_semantic_attention, save_figure)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def bar_heights(fig: plt.Figure) -> list[float]:
    return [p.get_height() for p in fig.axes[0].patches]


@pytest.mark.parametrize("device", DEVICES)
def test_semantic_attention_takes_a_tensor_that_needs_grad(device):
    # np.asarray refuses both a tensor that requires grad and a cuda tensor
    beta = torch.tensor([0.25, 0.75], device=device, requires_grad=True)
    fig = plot_semantic_attention(beta, ["PAP", "PSP"])
    assert bar_heights(fig) == pytest.approx([0.25, 0.75])


@pytest.mark.parametrize("device", DEVICES)
def test_semantic_attention_takes_a_list_of_scalar_tensors(device):
    beta = list(torch.tensor([0.4, 0.6], device=device))  # iterating a tensor: 0-d tensors
    assert bar_heights(plot_semantic_attention(beta, ["a", "b"])) == pytest.approx([0.4, 0.6])


@pytest.mark.parametrize("device", DEVICES)
def test_embedding_2d_takes_tensors(device):
    points = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], device=device, requires_grad=True)
    labels = torch.tensor([0, 1, -1], device=device)
    fig = plot_embedding_2d(points, labels, title="t")
    offsets = [c.get_offsets() for c in fig.axes[0].collections]
    grey, coloured = offsets  # unlabelled first, then the labelled nodes
    np.testing.assert_array_equal(np.asarray(grey), [[4.0, 5.0]])
    np.testing.assert_array_equal(np.asarray(coloured), [[0.0, 1.0], [2.0, 3.0]])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["class 0", "class 1"]


@pytest.mark.parametrize("device", DEVICES)
def test_curves_take_scalar_tensors(device):
    t = lambda v: torch.tensor(v, device=device)  # noqa: E731
    history = {"epochs": [{"epoch": 0, "loss": t(2.0), "parts": {"feat": t(1.0)}},
                          {"epoch": 1, "loss": t(1.5), "parts": {"feat": t(0.5)}}]}
    lines = plot_loss_curves(history).axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [[2.0, 1.5], [1.0, 0.5]]
    balance = {"run": [{"pos_mass_mean": t(0.1)}, {"pos_mass_mean": t(0.2)}]}
    (line,) = plot_gradient_balance(balance).axes[0].get_lines()
    assert list(line.get_ydata()) == pytest.approx([0.1, 0.2])


def test_save_figure_writes_under_hetcrf_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("HETCRF_FIGURES", str(tmp_path / "figs"))
    fig = plot_semantic_attention([0.5, 0.5], ["a", "b"])
    path = save_figure(fig, "beta")
    assert path == tmp_path / "figs" / "beta.png"
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_gradient_balance_panels_are_titled_in_words_with_log_scales_over_decades():
    balance = {"one positive": [{"grad_per_pos_mean": 2.0, "pos_mass_mean": 0.004,
                                 "num_pos_mean": 1.0}] * 3,
               "five positives": [{"grad_per_pos_mean": 0.1, "pos_mass_mean": 0.005,
                                   "num_pos_mean": 5.0}] * 3}
    fig = plot_gradient_balance(balance, keys=["grad_per_pos_mean", "pos_mass_mean",
                                               "num_pos_mean"])
    pull, mass, count = fig.axes
    assert pull.get_title() == "pull per positive\n(mean over anchors)"
    assert "pos_mass" not in mass.get_title() and "softmax mass" in mass.get_title()
    assert pull.get_yscale() == "log"  # 2.0 against 0.1: a factor of 20
    assert mass.get_yscale() == "linear"  # 0.004 against 0.005
    assert count.get_yscale() == "log"  # 1 against 5
    assert plot_gradient_balance(balance, keys=["pos_mass_mean"], log=True).axes[0] \
        .get_yscale() == "log"
    # an unknown key keeps its name; values that are not all positive stay linear
    other = plot_gradient_balance({"r": [{"x": -1.0}, {"x": 100.0}]}).axes[0]
    assert other.get_title() == "x" and other.get_yscale() == "linear"
