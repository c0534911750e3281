// kernels/isa_scalar.cpp: the kernel list compiled for scalar (flags set per file in CMakeLists.txt).
//
// Everything below the system headers lives in namespace sparsa::isa_scalar, including the SIMD trait: inline
// functions compiled here with scalar flags must never be merged by the linker with same-named code of another
// ISA unit (that would run scalar instructions on a CPU without them).
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../attn_args.h"
#include "../spmm_args.h"

namespace sparsa {
namespace isa_scalar {
#include "../simd/scalar.h"
using S = SimdScalar;
#include "spmm_impl.h"
#include "kernel_list.h"

extern const KernelInfo kKernels[] = {
    // Any block shape the tiles of the list do not cover.
    {"f32_bsr_generic_spmm__scalar", Format::BSR, Isa::SCALAR, WDType::F32, 0, 0, &bsr_generic_kernel<float>},
    {"bf16_bsr_generic_spmm__scalar", Format::BSR, Isa::SCALAR, WDType::BF16, 0, 0, &bsr_generic_kernel<uint16_t>},
    SPARSA_KERNEL_LIST(Isa::SCALAR, "scalar"),
};
extern const int kNumKernels = sizeof(kKernels) / sizeof(kKernels[0]);
extern const AttnFn kAttention = &attention_kernel;
}  // namespace isa_scalar
}  // namespace sparsa
