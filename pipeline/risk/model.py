"""The learned risk model: one linear (logistic) layer with two outputs, readmit_30d and mortality_1y.

A linear model keeps explanations exact: the calibrated logit of target k is
``bias_k + sum_i w_ki * (x_i - mean_i) / std_i``, so ``w_ki * (x_i - mean_i) / std_i`` *is* feature i's
contribution. Platt scaling (fitted on a calibration split) is folded into ``w`` and ``bias`` at training
time, so the saved layer already outputs calibrated logits.

Saved as two files in one folder: ``model.safetensors`` (tensors ``weight`` [2, F] and ``bias`` [2]) and
``model.json`` (feature list, normalisation means/stds, imputation medians, training window, version,
metrics). ``model.json`` carries a sha256 over the weights file *and* the canonical metadata (every key
but ``sha256`` itself), verified on every load: editing either file, e.g. the feature order or a median,
makes the model refuse to load instead of silently scoring with changed inputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from safetensors.torch import load_file, save_file

from pipeline.device import resolve_device
from pipeline.risk.errors import (
    R001,
    R002,
    R010,
    R014,
    MissingFeatureError,
    RiskError,
    RiskModelIntegrityError,
)
from pipeline.risk.labels import TARGETS

MODEL_NAME = "ehr-risk-logreg"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"


def risk_model_present(folder: Path | str) -> bool:
    """True when ``folder`` holds a saved model (both files); says nothing about its integrity."""
    folder = Path(folder)
    return (folder / WEIGHTS_FILE).is_file() and (folder / METADATA_FILE).is_file()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_metadata(metadata: dict[str, Any]) -> bytes:
    """The metadata as hashed: sorted keys, no whitespace, without the ``sha256`` field itself."""
    payload = {k: v for k, v in metadata.items() if k != "sha256"}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def model_digest(weights_path: Path, metadata: dict[str, Any]) -> str:
    """sha256 over the weights file's digest and the canonical metadata (one value covers both files)."""
    digest = hashlib.sha256()
    digest.update(sha256_file(weights_path).encode("ascii"))
    digest.update(b"\n")
    digest.update(canonical_metadata(metadata))
    return digest.hexdigest()


@dataclass
class RiskModel:
    """A trained, calibrated linear risk model on a device; load once per task with :meth:`load`."""

    weight: torch.Tensor  # [len(TARGETS), n_features]
    bias: torch.Tensor  # [len(TARGETS)]
    feature_names: tuple[str, ...]
    means: np.ndarray
    stds: np.ndarray
    medians: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("model_name", MODEL_NAME))

    @property
    def version(self) -> str:
        return str(self.metadata.get("model_version", "unversioned"))

    @property
    def charlson_weights(self) -> str:
        return str(self.metadata.get("charlson_weights", "charlson1987"))

    # -- features to tensors -------------------------------------------------------------------------
    def raw_matrix(self, features: pa.Table) -> np.ndarray:
        """The model's features from ``features`` as float64 [n, F], NaN where missing; checks names."""
        for name in self.feature_names:
            if name not in features.column_names:
                raise MissingFeatureError(name)
        if not self.feature_names:
            return np.zeros((features.num_rows, 0))
        return np.column_stack(
            [
                np.asarray(
                    pc.cast(features.column(name), pa.float64()).to_numpy(zero_copy_only=False),
                    dtype=np.float64,
                )
                for name in self.feature_names
            ]
        ).reshape(features.num_rows, len(self.feature_names))

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """Impute training medians for missing values, then z-score with the training means/stds."""
        filled = np.where(np.isnan(raw), self.medians, raw)
        return (filled - self.means) / self.stds

    def _tensor(self, z: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(z, dtype=torch.float32, device=self.device)

    # -- inference ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, features: pa.Table) -> np.ndarray:
        """Calibrated probabilities [n, len(TARGETS)] in one tensor pass."""
        z = self._tensor(self.standardise(self.raw_matrix(features)))
        return torch.sigmoid(z @ self.weight.T + self.bias).double().cpu().numpy()

    def contributions(self, z: np.ndarray, target: str = "readmit_30d") -> np.ndarray:
        """Exact per-feature logit contributions w_i·(x_i − mean_i)/std_i for ``target``, [n, F]."""
        k = TARGETS.index(target)
        return z * self.weight[k].double().cpu().numpy()

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, out_dir: Path) -> Path:
        """Write model.safetensors and model.json (with the sha256 of weights + metadata) to ``out_dir``."""
        out_dir = Path(out_dir)
        weights_path = out_dir / WEIGHTS_FILE
        _check_shapes(
            weights_path,
            {"weight": self.weight, "bias": self.bias},
            len(TARGETS),
            self.feature_names,
            (self.means, self.stds, self.medians),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = weights_path.with_suffix(".safetensors.tmp")
        save_file(
            {
                "weight": self.weight.detach().float().cpu().contiguous(),
                "bias": self.bias.detach().float().cpu().contiguous(),
            },
            str(tmp),
            metadata={"format": f"{MODEL_NAME}/{FORMAT_VERSION}"},
        )
        tmp.replace(weights_path)
        metadata = dict(self.metadata)
        metadata.pop("sha256", None)
        metadata.setdefault("model_name", MODEL_NAME)
        metadata.setdefault("model_version", f"{FORMAT_VERSION}.0+{sha256_file(weights_path)[:12]}")
        metadata.update(
            {
                "format_version": FORMAT_VERSION,
                "targets": list(TARGETS),
                "feature_names": list(self.feature_names),
                "means": self.means.tolist(),
                "stds": self.stds.tolist(),
                "medians": self.medians.tolist(),
                "weights_file": WEIGHTS_FILE,
                "weight_shape": [int(d) for d in self.weight.shape],
            }
        )
        metadata["sha256"] = model_digest(weights_path, metadata)
        meta_path = out_dir / METADATA_FILE
        meta_tmp = meta_path.with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True), encoding="utf-8")
        meta_tmp.replace(meta_path)
        self.metadata = metadata
        return out_dir

    @classmethod
    def load(cls, path: Path | str, device: str = "auto") -> RiskModel:
        """Load from a model folder (or its model.safetensors).

        Refuses (``RiskModelIntegrityError``) weights or metadata whose sha256 differs from the one recorded
        at training, and weights whose shape does not match the metadata's targets and features.
        """
        path = Path(path)
        folder = path.parent if path.is_file() else path
        weights_path, meta_path = folder / WEIGHTS_FILE, folder / METADATA_FILE
        if not weights_path.is_file():
            raise RiskError(R001.format(path=folder))
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
            expected = metadata["sha256"]
            names = tuple(metadata["feature_names"])
            means, stds, medians = (
                np.asarray(metadata[k], dtype=np.float64) for k in ("means", "stds", "medians")
            )
        except (OSError, ValueError, KeyError) as exc:
            raise RiskError(R010.format(path=meta_path, reason=type(exc).__name__)) from exc
        try:
            actual = model_digest(weights_path, metadata)
        except ValueError as exc:  # NaN/inf smuggled into the metadata cannot be canonical JSON
            raise RiskError(R010.format(path=meta_path, reason=f"{type(exc).__name__}: {exc}")) from exc
        if actual != expected:
            raise RiskModelIntegrityError(R002.format(folder=folder, actual=actual, expected=expected))
        torch_device = resolve_device(device)
        tensors = load_file(str(weights_path), device="cpu")
        _check_shapes(
            weights_path, tensors, len(metadata.get("targets", TARGETS)), names, (means, stds, medians)
        )
        return cls(
            weight=tensors["weight"].to(torch_device),
            bias=tensors["bias"].to(torch_device),
            feature_names=names,
            means=means,
            stds=stds,
            medians=medians,
            metadata=metadata,
            device=torch_device,
        )


def _check_shapes(
    weights_path: Path,
    tensors: dict[str, torch.Tensor],
    n_targets: int,
    names: tuple[str, ...],
    vectors: tuple[np.ndarray, ...],
) -> None:
    """Weights [targets, features], bias [targets] and one mean/std/median per feature, or a clear error."""
    expected = {"weight": (n_targets, len(names)), "bias": (n_targets,)}
    problems = [
        f"{key} has shape {tuple(tensors[key].shape) if key in tensors else 'missing'}, expected {shape}"
        for key, shape in expected.items()
        if key not in tensors or tuple(tensors[key].shape) != shape
    ]
    problems += [
        f"{label} has {len(vector)} values for {len(names)} features"
        for label, vector in zip(("means", "stds", "medians"), vectors, strict=True)
        if vector.shape != (len(names),)
    ]
    if n_targets != len(TARGETS):
        problems.append(f"{n_targets} targets, this code scores {len(TARGETS)} ({', '.join(TARGETS)})")
    if problems:
        raise RiskModelIntegrityError(R014.format(path=weights_path, problems="; ".join(problems)))
