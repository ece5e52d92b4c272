/*
 * INT8 convolution and dense layers (see tessera_engine_kernels.h). Activations are quantised
 * per tensor to 7-bit unsigned values (0..127: AVX2's vpmaddubsw cannot saturate) with a zero point into a padded pixel-major copy ([image][row][col][cin4],
 * padding = the zero point), weights per output channel to symmetric int8, packed in blocks of
 * 16 output channels: packed[((blk * taps + t) * cin4 / 4 + c4) * 64 + ch * 4 + j] holds weight
 * (blk * 16 + ch, input channel c4 * 4 + j, tap t). A register tile of 16 output pixels x 16
 * channels reads every tap of a pixel in place (no im2col) and accumulates u8 x s8 products in
 * int32: `vpdpbusd` (AVX512-VNNI / AVX-VNNI), or the same exact sums from vpmaddubsw +
 * vpmaddwd (AVX-512, AVX2), or plain C. Integer sums are exact, and the fp32
 * epilogue (scale, bias, residual, clamp) and the quantisation are one shared C function each,
 * so every ISA level gives bit-identical results.
 */
#include "engine_internal.h"
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define QCH 16 /* output channels per block */
#define QPX 16 /* output pixels per tile */

long tessera_engine_q8_packed_bytes(int cout, int taps, int cin) {
    return (long)((cout + QCH - 1) / QCH) * taps * ((cin + 3) / 4) * 64;
}

void tessera_engine_q8_pack(const int8_t *w, int cout, int cin, int taps, int8_t *packed) {
    const int c4n = (cin + 3) / 4;
    const long n = tessera_engine_q8_packed_bytes(cout, taps, cin);
    memset(packed, 0, (size_t)n);
    for (int o = 0; o < cout; o++)
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < taps; t++) {
                const int blk = o / QCH, ch = o % QCH, c4 = ci / 4, j = ci % 4;
                packed[(((long)blk * taps + t) * c4n + c4) * 64 + ch * 4 + j] = w[((long)o * cin + ci) * taps + t];
            }
}

/* q = clamp(round-half-even(clamp(v * inv, -2^20, 2^20)) + zp, 0, 127): one definition for every ISA level.
 * The inner clamp changes no finite result (zp is 0..127), it only keeps the conversion in range. On x86-64 it
 * is written with SSE2, which every x86-64 CPU has, so the 4-wide body and the one-value tail are the same
 * operations (mulps/minps/maxps/cvtps2dq round to nearest even, as lrintf does in the default mode) and the
 * same code runs whatever kernels the CPU dispatch picks: results stay bit-identical across paths. */
#define QLIM 1048576.0f
#if defined(__x86_64__) || defined(__SSE2__)
#include <emmintrin.h>
static inline uint8_t quantize_one(float v, float inv, int zp) {
    __m128 t = _mm_mul_ss(_mm_set_ss(v), _mm_set_ss(inv));
    t = _mm_max_ss(_mm_min_ss(t, _mm_set_ss(QLIM)), _mm_set_ss(-QLIM));
    const int q = _mm_cvtss_si32(t) + zp;
    return (uint8_t)(q < 0 ? 0 : q > TESSERA_Q8_MAX ? TESSERA_Q8_MAX : q);
}

/* 4 channels x 4 pixels: s[c] points at 4 consecutive pixels of channel c; writes each pixel's 4 channel bytes
 * (one 32-bit store per pixel) at dst + p * stride, ANDed with `keep` (channel j is byte j: a channel-tail block
 * keeps its real channels and writes 0 into the padding channels). */
static inline void quantize_4x4(const float *const s[4], float inv, int zp, uint8_t *dst, long stride, int32_t keep) {
    const __m128 vinv = _mm_set1_ps(inv), hi = _mm_set1_ps(QLIM), lo = _mm_set1_ps(-QLIM);
    const __m128i vzp = _mm_set1_epi32(zp);
    __m128i q[4];
    for (int c = 0; c < 4; c++) {
        __m128 t = _mm_mul_ps(_mm_loadu_ps(s[c]), vinv);
        t = _mm_max_ps(_mm_min_ps(t, hi), lo);
        q[c] = _mm_add_epi32(_mm_cvtps_epi32(t), vzp);
    }
    /* saturate to int16, then to 0..255, then cap at 127: the scalar clamp; bytes = [c0 p0..p3, c1 .., c2 .., c3 ..] */
    __m128i x = _mm_packus_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3]));
    x = _mm_min_epu8(x, _mm_set1_epi8(TESSERA_Q8_MAX));
    /* 4 x 4 byte transpose: -> [p0 c0..c3, p1 c0..c3, ...] */
    x = _mm_unpacklo_epi8(x, _mm_srli_si128(x, 8));
    x = _mm_unpacklo_epi8(x, _mm_srli_si128(x, 8));
    x = _mm_and_si128(x, _mm_set1_epi32(keep));
    for (int p = 0; p < 4; p++) {
        const int32_t v = _mm_cvtsi128_si32(x);
        memcpy(dst + p * stride, &v, 4);
        x = _mm_srli_si128(x, 4);
    }
}
#define HAVE_QUANTIZE_4X4 1
#else
static inline uint8_t quantize_one(float v, float inv, int zp) {
    float t = v * inv;
    t = t < QLIM ? t : QLIM;
    t = t > -QLIM ? t : -QLIM;
    const long q = lrintf(t) + zp;
    return (uint8_t)(q < 0 ? 0 : q > TESSERA_Q8_MAX ? TESSERA_Q8_MAX : q);
}
#define HAVE_QUANTIZE_4X4 0
#endif

/* The zero point in a pixel's real channels, 0 in its padding channels. */
static void fill_pixels(uint8_t *p, long n, int cin, int c4, int zp) {
    if (c4 == cin) {
        memset(p, zp, (size_t)(n * c4));
        return;
    }
    for (long i = 0; i < n; i++) {
        memset(p + i * c4, zp, (size_t)cin);
        memset(p + i * c4 + cin, 0, (size_t)(c4 - cin));
    }
}

void tessera_engine_q8_fill_border(uint8_t *xq, int cin, int h, int w, int pt, int pl, int hp, int wp, int zp,
                                   long i0, long i1) {
    const int c4 = (cin + 3) / 4 * 4;
    for (long img = i0; img < i1; img++) {
        uint8_t *base = xq + img * hp * wp * c4;
        for (int y = 0; y < hp; y++) {
            uint8_t *row = base + (long)y * wp * c4;
            if (y < pt || y >= pt + h) {
                fill_pixels(row, wp, cin, c4, zp);
            } else {
                fill_pixels(row, pl, cin, c4, zp);
                fill_pixels(row + (long)(pl + w) * c4, wp - pl - w, cin, c4, zp);
            }
        }
    }
}

void tessera_engine_q8_maxpool(const uint8_t *x, int xhp, int xwp, int c4, int kh, int kw, int sh, int sw,
                               int dh, int dw, int oh, int ow, const tessera_q8_target *t, long i0, long i1) {
    for (long img = i0; img < i1; img++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                uint8_t *d = t->xq + ((img * t->hp + t->pt + oy) * t->wp + t->pl + ox) * t->c4;
                const uint8_t *s0 = x + ((img * xhp + (long)oy * sh) * xwp + (long)ox * sw) * c4;
                memcpy(d, s0, (size_t)c4);
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++) {
                        const uint8_t *s = s0 + ((long)ky * dh * xwp + (long)kx * dw) * c4;
                        for (int c = 0; c < c4; c++) d[c] = s[c] > d[c] ? s[c] : d[c];
                    }
            }
}

void tessera_engine_q8_quantize(const float *x, int channel_major, int nb, int cin, int h, int w,
                                int pt, int pl, int hp, int wp, float inv_scale, int zp, long i0, long i1,
                                uint8_t *xq) {
    const int c4 = (cin + 3) / 4 * 4;
    const long hw = (long)h * w;
    for (long img = i0; img < i1; img++) {
        uint8_t *base = xq + img * hp * wp * c4;
        /* padding rows / columns hold the zero point, padding channels 0 (their weights are 0); the pixels of the
         * image itself are written whole below (the 4-channel blocks write their padding channels too) */
#if HAVE_QUANTIZE_4X4
        tessera_engine_q8_fill_border(xq, cin, h, w, pt, pl, hp, wp, zp, img, img + 1);
#else
        fill_pixels(base, (long)hp * wp, cin, c4, zp);
#endif
#define PLANE(ci) (channel_major ? x + ((long)(ci) * nb + img) * hw : x + (img * cin + (ci)) * hw)
        for (int y = 0; y < h; y++) {
            uint8_t *row = base + ((long)(y + pt) * wp + pl) * c4;
            int ci = 0;
#if HAVE_QUANTIZE_4X4
            for (; ci < cin; ci += 4) {
                const int real = cin - ci < 4 ? cin - ci : 4;  /* a channel tail reads its first plane again */
                const int32_t keep = real == 4 ? -1 : (int32_t)((1u << (8 * real)) - 1);
                const float *src[4];
                for (int j = 0; j < 4; j++) src[j] = PLANE(ci + (j < real ? j : 0)) + (long)y * w;
                int xx = 0;
                for (; xx + 4 <= w; xx += 4) {
                    const float *s4[4] = { src[0] + xx, src[1] + xx, src[2] + xx, src[3] + xx };
                    quantize_4x4(s4, inv_scale, zp, row + (long)xx * c4 + ci, c4, keep);
                }
                for (; xx < w; xx++)
                    for (int j = 0; j < 4; j++)
                        row[(long)xx * c4 + ci + j] = j < real ? quantize_one(src[j][xx], inv_scale, zp) : 0;
            }
#endif
            for (; ci < cin; ci++) {
                const float *src = PLANE(ci) + (long)y * w;
                for (int xx = 0; xx < w; xx++) row[(long)xx * c4 + ci] = quantize_one(src[xx], inv_scale, zp);
            }
        }
#undef PLANE
    }
}

/* y = clamp(float(acc - corr) * scale + bias (+ res), lo, hi), in this order: one definition for every ISA level
 * (the AVX-512 epilogues below do the same operations 16 lanes at a time). */
static inline float q8_value(int32_t acc, int32_t k, float s, float b, const float *res, float lo, float hi) {
    float v = (float)(acc - k) * s;
    v = v + b;
    if (res) v = v + *res;
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

__attribute__((noinline)) static void epilogue(const int32_t *acc, int npx, int nch, int o0, const int32_t *corr,
                                               const float *scale, const float *bias, const float *res,
                                               float lo, float hi, float *y, long so, long sp) {
    for (int c = 0; c < nch; c++) {
        const int o = o0 + c;
        for (int p = 0; p < npx; p++) {
            const long idx = o * so + p * sp;
            y[idx] = q8_value(acc[p * QCH + c], corr[o], scale[o], bias[o], res ? res + idx : NULL, lo, hi);
        }
    }
}

/* The quantised variant (no residual): the code of that value (quantize_one), written at dst[p] + o. */
__attribute__((noinline)) static void epilogue_u8(const int32_t *acc, int npx, int nch, int o0, const int32_t *corr,
                                                  const float *scale, const float *bias, float lo, float hi,
                                                  uint8_t *const *dst, float inv, int zp) {
    for (int c = 0; c < nch; c++)
        for (int p = 0; p < npx; p++)
            dst[p][o0 + c] = quantize_one(q8_value(acc[p * QCH + c], corr[o0 + c], scale[o0 + c], bias[o0 + c], NULL, lo, hi), inv, zp);
}

/* The tile: acc[p][ch] = sum over taps t and k4 groups of <x4(pixel p, t, c4), w4(ch, t, c4)>. */
static void tile_portable(const uint8_t *const *px, int npx, const int *toff, int taps, int c4n,
                          const int8_t *wb, int32_t *acc) {
    for (int p = 0; p < npx; p++)
        for (int ch = 0; ch < QCH; ch++) {
            int32_t s = 0;
            for (int t = 0; t < taps; t++) {
                const uint8_t *a = px[p] + toff[t];
                const int8_t *wt = wb + (long)t * c4n * 64 + ch * 4;
                for (int c4 = 0; c4 < c4n; c4++)
                    for (int j = 0; j < 4; j++) s += (int32_t)a[c4 * 4 + j] * (int32_t)wt[c4 * 64 + j];
            }
            acc[p * QCH + ch] = s;
        }
}


/* The AVX-512 tiles (PIXEL_TILE_BODY): int32 sums of u8 x s8 products, acc[(b * NP + p) * 16 + ch]. The
 * integer sums do not depend on the tile shape. */
#define STORE_I32(p, v) _mm512_storeu_si512((void *)(p), v)
#define VNNI_ATTR "avx512f,avx512bw,avx512vl,avx512vnni"
#define BW_ATTR "avx512f,avx512bw,avx512vl"
#define STEP_VNNI(acc, x, w) _mm512_dpbusd_epi32(acc, x, w)
/* Without VNNI: vpmaddubsw + vpmaddwd by ones, exact for 7-bit activations (as tile_avx2). */
#define STEP_BW(acc, x, w) _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(x, w), _mm512_set1_epi16(1)))
PIXEL_TILE_BODY(body_vnni, VNNI_ATTR, __m512i, _mm512_setzero_si512, STEP_VNNI, int32_t, STORE_I32)
PIXEL_TILE_BODY(body_bw, BW_ATTR, __m512i, _mm512_setzero_si512, STEP_BW, int32_t, STORE_I32)

typedef void (*tile512_fn)(const uint8_t *const *, const int *, int, int, const uint8_t *, long, int32_t *);
#define TILE512(NB, NP) PIXEL_TILE_FN(tile_vnni_##NB##x##NP, VNNI_ATTR, body_vnni, NB, NP, int32_t) \
                        PIXEL_TILE_FN(tile_bw_##NB##x##NP, BW_ATTR, body_bw, NB, NP, int32_t)
TILE512(1, 6) TILE512(2, 6) TILE512(3, 6) TILE512(4, 6)
TILE512(1, 8) TILE512(2, 8) TILE512(3, 8)
TILE512(1, 12) TILE512(2, 12)
TILE512(1, 16)

/* Tile shapes: pixels per tile, and the tiles of 1 .. max blocks at that width. */
typedef struct { int np, max_blocks; tile512_fn vnni[4], bw[4]; } shape512;
static const shape512 shapes512[] = {
    { 6, 4, { tile_vnni_1x6, tile_vnni_2x6, tile_vnni_3x6, tile_vnni_4x6 }, { tile_bw_1x6, tile_bw_2x6, tile_bw_3x6, tile_bw_4x6 } },
    { 8, 3, { tile_vnni_1x8, tile_vnni_2x8, tile_vnni_3x8 }, { tile_bw_1x8, tile_bw_2x8, tile_bw_3x8 } },
    { 12, 2, { tile_vnni_1x12, tile_vnni_2x12 }, { tile_bw_1x12, tile_bw_2x12 } },
    { 16, 1, { tile_vnni_1x16 }, { tile_bw_1x16 } },
};

/* `epilogue_u8` 16 channels at a time (the same operations in the same order: bit-identical). */
AVX512 static void epilogue512_u8(const int32_t *acc, int npx, int nch, int o0, const int32_t *corr,
                                  const float *scale, const float *bias, float lo, float hi,
                                  uint8_t *const *dst, float inv, int zp) {
    const __mmask16 cm = nch >= 16 ? 0xffff : (__mmask16)((1u << nch) - 1);
    const __m512i k = _mm512_maskz_loadu_epi32(cm, corr + o0);
    const __m512 s = _mm512_maskz_loadu_ps(cm, scale + o0), b = _mm512_maskz_loadu_ps(cm, bias + o0);
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), vinv = _mm512_set1_ps(inv);
    const __m512 qhi = _mm512_set1_ps(QLIM), qlo = _mm512_set1_ps(-QLIM);
    const __m512i vzp = _mm512_set1_epi32(zp), zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(TESSERA_Q8_MAX);
    for (int p = 0; p < npx; p++) {
        __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512((const void *)(acc + p * QCH)), k));
        v = _mm512_mul_ps(v, s);
        v = _mm512_add_ps(v, b);
        v = _mm512_max_ps(vlo, v);
        v = _mm512_min_ps(vhi, v);
        __m512 t = _mm512_mul_ps(v, vinv);
        t = _mm512_max_ps(_mm512_min_ps(t, qhi), qlo); /* quantize_one's min then max */
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(t), vzp);
        q = _mm512_min_epi32(_mm512_max_epi32(q, zero), top);
        _mm_mask_storeu_epi8(dst[p] + o0, cm, _mm512_cvtepi32_epi8(q));
    }
}

/* n 4-byte pixels from s to d (inline: the stem copies short rows many times; 16-byte copies, the last one
 * overlapping the previous one). */
static inline void copy_row4(uint8_t *d, const uint8_t *s, int n) {
    const int bytes = n * 4;
    if (bytes < 16) {
        for (int i = 0; i < n; i++) memcpy(d + i * 4, s + i * 4, 4);
        return;
    }
    int i = 0;
    for (; i + 16 <= bytes; i += 16) _mm_storeu_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
    if (i < bytes) _mm_storeu_si128((__m128i *)(d + bytes - 16), _mm_loadu_si128((const __m128i *)(s + bytes - 16)));
}

/* The fp32 epilogue of one 16-channel block held as acc[p * 16 + ch] (p < np rows): the same
 * operations as `epilogue`, in the same order, 16 lanes at a time, then a 16 x 16 transpose so
 * that each channel's pixels are stored (and the residual read) contiguously. Bit-identical to
 * `epilogue`. Writes y[(o0 + c) * so + p] for c < nch, p < npx. */
AVX512 static void epilogue512(const int32_t *acc, int np, int npx, int nch, int o0, const int32_t *corr,
                               const float *scale, const float *bias, const float *res, float lo, float hi,
                               float *y, long so, uint8_t *const *dst, float inv, int zp) {
    const __mmask16 cm = nch >= 16 ? 0xffff : (__mmask16)((1u << nch) - 1);
    const __m512i k = _mm512_maskz_loadu_epi32(cm, corr + o0);
    const __m512 s = _mm512_maskz_loadu_ps(cm, scale + o0), b = _mm512_maskz_loadu_ps(cm, bias + o0);
    __m512 r[16];
    for (int p = 0; p < 16; p++) {
        if (p < np) {
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512((const void *)(acc + p * QCH)), k));
            v = _mm512_mul_ps(v, s);
            r[p] = _mm512_add_ps(v, b);
        } else {
            r[p] = _mm512_setzero_ps();
        }
    }
    store_channel_rows(r, npx, nch, o0, res, lo, hi, y, so);
    if (!dst) return;
    /* the codes of the values just stored (quantize_one's operations), transposed back to pixel rows */
    const __m512 vinv = _mm512_set1_ps(inv), qhi = _mm512_set1_ps(QLIM), qlo = _mm512_set1_ps(-QLIM);
    const __m512i vzp = _mm512_set1_epi32(zp), zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(TESSERA_Q8_MAX);
    for (int c = 0; c < 16; c++) {
        __m512 t = _mm512_mul_ps(r[c], vinv);
        t = _mm512_max_ps(_mm512_min_ps(t, qhi), qlo);
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(t), vzp);
        q = _mm512_min_epi32(_mm512_max_epi32(q, zero), top);
        r[c] = _mm512_castsi512_ps(q);
    }
    transpose16_ps(r);
    for (int p = 0; p < npx; p++) _mm_mask_storeu_epi8(dst[p] + o0, cm, _mm512_cvtepi32_epi8(_mm512_castps_si512(r[p])));
}

/* The codes of fp32 outputs already written (dual targets off the AVX-512 path): quantize_one of each. */
static void codes_of(const float *y, long so, int npx, int nch, int o0, uint8_t *const *dst, float inv, int zp) {
    for (int c = 0; c < nch; c++)
        for (int p = 0; p < npx; p++) dst[p][o0 + c] = quantize_one(y[(long)(o0 + c) * so + p], inv, zp);
}

#define QPX2 4 /* pixels per AVX2 pass (16 channels = two 8-lane vectors each; 8 accumulators of 16 ymm) */
#define TILE256(NAME, ATTR, ...) \
__attribute__((target(ATTR))) static void NAME(const uint8_t *const *px, int npx, const int *toff, int taps, \
                                               int c4n, const int8_t *wb, int32_t *acc) { \
    for (int p0 = 0; p0 < npx; p0 += QPX2) { \
        __m256i a[QPX2][2]; \
        for (int p = 0; p < QPX2; p++) a[p][0] = a[p][1] = _mm256_setzero_si256(); \
        for (int t = 0; t < taps; t++) { \
            const uint8_t *q[QPX2]; \
            for (int p = 0; p < QPX2; p++) q[p] = px[p0 + p < npx ? p0 + p : 0] + toff[t]; \
            const int8_t *wt = wb + (long)t * c4n * 64; \
            for (int c4 = 0; c4 < c4n; c4++) { \
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(wt + c4 * 64)); \
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wt + c4 * 64 + 32)); \
                __VA_ARGS__ \
            } \
        } \
        for (int p = 0; p < QPX2 && p0 + p < npx; p++) { \
            _mm256_storeu_si256((__m256i *)(acc + (p0 + p) * QCH), a[p][0]); \
            _mm256_storeu_si256((__m256i *)(acc + (p0 + p) * QCH + 8), a[p][1]); \
        } \
    } \
}

TILE256(tile_avx2vnni, "avx2,fma,avxvnni",
    for (int p = 0; p < QPX2; p++) {
        const __m256i xv = _mm256_set1_epi32(tile_load4(q[p] + c4 * 4));
        a[p][0] = _mm256_dpbusd_avx_epi32(a[p][0], xv, w0);
        a[p][1] = _mm256_dpbusd_avx_epi32(a[p][1], xv, w1);
    })

/* Without VNNI: vpmaddubsw (u8 x s8 pairs to int16) then vpmaddwd by ones (pairs to int32).
   Exact because activations are 7-bit (pair sums <= 2 * 127 * 127 < 32768: no saturation). */
TILE256(tile_avx2, "avx2,fma",
    const __m256i ones = _mm256_set1_epi16(1);
    for (int p = 0; p < QPX2; p++) {
        const __m256i xv = _mm256_set1_epi32(tile_load4(q[p] + c4 * 4));
        a[p][0] = _mm256_add_epi32(a[p][0], _mm256_madd_epi16(_mm256_maddubs_epi16(xv, w0), ones));
        a[p][1] = _mm256_add_epi32(a[p][1], _mm256_madd_epi16(_mm256_maddubs_epi16(xv, w1), ones));
    })

typedef void (*tile_fn)(const uint8_t *const *, int, const int *, int, int, const int8_t *, int32_t *);

static tile_fn pick_tile(int isa) {
    switch (isa) {
    case TESSERA_ISA_AVX2_VNNI: return tile_avx2vnni;
    case TESSERA_ISA_AVX2: return tile_avx2;
    default: return tile_portable;
    }
}

void tessera_engine_q8_conv(int isa, const uint8_t *xq, int hp, int wp, int cin, int kh, int kw, int sh, int sw,
                            int dh, int dw, int oh, int ow, int cout, const int8_t *packed, const int32_t *corr,
                            const float *scale, const float *bias, const float *residual, float lo, float hi,
                            long total, long n0, long n1, int m0, int m1, float *y, long so, long sp,
                            const tessera_q8_target *target) {
    if (m1 > cout) m1 = cout;
    const int c4n = (cin + 3) / 4, c4 = c4n * 4, taps = kh * kw;
    const tile_fn tile = pick_tile(isa);
    int toff[256];
    int *offs = taps <= 256 ? toff : malloc(sizeof(int) * taps);
    if (!offs) abort();
    for (int ky = 0; ky < kh; ky++)
        for (int kx = 0; kx < kw; kx++) offs[ky * kw + kx] = ((ky * dh) * wp + kx * dw) * c4;
    const long ohw = (long)oh * ow, blkBytes = (long)taps * c4n * 64;
    (void)total;
    if (isa_avx512(isa)) {
        /* a tile whose block count divides the channel blocks of [m0, m1) (the last group may be narrower) */
        const int m0r = m0 / QCH * QCH, nblk = (m1 - m0r + QCH - 1) / QCH;
        /* Writing codes (a chained layer): the widest tile, 4 x 6 where the blocks allow. Writing fp32, the
         * epilogue transposes 16 pixel rows per block: tiles of 12 or 16 pixels fill them (measured faster on
         * ResNet-18 and the compact CNN at 224 px than 4 x 6 there), 16 for the stem (cin <= 4). */
        const int shape = target && !target->dual ? (nblk % 4 == 0 ? 0 : nblk % 3 == 0 ? 1 : nblk % 2 == 0 ? 2 : 3)
                                 : (nblk % 2 == 0 && c4n > 1 ? 2 : 3);
        const shape512 *sh5 = &shapes512[shape];
        const int np = sh5->np, vnni = isa >= TESSERA_ISA_AVX512_VNNI;
        int32_t acc[4 * 16 * QCH];
        const uint8_t *px[16];
        uint8_t *dst[16];
        /* A layer of at most 4 input channels (the RGB stem) has one k4 group per tap: with 16 taps or more (7x7: 5.8
         * -> 3.3 ms for 4 ResNet-18 stems; 3x3 stems measured slower this way) its pixels' taps are
         * gathered into one patch each, run as a single tap of `taps` k4 groups (the packed weights of
         * c4n == 1 are already in that order), so the inner loop is not one step long. */
        const int patched = c4n == 1 && taps >= 16 && taps <= 64;
        uint8_t patch[16][256] __attribute__((aligned(64)));
        const uint8_t *pp[16];
        const int zero_off = 0;
        for (int p = 0; p < 16; p++) pp[p] = patch[p];
        for (long n = n0; n < n1; n += np) {
            const int npx = n1 - n < np ? (int)(n1 - n) : np;
            tile_pixels(n, npx, np, ohw, oh, ow, xq, hp, wp, sh, sw, c4, px);
            if (target) /* the target's pixel (image, oy, ox): its padded map read with stride 1 at (pt, pl) */
                tile_pixels(n, npx, np, ohw, oh, ow, target->xq + ((long)target->pt * target->wp + target->pl) * target->c4,
                            target->hp, target->wp, 1, 1, target->c4, (const uint8_t **)dst);
            if (patched)
                for (int p = 0; p < np; p++) {
                    if (dw == 1)
                        for (int ky = 0; ky < kh; ky++) copy_row4(patch[p] + ky * kw * 4, px[p] + offs[ky * kw], kw);
                    else
                        for (int t = 0; t < taps; t++) memcpy(patch[p] + t * 4, px[p] + offs[t], 4);
                }
            for (int o0 = m0r; o0 < m1; o0 += sh5->max_blocks * QCH) {
                int nb = (m1 - o0 + QCH - 1) / QCH;
                if (nb > sh5->max_blocks) nb = sh5->max_blocks;
                const uint8_t *wb = (const uint8_t *)packed + (long)(o0 / QCH) * blkBytes;
                if (patched)
                    (vnni ? sh5->vnni : sh5->bw)[nb - 1](pp, &zero_off, 1, taps, wb, blkBytes, acc);
                else
                    (vnni ? sh5->vnni : sh5->bw)[nb - 1](px, offs, taps, c4n, wb, blkBytes, acc);
                for (int b = 0; b < nb; b++) {
                    const int ob = o0 + b * QCH, lo0 = ob < m0 ? m0 : ob;
                    const int nch = (m1 - lo0 < QCH - (lo0 - ob)) ? m1 - lo0 : QCH - (lo0 - ob);
                    const int32_t *ab = acc + b * np * QCH + (lo0 - ob);
                    const int dual = target && target->dual;
                    if (target && !dual && lo0 == ob)
                        epilogue512_u8(ab, npx, nch, lo0, corr, scale, bias, lo, hi, dst, target->inv, target->zp);
                    else if (target && !dual)
                        epilogue_u8(ab, npx, nch, lo0, corr, scale, bias, lo, hi, dst, target->inv, target->zp);
                    else if (sp == 1 && lo0 == ob)
                        epilogue512(ab, np, npx, nch, lo0, corr, scale, bias, residual ? residual + n : NULL, lo, hi, y + n, so,
                                    dual ? dst : NULL, dual ? target->inv : 0, dual ? target->zp : 0);
                    else {
                        epilogue(ab, npx, nch, lo0, corr, scale, bias, residual ? residual + n * sp : NULL, lo, hi, y + n * sp, so, sp);
                        if (dual) codes_of(y + n, so, npx, nch, lo0, dst, target->inv, target->zp);
                    }
                }
            }
        }
        if (offs != toff) free(offs);
        return;
    }
    int32_t acc[QPX * QCH];
    const uint8_t *px[QPX];
    uint8_t *dst[QPX];
    for (long n = n0; n < n1; n += QPX) {
        const int npx = n1 - n < QPX ? (int)(n1 - n) : QPX;
        for (int p = 0; p < npx; p++) {
            const long q = n + p, b = q / ohw, r = q - b * ohw, oy = r / ow, ox = r - oy * ow;
            px[p] = xq + ((b * hp + oy * sh) * wp + ox * sw) * c4;
            if (target) dst[p] = target->xq + ((b * target->hp + target->pt + oy) * target->wp + target->pl + ox) * target->c4;
        }
        for (int o0 = m0 / QCH * QCH; o0 < m1; o0 += QCH) {
            tile(px, npx, offs, taps, c4n, packed + (long)(o0 / QCH) * blkBytes, acc);
            const int lo0 = o0 < m0 ? m0 : o0;
            const int nch = (m1 - lo0 < QCH - (lo0 - o0)) ? m1 - lo0 : QCH - (lo0 - o0);
            /* the tile's channel c is output o0 + c; shift the accumulator view for a partial block */
            if (target && !target->dual) {
                epilogue_u8(acc + (lo0 - o0), npx, nch, lo0, corr, scale, bias, lo, hi, dst, target->inv, target->zp);
            } else {
                epilogue(acc + (lo0 - o0), npx, nch, lo0, corr, scale, bias, residual ? residual + n * sp : NULL,
                         lo, hi, y + n * sp, so, sp);
                if (target) codes_of(y + n, so, npx, nch, lo0, dst, target->inv, target->zp);
            }
        }
    }
    if (offs != toff) free(offs);
}
