//! A global allocator that asks for transparent huge pages on large allocations.
//!
//! The gateway's state table at a million states is ~120 MB of slab, index and heap,
//! touched at random: with 4 KiB pages nearly every lookup also misses the TLB. This
//! wrapper around the system allocator calls madvise(MADV_HUGEPAGE) on allocations of
//! 2 MiB and more (the kernel's THP mode is often `madvise`), so those tables are backed
//! by 2 MiB pages. Small allocations are untouched.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the advice on or off for later allocations (for measurements: the bench compares
/// the same table with and without huge pages).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Allocations at least this large are advised.
const HUGE: usize = 2 << 20;
const PAGE: usize = 4096;

/// The allocator (`#[global_allocator] static A: HugePageAlloc = HugePageAlloc;`).
pub struct HugePageAlloc;

fn advise(p: *mut u8, size: usize) {
    if p.is_null() || size < HUGE || !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let start = (p as usize).div_ceil(PAGE) * PAGE;
    let end = (p as usize + size) / PAGE * PAGE;
    if end > start {
        // SAFETY: the range lies inside an allocation we own; madvise only changes how
        // the kernel backs it, and a failure (THP off) changes nothing.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged; `advise` only adds a hint.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(l) };
        advise(p, l.size());
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(l) };
        advise(p, l.size());
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let q = unsafe { System.realloc(p, l, new) };
        advise(q, new);
        q
    }
}
