#ifndef EOSIN_CTIFF_SHIM_H
#define EOSIN_CTIFF_SHIM_H
#include <stddef.h>
#include <stdint.h>

/* Read the first directory of a TIFF as packed RGB8 (H,W,3), top-left origin. Returns 0, or -1
   with a message in err. *out is malloc'd; free with eosin_tiff_free. Errors and warnings from
   libtiff are captured, never printed. */
int eosin_tiff_read_rgb(const char *path, int *width, int *height, uint8_t **out, char *err,
                        size_t errlen);

/* One directory to write: RGB8 pixels (H,W,3). tile > 0 writes a tiled directory (a pyramid
   level); tile == 0 writes a stripped one (an associated image or a plain TIFF). */
typedef struct {
  const uint8_t *rgb;
  int width;
  int height;
  int tile;
  const char *description; /* ImageDescription, may be NULL */
  double pixels_per_cm;    /* XResolution/YResolution with ResolutionUnit=cm; 0 to omit */
  int subfile_type;        /* NewSubfileType: 0 full image, 1 reduced resolution */
  int compression;         /* 1 none, 7 JPEG, 8 deflate */
} eosin_tiff_dir;

/* Write the directories in order to path. Returns 0, or -1 with a message in err. */
int eosin_tiff_write(const char *path, const eosin_tiff_dir *dirs, int count, char *err,
                     size_t errlen);

void eosin_tiff_free(void *p);
#endif
