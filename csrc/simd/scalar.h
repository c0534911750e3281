// simd/scalar.h: the portable fallback "vector" of one float. Compiled with the baseline flags of the
// target (SSE2 on x86-64), so it runs everywhere; the compiler may still auto-vectorise around it.
#pragma once
#include <cstdint>
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
    static V set1_bf16(const uint16_t* p) { return loadu_bf16(p); }
    static V loadu_bf16(const uint16_t* p) {
        const uint32_t bits = static_cast<uint32_t>(*p) << 16;
        float f;
        std::memcpy(&f, &bits, sizeof f);
        return f;
    }
    static float reduce(V v) { return v; }
    static V expand(V loaded, unsigned bits) { return bits & 1 ? loaded : 0.0f; }
};
