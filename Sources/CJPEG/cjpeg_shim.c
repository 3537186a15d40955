#include "cjpeg_shim.h"
#include <stdio.h>
#include <jpeglib.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libjpeg signals errors by calling error_exit, which must not return. We longjmp back into the
   C frame that called setjmp, so no Swift frame is ever skipped. */
struct eosin_err {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char *msg;
  size_t msglen;
};

static void eosin_error_exit(j_common_ptr cinfo) {
  struct eosin_err *e = (struct eosin_err *)cinfo->err;
  char buf[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, buf);
  if (e->msg && e->msglen) snprintf(e->msg, e->msglen, "%s", buf);
  longjmp(e->jump, 1);
}

/* Silent, but warnings (corrupt or truncated data, which libjpeg fills with grey) are counted. */
static void eosin_silent(j_common_ptr cinfo, int level) {
  if (level < 0) cinfo->err->num_warnings++;
}

int eosin_jpeg_decode(const uint8_t *data, size_t len, int *width, int *height, uint8_t **out,
                      char *err, size_t errlen) {
  struct jpeg_decompress_struct cinfo;
  struct eosin_err jerr;
  uint8_t *volatile buf = NULL;
  *out = NULL;
  memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = eosin_error_exit;
  jerr.pub.emit_message = eosin_silent;
  jerr.msg = err;
  jerr.msglen = errlen;
  if (setjmp(jerr.jump)) {
    jpeg_destroy_decompress(&cinfo);
    free(buf);
    return -1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, (unsigned char *)data, (unsigned long)len);
  jpeg_read_header(&cinfo, TRUE);
  /* Limits before any allocation: at most 2^28 pixels, and no more than 1024 pixels per byte of
     input (a real JPEG spends at least a few bits on every 8x8 block), so a small file that
     declares a huge image is refused instead of decoded into gigabytes of grey. */
  {
    size_t px = (size_t)cinfo.image_width * (size_t)cinfo.image_height;
    if (px > ((size_t)1 << 28) || px > len * 1024 + ((size_t)1 << 20)) {
      if (err && errlen)
        snprintf(err, errlen, "declares %ux%u pixels, beyond the limit for a %zu-byte file (at most 2^28 pixels)",
                 (unsigned)cinfo.image_width, (unsigned)cinfo.image_height, len);
      jpeg_destroy_decompress(&cinfo);
      return -1;
    }
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  int w = (int)cinfo.output_width, h = (int)cinfo.output_height;
  if (cinfo.output_components != 3 || w <= 0 || h <= 0 || (size_t)w * (size_t)h > ((size_t)1 << 31)) {
    if (err && errlen) snprintf(err, errlen, "unsupported JPEG layout (%dx%d, %d components)", w, h,
                                cinfo.output_components);
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  buf = malloc((size_t)w * (size_t)h * 3);
  if (!buf) {
    if (err && errlen) snprintf(err, errlen, "out of memory");
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = buf + (size_t)cinfo.output_scanline * (size_t)w * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  if (jerr.pub.num_warnings > 0) {
    /* libjpeg went on over truncated or corrupt data: the missing part would be grey fill. */
    if (err && errlen) snprintf(err, errlen, "truncated or corrupt JPEG data (%ld warnings)", jerr.pub.num_warnings);
    free(buf);
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  *width = w;
  *height = h;
  *out = buf;
  return 0;
}

int eosin_jpeg_encode(const uint8_t *rgb, int width, int height, int quality, uint8_t **out,
                      size_t *outlen, char *err, size_t errlen) {
  struct jpeg_compress_struct cinfo;
  struct eosin_err jerr;
  unsigned char *volatile mem = NULL;
  unsigned long memlen = 0;
  *out = NULL;
  *outlen = 0;
  memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = eosin_error_exit;
  jerr.pub.emit_message = eosin_silent;
  jerr.msg = err;
  jerr.msglen = errlen;
  if (setjmp(jerr.jump)) {
    jpeg_destroy_compress(&cinfo);
    free(mem);
    return -1;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, (unsigned char **)&mem, &memlen);
  cinfo.image_width = (JDIMENSION)width;
  cinfo.image_height = (JDIMENSION)height;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = (JSAMPROW)(rgb + (size_t)cinfo.next_scanline * (size_t)width * 3);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  *out = mem;
  *outlen = memlen;
  return 0;
}

void eosin_jpeg_free(void *p) { free(p); }
