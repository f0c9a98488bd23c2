//! The `m6t` command line: thin; everything lives in the library crates.
//!
//! `m6t lab` and `m6t bench` are parsed here (same flags and help as ever) and then exec
//! the `m6t-lab` binary next to this one with the same arguments: the lab and the bench
//! live in the `m6t-lab` crate and are not part of this binary.

use clap::{CommandFactory, Parser, Subcommand};
use m6t::{config, daemon, prefix_tool, status};
use m6t_wire::Ipv6Prefix;
use std::path::PathBuf;
use std::process::ExitCode;

/// Large tables (the gateway's states) on transparent huge pages. The allocator is off by
/// default (large blocks then get plain, unadvised mappings) and only `m6t gateway` turns it
/// on, first thing: its state table is what gains from huge pages; the other subcommands
/// have no large tables.
#[global_allocator]
static ALLOC: m6t_linux::hugealloc::HugePageAlloc = m6t_linux::hugealloc::HugePageAlloc;

#[derive(Parser)]
#[command(
    name = "m6t",
    version,
    about = "IPv6 (and Mobile IPv6) over IPv4/UDP through NATs (draft-ebalard-mext-m6t-02)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the tunnel client on a mobile node.
    Client {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Write what crosses the tunnel, outer headers included, to FILE as pcapng
        /// (`tshark -r FILE`; needs CAP_NET_RAW).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
    },
    /// Run the tunnel gateway in front of (or on) the home agent.
    Gateway {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Write what crosses the tunnel, outer headers included, to FILE as pcapng
        /// (`tshark -r FILE`; needs CAP_NET_RAW).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
    },
    /// Run a DSMIPv6 home agent (RFC 5555).
    Ha {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Write what crosses the tunnel, outer headers included, to FILE as pcapng
        /// (`tshark -r FILE`; needs CAP_NET_RAW).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
    },
    /// Run a DSMIPv6 mobile node (RFC 5555).
    Mn {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Write what crosses the tunnel, outer headers included, to FILE as pcapng
        /// (`tshark -r FILE`; needs CAP_NET_RAW).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
    },
    /// Show the state of running daemons (all sockets in /run/m6t by default).
    Status {
        /// Control socket of one daemon.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate a ULA /48 (RFC 4193 section 3.2.2) and a mobile node's /80.
    Prefix {
        /// Use this /48 instead of generating one.
        #[arg(long)]
        ula: Option<Ipv6Prefix>,
        /// 16-bit subnet ID (decimal or 0x hex).
        #[arg(long, value_parser = parse_u16)]
        subnet_id: Option<u16>,
        /// 16-bit mobile node ID (decimal or 0x hex).
        #[arg(long, value_parser = parse_u16)]
        mn_id: Option<u16>,
    },
    /// Measure m6t, the plain path, Teredo, WireGuard and DSMIPv6 side by side.
    ///
    /// Everything runs in the lab's namespaces, through the same NAT.
    Bench {
        /// Smoke mode: every measurement once, briefly.
        #[arg(long)]
        quick: bool,
        /// Where to write the figures as JSON.
        #[arg(long, default_value = "bench-results.json")]
        out: PathBuf,
        /// Run only these parts (comma-separated): tunnel, teredo, wireguard, dsmip, ceiling,
        /// scale, idle, floor, workers, dos, ha-dos (the home agent half of dos), compare
        /// (the comparison of seed 004: its three tables, with the tunnel, teredo, wireguard
        /// and dsmip parts it is built on).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Build a namespace lab and show m6t, then DSMIPv6, at work.
    ///
    /// The lab has an MN behind an nftables NAT, the NAT, the gateway, the HA and a
    /// correspondent; the DSMIPv6 part runs a home agent and a mobile node with BU, BA and
    /// payload in ESP through the same NAT, then the mobile node as a mobile router with a
    /// host behind it.
    Lab {
        /// Build the lab and start both halves (m6t client and gateway, DSMIPv6 home agent
        /// and mobile node), print every host with its addresses and commands to try, and
        /// wait for Ctrl-C, which removes everything.
        #[arg(long)]
        hold: bool,
    },
}

/// `m6t generate-docs --out DIR`: writes the man pages and the bash and zsh completions (the
/// Debian package is built from them). Parsed apart from [`Cli`], before it, so that neither
/// `--help` nor the completions it writes offer it (clap_complete lists hidden subcommands).
#[derive(Parser)]
#[command(name = "m6t generate-docs")]
struct DocsCli {
    /// Output directory: man1/, man5/ and completions/ are created in it.
    #[arg(long)]
    out: PathBuf,
}

fn generate_docs(args: DocsCli) -> ExitCode {
    match m6t::docs::write_all(Cli::command(), &args.out) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{}: {e}", args.out.display())),
    }
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("`{s}` is not a 16-bit number"))
}

/// Logging for a daemon ([`m6t::logging`]), and a debug line naming its file, so that a log
/// shows which configuration a daemon read (and `RUST_LOG=debug` shows logging works before
/// the file does).
fn logging(config: &std::path::Path) {
    m6t::logging::init();
    tracing::debug!("reading the configuration {}", config.display());
}

/// Starts `--pcap FILE`, if given, before the daemon sets anything up, so that its first
/// packets are in the file.
fn capture(
    pcap: Option<&std::path::Path>,
    filter: &m6t_linux::capture::CaptureFilter,
) -> Result<(), daemon::DaemonError> {
    match pcap {
        Some(p) => daemon::start_capture(p, filter),
        None => Ok(()),
    }
}

/// A daemon's result, once its capture (if any) is flushed.
fn finish<T>(r: T) -> T {
    daemon::stop_capture();
    r
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("m6t: error: {msg}");
    ExitCode::FAILURE
}

fn status_cmd(socket: Option<PathBuf>, json: bool) -> ExitCode {
    let sockets = match socket {
        Some(s) => vec![s],
        None => {
            let mut v: Vec<PathBuf> = std::fs::read_dir("/run/m6t")
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            if v.is_empty() {
                return fail("no daemon found in /run/m6t (give --socket PATH)");
            }
            v
        }
    };
    let mut code = ExitCode::SUCCESS;
    for s in sockets {
        let ans = match m6t_linux::control::request(&s, status::REQUEST_STATUS) {
            Ok(a) => a,
            Err(e) => {
                code = fail(format!("{}: {e}", s.display()));
                continue;
            }
        };
        match serde_json::from_str::<status::Report>(&ans) {
            Ok(r) if json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
            Ok(r) => print!("{}", status::render(&r)),
            Err(e) => code = fail(format!("{}: bad answer: {e}", s.display())),
        }
    }
    code
}

/// Replaces this process with the `m6t-lab` binary next to it, with the same arguments (and
/// the same argv[0], so `ps` still shows `m6t lab` / `m6t bench`), so that signals such as
/// Ctrl-C reach the lab directly. Returns only on failure.
fn exec_lab(what: &str) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("current executable: {e}")),
    };
    let lab = exe.with_file_name("m6t-lab");
    if !lab.is_file() {
        return fail(format!(
            "{what} needs the m6t-lab binary next to {} (cargo build --release builds it)",
            exe.display()
        ));
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "m6t".into());
    let e = std::process::Command::new(&lab)
        .arg0(arg0)
        .args(args)
        .exec();
    fail(format!("{}: {e}", lab.display()))
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "generate-docs")
    {
        return generate_docs(DocsCli::parse_from(std::env::args_os().skip(1)));
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Client { config, pcap } => {
            logging(&config);
            let cfg = match config::load_client(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let filter = m6t_linux::capture::CaptureFilter {
                udp_ports: cfg.machine.ports.clone(),
                ip_protocols: Vec::new(),
            };
            if let Err(e) = capture(pcap.as_deref(), &filter) {
                return fail(e);
            }
            match finish(daemon::client::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Gateway { config, pcap } => {
            // Before the first allocation of the state table (see ALLOC).
            m6t_linux::hugealloc::set_enabled(true);
            logging(&config);
            let cfg = match config::load_gateway(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let filter = m6t_linux::capture::CaptureFilter {
                udp_ports: cfg.ports.clone(),
                ip_protocols: Vec::new(),
            };
            if let Err(e) = capture(pcap.as_deref(), &filter) {
                return fail(e);
            }
            match finish(daemon::gateway::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Ha { config, pcap } => {
            logging(&config);
            match m6t::dsmip_config::load_ha(&config) {
                Ok(c) => match capture(pcap.as_deref(), &daemon::dsmip_capture_filter()) {
                    Ok(()) => finish(daemon::ha::run(c)).map_or_else(fail, |_| ExitCode::SUCCESS),
                    Err(e) => fail(e),
                },
                Err(e) => fail(e),
            }
        }
        Cmd::Mn { config, pcap } => {
            logging(&config);
            match m6t::dsmip_config::load_mn(&config) {
                Ok(c) => match capture(pcap.as_deref(), &daemon::dsmip_capture_filter()) {
                    Ok(()) => finish(daemon::mn::run(c)).map_or_else(fail, |_| ExitCode::SUCCESS),
                    Err(e) => fail(e),
                },
                Err(e) => fail(e),
            }
        }
        Cmd::Status { socket, json } => status_cmd(socket, json),
        Cmd::Prefix {
            ula,
            subnet_id,
            mn_id,
        } => match prefix_tool::run(ula, subnet_id, mn_id) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Cmd::Bench { .. } => exec_lab("m6t bench"),
        Cmd::Lab { .. } => exec_lab("m6t lab"),
    }
}
