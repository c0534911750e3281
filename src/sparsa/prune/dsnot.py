"""DSnoT (Zhang et al., 2024), training-free prune-and-grow on top of any method's mask.

The expected output error of row r over the calibration tokens is, to first order,
eps_r = sum_j (W_rj - W'_rj) E[X_j]  (W dense, W' pruned). DSnoT swaps weights, one pair per row per cycle,
to drive eps_r toward zero while the count of kept weights stays fixed:

* grow the pruned weight j (restoring its dense value) whose revival reduces |eps_r| the most, each gain
  divided by Var[X_j]^var_power (a weight fed by a steady input helps on every token, not only on average);
* prune the kept weight k with the smallest Wanda importance |W'_rk| ||X_k|| among those whose removal moves
  eps_r further toward zero (or, when none does, the least important of all);
* accept the swap only if |eps_r| falls; a row stops at its first rejected swap or after ``max_cycles``.

Structures: unstructured swaps single weights within a row; N:M swaps within the grown weight's group of M
(so every group keeps N), taking per row the (grow, prune) pair of one group that leaves the smallest |eps_r|
(with only M - N by N pairs per group, the best pair is searched outright); RxC blocks swap whole blocks within a block-row, the error then being the
R-vector of the block-row's rows and |.| its Euclidean norm. Pure tensor math; the engine supplies the stats.
"""

from __future__ import annotations

import torch

from ..structure import NM, Block, StructureLike, parse_structure

__all__ = ["dsnot", "row_error"]


def row_error(dense: torch.Tensor, pruned: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """eps (out,): the expected output error (W - W') E[X] of each row."""
    return (dense.double() - pruned.double()) @ mean.double()


def _units(x: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """(out, in) -> (out/R, in/C, R, C): the RxC units of a weight, by block-row and block-column."""
    o, i = x.shape
    return x.reshape(o // r, r, i // c, c).permute(0, 2, 1, 3)


@torch.no_grad()
def dsnot(
    dense: torch.Tensor,
    pruned: torch.Tensor,
    keep: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    norm: torch.Tensor,
    structure: StructureLike,
    max_cycles: int = 50,
    var_power: float = 1.0,
    hessian: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine (pruned weight, keep-mask) of ``dense`` (out, in) given input mean, variance and norm (in,).

    With ``hessian`` (X^T X), a swap is also refused unless it lowers the row's full reconstruction error
    (W - W') X^T X (W - W')^T: DSnoT's first-order criterion alone trades mean error for variance error, which
    on inputs with small means (LayerNorm outputs) raises the error it means to lower.

    Returns (new weight, new keep-mask); kept weights keep their values in ``pruned`` (e.g. SparseGPT's
    updated values) and grown weights take their dense values.
    """
    st = parse_structure(structure)
    st.check_shape(tuple(dense.shape), "weight")
    r, c = (st.rows, st.cols) if isinstance(st, Block) else (1, 1)
    group = st.m if isinstance(st, NM) else 0
    wd = dense.detach().double()
    wc = (pruned.detach().double() * keep).clone()  # (out, in)
    kp = keep.clone().bool()
    mu, nrm = mean.double(), norm.double()
    v = var.double().clamp(min=1e-12)

    # contribution of each unit to its block-row's error: grown (dense values) and pruned (current values)
    grow_c = _units(wd * mu, r, c).sum(-1)  # (BR, BC, R)
    unit_var = _units(v.expand_as(wd), r, c).mean((-1, -2))  # (BR, BC)
    eps = _units((wd - wc) * mu, r, c).sum((1, 3))  # (BR, R)
    # X^T X stays in its float32 storage (a float64 copy would be twice its bytes, 970 MB at a 7B down
    # projection); what the guard reads of it is gathered first and widened then, exactly
    h = hessian
    grad = None if h is None else _times(wd - wc, h)  # (out, in): (W - W') H, kept current for the guard
    cycles = 0
    active = torch.ones(eps.shape[0], dtype=torch.bool)
    while cycles < max_cycles and bool(active.any()):
        cycles += 1
        if group:
            if not _nm_cycle(wd, wc, kp, eps, mu, group, active, h, grad):
                break
            continue
        ku = _units(kp, r, c).all(-1).all(-1)  # (BR, BC) unit kept
        prune_c = _units(wc * mu, r, c).sum(-1)  # (BR, BC, R)
        # growth: gain = |eps|^2 - |eps - c|^2, over pruned units, per unit of input variance
        gain = 2 * (eps.unsqueeze(1) * grow_c).sum(-1) - grow_c.square().sum(-1)  # (BR, BC)
        gscore = torch.where(~ku & (gain > 0), gain / unit_var.pow(var_power), torch.full_like(gain, -1.0))
        g = gscore.argmax(1)  # (BR,)
        can_grow = gscore.gather(1, g[:, None]).squeeze(1) > 0
        eps_g = eps - grow_c[torch.arange(len(g)), g]  # (BR, R) error after growing
        # pruning: Wanda importance of kept units; prefer those whose removal reduces the error further
        imp = _units((wc.abs() * nrm), r, c).sum((-1, -2))  # (BR, BC)
        delta = 2 * (eps_g.unsqueeze(1) * prune_c).sum(-1) + prune_c.square().sum(-1)  # (BR, BC) |.|^2 change
        cand = ku.clone()
        cand[torch.arange(len(g)), g] = False
        helps = cand & (delta < 0)
        pick_from = torch.where(helps.any(1, keepdim=True), helps, cand)
        p = torch.where(pick_from, imp, torch.full_like(imp, float("inf"))).argmin(1)  # (BR,)
        has_p = pick_from.any(1)
        eps_new = eps_g + prune_c[torch.arange(len(p)), p]
        better = eps_new.square().sum(-1) < eps.square().sum(-1) - 1e-12
        ok = active & can_grow & has_p & better
        active &= ok
        if not bool(ok.any()):
            break
        br = torch.nonzero(ok).squeeze(1)  # accepted block-rows: one unit grown, one pruned in each
        ri = (br[:, None] * r + torch.arange(r)[None, :])[:, :, None]  # (k, R, 1) weight rows
        gi = (g[br][:, None] * c + torch.arange(c)[None, :])[:, None, :]  # (k, 1, C) grown columns
        pi = (p[br][:, None] * c + torch.arange(c)[None, :])[:, None, :]  # (k, 1, C) pruned columns
        if h is not None:
            good = _guard(wd, wc, h, grad, ri, gi, pi)
            ok[br[~good]] = False
            active &= ok
            br, ri, gi, pi = br[good], ri[good], gi[good], pi[good]
            if br.numel() == 0:
                break
        kp[ri, gi] = True
        wc[ri, gi] = wd[ri, gi]
        kp[ri, pi] = False
        wc[ri, pi] = 0.0
        eps[ok] = eps_new[ok]
    return wc.to(dense.dtype), kp


def _times(a: torch.Tensor, h: torch.Tensor, slab: int = 1024) -> torch.Tensor:
    """a @ h in float64 for a float64 ``a`` (out, in) and a float32 ``h`` (in, in), widening ``slab`` columns of
    ``h`` at a time instead of all of it."""
    out = torch.empty(a.shape[0], h.shape[1], dtype=torch.float64)
    for j in range(0, h.shape[1], slab):
        out[:, j : j + slab] = a @ h[:, j : j + slab].double()
    return out


def _guard(wd, wc, h, grad, ri, gi, pi) -> torch.Tensor:
    """For k candidate swaps (rows ri (k, R, 1), grown columns gi and pruned columns pi (k, 1, C)): whether
    each lowers the summed exact error of its rows; accepted ones are applied to ``grad`` in place."""
    cols = torch.cat([gi, pi], -1)  # (k, 1, 2C)
    rows = ri.expand(-1, -1, cols.shape[-1])  # (k, R, 2C)
    ccols = cols.expand_as(rows)
    # change of (W - W') on those entries: grown weights stop erring by W, pruned ones start erring by W'
    d = torch.cat([-wd[ri.expand(-1, -1, gi.shape[-1]), gi.expand(-1, ri.shape[1], -1)],
                   wc[ri.expand(-1, -1, pi.shape[-1]), pi.expand(-1, ri.shape[1], -1)]], -1)  # (k, R, 2C)
    hsub = h[cols.squeeze(1)[:, :, None], cols.squeeze(1)[:, None, :]].double()  # (k, 2C, 2C)
    change = 2 * (d * grad[rows, ccols]).sum(-1) + torch.einsum("krc,kcd,krd->kr", d, hsub, d)  # (k, R)
    good = change.sum(-1) < 0
    if bool(good.any()):
        upd = torch.einsum("krc,kcn->krn", d[good], h[cols.squeeze(1)[good]].double())  # (k', R, in)
        grad.index_put_((ri[good].squeeze(-1).reshape(-1),), upd.reshape(-1, h.shape[0]), accumulate=True)
    return good


def _nm_cycle(wd: torch.Tensor, wc: torch.Tensor, kp: torch.Tensor, eps: torch.Tensor, mu: torch.Tensor, m: int,
              active: torch.Tensor, h: torch.Tensor | None = None, grad: torch.Tensor | None = None) -> bool:
    """One N:M swap per active row, in place: the pair (pruned j, kept k) of one group that minimises
    |eps - W_rj mu_j + W'_rk mu_k|, if it beats |eps|. Returns whether any row swapped."""
    out, inp = wd.shape
    grow = (wd * mu).reshape(out, inp // m, m)  # (out, G, M) error removed by reviving j
    drop = (wc * mu).reshape(out, inp // m, m)  # (out, G, M) error added by pruning k
    k3 = kp.reshape(out, inp // m, m)
    e = eps[:, 0].reshape(out, 1, 1, 1)
    new = e - grow.unsqueeze(-1) + drop.unsqueeze(-2)  # (out, G, j, k)
    valid = (~k3).unsqueeze(-1) & k3.unsqueeze(-2)
    score = torch.where(valid, new.abs(), torch.full_like(new, float("inf"))).reshape(out, -1)
    best = score.argmin(1)  # (out,)
    ok = active & (score.gather(1, best[:, None]).squeeze(1) < eps[:, 0].abs() - 1e-12)
    active &= ok
    if not bool(ok.any()):
        return False
    rows = torch.nonzero(ok).squeeze(1)
    b = best[rows]
    gidx, j, k = b // (m * m), (b // m) % m, b % m
    jc, kc = gidx * m + j, gidx * m + k
    if h is not None:
        good = _guard(wd, wc, h, grad, rows[:, None, None], jc[:, None, None], kc[:, None, None])
        active[rows[~good]] = False
        rows, b, jc, kc = rows[good], b[good], jc[good], kc[good]
        if rows.numel() == 0:
            return bool(active.any())
    kp[rows, jc] = True
    wc[rows, jc] = wd[rows, jc]
    kp[rows, kc] = False
    wc[rows, kc] = 0.0
    eps[rows, 0] = new.reshape(out, -1)[rows, b]
    return True
