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
// values are read once, in place, with the next block prefetched into L2.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops.h"
#include "parallel.h"
#include "vec.h"

namespace {

using namespace levant_kernels;  // vec.h

// sum_d a[d] * b[d] and a[d] += p * b[d], in float32 (b: a key or value, float or bf16).

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

// A slot's lines into L2 (vec.h's prefetch_l2).
template <typename T>
inline void prefetch_slot(const T* p, int64_t bytes) {
  prefetch_l2(p, bytes);
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

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#define LEVANT_ATTN_BF16 1
// Scores over a bf16 cache with vdpbf16ps (AVX512-BF16: 32 products of bf16 pairs summed
// into 16 float32 lanes per instruction, no conversion of the keys). The query is split
// into two bf16 halves, q = hi + lo (hi rounded to nearest, lo the rounded remainder:
// ~16 of float32's 24 mantissa bits), and each product of two bf16 is exact in float32,
// so a score is q . k to about 2^-17 of |q| |k|. Where there is AVX512-BF16 (Zen 4,
// Sapphire Rapids) it replaces the float32 scores of a bf16 cache: on a 2-core EPYC (Zen 4),
// 30 layers of 16 sequences x 170 positions 4.1-4.4 -> 3.8-3.9 ms (keys scattered) and
// 2.9-3.1 -> 2.6-2.7 ms (one layer's keys, in cache); the fused 16-row step 13.0-13.4 ->
// 12.4-12.5 ms at 170 positions, 28.2 -> 27.0 ms at 1,000.

// hi and lo halves of n floats.
inline void split_bf16(const float* q, int64_t n, uint16_t* hi, uint16_t* lo) {
  for (int64_t i = 0; i < n; ++i) {
    const c10::BFloat16 h(q[i]);
    hi[i] = h.x;
    lo[i] = c10::BFloat16(q[i] - static_cast<float>(h)).x;
  }
}

// Lane i of the result = the sum of v[i]'s 16 lanes (a transpose-and-add tree: 45
// operations for 16 sums, a third of 16 separate horizontal sums).
inline __m512 sum16(const __m512* v) {
  __m512 t[8];  // per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3] of a, b = v[2i], v[2i + 1]
  for (int i = 0; i < 8; ++i)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  __m512 u[4];  // per 128-bit lane L: v[4i .. 4i + 3]'s sums over L
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[2 * i]), b = _mm512_castps_pd(t[2 * i + 1]);
    u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 y01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x44),
                                   _mm512_shuffle_f32x4(u[0], u[1], 0xEE));
  const __m512 y23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x44),
                                   _mm512_shuffle_f32x4(u[2], u[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(y01, y23, 0x88), _mm512_shuffle_f32x4(y01, y23, 0xDD));
}

// block_scores for bf16 keys and D a multiple of 32, 16 slots at a time: one register per
// slot gathers q_h . k_i (two vdpbf16ps per 32 dims, hi and lo), sum16 makes them scores.
template <int GQ>
inline void block_scores_bf16(const uint16_t* qh, const uint16_t* ql, const c10::BFloat16* base,
                              const c10::BFloat16* next, int64_t n, int64_t slot_stride,
                              int64_t g0, int64_t heads, int64_t D, float* s, int64_t bs) {
  const uint16_t* keys = reinterpret_cast<const uint16_t*>(base);
  const int64_t lines = slot_stride * 2 / 64, passes = heads * GQ;
  for (int64_t i0 = 0; i0 < n; i0 += 16) {
    const int64_t m = std::min<int64_t>(16, n - i0);
    for (int64_t g = 0; g < heads; ++g)
      for (int h = 0; h < GQ; ++h) {
        const int64_t qi = (g * GQ + h) * D;
        // The next block's slots, a share of each slot's lines in each (g, h) pass.
        const int64_t pass = g * GQ + h;
        const int64_t l0 = pass * lines / passes, l1 = (pass + 1) * lines / passes;
        __m512 acc[16];
        for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
        for (int64_t c = 0; c < D; c += 32) {
          const __m512bh hi = (__m512bh)_mm512_loadu_si512(qh + qi + c);
          const __m512bh lo = (__m512bh)_mm512_loadu_si512(ql + qi + c);
          const uint16_t* k = keys + i0 * slot_stride + (g0 + g) * D + c;
          const char* fetch = c == 0 && next != nullptr
                                  ? reinterpret_cast<const char*>(next + i0 * slot_stride)
                                  : nullptr;
#pragma GCC unroll 16
          for (int i = 0; i < 16; ++i)
            if (i < m) {
              if (fetch != nullptr)  // prefetch_l2's loop, over this pass's share of lines
                for (int64_t l = l0; l < l1; ++l)
                  _mm_prefetch(fetch + i * slot_stride * 2 + 64 * l, _MM_HINT_T1);
              const __m512bh ki = (__m512bh)_mm512_loadu_si512(k + i * slot_stride);
              acc[i] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[i], ki, hi), ki, lo);
            }
        }
        _mm512_mask_storeu_ps(s + (g * GQ + h) * bs + i0, static_cast<__mmask16>((1u << m) - 1),
                              sum16(acc));
      }
  }
}
#endif

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
  // One task per chunk, handed out as threads ask (parallel.h); each thread's buffers
  // live as long as it does, so a task allocates nothing (and they are looked up once
  // per task: every use of a thread_local in a shared library is a __tls_get_addr call).
  struct Scratch {
    std::vector<float> qf, acc, m, l, s;
    std::vector<uint16_t> qh, ql;  // qf's bf16 halves (LEVANT_ATTN_BF16)
  };
  parallel_chunks(R * split, 1, [&](int64_t begin, int64_t end) {
    thread_local Scratch scratch;
    Scratch& sc = scratch;
    auto &qf = sc.qf, &acc = sc.acc, &m = sc.m, &l = sc.l, &s = sc.s;
    auto &qh = sc.qh, &ql = sc.ql;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / split, g0 = (task % split) * heads_per_task;
      const int64_t nq = heads_per_task * G;  // query heads of this task: g0 * G ..
      const int64_t s0 = bounds[2 * r], s1 = bounds[2 * r + 1];
      const int64_t* table = tables + r * N;
      qf.resize(nq * D);
      for (int64_t i = 0; i < nq * D; ++i)
        qf[i] = scale * static_cast<float>(q[(r * H + g0 * G) * D + i]);
#if defined(LEVANT_ATTN_BF16)
      constexpr bool bf16_cache = std::is_same_v<T, c10::BFloat16>;
      const bool pairs = bf16_cache && D % 32 == 0;
      if (pairs) {
        qh.resize(nq * D);
        ql.resize(nq * D);
        split_bf16(qf.data(), nq * D, qh.data(), ql.data());
      }
#endif
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
        bool unrolled = false;
#if defined(LEVANT_ATTN_BF16)
        if constexpr (bf16_cache)
          if (pairs)
            unrolled = with_group_size(G, [&](auto gq) {
              block_scores_bf16<decltype(gq)::value>(qh.data(), ql.data(), base, next, n,
                                                     slot_stride, g0, heads_per_task, D,
                                                     s.data(), block_size);
            });
#endif
        if (!unrolled)
          unrolled = with_group_size(G, [&](auto gq) {
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
    check_blocks(t + r * N, b[2 * r], b[2 * r + 1], num_blocks, block_size);
  }
}

void check_blocks(const int64_t* table, int64_t lo, int64_t end, int64_t num_blocks,
                  int64_t block_size) {
  for (int64_t i = lo / block_size; i <= (end - 1) / block_size; ++i)
    TORCH_CHECK(0 <= table[i] && table[i] < num_blocks, "block id out of the cache");
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
