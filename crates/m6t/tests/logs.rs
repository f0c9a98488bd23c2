//! The daemons' logs off a terminal: plain text (no ANSI escape), one line per event. Runs
//! the binary with stderr to a pipe; needs no privilege and no namespace (the daemons stop at
//! their configuration, before touching the system).

use std::path::Path;
use std::process::Command;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

#[test]
fn logs_to_a_pipe_are_plain_lines() {
    let dir = std::env::temp_dir().join(format!("m6t-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "mtu = \"big\"\n").unwrap();
    let bad = bad.display().to_string();
    for daemon in ["client", "gateway", "ha", "mn"] {
        for config in ["/nonexistent/m6t.toml", bad.as_str()] {
            // RUST_LOG=debug: the daemon logs the file it reads before reading it, so there
            // is a log line to look at, then its one error line.
            let o = Command::new(bin())
                .args([daemon, "--config", config])
                .env("RUST_LOG", "debug")
                .env_remove("NO_COLOR")
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(1), "{daemon} {config}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.stderr.contains(&0x1b),
                "{daemon} {config}: escape codes in a pipe: {err:?}"
            );
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 2, "{daemon} {config}: {err}");
            assert!(
                lines[0].contains(" DEBUG ")
                    && lines[0].ends_with(&format!("reading the configuration {config}")),
                "{daemon} {config}: {err}"
            );
            assert!(
                lines[1].starts_with(&format!("m6t: error: config {config}: ")),
                "{daemon} {config}: {err}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
