// simd/avx512.h: 16 x fp32 in a zmm register (AVX-512F/BW/VL/DQ, the Skylake-SP baseline and later).
// Only included by translation units compiled with the matching -m flags.
#pragma once
#include <immintrin.h>

struct SimdAvx512 {
    using V = __m512;
    static constexpr int W = 16;
    static constexpr int NREG = 32;
    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float v) { return _mm512_set1_ps(v); }
    static V loadu(const float* p) { return _mm512_loadu_ps(p); }
    static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};
