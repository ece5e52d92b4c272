#include "tessera_vips.h"
#include <string.h>

int tessera_vips_init(const char *argv0) { return VIPS_INIT(argv0); }

/* Loaders stop on decode errors and truncation (fail_on = error) instead of filling the damaged
 * part with grey or black, which would be read as background: a tile that does not decode is an
 * error, never an empty tile. (Debian's libvips 8.14 tiffload does not see inside JPEG tiles'
 * entropy data; the structure check before opening covers the truncated files. OpenSlide fails on
 * a bad tile by itself.) */
VipsImage *tessera_vips_open(const char *filename, int access) {
    return vips_image_new_from_file(filename, "access", (VipsAccess)access, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
}

VipsImage *tessera_vips_openslide_level(const char *filename, int level) {
    VipsImage *out = NULL;
    if (vips_openslideload(filename, &out, "level", level, "fail_on", VIPS_FAIL_ON_ERROR, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_openslide_associated(const char *filename, const char *associated) {
    VipsImage *out = NULL;
    if (vips_openslideload(filename, &out, "associated", associated, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_tiff_page(const char *filename, int page, int access) {
    VipsImage *out = NULL;
    if (vips_tiffload(filename, &out, "page", page, "access", (VipsAccess)access,
                      "fail_on", VIPS_FAIL_ON_ERROR, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_resize(VipsImage *in, double hscale, double vscale, int kernel) {
    VipsImage *out = NULL;
    if (vips_resize(in, &out, hscale, "vscale", vscale, "kernel", (VipsKernel)kernel, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_extract_bands(VipsImage *in, int band, int n) {
    VipsImage *out = NULL;
    if (vips_extract_band(in, &out, band, "n", n, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_cast_uchar(VipsImage *in) {
    VipsImage *out = NULL;
    if (vips_cast(in, &out, VIPS_FORMAT_UCHAR, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_set_resolution(VipsImage *in, double xres, double yres) {
    VipsImage *out = NULL;
    if (vips_copy(in, &out, "xres", xres, "yres", yres, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_replicate(VipsImage *in, int across, int down) {
    VipsImage *out = NULL;
    if (vips_replicate(in, &out, across, down, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_embed_white(VipsImage *in, int x, int y, int width, int height) {
    VipsImage *out = NULL;
    if (vips_embed(in, &out, x, y, width, height, "extend", VIPS_EXTEND_WHITE, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_insert(VipsImage *main_image, VipsImage *sub, int x, int y) {
    VipsImage *out = NULL;
    if (vips_insert(main_image, sub, &out, x, y, NULL)) return NULL;
    return out;
}

VipsImage *tessera_vips_crop(VipsImage *in, int left, int top, int width, int height) {
    VipsImage *out = NULL;
    if (vips_crop(in, &out, left, top, width, height, NULL)) return NULL;
    return out;
}

int tessera_vips_pngsave(VipsImage *in, const char *filename) {
    return vips_pngsave(in, filename, NULL);
}

int tessera_vips_tiffsave_pyramid_jpeg(VipsImage *in, const char *filename, int tile_size, int quality) {
    return vips_tiffsave(in, filename,
                         "tile", TRUE, "tile_width", tile_size, "tile_height", tile_size,
                         "pyramid", TRUE, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_JPEG,
                         "Q", quality, NULL);
}

void tessera_object_unref(void *object) { if (object) g_object_unref(object); }
void tessera_free(void *pointer) { g_free(pointer); }

char *tessera_vips_error_take(void) {
    char *copy = vips_error_buffer_copy();
    return copy;
}

/* Pixel copy kernels. The hot loops are plain C that the compiler vectorises; the
 * clones pick AVX-512 / AVX2 at load time by CPU. */
#if defined(__x86_64__) && defined(__clang__)
#define TESSERA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TESSERA_CLONES
#endif

static inline int prepare(VipsRegion *region, int left, int top, int width, int height) {
    VipsRect rect = { left, top, width, height };
    if (vips_region_prepare(region, &rect)) return -1;
    VipsImage *im = region->im;
    if (im->BandFmt != VIPS_FORMAT_UCHAR) {
        vips_error("tessera", "%s", "pixel format is not 8-bit unsigned");
        return -1;
    }
    if (im->Bands < 1 || im->Bands > 4) {
        vips_error("tessera", "%s", "unsupported band count");
        return -1;
    }
    return 0;
}

TESSERA_CLONES
static void row_rgb8(const uint8_t *restrict src, int bands, int width, uint8_t *restrict dst) {
    switch (bands) {
    case 3:
        memcpy(dst, src, (size_t)width * 3);
        break;
    case 4:
        for (int x = 0; x < width; x++) {
            uint8_t a = src[4 * x + 3];
            uint8_t m = a ? 0 : 255;
            dst[3 * x + 0] = src[4 * x + 0] | m;
            dst[3 * x + 1] = src[4 * x + 1] | m;
            dst[3 * x + 2] = src[4 * x + 2] | m;
        }
        break;
    case 2:
        for (int x = 0; x < width; x++) {
            uint8_t v = src[2 * x + 1] ? src[2 * x] : 255;
            dst[3 * x + 0] = v; dst[3 * x + 1] = v; dst[3 * x + 2] = v;
        }
        break;
    default:
        for (int x = 0; x < width; x++) {
            uint8_t v = src[x];
            dst[3 * x + 0] = v; dst[3 * x + 1] = v; dst[3 * x + 2] = v;
        }
    }
}

int tessera_region_read_rgb8(VipsRegion *region, int left, int top, int width, int height,
                             uint8_t *dst) {
    if (prepare(region, left, top, width, height)) return -1;
    int bands = region->im->Bands;
    for (int y = 0; y < height; y++) {
        const uint8_t *src = (const uint8_t *)VIPS_REGION_ADDR(region, left, top + y);
        row_rgb8(src, bands, width, dst + (size_t)y * width * 3);
    }
    return 0;
}

TESSERA_CLONES
static void row_f32(const uint8_t *restrict src, int bands, int width,
                    const float *restrict scale, const float *restrict bias,
                    int planar, size_t plane, float *restrict dst) {
    /* value = p * scale[c] + bias[c], where scale = 1 / (255 std), bias = -mean / std. */
    if (planar) {
        float *r = dst, *g = dst + plane, *b = dst + 2 * plane;
        if (bands >= 3) {
            for (int x = 0; x < width; x++) {
                int transparent = bands == 4 && src[4 * x + 3] == 0;
                float pr = transparent ? 255.0f : (float)src[bands * x + 0];
                float pg = transparent ? 255.0f : (float)src[bands * x + 1];
                float pb = transparent ? 255.0f : (float)src[bands * x + 2];
                r[x] = pr * scale[0] + bias[0];
                g[x] = pg * scale[1] + bias[1];
                b[x] = pb * scale[2] + bias[2];
            }
        } else {
            for (int x = 0; x < width; x++) {
                int transparent = bands == 2 && src[2 * x + 1] == 0;
                float p = transparent ? 255.0f : (float)src[bands * x];
                r[x] = p * scale[0] + bias[0];
                g[x] = p * scale[1] + bias[1];
                b[x] = p * scale[2] + bias[2];
            }
        }
    } else {
        for (int x = 0; x < width; x++) {
            float pr, pg, pb;
            if (bands >= 3) {
                int transparent = bands == 4 && src[4 * x + 3] == 0;
                pr = transparent ? 255.0f : (float)src[bands * x + 0];
                pg = transparent ? 255.0f : (float)src[bands * x + 1];
                pb = transparent ? 255.0f : (float)src[bands * x + 2];
            } else {
                int transparent = bands == 2 && src[2 * x + 1] == 0;
                pr = pg = pb = transparent ? 255.0f : (float)src[bands * x];
            }
            dst[3 * x + 0] = pr * scale[0] + bias[0];
            dst[3 * x + 1] = pg * scale[1] + bias[1];
            dst[3 * x + 2] = pb * scale[2] + bias[2];
        }
    }
}

void tessera_rgb8_row_f32(const uint8_t *src, int width, const float scale[3], const float bias[3], int planar,
                          size_t plane, float *dst) {
    row_f32(src, 3, width, scale, bias, planar, plane, dst);
}

int tessera_region_read_f32(VipsRegion *region, int left, int top, int width, int height,
                            const float mean[3], const float stdev[3], int planar, float *dst) {
    if (prepare(region, left, top, width, height)) return -1;
    int bands = region->im->Bands;
    float scale[3], bias[3];
    for (int c = 0; c < 3; c++) {
        scale[c] = 1.0f / (255.0f * stdev[c]);
        bias[c] = -mean[c] / stdev[c];
    }
    size_t plane = (size_t)width * height;
    for (int y = 0; y < height; y++) {
        const uint8_t *src = (const uint8_t *)VIPS_REGION_ADDR(region, left, top + y);
        float *row = planar ? dst + (size_t)y * width : dst + (size_t)y * width * 3;
        row_f32(src, bands, width, scale, bias, planar, plane, row);
    }
    return 0;
}

void tessera_vips_block(const char *name) { vips_operation_block_set(name, TRUE); }

/* The synthetic slide's pixels as a lazy libvips pipeline (t[0..7] belong to `base`). */
static VipsImage *synthetic_pixels(VipsImage *texture, VipsImage *mask, int width, int height, double pixels_per_mm,
                                   VipsImage **t) {
    int across = width / texture->Xsize + 1;
    int down = height / texture->Ysize + 1;
    if (vips_replicate(texture, &t[0], across, down, NULL) ||
        vips_crop(t[0], &t[1], 0, 0, width, height, NULL) ||
        vips_resize(mask, &t[2], (double)width / mask->Xsize,
                    "vscale", (double)height / mask->Ysize, "kernel", VIPS_KERNEL_LINEAR, NULL) ||
        vips_embed(t[2], &t[3], 0, 0, width, height, "extend", VIPS_EXTEND_COPY, NULL) ||
        vips_black(&t[4], width, height, "bands", 3, NULL) ||
        vips_linear1(t[4], &t[5], 1.0, 255.0, "uchar", TRUE, NULL) ||
        vips_ifthenelse(t[3], t[1], t[5], &t[6], "blend", TRUE, NULL) ||
        vips_copy(t[6], &t[7], "xres", pixels_per_mm, "yres", pixels_per_mm, NULL)) {
        return NULL;
    }
    return t[7];
}

/* Tiled JPEG TIFF of 256 px tiles, with or without the pyramid libvips builds (halving levels). */
static int save_tiles(VipsImage *image, const char *filename, int quality, int pyramid) {
    return vips_tiffsave(image, filename, "tile", TRUE, "tile_width", 256, "tile_height", 256, "pyramid", pyramid ? TRUE : FALSE,
                         "compression", VIPS_FOREIGN_TIFF_COMPRESSION_JPEG, "Q", quality,
                         "resunit", VIPS_FOREIGN_TIFF_RESUNIT_CM, NULL) ? -1 : 0;
}

int tessera_vips_write_synthetic_slide(VipsImage *texture, VipsImage *mask, int width, int height,
                                       double pixels_per_mm, const char *filename, int quality, int pyramid) {
    VipsImage *base = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(base), 8);
    VipsImage *pixels = synthetic_pixels(texture, mask, width, height, pixels_per_mm, t);
    int result = pixels ? save_tiles(pixels, filename, quality, pyramid) : -1;
    g_object_unref(base);
    return result;
}

int tessera_vips_shrink_tiff(const char *source, int shrink, const char *filename, int quality) {
    VipsImage *base = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(base), 2);
    int result = -1;
    if (!vips_tiffload(source, &t[0], "access", VIPS_ACCESS_SEQUENTIAL, NULL) &&
        !vips_shrink(t[0], &t[1], (double)shrink, (double)shrink, NULL)) {
        result = save_tiles(t[1], filename, quality, 0);
    }
    g_object_unref(base);
    return result;
}
