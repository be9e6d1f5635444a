"""Build the course as static HTML that opens offline: ``make course`` (``build/course/``).

Every notebook in ``notebooks/`` is converted with its committed outputs (nothing is
executed): figures are embedded, maths is typeset in the browser by MathJax, and saved widget
state is drawn by the Jupyter widget manager (``@jupyter-widgets/html-manager``). Both come
from the npm registry as pinned, integrity-checked packages (``npm pack``, no dependencies
installed) and are served from ``_static/`` beside the pages: no page loads a script from the
network. Static widgets show the state saved with the notebook only; the pages say so.

    python benchmarks/course.py                # build/course/index.html and one page each
    python benchmarks/course.py --out DIR      # elsewhere
    python benchmarks/course.py --notebooks 02_han_encoder   # some notebooks only

The packed archives are kept in ``build/course-assets/`` so a rebuild needs no network.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CACHE = ROOT / "build" / "course-assets"
TEMPLATE = Path(__file__).resolve().parent / "course_template"

# name@version -> sha512 integrity of the npm tarball (what `npm pack --json` reports)
PACKAGES = {
    "mathjax@3.2.2": "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZG"
                     "JvtRZM1vO+geW0OhGw==",
    "@jupyter-widgets/html-manager@1.0.15": "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVz"
                                            "RhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
}
# what each package contributes under _static/: (path in the tarball, path under _static/)
FILES = {
    "mathjax@3.2.2": [("package/es5/tex-chtml-full.js", "mathjax/tex-chtml-full.js"),
                      ("package/es5/output", "mathjax/output"),
                      ("package/es5/ui", "mathjax/ui"),
                      ("package/es5/a11y", "mathjax/a11y"),
                      ("package/LICENSE", "mathjax/LICENSE")],
    "@jupyter-widgets/html-manager@1.0.15": [("package/dist", "html-manager")],  # + licences
}
STATIC_NOTE = ("Static page: figures, maths and widgets are shown as saved when the notebook "
               "was last run. Widgets show their saved state only: moving a slider or "
               "clicking a button changes nothing here. Run the notebook in JupyterLab "
               "(make lab) to use them.")


class CourseError(RuntimeError):
    """The course cannot be built (npm missing or failing, a tampered package)."""


def _tarball_name(spec: str) -> str:
    name, _, version = spec.rpartition("@")
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch_packages(cache: Path = CACHE) -> dict[str, Path]:
    """``{spec: tarball}``, packed with ``npm pack`` into ``cache`` once and checked against
    the pinned sha512 every time."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for spec, expected in PACKAGES.items():
        path = cache / _tarball_name(spec)
        if not path.is_file():
            if shutil.which("npm") is None:
                raise CourseError("npm is not installed: the course's MathJax and widget "
                                  "manager come from the npm registry (install Node.js)")
            done = subprocess.run(["npm", "pack", spec, "--pack-destination", str(cache)],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0 or not path.is_file():
                raise CourseError(f"npm pack {spec} failed: {done.stderr.strip()[-500:]}")
        if _integrity(path) != expected:
            path.unlink()
            raise CourseError(f"{spec}: the packed archive does not have the pinned sha512; "
                              "deleted it, build again")
        out[spec] = path
    return out


def install_static(static: Path, cache: Path = CACHE) -> None:
    """MathJax and the widget manager under ``static`` (``_static/`` of the course)."""
    for spec, tarball in fetch_packages(cache).items():
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
            for src, dst in FILES[spec]:
                source, target = Path(tmp) / src, static / dst
                target.parent.mkdir(parents=True, exist_ok=True)
                if source.is_dir():
                    shutil.copytree(source, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(source, target)


def _exporter():
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATE.parent)],
                            template_name=TEMPLATE.name)
    exporter.exclude_input_prompt = False
    return exporter


def _title(nb: dict, fallback: str) -> str:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def build(out: Path, names: list[str] | None = None) -> list[Path]:
    """Write ``out/index.html``, one page per notebook and ``out/_static/``; return the
    pages."""
    import nbformat

    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if names:
        paths = [p for p in paths if p.stem in names]
    out.mkdir(parents=True, exist_ok=True)
    install_static(out / "_static")
    exporter, pages, entries = _exporter(), [], []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        body, _ = exporter.from_notebook_node(nb, resources={"static_note": STATIC_NOTE})
        page = out / f"{path.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
        entries.append((page.name, _title(nb, path.stem)))
    (out / "index.html").write_text(_index(entries), encoding="utf-8")
    return pages


def _index(entries: list[tuple[str, str]]) -> str:
    items = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(title)}</a></li>'
                      for href, title in entries)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hetcrf-lite: the course</title>
<style>body {{ font-family: sans-serif; max-width: 46em; margin: 2em auto; line-height: 1.5 }}
.static-note {{ background: #fff8e1; border: 1px solid #e0c060; padding: .6em 1em }}</style>
</head><body>
<h1>hetcrf-lite: the course</h1>
<p class="static-note">{html.escape(STATIC_NOTE)}</p>
<ol>
{items}
</ol>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "course"))
    parser.add_argument("--notebooks", nargs="*", help="notebook names (default: all)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        pages = build(Path(args.out), args.notebooks)
    except CourseError as err:
        print(f"course: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(pages)} pages and index.html to {args.out} "
          f"({time.perf_counter() - start:.1f} s); open {Path(args.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
