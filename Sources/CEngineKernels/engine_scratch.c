/* Per-thread scratch buffers and the strided copy shared by the direct kernels. */
#include "engine_internal.h"
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define NBUF 3
typedef struct { float *p[NBUF]; size_t cap[NBUF]; } tls_scratch;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v) {
    tls_scratch *s = v;
    for (int i = 0; i < NBUF; i++) free(s->p[i]);
    free(s);
}
static void scratch_key(void) { pthread_key_create(&g_key, scratch_free); }

/* A 64-byte aligned per-thread buffer of at least n floats (slot `which`), or NULL. */
float *tessera_scratch(int which, size_t n) {
    pthread_once(&g_once, scratch_key);
    tls_scratch *s = pthread_getspecific(g_key);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) return NULL;
        pthread_setspecific(g_key, s);
    }
    if (s->cap[which] < n) {
        free(s->p[which]);
        size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
        s->p[which] = aligned_alloc(64, bytes);
        s->cap[which] = s->p[which] ? n : 0;
    }
    return s->p[which];
}

/* d[j] = s[2 j] for j < n (reads s[0 .. 2n - 2] only) */
AVX512 void tessera_copy_stride2_avx512(float *d, const float *s, int n) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m512 a = _mm512_loadu_ps(s + 2 * j);
        const __m512 b = _mm512_maskz_loadu_ps((__mmask16)0x7FFF, s + 2 * j + 16);
        _mm512_storeu_ps(d + j, _mm512_permutex2var_ps(a, even, b));
    }
    for (; j < n; j++) d[j] = s[2 * j];
}

/* Asks for transparent huge pages on the 2 MB-aligned part of [p, p + bytes) (a fresh output
   buffer, before it is written): a 16-image segmentation output is 88 MB, and faulting it in
   4 KB pages on every batch cost LR-ASPP-MobileNetV3 a quarter of its time. A no-op where the
   kernel has no THP or it is off. */
void tessera_advise_huge_pages(void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    const uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
}

/* glibc: every allocation from the heap (none mmapped on its own) and the heap trimmed only above
   1 GiB free, so a batch's output arrays (88 MB for 16 LR-ASPP maps) reuse the pages the previous
   batch freed instead of faulting in fresh ones: LR-ASPP 2 threads batch 16 ~160 or ~240 img/s
   from run to run -> 242-250 every run. Peak memory is what the process used anyway. */
void tessera_keep_freed_blocks(void) {
#ifdef __GLIBC__
    (void)mallopt(M_MMAP_MAX, 0);
    (void)mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}
