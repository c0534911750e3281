// kernels/csr.h: y = x W^T + b for W in CSR: row pointers, column indices (uint16 or int32) and values
// (formats/csr.py). The second layout for unstructured sparsity beside the bitmask, for high sparsity:
//
// Decode: W values and their indices are loaded at a time and the inputs they multiply are gathered, so the work
// is proportional to the nonzeros; the bitmask decode walks every W-column chunk instead. Measured (one core,
// 2048 x 4096, AVX-512): gather 463 us vs expand 624 us at 90% sparsity, 171 vs 493 at 95%, but 997 vs 558 at
// 70%, which is why both layouts exist and the automatic choice measures them.
// Batched: as the bitmask kernel (K-blocked over 64-column slabs, accumulators in L1), with each row's cursor
// advancing through its sorted column indices instead of through mask bits; at high sparsity each row is walked
// in one visit instead (csr_task_rows).

template <bool SAFE, class WT, class IT>
static inline void csr_chunk(const WT* vals, const IT* cols, int64_t i, int count, typename S::V& w,
                             const IT*& idx, IT (&ibuf)[S::W]) {
    if constexpr (!SAFE) {
        w = count < S::W ? S::first(vload(vals + i), count) : vload(vals + i);
        idx = cols + i;  // past the row end these are the next row's (valid) columns, multiplied by zero
    } else {
        alignas(64) WT vbuf[S::W];
        for (int j = 0; j < S::W; ++j) {
            vbuf[j] = j < count ? vals[i + j] : WT{};
            ibuf[j] = j < count ? cols[i + j] : IT{};
        }
        w = vload(vbuf);
        idx = ibuf;
    }
}

template <int NTOK, bool SAFE, class WT, class IT>
static inline void csr_decode_row(const SpmmArgs& a, const WT* vals, const IT* cols, int64_t r) {
    using V = typename S::V;
    constexpr int NACC = NTOK == 1 ? 2 : NTOK;
    V acc[NACC];
    for (int t = 0; t < NACC; ++t) acc[t] = S::zero();
    const int64_t e = a.row_ptr[r + 1];
    int j = 0;
    for (int64_t i = a.row_ptr[r]; i < e; i += S::W, ++j) {
        V w;
        const IT* idx;
        IT ibuf[S::W];
        csr_chunk<SAFE>(vals, cols, i, static_cast<int>(imin(S::W, e - i)), w, idx, ibuf);
        if constexpr (NTOK == 1) {
            acc[j & 1] = S::fmadd(w, S::gather_at(a.x, idx), acc[j & 1]);
        } else {
            for (int t = 0; t < NTOK; ++t) acc[t] = S::fmadd(w, S::gather_at(a.x + t * a.ldx, idx), acc[t]);
        }
    }
    if constexpr (NTOK == 1) {
        a.y[r] = S::reduce(S::add(acc[0], acc[1])) + (a.bias ? a.bias[r] : 0.0f);
    } else {
        for (int t = 0; t < NTOK; ++t) a.y[t * a.ldy + r] = S::reduce(acc[t]) + (a.bias ? a.bias[r] : 0.0f);
    }
}

template <int NTOK, class WT, class IT>
static inline void csr_decode_rows(const SpmmArgs& a, const WT* vals, const IT* cols, int64_t r0, int64_t r1,
                                   int64_t safe_from) {
    for (int64_t r = r0; r < r1; ++r) {
        if (r < safe_from) csr_decode_row<NTOK, false>(a, vals, cols, r);
        else csr_decode_row<NTOK, true>(a, vals, cols, r);
    }
}

#ifdef __AVX2__
// Decode with 3 to 8 tokens (decode_xt8.h): at n = 8 the gathers above ran at 0.43-0.62x of torch CSR (4096 x 4096
// and 11008 x 4096 at 90%, weights from DRAM); this path took the same calls from 5.4-6.1 to 1.55 ms.
template <class WT, class IT>
static void csr_decode_xt8(const SpmmArgs& a, const WT* vals, const IT* cols, int64_t chunk) {
    xt8_decode(a, chunk, [&](const float* xt, int64_t r) {
        __m256 acc[kXt8Chains];
        xt8_zero(acc);
        const int64_t b = a.row_ptr[r];
        xt8_accumulate(acc, xt, vals + b, cols + b, a.row_ptr[r + 1] - b);
        xt8_store_row(a, acc, r);
    });
}
#endif

template <class WT, class IT>
static void csr_decode(const SpmmArgs& a) {
    const WT* vals = static_cast<const WT*>(a.values);
    const IT* cols = static_cast<const IT*>(a.col_idx);
    const int64_t chunk = rows_per_task(a.out, a.nthreads);
#ifdef __AVX2__
    // from 3 tokens: with 2 the gathers measured 1.05-1.19x faster, with 4 the list 1.35-1.71x (4096 x 4096,
    // 50-95%, 2 threads, weights from DRAM)
    if (a.n >= 3) {
        csr_decode_xt8(a, vals, cols, chunk);
        return;
    }
#endif
    int64_t safe_from = a.out;  // rows whose last full-width loads could pass the end of the arrays
    while (safe_from > 0 && a.row_ptr[safe_from] + S::W > a.row_ptr[a.out]) --safe_from;
#pragma omp parallel for schedule(dynamic, 1) num_threads(a.nthreads) if (a.nthreads > 1)
    for (int64_t r0 = 0; r0 < a.out; r0 += chunk) {
        const int64_t r1 = imin(a.out, r0 + chunk);
        switch (a.n) {
            case 1: csr_decode_rows<1>(a, vals, cols, r0, r1, safe_from); break;
            case 2: csr_decode_rows<2>(a, vals, cols, r0, r1, safe_from); break;
            case 3: csr_decode_rows<3>(a, vals, cols, r0, r1, safe_from); break;
            case 4: csr_decode_rows<4>(a, vals, cols, r0, r1, safe_from); break;
            case 5: csr_decode_rows<5>(a, vals, cols, r0, r1, safe_from); break;
            case 6: csr_decode_rows<6>(a, vals, cols, r0, r1, safe_from); break;
            case 7: csr_decode_rows<7>(a, vals, cols, r0, r1, safe_from); break;
            default: csr_decode_rows<8>(a, vals, cols, r0, r1, safe_from); break;
        }
    }
}

template <int VT, class WT, class IT>
static inline void csr_task(const SpmmArgs& a, const float* xtile, int64_t np, const WT* vals, const IT* cols,
                            int64_t r0, int64_t rows, float* tmp, int64_t ld) {
    using V = typename S::V;
    int64_t cur[kBitmaskTaskRows];
    for (int64_t i = 0; i < rows; ++i) {
        cur[i] = a.row_ptr[r0 + i];
        for (int v = 0; v < VT; ++v) S::storeu(tmp + i * ld + v * S::W, S::zero());
    }
    for (int64_t k1 = 64; k1 < a.in + 64; k1 += 64) {  // slab of columns [k1 - 64, k1)
        for (int64_t i = 0; i < rows; ++i) {
            int64_t q = cur[i];
            const int64_t e = a.row_ptr[r0 + i + 1];
            if (q >= e || static_cast<int64_t>(cols[q]) >= k1) continue;
            float* dst = tmp + i * ld;
            V acc[VT];
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) acc[v] = S::loadu(dst + v * S::W);
            for (; q < e && static_cast<int64_t>(cols[q]) < k1; ++q) {
                const float* xr = xtile + static_cast<int64_t>(cols[q]) * np;
                const V w = bcast(vals + q);
#pragma GCC unroll 8
                for (int v = 0; v < VT; ++v) acc[v] = S::fmadd(w, S::loadu(xr + v * S::W), acc[v]);
            }
            cur[i] = q;
            prefetch_lines<3>(vals + q);  // this row's next visit (see prefetch_lines)
            prefetch_lines<1>(cols + q);
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) S::storeu(dst + v * S::W, acc[v]);
        }
    }
}

// At or below this fraction of nonzeros the batched kernel walks each row in one visit (csr_task_rows).
// Measured at N = 128, 2 threads, AVX-512, in one process against the K-blocked walk: 1.03-1.69x at 95% on
// 1536x384, 3072x768 and 384x1536, but 0.88-1.17x at 90%; the threshold lies between.
constexpr double kCsrWholeRowDensity = 0.075;

// Whole-row visits for high sparsity: each row of the task walks all its nonzeros in one loop with its
// accumulators in registers throughout, and xt is read from wherever it sits (L2 for most columns). At 95% a row
// has ~3 nonzeros per 64-column slab, and the K-blocked walk paid a slab visit (a mispredicted exit, the reload
// and store of the accumulators) for each. Where registers allow, two accumulator sets take alternate nonzeros,
// so that VT chains of FMAs per set do not wait on the FMA latency. (A software prefetch of the xt columns 8
// nonzeros ahead measured 1-8% slower.)
template <int VT, class WT, class IT>
static inline void csr_task_rows(const SpmmArgs& a, const float* xtile, int64_t np, const WT* vals, const IT* cols,
                                 int64_t r0, int64_t rows, float* tmp, int64_t ld) {
    using V = typename S::V;
    constexpr int NACC = 2 * VT + 4 <= S::NREG ? 2 : 1;
    for (int64_t i = 0; i < rows; ++i) {
        int64_t q = a.row_ptr[r0 + i];
        const int64_t e = a.row_ptr[r0 + i + 1];
        V acc[NACC][VT];
#pragma GCC unroll 2
        for (int u = 0; u < NACC; ++u)
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) acc[u][v] = S::zero();
        for (; q + NACC <= e; q += NACC) {
#pragma GCC unroll 2
            for (int u = 0; u < NACC; ++u) {
                const float* xr = xtile + static_cast<int64_t>(cols[q + u]) * np;
                const V w = bcast(vals + q + u);
#pragma GCC unroll 8
                for (int v = 0; v < VT; ++v) acc[u][v] = S::fmadd(w, S::loadu(xr + v * S::W), acc[u][v]);
            }
        }
        if (q < e) {  // NACC = 2 and an odd count: the last nonzero
            const float* xr = xtile + static_cast<int64_t>(cols[q]) * np;
            const V w = bcast(vals + q);
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) acc[0][v] = S::fmadd(w, S::loadu(xr + v * S::W), acc[0][v]);
        }
        if constexpr (NACC == 2)
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) acc[0][v] = S::add(acc[0][v], acc[1][v]);
#pragma GCC unroll 8
        for (int v = 0; v < VT; ++v) S::storeu(tmp + i * ld + v * S::W, acc[0][v]);
    }
}

template <class WT, class IT, bool ROWS>
struct CsrTask {
    const SpmmArgs& a;
    const float* xtile;
    int64_t np;
    const WT* vals;
    const IT* cols;
    int64_t r0, rows;
    float* tmp;
    int64_t ld;
    template <int VT>
    void run() const {
        if constexpr (ROWS) csr_task_rows<VT>(a, xtile, np, vals, cols, r0, rows, tmp, ld);
        else csr_task<VT>(a, xtile, np, vals, cols, r0, rows, tmp, ld);
    }
};

template <class WT, class IT, bool ROWS>
static void csr_batched_tiles(const SpmmArgs& a) {
    constexpr int VV = tile_vectors<1>();
    constexpr int NT = VV * S::W;
    constexpr int64_t RT = kBitmaskTaskRows;
    const WT* vals = static_cast<const WT*>(a.values);
    const IT* cols = static_cast<const IT*>(a.col_idx);
    const int64_t ntasks = (a.out + RT - 1) / RT;
    batched_tasks<NT>(a, ntasks, [&](const float* xtile, int64_t np, int64_t t0, int vt, int64_t task) {
        alignas(64) float tmp[RT * NT];
        const int64_t r0 = task * RT, rows = imin(a.out, r0 + RT) - r0;
        with_vectors<VV>(vt, CsrTask<WT, IT, ROWS>{a, xtile, np, vals, cols, r0, rows, tmp, NT});
        const int64_t tn = imin(static_cast<int64_t>(vt) * S::W, a.n - t0);
        store_out(a, tmp, NT, rows, r0, t0, tn);
    });
}

template <class WT, class IT>
static void csr_batched(const SpmmArgs& a) {
    if (static_cast<double>(a.row_ptr[a.out]) <= kCsrWholeRowDensity * static_cast<double>(a.out * a.in))
        csr_batched_tiles<WT, IT, true>(a);
    else
        csr_batched_tiles<WT, IT, false>(a);
}

template <class WT>
static void csr_kernel(const SpmmArgs& a) {
    if (a.n <= kDecodeMaxN) {
        if (a.idx_type == IdxType::U16) csr_decode<WT, uint16_t>(a);
        else csr_decode<WT, int32_t>(a);
        act_rows(a);
    } else {
        if (a.idx_type == IdxType::U16) csr_batched<WT, uint16_t>(a);
        else csr_batched<WT, int32_t>(a);
    }
}
