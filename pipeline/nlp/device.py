"""Token budgets, mixed precision and out-of-memory handling for NER inference (the device itself comes from
:func:`pipeline.device.resolve_device`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from pipeline.nlp.batching import TokenBatch
from pipeline.nlp.errors import E006, E009

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
CPU_TOKEN_BUDGET = 8192  # when the model's width is unknown, and on CUDA when free memory cannot be read
# On CPU a batch's widest activation (tokens × intermediate width × 4 bytes) is kept near this size so it stays in
# the caches from one kernel to the next: for MiniLM-L6 (1,536 wide) 1,024 tokens, for BERT-base (3,072) 512.
# `ehr-pipeline bench ner` measured 1,024-token batches ~10-15% faster than 8,192-token ones on a 2-core CPU.
CPU_ACTIVATION_BYTES = 6 * 1024 * 1024
CPU_MIN_TOKEN_BUDGET = 256
# Activation memory per token on GPU for a BERT-size model in half precision, with a wide safety margin.
CUDA_BYTES_PER_TOKEN = 256 * 1024
CUDA_MAX_TOKEN_BUDGET = 131072


def default_token_budget(device: torch.device, intermediate_size: int | None = None) -> int:
    """Tokens per batch: sized to the caches on CPU (by the model's widest activation), to free memory on CUDA.

    >>> default_token_budget(torch.device("cpu"), intermediate_size=1536)
    1024
    >>> default_token_budget(torch.device("cpu"), intermediate_size=3072)
    512
    """
    if device.type != "cuda":
        if not intermediate_size:
            return CPU_TOKEN_BUDGET
        tokens = CPU_ACTIVATION_BYTES // (4 * int(intermediate_size))
        return max(CPU_MIN_TOKEN_BUDGET, min(CPU_TOKEN_BUDGET, tokens))
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except (RuntimeError, AssertionError):
        return CPU_TOKEN_BUDGET
    budget = int(free * 0.5) // CUDA_BYTES_PER_TOKEN
    return max(512, min(CUDA_MAX_TOKEN_BUDGET, budget))


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for inference, or None for plain fp32.

    auto: bf16 where the GPU supports it, else fp16; none on CPU (fp32 keeps the model's exact outputs there).
    bf16 on CPU is an opt-in speed switch for CPUs with native bf16 matmul (AVX-512 BF16 / AMX); its F1 change is
    measured by `ehr-pipeline bench ner`.
    """
    if precision not in PRECISIONS or (precision in ("fp16",) and device.type != "cuda") or (
            precision == "int8" and device.type != "cpu"):
        raise ValueError(E009.format(precision=precision))
    if precision in ("fp32", "int8"):  # int8 is weight quantization (quantize_linear_int8), not autocast
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def quantize_linear_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of the model's nn.Linear layers (CPU): int8 weights with one scale per output
    channel, activations quantized per batch on the fly, fp32 everywhere else. About 4× smaller linear weights;
    its F1 change is measured by `ehr-pipeline bench ner`."""
    import warnings

    with warnings.catch_warnings():
        # torch.ao.quantization's eager API is deprecated in favour of torchao, which is not a dependency here
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # one scale per output channel: per-tensor scales cost 3x the F1 (BENCHMARKS.md, int8)
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: TokenBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Host arrays → device tensors (input ids, attention mask, token type ids or None when the model has none);
    on CUDA via pinned memory with non-blocking copies."""
    arrays = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    tensors = [None if a is None else torch.from_numpy(a) for a in arrays]
    if device.type == "cuda":
        tensors = [None if t is None else t.pin_memory().to(device, non_blocking=True) for t in tensors]
    return tensors[0], tensors[1], tensors[2]


@dataclass
class OomGuard:
    """Run batches; on CUDA out-of-memory, halve the batch and retry, and lower the budget for later batches."""

    token_budget: int
    splits: int = 0

    def run(self, fn: Callable[[TokenBatch], object], batch: TokenBatch) -> Iterator[tuple[TokenBatch, object]]:
        try:
            yield batch, fn(batch)
        except torch.cuda.OutOfMemoryError:
            if len(batch.window_index) <= 1:
                raise RuntimeError(E006.format(tokens=int(batch.attention_mask.shape[1]))) from None
            self.splits += 1
            self.token_budget = max(64, self.token_budget // 2)
            log.warning("CUDA out of memory on a batch of %d windows; splitting", len(batch.window_index))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            for half in batch.split():
                yield from self.run(fn, half)
