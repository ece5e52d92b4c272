#include "tessera_jpeg.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

struct error_manager {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int warned;
};

struct tessera_jpeg {
    struct jpeg_decompress_struct cinfo;
    struct error_manager error;
};

static void error_exit(j_common_ptr cinfo) {
    struct error_manager *error = (struct error_manager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, error->message);
    longjmp(error->jump, 1);
}

/* Warnings (level -1) are kept: corrupt entropy data only warns in libjpeg. Trace messages are dropped. */
static void emit_message(j_common_ptr cinfo, int level) {
    struct error_manager *error = (struct error_manager *)cinfo->err;
    if (level < 0 && !error->warned) {
        (*cinfo->err->format_message)(cinfo, error->message);
        error->warned = 1;
    }
}

tessera_jpeg *tessera_jpeg_new(void) {
    tessera_jpeg *decoder = calloc(1, sizeof(tessera_jpeg));
    if (!decoder) return NULL;
    decoder->cinfo.err = jpeg_std_error(&decoder->error.pub);
    decoder->error.pub.error_exit = error_exit;
    decoder->error.pub.emit_message = emit_message;
    if (setjmp(decoder->error.jump)) {
        jpeg_destroy_decompress(&decoder->cinfo);
        free(decoder);
        return NULL;
    }
    jpeg_create_decompress(&decoder->cinfo);
    return decoder;
}

void tessera_jpeg_free(tessera_jpeg *decoder) {
    if (!decoder) return;
    jpeg_destroy_decompress(&decoder->cinfo);
    free(decoder);
}

int tessera_jpeg_load_tables(tessera_jpeg *decoder, const uint8_t *tables, size_t size) {
    decoder->error.warned = 0;
    if (setjmp(decoder->error.jump)) {
        jpeg_abort_decompress(&decoder->cinfo);
        return -1;
    }
    jpeg_mem_src(&decoder->cinfo, tables, (unsigned long)size);
    if (jpeg_read_header(&decoder->cinfo, FALSE) != JPEG_HEADER_TABLES_ONLY) {
        snprintf(decoder->error.message, sizeof decoder->error.message, "the JPEG tables hold an image, not only tables");
        jpeg_abort_decompress(&decoder->cinfo);
        return -1;
    }
    return 0;
}

int tessera_jpeg_decode(tessera_jpeg *decoder, const uint8_t *data, size_t size, int denominator,
                        int rgb_components, uint8_t *dst, size_t stride, int width, int height) {
    struct jpeg_decompress_struct *cinfo = &decoder->cinfo;
    decoder->error.warned = 0;
    if (setjmp(decoder->error.jump)) {
        jpeg_abort_decompress(cinfo);
        return -1;
    }
    jpeg_mem_src(cinfo, data, (unsigned long)size);
    if (jpeg_read_header(cinfo, TRUE) != JPEG_HEADER_OK) {
        snprintf(decoder->error.message, sizeof decoder->error.message, "no image in the JPEG stream");
        jpeg_abort_decompress(cinfo);
        return -1;
    }
    if (cinfo->num_components != 3) {
        snprintf(decoder->error.message, sizeof decoder->error.message, "%d JPEG components, not 3", cinfo->num_components);
        jpeg_abort_decompress(cinfo);
        return -1;
    }
    if (rgb_components) cinfo->jpeg_color_space = JCS_RGB;
    cinfo->out_color_space = JCS_RGB;
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned int)denominator;
    cinfo->dct_method = JDCT_ISLOW;
    jpeg_start_decompress(cinfo);
    if ((int)cinfo->output_width != width || (int)cinfo->output_height != height || cinfo->output_components != 3) {
        snprintf(decoder->error.message, sizeof decoder->error.message, "the tile decodes to %u x %u, not %d x %d",
                 cinfo->output_width, cinfo->output_height, width, height);
        jpeg_abort_decompress(cinfo);
        return -1;
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        JSAMPROW rows[4];
        int n = 0;
        for (; n < 4 && cinfo->output_scanline + (unsigned)n < cinfo->output_height; n++) {
            rows[n] = dst + (size_t)(cinfo->output_scanline + (unsigned)n) * stride;
        }
        jpeg_read_scanlines(cinfo, rows, (JDIMENSION)n);
    }
    jpeg_finish_decompress(cinfo);
    return decoder->error.warned ? -1 : 0;
}

const char *tessera_jpeg_error(const tessera_jpeg *decoder) { return decoder->error.message; }
