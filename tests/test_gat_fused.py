"""Tests of hetcrf_lite.gat_fused: the fused backend equals the reference (forward, gradients, and
with attention dropout the same masks), and its plans and dropout masks have the promised layout."""
import pytest
import torch

from graph_helpers import sym_graph
from hetcrf_lite.encoder import MetaPathGATConv, gat_aggregate, resolve_backend
from hetcrf_lite.errors import ConfigError
from hetcrf_lite.gat_fused import (CUDA_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, _AttentionDropout,
                                   auto_chunk_size, fused_gat_aggregate)
from hetcrf_lite.sparse import PLAN_CACHE, csr_plan

N, F_IN = 50, 12


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(N, F_IN, generator=torch.Generator().manual_seed(0))


def twin_convs(heads, dropout=0.0, chunk_size=None, **kw):
    torch.manual_seed(3)
    ref = MetaPathGATConv(F_IN, 4 * heads, heads, dropout=dropout, backend="reference", **kw)
    fused = MetaPathGATConv(F_IN, 4 * heads, heads, dropout=dropout, backend="fused",
                            chunk_size=chunk_size, **kw)
    fused.load_state_dict(ref.state_dict())
    return ref.double(), fused.double()


def assert_same(first, second):
    for a, b in zip(first, second):
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)


def forward_and_grads(conv, x, ei, seed=None):
    xd = x.double().clone().requires_grad_(True)
    if seed is not None:
        torch.manual_seed(seed)
    out, alpha = conv(xd, ei, return_attention_weights=True)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = [xd.grad] + [p.grad for p in conv.parameters()]
    return out, alpha, grads


@pytest.mark.parametrize("heads,chunk_size", [(1, None), (1, 17), (3, 29), (8, None)])
def test_fused_equals_reference_forward_and_gradients(x, heads, chunk_size):
    ei = sym_graph(N, 150, seed=heads)
    ref, fused = twin_convs(heads, chunk_size=chunk_size)
    assert_same(forward_and_grads(ref, x, ei), forward_and_grads(fused, x, ei))


def test_fused_equals_reference_on_unsorted_graph_with_duplicates(x):
    ei = torch.randint(0, N, (2, 400), generator=torch.Generator().manual_seed(4))
    ei[:, 1] = ei[:, 0]  # a duplicate edge
    ref, fused = twin_convs(2, chunk_size=23)
    assert_same(forward_and_grads(ref, x, ei), forward_and_grads(fused, x, ei))


@pytest.mark.parametrize("heads", [1, 3])
def test_fused_equals_reference_with_the_same_dropout_masks(x, heads):
    """On a graph sorted by destination that fits one block, both backends draw the keep mask
    head-major from the same generator state: same masks, same outputs and gradients."""
    ei = sym_graph(N, 150, seed=5)
    ref, fused = twin_convs(heads, dropout=0.5)
    r = forward_and_grads(ref.train(), x, ei, seed=11)
    f = forward_and_grads(fused.train(), x, ei, seed=11)
    assert_same(r, f)
    assert not torch.allclose(r[0], forward_and_grads(ref.train(), x, ei, seed=12)[0])  # dropped


def test_functional_backends_agree_and_auto_picks_per_device():
    wx = torch.randn(N, 2, 3, dtype=torch.float64)
    s_src, s_dst = torch.randn(N, 2, dtype=torch.float64), torch.randn(N, 2, dtype=torch.float64)
    ei = sym_graph(N, 100, seed=6)
    ref, alpha_ref = gat_aggregate(wx, s_src, s_dst, ei)
    fused, alpha = fused_gat_aggregate(wx, s_src, s_dst, ei, return_attention_weights=True)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha, alpha_ref, rtol=1e-12, atol=1e-12)
    assert fused_gat_aggregate(wx, s_src, s_dst, ei)[1] is None
    assert resolve_backend("auto", torch.device("cpu")) == "fused"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "reference"
    assert resolve_backend("reference", torch.device("cpu")) == "reference"
    with pytest.raises(ConfigError, match="backend"):
        MetaPathGATConv(F_IN, 8, backend="fast")


# --------------------------------------------------------------------------------------------
# Memory layout of plans and dropout masks (issue #6)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [3, 8, 11])
def test_attention_dropout_mask_is_bit_packed_and_read_back_exactly(heads):
    torch.manual_seed(0)
    E, k = 50, 20
    drop = _AttentionDropout(E, heads, 0.4, torch.device("cpu"))
    assert drop.mask.dtype == torch.uint8 and drop.mask.shape == (E, (heads + 7) // 8)
    drawn = torch.empty(heads, E)
    for e0 in range(0, E, k):  # drawn block by block, as the forward pass does
        e1 = min(e0 + k, E)
        drawn[:, e0:e1] = drop.draw(e0, e1, torch.empty(heads, e1 - e0))
    assert set(drawn.unique().tolist()) == {0.0, 1.0}
    edges = torch.randperm(E, generator=torch.Generator().manual_seed(1)).to(torch.int32)
    got = drop.gather(edges, torch.empty(heads, E))
    assert torch.equal(got, drawn[:, edges.long()])


def test_gradcheck_with_attention_dropout_over_eight_heads():
    """Nine heads: the dropout mask spans two bytes per edge."""
    n = 15
    ei = sym_graph(n, 30, seed=8)
    conv = MetaPathGATConv(4, 18, heads=9, dropout=0.3, chunk_size=11, backend="fused")
    conv = conv.double().train()
    xd = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)

    def f(inp):
        torch.manual_seed(12)
        return conv(inp, ei)

    assert torch.autograd.gradcheck(f, (xd,), fast_mode=True)


def test_plan_holds_int32_sources_only_and_leaves_with_its_graph(x):
    """A plan stores int32 sources (destinations are rebuilt per block) and keeps no reference to
    the edge_index: the cached plan goes when the tensor goes, so a graph thinned for one step
    does not outlive it (a view of it, through ``_base``, would keep it alive forever)."""
    import gc
    import weakref

    ei = sym_graph(N, 200, seed=9)
    plan = csr_plan(ei, N)
    assert plan.order is None and torch.equal(plan.row.long(), ei[1])
    assert plan.col.dtype == torch.int32 and torch.equal(plan.col.long(), ei[0])
    assert torch.equal(torch.cat([plan.block_rows(n0, n1, crow, e1 - e0)
                                  for (n0, n1, e0, e1), crow in zip(plan.blocks, plan.crows)]),
                       plan.row)
    tp = plan.transpose()
    assert plan.symmetric and tp.col is plan.col and plan.perm.dtype == torch.int32
    perm = plan.perm.long()  # reverse edge of each edge
    assert torch.equal(plan.col[perm].long(), plan.row) and torch.equal(plan.row[perm],
                                                                        plan.col.long())
    conv = MetaPathGATConv(F_IN, 8, heads=2, dropout=0.2, backend="fused").train()
    for dtype in (torch.int64, torch.int32):
        tmp = ei[:, ::2].to(dtype)  # unsymmetric, sorted: a graph that lives for one step
        conv(x, tmp).sum().backward()
        key, alive = id(tmp), weakref.ref(tmp)
        assert key in PLAN_CACHE
        del tmp
        gc.collect()
        assert alive() is None and key not in PLAN_CACHE


def test_block_size_follows_the_device_and_changes_no_result():
    assert auto_chunk_size(torch.device("cpu")) == DEFAULT_CHUNK_SIZE
    assert auto_chunk_size(torch.device("cuda", 0)) == CUDA_CHUNK_SIZE > DEFAULT_CHUNK_SIZE
    torch.manual_seed(0)
    x = torch.randn(40, 6, dtype=torch.float64)
    ei = torch.randint(0, 40, (2, 300))
    auto = MetaPathGATConv(6, 8, heads=2, backend="fused").double().eval()  # 32768 on CPU
    small = MetaPathGATConv(6, 8, heads=2, chunk_size=7, backend="fused").double().eval()
    small.load_state_dict(auto.state_dict())
    assert auto.chunk_size is None
    torch.testing.assert_close(auto(x, ei), small(x, ei), rtol=1e-12, atol=1e-12)


def test_reference_serves_a_chunk_of_destinations():
    """``num_dst``: the rows of a destination chunk equal those of the whole graph."""
    wx = torch.randn(N, 2, 3, dtype=torch.float64)
    s_src, s_dst = torch.randn(N, 2, dtype=torch.float64), torch.randn(N, 2, dtype=torch.float64)
    ei = sym_graph(N, 100, seed=7)
    full, _ = gat_aggregate(wx, s_src, s_dst, ei)
    n0, n1 = 10, 30
    keep = (ei[1] >= n0) & (ei[1] < n1)
    chunk = torch.stack([ei[0, keep], ei[1, keep] - n0])
    part, _ = gat_aggregate(wx, s_src, s_dst[n0:n1], chunk, num_dst=n1 - n0)
    torch.testing.assert_close(part, full[n0:n1], rtol=1e-12, atol=1e-12)
