"""Figures the notebooks and the CLI share: loss curves, attention, gradient balance, UMAP.

Every function returns a matplotlib ``Figure`` and never calls ``plt.show()``, so notebooks,
scripts and tests use the same code. :func:`save_figure` writes under ``figures/`` (or the folder
named by ``HETCRF_FIGURES``, which ``make test`` points at a temporary folder). Array arguments
may be numpy arrays, sequences or torch tensors on any device (a model's outputs live on its
device, e.g. cuda): tensors are detached and copied to the CPU at the boundary.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

if os.environ.get("MPLBACKEND") is None and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # headless machines (CI, servers): no GUI backend needed
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import torch

from .errors import DataError
from .files import atomic_write_bytes


def _numpy(values: Any, dtype: Any = None) -> np.ndarray:
    """``values`` as a numpy array; a tensor (any device, requiring grad or not) is detached and
    copied to the CPU first, since ``np.asarray`` cannot read a cuda tensor."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    elif isinstance(values, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in values):
        values = [float(v) if isinstance(v, torch.Tensor) else v for v in values]  # 0-d tensors
    return np.asarray(values, dtype=dtype)


def figures_dir() -> Path:
    """``$HETCRF_FIGURES`` if set, else ``figures/`` of the current project."""
    env = os.environ.get("HETCRF_FIGURES")
    if env:
        path = Path(env)
    else:
        here = Path.cwd()
        root = next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file()), here)
        path = root / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: plt.Figure, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` and return the path.

    Introduced in notebook 01."""
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def write_png(fig: plt.Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (:func:`~hetcrf_lite.files.atomic_write_bytes`)
    and close it; returns the path."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), lambda fh: fh.write(png.getvalue()))
    return Path(path)


def plot_loss_curves(history: dict[str, Any]) -> plt.Figure:
    """Total (weighted) loss and each unweighted loss part per epoch, from a trainer history.

    Introduced in notebook 03."""
    epochs = [r["epoch"] for r in history["epochs"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    # The total is drawn dashed and on top: with one loss part (a channel trained alone) the
    # two curves coincide, and a solid total would hide under the part or hide it.
    ax.plot(epochs, _numpy([r["loss"] for r in history["epochs"]], float), color="black", lw=1.5,
            ls="--", zorder=3, label="total (weighted sum)")
    for name in sorted({k for r in history["epochs"] for k in r["parts"]}):
        ax.plot(epochs, _numpy([r["parts"].get(name, np.nan) for r in history["epochs"]], float),
                lw=3, alpha=0.75, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("HetCRF training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_semantic_attention(beta: Sequence[float], names: Sequence[str],
                            title: str = "semantic attention") -> plt.Figure:
    """Bars of the meta-path weights beta (which meta-paths the model trusts); ``beta`` may be a
    tensor on any device.

    Introduced in notebook 02."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3))
    ax.bar(list(names), _numpy(beta, float), color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("beta")
    ax.set_title(title)
    fig.tight_layout()
    return fig


# Plain words for the summary keys of ``contrastive.gradient_balance`` (title, y-axis label).
# The gradients are those of the one-way InfoNCE loss with respect to the cosine similarities
# s_ij (unitless: loss per unit of cosine); "pull" is on the positives, "push" on the negatives.
GRADIENT_BALANCE_LABELS: dict[str, tuple[str, str]] = {
    "num_pos": ("positives per anchor", "nodes"),
    "pos_mass": ("softmax mass on the positives", "share of 1"),
    "grad_per_pos": ("pull per positive", "|dL/ds| per positive"),
    "neg_grad_mean": ("push per negative", "|dL/ds| per negative"),
    "neg_grad_max": ("largest push on one negative", "|dL/ds|"),
    "top1pct_neg_share": ("share of the push on the hardest 1% of negatives", "share of 1"),
    "anchor_grad_pos_norm": ("gradient norm on the anchor from its positives", "norm"),
    "anchor_grad_neg_norm": ("gradient norm on the anchor from its negatives", "norm"),
    "pos_grad_sum": ("total pull on the positives", "sum of |dL/ds|"),
    "neg_grad_sum": ("total push on the negatives", "sum of |dL/ds|"),
}

#: A panel gets a log y-axis when its values are positive and max / min reaches this factor.
LOG_SCALE_SPAN = 5.0


def gradient_balance_label(key: str) -> tuple[str, str]:
    """``(title, y label)`` in plain words for a ``gradient_balance`` summary key such as
    ``pos_mass_mean`` (mean over anchors) or ``grad_per_pos_median``; an unknown key is kept."""
    for stat, words in (("_mean", "mean over anchors"), ("_median", "median over anchors")):
        if key.endswith(stat) and key[: -len(stat)] in GRADIENT_BALANCE_LABELS:
            title, unit = GRADIENT_BALANCE_LABELS[key[: -len(stat)]]
            return f"{title}\n({words})", unit
    return GRADIENT_BALANCE_LABELS.get(key, (key, ""))


class _PlainLogFormatter(mticker.LogFormatter):
    """Log-axis tick labels as plain numbers (0.002, 0.3, 6) instead of 2e-03 or 6 x 10^0."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def _plain_log_axis(ax: plt.Axes) -> None:
    """Put ``ax``'s y axis on a log scale with plain-number labels, minor ticks labelled where
    the range is short (under about two decades), so a panel never shows one bare label."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False,
                                                    minor_thresholds=(2, 0.5)))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _spans_decades(values: np.ndarray, span: float = LOG_SCALE_SPAN) -> bool:
    """Whether ``values`` are all positive and finite and their max / min reaches ``span``."""
    values = values[np.isfinite(values)]
    return values.size > 1 and bool((values > 0).all()) and values.max() / values.min() >= span


def plot_gradient_balance(summaries: dict[str, list[dict[str, float]]],
                          keys: Sequence[str] | None = None,
                          log: bool | None = None) -> plt.Figure:
    """Gradient-balance quantities per epoch, one line per run (e.g. with/without augmentation).

    ``summaries`` maps a run label to its list of per-epoch summary dicts (as logged in the
    trainer history under ``gradient_balance``). Panels are titled in plain words
    (:data:`GRADIENT_BALANCE_LABELS`) with their unit on the y axis. ``log=None`` (default)
    draws a panel on a log scale when its values are positive and span a factor of
    :data:`LOG_SCALE_SPAN` or more (the pull per positive with one positive against five, say);
    ``True`` / ``False`` forces it where the values allow.

    Introduced in notebook 06.
    """
    first = next(iter(summaries.values()))
    keys = list(keys or first[0].keys())
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = []
        for label, rows in summaries.items():
            y = _numpy([r[key] for r in rows], float)
            values.append(y)
            ax.plot(y, label=label)
        values = np.concatenate(values) if values else np.array([])
        positive = values.size > 0 and bool((values[np.isfinite(values)] > 0).all())
        if (log is None and _spans_decades(values)) or (log and positive):
            _plain_log_axis(ax)
        title, unit = gradient_balance_label(key)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(unit + (" (log scale)" if ax.get_yscale() == "log" else ""), fontsize=8)
        ax.set_xlabel("logged epoch")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def umap_projection(emb: np.ndarray | torch.Tensor, seed: int = 0, n_neighbors: int = 15,
                    min_dist: float = 0.1) -> np.ndarray:
    """2-D UMAP of ``emb`` (cosine metric, seeded; single-threaded so the seed holds); ``emb``
    may be a tensor on any device.

    Introduced in notebook 08."""
    import umap

    emb = _numpy(emb, np.float32)
    if not np.isfinite(emb).all():
        raise DataError("embeddings contain NaN or Inf; UMAP needs finite values")
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine",
                        random_state=seed, n_jobs=1)
    threads = torch.get_num_threads()
    points = reducer.fit_transform(emb)
    torch.set_num_threads(threads)  # numba's start-up resets the OpenMP threads torch uses
    return points


def plot_embedding_2d(points: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                      title: str = "", ax: plt.Axes | None = None) -> plt.Figure:
    """Scatter of 2-D points coloured by class (unlabelled, -1, in light grey); arrays or
    tensors on any device.

    Introduced in notebook 08."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(5, 4.5))
    ax = ax or fig.add_subplot()
    points, labels = _numpy(points), _numpy(labels)
    unl = labels < 0
    if unl.any():
        ax.scatter(points[unl, 0], points[unl, 1], s=3, c="lightgrey", label="unlabelled")
    sc = ax.scatter(points[~unl, 0], points[~unl, 1], s=4, c=labels[~unl], cmap="tab10",
                    vmin=0, vmax=9)
    handles, _ = sc.legend_elements()
    classes = np.unique(labels[~unl])
    ax.legend(handles[: len(classes)], [f"class {c}" for c in classes], fontsize=7,
              markerscale=0.8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return fig
