"""The runtime around the sparse kernels: the attention kernel, the GELU epilogue and the model-level fusions.

References are plain PyTorch: softmax(q k^T * scale + mask) v computed in float64, torch's exact GELU, and the same
transformers model run with its own SDPA attention and unfused modules.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsa import _C, prune, sparsify
from sparsa.formats import pack
from sparsa.kernels import KERNELS, KernelError, prepare
from sparsa.nn import SparseLinear, fuse_activations, use_sparsa_attention

from conftest import tiny_bert, tiny_llama
from helpers import sparse_weight


def reference_attention(q, k, v, mask, scale, causal):
    """float64 softmax(q k^T * scale + mask) v; grouped heads repeated; causal aligned to the last key."""
    group = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(group, 1)
    v = v.double().repeat_interleave(group, 1)
    s = q.double() @ k.transpose(-1, -2) * scale
    sq, sk = q.shape[2], k.shape[2]
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    if causal:
        i = torch.arange(sq)[:, None]
        j = torch.arange(sk)[None, :]
        s = s.masked_fill(j > i + (sk - sq), float("-inf"))
    return torch.softmax(s, -1) @ v


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3), hk=st.integers(1, 3), group=st.sampled_from([1, 2, 3]), sq=st.integers(1, 40),
    extra_keys=st.integers(0, 20), d=st.sampled_from([1, 3, 8, 16, 17, 32, 40, 64, 80]),
    mask_kind=st.sampled_from(["none", "bool", "float", "causal"]), seed=st.integers(0, 2**31 - 1),
)
def test_attention_kernel_matches_reference(b, hk, group, sq, extra_keys, d, mask_kind, seed):
    g = torch.Generator().manual_seed(seed)
    h, sk = hk * group, sq + extra_keys
    # q and the output as (B, S, H, D) storage seen through (B, H, S, D) views, as the Linears leave them
    q = torch.randn(b, sq, h, d, generator=g).transpose(1, 2)
    k = torch.randn(b, sk, hk, d, generator=g).transpose(1, 2)
    v = torch.randn(b, hk, sk, d, generator=g)
    mask, causal = None, mask_kind == "causal"
    if mask_kind == "bool":
        mask = torch.rand(b, 1, sq, sk, generator=g) > 0.3
        mask[..., 0] = True  # every query sees at least one key
    elif mask_kind == "float":
        mask = torch.randn(b, 1, 1, sk, generator=g)
    scale = d ** -0.5
    out = torch.empty(b, sq, h, d)
    _C.attention(q, k, v, out.transpose(1, 2), None if mask is None else mask.expand(b, h, sq, sk), scale, causal, 2)
    ref = reference_attention(q, k, v, mask, scale, causal)
    torch.testing.assert_close(out.transpose(1, 2).double(), ref, rtol=1e-5, atol=2e-6)


def test_attention_with_no_visible_key_gives_zeros_and_bad_input_is_named():
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    mask = torch.ones(1, 2, 3, 5, dtype=torch.bool)
    mask[0, 1, 2] = False
    out = torch.empty(1, 2, 3, 8)
    _C.attention(q, k, v, out, mask, 0.5, False, 1)
    assert torch.equal(out[0, 1, 2], torch.zeros(8))
    torch.testing.assert_close(out[0, 0], reference_attention(q, k, v, mask, 0.5, False)[0, 0].float())
    with pytest.raises(ValueError, match="v must have the shape of k"):
        _C.attention(q, k, v[:, :, :4], out, None, 1.0, False, 1)
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        _C.attention(torch.randn(1, 3, 3, 8), k, v, torch.empty(1, 3, 3, 8), None, 1.0, False, 1)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, heads, q_len, k_len\)"):
        _C.attention(q, k, v, out, mask[:, :1], 1.0, False, 1)
    with pytest.raises(ValueError, match="float32"):
        _C.attention(q.double(), k, v, out, None, 1.0, False, 1)
    with pytest.raises(ValueError, match="contiguous along its last dimension"):
        _C.attention(q.transpose(2, 3), k, v, out, None, 1.0, False, 1)


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.format != "bsr" or k.block in ((4, 1), None)],
                         ids=lambda k: k.name)
def test_gelu_epilogue_matches_torch_gelu(kernel):
    """act(x W^T + b) with the GELU fused into the output stage, decode and batched, with ragged tails."""
    if not kernel.available:
        pytest.skip(f"{kernel.name}: this CPU lacks {kernel.isa}")
    spec = {"bsr": f"{kernel.block[0]}x{kernel.block[1]}" if kernel.block else "2x2", "nm": "2:4"}.get(
        kernel.format, "unstructured")
    g = torch.Generator().manual_seed(1)
    out, inp = 44, 36
    w = sparse_weight(out, inp, spec, None if spec == "2:4" else 0.6, g)
    p = pack(w, spec, kernel.weight_dtype, format=kernel.format)
    b = torch.randn(out, generator=g)
    prepared = prepare(p, b)
    for n in (1, 3, 8, 9, 37, 130):
        x = torch.randn(n, inp, generator=g) * 2
        lin = p.reference_matmul(x, b).double()
        y = prepared(x, kernel, activation="gelu").double()
        ref = nn.functional.gelu(lin)
        # the fp32 product's error (through GELU's slope <= 1.13) plus the erf approximation's 1.5e-7 * |x| / 2
        bound = 1.13 * 1e-5 * (x.double().abs() @ p.to_dense().double().abs().T + b.abs().double()) + 1e-7 * lin.abs()
        assert bool(((y - ref).abs() <= bound + 1e-7).all()), f"n={n}: worst {float((y - ref).abs().max()):.2e}"
    with pytest.raises(KernelError, match="unknown activation 'relu'"):
        prepared(torch.randn(2, inp), kernel, activation="relu")


def _sparse_bert():
    model = tiny_bert()
    pruned, _ = prune(model, sparsity=0.5, structure="4x1", inplace=False)
    return pruned


def test_sparsified_bert_runs_fused_and_matches_the_unfused_model():
    pruned = _sparse_bert()
    fused, _ = sparsify(pruned)
    plain, _ = sparsify(pruned, runtime=False)
    assert fused.config._attn_implementation == "sparsa" and plain.config._attn_implementation != "sparsa"
    inter = fused.encoder.layer[0].intermediate
    assert isinstance(inter.intermediate_act_fn, nn.Identity) and inter.dense.activation == "gelu"
    ids = torch.randint(0, 120, (3, 21), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 21, dtype=torch.long)
    mask[1, 15:] = 0  # padding: the kernel takes the bool mask transformers builds
    mask[2, 4:] = 0
    with torch.inference_mode():
        for n in (1, 3):
            ref = pruned(input_ids=ids[:n], attention_mask=mask[:n]).last_hidden_state
            torch.testing.assert_close(fused(input_ids=ids[:n], attention_mask=mask[:n]).last_hidden_state, ref,
                                       rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(plain(input_ids=ids[:n], attention_mask=mask[:n]).last_hidden_state, ref,
                                       rtol=1e-4, atol=1e-5)
        # copies keep the fusion (the activation module was replaced, not the class's forward)
        twin = copy.deepcopy(fused)
        torch.testing.assert_close(twin(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   pruned(input_ids=ids, attention_mask=mask).last_hidden_state, rtol=1e-4, atol=1e-5)
    # training goes through transformers' SDPA and torch's GELU: gradients flow, results unchanged
    fused.train()
    out = fused(input_ids=ids, attention_mask=mask).last_hidden_state
    assert out.requires_grad is False or out.grad_fn is not None


def test_saved_config_does_not_name_sparsa_attention(tmp_path):
    model = tiny_bert()
    assert use_sparsa_attention(model)
    model.config.save_pretrained(tmp_path)
    assert "sparsa" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_decoder_with_grouped_heads_and_cache_matches_sdpa():
    ref = tiny_llama()
    model = copy.deepcopy(ref)
    assert use_sparsa_attention(model)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, rtol=1e-4, atol=1e-5)
        a = ref.generate(ids, max_new_tokens=5, do_sample=False)
        b_ = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(a, b_)


def test_fusion_only_where_the_gelu_consumes_the_linear_alone():
    class Residual(nn.Module):  # act(lin(x)) + x: the GELU's input is the linear's, but the forward does more
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)
            self.act = nn.GELU()

        def forward(self, x):
            return self.act(self.lin(x)) + x

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)
            self.act = nn.GELU()

        def forward(self, x):
            return self.act(self.lin(x))

    class Tanh(Plain):
        def __init__(self):
            super().__init__()
            self.act = nn.GELU(approximate="tanh")  # not the erf form the kernel computes

    model = nn.Sequential(Residual(), Plain(), Tanh())
    for m in model:
        with torch.no_grad():
            m.lin.weight.mul_(torch.rand(8, 8) > 0.5)
    x = torch.randn(5, 8)
    with torch.inference_mode():
        ref = model(x)
    sparse, _ = sparsify(model, structure="unstructured", runtime=False)
    assert fuse_activations(sparse) == ["1"]
    assert isinstance(sparse[1].act, nn.Identity) and isinstance(sparse[0].act, nn.GELU)
    assert isinstance(sparse[1].lin, SparseLinear) and sparse[2].lin.activation is None
    with torch.inference_mode():
        torch.testing.assert_close(sparse(x), ref, rtol=1e-5, atol=1e-6)


def test_packed_checkpoint_loads_with_the_runtime_fusions(tmp_path):
    import sparsa

    pruned = _sparse_bert()
    out = sparsa.save(sparsify(pruned)[0], tmp_path / "ck")
    loaded = sparsa.load(out)
    assert loaded.config._attn_implementation == "sparsa"
    assert loaded.encoder.layer[1].intermediate.dense.activation == "gelu"
    ids = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, pruned(input_ids=ids).last_hidden_state,
                                   rtol=1e-4, atol=1e-5)
    # the written config names no sparsa attention: plain transformers reads it
    assert "sparsa" not in (out / "config.json").read_text()
