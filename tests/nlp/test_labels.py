import numpy as np
import pytest

from pipeline.nlp.labels import LabelScheme, bio_labels

ID2LABEL = dict(enumerate(bio_labels()))  # O, B-PROBLEM, I-PROBLEM, B-TREATMENT, I-TREATMENT, B-TEST, I-TEST


def spans(scheme, tags):
    ids = np.array([{v: k for k, v in ID2LABEL.items()}[t] for t in tags])
    starts, ends, types = scheme.decode(ids)
    return [(int(s), int(e), scheme.entity_types[t]) for s, e, t in zip(starts, ends, types, strict=True)]


def test_labels_iob2_decoding():
    scheme = LabelScheme.from_id2label(ID2LABEL)
    tags = ["O", "B-PROBLEM", "I-PROBLEM", "B-PROBLEM", "O", "B-TEST", "I-TEST", "B-TREATMENT"]
    assert spans(scheme, tags) == [(1, 3, "PROBLEM"), (3, 4, "PROBLEM"), (5, 7, "TEST"), (7, 8, "TREATMENT")]


def test_labels_iob1_style_inside_starts_tolerated():
    scheme = LabelScheme.from_id2label(ID2LABEL)
    tags = ["I-PROBLEM", "I-PROBLEM", "O", "I-TEST", "I-TREATMENT", "I-TREATMENT"]
    assert spans(scheme, tags) == [(0, 2, "PROBLEM"), (3, 4, "TEST"), (4, 6, "TREATMENT")]


def test_labels_string_keys_and_any_order():
    scheme = LabelScheme.from_id2label({"2": "I-DRUG", "0": "O", "1": "B-DRUG"})
    starts, ends, _types = scheme.decode(np.array([1, 2, 0, 2]))
    assert starts.tolist() == [0, 3] and ends.tolist() == [2, 4] and scheme.entity_types == ("DRUG",)


def test_labels_empty_and_all_outside():
    scheme = LabelScheme.from_id2label(ID2LABEL)
    assert all(a.size == 0 for a in scheme.decode(np.array([], dtype=np.int64)))
    assert all(a.size == 0 for a in scheme.decode(np.zeros(5, dtype=np.int64)))


def test_labels_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="E003"):
        LabelScheme.from_id2label({0: "O", 1: "PROBLEM"})
