//! The driver runtime every daemon runs on: one epoll(7) set whose sources are registered
//! under a typed token (an enum of the daemon's own, never a position), the machine's next
//! deadline kept in a timerfd, and SIGINT/SIGTERM delivered through a self-pipe in the same
//! set, so that a signal wakes the loop at once whatever it waits for.
//!
//! Two measured choices (see the README's idle-CPU notes): epoll rather than poll(2),
//! because poll walks every descriptor's poll function twice per wait, a tenth of an idle
//! gateway's CPU; and the deadline in a timerfd re-armed only when it moves, waiting
//! without a timeout, because an epoll_wait with a timeout arms and cancels a kernel
//! hrtimer on every call, which on a virtual machine reprograms the local APIC timer (a VM
//! exit) on every wake-up: another tenth.
//!
//! A daemon's loop reads:
//!
//! ```text
//! let mut rt = Runtime::new(&shutdown)?;
//! rt.add(&tun, Token::Tun)?; rt.add(&sock, Token::Udp)?; ...
//! while !rt.stopping() {
//!     for token in rt.wait(machine.poll_timeout())? { handle(token) }
//!     carry out what the machine asked (poll_transmit, poll_event, ...)
//! }
//! ```

use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Epoll data of the deadline timer and of the signal pipe (sources use their slot index).
const TIMER: u64 = u64::MAX;
const SIGNAL: u64 = u64::MAX - 1;

/// Longest a loop sleeps without looking at the shared stop flag: a worker thread stopped
/// by another thread's failure (not by a signal) notices within this time.
const STOP_CHECK: Duration = Duration::from_secs(1);

/// The stop request shared by every loop of a process: set by SIGINT/SIGTERM (each
/// runtime also gets the signal through its own pipe, so it wakes at once) or by
/// [`Shutdown::stop`] (a worker thread that failed stops the others).
#[derive(Debug, Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// Installs the SIGINT/SIGTERM handlers that set the flag.
    pub fn install() -> io::Result<Shutdown> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(Shutdown { flag })
    }

    /// True once a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Asks every loop to stop.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

/// One epoll set with typed tokens, a deadline timer and the signal pipe.
#[derive(Debug)]
pub struct Runtime<T> {
    ep: OwnedFd,
    timer: OwnedFd,
    armed: Option<Instant>,
    /// The token of each registered descriptor, by slot (the epoll data).
    slots: Vec<Option<(RawFd, T)>>,
    events: Vec<libc::epoll_event>,
    ready: Vec<T>,
    signals: UnixStream,
    /// The signal handlers writing into the pipe, removed on drop.
    handlers: Vec<signal_hook::SigId>,
    shutdown: Shutdown,
    /// When the stop flag is next looked at if nothing else wakes the loop; it stays put
    /// between wake-ups so the timer is re-armed only when the machine's deadline moves.
    check_by: Instant,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl<T: Copy + Eq + Debug> Runtime<T> {
    /// A runtime with no sources yet; `shutdown` is the process's stop request.
    pub fn new(shutdown: &Shutdown) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: ep is a new descriptor owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        // SAFETY: timerfd_create has no memory preconditions.
        let t = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: t is a new descriptor owned by nobody else.
        let timer = unsafe { OwnedFd::from_raw_fd(t) };
        let (rd, wr) = UnixStream::pair()?;
        rd.set_nonblocking(true)?;
        wr.set_nonblocking(true)?;
        // The handler writes one byte per signal into `wr` (a full pipe loses bytes, not
        // the wake-up); it owns `wr` until the runtime is dropped.
        let mut handlers = Vec::with_capacity(2);
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            handlers.push(signal_hook::low_level::pipe::register(
                sig,
                wr.try_clone()?,
            )?);
        }
        let rt = Runtime {
            ep,
            timer,
            armed: None,
            slots: Vec::new(),
            // Room for the timer and the signal pipe; `add` grows it by one per source.
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 2],
            ready: Vec::new(),
            signals: rd,
            handlers,
            shutdown: shutdown.clone(),
            check_by: Instant::now() + STOP_CHECK,
        };
        rt.ctl(libc::EPOLL_CTL_ADD, rt.timer.as_raw_fd(), TIMER)?;
        rt.ctl(libc::EPOLL_CTL_ADD, rt.signals.as_raw_fd(), SIGNAL)?;
        Ok(rt)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    /// Watches `fd` for readability under `token` (level-triggered: a source not drained
    /// is reported again). A token may name one descriptor at a time.
    pub fn add(&mut self, fd: &impl AsRawFd, token: T) -> io::Result<()> {
        let fd = fd.as_raw_fd();
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.ctl(libc::EPOLL_CTL_ADD, fd, slot as u64)?;
        self.slots[slot] = Some((fd, token));
        self.events.resize(
            self.slots.len() + 2,
            libc::epoll_event { events: 0, u64: 0 },
        );
        Ok(())
    }

    /// Stops watching the descriptor registered under `token` (call it before the
    /// descriptor is closed, or when it is replaced by a new one). Unknown tokens are
    /// ignored.
    pub fn remove(&mut self, token: T) -> io::Result<()> {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|(_, t)| t == token))
        else {
            return Ok(());
        };
        let (fd, _) = self.slots[i].take().expect("position found it");
        match self.ctl(libc::EPOLL_CTL_DEL, fd, 0) {
            // Already closed: epoll forgot it by itself (and the number may already name
            // a new, unregistered descriptor: ENOENT).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOENT)) => Ok(()),
            r => r,
        }
    }

    /// Replaces the descriptor registered under `token` (e.g. a socket re-bound to a new
    /// care-of address).
    pub fn replace(&mut self, fd: &impl AsRawFd, token: T) -> io::Result<()> {
        self.remove(token)?;
        self.add(fd, token)
    }

    /// True once SIGINT/SIGTERM arrived or another loop asked to stop.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_set()
    }

    /// The process's stop request (to stop the other loops after a failure).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Sleeps until a source is readable, `deadline` (the machine's `poll_timeout`) passes
    /// or a signal arrives, and returns the ready tokens (empty when only the deadline or
    /// a signal woke it). EINTR returns no token.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<&[T]> {
        self.ready.clear();
        let now = Instant::now();
        if now >= self.check_by {
            self.check_by = now + STOP_CHECK;
        }
        let wake = deadline.map_or(self.check_by, |d| d.min(self.check_by));
        if Some(wake) != self.armed {
            self.arm(wake)?;
        }
        // SAFETY: events holds events.len() valid epoll_event slots.
        let r = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                -1,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(&self.ready)
            } else {
                Err(e)
            };
        }
        for k in 0..r as usize {
            match self.events[k].u64 {
                TIMER => {
                    // Read the expiry count so the timer stops being readable; it is armed
                    // again at the next wait.
                    let mut count = [0u8; 8];
                    // SAFETY: count is 8 writable bytes, as timerfd reads need.
                    let _ =
                        unsafe { libc::read(self.timer.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
                    self.armed = None;
                }
                SIGNAL => {
                    let mut b = [0u8; 64];
                    while matches!(io::Read::read(&mut &self.signals, &mut b), Ok(n) if n > 0) {}
                    self.shutdown.stop();
                }
                slot => {
                    if let Some(Some((_, t))) = self.slots.get(slot as usize) {
                        self.ready.push(*t);
                    }
                }
            }
        }
        Ok(&self.ready)
    }

    fn arm(&mut self, deadline: Instant) -> io::Result<()> {
        // Relative to now: the kernel's clock reads later than `now` does, so the timer
        // never fires before the deadline. A zero value would disarm it, hence 1 ns at least.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
            },
        };
        // SAFETY: spec is a valid itimerspec; the old value is not asked for.
        cvt(unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        })?;
        self.armed = Some(deadline);
        Ok(())
    }
}

impl<T> Drop for Runtime<T> {
    fn drop(&mut self) {
        for h in self.handlers.drain(..) {
            signal_hook::low_level::unregister(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tok {
        A,
        B,
    }

    fn shutdown() -> Shutdown {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn reports_the_readable_source_by_its_token() {
        let (a0, _a1) = UnixDatagram::pair().unwrap();
        let (b0, b1) = UnixDatagram::pair().unwrap();
        let mut rt = Runtime::new(&shutdown()).unwrap();
        rt.add(&a0, Tok::A).unwrap();
        rt.add(&b0, Tok::B).unwrap();
        b1.send(b"x").unwrap();
        assert_eq!(rt.wait(None).unwrap(), [Tok::B]);
        // Level-triggered: still readable until read.
        assert_eq!(rt.wait(None).unwrap(), [Tok::B]);
        let mut buf = [0u8; 4];
        b0.recv(&mut buf).unwrap();
        assert!(rt.wait(Some(Instant::now())).unwrap().is_empty());
    }

    #[test]
    fn a_removed_source_is_not_reported_and_its_slot_is_reused() {
        let (a0, a1) = UnixDatagram::pair().unwrap();
        let (b0, b1) = UnixDatagram::pair().unwrap();
        let mut rt = Runtime::new(&shutdown()).unwrap();
        rt.add(&a0, Tok::A).unwrap();
        a1.send(b"x").unwrap();
        rt.remove(Tok::A).unwrap();
        assert!(rt.wait(Some(Instant::now())).unwrap().is_empty());
        // A replacement under the same token.
        rt.add(&b0, Tok::A).unwrap();
        b1.send(b"x").unwrap();
        assert_eq!(rt.wait(None).unwrap(), [Tok::A]);
        rt.replace(&a0, Tok::A).unwrap();
        assert_eq!(rt.wait(None).unwrap(), [Tok::A]);
        assert_eq!(rt.slots.len(), 1);
    }

    #[test]
    fn wakes_at_the_deadline_not_before() {
        let (a0, a1) = UnixDatagram::pair().unwrap();
        let mut rt = Runtime::new(&shutdown()).unwrap();
        rt.add(&a0, Tok::A).unwrap();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(20);
        while Instant::now() < deadline {
            assert!(rt.wait(Some(deadline)).unwrap().is_empty());
        }
        assert!(t0.elapsed() >= Duration::from_millis(20));
        // A source still wakes it before a far deadline; the fired timer was re-armed.
        a1.send(b"x").unwrap();
        assert_eq!(
            rt.wait(Some(Instant::now() + Duration::from_secs(60)))
                .unwrap(),
            [Tok::A]
        );
        // A deadline already past returns at once.
        let mut buf = [0u8; 4];
        a0.recv(&mut buf).unwrap();
        assert!(rt.wait(Some(t0)).unwrap().is_empty());
    }

    #[test]
    fn another_loops_stop_is_seen_within_the_check_period() {
        let sd = shutdown();
        let mut rt: Runtime<Tok> = Runtime::new(&sd).unwrap();
        let other = sd.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.stop();
        });
        let t0 = Instant::now();
        while !rt.stopping() {
            rt.wait(None).unwrap();
            assert!(t0.elapsed() < STOP_CHECK * 3);
        }
        t.join().unwrap();
    }
}
