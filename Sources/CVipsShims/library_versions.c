#include "tessera_vips.h"

#include <dlfcn.h>
#include <stddef.h>

/* OpenSlide comes in through libvips (its openslideload), so its version is asked of the
 * library the dynamic loader finds, not of headers we do not build against. */
const char *tessera_openslide_version(void) {
    void *handle = dlopen("libopenslide.so.0", RTLD_LAZY | RTLD_NOLOAD);
    if (handle == NULL) handle = dlopen("libopenslide.so.0", RTLD_LAZY);
    if (handle == NULL) handle = dlopen("libopenslide.so.1", RTLD_LAZY);
    if (handle == NULL) return NULL;
    const char *(*get_version)(void) = (const char *(*)(void))dlsym(handle, "openslide_get_version");
    /* The handle stays open: the string lives in the library. */
    return get_version != NULL ? get_version() : NULL;
}
