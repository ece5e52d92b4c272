/*
 * Separable (bi)linear / nearest resize of channel-major planes (see tessera_engine_kernels.h):
 * each input row an output row reads is first resized horizontally once (kept while consecutive
 * output rows read it), then every output row is a contiguous blend of two such rows.
 */
#include "engine_internal.h"
#include <stdlib.h>

ALWAYS_INLINE void resize_row(const float *a, int ow, const int *ci0, const int *ci1, const float *cw, float *d) {
    for (int j = 0; j < ow; j++) d[j] = a[ci0[j]] + (a[ci1[j]] - a[ci0[j]]) * cw[j];
}

ALWAYS_INLINE void resize_body(const float *x, long p0, long p1, int ih, int iw, int oh, int ow, const int *ri0,
                               const int *ri1, const float *rw, const int *ci0, const int *ci1, const float *cw,
                               float *y, float *buf) {
    for (long p = p0; p < p1; p++) {
        const float *src = x + p * (long)ih * iw;
        float *dst = y + p * (long)oh * ow;
        float *row[2] = { buf, buf + ow };
        int have[2] = { -1, -1 };
        for (int i = 0; i < oh; i++) {
            const int want[2] = { ri0[i], ri1[i] };
            float *use[2];
            for (int s = 0; s < 2; s++) {
                const int r = want[s];
                if (have[0] == r) { use[s] = row[0]; continue; }
                if (have[1] == r) { use[s] = row[1]; continue; }
                /* the top row goes where the bottom one is not kept, the bottom one beside the top one */
                const int slot = s == 0 ? (have[0] == want[1] ? 1 : 0) : (use[0] == row[0] ? 1 : 0);
                resize_row(src + (long)r * iw, ow, ci0, ci1, cw, row[slot]);
                have[slot] = r;
                use[s] = row[slot];
            }
            const float *t = use[0], *b = use[1];
            const float w = rw[i];
            float *out = dst + (long)i * ow;
            if (w == 0) memcpy(out, t, sizeof(float) * ow);
            else for (int j = 0; j < ow; j++) out[j] = t[j] + (b[j] - t[j]) * w;
        }
    }
}

AVX2 static void resize_avx2(const float *x, long p0, long p1, int ih, int iw, int oh, int ow, const int *ri0,
                             const int *ri1, const float *rw, const int *ci0, const int *ci1, const float *cw,
                             float *y, float *buf) {
    resize_body(x, p0, p1, ih, iw, oh, ow, ri0, ri1, rw, ci0, ci1, cw, y, buf);
}
static void resize_portable(const float *x, long p0, long p1, int ih, int iw, int oh, int ow, const int *ri0,
                            const int *ri1, const float *rw, const int *ci0, const int *ci1, const float *cw,
                            float *y, float *buf) {
    resize_body(x, p0, p1, ih, iw, oh, ow, ri0, ri1, rw, ci0, ci1, cw, y, buf);
}

void tessera_engine_resize(int isa, const float *x, long p0, long p1, int ih, int iw, int oh, int ow,
                           const int *ri0, const int *ri1, const float *rw, const int *ci0, const int *ci1,
                           const float *cw, float *y) {
    float *buf = scratch(0, (size_t)2 * ow);
    if (!buf) abort();
    if (isa_avx2(isa)) resize_avx2(x, p0, p1, ih, iw, oh, ow, ri0, ri1, rw, ci0, ci1, cw, y, buf);
    else resize_portable(x, p0, p1, ih, iw, oh, ow, ri0, ri1, rw, ci0, ci1, cw, y, buf);
}
