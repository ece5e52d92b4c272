/* Activations that need exp (sigmoid, SiLU, Mish) or erf over runs of floats, vectorised: exp is
   Cephes' expf polynomial (relative error ~2e-7 over the clamped range) written in plain C so the
   compiler vectorises the loops for each ISA level, instead of one libm call per value. Below
   -88 SiLU and Mish are 0 (their true values are under 1e-36 there). */
#include "engine_internal.h"

ALWAYS_INLINE float exp_poly(float x) {
    x = x < -87.33654f ? -87.33654f : (x > 88.72283f ? 88.72283f : x);
    float fx = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - fx * 0.693359375f + fx * 2.12194440e-4f;
    float z = r * r;
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r
               + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    int bits = ((int)fx + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* erf as a rational function of x on [-4, 4] (odd degree-13 numerator over an even degree-8
   denominator; beyond |x| = 4, erf is +-1 in float), no exp, so it vectorises like the rest. */
ALWAYS_INLINE float erf_rational(float x) {
    x = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
    const float x2 = x * x;
    float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
    p = x2 * p + -2.10102402082508e-06f;
    p = x2 * p + -5.69250639462346e-05f;
    p = x2 * p + -7.34990630326855e-04f;
    p = x2 * p + -2.95459980854025e-03f;
    p = x2 * p + -1.60960333262415e-02f;
    float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
    q = x2 * q + -1.68282697438203e-03f;
    q = x2 * q + -7.37332916720468e-03f;
    q = x2 * q + -1.42647390514189e-02f;
    return x * p / q;
}

#define ACTIVATION_LOOPS(SUFFIX, ATTR)                                                              \
    ATTR static void erf_##SUFFIX(float *p, long n) {                                              \
        for (long i = 0; i < n; i++) p[i] = erf_rational(p[i]);                                     \
    }                                                                                               \
    ATTR static void gelu_##SUFFIX(float *p, long n) {                                             \
        for (long i = 0; i < n; i++) p[i] = 0.5f * p[i] * (1.0f + erf_rational(p[i] * 0.70710678118654752f)); \
    }                                                                                               \
    ATTR static void sigmoid_##SUFFIX(float *p, long n) {                                          \
        for (long i = 0; i < n; i++) p[i] = 1.0f / (1.0f + exp_poly(-p[i]));                        \
    }                                                                                               \
    ATTR static void silu_##SUFFIX(float *p, long n) {                                             \
        for (long i = 0; i < n; i++) { float v = p[i]; p[i] = v < -88.0f ? 0.0f : v / (1.0f + exp_poly(-v)); } \
    }                                                                                               \
    ATTR static void mish_##SUFFIX(float *p, long n) {                                             \
        for (long i = 0; i < n; i++) {                                                              \
            float v = p[i], e = exp_poly(v < 20.0f ? v : 20.0f), m = e * (e + 2.0f);               \
            p[i] = v > 20.0f ? v : (v < -88.0f ? 0.0f : v * m / (m + 2.0f));                        \
        }                                                                                           \
    }

/* log x for normal x > 0: Cephes' logf (mantissa in [sqrt(1/2), sqrt 2), degree-9 polynomial). */
ALWAYS_INLINE float log_poly(float x) {
    int bits;
    memcpy(&bits, &x, sizeof bits);
    float fe = (float)(((bits >> 23) & 0xff) - 126);
    bits = (bits & 0x807fffff) | 0x3f000000;
    float m;
    memcpy(&m, &bits, sizeof m);
    const int small = m < 0.707106781186547524f;
    fe = small ? fe - 1.0f : fe;
    m = small ? m + m - 1.0f : m - 1.0f;
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

/* x ** e, e constant: exact forms for e = 1, 2, 3, 0.5, -0.5, -1; otherwise exp(e log |x|) with the
   sign of an integer power, 0 ** e, infinities and NaN as powf has them. */
#define POW_LOOPS(SUFFIX, ATTR)                                                                     \
    ATTR static void pow_##SUFFIX(float *p, long n, float e) {                                      \
        if (e == 1.0f) return;                                                                      \
        if (e == 2.0f) { for (long i = 0; i < n; i++) p[i] = p[i] * p[i]; return; }                 \
        if (e == 3.0f) { for (long i = 0; i < n; i++) p[i] = p[i] * p[i] * p[i]; return; }          \
        if (e == 0.5f) { for (long i = 0; i < n; i++) p[i] = __builtin_sqrtf(p[i]); return; }       \
        if (e == -0.5f) { for (long i = 0; i < n; i++) p[i] = 1.0f / __builtin_sqrtf(p[i]); return; } \
        if (e == -1.0f) { for (long i = 0; i < n; i++) p[i] = 1.0f / p[i]; return; }                \
        const int integer = __builtin_floorf(e) == e;                                               \
        const int odd = integer && __builtin_fabsf(e) < 16777216.0f && ((long)e & 1);               \
        const float atZero = e > 0 ? 0.0f : (e == 0 ? 1.0f : __builtin_inff());                     \
        const float atInf = e > 0 ? __builtin_inff() : (e == 0 ? 1.0f : 0.0f);                     \
        for (long i = 0; i < n; i++) {                                                              \
            const float v = p[i], a = __builtin_fabsf(v);                                           \
            float r = exp_poly(e * log_poly(a));                                                    \
            r = a == 0 ? atZero : (a == __builtin_inff() ? atInf : r);                              \
            /* a negative base: the sign of an odd integer power, NaN for a fractional one (-inf: +-inf or 0) */ \
            r = v < 0 ? (integer ? (odd ? -r : r) : (v == -__builtin_inff() ? atInf : __builtin_nanf(""))) : r; \
            p[i] = e == 0 ? 1.0f : (v != v ? v : r);                                                \
        }                                                                                           \
    }
POW_LOOPS(avx512, AVX512)
POW_LOOPS(avx2, AVX2)
POW_LOOPS(portable, )

void tessera_engine_pow(float *p, long n, float e, int isa) {
    if (isa_avx512(isa)) pow_avx512(p, n, e);
    else if (isa_avx2(isa)) pow_avx2(p, n, e);
    else pow_portable(p, n, e);
}

/* hardSigmoid(v) = max(0, min(1, a v + b)); hardSwish(v) = v * hardSigmoid(v) with a = 1/6, b = 1/2 */
#define HARD_LOOPS(SUFFIX, ATTR)                                                                    \
    ATTR static void hard_##SUFFIX(float *p, long n, int swish, float a, float b) {                 \
        if (swish) for (long i = 0; i < n; i++) { float v = p[i], g = a * v + b; g = g < 0 ? 0 : g; p[i] = v * (g > 1 ? 1 : g); } \
        else for (long i = 0; i < n; i++) { float g = a * p[i] + b; g = g < 0 ? 0 : g; p[i] = g > 1 ? 1 : g; } \
    }
HARD_LOOPS(avx512, AVX512)
HARD_LOOPS(avx2, AVX2)
HARD_LOOPS(portable, )

void tessera_engine_hard_activation(float *p, long n, int swish, float a, float b, int isa) {
    if (isa_avx512(isa)) hard_avx512(p, n, swish, a, b);
    else if (isa_avx2(isa)) hard_avx2(p, n, swish, a, b);
    else hard_portable(p, n, swish, a, b);
}

ACTIVATION_LOOPS(avx512, AVX512)
ACTIVATION_LOOPS(avx2, AVX2)
ACTIVATION_LOOPS(portable, )

void tessera_engine_activation(float *p, long n, int kind, int isa) {
    if (isa_avx512(isa)) {
        if (kind == TESSERA_ACT_SIGMOID) sigmoid_avx512(p, n);
        else if (kind == TESSERA_ACT_SILU) silu_avx512(p, n);
        else if (kind == TESSERA_ACT_MISH) mish_avx512(p, n);
        else if (kind == TESSERA_ACT_ERF) erf_avx512(p, n);
        else if (kind == TESSERA_ACT_GELU) gelu_avx512(p, n);
    } else if (isa_avx2(isa)) {
        if (kind == TESSERA_ACT_SIGMOID) sigmoid_avx2(p, n);
        else if (kind == TESSERA_ACT_SILU) silu_avx2(p, n);
        else if (kind == TESSERA_ACT_MISH) mish_avx2(p, n);
        else if (kind == TESSERA_ACT_ERF) erf_avx2(p, n);
        else if (kind == TESSERA_ACT_GELU) gelu_avx2(p, n);
    } else {
        if (kind == TESSERA_ACT_SIGMOID) sigmoid_portable(p, n);
        else if (kind == TESSERA_ACT_SILU) silu_portable(p, n);
        else if (kind == TESSERA_ACT_MISH) mish_portable(p, n);
        else if (kind == TESSERA_ACT_ERF) erf_portable(p, n);
        else if (kind == TESSERA_ACT_GELU) gelu_portable(p, n);
    }
}

/* y[r][j] = exp(x[r][j] - max_r) / sum_r for rows r < rows of n (exp_poly: relative error ~2e-7).
   The max and the sum run in 16 partial lanes (a float reduction is not vectorised otherwise:
   ViT-B/16's 197-wide attention rows were 7% of its time on the scalar loop). */
#define SOFTMAX_LOOPS(SUFFIX, ATTR)                                                                  \
    ATTR static void softmax_##SUFFIX(const float *x, float *y, long rows, int n) {                 \
        for (long r = 0; r < rows; r++) {                                                           \
            const float *xr = x + r * n;                                                            \
            float *yr = y + r * n;                                                                  \
            float part[16];                                                                         \
            for (int l = 0; l < 16; l++) part[l] = -__builtin_inff();                               \
            int j = 0;                                                                              \
            for (; j + 16 <= n; j += 16)                                                            \
                for (int l = 0; l < 16; l++) part[l] = xr[j + l] > part[l] ? xr[j + l] : part[l];   \
            float m = -__builtin_inff();                                                            \
            for (int l = 0; l < 16; l++) m = part[l] > m ? part[l] : m;                             \
            for (; j < n; j++) m = xr[j] > m ? xr[j] : m;                                           \
            for (j = 0; j < n; j++) yr[j] = exp_poly(xr[j] - m);                                    \
            for (int l = 0; l < 16; l++) part[l] = 0;                                               \
            for (j = 0; j + 16 <= n; j += 16)                                                       \
                for (int l = 0; l < 16; l++) part[l] += yr[j + l];                                  \
            float s = 0;                                                                            \
            for (int l = 0; l < 16; l++) s += part[l];                                              \
            for (; j < n; j++) s += yr[j];                                                          \
            const float inv = 1.0f / s;                                                             \
            for (j = 0; j < n; j++) yr[j] *= inv;                                                   \
        }                                                                                           \
    }
SOFTMAX_LOOPS(avx512, AVX512)
SOFTMAX_LOOPS(avx2, AVX2)
SOFTMAX_LOOPS(portable, )

void tessera_engine_softmax_rows(const float *x, float *y, long rows, int n, int isa) {
    if (isa_avx512(isa)) softmax_avx512(x, y, rows, n);
    else if (isa_avx2(isa)) softmax_avx2(x, y, rows, n);
    else softmax_portable(x, y, rows, n);
}
