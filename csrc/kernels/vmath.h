// kernels/vmath.h: vectorised exp and GELU over a SIMD trait T (simd/*.h), for the softmax of the attention
// kernel and the activation epilogue of the spmm kernels. Templated on the trait rather than on `S` because the
// output stage of the x86 units works on 8-lane AVX2 vectors even inside the AVX-512 unit.
//
// Accuracy: exp is the Cephes single-precision scheme (range reduction by ln 2 split in two parts, degree-6
// polynomial; ~1 ulp on [-87, 88]). GELU uses erf from Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7 on
// erf, so <= 7.5e-8 |x| on GELU), the same approximation oneDNN's erf-GELU uses.

template <class T>
static inline typename T::V vexp(typename T::V x) {
    using V = typename T::V;
    // Below -87 the result would be denormal: clamp (softmax only ever feeds x <= 0; -inf lands on ~1.6e-38).
    x = T::min(T::max(x, T::set1(-87.0f)), T::set1(88.3f));
    const V n = T::round(T::mul(x, T::set1(1.44269504088896341f)));
    V r = T::fmadd(n, T::set1(-0.693359375f), x);
    r = T::fmadd(n, T::set1(2.12194440e-4f), r);
    V p = T::set1(1.9875691500e-4f);
    p = T::fmadd(p, r, T::set1(1.3981999507e-3f));
    p = T::fmadd(p, r, T::set1(8.3334519073e-3f));
    p = T::fmadd(p, r, T::set1(4.1665795894e-2f));
    p = T::fmadd(p, r, T::set1(1.6666665459e-1f));
    p = T::fmadd(p, r, T::set1(5.0000001201e-1f));
    p = T::fmadd(p, T::mul(r, r), T::add(r, T::set1(1.0f)));
    return T::mul(p, T::pow2i(n));
}

// erf(x / sqrt 2) through A&S 7.1.26 on |x|, sign restored; GELU(x) = x (1 + erf(x / sqrt 2)) / 2 (PyTorch's
// default, approximate="none").
template <class T>
static inline typename T::V vgelu(typename T::V x) {
    using V = typename T::V;
    const V z = T::abs(T::mul(x, T::set1(0.70710678118654752f)));
    const V t = T::div(T::set1(1.0f), T::fmadd(z, T::set1(0.3275911f), T::set1(1.0f)));
    V p = T::set1(1.061405429f);
    p = T::fmadd(p, t, T::set1(-1.453152027f));
    p = T::fmadd(p, t, T::set1(1.421413741f));
    p = T::fmadd(p, t, T::set1(-0.284496736f));
    p = T::fmadd(p, t, T::set1(0.254829592f));
    p = T::mul(p, t);
    const V e = vexp<T>(T::sub(T::zero(), T::mul(z, z)));
    const V erf_abs = T::sub(T::set1(1.0f), T::mul(p, e));
    const V erf = T::copysign(erf_abs, x);
    return T::mul(T::mul(x, T::set1(0.5f)), T::add(T::set1(1.0f), erf));
}

// The activation epilogue of SpmmArgs::act over rows [0, n) of y (the decode path and the generic kernels,
// whose outputs do not pass through store_out).
static inline void act_rows(const SpmmArgs& a) {
    if (a.act == Act::NONE) return;
    for (int64_t t = 0; t < a.n; ++t) {
        float* yr = a.y + t * a.ldy;
        int64_t i = 0;
        for (; i + S::W <= a.out; i += S::W) S::storeu(yr + i, vgelu<S>(S::loadu(yr + i)));
        if (i < a.out) {  // the tail through a padded vector
            float buf[S::W] = {};
            std::memcpy(buf, yr + i, sizeof(float) * static_cast<size_t>(a.out - i));
            S::storeu(buf, vgelu<S>(S::loadu(buf)));
            std::memcpy(yr + i, buf, sizeof(float) * static_cast<size_t>(a.out - i));
        }
    }
}
