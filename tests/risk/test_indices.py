"""Charlson, Elixhauser (van Walraven) and LACE on hand-computed examples."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.risk.errors import RiskError
from pipeline.risk.indices import (
    charlson,
    comorbidity_map,
    count_malformed_icd,
    elixhauser,
    lace,
    malformed_icd_count,
)
from tests.risk.conftest import at

# One ICD-9-CM and one ICD-10-CM (MIMIC-IV style, no dots) code per Charlson category.
CHARLSON_EXAMPLES = {
    "mi": ("41071", "I214"),
    "chf": ("4280", "I5023"),
    "pvd": ("4439", "I739"),
    "cerebrovascular": ("43491", "I639"),
    "dementia": ("2900", "G309"),
    "chronic_pulmonary": ("496", "J449"),
    "rheumatic": ("7140", "M0579"),
    "peptic_ulcer": ("5319", "K259"),
    "mild_liver": ("5715", "K7460"),
    "diabetes_uncomplicated": ("25000", "E119"),
    "diabetes_complicated": ("25040", "E1122"),
    "hemiplegia_paraplegia": ("3420", "G8190"),
    "renal": ("5856", "N186"),
    "malignancy": ("1749", "C509"),
    "severe_liver": ("5722", "K7290"),
    "metastatic_tumor": ("1977", "C787"),
    "hiv_aids": ("042", "B20"),
}
CHARLSON_1987 = {
    "mi": 1,
    "chf": 1,
    "pvd": 1,
    "cerebrovascular": 1,
    "dementia": 1,
    "chronic_pulmonary": 1,
    "rheumatic": 1,
    "peptic_ulcer": 1,
    "mild_liver": 1,
    "diabetes_uncomplicated": 1,
    "diabetes_complicated": 2,
    "hemiplegia_paraplegia": 2,
    "renal": 2,
    "malignancy": 2,
    "severe_liver": 3,
    "metastatic_tumor": 6,
    "hiv_aids": 6,
}
QUAN_2011 = {
    "mi": 0,
    "chf": 2,
    "pvd": 0,
    "cerebrovascular": 0,
    "dementia": 2,
    "chronic_pulmonary": 1,
    "rheumatic": 1,
    "peptic_ulcer": 0,
    "mild_liver": 2,
    "diabetes_uncomplicated": 0,
    "diabetes_complicated": 1,
    "hemiplegia_paraplegia": 2,
    "renal": 1,
    "malignancy": 2,
    "severe_liver": 4,
    "metastatic_tumor": 6,
    "hiv_aids": 4,
}


def dx(rows: list[tuple[int, str, int]]) -> pa.Table:
    return pa.table(
        {
            "hadm_id": pa.array([r[0] for r in rows], pa.int64()),
            "icd_code": pa.array([r[1] for r in rows], pa.string()),
            "icd_version": pa.array([r[2] for r in rows], pa.int32()),
        }
    )


@pytest.mark.parametrize("version", [9, 10])
@pytest.mark.parametrize("category", sorted(CHARLSON_EXAMPLES))
def test_indices_charlson_each_category(category: str, version: int) -> None:
    code = CHARLSON_EXAMPLES[category][0 if version == 9 else 1]
    table = charlson(dx([(1, code, version)]))
    flagged = [c for c in CHARLSON_EXAMPLES if table.column(c)[0].as_py()]
    assert flagged == [category]
    assert table.column("charlson_index").to_pylist() == [CHARLSON_1987[category]]
    assert charlson(dx([(1, code, version)]), "quan2011").column("charlson_index").to_pylist() == [
        QUAN_2011[category]
    ]


def test_indices_charlson_weight_files_match_published_weights() -> None:
    cmap = comorbidity_map("charlson")
    assert dict(zip(cmap.categories, cmap.weights["charlson1987"], strict=True)) == CHARLSON_1987
    assert dict(zip(cmap.categories, cmap.weights["quan2011"], strict=True)) == QUAN_2011


@pytest.mark.parametrize(
    ("codes", "present", "absent", "score"),
    [
        ([("25000", 9), ("25040", 9)], "diabetes_complicated", "diabetes_uncomplicated", 2),
        ([("E119", 10), ("E1122", 10)], "diabetes_complicated", "diabetes_uncomplicated", 2),
        ([("5715", 9), ("5722", 9)], "severe_liver", "mild_liver", 3),
        ([("K7460", 10), ("I8500", 10)], "severe_liver", "mild_liver", 3),
        ([("1749", 9), ("1977", 9)], "metastatic_tumor", "malignancy", 6),
        ([("C509", 10), ("C787", 10)], "metastatic_tumor", "malignancy", 6),
    ],
)
def test_indices_charlson_hierarchy_counts_only_the_higher(codes, present, absent, score) -> None:
    table = charlson(dx([(7, code, version) for code, version in codes]))
    assert table.column(present).to_pylist() == [True]
    assert table.column(absent).to_pylist() == [False]
    assert table.column("charlson_index").to_pylist() == [score]


def test_indices_charlson_mixed_versions_and_no_diagnoses() -> None:
    # ICD-9 CHF + ICD-10 COPD in one admission (MIMIC-IV mixes versions); admission 2 has no diagnoses
    table = charlson(dx([(1, "4280", 9), (1, "J449", 10), (1, "Z87891", 10)]), hadm_ids=[2, 1])
    assert table.column("hadm_id").to_pylist() == [2, 1]
    assert table.column("charlson_index").to_pylist() == [0, 2]
    empty = charlson(dx([]), hadm_ids=[5])
    assert empty.column("charlson_index").to_pylist() == [0]


def test_indices_version_must_match_code_pattern() -> None:
    # "4280" as ICD-10 and "I5023" as ICD-9 are malformed: ignored and counted, never matched
    table = charlson(
        dx(
            [
                (1, "4280", 10),
                (1, "I5023", 9),
                (1, "", 9),
                (1, "428.0", 9),
                (1, "42!8", 9),
                (1, "4280", 11),
                (1, " i5023 ", 10),
            ]
        )
    )
    assert table.column("charlson_index").to_pylist() == [1]  # only the trimmed, upper-cased i5023
    assert malformed_icd_count(table) == 6
    assert count_malformed_icd(dx([(1, "", 9), (1, "4280", 9)])) == 1


def test_indices_malformed_codes_do_not_crash_with_nulls() -> None:
    table = pa.table(
        {
            "hadm_id": pa.array([1, None], pa.int64()),
            "icd_code": pa.array([None, "4280"]),
            "icd_version": pa.array([9, None], pa.int32()),
        }
    )
    out = charlson(table, hadm_ids=[1])
    assert out.column("charlson_index").to_pylist() == [0]
    assert malformed_icd_count(out) == 2


def test_indices_unknown_weights_name_the_choices() -> None:
    with pytest.raises(RiskError, match=r"R006.*charlson1987"):
        charlson(dx([(1, "4280", 9)]), "deyo")


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        # CHF 7 + arrhythmia 5 + renal failure 5 + fluid/electrolyte 5 = 22
        ([("4280", 9), ("42731", 9), ("5856", 9), ("2761", 9)], 22),
        # metastatic 12 supersedes solid tumour 4; drug abuse -7; depression -3 → 2
        ([("C787", 10), ("C509", 10), ("F1120", 10), ("F329", 10)], 2),
        # obesity -4 + deficiency anemia -2 + valvular -1 + blood loss anemia -2 = -9
        ([("E6601", 10), ("D509", 10), ("I350", 10), ("D500", 10)], -9),
        # liver 11 + lymphoma 9 + weight loss 6 + coagulopathy 3 + paralysis 7 + pulmonary circulation 4 = 40
        ([("5715", 9), ("2020", 9), ("2630", 9), ("2866", 9), ("3420", 9), ("4160", 9)], 40),
        # other neurological 6 + chronic pulmonary 3 + PVD 2 + hypertension 0 + diabetes 0 = 11
        ([("G20", 10), ("J449", 10), ("I739", 10), ("I10", 10), ("E119", 10)], 11),
        # 425.5: heart failure 7 and alcohol abuse 0 from one code
        ([("4255", 9)], 7),
    ],
)
def test_indices_elixhauser_van_walraven_hand_computed(codes, expected) -> None:
    table = elixhauser(dx([(3, code, version) for code, version in codes]))
    assert table.column("elixhauser_vw").to_pylist() == [expected]


def test_indices_elixhauser_hierarchies() -> None:
    table = elixhauser(
        dx(
            [
                (1, "4019", 9),
                (1, "40391", 9),
                (1, "25000", 9),
                (1, "25060", 9),
                (2, "I10", 10),
                (2, "C509", 10),
            ]
        ),
        hadm_ids=[1, 2, 3],
    )
    assert table.column("hypertension_complicated").to_pylist() == [True, False, False]
    assert table.column("hypertension_uncomplicated").to_pylist() == [False, True, False]
    assert table.column("diabetes_complicated").to_pylist() == [True, False, False]
    assert table.column("diabetes_uncomplicated").to_pylist() == [False, False, False]
    assert table.column("solid_tumor").to_pylist() == [False, True, False]
    assert table.column("elixhauser_vw").to_pylist() == [5, 4, 0]  # 403.91 is also renal failure (5)
    assert table.schema.field("elixhauser_vw").type == pa.int32()


def admissions_table(rows: list[dict]) -> pa.Table:
    keys = ("subject_id", "hadm_id", "admittime", "dischtime", "admission_type", "edregtime")
    types = (pa.int64(), pa.int64(), pa.timestamp("s"), pa.timestamp("s"), pa.string(), pa.timestamp("s"))
    return pa.table({k: pa.array([r.get(k) for r in rows], t) for k, t in zip(keys, types, strict=True)})


def test_indices_lace_published_style_example() -> None:
    # 5-day emergency stay, Charlson 2, one ED visit 3 months earlier and one 8 months earlier:
    # L 4 + A 3 + C 2 + E 1 = 10
    index = {
        "subject_id": 1,
        "hadm_id": 10,
        "admittime": at(300, 10),
        "dischtime": at(305, 9),
        "admission_type": "EW EMER.",
        "edregtime": at(300, 6),
    }
    prior = [
        {
            "subject_id": 1,
            "hadm_id": 8,
            "admittime": at(210, 2),
            "dischtime": at(212),
            "admission_type": "URGENT",
            "edregtime": at(210),
        },
        {
            "subject_id": 1,
            "hadm_id": 7,
            "admittime": at(60, 2),
            "dischtime": at(62),
            "admission_type": "EW EMER.",
            "edregtime": at(60),
        },
        {
            "subject_id": 1,
            "hadm_id": 11,
            "admittime": at(320),
            "dischtime": at(322),
            "admission_type": "EW EMER.",
            "edregtime": at(319),
        },  # later: not history
        {
            "subject_id": 2,
            "hadm_id": 20,
            "admittime": at(299),
            "dischtime": at(301),
            "admission_type": "EW EMER.",
            "edregtime": at(299),
        },  # another patient
    ]
    admissions = admissions_table([index])
    table = lace(
        admissions, pa.table({"hadm_id": [10], "charlson_index": [2]}), admissions_table([index, *prior])
    )
    row = table.to_pylist()[0]
    assert (row["l_points"], row["a_points"], row["c_points"], row["e_points"]) == (4, 3, 2, 1)
    assert row["lace_score"] == 10


@pytest.mark.parametrize(
    ("los_days", "points"),
    [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (6, 4), (7, 5), (13, 5), (14, 7), (40, 7)],
)
def test_indices_lace_length_of_stay_points(los_days: int, points: int) -> None:
    admissions = admissions_table(
        [
            {
                "subject_id": 1,
                "hadm_id": 1,
                "admittime": at(10, 8),
                "dischtime": at(10 + los_days, 12),
                "admission_type": "ELECTIVE",
            }
        ]
    )
    row = lace(admissions, [0], admissions).to_pylist()[0]
    assert row["l_points"] == points
    assert row["lace_score"] == points


@pytest.mark.parametrize(("cci", "points"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (9, 5)])
def test_indices_lace_charlson_points(cci: int, points: int) -> None:
    admissions = admissions_table(
        [
            {
                "subject_id": 1,
                "hadm_id": 1,
                "admittime": at(10),
                "dischtime": at(10, 5),
                "admission_type": "ELECTIVE",
            }
        ]
    )
    assert lace(admissions, [cci], admissions).column("c_points").to_pylist() == [points]


def test_indices_lace_refuses_a_charlson_table_with_other_weights() -> None:
    admissions = admissions_table(
        [
            {
                "subject_id": 1,
                "hadm_id": 1,
                "admittime": at(10),
                "dischtime": at(12),
                "admission_type": "ELECTIVE",
            }
        ]
    )
    diagnoses = pa.table({"hadm_id": [1], "icd_code": ["4280"], "icd_version": [9]})
    assert lace(admissions, charlson(diagnoses, hadm_ids=[1]), admissions).column("c_points").to_pylist() == [
        1
    ]
    with pytest.raises(RiskError, match="LACE Charlson weights 'quan2011'"):
        lace(admissions, charlson(diagnoses, "quan2011", hadm_ids=[1]), admissions)


def test_indices_lace_ed_visits_window_and_cap() -> None:
    index = {
        "subject_id": 1,
        "hadm_id": 100,
        "admittime": at(400),
        "dischtime": at(401),
        "admission_type": "elective",
    }
    # six ED registrations 10..170 days before: capped at 4 points; one 190 days before: outside 182 days
    prior = [
        {
            "subject_id": 1,
            "hadm_id": i,
            "admittime": at(400 - d, 3),
            "dischtime": at(400 - d + 1),
            "admission_type": "EW EMER.",
            "edregtime": at(400 - d),
        }
        for i, d in enumerate([10, 40, 70, 100, 130, 170, 190])
    ]
    admissions = admissions_table([index])
    row = lace(admissions, [0], admissions_table([index, *prior])).to_pylist()[0]
    assert row["ed_visits_6m"] == 6
    assert row["e_points"] == 4
    assert row["a_points"] == 0


@pytest.mark.parametrize(
    ("admission_type", "acute"),
    [
        ("EW EMER.", True),
        ("DIRECT EMER.", True),
        ("URGENT", True),
        ("EU OBSERVATION", True),
        ("EMERGENCY", True),
        ("ELECTIVE", False),
        ("SURGICAL SAME DAY ADMISSION", False),
        ("OBSERVATION ADMIT", False),
        (None, False),
    ],
)
def test_indices_lace_acute_admission_types(admission_type: str | None, acute: bool) -> None:
    admissions = admissions_table(
        [
            {
                "subject_id": 1,
                "hadm_id": 1,
                "admittime": at(1),
                "dischtime": at(1, 2),
                "admission_type": admission_type,
            }
        ]
    )
    assert lace(admissions, [0], admissions).column("a_points").to_pylist() == [3 if acute else 0]
