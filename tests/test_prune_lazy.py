"""Bounded-memory pruning from a safetensors checkpoint gives exactly what in-memory pruning gives."""

import json
import subprocess
import sys

import pytest
import torch

import sparsa
from sparsa.prune.calibration import split_batches
from sparsa.prune.engine import bounded_call_tokens
from sparsa.prune.lazy import SafetensorsBlockLoader, prune_checkpoint, skeleton
from sparsa.runtime import load_pretrained

from conftest import tiny_bert, tiny_gpt2, tiny_llama


@pytest.mark.parametrize("factory, method", [(tiny_llama, "sparsegpt"), (tiny_gpt2, "sparsegpt"),
                                             (tiny_bert, "sparsegpt"), (tiny_llama, "magnitude")],
                         ids=["llama", "gpt2", "bert", "llama-data-free"])
def test_block_by_block_from_disk_equals_in_memory(factory, method, tmp_path):
    model = factory()
    src = tmp_path / "src"
    model.save_pretrained(src)
    before = {f.name: f.read_bytes() for f in src.iterdir()}
    batch = None
    recipe = {"prune": [{"method": "magnitude", "sparsity": 0.6}]}
    if method == "sparsegpt":
        batch = {"input_ids": torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))}
        recipe = {"prune": [{"method": "sparsegpt", "sparsity": 0.6, "allocation": "owl"}]}
    # block-wise pruning runs the calibration a few samples per forward (bounded_call_tokens): the same here
    split = None if batch is None else split_batches([batch], bounded_call_tokens(model))
    assert batch is None or len(split) > 1
    ref, _ = sparsa.prune(model, recipe, calibration=split, inplace=False)
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


def test_sparsegpt_stages_run_with_the_blocks_other_weights_parked(tmp_path, monkeypatch):
    """While SparseGPT prunes a stage in bounded mode the block's other large weights are out of memory (the
    pruned ones in a temporary file, the rest re-read from the source), and while its statistics are gathered
    the weights of it and the stages after it; they come back unchanged: the result equals in-memory pruning
    (the test above) and no temporary file is left."""
    import importlib

    sg = importlib.import_module("sparsa.prune.sparsegpt")
    model = tiny_llama()
    model.save_pretrained(tmp_path / "src")
    batch = {"input_ids": torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))}
    seen, loaders = [], []
    real, real_init = sg.sparsegpt, SafetensorsBlockLoader.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        loaders.append(self)

    def spy(weight, *args, **kwargs):
        seen.append(resident())
        return real(weight, *args, **kwargs)

    def resident():  # the 2-D weights in memory in the (one) block being pruned
        block = next(b for b in loaders[0].model.model.layers if any(p.device.type == "cpu" for p in b.parameters()))
        return sorted(n for n, p in block.named_parameters() if p.device.type == "cpu" and p.dim() == 2)

    engine = importlib.import_module("sparsa.prune.engine")
    gathered, real_gather = [], engine.gather_stats

    def gather_spy(*args, **kwargs):
        gathered.append(resident())
        return real_gather(*args, **kwargs)

    monkeypatch.setattr(SafetensorsBlockLoader, "__init__", init)
    monkeypatch.setattr(importlib.import_module("sparsa.prune.methods"), "sparsegpt", spy)
    monkeypatch.setattr(engine, "gather_stats", gather_spy)
    recipe = {"prune": [{"method": "sparsegpt", "sparsity": 0.5}]}
    prune_checkpoint(tmp_path / "src", tmp_path / "out", recipe, batch, {"source": "src"})
    # one call per module (q, k, v share a stage, gate and up another): only the stage's weights are resident
    stages = [["self_attn.k_proj.weight", "self_attn.q_proj.weight", "self_attn.v_proj.weight"]] * 3 + \
             [["self_attn.o_proj.weight"]] + [["mlp.gate_proj.weight", "mlp.up_proj.weight"]] * 2 + \
             [["mlp.down_proj.weight"]]
    assert seen == stages * 2  # two blocks
    # while a stage's statistics are gathered (forwards that stop before it) only the earlier stages' weights
    qkv, o, gate_up = stages[0], stages[3], stages[4]
    assert gathered == [[], qkv, sorted(qkv + o), sorted(qkv + o + gate_up)] * 2
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


def test_weights_outside_the_blocks_are_held_only_for_the_first_inputs(tmp_path, monkeypatch):
    """Embeddings and head (here a 2000-token vocabulary: each larger than a block) are dropped once block 0's
    inputs are captured and written back from the source in shards no larger than a block."""
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=2000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "src")
    seen = []
    enter = SafetensorsBlockLoader.enter

    def spy(self, name, block):
        seen.append({n: p.device.type for n, p in self.model.named_parameters() if not n.startswith("model.layers.")})
        enter(self, name, block)

    monkeypatch.setattr(SafetensorsBlockLoader, "enter", spy)
    batch = {"input_ids": torch.randint(3, 2000, (4, 16), generator=torch.Generator().manual_seed(0))}
    prune_checkpoint(tmp_path / "src", tmp_path / "out", {"prune": [{"method": "wanda", "sparsity": 0.5}]}, batch,
                     {})
    assert len(seen) == 3 and all(set(d.values()) == {"meta"} for d in seen)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())["weight_map"]
    shard_bytes: dict[str, int] = {}
    for key, fname in index.items():
        with safe_open(str(tmp_path / "out" / fname), "pt") as f:
            t = f.get_tensor(key)
        shard_bytes[fname] = shard_bytes.get(fname, 0) + t.numel() * t.element_size()
    block_files = {index[k] for k in index if k.startswith("model.layers.")}
    rest_files = set(shard_bytes) - block_files
    largest_block = max(shard_bytes[f] for f in block_files)
    assert len(rest_files) >= 2  # embeddings and head (each 2000 x 64 floats > one block) in separate shards
    for f in rest_files:
        keys = [k for k in index if index[k] == f]
        assert len(keys) == 1 or shard_bytes[f] <= largest_block, (f, keys)
    src, out = LlamaForCausalLM.from_pretrained(tmp_path / "src"), LlamaForCausalLM.from_pretrained(tmp_path / "out")
    for k in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert torch.equal(src.state_dict()[k], out.state_dict()[k])


def test_read_tensor_in_chunks_equals_the_stored_tensor(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from sparsa.prune import lazy

    g = torch.Generator().manual_seed(0)
    tensors = {"big": torch.randn(37, 11, generator=g), "bf16": torch.randn(9, 5, generator=g).bfloat16(),
               "scalar": torch.tensor(3.5), "vec": torch.randn(100, generator=g)}
    save_file(tensors, str(tmp_path / "t.safetensors"))
    monkeypatch.setattr(lazy, "_READ_CHUNK", 64)  # bytes: several chunks per tensor, rows split unevenly
    for k, v in tensors.items():
        got = lazy.read_tensor(tmp_path / "t.safetensors", k)
        assert got.dtype == v.dtype and torch.equal(got, v), k


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_map_large_allocations_gives_large_tensors_their_own_mappings():
    """After map_large_allocations, a 20 MiB tensor is its own mapping (glibc's mallinfo2 counts it in
    hblkhd) where glibc's adaptive threshold (raised to 30 MiB by freeing a mapping of that size) kept it in
    the heap. In a subprocess: the setting is process-wide."""
    code = """
import ctypes, torch
from sparsa.prune.heap import map_large_allocations
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MI
def mapped(): return libc.mallinfo2().hblkhd
x = torch.empty(30 << 20, dtype=torch.uint8); del x  # freeing a mapping raises the adaptive threshold
m0 = mapped(); a = torch.ones(20 << 20, dtype=torch.uint8); heap = mapped() - m0
ok = map_large_allocations()
m1 = mapped(); b = torch.ones(20 << 20, dtype=torch.uint8); own = mapped() - m1
print(heap, own, ok)
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    except subprocess.CalledProcessError as e:
        if "mallinfo2" in e.stderr:
            pytest.skip("this libc has no mallinfo2")
        raise
    heap, own, ok = int(out[0]), int(out[1]), out[2] == "True"
    assert ok and heap < (20 << 20) <= own
