//! Every bad fleet in fixtures/invalid/ is rejected with located, actionable diagnostics.
//! The snapshots are the messages users read.

use meshvm::spec::{LoadError, load_fleet};

#[test]
fn invalid_fleets_are_rejected_with_located_hints() {
    insta::glob!("../../fixtures/invalid", "*.yaml", |path| {
        let rel = Path::new("fixtures/invalid").join(path.file_name().unwrap());
        let err = match load_fleet(path) {
            Ok(_) => panic!("{} was accepted", rel.display()),
            Err(LoadError::Invalid(diags)) => diags,
            Err(other) => panic!("{}: {other}", rel.display()),
        };
        for d in err.iter() {
            assert!(d.pos.line >= 1 && d.pos.column >= 1, "{d}");
            assert!(d.hint.is_some(), "every diagnostic says how to fix it: {d}");
        }
        // Paths in the snapshot are relative to the workspace, whatever the checkout.
        let workspace = path.parent().unwrap().parent().unwrap().parent().unwrap();
        let text = err
            .to_string()
            .replace(&format!("{}/", workspace.display()), "");
        insta::assert_snapshot!(text);
    });
}

/// Every fleet in fixtures/warnings/ is valid, and warned about: each warning located, with a
/// hint. The snapshots are the warnings users read.
#[test]
fn suspicious_fleets_are_accepted_with_located_warnings() {
    insta::glob!("../../fixtures/warnings", "*.yaml", |path| {
        let rel = Path::new("fixtures/warnings").join(path.file_name().unwrap());
        let source = load_fleet(path).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        assert!(!source.warnings.is_empty(), "{}: no warning", rel.display());
        let workspace = path.parent().unwrap().parent().unwrap().parent().unwrap();
        let text: Vec<String> = source
            .warnings
            .iter()
            .map(|w| {
                assert!(w.hint.is_some(), "every warning says what to do: {w}");
                format!("warning: {w}").replace(&format!("{}/", workspace.display()), "")
            })
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    });
}
