"""pipeline.device: the one place a device name becomes a torch device (NER and risk load their models through it)."""

import pytest
import torch

from pipeline.device import DeviceError, resolve_device


def test_device_auto_cpu_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match=r"D002.*EHR_DEVICE"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match=r"D001.*EHR_DEVICE"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda").type == "cuda"
