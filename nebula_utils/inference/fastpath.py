"""CPU fast paths for decoding with a transformers model, switched on around a generation call.

Two changes, each kept because it measured faster on this project's 2-core AMD EPYC (torch 2.13,
oneDNN 3.12, MKL 2024.2; best of 15 runs; other processes shared the cores):

- Pre-packed linear layers (`PackedLinear`): the weight is reordered once into oneDNN's blocked
  layout (the op inductor's weight "freezing" uses) instead of on every call. Decode matmuls have
  few rows and large weights, so the per-call reorder dominates: [16 x 576] @ [576 x 1536] ran at
  57 -> 161 GFLOP/s in fp32 (MKL's sgemm is slow on this AMD part) and 185 -> 268 in bf16; the
  49152-wide output layer at 16 rows: fp32 13 -> 62, bf16 156 -> 226 GFLOP/s. Results differ from
  `F.linear` by summation order only (fp32: max abs diff ~1e-4 on outputs of magnitude ~25; bf16:
  bit-identical here). Used only where `packing_ok` measures it >= 1.1x on one of the model's own
  layers and checks it numerically, so a torch without the op, or a CPU where it is no faster,
  keeps plain `nn.Linear`.
- Decode attention (`decode_attention`): for one query token the grouped query heads are folded
  into a matmul against each KV head, masked, softmaxed in fp32. transformers' sdpa path runs
  `scaled_dot_product_attention` with `enable_gqa` (no mask) or a packed boolean mask, which on
  this CPU took, per layer, 16 rows x 256 cached tokens bf16: 5.5 ms (gqa) / 0.87 ms (mask) vs
  0.29 ms here; 64 rows: 28 / 3.2 vs 1.6 ms. Prefill (more than one query token) still goes to sdpa.

`fast_inference(model)` swaps both in and restores the model afterwards; packed weights are cached
per layer and re-packed when the weight changes (an RL policy updated between generations).

Tried and not kept:
- torch.compile (inductor, weight freezing, dynamic shapes) of the bf16 decode step (16 rows, 256
  cached tokens): 1,588 s to compile, 751 s more to recompile for a new cache, then 279-1,443 ms
  per step against 86-645 ms for these eager fast paths in the same process: no gain, and the
  compile alone outlasts a demo. (Compiling on top of PackedLinear fails to lower.)
- thread settings: left to OMP_NUM_THREADS (the Makefile sets 2 = the cores). On this shared
  machine 1 and 2 threads measured the same (bf16 512^2 matmul 443 vs 431 GFLOP/s) because other
  processes held the cores, so there was nothing to choose on measurement.
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

ATTENTION_NAME = "nebula_decode"
PACK_MIN_SPEEDUP = 1.1

_packed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # nn.Linear -> (key, PackedLinear)


def decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention for one query token per row; anything else goes to transformers' sdpa function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or module.training or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # grouped heads share their KV head
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:  # [rows, 1, 1, kv] boolean (True = attend) or additive
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask.float()
    out = torch.matmul(torch.softmax(scores, dim=-1).to(value.dtype), value)  # [rows, kv_heads, group, dim]
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


@functools.cache
def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, decode_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


class PackedLinear(nn.Module):
    """A frozen nn.Linear whose weight is pre-reordered for oneDNN (inference only)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 16)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [None], "")


def _pack_key(linear: nn.Linear) -> tuple:
    w = linear.weight
    return (w.data_ptr(), w._version, w.dtype, None if linear.bias is None else linear.bias._version)


def packed(linear: nn.Linear) -> PackedLinear:
    key = _pack_key(linear)
    hit = _packed.get(linear)
    if hit is None or hit[0] != key:
        hit = (key, PackedLinear(linear))
        _packed[linear] = hit
    return hit[1]


def _best(fn, reps: int = 15) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def packing_speedup(linear: nn.Linear, rows: int = 16) -> float:
    """Measured F.linear / packed time on this layer at `rows` rows; 0.0 when unavailable or wrong."""
    if linear.weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return 0.0
    try:
        fast = PackedLinear(linear)
        x = torch.randn(rows, linear.in_features, generator=torch.Generator().manual_seed(0)).to(linear.weight.dtype)
        with torch.inference_mode():
            ref, got = nn.functional.linear(x, linear.weight, linear.bias), fast(x)
            tol = 1e-3 if linear.weight.dtype == torch.float32 else 5e-2
            if not torch.allclose(got.float(), ref.float(), rtol=tol, atol=tol * float(ref.abs().max())):
                return 0.0
            return _best(lambda: nn.functional.linear(x, linear.weight, linear.bias)) / _best(lambda: fast(x))
    except (RuntimeError, AttributeError, NotImplementedError):  # op missing in this torch build / dtype
        return 0.0


def _linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
    ]


def packing_ok(model: nn.Module) -> bool:
    """Pack only where it measured >= PACK_MIN_SPEEDUP x on the model's widest hidden layer."""
    layers = [lin for _, _, lin in _linears(model) if lin.weight.device.type == "cpu"]
    if not layers:
        return False
    probe = max(layers[:-1] or layers, key=lambda lin: lin.weight.numel())  # an MLP projection, not lm_head
    return _cached_speedup(probe.in_features, probe.out_features, probe.weight.dtype) >= PACK_MIN_SPEEDUP


@functools.cache
def _cached_speedup(fan_in: int, fan_out: int, dtype: torch.dtype) -> float:
    lin = nn.Linear(fan_in, fan_out, bias=False).to(dtype)
    return packing_speedup(lin)


@contextlib.contextmanager
def fast_inference(model: nn.Module, pack: bool | None = None, attention: bool = True) -> Iterator[dict[str, Any]]:
    """Swap in packed linears (pack=None: where measured faster) and decode attention; restore after."""
    pack = packing_ok(model) if pack is None else pack
    swapped = [(parent, name, lin) for parent, name, lin in _linears(model)] if pack else []
    original_attn = model.config._attn_implementation
    use_attention = attention and original_attn in ("sdpa", "eager")
    try:
        with torch.inference_mode():
            for parent, name, lin in swapped:
                setattr(parent, name, packed(lin))
        if use_attention:
            _register_attention()
            model.set_attn_implementation(ATTENTION_NAME)
        yield {"packed_linears": len(swapped), "attention": ATTENTION_NAME if use_attention else original_attn}
    finally:
        for parent, name, lin in swapped:
            setattr(parent, name, lin)
        if use_attention:
            model.set_attn_implementation(original_attn)
