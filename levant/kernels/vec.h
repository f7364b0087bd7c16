// The float vector helpers the attention kernels share (decode_attention.cpp,
// prefill_attention.cpp): vec is a 16-lane register with AVX-512, an 8-lane one with AVX2
// (with FMA); v* are the operations on it, vexp a vector exp, exp_shifted a softmax's
// exponentials, prefetch_l2 the prefetch of the keys and values they read next.
// LEVANT_ATTN_SIMD says whether there is a vector path at all (else the kernels take
// their plain loops).
#pragma once

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define LEVANT_ATTN_SIMD 1
#include <immintrin.h>
#endif

#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdint>

namespace levant_kernels {

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
inline vec vmax(vec a, vec b) { return _mm512_max_ps(a, b); }
inline vec vdiv(vec a, vec b) { return _mm512_div_ps(a, b); }
// s where lo <= kp <= hi, else x (per lane: a key position against a query's bounds).
inline vec vhide(vec s, float kp, vec lo, vec hi, vec x) {
  const vec k = vset1(kp);
  const __mmask16 out = _mm512_cmp_ps_mask(k, lo, _CMP_LT_OQ) | _mm512_cmp_ps_mask(k, hi, _CMP_GT_OQ);
  return _mm512_mask_blend_ps(out, s, x);
}
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
inline vec vmax(vec a, vec b) { return _mm256_max_ps(a, b); }
inline vec vdiv(vec a, vec b) { return _mm256_div_ps(a, b); }
inline vec vhide(vec s, float kp, vec lo, vec hi, vec x) {
  const vec k = vset1(kp);
  const vec out = _mm256_or_ps(_mm256_cmp_ps(k, lo, _CMP_LT_OQ), _mm256_cmp_ps(k, hi, _CMP_GT_OQ));
  return _mm256_blendv_ps(s, x, out);
}
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

// The cache lines of [p, p + bytes) into L2 (T1), not L1 (T0): a prefetch into L1 holds
// one of L1's few miss buffers until its line arrives, and a block's worth of them stalled
// the loads of the block being computed. On a 2-core EPYC (Zen 4), decode attention over
// 30 layers of 16 sequences x 170 positions (63 MB of bf16 keys and values, scattered
// blocks): 6.2-6.5 ms with T0, 4.1-4.5 with T1 (4.5 also prefetching two blocks ahead;
// 7.4-9.3 with no prefetch).
inline void prefetch_l2(const void* p, int64_t bytes) {
#if defined(LEVANT_ATTN_SIMD)
  for (int64_t off = 0; off < bytes; off += 64)
    _mm_prefetch(static_cast<const char*>(p) + off, _MM_HINT_T1);
#else
  (void)p, (void)bytes;
#endif
}

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

}  // namespace levant_kernels
