// registry.h: every kernel compiled into this build, across ISAs, in one table.
#pragma once
#include <vector>

#include "spmm_args.h"

namespace sparsa {

// All compiled kernels, available on this CPU or not (callers check isa_available()).
const std::vector<KernelInfo>& kernel_registry();

}  // namespace sparsa
