"""Tests of clustering-based positive augmentation (key deviated nodes, ClusterAugmenter,
cluster-count estimation)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hetcrf_lite.augment import (ClusterAugmenter, coalesce_pairs, estimate_num_clusters,
                                 key_deviated_positives)
from hetcrf_lite.errors import ConfigError, DataError


def slow_key_deviated(emb, labels, centroids, q, k):
    """Reference: one node at a time, plain Python."""
    pairs = set()
    for c in sorted(set(labels.tolist())):
        members = [i for i in range(len(labels)) if labels[i] == c]
        mu = centroids[c] if centroids is not None else emb[members].mean(0)
        dist = {i: float((emb[i] - mu).norm()) for i in members}
        by_far = sorted(members, key=lambda i: (-dist[i], i))
        by_near = sorted(members, key=lambda i: (dist[i], i))
        for i in by_far[:math.ceil(q * len(members))]:
            pairs |= {(i, j) for j in by_near[:k] if j != i}
    return sorted(pairs)


def blobs(n_per: int, centers: list[list[float]], seed: int, spread: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    pts = [torch.tensor(c) + spread * torch.randn(n_per, len(c), generator=g) for c in centers]
    return torch.cat(pts).double()


@pytest.mark.parametrize("q,k,given", [(0.2, 3, False), (0.5, 1, True), (1.0, 10, False)])
def test_key_deviated_matches_reference(q, k, given):
    torch.manual_seed(0)
    emb = torch.randn(60, 3, dtype=torch.float64)
    labels = torch.randint(0, 4, (60,))
    centroids = torch.randn(4, 3, dtype=torch.float64) if given else None
    got = key_deviated_positives(emb, labels, centroids, q, k)
    assert [tuple(p) for p in got.t().tolist()] == slow_key_deviated(emb, labels, centroids, q, k)


def test_key_deviated_by_hand():
    # one cluster on a line, centroid 0: distances 0.1, 0.2, 1, 3, 5 -> q=0.4 picks 2 nodes
    emb = torch.tensor([[3.0], [0.1], [-0.2], [1.0], [-5.0]])
    got = key_deviated_positives(emb, torch.zeros(5, dtype=torch.long), torch.zeros(1, 1),
                                 q=0.4, k=2)
    assert got.tolist() == [[0, 0, 4, 4], [1, 2, 1, 2]]
    with pytest.raises(ConfigError):
        key_deviated_positives(emb, torch.zeros(5, dtype=torch.long), q=0.0)
    with pytest.raises(DataError):
        key_deviated_positives(emb, torch.zeros(4, dtype=torch.long))


def test_coalesce_pairs():
    pairs = torch.tensor([[2, 0, 2, 1, 0], [1, 3, 1, 0, 0]])
    assert coalesce_pairs(pairs, 4).tolist() == [[0, 0, 1, 2], [0, 3, 0, 1]]


def test_estimate_num_clusters():
    emb = blobs(30, [[0, 0], [6, 0], [0, 6]], 0)
    best, scores = estimate_num_clusters(emb, range(2, 7), seed=0, sample=60)
    assert best == 3 and set(scores) == {2, 3, 4, 5, 6}
    assert scores[3] == max(scores.values())
    assert estimate_num_clusters(emb.numpy(), range(2, 7), seed=0, sample=60) == (best, scores)
    with pytest.raises(ConfigError):
        estimate_num_clusters(emb, [1, 2])


# --------------------------------------------------------------------------------------------
def test_augmenter_schedule_and_positives():
    emb = blobs(20, [[0, 0], [5, 5]], 1)
    aug = ClusterAugmenter(2, refresh_every=10, q=0.2, k=3, seed=0)
    base = torch.stack([torch.arange(40), torch.arange(40)])
    assert torch.equal(aug.positives(base), base)  # nothing before the first refresh
    assert aug.maybe_refresh(0, emb)
    assert not aug.maybe_refresh(5, emb)
    pos = aug.positives(base)
    # union of base and extra, sorted by anchor then positive, no duplicates
    key = pos[0] * 40 + pos[1]
    assert torch.equal(key, torch.unique(key))
    assert bool(torch.isin(base[0] * 40 + base[1], key).all())
    assert bool(torch.isin(aug.extra[0] * 40 + aug.extra[1], key).all())
    assert aug.extra.shape[1] == 2 * 4 * 3  # 2 clusters x ceil(0.2*20) deviated x 3, no self
    # extra positives stay within a cluster
    assert bool((aug.labels[aug.extra[0]] == aug.labels[aug.extra[1]]).all())
    entry = aug.history[0]
    assert set(entry) == {"epoch", "num_clusters", "inertia", "drift", "assignment_change",
                          "num_extra", "seconds"}
    assert entry["drift"] is None and entry["inertia"] > 0
    assert aug.maybe_refresh(10, emb) and len(aug.history) == 2


def test_augmenter_positives_cached_until_an_input_changes():
    emb = blobs(20, [[0, 0], [5, 5]], 1)
    aug = ClusterAugmenter(2, refresh_every=10, q=0.2, k=3, seed=0)
    base = torch.stack([torch.arange(40), torch.arange(40)])
    aug.maybe_refresh(0, emb)
    pos = aug.positives(base)
    assert aug.positives(base) is pos  # asked every step: built once
    assert aug.positives(base.clone()) is not pos  # another tensor
    again = aug.positives(base)
    base[1, 0] = 1  # an in-place change invalidates it
    changed = aug.positives(base)
    assert changed is not again
    assert torch.equal(changed, coalesce_pairs(torch.cat([base, aug.extra], 1), 40))
    aug.maybe_refresh(10, emb)  # new extra positives
    assert aug.positives(base) is not changed


def test_warm_start_unchanged_embeddings_no_drift():
    emb = blobs(25, [[0, 0], [4, 0], [0, 4]], 2, spread=0.8)
    aug = ClusterAugmenter(3, refresh_every=1, q=0.3, k=4, warm_start=True, seed=3)
    aug.maybe_refresh(0, emb)
    before = aug.extra.clone()
    base = torch.stack([torch.arange(75), torch.arange(75)])
    pos_before = aug.positives(base)
    aug.maybe_refresh(1, emb)
    assert torch.equal(aug.extra, before) and torch.equal(aug.positives(base), pos_before)
    assert aug.history[-1]["drift"] == 0.0 and aug.history[-1]["assignment_change"] == 0.0


def test_drift_measured_when_embeddings_move():
    emb = blobs(25, [[0, 0], [4, 0], [0, 4]], 4, spread=0.8)
    aug = ClusterAugmenter(3, refresh_every=1, q=0.3, k=4, seed=0)
    aug.maybe_refresh(0, emb)
    old_extra = aug.extra.clone()
    moved = emb + 0.6 * torch.randn(emb.shape, generator=torch.Generator().manual_seed(9),
                                    dtype=torch.float64)
    aug.maybe_refresh(1, moved)
    old = {a: set(old_extra[1][old_extra[0] == a].tolist()) for a in range(75)}
    new = {a: set(aug.extra[1][aug.extra[0] == a].tolist()) for a in range(75)}
    expected = sum(old[a] != new[a] for a in range(75)) / 75
    assert expected > 0 and aug.history[-1]["drift"] == pytest.approx(expected)


def test_hungarian_matching_ignores_relabelling():
    emb = blobs(20, [[0, 0], [5, 0], [0, 5]], 5)
    aug = ClusterAugmenter(3, refresh_every=1, seed=0)
    aug.maybe_refresh(0, emb)
    labels, centroids = aug.labels.numpy(), aug.centroids
    perm = np.array([2, 0, 1])  # the same clustering with other ids
    relabelled, reordered = aug._match(perm[labels], centroids[np.argsort(perm)])
    assert np.array_equal(relabelled, labels) and np.allclose(reordered, centroids)


def test_ema_smooths_centroids():
    emb = blobs(20, [[0, 0], [6, 0]], 6)
    aug = ClusterAugmenter(2, refresh_every=1, ema=0.5, seed=0)
    aug.maybe_refresh(0, emb)
    c0 = aug.centroids.copy()
    shifted = emb + torch.tensor([0.0, 2.0], dtype=torch.float64)
    aug.maybe_refresh(1, shifted)
    # half-way between the old centroids and the new fit (shifted by +2 in y)
    assert np.allclose(aug.centroids, c0 + np.array([0.0, 1.0]), atol=1e-6)


def test_auto_num_clusters_deterministic_and_state():
    emb = blobs(15, [[0, 0], [5, 0], [0, 5], [5, 5]], 7)
    a = ClusterAugmenter("auto", refresh_every=2, seed=1, candidates=range(2, 7))
    b = ClusterAugmenter("auto", refresh_every=2, seed=1, candidates=range(2, 7))
    a.maybe_refresh(0, emb)
    b.maybe_refresh(0, emb)
    assert a.num_clusters == 4 and torch.equal(a.extra, b.extra)
    c = ClusterAugmenter("auto", refresh_every=2)
    c.load_state_dict(a.state_dict())
    assert not c.maybe_refresh(1, emb) and torch.equal(c.extra, a.extra)
    for bad in (dict(num_clusters=1), dict(num_clusters="many"), dict(num_clusters=3, ema=1.0),
                dict(num_clusters=3, refresh_every=0), dict(num_clusters=3, q=1.5)):
        with pytest.raises(ConfigError):
            ClusterAugmenter(**bad)
