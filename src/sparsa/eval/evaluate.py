"""Evaluate a pruned model folder against what it came from: ``evaluate_dir(path)``. The folder is a
dense-with-zeros one (``sparsa prune``, with its sparsa.json) or a packed sparsa checkpoint (``sparsa pack``,
``sparsa recover``; its index keeps the recipe), unpacked into plain modules for the evaluation.

* encoders: mean cosine (and min, nearest-neighbour agreement) of sentence embeddings on sparsa's held-out
  sentences, against the dense model named by ``source`` in the folder's recipe;
* causal LMs: perplexity on a text file (``text=``), of the pruned model and, when the source is there, of
  the dense one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data import heldout_sentences
from .embeddings import embedding_fidelity, encode
from .perplexity import perplexity

__all__ = ["EvalResult", "evaluate_dir"]


@dataclass
class EvalResult:
    model: str
    source: str | None
    kind: str  # "encoder" or "decoder"
    sparsity: float  # zeros over the linear-like weights (heads and poolers excluded, as prune leaves them)
    cosine_mean: float | None = None
    cosine_min: float | None = None
    nn_agreement: float | None = None
    n_sentences: int | None = None
    perplexity: float | None = None
    dense_perplexity: float | None = None
    tokens: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _source_of(path: Path) -> str | None:
    from ..checkpoint.reader import recipe_of

    src = recipe_of(path).get("source")
    if src == "sentence-transformers/all-MiniLM-L6-v2":
        return None  # the bundled default model
    return src


def evaluate_dir(path: str | Path, text: str | Path | None = None, source: str | Path | None = None,
                 seq_len: int = 128, max_windows: int | None = None) -> EvalResult:
    from ..checkpoint.model import load_packed
    from ..checkpoint.reader import is_packed, recipe_of
    from ..modules import DEFAULT_IGNORE, DEFAULT_TARGETS, select_modules, weight_out_in
    from ..prune.calibration import is_causal_lm
    from ..runtime.models import ModelLoadError, _load_tokenizer, load_encoder, load_pretrained

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"'{path}' is not a Hugging Face model folder (no config.json)")
    meta_src = _source_of(path)
    has_meta = bool(recipe_of(path))
    src = str(source) if source is not None else meta_src
    packed = is_packed(path)
    if packed:
        model, _ = load_packed(path, dense=True)
        tok, name = _load_tokenizer(path), str(path)
    else:
        model, tok, name = load_pretrained(path)
    mods = select_modules(model, DEFAULT_TARGETS, DEFAULT_IGNORE)
    numel = sum(weight_out_in(m).numel() for _, m in mods)
    zeros = sum(int((weight_out_in(m) == 0).sum()) for _, m in mods)
    sp = zeros / max(1, numel)
    if is_causal_lm(model):
        if text is None:
            raise ValueError("perplexity of a decoder needs evaluation text: pass --text FILE")
        body = Path(text).read_text(encoding="utf-8")
        ppl = perplexity(model, tok, body, seq_len=seq_len, max_windows=max_windows)
        dense_ppl = None
        if src is not None and Path(src).is_dir():
            dense, _, _ = load_pretrained(src)
            dense_ppl = perplexity(dense, tok, body, seq_len=seq_len, max_windows=max_windows)
        n_tok = len(tok(body, add_special_tokens=False)["input_ids"])
        return EvalResult(name, src, "decoder", sp, perplexity=ppl, dense_perplexity=dense_ppl, tokens=n_tok)
    if not has_meta and source is None:
        raise ValueError(f"'{path}' has no sparsa.json or packed recipe naming its source; pass --source "
                         "DENSE_FOLDER")
    if packed:
        if tok is None:
            raise ModelLoadError(f"'{path}' has no tokenizer files; an encoder evaluation needs them")
        enc = model
    else:
        enc, tok, _ = load_encoder(path)
    dense, _, _ = load_encoder(src)  # None -> the bundled all-MiniLM-L6-v2
    sents = heldout_sentences()
    with torch.inference_mode():
        fid = embedding_fidelity(encode(dense, tok, sents), encode(enc, tok, sents))
    return EvalResult(name, src or "sentence-transformers/all-MiniLM-L6-v2", "encoder", sp,
                      cosine_mean=fid.cosine_mean, cosine_min=fid.cosine_min, nn_agreement=fid.nn_agreement,
                      n_sentences=fid.n_sentences)
