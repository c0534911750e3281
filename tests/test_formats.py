"""Packed formats: the exact stored layout on hand-computed cases, lossless round trips on odd shapes,
and validation that rejects inconsistent tensors."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsa.formats import BitmaskWeight, BsrWeight, FormatError, NMWeight, pack
from sparsa.formats.bits import pack_bits, unpack_bits
from sparsa.structure import Block

from helpers import sparse_weight


def test_bsr_layout_hand_computed():
    w = torch.tensor(
        [
            [1.0, 0.0, 0.0, 5.0],
            [2.0, 0.0, 0.0, 6.0],
            [0.0, 0.0, 7.0, 0.0],
            [0.0, 0.0, 8.0, 0.0],
        ]
    )
    p = pack(w, "2x1")
    assert isinstance(p, BsrWeight)
    assert p.row_ptr.tolist() == [0, 2, 3]
    assert p.col_idx.dtype == torch.uint16 and p.col_idx.tolist() == [0, 3, 2]
    assert p.values.tolist() == [1.0, 2.0, 5.0, 6.0, 7.0, 8.0]
    assert torch.equal(p.to_dense(), w)
    assert p.nbytes == 6 * 4 + 3 * 8 + 3 * 2


def test_bsr_1x2_values_are_row_major_tiles():
    w = torch.tensor([[0.0, 0.0, 1.0, 2.0], [3.0, 4.0, 0.0, 0.0]])
    p = pack(w, "1x2")
    assert p.row_ptr.tolist() == [0, 1, 2] and p.col_idx.tolist() == [1, 0]
    assert p.values.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_bsr_uses_int32_indices_past_65536_block_columns():
    w = torch.zeros(2, 65538)
    w[:, 65537] = 1.0
    b = BsrWeight.pack(w, Block(2, 1))
    assert b.col_idx.dtype == torch.int32 and b.col_idx.tolist() == [65537]
    assert torch.equal(b.to_dense(), w)


def test_bitmask_layout_hand_computed():
    w = torch.zeros(2, 70)
    w[0, 0], w[0, 3], w[0, 64], w[1, 69] = 1.0, 2.0, 3.0, 4.0
    p = pack(w, "unstructured")
    assert p.mask.dtype == torch.uint64 and tuple(p.mask.shape) == (2, 2)
    words = p.mask.view(torch.int64).tolist()
    assert words == [[0b1001, 1], [0, 1 << 5]]
    assert p.values.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert p.row_ptr.tolist() == [0, 3, 4]
    # byte-for-byte numpy.packbits(little) padded to 8 bytes per row
    ref = np.packbits(np.pad(w.numpy() != 0, ((0, 0), (0, 58))), axis=1, bitorder="little")
    assert p.mask.numpy().view(np.uint8).reshape(2, 16).tolist() == ref.tolist()


def test_csr_layout_hand_computed():
    w = torch.tensor([[0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    p = pack(w, "unstructured", format="csr")
    assert p.format_name == "csr"
    assert p.row_ptr.tolist() == [0, 2, 2, 3]
    assert p.col_idx.dtype == torch.uint16 and p.col_idx.tolist() == [1, 3, 0]
    assert p.values.tolist() == [2.0, 3.0, 5.0]
    assert torch.equal(p.to_dense(), w)
    with pytest.raises(FormatError, match="does not hold structure '4x1'; allowed: bsr"):
        pack(torch.zeros(4, 4), "4x1", format="csr")


def test_nm_layout_hand_computed_and_fills_short_groups():
    w = torch.tensor([[0.0, 3.0, 0.0, 4.0, 0.0, 0.0, 0.0, 9.0]])
    p = pack(w, "2:4")
    assert isinstance(p, NMWeight)
    # group 2 has one nonzero: its first zero (column 4) is kept as a stored zero
    assert unpack_bits(p.mask, 8).tolist() == [[False, True, False, True, True, False, False, True]]
    assert p.values.tolist() == [3.0, 4.0, 0.0, 9.0]
    assert torch.equal(p.to_dense(), w)


def test_nm_rejects_a_weight_that_is_not_nm():
    w = torch.ones(2, 8)
    w[1, 4:7] = 0
    with pytest.raises(FormatError, match=r"not 2:4 sparse: row 0, columns 0..3 hold 4 nonzeros"):
        pack(w, "2:4")


def test_bits_round_trip_odd_widths():
    g = torch.Generator().manual_seed(1)
    for cols in (1, 7, 63, 64, 65, 130):
        m = torch.rand(3, cols, generator=g) > 0.5
        assert torch.equal(unpack_bits(pack_bits(m), cols), m)


@settings(max_examples=50, deadline=None)
@given(
    spec=st.sampled_from(["unstructured", "csr", "2:4", "4:8", "1:4", "4x1", "8x1", "1x4", "2x2", "3x5"]),
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.9, 0.99]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip(spec, rows, cols, sparsity, dtype, seed):
    from sparsa.structure import parse_structure

    fmt = "csr" if spec == "csr" else None
    spec = "unstructured" if spec == "csr" else spec
    s = parse_structure(spec)
    r = getattr(s, "rows", 1)
    c = getattr(s, "cols", getattr(s, "m", 1))
    g = torch.Generator().manual_seed(seed)
    w = sparse_weight(rows * r, cols * c, spec, None if ":" in spec else sparsity, g).to(dtype)
    p = pack(w, spec, dtype, format=fmt)
    p.validate()
    assert p.values.dtype == dtype
    assert torch.equal(p.to_dense(), w)
    assert p.nonzeros == int((w != 0).sum())


def _corrupt(p, **fields):
    return dataclasses.replace(p, **fields)


def test_validation_catches_inconsistent_tensors():
    g = torch.Generator().manual_seed(0)
    b = pack(sparse_weight(8, 8, "4x1", 0.5, g), "4x1")
    b.validate()
    bad_rp = b.row_ptr.clone()
    bad_rp[1] = bad_rp[2] + 1
    with pytest.raises(FormatError, match="row_ptr"):
        _corrupt(b, row_ptr=bad_rp).validate()
    bad_col = b.col_idx.clone()
    bad_col[0] = 8
    with pytest.raises(FormatError, match="out of order or out of range"):
        _corrupt(b, col_idx=bad_col).validate()
    with pytest.raises(FormatError, match="values"):
        _corrupt(b, values=b.values[:-1].contiguous()).validate()

    u = pack(sparse_weight(4, 70, "unstructured", 0.5, g), "unstructured")
    u.validate()
    m = u.mask.clone().view(torch.int64)
    m[0, 1] |= 1 << 10  # a bit past column 69
    with pytest.raises(FormatError, match="past in_features"):
        _corrupt(u, mask=m.view(torch.uint64)).validate()
    with pytest.raises(FormatError, match="row_ptr"):
        _corrupt(u, row_ptr=torch.zeros(5, dtype=torch.int64)).validate()

    n = pack(sparse_weight(2, 8, "2:4", None, g), "2:4")
    n.validate()
    m = n.mask.clone().view(torch.int64)
    m[0, 0] |= 0b1111
    with pytest.raises(FormatError, match="keeps 4 weights, N:M needs exactly 2"):
        _corrupt(n, mask=m.view(torch.uint64)).validate()


@pytest.mark.parametrize("spec, fmt", [("4x1", None), ("unstructured", None), ("unstructured", "csr"), ("2:4", None)])
def test_from_tensors_round_trip_and_rejects_missing(spec, fmt):
    from sparsa.formats import FORMATS
    from sparsa.structure import parse_structure

    st_ = parse_structure(spec)
    p = pack(sparse_weight(8, 16, spec, None if spec == "2:4" else 0.5, torch.Generator().manual_seed(0)), st_,
             format=fmt)
    cls = FORMATS[p.format_name]
    q = cls.from_tensors(p.shape, st_, p.tensors())
    assert torch.equal(q.to_dense(), p.to_dense())
    t = p.tensors()
    t.pop("values")
    with pytest.raises(FormatError, match="missing values"):
        cls.from_tensors(p.shape, st_, t)
