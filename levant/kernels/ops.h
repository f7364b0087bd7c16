// The kernels of q4_matmul.cpp, q8_matmul.cpp, decode_attention.cpp and
// prefill_attention.cpp on raw buffers, for fused_step.cpp, which runs them back to back
// without a tensor (or a Python call) between them. The ops check
// their tensors and call these; so does fused_step, once per step.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace levant_kernels {

// y (M, N) = x (M, K) @ W^T for W packed by levant::q4_matmul's layout (packed (N / 16,
// K / 32, 4, 64) uint8, scales (N / 16, K / 32, 2, 16) bf16 bits). x float32, row-major.
void q4_matmul_into(const float* x, int64_t M, int64_t K, const uint8_t* packed,
                    const uint16_t* scales, int64_t N, float* y);

// The same for levant::q8_matmul's layout (packed (N / 16, K / 4, 64) uint8, scales (N,)).
void q8_matmul_into(const float* x, int64_t M, int64_t K, const uint8_t* packed,
                    const float* scales, int64_t N, float* y);

// TORCH_CHECKs that packed and scales are a q4 (4-d packed) or q8 (3-d packed) weight of K
// inputs; returns its outputs N.
int64_t check_q4_weight(const at::Tensor& packed, const at::Tensor& scales, int64_t K);
int64_t check_q8_weight(const at::Tensor& packed, const at::Tensor& scales, int64_t K);

// TORCH_CHECKs block tables (R, N) and bounds (R, 2) (int64, contiguous, every visible
// position's block inside a cache of num_blocks blocks).
void check_block_tables(const at::Tensor& tables, const at::Tensor& bounds, int64_t R,
                        int64_t num_blocks, int64_t block_size);

// TORCH_CHECKs that the blocks of table (one sequence's) holding positions lo .. end - 1
// are blocks of a cache of num_blocks (the table reaches position end - 1: checked).
void check_blocks(const int64_t* table, int64_t lo, int64_t end, int64_t num_blocks,
                  int64_t block_size);

// levant::paged_decode_attention for float32 queries q (R, H, D) contiguous into out
// (R, H, D), over one layer's cache (float32 or bf16, (S, 2 * KVH, D)); tables and bounds
// already checked.
void decode_attention_f32(const float* q, const at::Tensor& kv_cache, const int64_t* tables,
                          int64_t N, const int64_t* bounds, float* out, int64_t R, int64_t H,
                          int64_t block_size, float scale);

// levant::paged_prefill_attention for one sequence's chunk: float32 queries q (T, H, D)
// at positions cached .. cached + T - 1 into out (T, H, D), over one layer's cache through
// the sequence's block table (already checked); window 0 for none.
void prefill_attention_f32(const float* q, const at::Tensor& kv_cache, const int64_t* table,
                           float* out, int64_t T, int64_t H, int64_t cached, int64_t window,
                           int64_t block_size, float scale);

}  // namespace levant_kernels
