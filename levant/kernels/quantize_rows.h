// What levant::q4_matmul and levant::q8_matmul share. Activations quantized for their int8
// dot products:
// per row and group of 32 inputs, q = round(x / d) in -127..127 with d = max |x| / 127 (as
// llama.cpp's Q8_1 does), and per group d, the integer sum of q and d times it.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace levant_kernels {

constexpr int64_t GROUP = 32;

struct QuantizedRows {
  std::vector<int8_t> q;      // (M, K)
  std::vector<float> d;       // (M, K / GROUP)
  std::vector<float> dsum;    // d * sum(q), per group
  std::vector<int32_t> sum;   // sum(q), per group
};

// x (M, K) float32, K a multiple of GROUP.
inline QuantizedRows quantize_rows(const float* x, int64_t M, int64_t K) {
  const int64_t G = K / GROUP;
  QuantizedRows out{std::vector<int8_t>(M * K), std::vector<float>(M * G),
                    std::vector<float>(M * G), std::vector<int32_t>(M * G)};
  // A grain of 512 groups (16K inputs, microseconds of work): a few-row step quantizes on
  // the calling thread, without the fork and join of a parallel region.
  at::parallel_for(0, M * G, 512, [&](int64_t begin, int64_t end) {
    for (int64_t rg = begin; rg < end; ++rg) {
      const float* xs = x + (rg / G) * K + (rg % G) * GROUP;
      float amax = 0.f;
      for (int64_t i = 0; i < GROUP; ++i) amax = std::max(amax, std::fabs(xs[i]));
      const float d = amax / 127.f, inv = d > 0.f ? 1.f / d : 0.f;
      int32_t sum = 0;
      int8_t* q = out.q.data() + (rg / G) * K + (rg % G) * GROUP;
      for (int64_t i = 0; i < GROUP; ++i) {
        const int32_t v = static_cast<int32_t>(std::nearbyint(xs[i] * inv));
        q[i] = static_cast<int8_t>(std::clamp(v, -127, 127));
        sum += q[i];
      }
      out.d[rg] = d;
      out.dsum[rg] = d * static_cast<float>(sum);
      out.sum[rg] = sum;
    }
  });
  return out;
}

// f(std::integral_constant<int, rows>) for 1 <= rows <= MAX: a tile's row count as a
// compile-time constant (its accumulators are registers).
template <int MAX, typename F>
inline void with_rows(int64_t rows, F&& f) {
  if constexpr (MAX > 1) {
    if (rows < MAX) return with_rows<MAX - 1>(rows, f);
  }
  f(std::integral_constant<int, MAX>{});
}

}  // namespace levant_kernels
