#pragma once
/*
 * Hand-written kernels of the inference engine (Sources/Engine). Activations are
 * channel-major: the (channel c, image b) plane of an [C, nb, H, W] tensor starts at
 * (c * nb + b) * H * W. Each entry point picks an AVX-512 or a portable build at run time.
 */
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Winograd F(2x2,3x3) input transform of tiles [t0, t0 + tc) (tiles enumerated image-major,
 * then tile row, then tile column; th x tw tiles per image). Writes
 * v[(e * cin + ci) * tc + (t - t0)] for the 16 transform entries e.
 */
void tessera_engine_wino_input(const float *x, int nb, int cin, int h, int w, int pt, int pl,
                               int th, int tw, long t0, long tc, float *v);

/**
 * Winograd F(2x2,3x3) output transform: y = A^T m A + bias[co] (+ residual), clamped to
 * [lo, hi], for tiles [t0, t0 + tc); m[(e * cout + co) * tc + (t - t0)]. `residual` may be NULL.
 */
void tessera_engine_wino_output(const float *m, int nb, int cout, int oh, int ow, int th, int tw,
                                long t0, long tc, const float *bias, const float *residual,
                                float lo, float hi, float *y);

/**
 * im2col of output columns [n0, n0 + cols) (flattened (image, oy, ox)) for input channels
 * [c0, c0 + cg) of a channel-major [C, nb, h, w] tensor: col[k * cols + j], k = (ci * kh + ky) * kw + kx.
 */
void tessera_engine_im2col(const float *x, int nb, int c0, int cg, int h, int w, int kh, int kw,
                           int sh, int sw, int dh, int dw, int pt, int pl, int oh, int ow,
                           long n0, long cols, float *col);

/** Winograd F(4x4,3x3) input transform: 6x6 tiles, stride 4; v[(e * cin + ci) * tc + t], e < 36. */
void tessera_engine_wino43_input(const float *x, int nb, int cin, int h, int w, int pt, int pl,
                                 int th, int tw, long t0, long tc, float *v);

/** Winograd F(4x4,3x3) output transform (as tessera_engine_wino_output, 36 entries, 4x4 tiles). */
void tessera_engine_wino43_output(const float *m, int nb, int cout, int oh, int ow, int th, int tw,
                                  long t0, long tc, const float *bias, const float *residual,
                                  float lo, float hi, float *y);

#ifdef __cplusplus
}
#endif
