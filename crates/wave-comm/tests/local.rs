//! The Local backend: world size 1, collectives are no-ops or copies, no MPI runtime needed.

use tch::{Device, Kind, Tensor};
use wave_comm::{Backend, CommConfig, Communicator, Error, Op, RankInfo};

fn local() -> Communicator {
    Communicator::init(&RankInfo::single(), &CommConfig::default(), Device::Cpu)
        .expect("local communicator")
}

#[test]
fn auto_without_a_launcher_gives_a_local_communicator_of_one_rank() {
    let comm = local();
    assert_eq!(
        (
            comm.rank(),
            comm.world_size(),
            comm.backend(),
            comm.is_root()
        ),
        (0, 1, Backend::Local, true)
    );
    assert_eq!(Communicator::local().backend(), Backend::Local);
}

#[test]
fn local_all_reduce_sum_and_mean_leave_values_unchanged() {
    let comm = local();
    let mut t = Tensor::arange(10, (Kind::Float, Device::Cpu));
    let before = t.copy();
    comm.all_reduce_sum_(&mut t, "step 1").expect("sum");
    comm.all_reduce_mean_(&mut t, "step 1").expect("mean");
    assert!(t.equal(&before));
}

#[test]
fn all_reduce_rejects_non_f32_tensors_naming_rank_op_and_context() {
    let comm = local();
    let mut t = Tensor::zeros([4], (Kind::Double, Device::Cpu));
    match comm.all_reduce_sum_(&mut t, "step 7") {
        Err(
            e @ Error::Tensor {
                rank: 0,
                op: Op::AllReduce,
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(
                msg.contains("rank 0") && msg.contains("all_reduce") && msg.contains("step 7"),
                "{msg}"
            );
        }
        other => panic!("expected a tensor error, got {other:?}"),
    }
}

#[test]
fn local_broadcast_and_all_gather_return_this_rank_s_values() {
    let comm = local();
    assert_eq!(
        comm.broadcast_bytes(b"config", "init").expect("broadcast"),
        b"config"
    );
    assert_eq!(
        comm.all_gather_bytes(b"fingerprint", "init")
            .expect("gather"),
        vec![b"fingerprint".to_vec()]
    );
    assert_eq!(
        comm.all_gather_bytes(b"", "init").expect("gather empty"),
        vec![Vec::<u8>::new()]
    );
    let mut t = Tensor::ones([3], (Kind::Int64, Device::Cpu));
    comm.broadcast_(&mut t, "init").expect("broadcast tensor");
    assert!(t.equal(&Tensor::ones([3], (Kind::Int64, Device::Cpu))));
    comm.barrier("end").expect("barrier");
    comm.check_same("config", b"anything")
        .expect("one rank always agrees");
}

#[test]
fn local_backend_refuses_a_world_larger_than_one() {
    let info = RankInfo {
        world_size: 2,
        ..RankInfo::single()
    };
    let cfg = CommConfig {
        backend: Backend::Local,
        ..CommConfig::default()
    };
    let err = Communicator::init(&info, &cfg, Device::Cpu)
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            Error::Unavailable {
                backend: "local",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn invalid_timeouts_are_rejected_before_start() {
    let cfg = CommConfig {
        timeout_s: f64::NAN,
        ..CommConfig::default()
    };
    let err = Communicator::init(&RankInfo::single(), &cfg, Device::Cpu)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("comm.timeout_s"), "{err}");
}
