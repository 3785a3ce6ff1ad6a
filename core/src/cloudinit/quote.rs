//! Quoting: how a value enters the YAML document or a shell script. Templates never paste a
//! value raw; they call one of these through a helper (`yaml`, `yaml-block`, `sh`).

/// A character that can stand in a YAML scalar as itself, in any YAML 1.1 or 1.2 reader:
/// printable, and not a line break (YAML 1.1 also breaks lines at U+0085, U+2028 and
/// U+2029), nor a byte-order mark.
fn yaml_safe(c: char) -> bool {
    matches!(c, ' '..='~')
        || (c >= '\u{a0}'
            && !matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            ))
}

/// `s` as a one-line YAML scalar that every reader takes for exactly this string: single
/// quotes when every character can stand as itself, else double quotes with escapes.
pub fn yaml_scalar(s: &str) -> String {
    if s.chars().all(yaml_safe) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if yaml_safe(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// `s` as a YAML literal block scalar (`|`) whose lines are indented by `indent` spaces, so a
/// script stays readable in the document; the one-line form of [`yaml_scalar`] when a literal
/// block cannot carry `s` exactly (a first line starting with a space, characters that need
/// escapes).
pub fn yaml_block(s: &str, indent: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    let blockable = !first.is_empty()
        && !first.starts_with([' ', '\t'])
        && s.chars().all(|c| c == '\n' || c == '\t' || yaml_safe(c));
    if !blockable || indent == 0 {
        return yaml_scalar(s);
    }
    let body = s.trim_end_matches('\n');
    let chomp = match s.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}");
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    // Keep-chomping: the extra final newlines are empty lines of the block.
    for _ in 1..(s.len() - body.len()) {
        out.push('\n');
    }
    out
}

/// `s` as one POSIX shell word: single quotes, a single quote inside becoming `'"'"'`.
/// Fails on NUL, which no shell word can hold.
pub fn shell_word(s: &str) -> Option<String> {
    if s.contains('\0') {
        return None;
    }
    Some(format!("'{}'", s.replace('\'', r#"'"'"'"#)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `key: <emitted>` with a YAML reader and returns the value of `key`.
    fn read_back(yaml: &str) -> String {
        let value: std::collections::BTreeMap<String, String> =
            serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml:?}: {e}"));
        value["key"].clone()
    }

    const NASTY: &[&str] = &[
        "",
        "plain",
        "0644",
        "yes",
        "on",
        "~",
        "null",
        "it's",
        "\"quoted\"",
        "back\\slash",
        "- item",
        "key: value",
        "# comment",
        "&anchor *alias !tag",
        "{flow}",
        "[seq]",
        "line\nbreak",
        "tab\there",
        "trailing ",
        " leading",
        "nel\u{85}ls\u{2028}ps\u{2029}",
        "bell\u{7}del\u{7f}c1\u{9b}",
        "bom\u{feff}",
        "emoji 🦀 and ü",
        "$(reboot) `id` ${HOME}",
        "---",
        "...",
    ];

    #[test]
    fn scalars_read_back_exactly_on_one_line() {
        for s in NASTY {
            let q = yaml_scalar(s);
            assert!(!q.contains('\n'), "{q}");
            assert_eq!(read_back(&format!("key: {q}\n")), *s, "{q}");
        }
    }

    #[test]
    fn blocks_read_back_exactly() {
        let mut texts: Vec<String> = NASTY.iter().map(|s| s.to_string()).collect();
        texts.extend([
            "set -eu\necho 'hi'\n".into(),
            "no final newline".into(),
            "two final newlines\n\n".into(),
            "blank\n\n  indented\n\tand tab\n".into(),
            "#!/bin/sh\n---\n...\n".into(),
        ]);
        for s in &texts {
            let q = yaml_block(s, 4);
            let yaml = format!("outer:\n  key: {q}\nafter: 1\n");
            let value: std::collections::BTreeMap<String, serde_json::Value> =
                serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml:?}: {e}"));
            assert_eq!(value["outer"]["key"], s.as_str(), "{yaml}");
            assert_eq!(value["after"], 1);
        }
        assert!(yaml_block("set -eu\necho\n", 6).starts_with("|\n      set -eu\n"));
    }

    #[test]
    fn shell_words_read_back_exactly() {
        for s in NASTY {
            let word = shell_word(s).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {word}"))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), *s, "{word}");
        }
        assert_eq!(shell_word("a'b").unwrap(), r#"'a'"'"'b'"#);
        assert_eq!(shell_word("nul\0"), None);
    }
}

/// The exact forms, which a reader cannot tell apart but a YAML 1.1 reader, a reviewer or a
/// snapshot can (found by `cargo xtask mutants`).
#[cfg(test)]
mod exact_forms {
    use super::*;

    /// What YAML 1.1 readers (PyYAML, so cloud-init) take for a line break, and the BOM.
    const BREAKS_IN_YAML_1_1: &[char] = &['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}', '\u{feff}'];

    #[test]
    fn no_yaml_1_1_line_break_is_written_raw() {
        for s in [
            "nel\u{85}",
            "ls\u{2028}",
            "ps\u{2029}",
            "bom\u{feff}",
            "both ü\u{2028}",
        ] {
            for quoted in [yaml_scalar(s), yaml_block(s, 4)] {
                assert!(
                    !quoted.contains(BREAKS_IN_YAML_1_1),
                    "{s:?} is written raw: {quoted:?}"
                );
            }
        }
        assert_eq!(yaml_scalar("a\u{2028}b"), r#""a\u2028b""#);
        assert_eq!(yaml_scalar("a\u{85}b"), r#""a\x85b""#);
    }

    #[test]
    fn single_quotes_when_every_character_stands_as_itself() {
        assert_eq!(yaml_scalar("plain"), "'plain'");
        assert_eq!(yaml_scalar("it's ü\u{a0}🦀"), "'it''s ü\u{a0}🦀'");
    }

    #[test]
    fn double_quotes_escape_only_what_must_be_escaped() {
        assert_eq!(yaml_scalar("a\nb\t\"\\"), r#""a\nb\t\"\\""#);
        assert_eq!(
            yaml_scalar("bell\u{7} c1\u{9f} ü"),
            r#""bell\x07 c1\x9f ü""#
        );
    }

    #[test]
    fn blocks_keep_tabs_blank_lines_and_the_chomping_they_need() {
        assert_eq!(yaml_block("a\n\tb\n", 2), "|\n  a\n  \tb");
        assert_eq!(yaml_block("a\n\nb\n", 2), "|\n  a\n\n  b");
        assert_eq!(yaml_block("a", 2), "|-\n  a");
        assert_eq!(yaml_block("a\n\n", 2), "|+\n  a\n");
        assert_eq!(yaml_block(" a\n", 2), r#"" a\n""#);
    }
}
