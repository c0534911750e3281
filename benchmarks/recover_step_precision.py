"""Step time of recover's distillation step (80% 4x1 student, batches of 32 grouped sentences), fp32 against CPU
autocast bf16, interleaved in one process. Needs benchmarks/data/recover/train_sentences.txt (recover_minilm.py)."""
import copy, os, statistics, time, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from pathlib import Path
from sparsa.runtime.models import default_model_path, load_pretrained
from sparsa.train import SparseTraining
from sparsa.train.distiller import Distiller
from sparsa.train.data import EncoderBatches
torch.manual_seed(0)
path = default_model_path()
dense, tok, _ = load_pretrained(path)
student = copy.deepcopy(dense)
lines = open(Path(__file__).parent / "data/recover/train_sentences.txt").read().splitlines()[:4000]
batches = EncoderBatches(tok, lines, 32, 64, 0, True)
sp = SparseTraining(student, method="fixed", init="magnitude", sparsity=0.8, structure="4x1", total_steps=100)
opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
sp.attach(opt)
d = Distiller(student, dense, "encoder")
bs = [next(batches) for _ in range(8)]
def step(b, amp):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss, _ = d.loss(b)
    loss.backward(); opt.step(); sp.step(); opt.zero_grad(set_to_none=True)
def teacher(b, amp):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        dense(**b, output_hidden_states=True)
for amp in (False, True): step(bs[0], amp)
ts = {"fp32 step": [], "bf16 step": [], "fp32 teacher": [], "bf16 teacher": []}
for r in range(3):
    for b in bs:
        for amp in (False, True):
            t = time.perf_counter(); step(b, amp); ts[("bf16" if amp else "fp32") + " step"].append(time.perf_counter() - t)
            t = time.perf_counter(); teacher(b, amp); ts[("bf16" if amp else "fp32") + " teacher"].append(time.perf_counter() - t)
for k, v in ts.items(): print(k, f"{statistics.median(v)*1e3:.1f} ms")
