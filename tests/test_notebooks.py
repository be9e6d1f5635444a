"""The course notebooks are committed executed, error-free, and follow the course's shape."""
import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COURSE = [
    "01_metapaths", "02_han_encoder", "03_generative_channel", "04_contrastive_channel",
    "05_infonce_gradient_imbalance", "06_positive_augmentation", "07_hetcrf_end_to_end",
    "08_umap_embeddings", "09_when_channels_fight",
]


def load(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def _parse_cell(source: str) -> ast.Module:
    """A code cell as Python: IPython's ``%magic`` and ``!shell`` lines are left out."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def test_the_course_is_complete():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == COURSE


@pytest.mark.parametrize("name", COURSE)
def test_notebook_is_stored_executed_without_errors(name):
    cells = code_cells(load(name))
    assert cells, f"{name} has no code"
    unexecuted = [i for i, c in enumerate(cells) if c.get("execution_count") is None]
    assert not unexecuted, f"{name}: code cells {unexecuted} were never executed; run make figures"
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name} is stored with an error output: {errors[0].get('ename')}"


@pytest.mark.parametrize("name", COURSE)
def test_notebook_follows_the_course_shape(name):
    nb = load(name)
    cells = code_cells(nb)
    sources = ["".join(c["source"]) for c in cells]
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), \
        f"{name}: no cell tagged 'parameters'"
    checks = [node for s in sources for node in ast.walk(_parse_cell(s))
              if isinstance(node, ast.Assert)]
    assert checks, f"{name} asserts nothing (an assert statement, not the word in a comment)"
    constant = [ast.unparse(c.test) for c in checks if isinstance(c.test, ast.Constant)]
    assert not constant, f"{name}: asserts that cannot fail: {constant}"
    assert not any("sys.path" in s for s in sources), f"{name} edits sys.path"
    assert any("save_figure" in s for s in sources), f"{name} saves no figure"
    markdown = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for heading in ("goals", "Summary", "Try it"):
        assert heading.lower() in markdown.lower(), f"{name} lacks its '{heading}' section"
