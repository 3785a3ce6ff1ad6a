//! A progress bar on stderr for long steps: redrawn in place when stderr is a terminal,
//! nothing at all otherwise (a log or a CI job gets the result line only).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Steps smaller than this are not worth a bar.
const BAR_THRESHOLD: usize = 100;

pub struct Bar {
    tty: bool,
    drawn: Option<(&'static str, Instant)>,
}

impl Bar {
    /// A bar that draws only when stderr is a terminal and `quiet` is false.
    pub fn new(quiet: bool) -> Bar {
        Bar {
            tty: !quiet && std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    /// `done` of `total` in the step `label`; redrawn at most every 80 ms, and at the end.
    pub fn show(&mut self, label: &'static str, done: usize, total: usize) {
        if !self.tty || total < BAR_THRESHOLD {
            return;
        }
        let now = Instant::now();
        let due = match self.drawn {
            Some((l, at)) => l != label || done == total || now - at > Duration::from_millis(80),
            None => true,
        };
        if due {
            const WIDTH: usize = 30;
            let filled = WIDTH * done.min(total) / total;
            eprint!(
                "\r{label:>14} [{}{}] {done}/{total}",
                "#".repeat(filled),
                "-".repeat(WIDTH - filled)
            );
            self.drawn = Some((label, now));
            if done == total {
                eprintln!();
                self.drawn = None;
            }
        }
    }

    /// Ends a bar left mid-line.
    pub fn finish(&mut self) {
        if self.drawn.take().is_some() {
            eprintln!();
        }
    }
}
