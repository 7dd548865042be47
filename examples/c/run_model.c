/* run_model.c: load a Tessera artifact through the C ABI, run it, print its outputs.
 *
 *   cc examples/c/run_model.c -Iinclude target/release/libtessera_capi.a -lpthread -ldl -lm -o run_model
 *   ./run_model model.tsa [INPUT.bin ...] [--threads N]
 *
 * Each INPUT.bin holds one input's raw bytes (row-major, the dtype the model reports); without
 * them every input is filled with a fixed ramp so runs are reproducible. With --threads N the
 * model runs on N threads at once and the program checks that every thread got the same bytes.
 * Outputs are printed as `name dtype [dims] values…`, floats with %.6g, then a checksum line.
 * Exit status: 0 ok, 1 a Tessera error (its message is printed), 2 usage.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

struct job {
    const TesseraModel *model;
    const TesseraInput *inputs;
    size_t num_inputs;
    TesseraOutput *outputs;
    size_t num_outputs;
    TesseraStatus status;
};

static void *run_job(void *arg) {
    struct job *j = arg;
    j->status = tessera_model_run(j->model, j->inputs, j->num_inputs, j->outputs, j->num_outputs);
    return NULL;
}

static int fail(const char *what, TesseraStatus s) {
    fprintf(stderr, "error: %s: %s (%s)\n", what, tessera_last_error(), tessera_status_name(s));
    return 1;
}

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* A deterministic ramp in the input's dtype: float (1), int64 (7), int32 (6), else bytes. */
static void fill_ramp(void *data, const TesseraTensorInfo *info) {
    uint64_t n = 1;
    for (size_t d = 0; d < info->rank; d++) n *= info->dims[d];
    for (uint64_t i = 0; i < n; i++) {
        double v = (double)((i * 37) % 101) / 100.0 - 0.5;
        if (info->dtype == 1) ((float *)data)[i] = (float)v;
        else if (info->dtype == 7) ((int64_t *)data)[i] = (int64_t)(i % 7);
        else if (info->dtype == 6) ((int32_t *)data)[i] = (int32_t)(i % 7);
    }
    if (info->dtype != 1 && info->dtype != 7 && info->dtype != 6) memset(data, 0, info->byte_len);
}

static void print_output(const TesseraTensorInfo *info, const void *data) {
    uint64_t n = 1;
    printf("%s %s [", info->name, tessera_dtype_name(info->dtype));
    for (size_t d = 0; d < info->rank; d++) {
        printf(d ? ", %llu" : "%llu", (unsigned long long)info->dims[d]);
        n *= info->dims[d];
    }
    printf("]");
    for (uint64_t i = 0; i < n; i++) {
        if (info->dtype == 1) printf(" %.6g", ((const float *)data)[i]);
        else if (info->dtype == 11) printf(" %.6g", ((const double *)data)[i]);
        else if (info->dtype == 7) printf(" %lld", (long long)((const int64_t *)data)[i]);
        else if (info->dtype == 6) printf(" %d", ((const int32_t *)data)[i]);
        else {
            printf(" (%llu bytes)", (unsigned long long)info->byte_len);
            break;
        }
    }
    printf("\n");
}

int main(int argc, char **argv) {
    const char *artifact = NULL;
    const char *files[64];
    size_t num_files = 0;
    int threads = 1;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--threads") == 0 && a + 1 < argc) threads = atoi(argv[++a]);
        else if (!artifact) artifact = argv[a];
        else if (num_files < 64) files[num_files++] = argv[a];
    }
    if (!artifact || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: %s MODEL.tsa [INPUT.bin ...] [--threads N (1-64)]\n", argv[0]);
        return 2;
    }
    if (tessera_abi_version() != TESSERA_ABI_VERSION) {
        fprintf(stderr, "error: libtessera_capi implements ABI %u, this program was built for %u\n",
                tessera_abi_version(), TESSERA_ABI_VERSION);
        return 1;
    }

    TesseraModel *model = NULL;
    TesseraStatus s = tessera_model_load_file(artifact, NULL, &model);
    if (s != TESSERA_OK) return fail("load", s);
    printf("tessera %s (ABI %u), target %s\n", tessera_version(), tessera_abi_version(), tessera_model_target(model));

    size_t ni = tessera_model_input_count(model), no = tessera_model_output_count(model);
    if (num_files != 0 && num_files != ni) {
        fprintf(stderr, "error: the model takes %zu inputs, %zu files were given\n", ni, num_files);
        tessera_model_free(model);
        return 2;
    }
    TesseraInput *inputs = calloc(ni ? ni : 1, sizeof *inputs);
    for (size_t k = 0; k < ni; k++) {
        TesseraTensorInfo info;
        if ((s = tessera_model_input_info(model, k, &info)) != TESSERA_OK) return fail("input info", s);
        void *data;
        size_t len = info.byte_len;
        if (num_files) {
            data = read_file(files[k], &len);
            if (!data) {
                fprintf(stderr, "error: cannot read %s\n", files[k]);
                return 1;
            }
        } else {
            data = calloc(len ? len : 1, 1);
            fill_ramp(data, &info);
        }
        inputs[k].data = data;
        inputs[k].len = len;
    }

    struct job jobs[64];
    pthread_t tids[64];
    for (int t = 0; t < threads; t++) {
        TesseraOutput *outs = calloc(no ? no : 1, sizeof *outs);
        for (size_t k = 0; k < no; k++) {
            TesseraTensorInfo info;
            if ((s = tessera_model_output_info(model, k, &info)) != TESSERA_OK) return fail("output info", s);
            outs[k].data = malloc(info.byte_len ? info.byte_len : 1);
            outs[k].len = info.byte_len;
        }
        jobs[t] = (struct job){model, inputs, ni, outs, no, TESSERA_OK};
    }
    for (int t = 0; t < threads; t++) pthread_create(&tids[t], NULL, run_job, &jobs[t]);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    for (int t = 0; t < threads; t++)
        if (jobs[t].status != TESSERA_OK) return fail("run", jobs[t].status);
    for (int t = 1; t < threads; t++)
        for (size_t k = 0; k < no; k++)
            if (memcmp(jobs[t].outputs[k].data, jobs[0].outputs[k].data, jobs[0].outputs[k].len) != 0) {
                fprintf(stderr, "error: thread %d got other bytes for output %zu\n", t, k);
                return 1;
            }

    uint64_t checksum = 1469598103934665603ull; /* FNV-1a over every output byte */
    for (size_t k = 0; k < no; k++) {
        TesseraTensorInfo info;
        tessera_model_output_info(model, k, &info);
        print_output(&info, jobs[0].outputs[k].data);
        const unsigned char *b = jobs[0].outputs[k].data;
        for (size_t i = 0; i < jobs[0].outputs[k].len; i++) checksum = (checksum ^ b[i]) * 1099511628211ull;
    }
    printf("threads %d, checksum %016llx\n", threads, (unsigned long long)checksum);

    for (int t = 0; t < threads; t++) {
        for (size_t k = 0; k < no; k++) free(jobs[t].outputs[k].data);
        free(jobs[t].outputs);
    }
    for (size_t k = 0; k < ni; k++) free((void *)inputs[k].data);
    free(inputs);
    tessera_model_free(model);
    return 0;
}
