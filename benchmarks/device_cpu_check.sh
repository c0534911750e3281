#!/bin/bash
# One-shot check of the C++ core on a lent device machine's CPU (BENCHMARKS.md, "A second machine"): build from
# source with the machine's own Python and torch, the kernel and autotune tests at all its cores, thread scaling.
# That machine reaches no package index: pydantic and its three dependencies travel as wheels in .whl/ (ignored by
# git; fetch them with `pip download --python-version 3.12 --platform manylinux2014_x86_64 --only-binary=:all:
# --no-deps -d .whl pydantic pydantic_core annotated-types typing-inspection`). Run from the device tool as
# `bash benchmarks/device_cpu_check.sh` with `.whl` carried; results land in $OUT.
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
{ lscpu; nproc; python3 -c "import torch; print(torch.__version__, torch.get_num_threads())"; } > $OUT/machine.txt 2>&1
t0=$(date +%s)
python3 -m pip install -q --no-build-isolation --no-deps --no-index --no-cache-dir --target /tmp/sp . > $OUT/build.txt 2>&1 || { tail -40 $OUT/build.txt; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
export PYTHONPATH=/tmp/sp:/tmp/site
python3 -c "import sparsa._C as C, sparsa.kernels as K; print(C.cpu_features() if hasattr(C,'cpu_features') else ''); print(sorted({k.isa for k in K.KERNELS}))" 2>&1 | tee -a $OUT/machine.txt
cd tests && timeout 200 python3 -m pytest -q -x -p no:cacheprovider -o addopts="" -W ignore::DeprecationWarning test_kernels.py test_autotune.py 2>&1 | tee $OUT/tests.txt | tail -8; cd ..
timeout 150 python3 benchmarks/spmm.py --shapes minilm.ffn_up bert.ffn_up --n 128 --structures 4x1 unstructured --sparsities 0.9 0.99 --threads 1 2 4 8 16 --kernels 4x1rt bitmask csr --rounds 7 2>&1 | tee $OUT/scaling.txt | tail -40
timeout 150 python3 benchmarks/spmm.py --shapes llama7b.attn --n 1 8 --structures 4x1 unstructured 2:4 --sparsities 0.9 --threads 1 2 16 --kernels avx512 --rounds 7 2>&1 | tee $OUT/decode.txt | tail -30
echo done
