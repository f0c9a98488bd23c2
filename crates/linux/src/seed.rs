//! Seeds for the machines, from the kernel's random number generator. The machines never
//! read randomness themselves (they are reproducible from a seed in simulations); the
//! daemons hand them one of these. A failure is an error, never a silent zero seed.

use std::io;

/// 32 bytes from getrandom(2) (blocking only until the kernel's pool is initialised, once
/// per boot).
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut s = [0u8; 32];
    let mut got = 0;
    while got < s.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `s`.
        let r = unsafe { libc::getrandom(s[got..].as_mut_ptr().cast(), s.len() - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += r as usize;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_seeds_differ() {
        assert_ne!(super::os_seed().unwrap(), super::os_seed().unwrap());
    }
}
