//! A global allocator that asks for transparent huge pages on large allocations.
//!
//! The gateway's state table at a million states is ~120 MB of slab, index and heap,
//! touched at random: with 4 KiB pages nearly every lookup also misses the TLB. This
//! allocator gives each allocation of 2 MiB and more its own 2 MiB-aligned anonymous
//! mapping advised with MADV_HUGEPAGE before its first touch (the kernel's THP mode is
//! often `madvise`), so those tables are backed by 2 MiB pages from the start; growing one
//! copies it into a new such mapping. Small allocations go to the system allocator.
//!
//! The advice is off by default: a binary that installs this allocator gets plain,
//! unadvised mappings for its large blocks until it calls [`set_enabled`]`(true)`. The m6t
//! binary does so only for `m6t gateway` (whose state table is what gains from it); its other
//! subcommands run with the advice off. Whether a block gets its own mapping depends on its
//! layout alone, never on this switch, so blocks made before and after a change are freed
//! alike.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// Off by default; see the module documentation.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the huge-page advice on or off for later large allocations (off until called): the
/// m6t gateway turns it on at start; measurements compare the same table with and without.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Allocations at least this large get their own huge-page mapping.
const HUGE: usize = 2 << 20;

/// The allocator (`#[global_allocator] static A: HugePageAlloc = HugePageAlloc;`).
pub struct HugePageAlloc;

fn round_up(size: usize) -> usize {
    size.div_ceil(HUGE) * HUGE
}

/// True when an allocation of this layout gets its own mapping. It depends on the layout
/// alone, which Rust hands back unchanged to dealloc and realloc: no bookkeeping needed.
fn is_huge(l: Layout) -> bool {
    l.size() >= HUGE && l.align() <= HUGE
}

/// A fresh zeroed mapping of `size` bytes (rounded up to 2 MiB) starting on a 2 MiB
/// boundary and advised before its first touch, so that every page of it can fault in as a
/// huge page. The system allocator's large chunks start 16 bytes into a mapping and grow by
/// mremap, which keeps the pages already touched at 4 KiB: at a million states half the
/// table then sat on small pages until khugepaged got round to it, minutes later.
fn map_huge(size: usize) -> *mut u8 {
    let len = round_up(size);
    let Some(span) = len.checked_add(HUGE) else {
        return std::ptr::null_mut();
    };
    // SAFETY: an anonymous private mapping; no memory is referenced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let base = p as usize;
    let start = base.div_ceil(HUGE) * HUGE;
    // SAFETY: the head and tail trimmed lie inside the mapping just made, outside the
    // aligned range returned; madvise only changes how the kernel backs the range.
    unsafe {
        if start > base {
            libc::munmap(p, start - base);
        }
        let tail = base + span - (start + len);
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        if ENABLED.load(Ordering::Relaxed) {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    start as *mut u8
}

fn unmap_huge(p: *mut u8, size: usize) {
    // SAFETY: `p` and the rounded size are exactly a mapping made by map_huge.
    unsafe {
        libc::munmap(p.cast(), round_up(size));
    }
}

// SAFETY: small allocations go to `System` unchanged; large ones are whole anonymous
// mappings, aligned to 2 MiB (enough for any layout accepted by is_huge) and at least as
// long as asked, freed with the same rounded length.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if is_huge(l) {
            return map_huge(l.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(l) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if is_huge(l) {
            // Fresh anonymous memory is zero already.
            return map_huge(l.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if is_huge(l) {
            unmap_huge(p, l.size());
            return;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let Ok(nl) = Layout::from_size_align(new, l.align()) else {
            return std::ptr::null_mut();
        };
        let old_mapped = is_huge(l);
        if !old_mapped && !is_huge(nl) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(p, l, new) };
        }
        if old_mapped && is_huge(nl) && round_up(new) == round_up(l.size()) {
            // Same rounded mapping: freeing it later with `new` unmaps the same length.
            return p;
        }
        // SAFETY: nl is a valid non-zero layout (new > 0 by the caller's guarantees).
        let q = unsafe { self.alloc(nl) };
        if q.is_null() {
            return q;
        }
        // SAFETY: both blocks are valid for the bytes copied and do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(p, q, l.size().min(new));
            self.dealloc(p, l);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_aligned_zeroed_and_survive_growing_and_shrinking() {
        let a = HugePageAlloc;
        let l = Layout::from_size_align(3 << 20, 64).unwrap();
        // SAFETY: valid non-zero layouts; every block is freed with the layout it has.
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE, 0);
            assert!(std::slice::from_raw_parts(p, l.size())
                .iter()
                .all(|b| *b == 0));
            for i in 0..l.size() {
                *p.add(i) = (i % 251) as u8;
            }
            // Within the rounded-up mapping: same block.
            let q = a.realloc(p, l, 4 << 20);
            assert_eq!(q, p);
            let l4 = Layout::from_size_align(4 << 20, 64).unwrap();
            // Beyond it: moved, contents kept.
            let r = a.realloc(q, l4, 9 << 20);
            assert_eq!(r as usize % HUGE, 0);
            assert!((0..l.size()).all(|i| *r.add(i) == (i % 251) as u8));
            let l9 = Layout::from_size_align(9 << 20, 64).unwrap();
            // Down to a small block: back to the system allocator, prefix kept.
            let s = a.realloc(r, l9, 1000);
            assert!((0..1000).all(|i| *s.add(i) == (i % 251) as u8));
            a.dealloc(s, Layout::from_size_align(1000, 64).unwrap());
        }
    }

    #[test]
    fn small_blocks_grow_into_large_ones() {
        let a = HugePageAlloc;
        let l = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: valid non-zero layouts; every block is freed with the layout it has.
        unsafe {
            let p = a.alloc(l);
            std::ptr::write_bytes(p, 7, 4096);
            let q = a.realloc(p, l, 5 << 20);
            assert_eq!(q as usize % HUGE, 0);
            assert!((0..4096).all(|i| *q.add(i) == 7));
            a.dealloc(q, Layout::from_size_align(5 << 20, 8).unwrap());
        }
    }
}
