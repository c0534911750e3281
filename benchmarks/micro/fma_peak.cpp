// The FMA peak of this machine's cores: per thread 12 independent chains of 512-bit FMAs (enough to cover the
// FMA latency on both pipes), two OpenMP threads, 5 runs. BENCHMARKS.md compares the kernels' block loops to it.
//
//   g++ -O2 -mavx512f -fopenmp benchmarks/micro/fma_peak.cpp -o /tmp/fma_peak
//   flock /tmp/sparsa-cpu.lock /tmp/fma_peak
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdio>

int main() {
    constexpr int kChains = 12, kThreads = 2;
    constexpr long kIters = 200000000 / kChains;  // FMAs per chain and thread
    for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        float sink = 0;
#pragma omp parallel num_threads(kThreads) reduction(+ : sink)
        {
            __m512 a[kChains];
            for (int i = 0; i < kChains; ++i) a[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
            const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
            for (long it = 0; it < kIters; ++it)
#pragma GCC unroll 12
                for (int i = 0; i < kChains; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
            __m512 s = a[0];
            for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, a[i]);
            sink += _mm512_reduce_add_ps(s);  // keeps the chains live
        }
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double flops = 2.0 * 16 * kChains * static_cast<double>(kIters) * kThreads;  // 16 lanes, 2 flops each
        std::printf("%.1f GFLOP/s (checksum %g)\n", flops / sec / 1e9, sink);
    }
}
