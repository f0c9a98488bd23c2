//! Man pages and shell completions (`m6t generate-docs --out DIR`, not in `--help`).
//!
//! The section 1 pages and the completions are generated from the command line's clap
//! definition, so they cannot drift from `--help`; the configuration page (section 5) is
//! written by hand in `crates/m6t/man/m6t.toml.5` (clap knows nothing of the TOML files)
//! and carried in the binary, so that an m6t installed with `cargo install` can write every
//! page too. The Debian package (`packaging/build-deb.sh`) ships what this writes.

use clap::Command;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The configuration page, `m6t.toml(5)`: every key of the four files, its default and the
/// section of the draft or RFC it comes from.
pub const CONFIG_PAGE: &str = include_str!("../man/m6t.toml.5");

/// Where each daemon subcommand's configuration lives when run by its systemd unit, and the
/// unit's name: the "FILES" part of its page.
const UNITS: &[(&str, &str, &str)] = &[
    ("client", "m6t-client@.service", "/etc/m6t/NAME.toml"),
    ("gateway", "m6t-gateway.service", "/etc/m6t/gateway.toml"),
    ("ha", "m6t-ha.service", "/etc/m6t/ha.toml"),
    ("mn", "m6t-mn@.service", "/etc/m6t/NAME.toml"),
];

/// Writes `man1/m6t.1`, one `man1/m6t-SUBCOMMAND.1` per visible subcommand,
/// `man5/m6t.toml.5`, and the completions `completions/m6t.bash` and `completions/_m6t`
/// (zsh) under `out`. Returns the files written.
pub fn write_all(cmd: Command, out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Sets the subcommands' display names (`m6t-gateway`) and usage lines.
    cmd.build();
    let man1 = out.join("man1");
    let man5 = out.join("man5");
    let comp = out.join("completions");
    for d in [&man1, &man5, &comp] {
        std::fs::create_dir_all(d)?;
    }
    let mut written = Vec::new();
    let name = cmd.get_name().to_string();
    let visible: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let see_also: Vec<String> = visible
        .iter()
        .map(|s| format!("{name}-{}", s.get_name()))
        .collect();
    let date = today();
    written.push(page(&cmd, &man1, &date, &main_extra(&see_also))?);
    for sub in &visible {
        written.push(page(sub, &man1, &date, &sub_extra(&name, sub.get_name()))?);
    }
    let p = man5.join("m6t.toml.5");
    std::fs::write(&p, CONFIG_PAGE)?;
    written.push(p);
    for (shell, file) in [
        (clap_complete::Shell::Bash, "m6t.bash"),
        (clap_complete::Shell::Zsh, "_m6t"),
    ] {
        let p = comp.join(file);
        let mut f = std::fs::File::create(&p)?;
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut f);
        f.flush()?;
        written.push(p);
    }
    Ok(written)
}

/// Renders one page with clap_mangen, followed by `extra` (raw roff), into `dir`.
fn page(cmd: &Command, dir: &Path, date: &str, extra: &str) -> io::Result<PathBuf> {
    let title = cmd
        .get_display_name()
        .unwrap_or(cmd.get_name())
        .to_uppercase();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(title)
        .date(date)
        .source(concat!("m6t ", env!("CARGO_PKG_VERSION")))
        .manual("m6t manual");
    let p = dir.join(man.get_filename());
    let mut text = Vec::new();
    man.render(&mut text)?;
    text.extend_from_slice(extra.as_bytes());
    std::fs::write(&p, text)?;
    Ok(p)
}

/// The pages' date, `YYYY-MM-DD`: `$SOURCE_DATE_EPOCH` when set (reproducible package
/// builds), otherwise today.
fn today() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`), to
/// avoid a date crate for one line of a man page.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A `.BR page (section)` line per reference, comma-separated as man pages write them.
fn refs(pages: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (p, sec)) in pages.iter().enumerate() {
        let sep = if i + 1 < pages.len() { "," } else { "" };
        s.push_str(&format!(".BR {p} ({sec}){sep}\n"));
    }
    s
}

fn main_extra(subpages: &[String]) -> String {
    let mut see: Vec<(&str, &str)> = subpages.iter().map(|p| (p.as_str(), "1")).collect();
    see.extend([("m6t.toml", "5"), ("systemctl", "1"), ("journalctl", "1")]);
    format!(
        r#".SH FILES
.TP
.I /etc/m6t/*.toml
Configuration files of the daemons, one per daemon; see
.BR m6t.toml (5).
.TP
.I /run/m6t/*.sock
Control sockets of the running daemons, read by
.BR "m6t status" .
.TP
.I /run/m6t/claims/
Claims of the random values of the client's tunnel addresses (draft section 2.5).
.TP
.I /var/lib/m6t/ha-bindings.json
The home agent's binding cache, kept across restarts.
.TP
.I /var/lib/m6t/ha-ipsec-seq.json, /var/lib/m6t/mn-ipsec-seq.json
Outbound ESP sequence numbers reserved ahead, so that a restarted home agent or mobile node
continues them.
.TP
.I /lib/systemd/system/m6t-*.service
Units of the daemons:
.BR m6t-gateway.service ,
.BR m6t-ha.service ,
.BR m6t-client@NAME.service " and"
.B m6t-mn@NAME.service
(configuration
.IR /etc/m6t/NAME.toml ).
.SH ENVIRONMENT
.TP
.B RUST_LOG
Log filter of the daemons (default
.BR info );
for example
.BR RUST_LOG=debug .
Logs go to standard error: coloured on a terminal, plain text with one line per event
anywhere else (the journal, a pipe, a file).
.TP
.B NO_COLOR
Set and not empty: no colour on a terminal either.
.TP
.B NOTIFY_SOCKET
Set by systemd for
.B Type=notify
units: each daemon sends
.B READY=1
once its tunnel interface and sockets are up, and
.B STOPPING=1
when it stops.
.SH EXIT STATUS
0 after a clean stop (SIGINT or SIGTERM); 1 after an error, printed as one line naming the
configuration key, the missing capability or the failed step; 2 for a command line error.
.SH SEE ALSO
{}"#,
        refs(&see)
    )
}

fn sub_extra(name: &str, sub: &str) -> String {
    let main = name.to_string();
    let mut s = String::new();
    if let Some((_, unit, conf)) = UNITS.iter().find(|(n, _, _)| *n == sub) {
        s.push_str(
            ".SH SIGNALS\nSIGINT and SIGTERM stop the daemon at once: it withdraws the routes, \
             rules and addresses it installed, removes its control socket (the home agent first \
             saves its binding cache) and exits with status 0.\n",
        );
        s.push_str(&format!(
            ".SH FILES\n.TP\n.I {conf}\nThe configuration read by the systemd unit\n.BR {unit} ;\nits keys are in\n.BR m6t.toml (5).\n"
        ));
        s.push_str(&format!(
            ".SH SEE ALSO\n{}",
            refs(&[(&main, "1"), ("m6t.toml", "5"), ("systemd.service", "5")])
        ));
    } else {
        s.push_str(&format!(".SH SEE ALSO\n{}", refs(&[(&main, "1")])));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
