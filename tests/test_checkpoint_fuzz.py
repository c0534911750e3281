"""Fuzzing the decoder (hypothesis): random and mutated checkpoints either load exactly the original tensors or
raise CheckpointError; nothing else (no other exception, no crash, no wrong data).

Four kinds of input: byte-level mutations of any file; random JSON as the index; random edits of index fields;
and random tensor contents with the checksums fixed up, which gets past the integrity layer to the formats'
structural validation: any weight that validation accepts must then run through the C++ kernel without crashing
and agree with the format's plain-PyTorch reference.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from sparsa.checkpoint import CheckpointError, load, read_checkpoint, save
from sparsa.checkpoint.integrity import checksum
from sparsa.nn import SparseLinear

from checkpoint_helpers import INDEX, mixed_model
from helpers import assert_close_to_reference

FUZZ = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow], database=None)


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The files of a clean checkpoint (every format, several shards) and what reading it gives."""
    out = save(mixed_model(), tmp_path_factory.mktemp("fuzz") / "seed", max_shard_size="20KB")
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    ck = read_checkpoint(out)
    packed = {m: {k: t.clone() for k, t in p.tensors().items()} for m, p in ck.packed.items()}
    dense = {k: t.clone() for k, t in ck.tensors.items()}
    return files, packed, dense


def read_mutated(files: dict[str, bytes]):
    """Write ``files`` to a fresh folder and read it: the checkpoint, or the CheckpointError."""
    d = Path(tempfile.mkdtemp(prefix="sparsa-fuzz-"))
    try:
        for name, data in files.items():
            (d / name).write_bytes(data)
        try:
            return read_checkpoint(d)
        except CheckpointError as e:
            assert str(e)  # one message, naming at least the file
            event(_kind(str(e)))
            return e
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _kind(message: str) -> str:
    """A coarse label of an error message, for hypothesis' statistics (which checks the inputs reach)."""
    for k in ("checksum mismatch", "truncated", "longer than written", "not a valid safetensors", "invalid index",
              "not a valid index", "format version", "bsr:", "bitmask:", "nm:", "missing", "the index says"):
        if k in message:
            return k
    return "other: " + message.split(": ")[-1][:40]


def assert_original(ck, packed, dense) -> None:
    """A checkpoint that reads without error holds exactly the original tensors."""
    assert set(ck.packed) == set(packed) and set(ck.tensors) == set(dense)
    for m, tensors in packed.items():
        for k, t in ck.packed[m].tensors().items():
            assert t.dtype == tensors[k].dtype and torch.equal(t, tensors[k]), (m, k)
    for k, t in ck.tensors.items():
        assert t.dtype == dense[k].dtype and torch.equal(t, dense[k]), k


# ---- byte-level mutations of any file ----

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**31), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 2**31), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**31), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 2**31), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 2**31), st.integers(1, 64)),
)


def apply(data: bytes, op) -> bytes:
    kind, pos, arg = op
    if not data:
        return bytes([arg]) if kind in ("set", "insert") else data
    pos %= len(data)
    b = bytearray(data)
    if kind == "flip":
        b[pos] ^= arg
    elif kind == "set":
        b[pos] = arg
    elif kind == "truncate":
        del b[pos:]
    elif kind == "insert":
        b.insert(pos, arg)
    else:
        del b[pos : pos + arg]
    return bytes(b)


@FUZZ
@given(data=st.data())
def test_mutated_bytes_never_crash_nor_load_wrong_data(seed, data):
    files, packed, dense = seed
    files = dict(files)
    for _ in range(data.draw(st.integers(1, 4))):
        name = data.draw(st.sampled_from(sorted(n for n in files if n != "config.json")))
        files[name] = apply(files[name], data.draw(mutation))
    r = read_mutated(files)
    if not isinstance(r, CheckpointError):
        assert_original(r, packed, dense)


# ---- random JSON as the index ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(index=json_values)
def test_random_json_index_is_an_error(seed, index):
    files = dict(seed[0])
    files[INDEX] = json.dumps(index).encode()
    assert isinstance(read_mutated(files), CheckpointError)


# ---- random edits of the index's fields ----

def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_edited_index_fields_never_crash_nor_load_wrong_data(seed, data):
    files, packed, dense = seed
    index = json.loads(files[INDEX])
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(list(paths(index))[1:]))
        new = data.draw(json_values | st.integers(-3, 70000) | st.sampled_from(["U16", "I64", "F32", "BF16", "4x1", "2:4"]))
        parent = index
        for p in where[:-1]:
            parent = parent[p]
        if data.draw(st.booleans()) or not isinstance(parent, dict):
            parent[where[-1]] = new
        else:  # rename the key instead: tensors and modules that vanish or move
            parent[str(new)] = parent.pop(where[-1])
    files = dict(files)
    files[INDEX] = json.dumps(index).encode()
    r = read_mutated(files)
    if not isinstance(r, CheckpointError):
        assert_original(r, packed, dense)


# ---- random tensor contents behind valid checksums: the formats' validation must hold ----

@FUZZ
@given(data=st.data())
def test_random_packed_tensors_are_rejected_or_run_correctly(seed, data):
    files, packed, _ = seed
    files = dict(files)
    index = json.loads(files[INDEX])
    module = data.draw(st.sampled_from(sorted(packed)))
    tname = data.draw(st.sampled_from(sorted(packed[module])))
    key = f"{module}.{tname}"
    fname = index["weight_map"][key]
    d = Path(tempfile.mkdtemp(prefix="sparsa-fuzz-"))
    try:
        (d / fname).write_bytes(files[fname])
        tensors = load_file(d / fname)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    t = tensors[key]
    n = data.draw(st.integers(0, t.numel() + 3) if data.draw(st.booleans()) else st.just(t.numel()))
    if t.is_floating_point():
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**32)))
        new = (torch.randn(n, generator=g) * data.draw(st.sampled_from([1e-3, 1.0, 1e30]))).to(t.dtype)
        for i, v in data.draw(st.lists(st.tuples(st.integers(0, max(0, n - 1)), st.sampled_from(
                [float("inf"), float("-inf"), float("nan"), 0.0, -0.0])), max_size=3)):
            if n:
                new[i] = v
    else:
        info = torch.iinfo(torch.int64 if t.dtype == torch.uint64 else t.dtype)
        edits = data.draw(st.lists(st.tuples(st.integers(0, max(0, n - 1)), st.integers(info.min, info.max)),
                                   min_size=1, max_size=6))
        base = t.reshape(-1).repeat(n // max(1, t.numel()) + 1)[:n].clone()  # n values, from the original ones
        as_int = base.view(torch.int64) if t.dtype == torch.uint64 else base
        for i, v in edits:
            if n:
                as_int[i] = v
        new = base
    if t.dim() == 2 and n == t.numel():
        new = new.reshape(t.shape)
    tensors[key] = new.contiguous()
    d = Path(tempfile.mkdtemp(prefix="sparsa-fuzz-"))
    try:
        save_file(tensors, d / fname, metadata={"format": "pt"})
        blob = (d / fname).read_bytes()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    files[fname] = blob
    entry = index["sparsa"]["tensors"][key]
    old_bytes = 1
    for s in entry["shape"]:
        old_bytes *= s
    index["metadata"]["total_size"] += (new.numel() - old_bytes) * new.element_size()
    entry.update(shape=list(new.shape), checksum=checksum(new.contiguous()))
    index["sparsa"]["files"][fname]["bytes"] = len(blob)
    files[INDEX] = json.dumps(index).encode()

    r = read_mutated(files)
    if isinstance(r, CheckpointError):
        return
    event("accepted by validation")
    p = r.packed[module]  # validation accepted it: the kernel must run it and agree with the reference
    x = torch.randn(3, p.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y = SparseLinear(p)(x)
    ref = p.reference_matmul(x)
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())
    finite = ref.isfinite()
    y, ref = torch.where(finite, y, 0), torch.where(finite, ref, 0)
    assert_close_to_reference(y, x, torch.where(p.to_dense().isfinite(), p.to_dense(), 0), None, ref)


# ---- the model loader on top of the decoder ----

@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=st.data())
def test_load_of_mutated_checkpoint_is_a_model_or_one_error(seed, data):
    files, _, _ = seed
    files = dict(files)
    name = data.draw(st.sampled_from(sorted(files)))
    files[name] = apply(files[name], data.draw(mutation))
    d = Path(tempfile.mkdtemp(prefix="sparsa-fuzz-"))
    try:
        for n, b in files.items():
            (d / n).write_bytes(b)
        try:
            model = load(d)
        except CheckpointError:
            return
        ref = load_reference()
        x = torch.randint(0, 120, (1, 5))
        with torch.inference_mode():
            torch.testing.assert_close(model(input_ids=x).last_hidden_state, ref(input_ids=x).last_hidden_state)
    finally:
        shutil.rmtree(d, ignore_errors=True)


_REF = []


def load_reference():
    if not _REF:
        _REF.append(mixed_model().eval())
    return _REF[0]
