#pragma once
/*
 * libvips calls behind Tessera's pictures, full-resolution maps and the viewer's deep-zoom
 * tiles: text rendering, compositing, pyramidal map TIFFs, JPEG tiles to memory.
 */
#include <stddef.h>
#include <vips/vips.h>

#ifdef __cplusplus
extern "C" {
#endif

/** vips_text(&out, text, "font", font, "width", width (0 = no wrapping), "dpi", 72, NULL):
 *  a one-band uchar mask, 255 = ink. */
VipsImage *tessera_vips_text(const char *text, const char *font, int width);
/** Paints the colour (r, g, b) through the one-band `mask` placed at (x, y) onto the RGB
 *  `canvas` (vips_embed + vips_ifthenelse with "blend"). */
VipsImage *tessera_vips_paint_mask(VipsImage *canvas, VipsImage *mask, int x, int y,
                                   double r, double g, double b);
/** Saves a uchar image as a tiled (128 x 128), pyramidal, deflate-compressed TIFF with the
 *  resolution in pixels per millimetre. `nearest` != 0 builds the pyramid with the mode of each
 *  2 x 2 block (for class indices), else with the mean. Returns 0 on success. */
int tessera_vips_tiffsave_map(VipsImage *in, const char *filename, double xres, double yres, int nearest);
/** vips_rawload: a headerless file of width x height x bands uchar pixels, row after row, read
 *  as it is needed (a map larger than memory streams from disk into vips_tiffsave). */
VipsImage *tessera_vips_rawload(const char *filename, int width, int height, int bands);
/** One viewer tile: crops (left, top, width, height) of `level`, resizes it to out_width x
 *  out_height, flattens alpha onto white, places it at the top left of a white tile_size x
 *  tile_size square and encodes it as JPEG (quality) into a g_malloc'ed buffer. Returns 0 on
 *  success. */
int tessera_vips_render_tile(VipsImage *level, int left, int top, int width, int height,
                             int out_width, int out_height, int tile_size, int quality,
                             void **buffer, size_t *length);

#ifdef __cplusplus
}
#endif
