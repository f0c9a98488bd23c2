//! The Debian package, installed for real: `packaging/build-deb.sh --no-build` packages this
//! build's release binaries with cargo-deb, `dpkg -i` installs the package into the running
//! system (root; test machines are throwaway), and the test checks what an operator relies
//! on — the binary on PATH, the units where systemd looks and accepted by `systemd-analyze
//! verify`, the configurations where the units read them, the man pages where man finds
//! them, the completions where the shells load them — then purges the package, also when a
//! check failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNITS: [&str; 4] = [
    "m6t-gateway.service",
    "m6t-ha.service",
    "m6t-client@.service",
    "m6t-mn@.service",
];

/// The configuration each unit reads, with the instance names of the example files.
const CONFIGS: [(&str, &str, &str); 4] = [
    ("m6t-gateway.service", "", "/etc/m6t/gateway.toml"),
    ("m6t-ha.service", "", "/etc/m6t/ha.toml"),
    ("m6t-client@.service", "client", "/etc/m6t/client.toml"),
    ("m6t-mn@.service", "mn", "/etc/m6t/mn.toml"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-deps.sh installs the tools)"))
}

/// Runs `cmd` and returns its stdout, failing the test with its output unless it exits 0.
fn run(cmd: &mut Command) -> String {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// dpkg's state of the package m6t ("" when dpkg never heard of it).
fn package_status() -> String {
    let o = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "m6t"]));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Purges the package when dropped, so that a failed check leaves the system as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "m6t"]).output();
    }
}

#[test]
fn deb_installs_where_systemd_man_and_shells_look_then_purges() {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "dpkg -i needs root (scripts/test.sh runs as root)"
    );
    // Never over an installation of the operator's own: the purge would take it away.
    let before = package_status();
    assert!(
        before.is_empty() || before.contains("not-installed"),
        "package m6t is on this machine ({before}); this test installs its own build and \
         purges it: remove yours first (dpkg --purge m6t)"
    );

    // Package the binaries this test suite built (the release build, with m6t-lab from
    // the same workspace build next to m6t).
    let bin = Path::new(env!("CARGO_BIN_EXE_m6t"));
    let release = bin.parent().unwrap();
    let target = release.parent().unwrap();
    assert!(
        release.join("m6t-lab").is_file(),
        "{} missing: cargo build --release -p m6t-lab (cargo test --workspace builds it)",
        release.join("m6t-lab").display()
    );
    let out = run(Command::new("bash")
        .arg(repo().join("packaging/build-deb.sh"))
        .arg("--no-build")
        .env("CARGO_TARGET_DIR", target));
    let deb = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "build-deb.sh printed {out:?}"
    );
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/bin/m6t",
        "./usr/bin/m6t-lab",
        "./usr/share/man/man1/m6t.1.gz",
        "./usr/share/man/man5/m6t.toml.5.gz",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {f}"))),
            "{f} not in the package:\n{listing}"
        );
    }

    let guard = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(
        package_status().contains("ok installed"),
        "{}",
        package_status()
    );

    // The binaries, from PATH's /usr/bin.
    let version = run(Command::new("/usr/bin/m6t").arg("--version"));
    assert_eq!(version.trim(), concat!("m6t ", env!("CARGO_PKG_VERSION")));
    let lab = run(Command::new("/usr/bin/m6t-lab").arg("--help"));
    assert!(lab.contains("Usage"), "{lab}");

    // The units, where systemd looks, as in the repository.
    for u in UNITS {
        let installed = Path::new("/lib/systemd/system").join(u);
        let text = std::fs::read_to_string(&installed)
            .unwrap_or_else(|e| panic!("{}: {e}", installed.display()));
        let ours = std::fs::read_to_string(repo().join("packaging/systemd").join(u)).unwrap();
        assert_eq!(text, ours, "{}", installed.display());
    }
    // The capture drop-in the README points at, beside it.
    let dropin = std::fs::read_to_string("/usr/share/doc/m6t/pcap-dropin.conf").unwrap();
    assert_eq!(
        dropin,
        std::fs::read_to_string(repo().join("packaging/systemd/pcap-dropin.conf")).unwrap()
    );
    // systemd-analyze finds them by name in its search path, instances included; every
    // ExecStart names an executable and every Documentation= page opens in man.
    let o = output(Command::new("systemd-analyze").args([
        "verify",
        "m6t-gateway.service",
        "m6t-ha.service",
        "m6t-client@client.service",
        "m6t-mn@mn.service",
    ]));
    let msgs = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && msgs.trim().is_empty(),
        "systemd-analyze verify on the installed units: {}\n{msgs}",
        o.status
    );

    // Each unit's --config names a file the package installed, a conffile readable by root
    // only; the untouched file is valid TOML that lacks only the required keys, so the
    // daemon stops at once naming the file and a missing key.
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "m6t"]));
    for (unit, instance, config) in CONFIGS {
        let text = std::fs::read_to_string(Path::new("/lib/systemd/system").join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let path = exec
            .split_once("--config ")
            .map(|(_, p)| p.trim().replace("%i", instance))
            .unwrap_or_else(|| panic!("{unit}: ExecStart without --config: {exec}"));
        assert_eq!(path, config, "{unit}");
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{path}");
        assert!(
            conffiles.contains(&path),
            "{path} is not a conffile:\n{conffiles}"
        );
        let daemon = exec.split_whitespace().nth(1).unwrap();
        let o = output(Command::new("/usr/bin/m6t").args([daemon, "--config", &path]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{daemon} on {path}: {err}");
        assert!(
            err.starts_with(&format!("m6t: error: config {path}: key `"))
                && err.trim_end().ends_with("`: missing (required)"),
            "{daemon} on {path}: {err}"
        );
    }

    // The man pages, where man finds them.
    for (section, page, word) in [
        ("1", "m6t", "SUBCOMMANDS"),
        ("1", "m6t-gateway", "--config"),
        ("1", "m6t-ha", "--pcap"),
        ("5", "m6t.toml", "claims_dir"),
    ] {
        let path = run(Command::new("man").args(["-w", section, page]));
        assert!(
            path.trim()
                .starts_with(&format!("/usr/share/man/man{section}/{page}.{section}")),
            "man -w {section} {page}: {path}"
        );
        let text = run(Command::new("man")
            .args(["-P", "cat", section, page])
            .env("MANWIDTH", "100"));
        assert!(
            text.contains(word),
            "man {section} {page} lacks {word}:\n{text}"
        );
    }

    // The completions, where bash-completion loads them by command name and in zsh's fpath.
    let spec = run(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/m6t && complete -p m6t",
    ]));
    assert!(spec.contains("-F _m6t"), "{spec}");
    assert!(Path::new("/usr/share/zsh/vendor-completions/_m6t").is_file());
    let fpath = run(Command::new("zsh").args(["-f", "-c", "print -l $fpath"]));
    assert!(
        fpath
            .lines()
            .any(|l| l == "/usr/share/zsh/vendor-completions"),
        "zsh does not look in /usr/share/zsh/vendor-completions: {fpath}"
    );

    // Purged, nothing of it is left.
    drop(guard);
    let after = package_status();
    assert!(
        after.is_empty() || after.contains("not-installed"),
        "{after}"
    );
    for p in [
        "/usr/bin/m6t",
        "/lib/systemd/system/m6t-gateway.service",
        "/etc/m6t/gateway.toml",
        "/usr/share/man/man5/m6t.toml.5.gz",
    ] {
        assert!(!Path::new(p).exists(), "{p} left after dpkg --purge");
    }
}
