// kernels/common.h: pieces shared by the kernels of one ISA unit (included inside its namespace, after `S`).
//
// Batched regime ("transpose, then broadcast weights"): x (n, in) is transposed into xt (in, np), np = n rounded
// up to the vector width W, so that input column k of a tile of tokens is contiguous. A kernel then computes a
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

// xt[k * np + t] = x[t * ldx + k] for k0 <= k < k0 + kn and t0 <= t < t1 (t0 a multiple of 8), 0 where t >= n.
static inline void transpose_part(const float* x, int64_t n, int64_t ldx, float* xt, int64_t np, int64_t k0,
                                  int64_t kn, int64_t t0, int64_t t1) {
    const int64_t tn = imin(n, t1);
    int64_t t = t0;
#ifdef __AVX2__
    if (kn == 8) {
        for (; t + 8 <= tn; t += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(x + (t + i) * ldx + k0);
            S::transpose8(r);  // r[j] = column k0 + j over tokens t .. t+7
            for (int j = 0; j < 8; ++j) _mm256_storeu_ps(xt + (k0 + j) * np + t, r[j]);
        }
    }
#endif
    for (; t < tn; ++t)
        for (int64_t k = k0; k < k0 + kn; ++k) xt[k * np + t] = x[t * ldx + k];
    for (int64_t k = k0; k < k0 + kn; ++k)
        for (int64_t tt = imax(t0, n); tt < t1; ++tt) xt[k * np + tt] = 0.0f;
}

// All of xt (tokens 0 .. np), the column blocks shared among the threads of the enclosing parallel region.
static void transpose_in(const float* x, int64_t n, int64_t in, int64_t ldx, float* xt, int64_t np) {
    const int64_t nkb = (in + 7) / 8;
#pragma omp for schedule(static)
    for (int64_t kb = 0; kb < nkb; ++kb) transpose_part(x, n, ldx, xt, np, kb * 8, imin(8, in - kb * 8), 0, np);
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

// The loop shared by the batched kernels: x is transposed into xt, then `task(xtile, t0, vt, k)` computes tasks
// k = 0 .. ntasks-1 (each a group of output rows) for the token tile that starts at t0 and is vt vectors wide
// (vt * W <= NT), and writes them to y.
//
// How threads share a call: when every thread gets at least kSplitTokensMinVectors vectors of tokens, each takes
// its own contiguous tokens, transposes only those columns of x (no barrier after the transpose) and runs every
// task for them, then takes what is left of the other threads' tasks (TaskQueue). Before, the rows were split as a
// dynamic queue of 8-row tasks over both threads: 2 threads ran at 1.1-1.5x of one at N = 128 (4x1 90% 1536x384:
// 0.242 ms on one thread, 0.225 ms on two), as neighbouring tasks on different cores wrote the two halves of the
// same 64-byte lines of y. Tasks now cover 16 rows (whole lines) in both modes; with that, the row split measured
// 0.94-0.98x of the token split's time at N = 128 (within this machine's noise) and 1.06-1.07x slower at N = 512.
// Taking the others' tasks measured 1-22% faster than a static token split (the two vCPUs of this VM do not run
// at equal speed: 101 against 142 us for the two halves of one call). With fewer tokens the rows are split
// (dynamic queue over (tile, task)), which keeps both cores busy at N = 16..32.
constexpr int64_t kSplitTokensMinVectors = 2;

// A thread's list of tasks, which other threads may take from once they finished theirs. Tasks write whole
// 64-byte lines of y (16-row groups), so two threads taking alternate tasks never share a line.
struct alignas(64) TaskQueue {
    std::atomic<int64_t> next{0};  // the next task not yet taken
    std::atomic<int> ready{0};     // set once the owner's columns of xt are written
};

template <int NT, class F>
static void batched_tasks(const SpmmArgs& a, int64_t ntasks, const F& task) {
    constexpr int64_t VMAX = NT / S::W;
    const int64_t nvec = (a.n + S::W - 1) / S::W, np = xt_stride(a.n);
    float* xt = a.work;
    const bool by_tokens = a.nthreads <= 1 || nvec >= a.nthreads * kSplitTokensMinVectors;
    std::unique_ptr<TaskQueue[]> queues(new TaskQueue[by_tokens ? a.nthreads : 0]);
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
            int64_t v0, v1, nt;
            tokens_of(tid, v0, v1, nt);
            const int64_t t_end = tid == nth - 1 ? np : v1 * S::W;  // the last thread also zeroes the padding
            for (int64_t kb = 0; kb < (a.in + 7) / 8; ++kb)
                transpose_part(a.x, a.n, a.ldx, xt, np, kb * 8, imin(8, a.in - kb * 8), v0 * S::W, t_end);
            queues[tid].ready.store(1, std::memory_order_release);
            // Runs thread o's tasks (tile outer, so that one tile of xt is reused while it sits in L2) until its
            // queue is empty.
            const auto drain = [&](int64_t o) {
                int64_t u0, u1, un;
                tokens_of(o, u0, u1, un);
                const int64_t total = un * ntasks;
                for (int64_t i; (i = queues[o].next.fetch_add(1, std::memory_order_relaxed)) < total;) {
                    const int64_t j = i / ntasks, k = i % ntasks;
                    const int64_t w0 = u0 + (u1 - u0) * j / un, w1 = u0 + (u1 - u0) * (j + 1) / un;
                    task(xt + w0 * S::W, w0 * S::W, static_cast<int>(w1 - w0), k);
                }
            };
            drain(tid);
            // then help the others, so that a thread on a slower core is not waited for
            for (int64_t d = 1; d < nth; ++d) {
                const int64_t o = (tid + d) % nth;
                while (!queues[o].ready.load(std::memory_order_acquire)) {
                }
                drain(o);
            }
        } else {
            transpose_in(a.x, a.n, a.in, a.ldx, xt, np);
            const int64_t ntiles = (nvec + VMAX - 1) / VMAX;
            // token tile outer: consecutive tasks (on both threads) reuse one tile of xt while it sits in L2; with
            // the row groups outer each task pulled a fresh tile from L3 (measured 2-3x slower at n = 2048)
#pragma omp for collapse(2) schedule(dynamic, 1)
            for (int64_t tile = 0; tile < ntiles; ++tile)
                for (int64_t k = 0; k < ntasks; ++k)
                    task(xt + tile * NT, tile * NT, static_cast<int>(imin(VMAX, nvec - tile * VMAX)), k);
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
// Rows 8 * NG of tokens 0 .. tn (rounded down to 8) from tmp into y, as NG 8 x 8 transposes per 8 tokens, plus
// the bias (and GELU); returns the tokens written. With NG = 2 the two 32-byte halves of each 64-byte line of y
// are stored back to back: y's rows are `out` floats apart (6 KB at out = 1536, which maps the 64 token rows a
// task writes onto two L1 sets), so a line written in two visits, one per 8-row group, was usually evicted in
// between and missed twice. Measured in isolation (one thread, 128 x 1536 outputs from a 16 x 64 tile in L1):
// 50 us with the groups one after the other, 31 us paired (AVX-512 build; 36 us AVX2-only), 35-37 us with one
// 16 x 16 AVX-512 transpose and full-line stores, 36-40 us with prefetches of the next lines.
template <int NG, bool GELU>
static inline int64_t store_rows8(const float* tmp, int64_t ld, const __m256* b, float* y, int64_t ldy, int64_t tn) {
    int64_t t = 0;
    for (; t + 8 <= tn; t += 8) {
        __m256 r[NG][8];
        for (int g = 0; g < NG; ++g) {
            for (int i = 0; i < 8; ++i) r[g][i] = _mm256_loadu_ps(tmp + (g * 8 + i) * ld + t);
            S::transpose8(r[g]);  // r[g][j] = rows 8g .. 8g+7 of token t + j
        }
        for (int j = 0; j < 8; ++j)
            for (int g = 0; g < NG; ++g) {
                __m256 v = _mm256_add_ps(r[g][j], b[g]);
                if constexpr (GELU) v = vgelu<SimdAvx2>(v);
                _mm256_storeu_ps(y + (t + j) * ldy + g * 8, v);
            }
    }
    return t;
}
#endif

// y[t0 + t, r0 + i] = act(tmp[i * ld + t] + bias[r0 + i]) for i < rows, t < tn: a task's rows, 16 at a time
// (whole 64-byte lines of y when r0 is a multiple of 16), then 8, then one by one.
static inline void store_out(const SpmmArgs& a, const float* tmp, int64_t ld, int64_t rows, int64_t r0, int64_t t0,
                             int64_t tn) {
    // locals: vector stores may alias anything, so members of `a` read in the loop were reloaded after each store
    float* const y = a.y + t0 * a.ldy + r0;
    const int64_t ldy = a.ldy;
    const bool gelu = a.act == Act::GELU;
    int64_t i = 0;
#ifdef __AVX2__
    for (int64_t step; (step = rows - i >= 16 ? 16 : rows - i >= 8 ? 8 : 0) != 0; i += step) {
        __m256 b[2];
        for (int g = 0; g < step / 8; ++g)
            b[g] = a.bias ? _mm256_loadu_ps(a.bias + r0 + i + 8 * g) : _mm256_setzero_ps();
        const float* src = tmp + i * ld;
        float* dst = y + i;
        const int64_t done = step == 16 ? (gelu ? store_rows8<2, true>(src, ld, b, dst, ldy, tn)
                                                : store_rows8<2, false>(src, ld, b, dst, ldy, tn))
                                        : (gelu ? store_rows8<1, true>(src, ld, b, dst, ldy, tn)
                                                : store_rows8<1, false>(src, ld, b, dst, ldy, tn));
        for (int64_t t = done; t < tn; ++t)  // the last tokens of a tile that is not a multiple of 8
            store_row_part(a, tmp, ld, i, i + step, r0, y + t * ldy, t, gelu);
    }
#endif
    for (int64_t t = 0; t < tn; ++t) store_row_part(a, tmp, ld, i, rows, r0, y + t * ldy, t, gelu);
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
