//! What the CLI writes to stdout: `--output table|json` for every command
//! that lists things, and [`outln!`]/[`out!`], the writes every command
//! prints through. They return a [`StdoutError`] instead of panicking as
//! `println!` does, so `coder … | head` ends quietly ([`stdout_closed`]).

use std::fmt;
use std::io::Write;

use serde::Serialize;

/// Writing to stdout failed; [`StdoutError::is_broken_pipe`] when the reader
/// went away.
#[derive(Debug)]
pub struct StdoutError(std::io::Error);

impl StdoutError {
    /// Whether the reader closed the pipe (`coder list | head -1`): the
    /// command has nobody left to tell anything, which is no failure of its own.
    pub fn is_broken_pipe(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to stdout: {}", self.0)
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Writes `args` to stdout and flushes it, as `print!` does for a line.
pub fn write_stdout(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).and_then(|()| out.flush()).map_err(StdoutError)
}

/// Whether `e` is (or was caused by) stdout's reader going away: `main` then
/// exits quietly with the status of a process killed by `SIGPIPE`.
pub fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<StdoutError>().is_some_and(StdoutError::is_broken_pipe))
}

/// `println!` that returns `Result<(), StdoutError>` instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that returns `Result<(), StdoutError>` and flushes (prompts).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Prints `value` as JSON, or `rows` under `headers` as an aligned table.
pub fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(value)?)?,
        OutputFormat::Table => out!("{}", table(headers, &rows))?,
    }
    Ok(())
}

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_stdout_pipe_counts_as_stdout_closed() {
        use std::io::{Error, ErrorKind};
        let broken = || StdoutError(Error::from(ErrorKind::BrokenPipe));
        assert!(stdout_closed(&broken().into()));
        // Through the context a caller added.
        assert!(stdout_closed(&anyhow::Error::from(broken()).context("list workspaces")));
        // stdout failing otherwise is an error to report.
        assert!(!stdout_closed(&StdoutError(Error::from(ErrorKind::StorageFull)).into()));
        // A broken pipe elsewhere (a socket, a child) is not stdout's reader leaving.
        assert!(!stdout_closed(&Error::from(ErrorKind::BrokenPipe).into()));
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["name", "id"],
            &[vec!["a".into(), "1".into()], vec!["long".into(), "2".into()]],
        );
        assert_eq!(t, "NAME  ID\na     1\nlong  2\n");
    }
}
