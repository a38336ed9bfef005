#!/usr/bin/env bash
# Packs what a lent GPU machine needs to run the CUDA checks without building
# there (its image has nvcc and CMake but not our Debian libraries): the GPU
# test binaries, llmux with its cuda plugin, the shared libraries they load
# that are not glibc or CUDA, stories260K, the toy architecture files of
# tests/data/arch, and a runner. The bundle is .gpu/
# (git-ignored). With the device tool, from the repository root:
#
#   scripts/gpu_bundle.sh                      # here
#   run(command=".gpu/run.sh", carry=[".gpu"])   # there
#
# The device tool carries at most 64 MiB: SmolLM2 (about 85 MB) does not fit,
# so the SmolLM2 engine check is skipped there unless the file is brought in
# pieces within one warm lease (two calls, each carrying half).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
out=$root/.gpu
ninja -C "$build" llmux cuda_kernels_test cuda_engine_test
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/shared/models/stories260K" "$out/shared/golden" "$out/src/tests/data/arch"
cp "$build/llmux" "$build/libllmux_cuda.so" "$build/tests/cuda/cuda_kernels_test" \
   "$build/tests/cuda/cuda_engine_test" "$out/bin/"
strip --strip-debug "$out"/bin/*  # the carry limit is 64 MiB
# Libraries the binaries load, except glibc's and CUDA's (the GPU image has its own).
for f in "$out"/bin/*; do ldd "$f"; done | awk '/=> \//{print $3}' | sort -u |
  grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt)\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
cp "$root/../shared/models/stories260K/stories260K.gguf" "$out/shared/models/stories260K/"
cp "$root/../shared/golden/stories260K_greedy.json" "$out/shared/golden/"
cp "$root"/tests/data/arch/{qwen2,llama3,mistral}.gguf "$out/src/tests/data/arch/"
cp "$root/bench/torch_engine.py" "$root/bench/gpu_colocation.py" "$root/bench/adbs_sweep.py" "$out/"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the CUDA checks from the bundle; results also go to $OUT when set.
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
export LLMUX_CUDA_PLUGIN="$here/bin/libllmux_cuda.so"
export LLMUX_SHARED_DIR="$here/shared" LLMUX_MODEL_CACHE="$here/models" LLMUX_SOURCE_DIR="$here/src"
log=${OUT:-/tmp}/gpu_checks.log
{
  nvidia-smi -L || true
  "$here/bin/cuda_kernels_test"; echo "cuda_kernels_test rc=$?"
  # rc 77: skipped (the case says why: no SmolLM2 file, fewer than two GPUs).
  "$here/bin/cuda_engine_test" "~[smollm2]~[tp]"; echo "cuda_engine_test rc=$?"
  "$here/bin/cuda_engine_test" "[smollm2]"; echo "cuda_engine_test [smollm2] rc=$?"
  "$here/bin/cuda_engine_test" "[tp]"; echo "cuda_engine_test [tp] rc=$?"
  "$here/bin/llmux" bench engine --backend cuda --architecture llama-8b --dtype bf16 --batch 1 8 64 256 --json
  echo "bench rc=$?"
  # What CUDA graphs save: the same decode steps launched kernel by kernel.
  "$here/bin/llmux" bench engine --backend cuda --architecture llama-8b --dtype bf16 --batch 1 8 --eager --json
  echo "bench eager rc=$?"
  # Weight-only int8: half the bytes per decode step.
  "$here/bin/llmux" bench engine --backend cuda --architecture llama-8b --dtype bf16 --batch 1 8 64 --quantization int8 --json
  echo "bench int8 rc=$?"
  python3 "$here/torch_engine.py" --batch 1 8 64 256 --json  # the same shapes in PyTorch
  echo "torch rc=$?"
  # Two models on one GPU: green-context partitions vs time-slicing.
  python3 "$here/gpu_colocation.py" --llmux "$here/bin/llmux" --rates 2 8 --seconds 20
  echo "colocation rc=$?"
} 2>&1 | tee "$log"
RUN
chmod +x "$out/run.sh"
du -sh "$out"
