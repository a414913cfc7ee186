//! `cpu | cuda | cuda:N` → `tch::Device`.

use tch::Device;

use crate::Error;

/// Parses `train.device`; CUDA devices must exist on this machine.
pub fn parse_device(spec: &str) -> Result<Device, Error> {
    let bad = |why: String| Err(Error::Config(format!("train.device = {spec:?}: {why}")));
    let index = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            _ => return bad("expected cpu, cuda or cuda:N".into()),
        },
    };
    let available = tch::Cuda::device_count() as usize;
    if index >= available {
        return bad(format!("this machine has {available} CUDA device(s)"));
    }
    Ok(Device::Cuda(index))
}
