/* The Mamba mixer's elementwise work on CPU, fused; mirrors mamba_ssm's two CUDA kernels.

   causal_conv1d_silu   y_t = SiLU(bias + Σ_i w_i ⊙ x_{t−(k−1)+i})
                        (causal_conv1d_fn(..., activation="silu"))
   selective_scan       h_t = exp2(Δ_t · A2) ⊙ h_{t−1} + Δ_t · x_t · B_t,   h_{−1} = h0 (default 0)
                        y_t = (h_t · C_t + D ⊙ x_t) ⊙ SiLU(z_t) if z is given   (selective_scan_fn)
   elementwise          exp2, exp, softplus or SiLU of each element (softplus makes Δ; torch's
                        runs at a quarter of the speed)

   A2 = A · log2 e, laid out [n, d_in]; conv weights laid out [k, d_in]: every inner loop runs
   over d_in contiguous channels and vectorises. Shapes as in scan.py: x, delta, z, y
   [b, l, d_in]; B, C [b, l, n]; D, bias [d_in]. All fp32 with unit stride in the last dimension,
   except the two that come straight out of in_proj, the conv's x and the scan's gate z, which may
   be bf16 (x_bf16, z_bf16): under a bf16 model they are read as they are, widened to fp32 on load
   (exact), instead of in a separate conversion pass. Inputs that are column slices of a wider
   matrix (x and z out of in_proj, B and C out of x_proj) are read in place, with their row
   stride ld_* between consecutive positions. The scan's incoming state h0 (may be null) is laid
   out [b, n, d_in] like the scratch, ld_h0 apart per run (0: one state shared by every run).

   The scan's scratch holds one run's state h [n, d_in] per thread (96 KiB at mamba-130m), so h
   stays in cache from the first position to the last instead of streaming [b, n, d_in] through
   memory at every step, as the PyTorch scan must.

   Threads: work is shared out by OpenMP. Built with -fopenmp, this library asks for
   libgomp.so.1, which the dynamic loader answers with the copy torch has already loaded, so the
   kernels run on torch's own worker threads instead of competing with them while they spin
   after a matmul. Without OpenMP they run on the calling thread.

   Built with -O3 -fno-trapping-math (and -march=native where the compiler takes it): the latter
   lets the compiler evaluate both sides of vmath.h's selects, which it needs to vectorise; we
   never read FP traps. */
#include "vmath.h"

#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

void causal_conv1d_silu(const void *x, int64_t ld_x, int x_bf16, const float *w, const float *bias, float *y,
                        int64_t b, int64_t l, int64_t d, int64_t k, int threads) {
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
  for (int64_t r = 0; r < b; ++r) {
    for (int64_t t = 0; t < l; ++t) {
      float *yt = y + (r * l + t) * d;
      for (int64_t j = 0; j < d; ++j) yt[j] = bias ? bias[j] : 0.0f;
      for (int64_t i = 0; i < k; ++i) {
        const int64_t s = t - (k - 1) + i; /* positions before 0 are the zero padding */
        if (s < 0) continue;
        const float *wi = w + i * d;
        const int64_t at = (r * l + s) * ld_x;
        if (x_bf16) {
          const uint16_t *xs = (const uint16_t *)x + at;
          for (int64_t j = 0; j < d; ++j) yt[j] += wi[j] * bf16_to_float(xs[j]);
        } else {
          const float *xs = (const float *)x + at;
          for (int64_t j = 0; j < d; ++j) yt[j] += wi[j] * xs[j];
        }
      }
      for (int64_t j = 0; j < d; ++j) yt[j] = silu(yt[j]);
    }
  }
}

static void scan_run(const float *x, const float *dt, const float *A2, const float *B, int64_t ld_B,
                     const float *C, int64_t ld_C, const float *D, const void *z, int64_t ld_z, int z_bf16,
                     const float *h0, float *y, float *h, int64_t l, int64_t d, int64_t n) {
  if (h0) /* the incoming state, [n, d_in] like h */
    for (int64_t i = 0; i < n * d; ++i) h[i] = h0[i];
  for (int64_t t = 0; t < l; ++t, x += d, dt += d, y += d) {
    for (int64_t j = 0; j < d; ++j) y[j] = D[j] * x[j];
    for (int64_t k = 0; k < n; ++k) {
      const float *a = A2 + k * d;
      float *hk = h + k * d;
      const float bk = B[t * ld_B + k], ck = C[t * ld_C + k];
      if (t == 0 && !h0) { /* h_{-1} = 0: no Ā_0 needed */
        for (int64_t j = 0; j < d; ++j) {
          hk[j] = dt[j] * x[j] * bk;
          y[j] += hk[j] * ck;
        }
      } else {
        for (int64_t j = 0; j < d; ++j) {
          hk[j] = exp2_poly(dt[j] * a[j]) * hk[j] + dt[j] * x[j] * bk;
          y[j] += hk[j] * ck;
        }
      }
    }
    if (z && z_bf16) {
      const uint16_t *zt = (const uint16_t *)z + t * ld_z;
      for (int64_t j = 0; j < d; ++j) y[j] *= silu(bf16_to_float(zt[j]));
    } else if (z) {
      const float *zt = (const float *)z + t * ld_z;
      for (int64_t j = 0; j < d; ++j) y[j] *= silu(zt[j]);
    }
  }
}

void selective_scan(const float *x, const float *delta, const float *A2, const float *B, int64_t ld_B,
                    const float *C, int64_t ld_C, const float *D, const void *z, int64_t ld_z, int z_bf16,
                    const float *h0, int64_t ld_h0, float *y, float *scratch, int64_t b, int64_t l, int64_t d,
                    int64_t n, int threads) {
  const int64_t z_size = z_bf16 ? 2 : 4;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < b; ++r)
    scan_run(x + r * l * d, delta + r * l * d, A2, B + r * l * ld_B, ld_B, C + r * l * ld_C, ld_C, D,
             z ? (const char *)z + r * l * ld_z * z_size : 0, ld_z, z_bf16, h0 ? h0 + r * ld_h0 : 0, y + r * l * d,
             scratch + omp_get_thread_num() * n * d, l, d, n);
}

enum { EXP2, EXP, SOFTPLUS, SILU };

void elementwise(int op, const float *x, float *y, int64_t size, int threads) {
  const int64_t block = 4096;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t start = 0; start < size; start += block) {
    const int64_t end = start + block < size ? start + block : size;
    switch (op) {
      case EXP2: for (int64_t i = start; i < end; ++i) y[i] = exp2_poly(x[i]); break;
      case EXP: for (int64_t i = start; i < end; ++i) y[i] = exp_poly(x[i]); break;
      case SOFTPLUS: for (int64_t i = start; i < end; ++i) y[i] = softplus(x[i]); break;
      default: for (int64_t i = start; i < end; ++i) y[i] = silu(x[i]); break;
    }
  }
}
