//! The daemons' logs on stderr. On a terminal they keep tracing-subscriber's coloured format;
//! anywhere else (journald, a pipe, a file) the same text without ANSI escapes, each event on
//! exactly one line, since journald and line-based tools take every line for an entry of its
//! own and would show escape codes as text.

use std::io::{IsTerminal, Write};

/// Sets up the global subscriber: level `info` (`RUST_LOG` overrides it), stderr, colour only
/// on a terminal (and not with `NO_COLOR` set, as <https://no-color.org> asks).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // netlink-packet-route warns about every attribute newer than itself.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error"));
    let terminal = std::io::stderr().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal && !no_color);
    if terminal {
        fmt.with_writer(std::io::stderr).init();
    } else {
        fmt.with_writer(OneLine::default).init();
    }
}

/// One event's text, written to stderr as a single line when dropped: the formatter makes one
/// writer per event, so whatever it writes in however many calls ends up in one `write`.
#[derive(Default)]
struct OneLine(Vec<u8>);

impl Write for OneLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for OneLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        // Nowhere to report a failed log write; the daemon goes on.
        let _ = std::io::stderr().lock().write_all(&one_line(&self.0));
    }
}

/// `text` as one line ending in `\n`: a line break inside it (an error message of several
/// lines) becomes the two characters `\n` (`\r` likewise), so nothing is lost and the next
/// line is the next event.
fn one_line(text: &[u8]) -> Vec<u8> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let mut out = Vec::with_capacity(body.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_of_several_lines_becomes_one() {
        assert_eq!(one_line(b"a INFO up\n"), b"a INFO up\n");
        assert_eq!(
            one_line(b"a WARN x: first\nsecond\n"),
            b"a WARN x: first\\nsecond\n"
        );
        assert_eq!(one_line(b"a WARN x\r\ny\r\n"), b"a WARN x\\r\\ny\n");
        assert_eq!(one_line(b"no newline"), b"no newline\n");
    }
}
