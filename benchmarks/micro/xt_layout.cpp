// The batched kernels' x transpose in isolation, on one and two OpenMP threads, with the layouts of xt the kernels
// could give the two threads when they split the tokens (csrc/kernels/common.h, batched_tasks):
//   shared  one matrix (in x 144 floats: 128 tokens rounded to an odd number of lines), each row holding thread
//           0's 64 columns and thread 1's side by side; the layout before commit 028944a
//   gap     the same with 4 unused lines between the two threads' columns of a row
//   blocks  one matrix per thread (in x 64 floats), one after the other; the layout since, for a thread that
//           runs one token tile
// x is 128 tokens x `in` (default 1536, all-MiniLM's FFN down projection), row-major. Each thread transposes its
// 64 tokens with the kernels' 8 x 8 AVX2 register transposes (csrc/simd/avx2.h). It prints the median time of a
// whole call (fork, transpose, join) and of each thread's own part, over 3000 calls.
//
//   g++ -O2 -std=c++17 -mavx2 -mfma -fopenmp benchmarks/micro/xt_layout.cpp -o /tmp/xt_layout
//   flock /tmp/sparsa-cpu.lock /tmp/xt_layout [in]
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../csrc/simd/avx2.h"

namespace {

using Clock = std::chrono::steady_clock;

// tokens t0 .. t1 of x (row stride in) into dst[k * ld + (t - t0)]
void transpose_tokens(const float* x, int64_t in, int64_t t0, int64_t t1, float* dst, int64_t ld) {
    for (int64_t k0 = 0; k0 < in; k0 += 8)
        for (int64_t t = t0; t < t1; t += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(x + (t + i) * in + k0);
            SimdAvx2::transpose8(r);  // the kernels' own 8 x 8 transpose
            for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (k0 + j) * ld + (t - t0), r[j]);
        }
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    constexpr int64_t n = 128, kCalls = 3000;
    const int64_t in = argc > 1 ? std::atol(argv[1]) : 1536;
    if (in <= 0 || in % 8) {
        std::fprintf(stderr, "in must be a positive multiple of 8, got %ld\n", static_cast<long>(in));
        return 1;
    }
    auto* x = static_cast<float*>(std::aligned_alloc(64, n * in * sizeof(float)));
    auto* xt = static_cast<float*>(std::aligned_alloc(64, 2 * in * 224 * sizeof(float)));
    for (int64_t i = 0; i < n * in; ++i) x[i] = static_cast<float>(i % 1000);
    struct Layout {
        const char* name;
        int64_t ld, gap;  // row stride, and floats between thread 0's and thread 1's columns (-1: own blocks)
    };
    const Layout layouts[] = {{"shared", 144, 0}, {"gap", 208, 64}, {"blocks", 64, -1}};
    std::printf("x %ld x %ld, medians of %ld calls, us\n", static_cast<long>(n), static_cast<long>(in),
                static_cast<long>(kCalls));
    for (int rep = 0; rep < 2; ++rep)
        for (const Layout& l : layouts)
            for (int th : {1, 2}) {
                std::vector<double> call, own[2];
                for (int64_t c = 0; c < kCalls; ++c) {
                    const auto c0 = Clock::now();
#pragma omp parallel num_threads(th)
                    {
                        const int tid = omp_get_thread_num();
                        const int64_t t0 = n * tid / th, t1 = n * (tid + 1) / th;
                        float* dst = l.gap < 0 ? xt + tid * in * l.ld : xt + t0 + (tid ? l.gap : 0);
                        const auto s0 = Clock::now();
                        transpose_tokens(x, in, t0, t1, dst, l.gap < 0 && th == 1 ? 144 : l.ld);
                        own[tid].push_back(std::chrono::duration<double, std::micro>(Clock::now() - s0).count());
                    }
                    call.push_back(std::chrono::duration<double, std::micro>(Clock::now() - c0).count());
                }
                std::printf("%-7s %d thread%s: call %6.1f", l.name, th, th > 1 ? "s" : " ", median(call));
                for (int t = 0; t < th; ++t) std::printf("  thread %d %6.1f", t, median(own[t]));
                std::printf("\n");
            }
    std::free(x);
    std::free(xt);
}
