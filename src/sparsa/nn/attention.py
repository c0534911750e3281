"""sparsa's attention kernel for Hugging Face models, through the transformers ``AttentionInterface``.

Once the Linears of an encoder run sparse, attention is the largest dense cost left, and torch's
scaled_dot_product_attention first copies the heads of q, k and v into contiguous tensors and its output back
(BENCHMARKS.md, end to end: this kernel plus the GELU epilogue take all-MiniLM-L6-v2 at 16 x 128, 80% 4x1, from
188 to 133 ms). ``sparsa._C.attention`` reads q, k and v where the projections left
them and writes the output in the layout the output projection reads (csrc/kernels/attention.h).

:func:`use_sparsa_attention` switches a model to it. Every call the kernel does not cover (training, dropout,
gradients, non-fp32, another device, soft-capping, sliding windows, attention sinks, position biases, packed
sequences, returned attention weights, causal masks whose query block does not end at the last key) goes to
transformers' own SDPA path unchanged, so switching never changes what the model computes, only how fast.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _C

__all__ = ["ATTENTION_NAME", "sparsa_attention_forward", "use_sparsa_attention"]

ATTENTION_NAME = "sparsa"

# kwargs that change the attention math: any of them set sends the call to SDPA
_UNSUPPORTED_KWARGS = ("softcap", "sliding_window", "s_aux", "sinks", "position_bias", "cu_seq_lens_q",
                       "cu_seq_lens_k", "head_mask")


def _sdpa(*args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def sparsa_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                             is_causal: bool | None = None, **kwargs):
    """Same signature and result as transformers' ``sdpa_attention_forward``: (B, Sq, H, D) output, no weights."""
    b, h, sq, d = query.shape
    sk = key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(sq > 1 and attention_mask is None and causal)
    mask = attention_mask
    fits = (
        not (dropout and module.training)
        and not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad))
        and query.dtype == key.dtype == value.dtype == torch.float32
        and query.device.type == key.device.type == value.device.type == "cpu"
        and not kwargs.get("output_attentions", False)
        and all(kwargs.get(k) is None for k in _UNSUPPORTED_KWARGS)
        and key.shape[0] == b and key.shape[3] == d and value.shape == key.shape and h % key.shape[1] == 0
        and not (causal and sq != sk)  # SDPA aligns such a causal mask top-left; keep its semantics there
        and (mask is None or (mask.dim() == 4 and mask.dtype in (torch.bool, torch.float32)
                              and mask.device.type == "cpu"))
        and sk > 0
    )
    if fits and mask is not None:
        try:
            mask = mask.expand(b, h, sq, sk)
        except RuntimeError:
            fits = False
        else:
            if sk > 1 and mask.stride(-1) != 1:
                mask = mask.contiguous()
    if not fits:
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     is_causal=is_causal, **kwargs)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    out = torch.empty(b, sq, h, d, dtype=torch.float32)
    scale = float(scaling) if scaling is not None else d ** -0.5
    _C.attention(q.detach(), k.detach(), v.detach(), out.transpose(1, 2), None if mask is None else mask.detach(),
                 scale, causal, torch.get_num_threads())
    return out, None


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, sparsa_attention_forward)
    # masks as SDPA takes them (bool, or None when every key is visible), which the kernel reads directly
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    _registered = True


def use_sparsa_attention(model: nn.Module) -> bool:
    """Switch a transformers model (and its sub-models) to sparsa's attention kernel. Returns False, changing
    nothing, for a model that is not a transformers model or whose attention does not go through the
    ``AttentionInterface`` (older architectures)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    if not isinstance(model, PreTrainedModel):
        return False
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        return False
    _register()
    model.set_attn_implementation(ATTENTION_NAME)
    return model.config._attn_implementation == ATTENTION_NAME
