//! A per-source datagram budget in the kernel: an eBPF socket filter on the gateway's UDP
//! sockets. A datagram from the sender of an active state (its IPv4 address and port, and
//! the IPv6 source inside it, exactly as the state holds them) passes; every other datagram
//! counts against a budget per IPv4 source, and over it the kernel drops it before it is
//! queued on the socket. One source flooding the gateway with what no state accepts (new-state
//! attempts, garbage, another node's address, keep-alives) then costs the kernel a hash
//! lookup per packet, not a read and a parse by the worker that also serves everybody else,
//! while a mobile node's own traffic, however heavy, is never budgeted: the gateway enters
//! a state's sender in the filter's map when the state becomes active and removes it when
//! the state expires.
//!
//! Why a socket filter rather than an nftables meter: a flow's datagrams of equal size reach
//! netfilter as one packet of up to 64 segments when the sender uses UDP GSO, or after GRO
//! on a real NIC (for a socket with UDP_GRO, as the gateway's are), so a limit in packets per
//! second counts such a flood up to 64 times too low: measured in the bench's `dos` part, an
//! nftables `limit rate over 20000/second` per source dropped none of a 500 k datagram/s
//! flood of equal-size datagrams sent with GSO. The filter counts datagrams (`gso_segs`), and it can tell a
//! state's traffic from the rest, which a per-address meter cannot: a uniform per-source
//! limit low enough to matter against a flood also caps a NAT's bulk traffic (measured: a
//! mobile node's TCP held at 1.2 Gbit/s by a 100 k datagram/s limit, 6-7 Gbit/s without).
//! It also needs no firewall table to install and remove: it goes with the sockets when the
//! gateway exits, however it exits.
//!
//! The budget is a GCRA (the virtual-scheduling form of a token bucket): per source the
//! theoretical arrival time `tat`; a packet of `n` datagrams passes when
//! `max(tat, now) + n·T - now <= burst·T` (`T = 1 s / rate`), and moves `tat` there. Sources
//! live in an LRU hash of [`SOURCES`] entries (the least recently seen is forgotten when
//! full). Updates from several CPUs may race: the budget is approximate under contention,
//! never unbounded. Drops are counted in an array map the gateway reads. A GRO packet is
//! judged by its first datagram: a sender with an active state of its own can mix others
//! behind it, but then it is a user of the gateway like any NAT with mobile nodes behind it
//! (held by `max_states_per_ipv4`), not an anonymous flood.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most IPv4 sources tracked at once.
pub const SOURCES: u32 = 65_536;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_TYPE_HASH: u32 = 1;
/// `map_flags`: allocate entries as they are added (the peer map is sized for the state
/// cap, mostly empty).
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `SKF_NET_OFF`: offsets from the network header in `LD_ABS`.
const SKF_NET_OFF: i32 = -0x10_0000;
/// Offset of `gso_segs` in `struct __sk_buff` (uapi/linux/bpf.h).
const SKB_GSO_SEGS: i16 = 164;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_MAP_UPDATE: i32 = 2;
const HELPER_KTIME_GET_NS: i32 = 5;

/// One eBPF instruction (uapi/linux/bpf.h `struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used (class | size/op | source).
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_X: u8 = 0x0f;
const ADD64_K: u8 = 0x07;
const SUB64_X: u8 = 0x1f;
const MUL64_K: u8 = 0x27;
const LD_ABS_W: u8 = 0x20;
const LD_ABS_H: u8 = 0x28;
const LD_IMM64: u8 = 0x18;
const LDX_W: u8 = 0x61;
const LDX_DW: u8 = 0x79;
const STX_W: u8 = 0x63;
const STX_DW: u8 = 0x7b;
const ST_W: u8 = 0x62;
const ATOMIC_DW: u8 = 0xdb;
const JA: u8 = 0x05;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JGE_X: u8 = 0x3d;
const JGT_X: u8 = 0x2d;
const JLT_K: u8 = 0xa5;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// `src_reg` of a `LD_IMM64` whose immediate is a map's file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

/// Builds the filter: datagrams of an active state pass; the others have `rate` datagrams
/// per second per source, `burst` at once; `peers`, `lru` and `drops` are the maps'
/// descriptors, and `exempt` what identifies a state's datagrams.
fn program(
    rate: u32,
    burst: u32,
    exempt: Exempt,
    peers: RawFd,
    lru: RawFd,
    drops: RawFd,
) -> Vec<Insn> {
    let t = (1_000_000_000u64 / u64::from(rate.max(1))).max(1);
    let tau = t.saturating_mul(u64::from(burst.max(1)));
    let ld_imm64 = |dst: u8, src: u8, v: u64| {
        [
            insn(LD_IMM64, dst, src, 0, v as u32 as i32),
            insn(0, 0, 0, 0, (v >> 32) as u32 as i32),
        ]
    };
    let mut p = Vec::with_capacity(48);
    // r6 = ctx (LD_ABS wants it there); key = source address at fp-4.
    p.push(insn(MOV64_X, 6, 1, 0, 0));
    p.push(insn(LD_ABS_W, 0, 0, 0, SKF_NET_OFF + 12));
    p.push(insn(STX_W, 10, 0, -4, 0));
    // Is it from an active state? The peer key at fp-32: source address, source port, and
    // with `Exempt::SenderAndInner6` the IPv6 source in the payload, for which the datagram
    // needs room for a UDP and an IPv6 header (offsets from the UDP header, where the
    // kernel runs a socket's filter).
    let mut short = None;
    if exempt == Exempt::SenderAndInner6 {
        p.push(insn(LDX_W, 2, 6, 0, 0)); // skb->len
        short = Some(p.len());
        p.push(insn(JLT_K, 2, 0, 0, 8 + 40)); // -> BUDGET (patched)
    }
    p.push(insn(STX_W, 10, 0, -32, 0));
    p.push(insn(LD_ABS_H, 0, 0, 0, 0));
    p.push(insn(STX_W, 10, 0, -28, 0));
    if exempt == Exempt::SenderAndInner6 {
        for (k, off) in [16, 20, 24, 28].into_iter().enumerate() {
            p.push(insn(LD_ABS_W, 0, 0, 0, off));
            p.push(insn(STX_W, 10, 0, -24 + 4 * k as i16, 0));
        }
    }
    p.extend(ld_imm64(1, PSEUDO_MAP_FD, peers as u64));
    p.push(insn(MOV64_X, 2, 10, 0, 0));
    p.push(insn(ADD64_K, 2, 0, 0, -32));
    p.push(insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP));
    let known_peer = p.len();
    p.push(insn(JNE_K, 0, 0, 0, 0)); // -> PASS (patched)
    let budget_at = p.len();
    // r9 = datagrams in this packet (gso_segs, 0 for a plain one); r7 = their cost in ns.
    p.push(insn(LDX_W, 9, 6, SKB_GSO_SEGS, 0));
    p.push(insn(JNE_K, 9, 0, 1, 0));
    p.push(insn(MOV64_K, 9, 0, 0, 1));
    p.push(insn(MOV64_X, 7, 9, 0, 0));
    p.push(insn(MUL64_K, 7, 0, 0, t as i32));
    // r6 = tau (the context is no longer needed).
    p.extend(ld_imm64(6, 0, tau));
    // r8 = now.
    p.push(insn(CALL, 0, 0, 0, HELPER_KTIME_GET_NS));
    p.push(insn(MOV64_X, 8, 0, 0, 0));
    // r0 = lookup(lru, &key).
    p.extend(ld_imm64(1, PSEUDO_MAP_FD, lru as u64));
    p.push(insn(MOV64_X, 2, 10, 0, 0));
    p.push(insn(ADD64_K, 2, 0, 0, -4));
    p.push(insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP));
    let new_source = p.len();
    p.push(insn(JEQ_K, 0, 0, 0, 0)); // -> NEW (patched)
                                     // Known source: r1 = max(tat, now) + cost; r2 = r1 - now; over tau: drop.
    p.push(insn(LDX_DW, 1, 0, 0, 0));
    p.push(insn(JGE_X, 1, 8, 1, 0));
    p.push(insn(MOV64_X, 1, 8, 0, 0));
    p.push(insn(ADD64_X, 1, 7, 0, 0));
    p.push(insn(MOV64_X, 2, 1, 0, 0));
    p.push(insn(SUB64_X, 2, 8, 0, 0));
    let over = p.len();
    p.push(insn(JGT_X, 2, 6, 0, 0)); // -> DROP (patched)
    p.push(insn(STX_DW, 0, 1, 0, 0));
    let pass1 = p.len();
    p.push(insn(JA, 0, 0, 0, 0)); // -> PASS (patched)
                                  // NEW: a packet over the whole burst is dropped (the source stays unknown); otherwise
                                  // insert tat = now + cost.
    let new_at = p.len();
    let over_new = p.len();
    p.push(insn(JGT_X, 7, 6, 0, 0)); // -> DROP (patched)
    p.push(insn(MOV64_X, 1, 8, 0, 0));
    p.push(insn(ADD64_X, 1, 7, 0, 0));
    p.push(insn(STX_DW, 10, 1, -16, 0));
    p.extend(ld_imm64(1, PSEUDO_MAP_FD, lru as u64));
    p.push(insn(MOV64_X, 2, 10, 0, 0));
    p.push(insn(ADD64_K, 2, 0, 0, -4));
    p.push(insn(MOV64_X, 3, 10, 0, 0));
    p.push(insn(ADD64_K, 3, 0, 0, -16));
    p.push(insn(MOV64_K, 4, 0, 0, 0));
    p.push(insn(CALL, 0, 0, 0, HELPER_MAP_UPDATE));
    let pass2 = p.len();
    p.push(insn(JA, 0, 0, 0, 0)); // -> PASS (patched)
                                  // DROP: drops[0] += datagrams; return 0.
    let drop_at = p.len();
    p.push(insn(ST_W, 10, 0, -8, 0));
    p.extend(ld_imm64(1, PSEUDO_MAP_FD, drops as u64));
    p.push(insn(MOV64_X, 2, 10, 0, 0));
    p.push(insn(ADD64_K, 2, 0, 0, -8));
    p.push(insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP));
    p.push(insn(JEQ_K, 0, 0, 1, 0));
    p.push(insn(ATOMIC_DW, 0, 9, 0, 0)); // lock *(u64 *)(r0 + 0) += r9
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    // PASS: keep the whole packet.
    let pass_at = p.len();
    p.push(insn(MOV64_K, 0, 0, 0, i32::MAX));
    p.push(insn(EXIT, 0, 0, 0, 0));
    let jump = |p: &mut Vec<Insn>, from: usize, to: usize| {
        p[from].off = (to as isize - from as isize - 1) as i16;
    };
    if let Some(short) = short {
        jump(&mut p, short, budget_at);
    }
    jump(&mut p, known_peer, pass_at);
    jump(&mut p, new_source, new_at);
    jump(&mut p, over, drop_at);
    jump(&mut p, over_new, drop_at);
    jump(&mut p, pass1, pass_at);
    jump(&mut p, pass2, pass_at);
    p
}

fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed, u64-aligned buffer laid out as the command's `union
    // bpf_attr` member; the kernel reads (and for lookups writes through pointers in it)
    // at most its length.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn map_create(kind: u32, key: u32, value: u32, entries: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = [0u64; 9];
    a[0] = u64::from(kind) | (u64::from(key) << 32);
    a[1] = u64::from(value) | (u64::from(entries) << 32);
    a[2] = u64::from(flags);
    let fd = bpf(BPF_MAP_CREATE, &mut a)?;
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// What identifies the datagrams of an active state, which the budget lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exempt {
    /// The sender's IPv4 address and port, and the IPv6 source of the packet inside (the
    /// m6t gateway: a state is a NAT mapping and a tunnel address).
    SenderAndInner6,
    /// The sender's IPv4 address and port (the home agent: a binding's UDP tunnel, or where
    /// a node's authenticated ESP comes from).
    Sender,
}

impl Exempt {
    fn key_len(self) -> usize {
        match self {
            Exempt::SenderAndInner6 => 24,
            Exempt::Sender => 8,
        }
    }
}

/// The budget's program and maps, attached to sockets with [`SourceBudget::attach`].
#[derive(Debug)]
pub struct SourceBudget {
    exempt: Exempt,
    prog: OwnedFd,
    /// Active states' senders, exempt from the budget.
    peers: OwnedFd,
    // Referenced by the program; kept open with it.
    _lru: OwnedFd,
    drops: OwnedFd,
}

/// The key of an active state's sender as the filter builds it: each 32-bit word as
/// `LD_ABS` loads it (network order converted to the host's), in host byte order; the
/// first [`Exempt::key_len`] bytes are the key.
fn peer_key(peer: SocketAddrV4, addr: Ipv6Addr) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[0..4].copy_from_slice(&u32::from(*peer.ip()).to_ne_bytes());
    k[4..8].copy_from_slice(&u32::from(peer.port()).to_ne_bytes());
    for (i, w) in addr.octets().chunks(4).enumerate() {
        let v = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        k[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_ne_bytes());
    }
    k
}

impl SourceBudget {
    /// Creates the maps and loads the filter: datagrams from the senders of up to
    /// `max_peers` active states (as `exempt` identifies them) pass; the others have
    /// `rate` datagrams per second per IPv4 source, up to `burst` above it at once.
    pub fn new(rate: u32, burst: u32, max_peers: u32, exempt: Exempt) -> io::Result<SourceBudget> {
        let peers = map_create(
            BPF_MAP_TYPE_HASH,
            exempt.key_len() as u32,
            1,
            max_peers.max(1),
            BPF_F_NO_PREALLOC,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("eBPF map of active states: {e}")))?;
        let lru = map_create(BPF_MAP_TYPE_LRU_HASH, 4, 8, SOURCES, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("eBPF map of sources: {e}")))?;
        let drops = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("eBPF drop counter: {e}")))?;
        let prog = program(
            rate,
            burst,
            exempt,
            peers.as_raw_fd(),
            lru.as_raw_fd(),
            drops.as_raw_fd(),
        );
        let license = b"GPL\0";
        let mut log = vec![0u8; 64 * 1024];
        let mut a = [0u64; 16];
        a[0] = u64::from(BPF_PROG_TYPE_SOCKET_FILTER) | ((prog.len() as u64) << 32);
        a[1] = prog.as_ptr() as u64;
        a[2] = license.as_ptr() as u64;
        // log_level 1, log_size.
        a[3] = 1 | ((log.len() as u64) << 32);
        a[4] = log.as_mut_ptr() as u64;
        let fd = bpf(BPF_PROG_LOAD, &mut a).map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            io::Error::new(
                e.kind(),
                format!(
                    "loading the eBPF source budget: {e}{}",
                    last.map(|l| format!(" (verifier: {l})"))
                        .unwrap_or_default()
                ),
            )
        })?;
        Ok(SourceBudget {
            exempt,
            // SAFETY: the kernel returned a new descriptor we now own.
            prog: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
            peers,
            _lru: lru,
            drops,
        })
    }

    /// Attaches the filter to a socket (SO_ATTACH_BPF).
    pub fn attach(&self, sock: &impl AsRawFd) -> io::Result<()> {
        let fd: libc::c_int = self.prog.as_raw_fd();
        // SAFETY: setsockopt with a pointer to an int of the size given.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                (&fd as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Lets the datagrams of an active state (its sender `peer` and, with
    /// [`Exempt::SenderAndInner6`], tunnel address `addr`; ignored with [`Exempt::Sender`])
    /// through without counting them against their source's budget.
    pub fn add_peer(&self, peer: SocketAddrV4, addr: Ipv6Addr) -> io::Result<()> {
        let key = peer_key(peer, addr);
        let key = &key[..self.exempt.key_len()];
        let value = [1u8];
        let mut a = [0u64; 4];
        a[0] = self.peers.as_raw_fd() as u64;
        a[1] = key.as_ptr() as u64;
        a[2] = value.as_ptr() as u64;
        // a[3] = BPF_ANY: add or overwrite.
        bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }

    /// Ends [`Self::add_peer`] for a state that went; one already gone is not an error.
    pub fn remove_peer(&self, peer: SocketAddrV4, addr: Ipv6Addr) -> io::Result<()> {
        let key = peer_key(peer, addr);
        let key = &key[..self.exempt.key_len()];
        let mut a = [0u64; 3];
        a[0] = self.peers.as_raw_fd() as u64;
        a[1] = key.as_ptr() as u64;
        match bpf(BPF_MAP_DELETE_ELEM, &mut a) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// [`Self::add_peer`] for a budget that exempts by sender alone ([`Exempt::Sender`]).
    pub fn add_sender(&self, peer: SocketAddrV4) -> io::Result<()> {
        self.add_peer(peer, Ipv6Addr::UNSPECIFIED)
    }

    /// [`Self::remove_peer`] for a budget that exempts by sender alone.
    pub fn remove_sender(&self, peer: SocketAddrV4) -> io::Result<()> {
        self.remove_peer(peer, Ipv6Addr::UNSPECIFIED)
    }

    /// Datagrams dropped so far, all sockets together.
    pub fn dropped(&self) -> io::Result<u64> {
        let key: u32 = 0;
        let mut value: u64 = 0;
        let mut a = [0u64; 4];
        a[0] = self.drops.as_raw_fd() as u64;
        a[1] = &key as *const u32 as u64;
        a[2] = &mut value as *mut u64 as u64;
        bpf(BPF_MAP_LOOKUP_ELEM, &mut a)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_inside_the_program_and_it_ends_in_exits() {
        for exempt in [Exempt::SenderAndInner6, Exempt::Sender] {
            let p = program(100_000, 50_000, exempt, 2, 3, 4);
            for (i, x) in p.iter().enumerate() {
                let class = x.code & 0x07;
                if class == 0x05 && x.code != CALL && x.code != EXIT {
                    let to = i as isize + 1 + x.off as isize;
                    assert!(to > i as isize && (to as usize) < p.len(), "jump at {i}");
                }
            }
            assert_eq!(p.last().unwrap().code, EXIT);
        }
        let p = program(100_000, 50_000, Exempt::SenderAndInner6, 2, 3, 4);
        // The cost of a datagram at 100 k/s is 10 µs; the burst allowance 0.5 s.
        assert!(p.iter().any(|x| x.code == MUL64_K && x.imm == 10_000));
        let tau_at = p
            .iter()
            .position(|x| x.code == LD_IMM64 && x.regs == 6)
            .unwrap();
        assert_eq!(p[tau_at].imm as u32 as u64, 500_000_000);
    }
}
