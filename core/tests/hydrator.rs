//! Source Hydrator mode (`gitops.hydrator`, `meshvm::render::hydrator`): the
//! `hydrator.metadata` files of a hydrated tree, on the fixture fleet fixtures/hydrator.

use meshvm::render::hydrator::{self, DryCommit, METADATA_FILE, ReferenceCommit};
use meshvm::render::{Rendered, render};

fn source() -> meshvm::spec::SourceFile {
    meshvm::spec::load_fleet(&testkit::fixture("hydrator/meshvm.yaml")).expect("a valid fleet")
}

fn dry() -> DryCommit {
    DryCommit {
        sha: "6cb951525937865dced818bbdd78c89b2d2b3045".into(),
        author: "Dev <dev@example.com>".into(),
        date: "2025-06-09T13:50:08-04:00".into(),
        subject: "fleet: add tester-1".into(),
        body: "Why: the tester VM joins.\n".into(),
        reference: Some(ReferenceCommit {
            sha: "b82add298aa045d3672880802d5305c5a8aaa46e".into(),
            author: "Author Name <author@example.com>".into(),
            ..ReferenceCommit::default()
        }),
    }
}

fn hydrated(dry: Option<&DryCommit>) -> Rendered {
    let source = source();
    let mut r = render(&source.fleet);
    hydrator::hydrate(&mut r, &source.fleet, dry, "fleets/prod.yaml");
    r
}

/// The hydrator.metadata files of a tree, as `### path` and their content.
fn metadata_listing(r: &Rendered) -> String {
    let mut out = String::new();
    for (path, file) in r.files.iter() {
        if path == METADATA_FILE || path.ends_with(&format!("/{METADATA_FILE}")) {
            out.push_str(&format!("### {path} ({:o})\n", file.mode));
            out.push_str(&String::from_utf8_lossy(&file.bytes));
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_hydrated_tree_has_metadata_at_the_root_and_in_every_application_path() {
    let r = hydrated(Some(&dry()));
    insta::assert_snapshot!("hydrated-metadata", metadata_listing(&r));
    // Only metadata is added: the rest is the plain render, byte for byte.
    let plain = render(&source().fleet);
    let added: Vec<&str> = r
        .files
        .paths()
        .filter(|p| !plain.files.contains(p))
        .collect();
    assert_eq!(
        added.len(),
        1 + meshvm::render::layout::application_dirs(&source().fleet).len()
    );
    for (path, file) in plain.files.iter() {
        assert_eq!(r.files.get(path), Some(file), "{path} changed");
    }
    assert_eq!(
        r.objects, plain.objects,
        "metadata files are not Kubernetes objects"
    );
}

#[test]
fn without_a_dry_commit_dry_sha_and_the_commit_fields_are_left_out() {
    let r = hydrated(None);
    let root = String::from_utf8(r.files.get(METADATA_FILE).unwrap().bytes.clone()).unwrap();
    assert_eq!(
        root,
        "{\n  \"repoURL\": \"https://git.example.com/mesh.git\"\n}"
    );
    let mesh = String::from_utf8(
        r.files
            .get(&format!("mesh/{METADATA_FILE}"))
            .unwrap()
            .bytes
            .clone(),
    )
    .unwrap();
    assert!(!mesh.contains("drySha"), "{mesh}");
    assert!(mesh.contains("\"commands\""), "{mesh}");
}

#[test]
fn the_same_dry_commit_gives_the_same_bytes_and_another_one_other_bytes() {
    assert_eq!(hydrated(Some(&dry())), hydrated(Some(&dry())));
    let mut next = dry();
    next.sha = "0000000000000000000000000000000000000001".into();
    assert_ne!(hydrated(Some(&dry())).files, hydrated(Some(&next)).files);
}
