// simd/neon.h: 4 x fp32 in a NEON q register with fused multiply-add (AArch64 baseline).
#pragma once
#include <arm_neon.h>

#include <cstdint>

struct SimdNeon {
    using V = float32x4_t;
    static constexpr int W = 4;
    static constexpr int NREG = 32;
    static V zero() { return vdupq_n_f32(0.0f); }
    static V set1(float v) { return vdupq_n_f32(v); }
    static V loadu(const float* p) { return vld1q_f32(p); }
    static void storeu(float* p, V v) { vst1q_f32(p, v); }
    static V add(V a, V b) { return vaddq_f32(a, b); }
    static V fmadd(V a, V b, V c) { return vfmaq_f32(c, a, b); }
    static V set1_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vdupq_n_u32(static_cast<uint32_t>(*p) << 16)); }
    static V loadu_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
    static float reduce(V v) { return vaddvq_f32(v); }
    static V expand(V loaded, unsigned bits) {
        // lane j takes the popcount(bits & ((1 << j) - 1))-th loaded value when bit j is set
        alignas(16) float in[4], out[4];
        vst1q_f32(in, loaded);
        int k = 0;
        for (int j = 0; j < 4; ++j) out[j] = (bits >> j) & 1 ? in[k++] : 0.0f;
        return vld1q_f32(out);
    }
};
