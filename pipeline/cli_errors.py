"""How the command line reports errors: expected ones as one line for people, unexpected ones in full.

An expected error is one the pipeline raises on purpose, with a message that names the stage, table,
setting or option and says what to do: bad data (:class:`DataQualityError`), a stage that cannot go on
(:class:`PipelineError`), an unreadable source (``SourceError``), a wrong setting (``ConfigError``), a
broken contract, a warehouse or lake problem, a risk-model or device problem. The CLI prints it as
``error (<kind>): <message>`` on stderr and exits with status 1 (2 for configuration errors, as for a bad
option, which Click reports itself). The traceback is only for developers: ``--debug`` or ``EHR_DEBUG=1``
shows it. Anything else is a bug, and keeps its traceback.
"""

from __future__ import annotations

import os
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

err = Console(stderr=True)

CONFIG_EXIT = 2  # what Click uses for a bad option
ERROR_EXIT = 1


def known_error(exc: BaseException) -> tuple[str, int] | None:
    """(kind, exit status) of an expected error, None for anything else (a bug: keep the traceback)."""
    from pipeline.config import ConfigError
    from pipeline.contracts import ContractError
    from pipeline.device import DeviceError
    from pipeline.lake import PartitionIncompleteError, PartitionNotFoundError
    from pipeline.risk.errors import RiskError
    from pipeline.sources.base import SourceError
    from pipeline.tasks.runs import DataQualityError, PipelineError
    from pipeline.validate.errors import BatchValidationError, ConservationError
    from pipeline.warehouse.base import WarehouseError

    kinds: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str, int], ...] = (
        ((DataQualityError, BatchValidationError, ConservationError), "data quality", ERROR_EXIT),
        (ConfigError, "configuration", CONFIG_EXIT),
        (SourceError, "source", ERROR_EXIT),
        (ContractError, "contract", ERROR_EXIT),
        (WarehouseError, "warehouse", ERROR_EXIT),
        ((PartitionNotFoundError, PartitionIncompleteError), "lake", ERROR_EXIT),
        (RiskError, "risk", ERROR_EXIT),
        (DeviceError, "device", ERROR_EXIT),
        (PipelineError, "pipeline", ERROR_EXIT),
    )
    for types, kind, status in kinds:
        if isinstance(exc, types):
            return kind, status
    return None


def debug_wanted(ctx: Any) -> bool:
    if os.environ.get("EHR_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.params.get("debug"))


def one_line(message: str) -> str:
    """The message on one line (a wrapped DataQualityError keeps its every part)."""
    return " ".join(str(message).split())


class HandledGroup(TyperGroup):
    """The CLI's command group: every command runs inside the error handler described above."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:  # Click's own exit, abort and usage errors are none of the known ones
            found = known_error(exc)
            if found is None or debug_wanted(ctx):
                raise
            kind, status = found
            err.print(f"[red]error ({kind}):[/red] {escape(one_line(str(exc)))}", soft_wrap=True, highlight=False)
            err.print("[dim](the traceback: rerun with --debug or EHR_DEBUG=1)[/dim]", highlight=False)
            raise typer.Exit(status) from None
