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
    static V sub(V a, V b) { return vsubq_f32(a, b); }
    static V mul(V a, V b) { return vmulq_f32(a, b); }
    static V div(V a, V b) { return vdivq_f32(a, b); }
    static V max(V a, V b) { return vmaxq_f32(a, b); }
    static V min(V a, V b) { return vminq_f32(a, b); }
    static V round(V a) { return vrndnq_f32(a); }
    static V pow2i(V n) { return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23)); }
    static V abs(V a) { return vabsq_f32(a); }
    static V copysign(V mag, V sgn) {
        return vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(mag),
                                               vandq_u32(vreinterpretq_u32_f32(sgn), vdupq_n_u32(0x80000000u))));
    }
    static float reduce_max(V v) { return vmaxvq_f32(v); }
    static V set1_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vdupq_n_u32(static_cast<uint32_t>(*p) << 16)); }
    static V loadu_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
    static float reduce(V v) { return vaddvq_f32(v); }
    template <class IT>
    static V gather_at(const float* base, const IT* idx) {
        const float g[4] = {base[idx[0]], base[idx[1]], base[idx[2]], base[idx[3]]};
        return vld1q_f32(g);
    }
    static V first(V v, int count) {
        const int32_t lanes[4] = {0, 1, 2, 3};
        const uint32x4_t on = vcltq_s32(vld1q_s32(lanes), vdupq_n_s32(count));
        return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), on));
    }
    static V expand(V loaded, unsigned bits) {
        // lane j takes the popcount(bits & ((1 << j) - 1))-th loaded value when bit j is set
        alignas(16) float in[4], out[4];
        vst1q_f32(in, loaded);
        int k = 0;
        for (int j = 0; j < 4; ++j) out[j] = (bits >> j) & 1 ? in[k++] : 0.0f;
        return vld1q_f32(out);
    }
};
