use std::path::Path;
use std::process::ExitCode;

use super::FleetArg;
use crate::command_error::{CmdResult, CommandError, to_stdout};

/// Render the GitOps tree of the fleet: a directory, or the objects on stdout.
///
/// The tree holds the Istio install files (for `istioctl install -f`), the mesh-wide objects,
/// one directory per workload group with one Kustomize overlay per VM (its WorkloadEntry and
/// its non-secret bootstrap files), and the Argo CD and/or Flux manifests that apply it. See
/// its README.md. Nothing is written when the fleet has a problem.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("to").required(true).multiple(false))]
pub struct Args {
    #[command(flatten)]
    fleet: FleetArg,
    /// Write the tree as DIR, replacing a tree meshvm rendered there before (atomically: DIR
    /// holds the old tree or the new one, never a mix). A directory meshvm did not render is
    /// left alone.
    #[arg(short = 'o', long = "output", value_name = "DIR", group = "to")]
    output: Option<std::path::PathBuf>,
    /// Print every Kubernetes object of the tree as one multi-document YAML stream instead.
    #[arg(long, group = "to")]
    stdout: bool,
}

pub fn run(args: Args) -> CmdResult {
    let source = args.fleet.load()?;
    let rendered = meshvm::render::render(&source.fleet);
    match args.output {
        None => to_stdout(|out| out.write_all(rendered.object_stream().as_bytes()))?,
        Some(dir) => {
            check_replaceable(&dir, &source.path)?;
            meshvm::disk::write_dir_atomically(&rendered.files, &dir).map_err(|e| {
                CommandError::invalid(format!("cannot write {}: {e}", dir.display()))
            })?;
            to_stdout(|out| {
                writeln!(
                    out,
                    "rendered {} files ({} objects) into {}",
                    rendered.files.len(),
                    rendered.objects.len(),
                    dir.display()
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `-o DIR` replaces DIR as a whole: allow it only for a missing or empty directory, or one
/// holding a tree meshvm rendered (its README says so), and never over the fleet file.
fn check_replaceable(dir: &Path, fleet_file: &Path) -> Result<(), CommandError> {
    let refuse = |why: &str| {
        CommandError::invalid(format!("refusing to write {}: {why}", dir.display())).hinted(
            "-o replaces the directory as a whole; give a new directory, or one meshvm rendered \
             before",
        )
    };
    if let (Ok(dir), Ok(file)) = (dir.canonicalize(), fleet_file.canonicalize()) {
        if file.starts_with(&dir) {
            return Err(refuse("it holds the fleet file"));
        }
    }
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if !dir.is_dir() => return Err(refuse("it is not a directory")),
        Err(e) => return Err(refuse(&e.to_string())),
    };
    if entries.next().is_none() {
        return Ok(());
    }
    let readme =
        std::fs::read_to_string(dir.join(meshvm::render::layout::README)).unwrap_or_default();
    if readme.contains(meshvm::render::README_MARKER) {
        Ok(())
    } else {
        Err(refuse("it is not empty and was not rendered by meshvm"))
    }
}
