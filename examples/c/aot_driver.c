/* aot_driver.c: runs a model compiled ahead of time by `tessera compile --emit static-lib`.
 *
 *   aot_driver IN_DIR OUT_DIR
 *
 * Reads input k from IN_DIR/input_k.pb (a serialized ONNX TensorProto, as the ONNX node tests
 * and `tessera run --inputs` use) or, when there is no .pb, from IN_DIR/input_k.bin (the raw
 * bytes, exactly the input's size). Runs the model once and writes output k's raw bytes to
 * OUT_DIR/output_k.bin. Exit status 0 on success, 1 on a failed run or bad input (the reason
 * on stderr), 2 on a usage error.
 *
 * The driver serves any one model: it reads the model's header through the generic
 * TESSERA_AOT_* names. Build it against a library, natively or for a board:
 *
 *   tessera compile model.onnx --target llvm-aarch64 --emit static-lib -o out/model.a
 *   aarch64-linux-gnu-gcc -O2 -static -I out examples/c/aot_driver.c out/model.a -lm -o drv
 *   qemu-aarch64 ./drv in/ outs/
 *
 * (C11; the header is found as "model.h"; give -DTESSERA_AOT_HEADER='"other.h"' for another name).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TESSERA_AOT_HEADER
#define TESSERA_AOT_HEADER "model.h"
#endif
#include TESSERA_AOT_HEADER

#if TESSERA_AOT_ABI_VERSION != 1
#error "this driver speaks version 1 of the Tessera AOT interface"
#endif

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define M(x) CAT(TESSERA_AOT_MODEL, x)

static int fail(const char *what, const char *path) {
    fprintf(stderr, "aot_driver: %s `%s`: %s\n", what, path, strerror(errno));
    return 0;
}

/* Reads a whole file; returns NULL (reason printed) on failure or when it is missing and
 * `quiet_missing` is set. */
static unsigned char *read_file(const char *path, size_t *len, int quiet_missing) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (!(quiet_missing && errno == ENOENT)) fail("cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            fprintf(stderr, "aot_driver: out of memory reading `%s`\n", path);
            return NULL;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        buf = realloc(buf, cap);
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        fail("cannot read", path);
        return NULL;
    }
    *len = n;
    return buf;
}

/* ---- a minimal TensorProto reader: dims, data_type, raw_data and the typed fields ---- */

static int varint(const unsigned char **p, const unsigned char *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return 0;
        unsigned char b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 1;
    }
    return 0;
}

/* Appends `n` bytes to the growing buffer `out`. */
static int append(unsigned char **out, size_t *len, size_t *cap, const void *src, size_t n) {
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *len + n) c *= 2;
        unsigned char *b = realloc(*out, c);
        if (!b) return 0;
        *out = b;
        *cap = c;
    }
    memcpy(*out + *len, src, n);
    *len += n;
    return 1;
}

/* The element bytes of a TensorProto: raw_data (field 9) as is, or the values of
 * float_data (4), int32_data (5, for int32 tensors), int64_data (7), double_data (10) or
 * uint64_data (11), packed or not. Strings and other encodings are refused. */
static unsigned char *tensor_bytes(const unsigned char *p, size_t n, size_t *out_len,
                                   const char *path) {
    const unsigned char *end = p + n;
    unsigned char *out = NULL;
    size_t len = 0, cap = 0;
    int64_t data_type = 0;
    int typed_int32 = 0;
    while (p < end) {
        uint64_t key, v;
        if (!varint(&p, end, &key)) goto bad;
        unsigned field = (unsigned)(key >> 3), wire = (unsigned)(key & 7);
        if (wire == 0) {
            if (!varint(&p, end, &v)) goto bad;
            if (field == 2) data_type = (int64_t)v;
            else if (field == 5) {
                int32_t x = (int32_t)v;
                typed_int32 = 1;
                if (!append(&out, &len, &cap, &x, 4)) goto oom;
            } else if (field == 7) {
                if (!append(&out, &len, &cap, &v, 8)) goto oom;
            } else if (field == 11) {
                if (!append(&out, &len, &cap, &v, 8)) goto oom;
            }
        } else if (wire == 1) {
            if (end - p < 8) goto bad;
            if (field == 10 && !append(&out, &len, &cap, p, 8)) goto oom;
            p += 8;
        } else if (wire == 5) {
            if (end - p < 4) goto bad;
            if (field == 4 && !append(&out, &len, &cap, p, 4)) goto oom;
            p += 4;
        } else if (wire == 2) {
            if (!varint(&p, end, &v) || v > (uint64_t)(end - p)) goto bad;
            const unsigned char *q = p, *qe = p + v;
            if (field == 9 || field == 4 || field == 10) {
                if (!append(&out, &len, &cap, q, (size_t)v)) goto oom;
            } else if (field == 5 || field == 7 || field == 11) {
                while (q < qe) {
                    uint64_t x;
                    if (!varint(&q, qe, &x)) goto bad;
                    if (field == 5) {
                        int32_t y = (int32_t)x;
                        typed_int32 = 1;
                        if (!append(&out, &len, &cap, &y, 4)) goto oom;
                    } else if (!append(&out, &len, &cap, &x, 8)) goto oom;
                }
            } else if (field == 6) {
                fprintf(stderr, "aot_driver: `%s` holds strings, which the library cannot take\n", path);
                free(out);
                return NULL;
            }
            p += v;
        } else {
            goto bad;
        }
    }
    /* int32_data also carries the narrow types (int8, float16, bool, ...), one per entry:
     * only an int32 tensor's is its own storage. */
    if (typed_int32 && data_type != 6) {
        fprintf(stderr, "aot_driver: `%s` keeps data type %lld in int32_data; write it as raw_data or .bin\n",
                path, (long long)data_type);
        free(out);
        return NULL;
    }
    *out_len = len;
    if (!out) out = malloc(1);
    return out;
bad:
    fprintf(stderr, "aot_driver: `%s` is not a serialized TensorProto\n", path);
    free(out);
    return NULL;
oom:
    fprintf(stderr, "aot_driver: out of memory reading `%s`\n", path);
    free(out);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN_DIR OUT_DIR\n  model %s for %s: %d inputs, %d outputs\n",
                argv[0], TESSERA_AOT_TARGET, M(_input_names)[0] ? M(_input_names)[0] : "-",
                TESSERA_AOT_NUM_INPUTS, TESSERA_AOT_NUM_OUTPUTS);
        return 2;
    }
    const void *inputs[TESSERA_AOT_NUM_INPUTS + 1];
    void *outputs[TESSERA_AOT_NUM_OUTPUTS + 1];
    char path[4096];
    for (int k = 0; k < TESSERA_AOT_NUM_INPUTS; k++) {
        size_t len = 0;
        unsigned char *data;
        snprintf(path, sizeof path, "%s/input_%d.pb", argv[1], k);
        unsigned char *pb = read_file(path, &len, 1);
        if (pb) {
            data = tensor_bytes(pb, len, &len, path);
            free(pb);
        } else {
            snprintf(path, sizeof path, "%s/input_%d.bin", argv[1], k);
            data = read_file(path, &len, 0);
        }
        if (!data) return 1;
        if (len != M(_input_bytes)[k]) {
            fprintf(stderr, "aot_driver: input %d `%s` (%s %s) needs %llu bytes, `%s` holds %llu\n", k,
                    M(_input_names)[k], M(_input_dtypes)[k], M(_input_shapes)[k],
                    (unsigned long long)M(_input_bytes)[k], path, (unsigned long long)len);
            return 1;
        }
        inputs[k] = data;
    }
    for (int k = 0; k < TESSERA_AOT_NUM_OUTPUTS; k++) {
        outputs[k] = malloc(M(_output_bytes)[k] ? M(_output_bytes)[k] : 1);
        if (!outputs[k]) {
            fprintf(stderr, "aot_driver: out of memory for output %d\n", k);
            return 1;
        }
    }
    size_t ws_bytes = TESSERA_AOT_WORKSPACE_BYTES;
    ws_bytes = (ws_bytes + TESSERA_AOT_WORKSPACE_ALIGN - 1) / TESSERA_AOT_WORKSPACE_ALIGN *
               TESSERA_AOT_WORKSPACE_ALIGN;
    void *ws = aligned_alloc(TESSERA_AOT_WORKSPACE_ALIGN, ws_bytes);
    if (!ws) {
        fprintf(stderr, "aot_driver: cannot allocate %zu bytes of workspace\n", ws_bytes);
        return 1;
    }
    int32_t status = M(_run)(inputs, outputs, ws);
    if (status != 0) {
        fprintf(stderr, "aot_driver: run failed (status %d): %s [value %lld]\n", (int)status,
                M(_error_message)(status), (long long)M(_error_value)(ws));
        return 1;
    }
    for (int k = 0; k < TESSERA_AOT_NUM_OUTPUTS; k++) {
        snprintf(path, sizeof path, "%s/output_%d.bin", argv[2], k);
        FILE *f = fopen(path, "wb");
        if (!f) return fail("cannot create", path), 1;
        size_t n = M(_output_bytes)[k];
        if (fwrite(outputs[k], 1, n, f) != n || fclose(f) != 0) return fail("cannot write", path), 1;
    }
    return 0;
}
