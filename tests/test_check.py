"""hetcrf_lite.check: the first cell of every notebook says exactly what to install."""
import json
from pathlib import Path

import pytest

from hetcrf_lite import check

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_everything_present_prints_versions_and_ok(capsys):
    assert check.check_environment(extras=["ipywidgets"]) is True
    out = capsys.readouterr().out
    import hetcrf_lite
    assert f"hetcrf_lite      {hetcrf_lite.__version__}" in out
    for name in ("python", "torch", "torch_geometric", "ipywidgets"):
        assert name in out
    assert out.rstrip().endswith("environment ok")


def test_a_missing_module_names_its_pip_package(monkeypatch, capsys):
    real = check._probe
    monkeypatch.setattr(check, "_probe", lambda m: None if m == "umap" else real(m))
    with pytest.raises(RuntimeError, match=r"%pip install umap-learn"):
        check.check_environment(extras=["umap"])
    assert "umap             -            MISSING" in capsys.readouterr().out
    assert check.check_environment(extras=["umap"], raise_on_missing=False) is False


def test_a_missing_package_is_installed_with_its_viz_extra(monkeypatch):
    monkeypatch.setattr(check, "_probe", lambda m: None)  # nothing at all: torch comes with it
    advice = check.install_advice([r for r in check.requirements(["ipywidgets"]) if not r.ok])
    assert advice.startswith('%pip install "hetcrf-lite[viz] @ git+')
    assert 'pip install -e ".[viz]"' in advice


def test_old_python_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(check, "MIN_PYTHON", (99, 0))
    with pytest.raises(RuntimeError, match="too old"):
        check.check_environment()


def test_unknown_extra_is_an_error():
    with pytest.raises(ValueError, match="unknown extra"):
        check.requirements(["pandas"])


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_checks_its_environment_first(path):
    nb = json.loads(path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    source = "".join(first["source"])
    assert "check_environment(" in source, f"{path.name}: the first code cell checks nothing"
    every = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    for module, extra in (("ipywidgets", "ipywidgets"), ("umap", "umap")):
        uses = f"import {module}" in every or (module == "umap" and "umap_projection" in every)
        if uses:
            assert f'"{extra}"' in source, f"{path.name} uses {module} but does not check it"
