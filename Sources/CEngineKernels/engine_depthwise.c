/*
 * Depthwise convolution (see tessera_engine_kernels.h): 8 (channel, image) planes per vector on
 * every map size (transposed 8 x 8 in registers, AVX2), at every level from AVX2 up; on AVX-512
 * the stride-1 3x3 layers of maps 56+ wide run along the rows of each plane from column-phase
 * copies instead; bias + residual + clamp fused.
 */
#include "engine_internal.h"
#include <immintrin.h>
#include <stdlib.h>

/* ---------- depthwise ---------- */

ALWAYS_INLINE void dw_body(const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                           int pt, int pl, int oh, int ow, const float *wt, const float *bias,
                           const float *residual, float lo, float hi, long p0, long p1, float *y) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    for (long p = p0; p < p1; p++) {
        const long c = p / nb;
        const float *wk = wt + c * kh * kw;
        const float *plane = x + p * hw;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                float acc = bias[c];
                for (int ky = 0; ky < kh; ky++) {
                    const int iy = oy * sh - pt + ky * dh;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < kw; kx++) {
                        const int ix = ox * sw - pl + kx * dw;
                        if (ix < 0 || ix >= w) continue;
                        acc += wk[ky * kw + kx] * plane[(long)iy * w + ix];
                    }
                }
                const long o = p * ohw + (long)oy * ow + ox;
                if (residual) acc += residual[o];
                acc = acc < lo ? lo : acc;
                acc = acc > hi ? hi : acc;
                y[o] = acc;
            }
        }
    }
}

#define DW_ARGS const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, \
                int oh, int ow, const float *wt, const float *bias, const float *residual, float lo, float hi, \
                long p0, long p1, float *y
static void dw_portable(DW_ARGS) { dw_body(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, wt, bias, residual, lo, hi, p0, p1, y); }


/* Depthwise along the rows of each plane (maps at least 16 wide): the plane's rows are copied
   once into zero-padded column-phase rows (stride s: s phases, phase r holding padded columns
   j * s + r), so every tap of 16 adjacent outputs is one unaligned load and one FMA, four
   output vectors in flight; no transposes. */
#define DW_ROW_NV 4
/* Stages one plane for the AVX-512 row-wise kernel: phase r, input row iy -> buf[(r * h + iy) * wq + j]
   = x[iy][j * sw + r - pl] or 0. */
static inline void dw_stage_phases(const float *x, int h, int w, int pl, int sw, int wq, float *buf) {
    for (int r = 0; r < sw; r++) {
        const phase_cols pc = phase_columns(w, pl, r, sw, wq);
        for (int iy = 0; iy < h; iy++) fill_phase_row(buf + ((long)r * h + iy) * wq, x + (long)iy * w, pc, 1);
    }
}

/* toff[t]: tap t's phase plane + column offset in the staged buffer (the row is added per row). */
static inline void dw_tap_offsets(int kh, int kw, int dw, int sw, int h, int wq, int *toff) {
    for (int t = 0; t < kh * kw; t++) {
        const int cx = (t % kw) * dw;
        toff[t] = (cx % sw) * h * wq + cx / sw;
    }
}

AVX512 static void dw_rows_avx512(const float *x, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                                  int pt, int pl, int oh, int ow, const float *wc, float bias,
                                  const float *res, float lo, float hi, float *yp, float *buf, int wq) {
    dw_stage_phases(x, h, w, pl, sw, wq, buf);
    const int khw = kh * kw;
    __m512 wv[64];
    int toff[64];
    dw_tap_offsets(kh, kw, dw, sw, h, wq, toff);
    for (int t = 0; t < khw; t++) wv[t] = _mm512_set1_ps(wc[t]);
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), vb = _mm512_set1_ps(bias);
    for (int oy = 0; oy < oh; oy++) {
        float *yr = yp + (long)oy * ow;
        const float *rr = res ? res + (long)oy * ow : NULL;
        for (int ox0 = 0; ox0 < ow; ox0 += 16 * DW_ROW_NV) {
            __m512 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
            for (int ky = 0; ky < kh; ky++) {
                const int iy = oy * sh - pt + ky * dh;
                if (iy < 0 || iy >= h) continue;
                const float *rowBase = buf + (long)iy * wq + ox0;
                for (int kx = 0; kx < kw; kx++) {
                    const int t = ky * kw + kx;
                    const float *q = rowBase + toff[t];
                    a0 = _mm512_fmadd_ps(wv[t], _mm512_loadu_ps(q), a0);
                    a1 = _mm512_fmadd_ps(wv[t], _mm512_loadu_ps(q + 16), a1);
                    a2 = _mm512_fmadd_ps(wv[t], _mm512_loadu_ps(q + 32), a2);
                    a3 = _mm512_fmadd_ps(wv[t], _mm512_loadu_ps(q + 48), a3);
                }
            }
            __m512 acc[DW_ROW_NV] = {a0, a1, a2, a3};
            for (int v = 0; v < DW_ROW_NV; v++) {
                const int o = ox0 + 16 * v;
                if (o >= ow) break;
                const __mmask16 m = ow - o >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (ow - o)) - 1);
                __m512 r = acc[v];
                if (rr) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, rr + o));
                _mm512_mask_storeu_ps(yr + o, m, _mm512_min_ps(_mm512_max_ps(r, vlo), vhi));
            }
        }
    }
}

AVX512 static void dw_planes_avx512(const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                                    int pt, int pl, int oh, int ow, const float *wt, const float *bias,
                                    const float *residual, float lo, float hi, long p0, long p1, float *y) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    /* phase row width: every column a tap of the last output vector group reads, + slack */
    const int groups = (ow + 16 * DW_ROW_NV - 1) / (16 * DW_ROW_NV);
    const int wq = groups * 16 * DW_ROW_NV + ((kw - 1) * dw) / sw + 1;
    float *buf = scratch(0, (size_t)sw * h * wq + 16);
    if (!buf) abort();
    for (long p = p0; p < p1; p++) {
        const long c = p / nb;
        dw_rows_avx512(x + p * hw, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, wt + c * kh * kw, bias[c],
                       residual ? residual + p * ohw : NULL, lo, hi, y + p * ohw, buf, wq);
    }
}

/* ---------- AVX2: 8 planes per vector (every map size) ----------
   A band of input rows of 8 (channel, image) planes is
   transposed 8 x 8 in registers to [row][col][8] (zero padded), every tap of an output is one
   vector FMA (4 outputs of a row in flight), and the [pixel][8] outputs are transposed back to
   the planes with residual + clamp. A 7 x 7 or 14 x 14 map fills every lane (a row-wise AVX2
   kernel, which staged padded rows of 32+ columns per plane and ran one short row at a time, was
   2-2.5x slower there and 5-25% slower on 56 to 256 px maps). */
ALWAYS_INLINE AVX2 void transpose8_ps(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* Lanes [0, n) of an 8-float vector (n clamped to 0..8). */
ALWAYS_INLINE AVX2 __m256i lanes_below(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* O[(r * ow + ox) * 8] = bias + taps of T for the band's nr output rows; KH, KW > 0: a constant
   kernel size (dilation 1), else kh x kw with dilation dh, dw. Four outputs of a row in flight. */
ALWAYS_INLINE AVX2 void dw8_compute(const int KH, const int KW, const float *T, long WT, int nr, int ow, int sh,
                                    int sw, int kh, int kw, int dh, int dw, const __m256 *wv, __m256 bv, float *O) {
    if (KH) { kh = KH; kw = KW; dh = 1; dw = 1; }
    for (int r = 0; r < nr; r++) {
        int ox = 0;
        for (; ox + 4 <= ow; ox += 4) {
            const float *base = T + ((long)r * sh * WT + (long)ox * sw) * 8;
            __m256 a0 = bv, a1 = bv, a2 = bv, a3 = bv;
            for (int ky = 0; ky < kh; ky++) {
                const float *row = base + (long)ky * dh * WT * 8;
                for (int kx = 0; kx < kw; kx++) {
                    const __m256 w = wv[ky * kw + kx];
                    const float *q = row + (long)kx * dw * 8;
                    a0 = _mm256_fmadd_ps(w, _mm256_load_ps(q), a0);
                    a1 = _mm256_fmadd_ps(w, _mm256_load_ps(q + sw * 8), a1);
                    a2 = _mm256_fmadd_ps(w, _mm256_load_ps(q + 2 * sw * 8), a2);
                    a3 = _mm256_fmadd_ps(w, _mm256_load_ps(q + 3 * sw * 8), a3);
                }
            }
            float *o = O + ((long)r * ow + ox) * 8;
            _mm256_store_ps(o, a0); _mm256_store_ps(o + 8, a1); _mm256_store_ps(o + 16, a2); _mm256_store_ps(o + 24, a3);
        }
        for (; ox < ow; ox++) {
            const float *base = T + ((long)r * sh * WT + (long)ox * sw) * 8;
            __m256 a0 = bv, a1 = _mm256_setzero_ps();
            for (int ky = 0; ky < kh; ky++) {
                const float *row = base + (long)ky * dh * WT * 8;
                __m256 a = _mm256_setzero_ps();
                for (int kx = 0; kx < kw; kx++) a = _mm256_fmadd_ps(wv[ky * kw + kx], _mm256_load_ps(row + (long)kx * dw * 8), a);
                if (ky & 1) a1 = _mm256_add_ps(a1, a); else a0 = _mm256_add_ps(a0, a);
            }
            _mm256_store_ps(O + ((long)r * ow + ox) * 8, _mm256_add_ps(a0, a1));
        }
    }
}
#define DW8_FIXED(NAME, KH, KW) AVX2 static void NAME(const float *T, long WT, int nr, int ow, int sh, int sw, int kh, \
        int kw, int dh, int dw, const __m256 *wv, __m256 bv, float *O) { \
    dw8_compute(KH, KW, T, WT, nr, ow, sh, sw, kh, kw, dh, dw, wv, bv, O); }
DW8_FIXED(dw8_k3, 3, 3)
DW8_FIXED(dw8_k5, 5, 5)
DW8_FIXED(dw8_k7, 7, 7)
DW8_FIXED(dw8_generic, 0, 0)
#undef DW8_FIXED

AVX2 static void dw_t8_avx2(const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                            int pt, int pl, int oh, int ow, const float *wt, const float *bias,
                            const float *residual, float lo, float hi, long p0, long p1, float *y) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    const int khw = kh * kw;
    const long WT = (long)(ow - 1) * sw + (long)(kw - 1) * dw + 1; /* transposed band width (padded columns) */
    const int eh = (kh - 1) * dh + 1;
    /* output rows per band: transposed band <= 64 KB, or 8 rows on wide maps */
    long R = ((16384 / 8) / WT - eh) / sh + 1;
    if (R < 8) R = 8; /* wide maps: a band re-stages eh - sh rows of the previous one */
    if (R > oh) R = oh;
    const long trows = (R - 1) * sh + eh;
    float *T = scratch(0, (size_t)(trows * WT * 8));
    float *O = scratch(1, (size_t)(R * ow * 8 + 64));
    __m256 *wv = (__m256 *)scratch(2, (size_t)khw * 8);
    if (!T || !O || !wv) abort();
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    /* input columns [0, cw) land in transposed columns pl.. (those past the band's width are never read) */
    const long cw = WT - pl < w ? WT - pl : w;
    for (long q = p0; q < p1; q += 8) {
        const int cnt = p1 - q < 8 ? (int)(p1 - q) : 8;
        float bl[8], tl[8];
        long chan[8];
        for (int l = 0; l < 8; l++) { chan[l] = l < cnt ? (q + l) / nb : -1; bl[l] = l < cnt ? bias[chan[l]] : 0; }
        for (int t = 0; t < khw; t++) {
            for (int l = 0; l < 8; l++) tl[l] = l < cnt ? wt[chan[l] * khw + t] : 0;
            wv[t] = _mm256_loadu_ps(tl);
        }
        const __m256 bv = _mm256_loadu_ps(bl);
        const float *xq = x + q * hw;
        for (int oy0 = 0; oy0 < oh; oy0 += (int)R) {
            const int nr = oh - oy0 < R ? oh - oy0 : (int)R;
            const int r0 = oy0 * sh - pt;
            const int rows = (nr - 1) * sh + eh;
            for (int i = 0; i < rows; i++) {
                const int iy = r0 + i;
                float *trow = T + (long)i * WT * 8;
                if (iy < 0 || iy >= h || cw <= 0) {
                    memset(trow, 0, sizeof(float) * 8 * WT);
                    continue;
                }
                const long a = pl < WT ? pl : WT;
                memset(trow, 0, sizeof(float) * 8 * a);
                for (long c = 0; c < cw; c += 8) {
                    const int n = cw - c < 8 ? (int)(cw - c) : 8;
                    const __m256i m = lanes_below(n);
                    __m256 v[8];
                    for (int l = 0; l < 8; l++) {
                        const float *src = xq + (long)l * hw + (long)iy * w + c;
                        v[l] = l >= cnt ? _mm256_setzero_ps() : n == 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, m);
                    }
                    transpose8_ps(v);
                    float *d = trow + (a + c) * 8;
                    for (int j = 0; j < n; j++) _mm256_store_ps(d + j * 8, v[j]);
                }
                if (a + cw < WT) memset(trow + (a + cw) * 8, 0, sizeof(float) * 8 * (WT - a - cw));
            }
            if (kh == 3 && kw == 3 && dh == 1 && dw == 1) dw8_k3(T, WT, nr, ow, sh, sw, kh, kw, dh, dw, wv, bv, O);
            else if (kh == 5 && kw == 5 && dh == 1 && dw == 1) dw8_k5(T, WT, nr, ow, sh, sw, kh, kw, dh, dw, wv, bv, O);
            else if (kh == 7 && kw == 7 && dh == 1 && dw == 1) dw8_k7(T, WT, nr, ow, sh, sw, kh, kw, dh, dw, wv, bv, O);
            else dw8_generic(T, WT, nr, ow, sh, sw, kh, kw, dh, dw, wv, bv, O);
            /* back to the planes: 8 pixels x 8 planes at a time */
            const long npx = (long)nr * ow, at0 = (long)oy0 * ow;
            for (long i = 0; i < npx; i += 8) {
                const int n = npx - i < 8 ? (int)(npx - i) : 8;
                const __m256i m = lanes_below(n);
                __m256 v[8];
                for (int j = 0; j < 8; j++) v[j] = j < n ? _mm256_load_ps(O + (i + j) * 8) : _mm256_setzero_ps();
                transpose8_ps(v);
                for (int l = 0; l < cnt; l++) {
                    const long at = (q + l) * ohw + at0 + i;
                    __m256 r = v[l];
                    if (residual) r = _mm256_add_ps(r, n == 8 ? _mm256_loadu_ps(residual + at) : _mm256_maskload_ps(residual + at, m));
                    r = _mm256_min_ps(_mm256_max_ps(r, vlo), vhi);
                    if (n == 8) _mm256_storeu_ps(y + at, r); else _mm256_maskstore_ps(y + at, m, r);
                }
            }
        }
    }
}

void tessera_engine_depthwise(int isa, const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                              int pt, int pl, int oh, int ow, const float *weights, const float *bias,
                              const float *residual, float lo, float hi, long p0, long p1, float *y) {
    /* At the AVX-512 level too, the 8-plane AVX2 kernel is the faster one but on stride-1 3x3
       layers of wide maps. Measured on the Zen 5 VM (one worker, per 4 images, AVX-512 kernels ->
       AVX2 kernel): 672 3x3 at 14x14 0.76 -> 0.38 ms, 120 5x5 at 28x28 0.71 -> 0.34, 960 5x5
       dilation 2 at 16x16 3.26 -> 1.39, 64 3x3/2 at 112x112 1.18 -> 0.95; but 16 3x3 at 112x112
       0.43 -> 0.51 and 72 3x3 at 56x56 0.47 -> 0.55, which stay on the AVX-512 plane kernel. */
    if (isa_avx512(isa) && sh == 1 && sw == 1 && kh * kw <= 9 && ow >= 56)
        dw_planes_avx512(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, weights, bias, residual, lo, hi, p0, p1, y);
    else if (isa_avx2(isa))
        dw_t8_avx2(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, weights, bias, residual, lo, hi, p0, p1, y);
    else
        dw_portable(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, weights, bias, residual, lo, hi, p0, p1, y);
}

/* ---------- dense convolution: im2col panels x packed weights ---------- */
