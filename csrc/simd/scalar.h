// simd/scalar.h: the portable fallback "vector" of one float. Compiled with the baseline flags of the
// target (SSE2 on x86-64), so it runs everywhere; the compiler may still auto-vectorise around it.
#pragma once
#include <cstdint>
#include <cmath>
#include <cstring>

struct SimdScalar {
    using V = float;
    static constexpr int W = 1;
    static constexpr int NREG = 16;
    static V zero() { return 0.0f; }
    static V set1(float v) { return v; }
    static V loadu(const float* p) { return *p; }
    static void storeu(float* p, V v) { *p = v; }
    static V add(V a, V b) { return a + b; }
    static V fmadd(V a, V b, V c) { return a * b + c; }
    static V sub(V a, V b) { return a - b; }
    static V mul(V a, V b) { return a * b; }
    static V div(V a, V b) { return a / b; }
    static V max(V a, V b) { return a > b ? a : b; }
    static V min(V a, V b) { return a < b ? a : b; }
    static V round(V a) { return std::nearbyint(a); }
    static V pow2i(V n) { return std::ldexp(1.0f, static_cast<int>(n)); }
    static V abs(V a) { return std::fabs(a); }
    static V copysign(V mag, V sgn) { return std::copysign(mag, sgn); }
    static float reduce_max(V v) { return v; }
    static V set1_bf16(const uint16_t* p) { return loadu_bf16(p); }
    static V loadu_bf16(const uint16_t* p) {
        const uint32_t bits = static_cast<uint32_t>(*p) << 16;
        float f;
        std::memcpy(&f, &bits, sizeof f);
        return f;
    }
    static float reduce(V v) { return v; }
    template <class IT>
    static V gather_at(const float* base, const IT* idx) { return base[idx[0]]; }
    static V first(V v, int count) { return count > 0 ? v : 0.0f; }
    static V expand(V loaded, unsigned bits) { return bits & 1 ? loaded : 0.0f; }
};
