"""Train the small GPT-style decoder that the pruning benchmarks use, on offline Wikipedia text (from
benchmarks/offline_text.py), in about 15 minutes on 2 CPU cores. Nothing is downloaded.

* tokenizer: byte-level BPE with 4096 tokens, trained on the training articles (tokenizers library);
* model: transformers GPT2LMHeadModel, 4 layers, 256 wide, 4 heads, 128 positions (~4.3M parameters, tied
  embeddings), trained with AdamW and a cosine schedule on random 128-token windows;
* output: a Hugging Face folder (default benchmarks/data/tiny-lm, ignored by git: ~17 MB) with the tokenizer.

    python benchmarks/offline_text.py
    flock /tmp/sparsa-cpu.lock python benchmarks/train_tiny_lm.py --minutes 14
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent


def train_tokenizer(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(text.split("\n"), trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return GPT2TokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                             unk_token="<|endoftext|>")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--out", type=Path, default=HERE / "data" / "tiny-lm")
    ap.add_argument("--minutes", type=float, default=14.0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    train_text = (args.data / "wiki_train.txt").read_text(encoding="utf-8")
    valid_text = (args.data / "wiki_valid.txt").read_text(encoding="utf-8")
    tok = train_tokenizer(train_text, args.vocab)
    ids = torch.tensor(tok(train_text)["input_ids"])  # (L,)
    vids = torch.tensor(tok(valid_text)["input_ids"])
    cfg = GPT2Config(vocab_size=len(tok), n_positions=args.seq, n_embd=args.width, n_layer=args.layers,
                     n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    budget = args.minutes * 60
    g = torch.Generator().manual_seed(args.seed)
    t0, step, est_steps = time.perf_counter(), 0, None
    model.train()
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed > budget:
            break
        if step == 20:
            est_steps = int(budget / (elapsed / 20))
        total = est_steps or 10**9
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, ids.numel() - args.seq - 1, (args.batch,), generator=g)
        x = torch.stack([ids[s : s + args.seq] for s in starts.tolist()])  # (B, T)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {elapsed:.0f}s", flush=True)
        step += 1
    model.eval()
    from sparsa.eval import perplexity

    ppl = perplexity(model, tok, valid_text, seq_len=args.seq)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    info = {"params": params, "steps": step, "tokens_seen": step * args.batch * args.seq, "train_tokens": ids.numel(),
            "valid_tokens": vids.numel(), "valid_perplexity": ppl, "minutes": (time.perf_counter() - t0) / 60,
            "config": {k: getattr(args, k) for k in ("vocab", "width", "layers", "seq", "batch", "lr", "seed")}}
    (args.out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
