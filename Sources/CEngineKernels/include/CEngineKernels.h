#pragma once
/* Umbrella header of the CEngineKernels module (an explicit list, so module caches notice new headers). */
#include "tessera_cpu.h"
#include "tessera_engine_kernels.h"
