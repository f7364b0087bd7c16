// levant::q4_matmul -- y = x @ W^T for 4-bit weights in groups of 32 (GGUF Q4_1 arithmetic:
// w = d * q + m, q in 0..15) on AVX-512 VNNI or AVX2, for decode steps and prefill chunks.
//
// The activations are quantized per row and group of 32 to int8 with one scale (as
// llama.cpp's Q8_1 does for its Q4_1 dot products; quantize_rows.h); each group's integer
// dot product is one vpdpbusd per 4 inputs for 16 outputs, then y += d_w * d_x * dot + m_w * d_x * sum(q_x).
// The weights are read once per call for every 8 rows, from a layout packed at load
// (scale and zero in bf16, as the model keeps them: a single-row step is bound by the bytes
// it reads, and float32 scales were a third of them):
//
// packed  (N / 16, K / 32, 4, 64) uint8: for output tile t, group g and quad pair p, byte
//         4 * j + i holds q[16 t + j][32 g + 8 p + i] in its low nibble and
//         q[16 t + j][32 g + 8 p + 4 + i] in its high nibble (j < 16 outputs, i < 4 inputs)
// scales  (N / 16, K / 32, 2, 16) bfloat16: s then z of each output of the tile, per group,
//         w = s * (q - 8) + z, i.e. d = s and m = z - 8 s (computed in float32, one rounding)
// x       (M, K) float32 -> y (M, N) float32
//
// Without VNNI, AVX2 does each 4-input dot product in two instructions (half_rows, 8
// outputs at a time): 2.3 to 3.3 times PyTorch's int4 kernel on a 2-core EPYC without
// AVX-512. ``levant::q4_available()`` says whether this build has either path; without
// them the op computes the same arithmetic in plain loops (for tests; callers use
// PyTorch's kernels).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ops.h"
#include "parallel.h"
#include "quantize_rows.h"

namespace {

using levant_kernels::GROUP;
using levant_kernels::QuantizedRows;
using levant_kernels::quantize_rows;
using levant_kernels::for_row_chunks;

constexpr int64_t TILE = 16;  // outputs per tile (one 16-lane register)

// d and m of a tile's output j in group g, from its bf16 scale and zero.
inline float scale_d(const uint16_t* s, int64_t j) {
  return static_cast<float>(c10::BFloat16(s[j], c10::BFloat16::from_bits()));
}
inline float scale_m(const uint16_t* s, int64_t j) {
  return std::fma(-8.f, scale_d(s, j), scale_d(s, TILE + j));
}

#ifdef LEVANT_VNNI
// 16 bf16 values (the top halves of float32s) -> 16 float32.
inline __m512 bf16x16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Rows r0 .. r0 + MT - 1 of output tile t.
template <int MT>
inline void tile_rows(const uint8_t* packed, const uint16_t* scales, const QuantizedRows& xq,
                      float* y, int64_t r0, int64_t t, int64_t K, int64_t N) {
  const int64_t G = K / GROUP;
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm512_setzero_ps();
  const uint8_t* w = packed + t * G * 256;
  const uint16_t* s = scales + t * G * 32;
  const __m512 eight = _mm512_set1_ps(8.f);
  for (int64_t g = 0; g < G; ++g, w += 256, s += 32) {
    __m512i dot[MT];
    for (int r = 0; r < MT; ++r) dot[r] = _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) {
      const __m512i v = _mm512_loadu_si512(w + 64 * p);
      const __m512i lo = _mm512_and_si512(v, low);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      for (int r = 0; r < MT; ++r) {
        const int32_t* xr = reinterpret_cast<const int32_t*>(xq.q.data() + (r0 + r) * K + g * GROUP);
        dot[r] = levant_kernels::dpbusd_bcast(dot[r], lo, xr + 2 * p);
        dot[r] = levant_kernels::dpbusd_bcast(dot[r], hi, xr + 2 * p + 1);
      }
    }
    const __m512i sz = _mm512_loadu_si512(s);
    const __m512 dw = bf16x16(_mm512_castsi512_si256(sz));
    const __m512 mw = _mm512_fnmadd_ps(eight, dw, bf16x16(_mm512_extracti64x4_epi64(sz, 1)));
    for (int r = 0; r < MT; ++r) {
      const int64_t rg = (r0 + r) * G + g;
      const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xq.d[rg]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r]), scale, acc[r]);
      acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xq.dsum[rg]), acc[r]);
    }
  }
  for (int r = 0; r < MT; ++r) _mm512_storeu_ps(y + (r0 + r) * N + t * TILE, acc[r]);
}
#endif

#ifdef LEVANT_AVX2
// 8 bf16 values -> 8 float32.
inline __m256 bf16x8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Rows r0 .. r0 + MT - 1 of outputs 16 t + 8 h .. 16 t + 8 h + 7 (half h of tile t, whose
// bytes are 32 h .. 32 h + 31 of each 64-byte line). Without VNNI a 4-input dot product is
// vpmaddubsw (pairs, int16) then vpmaddwd (pairs of those, int32). A group's int16 partial
// sums stay below 2^15 (8 terms of at most 2 * 15 * 127), so they add up in int16 and are
// widened once per group; the float arithmetic is the VNNI path's, in the same order.
// Each add's result passes through opaque(): GCC rebalanced the plain chain into a tree
// whose 32 live products spilled to the stack, twice the instructions. (A saturating add
// also kept the chain, but on Zen 3 vpaddsw issues on the two pipes vpmaddubsw needs,
// where vpaddw has four: 1,024 x 576 at 64 rows, one thread, 24.3 -> 27.4 int8 MACs per
// cycle on a 2-core Zen 3; at 16 rows 22.8 -> 23.2.)
template <int MT>
inline void half_rows(const uint8_t* packed, const uint16_t* scales, const QuantizedRows& xq,
                      float* y, int64_t r0, int64_t t, int h, int64_t K, int64_t N) {
  const int64_t G = K / GROUP;
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256 eight = _mm256_set1_ps(8.f);
  __m256 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm256_setzero_ps();
  const uint8_t* w = packed + t * G * 256 + 32 * h;
  const uint16_t* s = scales + t * G * 32 + 8 * h;
  for (int64_t g = 0; g < G; ++g, w += 256, s += 32) {
    __m256i dot[MT];
    for (int r = 0; r < MT; ++r) dot[r] = _mm256_setzero_si256();
    for (int p = 0; p < 4; ++p) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * p));
      const __m256i lo = _mm256_and_si256(v, low);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      for (int r = 0; r < MT; ++r) {
        const int32_t* xr = reinterpret_cast<const int32_t*>(xq.q.data() + (r0 + r) * K + g * GROUP);
        dot[r] = levant_kernels::opaque(_mm256_add_epi16(dot[r], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(xr[2 * p]))));
        dot[r] = levant_kernels::opaque(_mm256_add_epi16(dot[r], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(xr[2 * p + 1]))));
      }
    }
    const __m256 dw = bf16x8(s);
    const __m256 mw = _mm256_fnmadd_ps(eight, dw, bf16x8(s + TILE));
    for (int r = 0; r < MT; ++r) {
      const int64_t rg = (r0 + r) * G + g;
      const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xq.d[rg]));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(dot[r], ones)), scale, acc[r]);
      acc[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xq.dsum[rg]), acc[r]);
    }
  }
  for (int r = 0; r < MT; ++r) _mm256_storeu_ps(y + (r0 + r) * N + t * TILE + 8 * h, acc[r]);
}
#endif

// The same arithmetic in plain loops.
void reference_tile(const uint8_t* packed, const uint16_t* scales, const QuantizedRows& xq, float* y,
                    int64_t M, int64_t t, int64_t K, int64_t N) {
  const int64_t G = K / GROUP;
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < TILE; ++j) {
      float acc = 0.f;
      for (int64_t g = 0; g < G; ++g) {
        const uint8_t* w = packed + (t * G + g) * 256;
        const uint16_t* s = scales + (t * G + g) * 32;
        int32_t dot = 0;
        for (int64_t p = 0; p < 4; ++p)
          for (int64_t i = 0; i < 4; ++i) {
            const uint8_t b = w[64 * p + 4 * j + i];
            dot += (b & 0x0F) * xq.q[r * K + g * GROUP + 8 * p + i];
            dot += (b >> 4) * xq.q[r * K + g * GROUP + 8 * p + 4 + i];
          }
        acc += scale_d(s, j) * xq.d[r * G + g] * static_cast<float>(dot) +
               scale_m(s, j) * xq.dsum[r * G + g];
      }
      y[r * N + t * TILE + j] = acc;
    }
}

at::Tensor q4_matmul(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "x: contiguous (M, K) float32");
  const int64_t M = x.size(0), K = x.size(1);
  const int64_t N = levant_kernels::check_q4_weight(packed, scales, K);
  at::Tensor y = at::empty({M, N}, x.options());
  levant_kernels::q4_matmul_into(x.data_ptr<float>(), M, K, packed.data_ptr<uint8_t>(),
                                 reinterpret_cast<const uint16_t*>(scales.data_ptr<at::BFloat16>()),
                                 N, y.data_ptr<float>());
  return y;
}

bool q4_available() {
#if defined(LEVANT_VNNI) || defined(LEVANT_AVX2)
  return true;
#else
  return false;
#endif
}

}  // namespace

namespace levant_kernels {

int64_t check_q4_weight(const at::Tensor& packed, const at::Tensor& scales, int64_t K) {
  TORCH_CHECK(packed.dim() == 4 && packed.scalar_type() == at::kByte && packed.is_contiguous() &&
                  packed.size(2) == 4 && packed.size(3) == 64,
              "packed: contiguous (N / 16, K / 32, 4, 64) uint8");
  const int64_t NT = packed.size(0);
  TORCH_CHECK(K % GROUP == 0 && packed.size(1) == K / GROUP, "K does not match the packing");
  TORCH_CHECK(scales.scalar_type() == at::kBFloat16 && scales.is_contiguous() && scales.dim() == 4 &&
                  scales.size(0) == NT && scales.size(1) == K / GROUP && scales.size(2) == 2 &&
                  scales.size(3) == TILE,
              "scales: contiguous (N / 16, K / 32, 2, 16) bfloat16");
  return NT * TILE;
}

void q4_matmul_into(const float* x, int64_t M, int64_t K, const uint8_t* w, const uint16_t* s,
                    int64_t N, float* out) {
  if (M == 0) return;
  const QuantizedRows xq = quantize_rows(x, M, K);
  levant_kernels::parallel_chunks(N / TILE, levant_kernels::chunk_for(N / TILE), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
#ifdef LEVANT_VNNI
      for_row_chunks<8>(M, [&](int64_t r0, auto mt) {
        tile_rows<decltype(mt)::value>(w, s, xq, out, r0, t, K, N);
      });
#elif defined(LEVANT_AVX2)
      for (int h = 0; h < 2; ++h)
        for_row_chunks<4>(M, [&](int64_t r0, auto mt) {
          half_rows<decltype(mt)::value>(w, s, xq, out, r0, t, h, K, N);
        });
#else
      reference_tile(w, s, xq, out, M, t, K, N);
#endif
    }
  });
}

}  // namespace levant_kernels

TORCH_LIBRARY_FRAGMENT(levant, m) {
  m.def("q4_matmul(Tensor x, Tensor packed, Tensor scales) -> Tensor");
  m.def("q4_available() -> bool", &q4_available);
}

TORCH_LIBRARY_IMPL(levant, CPU, m) { m.impl("q4_matmul", &q4_matmul); }
