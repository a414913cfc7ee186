//! Links the binary so libtorch (and its CUDA half) are found without LD_LIBRARY_PATH.
//!
//! torch-sys gives the final binary no rpath, and rustc links with `--as-needed`, which drops
//! `libtorch_cuda.so` (nothing references it directly) so CUDA would silently never be detected
//! (DESIGN §3). The NCCL folder of the same Python install is added for the dynamic NCCL loader.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch folder; the binary will need LD_LIBRARY_PATH");
        return;
    };
    let lib = PathBuf::from(lib);
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", lib.display());
    // <site-packages>/torch/lib → <site-packages>/nvidia/nccl/lib
    if let Some(site) = lib.parent().and_then(|torch| torch.parent()) {
        let nccl = site.join("nvidia").join("nccl").join("lib");
        if nccl.is_dir() {
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", nccl.display());
        }
    }
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
}
