//! Claims on 48-bit random values, so that several tunnel interfaces of one node using the
//! same /80 never use the same value at the same time (draft section 2.5). A claim is a file
//! named after the address, created with O_EXCL and holding the owner's pid; a claim whose
//! owner is gone is taken over.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

/// Default directory of claims.
pub const DEFAULT_DIR: &str = "/run/m6t/claims";

/// A directory of claims.
#[derive(Debug, Clone)]
pub struct Claims {
    dir: PathBuf,
    pid: u32,
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Claims {
    /// Claims kept in `dir` (created if needed) on behalf of process `pid`.
    pub fn new(dir: impl Into<PathBuf>, pid: u32) -> io::Result<Claims> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Claims { dir, pid })
    }

    fn path(&self, a: Ipv6Addr) -> PathBuf {
        self.dir.join(format!("{:032x}", u128::from(a)))
    }

    /// Tries to claim `a`; false when a live process holds it.
    pub fn claim(&self, a: Ipv6Addr) -> io::Result<bool> {
        let p = self.path(a);
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(mut f) => {
                    write!(f, "{}", self.pid)?;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let owner: Option<u32> = fs::read_to_string(&p)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    match owner {
                        Some(o) if o == self.pid => return Ok(true),
                        Some(o) if pid_alive(o) => return Ok(false),
                        // Stale (owner gone) or half-written: take it over.
                        _ => {
                            let _ = fs::remove_file(&p);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Releases a claim of ours.
    pub fn release(&self, a: Ipv6Addr) {
        let p = self.path(a);
        let mine = fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            == Some(self.pid);
        if mine {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_and_stale_claims_are_taken_over() {
        let dir = std::env::temp_dir().join(format!("m6t-claims-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let me = Claims::new(&dir, std::process::id()).unwrap();
        // pid 1 is always alive.
        let other = Claims::new(&dir, 1).unwrap();
        let a: Ipv6Addr = "fd00:1:2:3:4:1:2:3".parse().unwrap();
        assert!(other.claim(a).unwrap());
        assert!(!me.claim(a).unwrap());
        me.release(a); // not ours: stays
        assert!(!me.claim(a).unwrap());
        other.release(a);
        assert!(me.claim(a).unwrap());
        assert!(me.claim(a).unwrap(), "re-claiming our own is fine");
        // A dead owner's claim is taken over.
        let b: Ipv6Addr = "fd00:1:2:3:4:1:2:4".parse().unwrap();
        fs::write(me.path(b), "4000000000").unwrap();
        assert!(me.claim(b).unwrap());
        let _ = fs::remove_dir_all(&dir);
    }
}
