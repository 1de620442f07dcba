"""Reading MIMIC-style CSV / CSV.gz files as text columns with canonical names, streamed in batches.

Headers are matched case-insensitively (real exports come in either case), CRLF line ends and quoted
multi-line free text are handled by pyarrow's CSV reader, and every column is read as text so that codes
keep their leading zeros and V/E prefixes. Files are read as a stream of record batches
(``pyarrow.csv.open_csv``), so a 100-million-row ``labevents`` never has to fit in memory: the extraction
keeps only each batch's rows of the wanted days. Compression is recognised by the file's first bytes (gzip
magic), not by the case of its name, so ``ADMISSIONS.CSV.GZ`` reads like ``admissions.csv.gz``. Bytes that
are not UTF-8 never crash the read: the row is flagged (``_bad_encoding``) and later set aside.

Ambiguity is refused, never guessed: a header naming a column twice (case-insensitively) and a file that
ends inside a quoted value (a plain CSV cut off mid-note) are source errors naming the file and line. A
row with the wrong number of fields is set aside (``malformed_row``, with its record number and field
count) and the rest of the file is read. No error or record quotes a row's content: only file, line,
column and counts.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import yaml

from pipeline.config import SCHEMAS_DIR
from pipeline.sources.base import SourceError, decode_utf8

MALFORMED_RULE = "malformed_row"
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


@dataclass(frozen=True)
class MalformedRow:
    """A source row whose field count differs from the header's; only where it is, never what it holds."""

    file: str
    record: int  # record number in the file, the header being record 1 (blank lines not counted)
    fields: int
    expected: int
    line: int | None = None  # the physical line the record starts on, when known

    @property
    def detail(self) -> str:
        where = f"line {self.line} (record {self.record})" if self.line is not None else f"record {self.record}"
        return f"{self.file} {where}: {self.fields} fields, the header has {self.expected}"


LINE_LOOKUP_MAX_BYTES = 256 << 20  # files up to this size are read again to turn record numbers into lines


def _record_lines(path: Path, gz: bool, records: set[int]) -> dict[int, int]:
    """record number (as the CSV reader counts them: header 1, blank lines skipped) → the line it starts on.
    A second, slower read: only for files with malformed rows, and not for very large ones."""
    opener = gzip.open if gz else open
    found: dict[int, int] = {}
    record = 0
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:  # type: ignore[operator]
        reader = csv.reader(fh)
        start = 1
        try:
            for row in reader:
                if row:
                    record += 1
                    if record in records:
                        found[record] = start
                        if len(found) == len(records):
                            break
                start = reader.line_num + 1
        except csv.Error:
            pass
    return found


@dataclass
class FileScan:
    """What reading one file found besides its rows: set-aside rows and the rows read."""

    malformed: list[MalformedRow] = field(default_factory=list)
    rows_read: int = 0


def _check_unique_header(path: Path, header: list[str]) -> None:
    """Two columns with one (case-insensitive) name make every value of that name ambiguous: refuse."""
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    for position, name in enumerate(header, start=1):
        key = name.strip().lower()
        if key in seen:
            duplicates.append(f"{name.strip()!r} (columns {seen[key]} and {position})")
        else:
            seen[key] = position
    if duplicates:
        raise SourceError(f"{path} line 1: the header names a column twice: {', '.join(duplicates)}; "
                          "fix the export (which of the two holds the values cannot be guessed)")


def _columns_to_read(path: Path, header: list[str], mapping: TableMapping) -> dict[str, str]:
    """canonical → actual header name of the mapped columns present; a missing required one is an error."""
    _check_unique_header(path, header)
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


class _QuoteCounter(io.RawIOBase):
    """A read-through stream counting double quotes, to tell whether the file ends inside a quoted value.

    In CSV every quote belongs to a quoted value: its opening and closing quote, or an escaped pair. So a
    file that ends inside a quoted value has an odd number of them; an even count proves it does not.
    (An odd count can also come from a stray quote inside an unquoted value, which readers take literally:
    :func:`_unterminated_quote_record` then reads the file again to tell the two apart.)
    """

    def __init__(self, raw: pa.NativeFile) -> None:
        super().__init__()
        self._raw = raw
        self.quotes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.quotes += data.count(b'"')
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _unterminated_quote_record(path: Path, gz: bool) -> int | None:
    """The line where a quoted value opens that the file never closes, or None (error path only: slow)."""
    opener = gzip.open if gz else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:  # type: ignore[operator]
        reader = csv.reader(fh, strict=True)
        last_line = 0
        while True:
            try:
                next(reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                if "unexpected end of data" in str(exc):
                    return last_line + 1
                # another oddity (text after a closing quote): the fast reader took it literally, so go on
            last_line = reader.line_num


_SAFE_ARROW_REASON = re.compile(r"^(CSV parse error: Expected \d+ columns, got \d+|CSV parse error: Empty CSV file"
                                r"|[A-Za-z ]*(gzip|zlib|decompress|compress)[A-Za-z ]*"
                                r"|straddling object straddles two block boundaries)", re.IGNORECASE)


def safe_reason(exc: BaseException) -> str:
    """What went wrong, without the row content some reader errors quote (``... got 7: <the row>``)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    match = _SAFE_ARROW_REASON.match(first)
    return match.group(0) if match else f"{type(exc).__name__} (its message may quote source data: withheld)"


def iter_text_batches(path: Path, mapping: TableMapping, *, block_size: int = BLOCK_SIZE,
                      scan: FileScan | None = None) -> Iterator[pa.Table]:
    """The file's mapped columns as text, renamed to canonical names, one table per CSV block.

    Absent optional columns are null. At least one (possibly empty) table is yielded, so a header-only
    file still gives the columns. Rows with the wrong number of fields are skipped and listed in
    ``scan.malformed``; a file that ends inside a quoted value raises :class:`SourceError` once read.
    """
    scan = scan if scan is not None else FileScan()
    gz = _is_gzip(path)
    header, header_bytes = _header(path, gz)
    include = _columns_to_read(path, header, mapping)
    stream = _QuoteCounter(pa.input_stream(str(path), compression="gzip" if gz else None))

    def malformed(row: pacsv.InvalidRow) -> str:
        # row.text is the row itself: it stays here
        scan.malformed.append(MalformedRow(str(path), int(row.number or 0), row.actual_columns,
                                           row.expected_columns))
        return "skip"

    try:
        reader = pacsv.open_csv(
            io.BufferedReader(stream, buffer_size=1 << 20),
            # the first block must hold the whole header line; one thread, so rows are numbered
            read_options=pacsv.ReadOptions(block_size=max(block_size, 2 * header_bytes), use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=malformed),
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
            scan.rows_read += batch.num_rows
            yield _canonical(batch, include, mapping)
            yielded = True
        if stream.quotes % 2:
            record = _unterminated_quote_record(path, gz)
            if record is not None:
                raise SourceError(
                    f"{path} line {record}: a quoted value opens here and the file ends before it closes "
                    "(the file is cut off or a quote is unbalanced); nothing of the file was used"
                )
        if scan.malformed and path.stat().st_size <= LINE_LOOKUP_MAX_BYTES:
            mine = [m for m in scan.malformed if m.file == str(path)]  # a table may span several files
            lines = _record_lines(path, gz, {m.record for m in mine})
            scan.malformed[:] = [replace(m, line=lines.get(m.record)) if m.file == str(path) else m
                                 for m in scan.malformed]
        if not yielded:
            empty = pa.RecordBatch.from_pylist([], schema=pa.schema([(a, pa.binary()) for a in include.values()]))
            yield _canonical(empty, include, mapping)
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable CSV file: {safe_reason(exc)}") from None
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
        self.scans: dict[str, FileScan] = {}

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
        self.scans[table] = scan = FileScan()  # of the latest read of the table (all its files)
        for path in paths:
            for batch in iter_text_batches(path, spec, block_size=self.block_size, scan=scan):
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

    def malformed_rows(self, table: str) -> list[MalformedRow]:
        """Rows of ``table`` set aside by the latest :meth:`batches` for a wrong field count."""
        scan = self.scans.get(table)
        return list(scan.malformed) if scan else []

    def rows_read(self, table: str) -> int:
        scan = self.scans.get(table)
        return scan.rows_read if scan else 0

    def read(self, table: str) -> pa.Table:
        """All rows at once (small tables and tests; extraction streams :meth:`batches`)."""
        return pa.concat_tables(list(self.batches(table)))
