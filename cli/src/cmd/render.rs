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
    /// holds the old tree or the new one, never a mix). DIR/.meshvm-files lists what meshvm
    /// wrote; anything else in DIR (a .git directory, your files, files edited since) is
    /// listed and DIR left alone, unless --force. On a terminal, a progress bar on stderr
    /// counts the files written (tens of thousands take seconds on some file systems);
    /// nothing is shown when stderr is not a terminal.
    #[arg(short = 'o', long = "output", value_name = "DIR", group = "to")]
    output: Option<std::path::PathBuf>,
    /// With -o: replace DIR even though it holds files meshvm did not write (they are
    /// deleted).
    #[arg(long, requires = "output")]
    force: bool,
    /// Print every Kubernetes object of the tree as one multi-document YAML stream instead.
    #[arg(long, group = "to")]
    stdout: bool,
}

pub fn run(args: Args) -> CmdResult {
    let source = args.fleet.load()?;
    let mut rendered = meshvm::render::render(&source.fleet);
    // With `gitops.hydrator`, the same hydrator.metadata files a sync commits.
    meshvm::git::dry::hydrate(&mut rendered, &source);
    match args.output {
        None => to_stdout(|out| out.write_all(rendered.object_stream().as_bytes()))?,
        Some(dir) => {
            check_replaceable(&dir, &source.path, args.force)?;
            // A bar on a terminal: tens of thousands of files take seconds on some file systems.
            let bar = std::sync::Mutex::new(super::progress::Bar::new(false));
            let progress = |done, total| {
                if let Ok(mut bar) = bar.lock() {
                    bar.show("writing files", done, total);
                }
            };
            let written =
                meshvm::disk::write_owned_dir_with_progress(&rendered.files, &dir, &progress);
            if let Ok(mut bar) = bar.lock() {
                bar.finish();
            }
            written.map_err(|e| {
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
    super::warn(&source);
    Ok(ExitCode::SUCCESS)
}

/// `-o DIR` replaces DIR as a whole: allow it only for a missing or empty directory, or one
/// holding nothing but what meshvm wrote there (its manifest says so), unless `force`; never
/// over the fleet file.
fn check_replaceable(dir: &Path, fleet_file: &Path, force: bool) -> Result<(), CommandError> {
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
    let in_the_way = meshvm::disk::in_the_way(dir).map_err(|e| refuse(&e.to_string()))?;
    if in_the_way.is_empty() || force {
        return Ok(());
    }
    const SHOWN: usize = 20;
    let mut list: String = in_the_way
        .iter()
        .take(SHOWN)
        .map(|w| format!("\n  {w}"))
        .collect();
    if in_the_way.len() > SHOWN {
        list += &format!("\n  … and {} more", in_the_way.len() - SHOWN);
    }
    Err(CommandError::invalid(format!(
        "refusing to write {}: it holds {} {} meshvm did not write, which replacing it would \
         delete:{list}",
        dir.display(),
        in_the_way.len(),
        if in_the_way.len() == 1 {
            "entry"
        } else {
            "entries"
        },
    ))
    .hinted(
        "-o replaces the directory as a whole: move those away, give a new directory, or add \
         --force to delete them",
    ))
}
