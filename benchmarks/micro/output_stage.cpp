// The batched kernels' output stage in isolation: a task's tile of results (rows x 64 tokens, in L1) is
// transposed into y (tokens x out, row-major) with the bias added, over every task of a call, on one thread.
// Orders of the same stores for 16-row tasks, then tasks of 32 and 64 rows written 16 rows (one line per token)
// at a time for all tokens (StoreOrder::Lines in csrc/kernels/common.h, the bitmask and CSR kernels' 32-row
// tasks), or all of the task's rows per 8 tokens (StoreOrder::Tokens, the BSR kernels' 32-row tasks); these also
// with the lane stage of the transposes done by the loads ("lane loads"). Plain full-line stores without the
// transposes give the floor. In the kernels the stage measured slower than here, bound by the stores into y
// (see BENCHMARKS.md, "Where the time goes at 95%").
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
#ifdef __AVX512F__
#include "../../csrc/simd/avx512.h"
#endif

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
        __m512 r[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(tmp + i * NT + t);
        SimdAvx512::transpose16(r);
        for (int j = 0; j < 16; ++j) _mm512_storeu_ps(y + (t + j) * ldy, _mm512_add_ps(r[j], b));
    }
}
#endif

// Columns 0..3 of the 8 x 4 tile at p (rows ld floats apart) as vectors: r[j] = element j of rows 0..7, i.e. half
// of an 8 x 8 transpose with its lane-crossing stage done by the loads (row i in the low 128 bits, row i + 4 in
// the high ones, from a 128-bit load and a broadcast load and a blend), so that one in-lane 4 x 4 transpose
// (8 shuffles) finishes it: 16 shuffles per 8 x 8 tile against transpose8's 24, 8 of them lane-crossing.
static inline void load_transpose_half(const float* p, int64_t ld, __m256 r[4]) {
    __m256 a[4];
    for (int i = 0; i < 4; ++i)
        a[i] = _mm256_blend_ps(_mm256_castps128_ps256(_mm_loadu_ps(p + i * ld)),
                               _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p + (i + 4) * ld)), 0xF0);
    const __m256 t0 = _mm256_unpacklo_ps(a[0], a[1]), t1 = _mm256_unpackhi_ps(a[0], a[1]);
    const __m256 t2 = _mm256_unpacklo_ps(a[2], a[3]), t3 = _mm256_unpackhi_ps(a[2], a[3]);
    r[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    r[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    r[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    r[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}

// Rows g .. g+15 of tokens t .. t+7, the two halves of each line back to back. LANE_LOADS: load_transpose_half 4
// tokens at a time (tried in the kernels on 2026-11-30 and not kept, see BENCHMARKS.md), otherwise whole-row loads
// and SimdAvx2::transpose8 (what the kernels do).
// A plain function on purpose: written as a lambda capturing by reference, GCC did not inline it and reloaded
// the captures after every store to y, which cost more than the transposes (36 against 22 us per 128 x 1536).
template <bool LANE_LOADS>
static inline void pair_rows(const float* tmp, float* y, int ldy, const float* bias, int g, int t) {
    const __m256 b0 = _mm256_loadu_ps(bias + g), b1 = _mm256_loadu_ps(bias + g + 8);
    if (LANE_LOADS) {
        for (int h = 0; h < 8; h += 4) {
            __m256 r[4], s[4];
            load_transpose_half(tmp + g * NT + t + h, NT, r);
            load_transpose_half(tmp + (g + 8) * NT + t + h, NT, s);
            for (int j = 0; j < 4; ++j) {
                _mm256_storeu_ps(y + (t + h + j) * ldy + g, _mm256_add_ps(r[j], b0));
                _mm256_storeu_ps(y + (t + h + j) * ldy + g + 8, _mm256_add_ps(s[j], b1));
            }
        }
    } else {
        __m256 r[8], s[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tmp + (g + i) * NT + t);
        for (int i = 0; i < 8; ++i) s[i] = _mm256_loadu_ps(tmp + (g + 8 + i) * NT + t);
        SimdAvx2::transpose8(r);
        SimdAvx2::transpose8(s);
        for (int j = 0; j < 8; ++j) {
            _mm256_storeu_ps(y + (t + j) * ldy + g, _mm256_add_ps(r[j], b0));
            _mm256_storeu_ps(y + (t + j) * ldy + g + 8, _mm256_add_ps(s[j], b1));
        }
    }
}

// Tasks of GT rows: per 8 tokens all GT rows (TOKENS_OUTER: BSR), or 16 rows for all tokens, then the next 16.
template <int GT, bool TOKENS_OUTER, bool LANE_LOADS = false>
void task_rows(const float* tmp, float* y, int ldy, const float* bias) {
    if (TOKENS_OUTER) {
        for (int t = 0; t < NT; t += 8)
            for (int g = 0; g < GT; g += 16) pair_rows<LANE_LOADS>(tmp, y, ldy, bias, g, t);
    } else {
        for (int g = 0; g < GT; g += 16)
            for (int t = 0; t < NT; t += 8) pair_rows<LANE_LOADS>(tmp, y, ldy, bias, g, t);
    }
}

// no transposes: the task's rows of each token stored as plain full lines (tmp unused), the floor for an order
template <int GT>
void plain_lines(const float*, float* y, int ldy, const float* bias) {
    const __m256 b = _mm256_loadu_ps(bias);
    for (int t = 0; t < NT; ++t)
        for (int g = 0; g < GT; g += 8) _mm256_storeu_ps(y + t * ldy + g, b);
}

using Store = void (*)(const float*, float*, int, const float*);

// every task of one call: token tiles outer, tasks of gt rows inner, the tile refilled as a kernel would
void call(Store st, int gt, int n, int out, float* y, float* tmp, const float* bias) {
    for (int t0 = 0; t0 < n; t0 += NT)
        for (int r0 = 0; r0 < out; r0 += gt) {
            for (int i = 0; i < gt * NT; i += 8) _mm256_storeu_ps(tmp + i, _mm256_setzero_ps());
            st(tmp, y + t0 * out + r0, out, bias + r0);
        }
}

int main() {
    alignas(64) static float tmp[64 * NT];
    struct Variant {
        const char* name;
        Store f;
        int rows;  // rows per task
    };
    std::vector<Variant> variants = {
        {"16 rows: 8-row groups in turn", groups_in_turn, 16}, {"16 rows: paired", paired<false>, 16},
        {"16 rows: paired + prefetch", paired<true>, 16}};
#ifdef __AVX512F__
    variants.push_back({"16 rows: 16x16 AVX-512", full_lines, 16});
#endif
    variants.push_back({"32 rows: 16 at a time (bitmask)", task_rows<32, false>, 32});
    variants.push_back({"32 rows per 8 tokens (BSR)", task_rows<32, true>, 32});
    variants.push_back({"32 rows: 16 at a time, lane loads", task_rows<32, false, true>, 32});
    variants.push_back({"32 rows per 8 tokens, lane loads", task_rows<32, true, true>, 32});
    variants.push_back({"64 rows: 16 at a time", task_rows<64, false>, 64});
    variants.push_back({"64 rows per 8 tokens", task_rows<64, true>, 64});
    variants.push_back({"64 rows per 8 tokens, lane loads", task_rows<64, true, true>, 64});
    variants.push_back({"16 rows: plain lines (floor)", plain_lines<16>, 16});
    variants.push_back({"32 rows: plain lines (floor)", plain_lines<32>, 32});
    {  // every transposing variant writes the same y (a 64-row task checked 16 rows at a time against the first)
        for (int i = 0; i < 64 * NT; ++i) tmp[i] = 0.5f * static_cast<float>(i);
        std::vector<float> b(64, 1.0f);
        for (auto& v : variants) {
            if (std::strstr(v.name, "plain")) continue;
            std::vector<float> ref(NT * v.rows), got(NT * v.rows);
            for (int g = 0; g < v.rows; g += 16) {
                std::vector<float> part(NT * G);
                groups_in_turn(tmp + g * NT, part.data(), G, b.data());
                for (int t = 0; t < NT; ++t)
                    for (int i = 0; i < G; ++i) ref[t * v.rows + g + i] = part[t * G + i];
            }
            v.f(tmp, got.data(), v.rows, b.data());
            if (got != ref) return std::printf("%s writes a different y\n", v.name), 1;
        }
    }
    for (auto [n, out] : std::vector<std::pair<int, int>>{{128, 1536}, {128, 384}, {64, 3072}}) {
        float* y = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(n) * out * 4));
        std::memset(y, 0, static_cast<size_t>(n) * out * 4);
        std::vector<float> bias(out, 1.0f);
        for (auto& [name, f, rows] : variants) {
            std::vector<double> us;
            for (int r = 0; r < 31; ++r) {
                const auto t0 = std::chrono::steady_clock::now();
                for (int i = 0; i < 200; ++i) call(f, rows, n, out, y, tmp, bias.data());
                us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                             200);
            }
            std::sort(us.begin(), us.end());
            std::printf("N=%d out=%d  %-32s %6.1f us (%.2f ns per output)\n", n, out, name, us[15],
                        us[15] * 1e3 / (static_cast<double>(n) * out));
        }
        {  // the same bytes of y stored front to back: what the memory system gives without the strided pattern
            std::vector<double> us;
            const __m256 b = _mm256_set1_ps(1.0f);
            for (int r = 0; r < 31; ++r) {
                const auto t0 = std::chrono::steady_clock::now();
                for (int i = 0; i < 200; ++i) {
                    for (int64_t k = 0; k < static_cast<int64_t>(n) * out; k += 8) _mm256_storeu_ps(y + k, b);
                    asm volatile("" ::: "memory");
                }
                us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                             200);
            }
            std::sort(us.begin(), us.end());
            std::printf("N=%d out=%d  %-32s %6.1f us\n", n, out, "all of y in order (floor)", us[15]);
        }
        std::free(y);
    }
}
