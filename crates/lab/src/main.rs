//! The `m6t-lab` command line: the lab, the bench, the fault soak, and the hidden tools the
//! bench runs inside its namespaces (the load generator and the syscall floor). `m6t lab` and
//! `m6t bench` exec this binary with their arguments; the daemons it starts are the `m6t`
//! binary next to it.

use clap::{Parser, Subcommand};
use m6t_lab::{bench, lab, sibling, soak};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "m6t-lab",
    version,
    about = "The m6t lab and benchmarks in network namespaces (runs the m6t binary next to it)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
        only: Vec<bench::Group>,
    },
    /// Fault soak: m6t and DSMIPv6 over it through NAT rebindings, a NAT reboot, loss,
    /// daemon restarts and moves, in real time, with a TCP transfer and probes throughout.
    Soak {
        /// Length of the fault schedule, minutes.
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Seconds between two faults (a NAT rebinding every other one).
        #[arg(long, default_value_t = 30.0)]
        slot: f64,
        /// CI smoke: each fault once, 12 s apart (about 2.5 minutes); ignores --minutes and --slot.
        #[arg(long)]
        smoke: bool,
        /// Where to write the figures as JSON (the daemons' logs go to the same name with
        /// `.logs` in place of `.json`).
        #[arg(long, default_value = "soak-results.json")]
        out: PathBuf,
        /// Every daemon writes a capture of what it sends and receives, kept with the logs.
        #[arg(long)]
        pcap: bool,
    },
    /// Load generator of the bench (runs inside a lab namespace).
    #[command(hide = true)]
    Loadgen {
        #[arg(long)]
        gateway: std::net::SocketAddrV4,
        #[arg(long)]
        ha: std::net::Ipv6Addr,
        #[arg(long)]
        base: std::net::Ipv6Addr,
        #[arg(long)]
        control: PathBuf,
        #[arg(long, default_value_t = 0)]
        gateway_pid: u32,
        #[arg(long, default_value_t = 64)]
        sockets: usize,
        #[arg(long)]
        no_counters: bool,
        #[arg(long = "phase")]
        phases: Vec<String>,
    },
    /// The attacker of the bench's `dos` part: a paced sendmmsg flood from many ports.
    #[command(hide = true)]
    Flood {
        #[arg(long)]
        target: std::net::SocketAddrV4,
        #[arg(long)]
        kind: bench::flood::Kind,
        #[arg(long, default_value_t = 500_000)]
        rate: u32,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 256)]
        ports: usize,
        #[arg(long)]
        ha: std::net::Ipv6Addr,
        #[arg(long)]
        base: std::net::Ipv6Addr,
        #[arg(long)]
        spoof: std::net::Ipv6Addr,
        #[arg(long, default_value_t = 0)]
        spi: u32,
    },
    /// The syscall floor of the bench: recvmmsg -> TUN write, nothing else.
    #[command(hide = true)]
    Floor {
        #[arg(long)]
        listen: std::net::Ipv4Addr,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        tun: String,
        #[arg(long)]
        secs: f64,
    },
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("m6t-lab: error: {msg}");
    ExitCode::FAILURE
}

/// A flag SIGINT and SIGTERM raise, so that the lab and the soak end cleanly (namespaces
/// and processes removed) when interrupted.
fn stop_flag() -> std::io::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))?;
    }
    Ok(stop)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Lab { hold } => {
            if let Err(e) = m6t_linux::caps::check_tunnel_privileges() {
                return fail(e);
            }
            let stop = match stop_flag() {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            // The daemons run from the m6t binary.
            let m6t = match sibling("m6t") {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            let r = if hold {
                lab::hold(&m6t, &stop)
            } else {
                lab::run(&m6t, &stop)
            };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Bench { quick, out, only } => {
            if let Err(e) = m6t_linux::caps::check_tunnel_privileges() {
                return fail(e);
            }
            // The daemons run from the m6t binary, the load generator and the floor from
            // this one.
            let m6t = match sibling("m6t") {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            let tools = match std::env::current_exe() {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            let o = if quick {
                bench::BenchOptions::quick()
            } else {
                bench::BenchOptions::full()
            };
            match bench::run(&m6t, &tools, o, &only, &out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Soak {
            minutes,
            slot,
            smoke,
            out,
            pcap,
        } => {
            let sane = (10.0..=3600.0).contains(&slot) && minutes > 0.0 && minutes <= 10080.0;
            if !smoke && !sane {
                return fail(
                    "--slot must be 10 to 3600 seconds and --minutes more than 0, at most a week",
                );
            }
            if let Err(e) = m6t_linux::caps::check_tunnel_privileges() {
                return fail(e);
            }
            let stop = match stop_flag() {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let m6t = match sibling("m6t") {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            let o = soak::SoakOptions {
                pcap,
                ..if smoke {
                    soak::SoakOptions::smoke("m6tsoak")
                } else {
                    soak::SoakOptions::full(minutes, slot)
                }
            };
            match soak::run(&m6t, &o, Some(&out), &stop) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Loadgen {
            gateway,
            ha,
            base,
            control,
            gateway_pid,
            sockets,
            no_counters,
            phases,
        } => {
            let a = bench::loadgen::LoadgenArgs {
                gateway,
                ha,
                base,
                control,
                gateway_pid,
                phases,
                sockets,
                no_counters,
            };
            match bench::loadgen::run(a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Flood {
            target,
            kind,
            rate,
            secs,
            ports,
            ha,
            base,
            spoof,
            spi,
        } => {
            let a = bench::flood::FloodArgs {
                target,
                kind,
                rate,
                secs,
                ports,
                ha,
                base,
                spoof,
                spi,
            };
            match bench::flood::run(a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Floor {
            listen,
            port,
            tun,
            secs,
        } => match bench::floor::run(listen, port, &tun, secs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
    }
}
