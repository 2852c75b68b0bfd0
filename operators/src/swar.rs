//! Eight bytes at a time in a `u64` ("SIMD within a register"): the bit tricks shared by the
//! byte scans on the hot path (header matching, tokenizing, JSON escaping).
//!
//! Flags are the high bit of each byte of the result. The subtraction's borrow can also flag
//! a byte above (after) a flagged one, never one before it: the lowest flag is exact, and so is
//! "any flag", which is all the scans ask.

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// `byte` in every byte of a word.
#[inline]
pub const fn splat(byte: u8) -> u64 {
    LOW_BITS.wrapping_mul(byte as u64)
}

/// Flags the bytes of `word` below `n` (`n` at most 0x80).
#[inline]
pub const fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(splat(n)) & !word & HIGH_BITS
}

/// Flags the bytes of `word` equal to `byte`.
#[inline]
pub const fn equal(word: u64, byte: u8) -> u64 {
    below(word ^ splat(byte), 1)
}

/// Flags the bytes of `word` from 0x80 (non-ASCII).
#[inline]
pub const fn non_ascii(word: u64) -> u64 {
    word & HIGH_BITS
}

/// The index of the lowest flagged byte of `flags` (0..=7; 8 when none is).
#[inline]
pub const fn first_flagged(flags: u64) -> usize {
    // At most 8, so the cast is lossless.
    (flags.trailing_zeros() / 8) as usize
}

/// Eight bytes of `bytes` from `at` as a little-endian word (first byte lowest), if there are
/// eight.
#[inline]
pub fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..)?.first_chunk::<8>()?;
    Some(u64::from_le_bytes(*chunk))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value at every position, next to neighbours that stress the borrows.
    fn each_case(mut check: impl FnMut(&[u8; 8], usize)) {
        for neighbour in [b'a', 0x00, 0x01, 0x20, 0x21, 0x23, 0x5D, 0x7F, 0x80, 0xFF] {
            for b in 0..=255u8 {
                for at in 0..8 {
                    let mut bytes = [neighbour; 8];
                    bytes[at] = b;
                    check(&bytes, at);
                }
            }
        }
    }

    /// The byte-by-byte answer: the index of the first byte `wanted` accepts (8 when none).
    fn first(bytes: &[u8; 8], wanted: impl Fn(u8) -> bool) -> usize {
        bytes.iter().position(|&b| wanted(b)).unwrap_or(8)
    }

    #[test]
    fn first_flags_equal_byte_by_byte_answers() {
        each_case(|bytes, _| {
            let word = u64::from_le_bytes(*bytes);
            for n in [0x01, 0x20, 0x21, 0x80] {
                assert_eq!(
                    first_flagged(below(word, n)),
                    first(bytes, |b| b < n),
                    "{bytes:?} below {n:#x}"
                );
            }
            for byte in [0x00, b'"', b'\\', b' ', 0xFF] {
                assert_eq!(
                    first_flagged(equal(word, byte)),
                    first(bytes, |b| b == byte),
                    "{bytes:?} equal {byte:#x}"
                );
            }
            assert_eq!(first_flagged(non_ascii(word)), first(bytes, |b| b >= 0x80));
        });
    }

    #[test]
    fn words_read_little_endian_and_only_whole() {
        let bytes = *b"abcdefghi";
        assert_eq!(word_at(&bytes, 1), Some(u64::from_le_bytes(*b"bcdefghi")));
        assert_eq!(word_at(&bytes, 2), None);
        assert_eq!(word_at(&bytes, 20), None);
        assert_eq!(splat(0x41), u64::from_le_bytes(*b"AAAAAAAA"));
    }
}
