//! Progress on a terminal for long commands (`host-evacuate`,
//! `pool-ha-enable`): a line on stderr redrawn five times a second, from a
//! thread with its own connection to the pool. Nothing is drawn in a pipe,
//! with `--minimal`, or when stdin is not a terminal, so scripts see
//! exactly what xe prints.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(200);
const WIDTH: usize = 30;

/// Whether progress may be drawn: both ends are a terminal, no `--minimal`.
pub fn wanted(minimal: bool) -> bool {
    !minimal && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The line for `done` of `total` (a bar), or for an unknown amount (the
/// seconds so far).
pub fn line(label: &str, state: Option<(u64, u64)>, elapsed: Duration) -> String {
    match state {
        Some((done, total)) if total > 0 => {
            let filled = (WIDTH as u64 * done.min(total) / total) as usize;
            format!(
                "{label} [{}{}] {done}/{total}",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled)
            )
        }
        _ => format!("{label} ({} s)", elapsed.as_secs()),
    }
}

/// A progress line being drawn; [`Progress::finish`] clears it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Draw `label` with what `poll` reports, until finished. `poll` runs on
    /// the drawing thread; `None` means "not known (yet)".
    pub fn start(label: String, mut poll: impl FnMut() -> Option<(u64, u64)> + Send + 'static) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let text = line(&label, poll(), start.elapsed());
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K{text}");
                let _ = err.flush();
                drop(err);
                std::thread::sleep(TICK);
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop drawing and clear the line.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_elapsed_time() {
        let l = line("Evacuating host2:", Some((1, 4)), Duration::ZERO);
        assert_eq!(
            l,
            format!("Evacuating host2: [{}{}] 1/4", "#".repeat(7), ".".repeat(23))
        );
        assert_eq!(line("Enabling HA", None, Duration::from_secs(3)), "Enabling HA (3 s)");
        assert!(
            line("x", Some((9, 4)), Duration::ZERO).ends_with("] 9/4"),
            "never overflows the bar"
        );
    }
}
