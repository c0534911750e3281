// kernels/bsr.h: y = x W^T + b for W in BSR with R x C blocks (formats/bsr.py has the layout).
//
// Batched: a task is (token tile, group of output rows). For each block-row the rows are computed in passes of
// P = min(R, 4) rows: per stored block and input column, one contiguous load of NT tokens of xt serves P
// broadcast weights, i.e. P * NT/W FMAs per NT/W loads. Rows land in `tmp`; the output stage writes y.
// Decode: per block-row and token, each block's R x C weights are applied to x directly; every stored value is
// read once per call, which is what matters when the weights stream from DRAM.

// Software prefetch distance, in blocks, for the xt rows of a later block. Hardware prefetchers cannot guess the
// next block's column; measured at N = 128, 90%, 2 threads (interleaved A/B, same process): 3-16% faster on
// 384x1536, where one thread's xt tile (393 KB) is far beyond L1; -6% to +8% (the noise of this machine) on
// 1536x384 and 3072x768; distance 4 measured 3-5% ahead of 8 on all three.
constexpr int kBsrPrefetchBlocks = 4;

template <int R, int C, int P, int VT, class WT, class IT>
static inline void bsr_rows(const float* xtile, int64_t np, const WT* vals, const IT* cols, int64_t b0, int64_t b1,
                            int pass, float* tmp, int64_t ld) {
    using V = typename S::V;
    V acc[P][VT];
#pragma GCC unroll 4
    for (int i = 0; i < P; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < VT; ++v) acc[i][v] = S::zero();
    for (int64_t b = b0; b < b1; ++b) {
        const int64_t k0 = static_cast<int64_t>(cols[b]) * C;
        const WT* wb = vals + b * (R * C) + pass * P * C;  // this pass's P rows of block b, each C wide
        if (b + kBsrPrefetchBlocks < b1) {
            const float* pr = xtile + static_cast<int64_t>(cols[b + kBsrPrefetchBlocks]) * C * np;
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) __builtin_prefetch(pr + v * S::W, 0, 3);
        }
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) {
            const float* xr = xtile + (k0 + c) * np;
            V xv[VT];
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) xv[v] = S::loadu(xr + v * S::W);
#pragma GCC unroll 4
            for (int i = 0; i < P; ++i) {
                const V w = bcast(wb + i * C + c);
#pragma GCC unroll 8
                for (int v = 0; v < VT; ++v) acc[i][v] = S::fmadd(w, xv[v], acc[i][v]);
            }
        }
    }
    for (int i = 0; i < P; ++i)
        for (int v = 0; v < VT; ++v) S::storeu(tmp + i * ld + v * S::W, acc[i][v]);
}

template <int R, int C, int P, class WT, class IT>
struct BsrRows {
    const float* xtile;
    int64_t np;
    const WT* vals;
    const IT* cols;
    int64_t b0, b1;
    int pass;
    float* dst;
    int64_t ld;
    template <int VT>
    void run() const { bsr_rows<R, C, P, VT>(xtile, np, vals, cols, b0, b1, pass, dst, ld); }
};

// One task of the batched kernel: GB block-rows (G output rows) of one token tile, computed into tmp and written.
template <int R, int C, class WT, class IT>
struct BsrTask {
    static constexpr int P = R < 4 ? R : 4;  // rows per pass; R is 1, 2, 4, 8 or 16 for the listed tiles
    static constexpr int VV = tile_vectors<P>();
    static constexpr int NT = VV * S::W;
    // output rows per task: four whole 64-byte lines of y per token (see store_out). With one line (16 rows) 4x1
    // calls at 70-99.9% took 1.02-1.52x longer than with two (N = 128); 64 rows measured within 8% of 32 while the
    // threads shared one matrix xt, and 0.98-1.18x faster than 32 with a block of xt per thread (4x1, 70-95%, four
    // shapes, N = 128, both role orders; 1.18x on 1536x384 at 95%): half the tasks, each with 256 contiguous bytes
    // of y per token.
    static constexpr int G = R > 64 ? R : 64;
    static constexpr int GB = G / R;  // block-rows per task
    static constexpr bool kRowWalk = false;  // see bsr_rowwalk
    const SpmmArgs& a;
    const WT* vals;
    const IT* cols;
    int64_t nbr;
    void operator()(const float* xtile, int64_t np, int64_t t0, int vt, int64_t g) const {
        alignas(64) float tmp[G * NT];
        const int64_t br1 = imin(nbr, (g + 1) * GB);
        for (int64_t brow = g * GB; brow < br1; ++brow) {
            for (int pass = 0; pass < R / P; ++pass) {
                float* dst = tmp + ((brow - g * GB) * R + pass * P) * NT;
                const BsrRows<R, C, P, WT, IT> f{xtile, np, vals, cols, a.row_ptr[brow], a.row_ptr[brow + 1],
                                                  pass, dst, NT};
                with_vectors<VV>(vt, f);
            }
        }
        const int64_t rows = (br1 - g * GB) * R, tn = imin(static_cast<int64_t>(vt) * S::W, a.n - t0);
        store_out(a, tmp, NT, rows, g * GB * R, t0, tn);
    }
};

// The register-tile variant (the "_rt" kernels; R x 1 blocks with R dividing 16): a tile is 16 output rows x one
// vector of tokens with all 16 rows' accumulators in registers. Each block costs one load of xt and R broadcast
// weights for R FMAs, against BsrTask's P = 4 rows x 4 vectors per load; in exchange nothing passes through tmp:
// once its block-rows are done the tile is transposed in registers (S::transpose16, or two transpose8 with AVX2)
// and each token's 16 rows leave as one whole 64-byte line of y, token tiles outer and row tiles inner, so every
// token row of y is written front to back. At high sparsity, where BsrTask's time goes to its output stage
// (tmp written by the FMAs, read back, transposed, stored 256 bytes per token row of a task), that is what counts;
// the automatic choice measures both kernels per layer.
template <int R, int C, class WT, class IT>
struct BsrRegTileTask {
    static_assert(C == 1 && 16 % R == 0, "register tiles take R x 1 blocks with R dividing 16");
    static constexpr int TR = 16;               // rows per register tile
    static constexpr int BR = TR / R;           // block-rows per tile
    static constexpr int Q = R >= 8 ? 1 : 8 / R;  // block-rows run side by side: >= 8 independent FMA chains
    static constexpr int G = 64;                // rows per task: four tiles
    static constexpr int NT = S::W;             // one vector of tokens per tile
    static constexpr bool kRowWalk = true;      // almost empty weights take bsr_rowwalk instead (bsr_kernel)
    const SpmmArgs& a;
    const WT* vals;
    const IT* cols;
    int64_t nbr;

    // Q block-rows from the tile's block-row j0 (brow0 + j0 onwards, those below nb), side by side for as many
    // blocks as all of them have, then each one's remaining blocks.
    template <int J0>
    void group(typename S::V (&acc)[TR], const float* xt, int64_t np, int64_t brow0, int64_t nb) const {
        int64_t b[Q], e[Q];
        int64_t m = std::numeric_limits<int64_t>::max();
#pragma GCC unroll 8
        for (int q = 0; q < Q; ++q) {
            const bool on = J0 + q < nb;
            b[q] = on ? a.row_ptr[brow0 + J0 + q] : 0;
            e[q] = on ? a.row_ptr[brow0 + J0 + q + 1] : 0;
            m = imin(m, e[q] - b[q]);
        }
        for (int64_t s = 0; s < m; ++s) {
#pragma GCC unroll 8
            for (int q = 0; q < Q; ++q) block(acc, J0 + q, xt, np, b[q] + s);
        }
#pragma GCC unroll 8
        for (int q = 0; q < Q; ++q)
            for (int64_t bb = b[q] + m; bb < e[q]; ++bb) block(acc, J0 + q, xt, np, bb);
    }

    // block b of the tile's block-row j (a constant once the loops above are unrolled: acc stays in registers)
    __attribute__((always_inline)) void block(typename S::V (&acc)[TR], int j, const float* xt, int64_t np,
                                              int64_t b) const {
        const typename S::V xv = S::loadu(xt + static_cast<int64_t>(cols[b]) * np);
        const WT* w = vals + b * R;
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) acc[j * R + i] = S::fmadd(bcast(w + i), xv, acc[j * R + i]);
    }

    template <int J0>
    void groups(typename S::V (&acc)[TR], const float* xt, int64_t np, int64_t brow0, int64_t nb) const {
        if constexpr (J0 < BR) {
            if (J0 < nb) group<J0>(acc, xt, np, brow0, nb);
            groups<J0 + Q>(acc, xt, np, brow0, nb);
        }
    }

    void operator()(const float* xtile, int64_t np, int64_t t0, int, int64_t g) const {
        const int64_t tn = imin(S::W, a.n - t0), r1 = imin(a.out, (g + 1) * G);
        for (int64_t r0 = g * G; r0 < r1; r0 += TR) {
            typename S::V acc[TR];
#pragma GCC unroll 16
            for (int i = 0; i < TR; ++i) acc[i] = S::zero();
            const int64_t brow0 = r0 / R;
            groups<0>(acc, xtile, np, brow0, imin(BR, nbr - brow0));
            store_tile16(a, acc, r0, imin(TR, a.out - r0), t0, tn);
        }
    }
};

#if defined(__AVX512F__) || defined(__AVX2__)
// Block b's R weights in lanes j*R .. j*R + R - 1 of a vector of W output rows, the other lanes zero.
template <int R>
static inline typename S::V rows_in_lanes(const float* w, int j) {
#if defined(__AVX512F__)
    if constexpr (R == 4) return _mm512_maskz_broadcast_f32x4(static_cast<__mmask16>(0xFu << (4 * j)), _mm_loadu_ps(w));
    if constexpr (R == 8)
        return _mm512_maskz_broadcast_f32x8(static_cast<__mmask16>(0xFFu << (8 * j)), _mm256_loadu_ps(w));
    if constexpr (R == 16) return _mm512_loadu_ps(w);
#else
    if constexpr (R == 4) {
        const __m256 b = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(w));
        return j ? _mm256_blend_ps(_mm256_setzero_ps(), b, 0xF0) : _mm256_blend_ps(_mm256_setzero_ps(), b, 0x0F);
    }
    if constexpr (R == 8) return _mm256_loadu_ps(w);
#endif
}

// The row-walk regime of the register-tile kernels, for weights with almost no blocks (density at most
// kRowWalkMaxDensity, below). The tiled path pays for x's transpose and for the 16 x 16 transpose of every output tile
// whatever the number of blocks, and at 99.9% those are nearly all its time. Here nothing is transposed: a vector
// holds W output rows (W / R block-rows), each block is placed in its lanes (rows_in_lanes) and multiplied by x's
// value for each of 8 tokens, broadcast straight from x's rows, and each token's W rows leave as one store, every
// row of y written front to back. Each FMA here does R useful products out of its W lanes (the tiled path's do W),
// which the tiled path wins back once blocks are many (see kRowWalkMaxDensity).
template <int R, class IT>
static void bsr_rowwalk(const SpmmArgs& a) {
    using V = typename S::V;
    constexpr int W = S::W, BR = W / R, TG = 8;
    const float* vals = static_cast<const float*>(a.values);
    const IT* cols = static_cast<const IT*>(a.col_idx);
    const int64_t ntile = a.out / W, ngroups = (a.n + TG - 1) / TG;
    const bool gelu = a.act == Act::GELU;
#pragma omp parallel for schedule(static) num_threads(a.nthreads) if (a.nthreads > 1)
    for (int64_t gi = 0; gi < ngroups; ++gi) {
        const int64_t t0 = gi * TG, tn = imin(TG, a.n - t0);
        const float* x0 = a.x + t0 * a.ldx;
        float* y0 = a.y + t0 * a.ldy;
        for (int64_t tile = 0; tile < ntile; ++tile) {
            V acc[TG];
#pragma GCC unroll 8
            for (int t = 0; t < TG; ++t) acc[t] = S::zero();
            for (int j = 0; j < BR; ++j) {
                const int64_t brow = tile * BR + j;
                for (int64_t b = a.row_ptr[brow]; b < a.row_ptr[brow + 1]; ++b) {
                    const V wv = rows_in_lanes<R>(vals + b * R, j);
                    const float* xc = x0 + cols[b];
#pragma GCC unroll 8
                    for (int t = 0; t < TG; ++t)
                        if (t < tn) acc[t] = S::fmadd(wv, S::set1(xc[t * a.ldx]), acc[t]);
                }
            }
            const V bias = a.bias ? S::loadu(a.bias + tile * W) : S::zero();
#pragma GCC unroll 8
            for (int t = 0; t < TG; ++t)
                if (t < tn) {
                    V v = S::add(acc[t], bias);
                    if (gelu) v = vgelu<S>(v);
                    S::storeu(y0 + t * a.ldy + tile * W, v);
                }
        }
        // rows past the last whole vector (out is a multiple of R, not always of W): one token at a time through a
        // padded vector
        const int64_t r0 = ntile * W;
        if (r0 < a.out)
            for (int64_t t = 0; t < tn; ++t) {
                alignas(64) float buf[W] = {};
                for (int64_t brow = r0 / R; brow < a.out / R; ++brow)
                    for (int64_t b = a.row_ptr[brow]; b < a.row_ptr[brow + 1]; ++b)
                        for (int i = 0; i < R; ++i) buf[brow * R - r0 + i] += vals[b * R + i] * x0[t * a.ldx + cols[b]];
                for (int64_t r = r0; r < a.out; ++r) buf[r - r0] += a.bias ? a.bias[r] : 0.0f;
                if (gelu) S::storeu(buf, vgelu<S>(S::loadu(buf)));
                std::memcpy(y0 + t * a.ldy + r0, buf, sizeof(float) * static_cast<size_t>(a.out - r0));
            }
    }
}
#endif

template <int R, int C, class WT, class IT, template <int, int, class, class> class Task>
static void bsr_batched(const SpmmArgs& a) {
    using T = Task<R, C, WT, IT>;
    const int64_t nbr = a.out / R;
    const T task{a, static_cast<const WT*>(a.values), static_cast<const IT*>(a.col_idx), nbr};
    batched_tasks<T::NT>(a, (a.out + T::G - 1) / T::G, task);
}

// One block-row for NTOK tokens. Accumulators are indexed by compile-time constants only, so they stay in
// registers (a runtime token count kept them on the stack, measured 1.7x slower); with one token, four
// accumulators rotate over the blocks so that FMA latency does not serialise the row.
template <int R, int C, int NTOK, class WT, class IT>
static inline void bsr_decode_row(const SpmmArgs& a, const WT* vals, const IT* cols, int64_t brow) {
    constexpr int NACC = NTOK == 1 ? 4 : 1;
    float acc[NACC][NTOK][R] = {};
    const int64_t b0 = a.row_ptr[brow], b1 = a.row_ptr[brow + 1];
    int64_t b = b0;
    for (; b + NACC <= b1; b += NACC) {
#pragma GCC unroll 4
        for (int u = 0; u < NACC; ++u) {
            const int64_t k0 = static_cast<int64_t>(cols[b + u]) * C;
            const WT* wb = vals + (b + u) * (R * C);
#pragma GCC unroll 4
            for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
                for (int t = 0; t < NTOK; ++t) {
                    const float xv = a.x[t * a.ldx + k0 + c];
#pragma GCC unroll 16
                    for (int i = 0; i < R; ++i) acc[u][t][i] += wload(wb, i * C + c) * xv;
                }
        }
    }
    for (; b < b1; ++b) {
        const int64_t k0 = static_cast<int64_t>(cols[b]) * C;
        const WT* wb = vals + b * (R * C);
        for (int c = 0; c < C; ++c)
            for (int t = 0; t < NTOK; ++t) {
                const float xv = a.x[t * a.ldx + k0 + c];
                for (int i = 0; i < R; ++i) acc[0][t][i] += wload(wb, i * C + c) * xv;
            }
    }
    for (int t = 0; t < NTOK; ++t)
        for (int i = 0; i < R; ++i) {
            float s = 0.0f;
            for (int u = 0; u < NACC; ++u) s += acc[u][t][i];
            a.y[t * a.ldy + brow * R + i] = s + (a.bias ? a.bias[brow * R + i] : 0.0f);
        }
}

template <int R, int C, int NTOK, class WT, class IT>
static inline void bsr_decode_rows(const SpmmArgs& a, const WT* vals, const IT* cols, int64_t r0, int64_t r1) {
    for (int64_t brow = r0; brow < r1; ++brow) bsr_decode_row<R, C, NTOK>(a, vals, cols, brow);
}

template <int R, int C, class WT, class IT>
static void bsr_decode(const SpmmArgs& a) {
    const WT* vals = static_cast<const WT*>(a.values);
    const IT* cols = static_cast<const IT*>(a.col_idx);
    const int64_t nbr = a.out / R;
    const int64_t chunk = rows_per_task(nbr, a.nthreads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(a.nthreads) if (a.nthreads > 1)
    for (int64_t c0 = 0; c0 < nbr; c0 += chunk) {
        const int64_t c1 = imin(nbr, c0 + chunk);
        switch (a.n) {
            case 1: bsr_decode_rows<R, C, 1>(a, vals, cols, c0, c1); break;
            case 2: bsr_decode_rows<R, C, 2>(a, vals, cols, c0, c1); break;
            case 3: bsr_decode_rows<R, C, 3>(a, vals, cols, c0, c1); break;
            case 4: bsr_decode_rows<R, C, 4>(a, vals, cols, c0, c1); break;
            case 5: bsr_decode_rows<R, C, 5>(a, vals, cols, c0, c1); break;
            case 6: bsr_decode_rows<R, C, 6>(a, vals, cols, c0, c1); break;
            case 7: bsr_decode_rows<R, C, 7>(a, vals, cols, c0, c1); break;
            default: bsr_decode_rows<R, C, 8>(a, vals, cols, c0, c1); break;
        }
    }
}

// The densest weight the rt kernels run in the row-walk regime: 0.3% nonzeros (99.7% sparse). The AVX-512 4x1 rt
// kernel forced into either regime (N = 128, 2 threads, us, row walk / tiled) on 1536x384, 3072x768, 384x1536 and
// 768x3072: at 99% 36-37 / 32, 128-132 / 79, 41 / 37, 200-206 / 120; at 99.5% 22-24 / 27, 75 / 65, 24 / 37,
// 108-111 / 98; at 99.8% 14 / 24, 41-42 / 56, 12-13 / 30, 53-55 / 93. With this threshold, against the build before:
// 1.17-2.10x faster at 99.7%, 1.62-3.56x at 99.9% (benchmarks/results/ab_rowwalk_2026-11-30.txt).
constexpr double kRowWalkMaxDensity = 0.003;

// Decode (N <= kDecodeMaxN) is the same for both batched variants.
template <int R, int C, class WT, template <int, int, class, class> class Task = BsrTask>
static void bsr_kernel(const SpmmArgs& a) {
    if (a.n <= kDecodeMaxN) {
        if (a.idx_type == IdxType::U16) bsr_decode<R, C, WT, uint16_t>(a);
        else bsr_decode<R, C, WT, int32_t>(a);
        act_rows(a);
    } else {
#if defined(__AVX512F__) || defined(__AVX2__)
        if constexpr (Task<R, C, WT, int32_t>::kRowWalk && C == 1 && std::is_same_v<WT, float> && S::W % R == 0) {
            const double density = static_cast<double>(a.n_values) / static_cast<double>(a.out * a.in);
            if (density <= kRowWalkMaxDensity) {
                if (a.idx_type == IdxType::U16) bsr_rowwalk<R, uint16_t>(a);
                else bsr_rowwalk<R, int32_t>(a);
                return;
            }
        }
#endif
        if (a.idx_type == IdxType::U16) bsr_batched<R, C, WT, uint16_t, Task>(a);
        else bsr_batched<R, C, WT, int32_t, Task>(a);
    }
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
    act_rows(a);
}
