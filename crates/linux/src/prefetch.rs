//! A cache prefetch hint: the protocol core (which has no unsafe code) names the memory a
//! packet will touch, the driver asks the CPU to start loading it.

/// Asks the CPU to bring the cache line at `p` into all cache levels. A hint only: it never
/// faults, whatever `p` is (null included), and does nothing on other architectures.
#[inline(always)]
pub fn hint(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint that never faults, even on an invalid address, and SSE
    // is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_on_any_address_never_fault() {
        let v = [1u8; 64];
        super::hint(v.as_ptr());
        super::hint(std::ptr::null());
        super::hint(usize::MAX as *const u8);
        assert_eq!(v[0], 1);
    }
}
