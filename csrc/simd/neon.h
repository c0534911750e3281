// simd/neon.h: 4 x fp32 in a NEON q register with fused multiply-add (AArch64 baseline).
#pragma once
#include <arm_neon.h>

struct SimdNeon {
    using V = float32x4_t;
    static constexpr int W = 4;
    static constexpr int NREG = 32;
    static V zero() { return vdupq_n_f32(0.0f); }
    static V set1(float v) { return vdupq_n_f32(v); }
    static V loadu(const float* p) { return vld1q_f32(p); }
    static void storeu(float* p, V v) { vst1q_f32(p, v); }
    static V fmadd(V a, V b, V c) { return vfmaq_f32(c, a, b); }
};
