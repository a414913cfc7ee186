//! Compiles the in-place all-reduce shim (feature `mpi`) and links the examples so that libtorch's
//! CUDA half is loaded.
//!
//! rustc links with `--as-needed`, which drops `libtorch_cuda.so` (nothing references it
//! directly), and CUDA would silently never be detected (DESIGN §3). The examples are the GPU
//! check's binaries, so they keep it; the library and tests are left alone.

fn main() {
    println!("cargo:rerun-if-changed=csrc/allreduce.c");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg-examples=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    #[cfg(feature = "mpi")]
    compile_shim();
}

#[cfg(feature = "mpi")]
fn compile_shim() {
    let lib = match build_probe_mpi::probe() {
        Ok(lib) => lib,
        Err(errors) => {
            let reasons: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!(
                "feature `mpi`: no MPI library found (install libopenmpi-dev): {}",
                reasons.join("; ")
            );
        }
    };
    let mut build = cc::Build::new();
    build.file("csrc/allreduce.c");
    for dir in &lib.include_paths {
        build.include(dir);
    }
    build.compile("wave_comm_mpi_shim");
}
