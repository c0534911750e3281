// kernels/kernel_list.h: THE list of specialised kernels. Every ISA unit expands it once, so adding a
// kernel here adds it for every ISA, to dispatch, to the tests and to the benchmarks (which all read the
// registry through sparsa._C.kernels()).
//
// Name grammar (after XNNPACK): {weight dtype}_{format}{tile}_spmm__{isa}.
#pragma once

#define SPARSA_BSR_ENTRY(R, C, isa, sfx)                                                                   \
    {"f32_bsr" #R "x" #C "_spmm__" sfx, Format::BSR, isa, WDType::F32, R, C, &bsr_kernel<R, C, float>},    \
    {"bf16_bsr" #R "x" #C "_spmm__" sfx, Format::BSR, isa, WDType::BF16, R, C, &bsr_kernel<R, C, uint16_t>}

// The register-tile variant of an R x 1 tile (bsr.h, BsrRegTileTask): suffix "rt"; batched only (its decode is
// the R x 1 kernel's). fp32 values only: it broadcasts one weight per FMA, and a bf16 weight's broadcast goes
// through a general register and the shuffle unit, which made the bf16 variant 0.73-0.80x of the bf16 R x 1
// kernel (AVX-512, 1536x384 and 3072x768, 70-95%, 1 and 2 threads; BENCHMARKS.md, 2026-11-30 13:25-14:45).
#define SPARSA_BSR_RT_ENTRY(R, isa, sfx)                                                                       \
    {"f32_bsr" #R "x1rt_spmm__" sfx, Format::BSR, isa, WDType::F32, R, 1,                                       \
     &bsr_kernel<R, 1, float, BsrRegTileTask>, true}

#define SPARSA_KERNEL_LIST(isa, sfx)                                                                        \
    SPARSA_BSR_ENTRY(4, 1, isa, sfx), SPARSA_BSR_ENTRY(8, 1, isa, sfx), SPARSA_BSR_ENTRY(16, 1, isa, sfx), \
    SPARSA_BSR_ENTRY(1, 4, isa, sfx), SPARSA_BSR_RT_ENTRY(4, isa, sfx), SPARSA_BSR_RT_ENTRY(8, isa, sfx),  \
    SPARSA_BSR_RT_ENTRY(16, isa, sfx),                                                                     \
    {"f32_bitmask_spmm__" sfx, Format::BITMASK, isa, WDType::F32, 0, 0, &bitmask_kernel<float>},           \
    {"bf16_bitmask_spmm__" sfx, Format::BITMASK, isa, WDType::BF16, 0, 0, &bitmask_kernel<uint16_t>},      \
    {"f32_nm_spmm__" sfx, Format::NM, isa, WDType::F32, 0, 0, &bitmask_kernel<float>},                     \
    {"bf16_nm_spmm__" sfx, Format::NM, isa, WDType::BF16, 0, 0, &bitmask_kernel<uint16_t>},             \
    {"f32_csr_spmm__" sfx, Format::CSR, isa, WDType::F32, 0, 0, &csr_kernel<float>},                       \
    {"bf16_csr_spmm__" sfx, Format::CSR, isa, WDType::BF16, 0, 0, &csr_kernel<uint16_t>}
