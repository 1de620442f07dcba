import hashlib
from datetime import timedelta

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline.synth import GenerateSummary, generate
from pipeline.synth.generate import MIMIC3_COLUMNS, MIMIC3_FILES, MIMIC4_COLUMNS, MIMIC4_FILES

from .conftest import START


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _sql(folder, table, query, layout="mimic4"):
    files = MIMIC4_FILES if layout == "mimic4" else MIMIC3_FILES
    con = duckdb.connect()
    for name, rel in files.items():
        if not (folder / rel).exists():  # a module the source was generated without
            continue
        con.sql(f"create view {name} as select * from read_csv('{folder / rel}', all_varchar=true, header=true)")
    return con.sql(query).fetchall()


def test_generate_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", patients=40, start=START, days=2, seed=3)
    b = generate(tmp_path / "b", patients=40, start=START, days=2, seed=3, progress=lambda d, t: None)
    generate(tmp_path / "c", patients=40, start=START, days=2, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert isinstance(a, GenerateSummary) and a.counts == b.counts


def test_generate_mimic4_columns(mimic4_dir):
    out, summary = mimic4_dir
    for table, rel in MIMIC4_FILES.items():
        if table == "radiology":  # only with radiology=True (test_generate_modules_and_radiology)
            continue
        assert rel.endswith(".csv.gz")
        header = _sql(out, table, f"select * from {table} limit 0")
        con = duckdb.connect()
        cols = [c[0] for c in con.sql(f"describe select * from read_csv('{out / rel}', all_varchar=true)").fetchall()]
        assert cols == MIMIC4_COLUMNS[table], table
        assert header == []
    assert (out / "gold/note_entities.parquet").exists()
    assert summary.layout == "mimic4" and summary.seed == 11 and summary.path == out


def test_generate_mimic3_columns(mimic3_dir):
    out, summary = mimic3_dir
    con = duckdb.connect()
    for table, rel in MIMIC3_FILES.items():
        assert rel.endswith(".csv") and rel == rel.split(".")[0].upper() + ".csv"
        cols = [c[0] for c in con.sql(f"describe select * from read_csv('{out / rel}', all_varchar=true)").fetchall()]
        assert cols == MIMIC3_COLUMNS[table], table
        assert cols[0] == "ROW_ID"
    types = {r[0] for r in _sql(out, "admissions", "select ADMISSION_TYPE from admissions", "mimic3")}
    assert types <= {"EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"}
    codes = _sql(out, "diagnoses", "select ICD9_CODE from diagnoses", "mimic3")
    assert all(not c[0][0].isalpha() or c[0][0] in "VE" for c in codes)
    ages = _sql(out, "admissions", "select min(date_diff('year', p.DOB::timestamp, a.ADMITTIME::timestamp)), "
                "max(date_diff('year', p.DOB::timestamp, a.ADMITTIME::timestamp)) from admissions a "
                "join patients p using (SUBJECT_ID)", "mimic3")[0]
    assert ages[0] >= 17 and ages[1] <= 97
    assert summary.counts["notes"] == summary.counts["admissions"]


def test_generate_referential_consistency(mimic4_dir):
    out, _ = mimic4_dir
    for table in ("diagnoses", "labs", "prescriptions", "notes"):
        orphans = _sql(out, table, f"select count(*) from {table} t left join admissions a using (hadm_id) "
                       "where a.hadm_id is null or a.subject_id <> t.subject_id")
        assert orphans == [(0,)], table
    assert _sql(out, "admissions", "select count(*) from admissions a left join patients p using (subject_id) "
                "where p.subject_id is null") == [(0,)]
    assert _sql(out, "diagnoses", "select count(*) from diagnoses d left join d_icd_diagnoses i "
                "using (icd_code, icd_version) where i.icd_code is null") == [(0,)]
    # labs are charted during the stay; notes on the discharge day; ED before admission
    assert _sql(out, "labs", "select count(*) from labs l join admissions a using (hadm_id) where "
                "l.charttime::timestamp <= a.admittime::timestamp or l.charttime::timestamp >= a.dischtime::timestamp"
                ) == [(0,)]
    assert _sql(out, "notes", "select count(*) from notes n join admissions a using (hadm_id) "
                "where n.charttime::date <> a.dischtime::date or n.note_id <> n.subject_id || '-DS-' || n.note_seq"
                ) == [(0,)]
    assert _sql(out, "admissions", "select count(*) from admissions where edregtime is not null and not "
                "(edregtime::timestamp < edouttime::timestamp and edouttime::timestamp < admittime::timestamp)"
                ) == [(0,)]
    # deaths: no admission after the date of death, deathtime iff expire flag
    assert _sql(out, "admissions", "select count(*) from admissions a join patients p using (subject_id) "
                "where p.dod is not null and a.admittime::date > p.dod::date") == [(0,)]
    assert _sql(out, "admissions", "select count(*) from admissions where (deathtime is not null) <> "
                "(hospital_expire_flag = '1') or (deathtime is not null and deathtime <> dischtime)") == [(0,)]
    assert _sql(out, "prescriptions", "select count(*) from prescriptions where length(ndc) <> 11") == [(0,)]


def test_generate_time_window_and_demo_days(mimic4_dir):
    out, summary = mimic4_dir
    lo, hi = START - timedelta(days=365), START + timedelta(days=2)
    bounds = _sql(out, "admissions", "select min(dischtime::date), max(admittime::date) from admissions")[0]
    assert lo <= bounds[0] and bounds[1] <= hi
    # stays admitted in the window may end after it (open at its end), as in a live hospital
    assert _sql(out, "admissions", f"select count(*) from admissions where dischtime::date > '{hi}'")[0][0] > 0
    per_day = dict(_sql(out, "admissions", "select dischtime::date::varchar, count(*) from admissions "
                        f"where dischtime::date between '{START}' and '{hi}' group by 1"))
    assert per_day == {d: n for d, n in summary.demo_discharges.items() if n}
    # demo days are ordinary days: no crowd of discharges planted on them
    history_mean = _sql(out, "admissions", "select count(*) / 365 from admissions "
                        f"where dischtime::date between '{lo}' and '{START - timedelta(days=1)}'")[0][0]
    assert sum(summary.demo_discharges.values()) / 3 <= 2.5 * history_mean
    versions = {r[0] for r in _sql(out, "diagnoses", "select distinct icd_version from diagnoses")}
    assert versions == {"9", "10"}


def test_generate_daily_volume_is_level_up_to_the_last_day(large_dir):
    """Discharges and labs per day are about the same across the window, including its last days."""
    out, _ = large_dir
    first, last = START - timedelta(days=365), START
    quarters = _sql(out, "admissions", f"""
        select (dischtime::date - date '{first}') * 4 // 366 q, count(*) from admissions
        where dischtime::date <= '{last}' group by 1 order by 1""")
    counts = [n for _, n in quarters]
    assert len(counts) == 4 and max(counts) <= 1.3 * min(counts), counts
    mean = sum(counts) / 366
    recent = _sql(out, "admissions", f"select count(*) / 30 from admissions where dischtime::date "
                  f"between '{last - timedelta(days=29)}' and '{last}'")[0][0]
    assert 0.75 * mean <= recent <= 1.25 * mean, (recent, mean)
    labs = dict(_sql(out, "labs", f"select charttime::date, count(*) from labs where charttime::date "
                     f"between '{last - timedelta(days=59)}' and '{last}' group by 1"))
    before = sum(n for d, n in labs.items() if d < last - timedelta(days=6)) / 53
    last_week = sum(n for d, n in labs.items() if d >= last - timedelta(days=6)) / 7
    assert last_week >= 0.8 * before, (last_week, before)


def test_generate_messy_plants_defects_beside_the_clean_rows(tmp_path):
    clean = generate(tmp_path / "clean", patients=120, start=START, days=2, history_days=60, seed=9)
    messy = generate(tmp_path / "messy", patients=120, start=START, days=2, history_days=60, seed=9, messy=True)
    con = duckdb.connect()

    def rows(folder, rel):
        return con.sql(f"select * from read_csv('{folder / rel}', all_varchar=true, header=true)").fetchall()

    for table, rel in MIMIC4_FILES.items():
        if table == "radiology":
            continue
        a, b = rows(tmp_path / "clean", rel), rows(tmp_path / "messy", rel)
        if table == "admissions":
            changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
            assert len(changed) == 3
            assert all(x[:3] == y[:3] and x[4:] == y[4:] and "/" in y[3] for x, y in changed)  # only dischtime
        elif table in ("labs", "diagnoses"):
            assert b[:len(a)] == a and len(b) > len(a)  # defects appended
        else:
            assert a == b, table
    labs = rows(tmp_path / "messy", MIMIC4_FILES["labs"])[clean.counts["labs"]:]
    assert any(r[0] == "9" * 20 for r in labs)
    assert any(r[2] is None and r[5] and "/" in r[5] for r in labs)
    assert messy.counts["labs"] > clean.counts["labs"]


def test_generate_gold_offsets_exact(mimic4_dir):
    out, _ = mimic4_dir
    con = duckdb.connect()
    texts = dict(con.sql(f"select note_id, text from read_csv('{out / 'note/discharge.csv.gz'}', all_varchar=true)"
                         ).fetchall())
    gold = pq.read_table(out / "gold/note_entities.parquet").to_pylist()
    assert len(gold) > 1000
    for g in gold:
        assert texts[g["note_id"]][g["start_char"]:g["end_char"]] == g["text"]
    assert {g["label"] for g in gold} == {"PROBLEM", "TREATMENT", "TEST"}


def test_generate_coded_problems_affirmed_in_note(mimic4_dir):
    out, _ = mimic4_dir
    gold = pq.read_table(out / "gold/note_entities.parquet").to_pandas()
    dx = gold[(gold.section == "discharge_diagnosis") & ~gold.is_negated]
    assert dx.note_id.nunique() == gold.note_id.nunique()


def _outcomes(out):
    return _sql(out, "admissions", """
        with adm as (
          select a.hadm_id, a.subject_id, a.admittime::timestamp adm, a.dischtime::timestamp dis,
                 a.hospital_expire_flag::int died, p.dod::date dod, p.anchor_age::int age,
                 lead(a.admittime::timestamp) over (partition by a.subject_id order by a.admittime) nxt
          from admissions a join patients p using (subject_id)),
        dx as (select hadm_id, count(*) n_dx from diagnoses group by 1),
        alb as (select hadm_id, min(valuenum::double) alb from labs where itemid = '50862' group by 1)
        select (age >= 75)::int old, (n_dx >= 7)::int sick, coalesce(alb < 3.0, false)::int low_alb,
               avg(case when nxt is not null and date_diff('day', dis, nxt) <= 30 then 1 else 0 end) readmit,
               avg(case when died = 1 or (dod is not null and date_diff('day', dis::date, dod) <= 365) then 1 else 0 end) death,
               count(*)
        from adm join dx using (hadm_id) left join alb using (hadm_id)
        where dis < timestamp '2024-01-15' group by all order by all""")


def test_generate_outcomes_depend_on_risk_factors(large_dir):
    out, _ = large_dir
    rows = _outcomes(out)
    total = sum(r[5] for r in rows)
    readmit = sum(r[3] * r[5] for r in rows) / total
    death = sum(r[4] * r[5] for r in rows) / total
    assert 0.06 < readmit < 0.30 and 0.04 < death < 0.35

    def rate(col, idx):
        sel = [r for r in rows if r[col] == idx]
        n = sum(r[5] for r in sel)
        return sum(r[3] * r[5] for r in sel) / n, sum(r[4] * r[5] for r in sel) / n

    for col in (0, 1, 2):  # older, more coded diagnoses, low albumin -> more readmission and death
        (r0, d0), (r1, d1) = rate(col, 0), rate(col, 1)
        assert d1 > d0, col
        if col:
            assert r1 > r0, col


def test_generate_streams_with_bounded_memory(tmp_path):
    import tracemalloc

    tracemalloc.start()
    generate(tmp_path / "s", patients=250, start=START, days=1, history_days=60, seed=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # everything written is ~40 MB of CSV/Parquet content; the generator holds one chunk at a time
    assert peak < 25 * 1024 * 1024


@pytest.mark.slow
def test_generate_shift_day_changes_only_that_days_admission_mix(tmp_path):
    """A planted shift for drift checks: on shift_day the emergency share is the one asked for (here 0.3 against
    the usual ~0.87); every other day's rows, and every other column of that day, are as without it."""
    kwargs = dict(patients=1500, start=START, days=3, history_days=30, seed=9)
    shifted_day = START + timedelta(days=2)
    generate(tmp_path / "plain", **kwargs)
    generate(tmp_path / "shifted", **kwargs, shift_day=shifted_day, shift_emergency_share=0.3)
    emergency = "('EW EMER.', 'DIRECT EMER.', 'URGENT', 'EU OBSERVATION')"
    query = (f"select cast(dischtime as date) = '{shifted_day}' as shifted, count(*), "
             f"avg(case when admission_type in {emergency} then 1.0 else 0 end) from admissions group by 1 order by 1")
    (_, before_other, share_other), (_, before_n, share_plain) = _sql(tmp_path / "plain", "admissions", query)
    (_, after_other, share_other_after), (_, after_n, share_shifted) = _sql(tmp_path / "shifted", "admissions", query)
    assert (before_other, before_n) == (after_other, after_n) and share_other == share_other_after
    assert share_plain > 0.8 and abs(share_shifted - 0.3) < 0.12 and after_n >= 40
    # nothing but the type (and, for an emergency made elective, its ED times and location) changes
    cols = "hadm_id, subject_id, admittime, dischtime, deathtime, discharge_location, insurance, race"
    for name in ("patients", "diagnoses", "labs", "prescriptions", "notes"):
        assert _digest_table(tmp_path / "plain", name) == _digest_table(tmp_path / "shifted", name), name
    assert (_sql(tmp_path / "plain", "admissions", f"select {cols} from admissions order by hadm_id")
            == _sql(tmp_path / "shifted", "admissions", f"select {cols} from admissions order by hadm_id"))


def _digest_table(folder, table):
    return hashlib.sha256((folder / MIMIC4_FILES[table]).read_bytes()).hexdigest()


def test_generate_modules_and_radiology(tmp_path):
    """A hosp-only source (like the open MIMIC-IV demo) has no icu/ and note/ folders; the rest is the same."""
    full = generate(tmp_path / "full", patients=60, start=START, days=2, history_days=60, seed=5, radiology=True)
    hosp = generate(tmp_path / "hosp", patients=60, start=START, days=2, history_days=60, seed=5, modules=("hosp",))
    assert not (tmp_path / "hosp" / "note").exists() and not (tmp_path / "hosp" / "icu").exists()
    assert hosp.notes == 0 and "icu_stays" not in hosp.counts
    for table in ("patients", "admissions", "diagnoses", "labs", "prescriptions", "procedures"):
        assert _digest_table(tmp_path / "full", table) == _digest_table(tmp_path / "hosp", table), table
    # radiology reports: charted during their stay, note_type RR, ids apart from the discharge summaries
    rr = _sql(tmp_path / "full", "radiology", "select note_type, note_id from radiology")
    assert rr and {r[0] for r in rr} == {"RR"} and all("-RR-" in r[1] for r in rr)
    assert full.counts["radiology"] == full.counts["notes"]
    # multi-component IV orders: a BASE row shares its MAIN row's pharmacy_id, keyed apart by type and drug
    shared = _sql(tmp_path / "full", "prescriptions",
                  "select count(*) from (select pharmacy_id from prescriptions group by 1 having count(*) > 1)")
    assert shared[0][0] > 0
    bases = _sql(tmp_path / "full", "prescriptions", "select count(*) from prescriptions where drug_type = 'BASE'")
    assert bases[0][0] == shared[0][0]
    # procedures carry dictionary titles; ICU stays lie within their admission
    assert full.counts["procedures"] > 0 and full.counts["d_icd_procedures"] == 12
    outside = _sql(tmp_path / "full", "icu_stays",
                   "select count(*) from icu_stays i join read_csv('" + str(tmp_path / "full" / MIMIC4_FILES["admissions"])
                   + "', all_varchar=true) a using (hadm_id) where i.intime::timestamp < a.admittime::timestamp "
                   "or i.outtime::timestamp > a.dischtime::timestamp")
    assert full.counts["icu_stays"] > 0 and outside[0][0] == 0


def test_generate_rejects_unknown_modules(tmp_path):
    with pytest.raises(ValueError, match="E-SYN023"):
        generate(tmp_path / "x", patients=5, start=START, modules=("icu",))
