//! Sets `MESHVM_BUILD_ID`: a SHA-256 over this crate's sources (everything under `src/`, the
//! templates included), its manifest and the workspace's `Cargo.lock`. A render is a function of
//! the fleet, the files it names and this build; the no-op shortcut of `gitops sync` records the
//! id so that a meshvm whose rendering code or dependencies changed never takes it
//! (`spec::inputs`). The version alone would not do: two builds of one version can render
//! differently.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut files = Vec::new();
    collect(&dir.join("src"), &mut files);
    files.sort();
    files.push(dir.join("Cargo.toml"));
    let lock = dir.join("../Cargo.lock");
    if lock.exists() {
        files.push(lock.clone());
    }
    let mut hash = Sha256::new();
    hash.update(std::env::var("CARGO_PKG_VERSION").unwrap_or_default());
    for file in &files {
        let rel = file.strip_prefix(&dir).unwrap_or(file);
        let bytes = std::fs::read(file).unwrap_or_default();
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    let id: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo::rustc-env=MESHVM_BUILD_ID={id}");
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=Cargo.toml");
    println!("cargo::rerun-if-changed={}", lock.display());
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
