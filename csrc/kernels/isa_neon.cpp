// kernels/isa_neon.cpp: the kernel list compiled for neon (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstring>

#include "../spmm_args.h"
#include "../simd/neon.h"

namespace sparsa {
namespace isa_neon {
using S = SimdNeon;
#include "spmm_impl.h"
#include "kernel_list.h"

extern const KernelInfo kKernels[] = {
    SPARSA_KERNEL_LIST(Isa::NEON, "neon"),
};
extern const int kNumKernels = sizeof(kKernels) / sizeof(kKernels[0]);
}  // namespace isa_neon
}  // namespace sparsa
