// kernels/isa_avx2.cpp: the kernel list compiled for avx2 (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstring>

#include "../spmm_args.h"
#include "../simd/avx2.h"

namespace sparsa {
namespace isa_avx2 {
using S = SimdAvx2;
#include "spmm_impl.h"
#include "kernel_list.h"

extern const KernelInfo kKernels[] = {
    SPARSA_KERNEL_LIST(Isa::AVX2, "avx2"),
};
extern const int kNumKernels = sizeof(kKernels) / sizeof(kKernels[0]);
}  // namespace isa_avx2
}  // namespace sparsa
