// spmm_args.h: the one argument block every sparse kernel takes, and the kernel registry entry.
//
// Contract (PyTorch's): x is (n, in) row-major fp32 with row stride ldx, y is (n, out) row-major fp32 with
// row stride ldy, y = x W^T (+ bias). W is (out, in) in one of the packed layouts below; the layouts are
// documented in full in src/sparsa/formats/*.py, which is what writes them.
//
// This header is included by every ISA translation unit, so it holds plain data only: no inline functions
// that could be compiled with different -m flags in different units and merged by the linker (ODR).
#pragma once
#include <cstdint>

namespace sparsa {

enum class Format : int { BSR = 0, BITMASK = 1, NM = 2, CSR = 3 };
enum class WDType : int { F32 = 0, BF16 = 1 };
enum class IdxType : int { U16 = 0, I32 = 1 };
enum class Isa : int { SCALAR = 0, AVX2 = 1, AVX512 = 2, NEON = 3 };
// Activation applied to y after the bias (fused into the output stage, so y is written once).
enum class Act : int { NONE = 0, GELU = 1 };

struct SpmmArgs {
    // activations and output
    const float* x;  // (n, in), row stride ldx
    float* y;        // (n, out), row stride ldy
    const float* bias;  // (out,) or nullptr
    int64_t n, in, out, ldx, ldy;

    // packed weight
    WDType wdtype;
    const void* values;      // f32 or bf16 (uint16) values, layout per format
    int64_t n_values;        // elements in `values` (kernels never read past it)
    const int64_t* row_ptr;  // BSR: (out/br + 1) block offsets; BITMASK, CSR: (out + 1) value offsets; NM: unused
    const void* col_idx;     // BSR: (nnzb,) block-column indices; CSR: (nnz,) column indices; uint16 or int32
    IdxType idx_type;
    const uint64_t* mask;    // BITMASK / NM: (out, mask_words) little-endian bit per input column
    int64_t mask_words;      // words per row = ceil(in / 64)
    int br, bc;              // BSR block shape (rows x cols)
    int nm_n, nm_m;          // NM: n kept of every m

    Act act;                 // epilogue after the bias

    int nthreads;
    float* work;             // scratch the caller provides: spmm_work_floats(n, in, nthreads) floats
};

// Calls with n <= kDecodeMaxN take the decode path: each stored weight is read once and applied to every token.
constexpr int64_t kDecodeMaxN = 8;
// Row stride of the transposed activations: n rounded up to 16 floats (64 bytes), made an odd multiple of 64 bytes
// so that the rows of a K-block spread over all L1 sets (a power-of-two stride such as 512 bytes at n = 128 maps
// every row to the same few sets and evicts the block being reused).
constexpr int64_t xt_stride(int64_t n) {
    const int64_t lines = (n + 15) / 16;
    return (lines % 2 ? lines : lines + 1) * 16;
}
// Scratch a call needs, in floats: batched, the transposed activations (in x n rounded up to the widest vector,
// 16 lanes), which threads that split the tokens keep as one block each, so every thread's block may add two
// lines of padding per row; decode, a copy of x with rows padded to a multiple of 64 so that vector loads never
// pass a row's end, or x transposed with kDecodeMaxN floats per input column (kernels/decode_xt8.h).
constexpr int64_t spmm_work_floats(int64_t n, int64_t in, int64_t nthreads) {
    return n <= kDecodeMaxN ? kDecodeMaxN * ((in + 63) / 64 * 64)
                            : in * (xt_stride(n) + 32 * (nthreads > 1 ? nthreads : 1));
}

using KernelFn = void (*)(const SpmmArgs&);

struct KernelInfo {
    const char* name;  // {wdtype}_{format}{tile}_spmm__{isa}, XNNPACK-style
    Format format;
    Isa isa;
    WDType wdtype;
    int br, bc;        // BSR: the block shape this kernel is specialised for; 0,0 = any shape (generic)
    KernelFn fn;
    // A variant of another kernel's batched path only: with n <= kDecodeMaxN it runs that kernel's decode code, so
    // the automatic choice and the benchmarks leave it out there instead of timing the same code twice.
    bool batched_only = false;
};

}  // namespace sparsa
