//! Compact storage for the gateway's states: a slab of fixed-size slots, a hash index from
//! the tunnel address to its slot, and a deadline heap holding exactly one entry per live
//! state, so expiry never scans the table. Times are kept as milliseconds since the first
//! `now` the table saw (8 bytes instead of an `Instant`'s 16): one state costs about
//! 56 (slot) + 21 (index, at hashbrown's load) + 16 (heap) bytes.

use crate::m6t::gateway::StateKind;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// One state.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub address: Ipv6Addr,
    pub peer: SocketAddrV4,
    pub local_port: u16,
    pub kind: StateKind,
    pub created: u64,
    pub last_seen: u64,
    pub packets: u32,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    epoch: Option<Instant>,
    index: HashMap<Ipv6Addr, u32>,
    slab: Vec<Slot>,
    free: Vec<u32>,
    /// (deadline in ms, slot): never later than the state's real expiry.
    expiry: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Table {
    /// Milliseconds since the table's epoch (the first time it was given).
    pub fn ms(&mut self, now: Instant) -> u64 {
        let e = *self.epoch.get_or_insert(now);
        u64::try_from(now.saturating_duration_since(e).as_millis()).unwrap_or(u64::MAX)
    }

    /// The same without setting the epoch (for read-only paths).
    pub fn ms_ro(&self, now: Instant) -> u64 {
        self.epoch
            .map(|e| {
                u64::try_from(now.saturating_duration_since(e).as_millis()).unwrap_or(u64::MAX)
            })
            .unwrap_or(0)
    }

    /// The instant of a millisecond value.
    pub fn instant(&self, ms: u64) -> Option<Instant> {
        self.epoch.map(|e| e + Duration::from_millis(ms))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn get(&self, a: &Ipv6Addr) -> Option<&Slot> {
        self.index.get(a).map(|i| &self.slab[*i as usize])
    }

    pub fn get_mut(&mut self, a: &Ipv6Addr) -> Option<&mut Slot> {
        match self.index.get(a) {
            Some(i) => Some(&mut self.slab[*i as usize]),
            None => None,
        }
    }

    /// Inserts a new state (the address must not be present) expiring at `deadline`.
    pub fn insert(&mut self, slot: Slot, deadline: u64) {
        let a = slot.address;
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = slot;
                i
            }
            None => {
                self.slab.push(slot);
                (self.slab.len() - 1) as u32
            }
        };
        self.index.insert(a, i);
        self.expiry.push(Reverse((deadline, i)));
    }

    /// Earliest deadline in the heap.
    pub fn next_deadline(&self) -> Option<u64> {
        self.expiry.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops the earliest heap entry if due at `now`: the slot index and the slot.
    pub fn pop_due(&mut self, now: u64) -> Option<(u32, &Slot)> {
        let Reverse((t, i)) = *self.expiry.peek()?;
        if t > now {
            return None;
        }
        self.expiry.pop();
        Some((i, &self.slab[i as usize]))
    }

    /// Puts a popped slot back in the heap with its real deadline.
    pub fn reschedule(&mut self, i: u32, deadline: u64) {
        self.expiry.push(Reverse((deadline, i)));
    }

    /// Removes a popped slot for good.
    pub fn remove(&mut self, i: u32) {
        let a = self.slab[i as usize].address;
        self.index.remove(&a);
        self.free.push(i);
    }

    /// Every live slot.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.index.values().map(|i| &self.slab[*i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_stays_small() {
        // The per-state budget is 128 bytes in all (issue 4); the slot is the largest part.
        assert!(
            std::mem::size_of::<Slot>() <= 56,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }
}
