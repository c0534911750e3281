"""The pruning math as pure tensor functions, each against an independent plain-PyTorch reference."""

import pytest
import torch

from sparsa.masks import mask_from_scores
from sparsa.prune.allocation import erk_sparsities, outlier_ratio, owl_sparsities
from sparsa.prune.dsnot import dsnot, row_error
from sparsa.prune.methods import METHODS, wanda_scores
from sparsa.prune.sparsegpt import HessianConsumedError, sparsegpt
from sparsa.prune.stats import InputStats, relative_error


def correlated_inputs(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """(n, d) inputs with correlated features of very different scales and nonzero means (like LLM features)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    mix = torch.eye(d, dtype=torch.float64) + 0.5 * torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    scales = torch.logspace(-1, 1, d, dtype=torch.float64)[torch.randperm(d, generator=g)]
    return ((z @ mix) * scales + 0.3 * scales).float()


def stats_of(x: torch.Tensor) -> InputStats:
    s = InputStats(x.shape[1])
    for chunk in x.split(37):  # several batches, as the engine adds them
        s.add(chunk)
    return s


def test_input_stats_match_direct_sums():
    x = correlated_inputs(300, 24)
    s = stats_of(x)
    xd = x.double()
    assert s.n == 300
    torch.testing.assert_close(s.hessian.double(), xd.T @ xd, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s.mean.double(), xd.mean(0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s.var.double(), xd.var(0, unbiased=False), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.norm.double(), xd.norm(dim=0), rtol=1e-6, atol=1e-6)


def test_relative_error_equals_output_error():
    x = correlated_inputs(200, 16)
    w = torch.randn(8, 16)
    wp = w * (torch.rand(8, 16) > 0.5)
    direct = float(((x.double() @ (w - wp).double().T) ** 2).sum() / ((x.double() @ w.double().T) ** 2).sum())
    assert relative_error(w, wp, stats_of(x).hessian) == pytest.approx(direct, rel=1e-4)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
@pytest.mark.parametrize("structure,sparsity,scope", [("unstructured", 0.6, "row"), ("unstructured", 0.6, "tensor"),
                                                      ("2:4", None, "row"), ("4x1", 0.5, "row")])
def test_prune_one_zeroes_in_place_from_the_mask_as_the_copying_path_does(method, structure, sparsity, scope):
    """Score methods prune in place from their keep-mask (no pruned copy): the same weights, the same exact
    reconstruction error as pruning a copy with ``run`` and measuring it against X^T X."""
    from sparsa import parse_structure
    from sparsa.prune.engine import Plan, prune_one

    lin = torch.nn.Linear(48, 20, bias=False)
    w0 = lin.weight.detach().clone()
    x = correlated_inputs(300, 48)
    s = stats_of(x)
    m, st_ = METHODS[method], parse_structure(structure)
    ref, keep = m.run(w0, s, st_, sparsity or 0.5, scope)
    out = prune_one(Plan("lin", lin, m, st_, sparsity or 0.5, scope), s)
    assert torch.equal(lin.weight.detach(), ref)
    assert torch.equal(m.mask(w0, s, st_, sparsity or 0.5, scope), keep)
    direct = ((x @ w0.T - x @ ref.T).double().square().sum() / (x @ w0.T).double().square().sum()).item()
    assert out.recon_error == pytest.approx(direct, rel=1e-3)
    assert out.recon_error == pytest.approx(relative_error(w0, ref, s.hessian), rel=1e-6)
    assert out.sparsity == pytest.approx(float((ref == 0).float().mean()))


def test_wanda_scores_are_weight_times_input_norm_exactly():
    x = correlated_inputs(128, 12)
    w = torch.randn(5, 12)
    ref = w.abs() * torch.sqrt((x.double() ** 2).sum(0)).float()
    torch.testing.assert_close(wanda_scores(w, stats_of(x).norm), ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("structure", ["unstructured", "2:4", "4x1"])
def test_sparsegpt_without_pruning_returns_the_weight(structure):
    x = correlated_inputs(200, 32)
    w = torch.randn(8, 32)
    keep = torch.ones(8, 32, dtype=torch.bool)
    new, k = sparsegpt(w, stats_of(x).hessian, structure, None if structure == "2:4" else 0.5, mask=keep)
    torch.testing.assert_close(new, w, rtol=0, atol=1e-6)
    new0, k0 = sparsegpt(w, stats_of(x).hessian, "unstructured", 0.0)
    assert bool(k0.all())
    torch.testing.assert_close(new0, w, rtol=0, atol=1e-6)


def test_sparsegpt_hand_computed_two_weights():
    # one row [w1, w2], H = [[a, b], [b, c]], 1:2 keeps one weight. Saliency w^2 / [H^-1]_jj^2 with
    # H^-1 = [[c, -b], [-b, a]] / det picks w1 to prune (tiny), and the OBS update moves it onto w2:
    # w2' = w2 + w1 * b / c  (the least-squares fit of x1 w1 + x2 w2 by x2 alone).
    a, b, c = 4.0, 1.0, 2.0
    h = torch.tensor([[a, b], [b, c]])
    w = torch.tensor([[0.1, 3.0]])
    new, keep = sparsegpt(w, h, "1:2", None, damp=0.0)
    assert keep.tolist() == [[False, True]]
    assert new[0, 0].item() == 0.0
    assert new[0, 1].item() == pytest.approx(3.0 + 0.1 * b / c, rel=1e-6)


def slow_obs(w: torch.Tensor, h: torch.Tensor, keep: torch.Tensor, damp: float) -> torch.Tensor:
    """Reference: sweep the columns left to right; removing column i re-solves the remaining columns' update
    with an explicit inverse of H restricted to them (no Cholesky, no blocks, no lazy updates)."""
    w = w.double().clone()
    h = h.double().clone()
    h.diagonal().add_(damp * torch.diag(h).mean())
    d = w.shape[1]
    for i in range(d):
        rest = list(range(i, d))
        hinv = torch.linalg.inv(h[rest][:, rest])  # (d-i, d-i)
        for r in range(w.shape[0]):
            if not keep[r, i]:
                w[r, i:] -= w[r, i] / hinv[0, 0] * hinv[0, :]
                w[r, i] = 0.0
    return w


@pytest.mark.parametrize("blocksize", [4, 128])
def test_sparsegpt_equals_slow_obs_reference_for_a_given_mask(blocksize):
    x = correlated_inputs(400, 24, seed=1)
    h = stats_of(x).hessian
    w = torch.randn(6, 24)
    keep = mask_from_scores(torch.rand(6, 24), "unstructured", 0.5)
    new, _ = sparsegpt(w, h, "unstructured", 0.5, blocksize=blocksize, mask=keep)
    torch.testing.assert_close(new.double(), slow_obs(w, h, keep, 0.01), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("structure, sparsity", [("unstructured", 0.5), ("unstructured", 0.7), ("2:4", None),
                                                 ("4x1", 0.5), ("1x4", 0.5)])
def test_reconstruction_error_sparsegpt_le_wanda_le_magnitude(structure, sparsity):
    x = correlated_inputs(2048, 64, seed=2)
    s = stats_of(x)
    w = torch.randn(32, 64)
    errs = {}
    for name in ("magnitude", "wanda", "sparsegpt"):
        m = METHODS[name]
        new, keep = m.run(w, s, __import__("sparsa").parse_structure(structure), sparsity or 0.5, m.default_scope)
        errs[name] = relative_error(w, new, s.hessian)
        if structure == "2:4":
            assert (keep.reshape(32, -1, 4).sum(-1) == 2).all()
        assert float((new == 0).float().mean()) >= (sparsity or 0.5) - 0.01
    assert errs["sparsegpt"] <= errs["wanda"] <= errs["magnitude"], errs


@pytest.mark.parametrize("structure, sparsity", [("unstructured", 0.6), ("2:4", None), ("4x1", 0.5)])
def test_dsnot_reduces_each_rows_expected_error_and_keeps_the_structure(structure, sparsity):
    x = correlated_inputs(1024, 32, seed=3)
    s = stats_of(x)
    w = torch.randn(16, 32)
    keep = mask_from_scores(wanda_scores(w, s.norm), structure, sparsity, scope="row")
    pruned = w * keep
    new, k2 = dsnot(w, pruned, keep, s.mean, s.var, s.norm, structure)
    before = row_error(w, pruned, s.mean)
    after = row_error(w, new, s.mean)
    if structure == "4x1":  # blocks swap for a block-row: its 4 rows' errors fall together, as a vector
        before, after = before.reshape(4, 4).norm(dim=1), after.reshape(4, 4).norm(dim=1)
    before, after = before.abs(), after.abs()
    assert bool((after <= before + 1e-9).all())
    # the swaps do real work on biased inputs (less for 4-row blocks, whose 4 errors must fall together)
    assert float(after.sum()) < (0.9 if structure == "4x1" else 0.7) * float(before.sum())
    assert torch.equal(k2.sum(1), keep.sum(1))  # every row keeps as many weights
    assert torch.equal(new != 0, k2)
    if structure == "2:4":
        assert (k2.reshape(16, -1, 4).sum(-1) == 2).all()
    if structure == "4x1":
        blocks = k2.reshape(4, 4, 32)
        assert bool((blocks.all(1) | ~blocks.any(1)).all())  # whole 4x1 blocks only
    grown = k2 & ~keep
    assert torch.equal(new[grown], w[grown])  # grown weights come back with their dense values


def test_erk_hits_the_target_and_keeps_small_layers_denser():
    shapes = {"a": (64, 64), "b": (256, 256), "c": (512, 512), "d": (4, 8)}
    sp = erk_sparsities(shapes, 0.8)
    numel = {k: o * i for k, (o, i) in shapes.items()}
    weighted = sum(sp[k] * numel[k] for k in shapes) / sum(numel.values())
    assert weighted == pytest.approx(0.8, abs=1e-9)
    assert sp["c"] > sp["b"] > sp["a"] >= sp["d"] >= 0.0
    assert sp["d"] == 0.0  # would need density > 1: left dense, the rest rescaled


def test_owl_spreads_by_outlier_ratio_around_the_target():
    sp = owl_sparsities([0.01, 0.05, 0.03, 0.02], 0.7, lam=0.08)
    assert sum(sp) / 4 == pytest.approx(0.7)
    assert max(sp) - min(sp) == pytest.approx(0.16)
    assert sp[1] == min(sp) and sp[0] == max(sp)  # most outliers -> least pruned
    assert owl_sparsities([0.02, 0.02], 0.5) == [0.5, 0.5]
    metric = torch.ones(100)
    metric[:3] = 100.0  # 3 of 100 entries above 5x the mean
    assert outlier_ratio([metric], 5.0) == pytest.approx(0.03)


from hypothesis import given, settings, strategies as hs  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(out=hs.integers(1, 6).map(lambda k: 4 * k), cols=hs.integers(1, 40).map(lambda k: 4 * k),
       structure=hs.sampled_from(["unstructured", "2:4", "4x1", "1x4"]), sp=hs.floats(0.0, 0.95),
       blocksize=hs.sampled_from([4, 16, 128]), seed=hs.integers(0, 2**16))
def test_sparsegpt_masks_obey_every_structure_on_odd_shapes(out, cols, structure, sp, blocksize, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, cols, generator=g)
    w = torch.randn(out, cols, generator=g)
    s = None if structure == "2:4" else sp
    new, keep = sparsegpt(w, x.T @ x, structure, s, blocksize=blocksize)
    assert torch.isfinite(new).all()
    assert not bool(new[~keep].any())  # pruned weights are exactly zero
    if structure == "2:4":
        assert (keep.reshape(out, -1, 4).sum(-1) == 2).all()
    elif structure == "unstructured":
        bs = max(1, blocksize)
        for i in range(0, cols, bs):  # the published rule: the sparsity holds in every column block
            blk = keep[:, i : i + bs]
            assert int((~blk).sum()) == round(sp * blk.numel())
    else:
        r, c = map(int, structure.split("x"))
        kb = keep.reshape(out // r, r, cols // c, c)
        assert bool((kb.all(3).all(1) | ~kb.any(3).any(1)).all())


@pytest.mark.parametrize("structure, sparsity", [("unstructured", 0.7), ("2:4", None), ("4x1", 0.5)])
def test_dsnot_with_the_hessian_guard_never_raises_any_rows_exact_error(structure, sparsity):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1024, 32, generator=g) + 0.2 * torch.randn(32, generator=g)  # small means, like LayerNorm
    s = stats_of(x)
    w = torch.randn(16, 32, generator=g)
    keep = mask_from_scores(wanda_scores(w, s.norm), structure, sparsity, scope="row")
    pruned = w * keep
    new, k2 = dsnot(w, pruned, keep, s.mean, s.var, s.norm, structure, hessian=s.hessian)

    def per_row(wp):  # exact ||(W - W') X^T||^2 of each row (each block-row for 4x1)
        e = (((w - wp).double() @ x.double().T) ** 2).sum(1)
        return e.reshape(4, 4).sum(1) if structure == "4x1" else e

    assert bool((per_row(new) <= per_row(pruned) * (1 + 1e-6) + 1e-9).all())
    assert torch.equal(k2.sum(1), keep.sum(1))
    unguarded, _ = dsnot(w, pruned, keep, s.mean, s.var, s.norm, structure)
    assert relative_error(w, new, s.hessian) <= relative_error(w, unguarded, s.hessian) + 1e-9
    # the float32 X^T X is read as it is stored (no float64 copy of it): same swaps as a float64 copy gives
    wide, k3 = dsnot(w, pruned, keep, s.mean, s.var, s.norm, structure, hessian=s.hessian.double())
    assert torch.equal(new, wide) and torch.equal(k2, k3)


def test_float64_product_with_a_float32_hessian_in_slabs():
    from sparsa.prune.dsnot import _times

    g = torch.Generator().manual_seed(2)
    a, h = torch.randn(7, 50, generator=g, dtype=torch.float64), torch.randn(50, 50, generator=g)
    torch.testing.assert_close(_times(a, h, slab=16), a @ h.double(), rtol=1e-14, atol=1e-12)


def test_inverse_hessian_factor_float32_and_float64_fallback():
    """U^T U = (H + damp * mean(diag H) I)^-1 in float32; a damped Hessian too ill-conditioned for a float32
    Cholesky (rank 4 of 512, damp 1e-6: float32 rounding is ~1e-5 of the diagonal, float64's ~1e-13) is
    factorised in float64; a matrix no precision can factorise is one clear error."""
    from sparsa.prune.sparsegpt import inverse_hessian_factor

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 48, generator=g)
    h = x.T @ x
    u = inverse_hessian_factor(h, 0.01).u
    assert u.dtype == torch.float32 and torch.equal(u, u.triu())
    ref = torch.linalg.inv(h.double() + 0.01 * h.diag().double().mean() * torch.eye(48, dtype=torch.float64))
    torch.testing.assert_close((u.mT @ u).double(), ref, rtol=1e-4, atol=1e-6)

    low = torch.randn(4, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u64 = inverse_hessian_factor((low.T @ low).float(), 1e-6).u
    assert u64.dtype == torch.float64 and bool(torch.isfinite(u64).all())
    with pytest.raises(torch.linalg.LinAlgError, match="not positive definite even in float64"):
        inverse_hessian_factor(-torch.eye(8), 0.01)
    with pytest.raises(HessianConsumedError):  # in place, the failed float32 attempt leaves no H to retry from
        inverse_hessian_factor((low.T @ low).float(), 1e-6, overwrite=True)


def test_factor_in_place_of_the_hessian_gives_the_same_pruning_and_exact_errors():
    """With overwrite the factor lives in H's storage and equals the one computed on a copy; relative errors
    from the factor equal those from H (dead inputs and dampening taken out again)."""
    from sparsa.prune.sparsegpt import inverse_hessian_factor

    x = correlated_inputs(400, 64)
    x[:, [3, 17]] = 0  # inputs never active
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    h = stats_of(x).hessian
    copy = inverse_hessian_factor(h, 0.01)
    s = stats_of(x)
    s.consume_hessian = True
    storage = s.hessian.data_ptr()
    f = s.inverse_factor()
    assert s.hessian is None and f.u.data_ptr() == storage and torch.equal(f.dead, torch.isin(torch.arange(64),
                                                                                                torch.tensor([3, 17])))
    torch.testing.assert_close(f.u, copy.u)
    assert s.inverse_factor() is f  # computed once for every weight reading this input
    for structure, sp in [("unstructured", 0.5), ("2:4", None), ("4x1", 0.7)]:
        new, keep = sparsegpt(w, f, structure, sp)
        new_ref, keep_ref = sparsegpt(w, h, structure, sp)
        assert torch.equal(keep, keep_ref) and torch.equal(new, new_ref)
        assert s.relative_error(w, new) == pytest.approx(relative_error(w, new, h), rel=1e-3)
    with pytest.raises(ValueError, match="damp=0.01"):
        s.inverse_factor(damp=0.1)
