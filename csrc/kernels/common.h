// kernels/common.h: pieces shared by the kernels of one ISA unit (included inside its namespace, after `S`).
//
// Batched regime ("transpose, then broadcast weights"): x (n, in) is transposed into xt (in, np), np =
// xt_stride(n), so that input column k of a tile of tokens is contiguous; tokens n .. (n rounded up to the vector
// width W) are zeros, and the columns after them are never read or written. A kernel then computes a
// group of output rows for one token tile into `tmp` (rows x NT, in L1), and the output stage transposes that
// back into y (n, out) with 8 x 8 register transposes and adds the bias. Both transposes are vectorised and
// threaded; they cost ~0.3 cycles per element against the W x (1 - sparsity) x in FMAs each output needs.
// batched_tasks (below) is the one loop over (token tile, task) every batched kernel runs, and decides how the
// threads share a call.

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

static inline float wload(const float* p, int64_t i) { return p[i]; }
static inline float wload(const uint16_t* p, int64_t i) {
    const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;  // bf16 is the top half of an fp32
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
static inline typename S::V bcast(const float* p) { return S::set1(*p); }
static inline typename S::V bcast(const uint16_t* p) { return S::set1_bf16(p); }
static inline typename S::V vload(const float* p) { return S::loadu(p); }
static inline typename S::V vload(const uint16_t* p) { return S::loadu_bf16(p); }

// Prefetch the `lines` 64-byte lines from p into L1. The K-blocked kernels (bitmask.h, csr.h) visit the rows of a
// task in turn, one slab of columns at a time, so a task reads its weights as one stream per row (64 streams)
// and the hardware prefetchers, which follow a few sequential streams, fetch almost none of them: with the
// weights in DRAM or in an L3 shared with other work, each visit waited for its first value. A row's next visit
// comes after the task's other rows (~64 visits later), time enough to fetch its values from DRAM.
// (Prefetches never fault, so the addresses may run past the arrays.)
template <int lines>
static inline void prefetch_lines(const void* p) {
    const char* c = static_cast<const char*>(p);
#pragma GCC unroll 4
    for (int i = 0; i < lines; ++i) __builtin_prefetch(c + 64 * i, 0, 3);
}

// Token-tile width in vectors for a kernel that keeps `rows` rows of accumulators in registers: as many as fit
// beside the loads and the broadcast weight, but no wider than 64 tokens, so that N = 128 splits into whole tiles.
// (At most 8 vectors: with_vectors instantiates register tiles of 1..8 vectors.)
template <int rows>
static constexpr int tile_vectors() {
    constexpr int fit = (S::NREG - 4) / rows;
    constexpr int cap = (64 / S::W) < 8 ? (64 / S::W) : 8;
    return fit < 1 ? 1 : (fit > cap ? cap : fit);
}

// Rows (or block-rows) per dynamically scheduled task: enough tasks to balance the threads.
static inline int64_t rows_per_task(int64_t rows, int nthreads) {
    return imax(1, imin(64, rows / (8 * imax(1, nthreads))));
}

// Columns per step of the x transposes: one whole 64-byte line of each row of x. With 8 (half a line) the two
// halves of a line were read in two passes over the token rows, and rows `in` floats apart share few L1 sets
// (in = 3072: one; every row of x 12 KB apart), so the line was gone by the second pass and came from L2 or L3
// twice.
constexpr int64_t kTransposeCols = 16;
// How far ahead, in lines of the same rows of x, the transposes prefetch: a step reads one line from each of 8
// rows `in` floats apart, streams the hardware prefetchers do not pick up.
constexpr int kTransposePrefetchLines = 2;

// xt[k * np + t - t0] = x[t * ldx + k] for k0 <= k < k0 + kn (kn <= kTransposeCols) and t0 <= t < t1 (t0 a
// multiple of 8), 0 where t >= n: xt points at the column of token t0.
static inline void transpose_part(const float* x, int64_t n, int64_t ldx, float* xt, int64_t np, int64_t k0,
                                  int64_t kn, int64_t t0, int64_t t1) {
    const int64_t tn = imin(n, t1);
    int64_t tv = t0, kv = 0;  // the vector path covers tokens t0 .. tv, columns k0 .. k0 + kv
#ifdef __AVX2__
    if (kn >= 8) {
        kv = kn == 16 ? 16 : 8;
        for (; tv + 8 <= tn; tv += 8) {
            const float* xr = x + tv * ldx + k0;
            __m256 r[8];
            for (int i = 0; i < 8; ++i) __builtin_prefetch(xr + i * ldx + 16 * kTransposePrefetchLines, 0, 3);
            for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(xr + i * ldx);
            S::transpose8(r);  // r[j] = column k0 + j over tokens tv .. tv+7
            for (int j = 0; j < 8; ++j) _mm256_storeu_ps(xt + (k0 + j) * np + (tv - t0), r[j]);
            if (kv == 16) {
                for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(xr + i * ldx + 8);
                S::transpose8(r);
                for (int j = 0; j < 8; ++j) _mm256_storeu_ps(xt + (k0 + 8 + j) * np + (tv - t0), r[j]);
            }
        }
    }
#endif
    for (int64_t t = t0; t < tn; ++t)
        for (int64_t k = t < tv ? k0 + kv : k0; k < k0 + kn; ++k) xt[k * np + (t - t0)] = x[t * ldx + k];
    for (int64_t k = k0; k < k0 + kn; ++k)
        for (int64_t tt = imax(t0, n); tt < t1; ++tt) xt[k * np + (tt - t0)] = 0.0f;
}

// Column blocks (kTransposeCols wide) a thread claims at once in transpose_in: 64 columns, i.e. 64 rows of xt in
// one run of memory. One 8-column block at a time interleaved the threads' rows, and a core's prefetches of the
// lines after its own took the other's; claiming 64 columns measured 1.02-1.14x faster at N = 32 (4x1 and
// unstructured, 90%) and 1.03-1.04x on the rows-shared 128-token tiles of 3072x768 and 768x3072 at 95% (two
// threads, in one process).
constexpr int64_t kTransposeClaimBlocks = 64 / kTransposeCols;

// All of xt (tokens 0 .. t1) by the threads of the enclosing parallel region, which claim runs of column blocks
// from `claimed` and count the blocks in `done`; each returns once every block is written. Unlike a worksharing
// loop with a barrier, no thread waits for another to arrive: the two vCPUs of this VM are at times far from
// equally available (one thread's call as fast as two's), and a static split then waited for the slower half.
static void transpose_in(const float* x, int64_t n, int64_t in, int64_t ldx, float* xt, int64_t np, int64_t t1,
                         std::atomic<int64_t>& claimed, std::atomic<int64_t>& done) {
    constexpr int64_t KC = kTransposeCols, CH = kTransposeClaimBlocks;
    const int64_t nkb = (in + KC - 1) / KC;
    for (int64_t c; (c = claimed.fetch_add(CH, std::memory_order_relaxed)) < nkb;) {
        for (int64_t kb = c; kb < imin(nkb, c + CH); ++kb)
            transpose_part(x, n, ldx, xt, np, kb * KC, imin(KC, in - kb * KC), 0, t1);
        done.fetch_add(imin(nkb, c + CH) - c, std::memory_order_release);
    }
    while (done.load(std::memory_order_acquire) < nkb) {
    }
}

static inline int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static inline int thread_count() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// The loop shared by the batched kernels: x is transposed into xt, then `task(xtile, np, t0, vt, k)` computes
// tasks k = 0 .. ntasks-1 (each a group of output rows) for the token tile that starts at t0 and is vt vectors
// wide (vt * W <= NT), whose transposed inputs start at xtile with rows np floats apart, and writes them to y.
//
// How threads share a call: when every thread gets at least min_thread_vectors vectors of tokens (by default
// kSplitTokensMinVectors; a kernel may ask for a whole wide tile per thread), each takes its own contiguous
// tokens, transposes only those columns of x (no barrier after the transpose) and runs every task for them, then
// takes what is left of the other threads' tasks (TaskQueue). Before, the rows were split as a
// dynamic queue of 8-row tasks over both threads: 2 threads ran at 1.1-1.5x of one at N = 128 (4x1 90% 1536x384:
// 0.242 ms on one thread, 0.225 ms on two), as neighbouring tasks on different cores wrote the two halves of the
// same 64-byte lines of y. Tasks now cover whole lines (then 16 rows, now 32) in both modes; with 16, the row
// split measured 0.94-0.98x of the token split's time at N = 128 (within this machine's noise) and 1.06-1.07x
// slower at N = 512.
// Taking the others' tasks measured 1-22% faster than a static token split while both threads' tokens shared one
// matrix xt (the two halves of a call took 101 and 142 us; that layout, not the cores, made them unequal, see
// block_of below). With a block of xt per thread, a task taken from another thread reads that thread's block
// from the other core's cache and a static split ran 1-7% faster than taking tasks to the end; a helper now
// leaves the owner its last kHelpLeavesTasks tasks, which measured as fast as the static split (4x1 and
// unstructured at 95%, 1536x384, 3072x768, 384x1536, N = 128, caches cooled by torch between calls) and still
// takes over most of a share whose thread is held up. With fewer tokens the rows are split, which
// keeps both cores busy at N = 16..32: each thread runs a contiguous share of the (tile, task) pairs, then takes
// what is left of the others'. A dynamic queue over all pairs, as before, handed a task to either core at random
// from call to call, and its lines of y with it: the shares measured 1.01-1.37x faster at N = 16, 0.93-1.24x at
// N = 32 (4x1 and unstructured, 70-95%, three shapes) and 0.97-1.15x at N = 128 on the bitmask kernel's
// row-shared wide tiles (3072x768, 768x3072).
constexpr int64_t kSplitTokensMinVectors = 2;
constexpr int64_t kHelpLeavesTasks = 4;

// A thread's list of tasks, which other threads may take from once they finished theirs. Tasks write whole
// 64-byte lines of y (groups of 16 rows or more), so two threads taking alternate tasks never share a line.
struct alignas(64) TaskQueue {
    std::atomic<int64_t> next{0};  // the next task not yet taken
    std::atomic<int> ready{0};     // set once the owner's block of xt is written
};

template <int NT, class F>
static void batched_tasks(const SpmmArgs& a, int64_t ntasks, const F& task,
                          int64_t min_thread_vectors = kSplitTokensMinVectors) {
    constexpr int64_t VMAX = NT / S::W;
    const int64_t nvec = (a.n + S::W - 1) / S::W, np = xt_stride(a.n);  // np: xt's row stride when rows split
    float* xt = a.work;
    const bool by_tokens = a.nthreads <= 1 || nvec >= a.nthreads * min_thread_vectors;
    std::unique_ptr<TaskQueue[]> queues(new TaskQueue[a.nthreads]);
    std::atomic<int64_t> claimed{0}, done{0};  // xt's column blocks, when the threads share it (rows split)
#pragma omp parallel num_threads(a.nthreads) if (a.nthreads > 1)
    {
        if (by_tokens) {
            const int64_t tid = thread_index(), nth = thread_count();
            // thread t's tokens: vectors v0 .. v1, run as nt tiles of near-equal width (5 vectors as 3 + 2, not 4 + 1)
            const auto tokens_of = [&](int64_t t, int64_t& v0, int64_t& v1, int64_t& nt) {
                v0 = nvec * t / nth;
                v1 = nvec * (t + 1) / nth;
                nt = (v1 - v0 + VMAX - 1) / VMAX;
            };
            // Thread t's block of xt: its own tokens only, after the blocks of threads 0 .. t-1. With one matrix of
            // all tokens, each row of xt held both threads' columns side by side, and two threads transposed
            // 128 x 1536 in 30 us against 37 us on one, 128 x 384 in 8.3 against 6.7 us, and up to 4x slower in
            // the host's slow phases (benchmarks/micro/xt_layout.cpp): a core streaming along its lines of a row
            // pulls in the other thread's next to them, and every write then takes them back. Separate blocks:
            // 20 and 3.7 us; in the kernels up to 1.2x at 90-95% (BENCHMARKS.md, "Figures of 2026-11-30
            // 08:35-10:35 UTC").
            // Rows are the thread's token count (rounded up to 16) apart when it runs one tile, which then reads
            // whole rows: the odd-line padding of xt_stride, kept for threads with several tiles, cost 0-16% there.
            const auto block_of = [&](int64_t t, float*& blk, int64_t& npt) {
                int64_t off = 0, u0, u1, un;
                for (int64_t u = 0; u <= t; ++u) {
                    tokens_of(u, u0, u1, un);
                    npt = un == 1 ? round_up((u1 - u0) * S::W, 16) : xt_stride((u1 - u0) * S::W);
                    if (u < t) off += a.in * npt;
                }
                blk = xt + off;
            };
            int64_t v0, v1, nt, npt = 0;
            float* blk;
            tokens_of(tid, v0, v1, nt);
            block_of(tid, blk, npt);
            // the last thread's vectors end with the tokens past n that fill the last vector: those are zeroed
            for (int64_t k0 = 0; k0 < a.in; k0 += kTransposeCols)
                transpose_part(a.x, a.n, a.ldx, blk, npt, k0, imin(kTransposeCols, a.in - k0), v0 * S::W, v1 * S::W);
            queues[tid].ready.store(1, std::memory_order_release);
            // Runs thread o's tasks (tile outer, so that one tile of xt is reused while it sits in L2) until its
            // queue is empty.
            const auto drain = [&](int64_t o, bool helper) {
                int64_t u0, u1, un, npo = 0;
                float* blko;
                tokens_of(o, u0, u1, un);
                block_of(o, blko, npo);
                const int64_t total = un * ntasks;
                const int64_t keep = helper ? kHelpLeavesTasks : 0;
                for (int64_t i; (!keep || queues[o].next.load(std::memory_order_relaxed) < total - keep) &&
                                (i = queues[o].next.fetch_add(1, std::memory_order_relaxed)) < total;) {
                    const int64_t j = i / ntasks, k = i % ntasks;
                    const int64_t w0 = u0 + (u1 - u0) * j / un, w1 = u0 + (u1 - u0) * (j + 1) / un;
                    task(blko + (w0 - u0) * S::W, npo, w0 * S::W, static_cast<int>(w1 - w0), k);
                }
            };
            drain(tid, false);
            // then help the others, so that a thread on a slower core is not waited for
            for (int64_t d = 1; d < nth; ++d) {
                const int64_t o = (tid + d) % nth;
                while (!queues[o].ready.load(std::memory_order_acquire)) {
                }
                drain(o, true);
            }
        } else {
            transpose_in(a.x, a.n, a.in, a.ldx, xt, np, nvec * S::W, claimed, done);
            // (token tile, task) pairs, tile outer: consecutive tasks reuse one tile of xt while it sits in L2 (with
            // the row groups outer each task pulled a fresh tile from L3, measured 2-3x slower at n = 2048). Each
            // thread owns a contiguous share and runs it first, then takes what is left of the others' shares:
            // the same tasks, hence the same lines of y, stay on the same core from call to call (see above).
            const int64_t ntiles = (nvec + VMAX - 1) / VMAX, total = ntiles * ntasks;
            const int64_t tid = thread_index(), nth = thread_count();
            const auto drain = [&](int64_t o) {
                const int64_t lo = total * o / nth, count = total * (o + 1) / nth - lo;
                for (int64_t i; (i = queues[o].next.fetch_add(1, std::memory_order_relaxed)) < count;) {
                    const int64_t tile = (lo + i) / ntasks, k = (lo + i) % ntasks;
                    task(xt + tile * NT, np, tile * NT, static_cast<int>(imin(VMAX, nvec - tile * VMAX)), k);
                }
            };
            for (int64_t d = 0; d < nth; ++d) drain((tid + d) % nth);
        }
    }
}

// Rows i0 .. i1 of token t, one by one: what no transpose covers.
static inline void store_row_part(const SpmmArgs& a, const float* tmp, int64_t ld, int64_t i0, int64_t i1, int64_t r0,
                                  float* yr, int64_t t, bool gelu) {
    for (int64_t i = i0; i < i1; ++i) {
        float v = tmp[i * ld + t] + (a.bias ? a.bias[r0 + i] : 0.0f);
        if (gelu) v = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
        yr[i] = v;
    }
}

#ifdef __AVX2__
// Rows 8 * NG of 8 tokens from tmp into y, as NG 8 x 8 transposes, plus the bias (and GELU). With NG = 2 the two
// 32-byte halves of each 64-byte line of y are stored back to back (a line written in two visits, one per 8-row
// group, was evicted in between and missed twice: 50 against 31 us in benchmarks/micro/output_stage.cpp).
template <int NG, bool GELU>
static inline void store_block8(const float* tmp, int64_t ld, const float* bias, float* y, int64_t ldy) {
    __m256 r[NG][8], b[NG];
    for (int g = 0; g < NG; ++g) {
        b[g] = bias ? _mm256_loadu_ps(bias + g * 8) : _mm256_setzero_ps();
        for (int i = 0; i < 8; ++i) r[g][i] = _mm256_loadu_ps(tmp + (g * 8 + i) * ld);
        S::transpose8(r[g]);  // r[g][j] = rows 8g .. 8g+7 of token j
    }
    for (int j = 0; j < 8; ++j)
        for (int g = 0; g < NG; ++g) {
            __m256 v = _mm256_add_ps(r[g][j], b[g]);
            if constexpr (GELU) v = vgelu<SimdAvx2>(v);
            _mm256_storeu_ps(y + j * ldy + g * 8, v);
        }
}
#endif

// y[t0 + t, r0 + i] = act(tmp[i * ld + t] + bias[r0 + i]) for i < rows, t < tn, in 8 x 8 transposes (rows not a
// multiple of 8 and the tokens after the last multiple of 8 one by one): all of the task's rows for 8 tokens, then
// the next 8 tokens. y's rows are `out` floats apart, so a task's lines of y lie `out` floats apart too, and the
// order of the stores matters. The other order, 16 rows (one line per token row) for every token and then the
// next 16 rows, walks 64 lines `out` floats apart in a row: with out = 3072 (12 KB) all 64 fall in one set of the
// 8-way L1 cache, with 1536 in two. Against it, in one process (2026-11-30, N = 128, 2 threads, AVX-512, unstructured
// 50-95% on four shapes): the CSR kernel 1.00-1.31x (1.31x on 1536x384 at 95%, 1.15x on 3072x768 at 95%), the
// bitmask kernel 1.00-1.15x (1.06-1.15x at 50%). BSR tasks had measured within 5% on three shapes and 0.83-0.95x in
// the other order on 1536x384.
// The stores alone (benchmarks/micro/output_stage.cpp, one thread, y in L2) favour 32 rows in this order over
// 16-row tasks (22 against 31 us per 128 x 1536 output, 33-34 against 41-42 us per 64 x 3072) and come within
// 0.9-1.3x of plain full-line stores in the same pattern, so the transposes are not what costs here. In the
// kernels the stage is bound by the stores into y: leaving it out took 1-19 us off a 62-73 us 4x1 call at 95% on
// 1536x384 and 33-69 us off 207-229 us on 3072x768 (two threads; y is 0.8 and 1.6 MB, all written on every
// call); see BENCHMARKS.md, "Where the time goes at 95%".
static inline void store_out(const SpmmArgs& a, const float* tmp, int64_t ld, int64_t rows, int64_t r0, int64_t t0,
                             int64_t tn) {
    // locals: vector stores may alias anything, so members of `a` read in the loop were reloaded after each store
    float* const y = a.y + t0 * a.ldy + r0;
    const int64_t ldy = a.ldy;
    const bool gelu = a.act == Act::GELU;
    int64_t tn8 = 0, rows8 = 0;  // what the transposes cover
#ifdef __AVX2__
    const float* const bias = a.bias ? a.bias + r0 : nullptr;
    rows8 = rows / 8 * 8;
    tn8 = tn / 8 * 8;
    // rows i .. i+16 (or i+8 for the last group) of tokens t .. t+7
    const auto block = [&](int64_t i, int64_t t) {
        const float* src = tmp + i * ld + t;
        const float* b = bias ? bias + i : nullptr;
        float* dst = y + t * ldy + i;
        if (i + 16 <= rows8) {
            if (gelu) store_block8<2, true>(src, ld, b, dst, ldy);
            else store_block8<2, false>(src, ld, b, dst, ldy);
        } else {
            if (gelu) store_block8<1, true>(src, ld, b, dst, ldy);
            else store_block8<1, false>(src, ld, b, dst, ldy);
        }
    };
    for (int64_t t = 0; t < tn8; t += 8)
        for (int64_t i = 0; i < rows8; i += 16) block(i, t);
#endif
    for (int64_t t = 0; t < tn; ++t)
        store_row_part(a, tmp, ld, t < tn8 ? rows8 : 0, rows, r0, y + t * ldy, t, gelu);
}

// A register tile of 16 rows (acc[i] = row r0 + i for the W tokens from t0) into y with the bias (and GELU), for
// the kernels that keep whole tiles in registers: with AVX-512 one 16 x 16 transpose, each token's 16 rows then
// one 64-byte store; with AVX2 two 8 x 8 transposes, the two halves of each token's line stored back to back.
// Tiles of fewer rows (the last of an `out` not a multiple of 16) and the other ISAs go through a buffer, one
// value at a time; tokens past tn (the zero padding of the last vector) are not stored.
static inline void store_tile16(const SpmmArgs& a, typename S::V (&acc)[16], int64_t r0, int64_t rows, int64_t t0,
                                int64_t tn) {
    float* const y = a.y + t0 * a.ldy + r0;
    const int64_t ldy = a.ldy;
    const bool gelu = a.act == Act::GELU;
#if defined(__AVX512F__)
    if (rows == 16) {
        const __m512 b = a.bias ? _mm512_loadu_ps(a.bias + r0) : _mm512_setzero_ps();
        S::transpose16(acc);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j)
            if (j < tn) {
                __m512 v = _mm512_add_ps(acc[j], b);
                if (gelu) v = vgelu<S>(v);
                _mm512_storeu_ps(y + j * ldy, v);
            }
        return;
    }
#elif defined(__AVX2__)
    if (rows == 16) {
        __m256 lo[8], hi[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
            lo[i] = acc[i];
            hi[i] = acc[8 + i];
        }
        S::transpose8(lo);
        S::transpose8(hi);
        const __m256 b0 = a.bias ? _mm256_loadu_ps(a.bias + r0) : _mm256_setzero_ps();
        const __m256 b1 = a.bias ? _mm256_loadu_ps(a.bias + r0 + 8) : _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j)
            if (j < tn) {
                __m256 v0 = _mm256_add_ps(lo[j], b0), v1 = _mm256_add_ps(hi[j], b1);
                if (gelu) {
                    v0 = vgelu<S>(v0);
                    v1 = vgelu<S>(v1);
                }
                _mm256_storeu_ps(y + j * ldy, v0);
                _mm256_storeu_ps(y + j * ldy + 8, v1);
            }
        return;
    }
#endif
    alignas(64) float buf[16 * S::W];
    for (int i = 0; i < 16; ++i) S::storeu(buf + i * S::W, acc[i]);
    for (int64_t t = 0; t < tn; ++t) store_row_part(a, buf, S::W, 0, rows, r0, y + t * ldy, t, gelu);
}

// Calls f.template run<VT>() with the compile-time vector count VT = vt (1 <= vt <= VMAX <= 8): the last token
// tile of a call may be narrower than the full tile, and register tiles need their width at compile time.
template <int VMAX, class F>
static inline void with_vectors(int vt, const F& f) {
    switch (vt) {
        case 1: if constexpr (VMAX >= 1) { f.template run<1>(); return; } break;
        case 2: if constexpr (VMAX >= 2) { f.template run<2>(); return; } break;
        case 3: if constexpr (VMAX >= 3) { f.template run<3>(); return; } break;
        case 4: if constexpr (VMAX >= 4) { f.template run<4>(); return; } break;
        case 5: if constexpr (VMAX >= 5) { f.template run<5>(); return; } break;
        case 6: if constexpr (VMAX >= 6) { f.template run<6>(); return; } break;
        case 7: if constexpr (VMAX >= 7) { f.template run<7>(); return; } break;
        case 8: if constexpr (VMAX >= 8) { f.template run<8>(); return; } break;
        default: break;
    }
}

// Decode regime: x copied into rows padded with zeros to a multiple of 64 floats, so that the W-wide loads of a
// mask chunk never read past a row. Called inside a parallel region; returns the padded row stride.
static inline int64_t pad_rows(const SpmmArgs& a, float* xp) {
    const int64_t ld = round_up(a.in, 64);
#pragma omp single
    for (int64_t t = 0; t < a.n; ++t) {
        std::memcpy(xp + t * ld, a.x + t * a.ldx, sizeof(float) * static_cast<size_t>(a.in));
        std::memset(xp + t * ld + a.in, 0, sizeof(float) * static_cast<size_t>(ld - a.in));
    }
    return ld;
}
