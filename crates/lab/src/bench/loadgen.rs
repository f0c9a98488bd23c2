//! A load generator speaking the m6t wire format, to measure the gateway at scale: it
//! creates states (each an IPv6 source inside the MN prefix whose first packet is an ICMPv6
//! echo request to the HA, so that the HA's answer makes it active), blasts packets from
//! them, or sends them keep-alives, from many UDP source ports. It reads the gateway's
//! counters through its control socket to compute rates.

use m6t::status::{Report, REQUEST_COUNTERS};
use m6t_linux::batch::SendBatch;
use m6t_linux::udp::{self, Udp};
use m6t_wire::{checksum, keepalive, Ipv6Repr};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the generator is told.
#[derive(Debug, Clone)]
pub struct LoadgenArgs {
    /// Gateway address and port.
    pub gateway: SocketAddrV4,
    /// HA address (destination of every packet).
    pub ha: Ipv6Addr,
    /// Base of the source addresses: state i uses `base + i`.
    pub base: Ipv6Addr,
    /// Gateway control socket (for counters).
    pub control: PathBuf,
    /// Gateway pid (for memory figures).
    pub gateway_pid: u32,
    /// Phases, e.g. `create:1000`, `blast:3`, `keepalive:10000:20`.
    pub phases: Vec<String>,
    /// Source sockets (ports) to spread the states over.
    pub sockets: usize,
    /// Do not read the gateway's counters (when a bare forwarding loop stands in for it).
    pub no_counters: bool,
}

fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, seq: u16) -> [u8; 56] {
    let mut p = [0u8; 56];
    let _ = Ipv6Repr {
        src,
        dst,
        next_header: 58,
        payload_len: 16,
        hop_limit: 64,
    }
    .emit(&mut p);
    p[40] = 128;
    p[44..46].copy_from_slice(&0x6d36u16.to_be_bytes());
    p[46..48].copy_from_slice(&seq.to_be_bytes());
    p[48..56].copy_from_slice(b"m6tbench");
    let sum = checksum::accumulate(checksum::pseudo_header(&src, &dst, 58, 16), &p[40..56]);
    p[42..44].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    p
}

fn data_packet(src: Ipv6Addr, dst: Ipv6Addr) -> [u8; 100] {
    let mut p = [0u8; 100];
    let _ = Ipv6Repr {
        src,
        dst,
        next_header: 59,
        payload_len: 60,
        hop_limit: 64,
    }
    .emit(&mut p);
    p
}

fn counters(args: &LoadgenArgs) -> Result<Report, String> {
    let s = m6t_linux::control::request(&args.control, REQUEST_COUNTERS)
        .map_err(|e| format!("gateway control socket: {e}"))?;
    serde_json::from_str(&s).map_err(|e| format!("gateway answer: {e}"))
}

/// Resident memory of a process in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Nanoseconds a process has run on a CPU, all its threads together: the first field of
/// /proc/PID/task/TID/schedstat. The scheduler counts it exactly at every switch, where
/// utime + stime in /proc/PID/stat come in clock ticks (10 ms, a twentieth of the idle
/// figure's budget over 20 s). On this kernel (no IRQ_TIME_ACCOUNTING) both include the
/// softirq work done in the process's context, such as delivering its sends.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

struct Gen {
    args: LoadgenArgs,
    socks: Vec<Udp>,
    batches: Vec<SendBatch>,
    created: u32,
}

impl Gen {
    fn src(&self, i: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.args.base) + u128::from(i))
    }

    fn push(&mut self, i: u32, p: &[u8]) {
        let s = i as usize % self.socks.len();
        self.batches[s].push(p, self.args.gateway);
        if self.batches[s].is_full() {
            self.batches[s].flush(&self.socks[s]);
        }
    }

    fn flush(&mut self) {
        for (b, s) in self.batches.iter_mut().zip(&self.socks) {
            if !b.is_empty() {
                b.flush(s);
            }
        }
    }

    /// Sends the first packet of states `from..to` at `rate` per second.
    fn send_firsts(&mut self, from: u32, to: u32, rate: u32) {
        let t0 = Instant::now();
        let dst = self.args.ha;
        for i in from..to {
            let p = echo_request(self.src(i), dst, i as u16);
            self.push(i, &p);
            if (i - from) % 1000 == 999 {
                self.flush();
                let due = Duration::from_secs_f64(f64::from(i - from + 1) / f64::from(rate));
                if let Some(w) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(w);
                }
                // Read the HA's answers so the socket buffers never fill.
                self.drain();
            }
        }
        self.flush();
    }

    /// Creates states up to `target`, paced so that the gateway and the HA keep up, in
    /// chunks each sent twice (a packet lost on the way only delays its state; a second
    /// echo request on an existing state is forwarded like any data).
    fn create(&mut self, target: u32) -> Result<String, String> {
        let t0 = Instant::now();
        let rss0 = rss_bytes(self.args.gateway_pid);
        let states0 = counters(&self.args)?.counter("states");
        const RATE: u32 = 50_000;
        const CHUNK: u32 = 25_000;
        let mut from = self.created;
        while from < target {
            let to = (from + CHUNK).min(target);
            self.send_firsts(from, to, RATE);
            std::thread::sleep(Duration::from_millis(100));
            self.drain();
            self.send_firsts(from, to, RATE);
            from = to;
        }
        self.created = target;
        std::thread::sleep(Duration::from_millis(500));
        self.drain();
        let r = counters(&self.args)?;
        let states = r.counter("states");
        let rss1 = rss_bytes(self.args.gateway_pid);
        let added = states.saturating_sub(states0).max(1);
        Ok(format!(
            "{{\"phase\":\"create\",\"target\":{target},\"states\":{states},\"rss\":{rss1},\"bytes_per_state\":{:.1},\"secs\":{:.3}}}",
            (rss1 as f64 - rss0 as f64) / added as f64,
            t0.elapsed().as_secs_f64()
        ))
    }

    fn drain(&mut self) {
        let mut b = [0u8; 2048];
        for s in &self.socks {
            while s.sock.recv(&mut b).is_ok() {}
        }
    }

    /// Sends data packets from the created states as fast as possible for `secs`.
    fn blast(&mut self, secs: f64) -> Result<String, String> {
        let n = self.created.max(1);
        let before = if self.args.no_counters {
            None
        } else {
            Some(counters(&self.args)?)
        };
        let t0 = Instant::now();
        let mut k: u64 = 0;
        let dst = self.args.ha;
        let dur = Duration::from_secs_f64(secs);
        while t0.elapsed() < dur {
            for _ in 0..4096 {
                // A multiplicative hash spreads consecutive packets over the whole table.
                let i = ((k.wrapping_mul(2_654_435_761)) % u64::from(n)) as u32;
                let p = data_packet(self.src(i), dst);
                self.push(i, &p);
                k += 1;
            }
        }
        self.flush();
        let elapsed = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        let fwd = match before {
            Some(b) => {
                counters(&self.args)?.counter("forwarded_to_home") - b.counter("forwarded_to_home")
            }
            None => 0,
        };
        Ok(format!(
            "{{\"phase\":\"blast\",\"states\":{n},\"sent\":{k},\"forwarded\":{fwd},\"secs\":{elapsed:.3},\"pps\":{:.0}}}",
            fwd as f64 / elapsed
        ))
    }

    /// Keep-alives from `count` states, each every `interval` seconds, for `secs`.
    fn keepalives(&mut self, count: u32, interval: f64, secs: f64) -> Result<String, String> {
        let count = count.min(self.created);
        let t0 = Instant::now();
        let before = counters(&self.args)?.counter("keepalives_answered");
        let cpu0 = cpu_ns(self.args.gateway_pid);
        let per_tick = (f64::from(count) / interval / 100.0).max(1.0);
        let mut i: u32 = 0;
        let mut tick = 0u64;
        let mut acc = 0.0;
        while t0.elapsed().as_secs_f64() < secs {
            acc += per_tick;
            while acc >= 1.0 {
                let ka = keepalive::emit(self.src(i % count.max(1)), keepalive::KEEPALIVE_PEER);
                self.push(i % count.max(1), &ka);
                i = i.wrapping_add(1);
                acc -= 1.0;
            }
            self.flush();
            self.drain();
            tick += 1;
            let due = Duration::from_millis(10 * tick);
            if let Some(w) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(w);
            }
        }
        let cpu1 = cpu_ns(self.args.gateway_pid);
        let secs = t0.elapsed().as_secs_f64();
        let answered = counters(&self.args)?.counter("keepalives_answered") - before;
        let cpu = (cpu1.saturating_sub(cpu0)) as f64 / 1e9 / secs;
        Ok(format!(
            "{{\"phase\":\"keepalive\",\"mns\":{count},\"sent\":{i},\"answered\":{answered},\"secs\":{secs:.3},\"gateway_cpu\":{cpu:.5}}}"
        ))
    }
}

/// Runs the phases, printing one JSON line per phase.
pub fn run(args: LoadgenArgs) -> Result<(), String> {
    let mut socks = Vec::new();
    for _ in 0..args.sockets.max(1) {
        let s = udp::listen(Ipv4Addr::UNSPECIFIED, 0).map_err(|e| format!("socket: {e}"))?;
        socks.push(s);
    }
    let batches = socks.iter().map(|_| SendBatch::new(64)).collect();
    let phases = args.phases.clone();
    let mut g = Gen {
        args,
        socks,
        batches,
        created: 0,
    };
    for ph in phases {
        let parts: Vec<&str> = ph.split(':').collect();
        let num = |i: usize| -> Result<f64, String> {
            parts
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("phase `{ph}`: missing number"))
        };
        let line = match parts[0] {
            "create" => g.create(num(1)? as u32)?,
            "blast" => g.blast(num(1)?)?,
            "keepalive" => g.keepalives(num(1)? as u32, num(2)?, num(3)?)?,
            "sleep" => {
                std::thread::sleep(Duration::from_secs_f64(num(1)?));
                "{\"phase\":\"sleep\"}".to_string()
            }
            other => return Err(format!("unknown phase `{other}`")),
        };
        println!("{line}");
    }
    Ok(())
}
