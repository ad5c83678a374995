//! Terminal output: short lines, coloured on a terminal (not with `NO_COLOR`), plain in pipes.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

fn colour_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
}

fn paint(code: &str, text: &str) -> String {
    if colour_on() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Success.
pub fn ok(text: &str) -> String {
    paint("32", text)
}

/// Failure.
pub fn bad(text: &str) -> String {
    paint("31", text)
}

/// Worth a look.
pub fn warn(text: &str) -> String {
    paint("33", text)
}

/// Secondary detail.
pub fn dim(text: &str) -> String {
    paint("2", text)
}

/// Names and values the reader looks for.
pub fn bold(text: &str) -> String {
    paint("1", text)
}

/// What a WeChat user sees.
pub fn wechat(text: &str) -> String {
    paint("36", text)
}

/// Whether progress may redraw a line (a terminal on stderr).
pub fn live() -> bool {
    std::io::stderr().is_terminal()
}

/// Redraws the current stderr line (a countdown); a no-op off a terminal.
pub fn progress(text: &str) {
    use std::io::Write as _;
    if live() {
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{}", dim(text));
        let _ = err.flush();
    }
}

/// Clears a progress line.
pub fn progress_done() {
    use std::io::Write as _;
    if live() {
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}
