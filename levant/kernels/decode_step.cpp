// levant::decode_step -- every decoder layer of a step in which each of R sequences decodes
// one token, in one call: Transformer.hidden_states with DecodeAttention and quantized
// linears (levant::q4_matmul or levant::q8_matmul layouts), the same arithmetic, back to
// back in C++. A compiled (Inductor) step of a small model on a CPU spends as much time
// between kernels as in them (a Python call, a dispatch and an allocation per norm, rotary,
// SwiGLU and residual, ~270 of them per step for 30 layers); here each of those is a loop
// over R rows, and the matmuls and attention are the ops' own kernels.
//
// h            (R, D) float32        the tokens' embeddings
// rope         (R, hd / 2, 2) float32  cos and sin of each pair's angle (rotary_table)
// weights      per layer: attention_norm (D), wqkv packed and scales, wo packed and scales,
//              ffn_norm (D), w13 packed and scales, w2 packed and scales; then the final
//              norm (D). A linear is q4 (4-d packed, bf16 scales) or q8 (3-d, float32).
// kv_cache     per layer (S, 2 * KVH, hd), float32 or bfloat16: each sequence's new key and
//              value are written at its slot, then attention reads the cache in place
// slots        (R,) int64; block_tables (R, N), bounds (R, 2): as paged_decode_attention
// -> (R, D) float32: the final-normed hidden states.
//
// Layer: x = norm(h); q, k, v = x Wqkv (rows: queries, keys, values); rotate q and k
// (interleaved pairs); write k, v; h += attention(q) Wo; x = norm(h);
// gate, up = x W13; h += (silu(gate) * up) W2.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ops.h"

namespace {

using levant_kernels::check_q4_weight;
using levant_kernels::check_q8_weight;

constexpr int64_t PER_LAYER = 10;  // tensors in `weights` per layer

struct Linear {
  const uint8_t* packed;
  const void* scales;
  bool q4;
  int64_t K, N;

  void operator()(const float* x, int64_t M, float* y) const {
    if (q4)
      levant_kernels::q4_matmul_into(x, M, K, packed, static_cast<const uint16_t*>(scales), N, y);
    else
      levant_kernels::q8_matmul_into(x, M, K, packed, static_cast<const float*>(scales), N, y);
  }
};

Linear linear(const at::Tensor& packed, const at::Tensor& scales, int64_t K, int64_t N,
              const char* name) {
  const bool q4 = packed.dim() == 4;
  const int64_t n = q4 ? check_q4_weight(packed, scales, K) : check_q8_weight(packed, scales, K);
  TORCH_CHECK(N < 0 || n == N, name, ": ", n, " outputs, expected ", N);
  const void* s = q4 ? static_cast<const void*>(scales.data_ptr<at::BFloat16>())
                     : static_cast<const void*>(scales.data_ptr<float>());
  return {packed.data_ptr<uint8_t>(), s, q4, K, n};
}

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

template <typename T>
void store(T* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

at::Tensor decode_step(const at::Tensor& h_in, const at::Tensor& rope, at::TensorList weights,
                       at::TensorList kv_cache, const at::Tensor& slots,
                       const at::Tensor& block_tables, const at::Tensor& bounds,
                       int64_t block_size, int64_t n_heads, double eps_d) {
  const int64_t L = static_cast<int64_t>(kv_cache.size());
  TORCH_CHECK(L > 0 && static_cast<int64_t>(weights.size()) == PER_LAYER * L + 1,
              "weights: ", PER_LAYER, " per layer and the final norm");
  TORCH_CHECK(h_in.dim() == 2 && h_in.scalar_type() == at::kFloat && h_in.is_contiguous(),
              "h: contiguous (R, D) float32");
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
              "rope: contiguous (R, hd / 2, 2) float32");
  TORCH_CHECK(slots.dim() == 1 && slots.size(0) == R && slots.scalar_type() == at::kLong &&
                  slots.is_contiguous(),
              "slots: contiguous (R,) int64");
  const int64_t* slot = slots.data_ptr<int64_t>();
  for (int64_t r = 0; r < R; ++r) TORCH_CHECK(0 <= slot[r] && slot[r] < S, "slot out of the cache");
  TORCH_CHECK(block_size > 0 && S % block_size == 0, "block_size does not divide the cache");
  levant_kernels::check_block_tables(block_tables, bounds, R, S / block_size, block_size);

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
    Layer layer{norm_weight(w[0], D), linear(w[1], w[2], D, QKV, "wqkv"),
                linear(w[3], w[4], H * hd, D, "wo"), norm_weight(w[5], D),
                linear(w[6], w[7], D, -1, "w13"), Linear{}};
    TORCH_CHECK(layer.w13.N % 2 == 0 && (F < 0 || layer.w13.N / 2 == F), "w13: 2 * hidden outputs");
    F = layer.w13.N / 2;
    layer.w2 = linear(w[8], w[9], F, D, "w2");
    layers.push_back(layer);
  }
  const float* final_norm = norm_weight(weights[PER_LAYER * L], D);

  const float eps = static_cast<float>(eps_d);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  at::Tensor out = at::empty({R, D}, h_in.options());
  std::vector<float> h(h_in.data_ptr<float>(), h_in.data_ptr<float>() + R * D);
  std::vector<float> x(R * D), y(R * D), qkv(R * QKV), q(R * H * hd), attn(R * H * hd);
  std::vector<float> gu(R * 2 * F), act(R * F);
  const float* cs = rope.data_ptr<float>();
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t N = block_tables.size(1);

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
      std::memcpy(q.data() + r * H * hd, row, H * hd * sizeof(float));
      const int64_t offset = slot[r] * 2 * KVH * hd;
      if (cache.scalar_type() == at::kBFloat16)
        store(cache.data_ptr<c10::BFloat16>() + offset, row + H * hd, 2 * KVH * hd);
      else
        store(cache.data_ptr<float>() + offset, row + H * hd, 2 * KVH * hd);
    });
    levant_kernels::decode_attention_f32(q.data(), cache, tables, N, bounds.data_ptr<int64_t>(),
                                         attn.data(), R, H, block_size, scale);
    ly.wo(attn.data(), R, y.data());
    for (int64_t i = 0; i < R * D; ++i) h[i] += y[i];
    rms_norm(h.data(), ly.ffn_norm, x.data(), R, D, eps);
    ly.w13(x.data(), R, gu.data());
    for_rows(R, 2 * F, [&](int64_t r) {
      const float* gate = gu.data() + r * 2 * F;
      const float* up = gate + F;
      float* a = act.data() + r * F;
      for (int64_t i = 0; i < F; ++i) a[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
    });
    ly.w2(act.data(), R, y.data());
    for (int64_t i = 0; i < R * D; ++i) h[i] += y[i];
  }
  rms_norm(h.data(), final_norm, out.data_ptr<float>(), R, D, eps);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(levant, m) {
  m.def(
      "decode_step(Tensor h, Tensor rope, Tensor[] weights, Tensor(a!)[] kv_cache, Tensor slots, "
      "Tensor block_tables, Tensor bounds, int block_size, int n_heads, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(levant, CPU, m) { m.impl("decode_step", &decode_step); }
