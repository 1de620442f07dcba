"""Runs the JSON suites with Great Expectations 1.x and maps results back to rows.

One context per ``validate_batch`` call: ephemeral when no Data Docs are wanted, otherwise a file
context in a temporary directory whose Data Docs site writes to ``data_docs_dir``. Each table is a
pandas dataframe asset with a whole-dataframe batch definition; its suite runs through a
ValidationDefinition with ``result_format=COMPLETE`` so every unexpected row index comes back.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.validate.suites import ExpectationSpec, SuiteSpec

log = logging.getLogger(__name__)

DOCS_SITE = "ehr_validation"
ORDINAL_KEY = "ehr_ordinal"
RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 10,
}


@dataclass
class ExpectationOutcome:
    spec: ExpectationSpec
    ordinal: int
    success: bool
    unexpected_count: int | None
    unexpected_percent: float | None
    row_indices: np.ndarray | None  # positions in the validated frame; None when GX gave none
    observed: Any = None
    error: str | None = None


class GxRunner:
    def __init__(self, run_id: str, data_docs_dir: Path | None = None) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.run_id = run_id
        self.data_docs_dir = Path(data_docs_dir) if data_docs_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.data_docs_dir is None:
                self.context = gx.get_context(mode="ephemeral")
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="ehr-gx-")
                self.context = gx.get_context(mode="file", project_root_dir=self._tmp.name)
                self.data_docs_dir.mkdir(parents=True, exist_ok=True)
                self.context.add_data_docs_site(
                    site_name=DOCS_SITE,
                    site_config={
                        "class_name": "SiteBuilder",
                        "show_how_to_buttons": False,
                        "store_backend": {
                            "class_name": "TupleFilesystemStoreBackend",
                            "base_directory": str(self.data_docs_dir.resolve()),
                        },
                        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    },
                )
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_pandas("ehr_batch")

    def run(self, suite: SuiteSpec, frame: pd.DataFrame, parameters: dict[str, Any]) -> list[ExpectationOutcome]:
        from great_expectations.core.run_identifier import RunIdentifier

        gx = self._gx
        expectations = []
        for ordinal, entry in enumerate(suite.raw["expectations"]):
            entry = copy.deepcopy(entry)
            entry.setdefault("meta", {})[ORDINAL_KEY] = ordinal
            expectations.append(entry)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asset = self.datasource.add_dataframe_asset(name=suite.table)
            batch_definition = asset.add_batch_definition_whole_dataframe(name="ds_batch")
            gx_suite = self.context.suites.add(
                gx.ExpectationSuite(name=suite.raw.get("name", suite.table), expectations=expectations,
                                    meta=suite.raw.get("meta", {}))
            )
            definition = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{suite.table}_ds", data=batch_definition, suite=gx_suite)
            )
            result = definition.run(
                batch_parameters={"dataframe": frame.reset_index(drop=True)},
                expectation_parameters=parameters,
                result_format=RESULT_FORMAT,
                run_id=RunIdentifier(run_name=self.run_id),
            )
        outcomes = []
        for item in result.results:
            ordinal = int(item.expectation_config.meta[ORDINAL_KEY])
            spec = suite.expectations[ordinal]
            error = _exception_message(item.exception_info)
            detail = item.result or {}
            indices = detail.get("unexpected_index_list")
            outcomes.append(
                ExpectationOutcome(
                    spec=spec,
                    ordinal=ordinal,
                    success=bool(item.success) and error is None,
                    unexpected_count=detail.get("unexpected_count"),
                    unexpected_percent=detail.get("unexpected_percent"),
                    row_indices=None if indices is None else np.asarray(indices, dtype=np.int64),
                    observed=detail.get("observed_value"),
                    error=error,
                )
            )
        return sorted(outcomes, key=lambda outcome: outcome.ordinal)

    def build_docs(self) -> Path | None:
        if self.data_docs_dir is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.context.build_data_docs(site_names=[DOCS_SITE])
        index = self.data_docs_dir / "index.html"
        return index if index.exists() else None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _exception_message(info: Any) -> str | None:
    if not info:
        return None
    if isinstance(info, dict) and "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    if isinstance(info, dict):  # keyed by metric configuration
        for value in info.values():
            message = _exception_message(value if isinstance(value, dict) else getattr(value, "__dict__", None))
            if message:
                return message
    return None
