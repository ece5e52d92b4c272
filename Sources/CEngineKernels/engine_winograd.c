/* Winograd F(2x2,3x3) transforms for the engine; see tessera_engine_kernels.h. */
#include "engine_internal.h"
#include <string.h>
#include <immintrin.h>

#define MAXROW 4096

static inline __attribute__((always_inline)) void
wino_input_body(const float *x, int nb, int cin, int h, int w, int pt, int pl, int th, int tw,
                long t0, long tc, float *v) {
    const long tpi = (long)th * tw;
    const long estride = (long)cin * tc;
    float rows[4][2 * MAXROW + 72];
    long t = t0;
    const long end = t0 + tc;
    while (t < end) {
        const long b = t / tpi, r = t - b * tpi;
        const int ty = (int)(r / tw), tx0 = (int)(r - (long)ty * tw);
        int n = tw - tx0;
        if (n > end - t) n = (int)(end - t);
        if (n > MAXROW) n = MAXROW;
        const long j0 = t - t0;
        const int width = 2 * n + 2;
        const int ix0 = 2 * tx0 - pl;
        for (int ci = 0; ci < cin; ci++) {
            const float *plane = x + ((long)ci * nb + b) * (long)h * w;
            for (int k = 0; k < 4; k++) {
                const int iy = 2 * ty - pt + k;
                float *dst = rows[k];
                if (iy < 0 || iy >= h) { memset(dst, 0, sizeof(float) * width); continue; }
                const float *src = plane + (long)iy * w;
                int a = ix0 < 0 ? -ix0 : 0;
                int z = w - ix0; if (z > width) z = width; if (z < a) z = a;
                if (a > 0) memset(dst, 0, sizeof(float) * a);
                memcpy(dst + a, src + ix0 + a, sizeof(float) * (z - a));
                if (z < width) memset(dst + z, 0, sizeof(float) * (width - z));
            }
            float *out = v + (long)ci * tc + j0;
            const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
            for (int i = 0; i < n; i++) {
                const int c = 2 * i;
                /* B^T d (rows), then (.) B (columns) */
                float a0[4], a1[4], a2[4], a3[4];
                for (int j = 0; j < 4; j++) {
                    a0[j] = r0[c + j] - r2[c + j];
                    a1[j] = r1[c + j] + r2[c + j];
                    a2[j] = r2[c + j] - r1[c + j];
                    a3[j] = r1[c + j] - r3[c + j];
                }
#define COLS(A, E) \
                out[(E + 0) * estride + i] = A[0] - A[2]; \
                out[(E + 1) * estride + i] = A[1] + A[2]; \
                out[(E + 2) * estride + i] = A[2] - A[1]; \
                out[(E + 3) * estride + i] = A[1] - A[3];
                COLS(a0, 0) COLS(a1, 4) COLS(a2, 8) COLS(a3, 12)
#undef COLS
            }
        }
        t += n;
    }
}

static inline __attribute__((always_inline)) void
wino_output_body(const float *m, int nb, int cout, int oh, int ow, int th, int tw, long t0, long tc,
                 const float *bias, const float *residual, float lo, float hi, float *y) {
    const long tpi = (long)th * tw;
    const long estride = (long)cout * tc;
    const long ohw = (long)oh * ow;
    float rows[2][2 * MAXROW + 72];
    long t = t0;
    const long end = t0 + tc;
    while (t < end) {
        const long b = t / tpi, r = t - b * tpi;
        const int ty = (int)(r / tw), tx0 = (int)(r - (long)ty * tw);
        int n = tw - tx0;
        if (n > end - t) n = (int)(end - t);
        if (n > MAXROW) n = MAXROW;
        const long j0 = t - t0;
        const int oy = 2 * ty, ox0 = 2 * tx0;
        int cols = ow - ox0; if (cols > 2 * n) cols = 2 * n;
        const int nrows = oy + 1 < oh ? 2 : 1;
        for (int co = 0; co < cout; co++) {
            const float *s = m + (long)co * tc + j0;
            const float bv = bias[co];
            float *q0 = rows[0], *q1 = rows[1];
            for (int i = 0; i < n; i++) {
                float e[16];
                for (int k = 0; k < 16; k++) e[k] = s[k * estride + i];
                /* A^T m: rows */
                float u0[4], u1[4];
                for (int j = 0; j < 4; j++) {
                    u0[j] = e[j] + e[4 + j] + e[8 + j];
                    u1[j] = e[4 + j] - e[8 + j] - e[12 + j];
                }
                q0[2 * i] = u0[0] + u0[1] + u0[2] + bv;
                q0[2 * i + 1] = u0[1] - u0[2] - u0[3] + bv;
                q1[2 * i] = u1[0] + u1[1] + u1[2] + bv;
                q1[2 * i + 1] = u1[1] - u1[2] - u1[3] + bv;
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


/* AVX-512: 16 tiles per vector. Row k of a tile run holds r[2i + j], j = 0..3, for tile i. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))
static void wino_input_avx512(const float *x, int nb, int cin, int h, int w, int pt, int pl, int th, int tw,
                              long t0, long tc, float *v) {
    const long tpi = (long)th * tw;
    const long estride = (long)cin * tc;
    float rows[4][2 * MAXROW + 72];
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    long t = t0;
    const long end = t0 + tc;
    while (t < end) {
        const long b = t / tpi, r = t - b * tpi;
        const int ty = (int)(r / tw), tx0 = (int)(r - (long)ty * tw);
        int n = tw - tx0;
        if (n > end - t) n = (int)(end - t);
        if (n > MAXROW) n = MAXROW;
        const long j0 = t - t0;
        const int width = 2 * n + 2;
        const int ix0 = 2 * tx0 - pl;
        for (int ci = 0; ci < cin; ci++) {
            const float *plane = x + ((long)ci * nb + b) * (long)h * w;
            for (int k = 0; k < 4; k++) {
                const int iy = 2 * ty - pt + k;
                float *dst = rows[k];
                if (iy < 0 || iy >= h) { memset(dst, 0, sizeof(float) * width); continue; }
                const float *src = plane + (long)iy * w;
                int a = ix0 < 0 ? -ix0 : 0;
                int z = w - ix0; if (z > width) z = width; if (z < a) z = a;
                if (a > 0) memset(dst, 0, sizeof(float) * a);
                memcpy(dst + a, src + ix0 + a, sizeof(float) * (z - a));
                if (z < width) memset(dst + z, 0, sizeof(float) * (width - z));
            }
            float *out = v + (long)ci * tc + j0;
            for (int i = 0; i < n; i += 16) {
                const __mmask16 mask = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
                __m512 d[4][4];
                for (int k = 0; k < 4; k++) {
                    const float *p = rows[k] + 2 * i;
                    __m512 lo = _mm512_loadu_ps(p), hi = _mm512_loadu_ps(p + 16);
                    __m512 lo2 = _mm512_loadu_ps(p + 2), hi2 = _mm512_loadu_ps(p + 18);
                    d[k][0] = _mm512_permutex2var_ps(lo, even, hi);
                    d[k][1] = _mm512_permutex2var_ps(lo, odd, hi);
                    d[k][2] = _mm512_permutex2var_ps(lo2, even, hi2);
                    d[k][3] = _mm512_permutex2var_ps(lo2, odd, hi2);
                }
                __m512 a[4][4];
                for (int j = 0; j < 4; j++) {
                    a[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
                    a[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
                    a[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
                    a[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
                }
                for (int rr = 0; rr < 4; rr++) {
                    float *o = out + (long)(4 * rr) * estride + i;
                    _mm512_mask_storeu_ps(o, mask, _mm512_sub_ps(a[rr][0], a[rr][2]));
                    _mm512_mask_storeu_ps(o + estride, mask, _mm512_add_ps(a[rr][1], a[rr][2]));
                    _mm512_mask_storeu_ps(o + 2 * estride, mask, _mm512_sub_ps(a[rr][2], a[rr][1]));
                    _mm512_mask_storeu_ps(o + 3 * estride, mask, _mm512_sub_ps(a[rr][1], a[rr][3]));
                }
            }
        }
        t += n;
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))
static void wino_output_avx512(const float *m, int nb, int cout, int oh, int ow, int th, int tw, long t0, long tc,
                               const float *bias, const float *residual, float lo, float hi, float *y) {
    const long tpi = (long)th * tw;
    const long estride = (long)cout * tc;
    const long ohw = (long)oh * ow;
    float rows[2][2 * MAXROW + 72];
    const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ihi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    long t = t0;
    const long end = t0 + tc;
    while (t < end) {
        const long b = t / tpi, r = t - b * tpi;
        const int ty = (int)(r / tw), tx0 = (int)(r - (long)ty * tw);
        int n = tw - tx0;
        if (n > end - t) n = (int)(end - t);
        if (n > MAXROW) n = MAXROW;
        const long j0 = t - t0;
        const int oy = 2 * ty, ox0 = 2 * tx0;
        int cols = ow - ox0; if (cols > 2 * n) cols = 2 * n;
        const int nrows = oy + 1 < oh ? 2 : 1;
        for (int co = 0; co < cout; co++) {
            const float *s = m + (long)co * tc + j0;
            const __m512 bv = _mm512_set1_ps(bias[co]);
            for (int i = 0; i < n; i += 16) {
                __m512 e[16];
                for (int k = 0; k < 16; k++) e[k] = _mm512_loadu_ps(s + k * estride + i);
                __m512 u0[4], u1[4];
                for (int j = 0; j < 4; j++) {
                    u0[j] = _mm512_add_ps(_mm512_add_ps(e[j], e[4 + j]), e[8 + j]);
                    u1[j] = _mm512_sub_ps(_mm512_sub_ps(e[4 + j], e[8 + j]), e[12 + j]);
                }
                __m512 y00 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(u0[0], u0[1]), u0[2]), bv);
                __m512 y01 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(u0[1], u0[2]), u0[3]), bv);
                __m512 y10 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(u1[0], u1[1]), u1[2]), bv);
                __m512 y11 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(u1[1], u1[2]), u1[3]), bv);
                _mm512_storeu_ps(rows[0] + 2 * i, _mm512_permutex2var_ps(y00, ilo, y01));
                _mm512_storeu_ps(rows[0] + 2 * i + 16, _mm512_permutex2var_ps(y00, ihi, y01));
                _mm512_storeu_ps(rows[1] + 2 * i, _mm512_permutex2var_ps(y10, ilo, y11));
                _mm512_storeu_ps(rows[1] + 2 * i + 16, _mm512_permutex2var_ps(y10, ihi, y11));
            }
            for (int rr = 0; rr < nrows; rr++) {
                const long base = ((long)co * nb + b) * ohw + (long)(oy + rr) * ow + ox0;
                float *dst = y + base;
                const float *q = rows[rr];
                const float *res = residual ? residual + base : NULL;
                for (int i = 0; i < cols; i += 16) {
                    const __mmask16 mask = cols - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - i)) - 1);
                    __m512 vv = _mm512_loadu_ps(q + i);
                    if (res) vv = _mm512_add_ps(vv, _mm512_maskz_loadu_ps(mask, res + i));
                    vv = _mm512_min_ps(_mm512_max_ps(vv, vlo), vhi);
                    _mm512_mask_storeu_ps(dst + i, mask, vv);
                }
            }
        }
        t += n;
    }
}
static void wino_input_generic(const float *x, int nb, int cin, int h, int w, int pt, int pl, int th, int tw,
                               long t0, long tc, float *v) {
    wino_input_body(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
}
static void wino_output_generic(const float *m, int nb, int cout, int oh, int ow, int th, int tw, long t0, long tc,
                                const float *bias, const float *residual, float lo, float hi, float *y) {
    wino_output_body(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
}
AVX2 static void wino_input_avx2(const float *x, int nb, int cin, int h, int w, int pt, int pl, int th, int tw,
                               long t0, long tc, float *v) {
    wino_input_body(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
}
AVX2 static void wino_output_avx2(const float *m, int nb, int cout, int oh, int ow, int th, int tw, long t0, long tc,
                                const float *bias, const float *residual, float lo, float hi, float *y) {
    wino_output_body(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
}

void tessera_engine_wino_input(int isa, const float *x, int nb, int cin, int h, int w, int pt, int pl,
                               int th, int tw, long t0, long tc, float *v) {
    if (isa_avx512(isa)) wino_input_avx512(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
    else if (isa_avx2(isa)) wino_input_avx2(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
    else wino_input_generic(x, nb, cin, h, w, pt, pl, th, tw, t0, tc, v);
}

void tessera_engine_wino_output(int isa, const float *m, int nb, int cout, int oh, int ow, int th, int tw,
                                long t0, long tc, const float *bias, const float *residual,
                                float lo, float hi, float *y) {
    if (isa_avx512(isa)) wino_output_avx512(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
    else if (isa_avx2(isa)) wino_output_avx2(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
    else wino_output_generic(m, nb, cout, oh, ow, th, tw, t0, tc, bias, residual, lo, hi, y);
}
