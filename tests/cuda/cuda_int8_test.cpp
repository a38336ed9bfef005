// CUDA int8 kernels against the CPU reference (filled in below).
#include "tests/cuda/cuda_test_util.hpp"
