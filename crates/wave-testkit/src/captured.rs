//! A child process whose output is read while it runs.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;

/// A child process whose stdout and stderr are read by two threads as it runs.
///
/// A test that polls a long-running trainer while its output goes to a pipe nobody reads stalls
/// the trainer as soon as the pipe's buffer (64 KiB on Linux) fills: the child blocks in a log
/// write, stops making progress, and the test times out for a reason that has nothing to do with
/// what it checks. `Captured` keeps the pipes drained and hands the whole output back at the end.
pub struct Captured {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Captured {
    /// Starts `cmd` with stdout and stderr piped and drained.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Captured> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Ok(Captured {
            child,
            stdout,
            stderr,
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has ended.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends SIGKILL to the child.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()
    }

    /// Waits for the child to end and returns its status and everything it wrote.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        let status = self.child.wait()?;
        let join = |h: JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
        Ok(Output {
            status,
            stdout: join(self.stdout),
            stderr: join(self.stderr),
        })
    }
}

/// `Command::spawn_captured()`: [`Captured::spawn`] at the end of a builder chain.
pub trait SpawnCaptured {
    /// Starts the command with its stdout and stderr drained (see [`Captured`]).
    fn spawn_captured(&mut self) -> std::io::Result<Captured>;
}

impl SpawnCaptured for Command {
    fn spawn_captured(&mut self) -> std::io::Result<Captured> {
        Captured::spawn(self)
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the capture; what was read so far is still returned.
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}
