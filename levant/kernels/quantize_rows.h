// What levant::q4_matmul and levant::q8_matmul share. Activations quantized for their int8
// dot products:
// per row and group of 32 inputs, q = round(x / d) in -127..127 with d = max |x| / 127 (as
// llama.cpp's Q8_1 does), and per group d, the integer sum of q and d times it; and, with
// VNNI, their dot product instruction with the activations' 4 bytes broadcast (dpbusd_bcast).
#pragma once

#include <ATen/Parallel.h>

// The vector path q4_matmul and q8_matmul compile: AVX-512 VNNI, else AVX2 (with FMA),
// else neither (their plain loops).
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define LEVANT_VNNI 1
#elif defined(__AVX2__) && defined(__FMA__)
#define LEVANT_AVX2 1
#endif

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(LEVANT_AVX2)
namespace levant_kernels {
// The value, through an empty asm: GCC cannot reassociate a chain of adds across it (it
// rebalanced the AVX2 kernels' chains into trees whose live products spilled to the stack).
inline __m256i opaque(__m256i v) {
  asm("" : "+x"(v));
  return v;
}
}  // namespace levant_kernels
#endif

#if defined(LEVANT_VNNI)
namespace levant_kernels {
// acc += w (64 unsigned bytes) . 4 signed bytes at x, broadcast to the 16 lanes: one
// vpdpbusd with an embedded broadcast ({1to16}) of its memory operand. GCC compiles
// _mm512_set1_epi32(*x) into a separate vpbroadcastd here; folded, the 512-row int4
// matmuls of a SmolLM2 prefill step take 250-264 ms instead of 258-272 (2-core Zen 4).
inline __m512i dpbusd_bcast(__m512i acc, __m512i w, const int32_t* x) {
  asm("vpdpbusd %[x]%{1to16%}, %[w], %[acc]" : [acc] "+v"(acc) : [w] "v"(w), [x] "m"(*x));
  return acc;
}
}  // namespace levant_kernels
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "tiles.h"

namespace levant_kernels {

constexpr int64_t GROUP = 32;

struct QuantizedRows {
  std::vector<int8_t> q;      // (M, K), then zero rows up to quantize_rows's row_multiple
  std::vector<float> d;       // (M, K / GROUP)
  std::vector<float> dsum;    // d * sum(q), per group
  std::vector<int32_t> sum;   // sum(q), per group
};

// One group of 32: q = round(x / d) (to nearest even, as nearbyint) into q, returns d and
// sets sum. The AVX2 path computes the same values (max and products are exact, and
// vcvtps2dq rounds as nearbyint does); a step's activations were 2 ns per input with the
// plain loop, a sixth of a 16-row int4 matmul on AVX2.
inline float quantize_group(const float* xs, int8_t* q, int32_t& sum) {
#if defined(__AVX2__)
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 v[4];
  for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xs + 8 * i);
  __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                           _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  const float amax = _mm_cvtss_f32(h);
  const float d = amax / 127.f, inv = d > 0.f ? 1.f / d : 0.f;
  const __m256 iv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  __m256i n[4];
  for (int i = 0; i < 4; ++i)
    n[i] = _mm256_max_epi32(lo, _mm256_min_epi32(hi, _mm256_cvtps_epi32(_mm256_mul_ps(v[i], iv))));
  const __m256i s4 = _mm256_add_epi32(_mm256_add_epi32(n[0], n[1]), _mm256_add_epi32(n[2], n[3]));
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
  sum = _mm_cvtsi128_si32(t);
  // int32 -> int8: the packs interleave 128-bit lanes; one permute restores the order.
  const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(n[0], n[1]), _mm256_packs_epi32(n[2], n[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  return d;
#else
  float amax = 0.f;
  for (int64_t i = 0; i < GROUP; ++i) amax = std::max(amax, std::fabs(xs[i]));
  const float d = amax / 127.f, inv = d > 0.f ? 1.f / d : 0.f;
  sum = 0;
  for (int64_t i = 0; i < GROUP; ++i) {
    const int32_t v = static_cast<int32_t>(std::nearbyint(xs[i] * inv));
    q[i] = static_cast<int8_t>(std::clamp(v, -127, 127));
    sum += q[i];
  }
  return d;
#endif
}

// x (M, K) float32, K a multiple of GROUP. q holds M rounded up to a multiple of
// row_multiple rows, the extra ones zeros (whole 16-row tiles for q8_matmul's AMX path).
inline QuantizedRows quantize_rows(const float* x, int64_t M, int64_t K, int64_t row_multiple = 1) {
  const int64_t G = K / GROUP;
  const int64_t padded = (M + row_multiple - 1) / row_multiple * row_multiple;
  QuantizedRows out{std::vector<int8_t>(padded * K), std::vector<float>(M * G),
                    std::vector<float>(M * G), std::vector<int32_t>(M * G)};
  // A grain of 512 groups (16K inputs, microseconds of work): a few-row step quantizes on
  // the calling thread, without the fork and join of a parallel region.
  at::parallel_for(0, M * G, 512, [&](int64_t begin, int64_t end) {
    for (int64_t rg = begin; rg < end; ++rg) {
      const int64_t offset = (rg / G) * K + (rg % G) * GROUP;
      int32_t sum = 0;
      const float d = quantize_group(x + offset, out.q.data() + offset, sum);
      out.d[rg] = d;
      out.dsum[rg] = d * static_cast<float>(sum);
      out.sum[rg] = sum;
    }
  });
  return out;
}

}  // namespace levant_kernels
