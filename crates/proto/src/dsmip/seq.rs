//! Binding Update sequence numbers: 16-bit, compared modulo 2^16 with a window of 32768
//! (RFC 6275 section 9.5.1, "less than" as in RFC 1982).

/// True when `a` is after `b` in sequence-number space (within the half window).
pub fn after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_wrap() {
        assert!(after(8, 7));
        assert!(!after(7, 7));
        assert!(!after(6, 7));
        assert!(after(0, 65535), "wraps");
        assert!(after(7 + 32767, 7));
        assert!(
            !after(7u16.wrapping_add(32768), 7),
            "exactly half a window away is not after"
        );
        assert!(!after(7, 7 + 100));
    }
}
