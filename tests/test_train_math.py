"""Sparse training math against independent references: schedule values computed by hand, ERK densities from
the formula, RigL's regrowth by top-|gradient|, SR-STE's gradient against plain PyTorch, the distillation losses
written out term by term."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsa.train import (
    SparseTraining,
    ScheduleError,
    cosine_fraction,
    cubic_sparsity,
    embedding_cosine,
    kl_logits,
    mask_decay,
    squarehead,
)
from sparsa.modules import ModuleSelectionError
from sparsa.structure import StructureError
from sparsa.train.config import ConfigError, load_config
from sparsa.train.dynamics import layer_sparsities, with_overrides
from sparsa.train.schedules import is_update_step


# -- schedules -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("step, expected", [
    (0, 0.0), (10, 0.0),            # before the window: the starting sparsity
    (35, 0.8 * (1 - 0.75**3)),      # a quarter in: 0.8 (1 - (3/4)^3) = 0.4625
    (60, 0.7),                      # half way: 0.8 (1 - 1/8)
    (85, 0.8 * (1 - 0.25**3)),      # 0.7875
    (110, 0.8), (500, 0.8),         # the end and after: the target
])
def test_cubic_schedule_hand_values(step, expected):
    assert cubic_sparsity(step, 10, 110, 0.0, 0.8) == pytest.approx(expected, abs=1e-12)


def test_cubic_schedule_from_a_one_shot_start():
    # from 0.5 to 0.9 over [0, 100]: at 50, 0.9 + (0.5 - 0.9) / 8 = 0.85
    assert cubic_sparsity(50, 0, 100, 0.5, 0.9) == pytest.approx(0.85)


def test_cosine_update_fraction_hand_values():
    assert cosine_fraction(0, 0, 100, 0.3) == pytest.approx(0.3)
    assert cosine_fraction(50, 0, 100, 0.3) == pytest.approx(0.15)
    assert cosine_fraction(25, 0, 100, 0.3) == pytest.approx(0.15 * (1 + math.sqrt(0.5)))
    assert cosine_fraction(100, 0, 100, 0.3) == pytest.approx(0.0, abs=1e-15)
    assert cosine_fraction(101, 0, 100, 0.3) == 0.0


def test_mask_decay_hand_values():
    assert mask_decay(0, 0, 100) == 1.0
    assert mask_decay(25, 0, 100) == pytest.approx(0.75)
    assert mask_decay(25, 0, 100, "exponential", 4.0) == pytest.approx(math.exp(-1.0))
    assert mask_decay(100, 0, 100, "exponential") == 0.0  # hard N:M from the end on
    assert mask_decay(150, 0, 100) == 0.0


def test_update_steps_every_k_and_the_end():
    steps = [t for t in range(0, 200) if is_update_step(t, 10, 75, 20)]
    assert steps == [30, 50, 70, 75]  # 75: the end, so the schedule reaches its final value


@pytest.mark.parametrize("fn, args", [(cubic_sparsity, (0.0, 0.8)), (cosine_fraction, (0.3,)), (mask_decay, ())])
def test_schedule_end_before_start_is_an_error(fn, args):
    with pytest.raises(ScheduleError, match="not after its start"):
        fn(5, 100, 50, *args)


# -- ERK -------------------------------------------------------------------------------------------------------------
def test_erk_densities_follow_the_formula():
    shapes = {"a": (64, 64), "b": (256, 64), "c": (64, 256), "d": (32, 128)}
    s = 0.9
    n = sum(o * i for o, i in shapes.values())
    # density_l = eps (o + i) / (o i) with sum_l density_l o_l i_l = (1 - s) n  =>  eps = (1 - s) n / sum (o + i)
    eps = (1 - s) * n / sum(o + i for o, i in shapes.values())
    got = layer_sparsities(shapes, s, "erk")
    for k, (o, i) in shapes.items():
        assert 1 - got[k] == pytest.approx(eps * (o + i) / (o * i), rel=1e-9)
    # smaller layers keep more
    assert got["a"] < got["b"]


def test_erk_layer_that_would_exceed_density_one_stays_dense():
    shapes = {"tiny": (4, 4), "big": (512, 512)}
    got = layer_sparsities(shapes, 0.5, "erk")
    assert got["tiny"] == 0.0
    # the rest keeps exactly the budget: 0.5 of all weights
    kept = 16 + (1 - got["big"]) * 512 * 512
    assert kept == pytest.approx(0.5 * (16 + 512 * 512))


def test_random_erk_masks_have_the_erk_densities():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 32))
    sp = SparseTraining(model, method="random", sparsity=0.8, allocation="erk")
    shapes = {"0": (64, 64), "2": (256, 64), "4": (32, 256)}
    eps = 0.2 * sum(o * i for o, i in shapes.values()) / sum(o + i for o, i in shapes.values())
    for r in sp.report():
        o, i = shapes[r.name]
        assert 1 - r.sparsity == pytest.approx(eps * (o + i) / (o * i), abs=1.0 / (o * i))
    assert sp.sparsity() == pytest.approx(0.8, abs=1e-3)


# -- per-module overrides: fixed modules, the rest absorbs the difference ------------------------------------------
def test_overrides_keep_the_overall_sparsity_and_scale_the_rest():
    """Hand-computed: 3 layers of 64x64 = 4096 weights each, 80% overall keeps 0.2 * 12288 = 2457.6 weights;
    layer 'c' at 70% keeps 1228.8, so 'a' and 'b' share 1228.8, i.e. 614.4 each: sparsity 0.85."""
    shapes = {"a": (64, 64), "b": (64, 64), "c": (64, 64)}
    got = with_overrides(layer_sparsities(shapes, 0.8, "uniform"), shapes, {"c": 0.7}, 0.8)
    assert got["c"] == 0.7 and got["a"] == pytest.approx(0.85) and got["b"] == pytest.approx(0.85)
    # on top of ERK the rest keeps ERK's proportions (one factor on every density)
    shapes = {"a": (64, 64), "b": (256, 64), "c": (64, 256)}
    erk = layer_sparsities(shapes, 0.9, "erk")
    got = with_overrides(erk, shapes, {"c": 0.8}, 0.9)
    assert (1 - got["a"]) / (1 - got["b"]) == pytest.approx((1 - erk["a"]) / (1 - erk["b"]))
    kept = sum((1 - got[k]) * o * i for k, (o, i) in shapes.items())
    assert kept == pytest.approx(0.1 * sum(o * i for o, i in shapes.values()))
    with pytest.raises(StructureError, match="other modules would need sparsity 1.1"):  # 0.5 * 1.2 + 0.5 * x = 0.8
        with_overrides({"a": 0.8, "b": 0.8}, {"a": (8, 8), "b": (8, 8)}, {"a": 0.5}, 0.8)


def test_overrides_in_training_masks_and_errors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    sp = SparseTraining(model, method="gmp", sparsity=0.8, structure="4x1", total_steps=4, end_step=2,
                        update_every=1, overrides=[{"targets": "re:^4$", "sparsity": 0.7}])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sp.attach(opt)
    for _ in range(4):
        model(torch.randn(8, 64)).square().mean().backward()
        opt.step()
        sp.step()
        opt.zero_grad()
    got = {r.name: r.sparsity for r in sp.report()}
    unit = 1 / 1024  # a 64x64 weight holds 1024 blocks of 4x1: sparsities are rounded to whole blocks
    assert got == {"0": pytest.approx(0.85, abs=unit), "2": pytest.approx(0.85, abs=unit),
                   "4": pytest.approx(0.7, abs=unit)}
    assert sp.sparsity() == pytest.approx(0.8, abs=unit)
    with pytest.raises(ModuleSelectionError, match="matches none of the 2 trained modules"):
        SparseTraining(model, method="random", sparsity=0.8, ignore=["re:^4$"],
                       overrides=[{"targets": "re:^4$", "sparsity": 0.7}])
    with pytest.raises(ConfigError, match="overrides.0.sparsity"):
        load_config(method="gmp", sparsity=0.8, total_steps=10, overrides=[{"targets": "Linear", "sparsity": 1.5}])
    with pytest.raises(ConfigError, match="overrides.0.spars: unknown key"):
        load_config(method="gmp", sparsity=0.8, total_steps=10, overrides=[{"targets": "Linear", "spars": 0.5}])
    with pytest.raises(ConfigError, match="unstructured or block structure"):
        load_config(method="srste", structure="2:4", overrides=[{"targets": "Linear", "sparsity": 0.5}])


# -- RigL: drop by magnitude, regrow by |dense gradient| ----------------------------------------------------------
def test_rigl_regrows_the_largest_dense_gradients():
    torch.manual_seed(0)
    lin = nn.Linear(8, 16, bias=False)
    model = nn.Sequential(lin)
    sp = SparseTraining(model, method="rigl", sparsity=0.5, init="magnitude", total_steps=10, end_step=10,
                        update_every=1, drop_fraction=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay put: magnitudes are known
    sp.attach(opt)
    mask0 = sp.mask("0").clone()
    w = lin.weight.detach().clone()  # (16, 8), zeros where pruned
    x, r = torch.randn(5, 8), torch.randn(5, 16)
    (model(x) * r).sum().backward()
    dense_grad = r.T @ x  # d/dW sum(r * (x W^T)) = r^T x: (16, 8), the reference, by hand
    assert torch.allclose(lin.weight.grad, dense_grad * mask0, atol=1e-6)  # the optimizer sees the masked one
    opt.step()
    sp.step()

    frac = 0.25 * (1 + math.cos(math.pi * 0.1))  # cosine fraction at step 1 of [0, 10], alpha 0.5
    n = round(frac * int(mask0.sum()))
    kept_idx = mask0.flatten().nonzero().squeeze(1)
    order = torch.argsort(w.abs().flatten()[kept_idx], stable=True)
    after_drop = mask0.flatten().clone()
    after_drop[kept_idx[order[:n]]] = False  # the n smallest |W| among kept
    cand = (~after_drop).nonzero().squeeze(1)
    grown = cand[torch.topk(dense_grad.abs().flatten()[cand], n).indices]
    expected = after_drop.clone()
    expected[grown] = True
    assert torch.equal(sp.mask("0").flatten(), expected)
    assert int(sp.mask("0").sum()) == int(mask0.sum())  # as many grown as dropped
    newly = (sp.mask("0") & ~mask0)
    assert torch.all(lin.weight[newly] == 0)  # grown connections start from zero, as in RigL


# -- SR-STE: forward N:M sparse, gradient straight through plus lambda (1 - M) W ----------------------------------
def _two_of_four(w: torch.Tensor) -> torch.Tensor:
    """Plain reference: keep the 2 largest |w| of every 4 consecutive inputs."""
    out, inp = w.shape
    g = w.abs().reshape(out, inp // 4, 4)
    idx = g.topk(2, dim=-1).indices
    m = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return m.reshape(out, inp)


def test_srste_gradient_matches_plain_pytorch():
    torch.manual_seed(0)
    lam = 0.1
    lin = nn.Linear(16, 6)
    w0 = lin.weight.detach().clone()
    model = nn.Sequential(lin)
    sp = SparseTraining(model, method="srste", structure="2:4", srste_lambda=lam)
    x = torch.randn(3, 16)
    model(x).pow(2).sum().backward()

    m = _two_of_four(w0)
    w_sparse = (w0 * m).requires_grad_(True)  # the reference: an ordinary sparse linear layer
    (x @ w_sparse.T + lin.bias.detach()).pow(2).sum().backward()
    expected = w_sparse.grad + lam * (~m).float() * w0
    assert torch.allclose(sp.targets[0].param.grad, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert torch.equal(lin.weight, w0 * m)  # the forward sees exactly the 2:4 weight


def test_decaying_mask_forward_scales_pruned_weights():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    w0 = lin.weight.detach().clone()
    sp = SparseTraining(nn.Sequential(lin), method="decay", structure="2:4", total_steps=10, end_step=8)
    m = _two_of_four(w0)
    with torch.no_grad():
        assert torch.equal(lin.weight, w0)  # beta = 1 at the start: dense
    opt = torch.optim.SGD(lin.parameters(), lr=0.0)
    for _ in range(2):
        opt.step()
        sp.step()
    with torch.no_grad():  # beta = 1 - 2/8
        assert torch.allclose(lin.weight, w0 * (m + 0.75 * ~m))
    for _ in range(6):
        sp.step()
    with torch.no_grad():
        assert torch.equal(lin.weight, w0 * m)  # from the end on: hard 2:4
    sp.finalize()
    assert not hasattr(lin, "parametrizations")
    assert torch.equal(lin.weight.detach(), w0 * m)


# -- distillation losses ---------------------------------------------------------------------------------------------
def test_squarehead_by_hand():
    torch.manual_seed(0)
    s = [torch.randn(2, 3, 4), torch.randn(2, 3, 4)]
    t = [torch.randn(2, 3, 4) * 5, torch.randn(2, 3, 4) * 0.1]
    tm = torch.tensor([[1, 1, 0], [1, 0, 0]])
    per_layer = []
    for sl, tl in zip(s, t):
        num = den = 0.0
        count = 0
        for b in range(2):
            for i in range(3):
                if tm[b, i]:
                    num += float(((sl[b, i] - tl[b, i]) ** 2).mean())
                    den += float((tl[b, i] ** 2).mean())
                    count += 1
        per_layer.append((num / count) / (den / count))
    assert float(squarehead(s, t, tm)) == pytest.approx(sum(per_layer) / 2, rel=1e-5)
    # normalised: scaling one layer's student and teacher together leaves the loss unchanged
    assert float(squarehead([s[0] * 10, s[1]], [t[0] * 10, t[1]], tm)) == pytest.approx(float(squarehead(s, t, tm)),
                                                                                      rel=1e-5)


def test_kl_logits_matches_torch_kl_div():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    T = 2.0
    ref = nn.functional.kl_div(torch.log_softmax(s / T, -1), torch.log_softmax(t / T, -1), log_target=True,
                               reduction="none").sum(-1).mean() * T * T
    assert float(kl_logits(s, t, temperature=T)) == pytest.approx(float(ref), rel=1e-5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    per = nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1), log_target=True,
                               reduction="none").sum(-1)
    assert float(kl_logits(s, t, mask)) == pytest.approx(float(per[mask.bool()].mean()), rel=1e-5)


def test_embedding_cosine_by_hand():
    a, b = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    assert float(embedding_cosine(a, b)) == pytest.approx(((1 - 0.0) + (1 - 1.0)) / 2)
