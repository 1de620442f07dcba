"""Build the compact vocabularies the NER rule layer reads (schemas/nlp/vocab/) from the MIMIC-IV demo dictionaries.

    python tools/build_nlp_vocab.py /path/to/mimic-iv-demo-2.2

- drugs.txt: drug names from hosp/prescriptions.drug (the generic name before strength, form or route, and brand
  names written in parentheses), lower case;
- procedures.txt: the procedure nouns of hosp/d_icd_procedures.long_title (ICD-9-CM and ICD-10-PCS titles) that end
  in a surgical suffix (-ectomy, -otomy, -plasty, ...);
- labs.txt: lab test names from hosp/d_labitems.label.

The source is the MIMIC-IV Clinical Database Demo 2.2 (PhysioNet, https://doi.org/10.13026/dp1f-ex47; Johnson A,
Bulgarelli L, Pollard T, Horng S, Celi LA, Mark R), Open Database License 1.0: the files written here are a derived
database under the same license (schemas/nlp/vocab/ATTRIBUTION.md).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pyarrow.csv as pacsv

OUT = Path(__file__).resolve().parents[1] / "schemas" / "nlp" / "vocab"
# words of a prescription string that are packaging, forms or solutions, not drugs
NOT_DRUGS = {
    "bag", "vial", "syringe", "click", "change", "choose", "base", "solution", "soln", "neb", "tab", "tabs", "cap",
    "caps", "capsule", "tablet", "cream", "ointment", "lotion", "gel", "patch", "spray", "drops", "susp", "suspension",
    "liquid", "elixir", "syrup", "inj", "injection", "powder", "packet", "sliding", "scale", "pump", "self",
    "administering", "medication", "immediate", "release", "extended", "sustained", "oral", "iv", "po", "topical",
    "ophth", "sodium", "chloride", "potassium", "calcium", "magnesium", "water", "sterile", "dextrose", "flush",
    "critical", "care", "ionized", "study", "desensitization", "premix", "premixed", "replacement", "protocol",
    "tartrate", "succinate", "hcl", "hydrochloride", "acetate", "sulfate", "citrate", "phosphate", "maleate",
    "bromide", "gluconate", "dinitrate", "mononitrate", "bicarbonate", "xl", "cr", "er", "sr", "dr", "odt", "hfa",
    "mdi", "w", "minerals", "complex", "jelly", "test", "dose", "unit", "units", "units/ml", "nasal", "rectal",
    "vaginal", "and", "with", "in", "of", "for", "per", "the", "to", "b", "acid", "vitamin", "protein",
    "alcohol", "artificial", "oxygen", "aluminum", "adde", "acetonide", "caff", "tear", "tears", "blood",
    "withdrawal", "free", "milk", "throat", "yellow", "salmon", "oxide", "glycol", "ferric",
    "chl", "neutra", "glydo", "phenol", "lozenge", "wash", "mouthwash", "swish", "swallow", "sugar",
}
NOT_PROCEDURES = {"analysis", "paralysis", "dialysis"}
SURGICAL = re.compile(r"^[a-z]+(?:ectomy|ectomies|otomy|otomies|ostomy|ostomies|plasty|plasties|pexy|rrhaphy|"
                      r"desis|tripsy)$")


def _drug_names(raw: str) -> set[str]:
    names = set()
    for brand in re.findall(r"\(([A-Za-z][A-Za-z -]{2,30})\)", raw):
        names.add(brand.strip().lower())
    head = re.split(r"[\d(%/]|\s-\s|--", raw)[0]
    words = [w for w in re.split(r"[\s,]+|-", head.lower()) if w]
    kept = [w for w in words if w not in NOT_DRUGS and re.fullmatch(r"[a-z]{3,}", w)]
    if kept:
        names.add(" ".join(kept[:2]) if len(kept) > 1 and words[:2] == kept[:2] else kept[0])
        names.update(w for w in kept if len(w) >= 6)
    return names


def build(mimic: Path) -> dict[str, int]:
    hosp = Path(mimic) / "hosp"
    drugs: set[str] = set()
    for raw in pacsv.read_csv(hosp / "prescriptions.csv.gz").column("drug").to_pylist():
        if raw:
            drugs |= _drug_names(raw)
    procedures: set[str] = set()
    for title in pacsv.read_csv(hosp / "d_icd_procedures.csv.gz").column("long_title").to_pylist():
        for word in re.findall(r"[a-z]+", (title or "").lower()):
            if SURGICAL.match(word) and len(word) >= 8 and word not in NOT_PROCEDURES:
                procedures.add(word)
    labs = set()
    for label in pacsv.read_csv(hosp / "d_labitems.csv.gz").column("label").to_pylist():
        label = (label or "").strip().lower()
        if 3 <= len(label) <= 40 and re.search(r"[a-z]{3}", label) and not re.search(r"\bother\b|^-|\?", label):
            labs.add(label)
    OUT.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, values in (("drugs", drugs), ("procedures", procedures), ("labs", labs)):
        (OUT / f"{name}.txt").write_text("\n".join(sorted(values)) + "\n")
        counts[name] = len(values)
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(build(Path(sys.argv[1])))
