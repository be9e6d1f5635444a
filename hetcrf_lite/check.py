"""Environment check for the first cell of every notebook: is what the course needs importable?

The course notebooks open with::

    from hetcrf_lite.check import check_environment
    check_environment(extras=["ipywidgets"])

which prints one line per requirement (found version or "missing") and, when something is missing,
exactly what to ``pip install``. A notebook opened in a hosted service (Colab, Binder) without the
package cannot import this module at all: the README's hosted-notebook section shows the install
cell for that case, and the first cell of each notebook says it in a comment.

This module imports only the standard library at import time, so it works before torch does.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass
from typing import Sequence

MIN_PYTHON = (3, 11)
#: How the package itself is installed without a checkout: REPO_URL stands for the git URL of
#: the course's repository (README, "In a hosted notebook"); in a checkout: ``pip install -e ".[viz]"``.
PACKAGE_SPEC = '"hetcrf-lite[viz] @ git+REPO_URL"'

#: import name -> (pip name, why the course needs it). Required by every notebook.
CORE = {
    "torch": ("torch", "tensors and training"),
    "torch_geometric": ("torch-geometric", "HeteroData and the graph layers"),
    "hetcrf_lite": ("hetcrf-lite", "this course's library"),
}
#: import name -> (pip name, why); a notebook names the ones it uses in ``extras``.
EXTRAS = {
    "ipywidgets": ("ipywidgets", "the interactive widgets"),
    "umap": ("umap-learn", "UMAP projections"),
}


@dataclass(frozen=True)
class Requirement:
    """One line of the check: what was looked for and what was found."""

    module: str
    pip_name: str
    purpose: str
    version: str | None  # None: not importable

    @property
    def ok(self) -> bool:
        return self.version is not None


def _probe(module: str) -> str | None:
    """Version of ``module`` if it imports, ``"?"`` if it imports without a version, else None."""
    try:
        mod = importlib.import_module(module)
    except Exception:  # ImportError, or a broken install failing inside its own import
        return None
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(module.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    return str(version)


def requirements(extras: Sequence[str] = ()) -> list[Requirement]:
    """The core requirements and the named ``extras`` (keys of :data:`EXTRAS`), probed."""
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise ValueError(f"unknown extra(s) {unknown}; known: {sorted(EXTRAS)}")
    wanted = {**CORE, **{e: EXTRAS[e] for e in extras}}
    return [Requirement(m, pip, why, _probe(m)) for m, (pip, why) in wanted.items()]


def install_advice(missing: Sequence[Requirement]) -> str:
    """The ``pip install`` line(s) that provide the ``missing`` requirements.

    The package itself brings torch, torch_geometric and the rest of its dependencies; the
    ``[viz]`` extra brings ipywidgets and umap-learn. So a missing ``hetcrf_lite`` is answered
    with one install of the package with ``[viz]``; otherwise each missing module by its pip name.
    """
    if not missing:
        return ""
    names = {r.module for r in missing}
    if "hetcrf_lite" in names:
        return ("%pip install " + PACKAGE_SPEC + "\n"
                '(or, in a checkout of the repository: pip install -e ".[viz]" from its root, '
                '%pip install -e "..[viz]" from a notebook in notebooks/)')
    return "%pip install " + " ".join(sorted(r.pip_name for r in missing))


def check_environment(extras: Sequence[str] = (), raise_on_missing: bool = True) -> bool:
    """Print what the notebook needs and what was found; say what to install if anything lacks.

    Args:
        extras: optional modules this notebook uses, keys of :data:`EXTRAS`
            (``"ipywidgets"``, ``"umap"``).
        raise_on_missing: raise ``RuntimeError`` (the advice as its message) when something is
            missing, so ``Run all`` stops at the first cell instead of failing later.

    Returns:
        True when everything is present.

    Introduced in notebook 01.
    """
    py_ok = sys.version_info[:2] >= MIN_PYTHON
    py = ".".join(map(str, sys.version_info[:3]))
    need = ".".join(map(str, MIN_PYTHON))
    reqs = requirements(extras)
    print(f"{'python':16s} {py:12s} {'ok' if py_ok else f'too old: needs {need} or newer'}")
    for r in reqs:
        print(f"{r.module:16s} {(r.version or '-'):12s} "
              f"{'ok' if r.ok else 'MISSING'} ({r.purpose})")
    missing = [r for r in reqs if not r.ok]
    problems = []
    if not py_ok:
        problems.append(f"Python {py} is too old: start the notebook with Python {need} or newer.")
    if missing:
        problems.append("Install what is missing, then restart the kernel:\n"
                        + install_advice(missing))
    if problems:
        message = "\n".join(problems)
        print(message)
        if raise_on_missing:
            raise RuntimeError(message)
        return False
    print("environment ok")
    return True
