"""The packed checkpoint on disk: byte layouts checked by hand against the safetensors spec, lossless round trips
for every registered format and value dtype, sharding, and bytes on disk against each format's layout."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
import xxhash

import sparsa
from sparsa.checkpoint import CheckpointError, load, read_checkpoint, save
from sparsa.formats import FORMATS, format_for, preferred_format
from sparsa.nn import SparseLinear

from checkpoint_helpers import INDEX, bits_le, inputs, pruned, raw_bytes, raw_tensors, small_bert

# One (structure, sparsity) per registered format at least: a format registered later fails the coverage test
# until listed. sparsify packs unstructured weights as a bitmask below CSR_FROM_SPARSITY and as CSR above it.
STRUCTURES = ["unstructured", "2:4", "4x1", "1x4", "8x1", "2x2", "unstructured@0.9"]


def _case(spec: str) -> tuple[str, float]:
    structure, _, sp = spec.partition("@")
    return structure, float(sp or 0.6)
DTYPES = [torch.float32, torch.bfloat16]
Q = "encoder.layer.0.attention.self.query"


def test_every_registered_format_is_covered():
    formats = {preferred_format(sparsa.parse_structure(st), sp).format_name for st, sp in map(_case, STRUCTURES)}
    assert formats == set(FORMATS)


def _set_weight(model, name, w, structure):
    m = model.get_submodule(name)
    with torch.no_grad():
        m.weight.copy_(w)
    m.sparsa_structure = structure


def test_bsr_bytes_hand_computed(tmp_path):
    model = small_bert()
    w = torch.zeros(64, 64)
    w[0:4, 3] = torch.tensor([1.0, 2, 3, 4])
    w[4:8, 0] = torch.tensor([5.0, 6, 7, 8])
    w[4:8, 63] = torch.tensor([9.0, 10, 11, 12])
    _set_weight(model, Q, w, "4x1")
    out = save(model, tmp_path / "ck")  # a dense module marked by prune is packed on save

    dt, shape, b = raw_bytes(out, f"{Q}.row_ptr")
    assert (dt, shape) == ("I64", [17]) and b == struct.pack("<17q", 0, 1, 3, *[3] * 14)
    dt, shape, b = raw_bytes(out, f"{Q}.col_idx")
    assert (dt, shape) == ("U16", [3]) and b == struct.pack("<3H", 3, 0, 63)
    dt, shape, b = raw_bytes(out, f"{Q}.values")
    assert (dt, shape) == ("F32", [12]) and b == struct.pack("<12f", *range(1, 13))
    entry = json.loads((out / INDEX).read_text())["sparsa"]
    assert entry["modules"][Q] == {"format": "bsr", "structure": "4x1", "shape": [64, 64], "dtype": "float32",
                                   "method": None}
    assert entry["tensors"][f"{Q}.values"]["checksum"] == xxhash.xxh3_64_hexdigest(b)
    assert f"{Q}.weight" not in json.loads((out / INDEX).read_text())["weight_map"]


def test_bitmask_bytes_hand_computed_bf16(tmp_path):
    model = small_bert(hidden=64, inter=100)  # in=100 for output.dense: mask rows padded to 128 bits
    name = "encoder.layer.1.output.dense"
    w = torch.zeros(64, 100)
    w[0, 0], w[0, 3], w[1, 99], w[63, 64] = 1.0, 2.0, -3.0, 0.5
    _set_weight(model, name, w, "unstructured")
    model.to(torch.bfloat16)
    out = save(model, tmp_path / "ck")

    dt, shape, b = raw_bytes(out, f"{name}.mask")
    assert (dt, shape) == ("U64", [64, 2]) and b == bits_le(w.numpy() != 0)
    words = np.frombuffer(b, dtype="<u8").reshape(64, 2)
    assert words[0].tolist() == [0b1001, 0] and words[1].tolist() == [0, 1 << 35] and words[63].tolist() == [0, 1]
    dt, shape, b = raw_bytes(out, f"{name}.values")
    # bfloat16 is the upper half of the float32 bit pattern: 1.0 -> 0x3F80, 2.0 -> 0x4000, -3.0 -> 0xC040, 0.5 -> 0x3F00
    assert (dt, shape) == ("BF16", [4]) and b == struct.pack("<4H", 0x3F80, 0x4000, 0xC040, 0x3F00)
    dt, shape, b = raw_bytes(out, f"{name}.row_ptr")
    assert (dt, shape) == ("I64", [65]) and b == struct.pack("<65q", 0, 2, *[3] * 62, 4)


def test_nm_bytes_hand_computed(tmp_path):
    model = small_bert()
    w = torch.zeros(64, 64)
    w[0, :8] = torch.tensor([0.0, 3, 0, 4, 0, 0, 0, 9])
    _set_weight(model, Q, w, "2:4")
    out = save(model, tmp_path / "ck")
    keep = np.zeros((64, 64), dtype=bool)
    keep[:, 0::4] = keep[:, 1::4] = True  # all-zero groups store their first two positions as zeros
    keep[0, :8] = [False, True, False, True, True, False, False, True]
    dt, shape, b = raw_bytes(out, f"{Q}.mask")
    assert (dt, shape) == ("U64", [64, 1]) and b == bits_le(keep)
    dt, shape, b = raw_bytes(out, f"{Q}.values")
    assert (dt, shape) == ("F32", [64 * 32]) and b[:16] == struct.pack("<4f", 3, 4, 0, 9)
    assert b[16:] == bytes(len(b) - 16)


def test_safetensors_file_has_no_padding_between_tensors(tmp_path):
    model = pruned(small_bert(), "4x1", 0.5)
    out = save(model, tmp_path / "ck")
    f = out / "sparsa-model-00001-of-00001.safetensors"
    n, header, data = raw_tensors(f)
    assert (8 + n) % 8 == 0  # the header is padded to 8 bytes, so every 8-byte dtype starts aligned
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] == len(data)
    assert header["__metadata__"] == {"format": "pt"}


@pytest.mark.parametrize("spec", STRUCTURES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
def test_round_trip_is_lossless(tmp_path, spec, dtype):
    structure, sparsity = _case(spec)
    model = pruned(small_bert(hidden=48, inter=104), structure, sparsity, dtype)  # odd widths: padded mask words
    sparse, converted = sparsa.sparsify(model, dtype=dtype)
    expected = preferred_format(sparsa.parse_structure(structure), sparsity).format_name
    assert converted and {c.format for c in converted} == {expected}
    out = save(sparse, tmp_path / "ck", max_shard_size="40KB")
    ck = read_checkpoint(out)
    for c in converted:
        ref = model.get_submodule(c.name).weight.detach()
        p = ck.packed[c.name]
        assert p.value_dtype == dtype and torch.equal(p.to_dense(), ref)  # exactly the pruned weight
        for tn, t in sparse.get_submodule(c.name).packed.tensors().items():
            assert torch.equal(p.tensors()[tn], t) and p.tensors()[tn].dtype == t.dtype
    loaded = load(out)
    assert sum(isinstance(m, SparseLinear) for m in loaded.modules()) == len(converted)
    x = inputs(120)
    with torch.inference_mode():
        ref_out = model.float()(input_ids=x).last_hidden_state if dtype == torch.float32 else None
        got = loaded(input_ids=x).last_hidden_state
    if ref_out is not None:
        torch.testing.assert_close(got, ref_out, rtol=1e-5, atol=1e-5)
    assert loaded.get_submodule(converted[0].name).packed.structure == sparsa.parse_structure(structure)


def test_shards_keep_each_packed_weight_in_one_file(tmp_path):
    model = pruned(small_bert(), "unstructured", 0.5)
    out = save(model, tmp_path / "ck", max_shard_size="30KB")
    index = json.loads((out / INDEX).read_text())
    files = sorted({f for f in index["weight_map"].values()})
    assert len(files) > 3 and files == [f"sparsa-model-{i:05d}-of-{len(files):05d}.safetensors"
                                        for i in range(1, len(files) + 1)]
    for m in index["sparsa"]["modules"]:
        assert len({index["weight_map"][f"{m}.{t}"] for t in ("values", "mask", "row_ptr", "bias")}) == 1
    assert index["metadata"]["total_size"] == sum(
        len(raw_bytes(out, k)[2]) for k in index["weight_map"])
    assert {f: (out / f).stat().st_size for f in files} == {f: e["bytes"] for f, e in index["sparsa"]["files"].items()}
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", INDEX, *files])


def _layout_bytes(w: torch.Tensor, structure: str, es: int) -> int:
    """The documented layout's bytes (docs/FORMAT.md), counted from the dense weight alone."""
    out, inp = w.shape
    st = sparsa.parse_structure(structure)
    nz = w != 0
    words = (inp + 63) // 64
    if isinstance(st, sparsa.NM):
        return out * inp * st.n // st.m * es + out * words * 8
    if isinstance(st, sparsa.Block):
        r, c = st.rows, st.cols
        nnzb = int(nz.reshape(out // r, r, inp // c, c).any(dim=3).any(dim=1).sum())
        return nnzb * r * c * es + (out // r + 1) * 8 + nnzb * 2
    return out * words * 8 + int(nz.sum()) * es + (out + 1) * 8


@pytest.mark.parametrize("structure, sparsity", [("unstructured", 0.5), ("unstructured", 0.9), ("4x1", 0.7),
                                                 ("2:4", None), ("1x4", 0.9)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
def test_bytes_on_disk_within_5_percent_of_the_layout(tmp_path, structure, sparsity, dtype):
    model = pruned(small_bert(hidden=256, inter=1024, layers=2), structure, sparsity, dtype)
    es = torch.empty((), dtype=dtype).element_size()
    names = [n for n, m in model.named_modules() if getattr(m, "sparsa_structure", None)]
    layout = sum(_layout_bytes(model.get_submodule(n).weight, structure, es) for n in names)
    dense_weights = sum(model.get_submodule(n).weight.numel() * es for n in names)
    out = save(model, tmp_path / "ck")
    disk = sum(f.stat().st_size for f in out.glob("*.safetensors")) + (out / INDEX).stat().st_size
    ck = read_checkpoint(out)
    assert sorted(ck.packed) == sorted(names)
    rest = sum(t.numel() * t.element_size() for t in ck.tensors.values())  # the dense tensors, as stored
    # everything on disk that is not a dense tensor: packed tensors plus all header, index and shard overhead
    packed_disk = disk - rest
    assert layout <= packed_disk <= 1.05 * layout, (packed_disk, layout)
    if (structure, sparsity, dtype) == ("unstructured", 0.5, torch.bfloat16):
        # the figure: 1/16 mask + 1/2 values = 0.5625x dense bf16; the rest is row_ptr (8 bytes per row)
        # and the headers and index of this small model
        assert 0.5625 <= packed_disk / dense_weights <= 0.5625 * 1.05


def test_save_refuses_a_model_transformers_cannot_rebuild(tmp_path):
    with pytest.raises(CheckpointError, match="class transformers provides"):
        save(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "x")
    assert not (tmp_path / "x").exists()
