"""The field's evaluation protocol for frozen node embeddings (HeCo / HGMAE / HetCRF).

Node classification: for each label rate, a logistic-regression layer (Xavier-uniform weights,
zero bias, no weight decay) is trained with Adam on the frozen embeddings for ``iters`` full-batch
steps, ``runs`` times with different seeds. After every step the layer is scored on the
validation and test sets; each run reports

* Macro-F1 on test at the first step with the best validation Macro-F1,
* Micro-F1 on test at the first step with the best validation Micro-F1,
* one-vs-rest AUC (from softmax probabilities) on test at that Micro-F1 step,

and the table gives mean and standard deviation (``np.std``, ddof 0) over runs, in percent, as
HeCo's ``evaluate`` does. HeCo feeds the embeddings to the probe as they are (no normalisation);
``normalize=True`` L2-normalises the rows first.

Two implementations share one definition of the protocol:

* :func:`evaluate_classification_loop` is the plain reference: one ``torch.nn.Linear`` per run and
  scikit-learn's ``f1_score`` after every step;
* :func:`evaluate_classification` trains all runs as one batched model (weights
  ``[runs, D, C]``) and computes every step's F1 scores at once from class counts; it picks the
  same steps and matches the reference to 1e-6 in float64 (a test checks it).

Run ``r`` is initialised from ``torch.Generator().manual_seed(seed + r)`` in both, so runs are
reproducible one by one. Node clustering: :func:`evaluate_clustering` (K-means, NMI, ARI).
:class:`Results` gathers both and saves to JSON.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    f1_score,
    normalized_mutual_info_score,
    roc_auc_score,
)

from .errors import ConfigError, DataError
from .files import save_json

if TYPE_CHECKING:
    from .data import HINDataset

__all__ = [
    "ClassificationResult", "ClusteringResult", "Results", "evaluate_classification",
    "evaluate_classification_loop", "evaluate_clustering", "evaluate_embeddings",
]

# Two steps whose validation scores differ by less than this count as tied, and the earlier one
# wins. F1 values that are mathematically equal can differ in the last bit depending on how they
# were summed (sklearn vs a batched formula); without a tolerance "first best" would depend on
# that rounding. Distinct F1 values on <= 10^6 nodes differ by far more than 1e-12.
_TIE_TOL = 1e-12


# --------------------------------------------------------------------------- results
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


@dataclass
class ClassificationResult:
    """Per-run scores of the classification protocol at one label rate, in percent.

    Attributes:
        macro_f1: test Macro-F1 of each run at its selected step.
        micro_f1: test Micro-F1 of each run at its selected step.
        auc: test one-vs-rest AUC of each run at the Micro-F1 step (NaN if the test set lacks a
            class, where AUC is undefined).
        macro_step: the step (0-based) selected by validation Macro-F1 in each run.
        micro_step: the step selected by validation Micro-F1 in each run.
    """

    macro_f1: list[float]
    micro_f1: list[float]
    auc: list[float]
    macro_step: list[int]
    micro_step: list[int]

    def summary(self) -> dict[str, tuple[float, float]]:
        """``{"macro_f1": (mean, std), "micro_f1": ..., "auc": ...}`` over runs."""
        return {k: _mean_std(getattr(self, k)) for k in ("macro_f1", "micro_f1", "auc")}


@dataclass
class ClusteringResult:
    """K-means scores of each run, in percent: ``nmi`` and ``ari`` lists."""

    nmi: list[float]
    ari: list[float]

    def summary(self) -> dict[str, tuple[float, float]]:
        """``{"nmi": (mean, std), "ari": (mean, std)}`` over runs."""
        return {"nmi": _mean_std(self.nmi), "ari": _mean_std(self.ari)}


@dataclass
class Results:
    """Evaluation of one embedding: classification per label rate, clustering, settings.

    Attributes:
        classification: ``{rate: ClassificationResult}``.
        clustering: a :class:`ClusteringResult` or :obj:`None`.
        meta: the settings that produced the numbers (dataset, lr, runs, iters, seed, ...).
    """

    classification: dict[int, ClassificationResult] = field(default_factory=dict)
    clustering: ClusteringResult | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        title = f"Results ({self.meta['dataset']})" if "dataset" in self.meta else "Results"
        lines = [title]
        if self.classification:
            lines += [f"{'rate':>6} | {'Macro-F1':>13} | {'Micro-F1':>13} | {'AUC':>13}", "-" * 55]
            for rate in sorted(self.classification):
                s = self.classification[rate].summary()
                keys = ("macro_f1", "micro_f1", "auc")
                cells = [f"{s[k][0]:6.2f} ± {s[k][1]:4.2f}" for k in keys]
                lines.append(f"{rate:>6} | " + " | ".join(f"{c:>13}" for c in cells))
        if self.clustering is not None:
            s = self.clustering.summary()
            lines.append(f"clustering ({len(self.clustering.nmi)} runs): "
                         f"NMI {s['nmi'][0]:.2f} ± {s['nmi'][1]:.2f}, "
                         f"ARI {s['ari'][0]:.2f} ± {s['ari'][1]:.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: summaries (mean/std) and per-run values."""
        def record(res: ClassificationResult | ClusteringResult) -> dict[str, Any]:
            return {"summary": {k: {"mean": m, "std": s} for k, (m, s) in res.summary().items()},
                    "runs": {k: list(v) for k, v in vars(res).items()}}

        return {"meta": dict(self.meta),
                "classification": {str(r): record(c) for r, c in self.classification.items()},
                "clustering": None if self.clustering is None else record(self.clustering)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Results":
        """Inverse of :meth:`to_dict` (summaries are recomputed from the per-run values)."""
        clf = {int(r): ClassificationResult(**v["runs"]) for r, v in d["classification"].items()}
        clu = ClusteringResult(**d["clustering"]["runs"]) if d.get("clustering") else None
        return cls(classification=clf, clustering=clu, meta=dict(d.get("meta", {})))

    def save_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` atomically (:func:`hetcrf_lite.files.save_json`;
        NaN AUCs are written as JSON's non-standard NaN, which ``json.load`` reads back)."""
        save_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "Results":
        """Load what :meth:`save_json` wrote."""
        with open(path) as fh:
            return cls.from_dict(json.load(fh))


# --------------------------------------------------------------------------- validation
def _check_emb(emb: torch.Tensor | np.ndarray) -> torch.Tensor:
    emb = torch.as_tensor(emb)
    if emb.dim() != 2 or not emb.is_floating_point():
        raise DataError(f"embeddings must be a 2-D float tensor [N, D], got shape "
                        f"{tuple(emb.shape)} and dtype {emb.dtype}")
    bad = ~torch.isfinite(emb).all(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten()[:5].tolist()
        raise DataError(f"embeddings hold NaN or Inf in {int(bad.sum())} rows (first: {rows}); "
                        "check the training run for divergence before evaluating")
    return emb


def _check_labels(labels: torch.Tensor | np.ndarray, n: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise DataError(f"labels have shape {tuple(labels.shape)} but the embeddings have {n} "
                        "rows; pass one label per embedded node")
    return labels.long()


def _check_split(split: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int,
                 where: str) -> dict[str, torch.Tensor]:
    out = {}
    for part in ("train", "val", "test"):
        if part not in split:
            raise DataError(f"{where} has no {part!r} index; a split needs train, val and test")
        idx = torch.as_tensor(split[part]).long().flatten()
        if idx.numel() == 0:
            raise DataError(f"{where}[{part!r}] is empty")
        outside = idx[(idx < 0) | (idx >= labels.shape[0])]
        if outside.numel():
            raise DataError(f"{where}[{part!r}] holds index {int(outside[0])} outside "
                            f"[0, {labels.shape[0]}); the split does not belong to these "
                            "embeddings")
        y = labels[idx]
        if y.min() < 0 or y.max() >= num_classes:
            raise DataError(f"{where}[{part!r}] selects nodes labelled outside "
                            f"[0, {num_classes}) (unlabelled nodes are -1); fix the split or "
                            "num_classes")
        out[part] = idx
    return out


def _check_protocol(num_classes: int, lr: float, runs: int, iters: int) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes is {num_classes}; classification needs at least 2")
    if not lr > 0:
        raise ConfigError(f"lr is {lr}; the probe's learning rate must be positive")
    if runs < 1 or iters < 1:
        raise ConfigError(f"runs={runs} and iters={iters} must both be at least 1")


def _prepare(emb: torch.Tensor, normalize: bool, dtype: torch.dtype, device) -> torch.Tensor:
    emb = emb.detach().to(device=device, dtype=dtype)
    return F.normalize(emb, dim=1) if normalize else emb


def _init_weight(in_dim: int, num_classes: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Xavier-uniform ``[C, D]`` weight of run ``seed``.

    Drawn in float32 on the CPU, then cast, so a run starts from the same point on every device and
    in every dtype (a float64 draw would consume the generator differently).
    """
    w = torch.empty(num_classes, in_dim, dtype=torch.float32)
    torch.nn.init.xavier_uniform_(w, generator=torch.Generator().manual_seed(seed))
    return w.to(dtype)


def _first_best(scores: torch.Tensor) -> torch.Tensor:
    """Index of the first step (dim 0) whose score ties the best; ``[iters, ...] -> [...]``."""
    best = scores.max(dim=0).values
    return (scores >= best - _TIE_TOL).int().argmax(dim=0)  # argmax returns the first maximum


def _auc(y: np.ndarray, proba: np.ndarray, num_classes: int) -> float:
    """One-vs-rest macro AUC; NaN when the test set lacks a class (AUC undefined)."""
    if np.unique(y).shape[0] < num_classes:
        return math.nan
    return float(roc_auc_score(y, proba, multi_class="ovr"))


# --------------------------------------------------------------------------- classification
@torch.enable_grad()  # as _classify_batched
def evaluate_classification_loop(
    emb: torch.Tensor,
    labels: torch.Tensor,
    split: dict[str, torch.Tensor],
    num_classes: int,
    lr: float,
    runs: int = 50,
    iters: int = 200,
    seed: int = 0,
    normalize: bool = False,
    dtype: torch.dtype = torch.float32,
) -> ClassificationResult:
    r"""The classification protocol at one label rate, written as a plain loop (the reference).

    Run :math:`r` trains :math:`\mathrm{softmax}(W_r e + b_r)` with Adam on the training nodes'
    cross-entropy for ``iters`` full-batch steps and scores validation and test with
    scikit-learn after each step, as HeCo's ``evaluate`` does. Slow (about ``4 * runs * iters``
    ``f1_score`` calls); :func:`evaluate_classification` gives the same numbers much faster.

    Args:
        emb (torch.Tensor): frozen embeddings ``[N, D]``.
        labels (torch.Tensor): ``[N]`` classes (``-1`` allowed outside the split).
        split (dict): ``{"train": idx, "val": idx, "test": idx}``.
        num_classes (int): number of classes :math:`C`.
        lr (float): Adam learning rate (HeCo: 0.05 on ACM, 0.01 elsewhere).
        runs (int, optional): independent runs, seeds ``seed + r``. (default: :obj:`50`)
        iters (int, optional): Adam steps per run. (default: :obj:`200`)
        seed (int, optional): base seed. (default: :obj:`0`)
        normalize (bool, optional): L2-normalise embedding rows first. (default: :obj:`False`)
        dtype (torch.dtype, optional): compute dtype. (default: :obj:`torch.float32`)

    Returns:
        ClassificationResult: per-run scores (percent) and selected steps.
    """
    emb = _check_emb(emb)
    labels = _check_labels(labels, emb.shape[0])
    _check_protocol(num_classes, lr, runs, iters)
    idx = _check_split(split, labels, num_classes, "split")
    x = _prepare(emb, normalize, dtype, "cpu")
    x_tr, x_va, x_te = (x[idx[p]] for p in ("train", "val", "test"))
    y_tr, y_va, y_te = (labels[idx[p]] for p in ("train", "val", "test"))
    y_va_np, y_te_np = y_va.numpy(), y_te.numpy()
    res = ClassificationResult([], [], [], [], [])
    for r in range(runs):
        probe = torch.nn.Linear(x.shape[1], num_classes, dtype=dtype)
        with torch.no_grad():
            probe.weight.copy_(_init_weight(x.shape[1], num_classes, seed + r, dtype))
            probe.bias.zero_()
        opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=0.0)
        scores = {k: [] for k in ("va_macro", "va_micro", "te_macro", "te_micro")}
        test_logits = []
        for _ in range(iters):
            opt.zero_grad()
            F.cross_entropy(probe(x_tr), y_tr).backward()
            opt.step()
            with torch.no_grad():
                pred_va = probe(x_va).argmax(dim=1).numpy()
                logits_te = probe(x_te)
            pred_te = logits_te.argmax(dim=1).numpy()
            for part, y_np, pred in (("va", y_va_np, pred_va), ("te", y_te_np, pred_te)):
                for avg in ("macro", "micro"):
                    scores[f"{part}_{avg}"].append(f1_score(y_np, pred, average=avg))
            test_logits.append(logits_te)
        s = {k: torch.tensor(v, dtype=torch.float64) for k, v in scores.items()}
        i_mac, i_mic = int(_first_best(s["va_macro"])), int(_first_best(s["va_micro"]))
        proba = torch.softmax(test_logits[i_mic].double(), dim=1).numpy()
        res.macro_f1.append(100 * float(s["te_macro"][i_mac]))
        res.micro_f1.append(100 * float(s["te_micro"][i_mic]))
        res.auc.append(100 * _auc(y_te_np, proba, num_classes))
        res.macro_step.append(i_mac)
        res.micro_step.append(i_mic)
    return res


def _confusion(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion counts of every stored prediction, ``[iters, runs, n] -> [iters, runs, C, C]``.

    Entry ``[t, r, k, c]`` counts nodes of true class ``k`` predicted ``c``. With the nodes
    grouped by true class each count is one reduction over a contiguous block, so the work is
    ``C * n`` comparisons per (step, run): cheaper than ``bincount`` over ``iters * runs * n``
    int64 keys, which needs an index tensor 8x the size of the predictions.
    """
    order = torch.argsort(y, stable=True)
    if not bool((order == torch.arange(y.shape[0], device=y.device)).all()):
        pred, y = pred[..., order], y[order]  # callers pass class-sorted nodes; others pay a copy
    ends = torch.bincount(y, minlength=num_classes).cumsum(0).tolist()
    conf = torch.zeros(*pred.shape[:2], num_classes, num_classes, dtype=torch.int64,
                       device=pred.device)
    start = 0
    for k, end in enumerate(ends):  # C * C reductions, each over one class's block
        block = pred[..., start:end]  # [T, R, n_k]
        for c in range(num_classes):
            conf[..., k, c] = (block == c).sum(dim=-1, dtype=torch.int32)
        start = end
    return conf


def _f1_scores(pred: torch.Tensor, y: torch.Tensor,
               num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Macro- and Micro-F1 of every stored prediction at once, as scikit-learn defines them.

    Per class :math:`F_1^c = 2\,tp_c / (n^{true}_c + n^{pred}_c)` (0 when both are 0); Macro-F1
    averages over the classes present in labels or predictions (sklearn's ``labels=None``); for
    single-label multi-class data Micro-F1 equals accuracy.

    Args:
        pred (torch.Tensor): ``[iters, runs, n]`` predicted classes.
        y (torch.Tensor): ``[n]`` true classes.

    Returns:
        (macro, micro), each ``[iters, runs]`` float64.
    """
    conf = _confusion(pred, y, num_classes).double()  # [T, R, C, C]
    tp = conf.diagonal(dim1=-2, dim2=-1)  # [T, R, C]
    denom = conf.sum(dim=-1) + conf.sum(dim=-2)  # n_true + n_pred, [T, R, C]
    present = denom > 0
    f1 = torch.where(present, 2 * tp / denom.clamp(min=1), 0.0)  # [T, R, C]
    macro = f1.sum(dim=-1) / present.sum(dim=-1)
    micro = tp.sum(dim=-1) / y.shape[0]
    return macro, micro


def _argmax_first(logits: torch.Tensor) -> torch.Tensor:
    """``argmax`` over dim 1 of ``[R, C, n]`` logits, first maximum on ties, as ``torch.argmax``.

    ``C - 1`` elementwise passes over contiguous ``[R, n]`` slices: torch's argmax over a short
    class dimension is a slow reduction (about 1 ms per call at 50 x 1000 x 3), and it runs twice
    per step.
    """
    best, pred = logits[:, 0], torch.zeros_like(logits[:, 0], dtype=torch.uint8)  # [R, n]
    for c in range(1, logits.shape[1]):
        better = logits[:, c] > best  # strict: an earlier class keeps a tie
        pred = torch.where(better, c, pred)
        best = torch.where(better, logits[:, c], best)
    return pred


@torch.enable_grad()  # the probes train even when the caller is under torch.no_grad()
def _classify_batched(x_tr, y_tr, x_va, y_va, x_te, y_te, num_classes: int, lr: float, runs: int,
                      iters: int, seed: int) -> ClassificationResult:
    """All runs of one label rate trained as one batched probe; see evaluate_classification.

    Validation and test nodes must come grouped by class (see :func:`_confusion`).
    """
    dtype, device = x_tr.dtype, x_tr.device
    in_dim = x_tr.shape[1]
    weight = torch.stack([_init_weight(in_dim, num_classes, seed + r, dtype) for r in range(runs)])
    weight = weight.transpose(1, 2).contiguous().to(device).requires_grad_()  # [R, D, C]
    bias = torch.zeros(runs, 1, num_classes, dtype=dtype, device=device, requires_grad=True)
    # Adam is elementwise, so one optimiser over the stacked tensors keeps every run's state apart.
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=0.0)
    y_rep = y_tr.repeat(runs)  # [R * n_tr], run-major like logits.reshape below
    pred_dtype = torch.uint8 if num_classes <= 255 else torch.int64
    pred_va = torch.empty(iters, runs, y_va.shape[0], dtype=pred_dtype, device=device)
    pred_te = torch.empty(iters, runs, y_te.shape[0], dtype=pred_dtype, device=device)
    # Test logits at each run's best validation accuracy so far: the Micro-F1 step is the first
    # step with the most correct validation nodes, so a strict ">" keeps exactly it.
    best_correct = torch.full((runs,), -1, dtype=torch.long, device=device)
    best_logits = torch.zeros(runs, num_classes, y_te.shape[0], dtype=dtype, device=device)
    x_va_t, x_te_t = x_va.T.contiguous(), x_te.T.contiguous()  # [D, n]
    for t in range(iters):
        opt.zero_grad()
        logits = torch.einsum("nd,rdc->rnc", x_tr, weight) + bias  # [R, n_tr, C]
        # Sum over runs of each run's mean cross-entropy: run r's gradient is its own.
        loss = F.cross_entropy(logits.reshape(-1, num_classes), y_rep, reduction="sum")
        (loss / y_tr.shape[0]).backward()
        opt.step()
        with torch.no_grad():
            # Class-major logits [R, C, n]: one (R*C x D) @ (D x n) product per set.
            w = weight.transpose(1, 2).reshape(runs * num_classes, in_dim)  # [R*C, D]
            b = bias.reshape(runs * num_classes, 1)
            va = _argmax_first(torch.addmm(b, w, x_va_t).view(runs, num_classes, -1))  # [R, n_va]
            logits_te = torch.addmm(b, w, x_te_t).view(runs, num_classes, -1)  # [R, C, n_te]
            pred_va[t] = va
            pred_te[t] = _argmax_first(logits_te)
            correct = (va == y_va).sum(dim=1)  # [R]
            better = correct > best_correct
            best_correct = torch.where(better, correct, best_correct)
            best_logits[better] = logits_te[better]
    va_macro, va_micro = _f1_scores(pred_va, y_va, num_classes)  # [T, R] each
    te_macro, te_micro = _f1_scores(pred_te, y_te, num_classes)
    i_mac, i_mic = _first_best(va_macro), _first_best(va_micro)  # [R] each
    run_ids = torch.arange(runs, device=device)
    # Softmax in float64, as the loop does: AUC ranks must not depend on float32 ties.
    proba = torch.softmax(best_logits.double(), dim=1).transpose(1, 2).cpu().numpy()  # [R, n, C]
    return ClassificationResult(
        macro_f1=(100 * te_macro[i_mac, run_ids]).tolist(),
        micro_f1=(100 * te_micro[i_mic, run_ids]).tolist(),
        auc=(100 * _auc_batched(y_te.cpu().numpy(), proba, num_classes)).tolist(),
        macro_step=i_mac.tolist(),
        micro_step=i_mic.tolist(),
    )


def _auc_batched(y: np.ndarray, proba: np.ndarray, num_classes: int) -> np.ndarray:
    r"""One-vs-rest macro AUC of every run at once, ``[R, n, C] -> [R]``.

    Per class the AUC is the Mann-Whitney statistic
    :math:`(\sum_{i \in pos} \mathrm{rank}_i - n_+(n_+ + 1)/2) / (n_+ n_-)` with tied scores given
    their average rank: the same number as scikit-learn's ``roc_auc_score(multi_class="ovr")``,
    computed for all runs and classes in one ``rankdata`` call instead of ``runs`` sklearn calls.
    """
    if np.unique(y).shape[0] < num_classes:
        return np.full(proba.shape[0], np.nan)
    ranks = rankdata(proba, axis=1)  # [R, n, C], average ranks within each run and class
    onehot = y[:, None] == np.arange(num_classes)  # [n, C]
    n_pos = onehot.sum(axis=0)  # [C]
    n_neg = y.shape[0] - n_pos
    rank_sum = (ranks * onehot).sum(axis=1)  # [R, C]
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)  # [R, C]
    return auc.mean(axis=1)


def evaluate_classification(
    emb: torch.Tensor,
    labels: torch.Tensor,
    splits: dict[int, dict[str, torch.Tensor]],
    num_classes: int,
    lr: float,
    rates: Sequence[int] | None = (20, 40, 60),
    runs: int = 50,
    iters: int = 200,
    seed: int = 0,
    normalize: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> dict[int, ClassificationResult]:
    r"""The classification protocol at several label rates, all runs trained as one batched probe.

    The ``runs`` probes are stacked into :math:`W \in \mathbb{R}^{R \times D \times C}`; one Adam
    step minimises

    .. math::
        \mathcal{L} = \sum_{r=1}^{R} \frac{1}{|\mathcal{V}_{train}|}
        \sum_{i \in \mathcal{V}_{train}} \mathrm{CE}\big(W_r^\top e_i + b_r,\ y_i\big),

    so each run's gradient, and therefore its Adam update (elementwise), is exactly its own.
    Predictions of every step are stored as ``[iters, runs, n]`` bytes and all F1 scores come
    from confusion counts after training, in one vectorised pass (no per-step metric calls);
    test logits are kept only at each run's best-so-far validation accuracy, which is exactly the
    Micro-F1 step where AUC is read, so AUC needs no second pass. Same seeds and steps as
    :func:`evaluate_classification_loop`. Memory: ``iters * runs * (n_val + n_test)`` bytes
    (20 MB for 50 runs, 200 steps, 1000 + 1000 nodes).

    Args:
        emb (torch.Tensor): frozen embeddings ``[N, D]``.
        labels (torch.Tensor): ``[N]`` classes (``-1`` allowed outside the splits).
        splits (dict): ``{rate: {"train": idx, "val": idx, "test": idx}}``.
        num_classes (int): number of classes :math:`C`.
        lr (float): Adam learning rate (HeCo: 0.05 on ACM, 0.01 elsewhere).
        rates (sequence of int, optional): rates to evaluate; :obj:`None` takes every key of
            ``splits``. (default: :obj:`(20, 40, 60)`)
        runs (int, optional): independent runs, seeds ``seed + r``. (default: :obj:`50`)
        iters (int, optional): Adam steps per run. (default: :obj:`200`)
        seed (int, optional): base seed. (default: :obj:`0`)
        normalize (bool, optional): L2-normalise embedding rows first (HeCo does not).
            (default: :obj:`False`)
        dtype (torch.dtype, optional): compute dtype; float64 for exact comparisons.
            (default: :obj:`torch.float32`)
        device (str or torch.device, optional): where to train; :obj:`None` keeps ``emb``'s.
            (default: :obj:`None`)

    Returns:
        dict: ``{rate: ClassificationResult}``.

    Introduced in notebook 09.
    """
    emb = _check_emb(emb)
    labels = _check_labels(labels, emb.shape[0])
    _check_protocol(num_classes, lr, runs, iters)
    rates = sorted(splits) if rates is None else list(rates)
    missing = [r for r in rates if r not in splits]
    if missing:
        raise DataError(f"no split for rates {missing}; available: {sorted(splits)}")
    device = emb.device if device is None else torch.device(device)
    x = _prepare(emb, normalize, dtype, device)
    y = labels.to(device)
    out = {}
    for rate in rates:
        idx = _check_split(splits[rate], labels, num_classes, f"splits[{rate}]")
        for part in ("val", "test"):  # group by class for the confusion counts (order-free metrics)
            idx[part] = idx[part][torch.argsort(labels[idx[part]], stable=True)]
        idx = {k: v.to(device) for k, v in idx.items()}
        parts = [t for p in ("train", "val", "test") for t in (x[idx[p]], y[idx[p]])]
        out[int(rate)] = _classify_batched(*parts, num_classes=num_classes, lr=lr, runs=runs,
                                           iters=iters, seed=seed)
    return out


# --------------------------------------------------------------------------- clustering
def evaluate_clustering(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    runs: int = 10,
    seed: int = 0,
    n_init: int = 10,
    normalize: bool = False,
) -> ClusteringResult:
    """K-means with ``num_classes`` clusters on the labelled nodes, ``runs`` times; NMI and ARI.

    Run ``r`` uses ``KMeans(n_clusters=num_classes, n_init=n_init, random_state=seed + r)``;
    NMI is scikit-learn's ``normalized_mutual_info_score`` (arithmetic mean normalisation), ARI
    its ``adjusted_rand_score``. Nodes labelled ``-1`` are left out.

    Args:
        emb (torch.Tensor): embeddings ``[N, D]``.
        labels (torch.Tensor): ``[N]`` classes, ``-1`` for unlabelled.
        num_classes (int): number of clusters.
        runs (int, optional): K-means runs. (default: :obj:`10`)
        seed (int, optional): base seed. (default: :obj:`0`)
        n_init (int, optional): K-means restarts per run. (default: :obj:`10`)
        normalize (bool, optional): L2-normalise rows first. (default: :obj:`False`)

    Returns:
        ClusteringResult: per-run NMI and ARI in percent.
    """
    emb = _check_emb(emb)
    labels = _check_labels(labels, emb.shape[0])
    if num_classes < 2 or runs < 1:
        raise ConfigError(f"num_classes={num_classes} must be >= 2 and runs={runs} >= 1")
    keep = labels >= 0
    if int(keep.sum()) < num_classes:
        raise DataError(f"only {int(keep.sum())} labelled nodes for {num_classes} clusters")
    x = _prepare(emb, normalize, torch.float64, "cpu")[keep].numpy()
    y = labels[keep].numpy()
    res = ClusteringResult([], [])
    for r in range(runs):
        pred = KMeans(n_clusters=num_classes, n_init=n_init, random_state=seed + r).fit_predict(x)
        res.nmi.append(100 * float(normalized_mutual_info_score(y, pred)))
        res.ari.append(100 * float(adjusted_rand_score(y, pred)))
    return res


# --------------------------------------------------------------------------- convenience
def evaluate_embeddings(
    emb: torch.Tensor,
    dataset: "HINDataset",
    lr: float | None = None,
    rates: Sequence[int] | None = None,
    runs: int = 50,
    iters: int = 200,
    seed: int = 0,
    clustering: bool = True,
    clustering_runs: int = 10,
    normalize: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> Results:
    """Classification at every label rate of ``dataset`` plus clustering, as one :class:`Results`.

    Args:
        emb (torch.Tensor): frozen embeddings of the target nodes ``[N, D]``.
        dataset (HINDataset): gives labels (``-1`` ignored), splits and ``num_classes``.
        lr (float, optional): probe learning rate; :obj:`None` uses HeCo's: 0.05 when
            ``dataset.name == "acm"``, 0.01 otherwise. (default: :obj:`None`)
        rates (sequence of int, optional): label rates; :obj:`None` takes all of
            ``dataset.splits``. (default: :obj:`None`)
        runs (int, optional): classification runs. (default: :obj:`50`)
        iters (int, optional): Adam steps per run. (default: :obj:`200`)
        seed (int, optional): base seed of both protocols. (default: :obj:`0`)
        clustering (bool, optional): also run K-means. (default: :obj:`True`)
        clustering_runs (int, optional): K-means runs. (default: :obj:`10`)
        normalize (bool, optional): L2-normalise embedding rows first. (default: :obj:`False`)
        dtype (torch.dtype, optional): classification compute dtype. (default: :obj:`torch.float32`)
        device (str or torch.device, optional): classification device. (default: :obj:`None`)

    Returns:
        Results: the numbers and the settings that produced them (``meta``).

    Introduced in notebook 04.
    """
    lr = (0.05 if dataset.name == "acm" else 0.01) if lr is None else lr
    clf = evaluate_classification(emb, dataset.labels, dataset.splits, dataset.num_classes, lr,
                                  rates=rates, runs=runs, iters=iters, seed=seed,
                                  normalize=normalize, dtype=dtype, device=device)
    clu = (evaluate_clustering(emb, dataset.labels, dataset.num_classes, runs=clustering_runs,
                               seed=seed, normalize=normalize) if clustering else None)
    meta = {"dataset": dataset.name, "lr": lr, "runs": runs, "iters": iters, "seed": seed,
            "normalize": normalize, "clustering_runs": clustering_runs if clustering else 0,
            "num_nodes": int(emb.shape[0]), "dim": int(emb.shape[1])}
    return Results(classification=clf, clustering=clu, meta=meta)
