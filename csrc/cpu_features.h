// cpu_features.h: which instruction sets this CPU (and OS) can run, detected once at run time.
#pragma once
#include "spmm_args.h"

namespace sparsa {

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512bf16 = false;
    bool neon = false;
};

const CpuFeatures& cpu_features();
bool isa_available(Isa isa);
const char* isa_name(Isa isa);

}  // namespace sparsa
