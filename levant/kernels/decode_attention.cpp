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
//    h / (H / KVH) (grouped-query attention). float32 or bfloat16, accumulated in float32.
//
// Tasks (a sequence, or a sequence's kv head when there are few sequences) spread over
// ATen's intra-op threads: scores of the query heads against every visible key, a
// softmax, then the weighted values; keys and values stream once per task, in slot order.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

// sum_d a[d] * b[d] and a[d] += p * b[d], in float32 (b: a key or value, float or bf16).
// With AVX-512 (and D a multiple of 16) in 16-lane registers; else plain loops.
#if defined(__AVX512F__)
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {  // bf16 is the top half of a float32
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#endif

template <typename T>
inline float dot(const float* a, const T* b, int64_t D) {
#if defined(__AVX512F__)
  if (D % 16 == 0) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; d += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), load16(b + d), s);
    return _mm512_reduce_add_ps(s);
  }
#endif
  float sum = 0.f;
  for (int64_t d = 0; d < D; ++d) sum += a[d] * static_cast<float>(b[d]);
  return sum;
}

template <typename T>
inline void axpy(float* a, float p, const T* b, int64_t D) {
#if defined(__AVX512F__)
  if (D % 16 == 0) {
    const __m512 pv = _mm512_set1_ps(p);
    for (int64_t d = 0; d < D; d += 16)
      _mm512_storeu_ps(a + d, _mm512_fmadd_ps(pv, load16(b + d), _mm512_loadu_ps(a + d)));
    return;
  }
#endif
  for (int64_t d = 0; d < D; ++d) a[d] += p * static_cast<float>(b[d]);
}

template <typename T>
void decode_attention(const T* q, const T* cache, const int64_t* tables, const int64_t* bounds,
                      T* out, int64_t R, int64_t H, int64_t KVH, int64_t D, int64_t N,
                      int64_t block_size, float scale) {
  const int64_t G = H / KVH;
  const int64_t slot_stride = 2 * KVH * D;
  // A task is one sequence and a run of its kv heads: all of them when there are enough
  // sequences to keep the threads busy (each slot's keys and values then stream once).
  const int64_t split = R >= 2 * at::get_num_threads() ? 1 : KVH;
  const int64_t heads_per_task = KVH / split;
  at::parallel_for(0, R * split, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf, acc, scores, inv_sum;
    std::vector<int64_t> slots;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / split, g0 = (task % split) * heads_per_task;
      const int64_t nq = heads_per_task * G;  // query heads of this task: g0 * G ..
      const int64_t s0 = bounds[2 * r], s1 = bounds[2 * r + 1], L = s1 - s0;
      const int64_t* table = tables + r * N;
      qf.resize(nq * D);
      for (int64_t i = 0; i < nq * D; ++i) qf[i] = static_cast<float>(q[(r * H + g0 * G) * D + i]);
      slots.resize(L);
      for (int64_t i = 0; i < L; ++i) {
        const int64_t pos = s0 + i;
        slots[i] = table[pos / block_size] * block_size + pos % block_size;
      }
      scores.resize(nq * L);
      for (int64_t i = 0; i < L; ++i) {
        const T* k = cache + slots[i] * slot_stride + g0 * D;
        for (int64_t h = 0; h < nq; ++h)
          scores[h * L + i] = scale * dot(qf.data() + h * D, k + (h / G) * D, D);
      }
      inv_sum.resize(nq);
      for (int64_t h = 0; h < nq; ++h) {
        float* s = scores.data() + h * L;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < L; ++i) m = std::max(m, s[i]);
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < L; ++i) {
          s[i] = expf(s[i] - m);
          sum += s[i];
        }
        inv_sum[h] = 1.f / sum;
      }
      acc.assign(nq * D, 0.f);
      for (int64_t i = 0; i < L; ++i) {
        const T* v = cache + slots[i] * slot_stride + (KVH + g0) * D;
        for (int64_t h = 0; h < nq; ++h)
          axpy(acc.data() + h * D, scores[h * L + i], v + (h / G) * D, D);
      }
      for (int64_t h = 0; h < nq; ++h)
        for (int64_t d = 0; d < D; ++d)
          out[(r * H + g0 * G + h) * D + d] = static_cast<T>(acc[h * D + d] * inv_sum[h]);
    }
  });
}

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& kv_cache,
                                  const at::Tensor& block_tables, const at::Tensor& bounds,
                                  int64_t block_size, double scale) {
  TORCH_CHECK(q.dim() == 3 && kv_cache.dim() == 3, "q (R, H, D) and kv_cache (S, 2 * KVH, D)");
  TORCH_CHECK(q.scalar_type() == kv_cache.scalar_type(), "q and kv_cache share one dtype");
  TORCH_CHECK(q.is_contiguous() && kv_cache.is_contiguous(), "q and kv_cache must be contiguous");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && bounds.scalar_type() == at::kLong,
              "block_tables and bounds are int64");
  TORCH_CHECK(block_tables.is_contiguous() && bounds.is_contiguous(), "tables must be contiguous");
  const int64_t R = q.size(0), H = q.size(1), D = q.size(2), KVH = kv_cache.size(1) / 2;
  TORCH_CHECK(kv_cache.size(2) == D && KVH > 0 && H % KVH == 0, "head sizes do not match");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == R, "block_tables (R, N)");
  TORCH_CHECK(bounds.dim() == 2 && bounds.size(0) == R && bounds.size(1) == 2, "bounds (R, 2)");
  const int64_t N = block_tables.size(1);
  const int64_t* b = bounds.data_ptr<int64_t>();
  const int64_t* t = block_tables.data_ptr<int64_t>();
  const int64_t num_blocks = kv_cache.size(0) / block_size;
  for (int64_t r = 0; r < R; ++r) {
    TORCH_CHECK(0 <= b[2 * r] && b[2 * r] < b[2 * r + 1] && b[2 * r + 1] <= N * block_size,
                "bounds out of the block table");
    for (int64_t i = b[2 * r] / block_size; i <= (b[2 * r + 1] - 1) / block_size; ++i)
      TORCH_CHECK(0 <= t[r * N + i] && t[r * N + i] < num_blocks, "block id out of the cache");
  }
  at::Tensor out = at::empty_like(q);
  if (q.scalar_type() == at::kFloat) {
    decode_attention<float>(q.data_ptr<float>(), kv_cache.data_ptr<float>(),
                            block_tables.data_ptr<int64_t>(), b, out.data_ptr<float>(), R, H,
                            KVH, D, N, block_size, static_cast<float>(scale));
  } else {
    TORCH_CHECK(q.scalar_type() == at::kBFloat16, "float32 or bfloat16");
    decode_attention<c10::BFloat16>(
        q.data_ptr<c10::BFloat16>(), kv_cache.data_ptr<c10::BFloat16>(),
        block_tables.data_ptr<int64_t>(), b, out.data_ptr<c10::BFloat16>(), R, H, KVH, D, N,
        block_size, static_cast<float>(scale));
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(levant, m) {
  m.def(
      "paged_decode_attention(Tensor q, Tensor kv_cache, Tensor block_tables, Tensor bounds, "
      "int block_size, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(levant, CPU, m) { m.impl("paged_decode_attention", &paged_decode_attention); }
