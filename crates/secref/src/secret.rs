//! [`Secret`]: a value that never leaks.
//!
//! The bytes live in their own page-aligned allocation that is locked in
//! memory (no swap) and excluded from core dumps where the OS allows it, and
//! is overwritten with zeros when the last clone is dropped. `Debug` and
//! `Display` print `[REDACTED]`; there is no `Serialize`. The only ways to the
//! plaintext are [`Secret::expose_bytes`] and [`Secret::as_text`], which
//! borrow it.

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use zeroize::Zeroize;

use crate::error::{Error, ErrorCode, Result};

/// A secret value: bytes that are zeroized on drop and never printed.
///
/// Cloning is cheap (the bytes are shared, not copied), so a cached secret
/// can be handed out without copying the plaintext again.
///
/// ```
/// use secref::Secret;
/// let s = Secret::from("hunter2");
/// assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
/// assert_eq!(s.to_string(), "[REDACTED]");
/// assert_eq!(s.as_text().unwrap(), "hunter2");
/// assert_eq!(s.expose_bytes(), b"hunter2");
/// ```
#[derive(Clone)]
pub struct Secret {
    inner: Arc<Protected>,
}

impl Secret {
    /// Takes ownership of `bytes`; the vector's buffer is zeroized after the
    /// bytes are moved into protected memory.
    pub fn new(mut bytes: Vec<u8>) -> Self {
        let inner = Protected::copy_from(&bytes);
        bytes.zeroize();
        Secret {
            inner: Arc::new(inner),
        }
    }

    /// Copies `bytes` into a new secret. The caller remains responsible for
    /// its own copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Secret {
            inner: Arc::new(Protected::copy_from(bytes)),
        }
    }

    /// Borrows the plaintext bytes.
    pub fn expose_bytes(&self) -> &[u8] {
        self.inner.as_slice()
    }

    /// Borrows the plaintext as UTF-8 text, or fails with `invalid_utf8`.
    ///
    /// ```
    /// use secref::{ErrorCode, Secret};
    /// let binary = Secret::new(vec![0xff, 0xfe]);
    /// assert_eq!(binary.as_text().unwrap_err().code(), ErrorCode::InvalidUtf8);
    /// ```
    pub fn as_text(&self) -> Result<&str> {
        std::str::from_utf8(self.expose_bytes()).map_err(|e| {
            Error::new(
                ErrorCode::InvalidUtf8,
                format!(
                    "secret value is not valid UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )
            .with_hint("read it as bytes instead")
        })
    }

    /// The value's length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Compares with `other` in time independent of where they differ.
    ///
    /// ```
    /// use secref::Secret;
    /// assert!(Secret::from("a").ct_eq(b"a"));
    /// assert!(!Secret::from("a").ct_eq(b"b"));
    /// ```
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        constant_time_eq(self.expose_bytes(), other)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from short-circuiting the fold.
    std::hint::black_box(diff) == 0
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s.into_bytes())
    }
}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Self {
        Secret::new(v)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::copy_from(s.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A page-aligned, page-sized buffer that is mlocked and excluded from core
/// dumps, and zeroized before it is freed. Page granularity means unlocking one
/// secret never unlocks a page another secret shares.
struct Protected {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
    locked: bool,
}

// SAFETY: the buffer is owned exclusively and never mutated after creation
// (until drop), so sharing references across threads is sound.
unsafe impl Send for Protected {}
unsafe impl Sync for Protected {}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    })
}

impl Protected {
    fn copy_from(bytes: &[u8]) -> Protected {
        let page = page_size();
        let size = bytes.len().max(1).div_ceil(page) * page;
        let layout = Layout::from_size_align(size, page).expect("page layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        // SAFETY: the allocation is `size >= bytes.len()` bytes and does not
        // overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        let locked = protect(ptr.as_ptr(), size);
        Protected {
            ptr,
            len: bytes.len(),
            layout,
            locked,
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes for self's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

/// Locks the pages and marks them not-dumpable. Best effort: when the
/// RLIMIT_MEMLOCK budget is spent the value stays usable, just swappable.
#[cfg(unix)]
fn protect(ptr: *mut u8, size: usize) -> bool {
    // SAFETY: ptr..ptr+size is a live, page-aligned allocation we own.
    unsafe {
        #[cfg(target_os = "linux")]
        libc::madvise(ptr.cast(), size, libc::MADV_DONTDUMP);
        libc::mlock(ptr.cast(), size) == 0
    }
}

#[cfg(not(unix))]
fn protect(_ptr: *mut u8, _size: usize) -> bool {
    false
}

impl Drop for Protected {
    fn drop(&mut self) {
        // SAFETY: we own the allocation; volatile zeroing via zeroize.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) };
        all.zeroize();
        #[cfg(unix)]
        if self.locked {
            // SAFETY: same range that was locked.
            unsafe { libc::munlock(self.ptr.as_ptr().cast(), self.layout.size()) };
        }
        // SAFETY: allocated with this layout in copy_from.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::from("canary-5f2a");
        assert!(!format!("{s:?}{s}{s:#?}").contains("canary"));
    }

    #[test]
    fn round_trips_binary_and_empty() {
        let bin: Vec<u8> = (0..=255).collect();
        assert_eq!(Secret::copy_from(&bin).expose_bytes(), &bin[..]);
        let empty = Secret::new(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(empty.as_text().unwrap(), "");
        let big = vec![7u8; 3 * page_size() + 5];
        assert_eq!(Secret::copy_from(&big).expose_bytes(), &big[..]);
    }

    #[test]
    fn clones_share_bytes() {
        let a = Secret::from("x");
        let b = a.clone();
        assert_eq!(a.expose_bytes().as_ptr(), b.expose_bytes().as_ptr());
    }
}
