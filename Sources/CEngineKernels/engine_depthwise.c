/*
 * Depthwise convolution (see tessera_engine_kernels.h): along the rows of each plane from
 * column-phase copies on maps 16+ wide; otherwise 16 (channel, image) planes per vector: a band
 * of input rows of 16 planes is transposed to [row][col][16] (zero padded), so every tap is one
 * vector FMA whatever the map size (5x5 maps waste nothing); bias + residual + clamp fused.
 * The AVX2 build runs the row-wise kernel with 8-wide vectors on every map size.
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
AVX2 static void dw_avx2(DW_ARGS) { dw_body(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, wt, bias, residual, lo, hi, p0, p1, y); }


/* Taps of one output vector for a constant kernel size (dilation 1): one chain per kernel row. */
#define DW_COMPUTE_FIXED(NAME, KH, KW) \
AVX512 static void NAME(const float *T, int wt_, int nr, int ow, int sh, int sw, const __m512 *wv, __m512 bv, \
                        int clamp, __m512 vlo, __m512 vhi, float *O) { \
    const long WT = wt_; \
    for (int r = 0; r < nr; r++) { \
        for (int ox = 0; ox < ow; ox++) { \
            const float *base = T + ((long)r * sh * WT + (long)ox * sw) * 16; \
            __m512 acc[KH]; \
            for (int ky = 0; ky < KH; ky++) { \
                const float *row = base + ky * WT * 16; \
                __m512 a = ky == 0 ? bv : _mm512_setzero_ps(); \
                for (int kx = 0; kx < KW; kx++) a = _mm512_fmadd_ps(wv[ky * KW + kx], _mm512_load_ps(row + kx * 16), a); \
                acc[ky] = a; \
            } \
            for (int s = 1; s < KH; s++) acc[0] = _mm512_add_ps(acc[0], acc[s]); \
            if (clamp) acc[0] = _mm512_min_ps(_mm512_max_ps(acc[0], vlo), vhi); \
            _mm512_store_ps(O + ((long)r * ow + ox) * 16, acc[0]); \
        } \
    } \
}
DW_COMPUTE_FIXED(dw_k3, 3, 3)
DW_COMPUTE_FIXED(dw_k5, 5, 5)

AVX512 static void dw_generic(const float *T, int wt_, int nr, int ow, int sh, int sw, int kh, int kw, int dh, int dw,
                              const __m512 *wv, __m512 bv, int clamp, __m512 vlo, __m512 vhi, float *O) {
    const long WT = wt_;
    for (int r = 0; r < nr; r++) {
        for (int ox = 0; ox < ow; ox++) {
            const float *base = T + ((long)r * sh * WT + (long)ox * sw) * 16;
            __m512 a0 = bv, a1 = _mm512_setzero_ps();
            for (int ky = 0; ky < kh; ky++) {
                const float *row = base + (long)ky * dh * WT * 16;
                __m512 a = _mm512_setzero_ps();
                for (int kx = 0; kx < kw; kx++) a = _mm512_fmadd_ps(wv[ky * kw + kx], _mm512_load_ps(row + (long)kx * dw * 16), a);
                if (ky & 1) a1 = _mm512_add_ps(a1, a); else a0 = _mm512_add_ps(a0, a);
            }
            a0 = _mm512_add_ps(a0, a1);
            if (clamp) a0 = _mm512_min_ps(_mm512_max_ps(a0, vlo), vhi);
            _mm512_store_ps(O + ((long)r * ow + ox) * 16, a0);
        }
    }
}

AVX512 static void dw_avx512(const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                             int pt, int pl, int oh, int ow, const float *wt, const float *bias,
                             const float *residual, float lo, float hi, long p0, long p1, float *y) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    const int khw = kh * kw;
    const int WT = (ow - 1) * sw + (kw - 1) * dw + 1;     /* transposed band width (padded columns) */
    const int eh = (kh - 1) * dh + 1;
    /* output rows per band: transposed band <= 128 KB when possible */
    int R = ((32768 / 16) / WT - eh) / sh + 1;
    if (R < 1) R = 1;
    if (R > oh) R = oh;
    const long trows = (long)(R - 1) * sh + eh;
    float *T = scratch(0, (size_t)(trows * WT * 16));
    float *O = scratch(1, (size_t)R * ow * 16);
    __m512 *wv = (__m512 *)scratch(2, (size_t)khw * 16);
    if (!T || !O || !wv) { dw_portable(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, wt, bias, residual, lo, hi, p0, p1, y); return; }
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i inIdx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)hw));
    const __m512i outIdx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)ohw));
    const int a = pl < WT ? pl : WT;                     /* first transposed column inside the row */
    int z = pl + w < WT ? pl + w : WT; if (z < a) z = a;  /* one past the last */
    const int fused = residual == NULL;
    for (long q = p0; q < p1; q += 16) {
        const int cnt = p1 - q < 16 ? (int)(p1 - q) : 16;
        const __mmask16 m = cnt == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cnt) - 1);
        /* per-lane weights and bias */
        float bl[16];
        long chan[16];
        for (int l = 0; l < 16; l++) { chan[l] = l < cnt ? (q + l) / nb : -1; bl[l] = l < cnt ? bias[chan[l]] : 0; }
        if (chan[0] == chan[cnt - 1]) {
            const float *wc = wt + chan[0] * khw;
            for (int t = 0; t < khw; t++) wv[t] = _mm512_maskz_mov_ps(m, _mm512_set1_ps(wc[t]));
        } else {
            for (int t = 0; t < khw; t++) {
                float tl[16];
                for (int l = 0; l < 16; l++) tl[l] = l < cnt ? wt[chan[l] * khw + t] : 0;
                wv[t] = _mm512_loadu_ps(tl);
            }
        }
        const __m512 bv = _mm512_loadu_ps(bl);
        const float *xq = x + q * hw;
        for (int oy0 = 0; oy0 < oh; oy0 += R) {
            const int nr = oh - oy0 < R ? oh - oy0 : R;
            const int r0 = oy0 * sh - pt;
            const int rows = (nr - 1) * sh + eh;
            for (int i = 0; i < rows; i++) {
                const int iy = r0 + i;
                float *trow = T + (long)i * WT * 16;
                if (iy < 0 || iy >= h) {
                    for (int c = 0; c < WT; c++) _mm512_store_ps(trow + c * 16, _mm512_setzero_ps());
                    continue;
                }
                for (int c = 0; c < a; c++) _mm512_store_ps(trow + c * 16, _mm512_setzero_ps());
                const float *src = xq + (long)iy * w - pl;
                for (int c = a; c < z; c++)
                    _mm512_store_ps(trow + c * 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, inIdx, src + c, 4));
                for (int c = z; c < WT; c++) _mm512_store_ps(trow + c * 16, _mm512_setzero_ps());
            }
            if (kh == 3 && kw == 3 && dh == 1 && dw == 1) dw_k3(T, WT, nr, ow, sh, sw, wv, bv, fused, vlo, vhi, O);
            else if (kh == 5 && kw == 5 && dh == 1 && dw == 1) dw_k5(T, WT, nr, ow, sh, sw, wv, bv, fused, vlo, vhi, O);
            else dw_generic(T, WT, nr, ow, sh, sw, kh, kw, dh, dw, wv, bv, fused, vlo, vhi, O);
            float *yq = y + q * ohw + (long)oy0 * ow;
            const float *rq = residual ? residual + q * ohw + (long)oy0 * ow : NULL;
            for (int i = 0; i < nr * ow; i++) {
                __m512 v = _mm512_load_ps(O + (long)i * 16);
                if (rq) {
                    v = _mm512_add_ps(v, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, outIdx, rq + i, 4));
                    v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
                }
                _mm512_mask_i32scatter_ps(yq + i, m, outIdx, v, 4);
            }
        }
    }
}


/* Depthwise along the rows of each plane (maps at least 16 wide): the plane's rows are copied
   once into zero-padded column-phase rows (stride s: s phases, phase r holding padded columns
   j * s + r), so every tap of 16 adjacent outputs is one unaligned load and one FMA, four
   output vectors in flight; no transposes (the 16-plane kernel above gathers and scatters). */
#define DW_ROW_NV 4
/* Stages one plane for the row-wise kernels: phase r, input row iy -> buf[(r * h + iy) * wq + j]
   = x[iy][j * sw + r - pl] or 0. */
static inline void dw_stage_phases(const float *x, int h, int w, int pl, int sw, int wq, float *buf, int avx512) {
    for (int r = 0; r < sw; r++) {
        const phase_cols pc = phase_columns(w, pl, r, sw, wq);
        for (int iy = 0; iy < h; iy++) fill_phase_row(buf + ((long)r * h + iy) * wq, x + (long)iy * w, pc, avx512);
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
    dw_stage_phases(x, h, w, pl, sw, wq, buf, 1);
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

/* The AVX2 + FMA build of the row-wise depthwise: 8-wide vectors, up to four in flight, the
   last group of a row with as few as it needs (a 7- or 14-wide map wastes at most 7 lanes). */
static inline __attribute__((always_inline, target("avx2,fma"))) void
dw_group_avx2(const int NV, const float *buf, long wq, int h, int oy, int sh, int pt, int dh, int kh, int kw,
              const float *wc, const int *toff, __m256 vb, int ox0, int ow, const float *rr, __m256 vlo, __m256 vhi,
              float *yr) {
    __m256 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
    for (int ky = 0; ky < kh; ky++) {
        const int iy = oy * sh - pt + ky * dh;
        if (iy < 0 || iy >= h) continue;
        const float *rowBase = buf + (long)iy * wq + ox0;
        for (int kx = 0; kx < kw; kx++) {
            const int t = ky * kw + kx;
            const float *q = rowBase + toff[t];
            const __m256 wv = _mm256_broadcast_ss(wc + t);
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(q), a0);
            if (NV > 1) a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(q + 8), a1);
            if (NV > 2) a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(q + 16), a2);
            if (NV > 3) a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(q + 24), a3);
        }
    }
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#define DW2_STORE(V, A) if (NV > V && ox0 + 8 * V < ow) { \
        const int o = ox0 + 8 * V, n = ow - o; \
        __m256 r = (A); \
        if (n >= 8) { \
            if (rr) r = _mm256_add_ps(r, _mm256_loadu_ps(rr + o)); \
            _mm256_storeu_ps(yr + o, _mm256_min_ps(_mm256_max_ps(r, vlo), vhi)); \
        } else { \
            const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes); \
            if (rr) r = _mm256_add_ps(r, _mm256_maskload_ps(rr + o, m)); \
            _mm256_maskstore_ps(yr + o, m, _mm256_min_ps(_mm256_max_ps(r, vlo), vhi)); \
        } }
    DW2_STORE(0, a0) DW2_STORE(1, a1) DW2_STORE(2, a2) DW2_STORE(3, a3)
#undef DW2_STORE
}

#define DW2_GROUP(NV) AVX2 static void dw_group_avx2_##NV(const float *buf, long wq, int h, int oy, int sh, int pt, \
        int dh, int kh, int kw, const float *wc, const int *toff, __m256 vb, int ox0, int ow, const float *rr, \
        __m256 vlo, __m256 vhi, float *yr) { \
    dw_group_avx2(NV, buf, wq, h, oy, sh, pt, dh, kh, kw, wc, toff, vb, ox0, ow, rr, vlo, vhi, yr); }
DW2_GROUP(1) DW2_GROUP(2) DW2_GROUP(3) DW2_GROUP(4)
#undef DW2_GROUP

AVX2 static void dw_planes_avx2(const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                                int pt, int pl, int oh, int ow, const float *wt, const float *bias,
                                const float *residual, float lo, float hi, long p0, long p1, float *y) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    const int groups = (ow + 8 * DW_ROW_NV - 1) / (8 * DW_ROW_NV);
    const int wq = groups * 8 * DW_ROW_NV + ((kw - 1) * dw) / sw + 1;
    float *buf = scratch(0, (size_t)sw * h * wq + 16);
    if (!buf) abort();
    const int khw = kh * kw;
    int toff[64];
    dw_tap_offsets(kh, kw, dw, sw, h, wq, toff);
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    for (long p = p0; p < p1; p++) {
        const long c = p / nb;
        const float *xp = x + p * hw, *wc = wt + c * khw, *res = residual ? residual + p * ohw : NULL;
        float *yp = y + p * ohw;
        dw_stage_phases(xp, h, w, pl, sw, wq, buf, 0);
        const __m256 vb = _mm256_set1_ps(bias[c]);
        for (int oy = 0; oy < oh; oy++) {
            float *yr = yp + (long)oy * ow;
            const float *rr = res ? res + (long)oy * ow : NULL;
            for (int ox0 = 0; ox0 < ow; ox0 += 8 * DW_ROW_NV) {
                const int left = (ow - ox0 + 7) / 8;
                switch (left >= DW_ROW_NV ? DW_ROW_NV : left) {
                case 1: dw_group_avx2_1(buf, wq, h, oy, sh, pt, dh, kh, kw, wc, toff, vb, ox0, ow, rr, vlo, vhi, yr); break;
                case 2: dw_group_avx2_2(buf, wq, h, oy, sh, pt, dh, kh, kw, wc, toff, vb, ox0, ow, rr, vlo, vhi, yr); break;
                case 3: dw_group_avx2_3(buf, wq, h, oy, sh, pt, dh, kh, kw, wc, toff, vb, ox0, ow, rr, vlo, vhi, yr); break;
                default: dw_group_avx2_4(buf, wq, h, oy, sh, pt, dh, kh, kw, wc, toff, vb, ox0, ow, rr, vlo, vhi, yr); break;
                }
            }
        }
    }
}

void tessera_engine_depthwise(int isa, const float *x, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                              int pt, int pl, int oh, int ow, const float *weights, const float *bias,
                              const float *residual, float lo, float hi, long p0, long p1, float *y) {
    const long maxIdx = (long)16 * (h * (long)w > oh * (long)ow ? h * (long)w : oh * (long)ow);
    if (isa_avx512(isa) && ow >= 16 && kh * kw <= 64 && sw <= 4)
        dw_planes_avx512(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, weights, bias, residual, lo, hi, p0, p1, y);
    else if (isa_avx512(isa) && maxIdx < (1L << 30))
        dw_avx512(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, weights, bias, residual, lo, hi, p0, p1, y);
    else if (isa_avx2(isa) && kh * kw <= 64 && sw <= 4)
        dw_planes_avx2(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, weights, bias, residual, lo, hi, p0, p1, y);
    else if (isa_avx2(isa))
        dw_avx2(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, weights, bias, residual, lo, hi, p0, p1, y);
    else
        dw_portable(x, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, weights, bias, residual, lo, hi, p0, p1, y);
}

/* ---------- dense convolution: im2col panels x packed weights ---------- */
