"""The fused fast path of :func:`~hetcrf_lite.contrastive.infonce` (``negatives="all"``): both
directions from one ``N x N`` buffer of exponentials, reused in place for the gradient.

Introduced in notebook 05, after the autograd reference
(:func:`~hetcrf_lite.contrastive.infonce_reference`), which it is tested equal to
(``tests/test_contrastive.py``, float64, 1e-10). ``benchmarks/encoder_speed.py`` times both
(docs/performance.md).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["fused_tau_ok", "fused_infonce"]


def fused_tau_ok(tau: float, dtype: torch.dtype) -> bool:
    r"""Whether the unshifted exponentials of :class:`_FusedInfoNCE` are safe for ``tau``.

    Every entry lies in :math:`[e^{-2/\tau}, 1]`; it is required to keep at least half of the
    dtype's exponent range above the smallest normal number, :math:`e^{-2/\tau} \geq
    \sqrt{\mathrm{tiny}}`: float32 (and bfloat16) ``tau >= 0.046``, float64 ``tau >= 0.0057``,
    float16 ``tau >= 0.42``.

    Introduced in notebook 05 (the fused path).
    """
    return -2.0 / tau >= 0.5 * math.log(torch.finfo(dtype).tiny)


def _scaled_exp(z1n: Tensor, z2n: Tensor, tau: float) -> Tensor:
    r""":math:`E = e^{(s - 1)/\tau}` for ``s = z1n @ z2n^T``, built in one ``[N, N]`` buffer."""
    e = torch.mm(z1n * (1.0 / tau), z2n.t())  # [N, N] s / tau
    return e.sub_(1.0 / tau).exp_()  # [N, N] no max shift: cos <= 1, so every entry <= 1


class _FusedInfoNCE(torch.autograd.Function):
    r"""Two-way multi-positive InfoNCE (``negatives="all"``) with a hand-written backward.

    On normalised views (``s = z1n @ z2n^T``) and with :math:`E_{ij} = e^{(s_{ij}-1)/\tau}`
    (the shift by the largest possible cosine 1 cancels in every ratio), :math:`R_i =
    \sum_j E_{ij}`, :math:`C_j = \sum_i E_{ij}`, :math:`P_i = \sum_{p \in \mathrm{Pos}(i)}
    E_{ip}`, :math:`Q_i = \sum_{p \in \mathrm{Pos}(i)} E_{pi}` and :math:`H` the :math:`n`
    anchors with a positive:

    .. math::
        \mathcal{L} = \frac{\lambda}{n}\sum_{i \in H} \log\frac{R_i}{P_i} +
        \frac{1-\lambda}{n}\sum_{i \in H} \log\frac{C_i}{Q_i}

    .. math::
        \frac{\partial \mathcal{L}}{\partial s_{ij}} = \frac{E_{ij}}{\tau}\left[
        \frac{\lambda}{n}\left(\frac{[i \in H]}{R_i} - \frac{[j \in \mathrm{Pos}(i)]}{P_i}\right)
        + \frac{1-\lambda}{n}\left(\frac{[j \in H]}{C_j} -
        \frac{[i \in \mathrm{Pos}(j)]}{Q_j}\right)\right]

    Why by hand: autograd on the dense formula keeps about five ``N x N`` buffers (logits, two
    softmaxes, their gradients) and computes two log-sum-exps with max shifts. Here one
    ``N x N`` buffer holds :math:`E` from the forward to the backward, where it is overwritten
    in place by :math:`\partial\mathcal{L}/\partial s` (the off-positive part row block by
    row block, then the ``P`` positive corrections by index), and goes through the two
    matmuls: peak memory ``N^2`` entries plus ``O(N C + P)``. If a retained graph is
    backpropagated again, :math:`E` is recomputed from the saved views. Inputs are the
    *normalised* views; ``F.normalize`` stays in autograd. Only safe where
    :func:`fused_tau_ok` holds.
    """

    @staticmethod
    def forward(ctx: Any, z1n: Tensor, z2n: Tensor, pos: Tensor, has_pos: Tensor, tau: float,
                lam: float) -> Tensor:
        n = z1n.shape[0]
        e = _scaled_exp(z1n, z2n, tau)  # [N, N]
        row, col = e.sum(1), e.sum(0)  # [N] denominators 1 -> 2 (rows) and 2 -> 1 (columns)
        a, p = pos
        e12, e21 = e[a, p], e[p, a]  # [P] positive terms, anchor in view 1 / in view 2
        pos12 = row.new_zeros(n).index_add_(0, a, e12)  # [N]
        pos21 = row.new_zeros(n).index_add_(0, a, e21)  # [N]
        l12 = (row.log() - pos12.log())[has_pos].mean()
        l21 = (col.log() - pos21.log())[has_pos].mean()
        if any(ctx.needs_input_grad[:2]):
            ctx.save_for_backward(z1n, z2n, pos, has_pos, row, col, pos12, pos21, e12, e21)
            ctx.e, ctx.tau, ctx.lam = e, tau, lam  # e: not saved, overwritten by the backward
        return lam * l12 + (1.0 - lam) * l21

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z1n, z2n, pos, has_pos, row, col, pos12, pos21, e12, e21 = ctx.saved_tensors
        tau, lam = ctx.tau, ctx.lam
        e, ctx.e = ctx.e, None  # consumed in place below
        if e is None:  # a retained graph, backpropagated again
            e = _scaled_exp(z1n, z2n, tau)
        h = has_pos.to(e.dtype)  # [N]
        c = grad / (h.sum() * tau)  # upstream gradient, mean over anchors, 1/tau of ds/dlogit
        u = (lam * c) * h / row  # [N] row part, direction 1 -> 2
        v = ((1.0 - lam) * c) * h / col  # [N] column part, direction 2 -> 1
        step = max(1, 2**20 // max(1, e.shape[1]))  # row blocks: a small temporary, not N x N
        for blk, ub in zip(e.split(step), u.split(step)):
            blk.mul_(ub.unsqueeze(1) + v)  # [b, N] e_ij (u_i + v_j)
        a, p = pos
        # (a, p) and (p', a') may be the same entry: accumulate, the (a, p) corrections first
        # (the order one index_put_ over both lists concatenated takes, so the same sums), in
        # two calls that index ``pos`` in place: concatenated, the indices and values took
        # ~48 bytes of temporaries per positive pair (DBLP, 4 million pairs: 158 MB of peak).
        e.index_put_((a, p), -((lam * c) * e12 / pos12[a]), accumulate=True)  # [P] at (a, p)
        e.index_put_((p, a), -(((1.0 - lam) * c) * e21 / pos21[a]), accumulate=True)  # at (p, a)
        g1 = e @ z2n if ctx.needs_input_grad[0] else None  # [N, C]
        g2 = e.t() @ z1n if ctx.needs_input_grad[1] else None  # [N, C]
        return g1, g2, None, None, None, None


def fused_infonce(z1n: Tensor, z2n: Tensor, pos: Tensor, has_pos: Tensor, tau: float,
                  lam: float) -> Tensor:
    """Two-way multi-positive InfoNCE of *normalised* views ``z1n``, ``z2n`` ``[N, C]``
    (positives ``pos`` ``[2, P]``, ``has_pos`` ``[N]`` bool), by :class:`_FusedInfoNCE`; only
    where :func:`fused_tau_ok` holds.

    Introduced in notebook 05 (the fused path)."""
    return _FusedInfoNCE.apply(z1n, z2n, pos, has_pos, tau, lam)
