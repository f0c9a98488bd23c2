//! Network namespaces for the lab and the end-to-end tests: create them, run commands in
//! them, start daemons in them, and remove every namespace and process on drop (success,
//! failure, panic or Ctrl-C alike).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A failed lab step, as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LabError(pub String);

/// Shorthand result of lab steps.
pub type LabResult<T> = Result<T, LabError>;

/// A set of namespaces (named `<tag>-<role>`) and the processes started in them.
pub struct Netns {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    /// Scratch directory for configs, logs and sockets; removed on drop.
    pub dir: PathBuf,
}

fn run(cmd: &mut Command) -> LabResult<Output> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError(format!("{cmd:?}: {e}")))?;
    Ok(o)
}

/// Tools the lab and the tests need, with the Debian package of each.
pub const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
];

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
        || Path::new("/sbin").join(tool).is_file()
}

/// Checks that every tool is installed; the error names the missing packages.
pub fn check_tools() -> LabResult<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(t, _)| !in_path(t))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError(format!(
            "missing tools: install the Debian packages {} (scripts/install-deps.sh does it)",
            missing.join(" ")
        )))
    }
}

impl Netns {
    /// Creates the namespaces `<tag>-<role>` for each role (stale ones of the same tag from
    /// an earlier crashed run are removed first).
    pub fn new(tag: &str, roles: &[&str]) -> LabResult<Netns> {
        let dir = std::env::temp_dir().join(format!("m6t-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| LabError(format!("{}: {e}", dir.display())))?;
        let mut n = Netns {
            tag: tag.to_string(),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for r in roles {
            let name = n.ns(r);
            kill_namespace(&name);
            let o = run(Command::new("ip").args(["netns", "add", &name]))?;
            if !o.status.success() {
                return Err(LabError(format!(
                    "ip netns add {name}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            n.namespaces.push(name);
            n.sh(r, "ip link set lo up")?;
        }
        Ok(n)
    }

    /// Adds one more namespace `<tag>-<role>` (removed on drop like the others).
    pub fn add_role(&mut self, role: &str) -> LabResult<()> {
        let name = self.ns(role);
        kill_namespace(&name);
        let o = run(Command::new("ip").args(["netns", "add", &name]))?;
        if !o.status.success() {
            return Err(LabError(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        self.namespaces.push(name);
        self.sh(role, "ip link set lo up")?;
        Ok(())
    }

    /// Full namespace name of a role.
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.tag)
    }

    /// The /proc status text of every thread of the processes named `comm` in a role's
    /// namespace (what tests read uids and capability sets from).
    pub fn thread_status(&self, role: &str, comm: &str) -> Vec<String> {
        let Ok(pids) = std::process::Command::new("ip")
            .args(["netns", "pids", &self.ns(role)])
            .output()
        else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if name.trim() != comm {
                continue;
            }
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                if let Ok(st) = std::fs::read_to_string(t.path().join("status")) {
                    v.push(st);
                }
            }
        }
        v
    }

    /// Runs a shell command in a role's namespace; fails with its stderr if it fails.
    pub fn sh(&self, role: &str, cmd: &str) -> LabResult<String> {
        let o = self.sh_output(role, cmd)?;
        if !o.status.success() {
            return Err(LabError(format!(
                "[{role}] {cmd}: {}{}",
                String::from_utf8_lossy(&o.stderr).trim(),
                String::from_utf8_lossy(&o.stdout).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Runs a shell command in a role's namespace and returns its output whatever happens.
    pub fn sh_output(&self, role: &str, cmd: &str) -> LabResult<Output> {
        run(Command::new("ip").args(["netns", "exec", &self.ns(role), "sh", "-c", cmd]))
    }

    /// Starts a long-running process in a role's namespace, output to `<dir>/<name>.log`.
    pub fn spawn(&mut self, role: &str, name: &str, args: &[&str]) -> LabResult<()> {
        let log = self.dir.join(format!("{name}.log"));
        let f =
            std::fs::File::create(&log).map_err(|e| LabError(format!("{}: {e}", log.display())))?;
        let f2 = f.try_clone().map_err(|e| LabError(e.to_string()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .map_err(|e| LabError(format!("start {name}: {e}")))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Stops a process started by [`Self::spawn`] (SIGTERM, then SIGKILL after 3 s).
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.children.remove(i);
            terminate(&mut c);
        }
    }

    /// True while the named process runs.
    pub fn running(&mut self, name: &str) -> bool {
        self.children
            .iter_mut()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }

    /// The log of a spawned process.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Writes a file into the scratch directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> LabResult<PathBuf> {
        let p = self.dir.join(name);
        std::fs::write(&p, text).map_err(|e| LabError(format!("{}: {e}", p.display())))?;
        Ok(p)
    }
}

fn terminate(c: &mut Child) {
    // SAFETY: kill(2) on a pid we own.
    unsafe {
        libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Kills every process inside a namespace, then deletes it (a namespace with a process
/// inside outlives `ip netns del`).
fn kill_namespace(name: &str) {
    if let Ok(o) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            if let Ok(p) = pid.parse::<libc::pid_t>() {
                // SAFETY: kill(2) with a pid read from the kernel.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Netns {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            terminate(c);
        }
        for n in &self.namespaces {
            kill_namespace(n);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
