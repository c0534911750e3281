// simd/avx512.h: 16 x fp32 in a zmm register (AVX-512F/BW/VL/DQ, the Skylake-SP baseline and later).
// Only included by translation units compiled with the matching -m flags (which include AVX2, so the 8 x 8
// transpose of the AVX2 trait is reused for the output stage).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "avx2.h"

struct SimdAvx512 {
    using V = __m512;
    static constexpr int W = 16;
    static constexpr int NREG = 32;
    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float v) { return _mm512_set1_ps(v); }
    static V loadu(const float* p) { return _mm512_loadu_ps(p); }
    static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V set1_bf16(const uint16_t* p) {
        return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(*p) << 16)));
    }
    static V loadu_bf16(const uint16_t* p) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    static float reduce(V v) { return _mm512_reduce_add_ps(v); }
    static V expand(V loaded, unsigned bits) { return _mm512_maskz_expand_ps(static_cast<__mmask16>(bits), loaded); }
    static void transpose8(__m256 r[8]) { SimdAvx2::transpose8(r); }
};
