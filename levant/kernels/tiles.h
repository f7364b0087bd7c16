// Loops over a kernel's tiles with the tile's size as a compile-time constant (its
// accumulators are then registers): with_rows and for_row_chunks, shared by the matmul and
// attention kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace levant_kernels {

// f(std::integral_constant<int, rows>) for 1 <= rows <= MAX: a tile's row count as a
// compile-time constant (its accumulators are registers).
template <int MAX, typename F>
inline void with_rows(int64_t rows, F&& f) {
  if constexpr (MAX > 1) {
    if (rows < MAX) return with_rows<MAX - 1>(rows, f);
  }
  f(std::integral_constant<int, MAX>{});
}

// f(r0, std::integral_constant<int, rows>) for the rows r0 .. r0 + rows - 1 of M, in
// chunks of ROWS (the last one shorter).
template <int ROWS, typename F>
inline void for_row_chunks(int64_t M, F&& f) {
  for (int64_t r0 = 0; r0 < M; r0 += ROWS)
    with_rows<ROWS>(std::min<int64_t>(ROWS, M - r0), [&](auto mt) { f(r0, mt); });
}

}  // namespace levant_kernels
