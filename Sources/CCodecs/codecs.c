#include "CCodecs.h"
int pt_codecs_version(void) { return 1; }
