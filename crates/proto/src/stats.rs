//! Drop and event counters shared by the machines: every drop is counted by its reason.

use serde::Serialize;

/// A fixed set of named counters indexed by an enum `R` that lists its reasons.
#[derive(Debug, Clone)]
pub struct Counters<R: Reason> {
    values: Vec<u64>,
    _r: std::marker::PhantomData<R>,
}

/// An enum whose variants name counters.
pub trait Reason: Copy + 'static {
    /// Every variant, in display order.
    const ALL: &'static [Self];
    /// Index of this variant in `ALL`.
    fn index(self) -> usize;
    /// Stable snake_case name used in status output and JSON.
    fn name(self) -> &'static str;
}

impl<R: Reason> Default for Counters<R> {
    fn default() -> Self {
        Counters {
            values: vec![0; R::ALL.len()],
            _r: std::marker::PhantomData,
        }
    }
}

impl<R: Reason> Counters<R> {
    /// Adds one to the counter of `r`.
    pub fn bump(&mut self, r: R) {
        if let Some(v) = self.values.get_mut(r.index()) {
            *v += 1;
        }
    }

    /// Current value of the counter of `r`.
    pub fn get(&self, r: R) -> u64 {
        self.values.get(r.index()).copied().unwrap_or(0)
    }

    /// All counters as (name, value), in display order.
    pub fn snapshot(&self) -> Vec<Counter> {
        R::ALL
            .iter()
            .map(|r| Counter {
                name: r.name().to_string(),
                value: self.get(*r),
            })
            .collect()
    }
}

/// One named counter value, as reported by `m6t status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Counter {
    /// Counter name (snake_case).
    pub name: String,
    /// Value since the daemon started.
    pub value: u64,
}

/// Declares a counter enum with its names in one place.
#[macro_export]
macro_rules! reasons {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $crate::stats::Reason for $name {
            const ALL: &'static [Self] = &[$($name::$v,)*];
            fn index(self) -> usize { self as usize }
            fn name(self) -> &'static str { match self { $($name::$v => $s,)* } }
        }
    };
}
