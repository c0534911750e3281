// simd/scalar.h: the portable fallback "vector" of one float. Compiled with the baseline flags of the
// target (SSE2 on x86-64), so it runs everywhere; the compiler may still auto-vectorise around it.
#pragma once

struct SimdScalar {
    using V = float;
    static constexpr int W = 1;
    static constexpr int NREG = 16;
    static V zero() { return 0.0f; }
    static V set1(float v) { return v; }
    static V loadu(const float* p) { return *p; }
    static void storeu(float* p, V v) { *p = v; }
    static V fmadd(V a, V b, V c) { return a * b + c; }
};
