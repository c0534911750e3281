// kernels/common.h: pieces shared by the kernels of one ISA unit (included inside its namespace, after `S`).
//
// Batched regime ("transpose, then broadcast weights"): x (n, in) is transposed into xt (in, np), np = n rounded
// up to the vector width W, so that input column k of a tile of tokens is contiguous. A kernel then computes a
// group of output rows for one token tile into `tmp` (rows x NT, in L1), and the output stage transposes that
// back into y (n, out) with 8 x 8 register transposes and adds the bias. Both transposes are vectorised and
// threaded; they cost ~0.3 cycles per element against the W x (1 - sparsity) x in FMAs each output needs.

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

// xt[k * np + t] = x[t * ldx + k] for t < n, 0 for n <= t < np (np = xt_stride(n)). Called inside a parallel region.
static void transpose_in(const float* x, int64_t n, int64_t in, int64_t ldx, float* xt, int64_t np) {
    const int64_t nkb = (in + 7) / 8;
#pragma omp for schedule(static)
    for (int64_t kb = 0; kb < nkb; ++kb) {
        const int64_t k0 = kb * 8, kn = imin(8, in - k0);
        int64_t t = 0;
#ifdef __AVX2__
        if (kn == 8) {
            for (; t + 8 <= n; t += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(x + (t + i) * ldx + k0);
                S::transpose8(r);  // r[j] = column k0 + j over tokens t .. t+7
                for (int j = 0; j < 8; ++j) _mm256_storeu_ps(xt + (k0 + j) * np + t, r[j]);
            }
        }
#endif
        for (; t < n; ++t)
            for (int64_t k = k0; k < k0 + kn; ++k) xt[k * np + t] = x[t * ldx + k];
        for (int64_t k = k0; k < k0 + kn; ++k)
            for (int64_t tt = n; tt < np; ++tt) xt[k * np + tt] = 0.0f;
    }
}

// y[t0 + t, r0 + i] = tmp[i * ld + t] + bias[r0 + i] for i < rows, t < tn.
static inline void store_out(const SpmmArgs& a, const float* tmp, int64_t ld, int64_t rows, int64_t r0, int64_t t0,
                             int64_t tn) {
    const float* bias = a.bias ? a.bias + r0 : nullptr;
    int64_t t = 0;
#ifdef __AVX2__
    if (rows == 8) {
        const __m256 b = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        for (; t + 8 <= tn; t += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tmp + i * ld + t);
            S::transpose8(r);  // r[j] = rows r0 .. r0+7 of token t + j
            if (a.act == Act::GELU)
                for (int j = 0; j < 8; ++j) r[j] = vgelu<SimdAvx2>(_mm256_add_ps(r[j], b));
            else
                for (int j = 0; j < 8; ++j) r[j] = _mm256_add_ps(r[j], b);
            for (int j = 0; j < 8; ++j) _mm256_storeu_ps(a.y + (t0 + t + j) * a.ldy + r0, r[j]);
        }
    }
#endif
    for (; t < tn; ++t) {
        float* yr = a.y + (t0 + t) * a.ldy + r0;
        for (int64_t i = 0; i < rows; ++i) yr[i] = tmp[i * ld + t] + (bias ? bias[i] : 0.0f);
        if (a.act == Act::GELU)
            for (int64_t i = 0; i < rows; ++i) yr[i] = 0.5f * yr[i] * (1.0f + std::erf(yr[i] * 0.70710678118654752f));
    }
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
