/* Branch-free float maths the compiler can vectorise, which it cannot do with libm's calls:
   exp2 (for Ā, as mamba_ssm's kernel computes it), exp, log1p on [0, 1], and from them SiLU and
   softplus. Cephes' single-precision polynomials; errors measured against float64 in
   tests/test_native.py. NaN propagates; no fast-math anywhere (the rounding trick needs IEEE order). */
#include <stdint.h>
#include <string.h>

#define ROUND_MAGIC 12582912.0f /* 1.5 · 2^23: (v + M) − M rounds v to an integer, |v| < 2^22 */

static inline float bits_to_float(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline int32_t float_to_bits(float f) { int32_t i; memcpy(&i, &f, sizeof i); return i; }

/* bf16 is the top half of an fp32: widening is exact */
static inline float bf16_to_float(uint16_t v) { return bits_to_float((int32_t)((uint32_t)v << 16)); }

/* 2^i for integer-valued i in [-127, 128]: 0 at -127 (no denormals), inf at 128 */
static inline float pow2i(float i) { return bits_to_float(((int32_t)i + 127) << 23); }

/* 2^x = 2^i · p(f), i = round(x), f in [-1/2, 1/2]. Relative error 7.9e-8 over the normal range. */
static inline float exp2_poly(float x) {
  float xc = x < -127.0f ? -127.0f : (x > 128.0f ? 128.0f : x);
  float i = (xc + ROUND_MAGIC) - ROUND_MAGIC;
  float f = xc - i;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  return x != x ? x : p * pow2i(i);
}

/* e^x with Cody–Waite reduction x = i·ln2 + r (ln2 split in two so i·ln2 is exact), e^r by
   polynomial: unlike 2^(x·log2 e) it does not lose |x|·2^-24 to rounding x·log2 e. */
static inline float exp_poly(float x) {
  float xc = x < -88.0f ? -88.0f : (x > 88.8f ? 88.8f : x);
  float i = (xc * 1.44269504088896341f + ROUND_MAGIC) - ROUND_MAGIC;
  float r = xc - i * 0.693359375f;
  r = r - i * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return x != x ? x : p * pow2i(i < -127.0f ? -127.0f : i);
}

/* log(1 + u) for u in [0, 1]: log(w)·u/(w − 1) with w = 1 + u as rounded, which restores the
   low bits of u that 1 + u drops (Goldberg); log(w) = e·ln2 + log(1 + f) by Cephes' logf. */
static inline float log1p_unit(float u) {
  float w = 1.0f + u;
  int32_t bits = float_to_bits(w);
  float e = (float)(((bits >> 23) & 0xff) - 126);       /* w = m · 2^e, m in [1/2, 1) */
  float m = bits_to_float((bits & 0x007fffff) | 0x3f000000);
  int low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  float f = low ? m + m - 1.0f : m - 1.0f;
  float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float log_w = f + (p * f * z - 2.12194440e-4f * e - 0.5f * z) + 0.693359375f * e;
  return w == 1.0f ? u : log_w * (u / (w - 1.0f));
}

/* softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^−|x|): e^−|x| never overflows */
static inline float softplus(float x) {
  float ax = x < 0.0f ? -x : x;
  return (x > 0.0f ? x : 0.0f) + log1p_unit(exp_poly(-ax));
}

/* SiLU(x) = x · σ(x), as torch computes it: x / (1 + e^−x) */
static inline float silu(float x) { return x / (1.0f + exp_poly(-x)); }
