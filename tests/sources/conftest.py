"""A tiny hand-written MIMIC-IV folder (independent of the generator), with helpers to spoil it."""

from __future__ import annotations

import gzip
from datetime import date, timedelta
from pathlib import Path

import pytest

PATIENTS = """subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod
1,F,70,2026,2023 - 2025,
2,M,55,2026,2023 - 2025,2026-01-20
3,F,40,2026,2023 - 2025,
"""
ADMISSIONS = """subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,admission_location,discharge_location,insurance,language,marital_status,race,edregtime,edouttime,hospital_expire_flag
1,100,2025-12-28 10:00:00,2026-01-02 12:00:00,,EW EMER.,P1,EMERGENCY ROOM,HOME,Medicare,ENGLISH,MARRIED,WHITE,2025-12-28 08:00:00,2025-12-28 10:00:00,0
2,200,2025-12-30 09:00:00,2026-01-02 15:30:00,,ELECTIVE,P2,PHYSICIAN REFERRAL,HOME,Private,ENGLISH,SINGLE,BLACK,,,0
3,300,2026-01-01 09:00:00,2026-01-03 11:00:00,,URGENT,P3,TRANSFER FROM HOSPITAL,SNF,Medicaid,ENGLISH,,WHITE,,,0
1,101,2026-01-02 20:00:00,2026-01-09 10:00:00,,EW EMER.,P1,EMERGENCY ROOM,HOME,Medicare,ENGLISH,MARRIED,WHITE,,,0
"""
DIAGNOSES = """subject_id,hadm_id,seq_num,icd_code,icd_version
1,100,1,I5023,10
1,100,2,E119,10
2,200,1,V4581,9
2,200,2,04100,9
3,300,1,N179,10
1,101,1,J189,10
"""
LABS = """labevent_id,subject_id,hadm_id,specimen_id,itemid,charttime,storetime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority,comments
1,1,100,11,50912,2026-01-01 06:00:00,2026-01-01 07:00:00,1.4,1.4,mg/dL,0.5,1.2,abnormal,ROUTINE,
2,1,100,12,50912,2026-01-02 06:00:00,2026-01-02 07:00:00,1.1,1.1,mg/dL,0.5,1.2,,ROUTINE,
3,2,200,13,50983,2026-01-02 05:00:00,,139,139,mEq/L,133,145,,STAT,"said ""ok"" \\ fine"
4,3,300,14,51222,2026-01-02 05:00:00,,10.1,10.1,g/dL,12,16,abnormal,ROUTINE,
"""
PRESCRIPTIONS = """subject_id,hadm_id,pharmacy_id,poe_id,poe_seq,order_provider_id,starttime,stoptime,drug_type,drug,formulary_drug_cd,gsn,ndc,prod_strength,form_rx,dose_val_rx,dose_unit_rx,form_val_disp,form_unit_disp,doses_per_24_hrs,route
1,100,5001,,,,2025-12-28 12:00:00,2026-01-02 12:00:00,MAIN,Furosemide,FURO40,,00054829725,40mg Tablet,,40,mg,1,TAB,1,PO
2,200,5002,,,,2025-12-30 12:00:00,2026-01-02 12:00:00,MAIN,Metformin,MET500,,00093104801,500mg Tablet,,500,mg,1,TAB,2,PO
"""
DISCHARGE = """note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text
1-DS-1,1,100,DS,1,2026-01-02 12:00:00,2026-01-02 13:00:00,"Name:  ___
Chief Complaint: shortness of breath
Patient denies chest pain."
2-DS-1,2,200,DS,1,2026-01-02 15:30:00,,"Brief Hospital Course: said ""fine"", path C:\\temp\\x"
3-DS-1,3,300,DS,1,2026-01-03 11:00:00,,"Discharge Diagnosis: AKI"
"""
FILES = {
    "hosp/patients.csv.gz": PATIENTS,
    "hosp/admissions.csv.gz": ADMISSIONS,
    "hosp/diagnoses_icd.csv.gz": DIAGNOSES,
    "hosp/labevents.csv.gz": LABS,
    "hosp/prescriptions.csv.gz": PRESCRIPTIONS,
    "note/discharge.csv.gz": DISCHARGE,
}


def write_folder(root: Path, files: dict[str, str | bytes] | None = None, *, crlf: bool = False) -> Path:
    for rel, content in (files or FILES).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        if crlf:
            data = data.replace(b"\n", b"\r\n")
        if rel.endswith(".gz"):
            with gzip.open(path, "wb") as fh:
                fh.write(data)
        else:
            path.write_bytes(data)
    return root


@pytest.fixture
def mimic4_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "source")


GENERATED_START = date(2026, 1, 1)


@pytest.fixture(scope="session")
def generated_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, date, date]:
    """A small generated MIMIC-IV folder: (folder, first discharge day, last day of the window)."""
    from pipeline.synth import generate

    out = tmp_path_factory.mktemp("generated") / "source"
    generate(out, layout="mimic4", patients=30, start=GENERATED_START, days=2, history_days=20, seed=4)
    return out, GENERATED_START - timedelta(days=20), GENERATED_START + timedelta(days=1)
