"""Tests of the generative channel: SCE, masking, schedule, decoders, feature and edge
reconstruction.

Most tests use a tiny local stand-in encoder with the shared encoder's call signature and output
fields (a linear projection, mean aggregation per meta-path, learned semantic weights), so the
channel is checked independently of hetcrf_lite.encoder; ``test_with_han_encoder`` runs the real
HANEncoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch_geometric.nn import GATConv
from torch_geometric.utils import scatter

from hetcrf_lite.errors import ConfigError, DataError
from hetcrf_lite.generative import (DecoderGATConv, EdgeReconstruction, FeatureReconstruction,
                                    HANDecoder, MaskSchedule, _segment_sce, drop_edges,
                                    mask_features, sce_loss)
from hetcrf_lite.sparse import csr_plan

MPS = ["pap", "psp"]


@dataclass
class StandInOutput:
    h: torch.Tensor
    z: dict
    node_attention: dict | None
    semantic_attention: torch.Tensor | None


class StandInEncoder(nn.Module):
    """GCN-like mixing per meta-path plus learned semantic weights (test-only stand-in)."""

    def __init__(self, in_channels: int, hidden: int, metapaths: list[str],
                 semantic: bool = True) -> None:
        super().__init__()
        self.lin = nn.Linear(in_channels, hidden)
        self.metapaths, self.semantic = metapaths, semantic
        self.w = nn.Parameter(torch.zeros(len(metapaths)))

    def forward(self, x, edge_index_dict):
        xw = torch.sparse.mm(x, self.lin.weight.t()) + self.lin.bias if x.is_sparse else self.lin(x)
        z = {m: torch.tanh(scatter(xw[e[0]], e[1], 0, xw.shape[0], "mean"))
             for m, e in edge_index_dict.items()}
        beta = torch.softmax(self.w, 0) if self.semantic else None
        weights = beta if beta is not None else torch.full((len(z),), 1 / len(z))
        h = sum(b * z[m] for b, m in zip(weights, self.metapaths))
        return StandInOutput(h, z, None, beta)


def random_graph(n: int, p: float, seed: int) -> torch.Tensor:
    """Symmetric random graph with self-loops, as meta-path graphs are."""
    g = torch.Generator().manual_seed(seed)
    upper = torch.triu(torch.rand(n, n, generator=g) < p, diagonal=1)
    adj = upper | upper.t() | torch.eye(n, dtype=torch.bool)
    return adj.nonzero().t().contiguous()


@pytest.fixture
def toy():
    torch.manual_seed(0)
    n, f = 12, 6
    x = torch.rand(n, f)
    eid = {"pap": random_graph(n, 0.3, 1), "psp": random_graph(n, 0.5, 2)}
    return x, eid


# --------------------------------------------------------------------------------------------
def test_sce_loss_by_hand():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    rows = [0.0, (1 - 1 / math.sqrt(2)) ** 2, 1.0]
    assert torch.allclose(sce_loss(x, y, gamma=2, reduction="none"), torch.tensor(rows))
    assert math.isclose(float(sce_loss(x, y, gamma=2)), sum(rows) / 3, rel_tol=1e-6)
    assert math.isclose(float(sce_loss(x, y, gamma=2, reduction="sum")), sum(rows), rel_tol=1e-6)
    # scale invariant, and an all-zero target row costs a constant 1
    assert torch.allclose(sce_loss(5 * x, y), sce_loss(x, y))
    zero = sce_loss(x[:1], torch.zeros(1, 2), reduction="none")
    assert torch.allclose(zero, torch.ones(1))
    with pytest.raises(ConfigError, match="gamma"):
        sce_loss(x, y, gamma=0.5)
    with pytest.raises(DataError):
        sce_loss(x, y[:2])


def test_mask_features_shares_and_token():
    n, f = 100, 4
    x = torch.arange(n * f, dtype=torch.float).view(n, f)  # distinct rows
    token = torch.full((1, f), -1.0, requires_grad=True)
    g = torch.Generator().manual_seed(3)
    out, masked, tok = mask_features(x, 0.5, token, leave_unchanged=0.1, replace_rate=0.2,
                                     generator=g)
    assert masked.numel() == 50 and tok.numel() == 35
    assert torch.equal(masked, masked.sort().values) and bool(torch.isin(tok, masked).all())
    unmasked = torch.ones(n, dtype=torch.bool)
    unmasked[masked] = False
    assert torch.equal(out[unmasked], x[unmasked])
    assert bool((out[tok] == -1).all())
    others = masked[~torch.isin(masked, tok)]  # 5 unchanged + 10 replaced
    assert others.numel() == 15
    same = (out[others] == x[others]).all(1)
    row_of_x = (out[others][:, None, :] == x[None]).all(-1).any(1)
    assert bool(row_of_x.all()) and int(same.sum()) >= 5  # a donor may be the node itself
    out.sum().backward()
    assert torch.allclose(token.grad, torch.full((1, f), 35.0))
    # same seed, same mask
    again = mask_features(x, 0.5, token, 0.1, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], out) and torch.equal(again[1], masked)


def test_mask_features_sparse_and_errors():
    n = 10
    x_sparse = torch.eye(n).to_sparse()
    token = torch.zeros(1, n)
    a = mask_features(x_sparse, 0.4, token, generator=torch.Generator().manual_seed(0))
    b = mask_features(torch.eye(n), 0.4, token, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(DataError, match="densify_limit"):
        mask_features(x_sparse, 0.4, token, densify_limit=50)
    with pytest.raises(ConfigError, match="mask_rate"):
        mask_features(torch.eye(n), 1.0, token)
    with pytest.raises(ConfigError):
        mask_features(torch.eye(n), 0.5, token, leave_unchanged=0.6, replace_rate=0.6)
    with pytest.raises(ConfigError, match="mask_channels"):
        mask_features(torch.eye(n), 0.5, torch.zeros(1, 3))


def test_mask_schedule():
    s = MaskSchedule(0.5, 0.005, 0.8)
    assert s(0) == 0.5 and math.isclose(s(10), 0.55) and s(1000) == 0.8
    assert MaskSchedule(0.4)(99) == 0.4
    for bad in [(1.0,), (0.5, -0.1, 0.8), (0.5, 0.1, 0.4), (0.5, 0.1, 1.0)]:
        with pytest.raises(ConfigError):
            MaskSchedule(*bad)


@pytest.mark.parametrize("heads", [1, 2])
def test_decoder_gat_equals_pyg_gat(heads):
    torch.manual_seed(0)
    n, c_in, c_out = 9, 5, 7
    h, ei = torch.randn(n, c_in), random_graph(n, 0.4, 5)
    ref = GATConv(c_in, c_out, heads=heads, concat=False, add_self_loops=False)
    nn.init.normal_(ref.bias)
    mine = DecoderGATConv(c_in, c_out, heads=heads)
    w = ref.lin.weight.view(heads, c_out, c_in)  # [heads, out, in]
    with torch.no_grad():
        # GAT's W^k factored as W^k V^k with V^k = I: a^T W h becomes (W^T a)^T h
        mine.gat.lin.weight.copy_(torch.eye(c_in).repeat(heads, 1))
        mine.gat.att_src.copy_(torch.einsum("ko,koi->ki", ref.att_src[0], w)[None])
        mine.gat.att_dst.copy_(torch.einsum("ko,koi->ki", ref.att_dst[0], w)[None])
        mine.lin.weight.copy_(torch.cat(list(w), dim=1))
        mine.lin.bias.copy_(ref.bias)
    assert torch.allclose(mine(h, ei), ref(h, ei), atol=1e-5)
    idx = torch.tensor([4, 1])
    assert torch.allclose(mine(h, ei, index=idx), ref(h, ei)[idx], atol=1e-5)


def test_han_decoder_rows_and_mean_fusion(toy):
    _, eid = toy
    h = torch.randn(12, 8)
    dec = HANDecoder(8, 6, MPS, fusion="mean")
    full = dec(h, eid)
    assert full.shape == (12, 6)
    by_hand = (dec.convs["pap"](h, eid["pap"]) + dec.convs["psp"](h, eid["psp"])) / 2
    assert torch.allclose(full, by_hand, atol=1e-6)
    sem = HANDecoder(8, 6, MPS)
    idx = torch.tensor([0, 5, 7])
    assert torch.allclose(sem(h, eid, index=idx), sem(h, eid)[idx], atol=1e-6)
    with pytest.raises(ConfigError):
        HANDecoder(8, 6, MPS, fusion="max")


# --------------------------------------------------------------------------------------------
def test_feature_reconstruction_forward_equals_split_steps(toy):
    x, eid = toy
    torch.manual_seed(1)
    enc = StandInEncoder(6, 8, MPS)
    rec = FeatureReconstruction(6, 8, MPS, mask_rate=MaskSchedule(0.3, 0.1, 0.6), gamma=2.0)
    loss, info = rec(enc, x, eid, epoch=2, generator=torch.Generator().manual_seed(7))
    assert info["mask_rate"] == pytest.approx(0.5) and info["num_masked"] == 6
    xm, masked, _ = rec.corrupt(x, epoch=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(xm, rec.corrupt(x, 0.5, generator=torch.Generator().manual_seed(7))[0])
    with pytest.raises(ConfigError, match="epoch"):
        rec(enc, x, eid, epoch=0.5)
    again = rec.loss_from(enc(xm, eid), x, masked, eid)
    assert torch.allclose(loss, again)
    loss.backward()
    for name, p in [("token", rec.mask_token), ("enc_to_dec", rec.enc_to_dec.weight),
                    ("encoder", enc.lin.weight)]:
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_feature_reconstruction_remasks(toy):
    x, eid = toy
    torch.manual_seed(2)
    enc = StandInEncoder(6, 8, MPS)
    rec = FeatureReconstruction(6, 8, MPS, mask_rate=0.5)
    xm, masked, _ = rec.corrupt(x, generator=torch.Generator().manual_seed(0))
    out = enc(xm, eid)
    changed = StandInOutput(out.h.index_fill(0, masked, 123.0), out.z, None, None)
    same = rec.loss_from(changed, x, masked, eid)
    assert torch.allclose(rec.loss_from(out, x, masked, eid), same)


def test_feature_reconstruction_sparse_equals_dense_and_projection(toy):
    _, eid = toy
    n = 12
    torch.manual_seed(3)
    enc = StandInEncoder(n, 8, MPS)
    rec = FeatureReconstruction(n, 8, MPS, mask_rate=0.5)
    dense = rec(enc, torch.eye(n), eid, generator=torch.Generator().manual_seed(4))[0]
    sparse = rec(enc, torch.eye(n).to_sparse(), eid, generator=torch.Generator().manual_seed(4))[0]
    assert torch.allclose(dense, sparse, atol=1e-6)
    # mask in a projected space: the token has the projection's width
    proj = nn.Linear(n, 5)
    enc5 = StandInEncoder(5, 8, MPS)
    rec5 = FeatureReconstruction(n, 8, MPS, mask_channels=5)
    sp = lambda x: torch.sparse.mm(x, proj.weight.t()) + proj.bias  # noqa: E731
    loss, _ = rec5(enc5, torch.eye(n).to_sparse(), eid, input_proj=sp)
    loss.backward()
    assert rec5.mask_token.shape == (1, 5) and rec5.mask_token.grad is not None
    with pytest.raises(ConfigError, match="mask_channels"):
        rec(enc5, torch.eye(n), eid, input_proj=proj)


def test_feature_reconstruction_learns(toy):
    x, eid = toy
    torch.manual_seed(4)
    enc = StandInEncoder(6, 16, MPS)
    rec = FeatureReconstruction(6, 16, MPS, mask_rate=0.3, replace_rate=0.0)
    opt = torch.optim.Adam([*enc.parameters(), *rec.parameters()], lr=0.02)

    def fixed_loss():
        with torch.no_grad():
            return float(rec(enc, x, eid, generator=torch.Generator().manual_seed(0))[0])

    start = fixed_loss()
    for step in range(60):
        opt.zero_grad()
        rec(enc, x, eid, generator=torch.Generator().manual_seed(step))[0].backward()
        opt.step()
    assert fixed_loss() < 0.7 * start


# --------------------------------------------------------------------------------------------
def test_drop_edges():
    ei = random_graph(200, 0.05, 9)
    loops = ei[0] == ei[1]
    kept, dropped = drop_edges(ei, 0.5, torch.Generator().manual_seed(0))
    as_set = set(map(tuple, kept.t().tolist()))
    gone = set(map(tuple, dropped.t().tolist()))
    assert as_set | gone == set(map(tuple, ei.t().tolist())) and not as_set & gone
    assert kept.shape[1] + dropped.shape[1] == ei.shape[1]
    assert all((i, i) in as_set for i in range(200))  # self-loops kept
    assert all((j, i) in as_set for i, j in as_set)  # still symmetric
    frac = 1 - (kept.shape[1] - 200) / (ei.shape[1] - 200)
    assert abs(frac - 0.5) < 0.05
    again, _ = drop_edges(ei, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(kept, again)
    assert set(map(tuple, drop_edges(ei, 0.0)[0].t().tolist())) == set(map(tuple, ei.t().tolist()))
    directed, ddrop = drop_edges(ei, 0.5, torch.Generator().manual_seed(1), symmetric=False,
                                 keep_self_loops=False)
    as_set = set(map(tuple, directed.t().tolist()))
    assert not all((j, i) in as_set for i, j in as_set)
    assert not all((i, i) in as_set for i in range(200)) and ddrop.shape[1] > 0
    with pytest.raises(ConfigError):
        drop_edges(ei, 1.0)
    with pytest.raises(DataError, match="symmetric"):
        drop_edges(torch.tensor([[0, 1], [1, 2]]), 0.5)


def test_drop_edges_precomputed_split_same_result():
    from hetcrf_lite.generative import SymmetricSplit
    ei = random_graph(60, 0.2, 4)
    split = SymmetricSplit(ei)
    assert 2 * split.pairs.shape[1] + split.self_loops.shape[1] == ei.shape[1]
    assert bool((split.pairs[0] < split.pairs[1]).all())
    assert bool((split.self_loops[0] == split.self_loops[1]).all())
    for keep_loops in (True, False):
        plain = drop_edges(ei, 0.3, torch.Generator().manual_seed(2), keep_loops)
        given = drop_edges(ei, 0.3, torch.Generator().manual_seed(2), keep_loops, split=split)
        assert all(torch.equal(a, b) for a, b in zip(plain, given))
    with pytest.raises(DataError, match="split"):  # a split of another graph
        drop_edges(ei, 0.3, split=SymmetricSplit(random_graph(60, 0.1, 5)))
    with pytest.raises(ConfigError):
        drop_edges(ei, 0.3, symmetric=False, split=split)


def test_edge_reconstruction_caches_the_split_per_graph(toy, monkeypatch):
    from hetcrf_lite import generative
    _, eid = toy
    calls = []
    class CountingSplit(generative.SymmetricSplit):
        def __init__(self, edge_index):
            calls.append(edge_index)
            super().__init__(edge_index)

    monkeypatch.setattr(generative, "SymmetricSplit", CountingSplit)
    rec = EdgeReconstruction(8, MPS, drop_rate=0.4)

    def uncached(graphs, seed):  # the same draws, split afresh by drop_edges itself
        g = torch.Generator().manual_seed(seed)
        return {m: drop_edges(graphs[m], 0.4, g)[0] for m in MPS}

    for seed in (0, 1, 0):
        before = len(calls)
        got = rec.corrupt(eid, torch.Generator().manual_seed(seed))
        assert len(calls) - before == (2 if seed == 0 and before == 0 else 0)  # then cached
        want = uncached(eid, seed)
        assert all(torch.equal(got[m], want[m]) for m in MPS)
    # another graph of the same size (nodes relabelled): not served from the cache
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    relabelled = {m: perm[e] for m, e in eid.items()}
    assert relabelled["pap"].shape == eid["pap"].shape
    got = rec.corrupt(relabelled, torch.Generator().manual_seed(0))
    want = uncached(relabelled, 0)
    assert all(torch.equal(got[m], want[m]) for m in MPS)
    assert not torch.equal(got["pap"], rec.corrupt(eid, torch.Generator().manual_seed(0))["pap"])
    # a subgraph, and the same tensor modified in place, are split again too
    sub = {m: e[:, (e < 10).all(0)] for m, e in eid.items()}
    got = rec.corrupt(sub, torch.Generator().manual_seed(1))
    assert all(torch.equal(got[m], uncached(sub, 1)[m]) for m in MPS)
    rec.corrupt(eid)  # the cache holds one graph per meta-path: eid again
    before = len(calls)
    eid["psp"].copy_(perm[eid["psp"]])
    got = rec.corrupt(eid, torch.Generator().manual_seed(1))
    assert len(calls) - before == 1  # only psp changed
    assert all(torch.equal(got[m], uncached(eid, 1)[m]) for m in MPS)


def test_segment_sce_equals_dense_rows():
    torch.manual_seed(0)
    pred, target = torch.randn(4, 6), (torch.rand(4, 6) < 0.5).float()
    target[:, 0] = 1.0
    seg = torch.arange(4).repeat_interleave(6)
    got = _segment_sce(pred.reshape(-1), target.reshape(-1), seg, 4, gamma=2.0)
    assert torch.allclose(got, sce_loss(pred, target, 2.0, "none"), atol=1e-6)


def test_edge_decoder_centring_removes_the_shared_component(toy):
    x, eid = toy
    torch.manual_seed(5)
    out = StandInEncoder(6, 8, MPS)(x, eid)
    centred_rec = EdgeReconstruction(8, MPS, decoder="linear")
    plain_rec = EdgeReconstruction(8, MPS, decoder="linear", center=False)
    plain_rec.load_state_dict(centred_rec.state_dict())
    centred, plain = centred_rec.decode(out, eid), plain_rec.decode(out, eid)
    for m in MPS:
        assert torch.allclose(centred[m].mean(0), torch.zeros(8), atol=1e-6)
        assert torch.allclose(centred[m], plain[m] - plain[m].mean(0), atol=1e-6)
        assert plain[m].mean(0).abs().max() > 1e-3  # there was a shared part to remove


def test_edge_reconstruction_dense_by_hand(toy):
    x, eid = toy
    torch.manual_seed(5)
    enc = StandInEncoder(6, 8, MPS)
    rec = EdgeReconstruction(8, MPS, decoder="linear", gamma=1.5)
    out = enc(x, eid)
    loss, info = rec.loss_from(out, eid, eid)
    beta = out.semantic_attention.detach()
    expected = 0.0
    for b, m in zip(beta, MPS):
        d = rec.decoders[m](rec.enc_to_dec(out.h))
        d = d - d.mean(0)  # centred before the inner products (the default)
        adj = torch.zeros(12, 12)
        adj[eid[m][0], eid[m][1]] = 1.0
        cos = torch.nn.functional.cosine_similarity(d @ d.t(), adj, dim=1)
        expected = expected + b * ((1 - cos) ** 1.5).mean()
    assert info["all_rows"] and torch.allclose(loss, expected, atol=1e-6)
    # detach_beta decides whether the weights themselves pass gradient to the attention
    loss.backward()
    grad_detached = enc.w.grad.clone()
    enc.zero_grad()
    rec_live = EdgeReconstruction(8, MPS, decoder="linear", gamma=1.5, detach_beta=False)
    rec_live.load_state_dict(rec.state_dict())
    rec_live.loss_from(enc(x, eid), eid, eid)[0].backward()
    assert not torch.allclose(enc.w.grad, grad_detached)


def test_edge_full_rows_match_materialised_matrix_with_gradients():
    torch.manual_seed(11)
    n = 10
    ei = random_graph(n, 0.3, 3)
    ei = ei[:, ei[0] != 9]  # node 9: an all-zero target row
    ei = torch.cat([ei, ei[:, :3]], 1)  # duplicate edges count once in a binary adjacency
    rec = EdgeReconstruction(4, ["m"], gamma=2.0).double()
    d = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    fast = rec._full_loss("m", d, ei)
    (g_fast,) = torch.autograd.grad(fast, d)
    adj = torch.zeros(n, n, dtype=torch.float64)
    adj[ei[0], ei[1]] = 1.0
    slow = sce_loss(d @ d.t(), adj, gamma=2.0)  # the literal N x N formula
    (g_slow,) = torch.autograd.grad(slow, d)
    assert torch.allclose(fast, slow, atol=1e-12) and torch.allclose(g_fast, g_slow, atol=1e-10)


def test_edge_reconstruction_weights(toy):
    x, eid = toy
    torch.manual_seed(6)
    enc = StandInEncoder(6, 8, MPS)
    rec = EdgeReconstruction(8, MPS)
    out = enc(x, eid)
    one_hot = StandInOutput(out.h, out.z, None, torch.tensor([1.0, 0.0]))
    loss, info = rec.loss_from(one_hot, eid, eid)
    assert math.isclose(loss.item(), info["per_metapath"]["pap"], rel_tol=1e-6)
    gcn_like = StandInOutput(out.h, out.z, None, None)
    loss, info = rec.loss_from(gcn_like, eid, eid)
    mean = sum(info["per_metapath"].values()) / 2
    assert math.isclose(loss.item(), mean, rel_tol=1e-6)
    with pytest.raises(DataError):
        rec.loss_from(StandInOutput(out.h, out.z, None, torch.ones(3) / 3), eid, eid)


def test_edge_reconstruction_sampled_equals_dense_when_all_sampled(toy):
    x, eid = toy
    torch.manual_seed(7)
    enc = StandInEncoder(6, 8, MPS)
    dense = EdgeReconstruction(8, MPS, source="z", gamma=2.0)
    # 12 nodes, every row, 500 draws per edge: every non-edge is drawn (miss prob ~ 1e-29)
    sampled = EdgeReconstruction(8, MPS, source="z", gamma=2.0, dense_threshold=0,
                                 num_rows=12, neg_ratio=500)
    sampled.load_state_dict(dense.state_dict())
    out = enc(x, eid)
    a, _ = dense.loss_from(out, eid, eid)
    b, info = sampled.loss_from(out, eid, eid, torch.Generator().manual_seed(0))
    assert not info["all_rows"] and torch.allclose(a, b, atol=1e-6)
    # a real sample: fewer rows, few negatives; deterministic and differentiable
    small = EdgeReconstruction(8, MPS, dense_threshold=0, num_rows=4, neg_ratio=1.0)
    l1, _ = small.loss_from(out, eid, eid, torch.Generator().manual_seed(1))
    l2, _ = small.loss_from(out, eid, eid, torch.Generator().manual_seed(1))
    assert torch.equal(l1, l2) and torch.isfinite(l1)
    l1.backward()
    assert enc.lin.weight.grad is not None


def test_edge_reconstruction_forward(toy):
    x, eid = toy
    torch.manual_seed(8)
    enc = StandInEncoder(6, 8, MPS)
    rec = EdgeReconstruction(8, MPS, drop_rate=0.5)
    loss, info = rec(enc, x, eid, torch.Generator().manual_seed(0))
    assert all(info["num_visible_edges"][m] < eid[m].shape[1] for m in MPS)
    visible = rec.corrupt(eid, torch.Generator().manual_seed(0))
    again, _ = rec.loss_from(enc(x, visible), eid, visible)
    assert torch.allclose(loss, again)
    for bad in [dict(decoder="mlp"), dict(source="x"), dict(gamma=0.9), dict(drop_rate=1.0)]:
        with pytest.raises(ConfigError):
            EdgeReconstruction(8, MPS, **bad)


def test_with_han_encoder(toy):
    encoder = pytest.importorskip("hetcrf_lite.encoder")
    x, eid = toy
    torch.manual_seed(9)
    enc = encoder.HANEncoder(6, 8, MPS)
    feat = FeatureReconstruction(6, 8, MPS)
    edge = EdgeReconstruction(8, MPS)
    g = torch.Generator().manual_seed(0)
    total = feat(enc, x, eid, generator=g)[0] + edge(enc, x, eid, generator=g)[0]
    total.backward()
    assert torch.isfinite(total)


# --------------------------------------------------------------------------------------------
# Sparse / one-hot features: [MASK] column, identity detection, Gram-matrix SCE (issue #6)
# --------------------------------------------------------------------------------------------
from hetcrf_lite.data import identity_features  # noqa: E402
from hetcrf_lite.data import is_identity  # noqa: E402
from hetcrf_lite.generative import mask_sparse_features, with_token_column  # noqa: E402


def _old_feature_loss(rec, enc, x, eid, rate, seed):
    """The dense feature loss exactly as the code before the sparse / one-hot paths computed it:
    GraphMAE's draws inline, token rows, every masked row decoded F wide, SCE."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    num_mask = int(rate * n)
    masked = torch.randperm(n, generator=g)[:num_mask]
    n_keep, n_rep = int(rec.leave_unchanged * num_mask), int(rec.replace_rate * num_mask)
    n_tok = num_mask - n_keep - n_rep
    order = torch.randperm(num_mask, generator=g)
    token_idx, replaced = masked[order[:n_tok]], masked[order[n_tok:n_tok + n_rep]]
    donors = torch.randperm(n, generator=g)[:n_rep]
    xm = x.index_put((replaced,), x[donors])
    xm = xm.index_put((token_idx,), rec.mask_token.expand(n_tok, -1))
    masked = masked.sort().values
    h = rec.enc_to_dec(enc(xm, eid).h).index_fill(0, masked, 0.0)
    return sce_loss(rec.decoder(h, eid, index=masked), x[masked], rec.gamma)


def test_dense_feature_loss_unchanged_from_the_old_path(toy):
    x, eid = toy
    torch.manual_seed(5)
    enc = StandInEncoder(6, 8, MPS)
    rec = FeatureReconstruction(6, 8, MPS, leave_unchanged=0.2, replace_rate=0.3, gamma=2.0)
    with torch.no_grad():
        rec.mask_token.normal_()  # a non-zero token: token rows must land where they did
    for rate, seed in [(0.5, 0), (0.75, 3)]:
        new = rec(enc, x, eid, rate, generator=torch.Generator().manual_seed(seed))[0]
        assert torch.equal(new, _old_feature_loss(rec, enc, x, eid, rate, seed))


def test_is_identity():
    x = identity_features(5)
    assert is_identity(x) and not is_identity(x.to_dense())
    assert is_identity(with_token_column(x), extra_columns=1)
    assert not is_identity(with_token_column(x))
    ids = torch.arange(5)
    assert is_identity(torch.sparse_coo_tensor(torch.stack([ids.flip(0), ids.flip(0)]),
                                               torch.ones(5), (5, 5)))  # uncoalesced order
    assert not is_identity(torch.sparse_coo_tensor(torch.stack([ids, ids.roll(1)]),
                                                   torch.ones(5), (5, 5)))  # a permutation
    assert not is_identity(torch.sparse_coo_tensor(torch.stack([ids, ids]), torch.full((5,), 2.0),
                                                   (5, 5)))
    assert not is_identity(torch.eye(5, 6).to_sparse())  # an empty extra column not asked for
    extra = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 1, 1, 2, 3, 4]])
    assert not is_identity(torch.sparse_coo_tensor(extra, torch.ones(6), (5, 5)))


@pytest.mark.parametrize("kind", ["identity", "bag_of_words"])
@pytest.mark.parametrize("leave, replace", [(0.0, 0.1), (0.2, 0.3)])
def test_mask_sparse_features_equals_dense_masking(kind, leave, replace):
    n = 40
    if kind == "identity":
        feats = identity_features(n)
    else:
        g = torch.Generator().manual_seed(1)
        dense = torch.rand(n, 7, generator=g) * (torch.rand(n, 7, generator=g) < 0.3)
        dense[3] = 0.0  # an empty row
        feats = dense.to_sparse()
    x = with_token_column(feats)
    c = x.shape[1]
    gen = torch.Generator().manual_seed(5)
    out, masked, tok = mask_sparse_features(x, 0.6, leave, replace, gen)
    token = torch.zeros(1, c)
    token[0, c - 1] = 1.0  # the dense mask of the same draws, with e_c as the token
    ref, ref_masked, ref_tok = mask_features(x.to_dense(), 0.6, token, leave, replace,
                                             torch.Generator().manual_seed(5))
    assert out.is_sparse and out.is_coalesced() and out.shape == (n, c)
    assert torch.equal(out.to_dense(), ref)
    assert torch.equal(masked, ref_masked) and torch.equal(tok, ref_tok) and masked.numel() == 24
    assert torch.equal(out.coalesce().indices(), out.to_dense().nonzero().t())  # built sorted
    with pytest.raises(DataError, match="MASK"):  # no [MASK] column: the last one is used
        mask_sparse_features(identity_features(n), 0.5)
    with pytest.raises(DataError, match="sparse"):
        mask_sparse_features(x.to_dense(), 0.5)
    with pytest.raises(ConfigError, match="mask_rate"):
        mask_sparse_features(x, 1.0)


def test_padded_clean_input_encodes_as_the_identity(toy):
    encoder = pytest.importorskip("hetcrf_lite.encoder")
    _, eid = toy
    n = 12
    torch.manual_seed(6)
    plain = encoder.HANEncoder(n, 8, MPS, heads=2)
    padded = encoder.HANEncoder(n + 1, 8, MPS, heads=2)
    state = plain.state_dict()
    state["proj.weight"] = torch.cat([state["proj.weight"], torch.randn(8, 1)], dim=1)
    padded.load_state_dict(state)
    plain.eval(), padded.eval()
    x = identity_features(n)
    assert torch.allclose(plain(x, eid).h, padded(with_token_column(x), eid).h, atol=1e-6)


@pytest.mark.parametrize("heads, fusion, gamma", [(1, "semantic", 1.0), (2, "mean", 2.0),
                                                  (2, "semantic", 3.0)])
def test_one_hot_loss_equals_dense_sce_with_gradients(toy, heads, fusion, gamma):
    _, eid = toy
    n = 12
    torch.manual_seed(11)
    enc = StandInEncoder(n + 1, 8, MPS).double()
    rec = FeatureReconstruction(n, 8, MPS, heads=heads, fusion=fusion, gamma=gamma,
                                token_column=True).double()
    with torch.no_grad():  # non-zero decoder biases exercise the b terms of the norm
        for conv in rec.decoder.convs.values():
            conv.lin.bias.normal_()
    x = with_token_column(identity_features(n).double())
    xm, masked, _ = rec.corrupt(x, 0.5, generator=torch.Generator().manual_seed(2))
    calls = []
    rec.decoder.register_forward_hook(lambda *_: calls.append(1))
    params = [*enc.parameters(), *rec.parameters()]
    fast = rec.loss_from(enc(xm, eid), x, masked, eid)
    assert not calls, "the one-hot path must not decode F-wide rows"
    h = rec.enc_to_dec(enc(xm, eid).h).index_fill(0, masked, 0.0)
    target = torch.eye(n, dtype=torch.float64)[masked]
    dense = sce_loss(rec.decoder(h, eid, index=masked), target, gamma)
    assert float(dense.detach()) > 0.1 and abs(float(fast.detach() - dense.detach())) < 1e-6
    got = torch.autograd.grad(fast, params, allow_unused=True)
    ref = torch.autograd.grad(dense, params, allow_unused=True)
    assert sum(g is not None for g in ref) >= 6
    for g, r in zip(got, ref):
        assert (g is None) == (r is None)
        if r is not None:
            assert torch.allclose(g, r, atol=1e-6, rtol=0)
    # the unpadded identity as the target takes the same path
    unpadded = rec.loss_from(enc(xm, eid), identity_features(n).double(), masked, eid)
    assert abs(float(unpadded.detach() - dense.detach())) < 1e-6
    # rows of an identity (a node subset, another order): one-hot targets e_{perm[i]}
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    rows = torch.sparse_coo_tensor(torch.stack([torch.arange(n), perm]),
                                   torch.ones(n, dtype=torch.float64), (n, n))
    out = enc(xm, eid)
    fast = rec.loss_from(out, rows, masked, eid)
    h = rec.enc_to_dec(out.h).index_fill(0, masked, 0.0)
    dense = sce_loss(rec.decoder(h, eid, index=masked), rows.to_dense()[masked], gamma)
    assert len(calls) == 2 and abs(float(fast.detach() - dense.detach())) < 1e-6


def test_token_column_reconstruction(toy):
    encoder = pytest.importorskip("hetcrf_lite.encoder")
    _, eid = toy
    n = 12
    torch.manual_seed(7)
    x = with_token_column(identity_features(n))
    enc = encoder.HANEncoder(n + 1, 8, MPS)
    rec = FeatureReconstruction(n, 8, MPS, token_column=True, replace_rate=0.2)
    assert rec.mask_token is None
    loss, info = rec(enc, x, eid, 0.5, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and info["num_token"] == 5
    assert float(enc.proj.weight.grad[:, -1].abs().sum()) > 0  # the [MASK] column learns
    # bag-of-words: the target is the masked rows without the [MASK] column
    feats = torch.rand(n, 6) * (torch.rand(n, 6) < 0.5)
    feats[:, 0] = 1.0  # no empty row
    rec6 = FeatureReconstruction(6, 8, MPS, token_column=True)
    enc6 = StandInEncoder(7, 8, MPS)
    xs = with_token_column(feats.to_sparse())
    xm, masked, _ = rec6.corrupt(xs, 0.5, generator=torch.Generator().manual_seed(1))
    out = enc6(xm, eid)
    h = rec6.enc_to_dec(out.h).index_fill(0, masked, 0.0)
    ref = sce_loss(rec6.decoder(h, eid, index=masked), feats[masked], rec6.gamma)
    assert torch.allclose(rec6.loss_from(out, xs, masked, eid), ref, atol=1e-6)
    with pytest.raises(DataError, match="MASK"):
        rec(enc, identity_features(n), eid, 0.5)
    with pytest.raises(ConfigError, match="input_proj"):
        rec(enc, x, eid, 0.5, input_proj=lambda t: t)
    with pytest.raises(ConfigError, match="mask_channels"):
        FeatureReconstruction(n, 8, MPS, token_column=True, mask_channels=4)


# --------------------------------------------------------------------------------------------
# Memory: edge drops in input order, pair split, adjacency on the encoder's plan (issue #6)
# --------------------------------------------------------------------------------------------
def test_drop_edges_keeps_the_input_order_and_the_pair_draws():
    from hetcrf_lite.generative import SymmetricSplit
    ei = random_graph(40, 0.3, 6).flip(0)  # sorted by (destination, source), as data.py stores
    kept, dropped = drop_edges(ei, 0.4, torch.Generator().manual_seed(3))
    key = lambda e: (e[1] * 40 + e[0]).tolist()  # noqa: E731
    assert key(kept) == sorted(key(kept)) and key(dropped) == sorted(key(dropped))
    # one draw per i < j pair, in the order of those edges, then the self-loops (kept)
    upper = ei[:, ei[0] < ei[1]]
    keep_pair = torch.rand(upper.shape[1], generator=torch.Generator().manual_seed(3)) >= 0.4
    want = {tuple(p) for p in upper[:, keep_pair].t().tolist()}
    want |= {(j, i) for i, j in want} | {(i, i) for i in range(40)}
    assert set(map(tuple, kept.t().tolist())) == want and kept.shape[1] == len(want)
    split = SymmetricSplit(ei)
    assert split.pair_id.dtype == torch.int32 and split.pair_id.shape == (ei.shape[1],)
    row, col = ei
    mirror = {(int(a), int(b)): int(p) for a, b, p in zip(row, col, split.pair_id)}
    assert all(mirror[(a, b)] == mirror[(b, a)] for a, b in mirror)  # a pair shares its id


def test_symmetric_split_checks_mirrors_and_keeps_duplicates_symmetric():
    from hetcrf_lite.generative import SymmetricSplit
    # as many i < j as i > j edges, but (0, 1) has no mirror: the old count check passed this
    with pytest.raises(DataError, match="symmetric"):
        SymmetricSplit(torch.tensor([[0, 2, 1], [1, 0, 1]]))
    ei = torch.tensor([[0, 1, 0, 1, 2, 3, 2], [1, 0, 1, 0, 3, 2, 2]])  # (0, 1) twice each way
    for seed in range(8):
        kept, _ = drop_edges(ei, 0.5, torch.Generator().manual_seed(seed))
        edges = sorted(map(tuple, kept.t().tolist()))
        assert edges == sorted((b, a) for a, b in edges)  # symmetric as a multiset
        assert (2, 2) in edges


def test_edge_target_borrows_the_encoder_plan_and_matches_the_coalesced_one(toy):
    encoder = pytest.importorskip("hetcrf_lite.encoder")
    x, eid = toy
    n = x.shape[0]
    sorted_eid = {m: e.flip(0).contiguous() for m, e in eid.items()}  # (dst, src) order
    torch.manual_seed(4)
    enc = encoder.HANEncoder(6, 8, MPS, heads=2)
    out = enc(x, sorted_eid)  # builds the plans
    rec = EdgeReconstruction(8, MPS, drop_rate=0.5)
    for m in MPS:
        adj, adj_t, deg = rec._target(m, sorted_eid[m], n)
        plan = csr_plan(sorted_eid[m], n)
        assert adj is adj_t and adj.col_indices().data_ptr() == plan.col.data_ptr()
        dense = torch.zeros(n, n)
        dense[sorted_eid[m][0], sorted_eid[m][1]] = 1.0
        assert torch.equal(adj.to_dense(), dense)
        assert torch.equal(deg, dense.sum(1).long())
    # unsorted, directed, with a duplicate edge: coalesced first, the same binary adjacency
    ei = torch.cat([eid["psp"][:, ::2], eid["psp"][:, :1]], dim=1)
    adj, adj_t, deg = rec._target("psp", ei, n)
    dense = torch.zeros(n, n)
    dense[ei[0], ei[1]] = 1.0
    assert torch.equal(adj.to_dense(), dense) and torch.equal(adj_t.to_dense(), dense.t())
    assert torch.equal(deg, dense.sum(1).long())
    # unsorted input (random_graph is sorted by source): the same loss as the sorted one
    l1, _ = rec.loss_from(out, sorted_eid, sorted_eid)
    rec2 = EdgeReconstruction(8, MPS, drop_rate=0.5)
    rec2.load_state_dict(rec.state_dict())
    l3, _ = rec2.loss_from(out, eid, sorted_eid)
    torch.testing.assert_close(l1, l3)
