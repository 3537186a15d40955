#ifndef EOSIN_CQUANT_H
#define EOSIN_CQUANT_H
/* Eosin's kernels for ggml's block-quantised weights (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K) and the
 * 16-bit float types (F16, BF16). Only EosinTensor imports this module.
 *
 * Types are ggml's type ids: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 8, Q4_K 12, Q5_K 13, Q6_K 14, BF16 30.
 * Block layouts are ggml's (block_q4_0 ... block_q6_K). `n` is a row length in elements and must be
 * a multiple of the type's block size (32 or 256); callers check this when they open a file.
 *
 * Two decode paths:
 *  - exact: fp32 activations, each weight block dequantised in registers and multiplied by x;
 *  - q8: activations quantised once per product to int8 blocks of 32 (`eq_q8`), integer dot
 *    products with the weight blocks (Q4_0, Q4_1, Q8_0 only), as llama.cpp does.
 * Every fast kernel has a `_ref` twin written as plain scalar code, which tests compare against. */
#include <stddef.h>
#include <stdint.h>

/* Activations quantised for the q8 path: q has n int8 values; d[b] and s[b] (b < n/32) are the
 * block scale and d[b] * sum(q of block b). */
typedef struct {
  int8_t *q;
  float *d;
  float *s;
} eq_q8;

/* Elements per block of a type, 0 when the type is unknown. */
int eq_block_size(uint32_t type);
/* Bytes per block of a type, 0 when the type is unknown. */
int eq_block_bytes(uint32_t type);
/* 1 when the q8 path covers the type. */
int eq_has_q8(uint32_t type);
/* 2 when this build has the AVX-512 kernels, 1 for the AVX2 (+FMA, F16C) ones, 0 for the portable
 * ones. Chosen at compile time (-march=native). */
int eq_simd_level(void);

/* Dequantise n elements. src (n elements of type) -> dst (n) fp32. */
void eq_dequantize(uint32_t type, const void *src, float *dst, int64_t n);
void eq_dequantize_ref(uint32_t type, const void *src, float *dst, int64_t n);

/* Exact path. row (n of type), x (n) -> dot product. */
float eq_dot_f32(uint32_t type, const void *row, const float *x, int64_t n);
float eq_dot_f32_ref(uint32_t type, const void *row, const float *x, int64_t n);

/* x (n) -> xq (n/32 blocks). */
void eq_quantize_q8(const float *x, eq_q8 xq, int64_t n);
/* q8 path. row (n of type), xq -> dot product. Types with eq_has_q8 only. */
float eq_dot_q8(uint32_t type, const void *row, eq_q8 xq, int64_t n);
float eq_dot_q8_ref(uint32_t type, const void *row, eq_q8 xq, int64_t n);

/* Rows [r0, r1) of out = W @ x. W has rows of n elements, row_bytes apart. */
void eq_gemv_f32(uint32_t type, const void *w, size_t row_bytes, const float *x, float *out, int64_t n, int64_t r0, int64_t r1);
void eq_gemv_q8(uint32_t type, const void *w, size_t row_bytes, eq_q8 xq, float *out, int64_t n, int64_t r0, int64_t r1);

/* Rows [r0, r1) of W dequantised into dst (r1 - r0, n). */
void eq_dequantize_rows(uint32_t type, const void *w, size_t row_bytes, float *dst, int64_t n, int64_t r0, int64_t r1);

/* bf16 GEMM with fp32 accumulation (bf16gemm.c): out (n, oc) = a (n, k) @ w (oc, k)^T + bias.
 * The weights are packed once by eq_bf16_pack into eq_bf16_packed_count(oc, k) values; each call
 * rounds a to bf16 in `scratch` (eq_bf16_scratch_count(n, k) values). eq_bf16_simd is 1 when the
 * AVX512-BF16 kernel is built (else a scalar loop runs). eq_bf16_gemm_ref rounds both operands to
 * bf16 and accumulates in double, for tests. */
int eq_bf16_simd(void);
int64_t eq_bf16_padded_k(int64_t k);
int64_t eq_bf16_padded_oc(int64_t oc);
int64_t eq_bf16_packed_count(int64_t oc, int64_t k);
int64_t eq_bf16_scratch_count(int64_t n, int64_t k);
void eq_bf16_pack(const float *w, int64_t oc, int64_t k, uint16_t *out);
void eq_bf16_gemm_rows(float *out, const float *a, const uint16_t *wp, const float *bias, int64_t n, int64_t k, int64_t oc,
                       uint16_t *scratch);
void eq_bf16_gemm_ref(float *out, const float *a, const float *w, const float *bias, int64_t n, int64_t k, int64_t oc);

/* A CPU pause hint, for spin loops. */
void eq_cpu_relax(void);
/* Cores this process may run on (its CPU affinity mask), at least 1. */
int eq_affinity_cores(void);

#endif
