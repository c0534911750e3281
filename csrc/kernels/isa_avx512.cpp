// kernels/isa_avx512.cpp: the kernel list compiled for avx512 (flags set per file in CMakeLists.txt).
//
// Everything below the system headers lives in namespace sparsa::isa_avx512, including the SIMD trait: inline
// functions compiled here with avx512 flags must never be merged by the linker with same-named code of another
// ISA unit (that would run avx512 instructions on a CPU without them).
#include <immintrin.h>

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
namespace isa_avx512 {
#include "../simd/avx2.h"
#include "../simd/avx512.h"
using S = SimdAvx512;
#include "spmm_impl.h"
#include "kernel_list.h"

extern const KernelInfo kKernels[] = {
    SPARSA_KERNEL_LIST(Isa::AVX512, "avx512"),
};
extern const int kNumKernels = sizeof(kKernels) / sizeof(kKernels[0]);
extern const AttnFn kAttention = &attention_kernel;
}  // namespace isa_avx512
}  // namespace sparsa
