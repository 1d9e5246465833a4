//! [`Live`]: a setting that a reload (SIGHUP) can replace while requests read it.
//!
//! `startup.rs` makes one per group of settings that may change live and hands a clone to the
//! component that reads it and one to [`crate::reload::Reloader`], which writes it. Readers
//! take a snapshot (an `Arc`, no lock) where they use it: the minting of a token pair reads
//! one snapshot, so a pair is consistent; a request that spans a reload may still take its
//! earlier decisions (whether to rotate, the reuse grace) under the old settings.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// A shared, swappable value: clones see each other's [`Live::set`].
pub struct Live<T>(Arc<ArcSwap<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(value)))
    }

    /// The value now; later `set`s do not change this snapshot.
    pub fn get(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Replaces the value for every holder; requests already running keep their snapshot.
    pub fn set(&self, value: T) {
        self.0.store(Arc::new(value));
    }
}

impl<T: Copy> Live<T> {
    /// A copy of the value now (for small `Copy` settings).
    pub fn load(&self) -> T {
        **self.0.load()
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Live").field(&*self.0.load()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Live;

    #[test]
    fn a_set_is_seen_by_every_clone_but_not_by_an_earlier_snapshot() {
        let live = Live::new(1);
        let reader = live.clone();
        let snapshot = reader.get();
        live.set(2);
        assert_eq!(reader.load(), 2);
        assert_eq!(*snapshot, 1);
    }
}
