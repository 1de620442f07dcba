"""The import rules of docs/ARCHITECTURE.md, checked on the source (module-level and function-level imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT

PACKAGE = REPO_ROOT / "pipeline"
STAGES = ("sources", "validate", "nlp", "risk")
# what each area must never import (a stage may import contracts, config, device and lake-free helpers below it)
FORBIDDEN: dict[str, set[str]] = {
    **{stage: {"tasks", "warehouse", "cli", "bench", "airflow_local", "synth", *(set(STAGES) - {stage})}
       for stage in STAGES},
    "warehouse": {"tasks", "cli", "bench", "airflow_local", "synth", *STAGES},
    "lake": {"tasks", "cli", "bench", "airflow_local", "synth", "warehouse", *STAGES},
    "tasks": {"cli", "bench", "airflow_local", "synth"},
    "contracts": {"tasks", "cli", "bench", "airflow_local", "synth", "warehouse", "lake", *STAGES},
    "synth": {"tasks", "cli", "bench", "airflow_local", "warehouse", *STAGES},
    # the report's drift math, plots and pages: tables in, files out; the report task reads the warehouse
    "report": {"tasks", "cli", "bench", "airflow_local", "synth", "warehouse", "lake", *STAGES},
}


def _area(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _imported_areas(path: Path) -> set[str]:
    """Top-level pipeline areas imported anywhere in the file (``pipeline.nlp.ner`` → ``nlp``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline":
                names = [f"pipeline.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pipeline" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if _area(p) in FORBIDDEN)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_architecture_imports_follow_the_layers(path: Path) -> None:
    area = _area(path)
    wrong = sorted(_imported_areas(path) & FORBIDDEN[area])
    assert not wrong, f"{path.relative_to(REPO_ROOT)} ({area}) imports {wrong}: see docs/ARCHITECTURE.md"


def test_architecture_rule_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: a stage importing the warehouse is found, inside a function too."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from pipeline.warehouse import open_warehouse\n    import pipeline.nlp.ner\n")
    assert _imported_areas(module) == {"warehouse", "nlp"}


def test_architecture_doc_names_every_package() -> None:
    doc = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    packages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    missing = [name for name in packages if f"{name}/" not in doc]
    assert not missing, f"docs/ARCHITECTURE.md does not mention {missing}"
