"""Coverage-guided fuzzing of the checkpoint decoder with atheris (libFuzzer), for long campaigns outside pytest
(the hypothesis tests in test_checkpoint_fuzz.py run in CI). Optional: `pip install atheris`.

    flock /tmp/sparsa-cpu.lock python tests/fuzz_checkpoint_atheris.py -max_total_time=300

(measured: ~900 inputs/s on the 2-core machine after a few minutes of instrumentation at start-up.)

Each input is one selector byte (which file of a small valid checkpoint to replace) followed by that file's new
content; the initial corpus is the valid files themselves, so libFuzzer mutates real shards and the real index.
The only exception allowed out of read_checkpoint is CheckpointError; anything else, or a crash, is a finding.
Whatever reads without error must hold exactly the original tensors.
"""

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

import torch

from sparsa.checkpoint import CheckpointError, read_checkpoint, save

# instrument_all rather than instrument_imports: an editable install imports sparsa through a custom loader that
# instrument_imports does not see into. It instruments all of torch too (~29k functions): minutes at start-up.
atheris.instrument_all()

sys.path.insert(0, str(Path(__file__).parent))
from checkpoint_helpers import mixed_model  # noqa: E402

ROOT = Path(tempfile.mkdtemp(prefix="sparsa-atheris-"))
atexit.register(shutil.rmtree, ROOT, True)
SEED = save(mixed_model(), ROOT / "seed", max_shard_size="20KB")
NAMES = sorted(p.name for p in SEED.iterdir() if p.name != "config.json")
ORIGINAL = {n: (SEED / n).read_bytes() for n in NAMES}
WORK = Path(shutil.copytree(SEED, ROOT / "work"))
_ck = read_checkpoint(SEED)
PACKED = {m: {k: t.clone() for k, t in p.tensors().items()} for m, p in _ck.packed.items()}
DENSE = {k: t.clone() for k, t in _ck.tensors.items()}


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name = NAMES[data[0] % len(NAMES)]
    (WORK / name).write_bytes(data[1:])
    try:
        ck = read_checkpoint(WORK)
    except CheckpointError:
        return
    finally:
        (WORK / name).write_bytes(ORIGINAL[name])
    for m, tensors in PACKED.items():
        for k, t in ck.packed[m].tensors().items():
            assert t.dtype == tensors[k].dtype and torch.equal(t, tensors[k]), (m, k)
    for k, t in ck.tensors.items():
        assert torch.equal(t, DENSE[k]), k


def main() -> None:
    corpus = ROOT / "corpus"
    corpus.mkdir()
    for i, n in enumerate(NAMES):
        (corpus / f"seed-{i}").write_bytes(bytes([i]) + ORIGINAL[n])
    args = sys.argv + [str(corpus), f"-max_len={max(len(b) for b in ORIGINAL.values()) + 4096}"]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()  # does not return: libFuzzer exits the process


if __name__ == "__main__":
    main()
