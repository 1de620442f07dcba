"""Expectation suites as data: schemas/expectations/<table>.json, one GX ExpectationSuite per table.

Each expectation carries ``meta``:

- ``rule``: the quarantine rule name written to ``ehr.quarantine.rule`` (row level) or named in the
  batch failure (batch level);
- ``level``: ``row`` (failing rows are quarantined) or ``batch`` (the whole day fails/warns);
- optional ``detail_column``: a column whose value for the failing row is quoted in ``detail``
  (e.g. ``_phi_entities`` names the PHI entity types found, never the text);
- optional ``parent``: ``{"table": ..., "key": ...}`` for ``parent_quarantined`` rules, so ``detail``
  names the parent row and its rule;
- optional ``enabled_by``: a boolean ``ValidationConfig`` field that switches the expectation on.

The order of expectations in a file is the rule priority: a row failing several expectations is
quarantined once, under the first one; the others are listed in ``detail``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pipeline.validate.errors import Messages

COLUMN_KWARGS = ("column", "column_A", "column_B")


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of a suite, with what the stage needs from its meta."""

    type: str
    kwargs: dict[str, Any]
    meta: dict[str, Any]
    label: str  # e.g. "expect_column_values_to_not_be_null(subject_id)"

    @property
    def rule(self) -> str:
        return self.meta["rule"]

    @property
    def level(self) -> Literal["row", "batch"]:
        return self.meta["level"]

    @property
    def columns(self) -> list[str]:
        names = [self.kwargs[k] for k in COLUMN_KWARGS if k in self.kwargs]
        names += list(self.kwargs.get("column_list", []))
        condition = self.kwargs.get("row_condition")
        if isinstance(condition, dict):
            names += _condition_columns(condition)
        return names


@dataclass(frozen=True)
class SuiteSpec:
    table: str
    path: Path
    raw: dict[str, Any]
    expectations: tuple[ExpectationSpec, ...]

    def columns(self) -> set[str]:
        names: set[str] = set()
        for expectation in self.expectations:
            names.update(expectation.columns)
            if "detail_column" in expectation.meta:
                names.add(expectation.meta["detail_column"])
        return names

    def enabled(self, flags: dict[str, bool]) -> SuiteSpec:
        """The suite without expectations switched off by a config flag (e.g. ``phi_gate``)."""
        kept = tuple(e for e in self.expectations if flags.get(e.meta.get("enabled_by", ""), True))
        raw = dict(self.raw, expectations=[self.raw["expectations"][i] for i, e in
                                           enumerate(self.expectations) if e in kept])
        return SuiteSpec(self.table, self.path, raw, kept)


def _condition_columns(condition: dict[str, Any]) -> list[str]:
    names = []
    if isinstance(condition.get("column"), dict):
        names.append(condition["column"]["name"])
    for child in condition.get("conditions", []):
        names += _condition_columns(child)
    return names


def _label(expectation_type: str, kwargs: dict[str, Any]) -> str:
    """A readable, stable name for validation_results, e.g. ``expect_..._regex(icd_code) if icd_version == 9``."""
    columns = [kwargs[k] for k in COLUMN_KWARGS if k in kwargs] + list(kwargs.get("column_list", []))
    label = f"{expectation_type}({','.join(columns)})"
    condition = kwargs.get("row_condition")
    if isinstance(condition, dict) and condition.get("type") == "comparison":
        label += f" if {condition['column']['name']} {condition['operator']} {condition['parameter']}"
    return label


@cache
def _load_suite(path: Path, mtime_ns: int) -> SuiteSpec:
    raw = json.loads(path.read_text())
    specs = []
    seen: dict[str, int] = {}
    for entry in raw.get("expectations", []):
        meta = entry.get("meta") or {}
        if "rule" not in meta or meta.get("level") not in ("row", "batch"):
            raise ValueError(Messages.E203_BAD_SUITE.format(path=path, problem=f"bad meta on {entry.get('type')}"))
        label = _label(entry["type"], entry.get("kwargs", {}))
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:  # keep labels unique within a suite: they key validation_results rows
            label = f"{label}#{seen[label]}"
        specs.append(ExpectationSpec(entry["type"], entry.get("kwargs", {}), meta, label))
    table = raw.get("meta", {}).get("table", path.stem)
    return SuiteSpec(table, path, raw, tuple(specs))


def load_suite(suites_dir: Path, table: str) -> SuiteSpec:
    """Read ``<suites_dir>/<table>.json`` (cached per path and modification time)."""
    path = (Path(suites_dir) / f"{table}.json").resolve()
    if not path.exists():
        raise ValueError(Messages.E203_BAD_SUITE.format(path=path, problem="file not found"))
    return _load_suite(path, path.stat().st_mtime_ns)
