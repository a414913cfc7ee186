//! Launcher detection and backend choice: pure functions of an environment map.

use std::collections::HashMap;

use tch::Device;
use wave_comm::{Backend, CommConfig, Error, Launcher, MpiThreadLevel, RankInfo};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn detect(pairs: &[(&str, &str)]) -> RankInfo {
    RankInfo::detect(&env(pairs)).expect("detect")
}

fn detect_err(pairs: &[(&str, &str)]) -> String {
    match RankInfo::detect(&env(pairs)) {
        Ok(info) => panic!("expected an error, got {info:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn no_launcher_means_one_process() {
    let info = detect(&[("HOME", "/root")]);
    assert_eq!(info, RankInfo::single());
    assert_eq!(
        (info.rank, info.world_size, info.local_rank, info.launcher),
        (0, 1, 0, Launcher::Single)
    );
}

#[test]
fn open_mpi_variables_give_rank_world_and_local_rank() {
    let info = detect(&[
        ("OMPI_COMM_WORLD_RANK", "3"),
        ("OMPI_COMM_WORLD_SIZE", "8"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
    ]);
    assert_eq!(
        (info.rank, info.world_size, info.local_rank, info.launcher),
        (3, 8, 1, Launcher::OpenMpi)
    );
    assert!(info.launcher.is_mpi());
    assert_eq!(info.master, None);
}

#[test]
fn mpich_pmi_variables_are_detected() {
    let info = detect(&[
        ("PMI_RANK", "2"),
        ("PMI_SIZE", "4"),
        ("MPI_LOCALRANKID", "0"),
    ]);
    assert_eq!(
        (info.rank, info.world_size, info.local_rank, info.launcher),
        (2, 4, 0, Launcher::Mpich)
    );
}

#[test]
fn slurm_variables_are_detected() {
    let info = detect(&[
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "16"),
        ("SLURM_LOCALID", "1"),
    ]);
    assert_eq!(
        (info.rank, info.world_size, info.local_rank, info.launcher),
        (5, 16, 1, Launcher::Slurm)
    );
}

#[test]
fn torchrun_variables_give_the_master_address() {
    let info = detect(&[
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "node-0"),
        ("MASTER_PORT", "29400"),
    ]);
    assert_eq!(
        (info.rank, info.world_size, info.local_rank, info.launcher),
        (1, 2, 1, Launcher::Torchrun)
    );
    assert_eq!(info.master, Some(("node-0".to_string(), 29400)));
}

#[test]
fn master_port_defaults_to_torchrun_s() {
    let info = detect(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "10.0.0.1"),
    ]);
    assert_eq!(
        info.master,
        Some(("10.0.0.1".to_string(), wave_comm::DEFAULT_MASTER_PORT))
    );
}

#[test]
fn indexed_job_uses_completion_index_configured_world_size_and_service_name() {
    let info = detect(&[
        ("JOB_COMPLETION_INDEX", "3"),
        ("WAVE_WORLD_SIZE", "4"),
        ("MASTER_ADDR", "train-0.train-headless"),
        ("MASTER_PORT", "29500"),
    ]);
    assert_eq!(
        (info.rank, info.world_size, info.local_rank, info.launcher),
        (3, 4, 0, Launcher::IndexedJob)
    );
    assert_eq!(
        info.master,
        Some(("train-0.train-headless".to_string(), 29500))
    );
}

#[test]
fn indexed_job_without_world_size_is_an_error_naming_wave_world_size() {
    let msg = detect_err(&[("JOB_COMPLETION_INDEX", "1")]);
    assert!(
        msg.contains("JOB_COMPLETION_INDEX=1") && msg.contains("WAVE_WORLD_SIZE"),
        "{msg}"
    );
}

#[test]
fn mpi_launcher_wins_over_inherited_slurm_variables() {
    let info = detect(&[
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "1"),
        ("OMPI_COMM_WORLD_RANK", "2"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
    ]);
    assert_eq!(
        (info.rank, info.world_size, info.launcher),
        (2, 4, Launcher::OpenMpi)
    );
}

#[test]
fn explicit_overrides_win_over_the_launcher() {
    let info = detect(&[
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("WAVE_RANK", "3"),
        ("WAVE_WORLD_SIZE", "4"),
        ("WAVE_LOCAL_RANK", "1"),
    ]);
    assert_eq!(
        (info.rank, info.world_size, info.local_rank, info.launcher),
        (3, 4, 1, Launcher::Torchrun)
    );
    let alone = detect(&[("WAVE_RANK", "1"), ("WAVE_WORLD_SIZE", "2")]);
    assert_eq!(
        (alone.rank, alone.world_size, alone.launcher),
        (1, 2, Launcher::Explicit)
    );
}

#[test]
fn rank_not_below_world_size_is_an_error_naming_the_variables() {
    let msg = detect_err(&[("OMPI_COMM_WORLD_RANK", "4"), ("OMPI_COMM_WORLD_SIZE", "4")]);
    assert!(
        msg.contains("OMPI_COMM_WORLD_RANK=4") && msg.contains("OMPI_COMM_WORLD_SIZE=4"),
        "{msg}"
    );
    let msg = detect_err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("WAVE_LOCAL_RANK", "2")]);
    assert!(
        msg.contains("WAVE_LOCAL_RANK=2") && msg.contains("local rank"),
        "{msg}"
    );
    let msg = detect_err(&[("RANK", "1"), ("WORLD_SIZE", "4"), ("WAVE_WORLD_SIZE", "1")]);
    assert!(
        msg.contains("RANK=1") && msg.contains("WAVE_WORLD_SIZE=1"),
        "{msg}"
    );
}

#[test]
fn half_set_or_unparsable_variables_are_errors_naming_them() {
    let msg = detect_err(&[("RANK", "1")]);
    assert!(
        msg.contains("RANK=1") && msg.contains("WORLD_SIZE=<unset>"),
        "{msg}"
    );
    let msg = detect_err(&[("SLURM_PROCID", "one"), ("SLURM_NTASKS", "2")]);
    assert!(msg.contains("SLURM_PROCID=one"), "{msg}");
    let msg = detect_err(&[("WAVE_WORLD_SIZE", "2")]);
    assert!(msg.contains("no rank"), "{msg}");
    let msg = detect_err(&[("RANK", "0"), ("WORLD_SIZE", "0")]);
    assert!(msg.contains("WORLD_SIZE=0"), "{msg}");
    let msg = detect_err(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "http"),
    ]);
    assert!(msg.contains("MASTER_PORT=http"), "{msg}");
    let msg = detect_err(&[("MASTER_ADDR", "h"), ("MASTER_PORT", "0")]);
    assert!(msg.contains("MASTER_PORT=0"), "{msg}");
}

#[test]
fn backend_words_parse_and_print() {
    for word in ["auto", "local", "mpi", "nccl"] {
        assert_eq!(word.parse::<Backend>().expect("parse").to_string(), word);
    }
    assert!(matches!(
        "gloo".parse::<Backend>(),
        Err(Error::Config {
            field: "backend",
            ..
        })
    ));
    assert!(CommConfig {
        timeout_s: 0.0,
        ..CommConfig::default()
    }
    .validate()
    .is_err());
}

#[test]
fn comm_section_parses_from_toml_and_rejects_unknown_keys() {
    let cfg: CommConfig = toml::from_str("backend = \"mpi\"\ntimeout_s = 30").expect("parse");
    assert_eq!(
        (cfg.backend, cfg.timeout_s, cfg.init_timeout_s),
        (Backend::Mpi, 30.0, CommConfig::default().init_timeout_s)
    );
    assert!(toml::from_str::<CommConfig>("timeout = 30").is_err());
    assert!(toml::from_str::<CommConfig>("backend = \"gloo\"").is_err());
    assert_eq!(
        cfg.mpi_thread_level,
        MpiThreadLevel::Multiple,
        "the default"
    );
    let funneled: CommConfig = toml::from_str("mpi_thread_level = \"funneled\"").expect("parse");
    assert_eq!(funneled.mpi_thread_level, MpiThreadLevel::Funneled);
    assert!(toml::from_str::<CommConfig>("mpi_thread_level = \"many\"").is_err());
    let err = "many".parse::<MpiThreadLevel>().expect_err("unknown level");
    assert!(err.to_string().contains("comm.mpi_thread_level"), "{err}");
}

#[test]
fn auto_backend_is_local_at_world_size_one_even_on_gpu() {
    let one = RankInfo::single();
    assert_eq!(
        Backend::Auto
            .resolve(&one, Device::Cpu, false)
            .expect("cpu"),
        Backend::Local
    );
    assert_eq!(
        Backend::Auto
            .resolve(&one, Device::Cuda(0), true)
            .expect("gpu"),
        Backend::Local
    );
}

#[test]
fn auto_backend_prefers_nccl_for_cuda_then_mpi_under_mpirun() {
    let mpirun = detect(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")]);
    let on_gpu = Backend::Auto.resolve(&mpirun, Device::Cuda(0), true);
    if cfg!(feature = "nccl") {
        assert_eq!(on_gpu.expect("nccl"), Backend::Nccl);
    }
    let on_cpu = Backend::Auto.resolve(&mpirun, Device::Cpu, true);
    let gpu_without_nccl = Backend::Auto.resolve(&mpirun, Device::Cuda(0), false);
    if cfg!(feature = "mpi") {
        assert_eq!(on_cpu.expect("mpi"), Backend::Mpi);
        assert_eq!(gpu_without_nccl.expect("mpi staged"), Backend::Mpi);
    } else {
        assert!(on_cpu.is_err());
    }
}

#[test]
fn world_size_above_one_without_a_usable_backend_is_an_error() {
    let k8s = detect(&[
        ("JOB_COMPLETION_INDEX", "0"),
        ("WAVE_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "svc"),
    ]);
    let msg = Backend::Auto
        .resolve(&k8s, Device::Cpu, false)
        .expect_err("no CPU backend over TCP")
        .to_string();
    assert!(
        msg.contains("world size 2") && msg.contains("indexed-job"),
        "{msg}"
    );
    let msg = Backend::Local
        .resolve(&k8s, Device::Cpu, false)
        .expect_err("local at world 2")
        .to_string();
    assert!(msg.contains("local"), "{msg}");
    let msg = Backend::Nccl
        .resolve(&k8s, Device::Cpu, true)
        .expect_err("nccl on cpu")
        .to_string();
    assert!(msg.contains("nccl"), "{msg}");
}

#[test]
fn a_timeout_names_the_peer_when_there_is_only_one() {
    let timeout = |rank, world_size| {
        Error::Timeout {
            rank,
            world_size,
            op: wave_comm::Op::AllReduce,
            context: "step 7".into(),
            timeout_s: 10.0,
        }
        .to_string()
    };
    assert_eq!(
        timeout(0, 2),
        "rank 0: all_reduce (step 7) did not complete within 10.0 s: its peer, rank 1, is stuck, \
         slow, dead or unreachable; aborting the job"
    );
    assert!(timeout(1, 2).contains("its peer, rank 0, is stuck"));
    assert!(timeout(3, 8).contains("one of the other 7 ranks is stuck"));
}

#[test]
fn ranks_on_this_node_come_from_each_launcher() {
    let local_size = |pairs: &[(&str, &str)]| detect(pairs).local_size;
    assert_eq!(local_size(&[("HOME", "/root")]), 1, "no launcher");
    assert_eq!(
        local_size(&[
            ("OMPI_COMM_WORLD_RANK", "5"),
            ("OMPI_COMM_WORLD_SIZE", "16"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "8"),
        ]),
        8
    );
    assert_eq!(
        local_size(&[
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "4"),
            ("MPI_LOCALNRANKS", "2")
        ]),
        2
    );
    assert_eq!(
        local_size(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "3"),
            ("LOCAL_WORLD_SIZE", "4"),
        ]),
        4
    );
    // Slurm: the explicit per-node count, else this node's entry of SLURM_TASKS_PER_NODE.
    let slurm = [("SLURM_PROCID", "6"), ("SLURM_NTASKS", "7")];
    assert_eq!(
        local_size(&[slurm[0], slurm[1], ("SLURM_NTASKS_PER_NODE", "3")]),
        3
    );
    for (node, want) in [("0", 2), ("2", 2), ("3", 1)] {
        assert_eq!(
            local_size(&[
                slurm[0],
                slurm[1],
                ("SLURM_TASKS_PER_NODE", "2(x3),1"),
                ("SLURM_NODEID", node),
            ]),
            want,
            "node {node}"
        );
    }
    // One rank per pod in an Indexed Job.
    assert_eq!(
        local_size(&[("JOB_COMPLETION_INDEX", "3"), ("WAVE_WORLD_SIZE", "4")]),
        1
    );
}

#[test]
fn unknown_ranks_per_node_assume_the_whole_world_and_the_override_wins() {
    // Explicit rank variables say nothing about placement: all ranks may share this node.
    let info = detect(&[("WAVE_RANK", "1"), ("WAVE_WORLD_SIZE", "4")]);
    assert_eq!(info.local_size, 4);
    let info = detect(&[
        ("OMPI_COMM_WORLD_RANK", "1"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
        ("WAVE_LOCAL_SIZE", "2"),
    ]);
    assert_eq!(info.local_size, 2);
    // A count that cannot hold this rank's local index is raised to it.
    let info = detect(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "3"),
        ("LOCAL_WORLD_SIZE", "2"),
    ]);
    assert_eq!(info.local_size, 4);
}
