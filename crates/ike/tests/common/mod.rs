//! What the strongSwan tests share: two network namespaces joined by a veth pair and nothing
//! else (so charon cannot reach outside), charon started in one of them under `unshare -m`
//! with a private tmpfs on /run (its pid file path is compiled in), its own strongswan.conf
//! (`STRONGSWAN_CONF`) and vici socket, and a guard that kills every process and removes the
//! namespaces and files even when an assertion fails.
//!
//! Needs root. Takes no lock itself: whoever shares the machine runs the tests under theirs
//! (`flock /tmp/m6t-ns.lock cargo test ...`); a lock taken here would deadlock under such a
//! caller. Names carry the test's pid and a tag, so runs never meet.
#![allow(dead_code)]

pub mod pki;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// charon's binary (Debian's strongswan-charon).
pub const CHARON: &str = "/usr/lib/ipsec/charon";
/// charon's address on the veth.
pub const CHARON_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Our side's.
pub const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// In [`nat_lab`]: the NAT's address on charon's side (charon's default route).
pub const NAT_INSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// In [`nat_lab`]: the NAT's public address, which charon's packets leave from.
pub const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// In [`nat_lab`]: the public side's address (ours, or charon's when we are inside).
pub const PUBLIC_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// What a test set up, torn down by `Drop`, also on a panic.
pub struct Lab {
    /// Files: strongswan.conf, swanctl.conf, logs, vici socket.
    pub dir: PathBuf,
    /// charon's namespace, ours, and in [`nat_lab`] the NAT's.
    pub ns: Vec<String>,
    /// charon's address (where it listens).
    pub charon_addr: Ipv4Addr,
    /// Our side's address (where our peer binds).
    pub peer_addr: Ipv4Addr,
    /// Processes to stop.
    pub children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.drain(..) {
            stop(child);
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM (charon shuts down cleanly), then SIGKILL after a second.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a command that must succeed.
pub fn run(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?} failed");
}

/// Checks root and charon, creates the directory, the namespaces and the veth.
pub fn lab(tag: &str) -> Lab {
    let mut lab = lab_dir(tag);
    let pid = std::process::id();
    lab.ns = vec![format!("m6tike-c{tag}{pid}"), format!("m6tike-p{tag}{pid}")];
    let (ns, peer) = (lab.ns[0].clone(), lab.ns[1].clone());
    run(&["ip", "netns", "add", &ns]);
    run(&["ip", "netns", "add", &peer]);
    veth(&ns, "ike0", CHARON_ADDR, &peer, "ike0", PEER_ADDR);
    lab
}

/// Checks root and charon, creates the directory; the namespaces are the caller's.
fn lab_dir(tag: &str) -> Lab {
    assert!(
        std::path::Path::new(CHARON).exists(),
        "{CHARON} missing: run bash scripts/install-deps.sh"
    );
    let uid = Command::new("id").arg("-u").output().unwrap().stdout;
    assert_eq!(
        String::from_utf8_lossy(&uid).trim(),
        "0",
        "needs root (network namespaces)"
    );
    let pid = std::process::id();
    let lab = Lab {
        dir: std::env::temp_dir().join(format!("m6t-ike-{tag}-{pid}")),
        ns: Vec::new(),
        charon_addr: CHARON_ADDR,
        peer_addr: PEER_ADDR,
        children: Vec::new(),
    };
    std::fs::create_dir_all(&lab.dir).unwrap();
    lab
}

/// A veth from `a` (named `a_if`, address `a_addr`/24) to `b`, both ends and loopback up.
fn veth(a: &str, a_if: &str, a_addr: Ipv4Addr, b: &str, b_if: &str, b_addr: Ipv4Addr) {
    run(&[
        "ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
    ]);
    for (n, i, a) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        run(&["ip", "-n", n, "addr", "add", &format!("{a}/24"), "dev", i]);
        run(&["ip", "-n", n, "link", "set", i, "up"]);
        run(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
}

/// Like [`lab`], but one side sits behind a masquerading NAT: the inside side (charon at
/// `CHARON_ADDR` when `charon_inside`, else ours at `PEER_ADDR`, on ike0, default route via
/// `NAT_INSIDE`) -- NAT namespace (nftables masquerade out of pub0 as `NAT_PUBLIC`, with
/// random source ports so the mapping is visibly not the identity, above 4500 so tshark,
/// which tries a UDP packet's lower port first, dissects by 500 and 4500) -- the public side
/// (`PUBLIC_ADDR` on pub0). The public side has no route to 192.0.2.0/24: whatever the
/// inside sends reaches it only translated.
pub fn nat_lab(tag: &str, charon_inside: bool) -> Lab {
    let mut lab = lab_dir(tag);
    let pid = std::process::id();
    lab.ns = ["c", "p", "n"]
        .map(|r| format!("m6tike-{r}{tag}{pid}"))
        .to_vec();
    for n in &lab.ns {
        run(&["ip", "netns", "add", n]);
    }
    let (c, p, n) = (lab.ns[0].clone(), lab.ns[1].clone(), lab.ns[2].clone());
    let (inside, outside, inside_addr) = if charon_inside {
        lab.peer_addr = PUBLIC_ADDR;
        (c, p, CHARON_ADDR)
    } else {
        lab.charon_addr = PUBLIC_ADDR;
        (p, c, PEER_ADDR)
    };
    veth(&inside, "ike0", inside_addr, &n, "ike0", NAT_INSIDE);
    veth(&n, "pub0", NAT_PUBLIC, &outside, "pub0", PUBLIC_ADDR);
    run(&[
        "ip",
        "-n",
        &inside,
        "route",
        "add",
        "default",
        "via",
        &NAT_INSIDE.to_string(),
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &n,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=1",
    ]);
    let ruleset = "table ip nat {\n  chain post {\n    type nat hook postrouting priority srcnat;\n    oifname \"pub0\" meta l4proto udp masquerade to :40000-60000 random\n    oifname \"pub0\" masquerade\n  }\n}\n";
    let nft = lab.dir.join("nat.nft");
    std::fs::write(&nft, ruleset).unwrap();
    run(&[
        "ip",
        "netns",
        "exec",
        &n,
        "nft",
        "-f",
        &nft.display().to_string(),
    ]);
    lab
}

impl Lab {
    /// The directory as a string, for configuration files.
    pub fn path(&self) -> String {
        self.dir.display().to_string()
    }

    /// charon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    /// Writes strongswan.conf (with `load` as charon's plugin list and `extra` inside the
    /// charon section) and swanctl.conf, starts charon in the first namespace and waits for
    /// its vici socket, then loads the connections.
    pub fn start_charon(&mut self, load: &str, extra: &str, swanctl_conf: &str) {
        let dir = self.path();
        let conf = format!(
            r#"charon {{
  load = {load}
  retransmit_tries = 2
  retransmit_timeout = 1.0
  {extra}
  filelog {{
    charon {{
      path = {dir}/charon.log
      default = 1
      ike = 2
      cfg = 2
      chd = 2
      flush_line = yes
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{dir}/charon.vici
    }}
  }}
}}
swanctl {{
  load = pem pkcs1 pkcs8 x509 pubkey gmp sha1 sha2 random nonce
}}
"#
        );
        std::fs::write(self.dir.join("strongswan.conf"), conf).unwrap();
        std::fs::write(self.dir.join("swanctl.conf"), swanctl_conf).unwrap();
        // `ip netns exec`, `unshare` and `sh` all exec: the child's pid is charon's.
        let charon = Command::new("ip")
            .args(["netns", "exec", &self.ns[0], "unshare", "-m", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF={dir}/strongswan.conf {CHARON}"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(charon);
        let vici = self.dir.join("charon.vici");
        let t = Instant::now();
        while !vici.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "charon did not open its vici socket; log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let st = self.swanctl(&["--load-all", "--file", &format!("{dir}/swanctl.conf")]);
        assert!(
            st.success(),
            "swanctl --load-all failed; log: {}",
            self.log()
        );
    }

    /// Runs swanctl against this lab's charon.
    pub fn swanctl(&self, args: &[&str]) -> std::process::ExitStatus {
        let dir = self.path();
        Command::new("swanctl")
            .args(args)
            .args(["--uri", &format!("unix://{dir}/charon.vici")])
            .env("STRONGSWAN_CONF", format!("{dir}/strongswan.conf"))
            // Kept for a failing test to show (`swanctl.log`).
            .stdout(self.swanctl_log())
            .stderr(self.swanctl_log())
            .status()
            .expect("swanctl not found: run bash scripts/install-deps.sh")
    }

    fn swanctl_log(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("swanctl.log"))
            .map_or(Stdio::null(), Stdio::from)
    }

    /// What swanctl said so far.
    pub fn swanctl_said(&self) -> String {
        std::fs::read_to_string(self.dir.join("swanctl.log")).unwrap_or_default()
    }

    /// Waits up to `secs` for `pred` on charon's log; returns the log.
    pub fn wait_log(&self, secs: u64, pred: impl Fn(&str) -> bool) -> Option<String> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            let l = self.log();
            if pred(&l) {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}
