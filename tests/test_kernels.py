"""Every registered kernel against the plain-PyTorch reference of its format.

The cases come from hypothesis: token counts 1 (decode), 2..4 (decode), odd and large (batched, several
tiles); weight shapes not multiples of the vector width or of the block; all-zero rows; 0% and 99% sparsity;
float32 and bfloat16 stored values; bias or none; activations with a row stride wider than the row.
Kernels for an ISA this CPU lacks are skipped with a reason, never passed.
"""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsa.formats import pack
from sparsa.kernels import KERNELS, KernelError, KernelSpec, kernels_for, prepare, spmm

from helpers import assert_close_to_reference, sparse_weight

GENERIC_BLOCKS = [(2, 2), (3, 5), (1, 2), (4, 1), (8, 1)]


def _structure_for(k: KernelSpec, draw_block) -> tuple[str, tuple[int, int]]:
    """(structure spec, (row multiple, col multiple)) for a kernel."""
    if k.format == "bsr":
        r, c = k.block if k.block is not None else draw_block
        return f"{r}x{c}", (r, c)
    if k.format == "nm":
        return "2:4", (1, 4)
    return "unstructured", (1, 1)


def _skip_unavailable(k: KernelSpec) -> None:
    if not k.available:
        pytest.skip(f"{k.name}: this CPU lacks {k.isa}")


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@settings(max_examples=25, deadline=None)
@given(
    n=st.sampled_from([1, 2, 3, 4, 5, 7, 17, 33, 130]),
    rows=st.integers(1, 13),
    cols=st.integers(1, 11),
    sparsity=st.sampled_from([0.0, 0.5, 0.8, 0.99]),
    with_bias=st.booleans(),
    zero_rows=st.integers(0, 2),
    stride_pad=st.sampled_from([0, 3]),
    block=st.sampled_from(GENERIC_BLOCKS),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_matches_reference(kernel, n, rows, cols, sparsity, with_bias, zero_rows, stride_pad, block, seed):
    _skip_unavailable(kernel)
    spec, (rm, cm) = _structure_for(kernel, block)
    g = torch.Generator().manual_seed(seed)
    out, inp = rows * rm, cols * cm
    w = sparse_weight(out, inp, spec, None if spec == "2:4" else sparsity, g, zero_rows=min(zero_rows, rows) * rm)
    p = pack(w, spec, kernel.weight_dtype, format=kernel.format)
    assert kernel.supports(p)
    wq = p.to_dense().float()  # the weight as stored (bf16-rounded when the values are bf16)
    xbig = torch.randn(n, inp + stride_pad, generator=g)
    x = xbig[:, :inp]  # rows contiguous, row stride wider than the row
    b = torch.randn(out, generator=g) if with_bias else None
    y = spmm(p, x, b, kernel)
    ref = p.reference_matmul(x, b)
    assert y.shape == (n, out)
    assert_close_to_reference(y, x, wq, b, ref)
    # and the reference itself agrees with a dense matmul of the stored weight
    assert_close_to_reference(ref, x, wq, b, x.double() @ wq.double().T + (b.double() if b is not None else 0))


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.format != "bsr" or k.block == (4, 1)],
                         ids=lambda k: k.name)
def test_large_and_fully_dense_or_empty(kernel):
    """One bigger case per format: 0% sparsity, and a weight with no nonzero at all."""
    _skip_unavailable(kernel)
    spec, (rm, cm) = _structure_for(kernel, (4, 1))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 388, generator=g)
    for w in (sparse_weight(44 * rm, 388, spec, None if spec == "2:4" else 0.0, g), torch.zeros(44 * rm, 388)):
        p = pack(w, spec, kernel.weight_dtype, format=kernel.format)
        y = spmm(p, x, None, kernel)
        assert_close_to_reference(y, x, p.to_dense().float(), None, p.reference_matmul(x))


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.format != "bsr"], ids=lambda k: k.name)
def test_decode_of_long_rows_matches_reference(kernel):
    """Decode (2 to 8 tokens) on rows of 700 inputs: the unstructured kernels switch between walking the weight
    once per token and walking it once for all tokens through transposed inputs (by token count and density), so
    both sides of the switch, a column count that is no multiple of 8 or 64, several 512-column blocks of mask
    words per row, a row stride wider than the row and a bias."""
    _skip_unavailable(kernel)
    spec, _ = _structure_for(kernel, (4, 1))
    g = torch.Generator().manual_seed(7)
    for sparsity in (0.5, 0.95):
        w = sparse_weight(37, 700, spec, None if spec == "2:4" else sparsity, g)
        p = pack(w, spec, kernel.weight_dtype, format=kernel.format)
        b = torch.randn(37, generator=g)
        for n in (2, 3, 5, 8):
            x = torch.randn(n, 703, generator=g)[:, :700]
            assert_close_to_reference(spmm(p, x, b, kernel), x, p.to_dense().float(), b, p.reference_matmul(x, b))


def test_every_format_and_dtype_has_a_portable_kernel():
    from sparsa.formats import FORMATS

    for fmt in FORMATS:
        for dt in (torch.float32, torch.bfloat16):
            assert any(k.format == fmt and k.weight_dtype == dt and k.isa == "scalar" for k in KERNELS)


def test_kernel_names_follow_the_grammar():
    for k in KERNELS:
        dtype, rest = k.name.split("_", 1)
        assert dtype == {"float32": "f32", "bfloat16": "bf16"}[str(k.weight_dtype).replace("torch.", "")]
        assert k.name.endswith("__" + k.isa) and f"_{k.format}" in k.name


def test_best_kernel_prefers_wide_isa_and_specialised_tiles():
    p = pack(sparse_weight(8, 8, "4x1", 0.5, torch.Generator().manual_seed(0)), "4x1")
    ks = kernels_for(p)
    assert ks[0].block == (4, 1) and ks[-1].block is None
    assert ks[0].isa in ("avx512", "avx2", "neon", "scalar")


@pytest.mark.parametrize("block", [(4, 1), (8, 1), (16, 1)])
def test_batched_only_variants_run_their_base_decode_and_are_left_out_there(block):
    """The register-tile ("rt") variants share the R x 1 kernel's decode code: bit-identical outputs at
    n <= DECODE_MAX_N, so kernels_for(..., n) leaves them out there and keeps them above it."""
    from sparsa.kernels import DECODE_MAX_N

    r, c = block
    g = torch.Generator().manual_seed(5)
    w = sparse_weight(6 * 16 + r, 40, f"{r}x{c}", 0.7, g)
    p = pack(w, f"{r}x{c}")
    b = torch.randn(w.shape[0], generator=g)
    variants = [k for k in kernels_for(p) if k.batched_only]
    assert variants and all(k.name.endswith(f"{r}x{c}rt_spmm__" + k.isa) for k in variants)
    assert all(not k.batched_only for k in KERNELS if "rt_spmm" not in k.name)
    for k in variants:
        base = next(kb for kb in kernels_for(p) if kb.isa == k.isa and kb.name == k.name.replace("rt_spmm", "_spmm"))
        for n in (1, 3, DECODE_MAX_N):
            x = torch.randn(n, 40, generator=g)
            assert torch.equal(spmm(p, x, b, k), spmm(p, x, b, base))
    assert not any(k.batched_only for k in kernels_for(p, n=DECODE_MAX_N))
    assert {k.name for k in variants} <= {k.name for k in kernels_for(p, n=DECODE_MAX_N + 1)}


def test_wrong_inputs_raise_clear_errors():
    g = torch.Generator().manual_seed(0)
    p = pack(sparse_weight(8, 8, "4x1", 0.5, g), "4x1")
    with pytest.raises(KernelError, match=r"x must have shape \(N, 8\)"):
        spmm(p, torch.randn(3, 9))
    with pytest.raises(KernelError, match="float32 CPU tensor"):
        spmm(p, torch.randn(3, 8, dtype=torch.float64))
    with pytest.raises(KernelError, match="unknown kernel 'nope'"):
        spmm(p, torch.randn(3, 8), kernel="nope")
    wrong = next(k for k in KERNELS if k.format == "bitmask")
    with pytest.raises(KernelError, match="cannot run format 'bsr'"):
        spmm(p, torch.randn(3, 8), kernel=wrong)
    from sparsa import _C

    with pytest.raises(ValueError, match="bias must have out_features"):
        _C.PackedHandle("bsr", 8, 8, p.values, p.row_ptr, p.col_idx, None, br=4, bc=1, bias=torch.randn(5))
    with pytest.raises(ValueError, match="unknown format 'csc'"):
        _C.PackedHandle("csc", 8, 8, p.values, p.row_ptr, p.col_idx, None)
    h = _C.PackedHandle("bsr", 8, 8, p.values, p.row_ptr, p.col_idx, None, br=4, bc=1)
    with pytest.raises(ValueError, match=r"y must have shape \(2, 8\)"):
        h.run(kernels_for(p)[0].index, torch.randn(2, 8).numpy(), torch.empty(3, 8).numpy())
    with pytest.raises(ValueError, match="does not run the bsr format"):
        h.run(wrong.index, torch.randn(2, 8).numpy(), torch.empty(2, 8).numpy())


def test_out_argument_is_checked_and_written_in_place():
    g = torch.Generator().manual_seed(3)
    w = sparse_weight(16, 8, "4x1", 0.5, g)
    q = prepare(pack(w, "4x1"))
    x = torch.randn(5, 8, generator=g)
    ref = x.double() @ w.double().T
    with pytest.raises(KernelError, match=r"out must have shape \(5, 16\)"):
        q(x, out=torch.empty(5, 17))
    with pytest.raises(KernelError, match="out must be a 2-D float32 CPU tensor"):
        q(x, out=torch.empty(5, 16, dtype=torch.float64))
    with pytest.raises(KernelError, match="out must have rows of 16 contiguous floats"):
        q(x, out=torch.empty(16, 5).T)  # columns contiguous, not rows
    big = torch.full((5, 20), 7.0)
    y = q(x, out=big[:, 2:18])  # rows of 16 inside rows of 20: the columns around them stay untouched
    assert y.data_ptr() == big[:, 2:18].data_ptr()
    assert torch.allclose(big[:, 2:18].double(), ref, atol=1e-5)
    assert (big[:, :2] == 7).all() and (big[:, 18:] == 7).all()
    # x whose rows repeat one row (stride 0) and x with columns strided (copied first)
    row = torch.randn(1, 8, generator=g)
    assert torch.allclose(q(row.expand(4, 8)).double(), (row.double() @ w.double().T).expand(4, 16), atol=1e-5)
    xt = torch.randn(8, 5, generator=g)
    assert torch.allclose(q(xt.T).double(), xt.T.double() @ w.double().T, atol=1e-5)


def test_run_at_checks_shapes_and_strides():
    g = torch.Generator().manual_seed(4)
    p = pack(sparse_weight(8, 8, "4x1", 0.5, g), "4x1")
    q = prepare(p)
    k = kernels_for(p)[0].index
    x, y = torch.randn(3, 8), torch.empty(3, 8)
    xp, yp = x.data_ptr(), y.data_ptr()
    with pytest.raises(ValueError, match="non-negative number of rows"):
        q._handle.run_at(k, xp, -1, 8, 8, yp, -1, 8, 8)
    with pytest.raises(ValueError, match="x has 9 features, the weight expects 8"):
        q._handle.run_at(k, xp, 3, 9, 9, yp, 3, 8, 8)
    with pytest.raises(ValueError, match=r"y must have shape \(3, 8\), got \(2, 8\)"):
        q._handle.run_at(k, xp, 3, 8, 8, yp, 2, 8, 8)
    with pytest.raises(ValueError, match="ldy >= out"):
        q._handle.run_at(k, xp, 3, 8, 8, yp, 3, 8, 4)
    with pytest.raises(ValueError, match="must not be null"):
        q._handle.run_at(k, 0, 3, 8, 8, yp, 3, 8, 8)
    with pytest.raises(ValueError, match="act must be 0"):
        q._handle.run_at(k, xp, 3, 8, 8, yp, 3, 8, 8, 1, 5)
    with pytest.raises(ValueError, match="y must have shape"):  # run_into hands the core the tensors' shapes
        q.run_into(x, torch.empty(3, 7), kernels_for(p)[0])
    q._handle.run_at(k, xp, 3, 8, 8, yp, 3, 8, 8)
    assert torch.allclose(y.double(), x.double() @ p.to_dense().double().T, atol=1e-5)


def test_prepared_call_checks_each_new_kernel_and_takes_grad_inputs():
    # __call__ skips the check of the kernel it checked on the previous call; any other kernel is still checked
    g = torch.Generator().manual_seed(1)
    w = sparse_weight(16, 8, "4x1", 0.5, g)
    q = prepare(pack(w, "4x1"))
    good = kernels_for(q.packed)[0]
    wrong = next(k for k in KERNELS if k.format == "bitmask")
    x = torch.randn(3, 8, generator=g, requires_grad=True)  # no .detach() needed by the caller
    ref = x.detach().double() @ w.double().T
    assert torch.allclose(q(x, good).double(), ref, atol=1e-5)
    with pytest.raises(KernelError, match="cannot run format 'bsr'"):
        q(x, wrong)
    with pytest.raises(KernelError, match="cannot run format 'bsr'"):
        q(x, wrong)
    assert torch.allclose(q(x, good).double(), ref, atol=1e-5)
    assert x.requires_grad and x.grad is None


def test_concurrent_calls_from_python_threads():
    g = torch.Generator().manual_seed(5)
    cases = []
    for spec, fmt in (("4x1", None), ("unstructured", None), ("unstructured", "csr"), ("2:4", None)):
        w = sparse_weight(64, 96, spec, None if spec == "2:4" else 0.7, g)
        p = pack(w, spec, format=fmt)
        x = torch.randn(40, 96, generator=g)
        cases.append((p, x, p.reference_matmul(x)))
    errors: list[str] = []

    def worker(i: int) -> None:
        p, x, ref = cases[i % len(cases)]
        for _ in range(30):
            y = spmm(p, x)
            if not torch.allclose(y, ref, rtol=1e-4, atol=1e-4):
                errors.append(f"thread {i}: wrong result")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.format != "bsr" or k.block in ((4, 1), (16, 1))],
                         ids=lambda k: k.name)
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_batched_thread_split_tokens_and_rows(kernel, threads):
    """Batched calls share tokens among threads when each gets two vectors or more (and threads then take each
    other's remaining tasks), rows otherwise: token counts on both sides of that line, uneven per-thread shares,
    more threads than cores, against the reference."""
    _skip_unavailable(kernel)
    spec, (rm, cm) = _structure_for(kernel, (4, 1))
    g = torch.Generator().manual_seed(11)
    w = sparse_weight(48 * rm, 152, spec, None if spec == "2:4" else 0.8, g)
    p = pack(w, spec, kernel.weight_dtype, format=kernel.format)
    b = torch.randn(48 * rm, generator=g)
    for n in (9, 31, 40, 80, 97, 200):
        x = torch.randn(n, 152, generator=g)
        y = spmm(p, x, b, kernel, threads=threads)
        assert_close_to_reference(y, x, p.to_dense().float(), b, p.reference_matmul(x, b))


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.format == "bitmask"], ids=lambda k: k.name)
@pytest.mark.parametrize("density", [0.02, 0.1, 0.25, 0.3])
def test_bitmask_word_pairs_and_wide_tiles(kernel, density):
    """At or below a quarter of nonzeros the batched bitmask kernel walks two mask words per row visit and, with
    AVX-512, 128-token tiles that two threads share by rows. Rows whose first word of a pair is empty, whose
    second is, with a single nonzero in the last (partial) word, and entirely empty rows; token counts below,
    at and above one and two wide tiles; one and two threads; on both sides of the density threshold."""
    _skip_unavailable(kernel)
    g = torch.Generator().manual_seed(int(density * 1000))
    out, inp = 70, 300  # 5 mask words, the last one partial (44 columns)
    keep = torch.rand(out, inp, generator=g) < density
    keep[0:4, 0:64] = False     # empty first word of the first pair
    keep[4:8, 64:128] = False   # empty second word
    keep[8:10, 0:128] = False   # both words of the first pair empty
    keep[10] = False
    keep[10, 299] = True        # one nonzero, in the partial last word
    keep[11] = False            # no nonzero at all
    w = torch.randn(out, inp, generator=g) * keep
    p = pack(w, "unstructured", kernel.weight_dtype, format=kernel.format)
    b = torch.randn(out, generator=g)
    for threads in (1, 2):
        for n in (9, 64, 127, 128, 129, 200, 256, 300):
            x = torch.randn(n, inp, generator=g)
            y = spmm(p, x, b, kernel, threads=threads)
            assert_close_to_reference(y, x, p.to_dense().float(), b, p.reference_matmul(x, b))


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.batched_only], ids=lambda k: k.name)
@pytest.mark.parametrize("density", [0.001, 0.003, 0.004])
def test_register_tile_row_walk(kernel, density):
    """At or below 0.3% nonzeros the rt kernels (AVX2 and AVX-512) take the row-walk regime: no transposes, each
    block placed in the lanes of its rows. Block-rows with no block, one, and one in the first and last column;
    `out` with rows past the last whole vector; token counts not a multiple of 8; bias and GELU; one to three
    threads; on both sides of the threshold."""
    _skip_unavailable(kernel)
    r = kernel.block[0]
    g = torch.Generator().manual_seed(int(density * 1e4) + r)
    out, inp = 37 * r, 2000  # 37 block-rows: whole vectors of rows and a remainder, for every ISA's width
    keep = torch.rand(out // r, inp, generator=g) < density
    keep[0:3] = False
    keep[1, 0] = True
    keep[2, [0, inp - 1]] = True
    w = torch.randn(out, inp, generator=g) * keep.repeat_interleave(r, dim=0)
    p = pack(w, f"{r}x1", kernel.weight_dtype, format=kernel.format)
    b = torch.randn(out, generator=g)
    q = prepare(p, b)
    for threads in (1, 2, 3):
        for n in (9, 16, 61, 130):
            x = torch.randn(n, inp, generator=g)
            assert_close_to_reference(spmm(p, x, b, kernel, threads=threads), x, p.to_dense().float(), b,
                                      p.reference_matmul(x, b))
            y = q(x, kernel, activation="gelu", threads=threads)
            ref = torch.nn.functional.gelu(x.double() @ p.to_dense().double().T + b.double())
            torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.format == "csr"], ids=lambda k: k.name)
@pytest.mark.parametrize("density", [0.02, 0.05, 0.075, 0.1])
def test_csr_whole_row_walk(kernel, density):
    """At or below 7.5% nonzeros the batched CSR kernel walks each row in one visit, two nonzeros per step where
    registers allow: rows with no nonzero, one, two and three (odd counts leave one over), a row whose nonzeros
    are all in the last columns, and random rows; on both sides of the threshold, one to three threads."""
    _skip_unavailable(kernel)
    g = torch.Generator().manual_seed(int(density * 1000) + 1)
    out, inp = 70, 300
    keep = torch.rand(out, inp, generator=g) < density
    keep[0:5] = False
    keep[1, 7] = True
    keep[2, [0, 299]] = True
    keep[3, [5, 6, 150]] = True
    keep[4, 290:300] = True
    w = torch.randn(out, inp, generator=g) * keep
    p = pack(w, "unstructured", kernel.weight_dtype, format=kernel.format)
    b = torch.randn(out, generator=g)
    for threads in (1, 2, 3):
        for n in (9, 64, 100, 128, 200):
            x = torch.randn(n, inp, generator=g)
            y = spmm(p, x, b, kernel, threads=threads)
            assert_close_to_reference(y, x, p.to_dense().float(), b, p.reference_matmul(x, b))


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.format == "bitmask" and k.weight_dtype == torch.float32],
                         ids=lambda k: k.name)
def test_bitmask_large_sparse_weight_rows_shared(kernel):
    """A weight of 2^21 elements or more at 10% density: with fewer tokens than a 128-token tile per thread, two
    threads share wide tiles by rows (AVX-512); token counts that leave a partial tile and a partial vector."""
    _skip_unavailable(kernel)
    g = torch.Generator().manual_seed(5)
    out, inp = 1536, 1408  # 2,162,688 elements, 22 mask words per row
    w = torch.randn(out, inp, generator=g) * (torch.rand(out, inp, generator=g) < 0.1)
    p = pack(w, "unstructured", kernel.weight_dtype, format=kernel.format)
    b = torch.randn(out, generator=g)
    for threads, n in ((2, 64), (2, 128), (2, 131), (1, 100), (3, 200)):
        x = torch.randn(n, inp, generator=g)
        y = spmm(p, x, b, kernel, threads=threads)
        assert_close_to_reference(y, x, p.to_dense().float(), b, p.reference_matmul(x, b))
