// kernels/bitmask.h: y = x W^T + b for W as a bitmask of nonzeros plus packed values (formats/bitmask.py), and
// for N:M, which is the same bit layout with exactly n of every m bits set (formats/nm.py): its rows start at
// r * in * n / m, so no row pointer is stored.
//
// Batched: each row walks its set bits (tzcnt), broadcasting one value against a contiguous NT-token load of
// xt, i.e. work proportional to the nonzeros; 16 rows share one output stage (two 8 x 8 transposes).
// Decode: each row walks its mask in chunks of W columns; a chunk's values are expanded into the lanes of its
// set bits (vexpandps on AVX-512, a permute table on AVX2) and multiplied with W contiguous inputs, so the
// weights stream once at full vector width however the zeros fall.

static inline int64_t row_start(const SpmmArgs& a, int64_t r) {
    return a.row_ptr ? a.row_ptr[r] : r * (a.in / a.nm_m) * a.nm_n;
}

static inline int64_t ctz64(uint64_t v) { return __builtin_ctzll(v); }

// Rows per batched task: four lines of y per token, 16 KB of accumulators at 64-token tiles (32 KB at 128). With
// a block of xt per thread, 64 rows measured 0.94-1.00x of 32's time (unstructured 50-95%, four shapes, N = 128,
// both role orders, 2026-11-30), as for the BSR kernels' tasks.
constexpr int64_t kBitmaskTaskRows = 64;

// At or below this fraction of nonzeros the batched kernel visits each row two mask words at a time and, with 32
// vector registers, runs 128-token tiles (see bitmask_batched).
constexpr double kBitmaskSparseDensity = 0.25;

// One task: rows r0 .. r0+rows of one token tile, K-blocked by KW mask words. The xt columns of a word (64 columns
// x VT*W tokens, 16 KB at 64 tokens) stay in L1 while every row of the task adds that word's nonzeros into its
// accumulators, which live in tmp (L1) between visits. Without the blocking each nonzero pulls VT*W*4 bytes of xt
// from L2, and that traffic, not the FMAs, set the pace (measured: ~9 vs ~5.5 cycles per nonzero at 70%).
// Each visit of a row costs a mispredicted loop exit (its bit count is random) and the reload and store of its
// accumulators; with KW = 2 the walk moves from the first word to the second without a branch, so a visit covers
// twice the nonzeros.
template <int VT, int KW, class WT>
static inline void bitmask_task(const SpmmArgs& a, const float* xtile, int64_t np, const WT* vals, int64_t r0,
                                int64_t rows, float* tmp, int64_t ld) {
    static_assert(KW == 1 || KW == 2, "one or two mask words per visit");
    using V = typename S::V;
    int64_t p[kBitmaskTaskRows];
    for (int64_t i = 0; i < rows; ++i) {
        p[i] = row_start(a, r0 + i);
        for (int v = 0; v < VT; ++v) S::storeu(tmp + i * ld + v * S::W, S::zero());
    }
    const int64_t step = 64 * np;  // xt floats between the columns of consecutive words
    for (int64_t wi = 0; wi < a.mask_words; wi += KW) {
        const bool two = KW == 2 && wi + 1 < a.mask_words;
        const float* xb = xtile + wi * step;
        const uint64_t* m = a.mask + r0 * a.mask_words + wi;
        for (int64_t i = 0; i < rows; ++i) {
            uint64_t lo = m[i * a.mask_words], hi = two ? m[i * a.mask_words + 1] : 0;
            if (!(lo | hi)) continue;
            const float* base = xb;
            if (KW == 2 && !lo) {
                lo = hi;
                hi = 0;
                base += step;
            }
            float* dst = tmp + i * ld;
            V acc[VT];
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) acc[v] = S::loadu(dst + v * S::W);
            int64_t q = p[i];
            if constexpr (KW == 1) {  // this loop's shape measured ~3% ahead of the do-while below at 50%
                for (; lo; lo &= lo - 1) {
                    const float* xr = xb + ctz64(lo) * np;
                    const V w = bcast(vals + q++);
#pragma GCC unroll 8
                    for (int v = 0; v < VT; ++v) acc[v] = S::fmadd(w, S::loadu(xr + v * S::W), acc[v]);
                }
            } else {
                do {
                    const float* xr = base + ctz64(lo) * np;
                    const V w = bcast(vals + q++);
#pragma GCC unroll 8
                    for (int v = 0; v < VT; ++v) acc[v] = S::fmadd(w, S::loadu(xr + v * S::W), acc[v]);
                    lo &= lo - 1;
                    // lo ran out: continue with hi (z is all ones then, else 0)
                    const uint64_t z = uint64_t{0} - static_cast<uint64_t>(lo == 0);
                    lo |= hi & z;
                    hi &= ~z;
                    base += static_cast<int64_t>(z & static_cast<uint64_t>(step));
                } while (lo);
            }
            p[i] = q;
            // the values of this row's next visit start at q (up to ~2 lines at 50%), its mask word two visits
            // ahead is the next line's at most (see prefetch_lines)
            prefetch_lines<3>(vals + q);
            prefetch_lines<1>(m + i * a.mask_words + 2 * KW);
#pragma GCC unroll 8
            for (int v = 0; v < VT; ++v) S::storeu(dst + v * S::W, acc[v]);
        }
    }
}

template <int KW, class WT>
struct BitmaskTask {
    const SpmmArgs& a;
    const float* xtile;
    int64_t np;
    const WT* vals;
    int64_t r0, rows;
    float* tmp;
    int64_t ld;
    // The branch-free step to the second word puts ~4 cycles of dependent integer work on every nonzero; below 64
    // tokens its FMAs take less than that (at N = 32 two words per visit ran 0.85-0.97x of the earlier one-word
    // kernel at 80-95%, one word 0.98-1.04x), so narrow tiles walk one word per visit.
    template <int VT>
    void run() const {
        if constexpr (KW == 2 && VT * S::W < 64) bitmask_task<VT, 1>(a, xtile, np, vals, r0, rows, tmp, ld);
        else bitmask_task<VT, KW>(a, xtile, np, vals, r0, rows, tmp, ld);
    }
};

template <class WT, int VV, int KW>
static void bitmask_batched_tiles(const SpmmArgs& a, int64_t min_thread_vectors) {
    constexpr int NT = VV * S::W;
    constexpr int64_t RT = kBitmaskTaskRows;
    const WT* vals = static_cast<const WT*>(a.values);
    const int64_t ntasks = (a.out + RT - 1) / RT;
    batched_tasks<NT>(a, ntasks, [&](const float* xtile, int64_t np, int64_t t0, int vt, int64_t k) {
        alignas(64) float tmp[RT * NT];
        const int64_t r0 = k * RT, rows = imin(a.out, r0 + RT) - r0;
        with_vectors<VV>(vt, BitmaskTask<KW, WT>{a, xtile, np, vals, r0, rows, tmp, NT});
        const int64_t tn = imin(static_cast<int64_t>(vt) * S::W, a.n - t0);
        store_out(a, tmp, NT, rows, r0, t0, tn);
    }, min_thread_vectors);
}

// Above kBitmaskSparseDensity: 64-token tiles, one mask word per visit. At or below it a row has few nonzeros per
// word (~6 at 90%, ~3 at 95%) and the cost per visit dominates: two words per visit, and 128-token tiles (AVX-512)
// where every thread gets a whole one, which halve the visits again and the bit walking per FMA. Measured on
// 3072x768, N = 128, AVX-512, in one process against the one-word 64-token kernel, two words and 128-token tiles:
// one thread 1.18x at 70%, 1.62x at 95%; two threads sharing the tiles by rows 1.08x at 80%, 1.25x at 90%, 1.32x
// at 95%, but 1.01x at 70% and 0.84x at 50%, hence the threshold.
// With fewer tokens than a wide tile per thread, the threads share 128-token tiles by rows for weights of
// kBitmaskWideRowsElems or more: at N = 128 on two threads that measured 1.03-1.14x faster than 64 tokens each on
// 3072x768 and 768x3072 (80-95%), but 0.92-0.96x on 1536x384 and only 1.01-1.07x on 384x1536, smaller weights
// whose per-call output and transposes weigh more against the walk.
constexpr int64_t kBitmaskWideRowsElems = int64_t{1} << 21;

template <class WT>
static void bitmask_batched(const SpmmArgs& a) {
    constexpr int VV = tile_vectors<1>();
    // 8 accumulators and their loads: 128 tokens with AVX-512; the other ISAs' tiles are 8 vectors already
    constexpr int VWIDE = S::NREG - 4 >= 8 ? 8 : VV;
    const int64_t nvec = (a.n + S::W - 1) / S::W;
    if (static_cast<double>(a.n_values) > kBitmaskSparseDensity * static_cast<double>(a.out * a.in))
        bitmask_batched_tiles<WT, VV, 1>(a, kSplitTokensMinVectors);
    else if (nvec >= VWIDE * a.nthreads || (VWIDE > VV && a.out * a.in >= kBitmaskWideRowsElems))
        bitmask_batched_tiles<WT, VWIDE, 2>(a, VWIDE);  // by tokens only if each gets a whole tile
    else
        bitmask_batched_tiles<WT, VV, 2>(a, kSplitTokensMinVectors);
}

// The W values of a chunk starting at p. A full-width load reads up to W - 1 values past the chunk; only the
// last row(s) of the weight can run past the end of `values`, and those rows use SAFE = true, which copies just
// the `count` values that exist. (The copy must stay out of the other rows' loop: a call there makes the
// compiler keep the accumulators in memory, which measured 3x slower.)
template <bool SAFE, class WT>
static inline typename S::V chunk_values(const WT* vals, int64_t p, int count) {
    if constexpr (!SAFE) {
        return vload(vals + p);
    } else {
        alignas(64) WT buf[S::W];
        for (int i = 0; i < S::W; ++i) buf[i] = i < count ? vals[p + i] : WT{};
        return vload(buf);
    }
}

// One row for NTOK tokens. Every W-column chunk is processed, empty or not: a branch on "chunk empty" is
// unpredictable at high sparsity and costs more than the FMA it saves. With one token, four accumulators rotate
// over the chunks so that the FMA latency (4 cycles) does not serialise the row.
template <int NTOK, bool SAFE, class WT>
static inline void bitmask_decode_row(const SpmmArgs& a, const float* xp, int64_t ldp, const WT* vals, int64_t r) {
    using V = typename S::V;
    constexpr int W = S::W;
    constexpr int CH = 64 / W;  // chunks per mask word
    constexpr int NACC = NTOK == 1 ? 4 : NTOK;
    constexpr uint64_t kChunk = W >= 64 ? ~uint64_t{0} : (uint64_t{1} << W) - 1;
    V acc[NACC];
    for (int t = 0; t < NACC; ++t) acc[t] = S::zero();
    int64_t p = row_start(a, r);
    const uint64_t* m = a.mask + r * a.mask_words;
    for (int64_t wi = 0; wi < a.mask_words; ++wi) {
        const uint64_t word = m[wi];
        const float* xw = xp + wi * 64;
#pragma GCC unroll 16
        for (int j = 0; j < CH; ++j) {
            const unsigned bits = static_cast<unsigned>((word >> (j * W)) & kChunk);
            const int count = __builtin_popcount(bits);
            const V w = S::expand(chunk_values<SAFE>(vals, p, count), bits);
            p += count;
            if constexpr (NTOK == 1) {
                acc[j % NACC] = S::fmadd(w, S::loadu(xw + j * W), acc[j % NACC]);
            } else {
                for (int t = 0; t < NTOK; ++t) acc[t] = S::fmadd(w, S::loadu(xw + t * ldp + j * W), acc[t]);
            }
        }
    }
    if constexpr (NTOK == 1) {
        const V s = S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3]));
        a.y[r] = S::reduce(s) + (a.bias ? a.bias[r] : 0.0f);
    } else {
        for (int t = 0; t < NTOK; ++t) a.y[t * a.ldy + r] = S::reduce(acc[t]) + (a.bias ? a.bias[r] : 0.0f);
    }
}

template <int NTOK, class WT>
static inline void bitmask_decode_rows(const SpmmArgs& a, const float* xp, int64_t ldp, const WT* vals, int64_t r0,
                                       int64_t r1, int64_t safe_from) {
    for (int64_t r = r0; r < r1; ++r) {
        if (r < safe_from) bitmask_decode_row<NTOK, false>(a, xp, ldp, vals, r);
        else bitmask_decode_row<NTOK, true>(a, xp, ldp, vals, r);
    }
}

#ifdef __AVX2__
#ifndef __AVX512F__
// For each byte b, the positions of its set bits, one per byte from the lowest (AVX2's set_bit_columns).
struct SetBitLut {
    uint64_t pos[256];
    constexpr SetBitLut() : pos() {
        for (int b = 0; b < 256; ++b)
            for (int i = 0, n = 0; i < 8; ++i)
                if (b >> i & 1) pos[b] |= static_cast<uint64_t>(i) << (8 * n++);
    }
};
static constexpr SetBitLut kSetBitLut{};
#endif

// The columns base + i of the set bits i of `word`, in order, written from out[0]; returns their count. Writes
// up to 16 entries past the count. Branch-free: a loop over the set bits (count trailing zeros, clear the
// lowest) mispredicted its exit once per word and cost ~8 cycles per value at 90% sparsity.
static inline int64_t set_bit_columns(uint64_t word, int32_t base, int32_t* out) {
    int64_t c = 0;
#ifdef __AVX512F__
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int q = 0; q < 4; ++q) {
        const auto bits = static_cast<__mmask16>(word >> (16 * q));
        const __m512i cols = _mm512_add_epi32(iota, _mm512_set1_epi32(base + 16 * q));
        _mm512_storeu_si512(out + c, _mm512_maskz_compress_epi32(bits, cols));
        c += __builtin_popcount(bits);
    }
#else
    for (int q = 0; q < 8; ++q) {
        const unsigned bits = static_cast<unsigned>(word >> (8 * q)) & 0xffu;
        const __m256i pos = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(kSetBitLut.pos[bits])));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_add_epi32(pos, _mm256_set1_epi32(base + 8 * q)));
        c += __builtin_popcount(bits);
    }
#endif
    return c;
}

// Decode with more tokens (see bitmask_decode; decode_xt8.h): a row's set bits, 8 mask words (512 columns) at a time,
// become a list of columns, and its values are applied to xt8 as the CSR kernel's are.
template <class WT>
static void bitmask_decode_xt8(const SpmmArgs& a, const WT* vals, int64_t chunk) {
    constexpr int64_t WORDS = 8;
    xt8_decode(a, chunk, [&](const float* xt, int64_t r) {
        __m256 acc[kXt8Chains];
        xt8_zero(acc);
        int64_t p = row_start(a, r);
        const uint64_t* m = a.mask + r * a.mask_words;
        int32_t cols[WORDS * 64 + 16];
        for (int64_t w0 = 0; w0 < a.mask_words; w0 += WORDS) {
            int64_t c = 0;
            for (int64_t wi = w0; wi < imin(a.mask_words, w0 + WORDS); ++wi)
                c += set_bit_columns(m[wi], static_cast<int32_t>(wi * 64), cols + c);
            xt8_accumulate(acc, xt, vals + p, cols, c);
            p += c;
        }
        xt8_store_row(a, acc, r);
    });
}
#endif

template <class WT>
static void bitmask_decode(const SpmmArgs& a) {
    const WT* vals = static_cast<const WT*>(a.values);
    const int64_t chunk = rows_per_task(a.out, a.nthreads);
#ifdef __AVX2__
    // The chunk walk below costs ~n times the weight's chunks, the value list ~3 cycles per stored value whatever
    // n: measured on 4096 x 4096 (one thread, weights from DRAM) the list was faster from n = 3 at 90% sparsity,
    // n = 5-6 at 70% and n = 6-7 at 50% (2:4 too): it takes over from n >= 2 + 8 x density.
    const double density = static_cast<double>(a.n_values) / static_cast<double>(a.out * a.in);
    if (static_cast<double>(a.n) >= 2.0 + 8.0 * density) {
        bitmask_decode_xt8(a, vals, chunk);
        return;
    }
#endif
    // rows from here on could read a chunk past the end of `values` (a row's loads end before its end + W)
    int64_t safe_from = a.out;
    while (safe_from > 0 && row_start(a, safe_from) + S::W > a.n_values) --safe_from;
    float* xp = a.work;
#pragma omp parallel num_threads(a.nthreads) if (a.nthreads > 1)
    {
        const int64_t ldp = pad_rows(a, xp);
#pragma omp for schedule(dynamic, 1)
        for (int64_t r0 = 0; r0 < a.out; r0 += chunk) {
            const int64_t r1 = imin(a.out, r0 + chunk);
            switch (a.n) {
                case 1: bitmask_decode_rows<1>(a, xp, ldp, vals, r0, r1, safe_from); break;
                case 2: bitmask_decode_rows<2>(a, xp, ldp, vals, r0, r1, safe_from); break;
                case 3: bitmask_decode_rows<3>(a, xp, ldp, vals, r0, r1, safe_from); break;
                case 4: bitmask_decode_rows<4>(a, xp, ldp, vals, r0, r1, safe_from); break;
                case 5: bitmask_decode_rows<5>(a, xp, ldp, vals, r0, r1, safe_from); break;
                case 6: bitmask_decode_rows<6>(a, xp, ldp, vals, r0, r1, safe_from); break;
                case 7: bitmask_decode_rows<7>(a, xp, ldp, vals, r0, r1, safe_from); break;
                default: bitmask_decode_rows<8>(a, xp, ldp, vals, r0, r1, safe_from); break;
            }
        }
    }
}

template <class WT>
static void bitmask_kernel(const SpmmArgs& a) {
    if (a.n <= kDecodeMaxN) {
        bitmask_decode<WT>(a);
        act_rows(a);
    } else {
        bitmask_batched<WT>(a);
    }
}
