//! Colour and a pager for long text output, as git does: colour when stdout is a terminal
//! (`--color=auto`, the default; `NO_COLOR`, `CLICOLOR_FORCE` and `TERM=dumb` respected, by
//! anstream), a pager only on a terminal (`MESHVM_PAGER`, else `PAGER`, else `less -FRX`,
//! which quits at once when the text fits the screen; an empty value or `cat` means none).

use std::io::{IsTerminal, Write};
use std::process::{Command, Stdio};

use anstyle::{AnsiColor, Style};

use crate::command_error::{CommandError, to_stdout};

/// `--color`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// When stdout is a terminal (and NO_COLOR is not set).
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    /// Whether to colour what goes to stdout.
    pub fn colour(self) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
            }
        }
    }
}

const ADDED: Style = AnsiColor::Green.on_default();
const REMOVED: Style = AnsiColor::Red.on_default();
const CHANGED: Style = AnsiColor::Yellow.on_default();
const MOVED: Style = AnsiColor::Cyan.on_default();
const HUNK: Style = AnsiColor::Cyan.on_default();
const HEADER: Style = Style::new().bold();

/// The style of one line of a plan or a unified diff, by how it starts.
fn style_of(line: &str) -> Option<Style> {
    const HEADERS: [&str; 4] = ["diff --git ", "index ", "--- ", "+++ "];
    if HEADERS.iter().any(|h| line.starts_with(h)) {
        Some(HEADER)
    } else if line.starts_with("@@") {
        Some(HUNK)
    } else if line.starts_with('+') || line.starts_with("  + ") {
        Some(ADDED)
    } else if ["-", "  - ", "  ! ", "removed: "]
        .iter()
        .any(|p| line.starts_with(p))
    {
        Some(REMOVED)
    } else if ["  ~ ", "note: ", "re-join: "]
        .iter()
        .any(|p| line.starts_with(p))
    {
        Some(CHANGED)
    } else if line.starts_with("  > ") {
        Some(MOVED)
    } else {
        None
    }
}

/// `text` with each line coloured by [`style_of`].
pub fn colour_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        match style_of(body) {
            Some(style) if !body.is_empty() => {
                out.push_str(&format!("{style}{body}{style:#}{end}"));
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// The pager command, when stdout is a terminal and one is wanted.
fn pager() -> Option<String> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let chosen = ["MESHVM_PAGER", "PAGER"]
        .iter()
        .find_map(|name| std::env::var(name).ok());
    match chosen {
        None => Some("less -FRX".to_owned()),
        Some(cmd) if cmd.trim().is_empty() || cmd.trim() == "cat" => None,
        Some(cmd) => Some(cmd),
    }
}

/// Shows `text` on stdout, coloured as `when` says, through the pager on a terminal when
/// `page`.
pub fn show(text: &str, when: ColorWhen, page: bool) -> Result<(), CommandError> {
    let text = if when.colour() {
        colour_lines(text)
    } else {
        text.to_owned()
    };
    if let Some(cmd) = pager().filter(|_| page) {
        // As git: `less` quits when the text fits one screen (F), keeps colours (R) and the
        // screen (X), unless LESS says otherwise.
        let mut command = Command::new("sh");
        command.arg("-c").arg(&cmd).stdin(Stdio::piped());
        if std::env::var_os("LESS").is_none() {
            command.env("LESS", "FRX");
        }
        if let Ok(mut child) = command.spawn() {
            let mut stdin = child.stdin.take().expect("piped");
            // A pager that quits early (q) closes its end: that is no error.
            let _ = stdin.write_all(text.as_bytes());
            drop(stdin);
            let _ = child.wait();
            return Ok(());
        }
        // No pager to run: print as without one.
    }
    to_stdout(|out| out.write_all(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lines_are_coloured_and_others_left_alone() {
        let text = "diff --git a/x b/x\n@@ -1 +1 @@\n-old\n+new\n context\n  + vm-1  (ns/g)\nplain";
        let out = colour_lines(text);
        assert!(out.contains(&format!("{ADDED}+new{ADDED:#}\n")), "{out:?}");
        assert!(
            out.contains(&format!("{REMOVED}-old{REMOVED:#}\n")),
            "{out:?}"
        );
        assert!(
            out.contains(&format!("{HUNK}@@ -1 +1 @@{HUNK:#}\n")),
            "{out:?}"
        );
        assert!(out.contains("\n context\n"), "{out:?}");
        assert!(out.ends_with("\nplain"), "{out:?}");
        // Without the escapes, the text is unchanged.
        let stripped = anstream::adapter::strip_str(&out).to_string();
        assert_eq!(stripped, text);
    }
}
