"""BENCHMARKS.md: each benchmark owns one ``## <title>`` section and replaces only that section."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, section: str) -> None:
    """Put ``section`` (starting with its ``## `` heading line) in ``path``: in place of the section with the same
    heading (up to the next ``## `` heading), or appended. Headings match whole lines, so "## NER" and
    "## NER memory" are different sections.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "B.md"
    >>> replace_section(p, "## NER memory\\nold\\n")
    >>> replace_section(p, "## NER\\nfirst\\n")
    >>> replace_section(p, "## NER memory\\nnew\\n")
    >>> print(p.read_text())
    # Benchmarks
    <BLANKLINE>
    ## NER memory
    new
    <BLANKLINE>
    ## NER
    first
    <BLANKLINE>
    """
    heading = section.split("\n", 1)[0]
    if not heading.startswith("## "):
        raise ValueError(f"a benchmark section starts with its '## ' heading, got {heading!r}")
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    body = section.rstrip("\n") + "\n\n"
    if pattern.search(text):
        text = pattern.sub(lambda _m: body, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
