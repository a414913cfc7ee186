//! The local debugging mode needs no MPI installation: a `--no-default-features` build links no
//! MPI library and trains as world size 1. `launch/test.sh` builds that binary and names it in
//! `WAVE_NO_MPI_BIN`.

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_build_without_the_mpi_feature_links_no_mpi_library_and_trains_as_one_process() {
    let Some(bin) = std::env::var_os("WAVE_NO_MPI_BIN") else {
        let msg = "WAVE_NO_MPI_BIN is not set (launch/test.sh builds the MPI-free binary)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    };
    let Some(data) = agnews_test_split() else {
        return;
    };
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
    let libs = String::from_utf8_lossy(&ldd.stdout);
    for mpi_lib in ["libmpi", "libopen-rte", "libopen-pal"] {
        assert!(!libs.contains(mpi_lib), "{mpi_lib} is linked:\n{libs}");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&bin)
        .current_dir(workspace_root())
        .args(["train", "--config", "configs/smoke.toml", "--set"])
        .arg(format!("data.uri={:?}", data.to_str().expect("utf-8")))
        .arg("--set")
        .arg(format!(
            "train.run_dir={:?}",
            tmp.path().to_str().expect("utf-8")
        ))
        .args(["--set", "train.max_steps=5"])
        .output()
        .expect("run");
    assert_eq!(summary(&ok(&out))["steps"], 5);
}
