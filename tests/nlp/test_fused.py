"""The fused CPU forward: same logits as transformers on BERT-style models, the transformers forward for the rest."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest
import torch

from pipeline.nlp import fused as fusedmod
from pipeline.nlp.fused import FusedTokenClassifier, fuse_token_classifier
from pipeline.nlp.labels import bio_labels

pytestmark = pytest.mark.skipif(not fusedmod.kernels_available(), reason="torch built without oneDNN")

CPU = torch.device("cpu")
TEXT = ("Patient denies chest pain. Started metoprolol for atrial fibrillation.\n"
        "HISTORY: hypertension, type 2 diabetes; mother had breast cancer. Ordered CBC and troponin.")


def _labels() -> dict:
    labels = bio_labels()
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


def _small(**extra) -> dict:
    return {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 128, **_labels(), **extra}


def _bert(**extra):
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(1)
    return BertForTokenClassification(BertConfig(**_small(**extra))).eval()


def _batch(rows: int = 3, width: int = 20, pad_last: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 30000, (rows, width), generator=generator)
    mask = torch.ones_like(ids)
    mask[-1, width - pad_last :] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _assert_same_logits(model, fused: FusedTokenClassifier, ids, mask) -> None:
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits
        got = fused(ids, mask)
    real = mask.bool()
    assert got.shape == want.shape
    assert torch.allclose(got[real], want[real], atol=1e-5, rtol=1e-4)
    assert torch.equal(got[real].argmax(-1), want[real].argmax(-1))


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_fused_bert_matches_transformers(act):
    model = _bert(hidden_act=act)
    fused = fuse_token_classifier(model, CPU, None)
    assert isinstance(fused, FusedTokenClassifier)
    _assert_same_logits(model, fused, *_batch())
    ids, _ = _batch(pad_last=0)
    _assert_same_logits(model, fused, ids, torch.ones_like(ids))  # no padding: the unmasked attention path


def test_fused_roberta_and_electra_match_transformers():
    from transformers import (
        ElectraConfig,
        ElectraForTokenClassification,
        RobertaConfig,
        RobertaForTokenClassification,
    )

    torch.manual_seed(2)
    roberta = RobertaForTokenClassification(RobertaConfig(**_small(pad_token_id=1))).eval()
    # ELECTRA with a narrower embedding than its hidden size: the embeddings_project layer is applied
    electra = ElectraForTokenClassification(ElectraConfig(**_small(embedding_size=16))).eval()
    for model in (roberta, electra):
        fused = fuse_token_classifier(model, CPU, None)
        assert fused is not None, type(model).__name__
        ids, mask = _batch()
        _assert_same_logits(model, fused, ids.masked_fill(mask == 0, model.config.pad_token_id), mask)


def test_other_architectures_keep_the_transformers_forward(caplog):
    from transformers import DistilBertConfig, DistilBertForTokenClassification

    model = DistilBertForTokenClassification(
        DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64, **_labels())
    ).eval()
    with caplog.at_level(logging.INFO, logger="pipeline.nlp.fused"):
        assert fuse_token_classifier(model, CPU, None) is None
    assert "fused NER forward off for DistilBertForTokenClassification" in caplog.text
    assert fuse_token_classifier(_bert(hidden_act="silu"), CPU, None) is None  # no exact oneDNN fusion
    assert fuse_token_classifier(_bert().train(), CPU, None) is None  # dropout on


def test_fused_only_for_fp32_on_cpu(monkeypatch):
    model = _bert()
    assert fuse_token_classifier(model, CPU, torch.bfloat16) is None
    assert fuse_token_classifier(model, torch.device("cuda"), None) is None
    monkeypatch.setattr(fusedmod, "missing_kernels", lambda: ["mkldnn._linear_pointwise"])
    assert fuse_token_classifier(model, CPU, None) is None


def test_probe_rejects_a_forward_that_computes_something_else(monkeypatch, caplog):
    """The load-time probe is what guarantees the same model: a wrong fusion (erf GELU run as ReLU) is refused."""
    monkeypatch.setitem(fusedmod.ACTIVATIONS, "gelu", ("relu", [], ""))
    with caplog.at_level(logging.INFO, logger="pipeline.nlp.fused"):
        assert fuse_token_classifier(_bert(hidden_act="gelu"), CPU, None) is None
    assert "probe logits differ" in caplog.text


def test_ner_model_uses_fused_forward_with_the_same_entities(tiny_model_dir):
    from pipeline.nlp.ner import NerModel

    fast = NerModel.load(tiny_model_dir, device="cpu", max_length=32, token_budget=256, stride=6)
    plain = NerModel.load(tiny_model_dir, device="cpu", max_length=32, token_budget=256, stride=6, fused_cpu=False)
    assert fast.fused is not None and plain.fused is None
    texts = [TEXT, TEXT * 5, "", None, "Père Noël a une fièvre. ∆ pain."]
    for got, want in zip(fast.predict(texts), plain.predict(texts), strict=True):
        assert got.starts.tolist() == want.starts.tolist() and got.ends.tolist() == want.ends.tolist()
        assert got.labels == want.labels
        assert got.scores == pytest.approx(want.scores, abs=1e-5)


class _WithoutBinary:
    """torch.ops.mkldnn._linear_pointwise as a torch build without its ``binary`` overload would have it."""

    def __init__(self, real) -> None:
        self._real = real

    def __call__(self, *args, **kwargs):
        return self._real(*args, **kwargs)

    def __getattr__(self, name: str):
        if name == "binary":
            raise AttributeError("'OpOverloadPacket' object has no attribute 'binary'")
        return getattr(self._real, name)


def test_fused_missing_binary_kernel_falls_back_to_the_plain_forward(monkeypatch, caplog, tiny_model_dir):
    """A torch whose oneDNN lacks the fused residual-add kernel: NER loads with the transformers forward, says why."""
    from pipeline.nlp.ner import NerModel

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", _WithoutBinary(torch.ops.mkldnn._linear_pointwise))
    assert fusedmod.missing_kernels() == ["mkldnn._linear_pointwise.binary"]
    with caplog.at_level(logging.INFO, logger="pipeline.nlp.fused"):
        model = NerModel.load(tiny_model_dir, device="cpu", max_length=32, token_budget=256, stride=6)
    assert model.fused is None
    assert "fused NER forward off: this torch build lacks mkldnn._linear_pointwise.binary" in caplog.text
    plain = NerModel.load(tiny_model_dir, device="cpu", max_length=32, token_budget=256, stride=6, fused_cpu=False)
    for got, want in zip(model.predict([TEXT]), plain.predict([TEXT]), strict=True):
        assert got.starts.tolist() == want.starts.tolist() and got.labels == want.labels


@pytest.mark.parametrize("setting", ["true", "false"])
def test_fused_setting_reaches_the_task_loader(monkeypatch, tmp_path, tiny_model_dir, setting):
    """EHR_NER_FUSED_CPU, read by the NER task from the environment, decides the forward of the model it loads."""
    from pipeline import lake
    from pipeline.contracts import arrow_schema
    from pipeline.nlp.ner import NerModel
    from pipeline.tasks import nightly
    from tests.nlp.test_stage import notes_batch

    loaded: list[NerModel] = []
    real_load = NerModel.load.__func__

    def recording_load(cls, *args, **kwargs):
        loaded.append(real_load(cls, *args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(NerModel, "load", classmethod(recording_load))
    monkeypatch.setenv("EHR_WORKDIR", str(tmp_path))
    monkeypatch.setenv("EHR_NER_MODEL_PATH", str(tiny_model_dir))
    monkeypatch.setenv("EHR_NER_FUSED_CPU", setting)
    notes = pa.Table.from_batches([notes_batch([TEXT, "Denies chest pain."])]).cast(arrow_schema("notes"))
    day = notes.column("ds")[0].as_py()
    lake.write_partition(tmp_path / "lake", "validated", "notes", day, notes, part_rows=100)
    assert nightly.ner(day, 0, run_id="fused-setting")["notes"] == 2
    assert len(loaded) == 1 and (loaded[0].fused is not None) == (setting == "true")
