// levant::q8_matmul -- y = x @ W^T for int8 weights with one scale per output (symmetric,
// as Int8Linear keeps them) on AVX-512 VNNI or AVX2, for steps of a few rows: above all the output
// head, a fifth of the bytes a single-sequence step of SmolLM2 reads, where PyTorch's
// int8 kernel (bf16 activations) streams them at two thirds of this one's speed.
//
// The activations are quantized per row and group of 32 to int8 (quantize_rows.h, as for
// q4_matmul). vpdpbusd multiplies unsigned by signed bytes, so the weights are stored plus
// 128 and each group's dot product is corrected in integers:
//   y[r][n] = s[n] * sum_g d_x[r][g] * (sum_i (w[n][i] + 128) q_x[r][i] - 128 sum_i q_x[r][i])
//
// packed  (N / 16, K / 4, 64) uint8: in output tile t, byte 4 j + i of quad p holds
//         w[16 t + j][4 p + i] + 128 (j < 16 outputs, i < 4 inputs)
// scales  (N,) float32
// x       (M, K) float32, K a multiple of 32 -> y (M, N) float32
//
// With AVX2 (no VNNI) half_rows multiplies the signed weights directly (vpsignb,
// vpmaddubsw, vpmaddwd): the same integers, no correction. Without either the op computes
// the same arithmetic in plain loops (for tests; callers use PyTorch's kernel where
// ``levant::q4_available()`` is false).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "amx.h"
#include "ops.h"
#include "parallel.h"
#include "quantize_rows.h"

namespace {

using levant_kernels::GROUP;
using levant_kernels::QuantizedRows;
using levant_kernels::quantize_rows;
using levant_kernels::for_row_chunks;
using levant_kernels::with_rows;

constexpr int64_t TILE = 16;               // outputs per tile (one 16-lane register)
constexpr int64_t QUADS = GROUP / 4;       // 4-input quads per group
constexpr int64_t ROWS = 4;                // rows per pass over a tile's weights

#ifdef LEVANT_VNNI
// acc += d_x * (dot - 128 sum(q_x)) for group rg of a row: one group's integer products
// scaled (the VNNI and AMX paths share it, so they give the same floats).
inline __m512 add_group(__m512 acc, __m512i dot, const QuantizedRows& xq, int64_t rg) {
  const __m512i exact = _mm512_sub_epi32(dot, _mm512_set1_epi32(128 * xq.sum[rg]));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), _mm512_set1_ps(xq.d[rg]), acc);
}

// Rows r0 .. r0 + MT - 1 of output tile t, times the outputs' scales, into y.
template <int MT>
inline void store_rows(const __m512 (&acc)[MT], const float* scales, float* y, int64_t r0,
                       int64_t t, int64_t N) {
  const __m512 s = _mm512_loadu_ps(scales + t * TILE);
  for (int r = 0; r < MT; ++r) _mm512_storeu_ps(y + (r0 + r) * N + t * TILE, _mm512_mul_ps(acc[r], s));
}

// Rows r0 .. r0 + MT - 1 of output tile t.
template <int MT>
inline void tile_rows(const uint8_t* packed, const float* scales, const QuantizedRows& xq,
                      float* y, int64_t r0, int64_t t, int64_t K, int64_t N) {
  const int64_t G = K / GROUP;
  __m512 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm512_setzero_ps();
  const uint8_t* w = packed + t * (K / 4) * 64;
  for (int64_t g = 0; g < G; ++g, w += QUADS * 64) {
    __m512i dot[MT];
    for (int r = 0; r < MT; ++r) dot[r] = _mm512_setzero_si512();
    for (int p = 0; p < QUADS; ++p) {
      const __m512i v = _mm512_loadu_si512(w + 64 * p);
      for (int r = 0; r < MT; ++r) {
        const int32_t* xr = reinterpret_cast<const int32_t*>(xq.q.data() + (r0 + r) * K + g * GROUP);
        dot[r] = levant_kernels::dpbusd_bcast(dot[r], v, xr + p);
      }
    }
    for (int r = 0; r < MT; ++r) acc[r] = add_group(acc[r], dot[r], xq, (r0 + r) * G + g);
  }
  store_rows<MT>(acc, scales, y, r0, t, N);
}
#endif

#ifdef LEVANT_AMX
using levant_kernels::AMX_ROWS;

// The rows for which the AMX path runs: a decode batch's (the output head of SmolLM2 on a
// 2-core Xeon: 1.50 against 2.46 ms at 16 rows, 2.37 against 3.20 at 32; 0.75 against 0.68
// at 4; from 64 rows the VNNI loop is ahead again, 7.3 against 8.5 ms, as each group's
// products go through memory to be scaled: python -m bench.kernels).
constexpr int64_t AMX_MIN_ROWS = 8, AMX_MAX_ROWS = 32;

// Rows r0 .. r0 + MT - 1 of output tile t with tile products (amx.h): the packed weights
// are already the tiles' layout (a group is 8 quads of 64 bytes), read in place; each
// group's int32 products are scaled as tile_rows scales them.
template <int MT>
inline void amx_rows(const uint8_t* packed, const float* scales, const QuantizedRows& xq,
                     float* y, int64_t r0, int64_t t, int64_t K, int64_t N) {
  const int64_t G = K / GROUP;
  __m512 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm512_setzero_ps();
  auto scale_group = [&](int64_t g, const int32_t* dot) {
    for (int r = 0; r < MT; ++r)
      acc[r] = add_group(acc[r], _mm512_load_si512(dot + TILE * r), xq, (r0 + r) * G + g);
  };
  levant_kernels::tile_products(xq.q.data() + r0 * K, K, packed + t * (K / 4) * 64, QUADS * 64, G,
                                scale_group);
  store_rows<MT>(acc, scales, y, r0, t, N);
}
#endif

#ifdef LEVANT_AVX2
// Rows r0 .. r0 + MT - 1 of outputs 16 t + 8 h .. 16 t + 8 h + 7 (bytes 32 h .. 32 h + 31 of
// each quad's 64). Without VNNI: the signed weight w = byte ^ 0x80, and |w| times x with w's
// sign (vpsignb) through vpmaddubsw (pairs of at most 2 * 127 * 127, inside int16), then
// vpmaddwd: the exact dot product sum w x, so no 128 * sum(x) correction.
template <int MT>
inline void half_rows(const uint8_t* packed, const float* scales, const QuantizedRows& xq,
                      float* y, int64_t r0, int64_t t, int h, int64_t K, int64_t N) {
  const int64_t G = K / GROUP;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm256_setzero_ps();
  const uint8_t* w = packed + t * (K / 4) * 64 + 32 * h;
  for (int64_t g = 0; g < G; ++g, w += QUADS * 64) {
    __m256i dot[MT];
    for (int r = 0; r < MT; ++r) dot[r] = _mm256_setzero_si256();
    for (int p = 0; p < QUADS; ++p) {
      const __m256i ws = _mm256_xor_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * p)), flip);
      const __m256i aw = _mm256_abs_epi8(ws);
      for (int r = 0; r < MT; ++r) {
        const int32_t* xr = reinterpret_cast<const int32_t*>(xq.q.data() + (r0 + r) * K + g * GROUP);
        const __m256i pairs = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(_mm256_set1_epi32(xr[p]), ws));
        dot[r] = levant_kernels::opaque(_mm256_add_epi32(dot[r], _mm256_madd_epi16(pairs, ones)));
      }
    }
    for (int r = 0; r < MT; ++r) {
      const int64_t rg = (r0 + r) * G + g;
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[r]), _mm256_set1_ps(xq.d[rg]), acc[r]);
    }
  }
  const __m256 sc = _mm256_loadu_ps(scales + t * TILE + 8 * h);
  for (int r = 0; r < MT; ++r)
    _mm256_storeu_ps(y + (r0 + r) * N + t * TILE + 8 * h, _mm256_mul_ps(acc[r], sc));
}
#endif

// The same arithmetic in plain loops.
void reference_tile(const uint8_t* packed, const float* scales, const QuantizedRows& xq, float* y,
                    int64_t M, int64_t t, int64_t K, int64_t N) {
  const int64_t G = K / GROUP;
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < TILE; ++j) {
      float acc = 0.f;
      for (int64_t g = 0; g < G; ++g) {
        int32_t dot = 0;
        for (int64_t i = 0; i < GROUP; ++i) {
          const int64_t k = g * GROUP + i;
          dot += static_cast<int32_t>(packed[(t * (K / 4) + k / 4) * 64 + 4 * j + k % 4]) *
                 xq.q[r * K + k];
        }
        acc += static_cast<float>(dot - 128 * xq.sum[r * G + g]) * xq.d[r * G + g];
      }
      y[r * N + t * TILE + j] = acc * scales[t * TILE + j];
    }
}

at::Tensor q8_matmul(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "x: contiguous (M, K) float32");
  const int64_t M = x.size(0), K = x.size(1);
  const int64_t N = levant_kernels::check_q8_weight(packed, scales, K);
  at::Tensor y = at::empty({M, N}, x.options());
  levant_kernels::q8_matmul_into(x.data_ptr<float>(), M, K, packed.data_ptr<uint8_t>(),
                                 scales.data_ptr<float>(), N, y.data_ptr<float>());
  return y;
}

}  // namespace

namespace levant_kernels {

int64_t check_q8_weight(const at::Tensor& packed, const at::Tensor& scales, int64_t K) {
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kByte && packed.is_contiguous() &&
                  packed.size(2) == 64,
              "packed: contiguous (N / 16, K / 4, 64) uint8");
  const int64_t N = packed.size(0) * TILE;
  TORCH_CHECK(K % GROUP == 0 && packed.size(1) * 4 == K, "K does not match the packing");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.dim() == 1 &&
                  scales.size(0) == N,
              "scales: contiguous (N,) float32");
  return N;
}

void q8_matmul_into(const float* x, int64_t M, int64_t K, const uint8_t* w, const float* s,
                    int64_t N, float* out) {
  if (M == 0) return;
#ifdef LEVANT_AMX
  if (M >= AMX_MIN_ROWS && M <= AMX_MAX_ROWS && levant_kernels::amx_on()) {
    levant_kernels::count_amx_matmul();
    const QuantizedRows xq = quantize_rows(x, M, K, AMX_ROWS);
    at::parallel_for(0, N / TILE, 8, [&](int64_t begin, int64_t end) {
      levant_kernels::TileScope tiles;
      for (int64_t t = begin; t < end; ++t)
        for (int64_t r0 = 0; r0 < M; r0 += AMX_ROWS)
          with_rows<AMX_ROWS>(std::min<int64_t>(AMX_ROWS, M - r0), [&](auto mt) {
            amx_rows<decltype(mt)::value>(w, s, xq, out, r0, t, K, N);
          });
    });
    return;
  }
#endif
  const QuantizedRows xq = quantize_rows(x, M, K);
  levant_kernels::parallel_chunks(N / TILE, levant_kernels::chunk_for(N / TILE, 8), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
#ifdef LEVANT_VNNI
      for_row_chunks<ROWS>(M, [&](int64_t r0, auto mt) {
        tile_rows<decltype(mt)::value>(w, s, xq, out, r0, t, K, N);
      });
#elif defined(LEVANT_AVX2)
      for (int h = 0; h < 2; ++h)
        for_row_chunks<ROWS>(M, [&](int64_t r0, auto mt) {
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
  m.def("q8_matmul(Tensor x, Tensor packed, Tensor scales) -> Tensor");
}

TORCH_LIBRARY_IMPL(levant, CPU, m) { m.impl("q8_matmul", &q8_matmul); }
