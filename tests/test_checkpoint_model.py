"""Models through the checkpoint: encoder and decoders load back with SparseLinear modules and compute what the
dense-with-zeros model computes; `export --dense` gives a folder that transformers loads in a process where
sparsa cannot be imported; folder-to-folder packing keeps structures and recipe."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sparsa
from sparsa.checkpoint import load, read_checkpoint, save
from sparsa.checkpoint.convert import export_dense, pack_folder
from sparsa.nn import SparseLinear
from sparsa.runtime.models import save_pruned

from checkpoint_helpers import INDEX, inputs, pruned
from conftest import tiny_bert, tiny_gpt2, tiny_llama

MODELS = {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama}
CASES = [("bert", "4x1"), ("gpt2", "unstructured"), ("llama", "2:4"), ("llama", "1x4")]


def first(out) -> torch.Tensor:
    return out[0] if not isinstance(out, torch.Tensor) else out


@pytest.mark.parametrize("kind, structure", CASES)
def test_loaded_model_computes_what_the_pruned_model_computes(tmp_path, kind, structure):
    model = pruned(MODELS[kind](), structure, 0.6)
    sparse, converted = sparsa.sparsify(model)
    out = sparsa.save(sparse, tmp_path / "ck", max_shard_size="100KB")
    loaded = sparsa.load(out)
    mods = {n: m for n, m in loaded.named_modules() if isinstance(m, SparseLinear)}
    assert sorted(mods) == sorted(c.name for c in converted)
    assert not loaded.training
    x = inputs(100)
    with torch.inference_mode():
        torch.testing.assert_close(first(loaded(input_ids=x)), first(model(input_ids=x)), rtol=1e-5, atol=1e-5)


def test_tied_weights_are_stored_once_and_tied_again(tmp_path):
    model = pruned(tiny_gpt2(), "unstructured", 0.5)
    out = save(model, tmp_path / "ck")
    index = json.loads((out / INDEX).read_text())
    assert index["sparsa"]["aliases"] == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in index["weight_map"]
    for dense in (False, True):
        m = load(out, dense=dense)
        assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()


def test_saving_a_pruned_dense_model_packs_it(tmp_path):
    model = pruned(tiny_bert(), "8x1", 0.75)  # dense-with-zeros; sparsa.prune marked the modules
    out = save(model, tmp_path / "ck", recipe={"method": "magnitude", "modules": {"encoder.layer.0.output.dense": "8x1"}})
    ck = read_checkpoint(out)
    assert len(ck.packed) == 12 and {p.format_name for p in ck.packed.values()} == {"bsr"}
    assert all(isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if n.endswith("output.dense"))
    modules = json.loads((out / INDEX).read_text())["sparsa"]["modules"]
    assert modules["encoder.layer.0.output.dense"]["method"] == "magnitude"
    assert modules["encoder.layer.1.output.dense"]["method"] is None  # the recipe does not list it


def test_bfloat16_checkpoint(tmp_path):
    model = pruned(tiny_llama(), "unstructured", 0.5, torch.bfloat16)
    out = save(model, tmp_path / "ck")
    ck = read_checkpoint(out)
    assert {p.value_dtype for p in ck.packed.values()} == {torch.bfloat16}
    assert ck.tensors["model.embed_tokens.weight"].dtype == torch.bfloat16
    for name, p in ck.packed.items():
        assert torch.equal(p.to_dense(), model.get_submodule(name).weight)
    loaded = load(out)
    x = inputs(100)
    with torch.inference_mode():
        got, ref = first(loaded(input_ids=x)).float(), first(model(input_ids=x)).float()
    # the sparse kernels accumulate in fp32 where torch's bf16 matmul rounds partial sums: bf16-level agreement
    assert float((got - ref).abs().max() / ref.abs().max()) < 0.05


def test_load_of_a_dense_with_zeros_folder_converts_it(tmp_path):
    model = pruned(tiny_bert(), "2:4", None)
    folder = save_pruned(model, None, tmp_path / "pruned", {"modules": {}}, source=None)
    loaded = sparsa.load(folder)
    assert {m.packed.format_name for m in loaded.modules() if isinstance(m, SparseLinear)} == {"nm"}
    x = inputs(100)
    with torch.inference_mode():
        torch.testing.assert_close(first(loaded(input_ids=x)), first(model(input_ids=x)), rtol=1e-5, atol=1e-5)


BLOCK_SPARSA = textwrap.dedent(
    """
    import sys, importlib.abc

    class NoSparsa(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "sparsa" or name.startswith("sparsa."):
                raise ModuleNotFoundError(f"No module named '{name}'")
            return None

    sys.meta_path.insert(0, NoSparsa())
    try:
        import sparsa
    except ModuleNotFoundError:
        pass
    else:
        sys.exit("sparsa is importable in the isolated process")
    import torch, transformers
    from safetensors.torch import save_file

    folder, arch, ids, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    model = getattr(transformers, arch).from_pretrained(folder, local_files_only=True).eval()
    x = torch.tensor([[int(t) for t in row.split(",")] for row in ids.split(";")])
    with torch.no_grad():
        y = model(input_ids=x)[0]
    save_file({"y": y.float().contiguous()}, out)
    assert not any(m == "sparsa" or m.startswith("sparsa.") for m in sys.modules)
    print("loaded", arch, "with transformers", transformers.__version__)
    """
)


def transformers_only(folder: Path, arch: str, x: torch.Tensor, tmp_path: Path) -> torch.Tensor:
    """Load ``folder`` with plain transformers in a subprocess (-I: no PYTHONPATH, no user site; sparsa's import
    blocked) and return its output for ``x``."""
    out = tmp_path / "y.safetensors"
    ids = ";".join(",".join(str(int(t)) for t in row) for row in x)
    p = subprocess.run([sys.executable, "-I", "-c", BLOCK_SPARSA, str(folder), arch, ids, str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "loaded" in p.stdout
    return load_file(out)["y"]


@pytest.mark.parametrize("kind, structure", [("bert", "4x1"), ("gpt2", "unstructured"), ("llama", "2:4")])
def test_export_dense_loads_in_plain_transformers(tmp_path, kind, structure):
    model = pruned(MODELS[kind](), structure, 0.6)
    packed = save(model, tmp_path / "packed")
    r = export_dense(packed, tmp_path / "dense")
    assert r.modules == len(read_checkpoint(packed).packed)
    names = sorted(p.name for p in (tmp_path / "dense").iterdir())
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names) and INDEX not in names
    meta = json.loads((tmp_path / "dense" / "sparsa.json").read_text())
    assert set(meta["modules"].values()) == {structure}
    x = inputs(100)
    y = transformers_only(tmp_path / "dense", type(model).__name__, x, tmp_path)
    with torch.inference_mode():
        ref = first(model(input_ids=x))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_pack_folder_from_pruned_and_repack(tmp_path):
    model = pruned(tiny_bert(), "4x1", 0.5)
    meta = {"format_version": 1, "method": "magnitude", "structure": "4x1", "sparsity": 0.5,
            "modules": {n: "4x1" for n, m in model.named_modules() if getattr(m, "sparsa_structure", None)}}
    src = save_pruned(model, None, tmp_path / "pruned", meta, source=None)
    r = pack_folder(src, tmp_path / "packed")
    assert len([m for m in r.modules if m.packed]) == 12 and r.sparse_bytes < r.dense_bytes
    assert r.out_disk_bytes < r.source_disk_bytes
    index = json.loads((tmp_path / "packed" / INDEX).read_text())
    assert index["sparsa"]["recipe"] == meta
    assert {e["method"] for e in index["sparsa"]["modules"].values()} == {"magnitude"}

    r2 = pack_folder(tmp_path / "packed", tmp_path / "packed16", dtype="bfloat16")
    ck = read_checkpoint(tmp_path / "packed16")
    assert {p.value_dtype for p in ck.packed.values()} == {torch.bfloat16}
    assert {str(p.structure) for p in ck.packed.values()} == {"4x1"}
    assert r2.out_disk_bytes < r.out_disk_bytes
    for name, p in ck.packed.items():
        assert torch.equal(p.to_dense(), model.get_submodule(name).weight.to(torch.bfloat16))


def test_pack_folder_detects_structures_and_keeps_unprofitable_modules_dense(tmp_path):
    model = tiny_bert()
    sparsa.prune(model, sparsity=0.6, structure="8x1", targets=["re:.*intermediate.dense"])
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.weight[0, :3] = 0  # a few stray zeros: packing would cost bytes
    for m in model.modules():
        m.__dict__.pop("sparsa_structure", None)  # no record: structures must be detected
    src = save_pruned(model, None, tmp_path / "plain", {}, source=None)
    (src / "sparsa.json").unlink()
    r = pack_folder(src, tmp_path / "packed")
    rows = {m.name: m for m in r.modules}
    assert {rows[f"encoder.layer.{i}.intermediate.dense"].structure for i in (0, 1)} == {"8x1"}
    q = rows["encoder.layer.0.attention.self.query"]
    assert not q.packed and q.format == "dense"
    assert sorted(read_checkpoint(tmp_path / "packed").packed) == [f"encoder.layer.{i}.intermediate.dense" for i in (0, 1)]


def test_a_loaded_checkpoint_saves_again_identically(tmp_path):
    """The loaded tensors are views of memory-mapped files sharing one storage; saving must copy them apart."""
    from checkpoint_helpers import mixed_model

    a = save(mixed_model(), tmp_path / "a")
    b = save(load(a), tmp_path / "b", max_shard_size="10KB")
    ra, rb = read_checkpoint(a), read_checkpoint(b)
    assert ra.tensors.keys() == rb.tensors.keys() and ra.packed.keys() == rb.packed.keys()
    assert all(torch.equal(ra.tensors[k], rb.tensors[k]) for k in ra.tensors)
    for m, p in ra.packed.items():
        assert all(torch.equal(t, rb.packed[m].tensors()[k]) for k, t in p.tensors().items())
    assert json.loads((a / INDEX).read_text())["sparsa"]["tensors"] == json.loads((b / INDEX).read_text())["sparsa"]["tensors"]
