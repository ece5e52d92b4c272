#pragma once
/* Helpers shared by the kernel families of this target (not part of the module's interface). */
#include "tessera_cpu.h"
#include "tessera_engine_kernels.h"
#include <stddef.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))

/* The fp32 kernels have an AVX-512 build, and their plain C loops are compiled twice: for AVX2 +
   FMA (avx2 and avx2-vnni) and portable. */
static inline int isa_avx512(int isa) { return isa >= TESSERA_ISA_AVX512; }
static inline int isa_avx2(int isa) { return isa >= TESSERA_ISA_AVX2; }
#define AVX2 __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* A 64-byte aligned per-thread buffer of at least n floats (slot `which` < 3), or NULL; freed
   when the thread exits. */
float *tessera_scratch(int which, size_t n);
#define scratch tessera_scratch

/* d[j] = s[2 j] for j < n (reads s[0 .. 2n - 2] only) */
AVX512 void tessera_copy_stride2_avx512(float *d, const float *s, int n);

/* One column phase of a zero-padded input row, as the direct conv and the row-wise depthwise
   read them: d[j] = row[j * sw + px - pl] where that column lies in [0, w), else 0, for j < wq.
   The column range is worked out once per phase (`phase_columns`), the rows filled per row. */
typedef struct { int ca, c1, shift, sw, wq; } phase_cols;

static inline phase_cols phase_columns(int w, int pl, int px, int sw, int wq) {
    const int c0 = pl - px > 0 ? (pl - px + sw - 1) / sw : 0;
    int c1 = (w - 1 + pl - px) >= 0 ? (w - 1 + pl - px) / sw + 1 : 0;
    if (c1 > wq) c1 = wq;
    return (phase_cols){ .ca = c0 < c1 ? c0 : c1, .c1 = c1, .shift = px - pl, .sw = sw, .wq = wq };
}

/* Fills d from `row` (NULL: a padding row, all zero). */
static inline void fill_phase_row(float *d, const float *row, phase_cols pc, int avx) {
    if (!row) { memset(d, 0, sizeof(float) * pc.wq); return; }
    const int ca = pc.ca, c1 = pc.c1, sw = pc.sw;
    const float *s = row + pc.shift;
    for (int j = 0; j < ca; j++) d[j] = 0;
    if (sw == 1) memcpy(d + ca, s + ca, sizeof(float) * (c1 - ca));
    else if (sw == 2 && avx) tessera_copy_stride2_avx512(d + ca, s + 2 * ca, c1 - ca);
    else for (int j = ca; j < c1; j++) d[j] = s[(long)j * sw];
    for (int j = c1 > ca ? c1 : ca; j < pc.wq; j++) d[j] = 0;
}

#if defined(__x86_64__)
#include <immintrin.h>
/* 16 x 16 transpose of floats in registers: r[i][j] -> r[j][i] (unpack pairs, then 64-bit pairs, then
   128-bit lanes twice). */
ALWAYS_INLINE AVX512 void transpose16_ps(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
        t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
        r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
    }
}

/* r[p] = the 16 channels o0.. of pixel p (p < 16): transposed, then per channel c < nch the npx pixels
   v = min(hi, max(lo, v (+ res))) stored at y + (o0 + c) * so (the residual read there too); r[c] keeps
   the stored values. The clamp's operand order matches `v < lo ? lo : v`, `v > hi ? hi : v` (NaN stays). */
ALWAYS_INLINE AVX512 void store_channel_rows(__m512 r[16], int npx, int nch, int o0, const float *res, float lo,
                                             float hi, float *y, long so) {
    transpose16_ps(r);
    const __mmask16 pm = npx >= 16 ? 0xffff : (__mmask16)((1u << npx) - 1);
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    for (int c = 0; c < nch; c++) {
        __m512 v = r[c];
        const long at = (long)(o0 + c) * so;
        if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(pm, res + at));
        v = _mm512_min_ps(vhi, _mm512_max_ps(vlo, v));
        _mm512_mask_storeu_ps(y + at, pm, v);
        r[c] = v;
    }
}

/* The register tile of the INT8 and BF16 layers over a padded pixel-major copy: NB blocks of 16 output
   channels x NP output pixels (NB * NP <= 24 zmm accumulators of type VEC, zeroed by ZERO), for every
   tap and every 4-byte group of a pixel's channels (4 int8 codes or 2 bf16 values) one 32-bit broadcast
   per pixel feeding NB products `STEP(acc, broadcast, weights)`; weights packed in 64-byte groups, one
   block of 16 channels every blk_bytes. px / toff in bytes; STORE writes the 16 lanes at acc + (b * NP + p) * 16. */
static inline int32_t tile_load4(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }
#define PIXEL_TILE_BODY(BODY, ATTR, VEC, ZERO, STEP, ACC_T, STORE) \
ALWAYS_INLINE __attribute__((target(ATTR))) void BODY(const int NB, const int NP, const uint8_t *const *px, \
        const int *toff, int taps, int groups, const uint8_t *wb, long blk_bytes, ACC_T *acc) { \
    VEC a[4][16]; \
    for (int b = 0; b < NB; b++) for (int p = 0; p < NP; p++) a[b][p] = ZERO(); \
    for (int t = 0; t < taps; t++) { \
        const uint8_t *q[16]; \
        for (int p = 0; p < NP; p++) q[p] = px[p] + toff[t]; \
        const uint8_t *wt = wb + (long)t * groups * 64; \
        for (int g = 0; g < groups; g++) { \
            __m512i wv[4]; \
            for (int b = 0; b < NB; b++) wv[b] = _mm512_loadu_si512((const void *)(wt + b * blk_bytes + g * 64)); \
            for (int p = 0; p < NP; p++) { \
                const __m512i xv = _mm512_set1_epi32(tile_load4(q[p] + g * 4)); \
                for (int b = 0; b < NB; b++) a[b][p] = STEP(a[b][p], xv, wv[b]); \
            } \
        } \
    } \
    for (int b = 0; b < NB; b++) \
        for (int p = 0; p < NP; p++) STORE(acc + (b * NP + p) * 16, a[b][p]); \
}

/* One tile shape of a PIXEL_TILE_BODY as a function (NB and NP fixed, so the accumulators stay in registers). */
#define PIXEL_TILE_FN(NAME, ATTR, BODY, NB, NP, ACC_T) \
__attribute__((target(ATTR))) static void NAME(const uint8_t *const *px, const int *toff, int taps, int groups, \
        const uint8_t *wb, long bb, ACC_T *acc) { BODY(NB, NP, px, toff, taps, groups, wb, bb, acc); }

/* The (image, row, column) of flattened output pixel n, then the input address of it and of the next
   npx - 1 pixels (base + ((b * hp + oy * sh) * wp + ox * sw) * bytes_per_pixel), stepped along without
   divisions; pixels npx .. np - 1 repeat pixel n. */
static inline void tile_pixels(long n, int npx, int np, long ohw, int oh, int ow, const uint8_t *base, int hp, int wp,
                               int sh, int sw, long bpp, const uint8_t **px) {
    long b = n / ohw, oy = (n - b * ohw) / ow, ox = n - b * ohw - oy * ow;
    for (int p = 0; p < npx; p++) {
        px[p] = base + ((b * hp + oy * sh) * wp + ox * sw) * bpp;
        if (++ox == ow) { ox = 0; if (++oy == oh) { oy = 0; b++; } }
    }
    for (int p = npx; p < np; p++) px[p] = px[0];
}
#endif
