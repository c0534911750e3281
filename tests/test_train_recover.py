"""`sparsa recover` and the recovery job end to end on a tiny random BERT (a teacher, its magnitude-pruned
student, a word-level tokenizer and random sentences written here), the checks that refuse bad input before any
training, the Hugging Face Trainer callback, and the runnable examples."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import sparsa
from sparsa.cli import app
from sparsa.runtime.models import save_pruned

WORDS = ("the a one two red blue green cat dog bird fish tree house car road river city man woman child old new "
         "big small fast slow runs sees eats finds makes takes gives goes sits walks sings reads writes under over "
         "near far with without and but because when then today night morning very quite").split()
ROOT = Path(__file__).resolve().parents[1]


def _tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


def _bert(vocab: int, hidden: int = 32, layers: int = 2):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    # initializer_range 0.2: at BERT's 0.02 the blocks of a random model barely move the residual stream, and
    # pruning would not change its embeddings (cosine 0.9999); here 60% magnitude pruning drops it to ~0.72
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    return BertModel(cfg).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(teacher folder, 60% magnitude-pruned student folder, data file)."""
    root = tmp_path_factory.mktemp("recover")
    tok = _tokenizer(root / "tok")
    teacher = _bert(len(tok))
    tdir = root / "teacher"
    teacher.save_pretrained(tdir)
    tok.save_pretrained(tdir)
    student, rep = sparsa.prune(teacher, "magnitude", 0.6, inplace=False)
    sdir = save_pruned(student, tok, root / "student", {"method": "magnitude", "source": str(tdir),
                                                         "modules": {m.name: m.structure for m in rep.modules}},
                       source=tdir)
    rng = random.Random(0)
    data = root / "text.txt"
    data.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(400)))
    return tdir, sdir, data


def _run(*args: str):
    return CliRunner().invoke(app, ["recover", *args])


def test_length_grouped_batches_see_every_line_once_per_pass_with_less_padding(tmp_path):
    """Grouping by length reorders lines, never drops or repeats them within a pass; it is seeded, and
    its batches carry far less padding than random ones (reference: the same lines in random batches)."""
    from sparsa.train.data import EncoderBatches

    tok = _tokenizer(tmp_path / "tok")
    rng = random.Random(1)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.choice([2, 3, 4, 20, 25, 30]))) for _ in range(256)]

    def run(group: bool, seed: int = 0):
        eb = EncoderBatches(tok, lines, batch_size=8, max_length=64, seed=seed, group_by_length=group, pool=4)
        return [next(eb) for _ in range(32)]  # 32 batches of 8: one pass over the 256 lines

    def texts(batches):
        return [tok.decode(ids[m.bool()], skip_special_tokens=True)
                for b in batches for ids, m in zip(b["input_ids"], b["attention_mask"])]

    def real(batches):
        return sum(int(b["attention_mask"].sum()) for b in batches) / sum(b["attention_mask"].numel() for b in batches)

    grouped, rand = run(True), run(False)
    assert sorted(texts(grouped)) == sorted(texts(rand)) == sorted(tok.decode(tok(ln)["input_ids"],
                                                                              skip_special_tokens=True) for ln in lines)
    assert real(grouped) > 0.8 > 0.6 > real(rand)
    again = run(True)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(grouped, again))
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(grouped, run(True, seed=1)))


def test_recover_improves_distillation_and_keeps_zeros(tiny, tmp_path):
    from sparsa.train import RecoverSettings, recover

    tdir, sdir, data = tiny
    losses = []
    res = recover(sdir, data, tmp_path / "out", teacher=tdir,
                  settings=RecoverSettings(minutes=10, max_steps=60, lr=2e-3, batch_size=16, seq_len=24,
                                           warmup_steps=5, eval_minutes=0.002),
                  on_event=lambda kind, info: losses.append(info["loss"]) if kind == "step" else None)
    assert res.steps == 60 and len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5  # the distillation loss falls
    assert res.before < 0.9 and res.best > res.before + 0.05  # held-out cosine to the teacher rises
    assert len(res.curve) >= 3  # periodic evaluation
    # the best checkpoint is sparsa's packed format; the pruned weights are still exactly zero
    assert (tmp_path / "out" / "sparsa-model.safetensors.index.json").is_file()
    rec = sparsa.load(tmp_path / "out", dense=True)
    pruned = sparsa.load(sdir, dense=True)
    for (name, m), (_, p) in zip(sparsa.select_modules(rec), sparsa.select_modules(pruned)):
        assert torch.all(m.weight[p.weight == 0] == 0), name
        assert not torch.equal(m.weight, p.weight), f"{name} did not train"
    index = json.loads((tmp_path / "out" / "sparsa-model.safetensors.index.json").read_text())
    recipe = index["sparsa"]["recipe"]
    assert recipe["method"] == "recover" and recipe["recovery"]["step"] == res.best_step
    assert not list(tmp_path.glob(".out*"))  # no temporary folder left behind
    # a recovered (packed) checkpoint is itself a valid input: recover it further
    res2 = recover(tmp_path / "out", data, tmp_path / "again", teacher=tdir,
                   settings=RecoverSettings(minutes=1, max_steps=3, batch_size=8, seq_len=16))
    assert res2.before == pytest.approx(res.best, abs=2e-3)


def test_bf16_distillation_matches_fp32_and_keeps_fp32_weights_and_zeros(tiny, tmp_path):
    """precision="bf16": the loss and its gradient agree with the fp32 pass within bfloat16's precision (the
    reference), the trained parameters and the optimizer stay fp32, the pruned weights stay exactly zero, and
    the run recovers about as far as the same run in fp32."""
    from sparsa.runtime.models import load_pretrained
    from sparsa.train import RecoverSettings, recover
    from sparsa.train.data import EncoderBatches
    from sparsa.train.distiller import Distiller

    tdir, sdir, data = tiny
    student, tok, _ = load_pretrained(sdir)
    teacher, _, _ = load_pretrained(tdir)
    batch = next(EncoderBatches(tok, data.read_text().splitlines(), 16, 24, 0, True))
    grads, losses = {}, {}
    for precision in ("fp32", "bf16"):
        student.zero_grad(set_to_none=True)
        loss, _ = Distiller(student, teacher, "encoder", precision=precision).loss(batch)
        assert loss.dtype == torch.float32
        loss.backward()
        losses[precision] = float(loss.detach())
        grads[precision] = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    assert torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0) > 0.98
    assert grads["bf16"].dtype == torch.float32

    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        runs[precision] = recover(sdir, data, out, teacher=tdir, settings=RecoverSettings(
            minutes=10, max_steps=40, lr=2e-3, batch_size=16, seq_len=24, warmup_steps=5, eval_minutes=10,
            precision=precision))
        rec = sparsa.load(out, dense=True)
        for (name, m), (_, p) in zip(sparsa.select_modules(rec), sparsa.select_modules(student)):
            assert m.weight.dtype == torch.float32, name
            assert torch.all(m.weight[p.weight == 0] == 0), name
    assert runs["bf16"].best > runs["bf16"].before + 0.05
    assert runs["bf16"].best == pytest.approx(runs["fp32"].best, abs=0.02)
    recipe = json.loads((tmp_path / "bf16" / "sparsa-model.safetensors.index.json").read_text())["sparsa"]["recipe"]
    assert recipe["recovery"]["settings"]["precision"] == "bf16"


def test_eval_reads_a_recovered_packed_checkpoint(tiny, tmp_path):
    """`sparsa eval` on recover's packed output: the source comes from the recipe in its index, and the cosine
    equals the one computed by hand from the unpacked model and the teacher (the reference)."""
    from sparsa.eval import embedding_fidelity, encode, heldout_sentences
    from sparsa.runtime.models import load_pretrained
    from sparsa.train import RecoverSettings, recover

    tdir, sdir, data = tiny
    recover(sdir, data, tmp_path / "out", teacher=tdir,
            settings=RecoverSettings(minutes=5, max_steps=6, lr=2e-3, batch_size=8, seq_len=16))
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output.strip().splitlines()[-1])
    teacher, tok, _ = load_pretrained(tdir)
    sents = heldout_sentences()
    with torch.inference_mode():
        ref = embedding_fidelity(encode(teacher, tok, sents), encode(sparsa.load(tmp_path / "out", dense=True),
                                                                     tok, sents))
    assert got["source"] == str(tdir.resolve()) and got["kind"] == "encoder"
    assert got["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert got["cosine_mean"] == pytest.approx(ref.cosine_mean, abs=1e-5) and got["cosine_mean"] < 0.999


def test_a_damaged_recipe_is_one_error_naming_the_file(tiny, tmp_path):
    """recover and eval read how a folder was made through one reader; a sparsa.json that is not a JSON object
    or not JSON at all stops them with one message naming the file, before any model is loaded."""
    import shutil

    tdir, sdir, data = tiny
    bad = tmp_path / "student"
    shutil.copytree(sdir, bad)
    for text, msg in (("[1, 2]", "must hold a JSON object"), ("{not json", "is not valid JSON")):
        (bad / "sparsa.json").write_text(text)
        for args in (["recover", str(bad), "--data", str(data), "--out", str(tmp_path / "o")],
                     ["eval", str(bad)]):
            r = CliRunner().invoke(app, args)
            assert r.exit_code == 2, r.output
            flat = " ".join(r.output.split())
            assert msg in flat and "sparsa.json" in flat, r.output
        assert not (tmp_path / "o").exists()


def test_a_scheduled_run_saves_only_checkpoints_at_the_final_sparsity(tiny, tmp_path):
    """GMP from the 60% student to 80%: the denser points before the schedule's end score better against the
    teacher, yet the saved best checkpoint is one with the final masks."""
    from sparsa.train import RecoverSettings, recover

    tdir, sdir, data = tiny
    res = recover(sdir, data, tmp_path / "out", teacher=tdir,
                  settings=RecoverSettings(minutes=10, max_steps=30, lr=1e-3, batch_size=8, seq_len=16,
                                           warmup_steps=2, eval_minutes=1e-5, schedule_end=0.5,
                                           training={"method": "gmp", "sparsity": 0.8, "init": "current"}))
    end = res.config["end_step"]
    early = [p for p in res.curve[1:] if p.step < end]
    assert end == 15 and early and max(p.metric for p in early) > res.best  # a denser point scored higher...
    assert res.best_step >= end  # ...but the saved one is at or after the schedule's end
    rec = sparsa.load(tmp_path / "out", dense=True)
    w = [m.weight for _, m in sparsa.select_modules(rec)]
    assert sum(int((x == 0).sum()) for x in w) / sum(x.numel() for x in w) == pytest.approx(0.8, abs=0.01)


def test_recover_with_a_denser_last_block_keeps_the_overall_sparsity(tiny, tmp_path):
    """`--override` through the CLI: GMP from the 60% student to 80% overall, block 1 trained to 70%, so the
    other block ends at 90% (equal parameter counts per block); the saved checkpoint has exactly that."""
    tdir, sdir, data = tiny
    r = _run(str(sdir), "--teacher", str(tdir), "--data", str(data), "--out", str(tmp_path / "o"), "--minutes",
             "5", "--steps", "12", "--batch-size", "8", "--seq-len", "16", "--eval-minutes", "0.00001",
             "--method", "gmp", "--sparsity", "0.8", "--init", "current", "--override", "re:.*layer\\.1\\..*=0.7",
             "--json")
    assert r.exit_code == 0, r.output
    rec = sparsa.load(tmp_path / "o", dense=True)
    zeros = {n: float((m.weight == 0).float().mean()) for n, m in sparsa.select_modules(rec)}
    assert all(v == pytest.approx(0.7, abs=0.01) for n, v in zeros.items() if ".layer.1." in n)
    assert all(v == pytest.approx(0.9, abs=0.01) for n, v in zeros.items() if ".layer.0." in n)
    w = [m.weight for _, m in sparsa.select_modules(rec)]
    assert sum(int((x == 0).sum()) for x in w) / sum(x.numel() for x in w) == pytest.approx(0.8, abs=0.01)


def test_cli_recover_progress_and_json(tiny, tmp_path):
    tdir, sdir, data = tiny
    p = subprocess.run([sys.executable, "-m", "sparsa.cli", "recover", str(sdir), "--teacher", str(tdir), "--data",
                        str(data), "--minutes", "1", "--steps", "8", "--batch-size", "8", "--seq-len", "16",
                        "--out", str(tmp_path / "o"), "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["steps"] == 8 and r["metric"] == "cosine_mean" and abs(r["sparsity"] - 0.6) < 0.01
    p = _run(str(sdir), "--teacher", str(tdir), "--data", str(data), "--minutes", "1", "--steps", "4",
             "--batch-size", "8", "--seq-len", "16", "--out", str(tmp_path / "o2"))
    assert p.exit_code == 0, p.output
    assert "held-out cosine_mean" in p.output and "exactly" in p.output


def test_bad_input_fails_before_training(tiny, tmp_path):
    tdir, sdir, data = tiny
    other = tmp_path / "other"
    _bert(len(WORDS) + 5, hidden=48).save_pretrained(other)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    base = ["--minutes", "1", "--out", str(tmp_path / "o")]
    cases = [
        ([str(sdir), "--teacher", str(other), "--data", str(data)], "not the same architecture"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(empty)], "is empty"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(tmp_path / "none.txt")], "does not exist"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(data), "--method", "gmp", "--sparsity", "0.8",
          "--schedule-start", "0.6", "--schedule-end", "0.3"], "before it starts"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(data), "--method", "rigl", "--sparsity", "0.8",
          "--structure", "3x1"], "3x1 blocks do not tile"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(data), "--method", "lottery"],
         "known methods: fixed, random, gmp, set, rigl, granet, srste, decay"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(data), "--loss", "colour=1"], "--loss 'colour=1'"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(data), "--method", "gmp", "--sparsity", "0.8",
          "--override", "re:.*layer\\.1\\..*"], "--override takes PATTERN=SPARSITY"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(data), "--method", "gmp", "--sparsity", "0.8",
          "--override", "re:pooler\\.dense=0.5"], "matches none of the 12 trained modules"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(data), "--method", "gmp", "--sparsity", "0.8",
          "--override", "Linear=0.1"], "cannot be kept"),
        ([str(sdir), "--teacher", str(tdir), "--data", str(data), "--precision", "fp16"],
         "precision must be one of fp32, bf16, got 'fp16'"),
    ]
    for args, msg in cases:
        r = _run(*args, *base)
        assert r.exit_code == 2, (args, r.output)
        assert msg in " ".join(r.output.split()), (args, r.output)
        assert not (tmp_path / "o").exists()


def test_hf_trainer_callback_keeps_zeros_and_resumes(tmp_path):
    from transformers import Trainer, TrainingArguments

    from conftest import tiny_gpt2
    from sparsa.train import SparsaCallback
    from sparsa.train.callback import MASKS_FILE

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            ids = torch.randint(0, 100, (16,), generator=g)
            return {"input_ids": ids, "labels": ids}

    def trainer(model, cb, steps):
        args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=steps, per_device_train_batch_size=8,
                                 learning_rate=1e-2, weight_decay=0.1, save_steps=6, logging_steps=3,
                                 report_to=[], use_cpu=True, disable_tqdm=True)
        return Trainer(model=model, args=args, train_dataset=Windows(), callbacks=[cb])

    torch.manual_seed(0)
    model = tiny_gpt2()
    cb = SparsaCallback(method="rigl", sparsity=0.8, update_every=2)  # total_steps: the Trainer's max_steps
    trainer(model, cb, 6).train()
    assert (tmp_path / "run" / "checkpoint-6" / MASKS_FILE).is_file()
    masks6 = {t.name: cb.training.mask(t.name).clone() for t in cb.training.targets}
    assert cb.training.finalized and abs(cb.training.sparsity() - 0.8) < 1e-3
    for t in cb.training.targets:  # after training: plain parameters with exact zeros
        assert torch.all(t.weight()[~masks6[t.name]] == 0)

    # resume at step 6 for 6 more steps with a fresh model and callback: masks continue from the checkpoint
    cb2 = SparsaCallback(method="rigl", sparsity=0.8, update_every=2, total_steps=12)
    trainer(tiny_gpt2(), cb2, 12).train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-6"))
    assert cb2.training.step_count == 12
    for t in cb2.training.targets:
        assert torch.all(t.weight()[~cb2.training.mask(t.name)] == 0)


def test_callback_rejects_bad_settings_at_once():
    from sparsa.train import ConfigError, SparsaCallback

    with pytest.raises(ConfigError, match="known methods"):
        SparsaCallback(method="lotery", sparsity=0.5)
    with pytest.raises(ConfigError, match="not after its start"):
        SparsaCallback(method="gmp", sparsity=0.5, start_step=50, end_step=10)


@pytest.mark.parametrize("script", ["sparse_training_loop.py", "hf_trainer_sparse.py"])
def test_examples_run(script):
    p = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--quick"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pruned weights exactly zero: True" in p.stdout


def test_recover_nm_with_srste_saves_exact_2_4(tiny, tmp_path):
    from sparsa.train import RecoverSettings, recover

    tdir, sdir, data = tiny
    res = recover(sdir, data, tmp_path / "nm", teacher=tdir,
                  settings=RecoverSettings(minutes=5, max_steps=4, batch_size=8, seq_len=16,
                                           training={"method": "srste", "structure": "2:4"}))
    assert res.sparsity == pytest.approx(0.5)
    index = json.loads((tmp_path / "nm" / "sparsa-model.safetensors.index.json").read_text())
    assert {m["structure"] for m in index["sparsa"]["modules"].values()} == {"2:4"}
    assert {m["format"] for m in index["sparsa"]["modules"].values()} == {"nm"}


def test_recover_decoder_distils_logits_and_reports_perplexity(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from sparsa.train import RecoverSettings, recover

    tok = _tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                         initializer_range=0.2, bos_token_id=tok.cls_token_id,
                                         eos_token_id=tok.sep_token_id)).eval()
    teacher.save_pretrained(tmp_path / "t")
    tok.save_pretrained(tmp_path / "t")
    student, rep = sparsa.prune(teacher, "magnitude", 0.7, inplace=False)
    save_pruned(student, tok, tmp_path / "s", {"method": "magnitude", "modules": {m.name: m.structure
                                                                                   for m in rep.modules}}, None)
    rng = random.Random(1)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(300)))
    parts = []
    res = recover(tmp_path / "s", data, tmp_path / "o", teacher=tmp_path / "t",
                  settings=RecoverSettings(minutes=5, max_steps=30, lr=3e-3, batch_size=8, seq_len=32,
                                           warmup_steps=3),
                  on_event=lambda k, i: parts.append(i) if k == "step" else None)
    assert res.kind == "decoder" and res.metric == "perplexity"
    assert {"kl", "squarehead"} <= set(parts[0])
    # the teacher is random, so text perplexity says little here: the distillation losses must fall
    assert math.isfinite(res.before) and math.isfinite(res.best)
    assert sum(p["kl"] for p in parts[-5:]) < 0.7 * sum(p["kl"] for p in parts[:5])
    assert sum(p["squarehead"] for p in parts[-5:]) < 0.7 * sum(p["squarehead"] for p in parts[:5])


def test_recover_help_has_an_example():
    r = CliRunner().invoke(app, ["recover", "--help"])
    assert r.exit_code == 0 and "Example" in r.output and "sparsa recover" in r.output


def test_resizing_a_run_moves_a_schedule_only_before_its_end():
    """Re-sizing the run on measured step times (more steps fit than the first estimate said): a GMP schedule
    still to come is placed on the new length; one that has ended keeps its steps, so its final masks stay
    final, and only the run gets longer."""
    from sparsa.train.config import load_config
    from sparsa.train.recovery import _resized

    training = {"method": "gmp", "sparsity": 0.8, "init": "current"}

    def schedule(total: int):  # as recover places it: the schedule ends at 60% of the run
        return load_config(training, total_steps=total, start_step=0, end_step=int(0.6 * total))

    cfg = schedule(1000)
    before_end = _resized(cfg, 300, 1100, schedule)
    assert (before_end.total_steps, before_end.resolved_end) == (1100, 660)
    after_end = _resized(cfg, 700, 1100, schedule)
    assert (after_end.total_steps, after_end.start_step, after_end.resolved_end) == (1100, 0, 600)
    shorter = _resized(cfg, 650, 640, schedule)  # a slower run gets shorter, its schedule still as it ran
    assert (shorter.total_steps, shorter.resolved_end) == (640, 600)
    assert _resized(cfg, 600, 550, schedule).total_steps == 600  # never shorter than the schedule it ran
    fixed = load_config({"method": "fixed"}, total_steps=1000)
    assert _resized(fixed, 700, 1100, lambda t: load_config({"method": "fixed"}, total_steps=t)).total_steps == 1100
