// levant::paged_decode_attention -- attention for sequences that each decode one token,
// reading keys and values in place from the paged KV cache (no gather into a padded copy).
//
// q            (R, H, D)            this step's query of each sequence
// kv_cache     (S, 2 * KVH, D)      one layer's cache: slot = block * block_size + offset,
//                                   the keys' heads then the values' heads
// block_tables (R, N) int64         each sequence's blocks, position p in block p / block_size
// bounds       (R, 2) int64         [start, end): the positions each query sees (end is
//                                   one past its own position; start > 0 under a window)
// -> (R, H, D), softmax(q k^T * scale) v per query head; query head h reads kv head
//    h / (H / KVH) (grouped-query attention). q (and the result) and the cache each float32
//    or bfloat16, accumulated in float32.
//
// Tasks (a sequence, or a sequence's kv head when there are few sequences) spread over
// ATen's intra-op threads. Each task makes one pass over its sequence's blocks (online
// softmax, rescaled once per block, as flash-decoding does): every slot's keys and
// values are read once, in place, with the next block prefetched.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define LEVANT_ATTN_SIMD 1
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops.h"

namespace {

// sum_d a[d] * b[d] and a[d] += p * b[d], in float32 (b: a key or value, float or bf16).
// With AVX-512 in 16-lane registers, with AVX2 in 8-lane ones (D a multiple of the
// width); else plain loops. vec, W and the v* helpers are the one place that differs.
#if defined(__AVX512F__)
using vec = __m512;
constexpr int64_t W = 16;
inline vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline vec vload(const c10::BFloat16* p) {  // bf16 is the top half of a float32
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline vec vzero() { return _mm512_setzero_ps(); }
inline vec vset1(float x) { return _mm512_set1_ps(x); }
inline vec vfmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
inline void vstore(float* p, vec v) { _mm512_storeu_ps(p, v); }
inline float vsum(vec v) { return _mm512_reduce_add_ps(v); }
inline vec vadd(vec a, vec b) { return _mm512_add_ps(a, b); }
inline vec vmul(vec a, vec b) { return _mm512_mul_ps(a, b); }
inline vec vsub(vec a, vec b) { return _mm512_sub_ps(a, b); }
inline vec vclamp(vec x, float lo, float hi) {
  return _mm512_max_ps(_mm512_min_ps(x, vset1(hi)), vset1(lo));
}
inline vec vfloor(vec x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
inline vec vpow2i(vec n) {  // 2^n for integral n in float32's normal range
  const __m512i e = _mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
#elif defined(LEVANT_ATTN_SIMD)
using vec = __m256;
constexpr int64_t W = 8;
inline vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline vec vload(const c10::BFloat16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline vec vzero() { return _mm256_setzero_ps(); }
inline vec vset1(float x) { return _mm256_set1_ps(x); }
inline vec vfmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline void vstore(float* p, vec v) { _mm256_storeu_ps(p, v); }
inline float vsum(vec v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
inline vec vadd(vec a, vec b) { return _mm256_add_ps(a, b); }
inline vec vmul(vec a, vec b) { return _mm256_mul_ps(a, b); }
inline vec vsub(vec a, vec b) { return _mm256_sub_ps(a, b); }
inline vec vclamp(vec x, float lo, float hi) {
  return _mm256_max_ps(_mm256_min_ps(x, vset1(hi)), vset1(lo));
}
inline vec vfloor(vec x) { return _mm256_floor_ps(x); }
inline vec vpow2i(vec n) {  // 2^n for integral n in float32's normal range
  const __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
#endif

#if defined(LEVANT_ATTN_SIMD)
// exp(x) in every lane: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' degree-5
// polynomial (within a few ulp of expf), times 2^n. With scalar expf for the softmax's
// exp per score and head, 30 layers at 16 sequences x 170 positions took 4.56 ms on a
// 2-core EPYC with AVX2; with this, 3.56 ms.
inline vec vexp(vec x) {
  x = vclamp(x, -87.3365f, 88.f);  // 2^n stays a normal float32
  const vec n = vfloor(vfmadd(x, vset1(1.44269504088896341f), vset1(0.5f)));
  x = vfmadd(n, vset1(-0.693359375f), x);  // ln 2 in two parts: r exact to float32
  x = vfmadd(n, vset1(2.12194440e-4f), x);
  vec y = vset1(1.9875691500e-4f);
  y = vfmadd(y, x, vset1(1.3981999507e-3f));
  y = vfmadd(y, x, vset1(8.3334519073e-3f));
  y = vfmadd(y, x, vset1(4.1665795894e-2f));
  y = vfmadd(y, x, vset1(1.6666665459e-1f));
  y = vfmadd(y, x, vset1(5.0000001201e-1f));
  y = vfmadd(y, vmul(x, x), vadd(x, vset1(1.f)));
  return vmul(y, vpow2i(n));
}
#endif

// s[i] = exp(s[i] - mx) for i < n; returns their sum.
inline float exp_shifted(float* s, int64_t n, float mx) {
  float sum = 0.f;
  int64_t i = 0;
#if defined(LEVANT_ATTN_SIMD)
  const vec m = vset1(mx);
  vec acc = vzero();
  for (; i + W <= n; i += W) {
    const vec e = vexp(vsub(vload(s + i), m));
    vstore(s + i, e);
    acc = vadd(acc, e);
  }
  sum = vsum(acc);
#endif
  for (; i < n; ++i) {
    s[i] = expf(s[i] - mx);
    sum += s[i];
  }
  return sum;
}

template <typename T>
inline float dot(const float* a, const T* b, int64_t D) {
#if defined(LEVANT_ATTN_SIMD)
  if (D % W == 0) {
    vec s = vzero();
    for (int64_t d = 0; d < D; d += W) s = vfmadd(vload(a + d), vload(b + d), s);
    return vsum(s);
  }
#endif
  float sum = 0.f;
  for (int64_t d = 0; d < D; ++d) sum += a[d] * static_cast<float>(b[d]);
  return sum;
}

template <typename T>
inline void axpy(float* a, float p, const T* b, int64_t D) {
#if defined(LEVANT_ATTN_SIMD)
  if (D % W == 0) {
    const vec pv = vset1(p);
    for (int64_t d = 0; d < D; d += W) vstore(a + d, vfmadd(pv, vload(b + d), vload(a + d)));
    return;
  }
#endif
  for (int64_t d = 0; d < D; ++d) a[d] += p * static_cast<float>(b[d]);
}

template <typename T>
inline void prefetch_slot(const T* p, int64_t bytes) {
#if defined(LEVANT_ATTN_SIMD)
  for (int64_t off = 0; off < bytes; off += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p) + off, _MM_HINT_T0);
#endif
}

// The GQ query heads of one kv head against one key (scores) and one value (accumulate):
// the key or value is loaded once for all of them and their chains run side by side.
template <int GQ, typename T>
inline void group_scores(const float* q, const T* k, int64_t D, float* s, int64_t s_stride) {
#if defined(LEVANT_ATTN_SIMD)
  if (D % W == 0) {
    vec acc[GQ];
    for (int h = 0; h < GQ; ++h) acc[h] = vzero();
    for (int64_t d = 0; d < D; d += W) {
      const vec kc = vload(k + d);
      for (int h = 0; h < GQ; ++h) acc[h] = vfmadd(vload(q + h * D + d), kc, acc[h]);
    }
    for (int h = 0; h < GQ; ++h) s[h * s_stride] = vsum(acc[h]);
    return;
  }
#endif
  for (int h = 0; h < GQ; ++h) s[h * s_stride] = dot(q + h * D, k, D);
}

// The GQ query heads' accumulators += their weights times one value (the plain loops, for a
// head size that is not a multiple of the vector width; block_values has the vector path).
template <int GQ, typename T>
inline void group_values(float* acc, const float* p, int64_t p_stride, const T* v, int64_t D) {
  for (int h = 0; h < GQ; ++h) axpy(acc + h * D, p[h * p_stride], v, D);
}

template <int GQ, typename T>
inline void block_scores(const float* qf, const T* base, const T* next, int64_t n,
                         int64_t slot_stride, int64_t g0, int64_t heads, int64_t D, float* s,
                         int64_t bs) {
  for (int64_t i = 0; i < n; ++i) {
    if (next != nullptr)  // slot i of the next block, while slot i of this one computes
      prefetch_slot(next + i * slot_stride, slot_stride * static_cast<int64_t>(sizeof(T)));
    for (int64_t g = 0; g < heads; ++g)
      group_scores<GQ>(qf + g * GQ * D, base + i * slot_stride + (g0 + g) * D, D,
                       s + g * GQ * bs + i, bs);
  }
}

#if defined(LEVANT_ATTN_SIMD)
// acc (GQ heads x D) += sum_i p[h][i] * v_i over a block's n slots, for the C W-lane chunks
// of dimensions d0 .. d0 + W C: the GQ x C accumulators stay in registers for the whole
// block (one load and store each per block, not per slot) and each value is loaded once.
template <int GQ, int C, typename T>
inline void values_pass(float* acc, const float* p, int64_t p_stride, const T* v, int64_t n,
                        int64_t slot_stride, int64_t D, int64_t d0) {
  vec a[GQ][C];
  for (int h = 0; h < GQ; ++h)
    for (int c = 0; c < C; ++c) a[h][c] = vload(acc + h * D + d0 + W * c);
  for (int64_t i = 0; i < n; ++i) {
    vec vc[C];
    for (int c = 0; c < C; ++c) vc[c] = vload(v + i * slot_stride + d0 + W * c);
    for (int h = 0; h < GQ; ++h) {
      const vec w = vset1(p[h * p_stride + i]);
      for (int c = 0; c < C; ++c) a[h][c] = vfmadd(w, vc[c], a[h][c]);
    }
  }
  for (int h = 0; h < GQ; ++h)
    for (int c = 0; c < C; ++c) vstore(acc + h * D + d0 + W * c, a[h][c]);
}
#endif

template <int GQ, typename T>
inline void block_values(float* acc, const float* s, const T* base, int64_t n,
                         int64_t slot_stride, int64_t v0, int64_t heads, int64_t D, int64_t bs) {
#if defined(LEVANT_ATTN_SIMD)
  if (D % W == 0) {
    // Chunks per pass: the GQ x C accumulators, C values and a weight within the registers
    // (32 with AVX-512, 16 with AVX2).
    constexpr int C = W == 16 ? (GQ <= 4 ? 4 : 2) : (GQ <= 2 ? 4 : GQ <= 4 ? 2 : 1);
    for (int64_t g = 0; g < heads; ++g) {
      float* ag = acc + g * GQ * D;
      const float* pg = s + g * GQ * bs;
      const T* vg = base + (v0 + g) * D;
      int64_t d0 = 0;
      for (; d0 + W * C <= D; d0 += W * C)
        values_pass<GQ, C>(ag, pg, bs, vg, n, slot_stride, D, d0);
      for (; d0 < D; d0 += W) values_pass<GQ, 1>(ag, pg, bs, vg, n, slot_stride, D, d0);
    }
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i)
    for (int64_t g = 0; g < heads; ++g)
      group_values<GQ>(acc + g * GQ * D, s + g * GQ * bs + i, bs,
                       base + i * slot_stride + (v0 + g) * D, D);
}

// Calls f(std::integral_constant<int, G>) for the usual group sizes (query heads per kv
// head: unrolled code); false for any other, which takes the plain loops.
template <typename F>
inline bool with_group_size(int64_t G, F&& f) {
  switch (G) {
    case 1: f(std::integral_constant<int, 1>{}); return true;
    case 2: f(std::integral_constant<int, 2>{}); return true;
    case 3: f(std::integral_constant<int, 3>{}); return true;
    case 4: f(std::integral_constant<int, 4>{}); return true;
    case 6: f(std::integral_constant<int, 6>{}); return true;
    case 8: f(std::integral_constant<int, 8>{}); return true;
    default: return false;
  }
}

template <typename Q, typename T>
void decode_attention(const Q* q, const T* cache, const int64_t* tables, const int64_t* bounds,
                      Q* out, int64_t R, int64_t H, int64_t KVH, int64_t D, int64_t N,
                      int64_t block_size, float scale) {
  const int64_t G = H / KVH;
  const int64_t slot_stride = 2 * KVH * D;
  // A task is one sequence and a run of its kv heads: all of them when there are enough
  // sequences to keep the threads busy (each slot's keys and values then stream once).
  const int64_t split = R >= 2 * at::get_num_threads() ? 1 : KVH;
  const int64_t heads_per_task = KVH / split;
  at::parallel_for(0, R * split, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf, acc, m, l, s;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / split, g0 = (task % split) * heads_per_task;
      const int64_t nq = heads_per_task * G;  // query heads of this task: g0 * G ..
      const int64_t s0 = bounds[2 * r], s1 = bounds[2 * r + 1];
      const int64_t* table = tables + r * N;
      qf.resize(nq * D);
      for (int64_t i = 0; i < nq * D; ++i)
        qf[i] = scale * static_cast<float>(q[(r * H + g0 * G) * D + i]);
      acc.assign(nq * D, 0.f);
      m.assign(nq, -std::numeric_limits<float>::infinity());
      l.assign(nq, 0.f);
      s.resize(nq * block_size);
      // One pass over the visible positions, a block (or the part of it that is visible)
      // at a time: scores, the running max and sum rescaled once per block, the values.
      for (int64_t p0 = s0; p0 < s1;) {
        const int64_t blk = table[p0 / block_size], off = p0 % block_size;
        const int64_t n = std::min(block_size - off, s1 - p0);
        const T* base = cache + (blk * block_size + off) * slot_stride;
        const T* next = p0 + n < s1 ? cache + table[(p0 + n) / block_size] * block_size * slot_stride
                                    : nullptr;
        const bool unrolled = with_group_size(G, [&](auto gq) {
          block_scores<decltype(gq)::value>(qf.data(), base, next, n, slot_stride, g0,
                                            heads_per_task, D, s.data(), block_size);
        });
        if (!unrolled)
          for (int64_t i = 0; i < n; ++i)
            for (int64_t h = 0; h < nq; ++h)
              s[h * block_size + i] =
                  dot(qf.data() + h * D, base + i * slot_stride + (g0 + h / G) * D, D);
        for (int64_t h = 0; h < nq; ++h) {
          float* sh = s.data() + h * block_size;
          float mx = m[h];
          for (int64_t i = 0; i < n; ++i) mx = std::max(mx, sh[i]);
          const float correction = expf(m[h] - mx);  // 0 on the first block (m = -inf)
          const float sum = exp_shifted(sh, n, mx);
          l[h] = l[h] * correction + sum;
          m[h] = mx;
          if (correction != 1.f)
            for (int64_t d = 0; d < D; ++d) acc[h * D + d] *= correction;
        }
        const bool unrolled_values = with_group_size(G, [&](auto gq) {
          block_values<decltype(gq)::value>(acc.data(), s.data(), base, n, slot_stride,
                                            KVH + g0, heads_per_task, D, block_size);
        });
        if (!unrolled_values)
          for (int64_t i = 0; i < n; ++i)
            for (int64_t h = 0; h < nq; ++h)
              axpy(acc.data() + h * D, s[h * block_size + i],
                   base + i * slot_stride + (KVH + g0 + h / G) * D, D);
        p0 += n;
      }
      for (int64_t h = 0; h < nq; ++h)
        for (int64_t d = 0; d < D; ++d)
          out[(r * H + g0 * G + h) * D + d] = static_cast<Q>(acc[h * D + d] / l[h]);
    }
  });
}

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& kv_cache,
                                  const at::Tensor& block_tables, const at::Tensor& bounds,
                                  int64_t block_size, double scale) {
  TORCH_CHECK(q.dim() == 3 && kv_cache.dim() == 3, "q (R, H, D) and kv_cache (S, 2 * KVH, D)");
  TORCH_CHECK(q.is_contiguous() && kv_cache.is_contiguous(), "q and kv_cache must be contiguous");
  const int64_t R = q.size(0), H = q.size(1), D = q.size(2), KVH = kv_cache.size(1) / 2;
  TORCH_CHECK(kv_cache.size(2) == D && KVH > 0 && H % KVH == 0, "head sizes do not match");
  levant_kernels::check_block_tables(block_tables, bounds, R, kv_cache.size(0) / block_size,
                                     block_size);
  const int64_t N = block_tables.size(1);
  at::Tensor out = at::empty_like(q);
  const auto qt = q.scalar_type(), ct = kv_cache.scalar_type();
  TORCH_CHECK((qt == at::kFloat || qt == at::kBFloat16) && (ct == at::kFloat || ct == at::kBFloat16),
              "q and kv_cache: float32 or bfloat16");
  const int64_t* tab = block_tables.data_ptr<int64_t>();
  const int64_t* b = bounds.data_ptr<int64_t>();
  const float sc = static_cast<float>(scale);
  auto run = [&](auto* qp, const auto* cp) {
    decode_attention(qp, cp, tab, b, static_cast<decltype(qp)>(out.data_ptr()), R, H, KVH, D, N,
                     block_size, sc);
  };
  using bf16 = c10::BFloat16;
  if (qt == at::kFloat && ct == at::kFloat) run(q.data_ptr<float>(), kv_cache.data_ptr<float>());
  if (qt == at::kFloat && ct == at::kBFloat16) run(q.data_ptr<float>(), kv_cache.data_ptr<bf16>());
  if (qt == at::kBFloat16 && ct == at::kFloat) run(q.data_ptr<bf16>(), kv_cache.data_ptr<float>());
  if (qt == at::kBFloat16 && ct == at::kBFloat16) run(q.data_ptr<bf16>(), kv_cache.data_ptr<bf16>());
  return out;
}

}  // namespace

namespace levant_kernels {

void check_block_tables(const at::Tensor& block_tables, const at::Tensor& bounds, int64_t R,
                        int64_t num_blocks, int64_t block_size) {
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && bounds.scalar_type() == at::kLong,
              "block_tables and bounds are int64");
  TORCH_CHECK(block_tables.is_contiguous() && bounds.is_contiguous(), "tables must be contiguous");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == R, "block_tables (R, N)");
  TORCH_CHECK(bounds.dim() == 2 && bounds.size(0) == R && bounds.size(1) == 2, "bounds (R, 2)");
  const int64_t N = block_tables.size(1);
  const int64_t* b = bounds.data_ptr<int64_t>();
  const int64_t* t = block_tables.data_ptr<int64_t>();
  for (int64_t r = 0; r < R; ++r) {
    TORCH_CHECK(0 <= b[2 * r] && b[2 * r] < b[2 * r + 1] && b[2 * r + 1] <= N * block_size,
                "bounds out of the block table");
    for (int64_t i = b[2 * r] / block_size; i <= (b[2 * r + 1] - 1) / block_size; ++i)
      TORCH_CHECK(0 <= t[r * N + i] && t[r * N + i] < num_blocks, "block id out of the cache");
  }
}

void decode_attention_f32(const float* q, const at::Tensor& kv_cache, const int64_t* tables,
                          int64_t N, const int64_t* bounds, float* out, int64_t R, int64_t H,
                          int64_t block_size, float scale) {
  const int64_t KVH = kv_cache.size(1) / 2, D = kv_cache.size(2);
  if (kv_cache.scalar_type() == at::kBFloat16)
    decode_attention(q, kv_cache.data_ptr<c10::BFloat16>(), tables, bounds, out, R, H, KVH, D, N,
                     block_size, scale);
  else
    decode_attention(q, kv_cache.data_ptr<float>(), tables, bounds, out, R, H, KVH, D, N,
                     block_size, scale);
}

}  // namespace levant_kernels

TORCH_LIBRARY(levant, m) {
  m.def(
      "paged_decode_attention(Tensor q, Tensor kv_cache, Tensor block_tables, Tensor bounds, "
      "int block_size, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(levant, CPU, m) { m.impl("paged_decode_attention", &paged_decode_attention); }
