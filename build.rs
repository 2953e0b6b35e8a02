//! With the `cuda` feature, compiles the fused optimizer kernels (`src/train/optim/fused/step.cu`)
//! to PTX with nvcc, as Candle's own kernels are built; without it, does nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "src/train/optim/fused/step.cu";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_ROOT");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    // nvcc as Candle's kernel build finds it: $NVCC, $CUDA_ROOT/bin/nvcc, else the PATH.
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CUDA_ROOT")
                .map(|root| PathBuf::from(root).join("bin/nvcc"))
                .filter(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("optim_step.ptx");
    // PTX for the oldest architecture CUDA 13 supports: the driver compiles it for the card
    // at load time, and the kernels use nothing newer.
    let status = Command::new(&nvcc)
        .args(["--ptx", "-arch=compute_75", "-O3", "-o"])
        .arg(&out)
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("running {} for {source}: {e}", nvcc.display()));
    assert!(status.success(), "{} failed on {source}", nvcc.display());
}
