"""Masks: exact on hand-computed cases, and exact counts / top-k order as properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsa import masks
from sparsa.masks import mask_by_rows, mask_from_scores, zero_pruned_
from sparsa.structure import StructureError

T, F = True, False


def test_unstructured_tensor_scope_hand_computed():
    s = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.8]])
    # 50% of 6 = 3 pruned: 0.1, 0.2, 0.3
    assert mask_from_scores(s, "unstructured", 0.5).tolist() == [[F, T, F], [T, F, T]]


def test_unstructured_row_scope_hand_computed():
    s = torch.tensor([[0.1, 0.9, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]])
    # per row, 2 of 4 pruned
    assert mask_from_scores(s, "unstructured", 0.5, scope="row").tolist() == [[F, T, F, T], [F, F, T, T]]
    # tensor scope prunes the whole first row instead
    assert mask_from_scores(s, "unstructured", 0.5).tolist() == [[F, F, F, F], [T, T, T, T]]


def test_ties_prune_earlier_position_first():
    s = torch.ones(1, 4)
    assert mask_from_scores(s, "unstructured", 0.5).tolist() == [[F, F, T, T]]
    assert mask_from_scores(s, "2:4").tolist() == [[T, T, F, F]]


def test_nm_2_4_hand_computed():
    s = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0]])
    assert mask_from_scores(s, "2:4").tolist() == [[T, F, T, F, F, T, T, F]]


def test_nm_1_3_hand_computed():
    s = torch.tensor([[1.0, 3.0, 2.0, 6.0, 5.0, 4.0]])
    assert mask_from_scores(s, "1:3").tolist() == [[F, T, F, T, F, F]]


def test_block_4x1_hand_computed():
    # 8 x 2 weight: block-rows of 4; block scores = column sums within each block-row
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 9.0], [0.1, 1.0], [0.1, 1.0], [0.1, 1.0], [0.1, 1.0]])
    # block scores: [[4, 9], [0.4, 4]] -> prune 50% = 2 lowest: 0.4 and 4 (first 4 at position 0 wins the tie)
    m = mask_from_scores(s, "4x1", 0.5)
    expected = torch.zeros(8, 2, dtype=torch.bool)
    expected[0:4, 1] = True  # score 9
    expected[4:8, 1] = True  # score 4 (the later of the two 4s)
    assert m.tolist() == expected.tolist()


def test_block_1x4_hand_computed():
    s = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0]])
    # block scores [[4, 8], [5, 0]] -> keep the top 2: 8 and 5
    m = mask_from_scores(s, "1x4", 0.5)
    assert m.tolist() == [[F] * 4 + [T] * 4, [T] * 4 + [F] * 4]


def test_zero_sparsity_keeps_everything():
    s = torch.rand(8, 8)
    for spec in ("unstructured", "4x1", "1x4"):
        assert bool(mask_from_scores(s, spec, 0.0).all())


def test_errors():
    with pytest.raises(StructureError, match="multiple of 4"):
        mask_from_scores(torch.rand(3, 6), "2:4")
    with pytest.raises(StructureError, match="do not tile"):
        mask_from_scores(torch.rand(6, 4), "4x1", 0.5)
    with pytest.raises(StructureError, match="scope"):
        mask_from_scores(torch.rand(4, 4), "unstructured", 0.5, scope="column")
    with pytest.raises(StructureError, match="NaN"):
        mask_from_scores(torch.tensor([[float("nan"), 1.0]]), "unstructured", 0.5)
    with pytest.raises(StructureError, match=r"\[0, 1\)"):
        mask_from_scores(torch.rand(4, 4), "unstructured", 1.0)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 40),
    sparsity=st.floats(0, 0.99),
    scope=st.sampled_from(["tensor", "row"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_unstructured_exact_count_and_order(rows, cols, sparsity, scope, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(rows, cols, generator=g).abs()
    m = mask_from_scores(s, "unstructured", sparsity, scope=scope)
    if scope == "tensor":
        assert int((~m).sum()) == round(sparsity * rows * cols)
        if m.any() and (~m).any():
            assert s[m].min() >= s[~m].max()
    else:
        k = round(sparsity * cols)
        assert ((~m).sum(1) == k).all()
        for r in range(rows):
            if m[r].any() and (~m[r]).any():
                assert s[r][m[r]].min() >= s[r][~m[r]].max()


@settings(max_examples=40, deadline=None)
@given(n_m=st.sampled_from([(1, 2), (2, 4), (1, 4), (4, 8), (3, 7), (5, 32)]), rows=st.integers(1, 6),
       groups=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_nm_property(n_m, rows, groups, seed):
    n, m = n_m
    s = torch.randn(rows, groups * m, generator=torch.Generator().manual_seed(seed))
    keep = mask_from_scores(s, f"{n}:{m}").reshape(rows, groups, m)
    sg = s.reshape(rows, groups, m)
    assert (keep.sum(-1) == n).all()
    kept_min = torch.where(keep, sg, torch.full_like(sg, float("inf"))).amin(-1)
    pruned_max = torch.where(~keep, sg, torch.full_like(sg, -float("inf"))).amax(-1)
    assert (kept_min >= pruned_max).all()


@settings(max_examples=40, deadline=None)
@given(block=st.sampled_from([(4, 1), (8, 1), (1, 4), (2, 2), (3, 5)]), br=st.integers(1, 5), bc=st.integers(1, 6),
       sparsity=st.floats(0, 0.95), seed=st.integers(0, 2**31 - 1))
def test_block_property(block, br, bc, sparsity, seed):
    r, c = block
    s = torch.rand(br * r, bc * c, generator=torch.Generator().manual_seed(seed))
    keep = mask_from_scores(s, f"{r}x{c}", sparsity)
    kb = keep.reshape(br, r, bc, c)
    # every block is all-kept or all-pruned, and the count of pruned blocks is exact
    assert (kb.all(dim=3).all(dim=1) == kb.any(dim=3).any(dim=1)).all()
    assert int((~kb.any(dim=3).any(dim=1)).sum()) == round(sparsity * br * bc)


@given(rows=st.integers(1, 30), cols=st.integers(1, 30), sparsity=st.floats(0.0, 0.999), levels=st.integers(1, 6),
       scope=st.sampled_from(["tensor", "row"]), seed=st.integers(0, 2**16))
@settings(max_examples=80, deadline=None)
def test_selection_equals_a_stable_full_sort(rows, cols, sparsity, levels, scope, seed):
    """The threshold rule (tensor) and the row chunks (row, a chunk of a few rows forced) prune exactly what a
    stable ascending argsort of the whole matrix prunes, ties included (few score levels = many ties)."""
    from sparsa import masks

    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, levels, (rows, cols), generator=g).float() + 0.5 * torch.rand(rows, cols, generator=g) * (
        levels > 4)
    ref = torch.ones(rows * cols if scope == "tensor" else (rows, cols), dtype=torch.bool)
    if scope == "tensor":
        k = int(round(sparsity * rows * cols))
        ref[torch.argsort(s.reshape(-1), stable=True)[:k]] = False
        ref = ref.view(rows, cols)
    else:
        k = int(round(sparsity * cols))
        ref.scatter_(1, torch.argsort(s, dim=1, stable=True)[:, :k], False)
    old = masks._CHUNK
    masks._CHUNK = 2 * cols  # two rows per chunk
    try:
        got = mask_from_scores(s, "unstructured", sparsity, scope=scope)
    finally:
        masks._CHUNK = old
    assert torch.equal(got, ref)


@settings(max_examples=40, deadline=None)
@given(structure=st.sampled_from(["unstructured", "2:4", "4:8", "4x1", "2x2", "1x4"]),
       scope=st.sampled_from(["row", "tensor"]), brows=st.integers(1, 9), bcols=st.integers(1, 5),
       sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.75]), chunk=st.integers(1, 64), seed=st.integers(0, 99))
def test_mask_by_rows_equals_the_whole_matrix_rule(structure, scope, brows, bcols, sparsity, chunk, seed):
    """Scores made a slice of rows at a time give the mask of the whole matrix, for every structure and
    scope, whatever the chunk size (tiny chunks here, so that most cases span many chunks)."""
    rows, cols = 4 * brows, 8 * bcols  # divisible by every block and group above
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (rows, cols), generator=g).float()  # many ties: the order rule must hold too
    sp = None if ":" in structure else sparsity
    asked = []

    def scores_of(r):
        asked.append(r)
        return scores[r]

    old = masks._CHUNK
    masks._CHUNK = chunk
    try:
        got = mask_by_rows(scores_of, (rows, cols), structure, sp, scope)
    finally:
        masks._CHUNK = old
    assert torch.equal(got, mask_from_scores(scores, structure, sp, scope))
    if scope == "row" or ":" in structure:  # row-local rules: never the whole matrix at once unless it fits
        assert all(r.stop - r.start <= max(4, chunk) for r in asked) or rows * cols <= chunk


def test_mask_by_rows_errors_name_the_allowed_values():
    with pytest.raises(StructureError, match="allowed values are tensor, row"):
        mask_by_rows(lambda r: torch.ones(4, 4)[r], (4, 4), "unstructured", 0.5, "column")
    with pytest.raises(StructureError, match="scores"):
        mask_by_rows(lambda r: torch.ones(3, 4)[r], (3, 4), "4x1", 0.5, "row")


@pytest.mark.parametrize("shape", [(3, 5), (700, 3000), (0, 4)])
def test_zero_pruned_in_place_equals_the_product_with_the_mask(shape, monkeypatch):
    """Chunked in-place zeroing (several chunks at (700, 3000)) equals w * keep, also on a transposed view
    (GPT-2's Conv1D weights are pruned through one), and writes into the tensor it is given."""
    g = torch.Generator().manual_seed(1)
    for transposed in (False, True):
        base = torch.randn(shape[::-1] if transposed else shape, generator=g)
        w = base.t() if transposed else base
        keep = torch.rand(shape, generator=g) > 0.4
        expected = w * keep
        assert zero_pruned_(w, keep) is w
        assert torch.equal(w, expected)
        assert torch.equal(base.t() if transposed else base, expected)  # the storage itself was written
