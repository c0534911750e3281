// attn_args.h: the argument block of the attention kernel (kernels/attention.h), plain data like spmm_args.h.
//
// o = softmax(q k^T * scale + mask) v per (batch, head), with q (B, H, Sq, D), k and v (B, Hk, Sk, D) given by
// strides in floats (the last dimension contiguous; H a multiple of Hk: grouped-query heads share k and v),
// and o written at its own strides (sparsa writes (B, Sq, H, D), the layout the next Linear reads).
#pragma once
#include <cstdint>

namespace sparsa {

struct AttnArgs {
    const float* q;
    const float* k;
    const float* v;
    float* o;
    int64_t B, H, Hk, Sq, Sk, D;
    int64_t q_sb, q_sh, q_ss;
    int64_t k_sb, k_sh, k_ss;
    int64_t v_sb, v_sh, v_ss;
    int64_t o_sb, o_sh, o_ss;
    // optional mask over (B, H, Sq, Sk) by strides (0 where broadcast), contiguous along Sk: additive fp32, or
    // bool (uint8, nonzero = may attend, PyTorch's scaled_dot_product_attention convention)
    const void* mask;
    bool mask_is_bool;
    int64_t m_sb, m_sh, m_sq;
    bool causal;  // key j is visible to query i iff j <= i + (Sk - Sq), as for a query block at the end of the keys
    float scale;
    int nthreads;
};

using AttnFn = void (*)(const AttnArgs&);

}  // namespace sparsa
