// The whole-row walk of the batched CSR kernel at high sparsity (csrc/kernels/csr.h, csr_task_rows) without the
// rest of the call: every nonzero broadcasts its value against one row of xt (64 tokens, four 64-byte lines) at a
// random column, into two sets of four AVX-512 accumulators. It answers how fast that loop can run when xt sits
// in L1 (in = 64), in L2 (in = 768 or 3072, 196 or 786 KB per thread) and, for comparison, when every nonzero
// hits the same column (no traffic beyond L1). Rows: `rows` rows of `in * density` nonzeros (the CSR kernel's
// 3072 x 768 weight at 95%: 3072 rows of ~38). Each thread walks its own copy (as with the token split, where
// each thread has its own 64-token block of xt). Prints ns per nonzero and the lines of xt read per ns.
//
//   g++ -O2 -std=c++17 -mavx512f -fopenmp benchmarks/micro/gather_rows.cpp -o /tmp/gather_rows
//   flock /tmp/sparsa-cpu.lock /tmp/gather_rows [rows] [density]
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Rows {
    std::vector<int64_t> ptr;
    std::vector<uint16_t> col;
    std::vector<float> val;
};

// rows x in, each entry nonzero with probability density; same_column: every nonzero at column 0
Rows make_rows(int64_t rows, int64_t in, double density, bool same_column, unsigned seed) {
    Rows r;
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    r.ptr.push_back(0);
    for (int64_t i = 0; i < rows; ++i) {
        for (int64_t k = 0; k < in; ++k)
            if (u(g) < density) {
                r.col.push_back(static_cast<uint16_t>(same_column ? 0 : k));
                r.val.push_back(u(g) - 0.5f);
            }
        r.ptr.push_back(static_cast<int64_t>(r.col.size()));
    }
    return r;
}

// the kernel's loop: two accumulator sets of four vectors take alternate nonzeros
void walk(const Rows& r, const float* xt, float* out) {
    const int64_t rows = static_cast<int64_t>(r.ptr.size()) - 1;
    for (int64_t i = 0; i < rows; ++i) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int64_t q = r.ptr[i];
        const int64_t e = r.ptr[i + 1];
        for (; q + 2 <= e; q += 2) {
            const float* x0 = xt + static_cast<int64_t>(r.col[q]) * 64;
            const float* x1 = xt + static_cast<int64_t>(r.col[q + 1]) * 64;
            const __m512 w0 = _mm512_set1_ps(r.val[q]), w1 = _mm512_set1_ps(r.val[q + 1]);
            a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0), a0);
            a1 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16), a1);
            a2 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 32), a2);
            a3 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 48), a3);
            b0 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1), b0);
            b1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1 + 16), b1);
            b2 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1 + 32), b2);
            b3 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1 + 48), b3);
        }
        if (q < e) {
            const float* x0 = xt + static_cast<int64_t>(r.col[q]) * 64;
            const __m512 w0 = _mm512_set1_ps(r.val[q]);
            a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0), a0);
            a1 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16), a1);
            a2 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 32), a2);
            a3 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 48), a3);
        }
        _mm512_storeu_ps(out + i % 64 * 64, _mm512_add_ps(a0, b0));
        _mm512_storeu_ps(out + i % 64 * 64 + 16, _mm512_add_ps(a1, b1));
        _mm512_storeu_ps(out + i % 64 * 64 + 32, _mm512_add_ps(a2, b2));
        _mm512_storeu_ps(out + i % 64 * 64 + 48, _mm512_add_ps(a3, b3));
    }
}

// median ns per nonzero over `reps` walks, on `threads` threads each walking its own rows and xt
double time_walk(int64_t rows, int64_t in, double density, bool same_column, int threads, int reps) {
    std::vector<double> per(static_cast<size_t>(threads));
    int64_t nnz = 0;
#pragma omp parallel num_threads(threads) reduction(max : nnz)
    {
        const int t = omp_get_thread_num();
        const Rows r = make_rows(rows, in, density, same_column, 1234u + static_cast<unsigned>(t));
        // 64-byte aligned, as the kernels' workspace: from a plain vector (16-byte aligned) every 64-byte load
        // straddled two lines and the walk took 2.05 instead of 1.44 ns per nonzero in L1
        std::vector<float> buf(static_cast<size_t>(in * 64 + 16), 1.0f), out(64 * 64);
        float* const xt = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t{63});
        std::vector<double> ts;
        for (int k = 0; k < reps + 3; ++k) {
#pragma omp barrier
            const auto t0 = Clock::now();
            walk(r, xt, out.data());
            const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
            if (k >= 3) ts.push_back(ns / static_cast<double>(r.col.size()));
        }
        std::nth_element(ts.begin(), ts.begin() + reps / 2, ts.end());
        per[static_cast<size_t>(t)] = ts[static_cast<size_t>(reps / 2)];
        nnz = static_cast<int64_t>(r.col.size());
    }
    return *std::max_element(per.begin(), per.end());
}

}  // namespace

int main(int argc, char** argv) {
    const int64_t rows = argc > 1 ? std::atol(argv[1]) : 3072;
    const double density = argc > 2 ? std::atof(argv[2]) : 0.05;
    if (rows <= 0 || !(density > 0.0 && density <= 1.0)) {
        std::fprintf(stderr, "usage: gather_rows [rows > 0] [density in (0, 1]], got %s %s\n", argv[1],
                     argc > 2 ? argv[2] : "");
        return 2;
    }
    std::printf("rows %ld, density %.3f, 64 tokens per xt row; median ns per nonzero (4 lines of xt, 4 FMAs)\n",
                static_cast<long>(rows), density);
    for (int threads : {1, 2}) {
        const double same = time_walk(rows, 768, density, true, threads, 31);
        std::printf("%d thread(s): same column %.3f ns", threads, same);
        for (int64_t in : {64, 768, 3072}) {
            const double ns = time_walk(rows, in, density * 768.0 / static_cast<double>(in), false, threads, 31);
            std::printf(" | in %ld (xt %ld KB) %.3f ns, %.1f lines/ns", static_cast<long>(in),
                        static_cast<long>(in * 64 * 4 / 1024), ns, 4.0 / ns);
        }
        std::printf("\n");
    }
    return 0;
}
