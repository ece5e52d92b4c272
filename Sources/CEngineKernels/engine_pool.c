/* Max / average pooling reading channel-major or NCHW planes (see tessera_engine_kernels.h). */
#include "engine_internal.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

static inline __attribute__((always_inline)) int
pool_rows(const float *plane, int h, int w, int kh, int dh, int iy0, int is_max, float *acc) {
    int first = 1;
    for (int ky = 0; ky < kh; ky++) {
        const int iy = iy0 + ky * dh;
        if (iy < 0 || iy >= h) continue;
        const float *src = plane + (long)iy * w;
        if (first) { memcpy(acc, src, sizeof(float) * w); first = 0; }
        else if (is_max) { for (int i = 0; i < w; i++) acc[i] = acc[i] > src[i] ? acc[i] : src[i]; }
        else { for (int i = 0; i < w; i++) acc[i] += src[i]; }
    }
    return !first;
}

/* Horizontal pass of output columns [ox0, ox1) (scalar, any geometry). */
static inline __attribute__((always_inline)) void
pool_cols(const float *acc, int w, int kw, int sw, int dw, int pl, int is_max, float rc,
          const float *col_count, int ox0, int ox1, float *orow) {
    for (int ox = ox0; ox < ox1; ox++) {
        float v = is_max ? -INFINITY : 0;
        const int ix0 = ox * sw - pl;
        for (int kx = 0; kx < kw; kx++) {
            const int ix = ix0 + kx * dw;
            if (ix < 0 || ix >= w) continue;
            if (is_max) v = v > acc[ix] ? v : acc[ix];
            else v += acc[ix];
        }
        if (!is_max) {
            float d = rc * (col_count ? col_count[ox] : 1);
            v /= d > 1 ? d : 1;
        }
        orow[ox] = v;
    }
}

static inline __attribute__((always_inline)) const float *
pool_plane(const float *x, int nchw_channels, int nb, long hw, long p) {
    return nchw_channels > 0 ? x + ((p % nb) * nchw_channels + p / nb) * hw : x + p * hw;
}

ALWAYS_INLINE void pool_body(const float *x, int nchw_channels, int nb, int h, int w, int kh, int kw, int sh, int sw,
                             int dh, int dw, int pt, int pl, int oh, int ow, int is_max,
                             const float *row_count, const float *col_count, long p0, long p1, float *y, float *acc) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    for (long p = p0; p < p1; p++) {
        const float *plane = pool_plane(x, nchw_channels, nb, hw, p);
        for (int oy = 0; oy < oh; oy++) {
            float *orow = y + p * ohw + (long)oy * ow;
            if (!pool_rows(plane, h, w, kh, dh, oy * sh - pt, is_max, acc)) {
                for (int ox = 0; ox < ow; ox++) orow[ox] = is_max ? -INFINITY : 0;
                continue;
            }
            pool_cols(acc, w, kw, sw, dw, pl, is_max, row_count ? row_count[oy] : 1, col_count, 0, ow, orow);
        }
    }
}

#define POOL_ARGS const float *x, int nchw_channels, int nb, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw, \
    int pt, int pl, int oh, int ow, int is_max, const float *row_count, const float *col_count, long p0, long p1, float *y, float *acc
#define POOL_CALL x, nchw_channels, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, is_max, row_count, col_count, p0, p1, y, acc
/* The plain C loops compiled for AVX2 + FMA (the row pass vectorises) and portable. */
static void pool_portable(POOL_ARGS) { pool_body(POOL_CALL); }
AVX2 static void pool_avx2(POOL_ARGS) { pool_body(POOL_CALL); }

AVX512 static void pool_avx512(const float *x, int nchw_channels, int nb, int h, int w, int kh, int kw, int sh, int sw,
                               int dh, int dw, int pt, int pl, int oh, int ow, int is_max,
                               const float *row_count, const float *col_count, long p0, long p1, float *y, float *acc) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    /* output columns whose whole window lies inside the row: vectorised with strided gathers */
    int a = pl > 0 ? (pl + sw - 1) / sw : 0;
    int z = w - 1 - (kw - 1) * dw + pl >= 0 ? (w - 1 - (kw - 1) * dw + pl) / sw + 1 : 0;
    if (z > ow) z = ow;
    if (a > z) a = z;
    const long span = (long)(16 - 1) * sw + (long)(kw - 1) * dw;
    const int vec = span < (1L << 20);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(sw));
    for (long p = p0; p < p1; p++) {
        const float *plane = pool_plane(x, nchw_channels, nb, hw, p);
        for (int oy = 0; oy < oh; oy++) {
            float *orow = y + p * ohw + (long)oy * ow;
            const float rc = row_count ? row_count[oy] : 1;
            int done = 0;
            if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && dh == 1 && dw == 1 && pt == 0 && pl == 0 && 2 * oy + 1 < h) {
                /* 2x2/2 without padding (the shipped models' input downscale): both rows read in place, the
                   vertical sum (or max) first, then the even and odd columns, as the row / column passes do */
                const float *r0 = plane + (long)(2 * oy) * w, *r1 = r0 + w;
                const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
                for (; done + 16 <= z; done += 16) {
                    const long c = 2L * done;
                    __m512 s0, s1;
                    if (is_max) {
                        s0 = _mm512_max_ps(_mm512_loadu_ps(r0 + c), _mm512_loadu_ps(r1 + c));
                        s1 = _mm512_max_ps(_mm512_loadu_ps(r0 + c + 16), _mm512_loadu_ps(r1 + c + 16));
                    } else {
                        s0 = _mm512_add_ps(_mm512_loadu_ps(r0 + c), _mm512_loadu_ps(r1 + c));
                        s1 = _mm512_add_ps(_mm512_loadu_ps(r0 + c + 16), _mm512_loadu_ps(r1 + c + 16));
                    }
                    const __m512 e = _mm512_permutex2var_ps(s0, even, s1), o = _mm512_permutex2var_ps(s0, odd, s1);
                    __m512 v = is_max ? _mm512_max_ps(e, o) : _mm512_add_ps(e, o);
                    if (!is_max) {
                        __m512 d = _mm512_mul_ps(_mm512_set1_ps(rc), col_count ? _mm512_loadu_ps(col_count + done) : _mm512_set1_ps(1));
                        v = _mm512_div_ps(v, _mm512_max_ps(d, _mm512_set1_ps(1)));
                    }
                    _mm512_storeu_ps(orow + done, v);
                }
                if (done == ow) continue;
            }
            if (!pool_rows(plane, h, w, kh, dh, oy * sh - pt, is_max, acc)) {
                for (int ox = 0; ox < ow; ox++) orow[ox] = is_max ? -INFINITY : 0;
                continue;
            }
            if (done) { pool_cols(acc, w, kw, sw, dw, pl, is_max, rc, col_count, done, ow, orow); continue; }
            if (!vec) { pool_cols(acc, w, kw, sw, dw, pl, is_max, rc, col_count, 0, ow, orow); continue; }
            pool_cols(acc, w, kw, sw, dw, pl, is_max, rc, col_count, 0, a, orow);
            for (int ox = a; ox < z; ox += 16) {
                const int n = z - ox < 16 ? z - ox : 16;
                const __mmask16 m = n == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
                const float *base = acc + (long)ox * sw - pl;
                __m512 v;
                if (n == 16 && sw == 2 && dw == 1 && kw <= 3) {
                    /* stride 2 (2x2/2 downscales, ResNet's 3x3/2): the taps are the even and odd floats of
                       two loads, split by permutes instead of gathers; the same operations in the same order */
                    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
                    const __m512 a0 = _mm512_loadu_ps(base), a1 = _mm512_loadu_ps(base + 16);
                    v = _mm512_permutex2var_ps(a0, even, a1);
                    if (kw > 1) {
                        const __m512 g = _mm512_permutex2var_ps(a0, odd, a1);
                        v = is_max ? _mm512_max_ps(v, g) : _mm512_add_ps(v, g);
                    }
                    if (kw > 2) {
                        const __m512 g = _mm512_permutex2var_ps(_mm512_loadu_ps(base + 2), even, _mm512_loadu_ps(base + 18));
                        v = is_max ? _mm512_max_ps(v, g) : _mm512_add_ps(v, g);
                    }
                } else if (sw == 1) {
                    /* stride 1 (Inception's 3x3/1 average pools): each tap is one masked load */
                    v = _mm512_maskz_loadu_ps(m, base);
                    for (int kx = 1; kx < kw; kx++) {
                        const __m512 g = _mm512_maskz_loadu_ps(m, base + kx * dw);
                        v = is_max ? _mm512_max_ps(v, g) : _mm512_add_ps(v, g);
                    }
                } else {
                    v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base, 4);
                    for (int kx = 1; kx < kw; kx++) {
                        const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base + kx * dw, 4);
                        v = is_max ? _mm512_max_ps(v, g) : _mm512_add_ps(v, g);
                    }
                }
                if (!is_max) {
                    __m512 d = _mm512_mul_ps(_mm512_set1_ps(rc),
                                             col_count ? _mm512_maskz_loadu_ps(m, col_count + ox) : _mm512_set1_ps(1));
                    d = _mm512_max_ps(d, _mm512_set1_ps(1));
                    v = _mm512_div_ps(v, d);
                }
                _mm512_mask_storeu_ps(orow + ox, m, v);
            }
            pool_cols(acc, w, kw, sw, dw, pl, is_max, rc, col_count, z, ow, orow);
        }
    }
}

void tessera_engine_pool(int isa, const float *x, int nchw_channels, int nb, int h, int w, int kh, int kw, int sh, int sw,
                         int dh, int dw, int pt, int pl, int oh, int ow, int is_max,
                         const float *row_count, const float *col_count, long p0, long p1, float *y) {
    float *acc = scratch(1, (size_t)w + 16);
    if (!acc) abort();
    if (isa_avx512(isa))
        pool_avx512(x, nchw_channels, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, is_max, row_count, col_count, p0, p1, y, acc);
    else if (isa_avx2(isa))
        pool_avx2(x, nchw_channels, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, is_max, row_count, col_count, p0, p1, y, acc);
    else
        pool_portable(x, nchw_channels, nb, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, is_max, row_count, col_count, p0, p1, y, acc);
}

/* ---------- global pooling ---------- */

static float plane_reduce_portable(const float *p, long n, int is_max) {
    float acc[8];
    for (int l = 0; l < 8; l++) acc[l] = is_max ? -__builtin_inff() : 0.0f;
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] = is_max ? (p[i + l] > acc[l] ? p[i + l] : acc[l]) : acc[l] + p[i + l];
    float r = is_max ? -__builtin_inff() : 0.0f;
    for (int l = 0; l < 8; l++) r = is_max ? (acc[l] > r ? acc[l] : r) : r + acc[l];
    for (; i < n; i++) r = is_max ? (p[i] > r ? p[i] : r) : r + p[i];
    return r;
}

AVX2 static float plane_reduce_avx2(const float *p, long n, int is_max) {
    __m256 a0 = is_max ? _mm256_set1_ps(-__builtin_inff()) : _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    long i = 0;
    if (is_max) {
        for (; i + 32 <= n; i += 32) {
            a0 = _mm256_max_ps(a0, _mm256_loadu_ps(p + i)); a1 = _mm256_max_ps(a1, _mm256_loadu_ps(p + i + 8));
            a2 = _mm256_max_ps(a2, _mm256_loadu_ps(p + i + 16)); a3 = _mm256_max_ps(a3, _mm256_loadu_ps(p + i + 24));
        }
        for (; i + 8 <= n; i += 8) a0 = _mm256_max_ps(a0, _mm256_loadu_ps(p + i));
        a0 = _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3));
    } else {
        for (; i + 32 <= n; i += 32) {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i)); a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
            a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16)); a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
        }
        for (; i + 8 <= n; i += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a0 = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, a0);
    float r = lanes[0];
    for (int l = 1; l < 8; l++) r = is_max ? (lanes[l] > r ? lanes[l] : r) : r + lanes[l];
    for (; i < n; i++) r = is_max ? (p[i] > r ? p[i] : r) : r + p[i];
    return r;
}

void tessera_engine_global_pool(int isa, const float *x, long planes, long sp, int is_max, float *out) {
    const float inv = 1.0f / (float)sp;
    for (long q = 0; q < planes; q++) {
        const float r = isa_avx2(isa) ? plane_reduce_avx2(x + q * sp, sp, is_max) : plane_reduce_portable(x + q * sp, sp, is_max);
        out[q] = is_max ? r : r * inv;
    }
}
