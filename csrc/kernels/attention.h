// kernels/attention.h: fused scaled-dot-product attention for inference, fp32 (attn_args.h has the contract).
//
// Why sparsa has one: once the Linears run sparse, attention becomes the largest dense cost of an encoder
// (BENCHMARKS.md, end to end, has the model with and without this kernel). The head
// dimension of such models is small (32, 64), where a flash-style kernel built for long sequences spends its
// time on bookkeeping; and torch needs the heads of q, k, v contiguous, so the (B, S, H, D) Linear outputs are
// copied into (B, H, S, D) and the result back. Here q, k, v are read where they lie and o is written in the
// layout the output projection reads.
//
// A task is (batch, head, block of QB queries): k is transposed once into kt (D x Sk) so that a score row is a
// sum over d of broadcast q[i, d] times a contiguous row of kt; the block's scores (QB x Sk, in L2) get scale,
// mask and a numerically stable softmax (row max subtracted); then o = P v with P's entries broadcast against
// rows of v. The whole key range is kept per block (no online softmax), which suits encoder-length sequences;
// scratch grows with Sk (QB x Sk + D x Sk floats per thread).

// Vectors per register tile so that IR accumulator rows, the loads and one broadcast fit in registers.
template <int IR>
static constexpr int attn_vectors() {
    constexpr int fit = (S::NREG - 1) / (IR + 1);
    return fit < 1 ? 1 : (fit > 4 ? 4 : fit);
}

// sc[i][j0 .. j0 + JV*W) = sum_d q[i][d] kt[d][j0 ..], for IR query rows.
template <int IR, int JV>
static inline void attn_scores_tile(const float* q, int64_t q_ss, const float* kt, int64_t ldk, int64_t D,
                                    int64_t j0, float* sc, int64_t ldsc) {
    using V = typename S::V;
    V acc[IR][JV];
    for (int i = 0; i < IR; ++i)
        for (int v = 0; v < JV; ++v) acc[i][v] = S::zero();
    for (int64_t d = 0; d < D; ++d) {
        V kv[JV];
        for (int v = 0; v < JV; ++v) kv[v] = S::loadu(kt + d * ldk + j0 + v * S::W);
        for (int i = 0; i < IR; ++i) {
            const V qb = S::set1(q[i * q_ss + d]);
            for (int v = 0; v < JV; ++v) acc[i][v] = S::fmadd(qb, kv[v], acc[i][v]);
        }
    }
    for (int i = 0; i < IR; ++i)
        for (int v = 0; v < JV; ++v) S::storeu(sc + i * ldsc + j0 + v * S::W, acc[i][v]);
}

// Calls f.template run<JV>() for a remainder of 1 <= jv < 4 vectors.
template <class F>
static inline void with_remainder(int jv, const F& f) {
    if (jv == 1) f.template run<1>();
    else if (jv == 2) f.template run<2>();
    else if (jv == 3) f.template run<3>();
}

template <int IR>
struct ScoresTile {
    const float* q;
    int64_t q_ss;
    const float* kt;
    int64_t ldk, D, j0;
    float* sc;
    int64_t ldsc;
    template <int JV>
    void run() const { attn_scores_tile<IR, JV>(q, q_ss, kt, ldk, D, j0, sc, ldsc); }
};

template <int IR>
static inline void attn_scores_rows(const float* q, int64_t q_ss, const float* kt, int64_t ldk, int64_t D,
                                    int64_t skp, float* sc, int64_t ldsc) {
    constexpr int JV = attn_vectors<IR>();
    int64_t j0 = 0;
    for (; j0 + JV * S::W <= skp; j0 += JV * S::W) attn_scores_tile<IR, JV>(q, q_ss, kt, ldk, D, j0, sc, ldsc);
    if (j0 < skp) with_remainder(static_cast<int>((skp - j0) / S::W), ScoresTile<IR>{q, q_ss, kt, ldk, D, j0, sc, ldsc});
}

// o[i][d0 .. d0 + DV*W) = inv[i] * sum_j p[i][j] v[j][d0 ..], for IR query rows.
template <int IR, int DV>
static inline void attn_pv_tile(const float* p, int64_t ldp, const float* inv, const float* v, int64_t v_ss,
                                int64_t Sk, int64_t d0, float* o, int64_t o_ss) {
    using V = typename S::V;
    V acc[IR][DV];
    for (int i = 0; i < IR; ++i)
        for (int u = 0; u < DV; ++u) acc[i][u] = S::zero();
    for (int64_t j = 0; j < Sk; ++j) {
        V vv[DV];
        for (int u = 0; u < DV; ++u) vv[u] = S::loadu(v + j * v_ss + d0 + u * S::W);
        for (int i = 0; i < IR; ++i) {
            const V pb = S::set1(p[i * ldp + j]);
            for (int u = 0; u < DV; ++u) acc[i][u] = S::fmadd(pb, vv[u], acc[i][u]);
        }
    }
    for (int i = 0; i < IR; ++i) {
        const V s = S::set1(inv[i]);
        for (int u = 0; u < DV; ++u) S::storeu(o + i * o_ss + d0 + u * S::W, S::mul(acc[i][u], s));
    }
}

template <int IR>
struct PvTile {
    const float* p;
    int64_t ldp;
    const float* inv;
    const float* v;
    int64_t v_ss, Sk, d0;
    float* o;
    int64_t o_ss;
    template <int DV>
    void run() const { attn_pv_tile<IR, DV>(p, ldp, inv, v, v_ss, Sk, d0, o, o_ss); }
};

template <int IR>
static inline void attn_pv_rows(const float* p, int64_t ldp, const float* inv, const float* v, int64_t v_ss,
                                int64_t Sk, int64_t D, float* o, int64_t o_ss) {
    constexpr int DV = attn_vectors<IR>();
    const int64_t dv = D / S::W * S::W;  // vectorised head dims
    int64_t d0 = 0;
    for (; d0 + DV * S::W <= dv; d0 += DV * S::W) attn_pv_tile<IR, DV>(p, ldp, inv, v, v_ss, Sk, d0, o, o_ss);
    if (d0 < dv) with_remainder(static_cast<int>((dv - d0) / S::W), PvTile<IR>{p, ldp, inv, v, v_ss, Sk, d0, o, o_ss});
    for (d0 = dv; d0 < D; ++d0)  // head dims that are not a multiple of the vector width
        for (int i = 0; i < IR; ++i) {
            float s = 0.0f;
            for (int64_t j = 0; j < Sk; ++j) s += p[i * ldp + j] * v[j * v_ss + d0];
            o[i * o_ss + d0] = s * inv[i];
        }
}

// Query rows per register tile: 8 where 32 vector registers allow (fewer loads per FMA), else 4; tails take 4, then 1.
constexpr int kAttnRows = S::NREG >= 32 ? 8 : 4;

// Scale, mask and softmax of one score row in place (entries [0, Sk)); returns 1 / (sum of exponentials), or 0
// for a row with no visible key (its output is then zero).
static inline float attn_softmax_row(float* row, int64_t Sk, int64_t visible, float scale, const void* mask,
                                     bool mask_is_bool) {
    using V = typename S::V;
    const float* madd = mask_is_bool ? nullptr : static_cast<const float*>(mask);
    const uint8_t* mbool = mask_is_bool ? static_cast<const uint8_t*>(mask) : nullptr;
    const float ninf = -std::numeric_limits<float>::infinity();
    int64_t j = 0;
    const V vs = S::set1(scale);
    if (madd) {
        for (; j + S::W <= visible; j += S::W)
            S::storeu(row + j, S::fmadd(S::loadu(row + j), vs, S::loadu(madd + j)));
    } else {
        for (; j + S::W <= visible; j += S::W) S::storeu(row + j, S::mul(S::loadu(row + j), vs));
    }
    for (; j < visible; ++j) row[j] = row[j] * scale + (madd ? madd[j] : 0.0f);
    if (mbool)
        for (j = 0; j < visible; ++j)
            if (!mbool[j]) row[j] = ninf;
    for (j = visible; j < Sk; ++j) row[j] = 0.0f;  // causally hidden keys take no weight

    V vm = S::set1(ninf);
    for (j = 0; j + S::W <= visible; j += S::W) vm = S::max(vm, S::loadu(row + j));
    float m = S::reduce_max(vm);
    for (; j < visible; ++j) m = row[j] > m ? row[j] : m;
    if (!(m > ninf)) {  // nothing visible (or NaN scores): zero weights
        for (j = 0; j < visible; ++j) row[j] = 0.0f;
        return 0.0f;
    }
    const V mv = S::set1(m);
    V vsum = S::zero();
    for (j = 0; j + S::W <= visible; j += S::W) {
        const V e = vexp<S>(S::sub(S::loadu(row + j), mv));
        S::storeu(row + j, e);
        vsum = S::add(vsum, e);
    }
    float sum = S::reduce(vsum);
    for (; j < visible; ++j) {
        row[j] = std::exp(row[j] - m);
        sum += row[j];
    }
    return 1.0f / sum;
}

static void attention_kernel(const AttnArgs& a) {
    constexpr int64_t QB = 16;  // queries per block: 16 x Sk scores stay in L1/L2
    const int64_t nqb = (a.Sq + QB - 1) / QB;
    // A task is a run of query blocks of one head, so that the head's keys are transposed once per task; runs are
    // split only as far as needed to give every thread a few tasks.
    const int64_t heads = a.B * a.H;
    const int64_t per_task = imax(1, imin(nqb, heads * nqb / (4 * imax(1, a.nthreads))));
    const int64_t runs = (nqb + per_task - 1) / per_task, ntasks = heads * runs;
    const int64_t group = a.H / a.Hk;
    const int64_t skp = round_up(a.Sk, S::W);
#pragma omp parallel num_threads(a.nthreads) if (a.nthreads > 1 && ntasks > 1)
    {
        static thread_local std::vector<float> scratch;
        const size_t need = static_cast<size_t>(a.D * skp + QB * skp + QB);
        if (scratch.size() < need) scratch.resize(need);
        float* kt = scratch.data();
        float* sc = kt + a.D * skp;
        float* inv = sc + QB * skp;
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntasks; ++task) {
            const int64_t run = task % runs, bh = task / runs, h = bh % a.H, b = bh / a.H, hk = h / group;
            const float* k = a.k + b * a.k_sb + hk * a.k_sh;
            for (int64_t j = 0; j < a.Sk; ++j)
                for (int64_t d = 0; d < a.D; ++d) kt[d * skp + j] = k[j * a.k_ss + d];
            for (int64_t d = 0; d < a.D; ++d)
                for (int64_t j = a.Sk; j < skp; ++j) kt[d * skp + j] = 0.0f;
            const float* v = a.v + b * a.v_sb + hk * a.v_sh;
            const int64_t qb1 = imin(nqb, (run + 1) * per_task);
            for (int64_t qb = run * per_task; qb < qb1; ++qb) {
                const int64_t q0 = qb * QB, rows = imin(QB, a.Sq - q0);
                const float* q = a.q + b * a.q_sb + h * a.q_sh + q0 * a.q_ss;
                int64_t i = 0;
                for (; i + kAttnRows <= rows; i += kAttnRows)
                    attn_scores_rows<kAttnRows>(q + i * a.q_ss, a.q_ss, kt, skp, a.D, skp, sc + i * skp, skp);
                for (; i + 4 <= rows; i += 4)
                    attn_scores_rows<4>(q + i * a.q_ss, a.q_ss, kt, skp, a.D, skp, sc + i * skp, skp);
                for (; i < rows; ++i) attn_scores_rows<1>(q + i * a.q_ss, a.q_ss, kt, skp, a.D, skp, sc + i * skp, skp);

                for (i = 0; i < rows; ++i) {
                    const int64_t qi = q0 + i;
                    const int64_t visible = a.causal ? imax(0, imin(a.Sk, qi + (a.Sk - a.Sq) + 1)) : a.Sk;
                    const void* mrow = nullptr;
                    if (a.mask) {
                        const int64_t off = b * a.m_sb + h * a.m_sh + qi * a.m_sq;
                        mrow = a.mask_is_bool ? static_cast<const void*>(static_cast<const uint8_t*>(a.mask) + off)
                                              : static_cast<const void*>(static_cast<const float*>(a.mask) + off);
                    }
                    inv[i] = attn_softmax_row(sc + i * skp, a.Sk, visible, a.scale, mrow, a.mask_is_bool);
                }

                float* o = a.o + b * a.o_sb + h * a.o_sh + q0 * a.o_ss;
                i = 0;
                for (; i + kAttnRows <= rows; i += kAttnRows)
                    attn_pv_rows<kAttnRows>(sc + i * skp, skp, inv + i, v, a.v_ss, a.Sk, a.D, o + i * a.o_ss, a.o_ss);
                for (; i + 4 <= rows; i += 4)
                    attn_pv_rows<4>(sc + i * skp, skp, inv + i, v, a.v_ss, a.Sk, a.D, o + i * a.o_ss, a.o_ss);
                for (; i < rows; ++i) attn_pv_rows<1>(sc + i * skp, skp, inv + i, v, a.v_ss, a.Sk, a.D, o + i * a.o_ss, a.o_ss);
            }
        }
    }
}
