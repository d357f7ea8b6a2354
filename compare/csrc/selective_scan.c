/* The selective scan, fused: each run's state h stays in cache from the first position to the last.

   h_t = exp2(Δ_t · A2) ⊙ h_{t-1} + Δ_t · x_t · B_t,   y_t = h_t · C_t + D ⊙ x_t,   h_{-1} = 0

   where A2 = A · log2(e), laid out [n, d_in] so that every inner loop runs over d_in contiguous
   channels and vectorises. Shapes as in scan.py: x, delta, y [b, l, d_in]; B, C [b, l, n];
   D [d_in]; h is scratch, one [n, d_in] state per thread (96 KiB at mamba-130m). All fp32,
   contiguous.

   Threads: runs are shared out by OpenMP. Built with -fopenmp, this library asks for
   libgomp.so.1, which the dynamic loader answers with the copy torch has already loaded, so the
   kernel runs on torch's own worker threads instead of competing with them while they spin
   after a matmul. Without OpenMP it runs on the calling thread.

   Built with -O3 -fno-trapping-math (and -march=native where the compiler takes it): the latter
   lets the compiler evaluate both sides of exp2_poly's selects, which it needs to vectorise; we
   never read FP traps. No fast-math: the rounding trick and NaN propagation depend on IEEE order. */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

/* 2^x as 2^round(x) · p(f), f in [-1/2, 1/2], with Cephes' exp2f polynomial: relative error
   7.9e-8 over the normal range (torch.exp2: 6.9e-8). Branch-free so it vectorises, which libm's
   exp2f does not. 0 from x = -127 down (where exp2f gives denormals, < 1.2e-38), inf above 128,
   NaN passes through. */
static inline float exp2_poly(float x) {
  float xc = x < -127.0f ? -127.0f : (x > 128.0f ? 128.0f : x);
  float i = (xc + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 · 2^23 leaves no fraction bits */
  float f = xc - i;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  int32_t bits = ((int32_t)i + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return x != x ? x : p * scale;
}

static void scan_run(const float *x, const float *delta, const float *A2, const float *B, const float *C,
                     const float *D, float *y, float *h, int64_t l, int64_t d, int64_t n) {
  for (int64_t t = 0; t < l; ++t) {
    const float *dt = delta + t * d, *xt = x + t * d;
    float *yt = y + t * d;
    for (int64_t j = 0; j < d; ++j) yt[j] = D[j] * xt[j];
    for (int64_t k = 0; k < n; ++k) {
      const float *a = A2 + k * d;
      float *hk = h + k * d;
      const float bk = B[t * n + k], ck = C[t * n + k];
      if (t == 0) { /* h_{-1} = 0: no Ā_0 needed */
        for (int64_t j = 0; j < d; ++j) {
          hk[j] = dt[j] * xt[j] * bk;
          yt[j] += hk[j] * ck;
        }
      } else {
        for (int64_t j = 0; j < d; ++j) {
          hk[j] = exp2_poly(dt[j] * a[j]) * hk[j] + dt[j] * xt[j] * bk;
          yt[j] += hk[j] * ck;
        }
      }
    }
  }
}

void selective_scan(const float *x, const float *delta, const float *A2, const float *B, const float *C,
                    const float *D, float *y, float *h, int64_t b, int64_t l, int64_t d, int64_t n,
                    int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < b; ++r)
    scan_run(x + r * l * d, delta + r * l * d, A2, B + r * l * n, C + r * l * n, D, y + r * l * d,
             h + omp_get_thread_num() * n * d, l, d, n);
}
