// kernels/spmm_impl.h: the sparse x dense kernels, written once over a SIMD trait `S` (simd/*.h) and
// compiled once per ISA by the isa_*.cpp units, each inside its own namespace (so that no inline function
// compiled with AVX-512 flags can be merged by the linker into code that runs on an AVX2-only machine).
//
// Two regimes:
//  * batched (n > kDecodeMaxN): "transpose, then broadcast weights". x (n, in) is transposed into a
//    workspace xt (in, np) with np = n rounded up to the token tile NT, so that one input column k of a
//    tile of NT tokens is contiguous. For every nonzero W[r, k] the kernel does acc[r] += W[r, k] * xt[k, tile]:
//    one broadcast and NT/W fused multiply-adds, so the work is proportional to the number of nonzeros.
//    Rx1 blocks share one xt load between R output rows (R broadcasts, R * NT/W FMAs per load).
//  * decode (n <= kDecodeMaxN): no transposition; each stored weight is read once and applied to every
//    token, which is what matters when the weights stream from DRAM.
//
// Threads: one OpenMP parallel region per call. The torch CPU wheel ships its own libgomp with the same
// SONAME (libgomp.so.1); sparsa imports torch before loading this module, so both share one OpenMP runtime and
// one thread pool instead of two pools competing for the same cores.
//
// Expects, before inclusion: `S` (the SIMD trait) and the headers <cstdint>, <cstring>, <omp.h>, spmm_args.h.

// ---- small helpers (kept inside the ISA namespace; see the header comment) ----

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

static inline float wload(const float* p, int64_t i) { return p[i]; }
static inline float wload(const uint16_t* p, int64_t i) {
    // bf16 is the top half of an fp32: widen by shifting into the high 16 bits.
    uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

static inline int64_t ctz64(uint64_t v) { return __builtin_ctzll(v); }

// Number of block-rows (or rows) given to one task: enough tasks for dynamic load balancing across threads,
// few enough that each task amortises its loop overhead.
static inline int64_t rows_per_task(int64_t rows, int nthreads) {
    return imax(1, imin(64, rows / (8 * imax(1, nthreads))));
}

// xt[k * np + t] = x[t * ldx + k] for t < n, and 0 for n <= t < np. Called inside a parallel region.
static void transpose_pad(const float* x, int64_t n, int64_t in, int64_t ldx, float* xt, int64_t np) {
    constexpr int64_t KB = 16;  // input columns per task: KB rows of xt are written while x streams by rows
    const int64_t nkb = (in + KB - 1) / KB;
#pragma omp for schedule(static)
    for (int64_t kb = 0; kb < nkb; ++kb) {
        const int64_t k0 = kb * KB, k1 = imin(in, k0 + KB);
        for (int64_t t = 0; t < n; ++t) {
            const float* xr = x + t * ldx;
            for (int64_t k = k0; k < k1; ++k) xt[k * np + t] = xr[k];
        }
        for (int64_t k = k0; k < k1; ++k)
            for (int64_t t = n; t < np; ++t) xt[k * np + t] = 0.0f;
    }
}

// Writes a tile of accumulators acc[i][lane] (rows r0 + i, tokens t0 + lane) into y, transposing back to
// (n, out) row-major and adding the bias.
template <int R, int NT>
static inline void store_tile(const SpmmArgs& a, const float (&tmp)[R][NT], int64_t r0, int64_t t0) {
    const int64_t tn = imin(NT, a.n - t0);
    for (int64_t lane = 0; lane < tn; ++lane) {
        float* yr = a.y + (t0 + lane) * a.ldy + r0;
        for (int i = 0; i < R; ++i) yr[i] = tmp[i][lane] + (a.bias ? a.bias[r0 + i] : 0.0f);
    }
}

// How many token vectors per output row fit in registers next to R rows of accumulators.
template <int R>
static constexpr int vecs_per_row() {
    constexpr int budget = S::NREG - 4;  // leave room for the x loads and the broadcast weight
    constexpr int v = budget / R;
    return v < 1 ? 1 : (v > 8 ? 8 : v);
}

// ---------------------------------------------------------------------------------------------------
// BSR with R x C blocks
// ---------------------------------------------------------------------------------------------------

template <int R, int C, class WT, class IT>
static void bsr_decode(const SpmmArgs& a) {
    const WT* vals = static_cast<const WT*>(a.values);
    const IT* cols = static_cast<const IT*>(a.col_idx);
    const int64_t nbr = a.out / R;
    const int64_t chunk = rows_per_task(nbr, a.nthreads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(a.nthreads) if (a.nthreads > 1)
    for (int64_t c0 = 0; c0 < nbr; c0 += chunk) {
        for (int64_t brow = c0; brow < imin(nbr, c0 + chunk); ++brow) {
            float acc[kDecodeMaxN][R] = {};
            for (int64_t b = a.row_ptr[brow]; b < a.row_ptr[brow + 1]; ++b) {
                const int64_t k0 = static_cast<int64_t>(cols[b]) * C;
                for (int c = 0; c < C; ++c) {
                    float w[R];
                    for (int i = 0; i < R; ++i) w[i] = wload(vals, (b * R + i) * C + c);
                    for (int64_t t = 0; t < a.n; ++t) {
                        const float xv = a.x[t * a.ldx + k0 + c];
                        for (int i = 0; i < R; ++i) acc[t][i] += w[i] * xv;
                    }
                }
            }
            for (int64_t t = 0; t < a.n; ++t)
                for (int i = 0; i < R; ++i)
                    a.y[t * a.ldy + brow * R + i] = acc[t][i] + (a.bias ? a.bias[brow * R + i] : 0.0f);
        }
    }
}

template <int R, int C, class WT, class IT>
static void bsr_batched(const SpmmArgs& a) {
    using V = typename S::V;
    constexpr int VV = vecs_per_row<R>();
    constexpr int NT = VV * S::W;
    const WT* vals = static_cast<const WT*>(a.values);
    const IT* cols = static_cast<const IT*>(a.col_idx);
    const int64_t ntiles = (a.n + NT - 1) / NT, np = ntiles * NT;
    float* xt = a.work;
    const int64_t nbr = a.out / R;
    const int64_t chunk = rows_per_task(nbr, a.nthreads);
    const int64_t nchunks = (nbr + chunk - 1) / chunk;
#pragma omp parallel num_threads(a.nthreads) if (a.nthreads > 1)
    {
        transpose_pad(a.x, a.n, a.in, a.ldx, xt, np);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t tile = 0; tile < ntiles; ++tile) {
            for (int64_t ch = 0; ch < nchunks; ++ch) {
                const float* xtile = xt + tile * NT;
                for (int64_t brow = ch * chunk; brow < imin(nbr, (ch + 1) * chunk); ++brow) {
                    V acc[R][VV];
#pragma GCC unroll 16
                    for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
                        for (int v = 0; v < VV; ++v) acc[i][v] = S::zero();
                    for (int64_t b = a.row_ptr[brow]; b < a.row_ptr[brow + 1]; ++b) {
                        const int64_t k0 = static_cast<int64_t>(cols[b]) * C;
#pragma GCC unroll 4
                        for (int c = 0; c < C; ++c) {
                            const float* xr = xtile + (k0 + c) * np;
                            V xv[VV];
#pragma GCC unroll 8
                            for (int v = 0; v < VV; ++v) xv[v] = S::loadu(xr + v * S::W);
#pragma GCC unroll 16
                            for (int i = 0; i < R; ++i) {
                                const V w = S::set1(wload(vals, (b * R + i) * C + c));
#pragma GCC unroll 8
                                for (int v = 0; v < VV; ++v) acc[i][v] = S::fmadd(w, xv[v], acc[i][v]);
                            }
                        }
                    }
                    float tmp[R][NT];
                    for (int i = 0; i < R; ++i)
                        for (int v = 0; v < VV; ++v) S::storeu(&tmp[i][v * S::W], acc[i][v]);
                    store_tile<R, NT>(a, tmp, brow * R, tile * NT);
                }
            }
        }
    }
}

template <int R, int C, class WT, class IT>
static void bsr_spmm(const SpmmArgs& a) {
    if (a.n <= kDecodeMaxN) bsr_decode<R, C, WT, IT>(a);
    else bsr_batched<R, C, WT, IT>(a);
}

template <int R, int C, class WT>
static void bsr_kernel(const SpmmArgs& a) {
    if (a.idx_type == IdxType::U16) bsr_spmm<R, C, WT, uint16_t>(a);
    else bsr_spmm<R, C, WT, int32_t>(a);
}

// Any block shape, no specialisation: the portable fallback the registry offers for shapes without a tile.
template <class WT, class IT>
static void bsr_generic_spmm(const SpmmArgs& a) {
    const WT* vals = static_cast<const WT*>(a.values);
    const IT* cols = static_cast<const IT*>(a.col_idx);
    const int R = a.br, C = a.bc;
    const int64_t nbr = a.out / R;
#pragma omp parallel for schedule(dynamic, 4) num_threads(a.nthreads) if (a.nthreads > 1)
    for (int64_t brow = 0; brow < nbr; ++brow) {
        for (int64_t t = 0; t < a.n; ++t) {
            float* yr = a.y + t * a.ldy + brow * R;
            const float* xr = a.x + t * a.ldx;
            for (int i = 0; i < R; ++i) yr[i] = a.bias ? a.bias[brow * R + i] : 0.0f;
            for (int64_t b = a.row_ptr[brow]; b < a.row_ptr[brow + 1]; ++b) {
                const int64_t k0 = static_cast<int64_t>(cols[b]) * C;
                for (int i = 0; i < R; ++i) {
                    float s = 0.0f;
                    for (int c = 0; c < C; ++c) s += wload(vals, (b * R + i) * C + c) * xr[k0 + c];
                    yr[i] += s;
                }
            }
        }
    }
}

template <class WT>
static void bsr_generic_kernel(const SpmmArgs& a) {
    if (a.idx_type == IdxType::U16) bsr_generic_spmm<WT, uint16_t>(a);
    else bsr_generic_spmm<WT, int32_t>(a);
}

// ---------------------------------------------------------------------------------------------------
// Bitmask (unstructured) and N:M (the same bit layout with exactly n of every m bits set, so that a row's
// values start at row * in * n / m and no row pointer is stored)
// ---------------------------------------------------------------------------------------------------

static inline int64_t row_start(const SpmmArgs& a, int64_t r) {
    return a.row_ptr ? a.row_ptr[r] : r * (a.in / a.nm_m) * a.nm_n;
}

template <class WT>
static void bitmask_decode(const SpmmArgs& a) {
    const WT* vals = static_cast<const WT*>(a.values);
    const int64_t chunk = rows_per_task(a.out, a.nthreads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(a.nthreads) if (a.nthreads > 1)
    for (int64_t r0 = 0; r0 < a.out; r0 += chunk) {
        for (int64_t r = r0; r < imin(a.out, r0 + chunk); ++r) {
            float acc[kDecodeMaxN] = {};
            int64_t p = row_start(a, r);
            const uint64_t* m = a.mask + r * a.mask_words;
            for (int64_t wi = 0; wi < a.mask_words; ++wi) {
                for (uint64_t bits = m[wi]; bits; bits &= bits - 1) {
                    const int64_t k = wi * 64 + ctz64(bits);
                    const float w = wload(vals, p++);
                    for (int64_t t = 0; t < a.n; ++t) acc[t] += w * a.x[t * a.ldx + k];
                }
            }
            for (int64_t t = 0; t < a.n; ++t) a.y[t * a.ldy + r] = acc[t] + (a.bias ? a.bias[r] : 0.0f);
        }
    }
}

template <class WT>
static void bitmask_batched(const SpmmArgs& a) {
    using V = typename S::V;
    constexpr int VV = vecs_per_row<1>();
    constexpr int NT = VV * S::W;
    const WT* vals = static_cast<const WT*>(a.values);
    const int64_t ntiles = (a.n + NT - 1) / NT, np = ntiles * NT;
    float* xt = a.work;
    const int64_t chunk = rows_per_task(a.out, a.nthreads);
    const int64_t nchunks = (a.out + chunk - 1) / chunk;
#pragma omp parallel num_threads(a.nthreads) if (a.nthreads > 1)
    {
        transpose_pad(a.x, a.n, a.in, a.ldx, xt, np);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t tile = 0; tile < ntiles; ++tile) {
            for (int64_t ch = 0; ch < nchunks; ++ch) {
                const float* xtile = xt + tile * NT;
                for (int64_t r = ch * chunk; r < imin(a.out, (ch + 1) * chunk); ++r) {
                    V acc[VV];
#pragma GCC unroll 8
                    for (int v = 0; v < VV; ++v) acc[v] = S::zero();
                    int64_t p = row_start(a, r);
                    const uint64_t* m = a.mask + r * a.mask_words;
                    for (int64_t wi = 0; wi < a.mask_words; ++wi) {
                        for (uint64_t bits = m[wi]; bits; bits &= bits - 1) {
                            const float* xr = xtile + (wi * 64 + ctz64(bits)) * np;
                            const V w = S::set1(wload(vals, p++));
#pragma GCC unroll 8
                            for (int v = 0; v < VV; ++v) acc[v] = S::fmadd(w, S::loadu(xr + v * S::W), acc[v]);
                        }
                    }
                    float tmp[1][NT];
                    for (int v = 0; v < VV; ++v) S::storeu(&tmp[0][v * S::W], acc[v]);
                    store_tile<1, NT>(a, tmp, r, tile * NT);
                }
            }
        }
    }
}

template <class WT>
static void bitmask_kernel(const SpmmArgs& a) {
    if (a.n <= kDecodeMaxN) bitmask_decode<WT>(a);
    else bitmask_batched<WT>(a);
}
