"""The project's install files agree with each other."""
import tomllib
from pathlib import Path

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
