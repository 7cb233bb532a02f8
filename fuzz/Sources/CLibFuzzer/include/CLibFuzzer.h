#ifndef SWARM_CLIBFUZZER_H
#define SWARM_CLIBFUZZER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (libclang_rt.fuzzer, linked by -sanitize=fuzzer): parses the libFuzzer
/// options in argv and fuzzes `callback`. Only referenced by builds with SWARM_LIBFUZZER.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
