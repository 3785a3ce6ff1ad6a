//! `meshvm gitops diff --output markdown` (a pull-request comment in parts) and `--stat`, as
//! a CI job runs them. The comment's content is snapshotted in core/tests/review.rs.

use crate::support::gitops::{Scratch, ok};
use crate::support::run;

#[test]
fn a_review_comment_is_printed_or_written_in_parts_with_their_markers() {
    let s = Scratch::new();
    let fleet = s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    let repo = s.path().join("repo.git");
    let repo = repo.to_str().unwrap();
    ok(&run(&mut s.meshvm(&["sync", "-q", "--repo", repo])));
    let text = std::fs::read_to_string(&fleet).unwrap();
    std::fs::write(&fleet, text.replace("meshID: mesh1", "meshID: mesh2")).unwrap();

    let r = run(&mut s.meshvm(&["diff", "-q", "--repo", repo, "--output", "markdown"]));
    assert_eq!(r.code, 4, "changes: {}", r.stderr);
    assert!(
        r.stdout
            .starts_with("<!-- meshvm-diff: clusters/cluster1 -->\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("**2 running VMs must re-join the mesh**: mesh ID (2 VMs)"),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stdout.matches("<details>").count(),
        3,
        "2 VMs and the rest"
    );

    // Small parts into a directory: stale parts of an earlier run go.
    let out = s.path().join("comment");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("part-9.md"), "stale").unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let r = run(&mut s.meshvm(&[
        "diff",
        "-q",
        "--repo",
        repo,
        "--output",
        "markdown",
        "--part-size",
        "3000",
        "--output-dir",
        out.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 4, "{}", r.stderr);
    let listed: Vec<&str> = r.stdout.lines().collect();
    assert!(listed.len() >= 2, "several parts: {}", r.stdout);
    for (i, path) in listed.iter().enumerate() {
        let part = std::fs::read_to_string(path).unwrap();
        assert!(part.chars().count() <= 3000, "{path}: {}", part.len());
        let marker = match i {
            0 => "<!-- meshvm-diff: clusters/cluster1 -->\n".to_owned(),
            _ => format!("<!-- meshvm-diff: clusters/cluster1 part {} -->\n", i + 1),
        };
        assert!(part.starts_with(&marker), "{path}:\n{part}");
        assert!(part.contains(&format!("_Part {} of {}._", i + 1, listed.len())));
    }
    assert!(!out.join("part-9.md").exists(), "a stale part is removed");
    assert!(out.join("notes.txt").exists(), "other files are left alone");

    // --stat: a few lines.
    let r = run(&mut s.meshvm(&["diff", "-q", "--repo", repo, "--stat"]));
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stdout.lines().count() <= 5, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("re-join: 2 running VMs need new user-data: mesh ID (2 VMs)"),
        "{}",
        r.stdout
    );

    // Once synced: the same marker says there is nothing left, so the job's comment is updated.
    ok(&run(&mut s.meshvm(&["sync", "-q", "--repo", repo])));
    let r = run(&mut s.meshvm(&["diff", "-q", "--repo", repo, "--output", "markdown"]));
    ok(&r);
    assert!(
        r.stdout
            .starts_with("<!-- meshvm-diff: clusters/cluster1 -->\n")
            && r.stdout.contains("No changes"),
        "{}",
        r.stdout
    );

    // Markdown is a view of diff only; --output-dir is for markdown.
    let r = run(&mut s.meshvm(&["sync", "--repo", repo, "--output", "markdown"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = run(&mut s.meshvm(&["diff", "--repo", repo, "--output-dir", "x"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// Colour only when asked or on a terminal (never here: stdout is a pipe), NO_COLOR
/// respected; the pager never runs when stdout is not a terminal.
#[test]
fn colour_when_asked_and_no_pager_without_a_terminal() {
    let s = Scratch::new();
    let fleet = s.fleet(&[("tester-1", "10.0.0.11")]);
    let repo = s.path().join("repo.git");
    let repo = repo.to_str().unwrap();
    ok(&run(&mut s.meshvm(&["sync", "-q", "--repo", repo])));
    let text = std::fs::read_to_string(&fleet).unwrap();
    std::fs::write(&fleet, text.replace("10.0.0.11", "10.0.0.12")).unwrap();
    const ESC: char = '\u{1b}';
    let paged = s.path().join("paged");
    let pager = format!("cat > {}", paged.display());

    let plain = run(s
        .meshvm(&["diff", "-q", "--repo", repo])
        .env("MESHVM_PAGER", &pager)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE"));
    assert_eq!(plain.code, 4, "{}", plain.stderr);
    assert!(!plain.stdout.contains(ESC), "{}", plain.stdout);
    assert!(
        plain.stdout.contains("\n+ISTIO_SVC_IP='10.0.0.12'\n"),
        "{}",
        plain.stdout
    );
    assert!(!paged.exists(), "no pager without a terminal");

    let coloured = run(&mut s.meshvm(&["diff", "-q", "--repo", repo, "--color", "always"]));
    assert_eq!(coloured.code, 4, "{}", coloured.stderr);
    assert!(
        coloured
            .stdout
            .contains(&format!("{ESC}[32m+ISTIO_SVC_IP='10.0.0.12'{ESC}[0m")),
        "{}",
        coloured.stdout
    );

    // CLICOLOR_FORCE asks for colour with `auto`; NO_COLOR does not stop an explicit `always`.
    let forced = run(s
        .meshvm(&["diff", "-q", "--repo", repo])
        .env("CLICOLOR_FORCE", "1")
        .env_remove("NO_COLOR"));
    assert!(forced.stdout.contains(ESC), "{}", forced.stdout);
    let no_color = run(s
        .meshvm(&["diff", "-q", "--repo", repo])
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1"));
    assert!(!no_color.stdout.contains(ESC), "{}", no_color.stdout);
}
