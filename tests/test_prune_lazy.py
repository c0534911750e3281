"""Bounded-memory pruning from a safetensors checkpoint gives exactly what in-memory pruning gives."""

import json

import pytest
import torch

import sparsa
from sparsa.prune.lazy import SafetensorsBlockLoader, prune_checkpoint, skeleton
from sparsa.runtime import load_pretrained

from conftest import tiny_bert, tiny_gpt2, tiny_llama


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2, tiny_bert], ids=["llama", "gpt2", "bert"])
def test_block_by_block_from_disk_equals_in_memory(factory, tmp_path):
    model = factory()
    src = tmp_path / "src"
    model.save_pretrained(src)
    before = {f.name: f.read_bytes() for f in src.iterdir()}
    batch = {"input_ids": torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))}
    recipe = {"prune": [{"method": "sparsegpt", "sparsity": 0.6, "allocation": "owl"}]}
    ref, _ = sparsa.prune(model, recipe, calibration=batch, inplace=False)
    rep = prune_checkpoint(src, tmp_path / "out", recipe, batch, {"source": str(src)})
    out, _, _ = load_pretrained(tmp_path / "out")
    a, b = ref.state_dict(), out.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert rep.achieved_sparsity == pytest.approx(0.6, abs=0.01)
    assert {f.name: f.read_bytes() for f in src.iterdir()} == before  # the source is never modified
    assert json.loads((tmp_path / "out" / "sparsa.json").read_text())["source"] == str(src)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_blocks_leave_memory_after_they_are_written(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "src")
    model = skeleton(tmp_path / "src")
    assert all(p.device.type == "meta" for p in model.parameters())
    names = [f"model.layers.{i}" for i in range(2)]
    loader = SafetensorsBlockLoader(model, tmp_path / "src", tmp_path, names)
    loader.load_rest()
    block = model.model.layers[0]
    loader.enter(names[0], block)
    assert all(p.device.type == "cpu" for p in block.parameters())
    loader.exit(names[0], block)
    assert all(p.device.type == "meta" for p in block.parameters())
    assert (tmp_path / "model-00001-of-00003.safetensors").is_file()
