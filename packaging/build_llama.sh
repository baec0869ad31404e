#!/usr/bin/env bash
# Builds llama-cpp-python once into a wheel folder named after its build flags, then prints
# the wheel's path. Why not plain `pip install llama-cpp-python`:
#  - a native build (-DGGML_NATIVE=ON, the default) uses ggml's AMX kernel on CPUs that report
#    AMX, and it segfaults on the first decode on machines where AMX is not usable;
#  - pip's wheel cache ignores CMAKE_ARGS and silently reuses a wheel built with other flags.
# So: explicit instruction-set flags, --no-cache-dir, and a folder per flag set.
set -euo pipefail
python=${1:?usage: build_llama.sh PYTHON VERSION}
version=${2:?usage: build_llama.sh PYTHON VERSION}
root=$(cd "$(dirname "$0")/.." && pwd)

flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
tag=avx2
if [ -r /proc/cpuinfo ] && ! grep -qw avx2 /proc/cpuinfo; then
  flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF"  # older CPUs
  tag=avx
fi
has() { grep -qw "$1" /proc/cpuinfo 2>/dev/null; }
# Each extension only where this CPU reports it: an AMD EPYC (Zen 4) has AVX-512 VNNI but not
# AVX-VNNI, and a build that assumed both died with SIGILL on the first matrix multiply (seen here).
if [ "$tag" = avx2 ] && has avx512f && has avx512bw && has avx512vl && has avx512dq && has avx512cd; then
  # Measured faster here (prompt 656-702 vs 448 tok/s on a 270M model) and still avoids AMX.
  flags="$flags -DGGML_AVX512=ON"
  has avx512vbmi && flags="$flags -DGGML_AVX512_VBMI=ON"
  has avx512_vnni && flags="$flags -DGGML_AVX512_VNNI=ON"
  has avx512_bf16 && flags="$flags -DGGML_AVX512_BF16=ON"
  tag=avx512
fi
if [ "$tag" != avx ]; then
  has avx_vnni && flags="$flags -DGGML_AVX_VNNI=ON"
  has bmi2 && flags="$flags -DGGML_BMI2=ON"
fi
if [ "$(uname -s)" = Darwin ]; then
  flags="-DGGML_METAL=on"
  tag=metal
elif command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # A CUDA toolkit alone is not enough: without a GPU the build takes long and buys nothing.
  flags="$flags -DGGML_CUDA=on"
  tag="$tag-cuda"
fi

# ggml's own thread pool, not OpenMP: torch (the document embedder) brings a second OpenMP
# runtime whose spinning threads cut generation from 166 to 40 tok/s in the same process (measured).
flags="$flags -DGGML_OPENMP=OFF"
# The folder names the exact flags, so a wheel built with other flags is never picked up.
dir="$root/.wheels/llama-cpp-python-$version-$tag-$(echo "$flags" | sha1sum | cut -c1-8)"
wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "Building llama-cpp-python $version ($tag): this compiles llama.cpp and takes a few minutes..." >&2
  mkdir -p "$dir"
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" \
    "$python" -m pip wheel --no-cache-dir --no-deps -w "$dir" "llama-cpp-python==$version" >&2
  wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl | head -n 1)
fi
echo "$wheel"
