#ifndef EOSIN_CJPEG_SHIM_H
#define EOSIN_CJPEG_SHIM_H
#include <stddef.h>
#include <stdint.h>

/* Decode a JPEG held in memory to packed RGB8 (H,W,3). On success returns 0 and sets *out to a
   malloc'd buffer the caller frees with eosin_jpeg_free. On failure returns -1 and writes a
   message into err (errlen bytes). Never longjmps into Swift. */
int eosin_jpeg_decode(const uint8_t *data, size_t len, int *width, int *height, uint8_t **out,
                      char *err, size_t errlen);

/* Encode packed RGB8 (H,W,3) as baseline JPEG at quality 1..100. Same ownership rules. */
int eosin_jpeg_encode(const uint8_t *rgb, int width, int height, int quality, uint8_t **out,
                      size_t *outlen, char *err, size_t errlen);

void eosin_jpeg_free(void *p);
#endif
