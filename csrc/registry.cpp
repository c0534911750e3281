// registry.cpp: gathers the per-ISA kernel tables (kernels/isa_*.cpp) that this build compiled.
#include "registry.h"

#include "cpu_features.h"

namespace sparsa {

#define SPARSA_DECLARE_ISA(ns)              \
    namespace ns {                          \
    extern const KernelInfo kKernels[];     \
    extern const int kNumKernels;           \
    extern const AttnFn kAttention;         \
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

static AttnImpl pick_attention() {
    AttnImpl best{Isa::SCALAR, isa_scalar::kAttention};
#ifdef SPARSA_HAVE_NEON
    if (isa_available(Isa::NEON)) best = {Isa::NEON, isa_neon::kAttention};
#endif
#ifdef SPARSA_HAVE_AVX2
    if (isa_available(Isa::AVX2)) best = {Isa::AVX2, isa_avx2::kAttention};
#endif
#ifdef SPARSA_HAVE_AVX512
    if (isa_available(Isa::AVX512)) best = {Isa::AVX512, isa_avx512::kAttention};
#endif
    return best;
}

const AttnImpl& best_attention() {
    static const AttnImpl impl = pick_attention();
    return impl;
}

}  // namespace sparsa
