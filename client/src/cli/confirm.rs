//! Asking before a command does something that cannot be undone
//! (`coder delete`, `coder config-ssh`): `--yes` skips the question, and
//! without a terminal to ask on the command refuses rather than guess.

use std::io::{BufRead, IsTerminal};

use anyhow::bail;

use super::output::out;

/// Asks whether to `action` (`delete workspace "ws"`) on the terminal,
/// unless `yes`; an error unless the answer is yes. Without a terminal on
/// stdin (a script, a pipe) and without `yes`, refuses at once instead of
/// reading an answer nobody typed.
pub fn confirm(action: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("To {action}, pass --yes: stdin is not a terminal to ask for confirmation on.");
    }
    out!("Confirm: {action}? [y/N] ")?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if !is_yes(&answer) {
        bail!("Not confirmed; did not {action}.");
    }
    Ok(())
}

/// `y` or `yes`, in any case; anything else (an empty line, EOF) is no.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_is_yes() {
        for yes in ["y\n", "Y\n", "yes\n", " YES \r\n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "no\n", "yess\n", "sure\n"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn yes_skips_the_question() {
        // No terminal under the test runner: without --yes it would refuse.
        assert!(confirm("delete workspace \"ws\"", true).is_ok());
    }
}
