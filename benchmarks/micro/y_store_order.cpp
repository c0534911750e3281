// Where the register-tile ("rt") kernels' output time goes when y's rows alias in L1. One thread writes y
// (64 token rows x `out` floats, 0.4-1 MB: in its L2) in full 64-byte lines, no arithmetic, in these orders:
//   tile    the rt kernels' order: token tiles of 16 outer, blocks of 16 columns inner; per block, the 16 token
//           rows' lines one after the other (a tile of 16 rows x 16 tokens, transposed, leaves like this);
//   8tok    the same lines, 8 token rows per pass over all blocks, then the other 8;
//   park W  tile's first 8 lines straight to y, the other 8 parked in an L1 buffer and written every W blocks;
//   skew g  token j's line of block c written at step c + j / g (from a ring buffer): every step's lines in
//           16 / g different L1 sets;
//   seg S   a tile's 16 lines stored in an L1 buffer for S blocks, then each token row's S lines written front
//           to back (what a kernel staging S tiles would do);
//   hseg S  the first 8 lines of each block straight to y, the other 8 staged as in seg S;
//   rows    each token row written front to back (the floor).
// With out a multiple of 1024 floats (rows 4 KB x k apart) a block's 16 lines all fall in one set of the 8-way
// L1. See BENCHMARKS.md, "Figures of 2026-11-30 17:53-19:10 UTC", item 3, for the figures and what they mean.
//
//   g++ -O2 -mavx512f benchmarks/micro/y_store_order.cpp -o /tmp/y_store_order
//   flock /tmp/sparsa-cpu.lock /tmp/y_store_order
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

enum class Order { Tile, EightTokens, Park, Skew, Seg, HalfSeg, Rows };

constexpr int kTokens = 64, kRing = 16;
alignas(64) static float g_buf[256 * 8 * 16];  // parked (park), ringed (skew) or staged (seg, hseg) lines

// seg S (D = 0) and hseg S (D = 8): per block, lines 0 .. D-1 straight to y, the others staged in g_buf; after S
// blocks, each staged token row's S lines written front to back. D is a template argument so that v stays in
// registers (with a runtime D the compiler indexed v in memory, and seg8 read 34 instead of 48 GB/s).
template <int D>
static void seg_tile(float* yt, int out, int seg, const __m512 (&v)[16]) {
    const int nb = out / 16;
    for (int c0 = 0; c0 < nb; c0 += seg) {
        const int c1 = std::min(nb, c0 + seg);
        for (int c = c0; c < c1; ++c) {
            for (int j = 0; j < D; ++j) _mm512_storeu_ps(yt + j * out + 16 * c, v[j]);
            for (int j = D; j < 16; ++j) _mm512_store_ps(g_buf + ((c - c0) * (16 - D) + j - D) * 16, v[j]);
            asm volatile("" ::: "memory");
        }
        for (int j = D; j < 16; ++j)
            for (int c = c0; c < c1; ++c)
                _mm512_storeu_ps(yt + j * out + 16 * c, _mm512_load_ps(g_buf + ((c - c0) * (16 - D) + j - D) * 16));
        asm volatile("" ::: "memory");
    }
}

// one token tile (16 rows of y from yt) in the given order; `arg` is W for park, g for skew
static void write_tile(float* yt, int out, Order order, int arg, const __m512 (&v)[16]) {
    const int nb = out / 16;
    switch (order) {
        case Order::Tile:
            for (int c = 0; c < nb; ++c) {
                for (int j = 0; j < 16; ++j) _mm512_storeu_ps(yt + j * out + 16 * c, v[j]);
                asm volatile("" ::: "memory");
            }
            break;
        case Order::EightTokens:
            for (int h = 0; h < 16; h += 8)
                for (int c = 0; c < nb; ++c) {
                    for (int j = 0; j < 8; ++j) _mm512_storeu_ps(yt + (h + j) * out + 16 * c, v[h + j]);
                    asm volatile("" ::: "memory");
                }
            break;
        case Order::Park: {
            int parked = 0, c0 = 0;
            for (int c = 0; c < nb; ++c) {
                for (int j = 0; j < 8; ++j) _mm512_storeu_ps(yt + j * out + 16 * c, v[j]);
                for (int j = 0; j < 8; ++j) _mm512_store_ps(g_buf + (parked * 8 + j) * 16, v[8 + j]);
                asm volatile("" ::: "memory");
                if (++parked == arg || c + 1 == nb) {
                    for (int p = 0; p < parked; ++p)
                        for (int j = 0; j < 8; ++j)
                            _mm512_storeu_ps(yt + (8 + j) * out + 16 * (c0 + p), _mm512_load_ps(g_buf + (p * 8 + j) * 16));
                    parked = 0;
                    c0 = c + 1;
                }
            }
            break;
        }
        case Order::Skew: {
            const int g = arg, delay = 15 / g;
            for (int c = 0; c < nb + delay; ++c) {
                if (c < nb) {
                    for (int j = 0; j < g; ++j) _mm512_storeu_ps(yt + j * out + 16 * c, v[j]);
                    for (int j = g; j < 16; ++j) _mm512_store_ps(g_buf + ((c % kRing) * 16 + j) * 16, v[j]);
                }
                for (int j = g; j < 16; ++j) {
                    const int cb = c - j / g;
                    if (cb >= 0 && cb < nb)
                        _mm512_storeu_ps(yt + j * out + 16 * cb, _mm512_load_ps(g_buf + ((cb % kRing) * 16 + j) * 16));
                }
                asm volatile("" ::: "memory");
            }
            break;
        }
        case Order::Seg: seg_tile<0>(yt, out, arg, v); break;
        case Order::HalfSeg: seg_tile<8>(yt, out, arg, v); break;
        case Order::Rows:
            for (int j = 0; j < 16; ++j)
                for (int c = 0; c < nb; ++c) _mm512_storeu_ps(yt + j * out + 16 * c, v[j]);
            break;
    }
}

// GB/s of y written, median of `reps` writes of all 64 token rows
static double rate(int out, Order order, int arg, int reps = 2001) {
    float* y = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * kTokens * out));
    std::fill(y, y + kTokens * out, 0.0f);
    __m512 v[16];
    for (int j = 0; j < 16; ++j) v[j] = _mm512_set1_ps(static_cast<float>(j));
    std::vector<double> ts;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int tt = 0; tt < kTokens; tt += 16) write_tile(y + tt * out, out, order, arg, v);
        ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::free(y);
    std::nth_element(ts.begin(), ts.begin() + ts.size() / 2, ts.end());
    return kTokens * out * 4.0 / ts[ts.size() / 2] / 1e9;
}

int main() {
    std::printf("GB/s of y written by one thread (64 token rows, lines of 64 bytes)\n");
    std::printf("%6s %6s %6s %7s %7s %7s %7s %7s %6s %6s %6s %6s %6s %6s %6s\n", "out", "tile", "8tok", "park16",
                "park64", "skew1", "skew2",
                "skew4", "seg4", "seg8", "seg16", "hseg4", "hseg8", "hseg16", "rows");
    for (int out : {1536, 2048, 2560, 3072, 3088, 4096})
        std::printf("%6d %6.1f %6.1f %7.1f %7.1f %7.1f %7.1f %7.1f %6.1f %6.1f %6.1f %6.1f %6.1f %6.1f %6.1f\n", out,
                    rate(out, Order::Tile, 0),
                    rate(out, Order::EightTokens, 0), rate(out, Order::Park, 16), rate(out, Order::Park, 64),
                    rate(out, Order::Skew, 1), rate(out, Order::Skew, 2), rate(out, Order::Skew, 4),
                    rate(out, Order::Seg, 4), rate(out, Order::Seg, 8), rate(out, Order::Seg, 16),
                    rate(out, Order::HalfSeg, 4), rate(out, Order::HalfSeg, 8), rate(out, Order::HalfSeg, 16),
                    rate(out, Order::Rows, 0));
}
