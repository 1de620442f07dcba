"""Peak memory of the real NER task on one large notes partition (`ehr-pipeline bench ner-memory`).

The partition (`pipeline.synth` notes of 300–6,000 characters) is written to a scratch workdir's lake as the
validate stage would, then `pipeline.tasks.nightly.ner` runs in a child process (so the notes generated here do not count) and
reports its peak RSS; the result goes to BENCHMARKS.md, "## NER memory".
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.bench.sections import replace_section
from pipeline.synth.notes import varied_length_texts
from pipeline.synth.tables import notes_table

DAY = dt.date(2150, 1, 1)
LIMIT_MB = 3 * 1024

_CHILD = """
import json, resource, sys, time
from datetime import date
from pipeline.config import load_settings
from pipeline.tasks import nightly

started = time.perf_counter()
result = nightly.ner(date.fromisoformat(sys.argv[1]), 0, run_id="bench-memory", settings=load_settings())
result["seconds"] = time.perf_counter() - started
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def run_ner_memory_benchmark(model_dir: Path, n_notes: int = 10_000, out_md: Path = Path("BENCHMARKS.md"),
                             timeout_s: int = 6 * 3600) -> dict[str, Any]:
    from pipeline import lake
    from pipeline.config import load_settings
    from pipeline.tasks import nightly

    with tempfile.TemporaryDirectory(prefix="ehr-bench-memory-") as scratch:
        settings = load_settings(workdir=Path(scratch), ner_model_path=Path(model_dir).resolve())
        notes = notes_table(varied_length_texts(n_notes), DAY, id_prefix="mem")
        chars = int(sum(len(t) for t in notes.column("text").to_pylist()))
        # one part holding every note: the size the memory bound is stated for
        lake.write_partition(settings.lake_dir, nightly.VALIDATED, "notes", DAY, notes, part_rows=n_notes + 1)
        del notes
        env = dict(os.environ, EHR_WORKDIR=scratch, EHR_NER_MODEL_PATH=str(settings.ner_model_dir),
                   EHR_CONFIG=str(Path(scratch) / "none.yaml"))
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, DAY.isoformat()], env=env, capture_output=True,
                              text=True, timeout=timeout_s, check=False)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the NER task failed in the benchmark child:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update({"n_notes": n_notes, "chars": chars, "wall_seconds": wall, "limit_mb": LIMIT_MB})
    replace_section(Path(out_md), render_section(result))
    return result


def render_section(r: dict[str, Any]) -> str:
    """The "## NER memory" section of BENCHMARKS.md from the result of :func:`run_ner_memory_benchmark`."""
    verdict = "within" if r["peak_rss_mb"] < r["limit_mb"] else "OVER"
    return f"""## NER memory

Reproduce: `ehr-pipeline bench ner-memory --notes {r['n_notes']}` (calls
`pipeline.bench.ner_memory.run_ner_memory_benchmark`). Measured {dt.date.today()} on {platform.machine()}: one
validated notes partition of {r['n_notes']:,} notes in a single part file ({r['chars']:,} characters, 300–6,000
per note), processed by the real `pipeline.tasks.nightly.ner` (record batches in, entities streamed out, run recorded in the
DuckDB warehouse) in a child process.

| notes | entities | task seconds | peak RSS of the task process | limit |
| ---: | ---: | ---: | ---: | ---: |
| {r['notes']:,} | {r['entities']:,} | {r['seconds']:.0f} | **{r['peak_rss_mb']:,.0f} MB** | {r['limit_mb']:,} MB |

Peak RSS is {verdict} the 3 GB bound.
"""
