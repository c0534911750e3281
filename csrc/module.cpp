// module.cpp: the Python binding of the C++ core (sparsa._C). Arrays arrive through DLPack (torch tensors,
// numpy arrays) without a copy. This file checks every argument a kernel relies on, so a wrong call raises a
// ValueError instead of reading out of bounds; the O(nnz) structural checks (validate_*) run once when a
// packed weight is built or loaded, not on every call.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <omp.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "registry.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace sparsa {
namespace {

using Array = nb::ndarray<nb::device::cpu>;

const char* format_name(Format f) {
    switch (f) {
        case Format::BSR: return "bsr";
        case Format::BITMASK: return "bitmask";
        case Format::NM: return "nm";
        case Format::CSR: return "csr";
    }
    return "?";
}

const char* wdtype_name(WDType d) { return d == WDType::F32 ? "float32" : "bfloat16"; }

bool is_f32(const Array& a) { return a.dtype() == nb::dtype<float>(); }
bool is_bf16(const Array& a) {
    return a.dtype().code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) && a.dtype().bits == 16 &&
           a.dtype().lanes == 1;
}

[[noreturn]] void fail(const std::string& msg) { throw nb::value_error(msg.c_str()); }

void require(bool ok, const std::string& msg) {
    if (!ok) fail(msg);
}

void require_contiguous_1d(const Array& a, const char* name) {
    require(a.ndim() == 1, std::string(name) + " must be 1-D, got " + std::to_string(a.ndim()) + "-D");
    require(a.shape(0) <= 1 || a.stride(0) == 1, std::string(name) + " must be contiguous");
}

// A 2-D fp32 matrix whose rows are contiguous (any row stride); returns the row stride.
// Per call, like kernel_at and PackedHandle::run: these build their messages only on failure (built eagerly, the
// strings cost ~1 us per call, a third of the core's own share of a small call).
int64_t require_rows(const Array& a, const char* name) {
    if (!is_f32(a)) fail(std::string(name) + " must be float32");
    if (a.ndim() != 2)
        fail(std::string(name) + " must be 2-D (tokens, features), got " + std::to_string(a.ndim()) + "-D");
    if (a.shape(1) > 1 && a.stride(1) != 1)
        fail(std::string(name) + " rows must be contiguous (stride 1 along features)");
    return a.shape(0) <= 1 ? static_cast<int64_t>(a.shape(1)) : static_cast<int64_t>(a.stride(0));
}

const KernelInfo& kernel_at(int index) {
    const auto& reg = kernel_registry();
    if (index < 0 || index >= static_cast<int>(reg.size())) fail("unknown kernel index " + std::to_string(index));
    const KernelInfo& k = reg[index];
    if (!isa_available(k.isa))
        fail(std::string("kernel ") + k.name + " needs " + isa_name(k.isa) + ", which this CPU does not support");
    return k;
}

int num_threads() { return omp_get_max_threads(); }

// Scratch for the kernels (transposed or padded activations), one per calling thread so that concurrent calls
// from several Python threads never share it.
// 64-byte aligned, so that the kernels' full-width loads of aligned rows never straddle two cache lines.
float* workspace(int64_t n, int64_t in, int nthreads) {
    static thread_local std::vector<float> buf;
    const int64_t need = spmm_work_floats(n, in, nthreads) + 16;
    if (static_cast<int64_t>(buf.size()) < need) buf.resize(static_cast<size_t>(need));
    const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
    return reinterpret_cast<float*>((p + 63) & ~uintptr_t{63});
}

// A packed weight as the kernels see it: pointers into the caller's arrays, checked once here, plus references
// that keep those arrays alive. Building it costs one DLPack import per array (~2 us each for torch tensors);
// a call then only imports x and y, so a layer's fixed cost per call stays a few microseconds.
class PackedHandle {
  public:
    PackedHandle(const std::string& format, int64_t in_features, int64_t out_features, Array values,
                 std::optional<Array> row_ptr, std::optional<Array> col_idx, std::optional<Array> mask, int br,
                 int bc, int nm_n, int nm_m, std::optional<Array> bias)
        : values_(values), row_ptr_(row_ptr), col_idx_(col_idx), mask_(mask), bias_(bias) {
        SpmmArgs& a = base_;
        a = SpmmArgs{};
        require(in_features >= 0 && out_features >= 0, "shape must be non-negative");
        a.in = in_features;
        a.out = out_features;
        require_contiguous_1d(values, "values");
        if (is_f32(values)) a.wdtype = WDType::F32;
        else if (is_bf16(values)) a.wdtype = WDType::BF16;
        else fail("values must be float32 or bfloat16");
        a.values = values.data();
        a.n_values = static_cast<int64_t>(values.shape(0));
        if (bias) {
            require(is_f32(*bias), "bias must be float32");
            require_contiguous_1d(*bias, "bias");
            require(static_cast<int64_t>(bias->shape(0)) == out_features, "bias must have out_features elements");
            a.bias = static_cast<const float*>(bias->data());
        }
        if (format == "csr") {  // CSR is BSR with 1 x 1 blocks, run by its own kernels
            br = bc = 1;
        }
        if (format == "bsr" || format == "csr") {
            format_ = format == "csr" ? Format::CSR : Format::BSR;
            require(br > 0 && bc > 0, "block shape must be positive");
            require(out_features % br == 0 && in_features % bc == 0, "the block shape must divide the weight shape");
            const int64_t nbr = out_features / br;
            require(row_ptr && col_idx, "the " + format + " format needs row_ptr and col_idx");
            require_contiguous_1d(*row_ptr, "row_ptr");
            require(row_ptr->dtype() == nb::dtype<int64_t>(), "row_ptr must be int64");
            require(static_cast<int64_t>(row_ptr->shape(0)) == nbr + 1,
                    "row_ptr must have out_features / block_rows + 1 entries");
            require_contiguous_1d(*col_idx, "col_idx");
            if (col_idx->dtype() == nb::dtype<uint16_t>()) a.idx_type = IdxType::U16;
            else if (col_idx->dtype() == nb::dtype<int32_t>()) a.idx_type = IdxType::I32;
            else fail("col_idx must be uint16 or int32");
            const int64_t* rp = static_cast<const int64_t*>(row_ptr->data());
            const int64_t nnzb = static_cast<int64_t>(col_idx->shape(0));
            require(rp[0] == 0 && rp[nbr] == nnzb, "row_ptr must start at 0 and end at the number of blocks");
            require(a.n_values >= nnzb * br * bc, "values is shorter than blocks x block size");
            a.row_ptr = rp;
            a.col_idx = col_idx->data();
            a.br = br;
            a.bc = bc;
        } else if (format == "bitmask" || format == "nm") {
            format_ = format == "nm" ? Format::NM : Format::BITMASK;
            const int64_t words = (in_features + 63) / 64;
            require(mask.has_value(), "the bitmask and nm formats need a mask");
            require(mask->dtype() == nb::dtype<uint64_t>() && mask->ndim() == 2, "mask must be a 2-D uint64 array");
            require(static_cast<int64_t>(mask->shape(0)) == out_features &&
                        static_cast<int64_t>(mask->shape(1)) == words,
                    "mask must have shape (out_features, ceil(in_features / 64))");
            require(out_features == 0 || (mask->stride(1) == 1 && mask->stride(0) == words), "mask must be contiguous");
            a.mask = static_cast<const uint64_t*>(mask->data());
            a.mask_words = words;
            if (format_ == Format::BITMASK) {
                require(row_ptr.has_value(), "the bitmask format needs row_ptr");
                require_contiguous_1d(*row_ptr, "row_ptr");
                require(row_ptr->dtype() == nb::dtype<int64_t>(), "row_ptr must be int64");
                require(static_cast<int64_t>(row_ptr->shape(0)) == out_features + 1,
                        "row_ptr must have out_features + 1 entries");
                const int64_t* rp = static_cast<const int64_t*>(row_ptr->data());
                require(rp[0] == 0 && rp[out_features] <= a.n_values, "row_ptr must start at 0 and end within values");
                a.row_ptr = rp;
            } else {
                require(nm_n > 0 && nm_n < nm_m && nm_m <= 32, "N:M needs 0 < n < m <= 32");
                require(in_features % nm_m == 0, "m must divide in_features");
                require(a.n_values >= out_features * (in_features / nm_m) * nm_n,
                        "values must hold n of every m weights of every row");
                a.nm_n = nm_n;
                a.nm_m = nm_m;
            }
        } else {
            fail("unknown format '" + format + "': allowed values are bsr, bitmask, nm, csr");
        }
    }

    // y = x W^T + bias with registry kernel `kernel`; x (n, in) and y (n, out) float32 with contiguous rows.
    // act: 0 none, 1 GELU (erf form) applied after the bias in the kernel's output stage.
    void run(int kernel, const Array& x, const Array& y, int threads, int act) const {
        const int64_t ldx = require_rows(x, "x"), ldy = require_rows(y, "y");
        const int64_t n = static_cast<int64_t>(x.shape(0));
        if (static_cast<int64_t>(x.shape(1)) != base_.in)
            fail("x has " + std::to_string(x.shape(1)) + " features, the weight expects " + std::to_string(base_.in));
        if (static_cast<int64_t>(y.shape(0)) != n || static_cast<int64_t>(y.shape(1)) != base_.out)
            fail("y must have shape (" + std::to_string(n) + ", " + std::to_string(base_.out) + ")");
        launch(kernel, static_cast<const float*>(x.data()), n, ldx, static_cast<float*>(y.data()), ldy, threads, act);
    }

    // The same product for x and y given as addresses (torch's data_ptr()) with their shapes and row strides: the
    // per-call path of sparsa.kernels.Prepared, whose caller has checked dtype, device and unit feature stride.
    // Two numpy views and their buffer imports cost ~1 us more per call than these plain integers. The shapes and
    // strides are checked here as in run(), so that a wrong shape fails instead of reading past x or writing
    // past y.
    void run_at(int kernel, uintptr_t x, int64_t n, int64_t in, int64_t ldx, uintptr_t y, int64_t ny, int64_t out,
                int64_t ldy, int threads, int act) const {
        if (n < 0) fail("x must have a non-negative number of rows, got " + std::to_string(n));
        if (in != base_.in)
            fail("x has " + std::to_string(in) + " features, the weight expects " + std::to_string(base_.in));
        if (ny != n || out != base_.out)
            fail("y must have shape (" + std::to_string(n) + ", " + std::to_string(base_.out) + "), got (" +
                 std::to_string(ny) + ", " + std::to_string(out) + ")");
        // x's rows may overlap (an expanded tensor repeats one row), y's may not
        if (n > 1 && (ldx < 0 || ldy < base_.out))
            fail("row strides: ldx must be >= 0 and ldy >= out (" + std::to_string(base_.out) + "), got ldx " +
                 std::to_string(ldx) + ", ldy " + std::to_string(ldy));
        if (n > 0 && ((base_.in > 0 && x == 0) || (base_.out > 0 && y == 0))) fail("x and y must not be null");
        launch(kernel, reinterpret_cast<const float*>(x), n, n > 1 ? ldx : base_.in,
               reinterpret_cast<float*>(y), n > 1 ? ldy : base_.out, threads, act);
    }

  private:
    void launch(int kernel, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy, int threads,
                int act) const {
        const KernelInfo& k = kernel_at(kernel);
        if (k.format != format_) fail(std::string(k.name) + " does not run the " + format_name(format_) + " format");
        if (k.wdtype != base_.wdtype)
            fail(std::string(k.name) + " takes " + wdtype_name(k.wdtype) + " values, this weight has " +
                 wdtype_name(base_.wdtype));
        if (k.br != 0 && (k.br != base_.br || k.bc != base_.bc))
            fail(std::string(k.name) + " handles " + std::to_string(k.br) + "x" + std::to_string(k.bc) +
                 " blocks, not " + std::to_string(base_.br) + "x" + std::to_string(base_.bc));
        if (act != 0 && act != 1) fail("act must be 0 (none) or 1 (gelu), got " + std::to_string(act));
        if (n == 0 || base_.out == 0) return;
        SpmmArgs a = base_;
        a.ldx = ldx;
        a.ldy = ldy;
        a.n = n;
        a.x = x;
        a.y = y;
        a.nthreads = threads > 0 ? threads : num_threads();
        a.work = workspace(a.n, a.in, a.nthreads);
        a.act = static_cast<Act>(act);
        nb::gil_scoped_release release;
        k.fn(a);
    }

    SpmmArgs base_;
    Format format_ = Format::BSR;
    // keep the arrays the pointers in base_ point into alive
    Array values_;
    std::optional<Array> row_ptr_, col_idx_, mask_, bias_;
};

// ---- O(nnz) structural validation, run once per packed weight ----

void validate_bsr(const Array& row_ptr, const Array& col_idx, int64_t n_block_cols) {
    require(row_ptr.dtype() == nb::dtype<int64_t>(), "row_ptr must be int64");
    require_contiguous_1d(row_ptr, "row_ptr");
    require_contiguous_1d(col_idx, "col_idx");
    const int64_t* rp = static_cast<const int64_t*>(row_ptr.data());
    const int64_t nbr = static_cast<int64_t>(row_ptr.shape(0)) - 1, nnzb = static_cast<int64_t>(col_idx.shape(0));
    require(nbr >= 0 && rp[0] == 0 && rp[nbr] == nnzb, "row_ptr must start at 0 and end at the number of blocks");
    const bool u16 = col_idx.dtype() == nb::dtype<uint16_t>();
    require(u16 || col_idx.dtype() == nb::dtype<int32_t>(), "col_idx must be uint16 or int32");
    // In the O(nnz) loops below the message is built only on failure: building it for every passing check
    // (std::to_string and concatenation) cost 6 ms on a 1536 x 384 weight, against 0.08 ms for the checks.
    for (int64_t r = 0; r < nbr; ++r)  // all offsets first, so that no entry is read out of bounds below
        if (rp[r] > rp[r + 1]) fail("row_ptr decreases at block-row " + std::to_string(r));
    for (int64_t r = 0; r < nbr; ++r) {
        int64_t prev = -1;
        for (int64_t b = rp[r]; b < rp[r + 1]; ++b) {
            const int64_t c = u16 ? static_cast<const uint16_t*>(col_idx.data())[b]
                                  : static_cast<const int32_t*>(col_idx.data())[b];
            if (!(c > prev && c < n_block_cols))
                fail("col_idx out of order or out of range in block-row " + std::to_string(r) + " (entry " +
                     std::to_string(b) + ")");
            prev = c;
        }
    }
}

void validate_bitmask(const Array& mask, std::optional<Array> row_ptr, int64_t in_features, int nm_n, int nm_m) {
    require(mask.dtype() == nb::dtype<uint64_t>() && mask.ndim() == 2, "mask must be a 2-D uint64 array");
    const int64_t rows = static_cast<int64_t>(mask.shape(0)), words = static_cast<int64_t>(mask.shape(1));
    require(words == (in_features + 63) / 64, "mask must have ceil(in_features / 64) words per row");
    require(rows == 0 || (mask.stride(1) == 1 && mask.stride(0) == words), "mask must be contiguous");
    const uint64_t* m = static_cast<const uint64_t*>(mask.data());
    const int tail = static_cast<int>(in_features % 64);
    const uint64_t pad = tail ? ~((uint64_t{1} << tail) - 1) : 0;
    const int64_t* rp = nullptr;
    if (row_ptr) {
        require(row_ptr->dtype() == nb::dtype<int64_t>(), "row_ptr must be int64");
        require_contiguous_1d(*row_ptr, "row_ptr");
        require(static_cast<int64_t>(row_ptr->shape(0)) == rows + 1, "row_ptr must have rows + 1 entries");
        rp = static_cast<const int64_t*>(row_ptr->data());
        require(rp[0] == 0, "row_ptr must start at 0");
    } else {
        require(nm_n > 0 && nm_n < nm_m && nm_m <= 32 && in_features % nm_m == 0, "invalid N:M parameters");
    }
    for (int64_t r = 0; r < rows; ++r) {
        const uint64_t* mr = m + r * words;
        if (words > 0 && (mr[words - 1] & pad) != 0)
            fail("mask has bits set past in_features in row " + std::to_string(r));
        if (rp) {
            int64_t count = 0;
            for (int64_t w = 0; w < words; ++w) count += __builtin_popcountll(mr[w]);
            if (rp[r + 1] - rp[r] != count)
                fail("row_ptr does not match the number of mask bits in row " + std::to_string(r));
        } else {
            for (int64_t g = 0; g < in_features; g += nm_m) {
                int count = 0;
                for (int64_t k = g; k < g + nm_m; ++k) count += (mr[k >> 6] >> (k & 63)) & 1;
                if (count != nm_n)
                    fail("group at column " + std::to_string(g) + " of row " + std::to_string(r) + " keeps " +
                         std::to_string(count) + " weights, N:M needs exactly " + std::to_string(nm_n));
            }
        }
    }
}

// ---- attention ----

// Element strides of a 4-D fp32/bool array with a contiguous last dimension and no negative strides.
void require_4d(const Array& a, const char* name) {
    require(a.ndim() == 4, std::string(name) + " must be 4-D (batch, heads, seq, dim), got " + std::to_string(a.ndim()) + "-D");
    for (int d = 0; d < 4; ++d) require(a.stride(d) >= 0, std::string(name) + " must not have negative strides");
    require(a.shape(3) <= 1 || a.stride(3) == 1, std::string(name) + " must be contiguous along its last dimension");
}

void attention(const Array& q, const Array& k, const Array& v, const Array& o, std::optional<Array> mask, float scale,
               bool causal, int threads) {
    require_4d(q, "q");
    require_4d(k, "k");
    require_4d(v, "v");
    require_4d(o, "o");
    for (const Array* t : {&q, &k, &v, &o}) require(is_f32(*t), "q, k, v and o must be float32");
    AttnArgs a{};
    a.B = static_cast<int64_t>(q.shape(0));
    a.H = static_cast<int64_t>(q.shape(1));
    a.Sq = static_cast<int64_t>(q.shape(2));
    a.D = static_cast<int64_t>(q.shape(3));
    a.Hk = static_cast<int64_t>(k.shape(1));
    a.Sk = static_cast<int64_t>(k.shape(2));
    require(static_cast<int64_t>(k.shape(0)) == a.B && static_cast<int64_t>(k.shape(3)) == a.D,
            "k must have the batch size and head dimension of q");
    for (int d = 0; d < 4; ++d) require(v.shape(d) == k.shape(d), "v must have the shape of k");
    for (int d = 0; d < 4; ++d) require(o.shape(d) == q.shape(d), "o must have the shape of q");
    require(a.Hk > 0 && a.H % a.Hk == 0, "the number of query heads must be a multiple of the key/value heads");
    if (a.B == 0 || a.H == 0 || a.Sq == 0 || a.D == 0) return;
    require(a.Sk > 0, "attention needs at least one key");
    auto st = [](const Array& t, int d) { return static_cast<int64_t>(t.stride(d)); };
    a.q = static_cast<const float*>(q.data());
    a.k = static_cast<const float*>(k.data());
    a.v = static_cast<const float*>(v.data());
    a.o = static_cast<float*>(o.data());
    a.q_sb = st(q, 0), a.q_sh = st(q, 1), a.q_ss = st(q, 2);
    a.k_sb = st(k, 0), a.k_sh = st(k, 1), a.k_ss = st(k, 2);
    a.v_sb = st(v, 0), a.v_sh = st(v, 1), a.v_ss = st(v, 2);
    a.o_sb = st(o, 0), a.o_sh = st(o, 1), a.o_ss = st(o, 2);
    if (mask) {
        require_4d(*mask, "mask");
        const bool is_bool = mask->dtype() == nb::dtype<bool>();
        require(is_bool || is_f32(*mask), "mask must be float32 (added to the scores) or bool (true = attend)");
        require(static_cast<int64_t>(mask->shape(0)) == a.B && static_cast<int64_t>(mask->shape(1)) == a.H &&
                    static_cast<int64_t>(mask->shape(2)) == a.Sq && static_cast<int64_t>(mask->shape(3)) == a.Sk,
                "mask must have shape (batch, heads, q_len, k_len) (broadcast dimensions expanded)");
        a.mask = mask->data();
        a.mask_is_bool = is_bool;
        a.m_sb = st(*mask, 0), a.m_sh = st(*mask, 1), a.m_sq = st(*mask, 2);
    }
    a.causal = causal;
    a.scale = scale;
    a.nthreads = threads > 0 ? threads : num_threads();
    nb::gil_scoped_release release;
    best_attention().fn(a);
}

nb::dict features_dict() {
    const CpuFeatures& f = cpu_features();
    nb::dict d;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["f16c"] = f.f16c;
    d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw;
    d["avx512vl"] = f.avx512vl;
    d["avx512dq"] = f.avx512dq;
    d["avx512bf16"] = f.avx512bf16;
    d["neon"] = f.neon;
    return d;
}

nb::list kernels_list() {
    nb::list out;
    const auto& reg = kernel_registry();
    for (size_t i = 0; i < reg.size(); ++i) {
        const KernelInfo& k = reg[i];
        nb::dict d;
        d["index"] = static_cast<int>(i);
        d["name"] = k.name;
        d["format"] = format_name(k.format);
        d["isa"] = isa_name(k.isa);
        d["weight_dtype"] = wdtype_name(k.wdtype);
        d["block"] = k.br ? nb::cast(nb::make_tuple(k.br, k.bc)) : nb::none();
        d["available"] = isa_available(k.isa);
        d["batched_only"] = k.batched_only;
        out.append(d);
    }
    return out;
}

}  // namespace
}  // namespace sparsa

NB_MODULE(_C, m) {
    using namespace sparsa;
    m.doc() = "sparsa C++ core: sparse x dense kernels with run-time ISA dispatch";
    m.def("cpu_features", &features_dict, "Instruction sets detected on this CPU.");
    m.def("kernels", &kernels_list,
          "Every compiled kernel: name, format, isa, weight dtype, block, available, batched_only.");
    m.attr("DECODE_MAX_N") = kDecodeMaxN;
    m.def("get_num_threads", &num_threads, "OpenMP's default team size (the threads a call with threads=0 uses).");
    nb::class_<PackedHandle>(m, "PackedHandle",
                             "A packed weight (plus bias) checked once, ready for repeated kernel calls.")
        .def(nb::init<const std::string&, int64_t, int64_t, Array, std::optional<Array>, std::optional<Array>,
                      std::optional<Array>, int, int, int, int, std::optional<Array>>(),
             "format"_a, "in_features"_a, "out_features"_a, "values"_a, "row_ptr"_a.none() = nb::none(),
             "col_idx"_a.none() = nb::none(), "mask"_a.none() = nb::none(), "br"_a = 0, "bc"_a = 0, "nm_n"_a = 0,
             "nm_m"_a = 0, "bias"_a.none() = nb::none())
        .def("run", &PackedHandle::run, "kernel"_a, "x"_a, "y"_a, "threads"_a = 0, "act"_a = 0,
             "y = act(x W^T + bias) with registry kernel `kernel` (x: (n, in), y: (n, out), float32 rows "
             "contiguous; act 0 none, 1 GELU).")
        .def("run_at", &PackedHandle::run_at, "kernel"_a, "x"_a, "n"_a, "in_features"_a, "ldx"_a, "y"_a, "y_rows"_a,
             "out_features"_a, "ldy"_a, "threads"_a = 0, "act"_a = 0,
             "run() for x and y given as addresses (data_ptr()) with their shapes and row strides, for callers that "
             "checked dtype, device and unit feature stride (sparsa.kernels.Prepared).");
    m.def("attention", &attention, "q"_a, "k"_a, "v"_a, "o"_a, "mask"_a.none() = nb::none(), "scale"_a = 1.0f,
          "causal"_a = false, "threads"_a = 0,
          "o = softmax(q k^T * scale + mask) v for inference: q, o (B, H, Sq, D), k, v (B, Hk, Sk, D) float32 at any "
          "non-negative strides with a contiguous last dimension; mask (B, H, Sq, Sk) float32 or bool.");
    m.def("attention_isa", []() { return std::string(isa_name(best_attention().isa)); },
          "The instruction set of the attention kernel this CPU runs.");
    m.def("validate_bsr", &validate_bsr, "row_ptr"_a, "col_idx"_a, "n_block_cols"_a);
    m.def("validate_bitmask", &validate_bitmask, "mask"_a, "row_ptr"_a.none(), "in_features"_a, "nm_n"_a = 0,
          "nm_m"_a = 0);
}
