// kernels/spmm_impl.h: the sparse x dense kernels (and the attention kernel that runs between them), written once over a SIMD trait `S` (simd/*.h) and compiled
// once per ISA by the isa_*.cpp units, each inside its own namespace.
//
// Threads: one OpenMP parallel region per call. The torch CPU wheel ships its own libgomp with the same SONAME
// (libgomp.so.1); sparsa imports torch before loading this module, so both share one OpenMP runtime and one
// thread pool instead of two pools competing for the same cores.
//
// Expects, before inclusion: `S` and the headers <cmath>, <cstdint>, <cstring>, <limits>, <type_traits>, <vector>,
// spmm_args.h, attn_args.h (and <immintrin.h> on x86, <omp.h> when built with OpenMP).
#include "vmath.h"
#include "common.h"
#include "bsr.h"
#include "decode_xt8.h"
#include "bitmask.h"
#include "csr.h"
#include "attention.h"
