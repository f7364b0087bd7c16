// Intel AMX (tile registers, int8 tile products) for q8_matmul, where the build targets it
// (-march=native on a CPU with AMX-INT8) and the kernel grants it.
//
// A tile product multiplies a (16 rows, 32 bytes) tile of quantized activations by an
// (8 rows, 64 bytes) tile of weights in the VNNI layout q8_matmul already packs (row p:
// 16 outputs x 4 inputs of quad p), one group of 32 inputs, into (16, 16) int32: the same
// integer dot products vpdpbusd computes, 16 rows at a time. Each group's products are
// stored and scaled by the kernel's vector code in the same order as its VNNI path, so
// the two paths give the same floats. (q4_matmul had such a path too: its 4-bit weights
// unpacked to a tile per group, it was no faster than the VNNI loop at any row count on
// a 2-core Xeon, 0.32 against 0.27 ms at 16 rows, 3.8 against 3.5 at 256, and went.)
//
// Linux hands out AMX state per process on request (arch_prctl ARCH_REQ_XCOMP_PERM); where
// that fails (an older kernel, a hypervisor that hides it) or LEVANT_AMX=0, amx_on() is
// false and the kernel uses its VNNI path. levant::set_amx switches it at run time
// (tests and benchmarks compare both paths in one process), and levant::amx_matmuls()
// counts the matmuls that took it.
#pragma once

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define LEVANT_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define LEVANT_AMX_BF16 1  // bf16 tile products too (prefill attention's scores)
#endif
#endif

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace levant_kernels {

// Rows of a tile product (the activations' rows per pass).
constexpr int64_t AMX_ROWS = 16;

// Whether the kernel granted AMX to this process (asked once).
bool amx_granted();

// Whether the kernels use AMX now: granted, and not switched off.
bool amx_on();

// Switches the AMX paths on or off (on only where granted); returns the previous setting.
bool set_amx_on(bool on);

// Counts the matmuls that took an AMX path (levant::amx_matmuls(): tests and benchmarks
// see which path ran).
void count_amx_matmul();

#ifdef LEVANT_AMX
// The tile configuration ldtilecfg reads (palette 1): each tile's bytes per row and rows.
struct alignas(64) TileLayout {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// q8_matmul's tiles: 0, 1 activations (16 x 32 bytes), 2, 3 weights (8 x 64 bytes), 4 .. 7
// products (16 x 16 int32).
struct TileConfig : TileLayout {
  TileConfig() {
    for (int i = 0; i < 2; ++i) colsb[i] = 32, rows[i] = AMX_ROWS;
    for (int i = 2; i < 4; ++i) colsb[i] = 64, rows[i] = 8;
    for (int i = 4; i < 8; ++i) colsb[i] = 64, rows[i] = AMX_ROWS;
  }
};

// Prefill attention's tiles: every one 16 rows x 64 bytes (bf16: 16 x 32 values; float32
// sums: 16 x 16).
struct Bf16TileConfig : TileLayout {
  Bf16TileConfig() {
    for (int i = 0; i < 8; ++i) colsb[i] = 64, rows[i] = 16;
  }
};

// Loads Config on this thread for the scope's tile products (a thread's configuration is
// its own) and releases the tile state after them.
template <typename Config>
struct ConfiguredTiles {
  ConfiguredTiles() {
    static const Config config;
    _tile_loadconfig(&config);
  }
  ~ConfiguredTiles() { _tile_release(); }
  ConfiguredTiles(const ConfiguredTiles&) = delete;
  ConfiguredTiles& operator=(const ConfiguredTiles&) = delete;
};
using TileScope = ConfiguredTiles<TileConfig>;
#ifdef LEVANT_AMX_BF16
using Bf16TileScope = ConfiguredTiles<Bf16TileConfig>;
#endif

// The (16, 16) int32 products of groups 0 .. G - 1 (16 rows of activations at a + 32 g,
// lda bytes apart; the group's 8 x 64 weight bytes at b + b_step g), each handed to
// scale(g, products) in order of g, inside a TileScope. Two groups per pass, in a
// three-stage pipeline: pass i + 1's products are issued, then pass i's stored, then pass
// i - 1's scaled, so the vector code never waits on a tile product or on the stores that
// bring it to memory (one group at a time did: the tiles' speed was lost to the waits).
template <typename Scale>
inline void tile_products(const int8_t* a, int64_t lda, const uint8_t* b, int64_t b_step, int64_t G,
                          Scale&& scale) {
  alignas(64) int32_t products[2][2][AMX_ROWS * 16];
  const int64_t passes = (G + 1) / 2;
  auto issue = [&](int64_t i) {
    const int64_t g = 2 * i;
    _tile_loadd(0, a + 32 * g, lda);
    _tile_loadd(2, b + b_step * g, 64);
    if (g + 1 < G) {
      _tile_loadd(1, a + 32 * (g + 1), lda);
      _tile_loadd(3, b + b_step * (g + 1), 64);
    }
    if (i % 2 == 0) {
      _tile_zero(4);
      _tile_dpbsud(4, 0, 2);
      if (g + 1 < G) {
        _tile_zero(5);
        _tile_dpbsud(5, 1, 3);
      }
    } else {
      _tile_zero(6);
      _tile_dpbsud(6, 0, 2);
      if (g + 1 < G) {
        _tile_zero(7);
        _tile_dpbsud(7, 1, 3);
      }
    }
  };
  auto store = [&](int64_t i) {
    int32_t(*p)[AMX_ROWS * 16] = products[i % 2];
    const bool two = 2 * i + 1 < G;
    if (i % 2 == 0) {
      _tile_stored(4, p[0], 64);
      if (two) _tile_stored(5, p[1], 64);
    } else {
      _tile_stored(6, p[0], 64);
      if (two) _tile_stored(7, p[1], 64);
    }
  };
  auto finish = [&](int64_t i) {
    scale(2 * i, products[i % 2][0]);
    if (2 * i + 1 < G) scale(2 * i + 1, products[i % 2][1]);
  };
  issue(0);
  for (int64_t i = 0; i < passes; ++i) {
    if (i + 1 < passes) issue(i + 1);
    store(i);
    if (i > 0) finish(i - 1);
  }
  finish(passes - 1);
}
#endif

}  // namespace levant_kernels
