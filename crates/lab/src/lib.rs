//! The lab and the benchmarks of m6t: network namespaces ([`netns`]), the lab scenarios
//! ([`lab`], [`lab::dsmip`]: the topology `m6t lab` shows and the end-to-end tests build
//! on), the bench harness ([`bench`]) with its load generator ([`bench::loadgen`]), the
//! syscall floor ([`bench::floor`]) and the Teredo comparison ([`bench::teredo`]), and the
//! small Python programs they run inside the namespaces.
//!
//! Nothing here ships in the production binary: the `m6t` binary only execs the `m6t-lab`
//! binary (built from this crate, next to it) for `m6t lab` and `m6t bench`. The lab drives
//! the real daemons as processes of the `m6t` binary and reads their reports with
//! [`m6t::status`].
#![warn(missing_docs)]

pub mod bench;
pub mod lab;
pub mod netns;
pub mod soak;

use std::path::{Path, PathBuf};

/// A binary of this build (`m6t`, the daemons, or `m6t-lab`) in the directory of the running
/// executable, where cargo (`target/release`) and packages (`/usr/bin`) put both; or a
/// one-line error naming the missing file.
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    sibling_of(&exe, name)
}

/// `name` in the directory of `exe`, if it is a file there.
pub fn sibling_of(exe: &Path, name: &str) -> Result<PathBuf, String> {
    let p = exe.with_file_name(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "the {name} binary is missing: {} (cargo build --release builds m6t and m6t-lab)",
            p.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_names_the_missing_file_and_how_to_build_it() {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap();
        assert_eq!(
            sibling_of(&exe, exe.file_name().unwrap().to_str().unwrap()).unwrap(),
            exe
        );
        let e = sibling_of(&exe, "no-such-m6t-binary").unwrap_err();
        assert!(e.contains(&dir.join("no-such-m6t-binary").display().to_string()));
        assert!(e.contains("cargo build --release"));
        assert_eq!(e.lines().count(), 1);
    }
}
