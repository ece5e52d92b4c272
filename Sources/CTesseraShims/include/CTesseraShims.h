#pragma once
/* Umbrella header of the CTesseraShims module (an explicit list, so module caches notice new headers). */
#include "tessera_shims.h"
#include "tessera_http.h"
#include "tessera_engine_kernels.h"
#include "tessera_pictures.h"
