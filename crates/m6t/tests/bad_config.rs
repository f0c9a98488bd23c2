//! The bad-config table: each broken file, given to the daemon's real binary, stops it
//! before it touches anything, with exit status != 0 and exactly one line on stderr naming
//! the file and the offending key. Types, ranges, missing keys, unknown keys, overlapping
//! prefixes, unreadable and world-readable key files, for all four daemons.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const GW: &str = "address = \"2001:db8:1::2\"\nha_addresses = [\"2001:db8:1::1\"]\nmn_prefixes = [\"fd00:6d36:7400::/48\"]\n";
const CL: &str = "gateway = \"203.0.113.1\"\nprefix = \"fd00:6d36:7400:1:1::/80\"\n";
const HA: &str = "address6 = \"2001:db8:1::1\"\naddress4 = \"198.51.100.2\"\nhome_prefix = \"2001:db8:1::/64\"\n";
const MN: &str = "home_address = \"2001:db8:1::a\"\nha_address6 = \"2001:db8:1::1\"\nha_address4 = \"198.51.100.2\"\n";
const MN_IF: &str = "[[interfaces]]\nname = \"eth0\"\n";

/// An HA `[ipsec]` section with one SA whose key is in `sa.key`.
const HA_IPSEC: &str = "[ipsec]\n[[ipsec.policy]]\nname = \"bu\"\nlocal_address = \"2001:db8:1::1\"\n\
remote_address = \"2001:db8:1::a\"\nproto = \"mh\"\nlocal_mh_type = \"back\"\nremote_mh_type = \"bu\"\n\
in_sa = \"SA1\"\n[[ipsec.sa]]\nname = \"SA1\"\ndirection = \"in\"\nspi = 0x1001\nmode = \"transport\"\n\
algorithm = \"aes128-sha256\"\nkey_file = \"sa.key\"\n";

/// A key file to write beside the config: name, mode (None: do not write it; a directory
/// when the name ends with '/').
type KeyFile = Option<(&'static str, u32)>;

struct Case {
    daemon: &'static str,
    text: String,
    key: &'static str,
    key_file: KeyFile,
}

fn case(daemon: &'static str, text: impl Into<String>, key: &'static str) -> Case {
    Case {
        daemon,
        text: text.into(),
        key,
        key_file: None,
    }
}

fn cases() -> Vec<Case> {
    let g = |extra: &str| format!("{GW}{extra}");
    let c = |extra: &str| format!("{CL}{extra}");
    let h = |extra: &str| format!("{HA}{extra}");
    let m = |extra: &str| format!("{MN}{extra}{MN_IF}");
    let mut v = vec![
        // Gateway: types.
        case("gateway", g("mtu = \"big\"\n"), "mtu"),
        case("gateway", g("workers = 1.5\n"), "workers"),
        case("gateway", g("offload = \"yes\"\n"), "offload"),
        case("gateway", g("ports = [3544, \"x\"]\n"), "ports[1]"),
        case(
            "gateway",
            GW.replace("\"2001:db8:1::2\"", "\"2001:db8:1::zz\""),
            "address",
        ),
        // Gateway: ranges.
        case("gateway", g("mtu = 100\n"), "mtu"),
        case("gateway", g("ports = [70000]\n"), "ports[0]"),
        case("gateway", g("ports = []\n"), "ports"),
        case("gateway", g("ports = [3544, 3544]\n"), "ports"),
        case("gateway", g("workers = 0\n"), "workers"),
        case("gateway", g("max_states = 0\n"), "max_states"),
        case("gateway", g("active_lifetime = 0.5\n"), "active_lifetime"),
        case(
            "gateway",
            g("temporary_lifetime = -1\n"),
            "temporary_lifetime",
        ),
        case(
            "gateway",
            g("source_packet_rate = -5\n"),
            "source_packet_rate",
        ),
        case(
            "gateway",
            g("source_packet_burst = 0\n"),
            "source_packet_burst",
        ),
        case(
            "gateway",
            g("max_states_per_ipv4 = 0\n"),
            "max_states_per_ipv4",
        ),
        case(
            "gateway",
            g("metrics_listen = \"9464\"\n"),
            "metrics_listen",
        ),
        // `user`: a name no account has, a wrong type, for each daemon.
        case("gateway", g("user = \"no-such-user-m6t\"\n"), "user"),
        case("gateway", g("user = 65534\n"), "user"),
        case("client", c("user = \"no-such-user-m6t\"\n"), "user"),
        case("ha", h("user = \"\"\n"), "user"),
        case(
            "ha",
            h("source_packet_rate = 100000001\n"),
            "source_packet_rate",
        ),
        case("ha", h("source_packet_burst = 0\n"), "source_packet_burst"),
        case("mn", m("user = \"no-such-user-m6t\"\n"), "user"),
        case(
            "gateway",
            g("interface = \"a-name-much-too-long\"\n"),
            "interface",
        ),
        case(
            "gateway",
            GW.replace("fd00:6d36:7400::/48", "f000::/4"),
            "mn_prefixes",
        ),
        // Gateway: missing and unknown keys.
        case(
            "gateway",
            GW.replace("address = \"2001:db8:1::2\"\n", ""),
            "address",
        ),
        case("gateway", g("listn = \"203.0.113.1\"\n"), "listn"),
        // Gateway: overlapping prefixes.
        case(
            "gateway",
            GW.replace(
                "[\"fd00:6d36:7400::/48\"]",
                "[\"fd00:6d36:7400::/48\", \"fd00:6d36:7400:5::/64\"]",
            ),
            "mn_prefixes[1]",
        ),
        case(
            "gateway",
            g("allowed_destinations = [\"fd00:6d36::/32\"]\n"),
            "allowed_destinations[0]",
        ),
        // Client.
        case("client", c("mtu = 9\n"), "mtu"),
        case(
            "client",
            CL.replace("fd00:6d36:7400:1:1::/80", "fd00:6d36:7400:1::/64"),
            "prefix",
        ),
        case(
            "client",
            c("keepalive_interval = 0\n"),
            "keepalive_interval",
        ),
        case("client", c("echo_timeout = \"1s\"\n"), "echo_timeout"),
        case("client", c("dead_probes = 0\n"), "dead_probes"),
        case("client", c("hook = \"hook.sh\"\n"), "hook"),
        case("client", CL.replace("203.0.113.1", "0.0.0.0"), "gateway"),
        case(
            "client",
            "gateway = \"203.0.113.1\"\nula = \"fd00:6d36:7400::/48\"\n",
            "ula",
        ),
        case(
            "client",
            "prefix = \"fd00:6d36:7400:1:1::/80\"\n",
            "gateway",
        ),
        case("client", c("keepalive = 30\n"), "keepalive"),
        // Home agent.
        case(
            "ha",
            HA.replace(
                "address6 = \"2001:db8:1::1\"",
                "address6 = \"2001:db8:9::1\"",
            ),
            "address6",
        ),
        case("ha", h("nat_keepalive = 0\n"), "nat_keepalive"),
        case("ha", h("max_lifetime = 1\n"), "max_lifetime"),
        case("ha", h("ipv4_pool = [\"203.0.113.0/12\"]\n"), "ipv4_pool"),
        case(
            "ha",
            h("[[mobile_node]]\nhome_address = \"2001:db8:9::a\"\n"),
            "mobile_node[0].home_address",
        ),
        case("ha", h("accept_tlv = 1\n"), "accept_tlv"),
        case("ha", h("max_bindings = 0\n"), "max_bindings"),
        case(
            "ha",
            HA.replace("home_prefix = \"2001:db8:1::/64\"\n", ""),
            "home_prefix",
        ),
        // Mobile node.
        case("mn", MN.to_string(), "interfaces"),
        case("mn", m("table = 254\n"), "table"),
        case("mn", m("routes = [\"nope\"]\n"), "routes"),
        case(
            "mn",
            m("ipv4_home_address = \"somewhere\"\n"),
            "ipv4_home_address",
        ),
        case("mn", m("lifetime = 1\n"), "lifetime"),
        case(
            "mn",
            format!("{MN}[[interfaces]]\nname = \"\"\n"),
            "interfaces[0].name",
        ),
    ];
    // Key files: world-readable, missing, not a file, empty (no key in it).
    for (file, mode) in [
        (Some(("sa.key", 0o644)), "world-readable"),
        (None, "missing"),
        (Some(("sa.key/", 0o700)), "a directory"),
        (Some(("sa.key", 0o000)), "mode 0000"),
    ] {
        let _ = mode;
        v.push(Case {
            daemon: "ha",
            text: h(&format!("\n{HA_IPSEC}")),
            key: "ipsec.sa[0].key_file",
            key_file: file,
        });
    }
    v
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

#[test]
fn every_broken_config_gives_one_line_naming_the_file_and_the_key() {
    let dir = std::env::temp_dir().join(format!("m6t-badconfig-table-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let d = dir.join(format!("{i:02}"));
        std::fs::create_dir_all(&d).unwrap();
        let file: PathBuf = d.join(format!("{}.toml", c.daemon));
        std::fs::write(&file, &c.text).unwrap();
        if let Some((name, mode)) = c.key_file {
            let p = d.join(name.trim_end_matches('/'));
            if name.ends_with('/') {
                std::fs::create_dir_all(&p).unwrap();
            } else {
                // 48 bytes of aes128-sha256 key material in hex.
                std::fs::write(&p, "ab".repeat(48)).unwrap();
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        // In a network namespace of its own, under `timeout`: a case that is not broken
        // after all must neither touch the host's network nor leave a daemon running.
        let o = Command::new("unshare")
            .args(["-n", "timeout", "10"])
            .arg(bin())
            .args([c.daemon, "--config", &file.display().to_string()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = err.lines().collect();
        let ok = !o.status.success()
            && o.status.code() != Some(124)
            && lines.len() == 1
            && lines[0].contains(&file.display().to_string())
            && lines[0].contains(&format!("key `{}`", c.key));
        if !ok {
            failures.push(format!(
                "case {i} ({} `{}`): status {:?}, stderr {err:?}",
                c.daemon, c.key, o.status
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::thread::sleep(Duration::from_millis(1));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
