// registry.cpp: gathers the per-ISA kernel tables (kernels/isa_*.cpp) that this build compiled.
#include "registry.h"

namespace sparsa {

#define SPARSA_DECLARE_ISA(ns)              \
    namespace ns {                          \
    extern const KernelInfo kKernels[];     \
    extern const int kNumKernels;           \
    }

SPARSA_DECLARE_ISA(isa_scalar)
#ifdef SPARSA_HAVE_AVX2
SPARSA_DECLARE_ISA(isa_avx2)
#endif
#ifdef SPARSA_HAVE_AVX512
SPARSA_DECLARE_ISA(isa_avx512)
#endif
#ifdef SPARSA_HAVE_NEON
SPARSA_DECLARE_ISA(isa_neon)
#endif

static std::vector<KernelInfo> build() {
    std::vector<KernelInfo> all;
    auto add = [&](const KernelInfo* k, int n) { all.insert(all.end(), k, k + n); };
    add(isa_scalar::kKernels, isa_scalar::kNumKernels);
#ifdef SPARSA_HAVE_AVX2
    add(isa_avx2::kKernels, isa_avx2::kNumKernels);
#endif
#ifdef SPARSA_HAVE_AVX512
    add(isa_avx512::kKernels, isa_avx512::kNumKernels);
#endif
#ifdef SPARSA_HAVE_NEON
    add(isa_neon::kKernels, isa_neon::kNumKernels);
#endif
    return all;
}

const std::vector<KernelInfo>& kernel_registry() {
    static const std::vector<KernelInfo> all = build();
    return all;
}

}  // namespace sparsa
