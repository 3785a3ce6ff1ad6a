//! The pager and colour of `gitops diff` on a real terminal (a pseudo-terminal from
//! util-linux's `script`): MESHVM_PAGER, else PAGER, else `less -FRX` with LESS=FRX; colour on;
//! `--no-pager` prints on the terminal itself. (Without a terminal: tests/e2e/review.rs.)

use std::os::unix::fs::PermissionsExt;

use crate::support::gitops::{Scratch, ok};
use crate::support::{on_a_terminal, run};

#[test]
fn on_a_terminal_a_diff_is_coloured_and_paged_as_git_pages_it() {
    let s = Scratch::new();
    let fleet = s.fleet(&[("tester-1", "10.0.0.11")]);
    ok(&run(&mut s.meshvm(&["sync", "-q", "--repo", "repo.git"])));
    let text = std::fs::read_to_string(&fleet).unwrap();
    std::fs::write(&fleet, text.replace("10.0.0.11", "10.0.0.12")).unwrap();
    const ESC: char = '\u{1b}';
    let changed = "+ISTIO_SVC_IP='10.0.0.12'";

    // MESHVM_PAGER wins over PAGER; it gets the coloured diff, the terminal nothing of it.
    let paged = s.path().join("paged");
    let mut diff = s.meshvm(&["diff", "--repo", "repo.git"]);
    diff.env("MESHVM_PAGER", format!("cat > '{}'", paged.display()))
        .env("PAGER", "false")
        .env_remove("NO_COLOR");
    let r = on_a_terminal(&diff, s.path());
    assert_eq!(r.code, 4, "{}", r.stdout);
    let shown = std::fs::read_to_string(&paged).expect("the pager ran");
    assert!(shown.contains(changed) && shown.contains(ESC), "{shown}");
    assert!(!r.stdout.contains(changed), "{}", r.stdout);

    // No pager named: `less -FRX`, with LESS=FRX (a stand-in `less` first on PATH records it).
    let bin = s.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let less = bin.join("less");
    std::fs::write(
        &less,
        format!(
            "#!/bin/sh\necho \"$* LESS=$LESS\" > '{0}/less-args'\ncat > '{0}/less-in'\n",
            s.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&less, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut diff = s.meshvm(&["diff", "--repo", "repo.git"]);
    diff.env_remove("MESHVM_PAGER")
        .env_remove("PAGER")
        .env_remove("LESS")
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        );
    let r = on_a_terminal(&diff, s.path());
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert_eq!(
        std::fs::read_to_string(s.path().join("less-args")).unwrap(),
        "-FRX LESS=FRX\n"
    );
    assert!(
        std::fs::read_to_string(s.path().join("less-in"))
            .unwrap()
            .contains(changed)
    );

    // --no-pager (and an empty MESHVM_PAGER): on the terminal itself, coloured.
    for (flag, pager) in [("--no-pager", "false"), ("--color=auto", "")] {
        let mut diff = s.meshvm(&["diff", "--repo", "repo.git", flag]);
        diff.env("MESHVM_PAGER", pager).env_remove("NO_COLOR");
        let r = on_a_terminal(&diff, s.path());
        assert_eq!(r.code, 4, "{flag}: {}", r.stdout);
        assert!(
            r.stdout.contains(&format!("{ESC}[32m{changed}")),
            "{flag}: {}",
            r.stdout
        );
    }
}
