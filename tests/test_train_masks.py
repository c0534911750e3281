"""Masks that stay true through training: pruned weights exactly zero after many optimizer steps (gradient and
optimizer state masked, not re-zeroed by luck), structures kept by every mask update, masks resumed from a
state dict, and the settings that must fail before anything trains."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import tiny_bert, tiny_gpt2
from sparsa.masks import block_scores
from sparsa.structure import StructureError
from sparsa.train import METHODS, ConfigError, SparseTraining, load_config

HARD = {
    "fixed": dict(init="magnitude", sparsity=0.6),
    "random": dict(sparsity=0.8, allocation="erk"),
    "gmp": dict(sparsity=0.8, total_steps=24, update_every=4),
    "set": dict(sparsity=0.8, total_steps=24, update_every=4),
    "rigl": dict(sparsity=0.8, total_steps=24, update_every=4),
    "granet": dict(sparsity=0.8, total_steps=24, update_every=4),
}


def _weight_out_in(sp: SparseTraining, name: str) -> torch.Tensor:
    t = next(t for t in sp.targets if t.name == name)
    return t.weight()


def _train(model, sp, opt, steps: int, seed: int = 1, check=None):
    g = torch.Generator().manual_seed(seed)
    model.eval()  # no dropout: runs compared step by step must see the same forward passes
    for _ in range(steps):
        ids = torch.randint(0, 100, (4, 12), generator=g)
        out = model(input_ids=ids)
        loss = (out.logits if hasattr(out, "logits") else out.last_hidden_state).pow(2).mean()
        loss.backward()
        opt.step()
        sp.step()
        opt.zero_grad()
        if check is not None:
            check()


@pytest.mark.parametrize("make", [tiny_bert, tiny_gpt2], ids=["bert-linear", "gpt2-conv1d"])
@pytest.mark.parametrize("method", list(HARD))
def test_pruned_weights_stay_exactly_zero_under_adamw(method, make):
    model = make()
    # the guard that multiplies weights by masks after each step is off: gradients and optimizer state alone
    # must keep every pruned weight at exactly zero, through weight decay and AMSGrad's running maximum
    sp = SparseTraining(model, method=method, reapply=False, **HARD[method])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, amsgrad=True)
    sp.attach(opt)

    def check():
        for t in sp.targets:
            m = sp.mask(t.name)
            assert torch.all(t.weight()[~m] == 0), f"{t.name}: a pruned weight moved"
            pm = t.to_param(m)
            for v in opt.state[t.param].values():
                if v.shape == t.param.shape:
                    assert torch.all(v[~pm] == 0), f"{t.name}: optimizer state at a pruned weight"

    _train(model, sp, opt, 24, check=check)
    assert sp.sparsity() == pytest.approx(HARD[method]["sparsity"], abs=2e-3)
    kept_moving = sum(int((t.weight() != 0).sum()) for t in sp.targets)
    assert kept_moving > 0
    sp.finalize()
    for t in sp.targets:  # plain parameters again, exact zeros where pruned, structure recorded
        mod = model.get_submodule(t.name)
        assert mod.sparsa_structure == "unstructured"
        w = mod.weight.detach().T if t.transposed else mod.weight.detach()
        assert torch.equal(w == 0, ~sp.mask(t.name) | (w == 0))
        assert torch.all(w[~sp.mask(t.name)] == 0)


def test_sgd_momentum_nesterov_keeps_zeros():
    model = tiny_bert()
    sp = SparseTraining(model, method="rigl", sparsity=0.7, total_steps=20, update_every=3, reapply=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    sp.attach(opt)
    _train(model, sp, opt, 20)
    for t in sp.targets:
        assert torch.all(t.weight()[~sp.mask(t.name)] == 0)


@pytest.mark.parametrize("method", ["gmp", "set", "rigl", "granet", "random", "fixed"])
def test_block_structure_survives_every_update(method):
    model = tiny_bert()
    kw = dict(HARD[method], structure="4x1")
    if method == "fixed":
        kw["init"] = "random"
    sp = SparseTraining(model, method=method, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sp.attach(opt)
    _train(model, sp, opt, 24)
    from sparsa.structure import Block

    for t in sp.targets:
        m = sp.mask(t.name).float()
        per_block = block_scores(m, Block(4, 1))  # kept weights per 4x1 block: 0 or 4, never in between
        assert torch.all((per_block == 0) | (per_block == 4)), t.name
    assert sp.sparsity() == pytest.approx(0.8 if method != "fixed" else 0.6, abs=1e-3)


def test_gmp_follows_the_cubic_schedule():
    model = tiny_bert()
    sp = SparseTraining(model, method="gmp", sparsity=0.8, total_steps=40, start_step=0, end_step=20,
                        update_every=5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sp.attach(opt)
    seen = {}
    g = torch.Generator().manual_seed(0)
    for step in range(1, 31):
        model(input_ids=torch.randint(0, 100, (2, 8), generator=g)).last_hidden_state.pow(2).mean().backward()
        opt.step()
        sp.step()
        opt.zero_grad()
        seen[step] = sp.sparsity()
    for step, expected in ((5, 0.8 * (1 - 0.75**3)), (10, 0.7), (15, 0.8 * (1 - 0.25**3)), (20, 0.8), (30, 0.8)):
        assert seen[step] == pytest.approx(expected, abs=2e-3), step
    assert seen[4] == 0.0  # nothing pruned before the first update


@pytest.mark.parametrize("method", ["set", "gmp", "srste"])
def test_resume_from_state_dict_continues_identically(method):
    kw = {"set": dict(sparsity=0.7, total_steps=30, update_every=3, init="random"),
          "gmp": dict(sparsity=0.7, total_steps=30, update_every=3),
          "srste": dict(structure="2:4")}[method]
    torch.manual_seed(0)
    base = tiny_bert()

    def fresh():
        m = copy.deepcopy(base)
        return m

    # straight through: 20 steps
    m1 = fresh()
    s1 = SparseTraining(m1, method=method, **kw)
    o1 = torch.optim.Adam(m1.parameters(), lr=1e-2)
    s1.attach(o1)
    _train(m1, s1, o1, 10, seed=1)
    _train(m1, s1, o1, 10, seed=2)

    # 10 steps, save, rebuild everything, 10 more
    m2 = fresh()
    s2 = SparseTraining(m2, method=method, **kw)
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    s2.attach(o2)
    _train(m2, s2, o2, 10, seed=1)
    state, weights, ostate = s2.state_dict(), copy.deepcopy(m2.state_dict()), copy.deepcopy(o2.state_dict())
    m3 = fresh()
    if method == "srste":  # a parametrized model: the parametrization must exist before its weights load
        s3 = SparseTraining(m3, method=method, state=state, **kw)
        m3.load_state_dict(weights)
    else:
        m3.load_state_dict(weights)
        s3 = SparseTraining(m3, method=method, state=state, **kw)
    o3 = torch.optim.Adam(m3.parameters(), lr=1e-2)
    o3.load_state_dict(ostate)
    s3.attach(o3)
    assert s3.step_count == 10
    _train(m3, s3, o3, 10, seed=2)
    for t1, t3 in zip(s1.targets, s3.targets):
        assert torch.equal(s1.mask(t1.name), s3.mask(t3.name))
        assert torch.allclose(t1.weight(), t3.weight(), atol=1e-6)


def test_state_dict_of_another_run_is_refused():
    sp = SparseTraining(tiny_bert(), method="fixed", init="magnitude", sparsity=0.5)
    state = sp.state_dict()
    with pytest.raises(ValueError, match="method 'fixed'"):
        SparseTraining(tiny_bert(), method="random", sparsity=0.5, state=state)
    from torch import nn

    with pytest.raises(ValueError, match="other modules"):
        SparseTraining(nn.Sequential(nn.Linear(64, 64)), method="fixed", init="magnitude", sparsity=0.5,
                       state=state)


# -- bad settings: one clear error, before anything trains ---------------------------------------------------------
def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        SparseTraining(tiny_bert(), method="lottery", sparsity=0.5)
    for name in METHODS:
        assert name in str(e.value)


def test_fixed_masks_on_a_dense_model_are_refused():
    # "fixed" keeps the model's zeros: on a dense model it would train dense while claiming 2:4
    with pytest.raises(ConfigError, match="none of the selected weights has any"):
        SparseTraining(tiny_bert(), method="fixed", structure="2:4")
    sp = SparseTraining(tiny_bert(), method="fixed", structure="2:4", init="magnitude")
    assert abs(sp.sparsity() - 0.5) < 1e-6


def test_schedule_end_before_start_is_refused():
    with pytest.raises(ConfigError, match="not after its start"):
        load_config(method="gmp", sparsity=0.8, total_steps=100, start_step=60, end_step=40)


def test_structure_that_does_not_tile_the_shapes_is_refused():
    model = nn.Sequential(nn.Linear(64, 30), nn.Linear(30, 8))
    w = model[0].weight.detach().clone()
    with pytest.raises(StructureError, match="module '0'.*4x1"):
        SparseTraining(model, method="rigl", sparsity=0.8, structure="4x1", total_steps=10)
    with pytest.raises(StructureError, match="module '1'.*2:4"):
        SparseTraining(model, method="srste", structure="2:4")
    assert torch.equal(model[0].weight, w)  # nothing touched


def test_nm_with_drop_and_grow_is_refused():
    with pytest.raises(ConfigError, match="srste, decay or fixed"):
        load_config(method="rigl", structure="2:4", total_steps=10)


def test_scheduled_method_needs_the_run_length():
    with pytest.raises(ConfigError, match="total_steps"):
        SparseTraining(tiny_bert(), method="gmp", sparsity=0.5)


def test_unknown_config_key_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown key; known keys: method"):
        load_config({"method": "fixed", "sparsty": 0.5})
