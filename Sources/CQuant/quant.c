/* Eosin's quantised kernels: see include/cquant.h for the contracts. Block formats follow ggml's
 * published layouts; the code is Eosin's own. */
#define _GNU_SOURCE
#include "cquant.h"

#include <math.h>
#include <sched.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#include <immintrin.h>
#define EQ_AVX512 1
#else
#define EQ_AVX512 0
#endif
/* AVX2 kernels for CPUs without AVX-512 (most laptops): used only when the AVX-512 ones are not. */
#if !EQ_AVX512 && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define EQ_AVX2 1
#else
#define EQ_AVX2 0
#endif

enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30 };

/* ---- half and bfloat16 ---- */

static inline float half_to_float(uint16_t h) {
  uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1F, m = h & 0x3FF, bits;
  if (e == 0) {
    float v = (float)m * 5.9604644775390625e-8f; /* 2^-24 */
    return s ? -v : v;
  }
  if (e == 31) bits = s | 0x7F800000u | (m << 13);
  else bits = s | ((e - 15 + 127) << 23) | (m << 13);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static inline float bf16_to_float(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int eq_block_size(uint32_t t) {
  switch (t) {
  case T_F32: case T_F16: case T_BF16: return 1;
  case T_Q4_0: case T_Q4_1: case T_Q8_0: return 32;
  case T_Q4_K: case T_Q5_K: case T_Q6_K: return 256;
  default: return 0;
  }
}

int eq_block_bytes(uint32_t t) {
  switch (t) {
  case T_F32: return 4;
  case T_F16: case T_BF16: return 2;
  case T_Q4_0: return 18;
  case T_Q4_1: return 20;
  case T_Q8_0: return 34;
  case T_Q4_K: return 144;
  case T_Q5_K: return 176;
  case T_Q6_K: return 210;
  default: return 0;
  }
}

int eq_has_q8(uint32_t t) { return t == T_Q4_0 || t == T_Q4_1 || t == T_Q8_0; }
int eq_simd_level(void) { return EQ_AVX512 ? 2 : EQ_AVX2 ? 1 : 0; }

/* ---- dequantisation (scalar; also the reference) ---- */

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (12 packed bytes). */
static inline void k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/* Scales and mins of sub-blocks is and is+1 (one 64-value stretch) of a Q4_K/Q5_K block. */
static inline void k4_pair(int is, const uint8_t *sc, float d, float dmin, float *d1, float *m1, float *d2, float *m2) {
  uint8_t s, m;
  k4_scale_min(is, sc, &s, &m);
  *d1 = d * s;
  *m1 = dmin * m;
  k4_scale_min(is + 1, sc, &s, &m);
  *d2 = d * s;
  *m2 = dmin * m;
}

/* One block of any quantised type -> y (block size elements). */
static void dequant_block(uint32_t t, const uint8_t *b, float *y) {
  switch (t) {
  case T_Q4_0: {
    float d = half_to_float(rd16(b));
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
      y[j] = ((int)(qs[j] & 0xF) - 8) * d;
      y[j + 16] = ((int)(qs[j] >> 4) - 8) * d;
    }
    break;
  }
  case T_Q4_1: {
    float d = half_to_float(rd16(b)), m = half_to_float(rd16(b + 2));
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
      y[j] = (qs[j] & 0xF) * d + m;
      y[j + 16] = (qs[j] >> 4) * d + m;
    }
    break;
  }
  case T_Q8_0: {
    float d = half_to_float(rd16(b));
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++) y[j] = qs[j] * d;
    break;
  }
  case T_Q4_K: {
    float d = half_to_float(rd16(b)), dmin = half_to_float(rd16(b + 2));
    const uint8_t *sc = b + 4, *q = b + 16;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
      float d1, m1, d2, m2;
      k4_pair(is, sc, d, dmin, &d1, &m1, &d2, &m2);
      for (int l = 0; l < 32; l++) y[j + l] = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; l++) y[j + 32 + l] = d2 * (q[l] >> 4) - m2;
    }
    break;
  }
  case T_Q5_K: {
    float d = half_to_float(rd16(b)), dmin = half_to_float(rd16(b + 2));
    const uint8_t *sc = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32) {
      float d1, m1, d2, m2;
      k4_pair(is, sc, d, dmin, &d1, &m1, &d2, &m2);
      for (int l = 0; l < 32; l++) y[j + l] = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; l++) y[j + 32 + l] = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      u1 <<= 2;
      u2 <<= 2;
    }
    break;
  }
  case T_Q6_K: {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = half_to_float(rd16(b + 208));
    for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; l++) {
        int is = l / 16;
        int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[n + l] = d * sc[is] * q1;
        y[n + l + 32] = d * sc[is + 2] * q2;
        y[n + l + 64] = d * sc[is + 4] * q3;
        y[n + l + 96] = d * sc[is + 6] * q4;
      }
    }
    break;
  }
  default: break;
  }
}

#if EQ_AVX512
/* Q4_0, Q4_1 and Q8_0 rows dequantised 32 values at a time (prompt processing dequantises every
 * weight once per batch, so this runs at memory speed rather than scalar speed). */
static int dequant_avx512(uint32_t t, const uint8_t *p, float *dst, int64_t n) {
  const __m128i m4 = _mm_set1_epi8(0x0F);
  if (t == T_Q4_0 || t == T_Q4_1) {
    int bb = t == T_Q4_0 ? 18 : 20;
    for (int64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = p + b * bb;
      __m512 d = _mm512_set1_ps(_cvtsh_ss(rd16(blk)));
      __m512 m = _mm512_set1_ps(t == T_Q4_0 ? -8 * _cvtsh_ss(rd16(blk)) : _cvtsh_ss(rd16(blk + 2)));
      __m128i q = _mm_loadu_si128((const __m128i *)(blk + bb - 16));
      __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, m4)));
      __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m4)));
      _mm512_storeu_ps(dst + 32 * b, _mm512_fmadd_ps(lo, d, m));
      _mm512_storeu_ps(dst + 32 * b + 16, _mm512_fmadd_ps(hi, d, m));
    }
    return 1;
  }
  if (t == T_Q8_0) {
    for (int64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = p + b * 34;
      __m512 d = _mm512_set1_ps(_cvtsh_ss(rd16(blk)));
      _mm512_storeu_ps(dst + 32 * b, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)))), d));
      _mm512_storeu_ps(dst + 32 * b + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18)))), d));
    }
    return 1;
  }
  if (t == T_F16) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 2 * i))));
    for (; i < n; i++) dst[i] = half_to_float(rd16(p + 2 * i));
    return 1;
  }
  return 0;
}
#endif

#if EQ_AVX2
static inline __m256 cvt8_u8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
static inline __m256 cvt8_s8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

/* The AVX2 twin of dequant_avx512: 8 values per register. */
static int dequant_avx2(uint32_t t, const uint8_t *p, float *dst, int64_t n) {
  const __m128i m4 = _mm_set1_epi8(0x0F);
  if (t == T_Q4_0 || t == T_Q4_1) {
    int bb = t == T_Q4_0 ? 18 : 20;
    for (int64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = p + b * bb;
      float df = _cvtsh_ss(rd16(blk));
      __m256 d = _mm256_set1_ps(df);
      __m256 m = _mm256_set1_ps(t == T_Q4_0 ? -8 * df : _cvtsh_ss(rd16(blk + 2)));
      __m128i q = _mm_loadu_si128((const __m128i *)(blk + bb - 16));
      __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
      float *o = dst + 32 * b;
      _mm256_storeu_ps(o, _mm256_fmadd_ps(cvt8_u8(lo), d, m));
      _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(cvt8_u8(_mm_srli_si128(lo, 8)), d, m));
      _mm256_storeu_ps(o + 16, _mm256_fmadd_ps(cvt8_u8(hi), d, m));
      _mm256_storeu_ps(o + 24, _mm256_fmadd_ps(cvt8_u8(_mm_srli_si128(hi, 8)), d, m));
    }
    return 1;
  }
  if (t == T_Q8_0) {
    for (int64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = p + b * 34;
      __m256 d = _mm256_set1_ps(_cvtsh_ss(rd16(blk)));
      for (int j = 0; j < 32; j += 8)
        _mm256_storeu_ps(dst + 32 * b + j, _mm256_mul_ps(cvt8_s8(_mm_loadl_epi64((const __m128i *)(blk + 2 + j))), d));
    }
    return 1;
  }
  if (t == T_F16) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
    for (; i < n; i++) dst[i] = half_to_float(rd16(p + 2 * i));
    return 1;
  }
  return 0;
}
#endif

void eq_dequantize(uint32_t t, const void *src, float *dst, int64_t n) {
  const uint8_t *p = (const uint8_t *)src;
#if EQ_AVX512
  if (dequant_avx512(t, p, dst, n)) return;
#elif EQ_AVX2
  if (dequant_avx2(t, p, dst, n)) return;
#endif
  switch (t) {
  case T_F32: memcpy(dst, src, (size_t)n * 4); return;
  case T_F16: for (int64_t i = 0; i < n; i++) dst[i] = half_to_float(rd16(p + 2 * i)); return;
  case T_BF16: for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(rd16(p + 2 * i)); return;
  default: {
    int bs = eq_block_size(t), bb = eq_block_bytes(t);
    if (bs == 0) return;
    for (int64_t i = 0; i < n / bs; i++) dequant_block(t, p + i * bb, dst + i * bs);
  }
  }
}

void eq_dequantize_ref(uint32_t t, const void *src, float *dst, int64_t n) {
  const uint8_t *p = (const uint8_t *)src;
  int bs = eq_block_size(t), bb = eq_block_bytes(t);
  if (bs == 1) {
    for (int64_t i = 0; i < n; i++)
      dst[i] = t == T_F32 ? ((const float *)src)[i] : t == T_F16 ? half_to_float(rd16(p + 2 * i)) : bf16_to_float(rd16(p + 2 * i));
    return;
  }
  if (bs == 0) return;
  for (int64_t i = 0; i < n / bs; i++) dequant_block(t, p + i * bb, dst + i * bs);
}

void eq_dequantize_rows(uint32_t t, const void *w, size_t row_bytes, float *dst, int64_t n, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) eq_dequantize(t, (const uint8_t *)w + r * row_bytes, dst + (r - r0) * n, n);
}

/* ---- exact path: fp32 activations ---- */

float eq_dot_f32_ref(uint32_t t, const void *row, const float *x, int64_t n) {
  int bs = eq_block_size(t), bb = eq_block_bytes(t);
  float buf[256];
  float s = 0;
  const uint8_t *p = (const uint8_t *)row;
  if (bs == 1) {
    for (int64_t i = 0; i < n; i++) {
      float w = t == T_F32 ? ((const float *)row)[i] : t == T_F16 ? half_to_float(rd16(p + 2 * i)) : bf16_to_float(rd16(p + 2 * i));
      s += w * x[i];
    }
    return s;
  }
  for (int64_t b = 0; b < n / bs; b++) {
    dequant_block(t, p + b * bb, buf);
    for (int j = 0; j < bs; j++) s += buf[j] * x[b * bs + j];
  }
  return s;
}

#if EQ_AVX512
static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

static float dot_f32_avx512(uint32_t t, const void *row, const float *x, int64_t n) {
  const uint8_t *p = (const uint8_t *)row;
  __m512 acc = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps();
  const __m128i m4 = _mm_set1_epi8(0x0F);
  switch (t) {
  case T_F32: {
    const float *w = (const float *)row;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), acc);
      acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), acc2);
    }
    float s = hsum(_mm512_add_ps(acc, acc2));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
  }
  case T_F16: {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 2 * i))), _mm512_loadu_ps(x + i), acc);
    float s = hsum(acc);
    for (; i < n; i++) s += half_to_float(rd16(p + 2 * i)) * x[i];
    return s;
  }
  case T_BF16: {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + 2 * i))), 16);
      acc = _mm512_fmadd_ps(_mm512_castsi512_ps(w), _mm512_loadu_ps(x + i), acc);
    }
    float s = hsum(acc);
    for (; i < n; i++) s += bf16_to_float(rd16(p + 2 * i)) * x[i];
    return s;
  }
  case T_Q4_0:
  case T_Q4_1: {
    /* sum_j (d q_j + m) x_j = d * sum q_j x_j + m * sum x_j; Q4_0 is m = -8 d. */
    int bb = t == T_Q4_0 ? 18 : 20;
    for (int64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = p + b * bb;
      float d = _cvtsh_ss(rd16(blk));
      float m = t == T_Q4_0 ? -8 * d : _cvtsh_ss(rd16(blk + 2));
      __m128i q = _mm_loadu_si128((const __m128i *)(blk + bb - 16));
      __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, m4)));
      __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m4)));
      __m512 x0 = _mm512_loadu_ps(x + 32 * b), x1 = _mm512_loadu_ps(x + 32 * b + 16);
      __m512 qx = _mm512_fmadd_ps(lo, x0, _mm512_mul_ps(hi, x1));
      acc = _mm512_fmadd_ps(qx, _mm512_set1_ps(d), acc);
      acc2 = _mm512_fmadd_ps(_mm512_add_ps(x0, x1), _mm512_set1_ps(m), acc2);
    }
    return hsum(_mm512_add_ps(acc, acc2));
  }
  case T_Q8_0: {
    for (int64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = p + b * 34;
      float d = _cvtsh_ss(rd16(blk));
      __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
      __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
      __m512 qx = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + 32 * b), _mm512_mul_ps(w1, _mm512_loadu_ps(x + 32 * b + 16)));
      acc = _mm512_fmadd_ps(qx, _mm512_set1_ps(d), acc);
    }
    return hsum(acc);
  }
  default: {
    /* K-quants: each 256-block dequantised into registers' worth of stack, then an FMA dot. */
    int bb = eq_block_bytes(t);
    float buf[256] __attribute__((aligned(64)));
    for (int64_t b = 0; b < n / 256; b++) {
      dequant_block(t, p + b * bb, buf);
      const float *xb = x + 256 * b;
      for (int j = 0; j < 256; j += 32) {
        acc = _mm512_fmadd_ps(_mm512_load_ps(buf + j), _mm512_loadu_ps(xb + j), acc);
        acc2 = _mm512_fmadd_ps(_mm512_load_ps(buf + j + 16), _mm512_loadu_ps(xb + j + 16), acc2);
      }
    }
    return hsum(_mm512_add_ps(acc, acc2));
  }
  }
}
#endif

#if EQ_AVX2
static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

enum { EQ_XS_MAX = 1024 }; /* block sums kept on the stack: rows of up to 32768 values */
static void block_sums_avx2(const float *x, float *xs, int64_t nb);
static float dot_q4_xs_avx2(uint32_t t, const uint8_t *p, const float *x, const float *xs, int64_t nb);

/* The AVX2 twin of dot_f32_avx512. */
static float dot_f32_avx2(uint32_t t, const void *row, const float *x, int64_t n) {
  const uint8_t *p = (const uint8_t *)row;
  __m256 acc = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
  switch (t) {
  case T_F32: {
    const float *w = (const float *)row;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), acc);
      acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), acc2);
    }
    float s = hsum8(_mm256_add_ps(acc, acc2));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
  }
  case T_F16: {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))), _mm256_loadu_ps(x + i), acc);
    float s = hsum8(acc);
    for (; i < n; i++) s += half_to_float(rd16(p + 2 * i)) * x[i];
    return s;
  }
  case T_BF16: {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * i))), 16);
      acc = _mm256_fmadd_ps(_mm256_castsi256_ps(w), _mm256_loadu_ps(x + i), acc);
    }
    float s = hsum8(acc);
    for (; i < n; i++) s += bf16_to_float(rd16(p + 2 * i)) * x[i];
    return s;
  }
  case T_Q4_0:
  case T_Q4_1: {
    /* The kernel eq_gemv_f32 runs, with x's block sums for this one row. */
    float xs[EQ_XS_MAX];
    if (n / 32 > EQ_XS_MAX) return eq_dot_f32_ref(t, row, x, n);
    block_sums_avx2(x, xs, n / 32);
    return dot_q4_xs_avx2(t, p, x, xs, n / 32);
  }
  case T_Q8_0: {
    /* Two products per block and two accumulators: no long chain of dependent FMAs. */
    for (int64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = p + b * 34;
      const float *xb = x + 32 * b;
      __m256 qa = _mm256_mul_ps(cvt8_s8(_mm_loadl_epi64((const __m128i *)(blk + 2))), _mm256_loadu_ps(xb));
      __m256 qb = _mm256_mul_ps(cvt8_s8(_mm_loadl_epi64((const __m128i *)(blk + 10))), _mm256_loadu_ps(xb + 8));
      qa = _mm256_fmadd_ps(cvt8_s8(_mm_loadl_epi64((const __m128i *)(blk + 18))), _mm256_loadu_ps(xb + 16), qa);
      qb = _mm256_fmadd_ps(cvt8_s8(_mm_loadl_epi64((const __m128i *)(blk + 26))), _mm256_loadu_ps(xb + 24), qb);
      __m256 dv = _mm256_set1_ps(_cvtsh_ss(rd16(blk)));
      if (b & 1) acc2 = _mm256_fmadd_ps(_mm256_add_ps(qa, qb), dv, acc2);
      else acc = _mm256_fmadd_ps(_mm256_add_ps(qa, qb), dv, acc);
    }
    return hsum8(_mm256_add_ps(acc, acc2));
  }
  default: {
    int bb = eq_block_bytes(t);
    float buf[256] __attribute__((aligned(32)));
    for (int64_t b = 0; b < n / 256; b++) {
      dequant_block(t, p + b * bb, buf);
      const float *xb = x + 256 * b;
      for (int j = 0; j < 256; j += 16) {
        acc = _mm256_fmadd_ps(_mm256_load_ps(buf + j), _mm256_loadu_ps(xb + j), acc);
        acc2 = _mm256_fmadd_ps(_mm256_load_ps(buf + j + 8), _mm256_loadu_ps(xb + j + 8), acc2);
      }
    }
    return hsum8(_mm256_add_ps(acc, acc2));
  }
  }
}
#endif

float eq_dot_f32(uint32_t t, const void *row, const float *x, int64_t n) {
#if EQ_AVX512
  return dot_f32_avx512(t, row, x, n);
#elif EQ_AVX2
  return dot_f32_avx2(t, row, x, n);
#else
  return eq_dot_f32_ref(t, row, x, n);
#endif
}

#if EQ_AVX2
/* xs[b] = the sum of x's block b of 32 values. */
static void block_sums_avx2(const float *x, float *xs, int64_t nb) {
  for (int64_t b = 0; b < nb; b++) {
    const float *xb = x + 32 * b;
    xs[b] = hsum8(_mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8)),
                                _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24))));
  }
}

/* A 4-bit row against x with the block sums of x (xs) computed once per product:
 * sum_j (d q_j + m) x_j = d * sum q_j x_j + m * xs[b]. Two accumulators, so consecutive blocks
 * do not wait on one FMA chain. */
static float dot_q4_xs_avx2(uint32_t t, const uint8_t *p, const float *x, const float *xs, int64_t nb) {
  const int bb = t == T_Q4_0 ? 18 : 20;
  const __m128i m4 = _mm_set1_epi8(0x0F);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  float msum = 0;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *blk = p + b * bb;
    float d = _cvtsh_ss(rd16(blk));
    msum += (t == T_Q4_0 ? -8 * d : _cvtsh_ss(rd16(blk + 2))) * xs[b];
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + bb - 16));
    __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    const float *xb = x + 32 * b;
    __m256 qa = _mm256_mul_ps(cvt8_u8(lo), _mm256_loadu_ps(xb));
    __m256 qb = _mm256_mul_ps(cvt8_u8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xb + 8));
    qa = _mm256_fmadd_ps(cvt8_u8(hi), _mm256_loadu_ps(xb + 16), qa);
    qb = _mm256_fmadd_ps(cvt8_u8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(xb + 24), qb);
    acc[b & 1] = _mm256_fmadd_ps(_mm256_add_ps(qa, qb), _mm256_set1_ps(d), acc[b & 1]);
  }
  return hsum8(_mm256_add_ps(acc[0], acc[1])) + msum;
}
#endif

void eq_gemv_f32(uint32_t t, const void *w, size_t row_bytes, const float *x, float *out, int64_t n, int64_t r0, int64_t r1) {
#if EQ_AVX2
  if ((t == T_Q4_0 || t == T_Q4_1) && n / 32 <= EQ_XS_MAX) {
    /* x's block sums once per product, not once per row. */
    float xs[EQ_XS_MAX];
    const int64_t nb = n / 32;
    block_sums_avx2(x, xs, nb);
    for (int64_t r = r0; r < r1; r++) out[r] = dot_q4_xs_avx2(t, (const uint8_t *)w + r * row_bytes, x, xs, nb);
    return;
  }
#endif
  for (int64_t r = r0; r < r1; r++) out[r] = eq_dot_f32(t, (const uint8_t *)w + r * row_bytes, x, n);
}

/* ---- q8 path: int8 activations ---- */

void eq_quantize_q8(const float *x, eq_q8 xq, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++) {
    const float *xb = x + 32 * b;
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
    float d = amax / 127, id = d > 0 ? 1 / d : 0;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
      int v = (int)lrintf(xb[j] * id);
      xq.q[32 * b + j] = (int8_t)v;
      sum += v;
    }
    xq.d[b] = d;
    xq.s[b] = d * (float)sum;
  }
}

float eq_dot_q8_ref(uint32_t t, const void *row, eq_q8 xq, int64_t n) {
  const uint8_t *p = (const uint8_t *)row;
  float s = 0;
  for (int64_t b = 0; b < n / 32; b++) {
    const int8_t *x = xq.q + 32 * b;
    int isum = 0;
    switch (t) {
    case T_Q4_0:
    case T_Q4_1: {
      const uint8_t *blk = p + b * (t == T_Q4_0 ? 18 : 20), *qs = blk + (t == T_Q4_0 ? 2 : 4);
      for (int j = 0; j < 16; j++) isum += (qs[j] & 0xF) * x[j] + (qs[j] >> 4) * x[j + 16];
      float d = half_to_float(rd16(blk));
      /* Q4_0 values are q - 8: sum (q - 8) x = sum q x - 8 sum x. */
      float m = t == T_Q4_0 ? -8 * d : half_to_float(rd16(blk + 2));
      s += d * xq.d[b] * (float)isum + m * xq.s[b];
      break;
    }
    case T_Q8_0: {
      const uint8_t *blk = p + b * 34;
      const int8_t *qs = (const int8_t *)(blk + 2);
      for (int j = 0; j < 32; j++) isum += qs[j] * x[j];
      s += half_to_float(rd16(blk)) * xq.d[b] * (float)isum;
      break;
    }
    default: return 0;
    }
  }
  return s;
}

#if EQ_AVX512 && defined(__AVX512VNNI__)
static float dot_q8_avx512(uint32_t t, const void *row, eq_q8 xq, int64_t n) {
  const uint8_t *p = (const uint8_t *)row;
  const int64_t nb = n / 32;
  __m512 acc = _mm512_setzero_ps();
  float msum = 0;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  int64_t b = 0;
  if (t == T_Q8_0) {
    for (; b + 2 <= nb; b += 2) {
      const uint8_t *b0 = p + b * 34, *b1 = b0 + 34;
      __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
                                     _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
      __m512i xv = _mm512_loadu_si512((const void *)(xq.q + 32 * b));
      /* u8 x s8 products: |w| times x with w's sign moved onto x. */
      __mmask64 neg = _mm512_movepi8_mask(w);
      __m512i sx = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
      __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), sx);
      __m512 sc = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(rd16(b0)) * xq.d[b]), _mm256_set1_ps(_cvtsh_ss(rd16(b1)) * xq.d[b + 1]), 1);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc);
    }
  } else {
    const int bb = t == T_Q4_0 ? 18 : 20, qo = bb - 16;
    for (; b + 2 <= nb; b += 2) {
      const uint8_t *b0 = p + b * bb, *b1 = b0 + bb;
      __m256i qq = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + qo))),
                                           _mm_loadu_si128((const __m128i *)(b1 + qo)), 1);
      __m256i lo = _mm256_and_si256(qq, m4), hi = _mm256_and_si256(_mm256_srli_epi16(qq, 4), m4);
      /* [lo0 hi0 lo1 hi1]: each block's 32 values in element order. */
      __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
                                     _mm256_permute2x128_si256(lo, hi, 0x31), 1);
      __m512i xv = _mm512_loadu_si512((const void *)(xq.q + 32 * b));
      __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xv);
      float d0 = _cvtsh_ss(rd16(b0)), d1 = _cvtsh_ss(rd16(b1));
      __m512 sc = _mm512_insertf32x8(_mm512_set1_ps(d0 * xq.d[b]), _mm256_set1_ps(d1 * xq.d[b + 1]), 1);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc);
      float m0 = t == T_Q4_0 ? -8 * d0 : _cvtsh_ss(rd16(b0 + 2)), m1 = t == T_Q4_0 ? -8 * d1 : _cvtsh_ss(rd16(b1 + 2));
      msum += m0 * xq.s[b] + m1 * xq.s[b + 1];
    }
  }
  float s = _mm512_reduce_add_ps(acc) + msum;
  if (b < nb) {
    eq_q8 tail = {xq.q + 32 * b, xq.d + b, xq.s + b};
    s += eq_dot_q8_ref(t, p + b * eq_block_bytes(t), tail, n - 32 * b);
  }
  return s;
}
#endif

#if EQ_AVX2
/* Integer dot products without VNNI: maddubs (u8 x s8 -> pairs of i16) then madd with ones
 * (-> i32). The i16 pair sums cannot saturate: at most 2 * 127 * 127 for Q8_0 (signs moved onto
 * x) and 2 * 15 * 127 for the 4-bit types. */
static float dot_q8_avx2(uint32_t t, const void *row, eq_q8 xq, int64_t n) {
  const uint8_t *p = (const uint8_t *)row;
  const int64_t nb = n / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  float msum = 0;
  if (t == T_Q8_0) {
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *blk = p + b * 34;
      __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
      __m256i xv = _mm256_loadu_si256((const __m256i *)(xq.q + 32 * b));
      __m256i pr = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(xv, w));
      __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pr, ones));
      acc = _mm256_fmadd_ps(dot, _mm256_set1_ps(_cvtsh_ss(rd16(blk)) * xq.d[b]), acc);
    }
  } else {
    const int bb = t == T_Q4_0 ? 18 : 20, qo = bb - 16;
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *blk = p + b * bb;
      __m128i q = _mm_loadu_si128((const __m128i *)(blk + qo));
      /* [low nibbles | high nibbles]: the block's 32 values in element order. */
      __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
      __m256i xv = _mm256_loadu_si256((const __m256i *)(xq.q + 32 * b));
      __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), ones));
      float d = _cvtsh_ss(rd16(blk));
      acc = _mm256_fmadd_ps(dot, _mm256_set1_ps(d * xq.d[b]), acc);
      msum += (t == T_Q4_0 ? -8 * d : _cvtsh_ss(rd16(blk + 2))) * xq.s[b];
    }
  }
  return hsum8(acc) + msum;
}
#endif

float eq_dot_q8(uint32_t t, const void *row, eq_q8 xq, int64_t n) {
#if EQ_AVX512 && defined(__AVX512VNNI__)
  return dot_q8_avx512(t, row, xq, n);
#elif EQ_AVX2
  return dot_q8_avx2(t, row, xq, n);
#else
  return eq_dot_q8_ref(t, row, xq, n);
#endif
}

void eq_gemv_q8(uint32_t t, const void *w, size_t row_bytes, eq_q8 xq, float *out, int64_t n, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) out[r] = eq_dot_q8(t, (const uint8_t *)w + r * row_bytes, xq, n);
}

/* ---- threads ---- */

void eq_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

int eq_affinity_cores(void) {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int c = CPU_COUNT(&set);
    return c > 0 ? c : 1;
  }
#endif
  return 0;
}
