/*
 * BF16 convolution and dense layers (see tessera_engine_kernels.h). The layer's input is rounded to
 * bfloat16 (round to nearest even) into a padded pixel-major copy ([image][row][col][cin rounded to 2],
 * padding 0), weights likewise, packed in blocks of 16 output channels: packed[((blk * taps + t) * c2n
 * + c2) * 32 + ch * 2 + j] holds weight (blk * 16 + ch, input channel 2 * c2 + j, tap t). A pair of
 * bf16 values is 4 bytes, as a group of 4 int8 codes is, so the tiles have the INT8 tiles' shape: NB
 * blocks of 16 channels x NP pixels, one 32-bit broadcast per pixel, `vdpbf16ps` (two products
 * accumulated in fp32 per lane) on avx512-bf16; the AVX-512 level without BF16 splits each pair into two
 * fp32 FMAs, other levels run plain C. Accumulation is fp32 throughout.
 */
#include "engine_internal.h"
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define BCH 16

static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float tessera_engine_bf16_round(float v) { return from_bf16(to_bf16(v)); }

long tessera_engine_bf16_packed_count(int cout, int taps, int cin) {
    return (long)((cout + BCH - 1) / BCH) * taps * ((cin + 1) / 2) * 32;
}

void tessera_engine_bf16_pack(const float *w, int cout, int cin, int taps, uint16_t *packed) {
    const int c2n = (cin + 1) / 2;
    memset(packed, 0, sizeof(uint16_t) * (size_t)tessera_engine_bf16_packed_count(cout, taps, cin));
    for (int o = 0; o < cout; o++)
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < taps; t++) {
                const int blk = o / BCH, ch = o % BCH, c2 = ci / 2, j = ci % 2;
                packed[(((long)blk * taps + t) * c2n + c2) * 32 + ch * 2 + j] = to_bf16(w[((long)o * cin + ci) * taps + t]);
            }
}

/* 16 channels x 16 pixels of planes s[c] (c < nc; others 0) -> each pixel's nc2 bf16 values at d + p * stride
 * (p < np), via the fp32 transpose and vcvtneps2bf16. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2")))
static void convert_16x16(const float *const *s, int nc, int np, uint16_t *d, long stride, int nc2) {
    __m512 r[16];
    const __mmask16 pm = np >= 16 ? 0xffff : (__mmask16)((1u << np) - 1);
    for (int c = 0; c < 16; c++) r[c] = c < nc ? _mm512_maskz_loadu_ps(pm, s[c]) : _mm512_setzero_ps();
    transpose16_ps(r);
    const __mmask16 cm = nc2 >= 16 ? 0xffff : (__mmask16)((1u << nc2) - 1);
    for (int p = 0; p < np; p++) {
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(r[p]);
        _mm256_mask_storeu_epi16(d + p * stride, cm, h);
    }
}

void tessera_engine_bf16_convert(int isa, const float *x, int channel_major, int nb, int cin, int h, int w,
                                 int pt, int pl, int hp, int wp, long i0, long i1, uint16_t *xb) {
    const int c2 = (cin + 1) / 2 * 2;
    const long hw = (long)h * w;
    for (long img = i0; img < i1; img++) {
        uint16_t *base = xb + img * hp * wp * c2;
        /* padding ring 0 */
        for (int y = 0; y < hp; y++) {
            uint16_t *row = base + (long)y * wp * c2;
            if (y < pt || y >= pt + h) {
                memset(row, 0, sizeof(uint16_t) * (size_t)wp * c2);
            } else {
                memset(row, 0, sizeof(uint16_t) * (size_t)pl * c2);
                memset(row + (long)(pl + w) * c2, 0, sizeof(uint16_t) * (size_t)(wp - pl - w) * c2);
            }
        }
#define PLANE(ci) (channel_major ? x + ((long)(ci) * nb + img) * hw : x + (img * cin + (ci)) * hw)
        for (int y = 0; y < h; y++) {
            uint16_t *row = base + ((long)(y + pt) * wp + pl) * c2;
            if (isa >= TESSERA_ISA_AVX512_BF16) {
                for (int c0 = 0; c0 < cin; c0 += 16) {
                    const int nc = cin - c0 < 16 ? cin - c0 : 16;
                    const int nc2 = c2 - c0 < 16 ? c2 - c0 : 16; /* the odd channel's partner is written 0 */
                    for (int x0 = 0; x0 < w; x0 += 16) {
                        const float *s[16];
                        for (int c = 0; c < nc; c++) s[c] = PLANE(c0 + c) + (long)y * w + x0;
                        convert_16x16(s, nc, w - x0 < 16 ? w - x0 : 16, row + (long)x0 * c2 + c0, c2, nc2);
                    }
                }
            } else {
                for (int ci = 0; ci < cin; ci++) {
                    const float *src = PLANE(ci) + (long)y * w;
                    for (int xx = 0; xx < w; xx++) row[(long)xx * c2 + ci] = to_bf16(src[xx]);
                }
                if (c2 != cin)
                    for (int xx = 0; xx < w; xx++) row[(long)xx * c2 + cin] = 0;
            }
        }
#undef PLANE
    }
}

#define BF_ATTR "avx512f,avx512bw,avx512vl,avx512bf16"
#define F_ATTR "avx512f,avx512bw,avx512vl,fma"
#define STORE_F32(p, v) _mm512_storeu_ps(p, v)

#define STEP_BF(acc, x, w) _mm512_dpbf16_ps(acc, (__m512bh)(x), (__m512bh)(w))
/* Without AVX512-BF16: a bf16 is the top half of an fp32, so each pair is two fp32 FMAs. */
#define STEP_F(acc, x, w) _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xffff0000u))), \
    _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xffff0000u))), \
    _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(x, 16)), _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)), acc))
/* The tiles (PIXEL_TILE_BODY) with fp32 accumulators: a 4-byte group is a pair of bf16 values. */
PIXEL_TILE_BODY(body_bf, BF_ATTR, __m512, _mm512_setzero_ps, STEP_BF, float, STORE_F32)
PIXEL_TILE_BODY(body_f, F_ATTR, __m512, _mm512_setzero_ps, STEP_F, float, STORE_F32)

typedef void (*bf_tile_fn)(const uint8_t *const *, const int *, int, int, const uint8_t *, long, float *);
#define BF_TILE(NB, NP) PIXEL_TILE_FN(tile_bf_##NB##x##NP, BF_ATTR, body_bf, NB, NP, float) \
                        PIXEL_TILE_FN(tile_f_##NB##x##NP, F_ATTR, body_f, NB, NP, float)
BF_TILE(1, 12) BF_TILE(2, 12)
BF_TILE(1, 16)

typedef struct { int np, max_blocks; bf_tile_fn bf[2], f[2]; } bf_shape;
static const bf_shape bf_shapes[] = {
    { 12, 2, { tile_bf_1x12, tile_bf_2x12 }, { tile_f_1x12, tile_f_2x12 } },
    { 16, 1, { tile_bf_1x16 }, { tile_f_1x16 } },
};

/* y = clamp(acc + bias (+ res), lo, hi) for one block (acc[p * 16 + c], c < nch, p < npx). */
static void epilogue(const float *acc, int npx, int nch, int o0, const float *bias, const float *res,
                     float lo, float hi, float *y, long so, long sp) {
    for (int c = 0; c < nch; c++) {
        const int o = o0 + c;
        for (int p = 0; p < npx; p++) {
            const long idx = o * so + p * sp;
            float v = acc[p * BCH + c] + bias[o];
            if (res) v += res[idx];
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
            y[idx] = v;
        }
    }
}

/* The same for a channel-major output (sp == 1), 16 lanes at a time through the transpose. */
AVX512 static void epilogue512(const float *acc, int np, int npx, int nch, int o0, const float *bias,
                               const float *res, float lo, float hi, float *y, long so) {
    const __mmask16 cm = nch >= 16 ? 0xffff : (__mmask16)((1u << nch) - 1);
    const __m512 b = _mm512_maskz_loadu_ps(cm, bias + o0);
    __m512 r[16];
    for (int p = 0; p < 16; p++) r[p] = p < np ? _mm512_add_ps(_mm512_loadu_ps(acc + p * BCH), b) : _mm512_setzero_ps();
    store_channel_rows(r, npx, nch, o0, res, lo, hi, y, so);
}

void tessera_engine_bf16_conv(int isa, const uint16_t *xb, int hp, int wp, int cin, int kh, int kw, int sh, int sw,
                              int dh, int dw, int oh, int ow, int cout, const uint16_t *packed, const float *bias,
                              const float *residual, float lo, float hi, long n0, long n1, int m0, int m1,
                              float *y, long so, long sp) {
    if (m1 > cout) m1 = cout;
    const int c2n = (cin + 1) / 2, c2 = c2n * 2, taps = kh * kw;
    int toff[256];
    int *offs = taps <= 256 ? toff : malloc(sizeof(int) * taps);
    if (!offs) abort();
    for (int ky = 0; ky < kh; ky++)
        for (int kx = 0; kx < kw; kx++) offs[ky * kw + kx] = ((ky * dh) * wp + kx * dw) * c2;
    const long ohw = (long)oh * ow, blk = (long)taps * c2n * 32;
    const int m0r = m0 / BCH * BCH;
    if (isa_avx512(isa)) {
        const int nblk = (m1 - m0r + BCH - 1) / BCH;
        const bf_shape *shp = &bf_shapes[nblk % 2 == 0 ? 0 : 1];
        const int np = shp->np, bf = isa >= TESSERA_ISA_AVX512_BF16;
        float acc[2 * 16 * BCH] __attribute__((aligned(64)));
        const uint8_t *px[16];
        int boffs[256]; /* the tap offsets in bytes */
        int *bo = taps <= 256 ? boffs : malloc(sizeof(int) * taps);
        if (!bo) abort();
        for (int t = 0; t < taps; t++) bo[t] = offs[t] * 2;
        for (long n = n0; n < n1; n += np) {
            const int npx = n1 - n < np ? (int)(n1 - n) : np;
            tile_pixels(n, npx, np, ohw, oh, ow, (const uint8_t *)xb, hp, wp, sh, sw, 2L * c2, px);
            for (int o0 = m0r; o0 < m1; o0 += shp->max_blocks * BCH) {
                int nb = (m1 - o0 + BCH - 1) / BCH;
                if (nb > shp->max_blocks) nb = shp->max_blocks;
                (bf ? shp->bf : shp->f)[nb - 1](px, bo, taps, c2n, (const uint8_t *)(packed + (long)(o0 / BCH) * blk), blk * 2, acc);
                for (int b = 0; b < nb; b++) {
                    const int ob = o0 + b * BCH, lo0 = ob < m0 ? m0 : ob;
                    const int nch = (m1 - lo0 < BCH - (lo0 - ob)) ? m1 - lo0 : BCH - (lo0 - ob);
                    const float *ab = acc + b * np * BCH + (lo0 - ob);
                    if (sp == 1 && lo0 == ob)
                        epilogue512(ab, np, npx, nch, lo0, bias, residual ? residual + n : NULL, lo, hi, y + n, so);
                    else
                        epilogue(ab, npx, nch, lo0, bias, residual ? residual + n * sp : NULL, lo, hi, y + n * sp, so, sp);
                }
            }
        }
        if (bo != boffs) free(bo);
    } else {
        float acc[BCH];
        for (long n = n0; n < n1; n++) {
            const long b = n / ohw, r = n - b * ohw, oy = r / ow, ox = r - oy * ow;
            const uint16_t *pix = xb + ((b * hp + oy * sh) * wp + ox * sw) * c2;
            for (int o0 = m0r; o0 < m1; o0 += BCH) {
                const uint16_t *wb = packed + (long)(o0 / BCH) * blk;
                for (int ch = 0; ch < BCH; ch++) {
                    float s = 0;
                    for (int t = 0; t < taps; t++)
                        for (int k = 0; k < c2; k++)
                            s += from_bf16(pix[offs[t] + k]) * from_bf16(wb[((long)t * c2n + k / 2) * 32 + ch * 2 + k % 2]);
                    acc[ch] = s;
                }
                const int lo0 = o0 < m0 ? m0 : o0;
                const int nch = (m1 - lo0 < BCH - (lo0 - o0)) ? m1 - lo0 : BCH - (lo0 - o0);
                epilogue(acc + (lo0 - o0), 1, nch, lo0, bias, residual ? residual + n * sp : NULL, lo, hi, y + n * sp, so, sp);
            }
        }
    }
    if (offs != toff) free(offs);
}
