"""Tests of hetcrf_lite.sparse: the GCN operators, the sparse product's backward and the caches."""
import torch

from graph_helpers import sym_graph
from hetcrf_lite.sparse import TensorCache, csr_plan, gcn_operators, sparse_mm

N = 50


def test_gcn_operators_share_the_plan_and_equal_gcn_norm():
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    directed = torch.randint(0, N, (2, 300), generator=torch.Generator().manual_seed(2))
    key = torch.unique(directed[1] * N + directed[0])  # sorted by (dst, src), no duplicates
    directed = torch.stack([key % N, key // N])
    for ei, symmetric in ((sym_graph(N, 150, seed=10), True), (directed, False)):
        plan = csr_plan(ei, N)
        a, a_t = gcn_operators(ei, N, torch.float32)
        assert (a is a_t) == symmetric and a.col_indices().data_ptr() == plan.col.data_ptr()
        idx, w = gcn_norm(ei, None, N, add_self_loops=False)
        dense = torch.zeros(N, N)
        dense[idx[1], idx[0]] = w  # rows = destinations
        torch.testing.assert_close(a.to_dense(), dense)
        torch.testing.assert_close(a_t.to_dense(), dense.t())



def test_gcn_operators_of_a_graph_with_duplicates_sum_them_as_gcn_norm():
    from torch_geometric.nn.conv.gcn_conv import gcn_norm
    ei = torch.randint(0, N, (2, 300), generator=torch.Generator().manual_seed(3))
    ei = torch.cat([ei, ei[:, :20]], 1)  # unsorted, 20 duplicates
    a, a_t = gcn_operators(ei, N, torch.float64)
    idx, w = gcn_norm(ei, None, N, add_self_loops=False, dtype=torch.float64)
    dense = torch.zeros(N, N, dtype=torch.float64).index_put_((idx[1], idx[0]), w, accumulate=True)
    torch.testing.assert_close(a.to_dense(), dense)
    torch.testing.assert_close(a_t.to_dense(), dense.t())


def test_sparse_mm_gradient_equals_dense_autograd():
    ei = torch.randint(0, N, (2, 300), generator=torch.Generator().manual_seed(4))
    a, a_t = gcn_operators(ei, N, torch.float64)
    x = torch.randn(N, 5, dtype=torch.float64, requires_grad=True)
    (sparse_mm(a, x, a_t) ** 2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    ((a.to_dense() @ x2) ** 2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    assert torch.autograd.gradcheck(lambda inp: sparse_mm(a, inp, a_t),
                                    (x.detach().requires_grad_(True),))


def test_tensor_cache_rebuilds_on_another_tensor_or_an_in_place_edit():
    cache, calls = TensorCache(), []
    t = torch.zeros(3)
    build = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert cache.get("k", t, build) == 1 and cache.get("k", t, build) == 1
    t.add_(1)  # new version
    assert cache.get("k", t, build) == 2
    assert cache.get("k", torch.zeros(3), build) == 3  # another tensor, same key: replaced
    assert cache.get("k", t, build) == 4
    assert cache.get("k", t, build, valid=lambda v: v > 10) == 5
