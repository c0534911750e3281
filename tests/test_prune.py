"""Module selection and magnitude pruning of arbitrary modules, checked against plain-PyTorch references."""

import copy

import pytest
import torch
from torch import nn

from sparsa import prune, select_modules
from sparsa.modules import ModuleSelectionError, weight_out_in
from sparsa.prune.methods import UnknownMethodError
from sparsa.structure import StructureError

from conftest import tiny_bert, tiny_gpt2, tiny_llama


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 16)
        self.block = nn.ModuleDict({"fc1": nn.Linear(16, 32), "fc2": nn.Linear(32, 16), "norm": nn.LayerNorm(16)})
        self.head = nn.Linear(16, 10)
        self.lm_head = nn.Linear(16, 10)


def names(sel):
    return [n for n, _ in sel]


def test_select_by_type_regex_and_name():
    m = Toy()
    assert names(select_modules(m, ["Linear"], ignore=[])) == ["block.fc1", "block.fc2", "head", "lm_head"]
    assert names(select_modules(m, [nn.Linear], ignore=["re:.*head"])) == ["block.fc1", "block.fc2"]
    assert names(select_modules(m, ["re:block\\..*"], ignore=[])) == ["block.fc1", "block.fc2"]  # norm: not linear
    assert names(select_modules(m, ["head"], ignore=[])) == ["head"]
    # default ignore leaves lm_head dense
    assert "lm_head" not in names(select_modules(m))


def test_select_errors_name_the_problem():
    m = Toy()
    with pytest.raises(ModuleSelectionError, match=r"'Linaer'.*match no module.*Linear, ModuleDict"):
        select_modules(m, ["Linaer"])
    with pytest.raises(ModuleSelectionError, match="not a valid regular expression"):
        select_modules(m, ["re:(unclosed"])


@pytest.mark.parametrize("structure, sparsity", [("unstructured", 0.6), ("4x1", 0.5), ("2:4", None), ("1x4", 0.75)])
def test_magnitude_matches_plain_torch_reference(structure, sparsity):
    m = Toy()
    targets = ["re:block\\..*"]  # the heads have 10 outputs, which 4x1 blocks do not tile
    before = {n: weight_out_in(mod).clone() for n, mod in select_modules(m, targets)}
    pruned, report = prune(m, "magnitude", sparsity, structure, targets=targets)
    assert pruned is m  # in place by default
    assert [r.name for r in report.modules] == ["block.fc1", "block.fc2"]
    for name, mod in select_modules(m, targets):
        w0, w = before[name], weight_out_in(mod)
        # plain-torch reference: the kept weights are exactly the untouched originals...
        kept = w != 0
        assert torch.equal(w[kept], w0[kept])
        # ...and pruning removed the smallest: every kept |w| (or block/group score) beats every pruned one
        if structure == "unstructured":
            k = round(sparsity * w.numel())
            assert int((~kept).sum()) == k
            assert w0.abs()[kept].min() >= w0.abs()[~kept].max()
        elif structure == "2:4":
            g = kept.reshape(w.shape[0], -1, 4)
            assert (g.sum(-1) == 2).all()
        else:
            r, c = map(int, structure.split("x"))
            blocks = w0.abs().reshape(w.shape[0] // r, r, w.shape[1] // c, c).sum(dim=(1, 3))
            keepb = kept.reshape(w.shape[0] // r, r, w.shape[1] // c, c).any(dim=3).any(dim=1)
            assert int((~keepb).sum()) == round(sparsity * keepb.numel())
            assert blocks[keepb].min() >= blocks[~keepb].max()
        assert getattr(mod, "sparsa_structure") == structure
    assert all(abs(r.sparsity - (sparsity or 0.5)) < 0.02 for r in report.modules)


def test_inplace_false_leaves_the_original_untouched():
    m = Toy()
    ref = copy.deepcopy(m.state_dict())
    pruned, _ = prune(m, sparsity=0.5, inplace=False)
    assert pruned is not m
    for k, v in m.state_dict().items():
        assert torch.equal(v, ref[k])


@pytest.mark.parametrize("factory", [tiny_bert, tiny_gpt2, tiny_llama], ids=["bert", "gpt2-conv1d", "llama"])
def test_prunes_real_architectures_generically(factory):
    model = factory()
    _, report = prune(model, sparsity=0.5, structure="4x1")
    assert len(report.modules) >= 8
    assert abs(report.achieved_sparsity - 0.5) < 0.01
    assert not any("lm_head" in r.name for r in report.modules)
    if factory is tiny_gpt2:  # Conv1D weights are (in, out): pruned through the transposed view
        assert {r.type for r in report.modules} == {"Conv1D"}


def test_bad_inputs():
    m = Toy()
    with pytest.raises(UnknownMethodError, match="known methods: magnitude"):
        prune(m, "wandaa", 0.5)
    with pytest.raises(StructureError, match="allowed forms"):
        prune(m, sparsity=0.5, structure="5:4")
    with pytest.raises(StructureError, match=r"module 'head' \(Linear\).*do not tile"):
        prune(m, sparsity=0.5, structure="4x1", targets=["head"], ignore=[])
