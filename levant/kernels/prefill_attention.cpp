// levant::paged_prefill_attention -- causal attention for one sequence's chunk of T new
// tokens (a prefill chunk), keys and values read from the paged KV cache, where the
// chunk's own are already written.
//
// q            (T, H, D) float32     queries at positions cached .. cached + T - 1
// kv_cache     (S, 2 * KVH, D)       one layer's cache, float32 or bfloat16 (the layout of
//                                    paged_decode_attention: keys' heads, then values')
// block_table  (N,) int64            the sequence's blocks; position p is in p / block_size
// cached, window                     positions before the chunk; the sliding window (0: none)
// -> (T, H, D) float32: softmax(q k^T * scale) v per query head over the positions it sees,
//    [max(0, p - window + 1), p] for the query at p; query head h reads kv head h / (H / KVH).
//
// Flash attention, one task per kv head and tile of TQ queries (TQ the vector width): the
// task's G = H / KVH query heads times TQ queries are the lanes of G vectors, so the
// softmax's running max and sum are lane-wise (no horizontal reduction), and each tile of
// KT keys costs two small matrix products in registers: scores S^T (KT x G TQ) = K Q^T,
// then O (G TQ x D) = O * correction + P V. A tile's keys and values are converted to
// float32 once, into the task's buffer. Tasks start with the most keys (the last queries):
// each thread takes the next from a shared counter, so the causal triangle balances.
// SmolLM2-135M, 1,004-token prompt in chunks of 256, 2 threads on a 2-core EPYC: see
// docs/benchmarks.md (PyTorch's SDPA with a mask was a third of the prefill).
//
// Where the CPU has AMX-BF16 (amx.h: granted and not switched off) and the cache is bf16
// with blocks of a multiple of 16 keys, the scores of each 16 keys are tile products read
// straight from the cache (no conversion to float32): the queries split into bf16 halves
// (hi + lo, so nothing a float32 product would keep is lost, as in decode attention), the
// sums in float32; and P V too: the weights transposed into tiles of 16 lanes x 32 keys,
// split hi + lo the same way, the values (exact in bf16) interleaved in key pairs from the
// cache. 30 layers of 9 query heads over 3 kv heads on a 2-core Xeon: 28 queries after 976
// cached positions 9.6 -> 7.3 ms, 256 after 768 72 -> 47 ms.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <type_traits>
#include <cstdint>
#include <vector>

#include "amx.h"
#include "ops.h"
#include "tiles.h"
#include "vec.h"

namespace {

using namespace levant_kernels;  // vec.h, tiles.h

constexpr int64_t KT = 64;       // keys per tile
constexpr float NEG = -1e30f;    // a hidden score (finite: NEG - NEG is 0, not NaN)
#if defined(LEVANT_ATTN_SIMD)
constexpr int64_t TQ = W;        // queries per task: one vector of lanes per query head
constexpr int CV = W == 16 ? 4 : 2;  // vectors per row of a register tile
constexpr int RB = 6;                // rows of a register tile
#else
constexpr int64_t TQ = 16;
#endif

// C (M x N) = A B, or C * rs[r] + A B per row r when rs is given; A's element (r, k) is
// A[r * ars + k * aks] (either layout: keys' rows, or a transposed P), B row-major.
// With a vector path, N a multiple of W: register tiles of RB rows x CV vectors.
void matmul(const float* A, int64_t ars, int64_t aks, const float* B, int64_t ldb, float* C,
            int64_t ldc, int64_t M, int64_t N, int64_t K, const float* rs) {
#if defined(LEVANT_ATTN_SIMD)
  if (N % W == 0) {
    for (int64_t n0 = 0; n0 < N; n0 += CV * W) {
      with_rows<CV>(std::min<int64_t>(CV, (N - n0) / W), [&](auto cv) {
        constexpr int NC = decltype(cv)::value;
        for_row_chunks<RB>(M, [&](int64_t r0, auto rb) {
          constexpr int NR = decltype(rb)::value;
          vec acc[NR][NC];
          for (int r = 0; r < NR; ++r)
            for (int c = 0; c < NC; ++c)
              acc[r][c] = rs ? vmul(vload(C + (r0 + r) * ldc + n0 + W * c), vset1(rs[r0 + r]))
                             : vzero();
          const float* a = A + r0 * ars;
          for (int64_t k = 0; k < K; ++k) {
            vec b[NC];
            for (int c = 0; c < NC; ++c) b[c] = vload(B + k * ldb + n0 + W * c);
            for (int r = 0; r < NR; ++r) {
              const vec ar = vset1(a[r * ars + k * aks]);
              for (int c = 0; c < NC; ++c) acc[r][c] = vfmadd(ar, b[c], acc[r][c]);
            }
          }
          for (int r = 0; r < NR; ++r)
            for (int c = 0; c < NC; ++c) vstore(C + (r0 + r) * ldc + n0 + W * c, acc[r][c]);
        });
      });
    }
    return;
  }
#endif
  for (int64_t r = 0; r < M; ++r)
    for (int64_t n = 0; n < N; ++n) {
      float acc = rs ? C[r * ldc + n] * rs[r] : 0.f;
      for (int64_t k = 0; k < K; ++k) acc += A[r * ars + k * aks] * B[k * ldb + n];
      C[r * ldc + n] = acc;
    }
}

// The online softmax over one tile's scores S^T (n keys x MQ lanes, in place: scores in,
// weights out): hides the keys a lane does not see, then updates the lanes' running max m
// and sum l, and sets corr to the factor their accumulated outputs take.
void softmax_tile(float* st, int64_t n, int64_t MQ, int64_t kp0, const float* lo,
                  const float* hi, bool hide, float* m, float* l, float* corr) {
  int64_t j = 0;
#if defined(LEVANT_ATTN_SIMD)
  for (; j + W <= MQ; j += W) {
    const vec vlo = vload(lo + j), vhi = vload(hi + j), neg = vset1(NEG), m0 = vload(m + j);
    vec mx = m0;
    for (int64_t k = 0; k < n; ++k) {
      vec s = vload(st + k * MQ + j);
      if (hide) {
        s = vhide(s, static_cast<float>(kp0 + k), vlo, vhi, neg);
        vstore(st + k * MQ + j, s);
      }
      mx = vmax(mx, s);
    }
    vec sum = vzero();
    for (int64_t k = 0; k < n; ++k) {
      const vec p = vexp(vsub(vload(st + k * MQ + j), mx));
      vstore(st + k * MQ + j, p);
      sum = vadd(sum, p);
    }
    const vec c = vexp(vsub(m0, mx));
    vstore(corr + j, c);
    vstore(m + j, mx);
    vstore(l + j, vfmadd(vload(l + j), c, sum));
  }
#endif
  for (; j < MQ; ++j) {
    float mx = m[j];
    for (int64_t k = 0; k < n; ++k) {
      const float kp = static_cast<float>(kp0 + k);
      float& s = st[k * MQ + j];
      if (hide && (kp < lo[j] || kp > hi[j])) s = NEG;
      mx = std::max(mx, s);
    }
    float sum = 0.f;
    for (int64_t k = 0; k < n; ++k) {
      float& s = st[k * MQ + j];
      s = expf(s - mx);
      sum += s;
    }
    corr[j] = expf(m[j] - mx);
    m[j] = mx;
    l[j] = l[j] * corr[j] + sum;
  }
}

#ifdef LEVANT_AMX_BF16
// Scores by AMX-BF16 tile products, for a bf16 cache (AVX-512: TQ = 16 lanes per head).
// The task's queries, scaled, are split into bf16 halves q = hi + lo (hi = bf16(q), lo =
// bf16(q - hi)), so that k . q loses nothing a float32 product of a bf16 key would keep
// (to about 2^-16 of each term); both halves multiply the same key tile, the sums in float32.
// The query tiles: for head h, K-step c (32 dims) and half: 16 rows of dim pairs, row r
// holding (q_i[32 c + 2 r], q_i[32 c + 2 r + 1]) for the 16 lanes i.
constexpr int AMX_MAX_G = 3;  // query heads per kv head: sums in tiles 2 .. 4

// 16 bf16 (a register's halves) -> 16 float32.
inline __m512 widen(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// The vpermw order that interleaves two rows of 16 bf16 held as one register's halves
// (a, then b): element 2 i + e is row e's element i -- a tile row of pairs.
inline __m512i pair_order() {
  return _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                          22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
}

void query_tiles(const float* qt, int64_t MQ, int64_t G, int64_t D, uint16_t* out) {
  const __m512i interleave = pair_order();
  for (int64_t h = 0; h < G; ++h)
    for (int64_t c = 0; c < D / 32; ++c)
      for (int64_t r = 0; r < 16; ++r) {
        const __m512 a = _mm512_loadu_ps(qt + (32 * c + 2 * r) * MQ + h * TQ);
        const __m512 b = _mm512_loadu_ps(qt + (32 * c + 2 * r + 1) * MQ + h * TQ);
        const __m256i ha = (__m256i)_mm512_cvtneps_pbh(a), hb = (__m256i)_mm512_cvtneps_pbh(b);
        const __m512 la = _mm512_sub_ps(a, widen(ha)), lb = _mm512_sub_ps(b, widen(hb));
        uint16_t* row = out + ((h * (D / 32) + c) * 2) * 512 + r * 32;
        const __m512i his = _mm512_inserti64x4(_mm512_castsi256_si512(ha), hb, 1);
        _mm512_storeu_si512(row, _mm512_permutexvar_epi16(interleave, his));
        _mm512_storeu_si512(row + 512, _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(lb, la)));
      }
}

// Tiles: 0, 1 keys (K-steps c even, odd), 2 .. 4 the sums of heads 0 .. 2, 5 .. 7 query
// tiles in turn (each reused three products later, so a load never waits on the product
// still reading the tile before it). The intrinsics take tile numbers as literals.
#define LEVANT_QUERY_PRODUCT(A, B, C, H, HALF)                               \
  _tile_loadd(B, qtiles + ((H * NC + c) * 2 + HALF) * 512, 64); \
  _tile_dpbf16ps(C, A, B)

#define LEVANT_QUERY_PRODUCTS(A)                                      \
  if constexpr (G == 1) {                                             \
    LEVANT_QUERY_PRODUCT(A, 5, 2, 0, 0);                              \
    LEVANT_QUERY_PRODUCT(A, 6, 2, 0, 1);                              \
  } else if constexpr (G == 2) {                                      \
    LEVANT_QUERY_PRODUCT(A, 5, 2, 0, 0);                              \
    LEVANT_QUERY_PRODUCT(A, 6, 3, 1, 0);                              \
    LEVANT_QUERY_PRODUCT(A, 7, 2, 0, 1);                              \
    LEVANT_QUERY_PRODUCT(A, 5, 3, 1, 1);                              \
  } else {                                                            \
    LEVANT_QUERY_PRODUCT(A, 5, 2, 0, 0);                              \
    LEVANT_QUERY_PRODUCT(A, 6, 3, 1, 0);                              \
    LEVANT_QUERY_PRODUCT(A, 7, 4, 2, 0);                              \
    LEVANT_QUERY_PRODUCT(A, 5, 2, 0, 1);                              \
    LEVANT_QUERY_PRODUCT(A, 6, 3, 1, 1);                              \
    LEVANT_QUERY_PRODUCT(A, 7, 4, 2, 1);                              \
  }

// S^T (n keys x MQ lanes) for the keys at kp0 .. kp0 + n - 1 (kp0 a multiple of 16, 16
// keys per cache block or a multiple of it, so each 16 keys are one block's rows): rows
// past n are computed from the block's other slots and never read.
template <int G>
void scores_amx(const c10::BFloat16* cache, const int64_t* table, int64_t bs, int64_t slot_stride,
                int64_t g, int64_t D, int64_t kp0, int64_t n, const uint16_t* qtiles, float* st,
                int64_t MQ) {
  const int64_t NC = D / 32;
  for (int64_t k0 = 0; k0 < n; k0 += 16) {
    const int64_t p = kp0 + k0;
    const c10::BFloat16* keys = cache + (table[p / bs] * bs + p % bs) * slot_stride + g * D;
    _tile_zero(2);
    if constexpr (G > 1) _tile_zero(3);
    if constexpr (G > 2) _tile_zero(4);
    for (int64_t c = 0; c < NC; ++c) {
      if (c % 2 == 0) {
        _tile_loadd(0, keys + 32 * c, slot_stride * 2);
        LEVANT_QUERY_PRODUCTS(0)
      } else {
        _tile_loadd(1, keys + 32 * c, slot_stride * 2);
        LEVANT_QUERY_PRODUCTS(1)
      }
    }
    float* dst = st + k0 * MQ;
    _tile_stored(2, dst, MQ * 4);
    if constexpr (G > 1) _tile_stored(3, dst + TQ, MQ * 4);
    if constexpr (G > 2) _tile_stored(4, dst + 2 * TQ, MQ * 4);
  }
}
#undef LEVANT_QUERY_PRODUCTS
inline void transpose16(const __m512* v, __m512* t) {
  __m512 a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
    a[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
  }
  for (int i = 0; i < 16; i += 4)
    for (int k = 0; k < 2; ++k) {
      const __m512d x = _mm512_castps_pd(a[i + k]), y = _mm512_castps_pd(a[i + k + 2]);
      b[i + k] = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
      b[i + k + 2] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
    }
  // b[4 q + k]: in 128-bit lane L, rows 4 q .. 4 q + 3 of column 4 L + col[k].
  constexpr int col[4] = {0, 2, 1, 3};
  for (int k = 0; k < 4; ++k) {
    const __m512 x0 = _mm512_shuffle_f32x4(b[k], b[4 + k], 0x88);    // lanes 0, 2 of q 0, 1
    const __m512 x1 = _mm512_shuffle_f32x4(b[k], b[4 + k], 0xDD);    // lanes 1, 3
    const __m512 y0 = _mm512_shuffle_f32x4(b[8 + k], b[12 + k], 0x88);
    const __m512 y1 = _mm512_shuffle_f32x4(b[8 + k], b[12 + k], 0xDD);
    t[col[k]] = _mm512_shuffle_f32x4(x0, y0, 0x88);       // lane 0
    t[8 + col[k]] = _mm512_shuffle_f32x4(x0, y0, 0xDD);   // lane 2
    t[4 + col[k]] = _mm512_shuffle_f32x4(x1, y1, 0x88);   // lane 1
    t[12 + col[k]] = _mm512_shuffle_f32x4(x1, y1, 0xDD);  // lane 3
  }
}


// O (lanes x D, float32, already rescaled) += P V on AMX-BF16 tiles, for the n keys of a
// key tile whose value rows are vrows: P (S^T after softmax_tile, n keys x MQ lanes) is
// transposed into tiles of 16 lanes x 32 keys, split into bf16 halves hi + lo as the
// queries are; the values (exact in bf16) are interleaved in key pairs. Keys past n count
// as zero weights and zero values. Tiles: 0, 1 (hi, lo) and 3, 4 the weights of keys
// 0-31 and 32-63; 2, 7 two of the output's tiles of 16 lanes x 16 dims; 5, 6 their values.
template <int G>
void values_amx(const c10::BFloat16* const* vrows, int64_t n, int64_t D, const float* st,
                int64_t MQ, float* o, uint16_t* ptiles, uint16_t* vtiles) {
  const int64_t nks = (n + 31) / 32, DC = D / 16;
  for (int64_t h = 0; h < G; ++h)
    for (int64_t ks = 0; ks < nks; ++ks) {
      __m512 v[16], t1[16], t2[16];
      for (int j = 0; j < 16; ++j) {
        const int64_t k = 32 * ks + j;
        v[j] = k < n ? _mm512_loadu_ps(st + k * MQ + h * TQ) : _mm512_setzero_ps();
      }
      transpose16(v, t1);
      for (int j = 0; j < 16; ++j) {
        const int64_t k = 32 * ks + 16 + j;
        v[j] = k < n ? _mm512_loadu_ps(st + k * MQ + h * TQ) : _mm512_setzero_ps();
      }
      transpose16(v, t2);
      uint16_t* hi = ptiles + ((h * 2 + ks) * 2) * 512;
      for (int l = 0; l < 16; ++l) {
        const __m256i h1 = (__m256i)_mm512_cvtneps_pbh(t1[l]), h2 = (__m256i)_mm512_cvtneps_pbh(t2[l]);
        _mm512_storeu_si512(hi + 32 * l, _mm512_inserti64x4(_mm512_castsi256_si512(h1), h2, 1));
        const __m512 l1 = _mm512_sub_ps(t1[l], widen(h1)), l2 = _mm512_sub_ps(t2[l], widen(h2));
        _mm512_storeu_si512(hi + 512 + 32 * l, (__m512i)_mm512_cvtne2ps_pbh(l2, l1));
      }
    }
  const __m512i interleave = pair_order();
  for (int64_t ks = 0; ks < nks; ++ks)
    for (int64_t kp = 0; kp < 16; ++kp) {
      const int64_t k0 = 32 * ks + 2 * kp, k1 = k0 + 1;
      for (int64_t dc = 0; dc < DC; ++dc) {
        const __m256i a = k0 < n ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vrows[k0] + 16 * dc))
                                 : _mm256_setzero_si256();
        const __m256i b = k1 < n ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vrows[k1] + 16 * dc))
                                 : _mm256_setzero_si256();
        _mm512_storeu_si512(vtiles + (ks * DC + dc) * 512 + 32 * kp,
                            _mm512_permutexvar_epi16(interleave, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1)));
      }
    }
  for (int64_t h = 0; h < G; ++h) {
    const uint16_t* pt = ptiles + h * 2 * 2 * 512;
    _tile_loadd(0, pt, 64);
    _tile_loadd(1, pt + 512, 64);
    if (nks > 1) {
      _tile_loadd(3, pt + 1024, 64);
      _tile_loadd(4, pt + 1536, 64);
    }
    for (int64_t dc = 0; dc < DC; dc += 2) {  // two output tiles at a time (D / 16 is even)
      float* out = o + h * TQ * D + 16 * dc;
      _tile_loadd(2, out, D * 4);
      _tile_loadd(7, out + 16, D * 4);
      _tile_loadd(5, vtiles + dc * 512, 64);
      _tile_loadd(6, vtiles + (dc + 1) * 512, 64);
      _tile_dpbf16ps(2, 0, 5);
      _tile_dpbf16ps(7, 0, 6);
      _tile_dpbf16ps(2, 1, 5);
      _tile_dpbf16ps(7, 1, 6);
      if (nks > 1) {
        _tile_loadd(5, vtiles + (DC + dc) * 512, 64);
        _tile_loadd(6, vtiles + (DC + dc + 1) * 512, 64);
        _tile_dpbf16ps(2, 3, 5);
        _tile_dpbf16ps(7, 3, 6);
        _tile_dpbf16ps(2, 4, 5);
        _tile_dpbf16ps(7, 4, 6);
      }
      _tile_stored(2, out, D * 4);
      _tile_stored(7, out + 16, D * 4);
    }
  }
}

#undef LEVANT_QUERY_PRODUCT
#endif

template <typename T>
inline void to_float(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

template <typename T>
void prefill_attention(const float* q, const T* cache, const int64_t* table, float* out,
                       int64_t Tq, int64_t H, int64_t KVH, int64_t D, int64_t cached,
                       int64_t window, int64_t bs, float scale) {
  const int64_t G = H / KVH, MQ = G * TQ, slot_stride = 2 * KVH * D;
  const int64_t tiles = (Tq + TQ - 1) / TQ, tasks = tiles * KVH;
  std::atomic<int64_t> next{0};
#ifdef LEVANT_AMX_BF16
  // Scores on AMX tiles for a bf16 cache whose blocks hold whole 16-key tiles.
  const bool amx = std::is_same_v<T, c10::BFloat16> && TQ == 16 && D % 32 == 0 && bs % 16 == 0 &&
                   G <= AMX_MAX_G && levant_kernels::amx_on();
#else
  const bool amx = false;
#endif
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<float> qt(D * MQ), st(KT * MQ), o(MQ * D), kf(KT * D), vf(KT * D);
    std::vector<float> m(MQ), l(MQ), corr(MQ), lo(MQ), hi(MQ);
#ifdef LEVANT_AMX_BF16
    std::optional<levant_kernels::Bf16TileScope> tile_state;
    std::vector<uint16_t> qtiles, ptiles, vtiles;
    std::vector<const c10::BFloat16*> vrows(KT);
    if (amx) {
      tile_state.emplace();
      qtiles.resize(G * (D / 32) * 2 * 512);
      ptiles.resize(G * 2 * 2 * 512);
      vtiles.resize(2 * (D / 16) * 512);
    }
#endif
    for (int64_t task; (task = next.fetch_add(1)) < tasks;) {
      const int64_t tile = tiles - 1 - task / KVH, g = task % KVH;  // the most keys first
      const int64_t q0 = tile * TQ, nq = std::min(TQ, Tq - q0);
      // Lane h * TQ + i: query head g * G + h at position cached + q0 + i (the padding
      // lanes past nq repeat the last query, with zero weights, and are not written).
      for (int64_t h = 0; h < G; ++h)
        for (int64_t i = 0; i < TQ; ++i) {
          const int64_t lane = h * TQ + i, qi = std::min(i, nq - 1);
          const float* qr = q + ((q0 + qi) * H + g * G + h) * D;
          for (int64_t d = 0; d < D; ++d) qt[d * MQ + lane] = i < nq ? scale * qr[d] : 0.f;
          const int64_t pos = cached + q0 + qi;
          hi[lane] = static_cast<float>(pos);
          lo[lane] = window > 0 ? static_cast<float>(pos - window + 1) : 0.f;
        }
      std::fill(o.begin(), o.end(), 0.f);
      std::fill(m.begin(), m.end(), NEG);
      std::fill(l.begin(), l.end(), 0.f);
      const int64_t first = cached + q0, last = cached + q0 + nq - 1;
      const int64_t k_begin = window > 0 ? std::max<int64_t>(0, first - window + 1) : 0;
      const bool tile_scores = amx && k_begin % 16 == 0;
#ifdef LEVANT_AMX_BF16
      if (tile_scores) query_tiles(qt.data(), MQ, G, D, qtiles.data());
#endif
      // Every lane sees a key of the first tile (TQ <= KT), so no lane's max stays NEG.
      for (int64_t kp0 = k_begin; kp0 <= last; kp0 += KT) {
        const int64_t n = std::min(KT, last + 1 - kp0);
        for (int64_t k = 0; k < n; ++k) {
          const int64_t p = kp0 + k;
          const T* row = cache + (table[p / bs] * bs + p % bs) * slot_stride;
          // The next tile's key and value rows into L2: 28 queries after 976 cached
          // positions, 30 layers, scattered blocks, 2-core Zen 4: 16.8-19.6 -> 14.6-15.0 ms.
          if (p + KT <= last) {
            const T* ahead = cache + (table[(p + KT) / bs] * bs + (p + KT) % bs) * slot_stride;
            prefetch_l2(ahead + g * D, D * static_cast<int64_t>(sizeof(T)));
            prefetch_l2(ahead + (KVH + g) * D, D * static_cast<int64_t>(sizeof(T)));
          }
          if (tile_scores) {
#ifdef LEVANT_AMX_BF16
            if constexpr (std::is_same_v<T, c10::BFloat16>) vrows[k] = row + (KVH + g) * D;
#endif
          } else {
            to_float(row + g * D, kf.data() + k * D, D);
            to_float(row + (KVH + g) * D, vf.data() + k * D, D);
          }
        }
        if (tile_scores) {
#ifdef LEVANT_AMX_BF16
          if constexpr (std::is_same_v<T, c10::BFloat16>)
          {
            auto scores = G == 1 ? scores_amx<1> : G == 2 ? scores_amx<2> : scores_amx<3>;
            scores(cache, table, bs, slot_stride, g, D, kp0, n, qtiles.data(), st.data(), MQ);
          }
#endif
        } else {
          matmul(kf.data(), D, 1, qt.data(), MQ, st.data(), MQ, n, MQ, D, nullptr);
        }
        const bool hide = kp0 + n - 1 > first || (window > 0 && kp0 <= last - window);
        softmax_tile(st.data(), n, MQ, kp0, lo.data(), hi.data(), hide, m.data(), l.data(),
                     corr.data());
        if (tile_scores) {
#ifdef LEVANT_AMX_BF16
          if constexpr (std::is_same_v<T, c10::BFloat16>) {
            for (int64_t r = 0; r < MQ; ++r)
              for (int64_t d = 0; d < D; d += 16)
                _mm512_storeu_ps(o.data() + r * D + d,
                                 _mm512_mul_ps(_mm512_loadu_ps(o.data() + r * D + d), _mm512_set1_ps(corr[r])));
            auto values = G == 1 ? values_amx<1> : G == 2 ? values_amx<2> : values_amx<3>;
            values(vrows.data(), n, D, st.data(), MQ, o.data(), ptiles.data(), vtiles.data());
          }
#endif
        } else if (nq == TQ) {
          matmul(st.data(), 1, MQ, vf.data(), D, o.data(), D, MQ, D, n, corr.data());
        } else {  // a partial tile (the chunk's last): only its queries' lanes, head by head
          for (int64_t h = 0; h < G; ++h)
            matmul(st.data() + h * TQ, 1, MQ, vf.data(), D, o.data() + h * TQ * D, D, nq, D, n,
                   corr.data() + h * TQ);
        }
      }
      for (int64_t h = 0; h < G; ++h)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t lane = h * TQ + i;
          const float inv = 1.f / l[lane];
          float* dst = out + ((q0 + i) * H + g * G + h) * D;
          for (int64_t d = 0; d < D; ++d) dst[d] = o[lane * D + d] * inv;
        }
    }
  });
}

at::Tensor paged_prefill_attention(const at::Tensor& q, const at::Tensor& kv_cache,
                                   const at::Tensor& block_table, int64_t cached, int64_t window,
                                   int64_t block_size, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == at::kFloat && q.is_contiguous(),
              "q: contiguous (T, H, D) float32");
  TORCH_CHECK(kv_cache.dim() == 3 && kv_cache.is_contiguous() && kv_cache.size(1) % 2 == 0,
              "kv_cache: contiguous (S, 2 * KVH, D)");
  const int64_t T = q.size(0), H = q.size(1), D = q.size(2), KVH = kv_cache.size(1) / 2;
  TORCH_CHECK(kv_cache.size(2) == D && KVH > 0 && H % KVH == 0, "head sizes do not match");
  TORCH_CHECK(kv_cache.scalar_type() == at::kFloat || kv_cache.scalar_type() == at::kBFloat16,
              "kv_cache: float32 or bfloat16");
  TORCH_CHECK(block_table.dim() == 1 && block_table.scalar_type() == at::kLong &&
                  block_table.is_contiguous(),
              "block_table: contiguous (N,) int64");
  TORCH_CHECK(T > 0 && cached >= 0 && window >= 0, "T > 0, cached >= 0, window >= 0");
  TORCH_CHECK(block_size > 0 && kv_cache.size(0) % block_size == 0,
              "block_size does not divide the cache");
  // Every block from the first query's window start to the last query must be in the cache.
  const int64_t lo = window > 0 ? std::max<int64_t>(0, cached - window + 1) : 0;
  const int64_t end = cached + T, num_blocks = kv_cache.size(0) / block_size;
  const int64_t* table = block_table.data_ptr<int64_t>();
  TORCH_CHECK(end <= block_table.size(0) * block_size, "the block table ends before the chunk");
  levant_kernels::check_blocks(table, lo, end, num_blocks, block_size);
  at::Tensor out = at::empty_like(q);
  levant_kernels::prefill_attention_f32(q.data_ptr<float>(), kv_cache, table,
                                        out.data_ptr<float>(), T, H, cached, window, block_size,
                                        static_cast<float>(scale));
  return out;
}

}  // namespace

namespace levant_kernels {

void prefill_attention_f32(const float* q, const at::Tensor& kv_cache, const int64_t* table,
                           float* out, int64_t T, int64_t H, int64_t cached, int64_t window,
                           int64_t block_size, float scale) {
  const int64_t KVH = kv_cache.size(1) / 2, D = kv_cache.size(2);
  if (kv_cache.scalar_type() == at::kBFloat16)
    prefill_attention(q, kv_cache.data_ptr<c10::BFloat16>(), table, out, T, H, KVH, D, cached,
                      window, block_size, scale);
  else
    prefill_attention(q, kv_cache.data_ptr<float>(), table, out, T, H, KVH, D, cached, window,
                      block_size, scale);
}

}  // namespace levant_kernels

// Whether this build and process take the AMX-BF16 tile path for a bf16 cache (tests).
bool prefill_attention_tiles() {
#ifdef LEVANT_AMX_BF16
  return levant_kernels::amx_on();
#else
  return false;
#endif
}

TORCH_LIBRARY_FRAGMENT(levant, m) {
  m.def("prefill_attention_tiles() -> bool", &prefill_attention_tiles);
  m.def(
      "paged_prefill_attention(Tensor q, Tensor kv_cache, Tensor block_table, int cached, "
      "int window, int block_size, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(levant, CPU, m) {
  m.impl("paged_prefill_attention", &paged_prefill_attention);
}
