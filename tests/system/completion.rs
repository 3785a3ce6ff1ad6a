//! `meshvm completions bash`, sourced by a real bash: the VM argument completes to the
//! fleet's VM names.

use std::path::Path;

use crate::support::{fixture, meshvm, require_tool, run};

/// What bash completes for `words` (the last one being completed), in `dir`.
fn complete(script: &Path, dir: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_meshvm")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let program = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
         COMP_POINT=${{#COMP_LINE}}; _meshvm_with_vm_names meshvm \"${{COMP_WORDS[COMP_CWORD]}}\" \
         \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let r = run(std::process::Command::new("bash")
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("MESHVM_FILE")
        .args(["-c", &program]));
    assert_eq!(r.code, 0, "{words:?}: {}", r.stderr);
    r.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_vm_names_from_the_fleet() {
    require_tool("bash", "apt-get install bash");
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("meshvm.bash");
    let r = run(meshvm().args(["completions", "bash"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::write(&script, r.stdout).unwrap();
    std::fs::copy(
        fixture("fleets/seed/meshvm.yaml"),
        tmp.path().join("meshvm.yaml"),
    )
    .unwrap();
    let fleet = fixture("fleets/single-network/meshvm.yaml");
    let fleet = fleet.to_str().unwrap();

    assert_eq!(
        complete(&script, tmp.path(), &["meshvm", "vm", "files", ""]),
        ["tester-1"]
    );
    assert_eq!(
        complete(
            &script,
            tmp.path(),
            &["meshvm", "cloud-init", "-f", fleet, "billing-"]
        ),
        ["billing-1", "billing-2"]
    );
    // Not a VM's place: clap's own completion (subcommands, options).
    let subcommands = complete(&script, tmp.path(), &["meshvm", "vm", ""]);
    assert!(subcommands.contains(&"files".to_owned()), "{subcommands:?}");
    let options = complete(&script, tmp.path(), &["meshvm", "cloud-init", "--tok"]);
    assert!(options.contains(&"--token-file".to_owned()), "{options:?}");
}
