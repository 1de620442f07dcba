"""Saving, loading (checksum), device selection and feature checks of the risk model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from pipeline.risk.errors import MissingFeatureError, RiskError, RiskModelIntegrityError
from pipeline.risk.model import (
    METADATA_FILE,
    WEIGHTS_FILE,
    RiskModel,
    model_digest,
    risk_model_present,
)


def tiny_model(names: tuple[str, ...] = ("a", "b")) -> RiskModel:
    return RiskModel(
        torch.tensor([[1.0, -2.0], [0.5, 0.0]]),
        torch.tensor([0.0, -1.0]),
        names,
        means=np.array([1.0, 0.0]),
        stds=np.array([2.0, 1.0]),
        medians=np.array([3.0, 0.5]),
        metadata={"model_version": "test-1"},
    )


def test_model_save_load_round_trip(tmp_path: Path) -> None:
    tiny_model().save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["feature_names"] == ["a", "b"] and len(meta["sha256"]) == 64 and meta["medians"] == [3.0, 0.5]
    loaded = RiskModel.load(tmp_path, "cpu")
    features = pa.table({"a": [1.0, None], "b": [0.0, 2.0]})
    p = loaded.predict_proba(features)
    # row 2: a imputed with median 3 → z = (3-1)/2 = 1; b z = 2 → readmit logit 1 - 4 = -3
    assert p[1, 0] == pytest.approx(1 / (1 + np.exp(3)), rel=1e-5)
    assert p[0, 1] == pytest.approx(1 / (1 + np.exp(1)), rel=1e-5)
    assert loaded.version == "test-1"


def test_model_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    tiny_model().save(tmp_path)
    other = tmp_path / "other"
    RiskModel(torch.ones(2, 2), torch.zeros(2), ("a", "b"), np.zeros(2), np.ones(2), np.zeros(2)).save(other)
    shutil.copy(other / "model.safetensors", tmp_path / "model.safetensors")  # weights swapped after training
    with pytest.raises(RiskModelIntegrityError, match="R002: refused"):
        RiskModel.load(tmp_path, "cpu")


@pytest.mark.parametrize(
    ("key", "edit"),
    [
        ("feature_names", lambda v: list(reversed(v))),  # feature order swapped
        ("medians", lambda v: [v[0] + 1.0, v[1]]),  # an imputation value changed
        ("means", lambda v: [v[0], v[1] - 0.5]),
        ("stds", lambda v: [v[0] * 2, v[1]]),
        ("model_version", lambda v: "test-2"),
    ],
)
def test_model_edited_metadata_is_refused(tmp_path: Path, key: str, edit) -> None:
    tiny_model().save(tmp_path)
    path = tmp_path / "model.json"
    meta = json.loads(path.read_text())
    meta[key] = edit(meta[key])
    path.write_text(json.dumps(meta, indent=2))
    with pytest.raises(RiskModelIntegrityError, match=r"R002: refused.*metadata"):
        RiskModel.load(tmp_path, "cpu")


def test_model_reformatted_metadata_still_loads(tmp_path: Path) -> None:
    tiny_model().save(tmp_path)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(json.loads(path.read_text())))  # same content, other whitespace and order
    assert RiskModel.load(tmp_path, "cpu").feature_names == ("a", "b")


def test_model_weight_shape_must_match_the_features(tmp_path: Path) -> None:
    with pytest.raises(
        RiskModelIntegrityError, match=r"R014.*weight has shape \(2, 3\), expected \(2, 2\)"
    ):
        RiskModel(torch.ones(2, 3), torch.zeros(2), ("a", "b"), np.zeros(2), np.ones(2), np.zeros(2)).save(
            tmp_path
        )
    # a folder written by other means, with a consistent checksum but weights for three features
    tiny_model().save(tmp_path)
    save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(tmp_path / WEIGHTS_FILE))
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta["sha256"] = model_digest(tmp_path / WEIGHTS_FILE, meta)
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(RiskModelIntegrityError, match=r"R014: refused.*weight has shape \(2, 3\)"):
        RiskModel.load(tmp_path, "cpu")


def test_model_present_needs_both_files(tmp_path: Path) -> None:
    assert not risk_model_present(tmp_path / "nope")
    tiny_model().save(tmp_path)
    assert risk_model_present(tmp_path)
    (tmp_path / METADATA_FILE).unlink()
    assert not risk_model_present(tmp_path)


def test_model_missing_folder_and_metadata(tmp_path: Path) -> None:
    with pytest.raises(RiskError, match="R001"):
        RiskModel.load(tmp_path / "nope", "cpu")
    tiny_model().save(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(RiskError, match="R010"):
        RiskModel.load(tmp_path, "cpu")


def test_model_missing_expected_feature_is_named() -> None:
    with pytest.raises(MissingFeatureError, match="'b'") as caught:
        tiny_model().predict_proba(pa.table({"a": [1.0]}))
    assert caught.value.feature == "b"


def test_model_contributions_are_exact_for_the_linear_layer() -> None:
    model = tiny_model()
    raw = model.raw_matrix(pa.table({"a": [5.0], "b": [1.0]}))
    z = model.standardise(raw)
    contributions = model.contributions(z)
    assert contributions.tolist() == [[2.0, -2.0]]
    logit = contributions.sum() + model.bias[0].item()
    assert model.predict_proba(pa.table({"a": [5.0], "b": [1.0]}))[0, 0] == pytest.approx(
        1 / (1 + np.exp(-logit))
    )


def test_model_device_selection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The model goes where pipeline.device says: a missing GPU or an unknown device is an error at load."""
    from pipeline.device import DeviceError

    tiny_model().save(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert RiskModel.load(tmp_path, "auto").device.type == "cpu"
    with pytest.raises(DeviceError, match="D002"):
        RiskModel.load(tmp_path, "cuda")
    with pytest.raises(DeviceError, match="D001"):
        RiskModel.load(tmp_path, "tpu")
