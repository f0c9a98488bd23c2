//! The operator's documents, each checked with the tool that consumes it: the man pages
//! written by `m6t generate-docs` (mandoc, groff and man render them without a warning), the
//! bash and zsh completions (their shells parse them; bash completes the subcommands), the
//! systemd units (`systemd-analyze verify` and `security`), and `m6t.toml(5)` with the
//! example configurations against the configuration code (every key documented, every
//! documented default the one the code applies), and the README's table of status counters
//! against the counters the code has. No root or namespace needed.

use serde::de::{DeserializeOwned, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn m6t() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("m6t-docs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whether `tool` is on PATH.
fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `cmd`, failing the test with its output unless it exits 0.
fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-deps.sh installs the tools)"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `m6t generate-docs` into a fresh directory.
fn generate(tag: &str) -> PathBuf {
    let out = scratch(tag);
    run(Command::new(m6t())
        .arg("generate-docs")
        .arg("--out")
        .arg(&out));
    out
}

/// The subcommands `m6t --help` lists, `help` aside.
fn subcommands() -> Vec<String> {
    let o = run(Command::new(m6t()).arg("--help"));
    let text = String::from_utf8(o.stdout).unwrap();
    let list = text.split("Commands:\n").nth(1).expect("a Commands: list");
    list.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn man_pages_render_without_warnings() {
    for tool in ["mandoc", "groff", "man"] {
        assert!(have(tool), "{tool} missing: run scripts/install-deps.sh");
    }
    let out = generate("man");
    let subs = subcommands();
    for s in [
        "client", "gateway", "ha", "mn", "status", "prefix", "lab", "bench",
    ] {
        assert!(subs.iter().any(|x| x == s), "`m6t --help` lacks {s}");
    }
    let mut pages = vec![(out.join("man1/m6t.1"), "m6t".to_string())];
    for s in &subs {
        pages.push((out.join(format!("man1/m6t-{s}.1")), format!("m6t-{s}")));
    }
    pages.push((out.join("man5/m6t.toml.5"), "m6t.toml".to_string()));
    let written = std::fs::read_dir(out.join("man1")).unwrap().count();
    assert_eq!(
        written,
        subs.len() + 1,
        "one page per visible subcommand, plus m6t.1"
    );
    for (page, name) in &pages {
        // mandoc's checker: errors and warnings (not its style notes) are failures.
        let o = run(Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(page));
        let msgs =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(
            msgs.trim().is_empty(),
            "mandoc on {}:\n{msgs}",
            page.display()
        );
        // groff with every warning on.
        let o = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(page));
        let msgs = String::from_utf8_lossy(&o.stderr);
        assert!(
            msgs.trim().is_empty(),
            "groff on {}:\n{msgs}",
            page.display()
        );
        // What a reader gets from man: the NAME line, and no complaint.
        let o = run(Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "100"));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.stderr.is_empty(),
            "man -l {}: {}",
            page.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            text.contains(&format!("{name} - ")),
            "man -l {} has no NAME line for {name}:\n{text}",
            page.display()
        );
    }
    let gw = std::fs::read_to_string(out.join("man1/m6t-gateway.1")).unwrap();
    assert!(
        gw.contains("\\-\\-config") && gw.contains("m6t.toml"),
        "{gw}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn completions_parse_and_complete_subcommands() {
    let out = generate("completions");
    let bash_file = out.join("completions/m6t.bash");
    run(Command::new("bash").arg("-n").arg(&bash_file));
    // What bash does on Tab: call the function `complete` registered for m6t with the
    // words so far, and offer COMPREPLY.
    let script = r#"
set -e
source "$1"
spec=$(complete -p m6t)
fn=$(printf '%s\n' "$spec" | sed -n 's/.*-F \([^ ]*\).*/\1/p')
[ -n "$fn" ] || { echo "no completion function registered for m6t: $spec"; exit 1; }
ask() {
  COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
  COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  "$fn" m6t "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
  echo "$(printf '%s ' "${COMPREPLY[@]}")"
}
echo "top: $(ask m6t '')"
echo "ga: $(ask m6t ga)"
echo "gateway: $(ask m6t gateway --c)"
"#;
    let o = run(Command::new("bash")
        .args(["-c", script, "bash"])
        .arg(&bash_file));
    let text = String::from_utf8(o.stdout).unwrap();
    let line = |tag: &str| -> BTreeSet<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{tag}: ")))
            .unwrap_or_else(|| panic!("no {tag} line in {text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let top = line("top");
    for s in subcommands() {
        assert!(
            top.contains(&s),
            "Tab after `m6t ` does not offer {s}: {top:?}"
        );
    }
    assert!(!top.contains("generate-docs"), "{top:?}");
    assert_eq!(line("ga"), BTreeSet::from(["gateway".to_string()]));
    assert!(line("gateway").contains("--config"), "{text}");

    let zsh_file = out.join("completions/_m6t");
    let zsh = std::fs::read_to_string(&zsh_file).unwrap();
    assert!(
        zsh.starts_with("#compdef m6t"),
        "{}",
        &zsh[..zsh.len().min(80)]
    );
    assert!(have("zsh"), "zsh missing: run scripts/install-deps.sh");
    run(Command::new("zsh").arg("-n").arg(&zsh_file));
    let _ = std::fs::remove_dir_all(&out);
}

/// The README's capture drop-in (packaging/systemd/pcap-dropin.conf) on the gateway's unit:
/// systemd accepts the result, and the drop-in's settings add to the unit's (the sandbox
/// then allows packet sockets, which the unit alone does not).
#[test]
fn pcap_dropin_verifies() {
    if !have("systemd-analyze") {
        eprintln!("SKIPPED pcap_dropin_verifies: systemd-analyze is not installed");
        return;
    }
    let docs = generate("dropin-man");
    let dir = scratch("dropin");
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/m6t-gateway.service"))
        .unwrap()
        .replace("/usr/bin/m6t ", &format!("{} ", m6t().display()));
    let dropin = std::fs::read_to_string(repo().join("packaging/systemd/pcap-dropin.conf"))
        .unwrap()
        .replace("/usr/bin/m6t ", &format!("{} ", m6t().display()));
    assert!(
        dropin.contains("--pcap /run/m6t/gateway.pcapng"),
        "{dropin}"
    );
    // A drop-in is read as if appended to the unit file.
    std::fs::write(dir.join("m6t-gateway.service"), &unit).unwrap();
    std::fs::write(dir.join("m6t-gwpcap.service"), unit + "\n" + &dropin).unwrap();
    let o = run(Command::new("systemd-analyze")
        .args(["verify", "m6t-gwpcap.service"])
        .current_dir(&dir)
        .env("MANPATH", &docs));
    let msgs = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(msgs.trim().is_empty(), "systemd-analyze verify:\n{msgs}");
    let packet_sockets = |u: &str| {
        let o = run(Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("./{u}"))
            .current_dir(&dir));
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(text.contains("AF_PACKET"), "{u}: {text}");
        text.contains("Service may allocate packet sockets")
    };
    assert!(!packet_sockets("m6t-gateway.service"));
    assert!(packet_sockets("m6t-gwpcap.service"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&docs);
}

#[test]
fn systemd_units_verify() {
    if !have("systemd-analyze") {
        // scripts/install-deps.sh installs systemd; only a machine where it cannot be
        // installed gets here.
        eprintln!("SKIPPED systemd_units_verify: systemd-analyze is not installed");
        return;
    }
    let docs = generate("units-man");
    let dir = scratch("units");
    let units = [
        "m6t-gateway.service",
        "m6t-ha.service",
        "m6t-client@.service",
        "m6t-mn@.service",
    ];
    for u in units {
        let text = std::fs::read_to_string(repo().join("packaging/systemd").join(u)).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/m6t "), "{u}");
        assert!(text.contains("Type=notify"), "{u}");
        // verify checks that ExecStart names an executable: point it at this build.
        let text = text.replace("/usr/bin/m6t ", &format!("{} ", m6t().display()));
        std::fs::write(dir.join(u), text).unwrap();
    }
    // Templates are checked as such, and through an instance (%i expanded).
    for (t, i) in [
        ("m6t-client@.service", "m6t-client@test.service"),
        ("m6t-mn@.service", "m6t-mn@test.service"),
    ] {
        std::fs::copy(dir.join(t), dir.join(i)).unwrap();
    }
    let mut all: Vec<String> = units.iter().map(|u| u.to_string()).collect();
    all.extend([
        "m6t-client@test.service".into(),
        "m6t-mn@test.service".into(),
    ]);
    // Documentation=man:... is checked too: man finds the pages just generated.
    let o = run(Command::new("systemd-analyze")
        .arg("verify")
        .args(&all)
        .current_dir(&dir)
        .env("MANPATH", &docs));
    // Unknown keys and bad values are only warnings for systemd: fail on any output.
    let msgs = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(msgs.trim().is_empty(), "systemd-analyze verify:\n{msgs}");
    // The sandbox as systemd rates it: exposure at most 3.0 of 10 ("OK").
    for u in units {
        let o = run(Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=30", "--no-pager"])
            .arg(format!("./{u}"))
            .current_dir(&dir));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Overall exposure level"), "{u}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&docs);
}

// ---- m6t.toml(5) and the example configurations against the code ----

/// A Deserializer that only records the field names a `#[derive(Deserialize)]` struct asks
/// for: the keys its file accepts, straight from the code.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names recorded")
    }
}
impl std::error::Error for Stop {}
impl serde::de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn keys_of<T: DeserializeOwned>() -> BTreeSet<String> {
    let mut v = Vec::new();
    let _ = T::deserialize(FieldNames(&mut v));
    assert!(!v.is_empty(), "no fields recorded");
    v.into_iter().map(str::to_string).collect()
}

/// How the page gives an entry.
#[derive(Debug, Clone, PartialEq)]
enum Doc {
    /// `key = value`, as TOML text (`computed` when it depends on another key).
    Default {
        value: String,
        computed: bool,
    },
    Required,
    Unset,
}

/// One file's part of m6t.toml(5): its entries (`table.key` for keys of repeated
/// tables) and its `.SS [name]` / `.SS [[name]]` subsections.
#[derive(Debug, Default)]
struct PagePart {
    entries: BTreeMap<String, Doc>,
    tables: BTreeSet<String>,
}

fn unescape(s: &str) -> String {
    s.replace("\\-", "-")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fB", "")
}

/// Reads m6t.toml(5) in the entry form its header comment describes.
fn config_page() -> BTreeMap<String, PagePart> {
    let page = m6t::docs::CONFIG_PAGE;
    let mut parts: BTreeMap<String, PagePart> = BTreeMap::new();
    let mut section = String::new();
    let mut prefix = String::new();
    for line in page.lines() {
        if let Some(s) = line.strip_prefix(".SH ") {
            section = s.trim_matches('"').to_string();
            prefix.clear();
        } else if let Some(s) = line.strip_prefix(".SS ") {
            let name = s
                .trim_matches(|c| c == '[' || c == ']' || c == '"')
                .to_string();
            parts
                .entry(section.clone())
                .or_default()
                .tables
                .insert(name.clone());
            prefix = if s.starts_with("[[") {
                format!("{name}.")
            } else {
                String::new()
            };
        } else if let Some(rest) = line.strip_prefix("\\fB") {
            let Some((key, doc)) = rest.split_once("\\fR") else {
                continue;
            };
            let doc = if doc == " (required)" {
                Doc::Required
            } else if doc == " (unset)" {
                Doc::Unset
            } else if let Some(v) = doc.strip_prefix(" = ") {
                Doc::Default {
                    value: unescape(v),
                    computed: v.contains("\\fI"),
                }
            } else {
                panic!("m6t.toml(5): entry {key:?} reads {doc:?}, not `= default`, (required) or (unset)");
            };
            // Table keys are written `table.key` on the page already.
            assert!(
                prefix.is_empty() || key.starts_with(&prefix),
                "{key} under {prefix}"
            );
            let part = parts.entry(section.clone()).or_default();
            assert!(
                part.entries.insert(key.to_string(), doc).is_none(),
                "{key} twice in {section}"
            );
        }
    }
    parts
}

/// The keys the code accepts for the file of a page section, with `table.key` for repeated
/// tables.
fn code_keys(section: &str) -> BTreeSet<String> {
    use m6t::{config, dsmip_config as d};
    let nested = |table: &str, keys: BTreeSet<String>| -> BTreeSet<String> {
        keys.into_iter().map(|k| format!("{table}.{k}")).collect()
    };
    match section {
        "CLIENT" => keys_of::<config::ClientFile>(),
        "GATEWAY" => keys_of::<config::GatewayFile>(),
        "HOME AGENT" => {
            let mut k = keys_of::<d::HaFile>();
            k.extend(nested("mobile_node", keys_of::<d::MobileNodeEntry>()));
            k
        }
        "MOBILE NODE" => {
            let mut k = keys_of::<d::MnFile>();
            k.extend(nested("interfaces", keys_of::<d::MnInterface>()));
            k
        }
        other => panic!("unknown section {other}"),
    }
}

const FILES: [(&str, &str); 4] = [
    ("CLIENT", "client.toml"),
    ("GATEWAY", "gateway.toml"),
    ("HOME AGENT", "ha.toml"),
    ("MOBILE NODE", "mn.toml"),
];

#[test]
fn config_page_lists_every_key() {
    let parts = config_page();
    for (section, _) in FILES {
        let part = parts
            .get(section)
            .unwrap_or_else(|| panic!("no .SH {section}"));
        let code = code_keys(section);
        for k in &code {
            // A key is an entry, or a table with a subsection of its own.
            let documented = part.entries.contains_key(k)
                || (!k.contains('.') && part.tables.contains(k.as_str()));
            assert!(
                documented,
                "m6t.toml(5), {section}: key `{k}` of the code is not documented"
            );
        }
        for k in part.entries.keys() {
            assert!(
                code.contains(k),
                "m6t.toml(5), {section}: `{k}` is not a key of the code"
            );
        }
    }
}

/// `key = value` lines of an example file, commented out (`#key = value`), with
/// `table.key` inside a commented `#[[table]]`; and its active (uncommented) lines.
fn example(file: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let text = std::fs::read_to_string(repo().join("packaging/examples").join(file)).unwrap();
    let mut keys = BTreeMap::new();
    let mut active = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        if !line.starts_with('#') && !line.trim().is_empty() {
            active.push(line.to_string());
        }
        let Some(l) = line.strip_prefix('#') else {
            continue;
        };
        if let Some(t) = l.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
            table = format!("{t}.");
        } else if let Some((k, v)) = l.split_once(" = ") {
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                keys.insert(format!("{table}{k}"), v.to_string());
            }
        }
    }
    (keys, active)
}

/// The file's required keys with example values, as top-level text and per table.
fn required(section: &str) -> (&'static str, &'static [(&'static str, &'static str)]) {
    match section {
        "CLIENT" => ("gateway = \"203.0.113.1\"\nprefix = \"fd00:6d36:7400:1:1::/80\"\n", &[]),
        "GATEWAY" => (
            "address = \"2001:db8:1::2\"\nha_addresses = [\"2001:db8:1::1\"]\nmn_prefixes = [\"fd00:6d36:7400::/48\"]\n",
            &[],
        ),
        "HOME AGENT" => (
            "address6 = \"2001:db8:1::1\"\naddress4 = \"198.51.100.2\"\nhome_prefix = \"2001:db8:1::/64\"\n",
            &[("mobile_node", "home_address = \"2001:db8:1::a\"\n")],
        ),
        "MOBILE NODE" => (
            "home_address = \"2001:db8:1::a\"\nha_address6 = \"2001:db8:1::1\"\nha_address4 = \"198.51.100.2\"\n",
            &[("interfaces", "name = \"eth0\"\n")],
        ),
        other => panic!("unknown section {other}"),
    }
}

/// Validates a file's text with the daemon's own loader; its result as text to compare.
fn load(section: &str, text: &str) -> String {
    use m6t::{config, dsmip_config as d};
    let p = Path::new("example.toml");
    let r = match section {
        "CLIENT" => config::client_from_str(p, text).map(|c| format!("{c:?}")),
        "GATEWAY" => config::gateway_from_str(p, text).map(|c| format!("{c:?}")),
        "HOME AGENT" => d::ha_from_str(p, text).map(|c| format!("{c:?}")),
        "MOBILE NODE" => d::mn_from_str(p, text).map(|c| format!("{c:?}")),
        other => panic!("unknown section {other}"),
    };
    r.unwrap_or_else(|e| panic!("{section}: {e}\n{text}"))
}

#[test]
fn examples_and_page_give_the_defaults_the_code_applies() {
    let parts = config_page();
    for (section, file) in FILES {
        let part = &parts[section];
        let (ex, active) = example(file);
        // Installed as they are, the examples set nothing: the operator sets the required
        // keys, and a daemon started on an untouched file stops at once naming one.
        assert!(active.is_empty(), "{file}: uncommented lines {active:?}");
        let (base_top, base_tables) = required(section);
        let mut top = String::new();
        let mut tables: BTreeMap<&str, String> = base_tables
            .iter()
            .map(|(t, b)| (*t, b.to_string()))
            .collect();
        for (key, doc) in &part.entries {
            let Some(value) = ex.get(key) else {
                panic!("{file} does not show `{key}` (documented in m6t.toml(5), {section})");
            };
            let Doc::Default {
                value: page_value,
                computed,
            } = doc
            else {
                continue;
            };
            if !computed {
                assert_eq!(
                    value, page_value,
                    "{file}: `{key}` differs from m6t.toml(5)"
                );
            }
            match key.split_once('.') {
                Some((t, k)) => {
                    let body = tables
                        .get_mut(t)
                        .unwrap_or_else(|| panic!("no base table {t}"));
                    body.push_str(&format!("{k} = {value}\n"));
                }
                None => top.push_str(&format!("{key} = {value}\n")),
            }
        }
        let render = |top: &str, tables: &BTreeMap<&str, String>| {
            let mut s = top.to_string() + base_top;
            for (t, body) in tables {
                s.push_str(&format!("[[{t}]]\n{body}"));
            }
            s
        };
        let base: BTreeMap<&str, String> = base_tables
            .iter()
            .map(|(t, b)| (*t, b.to_string()))
            .collect();
        // Every default written out gives the same configuration as none written.
        assert_eq!(
            load(section, &render(&top, &tables)),
            load(section, &render("", &base)),
            "{file}: a default shown differs from the code's"
        );
    }
}

/// The README's "Status counters" section gives the meaning of every counter `m6t status`
/// shows, and of none that no longer exists.
#[test]
fn readme_explains_every_counter() {
    use m6t_proto::stats::Reason;
    fn names<R: Reason>() -> Vec<String> {
        R::ALL.iter().map(|r| r.name().to_string()).collect()
    }
    let mut want: BTreeSet<String> = BTreeSet::new();
    want.extend(names::<m6t_proto::m6t::client::ClientCounter>());
    want.extend(names::<m6t_proto::m6t::gateway::GatewayCounter>());
    want.extend(names::<m6t_proto::dsmip::home_agent::HaCounter>());
    want.extend(names::<m6t_proto::dsmip::mobile_node::MnCounter>());
    want.extend(
        m6t_linux::failures::Failure::ALL
            .iter()
            .map(|f| f.name().to_string()),
    );
    want.extend(
        m6t_ipsec::IpsecDrop::ALL
            .iter()
            .map(|d| format!("ipsec_{}", d.name())),
    );
    want.extend(
        m6t_ike::endpoint::IkeCounters::default()
            .iter()
            .map(|(n, _)| n.to_string()),
    );
    // Every daemon's with `--pcap`.
    want.extend(m6t_linux::capture::COUNTER_NAMES.map(String::from));
    // The gateway's two values that are not counts, and the kernel's drops before the
    // gateway (daemon/gateway.rs).
    want.extend([
        "states".to_string(),
        "gc_max_pause_us".to_string(),
        "drop_source_budget".to_string(),
    ]);

    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("\n## Status counters\n")
        .expect("README has a Status counters section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` | "))
        .filter(|(_, meaning)| meaning.trim_end_matches(" |").len() > 3)
        .map(|(name, _)| name.to_string())
        .collect();
    let missing: Vec<&String> = want.difference(&documented).collect();
    let stale: Vec<&String> = documented.difference(&want).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README Status counters: missing {missing:?}, no such counter {stale:?}"
    );
}
