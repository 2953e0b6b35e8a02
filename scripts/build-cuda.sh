#!/usr/bin/env bash
# Build the CUDA flavour of orchestrate on a machine WITHOUT a GPU (and without a system CUDA).
#
# Why this script exists: Candle's `cuda` feature compiles its kernels with nvcc at build time and
# cudarc links against libcuda/libcublas/libcurand/libnvrtc/libcudart. None of that is installed on
# the development machines, so we fetch NVIDIA's compiler and libraries from PyPI (pinned to CUDA
# 13.0: the GPU machines' driver 580 only loads PTX up to ISA 9.0, and cudarc rejects toolkits newer
# than 13.4), give the wheels the unversioned `.so` names a linker wants, and link against a stub
# `libcuda.so` (the driver library ships with the driver, never in a wheel). The stub only
# satisfies the linker: the binary's NEEDED entry is `libcuda.so.1`, which the real driver provides
# on the GPU machine.
#
# Everything lands under target/: the toolkit in target/cuda-toolkit/, the build in target/cuda/.
# Nothing global changes. Re-running skips the download when the toolkit is already there.
#
# Usage: scripts/build-cuda.sh            # release build, compute capability 9.0 (H100/H200)
#   scripts/build-cuda.sh --check           # lint all targets with the feature (CI), no binary
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh   # another card (A100 = 80)
#   CUDA_TOOLKIT_DIR=/somewhere scripts/build-cuda.sh
# Output: target/cuda/release/orchestrate (+ a size and `ldd` report).
set -euo pipefail
case "${1:-}" in
"" | --check) ;;
*) echo "build-cuda.sh: unknown argument '$1' (only --check)" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Under the cargo target directory (CI keeps one outside the clone, so both survive its runs).
toolkit_dir="${CUDA_TOOLKIT_DIR:-${CARGO_TARGET_DIR:-$repo/target}/cuda-toolkit}"
site="$toolkit_dir/site"
target_dir="${CUDA_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target}/cuda}"
compute_cap="${CUDA_COMPUTE_CAP:-90}"

# CUDA 13.0 Update 2: one consistent release of each component.
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)

say() { printf '[build-cuda] %s\n' "$*" >&2; }

# 1. The toolkit wheels (about 1.2 GB unpacked), installed with --target so no environment changes.
stamp="$site/.orchestrate-wheels"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${wheels[*]}" ]]; then
  say "installing CUDA 13.0 wheels into $site"
  rm -rf "$site"
  python3 -m pip install --disable-pip-version-check --no-deps --quiet --target "$site" "${wheels[@]}"
  printf '%s' "${wheels[*]}" >"$stamp"
fi
root="$site/nvidia/cu13"
[[ -x "$root/bin/nvcc" ]] || { say "no nvcc under $root/bin: wheel layout changed?"; exit 1; }

# 2. Unversioned library names (libcublas.so -> libcublas.so.13): `-lcublas` needs them.
for lib in "$root"/lib/lib*.so.*; do
  base="${lib##*/}"
  plain="${base%%.so.*}.so"
  [[ -e "$root/lib/$plain" ]] || ln -s "$base" "$root/lib/$plain"
done

# 3. A link-time stub for the driver library. cudarc is built with `dynamic-linking`, so the binary
#    references every driver entry point it uses; the stub defines each name cudarc declares and
#    carries the soname libcuda.so.1 so the real driver is what loads at run time.
stub_dir="$root/lib/stubs"
if [[ ! -f "$stub_dir/libcuda.so" ]]; then
  cudarc_src="$(cd "$repo" && cargo metadata --format-version 1 --features cuda 2>/dev/null |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')"
  [[ -f "$cudarc_src/src/driver/sys/mod.rs" ]] || { say "cudarc sources not found (run cargo fetch)"; exit 1; }
  mkdir -p "$stub_dir"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc_src/src/driver/sys/mod.rs" |
    awk '{print $4}' | sort -u |
    awk '{printf "int %s(void) { return 999; /* CUDA_ERROR_UNKNOWN: never called, link only */ }\n", $1}' \
      >"$stub_dir/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub_dir/libcuda.so" "$stub_dir/libcuda_stub.c"
  say "stub libcuda.so with $(wc -l <"$stub_dir/libcuda_stub.c") symbols"
fi

# 4. Build. CUDA_COMPUTE_CAP replaces the nvidia-smi query the kernel build would otherwise make;
#    CUDARC_CUDA_VERSION pins cudarc's bindings to the toolkit we ship.
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export PATH="$root/bin:$PATH"
export CUDA_COMPUTE_CAP="$compute_cap" CUDARC_CUDA_VERSION=13000
export CARGO_TARGET_DIR="$target_dir"
if [[ ${1:-} == --check ]]; then
  # CI's check that the feature still compiles, CUDA-only code included, without building
  # the binary: lints every target with the feature on.
  say "cargo clippy --release --features cuda --all-targets (target $target_dir)"
  (cd "$repo" && cargo clippy --release --features cuda --all-targets -- -D warnings)
  exit
fi
say "cargo build --release --features cuda (compute cap $compute_cap, target $target_dir)"
start=$(date +%s)
(cd "$repo" && cargo build --release --features cuda --bin orchestrate)
elapsed=$(($(date +%s) - start))

bin="$target_dir/release/orchestrate"
say "built $bin in ${elapsed}s, $(du -h "$bin" | cut -f1)"
say "ldd (libcuda.so.1 comes from the NVIDIA driver on the GPU machine):"
LD_LIBRARY_PATH="$root/lib" ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc|not found' >&2 || true
