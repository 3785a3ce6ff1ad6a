use std::process::ExitCode;

use meshvm::ErrorKind;
use meshvm::spec::LoadError;

use super::FleetArg;
use crate::command_error::{CmdResult, CommandError, Kind, exit_code, to_stdout};

/// Check a fleet file, reporting every problem at once.
///
/// Reads the file and checks what Kubernetes, istiod and the VMs would reject: unknown or
/// misspelt fields, wrong types, names that are not DNS-1123, bad addresses and ports,
/// duplicate names, services without hosts, a root certificate that cannot be read. Each
/// problem comes with file:line:column and a hint. Nothing is written.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    fleet: FleetArg,
    /// `text` for people, `json` for machines (a list of {file, pos, path, message, hint}; a
    /// valid fleet's list holds only its warnings, each with `severity: warning`).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

pub fn run(args: Args) -> CmdResult {
    match (meshvm::spec::load_fleet(&args.fleet.file), args.output) {
        // Warnings do not fail the check: they are part of its report, after the verdict.
        (Ok(source), Output::Text) => {
            let f = &source.fleet;
            to_stdout(|out| {
                writeln!(
                    out,
                    "{}: valid: {} workload groups, {} VMs, mesh {}",
                    args.fleet.file.display(),
                    f.workloads.len(),
                    f.vms().count(),
                    f.mesh.mesh_id
                )?;
                for w in source.warnings.iter() {
                    writeln!(out, "warning: {w}")?;
                }
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        (Ok(source), Output::Json) => {
            // The list holds problems; warnings carry their severity.
            let warnings = super::warnings_json(&source.warnings);
            let json = serde_json::to_string_pretty(&warnings).expect("JSON");
            to_stdout(|out| writeln!(out, "{json}"))?;
            Ok(ExitCode::SUCCESS)
        }
        (Err(LoadError::Invalid(diags)), Output::Json) => {
            let json = serde_json::to_string_pretty(&diags.0).expect("JSON");
            to_stdout(|out| writeln!(out, "{json}"))?;
            Ok(exit_code(Kind::Library(ErrorKind::InvalidInput)).into())
        }
        (Err(LoadError::Invalid(diags)), Output::Text) => {
            let n = diags.len();
            Err(CommandError::invalid(format!(
                "{diags}\n{}: {n} problem{} found",
                args.fleet.file.display(),
                if n == 1 { "" } else { "s" }
            )))
        }
        (Err(e), Output::Json) => Err(CommandError::from(e).in_json()),
        (Err(e), Output::Text) => Err(e.into()),
    }
}
