//! Order-preserving, self-delimiting key encoding for projection indexes.
//!
//! Keys are built from parts so that a byte-wise sled scan visits them in
//! value order: a string is escaped (`0x00` -> `0x00 0xFF`) and ends with
//! `0x00 0x01`; numbers are 8 bytes big-endian with the sign handled so that
//! negative values sort first. Every encoded part is self-delimiting, so a
//! prefix of whole parts selects exactly the keys with those parts.

/// Type tags of encoded values, so values of different JSON types never mix.
pub(crate) const TAG_BOOL: u8 = 0x01;
pub(crate) const TAG_NUMBER: u8 = 0x02;
pub(crate) const TAG_STRING: u8 = 0x03;
pub(crate) const TAG_INSTANT: u8 = 0x04;

/// Builds a key from parts.
#[derive(Debug, Default, Clone)]
pub(crate) struct Key(pub Vec<u8>);

impl Key {
    pub fn new(prefix: u8) -> Self {
        let mut v = Vec::with_capacity(48);
        v.push(prefix);
        Key(v)
    }

    pub fn str(mut self, s: &str) -> Self {
        push_str(&mut self.0, s);
        self
    }

    pub fn i64(mut self, n: i64) -> Self {
        self.0
            .extend_from_slice(&((n as u64) ^ (1 << 63)).to_be_bytes());
        self
    }

    pub fn u32(mut self, n: u32) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
}

pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if bytes.contains(&0) {
        for &b in bytes {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
    } else {
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Reads an encoded string at the start of `bytes`; returns it and the rest.
pub(crate) fn take_str(bytes: &[u8]) -> Option<(String, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0 {
            match bytes.get(i + 1)? {
                0xFF => out.push(0),
                0x01 => return String::from_utf8(out).ok().map(|s| (s, &bytes[i + 2..])),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    None
}

/// Reads an encoded i64 at the start of `bytes`.
#[cfg(test)]
pub(crate) fn take_i64(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(((u64::from_be_bytes(head) ^ (1 << 63)) as i64, &bytes[8..]))
}

/// An f64 as 8 bytes that sort like the number (NaN is never stored).
pub(crate) fn f64_bytes(x: f64) -> [u8; 8] {
    let bits = if x == 0.0 { 0u64 } else { x.to_bits() };
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

/// The smallest key greater than every key starting with `prefix` (for a
/// prefix of only `0xFF` bytes, a key above any key a projection writes).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF; 1024]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers_sort_like_their_values() {
        let words = ["", "a", "a\0b", "ab", "b", "\u{e9}"];
        let keys: Vec<Vec<u8>> = words.iter().map(|w| Key::new(b'x').str(w).0).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (w, k) in words.iter().zip(&keys) {
            let (back, rest) = take_str(&k[1..]).unwrap();
            assert_eq!(&back, w);
            assert!(rest.is_empty());
        }
        let nums = [f64::MIN, -2.5, -1.0, 0.0, 1e-9, 1.0, 2.5, f64::MAX];
        let enc: Vec<[u8; 8]> = nums.iter().map(|&n| f64_bytes(n)).collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(f64_bytes(-0.0), f64_bytes(0.0));
        let ints = [i64::MIN, -1, 0, 1, i64::MAX];
        let enc: Vec<Vec<u8>> = ints.iter().map(|&n| Key::new(0).i64(n).0).collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        for (n, k) in ints.iter().zip(&enc) {
            assert_eq!(take_i64(&k[1..]).unwrap().0, *n);
        }
        assert!(take_str(b"abc").is_none());
        assert_eq!(prefix_end(b"a\x00\x01"), b"a\x00\x02");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        let p = Key::new(b'W').str("role").0;
        let k = Key(p.clone()).i64(i64::MAX).str("case").0;
        assert!(k.as_slice() < prefix_end(&p).as_slice());
        assert!(take_str(b"a\0\x07").is_none());
    }
}
