// The register-tile ("rt") kernels' tile against a pair-lane tile, one thread, 4x1 blocks, x already transposed:
//   rt    16 rows x 16 tokens: acc[i] = row i over 16 tokens, one broadcast weight per FMA, a 16 x 16 transpose
//         (64 shuffles) and 16 stores per tile, each token's 16 rows one 64-byte line;
//   pair  16 rows x 8 tokens: lanes = (token, row pair), so a 4x1 block is two FMAs with [w0 w1] and [w2 w3]
//         broadcast as 64-bit pairs against the 8 tokens, each twice (from a transposed x with every token doubled,
//         "xt2", or expanded from the plain one by a permute); an 8 x 8 transpose of 64-bit elements (24
//         shuffles) and 8 stores per tile. Half the lines per tile into one L1 set when y's rows alias (out a
//         multiple of 1024), which benchmarks/micro/y_store_order.cpp measured 2.3x faster as a store order.
// Outputs are compared before timing. See BENCHMARKS.md, "Figures of 2026-11-30 17:53-19:10 UTC", item 3.
//
//   g++ -O3 -mavx512f -mavx512dq -mavx512vl -mfma benchmarks/micro/rt_pair_lanes.cpp -o /tmp/rt_pair_lanes
//   flock /tmp/sparsa-cpu.lock /tmp/rt_pair_lanes
#include <immintrin.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

static void transpose16(__m512 r[16]) {
    __m512 u[16];
    for (int i = 0; i < 16; i += 2) { u[i] = _mm512_unpacklo_ps(r[i], r[i + 1]); u[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]); }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(u[i], u[i + 2], 0x44); r[i + 1] = _mm512_shuffle_ps(u[i], u[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0x44); r[i + 3] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; ++j) {
        const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), c = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
        const __m512 d = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88), e = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        u[j] = _mm512_shuffle_f32x4(a, d, 0x88); u[8 + j] = _mm512_shuffle_f32x4(a, d, 0xDD);
        u[4 + j] = _mm512_shuffle_f32x4(c, e, 0x88); u[12 + j] = _mm512_shuffle_f32x4(c, e, 0xDD);
    }
    for (int i = 0; i < 16; ++i) r[i] = u[i];
}

// 8 x 8 transpose of 64-bit elements: r[p] element k -> out[k] element p
static void transpose8x64(__m512d r[8]) {
    __m512d t[8];
    for (int i = 0; i < 8; i += 2) { t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]); t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]); }
    // t[0] = (r0.0 r1.0 | r0.2 r1.2 | r0.4 r1.4 | r0.6 r1.6), t[1] = odd elements
    __m512d s[8];
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0x88);      // lanes 0,2 of t[i], 0,2 of t[i+2]
        s[i + 1] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0x88);
        s[i + 2] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0xDD);  // lanes 1,3
        s[i + 3] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0xDD);
    }
    // s[0]: (r0.0 r1.0 | r0.4 r1.4 | r2.0 r3.0 | r2.4 r3.4) ...
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm512_shuffle_f64x2(s[i], s[i + 4], 0x88);
        r[i + 4] = _mm512_shuffle_f64x2(s[i], s[i + 4], 0xDD);
    }
}

struct W {
    int out, in, nbr;
    std::vector<int> rp, col;
    std::vector<float> val;
};

static W make(int out, int in, double density, unsigned seed) {
    W w{out, in, out / 4, {}, {}, {}};
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> u(0, 1);
    w.rp.push_back(0);
    for (int b = 0; b < w.nbr; ++b) {
        for (int c = 0; c < in; ++c)
            if (u(g) < density) { w.col.push_back(c); for (int i = 0; i < 4; ++i) w.val.push_back(u(g) - 0.5f); }
        w.rp.push_back(static_cast<int>(w.col.size()));
    }
    return w;
}

// The blocks of the tile's 4 block-rows (from row r0): side by side for as many as all four have, then each
// row's remaining ones, as the rt kernels do; block(q, b) for block b of block-row q.
template <class F>
static inline void walk_tile(const W& w, int r0, const F& block) {
    const int b0 = r0 / 4;
    int b[4], e[4], m = 1 << 30;
    for (int q = 0; q < 4; ++q) { b[q] = w.rp[b0 + q]; e[q] = w.rp[b0 + q + 1]; m = std::min(m, e[q] - b[q]); }
    for (int s = 0; s < m; ++s)
        for (int q = 0; q < 4; ++q) block(q, b[q] + s);
    for (int q = 0; q < 4; ++q)
        for (int bb = b[q] + m; bb < e[q]; ++bb) block(q, bb);
}

// rt: tokens tiles of 16 over 64 tokens; xt rows of 64 tokens
static void run_rt(const W& w, const float* xt, float* y, int ldy) {
    for (int tt = 0; tt < 64; tt += 16)
        for (int r0 = 0; r0 < w.out; r0 += 16) {
            __m512 acc[16];
            for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
            walk_tile(w, r0, [&](int q, int bb) {
                const __m512 xv = _mm512_loadu_ps(xt + w.col[bb] * 64 + tt);
                const float* v = &w.val[bb * 4];
                for (int i = 0; i < 4; ++i) acc[q * 4 + i] = _mm512_fmadd_ps(_mm512_set1_ps(v[i]), xv, acc[q * 4 + i]);
            });
            transpose16(acc);
            for (int j = 0; j < 16; ++j) _mm512_storeu_ps(y + (tt + j) * ldy + r0, acc[j]);
        }
}

// pair lanes: token tiles of 8; xv = 8 tokens, each twice (from xt2, rows of 128, or expanded from xt by a permute)
template <bool EXPAND>
static void run_pair(const W& w, const float* xt, const float* xt2, float* y, int ldy) {
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    for (int tt = 0; tt < 64; tt += 8)
        for (int r0 = 0; r0 < w.out; r0 += 16) {
            __m512 acc[8];
            for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_ps();
            walk_tile(w, r0, [&](int q, int bb) {
                __m512 xv;
                if (EXPAND) xv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(xt + w.col[bb] * 64 + tt)));
                else xv = _mm512_loadu_ps(xt2 + w.col[bb] * 128 + 2 * tt);
                const double* v = reinterpret_cast<const double*>(&w.val[bb * 4]);
                acc[2 * q] = _mm512_fmadd_ps(_mm512_castpd_ps(_mm512_set1_pd(v[0])), xv, acc[2 * q]);
                acc[2 * q + 1] = _mm512_fmadd_ps(_mm512_castpd_ps(_mm512_set1_pd(v[1])), xv, acc[2 * q + 1]);
            });
            __m512d d[8];
            for (int p = 0; p < 8; ++p) d[p] = _mm512_castps_pd(acc[p]);
            transpose8x64(d);
            for (int k = 0; k < 8; ++k) _mm512_storeu_ps(y + (tt + k) * ldy + r0, _mm512_castpd_ps(d[k]));
        }
}

template <class F>
static double time_us(F f, int reps = 301) {
    std::vector<double> ts;
    for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        f();
        ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e6);
    }
    std::nth_element(ts.begin(), ts.begin() + reps / 2, ts.end());
    return ts[reps / 2];
}

int main() {
    for (int out : {1536, 3072, 3088}) {
        for (int in : {384, 768}) {
            for (double dens : {0.01, 0.05, 0.1}) {
                const W w = make(out, in, dens, 1);
                std::vector<float> x(64 * in), xt(in * 64), xt2(in * 128);
                std::mt19937 g(2);
                std::normal_distribution<float> nd;
                for (auto& v : x) v = nd(g);
                for (int t = 0; t < 64; ++t)
                    for (int k = 0; k < in; ++k) { xt[k * 64 + t] = x[t * in + k]; xt2[k * 128 + 2 * t] = xt2[k * 128 + 2 * t + 1] = x[t * in + k]; }
                std::vector<float> ya(64 * out), yb(64 * out), yc(64 * out);
                run_rt(w, xt.data(), ya.data(), out);
                run_pair<false>(w, xt.data(), xt2.data(), yb.data(), out);
                run_pair<true>(w, xt.data(), xt2.data(), yc.data(), out);
                double err = 0;
                for (size_t i = 0; i < ya.size(); ++i) err = std::max(err, (double)std::max(std::abs(ya[i] - yb[i]), std::abs(ya[i] - yc[i])));
                const double a = time_us([&] { run_rt(w, xt.data(), ya.data(), out); });
                const double b = time_us([&] { run_pair<false>(w, xt.data(), xt2.data(), yb.data(), out); });
                const double c = time_us([&] { run_pair<true>(w, xt.data(), xt2.data(), yc.data(), out); });
                std::printf("%4dx%-4d %4.0f%%: rt %7.1f us  pair(xt2) %7.1f (%.2fx)  pair(permute) %7.1f (%.2fx)  err %.1e\n", out, in,
                            100 * (1 - dens), a, b, a / b, c, a / c, err);
            }
        }
    }
}
