#include "tessera_pictures.h"

VipsImage *tessera_vips_text(const char *text, const char *font, int width) {
    VipsImage *out = NULL;
    int failed = width > 0
        ? vips_text(&out, text, "font", font, "width", width, "dpi", 72, NULL)
        : vips_text(&out, text, "font", font, "dpi", 72, NULL);
    return failed ? NULL : out;
}

VipsImage *tessera_vips_paint_mask(VipsImage *canvas, VipsImage *mask, int x, int y,
                                   double r, double g, double b) {
    VipsImage *base = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(base), 2);
    double ink[3] = { r, g, b };
    VipsImage *out = NULL;
    t[0] = vips_image_new_from_image(canvas, ink, 3);
    if (t[0] &&
        !vips_embed(mask, &t[1], x, y, canvas->Xsize, canvas->Ysize, "extend", VIPS_EXTEND_BLACK, NULL) &&
        vips_ifthenelse(t[1], t[0], canvas, &out, "blend", TRUE, NULL)) {
        out = NULL;
    }
    g_object_unref(base);
    return out;
}

int tessera_vips_tiffsave_map(VipsImage *in, const char *filename, double xres, double yres, int nearest) {
    VipsImage *copy = NULL;
    if (vips_copy(in, &copy, "xres", xres, "yres", yres, NULL)) return -1;
    /* 128 px tiles: maps have one pixel per analysed tile, so even a modest grid gets levels. */
    int result = vips_tiffsave(copy, filename, "tile", TRUE, "tile_width", 128, "tile_height", 128,
                               "pyramid", TRUE, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE,
                               "region_shrink", nearest ? VIPS_REGION_SHRINK_MODE : VIPS_REGION_SHRINK_MEAN,
                               "resunit", VIPS_FOREIGN_TIFF_RESUNIT_CM, NULL);
    g_object_unref(copy);
    return result;
}

VipsImage *tessera_vips_rawload(const char *filename, int width, int height, int bands) {
    VipsImage *out = NULL;
    return vips_rawload(filename, &out, width, height, bands, NULL) ? NULL : out;
}

int tessera_vips_render_tile(VipsImage *level, int left, int top, int width, int height,
                             int out_width, int out_height, int tile_size, int quality,
                             void **buffer, size_t *length) {
    VipsImage *base = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(base), 6);
    double white[4] = { 255, 255, 255, 255 };
    VipsArrayDouble *background = vips_array_double_new(white, 3);
    int result = -1;
    if (!vips_crop(level, &t[0], left, top, width, height, NULL) &&
        !vips_resize(t[0], &t[1], (double)out_width / width, "vscale", (double)out_height / height,
                     "kernel", VIPS_KERNEL_LINEAR, NULL)) {
        VipsImage *flat = t[1];
        int ok = 1;
        if (t[1]->Bands == 4 || t[1]->Bands == 2) {
            ok = !vips_flatten(t[1], &t[2], "background", background, NULL);
            flat = t[2];
        }
        if (ok && !vips_cast(flat, &t[3], VIPS_FORMAT_UCHAR, NULL) &&
            !vips_embed(t[3], &t[4], 0, 0, tile_size, tile_size, "extend", VIPS_EXTEND_WHITE, NULL) &&
            !vips_jpegsave_buffer(t[4], buffer, length, "Q", quality, "strip", TRUE, NULL)) {
            result = 0;
        }
    }
    vips_area_unref(VIPS_AREA(background));
    g_object_unref(base);
    return result;
}
