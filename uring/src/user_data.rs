//! The tag every operation carries and its completion echoes.

/// `op:8 | index:24 | gen:32`, packed into an operation's `user_data`.
///
/// `op` is the user's own code for what the operation is for, `index`
/// names the thing it is about (a connection slot, a listener, a send) and
/// `gen` tells apart successive occupants of that index, so a completion of
/// an earlier connection in the same slot is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserData(u64);

impl UserData {
    /// Largest index representable (24 bits).
    pub const MAX_INDEX: u32 = (1 << 24) - 1;

    /// Packs a tag; `index` is truncated to 24 bits.
    pub const fn new(op: u8, index: u32, gen: u32) -> Self {
        UserData((op as u64) << 56 | ((index & Self::MAX_INDEX) as u64) << 32 | gen as u64)
    }

    /// The operation code.
    pub const fn op(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// The index field.
    pub const fn index(self) -> u32 {
        (self.0 >> 32) as u32 & Self::MAX_INDEX
    }

    /// The generation field.
    pub const fn gen(self) -> u32 {
        self.0 as u32
    }

    /// The packed value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// From a completion's `user_data`.
    pub const fn from_raw(raw: u64) -> Self {
        UserData(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ud = UserData::new(3, UserData::MAX_INDEX, u32::MAX);
        assert_eq!(
            (ud.op(), ud.index(), ud.gen()),
            (3, UserData::MAX_INDEX, u32::MAX)
        );
        let ud = UserData::from_raw(UserData::new(2, 19_999, 7).raw());
        assert_eq!((ud.op(), ud.index(), ud.gen()), (2, 19_999, 7));
        assert_eq!(UserData::new(1, 1 << 24, 0).index(), 0, "index is 24 bits");
    }
}
