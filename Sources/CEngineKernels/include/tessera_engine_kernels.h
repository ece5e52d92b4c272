#pragma once
/*
 * Hand-written kernels of the inference engine (Sources/Engine). Activations are
 * channel-major: the (channel c, image b) plane of an [C, nb, H, W] tensor starts at
 * (c * nb + b) * H * W. Each entry point takes `isa`, the TESSERA_ISA_* level to run at (see
 * tessera_cpu.h; resolved by the caller), and uses its AVX-512 build at TESSERA_ISA_AVX512 and
 * above, its portable build below.
 */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Winograd F(2x2,3x3) input transform of tiles [t0, t0 + tc) (tiles enumerated image-major,
 * then tile row, then tile column; th x tw tiles per image). Writes
 * v[(e * cin + ci) * tc + (t - t0)] for the 16 transform entries e.
 */
void tessera_engine_wino_input(int isa, const float *x, int nb, int cin, int h, int w, int pt, int pl,
                               int th, int tw, long t0, long tc, float *v);

/**
 * Winograd F(2x2,3x3) output transform: y = A^T m A + bias[co] (+ residual), clamped to
 * [lo, hi], for tiles [t0, t0 + tc); m[(e * cout + co) * tc + (t - t0)]. `residual` may be NULL.
 */
void tessera_engine_wino_output(int isa, const float *m, int nb, int cout, int oh, int ow, int th, int tw,
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
void tessera_engine_wino43_input(int isa, const float *x, int nb, int cin, int h, int w, int pt, int pl,
                                 int th, int tw, long t0, long tc, float *v);

/** Winograd F(4x4,3x3) output transform (as tessera_engine_wino_output, 36 entries, 4x4 tiles). */
void tessera_engine_wino43_output(int isa, const float *m, int nb, int cout, int oh, int ow, int th, int tw,
                                  long t0, long tc, const float *bias, const float *residual,
                                  float lo, float hi, float *y);

/**
 * Depthwise convolution of (channel, image) planes [p0, p1) of a channel-major [C, nb, h, w]
 * tensor (plane p = c * nb + b uses weights[c * kh * kw ...] and bias[c]):
 * y = clamp(conv + bias (+ residual), lo, hi). `residual` (same layout as y) may be NULL.
 */
void tessera_engine_depthwise(int isa, const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                              int pt, int pl, int oh, int ow, const float *weights, const float *bias,
                              const float *residual, float lo, float hi, long p0, long p1, float *y);

/**
 * A dilated (or any) convolution at the AVX-512 level with its weights packed tap-major
 * (tessera_engine_conv_pack of `[cout][kh * kw][cin]`): as tessera_engine_conv, but each 48-column
 * chunk gathers and multiplies only the taps some of its outputs read inside the map (DeepLabV3's
 * rate-12/24 ASPP convs on 32 x 32 maps read padding with a quarter to a half of their taps).
 */
void tessera_engine_conv_live_taps(int isa, const float *x, int nb, int cin, int h, int w, int kh, int kw, int sh, int sw,
                                   int dh, int dw, int pt, int pl, int oh, int ow, int cout, const float *packed,
                                   const float *bias, const float *residual, float lo, float hi,
                                   long r0, long r1, int m0, int m1, float *y);

/** Process-wide (glibc): large allocations from the heap, freed pages kept for reuse (mallopt). */
void tessera_keep_freed_blocks(void);

/** Transparent huge pages for the 2 MB-aligned part of a large buffer not yet written (madvise). */
void tessera_advise_huge_pages(void *p, size_t bytes);

/** Floats of the packed weights of a dense convolution with `cout` outputs and `k = cin * kh * kw`. */
long tessera_engine_conv_packed_count(int cout, int k);

/** Packs [cout, k] weights into blocks of 8 output channels: packed[(block * k + p) * 8 + r]. */
void tessera_engine_conv_pack(const float *w, int cout, int k, float *packed);

/**
 * C (m x n, row stride ldc) = A x B with A (m x k) packed by tessera_engine_conv_pack and B (k x n,
 * row stride ldb): the direct conv's 8 x 48 AVX-512 tile (portable loop otherwise), for the
 * Winograd transform-domain GEMMs (small m, k, n where OpenBLAS's per-call packing dominates).
 */
void tessera_engine_sgemm_packed(int isa, const float *packed, int m, int k, const float *b, long ldb, int n,
                                 float *c, long ldc);

/** C (m x n) = A (m x k) x B (k x n), all row-major and contiguous, with A packed into the thread's
 *  scratch for tessera_engine_sgemm_packed (the batched MatMuls of attention). */
void tessera_engine_matmul(int isa, const float *a, int m, int k, const float *b, int n, float *c);

/** Floats of the [n, k] weights of a dense layer packed by tessera_engine_gemm_pack_panels. */
long tessera_engine_gemm_panels_count(int n, int k);

/** Packs [n, k] weights (y = x W^T) as 48-column panels of W^T: panels[(q * k + p) * 48 + j] = w[q * 48 + j][p]. */
void tessera_engine_gemm_pack_panels(const float *w, int n, int k, float *panels);

/**
 * Columns [q0, q1) (q0 a multiple of 48) of y (m x n, row-major) = x (m x k, row-major) W^T + bias,
 * W packed by tessera_engine_gemm_pack_panels: x's rows are packed into the thread's scratch in
 * blocks of 8, then every 48-column panel runs across them on the direct conv's tile.
 */
void tessera_engine_gemm_rows(int isa, const float *x, int m, int k, const float *panels, int n, int q0, int q1,
                              const float *bias, float *y);

/**
 * Dense (ungrouped) convolution of output rows [r0, r1) (of the nb * oh (image, oy) rows) and
 * output channels [m0, m1) (m0 a multiple of 8) of a channel-major input, with the weights packed
 * by tessera_engine_conv_pack: y = clamp(conv + bias (+ residual), lo, hi). Dilation 1 runs on
 * phase-split zero-padded copies of the input rows (no im2col), or, when those would waste many
 * tile columns (small maps, stride 2, many output channels), on dense im2col panels of 48 output
 * columns gathered across images (AVX-512); other dilations use im2col panels.
 * `path`: 0 = choose per call (dense panels when their estimated cost, with `gather_cost` per
 * gathered k-row, is lower; gather_cost <= 0 never), 1 = always phase planes, 2 = always dense
 * gathered panels (AVX-512 only). Uses per-thread scratch; thread-safe for disjoint (row, channel) ranges.
 */
void tessera_engine_conv(int isa, int path, double gather_cost, const float *x, int nb, int cin, int h, int w, int kh, int kw, int sh, int sw,
                         int dh, int dw, int pt, int pl, int oh, int ow, int cout, const float *packed,
                         const float *bias, const float *residual, float lo, float hi,
                         long r0, long r1, int m0, int m1, float *y);

/**
 * Pointwise (1x1, stride 1, unpadded, ungrouped) convolution of columns [n0, n1) (of the `total`
 * (image, y, x) columns) and output channels [m0, m1) (m0 a multiple of 8) of a channel-major
 * input, weights packed by tessera_engine_conv_pack (k = cin): the input rows are the GEMM's B
 * rows read in place; y = clamp(W x + bias (+ residual), lo, hi). Thread-safe for disjoint ranges.
 */
void tessera_engine_pointwise(int isa, const float *x, long total, int cin, int cout, const float *packed,
                              const float *bias, const float *residual, float lo, float hi,
                              long n0, long n1, int m0, int m1, float *y);

/* Resize of planes [p0, p1) (each ih x iw -> oh x ow, contiguous): output row i blends input rows
 * ri0[i], ri1[i] by rw[i], column j input columns ci0[j], ci1[j] by cw[j] (v0 + (v1 - v0) w). */
void tessera_engine_resize(int isa, const float *x, long p0, long p1, int ih, int iw, int oh, int ow,
                           const int *ri0, const int *ri1, const float *rw, const int *ci0, const int *ci1,
                           const float *cw, float *y);
/* out[q] = mean (or max) of plane q (sp contiguous floats) for q < planes. */
void tessera_engine_global_pool(int isa, const float *x, long planes, long sp, int is_max, float *out);

/**
 * Max / average pooling of planes [p0, p1) (plane p = c * nb + b of the channel-major output).
 * The input is channel-major when `nchw_channels` is 0, else NCHW with that many channels.
 * Average divides by max(row_count[oy] * col_count[ox], 1).
 */
void tessera_engine_pool(int isa, const float *x, int nchw_channels, int nb, int h, int w, int kh, int kw, int sh, int sw,
                         int dh, int dw, int pt, int pl, int oh, int ow, int is_max,
                         const float *row_count, const float *col_count, long p0, long p1, float *y);

/* ── INT8 (engine_int8.c) ─────────────────────────────────────────────────── */

/** Largest quantised activation: 7 bits, so u8 x s8 pair sums fit int16 on every ISA level. */
#define TESSERA_Q8_MAX 127

/** Bytes of int8 weights [cout][cin][taps] packed by tessera_engine_q8_pack (16-channel blocks, cin in 4s). */
long tessera_engine_q8_packed_bytes(int cout, int taps, int cin);
/** Packs int8 weights `w[(o * cin + ci) * taps + t]` for tessera_engine_q8_conv. */
void tessera_engine_q8_pack(const int8_t *w, int cout, int cin, int taps, int8_t *packed);

/**
 * Quantises images [i0, i1) of a [C, nb, h, w] (channel_major) or [nb, C, h, w] fp32 tensor to
 * uint8, q = clamp(round(x * inv_scale) + zp, 0, TESSERA_Q8_MAX), into the padded pixel-major copy
 * xq[((img * hp + pt + y) * wp + pl + x) * cin4 + c] (cin4 = cin rounded up to 4); the padding
 * holds zp, the extra channels 0.
 */
void tessera_engine_q8_quantize(const float *x, int channel_major, int nb, int cin, int h, int w,
                                int pt, int pl, int hp, int wp, float inv_scale, int zp, long i0, long i1,
                                uint8_t *xq);

/**
 * Where an INT8 layer writes its output as the next INT8 layer's quantised input (int8 kept
 * between layers): the padded pixel-major copy `xq` of that layer (hp x wp maps, the image at
 * (pt, pl), c4 bytes per pixel) with its scale and zero point, q = clamp(round(v * inv) + zp, 0,
 * TESSERA_Q8_MAX): the same bytes tessera_engine_q8_quantize would make of the fp32 output.
 */
typedef struct {
    uint8_t *xq;
    int hp, wp, pt, pl, c4;
    float inv;
    int zp;
    /* nonzero: the fp32 output (with its residual) is written too, and the codes are those of it */
    int dual;
} tessera_q8_target;

/** Fills the padding ring of images [i0, i1) of a padded copy (layout as above, maps h x w, cin real
 * channels): the zero point in real channels, 0 in the padding channels (the pixels inside are written by a producer). */
void tessera_engine_q8_fill_border(uint8_t *xq, int cin, int h, int w, int pt, int pl, int hp, int wp, int zp,
                                   long i0, long i1);

/**
 * INT8 convolution of output pixels [n0, n1) (flattened (image, oy, ox) of oh x ow maps) and output
 * channels [m0, m1) (m0 a multiple of 16) over the quantised copy `xq` (hp x wp padded maps, cin
 * channels) with weights packed by tessera_engine_q8_pack (taps = kh * kw):
 * y[o * so + n * sp] = clamp(float(acc - corr[o]) * scale[o] + bias[o] (+ residual[same index]), lo, hi),
 * where acc is the exact int32 sum of u8 x s8 products. so = total, sp = 1 writes a channel-major
 * conv output; so = 1, sp = cout a [n, cout] dense-layer output. With `target` the value is
 * quantised into the target's pixel (image, oy, ox) instead and y is unused (no residual), or,
 * with `target->dual`, as well (sp == 1).
 * `isa` picks vpdpbusd (VNNI levels), vpmaddwd (AVX-512, AVX2) or plain C; all give the same bits.
 */
void tessera_engine_q8_conv(int isa, const uint8_t *xq, int hp, int wp, int cin, int kh, int kw, int sh, int sw,
                            int dh, int dw, int oh, int ow, int cout, const int8_t *packed, const int32_t *corr,
                            const float *scale, const float *bias, const float *residual, float lo, float hi,
                            long total, long n0, long n1, int m0, int m1, float *y, long so, long sp,
                            const tessera_q8_target *target);

/**
 * Max pooling of quantised codes (exact: the quantiser is monotone, so the max of the codes is the code
 * of the max) for images [i0, i1): input padded copy x (xhp x xwp maps, c4 bytes per pixel, its padding
 * code 0), windows kh x kw, stride, dilation, oh x ow outputs written into `target`'s pixels.
 */
void tessera_engine_q8_maxpool(const uint8_t *x, int xhp, int xwp, int c4, int kh, int kw, int sh, int sw,
                               int dh, int dw, int oh, int ow, const tessera_q8_target *target, long i0, long i1);

/* ── BF16 (engine_bf16.c) ─────────────────────────────────────────────────── */

/** v rounded to bfloat16 (nearest even) and back. */
float tessera_engine_bf16_round(float v);
/** bf16 elements of weights [cout][cin][taps] packed by tessera_engine_bf16_pack (16-channel blocks, cin in pairs). */
long tessera_engine_bf16_packed_count(int cout, int taps, int cin);
/** Rounds weights `w[(o * cin + ci) * taps + t]` to bf16 and packs them for tessera_engine_bf16_conv. */
void tessera_engine_bf16_pack(const float *w, int cout, int cin, int taps, uint16_t *packed);
/**
 * Rounds images [i0, i1) of a [C, nb, h, w] (channel_major) or [nb, C, h, w] fp32 tensor to bf16 into the
 * padded pixel-major copy xb[((img * hp + pt + y) * wp + pl + x) * cin2 + c] (cin2 = cin rounded up to 2),
 * padding and the extra channel 0.
 */
void tessera_engine_bf16_convert(int isa, const float *x, int channel_major, int nb, int cin, int h, int w,
                                 int pt, int pl, int hp, int wp, long i0, long i1, uint16_t *xb);
/**
 * BF16 convolution of output pixels [n0, n1) and channels [m0, m1) (m0 a multiple of 16) over the copy `xb`,
 * fp32 accumulation: y[o * so + n * sp] = clamp(acc + bias[o] (+ residual[same index]), lo, hi). Layouts as
 * tessera_engine_q8_conv. `vdpbf16ps` on avx512-bf16, fp32 FMAs on the bf16 values on avx512, plain C below.
 */
void tessera_engine_bf16_conv(int isa, const uint16_t *xb, int hp, int wp, int cin, int kh, int kw, int sh, int sw,
                              int dh, int dw, int oh, int ow, int cout, const uint16_t *packed, const float *bias,
                              const float *residual, float lo, float hi, long n0, long n1, int m0, int m1,
                              float *y, long so, long sp);

/* Activations with exp, in place over n floats: kind 1 sigmoid, 2 SiLU (x * sigmoid(x)), 3 Mish
 * (x * tanh(softplus(x))), vectorised at `isa` (exp as a polynomial, relative error ~2e-7). */
enum { TESSERA_ACT_SIGMOID = 1, TESSERA_ACT_SILU = 2, TESSERA_ACT_MISH = 3, TESSERA_ACT_ERF = 4, TESSERA_ACT_GELU = 5 };
void tessera_engine_activation(float *p, long n, int kind, int isa);
/* p[i] = hardSigmoid(p[i]) = max(0, min(1, a p[i] + b)), or with swish p[i] * hardSigmoid(p[i]). */
void tessera_engine_hard_activation(float *p, long n, int swish, float a, float b, int isa);
/* p[i] = p[i] ** e (exp(e log |x|) vectorised, relative error ~1e-6 for |e log x| < 10; exact forms
 * for e = 1, 2, 3, 0.5, -0.5, -1). */
void tessera_engine_pow(float *p, long n, float e, int isa);
/* Softmax over `rows` rows of n floats, x -> y (may be the same buffer). */
void tessera_engine_softmax_rows(const float *x, float *y, long rows, int n, int isa);

#ifdef __cplusplus
}
#endif
