// kernels/decode_xt8.h: the decode path (3 to 8 tokens) of the unstructured kernels, where each stored value
// costs one broadcast, one load and one FMA whatever the token count.
//
// The other decode code applies a row's weights to each token's row of x in turn: a gather per token and W values
// (CSR), or every W-column chunk, empty or not, once per token (bitmask). Both cost n times the single-token
// work, and at n = 8 ran at 0.2-0.6x of torch CSR (4096 x 4096 and 11008 x 4096, 90-95%, weights from DRAM).
// Here x is transposed once per call into xt8 (in x 8 floats: input column k's tokens in one 32-byte vector, zeros
// after n; 128 KB for in = 4096, in L2), and a row's stored values are walked once: for each, its column's
// vector of tokens is loaded and multiplied by the broadcast value.

#ifdef __AVX2__
constexpr int kXt8Chains = 4;  // FMA latency is 4 cycles: four independent sums keep one FMA per value in flight

// Columns k0 .. k1 of x into xt8, eight at a time through one 8 x 8 transpose.
static inline void transpose_xt8(const SpmmArgs& a, float* xt, int64_t k0, int64_t k1) {
    int64_t k = k0;
    for (; k + 8 <= k1; k += 8) {
        __m256 r[8];
        for (int t = 0; t < 8; ++t) r[t] = t < a.n ? _mm256_loadu_ps(a.x + t * a.ldx + k) : _mm256_setzero_ps();
        SimdAvx2::transpose8(r);  // r[j] = column k + j over tokens 0 .. 7
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(xt + (k + j) * kDecodeMaxN, r[j]);
    }
    for (; k < k1; ++k)
        for (int t = 0; t < kDecodeMaxN; ++t) xt[k * kDecodeMaxN + t] = t < a.n ? a.x[t * a.ldx + k] : 0.0f;
}

static inline void xt8_zero(__m256 (&acc)[kXt8Chains]) {
    for (int u = 0; u < kXt8Chains; ++u) acc[u] = _mm256_setzero_ps();
}

// acc += vals[i] * xt8[cols[i]] for i < count
template <class WT, class IT>
static inline void xt8_accumulate(__m256 (&acc)[kXt8Chains], const float* xt, const WT* vals, const IT* cols,
                                  int64_t count) {
    constexpr int U = kXt8Chains;
    int64_t i = 0;
    for (; i + U <= count; i += U)
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u)
            acc[u] = _mm256_fmadd_ps(_mm256_set1_ps(wload(vals, i + u)),
                                     _mm256_loadu_ps(xt + static_cast<int64_t>(cols[i + u]) * kDecodeMaxN), acc[u]);
    for (; i < count; ++i)
        acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(wload(vals, i)),
                                 _mm256_loadu_ps(xt + static_cast<int64_t>(cols[i]) * kDecodeMaxN), acc[0]);
}

// y[t, r] = the sum of the chains' lane t (+ bias) for each token t < n
static inline void xt8_store_row(const SpmmArgs& a, const __m256 (&acc)[kXt8Chains], int64_t r) {
    alignas(32) float s[8];
    _mm256_store_ps(s, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    const float b = a.bias ? a.bias[r] : 0.0f;
    for (int t = 0; t < a.n; ++t) a.y[t * a.ldy + r] = s[t] + b;
}

// x into xt8 (a.work) by all threads, then row(xt, r) for every row, `chunk` rows per dynamically taken task.
template <class F>
static void xt8_decode(const SpmmArgs& a, int64_t chunk, const F& row) {
    float* xt = a.work;
#pragma omp parallel num_threads(a.nthreads) if (a.nthreads > 1)
    {
#pragma omp for schedule(static)
        for (int64_t k0 = 0; k0 < a.in; k0 += 64) transpose_xt8(a, xt, k0, imin(a.in, k0 + 64));
        // (the loop's barrier: every column is written before any row reads it)
#pragma omp for schedule(dynamic, 1)
        for (int64_t r0 = 0; r0 < a.out; r0 += chunk)
            for (int64_t r = r0; r < imin(a.out, r0 + chunk); ++r) row(xt, r);
    }
}
#endif
