"""Shared by the CLI tests: run ``hetcrf-lite`` in-process and capture what it prints."""
from __future__ import annotations

import contextlib
import io

from hetcrf_lite.cli import main


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``hetcrf-lite ARGV``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
