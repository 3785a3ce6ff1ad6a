//! What an interrupted command (SIGINT, SIGTERM) leaves behind, and its clean-up.
//!
//! The edges register what they create until it is complete: `disk` its staging directory
//! beside the output, `git` the pack directory where libgit2 writes `pack_git2_*` temporaries.
//! The binary's signal handler calls [`clean_up`], which removes them and says whether a
//! change was already visible. A step that makes a change visible (a directory renamed into
//! place, a ref moved) runs inside [`critical`], so that the handler sees it done or not
//! started, never half done. The library never installs handlers, prints or exits: the
//! binary does.
//!
//! What a killed process (SIGKILL, a crash) leaves is removed by the next run: `disk` removes
//! unlocked staging directories, `git` the temporaries of the repository it holds the lock of.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Set by [`clean_up`]: long writers stop at their next file instead of racing the removal of
/// the directory they write into.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// True once an interrupt's clean-up has begun: a writer should stop (with an error) rather
/// than create more files.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

#[derive(Default)]
struct State {
    next: u64,
    /// Directories to remove.
    dirs: Vec<(u64, PathBuf)>,
    /// Pack directories whose `pack_git2_*` files to remove.
    pack_dirs: Vec<(u64, PathBuf)>,
    /// Changes made visible so far.
    changed: Vec<String>,
}

static STATE: Mutex<State> = Mutex::new(State {
    next: 0,
    dirs: Vec::new(),
    pack_dirs: Vec::new(),
    changed: Vec::new(),
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a registration while it lives.
#[must_use]
#[derive(Debug)]
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        let mut s = state();
        s.dirs.retain(|(id, _)| *id != self.0);
        s.pack_dirs.retain(|(id, _)| *id != self.0);
    }
}

fn register(f: impl FnOnce(&mut State, u64)) -> Registered {
    let mut s = state();
    s.next += 1;
    let id = s.next;
    f(&mut s, id);
    Registered(id)
}

/// Makes a directory with `make` (which returns it and its path) and registers it for removal,
/// as one step an interrupt cannot split: no directory is left unregistered.
pub fn make_dir_removed_on_interrupt<T>(
    make: impl FnOnce() -> std::io::Result<(T, PathBuf)>,
) -> std::io::Result<(T, Registered)> {
    let mut s = state();
    let (made, path) = make()?;
    s.next += 1;
    let id = s.next;
    s.dirs.push((id, path));
    Ok((made, Registered(id)))
}

/// libgit2's temporary pack files (`pack_git2_*`) in `pack_dir` are removed if the process is
/// interrupted before the registration is dropped.
pub fn remove_pack_temporaries_on_interrupt(pack_dir: &Path) -> Registered {
    register(|s, id| s.pack_dirs.push((id, pack_dir.to_path_buf())))
}

/// Runs `step`, which makes a change visible, so that an interrupt waits for it. `what`, said
/// when the step succeeded, names the change for the message of a later interrupt.
pub fn critical<T, E>(
    what: impl FnOnce() -> String,
    step: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let mut s = state();
    let result = step();
    if result.is_ok() {
        s.changed.push(what());
    }
    result
}

/// Removes everything registered; returns the changes that were already made (none: nothing
/// changed). Called by the signal handler, which then exits: the state stays locked, so no
/// critical step starts after it.
pub fn clean_up() -> Vec<String> {
    STOPPING.store(true, Ordering::Relaxed);
    let s = state();
    for (_, dir) in &s.dirs {
        remove_while_written(dir);
    }
    for (_, dir) in &s.pack_dirs {
        remove_pack_temporaries(dir);
    }
    let changed = s.changed.clone();
    std::mem::forget(s);
    changed
}

/// Removes `dir`, which other threads may still be writing into: a removal that meets a
/// file created meanwhile is tried again (the writers stop at their next file, [`stopping`];
/// on a loaded machine one may take a while to get there).
fn remove_while_written(dir: &Path) {
    for _ in 0..500 {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && dir.exists() => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// Removes libgit2's temporary pack files in `pack_dir` (`pack_git2_*`: a pack being written).
/// Only for a repository whose writers are stopped or hold its lock.
pub fn remove_pack_temporaries(pack_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(pack_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("pack_git2_")
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}
