"""Shared fixtures: where the HeCo benchmarks live, and each benchmark loaded once per session."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# The tests use small graphs, where thread start-up costs more than it saves; on a 2-core
# machine shared with other work two threads can stall small ops by 10x or more.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Re-apply before every test: UMAP's numba start-up resets the OpenMP thread count that
    MKL uses, and two spinning OpenMP threads on a busy 2-core machine made a 45 s test take
    over 10 minutes."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def heco_root() -> Path:
    """``Path($HETCRF_DATA)``, the folder with acm/, dblp/, aminer/, freebase/; skips the test
    when the variable is unset or the folder is missing."""
    root = os.environ.get("HETCRF_DATA")
    if not root:
        pytest.skip("HETCRF_DATA is not set (point it at the HeCo datasets folder)")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"HETCRF_DATA={root} is not a folder")
    return path


@pytest.fixture(scope="session")
def heco(heco_root: Path) -> Callable:
    """``heco(name)`` returns ``load_dataset(name)`` from ``heco_root``, loaded once per session
    (never downloading). Treat the result as read-only: other tests share it."""
    from hetcrf_lite.data import load_dataset

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_dataset(name, root=heco_root, download=False)
        return cache[name]

    return get


ROOT = Path(__file__).resolve().parents[1]


def makefile_demo_command(out: Path) -> list[str]:
    """The ``demo`` recipe of the Makefile, with ``$(BIN)`` this interpreter's folder and the
    run folder moved to ``out``."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("demo:"))
    recipe = lines[start + 1].strip()
    assert lines[start + 1].startswith("\t") and "hetcrf-lite train" in recipe, recipe
    argv = shlex.split(recipe.replace("$(BIN)", str(Path(sys.executable).parent)))
    i = argv.index("--out")
    argv[i + 1] = str(out)
    return argv


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[list[str], subprocess.CompletedProcess, Path]:
    """``make demo`` run once per session exactly as the Makefile spells it (the installed
    ``hetcrf-lite`` script, one thread): ``(argv, completed process, run folder)``. The README's
    table, the golden synthetic embedding and the quality bar all read this one run, so the
    shipped synthetic config trains once instead of three times (about 50 s saved)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    argv = makefile_demo_command(out)
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed (pip install -e . creates it)")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return argv, done, out
