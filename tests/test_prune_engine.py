"""The calibration engine on real transformers architectures (tiny random configs): generic block discovery,
stage order, padding, determinism, allocation, recipes and the errors users see."""

import pytest
import torch

from sparsa import prune
from sparsa.modules import weight_out_in
from sparsa.prune import MissingCalibrationError, RecipeError, load_recipe
from sparsa.prune.blocks import find_blocks
from sparsa.prune.engine import _stages, gather_stats, Plan
from sparsa.prune.blocks import capture_first_block
from sparsa.prune.methods import METHODS, UnknownMethodError
from sparsa.structure import StructureError, parse_structure

from conftest import tiny_bert, tiny_gpt2, tiny_llama, tiny_mistral, tiny_mixtral, tiny_opt, tiny_qwen2

FAMILIES = {"bert": tiny_bert, "gpt2": tiny_gpt2, "opt": tiny_opt, "llama": tiny_llama, "mistral": tiny_mistral,
            "qwen2": tiny_qwen2, "mixtral": tiny_mixtral}
BLOCKS = {"bert": "encoder.layer", "gpt2": "transformer.h", "opt": "model.decoder.layers", "llama": "model.layers",
          "mistral": "model.layers", "qwen2": "model.layers", "mixtral": "model.layers"}


def tokens(n=12, t=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(3, 100, (n, t), generator=g)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_blocks_are_found_by_traversal(family):
    names = [n for n, _ in find_blocks(FAMILIES[family]())]
    assert names == [f"{BLOCKS[family]}.0", f"{BLOCKS[family]}.1"]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("method, structure", [("wanda", "unstructured"), ("sparsegpt", "2:4"),
                                               ("sparsegpt", "4x1")])
def test_every_family_prunes_with_calibration(family, method, structure):
    model = FAMILIES[family]()
    batch = tokens()
    with torch.no_grad():
        ref = model(**batch)[0]
    pruned, rep = prune(model, method, 0.5, structure, calibration=batch, inplace=False)
    assert len(rep.modules) >= 8 and abs(rep.achieved_sparsity - 0.5) < 0.01
    for m in rep.modules:
        assert m.recon_error is not None and 0 <= m.recon_error < 1.0, m
        assert m.method == method
        assert m.tokens == 12 * 24 or ".experts." in m.name  # experts see only the tokens routed to them
    with torch.no_grad():
        out = pruned(**batch)[0]
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    # the source model is untouched with inplace=False
    assert all(not bool((weight_out_in(mod) == 0).any()) for n, mod in model.named_modules()
               if n in {m.name for m in rep.modules})


def test_stages_follow_the_blocks_dataflow():
    for factory, want in [(tiny_bert, [["attention.self.query", "attention.self.key", "attention.self.value"],
                                       ["attention.output.dense"], ["intermediate.dense"], ["output.dense"]]),
                          (tiny_llama, [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                                        ["self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]])]:
        model = factory()
        bname, block = find_blocks(model)[0]
        call = capture_first_block(model, block, [tokens(2, 8)])[0]
        plans = [Plan(f"{bname}.{n}", m, METHODS["wanda"], parse_structure("unstructured"), 0.5, "row")
                 for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
        stages = _stages(block, call, plans)
        assert [[p.name.removeprefix(bname + ".") for p in st] for st, _ in stages] == want
        assert all(shared for _, shared in stages)  # each stage's modules read one tensor


def first_block_with_padding(factory, method: str, pad_row: int, pad_from: int):
    """(block, its captured calls on 4 x 10 tokens with one row padded, {module name: Plan} of its Linears)."""
    model = factory()
    bname, block = find_blocks(model)[0]
    batch = tokens(4, 10)
    batch["attention_mask"] = torch.ones(4, 10, dtype=torch.long)
    batch["attention_mask"][pad_row, pad_from:] = 0
    calls = capture_first_block(model, block, [batch])
    m = METHODS[method]
    plans = {n: Plan(f"{bname}.{n}", mod, m, parse_structure("unstructured"), 0.5, m.default_scope)
             for n, mod in block.named_modules() if isinstance(mod, torch.nn.Linear)}
    return block, calls, plans


@pytest.mark.parametrize("factory", [tiny_bert, tiny_llama])
def test_a_stage_shares_one_gathering_equal_to_separate_ones(factory):
    """One InputStats for the modules of a stage (forwards stopped before the first of them) holds the same
    sums as separate statistics gathered by full forwards, with padding excluded in both."""
    block, calls, plans = first_block_with_padding(factory, "sparsegpt", 1, 6)
    for stage, shared in _stages(block, calls[0], list(plans.values())):
        one = gather_stats(block, calls, stage, shared=shared)
        apart = gather_stats(block, calls, stage, shared=False)
        assert len({id(s) for s in one.values()}) == 1
        for p in stage:
            assert one[p.name].n == apart[p.name].n == 4 * 10 - 4
            torch.testing.assert_close(one[p.name].hessian, apart[p.name].hessian)
            torch.testing.assert_close(one[p.name].sum, apart[p.name].sum)


def test_error_measured_by_a_forward_equals_the_one_from_xtx():
    """Wanda on a module whose X^T X outweighs the weight (in > out) measures its reconstruction error from the
    module's inputs in one more forward: the same number as tr(D X^T X D^T) / tr(W X^T X W^T)."""
    from sparsa.prune.engine import _error_by_forward, _measure_by_forward
    from sparsa.prune.stats import relative_error

    block, calls, plans = first_block_with_padding(tiny_llama, "wanda", 2, 3)
    down, gate = plans["mlp.down_proj"], plans["mlp.gate_proj"]
    assert _measure_by_forward([down], False) and not _measure_by_forward([gate], True)  # 96 -> 64 vs 64 -> 96
    assert not _measure_by_forward([down, plans["self_attn.o_proj"]], False)  # inputs may change in between
    assert not _measure_by_forward([Plan(down.name, down.module, METHODS["sparsegpt"], down.structure, 0.5,
                                         "tensor")], True)
    w = down.weight().detach()
    pruned = w * (torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) > 0.5)
    h = gather_stats(block, calls, [down])[down.name].hessian
    assert _error_by_forward(block, calls, down, w, pruned) == pytest.approx(relative_error(w, pruned, h), rel=1e-4)
    # from the keep-mask alone (how prune_one measures a method that makes no weight updates): the same number
    assert _error_by_forward(block, calls, down, w, pruned != 0) == pytest.approx(
        relative_error(w, pruned, h), rel=1e-4)


def test_float32_factor_failure_in_place_is_gathered_again(monkeypatch, caplog):
    """SparseGPT's factor overwrites X^T X; where that float32 factorisation fails, the stage's statistics
    are gathered again and a float64 copy is factorised (not float32 again): the result matches a run without
    the failure up to float32-vs-float64 rounding."""
    from sparsa.prune import sparsegpt as sg

    batch, source = tokens(), tiny_llama()
    ref_model, ref = prune(source, "sparsegpt", 0.5, "unstructured", calibration=batch, inplace=False)
    real, dtypes = sg._factor, []

    def fail_once(h, damp):
        dtypes.append(h.dtype)
        if len(dtypes) == 1:
            h.fill_(float("nan"))  # the failed attempt has destroyed X^T X
            return None
        return real(h, damp)

    monkeypatch.setattr(sg, "_factor", fail_once)
    with caplog.at_level("INFO", logger="sparsa.prune"):
        model, rep = prune(source, "sparsegpt", 0.5, "unstructured", calibration=batch, inplace=False)
    assert dtypes[:2] == [torch.float32, torch.float64] and "redone in float64" in caplog.text
    assert set(dtypes[2:]) == {torch.float32}  # the next stages factorise in float32 in place again
    for m, r in zip(rep.modules, ref.modules):
        assert m.sparsity == r.sparsity and m.recon_error == pytest.approx(r.recon_error, rel=1e-2)
    got, want = dict(model.named_modules()), dict(ref_model.named_modules())
    for m in rep.modules:
        agree = (got[m.name].weight == 0) == (want[m.name].weight == 0)
        assert agree.float().mean() > 0.99, m.name


def test_same_seed_gives_bit_identical_masks_and_padding_never_counts():
    model = tiny_bert()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (8, 20), generator=g)
    lengths = [20, 5, 9, 14, 20, 3, 11, 7]
    mask = torch.zeros(8, 20, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    padded = {"input_ids": ids * mask, "attention_mask": mask}
    runs = [prune(model, "sparsegpt", 0.6, calibration=padded, inplace=False)[0] for _ in range(2)]
    for (n, a), (_, b) in zip(runs[0].named_parameters(), runs[1].named_parameters()):
        assert torch.equal(a, b), n
    # one sentence per batch (no padding at all) gives the same Wanda masks as padded batches of 4
    singles = [{"input_ids": ids[i : i + 1, :n], "attention_mask": mask[i : i + 1, :n]} for i, n in enumerate(lengths)]
    a, _ = prune(model, "wanda", 0.5, calibration=singles, inplace=False, sequential=False)
    b, _ = prune(model, "wanda", 0.5, calibration=padded, inplace=False, sequential=False)
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa == 0, pb == 0), n


def test_split_batches_keep_every_sample_once_and_in_order():
    from sparsa.prune.calibration import split_batches

    ids = torch.arange(35).reshape(5, 7)
    mask = (ids % 3 > 0).long()
    shared = torch.ones(3)  # not batch-shaped: every piece gets it as it is
    batches = [{"input_ids": ids, "attention_mask": mask, "extra": shared}, {"input_ids": ids[:1]}]
    for max_tokens, sizes in ((14, [2, 2, 1, 1]), (20, [2, 2, 1, 1]), (3, [1] * 6), (35, [5, 1]), (10**6, [5, 1])):
        out = split_batches(batches, max_tokens)
        assert [b["input_ids"].shape[0] for b in out] == sizes
        assert torch.equal(torch.cat([b["input_ids"] for b in out]), torch.cat([ids, ids[:1]]))
        parts = [b for b in out if "attention_mask" in b]
        assert torch.equal(torch.cat([b["attention_mask"] for b in parts]), mask)
        assert all(b["extra"] is shared for b in parts)


def test_bounded_call_tokens_from_the_block_shapes():
    """One call's widest activation is at most 1/32 of a block's weight elements: hand-computed for
    tiny_llama (q 64x64, k/v 32x64, o 64x64, gate/up/down 96x64, two norms of 64; widest 96), also on a
    meta-device copy (bounded pruning reads shapes from a skeleton)."""
    from sparsa.prune.engine import bounded_call_tokens

    numel = 4096 + 2 * 2048 + 4096 + 3 * 6144 + 2 * 64
    model = tiny_llama()
    assert sum(p.numel() for p in model.model.layers[0].parameters()) == numel
    assert bounded_call_tokens(model) == numel // (32 * 96) == 10
    assert bounded_call_tokens(model.to("meta")) == 10


def test_statistics_of_split_batches_equal_whole_ones():
    """Splitting calibration batches (bounded memory) changes how many tokens each forward carries, not the
    statistics: same token count, same sums and X^T X up to float32 summation order, padding excluded."""
    from sparsa.prune.calibration import split_batches

    model = tiny_bert()
    g = torch.Generator().manual_seed(3)
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 4, 9, 7, 12, 2])[:, None]).long()
    batch = {"input_ids": torch.randint(3, 100, (6, 12), generator=g) * mask, "attention_mask": mask}
    block = find_blocks(model)[0][1]
    whole, parts = (capture_first_block(model, block, b) for b in ([batch], split_batches([batch], 24)))
    assert len(whole) == 1 and len(parts) == 3
    plans = [Plan(n, m, METHODS["sparsegpt"], parse_structure("unstructured"), 0.5, METHODS["sparsegpt"].default_scope)
             for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
    a, b = gather_stats(block, whole, plans), gather_stats(block, parts, plans)
    for p in plans:
        assert a[p.name].n == b[p.name].n == int(mask.sum())
        torch.testing.assert_close(a[p.name].hessian, b[p.name].hessian, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a[p.name].sum, b[p.name].sum, rtol=1e-5, atol=1e-5)


def test_owl_and_erk_allocations_hit_the_target():
    model = tiny_llama()
    _, rep = prune(model, "wanda", 0.6, calibration=tokens(), allocation="owl", owl_lambda=0.1, inplace=False)
    per_block = {}
    for m in rep.modules:
        per_block.setdefault(m.name.split(".")[2], set()).add(round(m.target, 6))
    targets = [next(iter(v)) for v in per_block.values()]
    assert all(len(v) == 1 for v in per_block.values())  # OWL sets one sparsity per block
    assert sum(targets) / len(targets) == pytest.approx(0.6)
    assert max(targets) - min(targets) == pytest.approx(0.2)
    _, rep = prune(model, "magnitude", 0.6, allocation="erk", inplace=False)
    assert rep.achieved_sparsity == pytest.approx(0.6, abs=0.005)
    assert len({round(m.target, 4) for m in rep.modules}) > 1


def test_dsnot_on_top_of_each_method_keeps_the_sparsity():
    model = tiny_opt()
    for method in ("magnitude", "wanda", "sparsegpt"):
        _, rep = prune(model, method, 0.7, calibration=tokens(), dsnot=True, inplace=False)
        assert rep.achieved_sparsity == pytest.approx(0.7, abs=0.01) and all(m.dsnot for m in rep.modules)


def test_recipe_overrides_and_validation(tmp_path):
    model = tiny_llama()
    path = tmp_path / "r.yaml"
    path.write_text(
        "calibration: {samples: 8, seq_len: 16}\n"
        "prune:\n"
        "  - {method: sparsegpt, sparsity: 0.5}\n"
        "  - {targets: ['re:.*mlp\\.down_proj'], method: wanda, structure: '2:4'}\n"
        "  - {targets: ['re:.*self_attn\\.[qk]_proj'], method: magnitude, sparsity: 0.3, structure: 4x1}\n")
    _, rep = prune(model, path, calibration=tokens(), inplace=False)
    by = {m.name.split(".", 3)[-1]: m for m in rep.modules}
    assert (by["mlp.down_proj"].method, by["mlp.down_proj"].structure) == ("wanda", "2:4")
    assert (by["self_attn.q_proj"].method, by["self_attn.q_proj"].sparsity) == ("magnitude", pytest.approx(0.3, abs=0.01))
    assert (by["mlp.up_proj"].method, by["mlp.up_proj"].sparsity) == ("sparsegpt", pytest.approx(0.5, abs=0.01))
    with pytest.raises(RecipeError, match=r"prune\.0\.metod: unknown key.*entry keys: targets"):
        load_recipe([{"metod": "wanda"}])
    with pytest.raises(RecipeError, match="known methods: magnitude, wanda, sparsegpt"):
        load_recipe([{"method": "obs"}])
    with pytest.raises(RecipeError, match="allowed forms"):
        load_recipe([{"method": "wanda", "structure": "3:2"}])
    with pytest.raises(RecipeError, match="known allocations: uniform, owl, erk"):
        load_recipe([{"method": "wanda", "allocation": "lamp"}])
    with pytest.raises(RecipeError, match="use allocation 'uniform' with N:M"):
        load_recipe([{"method": "wanda", "structure": "2:4", "allocation": "owl"}])
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_bad_input_errors_name_the_problem():
    model = tiny_llama()
    with pytest.raises(MissingCalibrationError, match="method 'sparsegpt' needs calibration data"):
        prune(model, "sparsegpt", 0.5)
    with pytest.raises(MissingCalibrationError, match="DSnoT needs calibration data"):
        prune(model, "magnitude", 0.5, dsnot=True)
    with pytest.raises(UnknownMethodError, match="known methods: magnitude, wanda, sparsegpt"):
        prune(model, "obs", 0.5, calibration=tokens())
    with pytest.raises(StructureError, match=r"module 'model\.layers\.0\.self_attn\.k_proj' \(Linear\).*32"):
        prune(model, "wanda", 0.5, "64x1", calibration=tokens())


def test_fused_moe_experts_are_pruned_per_expert_on_their_routed_tokens():
    model = tiny_mixtral()
    batch = tokens(8, 24)
    _, rep = prune(model, "sparsegpt", 0.5, "2:4", calibration=batch, inplace=True)
    experts = [m for m in rep.modules if ".experts." in m.name]
    assert len(experts) == 2 * 2 * 4  # 2 layers x (gate_up, down) x 4 experts
    layer0 = [m for m in experts if m.name.startswith("model.layers.0.mlp.experts.gate_up_proj.")]
    assert sum(m.tokens for m in layer0) == 8 * 24 * 2  # every token reaches its top-2 experts, and only them
    w = model.model.layers[0].mlp.experts.gate_up_proj.data  # (E, 2I, H)
    assert (w.reshape(4, 192, -1, 4) != 0).sum(-1).le(2).all()  # 2:4 inside every expert's (out, in) slice
    assert model.config._experts_implementation == "grouped_mm"  # switched back after the walk
    with pytest.raises(StructureError, match=r"expert weight 'model\.layers\.0\.mlp\.experts\.gate_up_proj\.0'"):
        prune(tiny_mixtral(), "magnitude", 0.5, "5x1", targets=["re:.*experts.*"], ignore=[])
