// kernels/isa_scalar.cpp: the kernel list compiled for scalar (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstring>

#include "../spmm_args.h"
#include "../simd/scalar.h"

namespace sparsa {
namespace isa_scalar {
using S = SimdScalar;
#include "spmm_impl.h"
#include "kernel_list.h"

extern const KernelInfo kKernels[] = {
    // Any block shape the tiles above do not cover.
    {"f32_bsr_generic_spmm__scalar", Format::BSR, Isa::SCALAR, WDType::F32, 0, 0, &bsr_generic_kernel<float>},
    {"bf16_bsr_generic_spmm__scalar", Format::BSR, Isa::SCALAR, WDType::BF16, 0, 0, &bsr_generic_kernel<uint16_t>},
    SPARSA_KERNEL_LIST(Isa::SCALAR, "scalar"),
};
extern const int kNumKernels = sizeof(kKernels) / sizeof(kKernels[0]);
}  // namespace isa_scalar
}  // namespace sparsa
