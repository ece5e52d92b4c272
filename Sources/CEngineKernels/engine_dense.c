/*
 * Dense convolution (see tessera_engine_kernels.h): im2col panels of 48 columns or phase-split
 * padded rows times weights packed in blocks of 8 output channels, an 8x48 AVX-512 register
 * tile, bias + residual + clamp fused; the same tile serves the pointwise convolution and the
 * Winograd transform-domain GEMMs. Each entry point has an AVX-512 build, an AVX2 + FMA build (the
 * 8x48 tile as 4x24 register sub-tiles) and a portable one.
 */
#include "engine_internal.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

#define MR 8
#define NR 48

long tessera_engine_conv_packed_count(int cout, int k) { return (long)((cout + MR - 1) / MR) * MR * k; }

void tessera_engine_conv_pack(const float *w, int cout, int k, float *packed) {
    const int blocks = (cout + MR - 1) / MR;
    for (int b = 0; b < blocks; b++)
        for (int p = 0; p < k; p++)
            for (int r = 0; r < MR; r++) {
                const int o = b * MR + r;
                packed[((long)b * k + p) * MR + r] = o < cout ? w[(long)o * k + p] : 0;
            }
}

/* Lanes of the 16-column group starting at `first` that hold one of a tile's `cols` columns. */
static inline __mmask16 col_mask(int cols, int first) {
    const int n = cols - first;
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* The 8-row register tile over NV = 1..3 vectors of 16 columns: one compile-time variant per
   width, so a last tile of <= 16 or <= 32 columns does not pay for three vectors of FMAs.
   Named accumulators and constant row indices throughout: with a `c[MR][3]` array indexed by
   the run-time row count in the epilogue, clang kept the array on the stack and stored all 24
   accumulators every k step (pointwise 320 -> 1280: 69 -> ~220 GFLOP/s). */
#define TILE_ACCS __m512 c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32, \
                         c40, c41, c42, c50, c51, c52, c60, c61, c62, c70, c71, c72;
#define TILE_FMA(R) { const __m512 av = _mm512_set1_ps(a[R]); \
        c##R##0 = _mm512_fmadd_ps(av, b0, c##R##0); \
        if (NV > 1) c##R##1 = _mm512_fmadd_ps(av, b1, c##R##1); \
        if (NV > 2) c##R##2 = _mm512_fmadd_ps(av, b2, c##R##2); }
#define TILE_LOADB(PTR) \
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, (PTR)); \
        const __m512 b1 = NV > 1 ? _mm512_maskz_loadu_ps(m1, (PTR) + 16) : _mm512_setzero_ps(); \
        const __m512 b2 = NV > 2 ? _mm512_maskz_loadu_ps(m2, (PTR) + 32) : _mm512_setzero_ps();

/* MODE 0: y = A x B (the transform-domain GEMMs of Winograd); MODE 1: y = clamp(bias + A x B
   (+ residual), lo, hi); MODE 2: y = bias + A x B (the phase-plane conv's tile buffer); MODE 3:
   y += A x B (k in passes); in the AVX2 tile also MODE 4: y = clamp(y + A x B (+ residual)).
   B row p is b + p * ldb, or with OFFS b + off[p] (phase planes). */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2"))) void
tile_nv(const int NV, const int MODE, const int OFFS, const float *a, const float *b, const int *off, int k,
        long ldb, int cols, const float *bias, int rows, const float *residual, long ldy, float lo, float hi, float *y) {
    const __mmask16 m0 = col_mask(cols, 0), m1 = col_mask(cols, 16), m2 = col_mask(cols, 32);
    TILE_ACCS
#define INIT(R) if (MODE == 3) { \
        const float *yr = y + R * ldy; \
        c##R##0 = R < rows ? _mm512_maskz_loadu_ps(m0, yr) : _mm512_setzero_ps(); \
        c##R##1 = NV > 1 && R < rows ? _mm512_maskz_loadu_ps(m1, yr + 16) : _mm512_setzero_ps(); \
        c##R##2 = NV > 2 && R < rows ? _mm512_maskz_loadu_ps(m2, yr + 32) : _mm512_setzero_ps(); \
    } else { const __m512 bv = MODE && R < rows ? _mm512_set1_ps(bias[R]) : _mm512_setzero_ps(); \
        c##R##0 = bv; c##R##1 = bv; c##R##2 = bv; }
    INIT(0) INIT(1) INIT(2) INIT(3) INIT(4) INIT(5) INIT(6) INIT(7)
#undef INIT
    for (int p = 0; p < k; p++) {
        const float *bp = OFFS ? b + off[p] : b + p * ldb;
        TILE_LOADB(bp)
        TILE_FMA(0) TILE_FMA(1) TILE_FMA(2) TILE_FMA(3) TILE_FMA(4) TILE_FMA(5) TILE_FMA(6) TILE_FMA(7)
        a += MR;
    }
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
#define EPI(V) (MODE == 1 ? _mm512_min_ps(_mm512_max_ps((V), vlo), vhi) : (V))
#define STORE(R) if (R < rows) { \
        float *yr = y + R * ldy; \
        __m512 v0 = c##R##0, v1 = c##R##1, v2 = c##R##2; \
        if (MODE == 1 && residual) { \
            const float *rr = residual + R * ldy; \
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, rr)); \
            if (NV > 1) v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, rr + 16)); \
            if (NV > 2) v2 = _mm512_add_ps(v2, _mm512_maskz_loadu_ps(m2, rr + 32)); \
        } \
        _mm512_mask_storeu_ps(yr, m0, EPI(v0)); \
        if (NV > 1) _mm512_mask_storeu_ps(yr + 16, m1, EPI(v1)); \
        if (NV > 2) _mm512_mask_storeu_ps(yr + 32, m2, EPI(v2)); }
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
#undef STORE
#undef EPI
}

/* One compiled variant per (width, mode). */
#define TILE_VARIANT(NAME, NV, MODE, OFFS) \
AVX512 static void NAME(const float *a, const float *b, const int *off, int k, long ldb, int cols, const float *bias, \
                        int rows, const float *residual, long ldy, float lo, float hi, float *y) { \
    tile_nv(NV, MODE, OFFS, a, b, off, k, ldb, cols, bias, rows, residual, ldy, lo, hi, y); \
}
TILE_VARIANT(tile1_plain, 1, 0, 0)
TILE_VARIANT(tile2_plain, 2, 0, 0)
TILE_VARIANT(tile3_plain, 3, 0, 0)
TILE_VARIANT(tile1_fused, 1, 1, 0)
TILE_VARIANT(tile2_fused, 2, 1, 0)
TILE_VARIANT(tile3_fused, 3, 1, 0)
TILE_VARIANT(tile1_bias, 1, 2, 0)
TILE_VARIANT(tile2_bias, 2, 2, 0)
TILE_VARIANT(tile3_bias, 3, 2, 0)
TILE_VARIANT(tile1_accum, 1, 3, 0)
TILE_VARIANT(tile2_accum, 2, 3, 0)
TILE_VARIANT(tile3_accum, 3, 3, 0)
TILE_VARIANT(tile1_phase, 1, 2, 1)
TILE_VARIANT(tile2_phase, 2, 2, 1)
TILE_VARIANT(tile3_phase, 3, 2, 1)
#undef TILE_VARIANT
#define TILE_BY_WIDTH(KIND, ...) \
    (cols <= 16 ? tile1_##KIND(__VA_ARGS__) : cols <= 32 ? tile2_##KIND(__VA_ARGS__) : tile3_##KIND(__VA_ARGS__))

/* y[0..rows) x [0..cols) = clamp(bias + A (8 packed rows) x B (rows b + p * ldb) (+ residual)). */
AVX512 static void conv_tile_avx512(const float *a, const float *b, int k, long ldb, int cols,
                                    const float *bias, int rows, const float *residual, long ldy,
                                    float lo, float hi, float *y) {
    TILE_BY_WIDTH(fused, a, b, NULL, k, ldb, cols, bias, rows, residual, ldy, lo, hi, y);
}

/* C[0..rows) x [0..cols) = A (8 packed rows) x B (rows b + p * ldb), row stride ldc. */
AVX512 static void gemm_tile_avx512(const float *a, const float *b, long ldb, int k, int cols, int rows,
                                    float *c, long ldc) {
    TILE_BY_WIDTH(plain, a, b, NULL, k, ldb, cols, NULL, rows, NULL, ldc, 0, 0, c);
}

/* tile[r * NR + q] = bias + A x B over a phase-split padded input: B row p is xb + off[p] + q. */
AVX512 static void phase_tile_avx512(const float *a, const float *xb, const int *off, int k, int cols,
                                     const float *bias, int rows, float *tile) {
    TILE_BY_WIDTH(phase, a, xb, off, k, 0, cols, bias, rows, NULL, NR, 0, 0, tile);
}

/* ---------- AVX2 + FMA register tile ----------
   The 8-row block as two 4-row halves over column groups of 24 (three 8-float vectors): 12
   accumulators, 3 B vectors and 1 broadcast fill the 16 ymm registers. MODE and OFFS as in
   tile_nv; LF: the group's last vector is full (otherwise it is loaded and stored masked, so
   nothing past `cols` is read from B or written to y). */
#define AVX2_TILE_ACCS __m256 c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;
static inline __attribute__((always_inline, target("avx2,fma"))) void
tile_avx2_nv(const int NV, const int LF, const int MODE, const int OFFS, const float *a, const float *b, const int *off,
             int k, long ldb, int cols, const float *bias, int rows, const float *residual, long ldy, float lo, float hi,
             float *y) {
    const int valid = cols - 8 * (NV - 1);
    const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    AVX2_TILE_ACCS
#define LOADV(V, PTR) (NV > V ? (NV - 1 == V && !LF ? _mm256_maskload_ps((PTR) + 8 * V, mk) : _mm256_loadu_ps((PTR) + 8 * V)) \
                              : _mm256_setzero_ps())
#define INIT(R) if (MODE >= 3) { \
        if (R < rows) { c##R##0 = LOADV(0, y + R * ldy); c##R##1 = LOADV(1, y + R * ldy); c##R##2 = LOADV(2, y + R * ldy); } \
        else { c##R##0 = _mm256_setzero_ps(); c##R##1 = c##R##0; c##R##2 = c##R##0; } \
    } else { const __m256 bv = MODE && R < rows ? _mm256_set1_ps(bias[R]) : _mm256_setzero_ps(); \
        c##R##0 = bv; c##R##1 = bv; c##R##2 = bv; }
    INIT(0) INIT(1) INIT(2) INIT(3)
#undef INIT
#if defined(__x86_64__)
    if (NV == 3 && LF && k > 0) {
        /* The full 4 x 24 tile's k loop in assembly: clang's register allocation of the C loop
           spilled an accumulator every k step (a store-reload on its FMA chain: half speed). */
#define ROW(R) "vbroadcastss " #R "*4(%[a]), %%ymm15\n\t" \
        "vfmadd231ps %%ymm12, %%ymm15, %[c" #R "0]\n\t" \
        "vfmadd231ps %%ymm13, %%ymm15, %[c" #R "1]\n\t" \
        "vfmadd231ps %%ymm14, %%ymm15, %[c" #R "2]\n\t"
#define ACC_OPERANDS [c00] "+x"(c00), [c01] "+x"(c01), [c02] "+x"(c02), [c10] "+x"(c10), [c11] "+x"(c11), \
        [c12] "+x"(c12), [c20] "+x"(c20), [c21] "+x"(c21), [c22] "+x"(c22), [c30] "+x"(c30), [c31] "+x"(c31), \
        [c32] "+x"(c32)
#define LOADB(M0, M1, M2) "vmovups " M0 ", %%ymm12\n\t" "vmovups " M1 ", %%ymm13\n\t" "vmovups " M2 ", %%ymm14\n\t"
#define NEXT_K "addq $32, %[a]\n\t" "decq %[n]\n\t" "jnz 1b\n\t"
        long n = k;
        if (OFFS) {
            const int *o = off;
            __asm__ volatile(
                "1:\n\t"
                "movslq (%[o]), %%rax\n\t"
                LOADB("(%[b],%%rax,4)", "32(%[b],%%rax,4)", "64(%[b],%%rax,4)")
                ROW(0) ROW(1) ROW(2) ROW(3)
                "addq $4, %[o]\n\t"
                NEXT_K
                : [a] "+r"(a), [o] "+r"(o), [n] "+r"(n), ACC_OPERANDS
                : [b] "r"(b)
                : "rax", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
        } else {
            const float *bp = b;
            const long stride = ldb * 4;
            __asm__ volatile(
                "1:\n\t"
                LOADB("(%[bp])", "32(%[bp])", "64(%[bp])")
                ROW(0) ROW(1) ROW(2) ROW(3)
                "addq %[stride], %[bp]\n\t"
                NEXT_K
                : [a] "+r"(a), [bp] "+r"(bp), [n] "+r"(n), ACC_OPERANDS
                : [stride] "r"(stride)
                : "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
        }
#undef NEXT_K
#undef LOADB
#undef ACC_OPERANDS
#undef ROW
        k = 0;
    }
#endif
    for (int p = 0; p < k; p++) {
        const float *bp = OFFS ? b + off[p] : b + p * ldb;
        const __m256 b0 = LOADV(0, bp), b1 = LOADV(1, bp), b2 = LOADV(2, bp);
#define FMA(R) { const __m256 av = _mm256_broadcast_ss(a + R); \
        c##R##0 = _mm256_fmadd_ps(av, b0, c##R##0); \
        if (NV > 1) c##R##1 = _mm256_fmadd_ps(av, b1, c##R##1); \
        if (NV > 2) c##R##2 = _mm256_fmadd_ps(av, b2, c##R##2); }
        FMA(0) FMA(1) FMA(2) FMA(3)
#undef FMA
        a += MR;
    }
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
#define EPI(V) (MODE == 1 || MODE == 4 ? _mm256_min_ps(_mm256_max_ps((V), vlo), vhi) : (V))
#define PUT(V, PTR, X) { if (NV - 1 == V && !LF) _mm256_maskstore_ps((PTR) + 8 * V, mk, (X)); \
                         else _mm256_storeu_ps((PTR) + 8 * V, (X)); }
#define STORE(R) if (R < rows) { \
        float *yr = y + R * ldy; \
        __m256 v0 = c##R##0, v1 = c##R##1, v2 = c##R##2; \
        if ((MODE == 1 || MODE == 4) && residual) { \
            const float *rr = residual + R * ldy; \
            v0 = _mm256_add_ps(v0, LOADV(0, rr)); \
            if (NV > 1) v1 = _mm256_add_ps(v1, LOADV(1, rr)); \
            if (NV > 2) v2 = _mm256_add_ps(v2, LOADV(2, rr)); \
        } \
        PUT(0, yr, EPI(v0)) \
        if (NV > 1) PUT(1, yr, EPI(v1)) \
        if (NV > 2) PUT(2, yr, EPI(v2)) }
    STORE(0) STORE(1) STORE(2) STORE(3)
#undef STORE
#undef PUT
#undef EPI
#undef LOADV
}

typedef void (*tile_avx2_fn)(const float *, const float *, const int *, int, long, int, const float *, int,
                             const float *, long, float, float, float *);
#define TILE2_VARIANT(NAME, NV, LF, MODE, OFFS) \
AVX2 static void NAME(const float *a, const float *b, const int *off, int k, long ldb, int cols, const float *bias, \
                      int rows, const float *residual, long ldy, float lo, float hi, float *y) { \
    tile_avx2_nv(NV, LF, MODE, OFFS, a, b, off, k, ldb, cols, bias, rows, residual, ldy, lo, hi, y); \
}
#define TILE2_MODE(KIND, MODE, OFFS) \
    TILE2_VARIANT(t2_##KIND##_1p, 1, 0, MODE, OFFS) TILE2_VARIANT(t2_##KIND##_1f, 1, 1, MODE, OFFS) \
    TILE2_VARIANT(t2_##KIND##_2p, 2, 0, MODE, OFFS) TILE2_VARIANT(t2_##KIND##_2f, 2, 1, MODE, OFFS) \
    TILE2_VARIANT(t2_##KIND##_3p, 3, 0, MODE, OFFS) TILE2_VARIANT(t2_##KIND##_3f, 3, 1, MODE, OFFS) \
    static const tile_avx2_fn t2_##KIND[6] = { t2_##KIND##_1p, t2_##KIND##_1f, t2_##KIND##_2p, t2_##KIND##_2f, \
                                               t2_##KIND##_3p, t2_##KIND##_3f };
TILE2_MODE(plain, 0, 0)
TILE2_MODE(fused, 1, 0)
TILE2_MODE(phase, 2, 1)
TILE2_MODE(first, 2, 0)
TILE2_MODE(accum, 3, 0)
TILE2_MODE(last, 4, 0)
#undef TILE2_MODE
#undef TILE2_VARIANT

/* The 8 x 48 tile (as tile_nv) from 4 x 24 AVX2 sub-tiles; `a` is the block's packed weights. */
static void tile_avx2(const tile_avx2_fn *fns, const float *a, const float *b, const int *off, int k, long ldb, int cols,
                      const float *bias, int rows, const float *residual, long ldy, float lo, float hi, float *y) {
    for (int g = 0; g < cols; g += 24) {
        const int gc = cols - g < 24 ? cols - g : 24;
        const tile_avx2_fn fn = fns[2 * ((gc + 7) / 8 - 1) + (gc % 8 == 0)];
        for (int h = 0; h < rows; h += 4) {
            const int hr = rows - h < 4 ? rows - h : 4;
            fn(a + h, b + g, off, k, ldb, gc, bias ? bias + h : NULL, hr, residual ? residual + h * ldy + g : NULL,
               ldy, lo, hi, y + h * ldy + g);
        }
    }
}

ALWAYS_INLINE void conv_tile_body(const float *a, const float *b, int k, int ldb, int cols,
                                  const float *bias, int rows, const float *residual, long ldy,
                                  float lo, float hi, float *y) {
    float c[MR][NR];
    for (int r = 0; r < MR; r++) for (int j = 0; j < NR; j++) c[r][j] = r < rows ? bias[r] : 0;
    for (int p = 0; p < k; p++) {
        for (int r = 0; r < MR; r++) {
            const float av = a[r];
            for (int j = 0; j < cols; j++) c[r][j] += av * b[j];
        }
        a += MR;
        b += ldb;
    }
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < cols; j++) {
            float v = c[r][j];
            if (residual) v += residual[r * ldy + j];
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
            y[r * ldy + j] = v;
        }
    }
}

static void conv_tile_portable(const float *a, const float *b, int k, int ldb, int cols, const float *bias, int rows,
                               const float *residual, long ldy, float lo, float hi, float *y) {
    conv_tile_body(a, b, k, ldb, cols, bias, rows, residual, ldy, lo, hi, y);
}
static void conv_tile_avx2(const float *a, const float *b, int k, int ldb, int cols, const float *bias, int rows,
                           const float *residual, long ldy, float lo, float hi, float *y) {
    tile_avx2(t2_fused, a, b, NULL, k, ldb, cols, bias, rows, residual, ldy, lo, hi, y);
}
/* The C tile at the level's build (below AVX-512). */
static void conv_tile_c(int isa, const float *a, const float *b, int k, int ldb, int cols, const float *bias, int rows,
                        const float *residual, long ldy, float lo, float hi, float *y) {
    if (isa_avx2(isa)) conv_tile_avx2(a, b, k, ldb, cols, bias, rows, residual, ldy, lo, hi, y);
    else conv_tile_portable(a, b, k, ldb, cols, bias, rows, residual, ldy, lo, hi, y);
}

static void tiles_blocked(int isa, const float *packed, int k, const float *xb, const int *off, int cols,
                          int m0, int m1, const float *bias, float *tiles);
AVX512 static void store_run_avx512(const float *v, int n, const float *res, float lo, float hi, float *y);

/* Taps whose gather masks fit on the stack in im2col_gather_avx512 (7x7 kernels need 49). */
#define GATHER_MAX_TAPS 64

/* Dense im2col panel [k][NR] of output columns [n0, n0 + cols) by masked gathers straight from
   the channel-major input: every column is a real output (no padding / row-junk columns), so
   small maps (7x7, 4x4) and strided convs fill the whole 8 x 48 tile. */
AVX512 static void im2col_gather_avx512(const float *x, int nb, int cin, int h, int w, int kh, int kw,
                                        int sh, int sw, int dh, int dw, int pt, int pl, int oh, int ow,
                                        long n0, int cols, float *col) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    const int taps = kh * kw;
    int base[NR], iy0[NR], ix0[NR];
    for (int j = 0; j < NR; j++) {
        const long n = n0 + (j < cols ? j : 0);
        const long b = n / ohw, rem = n - b * ohw;
        const int oy = (int)(rem / ow), ox = (int)(rem - (long)oy * ow);
        iy0[j] = oy * sh - pt;
        ix0[j] = ox * sw - pl;
        base[j] = (int)(b * hw) + iy0[j] * w + ix0[j];
    }
    __m512i idx[GATHER_MAX_TAPS][3];
    __mmask16 msk[GATHER_MAX_TAPS][3];
    for (int v = 0; v < 3; v++) {
        const int valid = cols - 16 * v;
        const __mmask16 cm = valid >= 16 ? (__mmask16)0xFFFF : valid <= 0 ? 0 : (__mmask16)((1u << valid) - 1);
        const __m512i vb = _mm512_loadu_si512(base + 16 * v);
        const __m512i vy = _mm512_loadu_si512(iy0 + 16 * v);
        const __m512i vx = _mm512_loadu_si512(ix0 + 16 * v);
        for (int ky = 0; ky < kh; ky++) {
            const __m512i iy = _mm512_add_epi32(vy, _mm512_set1_epi32(ky * dh));
            const __mmask16 my = _mm512_cmpge_epi32_mask(iy, _mm512_setzero_si512())
                               & _mm512_cmplt_epi32_mask(iy, _mm512_set1_epi32(h));
            for (int kx = 0; kx < kw; kx++) {
                const __m512i ix = _mm512_add_epi32(vx, _mm512_set1_epi32(kx * dw));
                const __mmask16 mx = _mm512_cmpge_epi32_mask(ix, _mm512_setzero_si512())
                                   & _mm512_cmplt_epi32_mask(ix, _mm512_set1_epi32(w));
                const int t = ky * kw + kx;
                msk[t][v] = cm & my & mx;
                idx[t][v] = _mm512_add_epi32(vb, _mm512_set1_epi32(ky * dh * w + kx * dw));
            }
        }
    }
    const __m512 z = _mm512_setzero_ps();
    for (int ci = 0; ci < cin; ci++) {
        const float *src = x + (long)ci * nb * hw;
        float *d = col + (long)ci * taps * NR;
        for (int t = 0; t < taps; t++, d += NR) {
            _mm512_store_ps(d, _mm512_mask_i32gather_ps(z, msk[t][0], idx[t][0], src, 4));
            _mm512_store_ps(d + 16, _mm512_mask_i32gather_ps(z, msk[t][1], idx[t][1], src, 4));
            _mm512_store_ps(d + 32, _mm512_mask_i32gather_ps(z, msk[t][2], idx[t][2], src, 4));
        }
    }
}

static int gather_ok(int isa, int nb, int h, int w, int kh, int kw) {
    return isa_avx512(isa) && kh * kw <= GATHER_MAX_TAPS && (long)nb * h * w < (1L << 30);
}

/* The lines of the next `cols` (<= 48) columns of `rows` channel rows (output for writing,
   residual for reading): a tile visits every output channel before it comes back to a row, so
   each of those lines would otherwise be a demand miss (AVX2, 64 -> 256 + residual at 56 x 56:
   8.1 -> 5.6 ms per 4 images; AVX-512 4.1 -> 2.65, ResNet-50 163 -> 145-150 ms per 4 images). */
static inline void prefetch_next_columns(float *y, const float *res, int rows, long ld, int cols) {
    for (int r = 0; r < rows; r++) {
        const float *yr = y + r * ld, *rr = res ? res + r * ld : NULL;
        for (int c = 0; c < cols; c += 16) {
            __builtin_prefetch(yr + c, 1, 2);
            if (rr) __builtin_prefetch(rr + c, 0, 2);
        }
        __builtin_prefetch(yr + cols - 1, 1, 2);
        if (rr) __builtin_prefetch(rr + cols - 1, 0, 2);
    }
}

/* Columns of the tile after the one at q0 in [.., n1) (0: none). */
static inline int next_cols(long q0, long n1) {
    const long left = n1 - (q0 + NR);
    return left <= 0 ? 0 : left < NR ? (int)left : NR;
}

/* The tile variant for the k pass [k0, k0 + kn) of k: the only pass fuses everything, the first
   adds the bias, the middle ones accumulate, the last adds the residual and clamps. */
static inline const tile_avx2_fn *pass_fns(int k0, int kn, int k) {
    return k0 == 0 ? (kn == k ? t2_fused : t2_first) : k0 + kn == k ? t2_last : t2_accum;
}

/* The AVX2 tiles of output channels [m0, m1) over one panel (B row p at b + p * ldb, `cols` columns)
   with k in passes of 128: each [128][48] slice of the panel stays in L1 while every block of
   8 output channels reads it; the first pass adds the bias, the last the residual and the clamp. */
static void avx2_tiles_in_k_passes(const float *packed, int k, const float *b, long ldb, int cols, int m0, int m1,
                                   const float *bias, const float *residual, long total, float lo, float hi, float *y,
                                   int nextCols) {
    const int kc = 128;
    for (int k0 = 0; k0 < k; k0 += kc) {
        const int kn = k - k0 < kc ? k - k0 : kc;
        const tile_avx2_fn *fns = pass_fns(k0, kn, k);
        for (int mb = m0 / MR; mb * MR < m1; mb++) {
            const int o0 = mb * MR;
            const int rows = m1 - o0 < MR ? m1 - o0 : MR;
            const float *a = packed + (long)mb * k * MR + (long)k0 * MR;
            tile_avx2(fns, a, b + (long)k0 * ldb, NULL, kn, ldb, cols, bias + o0, rows,
                      residual ? residual + (long)o0 * total : NULL, total, lo, hi, y + (long)o0 * total);
            if (nextCols > 0 && k0 == 0)
                prefetch_next_columns(y + (long)o0 * total + NR, residual ? residual + (long)o0 * total + NR : NULL, rows,
                                      total, nextCols);
        }
    }
}

/* AVX2, k > 192: k in passes of whole input channels (~128 rows). Columns go in chunks of up to
   480 whose pass slice (<= 64K floats) stays in L2; within a pass each 48-column slice of it
   (~24 KB) stays in L1 while every 8-channel block reads it, and the pass's weights come from L2,
   so the weights are read from memory once per chunk, not once per 48 columns (a 128 -> 128 5x5
   at 7 x 7 has 1.6 MB of them, ResNet-50's 512 3x3/2 9.4 MB). The first pass adds the bias, the
   last the residual and the clamp. */
static void avx2_panels_in_k_passes(const float *x, int nb, int cin, int h, int w, int kh, int kw, int sh, int sw,
                                    int dh, int dw, int pt, int pl, int oh, int ow, const float *packed,
                                    const float *bias, const float *residual, float lo, float hi,
                                    long n0, long n1, int m0, int m1, float *y) {
    const int taps = kh * kw, k = cin * taps, cpp = taps >= 128 ? 1 : 128 / taps;
    const long total = (long)nb * oh * ow;
    int chunk = (65536 / (cpp * taps)) / NR * NR;
    if (chunk < NR) chunk = NR;
    if (chunk > 10 * NR) chunk = 10 * NR;
    float *col = scratch(0, (size_t)cpp * taps * chunk + 16);
    if (!col) abort();
    for (long n = n0; n < n1; n += chunk) {
        const int cols = n1 - n < chunk ? (int)(n1 - n) : chunk;
        for (int c0 = 0; c0 < cin; c0 += cpp) {
            const int cg = cin - c0 < cpp ? cin - c0 : cpp;
            const int k0 = c0 * taps, kn = cg * taps;
            tessera_engine_im2col(x, nb, c0, cg, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, n, cols, col);
            const tile_avx2_fn *fns = pass_fns(k0, kn, k);
            for (int t = 0; t < cols; t += NR) {
                const int tc = cols - t < NR ? cols - t : NR;
                const long q = n + t;
                for (int mb = m0 / MR; mb * MR < m1; mb++) {
                    const int o0 = mb * MR;
                    const int rows = m1 - o0 < MR ? m1 - o0 : MR;
                    const float *a = packed + (long)mb * k * MR + (long)k0 * MR;
                    tile_avx2(fns, a, col + t, NULL, kn, cols, tc, bias + o0, rows,
                              residual ? residual + (long)o0 * total + q : NULL, total, lo, hi, y + (long)o0 * total + q);
                }
            }
        }
    }
}

static void conv_im2col(int isa, const float *x, int nb, int cin, int h, int w, int kh, int kw, int sh, int sw,
                        int dh, int dw, int pt, int pl, int oh, int ow, int cout, const float *packed,
                        const float *bias, const float *residual, float lo, float hi,
                        long n0, long n1, int m0, int m1, float *y) {
    const int k = cin * kh * kw;
    const long total = (long)nb * oh * ow;
    const int avx = isa_avx512(isa);
    const int gather = gather_ok(isa, nb, h, w, kh, kw);
    if (!gather && !avx && isa_avx2(isa) && k > 192) {
        avx2_panels_in_k_passes(x, nb, cin, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, packed, bias, residual,
                                lo, hi, n0, n1, m0, m1, y);
        return;
    }
    float *col = scratch(0, (size_t)k * NR + 16);
    float *tile = scratch(1, (size_t)((m1 - m0 / MR * MR + MR - 1) / MR) * MR * NR);
    int *off = gather ? (int *)scratch(2, (size_t)k) : NULL;
    if (!col || !tile || (gather && !off)) abort();
    if (gather) for (int p = 0; p < k; p++) off[p] = p * NR;
    for (long n = n0; n < n1; n += NR) {
        const int cols = n1 - n < NR ? (int)(n1 - n) : NR;
        const int ldb = gather ? NR : cols;
        if (gather) {
            im2col_gather_avx512(x, nb, cin, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, n, cols, col);
            tiles_blocked(isa, packed, k, col, off, cols, m0, m1, bias, tile);
            for (int o = m0; o < m1; o++)
                store_run_avx512(tile + (long)(o - m0 / MR * MR) * NR, cols,
                                 residual ? residual + o * total + n : NULL, lo, hi, y + o * total + n);
            continue;
        }
        tessera_engine_im2col(x, nb, 0, cin, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, n, cols, col);
        for (int mb = m0 / MR; mb * MR < m1; mb++) {
            const int o0 = mb * MR;
            const int rows = m1 - o0 < MR ? m1 - o0 : MR;
            const float *a = packed + (long)mb * k * MR;
            const float *res = residual ? residual + o0 * total + n : NULL;
            if (avx) conv_tile_avx512(a, col, k, ldb, cols, bias + o0, rows, res, total, lo, hi, y + o0 * total + n);
            else conv_tile_c(isa, a, col, k, ldb, cols, bias + o0, rows, res, total, lo, hi, y + o0 * total + n);
        }
    }
}

/* `gather_cost`: relative cost, in 8x48-tile k-steps, of gathering one k-row of a dense panel
   (the engine's default 4; <= 0 disables the dense-panel path). Measured on
   this Zen 5 host (cpu-time per layer, batch 16): 256->512 3x3/2 at 7x7 16.5 -> 10.0 ms,
   128->256 3x3/2 at 14x14 13.4 -> 11.2, 512->512 3x3 at 7x7 31.8 -> 23.0, 256->256 3x3 at 6x6
   4.2 -> 3.2, 128->128 3x3 at 12x12 4.5 -> 4.0; 64->128 3x3/2 at 28x28 13.0 -> 15.2 (stays on
   phase planes with this cost). */

/* Whether rows [r0, r1) of a dilation-1 conv run faster on dense gathered panels than on the
   phase planes, whose 48-column tiles also cover the padding columns of each row and the
   rounding of each band (a 7x7 map uses 49 of 96 columns). */
static int prefer_dense(int path, double g, int cin, int kh, int kw, int sh, int sw, int oh, int ow, int nb, long r0, long r1, int m0, int m1) {
    if (path) return path == 2;
    if (g <= 0 || r1 <= r0) return 0;
    const int wq = ow + (kw - 1) / sw, ex = (kh - 1) / sh;
    const int ny = sh < kh ? sh : kh, nx = sw < kw ? sw : kw;
    const long phases = (long)cin * ny * nx;
    int R = (int)(65536 / (phases * wq)) - ex;
    if (R < 1) R = 1;
    if (R > oh) R = oh;
    long tilesImg = 0;
    for (int oy = 0; oy < oh; oy += R) {
        const int nr = oh - oy < R ? oh - oy : R;
        tilesImg += ((long)nr * wq - (wq - ow) + NR - 1) / NR;
    }
    const double imgs = (double)(r1 - r0) / oh;
    const double phaseTiles = tilesImg * imgs;
    const double denseTiles = ((r1 - r0) * (double)ow + NR - 1) / NR;
    const double blocks = (m1 - m0 + MR - 1) / MR;
    (void)nb;
    return denseTiles * (blocks + g) < phaseTiles * blocks;
}

void tessera_engine_sgemm_packed(int isa, const float *packed, int m, int k, const float *b, long ldb, int n,
                                 float *c, long ldc) {
    if (m <= 0 || n <= 0) return;
    const int avx = isa_avx512(isa);
    for (int q0 = 0; q0 < n; q0 += NR) {
        const int cols = n - q0 < NR ? n - q0 : NR;
        for (int mb = 0; mb * MR < m; mb++) {
            const int rows = m - mb * MR < MR ? m - mb * MR : MR;
            const float *a = packed + (long)mb * k * MR;
            float *cb = c + (long)mb * MR * ldc + q0;
            if (avx) { gemm_tile_avx512(a, b + q0, ldb, k, cols, rows, cb, ldc); continue; }
            if (isa_avx2(isa)) { tile_avx2(t2_plain, a, b + q0, NULL, k, ldb, cols, NULL, rows, NULL, ldc, 0, 0, cb); continue; }
            static const float zero[MR] = {0};
            conv_tile_c(isa, a, b + q0, k, (int)ldb, cols, zero, rows, NULL, ldc, -INFINITY, INFINITY, cb);
        }
    }
}

void tessera_engine_matmul(int isa, const float *a, int m, int k, const float *b, int n, float *c) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { memset(c, 0, sizeof(float) * (size_t)m * n); return; }
    float *pa = tessera_scratch(0, (size_t)tessera_engine_conv_packed_count(m, k));
    if (!pa) abort();
    tessera_engine_conv_pack(a, m, k, pa);
    tessera_engine_sgemm_packed(isa, pa, m, k, b, n, n, c, n);
}

long tessera_engine_gemm_panels_count(int n, int k) { return (long)((n + NR - 1) / NR) * k * NR; }

void tessera_engine_gemm_pack_panels(const float *w, int n, int k, float *panels) {
    for (int q = 0; q * NR < n; q++)
        for (int p = 0; p < k; p++)
            for (int j = 0; j < NR; j++) {
                const int col = q * NR + j;
                panels[((long)q * k + p) * NR + j] = col < n ? w[(long)col * k + p] : 0;
            }
}

void tessera_engine_gemm_rows(int isa, const float *x, int m, int k, const float *panels, int n, int q0, int q1,
                              const float *bias, float *y) {
    if (m <= 0 || q1 <= q0) return;
    if (q0 % NR) abort(); /* panels start every 48 columns */
    float *a = tessera_scratch(0, (size_t)tessera_engine_conv_packed_count(m, k));
    if (!a) abort();
    tessera_engine_conv_pack(x, m, k, a);
    /* One 48-column panel (k x 48, in L2) at a time across every 8-row block of x. */
    for (int c0 = q0; c0 < q1; c0 += NR) {
        const int cols = q1 - c0 < NR ? q1 - c0 : NR;
        tessera_engine_sgemm_packed(isa, a, m, k, panels + (long)(c0 / NR) * k * NR, NR, cols, y + c0, n);
        if (!bias) continue;
        for (int r = 0; r < m; r++) {
            float *yr = y + (long)r * n + c0;
            for (int j = 0; j < cols; j++) yr[j] += bias[c0 + j];
        }
    }
}

ALWAYS_INLINE void phase_tile_body(const float *a, const float *xb, const int *off, int k, int cols,
                                   const float *bias, int rows, float *tile) {
    for (int r = 0; r < MR; r++) for (int j = 0; j < NR; j++) tile[r * NR + j] = r < rows ? bias[r] : 0;
    for (int p = 0; p < k; p++) {
        const float *b = xb + off[p];
        for (int r = 0; r < MR; r++) {
            const float av = a[r];
            for (int j = 0; j < cols; j++) tile[r * NR + j] += av * b[j];
        }
        a += MR;
    }
}

/* tiles[(mb - m0 / MR) * MR * NR ...] = bias + A x B for the 8-channel blocks of [m0, m1) over
   the 48 columns whose B row p is xb + off[p]. (Cutting k into L1-sized passes was tried: slower.) */
static void phase_tile_portable(const float *a, const float *xb, const int *off, int k, int cols,
                                const float *bias, int rows, float *tile) {
    phase_tile_body(a, xb, off, k, cols, bias, rows, tile);
}
static void phase_tile_avx2(const float *a, const float *xb, const int *off, int k, int cols,
                            const float *bias, int rows, float *tile) {
    tile_avx2(t2_phase, a, xb, off, k, 0, cols, bias, rows, NULL, NR, 0, 0, tile);
}

static void tiles_blocked(int isa, const float *packed, int k, const float *xb, const int *off, int cols,
                          int m0, int m1, const float *bias, float *tiles) {
    for (int mb = m0 / MR; mb * MR < m1; mb++) {
        const int o0 = mb * MR;
        const int rows = m1 - o0 < MR ? m1 - o0 : MR;
        const float *a = packed + (long)mb * k * MR;
        float *tile = tiles + (long)(mb - m0 / MR) * MR * NR;
        if (isa_avx512(isa)) phase_tile_avx512(a, xb, off, k, cols, bias + o0, rows, tile);
        else if (isa_avx2(isa)) phase_tile_avx2(a, xb, off, k, cols, bias + o0, rows, tile);
        else phase_tile_portable(a, xb, off, k, cols, bias + o0, rows, tile);
    }
}


/* y[t] = clamp(v[t] (+ res[t]), lo, hi) for t < n */
AVX512 static void store_run_avx512(const float *v, int n, const float *res, float lo, float hi, float *y) {
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    for (int t = 0; t < n; t += 16) {
        const __mmask16 m = n - t >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - t)) - 1);
        __m512 a = _mm512_maskz_loadu_ps(m, v + t);
        if (res) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(m, res + t));
        _mm512_mask_storeu_ps(y + t, m, _mm512_min_ps(_mm512_max_ps(a, vlo), vhi));
    }
}

ALWAYS_INLINE void store_run_body(const float *v, int n, const float *res, float lo, float hi, float *y) {
    for (int t = 0; t < n; t++) {
        float a = v[t];
        if (res) a += res[t];
        a = a < lo ? lo : a;
        y[t] = a > hi ? hi : a;
    }
}
static void store_run_portable(const float *v, int n, const float *res, float lo, float hi, float *y) {
    store_run_body(v, n, res, lo, hi, y);
}
AVX2 static void store_run_avx2(const float *v, int n, const float *res, float lo, float hi, float *y) {
    store_run_body(v, n, res, lo, hi, y);
}

/* Output positions o in [0, on) whose tap at offset t * d reads inside [0, n): o * s - p + t * d in
   [0, n), as [*lo, *hi). */
static void tap_span(int on, int s, int p, int d, int t, int n, int *lo, int *hi) {
    const long a = (long)p - (long)t * d;              /* o * s >= a */
    const long b = (long)n - 1 + p - (long)t * d;      /* o * s <= b */
    long l = a <= 0 ? 0 : (a + s - 1) / s;
    long h = b < 0 ? 0 : b / s + 1;
    if (l > on) l = on;
    if (h > on) h = on;
    if (h < l) h = l;
    *lo = (int)l; *hi = (int)h;
}

/* Bands of [0, on) on which every tap's validity is constant: band i is [edge[i], edge[i + 1]),
   and tap t is valid on it when valid[i * taps + t]; returns the number of bands. */
static int tap_bands(int on, int s, int p, int d, int taps, int n, int *edge, unsigned char *valid) {
    int lo[GATHER_MAX_TAPS], hi[GATHER_MAX_TAPS], cut[2 * GATHER_MAX_TAPS + 2], nc = 0;
    cut[nc++] = 0; cut[nc++] = on;
    for (int t = 0; t < taps; t++) {
        tap_span(on, s, p, d, t, n, &lo[t], &hi[t]);
        cut[nc++] = lo[t]; cut[nc++] = hi[t];
    }
    for (int i = 1; i < nc; i++) for (int j = i; j > 0 && cut[j - 1] > cut[j]; j--) { int v = cut[j]; cut[j] = cut[j - 1]; cut[j - 1] = v; }
    int nb = 0;
    for (int i = 0; i + 1 < nc; i++) {
        if (cut[i + 1] == cut[i]) continue;
        edge[nb] = cut[i]; edge[nb + 1] = cut[i + 1];
        for (int t = 0; t < taps; t++) valid[nb * taps + t] = cut[i] >= lo[t] && cut[i] < hi[t];
        nb++;
    }
    return nb;
}

/* The AVX-512 body of tessera_engine_conv_live_taps: output rectangles of constant tap validity
   (row bands x column bands of each image), each in chunks of up to 48 pixels whose panel holds
   only the taps valid there (gathered, tap-major), multiplied by those taps' weights. */
AVX512 static void live_taps_avx512(const float *x, int nb, int cin, int h, int w, int kh, int kw, int sh, int sw,
                                    int dh, int dw, int pt, int pl, int oh, int ow, const float *packed,
                                    const float *bias, const float *residual, float lo, float hi,
                                    long r0, long r1, int m0, int m1, float *y) {
    const int k = cin * kh * kw;
    const long hw = (long)h * w, total = (long)nb * oh * ow;
    const int gather = (long)nb * hw < (1L << 30);
    float *col = scratch(0, (size_t)k * NR + 16);
    float *tiles = scratch(1, (size_t)((m1 - m0 / MR * MR + MR - 1) / MR) * MR * NR);
    if (!col || !tiles) abort();
    int yedge[2 * GATHER_MAX_TAPS + 2], xedge[2 * GATHER_MAX_TAPS + 2];
    unsigned char yvalid[(2 * GATHER_MAX_TAPS + 1) * GATHER_MAX_TAPS], xvalid[(2 * GATHER_MAX_TAPS + 1) * GATHER_MAX_TAPS];
    const int nyb = tap_bands(oh, sh, pt, dh, kh, h, yedge, yvalid);
    int nxb = tap_bands(ow, sw, pl, dw, kw, w, xedge, xvalid);
    /* Column bands cut rows into short runs (narrower tiles, more stores): only where they drop a
       quarter of the taps or more (rate 12 and 24 on 32 columns: 0.75 and 0.5 of them; rate 4:
       0.92, and it ran 15-40% slower on bands); otherwise whole rows with every tap some column reads. */
    long banded = 0, whole = 0;
    unsigned char any[GATHER_MAX_TAPS] = {0};
    for (int i = 0; i < nxb; i++)
        for (int t = 0; t < kw; t++) {
            banded += (long)xvalid[i * kw + t] * (xedge[i + 1] - xedge[i]);
            any[t] |= xvalid[i * kw + t];
        }
    for (int t = 0; t < kw; t++) whole += (long)any[t] * ow;
    if (4 * banded > 3 * whole) {
        nxb = 1; xedge[0] = 0; xedge[1] = ow;
        for (int t = 0; t < kw; t++) xvalid[t] = any[t];
    }
    int live[GATHER_MAX_TAPS], oys[NR], oxs[NR];
    long base[NR];
    for (long b = r0 / oh; b * oh < r1; b++) {
        const long ry0 = r0 - b * oh > 0 ? r0 - b * oh : 0, ry1 = r1 - b * oh < oh ? r1 - b * oh : oh;
        for (int yb = 0; yb < nyb; yb++) {
            const int y0 = yedge[yb] > ry0 ? yedge[yb] : (int)ry0;
            const int y1 = yedge[yb + 1] < ry1 ? yedge[yb + 1] : (int)ry1;
            if (y0 >= y1) continue;
            for (int xb = 0; xb < nxb; xb++) {
                const int x0 = xedge[xb], bw = xedge[xb + 1] - x0;
                int nlive = 0;
                for (int ky = 0; ky < kh; ky++) for (int kx = 0; kx < kw; kx++)
                    if (yvalid[yb * kh + ky] && xvalid[xb * kw + kx]) live[nlive++] = ky * kw + kx;
                const long npx = (long)(y1 - y0) * bw;
                for (long c0 = 0; c0 < npx; c0 += NR) {
                    const int cols = npx - c0 < NR ? (int)(npx - c0) : NR;
                    for (int j = 0; j < NR; j++) {
                        const long q = c0 + (j < cols ? j : 0);
                        oys[j] = y0 + (int)(q / bw);
                        oxs[j] = x0 + (int)(q % bw);
                        base[j] = b * hw + (long)(oys[j] * sh - pt) * w + (oxs[j] * sw - pl);
                    }
                    /* the panel: a live tap is valid for every pixel of a banded rectangle; on whole
                       rows (columns not banded) only for the pixels it reads inside the row */
                    for (int li = 0; li < nlive; li++) {
                        const int ky = live[li] / kw, kx = live[li] % kw;
                        const long shift = (long)ky * dh * w + (long)kx * dw;
                        float *d = col + (long)li * cin * NR;
                        int valid[NR];
                        for (int j = 0; j < NR; j++) {
                            const int iy = oys[j] * sh - pt + ky * dh, ix = oxs[j] * sw - pl + kx * dw;
                            valid[j] = j < cols && iy >= 0 && iy < h && ix >= 0 && ix < w;
                        }
                        if (gather) {
                            __m512i idx[3];
                            __mmask16 msk[3];
                            for (int v = 0; v < 3; v++) {
                                int lanes[16];
                                __mmask16 m = 0;
                                for (int l = 0; l < 16; l++) {
                                    lanes[l] = valid[16 * v + l] ? (int)(base[16 * v + l] + shift) : 0;
                                    if (valid[16 * v + l]) m |= (__mmask16)(1u << l);
                                }
                                idx[v] = _mm512_loadu_si512(lanes);
                                msk[v] = m;
                            }
                            const __m512 z = _mm512_setzero_ps();
                            for (int ci = 0; ci < cin; ci++, d += NR) {
                                const float *src = x + (long)ci * nb * hw;
                                _mm512_store_ps(d, _mm512_mask_i32gather_ps(z, msk[0], idx[0], src, 4));
                                _mm512_store_ps(d + 16, _mm512_mask_i32gather_ps(z, msk[1], idx[1], src, 4));
                                _mm512_store_ps(d + 32, _mm512_mask_i32gather_ps(z, msk[2], idx[2], src, 4));
                            }
                        } else {
                            for (int ci = 0; ci < cin; ci++, d += NR) {
                                const float *src = x + (long)ci * nb * hw;
                                for (int j = 0; j < NR; j++) d[j] = valid[j] ? src[base[j] + shift] : 0;
                            }
                        }
                    }
                    for (int mb = m0 / MR; mb * MR < m1; mb++) {
                        const int o0 = mb * MR;
                        const int rows = m1 - o0 < MR ? m1 - o0 : MR;
                        float *tile = tiles + (long)(mb - m0 / MR) * MR * NR;
                        const float *a = packed + (long)mb * k * MR;
                        /* the first live tap adds the bias (none live: the bias alone), the others accumulate */
                        TILE_BY_WIDTH(bias, a + (long)(nlive ? live[0] : 0) * cin * MR, col, NULL, nlive ? cin : 0, NR, cols,
                                      bias + o0, rows, NULL, NR, 0, 0, tile);
                        for (int li = 1; li < nlive; li++)
                            TILE_BY_WIDTH(accum, a + (long)live[li] * cin * MR, col + (long)li * cin * NR, NULL, cin, NR, cols,
                                          NULL, rows, NULL, NR, 0, 0, tile);
                    }
                    /* runs of the chunk's pixels that are consecutive in the output (whole rows: one run) */
                    for (int j0 = 0; j0 < cols;) {
                        int j1 = j0 + 1;
                        while (j1 < cols && (long)(oys[j1] - oys[j0]) * ow + oxs[j1] - oxs[j0] == j1 - j0) j1++;
                        const long n = (b * oh + oys[j0]) * ow + oxs[j0];
                        for (int o = m0; o < m1; o++)
                            store_run_avx512(tiles + (long)(o - m0 / MR * MR) * NR + j0, j1 - j0,
                                             residual ? residual + o * total + n : NULL, lo, hi, y + o * total + n);
                        j0 = j1;
                    }
                }
            }
        }
    }
}

void tessera_engine_conv_live_taps(int isa, const float *x, int nb, int cin, int h, int w, int kh, int kw, int sh, int sw,
                                   int dh, int dw, int pt, int pl, int oh, int ow, int cout, const float *packed,
                                   const float *bias, const float *residual, float lo, float hi,
                                   long r0, long r1, int m0, int m1, float *y) {
    if (m1 > cout) m1 = cout;
    const int taps = kh * kw;
    /* the compiler packs tap-major only then */
    if (!isa_avx512(isa) || kh > GATHER_MAX_TAPS || kw > GATHER_MAX_TAPS || taps > GATHER_MAX_TAPS) abort();
    live_taps_avx512(x, nb, cin, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, packed, bias, residual, lo, hi,
                     r0, r1, m0, m1, y);
}

void tessera_engine_conv(int isa, int path, double gather_cost, const float *x, int nb, int cin, int h, int w, int kh, int kw, int sh, int sw,
                         int dh, int dw, int pt, int pl, int oh, int ow, int cout, const float *packed,
                         const float *bias, const float *residual, float lo, float hi,
                         long r0, long r1, int m0, int m1, float *y) {
    if (m1 > cout) m1 = cout;
    if (dh != 1 || dw != 1) {
        conv_im2col(isa, x, nb, cin, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, cout, packed, bias, residual,
                    lo, hi, r0 * ow, r1 * ow, m0, m1, y);
        return;
    }
    /* Below AVX-512 the dense panels are built by scalar im2col copies (the cost model's
       gather_cost is the AVX-512 one: ResNet-50's 3x3/2 convs on 7 x 7 and 14 x 14 maps run
       1.4-1.7x faster on panels; AlexNet's grouped 3x3 convs at 13 x 13 take panels and run
       6-15% slower than on phase planes) */
    if ((gather_ok(isa, nb, h, w, kh, kw) || (isa_avx2(isa) && !isa_avx512(isa))) && prefer_dense(path, gather_cost, cin, kh, kw, sh, sw, oh, ow, nb, r0, r1, m0, m1)) {
        conv_im2col(isa, x, nb, cin, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, cout, packed, bias, residual,
                    lo, hi, r0 * ow, r1 * ow, m0, m1, y);
        return;
    }
    /* Phase split: plane (ci, py, px) of a band holds x[(oy0 + i) * sh + py - pt][j * sw + px - pl]
       for i < nr + ex, j < wq, so tap (ci, ky, kx) of output (oy0 + i, ox) is element
       (i + ky / sh) * wq + ox + kx / sw of plane (ci, ky % sh, kx % sw): contiguous in (i, ox). */
    const int k = cin * kh * kw;
    const int wq = ow + (kw - 1) / sw, ex = (kh - 1) / sh;
    const long hw = (long)h * w, ohw = (long)oh * ow, total = (long)nb * ohw;
    /* only the phases some tap reads (a 1x1 stride-2 kernel reads one of four) */
    const int ny = sh < kh ? sh : kh, nx = sw < kw ? sw : kw;
    const int phases = cin * ny * nx;
    int R = (int)(65536 / ((long)phases * wq)) - ex;
    if (R < 1) R = 1;
    if (R > oh) R = oh;
    const long planeMax = (long)(R + ex) * wq;
    float *xb = scratch(0, (size_t)(phases * planeMax + wq + NR + 64));
    float *tiles = scratch(1, (size_t)((m1 - m0 / MR * MR + MR - 1) / MR) * MR * NR);
    int *off = (int *)scratch(2, (size_t)k);
    if (!xb || !tiles || !off) abort();
    const int avx = isa_avx512(isa);
    int offPlane = -1;
    for (long row = r0; row < r1;) {
        const long b = row / oh;
        const int oy0 = (int)(row - b * oh);
        int nr = oh - oy0;
        if (nr > R) nr = R;
        if (nr > r1 - row) nr = (int)(r1 - row);
        const int hq = nr + ex;
        const long plane = (long)hq * wq;
        /* fill the phase planes of this band */
        for (int ci = 0; ci < cin; ci++) {
            const float *src = x + ((long)ci * nb + b) * hw;
            for (int py = 0; py < ny; py++) for (int px = 0; px < nx; px++) {
                float *dst = xb + ((long)(ci * ny + py) * nx + px) * plane;
                const phase_cols pc = phase_columns(w, pl, px, sw, wq);
                for (int i = 0; i < hq; i++) {
                    const int iy = (oy0 + i) * sh + py - pt;
                    fill_phase_row(dst + (long)i * wq, iy < 0 || iy >= h ? NULL : src + (long)iy * w, pc, avx);
                }
            }
        }
        memset(xb + phases * plane, 0, sizeof(float) * (wq + NR + 64)); /* slack read by junk columns */
        if (offPlane != plane) {
            for (int ci = 0, p = 0; ci < cin; ci++)
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++, p++)
                        off[p] = (int)(((long)(ci * ny + ky % sh) * nx + kx % sw) * plane + (ky / sh) * wq + kx / sw);
            offPlane = (int)plane;
        }
        const long q1 = (long)nr * wq - (wq - ow); /* last valid output + 1 */
        for (long q0 = 0; q0 < q1; q0 += NR) {
            const int cols = q1 - q0 < NR ? (int)(q1 - q0) : NR;
            tiles_blocked(isa, packed, k, xb + q0, off, cols, m0, m1, bias, tiles);
            for (int mb = m0 / MR; mb * MR < m1; mb++) {
                const int o0 = mb * MR;
                const int rows = m1 - o0 < MR ? m1 - o0 : MR;
                const float *tile = tiles + (long)(mb - m0 / MR) * MR * NR;
                /* scatter the valid columns (ox < ow) with residual + clamp */
                int i = (int)(q0 / wq), ox = (int)(q0 - (long)i * wq);
                for (int j = 0; j < cols;) {
                    int run = ow - ox;
                    if (ox >= ow) { j += wq - ox; i++; ox = 0; continue; }
                    if (run > cols - j) run = cols - j;
                    const long obase = b * ohw + (long)(oy0 + i) * ow + ox;
                    for (int r = 0; r < rows; r++) {
                        float *yr = y + (long)(o0 + r) * total + obase;
                        const float *rr = residual ? residual + (long)(o0 + r) * total + obase : NULL;
                        if (avx) store_run_avx512(tile + r * NR + j, run, rr, lo, hi, yr);
                        else if (isa_avx2(isa)) store_run_avx2(tile + r * NR + j, run, rr, lo, hi, yr);
                        else store_run_portable(tile + r * NR + j, run, rr, lo, hi, yr);
                    }
                    j += run; ox += run;
                }
            }
        }
        row += nr;
    }
}

void tessera_engine_pointwise(int isa, const float *x, long total, int cin, int cout, const float *packed,
                              const float *bias, const float *residual, float lo, float hi,
                              long n0, long n1, int m0, int m1, float *y) {
    if (m1 > cout) m1 = cout;
    const int avx = isa_avx512(isa);
    /* Columns in blocks of up to 10 tiles whose input (cin rows) is first copied into a
       contiguous [tile][cin][48] panel: the copy streams each channel row, whereas the tile
       reading the rows in place (one stream per channel) stalled on cache misses. */
    int nc = (int)(65536 / cin) / NR * NR;
    if (nc < NR) nc = NR;
    if (nc > 10 * NR) nc = 10 * NR;
    float *panel = scratch(0, (size_t)cin * nc);
    if (!panel) abort();
    /* AVX2: k in passes of 128 when longer, so the [128][48] slice of the panel stays in L1
       across the output-channel blocks (672 -> 112 at 14 x 14: 7% faster) */
    const int kPasses = !avx && isa_avx2(isa) && cin > 192;
    for (long p0 = n0; p0 < n1; p0 += nc) {
        const int pc = n1 - p0 < nc ? (int)(n1 - p0) : nc;
        const int ntiles = (pc + NR - 1) / NR;
        for (int k = 0; k < cin; k++) {
            const float *src = x + (long)k * total + p0;
            for (int t = 0; t < ntiles; t++) {
                const int cols = pc - t * NR < NR ? pc - t * NR : NR;
                memcpy(panel + ((long)t * cin + k) * NR, src + t * NR, sizeof(float) * cols);
            }
        }
        for (int t = 0; t < ntiles; t++) {
            const int cols = pc - t * NR < NR ? pc - t * NR : NR;
            const long q0 = p0 + (long)t * NR;
            const float *b = panel + (long)t * cin * NR;
            if (kPasses) {
                avx2_tiles_in_k_passes(packed, cin, b, NR, cols, m0, m1, bias, residual ? residual + q0 : NULL, total,
                                       lo, hi, y + q0, next_cols(q0, n1));
                continue;
            }
            for (int mb = m0 / MR; mb * MR < m1; mb++) {
                const int o0 = mb * MR;
                const int rows = m1 - o0 < MR ? m1 - o0 : MR;
                const float *a = packed + (long)mb * cin * MR;
                const float *res = residual ? residual + (long)o0 * total + q0 : NULL;
                float *yo = y + (long)o0 * total + q0;
                if (avx) conv_tile_avx512(a, b, cin, NR, cols, bias + o0, rows, res, total, lo, hi, yo);
                else conv_tile_c(isa, a, b, cin, NR, cols, bias + o0, rows, res, total, lo, hi, yo);
                if (next_cols(q0, n1) > 0)
                    prefetch_next_columns(yo + NR, res ? res + NR : NULL, rows, total, next_cols(q0, n1));
            }
        }
    }
}

/* ---------- pooling ---------- */

/* Vertical pass of one output row: acc[i] = sum / max of the valid input rows; returns 0 if none. */
