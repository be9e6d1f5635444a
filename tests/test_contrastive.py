"""Tests of the contrastive channel: views, second-stage GCN, InfoNCE (full and mini-batch) and
gradient balance."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor

from hetcrf_lite import contrastive
from hetcrf_lite.contrastive import (FusionView, ProjectionHead, SchemaView, SecondStageGCN,
                                     gradient_balance, infonce, infonce_minibatch)
from hetcrf_lite.errors import ConfigError, DataError
from hetcrf_lite.infonce_fused import fused_infonce, fused_tau_ok
from hetcrf_lite.sparse import csr_plan, sample_neighbors

# A 4-node example: 2-d embeddings, anchors 0 and 2 have two positives.
Z1 = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.5]]
Z2 = [[0.8, 0.6], [1.0, 1.0], [-0.5, 1.0], [-1.0, 0.0]]
POS = {0: [0, 1], 1: [1], 2: [2, 3], 3: [3]}


def pos_index(pos: dict) -> torch.Tensor:
    return torch.tensor([[a, p] for a, ps in pos.items() for p in ps]).t()


def cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / (math.hypot(*u) * math.hypot(*v))


def hand_one_way(za, zc, pos, tau, drop=None, tau_plus=None):
    """Mean over anchors of -log(sum_pos e^{s/tau} / denominator), written out with loops."""
    total = 0.0
    for i in range(len(za)):
        num = sum(math.exp(cos(za[i], zc[p]) / tau) for p in pos[i])
        negs = [j for j in range(len(zc)) if j not in pos[i] and not (drop and drop(i, j))]
        neg = sum(math.exp(cos(za[i], zc[j]) / tau) for j in negs)
        if tau_plus is not None:  # Chuang et al.: debiased negative sum with its floor
            q = len(negs)
            neg = max((neg - tau_plus * q * num / len(pos[i])) / (1 - tau_plus),
                      q * math.exp(-1 / tau))
        total += -math.log(num / (num + neg))
    return total / len(za)


def tensors():
    return torch.tensor(Z1, dtype=torch.float64), torch.tensor(Z2, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
def test_infonce_by_hand_and_lambda():
    z1, z2 = tensors()
    pos, tau = pos_index(POS), 0.5
    l12 = hand_one_way(Z1, Z2, POS, tau)
    l21 = hand_one_way(Z2, Z1, POS, tau)  # anchor in view 2, same positive sets
    assert l12 != pytest.approx(l21)
    for lam in (0.0, 0.3, 1.0):
        got = float(infonce(z1, z2, pos, tau, lam))
        assert got == pytest.approx(lam * l12 + (1 - lam) * l21, abs=1e-10)
    for bad in (dict(tau=0.0), dict(tau=0.5, lam=1.5), dict(tau=0.5, negatives="hard")):
        with pytest.raises(ConfigError):
            infonce(z1, z2, pos, **bad)


def test_infonce_debiased():
    z1, z2 = tensors()
    pos, tau = pos_index(POS), 0.5
    plain = float(infonce(z1, z2, pos, tau, 0.3))
    assert float(infonce(z1, z2, pos, tau, 0.3, "debiased", tau_plus=0.0)) == pytest.approx(plain)
    got = float(infonce(z1, z2, pos, tau, 0.3, "debiased", tau_plus=0.2))
    hand = (0.3 * hand_one_way(Z1, Z2, POS, tau, tau_plus=0.2)
            + 0.7 * hand_one_way(Z2, Z1, POS, tau, tau_plus=0.2))
    assert got == pytest.approx(hand, abs=1e-10) and got != pytest.approx(plain)
    # tiny temperature: the shifted form does not overflow in float32
    small = infonce(z1.float(), z2.float(), pos, 0.005, negatives="debiased")
    assert torch.isfinite(small)
    with pytest.raises(ConfigError):
        infonce(z1, z2, pos, tau, negatives="debiased", tau_plus=1.0)


def test_infonce_drop_same_cluster():
    z1, z2 = tensors()
    pos, tau = pos_index(POS), 0.5
    plain = float(infonce(z1, z2, pos, tau, 0.3))
    alone = torch.arange(4)  # every anchor is its own positive: nothing to drop
    assert float(infonce(z1, z2, pos, tau, 0.3, "drop_same_cluster", alone)) == pytest.approx(plain)
    cluster = torch.tensor([0, 0, 0, 1])
    got = float(infonce(z1, z2, pos, tau, 0.3, "drop_same_cluster", cluster))
    drop = lambda i, j: cluster[i] == cluster[j]  # noqa: E731
    hand = 0.3 * hand_one_way(Z1, Z2, POS, tau, drop) + 0.7 * hand_one_way(Z2, Z1, POS, tau, drop)
    assert got == pytest.approx(hand, abs=1e-10) and got != pytest.approx(plain)
    with pytest.raises(DataError):
        infonce(z1, z2, pos, tau, negatives="drop_same_cluster")


def test_infonce_skips_anchors_without_positives():
    torch.manual_seed(0)
    z1 = torch.randn(5, 3, requires_grad=True)
    z2 = torch.randn(5, 3)
    pos = torch.tensor([[0, 1, 1, 3], [0, 1, 2, 3]])
    for negatives in ("all", "debiased", "drop_same_cluster"):
        z1.grad = None
        loss = infonce(z1, z2, pos, 0.5, negatives=negatives, cluster=torch.tensor([0, 0, 1, 1, 2]))
        loss.backward()
        assert torch.isfinite(loss) and bool(torch.isfinite(z1.grad).all()), negatives
    with pytest.raises(DataError):
        infonce(z1, z2, torch.zeros(2, 0, dtype=torch.long), 0.5)


# --------------------------------------------------------------------------------------------
# The fused two-way InfoNCE (negatives="all") against the autograd reference
def sparse_positives(n: int, seed: int, without: int = 4) -> torch.Tensor:
    """Multi-positive [2, P] sets, no duplicate pairs; the first ``without`` anchors have none."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=g) < 0.15
    mask[:without] = False
    mask[without, without] = True  # at least one anchor with a positive
    return mask.nonzero().t()


def reference(z1, z2, pos, tau, lam):
    has_pos = torch.bincount(pos[0], minlength=z1.shape[0]) > 0
    return contrastive.infonce_reference(z1, z2, pos, tau, lam, has_pos=has_pos)


def loss_and_grads(fn, z1, z2, *args):
    a, b = z1.detach().requires_grad_(True), z2.detach().requires_grad_(True)
    loss = fn(a, b, *args)
    return (loss, *torch.autograd.grad(loss, (a, b))), loss.grad_fn


@pytest.mark.parametrize("tau", [0.8, 0.1])
def test_fused_infonce_equals_reference(tau):
    torch.manual_seed(3)
    n = 30
    z1, z2 = torch.randn(n, 6, dtype=torch.float64), torch.randn(n, 6, dtype=torch.float64)
    pos = sparse_positives(n, 0)
    assert pos[0].unique().numel() < n and (pos[1] != pos[0]).any()  # some anchors lack positives
    for lam in (0.0, 0.3, 0.5, 1.0):
        got, fn = loss_and_grads(infonce, z1, z2, pos, tau, lam)
        assert type(fn).__name__ == "_FusedInfoNCEBackward"  # the fused path ran
        want, _ = loss_and_grads(reference, z1, z2, pos, tau, lam)
        for g, w in zip(got, want):
            assert torch.allclose(g, w, rtol=0, atol=1e-10), (lam, float((g - w).abs().max()))
    # the two directions really differ, so a swapped direction would fail above
    one_way = [float(infonce(z1, z2, pos, tau, lam)) for lam in (0.0, 1.0)]
    assert one_way[0] != pytest.approx(one_way[1])


def test_fused_infonce_gradcheck():
    torch.manual_seed(4)
    z1 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([[0, 0, 1, 2, 2, 4, 4], [0, 3, 1, 2, 5, 1, 0]])  # anchors 3, 5: none
    has_pos = torch.bincount(pos[0], minlength=6) > 0

    def fused(a, b):
        return fused_infonce(F.normalize(a, dim=1), F.normalize(b, dim=1),
                                               pos, has_pos, 0.3, 0.4)

    assert torch.autograd.gradcheck(fused, (z1, z2))
    # the Function alone, on unnormalised inputs (cosines above 1 are still exact)
    assert torch.autograd.gradcheck(
        lambda a, b: fused_infonce(a, b, pos, has_pos, 0.7, 0.5), (z1, z2))


def test_fused_infonce_float32_one_view_and_retained_graph():
    torch.manual_seed(5)
    n = 40
    z1, z2 = torch.randn(n, 8, dtype=torch.float64), torch.randn(n, 8, dtype=torch.float64)
    pos = sparse_positives(n, 1)
    want = loss_and_grads(reference, z1, z2, pos, 0.5, 0.3)[0]
    got = loss_and_grads(infonce, z1.float(), z2.float(), pos, 0.5, 0.3)[0]
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and torch.allclose(g.double(), w, rtol=1e-5, atol=1e-6)
    # only one view needs a gradient; a retained graph backpropagated twice (E is recomputed)
    a = z1.clone().requires_grad_(True)
    loss = infonce(a, z2, pos, 0.5, 0.3)
    (g1,) = torch.autograd.grad(loss, a, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, a)
    assert torch.allclose(g1, want[1], rtol=0, atol=1e-10) and torch.equal(g1, g2)


def test_fused_infonce_falls_back_at_tiny_tau():
    # anchor 0's only positive is the opposite vector: e^{(s-1)/tau} = e^{-2/tau}, 0 in float32
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    z2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[0, 1, 2], [1, 2, 2]])
    has_pos = torch.ones(3, dtype=torch.bool)
    tau = 0.01
    assert not fused_tau_ok(tau, torch.float32)
    raw = fused_infonce(z1, z2, pos, has_pos, tau, 0.5)
    assert not torch.isfinite(raw)  # what the fallback avoids
    got = infonce(z1, z2, pos, tau)
    assert torch.isfinite(got) and torch.equal(got, reference(z1, z2, pos, tau, 0.5))
    assert float(got) == pytest.approx(float(reference(z1.double(), z2.double(), pos, tau, 0.5)),
                                       rel=1e-5)
    # float64 has the range: the fused path runs at the same tau and agrees
    assert fused_tau_ok(tau, torch.float64)
    assert float(infonce(z1.double(), z2.double(), pos, tau)) == pytest.approx(float(got), rel=1e-5)


# --------------------------------------------------------------------------------------------
def random_positives(n: int, per: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pairs = [(i, i) for i in range(n)]
    pairs += [(i, int(j)) for i in range(n) for j in torch.randint(n, (per,), generator=g)]
    key = torch.unique(torch.tensor([a * n + b for a, b in pairs]))
    return torch.stack([key // n, key % n])


def test_minibatch_equals_full_batch():
    torch.manual_seed(1)
    n = 40
    z1, z2 = torch.randn(n, 8, dtype=torch.float64), torch.randn(n, 8, dtype=torch.float64)
    pos = random_positives(n, 3, 0)
    full = infonce(z1, z2, pos, 0.7, 0.3)
    anchors = torch.randperm(n)  # order does not matter
    mini = infonce_minibatch(z1, z2, pos, anchors, 0.7, 0.3)
    assert abs(float(full - mini)) < 1e-6


def test_minibatch_candidates_by_hand():
    torch.manual_seed(2)
    n = 30
    z1, z2 = torch.randn(n, 4, dtype=torch.float64), torch.randn(n, 4, dtype=torch.float64)
    pos = random_positives(n, 2, 1)
    anchors = torch.tensor([3, 17, 8])
    got = float(infonce_minibatch(z1, z2, pos, anchors, 0.5, 0.5))
    pos_of = {int(a): pos[1][pos[0] == a].tolist() for a in anchors}
    cand = sorted(set(anchors.tolist()) | {p for ps in pos_of.values() for p in ps})
    s12 = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).t()
    hand = 0.0
    for a in anchors.tolist():
        for s in (s12[a], s12[:, a]):  # direction 1 -> 2, then 2 -> 1
            num = sum(math.exp(float(s[p]) / 0.5) for p in pos_of[a])
            den = sum(math.exp(float(s[j]) / 0.5) for j in cand)
            hand += 0.5 * -math.log(num / den) / len(anchors)
    assert got == pytest.approx(hand, abs=1e-10)
    # sampled negatives enlarge the candidate set, reproducibly
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = infonce_minibatch(z1, z2, pos, anchors, 0.5, num_sampled_negatives=10, generator=g())
    b = infonce_minibatch(z1, z2, pos, anchors, 0.5, num_sampled_negatives=10, generator=g())
    assert torch.equal(a, b) and float(a) != pytest.approx(got)
    with pytest.raises(DataError, match="distinct"):
        infonce_minibatch(z1, z2, pos, torch.tensor([1, 1]), 0.5)


# --------------------------------------------------------------------------------------------
def test_gradient_balance_sums_are_equal():
    torch.manual_seed(3)
    n = 50
    z1, z2 = torch.randn(n, 6, dtype=torch.float64), torch.randn(n, 6, dtype=torch.float64)
    for pos in (torch.stack([torch.arange(n), torch.arange(n)]), random_positives(n, 4, 2)):
        out = gradient_balance(z1, z2, pos, 0.3)
        assert torch.allclose(out["pos_grad_sum"], out["neg_grad_sum"], atol=1e-6, rtol=0)


def test_gradient_balance_single_positive_analytic():
    torch.manual_seed(4)
    n, tau = 30, 0.4
    z1, z2 = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
    pos = torch.stack([torch.arange(n), torch.arange(n)])
    out = gradient_balance(z1, z2, pos, tau)
    p = torch.softmax(F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).t() / tau, dim=1)
    p_pos = p.diagonal()
    assert torch.allclose(out["pos_mass"], p_pos)
    assert torch.allclose(out["grad_per_pos"], (1 - p_pos) / tau)  # |-(1 - p_pos)/tau|
    neg = p.masked_fill(torch.eye(n, dtype=torch.bool), 0.0) / tau
    assert torch.allclose(out["neg_grad_max"], neg.max(1).values)
    assert torch.allclose(out["neg_grad_mean"], neg.sum(1) / (n - 1))
    # 29 negatives: the top 1% is one negative
    assert torch.allclose(out["top1pct_neg_share"], neg.max(1).values / neg.sum(1))


def test_gradient_balance_anchor_gradients_and_summary():
    torch.manual_seed(5)
    n, tau = 25, 0.5
    z1 = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, 4, dtype=torch.float64)
    pos = random_positives(n, 3, 3)
    anchors = torch.tensor([0, 7, 9])
    out = gradient_balance(z1, z2, pos, tau, anchors)
    assert torch.equal(out["anchors"], anchors) and z1.grad is None
    # the two parts add up to the full gradient of the one-way loss on the anchor embedding
    s = F.normalize(z1[anchors], dim=1) @ F.normalize(z2, dim=1).t() / tau
    mask = torch.zeros(3, n, dtype=torch.bool)
    for r, a in enumerate(anchors.tolist()):
        mask[r, pos[1][pos[0] == a]] = True
    loss = (torch.logsumexp(s, 1) - torch.logsumexp(s.masked_fill(~mask, -math.inf), 1)).sum()
    g = torch.autograd.grad(loss, s, retain_graph=True)[0] / tau  # dL/ds (cosine)
    (full,) = torch.autograd.grad(loss, z1)
    s_cos = F.normalize(z1[anchors], dim=1) @ F.normalize(z2, dim=1).t()
    (gp,) = torch.autograd.grad(s_cos, z1, g * mask)
    assert torch.allclose(out["anchor_grad_pos_norm"], gp[anchors].norm(dim=1))
    # negative part = full - positive part
    assert torch.allclose(out["anchor_grad_neg_norm"], (full - gp)[anchors].norm(dim=1))
    summary = out["summary"]
    assert summary["num_pos_mean"] == pytest.approx(float(mask.sum(1).double().mean()))
    assert 0 < summary["pos_mass_median"] < 1 and "pos_grad_sum_mean" not in summary


# --------------------------------------------------------------------------------------------
def schema_graph():
    """6 targets; 'author' (4 nodes) and 'subject' (2 nodes); target 5 has no author."""
    rel = {"author": torch.tensor([[0, 0, 1, 2, 2, 2, 3, 4], [0, 1, 1, 2, 3, 0, 3, 2]]),
           "subject": torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 0, 1]])}
    return rel, {"author": 4, "subject": 2}


def test_sample_neighbors():
    g = torch.Generator().manual_seed(0)
    ei = torch.tensor([[0] * 5 + [1] * 2 + [3], [9, 8, 7, 6, 5, 4, 3, 2]])
    kept = sample_neighbors(ei, 3, 4, g)
    assert torch.bincount(kept[0], minlength=4).tolist() == [3, 2, 0, 1]
    orig = set(map(tuple, ei.t().tolist()))
    assert set(map(tuple, kept.t().tolist())) <= orig
    again = sample_neighbors(ei, 3, 4, torch.Generator().manual_seed(0))
    assert torch.equal(kept, again)
    draws = {tuple(sample_neighbors(ei, 3, 4, torch.Generator().manual_seed(s))[1].tolist())
             for s in range(10)}
    assert len(draws) > 1
    with pytest.raises(ConfigError):
        sample_neighbors(ei, 0)


def test_schema_view_shapes_attention_and_sampling():
    torch.manual_seed(6)
    rel, sizes = schema_graph()
    h = torch.randn(6, 8)
    view = SchemaView(8, ["author", "subject"], sample={"author": 1})
    out, att = view(h, rel, sizes, torch.Generator().manual_seed(0), return_attention=True)
    assert out.shape == (6, 8) and torch.isfinite(out).all()
    assert float(att["inter"].sum()) == pytest.approx(1.0)
    ei, alpha = att["intra"]["author"]
    assert torch.bincount(ei[0], minlength=6).tolist() == [1, 1, 1, 1, 1, 0]
    assert torch.allclose(alpha, torch.ones_like(alpha))
    ei, alpha = att["intra"]["subject"]  # not sampled: one subject each
    assert ei.shape[1] == 6
    a = view(h, rel, sizes, torch.Generator().manual_seed(3))
    b = view(h, rel, sizes, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    out.sum().backward()
    assert view.proj["author"].weight.grad is not None
    with pytest.raises(ConfigError):
        SchemaView(8, ["author"], sample={"paper": 2})
    with pytest.raises(DataError):
        view(h, {"author": rel["author"]})
    with pytest.raises(DataError):
        view(h)  # built from type names only: the edges must be passed


def test_schema_view_holds_relations():
    torch.manual_seed(9)
    rel, sizes = schema_graph()
    h = torch.randn(6, 8)
    names_only = SchemaView(8, ["author", "subject"])
    held = SchemaView(8, rel, num_nodes=6)
    held.load_state_dict(names_only.state_dict())  # the edges are not part of the state
    assert torch.allclose(held(h), names_only(h, rel, sizes))
    with pytest.raises(DataError, match="6 target nodes"):
        held(h[:5])


def test_schema_view_by_hand_one_type():
    torch.manual_seed(7)
    rel, sizes = schema_graph()
    h = torch.randn(6, 4)
    view = SchemaView(4, ["author"])
    out, att = view(h, {"author": rel["author"]}, sizes, return_attention=True)
    tgt, nbr = rel["author"]
    # neighbour = projection of the mean embedding of the targets it touches
    mean = torch.stack([h[tgt[nbr == u]].mean(0) for u in range(4)])
    nb = view.proj["author"](mean)
    a = view.att["author"]
    expected = torch.zeros(6, 4)
    for i in range(6):
        us = nbr[tgt == i]
        if us.numel() == 0:
            continue  # no author: the type contributes zero
        w = torch.softmax(F.leaky_relu(h[i] @ a[0] + nb[us] @ a[1], 0.2), 0)
        expected[i] = F.elu((w[:, None] * nb[us]).sum(0))
    assert torch.allclose(out, expected, atol=1e-6)  # one type: inter weight 1
    assert torch.equal(out[5], torch.zeros(4))
    # leave-one-out means: target 0's author 0 touches targets {0, 2} -> only h[2] remains
    loo = SchemaView(4, ["author"], exclude_self=True)
    loo.load_state_dict(view.state_dict())
    out_loo, att = loo(h, {"author": rel["author"]}, sizes, return_attention=True)
    expected = torch.zeros(6, 4)
    for i in range(6):
        us = nbr[tgt == i]
        if us.numel() == 0:
            continue
        means = []
        for u in us.tolist():
            others = [j for j in tgt[nbr == u].tolist() if j != i]
            means.append(h[others].mean(0) if others else torch.zeros(4))
        nb_i = view.proj["author"](torch.stack(means))
        w = torch.softmax(F.leaky_relu(h[i] @ a[0] + nb_i @ a[1], 0.2), 0)
        expected[i] = F.elu((w[:, None] * nb_i).sum(0))
    assert torch.allclose(out_loo, expected, atol=1e-6) and not torch.allclose(out_loo, out)


def test_fusion_view_and_projection_head():
    h = torch.randn(5, 3)

    class Out:
        pass

    o = Out()
    o.h = h
    assert FusionView()(o) is h and FusionView()(h) is h
    head = ProjectionHead(3, 7, 2)
    assert head(h).shape == (5, 2)
    assert [type(m).__name__ for m in head] == ["Linear", "ELU", "Linear"]
    assert ProjectionHead(3)(h).shape == (5, 3)


# --------------------------------------------------------------------------------------------
def test_second_stage_gcn_matches_pyg():
    torch.manual_seed(8)
    n, c = 10, 4
    eid = {}
    for m, p in (("pap", 0.3), ("psp", 0.5)):
        upper = torch.triu(torch.rand(n, n) < p, 1)
        eid[m] = (upper | upper.t() | torch.eye(n, dtype=torch.bool)).nonzero().t()
    x = torch.randn(n, c)
    gcn = SecondStageGCN(c, num_layers=2, metapaths=["pap", "psp"])
    for bias in gcn.biases:
        torch.nn.init.normal_(bias)
    refs = [{m: GCNConv(c, c, add_self_loops=False) for m in eid} for _ in range(2)]
    for layer in range(2):
        for k, m in enumerate(eid):
            refs[layer][m].lin.weight.data.copy_(gcn.lins[layer][m].weight)
            refs[layer][m].bias.data.copy_(gcn.biases[layer][k])
    hidden = sum(refs[0][m](x, eid[m]) for m in eid) / 2
    expected = sum(refs[1][m](F.elu(hidden), eid[m]) for m in eid) / 2
    assert torch.allclose(gcn(x, eid), expected, atol=1e-5)
    # the normalisation is cached per meta-path and rebuilt for a new edge_index
    cached = gcn.normalized_adjacency("pap", eid["pap"], n)[0]
    gcn(x, eid)
    assert gcn.normalized_adjacency("pap", eid["pap"], n)[0] is cached
    other = eid["pap"].clone()
    assert gcn.normalized_adjacency("pap", other, n)[0] is not cached
    again = gcn.normalized_adjacency("pap", other, n)[0]
    other.add_(0)  # an in-place change invalidates the cache
    assert gcn.normalized_adjacency("pap", other, n)[0] is not again
    # gradients through the cached transpose equal PyG's
    xg = x.clone().requires_grad_(True)
    gcn(xg, eid).square().sum().backward()
    xr = x.clone().requires_grad_(True)
    hid = sum(refs[0][m](xr, eid[m]) for m in eid) / 2
    (sum(refs[1][m](F.elu(hid), eid[m]) for m in eid) / 2).square().sum().backward()
    assert torch.allclose(xg.grad, xr.grad, atol=1e-5)


def test_second_stage_gcn_borrows_the_encoder_plan():
    # a meta-path graph as data.py stores it (symmetric, sorted by (destination, source), no
    # duplicate) shares the encoder's int32 arrays and gives gcn_norm's operator bitwise
    torch.manual_seed(11)
    n = 30
    upper = torch.triu(torch.rand(n, n) < 0.3, 1)
    ei = (upper | upper.t() | torch.eye(n, dtype=torch.bool)).nonzero().flip(1).t().contiguous()
    gcn = SecondStageGCN(4, metapaths=["m", "d"])
    adj, adj_t = gcn.normalized_adjacency("m", ei, n)
    assert adj_t is adj  # symmetric: one operator
    assert adj.col_indices().data_ptr() == csr_plan(ei, n).col.data_ptr()
    norm_ei, w = gcn_norm(ei, None, n, add_self_loops=False)
    ref = to_torch_csr_tensor(norm_ei.flip(0), w, (n, n))  # the PyG route
    assert torch.equal(adj.crow_indices().long(), ref.crow_indices())
    assert torch.equal(adj.col_indices().long(), ref.col_indices())
    assert torch.equal(adj.values(), ref.values())
    # a duplicate edge counts twice in the degrees and is summed, as gcn_norm does
    dup = torch.cat([ei[:, :1], ei], dim=1)
    norm_ei, w = gcn_norm(dup, None, n, add_self_loops=False)
    dense = torch.zeros(n, n).index_put_((norm_ei[1], norm_ei[0]), w, accumulate=True)
    torch.testing.assert_close(gcn.normalized_adjacency("d", dup, n)[0].to_dense(), dense)


def test_second_stage_gcn_shared_weights():
    torch.manual_seed(10)
    n, c = 8, 3
    eid = {m: torch.cat([torch.randint(n, (2, 12)), torch.arange(n).repeat(2, 1)], 1)
           for m in ("a", "b")}
    eid = {m: torch.unique(torch.cat([e, e.flip(0)], 1), dim=1) for m, e in eid.items()}
    x = torch.randn(n, c)
    gcn = SecondStageGCN(c, 1)
    torch.nn.init.normal_(gcn.biases[0])
    ref = GCNConv(c, c, add_self_loops=False)
    ref.lin.weight.data.copy_(gcn.lins[0]["shared"].weight)
    ref.bias.data.copy_(gcn.biases[0][0])
    expected = (ref(x, eid["a"]) + ref(x, eid["b"])) / 2
    assert torch.allclose(gcn(x, eid), expected, atol=1e-5)


def test_second_stage_gcn_depth_zero_is_identity():
    x = torch.randn(5, 3)
    gcn = SecondStageGCN(3, 0, ["pap"])
    assert gcn(x, {"pap": torch.zeros(2, 0, dtype=torch.long)}) is x
    assert sum(p.numel() for p in gcn.parameters()) == 0
    with pytest.raises(ConfigError):
        SecondStageGCN(3, -1)


def test_infonce_backends_agree_and_fused_refuses_where_it_does_not_apply():
    torch.manual_seed(0)
    z1, z2 = torch.randn(2, 40, 8, dtype=torch.float64).unbind(0)
    pos = torch.stack([torch.arange(40), torch.arange(40).roll(1)])
    ref = infonce(z1, z2, pos, 0.5, backend="reference")
    torch.testing.assert_close(infonce(z1, z2, pos, 0.5, backend="fused"), ref,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(infonce(z1, z2, pos, 0.5), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="fused"):
        infonce(z1, z2, pos, 0.5, negatives="debiased", backend="fused")
    with pytest.raises(ConfigError, match="backend"):
        infonce(z1, z2, pos, 0.5, backend="fast")
