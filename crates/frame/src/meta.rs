//! The metadata section: `count:u16`, then `count` entries of
//! `key_len:u8, key (UTF-8), value_len:u16, value`.
//!
//! [`validate`] walks a section once without allocating for small sections
//! (duplicate detection for large ones allocates two bytes per entry, less
//! than the section itself). [`Metadata`] is a view over a validated section
//! whose iteration cannot fail. [`MetaBuilder`] encodes one.

use bytes::{BufMut, BytesMut};

use crate::error::MetaError;

/// Entry counts up to this are checked for duplicates pairwise, without
/// allocating; quadratic cost at 16 entries is 120 key comparisons.
const PAIRWISE_DUP_CHECK_MAX: usize = 16;

/// Walks a section, calling `f(key_offset, key, value)` for each entry.
fn walk<'a>(
    section: &'a [u8],
    mut f: impl FnMut(usize, &'a [u8], &'a [u8]) -> Result<(), MetaError>,
) -> Result<u16, MetaError> {
    let Some((count, mut rest)) = section.split_first_chunk::<2>() else {
        return Err(MetaError::Truncated);
    };
    let count = u16::from_be_bytes(*count);
    for _ in 0..count {
        let (&key_len, r) = rest.split_first().ok_or(MetaError::Truncated)?;
        let key_len = usize::from(key_len);
        if r.len() < key_len + 2 {
            return Err(MetaError::Truncated);
        }
        let (key, r) = r.split_at(key_len);
        let (value_len, r) = r.split_at(2);
        let value_len = usize::from(u16::from_be_bytes([value_len[0], value_len[1]]));
        if r.len() < value_len {
            return Err(MetaError::Truncated);
        }
        let (value, r) = r.split_at(value_len);
        let key_offset = section.len() - rest.len() + 1;
        f(key_offset, key, value)?;
        rest = r;
    }
    if !rest.is_empty() {
        return Err(MetaError::TrailingBytes(rest.len()));
    }
    Ok(count)
}

/// Checks a section against docs/protocol.md: exact length, UTF-8 keys, unique keys.
///
/// An empty slice is valid (meta_len 0 means "no section").
pub fn validate(section: &[u8]) -> Result<(), MetaError> {
    if section.is_empty() {
        return Ok(());
    }
    let count = walk(section, |_, key, _| {
        std::str::from_utf8(key)
            .map(|_| ())
            .map_err(|_| MetaError::KeyNotUtf8)
    })?;
    let count = usize::from(count);
    if count <= PAIRWISE_DUP_CHECK_MAX {
        let mut keys: [&[u8]; PAIRWISE_DUP_CHECK_MAX] = [&[]; PAIRWISE_DUP_CHECK_MAX];
        let mut n = 0;
        walk(section, |_, key, _| {
            if keys[..n].contains(&key) {
                return Err(MetaError::DuplicateKey);
            }
            keys[n] = key;
            n += 1;
            Ok(())
        })?;
    } else {
        // Offsets fit in u16: a section is at most 65,535 bytes long.
        let mut offsets: Vec<u16> = Vec::with_capacity(count);
        walk(section, |off, _, _| {
            offsets.push(u16::try_from(off).map_err(|_| MetaError::TooLong)?);
            Ok(())
        })?;
        let key_at = |off: u16| -> &[u8] {
            let off = usize::from(off);
            let len = usize::from(section[off - 1]);
            &section[off..off + len]
        };
        offsets.sort_unstable_by(|&a, &b| key_at(a).cmp(key_at(b)));
        if offsets.windows(2).any(|w| key_at(w[0]) == key_at(w[1])) {
            return Err(MetaError::DuplicateKey);
        }
    }
    Ok(())
}

/// A view over a validated metadata section.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metadata<'a> {
    section: &'a [u8],
}

impl<'a> Metadata<'a> {
    /// Validates `section` and wraps it.
    pub fn new_checked(section: &'a [u8]) -> Result<Self, MetaError> {
        validate(section)?;
        Ok(Self { section })
    }

    /// Wraps a section that was validated before (a decoded frame's).
    /// Iterating an unvalidated section stops at the first malformed entry.
    pub(crate) fn new_unchecked(section: &'a [u8]) -> Self {
        Self { section }
    }

    /// The raw section bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.section
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self.section.first_chunk::<2>() {
            Some(c) => usize::from(u16::from_be_bytes(*c)),
            None => 0,
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in wire order.
    pub fn iter(&self) -> MetaIter<'a> {
        MetaIter {
            rest: self.section.get(2..).unwrap_or_default(),
            left: self.len(),
        }
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value under `key` as UTF-8 text.
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }
}

impl<'a> IntoIterator for Metadata<'a> {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = MetaIter<'a>;
    fn into_iter(self) -> MetaIter<'a> {
        self.iter()
    }
}

/// Iterator over `(key, value)` entries of a [`Metadata`] section.
#[derive(Debug, Clone)]
pub struct MetaIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for MetaIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (&key_len, r) = self.rest.split_first()?;
        let key = r.get(..usize::from(key_len))?;
        let r = &r[key.len()..];
        let (vl, r) = r.split_first_chunk::<2>()?;
        let value = r.get(..usize::from(u16::from_be_bytes(*vl)))?;
        self.rest = &r[value.len()..];
        match std::str::from_utf8(key) {
            Ok(k) => Some((k, value)),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }
}

/// Builds a metadata section.
///
/// ```
/// use warpwire_frame::MetaBuilder;
/// let mut m = MetaBuilder::new();
/// m.push("from", b"abc").unwrap();
/// let section = m.finish();
/// assert_eq!(&section[..], &[0, 1, 4, b'f', b'r', b'o', b'm', 0, 3, b'a', b'b', b'c']);
/// ```
#[derive(Debug, Clone)]
pub struct MetaBuilder {
    buf: BytesMut,
    count: u16,
}

impl Default for MetaBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MetaBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u16(0);
        Self { buf, count: 0 }
    }

    /// Appends an entry. Refuses duplicates and over-long keys, values or sections.
    pub fn push(&mut self, key: &str, value: &[u8]) -> Result<&mut Self, MetaError> {
        let key_len = u8::try_from(key.len()).map_err(|_| MetaError::TooLong)?;
        let value_len = u16::try_from(value.len()).map_err(|_| MetaError::TooLong)?;
        let count = self.count.checked_add(1).ok_or(MetaError::TooLong)?;
        if self.buf.len() + 3 + key.len() + value.len() > usize::from(u16::MAX) {
            return Err(MetaError::TooLong);
        }
        if Metadata::new_unchecked(&self.buf)
            .iter()
            .any(|(k, _)| k == key)
        {
            return Err(MetaError::DuplicateKey);
        }
        self.buf.put_u8(key_len);
        self.buf.put_slice(key.as_bytes());
        self.buf.put_u16(value_len);
        self.buf.put_slice(value);
        self.count = count;
        self.buf[0..2].copy_from_slice(&count.to_be_bytes());
        Ok(self)
    }

    /// The section bytes; empty when no entry was pushed, so meta_len is 0.
    pub fn finish(self) -> bytes::Bytes {
        if self.count == 0 {
            bytes::Bytes::new()
        } else {
            self.buf.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut v = vec![key.len() as u8];
        v.extend_from_slice(key);
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
        v.extend_from_slice(value);
        v
    }

    fn section(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut v = (entries.len() as u16).to_be_bytes().to_vec();
        for e in entries {
            v.extend_from_slice(e);
        }
        v
    }

    #[test]
    fn valid_sections() {
        assert!(validate(&[]).is_ok());
        assert!(validate(&[0, 0]).is_ok());
        let s = section(&[entry(b"a", b"1"), entry(b"bb", b""), entry(b"", b"x")]);
        let m = Metadata::new_checked(&s).unwrap();
        assert_eq!(m.len(), 3);
        let all: Vec<_> = m.iter().collect();
        assert_eq!(all, [("a", &b"1"[..]), ("bb", &b""[..]), ("", &b"x"[..])]);
        assert_eq!(m.get("bb"), Some(&b""[..]));
        assert_eq!(m.get_str("a"), Some("1"));
        assert_eq!(m.get("zz"), None);
    }

    #[test]
    fn malformed_sections() {
        assert_eq!(validate(&[0]), Err(MetaError::Truncated));
        assert_eq!(validate(&[0, 1]), Err(MetaError::Truncated));
        assert_eq!(validate(&[0, 1, 3, b'a']), Err(MetaError::Truncated));
        assert_eq!(validate(&[0, 1, 1, b'a', 0]), Err(MetaError::Truncated));
        assert_eq!(
            validate(&[0, 1, 1, b'a', 0, 2, 9]),
            Err(MetaError::Truncated)
        );
        assert_eq!(validate(&[0, 0, 7]), Err(MetaError::TrailingBytes(1)));
        let s = section(&[entry(b"a", b"1")]);
        let mut long = s.clone();
        long.push(0);
        assert_eq!(validate(&long), Err(MetaError::TrailingBytes(1)));
        assert_eq!(
            validate(&section(&[entry(&[0xff, 0xfe], b"1")])),
            Err(MetaError::KeyNotUtf8)
        );
        assert_eq!(
            validate(&section(&[entry(b"k", b"1"), entry(b"k", b"2")])),
            Err(MetaError::DuplicateKey)
        );
    }

    #[test]
    fn duplicate_detection_large_sections() {
        let mut entries: Vec<_> = (0..500u32)
            .map(|i| entry(format!("key{i}").as_bytes(), b"v"))
            .collect();
        assert!(validate(&section(&entries)).is_ok());
        entries.push(entry(b"key17", b"w"));
        assert_eq!(validate(&section(&entries)), Err(MetaError::DuplicateKey));
    }

    #[test]
    fn builder_roundtrip_and_limits() {
        let mut b = MetaBuilder::new();
        b.push("connections", b"3")
            .unwrap()
            .push("transport", b"socket")
            .unwrap();
        assert_eq!(
            b.push("connections", b"4").unwrap_err(),
            MetaError::DuplicateKey
        );
        let s = b.finish();
        let m = Metadata::new_checked(&s).unwrap();
        assert_eq!(m.get_str("transport"), Some("socket"));
        assert_eq!(m.len(), 2);
        assert!(MetaBuilder::new().finish().is_empty());
        let long_key = "k".repeat(256);
        assert_eq!(
            MetaBuilder::new().push(&long_key, b"").unwrap_err(),
            MetaError::TooLong
        );
        let big = vec![0u8; 65_535];
        assert_eq!(
            MetaBuilder::new().push("v", &big).unwrap_err(),
            MetaError::TooLong
        );
    }
}
