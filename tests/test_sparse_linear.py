"""SparseLinear and sparsify: same outputs as the dense-with-zeros modules they replace."""

import copy

import pytest
import torch
from torch import nn

from sparsa import SparseLinear, detect_structure, prune, sparsify
from sparsa.structure import NM, Block, Unstructured

from conftest import tiny_bert, tiny_gpt2, tiny_llama
from helpers import sparse_weight


@pytest.mark.parametrize("structure", ["unstructured", "4x1", "8x1", "2:4", "1x4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_linear_matches_linear(structure, dtype):
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(64, 48)
    with torch.no_grad():
        lin.weight.copy_(sparse_weight(48, 64, structure, None if ":" in structure else 0.7, g))
    sl = SparseLinear.from_linear(lin, structure, dtype=dtype)
    x = torch.randn(2, 9, 64, generator=g)  # (B, T, in): leading dims are kept
    w = lin.weight.to(dtype).float()  # the stored weight
    ref = nn.functional.linear(x, w, lin.bias)
    with torch.inference_mode():
        y = sl(x)
    assert y.shape == (2, 9, 48)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    assert "kernel=" in repr(sl) and sl.kernel is not None


def test_grad_path_and_state():
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.mul_(lin.weight.abs() > 0.1)
    sl = SparseLinear.from_linear(lin)
    x = torch.randn(3, 16, requires_grad=True)
    y = sl(x)  # autograd on: plain-torch path, differentiable in x
    y.sum().backward()
    torch.testing.assert_close(x.grad, lin.weight.sum(0).expand(3, 16).detach())
    sd = sl.state_dict()
    assert set(sd) == {"values", "mask", "row_ptr", "bias"}
    sl2 = copy.deepcopy(sl)
    torch.testing.assert_close(sl2(x.detach()), sl(x.detach()))


def test_detect_structure():
    g = torch.Generator().manual_seed(0)
    # the largest block that holds wins: a 16x1-pruned weight is also 8x1- and 4x1-sparse
    assert detect_structure(sparse_weight(32, 32, "16x1", 0.7, g)) == Block(16, 1)
    assert detect_structure(sparse_weight(32, 32, "8x1", 0.7, g)) == Block(8, 1)
    assert detect_structure(sparse_weight(32, 32, "1x4", 0.7, g)) == Block(1, 4)
    assert detect_structure(sparse_weight(32, 32, "2:4", None, g)) == NM(2, 4)
    assert detect_structure(sparse_weight(32, 32, "unstructured", 0.5, g)) == Unstructured()
    assert detect_structure(sparse_weight(32, 32, "unstructured", 0.95, g)) == Unstructured()


@pytest.mark.parametrize("factory", [tiny_bert, tiny_gpt2, tiny_llama], ids=["bert", "gpt2-conv1d", "llama"])
@pytest.mark.parametrize("structure", ["unstructured", "4x1", "2:4"])
def test_sparsify_whole_models(factory, structure):
    model = factory()
    pruned, _ = prune(model, sparsity=None if structure == "2:4" else 0.6, structure=structure)
    sparse, report = sparsify(pruned)
    assert report and all(r.structure == structure for r in report)
    assert sum(isinstance(m, SparseLinear) for m in sparse.modules()) == len(report)
    assert not any(isinstance(m, SparseLinear) for m in pruned.modules())  # inplace=False copies
    ids = torch.randint(0, 60, (2, 11))
    with torch.inference_mode():
        a, b = pruned(input_ids=ids)[0], sparse(input_ids=ids)[0]
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert sum(r.sparse_bytes for r in report) < sum(r.dense_bytes for r in report)


def test_sparsify_detects_structure_of_foreign_zeros():
    model = tiny_bert()  # zeros written by "another tool": no sparsa_structure attribute on the modules
    g = torch.Generator().manual_seed(0)
    for _, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.weight.shape[0] % 8 == 0:
            with torch.no_grad():
                m.weight.copy_(sparse_weight(*m.weight.shape, "8x1", 0.9, g))
    _, report = sparsify(model)
    assert report and {r.structure for r in report} == {"8x1"}
