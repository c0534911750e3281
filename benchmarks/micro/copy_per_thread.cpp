// Whether the two vCPUs run at the same speed right now: each OpenMP thread copies its own buffer (in its own
// L2 at 400 KB) 2000 times, and the median time per copy is printed per thread, on one thread and on two. On this
// VM the two threads usually match (7.5-8 us per 400 KB); in the host's slow phases one of them takes nearly
// twice as long while the other does not, i.e. one vCPU is slowed, not the memory system. Run it beside a
// benchmark to tell such a phase from a change in the code.
//
//   g++ -O2 -std=c++17 -fopenmp benchmarks/micro/copy_per_thread.cpp -o /tmp/copy_per_thread
//   flock /tmp/sparsa-cpu.lock /tmp/copy_per_thread [KB]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
    const long kb = argc > 1 ? std::atol(argv[1]) : 400;
    if (kb <= 0) {
        std::fprintf(stderr, "KB must be a positive number of kilobytes, got %s\n", argv[1]);
        return 1;
    }
    const size_t bytes = static_cast<size_t>(kb) * 1024;
    for (int th : {1, 2, 1, 2}) {
        std::vector<double> per_thread(th);
#pragma omp parallel num_threads(th)
        {
            std::vector<char> src(bytes, 1), dst(bytes, 2);
            std::vector<double> us;
            for (int r = 0; r < 2000; ++r) {
#pragma omp barrier
                const auto t0 = std::chrono::steady_clock::now();
                std::memcpy(dst.data(), src.data(), bytes);
                src[static_cast<size_t>(r) % bytes] = dst[static_cast<size_t>(r) * 7 % bytes];  // keeps the copy live
                us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
            }
            std::sort(us.begin(), us.end());
            per_thread[omp_get_thread_num()] = us[us.size() / 2];
        }
        std::printf("%d thread%s: median us per copy of %ld KB:", th, th > 1 ? "s" : " ", kb);
        for (double v : per_thread) std::printf(" %.1f", v);
        std::printf("\n");
    }
}
