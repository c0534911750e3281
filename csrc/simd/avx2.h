// simd/avx2.h: 8 x fp32 in a ymm register, FMA3. Only included by translation units compiled with -mavx2 -mfma.
#pragma once
#include <immintrin.h>

struct SimdAvx2 {
    using V = __m256;
    static constexpr int W = 8;
    static constexpr int NREG = 16;
    static V zero() { return _mm256_setzero_ps(); }
    static V set1(float v) { return _mm256_set1_ps(v); }
    static V loadu(const float* p) { return _mm256_loadu_ps(p); }
    static void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};
