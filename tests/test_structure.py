import math

import pytest

from sparsa.structure import NM, Block, StructureError, Unstructured, check_sparsity, parse_structure


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("unstructured", Unstructured()),
        (" Unstructured ", Unstructured()),
        ("2:4", NM(2, 4)),
        ("4:8", NM(4, 8)),
        ("1:32", NM(1, 32)),
        ("31:32", NM(31, 32)),
        ("4x1", Block(4, 1)),
        ("1x4", Block(1, 4)),
        ("16X1", Block(16, 1)),
        ("1x1", Unstructured()),
    ],
)
def test_parse_valid(spec, expected):
    st = parse_structure(spec)
    assert st == expected
    assert parse_structure(str(st)) == st  # str() round-trips


@pytest.mark.parametrize("spec", ["5:4", "4:4", "0:4", "2:64", "0x4", "4x0", "abc", "", "2:4:8", "4x1x1", "x4", "-2:4"])
def test_parse_invalid_names_allowed_forms(spec):
    with pytest.raises(StructureError) as e:
        parse_structure(spec)
    msg = str(e.value)
    assert repr(spec) in msg or spec in msg
    assert "unstructured" in msg and "N:M" in msg and "RxC" in msg


def test_parse_rejects_non_string():
    with pytest.raises(StructureError, match="must be a string"):
        parse_structure(24)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "half", None])
def test_sparsity_outside_range(bad):
    with pytest.raises(StructureError, match=r"\[0, 1\)"):
        check_sparsity(bad)


def test_nm_implies_sparsity():
    st = parse_structure("2:4")
    assert st.resolve_sparsity(None) == 0.5
    assert st.resolve_sparsity(0.5) == 0.5
    with pytest.raises(StructureError, match="implies sparsity 0.5"):
        st.resolve_sparsity(0.7)
    assert math.isclose(parse_structure("1:8").implied_sparsity, 0.875)


def test_unstructured_needs_sparsity():
    with pytest.raises(StructureError, match="needs a sparsity"):
        Unstructured().resolve_sparsity(None)


def test_shape_checks_name_the_weight():
    with pytest.raises(StructureError, match=r"layer\.q.*multiple of 4"):
        NM(2, 4).check_shape((8, 6), "layer.q")
    with pytest.raises(StructureError, match=r"fc.*4x1.*do not tile"):
        Block(4, 1).check_shape((10, 8), "fc")
    Block(4, 1).check_shape((12, 7))
