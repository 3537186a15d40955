#ifndef EOSIN_COPENSLIDE_SHIM_H
#define EOSIN_COPENSLIDE_SHIM_H
#include <openslide.h>
#endif
