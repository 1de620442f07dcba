"""A fused fp32 CPU forward for BERT-family token classifiers: the same maths in fewer, larger kernels.

The transformers forward spends a large share of its CPU time outside matrix multiplication: copying each bias
into the output before every GEMM, a separate GELU pass over the 4×-wide intermediate, separate residual adds
(`bench ner` profiles it). Here each layer runs as

    QKV     = linear(h, [Wq; Wk; Wv], [bq; bk; bv])        one GEMM instead of three
    ctx     = scaled_dot_product_attention(Q, K, V, mask)
    h       = LayerNorm(linear(ctx, Wo, bo) + h)           bias and residual add fused into the GEMM
    inter   = act(linear(h, Wi, bi))                       bias and GELU fused into the GEMM
    h       = LayerNorm(linear(inter, Wo2, bo2) + h)       bias and residual add fused into the GEMM

with oneDNN's linear kernels (`torch.ops.mkldnn._linear_pointwise`, the kernels torch.compile's CPU backend
emits for the same patterns) on weights reordered once into oneDNN's blocked layout. The model's own modules,
weights and outputs are untouched; the fused forward only reads them.

It is used only where it is known to be the same model: CPU, fp32 (no autocast), a BERT-style layer structure
(BERT, RoBERTa, ELECTRA and their clinical/biomedical fine-tunes), an activation oneDNN fuses exactly, and a probe
batch on which its logits match the transformers forward. Anything else, or `EHR_NER_FUSED_CPU=false`, runs the
plain transformers forward. See `fuse_token_classifier`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# transformers' activation names → (oneDNN post-op, its algorithm). "gelu" is the exact erf GELU; gelu_new and
# gelu_pytorch_tanh are the tanh approximation. Others (gelu_fast, silu, ...) keep the transformers forward.
ACTIVATIONS: dict[str, tuple[str, list, str]] = {
    "gelu": ("gelu", [], "none"),
    "gelu_new": ("gelu", [], "tanh"),
    "gelu_pytorch_tanh": ("gelu", [], "tanh"),
    "relu": ("relu", [], ""),
}
# Every oneDNN op this module calls (under torch.ops.mkldnn); a torch build without one of them keeps the
# transformers forward.
KERNELS = ("_reorder_linear_weight", "_linear_pointwise", "_linear_pointwise.binary")
# Logits of the fused and the transformers forward on the probe may differ by float rounding only.
PROBE_ATOL = 1e-3
PROBE_RTOL = 1e-3


class NotFusable(Exception):
    """The model is not one this fused forward reproduces exactly; the reason says why."""


@dataclass(frozen=True)
class _Layer:
    qkv: tuple[torch.Tensor, torch.Tensor]
    attn_out: tuple[torch.Tensor, torch.Tensor]
    ln1: nn.LayerNorm
    inter: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    ln2: nn.LayerNorm
    heads: int
    head_size: int


def missing_kernels() -> list[str]:
    """The oneDNN ops of `KERNELS` this torch build lacks (empty when the fused forward can run)."""
    if not torch.backends.mkldnn.is_available():
        return ["oneDNN (torch.backends.mkldnn)"]
    missing = []
    for name in KERNELS:
        op: object = torch.ops.mkldnn
        for part in name.split("."):
            op = getattr(op, part, None)  # torch raises AttributeError for an op or overload it does not have
            if op is None:
                missing.append(f"mkldnn.{name}")
                break
    return missing


def kernels_available() -> bool:
    """oneDNN is built into this torch and exposes every fused linear kernel this module calls."""
    return not missing_kernels()


def _packed(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    weight = weight.detach().contiguous()
    bias = torch.zeros(weight.shape[0]) if bias is None else bias.detach().contiguous()
    return torch.ops.mkldnn._reorder_linear_weight(weight), bias


def _linear(module: object) -> nn.Linear:
    if type(module) is not nn.Linear:
        raise NotFusable(f"expected a plain nn.Linear, found {type(module).__name__}")
    return module


def _layer_norm(module: object) -> nn.LayerNorm:
    if type(module) is not nn.LayerNorm or not module.elementwise_affine:
        raise NotFusable(f"expected an affine nn.LayerNorm, found {type(module).__name__}")
    return module


def _fuse_layer(layer: nn.Module) -> _Layer:
    if getattr(layer, "is_decoder", False) or getattr(layer, "add_cross_attention", False):
        raise NotFusable("decoder or cross-attention layer")
    try:
        self_attn, self_out = layer.attention.self, layer.attention.output
        q, k, v = _linear(self_attn.query), _linear(self_attn.key), _linear(self_attn.value)
        heads, head_size = int(self_attn.num_attention_heads), int(self_attn.attention_head_size)
        parts = (_linear(self_out.dense), _layer_norm(self_out.LayerNorm), _linear(layer.intermediate.dense),
                 _linear(layer.output.dense), _layer_norm(layer.output.LayerNorm))
    except AttributeError as exc:
        raise NotFusable(f"not a BERT-style layer ({exc})") from None
    if getattr(self_attn, "is_causal", False):
        raise NotFusable("causal self-attention")
    if heads * head_size != q.out_features:
        raise NotFusable("attention heads × head size differs from the projection width (pruned heads?)")
    qkv_bias = [m.bias if m.bias is not None else torch.zeros(m.out_features) for m in (q, k, v)]
    qkv = _packed(torch.cat([q.weight, k.weight, v.weight]), torch.cat(qkv_bias))
    attn_dense, ln1, inter, out_dense, ln2 = parts
    return _Layer(qkv, _packed(attn_dense.weight, attn_dense.bias), ln1, _packed(inter.weight, inter.bias),
                  _packed(out_dense.weight, out_dense.bias), ln2, heads, head_size)


class FusedTokenClassifier:
    """Logits of a BERT-style token classifier from fused oneDNN kernels; call under torch.inference_mode()."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        base = getattr(model, "base_model", None)
        if base is None or base is model:
            raise NotFusable("no base model under the token-classification head")
        if not hasattr(base, "embeddings") or not hasattr(getattr(base, "encoder", None), "layer"):
            raise NotFusable(f"{type(base).__name__} has no embeddings/encoder.layer")
        if type(getattr(model, "classifier", None)) is not nn.Linear:
            raise NotFusable("the token-classification head is not a single linear layer")
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            raise NotFusable("decoder configuration")
        if model.training:
            raise NotFusable("the model is in training mode (dropout on)")
        act = getattr(config, "hidden_act", None)
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise NotFusable(f"activation {act!r} has no exact oneDNN fusion")
        if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
            raise NotFusable("weights are not fp32 on the CPU")
        self.embeddings = base.embeddings
        self.project = getattr(base, "embeddings_project", None)  # ELECTRA: embedding size → hidden size
        self.act = ACTIVATIONS[act]
        self.layers = [_fuse_layer(layer) for layer in base.encoder.layer]
        self.classifier = _packed(model.classifier.weight, model.classifier.bias)
        self.hidden = int(config.hidden_size)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        linear = torch.ops.mkldnn._linear_pointwise
        rows, width = input_ids.shape
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        h = self.embeddings(input_ids=input_ids, **extra)
        if self.project is not None:
            h = self.project(h)
        h = h.reshape(rows * width, self.hidden)
        # Padding keys are masked out; an all-real batch (the usual case after length sorting) needs no mask.
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            qkv = linear(h, *layer.qkv, "none", [], "")
            q, k, v = qkv.view(rows, width, 3, layer.heads, layer.head_size).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            ctx = ctx.transpose(1, 2).reshape(rows * width, self.hidden)
            h = F.layer_norm(linear.binary(ctx, h, *layer.attn_out, "add"), (self.hidden,), layer.ln1.weight,
                             layer.ln1.bias, layer.ln1.eps)
            inter = linear(h, *layer.inter, *self.act)
            h = F.layer_norm(linear.binary(inter, h, *layer.out, "add"), (self.hidden,), layer.ln2.weight,
                             layer.ln2.bias, layer.ln2.eps)
        logits = linear(h, *self.classifier, "none", [], "")
        return logits.view(rows, width, -1)


def _probe(model: nn.Module, fused: FusedTokenClassifier) -> None:
    """Compare the fused and the transformers logits on a small padded batch; raise NotFusable on a mismatch."""
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    width = min(24, int(model.config.max_position_embeddings))
    ids = torch.randint(min(vocab - 1, 1000), vocab, (3, width), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, width // 2 :] = 0
    mask[2, width - 3 :] = 0
    pad = int(getattr(model.config, "pad_token_id", None) or 0)
    ids = ids.masked_fill(mask == 0, pad)
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits
        got = fused(ids, mask)
    real = mask.bool()
    if got.shape != want.shape or not torch.allclose(got[real], want[real], atol=PROBE_ATOL, rtol=PROBE_RTOL):
        gap = (got[real] - want[real]).abs().max().item() if got.shape == want.shape else float("nan")
        raise NotFusable(f"probe logits differ from the transformers forward (max abs difference {gap:.2e})")


def fuse_token_classifier(model: nn.Module, device: torch.device,
                          autocast_dtype: torch.dtype | None) -> FusedTokenClassifier | None:
    """The fused forward for `model`, or None (with the reason logged) where the transformers forward must run."""
    if device.type != "cpu" or autocast_dtype is not None:
        return None
    missing = missing_kernels()
    if missing:
        log.info("fused NER forward off: this torch build lacks %s", ", ".join(missing))
        return None
    try:
        fused = FusedTokenClassifier(model)
        _probe(model, fused)
    except NotFusable as exc:
        log.info("fused NER forward off for %s: %s", type(model).__name__, exc)
        return None
    except RuntimeError as exc:  # a oneDNN kernel refused the shapes or layout
        log.warning("fused NER forward off for %s: %s", type(model).__name__, exc)
        return None
    return fused
