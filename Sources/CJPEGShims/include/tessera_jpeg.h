#pragma once
/*
 * libjpeg's decompressor behind four calls: libjpeg reports errors by longjmp from a callback,
 * which Swift cannot host. Used to decode the JPEG tiles of a TIFF level at a reduced size
 * (libjpeg's DCT scaling), where a model reads the slide at a coarser pixel size than stored.
 */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tessera_jpeg tessera_jpeg;

/** A decompressor; NULL when out of memory. */
tessera_jpeg *tessera_jpeg_new(void);
void tessera_jpeg_free(tessera_jpeg *decoder);
/** Loads an abbreviated table stream (a TIFF page's JPEGTables) for the tiles that follow. 0 on success. */
int tessera_jpeg_load_tables(tessera_jpeg *decoder, const uint8_t *tables, size_t size);
/**
 * Decodes one JPEG stream (a full one, or an abbreviated tile after tessera_jpeg_load_tables) at
 * 1/`denominator` of its size (1, 2, 4 or 8) into packed RGB rows `stride` bytes apart.
 * `rgb_components` != 0 says the components are R, G, B (TIFF photometric RGB), not YCbCr.
 * The decoded image must be exactly `width` x `height` (what the caller sized `dst` for).
 * Any libjpeg warning (corrupt or truncated data) fails the decode: a damaged tile is an error,
 * never a grey one. 0 on success; tessera_jpeg_error says why not.
 */
int tessera_jpeg_decode(tessera_jpeg *decoder, const uint8_t *data, size_t size, int denominator,
                        int rgb_components, uint8_t *dst, size_t stride, int width, int height);
/** The last error's message (valid until the next call on the decoder). */
const char *tessera_jpeg_error(const tessera_jpeg *decoder);

#ifdef __cplusplus
}
#endif
