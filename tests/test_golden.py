"""A pure refactor changes no number: the default embeddings of two fixed runs (one thread, CPU)
equal the golden ones saved before the restructuring (tests/golden/make_golden.py) to 1e-6.

The synthetic run is ``make demo`` itself (the session's ``demo_run``: the CLI, the shipped
synthetic config, one thread), whose ``embeddings.npy`` must equal what make_golden.py trains
in-process; ACM trains here."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
from make_golden import golden_embedding  # noqa: E402


def test_make_demo_embeddings_match_golden(demo_run):
    _, _, out = demo_run
    expected = np.load(GOLDEN / "synthetic.npy")
    got = np.load(out / "embeddings.npy")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_acm_embeddings_match_golden():
    if not os.environ.get("HETCRF_DATA"):
        pytest.skip("HETCRF_DATA is unset: the ACM golden run needs the benchmark files")
    expected = np.load(GOLDEN / "acm.npy")
    got = golden_embedding("acm")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
