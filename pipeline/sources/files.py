"""Reading MIMIC-style CSV / CSV.gz files as text columns with canonical names.

Headers are matched case-insensitively (real exports come in either case), CRLF line ends and quoted
multi-line free text are handled by pyarrow's CSV reader, and every column is read as text so that codes
keep their leading zeros and V/E prefixes. Bytes that are not UTF-8 never crash the read: the row is
flagged (``_bad_encoding``) and later set aside.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import yaml

from pipeline.config import SCHEMAS_DIR
from pipeline.sources.base import SourceError


@dataclass(frozen=True)
class TableMapping:
    file: str
    columns: dict[str, str]  # canonical → source column
    optional: frozenset[str]  # canonical names that may be absent from the file


def load_mapping(layout: str) -> dict[str, TableMapping]:
    raw = yaml.safe_load((SCHEMAS_DIR / "sources" / f"{layout}.yaml").read_text(encoding="utf-8"))
    return {
        name: TableMapping(spec["file"], dict(spec["columns"]), frozenset(spec.get("optional") or ()))
        for name, spec in raw["tables"].items()
    }


def find_file(root: Path, relative: str) -> Path:
    """``relative`` or ``relative.gz`` under ``root``, matching names case-insensitively."""
    if not root.is_dir():
        raise SourceError(f"source folder not found: {root} (set EHR_SOURCE_PATH)")
    folder = root
    parts = Path(relative).parts
    for part in parts[:-1]:
        match = next((p for p in folder.iterdir() if p.is_dir() and p.name.lower() == part.lower()), None)
        if match is None:
            raise SourceError(f"source table file not found: {root / relative}[.gz] (folder {part!r} is missing)")
        folder = match
    wanted = {parts[-1].lower(), parts[-1].lower() + ".gz"}
    matches = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower() in wanted)
    if not matches:
        raise SourceError(f"source table file not found: {root / relative} (nor .gz)")
    return matches[0]


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise SourceError(f"{path}: file is empty (no header line)")
    line = first.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return next(csv.reader(io.StringIO(line)))


def read_text_columns(path: Path, mapping: TableMapping) -> pa.Table:
    """The file's mapped columns as text, renamed to canonical names; absent optional columns are null."""
    header = _header(path)
    by_lower = {name.strip().lower(): name for name in header}
    include: dict[str, str] = {}
    missing: list[str] = []
    for canonical, source in mapping.columns.items():
        actual = by_lower.get(source.lower())
        if actual is None:
            if canonical not in mapping.optional:
                missing.append(source)
            continue
        include[canonical] = actual
    if missing:
        raise SourceError(f"{path}: required column(s) missing: {', '.join(missing)}")
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=64 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={actual: pa.binary() for actual in include.values()},
                include_columns=list(include.values()),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                check_utf8=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise SourceError(f"{path}: not a readable CSV file: {exc}") from None
    columns: dict[str, pa.Array] = {}
    bad_encoding = pa.array([False] * table.num_rows, pa.bool_())
    for canonical, actual in include.items():
        text, bad = _decode(table.column(actual).combine_chunks())
        columns[canonical] = text
        if bad is not None:
            bad_encoding = pc.or_(bad_encoding, bad)
    for canonical in mapping.columns:
        if canonical not in columns:
            columns[canonical] = pa.nulls(table.num_rows, pa.string())
    columns["_bad_encoding"] = bad_encoding
    return pa.table(columns)


def _decode(values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """Binary → UTF-8 text. Invalid values (rare) become the replacement-decoded text and are flagged."""
    try:
        return values.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    decoded, flags = [], []
    for raw in values.to_pylist():  # only reached when a column holds bytes that are not UTF-8
        if raw is None:
            decoded.append(None)
            flags.append(False)
            continue
        try:
            decoded.append(raw.decode("utf-8"))
            flags.append(False)
        except UnicodeDecodeError:
            decoded.append(raw.decode("utf-8", errors="replace"))
            flags.append(True)
    return pa.array(decoded, pa.string()), pa.array(flags, pa.bool_())


class FolderReader:
    """A MIMIC-IV-style folder (the default layout)."""

    layout = "mimic4"

    def __init__(self, root: Path, layout: str = "mimic4") -> None:
        if not root.is_dir():
            raise SourceError(f"source folder not found: {root} (set EHR_SOURCE_PATH)")
        self.root = root
        self.layout = layout
        self.mapping = load_mapping(layout)

    def read(self, table: str) -> pa.Table:
        spec = self.mapping[table]
        return read_text_columns(find_file(self.root, spec.file), spec)
