//! The local control socket (a Unix stream socket): `m6t status` connects, writes one
//! request line, reads one JSON document, and the daemon closes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest request line read from a client.
const MAX_REQUEST: u64 = 256;
/// Longest answer accepted by [`request`].
const MAX_ANSWER: u64 = 64 << 20;

/// A listening control socket; the file is removed on drop.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Listens on `path` (a stale socket file from a dead daemon is replaced).
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running daemon", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        // States reveal where mobile nodes are: only root (the daemon's user) may ask.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
        })
    }

    /// Serves every pending connection: reads the request line and writes what `answer`
    /// returns for it. A slow or silent client is cut after a short timeout.
    pub fn serve(&self, mut answer: impl FnMut(&str) -> String) {
        while let Ok((s, _)) = self.listener.accept() {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
            let mut line = String::new();
            let mut r = BufReader::new((&s).take(MAX_REQUEST));
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let out = answer(line.trim());
            let _ = (&s).write_all(out.as_bytes());
        }
    }
}

impl AsRawFd for ControlServer {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `req` to the daemon at `path` and returns its answer.
pub fn request(path: &Path, req: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(req.as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.take(MAX_ANSWER).read_to_string(&mut out)?;
    Ok(out)
}
