"""Runs the JSON suites with Great Expectations 1.x and maps results back to rows.

One in-memory (ephemeral) context per ``validate_batch`` call: suites, the pandas datasource and
validation definitions live only for the call, so concurrent runs share no GX configuration file.
When Data Docs are wanted, the context's validation results store is file-backed and persistent
(``results_dir``, by default ``<workdir>/gx/validations``) and its Data Docs site writes to
``data_docs_dir``: GX's index builder lists every stored result and removes pages whose result is
gone, so docs accumulate across days, and a rerun of a day replaces that day's pages (the runner
removes the day's results of earlier runs before building). Each table is a pandas dataframe asset
with a whole-dataframe batch definition; its suite runs through a ValidationDefinition with
``result_format=COMPLETE`` so every unexpected row index comes back.
"""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.validate.data_docs_offline import make_offline
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


def run_name_prefix(ds: dt.date) -> str:
    """GX run names start with the day, so a day's stored results (and Data Docs pages) can be found."""
    return f"{ds.isoformat()}__"


class GxRunner:
    def __init__(self, run_id: str, data_docs_dir: Path | None = None, *, ds: dt.date | None = None,
                 results_dir: Path | None = None) -> None:
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.run_id = run_id
        self.ds = ds
        self.data_docs_dir = Path(data_docs_dir).resolve() if data_docs_dir is not None else None
        self.results_dir: Path | None = None
        # One run identifier for every table of the batch: run name (day + pipeline run id) and time.
        self.run_identifier = RunIdentifier(
            run_name=(run_name_prefix(ds) if ds else "") + run_id, run_time=dt.datetime.now(dt.UTC))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.data_docs_dir is None:
                self.context = gx.get_context(mode="ephemeral")
            else:
                self.results_dir = Path(results_dir or self.data_docs_dir.parent / "gx" / "validations").resolve()
                self.results_dir.mkdir(parents=True, exist_ok=True)
                self.data_docs_dir.mkdir(parents=True, exist_ok=True)
                self.context = gx.get_context(project_config=_project_config(self.results_dir, self.data_docs_dir))
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_pandas("ehr_batch")

    def run(self, suite: SuiteSpec, frame: pd.DataFrame, parameters: dict[str, Any]) -> list[ExpectationOutcome]:
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
                run_id=self.run_identifier,
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
        """Build the Data Docs site from every stored result; the day's results of earlier runs go first."""
        if self.data_docs_dir is None or self.results_dir is None:
            return None
        with warnings.catch_warnings(), _exclusive(self.results_dir.parent / ".data_docs.lock"):
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.ds is not None:
                self._forget_earlier_runs_of_the_day()
            self.context.build_data_docs(site_names=[DOCS_SITE])
            make_offline(self.data_docs_dir)  # GX's pages load their CSS and JS from CDNs: local copies instead
        index = self.data_docs_dir / "index.html"
        return index if index.exists() else None

    def _forget_earlier_runs_of_the_day(self) -> None:
        store = self.context.validation_results_store
        prefix = run_name_prefix(self.ds)
        mine = self.run_identifier.to_tuple()
        stale = [key for key in store.list_keys()
                 if key.run_id.run_name.startswith(prefix) and key.run_id.to_tuple() != mine]
        for key in stale:
            store.remove_key(key)
        if stale:
            log.info("data docs: replaced earlier results of the day", extra={"ds": str(self.ds), "removed": len(stale)})

    def close(self) -> None:
        """Nothing to release: the context is in memory, stored results and docs are meant to stay."""


def _project_config(results_dir: Path, data_docs_dir: Path) -> Any:
    """In-memory stores, except validation results: files under ``results_dir`` (the docs' source)."""
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults

    defaults = InMemoryStoreBackendDefaults()
    stores = copy.deepcopy(defaults.stores)
    stores[defaults.validation_results_store_name] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(results_dir)},
    }
    return DataContextConfig(
        store_backend_defaults=defaults,
        stores=stores,
        data_docs_sites={
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(data_docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,  # hospital hosts are offline; nothing leaves the machine
    )


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One docs build at a time (days validated in parallel share the index page)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
