// The batched kernels' output stage in isolation: a task's 16 x 64 tile of results (rows x tokens, in L1) is
// transposed into y (tokens x out, row-major) with the bias added, over every task of a call, on one thread.
// Four orders of the same stores; the kernels ship "paired" (csrc/kernels/common.h, store_rows8).
//
//   g++ -O3 -std=c++17 -mavx512f -mavx512vl -mavx2 -mfma benchmarks/micro/output_stage.cpp -o /tmp/output_stage
//   flock /tmp/sparsa-cpu.lock /tmp/output_stage          # (-mavx2 -mfma alone for the AVX2-only build)
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../csrc/simd/avx2.h"

constexpr int NT = 64, G = 16;  // a task: 16 output rows (one 64-byte line of y per token) x 64 tokens

// the 8-row groups one after the other: each line of y is written in two visits, 64 token rows apart
void groups_in_turn(const float* tmp, float* y, int ldy, const float* bias) {
    for (int g = 0; g < G; g += 8) {
        const __m256 b = _mm256_loadu_ps(bias + g);
        for (int t = 0; t < NT; t += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tmp + (g + i) * NT + t);
            SimdAvx2::transpose8(r);
            for (int j = 0; j < 8; ++j) _mm256_storeu_ps(y + (t + j) * ldy + g, _mm256_add_ps(r[j], b));
        }
    }
}

// both groups per 8 tokens, the two halves of each line stored back to back (what the kernels do)
template <bool PREFETCH>
void paired(const float* tmp, float* y, int ldy, const float* bias) {
    const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
    for (int t = 0; t < NT; t += 8) {
        if (PREFETCH && t + 8 < NT)
            for (int j = 0; j < 8; ++j) __builtin_prefetch(y + (t + 8 + j) * ldy, 1, 3);
        __m256 r[8], s[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tmp + i * NT + t);
        for (int i = 0; i < 8; ++i) s[i] = _mm256_loadu_ps(tmp + (8 + i) * NT + t);
        SimdAvx2::transpose8(r);
        SimdAvx2::transpose8(s);
        for (int j = 0; j < 8; ++j) {
            _mm256_storeu_ps(y + (t + j) * ldy, _mm256_add_ps(r[j], b0));
            _mm256_storeu_ps(y + (t + j) * ldy + 8, _mm256_add_ps(s[j], b1));
        }
    }
}

#ifdef __AVX512F__
// one 16 x 16 transpose per 16 tokens and full-line stores
void full_lines(const float* tmp, float* y, int ldy, const float* bias) {
    const __m512 b = _mm512_loadu_ps(bias);
    for (int t = 0; t < NT; t += 16) {
        __m512 r[16], u[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(tmp + i * NT + t);
        for (int i = 0; i < 16; i += 2) {
            u[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            u[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            r[i] = _mm512_shuffle_ps(u[i], u[i + 2], 0x44);
            r[i + 1] = _mm512_shuffle_ps(u[i], u[i + 2], 0xEE);
            r[i + 2] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0x44);
            r[i + 3] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
        }
        for (int j = 0; j < 4; ++j) {
            const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), c = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
            const __m512 d = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
            const __m512 e = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
            u[j] = _mm512_shuffle_f32x4(a, d, 0x88);
            u[8 + j] = _mm512_shuffle_f32x4(a, d, 0xDD);
            u[4 + j] = _mm512_shuffle_f32x4(c, e, 0x88);
            u[12 + j] = _mm512_shuffle_f32x4(c, e, 0xDD);
        }
        for (int j = 0; j < 16; ++j) _mm512_storeu_ps(y + (t + j) * ldy, _mm512_add_ps(u[j], b));
    }
}
#endif

using Store = void (*)(const float*, float*, int, const float*);

// every task of one call: token tiles outer, 16-row tasks inner, the tile refilled as a kernel would
void call(Store st, int n, int out, float* y, float* tmp, const float* bias) {
    for (int t0 = 0; t0 < n; t0 += NT)
        for (int r0 = 0; r0 < out; r0 += G) {
            for (int i = 0; i < G * NT; i += 8) _mm256_storeu_ps(tmp + i, _mm256_setzero_ps());
            st(tmp, y + t0 * out + r0, out, bias + r0);
        }
}

int main() {
    alignas(64) static float tmp[G * NT];
    std::vector<std::pair<const char*, Store>> variants = {
        {"8-row groups in turn", groups_in_turn}, {"paired (shipped)", paired<false>},
        {"paired + prefetch", paired<true>}};
#ifdef __AVX512F__
    variants.push_back({"16x16 AVX-512, full lines", full_lines});
#endif
    {  // every variant writes the same y
        for (int i = 0; i < G * NT; ++i) tmp[i] = 0.5f * static_cast<float>(i);
        std::vector<float> ref(NT * G), got(NT * G), b(G, 1.0f);
        groups_in_turn(tmp, ref.data(), G, b.data());
        for (auto& [name, f] : variants) {
            f(tmp, got.data(), G, b.data());
            if (got != ref) return std::printf("%s writes a different y\n", name), 1;
        }
    }
    for (auto [n, out] : std::vector<std::pair<int, int>>{{128, 1536}, {128, 384}, {64, 1536}}) {
        float* y = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(n) * out * 4));
        std::memset(y, 0, static_cast<size_t>(n) * out * 4);
        std::vector<float> bias(out, 1.0f);
        for (auto& [name, f] : variants) {
            std::vector<double> us;
            for (int r = 0; r < 31; ++r) {
                const auto t0 = std::chrono::steady_clock::now();
                for (int i = 0; i < 200; ++i) call(f, n, out, y, tmp, bias.data());
                us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                             200);
            }
            std::sort(us.begin(), us.end());
            std::printf("N=%d out=%d  %-28s %6.1f us (%.2f ns per output)\n", n, out, name, us[15],
                        us[15] * 1e3 / (static_cast<double>(n) * out));
        }
        std::free(y);
    }
}
