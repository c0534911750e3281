"""The checkpoint commands end to end on the real all-MiniLM-L6-v2: prune -> pack -> info -> load -> export,
and a transformers-only process reading the export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import sparsa
from sparsa.nn import SparseLinear

from checkpoint_helpers import INDEX, one_json, run_cli
from test_checkpoint_model import transformers_only

pytestmark = pytest.mark.slow


def digest(folder: Path) -> dict:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def folders(minilm_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    run_cli("prune", str(minilm_path), "--sparsity", "0.5", "--structure", "4x1", "--out", str(root / "pruned"))
    before = digest(root / "pruned")
    r = one_json(run_cli("pack", str(root / "pruned"), "--out", str(root / "packed"), "--json"))
    assert digest(root / "pruned") == before  # the source is never written to
    return root, r


def test_pack_writes_a_compact_hf_folder(folders):
    root, r = folders
    names = sorted(p.name for p in (root / "packed").iterdir())
    assert names == sorted(["config.json", "tokenizer.json", "tokenizer_config.json", INDEX,
                            "sparsa-model-00001-of-00001.safetensors"])
    assert len([m for m in r["modules"] if m["packed"]]) == 36
    assert {m["structure"] for m in r["modules"]} == {"4x1"} and r["dtype"] == "float32"
    # 4x1 at 50%: half the values plus a 2-byte index per 4 values (+ row pointers)
    assert r["sparse_bytes"] / r["dense_bytes"] == pytest.approx(0.5 * (1 + 2 / 16), abs=0.01)
    assert r["source_disk_bytes"] - r["out_disk_bytes"] == pytest.approx(r["dense_bytes"] - r["sparse_bytes"],
                                                                           rel=0.01)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary left behind
    index = json.loads((root / "packed" / INDEX).read_text())
    assert index["sparsa"]["recipe"]["method"] == "magnitude"


def test_info_json_on_pruned_and_packed_folders(folders):
    root, _ = folders
    dense = one_json(run_cli("info", str(root / "pruned"), "--json"))
    packed = one_json(run_cli("info", str(root / "packed"), "--json"))
    assert dense["packed"] is False and packed["packed"] is True
    for info in (dense, packed):
        assert {"dense_bytes", "sparse_bytes", "sparsity", "disk_bytes", "modules"} <= set(info)
        rows = {m["name"]: m for m in info["modules"]}
        assert len(rows) == 37 and rows["pooler.dense"]["structure"] == "dense"
        assert all(m["structure"] == "4x1" and abs(m["sparsity"] - 0.5) < 0.01 and m["sparse_bytes"] < m["dense_bytes"]
                   for n, m in rows.items() if n != "pooler.dense")
    # the packed folder stores exactly the bytes that info computes for the pruned one
    assert (dense["dense_bytes"], dense["sparse_bytes"]) == (packed["dense_bytes"], packed["sparse_bytes"])
    assert packed["disk_bytes"] < dense["disk_bytes"]
    table = run_cli("info", str(root / "packed")).stdout
    assert "packed checkpoint" in table and "SparseLinear" in table and "bsr" in table


def test_load_and_export_match_the_pruned_model(folders, tmp_path):
    root, _ = folders
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "packed")
    x = tok(["a sparse checkpoint loads back", "into plain transformers too"], padding=True,
            return_tensors="pt")["input_ids"]
    ref_model = AutoModel.from_pretrained(root / "pruned").eval()
    model = sparsa.load(root / "packed")
    assert sum(isinstance(m, SparseLinear) for m in model.modules()) == 36
    with torch.inference_mode():
        ref = ref_model(input_ids=x).last_hidden_state
        torch.testing.assert_close(model(input_ids=x).last_hidden_state, ref, rtol=1e-4, atol=1e-4)

    run_cli("export", "--dense", str(root / "packed"), str(tmp_path / "dense"))
    y = transformers_only(tmp_path / "dense", "BertModel", x, tmp_path)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_bf16_pack_is_smaller_and_reloads(folders, tmp_path):
    root, r32 = folders
    r = one_json(run_cli("save", str(root / "pruned"), "--out", str(tmp_path / "p16"), "--dtype", "bfloat16",
                         "--max-shard-size", "10MB", "--json"))
    assert r["dtype"] == "bfloat16" and r["out_disk_bytes"] < 0.55 * r32["out_disk_bytes"]
    assert len(list((tmp_path / "p16").glob("sparsa-model-*.safetensors"))) == 3  # 23 MB embeddings alone, the rest in two
    model = sparsa.load(tmp_path / "p16")
    assert {m.packed.value_dtype for m in model.modules() if isinstance(m, SparseLinear)} == {torch.bfloat16}


def test_damaged_checkpoint_is_one_clear_line(folders, tmp_path):
    import shutil

    root, _ = folders
    ck = Path(shutil.copytree(root / "packed", tmp_path / "ck"))
    shard = ck / "sparsa-model-00001-of-00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    for args in (["info", str(ck)], ["export", "--dense", str(ck), str(tmp_path / "out")],
                 ["pack", str(ck), "--out", str(tmp_path / "out2")]):
        p = run_cli(*args, ok=False)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "checksum mismatch" in lines[0] and str(shard) in lines[0] and "tensor '" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "{packed}", "{tmp}/x"], "--dense"),
        (["export", "--dense", "{pruned}", "{tmp}/x"], "not a packed checkpoint"),
        (["pack", "{pruned}", "--out", "{pruned}"], "refusing to write here"),
        (["pack", "{pruned}", "--out", "{pruned}/inside"], "refusing to write here"),
        (["pack", "{pruned}", "--out", "{packed}"], "already exists"),
        (["pack", "{pruned}", "--out", "{tmp}/x", "--dtype", "float16"], "dtype must be one of"),
        (["pack", "{pruned}", "--out", "{tmp}/x", "--max-shard-size", "lots"], "invalid size"),
        (["pack", "{pruned}", "--out", "{tmp}/x", "--structure", "2:4"], None),  # recorded 4x1 wins: not an error
    ],
)
def test_bad_requests_are_one_clear_error(folders, tmp_path, args, message):
    root, _ = folders
    args = [a.format(packed=root / "packed", pruned=root / "pruned", tmp=tmp_path) for a in args]
    p = run_cli(*args, ok=message is None)
    if message is not None:
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("command", ["pack", "save", "export", "info"])
def test_help_has_an_example(command):
    p = run_cli(command, "--help")
    assert "Example" in p.stdout and f"sparsa {command}" in p.stdout
