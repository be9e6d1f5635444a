"""``make course``: the static HTML course renders its maths and saved widgets offline.

The course is built (``benchmarks/course.py``) into a temporary folder and every page is
opened in headless Chromium with the network disabled (every host name unresolvable, every
request sent to a dead proxy): the formulas MathJax typesets in the markdown cells and the
widget views the widget manager draws must match the counts read from the saved notebooks.
Without Chromium (or npm, which packs MathJax and the widget manager) the test skips, except
under ``CI=true``, where ``.ci/run`` installs them and a skip would hide a broken course.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--host-resolver-rules=MAP * ~NOTFOUND"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true the offline course check must run (.ci/run "
                    "installs Debian's chromium)")
    pytest.skip(reason)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    _unavailable("headless Chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")


def count_math(markdown: str) -> int:
    """Formulas in a markdown cell as MathJax delimits them: ``$$...$$``, ``\\[...\\]``,
    ``$...$``, ``\\(...\\)``, outside fenced code and code spans; ``\\$`` is a dollar sign."""
    text = re.sub(r"^(```|~~~).*?^\1", "", markdown, flags=re.S | re.M)
    text = re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", "", text, flags=re.S)
    text = text.replace(r"\$", "")
    return len(re.findall(r"\$\$.+?\$\$|\\\[.+?\\\]|\$[^$]+?\$|\\\(.+?\\\)", text, flags=re.S))


def saved_counts(path: Path) -> dict[str, int]:
    """From the notebook file: formulas in markdown cells, widget views in outputs."""
    nb = json.loads(path.read_text())
    views = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                for c in nb["cells"] for o in c.get("outputs", []))
    math = sum(count_math("".join(c["source"])) for c in nb["cells"]
               if c["cell_type"] == "markdown")
    return {"math": math, "widgets": views}


def test_count_math_reads_delimiters_as_mathjax_does():
    assert count_math("$a$ and $$b$$ and \\(c\\) and \\[d\\]") == 4
    assert count_math("costs \\$5 and \\$6, `$x$` in code") == 0
    assert count_math("```\n$x$\n```\n$y_i$ then $z^2$") == 2


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    chromium = _chromium()  # skip before building when the check cannot run
    out = tmp_path_factory.mktemp("course")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "course.py"), "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "npm is not installed" in done.stderr:
        _unavailable(done.stderr.strip())
    assert done.returncode == 0, done.stderr[-3000:]
    out.joinpath(".chromium").write_text(chromium)
    return out


def _render(chromium: str, page: Path, profile: Path) -> str:
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", *OFFLINE, "--virtual-time-budget=30000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def rendered(course, tmp_path_factory) -> dict[str, str]:
    """``{notebook name: the DOM after scripts ran}``, two pages at a time."""
    chromium = course.joinpath(".chromium").read_text()
    profiles = tmp_path_factory.mktemp("profiles")
    names = [p.stem for p in NOTEBOOKS]
    with ThreadPoolExecutor(2) as pool:
        doms = pool.map(lambda n: _render(chromium, course / f"{n}.html", profiles / n), names)
        return dict(zip(names, doms))


def test_pages_load_no_script_from_the_network(course):
    for path in [course / "index.html"] + [course / f"{p.stem}.html" for p in NOTEBOOKS]:
        text = path.read_text()
        remote = re.findall(r"<(?:script|link)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//[^>]*>",
                            text, flags=re.I)
        assert not remote, f"{path.name} loads {remote[:3]}"
        assert "Widgets show their saved state only" in text, path.name


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_formulas_and_widgets_render_offline(rendered, name):
    from bs4 import BeautifulSoup

    expected = saved_counts(ROOT / "notebooks" / f"{name}.ipynb")
    dom = BeautifulSoup(rendered[name], "html.parser")
    assert dom.body.get("data-mathjax") == "done", f"{name}: MathJax did not finish offline"
    math = len(dom.select(".jp-MarkdownCell mjx-container"))
    errors = [e.get_text()[:80] for e in dom.select(".jp-MarkdownCell mjx-merror")]
    views = [v for v in dom.select(".widget-subarea") if v.find(True) is not None]
    assert (math, len(views)) == (expected["math"], expected["widgets"]), name
    assert not errors, f"{name}: TeX errors {errors}"


def test_the_course_has_maths_and_widgets_to_check():
    totals = [saved_counts(p) for p in NOTEBOOKS]
    assert sum(t["math"] for t in totals) > 100 and sum(t["widgets"] for t in totals) >= 5
