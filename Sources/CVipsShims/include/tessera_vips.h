#pragma once
/*
 * Non-variadic wrappers for the libvips calls Swift cannot import (variadic functions and
 * function-like macros), and the few hand-written pixel kernels of the patch reader.
 */
#include <stddef.h>
#include <stdint.h>
#include <vips/vips.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ── libvips ─────────────────────────────────────────────────────────────── */

/** VIPS_INIT. Returns 0 on success. */
int tessera_vips_init(const char *argv0);
/** vips_image_new_from_file(name, "access", access, NULL); `name` may carry [options]. */
VipsImage *tessera_vips_open(const char *filename, int access);
/** vips_openslideload(name, &out, "level", level, NULL). */
VipsImage *tessera_vips_openslide_level(const char *filename, int level);
/** vips_openslideload(name, &out, "associated", associated, NULL). */
VipsImage *tessera_vips_openslide_associated(const char *filename, const char *associated);
/** vips_tiffload(name, &out, "page", page, "access", access, NULL). */
VipsImage *tessera_vips_tiff_page(const char *filename, int page, int access);
/** vips_resize(in, &out, hscale, "vscale", vscale, "kernel", kernel, NULL). */
VipsImage *tessera_vips_resize(VipsImage *in, double hscale, double vscale, int kernel);
/** vips_extract_band(in, &out, band, "n", n, NULL). */
VipsImage *tessera_vips_extract_bands(VipsImage *in, int band, int n);
/** vips_cast(in, &out, VIPS_FORMAT_UCHAR, NULL). */
VipsImage *tessera_vips_cast_uchar(VipsImage *in);
/** vips_copy(in, &out, "xres", xres, "yres", yres, NULL) (pixels per millimetre). */
VipsImage *tessera_vips_set_resolution(VipsImage *in, double xres, double yres);
/** vips_replicate(in, &out, across, down, NULL). */
VipsImage *tessera_vips_replicate(VipsImage *in, int across, int down);
/** vips_embed(in, &out, x, y, width, height, "extend", VIPS_EXTEND_WHITE, NULL). */
VipsImage *tessera_vips_embed_white(VipsImage *in, int x, int y, int width, int height);
/** vips_insert(main, sub, &out, x, y, NULL). */
VipsImage *tessera_vips_insert(VipsImage *main_image, VipsImage *sub, int x, int y);
/** vips_crop(in, &out, left, top, width, height, NULL). */
VipsImage *tessera_vips_crop(VipsImage *in, int left, int top, int width, int height);
/** vips_pngsave(in, filename, NULL). Returns 0 on success. */
int tessera_vips_pngsave(VipsImage *in, const char *filename);
/** vips_tiffsave(in, filename, tile, pyramid, JPEG Q, tile size, NULL). Returns 0 on success. */
int tessera_vips_tiffsave_pyramid_jpeg(VipsImage *in, const char *filename, int tile_size, int quality);
/** Unreference a GObject (g_object_unref). */
void tessera_object_unref(void *object);
/** g_free. */
void tessera_free(void *pointer);
/** Copy of the global error buffer (caller frees with tessera_free), then clears it. */
char *tessera_vips_error_take(void);

/**
 * Prepares `region` over the rectangle and copies it into `dst` as packed RGB
 * (3 bytes / pixel). Handles 1 (grey), 2 (grey+alpha), 3 (RGB) and 4 (RGBA) band
 * uchar images; fully transparent pixels become white. Returns 0 on success.
 */
int tessera_region_read_rgb8(VipsRegion *region, int left, int top, int width, int height,
                             uint8_t *dst);
/**
 * As tessera_region_read_rgb8, but writes normalised floats: value = (p / 255 - mean[c]) / std[c].
 * `planar` != 0 writes CHW (channel stride width * height), otherwise HWC.
 */
int tessera_region_read_f32(VipsRegion *region, int left, int top, int width, int height,
                            const float mean[3], const float stdev[3], int planar, float *dst);

/**
 * One row of packed RGB as normalised floats: value = p * scale[c] + bias[c] (scale = 1 / (255 std),
 * bias = -mean / std). `planar` != 0 writes dst, dst + plane, dst + 2 plane; otherwise interleaved.
 */
void tessera_rgb8_row_f32(const uint8_t *src, int width, const float scale[3], const float bias[3], int planar,
                          size_t plane, float *dst);

/* ── library versions (tessera doctor) ───────────────────────────────────── */
/**
 * OpenSlide's version string (`openslide_get_version`), looked up at run time in the copy
 * libvips loaded (or can load): Tessera does not link OpenSlide itself. NULL when absent.
 */
const char *tessera_openslide_version(void);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif
/** Blocks a libvips operation class by name (vips_operation_block_set). */
void tessera_vips_block(const char *name);
/**
 * Writes a synthetic whole-slide image: `texture` (uchar RGB) replicated over
 * width x height, shown where the one-band uchar `mask` (upsampled to the full size,
 * 255 = tissue) is set and white elsewhere, saved as a tiled JPEG TIFF (256 px tiles) with
 * the given resolution (pixels per millimetre): with libvips' halving pyramid when `pyramid`
 * != 0, else one page (a slide's level 0, for a pyramid assembled page by page). 0 on success.
 */
int tessera_vips_write_synthetic_slide(VipsImage *texture, VipsImage *mask, int width, int height,
                                       double pixels_per_mm, const char *filename, int quality, int pyramid);
/** A tiled JPEG TIFF page shrunk `shrink` times (box filter), saved the same way: the next pyramid level. */
int tessera_vips_shrink_tiff(const char *source, int shrink, const char *filename, int quality);
#ifdef __cplusplus
}
#endif
