"""The project's install files agree with each other."""
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(meta["dependencies"]) | set(meta["optional-dependencies"]["dev"])


def _environment_requirements() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {req for req in pip if not req.startswith("-e")}


def test_environment_yml_mirrors_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_shipped_configs_load_and_validate():
    from hetcrf_lite.config import CONFIG_DIR, default_config

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert names == ["acm", "aminer", "dblp", "freebase", "synthetic"]
    for name in names:
        assert default_config(name).dataset == name


def test_ci_runs_make_test_with_shared_data():
    script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in script and "HETCRF_DATA" in script


def test_wheel_ships_the_configs_and_checksums(tmp_path):
    # A non-editable install must find the shipped configs and the dataset checksums.
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")  # the build backend, used without an isolated env
    # (setuptools writes the git-ignored build/ and *.egg-info next to the sources)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", str(ROOT), "-w", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("hetcrf_lite-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = (ROOT / "hetcrf_lite" / "configs").glob("*.yaml")
    shipped = {f"hetcrf_lite/configs/{p.name}" for p in configs}
    assert len(shipped) == 5 and shipped <= names
    assert "hetcrf_lite/SHA256SUMS" in names


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def _name(requirement: str) -> str:
    import re

    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_constraints_pin_every_requirement_but_torch_and_the_makefile_uses_them():
    # torch stays out so that TORCH_SPEC (or a GPU build already installed) is never overridden
    pins = _pins()
    assert "torch" not in pins and all(v and "+" not in v for v in pins.values())
    wanted = {_name(r) for r in _pyproject_requirements()} - {"torch"}
    assert wanted <= set(pins), sorted(wanted - set(pins))
    makefile = (ROOT / "Makefile").read_text()
    assert '-m pip install -q -c constraints.txt -e ".[dev]"' in makefile
    assert "$(BIN)/.installed: pyproject.toml constraints.txt" in makefile


def test_the_project_venv_holds_the_pinned_versions():
    import sys
    from importlib.metadata import PackageNotFoundError, version

    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not the project's .venv (conda or another environment)")
    pins = _pins()
    wrong = {}
    for name in sorted({_name(r) for r in _pyproject_requirements()} - {"torch"}):
        try:
            got = version(name)
        except PackageNotFoundError:
            got = None
        if got != pins[name]:
            wrong[name] = (got, pins[name])
    assert not wrong, f"installed vs constraints.txt: {wrong}; run make venv"


def test_version_license_and_citation_agree():
    import hetcrf_lite

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert hetcrf_lite.__version__ == meta["version"] == str(citation["version"])
    assert f"\n## {meta['version']}\n" in (ROOT / "CHANGELOG.md").read_text()
    assert meta["license"]["text"] == citation["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cited = [citation["preferred-citation"]["title"]] + [r["title"] for r in citation["references"]]
    assert any("Contrastive-Reconstruction" in t for t in cited)  # the HetCRF paper
    assert any("Co-contrastive" in t for t in cited)  # HeCo, the benchmarks' source
