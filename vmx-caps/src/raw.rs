// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`RawMsrs`]: raw capability-MSR values by index, exactly as read.

use std::collections::BTreeMap;

/// Raw MSR values by index (a `BTreeMap<u32, u64>` inside, so iteration is ascending).
///
/// Holds whatever was read: indices outside 0x480..=0x493 are only rejected by the
/// parsers that build a `RawMsrs` from outside input (see [`crate::dump`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawMsrs {
    map: BTreeMap<u32, u64>,
}

impl RawMsrs {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of MSR `index`, `None` if it was not read (absent on this CPU).
    pub fn get(&self, index: u32) -> Option<u64> {
        self.map.get(&index).copied()
    }

    /// Records MSR `index` = `value`; returns the previous value, if any.
    pub fn insert(&mut self, index: u32, value: u64) -> Option<u64> {
        self.map.insert(index, value)
    }

    /// Removes MSR `index`; returns its value, if it was present.
    pub fn remove(&mut self, index: u32) -> Option<u64> {
        self.map.remove(&index)
    }

    /// Whether MSR `index` is present.
    pub fn contains(&self, index: u32) -> bool {
        self.map.contains_key(&index)
    }

    /// `(index, value)` pairs in ascending index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.map.iter().map(|(k, v)| (*k, *v))
    }

    /// Number of MSRs present.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no MSR is present.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl FromIterator<(u32, u64)> for RawMsrs {
    fn from_iter<T: IntoIterator<Item = (u32, u64)>>(iter: T) -> Self {
        Self {
            map: iter.into_iter().collect(),
        }
    }
}

impl Extend<(u32, u64)> for RawMsrs {
    fn extend<T: IntoIterator<Item = (u32, u64)>>(&mut self, iter: T) {
        self.map.extend(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_iter_in_order() {
        let mut r = RawMsrs::new();
        assert!(r.is_empty());
        assert_eq!(r.insert(0x482, 2), None);
        assert_eq!(r.insert(0x480, 1), None);
        assert_eq!(r.insert(0x480, 3), Some(1));
        assert_eq!(r.get(0x480), Some(3));
        assert_eq!(r.get(0x481), None);
        assert!(r.contains(0x482));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(0x480, 3), (0x482, 2)]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.remove(0x482), Some(2));
        assert_eq!(r.len(), 1);
    }
}
