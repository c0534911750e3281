// kernels/isa_avx512.cpp: the kernel list compiled for avx512 (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstring>

#include "../spmm_args.h"
#include "../simd/avx512.h"

namespace sparsa {
namespace isa_avx512 {
using S = SimdAvx512;
#include "spmm_impl.h"
#include "kernel_list.h"

extern const KernelInfo kKernels[] = {
    SPARSA_KERNEL_LIST(Isa::AVX512, "avx512"),
};
extern const int kNumKernels = sizeof(kKernels) / sizeof(kKernels[0]);
}  // namespace isa_avx512
}  // namespace sparsa
