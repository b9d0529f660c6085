//! CRC32C (Castagnoli), the checksum of rawlink's wire headers and payloads.
//!
//! Backed by `crc-fast`, which folds with carry-less multiplication (PCLMULQDQ/VPCLMULQDQ on
//! x86-64, PMULL on aarch64) and runs about twice as fast as the SSE4.2 `crc32` instruction
//! loop of the `crc32c` crate on a 4K frame (0.29 vs 0.66 ms for 16.6 MB on the project's
//! machine): at 4K the checksum is paid once on each side for every frame, so this is
//! part of the streaming throughput.

/// CRC32C of `data` in one call.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// An incremental CRC32C: feed pieces with [`Crc32c::update`], read it with [`Crc32c::value`].
///
/// ```
/// let mut c = rawlink_frame::Crc32c::new();
/// c.update(b"1234");
/// c.update(b"56789");
/// assert_eq!(c.value(), rawlink_frame::crc32c(b"123456789"));
/// assert_eq!(c.value(), 0xe306_9283);
/// ```
#[derive(Clone)]
pub struct Crc32c(crc_fast::Digest);

impl Crc32c {
    /// The checksum of nothing yet.
    pub fn new() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }

    /// Appends `data`.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The CRC32C of everything appended so far.
    pub fn value(&self) -> u32 {
        self.0.finalize() as u32
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc32c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc32c({:#010x})", self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn check_value() {
        // The CRC-32C catalogue check value.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    proptest! {
        /// Agrees with the `crc32c` crate (an independent implementation) for any data,
        /// whole or fed in two pieces at any split.
        #[test]
        fn agrees_with_independent_implementation(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            split in any::<prop::sample::Index>(),
        ) {
            let want = crc32c::crc32c(&data);
            prop_assert_eq!(crc32c(&data), want);
            let at = split.index(data.len() + 1);
            let mut c = Crc32c::new();
            c.update(&data[..at]);
            c.update(&data[at..]);
            prop_assert_eq!(c.value(), want);
        }
    }
}
