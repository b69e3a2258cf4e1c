// examples/cuda_nccl/kernels.cu - device code of the DiT stand-in (see kernels.hpp).
//
// Deliberately tiny: the heavy lifting is cuBLAS (GEMMs) and NCCL (all-to-all), as in a real DiT
// server; these kernels only fill, apply a pointwise non-linearity, and check a result.
#include "kernels.hpp"

#include <cuda_bf16.h>

#include <cmath>

namespace paraflex::cuda_nccl::kernels {
namespace {

constexpr int block = 256;

// Grid size for a grid-stride loop: enough blocks to fill the GPU, never more than the work needs.
unsigned grid_for(std::size_t n) {
  const std::size_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(blocks < 4096 ? (blocks == 0 ? 1 : blocks) : 4096);
}

// SplitMix64: a well-mixed hash of (seed, index), so values do not depend on the launch shape.
__device__ std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

__global__ void fill_uniform(__nv_bfloat16* dst, std::size_t n, std::uint64_t seed, float scale, std::size_t first) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    const double u = static_cast<double>(mix(seed ^ mix(first + i)) >> 11) * 0x1.0p-53;  // [0, 1)
    dst[i] = __float2bfloat16(static_cast<float>((2.0 * u - 1.0) * scale));
  }
}

__global__ void gelu(__nv_bfloat16* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    const float v = __bfloat162float(x[i]);
    const float t = tanhf(0.7978845608f * (v + 0.044715f * v * v * v));
    x[i] = __float2bfloat16(0.5f * v * (1.0f + t));
  }
}

__global__ void abs_sum(const __nv_bfloat16* x, std::size_t n, float* out) {
  __shared__ float partial[block];
  float acc = 0.0f;
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    const float v = __bfloat162float(x[i]);
    acc += isfinite(v) ? fabsf(v) : NAN;  // one non-finite value poisons the sum on purpose
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int s = block / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(out, partial[0]);
}

}  // namespace

cudaError_t fill_uniform_bf16(void* dst, std::size_t n, std::uint64_t seed, float scale, cudaStream_t stream, std::size_t first) {
  if (n == 0) return cudaSuccess;
  fill_uniform<<<grid_for(n), block, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), n, seed, scale, first);
  return cudaGetLastError();
}

cudaError_t gelu_bf16(void* x, std::size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  gelu<<<grid_for(n), block, 0, stream>>>(static_cast<__nv_bfloat16*>(x), n);
  return cudaGetLastError();
}

cudaError_t abs_sum_bf16(const void* x, std::size_t n, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  abs_sum<<<grid_for(n), block, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), n, out);
  return cudaGetLastError();
}

}  // namespace paraflex::cuda_nccl::kernels
