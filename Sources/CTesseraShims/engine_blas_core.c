/*
 * OpenBLAS kernel choice. Debian 12's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not know AMD family
 * 0x1A (Zen 5) and falls back to its AVX2 "Haswell" kernels although the CPU has AVX-512; its
 * SkylakeX kernels run the engine's GEMMs (Winograd, 1x1 / grouped convs) about 15% faster on
 * such a host. Before main (OpenBLAS's own constructor has run, nothing has called it yet), if
 * the user did not pick a core with OPENBLAS_CORETYPE and TESSERA_ENGINE_BLAS_AVX512 is not "0",
 * an AVX2-only core is re-selected as SkylakeX through OpenBLAS's exported dynamic-arch entry
 * points (looked up at run time: a build without them is left alone).
 */
#define _GNU_SOURCE
#include "tessera_engine_kernels.h"
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static const char *g_core_before = "";

static int has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

__attribute__((constructor)) static void tessera_engine_blas_core_init(void) {
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *knob = getenv("TESSERA_ENGINE_BLAS_AVX512");
    if (knob && strcmp(knob, "0") == 0) return;
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (!corename || !quit || !init || !has_avx512()) return;
    const char *now = corename();
    if (!now) return;
    g_core_before = now;
    if (strcasecmp(now, "Haswell") != 0 && strcasecmp(now, "Zen") != 0) return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    quit();
    init();
    unsetenv("OPENBLAS_CORETYPE");
}

const char *tessera_engine_blas_core_before(void) { return g_core_before; }
