/*
 * Winograd F(4x4,3x3) transforms for the engine (see tessera_engine_kernels.h): 6x6 input
 * tiles with stride 4, 36 GEMMs, 4x fewer multiplies than direct convolution. The bodies are
 * plain C over blocks of 16 tiles; they are compiled once for AVX-512 and once portable.
 */
#include "engine_internal.h"
#include <string.h>
#include <immintrin.h>

#define L 16
#define MAXROW43 2048

/* B^T applied to six vectors (in-place friendly: reads d, writes o). */
#define BT6(d, o) do { for (int l = 0; l < L; l++) { \
    float x0 = d[0][l], x1 = d[1][l], x2 = d[2][l], x3 = d[3][l], x4 = d[4][l], x5 = d[5][l]; \
    o[0][l] = 4 * x0 - 5 * x2 + x4; \
    o[1][l] = -4 * x1 - 4 * x2 + x3 + x4; \
    o[2][l] = 4 * x1 - 4 * x2 - x3 + x4; \
    o[3][l] = -2 * x1 - x2 + 2 * x3 + x4; \
    o[4][l] = 2 * x1 - x2 - 2 * x3 + x4; \
    o[5][l] = 4 * x1 - 5 * x3 + x5; } } while (0)

/* A^T applied to six vectors -> four. */
#define AT6(m, o) do { for (int l = 0; l < L; l++) { \
    float x0 = m[0][l], x1 = m[1][l], x2 = m[2][l], x3 = m[3][l], x4 = m[4][l], x5 = m[5][l]; \
    float s12 = x1 + x2, d12 = x1 - x2, s34 = x3 + x4, d34 = x3 - x4; \
    o[0][l] = x0 + s12 + s34; \
    o[1][l] = d12 + 2 * d34; \
    o[2][l] = s12 + 4 * s34; \
    o[3][l] = d12 + 8 * d34 + x5; } } while (0)

static inline __attribute__((always_inline)) void
w43_input_body(const float *x, int nb, int cin, int h, int w, int pt, int pl, int th, int tw,
               long t0, long tc, float *v) {
    const long tpi = (long)th * tw;
    const long estride = (long)cin * tc;
    static __thread float rows[6][4 * MAXROW43 + 4 * L + 8];
    long t = t0;
    const long end = t0 + tc;
    while (t < end) {
        const long b = t / tpi, r = t - b * tpi;
        const int ty = (int)(r / tw), tx0 = (int)(r - (long)ty * tw);
        int n = tw - tx0;
        if (n > end - t) n = (int)(end - t);
        if (n > MAXROW43) n = MAXROW43;
        const long j0 = t - t0;
        const int width = 4 * n + 2;
        const int ix0 = 4 * tx0 - pl;
        for (int ci = 0; ci < cin; ci++) {
            const float *plane = x + ((long)ci * nb + b) * (long)h * w;
            for (int k = 0; k < 6; k++) {
                const int iy = 4 * ty - pt + k;
                float *dst = rows[k];
                if (iy < 0 || iy >= h) { memset(dst, 0, sizeof(float) * (width + 4 * L)); continue; }
                const float *src = plane + (long)iy * w;
                int a = ix0 < 0 ? -ix0 : 0;
                int z = w - ix0; if (z > width) z = width; if (z < a) z = a;
                if (a > 0) memset(dst, 0, sizeof(float) * a);
                memcpy(dst + a, src + ix0 + a, sizeof(float) * (z - a));
                memset(dst + z, 0, sizeof(float) * (width + 4 * L - z));
            }
            float *out = v + (long)ci * tc + j0;
            for (int i = 0; i < n; i += L) {
                const int cnt = n - i < L ? n - i : L;
                float d[6][6][L], q[6][6][L];
                for (int k = 0; k < 6; k++) {
                    const float *p = rows[k] + 4 * i;
                    for (int j = 0; j < 6; j++) for (int l = 0; l < L; l++) d[j][k][l] = p[4 * l + j];
                }
                /* columns j hold rows k: apply B^T along k for each j, then along j. */
                float e[6][6][L];
                for (int j = 0; j < 6; j++) BT6(d[j], e[j]);         /* e[j][k'] = sum_k BT[k'][k] d(k, j) */
                for (int k = 0; k < 6; k++) {
                    float col[6][L], res[6][L];
                    for (int j = 0; j < 6; j++) for (int l = 0; l < L; l++) col[j][l] = e[j][k][l];
                    BT6(col, res);
                    for (int j = 0; j < 6; j++) for (int l = 0; l < L; l++) q[k][j][l] = res[j][l];
                }
                for (int k = 0; k < 6; k++) for (int j = 0; j < 6; j++) {
                    float *o = out + (long)(k * 6 + j) * estride + i;
                    if (cnt == L) { for (int l = 0; l < L; l++) o[l] = q[k][j][l]; }
                    else { for (int l = 0; l < cnt; l++) o[l] = q[k][j][l]; }
                }
            }
        }
        t += n;
    }
}

static inline __attribute__((always_inline)) void
w43_output_body(const float *m, int nb, int cout, int oh, int ow, int th, int tw, long t0, long tc,
                const float *bias, const float *residual, float lo, float hi, float *y) {
    const long tpi = (long)th * tw;
    const long estride = (long)cout * tc;
    const long ohw = (long)oh * ow;
    static __thread float rows[4][4 * MAXROW43 + 4 * L + 8];
    long t = t0;
    const long end = t0 + tc;
    while (t < end) {
        const long b = t / tpi, r = t - b * tpi;
        const int ty = (int)(r / tw), tx0 = (int)(r - (long)ty * tw);
        int n = tw - tx0;
        if (n > end - t) n = (int)(end - t);
        if (n > MAXROW43) n = MAXROW43;
        const long j0 = t - t0;
        const int oy = 4 * ty, ox0 = 4 * tx0;
        int cols = ow - ox0; if (cols > 4 * n) cols = 4 * n;
        int nrows = oh - oy; if (nrows > 4) nrows = 4;
        for (int co = 0; co < cout; co++) {
            const float *s = m + (long)co * tc + j0;
            const float bv = bias[co];
            for (int i = 0; i < n; i += L) {
                const int cnt = n - i < L ? n - i : L;
                float e[6][6][L];
                for (int k = 0; k < 6; k++) for (int j = 0; j < 6; j++) {
                    const float *src = s + (long)(k * 6 + j) * estride + i;
                    if (cnt == L) { for (int l = 0; l < L; l++) e[j][k][l] = src[l]; }
                    else { for (int l = 0; l < L; l++) e[j][k][l] = l < cnt ? src[l] : 0; }
                }
                float a[6][4][L];
                for (int j = 0; j < 6; j++) AT6(e[j], a[j]);       /* a[j][r] = sum_k AT[r][k] m(k, j) */
                for (int rr = 0; rr < 4; rr++) {
                    float col[6][L], res[4][L];
                    for (int j = 0; j < 6; j++) for (int l = 0; l < L; l++) col[j][l] = a[j][rr][l];
                    AT6(col, res);
                    float *dst = rows[rr] + 4 * i;
                    for (int l = 0; l < L; l++) for (int c = 0; c < 4; c++) dst[4 * l + c] = res[c][l] + bv;
                }
            }
            for (int rr = 0; rr < nrows; rr++) {
                const long base = ((long)co * nb + b) * ohw + (long)(oy + rr) * ow + ox0;
                float *dst = y + base;
                const float *q = rows[rr];
                if (residual) {
                    const float *res = residual + base;
                    for (int i = 0; i < cols; i++) { float vv = q[i] + res[i]; vv = vv < lo ? lo : vv; dst[i] = vv > hi ? hi : vv; }
                } else {
                    for (int i = 0; i < cols; i++) { float vv = q[i]; vv = vv < lo ? lo : vv; dst[i] = vv > hi ? hi : vv; }
                }
            }
        }
        t += n;
    }
}


/* ── AVX-512 versions: 16 tiles per vector, deinterleave/interleave by permutes ── */
#define V __m512
#define ADD _mm512_add_ps
#define SUB _mm512_sub_ps
#define MULS(a, k) _mm512_mul_ps(a, _mm512_set1_ps(k))
#define FMA(a, k, c) _mm512_fmadd_ps(a, _mm512_set1_ps(k), c)

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))
static inline void bt6v(const V x[6], V o[6]) {
    o[0] = ADD(FMA(x[2], -5.0f, MULS(x[0], 4.0f)), x[4]);
    o[1] = ADD(FMA(ADD(x[1], x[2]), -4.0f, x[3]), x[4]);
    o[2] = ADD(FMA(SUB(x[1], x[2]), 4.0f, x[4]), _mm512_sub_ps(_mm512_setzero_ps(), x[3]));
    o[3] = ADD(FMA(SUB(x[3], x[1]), 2.0f, x[4]), _mm512_sub_ps(_mm512_setzero_ps(), x[2]));
    o[4] = SUB(FMA(SUB(x[1], x[3]), 2.0f, x[4]), x[2]);
    o[5] = ADD(FMA(x[3], -5.0f, MULS(x[1], 4.0f)), x[5]);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))
static inline void at6v(const V x[6], V o[4]) {
    V s12 = ADD(x[1], x[2]), d12 = SUB(x[1], x[2]), s34 = ADD(x[3], x[4]), d34 = SUB(x[3], x[4]);
    o[0] = ADD(ADD(x[0], s12), s34);
    o[1] = FMA(d34, 2.0f, d12);
    o[2] = FMA(s34, 4.0f, s12);
    o[3] = ADD(FMA(d34, 8.0f, d12), x[5]);
}


/* d[j] = p[4l + j] for lanes l = 0..15, j = 0..5 (reads p[0 .. 67]). */
#define W43_DEINTERLEAVE(P, D) do { const float *p_ = (P); \
    V v0 = _mm512_loadu_ps(p_), v1 = _mm512_loadu_ps(p_ + 16), v2 = _mm512_loadu_ps(p_ + 32), v3 = _mm512_loadu_ps(p_ + 48); \
    V e01 = _mm512_permutex2var_ps(v0, ev, v1), o01 = _mm512_permutex2var_ps(v0, od, v1); \
    V e23 = _mm512_permutex2var_ps(v2, ev, v3), o23 = _mm512_permutex2var_ps(v2, od, v3); \
    (D)[0] = _mm512_permutex2var_ps(e01, ev, e23); (D)[2] = _mm512_permutex2var_ps(e01, od, e23); \
    (D)[1] = _mm512_permutex2var_ps(o01, ev, o23); (D)[3] = _mm512_permutex2var_ps(o01, od, o23); \
    V w0 = _mm512_loadu_ps(p_ + 4), w1 = _mm512_loadu_ps(p_ + 20), w2 = _mm512_loadu_ps(p_ + 36), w3 = _mm512_loadu_ps(p_ + 52); \
    V f01 = _mm512_permutex2var_ps(w0, ev, w1), g01 = _mm512_permutex2var_ps(w0, od, w1); \
    V f23 = _mm512_permutex2var_ps(w2, ev, w3), g23 = _mm512_permutex2var_ps(w2, od, w3); \
    (D)[4] = _mm512_permutex2var_ps(f01, ev, f23); (D)[5] = _mm512_permutex2var_ps(g01, ev, g23); } while (0)

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))
static void w43_input_avx512(const float *x, int nb, int cin, int h, int w, int pt, int pl, int th, int tw,
                             long t0, long tc, float *v) {
    const long tpi = (long)th * tw;
    const long estride = (long)cin * tc;
    static __thread float rows[6][4 * MAXROW43 + 4 * L + 80];
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    long t = t0;
    const long end = t0 + tc;
    while (t < end) {
        const long b = t / tpi, r = t - b * tpi;
        const int ty = (int)(r / tw), tx0 = (int)(r - (long)ty * tw);
        int n = tw - tx0;
        if (n > end - t) n = (int)(end - t);
        if (n > MAXROW43) n = MAXROW43;
        if (n < L) {
            /* Short tile rows: pack several rows into one vector, one dummy lane between rows. */
            int segs = 0, lanes = 0, real = 0;
            long sb[L], sty[L]; int stx[L], sn[L], ss[L];
            long tt = t;
            while (tt < end && segs < L) {
                const long b2 = tt / tpi, r2 = tt - b2 * tpi;
                const int ty2 = (int)(r2 / tw), tx2 = (int)(r2 - (long)ty2 * tw);
                int n2 = tw - tx2;
                if (n2 > end - tt) n2 = (int)(end - tt);
                if (n2 >= L || lanes + n2 > L) break;
                sb[segs] = b2; sty[segs] = ty2; stx[segs] = tx2; sn[segs] = n2; ss[segs] = lanes;
                segs++; lanes += n2 + 1; real += n2; tt += n2;
            }
            if (segs > 1) {
                __mmask16 realMask = 0;
                for (int g = 0; g < segs; g++) realMask |= (__mmask16)(((1u << sn[g]) - 1) << ss[g]);
                const __mmask16 storeMask = (__mmask16)((1u << real) - 1);
                const long j0g = t - t0;
                for (int ci = 0; ci < cin; ci++) {
                    for (int k = 0; k < 6; k++) memset(rows[k], 0, sizeof(float) * (4 * L + 80));
                    for (int g = 0; g < segs; g++) {
                        const float *plane = x + ((long)ci * nb + sb[g]) * (long)h * w;
                        const int width = 4 * sn[g] + 2, ix0 = 4 * stx[g] - pl;
                        for (int k = 0; k < 6; k++) {
                            const int iy = 4 * (int)sty[g] - pt + k;
                            if (iy < 0 || iy >= h) continue;
                            float *dst = rows[k] + 4 * ss[g];
                            const float *src = plane + (long)iy * w;
                            int a = ix0 < 0 ? -ix0 : 0;
                            int z = w - ix0; if (z > width) z = width; if (z < a) z = a;
                            memcpy(dst + a, src + ix0 + a, sizeof(float) * (z - a));
                        }
                    }
                    V d[6][6];
                    for (int k = 0; k < 6; k++) W43_DEINTERLEAVE(rows[k], d[k]);
                    V e[6][6];
                    for (int j = 0; j < 6; j++) {
                        V col[6], res[6];
                        for (int k = 0; k < 6; k++) col[k] = d[k][j];
                        bt6v(col, res);
                        for (int k = 0; k < 6; k++) e[k][j] = res[k];
                    }
                    float *out = v + (long)ci * tc + j0g;
                    for (int k = 0; k < 6; k++) {
                        V res[6];
                        bt6v(e[k], res);
                        for (int j = 0; j < 6; j++)
                            _mm512_mask_storeu_ps(out + (long)(k * 6 + j) * estride, storeMask,
                                                  _mm512_maskz_compress_ps(realMask, res[j]));
                    }
                }
                t = tt;
                continue;
            }
        }
        const long j0 = t - t0;
        const int width = 4 * n + 2;
        const int ix0 = 4 * tx0 - pl;
        for (int ci = 0; ci < cin; ci++) {
            const float *plane = x + ((long)ci * nb + b) * (long)h * w;
            for (int k = 0; k < 6; k++) {
                const int iy = 4 * ty - pt + k;
                float *dst = rows[k];
                if (iy < 0 || iy >= h) { memset(dst, 0, sizeof(float) * (width + 4 * L + 8)); continue; }
                const float *src = plane + (long)iy * w;
                int a = ix0 < 0 ? -ix0 : 0;
                int z = w - ix0; if (z > width) z = width; if (z < a) z = a;
                if (a > 0) memset(dst, 0, sizeof(float) * a);
                memcpy(dst + a, src + ix0 + a, sizeof(float) * (z - a));
                memset(dst + z, 0, sizeof(float) * (width + 4 * L + 8 - z));
            }
            float *out = v + (long)ci * tc + j0;
            for (int i = 0; i < n; i += L) {
                const __mmask16 mask = n - i >= L ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
                V d[6][6]; /* d[k][j]: tile row k, tile column j */
                for (int k = 0; k < 6; k++) W43_DEINTERLEAVE(rows[k] + 4 * i, d[k]);
                /* B^T along rows (k) for each column j, then along columns. */
                V e[6][6];
                for (int j = 0; j < 6; j++) {
                    V col[6], res[6];
                    for (int k = 0; k < 6; k++) col[k] = d[k][j];
                    bt6v(col, res);
                    for (int k = 0; k < 6; k++) e[k][j] = res[k];
                }
                for (int k = 0; k < 6; k++) {
                    V res[6];
                    bt6v(e[k], res);
                    for (int j = 0; j < 6; j++) _mm512_mask_storeu_ps(out + (long)(k * 6 + j) * estride + i, mask, res[j]);
                }
            }
        }
        t += n;
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))
static void w43_output_avx512(const float *m, int nb, int cout, int oh, int ow, int th, int tw, long t0, long tc,
                              const float *bias, const float *residual, float lo, float hi, float *y) {
    const long tpi = (long)th * tw;
    const long estride = (long)cout * tc;
    const long ohw = (long)oh * ow;
    static __thread float rows[4][4 * MAXROW43 + 4 * L + 80];
    const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ihi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const V vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    long t = t0;
    const long end = t0 + tc;
    while (t < end) {
        const long b = t / tpi, r = t - b * tpi;
        const int ty = (int)(r / tw), tx0 = (int)(r - (long)ty * tw);
        int n = tw - tx0;
        if (n > end - t) n = (int)(end - t);
        if (n > MAXROW43) n = MAXROW43;
        if (n < L) {
            int segs = 0, lanes = 0, real = 0;
            long sb[L], sty[L]; int stx[L], sn[L], ss[L];
            long tt = t;
            while (tt < end && segs < L) {
                const long b2 = tt / tpi, r2 = tt - b2 * tpi;
                const int ty2 = (int)(r2 / tw), tx2 = (int)(r2 - (long)ty2 * tw);
                int n2 = tw - tx2;
                if (n2 > end - tt) n2 = (int)(end - tt);
                if (n2 >= L || lanes + n2 > L) break;
                sb[segs] = b2; sty[segs] = ty2; stx[segs] = tx2; sn[segs] = n2; ss[segs] = lanes;
                segs++; lanes += n2 + 1; real += n2; tt += n2;
            }
            if (segs > 1) {
                __mmask16 realMask = 0;
                for (int g = 0; g < segs; g++) realMask |= (__mmask16)(((1u << sn[g]) - 1) << ss[g]);
                const __mmask16 loadMask = (__mmask16)((1u << real) - 1);
                const long j0g = t - t0;
                for (int co = 0; co < cout; co++) {
                    const float *s = m + (long)co * tc + j0g;
                    const V bv = _mm512_set1_ps(bias[co]);
                    V a[4][6];
                    for (int j = 0; j < 6; j++) {
                        V col[6], res[4];
                        for (int k = 0; k < 6; k++)
                            col[k] = _mm512_maskz_expand_ps(realMask, _mm512_maskz_loadu_ps(loadMask, s + (long)(k * 6 + j) * estride));
                        at6v(col, res);
                        for (int rr = 0; rr < 4; rr++) a[rr][j] = res[rr];
                    }
                    for (int rr = 0; rr < 4; rr++) {
                        V yv[4];
                        at6v(a[rr], yv);
                        for (int c = 0; c < 4; c++) yv[c] = ADD(yv[c], bv);
                        V ac_lo = _mm512_permutex2var_ps(yv[0], ilo, yv[2]), ac_hi = _mm512_permutex2var_ps(yv[0], ihi, yv[2]);
                        V bd_lo = _mm512_permutex2var_ps(yv[1], ilo, yv[3]), bd_hi = _mm512_permutex2var_ps(yv[1], ihi, yv[3]);
                        float *dst = rows[rr];
                        _mm512_storeu_ps(dst, _mm512_permutex2var_ps(ac_lo, ilo, bd_lo));
                        _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(ac_lo, ihi, bd_lo));
                        _mm512_storeu_ps(dst + 32, _mm512_permutex2var_ps(ac_hi, ilo, bd_hi));
                        _mm512_storeu_ps(dst + 48, _mm512_permutex2var_ps(ac_hi, ihi, bd_hi));
                    }
                    for (int g = 0; g < segs; g++) {
                        const int oyg = 4 * (int)sty[g], oxg = 4 * stx[g];
                        int colsg = ow - oxg; if (colsg > 4 * sn[g]) colsg = 4 * sn[g];
                        int nrowsg = oh - oyg; if (nrowsg > 4) nrowsg = 4;
                        for (int rr = 0; rr < nrowsg; rr++) {
                            const long base = ((long)co * nb + sb[g]) * ohw + (long)(oyg + rr) * ow + oxg;
                            float *dst = y + base;
                            const float *q = rows[rr] + 4 * ss[g];
                            const float *res = residual ? residual + base : NULL;
                            for (int i = 0; i < colsg; i++) {
                                float vv = q[i] + (res ? res[i] : 0.0f);
                                vv = vv < lo ? lo : vv;
                                dst[i] = vv > hi ? hi : vv;
                            }
                        }
                    }
                }
                t = tt;
                continue;
            }
        }
        const long j0 = t - t0;
        const int oy = 4 * ty, ox0 = 4 * tx0;
        int cols = ow - ox0; if (cols > 4 * n) cols = 4 * n;
        int nrows = oh - oy; if (nrows > 4) nrows = 4;
        for (int co = 0; co < cout; co++) {
            const float *s = m + (long)co * tc + j0;
            const V bv = _mm512_set1_ps(bias[co]);
            for (int i = 0; i < n; i += L) {
                V a[4][6]; /* a[r][j] = sum_k AT[r][k] M[k][j] */
                for (int j = 0; j < 6; j++) {
                    V col[6], res[4];
                    for (int k = 0; k < 6; k++) col[k] = _mm512_loadu_ps(s + (long)(k * 6 + j) * estride + i);
                    at6v(col, res);
                    for (int rr = 0; rr < 4; rr++) a[rr][j] = res[rr];
                }
                for (int rr = 0; rr < 4; rr++) {
                    V yv[4];
                    at6v(a[rr], yv);
                    for (int c = 0; c < 4; c++) yv[c] = ADD(yv[c], bv);
                    V ac_lo = _mm512_permutex2var_ps(yv[0], ilo, yv[2]), ac_hi = _mm512_permutex2var_ps(yv[0], ihi, yv[2]);
                    V bd_lo = _mm512_permutex2var_ps(yv[1], ilo, yv[3]), bd_hi = _mm512_permutex2var_ps(yv[1], ihi, yv[3]);
                    float *dst = rows[rr] + 4 * i;
                    _mm512_storeu_ps(dst, _mm512_permutex2var_ps(ac_lo, ilo, bd_lo));
                    _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(ac_lo, ihi, bd_lo));
                    _mm512_storeu_ps(dst + 32, _mm512_permutex2var_ps(ac_hi, ilo, bd_hi));
                    _mm512_storeu_ps(dst + 48, _mm512_permutex2var_ps(ac_hi, ihi, bd_hi));
                }
            }
            for (int rr = 0; rr < nrows; rr++) {
                const long base = ((long)co * nb + b) * ohw + (long)(oy + rr) * ow + ox0;
                float *dst = y + base;
                const float *q = rows[rr];
                const float *res = residual ? residual + base : NULL;
                for (int i = 0; i < cols; i += 16) {
                    const __mmask16 mask = cols - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - i)) - 1);
                    V vv = _mm512_loadu_ps(q + i);
                    if (res) vv = ADD(vv, _mm512_maskz_loadu_ps(mask, res + i));
                    vv = _mm512_min_ps(_mm512_max_ps(vv, vlo), vhi);
                    _mm512_mask_storeu_ps(dst + i, mask, vv);
                }
            }
        }
        t += n;
    }
}
static void w43_input_generic(const float *x, int nb, int cin, int h, int w, int pt, int pl, int th, int tw,
                              long t0, long tc, float *v) {
    w43_input_body(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
}
static void w43_output_generic(const float *m, int nb, int cout, int oh, int ow, int th, int tw, long t0, long tc,
                               const float *bias, const float *residual, float lo, float hi, float *y) {
    w43_output_body(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
}
AVX2 static void w43_input_avx2(const float *x, int nb, int cin, int h, int w, int pt, int pl, int th, int tw,
                              long t0, long tc, float *v) {
    w43_input_body(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
}
AVX2 static void w43_output_avx2(const float *m, int nb, int cout, int oh, int ow, int th, int tw, long t0, long tc,
                               const float *bias, const float *residual, float lo, float hi, float *y) {
    w43_output_body(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
}

void tessera_engine_wino43_input(int isa, const float *x, int nb, int cin, int h, int w, int pt, int pl,
                                 int th, int tw, long t0, long tc, float *v) {
    if (isa_avx512(isa)) w43_input_avx512(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
    else if (isa_avx2(isa)) w43_input_avx2(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
    else w43_input_generic(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
}

void tessera_engine_wino43_output(int isa, const float *m, int nb, int cout, int oh, int ow, int th, int tw,
                                  long t0, long tc, const float *bias, const float *residual,
                                  float lo, float hi, float *y) {
    if (isa_avx512(isa)) w43_output_avx512(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
    else if (isa_avx2(isa)) w43_output_avx2(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
    else w43_output_generic(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
}
