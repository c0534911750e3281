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
    static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V div(V a, V b) { return _mm512_div_ps(a, b); }
    static V max(V a, V b) { return _mm512_max_ps(a, b); }
    static V min(V a, V b) { return _mm512_min_ps(a, b); }
    static V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static V pow2i(V n) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
    }
    static V abs(V a) { return _mm512_abs_ps(a); }
    static V copysign(V mag, V sgn) {
        return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag),
                                                   _mm512_and_si512(_mm512_castps_si512(sgn), _mm512_set1_epi32(INT32_MIN))));
    }
    static float reduce_max(V v) { return _mm512_reduce_max_ps(v); }
    static V set1_bf16(const uint16_t* p) {
        return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(*p) << 16)));
    }
    static V loadu_bf16(const uint16_t* p) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    // x[idx[0..15]] for 32-bit indices held in a vector (AVX-512 vgatherdps).
    static V gather(const float* base, __m512i idx) { return _mm512_i32gather_ps(idx, base, 4); }
    static __m512i indices(const uint16_t* p) {
        return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static __m512i indices(const int32_t* p) { return _mm512_loadu_si512(p); }
    template <class IT>
    static V gather_at(const float* base, const IT* idx) { return gather(base, indices(idx)); }
    static V first(V v, int count) { return _mm512_maskz_mov_ps(static_cast<__mmask16>((1u << count) - 1), v); }
    static float reduce(V v) { return _mm512_reduce_add_ps(v); }
    static V expand(V loaded, unsigned bits) { return _mm512_maskz_expand_ps(static_cast<__mmask16>(bits), loaded); }
    static void transpose8(__m256 r[8]) { SimdAvx2::transpose8(r); }
    // r[i] = row i of a 16 x 16 tile -> r[j] = column j: pairs of rows interleaved, then quads, then the four
    // 128-bit lanes exchanged in two steps (64 shuffles).
    static void transpose16(V r[16]) {
        V u[16];
        for (int i = 0; i < 16; i += 2) {
            u[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            u[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            r[i] = _mm512_shuffle_ps(u[i], u[i + 2], 0x44);
            r[i + 1] = _mm512_shuffle_ps(u[i], u[i + 2], 0xEE);
            r[i + 2] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0x44);
            r[i + 3] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
        }
        for (int j = 0; j < 4; ++j) {
            const V a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), c = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
            const V d = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
            const V e = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
            u[j] = _mm512_shuffle_f32x4(a, d, 0x88);
            u[8 + j] = _mm512_shuffle_f32x4(a, d, 0xDD);
            u[4 + j] = _mm512_shuffle_f32x4(c, e, 0x88);
            u[12 + j] = _mm512_shuffle_f32x4(c, e, 0xDD);
        }
        for (int i = 0; i < 16; ++i) r[i] = u[i];
    }
};
