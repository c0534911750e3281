"""A damaged or mismatched checkpoint is one CheckpointError naming the file and the tensor, never a crash or a
silently wrong model; writes are atomic and never touch the source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sparsa
from sparsa.checkpoint import CheckpointError, load, read_checkpoint, save
from sparsa.checkpoint import writer as writer_module
from sparsa.checkpoint.integrity import checksum, checksum_bytes

from checkpoint_helpers import INDEX, mixed_model, raw_tensors

Q = "encoder.layer.0.attention.self.query"
K = "encoder.layer.1.attention.self.key"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return save(mixed_model(), tmp_path_factory.mktemp("ck") / "clean", max_shard_size="20KB")


@pytest.fixture
def ck(clean, tmp_path) -> Path:
    """A fresh copy of the clean checkpoint to damage."""
    return Path(shutil.copytree(clean, tmp_path / "ck"))


def index_of(ck: Path) -> dict:
    return json.loads((ck / INDEX).read_text())


def write_index(ck: Path, index: dict) -> None:
    (ck / INDEX).write_text(json.dumps(index))


def file_of(ck: Path, key: str) -> Path:
    return ck / index_of(ck)["weight_map"][key]


def edit_config(ck: Path, change, fix_checksum: bool = True) -> None:
    """Change config.json; with ``fix_checksum`` also its checksum in the index (a checkpoint whose config and
    tensors disagree, rather than a corrupted config)."""
    config = json.loads((ck / "config.json").read_text())
    change(config)
    (ck / "config.json").write_text(json.dumps(config))
    if fix_checksum:
        index = index_of(ck)
        index["sparsa"]["config_checksum"] = checksum_bytes((ck / "config.json").read_bytes())
        write_index(ck, index)


def span_of(f: Path, key: str) -> tuple[int, int]:
    """Absolute byte range of a tensor's data in a safetensors file."""
    n, header, _ = raw_tensors(f)
    a, b = header[key]["data_offsets"]
    return 8 + n + a, 8 + n + b


def expect(match: str, fn, *args, file: Path | None = None, tensor: str | None = None):
    with pytest.raises(CheckpointError, match=match) as e:
        fn(*args)
    if file is not None:
        assert str(file) in str(e.value) and e.value.file == str(file)
    if tensor is not None:
        assert f"tensor '{tensor}'" in str(e.value) and e.value.tensor == tensor
    return e.value


def test_clean_checkpoint_loads_and_matches_the_pruned_model(clean):
    model = mixed_model()
    loaded = load(clean)
    kinds = {m.packed.format_name for m in loaded.modules() if isinstance(m, sparsa.SparseLinear)}
    assert kinds == {"bsr", "nm", "bitmask"}
    x = torch.randint(0, 120, (2, 7))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(input_ids=x).last_hidden_state, model(input_ids=x).last_hidden_state,
                                   rtol=1e-5, atol=1e-5)


def test_truncated_shard_names_the_file_and_the_first_cut_tensor(ck):
    f = file_of(ck, f"{Q}.values")
    a, b = span_of(f, f"{Q}.values")
    raw = f.read_bytes()
    f.write_bytes(raw[: (a + b) // 2])
    # every tensor whose bytes end past the cut is lost; the error names the first of them
    n, header, _ = raw_tensors_from_bytes(raw)
    cut = min((v["data_offsets"][1], k) for k, v in header.items()
              if k != "__metadata__" and 8 + n + v["data_offsets"][1] > (a + b) // 2)[1]
    expect("truncated", read_checkpoint, ck, file=f, tensor=cut)


def raw_tensors_from_bytes(raw: bytes):
    import struct

    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8 : 8 + n]), raw[8 + n :]


@pytest.mark.parametrize("key", [f"{Q}.values", f"{Q}.col_idx", f"{K}.mask", "embeddings.word_embeddings.weight"])
def test_one_flipped_bit_in_a_tensor_is_a_checksum_error(ck, key):
    f = file_of(ck, key)
    a, b = span_of(f, key)
    raw = bytearray(f.read_bytes())
    raw[(a + b) // 2] ^= 0x10
    f.write_bytes(bytes(raw))
    expect("checksum mismatch", read_checkpoint, ck, file=f, tensor=key)
    expect("checksum mismatch", load, ck, file=f, tensor=key)


def test_a_damaged_header_is_a_clear_error(ck):
    f = file_of(ck, f"{Q}.values")
    raw = bytearray(f.read_bytes())
    raw[10] = ord("#")  # inside the JSON header
    f.write_bytes(bytes(raw))
    expect("not a valid safetensors file", read_checkpoint, ck, file=f)


def test_header_dtype_changed_is_caught(ck):
    key = f"{Q}.row_ptr"
    f = file_of(ck, key)
    raw = f.read_bytes()
    n, header, data = raw_tensors_from_bytes(raw)
    text = raw[8 : 8 + n].replace(b'"I64"', b'"F64"', 1)  # the same length: the file stays well-formed
    f.write_bytes(raw[:8] + text + data)
    first = [k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "I64"]
    first.sort(key=lambda k: raw[8 : 8 + n].index(k.encode()))
    expect("the index says I64", read_checkpoint, ck, file=f, tensor=first[0])


def _rewrite_shard(ck: Path, f: Path, tensors: dict) -> None:
    save_file(tensors, f, metadata={"format": "pt"})
    index = index_of(ck)
    index["sparsa"]["files"][f.name]["bytes"] = f.stat().st_size
    write_index(ck, index)


def test_missing_tensor_in_the_file(ck):
    key = f"{Q}.col_idx"
    f = file_of(ck, key)
    tensors = load_file(f)
    del tensors[key]
    _rewrite_shard(ck, f, tensors)
    expect("missing from the file", read_checkpoint, ck, file=f, tensor=key)


def test_extra_tensor_in_the_file(ck):
    f = file_of(ck, f"{Q}.values")
    tensors = load_file(f)
    tensors["intruder"] = torch.zeros(3)
    _rewrite_shard(ck, f, tensors)
    expect("in the file but not in the index", read_checkpoint, ck, file=f, tensor="intruder")


def test_missing_file(ck):
    f = file_of(ck, f"{K}.mask")
    f.unlink()
    expect("missing", read_checkpoint, ck, file=f)


def test_shard_swapped_in_from_another_checkpoint(ck, tmp_path):
    other = save(mixed_model(seed=1), tmp_path / "other", max_shard_size="20KB")
    f = file_of(ck, f"{Q}.values")
    g = other / f.name
    if g.stat().st_size == f.stat().st_size:
        shutil.copy(g, f)
        expect("checksum mismatch", read_checkpoint, ck, file=f)
    else:
        shutil.copy(g, f)
        expect("bytes, the index says", read_checkpoint, ck, file=f)


def test_index_shape_differs_from_the_file(ck):
    index = index_of(ck)
    key = f"{K}.values"
    index["sparsa"]["tensors"][key]["shape"] = [7, 8]
    index["metadata"]["total_size"] += (56 - 64 * 32) * 4
    write_index(ck, index)
    expect(r"shape \[2048\], the index says \[7, 8\]", read_checkpoint, ck, file=file_of(ck, key), tensor=key)


def test_changed_config_is_a_checksum_error(ck):
    edit_config(ck, lambda c: c.update(layer_norm_eps=1e-3), fix_checksum=False)
    expect("config.json changed after the checkpoint was written", load, ck, file=ck / "config.json")
    load(ck, verify=False)  # an intended edit: load without verification


def test_module_shape_differs_from_the_model(ck):
    edit_config(ck, lambda c: c.update(intermediate_size=132))
    name = "encoder.layer.0.intermediate.dense"
    e = expect(r"has shape \(128, 64\) but the model's is \(132, 64\)", load, ck, tensor=f"{name}.values")
    assert e.file == str(file_of(ck, f"{name}.values"))


def test_dense_tensor_shape_differs_from_the_model(ck):
    edit_config(ck, lambda c: c.update(vocab_size=121))
    key = "embeddings.word_embeddings.weight"
    expect(r"shape \(120, 64\) but the model expects \(121, 64\)", load, ck, file=file_of(ck, key), tensor=key)


@pytest.mark.parametrize("version, word", [(2, "newer"), (0, "older")])
def test_other_format_version(ck, version, word):
    index = index_of(ck)
    index["sparsa"]["format_version"] = version
    index["sparsa"]["a_field_of_the_future"] = {"x": 1}
    write_index(ck, index)
    expect(f"format version {version} was written by an? {word} sparsa", read_checkpoint, ck, file=ck / INDEX)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda i: i.pop("weight_map"), "'weight_map': Field required"),
        (lambda i: i["sparsa"].update(extra=1), "'sparsa.extra': Extra inputs are not permitted"),
        (lambda i: i["weight_map"].update({"x": "../outside.safetensors"}), "String should match pattern"),
        (lambda i: i["weight_map"].update({"x": "/etc/passwd.safetensors"}), "String should match pattern"),
        (lambda i: i["sparsa"]["tensors"][f"{Q}.values"].update(dtype="F8"), "Input should be 'BOOL'"),
        (lambda i: i["sparsa"]["tensors"][f"{Q}.values"].update(shape=[-1]), "greater than or equal to 0"),
        (lambda i: i["sparsa"]["tensors"][f"{Q}.values"].update(checksum="xyz"), "String should match pattern"),
        (lambda i: i["sparsa"]["modules"][Q].update(format="coo"), "unknown format 'coo'"),
        (lambda i: i["sparsa"]["modules"][Q].update(structure="5:4"), "invalid structure '5:4'"),
        (lambda i: i["sparsa"]["modules"][Q].update(dtype="bfloat16"), "declares bfloat16 values but the tensor is F32"),
        (lambda i: i["sparsa"]["modules"][Q].update(shape=[64, 64, 1]), "Tuple should have at most 2 items"),
        (lambda i: i["sparsa"]["tensors"].pop(f"{Q}.values"), "listed in weight_map but has no entry"),
        (lambda i: i["weight_map"].pop(f"{Q}.values"), "has an entry in sparsa.tensors but no file"),
        (lambda i: i["sparsa"]["aliases"].update({"a": "nowhere"}), "is an alias of 'nowhere', which is not stored"),
        (lambda i: i["metadata"].update(total_size=1), "metadata.total_size is 1"),
        (lambda i: i["sparsa"].update(checksum_algorithm="md5"), "Input should be 'xxh3_64'"),
        (lambda i: i["sparsa"].update(format_version="1"), "Input should be a valid integer"),
    ],
)
def test_bad_index_is_one_clear_error(ck, edit, match):
    index = index_of(ck)
    edit(index)
    write_index(ck, index)
    expect(match, read_checkpoint, ck, file=ck / INDEX)


@pytest.mark.parametrize("text", [b"", b"{", b"[]", b"\xff\xfe", b'{"sparsa": 1}', b"null", b"[" * 100000])
def test_index_that_is_not_an_index(ck, text):
    (ck / INDEX).write_bytes(text)
    expect("invalid index|not a valid index", read_checkpoint, ck, file=ck / INDEX)


def test_structurally_invalid_packed_weight_is_caught_even_with_a_matching_checksum(ck):
    """A writer bug, not corruption: the checksum matches but the columns are out of order."""
    key = f"{Q}.col_idx"
    f = file_of(ck, key)
    tensors = load_file(f)
    bad = tensors[key].clone()
    bad[0], bad[1] = tensors[key][1], tensors[key][0]
    assert not torch.equal(bad, tensors[key])
    tensors[key] = bad
    _rewrite_shard(ck, f, tensors)
    index = index_of(ck)
    index["sparsa"]["tensors"][key]["checksum"] = checksum(bad)
    write_index(ck, index)
    expect(f"module '{Q}': bsr: col_idx out of order", read_checkpoint, ck, file=f)


def test_config_naming_a_class_outside_transformers_is_refused(ck):
    for arch in ["os", "EvilModel", "AutoModel", "__import__", "BertModel.__init__"]:
        edit_config(ck, lambda c: c.update(architectures=[arch]))
        expect("not a model class of transformers", load, ck, file=ck / "config.json")


def test_config_with_remote_code_is_not_run(ck):
    edit_config(ck, lambda c: c.update(model_type="definitely_not_a_model", auto_map={"AutoConfig": "evil.EvilConfig"}))
    (ck / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    expect("cannot be read as a transformers config", load, ck, file=ck / "config.json")


def test_missing_config(ck):
    (ck / "config.json").unlink()
    expect("missing", load, ck, file=ck / "config.json")


def test_a_tensor_the_model_does_not_have(ck):
    f = file_of(ck, f"{Q}.values")
    tensors = load_file(f)
    tensors["encoder.extra.weight"] = torch.ones(2)
    _rewrite_shard(ck, f, tensors)
    index = index_of(ck)
    index["weight_map"]["encoder.extra.weight"] = f.name
    index["sparsa"]["tensors"]["encoder.extra.weight"] = {"dtype": "F32", "shape": [2], "checksum": checksum(torch.ones(2))}
    index["metadata"]["total_size"] += 8
    write_index(ck, index)
    expect("has no such tensor", load, ck, file=f, tensor="encoder.extra.weight")


def test_a_tensor_the_model_needs_is_missing(ck):
    key = "encoder.layer.1.output.LayerNorm.weight"
    f = file_of(ck, key)
    tensors = load_file(f)
    del tensors[key]
    _rewrite_shard(ck, f, tensors)
    index = index_of(ck)
    del index["weight_map"][key]
    index["metadata"]["total_size"] -= index["sparsa"]["tensors"].pop(key)["shape"][0] * 4
    if not any(v == f.name for v in index["weight_map"].values()):
        del index["sparsa"]["files"][f.name]
        f.unlink()
    write_index(ck, index)
    expect("missing from the checkpoint", load, ck, tensor=key)


# ---- atomic writes ----

def test_failed_write_leaves_nothing_and_keeps_the_old_output(tmp_path, monkeypatch):
    model = mixed_model()
    out = save(model, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def failing(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(writer_module, "save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        save(model, out, overwrite=True, max_shard_size="20KB")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old output is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]      # no temporary left behind
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        save(model, tmp_path / "new", max_shard_size="20KB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_and_refuses_without_flag(tmp_path):
    model = mixed_model()
    out = save(model, tmp_path / "out")
    expect("already exists", save, model, out)
    save(model, out, overwrite=True, max_shard_size="20KB")
    assert len(list(out.glob("*.safetensors"))) > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    read_checkpoint(out)


@pytest.mark.parametrize("where", [".", "sub", ".."])
def test_never_writes_into_or_over_the_source(clean, tmp_path, where):
    src = Path(shutil.copytree(clean, tmp_path / "src" / "model"))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in src.iterdir())
    target = (src / where).resolve()
    with pytest.raises(CheckpointError, match="refusing to write here"):
        save(load(src), target, source=src, overwrite=True)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in src.iterdir()) == before
