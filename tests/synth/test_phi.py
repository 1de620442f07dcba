"""Generated PHI notes: gold spans are exact, the held-out split shares no template or surrogate with training."""

from __future__ import annotations

import re

from pipeline.synth.phi import (
    PHI_TYPES,
    PhiNoteGenerator,
    deidentified_sentences,
    phi_held_out_notes,
    phi_training_notes,
    placeholder,
)


def test_phi_gold_spans_are_exact_and_typed():
    notes = phi_training_notes(1500)
    assert notes[:50] == phi_training_notes(50)  # deterministic
    kinds = set()
    for note in notes:
        for e in note.entities:
            assert note.text[e.start_char : e.end_char] == e.text and e.label in PHI_TYPES
            kinds.add(e.kind)
    assert {"patient", "relative", "clinician", "hospital", "city", "street", "phone", "pager", "date_no_year",
            "date_2y", "ssn", "email", "age"} <= kinds
    assert any(not n.entities for n in notes)  # notes without identifiers exist too


def test_phi_held_out_split_is_unseen():
    train, test = phi_training_notes(400), phi_held_out_notes(400)
    for label in ("NAME", "LOCATION"):
        seen = {e.text.lower() for n in train for e in n.entities if e.label == label and e.kind != "hospital"}
        unseen = {e.text.lower() for n in test for e in n.entities if e.label == label and e.kind != "hospital"}
        # single names and cities come from disjoint pools; multi-part values are built from disjoint parts
        assert not {v for v in unseen if " " not in v} & {v for v in seen if " " not in v}
    train_templates = {t for n in train for t in n.template_ids}
    test_templates = {t for n in test for t in n.template_ids}
    assert {t.split(":")[0] for t in train_templates} == {"train", "train-contrast"}
    assert {t.split(":")[0] for t in test_templates} == {"test"}


def test_held_out_templates_are_not_training_sentences():
    from pipeline.synth.phi import _templates

    def words(template: str) -> str:
        return " ".join(re.findall(r"[a-z]+", re.sub(r"\{\w+\}", "", template.lower())))

    train = {words(t) for _, t in _templates("train")}
    test = [t for _, t in _templates("test")]
    assert len(test) >= 70 and len(set(test)) == len(test)
    assert not [t for t in test if words(t) in train]


def test_contrast_sentences_carry_no_identifier_and_no_held_out_term():
    from pipeline.synth._data import split_of
    from pipeline.synth.clinic import _terms
    from pipeline.synth.phi import _contrast_values, _templates

    gen = PhiNoteGenerator(3, "train", placeholder_share=0.0)
    for _, template in _templates("train", contrast=True):
        text, spans = gen.sentence(template)
        assert spans == [] and "{" not in text
    held_out = {w.lower() for kind in _terms().values() for term_id, surface in kind if split_of(term_id) == "test"
                for w in re.findall(r"[A-Z][a-z]{2,}", surface)}
    values = _contrast_values()
    assert values["eponym"] and values["brand"] and values["role"]
    assert not {w.lower() for e in values["eponym"] for w in re.findall(r"[A-Z][a-z]{2,}", e)} & held_out
    held_out_brands = {surface.lower() for term_id, surface in _terms()["brand"] if split_of(term_id) == "test"}
    assert not {b.lower() for b in values["brand"]} & held_out_brands
    assert _templates("test", contrast=True) == []


def test_names_of_other_origins_are_drawn_and_split():
    from pipeline.synth.phi import _pools

    train, test = _pools("train"), _pools("test")
    assert len(train["last_world"]) > len(train["last"]) and test["last_world"]
    assert not set(train["last_world"]) & set(test["last_world"])
    assert all(name.isascii() for name in train["first_world"] + train["last_world"])
    names = {e.text for n in phi_training_notes(600) for e in n.entities if e.kind == "patient"}
    assert any(n in set(train["last_world"]) | set(train["first_world"]) for n in names)


def test_phi_placeholders_are_not_gold():
    gen = PhiNoteGenerator(5, "train", placeholder_share=1.0)
    text, spans = gen.sentence("Spoke with {rel} {relative} at {phone} on {date}.")
    assert spans == [] and "{" not in text
    styles = {placeholder("NAME", gen.rng)[:2] for _ in range(200)}
    assert {"[*", "__", "**", "XX", "[N", "<P"} <= styles


def test_deidentified_sentences_hold_no_surrogate():
    texts = deidentified_sentences(300)
    assert len(texts) == 300 and not any("{" in t for t in texts)
    assert any(re.search(r"\[\*\*|___|\*\*[A-Z]+\[|XXXX|\[[A-Z]+\]|<[A-Z_]+>", t) for t in texts)


def test_hospital_abbreviations_spell_no_service_or_word():
    import random

    from pipeline.synth.phi import Surrogates

    values = {Surrogates(random.Random(seed), "test").hospital_abbr() for seed in range(3000)}
    assert len(values) > 500 and not values & {"PT", "OR", "ED", "HE", "TO", "ICU", "THE"}


def test_training_places_are_more_varied_than_held_out_ones_and_share_none():
    """Training draws towns of other countries, made-up towns and common-word streets besides the US town list;
    the held-out split draws only from the list, and every extra value is of the training split."""
    from pipeline.synth.phi import _CITIES, _pools, _split_of

    listed = {c.lower() for c in _CITIES}
    train, test = PhiNoteGenerator(5, "train").surrogates, PhiNoteGenerator(5, "test").surrogates
    bare = lambda city: city.split(",")[0].lower()  # noqa: E731  ("Lynn, MA")
    train_cities = {bare(train.city()) for _ in range(400)}
    test_cities = {bare(test.city()) for _ in range(400)}
    assert test_cities <= listed and all(_split_of(c) == "test" for c in test_cities)
    assert len(train_cities - listed) > 50
    pool = _pools("train")
    assert pool["city_world"] and pool["street_word"]
    assert all(_split_of(v) == "train" for v in pool["city_world"] + pool["street_word"])
    assert not {v.lower() for v in pool["city_world"]} & {v.lower() for v in _pools("test")["city"]}
    words = set(pool["street_word"])
    gen = PhiNoteGenerator(6, "train").surrogates
    assert any(part in words for _ in range(200) for part in gen.street().split())
