#ifndef EOSIN_CPNG_SHIM_H
#define EOSIN_CPNG_SHIM_H
/* libpng's "simplified" API (png_image_*) reports errors through return codes, never longjmp. */
#include <png.h>
#endif
