#include "ctiff_shim.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

static _Thread_local char last_error[512];

static void capture(const char *module, const char *fmt, va_list ap) {
  (void)module;
  vsnprintf(last_error, sizeof last_error, fmt, ap);
}
static void ignore(const char *module, const char *fmt, va_list ap) {
  (void)module; (void)fmt; (void)ap;
}
static void quiet(void) {
  TIFFSetErrorHandler(capture);
  TIFFSetWarningHandler(ignore);
}
static int fail(char *err, size_t errlen, const char *what) {
  if (err && errlen)
    snprintf(err, errlen, "%s%s%s", what, last_error[0] ? ": " : "", last_error);
  return -1;
}

int eosin_tiff_read_rgb(const char *path, int *width, int *height, uint8_t **out, char *err,
                        size_t errlen) {
  quiet();
  last_error[0] = 0;
  *out = NULL;
  TIFF *t = TIFFOpen(path, "r");
  if (!t) return fail(err, errlen, "not a readable TIFF");
  uint32_t w = 0, h = 0;
  TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
  /* At most 2^28 pixels as a plain image (larger TIFFs are slides, read by region), and no more
     pixels than the file could hold at deflate's best ratio, before any allocation. */
  FILE *f = fopen(path, "rb");
  long size = 0;
  if (f) { fseek(f, 0, SEEK_END); size = ftell(f); fclose(f); }
  if (w == 0 || h == 0 || (uint64_t)w * h > ((uint64_t)1 << 28) ||
      (uint64_t)w * h * 3 > (uint64_t)(size > 0 ? size : 0) * 1100 + ((uint64_t)1 << 20)) {
    TIFFClose(t);
    return fail(err, errlen, "TIFF has no image, or declares more pixels than a plain image may have (2^28) or than the file holds");
  }
  uint32_t *rgba = _TIFFmalloc((tmsize_t)w * h * 4);
  if (!rgba) { TIFFClose(t); return fail(err, errlen, "out of memory"); }
  if (!TIFFReadRGBAImageOriented(t, w, h, rgba, ORIENTATION_TOPLEFT, 0)) {
    _TIFFfree(rgba);
    TIFFClose(t);
    return fail(err, errlen, "cannot decode TIFF");
  }
  uint8_t *rgb = malloc((size_t)w * h * 3);
  if (!rgb) { _TIFFfree(rgba); TIFFClose(t); return fail(err, errlen, "out of memory"); }
  for (size_t i = 0; i < (size_t)w * h; i++) {
    uint32_t p = rgba[i];
    uint32_t a = TIFFGetA(p);
    /* libtiff returns premultiplied RGBA: composite over white */
    rgb[3 * i + 0] = (uint8_t)(TIFFGetR(p) + (255 - a));
    rgb[3 * i + 1] = (uint8_t)(TIFFGetG(p) + (255 - a));
    rgb[3 * i + 2] = (uint8_t)(TIFFGetB(p) + (255 - a));
  }
  _TIFFfree(rgba);
  TIFFClose(t);
  *width = (int)w;
  *height = (int)h;
  *out = rgb;
  return 0;
}

int eosin_tiff_write(const char *path, const eosin_tiff_dir *dirs, int count, char *err,
                     size_t errlen) {
  quiet();
  last_error[0] = 0;
  TIFF *t = TIFFOpen(path, "w");
  if (!t) return fail(err, errlen, "cannot create TIFF");
  for (int d = 0; d < count; d++) {
    const eosin_tiff_dir *dir = &dirs[d];
    TIFFSetField(t, TIFFTAG_SUBFILETYPE, (uint32_t)dir->subfile_type);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)dir->width);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)dir->height);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, (uint16_t)dir->compression);
    if (dir->compression == COMPRESSION_JPEG) {
      TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR);
      TIFFSetField(t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);
      TIFFSetField(t, TIFFTAG_JPEGQUALITY, 90);
    } else {
      TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    }
    if (dir->description) TIFFSetField(t, TIFFTAG_IMAGEDESCRIPTION, dir->description);
    if (dir->pixels_per_cm > 0) {
      TIFFSetField(t, TIFFTAG_RESOLUTIONUNIT, RESUNIT_CENTIMETER);
      TIFFSetField(t, TIFFTAG_XRESOLUTION, (float)dir->pixels_per_cm);
      TIFFSetField(t, TIFFTAG_YRESOLUTION, (float)dir->pixels_per_cm);
    }
    size_t stride = (size_t)dir->width * 3;
    if (dir->tile > 0) {
      int ts = dir->tile;
      TIFFSetField(t, TIFFTAG_TILEWIDTH, (uint32_t)ts);
      TIFFSetField(t, TIFFTAG_TILELENGTH, (uint32_t)ts);
      uint8_t *buf = calloc((size_t)ts * ts * 3, 1);
      if (!buf) { TIFFClose(t); return fail(err, errlen, "out of memory"); }
      for (int y = 0; y < dir->height; y += ts)
        for (int x = 0; x < dir->width; x += ts) {
          memset(buf, 255, (size_t)ts * ts * 3);
          int cw = dir->width - x < ts ? dir->width - x : ts;
          int ch = dir->height - y < ts ? dir->height - y : ts;
          for (int r = 0; r < ch; r++)
            memcpy(buf + (size_t)r * ts * 3, dir->rgb + (size_t)(y + r) * stride + (size_t)x * 3,
                   (size_t)cw * 3);
          if (TIFFWriteTile(t, buf, (uint32_t)x, (uint32_t)y, 0, 0) < 0) {
            free(buf);
            TIFFClose(t);
            return fail(err, errlen, "cannot write tile");
          }
        }
      free(buf);
    } else {
      TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, (uint32_t)16);
      for (int r = 0; r < dir->height; r++)
        if (TIFFWriteScanline(t, (void *)(dir->rgb + (size_t)r * stride), (uint32_t)r, 0) < 0) {
          TIFFClose(t);
          return fail(err, errlen, "cannot write scanline");
        }
    }
    if (!TIFFWriteDirectory(t)) { TIFFClose(t); return fail(err, errlen, "cannot write directory"); }
  }
  TIFFClose(t);
  return 0;
}

void eosin_tiff_free(void *p) { free(p); }
