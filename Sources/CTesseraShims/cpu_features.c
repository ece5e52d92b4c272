#include "tessera_shims.h"

int tessera_cpu_has_avx2(void) { return __builtin_cpu_supports("avx2"); }
int tessera_cpu_has_fma(void) { return __builtin_cpu_supports("fma"); }
int tessera_cpu_has_avx512f(void) { return __builtin_cpu_supports("avx512f"); }
int tessera_cpu_has_avx512bw(void) { return __builtin_cpu_supports("avx512bw"); }
int tessera_cpu_has_avx512vl(void) { return __builtin_cpu_supports("avx512vl"); }
int tessera_cpu_has_avx512dq(void) { return __builtin_cpu_supports("avx512dq"); }
int tessera_cpu_has_avx512vnni(void) { return __builtin_cpu_supports("avx512vnni"); }
int tessera_cpu_has_avx512bf16(void) { return __builtin_cpu_supports("avx512bf16"); }

void tessera_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
