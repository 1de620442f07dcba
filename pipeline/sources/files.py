"""Reading MIMIC-style CSV / CSV.gz files as text columns with canonical names, streamed in batches.

Headers are matched case-insensitively (real exports come in either case), CRLF line ends and quoted
multi-line free text are handled by pyarrow's CSV reader, and every column is read as text so that codes
keep their leading zeros and V/E prefixes. Files are read as a stream of record batches
(``pyarrow.csv.open_csv``), so a 100-million-row ``labevents`` never has to fit in memory: the extraction
keeps only each batch's rows of the wanted days. Compression is recognised by the file's first bytes (gzip
magic), not by the case of its name, so ``ADMISSIONS.CSV.GZ`` reads like ``admissions.csv.gz``. Bytes that
are not UTF-8 never crash the read: the row is flagged (``_bad_encoding``) and later set aside.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import yaml

from pipeline.config import SCHEMAS_DIR
from pipeline.sources.base import SourceError, decode_utf8

BLOCK_SIZE = 16 << 20  # bytes of CSV per record batch: large enough to amortise, small enough to stream
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Titles:
    """A dictionary file whose titles are looked up by code (and version, when it has one) at extraction."""

    file: str
    code: str
    title: str
    version: str | None = None


@dataclass(frozen=True)
class TableMapping:
    file: str
    columns: dict[str, str]  # canonical → source column
    optional: frozenset[str]  # canonical names that may be absent from the file
    files: tuple[str, ...] = ()  # read one after another in place of ``file`` (each may be absent, not all)
    module: str | None = None  # the release module the files belong to, for messages (note, icu, ...)
    skip_if_absent: bool = False  # a source without the files runs without the table (a recorded warning)
    titles: Titles | None = None

    @property
    def all_files(self) -> tuple[str, ...]:
        return self.files or (self.file,)


def load_mapping(layout: str) -> dict[str, TableMapping]:
    raw = yaml.safe_load((SCHEMAS_DIR / "sources" / f"{layout}.yaml").read_text(encoding="utf-8"))
    out = {}
    for name, spec in raw["tables"].items():
        files = tuple(spec.get("files") or ())
        titles = spec.get("titles")
        out[name] = TableMapping(
            spec.get("file") or (files[0] if files else ""), dict(spec["columns"]),
            frozenset(spec.get("optional") or ()), files, spec.get("module"), spec.get("if_absent") == "skip",
            Titles(**titles) if titles else None,
        )
    return out


def locate_file(root: Path, relative: str) -> tuple[Path | None, str]:
    """(``relative`` or ``relative.gz`` under ``root``, names matched case-insensitively, or None; why not)."""
    if not root.is_dir():
        raise SourceError(f"source folder not found: {root} (set EHR_SOURCE_PATH)")
    folder = root
    parts = Path(relative).parts
    for part in parts[:-1]:
        match = next((p for p in folder.iterdir() if p.is_dir() and p.name.lower() == part.lower()), None)
        if match is None:
            return None, f"source table file not found: {root / relative}[.gz] (folder {part!r} is missing)"
        folder = match
    wanted = {parts[-1].lower(), parts[-1].lower() + ".gz"}
    matches = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower() in wanted)
    if not matches:
        return None, f"source table file not found: {root / relative} (nor .gz)"
    return matches[0], ""


def find_file(root: Path, relative: str) -> Path:
    """``relative`` or ``relative.gz`` under ``root``, matching names case-insensitively."""
    path, why = locate_file(root, relative)
    if path is None:
        raise SourceError(why)
    return path


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        gz = fh.read(2) == _GZIP_MAGIC
    if not gz and path.name.lower().endswith(".gz"):
        raise SourceError(f"{path}: named .gz but not gzip-compressed")
    return gz


def _header(path: Path, gz: bool) -> tuple[list[str], int]:
    """Column names of the first line, and its length in bytes."""
    try:
        with (gzip.open(path, "rb") if gz else path.open("rb")) as fh:
            first = fh.readline()
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot be read: {exc}") from None
    if not first.strip():
        raise SourceError(f"{path}: file is empty (no header line)")
    line = first.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return next(csv.reader(io.StringIO(line))), len(first)


def _columns_to_read(path: Path, header: list[str], mapping: TableMapping) -> dict[str, str]:
    """canonical → actual header name of the mapped columns present; a missing required one is an error."""
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
    return include


def iter_text_batches(path: Path, mapping: TableMapping, *, block_size: int = BLOCK_SIZE) -> Iterator[pa.Table]:
    """The file's mapped columns as text, renamed to canonical names, one table per CSV block.

    Absent optional columns are null. At least one (possibly empty) table is yielded, so a header-only
    file still gives the columns.
    """
    gz = _is_gzip(path)
    header, header_bytes = _header(path, gz)
    include = _columns_to_read(path, header, mapping)
    stream = pa.input_stream(str(path), compression="gzip" if gz else None)
    try:
        reader = pacsv.open_csv(
            stream,
            # the first block must hold the whole header line
            read_options=pacsv.ReadOptions(block_size=max(block_size, 2 * header_bytes)),
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
        yielded = False
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            yield _canonical(batch, include, mapping)
            yielded = True
        if not yielded:
            empty = pa.RecordBatch.from_pylist([], schema=pa.schema([(a, pa.binary()) for a in include.values()]))
            yield _canonical(empty, include, mapping)
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable CSV file: {exc}") from None
    finally:
        stream.close()


def _canonical(batch: pa.RecordBatch, include: dict[str, str], mapping: TableMapping) -> pa.Table:
    n = batch.num_rows
    columns: dict[str, pa.Array] = {}
    bad_encoding = None
    for canonical, actual in include.items():
        text, bad = decode_utf8(batch.column(actual))
        columns[canonical] = text
        if bad is not None:
            bad_encoding = bad if bad_encoding is None else pc.or_(bad_encoding, bad)
    for canonical in mapping.columns:
        if canonical not in columns:
            columns[canonical] = pa.nulls(n, pa.string())
    columns["_bad_encoding"] = bad_encoding if bad_encoding is not None else pa.array(np.zeros(n, dtype=bool))
    return pa.table(columns)


def _with_titles(batch: pa.Table, titles: pa.Table | None, spec: Titles | None) -> pa.Table:
    """``batch`` with ``long_title`` looked up by icd_code (and icd_version when both have one)."""
    n = batch.num_rows
    if titles is None or spec is None:
        found = pa.nulls(n, pa.string())
    else:
        code = pc.utf8_trim_whitespace(batch.column("icd_code").combine_chunks())
        keys, by = [code], [pc.utf8_trim_whitespace(titles.column("code"))]
        if spec.version and "icd_version" in batch.column_names:
            keys.append(pc.fill_null(batch.column("icd_version").combine_chunks(), ""))
            by.append(pc.fill_null(titles.column("version"), ""))
        joined = pc.binary_join_element_wise(*keys, "|") if len(keys) > 1 else keys[0]
        index = pc.binary_join_element_wise(*by, "|") if len(by) > 1 else by[0]
        found = pc.take(titles.column("title"), pc.index_in(joined, value_set=index))
    if "long_title" in batch.column_names:
        return batch.set_column(batch.column_names.index("long_title"), "long_title", found)
    return batch.append_column("long_title", found)


class FolderReader:
    """A MIMIC-IV-style folder (the default layout)."""

    layout = "mimic4"

    def __init__(self, root: Path, layout: str = "mimic4", *, block_size: int = BLOCK_SIZE) -> None:
        root = Path(root)
        if not root.is_dir():
            raise SourceError(f"source folder not found: {root} (set EHR_SOURCE_PATH)")
        self.root = root
        self.layout = layout
        self.block_size = block_size
        self.mapping = load_mapping(layout)

    def _present(self, table: str) -> list[Path]:
        spec = self.mapping[table]
        found = [locate_file(self.root, relative) for relative in spec.all_files]
        paths = [path for path, _ in found if path is not None]
        if not paths and not spec.skip_if_absent:
            raise SourceError(found[0][1])
        return paths

    def absent(self, table: str) -> str | None:
        """Why a table the layout lets a source lack is absent from this one (None: it is there)."""
        spec = self.mapping[table]
        if not spec.skip_if_absent or self._present(table):
            return None
        where = " or ".join(f"{relative}[.gz]" for relative in spec.all_files)
        what = f"the {spec.module} module is" if spec.module else f"{table} ({Path(spec.file).stem}) are"
        return f"{what} not in the source ({where} not found under {self.root})"

    def batches(self, table: str) -> Iterator[pa.Table]:
        spec = self.mapping[table]
        paths = self._present(table)
        if not paths:  # an optional module the source does not have: no rows, the canonical columns
            yield _canonical(pa.RecordBatch.from_pylist([], schema=pa.schema([])), {}, spec)
            return
        titles = self._titles(spec) if spec.titles else None
        for path in paths:
            for batch in iter_text_batches(path, spec, block_size=self.block_size):
                yield batch if titles is None else _with_titles(batch, titles, spec.titles)

    def _titles(self, spec: TableMapping) -> pa.Table | None:
        """code, version (text), title of the dictionary file; None when the source has none."""
        assert spec.titles is not None
        path, _ = locate_file(self.root, spec.titles.file)
        if path is None:
            return None
        names = {"code": spec.titles.code, "title": spec.titles.title}
        if spec.titles.version:
            names["version"] = spec.titles.version
        mapping = TableMapping(spec.titles.file, names, frozenset({"version"}))
        parts = [t.drop_columns(["_bad_encoding"]) for t in iter_text_batches(path, mapping, block_size=self.block_size)]
        return pa.concat_tables(parts).combine_chunks()

    def read(self, table: str) -> pa.Table:
        """All rows at once (small tables and tests; extraction streams :meth:`batches`)."""
        return pa.concat_tables(list(self.batches(table)))
