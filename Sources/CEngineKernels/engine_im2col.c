/* im2col over channel-major activations for the engine's GEMM convolutions. */
#include "tessera_engine_kernels.h"
#include <string.h>

void tessera_engine_im2col(const float *x, int nb, int c0, int cg, int h, int w, int kh, int kw,
                           int sh, int sw, int dh, int dw, int pt, int pl, int oh, int ow,
                           long n0, long cols, float *col) {
    const long hw = (long)h * w, ohw = (long)oh * ow;
    for (int ci = 0; ci < cg; ci++) {
        for (int ky = 0; ky < kh; ky++) {
            for (int kx = 0; kx < kw; kx++) {
                float *dst = col + ((long)(ci * kh + ky) * kw + kx) * cols;
                const int off = kx * dw - pl;
                /* output columns whose input column lies inside the row */
                int lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                int hi = (w - 1 - off) < 0 ? 0 : (w - 1 - off) / sw + 1;
                if (lo > ow) lo = ow;
                if (hi > ow) hi = ow;
                if (hi < lo) hi = lo;
                long n = n0;
                const long end = n0 + cols;
                /* (image, output row, column) of n, advanced row by row (no division per row:
                   on a 7 x 7 map the rows are 7 columns long) */
                long b = n0 / ohw;
                int oy = (int)((n0 - b * ohw) / ow), ox0 = (int)(n0 - b * ohw - (long)oy * ow);
                for (; n < end; ox0 = 0, oy = oy + 1 == oh ? 0 : oy + 1, b += oy == 0) {
                    int len = ow - ox0;
                    if (len > end - n) len = (int)(end - n);
                    float *d = dst + (n - n0);
                    const int iy = oy * sh - pt + ky * dh;
                    if (iy < 0 || iy >= h) {
                        memset(d, 0, sizeof(float) * len);
                    } else {
                        const float *src = x + ((long)(c0 + ci) * nb + b) * hw + (long)iy * w + off;
                        const int ox1 = ox0 + len;
                        int a = lo > ox0 ? lo : ox0; if (a > ox1) a = ox1;
                        int z = hi < ox1 ? hi : ox1; if (z < a) z = a;
                        for (int ox = ox0; ox < a; ox++) d[ox - ox0] = 0;
                        if (sw == 1) {
                            if (z - a > 16) memcpy(d + (a - ox0), src + a, sizeof(float) * (z - a));
                            else for (int ox = a; ox < z; ox++) d[ox - ox0] = src[ox];
                        } else if (sw == 2) {
                            for (int ox = a; ox < z; ox++) d[ox - ox0] = src[2 * ox];
                        } else {
                            for (int ox = a; ox < z; ox++) d[ox - ox0] = src[ox * sw];
                        }
                        for (int ox = z; ox < ox1; ox++) d[ox - ox0] = 0;
                    }
                    n += len;
                }
            }
        }
    }
}
