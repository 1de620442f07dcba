"""Readmission and mortality label windows and eligibility."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from pipeline.risk.labels import build_labels
from tests.risk.conftest import at


def admissions(rows: list[tuple]) -> pa.Table:
    # (subject_id, hadm_id, admit_day, disch_day, died_in_hospital)
    return pa.table(
        {
            "subject_id": pa.array([r[0] for r in rows], pa.int64()),
            "hadm_id": pa.array([r[1] for r in rows], pa.int64()),
            "admittime": pa.array([at(r[2]) for r in rows], pa.timestamp("s")),
            "dischtime": pa.array([at(r[3]) for r in rows], pa.timestamp("s")),
            "deathtime": pa.array([at(r[3]) if r[4] else None for r in rows], pa.timestamp("s")),
            "hospital_expire_flag": pa.array([int(r[4]) for r in rows], pa.int32()),
        }
    )


def patients(dod: dict[int, date | None]) -> pa.Table:
    return pa.table(
        {"subject_id": pa.array(list(dod), pa.int64()), "dod": pa.array(list(dod.values()), pa.date32())}
    )


def by_hadm(table: pa.Table) -> dict[int, dict]:
    return {row["hadm_id"]: row for row in table.to_pylist()}


def test_labels_readmission_29_vs_31_days() -> None:
    table = by_hadm(
        build_labels(
            admissions(
                [
                    (1, 10, 0, 5, False),
                    (1, 11, 34, 36, False),  # 29 days after discharge → 1
                    (2, 20, 0, 5, False),
                    (2, 21, 36, 38, False),  # 31 days → 0
                    (3, 30, 0, 5, False),
                    (3, 31, 35, 36, False),  # exactly 30 days → 1 (inclusive)
                    (9, 90, 200, 201, False),
                ]
            ),  # keeps the data window open
            patients({1: None, 2: None, 3: None, 9: None}),
        )
    )
    assert (table[10]["readmit_30d"], table[20]["readmit_30d"], table[30]["readmit_30d"]) == (1, 0, 1)
    assert all(table[h]["readmit_30d_eligible"] for h in (10, 20, 30))


def test_labels_in_hospital_death_excluded_from_both_learned_targets() -> None:
    table = by_hadm(
        build_labels(
            admissions([(1, 10, 0, 5, True), (2, 20, 0, 3, False)]),
            patients({1: date(2020, 1, 6), 2: None}),
            data_end=at(400),
        )
    )
    assert table[10]["readmit_30d_eligible"] is False
    assert table[10]["readmit_30d"] == 0
    # the death is recorded (label 1, flagged) but the learned target is about patients discharged alive
    assert table[10]["mortality_1y"] == 1 and table[10]["in_hospital_death"]
    assert table[10]["mortality_1y_eligible"] is False
    assert table[10]["dod"] == date(2020, 1, 6)
    assert table[20]["readmit_30d_eligible"] and table[20]["mortality_1y"] == 0
    assert table[20]["mortality_1y_eligible"] and table[20]["dod"] is None


def test_labels_death_within_30_days_without_readmission_is_not_a_negative() -> None:
    # discharged on day 5 (2020-01-06): subject 1 dies on day 20, subject 2 on day 35 (30 days after the
    # discharge day: still inside the window), subject 3 on day 40 (outside), subject 4 is readmitted
    # on day 10 and dies on day 20 (a readmission: positive), subject 5 survives
    rows = admissions(
        [
            (1, 10, 0, 5, False),
            (2, 20, 0, 5, False),
            (3, 30, 0, 5, False),
            (4, 40, 0, 5, False),
            (4, 41, 10, 20, True),
            (5, 50, 0, 5, False),
        ]
    )
    dod = {1: date(2020, 1, 21), 2: date(2020, 2, 5), 3: date(2020, 2, 10), 4: date(2020, 1, 21), 5: None}
    table = by_hadm(build_labels(rows, patients(dod), data_end=at(400)))
    assert not table[10]["readmit_30d_eligible"] and not table[20]["readmit_30d_eligible"]
    assert table[30]["readmit_30d_eligible"] and table[30]["readmit_30d"] == 0
    assert table[40]["readmit_30d_eligible"] and table[40]["readmit_30d"] == 1
    assert table[50]["readmit_30d_eligible"] and table[50]["readmit_30d"] == 0
    # they remain 1-year mortality rows (and positives)
    assert all(table[h]["mortality_1y"] == 1 and table[h]["mortality_1y_eligible"] for h in (10, 20, 30))


def test_labels_hospital_expire_flag_alone_marks_death() -> None:
    table = admissions([(1, 10, 0, 5, False)]).set_column(
        5, "hospital_expire_flag", pa.array([1], pa.int32())
    )
    row = build_labels(table, patients({1: None}), data_end=at(400)).to_pylist()[0]
    assert row["readmit_30d_eligible"] is False and row["mortality_1y"] == 1
    assert row["in_hospital_death"] and row["mortality_1y_eligible"] is False


def test_labels_last_admission_needs_30_days_of_follow_up() -> None:
    # default data_end = latest dischtime (day 100): hadm 10 (disch day 50) is covered, 20 (day 80) is not,
    # even though 21 is a readmission seen inside the window — excluding it avoids an outcome-dependent bias
    table = by_hadm(
        build_labels(
            admissions([(1, 10, 48, 50, False), (2, 20, 78, 80, False), (2, 21, 90, 100, False)]),
            patients({1: None, 2: None}),
        )
    )
    assert table[10]["readmit_30d_eligible"] and table[10]["readmit_30d"] == 0
    assert table[20]["readmit_30d_eligible"] is False
    assert table[21]["readmit_30d_eligible"] is False
    explicit = by_hadm(
        build_labels(
            admissions([(2, 20, 78, 80, False), (2, 21, 90, 100, False)]),
            patients({2: None}),
            data_end=at(200),
        )
    )
    assert explicit[20]["readmit_30d"] == 1 and explicit[20]["readmit_30d_eligible"]


def test_labels_mortality_window_365_days() -> None:
    rows = admissions([(1, 10, 0, 10, False), (2, 20, 0, 10, False), (3, 30, 0, 10, False)])
    dods = patients(
        {1: date(2020, 12, 30), 2: date(2021, 1, 20), 3: None}
    )  # disch 2020-01-11: +354 d, +375 d
    table = by_hadm(build_labels(rows, dods))
    assert (table[10]["mortality_1y"], table[20]["mortality_1y"], table[30]["mortality_1y"]) == (1, 0, 0)
    censored = by_hadm(build_labels(rows, dods, death_data_end=date(2020, 6, 1)))
    assert censored[10]["mortality_1y_eligible"]  # death observed
    assert not censored[30]["mortality_1y_eligible"]  # survivor without a full year of follow-up


def test_labels_overlapping_or_earlier_admissions_are_not_readmissions() -> None:
    table = by_hadm(
        build_labels(
            admissions(
                [
                    (1, 10, 10, 20, False),
                    (1, 11, 0, 5, False),
                    (1, 12, 15, 25, False),
                    (9, 90, 300, 301, False),
                ]
            ),
            patients({1: None, 9: None}),
        )
    )
    assert table[10]["readmit_30d"] == 0  # 11 is earlier; 12 starts before 10's discharge
    assert table[11]["readmit_30d"] == 1  # 10 starts 5 days after 11's discharge
