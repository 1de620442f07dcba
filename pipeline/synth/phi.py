"""Notes with surrogate identifiers planted in realistic contexts, with gold spans: data for the PHI tagger.

The generator owns the surrogates and the gold spans. Two splits that share neither sentence templates nor
surrogate values: "train" (what ``ehr-pipeline train-phi`` fits) and "test" (what ``eval-phi`` measures on),
so the evaluation asks the tagger about contexts and names it never saw. Clinical text around the planted
sentences comes from the synthetic discharge summaries (``pipeline.synth.notes``) and nursing-note lines
full of numbers that look like identifiers but are not (BP 120/80, strength 4/5, 1/2 NS, MIMIC's shifted
years 2100-2200).

Some slots are filled with a placeholder of a de-identification tool (``[** … **]``, ``___``, ``**NAME[…]``,
``XXXX``, ``[NAME]``, ``<PERSON>``) instead of a surrogate: those are not identifiers and carry no gold span.
:func:`deidentified_sentences` gives placeholder-only text for the false-positive measurement.

Labels: NAME (patient, relative, clinician), LOCATION (hospital, city, street), DATE (with day or month, and
years written as '92), PHONE (phone, fax, pager), ID (MRN, SSN, account, device serial), EMAIL (e-mail, URL),
AGE (over 89).
"""

from __future__ import annotations

import importlib
import random
import re
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

PHI_TYPES: tuple[str, ...] = ("NAME", "LOCATION", "DATE", "PHONE", "ID", "EMAIL", "AGE")
TRAIN_SEED, EVAL_SEED = 21, 22


@dataclass(frozen=True, slots=True)
class PhiSpan:
    start_char: int
    end_char: int
    label: str  # one of PHI_TYPES
    kind: str  # patient, relative, clinician, hospital, city, street, phone, pager, fax, date, date_year, ...
    text: str


@dataclass(slots=True)
class PhiNote:
    text: str
    entities: list[PhiSpan]
    template_ids: list[str] = field(default_factory=list)

    def kinds(self) -> set[str]:
        return {e.kind for e in self.entities}


# --- surrogate values, split by a stable hash so train and test never share one -----------------------------------

def _split_of(value: str) -> str:
    return "test" if zlib.crc32(value.lower().encode()) % 5 == 0 else "train"


_CITIES = [
    "Springfield", "Quincy", "Worcester", "Lowell", "Brockton", "Framingham", "Haverhill", "Lynn", "Medford",
    "Malden", "Revere", "Peabody", "Methuen", "Taunton", "Chicopee", "Woburn", "Beverly", "Leominster",
    "Fitchburg", "Attleboro", "Salem", "Marlborough", "Westfield", "Holyoke", "Everett", "Gloucester",
    "Northampton", "Melrose", "Newburyport", "Amesbury", "Danvers", "Dedham", "Milton", "Braintree", "Weymouth",
    "Plymouth", "Falmouth", "Barnstable", "Yarmouth", "Dorchester", "Roxbury", "Mattapan", "Brighton",
    "Allston", "Chelsea", "Somerville", "Cambridge", "Waltham", "Newton", "Needham", "Natick", "Wellesley",
    "Lexington", "Arlington", "Belmont", "Burlington", "Billerica", "Chelmsford", "Dracut", "Andover",
    "Tewksbury", "Wilmington", "Reading", "Stoneham", "Saugus", "Swampscott", "Marblehead", "Ipswich",
    "Rockport", "Hartford", "Providence", "Pawtucket", "Warwick", "Cranston", "Nashua", "Manchester", "Concord",
    "Portland", "Bangor", "Albany", "Buffalo", "Syracuse", "Rochester", "Scranton", "Allentown", "Trenton",
    "Camden", "Newark", "Paterson", "Yonkers", "Bridgeport", "Stamford", "Norwalk", "Danbury", "Waterbury",
    "Meriden", "Bristol", "Torrington", "Pittsfield", "Greenfield", "Amherst", "Keene", "Dover", "Burlington",
    "Rutland", "New Bedford", "Fall River", "East Boston", "South Boston", "Jamaica Plain", "West Roxbury",
    "Hyde Park", "Cape Cod", "Martha's Vineyard", "New Haven", "West Hartford", "North Andover",
    "Chestnut Hill", "Hull", "Lynnfield", "Saint Petersburg", "Fort Lauderdale", "Las Vegas", "San Juan",
    "Port Charlotte", "Palm Beach", "Los Angeles", "New York", "Santo Domingo",
]
_STATES = ("MA", "NH", "RI", "CT", "ME", "VT", "NY", "FL", "NJ", "PA")
# Training-only variety (the held-out draw is untouched by it): towns of other countries from Faker's address
# providers, Faker-style made-up towns ("Port Aliceton"), streets named after common words ("Orchard Ln",
# "Mill Rd"). A tagger that saw only the list above would learn its towns, not the contexts places stand in.
_WORLD_CITY_LOCALES = ("de_DE", "de_AT", "en_IN", "id_ID", "pt_PT", "ro_RO", "pl_PL", "sv_SE", "fr_DZ", "hr_HR",
                       "cs_CZ", "nl_NL")
TRAIN_CITY_VARIETY = 0.4
_STREET_WORD_TEXT = """
Main Elm Oak Maple Pine Cedar Park Lake Hill Church School Mill Water Spring Pleasant Prospect Highland Summer
Winter Washington Lincoln Franklin Union Center High Broad Market Bridge River Forest Meadow Sunset Ridge
Cherry Walnut Chestnut Locust Willow Birch Beacon Harbor Bay Ocean Beach Pond Brook Valley Orchard Cottage Grove
Liberty Railroad Depot Canal Granite Quarry Garden Sumner Adams Jefferson Madison Monroe Jackson Pearl Green
"""
_STREET_WORDS = tuple(_STREET_WORD_TEXT.split())
_HOSPITAL_SUFFIXES = (
    "Hospital", "Medical Center", "General Hospital", "Memorial Hospital", "Regional Medical Center",
    "Community Hospital", "Rehab", "Rehabilitation Center", "Nursing Home", "Health Center", "Clinic",
    "VA Medical Center", "Healthcare", "Manor", "Senior Living", "Care Center",
)
_HOSPITAL_PREFIXES = ("Saint", "St.", "Good Samaritan", "Mount", "Sacred Heart", "Holy Family", "Beth", "Mercy",
                      "North Shore", "South Shore", "Metro West", "Pine Ridge", "Oak Hill", "Lakeview", "Baystate")


# Names of other origins (Faker's person providers; accents folded the way US exports write them), drawn for
# `WORLD_NAME_SHARE` of the names: a US patient list is not only en_US census names, and a tagger that only saw
# those would learn the names and not the contexts.
_NAME_LOCALES = ("en_GB", "en_IE", "en_IN", "en_NG", "es_MX", "es_ES", "it_IT", "fr_FR", "de_DE", "pt_BR", "nl_NL",
                 "tr_TR", "id_ID", "yo_NG", "vi_VN")
WORLD_NAME_SHARE = 0.3
_NAME_SHAPE = re.compile(r"[A-Za-z][A-Za-z' -]*[a-z]")


def _ascii(value: str) -> str:
    return unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()


def _person_names(locale: str) -> tuple[list[str], list[str]]:
    """(first names, last names) of one Faker locale, ASCII-folded, only plain name shapes."""
    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    out = []
    for attr in ("first_names", "last_names"):
        folded = {_ascii(v) for v in getattr(provider, attr, ())}
        out.append(sorted(v for v in folded if _NAME_SHAPE.fullmatch(v)))
    return out[0], out[1]


@cache
def _pools(split: str) -> dict[str, list[str]]:
    from faker.providers.address.en_US import Provider as Address

    firsts, lasts = _person_names("en_US")
    world_firsts: set[str] = set()
    world_lasts: set[str] = set()
    for locale in _NAME_LOCALES:
        more_firsts, more_lasts = _person_names(locale)
        world_firsts.update(more_firsts)
        world_lasts.update(more_lasts)
    pick = lambda values: [v for v in values if _split_of(v) == split]  # noqa: E731
    return {
        "first": pick(firsts),
        "last": pick(lasts),
        "first_world": pick(sorted(world_firsts - set(firsts))),
        "last_world": pick(sorted(world_lasts - set(lasts))),
        "city": pick(sorted(set(_CITIES))),
        "street_suffix": list(Address.street_suffixes),
        "hospital_prefix": pick(_HOSPITAL_PREFIXES) or list(_HOSPITAL_PREFIXES),
        "city_world": pick(sorted(_world_cities())),
        "street_word": pick(_STREET_WORDS),
    }


def _world_cities() -> set[str]:
    """Towns of `_WORLD_CITY_LOCALES`, ASCII-folded, plain name shapes only."""
    out: set[str] = set()
    for locale in _WORLD_CITY_LOCALES:
        provider = importlib.import_module(f"faker.providers.address.{locale}").Provider
        out.update(v for v in map(_ascii, provider.cities) if _PLACE_SHAPE.fullmatch(v))
    return out


_PLACE_SHAPE = re.compile(r"[A-Z][A-Za-z'.-]*(?: [A-Za-z][A-Za-z'.-]*){0,2}")


# Capitals a hospital abbreviation surrogate must not spell: services and units, clinical abbreviations, short words.
_NOT_HOSPITAL_ABBREVIATION_TEXT = """
AM AN AS AT BE BY DO GO HE IF IN IS IT ME MY NO OF OK ON OR SO TO UP US WE PM PO PR BP HR RR PT OT ED ER ID GI OB
NP PA MD RN SW IV ICU CCU MICU SICU PACU DNR DNI NPO PRN BID TID QID ENT CT MRI EKG ECG CXR TEE TTE HCP SNF VNA
ARE BUT CAN DAY DID FOR HAD HAS HER HIM HIS HOW NOT NOW OLD ONE OUR OUT SEE SHE THE TOO TWO WAS WAY WHO YES YET
ALL AND ANY BED BAD DOG EAR EYE LEG ARM RED TOE LOW
"""
_NOT_HOSPITAL_ABBREVIATIONS = frozenset(_NOT_HOSPITAL_ABBREVIATION_TEXT.split())


class Surrogates:
    """Random surrogate identifiers of one split."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng = rng
        self.split = split
        self.pool = _pools(split)

    def _case(self, value: str, upper: float = 0.2) -> str:
        r = self.rng.random()
        return value.upper() if r < upper else value.lower() if r < upper + 0.05 else value

    def _pick(self, kind: str) -> str:
        world = self.rng.random() < WORLD_NAME_SHARE
        return self.rng.choice(self.pool[f"{kind}_world"] if world else self.pool[kind])

    def first(self) -> str:
        return self._case(self._pick("first"))

    def last(self) -> str:
        return self._case(self._pick("last"))

    def full(self) -> str:
        r = self.rng.random()
        first, last = self._pick("first"), self._pick("last")
        if r < 0.5:
            value = f"{first} {last}"
        elif r < 0.65:
            value = f"{first[0]}. {last}"
        elif r < 0.75:
            value = f"{last}, {first}"
        elif r < 0.85:
            value = f"{first} {self.rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}"
        else:
            value = f"{first} {last}-{self.rng.choice(self.pool['last'])}"
        return self._case(value)

    def name(self) -> str:
        r = self.rng.random()
        return self.full() if r < 0.45 else self.last() if r < 0.8 else self.first()

    def _made_up_city(self) -> str:
        from faker.providers.address.en_US import Provider as Address

        rng = self.rng
        name = rng.choice(self.pool["first"] + self.pool["last"])
        suffix = rng.choice(Address.city_suffixes)
        prefix = rng.choice(Address.city_prefixes)
        return rng.choice((f"{prefix} {name}{suffix}", f"{prefix} {name}", f"{name}{suffix}"))

    def city(self) -> str:
        if self.split == "train" and self.rng.random() < TRAIN_CITY_VARIETY:
            city = self.rng.choice(self.pool["city_world"]) if self.rng.random() < 0.6 else self._made_up_city()
        else:
            city = self.rng.choice(self.pool["city"])
        if self.rng.random() < 0.25:
            city += f", {self.rng.choice(_STATES)}"
        return self._case(city, 0.1)

    def hospital(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            base = self.rng.choice(self.pool["city"])
        elif r < 0.65:
            base = self.rng.choice(self.pool["last"])
        elif r < 0.8:
            base = f"{self.rng.choice(self.pool['hospital_prefix'])} {self.rng.choice(self.pool['first'])}'s"
        else:
            base = f"{self.rng.choice(self.pool['hospital_prefix'])} {self.rng.choice(self.pool['last'])}"
        return self._case(f"{base} {self.rng.choice(_HOSPITAL_SUFFIXES)}", 0.1)

    def hospital_abbr(self) -> str:
        """Two to four capitals, sometimes with H, MC or GH; never a service or unit ("PT", "OR", "ED") nor a short
        English word ("HE", "TO"): a note saying "from PT" names no hospital to a reader either."""
        letters = "ABCDEFGHJKLMNOPRSTUVWY"
        while True:
            n = self.rng.choice((2, 2, 2, 3, 3, 4))
            value = "".join(self.rng.choice(letters) for _ in range(n))
            if self.rng.random() < 0.3:
                value += self.rng.choice(("H", "MC", "GH"))
            if value not in _NOT_HOSPITAL_ABBREVIATIONS:
                return value

    def street(self) -> str:
        number = self.rng.randint(1, 9999)
        if self.split == "train" and self.rng.random() < 0.3:
            name = self.rng.choice(self.pool["street_word"])
        else:
            name = self.rng.choice(self.pool["last"] + self.pool["first"])
        suffix = self.rng.choice(self.pool["street_suffix"])
        if self.rng.random() < 0.4:
            suffix = {"Street": "St", "Avenue": "Ave", "Road": "Rd", "Drive": "Dr", "Lane": "Ln"}.get(suffix, suffix)
        value = f"{number} {name} {suffix}" if self.rng.random() < 0.8 else f"{name} {suffix}"
        return self._case(value, 0.1)

    def _digits(self, n: int) -> str:
        return "".join(str(self.rng.randint(0, 9)) for _ in range(n))

    def phone(self) -> str:
        # Surrogates break US numbering rules (area codes and exchanges starting with 0 or 1, 555, ...) on purpose.
        a, b, c = self._digits(3), self._digits(3), self._digits(4)
        return self.rng.choice((
            f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"{a} {b} {c}", f"{a}{b}{c}", f"{b}-{c}",
            f"1-{a}-{b}-{c}", f"({a}){b}-{c}", f"{a}-{b}-{c} x{self._digits(3)}", f"{a}/{b}-{c}",
        ))

    def pager(self) -> str:
        return self.rng.choice((self._digits(5), self._digits(5), self._digits(6), f"{self._digits(1)}-{self._digits(4)}",
                                self._digits(7), f"{self._digits(2)}-{self._digits(3)}"))

    _MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")

    def date(self) -> tuple[str, str]:
        """A date as a clinician writes it; (text, kind)."""
        rng = self.rng
        m, d = rng.randint(1, 12), rng.randint(1, 28)
        y4 = rng.randint(1930, 2099)
        y2 = f"{y4 % 100:02d}"
        month = self._MONTHS[m - 1]
        short = month[:3]
        choices = [
            (f"{m}/{d}", "date_no_year"), (f"{m:02d}/{d:02d}", "date_no_year"), (f"{m}-{d}", "date_no_year"),
            (f"{m}/{d}/{y2}", "date_2y"), (f"{m}-{d}-{y2}", "date_2y"), (f"{m:02d}/{d:02d}/{y2}", "date_2y"),
            (f"{m}/{d}/{y4}", "date"), (f"{y4}-{m:02d}-{d:02d}", "date"), (f"{month} {d}", "date_no_year"),
            (f"{short} {d}", "date_no_year"), (f"{d} {short}", "date_no_year"), (f"{month} {d}, {y4}", "date"),
            (f"{short}. {d}th", "date_no_year"), (f"{d}-{short}-{y2}", "date_2y"), (f"{m}.{d}.{y2}", "date_2y"),
            (f"{month} {y4}", "date_month_year"), (f"{month} of '{y2}", "date_month_year"),
        ]
        return rng.choice(choices)

    def year2(self) -> str:
        return f"'{self.rng.randint(0, 99):02d}"

    def mrn(self) -> str:
        return self.rng.choice((self._digits(7), self._digits(8), self._digits(6), f"{self._digits(3)}-{self._digits(4)}",
                                f"{self._digits(2)}-{self._digits(2)}-{self._digits(3)}"))

    def ssn(self) -> str:
        return self.rng.choice((f"{self._digits(3)}-{self._digits(2)}-{self._digits(4)}", self._digits(9),
                                f"{self._digits(3)} {self._digits(2)} {self._digits(4)}"))

    def device(self) -> str:
        letters = "".join(self.rng.choice("ABCDEFGHKLMNPRSTXZ") for _ in range(self.rng.randint(2, 3)))
        return f"{letters}{self._digits(self.rng.randint(5, 9))}"

    def email(self) -> str:
        user = self.rng.choice(self.pool["first"]).lower()
        sep = self.rng.choice((".", "_", ""))
        last = self.rng.choice(self.pool["last"]).lower()
        domain = self.rng.choice(("gmail.com", "yahoo.com", "aol.com", "comcast.net", "hotmail.com",
                                  f"{last}.org", "verizon.net", "partners.org", f"{last}law.com"))
        return f"{user}{sep}{last}{self.rng.randint(1, 99) if self.rng.random() < 0.4 else ''}@{domain}"

    def url(self) -> str:
        last = self.rng.choice(self.pool["last"]).lower()
        return self.rng.choice((f"www.{last}.com", f"http://www.{last}family.org", f"https://{last}.net/p/{self._digits(4)}",
                                f"facebook.com/{last}{self._digits(2)}"))

    def age90(self) -> str:
        return str(self.rng.randint(90, 109))


# --- placeholders of de-identification tools -------------------------------------------------------------------------

_PLACEHOLDER_WORDS = {
    "NAME": ("Known lastname", "First Name", "Last Name (NamePattern1)", "Name (NI)", "Doctor Last Name",
             "Known firstname", "Name8 (MD)", "First Name4 (NamePattern1)"),
    "LOCATION": ("Hospital1", "Hospital", "Location (un)", "Hospital3", "Street Address(2)", "Location"),
    "DATE": ("2151-3-4", "3-14", "2180-11-2", "Month (only)", "Year (4 digits)", "2112-6-19"),
    "PHONE": ("Telephone/Fax (1)", "Numeric Identifier", "Pager number"),
    "ID": ("Medical Record Number", "Numeric Identifier", "Serial Number"),
    "EMAIL": ("E-mail address", "URL"),
    "AGE": ("Age over 90",),
}
_TAG = {"NAME": "NAME", "LOCATION": "LOCATION", "DATE": "DATE", "PHONE": "PHONE", "ID": "ID", "EMAIL": "EMAIL",
        "AGE": "AGE"}
_ANGLE = {"NAME": "PERSON", "LOCATION": "LOCATION", "DATE": "DATE_TIME", "PHONE": "PHONE_NUMBER", "ID": "ID",
          "EMAIL": "EMAIL_ADDRESS", "AGE": "AGE"}


def placeholder(label: str, rng: random.Random) -> str:
    """A placeholder for an identifier of `label`, in one of the common de-identification styles."""
    word = rng.choice(_PLACEHOLDER_WORDS[label])
    style = rng.randrange(8)
    if style == 0:
        return f"[**{word} {rng.randint(1, 9999)}**]"
    if style == 1:
        return f"[** {word} **]"
    if style == 2:
        return "_" * rng.choice((3, 3, 3, 5, 8))
    if style == 3:
        inner = rng.choice(("Sep 27 2007", "Jun 3", "AA", "BB, CC", "EE", "Z", "1/2/2008", "5-7"))
        return f"**{_TAG[label]}[{inner}]"
    if style == 4:
        return "X" * rng.choice((4, 4, 6, 8)) if label != "PHONE" else "XXX-XXX-XXXX"
    if style == 5:
        return f"[{_TAG[label]}]"
    if style == 6:
        return f"<{_ANGLE[label]}>"
    return f"[**{word}**]"


# --- sentence templates ----------------------------------------------------------------------------------------------
# Slots: {patient} {relative} {clinician} {hospital} {hosp_abbr} {city} {street} {phone} {pager} {fax} {date}
# {yearq} {mrn} {ssn} {account} {device} {email} {url} {oldage}; {rel} is a relation word, {title} Mr./Mrs./Ms.

_TRAIN_TEMPLATES = """
Mr. {patient} is a 67 y/o man admitted with chest pain.
Mrs. {patient} is resting comfortably, no complaints overnight.
Pt {patient} seen and examined this morning.
{patient} is a pleasant woman with h/o CHF.
Patient: {patient}  Unit: 7 North
Spoke with {rel} {relative} at length re: plan of care.
{rel} {relative} in to visit, updated on plan.
Called {rel} ({relative}) who agrees with DNR/DNI.
{relative} ({rel}) is the health care proxy, phone {phone}.
HCP is {rel} {relative}, can be reached at {phone}.
Family meeting held with {rel} {relative} and {rel2} {relative2}.
dtr {relative} called, updated.
husband {relative} at bedside most of the day.
wife {relative} aware of transfer.
Seen by Dr. {clinician} from cardiology.
Discussed with Dr {clinician}, will increase lasix.
dr {clinician} aware of K 3.1, repleted.
Attending: Dr. {clinician}
Case d/w {clinician} (renal fellow).
Transferred from {hospital} for cath.
Pt transfer from {hospital} on {date}.
Admitted to {hosp_abbr} on {date} with sepsis.
Recently discharged from {hosp_abbr} rehab.
Was at {hospital} until {date}, then home.
Lives in {city} with her husband.
Pt lives alone in {city}.
Home address {street}, {city}.
Lives at {street} with family.
Please page with questions: Pager #{pager}
Covering resident PG {pager}
Call {phone} with results.
Fax to {fax} attn {clinician}.
Contact daughter {relative} at {phone} or cell {phone2}.
Last BM {date}.
Foley removed {date}, voiding.
Cath on {date} showed 3VD.
s/p CABG in {yearq}
Prior admission {date} for CHF exacerbation.
Next appt {date} at 10:30 with Dr. {clinician}.
Follow up with Dr. {clinician} at {hospital} on {date}.
MRN: {mrn}
Med rec #{mrn} reviewed.
SSN {ssn}
Account {account} billing.
Pacemaker serial number {device} interrogated.
Email: {email}
Pt's son sends updates via {email}.
Family blog at {url}
{oldage} y/o female from nursing home.
Pt is {oldage} years old, DNR.
Ms. {patient} refused her lovenox.
{PATIENT} AMBULATED IN HALL WITH PT.
Nsg: {patient} OOB to chair x2.
Discussed code status w/ {rel} {relative}; pt remains full code.
Neighbor {relative} brought in pt's meds.
Dr. {clinician} paged re: hypotension, returned call.
Per {clinician} NP, hold metoprolol for SBP<100.
Will f/u in {hosp_abbr} clinic {date}.
Born {date}, retired teacher.
Her PCP is Dr. {clinician} in {city}.
PCP: {clinician}, MD
Contact: {relative} ({rel}) {phone}
{relative} ({rel}) called at 1900, given update.
Sister-in-law {relative} visiting from {city}.
MR. {PATIENT} IS A 72 YO MALE ADMITTED FOR SOB.
Pt's {rel}, {relative}, requests call back at {phone}.
Report called to {clinician} RN at {hospital}.
Discharged to {hospital} in {city}.
Pt states she was born in {city} and moved here in {yearq}.
Dx with breast ca in {yearq}, s/p XRT.
Hx of MI {date}; stent at {hosp_abbr}.
Chart from {hosp_abbr} reviewed, TTE {date} EF 40%.
Dr. {CLINICIAN} NOTIFIED OF LABS.
Fellow {clinician} placed A-line without complication.
Pt called {relative} on the phone, upset.
Outpatient cardiologist: Dr. {clinician} ({phone}).
Procedure scheduled {date} with {clinician}.
Pt DOB {date}.
Admit date {date}, LOS 4 days.
Pager 2-{pager} for the night float.
{patient} ate 50% of breakfast, denies nausea.
{patient} remains NPO for procedure.
{PATIENT} RESTING IN BED WITH EYES CLOSED.
{relative} (pt's {rel}) at bedside all shift.
{relative}, pt's {rel}, is very involved in care.
Mr {patient} was seen on rounds.
Ms {patient} c/o pain 6/10, medicated.
Dr {clinician} at bedside for procedure.
Consulted {clinician} (ortho) for the fracture.
Signed out to {clinician}, night float.
Pt identified as {patient} with two identifiers.
Pt brought in by {rel} from {hospital}.
EMS from {hosp_abbr} reports pt found down.
Sent over from {hosp_abbr} ED for higher level of care.
Pt was at {hospital} for 2 weeks before transfer.
Family lives in {city} and {city2}.
Returned from {city} on {date}.
Last visit {date}; next due {date2}.
Echo from {date}: EF 55%.
Started coumadin {date}, INR today 2.3.
Call back number {phone}
Reachable via beeper {pager}.
{clinician}, RN, aware of the plan.
Admitted to {unit} from the ED; transferred to {unit2} on hospital day 2.
Seen by {unit} team, recs appreciated.
F/u in {unit} clinic in 2 weeks.
Transferred to {unit} for closer monitoring.
Pt seen with {rel} {relative} and {rel2} {relative2} at the bedside.
{REL} {RELATIVE} CALLED FOR UPDATE.
Spoke to {relative} (pt's {rel}) via phone, all questions answered.
Per {rel} {relative}, pt had a fall at home last week.
Message left for {rel} {relative} at {phone}.
Emergency contact: {relative}, {rel}, {phone}.
NOK: {relative} ({rel}) tel {phone}
Discussed w/ {rel}, {relative}, who is the HCP.
Team met with {relative} and {relative2} this afternoon.
Pt's friend {relative} visited, pt in good spirits.
Husband ({relative}) stayed overnight.
Note written by {clinician}, RN.
Electronically signed by {clinician}, MD on {date}.
cc: Dr. {clinician}; Dr. {clinician2}
D/W DR. {CLINICIAN} AND TEAM.
Per Dr. {clinician}'s note, pt is DNR.
ID fellow ({clinician}) recommends vanc.
Resident: {clinician}  Attending: {clinician2}
Oncologist Dr. {clinician} at {hospital}.
Pt followed by {clinician} in {hosp_abbr} clinic.
Pt was transferred from {hosp_abbr} to {hospital}.
Recently at {hospital} in {city} for pneumonia.
Transfer from {hospital} ICU, intubated.
{HOSPITAL} REPORTS PT WAS HYPOTENSIVE.
OSH: {hospital}
Came from {hospital} rehab on {date}.
Originally from {city}, lives with {rel}.
Address: {street}, {city}
Page {clinician} at {pager} if any issues.
For questions page #{pager}.
Tel: {phone}  Fax: {fax}
Cell {phone}
Date of surgery: {date}
On {date} pt had EGD.
CT {date} showed no bleed.
Since {date} pt has had poor PO intake.
Admitted {date} - discharged {date2}.
{date}: started on levofloxacin.
Rehab stay in {yearq}, doing well since.
{PATIENT} IS A 78 YO WOMAN WITH COPD.
{patient}, 68M, POD 2 s/p ex lap.
Pt name: {patient}
Cared for {patient} this shift; no acute events.
{patient} slept well overnight, no prn needed.
{patient} up to chair with assist x1.
{patient} denies pain at this time.
{patient} continues on heparin gtt, PTT therapeutic.
{patient} refused am labs, MD aware.
{patient} c/o nausea after lunch, zofran given.
{patient} was given tylenol for HA with relief.
{patient} voiding qs via foley.
{PATIENT} AWAKE AND ALERT, FOLLOWS COMMANDS.
{patient} and {rel} updated on plan.
Received {patient} from the ED at 2200.
Admitted {patient} to bed 4 from the OR.
Pt is {patient}, a 70 yo with ESRD.
{patient} was agitated overnight, haldol given.
{patient} took PO meds whole with applesauce.
{patient} is awaiting a rehab bed.
{patient} c/o back pain, repositioned with relief.
{patient} has been afebrile since admission.
{patient} requires 2 assist to transfer.
{patient} with good effect from the diuresis.
{patient} by report had a restless night.
Wrist band checked: {patient}.
Verified identity of {patient} with DOB and name.
Mr. {PATIENT} was seen by the team today.
Mrs {patient} anxious about the procedure, reassured.
Reoriented Ms. {patient} to place and time.
Per report from {clinician}, pt stable.
Handoff given to {clinician}, RN.
Reviewed with {clinician} from the ICU team.
Case reviewed w/ Dr. {clinician} by phone.
{clinician} (attending) at bedside.
Dr. {clinician} from GI will scope in am.
Called by {clinician} from lab with critical K.
{relative}, the pt's {rel}, visited with grandchildren.
Voicemail left for {relative} ({rel}).
{rel} {relative} signed consent for the procedure.
Updated {relative} by phone, no questions.
{relative} asked that the team call at {phone}.
Pt's {rel} ({relative}) lives in {city}.
Left message for {relative} at {phone}.
Pt arrived from {hospital} by ambulance.
Transfer paperwork from {hosp_abbr} incomplete.
Pt had been admitted at {hospital} for 3 days.
Pt lives in an apartment in {city}.
Family is driving in from {city} tomorrow.
Bills are sent to {street}, {city}
Beeper #{pager}
Page me at {pager} with questions.
Work phone {phone}; home {phone2}
Clinic fax: {fax}
Extubated {date} without difficulty.
Dialysis last done {date}.
PICC placed {date}, tip in SVC.
Pt last seen by PCP on {date}.
Blood cultures {date} negative to date.
Medical record number {mrn}
SS# {ssn}
Device serial: {device}
Pt can be reached by email at {email}.
Pt resides with {rel} in {city}.
Lives w/ {rel} in {city}, independent at baseline.
Home is in {city}; {rel} lives nearby.
{city} resident, retired machinist.
Resident of {city}, lives in a 2nd floor apartment.
Pt is originally from {city}.
Will go home to {city} with VNA services.
VNA in {city} will follow after discharge.
Lives alone in an apartment in {city}, {rel} checks in daily.
Grew up in {city}, moved to {city2} in her 40s.
Pt's {rel} drove down from {city} today.
Street address: {street}
Lives on {street} in {city}.
Pt's house on {street} has 12 stairs to enter.
Send records to {street}, {city}.
Home: {street}
Admitted from {hosp_abbr} with a GI bleed.
{hosp_abbr} ED sent pt for cath.
Records from {hosp_abbr} pending.
Had CT at {hosp_abbr} yesterday, read as negative.
Going to {hosp_abbr} for rehab once stable.
Pt was seen at {hospital} ED last week.
Plan: d/c to {hospital} when bed available.
Pt spent a month at {hospital} last spring.
Accepted at {hospital}, transport at 1400.
{patient} sat up in chair for lunch.
{patient} walked to the bathroom with a steady gait.
Assisted {patient} with am care.
Explained plan to {patient}, verbalized understanding.
"""

# Sentences of the same shapes with no identifier in the slots (roles, relation words alone, brand drugs,
# eponyms, services): training sees the contexts above without a name in them (train split only).
_TRAIN_CONTRAST_TEMPLATES = """
Seen by {role}, recs appreciated.
Discussed with {role} who agrees with plan.
Spoke with {role} re: plan of care.
{role} aware and at bedside.
Spoke with {rel} at length, questions answered.
{rel} called for update.
Pt's {rel} in to visit this afternoon.
Started {brand} 20 mg daily.
Pt refused {brand} this am.
Home meds include {brand} and {brand2}.
Hold {brand} for SBP < 100.
{BRAND} GIVEN AS ORDERED.
Positive {eponym} on exam.
Hx of {eponym}, followed by {role}.
{eponym} noted; {role} notified.
Transferred from {unit} on {brand}.
Hx of {problem}.
Mother - {problem}; Father - {problem2}.
Father with {problem}, sister with {problem2}.
{problem} noted, {role} aware.
{Problem} - stable, continue current regimen.
Pt c/o {symptom} x 3 days.
Denies {symptom} or {symptom2}.
{Symptom} is intermittent, worse at night.
{test} showed no acute process.
s/p {procedure} in the past.
Home {brand} continued.
{BRAND} CONTINUED.
# {problem}: continue home {drug}.
Started {drug}, {role} to follow.
Pacer interrogated by EP, settings unchanged.
Checked by {role} at 1400, no changes.
Verified by pharmacy and given at 0900.
Meds given by mouth with applesauce.
Identity confirmed by wristband and DOB.
By report pt slept well.
Cleared by PT for discharge home.
Evaluated by SLP, diet advanced to soft solids.
Seen at 0700 by {role}.
Family updated by phone at 2000.
Pt assessed at 0400, resting comfortably.
Sent to lab at 0530 per {role}.
Called {rel} at 1800, no answer.
Up to chair at 1000 with assist of two.
Temp 101.4 at 2200, cultures drawn.
Transferred to {unit} at 1630 by {role}.
Reviewed with {role}, plan to wean as tolerated.
"""

_ROLES = ("the attending", "covering resident", "night float", "the renal fellow", "charge RN", "the team",
          "PCP", "case management", "social work", "the on-call MD", "cardiology", "the surgeon",
          "nursing supervisor", "the NP", "ortho", "the primary team", "MD", "house officer", "IV team",
          "respiratory therapy", "the fellow", "hospitalist", "palliative care", "the intern")
# Eponymous terms (person names that are clinical words, not identifiers). Words of the held-out notes'
# lexicon are left out (``_contrast_values``), so the clinical false-positive set stays unseen.
_EPONYMS = (
    "Babinski sign", "Homans sign", "Kernig sign", "Brudzinski sign", "Romberg sign", "Chvostek sign",
    "Trousseau sign", "Tinel sign", "Phalen test", "Lachman test", "McMurray test", "Allen test",
    "Trendelenburg gait", "Cushing syndrome", "Addison disease", "Graves disease", "Crohn's disease",
    "Hodgkin lymphoma", "Wilms tumor", "Bell's palsy", "Guillain-Barre syndrome", "Mallory-Weiss tear",
    "Barrett esophagus", "Zenker diverticulum", "Meckel diverticulum", "Kussmaul breathing",
    "Cheyne-Stokes respirations", "Wenckebach block", "Mobitz II block", "Brugada pattern",
    "Wolff-Parkinson-White", "Raynaud phenomenon", "Sjogren syndrome", "Marfan syndrome", "Down syndrome",
    "Stevens-Johnson syndrome", "Kawasaki disease", "Wernicke encephalopathy", "Korsakoff syndrome",
    "Dupuytren contracture", "Baker's cyst", "Colles fracture", "Lisfranc injury", "Hill-Sachs lesion",
    "Jackson-Pratt drain", "Penrose drain", "Hickman catheter", "Swan-Ganz catheter", "Foley catheter",
    "Greenfield filter", "Nissen fundoplication", "Whipple procedure", "Hartmann pouch", "Roux-en-Y bypass",
    "Billroth II", "Pfannenstiel incision", "Kocher incision", "McBurney point tenderness", "Rovsing sign",
    "Cullen sign", "Grey Turner sign", "Virchow node", "Ranson criteria", "Wells score", "Child-Pugh class B",
    "Glasgow coma scale 15", "Braden score 14", "Morse fall score 45", "Mallampati class II", "Killip class I",
    "Gleason 7", "Apgar 9", "Levine sign", "Austin Flint murmur", "Osler nodes", "Janeway lesions",
    "Roth spots", "Beck triad", "Charcot foot", "Tourette syndrome", "Huntington disease", "Paget disease",
    "Bowen disease", "Pott disease", "Ludwig angina", "Bartholin cyst", "Fournier gangrene", "Berger disease",
)

_TEST_TEMPLATES = """
Mr {patient} continues to do well post op.
{patient} tolerated clears, advanced to regular diet.
Identified pt as {patient} by name band.
Pt's {rel} {relative} phoned for update this evening.
Updated {rel} {relative} by phone re: plan for extubation.
{relative} (pt's {rel}) will pick her up at discharge.
Reviewed with Dr. {clinician} who agrees.
Plan per Dr {clinician}, appreciate recs.
Evaluated by {clinician} from PT, recommends rehab.
Pt came over from {hospital} with a GI bleed.
Came in via ambulance from {hosp_abbr}.
OSH ({hospital}) records requested.
Resides in {city}; walks with a cane.
Moved from {city} last year to live with son.
Mailing address: {street}
Beeper {pager} for any questions.
Please reach me at pager {pager}.
Home phone: {phone}
Phone no. {phone}, leave message.
Fax # {fax}
Had colonoscopy {date}, normal.
Seen in clinic {date}, BP was elevated.
Last seen {date} by her cardiologist.
Hip fracture '{yearshort} per family.
Med record no {mrn}
Social security # {ssn}
Insurance acct no. {account}
Implanted device SN {device}
Wife's email {email}
See {url} for his care plan.
Patient is a {oldage} yo man with dementia.
{PATIENT} WAS SEEN BY {CLINICIAN} TODAY.
Assumed care of Mrs. {patient} at 0700, A&Ox3.
Received Mr. {PATIENT} from PACU at 1500.
Introduced self to {patient}; oriented to room and call light.
{patient} walked twice in the hall with the walker.
{patient} was tearful after the family left, support given.
Pt ({patient}) c/o incisional pain overnight.
Ms. {patient}'s sats dropped to 88% on RA.
Reminded {patient} to use the incentive spirometer.
MRS. {PATIENT} DENIES SOB AT REST.
Left VM for {rel} {relative}, awaiting call back.
{relative} ({rel}) signed consent for the PEG.
Called and spoke with {relative}, pt's {rel}, at 1400.
Per {relative}, pt has been more confused for 2 days.
Pt's {rel} {relative} would like a call with any changes.
Nephew {relative} is the contact person, {phone}.
Case discussed with Dr. {clinician}, the attending.
{clinician} from renal saw pt, will dialyze tomorrow.
Spoke w/ dr {clinician} re: abx plan.
Endorsed to {clinician} RN at 1900.
Covering MD tonight is Dr. {clinician}.
Signed: {clinician}, RN
Transferred from {hospital} ED after head CT.
Pt d/c'd to {hospital} for rehab.
Outside films from {hosp_abbr} reviewed with radiology.
Plans to return home to {city} after discharge.
Pt's address on file is {street}.
Lives with her {rel} in {city}.
Surgery resident pager {pager}.
Dr. {clinician} PG {pager}
Daughter's cell: {phone}
Office {phone}, fax {fax}.
Intubated {date}, extubated {date2}.
Blood cx from {date} grew GPCs.
Last dose of coumadin {date}.
Scheduled for TEE on {date}.
CABG back in '{yearshort}, no issues since.
MR# {mrn}
Pt SSN: {ssn}
Acct# {account}
ICD serial {device} checked by EP.
Son can be emailed at {email}.
{oldage} yo woman admitted from home.
"""

# Clinical lines whose numbers look like identifiers but are not (label O everywhere).
_CLINICAL_LINES = """
BP 120/80 HR 72 RR 16 SpO2 98% RA.
Neuro: A&Ox3, strength 4/5 in LUE, 5/5 elsewhere.
IVF: 1/2 NS at 75 cc/hr.
Pain 2/2 incision, 4/10, given oxycodone 5 mg.
I/O 1200/800, net positive 400 cc.
ABG 7.35/45/80 on FiO2 40%, PEEP 5.
Heparin gtt at 1200 units/hr, PTT 65.
Plan to diurese 1-2 L today, recheck lytes in am.
K 3.1, repleted with 40 mEq KCl PO x2.
Lasix 40 mg IV x1 at 14:00 with good UOP.
Skin: stage 2 ulcer on coccyx, 2 x 3 cm, dressing changed.
Room 12, bed 2. Call light within reach.
Pt 67 yo with 40 pack-year smoking history.
Vent settings AC 500 x 14, PEEP 8, FiO2 50%.
Glucose 145, covered with 4 units SSI per scale.
Follow up in 1-2 weeks. INR goal 2-3.
Ambulated 200 ft with walker, tolerated well.
Tele: NSR 70s-80s, occasional PVCs.
Admitted 2151-03-05 and discharged 3/14/2151.
Echo [**2182-4-3**]: EF 35%.
Cr 1.2 -> 0.9; WBC 11.2 -> 8.4.
Ativan 0.5-1 mg q4-6h prn anxiety.
Chest tube to -20 cm suction, 150 cc serosanguinous.
MAP > 65 on levophed 0.08 mcg/kg/min.
NPO after midnight for procedure in am.
CIWA scores 8-10, no ativan required.
Temp max 101.2 at 0400, cultures sent x2.
Code status: full code. Contact: ___ (___) ___.
On 2/14/2184 pt underwent TTE; repeat 3/2/2184.
PT/OT consult placed, 3x/week.
Levels 2+ bilat LE edema, pulses 1+.
PICC 4 Fr 38 cm placed in R basilic.
Dilaudid PCA 0.2 mg q10 min, 4-hr limit 3 mg.
Troponin 0.03 -> 0.05 -> 0.04, CK 120.
NGT to LIWS, 300 cc bilious output.
Albuterol/atrovent nebs q4h and prn.
2 RBC transfused for Hct 21.
Pt admitted to MICU from ED for hypotension.
Transferred to CCU overnight, MD aware.
Wife at bedside, updated by RN and team.
Daughter called for update, questions answered.
Family in to visit this afternoon, supportive.
Seen by PT, OT following; ambulating with assist.
Renal and ID consults following; appreciate recs.
Dr. on call notified of HR 130s, EKG done.
Team aware of low UOP, bolus 500 cc NS given.
HCP is son; code status discussed, remains DNR/DNI.
Plan: f/u in GI clinic 2-3 weeks, PCP in 1 week.
SW consulted re: dispo to rehab vs home with VNA.
NEURO: PERRL 3mm brisk, MAE, follows commands.
CV: NSR 80s, no ectopy, SBP 100-120s.
RESP: LS coarse bilat, sx for thick tan sputum.
GI/GU: abd soft, +BS, foley draining clear yellow urine.
ID: Tmax 100.4, vanco/zosyn, BCx 2/2 pending.
Access: R IJ TLC, L PIV 20g.
Social: lives with wife, retired, no etoh.
On 4L NC sats 94-96%, weaned to 2L.
Given 2 mg morphine IV x2 with relief, pain 3/10.
Ordered for CT head w/o contrast, results pending.
Heme: Hct 27.2, stable, no s/s bleeding.
Endo: RISS, FS 120-180s.
Skin intact except for sacral decub stage II.
MD paged x2, no response; charge RN aware.
Pt states "I want to go home", emotional support given.
Labs sent at 0400, K 3.8, Mg 1.9, repleted per sliding scale.
ABG 7.28/52/68 on AC 450 x 16.
VBG 7.31/49, lactate 2.1.
Repeat ABG 7.41/38/95, weaned FiO2 to 35%.
BP 98/54 (MAP 68), HR 102.
UOP 30-40 cc/hr, I/O -500.
Lives in a two-family home last year, now in an apartment.
Moved in with her son last year.
"""


def _templates(split: str, contrast: bool = False) -> list[tuple[str, str]]:
    if contrast:
        text, prefix = (_TRAIN_CONTRAST_TEMPLATES if split == "train" else ""), f"{split}-contrast"
    else:
        text, prefix = (_TRAIN_TEMPLATES if split == "train" else _TEST_TEMPLATES), split
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return [(f"{prefix}:{i}", line) for i, line in enumerate(lines)]


_NAME_WORD = re.compile(r"[A-Z][a-z]{2,}")


@cache
def _contrast_values() -> dict[str, tuple[str, ...]]:
    """Fillers of the contrast templates' slots: roles; problems, symptoms, tests, procedures, drugs and brand
    drugs of the clinical notes' train split (no surface a held-out term has); eponyms whose name words no
    held-out clinical term uses."""
    from pipeline.synth._data import split_of
    from pipeline.synth.clinic import _terms

    terms = _terms()
    held_out = {w.lower() for kind in terms.values() for term_id, surface in kind if split_of(term_id) == "test"
                for w in _NAME_WORD.findall(surface)}
    # a surface some held-out term also has (the same word under another id) is held out too
    held_out_surfaces = {surface.lower() for kind in terms.values() for term_id, surface in kind
                         if split_of(term_id) == "test"}

    def train_only(kind: str) -> tuple[str, ...]:
        return tuple(sorted({surface for term_id, surface in terms[kind] if split_of(term_id) == "train"
                             and surface.lower() not in held_out_surfaces and "{" not in surface}))
    held_out_brands = {surface.lower() for term_id, surface in terms["brand"] if split_of(term_id) == "test"}
    brands = sorted({surface for term_id, surface in terms["brand"] if split_of(term_id) == "train"
                     and surface[:1].isupper() and surface.isalpha() and surface.lower() not in held_out_brands})
    eponyms = tuple(e for e in _EPONYMS if not {w.lower() for w in _NAME_WORD.findall(e)} & held_out)
    return {"role": _ROLES, "brand": tuple(brands), "eponym": eponyms, "problem": train_only("problem"),
            "symptom": train_only("symptom"), "test": train_only("test"), "procedure": train_only("procedure"),
            "drug": train_only("drug")}


_RELATIONS = {
    "train": ("daughter", "son", "husband", "wife", "sister", "brother", "dtr", "niece", "friend", "mother"),
    "test": ("daughter", "son", "spouse", "wife", "husband", "nephew", "grandson", "granddaughter", "sister",
             "partner", "dtr", "father"),
}
_SLOT = re.compile(r"\{(\w+)\}")
_NON_IDENTIFIER_SLOTS = ("rel", "unit", "role", "brand", "eponym", "problem", "symptom", "test", "procedure", "drug")
# Hospital units and services: the words that stand where a hospital or clinician would, and are not identifiers.
_UNITS = {
    "train": ("MICU", "SICU", "CCU", "CVICU", "ED", "ER", "OR", "PACU", "GI", "ID", "Renal", "Cards", "Neuro",
              "PT", "OT", "SW", "NSICU", "TSICU", "Heme/Onc", "Ortho", "Rehab", "Step-down", "Medicine", "ICU"),
    "test": ("MICU", "CCU", "ED", "GI", "ID", "PT", "Surgery", "Pulm", "CSRU", "Endo", "Derm", "Psych", "Onc",
             "ICU", "Floor", "Urology", "ENT"),
}


class PhiNoteGenerator:
    """Notes of one split: clinical filler with planted sentences (surrogates or placeholders)."""

    def __init__(self, seed: int, split: str = "train", placeholder_share: float = 0.25) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        self.rng = random.Random(seed)
        self.split = split
        self.surrogates = Surrogates(self.rng, split)
        self.templates = _templates(split)
        self.contrast = _templates(split, contrast=True)
        self.placeholder_share = placeholder_share
        self.filler = _filler_lines(split)
        self.clinical = _clinical_lines(split)

    def _fill(self, slot: str) -> tuple[str, str, str] | None:
        """(value, label, kind) for a slot, or None for a relation word."""
        s = self.surrogates
        base = slot.rstrip("0123456789").lower()
        upper = slot.isupper()
        if base in ("patient", "relative", "clinician"):
            value = s.name() if base != "clinician" else (s.last() if self.rng.random() < 0.6 else s.full())
            return (value.upper() if upper else value), "NAME", base
        if base == "hospital":
            return s.hospital(), "LOCATION", "hospital"
        if base == "hosp_abbr":
            return s.hospital_abbr(), "LOCATION", "hospital"
        if base == "city":
            return s.city(), "LOCATION", "city"
        if base == "street":
            return s.street(), "LOCATION", "street"
        if base in ("phone", "fax"):
            return s.phone(), "PHONE", base
        if base == "pager":
            return s.pager(), "PHONE", "pager"
        if base == "date":
            value, kind = s.date()
            return value, "DATE", kind
        if base == "yearq":
            return s.year2(), "DATE", "date_year"
        if base == "yearshort":
            return s.year2()[1:], "DATE", "date_year"
        if base == "mrn":
            return s.mrn(), "ID", "mrn"
        if base == "ssn":
            return s.ssn(), "ID", "ssn"
        if base == "account":
            return s.mrn() + s._digits(2), "ID", "account"
        if base == "device":
            return s.device(), "ID", "device"
        if base == "email":
            return s.email(), "EMAIL", "email"
        if base == "url":
            return s.url(), "EMAIL", "url"
        if base == "oldage":
            return s.age90(), "AGE", "age"
        raise KeyError(slot)

    def sentence(self, template: str, *, deidentified: bool = False) -> tuple[str, list[tuple[int, int, str, str]]]:
        """A template filled: the text and its gold spans (start, end, label, kind)."""
        out: list[str] = []
        spans: list[tuple[int, int, str, str]] = []
        pos = 0
        length = 0
        for match in _SLOT.finditer(template):
            out.append(template[pos : match.start()])
            length += match.start() - pos
            pos = match.end()
            slot = match.group(1)
            base = slot.rstrip("0123456789").lower()
            if base in _NON_IDENTIFIER_SLOTS:
                pool = _RELATIONS[self.split] if base == "rel" else _UNITS[self.split] if base == "unit" \
                    else _contrast_values()[base]
                value = self.rng.choice(pool)
                value = value.upper() if slot.isupper() else value[:1].upper() + value[1:] if slot[0].isupper() \
                    else value
                out.append(value)
                length += len(value)
                continue
            value, label, kind = self._fill(slot)
            value = value.upper() if slot.isupper() else value
            if deidentified or self.rng.random() < self.placeholder_share:
                if kind == "date_year" and template[match.start() - 1 : match.start()] == "'":
                    value = "XX"
                else:
                    value = placeholder(label, self.rng)
                out.append(value)
                length += len(value)
                continue
            out.append(value)
            spans.append((length, length + len(value), label, kind))
            length += len(value)
        out.append(template[pos:])
        return "".join(out), spans

    def _augment(self, template: str) -> str:
        """Spelling variants clinicians use: titles with or without a period, lower-case titles, all caps."""
        rng = self.rng
        if rng.random() < 0.3:
            template = re.sub(r"\b(Mr|Mrs|Ms|Dr)\. ", lambda m: m.group(1) + " ", template)
        if rng.random() < 0.1:
            template = re.sub(r"\b(Mr|Mrs|Ms|Dr)\b", lambda m: m.group(1).lower(), template)
        if rng.random() < 0.1:
            template = _SLOT.sub(lambda m: "{" + m.group(1).upper() + "}", template.upper())
        return template

    def note(self) -> PhiNote:
        rng = self.rng
        pieces: list[str] = []
        entities: list[PhiSpan] = []
        template_ids: list[str] = []
        n_planted = rng.choice((0, 1, 1, 2, 2, 3, 4))
        n_filler = rng.randint(2, 10)
        n_contrast = rng.choice((0, 0, 1, 1, 2)) if self.contrast else 0
        slots = ["planted"] * n_planted + ["contrast"] * n_contrast + ["filler"] * n_filler
        rng.shuffle(slots)
        offset = 0
        for slot in slots:
            if slot in ("planted", "contrast"):
                template_id, template = rng.choice(self.templates if slot == "planted" else self.contrast)
                text, spans = self.sentence(self._augment(template))
                template_ids.append(template_id)
                for start, end, label, kind in spans:
                    entities.append(PhiSpan(offset + start, offset + end, label, kind, text[start:end]))
            else:
                text = rng.choice(self.clinical if rng.random() < 0.35 else self.filler)
            sep = rng.choice(("\n", "\n", " ", "  ", "\n\n"))
            pieces.append(text + sep)
            offset += len(text) + len(sep)
        return PhiNote("".join(pieces), entities, template_ids)

    def corpus(self, n_notes: int) -> Iterator[PhiNote]:
        for _ in range(n_notes):
            yield self.note()


@cache
def _filler_lines(split: str) -> tuple[str, ...]:
    from pipeline.synth.notes import NoteComposer

    seed = 31 if split == "train" else 32
    lines = []
    for note in NoteComposer(seed=seed, split=split).corpus(40):
        lines += [line.strip() for line in note.text.splitlines() if len(line.strip()) > 3]
    # an age over 89 is an identifier: such a line is neither filler nor placeholder-only text
    return tuple(line for line in lines if not _AGE_OVER_89.search(line))


_AGE_OVER_89 = re.compile(r"(?i)\b(?:9\d|1[01]\d)[\s-]*(?:yo\b|y/o|y\.o|years?[\s-]old|year-old)")


@cache
def _clinical_lines(split: str) -> tuple[str, ...]:
    """Nursing-note lines with identifier look-alikes; the held-out split's are not training's."""
    clinical = [line.strip() for line in _CLINICAL_LINES.strip().splitlines()]
    return tuple(clinical[split == "test" :: 2])


def phi_training_notes(n_notes: int, seed: int = TRAIN_SEED) -> list[PhiNote]:
    """Notes of the "train" split (its templates and surrogate values only)."""
    return list(PhiNoteGenerator(seed, "train").corpus(n_notes))


def phi_held_out_notes(n_notes: int, seed: int = EVAL_SEED) -> list[PhiNote]:
    """Notes of the held-out "test" split: templates and surrogate values training never sees."""
    return list(PhiNoteGenerator(seed, "test").corpus(n_notes))


def clinical_negative_notes(n_notes: int, split: str = "train", seed: int = TRAIN_SEED) -> list[PhiNote]:
    """Hard negatives: generated clinical notes with no planted identifier (two thirds discharge summaries of
    `pipeline.synth.notes`, one third shorthand clinic notes of `pipeline.synth.clinic`), in one split's
    templates and terms. They carry the brand drugs, eponyms ("Murphy sign"), lab strings and section headers a
    tagger trained on identifier sentences alone takes for names and places; their only identifiers are
    MIMIC-style placeholders (``___``) and, in some, an age over 89 (screen those with the deterministic
    recognizers before calling them identifier-free)."""
    from pipeline.synth.clinic import clinic_notes
    from pipeline.synth.notes import NoteComposer

    clinic = n_notes // 3
    composed = list(NoteComposer(seed=seed, split=split).corpus(n_notes - clinic))
    composed += clinic_notes(clinic, seed=seed, split=split) if clinic else []
    return [PhiNote(note.text, [], ["clinical-negative"]) for note in composed]


def deidentified_sentences(n: int, seed: int = EVAL_SEED) -> list[str]:
    """Placeholder-only text: held-out templates with every identifier replaced by a placeholder, and clinical
    lines (MIMIC shifted dates, look-alike numbers). No identifier in any of them."""
    gen = PhiNoteGenerator(seed, "test", placeholder_share=1.0)
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(gen.rng.choice(gen.clinical if i % 2 else gen.filler))
        else:
            out.append(gen.sentence(gen.rng.choice(gen.templates)[1], deidentified=True)[0])
    return out
