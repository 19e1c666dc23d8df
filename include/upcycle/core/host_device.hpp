#pragma once
// UPCYCLE_HD marks functions that are compiled for the host and, under nvcc, for the device too:
// index math and random-number code shared by the CPU backend, the CUDA kernels and the CPU tests
// that check the CUDA kernels' launch geometry without a GPU.
#ifdef __CUDACC__
#define UPCYCLE_HD __host__ __device__
#else
#define UPCYCLE_HD
#endif
