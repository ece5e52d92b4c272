#pragma once
/*
 * The one CPU-features answer of the engine's kernels. An ISA level is a set of instruction
 * families a kernel may use; every kernel entry point takes the level to run at, which the
 * engine resolves once per model with tessera_cpu_isa_resolve (so a test can force any lower
 * level, and a VM exposing AVX-512F without VNNI gets the AVX-512 build, not an illegal opcode).
 */
#ifdef __cplusplus
extern "C" {
#endif

enum {
    TESSERA_ISA_PORTABLE = 0,     /* plain C */
    TESSERA_ISA_AVX2 = 1,         /* AVX2 + FMA */
    TESSERA_ISA_AVX2_VNNI = 2,    /* AVX2 + FMA + AVX-VNNI (VEX vpdpbusd) */
    TESSERA_ISA_AVX512 = 3,       /* AVX-512 F/BW/VL/DQ + AVX2 + FMA */
    TESSERA_ISA_AVX512_VNNI = 4,  /* AVX-512 + AVX512-VNNI */
    TESSERA_ISA_AVX512_BF16 = 5,  /* AVX-512 + AVX512-VNNI + AVX512-BF16 */
    TESSERA_ISA_COUNT = 6
};

/** 1 when this CPU (and OS) supports every instruction family of `level`. */
int tessera_cpu_supports_isa(int level);
/** The highest level <= `requested` this CPU supports (a level it lacks falls to the next one down). */
int tessera_cpu_isa_resolve(int requested);
/** Short name of a level ("avx512-vnni", ...). */
const char *tessera_cpu_isa_name(int level);

/** A spin-wait hint (x86 `pause`), for threads polling a shared flag. */
void tessera_cpu_relax(void);

#ifdef __cplusplus
}
#endif
