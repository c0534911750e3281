// What two threads share in the development VM's paired slow phases (benchmarks/_bench.py, autotune.PAIR_SLOW):
// per-thread time of FMAs in registers (8 chains) and of reads of a private 16, 24 or 48 KB buffer, on one thread
// and on two at once, printed round after round. Calm, two threads take what one does; if the host ran the two
// vCPUs on one core's two hardware threads, the FMAs (one core's FMA pipes) would slow and the reads much less.
//
//   g++ -O2 -mavx512f -fopenmp benchmarks/micro/pair_share.cpp -o /tmp/pair_share
//   flock /tmp/sparsa-cpu.lock /tmp/pair_share 25 > /tmp/pair_share.txt     # seconds; then count the slow lines:
//   awk -F'[()]' '{print (substr($2,2) > 1.4 ? "fma slow" : "fma calm"), (substr($8,2) > 1.4 ? "48K slow" : "48K calm")}' \
//       /tmp/pair_share.txt | sort | uniq -c
#include <immintrin.h>
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
__attribute__((noinline)) static float fma_loop(long iters) {
    __m512 a[8];
    for (int i = 0; i < 8; ++i) a[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (long it = 0; it < iters; ++it)
        for (int i = 0; i < 8; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
    __m512 s = a[0];
    for (int i = 1; i < 8; ++i) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}
__attribute__((noinline)) static float read_loop(const float* buf, long floats, long reps) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (long r = 0; r < reps; ++r)
        for (long i = 0; i < floats; i += 64) {
            s0 = _mm512_add_ps(s0, _mm512_load_ps(buf + i));
            s1 = _mm512_add_ps(s1, _mm512_load_ps(buf + i + 16));
            s2 = _mm512_add_ps(s2, _mm512_load_ps(buf + i + 32));
            s3 = _mm512_add_ps(s3, _mm512_load_ps(buf + i + 48));
        }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}
int main(int argc, char** argv) {
    const double seconds = argc > 1 ? atof(argv[1]) : 20;
    float* bufs[2];
    for (int t = 0; t < 2; ++t) { bufs[t] = (float*)aligned_alloc(64, 1 << 20); std::fill(bufs[t], bufs[t] + (1 << 18), 1.0f); }
    volatile float sink = 0;
    const double t_end = now() + seconds;
    std::printf("# us per thread: fma (8 chains x 4000) | read 16 KB x 20 | read 24 KB x 13 | read 48 KB x 7; 1 thread, then 2 at once (max of the two)\n");
    while (now() < t_end) {
        double r[2][4];
        for (int nth = 1; nth <= 2; ++nth) {
            for (int k = 0; k < 4; ++k) {
                std::vector<double> med;
                for (int rep = 0; rep < 15; ++rep) {
                    double tt[2] = {0, 0};
#pragma omp parallel num_threads(nth)
                    {
                        const int tid = omp_get_thread_num();
                        const double t0 = now();
                        float v = 0;
                        if (k == 0) v = fma_loop(4000);
                        else if (k == 1) v = read_loop(bufs[tid], 4096, 20);
                        else if (k == 2) v = read_loop(bufs[tid], 6144, 13);
                        else v = read_loop(bufs[tid], 12288, 7);
                        tt[tid] = now() - t0;
                        sink = sink + v;
                    }
                    med.push_back(std::max(tt[0], tt[1]) * 1e6);
                }
                std::nth_element(med.begin(), med.begin() + 7, med.end());
                r[nth - 1][k] = med[7];
            }
        }
        std::printf("fma %5.1f %5.1f (x%.2f) | 16K %5.1f %5.1f (x%.2f) | 24K %5.1f %5.1f (x%.2f) | 48K %5.1f %5.1f (x%.2f)\n",
                    r[0][0], r[1][0], r[1][0] / r[0][0], r[0][1], r[1][1], r[1][1] / r[0][1], r[0][2], r[1][2],
                    r[1][2] / r[0][2], r[0][3], r[1][3], r[1][3] / r[0][3]);
        fflush(stdout);
    }
}
