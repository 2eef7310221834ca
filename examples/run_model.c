/* run_model.c: run any generated single-output network from plain C, on raw float32 files.
 *
 *   squeezegen build models/lenet.yaml --weights w.npz --batch 3     # .cu, .h, weights blob
 *   nvcc -O3 -arch=sm_90 -I generated/lenet -DSG_MODEL=lenet -DSG_MACRO=SG_LENET \
 *        '-DSG_HEADER="lenet.h"' examples/run_model.c generated/lenet/lenet.cu -o run_lenet
 *   ./run_lenet generated/lenet/lenet.weights.bin input.f32 output.f32
 *
 * input.f32 holds the whole batch (N x C x H x W float32, little-endian, no header: what
 * NumPy's x.astype("<f4").tofile() writes); output.f32 receives the output the same way. On a
 * failure it prints the API's own message (<model>_last_error()) and exits with 3 (weights),
 * 4 (input file) or 5 (forward pass).
 */
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include SG_HEADER

#define SG_CAT_(a, b) a##b
#define SG_CAT(a, b) SG_CAT_(a, b)
#define SG_API(f) SG_CAT(SG_MODEL, f)              /* SG_API(_forward) -> lenet_forward */
#define SG_CONST(c) SG_CAT(SG_MACRO, c)            /* SG_CONST(_BATCH) -> SG_LENET_BATCH */
typedef SG_API(_net) net_t;

static int fail(int code, const char* what)
{
    fprintf(stderr, "%s: %s\n", what, SG_API(_last_error)());
    return code;
}

int main(int argc, char** argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s model.weights.bin input.f32 output.f32\n", argv[0]);
        return 2;
    }
    const size_t in_floats = (size_t)SG_CONST(_INPUT_FLOATS);
    const size_t out_floats = (size_t)SG_CONST(_OUTPUT0_FLOATS);
    net_t* net = NULL;
    if (SG_API(_create_from_file)(&net, argv[1]) != cudaSuccess) return fail(3, "loading the weights");

    float* host_in = (float*)malloc((in_floats + 1) * sizeof(float));   /* +1: a longer file is refused */
    float* host_out = (float*)malloc(out_floats * sizeof(float));
    FILE* f = fopen(argv[2], "rb");
    size_t got = (f != NULL && host_in != NULL) ? fread(host_in, sizeof(float), in_floats + 1, f) : 0;
    if (f != NULL) fclose(f);
    if (host_out == NULL || got != in_floats) {
        fprintf(stderr, "reading the input: %s must hold exactly %zu float32 values (batch %d)\n",
                argv[2], in_floats, (int)SG_CONST(_BATCH));
        return 4;
    }

    float *d_in = NULL, *d_out = NULL;
    cudaStream_t stream = NULL;
    if (cudaMalloc((void**)&d_in, in_floats * sizeof(float)) != cudaSuccess
        || cudaMalloc((void**)&d_out, out_floats * sizeof(float)) != cudaSuccess
        || cudaStreamCreate(&stream) != cudaSuccess
        || cudaMemcpy(d_in, host_in, in_floats * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
        fprintf(stderr, "preparing the buffers: %s\n", cudaGetErrorString(cudaGetLastError()));
        return 5;
    }
    if (SG_API(_forward)(net, d_in, d_out, stream) != cudaSuccess) return fail(5, "the forward pass");
    cudaError_t err = cudaStreamSynchronize(stream);
    if (err == cudaSuccess)
        err = cudaMemcpy(host_out, d_out, out_floats * sizeof(float), cudaMemcpyDeviceToHost);
    if (err != cudaSuccess) {
        fprintf(stderr, "the forward pass: %s\n", cudaGetErrorString(err));
        return 5;
    }
    f = fopen(argv[3], "wb");
    if (f == NULL || fwrite(host_out, sizeof(float), out_floats, f) != out_floats) {
        fprintf(stderr, "cannot write %s\n", argv[3]);
        return 6;
    }
    fclose(f);
    printf("%s: batch %d, wrote %zu floats to %s\n", argv[0], (int)SG_CONST(_BATCH), out_floats, argv[3]);

    cudaStreamDestroy(stream);
    cudaFree(d_in);
    cudaFree(d_out);
    SG_API(_destroy)(net);
    free(host_in);
    free(host_out);
    return 0;
}
