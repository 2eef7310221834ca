/* squeezeseg_demo.c: run the generated squeezeseg network from plain C, no Python.
 *
 *   squeezegen build models/squeezeseg.yaml --weights w.npz          # .cu, .h, weights blob
 *   nvcc -O3 -arch=sm_90 -I generated/squeezeseg examples/squeezeseg_demo.c \
 *        generated/squeezeseg/squeezeseg.cu -o squeezeseg_demo
 *   ./squeezeseg_demo generated/squeezeseg/squeezeseg.weights.bin
 *
 * It feeds a constant image, times 100 forward passes with CUDA events and prints the mean of
 * the output (the paper's Table 3 check, for whatever weights the blob holds).
 */
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "squeezeseg.h"

#define CHECK(call)                                                                        \
    do {                                                                                   \
        cudaError_t err_ = (call);                                                         \
        if (err_ != cudaSuccess) {                                                         \
            fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(err_));           \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

int main(int argc, char** argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s squeezeseg.weights.bin\n", argv[0]);
        return 2;
    }
    squeezeseg_net* net = NULL;
    CHECK(squeezeseg_create_from_file(&net, argv[1]));

    const size_t in_bytes = (size_t)SG_SQUEEZESEG_INPUT_FLOATS * sizeof(float);
    const size_t out_bytes = (size_t)SG_SQUEEZESEG_OUTPUT0_FLOATS * sizeof(float);
    float* host_in = (float*)malloc(in_bytes);
    float* host_out = (float*)malloc(out_bytes);
    if (host_in == NULL || host_out == NULL) return 1;
    for (size_t i = 0; i < (size_t)SG_SQUEEZESEG_INPUT_FLOATS; ++i) host_in[i] = 0.5f;

    float *d_in = NULL, *d_out = NULL;
    cudaStream_t stream;
    CHECK(cudaMalloc((void**)&d_in, in_bytes));
    CHECK(cudaMalloc((void**)&d_out, out_bytes));
    CHECK(cudaStreamCreate(&stream));
    CHECK(cudaMemcpy(d_in, host_in, in_bytes, cudaMemcpyHostToDevice));

    CHECK(squeezeseg_forward(net, d_in, d_out, stream));          /* warm-up */
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < 100; ++i) CHECK(squeezeseg_forward(net, d_in, d_out, stream));
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));

    CHECK(cudaMemcpy(host_out, d_out, out_bytes, cudaMemcpyDeviceToHost));
    double sum = 0.0;
    for (size_t i = 0; i < (size_t)SG_SQUEEZESEG_OUTPUT0_FLOATS; ++i) sum += host_out[i];
    printf("batch %d: %.3f ms per forward pass (plain launches), output mean %.6f\n",
           SG_SQUEEZESEG_BATCH, ms / 100.0f, sum / (double)SG_SQUEEZESEG_OUTPUT0_FLOATS);

    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
    cudaFree(d_in);
    cudaFree(d_out);
    squeezeseg_destroy(net);
    free(host_in);
    free(host_out);
    return 0;
}
