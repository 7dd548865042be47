/* tessera.h: the C ABI of the Tessera runtime (libtessera_capi).
 *
 * Generated from capi/src by cbindgen; do not edit by hand. docs/c-api.md is the guide.
 * Licensed under Apache-2.0. */

#ifndef TESSERA_H
#define TESSERA_H

#include <stddef.h>
#include <stdint.h>

// The version of this ABI. It changes whenever a function, struct or constant of
// `tessera.h` changes incompatibly; compare `tessera_abi_version` with it at startup.
#define TESSERA_ABI_VERSION 1

// A loaded model. Opaque; made by `tessera_model_load_*`, released by `tessera_model_free`.
typedef struct TesseraModel TesseraModel;

// What a fallible function returns: `TESSERA_OK` or one of the `TESSERA_ERR_*` codes.
typedef int32_t TesseraStatus;

// One input or output of a model. The pointers stay valid until the model is freed.
typedef struct TesseraTensorInfo {
  // The graph's name for it, NUL-terminated.
  const char *name;
  // The element type as an ONNX `TensorProto.DataType` code (1 = float, 7 = int64, 10 =
  // float16, 16 = bfloat16, …); `tessera_dtype_name` spells it.
  int32_t dtype;
  // The number of dimensions.
  size_t rank;
  // `rank` dimensions, outermost first.
  const uint64_t *dims;
  // The size of its buffer in bytes: elements × element size, sub-byte types packed as ONNX
  // packs them (two 4-bit values per byte, low nibble first).
  uint64_t byte_len;
} TesseraTensorInfo;

// A read-only input buffer: `len` bytes at `data`, row-major.
typedef struct TesseraInput {
  const void *data;
  size_t len;
} TesseraInput;

// A writable output buffer of `len` bytes at `data`, filled by `tessera_model_run`.
typedef struct TesseraOutput {
  void *data;
  size_t len;
} TesseraOutput;

// Success.
#define TESSERA_OK 0

// A required pointer argument was NULL.
#define TESSERA_ERR_NULL_POINTER 1

// An argument is out of range or malformed (an index, a string that is not UTF-8, a count).
#define TESSERA_ERR_INVALID_ARGUMENT 2

// The artifact is corrupt, truncated, of another format version, or inconsistent.
#define TESSERA_ERR_INVALID_ARTIFACT 3

// The artifact was compiled for another target than the one asked for.
#define TESSERA_ERR_WRONG_TARGET 4

// This machine cannot run the artifact's code (missing CPU features, …).
#define TESSERA_ERR_INCOMPATIBLE_DEVICE 5

// An input buffer has the wrong size, or a bound input has another value.
#define TESSERA_ERR_INVALID_INPUT 6

// An output buffer has the wrong size.
#define TESSERA_ERR_INVALID_OUTPUT 7

// A kernel failed to load or run on the device.
#define TESSERA_ERR_DEVICE 8

// A file could not be read.
#define TESSERA_ERR_IO 9

// The target is unknown, or has no runtime device in this library.
#define TESSERA_ERR_UNSUPPORTED_TARGET 10

// A bug in Tessera (a caught panic); the message says where.
#define TESSERA_ERR_INTERNAL 11

// Bad input data found while running: a data check in a kernel failed (an index out of range,
// a bad size). The message names the node, its op, the input and the value.
#define TESSERA_ERR_INVALID_DATA 12

// A run would need more scratch memory than the runtime's limit allows.
#define TESSERA_ERR_MEMORY_LIMIT 13

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The ABI version the library implements (`TESSERA_ABI_VERSION` of the header it was built
// with). A program should refuse to run when it differs from the header it was compiled with.
uint32_t tessera_abi_version(void);

// The library's version, as a static NUL-terminated string such as `"0.1.0"`.
const char *tessera_version(void);

// The message of the last call on this thread that failed, as a NUL-terminated string (empty
// if none failed yet). It stays valid until the next failing call on the same thread.
const char *tessera_last_error(void);

// A static name for a status code, e.g. `"TESSERA_ERR_INVALID_INPUT"`, or `"unknown status"`.
const char *tessera_status_name(TesseraStatus status);

// Reads, validates and loads the `.tsa` artifact at `path`. `target` names the device
// (`"host"`, `"llvm-x86_64"`, `"interp"`) and must match the artifact's target; NULL means the artifact's own.
// On success `*out` holds the model; on failure it is set to NULL.
//
// # Safety
// `path` is a NUL-terminated string, `target` NULL or one, `out` a valid pointer.
TesseraStatus tessera_model_load_file(const char *path,
                                      const char *target,
                                      struct TesseraModel **out);

// Validates and loads an artifact held in memory (`len` bytes at `data`, the contents of a
// `.tsa` file). The bytes are copied; the caller may free them afterwards. `target` and
// `out` are as for `tessera_model_load_file`.
//
// # Safety
// `data` is valid for reading `len` bytes, `target` NULL or a NUL-terminated string, `out` a
// valid pointer.
TesseraStatus tessera_model_load_memory(const uint8_t *data,
                                        size_t len,
                                        const char *target,
                                        struct TesseraModel **out);

// Releases a model. NULL is allowed and does nothing. No run may be in progress on it.
//
// # Safety
// `model` is NULL or a pointer from `tessera_model_load_*` not freed before.
void tessera_model_free(struct TesseraModel *model);

// The target the model runs on (`"host"`, `"llvm-x86_64"`, `"interp"`), valid while the model lives; NULL if
// `model` is NULL.
//
// # Safety
// `model` is NULL or a live model.
const char *tessera_model_target(const struct TesseraModel *model);

// The number of inputs the model takes (0 if `model` is NULL).
//
// # Safety
// `model` is NULL or a live model.
size_t tessera_model_input_count(const struct TesseraModel *model);

// The number of outputs the model returns (0 if `model` is NULL).
//
// # Safety
// `model` is NULL or a live model.
size_t tessera_model_output_count(const struct TesseraModel *model);

// Describes input `index` (0-based, in the model's order) into `*out`.
//
// # Safety
// `model` is a live model and `out` a valid pointer.
TesseraStatus tessera_model_input_info(const struct TesseraModel *model,
                                       size_t index,
                                       struct TesseraTensorInfo *out);

// Describes output `index` (0-based, in the model's order) into `*out`.
//
// # Safety
// `model` is a live model and `out` a valid pointer.
TesseraStatus tessera_model_output_info(const struct TesseraModel *model,
                                        size_t index,
                                        struct TesseraTensorInfo *out);

// Runs the model. `inputs` holds `num_inputs` buffers, one per model input in order, each
// exactly `byte_len` bytes as `tessera_model_input_info` reports; `outputs` holds
// `num_outputs` writable buffers sized likewise. Nothing is written to the outputs unless the
// inputs are valid. Safe to call from several threads at once on the same model.
//
// # Safety
// `model` is a live model; `inputs` and `outputs` point to arrays of the given counts whose
// `data` pointers are valid for `len` bytes (read for inputs, written for outputs) for the
// duration of the call. Output buffers must not overlap each other or the inputs.
TesseraStatus tessera_model_run(const struct TesseraModel *model,
                                const struct TesseraInput *inputs,
                                size_t num_inputs,
                                const struct TesseraOutput *outputs,
                                size_t num_outputs);

// The ONNX name of a dtype code (`"float"`, `"bfloat16"`, `"int4"`, …), static; `"unknown"`
// for a code Tessera does not know.
const char *tessera_dtype_name(int32_t dtype);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* TESSERA_H */
