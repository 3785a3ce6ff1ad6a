use std::process::ExitCode;

use clap_complete::Shell;

use crate::command_error::{CmdResult, to_stdout};

/// Print a shell completion script.
///
/// For example: `meshvm completions bash > /etc/bash_completion.d/meshvm`. In bash, the VM
/// argument of `meshvm vm files` and `meshvm cloud-init` completes to the names of the fleet's
/// VMs (`meshvm vm list --output names`, from the -f/--file on the line, else MESHVM_FILE,
/// else meshvm.yaml).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    shell: Shell,
}

/// Completes a VM argument with the fleet's VM names, then falls back to clap's completion.
/// Words: `meshvm vm files <VM>` and `meshvm cloud-init <VM>`, the VM being the first word that
/// is neither an option nor an option's value.
const BASH_VM_NAMES: &str = r#"
_meshvm_vm_names() {
    local i word file="${MESHVM_FILE:-meshvm.yaml}" sub="" positional=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$word" in
            -f|--file) file="${COMP_WORDS[i+1]}"; i=$((i + 1)); continue ;;
            --file=*) file="${word#--file=}"; continue ;;
            -o|--output|--token-file|--root-cert|--template|--provider|--min-token-validity|--schema|--group|--token-dir|--print-template) i=$((i + 1)); continue ;;
            -*) continue ;;
        esac
        case "$sub $word" in
            " vm"|" cloud-init") sub="$word" ;;
            "vm files") sub="vm files" ;;
            *) positional=$((positional + 1)) ;;
        esac
    done
    case "$sub" in
        "vm files"|cloud-init) ;;
        *) return 1 ;;
    esac
    [[ $positional -eq 0 && "${COMP_WORDS[COMP_CWORD]}" != -* ]] || return 1
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$(meshvm vm list --output names -f "$file" 2>/dev/null)" -- "${COMP_WORDS[COMP_CWORD]}"))
}

_meshvm_with_vm_names() {
    _meshvm_vm_names || _meshvm "$@"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _meshvm_with_vm_names -o nosort -o bashdefault -o default meshvm
else
    complete -F _meshvm_with_vm_names -o bashdefault -o default meshvm
fi
"#;

pub fn run(args: Args, command: &mut clap::Command) -> CmdResult {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, command, "meshvm", &mut script);
    if args.shell == Shell::Bash {
        script.extend_from_slice(BASH_VM_NAMES.as_bytes());
    }
    to_stdout(|out| out.write_all(&script))?;
    Ok(ExitCode::SUCCESS)
}
