// examples/cuda_nccl/kernels.hpp - the few device kernels the DiT stand-in needs, behind plain C++.
//
// Compiled by nvcc (kernels.cu) and called from host code compiled by g++: this header holds no
// device code and no paraflex headers, so neither compiler ever sees the other's dialect. Matrices
// are bf16 (2 bytes per element, as DiT activations are); every launch is asynchronous on `stream`.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace paraflex::cuda_nccl::kernels {

/// n bf16 values uniform in [-scale, scale]; element i is a pure function of (seed, first + i). Every
/// device that fills with the same seed holds the same bytes (weights are replicated like a real
/// model's), and a shard filled with first = its offset matches the same slice of an unsharded fill.
cudaError_t fill_uniform_bf16(void* dst, std::size_t n, std::uint64_t seed, float scale, cudaStream_t stream,
                              std::size_t first = 0);

/// x = gelu(x) in place (tanh approximation): the MLP's non-linearity between the two GEMMs.
cudaError_t gelu_bf16(void* x, std::size_t n, cudaStream_t stream);

/// *out (device float) = sum of |x|, NaN when any value is not finite. *out must be zeroed first
/// (cudaMemsetAsync); the decode stand-in uses it to check that a latent survived its journey.
cudaError_t abs_sum_bf16(const void* x, std::size_t n, float* out, cudaStream_t stream);

}  // namespace paraflex::cuda_nccl::kernels
