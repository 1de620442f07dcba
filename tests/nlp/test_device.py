import numpy as np
import pytest
import torch

from pipeline.nlp import device as devices
from pipeline.nlp.batching import build_batch


def test_device_cuda_budget_and_precision(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 1024**3, 16 * 1024**3))
    budget = devices.default_token_budget(cuda)
    assert 512 <= budget <= devices.CUDA_MAX_TOKEN_BUDGET and budget > devices.CPU_TOKEN_BUDGET
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * 1024**3, 16 * 1024**3))
    assert devices.default_token_budget(cuda) < budget
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert devices.autocast_dtype(cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert devices.autocast_dtype(cuda) == torch.float16
    assert devices.autocast_dtype(torch.device("cpu")) is None
    assert devices.default_token_budget(torch.device("cpu")) == devices.CPU_TOKEN_BUDGET
    cpu = torch.device("cpu")
    assert devices.default_token_budget(cpu, 1536) == 1024  # MiniLM-L6: 1,024 tokens × 1,536 × 4 B = 6 MiB
    assert devices.default_token_budget(cpu, 3072) == 512
    assert devices.default_token_budget(cpu, 10**6) == devices.CPU_MIN_TOKEN_BUDGET


def test_device_precision_switches():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert devices.autocast_dtype(cpu, "bf16") == torch.bfloat16
    assert devices.autocast_dtype(cuda, "fp32") is None
    assert devices.autocast_dtype(cuda, "fp16") == torch.float16
    with pytest.raises(ValueError, match="E009"):
        devices.autocast_dtype(cpu, "fp16")
    with pytest.raises(ValueError, match="E009"):
        devices.autocast_dtype(cpu, "int4")


def test_device_bf16_inference_on_cpu_keeps_entities(tiny_model_dir):
    """bf16 autocast on CPU runs the same code path and returns float outputs the decoder accepts."""
    from pipeline.nlp.ner import NerModel

    text = "Patient denies chest pain. Started metoprolol for atrial fibrillation."
    fp32 = NerModel.load(tiny_model_dir, device="cpu", precision="fp32").predict([text])[0]
    bf16 = NerModel.load(tiny_model_dir, device="cpu", precision="bf16").predict([text])[0]
    assert bf16.scores.dtype == fp32.scores.dtype
    for found in (fp32, bf16):
        assert all(text[s:e].strip() == text[s:e] for s, e in zip(found.starts, found.ends, strict=True))


def test_device_cuda_copies_pinned_non_blocking(monkeypatch):
    calls = []

    def fake_pin(self):
        calls.append("pin")
        return self

    real_to = torch.Tensor.to

    def fake_to(self, *args, **kwargs):
        calls.append(("to", str(args[0]), kwargs.get("non_blocking")))
        return real_to(self, "cpu")

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    batch = build_batch([np.array([5, 6])], np.array([0]), 1, 2, 0)
    assert devices.to_device(batch, torch.device("cuda"))[2] is None  # no token types: none copied
    assert calls == ["pin", ("to", "cuda", True), "pin", ("to", "cuda", True)]
    calls.clear()
    typed = build_batch([np.array([5, 6])], np.array([0]), 1, 2, 0, [np.array([1, 2])])
    assert devices.to_device(typed, torch.device("cuda"))[2].tolist() == [[0, 1, 2, 0]]
    assert calls == ["pin", ("to", "cuda", True)] * 3


def test_device_oom_splits_batch_and_lowers_budget():
    batch = build_batch([np.array([5] * k) for k in (1, 2, 3, 4)], np.arange(4), 1, 2, 0)
    seen = []

    def fn(b):
        seen.append(len(b.window_index))
        if len(b.window_index) > 2:
            raise torch.cuda.OutOfMemoryError("fake OOM")
        return b.window_index.tolist()

    guard = devices.OomGuard(token_budget=4096)
    results = list(guard.run(fn, batch))
    assert [r for _, r in results] == [[0, 1], [2, 3]]
    assert seen == [4, 2, 2] and guard.splits == 1 and guard.token_budget == 2048


def test_device_oom_on_single_window_is_an_error():
    batch = build_batch([np.array([5])], np.arange(1), 1, 2, 0)

    def fn(b):
        raise torch.cuda.OutOfMemoryError("fake OOM")

    with pytest.raises(RuntimeError, match="E006"):
        list(devices.OomGuard(64).run(fn, batch))


def test_device_model_retries_after_oom(tiny_model, monkeypatch):
    real = tiny_model.model.forward
    state = {"raised": False}

    def flaky(*args, **kwargs):
        if not state["raised"] and kwargs["input_ids"].shape[0] > 1:
            state["raised"] = True
            raise torch.cuda.OutOfMemoryError("fake OOM")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_model.model, "forward", flaky)
    monkeypatch.setattr(tiny_model, "fused", None)  # out-of-memory is a CUDA path: the transformers forward runs
    texts = ["chest pain and fever. " * 3] * 6
    before = tiny_model.oom.splits
    out = tiny_model.predict(texts)
    assert state["raised"] and tiny_model.oom.splits == before + 1 and len(out) == 6
    tiny_model.oom.token_budget = 256
