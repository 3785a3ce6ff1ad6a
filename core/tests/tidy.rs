//! Tidy tests: the layering and the documentation, checked by reading the sources (in the style
//! of rust-analyzer's `xtask/src/tidy.rs`). Each failure names the file and what to change.
//!
//! Test code is exempt from the purity rules: tests may use temporary directories and the
//! clock, the product code of a pure module may not. Test code is what a file declares after a
//! top-level `#[cfg(test)]` (by convention a `mod tests` at the end of the file), and the files
//! that a parent declares as `#[cfg(test)] mod NAME;`.

use std::path::{Path, PathBuf};

use testkit::{files_below, workspace};

/// The modules that compute without touching the world: no files, no environment, no clock.
const PURE: &[&str] = &[
    "core/src/render",
    "core/src/vmfiles",
    "core/src/cloudinit",
    "core/src/join",
    "core/src/k8s",
    "core/src/tree.rs",
];

/// What pure code must not name.
const IMPURE: &[&str] = &["std::fs", "std::env", "SystemTime", "Instant"];

#[test]
fn pure_modules_touch_no_files_environment_or_clock() {
    let mut offenders = Vec::new();
    for (path, code) in product_code(PURE) {
        for (line, text) in code_lines(&code) {
            let named = IMPURE
                .iter()
                .copied()
                .filter(|name| text.contains(name))
                .chain(grouped_std_imports(text));
            for name in named {
                offenders.push(format!("{}:{line}: names `{name}`", rel(&path)));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "\npure modules ({}) must not name {} outside test code; take the value as a \
         parameter (the caller at the edge reads it):\n{}\n",
        PURE.join(", "),
        IMPURE.join(", "),
        offenders.join("\n")
    );
}

#[test]
fn k8s_imports_nothing_of_meshvm() {
    let mut offenders = Vec::new();
    for (path, code) in product_code(&["core/src/k8s"]) {
        // In k8s/mod.rs `super` is the crate root; in k8s/istio.rs it is k8s.
        let at_k8s_root = path.ends_with("k8s/mod.rs");
        for (line, text) in code_lines(&code) {
            let outside = text
                .match_indices("crate::")
                .any(|(i, _)| !text[i..].starts_with("crate::k8s"))
                || text.contains("meshvm::")
                || (at_k8s_root && text.contains("super::"));
            if outside {
                offenders.push(format!("{}:{line}: {}", rel(&path), text.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "\ncore/src/k8s is a vocabulary of output types and imports nothing else of meshvm \
         (only crate::k8s and super:: inside k8s); move the logic to render/ or vmfiles/:\n{}\n",
        offenders.join("\n")
    );
}

#[test]
fn every_path_architecture_md_names_exists() {
    let root = workspace();
    let missing: Vec<String> = backticked(&architecture())
        .into_iter()
        .filter(|name| looks_like_a_repo_path(name))
        // `FILE::FUNCTION` names a test: the file must exist (the function is checked below).
        .map(|name| name.split("::").next().unwrap_or(name))
        .filter(|path| !root.join(path).exists())
        .map(|path| format!("`{path}`"))
        .collect();
    assert!(
        missing.is_empty(),
        "\nARCHITECTURE.md names paths that do not exist (fix the path or the text): {}\n",
        missing.join(", ")
    );
}

/// Convention: each invariant paragraph names at least one test that enforces it as
/// ``(test: `FILE::FUNCTION`)``, where FILE is relative to the repository root.
#[test]
fn every_architecture_invariant_names_an_existing_test() {
    let root = workspace();
    let mut problems = Vec::new();
    let text = architecture();
    let invariants: Vec<&str> = text
        .split("\n\n")
        .filter(|p| p.contains("**Architecture invariant:**"))
        .collect();
    assert!(invariants.len() >= 10, "invariants found: {invariants:?}");
    for invariant in invariants {
        let first_line = invariant.lines().next().unwrap_or_default();
        let tests = named_tests(invariant);
        if tests.is_empty() {
            problems.push(format!(
                "names no test (add \"(test: `FILE::FUNCTION`)\"): {first_line}"
            ));
        }
        for (file, function) in tests {
            let source = std::fs::read_to_string(root.join(&file)).unwrap_or_default();
            if !source.contains(&format!("fn {function}(")) {
                problems.push(format!(
                    "names `{file}::{function}`, which is not a test in {file}: {first_line}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "\nevery **Architecture invariant:** in ARCHITECTURE.md names the test that enforces \
         it:\n{}\n",
        problems.join("\n")
    );
}

/// The tidy checks catch what they are meant to catch.
#[test]
fn the_checks_see_through_comments_groups_and_test_modules() {
    let code = "use std::{env, io};\n// std::fs in a comment\nfn f() {}\n\
                #[cfg(test)]\nmod tests {\n    use std::fs;\n}\n";
    let product = without_test_code(code).unwrap();
    assert!(!product.contains("use std::fs"));
    let lines: Vec<(usize, &str)> = code_lines(&product).collect();
    assert_eq!(lines[0].0, 1);
    assert_eq!(grouped_std_imports(lines[0].1), vec!["std::env"]);
    assert!(lines.iter().all(|(_, l)| !l.contains("std::fs")));
    // Product code after the test module is refused rather than exempted.
    let two = "fn a() {}\n#[cfg(test)]\nmod tests {\n}\n\n/// More.\n#[cfg(test)]\nmod more;\n";
    assert_eq!(without_test_code(two).unwrap(), "fn a() {}\n");
    assert!(without_test_code("fn a() {}\n#[cfg(test)]\nmod t {\n}\nfn b() {}\n").is_err());
    assert_eq!(
        named_tests("x (test: `core/tests/a.rs::b`, test: `c.rs::d`)"),
        vec![
            ("core/tests/a.rs".to_owned(), "b".to_owned()),
            ("c.rs".to_owned(), "d".to_owned())
        ]
    );
    assert!(looks_like_a_repo_path("core/src/k8s/"));
    assert!(looks_like_a_repo_path("../shared/schemas"));
    assert!(!looks_like_a_repo_path("names.rs"));
    assert!(!looks_like_a_repo_path("target/bench.json"));
}

fn architecture() -> String {
    std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap()
}

fn rel(path: &Path) -> String {
    path.strip_prefix(workspace())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every `.rs` file below the given paths (relative to the root), with its product code.
fn product_code(paths: &[&str]) -> Vec<(PathBuf, String)> {
    let root = workspace();
    let files: Vec<PathBuf> = paths
        .iter()
        .flat_map(|p| files_below(&root.join(p)))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    assert!(files.len() >= paths.len(), "no sources below {paths:?}");
    let test_files: Vec<PathBuf> = files.iter().flat_map(|f| test_only_children(f)).collect();
    files
        .into_iter()
        .filter(|f| !test_files.contains(f))
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let code = without_test_code(&text).unwrap_or_else(|why| panic!("{}: {why}", rel(&f)));
            (f, code)
        })
        .collect()
}

/// The files `file` declares as `#[cfg(test)] mod NAME;`.
fn test_only_children(file: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(file).unwrap();
    let dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "lib.rs") => file.parent().unwrap().to_path_buf(),
        _ => file.with_extension(""),
    };
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0].trim() == "#[cfg(test)]")
        .filter_map(|w| w[1].trim().strip_prefix("mod ")?.strip_suffix(';'))
        .flat_map(|name| {
            [
                dir.join(format!("{name}.rs")),
                dir.join(name).join("mod.rs"),
            ]
        })
        .collect()
}

/// `text` without its test code: everything from the first top-level `#[cfg(test)]` on, which
/// must be followed by test items only (otherwise product code would escape the checks).
fn without_test_code(text: &str) -> Result<String, String> {
    let Some(start) = text.find("\n#[cfg(test)]\n").map(|i| i + 1) else {
        return Ok(text.to_owned());
    };
    let mut rest = &text[start..];
    loop {
        // A test item's own comments come before its `#[cfg(test)]`.
        while rest.starts_with("//") {
            rest = rest.split_once('\n').map_or("", |(_, after)| after);
        }
        let Some(item) = rest.strip_prefix("#[cfg(test)]\n") else {
            break;
        };
        let end = if item.lines().next().is_some_and(|l| l.ends_with(';')) {
            // `mod tests;`: a test module in its own file.
            item.find('\n').map_or(item.len(), |i| i + 1)
        } else {
            item.find("\n}\n").map_or(item.len(), |i| i + 3)
        };
        rest = item[end..].trim_start();
    }
    if rest.is_empty() {
        Ok(text[..start].to_owned())
    } else {
        Err("product code follows a #[cfg(test)] item; move the test code to the end".into())
    }
}

/// Lines of code, numbered from 1, without `//` comments.
fn code_lines(code: &str) -> impl Iterator<Item = (usize, &str)> {
    code.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split("//").next().unwrap_or_default()))
}

/// `std::fs` and `std::env` named through a group, `use std::{env, fs}`, on one line.
fn grouped_std_imports(line: &str) -> Vec<&'static str> {
    let Some(group) = line.split("std::{").nth(1) else {
        return Vec::new();
    };
    let names: Vec<&str> = group
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    [("fs", "std::fs"), ("env", "std::env")]
        .into_iter()
        .filter(|(name, _)| names.contains(name))
        .map(|(_, full)| full)
        .collect()
}

/// The text between backticks.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// A path below one of the repository's own top-level folders, or the shared references.
fn looks_like_a_repo_path(name: &str) -> bool {
    const TOP: &[&str] = &[
        "core/",
        "cli/",
        "xtask/",
        "tests/",
        "fixtures/",
        "fuzz/",
        "docs/",
        ".ci/",
        "../shared/",
    ];
    !name.contains(char::is_whitespace) && TOP.iter().any(|top| name.starts_with(top))
}

/// The `(test: `FILE::FUNCTION`)` references of a paragraph, as (file, function).
fn named_tests(paragraph: &str) -> Vec<(String, String)> {
    paragraph
        .split("test: `")
        .skip(1)
        .filter_map(|rest| rest.split('`').next())
        .filter_map(|reference| reference.rsplit_once("::"))
        .map(|(file, function)| (file.to_owned(), function.to_owned()))
        .collect()
}
