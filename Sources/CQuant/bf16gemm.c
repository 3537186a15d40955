/* bf16 GEMM with fp32 accumulation: out (n, oc) = a (n, k) @ w (oc, k)^T + bias.
 *
 * The weights are converted to bf16 once (eq_bf16_pack) into panels of 16 output columns with
 * the k axis taken in pairs: panel j, pair p holds w[16j + c][2p], w[16j + c][2p + 1] for
 * c = 0..15, i.e. one 512-bit register. The activations are rounded to bf16 per call. The
 * micro-kernel keeps 6 rows x 64 columns of fp32 accumulators in 24 registers and issues one
 * AVX512-BF16 `vdpbf16ps` (32 multiply-adds) per row and panel per k pair. Machines without
 * AVX512-BF16 run the same packed layout through a scalar loop. */
#include <stdint.h>
#include <string.h>

#include "cquant.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define EQ_BF16_SIMD 1
#else
#define EQ_BF16_SIMD 0
#endif

enum { MR = 6, NP = 4 };  /* rows per block, 16-column panels per block */

static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Round to nearest even, NaN kept quiet. */
static inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

int eq_bf16_simd(void) { return EQ_BF16_SIMD; }

int64_t eq_bf16_padded_k(int64_t k) { return round_up(k, 2); }
int64_t eq_bf16_padded_oc(int64_t oc) { return round_up(oc, 16 * NP); }
int64_t eq_bf16_packed_count(int64_t oc, int64_t k) { return eq_bf16_padded_oc(oc) * eq_bf16_padded_k(k); }
int64_t eq_bf16_scratch_count(int64_t n, int64_t k) { return round_up(n, MR) * eq_bf16_padded_k(k); }

void eq_bf16_pack(const float *w, int64_t oc, int64_t k, uint16_t *out) {
  const int64_t kp = eq_bf16_padded_k(k), ocp = eq_bf16_padded_oc(oc), pairs = kp / 2;
  for (int64_t j = 0; j < ocp / 16; j++)
    for (int64_t p = 0; p < pairs; p++)
      for (int c = 0; c < 16; c++)
        for (int e = 0; e < 2; e++) {
          const int64_t row = 16 * j + c, col = 2 * p + e;
          out[((j * pairs + p) * 16 + c) * 2 + e] = (row < oc && col < k) ? f32_to_bf16(w[row * k + col]) : 0;
        }
}

/* a (n, k) fp32 -> (round_up(n, MR), kp) bf16, zero-padded. */
static void convert_rows(const float *a, int64_t n, int64_t k, uint16_t *dst) {
  const int64_t kp = eq_bf16_padded_k(k), np = round_up(n, MR);
  for (int64_t r = 0; r < np; r++) {
    uint16_t *d = dst + r * kp;
    if (r >= n) {
      memset(d, 0, (size_t)kp * 2);
      continue;
    }
    const float *s = a + r * k;
    int64_t c = 0;
#if EQ_BF16_SIMD
    for (; c + 32 <= k; c += 32) {
      __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + c + 16), _mm512_loadu_ps(s + c));
      _mm512_storeu_si512((void *)(d + c), (__m512i)v);
    }
#endif
    for (; c < k; c++) d[c] = f32_to_bf16(s[c]);
    for (; c < kp; c++) d[c] = 0;
  }
}

#if EQ_BF16_SIMD
/* 6 rows x 64 columns: out rows r0..r0+5 (those < n), columns c0..c0+63 (those < oc). */
static void kernel(const uint16_t *a, const uint16_t *wp, const float *bias, float *out, int64_t n, int64_t oc,
                   int64_t kp, int64_t r0, int64_t j0) {
  const int64_t pairs = kp / 2;
  __m512 c[MR][NP];
  for (int r = 0; r < MR; r++)
    for (int q = 0; q < NP; q++) c[r][q] = _mm512_setzero_ps();
  const int32_t *a32 = (const int32_t *)(a + r0 * kp);
  const uint16_t *b0 = wp + (j0 + 0) * pairs * 32, *b1 = wp + (j0 + 1) * pairs * 32;
  const uint16_t *b2 = wp + (j0 + 2) * pairs * 32, *b3 = wp + (j0 + 3) * pairs * 32;
  for (int64_t p = 0; p < pairs; p++) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(b0 + p * 32), w1 = (__m512bh)_mm512_loadu_si512(b1 + p * 32);
    const __m512bh w2 = (__m512bh)_mm512_loadu_si512(b2 + p * 32), w3 = (__m512bh)_mm512_loadu_si512(b3 + p * 32);
#define ROW(r)                                                              \
  {                                                                         \
    const __m512bh x = (__m512bh)_mm512_set1_epi32(a32[(r) * pairs + p]);   \
    c[r][0] = _mm512_dpbf16_ps(c[r][0], x, w0);                             \
    c[r][1] = _mm512_dpbf16_ps(c[r][1], x, w1);                             \
    c[r][2] = _mm512_dpbf16_ps(c[r][2], x, w2);                             \
    c[r][3] = _mm512_dpbf16_ps(c[r][3], x, w3);                             \
  }
    ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
  }
  for (int r = 0; r < MR && r0 + r < n; r++)
    for (int q = 0; q < NP; q++) {
      const int64_t col = (j0 + q) * 16;
      if (col >= oc) break;
      const int64_t left = oc - col;
      const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
      __m512 v = c[r][q];
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + col));
      _mm512_mask_storeu_ps(out + (r0 + r) * oc + col, m, v);
    }
}
#endif

void eq_bf16_gemm_rows(float *out, const float *a, const uint16_t *wp, const float *bias, int64_t n, int64_t k, int64_t oc,
                       uint16_t *scratch) {
  const int64_t kp = eq_bf16_padded_k(k), ocp = eq_bf16_padded_oc(oc), np = round_up(n, MR), pairs = kp / 2;
  convert_rows(a, n, k, scratch);
#if EQ_BF16_SIMD
  /* Column blocks outside, so one 64-column weight panel (kp * 128 bytes) stays in L2 while every
   * row block passes over it. */
  for (int64_t j0 = 0; j0 < ocp / 16; j0 += NP)
    for (int64_t r0 = 0; r0 < np; r0 += MR) kernel(scratch, wp, bias, out, n, oc, kp, r0, j0);
#else
  for (int64_t r = 0; r < n; r++)
    for (int64_t o = 0; o < oc; o++) {
      const int64_t j = o / 16, cc = o % 16;
      float s = bias ? bias[o] : 0;
      for (int64_t p = 0; p < pairs; p++)
        for (int e = 0; e < 2; e++)
          s += bf16_to_f32(scratch[r * kp + 2 * p + e]) * bf16_to_f32(wp[((j * pairs + p) * 16 + cc) * 2 + e]);
      out[r * oc + o] = s;
    }
  (void)np;
#endif
}

void eq_bf16_gemm_ref(float *out, const float *a, const float *w, const float *bias, int64_t n, int64_t k, int64_t oc) {
  for (int64_t r = 0; r < n; r++)
    for (int64_t o = 0; o < oc; o++) {
      double s = bias ? bias[o] : 0;
      for (int64_t c = 0; c < k; c++) s += (double)bf16_to_f32(f32_to_bf16(a[r * k + c])) * bf16_to_f32(f32_to_bf16(w[o * k + c]));
      out[r * oc + o] = (float)s;
    }
}
