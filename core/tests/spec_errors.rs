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
