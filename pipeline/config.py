"""One settings object for the whole pipeline.

Values come, highest priority first, from ``EHR_*`` environment variables, then ``pipeline.yaml``
(the file named by ``EHR_CONFIG``, else ``./pipeline.yaml``), then the defaults below.
A wrong value fails at start with a message naming the setting.
"""

from __future__ import annotations

import difflib
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMAS_DIR = REPO_ROOT / "schemas"
SQL_DIR = REPO_ROOT / "sql"
DAGS_DIR = REPO_ROOT / "dags"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names it."""


class _YamlSource(PydanticBaseSettingsSource):
    """Reads ``pipeline.yaml`` (keys are the field names, without the EHR_ prefix, any case).

    A key that is not a setting is an error, not ignored: a typo such as ``source_layot`` would
    otherwise silently leave the default in force.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = Path(os.environ.get("EHR_CONFIG", "pipeline.yaml"))
        self._data: dict[str, Any] = {}
        if not path.is_file():
            return
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
        self._data = {str(k).lower(): v for k, v in loaded.items()}
        known = set(settings_cls.model_fields)
        unknown = sorted(k for k in self._data if k not in known)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(hints)}")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class ValidationSettings(BaseModel):
    """How strict the validation stage is: the limits and batch-level thresholds around its row rules.

    Defined once: :class:`Settings` reads them from ``EHR_*`` variables and ``pipeline.yaml``, and the stage takes
    them (with its own extras) as :class:`pipeline.validate.ValidationConfig`.
    """

    max_quarantine_share: float = Field(default=0.2, ge=0, le=1)
    # Tiny days (a handful of rows) make shares meaningless: 1 bad row of 3 is 33 %.
    min_rows_for_share_check: int = Field(default=20, ge=0)
    volume_factor: float = Field(default=5.0, gt=1)
    volume_min_days: int = Field(default=3, ge=1)
    on_batch_failure: Literal["fail", "warn"] = "fail"
    note_max_chars: int = Field(default=200_000, gt=0)
    phi_gate: bool = True
    # The PHI tagger's cut-off on P(identifier), per token and on a finding's mean over its tokens: lower finds
    # more identifiers and flags more clean notes.
    phi_threshold: float = Field(default=0.5, gt=0, lt=1, description="PHI tagger threshold on P(identifier)")
    # A day with no rows in any table is a quiet day (or an undelivered feed), not a broken one: its volume
    # check warns by default, so such a day succeeds with zero rows.
    empty_day: Literal["warn", "fail"] = Field(
        default="warn", description="a day with no rows in any table: warn (succeeds with zero rows) or fail"
    )


class Settings(ValidationSettings, BaseSettings):
    """Pipeline configuration (contract: the EHR_* names in DESIGN.md); the validation fields come from
    :class:`ValidationSettings`."""

    model_config = SettingsConfigDict(env_prefix="EHR_", extra="ignore", validate_default=True)

    workdir: Path = Field(default=Path(".ehr"), description="root of lake, warehouse, airflow home, models")
    source_path: Path | None = Field(default=None, description="MIMIC folder; default <workdir>/source")
    source_layout: Literal["mimic4", "mimic3", "sql"] = "mimic4"
    source_url: str | None = Field(default=None, description="SQLAlchemy URL when source_layout=sql")
    source_schemas: str | None = Field(
        default=None,
        description="sql layout: schemas to search for the tables, comma-separated (e.g. mimiciv_hosp,mimiciv_note), "
        "and/or per table (notes=mimiciv_note); default per table from schemas/sources/sql.yaml, then unqualified",
    )
    source_day_shift: int = Field(
        default=0, description="days added to a run date to get the source date (MIMIC shifts years)"
    )
    warehouse_url: str | None = Field(default=None, description="duckdb:///path or postgresql://...")
    warehouse_conn_id: str | None = Field(default=None, description="Airflow Connection id for the warehouse")
    ner_model_path: Path | None = None
    phi_model_path: Path | None = Field(
        default=None, description="PHI tagger checkpoint; when set it must load (the gate fails closed); "
        "default <workdir>/models/phi, used when present"
    )
    risk_model_path: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"

    part_rows: int = Field(default=5000, gt=0, description="target rows per lake part file")
    backfill_chunk: str = Field(
        default="month", pattern=r"^\s*(month|week|[1-9]\d*\s*(d|days?)?)\s*$",
        description="how `backfill` cuts its range: month (calendar), week (ISO) or N days",
    )
    backfill_chunk_rows: int = Field(
        default=150_000, ge=0,
        description="most source rows in one backfill chunk: a bigger chunk is cut at a day boundary, so a "
                    "chunk's memory does not grow with the source (0: no limit)",
    )
    backfill_duckdb: str = Field(
        default="memory_limit=256MB&threads=1", pattern=r"^([a-z_]+=[^&=]+(&[a-z_]+=[^&=]+)*)?$",
        description="DuckDB options of the warehouse connection a `backfill` holds per chunk (URL query syntax; options "
                    "in the warehouse URL win): its checkpoints stay within the memory limit",
    )
    schedule: str = "@daily"
    start_date: date = date(2026, 1, 1)
    catchup: bool = False
    retries: int = Field(default=2, ge=0)
    day_lock_wait_seconds: int = Field(
        default=1800, ge=0, description="how long a run waits for another run of the same day before failing"
    )
    raw_retention: Literal["until_loaded", "keep"] = Field(
        default="until_loaded",
        description="raw lake partitions of tables with free text: removed once the day loaded, or kept",
    )
    gpu_queue: str = "gpu"
    gpu_pool: str = "gpu"
    gpu_pool_slots: int = Field(default=2, gt=0)
    backfill_pool: str = Field(default="backfill", description="Airflow pool of the ehr_history DAG's chunk tasks")
    backfill_pool_slots: int = Field(default=2, gt=0)

    require_notes: bool = Field(
        default=False,
        description="a source without the notes module (MIMIC-IV-Note) fails at extract instead of running without "
        "notes, NER and the note-based risk features (recorded as a warning)",
    )

    # NER and risk
    ner_enabled: bool = True
    risk_enabled: bool = True
    ner_max_length: int | None = Field(default=None, gt=16)
    ner_token_budget: int | None = Field(default=None, gt=0)
    ner_precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        default="auto", description="auto: fp32 on CPU, bf16/fp16 autocast on CUDA; bf16 on CPU is an opt-in speed-up;"
        " int8: dynamic int8 quantization of the linear layers (CPU only)"
    )
    ner_fused_cpu: bool = Field(
        default=True,
        description="fp32 on CPU: run BERT-style models through fused oneDNN kernels (same logits, checked on load);"
        " false runs the plain transformers forward",
    )
    charlson_weights: Literal["charlson1987", "quan2011"] = "charlson1987"
    risk_band_medium: float = Field(default=0.10, ge=0, le=1)
    risk_band_high: float = Field(default=0.25, ge=0, le=1)

    # run report and drift checks
    report_days: int = Field(default=30, ge=1, description="days the report index shows trends over")
    drift_reference_days: int = Field(default=14, ge=1, description="trailing days a day's drift is measured against")
    drift_psi_threshold: float = Field(
        default=0.25, gt=0, description="population stability index above which a metric has drifted (0.25: a major shift)"
    )
    drift_min_rows: int = Field(default=20, ge=1, description="rows a day and its reference need before PSI is judged")
    on_drift: Literal["warn", "fail"] = Field(
        default="warn", description="a drifted metric: warn (the report task succeeds) or fail (it fails, no retries)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)

    @field_validator("warehouse_url")
    @classmethod
    def _check_warehouse_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("duckdb://", "postgresql://", "postgres://", "postgresql+")):
            raise ValueError("must start with duckdb:/// or postgresql://")
        return value

    @field_validator("source_schemas")
    @classmethod
    def _check_source_schemas(cls, value: str | None) -> str | None:
        if value is not None:
            from pipeline.sources.sql import (
                parse_source_schemas,  # the SQL source's own syntax; loaded when set
            )

            parse_source_schemas(value)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.source_layout == "sql" and not self.source_url:
            raise ValueError("source_layout=sql needs EHR_SOURCE_URL")
        if self.risk_band_medium > self.risk_band_high:
            raise ValueError("risk_band_medium must not exceed risk_band_high")
        return self

    # derived paths -------------------------------------------------------------------------
    @property
    def workdir_abs(self) -> Path:
        return self.workdir.expanduser().resolve()

    @property
    def source_dir(self) -> Path:
        return (self.source_path or self.workdir_abs / "source").expanduser().resolve()

    @property
    def lake_dir(self) -> Path:
        return self.workdir_abs / "lake"

    @property
    def airflow_home(self) -> Path:
        return self.workdir_abs / "airflow"

    @property
    def models_dir(self) -> Path:
        return self.workdir_abs / "models"

    @property
    def ner_model_dir(self) -> Path:
        return (self.ner_model_path or self.models_dir / "ner").expanduser().resolve()

    @property
    def phi_model_dir(self) -> Path:
        return (self.phi_model_path or self.models_dir / "phi").expanduser().resolve()

    @property
    def risk_model_dir(self) -> Path:
        return (self.risk_model_path or self.models_dir / "risk").expanduser().resolve()

    @property
    def data_docs_dir(self) -> Path:
        return self.workdir_abs / "data_docs"

    @property
    def reports_dir(self) -> Path:
        return self.workdir_abs / "reports"

    @property
    def dag_default_args(self) -> dict[str, Any]:
        """The DAGs' task defaults: retries (``EHR_RETRIES``) with exponential backoff; deterministic errors are
        never retried (:func:`pipeline.tasks.runs.fails_without_retry`)."""
        return {"owner": "data-engineering", "retries": self.retries, "retry_delay": timedelta(minutes=1),
                "retry_exponential_backoff": True, "max_retry_delay": timedelta(minutes=30)}

    @property
    def warehouse(self) -> str:
        """The warehouse URL in force (the embedded DuckDB file by default)."""
        if self.warehouse_url:
            return self.warehouse_url
        if self.warehouse_conn_id:
            return _url_from_airflow_connection(self.warehouse_conn_id)
        return f"duckdb:///{self.workdir_abs / 'warehouse.duckdb'}"


def _url_from_airflow_connection(conn_id: str) -> str:
    from airflow.sdk import BaseHook  # imported lazily: only deployments that name a connection need it

    conn = BaseHook.get_connection(conn_id)
    return conn.get_uri().replace("postgres://", "postgresql://", 1)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; turn pydantic's error into one that names each bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"EHR_{name.upper()}" if name != "settings" else "settings"
            problems.append(f"{env}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
