// cpu_features.cpp: run-time ISA detection, so one build runs on any machine of its architecture.
// GCC/Clang's __builtin_cpu_supports checks CPUID and, for AVX/AVX-512, that the OS saves the wide registers.
#include "cpu_features.h"

namespace sparsa {

static CpuFeatures detect() {
    CpuFeatures f;
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.f16c = __builtin_cpu_supports("f16c");
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512dq = __builtin_cpu_supports("avx512dq");
#if defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 10)
    f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
#elif defined(__aarch64__)
    f.neon = true;  // Advanced SIMD is mandatory on AArch64
#endif
    return f;
}

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

bool isa_available(Isa isa) {
    const CpuFeatures& f = cpu_features();
    switch (isa) {
        case Isa::SCALAR: return true;
        case Isa::AVX2: return f.avx2 && f.fma;
        case Isa::AVX512: return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
        case Isa::NEON: return f.neon;
    }
    return false;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::SCALAR: return "scalar";
        case Isa::AVX2: return "avx2";
        case Isa::AVX512: return "avx512";
        case Isa::NEON: return "neon";
    }
    return "?";
}

}  // namespace sparsa
