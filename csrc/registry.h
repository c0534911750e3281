// registry.h: every kernel compiled into this build, across ISAs, in one table.
#pragma once
#include <vector>

#include "attn_args.h"
#include "spmm_args.h"

namespace sparsa {

// All compiled kernels, available on this CPU or not (callers check isa_available()).
const std::vector<KernelInfo>& kernel_registry();

// The attention kernel of the widest instruction set this CPU runs, and that set.
struct AttnImpl {
    Isa isa;
    AttnFn fn;
};
const AttnImpl& best_attention();

}  // namespace sparsa
