// levant::fused_step -- every decoder layer of one engine step, in one call: the step's
// tokens (any mix of sequences decoding one token and prefill chunks) through
// Transformer.hidden_states with paged attention and quantized linears (levant::q4_matmul
// or levant::q8_matmul layouts), the same arithmetic, back to back in C++. A step of a
// small model run op by op spends as much time between kernels as in them (a Python call,
// a dispatch and an allocation per norm, rotary, SwiGLU and residual, ~270 of them per
// step for 30 layers, and for a prefill chunk passes over (T, 1536) tensors); here each of
// those is one loop over the rows, and the matmuls and attention are the ops' own kernels.
//
// h            (T, D) float32        the tokens' embeddings, sequence after sequence
// rope         (T, hd / 2, 2) float32  cos and sin of each pair's angle (rotary_table)
// weights      per layer: attention_norm (D), wqkv packed and scales, wo packed and scales,
//              ffn_norm (D), w13 packed and scales, w2 packed and scales; then the final
//              norm (D). A linear is q4 (4-d packed, bf16 scales) or q8 (3-d, float32).
// dense        per layer, for wqkv, wo, w13 and w2: the linear's dense bf16 copy (N, K) --
//              a oneDNN-packed weight for mkldnn::_linear_pointwise, or a plain matrix --
//              or an empty tensor where it has none; dense and dense_above both empty
//              lists: no layer switches (a step below every switch passes no copies)
// dense_above  per layer, for the same four: the row counts past which a step multiplies
//              by the dense copy (activations rounded to bf16) instead of the quantized
//              kernel, as the layer's forward does (tune_dense_above chooses them: with
//              AMX, oneDNN's bf16 tiles beat the int8 kernels from a few dozen rows)
// kv_cache     per layer (S, 2 * KVH, hd), float32 or bfloat16: each token's key and value
//              are written at its position's slot, then attention reads the cache in place
// seqs         (B, 3) int64: per sequence, its first row, its new tokens n (rows first ..
//              first + n - 1, the rows of all sequences in order covering 0 .. T - 1) and
//              the positions already cached c (its tokens are at positions c .. c + n - 1)
// block_tables (B, N) int64: position p of sequence b is in slot
//              block_tables[b][p / block_size] * block_size + p % block_size
// window       the sliding window (0: none): the token at p sees [max(0, p - window + 1), p]
// -> (T, D) float32: the final-normed hidden states.
//
// Layer: x = norm(h); q, k, v = x Wqkv (rows: queries, keys, values); rotate q and k
// (interleaved pairs); write k, v; h += attention(q) Wo; x = norm(h);
// gate, up = x W13; h += (silu(gate) * up) W2. Attention: the sequences decoding one token
// together (levant::paged_decode_attention's kernel), each longer chunk on its own
// (levant::paged_prefill_attention's).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/linear.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "ops.h"
#include "vec.h"

namespace {

using levant_kernels::check_q4_weight;
using levant_kernels::check_q8_weight;

constexpr int64_t PER_LAYER = 10;  // tensors in `weights` per layer

const float* norm_weight(const at::Tensor& w, int64_t D) {
  TORCH_CHECK(w.dim() == 1 && w.size(0) == D && w.scalar_type() == at::kFloat && w.is_contiguous(),
              "norm weights: contiguous (D,) float32");
  return w.data_ptr<float>();
}

// f(r) for each row: inline when the rows are few (a parallel region costs more than them).
template <typename F>
void for_rows(int64_t R, int64_t width, F&& f) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1));
  at::parallel_for(0, R, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(r);
  });
}

// out = x / sqrt(mean(x^2) + eps) * w, per row (as F.rms_norm in float32).
void rms_norm(const float* x, const float* w, float* out, int64_t R, int64_t D, float eps) {
  for_rows(R, D, [&](int64_t r) {
    const float* xr = x + r * D;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < D; ++i) ss += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(D) + eps);
    float* o = out + r * D;
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) o[i] = xr[i] * inv * w[i];
  });
}

// h += y over R rows of D.
void add_rows(float* h, const float* y, int64_t R, int64_t D) {
  for_rows(R, D, [&](int64_t r) {
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) h[r * D + i] += y[r * D + i];
  });
}

// a = silu(gate) * up over n values (vector exp where there is one).
void swiglu(const float* gate, const float* up, float* a, int64_t n) {
  int64_t i = 0;
#if defined(LEVANT_ATTN_SIMD)
  const levant_kernels::vec one = levant_kernels::vset1(1.f), zero = levant_kernels::vzero();
  for (; i + levant_kernels::W <= n; i += levant_kernels::W) {
    using namespace levant_kernels;
    const vec g = vload(gate + i);
    vstore(a + i, vmul(vdiv(g, vadd(one, vexp(vsub(zero, g)))), vload(up + i)));
  }
#endif
  for (; i < n; ++i) a[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

template <typename T>
void store(T* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

// y (M, N) float32 = bf16(x) (M, K) @ w^T for a dense bf16 copy w: oneDNN's matmul on its
// packed weight (what PackedBF16 calls from Python), or at::linear on a plain matrix. The
// casts are this file's row loops (ATen's copies took an eighth of a 512-token prefill).
// oneDNN's matmul runs M rounded up to ROW_STEP (zero rows past M), as PackedBF16 does:
// its kernels are generated per row count, once, and a row count first seen inside a step
// cost that step the generation (SmolLM2's four shapes: 1.5 ms at 28 rows, 8.7 ms at 236
// on a 2-core Xeon), where these few counts are generated at warm-up.
constexpr int64_t ROW_STEP = 16;

void dense_matmul(const float* x, int64_t M, int64_t K, const at::Tensor& w, int64_t N, float* y) {
  const int64_t MP = w.is_mkldnn() ? (M + ROW_STEP - 1) / ROW_STEP * ROW_STEP : M;
  at::Tensor xb = at::empty({MP, K}, at::TensorOptions().dtype(at::kBFloat16));
  c10::BFloat16* xbp = xb.data_ptr<c10::BFloat16>();
  if (MP > M) std::memset(static_cast<void*>(xbp + M * K), 0, (MP - M) * K * sizeof(c10::BFloat16));
  for_rows(M, K, [&](int64_t r) {
    const float* xr = x + r * K;
    c10::BFloat16* o = xbp + r * K;
    int64_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
    for (; i + 16 <= K; i += 16)  // round to nearest even, as the scalar conversion
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(xr + i)));
#endif
    store(o + i, xr + i, K - i);
  });
  at::Tensor out;
  if (w.is_mkldnn()) {
    static const c10::OperatorHandle op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    torch::jit::Stack stack{xb, w, c10::IValue(), std::string("none"),
                            c10::List<std::optional<at::Scalar>>(), c10::IValue()};
    op.callBoxed(&stack);
    out = stack[0].toTensor();
  } else {
    out = at::linear(xb, w);
  }
  TORCH_CHECK(out.scalar_type() == at::kBFloat16 && out.is_contiguous() && out.numel() == MP * N,
              "the dense matmul gave an unexpected result");
  const uint16_t* ob = reinterpret_cast<const uint16_t*>(out.data_ptr<c10::BFloat16>());
  for_rows(M, N, [&](int64_t r) {
    float* yr = y + r * N;
    const uint16_t* o = ob + r * N;
#pragma omp simd
    for (int64_t i = 0; i < N; ++i) {
      const uint32_t bits = static_cast<uint32_t>(o[i]) << 16;
      std::memcpy(yr + i, &bits, sizeof bits);
    }
  });
}

struct Linear {
  const uint8_t* packed;
  const void* scales;
  bool q4;
  int64_t K, N;
  at::Tensor dense;                                         // undefined: none
  int64_t dense_above = std::numeric_limits<int64_t>::max();

  void operator()(const float* x, int64_t M, float* y) const {
    if (dense.defined() && M > dense_above)
      dense_matmul(x, M, K, dense, N, y);
    else if (q4)
      levant_kernels::q4_matmul_into(x, M, K, packed, static_cast<const uint16_t*>(scales), N, y);
    else
      levant_kernels::q8_matmul_into(x, M, K, packed, static_cast<const float*>(scales), N, y);
  }
};

Linear linear(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& dense,
              int64_t dense_above, int64_t K, int64_t N, const char* name) {
  const bool q4 = packed.dim() == 4;
  const int64_t n = q4 ? check_q4_weight(packed, scales, K) : check_q8_weight(packed, scales, K);
  TORCH_CHECK(N < 0 || n == N, name, ": ", n, " outputs, expected ", N);
  const void* s = q4 ? static_cast<const void*>(scales.data_ptr<at::BFloat16>())
                     : static_cast<const void*>(scales.data_ptr<float>());
  Linear out{packed.data_ptr<uint8_t>(), s, q4, K, n};
  if (dense.defined() && dense.numel() > 0) {
    TORCH_CHECK(dense.dim() == 2 && dense.size(0) == n && dense.size(1) == K, name,
                ": the dense copy is not (", n, ", ", K, ")");
    TORCH_CHECK(dense.is_mkldnn() || (dense.scalar_type() == at::kBFloat16 && dense.is_contiguous()),
                name, ": the dense copy is a oneDNN-packed or contiguous bf16 matrix");
    TORCH_CHECK(dense_above >= 0, name, ": dense_above >= 0");
    out.dense = dense;
    out.dense_above = dense_above;
  }
  return out;
}


// A step's sequences, checked: where each one's rows, positions and blocks are.
struct Sequences {
  std::vector<int64_t> slot;        // (T,) each token's cache slot
  std::vector<int64_t> decodes;     // sequences with one new token, in order
  std::vector<int64_t> dec_tables;  // (decodes, N) their block tables
  std::vector<int64_t> dec_bounds;  // (decodes, 2) [start, end) of the positions each sees
  std::vector<int64_t> chunks;      // sequences with more than one
};

Sequences plan(const at::Tensor& seqs, const at::Tensor& block_tables, int64_t T, int64_t S,
               int64_t block_size, int64_t window) {
  TORCH_CHECK(seqs.dim() == 2 && seqs.size(1) == 3 && seqs.scalar_type() == at::kLong &&
                  seqs.is_contiguous(),
              "seqs: contiguous (B, 3) int64");
  const int64_t B = seqs.size(0);
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == B &&
                  block_tables.scalar_type() == at::kLong && block_tables.is_contiguous(),
              "block_tables: contiguous (B, N) int64");
  TORCH_CHECK(block_size > 0 && S % block_size == 0, "block_size does not divide the cache");
  TORCH_CHECK(window >= 0, "window >= 0");
  const int64_t N = block_tables.size(1), num_blocks = S / block_size;
  const int64_t* sq = seqs.data_ptr<int64_t>();
  const int64_t* tab = block_tables.data_ptr<int64_t>();
  Sequences out;
  out.slot.resize(T);
  int64_t row = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t first = sq[3 * b], n = sq[3 * b + 1], cached = sq[3 * b + 2];
    TORCH_CHECK(first == row && n > 0 && n <= T - row, "seqs: rows out of order or past the step");
    TORCH_CHECK(cached >= 0 && cached + n <= N * block_size, "seqs: positions past the block table");
    const int64_t lo = window > 0 ? std::max<int64_t>(0, cached - window + 1) : 0, end = cached + n;
    const int64_t* t = tab + b * N;
    levant_kernels::check_blocks(t, lo, end, num_blocks, block_size);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = cached + i;
      out.slot[row + i] = t[p / block_size] * block_size + p % block_size;
    }
    if (n == 1) {
      out.decodes.push_back(b);
      out.dec_tables.insert(out.dec_tables.end(), t, t + N);
      out.dec_bounds.push_back(window > 0 ? std::max<int64_t>(0, cached - window + 1) : 0);
      out.dec_bounds.push_back(end);
    } else {
      out.chunks.push_back(b);
    }
    row += n;
  }
  TORCH_CHECK(row == T, "seqs: the rows do not cover the step");
  return out;
}

at::Tensor fused_step(const at::Tensor& h_in, const at::Tensor& rope, at::TensorList weights,
                      at::TensorList dense, at::IntArrayRef dense_above,
                      at::TensorList kv_cache, const at::Tensor& seqs,
                      const at::Tensor& block_tables, int64_t window, int64_t block_size,
                      int64_t n_heads, double eps_d) {
  const int64_t L = static_cast<int64_t>(kv_cache.size());
  TORCH_CHECK(L > 0 && static_cast<int64_t>(weights.size()) == PER_LAYER * L + 1,
              "weights: ", PER_LAYER, " per layer and the final norm");
  const bool any_dense = !dense.empty() || !dense_above.empty();
  TORCH_CHECK(!any_dense || (static_cast<int64_t>(dense.size()) == 4 * L &&
                             static_cast<int64_t>(dense_above.size()) == 4 * L),
              "dense and dense_above: 4 per layer (or both empty: none)");
  TORCH_CHECK(h_in.dim() == 2 && h_in.scalar_type() == at::kFloat && h_in.is_contiguous(),
              "h: contiguous (T, D) float32");
  const int64_t R = h_in.size(0), D = h_in.size(1);
  const at::Tensor& c0 = kv_cache[0];
  TORCH_CHECK(c0.dim() == 3 && c0.size(1) % 2 == 0, "kv_cache: (S, 2 * KVH, hd) per layer");
  const int64_t S = c0.size(0), KVH = c0.size(1) / 2, hd = c0.size(2), H = n_heads;
  TORCH_CHECK(H > 0 && H % KVH == 0 && hd % 2 == 0, "head counts do not match the cache");
  TORCH_CHECK(c0.scalar_type() == at::kFloat || c0.scalar_type() == at::kBFloat16,
              "kv_cache: float32 or bfloat16");
  for (const at::Tensor& c : kv_cache)
    TORCH_CHECK(c.sizes() == c0.sizes() && c.scalar_type() == c0.scalar_type() && c.is_contiguous(),
                "every layer's cache: the same contiguous shape and dtype");
  TORCH_CHECK(rope.dim() == 3 && rope.size(0) == R && rope.size(1) == hd / 2 && rope.size(2) == 2 &&
                  rope.scalar_type() == at::kFloat && rope.is_contiguous(),
              "rope: contiguous (T, hd / 2, 2) float32");
  const Sequences sq = plan(seqs, block_tables, R, S, block_size, window);
  const int64_t* seq = seqs.data_ptr<int64_t>();
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t N = block_tables.size(1);
  const int64_t RD = static_cast<int64_t>(sq.decodes.size());
  // The decoding sequences' rows, when they are not simply rows 0 .. RD - 1.
  bool dec_in_place = true;
  for (int64_t i = 0; i < RD; ++i) dec_in_place &= seq[3 * sq.decodes[i]] == i;

  const int64_t QKV = (H + 2 * KVH) * hd;
  struct Layer {
    const float* attention_norm;
    Linear wqkv, wo;
    const float* ffn_norm;
    Linear w13, w2;
  };
  std::vector<Layer> layers;
  int64_t F = -1;
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor* w = weights.data() + PER_LAYER * l;
    static const at::Tensor none;
    static const int64_t never = std::numeric_limits<int64_t>::max();
    auto dw = [&](int i) -> const at::Tensor& { return any_dense ? dense[4 * l + i] : none; };
    auto da = [&](int i) { return any_dense ? dense_above[4 * l + i] : never; };
    Layer layer{norm_weight(w[0], D), linear(w[1], w[2], dw(0), da(0), D, QKV, "wqkv"),
                linear(w[3], w[4], dw(1), da(1), H * hd, D, "wo"), norm_weight(w[5], D),
                linear(w[6], w[7], dw(2), da(2), D, -1, "w13"), Linear{}};
    TORCH_CHECK(layer.w13.N % 2 == 0 && (F < 0 || layer.w13.N / 2 == F), "w13: 2 * hidden outputs");
    F = layer.w13.N / 2;
    layer.w2 = linear(w[8], w[9], dw(3), da(3), F, D, "w2");
    layers.push_back(layer);
  }
  const float* final_norm = norm_weight(weights[PER_LAYER * L], D);

  const float eps = static_cast<float>(eps_d);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  at::Tensor out = at::empty({R, D}, h_in.options());
  const int64_t HD = H * hd;
  std::vector<float> h(h_in.data_ptr<float>(), h_in.data_ptr<float>() + R * D);
  std::vector<float> x(R * D), y(R * D), qkv(R * QKV), q(R * HD), attn(R * HD);
  std::vector<float> gu(R * 2 * F), act(R * F);
  std::vector<float> dq(dec_in_place ? 0 : RD * HD), dout(dec_in_place ? 0 : RD * HD);
  const float* cs = rope.data_ptr<float>();

  for (int64_t l = 0; l < L; ++l) {
    const Layer& ly = layers[l];
    rms_norm(h.data(), ly.attention_norm, x.data(), R, D, eps);
    ly.wqkv(x.data(), R, qkv.data());
    const at::Tensor& cache = kv_cache[l];
    for_rows(R, QKV, [&](int64_t r) {
      float* row = qkv.data() + r * QKV;
      const float* c = cs + r * hd;  // (hd / 2, 2): cos, sin of pair i
      for (int64_t head = 0; head < H + KVH; ++head) {  // queries and keys, in place
        float* p = row + head * hd;
        for (int64_t i = 0; i < hd / 2; ++i) {
          const float re = p[2 * i], im = p[2 * i + 1], cos = c[2 * i], sin = c[2 * i + 1];
          p[2 * i] = re * cos - im * sin;
          p[2 * i + 1] = re * sin + im * cos;
        }
      }
      std::memcpy(q.data() + r * HD, row, HD * sizeof(float));
      const int64_t offset = sq.slot[r] * 2 * KVH * hd;
      if (cache.scalar_type() == at::kBFloat16)
        store(cache.data_ptr<c10::BFloat16>() + offset, row + HD, 2 * KVH * hd);
      else
        store(cache.data_ptr<float>() + offset, row + HD, 2 * KVH * hd);
    });
    if (RD > 0) {
      if (dec_in_place) {
        levant_kernels::decode_attention_f32(q.data(), cache, sq.dec_tables.data(), N,
                                             sq.dec_bounds.data(), attn.data(), RD, H,
                                             block_size, scale);
      } else {
        for (int64_t i = 0; i < RD; ++i)
          std::memcpy(dq.data() + i * HD, q.data() + seq[3 * sq.decodes[i]] * HD, HD * sizeof(float));
        levant_kernels::decode_attention_f32(dq.data(), cache, sq.dec_tables.data(), N,
                                             sq.dec_bounds.data(), dout.data(), RD, H,
                                             block_size, scale);
        for (int64_t i = 0; i < RD; ++i)
          std::memcpy(attn.data() + seq[3 * sq.decodes[i]] * HD, dout.data() + i * HD,
                      HD * sizeof(float));
      }
    }
    for (const int64_t b : sq.chunks) {
      const int64_t first = seq[3 * b], n = seq[3 * b + 1], cached = seq[3 * b + 2];
      levant_kernels::prefill_attention_f32(q.data() + first * HD, cache, tables + b * N,
                                            attn.data() + first * HD, n, H, cached, window,
                                            block_size, scale);
    }
    ly.wo(attn.data(), R, y.data());
    add_rows(h.data(), y.data(), R, D);
    rms_norm(h.data(), ly.ffn_norm, x.data(), R, D, eps);
    ly.w13(x.data(), R, gu.data());
    for_rows(R, 2 * F, [&](int64_t r) {
      swiglu(gu.data() + r * 2 * F, gu.data() + r * 2 * F + F, act.data() + r * F, F);
    });
    ly.w2(act.data(), R, y.data());
    add_rows(h.data(), y.data(), R, D);
  }
  rms_norm(h.data(), final_norm, out.data_ptr<float>(), R, D, eps);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(levant, m) {
  m.def(
      "fused_step(Tensor h, Tensor rope, Tensor[] weights, Tensor[] dense, int[] dense_above, "
      "Tensor(a!)[] kv_cache, Tensor seqs, Tensor block_tables, int window, int block_size, "
      "int n_heads, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(levant, CPU, m) { m.impl("fused_step", &fused_step); }
// oneDNN-packed dense copies among the arguments send the call to this key.
TORCH_LIBRARY_IMPL(levant, MkldnnCPU, m) { m.impl("fused_step", &fused_step); }
