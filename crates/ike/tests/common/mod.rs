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

/// What a test set up, torn down by `Drop`, also on a panic.
pub struct Lab {
    /// Files: strongswan.conf, swanctl.conf, logs, vici socket.
    pub dir: PathBuf,
    /// charon's namespace and ours.
    pub ns: [String; 2],
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
        ns: [format!("m6tike-c{tag}{pid}"), format!("m6tike-p{tag}{pid}")],
        children: Vec::new(),
    };
    std::fs::create_dir_all(&lab.dir).unwrap();
    let [ns, peer] = lab.ns.clone();
    run(&["ip", "netns", "add", &ns]);
    run(&["ip", "netns", "add", &peer]);
    run(&[
        "ip", "link", "add", "ike0", "netns", &ns, "type", "veth", "peer", "name", "ike0", "netns",
        &peer,
    ]);
    for (n, a) in [(&ns, CHARON_ADDR), (&peer, PEER_ADDR)] {
        run(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            "ike0",
        ]);
        run(&["ip", "-n", n, "link", "set", "ike0", "up"]);
        run(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
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
  load = pem pkcs1 x509 pubkey random nonce
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("swanctl not found: run bash scripts/install-deps.sh")
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
