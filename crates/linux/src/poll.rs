//! The daemons' event loops wait on a handful of descriptors and on the machine's next
//! timer at once: [`Poller`] (epoll(7)) for a set fixed at start, [`wait_readable`]
//! (poll(2)) for a set that changes from one wait to the next.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The token of the deadline timer in the epoll set (descriptors use their index).
const TIMER: u64 = u64::MAX;

/// Milliseconds for poll/epoll_wait, rounded up so that a wake-up never comes before the
/// deadline it serves; -1 waits forever.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => d.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int,
    }
}

/// Level-triggered epoll over a fixed set of descriptors. Unlike poll(2), a wait does not
/// walk every descriptor's poll function twice (before sleeping and after waking): on a
/// gateway woken once per keep-alive that walk was a tenth of its CPU.
///
/// [`Poller::wait_until`] keeps a deadline in a timerfd that is re-armed only when the
/// deadline changes, and waits without a timeout. An epoll_wait with a timeout arms and
/// cancels a kernel hrtimer on every call, which on this virtual machine reprograms the
/// local APIC timer (a VM exit) on every wake-up: on a gateway woken once per burst of
/// keep-alives that was about a tenth of its CPU.
#[derive(Debug)]
pub struct Poller {
    ep: OwnedFd,
    events: Vec<libc::epoll_event>,
    n: usize,
    timer: Option<OwnedFd>,
    armed: Option<Instant>,
}

impl Poller {
    /// Watches `fds` for readability; [`Poller::wait`] reports them in this order.
    pub fn new(fds: &[RawFd]) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: ep is a new descriptor owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        for (i, fd) in fds.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: ev is a valid epoll_event for the duration of the call.
            if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, *fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Poller {
            ep,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; fds.len() + 1],
            n: fds.len(),
            timer: None,
            armed: None,
        })
    }

    /// Waits until a descriptor is readable or `deadline` passes (`None`: no deadline), as
    /// [`Poller::wait`] reports. The deadline lives in a timerfd, created on first use.
    pub fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        ready: &mut Vec<bool>,
    ) -> io::Result<()> {
        if deadline != self.armed {
            self.arm(deadline)?;
        }
        self.wait(None, ready)
    }

    fn arm(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let fd = match &self.timer {
            Some(fd) => fd.as_raw_fd(),
            None => {
                // SAFETY: timerfd_create has no memory preconditions.
                let t = unsafe {
                    libc::timerfd_create(
                        libc::CLOCK_MONOTONIC,
                        libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                    )
                };
                if t < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: t is a new descriptor owned by nobody else.
                let t = unsafe { OwnedFd::from_raw_fd(t) };
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: TIMER,
                };
                // SAFETY: ev is a valid epoll_event for the duration of the call.
                if unsafe {
                    libc::epoll_ctl(
                        self.ep.as_raw_fd(),
                        libc::EPOLL_CTL_ADD,
                        t.as_raw_fd(),
                        &mut ev,
                    )
                } < 0
                {
                    return Err(io::Error::last_os_error());
                }
                let raw = t.as_raw_fd();
                self.timer = Some(t);
                raw
            }
        };
        // Relative to now: the kernel's clock reads later than `now` does, so the timer
        // never fires before the deadline. A zero value would disarm it, hence 1 ns at least.
        let value = match deadline {
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            Some(d) => {
                let left = d
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
                }
            }
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: spec is a valid itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = deadline;
        Ok(())
    }

    /// Waits until one of the descriptors is readable or `timeout` passes (`None`:
    /// forever), and sets `ready[i]` for each readable descriptor `i` (errors and hang-ups
    /// count as readable, so that the read reports them). EINTR returns all-false.
    pub fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<bool>) -> io::Result<()> {
        ready.clear();
        ready.resize(self.n, false);
        // SAFETY: events holds events.len() valid epoll_event slots.
        let r = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms(timeout),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        let mut fired = false;
        for ev in &self.events[..r as usize] {
            let token = ev.u64;
            if token == TIMER {
                fired = true;
            } else if let Some(slot) = ready.get_mut(token as usize) {
                *slot = true;
            }
        }
        if fired {
            // The deadline passed: read the expiry count so the timer stops being
            // readable, and arm it again at the next call.
            if let Some(t) = &self.timer {
                let mut count = [0u8; 8];
                // SAFETY: count is 8 writable bytes, as timerfd reads need.
                let _ = unsafe { libc::read(t.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
            }
            self.armed = None;
        }
        Ok(())
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: forever). Returns the
/// readiness of each descriptor, in order. EINTR (a signal) returns all-false.
pub fn wait_readable(
    fds: &[RawFd],
    timeout: Option<Duration>,
    ready: &mut Vec<bool>,
) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout_ms(timeout);
    // SAFETY: pfds is a valid array of pollfd of the length passed.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    ready.clear();
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            ready.resize(fds.len(), false);
            return Ok(());
        }
        return Err(e);
    }
    ready.extend(
        pfds.iter()
            .map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn poller_reports_only_the_readable_descriptor_in_registration_order() {
        let (a0, _a1) = UnixDatagram::pair().unwrap();
        let (b0, b1) = UnixDatagram::pair().unwrap();
        let mut p = Poller::new(&[a0.as_raw_fd(), b0.as_raw_fd()]).unwrap();
        let mut ready = Vec::new();
        p.wait(Some(Duration::from_millis(1)), &mut ready).unwrap();
        assert_eq!(ready, [false, false]);
        b1.send(b"x").unwrap();
        p.wait(Some(Duration::from_secs(5)), &mut ready).unwrap();
        assert_eq!(ready, [false, true]);
        // Level-triggered: still readable until read.
        p.wait(Some(Duration::from_secs(5)), &mut ready).unwrap();
        assert_eq!(ready, [false, true]);
        let mut buf = [0u8; 4];
        b0.recv(&mut buf).unwrap();
        p.wait(Some(Duration::ZERO), &mut ready).unwrap();
        assert_eq!(ready, [false, false]);
    }

    #[test]
    fn wait_until_wakes_at_the_deadline_not_before() {
        let (a0, a1) = UnixDatagram::pair().unwrap();
        let mut p = Poller::new(&[a0.as_raw_fd()]).unwrap();
        let mut ready = Vec::new();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(20);
        while Instant::now() < deadline {
            p.wait_until(Some(deadline), &mut ready).unwrap();
            assert_eq!(ready, [false]);
        }
        assert!(t0.elapsed() >= Duration::from_millis(20));
        // A descriptor still wakes it before a far deadline; the fired timer was re-armed.
        a1.send(b"x").unwrap();
        p.wait_until(Some(Instant::now() + Duration::from_secs(60)), &mut ready)
            .unwrap();
        assert_eq!(ready, [true]);
        // A deadline already past returns at once.
        let mut buf = [0u8; 4];
        a0.recv(&mut buf).unwrap();
        p.wait_until(Some(t0), &mut ready).unwrap();
        assert_eq!(ready, [false]);
    }

    #[test]
    fn wait_readable_reports_the_readable_descriptor() {
        let (a0, a1) = UnixDatagram::pair().unwrap();
        let (b0, _b1) = UnixDatagram::pair().unwrap();
        let mut ready = Vec::new();
        a1.send(b"x").unwrap();
        wait_readable(
            &[a0.as_raw_fd(), b0.as_raw_fd()],
            Some(Duration::from_secs(5)),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready, [true, false]);
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1001))), 2);
    }
}
