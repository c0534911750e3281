// kernels/isa_neon.cpp: the kernel list compiled for neon (flags set per file in CMakeLists.txt).
//
// Everything below the system headers lives in namespace sparsa::isa_neon, including the SIMD trait: inline
// functions compiled here with neon flags must never be merged by the linker with same-named code of another
// ISA unit (that would run neon instructions on a CPU without them).
#include <arm_neon.h>

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
namespace isa_neon {
#include "../simd/neon.h"
using S = SimdNeon;
#include "spmm_impl.h"
#include "kernel_list.h"

extern const KernelInfo kKernels[] = {
    SPARSA_KERNEL_LIST(Isa::NEON, "neon"),
};
extern const int kNumKernels = sizeof(kKernels) / sizeof(kKernels[0]);
extern const AttnFn kAttention = &attention_kernel;
}  // namespace isa_neon
}  // namespace sparsa
