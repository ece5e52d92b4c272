#include "tessera_cpu.h"

static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
static int has_avx512(void) {
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

int tessera_cpu_supports_isa(int level) {
    switch (level) {
    case TESSERA_ISA_PORTABLE: return 1;
    case TESSERA_ISA_AVX2: return has_avx2();
    case TESSERA_ISA_AVX2_VNNI: return has_avx2() && __builtin_cpu_supports("avxvnni");
    case TESSERA_ISA_AVX512: return has_avx512();
    case TESSERA_ISA_AVX512_VNNI: return has_avx512() && __builtin_cpu_supports("avx512vnni");
    case TESSERA_ISA_AVX512_BF16:
        return has_avx512() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
    default: return 0;
    }
}

int tessera_cpu_isa_resolve(int requested) {
    int level = requested >= TESSERA_ISA_COUNT ? TESSERA_ISA_COUNT - 1 : requested;
    while (level > TESSERA_ISA_PORTABLE && !tessera_cpu_supports_isa(level)) level--;
    return level < 0 ? TESSERA_ISA_PORTABLE : level;
}

const char *tessera_cpu_isa_name(int level) {
    static const char *names[TESSERA_ISA_COUNT] = { "portable", "avx2", "avx2-vnni", "avx512", "avx512-vnni", "avx512-bf16" };
    return level >= 0 && level < TESSERA_ISA_COUNT ? names[level] : "unknown";
}

void tessera_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
