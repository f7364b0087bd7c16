// How a kernel's independent pieces (a matmul's output tiles, attention's sequences) are
// shared out among ATen's threads: parallel_chunks hands them out in chunks from a shared
// counter, so a thread that runs slower -- its core also serving the HTTP event loop, the
// VM's interrupts, another process -- takes fewer, instead of the others waiting for it at
// the region's end (at::parallel_for gives each thread one fixed range).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace levant_kernels {

// f(begin, end) over [0, n) in chunks of `chunk` (the last one shorter), each chunk on
// whichever thread asks first; chunks go out in order, so each thread's reads still run
// forward through memory. Inside a parallel region it runs on the calling thread.
template <typename F>
inline void parallel_chunks(int64_t n, int64_t chunk, F&& f) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(1, chunk);
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), chunks), 1, [&](int64_t, int64_t) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;)
      f(c * chunk, std::min(n, (c + 1) * chunk));
  });
}

// A chunk size for n pieces: about 8 chunks per thread, so a slow thread gives up at most
// an eighth of its share to the others, and no chunk is smaller than `least` pieces.
inline int64_t chunk_for(int64_t n, int64_t least = 1) {
  return std::max<int64_t>(least, n / (8 * static_cast<int64_t>(at::get_num_threads())));
}

}  // namespace levant_kernels
