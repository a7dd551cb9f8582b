//! Live capture through tcpdump. libpcap stays tcpdump's: it is not linked into midge, so the
//! broker binary never depends on libpcap.so. tcpdump writes pcap to a pipe packet by packet
//! (`-U`), without waiting for the kernel's buffer to fill (`--immediate-mode`), and the pipe
//! is read like a file ([`crate::inspect`]).
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::InspectError;

/// The program that captures.
const TCPDUMP: &str = "tcpdump";

/// The capture filter for `ports`: `tcp port 1883 or tcp port 8883 ...`.
pub fn capture_filter(ports: &[u16]) -> String {
    ports.iter().map(|p| format!("tcp port {p}")).collect::<Vec<_>>().join(" or ")
}

/// A running tcpdump.
pub struct LiveCapture {
    child: Child,
    interface: String,
    filter: String,
    stderr: Arc<Mutex<Vec<String>>>,
    listening: mpsc::Receiver<()>,
    stderr_thread: Option<JoinHandle<()>>,
}

/// Stops a capture from another thread (a signal handler's).
#[derive(Debug, Clone, Copy)]
pub struct Stopper {
    /// None if std's u32 process id does not fit a pid_t: a negative one would signal a
    /// process group.
    pid: Option<Pid>,
}

impl Stopper {
    /// Asks tcpdump to stop (SIGINT): it writes what it has, and the pipe ends.
    pub fn stop(&self) {
        // It may have exited already: nothing to do then.
        if let Some(pid) = self.pid {
            let _ = kill(pid, Signal::SIGINT);
        }
    }
}

/// How a capture ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveEnd {
    /// Packets the kernel dropped (tcpdump's count): the capture misses them.
    pub dropped: u64,
}

impl LiveCapture {
    /// Starts `tcpdump -U --immediate-mode -n -w - -i INTERFACE 'tcp port P or ...'`.
    pub fn start(interface: &str, ports: &[u16]) -> Result<LiveCapture, InspectError> {
        let filter = capture_filter(ports);
        let mut child = Command::new(TCPDUMP)
            .args(["-U", "--immediate-mode", "-n", "-w", "-", "-i", interface, &filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => InspectError::TcpdumpMissing,
                _ => InspectError::Io(e),
            })?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, listening) = mpsc::channel();
        let stderr_thread = child.stderr.take().map(|pipe| {
            let lines = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("listening on") {
                        let _ = tx.send(());
                    }
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            })
        });
        Ok(LiveCapture { child, interface: interface.to_string(), filter, stderr, listening, stderr_thread })
    }

    /// The capture filter given to tcpdump.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// A handle that stops the capture.
    pub fn stopper(&self) -> Stopper {
        Stopper { pid: i32::try_from(self.child.id()).ok().map(Pid::from_raw) }
    }

    /// Waits until tcpdump says it is listening; fails with what tcpdump said when it
    /// could not start (no permission, no such interface).
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<(), InspectError> {
        match self.listening.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait()?;
                Err(self.failure(status))
            }
        }
    }

    /// The pcap stream.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits for tcpdump to exit (after [`Stopper::stop`], or on its own).
    pub fn finish(mut self) -> Result<LiveEnd, InspectError> {
        let status = self.child.wait()?;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if !status.success() {
            return Err(self.failure(status));
        }
        let dropped = self
            .lines()
            .iter()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel").and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0);
        Ok(LiveEnd { dropped })
    }

    fn lines(&self) -> Vec<String> {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn failure(&mut self, status: ExitStatus) -> InspectError {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let said: Vec<String> = self
            .lines()
            .into_iter()
            .filter(|l| !l.contains("listening on") && !l.contains("packets "))
            .map(|l| l.strip_prefix("tcpdump: ").unwrap_or(&l).to_string())
            .collect();
        let message = if said.is_empty() { "no message".to_string() } else { said.join(" ") };
        let lower = message.to_lowercase();
        if lower.contains("permission") || lower.contains("not permitted") {
            InspectError::TcpdumpPermission { interface: self.interface.clone(), message }
        } else {
            InspectError::TcpdumpFailed { status: status.to_string(), message }
        }
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_names_every_port() {
        assert_eq!(capture_filter(&[1883, 8883, 18830]), "tcp port 1883 or tcp port 8883 or tcp port 18830");
    }
}
